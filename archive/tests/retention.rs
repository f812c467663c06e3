//! Retention that acts: a broker of the test's own checks retention every second, and the
//! playback topic keeps its records one second. The topic forgets what it held (its low
//! watermark moves past every record); `verify` says COVERED while the archive holds what was
//! deleted, and `history-worker --rebuild` from the archive alone yields the tables the live
//! worker built; with the archiver stopped, records deleted before it saw them are NOT COVERED,
//! by offset.
//!
//! Runs the real `history-worker` binary: `cargo build --workspace --bins` first (as `make test`
//! does).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kollus_archive::dump::{self, DumpSettings};
use kollus_archive::metrics::Metrics;
use kollus_archive::store::Archive;
use kollus_common::envelope::{Envelope, RawRequest};
use kollus_common::kollus::lms::LmsReport;
use kollus_common::kollus::CallbackKind;
use kollus_common::settings::KafkaSettings;
use kollus_test_support::db::history_snapshot;
use kollus_test_support::group::committed;
use kollus_test_support::{assert_same_rows, eventually, Broker, TestDb};
use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer as _};

/// How long the playback topic keeps a record once the test lets it forget.
const RETENTION_MS: &str = "1000";

/// A child process killed (SIGKILL) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A service binary built beside this test (`target/<profile>/`).
fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary's path");
    let path = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>/deps/<test>")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: build the services first (`cargo build --workspace --bins`, as `make \
         test` does)",
        path.display()
    );
    path
}

/// `history-worker` on `db` and `broker`, in consumer group `group`; `args` and `env` added.
fn history_worker(
    broker: &Broker,
    db: &TestDb,
    group: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> KillOnDrop {
    let mut command = Command::new(binary("history-worker"));
    command
        .args(args)
        .env("DATABASE_URL", &db.url)
        .envs(broker.env())
        .envs(kollus_test_support::key_files().env())
        .env("KAFKA_GROUP_ID", group)
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "error")
        .env("LOG_FORMAT", "text")
        .stdin(Stdio::null());
    for (k, v) in env {
        command.env(k, v);
    }
    KillOnDrop(command.spawn().expect("starting history-worker"))
}

/// A report of its own session (user `n`), as ingest would publish it.
fn report(n: usize) -> Envelope<LmsReport> {
    let json = serde_json::json!({
        "user_info": {"client_user_id": format!("u{n}"), "player_id": "p1", "device": "x86_64", "os": "MAC"},
        "content_info": {
            "media_content_key": format!("m{}", n % 3), "start_at": (1_700_000_000 + n).to_string(),
            "duration": "600", "playtime": (n % 50 + 10).to_string(), "real_playtime": "8",
            "runtime": "12", "showtime": "9", "last_play_at": (n % 40).to_string(),
            "playtime_percent": "5"
        },
        "block_info": {"block_count": "1", "blocks": {"b0": "1", "t0": "3", "p0": "40"},
            "sessions": [{"block": 0, "start_time": n % 60 * 10, "play_time": 10}]}
    })
    .to_string();
    let report = LmsReport::from_json(json.as_bytes()).expect("a valid report");
    Envelope::new(
        CallbackKind::Lms,
        report,
        RawRequest::body(Some("application/json"), json.as_bytes()),
    )
}

async fn publish(broker: &Broker, kafka: &KafkaSettings, users: std::ops::Range<usize>) {
    for n in users {
        let e = report(n);
        broker
            .publish(&kafka.playback_topic, &e.payload.partition_key(), &e)
            .await;
    }
}

/// (low, high) watermarks of each partition of `topic`. Blocking.
fn watermarks(brokers: &str, topic: &str) -> BTreeMap<i32, (i64, i64)> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "retention-test-watermarks")
        .set("log_level", "3")
        .create()
        .expect("a consumer to read watermarks");
    kollus_common::kafka::partitions(&consumer, topic)
        .expect("the topic's partitions")
        .into_iter()
        .map(|p| {
            let marks = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("watermarks");
            (p, marks)
        })
        .collect()
}

/// Polls until every partition of `topic` has forgotten every record it held (low watermark
/// = high watermark); returns the high watermarks.
async fn forgotten(brokers: &str, topic: &str) -> BTreeMap<i32, i64> {
    eventually(
        &format!("{topic} to forget its records (retention)"),
        // Retention is checked every second; a loaded machine gets its slack.
        Duration::from_secs(60),
        || async {
            let (b, t) = (brokers.to_owned(), topic.to_owned());
            let marks = tokio::task::spawn_blocking(move || watermarks(&b, &t))
                .await
                .expect("reading watermarks");
            marks
                .values()
                .all(|(low, high)| low == high)
                .then(|| marks.iter().map(|(p, (_, high))| (*p, *high)).collect())
        },
    )
    .await
}

/// Sets `topic`'s retention to `ms` (the other settings as the services create them: a plain
/// AlterConfigs replaces the topic's whole configuration).
async fn set_retention(brokers: &str, topic: &str, ms: &str) {
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("an admin client");
    let segment_ms = kollus_common::kafka::SEGMENT_MS.to_string();
    let config = AlterConfig::new(ResourceSpecifier::Topic(topic))
        .set("retention.ms", ms)
        .set("retention.bytes", "-1")
        .set("segment.ms", &segment_ms)
        .set("min.insync.replicas", "1");
    let results = admin
        .alter_configs(&[config], &AdminOptions::new())
        .await
        .expect("altering the topic's configuration");
    for r in results {
        r.unwrap_or_else(|(resource, code)| panic!("altering {resource:?}: {code}"));
    }
}

/// The continuous archiver (`kollus-archive dump`'s library entry), stopped by the sender.
fn archiver(
    archive: &Archive,
    kafka: &KafkaSettings,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let settings = DumpSettings {
        to: archive.location.clone(),
        until_end: false,
        group_id: None,
        segment_bytes: 64 * 1024 * 1024,
        // A segment closes (and its offsets are committed) a second after it opened.
        segment_seconds: 1,
        keys: Default::default(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (archive, kafka) = (archive.clone(), kafka.clone());
    let task = tokio::spawn(async move {
        let metrics = Metrics::new();
        dump::continuous(&archive, &kafka, &settings, &metrics, async {
            let _ = stopped.await;
        })
        .await
    });
    (stop, task)
}

fn verify_cli(dir: &str, broker: &Broker) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kollus-archive"))
        .args(["verify", "--from", dir])
        .envs(broker.env())
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("running kollus-archive verify");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

async fn wait_committed(brokers: &str, group: &str, topic: &str, n: i64, what: &str) {
    eventually(what, Duration::from_secs(90), || async {
        (committed(brokers, group, topic).await == n).then_some(())
    })
    .await;
}

#[tokio::test]
async fn retention_deletes_what_the_archive_holds_and_a_rebuild_still_restores_every_table() {
    let started = Instant::now();
    // Retention checked every second, from the broker's start (not 30 s after it).
    let (broker, live_db, rebuilt_db) = tokio::join!(
        Broker::dedicated_with_config(&[
            "log.retention.check.interval.ms=1000",
            "log.initial.task.delay.ms=0",
        ]),
        TestDb::new(),
        TestDb::new(),
    );
    let kafka = broker.settings();
    let playback = kafka.playback_topic.clone();
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .expect("creating the topics");
    let cluster = tokio::task::spawn_blocking({
        let brokers = broker.addr.clone();
        move || {
            let client = kollus_common::archive::inspector(&KafkaSettings::with_brokers(&brokers))
                .expect("a client");
            kollus_common::archive::cluster_id(&client)
        }
    })
    .await
    .unwrap();
    assert!(!cluster.is_empty(), "Apache Kafka reports a cluster id");
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_owned();
    let archive = Archive::open(&to).unwrap();

    // The archiver and the live worker run; the topic keeps records (days) until both are
    // through them.
    let (stop_archiver, archiving) = archiver(&archive, &kafka);
    let live_group = broker.group("history-worker");
    let _live = history_worker(&broker, &live_db, &live_group, &[], &[]);
    let first = 60;
    publish(&broker, &kafka, 0..first).await;
    wait_committed(
        &broker.addr,
        &live_group,
        &playback,
        first as i64,
        "the live worker to apply every report",
    )
    .await;
    wait_committed(
        &broker.addr,
        &kafka.archive_group_id,
        &playback,
        first as i64,
        "the archiver to commit every report (durable segments)",
    )
    .await;

    // Now the topic forgets them.
    let forgetting = Instant::now();
    set_retention(&broker.addr, &playback, RETENTION_MS).await;
    let high = forgotten(&broker.addr, &playback).await;
    eprintln!(
        "retention: the topic forgot {first} records {:.1} s after retention.ms={RETENTION_MS}",
        forgetting.elapsed().as_secs_f64()
    );
    assert_eq!(high.values().sum::<i64>(), first as i64, "{high:?}");
    let (b, t) = (broker.addr.clone(), playback.clone());
    let held = tokio::task::spawn_blocking(move || kollus_test_support::topic_record_count(&b, &t))
        .await
        .unwrap();
    assert_eq!(held, 0, "the topic holds none of them");

    // COVERED: the archive holds every deleted offset of every partition.
    let (code, out) = verify_cli(&to, &broker);
    assert_eq!(code, 0, "verify failed:\n{out}");
    for (p, high) in &high {
        let line = format!(
            "COVERED {playback}/{p}: archive (epoch 0001-{cluster}) holds up to offset {}, the \
             topic retains from offset {high}: every offset is somewhere",
            high - 1
        );
        assert!(out.contains(&line), "no `{line}` in:\n{out}");
    }
    assert!(!out.contains("NOT COVERED"), "{out}");

    // `--rebuild` from the archive (and the topic, which holds nothing now) into an empty
    // database: the tables the live worker built.
    let live = history_snapshot(&live_db.client().await).await;
    assert!(
        live.len() >= first,
        "the live worker built {} rows",
        live.len()
    );
    let rebuilding = Instant::now();
    let _rebuilt = history_worker(
        &broker,
        &rebuilt_db,
        &broker.group("rebuilt-history-worker"),
        &["--rebuild"],
        &[("ARCHIVE_DIR", &to)],
    );
    let rebuilt_client = rebuilt_db.client().await;
    let deadline = Instant::now() + Duration::from_secs(90);
    let rebuilt = loop {
        let rows = history_snapshot(&rebuilt_client).await;
        if rows == live || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_same_rows(
        &rebuilt,
        &live,
        "history rebuilt from the archive after the topic forgot",
    );
    eprintln!(
        "retention: rebuilt {} rows from the archive in {:.1} s",
        rebuilt.len(),
        rebuilding.elapsed().as_secs_f64()
    );

    // NOT COVERED: with the archiver stopped, records come and go before it sees them.
    stop_archiver.send(()).expect("the archiver runs");
    archiving
        .await
        .unwrap()
        .expect("the archiver stopped cleanly");
    let second = 30;
    publish(&broker, &kafka, first..first + second).await;
    let after = forgotten(&broker.addr, &playback).await;
    assert_eq!(
        after.values().sum::<i64>(),
        (first + second) as i64,
        "{after:?}"
    );
    let (code, out) = verify_cli(&to, &broker);
    assert_eq!(code, 1, "verify must fail:\n{out}");
    let mut missed = 0;
    for (p, high) in &high {
        let now = after[p];
        if now == *high {
            continue;
        }
        missed += 1;
        let line = format!(
            "NOT COVERED {playback}/{p}: archive (epoch 0001-{cluster}) holds up to offset {}, \
             the topic retains from offset {now}: offsets {high}..={} are in neither",
            high - 1,
            now - 1
        );
        assert!(out.contains(&line), "no `{line}` in:\n{out}");
    }
    assert!(missed > 0, "no partition got the second records: {after:?}");
    assert!(
        out.contains(&format!("FAILED: {missed} problem(s)")),
        "{out}"
    );
    eprintln!(
        "retention test: {:.1} s in all",
        started.elapsed().as_secs_f64()
    );
}
