//! `backfill`: an empty account, and 2,500 videos over 3 channels (paging), at the rate asked.

use std::time::Duration;

use kollus_test_support::kollus_api::{video, Fault};

use crate::helpers::Stack;

#[tokio::test]
async fn an_empty_account_publishes_nothing_in_two_requests() {
    let s = Stack::new(false).await;
    let r = kollus_catalog::backfill(&s.api(50.0), &s.h.kafka)
        .await
        .expect("backfill");
    assert_eq!((r.channels, r.uploads, r.published), (0, 0, 0));
    assert_eq!(
        s.fake.request_paths(),
        ["/0/media/channel/index", "/0/media/library/media_content"]
    );
    assert_eq!(r.requests, 2);
    assert_eq!(s.published(), 0);
}

#[tokio::test]
async fn twenty_five_hundred_videos_over_three_channels_at_the_rate_asked() {
    let s = Stack::new(true).await;
    let channels = ["ch000001", "ch000002", "ch000003"];
    for (i, c) in channels.iter().enumerate() {
        s.fake.add_channel(c, &format!("수학 {}", i + 1));
    }
    // Each in one channel, every 10th in a second one too, every 50th in none (library only).
    let mut in_channel = [0usize; 3];
    let mut memberships = 0;
    for i in 0..2500u32 {
        let u = format!("20261101-v{i:05}");
        let mut list = Vec::new();
        if i % 50 != 0 {
            list.push((channels[i as usize % 3].to_owned(), format!("m{i:05}a")));
            if i % 10 == 0 {
                list.push((
                    channels[(i as usize + 1) % 3].to_owned(),
                    format!("m{i:05}b"),
                ));
            }
        }
        for (c, _) in &list {
            in_channel[channels.iter().position(|x| x == c).unwrap()] += 1;
        }
        memberships += list.len();
        let list: Vec<(&str, &str)> = list.iter().map(|(c, m)| (c.as_str(), m.as_str())).collect();
        s.fake.add_video(video(&u, i, &list));
    }
    // Slow enough that the pacing, not the requests' own time, sets the pace: against the
    // stand-in a debug build's request takes 20-90 ms on two busy cores, so at 40/s a client
    // with no limiter at all kept to the rate.
    let rate = 10.0;
    let r = kollus_catalog::backfill(&s.api(rate), &s.h.kafka)
        .await
        .expect("backfill");
    let published_at = std::time::Instant::now();

    // ceil(count / per_page) per list: the index, each channel's pages, the library's 25.
    let expected: usize = 1 + in_channel.iter().map(|n| n.div_ceil(100)).sum::<usize>() + 25;
    assert_eq!(r.requests as usize, expected);
    assert_eq!(s.fake.request_paths().len(), expected);
    assert_eq!((r.channels, r.uploads, r.published), (3, 2500, 2500));

    // The rate held. Not on the report's elapsed time: that includes publishing 2,500 records,
    // which alone can outlast the pacing (a client with no limiter at all passed). On the fake's
    // clock, with a bound load can only lengthen: the scan sends each request after the answer
    // to the one before, so the first request arrived before the second was let go, and the
    // last arrived no sooner than it was let go; with a burst of one, consecutive requests are
    // let go a period apart or more, so the last arrives at least (n - 2) periods after the
    // first. (Gaps between arrivals are no bound: a loaded machine delays one request and
    // delivers the next on time.)
    let period = Duration::from_secs_f64(1.0 / rate);
    let arrivals = s.fake.requests();
    let span = arrivals.last().expect("requests").0;
    let floor = period * (arrivals.len() as u32 - 2);
    assert!(
        span >= floor,
        "{} requests within {span:?} at {rate}/s: faster than the rate allows ({floor:?})",
        arrivals.len()
    );

    s.wait_applied(2500).await;
    // For the README's figure (`--no-capture` shows it).
    println!(
        "backfill of 2500 videos: {} requests in {:.2} s at {rate}/s; applied {:.2} s after publishing",
        r.requests,
        r.elapsed.as_secs_f64(),
        published_at.elapsed().as_secs_f64()
    );
    let db = s.h.db.client().await;
    let row = db
        .query_one(
            "SELECT count(*) FILTER (WHERE title IS NOT NULL AND duration_seconds > 0 \
                                      AND poster_url IS NOT NULL), \
                    count(*) FILTER (WHERE transcoding_stage = 12 AND transcoding_state = 'pending'), \
                    (SELECT count(*) FROM channel_memberships WHERE in_channel), \
                    (SELECT count(*) FROM media_playability WHERE playable) \
             FROM uploads",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 2500, "every upload described");
    assert_eq!(
        row.get::<_, i64>(1),
        (0..2500).filter(|i| i % 11 == 0).count() as i64
    );
    assert_eq!(row.get::<_, i64>(2), memberships as i64);
    assert_eq!(
        row.get::<_, i64>(3),
        memberships as i64,
        "every key in a channel is playable"
    );
    // "HH:MM:SS" and a title in Korean, as Kollus sends them.
    let row = db
        .query_one(
            "SELECT title, duration_seconds FROM uploads WHERE upload_file_key = '20261101-v00007'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "8강 - 미적분 기초");
    assert_eq!(row.get::<_, i32>(1), 3607);
}

#[tokio::test]
async fn a_429_waits_its_retry_after_and_a_503_is_retried() {
    let s = Stack::new(false).await;
    s.fake.add_channel("ch000001", "A");
    s.fake.add_video(video("u1", 1, &[("ch000001", "m1")]));
    s.fake.fault(Fault::TooMany {
        times: 1,
        retry_after: 1,
    });
    s.fake.fault(Fault::Unavailable { times: 2 });
    let r = kollus_catalog::backfill(&s.api(50.0), &s.h.kafka)
        .await
        .expect("backfill after a 429 and two 503s");
    assert_eq!(r.published, 1);
    let requests = s.fake.requests();
    // The index asked four times: 429, 503, 503, then answered.
    let index: Vec<Duration> = requests
        .iter()
        .filter(|(_, p)| p == "/0/media/channel/index")
        .map(|(t, _)| *t)
        .collect();
    assert_eq!(index.len(), 4, "{requests:?}");
    assert!(
        index[1] - index[0] >= Duration::from_secs(1),
        "Retry-After: 1 was honoured: {requests:?}"
    );
    assert_eq!(s.published(), 1);
}

#[tokio::test]
async fn the_default_rate_is_one_request_a_second() {
    let s = Stack::new(false).await;
    s.fake.add_channel("ch000001", "A");
    s.fake.add_video(video("u1", 1, &[("ch000001", "m1")]));
    let mut api = s.api(50.0);
    api.api_rate = 1.0;
    let r = kollus_catalog::backfill(&api, &s.h.kafka)
        .await
        .expect("backfill");
    assert_eq!(r.requests, 3, "the index, the channel, the library");
    assert!(
        r.elapsed >= Duration::from_secs(2),
        "Kollus allows 1 request a second; three took {:?}",
        r.elapsed
    );
}
