//! What the product app has granted: access to one video or to a whole channel, for a period,
//! with a viewing allowance and download rights. Every change is kept (`entitlement_changes`),
//! with the API key's name that made it.
//!
//! `PUT /v1/users/{client_user_id}/entitlements/media/{media_content_key}` (or
//! `.../channel/{channel_key}`) grants or replaces, `DELETE` the same path revokes,
//! `GET /v1/users/{client_user_id}/entitlements` lists.

use actix_web::{web, HttpResponse};
use kollus_common::domain::{ChannelKey, ClientUserId, MediaContentKey};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::auth::{ApiScope, Caller};
use crate::problem::{db_error, invalid, ApiError, FieldError};
use crate::state::State;

/// What an entitlement covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One video (`media_content_key`).
    Media,
    /// Every video the catalog has in the channel (`channel_key`).
    Channel,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Media => "media",
            Self::Channel => "channel",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "media" => Some(Self::Media),
            "channel" => Some(Self::Channel),
            _ => None,
        }
    }
}

/// The body of a grant.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantBody {
    /// Access ends then; `null`: never.
    #[serde(default, with = "time::serde::rfc3339::option")]
    expires_at: Option<OffsetDateTime>,
    /// Seconds of `playtime` the user may spend on each covered video, over all sessions.
    #[serde(default, deserialize_with = "crate::request::opt_whole")]
    playtime_limit_seconds: Option<i64>,
    /// Whether Kollus may let the player download covered videos.
    #[serde(default)]
    download: bool,
    /// Completed downloads allowed per video; `null`: no limit.
    #[serde(default, deserialize_with = "crate::request::opt_whole")]
    download_limit: Option<i32>,
}

/// An entitlement as stored and answered.
#[derive(Debug, Clone, Serialize)]
pub struct Entitlement {
    pub scope: Scope,
    /// The `media_content_key` or `channel_key` it covers.
    pub key: String,
    #[serde(with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub playtime_limit_seconds: Option<i64>,
    pub download: bool,
    pub download_limit: Option<i32>,
    pub granted_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub granted_at: OffsetDateTime,
    pub revoked_by: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub revoked_at: Option<OffsetDateTime>,
}

/// The path's user and key, each checked as Kollus would take it.
fn target(user: &str, scope: Scope, key: &str) -> Result<(ClientUserId, Scope, String), ApiError> {
    let user = ClientUserId::parse(user).map_err(|e| invalid("client_user_id", e.to_string()))?;
    let key = match scope {
        Scope::Media => MediaContentKey::parse(key)
            .map(|k| k.as_str().to_owned())
            .map_err(|e| invalid("media_content_key", e.to_string()))?,
        Scope::Channel => ChannelKey::parse(key)
            .map(|k| k.as_str().to_owned())
            .map_err(|e| invalid("channel_key", e.to_string()))?,
    };
    Ok((user, scope, key))
}

const NOT_ANSWERING: &str = "the entitlements database is not answering; retry shortly";

fn parse_body(body: &[u8]) -> Result<GrantBody, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(body);
    let grant: GrantBody = serde_path_to_error::deserialize(de).map_err(|e| {
        let field = e.path().to_string();
        let message = e.inner().to_string();
        if field == "." {
            ApiError::BadJson(message)
        } else {
            invalid(&field, message)
        }
    })?;
    let mut errors = Vec::new();
    if grant.playtime_limit_seconds.is_some_and(|l| l <= 0) {
        errors.push(FieldError {
            field: "playtime_limit_seconds".into(),
            message: "must be a positive number of seconds, or null for no limit".into(),
        });
    }
    if grant.download_limit.is_some_and(|l| l < 0) {
        errors.push(FieldError {
            field: "download_limit".into(),
            message: "must be 0 or more, or null for no limit".into(),
        });
    }
    if errors.is_empty() {
        Ok(grant)
    } else {
        Err(ApiError::Invalid(errors))
    }
}

const COLUMNS: &str = "scope, target, expires_at, playtime_limit_seconds, download, \
                       download_limit, granted_by, granted_at, revoked_by, revoked_at";

fn from_row(r: &tokio_postgres::Row) -> Entitlement {
    Entitlement {
        scope: Scope::parse(r.get(0)).unwrap_or(Scope::Media),
        key: r.get(1),
        expires_at: r.get(2),
        playtime_limit_seconds: r.get(3),
        download: r.get(4),
        download_limit: r.get(5),
        granted_by: r.get(6),
        granted_at: r.get(7),
        revoked_by: r.get(8),
        revoked_at: r.get(9),
    }
}

/// `PUT /v1/users/{client_user_id}/entitlements/media/{media_content_key}`
pub async fn grant_media(
    caller: Caller,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let (user, key) = path.into_inner();
    grant(caller, target(&user, Scope::Media, &key)?, &body, &state).await
}

/// `PUT /v1/users/{client_user_id}/entitlements/channel/{channel_key}`
pub async fn grant_channel(
    caller: Caller,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let (user, key) = path.into_inner();
    grant(caller, target(&user, Scope::Channel, &key)?, &body, &state).await
}

/// `DELETE /v1/users/{client_user_id}/entitlements/media/{media_content_key}`
pub async fn revoke_media(
    caller: Caller,
    path: web::Path<(String, String)>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let (user, key) = path.into_inner();
    revoke(caller, target(&user, Scope::Media, &key)?, &state).await
}

/// `DELETE /v1/users/{client_user_id}/entitlements/channel/{channel_key}`
pub async fn revoke_channel(
    caller: Caller,
    path: web::Path<(String, String)>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let (user, key) = path.into_inner();
    revoke(caller, target(&user, Scope::Channel, &key)?, &state).await
}

async fn grant(
    caller: Caller,
    (user, scope, key): (ClientUserId, Scope, String),
    body: &[u8],
    state: &State,
) -> Result<HttpResponse, ApiError> {
    let g = parse_body(body)?;
    let mut client = state.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
    let tx = client
        .transaction()
        .await
        .map_err(db_error(NOT_ANSWERING))?;
    let now = OffsetDateTime::now_utc();
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO entitlements AS e (client_user_id, scope, target, expires_at, \
                     playtime_limit_seconds, download, download_limit, granted_by, granted_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (client_user_id, scope, target) DO UPDATE SET \
                     expires_at = EXCLUDED.expires_at, \
                     playtime_limit_seconds = EXCLUDED.playtime_limit_seconds, \
                     download = EXCLUDED.download, download_limit = EXCLUDED.download_limit, \
                     granted_by = EXCLUDED.granted_by, granted_at = EXCLUDED.granted_at, \
                     revoked_by = NULL, revoked_at = NULL \
                 RETURNING {COLUMNS}"
            ),
            &[
                &user.as_str(),
                &scope.as_str(),
                &key,
                &g.expires_at,
                &g.playtime_limit_seconds,
                &g.download,
                &g.download_limit,
                &caller.name(),
                &now,
            ],
        )
        .await
        .map_err(db_error(NOT_ANSWERING))?;
    tx.execute(
        "INSERT INTO entitlement_changes (client_user_id, scope, target, action, expires_at, \
             playtime_limit_seconds, download, download_limit, changed_by, changed_at) \
         VALUES ($1, $2, $3, 'grant', $4, $5, $6, $7, $8, $9)",
        &[
            &user.as_str(),
            &scope.as_str(),
            &key,
            &g.expires_at,
            &g.playtime_limit_seconds,
            &g.download,
            &g.download_limit,
            &caller.name(),
            &now,
        ],
    )
    .await
    .map_err(db_error(NOT_ANSWERING))?;
    tx.commit().await.map_err(db_error(NOT_ANSWERING))?;
    tracing::info!(
        caller = caller.name(),
        user = user.as_str(),
        scope = scope.as_str(),
        key,
        expires_at = ?g.expires_at,
        playtime_limit_seconds = g.playtime_limit_seconds,
        download = g.download,
        "entitlement granted"
    );
    state
        .metrics
        .entitlement_changes
        .with_label_values(&["grant"])
        .inc();
    Ok(HttpResponse::Ok().json(from_row(&row)))
}

/// Revokes: 204, or 404 when there is no grant in force to revoke.
async fn revoke(
    caller: Caller,
    (user, scope, key): (ClientUserId, Scope, String),
    state: &State,
) -> Result<HttpResponse, ApiError> {
    let mut client = state.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
    let tx = client
        .transaction()
        .await
        .map_err(db_error(NOT_ANSWERING))?;
    let now = OffsetDateTime::now_utc();
    let revoked = tx
        .execute(
            "UPDATE entitlements SET revoked_by = $4, revoked_at = $5 \
             WHERE client_user_id = $1 AND scope = $2 AND target = $3 AND revoked_at IS NULL",
            &[&user.as_str(), &scope.as_str(), &key, &caller.name(), &now],
        )
        .await
        .map_err(db_error(NOT_ANSWERING))?;
    if revoked == 0 {
        return Err(ApiError::NotFound(format!(
            "{} has no {} entitlement to {key} in force",
            user.as_str(),
            scope.as_str()
        )));
    }
    tx.execute(
        "INSERT INTO entitlement_changes (client_user_id, scope, target, action, changed_by, \
             changed_at) VALUES ($1, $2, $3, 'revoke', $4, $5)",
        &[&user.as_str(), &scope.as_str(), &key, &caller.name(), &now],
    )
    .await
    .map_err(db_error(NOT_ANSWERING))?;
    tx.commit().await.map_err(db_error(NOT_ANSWERING))?;
    tracing::info!(
        caller = caller.name(),
        user = user.as_str(),
        scope = scope.as_str(),
        key,
        "entitlement revoked"
    );
    state
        .metrics
        .entitlement_changes
        .with_label_values(&["revoke"])
        .inc();
    Ok(HttpResponse::NoContent().finish())
}

#[derive(Serialize)]
struct Listing {
    client_user_id: String,
    entitlements: Vec<Entitlement>,
}

/// `GET /v1/users/{client_user_id}/entitlements`: every grant, in force or revoked.
pub async fn list(
    caller: Caller,
    path: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let user = ClientUserId::parse(path.into_inner())
        .map_err(|e| invalid("client_user_id", e.to_string()))?;
    let client = state.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
    let rows = client
        .query(
            &format!(
                "SELECT {COLUMNS} FROM entitlements WHERE client_user_id = $1 \
                 ORDER BY scope, target"
            ),
            &[&user.as_str()],
        )
        .await
        .map_err(db_error(NOT_ANSWERING))?;
    Ok(HttpResponse::Ok().json(Listing {
        client_user_id: user.as_str().to_owned(),
        entitlements: rows.iter().map(from_row).collect(),
    }))
}
