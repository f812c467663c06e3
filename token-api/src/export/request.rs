//! What an export's request says and whether it is let in: its `reason` (required), its
//! format (`Accept`), and a slot of the exports' own (a 503 answer when there is none).

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, ResponseError as _};

use super::gate::{Admitted, Export, NotAdmitted};
use super::stream::Format;
use crate::access_log::record;
use crate::problem::{db_error, invalid, ApiError};

/// An export's query: why the data is downloaded.
#[derive(serde::Deserialize)]
struct ExportQuery {
    reason: Option<String>,
}

/// The `reason` of an export's query, as the access record keeps it (400 naming `reason`).
pub fn reason_of(req: &HttpRequest, subject: Option<&str>) -> Result<String, ApiError> {
    let q: ExportQuery = crate::problem::parse_query(req)?;
    record::reason(q.reason.as_deref(), subject).map_err(|why| invalid("reason", why))
}

/// `reason` as the document describes it (its `max_length`, a literal there, is
/// `record::REASON_MAX_CHARS`: a test holds them equal).
pub const REASON_PARAM: &str = "Why this data is downloaded (1 to 500 characters, no control characters), kept in the access record with the key, the client address and the time. Required: every download of personal data gives its reason.";

/// [`Export::admit`] for the API: a refusal as its answer (503; `Retry-After` when every slot is
/// streaming).
pub async fn admit_or_answer(export: &Export) -> Result<Admitted, Result<HttpResponse, ApiError>> {
    match export.admit().await {
        Ok(admitted) => Ok(admitted),
        Err(NotAdmitted::Busy) => {
            let mut res = ApiError::Unavailable(
                "every export slot is streaming (EXPORT_CONCURRENCY); retry later".into(),
            )
            .error_response();
            res.headers_mut().insert(
                header::RETRY_AFTER,
                export.settings.chunk_deadline_seconds.into(),
            );
            Err(Ok(res))
        }
        Err(NotAdmitted::Database(e)) => {
            Err(Err(db_error("PostgreSQL is not answering; retry")(e)))
        }
    }
}

pub fn format_of(req: &HttpRequest) -> Format {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if accept.contains("text/csv") {
        Format::Csv
    } else {
        Format::Ndjson
    }
}
