//! README's "Your data", as written: every shell command of that section is taken from
//! README.md and run against a pipeline of the test's own, with only the addresses, the backup
//! directory and the binaries' directory put in (`/tmp/kollus-backup`, `new-kafka:9092`,
//! `127.0.0.1:8081`, the development API key, `target/debug/`). A command that fails fails the
//! test; a worker's `--rebuild` runs in the background until the tables it rebuilds equal the
//! lost ones.

use std::process::{Command, Stdio};
use std::time::Duration;

use kollus_test_support::{eventually, fixture, workspace_root, Broker};

use crate::stack::*;

/// Every table the workers derive, as JSON text: equal snapshots, equal data.
async fn snapshot(db: &tokio_postgres::Client) -> Vec<String> {
    let mut rows = kollus_test_support::db::catalog_snapshot(db).await;
    rows.extend(kollus_test_support::db::history_snapshot(db).await);
    rows
}

/// The lines of each `sh` block of README's "Your data" section, block by block.
fn your_data_blocks() -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let start = readme
        .find("\n## Your data\n")
        .expect("README has \"Your data\"");
    let rest = &readme[start + 1..];
    let section = &rest[..rest[3..].find("\n## ").map_or(rest.len(), |i| i + 3)];
    let mut blocks = Vec::new();
    let mut current: Option<Vec<String>> = None;
    for line in section.lines() {
        match (&mut current, line.trim()) {
            (None, "```sh") => current = Some(Vec::new()),
            (Some(_), "```") => blocks.push(current.take().unwrap()),
            (Some(block), l) if !l.is_empty() && !l.starts_with('#') => block.push(l.to_owned()),
            _ => {}
        }
    }
    blocks
}

#[tokio::test]
async fn every_command_of_your_data_does_what_readme_says() {
    let blocks = your_data_blocks();
    let commands: usize = blocks.iter().map(Vec::len).sum();
    assert!(blocks.len() >= 3 && commands >= 10, "{blocks:#?}");

    let stack = Stack::start().await;
    for (route, file) in [
        ("upload", "upload.form"),
        ("transcoding", "transcoding-success.form"),
        ("channel", "channel-join.form"),
        ("lms", "lms-seed.form"),
        ("lms", "lms-android-hash.form"),
    ] {
        assert_eq!(stack.callback(route, fixture(file)).await.status(), 200);
    }
    let db = stack.db.client().await;
    eventually(
        "the workers to apply everything",
        Duration::from_secs(30),
        || async {
            let content: i64 = db
                .query_one("SELECT count(*) FROM content_events", &[])
                .await
                .ok()?
                .get(0);
            (stack.applied_reports().await == 2 && content == 3).then_some(())
        },
    )
    .await;
    let lost = snapshot(&db).await;

    let backup = std::env::temp_dir().join(format!("kollus-e2e-your-data-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&backup);
    let bin_dir = binary("kollus-archive")
        .parent()
        .unwrap()
        .display()
        .to_string();
    let new_cluster = Broker::start().await;
    let token_api = stack.token_api.trim_start_matches("http://").to_owned();
    let put_in = |line: &str| {
        line.replace("/tmp/kollus-backup", &backup.display().to_string())
            .replace("new-kafka:9092", &new_cluster.addr)
            .replace("127.0.0.1:8081", &token_api)
            .replace("dev-api-key-0123456789", API_KEY)
            .replace("target/debug/", &format!("{bin_dir}/"))
            // An HTTP error must fail the command, as it would fail a reader.
            .replace("curl -s ", "curl -sSf ")
    };

    // Assignments carry over to the commands after them, as in one terminal.
    let mut preamble = String::from("set -euo pipefail\n");
    let mut workers = Vec::new();
    let mut outputs = Vec::new();
    let mut rebuilt = false;
    for (b, block) in blocks.iter().enumerate() {
        if b == 1 {
            // "After losing a cluster": the tables go too, so only the rebuild brings them back.
            crate::long_tier::empty_derived_tables(&db).await;
            assert!(snapshot(&db).await.is_empty());
        }
        for line in block {
            let line = put_in(line);
            let is_assignment = line.starts_with("export ")
                || line.split_once('=').is_some_and(|(name, _)| {
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                }) && !line.contains(' ');
            if is_assignment || line.starts_with("K=") {
                preamble.push_str(&line);
                preamble.push('\n');
                continue;
            }
            // `exec` (through `env` for a leading `NAME=value`), so the process the test holds,
            // and kills at the end, is the command itself.
            let exec = if line
                .split_whitespace()
                .next()
                .is_some_and(|w| w.contains('='))
            {
                "exec env"
            } else {
                "exec"
            };
            let mut cmd = Command::new("bash");
            cmd.arg("-c")
                .arg(format!("{preamble}{exec} {line}"))
                .current_dir(workspace_root())
                .env("KAFKA_BROKERS", &stack.broker.addr)
                .env("KAFKA_TOPIC_PARTITIONS", "3")
                .env("DATABASE_URL", &stack.db.url)
                .env("LISTEN_ADDR", "127.0.0.1:0")
                .env("LOG_FORMAT", "text")
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null());
            if line.contains("--rebuild") {
                let child = cmd.spawn().expect("starting a worker");
                workers.push(Process {
                    name: "rebuild",
                    child,
                });
                continue;
            }
            let out = cmd.output().expect("running bash");
            let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
            assert!(
                out.status.success(),
                "README command {line:?}: {}\n{stdout}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            outputs.push((line, stdout));
        }
        if !workers.is_empty() {
            // A block that rebuilds ends when the tables are back, as a reader would wait.
            eventually(
                "the rebuilt tables to equal the lost cluster's",
                Duration::from_secs(60),
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
    // 5 callbacks applied plus the records of ingest's dead letters: every record, once.
    let dumped = said(" dump ");
    assert!(
        dumped.len() == 1 && dumped[0].contains("archived 5 records"),
        "{dumped:?}"
    );
    let verified = said(" verify ");
    assert!(
        verified[0].ends_with("ok\n") && verified[0].matches("COVERED kollus.").count() == 9,
        "{verified:?}"
    );
    let restored = said(" restore ");
    assert!(restored[0].contains("restored 5 records"), "{restored:?}");
    let exports = said("/export");
    assert_eq!(exports.len(), 4, "{outputs:#?}");
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
    assert!(exports.iter().all(|e| !e.is_empty()), "{exports:?}");
    let _ = std::fs::remove_dir_all(&backup);
}
