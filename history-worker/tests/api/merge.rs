//! A report meets its stored session in one of two ways, which must agree: in the same batch
//! (merged in memory) or in a later one (its row read back and locked, merged, written back),
//! so every column must survive the trip through its row. And a session another writer
//! inserts first is merged with, never overwritten.

use kollus_common::envelope::{Envelope, RawRequest};
use kollus_common::kollus::lms::checksum::HashVerdict::{Absent, Verified};
use kollus_common::kollus::lms::LmsReport;
use kollus_common::kollus::lms::Segment;
use kollus_common::kollus::CallbackKind;
use kollus_common::worker::{Apply as _, ApplyError};
use kollus_test_support::{eventually, TestDb};
use serde_json::json;

use crate::helpers::{history, records, report, snapshot};

/// Three reports of one session, arriving out of order: counters not monotone in arrival,
/// block lists of different lengths, uservalues that differ, a position from a smaller runtime;
/// segments reported again, grown and late; one report unsigned; one offline report whose
/// device clock was flagged.
fn reports() -> Vec<Envelope<LmsReport>> {
    let mut docs = [
        report(
            "u1",
            "m1",
            1_700_000_000,
            [50, 40, 60, 45, 30],
            &[(1, 10, 50), (0, 0, 0)],
        ),
        report(
            "u1",
            "m1",
            1_700_000_000,
            [20, 10, 25, 15, 12],
            &[(0, 0, 0), (1, 7, 35), (1, 3, 15)],
        ),
        report(
            "u1",
            "m1",
            1_700_000_000,
            [80, 30, 90, 70, 55],
            &[(1, 4, 20)],
        ),
    ];
    docs[0]["uservalues"] = json!({"uservalue0": "first"});
    docs[1]["uservalues"] = json!({"uservalue0": "second", "uservalue1": "only-second"});
    docs.iter()
        .enumerate()
        .map(|(i, d)| {
            let r = LmsReport::from_json(d.to_string().as_bytes()).expect("a valid report");
            // The second is received a day before its start_at: only a device clock explains it.
            let early = if i == 1 { 86_400 } else { 0 };
            let at =
                time::OffsetDateTime::from_unix_timestamp(1_700_000_100 + 10 * i as i64 - early)
                    .unwrap();
            let mut r = r;
            r.segments = [
                vec![seg(21, 0, 3), seg(22, 0, 20)],
                vec![seg(21, 0, 3)],
                vec![seg(22, 0, 48), seg(23, 5, 10)],
            ][i]
                .clone();
            if i == 1 {
                // Offline (SPEC.md 4.3), and received far from its start: the device clock.
                r.content.serial = Some(7);
            }
            let mut e = Envelope::new(
                CallbackKind::Lms,
                r,
                RawRequest::body(Some("application/json"), d.to_string().as_bytes()),
            );
            e.received_at = at;
            e.lms_hash = [Some(Verified), Some(Verified), Some(Absent)][i];
            e
        })
        .collect()
}

fn seg(block: u32, start_time: u64, play_time: u64) -> Segment {
    Segment {
        block,
        start_time,
        play_time,
    }
}

#[tokio::test]
async fn a_session_merged_through_its_stored_row_equals_one_merged_in_memory() {
    let reports = reports();
    let (one_by_one, in_one_batch) = (TestDb::new().await, TestDb::new().await);
    let h = history(&one_by_one);
    for e in &reports {
        let applied = h.apply(&records(std::slice::from_ref(e))).await.unwrap();
        assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
    }
    history(&in_one_batch)
        .apply(&records(&reports))
        .await
        .unwrap();
    let rows = snapshot(&one_by_one.client().await).await;
    assert_eq!(rows, snapshot(&in_one_batch.client().await).await);

    // And both are the session policy: maximums, blocks merged per block, the position of the
    // largest runtime, the greatest of a uservalue the reports disagree on.
    let row: serde_json::Value = serde_json::from_str(&rows[0]).unwrap();
    assert_eq!(row["playtime"], 80);
    assert_eq!(row["real_playtime"], 40);
    assert_eq!(row["last_play_at"], 55);
    assert_eq!(row["blocks_played"], json!([true, true, true]));
    assert_eq!(row["block_seconds"], json!([10, 7, 3]));
    assert_eq!(
        row["uservalues"],
        json!({"uservalue0": "second", "uservalue1": "only-second"})
    );
    assert_eq!(
        row["segments"],
        json!([[21, 0, 3], [22, 0, 48], [23, 5, 10]])
    );
    assert_eq!(
        row["hash_verified"],
        json!(false),
        "one report was unsigned"
    );
    assert_eq!(row["device_clock"], json!(true));
    let progress: serde_json::Value = serde_json::from_str(&rows[1]).unwrap();
    assert_eq!(
        (
            &progress["sessions"],
            &progress["total_playtime"],
            &progress["blocks_watched"]
        ),
        (&json!(1), &json!(80), &json!(3))
    );
}

#[tokio::test]
async fn a_session_another_writer_inserts_first_is_merged_with_not_overwritten() {
    let db = TestDb::new().await;
    let h = history(&db);
    let reports = reports();
    // Another writer (a consumer that still owned the partition a moment ago) has inserted the
    // session, but not committed yet.
    let mut other = db.client().await;
    let other = other.transaction().await.unwrap();
    other
        .batch_execute(
            "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, playtime, \
                 first_report_at, last_report_at) \
             VALUES ('u1', 'm1', 1700000000, 999, to_timestamp(1700000000), to_timestamp(1700000000))",
        )
        .await
        .unwrap();
    let batch = records(&reports);
    let first = tokio::spawn({
        let batch = batch.clone();
        let h = history(&db);
        async move { h.apply(&batch).await }
    });
    // The worker's insert waits on the other writer's row; then the other writer commits.
    let watcher = db.client().await;
    eventually(
        "the worker to wait on the other writer",
        std::time::Duration::from_secs(20),
        || async {
            let row = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .ok()?;
            (row.get::<_, i64>(0) > 0).then_some(())
        },
    )
    .await;
    other.commit().await.unwrap();
    let raced = first.await.unwrap();
    assert!(matches!(raced, Err(ApplyError::Transient(_))), "{raced:?}");
    let rows = snapshot(&watcher).await;
    let session: serde_json::Value = serde_json::from_str(&rows[0]).unwrap();
    let progress: serde_json::Value = serde_json::from_str(&rows[1]).unwrap();
    assert_eq!(
        (&session["real_playtime"], &progress["total_real_playtime"]),
        (&json!(0), &json!(0)),
        "nothing of the raced attempt is kept: {session}"
    );

    // The loop retries the batch: now the row is there to merge with.
    h.apply(&batch).await.unwrap();
    let rows = snapshot(&watcher).await;
    let session: serde_json::Value = serde_json::from_str(&rows[0]).unwrap();
    assert_eq!(
        (&session["playtime"], &session["real_playtime"]),
        (&json!(999), &json!(40)),
        "the other writer's maximum kept, every report merged"
    );
    let progress: serde_json::Value = serde_json::from_str(&rows[1]).unwrap();
    assert_eq!(
        (
            &progress["sessions"],
            &progress["total_playtime"],
            &progress["total_real_playtime"]
        ),
        (&json!(1), &json!(999), &json!(40)),
        "one session, its totals grown by what the batch added"
    );
}

#[tokio::test]
async fn a_session_another_writer_updates_first_is_merged_with_not_overwritten() {
    let db = TestDb::new().await;
    let h = history(&db);
    let reports = reports();
    h.apply(&records(&reports[..1])).await.unwrap();
    // Another writer has merged a report into the stored session, not committed.
    let mut other = db.client().await;
    let other = other.transaction().await.unwrap();
    other
        .batch_execute("UPDATE watch_sessions SET playtime = 999")
        .await
        .unwrap();
    let batch = records(&reports[1..2]);
    let first = tokio::spawn({
        let batch = batch.clone();
        let h = history(&db);
        async move { h.apply(&batch).await }
    });
    // The worker read the committed rows; its write waits on the other writer's.
    let watcher = db.client().await;
    eventually(
        "the worker to wait on the other writer",
        std::time::Duration::from_secs(20),
        || async {
            let row = watcher
                .query_one(
                    "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'",
                    &[],
                )
                .await
                .ok()?;
            (row.get::<_, i64>(0) > 0).then_some(())
        },
    )
    .await;
    other.commit().await.unwrap();
    let raced = first.await.unwrap();
    assert!(
        matches!(raced, Err(ApplyError::Transient(_))),
        "a row changed since read is not overwritten: {raced:?}"
    );
    let rows = snapshot(&watcher).await;
    let session: serde_json::Value = serde_json::from_str(&rows[0]).unwrap();
    assert_eq!(
        (
            &session["playtime"],
            &session["device_clock"],
            &session["block_count"]
        ),
        (&json!(999), &json!(false), &json!(2)),
        "nothing of the raced attempt is kept: {session}"
    );

    h.apply(&batch).await.unwrap();
    let rows = snapshot(&watcher).await;
    let session: serde_json::Value = serde_json::from_str(&rows[0]).unwrap();
    let progress: serde_json::Value = serde_json::from_str(&rows[1]).unwrap();
    assert_eq!(
        (
            &session["playtime"],
            &session["device_clock"],
            &session["block_count"]
        ),
        (&json!(999), &json!(true), &json!(3)),
        "the other writer's merge kept, this report merged"
    );
    assert_eq!(
        (&progress["total_playtime"], &progress["blocks_watched"]),
        (&json!(999), &json!(3)),
        "the rollup agrees with its one session"
    );
}
