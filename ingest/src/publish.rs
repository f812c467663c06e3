//! Making a record durable: Kafka first, the spool when Kafka cannot acknowledge in time.
//!
//! While the spool holds anything, new records go straight to it (behind the older ones) until
//! the forwarder has drained it. That keeps arrival order, and during an outage no request
//! waits out the acknowledgement budget again.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use kollus_common::backoff::Backoff;
use kollus_common::envelope::{header, DeadLetter, Envelope};
use kollus_common::kafka;
use kollus_common::settings::KafkaSettings;
use rdkafka::producer::FutureProducer;
use serde::Serialize;

use crate::metrics::Metrics;
use crate::spool::{Spool, SpoolError, SpooledRecord};

/// Where a record became durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durable {
    Kafka,
    Spool,
}

/// Why a record is not durable: it could not be serialized, or Kafka did not take it in time
/// and neither did the spool.
#[derive(Debug, thiserror::Error)]
pub enum NotDurable {
    #[error("serializing the record: {0}")]
    Serialize(#[from] serde_json::Error),
    #[error("{0}")]
    Full(SpoolError),
    #[error("{0}")]
    Failed(SpoolError),
}

impl From<SpoolError> for NotDurable {
    fn from(e: SpoolError) -> Self {
        match e {
            SpoolError::Full { .. } => Self::Full(e),
            SpoolError::Storage(_) => Self::Failed(e),
        }
    }
}

pub struct Publisher {
    /// Replaced after an outage: see [`fresh_producer`].
    pub producer: RwLock<FutureProducer>,
    pub kafka: KafkaSettings,
    pub spool: Spool,
    pub ack_timeout: Duration,
    /// False from a failed produce until the forwarder has drained the spool.
    pub kafka_ok: Arc<AtomicBool>,
    pub metrics: Metrics,
}

impl Publisher {
    /// Makes `envelope` durable on `topic` under `key`, with its headers.
    pub async fn envelope<P: Serialize>(
        &self,
        topic: &str,
        key: String,
        envelope: &Envelope<P>,
    ) -> Result<Durable, NotDurable> {
        let record = SpooledRecord {
            topic: topic.to_owned(),
            key,
            headers: envelope.headers(),
            value: serde_json::to_string(envelope)?,
        };
        Ok(self.publish(record).await?)
    }

    /// Makes `letter` durable on the dead-letter topic, keyed by its kind, with its headers.
    pub async fn dead_letter(&self, letter: &DeadLetter) -> Result<Durable, NotDurable> {
        let record = SpooledRecord {
            topic: self.kafka.deadletter_topic.clone(),
            key: letter.kind.map(|k| k.as_str()).unwrap_or_default().into(),
            headers: letter.headers(),
            value: serde_json::to_string(letter)?,
        };
        Ok(self.publish(record).await?)
    }

    async fn publish(&self, record: SpooledRecord) -> Result<Durable, SpoolError> {
        if self.kafka_ok.load(Ordering::Acquire) && self.spool.records() == 0 {
            let producer = match self.producer.read() {
                Ok(p) => p.clone(),
                Err(poisoned) => poisoned.into_inner().clone(),
            };
            let started = Instant::now();
            let sent = tokio::time::timeout(
                self.ack_timeout,
                kafka::send(
                    &producer,
                    &record.topic,
                    &record.key,
                    record.value.as_bytes(),
                    header::to_kafka(&record.headers),
                    self.ack_timeout,
                ),
            )
            .await;
            match sent {
                Ok(Ok(())) => {
                    self.metrics
                        .kafka_produce_duration
                        .observe(started.elapsed().as_secs_f64());
                    return Ok(Durable::Kafka);
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "Kafka refused a record; spooling"),
                Err(_) => {
                    tracing::warn!(budget = ?self.ack_timeout, "Kafka did not acknowledge in time; spooling")
                }
            }
            if self.kafka_ok.swap(false, Ordering::AcqRel) {
                tracing::error!("Kafka unavailable: callbacks go to the spool until it recovers");
                // Requests use Kafka again only once the spool is drained: with a new producer.
                match fresh_producer(&self.kafka, "kollus-ingest", self.ack_timeout) {
                    Ok(new) => {
                        let old = match self.producer.write() {
                            Ok(mut p) => std::mem::replace(&mut *p, new),
                            Err(poisoned) => std::mem::replace(&mut *poisoned.into_inner(), new),
                        };
                        retire(old);
                    }
                    Err(e) => {
                        tracing::error!(error = format!("{e:#}"), "could not create a new producer")
                    }
                }
            }
        }
        self.spool.append(&record).await?;
        self.metrics.spooled.inc();
        self.metrics
            .spooled_records
            .set(self.spool.records() as i64);
        self.metrics.spool_bytes.set(self.spool.bytes() as i64);
        Ok(Durable::Spool)
    }
}

/// A new idempotent producer (new producer id, epoch 0).
///
/// After messages time out, librdkafka's idempotent producer drains and bumps its epoch for the
/// same producer id (KIP-360), which the broker must accept; a broker that does not leaves that
/// producer failing. Replacing a producer that failed does not depend on the broker.
pub fn fresh_producer(
    kafka_settings: &KafkaSettings,
    client_id: &str,
    timeout: Duration,
) -> anyhow::Result<FutureProducer> {
    kafka::durable_producer(kafka_settings, client_id, timeout)
}

/// Drops a producer off the async threads: its destructor may wait on the network.
fn retire(old: FutureProducer) {
    tokio::task::spawn_blocking(move || drop(old));
}

/// Drains the spool to Kafka, oldest first, removing only what Kafka acknowledged. Runs for
/// the life of the process.
pub async fn forward(
    spool: Spool,
    kafka_settings: KafkaSettings,
    kafka_ok: Arc<AtomicBool>,
    metrics: Metrics,
) {
    const BATCH: usize = 1000;
    const CLIENT_ID: &str = "kollus-ingest-forwarder";
    const TIMEOUT: Duration = Duration::from_secs(5);
    let mut producer = match fresh_producer(&kafka_settings, CLIENT_ID, TIMEOUT) {
        Ok(p) => p,
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "the spool forwarder cannot create a producer; spooled records wait"
            );
            return;
        }
    };
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    loop {
        if spool.records() == 0 {
            kafka_ok.store(true, Ordering::Release);
            // Woken by the next append; the timeout is only a safety net.
            let _ = tokio::time::timeout(Duration::from_secs(1), spool.appended.notified()).await;
            continue;
        }
        let reader = spool.clone();
        let batch = match tokio::task::spawn_blocking(move || reader.oldest(BATCH)).await {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                tracing::error!(error = format!("{e:#}"), "reading the spool failed");
                backoff.wait().await;
                continue;
            }
            Err(e) => {
                tracing::error!(error = %e, "spool reader panicked");
                continue;
            }
        };
        let sends = batch.iter().map(|(_, _, r)| {
            kafka::send(
                &producer,
                &r.topic,
                &r.key,
                r.value.as_bytes(),
                header::to_kafka(&r.headers),
                Duration::from_secs(5),
            )
        });
        let results = futures_util::future::join_all(sends).await;
        // Remove the acknowledged prefix: order is kept, and what follows a failure is retried
        // (possibly sent twice, with the same envelope id, which the workers deduplicate).
        let acked = results.iter().take_while(|r| r.is_ok()).count();
        if acked > 0 {
            let done = batch[..acked]
                .iter()
                .map(|(k, size, _)| (*k, *size))
                .collect();
            if let Err(e) = spool.remove(done).await {
                tracing::error!(error = %e, "removing forwarded records from the spool failed");
            }
            metrics.forwarded.inc_by(acked as u64);
            metrics.spooled_records.set(spool.records() as i64);
            metrics.spool_bytes.set(spool.bytes() as i64);
        }
        if acked == batch.len() {
            backoff.reset();
            if spool.records() == 0 {
                tracing::info!("spool drained: Kafka is taking callbacks again");
            }
        } else {
            if let Some(Err(e)) = results.get(acked) {
                tracing::warn!(error = %e, left = spool.records(), retry_in = ?backoff.next_delay(), "forwarding the spool to Kafka failed");
            }
            match fresh_producer(&kafka_settings, CLIENT_ID, TIMEOUT) {
                Ok(new) => retire(std::mem::replace(&mut producer, new)),
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "could not create a new producer")
                }
            }
            backoff.wait().await;
        }
    }
}
