//! token-api's endpoints.

use actix_web::http::Method;
use actix_web::{web, HttpRequest, HttpResponse};
use deadpool_postgres::Pool;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde::Serialize;
use time::OffsetDateTime;

use crate::auth::ApiKeys;
use crate::catalog;
use crate::claims::{sign, PlaybackClaims};
use crate::configuration::StrictCatalog;
use crate::metrics::Metrics;
use crate::problem::ApiError;
use crate::request::{Limits, TokenRequest, ValidRequest};

pub struct State {
    pub keys: ApiKeys,
    pub encoding_key: EncodingKey,
    pub decoding_key: DecodingKey,
    pub custom_key: String,
    pub player_url: String,
    pub limits: Limits,
    pub emit_exp: bool,
    pub strict: StrictCatalog,
    pub catalog_cache: catalog::CatalogCache,
    pub pool: Pool,
    pub metrics: Metrics,
}

impl State {
    pub(crate) fn authenticate(&self, req: &HttpRequest) -> Result<String, ApiError> {
        match self.keys.authenticate(req) {
            Some(name) => Ok(name.to_owned()),
            None => {
                kollus_common::telemetry::warn_auth_failure(
                    req.match_pattern().as_deref().unwrap_or("unmatched"),
                    req.peer_addr().map(|a| a.ip()),
                );
                Err(ApiError::Unauthorized)
            }
        }
    }
}

#[derive(Serialize)]
struct Issued {
    token: String,
    url: String,
    #[serde(with = "time::serde::rfc3339")]
    expires_at: OffsetDateTime,
}

/// `POST /v1/playback-tokens`
pub async fn issue_token(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    let result = issue(&req, &body, &state).await;
    let outcome = match &result {
        Ok(_) => "issued",
        Err(ApiError::Unauthorized) => "unauthorized",
        Err(ApiError::Invalid(_) | ApiError::BadJson(_)) => "invalid",
        Err(ApiError::Refused(..)) => "refused",
        Err(_) => "error",
    };
    state.metrics.issued.with_label_values(&[outcome]).inc();
    result
}

async fn issue(req: &HttpRequest, body: &[u8], state: &State) -> Result<HttpResponse, ApiError> {
    let caller = state.authenticate(req)?;
    let request: TokenRequest =
        serde_json::from_slice(body).map_err(|e| ApiError::BadJson(e.to_string()))?;
    let valid = request.validate(&state.limits).map_err(ApiError::Invalid)?;
    check_catalog(state, &valid).await?;

    let now = OffsetDateTime::now_utc();
    let claims = valid.claims(now.unix_timestamp(), state.emit_exp);
    let token = sign(&claims, &state.encoding_key)
        .map_err(|e| ApiError::Internal(format!("signing: {e}")))?;
    let url = player_url(state, &token, &valid);
    tracing::info!(
        caller,
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

async fn check_catalog(state: &State, valid: &ValidRequest) -> Result<(), ApiError> {
    match catalog::refusals(
        &state.pool,
        &state.catalog_cache,
        state.strict,
        &valid.media,
    )
    .await
    {
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
        Err(e) if state.strict == StrictCatalog::Require => {
            Err(ApiError::Unavailable(format!("catalog check: {e:#}")))
        }
        Err(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                "catalog unreachable; issuing without the strict check"
            );
            state
                .metrics
                .catalog_rejections
                .with_label_values(&["check_skipped_catalog_unavailable"])
                .inc();
            Ok(())
        }
    }
}

/// `{player_url}?jwt=..&custom_key=..&uservalueN=..&autoplay=..&mute=..&t=..`, URL-encoded.
fn player_url(state: &State, token: &str, valid: &ValidRequest) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("jwt", token)
        .append_pair("custom_key", &state.custom_key);
    for (k, v) in &valid.uservalues {
        q.append_pair(k, v);
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

/// `GET /v1/playback-tokens/verify?token=`: for operators, checks signature and expiry.
pub async fn verify_token(
    req: HttpRequest,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    state.authenticate(&req)?;
    let query: VerifyQuery = crate::problem::parse_query(&req)?;
    let mut validation = Validation::new(Algorithm::HS256);
    // `exp` is optional (a setting); `expt` is Kollus's expiry and is checked below.
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let data =
        jsonwebtoken::decode::<PlaybackClaims>(&query.token, &state.decoding_key, &validation)
            .map_err(|e| ApiError::BadToken(format!("not a valid playback token: {e}")))?;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let claims = data.claims;
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "valid": claims.expt > now,
        "expired": claims.expt <= now,
        "expires_in": claims.expt - now,
        "header": data.header,
        "claims": claims,
    })))
}

/// The OpenAPI document of this API (`token-api/openapi.json`).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// `GET /openapi.json`
pub async fn openapi() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(OPENAPI)
}

/// Every API route, registered from this one list; a test holds it equal to `openapi.json`.
/// (`/healthz`, `/readyz` and `/metrics` are the operations endpoints every service has.)
pub fn api_routes() -> Vec<(&'static str, Method, actix_web::Route)> {
    vec![
        (
            "/v1/playback-tokens",
            Method::POST,
            web::post().to(issue_token),
        ),
        (
            "/v1/playback-tokens/verify",
            Method::GET,
            web::get().to(verify_token),
        ),
        (
            "/v1/users/{client_user_id}/media/{media_content_key}/progress",
            Method::GET,
            web::get().to(crate::read::progress),
        ),
        (
            "/v1/users/{client_user_id}/history",
            Method::GET,
            web::get().to(crate::read::history),
        ),
        (
            "/v1/media/{media_content_key}",
            Method::GET,
            web::get().to(crate::read::media),
        ),
        ("/openapi.json", Method::GET, web::get().to(openapi)),
    ]
}
