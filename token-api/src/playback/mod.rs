//! Answering Kollus when it asks before a play (`POST /kollus/play`) or a download
//! (`POST /kollus/drm`), SPEC.md section 5, from the product's entitlements and the watch
//! history. This file is the HTTP side only:
//!
//! - `wire.rs`: the form into a typed callback, through common's strict form decoder;
//! - `policy.rs`: facts into a decision (pure, unit-tested);
//! - `store.rs`: the SQL (one indexed read of the facts, the decisions recorded);
//! - `answer.rs`: the signed JWT Kollus reads.
//!
//! Every decision is recorded in `playback_decisions` with the numbers it was made from.
//! PostgreSQL not answering within `PLAY_TIMEOUT_MS` is a quick 503: Kollus shows the player's
//! error and the viewer retries, rather than Kollus timing out on us. A statement PostgreSQL
//! refuses is a 500 with the cause in the log, never reported as an outage.

mod answer;
pub mod policy;
mod store;
pub mod wire;

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use deadpool_postgres::Pool;
use kollus_common::client_addr::{self, Networks};
use kollus_common::kollus::binding::PlayerBinding;
use kollus_common::kollus::callback_secret::{
    check_callback_secret, warn_platform_secret_on_player_route, SecretName,
};
use serde_json::Value;
use time::OffsetDateTime;

use self::policy::{decide_download, decide_play, Decision, Reason};
use self::store::Record;
use crate::configuration::{PlaySecrets, PlaySettings};
use crate::metrics::{Metrics, Undecided};
use crate::problem::{db_error, ApiError};
use crate::signer::Signer;

/// What the play and DRM callbacks need, as their own `web::Data`.
pub struct Playback {
    /// The secrets these callbacks take; `None`: they are off (404).
    pub secrets: Option<PlaySecrets>,
    /// `TRUSTED_PROXIES`: who the client is, for the logs.
    pub proxies: Networks,
    /// Viewer binding (`PLAYER_BINDING*`), unless off.
    pub binding: Option<PlayerBinding>,
    pub settings: PlaySettings,
    pub signer: Arc<Signer>,
    /// The Kollus account's custom key, sent back as `X-Kollus-UserKey`.
    pub custom_key: String,
    pub pool: Pool,
    pub metrics: Metrics,
    /// Subject tags: logs name a viewer by tag, never by id.
    pub subjects: kollus_common::subject::Subjects,
}

const NOT_ANSWERING: &str = "the entitlements database is not answering; Kollus may retry";

/// Checks `?secret=` with common's one check (ingest's): the play secret, or the platform
/// secret with a WARN once and a count (a URL a viewer holds should not carry it).
fn check_secret(req: &HttpRequest, p: &Playback, callback: &'static str) -> Result<(), ApiError> {
    let Some(secrets) = &p.secrets else {
        return Err(ApiError::NotFound(
            "play and DRM callbacks are off on this server: set PLAY_CALLBACK_SECRET".into(),
        ));
    };
    let mut accepted = vec![&secrets.play];
    accepted.extend(secrets.platform.as_ref());
    let found = check_callback_secret(req.query_string(), &accepted, OffsetDateTime::now_utc())
        .map_err(|_| {
            kollus_common::telemetry::warn_auth_failure(
                req.match_pattern().as_deref().unwrap_or(callback),
                client_addr::of_request(req, &p.proxies),
            );
            ApiError::BadSecret
        })?;
    if found.secret == SecretName::Platform {
        warn_platform_secret_on_player_route(callback);
    }
    p.metrics
        .callback_auth
        .with_label_values(&[callback, found.secret.label(), found.generation.label()])
        .inc();
    Ok(())
}

/// Judges a callback's viewer binding (counted); `true` when it must not count for its user
/// (`PLAYER_BINDING=require` and unbound).
fn unbound(p: &Playback, callback: &str, user: &str, uservalues: &wire::UserValues) -> bool {
    let Some(b) = &p.binding else {
        return false;
    };
    let verdict = b.judge(user, uservalues.get(&b.slot).map(String::as_str));
    p.metrics
        .play_binding
        .with_label_values(&[callback, verdict.as_str()])
        .inc();
    if !verdict.is_bound() {
        tracing::info!(
            callback,
            subject = p.subjects.tag(user).as_str(),
            binding = verdict.as_str(),
            required = b.required(),
            "a callback without its user's viewer binding"
        );
    }
    b.required() && !verdict.is_bound()
}

/// What an unbound callback is answered under `PLAYER_BINDING=require`: refused, whatever
/// `PLAY_DEFAULT` says (a viewer who strips the binding from their own URL must not fall back to
/// a default that skips their allowance), from no facts, so nothing of the named user's grants
/// or playtime shows.
fn unbound_decision() -> Decision {
    Decision::refuse(Reason::Unbound, None)
}

fn counted(p: &Playback, callback: &'static str, result: &Result<HttpResponse, ApiError>) {
    let outcome = match result {
        Ok(_) => return,
        Err(ApiError::BadSecret) => Undecided::BadSecret,
        Err(ApiError::Invalid(_)) => Undecided::Invalid,
        Err(ApiError::Unavailable(_)) => Undecided::Unavailable,
        Err(ApiError::NotFound(_)) => Undecided::Off,
        Err(_) => Undecided::Error,
    };
    if outcome == Undecided::Invalid {
        if let Err(e) = result {
            tracing::warn!(callback, error = %e, detail = ?e, "malformed Kollus callback refused");
        }
    }
    p.metrics
        .play_refused
        .with_label_values(&[callback, outcome.into()])
        .inc();
}

/// Runs `work` against PostgreSQL within `PLAY_TIMEOUT_MS`, else 503.
async fn within<T>(
    p: &Playback,
    work: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(p.settings.timeout, work).await {
        Ok(r) => r,
        Err(_) => {
            tracing::warn!(timeout = ?p.settings.timeout, "play/DRM decision: PostgreSQL did not answer in time");
            Err(ApiError::Unavailable(NOT_ANSWERING.into()))
        }
    }
}

fn observe(p: &Playback, callback: &str, kind: i32, d: &Decision) {
    p.metrics
        .play_decisions
        .with_label_values(&[
            format!("{callback}:{kind}").as_str(),
            if d.allowed { "1" } else { "0" },
            d.reason.label(),
        ])
        .inc();
}

/// What the play and DRM callbacks answer besides the decision, for the OpenAPI document.
#[derive(utoipa::IntoResponses)]
pub enum CallbackRefused {
    #[response(
        status = 400,
        description = "A malformed callback: the field is named.",
        content_type = "application/problem+json"
    )]
    Malformed(crate::problem::Problem<'static>),
    #[response(
        status = 401,
        description = "The secret is missing or wrong; nothing is kept.",
        content_type = "application/problem+json"
    )]
    Unauthorized(crate::problem::Problem<'static>),
    #[response(
        status = 404,
        description = "Play and DRM callbacks are off (PLAY_CALLBACK_SECRET is not set).",
        content_type = "application/problem+json"
    )]
    Off(crate::problem::Problem<'static>),
    #[response(
        status = 500,
        description = "The database refused a statement: our fault; the cause is logged.",
        content_type = "application/problem+json"
    )]
    Refused(crate::problem::Problem<'static>),
    #[response(
        status = 503,
        description = "PostgreSQL did not answer within PLAY_TIMEOUT_MS; Kollus may retry.",
        content_type = "application/problem+json"
    )]
    Unavailable(crate::problem::Problem<'static>),
}

/// SPEC.md 5.1.
#[utoipa::path(
    post,
    path = "/kollus/play",
    operation_id = "answerPlayCallback",
    summary = "Kollus asks whether a user may play a video",
    description = "Answered from the user's entitlements (the video's own and its channels') and the playtime spent on it (watch history). Every answer is recorded.",
    request_body(content = wire::PlayForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The decision, for Kollus.", body = wire::KollusAnswer, content_type = "text/plain", headers(("X-Kollus-UserKey" = String, description = "KOLLUS_CUSTOM_KEY: which key verifies the answer."))),
        CallbackRefused
    ),
    security(("callbackSecret" = []))
)]
pub async fn play(req: HttpRequest, body: web::Bytes, p: web::Data<Playback>) -> HttpResponse {
    let result = answer_play(&req, &body, &p).await;
    counted(&p, "play", &result);
    result.unwrap_or_else(|e| actix_web::ResponseError::error_response(&e))
}

async fn answer_play(
    req: &HttpRequest,
    body: &[u8],
    p: &Playback,
) -> Result<HttpResponse, ApiError> {
    check_secret(req, p, "play")?;
    let callback = wire::play(body)?;
    let now = OffsetDateTime::now_utc();
    let (user, media) = (callback.user.as_str(), callback.media.as_str());
    let unbound = unbound(p, "play", user, &callback.uservalues);
    let (facts, decision) = within(p, async {
        let mut client = p.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
        // One transaction: the decision's row is written under the user's subject lock, taken
        // shared first, so an erasure under way never leaves it behind.
        let client = client
            .transaction()
            .await
            .map_err(db_error(NOT_ANSWERING))?;
        kollus_common::subject::lock_subjects_shared(&*client, [&p.subjects.tag(user)])
            .await
            .map_err(db_error(NOT_ANSWERING))?;
        // Unbound under `require`: nothing of the user's is read, so nothing of it is told.
        let (facts, decision) = if unbound {
            (policy::Facts::default(), unbound_decision())
        } else {
            let facts = store::facts(&client, user, media)
                .await
                .map_err(db_error(NOT_ANSWERING))?;
            let decision = decide_play(&facts, now, p.settings.default);
            (facts, decision)
        };
        let one = Record {
            callback: "play",
            kind: callback.kind,
            user,
            media,
            decision: &decision,
            facts: &facts,
            player_id: callback.player_id.as_deref(),
            session_key: None,
        };
        store::record(&client, now, &[one])
            .await
            .map_err(db_error(NOT_ANSWERING))?;
        client.commit().await.map_err(db_error(NOT_ANSWERING))?;
        Ok((facts, decision))
    })
    .await?;
    observe(p, "play", callback.kind, &decision);
    if !facts.catalogued {
        // Kollus plays it, so the catalog missed a callback: `kollus-catalog sweep` recovers it.
        p.metrics.unknown_media.with_label_values(&["play"]).inc();
        tracing::info!(
            media,
            "a play callback names a video the catalog does not know"
        );
    }
    tracing::info!(
        callback = "play", kind = callback.kind, subject = p.subjects.tag(user).as_str(), media,
        result = decision.allowed,
        reason = decision.reason.label(), playtime_used = facts.playtime_used,
        playtime_left = ?decision.playtime_left, "play callback answered"
    );
    answer::signed(
        &p.signer,
        &p.custom_key,
        answer::play_data(&p.settings, callback.kind, &decision),
    )
}

/// SPEC.md 5.2: one answer item per request item, in order.
#[utoipa::path(
    post,
    path = "/kollus/drm",
    operation_id = "answerDrmCallback",
    summary = "Kollus asks whether a user may download, or play a downloaded file",
    description = "One answer item per request item (1 to 100), in order. A completed download (kind 2) is counted once per session_key, and only when an approval we answered earlier (kind 1, result 1) for the same user, video and player carried that session_key; any other completion is acknowledged but not counted, and recorded with the reason download_unmatched.",
    request_body(content = wire::DrmForm, content_type = "application/x-www-form-urlencoded"),
    responses(
        (status = 200, description = "The decision, for Kollus.", body = wire::KollusAnswer, content_type = "text/plain", headers(("X-Kollus-UserKey" = String, description = "KOLLUS_CUSTOM_KEY: which key verifies the answer."))),
        CallbackRefused
    ),
    security(("callbackSecret" = []))
)]
pub async fn drm(req: HttpRequest, body: web::Bytes, p: web::Data<Playback>) -> HttpResponse {
    let result = answer_drm(&req, &body, &p).await;
    counted(&p, "drm", &result);
    result.unwrap_or_else(|e| actix_web::ResponseError::error_response(&e))
}

async fn answer_drm(
    req: &HttpRequest,
    body: &[u8],
    p: &Playback,
) -> Result<HttpResponse, ApiError> {
    check_secret(req, p, "drm")?;
    let items = wire::drm(body)?;
    let now = OffsetDateTime::now_utc();
    let decided = within(p, async {
        let mut client = p.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
        // One transaction: the completions counted, the facts read after them and every item's
        // decision recorded, or none of it (a timeout drops it, rolled back).
        let tx = client
            .transaction()
            .await
            .map_err(db_error(NOT_ANSWERING))?;
        // The users' subject locks, shared, before any row of theirs is written (downloads
        // counted, decisions recorded): an erasure under way is never left a row behind.
        let tags: Vec<kollus_common::subject::SubjectTag> = items
            .iter()
            .map(|i| p.subjects.tag(i.user.as_str()))
            .collect();
        kollus_common::subject::lock_subjects_shared(&*tx, tags.iter())
            .await
            .map_err(db_error(NOT_ANSWERING))?;
        // A completion counts only when an approval of ours (a DRM kind 1 answered 1, recorded
        // by an earlier callback) issued its session key: see `store::COUNT_ISSUED`.
        // Unbound items (under `require`) count for no one and are answered from no facts.
        let unbound: Vec<bool> = items
            .iter()
            .map(|item| unbound(p, "drm", item.user.as_str(), &item.uservalues))
            .collect();
        let completions: Vec<store::Completion> = items
            .iter()
            .zip(&unbound)
            .filter(|(item, unbound)| item.kind == 2 && !**unbound)
            .map(|(item, _)| item)
            .map(|item| store::Completion {
                user: item.user.as_str(),
                media: item.media.as_str(),
                // `wire` refuses a kind 2 without one; "" would match no approval.
                session_key: item.session_key.as_deref().unwrap_or_default(),
                player_id: item.player_id.as_deref(),
            })
            .collect();
        let mut issued = store::count_issued_downloads(&tx, &completions, now)
            .await
            .map_err(db_error(NOT_ANSWERING))?
            .into_iter();
        // One read per (user, video), however many items name it; none for an unbound item,
        // whose answer reads nothing of the user's.
        let mut facts_of: std::collections::HashMap<(&str, &str), policy::Facts> =
            std::collections::HashMap::new();
        for item in items
            .iter()
            .zip(&unbound)
            .filter(|(_, u)| !**u)
            .map(|(i, _)| i)
        {
            let key = (item.user.as_str(), item.media.as_str());
            if let std::collections::hash_map::Entry::Vacant(slot) = facts_of.entry(key) {
                let facts = store::facts(&tx, key.0, key.1)
                    .await
                    .map_err(db_error(NOT_ANSWERING))?;
                slot.insert(facts);
            }
        }
        let mut decided = Vec::with_capacity(items.len());
        for (item, unbound) in items.iter().zip(&unbound) {
            if *unbound {
                let decision = match item.kind {
                    // Acknowledged as any unmatched completion is, and not counted.
                    2 => Decision {
                        allowed: true,
                        reason: Reason::DownloadUnmatched,
                        grant: None,
                        playtime_left: None,
                    },
                    _ => unbound_decision(),
                };
                decided.push((policy::Facts::default(), decision));
                continue;
            }
            let facts = facts_of[&(item.user.as_str(), item.media.as_str())].clone();
            let decision = match item.kind {
                1 => decide_download(&facts, now, p.settings.default),
                // Acknowledged either way (result 1): a genuine device whose approval we cannot
                // find keeps its file, and a forger learns nothing from the answer. Only an
                // issued completion counts against the limit.
                2 => Decision {
                    allowed: true,
                    reason: if issued.next().unwrap_or(false) {
                        Reason::DownloadCounted
                    } else {
                        Reason::DownloadUnmatched
                    },
                    grant: None,
                    playtime_left: None,
                },
                _ => decide_play(&facts, now, p.settings.default),
            };
            decided.push((facts, decision));
        }
        let records: Vec<Record> = items
            .iter()
            .zip(&decided)
            .map(|(item, (facts, decision))| Record {
                callback: "drm",
                kind: item.kind,
                user: item.user.as_str(),
                media: item.media.as_str(),
                decision,
                facts,
                player_id: item.player_id.as_deref(),
                session_key: item.session_key.as_deref(),
            })
            .collect();
        store::record(&tx, now, &records)
            .await
            .map_err(db_error(NOT_ANSWERING))?;
        tx.commit().await.map_err(db_error(NOT_ANSWERING))?;
        Ok(decided)
    })
    .await?;
    let data: Vec<Value> = items
        .iter()
        .zip(&decided)
        .map(|(item, (facts, d))| {
            observe(p, "drm", item.kind, d);
            tracing::info!(
                callback = "drm",
                kind = item.kind,
                subject = p.subjects.tag(item.user.as_str()).as_str(),
                media = item.media.as_str(),
                result = d.allowed,
                reason = d.reason.label(),
                downloads = facts.downloads,
                "DRM callback item answered"
            );
            answer::drm_item(&p.settings, item, d)
        })
        .collect();
    answer::signed(&p.signer, &p.custom_key, Value::Array(data))
}
