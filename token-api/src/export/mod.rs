//! Everything we hold about a user, or about a video, streamed: `GET /v1/users/{id}/export` and
//! `GET /v1/media/{key}/export`. JSON Lines (`application/x-ndjson`, one object per line, each
//! with its `type`) or, with `Accept: text/csv`, a CSV of the sessions (user) or of the per-user
//! totals (video). Rows are read through a cursor in a read-only snapshot and written as they
//! come, a few pages in flight: memory stays flat however much there is. With `ARCHIVE_DIR` set,
//! a user's export ends with the raw LMS reports the archive holds for the user (`lms_report`),
//! found by scanning the archive's playback segments one at a time, each envelope once across
//! epochs, then up to when the archive covers (`archive_coverage`).

mod archive;
mod parts;
mod sink;
mod stream;

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use deadpool_postgres::Pool;
use kollus_common::domain::{ClientUserId, MediaContentKey};

use self::parts::{MEDIA_CSV, MEDIA_PARTS, USER_CSV, USER_PARTS};
use self::stream::{stream, Format};
use crate::auth::{ApiScope, Caller};
use crate::metrics::Metrics;
use crate::problem::{invalid, ApiError};

/// What exports need, as their own `web::Data`.
pub struct Export {
    pub pool: Pool,
    pub metrics: Metrics,
    /// Where user exports find the raw LMS reports (`ARCHIVE_DIR`), if anywhere.
    pub archive: Option<kollus_archive::store::Archive>,
}

fn format_of(req: &HttpRequest) -> Format {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("text/csv") {
        Format::Csv
    } else {
        Format::Ndjson
    }
}

/// `GET /v1/users/{client_user_id}/export`
pub async fn user(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<Export>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Export)?;
    let user = ClientUserId::parse(path.into_inner())
        .map_err(|e| invalid("client_user_id", e.to_string()))?;
    let format = format_of(&req);
    tracing::info!(
        caller = caller.name(),
        user = user.as_str(),
        ?format,
        "user export"
    );
    state.metrics.exports.with_label_values(&["user"]).inc();
    Ok(stream(
        &state.pool,
        user.as_str().to_owned(),
        USER_PARTS,
        format,
        USER_CSV,
        state.archive.clone(),
    ))
}

/// `GET /v1/media/{media_content_key}/export`
pub async fn media(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<Export>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Export)?;
    let media = MediaContentKey::parse(path.into_inner())
        .map_err(|e| invalid("media_content_key", e.to_string()))?;
    let format = format_of(&req);
    tracing::info!(
        caller = caller.name(),
        media = media.as_str(),
        ?format,
        "video export"
    );
    state.metrics.exports.with_label_values(&["media"]).inc();
    Ok(stream(
        &state.pool,
        media.as_str().to_owned(),
        MEDIA_PARTS,
        format,
        MEDIA_CSV,
        None,
    ))
}
