//! The support console (issue 21): server-rendered pages at `/console/` for the agent who
//! answers "I barely watched this, refund me" (SPEC.md section 3). Search a user or a video; a
//! user's videos with their coverage and courses with their refund answer; the refund view (the
//! refund answer of each course listing the video, then every session's blocks as a heatmap,
//! badges, the play and DRM decisions and the entitlement changes); a user's course, lesson by
//! lesson; a video's completion.
//!
//! Sign-in takes an API key with the `console` scope, posted once; the session lives in
//! PostgreSQL (`session`). Every sign-in (and refusal), search, page view of a user's data and
//! download (with its reason) is written to the access record (`access_log::record`) before it
//! is answered, and a user's pages list every access to that user, console and API
//! (`access_log::read`); the monthly review of the record (`review`) is for a key that also
//! holds `audit`. Pages are HTML, so none is in the OpenAPI document; every answer
//! carries a strict CSP ([`CSP`]: no inline script or style anywhere, forms to us only, no
//! `<base>`, no framing, no plugins), `X-Frame-Options: DENY`, `Referrer-Policy: no-referrer`
//! and `Cache-Control: no-store`.
//!
//! Here only the route table, [`routes`], which says of each route whether an agent must be
//! signed in: `gate` wraps those in the sign-in middleware, so a handler receives the agent.
//! Handlers in `sign_in` (sign-in, sign-out), `views` (the pages), `download` (the
//! exports) and `review` (the access record's monthly review, page and CSV), over `reply`
//! (answers and refusals), `gate` (the middlewares), `state` (the feature's `web::Data`),
//! `session`, `store` (SQL), `model` (what each page shows, decided from the rows), `courses`
//! (a user's courses and the refund answer's sentence), `pages` (maud templates), `charts`
//! (SVG) and `i18n`. Nothing here imports another feature's handlers: entitlements' and
//! export's models, playback's policy (the viewer's messages), and the courses' answer
//! (`courses::user_course`, the computation the API answers with).

mod cell;
mod charts;
mod courses;
mod download;
mod gate;
mod i18n;
mod model;
mod pages;
mod reply;
mod review;
mod session;
mod sign_in;
mod state;
mod store;
mod views;

use actix_web::http::{header, Method};
use actix_web::middleware::{from_fn, DefaultHeaders};
use actix_web::{web, FromRequest, Handler, HttpResponse, Responder};

pub use self::state::Console;

/// Every answer's `Content-Security-Policy`: our own files only (no inline script or style),
/// forms posted only to us, no `<base>` to re-point relative links, no framing, no plugins.
pub const CSP: &str = "default-src 'self'; form-action 'self'; base-uri 'none'; \
                       frame-ancestors 'none'; object-src 'none'";

/// How long one statement of a console page may run (on the console's own pool): a page an agent
/// gave up on, or one blocked in the database, frees its connection by then (a 503 page).
pub const STATEMENT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// The stylesheet, the console's only other file.
const STYLE: &str = include_str!("style.css");

/// Who may use a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Before any session: sign-in and the stylesheet.
    Anyone,
    /// A signed-in agent only; the handler receives it.
    Agent,
}

/// One of the console's routes, under `/console`.
pub struct ConsoleRoute {
    pub method: Method,
    pub path: &'static str,
    pub access: Access,
    route: actix_web::Route,
}

fn at<F, Args>(access: Access, method: Method, path: &'static str, handler: F) -> ConsoleRoute
where
    F: Handler<Args>,
    Args: FromRequest + 'static,
    F::Output: Responder + 'static,
{
    ConsoleRoute {
        route: web::method(method.clone()).to(handler),
        method,
        path,
        access,
    }
}

/// Every route of the console: the scope is built from this list, and a test requests each
/// `Access::Agent` route without a session.
pub fn routes() -> Vec<ConsoleRoute> {
    use Access::{Agent, Anyone};
    vec![
        at(Anyone, Method::GET, "/style.css", style),
        at(Anyone, Method::GET, "/login", sign_in::login_form),
        at(Anyone, Method::POST, "/login", sign_in::login),
        at(Agent, Method::POST, "/logout", sign_in::logout),
        at(Agent, Method::GET, "/", views::search),
        at(Agent, Method::GET, "/users/{client_user_id}", views::user),
        at(
            Agent,
            Method::GET,
            "/users/{client_user_id}/media/{media_content_key}",
            views::refund,
        ),
        at(
            Agent,
            Method::GET,
            "/media/{media_content_key}",
            views::video,
        ),
        at(
            Agent,
            Method::GET,
            "/users/{client_user_id}/courses/{course_id}",
            views::course,
        ),
        at(
            Agent,
            Method::GET,
            "/users/{client_user_id}/export.csv",
            download::ask_reason,
        ),
        at(
            Agent,
            Method::GET,
            "/users/{client_user_id}/export.jsonl",
            download::ask_reason,
        ),
        at(
            Agent,
            Method::POST,
            "/users/{client_user_id}/export.csv",
            download::export_csv,
        ),
        at(
            Agent,
            Method::POST,
            "/users/{client_user_id}/export.jsonl",
            download::export_jsonl,
        ),
        at(Agent, Method::GET, "/review", review::page),
        at(Agent, Method::GET, "/review.csv", review::csv),
    ]
}

/// The console's routes, under `/console`, with its headers on every answer: those for an
/// agent behind `gate::agent_required`, refusals shown as pages by `gate::refusals_as_pages`.
pub fn scope() -> actix_web::Scope<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    let (mut open, mut signed_in) = (web::scope("/console"), web::scope(""));
    for r in routes() {
        match r.access {
            Access::Anyone => open = open.route(r.path, r.route),
            Access::Agent => signed_in = signed_in.route(r.path, r.route),
        }
    }
    open.service(signed_in.wrap(from_fn(gate::agent_required)))
        .wrap(from_fn(gate::refusals_as_pages))
        .wrap(
            DefaultHeaders::new()
                .add((header::CONTENT_SECURITY_POLICY, CSP))
                .add((header::X_FRAME_OPTIONS, "DENY"))
                .add((header::REFERRER_POLICY, "no-referrer"))
                .add((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
                .add((header::CACHE_CONTROL, "no-store")),
        )
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(STYLE)
}
