//! The user's downloads: the user export (export's own stream, a model the console uses) as CSV
//! or JSON Lines, behind the console's sign-in. Each asks why first: the form (on the user and
//! refund pages, or `GET` on a download's path) posts a `reason` with the session's CSRF token;
//! a download without a reason is the form again with a 400 and what was wrong, and one posted
//! without the session's token a 403. A download let through writes its access-record row
//! (`export_csv` / `export_jsonl`, with the reason, the session and the client's address) before
//! its first byte; one that cannot be recorded is the error page.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;

use super::i18n::UiLang;
use super::pages;
use super::reply::{frame, html, parse_user, Page, Refusal};
use super::session::{self, Agent};
use super::state::Console;
use super::views::entry;
use crate::access_log::record::{self, AccessLog, Action, Entry};
use crate::export::gate::{Export, NotAdmitted};
use crate::export::parts::{USER_CSV, USER_PARTS};
use crate::export::stream::{stream, Format};

/// What the downloads' form posts.
#[derive(Deserialize)]
pub struct DownloadForm {
    #[serde(default)]
    csrf_token: String,
    reason: Option<String>,
}

/// `GET /console/users/{client_user_id}/export.csv` (or `.jsonl`): a download without a reason,
/// so the form that asks for one, with a 400 (a link or bookmark of before the reasons).
pub async fn ask_reason(
    req: HttpRequest,
    console: web::Data<Console>,
    agent: web::ReqData<Agent>,
    path: web::Path<String>,
) -> Page {
    let user = parse_user(path.into_inner())?;
    Ok(form_again(&req, &console, &agent, user.as_str(), None))
}

/// The form again, with a 400 and what was wrong (by default: no reason given).
fn form_again(
    req: &HttpRequest,
    console: &Console,
    agent: &Agent,
    user: &str,
    why: Option<&str>,
) -> HttpResponse {
    let lang = UiLang::of(req).0;
    let why = why.unwrap_or(lang.t(
        "내려받기 전에 사유를 적으세요. 모든 내려받기는 사유와 함께 접속기록에 남습니다.",
        "Give a reason before downloading: every download is kept in the access record with its reason.",
    ));
    let f = frame(req, console, Some(agent));
    html(
        req,
        console,
        StatusCode::BAD_REQUEST,
        pages::download(&f, user, Some(why)),
    )
}

/// `POST /console/users/{client_user_id}/export.csv`: the user export's sessions as CSV, the
/// same stream as `GET /v1/users/{id}/export` with `Accept: text/csv`.
pub async fn export_csv(
    req: HttpRequest,
    console: web::Data<Console>,
    export: web::Data<Export>,
    log: web::Data<AccessLog>,
    agent: web::ReqData<Agent>,
    path: web::Path<String>,
    form: web::Form<DownloadForm>,
) -> Page {
    let asked = Asked {
        req: &req,
        console: &console,
        log: &log,
        agent: &agent,
        form: &form,
    };
    export_user(asked, &export, path.into_inner(), Format::Csv).await
}

/// `POST /console/users/{client_user_id}/export.jsonl`: the user export as JSON Lines (without
/// the archive's raw reports, which the API's export adds when `ARCHIVE_DIR` is set).
pub async fn export_jsonl(
    req: HttpRequest,
    console: web::Data<Console>,
    export: web::Data<Export>,
    log: web::Data<AccessLog>,
    agent: web::ReqData<Agent>,
    path: web::Path<String>,
    form: web::Form<DownloadForm>,
) -> Page {
    let asked = Asked {
        req: &req,
        console: &console,
        log: &log,
        agent: &agent,
        form: &form,
    };
    export_user(asked, &export, path.into_inner(), Format::Ndjson).await
}

/// A download as asked: by whom, with what form.
struct Asked<'a> {
    req: &'a HttpRequest,
    console: &'a Console,
    log: &'a AccessLog,
    agent: &'a Agent,
    form: &'a DownloadForm,
}

async fn export_user(a: Asked<'_>, export: &Export, raw: String, format: Format) -> Page {
    let user = parse_user(raw)?;
    if !session::same_token(&a.form.csrf_token, &a.agent.csrf_token) {
        tracing::warn!(
            key = a.agent.key_name,
            "console download refused: bad CSRF token"
        );
        return Ok(HttpResponse::Forbidden()
            .content_type("text/plain; charset=utf-8")
            .body("CSRF token missing or wrong"));
    }
    let reason = match record::reason(a.form.reason.as_deref(), Some(user.as_str())) {
        Ok(reason) => reason,
        Err(why) => {
            return Ok(form_again(
                a.req,
                a.console,
                a.agent,
                user.as_str(),
                Some(&why),
            ))
        }
    };
    // The console's connection first, so no export slot waits on the console's pool; then a
    // slot (the API's exports' bound), and only then the record, so a download refused is not
    // recorded as one.
    let client = a.console.pool.get().await?;
    let admitted = export.admit().await.map_err(|e| match e {
        NotAdmitted::Busy => Refusal::Busy(export.settings.chunk_deadline_seconds),
        NotAdmitted::Database(e) => e.into(),
    })?;
    let action = match format {
        Format::Csv => Action::ExportCsv,
        Format::Ndjson => Action::ExportJsonl,
    };
    a.log
        .record(
            &**client,
            Entry {
                subject: Some(user.as_str()),
                reason: Some(&reason),
                ..entry(a.req, a.console, a.agent, action)
            },
        )
        .await?;
    tracing::info!(
        key = a.agent.key_name,
        subject = a.log.tag(user.as_str()).as_str(),
        ?format,
        "console user export"
    );
    let name = match format {
        Format::Csv => "export.csv",
        Format::Ndjson => "export.jsonl",
    };
    let mut res = stream(
        export,
        admitted,
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
