//! Nothing brings an erased user back (README "Erasing a user"): reports of a user received
//! before their erasure never apply again, streamed during the erasure, replayed after it, or
//! rebuilt from the topics with PostgreSQL's barrier lost; reports after it apply (a returning
//! user); another user is untouched.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kollus_common::envelope::Envelope;
use kollus_common::erasure::{location_record_path, ErasureEvent, LocationErasure};
use kollus_common::kollus::lms::LmsReport;
use kollus_common::subject::lock_subject;
use kollus_common::worker::Apply as _;
use kollus_history_worker::startup::Application;
use kollus_test_support::{eventually, scrape, Harness, TestDb};
use proptest::prelude::*;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::helpers::{
    history, missing_marks, nth_report, records, report, settings, snapshot, spawn_worker, tagger,
    with_segment, TestWorker,
};

/// Erases `user` as token-api's erasure does, in one transaction: the subject locked
/// exclusively (`lock_subject`), their sessions deleted, the receipt inserted as applied (V27's
/// trigger raises the barrier to `applied_at`: `at`, or the transaction's `now()`). Returns
/// `applied_at`.
async fn erase(
    db: &mut tokio_postgres::Client,
    user: &str,
    at: Option<OffsetDateTime>,
) -> OffsetDateTime {
    let tag = tagger().tag(user);
    let tx = db.transaction().await.unwrap();
    lock_subject(&tx, &tag).await.unwrap();
    tx.execute(
        "DELETE FROM watch_sessions WHERE client_user_id = $1",
        &[&user],
    )
    .await
    .unwrap();
    let row = tx
        .query_one(
            "INSERT INTO erasures (id, subject_tag, requested_by, basis, status, applied_at) \
             VALUES ($1, $2, 'test', 'other', 'applied', coalesce($3, now())) \
             RETURNING applied_at",
            &[&Uuid::now_v7(), &tag.as_str(), &at],
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    row.get(0)
}

/// The reports of `published` whose mark is missing from `watch_sessions`, by envelope id.
async fn missing(db: &tokio_postgres::Client, published: &[Envelope<LmsReport>]) -> Vec<Uuid> {
    let gone = missing_marks(db, published).await;
    published
        .iter()
        .filter(|e| gone.iter().any(|m| m.contains(&e.id.to_string())))
        .map(|e| e.id)
        .collect()
}

async fn erased_counter(w: &TestWorker) -> f64 {
    scrape(
        &format!("http://127.0.0.1:{}", w.port()),
        "kollus_history_reports_erased_total",
    )
    .await
    .expect("the worker's metrics")
}

#[tokio::test]
async fn erasing_while_a_users_reports_stream_in_keeps_none_received_before_it() {
    let w = spawn_worker().await;
    let mut db = w.h.db.client().await;
    // Received before the erasure, delivered after it (a late offline report, a lagging
    // partition): at the erasure these are in no table yet.
    // Another session of the user's, its reports within the ceilings (counters grow with n).
    let late: Vec<Envelope<LmsReport>> = (1..=10u64)
        .map(|n| {
            crate::helpers::envelope(&with_segment(
                report(
                    "gone",
                    "m1",
                    1_700_100_000,
                    [n * 10, n * 5, n * 12, n * 8, n],
                    &[(1, n, n * 4)],
                ),
                (n - 1) * 10,
                10,
            ))
        })
        .collect();
    let erased = std::cell::Cell::new(false);
    // Both users' reports stream in, and go on until 20 of each came after the erasure ...
    let stream = async {
        let mut published = Vec::new();
        let mut after = 0;
        // (At most 120: report n's real_playtime, 5n s, stays within the video's 600 s.)
        for n in 1..=120 {
            if n > 40 {
                // Past 40 pairs the stream waits for the erasure (a busy machine may apply the
                // first 20 late), so 20 pairs still come after it within the 120.
                eventually("the erasure", Duration::from_secs(120), || async {
                    erased.get().then_some(())
                })
                .await;
            }
            // Whether the erasure was committed before this pair was made: a pair counts as
            // after it only then (set while the pair was being published, the pair's
            // `received_at` would come before the erasure's time).
            let made_after = erased.get();
            for user in ["gone", "stays"] {
                let e = nth_report(user, n);
                w.publish(&e).await;
                published.push(e);
            }
            after += u32::from(made_after);
            if after >= 20 {
                break;
            }
        }
        published
    };
    // ... while the user is erased, once the worker has applied some of them.
    let erase_mid_stream = async {
        eventually(
            "some of the reports applied before the erasure",
            Duration::from_secs(60),
            || async {
                let c = kollus_test_support::group::committed(
                    &w.h.kafka.brokers,
                    &crate::helpers::group(&w.h),
                    &w.h.kafka.playback_topic,
                )
                .await;
                (c >= 20).then_some(())
            },
        )
        .await;
        let at = erase(&mut db, "gone", None).await;
        erased.set(true);
        at
    };
    let (mut published, erased_at) = tokio::join!(stream, erase_mid_stream);
    for e in &late {
        w.publish(e).await;
    }
    published.extend(late);
    w.wait_applied(published.len() as i64).await;
    let absent = missing(&db, &published).await;
    for e in &published {
        let user = e.payload.user.client_user_id.as_str();
        let before = user == "gone" && e.received_at < erased_at;
        assert_eq!(
            absent.contains(&e.id),
            before,
            "{user}'s report {} received {} (erasure at {erased_at}): {}",
            e.id,
            e.received_at,
            if before { "applied" } else { "lost" }
        );
    }
    let gone_after = published
        .iter()
        .filter(|e| e.payload.user.client_user_id.as_str() == "gone" && e.received_at >= erased_at)
        .count();
    assert!(gone_after >= 20, "the user returned after the erasure");
    let dropped = erased_counter(&w).await;
    assert!(dropped >= 10.0, "the late reports dropped: {dropped}");
}

#[tokio::test]
async fn a_report_received_before_the_erasure_and_replayed_after_it_is_dropped() {
    let w = spawn_worker().await;
    let mut db = w.h.db.client().await;
    let before = nth_report("gone", 1);
    let other = nth_report("stays", 1);
    w.publish(&before).await;
    w.publish(&other).await;
    w.wait_applied(2).await;
    assert!(missing(&db, std::slice::from_ref(&before)).await.is_empty());

    erase(&mut db, "gone", None).await;
    assert_eq!(
        missing(&db, std::slice::from_ref(&before)).await,
        vec![before.id]
    );
    let after = nth_report("gone", 2);
    w.publish(&before).await; // the topic replayed, or a late copy
    w.publish(&after).await;
    w.wait_applied(4).await;
    assert_eq!(
        missing(&db, &[before.clone(), after.clone(), other.clone()]).await,
        vec![before.id],
        "the replay dropped; the returning user's report and the other user's kept"
    );
    assert_eq!(erased_counter(&w).await, 1.0);
    let held: i64 = db
        .query_one(
            "SELECT count(*) FROM watch_sessions WHERE client_user_id = 'gone'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        held, 1,
        "the returning user's session, of their new report only"
    );
}

#[tokio::test]
async fn an_erased_users_implausible_report_replayed_is_dropped_not_dead_lettered_again() {
    let w = spawn_worker().await;
    let mut db = w.h.db.client().await;
    // Received three days before its own start_at: past MAX_START_AT_AHEAD_SECONDS.
    let implausible = received_at(
        "gone",
        1,
        OffsetDateTime::from_unix_timestamp(1_700_000_000 - 3 * 86_400).unwrap(),
    );
    let dead_letters = |w: &TestWorker| {
        let url = format!("http://127.0.0.1:{}", w.port());
        async move {
            scrape(
                &url,
                "kollus_history_deadletter_total{reason=\"implausible_start_at\"}",
            )
            .await
            .unwrap_or(0.0)
        }
    };
    w.publish(&implausible).await;
    w.wait_applied(1).await;
    assert_eq!(
        dead_letters(&w).await,
        1.0,
        "dead-lettered while the user is not erased"
    );

    erase(&mut db, "gone", None).await;
    w.publish(&implausible).await; // the topic replayed: a dead letter would copy the report again
    w.wait_applied(2).await;
    assert_eq!(
        dead_letters(&w).await,
        1.0,
        "no second dead letter of an erased user's report"
    );
    assert_eq!(erased_counter(&w).await, 1.0);
}

/// `report` of `user`, number `n` (a mark of its own), received at `at`.
fn received_at(user: &str, n: u64, at: OffsetDateTime) -> Envelope<LmsReport> {
    let mut e = nth_report(user, n);
    e.received_at = at;
    e
}

#[tokio::test]
async fn a_rebuild_without_the_barrier_table_loads_it_from_the_topic_and_the_key_location() {
    let mut w = spawn_worker().await;
    let db = w.h.db.client().await;
    // Whole seconds: PostgreSQL keeps microseconds.
    let t0 = OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp() - 3600)
        .unwrap();
    let at = |s: i64| t0 + time::Duration::seconds(s);
    // `on_topic` is erased on the erasure topic only, `in_keys` in the key location only, at
    // t0 + 100 s; `kept` never.
    let reports = vec![
        received_at("on_topic", 1, at(10)),
        received_at("in_keys", 1, at(20)),
        received_at("kept", 1, at(30)),
        received_at("on_topic", 2, at(110)),
        received_at("in_keys", 2, at(120)),
    ];
    for e in &reports {
        w.publish(e).await;
    }
    w.wait_applied(reports.len() as i64).await;
    assert!(missing(&db, &reports).await.is_empty(), "all applied live");
    w.h.stop().await;
    // PostgreSQL lost its erasures and its barrier: only the topic and the archive tell.
    db.batch_execute("TRUNCATE erasures, erasure_barrier")
        .await
        .unwrap();

    let mut s = settings(&w.h);
    let tag = |u: &str| tagger().tag(u).as_str().to_owned();
    let topic = s.kafka.erasure_topic.clone();
    // Before token-api first published one, the topic does not exist: no erasure, no error.
    let kafka = s.kafka.clone();
    let (none, source) =
        tokio::task::spawn_blocking(move || kollus_history_worker::barrier::from_topic(&kafka))
            .await
            .unwrap()
            .expect("a missing erasure topic reads as empty");
    assert!(none.is_empty() && source.records == 0, "{source}");
    kollus_common::kafka::ensure_topics(&s.kafka, &[topic.as_str()])
        .await
        .unwrap();
    let event = ErasureEvent {
        erasure_id: Uuid::now_v7(),
        subject_tag: tag("on_topic"),
        erased_at: at(100),
    };
    w.h.broker
        .publish_raw(
            &topic,
            &event.subject_tag,
            &serde_json::to_vec(&event).unwrap(),
        )
        .await;
    let archive = std::env::temp_dir().join(format!("kollus-barrier-{}", Uuid::now_v7()));
    let record = LocationErasure {
        erasure_id: Uuid::now_v7(),
        subject_tag: tag("in_keys"),
        erased_at: at(100),
        destroyed_at: at(101),
        generations: vec![1],
    };
    let path = archive
        .join("keys")
        .join(location_record_path(&record.subject_tag, record.erasure_id));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, serde_json::to_vec(&record).unwrap()).unwrap();

    s.consume.rebuild = true;
    s.consume.archive_dir = Some(archive.display().to_string());
    let app = Application::build(s).await.expect("rebuilding");
    w.port = app.port();
    w.h.spawn(|stop| app.run_until(stop));
    let barrier: BTreeMap<String, OffsetDateTime> = db
        .query("SELECT subject_tag, erased_at FROM erasure_barrier", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        barrier,
        BTreeMap::from([(tag("on_topic"), at(100)), (tag("in_keys"), at(100))]),
        "loaded before the replay"
    );
    eventually(
        "the rebuild to replay every report",
        Duration::from_secs(60),
        || async { (erased_counter(&w).await >= 2.0).then_some(()) },
    )
    .await;
    w.wait_applied(reports.len() as i64).await;
    assert_eq!(
        missing(&db, &reports).await,
        vec![reports[0].id, reports[1].id],
        "the erased users' reports before their erasure absent, the rest rebuilt"
    );
    w.h.stop().await;
    let _ = std::fs::remove_dir_all(&archive);
}

/// V27's privileges: the service role raises a barrier, and can neither lower, rename nor
/// delete one.
#[tokio::test]
async fn the_service_role_raises_the_barrier_and_never_lowers_or_deletes_it() {
    let db = TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO erasure_barrier VALUES ('t', '2026-01-02Z'); SET ROLE kollus_service",
        )
        .await
        .unwrap();
    for sql in ["DELETE FROM erasure_barrier", "TRUNCATE erasure_barrier"] {
        let e = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{sql}: {e}");
    }
    let at = |when: &'static str| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT erased_at = $1::text::timestamptz FROM erasure_barrier \
                      WHERE subject_tag = 't'",
                    &[&when],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    client
        .batch_execute(
            "UPDATE erasure_barrier SET erased_at = '2026-01-01Z'; \
             UPDATE erasure_barrier SET subject_tag = 'u'; \
             INSERT INTO erasure_barrier VALUES ('t', '2025-01-01Z') \
                 ON CONFLICT (subject_tag) DO UPDATE SET erased_at = EXCLUDED.erased_at",
        )
        .await
        .unwrap();
    assert!(at("2026-01-02Z").await, "never lowered, never renamed");
    client
        .batch_execute("UPDATE erasure_barrier SET erased_at = '2026-03-01Z'")
        .await
        .unwrap();
    assert!(at("2026-03-01Z").await, "raised");
}

#[tokio::test]
async fn the_worker_refuses_to_start_without_a_subject_tag_key() {
    let h = Harness::new().await;
    let mut s = settings(&h);
    s.subject_tag_key_file = "/nonexistent/subject-tag.key".into();
    let e = Application::build(s).await.err().expect("refused");
    assert!(format!("{e:#}").contains("SUBJECT_TAG_KEY_FILE"), "{e:#}");
}

// The property: for any sequence of reports (some replayed), erasures and rebuilds, applied with
// the worker's own code, `watch_sessions` holds what the reports of users never erased, and
// those received after their user's latest erasure, build.

#[derive(Debug, Clone)]
enum Step {
    /// A batch of new reports: (user, session, counters' step), received now.
    Reports(Vec<(u8, u8, u8)>),
    /// Reports delivered before, delivered again (a replayed topic, a late copy).
    Replay(Vec<prop::sample::Index>),
    Erase(u8),
    /// The tables emptied and every report delivered so far applied again (the barrier kept).
    Rebuild,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => prop::collection::vec((0u8..3, 0u8..2, 1u8..6), 1..5).prop_map(Step::Reports),
        2 => prop::collection::vec(any::<prop::sample::Index>(), 1..4).prop_map(Step::Replay),
        2 => (0u8..3).prop_map(Step::Erase),
        1 => Just(Step::Rebuild),
    ]
}

/// Report `k` (unique) of user `u` in session `s`: counters growing with `n`, a mark of its own.
fn nth(u: u8, s: u8, n: u8, k: u64, at: OffsetDateTime) -> Envelope<LmsReport> {
    let n = u64::from(n);
    let mut e = crate::helpers::envelope(&with_segment(
        report(
            &format!("u{u}"),
            "m1",
            1_700_000_000 + i64::from(s),
            [n * 10, n * 5, n * 12, n * 8, n],
            &[(1, n, n * 4)],
        ),
        k * 10,
        10,
    ));
    e.received_at = at;
    e
}

async fn run_case(db: &TestDb, steps: &[Step]) -> Result<(), TestCaseError> {
    let mut client = db.client().await;
    client
        .batch_execute("TRUNCATE watch_sessions, erasures, erasure_barrier")
        .await
        .unwrap();
    let history = history(db);
    let t0 =
        OffsetDateTime::from_unix_timestamp(OffsetDateTime::now_utc().unix_timestamp() - 86_400)
            .unwrap();
    let mut delivered: Vec<Envelope<LmsReport>> = Vec::new();
    let mut latest: HashMap<String, OffsetDateTime> = HashMap::new();
    let mut k = 0u64;
    for (i, step) in steps.iter().enumerate() {
        let now = t0 + time::Duration::seconds(i as i64 * 10);
        match step {
            Step::Reports(rs) => {
                let batch: Vec<_> = rs
                    .iter()
                    .map(|(u, s, n)| {
                        k += 1;
                        nth(*u, *s, *n, k, now)
                    })
                    .collect();
                history.apply(&records(&batch)).await.unwrap();
                delivered.extend(batch);
            }
            Step::Replay(picks) if !delivered.is_empty() => {
                let batch: Vec<_> = picks
                    .iter()
                    .map(|p| delivered[p.index(delivered.len())].clone())
                    .collect();
                history.apply(&records(&batch)).await.unwrap();
            }
            Step::Replay(_) => {}
            Step::Erase(u) => {
                let user = format!("u{u}");
                erase(&mut client, &user, Some(now)).await;
                latest.insert(user, now);
            }
            Step::Rebuild => {
                history.reset().await.unwrap();
                if !delivered.is_empty() {
                    history.apply(&records(&delivered)).await.unwrap();
                }
            }
        }
    }
    let got = snapshot(&client).await;
    let kept: Vec<_> = delivered
        .iter()
        .filter(|e| {
            latest
                .get(e.payload.user.client_user_id.as_str())
                .is_none_or(|at| e.received_at >= *at)
        })
        .cloned()
        .collect();
    history.reset().await.unwrap();
    if !kept.is_empty() {
        history.apply(&records(&kept)).await.unwrap();
    }
    let want = snapshot(&client).await;
    prop_assert_eq!(got, want, "steps: {:?}", steps);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_reports_erasures_and_rebuilds_leave_the_reports_not_erased() {
    let db = TestDb::new().await;
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&prop::collection::vec(step(), 1..12), |steps| {
            handle.block_on(run_case(&db, &steps))
        })
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}
