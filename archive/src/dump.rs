//! `kollus-archive dump`: consumes the topics and writes segments. A partition's offsets are
//! committed only once the segment holding them is durable (written, and for a local directory
//! fsynced), so a crash repeats records, never skips them (`restore` drops the repeats by
//! envelope id).
//!
//! Each record goes to its partition's current epoch (see `kollus_common::archive::segment`): a
//! record at an offset the archive already holds in that epoch is compared with the archived
//! one; the same record is a repeat, another record means the partition's offsets restarted (a
//! replaced broker, a recreated topic) and opens a new epoch. A cluster the archive holds no
//! epoch of opens one too; epochs are named by number and cluster, so archivers of two clusters
//! writing one location (at once, or one after the other) never write into each other's.
//! Nothing already archived is ever written over.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{CommitMode, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};
use sha2::{Digest as _, Sha256};

use crate::metrics::Metrics;
use kollus_common::archive::keys::KeyRing;
use kollus_common::archive::record::ArchivedRecord;
use kollus_common::archive::segment::{epoch_name, Entry, Item, Open};
use kollus_common::archive::store::{Archive, Created};
use kollus_common::archive::subject::{received_at, subject_of, unattributed_tag, Subject};
use kollus_common::archive::{holding_of, of_cluster};
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
    /// The consumer group whose committed offsets say where to resume. Default: the continuous
    /// archiver's (`ARCHIVE_GROUP_ID`); with `--until-end`, a group of the destination's own
    /// (`kollus-archive-once-` and a hash of `--to`), so a backup never competes with the
    /// running archiver and a new destination starts from the beginning.
    #[arg(long = "group")]
    pub group_id: Option<String>,
    /// A segment is closed once it holds this many bytes of JSON (before compression).
    #[arg(long, env = "ARCHIVE_SEGMENT_BYTES", default_value_t = 64 * 1024 * 1024)]
    pub segment_bytes: u64,
    /// ... or once it has been open this long, in seconds: the most a crash makes `dump` redo.
    #[arg(long, env = "ARCHIVE_SEGMENT_SECONDS", default_value_t = 60)]
    pub segment_seconds: u64,
    #[command(flatten)]
    pub keys: KeySettings,
}

/// The subject keys (README "Erasing a user"): with both key files, records naming a user are
/// sealed under that user's key and an erasure destroys it; without them, `dump` archives
/// every record in plaintext, as before subject keys, and WARNs at start.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct KeySettings {
    /// The key-encryption key that wraps the subject keys (32 random bytes, base64:
    /// `openssl rand -base64 32`). Losing it makes every sealed record unreadable.
    #[arg(long, env = "ARCHIVE_KEK_FILE")]
    pub kek_file: Option<std::path::PathBuf>,
    /// The key subject tags are an HMAC under (the same file token-api has).
    #[arg(long, env = "SUBJECT_TAG_KEY_FILE")]
    pub subject_tag_key_file: Option<std::path::PathBuf>,
    /// Where the subject keys and the erasure records are kept: a directory or
    /// `s3://bucket/prefix` that allows deletion and is neither versioned nor replicated.
    /// Default: `keys` inside the archive.
    #[arg(long, env = "ARCHIVE_KEYS_DIR")]
    pub keys_dir: Option<String>,
    /// Days an unattributed dead letter's key (one per UTC day) is kept; then it is destroyed
    /// and those records are non-identifiable.
    #[arg(long, env = "ARCHIVE_UNATTRIBUTED_DAYS", default_value_t = 30)]
    pub unattributed_days: u32,
}

impl KeySettings {
    /// The key location of the archive at `archive_dir`, or `None` without `ARCHIVE_KEK_FILE`.
    pub async fn ring(&self, archive_dir: &str) -> anyhow::Result<Option<KeyRing>> {
        let Some(kek) = &self.kek_file else {
            return Ok(None);
        };
        let location = kollus_common::erasure::keys_location(archive_dir, self.keys_dir.as_deref());
        KeyRing::open(&location, kek).await.map(Some)
    }
}

/// What sealing needs in `dump`.
struct Sealing {
    ring: KeyRing,
    tagger: kollus_common::subject::Tagger,
    unattributed_days: u32,
    last_expiry: Option<std::time::Instant>,
}

impl DumpSettings {
    /// The consumer group this dump resumes from (see `--group`).
    pub fn group(&self, kafka: &KafkaSettings) -> String {
        match (&self.group_id, self.until_end) {
            (Some(g), _) => g.clone(),
            (None, false) => kafka.archive_group_id.clone(),
            (None, true) => {
                let digest = hex::encode(Sha256::digest(self.to.trim_end_matches('/')));
                format!("kollus-archive-once-{}", &digest[..16])
            }
        }
    }
}

/// Where a partition's records go in this run.
#[derive(Debug, Clone)]
struct PartitionEpoch {
    epoch: u32,
    /// The highest offset the archive holds in `epoch` (closed segments), -1 for none.
    archived_last: i64,
    /// The highest epoch the archive has for the partition.
    max_epoch: u32,
}

struct Dumper<'a> {
    archive: &'a Archive,
    consumer: kafka::ArchiveConsumer,
    settings: &'a DumpSettings,
    metrics: &'a Metrics,
    cluster_id: String,
    /// Every closed segment's entry (read at start, then each one this run writes).
    entries: Vec<Entry>,
    epochs: HashMap<(String, i32), PartitionEpoch>,
    open: BTreeMap<(String, i32), Open>,
    /// The last segment read back to compare records with: (its path, its records).
    compared: Option<(String, Vec<ArchivedRecord>)>,
    sealing: Option<Sealing>,
    playback_topic: String,
    deadletter_topic: String,
    erasure_topic: String,
}

impl<'a> Dumper<'a> {
    async fn new(
        archive: &'a Archive,
        consumer: kafka::ArchiveConsumer,
        kafka_settings: &KafkaSettings,
        settings: &'a DumpSettings,
        metrics: &'a Metrics,
    ) -> anyhow::Result<Self> {
        let sealing = match settings.keys.ring(&archive.location).await? {
            Some(ring) => {
                let tag_key = settings
                    .keys
                    .subject_tag_key_file
                    .as_deref()
                    .ok_or_else(|| {
                        anyhow::anyhow!(
                            "ARCHIVE_KEK_FILE is set but SUBJECT_TAG_KEY_FILE is not: records are \
                         sealed per subject tag"
                        )
                    })?;
                let mut sealing = Sealing {
                    ring,
                    tagger: kollus_common::subject::Tagger::from_file(tag_key)?,
                    unattributed_days: settings.keys.unattributed_days,
                    last_expiry: None,
                };
                expire(&mut sealing, metrics).await?;
                Some(sealing)
            }
            None => {
                tracing::warn!(
                    "ARCHIVE_KEK_FILE is not set: records naming users are archived in \
                     plaintext, and an erasure does not reach them"
                );
                None
            }
        };
        let entries = kollus_common::archive::entries(archive).await?;
        let cluster_id = consumer
            .client()
            .fetch_cluster_id(Duration::from_secs(10))
            .unwrap_or_default();
        Ok(Self {
            archive,
            consumer,
            settings,
            metrics,
            cluster_id,
            entries,
            epochs: HashMap::new(),
            open: BTreeMap::new(),
            compared: None,
            sealing,
            playback_topic: kafka_settings.playback_topic.clone(),
            deadletter_topic: kafka_settings.deadletter_topic.clone(),
            erasure_topic: kafka_settings.erasure_topic.clone(),
        })
    }

    /// The partition's epoch as the archive left it for this cluster, or a new one when the
    /// archive holds none of this cluster's. Epochs of other clusters (another archiver writing
    /// the same location, or the cluster before a disaster) are left as they are: their names
    /// carry their cluster, so this one's never meet them.
    fn starting_epoch(&self, topic: &str, partition: i32) -> PartitionEpoch {
        let of_partition = |e: &&Entry| e.topic == topic && e.partition == partition;
        let max_epoch = self
            .entries
            .iter()
            .filter(of_partition)
            .map(|e| e.epoch)
            .max();
        let Some(max_epoch) = max_epoch else {
            return PartitionEpoch {
                epoch: 1,
                archived_last: -1,
                max_epoch: 0,
            };
        };
        let Some(latest) = holding_of(&self.entries, &self.cluster_id, topic, partition) else {
            tracing::warn!(
                topic,
                partition,
                cluster = self.cluster_id,
                epoch = epoch_name(max_epoch + 1, &self.cluster_id),
                "the archive holds this partition of other Kafka clusters only: a new epoch; \
                 what the archive holds stays as it is"
            );
            return PartitionEpoch {
                epoch: max_epoch + 1,
                archived_last: -1,
                max_epoch: max_epoch + 1,
            };
        };
        PartitionEpoch {
            epoch: latest.epoch,
            archived_last: latest.last_offset,
            max_epoch,
        }
    }

    /// The archived record at `offset` of the partition's `epoch`, if a closed segment holds it.
    async fn archived_at(
        &mut self,
        topic: &str,
        partition: i32,
        epoch: u32,
        offset: i64,
    ) -> anyhow::Result<Option<ArchivedRecord>> {
        let Some(entry) = of_cluster(&self.entries, &self.cluster_id)
            .filter(|e| e.topic == topic && e.partition == partition && e.epoch == epoch)
            .find(|e| (e.first_offset..=e.last_offset).contains(&offset))
            .cloned()
        else {
            return Ok(None);
        };
        if self.compared.as_ref().map(|(p, _)| p) != Some(&entry.segment) {
            let ring = self.sealing.as_mut().map(|s| &mut s.ring);
            let items =
                kollus_common::archive::read_items(self.archive, &entry, ring, None).await?;
            // An offset whose frame does not open (erased) compares with nothing.
            let records = items
                .into_iter()
                .filter_map(|i| match i {
                    Item::Record(r) => Some(r),
                    Item::Skipped { .. } => None,
                })
                .collect();
            self.compared = Some((entry.segment.clone(), records));
        }
        Ok(self
            .compared
            .as_ref()
            .and_then(|(_, rs)| rs.iter().find(|r| r.offset == offset).cloned()))
    }

    /// The epoch `r` belongs to: its partition's current one, or a new one when the archive
    /// holds another record at its offset.
    async fn epoch_for(&mut self, r: &ArchivedRecord) -> anyhow::Result<u32> {
        let key = (r.topic.clone(), r.partition);
        if !self.epochs.contains_key(&key) {
            let start = self.starting_epoch(&r.topic, r.partition);
            self.epochs.insert(key.clone(), start);
        }
        let current = self.epochs[&key].clone();
        if r.offset <= current.archived_last {
            let archived = self
                .archived_at(&r.topic, r.partition, current.epoch, r.offset)
                .await?;
            if archived.is_some_and(|a| &a != r) {
                let epoch = current.max_epoch + 1;
                tracing::warn!(
                    topic = r.topic,
                    partition = r.partition,
                    offset = r.offset,
                    archived_up_to = current.archived_last,
                    epoch = epoch_name(epoch, &self.cluster_id),
                    "the partition's offsets restarted with other records (a new broker or \
                     topic): a new epoch; what the archive holds stays as it is"
                );
                self.close(&key).await?;
                self.epochs.insert(
                    key,
                    PartitionEpoch {
                        epoch,
                        archived_last: -1,
                        max_epoch: epoch,
                    },
                );
                return Ok(epoch);
            }
        }
        Ok(current.epoch)
    }

    async fn take(&mut self, r: ArchivedRecord) -> anyhow::Result<()> {
        let key = (r.topic.clone(), r.partition);
        let epoch = self.epoch_for(&r).await?;
        if let Some(open) = self.open.get(&key) {
            if open.epoch == epoch && r.offset <= open.last_offset {
                // Delivered again within this run (a rebalance): the open segment has it.
                return Ok(());
            }
        }
        if r.topic == self.erasure_topic {
            self.erase(&r).await?;
        }
        let subject = match &self.sealing {
            None => None,
            Some(s) => match subject_of(&r, &self.playback_topic, &self.deadletter_topic) {
                Subject::Nobody => None,
                Subject::User(user) => Some((s.tagger.tag(&user).to_string(), received_at(&r))),
                Subject::Unattributed => {
                    let at = received_at(&r);
                    Some((unattributed_tag(at), at))
                }
            },
        };
        let open = match self.open.entry(key.clone()) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                e.insert(Open::new(&r, epoch, &self.cluster_id)?)
            }
        };
        match subject {
            Some((tag, at)) => open.push_subject(&r, &tag, at),
            None => open.push(&r)?,
        }
        self.metrics.open_records.inc();
        if open.raw_bytes >= self.settings.segment_bytes {
            self.close(&key).await?;
        }
        Ok(())
    }

    /// An erasure record: this location's keys of its subject destroyed and its record written
    /// before the record is archived (so before the erasure topic's offset is committed: a
    /// crash redoes it, which is idempotent). Records of the subject waiting in open segments
    /// are sealed or left as placeholders at close by the barrier, never under a new key.
    async fn erase(&mut self, r: &ArchivedRecord) -> anyhow::Result<()> {
        let Some(sealing) = &mut self.sealing else {
            return Ok(());
        };
        let event = r
            .value
            .as_ref()
            .map(|v| v.to_vec())
            .transpose()?
            .and_then(|v| serde_json::from_slice::<kollus_common::erasure::ErasureEvent>(&v).ok());
        let Some(event) = event else {
            tracing::warn!(
                topic = r.topic,
                partition = r.partition,
                offset = r.offset,
                "a record on the erasure topic that is not an erasure: archived, not applied"
            );
            return Ok(());
        };
        let destroyed = sealing.ring.erase(&event).await?;
        self.metrics.keys_destroyed.inc_by(destroyed.len() as u64);
        self.compared = None;
        Ok(())
    }

    /// Closes the segments open longer than `ARCHIVE_SEGMENT_SECONDS`; hourly, destroys the
    /// unattributed days' keys past `ARCHIVE_UNATTRIBUTED_DAYS`.
    async fn close_aged(&mut self) -> anyhow::Result<()> {
        if let Some(s) = &mut self.sealing {
            if s.last_expiry
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(3600))
            {
                expire(s, self.metrics).await?;
            }
        }
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
        self.observe_lag(None);
        Ok(())
    }

    async fn close_all(&mut self) -> anyhow::Result<()> {
        let keys: Vec<_> = self.open.keys().cloned().collect();
        for key in keys {
            self.close(&key).await?;
        }
        self.observe_lag(None);
        Ok(())
    }

    /// `kollus_archive_lag_seconds`: the age of the oldest record read but not yet in a durable
    /// segment (`also`: one being written), 0 when none waits.
    fn observe_lag(&self, also: Option<i64>) {
        let oldest = self
            .open
            .values()
            .filter_map(|o| o.oldest_timestamp)
            .chain(also)
            .min();
        let now_ms = (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64;
        self.metrics
            .lag_seconds
            .set(oldest.map_or(0, |ts| ((now_ms - ts) / 1000).max(0)));
    }

    /// Writes the segment, then its manifest entry, then commits past its last offset.
    async fn close(&mut self, key: &(String, i32)) -> anyhow::Result<()> {
        let Some(open) = self.open.remove(key) else {
            return Ok(());
        };
        let records = open.records;
        let oldest = open.oldest_timestamp;
        let (bytes, entry) = match &mut self.sealing {
            None => open.close()?,
            Some(s) => {
                // The barrier as it is now: a key destroyed while these records waited is
                // never replaced by a new one for them.
                let mut keys = HashMap::new();
                for tag in open.tags_to_seal(&s.ring.barrier) {
                    let key = s.ring.current(&tag).await?;
                    keys.insert(tag, key);
                }
                let closed = open.close_sealed(&keys, &s.ring.barrier)?;
                self.metrics.sealed.inc_by(closed.sealed);
                self.metrics.placeholders.inc_by(closed.placeholders);
                (closed.bytes, closed.entry)
            }
        };
        let manifest = serde_json::to_vec_pretty(&entry)?;
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            let written = async {
                let sha = &entry.sha256;
                let segment = self
                    .archive
                    .create(&entry.segment, bytes.clone(), |there| {
                        &hex::encode(Sha256::digest(there)) == sha
                    })
                    .await?;
                let manifest = self
                    .archive
                    .create(&entry.manifest_path(), manifest.clone(), |there| {
                        serde_json::from_slice::<Entry>(there)
                            .is_ok_and(|there| there.same_segment(&entry))
                    })
                    .await?;
                anyhow::Ok((segment, manifest))
            }
            .await;
            match written {
                Ok((segment, manifest)) => {
                    if (segment, manifest) != (Created::New, Created::New) {
                        tracing::info!(
                            segment = entry.segment,
                            ?segment,
                            ?manifest,
                            "segment was written before (a retry): kept as it is"
                        );
                    }
                    break;
                }
                Err(e) => {
                    self.metrics.errors.inc();
                    self.observe_lag(oldest);
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
        if let Some(state) = self.epochs.get_mut(key) {
            if state.epoch == entry.epoch {
                state.archived_last = state.archived_last.max(entry.last_offset);
            }
        }
        let m = self.metrics;
        m.open_records.sub(records as i64);
        m.records.with_label_values(&[&entry.topic]).inc_by(records);
        m.segments.inc();
        m.bytes.inc_by(entry.bytes);
        m.last_segment_unix
            .set(time::OffsetDateTime::now_utc().unix_timestamp());
        if let Some(ts) = entry.last_timestamp {
            m.covered_until.set(m.covered_until.get().max(ts / 1000));
        }
        tracing::info!(
            segment = entry.segment,
            records,
            bytes = entry.bytes,
            "segment archived"
        );
        self.entries.push(entry);
        Ok(())
    }
}

/// Destroys the unattributed days' keys past their days.
async fn expire(sealing: &mut Sealing, metrics: &Metrics) -> anyhow::Result<()> {
    let gone = sealing
        .ring
        .expire_unattributed(sealing.unattributed_days, time::OffsetDateTime::now_utc())
        .await?;
    metrics.unattributed_expired.inc_by(gone.len() as u64);
    sealing.last_expiry = Some(std::time::Instant::now());
    Ok(())
}

/// The topics `dump` archives: the configured ones and, with subject keys (whose erasures it
/// applies), the erasure topic; once each.
fn archived_topics<'k>(k: &'k KafkaSettings, settings: &DumpSettings) -> Vec<&'k str> {
    let mut topics: Vec<&str> = k.topics().to_vec();
    if settings.keys.kek_file.is_some() {
        topics.push(&k.erasure_topic);
    }
    let mut seen = HashSet::new();
    topics.retain(|t| seen.insert(*t));
    topics
}

/// Runs until `shutdown` (then closes and commits what is open).
pub async fn continuous(
    archive: &Archive,
    kafka_settings: &KafkaSettings,
    settings: &DumpSettings,
    metrics: &Metrics,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    kafka::ensure_topics(kafka_settings, &archived_topics(kafka_settings, settings)).await?;
    metrics
        .retention_seconds
        .set(kafka_settings.retention_ms().max(-1000) / 1000);
    let group = settings.group(kafka_settings);
    {
        let (k, g) = (kafka_settings.clone(), group.clone());
        let marked =
            tokio::task::spawn_blocking(move || kafka::mark_archiver_started(&k, &g, &k.topics()))
                .await?;
        if let Err(e) = marked {
            // Only what the other services see is affected: they may warn that nothing archives.
            tracing::warn!(
                error = format!("{e:#}"),
                group,
                "committing the start offsets failed"
            );
        }
    }
    let consumer = kafka::archive_consumer(
        kafka_settings,
        &group,
        &archived_topics(kafka_settings, settings),
    )?;
    let mut d = Dumper::new(archive, consumer, kafka_settings, settings, metrics).await?;
    tokio::pin!(shutdown);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tick.tick() => d.close_aged().await?,
            m = d.consumer.recv() => match m {
                Ok(m) => d.take(ArchivedRecord::of(&m)).await?,
                Err(e) if kafka::is_partition_eof(&e) => {}
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
    kafka::ensure_topics(kafka_settings, &archived_topics(kafka_settings, settings)).await?;
    let mut total = 0;
    // The erasure topic first: its erasures apply to what the other topics' segments seal.
    let mut topics = archived_topics(kafka_settings, settings);
    if settings.keys.kek_file.is_some() {
        topics.rotate_right(1);
    }
    for topic in topics {
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
    // only the partition) is this topic's. Starts at the group's committed offsets, read here
    // and assigned as explicit offsets: with `Offset::Stored`, librdkafka fetches them itself,
    // and on a cluster that just started (a restore's target) its first OffsetFetch met
    // NotCoordinator while `__consumer_offsets` loaded and the partitions never started
    // fetching. `with_coordinator` waits that out.
    let consumer = kafka::archive_consumer(kafka_settings, &settings.group(kafka_settings), &[])?;
    let partitions = kafka::partitions(&consumer, topic)?;
    let mut asked = TopicPartitionList::new();
    let mut estimate = 0;
    for p in &partitions {
        asked.add_partition(topic, *p);
        // An estimate for the progress line.
        if let Ok((low, high)) = consumer.fetch_watermarks(topic, *p, Duration::from_secs(5)) {
            estimate += (high - low).max(0) as u64;
        }
    }
    let group = settings.group(kafka_settings);
    let committed = kafka::with_coordinator("reading the offsets the dump committed", || {
        consumer.committed_offsets(asked.clone(), Duration::from_secs(10))
    })
    .with_context(|| format!("reading the offsets group {group} committed on {topic}"))?;
    let mut tpl = TopicPartitionList::new();
    for e in committed.elements() {
        let start = match e.offset() {
            Offset::Offset(o) => {
                estimate = estimate.saturating_sub(o.max(0) as u64);
                Offset::Offset(o)
            }
            // Nothing committed: from the start, as `auto.offset.reset=earliest` would.
            _ => Offset::Beginning,
        };
        tpl.add_partition_offset(topic, e.partition(), start)?;
    }
    consumer.assign(&tpl)?;
    let mut progress = crate::metrics::progress_of(Some(metrics), "dump", "records", estimate);
    let mut d = Dumper::new(archive, consumer, kafka_settings, settings, metrics).await?;
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
            Ok(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            // The same event through the error callback: it names no partition.
            Ok(Err(e)) if kafka::is_partition_eof(&e) => {}
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
