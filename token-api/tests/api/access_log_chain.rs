//! The access log's chain (issue 31): rows sealed a moment after they are written, `verify`
//! naming the first row that breaks (altered, deleted, swapped, unsealed, a cut tail), late rows
//! sealed at the end, retention dropping a month and anchoring the chain, the endpoint behind
//! `audit`, and the service role that may only insert and read.

use std::time::Duration;

use kollus_test_support::{eventually, eventually_ok, TestDb};
use kollus_token_api::access_log::retention;
use kollus_token_api::access_log::seal::ChainKey;
use kollus_token_api::access_log::verify::{self, BreakKind, Report};
use kollus_token_api::auth::ApiKeys;
use kollus_token_api::configuration::Settings;
use kollus_token_api::startup::Application;

use crate::helpers::*;

const AUDIT_KEY: &str = "audit-key-0123456789abcdef";

fn key() -> ChainKey {
    ChainKey::from_file(kollus_test_support::key_files().access_log()).unwrap()
}

/// Settings sealing every 50 ms, with an `audit` key.
fn chain_settings(db: &TestDb, archive: Option<&std::path::Path>) -> Settings {
    let mut s = test_settings(db);
    s.access_log.access_log_seal_interval = Duration::from_millis(50);
    s.api_keys = ApiKeys::parse(&format!(
        "app:{APP_KEY},ops:{OPS_KEY},auditor[audit]:{AUDIT_KEY}"
    ))
    .unwrap();
    s.archive_dir = archive.map(|p| p.display().to_string());
    s
}

async fn start(settings: Settings) -> String {
    let app = Application::build(settings)
        .await
        .expect("building token-api");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    address
}

/// `n` rows of `class` (their `target` and `subject_tag` say which; one time for all, so two
/// rows differ in those alone), written as any feature writes them.
async fn rows(db: &tokio_postgres::Client, class: &str, n: i32) {
    db.execute(
        "INSERT INTO access_log (class, at, action, key_name, client_addr, subject_tag, target) \
         SELECT $1, now(), 'view_user', 'agent', '203.0.113.7', 'tag-' || g, 'row ' || g \
           FROM generate_series(1, $2) g",
        &[&class, &n],
    )
    .await
    .unwrap();
}

/// Waits until every row is sealed and there are `n` seals besides those of the `keys_reloaded`
/// rows each start writes (the key list in force).
async fn sealed(db: &tokio_postgres::Client, n: i64) {
    eventually_ok("every row sealed", Duration::from_secs(20), || async {
        let r = db
            .query_one(
                "SELECT (SELECT count(*) FROM access_log l WHERE NOT EXISTS \
                           (SELECT 1 FROM access_log_seals s \
                             WHERE s.class = l.class AND s.log_id = l.id)), \
                        (SELECT count(*) FROM access_log_seals) \
                          - (SELECT count(*) FROM access_log \
                              WHERE action = 'keys_reloaded' AND key_name = '-')",
                &[],
            )
            .await
            .unwrap();
        let (unsealed, seals): (i64, i64) = (r.get(0), r.get(1));
        if unsealed == 0 && seals == n {
            Ok(())
        } else {
            Err(format!("{unsealed} unsealed, {seals} seals"))
        }
    })
    .await;
}

async fn check(db: &tokio_postgres::Client, archive: Option<&std::path::Path>) -> Report {
    let archive =
        archive.map(|p| kollus_archive::store::Archive::open(&p.display().to_string()).unwrap());
    verify::verify(db, &key(), archive.as_ref(), 730, None)
        .await
        .unwrap()
}

#[track_caller]
fn broken_at(report: &Report, log_id: i64, problem: BreakKind) {
    let b = report
        .first_break
        .as_ref()
        .unwrap_or_else(|| panic!("no break in {report:?}"));
    assert!(!report.ok);
    assert_eq!((b.log_id, b.problem), (log_id, problem), "{report:?}");
}

/// A log of 30 sealed access rows (ids 1 to 30) and the app that sealed them.
async fn sealed_log() -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::new().await;
    let client = db.client().await;
    rows(&client, "access", 30).await;
    start(chain_settings(&db, None)).await;
    sealed(&client, 30).await;
    let report = check(&client, None).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.chains["access"].rows, 30);
    assert_eq!(report.chains["access"].end, Some(30));
    assert_eq!(report.heads, "not_configured");
    (db, client)
}

#[tokio::test]
async fn rows_are_sealed_and_a_changed_column_is_named_altered() {
    let (_db, client) = sealed_log().await;
    client
        .execute(
            "UPDATE access_log SET reason = 'covered up' WHERE id = 12",
            &[],
        )
        .await
        .unwrap();
    broken_at(&check(&client, None).await, 12, BreakKind::Altered);
    client
        .execute("UPDATE access_log SET reason = NULL WHERE id = 12", &[])
        .await
        .unwrap();
    assert!(
        check(&client, None).await.ok,
        "as it was, it verifies again"
    );
    // A moved time is a change too (the row's seal is then in another partition's reach).
    client
        .execute(
            "UPDATE access_log SET at = at - interval '1 second' WHERE id = 20",
            &[],
        )
        .await
        .unwrap();
    broken_at(&check(&client, None).await, 20, BreakKind::Altered);
}

#[tokio::test]
async fn a_deleted_row_is_named() {
    let (_db, client) = sealed_log().await;
    client
        .execute("DELETE FROM access_log WHERE id = 17", &[])
        .await
        .unwrap();
    broken_at(&check(&client, None).await, 17, BreakKind::Deleted);
    // Its seal too: the next row's seal names a row that is gone.
    client
        .execute("DELETE FROM access_log_seals WHERE log_id = 17", &[])
        .await
        .unwrap();
    broken_at(&check(&client, None).await, 17, BreakKind::Deleted);
}

#[tokio::test]
async fn two_rows_swapped_are_named_reordered() {
    let (_db, client) = sealed_log().await;
    client
        .batch_execute(
            "UPDATE access_log l SET target = o.target, subject_tag = o.subject_tag \
               FROM access_log o WHERE l.id IN (8, 9) AND o.id = 17 - l.id",
        )
        .await
        .unwrap();
    let report = check(&client, None).await;
    broken_at(&report, 8, BreakKind::Reordered);
    assert!(
        report.first_break.unwrap().detail.contains("row 9"),
        "names where it was sealed"
    );
}

#[tokio::test]
async fn an_old_row_slipped_in_without_a_seal_is_named_and_a_late_row_is_sealed() {
    let (_db, client) = sealed_log().await;
    // Committed late: a lower id than rows sealed, written just now. Sealed at the end.
    client
        .execute(
            "INSERT INTO access_log (id, class, action, key_name) \
             VALUES (0, 'access', 'search', 'late')",
            &[],
        )
        .await
        .unwrap();
    sealed(&client, 31).await;
    let prev: Option<i64> = client
        .query_one("SELECT prev_id FROM access_log_seals WHERE log_id = 0", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(prev, Some(30), "appended at the chain's end");
    let report = check(&client, None).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.chains["access"].end, Some(0));
    // An old id with an old time: out of the sealer's reach, never sealed, named.
    client
        .execute(
            "INSERT INTO access_log (id, class, at, action, key_name) \
             VALUES (-5, 'access', now() - interval '2 hours', 'search', 'forger')",
            &[],
        )
        .await
        .unwrap();
    broken_at(&check(&client, None).await, -5, BreakKind::Unsealed);
}

#[tokio::test]
async fn a_cut_tail_is_caught_by_the_daily_head() {
    let db = TestDb::new().await;
    let client = db.client().await;
    let dir = tempfile::tempdir().unwrap();
    rows(&client, "access", 30).await;
    rows(&client, "rights", 2).await;
    start(chain_settings(&db, Some(dir.path()))).await;
    sealed(&client, 32).await;
    let head = eventually("today's head", Duration::from_secs(20), || async {
        let heads = dir.path().join("access-log/heads");
        let entry = std::fs::read_dir(&heads).ok()?.next()?.ok()?;
        Some(std::fs::read_to_string(entry.path()).unwrap())
    })
    .await;
    let head: serde_json::Value = serde_json::from_str(&head).unwrap();
    assert_eq!(head["chains"]["access"]["log_id"], 30, "{head}");
    // The rights chain's end: the last of its rows (the start's key list among them).
    let rights_end: i64 = client
        .query_one("SELECT max(id) FROM access_log WHERE class = 'rights'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(head["chains"]["rights"]["log_id"], rights_end, "{head}");
    let report = check(&client, Some(dir.path())).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.heads_checked, 1);
    // The last three rows and their seals: the chain alone still verifies.
    client
        .batch_execute(
            "DELETE FROM access_log WHERE id >= 28 AND class = 'access'; \
             DELETE FROM access_log_seals WHERE log_id >= 28 AND class = 'access'",
        )
        .await
        .unwrap();
    assert!(
        check(&client, None).await.ok,
        "without the head it goes unseen"
    );
    broken_at(
        &check(&client, Some(dir.path())).await,
        30,
        BreakKind::HeadMissingRow,
    );
    // A head rewritten to name what is left: its own mac gives it away.
    let file = std::fs::read_dir(dir.path().join("access-log/heads"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut forged = head.clone();
    forged["chains"]["access"]["log_id"] = 27.into();
    std::fs::write(&file, serde_json::to_vec(&forged).unwrap()).unwrap();
    let report = check(&client, Some(dir.path())).await;
    broken_at(&report, 0, BreakKind::HeadForged);
}

#[tokio::test]
async fn retention_drops_a_past_month_anchors_the_chain_and_keeps_rights() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    // A month 800 days ago, with rows in it (the oldest ids), then this month's.
    client
        .batch_execute(
            "SELECT access_log_ensure_partitions(now() - interval '800 days', 1); \
             INSERT INTO access_log (class, at, action, key_name, target) \
             SELECT c, date_trunc('month', now() - interval '800 days') + interval '1 day', \
                    'keys_reloaded', 'ops', c || g \
               FROM (VALUES ('access'), ('rights')) v(c), generate_series(1, 3) g \
              ORDER BY c, g;",
        )
        .await
        .unwrap();
    rows(&client, "access", 4).await;
    start(chain_settings(&db, None)).await;
    sealed(&client, 10).await;
    assert!(check(&client, None).await.ok);
    let access_month = old_month(&client, "access_log_access").await;
    let rights_month = old_month(&client, "access_log_rights").await;
    // The last old access row (id 3: access rows came first) is what this month's first names.
    let done = retention::maintain(&mut client, &key(), 730).await.unwrap();
    assert_eq!(done.dropped.len(), 1, "{done:?}");
    assert_eq!(done.dropped[0].partition, access_month);
    assert_eq!((done.dropped[0].rows, done.dropped[0].anchors), (3, 1));
    assert!(gone(&client, &access_month).await);
    assert!(
        gone(
            &client,
            &access_month.replace("access_log_", "access_log_seals_")
        )
        .await
    );
    assert!(
        !gone(&client, &rights_month).await,
        "rights are kept 1,095 days"
    );
    let anchor: i64 = client
        .query_one(
            "SELECT log_id FROM access_log_anchors WHERE class = 'access'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(anchor, 3);
    let report = check(&client, None).await;
    assert!(report.ok, "verifies from the anchor: {report:?}");
    assert_eq!(report.chains["access"].rows, 4);
    assert_eq!(report.chains["access"].anchors, 1);
    assert_eq!(
        report.chains["rights"].rows, 4,
        "three old, the start's key list"
    );
    // New rows chain on; a second run has nothing to drop.
    rows(&client, "access", 2).await;
    sealed(&client, 9).await;
    assert!(check(&client, None).await.ok);
    assert!(retention::maintain(&mut client, &key(), 730)
        .await
        .unwrap()
        .dropped
        .is_empty());
}

/// The partition of `parent` for the month 800 days ago.
async fn old_month(client: &tokio_postgres::Client, parent: &str) -> String {
    client
        .query_one(
            "SELECT $1 || to_char(now() - interval '800 days', '\"_y\"YYYY\"m\"MM')",
            &[&parent],
        )
        .await
        .unwrap()
        .get(0)
}

async fn gone(client: &tokio_postgres::Client, table: &str) -> bool {
    client
        .query_one("SELECT to_regclass($1) IS NULL", &[&table])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn retention_refuses_a_month_with_an_unsealed_row() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    client
        .batch_execute(
            "SELECT access_log_ensure_partitions(now() - interval '800 days', 1); \
             INSERT INTO access_log (class, at, action, key_name) \
             VALUES ('access', date_trunc('month', now() - interval '800 days') + interval '1 day', \
                     'search', 'agent');",
        )
        .await
        .unwrap();
    let e = retention::maintain(&mut client, &key(), 730)
        .await
        .unwrap_err();
    assert!(format!("{e:#}").contains("without a seal"), "{e:#}");
    let n: i64 = client
        .query_one("SELECT count(*) FROM access_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "nothing dropped");
}

#[tokio::test]
async fn the_endpoint_needs_audit_and_names_the_break() {
    let db = TestDb::new().await;
    let client = db.client().await;
    rows(&client, "access", 5).await;
    let address = start(chain_settings(&db, None)).await;
    sealed(&client, 5).await;
    let http = reqwest::Client::new();
    let get = |key: &'static str| {
        http.get(format!("{address}/v1/access-log/verify"))
            .bearer_auth(key)
            .send()
    };
    let refused = get(APP_KEY).await.unwrap();
    assert_eq!(refused.status(), 403, "an unscoped key has no audit");
    let body: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(body["scope"], "audit", "{body}");
    let ok: serde_json::Value = get(AUDIT_KEY).await.unwrap().json().await.unwrap();
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(ok["chains"]["access"]["rows"], 5);
    assert_eq!(ok["first_break"], serde_json::Value::Null);
    assert_eq!(ok["chains"]["access"]["end"], 5);
    client
        .execute(
            "UPDATE access_log SET key_name = 'someone else' WHERE id = 3",
            &[],
        )
        .await
        .unwrap();
    let res = get(AUDIT_KEY).await.unwrap();
    assert_eq!(res.status(), 200);
    let broken: serde_json::Value = res.json().await.unwrap();
    assert_eq!(broken["ok"], false, "{broken}");
    assert_eq!(broken["first_break"]["log_id"], 3, "{broken}");
    assert_eq!(broken["first_break"]["problem"], "altered", "{broken}");
    assert_eq!(broken["first_break"]["class"], "access", "{broken}");
}

/// A LOGIN role granted `kollus_service`, dropped when the test ends (roles are cluster-wide).
struct ServiceRole {
    name: String,
    admin_url: String,
}

impl Drop for ServiceRole {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), self.admin_url.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
                tokio::spawn(conn);
                // Its sessions (the app's pool) end first, or the role cannot go.
                client
                    .batch_execute(&format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                          WHERE usename = '{name}'; DROP ROLE IF EXISTS {name}"
                    ))
                    .await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
    }
}

#[tokio::test]
async fn the_service_role_may_only_insert_and_read_the_log_and_still_seals() {
    let db = TestDb::new().await;
    let admin = db.client().await;
    let role = ServiceRole {
        name: format!("kollus_svc_{}", uuid::Uuid::now_v7().simple()),
        admin_url: db.url.clone(),
    };
    admin
        .batch_execute(&format!(
            "CREATE ROLE {} LOGIN IN ROLE kollus_service",
            role.name
        ))
        .await
        .unwrap();
    let role_url = db.url.replacen("postgres@", &format!("{}@", role.name), 1);
    assert_ne!(role_url, db.url);
    let (svc, conn) = tokio_postgres::connect(&role_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    svc.execute(
        "INSERT INTO access_log (class, action, key_name) VALUES ('access', 'search', 'agent')",
        &[],
    )
    .await
    .expect("the service inserts");
    let n: i64 = svc
        .query_one("SELECT count(*) FROM access_log", &[])
        .await
        .expect("the service reads")
        .get(0);
    assert_eq!(n, 1);
    let leaf: String = admin
        .query_one(
            "SELECT format('access_log_access_y%sm%s', to_char(now() AT TIME ZONE 'UTC', 'YYYY'), \
                    to_char(now() AT TIME ZONE 'UTC', 'MM'))",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let refused = [
        "UPDATE access_log SET reason = 'x'".to_owned(),
        "DELETE FROM access_log".to_owned(),
        "TRUNCATE access_log".to_owned(),
        format!("UPDATE {leaf} SET reason = 'x'"),
        format!("DELETE FROM {leaf}"),
        format!("TRUNCATE {leaf}"),
        "UPDATE access_log_seals SET mac = ''".to_owned(),
        "DELETE FROM access_log_seals".to_owned(),
        "TRUNCATE access_log_seals".to_owned(),
        "INSERT INTO access_log_anchors (class, log_id, mac, partition) \
         VALUES ('access', 1, '', 'p')"
            .to_owned(),
        "CREATE TABLE mine (a int)".to_owned(),
        format!("DROP TABLE {leaf}"),
    ];
    for sql in &refused {
        let e = svc.batch_execute(sql).await.expect_err(sql);
        assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{sql}: {e}");
    }
    // token-api as that role (migrations and partitions through the superuser) serves and seals.
    let mut settings = chain_settings(&db, None);
    settings.database = kollus_common::settings::DatabaseSettings::new(&role_url);
    settings.database.migration_url = Some(secrecy::SecretString::from(db.url.clone()));
    let address = start(settings).await;
    let res = reqwest::Client::new()
        .get(format!("{address}/v1/users/u-1/entitlements"))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{}", res.text().await.unwrap());
    sealed(&admin, 1).await;
    assert!(check(&admin, None).await.ok);
}

#[tokio::test]
async fn a_finished_days_reads_become_one_sealed_row_and_the_sealer_is_measured() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO access_log_reads (day, key_name, subject_tag, subject_generation, \
                 subject_sealed, client_addr, first_at, last_at, count) VALUES \
             ((now() AT TIME ZONE 'UTC')::date - 1, 'app', 'tag-a', 1, '\\x01', '198.51.100.4', \
              now() - interval '1 day', now() - interval '20 hours', 41), \
             ((now() AT TIME ZONE 'UTC')::date, 'app', 'tag-a', 1, '\\x01', '198.51.100.4', \
              now(), now(), 3)",
        )
        .await
        .unwrap();
    rows(&client, "access", 2).await;
    let address = start(chain_settings(&db, None)).await;
    sealed(&client, 3).await;
    let read = client
        .query_one(
            "SELECT class, key_name, subject_tag, host(client_addr), count, \
                    at = now() - interval '1 day' OR at < now() - interval '23 hours' \
               FROM access_log WHERE action = 'api_read'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(read.get::<_, String>(0), "access");
    assert_eq!(read.get::<_, String>(1), "app");
    assert_eq!(read.get::<_, String>(2), "tag-a");
    assert_eq!(read.get::<_, String>(3), "198.51.100.4");
    assert_eq!(read.get::<_, i64>(4), 41);
    assert!(read.get::<_, bool>(5), "at the day's first read");
    let left: i64 = client
        .query_one("SELECT count(*) FROM access_log_reads", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 1, "today's counter stays until the day is over");
    assert!(check(&client, None).await.ok);
    let app = TestApp {
        address,
        db,
        client: reqwest::Client::new(),
    };
    assert_eq!(
        app.metric(r#"kollus_token_access_log_sealed_total{class="access"}"#)
            .await,
        3
    );
    assert_eq!(
        app.metric(r#"kollus_token_access_log_sealed_total{class="rights"}"#)
            .await,
        1,
        "the key list in force at start"
    );
    assert_eq!(
        app.metric(r#"kollus_token_access_log_rows_total{action="api_read"}"#)
            .await,
        1
    );
    // Measured at each run's start: the run after the one that sealed them sees none.
    eventually("no backlog", Duration::from_secs(20), || async {
        (app.metric("kollus_token_access_log_unsealed_rows").await == 0).then_some(())
    })
    .await;
    assert_eq!(
        app.metric("kollus_token_access_log_seal_failures_total")
            .await,
        0
    );
    assert_eq!(
        app.metric(r#"kollus_token_access_log_verifications_total{outcome="broken"}"#)
            .await,
        0
    );
}

/// `token-api access-log <what>` on `db`, as an operator runs it: its exit status and output.
fn command(db: &TestDb, what: &str, extra: &[(&str, &str)]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_token-api"))
        .args(["access-log", what])
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("KOLLUS_SECURITY_KEY", SECURITY_KEY)
        .envs(kollus_test_support::key_files().env())
        .env("KOLLUS_CUSTOM_KEY", CUSTOM_KEY)
        .env("TOKEN_API_KEYS", format!("app:{APP_KEY}"))
        .envs(extra.iter().copied())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn the_commands_verify_and_maintain_with_the_services_settings() {
    let (db, client) = sealed_log().await;
    let (code, out, err) = command(&db, "verify", &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["chains"]["access"]["rows"], 30, "{out}");
    assert_eq!(report["rows"], 31, "and the start's key list: {out}");
    assert!(
        err.contains("verify: 31/31 rows"),
        "progress on stderr: {err}"
    );
    client
        .execute("UPDATE access_log SET action = 'search' WHERE id = 4", &[])
        .await
        .unwrap();
    let (code, out, err) = command(&db, "verify", &[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        err.contains("BROKEN at access row 4: altered"),
        "names the first break: {err}"
    );
    let (code, out, err) = command(
        &db,
        "maintain",
        &[
            ("DATABASE_MIGRATION_URL", &db.url),
            ("ACCESS_LOG_RETENTION_DAYS", "730"),
        ],
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("0 dropped"), "{out}");
    let (code, _, err) = command(&db, "nonsense", &[]);
    assert_eq!(code, 1);
    assert!(err.contains("access-log verify"), "{err}");
}

/// A second implementation of the seal, in Python from the documented encoding alone
/// (`scripts/verify-access-log.py`, what an auditor runs without trusting our binary), agrees
/// with the sealer on every column, and names the row a change breaks.
#[tokio::test]
async fn an_independent_verifier_in_python_agrees_with_the_sealer() {
    let (db, client) = sealed_log().await;
    // Every column filled, with text JSON must escape: quotes, a backslash, Hangul.
    let id: i64 = client
        .query_one(
            "INSERT INTO access_log (class, action, key_name, session_hash, client_addr, \
                 subject_tag, subject_generation, subject_sealed, target, reason, count) \
             VALUES ('access', 'export_csv', 'agent \"kim\"', '\\x00ff10'::bytea, '2001:db8::7', \
                     'tag-x', 2, '\\xdeadbeef'::bytea, 'C:\\path', '환불 요청 #12 \"확인\"', 3) \
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    sealed(&client, 31).await;
    let run = || {
        let out = std::process::Command::new("python3")
            .arg(kollus_test_support::workspace_root().join("scripts/verify-access-log.py"))
            .env("DATABASE_URL", &db.url)
            .env(
                "ACCESS_LOG_KEY_FILE",
                kollus_test_support::key_files().access_log(),
            )
            .output()
            .expect("python3 runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (code, said) = run();
    assert_eq!(code, Some(0), "{said}");
    assert!(said.contains("ok: 32 rows verified"), "{said}");
    client
        .execute("UPDATE access_log SET count = 4 WHERE id = $1", &[&id])
        .await
        .unwrap();
    let (code, said) = run();
    assert_eq!(code, Some(1), "{said}");
    assert!(
        said.contains(&format!("access row {id} does not match")),
        "{said}"
    );
}

/// An anchor whose HMAC `maintain` did not write, at a row that is still there.
async fn forge_anchor(client: &tokio_postgres::Client, id: i64) {
    client
        .execute(
            "INSERT INTO access_log_anchors (class, log_id, mac, partition, dropped_at) \
             SELECT 'access', log_id, mac, 'x', now() FROM access_log_seals \
              WHERE class = 'access' AND log_id = $1",
            &[&id],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_forged_anchor_and_a_second_end_are_named() {
    let (_db, client) = sealed_log().await;
    // An anchor made by whoever can write the database (a seal's mac copied): not its HMAC.
    forge_anchor(&client, 17).await;
    broken_at(&check(&client, None).await, 17, BreakKind::AnchorForged);
    // Row 17 and its seal removed: row 18's seal finds its previous mac in that anchor, but row
    // 16's seal is now followed by none, short of the chain's end.
    client
        .batch_execute(
            "DELETE FROM access_log WHERE id = 17; \
             DELETE FROM access_log_seals WHERE log_id = 17",
        )
        .await
        .unwrap();
    broken_at(&check(&client, None).await, 16, BreakKind::SecondEnd);
}

/// A sealed log with three access rows in the month `days_ago` days back (its partition made
/// first) and two of now: 5 sealed rows.
async fn sealed_with_an_old_month(days_ago: u32) -> (TestDb, tokio_postgres::Client) {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(&format!(
            "SELECT access_log_ensure_partitions(now() - interval '{days_ago} days', 1); \
             INSERT INTO access_log (class, at, action, key_name, target) \
             SELECT 'access', \
                    date_trunc('month', now() - interval '{days_ago} days') + interval '1 day', \
                    'search', 'agent', 'old ' || g FROM generate_series(1, 3) g;"
        ))
        .await
        .unwrap();
    rows(&client, "access", 2).await;
    start(chain_settings(&db, None)).await;
    sealed(&client, 5).await;
    (db, client)
}

#[tokio::test]
async fn a_month_dropped_inside_retention_is_named() {
    let (_db, mut client) = sealed_with_an_old_month(400).await;
    // Dropped as if kept 30 days; the log is kept 730.
    let done = retention::maintain(&mut client, &key(), 30).await.unwrap();
    assert!(!done.dropped.is_empty(), "{done:?}");
    let within = verify::verify(&client, &key(), None, 30, None)
        .await
        .unwrap();
    assert!(within.ok, "kept 30 days, the drop was due: {within:?}");
    let report = check(&client, None).await;
    assert!(!report.ok, "{report:?}");
    assert_eq!(
        report.first_break.as_ref().map(|b| b.problem),
        Some(BreakKind::AnchorForged),
        "{report:?}"
    );
}

#[tokio::test]
async fn a_drop_keeps_its_own_retention_so_raising_the_setting_later_forges_nothing() {
    let (_db, mut client) = sealed_with_an_old_month(800).await;
    let done = retention::maintain(&mut client, &key(), 730).await.unwrap();
    assert!(!done.dropped.is_empty(), "{done:?}");
    let stored: Option<i32> = client
        .query_one(
            "SELECT retention_days FROM access_log_drops WHERE class = 'access'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored, Some(730));
    // Kept 730 days then, 1,000 now: the month was due when it went.
    for days in [730, 1000] {
        let report = verify::verify(&client, &key(), None, days, None)
            .await
            .unwrap();
        assert!(report.ok, "verified with {days} days: {report:?}");
    }
    // The retention is under the drop's HMAC: rewriting it is a forgery.
    client
        .execute(
            "UPDATE access_log_drops SET retention_days = 2000 WHERE class = 'access'",
            &[],
        )
        .await
        .unwrap();
    let report = check(&client, None).await;
    assert_eq!(
        report.first_break.as_ref().map(|b| b.problem),
        Some(BreakKind::AnchorForged),
        "{report:?}"
    );
}

#[tokio::test]
async fn retention_anchors_a_month_by_partition_even_for_a_row_in_default() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    // Ids 1 to 3 in a month 800 days ago; id 4 dated 900 days ago, a month with no partition
    // (DEFAULT), named by none of the month's seals' times; then this month's.
    client
        .batch_execute(
            "SELECT access_log_ensure_partitions(now() - interval '800 days', 1); \
             INSERT INTO access_log (class, at, action, key_name, target) \
             SELECT 'access', date_trunc('month', now() - interval '800 days') + interval '1 day', \
                    'search', 'agent', 'old ' || g FROM generate_series(1, 3) g; \
             INSERT INTO access_log (class, at, action, key_name, target) \
             VALUES ('access', now() - interval '900 days', 'search', 'agent', 'in default');",
        )
        .await
        .unwrap();
    rows(&client, "access", 2).await;
    start(chain_settings(&db, None)).await;
    sealed(&client, 6).await;
    let done = retention::maintain(&mut client, &key(), 730).await.unwrap();
    assert_eq!(done.dropped.len(), 1, "{done:?}");
    assert_eq!(
        done.dropped[0].anchors, 1,
        "row 3, which row 4's seal names"
    );
    let report = check(&client, None).await;
    assert!(report.ok, "{report:?}");
    assert_eq!(report.chains["access"].rows, 3);
}

#[tokio::test]
async fn the_service_role_cannot_pick_a_rows_id_or_time_and_the_owner_can() {
    let db = TestDb::new().await;
    let admin = db.client().await;
    let role = ServiceRole {
        name: format!("kollus_svc_{}", uuid::Uuid::now_v7().simple()),
        admin_url: db.url.clone(),
    };
    admin
        .batch_execute(&format!(
            "CREATE ROLE {} LOGIN IN ROLE kollus_service",
            role.name
        ))
        .await
        .unwrap();
    let role_url = db.url.replacen("postgres@", &format!("{}@", role.name), 1);
    let (svc, conn) = tokio_postgres::connect(&role_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let insert = "INSERT INTO access_log (class, at, action, key_name) \
                  VALUES ('access', $1::text::timestamptz, 'search', 'agent') RETURNING id";
    for at in [
        "infinity",
        "-infinity",
        "2999-01-01T00:00:00Z",
        "2000-01-01T00:00:00Z",
    ] {
        let e = svc.query_one(insert, &[&at]).await.expect_err(at);
        assert_eq!(e.code().map(|c| c.code()), Some("23514"), "{at}: {e}");
    }
    for when in ["now() + interval '5 months'", "now() - interval '1 day'"] {
        let e = svc
            .batch_execute(&format!(
                "INSERT INTO access_log (class, at, action, key_name) \
                 VALUES ('access', {when}, 'search', 'agent')"
            ))
            .await
            .expect_err(when);
        assert_eq!(e.code().map(|c| c.code()), Some("23514"), "{when}: {e}");
    }
    let id: i64 = svc
        .query_one(
            "INSERT INTO access_log (id, class, action, key_name) \
             VALUES (1000000, 'access', 'search', 'agent') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(id, 1_000_000, "the id is the sequence's");
    // The owner (migration role: imports, tests) may date a row, never to infinity.
    let e = admin.query_one(insert, &[&"infinity"]).await.unwrap_err();
    assert_eq!(e.code().map(|c| c.code()), Some("23514"), "{e}");
    admin
        .batch_execute(
            "INSERT INTO access_log (class, at, action, key_name) \
             VALUES ('access', now() - interval '1 day', 'search', 'agent'), \
                    ('access', now() + interval '6 months', 'search', 'agent')",
        )
        .await
        .unwrap();
    // The row past every month (DEFAULT) is moved into its month when that month is created.
    admin
        .query_one(
            "SELECT access_log_ensure_partitions(now() + interval '6 months', 1)",
            &[],
        )
        .await
        .expect("a month with rows in DEFAULT is created");
    let (in_default, leaf): (i64, String) = {
        let r = admin
            .query_one(
                "SELECT (SELECT count(*) FROM access_log_access_default), \
                        (SELECT tableoid::regclass::text FROM access_log \
                          WHERE at > now() + interval '5 months')",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(in_default, 0);
    assert!(leaf.starts_with("access_log_access_y"), "{leaf}");
}

#[tokio::test]
async fn maintain_gives_up_a_lock_it_waits_for_and_drops_later() {
    let db = TestDb::new().await;
    let mut client = db.client().await;
    client
        .batch_execute("SELECT access_log_ensure_partitions(now() - interval '800 days', 1)")
        .await
        .unwrap();
    let month = old_month(&client, "access_log_access").await;
    // A long transaction reading the log (a verification, the sealer): a DROP waits for it,
    // and every insert into the log would queue behind the DROP.
    let mut reader = db.client().await;
    let tx = reader.transaction().await.unwrap();
    tx.batch_execute("LOCK TABLE access_log IN ACCESS SHARE MODE")
        .await
        .unwrap();
    let outcome = tokio::time::timeout(
        Duration::from_secs(30),
        retention::maintain(&mut client, &key(), 730),
    )
    .await
    .expect("maintain waits for a lock 2 s at a time, not forever");
    let e = outcome.unwrap_err();
    assert!(format!("{e:#}").contains("lock timeout"), "{e:#}");
    assert!(!gone(&client, &month).await);
    tx.rollback().await.unwrap();
    let done = retention::maintain(&mut client, &key(), 730).await.unwrap();
    assert!(
        done.dropped.iter().any(|d| d.partition == month),
        "{done:?}"
    );
    assert!(gone(&client, &month).await);
}

#[tokio::test]
async fn a_failed_head_write_is_paused_and_a_log_without_heads_is_not_ok() {
    let db = TestDb::new().await;
    let client = db.client().await;
    // An archive where the heads' directory cannot be made (a file is in its way).
    let broken = tempfile::tempdir().unwrap();
    std::fs::write(broken.path().join("access-log"), b"").unwrap();
    let settings = chain_settings(&db, Some(broken.path()));
    let pool = kollus_common::db::pool(&settings.database).unwrap();
    let chain = kollus_token_api::access_log::Chain::new(
        &settings,
        pool,
        kollus_token_api::metrics::Metrics::new(),
    )
    .unwrap();
    rows(&client, "access", 3).await;
    chain.seal_once().await.expect("the seals are written");
    chain.seal_once().await.unwrap();
    assert_eq!(
        chain.metrics.access_log_head_failures.get(),
        1,
        "the second run waits out the pause"
    );
    // An archive with no head: fine on the first day, not once rows were sealed days ago.
    let empty = tempfile::tempdir().unwrap();
    let report = check(&client, Some(empty.path())).await;
    assert!(report.ok, "{report:?}");
    client
        .batch_execute("UPDATE access_log_seals SET sealed_at = now() - interval '2 days'")
        .await
        .unwrap();
    broken_at(
        &check(&client, Some(empty.path())).await,
        0,
        BreakKind::HeadsAbsent,
    );
}

/// A fresh LOGIN role in `kollus_service` and its session (the role dropped with the guard).
async fn service_session(db: &TestDb) -> (ServiceRole, tokio_postgres::Client) {
    let role = ServiceRole {
        name: format!("kollus_svc_{}", uuid::Uuid::now_v7().simple()),
        admin_url: db.url.clone(),
    };
    db.client()
        .await
        .batch_execute(&format!(
            "CREATE ROLE {} LOGIN IN ROLE kollus_service",
            role.name
        ))
        .await
        .unwrap();
    let role_url = db.url.replacen("postgres@", &format!("{}@", role.name), 1);
    assert_ne!(role_url, db.url);
    let (svc, conn) = tokio_postgres::connect(&role_url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    (role, svc)
}

#[tokio::test]
async fn temp_tables_of_the_service_role_shadow_nothing_the_log_resolves() {
    let db = TestDb::new().await;
    let admin = db.client().await;
    let (_role, svc) = service_session(&db).await;
    // A temp `access_log` the service owns: the trigger must still see the log's owner.
    svc.batch_execute("CREATE TEMP TABLE access_log (x int)")
        .await
        .unwrap();
    let e = svc
        .batch_execute(
            "INSERT INTO public.access_log (class, at, action, key_name) \
             VALUES ('access', now() - interval '1 day', 'search', 'agent')",
        )
        .await
        .expect_err("a backdated row of the service");
    assert_eq!(e.code().map(|c| c.code()), Some("23514"), "{e}");
    let id: i64 = svc
        .query_one(
            "INSERT INTO public.access_log (id, class, action, key_name) \
             VALUES (1000000, 'access', 'search', 'agent') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_ne!(id, 1_000_000, "the id is the sequence's");
    // A temp `access_log_reads` of made-up finished days: closing the reads ignores it.
    svc.batch_execute(
        "CREATE TEMP TABLE access_log_reads (day date, key_name text, subject_tag text, \
             subject_generation integer, subject_sealed bytea, client_addr inet, \
             first_at timestamptz, last_at timestamptz, count bigint); \
         INSERT INTO access_log_reads VALUES ((now() AT TIME ZONE 'UTC')::date - 1, 'app', \
             'made-up', 1, '\\x01', NULL, now() - interval '1 day', now() - interval '1 day', 99)",
    )
    .await
    .unwrap();
    let closed: i64 = svc
        .query_one("SELECT access_log_close_reads()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(closed, 0);
    // Counting a read still counts into the real table, not the temp one.
    let counted: bool = svc
        .query_one(
            "SELECT access_log_count_read('app', 'tag-b', 1, '\\x01'::bytea, NULL)",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(counted);
    let (made_up, real): (i64, i64) = {
        let r = admin
            .query_one(
                "SELECT (SELECT count(*) FROM access_log WHERE subject_tag = 'made-up'), \
                        (SELECT count(*) FROM access_log_reads WHERE subject_tag = 'tag-b')",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!((made_up, real), (0, 1));
}

#[tokio::test]
async fn the_service_role_may_truncate_the_workers_tables_and_never_the_log() {
    let db = TestDb::new().await;
    let (_role, svc) = service_session(&db).await;
    // As history-worker's and sync-worker's `--rebuild` do.
    svc.batch_execute("TRUNCATE watch_sessions")
        .await
        .expect("history-worker's rebuild");
    svc.batch_execute(
        "TRUNCATE channel_memberships, media_contents, uploads, content_events, \
                  snapshot_channels",
    )
    .await
    .expect("sync-worker's rebuild");
    for table in [
        "access_log",
        "access_log_seals",
        "access_log_reads",
        "access_log_access_default",
    ] {
        let e = svc
            .batch_execute(&format!("TRUNCATE {table}"))
            .await
            .expect_err(table);
        assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{table}: {e}");
    }
}
