//! `kollus-archive verify`: every segment against its manifest entry (SHA-256, record count,
//! offsets in order), then per topic, partition and epoch: gaps (records the archive lacks),
//! repeats (records archived twice after a crash, which restore drops) and collisions (two
//! different records at one offset of one epoch, or two entries naming one segment with
//! different checksums). An epoch is its number and its cluster (two clusters archived into one
//! location each have their own epochs, whatever their numbers), and [`verify_of`] checks one
//! cluster's epochs alone. With a broker, per partition: whether the archive and what the topic
//! still retains together cover every offset ([`coverage`]).

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash as _, Hasher as _};
use std::time::Duration;

use std::collections::BTreeSet;

use kollus_common::archive::keys::KeyRing;
use kollus_common::archive::segment::{self, Entry, Item, Skip};
use kollus_common::archive::store::Archive;
use kollus_common::settings::KafkaSettings;

use crate::metrics::Metrics;

pub use kollus_common::archive::entries;

/// One epoch of one partition, as the archive holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EpochReport {
    pub topic: String,
    pub partition: i32,
    pub epoch: u32,
    pub cluster_id: String,
    /// The epoch's name: its number and its cluster (`0001-MkU3OEVBNTcwNTJENDM2Qk`).
    pub name: String,
    pub segments: u64,
    /// Distinct offsets held.
    pub records: u64,
    pub first_offset: i64,
    pub last_offset: i64,
    pub repeats: u64,
}

#[derive(Debug, Default)]
pub struct Report {
    /// No manifest entry at all: nothing archived at this location.
    pub empty: bool,
    pub segments: u64,
    pub records: u64,
    /// Segments that do not match their entry, with why.
    pub damaged: Vec<String>,
    /// Two different records at one offset of one epoch, or one segment name with two
    /// checksums: with why.
    pub collisions: Vec<String>,
    /// (topic, partition, first missing offset, last missing offset), within an epoch.
    pub gaps: Vec<(String, i32, i64, i64)>,
    /// Records archived more than once.
    pub repeats: u64,
    /// Partition epochs whose archive does not start at offset 0: (topic, partition, first
    /// offset). Not an error (the group may have started late, or retention had deleted the
    /// start), but what comes before is not here.
    pub late_starts: Vec<(String, i32, i64)>,
    pub epochs: Vec<EpochReport>,
    /// Subject generations whose frames an erasure made unreadable (an erasure record of the
    /// key location names them): not a problem.
    pub erased: BTreeSet<(String, u32)>,
    /// Unattributed days whose key was destroyed by age: not a problem.
    pub expired: BTreeSet<String>,
    /// Subject generations whose key is gone with no erasure record: a problem.
    pub missing: BTreeSet<(String, u32)>,
    /// Offsets held by placeholders (erased before they were written).
    pub placeholders: u64,
}

impl Report {
    pub fn ok(&self) -> bool {
        !self.empty
            && self.damaged.is_empty()
            && self.collisions.is_empty()
            && self.gaps.is_empty()
            && self.missing.is_empty()
    }
}

/// Per partition-epoch while reading: the highest offset so far, and a hash of each record by
/// offset (to tell a repeat from a collision).
#[derive(Default)]
struct Seen {
    last: Option<i64>,
    hashes: HashMap<i64, u64>,
    report: Option<EpochReport>,
}

/// Verifies every epoch of the archive.
pub async fn verify(archive: &Archive, metrics: Option<&Metrics>) -> anyhow::Result<Report> {
    verify_of(archive, metrics, None).await
}

/// Verifies the epochs of Kafka cluster `cluster` (every epoch when None): an archive that
/// holds none of its epochs is `empty`.
pub async fn verify_of(
    archive: &Archive,
    metrics: Option<&Metrics>,
    cluster: Option<&str>,
) -> anyhow::Result<Report> {
    verify_with(archive, metrics, cluster, None).await
}

/// [`verify_of`], opening frames with the key location `keys`: per subject generation,
/// erased (an erasure record names it), expired (an unattributed day), or missing (neither:
/// a problem). Without `keys`, every frame counts as missing.
pub async fn verify_with(
    archive: &Archive,
    metrics: Option<&Metrics>,
    cluster: Option<&str>,
    mut keys: Option<&mut KeyRing>,
) -> anyhow::Result<Report> {
    let mut entries = entries(archive).await?;
    if let Some(cluster) = cluster {
        entries.retain(|e| e.cluster_id == cluster);
    }
    let mut report = Report {
        empty: entries.is_empty(),
        ..Report::default()
    };
    let mut names: HashMap<&str, &str> = HashMap::new();
    for e in &entries {
        if let Some(other) = names.insert(&e.segment, &e.sha256) {
            if other != e.sha256 {
                report.collisions.push(format!(
                    "{}: named by two manifest entries with different SHA-256 ({other}, {})",
                    e.segment, e.sha256
                ));
            }
        }
    }
    let mut progress =
        crate::metrics::progress_of(metrics, "verify", "segments", entries.len() as u64);
    let mut seen: BTreeMap<(String, i32, u32, String), Seen> = BTreeMap::new();
    for entry in &entries {
        progress.add(1);
        report.segments += 1;
        let items = kollus_common::archive::read_items(archive, entry, keys.as_deref_mut(), None);
        let records = match items.await {
            Ok(records) => records,
            Err(e) => {
                report.damaged.push(format!("{e:#}"));
                continue;
            }
        };
        report.records += records.len() as u64;
        let key = (
            entry.topic.clone(),
            entry.partition,
            entry.epoch,
            entry.cluster_id.clone(),
        );
        let s = seen.entry(key).or_default();
        let epoch = s.report.get_or_insert_with(|| EpochReport {
            topic: entry.topic.clone(),
            partition: entry.partition,
            epoch: entry.epoch,
            cluster_id: entry.cluster_id.clone(),
            name: entry.epoch_name(),
            segments: 0,
            records: 0,
            first_offset: entry.first_offset,
            last_offset: entry.last_offset,
            repeats: 0,
        });
        epoch.segments += 1;
        for item in &records {
            // An offset whose record is not readable hashes as 0: it repeats anything.
            let hash = match item {
                Item::Record(r) => {
                    let mut h = DefaultHasher::new();
                    r.hash(&mut h);
                    h.finish().max(1)
                }
                Item::Skipped {
                    tag,
                    generation,
                    why,
                    ..
                } => {
                    let g = generation.unwrap_or(0);
                    match why {
                        Skip::Erased => {
                            report.erased.insert((tag.clone(), g));
                        }
                        Skip::Expired => {
                            report.expired.insert(tag.clone());
                        }
                        Skip::Missing => {
                            report.missing.insert((tag.clone(), g));
                        }
                        Skip::Placeholder => report.placeholders += 1,
                        Skip::NotAsked => {}
                    }
                    0
                }
            };
            let offset = item.offset();
            match s.hashes.get(&offset) {
                Some(before) if *before != hash && *before != 0 && hash != 0 => {
                    report.collisions.push(format!(
                        "{}/{} epoch {}: two different records at offset {} (the second in {})",
                        entry.topic,
                        entry.partition,
                        entry.epoch_name(),
                        offset,
                        entry.segment
                    ))
                }
                Some(_) => {
                    report.repeats += 1;
                    epoch.repeats += 1;
                }
                None => {
                    epoch.records += 1;
                    match s.last {
                        None if offset > 0 => {
                            report
                                .late_starts
                                .push((entry.topic.clone(), entry.partition, offset))
                        }
                        Some(last) if offset > last + 1 => report.gaps.push((
                            entry.topic.clone(),
                            entry.partition,
                            last + 1,
                            offset - 1,
                        )),
                        _ => {}
                    }
                    s.hashes.insert(offset, hash);
                }
            }
            s.last = Some(s.last.map_or(offset, |l| l.max(offset)));
            epoch.first_offset = epoch.first_offset.min(offset);
            epoch.last_offset = epoch.last_offset.max(offset);
        }
    }
    report.epochs = seen.into_values().filter_map(|s| s.report).collect();
    progress.finish();
    Ok(report)
}

/// Whether one partition's records all exist somewhere: in the archive, or still in the topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coverage {
    pub topic: String,
    pub partition: i32,
    /// The topic's earliest retained offset.
    pub earliest: i64,
    /// The archive's epoch that is this broker's partition (its name, number and cluster), and
    /// the last offset it holds.
    pub archived: Option<(String, i64)>,
    /// Offsets neither holds: (first, last).
    pub missing: Option<(i64, i64)>,
}

impl std::fmt::Display for Coverage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (t, p) = (&self.topic, self.partition);
        let archive = match &self.archived {
            Some((epoch, last)) => format!("archive (epoch {epoch}) holds up to offset {last}"),
            None => "archive holds none of this broker's records yet".into(),
        };
        match self.missing {
            None => write!(
                f,
                "COVERED {t}/{p}: {archive}, the topic retains from offset {}: every offset is somewhere",
                self.earliest
            ),
            Some((from, to)) => write!(
                f,
                "NOT COVERED {t}/{p}: {archive}, the topic retains from offset {}: offsets {from}..={to} are in neither (deleted by retention before they were archived)",
                self.earliest
            ),
        }
    }
}

/// Per partition of the configured topics on `kafka`'s brokers: the topic's earliest retained
/// offset (its low watermark: what retention has deleted is below it) against the last offset
/// the archive holds of that broker's incarnation, looked for among the epochs of the brokers'
/// cluster (and of no known cluster). Blocking.
pub fn coverage(entries: &[Entry], kafka: &KafkaSettings) -> anyhow::Result<Vec<Coverage>> {
    use kollus_common::archive::{cluster_id, holdings, inspector, of_cluster};
    use rdkafka::consumer::Consumer as _;
    let client = inspector(kafka)?;
    let cluster = cluster_id(&client);
    let mine: Vec<Entry> = of_cluster(entries, &cluster).cloned().collect();
    let holdings = holdings(&mine);
    let mut out = Vec::new();
    for topic in kafka.topics() {
        for partition in kollus_common::kafka::partitions(&client, topic)? {
            let (earliest, _) = client
                .fetch_watermarks(topic, partition, Duration::from_secs(10))
                .map_err(|e| anyhow::anyhow!("offsets of {topic}/{partition}: {e}"))?;
            let archived = match holdings.get(&(topic.to_owned(), partition)) {
                Some(h) if h.matches_broker(&client, &cluster, topic, partition)? => {
                    Some((segment::epoch_name(h.epoch, &h.cluster_id), h.last_offset))
                }
                _ => None,
            };
            let first_needed = archived.as_ref().map_or(0, |(_, last)| last + 1);
            let missing = (earliest > first_needed).then_some((first_needed, earliest - 1));
            out.push(Coverage {
                topic: topic.to_owned(),
                partition,
                earliest,
                archived,
                missing,
            });
        }
    }
    Ok(out)
}
