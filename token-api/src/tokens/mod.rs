//! Playback tokens: `POST /v1/playback-tokens` (a signed Kollus JWT and the player URL) and
//! `GET /v1/playback-tokens/verify`. `request.rs` checks what the product app asks for,
//! `options.rs` the player options of SPEC.md 5.3, `claims.rs` is the token's payload (SPEC.md
//! 1), `catalog.rs` the strict catalog check.

pub mod catalog;
pub mod claims;
pub mod options;
pub mod request;

use kollus_common::kollus::binding::PlayerBinding;
use std::sync::Arc;

use deadpool_postgres::Pool;

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;
use time::OffsetDateTime;

use self::catalog::CatalogCache;
use self::claims::PlaybackClaims;
use self::request::{Limits, TokenRequest, ValidRequest};
use crate::auth::{ApiScope, Caller};
use crate::configuration::StrictCatalog;
use crate::metrics::{Metrics, TokenOutcome};
use crate::problem::{ApiError, DbFailure, FieldError};
use crate::signer::Signer;

/// What issuing and verifying tokens needs, as its own `web::Data`.
pub struct Tokens {
    pub signer: Arc<Signer>,
    pub custom_key: String,
    pub player_url: String,
    pub limits: Limits,
    pub emit_exp: bool,
    pub strict: StrictCatalog,
    pub catalog_cache: CatalogCache,
    pub pool: Pool,
    pub metrics: Metrics,
    /// Viewer binding: every player URL carries its user's MAC in this uservalue, unless off.
    pub binding: Option<PlayerBinding>,
}

/// A signed playback token and the player URL it goes in.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = IssuedToken)]
pub struct Issued {
    /// HS256 JWT in Kollus's claim names (cuid, expt, mc[]).
    token: String,
    /// Player URL with jwt, custom_key, uservalues and player options.
    #[schema(format = "uri")]
    url: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

#[utoipa::path(
    post,
    path = "/v1/playback-tokens",
    operation_id = "issuePlaybackToken",
    summary = "Sign a Kollus playback JWT and build the player URL",
    description = "Needs the `tokens` scope; a token with `playcallback_ignore: true` (it plays without Kollus asking the play callback, so without an entitlement check) also needs `tokens:playcallback_ignore`.",
    request_body(content = TokenRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Issued.", body = Issued, content_type = "application/json"),
        (status = 400, description = "Invalid request; `errors` names each field.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 409, description = "STRICT_CATALOG refuses a video the catalog knows to be deleted or in no channel (or, with `require`, does not know).", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::IssueKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["tokens"]))
)]
pub async fn issue_token(
    caller: Result<Caller, ApiError>,
    body: web::Bytes,
    state: web::Data<Tokens>,
) -> Result<HttpResponse, ApiError> {
    // The caller is checked here rather than by extraction alone, so refusals count too.
    let result = match caller {
        Ok(caller) => match caller.require(ApiScope::Tokens) {
            Ok(caller) => issue(caller, &body, &state).await,
            Err(e) => Err(e),
        },
        Err(e) => Err(e),
    };
    let outcome = match &result {
        Ok(_) => TokenOutcome::Issued,
        Err(ApiError::Unauthorized | ApiError::TooManyAuthFailures(_)) => {
            TokenOutcome::Unauthorized
        }
        Err(ApiError::Forbidden(_)) => TokenOutcome::Forbidden,
        Err(ApiError::Invalid(_) | ApiError::BadJson(_)) => TokenOutcome::Invalid,
        Err(ApiError::Refused(..)) => TokenOutcome::Refused,
        Err(_) => TokenOutcome::Error,
    };
    state
        .metrics
        .issued
        .with_label_values(&[<&str>::from(outcome)])
        .inc();
    result
}

async fn issue(caller: &Caller, body: &[u8], state: &Tokens) -> Result<HttpResponse, ApiError> {
    let request: TokenRequest = crate::problem::json_body(body)?;
    // Such a token plays without Kollus asking our play callback: no entitlement is checked for
    // it, so signing one is a scope of its own (`false`, Kollus's default, needs none).
    if request.playcallback_ignore == Some(true) {
        caller.require(ApiScope::TokensPlaycallbackIgnore)?;
    }
    let valid = request.validate(&state.limits).map_err(ApiError::Invalid)?;
    if let Some(b) = state
        .binding
        .as_ref()
        .filter(|b| valid.uservalues.contains_key(&b.slot))
    {
        return Err(ApiError::Invalid(vec![FieldError {
            field: format!("uservalues.{}", b.slot),
            message: "is reserved for the viewer binding (PLAYER_BINDING_USERVALUE); use \
                      another uservalue"
                .into(),
        }]));
    }
    check_catalog(state, &valid).await?;

    let now = OffsetDateTime::now_utc();
    let claims = valid.claims(now.unix_timestamp(), state.emit_exp);
    let token = state
        .signer
        .sign(&claims)
        .map_err(|e| ApiError::Internal(format!("signing: {e}")))?;
    let url = player_url(state, &token, &valid);
    tracing::info!(
        caller = caller.name(),
        videos = valid.media.len(),
        expires_in = valid.expires_in,
        "playback token issued"
    );
    Ok(HttpResponse::Created().json(Issued {
        token,
        url,
        expires_at: OffsetDateTime::from_unix_timestamp(claims.expt)
            .map_err(|e| ApiError::Internal(e.to_string()))?,
    }))
}

async fn check_catalog(state: &Tokens, valid: &ValidRequest) -> Result<(), ApiError> {
    let checked = catalog::check(
        &state.pool,
        &state.catalog_cache,
        state.strict,
        &valid.media,
    )
    .await
    .inspect(|c| {
        // Kollus knows the video, presumably, and the catalog missed it: `kollus-catalog sweep`.
        state
            .metrics
            .unknown_media
            .with_label_values(&["token"])
            .inc_by(c.unknown as u64);
    })
    .map(|c| c.refusals);
    match checked {
        Ok(refusals) if refusals.is_empty() => Ok(()),
        Ok(refusals) => {
            for (r, _) in &refusals {
                state
                    .metrics
                    .catalog_rejections
                    .with_label_values(&[r.label()])
                    .inc();
            }
            let errors = refusals.into_iter().map(|(_, e)| e).collect();
            Err(ApiError::Refused(
                "the catalog says these videos cannot play".into(),
                errors,
            ))
        }
        // `require` promises nothing unchecked is issued; `on` prefers playback to the check.
        // Only a catalog that does not answer is a 503; a statement it refuses is our fault.
        Err(e) if state.strict == StrictCatalog::Require => {
            let not_answering = e
                .downcast_ref::<tokio_postgres::Error>()
                .map(DbFailure::not_answering)
                .or_else(|| {
                    e.downcast_ref::<deadpool_postgres::PoolError>()
                        .map(DbFailure::not_answering)
                })
                .unwrap_or(true);
            if not_answering {
                Err(ApiError::Unavailable(format!("catalog check: {e:#}")))
            } else {
                tracing::error!(error = format!("{e:#}"), "the strict catalog check failed");
                Err(ApiError::Internal(
                    "the database refused a statement; the cause is logged".into(),
                ))
            }
        }
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "catalog unreachable; issuing without the strict check"
            );
            state
                .metrics
                .catalog_rejections
                .with_label_values(&[Metrics::CATALOG_CHECK_SKIPPED])
                .inc();
            Ok(())
        }
    }
}

/// `{player_url}?jwt=..&custom_key=..&uservalueN=..&autoplay=..&mute=..&t=..`, URL-encoded.
fn player_url(state: &Tokens, token: &str, valid: &ValidRequest) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("jwt", token)
        .append_pair("custom_key", &state.custom_key);
    for (k, v) in &valid.uservalues {
        q.append_pair(k, v);
    }
    if let Some(b) = &state.binding {
        q.append_pair(&b.slot, &b.value_for(valid.client_user_id.as_str()));
    }
    let flag = |b: bool| if b { "1" } else { "0" };
    if let Some(a) = valid.player.autoplay {
        q.append_pair("autoplay", flag(a));
    }
    if let Some(m) = valid.player.mute {
        q.append_pair("mute", flag(m));
    }
    if let Some(t) = valid.player.t {
        q.append_pair("t", &t.to_string());
    }
    let sep = if state.player_url.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{}{sep}{}", state.player_url, q.finish())
}

#[derive(serde::Deserialize)]
pub struct VerifyQuery {
    token: String,
}

/// For operators: checks signature and expiry.
#[utoipa::path(
    get,
    path = "/v1/playback-tokens/verify",
    operation_id = "verifyPlaybackToken",
    summary = "For operators: check a token's signature and expiry and show its claims",
    params(
        ("token" = String, Query, description = "A compact JWS (header.claims.signature).", pattern = "^[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+\\.[A-Za-z0-9_-]+$")
    ),
    responses(
        (status = 200, description = "Decoded; `valid` says whether it is unexpired.", body = Verified, content_type = "application/json"),
        (status = 400, description = "Not a token signed with our key.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::TokensKeyRefused
    ),
    security(("bearer" = ["tokens"]))
)]
pub async fn verify_token(
    caller: Caller,
    req: HttpRequest,
    state: web::Data<Tokens>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Tokens)?;
    let query: VerifyQuery = crate::problem::parse_query(&req)?;
    // `exp` is optional (a setting); `expt` is Kollus's expiry and is checked below.
    let data = state
        .signer
        .verify::<PlaybackClaims>(&query.token)
        .map_err(|e| ApiError::BadToken(format!("not a valid playback token: {e}")))?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = data.claims;
    Ok(HttpResponse::Ok().json(Verified {
        valid: claims.expt > now,
        expired: claims.expt <= now,
        expires_in: claims.expt - now,
        header: data.header,
        claims,
    }))
}

/// A token decoded; `valid` says whether it is unexpired.
#[derive(Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = VerifiedToken)]
pub struct Verified {
    valid: bool,
    expired: bool,
    expires_in: i64,
    #[schema(value_type = Object)]
    header: jsonwebtoken::Header,
    #[schema(value_type = Object)]
    claims: PlaybackClaims,
}
