use std::time::Duration;

use kollus_common::envelope::{Envelope, RawRequest};
use kollus_common::kollus::platform::ContentEvent;
use kollus_common::kollus::CallbackKind;
use kollus_common::worker::{decode_batch, Apply as _};
use kollus_sync_worker::catalog::{Catalog, TABLES};
use kollus_sync_worker::configuration::Settings;
use kollus_sync_worker::metrics::Metrics;
use kollus_sync_worker::startup::Application;
use kollus_test_support::group::committed;
use kollus_test_support::{eventually, fixture, Harness, TestDb};
use rdkafka::message::{OwnedMessage, Timestamp};

pub struct TestWorker {
    pub h: Harness,
    /// The admin port (`/metrics`) of the instance `start` runs.
    pub port: u16,
}

/// Settings for an instance against the harness's database and broker.
pub fn settings(h: &Harness) -> Settings {
    let mut s: Settings = kollus_test_support::settings(&[kollus_test_support::EPHEMERAL_PORT]);
    s.group_id = h.broker.group("sync-worker");
    s.database = h.db.settings();
    s.kafka = h.kafka.clone();
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
        let app = self.build(false).await.expect("building sync-worker");
        self.port = app.port();
        self.h.spawn(|stop| app.run_until(stop));
    }

    /// Builds a worker on this harness's database and broker (`rebuild`: with `--rebuild`).
    pub async fn build(&self, rebuild: bool) -> anyhow::Result<Application> {
        let mut s = settings(&self.h);
        s.consume.rebuild = rebuild;
        Application::build(s).await
    }

    /// Publishes a platform callback as ingest would.
    pub async fn send(&self, kind: CallbackKind, form: &[u8]) -> Envelope<ContentEvent> {
        let event = ContentEvent::from_form(kind, form).expect("a valid callback");
        let envelope = Envelope::new(kind, event, RawRequest::body(None, form));
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

    /// Waits until the worker's group has committed past `n` records of the content topic: every
    /// record published so far is applied or dead-lettered (the loop sends a batch's dead
    /// letters before it stores the batch's offsets).
    pub async fn wait_committed(&self, n: i64) {
        let (kafka, group) = (&self.h.kafka, settings(&self.h).group_id);
        eventually(
            &format!("{n} records committed"),
            Duration::from_secs(30),
            || async {
                let done = committed(&kafka.brokers, &group, &kafka.content_topic).await;
                (done == n).then_some(())
            },
        )
        .await;
    }

    /// The dead letters of this worker's topic, once it holds exactly `n`: test-support's
    /// `Harness::dead_letters`.
    pub async fn dead_letters(&self, n: usize) -> Vec<serde_json::Value> {
        self.h.dead_letters(n).await
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
    let mut e = Envelope::new(kind, event, RawRequest::body(None, form.as_bytes()));
    e.received_at =
        time::OffsetDateTime::from_unix_timestamp(1_793_523_600 + at).expect("a valid instant");
    e
}

/// Every catalog table as JSON text (the shared definition, also used end to end).
pub use kollus_test_support::db::catalog_snapshot as snapshot;

pub fn record(e: &Envelope<ContentEvent>, offset: i64) -> OwnedMessage {
    OwnedMessage::new(
        Some(serde_json::to_vec(e).unwrap()),
        Some(e.payload.partition_key().as_bytes().to_vec()),
        "kollus.content.v1".into(),
        Timestamp::NotAvailable,
        0,
        offset,
        None,
    )
}

/// Applies `batches` with the worker's own `Apply` (no broker) to a fresh database; returns
/// its snapshot and the database. The reference a pipeline run must equal.
pub async fn apply_directly(batches: Vec<Vec<&Envelope<ContentEvent>>>) -> (Vec<String>, TestDb) {
    let replayer = Replayer::new().await;
    let rows = replayer.run(batches).await;
    (rows, replayer.db)
}

/// The worker's own `Apply` on a database of its own, emptied before each run: many orders and
/// batchings of the same events, each from an empty catalog, for a `TRUNCATE` apiece rather than
/// a database.
pub struct Replayer {
    pub db: TestDb,
    catalog: Catalog,
}

impl Replayer {
    pub async fn new() -> Self {
        let db = TestDb::new().await;
        let catalog = Catalog {
            pool: kollus_common::db::pool(&db.settings()).unwrap(),
            metrics: Metrics::new(),
        };
        Self { db, catalog }
    }

    /// Empties the catalog, applies `batches` in order, and returns the catalog's snapshot.
    pub async fn run(&self, batches: Vec<Vec<&Envelope<ContentEvent>>>) -> Vec<String> {
        let client = self.db.client().await;
        // DELETE rather than the worker's TRUNCATE: much cheaper for a handful of rows.
        let empty: String = TABLES.iter().map(|t| format!("DELETE FROM {t};")).collect();
        client
            .batch_execute(&empty)
            .await
            .expect("emptying the catalog");
        assert!(
            snapshot(&client).await.is_empty(),
            "the catalog is empty before a run"
        );
        let mut offset = 0;
        for batch in batches {
            let messages: Vec<_> = batch
                .iter()
                .map(|e| {
                    offset += 1;
                    record(e, offset)
                })
                .collect();
            let (records, undecoded) = decode_batch::<ContentEvent>(&messages);
            assert!(undecoded.is_empty(), "{undecoded:?}");
            let applied = self
                .catalog
                .apply(&records)
                .await
                .expect("the batch applies");
            assert!(applied.rejected.is_empty(), "{:?}", applied.rejected);
        }
        snapshot(&client).await
    }
}

/// Asserts two catalog snapshots are equal, showing the first rows that differ.
pub fn assert_same_catalog(got: &[String], want: &[String], what: &str) {
    kollus_test_support::assert_same_rows(got, want, &format!("{what}: another catalog"));
}

/// A small deterministic generator (xorshift), so a failing order can be reproduced by seed.
pub struct Rng(pub u64);

impl Rng {
    /// The generator of order number `seed`.
    pub fn seeded(seed: u64) -> Self {
        Self(0x9E37_79B9_7F4A_7C15 ^ seed)
    }

    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// `events` as one delivery might bring them: each one to `most_copies` times (re-deliveries),
/// shuffled, and cut into batches of 1 up to a size drawn per delivery from 1, 4, 16 and the
/// whole delivery, so that events meet in one batch as often as in separate ones.
pub fn delivery<'a>(
    rng: &mut Rng,
    events: &'a [Envelope<ContentEvent>],
    most_copies: usize,
) -> Vec<Vec<&'a Envelope<ContentEvent>>> {
    let mut copies: Vec<&Envelope<ContentEvent>> = Vec::new();
    for e in events {
        copies.extend(std::iter::repeat_n(e, 1 + rng.below(most_copies)));
    }
    for i in (1..copies.len()).rev() {
        copies.swap(i, rng.below(i + 1));
    }
    let largest = [1, 4, 16, copies.len()][rng.below(4)];
    let mut batches = Vec::new();
    while !copies.is_empty() {
        let n = (1 + rng.below(largest)).min(copies.len());
        batches.push(copies.drain(..n).collect());
    }
    batches
}

/// Every order of `items` (Heap's algorithm): `n!` of them, for the handful of events a case
/// has.
pub fn permutations<T: Clone>(items: &[T]) -> Vec<Vec<T>> {
    fn heap<T: Clone>(k: usize, a: &mut Vec<T>, out: &mut Vec<Vec<T>>) {
        if k <= 1 {
            out.push(a.clone());
            return;
        }
        heap(k - 1, a, out);
        for i in 0..k - 1 {
            if k % 2 == 0 {
                a.swap(i, k - 1);
            } else {
                a.swap(0, k - 1);
            }
            heap(k - 1, a, out);
        }
    }
    let mut out = Vec::new();
    heap(items.len(), &mut items.to_vec(), &mut out);
    out
}

/// A `snapshot` envelope as `kollus-catalog` publishes it: what Kollus's API said about `upload`
/// by a request started `requested` seconds after the fixed instant, reaching the topic at
/// `received`. `channels`: (channel key, media content key) pairs; `title` marks it found.
pub fn api_snapshot(
    upload: &str,
    requested: i64,
    received: i64,
    title: Option<&str>,
    channels: &[(&str, &str)],
) -> Envelope<ContentEvent> {
    use kollus_common::domain::{ChannelKey, MediaContentKey, UploadFileKey};
    use kollus_common::kollus::snapshot::{SnapshotChannel, UploadSnapshot};
    let mut s = UploadSnapshot::absent(instant(requested));
    if let Some(title) = title {
        s.found = true;
        s.title = Some(title.into());
        s.duration_seconds = Some(754);
        s.poster_url = Some(format!("https://v.kr.kollus.com/poster/{upload}.jpg"));
        s.transcoding_stage = Some(21);
        s.transcoding_stage_name = Some("Transcoded".into());
        s.channels = channels
            .iter()
            .map(|(ch, m)| SnapshotChannel {
                channel_key: ChannelKey::parse(*ch).unwrap(),
                media_content_key: MediaContentKey::parse(*m).unwrap(),
                channel_name: Some(format!("Channel {ch}")),
            })
            .collect();
    }
    let event = ContentEvent::snapshot(UploadFileKey::parse(upload).unwrap(), s);
    let mut e = Envelope::new(
        CallbackKind::Snapshot,
        event,
        RawRequest::body(Some("application/json"), b"{}"),
    );
    e.received_at = instant(received);
    e
}

/// The fixed instant of [`envelope`] plus `at` seconds.
pub fn instant(at: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(1_793_523_600 + at).expect("a valid instant")
}
