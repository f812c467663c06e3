//! The archive end to end: traffic through ingest and both workers, `kollus-archive dump` of the
//! topics, a brand-new broker, `kollus-archive restore` (twice), both workers `--rebuild` from
//! it: every table equal to the one the lost cluster built.

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

/// Runs `kollus-archive` to completion; returns its standard output.
fn archive(args: &[&str], broker: &Broker) -> String {
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

async fn count(db: &tokio_postgres::Client, table: &str) -> i64 {
    db.query_one(&format!("SELECT count(*) FROM {table}"), &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_new_cluster_restored_from_the_archive_rebuilds_identical_tables() {
    let stack = Stack::start().await;
    for (route, file) in [
        ("upload", "upload.form"),
        ("transcoding", "transcoding-success.form"),
        ("channel", "channel-join.form"),
        ("content", "content-poster.form"),
        ("lms", "lms-android-hash.form"),
    ] {
        assert_eq!(
            stack.callback(route, fixture(file)).await.status(),
            200,
            "{file}"
        );
    }
    let start = time::OffsetDateTime::now_utc().unix_timestamp() - 900;
    for i in 0..40u64 {
        let user = format!("archived-{}", i % 7);
        stack
            .lms(report(
                &user,
                "mArch",
                start + (i % 3) as i64,
                10 + i,
                i,
                &[true, i % 2 == 0],
            ))
            .await;
    }
    // A template with no JSON document: refused and dead-lettered by ingest.
    let refused = stack.callback("lms", b"userid=u1&pt=30".to_vec()).await;
    assert_eq!(refused.status(), 400);

    let db = stack.db.client().await;
    eventually("the workers to apply everything", SLACK, || async {
        (stack.applied_reports().await == 41 && count(&db, "content_events").await == 4)
            .then_some(())
    })
    .await;
    let lost = snapshot(&db).await;
    let dead_letter_topic = stack.broker.settings().deadletter_topic;
    let refusal = |m: &rdkafka::message::OwnedMessage| {
        let v: serde_json::Value =
            serde_json::from_slice(m.payload().unwrap_or_default()).expect("a dead letter is JSON");
        (
            v["stage"].as_str().map(str::to_owned),
            v["reason"].as_str().map(str::to_owned),
            v["raw"]["body"].as_str().map(str::to_owned),
        )
    };
    let the_refusal = (
        Some("ingest".to_owned()),
        Some("lms_document_missing".to_owned()),
        Some("userid=u1&pt=30".to_owned()),
    );
    let dead_letters = read_topic(&stack.broker.addr, &dead_letter_topic, 1, SLACK).await;
    assert_eq!(
        dead_letters.iter().map(refusal).collect::<Vec<_>>(),
        std::slice::from_ref(&the_refusal),
        "the one dead letter is ingest's refusal of the template"
    );

    let dir = std::env::temp_dir().join(format!("kollus-e2e-archive-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_s = dir.display().to_string();
    let first = archive(&["dump", "--until-end", "--to", &dir_s], &stack.broker);
    assert!(first.contains("archived 46 records"), "{first}");
    let again = archive(&["dump", "--until-end", "--to", &dir_s], &stack.broker);
    assert!(
        again.contains("archived 0 records"),
        "committed offsets: {again}"
    );
    let verified = archive(&["verify", "--from", &dir_s], &stack.broker);
    assert!(
        verified.contains("46 records") && verified.ends_with("ok\n"),
        "{verified}"
    );

    // The cluster is lost; a new one gets the archive, twice (the second adds nothing applied).
    let new = stack.broker.another_cluster().await;
    for _ in 0..2 {
        let restored = archive(&["restore", "--from", &dir_s], &new);
        assert!(restored.contains("restored 46 records"), "{restored}");
    }
    // Restored twice: the refusal, twice (a dead letter is kept, not applied).
    let restored = read_topic(&new.addr, &dead_letter_topic, 2, SLACK).await;
    assert_eq!(
        restored.iter().map(refusal).collect::<Vec<_>>(),
        [the_refusal.clone(), the_refusal],
        "the restored dead letters"
    );

    // The tables go too (so only the replay can bring them back); both workers rebuild from
    // the new cluster.
    db.batch_execute(
        "TRUNCATE watch_sessions, channel_memberships, \
         media_contents, uploads, content_events",
    )
    .await
    .unwrap();
    assert!(snapshot(&db).await.is_empty());
    let mut workers = Vec::new();
    for name in ["sync-worker", "history-worker"] {
        let child = command(name)
            .arg("--rebuild")
            .envs(new.env())
            .envs(kollus_test_support::key_files().env())
            .env("DATABASE_URL", &stack.db.url)
            .env("KAFKA_GROUP_ID", format!("{name}-restored"))
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting a worker");
        workers.push(Process { name, child });
    }
    eventually(
        "the rebuilt tables to equal the lost cluster's",
        SLACK,
        || async { (snapshot(&db).await == lost).then_some(()) },
    )
    .await;
    let _ = std::fs::remove_dir_all(&dir);
}
