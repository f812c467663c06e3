//! A multi-node Apache Kafka cluster for failure tests: each node its own `scripts/kafka.sh run
//! --node-id N --voters ... --cluster-id ...` process on a data directory kept across its
//! restarts, so a test can `kill -9` one, stop it as an operator would, or start it again on
//! what it held, while the others serve.
//!
//! Every node is a combined broker and KRaft controller: a majority of the nodes must run for the
//! cluster to elect a controller (a node started alone is not `ready` until another joins).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};

use crate::broker::Node;
use crate::{free_port, Broker};

/// One node: its fixed ports (its address is in every node's voters) and, while it runs, its
/// process.
struct Member {
    id: u32,
    port: u16,
    controller: u16,
    /// Where its metrics are served (`scripts/kafka.sh run --metrics-port`), when asked for.
    metrics: Option<u16>,
    running: Option<Node>,
}

/// A cluster of separate node processes, all stopped and their data removed when dropped.
pub struct Cluster {
    members: Vec<Member>,
    dir: PathBuf,
    cluster_id: String,
    voters: String,
    /// How long the last whole-cluster start took (every node `ready`).
    pub started_in: Duration,
}

impl Cluster {
    /// `n` nodes started side by side, returned once each answers metadata as itself. Ports
    /// found free can be taken before a JVM binds them: then every node stops and the cluster
    /// starts again on other ports.
    pub async fn start(n: u32) -> Self {
        Self::start_on_free_ports(n, false).await
    }

    /// [`Cluster::start`] with each node serving its metrics through the JMX exporter agent
    /// (`--metrics-port`), at [`Cluster::metrics_addr`].
    pub async fn start_with_metrics(n: u32) -> Self {
        Self::start_on_free_ports(n, true).await
    }

    async fn start_on_free_ports(n: u32, metrics: bool) -> Self {
        let mut failures = Vec::new();
        for _ in 0..3 {
            let mut cluster = Self::on_free_ports(n, metrics);
            let ids: Vec<u32> = (1..=n).collect();
            match cluster.try_start_nodes(&ids).await {
                Ok(took) => {
                    cluster.started_in = took;
                    eprintln!(
                        "cluster of {n} nodes on {} ready in {:.1} s",
                        cluster.bootstrap(),
                        took.as_secs_f64()
                    );
                    return cluster;
                }
                Err(e) => {
                    eprintln!("a cluster did not start: {e}");
                    failures.push(e);
                }
            }
        }
        panic!("could not start a cluster of {n} in 3 tries: {failures:#?}");
    }

    fn on_free_ports(n: u32, metrics: bool) -> Self {
        let members: Vec<Member> = (1..=n)
            .map(|id| Member {
                id,
                port: free_port(),
                controller: free_port(),
                metrics: metrics.then(free_port),
                running: None,
            })
            .collect();
        let voters = members
            .iter()
            .map(|m| format!("{}@127.0.0.1:{}", m.id, m.controller))
            .collect::<Vec<_>>()
            .join(",");
        let dir = std::env::temp_dir().join(format!(
            // `kollus-test-kafka-<pid>-`: swept by broker.rs once this process is gone.
            "kollus-test-kafka-{}-cluster-{}",
            std::process::id(),
            uuid::Uuid::now_v7().simple()
        ));
        Self {
            members,
            dir,
            cluster_id: cluster_id(uuid::Uuid::now_v7()),
            voters,
            started_in: Duration::ZERO,
        }
    }

    /// The bootstrap list clients are given: every node.
    pub fn bootstrap(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("127.0.0.1:{}", m.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A [`Broker`] handle on this cluster (topics and groups of its own) whose services create
    /// their topics with `replication` copies (`KAFKA_REPLICATION_FACTOR` in [`Broker::env`]).
    pub fn broker(&self, replication: i32) -> Broker {
        Broker::on_cluster(self.bootstrap(), replication)
    }

    /// Node `id`'s address.
    pub fn addr(&self, id: u32) -> String {
        format!("127.0.0.1:{}", self.member(id).port)
    }

    /// Where node `id` serves its metrics (`/metrics`), for a cluster started
    /// [`Cluster::start_with_metrics`].
    pub fn metrics_addr(&self, id: u32) -> String {
        let port = self
            .member(id)
            .metrics
            .unwrap_or_else(|| panic!("this cluster was started without metrics"));
        format!("127.0.0.1:{port}")
    }

    fn member(&self, id: u32) -> &Member {
        self.members
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    fn member_mut(&mut self, id: u32) -> &mut Member {
        self.members
            .iter_mut()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no node {id} in this cluster"))
    }

    /// Whether node `id`'s process runs (started by this and not exited).
    pub fn is_running(&self, id: u32) -> bool {
        self.member(id).running.as_ref().is_some_and(|node| {
            node.child
                .lock()
                .map(|mut c| matches!(c.try_wait(), Ok(None)))
                .unwrap_or(false)
        })
    }

    /// The ids of the nodes running.
    pub fn running(&self) -> Vec<u32> {
        self.members
            .iter()
            .map(|m| m.id)
            .filter(|id| self.is_running(*id))
            .collect()
    }

    /// `kill -9` of node `id` (its script and JVM): no controlled shutdown, nothing flushed.
    pub fn kill9(&mut self, id: u32) {
        let node = self
            .member_mut(id)
            .running
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        // Dropping a node kills its process group with SIGKILL and reaps the script.
        drop(node);
    }

    /// Stops node `id` as an operator would (SIGTERM: a controlled shutdown that hands its
    /// partitions' leadership to the others) and waits until it exited. A node whose
    /// controllers lost their majority cannot finish a controlled shutdown: stop the last ones
    /// with [`Cluster::kill9`].
    pub async fn stop(&mut self, id: u32) -> Duration {
        let node = self
            .member_mut(id)
            .running
            .take()
            .unwrap_or_else(|| panic!("node {id} is not running"));
        let started = Instant::now();
        tokio::task::spawn_blocking(move || {
            let mut child = node.child.lock().unwrap_or_else(|e| e.into_inner());
            let pid = i32::try_from(child.id()).expect("a pid fits i32");
            // SAFETY: kill(2) on the script's own pid (a child of this process, not reaped).
            #[expect(unsafe_code, reason = "kill(2) has no safe wrapper in std")]
            unsafe {
                libc::kill(pid, libc::SIGTERM)
            };
            let status = child.wait().expect("waiting for a node to stop");
            assert!(
                status.success(),
                "node {id} exited with {status} on SIGTERM"
            );
            drop(child);
            // Its JVM is gone with the script; dropping finds nothing left to kill.
            drop(node);
        })
        .await
        .expect("stopping a node");
        started.elapsed()
    }

    /// Starts the nodes `ids` (each on the data it kept, if any) side by side and waits until
    /// each is ready; how long that took.
    pub async fn start_nodes(&mut self, ids: &[u32]) -> Duration {
        self.try_start_nodes(ids)
            .await
            .unwrap_or_else(|e| panic!("starting nodes {ids:?}: {e}"))
    }

    async fn try_start_nodes(&mut self, ids: &[u32]) -> Result<Duration, String> {
        let started = Instant::now();
        let mut starting = Vec::new();
        for &id in ids {
            let m = self.member(id);
            assert!(m.running.is_none(), "node {id} is running already");
            let data = self.dir.join(format!("node{id}"));
            let mut args = vec![
                "--controller-port".to_owned(),
                m.controller.to_string(),
                "--node-id".to_owned(),
                id.to_string(),
                "--voters".to_owned(),
                self.voters.clone(),
                "--cluster-id".to_owned(),
                self.cluster_id.clone(),
                "--data".to_owned(),
                data.display().to_string(),
            ];
            if let Some(metrics) = m.metrics {
                args.extend(["--metrics-port".to_owned(), metrics.to_string()]);
            }
            let port = m.port;
            starting.push((
                id,
                tokio::task::spawn_blocking(move || Node::launch(port, &args, None)),
            ));
        }
        let mut failed = Vec::new();
        for (id, task) in starting {
            match task.await.expect("starting a node") {
                Ok(node) => self.member_mut(id).running = Some(node),
                Err(e) => failed.push(format!("node {id}: {e}")),
            }
        }
        if failed.is_empty() {
            Ok(started.elapsed())
        } else {
            for &id in ids {
                if let Some(node) = self.member_mut(id).running.take() {
                    drop(node);
                }
            }
            Err(failed.join("\n"))
        }
    }

    /// The node leading `partition` of `topic`, from a metadata request to the running nodes
    /// (`None`: no leader now, as while one is being elected).
    pub async fn leader_of(&self, topic: &str, partition: i32) -> Option<u32> {
        let bootstrap = self
            .running()
            .iter()
            .map(|id| self.addr(*id))
            .collect::<Vec<_>>()
            .join(",");
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || {
            let consumer: BaseConsumer = rdkafka::ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .create()
                .ok()?;
            let metadata = consumer
                .fetch_metadata(Some(&topic), Duration::from_secs(5))
                .ok()?;
            let t = metadata.topics().iter().find(|t| t.name() == topic)?;
            let p = t.partitions().iter().find(|p| p.id() == partition)?;
            u32::try_from(p.leader()).ok()
        })
        .await
        .expect("asking for a leader")
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            drop(m.running.take());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A KRaft cluster id as Kafka's StorageTool makes one: 16 bytes, URL-safe base64 without
/// padding, never starting with '-' (read as an option).
fn cluster_id(uuid: uuid::Uuid) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bytes = *uuid.as_bytes();
    // The first character is the first byte's top six bits: 62 is '-'.
    if bytes[0] >> 2 == 62 {
        bytes[0] &= 0x7f;
    }
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_id_is_what_storage_tool_makes() {
        // python3: base64.urlsafe_b64encode(uuid.UUID("12345678...").bytes).rstrip("=")
        let id = uuid::Uuid::parse_str("12345678123456781234567812345678").unwrap();
        assert_eq!(cluster_id(id), "EjRWeBI0VngSNFZ4EjRWeA");
        let dash = uuid::Uuid::from_bytes([0xf8; 16]);
        assert!(!cluster_id(dash).starts_with('-'), "{}", cluster_id(dash));
    }
}
