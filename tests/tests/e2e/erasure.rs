//! Erasing a user, end to end through the binaries (README "Erasing a user"; issue 32): two
//! users' reports (one of them also dead-lettered, with a uservalue) go through ingest, the
//! workers and the archiver; one user is erased. Afterwards every table, the read API and the
//! export answer for them as for a user never seen, the other user untouched; the archive holds
//! neither user's id nor uservalue in plaintext; the archiver destroyed the key in its location;
//! a report received before the erasure and replayed after it is dropped, one received after it
//! kept; and a restore into a new cluster plus both workers' `--rebuild`, with PostgreSQL's
//! tables lost, the erasure barrier and the receipts with them, brings back exactly the same
//! tables. `verify` passes before and after, and fails once a key is missing without an erasure.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use kollus_test_support::{eventually, read_topic};
use rdkafka::message::Message as _;
use serde_json::Value;

use crate::long_tier::{archive, empty_derived_tables};
use crate::read_api::report;
use crate::stack::*;

/// The user erased, the user kept, and a user never seen (what the erased one must look like).
const GONE: &str = "erase-me-e2e";
const KEPT: &str = "keep-me-e2e";
const NEVER: &str = "never-e2e-xx";
/// A uservalue only the erased user's requests carry: personal data like the id.
const UV: &str = "uv-only-erase-me-carries";

impl Stack {
    /// An LMS report with a uservalue in the URL, as Kollus's player posts it.
    async fn lms_with_uservalue(&self, body: Vec<u8>, uservalue: &str) -> u16 {
        self.http
            .post(format!(
                "{}/kollus/lms?secret={LMS_CALLBACK_SECRET}&uservalue0={uservalue}",
                self.ingest
            ))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// `GET` on token-api with `key`: status and body as text.
    async fn get_as(&self, key: &str, path: &str) -> (u16, String) {
        let res = self
            .http
            .get(format!("{}{path}", self.token_api))
            .bearer_auth(key)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.text().await.unwrap())
    }
}

/// Every row naming `user`, table by table, as JSON text.
async fn rows_of(db: &tokio_postgres::Client, user: &str) -> Vec<String> {
    let mut rows = Vec::new();
    for table in [
        "watch_sessions",
        "entitlements",
        "entitlement_changes",
        "drm_downloads",
        "playback_decisions",
        "console_views",
    ] {
        for r in db
            .query(
                &format!(
                    "SELECT to_jsonb(t)::text FROM {table} t WHERE client_user_id = $1 \
                     ORDER BY to_jsonb(t)::text"
                ),
                &[&user],
            )
            .await
            .unwrap()
        {
            rows.push(format!("{table}: {}", r.get::<_, String>(0)));
        }
    }
    rows
}

async fn sessions_of(db: &tokio_postgres::Client, user: &str) -> Vec<String> {
    db.query(
        "SELECT media_content_key FROM watch_sessions WHERE client_user_id = $1 ORDER BY 1",
        &[&user],
    )
    .await
    .unwrap()
    .iter()
    .map(|r| r.get(0))
    .collect()
}

/// Every table the workers derive, as JSON text.
async fn snapshot(db: &tokio_postgres::Client) -> Vec<String> {
    let mut rows = kollus_test_support::db::catalog_snapshot(db).await;
    rows.extend(kollus_test_support::db::history_snapshot(db).await);
    rows
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Every file of the archive (segments decompressed) that holds one of `needles` in plaintext.
fn plaintext_holders(dir: &Path, needles: &[&str]) -> Vec<String> {
    let mut found = Vec::new();
    for path in files(dir) {
        let raw = std::fs::read(&path).unwrap();
        let bytes = if path.extension().is_some_and(|e| e == "zst") {
            zstd::decode_all(&raw[..]).unwrap()
        } else {
            raw
        };
        let text = String::from_utf8_lossy(&bytes);
        for needle in needles {
            if text.contains(needle) {
                found.push(format!("{} holds {needle}", path.display()));
            }
        }
    }
    found
}

/// The read API's and the export's answers about `user`, with `user` written as `as_id`.
async fn what_token_api_says(stack: &Stack, user: &str, as_id: &str) -> Vec<(u16, String)> {
    let mut said = Vec::new();
    for path in [
        format!("/v1/users/{user}/history"),
        format!("/v1/users/{user}/media/mA/progress"),
        format!("/v1/users/{user}/entitlements"),
        format!("/v1/users/{user}/export?reason=erasure%20check"),
    ] {
        let (status, body) = stack.get_as(API_KEY, &path).await;
        said.push((status, body.replace(user, as_id)));
    }
    said
}

fn kollus_archive(args: &[&str], env: &[(&str, String)]) -> (bool, String) {
    let out = command("kollus-archive")
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("running kollus-archive");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[tokio::test]
async fn an_erased_user_is_gone_from_tables_archive_and_every_rebuild_and_the_other_stays() {
    let dir = std::env::temp_dir().join(format!("kollus-e2e-erasure-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let dir_s = dir.display().to_string();
    let stack = Stack::start_with_env(
        kollus_test_support::Broker::start().await,
        &[("token-api", "ARCHIVE_DIR", dir_s.clone())],
    )
    .await;
    let db = stack.db.client().await;
    let start = time::OffsetDateTime::now_utc().unix_timestamp() - 900;

    // Two reports of the user to erase (two videos), one of the other; and a template with no
    // JSON document naming the user to erase, which ingest refuses and dead-letters.
    for (user, media, at) in [
        (GONE, "mA", start),
        (GONE, "mB", start + 1),
        (KEPT, "mA", start),
    ] {
        let body = report(user, media, at, 30, 30, &[true, false, true]);
        assert_eq!(stack.lms_with_uservalue(body, UV).await, 200);
    }
    let refused = stack
        .http
        .post(format!(
            "{}/kollus/lms?secret={LMS_CALLBACK_SECRET}",
            stack.ingest
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("client_user_id={GONE}&uservalue0={UV}&pt=30"))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    eventually("the workers to apply the reports", SLACK, || async {
        (sessions_of(&db, GONE).await.len() == 2 && sessions_of(&db, KEPT).await.len() == 1)
            .then_some(())
    })
    .await;
    let kept_rows = rows_of(&db, KEPT).await;
    let never = what_token_api_says(&stack, NEVER, "someone").await;
    assert_ne!(what_token_api_says(&stack, GONE, "someone").await, never);

    // Archived: under subject keys, nothing readable of either user.
    let dumped = archive(&["dump", "--until-end", "--to", &dir_s], &stack.broker);
    assert!(dumped.contains("archived"), "{dumped}");
    let held = plaintext_holders(&dir, &[GONE, KEPT, UV]);
    assert!(held.is_empty(), "the archive in plaintext: {held:#?}");
    let (ok, said) = kollus_archive(&["verify", "--from", &dir_s], &stack.broker.env());
    assert!(ok, "verify before the erasure: {said}");

    // The erasure.
    let res = stack
        .http
        .post(format!("{}/v1/users/{GONE}/erasure", stack.token_api))
        .bearer_auth(ERASE_KEY)
        .json(&serde_json::json!({"basis": "pipa_36", "note": "ticket e2e"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    let receipt_at = res.headers()["location"].to_str().unwrap().to_owned();
    let accepted: Value = res.json().await.unwrap();
    let erasure_id = accepted["id"].as_str().unwrap().to_owned();

    // The tables, the read API and the export: as for a user never seen (asked now: the
    // export's archive coverage moved with the dump); the other untouched.
    assert_eq!(rows_of(&db, GONE).await, Vec::<String>::new());
    let never = what_token_api_says(&stack, NEVER, "someone").await;
    assert_eq!(what_token_api_says(&stack, GONE, "someone").await, never);
    assert_eq!(rows_of(&db, KEPT).await, kept_rows);

    // The archiver reads the erasure topic: the key is destroyed in its location, and the
    // location says so where token-api's receipt looks.
    archive(&["dump", "--until-end", "--to", &dir_s], &stack.broker);
    let records: Vec<PathBuf> = files(&dir.join("keys"))
        .into_iter()
        .filter(|p| p.display().to_string().contains(&erasure_id))
        .collect();
    assert_eq!(
        records.len(),
        1,
        "the location's erasure record: {records:?}"
    );
    eventually(
        "the receipt to name the location destroyed",
        SLACK,
        || async {
            let (status, body) = stack.get_as(ERASE_KEY, &receipt_at).await;
            let receipt: Value = serde_json::from_str(&body).ok()?;
            let archive = receipt["archive"].as_object()?;
            (status == 200 && !archive.is_empty() && archive.values().all(|v| v == "destroyed"))
                .then_some(())
        },
    )
    .await;

    // A report received before the erasure, replayed after it (the same record again), is
    // dropped; a report received after it is a returning user's, and kept.
    let playback = stack.broker.settings().playback_topic;
    let applied = stack.applied_reports().await;
    let old = read_topic(&stack.broker.addr, &playback, 3, SLACK).await;
    let replayed = old
        .iter()
        .find(|m| m.key().is_some_and(|k| k.starts_with(GONE.as_bytes())))
        .expect("the erased user's report on the topic");
    stack
        .broker
        .publish_raw(
            &playback,
            std::str::from_utf8(replayed.key().unwrap()).unwrap(),
            replayed.payload().unwrap(),
        )
        .await;
    let body = report(GONE, "mC", start + 2, 20, 20, &[true, true, false]);
    assert_eq!(stack.lms_with_uservalue(body, UV).await, 200);
    eventually("history-worker to take both", SLACK, || async {
        (stack.applied_reports().await == applied + 2).then_some(())
    })
    .await;
    assert_eq!(sessions_of(&db, GONE).await, ["mC"]);
    assert_eq!(rows_of(&db, KEPT).await, kept_rows);

    archive(&["dump", "--until-end", "--to", &dir_s], &stack.broker);
    let held = plaintext_holders(&dir, &[GONE, KEPT, UV]);
    assert!(held.is_empty(), "the archive in plaintext: {held:#?}");
    let (ok, said) = kollus_archive(&["verify", "--from", &dir_s], &stack.broker.env());
    assert!(ok, "verify after the erasure: {said}");
    let full = snapshot(&db).await;

    // Losing the cluster and PostgreSQL's tables, receipts and barrier with them: restore into
    // a new cluster, then both workers rebuild from the archive and that cluster.
    let fresh = stack.broker.another_cluster().await;
    let (ok, said) = kollus_archive(&["restore", "--from", &dir_s], &fresh.env());
    assert!(ok, "restore: {said}");
    empty_derived_tables(&db).await;
    db.batch_execute("TRUNCATE erasure_barrier, erasures")
        .await
        .unwrap();
    assert!(snapshot(&db).await.is_empty());
    let mut workers = Vec::new();
    for name in ["sync-worker", "history-worker"] {
        let child = command(name)
            .arg("--rebuild")
            .env("ARCHIVE_DIR", &dir_s)
            .envs(fresh.env())
            .env("KAFKA_GROUP_ID", fresh.group(name))
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
        "the rebuilt tables to equal the live ones, the erased user's past still absent",
        SLACK,
        || async { (snapshot(&db).await == full).then_some(()) },
    )
    .await;
    drop(workers);
    assert_eq!(sessions_of(&db, GONE).await, ["mC"]);

    // A key gone without an erasure: verify says which, and fails.
    let tagger = kollus_common::subject::Tagger::from_file(Path::new(
        &kollus_test_support::key_files()
            .env()
            .iter()
            .find(|(k, _)| *k == "SUBJECT_TAG_KEY_FILE")
            .unwrap()
            .1,
    ))
    .unwrap();
    let kept_tag = tagger.tag(KEPT);
    let kept_keys: Vec<PathBuf> = files(&dir.join("keys"))
        .into_iter()
        .filter(|p| {
            let p = p.display().to_string();
            p.contains(kept_tag.as_str()) && !p.contains("erasures")
        })
        .collect();
    assert!(!kept_keys.is_empty(), "the kept user's key in the location");
    for key in &kept_keys {
        std::fs::remove_file(key).unwrap();
    }
    let (ok, said) = kollus_archive(&["verify", "--from", &dir_s, "--no-topics"], &[]);
    assert!(
        !ok && said.contains(&format!("MISSING KEY subject {kept_tag} ")),
        "verify with a key lost: {said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
