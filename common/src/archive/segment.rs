//! Segments: the records of one partition, in offset order, as zstd-compressed JSON Lines, and
//! for each closed segment a manifest entry with its SHA-256.
//!
//! Layout in the archive (`{epoch}` the epoch's name, [`epoch_name`]: its number in four digits
//! and the Kafka cluster id, `0001-MkU3OEVBNTcwNTJENDM2Qk`; `{sha}` the segment's SHA-256's
//! first 16 hex digits):
//! - `segments/{topic}/{partition}/{epoch}/{first:020}-{last:020}-{sha}.jsonl.zst`
//! - `manifest/{topic}/{partition}/{epoch}/{first:020}-{last:020}-{sha}.json` ([`Entry`]),
//!   written after its segment, so an entry always names a complete segment.
//!
//! An epoch is one incarnation of a partition as the archive met it: the archive starts a new one
//! when a partition's offsets restart below what it holds with other records (a replaced broker,
//! a recreated topic) or the cluster id changes. Offsets are unique within an epoch only. An
//! epoch is named by its number *and* its cluster, so archivers of two clusters writing one
//! location at once, which can both pick the same number, still write two epochs. With the
//! content in the name as well, two different segments never share a name, and a segment
//! written twice (a retry after a crash) has the same name and bytes: objects are only ever
//! created, never replaced.
//!
//! Older layouts read as they are (a reader goes by the manifest entry's `segment` path, never
//! by a name it rebuilds): epochs named by their number alone (`{epoch:04}`, before epoch names
//! carried their cluster; the cluster id is in the entry), and archives written before epochs
//! existed (`segments/{topic}/{partition}/{first:020}-{last:020}.jsonl.zst`) as epoch 0.

use std::io::Write as _;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::record::{self, ArchivedRecord};

/// A closed segment's manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub segment: String,
    pub topic: String,
    pub partition: i32,
    /// The partition's incarnation (see the module docs); 0 for archives older than epochs.
    #[serde(default)]
    pub epoch: u32,
    /// The Kafka cluster id the records came from, when the broker reported one.
    #[serde(default)]
    pub cluster_id: String,
    pub first_offset: i64,
    pub last_offset: i64,
    pub records: u64,
    /// Compressed size.
    pub bytes: u64,
    /// SHA-256 of the compressed segment, hex.
    pub sha256: String,
    /// [`ArchivedRecord::fingerprint`] of the last record: what a broker's record at
    /// `last_offset` must match to be this incarnation's (empty before epochs existed).
    #[serde(default)]
    pub last_record_sha256: String,
    /// Kafka timestamp of the newest record, ms since the epoch.
    #[serde(default)]
    pub last_timestamp: Option<i64>,
    pub closed_at: String,
}

/// A segment being filled.
pub struct Open {
    pub topic: String,
    pub partition: i32,
    pub epoch: u32,
    pub cluster_id: String,
    pub first_offset: i64,
    pub last_offset: i64,
    pub records: u64,
    /// JSON bytes before compression (what `ARCHIVE_SEGMENT_BYTES` bounds).
    pub raw_bytes: u64,
    pub opened: Instant,
    /// Kafka timestamp of the oldest record, ms since the epoch (the archive's lag).
    pub oldest_timestamp: Option<i64>,
    last_timestamp: Option<i64>,
    last_line: Vec<u8>,
    encoder: zstd::stream::Encoder<'static, Vec<u8>>,
}

impl Open {
    pub fn new(first: &ArchivedRecord, epoch: u32, cluster_id: &str) -> anyhow::Result<Self> {
        Ok(Self {
            topic: first.topic.clone(),
            partition: first.partition,
            epoch,
            cluster_id: cluster_id.to_owned(),
            first_offset: first.offset,
            last_offset: first.offset,
            records: 0,
            raw_bytes: 0,
            opened: Instant::now(),
            oldest_timestamp: None,
            last_timestamp: None,
            last_line: Vec::new(),
            encoder: zstd::stream::Encoder::new(Vec::new(), 3)?,
        })
    }

    pub fn push(&mut self, r: &ArchivedRecord) -> anyhow::Result<()> {
        let mut line = r.line();
        line.push(b'\n');
        self.encoder.write_all(&line)?;
        self.raw_bytes += line.len() as u64;
        self.records += 1;
        self.last_offset = r.offset;
        if let Some(ts) = r.timestamp {
            self.oldest_timestamp = Some(self.oldest_timestamp.map_or(ts, |o| o.min(ts)));
            self.last_timestamp = Some(self.last_timestamp.map_or(ts, |l| l.max(ts)));
        }
        line.pop();
        self.last_line = line;
        Ok(())
    }

    /// The compressed segment and its manifest entry.
    pub fn close(self) -> anyhow::Result<(Vec<u8>, Entry)> {
        let bytes = self.encoder.finish()?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let name = format!(
            "{}/{}/{}/{:020}-{:020}-{}",
            self.topic,
            self.partition,
            epoch_name(self.epoch, &self.cluster_id),
            self.first_offset,
            self.last_offset,
            &sha256[..16]
        );
        let entry = Entry {
            segment: format!("segments/{name}.jsonl.zst"),
            topic: self.topic,
            partition: self.partition,
            epoch: self.epoch,
            cluster_id: self.cluster_id,
            first_offset: self.first_offset,
            last_offset: self.last_offset,
            records: self.records,
            bytes: bytes.len() as u64,
            sha256,
            last_record_sha256: record::fingerprint(&self.last_line),
            last_timestamp: self.last_timestamp,
            closed_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)?,
        };
        Ok((bytes, entry))
    }
}

/// An epoch's name in paths: its number in four digits, then the Kafka cluster id
/// (`0002-MkU3OEVBNTcwNTJENDM2Qk`), or the number alone when the broker reported no cluster id.
/// A cluster id as Kafka makes them (22 characters of URL-safe base64) is used as it is; any
/// other (a broker of another make) as `x` and the first 16 hex digits of its SHA-256, so a
/// name is always one safe path component.
pub fn epoch_name(epoch: u32, cluster_id: &str) -> String {
    if cluster_id.is_empty() {
        return format!("{epoch:04}");
    }
    let plain = cluster_id.len() <= 64
        && cluster_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if plain {
        format!("{epoch:04}-{cluster_id}")
    } else {
        let digest = hex::encode(Sha256::digest(cluster_id.as_bytes()));
        format!("{epoch:04}-x{}", &digest[..16])
    }
}

impl Entry {
    /// This entry's epoch as a reader names it: the number and the cluster id, as written in new
    /// layouts' paths ([`epoch_name`]); for an entry of an older layout, the name it would have.
    pub fn epoch_name(&self) -> String {
        epoch_name(self.epoch, &self.cluster_id)
    }

    /// Where this entry is kept: beside its segment's path, under `manifest/`.
    pub fn manifest_path(&self) -> String {
        let name = self
            .segment
            .strip_prefix("segments/")
            .unwrap_or(&self.segment);
        let name = name.strip_suffix(".jsonl.zst").unwrap_or(name);
        format!("manifest/{name}.json")
    }

    /// Whether `other` describes the same segment (a retry wrote it again): same object, same
    /// bytes, same records.
    pub fn same_segment(&self, other: &Entry) -> bool {
        (
            &self.segment,
            &self.sha256,
            self.epoch,
            &self.cluster_id,
            self.first_offset,
            self.last_offset,
            self.records,
        ) == (
            &other.segment,
            &other.sha256,
            other.epoch,
            &other.cluster_id,
            other.first_offset,
            other.last_offset,
            other.records,
        )
    }
}

/// The records of a segment, after checking it against its entry.
pub fn read(entry: &Entry, bytes: &[u8]) -> anyhow::Result<Vec<ArchivedRecord>> {
    let sum = hex::encode(Sha256::digest(bytes));
    anyhow::ensure!(
        sum == entry.sha256,
        "{}: SHA-256 {sum} is not the manifest's {}",
        entry.segment,
        entry.sha256
    );
    let raw = zstd::decode_all(bytes)?;
    let records = raw
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<Vec<ArchivedRecord>, _>>()?;
    anyhow::ensure!(
        records.len() as u64 == entry.records,
        "{}: {} records, the manifest says {}",
        entry.segment,
        records.len(),
        entry.records
    );
    let mut previous = entry.first_offset - 1;
    for r in &records {
        anyhow::ensure!(
            r.topic == entry.topic
                && r.partition == entry.partition
                && r.offset > previous
                && r.offset <= entry.last_offset,
            "{}: holds {}/{} offset {} after {previous}, outside the manifest's {}/{} {}..={} in order",
            entry.segment,
            r.topic,
            r.partition,
            r.offset,
            entry.topic,
            entry.partition,
            entry.first_offset,
            entry.last_offset
        );
        previous = r.offset;
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::record::{Bytes, Header};

    fn record(offset: i64) -> ArchivedRecord {
        ArchivedRecord {
            topic: "t".into(),
            partition: 2,
            offset,
            timestamp: Some(1_700_000_000_000 + offset),
            key: Some(Bytes::of(b"k")),
            headers: vec![Header {
                key: "id".into(),
                value: Some(Bytes::of(format!("id-{offset}").as_bytes())),
            }],
            value: Some(Bytes::of(&[0xff, offset as u8])),
        }
    }

    #[test]
    fn a_closed_segment_reads_back_and_a_changed_byte_is_caught() {
        let mut open = Open::new(&record(5), 3, "cluster-a").unwrap();
        for o in 5..9 {
            open.push(&record(o)).unwrap();
        }
        let (mut bytes, entry) = open.close().unwrap();
        assert_eq!(
            (entry.first_offset, entry.last_offset, entry.records),
            (5, 8, 4)
        );
        assert_eq!(
            entry.segment,
            format!(
                "segments/t/2/0003-cluster-a/00000000000000000005-00000000000000000008-{}.jsonl.zst",
                &entry.sha256[..16]
            )
        );
        assert_eq!(
            entry.manifest_path(),
            format!(
                "manifest/t/2/0003-cluster-a/00000000000000000005-00000000000000000008-{}.json",
                &entry.sha256[..16]
            )
        );
        assert_eq!(entry.last_record_sha256, record(8).fingerprint());
        assert_eq!(entry.last_timestamp, Some(1_700_000_000_008));
        let back = read(&entry, &bytes).unwrap();
        assert_eq!(back, (5..9).map(record).collect::<Vec<_>>());
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        assert!(read(&entry, &bytes)
            .unwrap_err()
            .to_string()
            .contains("SHA-256"));
    }

    #[test]
    fn an_epoch_name_carries_its_cluster_and_is_one_path_component() {
        assert_eq!(
            epoch_name(2, "MkU3OEVBNTcwNTJENDM2Qk"),
            "0002-MkU3OEVBNTcwNTJENDM2Qk"
        );
        assert_eq!(epoch_name(2, ""), "0002");
        let odd = epoch_name(12, "a/b c");
        assert!(odd.starts_with("0012-x") && odd.len() == 22, "{odd}");
        assert_ne!(odd, epoch_name(12, "a/b d"));
        // Two clusters at one epoch number: two names, so two sets of paths.
        let segment = |cluster: &str| {
            let mut open = Open::new(&record(5), 1, cluster).unwrap();
            open.push(&record(5)).unwrap();
            open.close().unwrap().1.segment
        };
        assert_ne!(segment("cluster-a"), segment("cluster-b"));
        assert!(segment("").starts_with("segments/t/2/0001/"));
    }

    #[test]
    fn entries_of_older_layouts_keep_their_paths() {
        let mut open = Open::new(&record(5), 1, "cluster-a").unwrap();
        open.push(&record(5)).unwrap();
        let (bytes, mut entry) = open.close().unwrap();
        // An epoch named by its number alone, and a pre-epoch entry (epoch 0, no cluster).
        for (segment, json_epoch) in [
            (
                "segments/t/2/0001/00000000000000000005-00000000000000000005-abc.jsonl.zst",
                "",
            ),
            (
                "segments/t/2/00000000000000000005-00000000000000000005.jsonl.zst",
                "x",
            ),
        ] {
            entry.segment = segment.into();
            let json = serde_json::to_value(&entry).unwrap();
            let mut json = json.as_object().unwrap().clone();
            if json_epoch == "x" {
                for old in [
                    "epoch",
                    "cluster_id",
                    "last_record_sha256",
                    "last_timestamp",
                ] {
                    json.remove(old);
                }
            }
            let back: Entry = serde_json::from_value(json.into()).unwrap();
            assert_eq!(
                back.manifest_path(),
                segment
                    .replacen("segments/", "manifest/", 1)
                    .replace(".jsonl.zst", ".json")
            );
            assert_eq!(read(&back, &bytes).unwrap(), vec![record(5)]);
            if json_epoch == "x" {
                assert_eq!((back.epoch, back.epoch_name()), (0, "0000".to_owned()));
            }
        }
    }
}
