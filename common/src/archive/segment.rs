//! Segments: the records of one partition, in offset order, as zstd-compressed JSON Lines, and
//! for each closed segment a manifest entry with its SHA-256.
//!
//! Layout in the archive (`{epoch}` four digits, `{sha}` the segment's SHA-256's first 16 hex
//! digits):
//! - `segments/{topic}/{partition}/{epoch}/{first:020}-{last:020}-{sha}.jsonl.zst`
//! - `manifest/{topic}/{partition}/{epoch}/{first:020}-{last:020}-{sha}.json` ([`Entry`]),
//!   written after its segment, so an entry always names a complete segment.
//!
//! An epoch is one incarnation of a partition as the archive met it: the archive starts a new one
//! when a partition's offsets restart below what it holds with other records (a replaced broker,
//! a recreated topic) or the cluster id changes. Offsets are unique within an epoch only. With
//! the content in the name as well, two different segments never share a name, and a segment
//! written twice (a retry after a crash) has the same name and bytes: objects are only ever
//! created, never replaced. Archives written before epochs existed read as epoch 0.

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
            "{}/{}/{:04}/{:020}-{:020}-{}",
            self.topic,
            self.partition,
            self.epoch,
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

impl Entry {
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
            self.first_offset,
            self.last_offset,
            self.records,
        ) == (
            &other.segment,
            &other.sha256,
            other.epoch,
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
                "segments/t/2/0003/00000000000000000005-00000000000000000008-{}.jsonl.zst",
                &entry.sha256[..16]
            )
        );
        assert_eq!(
            entry.manifest_path(),
            format!(
                "manifest/t/2/0003/00000000000000000005-00000000000000000008-{}.json",
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
}
