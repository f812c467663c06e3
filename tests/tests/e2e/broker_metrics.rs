//! The broker metrics operators expect, live: a three-node cluster whose nodes run with
//! `scripts/kafka.sh run --metrics-port` (the JMX exporter agent with
//! `scripts/kafka/jmx-exporter.yml`; test-support's `Cluster`, each node a process of its own that
//! the test stops as an operator would), scraped by a
//! real Prometheus from `scripts/prometheus.sh` (as `make run` starts it) with the project's
//! rules loaded. A topic of three replicas and `min.insync.replicas=2`; every metric the Kafka*
//! alerts read exists on every node and reads 0 (one active controller); one node stopped: its
//! partitions are under-replicated on a survivor and `KafkaUnderReplicatedPartitions`' expression
//! holds in Prometheus; a second node stopped: under min ISR, `KafkaUnderMinIsrPartitions` holds.
//! (promtool's unit tests cover the thresholds and `for:` durations.)

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use kollus_test_support::cluster::Cluster;
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
    let scratch = Scratch(std::env::temp_dir().join(format!(
        "kollus-e2e-broker-metrics-{}-{}",
        std::process::id(),
        free_port()
    )));
    std::fs::create_dir_all(&scratch.0).unwrap();
    let mut cluster = Cluster::start_with_metrics(3).await;
    let up = started.elapsed();
    let targets: Vec<String> = (1..=3).map(|id| cluster.metrics_addr(id)).collect();
    let prometheus = Prometheus::start(&scratch.0.join("prometheus"), &targets.join(","));

    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", cluster.bootstrap())
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
    cluster.stop(3).await;
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
    cluster.stop(2).await;
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
