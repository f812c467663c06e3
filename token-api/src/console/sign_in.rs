//! Sign-in and sign-out: an API key with the `console` scope, posted once (never in a URL or a
//! page), opens a session; attempts are rate-limited per client address; refusals are logged at
//! WARN with the key's name or the address, never the key. Both forms carry a CSRF token.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::i18n::UiLang;
use super::pages;
use super::reply::{frame, html, see_other, Page};
use super::session::{self, Agent, LOGIN_CSRF_COOKIE, SESSION_COOKIE};
use super::state::Console;
use crate::auth::ApiScope;

/// Client addresses remembered before those with no recent attempt are forgotten.
const FORGET_ABOVE: usize = 10_000;

/// `GET /console/login`: the form, with a fresh double-submit CSRF token.
/// A database that fails is that refusal (a 503 while it is not answering), not a form
/// whose sign-in would fail.
pub async fn login_form(req: HttpRequest, console: web::Data<Console>) -> Page {
    // Already signed in: straight to the search.
    if session::find(&console.pool, &console.keys, &req)
        .await?
        .is_some()
    {
        return Ok(see_other("/console/"));
    }
    Ok(login_page(&req, &console, StatusCode::OK, None))
}

pub fn login_page(
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
pub struct LoginForm {
    key: String,
    #[serde(default)]
    csrf_token: String,
}

/// `POST /console/login`: a key with the `console` scope opens a session.
pub async fn login(
    req: HttpRequest,
    console: web::Data<Console>,
    form: web::Form<LoginForm>,
) -> Page {
    let lang = UiLang::of(&req).0;
    let peer = req.peer_addr().map(|a| a.ip());
    if let Some(ip) = peer {
        // Addresses whose attempts are all long past are forgotten, so the map stays small.
        if console.sign_ins.len() > FORGET_ABOVE {
            console.sign_ins.retain_recent();
        }
        if console.sign_ins.check_key(&ip).is_err() {
            tracing::warn!(peer = %ip, "console sign-in refused: too many attempts");
            return Ok(login_page(
                &req,
                &console,
                StatusCode::TOO_MANY_REQUESTS,
                Some(lang.t(
                    "로그인 시도가 너무 많습니다. 잠시 후 다시 시도하세요.",
                    "Too many sign-in attempts; wait a minute.",
                )),
            ));
        }
    }
    let expected = session::cookie(&req, LOGIN_CSRF_COOKIE).unwrap_or_default();
    if !session::same_token(&form.csrf_token, &expected) {
        tracing::warn!(peer = ?peer, "console sign-in refused: no valid CSRF token");
        return Ok(login_page(
            &req,
            &console,
            StatusCode::FORBIDDEN,
            Some(lang.t(
                "양식이 만료되었습니다. 다시 시도하세요.",
                "The form expired; try again.",
            )),
        ));
    }
    let Some((caller, print)) = console.keys.caller_by_key(form.key.trim()) else {
        // Never the key: only that one was refused, and from where.
        tracing::warn!(peer = ?peer, "console sign-in refused: no such API key");
        return Ok(login_page(
            &req,
            &console,
            StatusCode::UNAUTHORIZED,
            Some(lang.t("알 수 없는 키입니다.", "Unknown key.")),
        ));
    };
    if caller.require(ApiScope::Console).is_err() {
        tracing::warn!(key = caller.name(), peer = ?peer, "console sign-in refused: the key lacks the console scope");
        return Ok(login_page(
            &req,
            &console,
            StatusCode::FORBIDDEN,
            Some(lang.t(
                "이 키에는 console 권한이 없습니다.",
                "This key lacks the console scope.",
            )),
        ));
    }
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

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf_token: String,
}

/// `POST /console/logout`: deletes the session (with its CSRF token).
pub async fn logout(
    req: HttpRequest,
    console: web::Data<Console>,
    agent: web::ReqData<Agent>,
    form: web::Form<CsrfForm>,
) -> Page {
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
