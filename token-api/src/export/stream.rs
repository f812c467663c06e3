//! Streaming an export: rows through a cursor in a read-only snapshot, a few pages in flight,
//! written as JSON Lines or CSV in chunks: memory stays flat however much there is. The
//! snapshot is bounded on both sides: each chunk must be taken within the chunk deadline and
//! the whole export must end within `EXPORT_MAX_SECONDS`, and the server ends the transaction
//! past `statement_timeout` or `idle_in_transaction_session_timeout` (the export's deadline
//! and a margin, so never before our own cut) whatever becomes of this process.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::HttpResponse;
use serde_json::Value;
use tokio::sync::mpsc;

use super::gate::{Admitted, Export};
use super::parts::Part;
use super::sink::{Cut, Sink};
use crate::configuration::ExportSettings;
use crate::metrics::Metrics;

/// Rows fetched per round trip.
const PAGE: i32 = 500;

/// What an export's connection is called in `pg_stat_activity` while its snapshot is open.
pub const APPLICATION_NAME: &str = "kollus-token-api export";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

/// Streams `parts` for `key` as `format` on the admitted export's connection. A failure
/// half-way ends JSON Lines with an error line, and cuts a CSV (no last chunk): a truncated
/// export never passes for a whole one. A client that takes no chunk within the chunk deadline,
/// or an export still running at `EXPORT_MAX_SECONDS`, is cut off: the transaction rolled back,
/// its connection and slot released at once.
pub fn stream(
    export: &Export,
    admitted: Admitted,
    key: String,
    parts: &'static [Part],
    format: Format,
    csv_header: &'static [&'static str],
    archive: Option<super::archive::RawReports>,
) -> HttpResponse {
    let (tx, rx) = mpsc::channel(4);
    let cut = Arc::new(AtomicBool::new(false));
    let cut_by_task = cut.clone();
    let settings = export.settings;
    let metrics = export.metrics.clone();
    tokio::spawn(async move {
        let Admitted { permit, mut client } = admitted;
        // Counted from here, so no idle spell of the transaction (opened below) reaches it.
        let ends_at = tokio::time::Instant::now() + settings.max_duration();
        let mut sink = Sink::new(tx, settings.chunk_deadline(), ends_at);
        let result = tokio::time::timeout_at(ends_at, async {
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            tx.batch_execute(&format!(
                "{}; SET LOCAL application_name = '{APPLICATION_NAME}'",
                kollus_common::db::transaction_timeouts(
                    settings.statement_timeout(),
                    settings.idle_in_transaction(),
                )
            ))
            .await?;
            if format == Format::Csv {
                sink.push(&csv_line(csv_header)?).await;
            }
            for part in parts {
                if format == Format::Csv && part.kind != "csv" {
                    continue;
                }
                if format == Format::Ndjson && part.kind == "csv" {
                    continue;
                }
                let statement = tx.prepare(part.sql).await?;
                let portal = tx.bind(&statement, &[&key]).await?;
                loop {
                    let rows = tx.query_portal(&portal, PAGE).await?;
                    for row in &rows {
                        if format == Format::Csv {
                            let line = csv_line((0..row.len()).map(|i| cell(row, i)))?;
                            if !sink.push(&line).await {
                                return Ok(());
                            }
                        } else {
                            // Each JSON part selects one jsonb value per row.
                            let mut v: Value = row.get(0);
                            if let Value::Object(m) = &mut v {
                                m.insert("type".into(), Value::String(part.kind.into()));
                            }
                            let mut line = serde_json::to_vec(&v)?;
                            line.push(b'\n');
                            if !sink.push(&line).await {
                                return Ok(());
                            }
                        }
                    }
                    if rows.len() < PAGE as usize {
                        break;
                    }
                }
            }
            tx.commit().await?;
            if let (Some(archive), Format::Ndjson) = (&archive, format) {
                super::archive::raw_reports(archive, &key, &mut sink).await?;
            }
            anyhow::Ok(())
        })
        .await;
        settle(
            result,
            sink,
            client,
            permit,
            format,
            &settings,
            &metrics,
            &cut_by_task,
        )
        .await;
    });
    respond(rx, cut, format)
}

/// How an export's task ends, once its rows are written (`result`; `Err` when the export's
/// deadline passed): the connection back to the pool (or closed, when a statement may still
/// run on it), the slot freed, a failure told (an error line ends JSON Lines; a CSV is cut), a
/// cut counted, the last chunk flushed to the same deadlines. `cut` tells the response to end
/// in an error rather than as a whole file.
#[expect(
    clippy::too_many_arguments,
    reason = "the parts of one export's task, taken apart"
)]
pub(super) async fn settle(
    result: Result<anyhow::Result<()>, tokio::time::error::Elapsed>,
    mut sink: Sink,
    client: deadpool_postgres::Object,
    permit: tokio::sync::OwnedSemaphorePermit,
    format: Format,
    settings: &ExportSettings,
    metrics: &Metrics,
    cut_by_task: &AtomicBool,
) {
    // Past the export's deadline, in a fetch (the timeout above) or waiting for the client
    // (the sink's own).
    let (why_cut, result) = match result {
        Err(_) => (Some(Cut::Overtime), Ok(())),
        Ok(result) => (sink.cut(), result),
    };
    if result.is_err() || why_cut == Some(Cut::Overtime) {
        // A statement may still be running on the server (the deadline cut a fetch short):
        // that connection is closed, not pooled, so the next export gets a fresh one
        // instead of waiting behind it (the server ends the statement at
        // statement_timeout at the latest, its snapshot with it).
        drop(deadpool_postgres::Object::take(client));
    } else {
        // The snapshot is gone with the transaction (rolled back if not committed); the
        // connection goes back before the slot, so the next export admitted finds it free.
        drop(client);
    }
    drop(permit);
    if let Some(why) = why_cut {
        count_cut(why, settings, metrics);
        cut_by_task.store(true, Ordering::Release);
        return;
    }
    let failed = result.is_err();
    if let Err(e) = result {
        tracing::warn!(error = format!("{e:#}"), "export failed half-way");
        metrics
            .exports_unfinished
            .with_label_values(&["failed"])
            .inc();
        if format == Format::Ndjson {
            let line = serde_json::json!({"type": "error", "detail": "the export stopped early: the database failed; ask again"});
            let _ = sink.push(format!("{line}\n").as_bytes()).await;
        } else {
            cut_by_task.store(true, Ordering::Release);
            return;
        }
    }
    // The last chunk is held to the same deadlines: one not taken in time cuts the response
    // too, or it would end as a whole file without its last rows.
    if !sink.flush().await {
        if let Some(why) = sink.cut() {
            if !failed {
                count_cut(why, settings, metrics);
            }
            cut_by_task.store(true, Ordering::Release);
        }
    }
}

/// The response of an export: the chunks as they come from its task (`rx`), ending in an error
/// when the task says it was cut (`cut`).
pub(super) fn respond(
    rx: mpsc::Receiver<bytes::Bytes>,
    cut: Arc<AtomicBool>,
    format: Format,
) -> HttpResponse {
    // The chunks as they come; once the task is done, a cut export ends in an error, which
    // closes the connection without the last chunk of the chunked encoding.
    let body = futures_util::stream::unfold(rx, move |mut rx| {
        let cut = cut.clone();
        async move {
            match rx.recv().await {
                Some(chunk) => Some((Ok::<_, actix_web::Error>(chunk), rx)),
                None if cut.swap(false, Ordering::Acquire) => Some((
                    Err(actix_web::error::ErrorServiceUnavailable(
                        "the export was cut before its end",
                    )),
                    rx,
                )),
                None => None,
            }
        }
    });
    HttpResponse::Ok()
        .content_type(match format {
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        })
        .streaming(body)
}

/// Logs and counts an export cut before its end (at WARN: the client or the deadlines decide).
fn count_cut(why: Cut, settings: &ExportSettings, metrics: &Metrics) {
    let reason = match why {
        Cut::Stalled => {
            tracing::warn!(
                deadline_seconds = settings.chunk_deadline_seconds,
                "export cut: the client took no chunk within EXPORT_CHUNK_DEADLINE_SECONDS"
            );
            "stalled"
        }
        Cut::Overtime => {
            tracing::warn!(
                max_seconds = settings.max_seconds,
                "export cut: still running after EXPORT_MAX_SECONDS"
            );
            "overtime"
        }
    };
    metrics
        .exports_unfinished
        .with_label_values(&[reason])
        .inc();
}

/// One CSV record, quoted as RFC 4180 wants.
pub(super) fn csv_line<I: AsRef<[u8]>>(
    fields: impl IntoIterator<Item = I>,
) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(fields)?;
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("writing CSV: {}", e.error()))
}

/// A column as CSV text: the export's CSV queries select text, numbers, booleans and times.
/// Text that a spreadsheet would run as a formula is neutralised; numbers stay numbers.
fn cell(row: &tokio_postgres::Row, i: usize) -> String {
    use tokio_postgres::types::Type;
    let ty = row.columns()[i].type_().clone();
    let text = match ty {
        Type::INT8 => row.get::<_, Option<i64>>(i).map(|v| v.to_string()),
        Type::INT4 => row.get::<_, Option<i32>>(i).map(|v| v.to_string()),
        Type::BOOL => row.get::<_, Option<bool>>(i).map(|v| v.to_string()),
        Type::TIMESTAMPTZ => row.get::<_, Option<time::OffsetDateTime>>(i).and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        }),
        _ => row.get::<_, Option<String>>(i).map(neutralised),
    };
    text.unwrap_or_default()
}

/// A text cell as a spreadsheet must read it (OWASP, "CSV Injection"): one whose first
/// character is `=`, `+`, `-`, `@`, a tab or a carriage return would run as a formula (a
/// device named `=HYPERLINK(...)` in the file the console offers as evidence), so it gets a
/// leading `'`, which spreadsheets show as text. A text that is a plain number (`-3`) is
/// left as it is: a spreadsheet reads it as that number, which runs nothing.
pub fn neutralised(text: String) -> String {
    let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
    if formula && !plain_number(&text) {
        format!("'{text}")
    } else {
        text
    }
}

/// A sign, digits, and at most one decimal point among them: `-3`, `+1.5`.
fn plain_number(text: &str) -> bool {
    let digits = text.strip_prefix(['-', '+']).unwrap_or(text);
    let mut parts = digits.splitn(2, '.');
    let whole = parts.next().unwrap_or("");
    let fraction = parts.next();
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    !whole.is_empty()
        && all_digits(whole)
        && fraction.is_none_or(|f| !f.is_empty() && all_digits(f))
}

#[cfg(test)]
mod tests {
    use super::{neutralised, plain_number};

    #[test]
    fn a_formula_cell_is_text_and_a_number_stays_a_number() {
        for (given, written) in [
            (
                "=HYPERLINK(\"http://x\",\"y\")",
                "'=HYPERLINK(\"http://x\",\"y\")",
            ),
            ("+1+cmd|' /C calc'!A0", "'+1+cmd|' /C calc'!A0"),
            ("-2+3", "'-2+3"),
            ("@SUM(A1)", "'@SUM(A1)"),
            ("\t=1", "'\t=1"),
            ("\r=1", "'\r=1"),
            ("-", "'-"),
            ("-3", "-3"),
            ("+1.5", "+1.5"),
            ("iPhone = 15", "iPhone = 15"),
            ("", ""),
        ] {
            assert_eq!(neutralised(given.into()), written, "{given:?}");
        }
        for not_plain in ["-", "-.5", "1.", "1.2.3", "-1e5", "--1", "- 1"] {
            assert!(!plain_number(not_plain), "{not_plain:?}");
        }
    }
}
