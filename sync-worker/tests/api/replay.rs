//! The catalog is a function of the set of callbacks received: any order, any number of
//! duplicates and any batching of the same records give the same tables. Applied through the
//! worker's own `Apply` against real PostgreSQL; the broker adds nothing to this property (the
//! pipeline tests cover delivery).

use kollus_common::envelope::Envelope;
use kollus_common::kollus::platform::ContentEvent;
use kollus_common::kollus::CallbackKind::{self, Channel, ContentUpdate, Transcoding, Upload};

use crate::helpers::{apply_directly, assert_same_catalog, delivery, envelope, Replayer, Rng};

/// A week of one provider's catalog, every change kind and the awkward cases: a re-transcode
/// after a failure, leave then rejoin under a new channel name, a video in two channels, a
/// delete followed by a join, a poster for an upload never seen, an unknown update type,
/// a channel event before its upload callback, and a filename that changes.
fn history() -> Vec<Envelope<ContentEvent>> {
    let up = |u: &str, file: &str| {
        format!(
            "content_provider_key=cp&full_filename=/in/{file}&filename={file}&upload_file_key={u}"
        )
    };
    let chan = |u: &str, m: &str, ty: &str, ch: &str, name: &str, profiles: &str| {
        format!(
            "upload_file_key={u}&media_content_key={m}&channel_key={ch}&channel_name={name}\
             &profile_key={profiles}&update_type={ty}"
        )
    };
    let events: Vec<(CallbackKind, String)> = vec![
        (Upload, up("u1", "intro.mp4")),
        (
            Transcoding,
            up("u1", "intro.mp4") + "&transcoding_result=fail",
        ),
        (
            Transcoding,
            up("u1", "intro.mp4") + "&transcoding_result=success",
        ),
        (
            Channel,
            chan("u1", "m1", "channel_join", "chA", "Alpha", "hi%7Clo"),
        ),
        (
            Channel,
            chan("u1", "m1", "channel_join", "chB", "Beta", "hi"),
        ),
        (
            Channel,
            chan("u1", "m1", "channel_leave", "chA", "Alpha", "hi%7Clo"),
        ),
        (
            Channel,
            chan("u1", "m1", "channel_join", "chA", "Alpha+2", "lo"),
        ),
        (
            ContentUpdate,
            up("u1", "intro.mp4") + "&update_type=content_poster",
        ),
        // A channel event before the upload callback, then a rename.
        (
            Channel,
            chan("u2", "m2", "channel_join", "chA", "Alpha", "hi"),
        ),
        (Upload, up("u2", "two.mp4")),
        (
            Transcoding,
            up("u2", "two-final.mp4") + "&transcoding_result=success",
        ),
        (
            Channel,
            chan("u2", "m2", "channel_leave", "chA", "Alpha", "hi"),
        ),
        // Deleted, then a join: stays unplayable.
        (Upload, up("u3", "three.mp4")),
        (
            Channel,
            chan("u3", "m3", "channel_join", "chB", "Beta", "hi"),
        ),
        (
            ContentUpdate,
            up("u3", "three.mp4") + "&update_type=content_delete",
        ),
        (
            Channel,
            chan("u3", "m3", "channel_join", "chA", "Alpha", "hi"),
        ),
        // Known only by a poster change, and an update type Kollus may add one day.
        (
            ContentUpdate,
            "upload_file_key=u4&update_type=content_poster".into(),
        ),
        (
            ContentUpdate,
            up("u1", "intro.mp4") + "&update_type=subtitle_added",
        ),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(i, (kind, form))| envelope(kind, &form, 60 * i as i64))
        .collect()
}

/// Deliveries tried: each a random order, number of copies and batching of the history (a run
/// from an empty catalog costs a `TRUNCATE` and a few batches).
const DELIVERIES: u64 = 120;

#[tokio::test]
async fn any_order_any_duplicates_any_batching_gives_the_same_catalog() {
    let events = history();
    let (in_order, db) = apply_directly(events.iter().map(|e| vec![e]).collect()).await;

    // The reference catalog says what the history means.
    let client = db.client().await;
    let playable = |m: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT playable FROM media_playability WHERE media_content_key = $1",
                    &[&m],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    assert!(playable("m1").await, "m1 is in chA (rejoined) and chB");
    assert!(!playable("m2").await, "m2 left its only channel");
    assert!(
        !playable("m3").await,
        "m3 was deleted; the later join does not undo that"
    );
    let m1a = client
        .query_one(
            "SELECT in_channel, channel_name, profile_keys, left_at < joined_at \
             FROM channel_memberships WHERE media_content_key = 'm1' AND channel_key = 'chA'",
            &[],
        )
        .await
        .unwrap();
    assert!(m1a.get::<_, bool>(0));
    assert_eq!(
        m1a.get::<_, &str>(1),
        "Alpha 2",
        "the name from the latest join"
    );
    assert_eq!(m1a.get::<_, Vec<String>>(2), ["lo"]);
    assert!(m1a.get::<_, bool>(3));
    let u = client
        .query(
            "SELECT upload_file_key, filename, transcoding_state, deleted_at IS NOT NULL, \
                    poster_changed_at IS NOT NULL FROM uploads ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let u: Vec<(String, Option<String>, String, bool, bool)> = u
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let s = |x: &str| x.to_owned();
    assert_eq!(
        u,
        [
            (s("u1"), Some(s("intro.mp4")), s("success"), false, true),
            (
                s("u2"),
                Some(s("two-final.mp4")),
                s("success"),
                false,
                false
            ),
            (s("u3"), Some(s("three.mp4")), s("pending"), true, false),
            (s("u4"), None, s("pending"), false, true),
        ]
    );
    let audit: i64 = client
        .query_one(
            "SELECT count(*) FROM content_events WHERE change = 'other_update'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(audit, 1, "the unknown update type is kept");

    // Every event one to three times, shuffled, cut into batches (up to all in one).
    let replayer = Replayer::new().await;
    for seed in 1..=DELIVERIES {
        let batches = delivery(&mut Rng::seeded(seed), &events, 3);
        let shape: Vec<usize> = batches.iter().map(Vec::len).collect();
        let shuffled = replayer.run(batches).await;
        assert_same_catalog(
            &shuffled,
            &in_order,
            &format!("delivery {seed} (batches of {shape:?})"),
        );
    }
    // And the whole history in one batch, newest first.
    let newest_first = replayer.run(vec![events.iter().rev().collect()]).await;
    assert_same_catalog(&newest_first, &in_order, "one batch, newest first");
}
