//! How a console handler answers: a page in the frame every page shares (with the language
//! cookie when the switch was used), a redirect, or a [`Refusal`]. A handler returns a refusal
//! as its error; `gate::refusals_as_pages` shows it as a page in the request's language (the
//! sign-in redirect, 400, 404, 503 while PostgreSQL is not answering, 500), never a panic.

use actix_web::http::header;
use actix_web::http::StatusCode;
use actix_web::{HttpRequest, HttpResponse, ResponseError};
use kollus_common::domain::{ClientUserId, MediaContentKey};
use maud::Markup;

use super::i18n::{UiLang, LANG_COOKIE};
use super::pages::{self, Frame};
use super::session::{self, Agent};
use super::state::Console;

/// Seconds a page refused for a database outage asks the browser to wait.
const RETRY_AFTER_SECONDS: u32 = 30;

/// Why a page is not the one asked for; its message (never its cause) is what the bare answer
/// says when no `refusals_as_pages` renders it.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// No live session: to the sign-in page.
    #[error("sign in first")]
    SignIn,
    #[error("{1}")]
    NotFound(&'static str, &'static str),
    /// The agent's key lacks a scope the page needs (Korean, English).
    #[error("{1}")]
    Forbidden(&'static str, &'static str),
    #[error("{0}")]
    BadRequest(String),
    /// PostgreSQL is not answering (refused, lost or timed-out connections): a 503 to retry.
    #[error("the database is not answering")]
    Unavailable(anyhow::Error),
    /// Every export slot is streaming (`EXPORT_CONCURRENCY`): a 503 to retry after this many
    /// seconds (the chunk deadline, by which a stalled one has let its slot go).
    #[error("every export slot is in use")]
    Busy(u64),
    /// Anything else: a fault of ours, a 500.
    #[error("the page could not be built")]
    Failed(anyhow::Error),
}

/// A failure is `Unavailable` when any cause in its chain is PostgreSQL not answering
/// (`problem::not_answering`, the API's classifier); otherwise `Failed`.
impl From<anyhow::Error> for Refusal {
    fn from(e: anyhow::Error) -> Self {
        if crate::problem::not_answering(&e) {
            Self::Unavailable(e)
        } else {
            Self::Failed(e)
        }
    }
}

impl From<deadpool_postgres::PoolError> for Refusal {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        anyhow::Error::from(e).into()
    }
}

/// The bare answer, in case no `refusals_as_pages` renders it: the right status all the same.
impl ResponseError for Refusal {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::SignIn => StatusCode::SEE_OTHER,
            Self::NotFound(..) => StatusCode::NOT_FOUND,
            Self::Forbidden(..) => StatusCode::FORBIDDEN,
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) | Self::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Failed(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            Self::SignIn => see_other("/console/login"),
            _ => HttpResponse::build(self.status_code())
                .content_type("text/plain; charset=utf-8")
                .body(self.to_string()),
        }
    }
}

pub type Page = Result<HttpResponse, Refusal>;

/// The frame's facts for this request.
pub fn frame<'a>(req: &'a HttpRequest, console: &Console, agent: Option<&'a Agent>) -> Frame<'a> {
    Frame {
        lang: UiLang::of(req).0,
        agent,
        path: req.uri().path(),
        cursor: pages::cursor_of(req.query_string()),
        tz: console.tz,
    }
}

/// A page, with the language cookie when the switch was used.
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

/// A refusal as a page in the request's language; failures are logged here (an outage at
/// WARN, a fault of ours at ERROR), with their whole chain of causes.
pub fn refused(req: &HttpRequest, console: &Console, refusal: &Refusal) -> HttpResponse {
    let lang = UiLang::of(req).0;
    let f = frame(req, console, None);
    let notice = |status, title, text| html(req, console, status, pages::notice(&f, title, text));
    match refusal {
        Refusal::SignIn => see_other("/console/login"),
        Refusal::NotFound(ko, en) => notice(
            StatusCode::NOT_FOUND,
            lang.t("없음", "Not found"),
            lang.t(ko, en),
        ),
        Refusal::Forbidden(ko, en) => notice(
            StatusCode::FORBIDDEN,
            lang.t("권한 없음", "Forbidden"),
            lang.t(ko, en),
        ),
        Refusal::BadRequest(why) => notice(
            StatusCode::BAD_REQUEST,
            lang.t("잘못된 요청", "Bad request"),
            why,
        ),
        Refusal::Unavailable(e) => {
            tracing::warn!(
                error = format!("{e:#}"),
                path = req.uri().path(),
                "console page refused: PostgreSQL is not answering"
            );
            let mut res = notice(
                StatusCode::SERVICE_UNAVAILABLE,
                lang.t("일시적으로 사용할 수 없음", "Temporarily unavailable"),
                lang.t(
                    "데이터베이스가 응답하지 않습니다. 잠시 후 다시 시도하세요.",
                    "The database is not answering; try again in a minute.",
                ),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, RETRY_AFTER_SECONDS.into());
            res
        }
        Refusal::Busy(retry_after) => {
            tracing::warn!(
                path = req.uri().path(),
                "console download refused: every export slot is in use (EXPORT_CONCURRENCY)"
            );
            let mut res = notice(
                StatusCode::SERVICE_UNAVAILABLE,
                lang.t("다운로드 대기 중", "Downloads busy"),
                lang.t(
                    "다른 내보내기가 진행 중입니다. 잠시 후 다시 시도하세요.",
                    "Other exports are streaming; try again shortly.",
                ),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, (*retry_after).into());
            res
        }
        Refusal::Failed(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                path = req.uri().path(),
                "console page failed"
            );
            notice(
                StatusCode::INTERNAL_SERVER_ERROR,
                lang.t("오류", "Error"),
                lang.t(
                    "페이지를 만들지 못했습니다. 잠시 후 다시 시도하세요.",
                    "The page could not be built; try again shortly.",
                ),
            )
        }
    }
}

pub fn parse_user(raw: String) -> Result<ClientUserId, Refusal> {
    ClientUserId::parse(raw).map_err(|e| Refusal::BadRequest(format!("client_user_id {e}")))
}

pub fn parse_media(raw: String) -> Result<MediaContentKey, Refusal> {
    MediaContentKey::parse(raw).map_err(|e| Refusal::BadRequest(format!("media_content_key {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_database_that_is_not_answering_is_unavailable() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let outage: Refusal =
            deadpool_postgres::PoolError::Timeout(deadpool_postgres::TimeoutType::Wait).into();
        assert!(matches!(outage, Refusal::Unavailable(_)), "{outage:?}");
        assert_eq!(outage.status_code(), StatusCode::SERVICE_UNAVAILABLE);
        let ours: Refusal = anyhow::Error::from(refused)
            .context("not PostgreSQL")
            .into();
        assert!(matches!(ours, Refusal::Failed(_)), "{ours:?}");
        assert_eq!(ours.status_code(), StatusCode::INTERNAL_SERVER_ERROR);
    }
}
