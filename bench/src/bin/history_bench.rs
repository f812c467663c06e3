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
//!    applied batch to its last.
//! 3. Lag: publishes at a steady rate while the worker runs; per record, `applied_at` (start of
//!    the transaction that applied it) minus `received_at` (set when published, as ingest would).
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
    let mut worker = start_worker(worker, brokers, &db.url)?;
    let client = db.client().await?;
    let done = wait_for(&client, records as i64, Duration::from_secs(900)).await?;
    let row = client
        .query_one(
            "SELECT extract(epoch FROM max(applied_at) - min(applied_at))::float8, \
                    (SELECT count(*) FROM watch_sessions), (SELECT count(*) FROM watch_progress) \
             FROM playback_events",
            &[],
        )
        .await?;
    let span: f64 = row.get(0);
    // The last batch's own time is not inside the span: add the time from its start to done.
    let drain_secs = span.max(0.001) + done.as_secs_f64().min(1.0);
    let worker_rps = records as f64 / drain_secs;
    println!(
        "RESULT worker records={records} sessions_rows={} rollup_rows={} seconds={drain_secs:.2} rps={worker_rps:.0}",
        row.get::<_, i64>(1),
        row.get::<_, i64>(2)
    );

    // 3: steady rate while the worker runs.
    let lag_rate = 10_000u64;
    let lag_records = lag_rate * 20;
    let start_lag = records;
    publish(
        &producer,
        (start_lag..start_lag + lag_records).map(|i| generate(i, sessions)),
        Some(lag_rate),
    )
    .await?;
    wait_for(
        &client,
        (records + lag_records) as i64,
        Duration::from_secs(300),
    )
    .await?;
    let lag = client
        .query_one(
            "SELECT percentile_cont(ARRAY[0.5, 0.99]) WITHIN GROUP \
                 (ORDER BY extract(epoch FROM applied_at - received_at)::float8) \
             FROM (SELECT * FROM playback_events ORDER BY received_at DESC LIMIT $1) recent",
            &[&(lag_records as i64)],
        )
        .await?;
    let lag: Vec<f64> = lag.get(0);
    println!(
        "RESULT lag rate={lag_rate}/s records={lag_records} p50_ms={:.1} p99_ms={:.1}",
        lag[0] * 1000.0,
        lag[1] * 1000.0
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

/// Waits until `n` reports are applied; returns how long after the last change it noticed.
async fn wait_for(
    client: &tokio_postgres::Client,
    n: i64,
    limit: Duration,
) -> anyhow::Result<Duration> {
    let deadline = Instant::now() + limit;
    loop {
        let row = client
            .query_one(
                "SELECT count(*), extract(epoch FROM clock_timestamp() - max(applied_at))::float8 \
                 FROM playback_events",
                &[],
            )
            .await?;
        let (count, since_last): (i64, Option<f64>) = (row.get(0), row.get(1));
        if count >= n {
            return Ok(Duration::from_secs_f64(since_last.unwrap_or(0.0).max(0.0)));
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "only {count} of {n} reports applied in {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn start_worker(binary: &str, brokers: &str, database_url: &str) -> anyhow::Result<Child> {
    Command::new(binary)
        .env("DATABASE_URL", database_url)
        .env("KAFKA_BROKERS", brokers)
        .env("KAFKA_GROUP_ID", "bench-history")
        .env("LISTEN_ADDR", "127.0.0.1:0")
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
    history.pool.close();
    db.drop_database().await
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
