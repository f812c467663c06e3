//! `--rebuild`: watch history thrown away and replayed from the topic equals the live tables.

use kollus_history_worker::startup::Application;
use kollus_test_support::group::committed;

use crate::helpers::{
    applied_once, assert_every_report_left_its_mark, assert_same_rows, group, report, settings,
    snapshot, spawn_worker, with_segment,
};

#[tokio::test]
async fn a_rebuild_replays_the_topic_into_the_same_history() {
    let mut w = spawn_worker().await;
    // 10 users, two sessions each on one video, five growing reports per session; each report
    // also carries the 10 s it played as a segment of its own, so the history shows every
    // report, not only each session's largest.
    let mut published = Vec::new();
    for user in 0..10 {
        for start_at in [1_700_000_000, 1_700_086_400] {
            for n in 1..=5u64 {
                let e = w.envelope(&with_segment(
                    report(
                        &format!("u{user}"),
                        "m1",
                        start_at,
                        [n * 10, n * 5, n * 12, n * 8, n],
                        &[(1, n, n * 4), (u8::from(n > 3), 0, 0)],
                    ),
                    (n - 1) * 10,
                    10,
                ));
                w.publish(&e).await;
                published.push(e);
            }
        }
    }
    w.wait_applied(100).await;
    let db = w.h.db.client().await;
    let live = snapshot(&db).await;
    assert_eq!(
        live.len(),
        20 + 10,
        "sessions and their rollups (a view), nothing per report"
    );
    assert_every_report_left_its_mark(&db, &published).await;
    assert_same_rows(
        &live,
        &applied_once(&published).await,
        "the live history is each report applied once",
    );

    let mut s = settings(&w.h);
    s.consume.rebuild = true;
    let refused = Application::build(s.clone())
        .await
        .err()
        .expect("a rebuild beside a running member");
    assert!(format!("{refused:#}").contains("member"), "{refused:#}");
    assert_eq!(
        snapshot(&db).await,
        live,
        "a refused rebuild touches nothing"
    );

    w.h.stop().await;
    db.batch_execute(
        "UPDATE watch_sessions SET playtime = 0; \
         DELETE FROM watch_sessions WHERE client_user_id = 'u3' AND start_at = 1700000000",
    )
    .await
    .unwrap();
    assert_ne!(snapshot(&db).await, live);

    let app = Application::build(s)
        .await
        .expect("rebuilding with no member running");
    // The rebuild rewound the group before `build` returned: the replay is done once the group
    // has committed past every record again.
    let kafka = &w.h.kafka;
    assert_eq!(
        committed(&kafka.brokers, &group(&w.h), &kafka.playback_topic).await,
        0,
        "the rebuild rewound the group"
    );
    w.h.spawn(|stop| app.run_until(stop));
    w.wait_applied(100).await;
    assert_every_report_left_its_mark(&db, &published).await;
    assert_same_rows(
        &snapshot(&db).await,
        &live,
        "the rebuilt history equals the live one",
    );
}
