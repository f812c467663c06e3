//! PostgreSQL cut mid-stream and a worker killed mid-batch: the tables end exactly as if
//! nothing had happened (nothing lost, nothing doubled).

use std::time::Duration;

use kollus_common::envelope::Envelope;
use kollus_common::kollus::lms::LmsReport;
use kollus_common::worker::Apply as _;
use kollus_history_worker::startup::Application;
use kollus_test_support::{eventually, scrape, ServiceProcess, TestDb};

use crate::helpers::{
    applied_once, assert_every_report_left_its_mark, assert_same_rows, history, missing_marks,
    records, settings, snapshot, TestWorker,
};

/// Report `n` of user `u{user}` (see [`crate::helpers::nth_report`]).
fn nth_report(user: u64, n: u64) -> Envelope<LmsReport> {
    crate::helpers::nth_report(&format!("u{user}"), n)
}

/// 40 users x 25 growing reports each: 1,000 records, 40 sessions. Returns what it published.
async fn publish_reports(w: &TestWorker, users: std::ops::Range<u64>) -> Vec<Envelope<LmsReport>> {
    let mut published = Vec::new();
    for n in 1..=25u64 {
        for user in users.clone() {
            let e = nth_report(user, n);
            w.publish(&e).await;
            published.push(e);
        }
    }
    published
}

/// The tables hold exactly what applying each of `published` once gives, and every report of
/// `published` left its own mark (a report the worker skipped, or lost, leaves none).
async fn assert_exact(w: &TestWorker, users: i64, published: &[Envelope<LmsReport>]) {
    let db = w.h.db.client().await;
    // First, by name: `applied_once` runs the same apply, so a report the apply skips is
    // missing from both sides of the comparison below; only the marks see it.
    assert_every_report_left_its_mark(&db, published).await;
    let row = db
        .query_one(
            "SELECT count(*), min(playtime), max(playtime), min(block_seconds[1]), \
                    min(jsonb_array_length(segments)), max(jsonb_array_length(segments)), \
                    (SELECT count(*) FROM watch_progress), (SELECT sum(sessions)::bigint FROM watch_progress) \
             FROM watch_sessions",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), users, "one session per user");
    assert_eq!(
        (row.get::<_, i64>(1), row.get::<_, i64>(2)),
        (250, 250),
        "maximums, never sums"
    );
    assert_eq!(row.get::<_, Option<i64>>(3), Some(25));
    assert_eq!(
        (row.get::<_, Option<i32>>(4), row.get::<_, Option<i32>>(5)),
        (Some(25), Some(25)),
        "25 segments in every session, one per report"
    );
    assert_eq!((row.get::<_, i64>(6), row.get::<_, i64>(7)), (users, users));
    assert_same_rows(
        &snapshot(&db).await,
        &applied_once(published).await,
        "the tables equal each report applied exactly once",
    );
}

/// The comparison the fault tests end with sees one report lost in the middle of a session:
/// the marks make each report count (without them, reports 1 and 25 alone give the same rows).
#[tokio::test]
async fn the_comparison_sees_one_lost_middle_report() {
    let all: Vec<_> = (1..=25).map(|n| nth_report(0, n)).collect();
    let mut one_lost = all.clone();
    let lost = one_lost.remove(12);
    let (whole, without) = (applied_once(&all).await, applied_once(&one_lost).await);
    assert_ne!(whole, without, "the snapshot without report 13 must differ");
    // And the mark check names it, and only it, in tables that lack it.
    let db = TestDb::new().await;
    let applied = history(&db).apply(&records(&one_lost)).await.unwrap();
    assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
    let missing = missing_marks(&db.client().await, &all).await;
    assert_eq!(missing.len(), 1, "{missing:#?}");
    assert!(missing[0].contains(&lost.id.to_string()), "{missing:#?}");
    assert!(
        missing[0].contains("u0/m1@1700000000 segment at 120 s"),
        "{missing:#?}"
    );
}

#[tokio::test]
async fn postgres_cut_mid_stream_delays_but_loses_nothing() {
    let mut w = TestWorker {
        h: kollus_test_support::Harness::new().await,
        port: 0,
    };
    let (proxy, database) = w.h.db.behind_proxy().await;
    let mut s = settings(&w.h);
    s.database = database;
    let app = Application::build(s)
        .await
        .expect("building history-worker");
    let port = app.port();
    w.h.spawn(|stop| app.run_until(stop));

    let mut published = publish_reports(&w, 0..20).await;
    w.wait_applied(500).await;
    proxy.cut();
    published.extend(publish_reports(&w, 20..40).await);
    // While PostgreSQL is away the worker retries and reports itself not ready.
    let http = reqwest::Client::new();
    eventually(
        "the worker to report not ready",
        Duration::from_secs(30),
        || async {
            let res = http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                .ok()?;
            (res.status() == 503).then_some(())
        },
    )
    .await;
    // A stuck worker's lag does not freeze: the oldest record it holds keeps ageing, and the
    // records behind it are counted from the fetch high watermark.
    let metric = |name: &'static str| {
        let base = format!("http://127.0.0.1:{port}");
        async move { scrape(&base, name).await }
    };
    eventually(
        "lag_seconds to grow past 2 s while stuck",
        Duration::from_secs(30),
        || async { (metric("kollus_history_lag_seconds").await? >= 2.0).then_some(()) },
    )
    .await;
    eventually(
        "consumer_lag_records to count the waiting records",
        Duration::from_secs(30),
        || async { (metric("kollus_history_consumer_lag_records").await? > 0.0).then_some(()) },
    )
    .await;
    proxy.restore();
    w.wait_applied(1000).await;
    assert_exact(&w, 40, &published).await;
    eventually(
        "lag back to 0 once caught up",
        Duration::from_secs(30),
        || async {
            let seconds = metric("kollus_history_lag_seconds").await?;
            let records = metric("kollus_history_consumer_lag_records").await?;
            (seconds == 0.0 && records == 0.0).then_some(())
        },
    )
    .await;
    let retries = scrape(
        &format!("http://127.0.0.1:{port}"),
        "kollus_history_retries_total",
    )
    .await
    .unwrap_or(0.0);
    assert!(retries > 0.0, "the outage was retried, not skipped");
    w.h.stop().await;
}

/// Small batches, so there is a middle of the stream to kill it in.
fn start_binary(w: &TestWorker) -> ServiceProcess {
    ServiceProcess::start(
        env!("CARGO_BIN_EXE_history-worker"),
        &w.h,
        &[("WORKER_MAX_BATCH", "10"), crate::helpers::tag_key_env()],
    )
}

#[tokio::test]
async fn kill_9_mid_batch_replays_to_the_same_tables() {
    let w = TestWorker {
        h: kollus_test_support::Harness::new().await,
        port: 0,
    };
    let published = publish_reports(&w, 0..40).await;
    let mut first = start_binary(&w);
    // Progress by its effect: every report grows its session's playtime by 10 s, up to 40
    // sessions of 250 s.
    let db = w.h.db.client().await;
    let played = || async {
        let row = db
            .query_one(
                "SELECT coalesce(sum(playtime), 0)::bigint FROM watch_sessions",
                &[],
            )
            .await
            .ok()?;
        Some(row.get::<_, i64>(0))
    };
    eventually(
        "some but not all reports applied",
        Duration::from_secs(60),
        || async { played().await.filter(|n| (1..40 * 250).contains(n)) },
    )
    .await;
    first.kill_9();
    let at_kill = played().await.unwrap();
    assert!(
        at_kill < 40 * 250,
        "killed mid-stream ({at_kill} s of 10,000 applied)"
    );
    // A new process takes over once the group has dropped the dead member, and replays what
    // was not committed; reports applied again change nothing.
    let second = start_binary(&w);
    w.wait_applied(1000).await;
    drop(second);
    assert_exact(&w, 40, &published).await;
}
