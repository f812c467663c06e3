//! Segments: the records of one partition, in offset order, as zstd-compressed JSON Lines, and
//! for each closed segment a manifest entry with its SHA-256.
//!
//! Layout in the archive:
//! - `segments/{topic}/{partition}/{first:020}-{last:020}.jsonl.zst`
//! - `manifest/{topic}/{partition}/{first:020}-{last:020}.json` ([`Entry`]), written after its
//!   segment, so an entry always names a complete segment.

use std::io::Write as _;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::record::ArchivedRecord;

/// A closed segment's manifest entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub segment: String,
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub records: u64,
    /// Compressed size.
    pub bytes: u64,
    /// SHA-256 of the compressed segment, hex.
    pub sha256: String,
    pub closed_at: String,
}

/// A segment being filled.
pub struct Open {
    pub topic: String,
    pub partition: i32,
    pub first_offset: i64,
    pub last_offset: i64,
    pub records: u64,
    /// JSON bytes before compression (what `ARCHIVE_SEGMENT_BYTES` bounds).
    pub raw_bytes: u64,
    pub opened: Instant,
    encoder: zstd::stream::Encoder<'static, Vec<u8>>,
}

impl Open {
    pub fn new(first: &ArchivedRecord) -> anyhow::Result<Self> {
        Ok(Self {
            topic: first.topic.clone(),
            partition: first.partition,
            first_offset: first.offset,
            last_offset: first.offset,
            records: 0,
            raw_bytes: 0,
            opened: Instant::now(),
            encoder: zstd::stream::Encoder::new(Vec::new(), 3)?,
        })
    }

    pub fn push(&mut self, r: &ArchivedRecord) -> anyhow::Result<()> {
        let mut line = serde_json::to_vec(r)?;
        line.push(b'\n');
        self.encoder.write_all(&line)?;
        self.raw_bytes += line.len() as u64;
        self.records += 1;
        self.last_offset = r.offset;
        Ok(())
    }

    /// The compressed segment and its manifest entry.
    pub fn close(self) -> anyhow::Result<(Vec<u8>, Entry)> {
        let bytes = self.encoder.finish()?;
        let name = format!(
            "{}/{}/{:020}-{:020}",
            self.topic, self.partition, self.first_offset, self.last_offset
        );
        let entry = Entry {
            segment: format!("segments/{name}.jsonl.zst"),
            topic: self.topic,
            partition: self.partition,
            first_offset: self.first_offset,
            last_offset: self.last_offset,
            records: self.records,
            bytes: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(&bytes)),
            closed_at: time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)?,
        };
        Ok((bytes, entry))
    }
}

impl Entry {
    pub fn manifest_path(&self) -> String {
        format!(
            "manifest/{}/{}/{:020}-{:020}.json",
            self.topic, self.partition, self.first_offset, self.last_offset
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
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Bytes, Header};

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
        let mut open = Open::new(&record(5)).unwrap();
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
            "segments/t/2/00000000000000000005-00000000000000000008.jsonl.zst"
        );
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
