//! Publishing snapshots to `kollus.content.v1`, as ingest publishes callbacks: one envelope of
//! kind `snapshot` per upload, keyed by the upload, with the same headers; `raw` holds the API
//! items the snapshot was built from (never a URL: it would carry the token). The tables are
//! sync-worker's to write, so the archive keeps every snapshot and `--rebuild` replays it.

use std::time::Duration;

use anyhow::Context as _;
use futures_util::stream::{self, TryStreamExt as _};
use kollus_common::domain::UploadFileKey;
use kollus_common::envelope::{header as h, Envelope, RawBody, RawRequest};
use kollus_common::kafka;
use kollus_common::kollus::platform::ContentEvent;
use kollus_common::kollus::snapshot::UploadSnapshot;
use kollus_common::kollus::CallbackKind;
use kollus_common::settings::KafkaSettings;
use rdkafka::producer::FutureProducer;
use serde_json::Value;

use crate::metrics::Metrics;

/// Snapshots in flight at once: the producer batches them (acks=all, idempotent).
const IN_FLIGHT: usize = 256;
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Publisher {
    producer: FutureProducer,
    topic: String,
    metrics: Metrics,
}

/// One snapshot to publish, and the API items it was built from.
pub struct Outgoing {
    pub upload: UploadFileKey,
    pub snapshot: UploadSnapshot,
    pub raw: Vec<Value>,
}

impl Publisher {
    pub async fn new(kafka_settings: &KafkaSettings, metrics: Metrics) -> anyhow::Result<Self> {
        kafka::ensure_topics(kafka_settings, &[&kafka_settings.content_topic]).await?;
        Ok(Self {
            producer: kafka::durable_producer(kafka_settings, "kollus-catalog", ACK_TIMEOUT)?,
            topic: kafka_settings.content_topic.clone(),
            metrics,
        })
    }

    /// Publishes every snapshot; returns once Kafka acknowledged them all.
    pub async fn publish(&self, snapshots: Vec<Outgoing>) -> anyhow::Result<usize> {
        let n = snapshots.len();
        stream::iter(snapshots.into_iter().map(Ok))
            .map_ok(|o| self.send(o))
            .try_buffer_unordered(IN_FLIGHT)
            .try_collect::<Vec<()>>()
            .await?;
        Ok(n)
    }

    async fn send(&self, o: Outgoing) -> anyhow::Result<()> {
        let found = if o.snapshot.found { "found" } else { "absent" };
        let raw = RawRequest {
            method: Some("GET".into()),
            content_type: Some("application/json".into()),
            query_string: None,
            body: RawBody::Text(Value::Array(o.raw).to_string()),
        };
        let event = ContentEvent::snapshot(o.upload, o.snapshot);
        let envelope = Envelope::new(CallbackKind::Snapshot, event, raw);
        let bytes = serde_json::to_vec(&envelope)?;
        let headers = h::to_kafka(&envelope.headers());
        kafka::send(
            &self.producer,
            &self.topic,
            envelope.payload.partition_key(),
            &bytes,
            headers,
            ACK_TIMEOUT,
        )
        .await
        .with_context(|| {
            format!(
                "publishing the snapshot of {}",
                envelope.payload.upload_file_key
            )
        })?;
        self.metrics.snapshots.with_label_values(&[found]).inc();
        Ok(())
    }
}
