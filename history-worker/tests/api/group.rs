use std::time::Duration;

use kollus_history_worker::startup::Application;
use kollus_test_support::{eventually, scrape};

use crate::helpers::{applied_once, report, settings, snapshot, spawn_worker};

/// Two instances in one consumer group share the partitions: every report is applied once.
#[tokio::test]
async fn two_instances_share_the_work_and_apply_each_report_once() {
    let w = spawn_worker().await;
    let second = Application::build(settings(&w.h))
        .await
        .expect("second instance");
    let second_port = second.port();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let second_task = tokio::spawn(second.run_until(async {
        let _ = stop_rx.await;
    }));

    // Wait until the group has settled with both members before publishing, so the test
    // shows sharing rather than one member draining everything while the other joins.
    let assigned = |port: u16| async move {
        scrape(
            &format!("http://127.0.0.1:{port}"),
            "kollus_history_assigned_partitions",
        )
        .await
        .map(|v| v as i64)
    };
    eventually(
        "both members to own partitions",
        Duration::from_secs(60),
        || async {
            let (a, b) = (assigned(w.port()).await?, assigned(second_port).await?);
            (a > 0 && b > 0 && a + b == 3).then_some(())
        },
    )
    .await;

    let mut published = Vec::new();
    for user in 0..60 {
        for n in 1..=10u64 {
            let e = w.envelope(&report(
                &format!("user{user}"),
                "m1",
                1_700_000_000,
                [n, n, n, n, n],
                &[],
            ));
            w.publish(&e).await;
            published.push(e);
        }
    }
    w.wait_applied(600).await;

    let db = w.h.db.client().await;
    let row = db
        .query_one(
            "SELECT count(*), min(playtime), max(playtime) FROM watch_sessions",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 60, "one session per user");
    assert_eq!((row.get::<_, i64>(1), row.get::<_, i64>(2)), (10, 10));
    assert!(
        snapshot(&db).await == applied_once(&published).await,
        "the tables equal each report applied exactly once"
    );

    let applied = |port: u16| async move {
        scrape(
            &format!("http://127.0.0.1:{port}"),
            "kollus_history_records_total{outcome=\"applied\"}",
        )
        .await
        .unwrap_or(0.0) as u64
    };
    // Each user's reports grow and arrive in order (one key, one partition): each changed its
    // session once, whichever instance took it; one taken again in a rebalance changed nothing.
    let (a, b) = (applied(w.port()).await, applied(second_port).await);
    assert_eq!(a + b, 600);
    assert!(
        a > 0 && b > 0,
        "both instances applied records ({a} and {b})"
    );

    let _ = stop_tx.send(());
    second_task.await.unwrap().unwrap();
}
