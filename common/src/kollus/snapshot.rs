//! What Kollus's REST API said about one upload, at a time (SPEC.md section 7): the payload of a
//! `snapshot` envelope on `kollus.content.v1`. `kollus-catalog` publishes them (backfill, sweep);
//! sync-worker applies them beside the callbacks, dated by when the request started, so a
//! callback received after that always wins (Kollus's answers may be cached, hence stale).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::domain::{ChannelKey, MediaContentKey};

/// One upload as the API listed it, or its absence confirmed by a detail request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadSnapshot {
    /// When the first request this snapshot is built from started: the snapshot says what Kollus
    /// knew no later than this, and the catalog orders it at this instant.
    #[serde(with = "time::serde::rfc3339")]
    pub requested_at: OffsetDateTime,
    /// `false`: a complete scan did not list the upload and, after a grace period, a detail
    /// request did not find it either. Every other field is then empty.
    pub found: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// From `duration` (`"MM:SS"` or `"HH:MM:SS"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub poster_url: Option<String>,
    /// Kollus's stage: 21 done; 0, 1, 12 in progress; any other value is kept as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcoding_stage: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcoding_stage_name: Option<String>,
    /// Unix seconds, as the API gives them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcoded_at: Option<i64>,
    /// Every channel the upload is in, with its media content key there. A found snapshot
    /// lists them all: a channel it does not list, the upload is not in.
    #[serde(default)]
    pub channels: Vec<SnapshotChannel>,
}

/// The upload's place in one channel.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SnapshotChannel {
    pub channel_key: ChannelKey,
    pub media_content_key: MediaContentKey,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_name: Option<String>,
}

/// The stage Kollus reports when transcoding is done.
pub const TRANSCODING_DONE: i64 = 21;

impl UploadSnapshot {
    /// A confirmed absence, observed by a request started at `requested_at`.
    pub fn absent(requested_at: OffsetDateTime) -> Self {
        Self {
            requested_at,
            found: false,
            title: None,
            duration_seconds: None,
            poster_url: None,
            transcoding_stage: None,
            transcoding_stage_name: None,
            created_at: None,
            transcoded_at: None,
            channels: Vec::new(),
        }
    }
}
