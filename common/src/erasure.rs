//! What every part of an erasure agrees on (issue 32; README "Erasing a user"): the record
//! token-api puts on the erasure topic (`KAFKA_ERASURE_TOPIC`, [`ErasureEvent`]), where an
//! archive location keeps its keys ([`keys_location`]) and records that it destroyed a subject's
//! keys ([`LocationErasure`], [`location_record_path`]), and the barrier a rebuild or a worker
//! reads: per subject tag, the latest erasure ([`Barrier`]).
//!
//! A subject is named by its tag (`common::subject::Tagger`: an HMAC of the `client_user_id`
//! under `SUBJECT_TAG_KEY_FILE`), never by the id: these records are kept for good.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use uuid::Uuid;

/// The `kind` header of an erasure record on the erasure topic.
pub const KIND: &str = "erasure";

/// One erasure, as token-api publishes it on the erasure topic (Kafka key: the subject tag;
/// JSON value). Nothing else: no id, no reason, no note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErasureEvent {
    /// The receipt's id (`GET /v1/erasures/{id}`).
    pub erasure_id: Uuid,
    pub subject_tag: String,
    /// When the erasure was applied to the tables: reports received before it are the erased
    /// user's past and never come back; reports received after it are a returning user's.
    #[serde(with = "time::serde::rfc3339")]
    pub erased_at: OffsetDateTime,
}

/// Where an archive location keeps its data keys: `ARCHIVE_KEYS_DIR` when set, else `keys`
/// inside the archive (`<archive>/keys`, `s3://bucket/prefix/keys`). Keys can be deleted there;
/// that location must not be versioned or replicated, or an erasure does not destroy anything.
pub fn keys_location(archive_dir: &str, keys_dir: Option<&str>) -> String {
    match keys_dir.map(str::trim).filter(|d| !d.is_empty()) {
        Some(dir) => dir.to_owned(),
        None => format!("{}/keys", archive_dir.trim_end_matches('/')),
    }
}

/// In a key location: the object that says this location destroyed `subject_tag`'s keys for
/// erasure `erasure_id`. Created once, never deleted or replaced.
pub fn location_record_path(subject_tag: &str, erasure_id: Uuid) -> String {
    format!("erasures/{subject_tag}/{erasure_id}.json")
}

/// The prefix under which a key location keeps its erasure records.
pub const LOCATION_RECORDS: &str = "erasures";

/// What a key location keeps at [`location_record_path`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocationErasure {
    pub erasure_id: Uuid,
    pub subject_tag: String,
    #[serde(with = "time::serde::rfc3339")]
    pub erased_at: OffsetDateTime,
    /// When this location destroyed the keys.
    #[serde(with = "time::serde::rfc3339")]
    pub destroyed_at: OffsetDateTime,
    /// The key generations destroyed (none when the location held no key of the subject).
    pub generations: Vec<u32>,
}

impl From<&LocationErasure> for ErasureEvent {
    fn from(l: &LocationErasure) -> Self {
        Self {
            erasure_id: l.erasure_id,
            subject_tag: l.subject_tag.clone(),
            erased_at: l.erased_at,
        }
    }
}

/// Per subject tag, the latest erasure time: a record naming that subject and received before
/// it is never applied, archived or restored again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Barrier(BTreeMap<String, OffsetDateTime>);

impl Barrier {
    pub fn add(&mut self, event: &ErasureEvent) {
        let at = self
            .0
            .entry(event.subject_tag.clone())
            .or_insert(event.erased_at);
        *at = (*at).max(event.erased_at);
    }

    /// Whether a record of `subject_tag` received at `received_at` was erased.
    pub fn erases(&self, subject_tag: &str, received_at: OffsetDateTime) -> bool {
        self.0.get(subject_tag).is_some_and(|at| received_at < *at)
    }

    pub fn erased_at(&self, subject_tag: &str) -> Option<OffsetDateTime> {
        self.0.get(subject_tag).copied()
    }

    /// Adds every erasure of `other` (each subject's latest time wins).
    pub fn merge(&mut self, other: &Barrier) {
        for (tag, at) in other.iter() {
            let mine = self.0.entry(tag.to_owned()).or_insert(at);
            *mine = (*mine).max(at);
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, OffsetDateTime)> {
        self.0.iter().map(|(t, at)| (t.as_str(), *at))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(tag: &str, at: i64) -> ErasureEvent {
        ErasureEvent {
            erasure_id: Uuid::nil(),
            subject_tag: tag.into(),
            erased_at: OffsetDateTime::from_unix_timestamp(at).unwrap(),
        }
    }

    #[test]
    fn the_barrier_keeps_each_subjects_latest_erasure_and_spares_what_came_after() {
        let mut b = Barrier::default();
        b.add(&event("a", 100));
        b.add(&event("a", 50));
        let t = |s| OffsetDateTime::from_unix_timestamp(s).unwrap();
        assert!(b.erases("a", t(99)));
        assert!(!b.erases("a", t(100)));
        assert!(!b.erases("b", t(1)));
        b.add(&event("a", 200));
        assert!(b.erases("a", t(150)));
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn keys_live_inside_the_archive_unless_told_otherwise() {
        assert_eq!(keys_location("/a/", None), "/a/keys");
        assert_eq!(keys_location("s3://b/p", Some(" ")), "s3://b/p/keys");
        assert_eq!(keys_location("/a", Some("/k")), "/k");
        let event = event("t", 1);
        let json = serde_json::to_string(&event).unwrap();
        assert_eq!(serde_json::from_str::<ErasureEvent>(&json).unwrap(), event);
    }
}
