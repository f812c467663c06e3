use std::time::Duration;

use kollus_common::envelope::{Envelope, RawRequest};
use kollus_common::kollus::lms::LmsReport;
use kollus_common::kollus::CallbackKind;
use kollus_common::telemetry::{LogFormat, LogSettings};
use kollus_common::worker::{decode_batch, Apply as _, ConsumeSettings, Record};
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

/// Settings for an instance against the harness's database and broker.
pub fn settings(h: &Harness) -> Settings {
    Settings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        group_id: group(h),
        consume: ConsumeSettings::default(),
        write_shards: 2,
        plausibility: Default::default(),
        database: h.db.settings(),
        kafka: h.kafka.clone(),
        log: LogSettings {
            log_format: LogFormat::Text,
            log_filter: "info".into(),
        },
    }
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
        let body = json.to_string();
        let report = LmsReport::from_json(body.as_bytes()).expect("a valid report");
        Envelope::new(
            CallbackKind::Lms,
            report,
            RawRequest::body(Some("application/json"), body.as_bytes()),
        )
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
