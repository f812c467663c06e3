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

mod charts;
mod i18n;
mod pages;
mod session;
mod store;

use std::net::IpAddr;
use std::num::NonZeroU32;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse};
use deadpool_postgres::Pool;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use kollus_common::domain::{ClientUserId, MediaContentKey};
use maud::Markup;
use serde::Deserialize;
use time::OffsetDateTime;
use time_tz::Tz;

use self::i18n::{UiLang, LANG_COOKIE};
use self::pages::Frame;
use self::session::{Agent, LOGIN_CSRF_COOKIE, SESSION_COOKIE};
use crate::auth::{ApiScope, KeyRing};
use crate::configuration::{ConsoleSettings, Lang};
use crate::export::parts::{USER_CSV, USER_PARTS};
use crate::export::stream::{stream, Format};
use crate::playback::policy::Reason;

/// The stylesheet, the console's only other file.
const STYLE: &str = include_str!("style.css");

/// Sign-in attempts allowed per client address: a burst of 10, then one every 6 seconds.
const SIGN_INS_PER_MINUTE: u32 = 10;

/// What the console needs, as its own `web::Data`.
pub struct Console {
    pub pool: Pool,
    pub keys: KeyRing,
    pub tz: &'static Tz,
    pub session_hours: u32,
    pub insecure_cookie: bool,
    /// The language refused viewers read (`PLAY_MESSAGE_LANG`), to show what they saw.
    pub message_lang: Lang,
    sign_ins: DefaultKeyedRateLimiter<IpAddr>,
}

impl Console {
    pub fn new(
        pool: Pool,
        keys: KeyRing,
        settings: &ConsoleSettings,
        message_lang: Lang,
    ) -> anyhow::Result<Self> {
        let tz = time_tz::timezones::get_by_name(&settings.time_zone).ok_or_else(|| {
            anyhow::anyhow!(
                "CONSOLE_TIME_ZONE {:?} is no IANA time zone",
                settings.time_zone
            )
        })?;
        let per_minute = NonZeroU32::new(SIGN_INS_PER_MINUTE).expect("a positive constant");
        Ok(Self {
            pool,
            keys,
            tz,
            session_hours: settings.session_hours,
            insecure_cookie: settings.insecure_cookie,
            message_lang,
            sign_ins: RateLimiter::keyed(Quota::per_minute(per_minute)),
        })
    }
}

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
        .route("/", web::get().to(search))
        .route("/style.css", web::get().to(style))
        .route("/login", web::get().to(login_form))
        .route("/login", web::post().to(login))
        .route("/logout", web::post().to(logout))
        .route("/users/{client_user_id}", web::get().to(user))
        .route(
            "/users/{client_user_id}/media/{media_content_key}",
            web::get().to(refund),
        )
        .route("/media/{media_content_key}", web::get().to(video))
        .route(
            "/users/{client_user_id}/export.csv",
            web::get().to(export_csv),
        )
        .route(
            "/users/{client_user_id}/export.jsonl",
            web::get().to(export_jsonl),
        )
}

/// Why a page is not the one asked for.
enum Refusal {
    /// No live session: to the sign-in page.
    SignIn,
    NotFound(&'static str, &'static str),
    BadRequest(String),
    Failed(anyhow::Error),
}

impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Self {
        Self::Failed(e)
    }
}

type Page = Result<HttpResponse, Refusal>;

/// The frame's facts for this request, and the language cookie when the switch was used.
fn frame<'a>(req: &'a HttpRequest, console: &Console, agent: Option<&'a Agent>) -> Frame<'a> {
    Frame {
        lang: UiLang::of(req).0,
        agent,
        path: req.uri().path(),
        tz: console.tz,
    }
}

fn html(req: &HttpRequest, console: &Console, status: StatusCode, page: Markup) -> HttpResponse {
    let mut res = HttpResponse::build(status);
    res.content_type("text/html; charset=utf-8");
    if let (lang, true) = UiLang::of(req) {
        res.append_header((
            header::SET_COOKIE,
            session::set_cookie(
                LANG_COOKIE,
                lang.code(),
                365 * 86_400,
                console.insecure_cookie,
            ),
        ));
    }
    res.body(page.into_string())
}

fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// Answers a refusal as a page (the sign-in redirect, 404, 400, 500), never a panic.
fn answer(req: &HttpRequest, console: &Console, page: Page) -> HttpResponse {
    let lang = UiLang::of(req).0;
    let f = frame(req, console, None);
    match page {
        Ok(res) => res,
        Err(Refusal::SignIn) => see_other("/console/login"),
        Err(Refusal::NotFound(ko, en)) => html(
            req,
            console,
            StatusCode::NOT_FOUND,
            pages::notice(&f, lang.t("없음", "Not found"), lang.t(ko, en)),
        ),
        Err(Refusal::BadRequest(why)) => html(
            req,
            console,
            StatusCode::BAD_REQUEST,
            pages::notice(&f, lang.t("잘못된 요청", "Bad request"), &why),
        ),
        Err(Refusal::Failed(e)) => {
            tracing::error!(error = format!("{e:#}"), "console page failed");
            html(
                req,
                console,
                StatusCode::INTERNAL_SERVER_ERROR,
                pages::notice(
                    &f,
                    lang.t("오류", "Error"),
                    lang.t(
                        "페이지를 만들지 못했습니다. 잠시 후 다시 시도하세요.",
                        "The page could not be built; try again shortly.",
                    ),
                ),
            )
        }
    }
}

async fn signed_in(req: &HttpRequest, console: &Console) -> Result<Agent, Refusal> {
    session::find(&console.pool, &console.keys, req)
        .await?
        .ok_or(Refusal::SignIn)
}

async fn style() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .body(STYLE)
}

/// `GET /console/login`: the form, with a fresh double-submit CSRF token.
async fn login_form(req: HttpRequest, console: web::Data<Console>) -> HttpResponse {
    login_page(&req, &console, StatusCode::OK, None)
}

fn login_page(
    req: &HttpRequest,
    console: &Console,
    status: StatusCode,
    error: Option<&str>,
) -> HttpResponse {
    let csrf = session::random_token();
    let f = frame(req, console, None);
    let mut res = html(req, console, status, pages::login(&f, &csrf, error));
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        LOGIN_CSRF_COOKIE,
        &csrf,
        3600,
        console.insecure_cookie,
    )) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

#[derive(Deserialize)]
struct LoginForm {
    key: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /console/login`: a key with the `console` scope opens a session.
async fn login(
    req: HttpRequest,
    console: web::Data<Console>,
    form: web::Form<LoginForm>,
) -> HttpResponse {
    let lang = UiLang::of(&req).0;
    let peer = req.peer_addr().map(|a| a.ip());
    if let Some(ip) = peer {
        if console.sign_ins.check_key(&ip).is_err() {
            tracing::warn!(peer = %ip, "console sign-in refused: too many attempts");
            return login_page(
                &req,
                &console,
                StatusCode::TOO_MANY_REQUESTS,
                Some(lang.t(
                    "로그인 시도가 너무 많습니다. 잠시 후 다시 시도하세요.",
                    "Too many sign-in attempts; wait a minute.",
                )),
            );
        }
    }
    let expected = session::cookie(&req, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if !session::same_token(&form.csrf_token, &expected) {
        tracing::warn!(peer = ?peer, "console sign-in refused: no valid CSRF token");
        return login_page(
            &req,
            &console,
            StatusCode::FORBIDDEN,
            Some(lang.t(
                "양식이 만료되었습니다. 다시 시도하세요.",
                "The form expired; try again.",
            )),
        );
    }
    let Some((caller, print)) = console.keys.caller_by_key(form.key.trim()) else {
        // Never the key: only that one was refused, and from where.
        tracing::warn!(peer = ?peer, "console sign-in refused: no such API key");
        return login_page(
            &req,
            &console,
            StatusCode::UNAUTHORIZED,
            Some(lang.t("알 수 없는 키입니다.", "Unknown key.")),
        );
    };
    if caller.require(ApiScope::Console).is_err() {
        tracing::warn!(key = caller.name(), peer = ?peer, "console sign-in refused: the key lacks the console scope");
        return login_page(
            &req,
            &console,
            StatusCode::FORBIDDEN,
            Some(lang.t(
                "이 키에는 console 권한이 없습니다.",
                "This key lacks the console scope.",
            )),
        );
    }
    let page = async {
        let (id, _) =
            session::open(&console.pool, caller.name(), &print, console.session_hours).await?;
        tracing::info!(key = caller.name(), "console sign-in");
        let max_age = i64::from(console.session_hours) * 3600;
        Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/console/"))
            .append_header((
                header::SET_COOKIE,
                session::set_cookie(SESSION_COOKIE, &id, max_age, console.insecure_cookie),
            ))
            .append_header((
                header::SET_COOKIE,
                session::set_cookie(LOGIN_CSRF_COOKIE, "", 0, console.insecure_cookie),
            ))
            .finish())
    }
    .await;
    answer(&req, &console, page)
}

#[derive(Deserialize)]
struct CsrfForm {
    #[serde(default)]
    csrf_token: String,
}

/// `POST /console/logout`: deletes the session (with its CSRF token).
async fn logout(
    req: HttpRequest,
    console: web::Data<Console>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let page = async {
        let agent = signed_in(&req, &console).await?;
        if !session::same_token(&form.csrf_token, &agent.csrf_token) {
            tracing::warn!(
                key = agent.key_name,
                "console sign-out refused: bad CSRF token"
            );
            return Ok(HttpResponse::Forbidden()
                .content_type("text/plain; charset=utf-8")
                .body("CSRF token missing or wrong"));
        }
        session::close(&console.pool, &req).await?;
        tracing::info!(key = agent.key_name, "console sign-out");
        Ok(HttpResponse::SeeOther()
            .insert_header((header::LOCATION, "/console/login"))
            .append_header((
                header::SET_COOKIE,
                session::set_cookie(SESSION_COOKIE, "", 0, console.insecure_cookie),
            ))
            .finish())
    }
    .await;
    answer(&req, &console, page)
}

#[derive(Deserialize)]
struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `GET /console/?q=`: a client user id (exact) or a media content key.
async fn search(
    req: HttpRequest,
    console: web::Data<Console>,
    query: web::Query<SearchQuery>,
) -> HttpResponse {
    let page = async {
        let agent = signed_in(&req, &console).await?;
        let q = query.q.trim();
        let f = frame(&req, &console, Some(&agent));
        if q.is_empty() {
            return Ok(html(
                &req,
                &console,
                StatusCode::OK,
                pages::search(&f, "", None),
            ));
        }
        let client = console.pool.get().await.map_err(anyhow::Error::from)?;
        let user = match ClientUserId::parse(q) {
            Ok(u) if store::user_known(&client, u.as_str()).await? => Some(u.as_str().to_owned()),
            _ => None,
        };
        let media = match MediaContentKey::parse(q) {
            Ok(m) if store::media_known(&client, m.as_str()).await? => Some(m.as_str().to_owned()),
            _ => None,
        };
        // One match: go straight there.
        match (&user, &media) {
            (Some(u), None) => return Ok(see_other(&pages::user_href(u))),
            (None, Some(m)) => return Ok(see_other(&pages::media_href(m))),
            _ => {}
        }
        let found = pages::Found { user, media };
        Ok(html(
            &req,
            &console,
            StatusCode::OK,
            pages::search(&f, q, Some(&found)),
        ))
    }
    .await;
    answer(&req, &console, page)
}

fn parse_user(raw: String) -> Result<ClientUserId, Refusal> {
    ClientUserId::parse(raw).map_err(|e| Refusal::BadRequest(format!("client_user_id {e}")))
}

fn parse_media(raw: String) -> Result<MediaContentKey, Refusal> {
    MediaContentKey::parse(raw).map_err(|e| Refusal::BadRequest(format!("media_content_key {e}")))
}

/// `GET /console/users/{client_user_id}`: every video the user watched; the view is recorded.
async fn user(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
) -> HttpResponse {
    let page = async {
        let agent = signed_in(&req, &console).await?;
        let user = parse_user(path.into_inner())?;
        let client = console.pool.get().await.map_err(anyhow::Error::from)?;
        let sessions = store::user_sessions(&client, user.as_str()).await?;
        let entitlements = store::entitlements(&client, user.as_str()).await?;
        if sessions.is_empty() && entitlements.is_empty() {
            return Err(Refusal::NotFound(
                "이 사용자에 대해 가진 기록이 없습니다.",
                "We hold nothing about this user.",
            ));
        }
        store::record_view(&client, &agent.key_name, user.as_str(), None).await?;
        let views = store::views(&client, user.as_str()).await?;
        let f = frame(&req, &console, Some(&agent));
        let p = pages::UserPage {
            user: user.as_str(),
            sessions: &sessions,
            entitlements: &entitlements,
            views: &views,
            now: OffsetDateTime::now_utc(),
        };
        Ok(html(&req, &console, StatusCode::OK, pages::user(&f, &p)))
    }
    .await;
    answer(&req, &console, page)
}

/// `GET /console/users/{client_user_id}/media/{media_content_key}`: the refund view; the view
/// is recorded.
async fn refund(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let page = async {
        let agent = signed_in(&req, &console).await?;
        let (user, media) = path.into_inner();
        let (user, media) = (parse_user(user)?, parse_media(media)?);
        let client = console.pool.get().await.map_err(anyhow::Error::from)?;
        let (u, m) = (user.as_str(), media.as_str());
        let sessions = store::user_media_sessions(&client, u, m).await?;
        let decisions = store::decisions(&client, u, m).await?;
        let changes = store::changes(&client, u, m).await?;
        if sessions.is_empty() && decisions.is_empty() && changes.is_empty() {
            return Err(Refusal::NotFound(
                "이 사용자와 영상에 대해 가진 기록이 없습니다.",
                "We hold nothing about this user and video.",
            ));
        }
        let name = match store::catalog_entry(&client, m).await? {
            Some((title, filename)) => title.or(filename).unwrap_or_default(),
            None => String::new(),
        };
        store::record_view(&client, &agent.key_name, u, Some(m)).await?;
        let views = store::views(&client, u).await?;
        let lang = console.message_lang;
        let message = move |label: &str| {
            Reason::ALL
                .into_iter()
                .find(|r| r.label() == label)
                .map(|r| r.message(lang))
                .unwrap_or("")
        };
        let f = frame(&req, &console, Some(&agent));
        let p = pages::RefundPage {
            user: u,
            media: m,
            name,
            sessions: &sessions,
            decisions: &decisions,
            changes: &changes,
            views: &views,
            message: &message,
        };
        Ok(html(&req, &console, StatusCode::OK, pages::refund(&f, &p)))
    }
    .await;
    answer(&req, &console, page)
}

/// `GET /console/media/{media_content_key}`: a video's viewers, completion and drop-off (no
/// one user's data, so no audit row).
async fn video(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
) -> HttpResponse {
    let page = async {
        let agent = signed_in(&req, &console).await?;
        let media = parse_media(path.into_inner())?;
        let client = console.pool.get().await.map_err(anyhow::Error::from)?;
        let catalog = store::catalog_entry(&client, media.as_str()).await?;
        let viewers = store::viewers(&client, media.as_str()).await?;
        if catalog.is_none() && viewers.is_empty() {
            return Err(Refusal::NotFound(
                "이 영상에 대해 가진 기록이 없습니다.",
                "We hold nothing about this video.",
            ));
        }
        let name = catalog
            .and_then(|(title, filename)| title.or(filename))
            .unwrap_or_default();
        let f = frame(&req, &console, Some(&agent));
        let p = pages::VideoPage {
            media: media.as_str(),
            name,
            viewers: &viewers,
        };
        Ok(html(&req, &console, StatusCode::OK, pages::video(&f, &p)))
    }
    .await;
    answer(&req, &console, page)
}

/// `GET /console/users/{client_user_id}/export.csv`: the user export's sessions as CSV, the
/// same stream as `GET /v1/users/{id}/export` with `Accept: text/csv`; recorded as a view.
async fn export_csv(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
) -> HttpResponse {
    export_user(req, console, path.into_inner(), Format::Csv).await
}

/// `GET /console/users/{client_user_id}/export.jsonl`: the user export as JSON Lines (without
/// the archive's raw reports, which the API's export adds when `ARCHIVE_DIR` is set).
async fn export_jsonl(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
) -> HttpResponse {
    export_user(req, console, path.into_inner(), Format::Ndjson).await
}

async fn export_user(
    req: HttpRequest,
    console: web::Data<Console>,
    raw: String,
    format: Format,
) -> HttpResponse {
    let page = async {
        let agent = signed_in(&req, &console).await?;
        let user = parse_user(raw)?;
        let client = console.pool.get().await.map_err(anyhow::Error::from)?;
        store::record_view(&client, &agent.key_name, user.as_str(), None).await?;
        tracing::info!(key = agent.key_name, ?format, "console user export");
        let name = match format {
            Format::Csv => "export.csv",
            Format::Ndjson => "export.jsonl",
        };
        let mut res = stream(
            &console.pool,
            user.as_str().to_owned(),
            USER_PARTS,
            format,
            USER_CSV,
            None,
        );
        // A file name of our own (never the user id, which may hold anything).
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"user-{name}\"")) {
            res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
        }
        Ok(res)
    }
    .await;
    answer(&req, &console, page)
}
