//! Streaming an export: rows through a cursor in a read-only snapshot, a few pages in flight,
//! written as JSON Lines or CSV in chunks: memory stays flat however much there is.

use actix_web::HttpResponse;
use deadpool_postgres::Pool;
use serde_json::Value;
use tokio::sync::mpsc;

use super::parts::Part;
use super::sink::{Sink, CHUNK};

/// Rows fetched per round trip.
const PAGE: i32 = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

/// Streams `parts` for `key` as `format`; a failure half-way ends the stream with an error line
/// (JSON Lines) and in the log, so a truncated export never passes for a whole one.
pub fn stream(
    pool: &Pool,
    key: String,
    parts: &'static [Part],
    format: Format,
    csv_header: &'static [&'static str],
    archive: Option<super::archive::RawReports>,
) -> HttpResponse {
    let (tx, rx) = mpsc::channel(4);
    let pool = pool.clone();
    tokio::spawn(async move {
        let mut sink = Sink {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let result = async {
            let mut client = pool.get().await?;
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
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
        }
        .await;
        if let Err(e) = result {
            tracing::warn!(error = format!("{e:#}"), "export failed half-way");
            if format == Format::Ndjson {
                let line = serde_json::json!({"type": "error", "detail": "the export stopped early: the database failed; ask again"});
                let _ = sink.push(format!("{line}\n").as_bytes()).await;
            }
        }
        sink.flush().await;
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|chunk| (Ok::<_, actix_web::Error>(chunk), rx))
    });
    HttpResponse::Ok()
        .content_type(match format {
            Format::Ndjson => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
        })
        .streaming(body)
}

/// One CSV record, quoted as RFC 4180 wants.
fn csv_line<I: AsRef<[u8]>>(fields: impl IntoIterator<Item = I>) -> anyhow::Result<Vec<u8>> {
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
fn neutralised(text: String) -> String {
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
