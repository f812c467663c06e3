//! What both workers are made of: a consume loop ([`consume`]) that decodes records and hands
//! them to the worker's [`Apply`] ([`apply`]), dead-letters what can never apply
//! ([`dead_letter`]), and can replay its topic into emptied tables ([`rebuild`]); plus the admin
//! server (`/metrics`, `/healthz`, `/readyz`). Laid out by role, as Vector lays out its Kafka
//! source.

mod apply;
mod consume;
mod dead_letter;
mod rebuild;
mod retry;

use std::future::Future;
use std::time::Duration;

pub use apply::{decode, decode_batch, Applied, Apply, ApplyError, Delivered, Record, Rejected};
pub use consume::{ConsumeLoop, ConsumeSettings, LoopMetrics};
pub use dead_letter::DeadLetters;

use crate::http::Readiness;
use crate::kafka;

/// A built worker: its admin server and its consume loop.
pub struct Worker<A> {
    port: u16,
    admin: actix_web::dev::ServerHandle,
    admin_task: tokio::task::JoinHandle<std::io::Result<()>>,
    consume: ConsumeLoop<A>,
}

/// What a worker is made of, besides its [`Apply`].
pub struct WorkerParts<'a> {
    pub listen_addr: std::net::SocketAddr,
    pub kafka: &'a crate::settings::KafkaSettings,
    pub group_id: &'a str,
    pub topic: &'a str,
    pub stage: &'static str,
    pub consume: &'a ConsumeSettings,
    pub registry: prometheus::Registry,
    pub metrics: LoopMetrics,
}

impl<A: Apply> Worker<A> {
    pub async fn build(parts: WorkerParts<'_>, apply: A) -> anyhow::Result<Self> {
        use anyhow::Context as _;
        let kafka_settings = parts.kafka;
        kafka_settings.check().map_err(anyhow::Error::msg)?;
        // The admin server first: a rebuild's progress is on /metrics while it runs, and so is
        // a wait for enough brokers to create the topics (with /healthz answering, and
        // /readyz saying not ready until the consume loop applies records).
        let listener = std::net::TcpListener::bind(parts.listen_addr)
            .with_context(|| format!("binding {}", parts.listen_addr))?;
        let port = listener.local_addr()?.port();
        let ready = Readiness::default();
        let server = crate::http::admin_server(listener, parts.registry, ready.clone())?;
        let admin = server.handle();
        let admin_task = tokio::spawn(server);
        let built = async {
            kafka::ensure_topics(kafka_settings, &kafka_settings.topics()).await?;
            tokio::spawn(kafka::warn_if_nothing_archives(
                kafka_settings.clone(),
                kafka::ARCHIVE_GRACE,
            ));
            if parts.consume.rebuild {
                rebuild::rebuild(
                    kafka_settings,
                    parts.group_id,
                    parts.topic,
                    parts.consume,
                    &apply,
                    &parts.metrics.rebuild_records,
                )
                .await?;
            }
            let consumer = kafka::consumer(kafka_settings, parts.group_id, parts.topic)?;
            let producer =
                kafka::durable_producer(kafka_settings, parts.stage, Duration::from_secs(10))?;
            anyhow::Ok((consumer, producer))
        }
        .await;
        let (consumer, producer) = match built {
            Ok(built) => built,
            Err(e) => {
                admin.stop(false).await;
                return Err(e);
            }
        };
        tracing::info!(
            stage = parts.stage,
            topic = parts.topic,
            group = parts.group_id,
            port,
            "worker built"
        );
        Ok(Self {
            port,
            admin,
            admin_task,
            consume: ConsumeLoop {
                consumer: kafka::OwnedConsumer::new(consumer),
                dead_letters: DeadLetters {
                    producer,
                    topic: kafka_settings.deadletter_topic.clone(),
                    stage: parts.stage,
                    counter: parts.metrics.deadletters.clone(),
                },
                apply,
                metrics: parts.metrics,
                ready,
                max_batch: parts.consume.max_batch,
                linger: parts.consume.linger,
            },
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until Ctrl-C or SIGTERM; then the process ends within [`SHUTDOWN_DEADLINE`]
    /// whatever its Kafka clients do (see [`exit_after`]).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(async {
            crate::http::shutdown_signal().await;
            exit_after(SHUTDOWN_DEADLINE);
        })
        .await
    }

    /// Runs until `shutdown` resolves (tests stop workers this way).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        self.consume.run(shutdown).await;
        self.admin.stop(true).await;
        self.admin_task.await??;
        Ok(())
    }
}

/// How long a worker binary may take to stop after SIGTERM before it exits regardless.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(20);

/// Ends the process `deadline` from now unless it ended by itself. librdkafka's clients close
/// on their destructors and wait on brokers; seen in the three-broker failover test (after a
/// node was killed and restarted, KIP-848 group): a history-worker that had stopped consuming
/// stayed alive on SIGTERM for minutes, its runtime waiting on a client's destructor. What it
/// applied is committed as it goes (every second, and before a graceful stop), so exiting here
/// costs at most the last uncommitted second's records, applied again after a restart (once in
/// effect). Only the binaries arm it (`run_until_stopped`): an in-process test's worker stops
/// with its own future and never ends the test process.
fn exit_after(deadline: Duration) {
    let armed = std::thread::Builder::new()
        .name("shutdown-deadline".into())
        .spawn(move || {
            std::thread::sleep(deadline);
            tracing::warn!(
                deadline_s = deadline.as_secs(),
                "the worker did not stop within its shutdown deadline (a Kafka client waiting \
                 on a broker as it closes); exiting: what was applied is committed, at most the \
                 last second's records are applied again after a restart"
            );
            std::process::exit(0);
        });
    if let Err(e) = armed {
        tracing::warn!(error = %e, "no thread for the shutdown deadline: stopping without one");
    }
}
