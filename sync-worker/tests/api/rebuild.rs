//! `--rebuild`: the catalog is thrown away and rebuilt from the topic, and equals the live one.

use std::time::Duration;

use kollus_common::kollus::CallbackKind;
use kollus_test_support::eventually;

use crate::helpers::{snapshot, spawn_worker};

#[tokio::test]
async fn a_rebuild_replays_the_topic_into_the_same_catalog() {
    let mut w = spawn_worker().await;
    for (kind, file) in [
        (CallbackKind::Upload, "upload.form"),
        (CallbackKind::Transcoding, "transcoding-success.form"),
        (CallbackKind::Channel, "channel-join.form"),
        (CallbackKind::ContentUpdate, "content-poster.form"),
        (CallbackKind::Channel, "channel-leave.form"),
        (CallbackKind::ContentUpdate, "content-delete.form"),
    ] {
        w.send_fixture(kind, file).await;
    }
    w.wait_applied(6).await;
    let db = w.h.db.client().await;
    let live = snapshot(&db).await;

    // While an instance runs, a rebuild is refused and touches nothing.
    let refused = w
        .build(true)
        .await
        .err()
        .expect("a rebuild beside a running member");
    assert!(format!("{refused:#}").contains("member"), "{refused:#}");
    assert_eq!(snapshot(&db).await, live);

    // Damage the catalog, so only a real replay can bring it back.
    w.h.stop().await;
    db.batch_execute(
        "UPDATE uploads SET filename = 'damaged'; \
         DELETE FROM content_events WHERE change = 'content_delete'; \
         INSERT INTO uploads (upload_file_key, first_event_at, last_event_at) \
         VALUES ('stray', now(), now())",
    )
    .await
    .unwrap();
    assert_ne!(snapshot(&db).await, live);

    let app = w
        .build(true)
        .await
        .expect("rebuilding with no member running");
    w.h.spawn(|stop| app.run_until(stop));
    eventually(
        "the rebuilt catalog to equal the live one",
        Duration::from_secs(30),
        || async { (snapshot(&db).await == live).then_some(()) },
    )
    .await;
}

#[tokio::test]
async fn snapshots_replay_into_the_same_catalog() {
    use crate::helpers::{api_snapshot, envelope};
    let mut w = spawn_worker().await;
    let join = "upload_file_key=u1&media_content_key=m1&channel_key=cha&update_type=channel_join";
    let events = [
        envelope(CallbackKind::Channel, join, 0),
        api_snapshot(
            "u1",
            30,
            31,
            Some("Intro"),
            &[("cha", "m1"), ("chb", "m1b")],
        ),
        api_snapshot("u2", 30, 32, None, &[]),
        envelope(CallbackKind::Upload, "upload_file_key=u2", 10),
        api_snapshot("u3", 30, 33, Some("Three"), &[("cha", "m3")]),
    ];
    for e in &events {
        w.resend(e).await;
    }
    w.wait_applied(events.len() as i64).await;
    let db = w.h.db.client().await;
    let live = snapshot(&db).await;
    assert!(
        live.iter().any(|r| r.contains("\"title\":\"Three\"")),
        "{live:#?}"
    );
    w.h.stop().await;
    db.batch_execute("TRUNCATE uploads, media_contents, channel_memberships, snapshot_channels")
        .await
        .unwrap();
    assert_ne!(snapshot(&db).await, live);
    let app = w.build(true).await.expect("rebuilding");
    w.h.spawn(|stop| app.run_until(stop));
    eventually(
        "the rebuilt catalog to equal the live one",
        Duration::from_secs(30),
        || async { (snapshot(&db).await == live).then_some(()) },
    )
    .await;
}
