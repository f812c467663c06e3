//! The consume-apply-commit loop both workers run (DESIGN.md, delivery contract items 5 and 6).
//!
//! 1. take a batch of records;
//! 2. apply it in one PostgreSQL transaction (the worker's [`Apply`]);
//! 3. dead-letter the records that can never apply, and wait for Kafka's acknowledgement;
//! 4. only then store the offsets (committed in the background).
//!
//! A transient failure (database or broker unreachable) retries the same batch with backoff,
//! forever: nothing is skipped. A crash anywhere replays the batch, which [`Apply`]
//! implementations make harmless (applying a record twice changes nothing).

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::producer::FutureProducer;
use time::OffsetDateTime;

use crate::backoff::Backoff;
use crate::envelope::{header, DeadLetter, RawBody};
use crate::http::Readiness;
use crate::kafka;
use crate::metrics::{counter, counter_vec, gauge, histogram, latency_buckets};

/// A record that can never be applied, and why.
#[derive(Debug)]
pub struct Rejected {
    /// Index into the batch.
    pub index: usize,
    /// Short, bounded reason (metric label), e.g. `invalid_envelope`.
    pub reason: &'static str,
    pub detail: String,
}

/// What applying a batch did.
#[derive(Debug, Default)]
pub struct Applied {
    pub rejected: Vec<Rejected>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Worth retrying unchanged: connection lost, database restarting, serialization failure.
    #[error("transient: {0:#}")]
    Transient(anyhow::Error),
    /// The data itself is refused (a constraint, a bad value): retrying the same batch would
    /// fail again. The loop retries record by record to find and dead-letter the culprit.
    #[error("permanent: {0:#}")]
    Permanent(anyhow::Error),
}

impl ApplyError {
    /// Classifies a database error by its SQLSTATE class.
    pub fn from_db(e: anyhow::Error) -> Self {
        let code = e
            .chain()
            .find_map(|c| c.downcast_ref::<tokio_postgres::Error>())
            .and_then(|pg| pg.code().map(|c| c.code().to_owned()));
        match code.as_deref().map(|c| &c[..2]) {
            // 22 data exception, 23 integrity violation, 42 syntax or access rule.
            Some("22" | "23" | "42") => Self::Permanent(e),
            // No SQLSTATE: I/O, closed connection, pool timeout. Others: 08 connection,
            // 40 rollback, 53 resources, 57 operator intervention, 58 system error.
            _ => Self::Transient(e),
        }
    }
}

// So `?` classifies database failures in every worker the same way. Anything else is classified
// where it happens (`ApplyError::Permanent` for a record that can never apply): a blanket
// conversion would call a serialization bug transient and retry its batch forever.
impl From<deadpool_postgres::PoolError> for ApplyError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Self::Transient(e.into())
    }
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::from_db(e.into())
    }
}

/// A worker's way of applying records to PostgreSQL.
pub trait Apply: Send + Sync {
    /// Applies `batch` in one transaction, or nothing of it.
    fn apply(
        &self,
        batch: &[OwnedMessage],
    ) -> impl Future<Output = Result<Applied, ApplyError>> + Send;

    /// Empties every table this worker derives from its topic, in one statement, before a
    /// rebuild replays the topic from the beginning.
    fn reset(&self) -> impl Future<Output = Result<(), ApplyError>> + Send;
}

/// Metrics every worker has, registered in the worker's own registry.
#[derive(Clone)]
pub struct LoopMetrics {
    pub batch_size: prometheus::Histogram,
    pub batch_duration: prometheus::Histogram,
    pub deadletters: prometheus::IntCounterVec,
    pub retries: prometheus::IntCounter,
    pub lag_seconds: prometheus::IntGauge,
    pub assigned_partitions: prometheus::IntGauge,
    pub consumer_lag_records: prometheus::IntGauge,
    /// 1 while the worker applies records, 0 while it retries a failure (`/readyz`).
    pub ready: prometheus::IntGauge,
}

impl LoopMetrics {
    pub fn new(r: &prometheus::Registry) -> Self {
        let m = Self {
            batch_size: histogram(
                r,
                "batch_size",
                "Records per applied batch.",
                prometheus::exponential_buckets(1.0, 4.0, 8).expect("static buckets"),
            ),
            batch_duration: histogram(
                r,
                "batch_duration_seconds",
                "Time to apply one batch, from taking it to storing its offsets.",
                latency_buckets(),
            ),
            deadletters: counter_vec(
                r,
                "deadletter_total",
                "Records sent to the dead-letter topic, by reason.",
                &["reason"],
            ),
            retries: counter(
                r,
                "retries_total",
                "Batches retried after a transient failure (database or broker down).",
            ),
            lag_seconds: gauge(
                r,
                "lag_seconds",
                "Age of the oldest record taken but not applied yet (now minus its Kafka timestamp, when ingest published it); 0 when nothing waits. Grows while the worker is stuck.",
            ),
            assigned_partitions: gauge(
                r,
                "assigned_partitions",
                "Partitions this instance owns in its consumer group.",
            ),
            consumer_lag_records: gauge(
                r,
                "consumer_lag_records",
                "Records on this instance's partitions not consumed yet: the high watermark of the last fetch response minus the position, per partition.",
            ),
            ready: gauge(
                r,
                "ready",
                "1 while the worker applies records; 0 while it retries a failure (as /readyz).",
            ),
        };
        crate::metrics::zeroed(
            &m.deadletters,
            &[&["invalid_envelope"], &["refused_by_database"]],
        );
        m
    }
}

pub struct ConsumeLoop<A> {
    pub consumer: kafka::OwnedConsumer,
    pub producer: FutureProducer,
    pub deadletter_topic: String,
    /// Who gives up on a record, written into dead letters (`sync-worker`, ...).
    pub stage: &'static str,
    pub apply: A,
    pub metrics: LoopMetrics,
    pub ready: Readiness,
    pub max_batch: usize,
    pub linger: Duration,
}

const BACKOFF_START: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(10);

impl<A: Apply> ConsumeLoop<A> {
    /// Runs until `shutdown` resolves. A batch in progress is finished or left for replay,
    /// never half-acknowledged.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        self.set_ready(true);
        // Sampled beside the loop, never by interrupting it: a batch is never cut short.
        let pending = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let gauges = tokio::spawn(sample_consumer(
            Arc::downgrade(&self.consumer),
            self.metrics.clone(),
            pending.clone(),
        ));
        loop {
            let batch = tokio::select! {
                _ = &mut shutdown => break,
                b = kafka::next_batch(&self.consumer, self.max_batch, self.linger) => b,
            };
            let batch = match batch {
                Ok(b) => b,
                Err(e) => {
                    tracing::warn!(error = %e, "Kafka consumer error");
                    continue;
                }
            };
            let started = Instant::now();
            pending.store(
                oldest_timestamp_ms(&batch).unwrap_or_else(now_ms),
                std::sync::atomic::Ordering::Relaxed,
            );
            let done = tokio::select! {
                _ = &mut shutdown => false,
                done = self.process(&batch) => done,
            };
            pending.store(0, std::sync::atomic::Ordering::Relaxed);
            if !done {
                break;
            }
            self.metrics.batch_size.observe(batch.len() as f64);
            self.metrics
                .batch_duration
                .observe(started.elapsed().as_secs_f64());
        }
        self.set_ready(false);
        gauges.abort();
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit, or the broker is gone: the records replay.
            tracing::debug!(error = %e, "final offset commit");
        }
        tracing::info!(stage = self.stage, "consumer stopped");
    }

    fn set_ready(&self, ready: bool) {
        self.ready.set(ready);
        self.metrics.ready.set(i64::from(ready));
    }

    /// Applies, dead-letters and stores offsets for one batch; retries transient failures.
    async fn process(&self, batch: &[OwnedMessage]) -> bool {
        let applied = self.apply_with_retry(batch).await;
        for rejected in &applied.rejected {
            self.dead_letter(&batch[rejected.index], rejected).await;
        }
        if let Err(e) = kafka::store_offsets(&self.consumer, batch) {
            // Lost assignment (rebalance): the new owner replays these records harmlessly.
            tracing::warn!(error = %e, "storing offsets failed; records will be replayed");
        }
        true
    }

    async fn apply_with_retry(&self, batch: &[OwnedMessage]) -> Applied {
        let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
        loop {
            match self.apply.apply(batch).await {
                Ok(applied) => {
                    self.set_ready(true);
                    return applied;
                }
                Err(ApplyError::Permanent(e)) if batch.len() > 1 => {
                    tracing::warn!(error = %e, records = batch.len(), "batch refused; applying record by record");
                    return Box::pin(self.apply_singly(batch)).await;
                }
                Err(ApplyError::Permanent(e)) => {
                    return Applied {
                        rejected: vec![Rejected {
                            index: 0,
                            reason: "refused_by_database",
                            detail: format!("{e:#}"),
                        }],
                    }
                }
                Err(ApplyError::Transient(e)) => {
                    self.set_ready(false);
                    self.metrics.retries.inc();
                    tracing::warn!(error = %e, retry_in = ?backoff.next_delay(), "applying a batch failed; will retry");
                    backoff.wait().await;
                }
            }
        }
    }

    async fn apply_singly(&self, batch: &[OwnedMessage]) -> Applied {
        let mut all = Applied::default();
        for (i, record) in batch.iter().enumerate() {
            let one = self.apply_with_retry(std::slice::from_ref(record)).await;
            all.rejected
                .extend(one.rejected.into_iter().map(|r| Rejected { index: i, ..r }));
        }
        all
    }

    /// Puts a record on the dead-letter topic, retrying until Kafka acknowledges it.
    async fn dead_letter(&self, record: &OwnedMessage, why: &Rejected) {
        tracing::warn!(
            stage = self.stage, reason = why.reason, detail = %why.detail,
            topic = record.topic(), partition = record.partition(), offset = record.offset(),
            "dead-lettering a record"
        );
        let envelope: Option<serde_json::Value> = record
            .payload()
            .and_then(|p| serde_json::from_slice(p).ok());
        let field = |name: &str| envelope.as_ref().and_then(|e| e.get(name)).cloned();
        let now = OffsetDateTime::now_utc();
        let letter = DeadLetter {
            id: uuid::Uuid::now_v7(),
            stage: self.stage.into(),
            reason: why.reason.into(),
            detail: why.detail.clone(),
            dead_lettered_at: now,
            kind: field("kind").and_then(|k| serde_json::from_value(k).ok()),
            received_at: field("received_at")
                .and_then(|t| serde_json::from_value::<String>(t).ok())
                .and_then(|t| {
                    OffsetDateTime::parse(&t, &time::format_description::well_known::Rfc3339).ok()
                })
                .unwrap_or(now),
            source_ip: field("source_ip").and_then(|ip| serde_json::from_value(ip).ok()),
            query: Default::default(),
            record: Some(RawBody::from_bytes(record.payload().unwrap_or_default())),
            raw: None,
        };
        let value = match serde_json::to_vec(&letter) {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(error = %e, "serializing a dead letter failed");
                return;
            }
        };
        let key = record
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
        loop {
            let headers = kafka::headers(&[
                (header::REASON, why.reason),
                (header::ID, &letter.id.to_string()),
            ]);
            match kafka::send(
                &self.producer,
                &self.deadletter_topic,
                &key,
                &value,
                headers,
                Duration::from_secs(10),
            )
            .await
            {
                Ok(()) => {
                    self.metrics
                        .deadletters
                        .with_label_values(&[why.reason])
                        .inc();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff.next_delay(), "dead letter not acknowledged; will retry");
                    backoff.wait().await;
                }
            }
        }
    }
}

/// The Kafka timestamp of the oldest record in a batch, in ms since the epoch.
fn oldest_timestamp_ms(batch: &[OwnedMessage]) -> Option<i64> {
    batch.iter().filter_map(|m| m.timestamp().to_millis()).min()
}

fn now_ms() -> i64 {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// Keeps the gauges current, every second: the assignment (a local call), the lag in records
/// ([`kafka::cached_lag`], no request) and the age of the oldest record
/// being applied (`pending`, ms since the epoch; 0 when none). Holds the consumer weakly: a loop
/// that is gone must not leave a member in the group.
async fn sample_consumer(
    consumer: std::sync::Weak<kafka::WorkerConsumer>,
    metrics: LoopMetrics,
    pending: Arc<std::sync::atomic::AtomicI64>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let oldest = pending.load(std::sync::atomic::Ordering::Relaxed);
        metrics.lag_seconds.set(if oldest > 0 {
            ((now_ms() - oldest) / 1000).max(0)
        } else {
            0
        });
        let Some(consumer) = consumer.upgrade() else {
            return;
        };
        if let Ok(assignment) = consumer.assignment() {
            metrics.assigned_partitions.set(assignment.count() as i64);
        }
        if let Some(lag) = kafka::cached_lag(&consumer) {
            metrics.consumer_lag_records.set(lag);
        }
    }
}

/// Worker settings both workers share (flattened into each one's `Settings`).
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumeSettings {
    /// Most records applied in one transaction.
    #[arg(long, env = "WORKER_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,
    /// How long to wait for more records to fill a batch once one arrived, in ms.
    #[arg(long, env = "WORKER_BATCH_LINGER_MS", value_parser = crate::settings::millis, default_value = "20")]
    pub linger: Duration,
    /// Rebuild this worker's tables: rewind the consumer group to the start of the topic, empty
    /// the tables, then replay everything and carry on consuming as usual. Stop every other
    /// instance of the group first; the broker's group state is checked and a group with
    /// members is refused.
    #[arg(long)]
    pub rebuild: bool,
}

impl Default for ConsumeSettings {
    fn default() -> Self {
        Self {
            max_batch: 1000,
            linger: Duration::from_millis(20),
            rebuild: false,
        }
    }
}

/// Decodes every record of a batch, each with its index in the batch (so a later check can
/// reject it by place); those that cannot be decoded are rejected with why.
pub fn decode_batch<P: serde::de::DeserializeOwned>(
    batch: &[OwnedMessage],
) -> (Vec<(usize, crate::envelope::Envelope<P>)>, Vec<Rejected>) {
    let mut decoded = Vec::with_capacity(batch.len());
    let mut rejected = Vec::new();
    for (index, record) in batch.iter().enumerate() {
        match decode_envelope::<P>(record) {
            Ok(e) => decoded.push((index, e)),
            Err(detail) => rejected.push(Rejected {
                index,
                reason: "invalid_envelope",
                detail,
            }),
        }
    }
    (decoded, rejected)
}

/// Decodes a record's envelope, or says why it cannot be.
pub fn decode_envelope<P: serde::de::DeserializeOwned>(
    record: &OwnedMessage,
) -> Result<crate::envelope::Envelope<P>, String> {
    let payload = record.payload().ok_or("the record has no value")?;
    let envelope: crate::envelope::Envelope<P> =
        serde_json::from_slice(payload).map_err(|e| format!("not a valid envelope: {e}"))?;
    if envelope.schema_version != crate::envelope::SCHEMA_VERSION {
        return Err(format!(
            "schema version {} is not {}",
            envelope.schema_version,
            crate::envelope::SCHEMA_VERSION
        ));
    }
    Ok(envelope)
}

/// A built worker: its admin server (`/metrics`, `/healthz`, `/readyz`) and its consume loop.
pub struct Worker<A> {
    port: u16,
    admin: actix_web::dev::Server,
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
        kafka::ensure_topics(kafka_settings, &kafka_settings.topics()).await?;
        if parts.consume.rebuild {
            rebuild(kafka_settings, parts.group_id, parts.topic, &apply).await?;
        }
        let consumer = kafka::consumer(kafka_settings, parts.group_id, parts.topic)?;
        let producer =
            kafka::durable_producer(kafka_settings, parts.stage, Duration::from_secs(10))?;
        let listener = std::net::TcpListener::bind(parts.listen_addr)
            .with_context(|| format!("binding {}", parts.listen_addr))?;
        let port = listener.local_addr()?.port();
        let ready = Readiness::default();
        let admin = crate::http::admin_server(listener, parts.registry, ready.clone())?;
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
            consume: ConsumeLoop {
                consumer: kafka::OwnedConsumer::new(consumer),
                producer,
                deadletter_topic: kafka_settings.deadletter_topic.clone(),
                stage: parts.stage,
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

    /// Runs until Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(crate::http::shutdown_signal()).await
    }

    /// Runs until `shutdown` resolves (tests stop workers this way).
    pub async fn run_until(self, shutdown: impl Future<Output = ()>) -> anyhow::Result<()> {
        let handle = self.admin.handle();
        let admin = tokio::spawn(self.admin);
        self.consume.run(shutdown).await;
        handle.stop(true).await;
        admin.await??;
        Ok(())
    }
}

/// Rewinds the group, then empties the tables: in this order, so a refused rewind (the group
/// still has members) leaves the tables as they were. Should the emptying fail after the rewind,
/// the replay applies onto the existing rows, which changes nothing (every apply is idempotent).
async fn rebuild<A: Apply>(
    settings: &crate::settings::KafkaSettings,
    group_id: &str,
    topic: &str,
    apply: &A,
) -> anyhow::Result<()> {
    let rewound = {
        let (settings, group_id, topic) = (settings.clone(), group_id.to_owned(), topic.to_owned());
        tokio::task::spawn_blocking(move || kafka::rewind_group(&settings, &group_id, &topic))
            .await??
    };
    apply
        .reset()
        .await
        .map_err(|e| anyhow::anyhow!("emptying the tables for a rebuild: {e}"))?;
    tracing::warn!(
        group = group_id,
        topic,
        records = rewound,
        "rebuild: tables emptied and the group rewound; replaying the topic from the beginning"
    );
    Ok(())
}

/// Connects and migrates, retrying while PostgreSQL is not up yet (a worker started before
/// its database waits instead of dying).
pub async fn connect_database(
    settings: &crate::settings::DatabaseSettings,
) -> anyhow::Result<deadpool_postgres::Pool> {
    let pool = crate::db::pool(settings)?;
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match crate::db::migrate(&pool).await {
            Ok(()) => return Ok(pool),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(
                    error = format!("{e:#}"), db = crate::db::describe(&settings.url),
                    retry_in = ?backoff.next_delay(), "database not ready"
                );
                backoff.wait().await;
            }
            Err(e) => return Err(e),
        }
    }
}
