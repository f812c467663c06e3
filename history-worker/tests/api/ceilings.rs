//! The ceilings every report is held to, `serial` (offline playback) or not: a report past one is
//! dead-lettered with its reason and changes no row. And the rollup's sums saturate instead of
//! failing a read.

use std::collections::BTreeMap;

use kollus_common::envelope::Envelope;
use kollus_common::kollus::lms::LmsReport;
use kollus_history_worker::sessions::MAX_COUNTER;
use kollus_test_support::{scrape, TestDb};
use serde_json::json;

use crate::helpers::{applied_once, report, snapshot, spawn_worker, TestWorker};

/// A report of offline playback (`serial`) by `u1` of `m1` (a 600 s video): the clock checks
/// forgive it, the ceilings do not.
fn offline(w: &TestWorker, start_at: i64, c: [u64; 5], serial: u64) -> Envelope<LmsReport> {
    let mut doc = report("u1", "m1", start_at, c, &[(1, 10, 50)]);
    doc["content_info"]["serial"] = json!(serial.to_string());
    w.envelope(&doc)
}

/// The dead letters of the topic, exactly `n` of them, by the id of the record each refused:
/// (reason, detail).
async fn dead_letters(w: &TestWorker, n: usize) -> BTreeMap<String, (String, String)> {
    let by_id: BTreeMap<_, _> = w
        .dead_letters(n)
        .await
        .iter()
        .map(|v| {
            let record: serde_json::Value =
                serde_json::from_str(v["record"]["body"].as_str().unwrap()).unwrap();
            let text = |f: &str| v[f].as_str().unwrap().to_owned();
            (
                record["id"].as_str().unwrap().to_owned(),
                (text("reason"), text("detail")),
            )
        })
        .collect();
    assert_eq!(by_id.len(), n, "one dead letter per refused record");
    by_id
}

/// `kollus_history_deadletter_total{reason}` as the worker's `/metrics` says.
async fn dead_lettered(w: &TestWorker, reason: &str) -> f64 {
    let sample = format!("kollus_history_deadletter_total{{reason=\"{reason}\"}}");
    scrape(&format!("http://127.0.0.1:{}", w.port()), &sample)
        .await
        .unwrap_or_else(|| panic!("no {sample}"))
}

#[tokio::test]
async fn an_offline_report_past_any_ceiling_is_dead_lettered_with_its_reason_and_changes_no_row() {
    let w = spawn_worker().await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let start = now - 600;
    // [playtime, real_playtime, runtime, showtime, position]; the video is 600 s long.
    let plausible = offline(&w, start, [100, 90, 120, 100, 95], 1);
    // Another session, at every ceiling at once: real_playtime at the duration (+5 s), showtime
    // at runtime (+2 s), playtime at 4x that showtime (+2 s), start_at a day ahead (a device
    // clock, flagged).
    let at_every_ceiling = offline(&w, now + 86_400, [1216, 605, 300, 302, 300], 2);
    // Each past one ceiling only, in the plausible report's session.
    let past = [
        (
            offline(&w, start, [700, 606, 300, 200, 100], 3),
            "implausible_real_playtime",
            "real_playtime 606 s",
        ),
        (
            offline(&w, start, [300, 100, 300, 303, 100], 4),
            "implausible_showtime",
            "showtime 303 s",
        ),
        (
            offline(&w, start, [409, 100, 200, 100, 100], 5),
            "implausible_playtime",
            "playtime 409 s",
        ),
        (
            offline(&w, now + 86_400 + 3_600, [100, 90, 120, 100, 95], 6),
            "implausible_start_at",
            "more than 86400 s after",
        ),
        (
            offline(&w, start, [100, 90, MAX_COUNTER + 1, 100, 95], 7),
            "implausible_counter",
            "content_info.runtime 1099511627777 is over the limit",
        ),
    ];
    w.publish(&plausible).await;
    for (e, _, _) in &past {
        w.publish(e).await;
    }
    w.publish(&at_every_ceiling).await;
    w.wait_applied(2 + past.len() as i64).await;

    let dead = dead_letters(&w, past.len()).await;
    for (e, reason, detail) in &past {
        let (got_reason, got_detail) = &dead[&e.id.to_string()];
        assert_eq!(got_reason, reason, "{got_detail}");
        assert!(got_detail.contains(detail), "{reason}: {got_detail}");
        assert_eq!(dead_lettered(&w, reason).await, 1.0, "{reason}");
    }
    assert_eq!(dead_lettered(&w, "implausible_clock").await, 0.0);

    let db = w.h.db.client().await;
    assert_eq!(
        snapshot(&db).await,
        applied_once(&[plausible, at_every_ceiling]).await,
        "the refused reports changed no row and added none"
    );
    let flagged: Vec<(i64, bool)> = db
        .query(
            "SELECT playtime, device_clock FROM watch_sessions ORDER BY start_at",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(flagged, [(100, false), (1216, true)]);
}

#[tokio::test]
async fn two_offline_reports_near_the_bigint_limit_are_refused_and_progress_still_reads() {
    let w = spawn_worker().await;
    let start = time::OffsetDateTime::now_utc().unix_timestamp() - 600;
    let plausible = offline(&w, start, [100, 90, 120, 100, 95], 1);
    // Two players' sessions, each just under i64::MAX: summed, they overflowed `watch_progress`
    // (and with it token-api's play callback for this user and video).
    let huge = i64::MAX as u64 - 1;
    let forged: Vec<_> = (1..=2)
        .map(|i| {
            let mut doc = report("u1", "m1", start + i, [100, 90, 120, 100, 95], &[]);
            for counter in ["playtime", "runtime", "showtime"] {
                doc["content_info"][counter] = json!(huge.to_string());
            }
            doc["content_info"]["serial"] = json!(i.to_string());
            w.envelope(&doc)
        })
        .collect();
    w.publish(&plausible).await;
    for e in &forged {
        w.publish(e).await;
    }
    w.wait_applied(3).await;

    let dead = dead_letters(&w, 2).await;
    for e in &forged {
        let (reason, detail) = &dead[&e.id.to_string()];
        assert_eq!(reason, "implausible_counter");
        assert!(
            detail.starts_with(&format!("content_info.playtime {huge} ")),
            "{detail}"
        );
    }
    let db = w.h.db.client().await;
    let progress = db
        .query_one(
            "SELECT sessions, total_playtime FROM watch_progress \
             WHERE client_user_id = 'u1' AND media_content_key = 'm1'",
            &[],
        )
        .await
        .expect("the rollup reads");
    assert_eq!(
        (progress.get::<_, i32>(0), progress.get::<_, i64>(1)),
        (1, 100)
    );
}

#[tokio::test]
async fn the_rollup_saturates_sums_past_bigint_instead_of_failing() {
    // Rows written before the ceilings, or by other means: straight into the table.
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, playtime, \
                 real_playtime, first_report_at, last_report_at) VALUES \
             ('u1', 'm1', 1, 9223372036854775806, 9223372036854775806, now(), now()), \
             ('u1', 'm1', 2, 9223372036854775806, 5, now(), now()), \
             ('u2', 'm1', 1, 40, 20, now(), now()), \
             ('u2', 'm1', 2, 2, 1, now(), now())",
        )
        .await
        .unwrap();
    let rows = client
        .query(
            "SELECT client_user_id, sessions, total_playtime, total_real_playtime \
             FROM watch_progress ORDER BY client_user_id",
            &[],
        )
        .await
        .expect("watch_progress reads whatever the sessions hold");
    let got: Vec<(String, i32, i64, i64)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    assert_eq!(
        got,
        [
            ("u1".into(), 2, i64::MAX, i64::MAX),
            ("u2".into(), 2, 42, 21),
        ]
    );
}
