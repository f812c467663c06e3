use std::time::Duration;

use kollus_common::envelope::{Envelope, RawRequest};
use kollus_common::kollus::lms::LmsReport;
use kollus_common::kollus::CallbackKind;
use kollus_common::worker::{decode_batch, Apply as _, Record};
use kollus_history_worker::configuration::Settings;
use kollus_history_worker::history::History;
use kollus_history_worker::startup::Application;
use kollus_test_support::group::committed;
use kollus_test_support::{eventually, scrape, Harness, TestDb};

/// The consumer group of every instance [`settings`] makes on this harness's broker.
pub fn group(h: &Harness) -> String {
    h.broker.group("history-worker")
}

pub struct TestWorker {
    pub h: Harness,
    pub port: u16,
}

/// The subject tag key file every instance of this test process uses (token-api's, from
/// `kollus_test_support::key_files`).
pub fn tag_key_file() -> &'static std::path::Path {
    &kollus_test_support::key_files().files[1].2
}

/// Tags users as every instance of this test process does.
pub fn tagger() -> kollus_common::subject::Tagger {
    kollus_common::subject::Tagger::from_file(tag_key_file()).expect("the test's tag key")
}

/// The environment a history-worker process of this test needs besides the harness's.
pub fn tag_key_env() -> (&'static str, &'static str) {
    (
        "SUBJECT_TAG_KEY_FILE",
        tag_key_file().to_str().expect("a UTF-8 temporary path"),
    )
}

/// Settings for an instance against the harness's database and broker (and an erasure topic of
/// this test's own).
pub fn settings(h: &Harness) -> Settings {
    let key = format!("--subject-tag-key-file={}", tag_key_file().display());
    let mut s: Settings = kollus_test_support::settings(&[
        kollus_test_support::EPHEMERAL_PORT,
        "--write-shards=2",
        &key,
    ]);
    s.group_id = group(h);
    s.database = h.db.settings();
    s.kafka = h.kafka.clone();
    s.kafka.erasure_topic = h.broker.topic("erasure");
    s
}

pub async fn spawn_worker() -> TestWorker {
    let mut w = TestWorker {
        h: Harness::new().await,
        port: 0,
    };
    w.start().await;
    w
}

impl TestWorker {
    pub async fn start(&mut self) {
        let app = Application::build(settings(&self.h))
            .await
            .expect("building history-worker");
        self.port = app.port();
        self.h.spawn(|stop| app.run_until(stop));
    }

    /// The admin port (`/metrics`) of the instance `start` runs.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The instance's report counters: (`applied`, `duplicate`): reports that changed their
    /// session, and reports that changed nothing.
    pub async fn outcomes(&self) -> (u64, u64) {
        let base = format!("http://127.0.0.1:{}", self.port);
        let count = |outcome: &str| {
            let sample = format!("kollus_history_records_total{{outcome=\"{outcome}\"}}");
            let base = base.clone();
            async move { scrape(&base, &sample).await.expect("the worker's metrics") as u64 }
        };
        (count("applied").await, count("duplicate").await)
    }

    /// Wraps a report in an envelope as ingest would (not yet published).
    pub fn envelope(&self, json: &serde_json::Value) -> Envelope<LmsReport> {
        envelope(json)
    }

    pub async fn publish(&self, envelope: &Envelope<LmsReport>) {
        self.h
            .broker
            .publish(
                &self.h.kafka.playback_topic,
                &envelope.payload.partition_key(),
                envelope,
            )
            .await;
    }

    /// Waits until the worker's group has committed past `n` records of the playback topic:
    /// every record published so far is applied (or dead-lettered), since the worker commits
    /// only after the transaction that applied them.
    pub async fn wait_applied(&self, n: i64) {
        let (kafka, group) = (&self.h.kafka, group(&self.h));
        eventually(
            &format!("{n} LMS reports applied (committed offsets)"),
            // A replacement member may wait out the session timeout of one killed with -9.
            Duration::from_secs(90),
            || async {
                let done = committed(&kafka.brokers, &group, &kafka.playback_topic).await;
                (done == n).then_some(())
            },
        )
        .await;
    }
}

/// Wraps a report in an envelope as ingest would (not yet published).
pub fn envelope(json: &serde_json::Value) -> Envelope<LmsReport> {
    let body = json.to_string();
    let report = LmsReport::from_json(body.as_bytes()).expect("a valid report");
    Envelope::new(
        CallbackKind::Lms,
        report,
        RawRequest::body(Some("application/json"), body.as_bytes()),
    )
}

/// `doc` with one played segment (`block_info.sessions`) of its own: `play_time` seconds from
/// `start_time` in block 0. Segments merge as a union keyed by (block, start time), so a report
/// whose segment no other report carries leaves a trace in its session that only it can leave,
/// where counters (maximums) show only the largest report.
pub fn with_segment(
    mut doc: serde_json::Value,
    start_time: u64,
    play_time: u64,
) -> serde_json::Value {
    doc["block_info"]["sessions"] =
        serde_json::json!([{"block": 0, "start_time": start_time, "play_time": play_time}]);
    doc
}

/// Report `n` (from 1) of `user` on video `m1`: counters that grow with `n`, and the 10 s played
/// since report `n - 1` as a segment of its own, so each report leaves a mark in the session
/// that no other report can leave (the counters keep maxima: they show only the last report).
pub fn nth_report(user: &str, n: u64) -> Envelope<LmsReport> {
    envelope(&with_segment(
        report(
            user,
            "m1",
            1_700_000_000,
            [n * 10, n * 5, n * 12, n * 8, n],
            &[(1, n, n * 4)],
        ),
        (n - 1) * 10,
        10,
    ))
}

/// Asserts that every report of `published` left its mark in `watch_sessions`: each of its
/// segments is in its session, with at least its play time. Counters keep maximums and
/// committed offsets count skipped records too, so this is what sees a report lost in the
/// middle of a stream. The marks must be the reports' own (no two reports share one), or a
/// lost report could hide behind another's.
pub async fn assert_every_report_left_its_mark(
    db: &tokio_postgres::Client,
    published: &[Envelope<LmsReport>],
) {
    let missing = missing_marks(db, published).await;
    assert!(
        missing.is_empty(),
        "{} of {} reports left no mark in watch_sessions: {missing:#?}",
        missing.len(),
        published.len()
    );
}

/// The reports of `published` whose mark (see [`assert_every_report_left_its_mark`]) is not in
/// `watch_sessions`, each named by its session, segment and envelope id.
pub async fn missing_marks(
    db: &tokio_postgres::Client,
    published: &[Envelope<LmsReport>],
) -> Vec<String> {
    use std::collections::HashMap;
    // (user, video, start_at, block, start_time) of a segment.
    type Mark = (String, String, i64, i64, i64);
    let mut owners: HashMap<Mark, uuid::Uuid> = HashMap::new();
    let mut marks = Vec::new();
    for e in published {
        let r = &e.payload;
        assert!(
            !r.segments.is_empty(),
            "report {} carries no segment to find it by",
            e.id
        );
        for s in &r.segments {
            let mark: Mark = (
                r.user.client_user_id.as_str().to_owned(),
                r.content.media_content_key.as_str().to_owned(),
                r.content.start_at.0,
                i64::from(s.block),
                s.start_time as i64,
            );
            if let Some(other) = owners.insert(mark.clone(), e.id) {
                assert_eq!(
                    other, e.id,
                    "reports {other} and {} share the mark {mark:?}",
                    e.id
                );
            }
            marks.push((mark, s.play_time as i64, e.id));
        }
    }
    // Read straight from the stored JSON (`[block, start_time, play_time]` triples, V6).
    let held: HashMap<Mark, i64> = db
        .query(
            "SELECT client_user_id, media_content_key, start_at, \
                    (s->>0)::bigint, (s->>1)::bigint, (s->>2)::bigint \
             FROM watch_sessions, jsonb_array_elements(segments) s",
            &[],
        )
        .await
        .expect("reading the sessions' segments")
        .iter()
        .map(|r| ((r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)), r.get(5)))
        .collect();
    let mut missing: Vec<String> = marks
        .iter()
        .filter(|(mark, play_time, _)| held.get(mark).is_none_or(|held| held < play_time))
        .map(|((user, media, start_at, _, start_time), _, id)| {
            format!("{user}/{media}@{start_at} segment at {start_time} s (report {id})")
        })
        .collect();
    missing.dedup();
    missing
}

pub use kollus_test_support::assert_same_rows;

impl TestWorker {
    /// The dead letters of this worker's topic, once it holds exactly `n`: test-support's
    /// `Harness::dead_letters`.
    pub async fn dead_letters(&self, n: usize) -> Vec<serde_json::Value> {
        self.h.dead_letters(n).await
    }
}

/// An LMS report document with the given counters.
pub fn report(
    user: &str,
    media: &str,
    start_at: i64,
    c: [u64; 5],
    blocks: &[(u8, u64, u64)],
) -> serde_json::Value {
    let [playtime, real_playtime, runtime, showtime, position] = c;
    let mut b = serde_json::Map::new();
    for (i, (played, t, p)) in blocks.iter().enumerate() {
        b.insert(format!("b{i}"), serde_json::json!(played.to_string()));
        b.insert(format!("t{i}"), serde_json::json!(t.to_string()));
        b.insert(format!("p{i}"), serde_json::json!(p.to_string()));
    }
    serde_json::json!({
        "user_info": {"client_user_id": user, "player_id": "p1", "device": "x86_64", "os": "MAC"},
        "content_info": {
            "media_content_key": media, "start_at": start_at.to_string(), "duration": "600",
            "playtime": playtime.to_string(), "real_playtime": real_playtime.to_string(),
            "runtime": runtime.to_string(), "showtime": showtime.to_string(),
            "last_play_at": position.to_string(), "playtime_percent": (playtime * 100 / 600).to_string()
        },
        "block_info": {"block_count": blocks.len().to_string(), "blocks": b}
    })
}

/// Every watch-history table as JSON text (the shared definition, also used end to end).
pub use kollus_test_support::db::history_snapshot as snapshot;

/// A history writer on `db`, as the worker builds it, to apply batches by hand.
pub fn history(db: &TestDb) -> History {
    History {
        pool: kollus_common::db::pool(&db.settings()).unwrap(),
        metrics: Default::default(),
        plausibility: Default::default(),
        write_shards: 1,
        tagger: tagger(),
    }
}

/// The envelopes as the loop hands them to `Apply`.
pub fn records(envelopes: &[Envelope<LmsReport>]) -> Vec<Record<LmsReport>> {
    let messages: Vec<_> = envelopes
        .iter()
        .enumerate()
        .map(|(i, e)| {
            rdkafka::message::OwnedMessage::new(
                Some(serde_json::to_vec(e).unwrap()),
                None,
                "kollus.playback.v1".into(),
                rdkafka::message::Timestamp::NotAvailable,
                0,
                i as i64,
                None,
            )
        })
        .collect();
    let (records, undecoded) = decode_batch(&messages);
    assert!(undecoded.is_empty(), "{undecoded:?}");
    records
}

/// The history tables as applying each of `envelopes` once, in one batch, to a fresh database
/// leaves them: what any run over the same reports must end with.
pub async fn applied_once(envelopes: &[Envelope<LmsReport>]) -> Vec<String> {
    let db = TestDb::new().await;
    let applied = history(&db).apply(&records(envelopes)).await.unwrap();
    assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
    snapshot(&db.client().await).await
}
