//! The erasure topic's outbox: every erasure the topic has not acknowledged (`erasures` rows
//! with `published_at` NULL) is produced to `KAFKA_ERASURE_TOPIC` (key: the subject tag;
//! headers `kind=erasure`, `id=<erasure id>`; value: [`ErasureEvent`]), acks=all, then marked
//! published. Runs right after each erasure, every `ERASURE_PUBLISH_INTERVAL_MS`, and with a
//! growing pause while Kafka fails: an erasure PostgreSQL committed is never lost to a broker's
//! outage. Replicas skip the rows another is publishing (`FOR UPDATE SKIP LOCKED`); a record
//! sent twice (a crash between Kafka's acknowledgement and the commit) is harmless: its readers
//! handle each erasure id once.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use deadpool_postgres::Pool;
use kollus_common::backoff::Backoff;
use kollus_common::erasure::{ErasureEvent, KIND};
use kollus_common::kafka;
use kollus_common::settings::KafkaSettings;
use rdkafka::producer::FutureProducer;
use tokio::sync::Notify;

use super::model;
use crate::metrics::Metrics;

/// Erasures sent per round.
const BATCH: i64 = 100;

/// How long one record may wait for Kafka's acknowledgement.
const ACK_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Publisher {
    pool: Pool,
    kafka: KafkaSettings,
    producer: FutureProducer,
    metrics: Metrics,
    interval: Duration,
    wake: Arc<Notify>,
}

impl Publisher {
    pub fn new(
        pool: Pool,
        kafka: KafkaSettings,
        metrics: Metrics,
        interval: Duration,
    ) -> anyhow::Result<Self> {
        let producer = kafka::durable_producer(&kafka, "kollus-token-api-erasures", ACK_TIMEOUT)?;
        Ok(Self {
            pool,
            kafka,
            producer,
            metrics,
            interval,
            wake: Arc::new(Notify::new()),
        })
    }

    /// What an erasure pokes once committed, so its record goes out at once.
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Publishes until the process ends.
    pub fn spawn(self) {
        tokio::spawn(self.run());
    }

    async fn run(self) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let mut topic_ready = false;
        loop {
            match self.round(&mut topic_ready).await {
                Ok(true) => {
                    backoff.reset();
                    continue;
                }
                Ok(false) => {
                    backoff.reset();
                    tokio::select! {
                        () = self.wake.notified() => {}
                        () = tokio::time::sleep(self.interval) => {}
                    }
                }
                Err(e) => {
                    tracing::warn!(
                        error = format!("{e:#}"),
                        topic = self.kafka.erasure_topic,
                        retry_in = ?backoff.next_delay(),
                        "erasure: not published to the erasure topic yet; retrying"
                    );
                    backoff.wait().await;
                }
            }
        }
    }

    async fn count(&self, client: &impl tokio_postgres::GenericClient) -> anyhow::Result<()> {
        let (n, oldest) = model::unpublished_backlog(client).await?;
        self.metrics.erasures_unpublished.set(n);
        self.metrics.erasures_unpublished_oldest.set(oldest);
        Ok(())
    }

    /// One round: up to [`BATCH`] unpublished erasures sent and marked. `Ok(true)`: there may
    /// be more.
    async fn round(&self, topic_ready: &mut bool) -> anyhow::Result<bool> {
        let mut client = self.pool.get().await.context("connecting to PostgreSQL")?;
        let tx = client
            .transaction()
            .await
            .context("starting to publish erasures")?;
        let batch = model::unpublished(&*tx, BATCH).await?;
        // Counted before sending too: while Kafka fails, the gauges still tell.
        self.count(&*tx).await?;
        let mut first_error = None;
        if !batch.is_empty() {
            if !*topic_ready {
                kafka::ensure_topics_within(
                    &self.kafka,
                    &[&self.kafka.erasure_topic],
                    Duration::ZERO,
                )
                .await
                .context("creating the erasure topic")
                .inspect_err(|_| {
                    self.metrics
                        .erasure_publish_failures
                        .inc_by(batch.len() as u64);
                })?;
                *topic_ready = true;
            }
            let sends = batch.iter().map(|u| async move {
                let event = ErasureEvent {
                    erasure_id: u.id,
                    subject_tag: u.subject_tag.clone(),
                    erased_at: u.applied_at,
                };
                let payload = serde_json::to_vec(&event).context("an erasure record")?;
                let id = u.id.to_string();
                kafka::send(
                    &self.producer,
                    &self.kafka.erasure_topic,
                    &u.subject_tag,
                    &payload,
                    kafka::headers(&[("kind", KIND), ("id", &id)]),
                    ACK_TIMEOUT,
                )
                .await
                .with_context(|| format!("producing erasure {id} to {}", self.kafka.erasure_topic))
            });
            let results = futures_util::future::join_all(sends).await;
            let mut published = Vec::new();
            for (u, result) in batch.iter().zip(results) {
                match result {
                    Ok(()) => {
                        tracing::info!(
                            subject = u.subject_tag,
                            erasure = %u.id,
                            topic = self.kafka.erasure_topic,
                            "erasure published"
                        );
                        published.push(u.id);
                    }
                    Err(e) => {
                        self.metrics.erasure_publish_failures.inc();
                        first_error.get_or_insert(e);
                    }
                }
            }
            model::mark_published(&*tx, &published).await?;
            tx.commit().await.context("marking erasures published")?;
            self.metrics
                .erasures_published
                .inc_by(published.len() as u64);
        } else {
            drop(tx);
        }
        self.count(&**client).await?;
        match first_error {
            Some(e) => Err(e),
            None => Ok(batch.len() as i64 == BATCH),
        }
    }
}
