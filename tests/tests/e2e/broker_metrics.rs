//! The broker metrics operators expect, live: a three-node cluster from `scripts/kafka.sh cluster
//! --metrics-port` (the JMX exporter agent with `scripts/kafka/jmx-exporter.yml`), scraped by a
//! real Prometheus from `scripts/prometheus.sh` (as `make run` starts it) with the project's
//! rules loaded. A topic of three replicas and `min.insync.replicas=2`; every metric the Kafka*
//! alerts read exists on every node and reads 0 (one active controller); one node stopped: its
//! partitions are under-replicated on a survivor and `KafkaUnderReplicatedPartitions`' expression
//! holds in Prometheus; a second node stopped: under min ISR, `KafkaUnderMinIsrPartitions` holds.
//! (promtool's unit tests cover the thresholds and `for:` durations.)

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kollus_test_support::{eventually_ok, free_port, workspace_root};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::Value;

use crate::stack::SLACK;

/// The metrics the Kafka* alerts read, and what each reads summed over a healthy cluster.
const ALERT_METRICS: &[(&str, f64)] = &[
    ("kafka_server_replicamanager_underreplicatedpartitions", 0.0),
    ("kafka_server_replicamanager_underminisrpartitioncount", 0.0),
    (
        "kafka_controller_kafkacontroller_offlinepartitionscount",
        0.0,
    ),
    (
        "kafka_controller_kafkacontroller_activecontrollercount",
        1.0,
    ),
];

/// A base port for `count` consecutive ports, each free now (and free at +10000 when
/// `controllers`: a cluster's controller ports).
fn free_run(count: u16, controllers: bool) -> u16 {
    for _ in 0..200 {
        let base = free_port();
        if base > 50_000 {
            continue;
        }
        let ports = (0..count).flat_map(|i| {
            let mut p = vec![base + i];
            if controllers {
                p.push(base + i + 10_000);
            }
            p
        });
        let held: Result<Vec<_>, _> = ports.map(|p| TcpListener::bind(("127.0.0.1", p))).collect();
        if held.is_ok() {
            return base;
        }
    }
    panic!("no run of {count} free ports found");
}

/// `scripts/kafka.sh cluster` as a child of this test. The test freezes it (SIGSTOP) while it
/// stops nodes: the script stops the whole cluster once any node exits, which is right for
/// `make run` and wrong for a test of a cluster that lost nodes. (Frozen, it cannot see its
/// `--owner` go either: this handle's Drop does its part, on a failure too.) Dropped: the nodes
/// still running are killed, the script resumed and stopped, the data removed.
struct Cluster {
    script: Child,
    data: PathBuf,
}

impl Cluster {
    /// The pid of node `n`'s JVM: the process whose command line names its server.properties.
    fn node_pid(&self, n: u32) -> Option<u32> {
        let config = self.data.join(format!("node{n}/server.properties"));
        let config = config.to_string_lossy();
        std::fs::read_dir("/proc")
            .ok()?
            .flatten()
            .find_map(|entry| {
                let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
                let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
                let mut args = cmdline.split(|b| *b == 0).map(String::from_utf8_lossy);
                args.any(|a| a == config).then_some(pid)
            })
    }

    fn signal(pid: u32, signal: &str) {
        let status = Command::new("kill")
            .args([format!("-{signal}"), pid.to_string()])
            .status()
            .expect("running kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }

    /// A controlled shutdown of node `n` (SIGTERM to its JVM), waited for: the partitions it led
    /// move, and the controller takes it out of every ISR.
    async fn stop_node(&mut self, n: u32) {
        Self::signal(self.script.id(), "STOP");
        let pid = self
            .node_pid(n)
            .unwrap_or_else(|| panic!("node {n}'s JVM is not running"));
        Self::signal(pid, "TERM");
        // Exited: gone, or a zombie the frozen script cannot reap yet.
        eventually_ok(
            &format!("node {n} to finish its shutdown"),
            SLACK,
            || async {
                match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
                    Err(_) => Ok(()),
                    Ok(stat) if stat.rsplit(") ").next().is_some_and(|s| s.starts_with('Z')) => {
                        Ok(())
                    }
                    Ok(_) => Err(format!("pid {pid} still runs")),
                }
            },
        )
        .await;
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Without a quorum a node's controlled shutdown would wait for it: kill what is left.
        for n in 1..=3 {
            if let Some(pid) = self.node_pid(n) {
                let _ = Command::new("kill")
                    .args(["-KILL", &pid.to_string()])
                    .status();
            }
        }
        let pid = self.script.id().to_string();
        let _ = Command::new("kill").args(["-CONT", &pid]).status();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let _ = self.script.wait();
        let _ = std::fs::remove_dir_all(&self.data);
    }
}

/// Starts the cluster, waits for its `ready` (the script's log echoed on stderr).
async fn start_cluster(base: u16, metrics: u16, data: &Path) -> Cluster {
    let mut script = Command::new(workspace_root().join("scripts/kafka.sh"))
        .args(["cluster", "3", &base.to_string()])
        .args(["--metrics-port", &metrics.to_string()])
        .arg("--data")
        .arg(data)
        .args(["--owner", &std::process::id().to_string()])
        // A quicker start for throughput this test never needs (as test-support's brokers).
        .env("KAFKA_JVM_OPTS", "-XX:TieredStopAtLevel=1")
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting scripts/kafka.sh cluster");
    let stderr = script.stderr.take().expect("the script's stderr");
    let (ready_tx, ready) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let mut ready_tx = Some(ready_tx);
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[kafka] {line}");
            if line == "ready" {
                if let Some(tx) = ready_tx.take() {
                    let _ = tx.send(());
                }
            }
        }
    });
    let cluster = Cluster {
        script,
        data: data.to_owned(),
    };
    let ready = tokio::time::timeout(Duration::from_secs(300), ready).await;
    assert!(
        matches!(ready, Ok(Ok(()))),
        "the cluster did not start (its log is above)"
    );
    cluster
}

/// The test's directory, removed when dropped (declared first: it goes after the cluster and
/// Prometheus that write in it, on a failure too).
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A real Prometheus scraping the three nodes every second, the project's rules loaded.
struct Prometheus {
    child: Child,
    base: String,
    http: reqwest::Client,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Prometheus {
    fn start(dir: &Path, targets: &str) -> Self {
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new(workspace_root().join("scripts/prometheus.sh"))
            .arg("run")
            .arg(dir)
            .env("PROMETHEUS_ADDR", &addr)
            .env("KAFKA", targets)
            .env("SCRAPE_INTERVAL", "1s")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting scripts/prometheus.sh");
        Self {
            child,
            base: format!("http://{addr}"),
            http: reqwest::Client::new(),
        }
    }

    /// Each series `expr` returns now, as (instance, value).
    async fn query(&self, expr: &str) -> Result<Vec<(String, f64)>, String> {
        let res = self
            .http
            .get(format!("{}/api/v1/query", self.base))
            .query(&[("query", expr)])
            .send()
            .await
            .map_err(|e| format!("`{expr}`: {e}"))?;
        let body: Value = res.json().await.map_err(|e| format!("`{expr}`: {e}"))?;
        let result = body["data"]["result"]
            .as_array()
            .ok_or_else(|| format!("`{expr}`: {body}"))?;
        result
            .iter()
            .map(|s| {
                let value = s["value"][1].as_str().and_then(|v| v.parse().ok());
                let instance = s["metric"]["instance"].as_str().unwrap_or("").to_owned();
                value
                    .map(|v| (instance, v))
                    .ok_or_else(|| format!("`{expr}`: a series without a value: {s}"))
            })
            .collect()
    }

    /// The state of alerting rule `alert` (`inactive`, `pending`, `firing`): its expression
    /// holds once it is pending. A rule Prometheus has not loaded is an error.
    async fn alert_state(&self, alert: &str) -> Result<String, String> {
        let res = self
            .http
            .get(format!("{}/api/v1/rules", self.base))
            .query(&[("type", "alert")])
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let body: Value = res.json().await.map_err(|e| e.to_string())?;
        body["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .find(|r| r["name"] == alert)
            .and_then(|r| r["state"].as_str().map(str::to_owned))
            .ok_or_else(|| format!("Prometheus has no rule {alert}: {body}"))
    }

    /// Until `alert`'s expression holds (pending or firing).
    async fn until_holds(&self, alert: &str) {
        eventually_ok(&format!("{alert}'s expression to hold"), SLACK, || async {
            match self.alert_state(alert).await? {
                s if s == "pending" || s == "firing" => Ok(()),
                s => Err(format!("{alert} is {s}")),
            }
        })
        .await;
    }
}

#[tokio::test]
async fn broker_metrics_and_alerts_follow_nodes_stopping() {
    let started = Instant::now();
    let base = free_run(3, true);
    let metrics = loop {
        let p = free_run(3, false);
        if p.abs_diff(base) > 3 && p.abs_diff(base + 10_000) > 3 {
            break p;
        }
    };
    let scratch = Scratch(std::env::temp_dir().join(format!("kollus-e2e-broker-metrics-{base}")));
    let _ = std::fs::remove_dir_all(&scratch.0);
    std::fs::create_dir_all(&scratch.0).unwrap();
    let mut cluster = start_cluster(base, metrics, &scratch.0.join("kafka")).await;
    let up = started.elapsed();
    let targets: Vec<String> = (0..3)
        .map(|i| format!("127.0.0.1:{}", metrics + i))
        .collect();
    let prometheus = Prometheus::start(&scratch.0.join("prometheus"), &targets.join(","));

    let brokers: Vec<String> = (0..3).map(|i| format!("127.0.0.1:{}", base + i)).collect();
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers.join(","))
        .create()
        .expect("an admin client");
    let topic = NewTopic::new("broker-metrics", 3, TopicReplication::Fixed(3))
        .set("min.insync.replicas", "2");
    let created = admin
        .create_topics([&topic], &AdminOptions::new())
        .await
        .expect("CreateTopics answered");
    assert!(
        created.iter().all(|r| r.is_ok()),
        "topic created: {created:?}"
    );

    // Healthy: every metric the alerts read, on all three nodes, at its healthy value.
    for (metric, healthy) in ALERT_METRICS {
        eventually_ok(&format!("{metric} on the three nodes"), SLACK, || async {
            let series = prometheus.query(metric).await?;
            let sum: f64 = series.iter().map(|(_, v)| v).sum();
            if series.len() == 3 && sum == *healthy {
                Ok(())
            } else {
                Err(format!("{series:?}, want 3 series summing to {healthy}"))
            }
        })
        .await;
    }
    // Quiet once the rules were evaluated on all three nodes' values (an evaluation before the
    // first scrape of the active controller saw no controller at all).
    for alert in [
        "KafkaUnderReplicatedPartitions",
        "KafkaUnderMinIsrPartitions",
        "KafkaOfflinePartitions",
        "KafkaNoActiveController",
    ] {
        eventually_ok(
            &format!("{alert} quiet on a healthy cluster"),
            SLACK,
            || async {
                match prometheus.alert_state(alert).await? {
                    s if s == "inactive" => Ok(()),
                    s => Err(format!("{alert} is {s}")),
                }
            },
        )
        .await;
    }

    // One node stopped: a survivor leads partitions one replica short.
    let stop = Instant::now();
    cluster.stop_node(3).await;
    prometheus
        .until_holds("KafkaUnderReplicatedPartitions")
        .await;
    let under = prometheus
        .query("kafka_server_replicamanager_underreplicatedpartitions > 0")
        .await
        .unwrap();
    assert!(
        !under.is_empty() && under.iter().all(|(i, _)| *i != targets[2]),
        "under-replicated on a survivor: {under:?}"
    );
    assert_eq!(
        prometheus
            .alert_state("KafkaUnderMinIsrPartitions")
            .await
            .as_deref(),
        Ok("inactive"),
        "two of three replicas are in sync: min ISR 2 holds"
    );
    let one_down = stop.elapsed();

    // A second node stopped: node 1 leads every partition alone, under min ISR 2.
    let stop = Instant::now();
    cluster.stop_node(2).await;
    prometheus.until_holds("KafkaUnderMinIsrPartitions").await;
    let under_min = prometheus
        .query("kafka_server_replicamanager_underminisrpartitioncount")
        .await
        .unwrap();
    assert!(
        under_min.iter().any(|(i, v)| *i == targets[0] && *v >= 3.0),
        "node 1 leads the topic's 3 partitions under min ISR: {under_min:?}"
    );
    let two_down = stop.elapsed();
    eprintln!(
        "broker metrics: cluster up in {up:?}; one node down to alert {one_down:?}; \
         a second to alert {two_down:?}; {:?} in all",
        started.elapsed()
    );
}
