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
    /// included: the same offset in another epoch is another record unless it is identical).
    pub fn identity(&self) -> String {
        match self.envelope_id() {
            Some(id) => format!("{}/{id}", self.topic),
            None => format!("{}/sha256:{}", self.topic, self.fingerprint()),
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

    #[test]
    fn values_survive_byte_for_byte() {
        for bytes in [&b"{\"a\":1}"[..], &[0xff, 0x00, 0x41], b""] {
            let line = serde_json::to_string(&Bytes::of(bytes)).unwrap();
            let back: Bytes = serde_json::from_str(&line).unwrap();
            assert_eq!(back.to_vec().unwrap(), bytes, "{line}");
        }
    }
}
