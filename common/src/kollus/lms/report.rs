//! The strict LMS report the pipeline sees, whatever shape the player sent ([`super::wire`]
//! reads that).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::domain::{ClientUserId, MediaContentKey, UnixSeconds};

/// Most blocks a report may describe. A hard ceiling against memory abuse; the history worker
/// applies its own, lower, configurable cap.
pub const MAX_BLOCKS: u32 = 10_000;
/// Most played segments (`block_info.sessions`) a report may carry.
pub const MAX_SEGMENTS: usize = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LmsReport {
    pub user: LmsUser,
    pub content: LmsContent,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocks: Option<Blocks>,
    /// `block_info.sessions`: the segments played, when the channel enables sessions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
    /// `uservalueN` values from the player URL, as the player echoed them.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub uservalues: BTreeMap<String, String>,
    /// The template's flat `play_status` field (`{PLAY_STATUS}`), when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub play_status: Option<PlayStatus>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LmsUser {
    pub client_user_id: ClientUserId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_provider_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub player_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hardware_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_name: Option<String>,
    /// The Android player sends `model/name`; one sample names the field `device_name`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
}

/// `content_info`. Counters are cumulative within one player session (`start_at`).
/// Durations and positions are whole seconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LmsContent {
    pub media_content_key: MediaContentKey,
    /// Unix time of the Video Gateway call: the same for every report of one player session.
    /// For downloaded content it comes from the device's clock (SPEC.md 4.3).
    pub start_at: UnixSeconds,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding_profile: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playtime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub real_playtime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playtime_percent: Option<u64>,
    /// Last playback *position*, not a time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_play_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runtime: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub showtime: Option<u64>,
    /// Numbers the reports of offline (downloaded) playback.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<u64>,
}

/// `block_info`: the video split into `count` equal blocks; `items.len() == count`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Blocks {
    pub count: u32,
    pub items: Vec<Block>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Block {
    /// `b{i}`: any of the block was played.
    pub played: bool,
    /// `t{i}`: seconds played in the block.
    pub seconds: u64,
    /// `p{i}`: percent of the block played.
    pub percent: u64,
}

impl Blocks {
    pub fn watched(&self) -> usize {
        self.items.iter().filter(|b| b.played).count()
    }
}

/// One played segment (`block_info.sessions[]`): playback started at `start_time` seconds into
/// block `block` and lasted `play_time` seconds. Cumulative like the rest of a report: a later
/// report repeats the segment, with a `play_time` that may have grown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Segment {
    pub block: u32,
    pub start_time: u64,
    pub play_time: u64,
}

/// The template's `{PLAY_STATUS}`: what the player was doing when it sent the report.
/// Kollus's values in any case (`play`, `playing`, ...); anything else is not a play status (the
/// raw field is still kept with the template's other flat fields).
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantArray,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum PlayStatus {
    #[strum(to_string = "play", serialize = "playing")]
    Play,
    #[strum(to_string = "pause", serialize = "paused")]
    Pause,
    #[strum(to_string = "stop", serialize = "stopped")]
    Stop,
}

impl PlayStatus {
    pub fn parse(s: &str) -> Option<Self> {
        s.trim().parse().ok()
    }

    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

impl LmsReport {
    /// The Kafka key: one viewer's reports on one video stay in order.
    /// U+001F (unit separator) cannot occur in either part.
    pub fn partition_key(&self) -> String {
        format!(
            "{}\u{1f}{}",
            self.user.client_user_id, self.content.media_content_key
        )
    }
}
