//! `kollus-archive dump`: consumes the topics with the archive's own consumer group and writes
//! segments. A partition's offsets are committed only once the segment holding them is durable
//! (written, and for a local directory fsynced), so a crash repeats records, never skips them
//! (`restore` drops the repeats by envelope id).

use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::Duration;

use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::error::KafkaError;
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::record::ArchivedRecord;
use crate::segment::Open;
use crate::store::Archive;
use kollus_common::backoff::Backoff;
use kollus_common::kafka;
use kollus_common::settings::KafkaSettings;

#[derive(Debug, Clone, clap::Args)]
pub struct DumpSettings {
    /// Where segments go: a directory, or `s3://bucket/prefix`.
    #[arg(long = "to", env = "ARCHIVE_DIR")]
    pub to: String,
    /// Stop once every partition is archived up to its current end (one-shot backups, tests);
    /// without it, runs until stopped.
    #[arg(long)]
    pub until_end: bool,
    /// The archive's consumer group (its committed offsets say what is archived).
    #[arg(long, env = "ARCHIVE_GROUP_ID", default_value = "kollus-archive")]
    pub group_id: String,
    /// A segment is closed once it holds this many bytes of JSON (before compression).
    #[arg(long, env = "ARCHIVE_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub segment_bytes: u64,
    /// ... or once it has been open this long, in seconds: the most a crash makes `dump` redo.
    #[arg(long, env = "ARCHIVE_SEGMENT_SECONDS", default_value_t = 60)]
    pub segment_seconds: u64,
}

impl<'a> Dumper<'a> {
    fn new(
        archive: &'a Archive,
        consumer: kafka::ArchiveConsumer,
        settings: &'a DumpSettings,
        metrics: &'a Metrics,
    ) -> Self {
        Self {
            archive,
            consumer,
            settings,
            metrics,
            open: BTreeMap::new(),
        }
    }
}

struct Dumper<'a> {
    archive: &'a Archive,
    consumer: kafka::ArchiveConsumer,
    settings: &'a DumpSettings,
    metrics: &'a Metrics,
    open: BTreeMap<(String, i32), Open>,
}

impl Dumper<'_> {
    async fn take(&mut self, r: ArchivedRecord) -> anyhow::Result<()> {
        let key = (r.topic.clone(), r.partition);
        let open = match self.open.entry(key.clone()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => e.insert(Open::new(&r)?),
        };
        open.push(&r)?;
        self.metrics.open_records.inc();
        if open.raw_bytes >= self.settings.segment_bytes {
            self.close(&key).await?;
        }
        Ok(())
    }

    /// Closes the segments open longer than `ARCHIVE_SEGMENT_SECONDS`.
    async fn close_aged(&mut self) -> anyhow::Result<()> {
        let age = Duration::from_secs(self.settings.segment_seconds);
        let aged: Vec<_> = self
            .open
            .iter()
            .filter(|(_, o)| o.opened.elapsed() >= age)
            .map(|(k, _)| k.clone())
            .collect();
        for key in aged {
            self.close(&key).await?;
        }
        Ok(())
    }

    async fn close_all(&mut self) -> anyhow::Result<()> {
        let keys: Vec<_> = self.open.keys().cloned().collect();
        for key in keys {
            self.close(&key).await?;
        }
        Ok(())
    }

    /// Writes the segment, then its manifest entry, then commits past its last offset.
    async fn close(&mut self, key: &(String, i32)) -> anyhow::Result<()> {
        let Some(open) = self.open.remove(key) else {
            return Ok(());
        };
        let records = open.records;
        let (bytes, entry) = open.close()?;
        let manifest = serde_json::to_vec_pretty(&entry)?;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            let written = async {
                self.archive.put(&entry.segment, bytes.clone()).await?;
                self.archive
                    .put(&entry.manifest_path(), manifest.clone())
                    .await
            }
            .await;
            match written {
                Ok(()) => break,
                Err(e) => {
                    self.metrics.errors.inc();
                    tracing::warn!(error = format!("{e:#}"), segment = entry.segment, retry_in = ?backoff.next_delay(), "writing a segment failed; will retry");
                    backoff.wait().await;
                }
            }
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &entry.topic,
            entry.partition,
            Offset::Offset(entry.last_offset + 1),
        )?;
        if let Err(e) = self.consumer.commit(&tpl, CommitMode::Sync) {
            // The segment is safe; without the commit its records are archived again (repeats).
            tracing::warn!(error = %e, topic = entry.topic, partition = entry.partition, "committing archived offsets failed; they will be archived again");
        }
        let m = self.metrics;
        m.open_records.sub(records as i64);
        m.records.with_label_values(&[&entry.topic]).inc_by(records);
        m.segments.inc();
        m.bytes.inc_by(entry.bytes);
        m.last_segment_unix
            .set(time::OffsetDateTime::now_utc().unix_timestamp());
        tracing::info!(
            segment = entry.segment,
            records,
            bytes = entry.bytes,
            "segment archived"
        );
        Ok(())
    }
}

/// Runs until `shutdown` (then closes and commits what is open).
pub async fn continuous(
    archive: &Archive,
    kafka_settings: &KafkaSettings,
    settings: &DumpSettings,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    kafka::ensure_topics(kafka_settings, &kafka_settings.topics()).await?;
    let consumer =
        kafka::archive_consumer(kafka_settings, &settings.group_id, &kafka_settings.topics())?;
    let mut d = Dumper::new(archive, consumer, settings, metrics);
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => d.close_aged().await?,
            m = d.consumer.recv() => match m {
                Ok(m) => d.take(ArchivedRecord::of(&m)).await?,
                Err(KafkaError::PartitionEOF(_)) => {}
                Err(e) => tracing::warn!(error = %e, "Kafka consumer error"),
            },
        }
    }
    d.close_all().await?;
    tracing::info!("archive stopped; open segments written and committed");
    Ok(())
}

/// Archives every topic up to its end now, topic by topic, then returns the records archived.
pub async fn until_end(
    archive: &Archive,
    kafka_settings: &KafkaSettings,
    settings: &DumpSettings,
    metrics: &Metrics,
) -> anyhow::Result<u64> {
    kafka::ensure_topics(kafka_settings, &kafka_settings.topics()).await?;
    let mut total = 0;
    for topic in kafka_settings.topics() {
        total += topic_until_end(archive, kafka_settings, settings, metrics, topic).await?;
    }
    Ok(total)
}

async fn topic_until_end(
    archive: &Archive,
    kafka_settings: &KafkaSettings,
    settings: &DumpSettings,
    metrics: &Metrics,
    topic: &str,
) -> anyhow::Result<u64> {
    // Assigned, not subscribed: one topic at a time, so an end-of-partition event (which names
    // only the partition) is this topic's. Starts at the group's committed offsets.
    let consumer = kafka::archive_consumer(kafka_settings, &settings.group_id, &[])?;
    let partitions = kafka::partitions(&consumer, topic)?;
    let mut tpl = TopicPartitionList::new();
    let mut estimate = 0;
    for p in &partitions {
        tpl.add_partition_offset(topic, *p, Offset::Stored)?;
        // An estimate for the progress line (the local broker's "latest" undercounts).
        if let Ok((low, high)) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(5)) {
            estimate += (high - low).max(0) as u64;
        }
    }
    let committed = consumer.committed_offsets(tpl.clone(), Duration::from_secs(10))?;
    for e in committed.elements() {
        if let Offset::Offset(o) = e.offset() {
            estimate = estimate.saturating_sub(o.max(0) as u64);
        }
    }
    consumer.assign(&tpl)?;
    let mut progress = Progress::new("dump", "records", estimate, Some(metrics));
    let mut d = Dumper::new(archive, consumer, settings, metrics);
    let mut at_end: HashSet<i32> = HashSet::new();
    let mut count = 0;
    while at_end.len() < partitions.len() {
        match tokio::time::timeout(Duration::from_secs(30), d.consumer.recv()).await {
            Ok(Ok(m)) => {
                at_end.remove(&m.partition());
                d.take(ArchivedRecord::of(&m)).await?;
                count += 1;
                progress.add(1);
            }
            Ok(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Ok(Err(e)) => tracing::warn!(error = %e, topic, "Kafka consumer error"),
            Err(_) => anyhow::bail!(
                "{topic}: partitions {:?} did not reach their end within 30 s of silence",
                partitions
                    .iter()
                    .filter(|p| !at_end.contains(p))
                    .collect::<Vec<_>>()
            ),
        }
    }
    d.close_all().await?;
    progress.finish();
    tracing::info!(topic, records = count, "archived up to the end");
    Ok(count)
}
