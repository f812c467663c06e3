use std::time::Duration;

use kollus_catalog::configuration::ApiSettings;
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
            let mut settings: Settings =
                kollus_test_support::settings(&[kollus_test_support::EPHEMERAL_PORT]);
            settings.group_id = h.broker.group("sync-worker");
            settings.database = h.db.settings();
            settings.kafka = h.kafka.clone();
            let app = Application::build(settings)
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
        kollus_test_support::settings_group(&[
            "--api-url",
            &self.fake.url,
            "--api-token",
            TOKEN,
            &format!("--api-rate={rate}"),
            "--retry-start=50",
            kollus_test_support::EPHEMERAL_PORT,
        ])
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
