//! The refund view's downloads: the user's export (export's own stream, a model the console
//! uses) as CSV or JSON Lines, behind the console's sign-in, each recorded as a view.

use actix_web::http::header::{self, HeaderValue};
use actix_web::web;

use super::reply::{parse_user, Page, Refusal};
use super::session::Agent;
use super::state::Console;
use super::store;
use crate::export::gate::{Export, NotAdmitted};
use crate::export::parts::{USER_CSV, USER_PARTS};
use crate::export::stream::{stream, Format};

/// `GET /console/users/{client_user_id}/export.csv`: the user export's sessions as CSV, the
/// same stream as `GET /v1/users/{id}/export` with `Accept: text/csv`; recorded as a view.
pub async fn export_csv(
    console: web::Data<Console>,
    export: web::Data<Export>,
    agent: web::ReqData<Agent>,
    path: web::Path<String>,
) -> Page {
    export_user(console, &export, &agent, path.into_inner(), Format::Csv).await
}

/// `GET /console/users/{client_user_id}/export.jsonl`: the user export as JSON Lines (without
/// the archive's raw reports, which the API's export adds when `ARCHIVE_DIR` is set).
pub async fn export_jsonl(
    console: web::Data<Console>,
    export: web::Data<Export>,
    agent: web::ReqData<Agent>,
    path: web::Path<String>,
) -> Page {
    export_user(console, &export, &agent, path.into_inner(), Format::Ndjson).await
}

async fn export_user(
    console: web::Data<Console>,
    export: &Export,
    agent: &Agent,
    raw: String,
    format: Format,
) -> Page {
    let user = parse_user(raw)?;
    // The console's connection first, so no export slot waits on the console's pool; then a
    // slot (the API's exports' bound), and only then the view, so a download refused is not
    // recorded as one.
    let client = console.pool.get().await?;
    let admitted = export.admit().await.map_err(|e| match e {
        NotAdmitted::Busy => Refusal::Busy(export.settings.chunk_deadline_seconds),
        NotAdmitted::Database(e) => e.into(),
    })?;
    store::record_view(&client, &agent.key_name, user.as_str(), None).await?;
    tracing::info!(key = agent.key_name, ?format, "console user export");
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
