//! The monthly review of the access record (안전성 확보조치 기준 제8조: reviewed at least monthly,
//! the reason of every download confirmed): a month's downloads with their reasons, its refused
//! sign-ins, and per key and action the month's count beside the mean of the three months
//! before, flagged above three times it or when new. For an agent whose key holds `audit`
//! beside `console` (others get the 403 page); as a page or as CSV (the console's CSV rules:
//! formula cells neutralised). Subjects are shown by tag: the review opens no sealed id, so
//! reviewing is no access to anyone's data and writes no row.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use deadpool_postgres::Client;
use serde::Deserialize;
use time::OffsetDateTime;

use super::model::{Flag, Month, ReviewModel, REVIEW_CSV_ROWS, REVIEW_ROWS, REVIEW_TALLIES};
use super::pages;
use super::reply::{frame, html, Page, Refusal};
use super::session::Agent;
use super::state::Console;
use crate::access_log::read::{self, Access, Bounded, Tally, DOWNLOADS};
use crate::access_log::record::Action;
use crate::auth::ApiScope;

#[derive(Deserialize)]
struct Query {
    month: Option<String>,
}

/// The month asked for (`?month=YYYY-MM`), this month in the console's zone without one.
fn month_of(req: &HttpRequest, console: &Console) -> Result<(Month, Month), Refusal> {
    let q = web::Query::<Query>::from_query(req.query_string())
        .map_err(|e| Refusal::BadRequest(format!("the page's query: {e}")))?;
    let now = Month::containing(OffsetDateTime::now_utc(), console.tz);
    let month = match q.month.as_deref() {
        None | Some("") => now,
        Some(m) => Month::parse(m).map_err(Refusal::BadRequest)?,
    };
    Ok((month, now))
}

/// The review is the `audit` scope's: a 403 page for a key without it.
async fn audit_required(req: &HttpRequest, console: &Console) -> Result<(), Refusal> {
    if console
        .sessions
        .key_holds(&console.pool, &console.keys, req, ApiScope::Audit)
        .await?
    {
        return Ok(());
    }
    Err(Refusal::Forbidden(
        "접속기록 점검에는 audit 권한이 있는 키가 필요합니다.",
        "The access record's review needs a key with the audit scope.",
    ))
}

/// What the review reads: downloads, refused sign-ins, tallies, each bounded.
struct Facts {
    downloads: Bounded<Access>,
    refused: Bounded<Access>,
    tallies: Bounded<Tally>,
}

async fn facts(
    client: &Client,
    month: Month,
    console: &Console,
    rows: usize,
    tallies: usize,
) -> anyhow::Result<Facts> {
    let w = month.window(console.tz);
    let c: &tokio_postgres::Client = client;
    Ok(Facts {
        downloads: read::month_rows(c, w, DOWNLOADS, rows).await?,
        refused: read::month_rows(c, w, &[Action::SignInRefused], rows).await?,
        tallies: read::tallies(c, w, tallies).await?,
    })
}

/// `GET /console/review[?month=YYYY-MM]`: the month's review as a page.
pub async fn page(
    req: HttpRequest,
    console: web::Data<Console>,
    agent: web::ReqData<Agent>,
) -> Page {
    audit_required(&req, &console).await?;
    let (month, now) = month_of(&req, &console)?;
    let client = console.pool.get().await?;
    let facts = facts(&client, month, &console, REVIEW_ROWS, REVIEW_TALLIES).await?;
    let mut f = frame(&req, &console, Some(&agent));
    // The language switch stays on the month.
    f.cursor = format!("month={month}&");
    let p = ReviewModel::new(month, now, &facts.downloads, &facts.refused, &facts.tallies);
    Ok(html(&req, &console, StatusCode::OK, pages::review(&f, &p)))
}

/// `GET /console/review.csv[?month=YYYY-MM]`: the same review as CSV, one record per row of
/// each part (`part`: `download`, `sign_in_refused`, `tally`), at most [`REVIEW_CSV_ROWS`] of
/// each, then a `not_shown` record per part it cut.
pub async fn csv(req: HttpRequest, console: web::Data<Console>) -> Page {
    audit_required(&req, &console).await?;
    let (month, now) = month_of(&req, &console)?;
    let client = console.pool.get().await?;
    let facts = facts(&client, month, &console, REVIEW_CSV_ROWS, REVIEW_CSV_ROWS).await?;
    let p = ReviewModel::new(month, now, &facts.downloads, &facts.refused, &facts.tallies);
    let body = review_csv(&p).map_err(Refusal::Failed)?;
    let mut res = HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .body(body);
    if let Ok(v) = HeaderValue::from_str(&format!(
        "attachment; filename=\"access-review-{month}.csv\""
    )) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}

/// The CSV's columns.
pub const CSV_HEADER: [&str; 11] = [
    "part",
    "at",
    "key_name",
    "action",
    "client_addr",
    "subject_tag",
    "target",
    "reason",
    "count",
    "mean_before",
    "flag",
];

/// The review as CSV: every text cell neutralised as the exports' are (a key name, a target or
/// a reason starting `=` is text to a spreadsheet, never a formula).
pub fn review_csv(p: &ReviewModel) -> anyhow::Result<Vec<u8>> {
    let text = |s: Option<&str>| crate::export::stream::neutralised(s.unwrap_or("").to_owned());
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(CSV_HEADER)?;
    for (part, rows) in [("download", p.downloads), ("sign_in_refused", p.refused)] {
        for r in &rows.rows {
            w.write_record([
                part.to_owned(),
                r.at.format(&time::format_description::well_known::Rfc3339)?,
                text(Some(&r.key_name)),
                text(Some(&r.action)),
                r.client_addr.map(|a| a.to_string()).unwrap_or_default(),
                text(r.subject_tag.as_deref()),
                text(r.target.as_deref()),
                text(r.reason.as_deref()),
                r.count.to_string(),
                String::new(),
                String::new(),
            ])?;
        }
        not_shown(&mut w, part, rows.more)?;
    }
    for t in &p.tallies {
        w.write_record([
            "tally".to_owned(),
            String::new(),
            text(Some(&t.tally.key_name)),
            text(Some(&t.tally.action)),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            t.tally.this_month.to_string(),
            format!("{:.1}", t.mean),
            t.flag.map(Flag::as_str).unwrap_or("").to_owned(),
        ])?;
    }
    not_shown(&mut w, "tally", p.tallies_more)?;
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("writing CSV: {}", e.error()))
}

/// A record saying how many rows of `part` the file leaves out, when it does.
fn not_shown(w: &mut csv::Writer<Vec<u8>>, part: &str, more: i64) -> anyhow::Result<()> {
    if more > 0 {
        let mut record = vec![String::new(); CSV_HEADER.len()];
        record[0] = "not_shown".to_owned();
        record[3] = part.to_owned();
        record[8] = more.to_string();
        w.write_record(&record)?;
    }
    Ok(())
}
