//! A service under test: its real binary as a process, or its `Application` in-process, with
//! its own database and broker.

use kollus_common::settings::KafkaSettings;
use std::future::Future;
use std::process::{Child, Command};

use crate::{Broker, TestDb};

/// A service's real binary as a process, killed (SIGKILL) when dropped so a failing test leaves
/// none behind. Given the harness's database and broker, an ephemeral admin port, error logs.
pub struct ServiceProcess(pub Child);

impl ServiceProcess {
    pub fn start(binary: &str, h: &Harness, env: &[(&str, &str)]) -> Self {
        let mut command = Command::new(binary);
        // The harness's topics, and a worker's group named for the test as the in-process
        // instances' (`Broker::group` of the binary's name: "history-worker", "sync-worker").
        let name = std::path::Path::new(binary)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        command
            .env("DATABASE_URL", &h.db.url)
            .envs(h.broker.env())
            .env("KAFKA_GROUP_ID", h.broker.group(&name))
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "error")
            .env("LOG_FORMAT", "text")
            .stdin(std::process::Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        Self(
            command
                .spawn()
                .unwrap_or_else(|e| panic!("starting {binary}: {e}")),
        )
    }

    /// `kill -9`: nothing runs in the process after this (no offset commit, no leaving the group).
    pub fn kill_9(&mut self) {
        self.0.kill().expect("kill -9");
        self.0.wait().expect("reaping the killed process");
    }
}

impl Drop for ServiceProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// What a worker test runs against: its own database and broker, and the running service,
/// stopped (or killed) by the test or on drop.
pub struct Harness {
    pub db: TestDb,
    pub broker: Broker,
    pub kafka: KafkaSettings,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
}

/// Resolves when the test asks the service to stop.
pub type StopSignal = std::pin::Pin<Box<dyn Future<Output = ()> + Send>>;

impl Harness {
    pub async fn new() -> Self {
        let db = TestDb::new().await;
        let broker = Broker::start().await;
        let kafka = broker.settings();
        // The topics exist, as once ingest ran (Kafka creates none on first use here:
        // auto.create.topics.enable is off, as in production), so a test can publish first.
        kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
            .await
            .expect("creating the test's topics");
        Self {
            db,
            broker,
            kafka,
            running: None,
        }
    }

    /// The dead letters of this test's topic, as JSON, once the topic holds exactly `n`: read
    /// until `n` arrived, and counted from start to end so that one more (a record refused that
    /// should not have been, a letter sent twice) fails rather than goes unread. Call it once
    /// every record is committed, when no letter can still come.
    pub async fn dead_letters(&self, n: usize) -> Vec<serde_json::Value> {
        let (brokers, topic) = (
            self.broker.addr.clone(),
            self.kafka.deadletter_topic.clone(),
        );
        let dead = crate::read_topic(&brokers, &topic, n, std::time::Duration::from_secs(20)).await;
        let held = tokio::task::spawn_blocking(move || crate::topic_record_count(&brokers, &topic))
            .await
            .expect("counting the dead letters");
        assert_eq!(
            (dead.len(), held),
            (n, n as i64),
            "dead letters read, and held by the topic"
        );
        dead.iter()
            .map(|m| {
                serde_json::from_slice(rdkafka::Message::payload(m).expect("a dead letter"))
                    .expect("a dead letter is JSON")
            })
            .collect()
    }

    /// Runs a service: `run` gets the stop signal and returns the service's run future.
    pub fn spawn<Fut>(&mut self, run: impl FnOnce(StopSignal) -> Fut)
    where
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let stop: StopSignal = Box::pin(async move {
            let _ = rx.await;
        });
        self.running = Some((tx, tokio::spawn(run(stop))));
    }

    /// Asks the service to stop and waits until it did (a graceful shutdown).
    pub async fn stop(&mut self) {
        if let Some((tx, task)) = self.running.take() {
            let _ = tx.send(());
            task.await
                .expect("the service task did not panic")
                .expect("the service stopped cleanly");
        }
    }

    /// Drops the service mid-flight, as `kill -9` would: nothing after this point runs.
    pub fn kill(&mut self) {
        if let Some((_, task)) = self.running.take() {
            task.abort();
        }
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        self.kill();
    }
}
