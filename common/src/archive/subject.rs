//! Who an archived record names (issue 32: records naming a user are archived under that user's
//! key), and when it was received (an erasure spares what came after it).
//!
//! - The playback topic's records are keyed `{client_user_id}\u{1f}{media_content_key}`.
//! - A dead letter names a user when any field does: its key (as a playback key), a
//!   `client_user_id` in its JSON, in a form body (`client_user_id=...`), or in an LMS
//!   `json_data` document nested in either. One that names nobody is [`Subject::Unattributed`]:
//!   a raw request that may still hold personal data, archived under a key per day.
//! - Everything else (content callbacks, the erasure topic) names nobody, and stays plain.

use serde_json::Value;
use time::OffsetDateTime;

use super::record::{ArchivedRecord, Bytes};

/// The field that names a user wherever a record carries one.
const FIELD: &str = "client_user_id";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subject {
    /// The record names this `client_user_id`.
    User(String),
    /// A dead letter naming nobody: under the key of its day.
    Unattributed,
    /// Archived as it is.
    Nobody,
}

/// Who `r` names, by its topic's role (`playback_topic`, `deadletter_topic`: the names the
/// services were given).
pub fn subject_of(r: &ArchivedRecord, playback_topic: &str, deadletter_topic: &str) -> Subject {
    if r.topic == playback_topic {
        if let Some(user) = user_of_key(r) {
            return Subject::User(user);
        }
        return match value_user(r) {
            Some(user) => Subject::User(user),
            None => Subject::Unattributed,
        };
    }
    if r.topic == deadletter_topic {
        return match user_of_key(r).or_else(|| value_user(r)) {
            Some(user) => Subject::User(user),
            None => Subject::Unattributed,
        };
    }
    Subject::Nobody
}

fn user_of_key(r: &ArchivedRecord) -> Option<String> {
    match &r.key {
        Some(Bytes::Text(k)) => k
            .split_once('\u{1f}')
            .map(|(user, _)| user)
            .filter(|u| !u.is_empty())
            .map(str::to_owned),
        _ => None,
    }
}

/// A `client_user_id` anywhere in the value: only parsed when its bytes hold the field's name
/// at all (the cheap case: most dead letters do not).
fn value_user(r: &ArchivedRecord) -> Option<String> {
    let Some(Bytes::Text(text)) = &r.value else {
        return None;
    };
    find_in_text(text, 0)
}

/// How deep documents nested in strings are searched (a form body holding a `json_data`
/// document holding ... stops here).
const MAX_DEPTH: u8 = 4;

/// The name a request body that is not UTF-8 is kept under (`envelope::RawBody`), base64: its
/// bytes may name a user too.
const BASE64_BODY: &str = "body_base64";

fn find_in_text(text: &str, depth: u8) -> Option<String> {
    if depth > MAX_DEPTH || !(text.contains(FIELD) || text.contains(BASE64_BODY)) {
        return None;
    }
    let trimmed = text.trim_start();
    if trimmed.starts_with('{') || trimmed.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Value>(trimmed) {
            return find_in_json(&v, depth);
        }
    }
    find_in_form(text, depth)
}

fn find_in_json(v: &Value, depth: u8) -> Option<String> {
    match v {
        Value::Object(map) => {
            if let Some(user) = map.get(FIELD).and_then(scalar) {
                return Some(user);
            }
            let in_bytes = map
                .get(BASE64_BODY)
                .and_then(Value::as_str)
                .and_then(|b| {
                    use base64::Engine as _;
                    base64::engine::general_purpose::STANDARD.decode(b).ok()
                })
                .and_then(|bytes| find_in_text(&String::from_utf8_lossy(&bytes), depth + 1));
            if in_bytes.is_some() {
                return in_bytes;
            }
            map.values().find_map(|v| find_in_json(v, depth))
        }
        Value::Array(items) => items.iter().find_map(|v| find_in_json(v, depth)),
        Value::String(s) => find_in_text(s, depth + 1),
        _ => None,
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `a=1&client_user_id=u&json_data=...`: the field itself, or one in a value.
fn find_in_form(text: &str, depth: u8) -> Option<String> {
    let decode = |s: &str| {
        percent_encoding::percent_decode_str(&s.replace('+', " "))
            .decode_utf8_lossy()
            .into_owned()
    };
    let pairs: Vec<(String, String)> = text
        .split(['&', '?'])
        .filter_map(|pair| pair.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect();
    if let Some((_, user)) = pairs.iter().find(|(k, v)| k == FIELD && !v.is_empty()) {
        return Some(user.clone());
    }
    pairs
        .iter()
        .find_map(|(_, v)| (v.as_str() != text).then(|| find_in_text(v, depth + 1))?)
}

/// When the record was received: the envelope's or dead letter's `received_at`, else its Kafka
/// timestamp as first written ([`ArchivedRecord::as_first_written`]), else now.
pub fn received_at(r: &ArchivedRecord) -> OffsetDateTime {
    #[derive(serde::Deserialize)]
    struct Received {
        #[serde(with = "time::serde::rfc3339")]
        received_at: OffsetDateTime,
    }
    if let Some(Bytes::Text(text)) = &r.value {
        if text.contains("\"received_at\"") {
            if let Ok(v) = serde_json::from_str::<Received>(text) {
                return v.received_at;
            }
        }
    }
    r.as_first_written()
        .timestamp
        .and_then(|ms| OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok())
        .unwrap_or_else(OffsetDateTime::now_utc)
}

/// The tag of the unattributed key of `received_at`'s UTC day: `unattributed-YYYY-MM-DD`.
pub fn unattributed_tag(received_at: OffsetDateTime) -> String {
    let d = received_at.to_offset(time::UtcOffset::UTC).date();
    format!(
        "{UNATTRIBUTED}{:04}-{:02}-{:02}",
        d.year(),
        u8::from(d.month()),
        d.day()
    )
}

/// The prefix of unattributed days' tags.
pub const UNATTRIBUTED: &str = "unattributed-";

/// The day an unattributed tag names.
pub fn unattributed_day(tag: &str) -> Option<time::Date> {
    let mut parts = tag.strip_prefix(UNATTRIBUTED)?.splitn(3, '-');
    let year = parts.next()?.parse().ok()?;
    let month = time::Month::try_from(parts.next()?.parse::<u8>().ok()?).ok()?;
    let day = parts.next()?.parse().ok()?;
    time::Date::from_calendar_date(year, month, day).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, key: Option<&str>, value: &str) -> ArchivedRecord {
        ArchivedRecord {
            topic: topic.into(),
            partition: 0,
            offset: 1,
            timestamp: Some(1_700_000_000_000),
            key: key.map(|k| Bytes::of(k.as_bytes())),
            headers: vec![],
            value: Some(Bytes::of(value.as_bytes())),
        }
    }

    const P: &str = "playback";
    const D: &str = "dead";

    #[test]
    fn playback_records_name_the_user_of_their_key() {
        let r = record(P, Some("u-1\u{1f}mck"), "{}");
        assert_eq!(subject_of(&r, P, D), Subject::User("u-1".into()));
        let r = record("content", Some("u-1\u{1f}mck"), "{}");
        assert_eq!(subject_of(&r, P, D), Subject::Nobody);
        let r = record(
            "kollus.erasure.v1",
            Some("abc"),
            "{\"client_user_id\":\"x\"}",
        );
        assert_eq!(subject_of(&r, P, D), Subject::Nobody);
    }

    #[test]
    fn a_dead_letter_names_the_user_any_field_names() {
        let of = |key: Option<&str>, value: &str| subject_of(&record(D, key, value), P, D);
        assert_eq!(of(Some("u-2\u{1f}m"), "{}"), Subject::User("u-2".into()));
        // In its JSON, anywhere.
        assert_eq!(
            of(
                None,
                r#"{"record":{"body":"{\"payload\":{\"client_user_id\":\"u-3\"}}"}}"#
            ),
            Subject::User("u-3".into())
        );
        assert_eq!(
            of(None, r#"{"a":[{"client_user_id":42}]}"#),
            Subject::User("42".into())
        );
        // In a form body.
        assert_eq!(
            of(
                None,
                r#"{"raw":{"body":"play_status=1&client_user_id=u%2D4&x=1"}}"#
            ),
            Subject::User("u-4".into())
        );
        // In an LMS json_data document inside a form body.
        let doc = "json_data=%7B%22client_user_id%22%3A%22u-5%22%7D&hash=x";
        assert_eq!(
            of(None, &format!(r#"{{"raw":{{"body":"{doc}"}}}}"#)),
            Subject::User("u-5".into())
        );
        // In a body that is not UTF-8, kept as base64: its bytes searched too.
        // (A form posted in EUC-KR: "title=가" as the bytes B0 A1.)
        let mut body = b"client_user_id=u-6&title=".to_vec();
        body.extend([0xb0, 0xa1]);
        let encoded = {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(&body)
        };
        assert_eq!(
            of(None, &format!(r#"{{"raw":{{"body_base64":"{encoded}"}}}}"#)),
            Subject::User("u-6".into())
        );
        // Naming nobody: unattributed; so is an unparseable one mentioning the field.
        assert_eq!(
            of(None, r#"{"raw":{"body":"garbage"}}"#),
            Subject::Unattributed
        );
        assert_eq!(of(None, "client_user_id"), Subject::Unattributed);
        assert_eq!(of(None, r#"{"client_user_id":""}"#), Subject::Unattributed);
    }

    #[test]
    fn received_time_is_the_envelopes_else_the_first_written_timestamp() {
        let r = record(P, None, r#"{"received_at":"2026-01-02T03:04:05Z"}"#);
        assert_eq!(received_at(&r).unix_timestamp(), 1_767_323_045);
        let r = record(P, None, "{}");
        assert_eq!(received_at(&r).unix_timestamp(), 1_700_000_000);
        assert_eq!(unattributed_tag(received_at(&r)), "unattributed-2023-11-14");
        assert_eq!(
            unattributed_day("unattributed-2023-11-14"),
            time::Date::from_calendar_date(2023, time::Month::November, 14).ok()
        );
        assert_eq!(unattributed_day("abc"), None);
    }
}
