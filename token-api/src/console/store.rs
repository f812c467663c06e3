//! The console's SQL, rows read by column name (a table's row by common's model): a user's watch sessions with the catalog's
//! title and file name beside each video, a video's viewers, the play and DRM decisions and the
//! entitlement changes behind a refund question, and who accessed a user's data (the access
//! record's rows of the user's tag, `access_log::read`).

use std::sync::LazyLock;

use deadpool_postgres::Client;
use futures_util::TryStreamExt as _;
use kollus_common::kollus::lms::merge::stored_segments;
use kollus_common::kollus::lms::Segment;
use kollus_common::model::{qualified, SessionRow, UploadRow};
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use kollus_common::subject::SubjectTag;

use crate::access_log::read::{self, Access, Bounded};
use crate::entitlements::model::grants_covering_video;
use crate::entitlements::model::Entitlement;

use super::cell::Cell;

/// The most blocks a page draws for one video (Kollus splits a video into tens of blocks).
pub const MAX_BLOCKS: usize = 1000;

/// One watch session (one player session) as the refund view shows it.
pub struct Session {
    pub start_at: i64,
    pub device: Option<String>,
    pub os: Option<String>,
    pub player_id: Option<String>,
    pub playtime: i64,
    pub real_playtime: i64,
    pub runtime: i64,
    /// The video's length as the player reported it, in seconds.
    pub duration: Option<i64>,
    /// Played segments (`block_info.sessions`), decoded by common's reader: the first
    /// [`MAX_SEGMENTS`] stored (PostgreSQL slices the array; the page never parses more).
    pub segments: Vec<Segment>,
    /// How many segments the session stores in all (more than `segments` holds when it stores
    /// more than [`MAX_SEGMENTS`]: the page says so).
    pub segment_count: i64,
    pub blocks_played: Vec<bool>,
    pub block_percent: Vec<i64>,
    pub hash_verified: Option<bool>,
    /// Every report carried its user's viewer binding (`None`: binding was off).
    pub bound: Option<bool>,
    pub device_clock: bool,
}

impl Session {
    /// Common's row of the session.
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        let s = SessionRow::from_row(r)?;
        Ok(Self {
            segments: stored_segments(&s.segments).collect(),
            segment_count: r.try_get("segment_count")?,
            start_at: s.start_at,
            device: s.device,
            os: s.os,
            player_id: s.player_id,
            playtime: s.playtime,
            real_playtime: s.real_playtime,
            runtime: s.runtime,
            duration: s.duration,
            blocks_played: s.blocks_played,
            block_percent: s.block_percent,
            hash_verified: s.hash_verified,
            bound: s.bound,
            device_clock: s.device_clock,
        })
    }

    /// Block `i` as this session watched it ([`Cell::of`]).
    pub fn cell(&self, i: usize) -> Cell {
        Cell::of(&self.block_percent, &self.blocks_played, i)
    }
}

/// The most segments a page reads of one session: one report carries at most 10,000, but
/// history-worker merges reports with no cap, so a forged session may store millions.
pub const MAX_SEGMENTS: usize = 10_000;

/// A session's stored segments as a page reads them: the first [`MAX_SEGMENTS`], sliced by
/// PostgreSQL (`jsonb_path_query_array`) only when there are more, and `segment_count`, how many
/// it stores (0 for anything but an array, which common's reader skips anyway).
macro_rules! bounded_segments {
    () => {
        // CASE, not AND: PostgreSQL promises the order of a CASE's branches only, and
        // jsonb_array_length fails on anything but an array.
        "CASE WHEN jsonb_typeof(s.segments) <> 'array' THEN s.segments \
              WHEN jsonb_array_length(s.segments) > 10000 \
              THEN jsonb_path_query_array(s.segments, '$[0 to 9999]') \
              ELSE s.segments END AS segments, \
         CASE WHEN jsonb_typeof(s.segments) = 'array' \
              THEN jsonb_array_length(s.segments)::bigint ELSE 0 END AS segment_count"
    };
}

/// A user's sessions with every column of common's row, their segments bounded
/// ([`bounded_segments`]).
static SESSIONS: LazyLock<String> = LazyLock::new(|| {
    let columns: Vec<String> = SessionRow::COLUMNS
        .iter()
        .map(|c| {
            if *c == "segments" {
                bounded_segments!().to_owned()
            } else {
                format!("s.{c}")
            }
        })
        .collect();
    format!(
        "SELECT {} FROM watch_sessions s WHERE s.client_user_id = $1",
        columns.join(", ")
    )
});

/// A session's blocks in SQL: the most it declared or reported (a page draws at most
/// [`MAX_BLOCKS`] of them: a report is the player's word, and a page stays a page).
macro_rules! session_blocks {
    () => {
        "greatest(coalesce(s.block_count, 0), cardinality(s.block_percent), \
                  cardinality(s.blocks_played))"
    };
}

/// [`MAX_BLOCKS`] as a statement's parameter.
const MAX_BLOCKS_SQL: i64 = MAX_BLOCKS as i64;

/// Blocks `0..n` as far as a page draws them.
fn drawn(n: i32) -> usize {
    usize::try_from(n).unwrap_or(0).min(MAX_BLOCKS)
}

/// Sums of a user's counters saturate at bigint's limit (as `watch_progress`'s, V18).
macro_rules! saturating_sum {
    ($column:literal) => {
        concat!("least(sum(s.", $column, "), 9223372036854775807)::bigint")
    };
}

/// Adds a session's blocks (a row with `block_count`, `block_percent`, `blocks_played`) to a
/// union row: per block, watched by any session, the most of it any played; as long as the most blocks any
/// session declared or reported, at most [`MAX_BLOCKS`].
fn fold_blocks(coverage: &mut Vec<Cell>, r: &Row) -> Result<(), tokio_postgres::Error> {
    let declared: Option<i32> = r.try_get("block_count")?;
    let percent: Vec<i64> = r.try_get("block_percent")?;
    let played: Vec<bool> = r.try_get("blocks_played")?;
    let reported = percent.len().max(played.len()).min(MAX_BLOCKS);
    let blocks = drawn(declared.unwrap_or(0)).max(reported);
    if coverage.len() < blocks {
        coverage.resize(blocks, Cell::default());
    }
    for (i, c) in coverage.iter_mut().enumerate().take(reported) {
        *c = c.union(Cell::of(&percent, &played, i));
    }
    Ok(())
}

/// One video a user watched, over all their sessions of it: sums by PostgreSQL, the coverage
/// folded from the sessions' blocks as they stream in.
pub struct VideoSummary {
    pub media_content_key: String,
    pub title: Option<String>,
    pub filename: Option<String>,
    pub sessions: i64,
    pub playtime: i64,
    /// Per block, watched by any session, the most of it any played (at most [`MAX_BLOCKS`]).
    pub coverage: Vec<Cell>,
    pub first_start_at: i64,
    pub last_report_at: OffsetDateTime,
}

/// A page of the videos a user watched, by media content key after `after`: at most `limit`,
/// each summed over all its sessions (the page holds no session), and how many
/// videos the user watched in all and how many of them sort at or before `after` (0 when the
/// page is empty).
pub async fn user_videos(
    client: &Client,
    user: &str,
    after: Option<&str>,
    limit: usize,
) -> anyhow::Result<(Vec<VideoSummary>, i64, i64)> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            concat!(
                "WITH v AS (SELECT s.media_content_key, count(*) AS sessions, ",
                saturating_sum!("playtime"),
                " AS playtime, min(s.start_at) AS first_start_at, \
                  max(s.last_report_at) AS last_report_at, max(",
                session_blocks!(),
                ") AS blocks, count(*) OVER () AS videos, \
                  count(*) FILTER (WHERE s.media_content_key <= $2) OVER () AS earlier \
                   FROM watch_sessions s WHERE s.client_user_id = $1 \
                  GROUP BY s.media_content_key) \
                 SELECT v.*, u.title, u.filename FROM v \
                   LEFT JOIN media_contents m ON m.media_content_key = v.media_content_key \
                   LEFT JOIN uploads u ON u.upload_file_key = m.upload_file_key \
                  WHERE $2::text IS NULL OR v.media_content_key > $2 \
                  ORDER BY v.media_content_key LIMIT $3"
            ),
            &[&user, &after, &limit],
        )
        .await?;
    let keys: Vec<String> = rows
        .iter()
        .map(|r| r.try_get("media_content_key"))
        .collect::<Result<_, _>>()?;
    let (mut total, mut earlier) = (0, 0);
    // Each video's union, folded from its sessions' blocks as they stream in (a union row per
    // video of the page in memory, whatever the number of sessions).
    let mut cells = std::collections::HashMap::<String, Vec<Cell>>::new();
    if !keys.is_empty() {
        let params: [&(dyn ToSql + Sync); 2] = [&user, &keys];
        let rows = client
            .query_raw(
                "SELECT s.media_content_key, s.block_count, s.block_percent, s.blocks_played \
                   FROM watch_sessions s \
                  WHERE s.client_user_id = $1 AND s.media_content_key = ANY($2)",
                params,
            )
            .await?;
        futures_util::pin_mut!(rows);
        while let Some(r) = rows.try_next().await? {
            let coverage = cells.entry(r.try_get("media_content_key")?).or_default();
            fold_blocks(coverage, &r)?;
        }
    }
    if rows.is_empty() && after.is_some() {
        // A cursor past the user's last video (a stale Next link): how many they have, all of
        // them before it, so the page says there are no more rather than no history.
        let r = client
            .query_one(
                "SELECT count(DISTINCT s.media_content_key) AS videos FROM watch_sessions s \
                  WHERE s.client_user_id = $1",
                &[&user],
            )
            .await?;
        total = r.try_get("videos")?;
        earlier = total;
    }
    let mut videos = Vec::with_capacity(rows.len());
    for r in &rows {
        total = r.try_get("videos")?;
        earlier = r.try_get("earlier")?;
        let key: String = r.try_get("media_content_key")?;
        let blocks = drawn(r.try_get("blocks")?);
        videos.push(VideoSummary {
            coverage: {
                let mut c = cells.remove(&key).unwrap_or_default();
                c.resize(blocks, Cell::default());
                c
            },
            media_content_key: key,
            title: r.try_get("title")?,
            filename: r.try_get("filename")?,
            sessions: r.try_get("sessions")?,
            playtime: r.try_get("playtime")?,
            first_start_at: r.try_get("first_start_at")?,
            last_report_at: r.try_get("last_report_at")?,
        });
    }
    Ok((videos, total, earlier))
}

/// The user's playtime on each of `media` (summed in SQL, saturating): what a media grant used.
pub async fn user_playtime(
    client: &Client,
    user: &str,
    media: &[&str],
) -> anyhow::Result<Vec<(String, i64)>> {
    if media.is_empty() {
        return Ok(Vec::new());
    }
    let rows = client
        .query(
            concat!(
                "SELECT s.media_content_key, ",
                saturating_sum!("playtime"),
                " AS playtime FROM watch_sessions s \
                  WHERE s.client_user_id = $1 AND s.media_content_key = ANY($2) \
                  GROUP BY s.media_content_key"
            ),
            &[&user, &media],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("media_content_key")?, r.try_get("playtime")?)))
        .collect()
}

/// All of a user's sessions of one video, folded: the refund view's union row and the
/// counts its page of sessions is placed among.
pub struct PairSummary {
    /// Every session of the user on the video.
    pub sessions: i64,
    /// Those starting at or after the page's cursor (none without one): the newer pages'.
    pub newer: i64,
    /// Per block, watched by any session, the most of it any played (at most [`MAX_BLOCKS`]).
    pub coverage: Vec<Cell>,
}

/// The refund view's union over every session of the user on the video, and how many there are
/// (in all, and at or after `before`): one pass over the pair's sessions, streamed and folded as
/// they arrive (only their blocks are read; memory is one union row, whatever their number).
/// Folding here costs PostgreSQL half what `unnest` and `GROUP BY` did (issue 30's bench).
pub async fn pair_summary(
    client: &Client,
    user: &str,
    media: &str,
    before: Option<i64>,
) -> anyhow::Result<PairSummary> {
    let params: [&(dyn ToSql + Sync); 2] = [&user, &media];
    let rows = client
        .query_raw(
            "SELECT s.start_at, s.block_count, s.block_percent, s.blocks_played \
               FROM watch_sessions s \
              WHERE s.client_user_id = $1 AND s.media_content_key = $2",
            params,
        )
        .await?;
    futures_util::pin_mut!(rows);
    let mut summary = PairSummary {
        sessions: 0,
        newer: 0,
        coverage: Vec::new(),
    };
    while let Some(r) = rows.try_next().await? {
        summary.sessions += 1;
        if before.is_some_and(|b| r.try_get::<_, i64>("start_at").is_ok_and(|s| s >= b)) {
            summary.newer += 1;
        }
        fold_blocks(&mut summary.coverage, &r)?;
    }
    Ok(summary)
}

/// A page of the user's sessions of one video, newest first, starting before `before` (the
/// keyset: `start_at` is the session's identity within the pair): at most `limit`.
pub async fn user_media_sessions(
    client: &Client,
    user: &str,
    media: &str,
    before: Option<i64>,
    limit: usize,
) -> anyhow::Result<Vec<Session>> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &format!(
                "{} AND s.media_content_key = $2 AND ($3::bigint IS NULL OR s.start_at < $3) \
                 ORDER BY s.start_at DESC LIMIT $4",
                *SESSIONS
            ),
            &[&user, &media, &before, &limit],
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

/// A video's viewers, summed in SQL over its sessions (per viewer as `watch_progress` has
/// them: the union of their sessions' blocks): the page reads no viewer.
pub struct VideoAudience {
    pub viewers: i64,
    pub playtime: i64,
    /// Viewers by share of blocks watched: fewer than 25%, 25-50, 50-75, 75-100 (not all), all.
    pub completion: [i64; 5],
    /// Per block, how many viewers watched it (at most [`MAX_BLOCKS`]).
    pub per_block: Vec<i64>,
}

/// The video's viewers, their playtime, completion buckets and viewers per block, in one
/// statement over the video's sessions (`watch_progress`'s union of a viewer's blocks, without
/// the rest of that view): rows `('bucket', n, viewers, playtime, blocks)` per completion bucket
/// and `('block', i, viewers, 0, 0)` per block from 1 that anyone watched.
pub async fn audience(client: &Client, media: &str) -> anyhow::Result<VideoAudience> {
    let rows = client
        .query(
            "WITH played AS MATERIALIZED ( \
                 SELECT s.client_user_id, b.i FROM watch_sessions s, \
                        unnest(s.blocks_played) WITH ORDINALITY AS b(p, i) \
                  WHERE s.media_content_key = $1 AND b.p GROUP BY s.client_user_id, b.i), \
             viewers AS ( \
                 SELECT s.client_user_id, greatest(coalesce(max(s.block_count), 0), \
                        max(cardinality(s.blocks_played))) AS b, \
                        least(sum(s.playtime), 9223372036854775807)::bigint AS playtime \
                   FROM watch_sessions s WHERE s.media_content_key = $1 \
                  GROUP BY s.client_user_id), \
             watched AS (SELECT client_user_id, count(*) AS w FROM played GROUP BY client_user_id) \
             SELECT 'bucket' AS kind, \
                    CASE WHEN v.b = 0 THEN 0 WHEN coalesce(w.w, 0) >= v.b THEN 4 \
                         ELSE least(coalesce(w.w, 0) * 4 / v.b, 3) END AS n, \
                    count(*) AS viewers, \
                    least(sum(v.playtime), 9223372036854775807)::bigint AS playtime, \
                    max(v.b) AS blocks \
               FROM viewers v LEFT JOIN watched w USING (client_user_id) GROUP BY 2 \
             UNION ALL \
             SELECT 'block', i, count(*), 0, 0 FROM played WHERE i <= $2 GROUP BY i",
            &[&media, &MAX_BLOCKS_SQL],
        )
        .await?;
    let mut audience = VideoAudience {
        viewers: 0,
        playtime: 0,
        completion: [0; 5],
        per_block: Vec::new(),
    };
    let (mut blocks, mut watched) = (0, Vec::new());
    for r in &rows {
        let n: i64 = r.try_get("n")?;
        let viewers: i64 = r.try_get("viewers")?;
        if r.try_get::<_, &str>("kind")? == "block" {
            watched.push((n, viewers));
            continue;
        }
        audience.viewers += viewers;
        audience.playtime = audience
            .playtime
            .saturating_add(r.try_get::<_, i64>("playtime")?);
        if let Some(c) = usize::try_from(n)
            .ok()
            .and_then(|n| audience.completion.get_mut(n))
        {
            *c += viewers;
        }
        blocks = blocks.max(drawn(r.try_get("blocks")?));
    }
    audience.per_block = vec![0; blocks];
    for (i, viewers) in watched {
        if let Some(c) = usize::try_from(i - 1)
            .ok()
            .and_then(|i| audience.per_block.get_mut(i))
        {
            *c = viewers;
        }
    }
    Ok(audience)
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
/// [`grants_covering_video`]: the video itself, or a channel the catalog has it in now): the
/// latest 200, oldest first.
pub async fn changes(client: &Client, user: &str, media: &str) -> anyhow::Result<Vec<Change>> {
    let rows = client
        .query(
            concat!(
                "SELECT changed_at, changed_by, action, scope, target, expires_at, \
                        playtime_limit_seconds FROM entitlement_changes WHERE ",
                grants_covering_video!(),
                " ORDER BY changed_at DESC, id DESC LIMIT 200"
            ),
            &[&user, &media],
        )
        .await?;
    rows.iter()
        .rev()
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

/// Accesses a user's page (and the refund view) lists at most, newest first; it says how many
/// more the record holds.
pub const ACCESSES_PER_PAGE: usize = 50;

/// Every access to the user, console and API, newest first: the access record's rows and open
/// read counters of the user's tag, at most [`ACCESSES_PER_PAGE`], and how many more.
pub async fn accesses(client: &Client, tag: &SubjectTag) -> anyhow::Result<Bounded<Access>> {
    let client: &tokio_postgres::Client = client;
    read::of_subject(client, tag, ACCESSES_PER_PAGE).await
}

/// The most grants in force a user's page shows (newest first); it says how many more there are.
pub const GRANTS_PER_PAGE: usize = 200;

/// The user's grants in force now, newest first, at most `limit` (entitlements' own model
/// reads the row), and how many are in force in all.
pub async fn entitlements_in_force(
    client: &Client,
    user: &str,
    limit: usize,
) -> anyhow::Result<(Vec<Entitlement>, i64)> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = client
        .query(
            &format!(
                "SELECT {}, count(*) OVER () AS in_force FROM entitlements \
                  WHERE client_user_id = $1 AND revoked_at IS NULL \
                    AND (expires_at IS NULL OR expires_at > now()) \
                  ORDER BY granted_at DESC, scope, target LIMIT $2",
                Entitlement::COLUMNS
            ),
            &[&user, &limit],
        )
        .await?;
    let total = match rows.first() {
        Some(r) => r.try_get("in_force")?,
        None => 0,
    };
    Ok((
        rows.iter()
            .map(Entitlement::from_row)
            .collect::<Result<_, _>>()?,
        total,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_segments_sql_slices_at_max_segments() {
        let sql = bounded_segments!();
        assert!(sql.contains(&format!("> {MAX_SEGMENTS}")), "{sql}");
        assert!(
            sql.contains(&format!("[0 to {}]", MAX_SEGMENTS - 1)),
            "{sql}"
        );
        assert!(SESSIONS.contains("AS segment_count"));
        // The column only inside the two CASEs (five and two mentions), never selected raw.
        assert_eq!(SESSIONS.matches("s.segments").count(), 7, "{}", *SESSIONS);
    }
}
