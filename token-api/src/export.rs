//! Everything we hold about a user, or about a video, streamed: `GET /v1/users/{id}/export` and
//! `GET /v1/media/{key}/export`. JSON Lines (`application/x-ndjson`, one object per line, each
//! with its `type`) or, with `Accept: text/csv`, a CSV of the sessions (user) or of the per-user
//! totals (video). Rows are read through a cursor in a read-only snapshot and written as they
//! come, a few pages in flight: memory stays flat however much there is. With `ARCHIVE_DIR` set,
//! a user's export ends with the raw LMS reports the archive holds for the user (`lms_report`),
//! found by scanning the archive's playback segments one at a time, each envelope once across
//! epochs, then up to when the archive covers (`archive_coverage`).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::Bytes;
use kollus_common::domain::{ClientUserId, MediaContentKey};
use serde_json::Value;
use tokio::sync::mpsc;

use crate::auth::{ApiScope, Caller};
use crate::problem::ApiError;
use crate::problem::FieldError;
use crate::state::State;

/// Rows fetched per round trip, and bytes per chunk written.
const PAGE: i32 = 500;
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Format {
    Ndjson,
    Csv,
}

fn format_of(req: &HttpRequest) -> Format {
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

fn invalid(field: &str, message: String) -> ApiError {
    ApiError::Invalid(vec![FieldError {
        field: field.into(),
        message,
    }])
}

/// One query of an export: its SQL (one parameter, `$1`) and how each row becomes output.
struct Part {
    sql: &'static str,
    kind: &'static str,
}

/// Writes rows into chunks and hands full chunks to the response.
struct Sink {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

impl Sink {
    async fn push(&mut self, bytes: &[u8]) -> bool {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= CHUNK {
            return self.flush().await;
        }
        true
    }

    /// False when the client went away (nothing more to do).
    async fn flush(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        let chunk = Bytes::from(std::mem::take(&mut self.buf));
        self.tx.send(chunk).await.is_ok()
    }
}

/// Streams `parts` for `key` as `format`; a failure half-way ends the stream with an error line
/// (JSON Lines) and in the log, so a truncated export never passes for a whole one.
fn stream(
    state: &State,
    key: String,
    parts: &'static [Part],
    format: Format,
    csv_header: &'static [&'static str],
    archive: Option<kollus_archive::store::Archive>,
) -> HttpResponse {
    let (tx, rx) = mpsc::channel(4);
    let pool = state.pool.clone();
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
                raw_reports(archive, &key, &mut sink).await?;
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

/// The user's LMS reports as received, from the archive: playback records are keyed
/// `{client_user_id}\u{1f}{media_content_key}`, so the key alone selects them. Each report once
/// by envelope id, however often it was archived: twice after a crash of `dump`, or in two
/// epochs (a record restored into a new cluster is the same record). Then an `archive_coverage`
/// line: the newest archived record's time, since a report sent later may still sit in a
/// segment the archive has not closed.
async fn raw_reports(
    archive: &kollus_archive::store::Archive,
    user: &str,
    sink: &mut Sink,
) -> anyhow::Result<()> {
    use kollus_archive::record::Bytes as Raw;
    const TOPIC: &str = "kollus.playback.v1";
    let prefix = format!("{user}\u{1f}");
    let mut seen = std::collections::HashSet::new();
    let entries = kollus_archive::verify::entries(archive).await?;
    for entry in entries.iter().filter(|e| e.topic == TOPIC) {
        let bytes = archive.get(&entry.segment).await?;
        for r in kollus_archive::segment::read(entry, &bytes)? {
            let mine = matches!(&r.key, Some(Raw::Text(k)) if k.starts_with(&prefix));
            if !mine || !seen.insert(r.identity()) {
                continue;
            }
            let value = match &r.value {
                Some(Raw::Text(t)) => serde_json::from_str(t).unwrap_or(Value::String(t.clone())),
                Some(other) => serde_json::to_value(other)?,
                None => Value::Null,
            };
            let line = serde_json::json!({
                "type": "lms_report", "topic": r.topic, "partition": r.partition,
                "epoch": entry.epoch, "offset": r.offset, "timestamp": r.timestamp,
                "envelope": value,
            });
            if !sink.push(format!("{line}\n").as_bytes()).await {
                return Ok(());
            }
        }
    }
    let covered_until = kollus_common::archive::covered_until(&entries, TOPIC)
        .and_then(|ms| time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        });
    let line = serde_json::json!({
        "type": "archive_coverage",
        "covered_until": covered_until,
        "detail": "raw reports are those archived up to covered_until; a report sent later may \
                   not be archived yet (a segment closes within ARCHIVE_SEGMENT_SECONDS)",
    });
    sink.push(format!("{line}\n").as_bytes()).await;
    Ok(())
}

/// One CSV record, quoted as RFC 4180 wants.
fn csv_line<I: AsRef<[u8]>>(fields: impl IntoIterator<Item = I>) -> anyhow::Result<Vec<u8>> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(fields)?;
    w.into_inner()
        .map_err(|e| anyhow::anyhow!("writing CSV: {}", e.error()))
}

/// A column as CSV text: the export's CSV queries select text, numbers, booleans and times.
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
        _ => row.get::<_, Option<String>>(i),
    };
    text.unwrap_or_default()
}

static USER_PARTS: &[Part] = &[
    Part {
        sql: "SELECT to_jsonb(s) FROM watch_sessions s WHERE s.client_user_id = $1 \
              ORDER BY s.media_content_key, s.start_at",
        kind: "session",
    },
    Part {
        sql: "SELECT to_jsonb(p) FROM watch_progress p WHERE p.client_user_id = $1 \
              ORDER BY p.media_content_key",
        kind: "progress",
    },
    Part {
        sql: "SELECT to_jsonb(e) FROM entitlements e WHERE e.client_user_id = $1 \
              ORDER BY e.scope, e.target",
        kind: "entitlement",
    },
    Part {
        sql: "SELECT to_jsonb(d) - 'id' FROM playback_decisions d WHERE d.client_user_id = $1 \
              ORDER BY d.decided_at, d.id",
        kind: "playback_decision",
    },
    Part {
        sql: "SELECT client_user_id, media_content_key, start_at, \
                     to_timestamp(start_at) AS started_at, channel_key, duration, playtime, \
                     real_playtime, runtime, showtime, playtime_percent, last_play_at, \
                     block_count, cardinality(array_positions(blocks_played, true))::int, \
                     first_report_at, last_report_at, hash_verified, device_clock, \
                     player_id, device, os \
              FROM watch_sessions WHERE client_user_id = $1 ORDER BY media_content_key, start_at",
        kind: "csv",
    },
];

const USER_CSV: &[&str] = &[
    "client_user_id",
    "media_content_key",
    "start_at",
    "started_at",
    "channel_key",
    "duration",
    "playtime",
    "real_playtime",
    "runtime",
    "showtime",
    "playtime_percent",
    "last_play_at",
    "block_count",
    "blocks_played",
    "first_report_at",
    "last_report_at",
    "hash_verified",
    "device_clock",
    "player_id",
    "device",
    "os",
];

/// `GET /v1/users/{client_user_id}/export`
pub async fn user(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Export)?;
    let user = ClientUserId::parse(path.into_inner())
        .map_err(|e| invalid("client_user_id", e.to_string()))?;
    let format = format_of(&req);
    tracing::info!(
        caller = caller.name(),
        user = user.as_str(),
        ?format,
        "user export"
    );
    state.metrics.exports.with_label_values(&["user"]).inc();
    Ok(stream(
        &state,
        user.as_str().to_owned(),
        USER_PARTS,
        format,
        USER_CSV,
        state.archive.clone(),
    ))
}

static MEDIA_PARTS: &[Part] = &[
    Part {
        sql: "SELECT to_jsonb(m) FROM (SELECT p.*, u.filename, u.full_filename, \
                     u.content_provider_key, u.transcoding_state, u.uploaded_at, u.transcoded_at, \
                     u.poster_changed_at \
              FROM media_playability p JOIN uploads u USING (upload_file_key) \
              WHERE p.media_content_key = $1) m",
        kind: "media",
    },
    Part {
        sql: "SELECT to_jsonb(c) FROM channel_memberships c WHERE c.media_content_key = $1 \
              ORDER BY c.channel_key",
        kind: "channel",
    },
    Part {
        sql: "SELECT to_jsonb(e) - 'payload' || jsonb_build_object('payload', e.payload) \
              FROM content_event_order e WHERE e.media_content_key = $1 \
              ORDER BY e.event_at, e.envelope_id",
        kind: "content_event",
    },
    Part {
        sql: "SELECT jsonb_build_object('client_user_id', client_user_id, 'sessions', sessions, \
                     'total_playtime', total_playtime, 'total_real_playtime', total_real_playtime, \
                     'blocks_watched', blocks_watched, 'block_count', block_count, \
                     'first_watched_at', first_watched_at, 'last_watched_at', last_watched_at) \
              FROM watch_progress WHERE media_content_key = $1 ORDER BY client_user_id",
        kind: "user_totals",
    },
    Part {
        sql: "SELECT client_user_id, sessions, total_playtime, total_real_playtime, \
                     blocks_watched, block_count, first_watched_at, last_watched_at \
              FROM watch_progress WHERE media_content_key = $1 ORDER BY client_user_id",
        kind: "csv",
    },
];

const MEDIA_CSV: &[&str] = &[
    "client_user_id",
    "sessions",
    "total_playtime",
    "total_real_playtime",
    "blocks_watched",
    "block_count",
    "first_watched_at",
    "last_watched_at",
];

/// `GET /v1/media/{media_content_key}/export`
pub async fn media(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<State>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Export)?;
    let media = MediaContentKey::parse(path.into_inner())
        .map_err(|e| invalid("media_content_key", e.to_string()))?;
    let format = format_of(&req);
    tracing::info!(
        caller = caller.name(),
        media = media.as_str(),
        ?format,
        "video export"
    );
    state.metrics.exports.with_label_values(&["media"]).inc();
    Ok(stream(
        &state,
        media.as_str().to_owned(),
        MEDIA_PARTS,
        format,
        MEDIA_CSV,
        None,
    ))
}
