use std::time::Duration;

use kollus_common::envelope::{Envelope, RawBody, RawRequest};
use kollus_common::kollus::platform::ContentEvent;
use kollus_common::kollus::CallbackKind;
use kollus_common::telemetry::{LogFormat, LogSettings};
use kollus_common::testing::{eventually, fixture, Harness};
use kollus_common::worker::ConsumeSettings;
use kollus_sync_worker::configuration::Settings;
use kollus_sync_worker::startup::Application;

pub struct TestWorker {
    pub h: Harness,
}

pub async fn spawn_worker() -> TestWorker {
    let mut w = TestWorker {
        h: Harness::new().await,
    };
    w.start().await;
    w
}

impl TestWorker {
    pub async fn start(&mut self) {
        let settings = Settings {
            listen_addr: "127.0.0.1:0".parse().unwrap(),
            group_id: "kollus-sync-worker".into(),
            consume: ConsumeSettings::default(),
            database: self.h.db.settings(),
            kafka: self.h.kafka.clone(),
            log: LogSettings {
                log_format: LogFormat::Text,
                log_filter: "info".into(),
            },
        };
        let app = Application::build(settings)
            .await
            .expect("building sync-worker");
        self.h.spawn(|stop| app.run_until(stop));
    }

    /// Publishes a platform callback as ingest would.
    pub async fn send(&self, kind: CallbackKind, form: &[u8]) -> Envelope<ContentEvent> {
        let event = ContentEvent::from_form(kind, form).expect("a valid callback");
        let envelope = Envelope::new(
            kind,
            event,
            RawRequest {
                content_type: None,
                body: RawBody::from_bytes(form),
            },
        );
        self.resend(&envelope).await;
        envelope
    }

    /// Publishes an envelope again (what a Kafka re-delivery or replay looks like).
    pub async fn resend(&self, envelope: &Envelope<ContentEvent>) {
        self.h
            .broker
            .publish(
                &self.h.kafka.content_topic,
                envelope.payload.partition_key(),
                envelope,
            )
            .await;
    }

    pub async fn send_fixture(&self, kind: CallbackKind, name: &str) -> Envelope<ContentEvent> {
        self.send(kind, &fixture(name)).await
    }

    /// Waits until `content_events` holds `n` rows: every published record was applied.
    pub async fn wait_applied(&self, n: i64) {
        let client = self.h.db.client().await;
        eventually(
            &format!("{n} applied content events"),
            Duration::from_secs(30),
            || async {
                let row = client
                    .query_one("SELECT count(*) FROM content_events", &[])
                    .await
                    .ok()?;
                (row.get::<_, i64>(0) == n).then_some(())
            },
        )
        .await;
    }
}
