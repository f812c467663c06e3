//! The console's SQL, rows read by column name (a table's row by common's model): a user's watch sessions with the catalog's
//! title and file name beside each video, a video's viewers, the play and DRM decisions and the
//! entitlement changes behind a refund question, and the audit of who viewed whose data.

use std::sync::LazyLock;

use deadpool_postgres::Client;
use kollus_common::kollus::lms::merge::stored_segments;
use kollus_common::kollus::lms::Segment;
use kollus_common::model::{qualified, SessionRow, UploadRow};
use time::OffsetDateTime;
use tokio_postgres::Row;

use crate::entitlements::model::grants_covering_video;
use crate::entitlements::model::Entitlement;

/// The most blocks a page draws for one video (Kollus splits a video into tens of blocks).
pub const MAX_BLOCKS: usize = 1000;

/// One watch session (one player session), with what the catalog says of its video.
pub struct Session {
    pub media_content_key: String,
    pub title: Option<String>,
    pub filename: Option<String>,
    pub start_at: i64,
    pub device: Option<String>,
    pub os: Option<String>,
    pub player_id: Option<String>,
    pub playtime: i64,
    pub real_playtime: i64,
    pub runtime: i64,
    /// The video's length as the player reported it, in seconds.
    pub duration: Option<i64>,
    /// Played segments (`block_info.sessions`), decoded by common's reader.
    pub segments: Vec<Segment>,
    pub block_count: Option<i32>,
    pub blocks_played: Vec<bool>,
    pub block_percent: Vec<i64>,
    pub hash_verified: Option<bool>,
    /// Every report carried its user's viewer binding (`None`: binding was off).
    pub bound: Option<bool>,
    pub device_clock: bool,
    pub last_report_at: OffsetDateTime,
}

impl Session {
    /// Common's row of the session, then the catalog's title and file name (`u.title`,
    /// `u.filename`, null when the catalog does not know the video).
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        let s = SessionRow::from_row(r)?;
        Ok(Self {
            title: r.try_get("title")?,
            filename: r.try_get("filename")?,
            segments: stored_segments(&s.segments).collect(),
            media_content_key: s.media_content_key,
            start_at: s.start_at,
            device: s.device,
            os: s.os,
            player_id: s.player_id,
            playtime: s.playtime,
            real_playtime: s.real_playtime,
            runtime: s.runtime,
            duration: s.duration,
            block_count: s.block_count,
            blocks_played: s.blocks_played,
            block_percent: s.block_percent,
            hash_verified: s.hash_verified,
            bound: s.bound,
            device_clock: s.device_clock,
            last_report_at: s.last_report_at,
        })
    }

    /// The blocks this session's video is split into, as far as the session knows (at most
    /// [`MAX_BLOCKS`]: a report is the player's word, and a page stays a page).
    pub fn blocks(&self) -> usize {
        let declared = self.block_count.unwrap_or(0).max(0) as usize;
        declared
            .max(self.block_percent.len())
            .max(self.blocks_played.len())
            .min(MAX_BLOCKS)
    }

    /// Percent of block `i` played (0-100); a block marked played with no percent counts 1.
    pub fn percent(&self, i: usize) -> i64 {
        let p = self
            .block_percent
            .get(i)
            .copied()
            .unwrap_or(0)
            .clamp(0, 100);
        if p == 0 && self.blocks_played.get(i).copied().unwrap_or(false) {
            1
        } else {
            p
        }
    }
}

static SESSIONS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, u.title, u.filename
           FROM watch_sessions s
           LEFT JOIN media_contents m ON m.media_content_key = s.media_content_key
           LEFT JOIN uploads u ON u.upload_file_key = m.upload_file_key
          WHERE s.client_user_id = $1",
        qualified("s", SessionRow::COLUMNS)
    )
});

/// Every session of the user, by video then start.
pub async fn user_sessions(client: &Client, user: &str) -> anyhow::Result<Vec<Session>> {
    let rows = client
        .query(
            &format!("{} ORDER BY s.media_content_key, s.start_at", *SESSIONS),
            &[&user],
        )
        .await?;
    Ok(rows
        .iter()
        .map(Session::from_row)
        .collect::<Result<_, _>>()?)
}

/// The user's sessions of one video, by start.
pub async fn user_media_sessions(
    client: &Client,
    user: &str,
    media: &str,
) -> anyhow::Result<Vec<Session>> {
    let rows = client
        .query(
            &format!(
                "{} AND s.media_content_key = $2 ORDER BY s.start_at",
                *SESSIONS
            ),
            &[&user, &media],
        )
        .await?;
    Ok(rows
        .iter()
        .map(Session::from_row)
        .collect::<Result<_, _>>()?)
}

/// What the catalog says of a video: (title, file name), if it knows the video.
pub async fn catalog_entry(
    client: &Client,
    media: &str,
) -> anyhow::Result<Option<(Option<String>, Option<String>)>> {
    let row = client
        .query_opt(
            &format!(
                "SELECT {} FROM media_contents m \
                   JOIN uploads u ON u.upload_file_key = m.upload_file_key \
                  WHERE m.media_content_key = $1",
                qualified("u", UploadRow::COLUMNS)
            ),
            &[&media],
        )
        .await?;
    Ok(match row {
        Some(r) => {
            let u = UploadRow::from_row(&r)?;
            Some((u.title, u.filename))
        }
        None => None,
    })
}

/// Whether we hold anything about the user (sessions or entitlements).
pub async fn user_known(client: &Client, user: &str) -> anyhow::Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM watch_sessions WHERE client_user_id = $1) \
                 OR EXISTS (SELECT 1 FROM entitlements WHERE client_user_id = $1) AS known",
            &[&user],
        )
        .await?
        .try_get("known")?)
}

/// Whether the video was watched or is in the catalog.
pub async fn media_known(client: &Client, media: &str) -> anyhow::Result<bool> {
    Ok(client
        .query_one(
            "SELECT EXISTS (SELECT 1 FROM watch_sessions WHERE media_content_key = $1) \
                 OR EXISTS (SELECT 1 FROM media_contents WHERE media_content_key = $1) AS known",
            &[&media],
        )
        .await?
        .try_get("known")?)
}

/// One viewer of a video: the union of their sessions' blocks.
pub struct Viewer {
    pub block_count: Option<i32>,
    pub blocks_ever_played: Vec<bool>,
    pub total_playtime: i64,
}

/// Every viewer of the video (`watch_progress`, the view over the sessions).
pub async fn viewers(client: &Client, media: &str) -> anyhow::Result<Vec<Viewer>> {
    let rows = client
        .query(
            "SELECT block_count, blocks_ever_played, total_playtime FROM watch_progress \
              WHERE media_content_key = $1",
            &[&media],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Viewer {
                block_count: r.try_get("block_count")?,
                blocks_ever_played: r.try_get("blocks_ever_played")?,
                total_playtime: r.try_get("total_playtime")?,
            })
        })
        .collect()
}

/// One answer given to a play or DRM callback.
pub struct Decision {
    pub decided_at: OffsetDateTime,
    pub callback: String,
    pub kind: i32,
    pub allowed: bool,
    pub reason: String,
    pub scope: Option<String>,
    pub target: Option<String>,
    pub player_id: Option<String>,
}

/// The play and DRM decisions for the user and video, latest first (the latest 200).
pub async fn decisions(client: &Client, user: &str, media: &str) -> anyhow::Result<Vec<Decision>> {
    let rows = client
        .query(
            "SELECT decided_at, callback, kind, result, reason, scope, target, player_id \
               FROM playback_decisions WHERE client_user_id = $1 AND media_content_key = $2 \
              ORDER BY decided_at DESC, id DESC LIMIT 200",
            &[&user, &media],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Decision {
                decided_at: r.try_get("decided_at")?,
                callback: r.try_get("callback")?,
                kind: r.try_get("kind")?,
                allowed: r.try_get::<_, i32>("result")? == 1,
                reason: r.try_get("reason")?,
                scope: r.try_get("scope")?,
                target: r.try_get("target")?,
                player_id: r.try_get("player_id")?,
            })
        })
        .collect()
}

/// One change to an entitlement covering the video.
pub struct Change {
    pub changed_at: OffsetDateTime,
    pub changed_by: String,
    pub action: String,
    pub scope: String,
    pub target: String,
    pub expires_at: Option<OffsetDateTime>,
    pub playtime_limit_seconds: Option<i64>,
}

/// The user's entitlement changes for the grants covering the video (the play callback's
/// [`grants_covering_video`]: the video itself, or a channel the catalog has it in now).
pub async fn changes(client: &Client, user: &str, media: &str) -> anyhow::Result<Vec<Change>> {
    let rows = client
        .query(
            concat!(
                "SELECT changed_at, changed_by, action, scope, target, expires_at, \
                        playtime_limit_seconds FROM entitlement_changes WHERE ",
                grants_covering_video!(),
                " ORDER BY changed_at, id"
            ),
            &[&user, &media],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(Change {
                changed_at: r.try_get("changed_at")?,
                changed_by: r.try_get("changed_by")?,
                action: r.try_get("action")?,
                scope: r.try_get("scope")?,
                target: r.try_get("target")?,
                expires_at: r.try_get("expires_at")?,
                playtime_limit_seconds: r.try_get("playtime_limit_seconds")?,
            })
        })
        .collect()
}

/// Records that `key_name` viewed the user's data (and which video, on the refund view).
pub async fn record_view(
    client: &Client,
    key_name: &str,
    user: &str,
    media: Option<&str>,
) -> anyhow::Result<()> {
    client
        .execute(
            "INSERT INTO console_views (key_name, client_user_id, media_content_key, viewed_at) \
             VALUES ($1, $2, $3, now())",
            &[&key_name, &user, &media],
        )
        .await?;
    Ok(())
}

/// The latest views of the user's data: (key name, when), latest first.
pub async fn views(client: &Client, user: &str) -> anyhow::Result<Vec<(String, OffsetDateTime)>> {
    let rows = client
        .query(
            "SELECT key_name, viewed_at FROM console_views WHERE client_user_id = $1 \
              ORDER BY viewed_at DESC, id DESC LIMIT 20",
            &[&user],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("key_name")?, r.try_get("viewed_at")?)))
        .collect()
}

/// Every grant of the user, in force or revoked (entitlements' own model reads the row).
pub async fn entitlements(client: &Client, user: &str) -> anyhow::Result<Vec<Entitlement>> {
    let rows = client
        .query(
            &format!(
                "SELECT {} FROM entitlements WHERE client_user_id = $1 ORDER BY scope, target",
                Entitlement::COLUMNS
            ),
            &[&user],
        )
        .await?;
    Ok(rows
        .iter()
        .map(Entitlement::from_row)
        .collect::<Result<_, _>>()?)
}
