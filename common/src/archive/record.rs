//! One archived Kafka record: a JSON line with everything needed to produce it again, the value
//! byte-for-byte (as text when it is UTF-8, readable with any tool; base64 otherwise).

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use rdkafka::message::{Headers as _, Message};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

/// Bytes as they came: `{"text": ...}` when UTF-8, `{"base64": ...}` otherwise.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Bytes {
    Text(String),
    Base64(String),
}

impl Bytes {
    pub fn of(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self::Text(s.to_owned()),
            Err(_) => Self::Base64(STANDARD.encode(bytes)),
        }
    }

    pub fn to_vec(&self) -> anyhow::Result<Vec<u8>> {
        Ok(match self {
            Self::Text(s) => s.as_bytes().to_vec(),
            Self::Base64(b) => STANDARD.decode(b)?,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Header {
    pub key: String,
    pub value: Option<Bytes>,
}

/// The header `kollus-archive restore` adds, in its default mode (`--timestamps now`), to a
/// record it produces with the time of the restore: the record's archived Kafka timestamp, in
/// milliseconds since the Unix epoch as decimal ASCII (`1700000000000`). A restore gives records
/// the current time because Kafka deletes by timestamp: a record restored with its own, older
/// than the topic's `retention.ms`, would be deleted at the broker's next retention check. A
/// record that already carries the header (restored before, then archived again) keeps it: it
/// names the first time the record was written, not a restore's.
pub const ORIGINAL_TIMESTAMP_HEADER: &str = "kollus-original-timestamp";

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ArchivedRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// Kafka timestamp, ms since the epoch, when the record has one.
    pub timestamp: Option<i64>,
    pub key: Option<Bytes>,
    pub headers: Vec<Header>,
    pub value: Option<Bytes>,
}

impl ArchivedRecord {
    pub fn of<M: Message>(m: &M) -> Self {
        let headers = m
            .headers()
            .map(|h| {
                h.iter()
                    .map(|h| Header {
                        key: h.key.to_owned(),
                        value: h.value.map(Bytes::of),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
            timestamp: m.timestamp().to_millis(),
            key: m.key().map(Bytes::of),
            headers,
            value: m.payload().map(Bytes::of),
        }
    }

    /// What identifies the callback across copies (archived twice after a crash, restored into
    /// a new cluster and archived again in a later epoch): the envelope (or dead letter) id the
    /// services put in the `id` header; a record without one, by its whole content (its place
    /// included: the same offset in another epoch is another record unless it is identical), as
    /// it was before any restore gave it the time of the restore ([`Self::as_first_written`]):
    /// re-timestamping a record does not make it another one.
    pub fn identity(&self) -> String {
        match self.envelope_id() {
            Some(id) => format!("{}/{id}", self.topic),
            None => format!(
                "{}/sha256:{}",
                self.topic,
                self.as_first_written().fingerprint()
            ),
        }
    }

    /// The timestamp a restore kept in [`ORIGINAL_TIMESTAMP_HEADER`], when the record has that
    /// header with a decimal value (anything else is not ours, and read as absent).
    pub fn original_timestamp(&self) -> Option<i64> {
        self.headers
            .iter()
            .find(|h| h.key == ORIGINAL_TIMESTAMP_HEADER)
            .and_then(|h| match &h.value {
                Some(Bytes::Text(ms)) => ms.parse().ok(),
                _ => None,
            })
    }

    /// The record as it was before a restore re-timestamped it: its timestamp from
    /// [`ORIGINAL_TIMESTAMP_HEADER`] and the header gone; the record itself when it has none.
    pub fn as_first_written(&self) -> std::borrow::Cow<'_, Self> {
        match self.original_timestamp() {
            Some(ts) => {
                let mut first = self.clone();
                first.timestamp = Some(ts);
                first.headers.retain(|h| h.key != ORIGINAL_TIMESTAMP_HEADER);
                std::borrow::Cow::Owned(first)
            }
            None => std::borrow::Cow::Borrowed(self),
        }
    }

    /// The envelope id from the `id` header, when the record has one.
    pub fn envelope_id(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|h| h.key == crate::envelope::header::ID)
            .and_then(|h| match &h.value {
                Some(Bytes::Text(id)) => Some(id.as_str()),
                _ => None,
            })
    }

    /// The record's JSON line (without its newline), as a segment holds it.
    pub fn line(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an archived record always serializes")
    }

    /// SHA-256 of [`Self::line`], hex: tells whether a broker's record at an offset is the one
    /// the archive holds there (the same cluster incarnation) or another.
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.line())
    }
}

/// SHA-256 of a record's JSON line, hex.
pub fn fingerprint(line: &[u8]) -> String {
    hex::encode(Sha256::digest(line))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn without_id(timestamp: i64) -> ArchivedRecord {
        ArchivedRecord {
            topic: "t".into(),
            partition: 0,
            offset: 7,
            timestamp: Some(timestamp),
            key: Some(Bytes::of(b"k")),
            headers: vec![Header {
                key: "kind".into(),
                value: Some(Bytes::of(b"lms")),
            }],
            value: Some(Bytes::of(b"{}")),
        }
    }

    #[test]
    fn a_re_timestamped_record_keeps_its_identity() {
        let first = without_id(1_700_000_000_000);
        let mut restored = without_id(1_800_000_000_000);
        restored.headers.push(Header {
            key: ORIGINAL_TIMESTAMP_HEADER.into(),
            value: Some(Bytes::of(b"1700000000000")),
        });
        assert_eq!(restored.original_timestamp(), Some(1_700_000_000_000));
        assert_eq!(*restored.as_first_written(), first);
        assert_eq!(restored.identity(), first.identity());
        // The fingerprint stays the bytes' own: it tells incarnations apart.
        assert_ne!(restored.fingerprint(), first.fingerprint());
        // Another time in the header is another record.
        restored.headers.last_mut().unwrap().value = Some(Bytes::of(b"1700000000001"));
        assert_ne!(restored.identity(), first.identity());
    }

    #[test]
    fn a_header_that_is_not_a_number_is_not_an_original_timestamp() {
        let mut r = without_id(1);
        for value in [
            None,
            Some(Bytes::of(b"yesterday")),
            Some(Bytes::of(&[0xff])),
        ] {
            r.headers = vec![Header {
                key: ORIGINAL_TIMESTAMP_HEADER.into(),
                value,
            }];
            assert_eq!(r.original_timestamp(), None);
            assert_eq!(*r.as_first_written(), r);
        }
    }

    #[test]
    fn values_survive_byte_for_byte() {
        for bytes in [&b"{\"a\":1}"[..], &[0xff, 0x00, 0x41], b""] {
            let line = serde_json::to_string(&Bytes::of(bytes)).unwrap();
            let back: Bytes = serde_json::from_str(&line).unwrap();
            assert_eq!(back.to_vec().unwrap(), bytes, "{line}");
        }
    }
}
