//! PostgreSQL cut for 30 s mid-stream, and the worker killed mid-batch: the catalog ends equal
//! to the one the same callbacks give when applied directly (nothing lost, nothing doubled).

use std::time::Duration;

use kollus_common::envelope::Envelope;
use kollus_common::kollus::platform::ContentEvent;
use kollus_common::kollus::CallbackKind::{Channel, ContentUpdate, Transcoding, Upload};
use kollus_sync_worker::startup::Application;
use kollus_test_support::{eventually, scrape, Harness, ServiceProcess};

use crate::helpers::{apply_directly, envelope, settings, snapshot, TestWorker};

/// The lifecycles of `uploads` videos: upload, transcoding, join, poster; every third leaves
/// its channel, every fifth is deleted. 4 to 6 callbacks each.
fn lifecycles(uploads: std::ops::Range<usize>) -> Vec<Envelope<ContentEvent>> {
    let mut events = Vec::new();
    for i in uploads {
        let base = format!("content_provider_key=cp&filename=v{i}.mp4&upload_file_key=u{i}");
        let channel = |ty: &str| {
            format!("{base}&media_content_key=m{i}&channel_key=ch{}&channel_name=C&profile_key=hi&update_type={ty}", i % 4)
        };
        let mut forms = vec![
            (Upload, base.clone()),
            (Transcoding, format!("{base}&transcoding_result=success")),
            (Channel, channel("channel_join")),
            (ContentUpdate, format!("{base}&update_type=content_poster")),
        ];
        if i % 3 == 0 {
            forms.push((Channel, channel("channel_leave")));
        }
        if i % 5 == 0 {
            forms.push((ContentUpdate, format!("{base}&update_type=content_delete")));
        }
        for (step, (kind, form)) in forms.into_iter().enumerate() {
            events.push(envelope(kind, &form, (i * 10 + step) as i64));
        }
    }
    events
}

async fn publish(w: &TestWorker, events: &[Envelope<ContentEvent>]) {
    for e in events {
        w.resend(e).await;
    }
}

/// What the callbacks must give: the catalog applied directly, one record per batch.
async fn reference(events: &[Envelope<ContentEvent>]) -> Vec<String> {
    apply_directly(events.iter().map(|e| vec![e]).collect())
        .await
        .0
}

#[tokio::test]
async fn postgres_cut_for_30_seconds_delays_but_loses_nothing() {
    let mut w = TestWorker {
        h: Harness::new().await,
        port: 0,
    };
    let (proxy, database) = w.h.db.behind_proxy().await;
    let mut s = settings(&w.h);
    s.database = database;
    let app = Application::build(s).await.expect("building sync-worker");
    let base = format!("http://127.0.0.1:{}", app.port());
    w.h.spawn(|stop| app.run_until(stop));

    let first = lifecycles(0..50);
    let second = lifecycles(50..100);
    publish(&w, &first).await;
    w.wait_applied(first.len() as i64).await;

    proxy.cut();
    let restore_at = tokio::time::Instant::now() + Duration::from_secs(30);
    publish(&w, &second).await;
    let http = reqwest::Client::new();
    eventually(
        "the worker to report not ready",
        Duration::from_secs(30),
        || async {
            let res = http.get(format!("{base}/readyz")).send().await.ok()?;
            (res.status() == 503).then_some(())
        },
    )
    .await;
    // The outage lasts its full 30 s (the scenario under test), whatever the above took.
    tokio::time::sleep_until(restore_at).await;
    proxy.restore();

    let all: Vec<_> = first.into_iter().chain(second).collect();
    w.wait_applied(all.len() as i64).await;
    let db = w.h.db.client().await;
    assert_eq!(snapshot(&db).await, reference(&all).await);
    let retries = scrape(&base, "kollus_sync_retries_total")
        .await
        .unwrap_or(0.0);
    assert!(retries > 0.0, "the outage was retried, not skipped");
    w.h.stop().await;
}

#[tokio::test]
async fn kill_9_mid_batch_replays_to_the_same_catalog() {
    let w = TestWorker {
        h: Harness::new().await,
        port: 0,
    };
    let events = lifecycles(0..100);
    publish(&w, &events).await;
    let total = events.len() as i64;
    // Small batches, so there is a middle of the stream to kill it in.
    let binary = env!("CARGO_BIN_EXE_sync-worker");
    let mut first = ServiceProcess::start(binary, &w.h, &[("WORKER_MAX_BATCH", "5")]);
    let db = w.h.db.client().await;
    let applied = || async {
        let n: i64 = db
            .query_one("SELECT count(*) FROM content_events", &[])
            .await
            .ok()?
            .get(0);
        Some(n)
    };
    eventually(
        "some but not all callbacks applied",
        Duration::from_secs(60),
        || async { applied().await.filter(|n| (1..total).contains(n)) },
    )
    .await;
    first.kill_9();
    let at_kill = applied().await.unwrap();
    assert!(
        at_kill < total,
        "killed mid-stream ({at_kill} of {total} applied)"
    );

    let _second = ServiceProcess::start(binary, &w.h, &[]);
    eventually(
        "every callback applied",
        Duration::from_secs(90),
        || async { applied().await.filter(|n| *n == total) },
    )
    .await;
    assert_eq!(snapshot(&db).await, reference(&events).await);
}
