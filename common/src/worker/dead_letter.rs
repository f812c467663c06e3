//! Putting a record that can never apply on the dead-letter topic, with why, and waiting for
//! Kafka to acknowledge it (its offset is stored only after).

use std::time::Duration;

use rdkafka::message::{Message as _, OwnedMessage};
use rdkafka::producer::FutureProducer;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::apply::Rejected;
use crate::backoff::Backoff;
use crate::envelope::{header, DeadLetter, RawBody};
use crate::kafka;

/// Where dead letters go and who writes them.
pub struct DeadLetters {
    pub producer: FutureProducer,
    pub topic: String,
    /// Who gives up on a record, written into dead letters (`sync-worker`, ...).
    pub stage: &'static str,
    pub counter: prometheus::IntCounterVec,
}

impl DeadLetters {
    /// Puts `record` on the dead-letter topic, retrying until Kafka acknowledges it.
    pub async fn send(&self, record: &OwnedMessage, why: &Rejected) {
        tracing::warn!(
            stage = self.stage, reason = why.reason, detail = %why.detail,
            topic = record.topic(), partition = record.partition(), offset = record.offset(),
            "dead-lettering a record"
        );
        let letter = self.letter(record, why);
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
        let headers = letter.headers();
        let mut backoff = Backoff::worker();
        loop {
            let sent = kafka::send(
                &self.producer,
                &self.topic,
                &key,
                &value,
                header::to_kafka(&headers),
                Duration::from_secs(10),
            )
            .await;
            match sent {
                Ok(()) => {
                    self.counter.with_label_values(&[why.reason]).inc();
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?backoff.next_delay(), "dead letter not acknowledged; will retry");
                    backoff.wait().await;
                }
            }
        }
    }

    /// The dead letter for `record`: the record byte-for-byte, plus what can be read of its
    /// envelope, field by field (it may be damaged, or not an envelope at all).
    fn letter(&self, record: &OwnedMessage, why: &Rejected) -> DeadLetter {
        let envelope: Option<serde_json::Value> = record
            .payload()
            .and_then(|p| serde_json::from_slice(p).ok());
        let field = |name: &str| envelope.as_ref().and_then(|e| e.get(name)).cloned();
        let received_at = field("received_at")
            .and_then(|t| serde_json::from_value::<String>(t).ok())
            .and_then(|t| OffsetDateTime::parse(&t, &Rfc3339).ok());
        DeadLetter {
            source_ip: field("source_ip").and_then(|ip| serde_json::from_value(ip).ok()),
            record: Some(RawBody::from_bytes(record.payload().unwrap_or_default())),
            ..DeadLetter::new(
                self.stage,
                why.reason,
                why.detail.clone(),
                field("kind").and_then(|k| serde_json::from_value(k).ok()),
                // A damaged envelope: the record's own Kafka time, never the dead letter's,
                // which may come after its user's erasure (README "Erasing a user").
                received_at
                    .or_else(|| {
                        record.timestamp().to_millis().and_then(|ms| {
                            OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
                                .ok()
                        })
                    })
                    .unwrap_or_else(OffsetDateTime::now_utc),
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use rdkafka::message::Timestamp;

    use super::*;

    #[test]
    fn a_damaged_envelope_is_dated_by_its_record_never_by_the_dead_letters_time() {
        let letters = DeadLetters {
            // Never connected: `letter` only builds the dead letter.
            producer: rdkafka::ClientConfig::new()
                .set("bootstrap.servers", "127.0.0.1:1")
                .create()
                .unwrap(),
            topic: "dl".into(),
            stage: "history-worker",
            counter: prometheus::IntCounterVec::new(
                prometheus::Opts::new("dead_letters_test", "test"),
                &["reason"],
            )
            .unwrap(),
        };
        let why = Rejected {
            index: 0,
            reason: "invalid_envelope",
            detail: "not JSON".into(),
        };
        let record = |payload: &[u8]| {
            OwnedMessage::new(
                Some(payload.to_vec()),
                None,
                "t".into(),
                Timestamp::CreateTime(1_700_000_000_000),
                0,
                5,
                None,
            )
        };
        let damaged = letters.letter(&record(b"{not json"), &why);
        assert_eq!(damaged.received_at.unix_timestamp(), 1_700_000_000);
        let whole = letters.letter(&record(br#"{"received_at":"2024-01-02T03:04:05Z"}"#), &why);
        assert_eq!(whole.received_at.unix_timestamp(), 1_704_164_645);
    }
}
