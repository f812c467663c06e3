//! `sweep` after an outage: Kollus's callbacks for a join, a leave and a delete never reached us;
//! the sweep finds them, publishes the corrections, prints them, and a second sweep finds nothing.

use std::time::Duration;

use kollus_catalog::sweep::Difference;
use kollus_test_support::kollus_api::video;

use crate::helpers::Stack;

#[tokio::test]
async fn a_sweep_finds_a_join_and_a_delete_missed_during_an_outage() {
    let s = Stack::new(true).await;
    s.fake.add_channel("cha00001", "Math");
    s.fake.add_channel("chb00001", "Physics");
    for i in 1..=4 {
        s.fake.add_video(video(
            &format!("u{i}"),
            i,
            &[("cha00001", &format!("m{i}"))],
        ));
    }
    kollus_catalog::backfill(&s.api(100.0), &s.h.kafka)
        .await
        .expect("backfill");
    s.wait_applied(4).await;

    // The outage: in Kollus, u2 joins Physics, u4 leaves Math and u3 is deleted; no callback
    // reaches us.
    s.fake.join("u2", "chb00001", "m2b");
    s.fake.leave("u4", "cha00001");
    s.fake.delete_video("u3");

    let grace = Duration::ZERO;
    let r = kollus_catalog::sweep(&s.api(100.0), grace, &s.h.db.settings(), &s.h.kafka)
        .await
        .expect("sweep");
    assert_eq!(
        r.differences,
        [
            Difference::Join {
                upload: "u2".into(),
                media: "m2b".into(),
                channel: "chb00001".into(),
            },
            Difference::Leave {
                upload: "u4".into(),
                media: "m4".into(),
                channel: "cha00001".into(),
            },
            Difference::Absent {
                upload: "u3".into()
            },
        ]
    );
    assert_eq!(
        r.differences[0].to_string(),
        "join        m2b in channel chb00001 (upload u2)"
    );
    assert_eq!(r.published, 3, "only what differs is published");
    assert_eq!(
        r.requests, 5,
        "the index, two channels, the library, one detail"
    );
    assert!(
        s.fake
            .request_paths()
            .contains(&"/0/media/library/media_content/u3".to_owned()),
        "the absence was confirmed by a detail request"
    );

    s.wait_applied(7).await;
    let db = s.h.db.client().await;
    let playable = |m: &'static str| {
        let db = &db;
        async move {
            db.query_one(
                "SELECT playable, absent_since IS NOT NULL FROM media_playability \
                 WHERE media_content_key = $1",
                &[&m],
            )
            .await
            .unwrap()
        }
    };
    let m2b = playable("m2b").await;
    assert!(m2b.get::<_, bool>(0), "the missed join is playable now");
    let m3 = playable("m3").await;
    assert!(!m3.get::<_, bool>(0), "the missed delete is not playable");
    assert!(m3.get::<_, bool>(1), "and marked absent");
    assert!(
        !playable("m4").await.get::<_, bool>(0),
        "the missed leave is applied"
    );
    assert!(playable("m1").await.get::<_, bool>(0), "the rest untouched");

    // Nothing left to correct.
    let again = kollus_catalog::sweep(&s.api(100.0), grace, &s.h.db.settings(), &s.h.kafka)
        .await
        .expect("a second sweep");
    assert!(again.differences.is_empty(), "{:?}", again.differences);
    assert_eq!(again.published, 0);
}

#[tokio::test]
async fn a_stale_list_does_not_make_a_video_absent() {
    let s = Stack::new(true).await;
    s.fake.add_channel("cha00001", "Math");
    s.fake.add_video(video("u1", 1, &[("cha00001", "m1")]));
    s.fake.add_video(video("u2", 2, &[("cha00001", "m2")]));
    kollus_catalog::backfill(&s.api(100.0), &s.h.kafka)
        .await
        .expect("backfill");
    s.wait_applied(2).await;

    // Kollus's cached lists leave u2 out; asked on its own, Kollus still has it.
    s.fake.hide_from_lists("u2");
    let r = kollus_catalog::sweep(
        &s.api(100.0),
        Duration::ZERO,
        &s.h.db.settings(),
        &s.h.kafka,
    )
    .await
    .expect("sweep");
    assert_eq!(
        r.differences,
        [Difference::Unlisted {
            upload: "u2".into()
        }]
    );
    s.wait_applied(3).await;
    let row =
        s.h.db
            .client()
            .await
            .query_one(
                "SELECT playable, absent_since IS NULL FROM media_playability \
             WHERE media_content_key = 'm2'",
                &[],
            )
            .await
            .unwrap();
    assert!(
        row.get::<_, bool>(0) && row.get::<_, bool>(1),
        "still playable, not absent"
    );
}
