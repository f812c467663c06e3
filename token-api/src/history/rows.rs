//! The read API's rows and answers: the tables' rows are common's read models
//! ([`SessionRow`], [`UploadRow`]); the progress rollup and a membership are read here, by column
//! name (never `r.get(7)`): a column renamed or reordered in SQL is an error naming it, not a
//! value in the wrong field.

use kollus_common::kollus::lms::merge::{
    merge_segments, segment_list, stored_segments, Segments, Signed,
};
use kollus_common::kollus::lms::Segment;
pub use kollus_common::model::{SessionRow, UploadRow};
use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::{Error, Row};

/// `GET .../progress`'s row: the rollup (`watch_progress`, a view over the sessions) and what
/// its sessions say together.
pub struct ProgressRow {
    pub last_position: Option<i64>,
    pub block_count: Option<i32>,
    pub blocks_watched: i32,
    /// 1-based positions of the blocks played in any session.
    pub watched_positions: Vec<i32>,
    pub total_real_playtime: i64,
    pub total_playtime: i64,
    pub sessions: i32,
    pub first_watched_at: OffsetDateTime,
    pub last_watched_at: OffsetDateTime,
    /// Each session's stored segments.
    pub segments: Option<Vec<serde_json::Value>>,
    /// Each session's `hash_verified`.
    pub verified_each: Option<Vec<Option<bool>>>,
    pub device_clock: bool,
}

impl ProgressRow {
    pub fn from_row(r: &Row) -> Result<Self, Error> {
        Ok(Self {
            last_position: r.try_get("last_position")?,
            block_count: r.try_get("block_count")?,
            blocks_watched: r.try_get("blocks_watched")?,
            watched_positions: r.try_get("watched_positions")?,
            total_real_playtime: r.try_get("total_real_playtime")?,
            total_playtime: r.try_get("total_playtime")?,
            sessions: r.try_get("sessions")?,
            first_watched_at: r.try_get("first_watched_at")?,
            last_watched_at: r.try_get("last_watched_at")?,
            segments: r.try_get("segments")?,
            verified_each: r.try_get("verified_each")?,
            device_clock: r.try_get("device_clock")?,
        })
    }
}

impl ProgressRow {
    /// The sessions' segments together, one per (block, start time) with its longest play
    /// time: common's merge, the worker's.
    pub fn merged_segments(&self) -> Vec<Segment> {
        let mut merged = Segments::new();
        for stored in self.segments.iter().flatten() {
            merge_segments(&mut merged, stored_segments(stored));
        }
        segment_list(&merged)
    }

    /// Verified only when every session was; null when none was checked: common's rule.
    pub fn verified(&self) -> Option<bool> {
        self.verified_each
            .iter()
            .flatten()
            .map(|v| Signed::from_option(*v))
            .reduce(Signed::merge)
            .and_then(Signed::as_option)
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WatchSession {
    pub media_content_key: String,
    /// Kollus's `start_at` (Unix seconds): the session's identity.
    pub start_at: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When the first and the last report of the session arrived.
    #[serde(with = "time::serde::rfc3339")]
    pub first_report_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_report_at: OffsetDateTime,
    #[schema(required = true)]
    pub device: Option<String>,
    #[schema(required = true)]
    pub os: Option<String>,
    #[schema(required = true)]
    pub player_id: Option<String>,
    #[schema(required = true)]
    pub channel_key: Option<String>,
    #[schema(required = true)]
    pub duration: Option<i64>,
    pub playtime: i64,
    pub real_playtime: i64,
    pub playtime_percent: i64,
    pub runtime: i64,
    pub showtime: i64,
    #[schema(required = true)]
    pub last_play_at: Option<i64>,
    #[schema(required = true)]
    pub block_count: Option<i32>,
    pub blocks_watched: i32,
    /// Played segments (`block_info.sessions`), one per (block, start time).
    #[schema(value_type = Vec<SegmentDoc>)]
    pub segments: Vec<Segment>,
    /// True only when every report of the session carried a valid hash; null when none was
    /// checked.
    #[schema(required = true)]
    pub verified: Option<bool>,
    /// The session's offline reports came with a device clock that cannot be right.
    pub device_clock: bool,
}

impl From<SessionRow> for WatchSession {
    fn from(r: SessionRow) -> Self {
        let blocks_watched = r.blocks_watched();
        Self {
            media_content_key: r.media_content_key,
            start_at: r.start_at,
            started_at: OffsetDateTime::from_unix_timestamp(r.start_at)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
            first_report_at: r.first_report_at,
            last_report_at: r.last_report_at,
            device: r.device,
            os: r.os,
            player_id: r.player_id,
            channel_key: r.channel_key,
            duration: r.duration,
            playtime: r.playtime,
            real_playtime: r.real_playtime,
            playtime_percent: r.playtime_percent,
            runtime: r.runtime,
            showtime: r.showtime,
            last_play_at: r.last_play_at,
            block_count: r.block_count,
            blocks_watched,
            // The worker stored them merged: read, not merged again.
            segments: stored_segments(&r.segments).collect(),
            verified: r.hash_verified,
            device_clock: r.device_clock,
        }
    }
}

/// A played segment (Kollus block_info.sessions): playback started start_time seconds into block
/// `block` and lasted play_time seconds. Reported again, late or grown, a segment keeps its
/// longest play time.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Segment)]
pub struct SegmentDoc {
    block: u32,
    start_time: u64,
    play_time: u64,
}

/// Where Kollus's transcoding of the upload stands: `unknown` when Kollus's API reported a
/// stage nobody documented (the number is kept in `transcoding_stage`).
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[expect(dead_code, reason = "a schema of the stored text, never built")]
pub enum TranscodingState {
    Pending,
    Success,
    Fail,
    Unknown,
}

/// `in` the channel now, or `left` it.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[expect(dead_code, reason = "a schema of the answered text, never built")]
pub enum MembershipStatus {
    In,
    Left,
}

/// `GET /v1/media/{key}`'s catalog row: the upload (common's model), then playability.
pub struct CatalogRow {
    pub upload: UploadRow,
    pub playable: bool,
}

impl CatalogRow {
    pub fn from_row(r: &Row) -> Result<Self, Error> {
        Ok(Self {
            upload: UploadRow::from_row(r)?,
            playable: r.try_get("playable")?,
        })
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Upload {
    pub upload_file_key: String,
    #[schema(required = true)]
    pub filename: Option<String>,
    #[schema(required = true)]
    pub full_filename: Option<String>,
    #[schema(required = true)]
    pub content_provider_key: Option<String>,
    /// The video's title in Kollus, from its API or a callback that carried it.
    #[schema(required = true)]
    pub title: Option<String>,
    /// The video's length in whole seconds, as Kollus's API gave it.
    #[schema(required = true, minimum = 0)]
    pub duration_seconds: Option<i32>,
    /// The poster image Kollus serves for the video.
    #[schema(required = true)]
    pub poster_url: Option<String>,
    #[schema(value_type = TranscodingState)]
    pub transcoding_state: String,
    /// Kollus's transcoding stage as a number (21 done; 0, 1, 12 in progress; any other value
    /// kept as Kollus sent it, `transcoding_state` then `unknown`).
    #[schema(required = true)]
    pub transcoding_stage: Option<i32>,
    /// Kollus's name for the stage, as sent.
    #[schema(required = true)]
    pub transcoding_stage_name: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub uploaded_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub transcoded_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339")]
    pub first_event_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_event_at: OffsetDateTime,
}

impl From<&UploadRow> for Upload {
    fn from(u: &UploadRow) -> Self {
        Self {
            upload_file_key: u.upload_file_key.clone(),
            filename: u.filename.clone(),
            full_filename: u.full_filename.clone(),
            content_provider_key: u.content_provider_key.clone(),
            title: u.title.clone(),
            duration_seconds: u.duration_seconds,
            poster_url: u.poster_url.clone(),
            transcoding_state: u.transcoding_state.clone(),
            transcoding_stage: u.transcoding_stage,
            transcoding_stage_name: u.transcoding_stage_name.clone(),
            uploaded_at: u.uploaded_at,
            transcoded_at: u.transcoded_at,
            first_event_at: u.first_event_at,
            last_event_at: u.last_event_at,
        }
    }
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    pub channel_key: String,
    #[schema(required = true)]
    pub channel_name: Option<String>,
    pub profile_keys: Vec<String>,
    #[schema(value_type = MembershipStatus)]
    pub status: &'static str,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub joined_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub left_at: Option<OffsetDateTime>,
}

impl Membership {
    pub fn from_row(r: &Row) -> Result<Self, Error> {
        Ok(Self {
            channel_key: r.try_get("channel_key")?,
            channel_name: r.try_get("channel_name")?,
            profile_keys: r.try_get("profile_keys")?,
            status: if r.try_get("in_channel")? {
                "in"
            } else {
                "left"
            },
            joined_at: r.try_get("joined_at")?,
            left_at: r.try_get("left_at")?,
        })
    }
}
