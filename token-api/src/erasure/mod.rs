//! Forgetting a user (issue 32; README "Erasing a user"). `POST
//! /v1/users/{client_user_id}/erasure` deletes the user's rows from every table naming them and
//! destroys their data key in one transaction ([`model::apply`]), and answers `202` with a
//! receipt's id whether or not the user was ever seen (an erasure tells nothing about
//! existence); `GET /v1/erasures/{erasure_id}` reads the receipt. Both need the `erase` scope.
//! The access record is kept (the law requires it); its rows' sealed ids no longer open. Logs
//! name the subject tag, never the id.
//!
//! Once committed, the erasure is published to the erasure topic ([`publish`], an outbox: an
//! erasure is never lost to a broker's outage), so every archiver destroys the subject's keys in
//! its location and every rebuild knows whom not to bring back. An erasure is refused (409)
//! while a topic naming users keeps records forever ([`topics`]). The receipt is `applied` once
//! the tables and the key are done, `complete` once published, past `topics_clear_by` (the
//! topics' longest retention plus a segment) and confirmed by every archive key location.

pub mod model;
pub mod publish;
pub mod topics;

use std::collections::BTreeMap;

use actix_web::{web, HttpResponse};
use deadpool_postgres::Pool;
use kollus_common::domain::ClientUserId;
use serde::{Deserialize, Serialize};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use kollus_archive::store::Archive;
use tokio::sync::Notify;

use self::model::{Basis, Receipt, Request};
use self::topics::UserTopics;
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
    /// The topics naming users: their retention decides `409` and `topics_clear_by`.
    pub topics: UserTopics,
    /// Wakes the erasure topic's publisher ([`publish::Publisher::waker`]).
    pub publish: std::sync::Arc<Notify>,
    /// The archive key locations a receipt lists (ARCHIVE_DIR's, ERASURE_KEY_LOCATIONS).
    pub key_locations: Vec<String>,
}

/// A receipt's word for a key location that confirmed the erasure.
pub const DESTROYED: &str = "destroyed";
/// ... and for one that has not yet.
pub const PENDING: &str = "pending";

impl Erasures {
    /// Per key location, whether its archiver left the erasure's record there
    /// (`common::erasure::location_record_path`): `destroyed`, else `pending` (also when the
    /// location cannot be read: logged).
    async fn archive(&self, r: &Receipt) -> BTreeMap<String, String> {
        let path = kollus_common::erasure::location_record_path(r.subject_tag.as_str(), r.id);
        let mut answers = BTreeMap::new();
        for location in &self.key_locations {
            let found = async {
                let Ok(archive) = Archive::open_existing(location) else {
                    // A key directory not made yet: nothing was destroyed there.
                    return Ok(false);
                };
                let prefix = path.rsplit_once('/').map_or("", |(dir, _)| dir);
                anyhow::Ok(archive.list(prefix).await?.contains(&path))
            }
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(
                    location,
                    subject = r.subject_tag.as_str(),
                    error = format!("{e:#}"),
                    "erasure: could not read an archive key location; its answer is pending"
                );
                false
            });
            let answer = if found { DESTROYED } else { PENDING };
            answers.insert(location.clone(), answer.to_owned());
        }
        answers
    }
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
    /// `applied`: the tables and the key are done (the answer comes after they are); the rest
    /// (topic, archive locations) follows in the receipt.
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
    /// `applied`: the tables and the key are done. `complete`: also published on the erasure
    /// topic, past `topics_clear_by`, and every archive key location `destroyed`.
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
    /// When the erasure topic acknowledged the erasure (`null`: not yet; retried).
    pub published_at: Option<String>,
    /// When the receipt became `complete`.
    pub completed_at: Option<String>,
    /// Rows removed, by table.
    pub tables: BTreeMap<String, i64>,
    /// Each archive key location (ARCHIVE_DIR's, ERASURE_KEY_LOCATIONS): `destroyed` once its
    /// archiver destroyed the subject's keys and recorded it there, else `pending`.
    pub archive: BTreeMap<String, String>,
    /// When the topics naming users (playback, dead letters) hold nothing from before the
    /// erasure: the erasure plus their longest retention and a segment (`null`: unknown).
    pub topics_clear_by: Option<String>,
    pub kept: Vec<Kept>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

impl ErasureReceipt {
    fn of(r: Receipt, access_log_retention_days: u32, archive: BTreeMap<String, String>) -> Self {
        let until = r.requested_at + time::Duration::days(i64::from(access_log_retention_days));
        let kept = vec![
            Kept {
                what: "the access record's rows about the user (sealed ids, now unreadable)".into(),
                why: "접속기록 보관 의무 (안전성 확보조치 기준 제8조)".into(),
                until: Some(rfc3339(until)),
            },
            Kept {
                what: "the Kafka topics' reports and dead letters naming the user, received before the erasure".into(),
                why: "a topic deletes records by age only: they go with its retention (plus a segment); meanwhile every worker, archiver and rebuild drops them (the erasure barrier)".into(),
                until: r.topics_clear_by.map(rfc3339),
            },
            Kept {
                what: "PostgreSQL's backups taken before the erasure".into(),
                why: "a backup is not altered: they go when the operator's backup retention expires them; a database restored from one must have its erasures applied again (README \"Erasing a user\")".into(),
                until: None,
            },
            Kept {
                what: "this receipt and the erasure topic's record: the subject tag and the time, never the id".into(),
                why: "kept for good, so that no restore or rebuild brings the user back".into(),
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
            published_at: r.published_at.map(rfc3339),
            completed_at: r.completed_at.map(rfc3339),
            tables: r.tables,
            archive,
            topics_clear_by: r.topics_clear_by.map(rfc3339),
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
    description = "Deletes the user's rows from every table naming them (watch sessions, entitlements and their changes, DRM downloads, playback decisions, console views) and destroys their data key, in one transaction, then writes the receipt and publishes the erasure on the erasure topic (retried until Kafka acknowledges it), so every archive location destroys the user's keys and no rebuild brings them back. Answers 202 `applied` with the receipt's id for any valid id, also one never seen (an erasure tells nothing about existence) and a repeat (a new receipt). Refused (409, nothing erased) while a topic naming users keeps records forever (retention.ms -1): an erasure needs finite retention. The access record is kept, as the law requires; what it sealed of the user no longer opens.",
    params(crate::params::UserPath),
    request_body(content = ErasureBody, content_type = "application/json", description = "Optional."),
    responses(
        (status = 202, description = "Applied: the receipt is at `Location`.", body = Accepted, content_type = "application/json", headers(("Location" = String, description = "/v1/erasures/<id>"))),
        (status = 400, description = "An invalid id, basis or note, named (the user's id in a note is stored as `[user]`, not refused).", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "A topic naming users keeps records forever (retention.ms -1, as the brokers report it, or KAFKA_RETENTION_DAYS=-1 when they cannot be asked): an erasure needs finite retention. Nothing was erased.", body = crate::problem::Problem, content_type = "application/problem+json"),
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
    let horizon = state.topics.horizon().await;
    let Some(clear_after_ms) = horizon.clear_after_ms() else {
        let topic = horizon.infinite().unwrap_or_default();
        tracing::warn!(
            caller = caller.name(),
            topic,
            from_brokers = horizon.from_brokers,
            "erasure refused: a topic naming users keeps records forever"
        );
        return Err(ApiError::Refused(
            format!(
                "the topic {topic} keeps records forever (retention.ms -1{}): its reports naming \
                 the user would never go, so an erasure needs finite retention; nothing was \
                 erased. Set the topic's retention.ms (and KAFKA_RETENTION_DAYS) to a number \
                 of days, then ask again",
                if horizon.from_brokers {
                    ""
                } else {
                    ", from KAFKA_RETENTION_DAYS: the brokers did not answer"
                }
            ),
            Vec::new(),
        ));
    };
    let mut client = state.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
    let request = Request {
        client_user_id: user.as_str(),
        key_name: caller.name(),
        client_addr: caller.client_addr(),
        basis,
        note: note.as_deref(),
    };
    let receipt = model::apply(&mut client, &log, &request, clear_after_ms)
        .await
        .map_err(failed)?;
    state.publish.notify_one();
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
    params(("erasure_id" = String, Path, description = "The id (a UUID) `POST .../erasure` answered.", pattern = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")),
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
    let Some(mut r) = model::find(&**client, id).await.map_err(failed)? else {
        return Err(ApiError::NotFound("no erasure has this id".into()));
    };
    if r.status == "complete" {
        let archive = r.archive.clone().unwrap_or_default();
        return Ok(HttpResponse::Ok().json(ErasureReceipt::of(
            r,
            state.access_log_retention_days,
            archive,
        )));
    }
    // A receipt from before `topics_clear_by` was kept: from the topics' retention now.
    if r.topics_clear_by.is_none() && r.applied_at.is_some() {
        if let Some(ms) = state.topics.horizon().await.clear_after_ms() {
            r.topics_clear_by = model::set_topics_clear_by(&**client, id, ms)
                .await
                .map_err(failed)?;
        }
    }
    let archive = state.archive(&r).await;
    let now = OffsetDateTime::now_utc();
    let complete = r.status == "applied"
        && r.published_at.is_some()
        && r.topics_clear_by.is_some_and(|t| t <= now)
        && archive.values().all(|a| a == DESTROYED);
    if complete {
        r.completed_at = Some(
            model::complete(&**client, id, &archive)
                .await
                .map_err(failed)?,
        );
        r.status = "complete".into();
        tracing::info!(
            subject = r.subject_tag.as_str(),
            erasure = %r.id,
            "erasure complete"
        );
    }
    Ok(HttpResponse::Ok().json(ErasureReceipt::of(
        r,
        state.access_log_retention_days,
        archive,
    )))
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
