//! What an erasure reads of the topics naming users (playback, dead letters): their retention,
//! from the brokers (cached a minute), or `KAFKA_RETENTION_DAYS` when they cannot be asked. An
//! erasure is refused while one of them keeps records forever: the user's reports would stay
//! there for good. Otherwise the receipt's `topics_clear_by` is the erasure's time plus the
//! longest retention and a segment.

use std::time::{Duration, Instant};

use kollus_common::kafka::{self, Lifetime};
use kollus_common::settings::KafkaSettings;
use tokio::sync::Mutex;

/// How long the brokers' answer is reused.
pub const CACHE: Duration = Duration::from_secs(60);

/// How long the brokers are given to describe the topics before the configured retention is
/// used instead.
const ASK_TIMEOUT: Duration = Duration::from_secs(3);

/// The topics naming users, as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Horizon {
    /// Per topic, how long it keeps a record.
    pub lifetimes: Vec<(String, Lifetime)>,
    /// Whether the brokers answered (else: the configured retention).
    pub from_brokers: bool,
}

impl Horizon {
    /// The first topic that keeps its records forever, if any.
    pub fn infinite(&self) -> Option<&str> {
        self.lifetimes
            .iter()
            .find(|(_, l)| l.clear_after_ms().is_none())
            .map(|(t, _)| t.as_str())
    }

    /// How long after an erasure the topics may still hold a record from before it, in ms:
    /// the longest retention plus its topic's segment. `None`: one keeps records forever.
    pub fn clear_after_ms(&self) -> Option<i64> {
        self.lifetimes
            .iter()
            .map(|(_, l)| l.clear_after_ms())
            .try_fold(0, |most, ms| ms.map(|ms| most.max(ms)))
    }
}

pub struct UserTopics {
    kafka: KafkaSettings,
    cached: Mutex<Option<(Instant, Horizon)>>,
}

impl UserTopics {
    pub fn new(kafka: KafkaSettings) -> Self {
        Self {
            kafka,
            cached: Mutex::new(None),
        }
    }

    /// The topics' lifetimes: from the brokers at most a minute old, or the configured ones
    /// (with a WARN) when the brokers do not answer.
    pub async fn horizon(&self) -> Horizon {
        let mut cached = self.cached.lock().await;
        if let Some((at, h)) = cached.as_ref() {
            if at.elapsed() < CACHE {
                return h.clone();
            }
        }
        let topics = self.kafka.user_topics();
        let asked = tokio::time::timeout(ASK_TIMEOUT, kafka::lifetimes(&self.kafka, &topics)).await;
        let horizon = match asked {
            Ok(Ok(lifetimes)) => Horizon {
                lifetimes: topics
                    .iter()
                    .map(|t| (*t).to_owned())
                    .zip(lifetimes)
                    .collect(),
                from_brokers: true,
            },
            failed => {
                let error = match failed {
                    Ok(Err(e)) => format!("{e:#}"),
                    _ => format!("no answer within {ASK_TIMEOUT:?}"),
                };
                tracing::warn!(
                    error,
                    ?topics,
                    retention_days = self.kafka.retention_days,
                    "erasure: could not read the user topics' retention from Kafka; using \
                     KAFKA_RETENTION_DAYS"
                );
                Horizon {
                    lifetimes: topics
                        .iter()
                        .map(|t| ((*t).to_owned(), Lifetime::configured(&self.kafka, t)))
                        .collect(),
                    from_brokers: false,
                }
            }
        };
        *cached = Some((Instant::now(), horizon.clone()));
        horizon
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn horizon(retentions: &[i64]) -> Horizon {
        Horizon {
            lifetimes: retentions
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (
                        format!("t{i}"),
                        Lifetime {
                            retention_ms: *r,
                            segment_ms: 10,
                        },
                    )
                })
                .collect(),
            from_brokers: true,
        }
    }

    #[test]
    fn the_longest_retention_and_a_segment_unless_one_keeps_records_forever() {
        assert_eq!(horizon(&[100, 300]).clear_after_ms(), Some(310));
        assert_eq!(horizon(&[100, 300]).infinite(), None);
        assert_eq!(horizon(&[100, -1]).clear_after_ms(), None);
        assert_eq!(horizon(&[100, -1]).infinite(), Some("t1"));
    }
}
