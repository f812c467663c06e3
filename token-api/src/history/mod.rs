//! The read API for the product app and support staff: watch progress, watch history and the
//! catalog state of a video, read from the tables the workers keep (`migrations/`). Each answer
//! is one indexed read (the history page: one index range scan). Every answer that names a user
//! counts one read of that user by the caller's key in the access record
//! ([`AccessLog::record_read`]: a counter per key, user and day) before it is sent; an answer
//! whose read cannot be counted is a 503, never sent unrecorded.

use std::sync::LazyLock;

use actix_web::{web, HttpRequest, HttpResponse};
use kollus_common::domain::{ClientUserId, MediaContentKey};
use kollus_common::kollus::lms::Segment;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

mod rows;

use deadpool_postgres::Pool;

use self::rows::{
    CatalogRow, Membership, ProgressRow, SessionRow, Upload, UploadRow, WatchSession,
};
use crate::access_log::record::AccessLog;
use crate::auth::{ApiScope, Caller};
use crate::problem::{db_error, invalid, not_recorded, ApiError};

/// What the read API needs, as its own `web::Data`.
pub struct History {
    pub pool: Pool,
}

/// History pages hold at most this many sessions (`limit`), 50 by default.
pub const MAX_PAGE: i64 = 200;
pub const DEFAULT_PAGE: i64 = 50;

fn user_id(s: &str) -> Result<ClientUserId, ApiError> {
    ClientUserId::parse(s).map_err(|e| invalid("client_user_id", e.to_string()))
}

fn media_key(field: &str, s: &str) -> Result<MediaContentKey, ApiError> {
    MediaContentKey::parse(s).map_err(|e| invalid(field, e.to_string()))
}

/// A database not answering, seen by a reader: the caller may retry; the detail stays in the log.
const NOT_ANSWERING: &str = "the history and catalog database is not answering; retry shortly";

async fn client(state: &History) -> Result<deadpool_postgres::Object, ApiError> {
    state.pool.get().await.map_err(db_error(NOT_ANSWERING))
}

/// Counts the caller's read of `user`'s data in the access record, before the answer is sent.
async fn read_of(
    db: &deadpool_postgres::Object,
    log: &AccessLog,
    caller: &Caller,
    user: &str,
) -> Result<(), ApiError> {
    log.record_read(&***db, caller.name(), caller.client_addr(), user)
        .await
        .map_err(not_recorded)
}

// ---------------------------------------------------------------------------------------------
// GET /v1/users/{client_user_id}/media/{media_content_key}/progress
// ---------------------------------------------------------------------------------------------

/// Resume position and coverage of one user on one video.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    client_user_id: String,
    media_content_key: String,
    /// Where to resume: the playback position of the latest session, in seconds.
    #[schema(required = true)]
    resume_position: Option<i64>,
    #[schema(inline)]
    blocks: BlockCoverage,
    total_real_playtime: i64,
    total_playtime: i64,
    sessions: i32,
    #[serde(with = "time::serde::rfc3339")]
    first_watched_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    last_watched_at: OffsetDateTime,
    /// Segments played in any session, one per (block, start time) with its longest play time.
    #[schema(value_type = Vec<rows::SegmentDoc>)]
    segments: Vec<Segment>,
    /// True only when every report of every session carried a valid hash; null when no report
    /// was checked (`LMS_HASH_POLICY=off`).
    #[schema(required = true)]
    verified: Option<bool>,
    /// Some session's offline reports came with a device clock that cannot be right.
    device_clock: bool,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockCoverage {
    /// Blocks the video is split into (Kollus's `block_count`), when reported.
    #[schema(required = true)]
    count: Option<i32>,
    /// Blocks played in any session.
    watched: i32,
    /// `watched / count`, 0..=1; null when the count is unknown.
    #[schema(required = true, minimum = 0, maximum = 1)]
    share: Option<f64>,
    /// Indices (from 0) of the blocks played in any session.
    watched_blocks: Vec<i32>,
}

#[utoipa::path(
    get,
    path = "/v1/users/{client_user_id}/media/{media_content_key}/progress",
    operation_id = "getProgress",
    summary = "Resume position and coverage of one user on one video",
    params(
        crate::params::UserPath,
        crate::params::MediaPath
    ),
    responses(
        (status = 200, description = "The rollup over all of the user's sessions on the video.", body = Progress, content_type = "application/json"),
        (status = 400, description = "Invalid id.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "The user has no history for this video.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::ReadKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["read"]))
)]
pub async fn progress(
    caller: Caller,
    path: web::Path<(String, String)>,
    state: web::Data<History>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Read)?;
    let (user, media) = path.into_inner();
    let user = user_id(&user)?;
    let media = media_key("media_content_key", &media)?;
    let db = client(&state).await?;
    let row = db
        .query_opt(
            "SELECT p.last_position, p.block_count, p.blocks_watched, \
                    array_positions(p.blocks_ever_played, true) AS watched_positions, \
                    p.total_real_playtime, p.total_playtime, p.sessions, p.first_watched_at, \
                    p.last_watched_at, s.segments, s.verified_each, s.device_clock \
             FROM watch_progress p \
             CROSS JOIN LATERAL ( \
                 SELECT array_agg(w.segments) AS segments, \
                        array_agg(w.hash_verified) AS verified_each, \
                        coalesce(bool_or(w.device_clock), false) AS device_clock \
                 FROM watch_sessions w \
                 WHERE w.client_user_id = p.client_user_id \
                   AND w.media_content_key = p.media_content_key) s \
             WHERE p.client_user_id = $1 AND p.media_content_key = $2",
            &[&user.as_str(), &media.as_str()],
        )
        .await
        .map_err(db_error(NOT_ANSWERING))?
        .ok_or_else(|| {
            ApiError::NotFound(format!(
                "user {} has no watch history for media {}",
                user.as_str(),
                media.as_str()
            ))
        })?;
    let row = ProgressRow::from_row(&row).map_err(db_error(NOT_ANSWERING))?;
    read_of(&db, &log, &caller, user.as_str()).await?;
    let (count, watched) = (row.block_count, row.blocks_watched);
    let (segments, verified) = (row.merged_segments(), row.verified());
    Ok(HttpResponse::Ok().json(Progress {
        client_user_id: user.as_str().into(),
        media_content_key: media.as_str().into(),
        resume_position: row.last_position,
        blocks: BlockCoverage {
            count,
            watched,
            share: count
                .filter(|c| *c > 0)
                .map(|c| (f64::from(watched) / f64::from(c)).min(1.0)),
            // PostgreSQL arrays count from 1.
            watched_blocks: row.watched_positions.into_iter().map(|p| p - 1).collect(),
        },
        total_real_playtime: row.total_real_playtime,
        total_playtime: row.total_playtime,
        sessions: row.sessions,
        first_watched_at: row.first_watched_at,
        last_watched_at: row.last_watched_at,
        segments,
        verified,
        device_clock: row.device_clock,
    }))
}

// ---------------------------------------------------------------------------------------------
// GET /v1/users/{client_user_id}/history?media=&from=&to=&cursor=&limit=
// ---------------------------------------------------------------------------------------------

#[derive(Deserialize)]
pub struct HistoryQuery {
    media: Option<String>,
    from: Option<String>,
    to: Option<String>,
    cursor: Option<String>,
    limit: Option<String>,
}

#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryPage {
    client_user_id: String,
    sessions: Vec<WatchSession>,
    /// Pass as `cursor` for the next (older) page; null on the last page.
    #[schema(required = true)]
    next_cursor: Option<String>,
}

/// The position after the last session of a page: (start_at, media_content_key), newest first.
#[derive(Debug, PartialEq)]
struct Cursor {
    start_at: i64,
    media: String,
}

impl Cursor {
    /// `<start_at>:<media_content_key>`: a plain keyset position, so any cursor the document's
    /// pattern allows is a position the API can page from.
    fn encode(&self) -> String {
        format!("{}:{}", self.start_at, self.media)
    }

    fn decode(s: &str) -> Option<Self> {
        let (start_at, media) = s.split_once(':')?;
        Some(Self {
            start_at: start_at.parse().ok()?,
            media: MediaContentKey::parse(media).ok()?.as_str().into(),
        })
    }
}

fn instant(field: &str, s: &str) -> Result<i64, ApiError> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.unix_timestamp())
        .map_err(|_| invalid(field, "must be an RFC 3339 time, e.g. 2026-11-01T09:00:00Z"))
}

/// A page of the user's sessions (common's row: every column), newest first.
static HISTORY_PAGE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {} FROM watch_sessions \
         WHERE client_user_id = $1 \
           AND ($2::text IS NULL OR media_content_key = $2) \
           AND ($3::bigint IS NULL OR start_at >= $3) \
           AND ($4::bigint IS NULL OR start_at < $4) \
           AND ($5::bigint IS NULL OR (start_at, media_content_key) < ($5, $6::text)) \
         ORDER BY start_at DESC, media_content_key DESC \
         LIMIT $7",
        SessionRow::COLUMNS.join(", ")
    )
});

#[utoipa::path(
    get,
    path = "/v1/users/{client_user_id}/history",
    operation_id = "getHistory",
    summary = "A user's watch sessions, newest first, cursor-paginated",
    params(
        crate::params::UserPath,
        ("media" = inline(Option<MediaContentKey>), Query, description = "Only this media content key."),
        ("from" = Option<String>, Query, description = "Sessions started at or after (RFC 3339).", format = DateTime),
        ("to" = Option<String>, Query, description = "Sessions that started before this time (exclusive). At or before `from`: an empty page.", format = DateTime),
        ("cursor" = Option<String>, Query, description = "`next_cursor` of the previous page: `<start_at>:<media_content_key>` of its last session.", pattern = "^[0-9]{1,18}:[A-Za-z0-9_.-]+$"),
        ("limit" = Option<i64>, Query, description = "Sessions per page.", minimum = 1, maximum = 200)
    ),
    responses(
        (status = 200, description = "One page.", body = HistoryPage, content_type = "application/json"),
        (status = 400, description = "Invalid id, time, cursor or limit.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::ReadKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["read"]))
)]
pub async fn history(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<History>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Read)?;
    let q: HistoryQuery = crate::problem::parse_query(&req)?;
    let user = user_id(&path.into_inner())?;
    let media = q
        .media
        .as_deref()
        .map(|m| media_key("media", m))
        .transpose()?;
    let from = q.from.as_deref().map(|s| instant("from", s)).transpose()?;
    let to = q.to.as_deref().map(|s| instant("to", s)).transpose()?;
    // `to` at or before `from` is an empty window: an empty page, not an error (the query is
    // well-formed; nothing started in it).
    let cursor = q
        .cursor
        .as_deref()
        .map(|c| {
            Cursor::decode(c).ok_or_else(|| invalid("cursor", "is not a cursor this API gave"))
        })
        .transpose()?;
    let limit = match q.limit.as_deref() {
        None => DEFAULT_PAGE,
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_PAGE).contains(l))
            .ok_or_else(|| {
                invalid(
                    "limit",
                    format!("must be a whole number from 1 to {MAX_PAGE}"),
                )
            })?,
    };
    let db = client(&state).await?;
    let rows = db
        .query(
            HISTORY_PAGE.as_str(),
            &[
                &user.as_str(),
                &media.as_ref().map(|m| m.as_str()),
                &from,
                &to,
                &cursor.as_ref().map(|c| c.start_at),
                &cursor.as_ref().map(|c| c.media.as_str()),
                &(limit + 1),
            ],
        )
        .await
        .map_err(db_error(NOT_ANSWERING))?;
    let more = rows.len() as i64 > limit;
    let sessions: Vec<WatchSession> = rows
        .iter()
        .take(limit as usize)
        .map(|r| SessionRow::from_row(r).map(WatchSession::from))
        .collect::<Result<_, _>>()
        .map_err(db_error(NOT_ANSWERING))?;
    let next_cursor = more.then(|| sessions.last()).flatten().map(|s| {
        Cursor {
            start_at: s.start_at,
            media: s.media_content_key.clone(),
        }
        .encode()
    });
    // Even an empty page says what we hold of the user: a read of the user.
    read_of(&db, &log, &caller, user.as_str()).await?;
    Ok(HttpResponse::Ok().json(HistoryPage {
        client_user_id: user.as_str().into(),
        sessions,
        next_cursor,
    }))
}

// ---------------------------------------------------------------------------------------------
// GET /v1/media/{media_content_key}
// ---------------------------------------------------------------------------------------------

/// A video's catalog state.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MediaState {
    media_content_key: String,
    /// In at least one channel, and its upload neither deleted nor absent: what strict mode
    /// checks.
    playable: bool,
    /// Kollus's delete callback reached us (`deleted_at`); an absence is `absent_since`.
    deleted: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    deleted_at: Option<OffsetDateTime>,
    /// Since when Kollus's API no longer lists the video (a complete scan, then a detail request
    /// after a grace period): a delete whose callback never reached us, so not playable. A later
    /// callback or snapshot clears it.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    absent_since: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    poster_changed_at: Option<OffsetDateTime>,
    upload: Upload,
    /// Every channel it was ever in: `in` now, or `left`.
    channels: Vec<Membership>,
}

/// A video's upload (common's row: every column) and playability.
static CATALOG_ROW: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {}, p.playable \
         FROM media_playability p JOIN uploads u USING (upload_file_key) \
         WHERE p.media_content_key = $1",
        kollus_common::model::qualified("u", UploadRow::COLUMNS)
    )
});

#[utoipa::path(
    get,
    path = "/v1/media/{media_content_key}",
    operation_id = "getMedia",
    summary = "A video's catalog state: upload (title, duration, poster, transcoding), channels, deletion or absence, playability",
    params(
        crate::params::MediaPath
    ),
    responses(
        (status = 200, description = "As the catalog knows it.", body = MediaState, content_type = "application/json"),
        (status = 400, description = "Invalid key.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "The catalog has no such video.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::ReadKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["read"]))
)]
pub async fn media(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<History>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Read)?;
    let media = media_key("media_content_key", &path.into_inner())?;
    let db = client(&state).await?;
    let row = db
        .query_opt(CATALOG_ROW.as_str(), &[&media.as_str()])
        .await
        .map_err(db_error(NOT_ANSWERING))?
        .ok_or_else(|| {
            ApiError::NotFound(format!("the catalog has no media {}", media.as_str()))
        })?;
    let channels = db
        .query(
            "SELECT channel_key, channel_name, profile_keys, in_channel, joined_at, left_at \
             FROM channel_memberships WHERE media_content_key = $1 \
             ORDER BY in_channel DESC, channel_key",
            &[&media.as_str()],
        )
        .await
        .map_err(db_error(NOT_ANSWERING))?
        .iter()
        .map(Membership::from_row)
        .collect::<Result<_, _>>()
        .map_err(db_error(NOT_ANSWERING))?;
    let catalog = CatalogRow::from_row(&row).map_err(db_error(NOT_ANSWERING))?;
    Ok(HttpResponse::Ok().json(MediaState {
        media_content_key: media.as_str().into(),
        playable: catalog.playable,
        deleted: catalog.upload.deleted_at.is_some(),
        deleted_at: catalog.upload.deleted_at,
        absent_since: catalog.upload.absent_since,
        poster_changed_at: catalog.upload.poster_changed_at,
        upload: Upload::from(&catalog.upload),
        channels,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_anything_else() {
        let c = Cursor {
            start_at: 1_700_000_000,
            media: "vnCVPVyV".into(),
        };
        assert_eq!(c.encode(), "1700000000:vnCVPVyV");
        assert_eq!(Cursor::decode(&c.encode()), Some(c));
        for bad in ["", "!!", "1700000000", "x:vnCVPVyV", "1:bad key", "1:"] {
            assert_eq!(Cursor::decode(bad), None, "{bad}");
        }
    }
}
