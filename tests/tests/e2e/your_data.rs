//! README's "Your data", as written: every shell command of that section is taken from
//! README.md and run against a pipeline of the test's own, with only the addresses, the backup
//! directory and the binaries' directory put in (`/tmp/kollus-backup`, `new-kafka:9092`,
//! `127.0.0.1:8081`, the development API key, `target/debug/`). A command that fails fails the
//! test; a worker's `--rebuild` runs in the background until the tables it rebuilds equal the
//! lost ones.

use kollus_test_support::{eventually, fixture, workspace_root};

use crate::readme::{self, Block, Reader};
use crate::stack::*;

/// Every table the workers derive, as JSON text: equal snapshots, equal data.
async fn snapshot(db: &tokio_postgres::Client) -> Vec<String> {
    let mut rows = kollus_test_support::db::catalog_snapshot(db).await;
    rows.extend(kollus_test_support::db::history_snapshot(db).await);
    rows
}

#[tokio::test]
async fn every_command_of_your_data_does_what_readme_says() {
    let blocks: Vec<Block> = readme::blocks()
        .into_iter()
        .filter(|b| b.section == "Your data")
        .collect();
    let commands: usize = blocks.iter().map(|b| b.commands.len()).sum();
    assert!(blocks.len() >= 3 && commands >= 10, "{blocks:#?}");

    let stack = Stack::start().await;
    for (route, file) in [
        ("upload", "upload.form"),
        ("transcoding", "transcoding-success.form"),
        ("channel", "channel-join.form"),
        ("channel", "channel-join-seed.form"),
        ("lms", "lms-seed.form"),
        ("lms", "lms-android-hash.form"),
    ] {
        assert_eq!(stack.callback(route, fixture(file)).await.status(), 200);
    }
    let db = stack.db.client().await;
    eventually("the workers to apply everything", SLACK, || async {
        let content: i64 = db
            .query_one("SELECT count(*) FROM content_events", &[])
            .await
            .ok()?
            .get(0);
        (stack.applied_reports().await == 2 && content == 4).then_some(())
    })
    .await;
    let lost = snapshot(&db).await;
    // The course the section's course export names (section "Courses" makes it), its user
    // enrolled.
    for (path, body) in [
        (
            "/v1/courses/safety-101",
            serde_json::json!({"title": "산업안전 기초", "lessons": [
                {"media_content_key": "mediacontentkey", "recognised_seconds": 300}, "vnCVPVyV"]}),
        ),
        (
            "/v1/users/181353/entitlements/course/safety-101",
            serde_json::json!({}),
        ),
    ] {
        let res = stack
            .http
            .put(format!("{}{path}", stack.token_api))
            .bearer_auth(API_KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
    }

    let backup = std::env::temp_dir().join(format!("kollus-e2e-your-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&backup);
    let new_cluster = stack.broker.another_cluster().await;
    let mut reader = Reader::for_stack(&workspace_root(), &stack)
        .put_in("/tmp/kollus-backup", &backup.display().to_string())
        .put_in("new-kafka:9092", &new_cluster.addr);

    let mut workers = Vec::new();
    let mut outputs = Vec::new();
    let mut rebuilt = false;
    for (b, block) in blocks.iter().enumerate() {
        if b == 1 {
            // "After losing a cluster": the tables go too, so only the rebuild brings them back.
            crate::long_tier::empty_derived_tables(&db).await;
            assert!(snapshot(&db).await.is_empty());
        }
        for example in &block.commands {
            if example.text.contains("--rebuild") {
                workers.push(reader.spawn("rebuild", &example.text));
                continue;
            }
            let Some(ran) = reader.run(&example.text).await else {
                continue;
            };
            // An HTTP error fails the command, as it would fail a reader.
            assert!(
                ran.success && ran.statuses().iter().all(|s| (200..300).contains(s)),
                "README command: {ran:#?}"
            );
            outputs.push((ran.command, ran.stdout));
        }
        if !workers.is_empty() {
            // A block that rebuilds ends when the tables are back, as a reader would wait.
            eventually(
                "the rebuilt tables to equal the lost cluster's",
                SLACK,
                || async { (snapshot(&db).await == lost).then_some(()) },
            )
            .await;
            rebuilt = true;
        }
    }
    assert!(rebuilt, "README's commands rebuild the tables");
    drop(workers);

    // Each command did what README says it does.
    let said = |what: &str| {
        outputs
            .iter()
            .filter(|(line, _)| line.contains(what))
            .map(|(_, out)| out.as_str())
            .collect::<Vec<_>>()
    };
    // 6 callbacks applied: every record, once.
    let dumped = said(" dump ");
    assert!(
        dumped.len() == 1 && dumped[0].contains("archived 6 records"),
        "{dumped:?}"
    );
    let verified = said(" verify ");
    assert!(
        verified[0].ends_with("ok\n") && verified[0].matches("COVERED ").count() == 12,
        "{verified:?}"
    );
    let restored = said(" restore ");
    assert!(restored[0].contains("restored 6 records"), "{restored:?}");
    let exports = said("/export");
    assert_eq!(exports.len(), 6, "{outputs:#?}");
    assert!(
        exports[0].contains("\"type\":\"session\""),
        "a user's JSON Lines: {}",
        exports[0]
    );
    assert!(
        exports[1].lines().count() == 2 && exports[1].contains("181353,mediacontentkey"),
        "the user's one session as CSV: {}",
        exports[1]
    );
    for said in [
        "\"type\":\"media\"",
        "\"filename\":\"lecture-seed.mp4\"",
        "\"type\":\"channel\"",
        "\"type\":\"user_totals\"",
    ] {
        assert!(
            exports[2].contains(said),
            "the video's JSON Lines: catalog, channel history and per-user totals: {}",
            exports[2]
        );
    }
    assert!(
        exports[3].lines().count() == 2 && exports[3].starts_with("client_user_id,"),
        "the video's per-user totals as CSV: {}",
        exports[3]
    );
    assert!(
        exports[4].contains("\"type\":\"user_course\"")
            && exports[4].contains("\"client_user_id\":\"181353\"")
            && exports[4].contains("\"course_id\":\"safety-101\""),
        "the course's JSON Lines: its enrolled user's answer: {}",
        exports[4]
    );
    assert!(
        exports[5].lines().count() == 3
            && exports[5].starts_with("client_user_id,course_id,lesson,")
            && exports[5].contains("181353,safety-101,1,mediacontentkey,"),
        "the course as CSV, a row per user and lesson: {}",
        exports[5]
    );
    let _ = std::fs::remove_dir_all(&backup);
}
