//! Exports cannot starve playback (issue 30): clients that start an export and stop reading
//! hold neither the connections the play callback needs nor, past the chunk deadline, their
//! snapshot and connection; an export beyond `EXPORT_CONCURRENCY` is a 503 with `Retry-After`.
//! A client that reads slowly but steadily is bounded by `EXPORT_MAX_SECONDS`, and by nothing
//! shorter (the server's `idle_in_transaction_session_timeout` used to cut it half-way).

use std::time::{Duration, Instant};

use kollus_test_support::eventually_ok;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::helpers::*;

/// `EXPORT_CHUNK_DEADLINE_SECONDS` here: short, so the test waits little for the cut, and long
/// enough for the eight clients to start and the play callbacks to be posted before it.
const CHUNK_DEADLINE_SECONDS: u64 = 6;
/// `EXPORT_CONCURRENCY`, the default.
const SLOTS: usize = 4;
/// Clients that stop reading: as many as the pool's connections (`DATABASE_POOL_SIZE`, 8), which
/// before issue 30 was all the play callback had.
const STALLED: usize = 8;

/// `n` sessions of `user` with 100 blocks each: about 2 KB a line, so an export of them is many
/// times what the socket buffers and the response's chunks in flight can hold.
async fn fat_sessions(app: &TestApp, user: &str, n: i64) {
    sessions_of_blocks(app, user, n, 100).await;
}

/// `n` sessions of `user` with `blocks` blocks each.
async fn sessions_of_blocks(app: &TestApp, user: &str, n: i64, blocks: i64) {
    app.db
        .client()
        .await
        .batch_execute(&format!(
            "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, playtime, \
                 blocks_played, block_seconds, block_percent, segments, first_report_at, \
                 last_report_at) \
             SELECT '{user}', 'm' || (i % 7), 1700000000 + i, i % 900, \
                    array_fill(true, ARRAY[{blocks}]), array_fill(30::bigint, ARRAY[{blocks}]), \
                    array_fill(100::bigint, ARRAY[{blocks}]), '[[1, 0, 30], [2, 5, 25]]', \
                    to_timestamp(1700000000 + i), to_timestamp(1700000100 + i) \
             FROM generate_series(1, {n}) i"
        ))
        .await
        .unwrap();
}

/// A client that asks for `user`'s export on a socket with a small receive buffer, reads the
/// answer's head, and then reads nothing more (but stays connected).
async fn stop_reading_after_the_head(app: &TestApp, user: &str) -> (TcpStream, String) {
    ask_and_read_the_head(app, user, 4096).await
}

/// Asks for `user`'s export on a socket with a receive buffer of `recv_buffer` bytes, and reads
/// the answer's head.
async fn ask_and_read_the_head(app: &TestApp, user: &str, recv_buffer: u32) -> (TcpStream, String) {
    let addr = app.address.trim_start_matches("http://").parse().unwrap();
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(recv_buffer).unwrap();
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(
            format!(
                "GET /v1/users/{user}/export?reason=stalls HTTP/1.1\r\nHost: {addr}\r\n\
                 Authorization: Bearer {OPS_KEY}\r\nAccept: application/x-ndjson\r\n\r\n"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        stream.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    (
        stream,
        String::from_utf8(head).unwrap().to_ascii_lowercase(),
    )
}

/// A play callback (kind 1) for `user` and `media`, and how long its answer took.
async fn play(app: &TestApp, user: &str, media: &str) -> (reqwest::Response, Duration) {
    let started = Instant::now();
    let res = app
        .client
        .post(format!("{}/kollus/play?secret={PLAY_SECRET}", app.address))
        .form(&[
            ("kind", "1"),
            ("client_user_id", user),
            ("media_content_key", media),
            ("player_id", "player-1"),
            ("device_name", "iPhone"),
            ("uservalues", r#"{"uservalue0":"course-7"}"#),
            ("localtime", "1700000000"),
        ])
        .send()
        .await
        .unwrap();
    (res, started.elapsed())
}

/// Export transactions open in this test's database, and snapshots held in it by anyone but
/// the asker.
async fn exports_open(app: &TestApp) -> (i64, i64) {
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FILTER (WHERE application_name = $1), \
                    count(*) FILTER (WHERE backend_xmin IS NOT NULL) \
             FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()",
            &[&kollus_token_api::export::stream::APPLICATION_NAME],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

#[tokio::test]
async fn eight_clients_that_stop_reading_starve_neither_playback_nor_the_database() {
    let app = spawn_app_with(|s| {
        s.export.chunk_deadline_seconds = CHUNK_DEADLINE_SECONDS;
        s.api_keys = kollus_token_api::auth::ApiKeys::parse(&format!(
            "app:{APP_KEY},ops:{OPS_KEY},support[console]:{}",
            crate::console::SUPPORT_KEY
        ))
        .unwrap();
    })
    .await;
    let web = crate::console::browser();
    let agent = crate::console::sign_in(&app, &web).await;
    fat_sessions(&app, "heavy", 20_000).await;
    let granted = app
        .client
        .put(format!("{}/v1/users/u1/entitlements/media/m1", app.address))
        .bearer_auth(APP_KEY)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(granted.status(), 200);

    let first_asked = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..STALLED {
        stalled.push(stop_reading_after_the_head(&app, "heavy").await);
    }
    let started = stalled
        .iter()
        .filter(|(_, head)| head.starts_with("http/1.1 200"))
        .count();
    assert_eq!(started, SLOTS, "EXPORT_CONCURRENCY exports stream");
    for (_, head) in stalled
        .iter()
        .filter(|(_, h)| !h.starts_with("http/1.1 200"))
    {
        assert!(head.starts_with("http/1.1 503"), "{head}");
        assert!(
            head.contains(&format!("\r\nretry-after: {CHUNK_DEADLINE_SECONDS}\r\n")),
            "{head}"
        );
    }
    // The streaming exports hold their snapshots while their clients do not read...
    eventually_ok(
        "the exports' transactions open",
        Duration::from_secs(20),
        || async {
            match exports_open(&app).await {
                (open, _) if open == SLOTS as i64 => Ok(()),
                seen => Err(format!("{seen:?}")),
            }
        },
    )
    .await;

    // A console download waits for the same slots: a page that says so, not the database's.
    let busy = crate::console::download(
        &app,
        &web,
        "/console/users/heavy/export.csv",
        &agent,
        Some("busy"),
    )
    .await;
    assert_eq!(busy.status(), 503);
    assert_eq!(
        busy.headers()["retry-after"],
        CHUNK_DEADLINE_SECONDS.to_string().as_str()
    );
    let page = busy.text().await.unwrap();
    assert!(page.contains("Downloads busy"), "{page}");

    // ... and the play callback still has its connections: a decision, within its deadline
    // (PLAY_TIMEOUT_MS, 2 s; before, it waited for a pooled connection and answered 503).
    let mut answered_in = Vec::new();
    for _ in 0..3 {
        let (res, took) = play(&app, "u1", "m1").await;
        assert_eq!(res.status(), 200, "after {took:?}: {:?}", res.text().await);
        assert!(took < Duration::from_secs(2), "answered after {took:?}");
        answered_in.push(took);
    }

    // Past the chunk deadline each stalled export is cut: no export transaction, no snapshot.
    eventually_ok(
        "the stalled exports' snapshots released",
        Duration::from_secs(CHUNK_DEADLINE_SECONDS + 20),
        || async {
            match exports_open(&app).await {
                (0, 0) => Ok(()),
                seen => Err(format!("(exports open, snapshots held) = {seen:?}")),
            }
        },
    )
    .await;
    let released_after = first_asked.elapsed();
    assert_eq!(
        app.metric(r#"kollus_token_exports_unfinished_total{reason="stalled"}"#)
            .await,
        SLOTS as u64
    );
    assert_eq!(
        app.metric(r#"kollus_token_exports_unfinished_total{reason="busy"}"#)
            .await,
        (STALLED - SLOTS + 1) as u64,
        "the API's four and the console's one"
    );

    // A cut export never ends as a whole one would: what was buffered, then the connection
    // closes without the chunked encoding's last chunk.
    let (mut cut, _) = stalled
        .into_iter()
        .find(|(_, head)| head.starts_with("http/1.1 200"))
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), cut.read_to_end(&mut rest)).await;
    assert!(read.is_ok(), "the cut connection closes once read");
    assert!(
        !rest.ends_with(b"\r\n0\r\n\r\n"),
        "a cut export must not end like a whole one"
    );
    println!(
        "play answered in {answered_in:?} beside {SLOTS} stalled exports; snapshots released \
         {released_after:?} after the first export was asked (deadline {CHUNK_DEADLINE_SECONDS} s); \
         a cut connection held {} bytes unread",
        rest.len()
    );

    // The slots and connections are back: a reader that reads gets the whole export.
    let mut res = app
        .client
        .get(format!("{}/v1/users/heavy/export", app.address))
        .query(&[("reason", "the whole export")])
        .bearer_auth(OPS_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let mut lines = 0;
    while let Some(chunk) = res.chunk().await.unwrap() {
        lines += chunk.iter().filter(|b| **b == b'\n').count();
    }
    assert_eq!(lines, 20_000 + 7, "every session and progress line");
}

/// The chunk deadline in the slow readers' tests: short, so the old idle bound (10 s more)
/// falls below a page's time through the client, and long enough that a reader or a worker
/// paused a few seconds on a loaded machine is not cut as stalled.
const SLOW_CHUNK_DEADLINE_SECONDS: u64 = 6;
/// Sessions in the slow readers' export: two pages of rows (500 each) and one more, so the
/// export fetches again after the transaction sat idle while a whole page went through the
/// client, once the buffers on the way (the server's send buffer alone grows to 4 MB) are full.
const SLOW_SESSIONS: i64 = 1001;
/// Blocks per session there: about 32 KB a line, so a page is about 16 MB.
const SLOW_BLOCKS: i64 = 2500;
/// How fast the steady reader reads: a 64 KiB chunk in well under the chunk deadline, and a
/// page in about 32 s, past the old idle bound (16 s here) even less what the buffers hold.
const SLOW_BYTES_PER_SECOND: usize = 500_000;

/// What a slow reader got.
struct SlowRead {
    /// The response's head, lower-cased.
    head: String,
    /// The body, its chunked encoding undone.
    body: Vec<u8>,
    /// Did it end with the chunked encoding's last chunk (a whole export)?
    whole: bool,
    /// From the request to the end (the last chunk, or the connection closed).
    took: Duration,
}

/// A client that asks for `user`'s export and reads it slowly but steadily
/// (`bytes_per_second`, a little every 10 ms) until it ends or the connection closes.
async fn read_slowly(app: &TestApp, user: &str, bytes_per_second: usize) -> SlowRead {
    let asked = Instant::now();
    // A receive buffer small enough to hold the export back (no autotuning to megabytes),
    // large enough for TCP to keep up with the reads.
    let (mut stream, head) = ask_and_read_the_head(app, user, 64 * 1024).await;
    let per_tick = bytes_per_second / 100;
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    let mut raw = Vec::new();
    let mut buf = vec![0u8; per_tick];
    loop {
        ticks.tick().await;
        let n = stream.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&buf[..n]);
        if raw.ends_with(b"\r\n0\r\n\r\n") {
            break;
        }
    }
    let (body, whole) = dechunk(&raw);
    SlowRead {
        head,
        body,
        whole,
        took: asked.elapsed(),
    }
}

/// A chunked body's data, and whether it ended with the last (empty) chunk.
fn dechunk(mut raw: &[u8]) -> (Vec<u8>, bool) {
    let mut body = Vec::new();
    loop {
        let Some(eol) = raw.windows(2).position(|w| w == b"\r\n") else {
            return (body, false);
        };
        let size = usize::from_str_radix(std::str::from_utf8(&raw[..eol]).unwrap(), 16).unwrap();
        if size == 0 {
            return (body, true);
        }
        let data = &raw[eol + 2..];
        if data.len() < size + 2 {
            body.extend_from_slice(&data[..data.len().min(size)]);
            return (body, false);
        }
        body.extend_from_slice(&data[..size]);
        raw = &data[size + 2..];
    }
}

#[tokio::test]
async fn a_slow_steady_reader_is_not_cut_by_the_database_half_way() {
    let app = spawn_app_with(|s| {
        s.export.chunk_deadline_seconds = SLOW_CHUNK_DEADLINE_SECONDS;
    })
    .await;
    sessions_of_blocks(&app, "slow", SLOW_SESSIONS, SLOW_BLOCKS).await;

    let read = read_slowly(&app, "slow", SLOW_BYTES_PER_SECOND).await;
    assert!(read.head.starts_with("http/1.1 200"), "{}", read.head);
    let lines = read.body.iter().filter(|b| **b == b'\n').count();
    let last = read
        .body
        .split(|b| *b == b'\n')
        .rev()
        .nth(1)
        .unwrap_or_default();
    println!(
        "a slow reader ({SLOW_BYTES_PER_SECOND} B/s) read {} bytes in {:?} (chunk deadline \
         {SLOW_CHUNK_DEADLINE_SECONDS} s; the old idle bound {} s)",
        read.body.len(),
        read.took,
        SLOW_CHUNK_DEADLINE_SECONDS + 10
    );
    assert!(
        read.whole,
        "the export ends whole, after {:?}; its last line begins: {}",
        read.took,
        String::from_utf8_lossy(&last[..last.len().min(200)])
    );
    assert!(
        !String::from_utf8_lossy(&read.body).contains(r#""type":"error""#),
        "no error line (the database cut the export half-way)"
    );
    assert_eq!(
        lines,
        SLOW_SESSIONS as usize + 7,
        "every session and progress line"
    );
    assert!(
        read.took > Duration::from_secs(SLOW_CHUNK_DEADLINE_SECONDS + 10),
        "read for longer than the old idle bound, or the test shows nothing: {:?}",
        read.took
    );
    for reason in ["stalled", "overtime", "failed"] {
        assert_eq!(
            app.metric(&format!(
                r#"kollus_token_exports_unfinished_total{{reason="{reason}"}}"#
            ))
            .await,
            0,
            "{reason}"
        );
    }
}

#[tokio::test]
async fn a_slow_reader_is_cut_at_export_max_seconds_and_its_snapshot_released() {
    const MAX_SECONDS: u64 = 10;
    let app = spawn_app_with(|s| {
        s.export.chunk_deadline_seconds = SLOW_CHUNK_DEADLINE_SECONDS;
        s.export.max_seconds = MAX_SECONDS;
    })
    .await;
    sessions_of_blocks(&app, "slow", SLOW_SESSIONS, SLOW_BLOCKS).await;
    assert_eq!(
        app.metric(r#"kollus_token_exports_unfinished_total{reason="overtime"}"#)
            .await,
        0,
        "pre-registered at zero"
    );

    let asked = Instant::now();
    // The client reads on while the export's transaction is watched.
    // Faster than the steady reader: the deadline, not the reading, ends it.
    let (read, released_after) = tokio::join!(read_slowly(&app, "slow", 1_000_000), async {
        eventually_ok(
            "the export's transaction open",
            Duration::from_secs(10),
            || async {
                match exports_open(&app).await {
                    (1, _) => Ok(()),
                    seen => Err(format!("{seen:?}")),
                }
            },
        )
        .await;
        // Cut at the export's deadline while the client still reads: no export transaction, no
        // snapshot, counted `overtime`.
        eventually_ok(
            "the slow export cut and its snapshot released",
            Duration::from_secs(MAX_SECONDS + 10),
            || async {
                match exports_open(&app).await {
                    (0, 0) => Ok(()),
                    seen => Err(format!("(exports open, snapshots held) = {seen:?}")),
                }
            },
        )
        .await;
        let released_after = asked.elapsed();
        assert!(
            released_after >= Duration::from_secs(MAX_SECONDS),
            "released after {released_after:?}, before EXPORT_MAX_SECONDS"
        );
        assert!(
            released_after < Duration::from_secs(MAX_SECONDS + 10),
            "released after {released_after:?}"
        );
        eventually_ok("counted overtime", Duration::from_secs(5), || async {
            match app
                .metric(r#"kollus_token_exports_unfinished_total{reason="overtime"}"#)
                .await
            {
                1 => Ok(()),
                n => Err(format!("{n}")),
            }
        })
        .await;
        for reason in ["stalled", "failed"] {
            assert_eq!(
                app.metric(&format!(
                    r#"kollus_token_exports_unfinished_total{{reason="{reason}"}}"#
                ))
                .await,
                0,
                "{reason}"
            );
        }
        released_after
    });
    assert!(read.head.starts_with("http/1.1 200"), "{}", read.head);
    assert!(
        !read.whole,
        "a cut export must not end like a whole one ({} bytes)",
        read.body.len()
    );
    println!(
        "a slow reader (1000000 B/s) cut at EXPORT_MAX_SECONDS={MAX_SECONDS}: \
         snapshot released {released_after:?} after the request; the client read {} bytes \
         in {:?}",
        read.body.len(),
        read.took
    );
}
