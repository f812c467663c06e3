//! How a console handler answers: the page in the frame every page shares (with the language
//! cookie when the switch was used), a redirect, or a [`Refusal`] shown as a page (the sign-in
//! redirect, 400, 404, 500), never a panic; and the checks every page makes first.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse};
use kollus_common::domain::{ClientUserId, MediaContentKey};
use maud::Markup;

use super::i18n::{UiLang, LANG_COOKIE};
use super::pages::{self, Frame};
use super::session::{self, Agent};
use super::state::Console;

/// Why a page is not the one asked for.
pub enum Refusal {
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

pub type Page = Result<HttpResponse, Refusal>;

/// The frame's facts for this request, and the language cookie when the switch was used.
pub fn frame<'a>(req: &'a HttpRequest, console: &Console, agent: Option<&'a Agent>) -> Frame<'a> {
    Frame {
        lang: UiLang::of(req).0,
        agent,
        path: req.uri().path(),
        tz: console.tz,
    }
}

pub fn html(
    req: &HttpRequest,
    console: &Console,
    status: StatusCode,
    page: Markup,
) -> HttpResponse {
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

pub fn see_other(to: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, to))
        .finish()
}

/// Answers a refusal as a page (the sign-in redirect, 404, 400, 500), never a panic.
pub fn answer(req: &HttpRequest, console: &Console, page: Page) -> HttpResponse {
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

pub async fn signed_in(req: &HttpRequest, console: &Console) -> Result<Agent, Refusal> {
    session::find(&console.pool, &console.keys, req)
        .await?
        .ok_or(Refusal::SignIn)
}

pub fn parse_user(raw: String) -> Result<ClientUserId, Refusal> {
    ClientUserId::parse(raw).map_err(|e| Refusal::BadRequest(format!("client_user_id {e}")))
}

pub fn parse_media(raw: String) -> Result<MediaContentKey, Refusal> {
    MediaContentKey::parse(raw).map_err(|e| Refusal::BadRequest(format!("media_content_key {e}")))
}
