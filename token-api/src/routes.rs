//! Every feature's routes and the OpenAPI document, both from one list of handlers (`api!`):
//! a route's path and method are written once, in its handler's `#[utoipa::path]`. The document
//! is derived from the same handlers and their types ([`ApiDoc`], utoipa); a test holds it to
//! its reviewed snapshot (`insta`, `tests/snapshots/openapi.snap`). Top layer: it imports the
//! features' handlers; nothing imports it but `startup`.

use crate::problem::method_not_allowed;
use crate::tokens::request::Limits;
use crate::{access_log, courses, entitlements, erasure, export, history, playback, tokens};

use actix_web::http::Method;
use actix_web::{web, HttpResponse};

/// The API's one list of handlers, each named once: it derives both the document (`paths` of
/// the struct given) and the router ([`api_routes`]), which serves each handler at the path and
/// with the method of its `#[utoipa::path]`.
macro_rules! api {
    ($(#[$attr:meta])* pub struct $doc:ident; $($($handler:ident)::+),* $(,)?) => {
        $(#[$attr])*
        #[openapi(paths($($($handler)::+),*))]
        pub struct $doc;

        /// Every API route, in the order of the list.
        pub fn api_routes() -> Vec<ApiRoute> {
            let mut routes = Vec::new();
            $(routes.extend({
                #[derive(utoipa::OpenApi)]
                #[openapi(paths($($handler)::+))]
                struct Operation;
                ApiRoute::of::<Operation, _, _>($($handler)::+)
            });)*
            routes
        }
    };
}

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
/// the server refuses. With the default settings it is [`derived`] itself.
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

api! {
    /// The document derived from the handlers and types (`#[utoipa::path]` on each handler,
    /// `ToSchema` on each body); its snapshot is held by a test.
    #[derive(utoipa::OpenApi)]
    #[openapi(
        info(
            title = "kollus-pipeline token-api",
            version = "1.0.0",
            description = "Signed Kollus playback tokens and player URLs for the product app, the read API for watch progress, watch history and the media catalog, entitlements, exports, and the answers to Kollus's play and DRM callbacks. Every /v1 endpoint needs `Authorization: Bearer <key>` (TOKEN_API_KEYS) whose key has the scope the operation's `security` names (else 403 naming it); Kollus's /kollus callbacks carry PLAY_CALLBACK_SECRET instead. Errors are RFC 7807 `application/problem+json`; validation errors list every invalid field. Operations endpoints, not listed here: /healthz, /readyz, /metrics (Prometheus)."
        ),
        servers((url = "http://127.0.0.1:8081")),
        security(("bearer" = [])),
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
            access_log::verify::Report,
            access_log::verify::ChainReport,
            access_log::verify::Break,
            access_log::verify::BreakKind,
            erasure::ErasureBody,
            erasure::model::Basis,
            erasure::Accepted,
            erasure::ErasureReceipt,
            erasure::Kept,
            courses::model::Course,
            courses::model::CourseBody,
            courses::model::CompletionBody,
            courses::model::LessonBody,
            courses::model::Lesson,
            courses::model::Completion,
            courses::model::Count,
            courses::model::Refund,
            courses::model::RefundRow,
            courses::UserCourse,
            courses::progress::LessonProgress,
            courses::progress::RefundAnswer,
        )),
        modifiers(&SecuritySchemes)
    )]
    pub struct ApiDoc;

    // The handlers: each path and method is in its `#[utoipa::path]`.
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
    entitlements::grant_course,
    entitlements::revoke_course,
    entitlements::list,
    courses::put,
    courses::get,
    courses::delete,
    courses::user,
    export::user,
    export::media,
    export::course::course,
    access_log::verify_chain,
    erasure::erase,
    erasure::receipt,
}

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
                    .description(Some("A key from TOKEN_API_KEYS (`name[scope+scope]:key,...`). Each operation's `security` names the scope it needs: `tokens`, `read`, `entitlements`, `export`, `audit`, `erase` (`console` is for the support console; `tokens:playcallback_ignore` lets a `tokens` key sign `playcallback_ignore: true`). A key given without scopes has every scope but `console`, `audit`, `erase` and `tokens:playcallback_ignore`; a key without the scope an operation needs gets 403 naming it."))
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

/// One operation as served: the path and method its `#[utoipa::path]` states, and its handler.
pub struct ApiRoute {
    pub path: String,
    pub method: Method,
    pub route: actix_web::Route,
}

impl ApiRoute {
    /// The routes of `handler`, at the path and with the methods of `D`, a document of that
    /// handler alone (so both come from its `#[utoipa::path]`, as in [`ApiDoc`]).
    fn of<D, F, Args>(handler: F) -> Vec<Self>
    where
        D: utoipa::OpenApi,
        F: actix_web::Handler<Args>,
        Args: actix_web::FromRequest + 'static,
        F::Output: actix_web::Responder + 'static,
    {
        let mut routes = Vec::new();
        for (path, item) in D::openapi().paths.paths {
            let operations = [
                (Method::GET, &item.get),
                (Method::PUT, &item.put),
                (Method::POST, &item.post),
                (Method::DELETE, &item.delete),
                (Method::OPTIONS, &item.options),
                (Method::HEAD, &item.head),
                (Method::PATCH, &item.patch),
                (Method::TRACE, &item.trace),
            ];
            for (method, _) in operations.into_iter().filter(|(_, op)| op.is_some()) {
                routes.push(Self {
                    path: path.clone(),
                    route: web::route().method(method.clone()).to(handler.clone()),
                    method,
                });
            }
        }
        routes
    }
}

/// Registers every API route: one resource per path, with every method it takes, and 405 naming
/// them (`Allow`) for any other.
pub fn configure(cfg: &mut web::ServiceConfig) {
    let mut by_path: Vec<(String, Vec<ApiRoute>)> = Vec::new();
    for route in api_routes() {
        match by_path.iter_mut().find(|(p, _)| *p == route.path) {
            Some((_, routes)) => routes.push(route),
            None => by_path.push((route.path.clone(), vec![route])),
        }
    }
    for (path, routes) in by_path {
        let allow = routes.iter().map(|r| r.method.clone()).collect();
        let mut resource = web::resource(path);
        for r in routes {
            resource = resource.route(r.route);
        }
        cfg.service(resource.default_service(web::to(method_not_allowed(allow))));
    }
}
