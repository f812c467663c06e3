//! What goes on the Kafka topics: every callback wrapped in an [`Envelope`] (DESIGN.md, delivery
//! contract item 4), and what could not be applied as a [`DeadLetter`].

use std::collections::BTreeMap;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::kollus::lms::checksum::HashVerdict;
use crate::kollus::CallbackKind;

/// Version of the envelope layout. Bump when a consumer would read a new record wrongly.
pub const SCHEMA_VERSION: u16 = 1;

/// Kafka record headers, so tools can route and filter without parsing the value.
/// What ingest, the catalog and the workers put on every record they publish: an envelope's
/// [`Envelope::headers`], a dead letter's [`DeadLetter::headers`].
pub mod header {
    use rdkafka::message::{Header, OwnedHeaders};

    pub const KIND: &str = "kind";
    pub const SCHEMA_VERSION: &str = "schema_version";
    pub const ID: &str = "id";
    pub const REASON: &str = "reason";

    /// Headers as a Kafka record carries them.
    pub fn to_kafka(pairs: &[(String, String)]) -> OwnedHeaders {
        pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope<P> {
    /// UUIDv7: unique, and ordered by receive time.
    pub id: Uuid,
    pub kind: CallbackKind,
    pub schema_version: u16,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<IpAddr>,
    /// The callback URL's query parameters, without the secret (LMS URLs may carry `uservalueN`)
    /// and without the LMS document when the query carried it (it is the payload).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// LMS: the flat template fields posted beside the document (`client_user_id`, `start_at`,
    /// `play_status`, `uv0`, ...), without the document and the `hash`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub form: BTreeMap<String, String>,
    /// LMS: what checking the report's `hash` found; absent when the check is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lms_hash: Option<HashVerdict>,
    /// LMS: whether the report carries its user's viewer binding (`bound`, `absent`,
    /// `mismatch`; README, "Viewer binding"); absent when binding is off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<crate::kollus::binding::Binding>,
    pub payload: P,
    pub raw: RawRequest,
}

impl<P> Envelope<P> {
    pub fn new(kind: CallbackKind, payload: P, raw: RawRequest) -> Self {
        Self {
            id: Uuid::now_v7(),
            kind,
            schema_version: SCHEMA_VERSION,
            received_at: OffsetDateTime::now_utc(),
            source_ip: None,
            query: BTreeMap::new(),
            form: BTreeMap::new(),
            lms_hash: None,
            binding: None,
            payload,
            raw,
        }
    }

    /// The record's headers: its kind, schema version and id.
    pub fn headers(&self) -> Vec<(String, String)> {
        vec![
            (header::KIND.into(), self.kind.as_str().into()),
            (
                header::SCHEMA_VERSION.into(),
                self.schema_version.to_string(),
            ),
            (header::ID.into(), self.id.to_string()),
        ]
    }
}

/// The request byte-for-byte, so any record can be re-parsed by a later, better parser: the body
/// (as text when it is UTF-8, readable in any Kafka tool, else as base64) and, where there was
/// one, the query string without its secret (LMS templates may put the document there).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawRequest {
    /// `GET` or `POST`; absent in records written before it was kept (all `POST`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_type: Option<String>,
    /// The raw query string, the `secret` pair removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query_string: Option<String>,
    #[serde(flatten)]
    pub body: RawBody,
}

impl RawRequest {
    /// A POSTed body and nothing else.
    pub fn body(content_type: Option<&str>, body: &[u8]) -> Self {
        Self {
            method: None,
            content_type: content_type.map(str::to_owned),
            query_string: None,
            body: RawBody::from_bytes(body),
        }
    }
}

/// A raw query string without its `secret=` pair (never stored), every other byte as it came.
/// A pair is the secret when its name, decoded as the form decoder decodes it, is `secret`:
/// `s%65cret=` authenticates, so it is stripped too.
pub fn query_without_secret(query: &str) -> Option<String> {
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| !pair.is_empty() && !names_secret(pair.split('=').next().unwrap_or("")))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Whether a raw form name decodes to `secret` (`+` is a space, `%XX` a byte).
fn names_secret(raw: &str) -> bool {
    let plus_as_space = raw.replace('+', " ");
    percent_encoding::percent_decode_str(&plus_as_space)
        .decode_utf8()
        .is_ok_and(|name| name == "secret")
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RawBody {
    #[serde(rename = "body")]
    Text(String),
    #[serde(rename = "body_base64", with = "base64_bytes")]
    Bytes(Vec<u8>),
}

impl RawBody {
    pub fn from_bytes(bytes: &[u8]) -> Self {
        match std::str::from_utf8(bytes) {
            Ok(s) => Self::Text(s.to_owned()),
            Err(_) => Self::Bytes(bytes.to_vec()),
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(s) => s.as_bytes(),
            Self::Bytes(b) => b,
        }
    }
}

mod base64_bytes {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine as _;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// A record that could not be applied, with why. Nothing is dropped: this is kept on
/// `kollus.deadletter.v1` to be fixed and replayed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    pub id: Uuid,
    /// Which service gave up on it.
    pub stage: String,
    /// A short machine-readable reason (also the metric label), e.g. `invalid_payload`.
    pub reason: String,
    /// What exactly was wrong, for a human.
    pub detail: String,
    #[serde(with = "time::serde::rfc3339")]
    pub dead_lettered_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CallbackKind>,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub query: BTreeMap<String, String>,
    /// The record as it came from Kafka, when a worker dead-letters it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub record: Option<RawBody>,
    /// The HTTP request, when ingest dead-letters it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raw: Option<RawRequest>,
}

impl DeadLetter {
    /// A dead letter `stage` writes now, for a request received at `received_at`; the caller
    /// adds what it kept of the request or the record.
    pub fn new(
        stage: &str,
        reason: &str,
        detail: String,
        kind: Option<CallbackKind>,
        received_at: OffsetDateTime,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            stage: stage.into(),
            reason: reason.into(),
            detail,
            dead_lettered_at: OffsetDateTime::now_utc(),
            kind,
            received_at,
            source_ip: None,
            query: BTreeMap::new(),
            record: None,
            raw: None,
        }
    }

    /// The record's headers: its kind (when known), reason and id.
    pub fn headers(&self) -> Vec<(String, String)> {
        let kind = self.kind.map(|k| (header::KIND.into(), k.as_str().into()));
        kind.into_iter()
            .chain([
                (header::REASON.into(), self.reason.clone()),
                (header::ID.into(), self.id.to_string()),
            ])
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_bodies_survive_byte_for_byte() {
        for body in [&b"a=1&b=%7C"[..], &[0xff, 0x00, 0x41][..], b""] {
            let raw = RawRequest::body(Some("application/x-www-form-urlencoded"), body);
            let json = serde_json::to_string(&raw).unwrap();
            let back: RawRequest = serde_json::from_str(&json).unwrap();
            assert_eq!(back.body.as_bytes(), body, "{json}");
        }
        let json = serde_json::to_value(RawRequest::body(None, b"x=1")).unwrap();
        assert_eq!(json, serde_json::json!({"body": "x=1"}));
    }

    #[test]
    fn the_secret_never_stays_in_a_kept_query_string() {
        assert_eq!(
            query_without_secret("secret=s3&json_data=%7B%7D&uv0=a%26b").as_deref(),
            Some("json_data=%7B%7D&uv0=a%26b")
        );
        assert_eq!(query_without_secret("secret=s3"), None);
        assert_eq!(
            query_without_secret("s%65cret=s3&%73ECRET=kept&x=1").as_deref(),
            Some("%73ECRET=kept&x=1"),
            "the decoded name is matched (exactly: names are case-sensitive)"
        );
        assert_eq!(
            query_without_secret("a=1&secret&secret=x&b").as_deref(),
            Some("a=1&b")
        );
    }

    #[test]
    fn envelope_ids_are_v7_and_time_ordered() {
        let a = Envelope::new(CallbackKind::Lms, (), RawRequest::body(None, b""));
        let b = Envelope::new(CallbackKind::Lms, (), a.raw.clone());
        assert_eq!(a.id.get_version_num(), 7);
        assert!(b.id > a.id);
    }

    #[test]
    fn a_dead_letter_names_its_kind_when_it_is_known() {
        let now = OffsetDateTime::now_utc();
        let names = |d: &DeadLetter| d.headers().into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        let known = DeadLetter::new("w", "r", "d".into(), Some(CallbackKind::Lms), now);
        assert_eq!(names(&known), [header::KIND, header::REASON, header::ID]);
        assert_eq!(known.headers()[0].1, "lms");
        let unknown = DeadLetter::new("w", "r", "d".into(), None, now);
        assert_eq!(names(&unknown), [header::REASON, header::ID]);
    }
}
