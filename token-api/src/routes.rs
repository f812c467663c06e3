//! Every feature's routes, registered from one list ([`api_routes`]), and the OpenAPI document
//! derived from the same handlers and their types ([`ApiDoc`], utoipa); tests hold the list, the
//! derived document and its snapshot `openapi.json` equal. Top layer: it imports the features'
//! handlers; nothing imports it but `startup`.

use crate::tokens::request::Limits;
use crate::{entitlements, export, history, playback, tokens};

use actix_web::http::Method;
use actix_web::{web, HttpResponse};

/// `token-api/openapi.json`: the snapshot of [`ApiDoc`] (with the default settings), kept in the
/// repository so API changes show in diffs; a test holds it equal to the derived document.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The document derived from the code, as JSON, with the two facts utoipa's attributes cannot
/// state, taken from the code too: the history page's default `limit`, and that every Kollus
/// answer carries `X-Kollus-UserKey`.
pub fn derived() -> serde_json::Value {
    use utoipa::OpenApi as _;
    let mut doc = serde_json::to_value(ApiDoc::openapi()).expect("the derived document serializes");
    let paths = &mut doc["paths"];
    if let Some(params) =
        paths["/v1/users/{client_user_id}/history"]["get"]["parameters"].as_array_mut()
    {
        for p in params.iter_mut().filter(|p| p["name"] == "limit") {
            p["schema"]["default"] = history::DEFAULT_PAGE.into();
        }
    }
    for callback in ["/kollus/play", "/kollus/drm"] {
        paths[callback]["post"]["responses"]["200"]["headers"]["X-Kollus-UserKey"]["required"] =
            true.into();
    }
    doc
}

/// The document as served: the limits that are settings (`TOKEN_MAX_MEDIA`,
/// `TOKEN_MAX_EXPIRES_IN`) are this server's, so a client generated from it asks for nothing
/// the server refuses. With the default settings it is `openapi.json` itself.
pub struct ServedDocument(String);

impl ServedDocument {
    pub fn new(limits: &Limits) -> Self {
        let mut doc = derived();
        let request = &mut doc["components"]["schemas"]["TokenRequest"]["properties"];
        request["media"]["maxItems"] = limits.max_media.into();
        request["expires_in"]["maximum"] = limits.max_expires_in.into();
        Self(serde_json::to_string(&doc).expect("a JSON value serializes"))
    }
}

/// The document derived from the handlers and types (`#[utoipa::path]` on each handler,
/// `ToSchema` on each body); `openapi.json` is its snapshot, held equal by a test.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "kollus-pipeline token-api",
        version = "1.0.0",
        description = "Signed Kollus playback tokens and player URLs for the product app, the read API for watch progress, watch history and the media catalog, entitlements, exports, and the answers to Kollus's play and DRM callbacks. Every /v1 endpoint needs `Authorization: Bearer <key>` (TOKEN_API_KEYS) whose key has the scope the operation's `security` names (else 403 naming it); Kollus's /kollus callbacks carry PLAY_CALLBACK_SECRET instead. Errors are RFC 7807 `application/problem+json`; validation errors list every invalid field. Operations endpoints, not listed here: /healthz, /readyz, /metrics (Prometheus)."
    ),
    servers((url = "http://127.0.0.1:8081")),
    security(("bearer" = [])),
    paths(
        tokens::issue_token,
        tokens::verify_token,
        history::progress,
        history::history,
        history::media,
        openapi,
        playback::play,
        playback::drm,
        entitlements::grant_media,
        entitlements::revoke_media,
        entitlements::grant_channel,
        entitlements::revoke_channel,
        entitlements::list,
        export::user,
        export::media,
    ),
    components(schemas(
        crate::problem::Problem,
        tokens::request::TokenRequest,
        tokens::request::MediaRequest,
        tokens::Issued,
        tokens::Verified,
        history::Progress,
        history::HistoryPage,
        history::MediaState,
        entitlements::body::GrantBody,
        entitlements::model::Entitlement,
        entitlements::Listing,
        playback::wire::PlayForm,
        playback::wire::DrmForm,
        playback::wire::KollusAnswer,
    )),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

/// The two ways in: API keys (`Authorization: Bearer`, with scopes) and Kollus's callback secret.
struct SecuritySchemes;

impl utoipa::Modify for SecuritySchemes {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{
            ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme,
        };
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("A key from TOKEN_API_KEYS (`name[scope+scope]:key,...`). Each operation's `security` names the scope it needs: `tokens`, `read`, `entitlements`, `export` (`console` is for the support console; `tokens:playcallback_ignore` lets a `tokens` key sign `playcallback_ignore: true`). A key given without scopes has every scope but `console` and `tokens:playcallback_ignore`; a key without the scope an operation needs gets 403 naming it."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "callbackSecret",
            SecurityScheme::ApiKey(ApiKey::Query(ApiKeyValue::with_description(
                "secret",
                "PLAY_CALLBACK_SECRET, in the play and DRM callback URLs configured in the Kollus console (README, \"Callback secrets\").",
            ))),
        );
    }
}

/// `GET /openapi.json`
#[utoipa::path(
    get,
    path = "/openapi.json",
    operation_id = "getOpenApi",
    summary = "This document",
    responses(
        (status = 200, description = "OpenAPI 3.1", body = Object, content_type = "application/json")
    ),
    security()
)]
pub async fn openapi(doc: web::Data<ServedDocument>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(doc.0.clone())
}

/// Every API route, registered from this one list; a test holds it equal to `openapi.json`.
/// (`/healthz`, `/readyz` and `/metrics` are the operations endpoints every service has.)
pub fn api_routes() -> Vec<(&'static str, Method, actix_web::Route)> {
    vec![
        (
            "/v1/playback-tokens",
            Method::POST,
            web::post().to(tokens::issue_token),
        ),
        (
            "/v1/playback-tokens/verify",
            Method::GET,
            web::get().to(tokens::verify_token),
        ),
        (
            "/v1/users/{client_user_id}/media/{media_content_key}/progress",
            Method::GET,
            web::get().to(history::progress),
        ),
        (
            "/v1/users/{client_user_id}/history",
            Method::GET,
            web::get().to(history::history),
        ),
        (
            "/v1/media/{media_content_key}",
            Method::GET,
            web::get().to(history::media),
        ),
        (
            "/v1/users/{client_user_id}/entitlements",
            Method::GET,
            web::get().to(entitlements::list),
        ),
        (
            "/v1/users/{client_user_id}/entitlements/media/{media_content_key}",
            Method::PUT,
            web::put().to(entitlements::grant_media),
        ),
        (
            "/v1/users/{client_user_id}/entitlements/media/{media_content_key}",
            Method::DELETE,
            web::delete().to(entitlements::revoke_media),
        ),
        (
            "/v1/users/{client_user_id}/entitlements/channel/{channel_key}",
            Method::PUT,
            web::put().to(entitlements::grant_channel),
        ),
        (
            "/v1/users/{client_user_id}/entitlements/channel/{channel_key}",
            Method::DELETE,
            web::delete().to(entitlements::revoke_channel),
        ),
        (
            "/v1/users/{client_user_id}/export",
            Method::GET,
            web::get().to(export::user),
        ),
        (
            "/v1/media/{media_content_key}/export",
            Method::GET,
            web::get().to(export::media),
        ),
        ("/kollus/play", Method::POST, web::post().to(playback::play)),
        ("/kollus/drm", Method::POST, web::post().to(playback::drm)),
        ("/openapi.json", Method::GET, web::get().to(openapi)),
    ]
}
