//! Snapshots from Kollus's REST API beside the callbacks: ordered at the instant their request
//! started, so a callback received after that always wins, one received before loses; they fill
//! what the catalog lacks, correct memberships, follow "replace content", never delete, and mark
//! a confirmed absence until a later event clears it. Every case is applied in every arrival
//! order (and the whole set under shuffles): the catalog stays a function of the set of events.

use kollus_common::envelope::Envelope;
use kollus_common::kollus::platform::ContentEvent;
use kollus_common::kollus::CallbackKind::{Channel, ContentUpdate, Upload};
use kollus_test_support::TestDb;

use crate::helpers::{
    api_snapshot, apply_directly, assert_same_catalog, delivery, envelope, instant, permutations,
    spawn_worker, Replayer, Rng,
};

const JOIN_A: &str = "upload_file_key=u1&media_content_key=m1&channel_key=cha&channel_name=A\
    &profile_key=hi&update_type=channel_join";
const LEAVE_A: &str =
    "upload_file_key=u1&media_content_key=m1&channel_key=cha&update_type=channel_leave";

/// Applies `events` in every order, one per batch, and all in one batch forward and backward;
/// every catalog must be equal. Returns a database holding it.
async fn every_order(events: &[Envelope<ContentEvent>]) -> TestDb {
    let replayer = Replayer::new().await;
    let forward = replayer.run(events.iter().map(|e| vec![e]).collect()).await;
    let mut runs = 0;
    for order in permutations(&events.iter().collect::<Vec<_>>()) {
        let ids: Vec<String> = order.iter().map(|e| e.id.to_string()).collect();
        let got = replayer
            .run(order.into_iter().map(|e| vec![e]).collect())
            .await;
        assert_same_catalog(&got, &forward, &format!("arrival order {ids:?}"));
        runs += 1;
    }
    assert_eq!(
        runs,
        (1..=events.len()).product::<usize>(),
        "every order ran"
    );
    for batch in [events.iter().collect(), events.iter().rev().collect()] {
        let got = replayer.run(vec![batch]).await;
        assert_same_catalog(&got, &forward, "all in one batch");
    }
    replayer.run(events.iter().map(|e| vec![e]).collect()).await;
    replayer.db
}

async fn membership(db: &TestDb, m: &str, ch: &str) -> Option<bool> {
    db.client()
        .await
        .query_opt(
            "SELECT in_channel FROM channel_memberships \
             WHERE media_content_key = $1 AND channel_key = $2",
            &[&m, &ch],
        )
        .await
        .unwrap()
        .map(|r| r.get(0))
}

async fn playable(db: &TestDb, m: &str) -> bool {
    db.client()
        .await
        .query_one(
            "SELECT playable FROM media_playability WHERE media_content_key = $1",
            &[&m],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn a_snapshot_alone_fills_an_empty_catalog() {
    let db = every_order(&[api_snapshot(
        "u1",
        0,
        5,
        Some("3강 - 미적분 기초"),
        &[("cha", "m1"), ("chb", "m1b")],
    )])
    .await;
    let row = db
        .client()
        .await
        .query_one(
            "SELECT title, duration_seconds, poster_url, transcoding_stage, transcoding_state, \
                    transcoding_stage_name, absent_since IS NULL FROM uploads WHERE upload_file_key = 'u1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "3강 - 미적분 기초");
    assert_eq!(row.get::<_, i32>(1), 754);
    assert_eq!(
        row.get::<_, &str>(2),
        "https://v.kr.kollus.com/poster/u1.jpg"
    );
    assert_eq!(row.get::<_, i32>(3), 21);
    assert_eq!(row.get::<_, &str>(4), "success");
    assert_eq!(row.get::<_, &str>(5), "Transcoded");
    assert!(row.get::<_, bool>(6));
    assert!(playable(&db, "m1").await && playable(&db, "m1b").await);
    assert_eq!(membership(&db, "m1b", "chb").await, Some(true));
}

#[tokio::test]
async fn a_callback_received_after_the_request_started_wins_over_the_snapshot() {
    // The leave reached us at 10 s; the API request started at 5 s and, cached, still lists the
    // video in the channel: the leave stands, whichever arrives first.
    let db = every_order(&[
        envelope(Channel, JOIN_A, 0),
        envelope(Channel, LEAVE_A, 10),
        api_snapshot("u1", 5, 20, Some("Intro"), &[("cha", "m1")]),
    ])
    .await;
    assert_eq!(membership(&db, "m1", "cha").await, Some(false));
    assert!(!playable(&db, "m1").await);
    // It still fills what the callbacks lack.
    let title: String = db
        .client()
        .await
        .query_one(
            "SELECT title FROM uploads WHERE upload_file_key = 'u1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(title, "Intro");
}

#[tokio::test]
async fn a_snapshot_requested_after_a_callback_corrects_it_both_ways() {
    // A join missed during an outage: the last callback says left, the API (asked later) lists it.
    let db = every_order(&[
        envelope(Channel, JOIN_A, 0),
        envelope(Channel, LEAVE_A, 10),
        api_snapshot("u1", 30, 31, Some("Intro"), &[("cha", "m1")]),
    ])
    .await;
    assert_eq!(membership(&db, "m1", "cha").await, Some(true));
    let row = db
        .client()
        .await
        .query_one(
            "SELECT joined_at, left_at, decided_at, profile_keys FROM channel_memberships \
             WHERE media_content_key = 'm1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, time::OffsetDateTime>(0),
        instant(0),
        "callbacks' own times"
    );
    assert_eq!(row.get::<_, time::OffsetDateTime>(1), instant(10));
    assert_eq!(
        row.get::<_, time::OffsetDateTime>(2),
        instant(30),
        "decided by the snapshot"
    );
    assert!(
        row.get::<_, Vec<String>>(3).is_empty(),
        "profile keys from the latest callback (the leave named none); snapshots carry none"
    );

    // A leave missed: the last callback says joined, the API asked later lists no channel.
    let db = every_order(&[
        envelope(Channel, JOIN_A, 0),
        api_snapshot("u1", 30, 31, Some("Intro"), &[]),
    ])
    .await;
    assert_eq!(membership(&db, "m1", "cha").await, Some(false));
    // ... unless the join came after the request started.
    let db = every_order(&[
        envelope(Channel, JOIN_A, 40),
        api_snapshot("u1", 30, 31, Some("Intro"), &[]),
    ])
    .await;
    assert_eq!(membership(&db, "m1", "cha").await, Some(true));
}

#[tokio::test]
async fn a_snapshot_never_deletes_and_never_undeletes() {
    let delete = "upload_file_key=u1&update_type=content_delete";
    let db = every_order(&[
        envelope(Channel, JOIN_A, 0),
        envelope(ContentUpdate, delete, 10),
        api_snapshot("u1", 30, 31, Some("Intro"), &[("cha", "m1")]),
    ])
    .await;
    assert!(!playable(&db, "m1").await, "a delete is final");
    // A snapshot that leaves a video out of a channel is a leave, not a delete.
    let db = every_order(&[
        envelope(Channel, JOIN_A, 0),
        api_snapshot("u1", 30, 31, Some("Intro"), &[]),
    ])
    .await;
    let deleted: bool = db
        .client()
        .await
        .query_one(
            "SELECT deleted_at IS NOT NULL FROM uploads WHERE upload_file_key = 'u1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!deleted);
}

#[tokio::test]
async fn replace_content_moves_the_media_content_key_to_the_new_upload() {
    let db = every_order(&[
        envelope(Channel, JOIN_A, 0),
        envelope(Upload, "upload_file_key=u2&filename=v2.mp4", 20),
        api_snapshot("u2", 30, 31, Some("Intro (re-cut)"), &[("cha", "m1")]),
        // The old upload, asked in the same scan, no longer lists the key.
        api_snapshot("u1", 30, 32, Some("Intro"), &[]),
    ])
    .await;
    let row = db
        .client()
        .await
        .query_one(
            "SELECT upload_file_key FROM media_contents WHERE media_content_key = 'm1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "u2");
    assert_eq!(membership(&db, "m1", "cha").await, Some(true));
    assert!(playable(&db, "m1").await);
}

#[tokio::test]
async fn a_confirmed_absence_holds_until_a_later_event_clears_it() {
    let absent = || api_snapshot("u1", 30, 31, None, &[]);
    // Absent: not playable, dated by the request.
    let db = every_order(&[envelope(Channel, JOIN_A, 0), absent()]).await;
    assert!(!playable(&db, "m1").await);
    let since: Option<time::OffsetDateTime> = db
        .client()
        .await
        .query_one(
            "SELECT absent_since FROM media_playability WHERE media_content_key = 'm1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(since, Some(instant(30)));
    // Readers that ask the view "deleted?" (token-api's strict catalog) see it as deleted; the
    // upload itself keeps no delete (a snapshot never deletes).
    let row = db
        .client()
        .await
        .query_one(
            "SELECT p.deleted_at, u.deleted_at IS NULL FROM media_playability p \
             JOIN uploads u USING (upload_file_key) WHERE media_content_key = 'm1'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<time::OffsetDateTime>>(0),
        Some(instant(30))
    );
    assert!(row.get::<_, bool>(1));
    // A callback received later clears it; one received before does not.
    let db = every_order(&[
        envelope(Channel, JOIN_A, 0),
        absent(),
        envelope(
            ContentUpdate,
            "upload_file_key=u1&update_type=content_poster",
            40,
        ),
    ])
    .await;
    assert!(playable(&db, "m1").await);
    // A later snapshot that finds it clears it too.
    let db = every_order(&[
        envelope(Channel, JOIN_A, 0),
        absent(),
        api_snapshot("u1", 60, 61, Some("Intro"), &[("cha", "m1")]),
    ])
    .await;
    assert!(playable(&db, "m1").await);
}

#[tokio::test]
async fn callbacks_and_snapshots_in_any_order_and_batching_give_one_catalog() {
    let events = vec![
        envelope(Channel, JOIN_A, 0),
        envelope(Channel, LEAVE_A, 10),
        api_snapshot("u1", 5, 6, Some("Intro"), &[("cha", "m1")]),
        api_snapshot(
            "u1",
            30,
            31,
            Some("Intro v2"),
            &[("cha", "m1"), ("chb", "m1b")],
        ),
        envelope(Upload, "upload_file_key=u2&filename=v2.mp4", 12),
        api_snapshot("u2", 30, 33, Some("Two"), &[("cha", "m2")]),
        api_snapshot("u3", 30, 34, None, &[]),
        envelope(
            Channel,
            "upload_file_key=u3&media_content_key=m3&channel_key=cha&update_type=channel_join",
            3,
        ),
        envelope(
            ContentUpdate,
            "upload_file_key=u2&update_type=content_poster",
            50,
        ),
    ];
    let (in_order, db) = apply_directly(events.iter().map(|e| vec![e]).collect()).await;
    assert!(playable(&db, "m1").await && playable(&db, "m1b").await && playable(&db, "m2").await);
    assert!(!playable(&db, "m3").await, "absent since 30 s");
    // Every event once or twice, shuffled, cut into batches (up to all in one).
    let replayer = Replayer::new().await;
    for seed in 1..=120u64 {
        let batches = delivery(&mut Rng::seeded(seed), &events, 2);
        let shape: Vec<usize> = batches.iter().map(Vec::len).collect();
        let shuffled = replayer.run(batches).await;
        assert_same_catalog(
            &shuffled,
            &in_order,
            &format!("delivery {seed} (batches of {shape:?})"),
        );
    }
}

#[tokio::test]
async fn absences_marked_and_cleared_are_counted() {
    let w = spawn_worker().await;
    let base = format!("http://127.0.0.1:{}", w.port);
    // The counters move just after the commit that `wait_applied` sees: poll them.
    let counted = |marked: f64, cleared: f64| {
        let base = base.clone();
        async move {
            let sample =
                |change: &str| format!("kollus_sync_absences_total{{change=\"{change}\"}}");
            kollus_test_support::eventually(
                &format!("absences marked {marked}, cleared {cleared}"),
                std::time::Duration::from_secs(10),
                || async {
                    let m = kollus_test_support::scrape(&base, &sample("marked")).await;
                    let c = kollus_test_support::scrape(&base, &sample("cleared")).await;
                    (m == Some(marked) && c == Some(cleared)).then_some(())
                },
            )
            .await
        }
    };
    w.resend(&envelope(Channel, JOIN_A, 0)).await;
    w.resend(&api_snapshot("u1", 30, 31, None, &[])).await;
    w.wait_applied(2).await;
    counted(1.0, 0.0).await;
    w.resend(&envelope(
        ContentUpdate,
        "upload_file_key=u1&update_type=content_poster",
        40,
    ))
    .await;
    w.wait_applied(3).await;
    counted(1.0, 1.0).await;
}
