//! The support console (issue 21): server-rendered pages at `/console/` for the agent who
//! answers "I barely watched this, refund me" (SPEC.md section 3). Search a user or a video; a
//! user's videos with their coverage; the refund view (every session's blocks as a heatmap,
//! badges, the play and DRM decisions and the entitlement changes); a video's completion.
//!
//! Sign-in takes an API key with the `console` scope, posted once; the session lives in
//! PostgreSQL (`session`). Every page view of a user's data is recorded (`console_views`) and
//! shown on that user's pages. Pages are HTML, so none is in the OpenAPI document; every answer
//! carries a strict CSP (`default-src 'self'`: no inline script or style anywhere), `X-Frame-
//! Options: DENY`, `Referrer-Policy: no-referrer` and `Cache-Control: no-store`.
//!
//! Here only the route table; handlers in `sign_in` (sign-in, sign-out), `views` (the pages) and
//! `download` (the exports), over `reply` (answers and refusals as pages), `state` (the
//! feature's `web::Data`), `session`, `store` (SQL), `pages` (maud templates), `charts` (SVG)
//! and `i18n`. Nothing here imports another feature's handlers: entitlements' and export's
//! models, playback's policy (the viewer's messages).

mod charts;
mod download;
mod i18n;
mod pages;
mod reply;
mod session;
mod sign_in;
mod state;
mod store;
mod views;

use actix_web::http::header;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpResponse};

pub use self::state::Console;

/// The stylesheet, the console's only other file.
const STYLE: &str = include_str!("style.css");

/// The console's routes, under `/console`, with its headers on every answer.
pub fn scope() -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    web::scope("/console")
        .wrap(
            DefaultHeaders::new()
                .add((header::CONTENT_SECURITY_POLICY, "default-src 'self'"))
                .add((header::X_FRAME_OPTIONS, "DENY"))
                .add((header::REFERRER_POLICY, "no-referrer"))
                .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .add((header::CACHE_CONTROL, "no-store")),
        )
        .route("/", web::get().to(views::search))
        .route("/style.css", web::get().to(style))
        .route("/login", web::get().to(sign_in::login_form))
        .route("/login", web::post().to(sign_in::login))
        .route("/logout", web::post().to(sign_in::logout))
        .route("/users/{client_user_id}", web::get().to(views::user))
        .route(
            "/users/{client_user_id}/media/{media_content_key}",
            web::get().to(views::refund),
        )
        .route("/media/{media_content_key}", web::get().to(views::video))
        .route(
            "/users/{client_user_id}/export.csv",
            web::get().to(download::export_csv),
        )
        .route(
            "/users/{client_user_id}/export.jsonl",
            web::get().to(download::export_jsonl),
        )
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(STYLE)
}
