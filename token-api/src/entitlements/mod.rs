//! What the product app has granted: access to one video or to a whole channel, for a period,
//! with a viewing allowance and download rights. Every change is kept (`entitlement_changes`),
//! with the API key's name that made it.
//!
//! `PUT /v1/users/{client_user_id}/entitlements/media/{media_content_key}` (or
//! `.../channel/{channel_key}`) grants or replaces, `DELETE` the same path revokes,
//! `GET /v1/users/{client_user_id}/entitlements` lists. Each grant and revocation writes its
//! access-record row (`grant` / `revoke`, target `scope:key`) in the change's own transaction;
//! a listing counts a read of the user.

use actix_web::{web, HttpResponse};
use deadpool_postgres::Pool;
use kollus_common::domain::{ChannelKey, ClientUserId, CourseId, MediaContentKey};
use serde::Serialize;
use time::OffsetDateTime;

pub mod body;
pub mod model;
mod store;

use self::body::parse_body;
pub use self::model::{Entitlement, Scope};
use self::store::Change;
use crate::access_log::record::AccessLog;
use crate::auth::{ApiScope, Caller};
use crate::metrics::Metrics;
use crate::problem::{change_failed, db_error, invalid, not_recorded, ApiError};

/// What granting, revoking and listing need, as their own `web::Data`.
pub struct Entitlements {
    pub pool: Pool,
    pub metrics: Metrics,
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
        Scope::Course => CourseId::parse(key)
            .map(|k| k.as_str().to_owned())
            .map_err(|e| invalid("course_id", e.to_string()))?,
    };
    Ok((user, scope, key))
}

const NOT_ANSWERING: &str = "the entitlements database is not answering; retry shortly";

/// The two grants' paths, each taking `PUT` (grant) and `DELETE` (revoke).
const MEDIA_GRANT: &str = "/v1/users/{client_user_id}/entitlements/media/{media_content_key}";
const CHANNEL_GRANT: &str = "/v1/users/{client_user_id}/entitlements/channel/{channel_key}";
const COURSE_GRANT: &str = "/v1/users/{client_user_id}/entitlements/course/{course_id}";

#[utoipa::path(
    put,
    path = MEDIA_GRANT,
    operation_id = "grantMediaEntitlement",
    summary = "Grant (or replace) a user's access to a media",
    params(
        crate::params::UserPath,
        crate::params::MediaPath
    ),
    request_body(content = body::GrantBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Granted; recorded with the API key's name.", body = Entitlement, content_type = "application/json"),
        (status = 400, description = "An invalid field, named.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::EntitlementsKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["entitlements"]))
)]
pub async fn grant_media(
    caller: Caller,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    e: web::Data<Entitlements>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let (user, key) = path.into_inner();
    grant(caller, target(&user, Scope::Media, &key)?, &body, &e, &log).await
}

#[utoipa::path(
    put,
    path = CHANNEL_GRANT,
    operation_id = "grantChannelEntitlement",
    summary = "Grant (or replace) a user's access to a channel",
    params(
        crate::params::UserPath,
        crate::params::ChannelPath
    ),
    request_body(content = body::GrantBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Granted; recorded with the API key's name.", body = Entitlement, content_type = "application/json"),
        (status = 400, description = "An invalid field, named.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::EntitlementsKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["entitlements"]))
)]
pub async fn grant_channel(
    caller: Caller,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    e: web::Data<Entitlements>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let (user, key) = path.into_inner();
    grant(
        caller,
        target(&user, Scope::Channel, &key)?,
        &body,
        &e,
        &log,
    )
    .await
}

#[utoipa::path(
    put,
    path = COURSE_GRANT,
    operation_id = "grantCourseEntitlement",
    summary = "Enrol a user in a course (grant or replace)",
    description = "Covers every lesson the course lists when Kollus asks (as a channel grant covers its channel's videos, with this grant's expiry and allowances), and enrols the user: the course's progress answer says `enrolled`. The course need not exist yet; a grant for a course deleted or not yet created covers nothing.",
    params(
        crate::params::UserPath,
        crate::params::CoursePath
    ),
    request_body(content = body::GrantBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Granted; recorded with the API key's name.", body = Entitlement, content_type = "application/json"),
        (status = 400, description = "An invalid field, named.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::EntitlementsKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["entitlements"]))
)]
pub async fn grant_course(
    caller: Caller,
    path: web::Path<(String, String)>,
    body: web::Bytes,
    e: web::Data<Entitlements>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let (user, key) = path.into_inner();
    grant(caller, target(&user, Scope::Course, &key)?, &body, &e, &log).await
}

#[utoipa::path(
    delete,
    path = COURSE_GRANT,
    operation_id = "revokeCourseEntitlement",
    summary = "Revoke a user's course enrolment",
    params(
        crate::params::UserPath,
        crate::params::CoursePath
    ),
    responses(
        (status = 204, description = "Revoked; kept, marked revoked."),
        (status = 400, description = "An invalid id.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No grant in force to revoke.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::EntitlementsKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["entitlements"]))
)]
pub async fn revoke_course(
    caller: Caller,
    path: web::Path<(String, String)>,
    e: web::Data<Entitlements>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let (user, key) = path.into_inner();
    revoke(caller, target(&user, Scope::Course, &key)?, &e, &log).await
}

#[utoipa::path(
    delete,
    path = MEDIA_GRANT,
    operation_id = "revokeMediaEntitlement",
    summary = "Revoke a user's access to a media",
    params(
        crate::params::UserPath,
        crate::params::MediaPath
    ),
    responses(
        (status = 204, description = "Revoked; kept, marked revoked."),
        (status = 400, description = "An invalid key.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No grant in force to revoke.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::EntitlementsKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["entitlements"]))
)]
pub async fn revoke_media(
    caller: Caller,
    path: web::Path<(String, String)>,
    e: web::Data<Entitlements>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let (user, key) = path.into_inner();
    revoke(caller, target(&user, Scope::Media, &key)?, &e, &log).await
}

#[utoipa::path(
    delete,
    path = CHANNEL_GRANT,
    operation_id = "revokeChannelEntitlement",
    summary = "Revoke a user's access to a channel",
    params(
        crate::params::UserPath,
        crate::params::ChannelPath
    ),
    responses(
        (status = 204, description = "Revoked; kept, marked revoked."),
        (status = 400, description = "An invalid key.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No grant in force to revoke.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::EntitlementsKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["entitlements"]))
)]
pub async fn revoke_channel(
    caller: Caller,
    path: web::Path<(String, String)>,
    e: web::Data<Entitlements>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let (user, key) = path.into_inner();
    revoke(caller, target(&user, Scope::Channel, &key)?, &e, &log).await
}

async fn grant(
    caller: Caller,
    (user, scope, key): (ClientUserId, Scope, String),
    body: &[u8],
    e: &Entitlements,
    log: &AccessLog,
) -> Result<HttpResponse, ApiError> {
    let g = parse_body(body)?;
    let mut client = e.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
    let change = Change {
        user: user.as_str(),
        scope,
        key: &key,
        by: caller.name(),
        at: OffsetDateTime::now_utc(),
        addr: caller.client_addr(),
    };
    let granted = store::grant(&mut client, &change, &g, log)
        .await
        .map_err(change_failed(NOT_ANSWERING))?;
    tracing::info!(
        caller = caller.name(),
        subject = log.tag(user.as_str()).as_str(),
        scope = scope.as_str(),
        key,
        expires_at = ?g.expires_at,
        playtime_limit_seconds = g.playtime_limit_seconds,
        download = g.download,
        "entitlement granted"
    );
    e.metrics
        .entitlement_changes
        .with_label_values(&["grant"])
        .inc();
    Ok(HttpResponse::Ok().json(granted))
}

/// Revokes: 204, or 404 when there is no grant in force to revoke.
async fn revoke(
    caller: Caller,
    (user, scope, key): (ClientUserId, Scope, String),
    e: &Entitlements,
    log: &AccessLog,
) -> Result<HttpResponse, ApiError> {
    let mut client = e.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
    let change = Change {
        user: user.as_str(),
        scope,
        key: &key,
        by: caller.name(),
        at: OffsetDateTime::now_utc(),
        addr: caller.client_addr(),
    };
    let revoked = store::revoke(&mut client, &change, log)
        .await
        .map_err(change_failed(NOT_ANSWERING))?;
    if !revoked {
        return Err(ApiError::NotFound(format!(
            "{} has no {} entitlement to {key} in force",
            user.as_str(),
            scope.as_str()
        )));
    }
    tracing::info!(
        caller = caller.name(),
        subject = log.tag(user.as_str()).as_str(),
        scope = scope.as_str(),
        key,
        "entitlement revoked"
    );
    e.metrics
        .entitlement_changes
        .with_label_values(&["revoke"])
        .inc();
    Ok(HttpResponse::NoContent().finish())
}

/// A user's grants, in force or revoked.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = EntitlementList)]
pub struct Listing {
    client_user_id: String,
    entitlements: Vec<Entitlement>,
}

/// Every grant, in force or revoked.
#[utoipa::path(
    get,
    path = "/v1/users/{client_user_id}/entitlements",
    operation_id = "listEntitlements",
    summary = "A user's entitlements, in force or revoked",
    params(
        crate::params::UserPath
    ),
    responses(
        (status = 200, description = "Every grant.", body = Listing, content_type = "application/json"),
        (status = 400, description = "An invalid user id.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::EntitlementsKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["entitlements"]))
)]
pub async fn list(
    caller: Caller,
    path: web::Path<String>,
    e: web::Data<Entitlements>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let user = ClientUserId::parse(path.into_inner())
        .map_err(|e| invalid("client_user_id", e.to_string()))?;
    let client = e.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
    let entitlements = store::list(&client, user.as_str())
        .await
        .map_err(db_error(NOT_ANSWERING))?;
    log.record_read(
        &**client,
        caller.name(),
        caller.client_addr(),
        user.as_str(),
    )
    .await
    .map_err(not_recorded)?;
    Ok(HttpResponse::Ok().json(Listing {
        client_user_id: user.as_str().to_owned(),
        entitlements,
    }))
}
