//! The archive's format, shared by whoever reads or writes it: `kollus-archive` (dump, verify,
//! restore), the workers' `--rebuild` (the archive first, then the topic) and token-api's user
//! export. Records ([`record`]) in segments with manifest entries ([`segment`]) in a directory or
//! a bucket ([`store`]); here, what the archive holds per partition and whether a broker's
//! partition is the incarnation the archive holds ([`Holding::matches_broker`]).

pub mod keys;
pub mod record;
pub mod segment;
pub mod store;
pub mod subject;

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::Message as _;
use rdkafka::{Offset, TopicPartitionList};

pub use keys::KeyRing;
pub use record::ArchivedRecord;
pub use segment::Entry;
pub use store::Archive;

/// Every manifest entry of the archive, in (topic, partition, epoch, cluster, first offset)
/// order: two clusters' epochs of one number each stay whole. An archive with none is empty (or
/// a wrong location: callers say so).
pub async fn entries(archive: &Archive) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for path in archive.list("manifest").await? {
        let bytes = archive.get(&path).await?;
        let entry: Entry = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{path}: not a manifest entry: {e}"))?;
        entries.push(entry);
    }
    entries.sort_by(|a, b| order(a).cmp(&order(b)));
    Ok(entries)
}

/// A segment's items in offset order ([`segment::Item`]), its frames opened with `keys` (every
/// frame's key read from the key location as needed; without a key location, a frame is
/// [`segment::Skip::Missing`]). With `only`, other subjects' frames are not opened.
pub async fn read_items(
    archive: &Archive,
    entry: &Entry,
    mut keys: Option<&mut KeyRing>,
    only: Option<&str>,
) -> anyhow::Result<Vec<segment::Item>> {
    let bytes = archive.get(&entry.segment).await?;
    let parsed = segment::parse(entry, &bytes)?;
    if let Some(ring) = keys.as_deref_mut() {
        for (tag, _) in parsed.keys() {
            if only.is_none_or(|t| t == tag) {
                ring.load(&tag).await?;
            }
        }
    }
    let ring = keys.as_deref();
    parsed.open(
        entry,
        |tag, generation| match ring {
            Some(r) => r.state(tag, generation),
            None => keys::KeyState::Missing,
        },
        only,
    )
}

/// A segment's records in offset order (see [`read_items`]), with what its frames held back:
/// a frame whose key is missing without an erasure record is an error naming it.
/// The erasures the archive itself holds: the erasure topic's records it archived (plain lines,
/// `ErasureEvent`s). With the key location's records (`KeyRing::barrier`) and the topic, what a
/// reader of the archive must leave out: a record naming a subject, received before its erasure,
/// even one archived in plaintext (before subject keys). A record that is not an erasure is an
/// error: a barrier read wrong would bring someone back.
pub async fn archived_erasures(
    archive: &Archive,
    entries: &[Entry],
    erasure_topic: &str,
) -> anyhow::Result<crate::erasure::Barrier> {
    let mut barrier = crate::erasure::Barrier::default();
    for entry in entries.iter().filter(|e| e.topic == erasure_topic) {
        let (records, _) = read_segment(archive, entry, None, None).await?;
        for r in records {
            let value = r.value.as_ref().map(|v| v.to_vec()).transpose()?;
            let event: crate::erasure::ErasureEvent = serde_json::from_slice(
                value.as_deref().unwrap_or_default(),
            )
            .with_context(|| {
                format!(
                    "{} offset {}: not an erasure record",
                    entry.segment, r.offset
                )
            })?;
            barrier.add(&event);
        }
    }
    Ok(barrier)
}

/// Whether `barrier` erases `r`: it names a user (`subject_of`, tagged with `tagger`) whose
/// latest erasure came after the record was received. Unattributed and platform records never.
pub fn erased_by(
    barrier: &crate::erasure::Barrier,
    tagger: &crate::subject::Tagger,
    r: &ArchivedRecord,
    playback_topic: &str,
    deadletter_topic: &str,
) -> bool {
    match subject::subject_of(r, playback_topic, deadletter_topic) {
        subject::Subject::User(user) => {
            barrier.erases(tagger.tag(&user).as_str(), subject::received_at(r))
        }
        _ => false,
    }
}

pub async fn read_segment(
    archive: &Archive,
    entry: &Entry,
    keys: Option<&mut KeyRing>,
    only: Option<&str>,
) -> anyhow::Result<(Vec<ArchivedRecord>, segment::Skipped)> {
    let items = read_items(archive, entry, keys, only).await?;
    segment::records_of(&entry.segment, items)
}

/// Whether any entry holds frames (then readers need `ARCHIVE_KEK_FILE`).
pub fn holds_frames(entries: &[Entry]) -> bool {
    entries
        .iter()
        .any(|e| e.subjects.as_ref().is_some_and(|s| !s.is_empty()))
}

fn order(e: &Entry) -> (&str, i32, u32, &str, i64, i64) {
    (
        &e.topic,
        e.partition,
        e.epoch,
        &e.cluster_id,
        e.first_offset,
        e.last_offset,
    )
}

/// What the archive holds of one partition in its latest epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holding {
    pub epoch: u32,
    pub cluster_id: String,
    /// The highest offset archived in that epoch.
    pub last_offset: i64,
    /// Fingerprint of the record archived at `last_offset`.
    pub last_record_sha256: String,
}

/// The epoch rule, one place for `kollus-archive dump` (which epoch it writes on in) and the
/// workers' `--rebuild` (where the topic continues): of a partition's entries, the latest is the
/// one of the highest epoch, and within it the highest last offset (the first one on a tie).
fn latest<'a>(entries: impl Iterator<Item = &'a Entry>) -> Option<&'a Entry> {
    entries.fold(None, |best: Option<&Entry>, e| match best {
        Some(b) if (e.epoch, e.last_offset) <= (b.epoch, b.last_offset) => Some(b),
        _ => Some(e),
    })
}

impl From<&Entry> for Holding {
    fn from(e: &Entry) -> Self {
        Self {
            epoch: e.epoch,
            cluster_id: e.cluster_id.clone(),
            last_offset: e.last_offset,
            last_record_sha256: e.last_record_sha256.clone(),
        }
    }
}

/// Per (topic, partition), what the archive holds in the partition's latest epoch.
pub fn holdings(entries: &[Entry]) -> BTreeMap<(String, i32), Holding> {
    let mut partitions: BTreeMap<(String, i32), Vec<&Entry>> = BTreeMap::new();
    for e in entries {
        partitions
            .entry((e.topic.clone(), e.partition))
            .or_default()
            .push(e);
    }
    partitions
        .into_iter()
        .filter_map(|(key, es)| latest(es.into_iter()).map(|e| (key, e.into())))
        .collect()
}

/// [`holdings`] of the entries a broker of cluster `cluster_id` can be the incarnation of
/// ([`of_cluster`]): where its topic continues what the archive holds. Another cluster's newer
/// or longer epoch in the same location never counts (its records are not this topic's).
pub fn holdings_of_cluster(
    entries: &[Entry],
    cluster_id: &str,
) -> BTreeMap<(String, i32), Holding> {
    let own: Vec<Entry> = of_cluster(entries, cluster_id).cloned().collect();
    holdings(&own)
}

/// [`holdings_of_cluster`] of one partition.
pub fn holding_of(
    entries: &[Entry],
    cluster_id: &str,
    topic: &str,
    partition: i32,
) -> Option<Holding> {
    latest(of_cluster(entries, cluster_id).filter(|e| e.topic == topic && e.partition == partition))
        .map(Holding::from)
}

/// The entries a broker of cluster `cluster_id` can be the incarnation of: its own cluster's and
/// those of no known cluster. All of them when `cluster_id` is unknown ("").
pub fn of_cluster<'a>(
    entries: &'a [Entry],
    cluster_id: &'a str,
) -> impl Iterator<Item = &'a Entry> {
    entries.iter().filter(move |e| {
        cluster_id.is_empty() || e.cluster_id.is_empty() || e.cluster_id == cluster_id
    })
}

/// The Kafka timestamp (ms) of the newest record in any closed segment of `topic`: up to when
/// the archive covers it.
pub fn covered_until(entries: &[Entry], topic: &str) -> Option<i64> {
    entries
        .iter()
        .filter(|e| e.topic == topic)
        .filter_map(|e| e.last_timestamp)
        .max()
}

/// A client for looking at single records and watermarks (no group joined, nothing committed).
pub type Inspector = BaseConsumer<crate::kafka::QuietEof>;

/// An [`Inspector`] of `settings`' brokers (with their security settings, checked).
pub fn inspector(settings: &crate::settings::KafkaSettings) -> anyhow::Result<Inspector> {
    settings.check_security().map_err(anyhow::Error::msg)?;
    crate::kafka::base_config(settings, "kollus-archive-inspect")
        .set("group.id", "kollus-archive-inspect")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        // An offset the partition no longer (or never) held is an answer, not a reset.
        .set("auto.offset.reset", "error")
        .set("log_level", "3")
        .create_with_context(crate::kafka::QuietEof)
        .context("creating a Kafka client to inspect partitions")
}

/// The cluster id the brokers report, or "" when they report none.
pub fn cluster_id(client: &Inspector) -> String {
    client
        .client()
        .fetch_cluster_id(Duration::from_secs(10))
        .unwrap_or_default()
}

impl Holding {
    /// Whether the broker's `topic`/`partition` is the incarnation this holding was archived
    /// from: the record the broker has at `last_offset` is, byte for byte, the one archived
    /// there. When retention has deleted that record already, the cluster id decides (both must
    /// be known and equal). Blocking.
    pub fn matches_broker(
        &self,
        client: &Inspector,
        cluster_id: &str,
        topic: &str,
        partition: i32,
    ) -> anyhow::Result<bool> {
        let known = !cluster_id.is_empty() && !self.cluster_id.is_empty();
        if known && cluster_id != self.cluster_id {
            return Ok(false);
        }
        if self.last_record_sha256.is_empty() {
            return Ok(false); // archived before fingerprints: cannot tell
        }
        let (low, _) = client
            .fetch_watermarks(topic, partition, Duration::from_secs(10))
            .with_context(|| format!("reading the offsets of {topic}/{partition}"))?;
        if low > self.last_offset {
            return Ok(known);
        }
        let record = record_at(client, topic, partition, self.last_offset)?;
        Ok(record.is_some_and(|r| r.fingerprint() == self.last_record_sha256))
    }
}

/// The broker's record at `offset` of `topic`/`partition`, if it has one. Blocking.
///
/// Reads from `offset`, or, when the high watermark is not above it, from the watermark's last
/// offset: Apache Kafka's watermark proves the record absent, but a broker that reports the last
/// batch's base offset + 1 (tansu 0.6.0, which the tests used before) does not, so the last
/// batch is read to its end.
pub fn record_at(
    client: &Inspector,
    topic: &str,
    partition: i32,
    offset: i64,
) -> anyhow::Result<Option<ArchivedRecord>> {
    let (low, high) = client
        .fetch_watermarks(topic, partition, Duration::from_secs(10))
        .with_context(|| format!("reading the offsets of {topic}/{partition}"))?;
    if high <= low || offset < low {
        return Ok(None);
    }
    let from = offset.min(high - 1);
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Offset(from))?;
    client.assign(&tpl)?;
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    let found = loop {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "{topic}/{partition}: no answer for offset {offset} within 15 s"
        );
        match client.poll(Duration::from_millis(200)) {
            None => continue,
            Some(Ok(m)) if m.partition() == partition && m.topic() == topic => {
                if m.offset() < offset {
                    continue;
                }
                break (m.offset() == offset).then(|| ArchivedRecord::of(&m));
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) if crate::kafka::is_partition_eof(&e) => break None,
            Some(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::OffsetOutOfRange
                | rdkafka::types::RDKafkaErrorCode::AutoOffsetReset,
            ))) => break None,
            Some(Err(e)) => {
                return Err(anyhow::Error::from(e)
                    .context(format!("reading {topic}/{partition} at offset {offset}")))
            }
        }
    };
    client.unassign()?;
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(cluster: &str, epoch: u32, last_offset: i64) -> Entry {
        Entry {
            segment: format!("segments/t/0/{epoch:04}-{cluster}/x"),
            topic: "t".into(),
            partition: 0,
            epoch,
            cluster_id: cluster.into(),
            first_offset: 0,
            last_offset,
            records: 1,
            bytes: 1,
            sha256: String::new(),
            last_record_sha256: format!("{cluster}-{last_offset}"),
            last_timestamp: None,
            closed_at: String::new(),
            subjects: None,
        }
    }

    #[test]
    fn a_cluster_continues_its_own_epochs_never_another_clusters_in_the_same_location() {
        // Two clusters archiving into one location: b's epoch is newer and longer.
        let entries = [entry("a", 1, 10), entry("b", 1, 90), entry("b", 2, 5)];
        let key = ("t".to_owned(), 0);
        let a = holdings_of_cluster(&entries, "a");
        assert_eq!(
            (a[&key].cluster_id.as_str(), a[&key].last_offset),
            ("a", 10)
        );
        let b = holdings_of_cluster(&entries, "b");
        assert_eq!((b[&key].epoch, b[&key].last_offset), (2, 5));
        // A broker that reports no cluster id can be any of them: the newest counts.
        assert_eq!(holdings_of_cluster(&entries, "")[&key].cluster_id, "b");
        // An archive from before cluster ids (no id recorded) is every cluster's.
        let old = [entry("", 1, 7)];
        assert_eq!(holdings_of_cluster(&old, "a")[&key].last_offset, 7);
    }

    #[test]
    fn a_partition_continues_its_latest_epoch_at_that_epochs_highest_offset() {
        // Epoch 2 in two segments listed out of order; epoch 1 is longer; b's epoch is newer.
        let entries = [
            entry("a", 1, 90),
            entry("a", 2, 5),
            entry("a", 2, 20),
            entry("b", 3, 1),
        ];
        let key = ("t".to_owned(), 0);
        let a = holding_of(&entries, "a", "t", 0).unwrap();
        assert_eq!((a.epoch, a.last_offset), (2, 20));
        // dump (one partition) and rebuild (every partition) read the same rule.
        for cluster in ["a", "b", ""] {
            assert_eq!(
                holding_of(&entries, cluster, "t", 0),
                holdings_of_cluster(&entries, cluster).get(&key).cloned(),
                "cluster {cluster:?}"
            );
        }
        assert_eq!(holding_of(&entries, "a", "t", 1), None);
    }
}
