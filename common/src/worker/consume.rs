//! The consume-apply-commit loop both workers run (DESIGN.md, delivery contract items 5 and 6).
//!
//! 1. take a batch of records and decode their envelopes;
//! 2. apply the decoded ones (the worker's [`Apply`]);
//! 3. dead-letter the records that can never apply, and wait for Kafka's acknowledgement;
//! 4. only then store the offsets (committed in the background).
//!
//! While one batch is in steps 2 to 4 (mostly waiting on PostgreSQL), the next is taken and
//! decoded beside it, the decoding on a blocking thread: batches are still applied one after the
//! other, in order.
//!
//! A transient failure (database or broker unreachable) retries the same batch with backoff,
//! forever: nothing is skipped. A permanent one retries record by record, and dead-letters the
//! records that fail alone. A crash anywhere replays the batch, which [`Apply`]
//! implementations make harmless (applying a record twice changes nothing).

use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::{Message as _, OwnedMessage};
use time::OffsetDateTime;

use super::apply::{decode_batch, Applied, Apply, Record, Rejected};
use super::dead_letter::DeadLetters;
use super::retry::{apply_with_retry, Attempt};
use crate::http::Readiness;
use crate::kafka;
use crate::metrics::{counter, counter_vec, gauge, gauge_vec, histogram, latency_buckets};

/// Worker settings both workers share (flattened into each one's `Settings`).
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumeSettings {
    /// Most records applied in one transaction. The next batch is taken and decoded while one is
    /// applied, so up to twice this many records are held at once.
    #[arg(long, env = "WORKER_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,
    /// How long to wait for more records to fill a batch once one arrived, in ms.
    #[arg(long, env = "WORKER_BATCH_LINGER_MS", value_parser = crate::settings::millis, default_value = "20")]
    pub linger: Duration,
    /// Rebuild this worker's tables: empty them, replay the archive's records of the topic
    /// (with `ARCHIVE_DIR`), then the topic from the first offset the archive does not hold (the
    /// whole topic without an archive, or when the archive holds another incarnation of it),
    /// and carry on consuming as usual. Stop every other instance of the group first; the
    /// broker's group state is checked and a group with members is refused.
    #[arg(long)]
    pub rebuild: bool,
    /// The archive `--rebuild` replays first (`kollus-archive dump --to`): a directory or
    /// `s3://bucket/prefix`. Read only with `--rebuild`.
    #[arg(long, env = "ARCHIVE_DIR")]
    pub archive_dir: Option<String>,
    /// Optional: the archive's key location (`kollus-archive dump`'s `ARCHIVE_KEYS_DIR`; default
    /// `keys` inside the archive): the subject keys that open its frames, and its erasure
    /// records. Read only with `--rebuild`.
    #[arg(long, env = "ARCHIVE_KEYS_DIR")]
    pub archive_keys_dir: Option<String>,
    /// Optional: the key-encryption key that wraps the archive's subject keys. Needed by
    /// `--rebuild` only when the archive holds sealed frames (it says so, naming this setting,
    /// otherwise).
    #[arg(long, env = "ARCHIVE_KEK_FILE")]
    pub archive_kek_file: Option<std::path::PathBuf>,
}

impl ConsumeSettings {
    /// The archive's key location, when there is an archive.
    pub fn archive_keys_location(&self) -> Option<String> {
        self.archive_dir
            .as_deref()
            .map(|dir| crate::erasure::keys_location(dir, self.archive_keys_dir.as_deref()))
    }
}

impl Default for ConsumeSettings {
    /// The clap defaults (`--help`).
    fn default() -> Self {
        crate::settings::defaults()
    }
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
    /// `--rebuild`'s replay of the archive: records `done` of `total`.
    pub rebuild_records: prometheus::IntGaugeVec,
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
            rebuild_records: gauge_vec(
                r,
                "rebuild_records",
                "--rebuild's replay of the archive: archived records applied (state=done) of those the archive holds for the topic (state=total). 0 when no rebuild ran.",
                &["state"],
            ),
        };
        crate::metrics::zeroed(
            &m.deadletters,
            &[&["invalid_envelope"], &["refused_by_database"]],
        );
        for state in ["done", "total"] {
            m.rebuild_records.with_label_values(&[state]);
        }
        m
    }
}

/// A batch as taken from the consumer, and its records decoded.
struct Taken<P> {
    batch: Vec<OwnedMessage>,
    records: Vec<Record<P>>,
    rejected: Vec<Rejected>,
}

pub struct ConsumeLoop<A> {
    pub consumer: kafka::OwnedConsumer,
    pub dead_letters: DeadLetters,
    pub apply: A,
    pub metrics: LoopMetrics,
    pub ready: Readiness,
    pub max_batch: usize,
    pub linger: Duration,
}

impl<A: Apply> ConsumeLoop<A> {
    /// Runs until `shutdown` resolves. A batch in progress is finished or left for replay,
    /// never half-acknowledged.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        self.set_ready(true);
        // Sampled beside the loop, never by interrupting it: a batch is never cut short.
        let pending = Arc::new(AtomicI64::new(0));
        let gauges = tokio::spawn(sample_consumer(
            Arc::downgrade(&self.consumer),
            self.metrics.clone(),
            pending.clone(),
        ));
        // While a batch is applied (mostly waiting on PostgreSQL), the next one is taken and
        // decoded beside it. Batches are still applied one after the other, in order, and each
        // one's offsets are stored only after it is applied.
        let mut next: Option<Taken<A::Payload>> = None;
        loop {
            let taken = match next.take() {
                Some(taken) => taken,
                None => match tokio::select! {
                    _ = &mut shutdown => break,
                    t = self.take() => t,
                } {
                    Some(taken) => taken,
                    None => continue,
                },
            };
            let started = Instant::now();
            pending.store(
                oldest_timestamp_ms(&taken.batch).unwrap_or_else(now_ms),
                Ordering::Relaxed,
            );
            let apply = async {
                self.process(taken).await;
                pending.store(0, Ordering::Relaxed);
                self.metrics
                    .batch_duration
                    .observe(started.elapsed().as_secs_f64());
            };
            // Shutdown cuts a batch short only before its offsets are stored: it replays.
            next = tokio::select! {
                _ = &mut shutdown => break,
                ((), taken) = async { tokio::join!(apply, self.take()) } => taken,
            };
        }
        self.set_ready(false);
        gauges.abort();
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            // Nothing stored since the last commit, or the broker is gone: the records replay.
            tracing::debug!(error = %e, "final offset commit");
        }
        tracing::info!(stage = self.dead_letters.stage, "consumer stopped");
    }

    fn set_ready(&self, ready: bool) {
        self.ready.set(ready);
        self.metrics.ready.set(i64::from(ready));
    }

    /// The next batch, decoded off the async threads; `None` after a consumer error (logged).
    async fn take(&self) -> Option<Taken<A::Payload>> {
        let batch = match kafka::next_batch(&self.consumer, self.max_batch, self.linger).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::warn!(error = %e, "Kafka consumer error");
                return None;
            }
        };
        let decoded = tokio::task::spawn_blocking(move || {
            let (records, rejected) = decode_batch::<A::Payload>(&batch);
            Taken {
                batch,
                records,
                rejected,
            }
        })
        .await;
        match decoded {
            Ok(taken) => Some(taken),
            // A decoder that panicked: so does the loop, as it did when it decoded itself; the
            // batch, its offsets never stored, is taken again after the restart.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: the runtime is stopping, and this loop with it.
            Err(_) => None,
        }
    }

    /// Applies, dead-letters and stores offsets for one batch.
    async fn process(&self, taken: Taken<A::Payload>) {
        let Taken {
            batch,
            records,
            mut rejected,
        } = taken;
        self.metrics.batch_size.observe(batch.len() as f64);
        if !records.is_empty() {
            rejected.extend(self.apply_with_retry(&records).await.rejected);
        }
        for why in &rejected {
            self.dead_letters.send(&batch[why.index], why).await;
        }
        if let Err(e) = kafka::store_offsets(&self.consumer, &batch) {
            // Lost assignment (rebalance): the new owner replays these records harmlessly.
            tracing::warn!(error = %e, "storing offsets failed; records will be replayed");
        }
    }

    /// Applies `records` ([`apply_with_retry`]), not ready while the database is away.
    async fn apply_with_retry(&self, records: &[Record<A::Payload>]) -> Applied {
        let observe = |attempt| match attempt {
            Attempt::Waiting => {
                self.set_ready(false);
                self.metrics.retries.inc();
            }
            Attempt::Applied => self.set_ready(true),
        };
        apply_with_retry(&self.apply, records, &observe).await
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
/// ([`kafka::cached_lag`], no request) and the age of the oldest record being applied
/// (`pending`, ms since the epoch; 0 when none). Holds the consumer weakly: a loop that is gone
/// must not leave a member in the group.
async fn sample_consumer(
    consumer: std::sync::Weak<kafka::WorkerConsumer>,
    metrics: LoopMetrics,
    pending: Arc<AtomicI64>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let oldest = pending.load(Ordering::Relaxed);
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
