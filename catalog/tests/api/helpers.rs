use std::time::Duration;

use kollus_catalog::configuration::ApiSettings;
use kollus_common::telemetry::{LogFormat, LogSettings};
use kollus_common::worker::ConsumeSettings;
use kollus_sync_worker::configuration::Settings;
use kollus_sync_worker::startup::Application;
use kollus_test_support::{eventually, topic_record_count, FakeKollusApi, Harness};

pub const TOKEN: &str = "fake-api-token-0001";

/// A database, a broker, the stand-in API (an empty account) and, with `sync`, a sync-worker
/// applying the content topic.
pub struct Stack {
    pub h: Harness,
    pub fake: FakeKollusApi,
}

impl Stack {
    pub async fn new(sync: bool) -> Self {
        let mut h = Harness::new().await;
        if sync {
            let app = Application::build(Settings {
                listen_addr: "127.0.0.1:0".parse().unwrap(),
                group_id: h.broker.group("sync-worker"),
                consume: ConsumeSettings::default(),
                database: h.db.settings(),
                kafka: h.kafka.clone(),
                log: LogSettings {
                    log_format: LogFormat::Text,
                    log_filter: "warn".into(),
                },
            })
            .await
            .expect("building sync-worker");
            h.spawn(|stop| app.run_until(stop));
        }
        Self {
            h,
            fake: FakeKollusApi::start(TOKEN),
        }
    }

    /// API settings against the stand-in at `rate` requests a second.
    pub fn api(&self, rate: f64) -> ApiSettings {
        ApiSettings {
            api_url: self.fake.url.parse().unwrap(),
            api_token: TOKEN.to_owned().into(),
            api_rate: rate,
            per_page: 100,
            retry_start: Duration::from_millis(50),
            listen_addr: "127.0.0.1:0".parse().unwrap(),
        }
    }

    /// Records on the content topic.
    pub fn published(&self) -> i64 {
        topic_record_count(&self.h.kafka.brokers, &self.h.kafka.content_topic)
    }

    /// Waits until sync-worker applied `n` content events.
    pub async fn wait_applied(&self, n: i64) {
        let db = self.h.db.client().await;
        eventually(
            &format!("{n} applied content events"),
            Duration::from_secs(60),
            || async {
                let row = db
                    .query_one("SELECT count(*) FROM content_events", &[])
                    .await
                    .ok()?;
                (row.get::<_, i64>(0) == n).then_some(())
            },
        )
        .await;
    }
}
