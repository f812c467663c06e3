use kollus_test_support::fixture;
use serde_json::json;

use crate::helpers::{report, spawn_worker};

#[tokio::test]
async fn the_seed_report_becomes_one_session() {
    let w = spawn_worker().await;
    let json: serde_json::Value = serde_json::from_slice(&fixture("lms-seed.json")).unwrap();
    let e = w.envelope(&json);
    w.publish(&e).await;
    w.wait_applied(1).await;

    let db = w.h.db.client().await;
    let row = db
        .query_one(
            "SELECT client_user_id, media_content_key, start_at, playtime, real_playtime, runtime, \
                    showtime, playtime_percent, last_play_at, block_count, \
                    cardinality(array_positions(blocks_played, true)), block_seconds[23], \
                    device, os \
             FROM watch_sessions",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "181353");
    assert_eq!(row.get::<_, &str>(1), "mediacontentkey");
    assert_eq!(row.get::<_, i64>(2), 1_593_586_044);
    assert_eq!(
        (
            row.get::<_, i64>(3),
            row.get::<_, i64>(4),
            row.get::<_, i64>(5),
            row.get::<_, i64>(6)
        ),
        (151, 151, 2245, 151)
    );
    assert_eq!(row.get::<_, i64>(7), 10);
    assert_eq!(row.get::<_, Option<i64>>(8), Some(1225));
    assert_eq!(row.get::<_, Option<i32>>(9), Some(30));
    assert_eq!(
        row.get::<_, Option<i32>>(10),
        Some(5),
        "blocks 21..=25 watched"
    );
    assert_eq!(
        row.get::<_, Option<i64>>(11),
        Some(48),
        "t22 (1-based index 23)"
    );
    assert_eq!(row.get::<_, Option<&str>>(12), Some("x86_64"));
    assert_eq!(row.get::<_, Option<&str>>(13), Some("MAC"));
    assert_eq!(
        w.outcomes().await,
        (1, 0),
        "one report, and it changed its session"
    );

    let progress = db
        .query_one(
            "SELECT sessions, total_real_playtime, blocks_watched, last_position FROM watch_progress",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(progress.get::<_, i32>(0), 1);
    assert_eq!(progress.get::<_, i64>(1), 151);
    assert_eq!(progress.get::<_, i32>(2), 5);
    assert_eq!(progress.get::<_, Option<i64>>(3), Some(1225));
}

#[tokio::test]
async fn a_session_reported_20_times_shuffled_and_duplicated_keeps_the_maximums() {
    let w = spawn_worker().await;
    let envelopes: Vec<_> = (1..=20u64)
        .map(|i| {
            // Block 0 watched from report 3 on, block 1 from report 12 on; counters grow.
            let blocks = [
                (u8::from(i >= 3), i.min(10), (i * 10).min(100)),
                (
                    u8::from(i >= 12),
                    i.saturating_sub(11),
                    (i.saturating_sub(11)) * 10,
                ),
                (0, 0, 0),
            ];
            w.envelope(&report(
                "u1",
                "m1",
                1_700_000_000,
                [i * 30, i * 20, i * 40, i * 25, i * 9],
                &blocks,
            ))
        })
        .collect();
    // A fixed shuffle, and every third record delivered twice (a Kafka re-delivery).
    let order = [
        7, 19, 0, 3, 12, 5, 18, 1, 9, 14, 2, 16, 6, 11, 4, 17, 8, 13, 10, 15,
    ];
    for (n, i) in order.iter().enumerate() {
        w.publish(&envelopes[*i]).await;
        if n % 3 == 0 {
            w.publish(&envelopes[*i]).await;
        }
    }
    // 20 reports, 7 of them delivered twice.
    w.wait_applied(27).await;

    let db = w.h.db.client().await;
    let row = db
        .query_one(
            "SELECT playtime, real_playtime, runtime, showtime, last_play_at, blocks_played, \
                    block_seconds, block_percent, playtime_percent \
             FROM watch_sessions",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2),
            row.get::<_, i64>(3)
        ),
        (600, 400, 800, 500),
        "the largest of each counter, never a sum"
    );
    assert_eq!(
        row.get::<_, Option<i64>>(4),
        Some(180),
        "position of the largest runtime"
    );
    assert_eq!(row.get::<_, Vec<bool>>(5), [true, true, false]);
    assert_eq!(row.get::<_, Vec<i64>>(6), [10, 9, 0]);
    assert_eq!(row.get::<_, Vec<i64>>(7), [100, 90, 0]);
    assert_eq!(row.get::<_, i64>(8), 100);
    let (applied, duplicate) = w.outcomes().await;
    assert_eq!(applied + duplicate, 27, "every delivery taken");
    assert!(
        duplicate >= 7,
        "each re-delivery changed nothing: {duplicate} duplicates"
    );
}

#[tokio::test]
async fn two_players_are_two_sessions_and_the_rollup_sums_them() {
    let w = spawn_worker().await;
    let first = w.envelope(&report(
        "u1",
        "m1",
        1_700_000_000,
        [100, 90, 120, 100, 95],
        &[(1, 30, 100), (1, 10, 33), (0, 0, 0)],
    ));
    let second = w.envelope(&report(
        "u1",
        "m1",
        1_700_003_600,
        [50, 40, 60, 50, 140],
        &[(0, 0, 0), (1, 5, 16), (1, 30, 100)],
    ));
    let other_user = w.envelope(&report(
        "u2",
        "m1",
        1_700_000_000,
        [7, 7, 7, 7, 7],
        &[(1, 7, 23), (0, 0, 0), (0, 0, 0)],
    ));
    for e in [&first, &second, &other_user] {
        w.publish(e).await;
    }
    w.wait_applied(3).await;

    let db = w.h.db.client().await;
    let sessions: i64 = db
        .query_one(
            "SELECT count(*) FROM watch_sessions WHERE client_user_id = 'u1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 2);
    let p = db
        .query_one(
            "SELECT sessions, total_playtime, total_real_playtime, blocks_ever_played, \
                    blocks_watched, last_position, first_watched_at = to_timestamp(1700000000) \
             FROM watch_progress WHERE client_user_id = 'u1' AND media_content_key = 'm1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(p.get::<_, i32>(0), 2);
    assert_eq!(p.get::<_, i64>(1), 150, "summing across sessions is right");
    assert_eq!(p.get::<_, i64>(2), 130);
    assert_eq!(
        p.get::<_, Vec<bool>>(3),
        [true, true, true],
        "union over sessions"
    );
    assert_eq!(p.get::<_, i32>(4), 3);
    assert_eq!(
        p.get::<_, Option<i64>>(5),
        Some(140),
        "resume from the newest session"
    );
    assert!(p.get::<_, bool>(6));
}

#[tokio::test]
async fn kollus_example_counters_are_kept_as_reported() {
    let w = spawn_worker().await;
    // Play 0-10 s at 2x, seek to 0, watch 10 s, pause 10 s; reported twice (periodic + pause).
    let e = w.envelope(&report(
        "u1",
        "m1",
        1_700_000_000,
        [40, 20, 30, 20, 10],
        &[],
    ));
    let again = w.envelope(&report(
        "u1",
        "m1",
        1_700_000_000,
        [40, 20, 30, 20, 10],
        &[],
    ));
    w.publish(&e).await;
    w.publish(&again).await;
    w.publish(&e).await; // delivered again (a rewind, a replay)
    w.wait_applied(3).await;
    let row =
        w.h.db
            .client()
            .await
            .query_one(
                "SELECT playtime, real_playtime, runtime, showtime FROM watch_sessions",
                &[],
            )
            .await
            .unwrap();
    assert_eq!(
        (
            row.get::<_, i64>(0),
            row.get::<_, i64>(1),
            row.get::<_, i64>(2),
            row.get::<_, i64>(3)
        ),
        (40, 20, 30, 20)
    );
    assert_eq!(
        w.outcomes().await,
        (2, 1),
        "the pause report repeats the periodic one's counters but arrived later (last_report_at); \
         the same record delivered again changed nothing"
    );
}

#[tokio::test]
async fn an_impossible_report_is_dead_lettered_with_the_reason() {
    let w = spawn_worker().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    // Started a minute ago, claims ten hours watched (and the play state to go with them): no
    // player plays that fast, and no `serial` says a device clock might be wrong.
    let impossible = w.envelope(&report(
        "u1",
        "m1",
        now - 60,
        [36_000, 10, 9_000, 9_000, 5],
        &[],
    ));
    let plausible = w.envelope(&report("u1", "m1", now - 60, [50, 45, 60, 50, 40], &[]));
    w.publish(&impossible).await;
    w.publish(&plausible).await;
    w.wait_applied(2).await;

    let v = the_one_dead_letter(&w).await;
    assert_eq!(v["stage"], "history-worker");
    assert_eq!(v["reason"], "implausible_clock");
    assert!(
        v["detail"].as_str().unwrap().contains("playtime 36000"),
        "{v}"
    );
    let record: serde_json::Value =
        serde_json::from_str(v["record"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        record["id"],
        impossible.id.to_string(),
        "the refused record is kept whole"
    );

    let playtime: i64 =
        w.h.db
            .client()
            .await
            .query_one("SELECT playtime FROM watch_sessions", &[])
            .await
            .unwrap()
            .get(0);
    assert_eq!(playtime, 50, "only the plausible report counted");
}

#[tokio::test]
async fn real_player_fields_reach_the_session_signed_segmented_and_offline() {
    use kollus_common::kollus::lms::checksum::HashVerdict;
    let w = spawn_worker().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let with_segments = |mut doc: serde_json::Value, segments: serde_json::Value| {
        doc["block_info"]["sessions"] = segments;
        doc
    };
    // One session, three signed reports whose segments repeat, grow and arrive late.
    let online = [
        (json!([[0, 0, 5]]), [20, 20, 25, 20, 20]),
        (json!([[0, 0, 5], [1, 3, 30]]), [60, 50, 70, 60, 55]),
        (json!([[0, 0, 5], [1, 3, 12]]), [40, 35, 45, 40, 38]),
    ];
    for (segments, counters) in online {
        let segments: Vec<serde_json::Value> = segments
            .as_array()
            .unwrap()
            .iter()
            .map(|t| json!({"block": t[0], "start_time": t[1], "play_time": t[2]}))
            .collect();
        let doc = with_segments(
            report("u1", "m1", now - 600, counters, &[(1, 5, 50), (1, 9, 90)]),
            json!(segments),
        );
        let mut e = w.envelope(&doc);
        e.lms_hash = Some(HashVerdict::Verified);
        w.publish(&e).await;
    }
    // Another video, watched offline on a device whose clock ran a day ahead; one report of it
    // unsigned. Real viewing: applied, flagged, and not verified.
    for (hash, playtime) in [(HashVerdict::Verified, 100), (HashVerdict::Absent, 200)] {
        let mut doc = report(
            "u1",
            "m2",
            now + 86_400,
            [playtime, playtime, playtime, playtime, 9],
            &[],
        );
        doc["content_info"]["serial"] = json!(playtime / 100);
        let mut e = w.envelope(&doc);
        e.lms_hash = Some(hash);
        w.publish(&e).await;
    }
    w.wait_applied(5).await;

    let db = w.h.db.client().await;
    let rows = db
        .query(
            "SELECT media_content_key, segments, hash_verified, device_clock, playtime \
             FROM watch_sessions ORDER BY media_content_key",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(
        rows[0].get::<_, serde_json::Value>(1),
        json!([[0, 0, 5], [1, 3, 30]])
    );
    assert_eq!(
        rows[0].get::<_, Option<bool>>(2),
        Some(true),
        "every report verified"
    );
    assert!(!rows[0].get::<_, bool>(3));
    assert_eq!(
        rows[1].get::<_, Option<bool>>(2),
        Some(false),
        "one report unsigned"
    );
    assert!(rows[1].get::<_, bool>(3), "the device clock is flagged");
    assert_eq!(rows[1].get::<_, i64>(4), 200, "offline viewing counts");
}

/// The viewer binding ingest judged reaches the session as `bound`: true only while every
/// report was bound, false once one was not, NULL when binding was off.
#[tokio::test]
async fn the_viewer_binding_reaches_the_session_as_all_of_its_reports() {
    use kollus_common::kollus::binding::Binding;
    let w = spawn_worker().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let cases: [(&str, &[Option<Binding>]); 3] = [
        ("m1", &[Some(Binding::Bound), Some(Binding::Bound)]),
        ("m2", &[Some(Binding::Bound), Some(Binding::Absent)]),
        ("m3", &[None]),
    ];
    let mut sent = 0;
    for (media, verdicts) in cases {
        for (i, verdict) in verdicts.iter().enumerate() {
            let n = 10 * (i as u64 + 1);
            let mut e = w.envelope(&report("u1", media, now - 600, [n, n, n, n, 5], &[]));
            e.binding = *verdict;
            w.publish(&e).await;
            sent += 1;
        }
    }
    w.wait_applied(sent).await;
    let rows =
        w.h.db
            .client()
            .await
            .query(
                "SELECT media_content_key, bound FROM watch_sessions ORDER BY media_content_key",
                &[],
            )
            .await
            .unwrap();
    let bound: Vec<(String, Option<bool>)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        bound,
        [
            ("m1".to_owned(), Some(true)),
            ("m2".to_owned(), Some(false)),
            ("m3".to_owned(), None)
        ]
    );
}

#[tokio::test]
async fn a_record_the_database_refuses_is_dead_lettered_and_the_partition_moves_on() {
    let w = spawn_worker().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let good = |n: u64| w.envelope(&report("u1", "m1", now - 600, [n, n, n, n, n], &[]));
    // PostgreSQL's jsonb cannot hold U+0000: applying this report fails every time (SQLSTATE
    // class 22), which no retry can fix. (ingest refuses it now; records from before, or from
    // elsewhere, can still carry it.)
    let mut poison = w.envelope(&report("u1", "m1", now - 600, [50, 50, 50, 50, 50], &[]));
    poison
        .payload
        .uservalues
        .insert("uservalue0".into(), "bad\u{0}value".into());
    // One key, so one partition, in this order: the poison sits between two good reports.
    for e in [good(10), poison.clone(), good(20)] {
        w.publish(&e).await;
    }
    w.wait_applied(3).await;
    let v = the_one_dead_letter(&w).await;
    assert_eq!(v["reason"], "refused_by_database");
    let record: serde_json::Value =
        serde_json::from_str(v["record"]["body"].as_str().unwrap()).unwrap();
    assert_eq!(record["id"], poison.id.to_string());
    let row =
        w.h.db
            .client()
            .await
            .query_one("SELECT playtime FROM watch_sessions", &[])
            .await
            .unwrap();
    assert_eq!(row.get::<_, i64>(0), 20, "the reports around it applied");
    assert_eq!(
        w.outcomes().await.0,
        2,
        "both good reports changed the session"
    );
}

/// The dead-letter topic's only record, as JSON (the topic holds no other).
async fn the_one_dead_letter(w: &crate::helpers::TestWorker) -> serde_json::Value {
    w.dead_letters(1).await.remove(0)
}
