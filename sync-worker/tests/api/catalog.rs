use std::time::Duration;

use kollus_common::kollus::CallbackKind;
use kollus_test_support::{eventually, scrape};

use crate::helpers::spawn_worker;

#[tokio::test]
async fn channel_join_makes_the_video_playable_in_that_channel() {
    let w = spawn_worker().await;
    w.send_fixture(CallbackKind::Channel, "channel-join.form")
        .await;
    w.wait_applied(1).await;

    let db = w.h.db.client().await;
    let row = db
        .query_one(
            "SELECT c.channel_key, c.channel_name, c.profile_keys, c.in_channel, p.playable, \
                    m.upload_file_key \
             FROM channel_memberships c \
             JOIN media_playability p USING (media_content_key) \
             JOIN media_contents m USING (media_content_key) \
             WHERE c.media_content_key = 'vnCVPVyV'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "ch-main");
    assert_eq!(row.get::<_, Option<&str>>(1), Some("Main"));
    assert_eq!(row.get::<_, Vec<String>>(2), ["pc-high", "mobile-low"]);
    assert!(row.get::<_, bool>(3));
    assert!(
        row.get::<_, bool>(4),
        "in a channel and not deleted: playable"
    );
    assert_eq!(row.get::<_, &str>(5), "ufk-0001");
}

#[tokio::test]
async fn the_lifecycle_of_an_upload_is_followed() {
    let w = spawn_worker().await;
    for (kind, file) in [
        (CallbackKind::Upload, "upload.form"),
        (CallbackKind::Transcoding, "transcoding-success.form"),
        (CallbackKind::Channel, "channel-join.form"),
        (CallbackKind::Channel, "channel-leave.form"),
        (CallbackKind::ContentUpdate, "content-poster.form"),
    ] {
        w.send_fixture(kind, file).await;
    }
    w.wait_applied(5).await;
    let db = w.h.db.client().await;
    let row = db
        .query_one(
            "SELECT u.filename, u.transcoding_state, u.uploaded_at IS NOT NULL, \
                    u.poster_changed_at IS NOT NULL, u.deleted_at IS NULL, p.playable, \
                    c.in_channel, c.left_at > c.joined_at \
             FROM uploads u JOIN media_playability p USING (upload_file_key) \
             JOIN channel_memberships c USING (media_content_key) \
             WHERE u.upload_file_key = 'ufk-0001'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "lecture-01.mp4");
    assert_eq!(row.get::<_, &str>(1), "success");
    assert!(row.get::<_, bool>(2) && row.get::<_, bool>(3) && row.get::<_, bool>(4));
    assert!(
        !row.get::<_, bool>(5),
        "left its only channel: not playable"
    );
    assert!(!row.get::<_, bool>(6));
    assert!(row.get::<_, bool>(7));
}

#[tokio::test]
async fn a_redelivered_record_changes_nothing() {
    let w = spawn_worker().await;
    let join = w
        .send_fixture(CallbackKind::Channel, "channel-join.form")
        .await;
    w.send_fixture(CallbackKind::Channel, "channel-leave.form")
        .await;
    w.wait_applied(2).await;
    // The join again, with its original envelope id, after the leave: a re-delivery.
    w.resend(&join).await;
    w.send_fixture(CallbackKind::Upload, "upload.form").await;
    w.wait_applied(3).await;
    let db = w.h.db.client().await;
    let in_channel: bool = db
        .query_one("SELECT in_channel FROM channel_memberships", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        !in_channel,
        "the re-delivered join must not undo the later leave"
    );

    // The metrics say the same: the re-delivery counted as a duplicate, not applied again.
    let base = format!("http://127.0.0.1:{}", w.port);
    let sample = |kind: &str, outcome: &str| {
        format!("kollus_sync_records_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}")
    };
    assert_eq!(
        scrape(&base, &sample("channel_join", "applied")).await,
        Some(1.0)
    );
    assert_eq!(
        scrape(&base, &sample("channel_join", "duplicate")).await,
        Some(1.0)
    );
    assert_eq!(
        scrape(&base, &sample("channel_leave", "applied")).await,
        Some(1.0)
    );
    assert_eq!(
        scrape(&base, "kollus_sync_db_pool_max_connections").await,
        Some(8.0)
    );
    let lag = scrape(&base, "kollus_sync_lag_seconds").await;
    assert!(
        lag.is_some_and(|s| s >= 0.0),
        "lag_seconds is exported: {lag:?}"
    );
}

#[tokio::test]
async fn a_poison_record_is_dead_lettered_and_the_worker_goes_on() {
    let w = spawn_worker().await;
    w.h.broker
        .publish_raw(&w.h.kafka.content_topic, "ufk-0001", b"not json")
        .await;
    w.send_fixture(CallbackKind::Upload, "upload.form").await;
    w.wait_applied(1).await;

    w.wait_committed(2).await;
    // The poison record's letter, and no other.
    let v = w.dead_letters(1).await.remove(0);
    assert_eq!(v["stage"], "sync-worker");
    assert_eq!(v["reason"], "invalid_envelope");
    assert_eq!(v["record"]["body"], "not json");

    // Nothing about the poison record reached the catalog.
    let db = w.h.db.client().await;
    let uploads: i64 = eventually("the upload row", Duration::from_secs(5), || async {
        db.query_one("SELECT count(*) FROM uploads", &[])
            .await
            .ok()
            .map(|r| r.get(0))
    })
    .await;
    assert_eq!(uploads, 1);
}
