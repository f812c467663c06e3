//! What a worker plugs into the loop: an [`Apply`] over records the loop has already decoded,
//! and how it reports what it could not apply.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::IpAddr;

use rdkafka::message::{Message as _, OwnedMessage};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::envelope::SCHEMA_VERSION;
use crate::kollus::lms::checksum::HashVerdict;
use crate::kollus::CallbackKind;

/// An envelope as a worker reads it: everything but the raw request, which no worker applies
/// (skipping it saves un-escaping a copy of every body) and which stays on the topic.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Delivered<P> {
    pub id: Uuid,
    pub kind: CallbackKind,
    pub schema_version: u16,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(default)]
    pub source_ip: Option<IpAddr>,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    #[serde(default)]
    pub form: BTreeMap<String, String>,
    #[serde(default)]
    pub lms_hash: Option<HashVerdict>,
    /// LMS: the viewer binding's verdict, when ingest judged it.
    #[serde(default)]
    pub binding: Option<crate::kollus::binding::Binding>,
    pub payload: P,
}

/// A decoded record and its place in the batch the loop took (what [`Rejected::index`] names).
#[derive(Debug, Clone)]
pub struct Record<P> {
    pub index: usize,
    pub envelope: Delivered<P>,
}

/// A record that can never be applied, and why.
#[derive(Debug)]
pub struct Rejected {
    /// Index into the batch the loop took ([`Record::index`]).
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
    /// Classifies a database error as every service does (`db::is_transient`).
    pub fn from_db(e: tokio_postgres::Error) -> Self {
        if crate::db::is_transient(&e) {
            Self::Transient(e.into())
        } else {
            Self::Permanent(e.into())
        }
    }
}

// So `?` classifies database failures in every worker the same way. Anything else is classified
// where it happens (`ApplyError::Permanent` for a record that can never apply): a blanket
// conversion would call a serialization bug transient and retry its batch forever.
impl From<deadpool_postgres::PoolError> for ApplyError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        if crate::db::pool_error_is_transient(&e) {
            Self::Transient(e.into())
        } else {
            Self::Permanent(e.into())
        }
    }
}

impl From<tokio_postgres::Error> for ApplyError {
    fn from(e: tokio_postgres::Error) -> Self {
        Self::from_db(e)
    }
}

/// A worker's way of applying records to PostgreSQL.
pub trait Apply: Send + Sync {
    /// What the worker's topic carries in its envelopes.
    type Payload: DeserializeOwned + Send + Sync + 'static;

    /// Applies `batch` (decoded by the loop; never empty) exactly once, however often it is
    /// given the same records; or fails and applies nothing the next call would not repeat.
    fn apply(
        &self,
        batch: &[Record<Self::Payload>],
    ) -> impl Future<Output = Result<Applied, ApplyError>> + Send;

    /// Empties every table this worker derives from its topic, in one statement, before a
    /// rebuild replays the topic from the beginning.
    fn reset(&self) -> impl Future<Output = Result<(), ApplyError>> + Send;
}

/// Decodes every record of a batch; those that cannot be decoded are rejected with why.
pub fn decode_batch<P: DeserializeOwned>(
    batch: &[OwnedMessage],
) -> (Vec<Record<P>>, Vec<Rejected>) {
    let mut decoded = Vec::with_capacity(batch.len());
    let mut rejected = Vec::new();
    for (index, record) in batch.iter().enumerate() {
        match decode(record) {
            Ok(envelope) => decoded.push(Record { index, envelope }),
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
pub fn decode<P: DeserializeOwned>(record: &OwnedMessage) -> Result<Delivered<P>, String> {
    let payload = record.payload().ok_or("the record has no value")?;
    let envelope: Delivered<P> =
        serde_json::from_slice(payload).map_err(|e| format!("not a valid envelope: {e}"))?;
    if envelope.schema_version != SCHEMA_VERSION {
        return Err(format!(
            "schema version {} is not {SCHEMA_VERSION}",
            envelope.schema_version
        ));
    }
    Ok(envelope)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::{Envelope, RawRequest};

    fn message(value: &[u8]) -> OwnedMessage {
        OwnedMessage::new(
            Some(value.to_vec()),
            None,
            "t".into(),
            rdkafka::message::Timestamp::NotAvailable,
            0,
            0,
            None,
        )
    }

    #[test]
    fn a_delivered_envelope_is_the_published_one_without_its_raw_request() {
        let mut e = Envelope::new(
            CallbackKind::Lms,
            serde_json::json!({"a": 1}),
            RawRequest::body(Some("text/plain"), b"\"quoted\" \\ body"),
        );
        e.query.insert("uservalue0".into(), "x".into());
        let d: Delivered<serde_json::Value> =
            decode(&message(&serde_json::to_vec(&e).unwrap())).unwrap();
        assert_eq!(
            (d.id, d.kind, d.received_at, d.query, d.payload),
            (e.id, e.kind, e.received_at, e.query, e.payload)
        );
    }

    #[test]
    fn records_that_do_not_decode_are_rejected_in_place() {
        let good = Envelope::new(CallbackKind::Lms, 7u32, RawRequest::body(None, b""));
        let mut old = good.clone();
        old.schema_version = 0;
        let batch = [
            message(b"{not json"),
            message(&serde_json::to_vec(&good).unwrap()),
            message(&serde_json::to_vec(&old).unwrap()),
        ];
        let (decoded, rejected) = decode_batch::<u32>(&batch);
        assert_eq!(decoded.len(), 1);
        assert_eq!((decoded[0].index, decoded[0].envelope.payload), (1, 7));
        let why: Vec<_> = rejected.iter().map(|r| (r.index, r.reason)).collect();
        assert_eq!(why, [(0, "invalid_envelope"), (2, "invalid_envelope")]);
        assert!(rejected[1].detail.contains("schema version 0"));
    }
}
