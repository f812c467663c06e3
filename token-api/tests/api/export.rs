//! Exports stream what we hold: JSON Lines or CSV, every row, in flat memory.

use serde_json::Value;

use crate::helpers::*;

/// `n` sessions of user `u` (30 blocks each, segments) over 7 videos (`watch_progress`, a view,
/// sums them per video).
async fn sessions(app: &TestApp, user: &str, n: i64) {
    app.db
        .client()
        .await
        .batch_execute(&format!(
            "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, playtime, \
                 real_playtime, blocks_played, block_seconds, block_percent, segments, \
                 first_report_at, last_report_at, channel_key, device) \
             SELECT '{user}', 'm' || (i % 7), 1700000000 + i, i % 900, i % 800, \
                    array_fill(true, ARRAY[30]), array_fill(30::bigint, ARRAY[30]), \
                    array_fill(100::bigint, ARRAY[30]), '[[1, 0, 30], [2, 5, 25]]', \
                    to_timestamp(1700000000 + i), to_timestamp(1700000100 + i), 'ch, \"quoted\"', 'x86' \
             FROM generate_series(1, {n}) i"
        ))
        .await
        .unwrap();
}

/// An export of `path` with a reason, as every export must give.
async fn export(app: &TestApp, path: &str, accept: &str) -> reqwest::Response {
    app.client
        .get(format!("{}{path}", app.address))
        .query(&[("reason", "support ticket 1234")])
        .bearer_auth(OPS_KEY)
        .header("accept", accept)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_user_export_has_every_session_with_its_blocks_as_json_lines_or_csv() {
    let app = spawn_app().await;
    sessions(&app, "u1", 1200).await;
    sessions(&app, "someone-else", 3).await;

    let res = export(&app, "/v1/users/u1/export", "application/x-ndjson").await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let body = res.text().await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let of = |t: &str| lines.iter().filter(|l| l["type"] == t).count();
    assert_eq!((of("session"), of("progress")), (1200, 7));
    let first = lines.iter().find(|l| l["type"] == "session").unwrap();
    assert_eq!(first["client_user_id"], "u1");
    assert_eq!(first["blocks_played"].as_array().unwrap().len(), 30);
    assert_eq!(
        first["segments"],
        serde_json::json!([[1, 0, 30], [2, 5, 25]])
    );
    assert!(lines.iter().all(|l| l["client_user_id"] == "u1"));

    let csv = export(&app, "/v1/users/u1/export", "text/csv").await;
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    assert_eq!(&header[0], "client_user_id");
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1200);
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(
        &rows[0][at("channel_key")],
        "ch, \"quoted\"",
        "quoted as CSV"
    );
    assert_eq!(&rows[0][at("blocks_played")], "30");
}

#[tokio::test]
async fn a_video_export_has_its_catalog_history_and_per_user_totals() {
    let app = spawn_app().await;
    app.catalog("m3", true, false).await;
    sessions(&app, "u1", 10).await;
    sessions(&app, "u2", 10).await;
    let body = export(&app, "/v1/media/m3/export", "*/*")
        .await
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["type"], "media");
    assert_eq!(lines[0]["playable"], true);
    assert!(lines
        .iter()
        .any(|l| l["type"] == "channel" && l["channel_key"] == "ch"));
    let users: Vec<&str> = lines
        .iter()
        .filter(|l| l["type"] == "user_totals")
        .map(|l| l["client_user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["u1", "u2"]);
    let csv = export(&app, "/v1/media/m3/export", "text/csv")
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(csv.lines().count(), 3, "{csv}");

    let refused = export(&app, "/v1/media/not%20a%20key/export", "*/*").await;
    assert_eq!(refused.status(), 400);
    let anonymous = app
        .client
        .get(format!("{}/v1/users/u1/export", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// The process's peak resident memory so far, in bytes (Linux).
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test]
async fn an_export_of_100k_sessions_streams_in_flat_memory() {
    // Peak memory is the process's: under `cargo test` (no nextest) the other tests of this
    // binary share it and would count. So the measurement runs alone, in a process of its own.
    const ALONE: &str = "KOLLUS_TEST_ALONE";
    if std::env::var_os(ALONE).is_none() {
        let name = "export::an_export_of_100k_sessions_streams_in_flat_memory";
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([name, "--exact", "--test-threads=1", "--nocapture"])
            .env(ALONE, "1")
            .output()
            .unwrap();
        let said = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{said}");
        assert!(said.contains("1 passed"), "the measurement ran: {said}");
        return;
    }
    let app = spawn_app().await;
    sessions(&app, "heavy", 100_000).await;
    let before = peak_rss();
    let mut res = export(&app, "/v1/users/heavy/export", "application/x-ndjson").await;
    let (mut bytes, mut lines) = (0u64, 0u64);
    while let Some(chunk) = res.chunk().await.unwrap() {
        bytes += chunk.len() as u64;
        lines += chunk.iter().filter(|b| **b == b'\n').count() as u64;
    }
    assert_eq!(lines, 100_000 + 7);
    let grew = peak_rss().saturating_sub(before);
    // The export is tens of MB; held whole (server or client side) the peak would grow by
    // at least that much.
    assert!(
        grew < bytes / 4,
        "peak memory grew by {grew} bytes for a {bytes}-byte export"
    );
}

#[tokio::test]
async fn with_an_archive_a_user_export_carries_the_raw_reports_once() {
    use kollus_archive::record::{ArchivedRecord, Bytes, Header};
    let dir = tempfile::tempdir().unwrap();
    let archive = kollus_archive::store::Archive::open(dir.path().to_str().unwrap()).unwrap();
    let record = |offset: i64, key: &str, id: &str| ArchivedRecord {
        topic: "kollus.playback.v1".into(),
        partition: 0,
        offset,
        timestamp: Some(1_700_000_000_000),
        key: Some(Bytes::of(key.as_bytes())),
        headers: vec![Header {
            key: "id".into(),
            value: Some(Bytes::of(id.as_bytes())),
        }],
        value: Some(Bytes::of(
            format!(r#"{{"id":"{id}","payload":{{"n":{offset}}}}}"#).as_bytes(),
        )),
    };
    // u1's two reports (one archived twice, as after a crash of dump), and u10's, whose id
    // starts the same way.
    let records = [
        record(0, "u1\u{1f}m1", "a"),
        record(1, "u10\u{1f}m1", "b"),
        record(2, "u1\u{1f}m2", "c"),
        record(3, "u1\u{1f}m1", "a"),
    ];
    // Then the cluster is replaced: a new epoch of the same partition holds u1's report "a"
    // again (restored), and a new one, "d", the newest the archive holds.
    let mut newer = record(0, "u1\u{1f}m1", "a");
    newer.timestamp = Some(1_700_000_100_000);
    let mut d = record(1, "u1\u{1f}m3", "d");
    d.timestamp = Some(1_700_000_200_000);
    for (epoch, records) in [(1, records.to_vec()), (2, vec![newer, d])] {
        let mut open = kollus_archive::segment::Open::new(&records[0], epoch, "").unwrap();
        for r in &records {
            open.push(r).unwrap();
        }
        let (bytes, entry) = open.close().unwrap();
        archive
            .create(&entry.segment, bytes, |_| false)
            .await
            .unwrap();
        archive
            .create(
                &entry.manifest_path(),
                serde_json::to_vec(&entry).unwrap(),
                |_| false,
            )
            .await
            .unwrap();
    }

    let path = dir.path().to_str().unwrap().to_owned();
    let app = spawn_app_with(move |s| s.archive_dir = Some(path)).await;
    let body = export(&app, "/v1/users/u1/export", "application/x-ndjson")
        .await
        .text()
        .await
        .unwrap();
    let reports: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|l| l["type"] == "lms_report")
        .collect();
    let ids: Vec<&str> = reports
        .iter()
        .map(|r| r["envelope"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["a", "c", "d"], "each envelope once, across epochs");
    assert_eq!(reports[1]["envelope"]["payload"]["n"], 2);
    assert_eq!(reports[2]["epoch"], 2);
    let last: Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "archive_coverage", "{body}");
    assert_eq!(last["covered_until"], "2023-11-14T22:16:40Z", "{body}");
}

const CATALOG_FIELDS: [&str; 6] = [
    "title",
    "duration_seconds",
    "poster_url",
    "transcoding_stage",
    "transcoding_stage_name",
    "absent_since",
];

#[tokio::test]
async fn exports_say_what_the_catalog_knows_of_each_video() {
    let app = spawn_app().await;
    app.catalog("m3", true, false).await;
    app.describe("m3", "3강 - 미적분 기초", true).await;
    sessions(&app, "u1", 14).await;

    // A user's lines about m3 carry its title; about m1 (not in the catalog), nulls.
    let body = export(&app, "/v1/users/u1/export", "application/x-ndjson")
        .await
        .text()
        .await
        .unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    for kind in ["session", "progress"] {
        let of = |media: &str| {
            lines
                .iter()
                .find(|l| l["type"] == kind && l["media_content_key"] == media)
                .unwrap_or_else(|| panic!("a {kind} line of {media}: {body}"))
        };
        let m3 = of("m3");
        assert_eq!(m3["title"], "3강 - 미적분 기초", "{kind}: {m3}");
        assert_eq!(m3["duration_seconds"], 754);
        assert_eq!(m3["poster_url"], "https://img.example/m3.jpg");
        assert_eq!(m3["transcoding_stage"], 21);
        assert_eq!(m3["transcoding_stage_name"], "Transcoded");
        assert!(m3["absent_since"]
            .as_str()
            .is_some_and(|t| t.starts_with("2026-11-30T03:00:00")));
        let m1 = of("m1");
        for field in CATALOG_FIELDS {
            assert_eq!(*present(m1, field), Value::Null, "{kind} {field}: {m1}");
        }
    }

    let text = export(&app, "/v1/users/u1/export", "text/csv")
        .await
        .text()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    let m3 = rows
        .iter()
        .find(|r| &r[at("media_content_key")] == "m3")
        .unwrap();
    assert_eq!(&m3[at("title")], "3강 - 미적분 기초");
    assert_eq!(&m3[at("duration_seconds")], "754");
    assert_eq!(&m3[at("transcoding_stage")], "21");
    assert_eq!(&m3[at("absent_since")], "2026-11-30T03:00:00Z");
    let m1 = rows
        .iter()
        .find(|r| &r[at("media_content_key")] == "m1")
        .unwrap();
    assert_eq!(&m1[at("title")], "");
    assert!(rows.iter().all(|r| r.len() == header.len()));

    // The video's export: the media line and each per-user CSV row.
    let body = export(&app, "/v1/media/m3/export", "*/*")
        .await
        .text()
        .await
        .unwrap();
    let media: Value = serde_json::from_str(body.lines().next().unwrap()).unwrap();
    assert_eq!(media["type"], "media");
    assert_eq!(media["title"], "3강 - 미적분 기초", "{media}");
    assert_eq!(media["poster_url"], "https://img.example/m3.jpg");
    assert_eq!(media["transcoding_stage_name"], "Transcoded");
    assert_eq!(media["playable"], false, "absent: {media}");
    assert_eq!(
        *present(&media, "deleted_at"),
        Value::Null,
        "an absence is not a delete: {media}"
    );
    assert!(media["absent_since"].is_string(), "{media}");
    let text = export(&app, "/v1/media/m3/export", "text/csv")
        .await
        .text()
        .await
        .unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    assert_eq!(
        header.iter().rev().take(6).collect::<Vec<_>>(),
        CATALOG_FIELDS.iter().rev().copied().collect::<Vec<_>>()
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 1, "{text}");
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    assert_eq!(&rows[0][at("client_user_id")], "u1");
    assert_eq!(&rows[0][at("title")], "3강 - 미적분 기초");
    assert_eq!(&rows[0][at("poster_url")], "https://img.example/m3.jpg");
}

/// The characters that make a spreadsheet run a cell as a formula (OWASP, "CSV Injection").
const FORMULA_START: [char; 6] = ['=', '+', '-', '@', '\t', '\r'];

/// Would a spreadsheet read this cell as a number (`-3`, `+1.5`)?
fn a_number(cell: &str) -> bool {
    let digits = cell.strip_prefix(['-', '+']).unwrap_or(cell);
    !digits.is_empty()
        && digits.bytes().filter(|b| *b == b'.').count() <= 1
        && digits.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && !digits.starts_with('.')
        && !digits.ends_with('.')
}

#[tokio::test]
async fn a_csv_cell_that_would_run_as_a_formula_is_text_and_numbers_stay_numbers() {
    let app = spawn_app().await;
    // A forged report names its device, player and OS; a session's `duration` is -3.
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, duration, \
                 device, player_id, os, channel_key, first_report_at, last_report_at) \
             VALUES ('u1', 'm1', 1700000000, -3, $1, $2, $3, $4, now(), now())",
            &[
                &r#"=HYPERLINK("http://x","y")"#,
                &"+1+cmd|' /C calc'!A0",
                &"@SUM(1+1)*cmd|' /C calc'!A0",
                &"\t=1+1",
            ],
        )
        .await
        .unwrap();
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, device, \
                 os, first_report_at, last_report_at) \
             VALUES ('u1', 'm2', 1700000001, '-2+3', '\r=1', now(), now())",
            &[],
        )
        .await
        .unwrap();

    let text = export(&app, "/v1/users/u1/export", "text/csv")
        .await
        .text()
        .await
        .unwrap();
    // Read back as a spreadsheet would: each cell unquoted, then its first character.
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header = reader.headers().unwrap().clone();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "{text}");
    for row in &rows {
        for (name, cell) in header.iter().zip(row.iter()) {
            assert!(
                !cell.starts_with(FORMULA_START) || a_number(cell),
                "{name} would run as a formula: {cell:?}"
            );
        }
    }
    let at = |name: &str| header.iter().position(|h| h == name).unwrap();
    let m1 = &rows[0];
    assert_eq!(&m1[at("device")], r#"'=HYPERLINK("http://x","y")"#);
    assert_eq!(&m1[at("player_id")], "'+1+cmd|' /C calc'!A0");
    assert_eq!(&m1[at("os")], "'@SUM(1+1)*cmd|' /C calc'!A0");
    assert_eq!(&m1[at("channel_key")], "'\t=1+1");
    assert_eq!(&m1[at("duration")], "-3", "a number stays a number");
    assert_eq!(&rows[1][at("device")], "'-2+3");
    assert_eq!(&rows[1][at("os")], "'\r=1");
}
