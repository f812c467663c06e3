//! Everything we hold about a user, or about a video, streamed: `GET /v1/users/{id}/export` and
//! `GET /v1/media/{key}/export`. JSON Lines (`application/x-ndjson`, one object per line, each
//! with its `type`) or, with `Accept: text/csv`, a CSV of the sessions (user) or of the per-user
//! totals (video). Rows are read through a cursor in a read-only snapshot and written as they
//! come, a few pages in flight: memory stays flat however much there is. With `ARCHIVE_DIR` set,
//! a user's export ends with the raw LMS reports the archive holds for the user (`lms_report`),
//! found by scanning the archive's playback segments one at a time, each envelope once across
//! epochs, then up to when the archive covers (`archive_coverage`).
//!
//! Exports cannot starve playback: they run on a pool of their own, at most
//! `EXPORT_CONCURRENCY` at once (one more is a 503 with `Retry-After`, before anything is
//! streamed), a client that stops reading is cut off after `EXPORT_CHUNK_DEADLINE_SECONDS`, and
//! an export still running at `EXPORT_MAX_SECONDS` is cut too, however steadily it is read.
//!
//! Every export is a download of personal data, so it takes a `reason` (400 without one) and
//! writes its `api_export` row to the access record, on its own connection, before anything is
//! streamed: an export that cannot be recorded is a 503.

mod archive;
pub mod course;
pub mod gate;

pub use self::archive::{ArchiveKeys, RawReports};
pub use self::gate::Export;
pub mod parts;
mod request;
mod sink;
pub mod stream;

use actix_web::{web, HttpRequest, HttpResponse};
use anyhow::Context as _;
use kollus_common::domain::{ClientUserId, MediaContentKey};

use self::parts::{MEDIA_CSV, MEDIA_PARTS, USER_CSV, USER_PARTS};
use self::request::{admit_or_answer, format_of, reason_of, REASON_PARAM};
use self::stream::stream;
use crate::access_log::record::{redacted_all, AccessLog, Action, Entry};
use crate::auth::{ApiScope, Caller};
use crate::problem::{invalid, not_recorded, ApiError};

#[utoipa::path(
    get,
    path = "/v1/users/{client_user_id}/export",
    operation_id = "exportUser",
    summary = "Everything we hold about a user",
    description = "JSON Lines (default): `session` (every watch session with its played blocks and segments), `progress` (per video), `entitlement`, `playback_decision`; with `Accept: text/csv`, the sessions as CSV. Session and progress lines, and each CSV row, end with what the catalog says of the video: `title`, `duration_seconds`, `poster_url`, `transcoding_stage`, `transcoding_stage_name` and `absent_since` (null, or an empty cell, where unknown). Streamed from a read-only snapshot, so memory stays flat for users with any number of sessions; a failure half-way ends the stream with an `error` line. An export is cut (the connection closes without the chunked encoding's last chunk, never a short file that passes for a whole one) when the client takes no 64 KiB chunk within `EXPORT_CHUNK_DEADLINE_SECONDS` (30 by default), or when it is not done within `EXPORT_MAX_SECONDS` (600 by default).",
    params(
        crate::params::UserPath,
        ("reason" = String, Query, description = REASON_PARAM, min_length = 1, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", max_length = 500)
    ),
    responses(
        (status = 200, description = "Streamed as it is read; the access record holds the export (`api_export`) before the first byte.", content((String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, description = "An invalid id, or no `reason`.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Every export slot is streaming (`EXPORT_CONCURRENCY`; `Retry-After` says when to ask again), or PostgreSQL is not answering.", body = crate::problem::Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait, when every slot is streaming."))),
        crate::problem::ExportKeyRefused
    ),
    security(("bearer" = ["export"]))
)]
pub async fn user(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<Export>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Export)?;
    let user = ClientUserId::parse(path.into_inner())
        .map_err(|e| invalid("client_user_id", e.to_string()))?;
    let reason = reason_of(&req, Some(user.as_str()))?;
    let format = format_of(&req);
    let admitted = match admit_or_answer(&state).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let entry = Entry {
        client_addr: caller.client_addr(),
        subject: Some(user.as_str()),
        reason: Some(&reason),
        ..Entry::new(Action::ApiExport, caller.name())
    };
    log.record(&**admitted.client, entry)
        .await
        .map_err(not_recorded)?;
    // The user by tag: a user id never goes to the log.
    tracing::info!(
        caller = caller.name(),
        subject = log.tag(user.as_str()).as_str(),
        ?format,
        "user export"
    );
    state.metrics.exports.with_label_values(&["user"]).inc();
    // An erased user's reports from before the erasure are left out of the raw reports, so the
    // export answers as for a user never seen (and a returning user's later reports are theirs).
    let erased_before =
        crate::erasure::model::erased_before(&**admitted.client, &log.tag(user.as_str()))
            .await
            .map_err(|e| {
                tracing::warn!(
                    error = format!("{e:#}"),
                    "user export: reading the erasure barrier failed"
                );
                ApiError::Unavailable("PostgreSQL is not answering; retry".into())
            })?;
    Ok(stream(
        &state,
        admitted,
        user.as_str().to_owned(),
        USER_PARTS,
        format,
        USER_CSV,
        state.archive.clone().map(|archive| RawReports {
            erased_before,
            ..archive
        }),
    ))
}

#[utoipa::path(
    get,
    path = "/v1/media/{media_content_key}/export",
    operation_id = "exportMedia",
    summary = "Everything we hold about a video, for its course owner",
    description = "JSON Lines (default): `media` (the catalog record, with `title`, `duration_seconds`, `poster_url`, `transcoding_stage`, `transcoding_stage_name`, `absent_since`; `deleted_at` is the delete callback's, `absent_since` an absence from Kollus's API), `channel` (memberships), `content_event` (its channel history, in event order), `user_totals` (per user); with `Accept: text/csv`, the per-user totals as CSV, each row ending with the same six catalog columns. Cut as a user's export is, at the same deadlines.",
    params(
        crate::params::MediaPath,
        ("reason" = String, Query, description = REASON_PARAM, min_length = 1, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", max_length = 500)
    ),
    responses(
        (status = 200, description = "Streamed as it is read; the access record holds the export (`api_export`, target the video) before the first byte.", content((String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, description = "An invalid id, or no `reason`.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Every export slot is streaming (`EXPORT_CONCURRENCY`; `Retry-After` says when to ask again), or PostgreSQL is not answering.", body = crate::problem::Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait, when every slot is streaming."))),
        crate::problem::ExportKeyRefused
    ),
    security(("bearer" = ["export"]))
)]
pub async fn media(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<Export>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Export)?;
    let media = MediaContentKey::parse(path.into_inner())
        .map_err(|e| invalid("media_content_key", e.to_string()))?;
    let reason = reason_of(&req, None)?;
    let format = format_of(&req);
    let admitted = match admit_or_answer(&state).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    // Each user the export lists (its `user_totals`: the video's audience) is a data subject of
    // it: a row per user, so the user's page shows the export too. A reason outlives an erasure
    // in the access record: no listed user's id stays in it.
    let listed = listed_users(&admitted.client, &media)
        .await
        .map_err(not_recorded)?;
    let reason = redacted_all(&reason, listed.iter().map(String::as_str));
    let entry = Entry {
        client_addr: caller.client_addr(),
        target: Some(media.as_str()),
        reason: Some(&reason),
        ..Entry::new(Action::ApiExport, caller.name())
    };
    log.record(&**admitted.client, entry)
        .await
        .map_err(not_recorded)?;
    let subjects = log
        .record_each(&**admitted.client, entry, &listed)
        .await
        .map_err(not_recorded)?;
    tracing::info!(
        caller = caller.name(),
        media = media.as_str(),
        subjects,
        ?format,
        "video export"
    );
    state.metrics.exports.with_label_values(&["media"]).inc();
    Ok(stream(
        &state,
        admitted,
        media.as_str().to_owned(),
        MEDIA_PARTS,
        format,
        MEDIA_CSV,
        None,
    ))
}

/// The users a video's export lists (its `user_totals` and CSV rows).
async fn listed_users(
    client: &deadpool_postgres::Object,
    media: &MediaContentKey,
) -> anyhow::Result<Vec<String>> {
    client
        .query(
            "SELECT client_user_id FROM watch_progress WHERE media_content_key = $1",
            &[&media.as_str()],
        )
        .await
        .context("reading the users a video's export lists")?
        .iter()
        .map(|r| r.try_get(0).map_err(anyhow::Error::from))
        .collect()
}
