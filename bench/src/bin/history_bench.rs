//! history-worker, topic to table: LMS records/s for generated reports over many sessions, and
//! the lag from ingest's receive time to the row at a steady rate, against the naive worker (one
//! transaction per record, same statements), all in one run on one PostgreSQL server.
//!
//! Usage: history-bench BROKERS ADMIN_DATABASE_URL WORKER_BINARY [RECORDS] [SESSIONS]
//!        (BROKERS `none`: only the own-path measurement, item 4)
//!
//! 1. Generates RECORDS reports (default 1,000,000) over SESSIONS sessions (50,000): every
//!    session reports 1, 2, ... times with growing counters and the seed's 30 blocks, the
//!    sessions interleaved as real players' would be (so a batch rarely holds two reports of
//!    one session: coalescing helps little, the set-based writes do the work).
//! 2. Publishes them as ingest would (envelopes with the raw body), then starts the real
//!    history-worker binary on a fresh database and measures records/s from its first
//!    applied batch to its last, by its own counters (`kollus_history_records_total`, polled).
//!    Then prints what PostgreSQL keeps: table and index bytes per report and per session.
//! 3. Lag: publishes at a steady rate while the worker runs; per record, the commit that applied
//!    it minus `received_at` (set when published, as ingest would), from the worker's histogram
//!    `kollus_history_applied_lag_seconds` (the difference of its buckets over the phase).
//! 4. Own path: the worker's `History::apply` on records fed from memory (no broker), and the
//!    decoding alone: what our code costs, apart from the broker.
//! 5. Baseline: the same reports applied one per transaction (the worker's own statements, one
//!    row each), with 1 and with 8 connections, on another fresh database.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use kollus_common::envelope::{Envelope, RawRequest};
use kollus_common::kafka;
use kollus_common::kollus::lms::LmsReport;
use kollus_common::kollus::CallbackKind;
use kollus_common::settings::{DatabaseSettings, KafkaSettings};

const TOPIC: &str = "kollus.playback.v1";
const BLOCKS: u64 = 30;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, brokers, admin_url, worker, rest @ ..] = args.as_slice() else {
        anyhow::bail!(
            "usage: history-bench BROKERS ADMIN_DATABASE_URL WORKER_BINARY [RECORDS] [SESSIONS]"
        );
    };
    let records: u64 = rest.first().map_or(Ok(1_000_000), |s| s.parse())?;
    let sessions: u64 = rest.get(1).map_or(Ok(50_000), |s| s.parse())?;
    if brokers == "none" {
        // Only the worker's own path (no broker, no baseline): for profiling.
        return own_path(admin_url, sessions).await;
    }
    let kafka_settings = KafkaSettings::with_brokers(brokers);
    kafka::ensure_topics(&kafka_settings, &kafka_settings.topics()).await?;
    let producer =
        kafka::durable_producer(&kafka_settings, "bench-history", Duration::from_secs(60))?;

    // 1 + 2: pre-load the topic, then let the worker drain it.
    let started = Instant::now();
    let bytes = publish(&producer, (0..records).map(|i| generate(i, sessions)), None).await?;
    let publish_secs = started.elapsed().as_secs_f64();
    println!(
        "published: {records} records over {sessions} sessions, {:.0} bytes/record on the topic, {:.0} records/s",
        bytes as f64 / records as f64,
        records as f64 / publish_secs
    );

    let db = fresh_database(admin_url, "kollus_bench_history").await?;
    let client = db.client().await?;
    let before = stored_bytes(&client).await?;
    let admin_port = free_port()?;
    let metrics = format!("http://127.0.0.1:{admin_port}/metrics");
    let mut worker = start_worker(worker, brokers, &db.url, admin_port)?;
    let drain_secs = wait_for(&metrics, records, Duration::from_secs(900)).await?;
    let worker_rps = records as f64 / drain_secs;
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM watch_sessions), (SELECT count(*) FROM watch_progress)",
            &[],
        )
        .await?;
    let (session_rows, rollup_rows): (i64, i64) = (row.get(0), row.get(1));
    println!(
        "RESULT worker records={records} sessions_rows={session_rows} rollup_rows={rollup_rows} seconds={drain_secs:.2} rps={worker_rps:.0}"
    );
    // The broker's own ceiling for it: the same records taken by a consumer of the worker's
    // kind (batches of 1000, each record copied out), applied nowhere.
    let consume_rps = consume_only(&kafka_settings, records).await?;
    println!(
        "RESULT consume-only records={records} rps={consume_rps:.0} (the broker delivering to a consumer that applies nothing); worker drain at {:.0}% of it",
        worker_rps / consume_rps * 100.0
    );

    // What PostgreSQL keeps for it (VACUUM first: the figure is the live data, not dead rows
    // that autovacuum reclaims).
    client.batch_execute("VACUUM watch_sessions").await?;
    let after = stored_bytes(&client).await?;
    let live: i64 = client
        .query_one(
            "SELECT (sum(pg_column_size(t.*)) + pg_indexes_size('watch_sessions'))::bigint \
             FROM watch_sessions t",
            &[],
        )
        .await?
        .get(0);
    println!(
        "RESULT storage history_bytes_before={before} after={after} bytes_per_session={:.0} bytes_per_report={:.1} live_bytes_per_session={:.0} (watch_sessions: table, indexes and TOAST on disk, with the room HOT updates keep; live: rows and indexes; the rollup is a view; no row per report)",
        (after - before) as f64 / session_rows.max(1) as f64,
        (after - before) as f64 / records as f64,
        live as f64 / session_rows.max(1) as f64
    );

    // 3: steady rate while the worker runs.
    let lag_rate = 10_000u64;
    let lag_records = lag_rate * 20;
    let start_lag = records;
    let lag_before = lag_buckets(&metrics).await?;
    publish(
        &producer,
        (start_lag..start_lag + lag_records).map(|i| generate(i, sessions)),
        Some(lag_rate),
    )
    .await?;
    wait_for(&metrics, records + lag_records, Duration::from_secs(300)).await?;
    let lag_after = lag_buckets(&metrics).await?;
    let phase: Vec<(f64, f64)> = lag_after
        .iter()
        .zip(&lag_before)
        .map(|(&(le, after), &(_, before))| (le, after - before))
        .collect();
    println!(
        "RESULT lag rate={lag_rate}/s records={lag_records} p50_ms={:.0} p99_ms={:.0} (from the worker's histogram, interpolated within its buckets)",
        quantile(&phase, 0.5) * 1000.0,
        quantile(&phase, 0.99) * 1000.0
    );
    let _ = worker.kill();
    let _ = worker.wait();
    drop(client);
    db.drop_database().await?;

    // The worker's own path without the broker: the same apply, records fed from memory.
    own_path(admin_url, sessions).await?;

    // 4: the naive worker, one record per transaction.
    let base_db = fresh_database(admin_url, "kollus_bench_history_naive").await?;
    let pool = kollus_common::db::pool(&DatabaseSettings {
        pool_size: 8,
        ..DatabaseSettings::new(&base_db.url)
    })?;
    let mut ratios = Vec::new();
    for (connections, n) in [(1usize, 10_000u64), (8, 20_000)] {
        let reports: Vec<Envelope<LmsReport>> = (0..n)
            .map(|i| generate(i + 10_000_000 * connections as u64, sessions))
            .collect();
        let rps = naive(&pool, reports, connections).await?;
        println!("RESULT naive connections={connections} records={n} rps={rps:.0}");
        ratios.push((connections, rps));
    }
    pool.close();
    base_db.drop_database().await?;

    println!();
    for (connections, rps) in ratios {
        println!(
            "history-worker / one-row-per-transaction ({connections} connection{}): {:.1}x",
            if connections == 1 { "" } else { "s" },
            worker_rps / rps
        );
    }
    println!(
        "publish (broker ingest rate, for reference): {:.0} records/s",
        records as f64 / publish_secs
    );
    Ok(())
}

/// Report `i`: session `i % sessions`, its `(i / sessions + 1)`-th report.
fn generate(i: u64, sessions: u64) -> Envelope<LmsReport> {
    let s = i % sessions;
    let n = i / sessions + 1;
    let (user, media) = (s % 20_000, s / 20_000);
    let start_at = 1_700_000_000 + (s as i64 % 86_400);
    let playtime = n * 30;
    let mut blocks = String::new();
    for b in 0..BLOCKS {
        let played = u64::from(b < n.min(BLOCKS));
        let t = if played == 1 { 30 } else { 0 };
        blocks.push_str(&format!(
            r#""b{b}":"{played}","t{b}":"{t}","p{b}":"{}","#,
            t * 100 / 49
        ));
    }
    blocks.pop();
    let body = format!(
        r#"{{"user_info":{{"content_provider_key":"providerkey","client_user_id":"user-{user}","player_id":"player-{s}","host_name":"host.video.kr.kollus.com","device":"x86_64","os":"MAC","version":"19.4.0"}},"content_info":{{"duration":"1461","encoding_profile":"pc1-high","media_content_key":"media-{media}","channel_key":"channelkey","real_playtime":"{playtime}","playtime":"{playtime}","playtime_percent":"{}","start_at":"{start_at}","last_play_at":"{}","runtime":"{}","showtime":"{playtime}"}},"block_info":{{"block_count":"{BLOCKS}","blocks":{{{blocks}}}}}}}"#,
        (playtime * 100 / 1461).min(100),
        playtime,
        playtime + 5,
    );
    let report = LmsReport::from_json(body.as_bytes()).expect("a generated report is valid");
    Envelope::new(
        CallbackKind::Lms,
        report,
        RawRequest::body(Some("application/json"), body.as_bytes()),
    )
}

/// Takes `records` records of the playback topic as the worker does (a group of its own, batches
/// of up to 1000 copied out of librdkafka), and nothing else; records/s.
async fn consume_only(settings: &KafkaSettings, records: u64) -> anyhow::Result<f64> {
    let consumer = kafka::consumer(
        settings,
        &format!("bench-consume-only-{}", std::process::id()),
        &settings.playback_topic,
    )?;
    let started = Instant::now();
    let mut taken = 0u64;
    while taken < records {
        let batch = tokio::time::timeout(
            Duration::from_secs(60),
            kafka::next_batch(&consumer, 1000, Duration::from_millis(20)),
        )
        .await
        .map_err(|_| anyhow::anyhow!("no record for 60 s after {taken} of {records}"))??;
        taken += batch.len() as u64;
    }
    Ok(taken as f64 / started.elapsed().as_secs_f64())
}

/// Publishes envelopes (built lazily, `received_at` = now), at most `rate` per second when
/// given; returns the bytes published.
async fn publish(
    producer: &rdkafka::producer::FutureProducer,
    envelopes: impl Iterator<Item = Envelope<LmsReport>>,
    rate: Option<u64>,
) -> anyhow::Result<usize> {
    let bytes = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let failed = futures_util::stream::iter(envelopes.enumerate())
        .map(|(i, e)| {
            let bytes = bytes.clone();
            async move {
                if let Some(rate) = rate {
                    let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let mut e = e;
                e.received_at = time::OffsetDateTime::now_utc();
                let value = serde_json::to_vec(&e).expect("an envelope serializes");
                bytes.fetch_add(value.len(), Ordering::Relaxed);
                kafka::send(
                    producer,
                    TOPIC,
                    &e.payload.partition_key(),
                    &value,
                    kafka::headers(&[]),
                    Duration::from_secs(60),
                )
                .await
                .is_err()
            }
        })
        .buffer_unordered(512)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    anyhow::ensure!(failed == 0, "{failed} records were not acknowledged");
    Ok(bytes.load(Ordering::Relaxed))
}

/// Reports the worker has taken (applied, duplicate or rejected), from its `/metrics`; `None`
/// while it does not answer yet.
async fn taken(metrics: &str) -> Option<u64> {
    let text = reqwest::get(metrics).await.ok()?.text().await.ok()?;
    Some(
        text.lines()
            .filter(|l| l.starts_with("kollus_history_records_total{"))
            .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum::<f64>() as u64,
    )
}

/// Waits until the worker has taken `n` reports in all; returns the seconds from the first
/// report it took (of those counted now) to the last, polled every 50 ms.
async fn wait_for(metrics: &str, n: u64, limit: Duration) -> anyhow::Result<f64> {
    let deadline = Instant::now() + limit;
    let start = taken(metrics).await.unwrap_or(0);
    let mut first: Option<Instant> = None;
    let mut shown = Instant::now();
    loop {
        let now = taken(metrics).await.unwrap_or(0);
        if now > start && first.is_none() {
            first = Some(Instant::now());
        }
        if now >= n {
            let secs = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
            eprintln!();
            return Ok(secs.max(0.001));
        }
        if shown.elapsed() > Duration::from_secs(1) && first.is_none() {
            shown = Instant::now();
            eprint!("\rwaiting for the worker's first batch ({now}/{n})      ");
        } else if shown.elapsed() > Duration::from_secs(1) {
            shown = Instant::now();
            let elapsed = first.map_or(0.0, |f| f.elapsed().as_secs_f64());
            let rate = (now - start) as f64 / elapsed.max(0.001);
            let left = (n - now) as f64 / rate.max(1.0);
            eprint!("\rapplied {now}/{n}, {rate:.0} records/s, about {left:.0} s left      ");
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {now} of {n} reports taken in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The worker's apply-lag histogram: (upper bound, cumulative count) per bucket.
async fn lag_buckets(metrics: &str) -> anyhow::Result<Vec<(f64, f64)>> {
    let text = reqwest::get(metrics).await?.text().await?;
    let prefix = "kollus_history_applied_lag_seconds_bucket{le=\"";
    Ok(text
        .lines()
        .filter_map(|l| {
            let (le, count) = l.strip_prefix(prefix)?.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect())
}

/// The `q` quantile of cumulative buckets, interpolated linearly within the bucket it falls in
/// (as Prometheus's `histogram_quantile`).
fn quantile(buckets: &[(f64, f64)], q: f64) -> f64 {
    let Some(&(_, total)) = buckets.last() else {
        return f64::NAN;
    };
    let rank = q * total;
    let mut below = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return below.0;
            }
            let within = (rank - below.1) / (count - below.1).max(1.0);
            return below.0 + (le - below.0) * within;
        }
        below = (le, count);
    }
    below.0
}

/// Bytes of the watch-history table with its indexes and TOAST (`watch_progress` is a view).
async fn stored_bytes(client: &tokio_postgres::Client) -> anyhow::Result<i64> {
    Ok(client
        .query_one(
            "SELECT pg_total_relation_size('watch_sessions')::bigint",
            &[],
        )
        .await?
        .get(0))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// A subject-tag key of this run's own (history-worker's `SUBJECT_TAG_KEY_FILE`).
fn bench_tagger() -> kollus_common::subject::Tagger {
    kollus_common::subject::Tagger::new(kollus_common::subject::SealKey::random_bytes())
}

fn start_worker(
    binary: &str,
    brokers: &str,
    database_url: &str,
    admin_port: u16,
) -> anyhow::Result<Child> {
    let keys = std::env::temp_dir().join(format!("kollus-bench-keys-{}", std::process::id()));
    let tag_key = kollus_common::subject::write_random_key_file(&keys, "subject-tag.key")?;
    Command::new(binary)
        .env("SUBJECT_TAG_KEY_FILE", tag_key)
        .env("DATABASE_URL", database_url)
        .env("KAFKA_BROKERS", brokers)
        .env("KAFKA_GROUP_ID", "bench-history")
        .env("LISTEN_ADDR", format!("127.0.0.1:{admin_port}"))
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {binary}"))
}

/// The naive worker: each report in its own transaction, with the worker's own code.
async fn naive(
    pool: &deadpool_postgres::Pool,
    reports: Vec<Envelope<LmsReport>>,
    connections: usize,
) -> anyhow::Result<f64> {
    use kollus_common::worker::Apply as _;
    let history = kollus_history_worker::history::History {
        pool: pool.clone(),
        metrics: kollus_history_worker::metrics::Metrics::new(),
        plausibility: Default::default(),
        write_shards: 1,
        tagger: bench_tagger(),
    };
    let records: Vec<_> = reports
        .iter()
        .enumerate()
        .map(|(i, e)| decoded(&message(e, i as i64)))
        .collect::<anyhow::Result<_>>()?;
    let n = records.len();
    let history = &history;
    let started = Instant::now();
    let failures = futures_util::stream::iter(records)
        .map(|r| async move { history.apply(std::slice::from_ref(&r)).await })
        .buffer_unordered(connections)
        .filter_map(|r| std::future::ready(r.err()))
        .collect::<Vec<_>>()
        .await;
    if let Some(e) = failures.first() {
        anyhow::bail!("{} naive applies failed, first: {e}", failures.len());
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// An envelope as the worker's consumer receives it.
fn message(e: &Envelope<LmsReport>, offset: i64) -> rdkafka::message::OwnedMessage {
    rdkafka::message::OwnedMessage::new(
        Some(serde_json::to_vec(e).expect("an envelope serializes")),
        Some(e.payload.partition_key().into_bytes()),
        TOPIC.into(),
        rdkafka::message::Timestamp::NotAvailable,
        0,
        offset,
        None,
    )
}

fn decoded(
    m: &rdkafka::message::OwnedMessage,
) -> anyhow::Result<kollus_common::worker::Record<LmsReport>> {
    let envelope = kollus_common::worker::decode(m).map_err(|e| anyhow::anyhow!(e))?;
    Ok(kollus_common::worker::Record { index: 0, envelope })
}

/// `History::apply` on records held in memory, in batches of 1000: what the worker's code costs
/// without Kafka. Also times the decoding alone.
async fn own_path(admin_url: &str, sessions: u64) -> anyhow::Result<()> {
    use kollus_common::worker::Apply as _;
    let db = fresh_database(admin_url, "kollus_bench_history_own").await?;
    let n = 200_000u64;
    // As the worker's WORKER_MAX_BATCH (default 1000) under a backlog.
    let batch: usize = std::env::var("WORKER_MAX_BATCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1000);
    let batches: Vec<Vec<rdkafka::message::OwnedMessage>> = (0..n)
        .map(|i| message(&generate(i, sessions), i as i64))
        .collect::<Vec<_>>()
        .chunks(batch)
        .map(<[_]>::to_vec)
        .collect();
    let started = Instant::now();
    for b in &batches {
        let (decoded, _) = kollus_common::worker::decode_batch::<LmsReport>(b);
        std::hint::black_box(decoded);
    }
    let decode_rps = n as f64 / started.elapsed().as_secs_f64();
    let history = kollus_history_worker::history::History {
        pool: kollus_common::db::pool(&DatabaseSettings::new(&db.url))?,
        metrics: kollus_history_worker::metrics::Metrics::new(),
        plausibility: Default::default(),
        write_shards: std::env::var("HISTORY_WRITE_SHARDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(4),
        tagger: bench_tagger(),
    };
    let started = Instant::now();
    for b in &batches {
        // Decoded here as the loop does before it calls `apply`: the figure includes it.
        let (records, _) = kollus_common::worker::decode_batch::<LmsReport>(b);
        history
            .apply(&records)
            .await
            .map_err(|e| anyhow::anyhow!("applying: {e}"))?;
    }
    let apply_rps = n as f64 / started.elapsed().as_secs_f64();
    println!(
        "RESULT own-path records={n} apply_rps={apply_rps:.0} decode_only_rps={decode_rps:.0} (no broker, batches of {batch}, {} write shards)",
        history.write_shards
    );
    // PostgreSQL's own ceiling on the rows just written: the same number of row updates, as
    // bare `UPDATE ... FROM unnest` of `batch` keys per round, split over as many connections
    // as the worker has shards, with nothing read and nothing merged.
    let shards = history.write_shards.max(1);
    let ceiling = update_ceiling(&history.pool, n as usize, batch, shards).await?;
    println!(
        "RESULT ceiling rows_per_s={ceiling:.0} (PostgreSQL alone: UPDATE ... FROM unnest, {batch} rows a round over {shards} connections); own path at {:.0}% of it",
        apply_rps / ceiling * 100.0
    );
    history.pool.close();
    db.drop_database().await
}

/// Rows/s PostgreSQL updates in place when given only that: `rows` updates of stored sessions
/// (keys read back first), `batch` a round split over `shards` concurrent transactions.
async fn update_ceiling(
    pool: &deadpool_postgres::Pool,
    rows: usize,
    batch: usize,
    shards: usize,
) -> anyhow::Result<f64> {
    let keys: Vec<(String, String, i64)> = pool
        .get()
        .await?
        .query(
            "SELECT client_user_id, media_content_key, start_at FROM watch_sessions",
            &[],
        )
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    anyhow::ensure!(!keys.is_empty(), "no sessions to update");
    let update = "UPDATE watch_sessions t SET playtime = t.playtime + 1, \
                  last_report_at = clock_timestamp() \
                  FROM unnest($1::text[], $2::text[], $3::bigint[]) AS k(u, m, s) \
                  WHERE t.client_user_id = k.u AND t.media_content_key = k.m AND t.start_at = k.s";
    let started = Instant::now();
    let mut done = 0;
    let mut at = 0;
    while done < rows {
        let round: Vec<&(String, String, i64)> =
            (0..batch).map(|i| &keys[(at + i) % keys.len()]).collect();
        at += batch;
        let mut parts: Vec<Vec<&(String, String, i64)>> = vec![Vec::new(); shards];
        for (i, k) in round.into_iter().enumerate() {
            parts[i % shards].push(k);
        }
        futures_util::future::try_join_all(parts.into_iter().map(|part| async move {
            let mut part = part;
            part.sort(); // one lock order, as the worker's
            part.dedup();
            let users: Vec<&str> = part.iter().map(|k| k.0.as_str()).collect();
            let media: Vec<&str> = part.iter().map(|k| k.1.as_str()).collect();
            let starts: Vec<i64> = part.iter().map(|k| k.2).collect();
            let mut client = pool.get().await?;
            let tx = client.transaction().await?;
            tx.execute(update, &[&users, &media, &starts]).await?;
            tx.commit().await?;
            anyhow::Ok(())
        }))
        .await?;
        done += batch;
    }
    Ok(done as f64 / started.elapsed().as_secs_f64())
}

struct BenchDb {
    admin: String,
    name: String,
    url: String,
}

async fn fresh_database(admin_url: &str, name: &str) -> anyhow::Result<BenchDb> {
    let (admin, conn) = tokio_postgres::connect(admin_url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {admin_url}"))?;
    tokio::spawn(conn);
    // Two statements: DROP DATABASE cannot share an (implicit) transaction.
    admin
        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let url = match admin_url.rsplit_once('/') {
        Some((base, _)) => format!("{base}/{name}"),
        None => anyhow::bail!("ADMIN_DATABASE_URL must name a database"),
    };
    let pool = kollus_common::db::pool(&DatabaseSettings::new(&url))?;
    kollus_common::db::migrate(&pool).await?;
    pool.close();
    Ok(BenchDb {
        admin: admin_url.into(),
        name: name.into(),
        url,
    })
}

impl BenchDb {
    async fn client(&self) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    async fn drop_database(self) -> anyhow::Result<()> {
        let (admin, conn) = tokio_postgres::connect(&self.admin, tokio_postgres::NoTls).await?;
        tokio::spawn(conn);
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await?;
        Ok(())
    }
}
