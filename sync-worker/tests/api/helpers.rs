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

/// A platform callback's envelope as ingest would have made it, received `at` seconds after
/// a fixed instant (so tests control the only clock the catalog has).
pub fn envelope(kind: CallbackKind, form: &str, at: i64) -> Envelope<ContentEvent> {
    let event = ContentEvent::from_form(kind, form.as_bytes()).expect("a valid callback");
    let mut e = Envelope::new(
        kind,
        event,
        RawRequest {
            content_type: None,
            body: RawBody::from_bytes(form.as_bytes()),
        },
    );
    e.received_at =
        time::OffsetDateTime::from_unix_timestamp(1_793_523_600 + at).expect("a valid instant");
    e
}

/// Every catalog table, row by row in key order, as JSON text; `content_events.applied_at`
/// (the wall clock of the apply) is left out. Two catalogs are the same when these are equal.
pub async fn snapshot(db: &tokio_postgres::Client) -> Vec<String> {
    let mut rows = Vec::new();
    for query in [
        "SELECT to_jsonb(t) FROM uploads t ORDER BY upload_file_key",
        "SELECT to_jsonb(t) FROM media_contents t ORDER BY media_content_key",
        "SELECT to_jsonb(t) FROM channel_memberships t ORDER BY media_content_key, channel_key",
        "SELECT to_jsonb(t) - 'applied_at' FROM content_events t ORDER BY envelope_id",
    ] {
        for row in db.query(query, &[]).await.expect(query) {
            rows.push(row.get::<_, serde_json::Value>(0).to_string());
        }
    }
    rows
}
