//! Answering Kollus when it asks before a play (`POST /kollus/play`) or a download
//! (`POST /kollus/drm`), SPEC.md section 5, from the product's entitlements and the watch
//! history.
//!
//! Each answer is a JWT (HS256, the account's security key) of `{"data": ...}`, sent as the body
//! with `X-Kollus-UserKey: <custom key>`. Each comes from one indexed read (the grants covering
//! the video, the user's `playtime` on it from `watch_progress`, the downloads counted), and is
//! recorded in `playback_decisions` with the numbers it was made from. PostgreSQL not answering
//! within `PLAY_TIMEOUT_MS` is a quick 503: Kollus shows the player's error and the viewer
//! retries, rather than Kollus timing out on us.

use std::collections::BTreeMap;
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use jsonwebtoken::{Algorithm, Header};
use kollus_common::domain::{ClientUserId, MediaContentKey};
use secrecy::{ExposeSecret as _, SecretString};
use serde_json::{json, Value};
use subtle::ConstantTimeEq as _;
use time::OffsetDateTime;

use crate::entitlements::Scope;
use crate::problem::ApiError;
use crate::request::FieldError;
use crate::state::State;

/// How token-api answers play and DRM callbacks (`PLAY_*` settings).
#[derive(Debug, Clone, clap::Args)]
pub struct PlaySettings {
    /// The secret Kollus's callback URLs carry (`?secret=`), as ingest's. Unset: the play and
    /// DRM callbacks are off (404).
    #[arg(long, env = "CALLBACK_SECRET", value_parser = kollus_common::settings::Redacted(kollus_common::settings::callback_secret), hide_env_values = true)]
    pub callback_secret: Option<SecretString>,
    /// What to answer when no entitlement covers the video (unknown user or video included).
    #[arg(long, env = "PLAY_DEFAULT", value_enum, default_value_t = PlayDefault::Deny)]
    pub default: PlayDefault,
    /// The language of the messages a refused viewer sees.
    #[arg(long, env = "PLAY_MESSAGE_LANG", value_enum, default_value_t = Lang::Ko)]
    pub lang: Lang,
    /// Ask the player to refuse virtual machines (`vmcheck`).
    #[arg(long, env = "PLAY_VMCHECK", default_value_t = false, action = clap::ArgAction::Set)]
    pub vmcheck: bool,
    /// Ask the player to refuse TV-out (`disable_tvout`).
    #[arg(long, env = "PLAY_DISABLE_TVOUT", default_value_t = false, action = clap::ArgAction::Set)]
    pub disable_tvout: bool,
    /// Longest wait for PostgreSQL before answering 503, in ms.
    #[arg(long, env = "PLAY_TIMEOUT_MS", value_parser = kollus_common::settings::millis, default_value = "2000")]
    pub timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlayDefault {
    Deny,
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Ko,
    En,
}

// ---------------------------------------------------------------------------------------------
// The policy
// ---------------------------------------------------------------------------------------------

/// One stored grant that covers the video.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub scope: Scope,
    pub target: String,
    pub expires_at: Option<OffsetDateTime>,
    pub playtime_limit: Option<i64>,
    pub download: bool,
    pub download_limit: Option<i32>,
    pub revoked: bool,
}

/// What a decision is made from: one read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub grants: Vec<Grant>,
    /// `playtime` this user has spent on the video over all sessions.
    pub playtime_used: i64,
    /// Downloads of the video this user completed.
    pub downloads: i64,
}

/// Why a callback got its answer (a bounded metric label, recorded with the decision).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    Entitled,
    DefaultAllow,
    NoEntitlement,
    Expired,
    Revoked,
    PlaytimeUsedUp,
    DownloadNotAllowed,
    DownloadLimitReached,
    DownloadCounted,
}

impl Reason {
    pub const ALL: [Reason; 9] = [
        Self::Entitled,
        Self::DefaultAllow,
        Self::NoEntitlement,
        Self::Expired,
        Self::Revoked,
        Self::PlaytimeUsedUp,
        Self::DownloadNotAllowed,
        Self::DownloadLimitReached,
        Self::DownloadCounted,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Self::Entitled => "entitled",
            Self::DefaultAllow => "default_allow",
            Self::NoEntitlement => "no_entitlement",
            Self::Expired => "expired",
            Self::Revoked => "revoked",
            Self::PlaytimeUsedUp => "playtime_used_up",
            Self::DownloadNotAllowed => "download_not_allowed",
            Self::DownloadLimitReached => "download_limit_reached",
            Self::DownloadCounted => "download_counted",
        }
    }

    /// What the viewer reads when refused.
    pub fn message(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (Self::Entitled | Self::DefaultAllow | Self::DownloadCounted, _) => "",
            (Self::NoEntitlement, Lang::Ko) => "이 강의를 시청할 권한이 없습니다.",
            (Self::NoEntitlement, Lang::En) => "You do not have access to this video.",
            (Self::Expired, Lang::Ko) => "수강 기간이 만료되었습니다.",
            (Self::Expired, Lang::En) => "Your access to this video has expired.",
            (Self::Revoked, Lang::Ko) => "이 강의의 시청 권한이 취소되었습니다.",
            (Self::Revoked, Lang::En) => "Your access to this video was withdrawn.",
            (Self::PlaytimeUsedUp, Lang::Ko) => "이 강의의 시청 가능 시간을 모두 사용했습니다.",
            (Self::PlaytimeUsedUp, Lang::En) => {
                "You have used up your viewing time for this video."
            }
            (Self::DownloadNotAllowed, Lang::Ko) => "이 강의는 다운로드할 수 없습니다.",
            (Self::DownloadNotAllowed, Lang::En) => "This video cannot be downloaded.",
            (Self::DownloadLimitReached, Lang::Ko) => "다운로드 가능 횟수를 모두 사용했습니다.",
            (Self::DownloadLimitReached, Lang::En) => {
                "You have used up the downloads allowed for this video."
            }
        }
    }
}

/// A decision and the grant it rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    pub grant: Option<Grant>,
    /// Seconds of playtime left under the grant's allowance; `None`: no limit.
    pub playtime_left: Option<i64>,
}

impl Decision {
    fn refuse(reason: Reason, grant: Option<Grant>) -> Self {
        Self {
            allowed: false,
            reason,
            grant,
            playtime_left: None,
        }
    }
}

/// May the user play the video now? Among several grants in force (the video's own, its
/// channels'), the one leaving the most playtime wins, then the one lasting longest.
pub fn decide_play(facts: &Facts, now: OffsetDateTime, default: PlayDefault) -> Decision {
    let left = |g: &Grant| g.playtime_limit.map(|l| (l - facts.playtime_used).max(0));
    let in_force = facts
        .grants
        .iter()
        .filter(|g| !g.revoked && g.expires_at.is_none_or(|at| at > now));
    // `None` (no limit, no expiry) sorts above every number.
    let best = in_force.max_by_key(|g| {
        (
            left(g).map_or(i64::MAX, |l| l),
            g.expires_at
                .map_or(i64::MAX, OffsetDateTime::unix_timestamp),
        )
    });
    match best {
        Some(g) => match left(g) {
            Some(0) => Decision {
                playtime_left: Some(0),
                ..Decision::refuse(Reason::PlaytimeUsedUp, Some(g.clone()))
            },
            left => Decision {
                allowed: true,
                reason: Reason::Entitled,
                grant: Some(g.clone()),
                playtime_left: left,
            },
        },
        None if default == PlayDefault::Allow => Decision {
            allowed: true,
            reason: Reason::DefaultAllow,
            grant: None,
            playtime_left: None,
        },
        // Say why: a grant that was revoked, or one that ran out, rather than "never".
        None => match facts.grants.iter().find(|g| !g.revoked) {
            Some(expired) => Decision::refuse(Reason::Expired, Some(expired.clone())),
            None => match facts.grants.first() {
                Some(revoked) => Decision::refuse(Reason::Revoked, Some(revoked.clone())),
                None => Decision::refuse(Reason::NoEntitlement, None),
            },
        },
    }
}

/// May the user download the video now? As [`decide_play`], and the grant must allow downloads
/// with completed downloads under its limit.
pub fn decide_download(facts: &Facts, now: OffsetDateTime, default: PlayDefault) -> Decision {
    let play = decide_play(facts, now, default);
    match &play.grant {
        Some(g) if play.allowed && !g.download => {
            Decision::refuse(Reason::DownloadNotAllowed, play.grant.clone())
        }
        Some(g)
            if play.allowed
                && g.download_limit
                    .is_some_and(|l| facts.downloads >= i64::from(l)) =>
        {
            Decision::refuse(Reason::DownloadLimitReached, play.grant.clone())
        }
        _ => play,
    }
}

// ---------------------------------------------------------------------------------------------
// Reading and recording
// ---------------------------------------------------------------------------------------------

/// The grants covering the video (its own, and its channels' in the catalog), the user's
/// playtime on it, and the downloads completed: one statement, every part an index lookup.
const FACTS: &str = "
SELECT e.scope, e.target, e.expires_at, e.playtime_limit_seconds, e.download, e.download_limit,
       e.revoked_at IS NOT NULL,
       coalesce((SELECT p.total_playtime FROM watch_progress p
                  WHERE p.client_user_id = $1 AND p.media_content_key = $2), 0),
       (SELECT count(*) FROM drm_downloads d
         WHERE d.client_user_id = $1 AND d.media_content_key = $2)
FROM (SELECT 1) AS one
LEFT JOIN entitlements e
  ON e.client_user_id = $1
 AND ((e.scope = 'media' AND e.target = $2)
   OR (e.scope = 'channel' AND e.target IN (SELECT c.channel_key FROM channel_memberships c
                                           WHERE c.media_content_key = $2 AND c.in_channel)))";

async fn facts(
    client: &deadpool_postgres::Client,
    user: &str,
    media: &str,
) -> Result<Facts, tokio_postgres::Error> {
    let statement = client.prepare_cached(FACTS).await?;
    let rows = client.query(&statement, &[&user, &media]).await?;
    let mut facts = Facts::default();
    for r in &rows {
        facts.playtime_used = r.get(7);
        facts.downloads = r.get(8);
        let Some(scope) = r.get::<_, Option<&str>>(0) else {
            continue;
        };
        facts.grants.push(Grant {
            scope: if scope == "channel" {
                Scope::Channel
            } else {
                Scope::Media
            },
            target: r.get(1),
            expires_at: r.get(2),
            playtime_limit: r.get(3),
            download: r.get(4),
            download_limit: r.get(5),
            revoked: r.get(6),
        });
    }
    Ok(facts)
}

/// One answered callback item, as recorded.
struct Record<'a> {
    callback: &'static str,
    kind: i32,
    user: &'a str,
    media: &'a str,
    decision: &'a Decision,
    facts: &'a Facts,
    player_id: Option<&'a str>,
    session_key: Option<&'a str>,
}

async fn record(
    client: &deadpool_postgres::Client,
    now: OffsetDateTime,
    records: &[Record<'_>],
) -> Result<(), tokio_postgres::Error> {
    let statement = client
        .prepare_cached(
            "INSERT INTO playback_decisions (decided_at, callback, kind, client_user_id, \
                 media_content_key, result, reason, scope, target, expires_at, \
                 playtime_limit_seconds, playtime_used_seconds, downloads, download_limit, \
                 player_id, session_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .await?;
    for r in records {
        let g = r.decision.grant.as_ref();
        client
            .execute(
                &statement,
                &[
                    &now,
                    &r.callback,
                    &r.kind,
                    &r.user,
                    &r.media,
                    &i32::from(r.decision.allowed),
                    &r.decision.reason.label(),
                    &g.map(|g| g.scope.as_str()),
                    &g.map(|g| g.target.as_str()),
                    &g.and_then(|g| g.expires_at),
                    &g.and_then(|g| g.playtime_limit),
                    &r.facts.playtime_used,
                    &r.facts.downloads,
                    &g.and_then(|g| g.download_limit),
                    &r.player_id,
                    &r.session_key,
                ],
            )
            .await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The HTTP side
// ---------------------------------------------------------------------------------------------

fn invalid(field: &str, message: impl Into<String>) -> ApiError {
    ApiError::Invalid(vec![FieldError {
        field: field.into(),
        message: message.into(),
    }])
}

/// Checks `?secret=` in constant time, as ingest does.
fn check_secret(req: &HttpRequest, state: &State, callback: &'static str) -> Result<(), ApiError> {
    let Some(expected) = &state.play.callback_secret else {
        return Err(ApiError::NotFound(
            "play and DRM callbacks are off on this server: set CALLBACK_SECRET".into(),
        ));
    };
    let given = form_urlencoded::parse(req.query_string().as_bytes())
        .find(|(k, _)| k == "secret")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if bool::from(given.as_bytes().ct_eq(expected.expose_secret().as_bytes())) {
        Ok(())
    } else {
        kollus_common::telemetry::warn_auth_failure(
            req.match_pattern().as_deref().unwrap_or(callback),
            req.peer_addr().map(|a| a.ip()),
        );
        Err(ApiError::BadSecret)
    }
}

/// The body's form fields (the last of repeated names wins, as Kollus never repeats them).
fn form(body: &[u8]) -> BTreeMap<String, String> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn required<'a>(f: &'a BTreeMap<String, String>, field: &str) -> Result<&'a str, ApiError> {
    f.get(field)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid(field, "is required"))
}

/// An integer Kollus may send as a JSON number or a string.
fn int_of(v: &Value) -> Option<i64> {
    v.as_i64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
}

/// The answer Kollus reads: the JWT as `text/plain`, with our custom key.
fn answer(state: &State, data: Value) -> Result<HttpResponse, ApiError> {
    let token = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &json!({ "data": data }),
        &state.encoding_key,
    )
    .map_err(|e| ApiError::Internal(format!("signing the answer: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .insert_header(("X-Kollus-UserKey", state.custom_key.as_str()))
        .body(token))
}

fn counted(state: &State, callback: &'static str, result: &Result<HttpResponse, ApiError>) {
    let outcome = match result {
        Ok(_) => return,
        Err(ApiError::BadSecret) => "bad_secret",
        Err(ApiError::Invalid(_)) => "invalid",
        Err(ApiError::Unavailable(_)) => "unavailable",
        Err(ApiError::NotFound(_)) => "off",
        Err(_) => "error",
    };
    if outcome == "invalid" {
        if let Err(e) = result {
            tracing::warn!(callback, error = %e, detail = ?e, "malformed Kollus callback refused");
        }
    }
    state
        .metrics
        .play_refused
        .with_label_values(&[callback, outcome])
        .inc();
}

fn unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "play/DRM decision: PostgreSQL failed");
    ApiError::Unavailable("the entitlements database is not answering; Kollus may retry".into())
}

/// Runs `work` against PostgreSQL within `PLAY_TIMEOUT_MS`, else 503.
async fn within<T>(
    state: &State,
    work: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Result<T, ApiError> {
    match tokio::time::timeout(state.play.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(unavailable(format!(
            "no answer within {:?}",
            state.play.timeout
        ))),
    }
}

fn bool_int(b: bool) -> i64 {
    i64::from(b)
}

/// `POST /kollus/play?secret=...` (SPEC.md 5.1).
pub async fn play(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let result = answer_play(&req, &body, &state).await;
    counted(&state, "play", &result);
    result.unwrap_or_else(|e| actix_web::ResponseError::error_response(&e))
}

async fn answer_play(
    req: &HttpRequest,
    body: &[u8],
    state: &State,
) -> Result<HttpResponse, ApiError> {
    check_secret(req, state, "/kollus/play")?;
    let f = form(body);
    let kind = match required(&f, "kind")? {
        "1" => 1,
        "3" => 3,
        other => {
            return Err(invalid(
                "kind",
                format!("{other:?}: only 1 (before playback) and 3 (player ready) are answered"),
            ))
        }
    };
    let user = ClientUserId::parse(required(&f, "client_user_id")?)
        .map_err(|e| invalid("client_user_id", e.to_string()))?;
    let media = MediaContentKey::parse(required(&f, "media_content_key")?)
        .map_err(|e| invalid("media_content_key", e.to_string()))?;
    if let Some(uv) = f.get("uservalues").filter(|v| !v.is_empty()) {
        match serde_json::from_str::<Value>(uv) {
            Ok(Value::Object(_)) => {}
            _ => return Err(invalid("uservalues", "must be a JSON object")),
        }
    }
    let now = OffsetDateTime::now_utc();
    let (user, media) = (user.as_str(), media.as_str());
    let (facts, decision) = within(state, async {
        let client = state.pool.get().await.map_err(unavailable)?;
        let facts = facts(&client, user, media).await.map_err(unavailable)?;
        let decision = decide_play(&facts, now, state.play.default);
        let one = Record {
            callback: "play",
            kind,
            user,
            media,
            decision: &decision,
            facts: &facts,
            player_id: f.get("player_id").map(String::as_str),
            session_key: None,
        };
        record(&client, now, &[one]).await.map_err(unavailable)?;
        Ok((facts, decision))
    })
    .await?;
    observe(state, "play", kind, &decision);
    tracing::info!(
        callback = "play", kind, user, media, result = decision.allowed,
        reason = decision.reason.label(), playtime_used = facts.playtime_used,
        playtime_left = ?decision.playtime_left, "play callback answered"
    );
    let message = decision.reason.message(state.play.lang);
    let data = if kind == 1 {
        json!({
            "result": bool_int(decision.allowed),
            "message": message,
            "expiration_date": expiration_date(&decision),
            "expiration_playtime": decision.playtime_left.unwrap_or(0),
            "vmcheck": bool_int(state.play.vmcheck),
            "disable_tvout": bool_int(state.play.disable_tvout),
        })
    } else {
        json!({
            "result": bool_int(decision.allowed),
            "message": message,
            "content_expired": bool_int(matches!(decision.reason, Reason::Expired | Reason::Revoked)),
        })
    };
    answer(state, data)
}

/// The grant's expiry in Unix seconds, 0 for none; capped where Kollus caps it.
fn expiration_date(d: &Decision) -> i64 {
    const KOLLUS_MAX: i64 = 1_893_455_999;
    d.grant
        .as_ref()
        .filter(|_| d.allowed)
        .and_then(|g| g.expires_at)
        .map_or(0, |at| at.unix_timestamp().clamp(1, KOLLUS_MAX))
}

fn observe(state: &State, callback: &str, kind: i32, d: &Decision) {
    state
        .metrics
        .play_decisions
        .with_label_values(&[
            format!("{callback}:{kind}").as_str(),
            if d.allowed { "1" } else { "0" },
            d.reason.label(),
        ])
        .inc();
}

/// One DRM item, checked.
struct DrmItem {
    kind: i32,
    user: String,
    media: String,
    session_key: Option<String>,
    start_at: i64,
    player_id: Option<String>,
}

fn drm_items(body: &[u8]) -> Result<Vec<DrmItem>, ApiError> {
    let f = form(body);
    let items: Vec<Value> = serde_json::from_str(required(&f, "items")?)
        .map_err(|e| invalid("items", format!("must be a JSON array of objects: {e}")))?;
    if items.is_empty() {
        return Err(invalid("items", "must hold at least one item"));
    }
    items
        .iter()
        .enumerate()
        .map(|(i, item)| {
            let field = |name: &str| format!("items[{i}].{name}");
            let text = |name: &str| {
                item.get(name)
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty())
            };
            let kind = item
                .get("kind")
                .and_then(int_of)
                .filter(|k| (1..=3).contains(k))
                .ok_or_else(|| invalid(&field("kind"), "must be 1, 2 or 3"))?;
            let user = ClientUserId::parse(
                text("client_user_id")
                    .ok_or_else(|| invalid(&field("client_user_id"), "is required"))?,
            )
            .map_err(|e| invalid(&field("client_user_id"), e.to_string()))?;
            let media = MediaContentKey::parse(
                text("media_content_key")
                    .ok_or_else(|| invalid(&field("media_content_key"), "is required"))?,
            )
            .map_err(|e| invalid(&field("media_content_key"), e.to_string()))?;
            let session_key = text("session_key").map(str::to_owned);
            if kind == 2 && session_key.is_none() {
                return Err(invalid(
                    &field("session_key"),
                    "is required for a completed download (kind 2): it is what counts it once",
                ));
            }
            Ok(DrmItem {
                kind: kind as i32,
                user: user.as_str().to_owned(),
                media: media.as_str().to_owned(),
                session_key,
                start_at: item.get("start_at").and_then(int_of).unwrap_or(0),
                player_id: text("player_id").map(str::to_owned),
            })
        })
        .collect()
}

/// `POST /kollus/drm?secret=...` (SPEC.md 5.2): one answer item per request item, in order.
pub async fn drm(req: HttpRequest, body: web::Bytes, state: web::Data<State>) -> HttpResponse {
    let result = answer_drm(&req, &body, &state).await;
    counted(&state, "drm", &result);
    result.unwrap_or_else(|e| actix_web::ResponseError::error_response(&e))
}

async fn answer_drm(
    req: &HttpRequest,
    body: &[u8],
    state: &State,
) -> Result<HttpResponse, ApiError> {
    check_secret(req, state, "/kollus/drm")?;
    let items = drm_items(body)?;
    let now = OffsetDateTime::now_utc();
    let decided = within(state, async {
        let client = state.pool.get().await.map_err(unavailable)?;
        let mut decided = Vec::with_capacity(items.len());
        for item in &items {
            if item.kind == 2 {
                // Counted once per session_key, however often Kollus retries.
                let statement = client
                    .prepare_cached(
                        "INSERT INTO drm_downloads (client_user_id, media_content_key, \
                             session_key, completed_at) VALUES ($1, $2, $3, $4) \
                         ON CONFLICT DO NOTHING",
                    )
                    .await
                    .map_err(unavailable)?;
                client
                    .execute(
                        &statement,
                        &[&item.user, &item.media, &item.session_key, &now],
                    )
                    .await
                    .map_err(unavailable)?;
            }
            let facts = facts(&client, &item.user, &item.media)
                .await
                .map_err(unavailable)?;
            let decision = match item.kind {
                1 => decide_download(&facts, now, state.play.default),
                2 => Decision {
                    allowed: true,
                    reason: Reason::DownloadCounted,
                    grant: None,
                    playtime_left: None,
                },
                _ => decide_play(&facts, now, state.play.default),
            };
            decided.push((facts, decision));
        }
        let records: Vec<Record> = items
            .iter()
            .zip(&decided)
            .map(|(item, (facts, decision))| Record {
                callback: "drm",
                kind: item.kind,
                user: &item.user,
                media: &item.media,
                decision,
                facts,
                player_id: item.player_id.as_deref(),
                session_key: item.session_key.as_deref(),
            })
            .collect();
        record(&client, now, &records).await.map_err(unavailable)?;
        Ok(decided)
    })
    .await?;
    let data: Vec<Value> = items
        .iter()
        .zip(&decided)
        .map(|(item, (facts, d))| {
            observe(state, "drm", item.kind, d);
            tracing::info!(
                callback = "drm", kind = item.kind, user = item.user, media = item.media,
                result = d.allowed, reason = d.reason.label(), downloads = facts.downloads,
                "DRM callback item answered"
            );
            let gone = matches!(d.reason, Reason::Expired | Reason::Revoked | Reason::NoEntitlement);
            json!({
                "kind": item.kind,
                "media_content_key": item.media,
                "session_key": item.session_key.as_deref().unwrap_or(""),
                "start_at": item.start_at,
                "result": bool_int(d.allowed),
                "message": d.reason.message(state.play.lang),
                "expiration_date": expiration_date(d),
                // No per-file play count is sold: 0 (no limit).
                "expiration_count": 0,
                "expiration_playtime": d.playtime_left.unwrap_or(0),
                "vmcheck": bool_int(state.play.vmcheck),
                "content_expired": bool_int(item.kind == 3 && gone),
                "content_delete": bool_int(item.kind == 3 && matches!(d.reason, Reason::Revoked | Reason::NoEntitlement)),
            })
        })
        .collect();
    answer(state, Value::Array(data))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + s).unwrap()
    }

    fn grant(limit: Option<i64>, expires: Option<i64>) -> Grant {
        Grant {
            scope: Scope::Media,
            target: "m1".into(),
            expires_at: expires.map(at),
            playtime_limit: limit,
            download: true,
            download_limit: Some(2),
            revoked: false,
        }
    }

    #[test]
    fn the_allowance_left_is_the_limit_minus_what_was_played() {
        let facts = Facts {
            grants: vec![grant(Some(3600), Some(100))],
            playtime_used: 1000,
            downloads: 0,
        };
        let d = decide_play(&facts, at(0), PlayDefault::Deny);
        assert!(d.allowed);
        assert_eq!(d.playtime_left, Some(2600));
        let used_up = Facts {
            playtime_used: 3600,
            ..facts.clone()
        };
        let d = decide_play(&used_up, at(0), PlayDefault::Deny);
        assert_eq!((d.allowed, d.reason), (false, Reason::PlaytimeUsedUp));
        let d = decide_play(&facts, at(100), PlayDefault::Deny);
        assert_eq!(
            (d.allowed, d.reason),
            (false, Reason::Expired),
            "expires_at is the end"
        );
    }

    #[test]
    fn the_most_generous_grant_in_force_wins_and_refusals_say_why() {
        let mut revoked = grant(None, None);
        revoked.revoked = true;
        let facts = Facts {
            grants: vec![
                grant(Some(10), None),
                grant(Some(500), Some(50)),
                revoked.clone(),
            ],
            playtime_used: 5,
            downloads: 0,
        };
        let d = decide_play(&facts, at(0), PlayDefault::Deny);
        assert_eq!(d.playtime_left, Some(495));
        let only_revoked = Facts {
            grants: vec![revoked],
            ..Facts::default()
        };
        assert_eq!(
            decide_play(&only_revoked, at(0), PlayDefault::Deny).reason,
            Reason::Revoked
        );
        assert_eq!(
            decide_play(&Facts::default(), at(0), PlayDefault::Deny).reason,
            Reason::NoEntitlement
        );
        let allowed = decide_play(&Facts::default(), at(0), PlayDefault::Allow);
        assert_eq!(
            (allowed.allowed, allowed.reason),
            (true, Reason::DefaultAllow)
        );
    }

    #[test]
    fn downloads_need_the_right_and_room_under_the_limit() {
        let mut facts = Facts {
            grants: vec![grant(None, None)],
            playtime_used: 0,
            downloads: 1,
        };
        assert!(decide_download(&facts, at(0), PlayDefault::Deny).allowed);
        facts.downloads = 2;
        assert_eq!(
            decide_download(&facts, at(0), PlayDefault::Deny).reason,
            Reason::DownloadLimitReached
        );
        facts.grants[0].download = false;
        assert_eq!(
            decide_download(&facts, at(0), PlayDefault::Deny).reason,
            Reason::DownloadNotAllowed
        );
    }
}
