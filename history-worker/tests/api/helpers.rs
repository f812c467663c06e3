use std::time::Duration;

use kollus_common::envelope::{Envelope, RawRequest};
use kollus_common::kollus::lms::LmsReport;
use kollus_common::kollus::CallbackKind;
use kollus_common::telemetry::{LogFormat, LogSettings};
use kollus_common::worker::ConsumeSettings;
use kollus_history_worker::configuration::Settings;
use kollus_history_worker::startup::Application;
use kollus_test_support::{eventually, Harness};

pub struct TestWorker {
    pub h: Harness,
    pub port: u16,
}

/// Settings for an instance against the harness's database and broker.
pub fn settings(h: &Harness) -> Settings {
    Settings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        group_id: "kollus-history-worker".into(),
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

    /// Waits until `playback_events` holds `n` envelope ids: every distinct record applied.
    pub async fn wait_applied(&self, n: i64) {
        let client = self.h.db.client().await;
        eventually(
            &format!("{n} applied LMS reports"),
            Duration::from_secs(30),
            || async {
                let row = client
                    .query_one("SELECT count(*) FROM playback_events", &[])
                    .await
                    .ok()?;
                (row.get::<_, i64>(0) == n).then_some(())
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
