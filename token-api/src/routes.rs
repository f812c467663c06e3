//! Every feature's routes, registered from one list ([`api_routes`]) that a test holds equal
//! to `openapi.json`. Top layer: it imports the features' handlers; nothing imports it but
//! `startup`.

use crate::tokens::request::Limits;
use crate::{entitlements, export, history, playback, tokens};

use actix_web::http::Method;
use actix_web::{web, HttpResponse};

/// The OpenAPI document of this API (`token-api/openapi.json`), as written for the default
/// settings.
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The document as served: the limits that are settings (`TOKEN_MAX_MEDIA`,
/// `TOKEN_MAX_EXPIRES_IN`) are this server's, so a client generated from it asks for nothing
/// the server refuses. With the default settings it is `openapi.json` itself.
pub struct ServedDocument(String);

impl ServedDocument {
    pub fn new(limits: &Limits) -> Self {
        let mut doc: serde_json::Value =
            serde_json::from_str(OPENAPI).expect("openapi.json is JSON (a test holds it so)");
        let request = &mut doc["components"]["schemas"]["TokenRequest"]["properties"];
        request["media"]["maxItems"] = limits.max_media.into();
        request["expires_in"]["maximum"] = limits.max_expires_in.into();
        Self(serde_json::to_string(&doc).expect("a JSON value serializes"))
    }
}

/// `GET /openapi.json`
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
