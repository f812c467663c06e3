//! The archive as the long tier, end to end: a worker's `--rebuild` reads the archive first,
//! then the topic from the first offset the archive does not hold. Retention is not waited
//! for (it deletes by age, days here): the first half of a run's records is
//! archived from one broker, only the second half is produced to a fresh broker, and the
//! rebuild from both must equal the tables the whole run built.

use std::collections::HashSet;
use std::process::Stdio;

use kollus_test_support::{eventually, fixture, read_topic, Broker};
use rdkafka::message::Message as _;

use crate::read_api::report;
use crate::stack::*;

/// Every table the workers derive, as JSON text: equal snapshots, equal data.
async fn snapshot(db: &tokio_postgres::Client) -> Vec<String> {
    let mut rows = kollus_test_support::db::catalog_snapshot(db).await;
    rows.extend(kollus_test_support::db::history_snapshot(db).await);
    rows
}

/// Empties every table the workers derive (those of them that are tables, not views).
pub(crate) async fn empty_derived_tables(db: &tokio_postgres::Client) {
    db.batch_execute(
        "DO $$ DECLARE t text; BEGIN \
           FOR t IN SELECT c.relname FROM pg_class c \
             WHERE c.relkind IN ('r', 'p') AND c.relname = ANY (ARRAY['watch_progress', \
               'watch_sessions', 'channel_memberships', 'media_contents', 'uploads', \
               'content_events']) LOOP \
             EXECUTE format('TRUNCATE %I CASCADE', t); \
           END LOOP; END $$",
    )
    .await
    .unwrap();
}

async fn count(db: &tokio_postgres::Client, table: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

/// Runs `kollus-archive` to completion; returns its standard output.
pub fn archive(args: &[&str], broker: &Broker) -> String {
    let out = command("kollus-archive")
        .args(args)
        .envs(broker.env())
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("running kollus-archive");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "kollus-archive {args:?}: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Envelope ids of every record of `topic` the archive at `dir` holds.
async fn archived_ids(dir: &str, topic: &str) -> HashSet<String> {
    use kollus_common::archive::{entries, read_segment, Archive, KeyRing};
    let archive = Archive::open_existing(dir).unwrap();
    // Reports are sealed per user: opened with the test's key-encryption key.
    let kek = kollus_test_support::key_files()
        .env()
        .into_iter()
        .find(|(k, _)| *k == "ARCHIVE_KEK_FILE")
        .unwrap()
        .1;
    let mut keys = KeyRing::open(
        &kollus_common::erasure::keys_location(dir, None),
        std::path::Path::new(&kek),
    )
    .await
    .unwrap();
    let mut ids = HashSet::new();
    for e in entries(&archive).await.unwrap() {
        if e.topic != topic {
            continue;
        }
        let (records, _) = read_segment(&archive, &e, Some(&mut keys), None)
            .await
            .unwrap();
        for r in records {
            ids.insert(
                r.envelope_id()
                    .expect("the services' records carry an id")
                    .to_owned(),
            );
        }
    }
    ids
}

fn envelope_id(m: &rdkafka::message::OwnedMessage) -> String {
    let value: serde_json::Value = serde_json::from_slice(m.payload().unwrap()).unwrap();
    value["id"].as_str().unwrap().to_owned()
}

/// Posts a callback on a connection of its own: a pooled one may be closed by ingest's
/// keep-alive timeout (5 s) just as it is reused, while this test waits on a dump.
async fn post(stack: &Stack, route: &str, content_type: &str, body: Vec<u8>) {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let res = http
        .post(format!(
            "{}/kollus/{route}?secret={}",
            stack.ingest,
            secret_for(route)
        ))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{route}");
}

#[tokio::test]
async fn a_rebuild_from_the_archive_then_a_fresh_brokers_topic_equals_the_full_run() {
    let stack = Stack::start().await;
    let db = stack.db.client().await;
    let start = time::OffsetDateTime::now_utc().unix_timestamp() - 900;
    let post_reports = |range: std::ops::Range<u64>| {
        let stack = &stack;
        async move {
            for i in range {
                // Sessions that span both halves: the rebuild must merge across the tiers.
                let user = format!("tier-{}", i % 5);
                let blocks = [i % 2 == 0, i % 3 == 0, true];
                let body = report(&user, "mTier", start + (i % 2) as i64, 10 + i, i, &blocks);
                post(stack, "lms", "application/json", body).await;
            }
        }
    };
    let form = "application/x-www-form-urlencoded";

    // First half: the catalog's first callbacks and 30 reports, archived.
    for (route, file) in [
        ("upload", "upload.form"),
        ("transcoding", "transcoding-success.form"),
    ] {
        post(&stack, route, form, fixture(file)).await;
    }
    post_reports(0..30).await;
    eventually("the first half applied", SLACK, || async {
        (stack.applied_reports().await == 30 && count(&db, "content_events").await == 2)
            .then_some(())
    })
    .await;
    let dir = std::env::temp_dir().join(format!("kollus-e2e-tier-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_s = dir.display().to_string();
    let dumped = archive(&["dump", "--until-end", "--to", &dir_s], &stack.broker);
    assert!(dumped.contains("archived 32 records"), "{dumped}");

    // Second half, never archived.
    for (route, file) in [
        ("channel", "channel-join.form"),
        ("content", "content-poster.form"),
    ] {
        post(&stack, route, form, fixture(file)).await;
    }
    post_reports(30..60).await;
    eventually("the second half applied", SLACK, || async {
        (stack.applied_reports().await == 60 && count(&db, "content_events").await == 4)
            .then_some(())
    })
    .await;
    let full = snapshot(&db).await;

    // A fresh broker gets only what the archive does not hold (offsets from 0 again).
    let fresh = stack.broker.another_cluster().await;
    let topics = fresh.settings();
    // As a service would (Kafka creates no topic on first use here: auto.create.topics.enable
    // is off, as in production).
    kollus_common::kafka::ensure_topics(&topics, &topics.topics())
        .await
        .expect("creating the fresh broker's topics");
    let mut copied = 0;
    for (topic, total) in [(&topics.content_topic, 4), (&topics.playback_topic, 60)] {
        let archived = archived_ids(&dir_s, topic).await;
        let all = read_topic(&stack.broker.addr, topic, total, SLACK).await;
        assert_eq!(all.len(), total, "{topic}");
        for m in all.iter().filter(|m| !archived.contains(&envelope_id(m))) {
            let key = std::str::from_utf8(m.key().unwrap()).unwrap();
            fresh.publish_raw(topic, key, m.payload().unwrap()).await;
            copied += 1;
        }
    }
    assert_eq!(
        copied, 32,
        "the second half: 2 catalog callbacks and 30 reports"
    );

    // Every table emptied; both workers rebuild from the archive and the fresh broker.
    empty_derived_tables(&db).await;
    assert!(snapshot(&db).await.is_empty());
    let mut workers = Vec::new();
    for name in ["sync-worker", "history-worker"] {
        let child = command(name)
            .arg("--rebuild")
            .env("ARCHIVE_DIR", &dir_s)
            .envs(kollus_test_support::key_files().env())
            .envs(fresh.env())
            .env("DATABASE_URL", &stack.db.url)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting a worker");
        workers.push(Process { name, child });
    }
    eventually(
        "the rebuilt tables to equal the full run's",
        SLACK,
        || async { (snapshot(&db).await == full).then_some(()) },
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
