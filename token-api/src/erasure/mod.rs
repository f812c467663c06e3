//! Forgetting a user (issue 32; README "Erasing a user"). `POST
//! /v1/users/{client_user_id}/erasure` deletes the user's rows from every table naming them and
//! destroys their data key in one transaction ([`model::apply`]), and answers `202` with a
//! receipt's id whether or not the user was ever seen (an erasure tells nothing about
//! existence); `GET /v1/erasures/{erasure_id}` reads the receipt. Both need the `erase` scope.
//! The access record is kept (the law requires it); its rows' sealed ids no longer open. Logs
//! name the subject tag, never the id.
//!
//! Not yet: the topics, the archive, dead letters, the ingest spool, `restore`/`--rebuild`
//! (later slices); the receipt says so in `kept`.

pub mod model;

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use deadpool_postgres::Pool;
use kollus_common::domain::ClientUserId;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use self::model::{Basis, Receipt, Request};
use crate::access_log::record::AccessLog;
use crate::auth::{ApiScope, Caller};
use crate::metrics::Metrics;
use crate::problem::{db_error, invalid, json_body, not_answering, ApiError};

/// What erasing needs, as its own `web::Data`.
pub struct Erasures {
    pub pool: Pool,
    pub metrics: Metrics,
    /// `ACCESS_LOG_RETENTION_DAYS`: how long the access record keeps the erasure's rows.
    pub access_log_retention_days: u32,
}

/// The longest note kept, in characters.
pub const NOTE_MAX_CHARS: usize = 500;

/// `POST /v1/users/{client_user_id}/erasure`'s body, all optional.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErasureBody {
    /// The legal basis: `pipa_36` (개인정보 보호법 제36조), `gdpr_17` (GDPR Art. 17) or `other`
    /// (the default).
    #[serde(default)]
    pub basis: Option<Basis>,
    /// Free text for the receipt (a ticket number): at most 500 characters, no control
    /// characters. Do not put the user's id here: the receipt names the subject by tag only.
    #[serde(default)]
    #[schema(max_length = 500)]
    pub note: Option<String>,
}

/// The answer to an erasure request.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    #[schema(value_type = String, pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    pub id: uuid::Uuid,
    /// `applied`: the tables and the key are done.
    pub status: String,
}

/// Something an erasure does not remove, and why.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Kept {
    pub what: String,
    pub why: String,
    /// Until when (RFC 3339), `null` when not known.
    pub until: Option<String>,
}

/// An erasure's receipt.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ErasureReceipt {
    #[schema(value_type = String, pattern = "^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")]
    pub id: uuid::Uuid,
    /// `applied` (tables and key done); `complete` comes with the topics' slice.
    pub status: String,
    pub requested_at: String,
    /// The API key's name.
    pub requested_by: String,
    pub basis: String,
    pub note: Option<String>,
    /// The subject, by tag (HMAC of the id under SUBJECT_TAG_KEY_FILE): never the id.
    pub subject_tag: String,
    /// The data key generation destroyed (`null`: the subject had no live key).
    pub generation: Option<i32>,
    pub applied_at: Option<String>,
    /// Rows removed, by table.
    pub tables: BTreeMap<String, i64>,
    /// Archive locations and their keys' fate: empty until the archive slice.
    pub archive: BTreeMap<String, String>,
    /// When the topics no longer hold the user's reports: `null` until the topics slice.
    pub topics_clear_by: Option<String>,
    pub kept: Vec<Kept>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

impl ErasureReceipt {
    fn of(r: Receipt, access_log_retention_days: u32) -> Self {
        let until = r.requested_at + time::Duration::days(i64::from(access_log_retention_days));
        let kept = vec![
            Kept {
                what: "the access record's rows about the user (sealed ids, now unreadable)".into(),
                why: "접속기록 보관 의무 (안전성 확보조치 기준 제8조)".into(),
                until: Some(rfc3339(until)),
            },
            Kept {
                what: "the Kafka topics' reports naming the user".into(),
                why: "not handled yet: they stay until the topics' retention removes them".into(),
                until: None,
            },
            Kept {
                what: "the archive, dead letters, the ingest spool and PostgreSQL's backups".into(),
                why: "not handled yet: an erasure does not reach them, and restore or --rebuild from them would bring the user back".into(),
                until: None,
            },
        ];
        Self {
            id: r.id,
            status: r.status,
            requested_at: rfc3339(r.requested_at),
            requested_by: r.requested_by,
            basis: r.basis,
            note: r.note,
            subject_tag: r.subject_tag.as_str().to_owned(),
            generation: r.generation,
            applied_at: r.applied_at.map(rfc3339),
            tables: r.tables,
            archive: BTreeMap::new(),
            topics_clear_by: None,
            kept,
        }
    }
}

/// The body, checked: the basis known, the note bounded and printable.
fn parse_body(body: &[u8]) -> Result<(Basis, Option<String>), ApiError> {
    let b: ErasureBody = if body.iter().all(u8::is_ascii_whitespace) {
        ErasureBody::default()
    } else {
        json_body(body)?
    };
    let note = match b.note.as_deref().map(str::trim) {
        None | Some("") => None,
        Some(n) if n.chars().count() > NOTE_MAX_CHARS => {
            return Err(invalid(
                "note",
                format!("a note is at most {NOTE_MAX_CHARS} characters"),
            ))
        }
        Some(n) if n.chars().any(char::is_control) => {
            return Err(invalid("note", "a note holds no control characters"))
        }
        Some(n) => Some(n.to_owned()),
    };
    Ok((b.basis.unwrap_or_default(), note))
}

const NOT_ANSWERING: &str = "the database is not answering; retry the erasure shortly";

fn failed(e: anyhow::Error) -> ApiError {
    if not_answering(&e) {
        tracing::warn!(
            error = format!("{e:#}"),
            "erasure: PostgreSQL is not answering"
        );
        ApiError::Unavailable(NOT_ANSWERING.into())
    } else {
        tracing::error!(error = format!("{e:#}"), "erasure failed");
        ApiError::Internal("the erasure failed and was undone; the cause is logged".into())
    }
}

#[utoipa::path(
    post,
    path = "/v1/users/{client_user_id}/erasure",
    operation_id = "eraseUser",
    summary = "Erase a user",
    description = "Deletes the user's rows from every table naming them (watch sessions, entitlements and their changes, DRM downloads, playback decisions) and destroys their data key, in one transaction, then writes the receipt. Answers 202 with the receipt's id for any valid id, also one never seen (an erasure tells nothing about existence) and a repeat (a new receipt). The access record is kept, as the law requires; what it sealed of the user no longer opens. Not yet covered: the topics, the archive, dead letters, the ingest spool (the receipt's `kept` says so).",
    params(crate::params::UserPath),
    request_body(content = ErasureBody, content_type = "application/json", description = "Optional."),
    responses(
        (status = 202, description = "Applied: the receipt is at `Location`.", body = Accepted, content_type = "application/json", headers(("Location" = String, description = "/v1/erasures/<id>"))),
        (status = 400, description = "An invalid id, basis or note, named (the user's id in a note is stored as `[user]`, not refused).", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::EraseKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["erase"]))
)]
pub async fn erase(
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<Erasures>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Erase)?;
    let user = ClientUserId::parse(path.into_inner())
        .map_err(|e| invalid("client_user_id", e.to_string()))?;
    let (basis, note) = parse_body(&body)?;
    // The receipt is kept for good: the user's id in a note is stored as `[user]`.
    let note = note.map(|n| crate::access_log::record::redacted(&n, user.as_str()));
    let mut client = state.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
    let request = Request {
        client_user_id: user.as_str(),
        key_name: caller.name(),
        client_addr: caller.client_addr(),
        basis,
        note: note.as_deref(),
    };
    let receipt = model::apply(&mut client, &log, &request)
        .await
        .map_err(failed)?;
    state.metrics.erasures.inc();
    tracing::info!(
        caller = caller.name(),
        subject = receipt.subject_tag.as_str(),
        erasure = %receipt.id,
        generation = receipt.generation,
        rows = receipt.tables.values().sum::<i64>(),
        "user erased"
    );
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/erasures/{}", receipt.id)))
        .json(Accepted {
            id: receipt.id,
            status: receipt.status,
        }))
}

#[utoipa::path(
    get,
    path = "/v1/erasures/{erasure_id}",
    operation_id = "getErasure",
    summary = "An erasure's receipt",
    params(("erasure_id" = String, Path, description = "The id (a UUID) `POST .../erasure` answered.")),
    responses(
        (status = 200, description = "The receipt.", body = ErasureReceipt, content_type = "application/json"),
        (status = 400, description = "Not a UUID.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such receipt.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::EraseKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["erase"]))
)]
pub async fn receipt(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<Erasures>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Erase)?;
    let id = uuid::Uuid::parse_str(&path.into_inner())
        .map_err(|_| invalid("erasure_id", "is not a UUID"))?;
    let client = state.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
    let found = model::find(&**client, id).await.map_err(failed)?;
    match found {
        Some(r) => {
            Ok(HttpResponse::Ok().json(ErasureReceipt::of(r, state.access_log_retention_days)))
        }
        None => Err(ApiError::NotFound("no erasure has this id".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_body_is_optional_its_basis_known_and_its_note_bounded_and_printable() {
        assert_eq!(parse_body(b"").unwrap(), (Basis::Other, None));
        assert_eq!(parse_body(b"{}").unwrap(), (Basis::Other, None));
        assert_eq!(
            parse_body(br#"{"basis":"gdpr_17","note":" ticket 12 "}"#).unwrap(),
            (Basis::Gdpr17, Some("ticket 12".into()))
        );
        assert_eq!(
            parse_body(br#"{"basis":"pipa_36"}"#).unwrap().0,
            Basis::Pipa36
        );
        assert!(parse_body(br#"{"basis":"whim"}"#).is_err());
        assert!(parse_body(br#"{"note":"a\u0007b"}"#).is_err());
        let long = format!(r#"{{"note":"{}"}}"#, "가".repeat(NOTE_MAX_CHARS + 1));
        assert!(parse_body(long.as_bytes()).is_err());
        assert!(parse_body(br#"{"other":1}"#).is_err());
    }
}
