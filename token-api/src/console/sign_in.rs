//! Sign-in and sign-out: an API key with the `console` scope, posted once (never in a URL or a
//! page), opens a session and ends the one the browser held. Failed sign-ins are limited per
//! client address (`TRUSTED_PROXIES` decides who the client is; IPv6 by /64): successes use no
//! quota, and an address past its failures is refused before any key is compared. Each refusal
//! is counted by reason and logged at WARN with the client's address (and the key's name when
//! there is one), never the key; a sign-in is logged at INFO with the address. Both forms
//! carry a CSRF token: the sign-in form's is signed for the client's address bucket
//! (`session::Sessions::login_token`), so a form served to one client and posted from another
//! is refused (403, counted as `csrf`).
//!
//! The access record holds every sign-in (`sign_in`, with the new session's hash, written in the
//! session's own transaction) and every refusal (`sign_in_refused`, target the refusal's reason,
//! key name `-` unless a known key lacked `console`), with the client's address, up to
//! `state::REFUSALS_RECORDED_PER_MINUTE` per client and `REFUSALS_RECORDED_PER_MINUTE_IN_ALL`
//! from all clients a minute (the rest counted, logged, and folded into the next row's `count`). A
//! refusal whose row cannot be written is the console's error page instead of the form.

use std::net::IpAddr;
use std::time::Instant;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use time::OffsetDateTime;

use super::i18n::UiLang;
use super::pages;
use super::reply::{frame, html, see_other, Page};
use super::session::{self, Agent};
use super::state::Console;
use crate::access_log::record::{AccessLog, Action, Entry};
use crate::auth::ApiScope;
use crate::metrics::SignInFailure;

/// `GET /console/login`: the form, with a fresh CSRF token signed for this client (in the form
/// and a cookie), and the removals of earlier versions' cookies, which would shadow it.
/// A database that fails is that refusal (a 503 while it is not answering), not a form
/// whose sign-in would fail.
pub async fn login_form(req: HttpRequest, console: web::Data<Console>) -> Page {
    // Already signed in: straight to the search.
    if console
        .sessions
        .find(&console.pool, &console.keys, &req)
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
    let sessions = &console.sessions;
    let client = kollus_common::client_addr::of_request(req, &console.proxies);
    let csrf = sessions.login_token(OffsetDateTime::now_utc(), client);
    let f = frame(req, console, None);
    let mut res = html(req, console, status, pages::login(&f, &csrf, error));
    // An old `/console` cookie of the same name is sent before ours: it goes now, not only at
    // a sign-in it would have blocked.
    let cookies = std::iter::once(sessions.set_cookie(sessions.login_cookie_name(), &csrf))
        .chain(sessions.legacy_removals());
    for cookie in cookies {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    res
}

#[derive(Deserialize)]
pub struct LoginForm {
    key: String,
    #[serde(default)]
    csrf_token: String,
}

/// What a refused sign-in was: who asked (`key_name`: the key's name when the key was known,
/// else `-`), from where, and why.
struct Refused<'a> {
    key_name: &'a str,
    client: Option<IpAddr>,
    why: SignInFailure,
}

/// Counts, logs and records a refused sign-in (`sign_in_refused`); returns the form again with
/// `status` and `message`, or the error page when the refusal could not be recorded.
async fn refuse(
    req: &HttpRequest,
    console: &Console,
    log: &AccessLog,
    r: Refused<'_>,
    status: StatusCode,
    message: &str,
) -> Page {
    let reason: &'static str = r.why.into();
    console
        .metrics
        .console_sign_in_failures
        .with_label_values(&[reason])
        .inc();
    if let (Some(ip), SignInFailure::UnknownKey | SignInFailure::NoConsoleScope) = (r.client, r.why)
    {
        console.sign_ins.failed(ip, Instant::now());
    }
    if let Some(count) = console.sign_ins.record_refusal(r.client, Instant::now()) {
        let db = console.pool.get().await?;
        log.record_counted(
            &**db,
            Entry {
                client_addr: r.client,
                target: Some(reason),
                ..Entry::new(Action::SignInRefused, r.key_name)
            },
            i64::try_from(count).unwrap_or(i64::MAX),
        )
        .await?;
    }
    Ok(login_page(req, console, status, Some(message)))
}

/// `POST /console/login`: a key with the `console` scope opens a session.
pub async fn login(
    req: HttpRequest,
    console: web::Data<Console>,
    log: web::Data<AccessLog>,
    form: web::Form<LoginForm>,
) -> Page {
    let lang = UiLang::of(&req).0;
    let client = kollus_common::client_addr::of_request(&req, &console.proxies);
    let shown = client.map_or_else(|| "unknown".to_owned(), |ip| ip.to_string());
    if let Some(ip) = client {
        if let Err(wait) = console.sign_ins.check(ip, Instant::now()) {
            tracing::warn!(client = %shown, "console sign-in refused: too many failed attempts");
            let mut res = refuse(
                &req,
                &console,
                &log,
                Refused {
                    key_name: "-",
                    client,
                    why: SignInFailure::Limited,
                },
                StatusCode::TOO_MANY_REQUESTS,
                lang.t(
                    "로그인 실패가 너무 많습니다. 잠시 후 다시 시도하세요.",
                    "Too many failed sign-ins; wait a minute.",
                ),
            )
            .await?;
            if let Ok(v) = HeaderValue::from_str(&wait.as_secs().max(1).to_string()) {
                res.headers_mut().insert(header::RETRY_AFTER, v);
            }
            return Ok(res);
        }
    }
    let sessions = &console.sessions;
    // Any cookie of the name may hold it: an old one (another path) is sent before ours.
    let in_a_cookie = session::cookies(&req, sessions.login_cookie_name())
        .any(|held| session::same_token(&form.csrf_token, &held));
    if !in_a_cookie
        || !sessions.login_token_holds(&form.csrf_token, OffsetDateTime::now_utc(), client)
    {
        tracing::warn!(
            client = %shown,
            "console sign-in refused: no valid CSRF token (none, too old, or served to another client)"
        );
        return refuse(
            &req,
            &console,
            &log,
            Refused {
                key_name: "-",
                client,
                why: SignInFailure::Csrf,
            },
            StatusCode::FORBIDDEN,
            lang.t(
                "양식이 만료되었습니다. 다시 시도하세요.",
                "The form expired; try again.",
            ),
        )
        .await;
    }
    let Some((caller, print)) = console.keys.caller_by_key(form.key.trim()) else {
        // Never the key: only that one was refused, and from where.
        tracing::warn!(client = %shown, "console sign-in refused: no such API key");
        return refuse(
            &req,
            &console,
            &log,
            Refused {
                key_name: "-",
                client,
                why: SignInFailure::UnknownKey,
            },
            StatusCode::UNAUTHORIZED,
            lang.t("알 수 없는 키입니다.", "Unknown key."),
        )
        .await;
    };
    if caller.require(ApiScope::Console).is_err() {
        tracing::warn!(
            key = caller.name(),
            client = %shown,
            "console sign-in refused: the key lacks the console scope"
        );
        return refuse(
            &req,
            &console,
            &log,
            Refused {
                key_name: caller.name(),
                client,
                why: SignInFailure::NoConsoleScope,
            },
            StatusCode::FORBIDDEN,
            lang.t(
                "이 키에는 console 권한이 없습니다.",
                "This key lacks the console scope.",
            ),
        )
        .await;
    }
    // The session this browser held, if any, ends here: a sign-in never leaves two.
    let held = sessions.id_of(&req);
    let (id, _) = sessions
        .open(
            &console.pool,
            &log,
            caller.name(),
            &print,
            held.as_deref(),
            client,
        )
        .await?;
    tracing::info!(
        key = caller.name(),
        client = %shown,
        held_a_session_cookie = held.is_some(),
        "console sign-in"
    );
    let mut res = HttpResponse::SeeOther();
    res.insert_header((header::LOCATION, "/console/"))
        .append_header((
            header::SET_COOKIE,
            sessions.set_cookie(sessions.cookie_name(), &id),
        ))
        .append_header((
            header::SET_COOKIE,
            sessions.removal(sessions.login_cookie_name()),
        ));
    for legacy in sessions.legacy_removals() {
        res.append_header((header::SET_COOKIE, legacy));
    }
    Ok(res.finish())
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
    let sessions = &console.sessions;
    sessions.close(&console.pool, &req).await?;
    tracing::info!(key = agent.key_name, "console sign-out");
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/console/login"))
        .append_header((header::SET_COOKIE, sessions.removal(sessions.cookie_name())))
        .finish())
}
