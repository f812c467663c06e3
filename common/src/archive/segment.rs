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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use time::OffsetDateTime;

use super::keys::KeyState;
use super::record::{self, ArchivedRecord};
use crate::erasure::Barrier;
use crate::subject::SealKey;

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
    /// The subject tags this segment holds frames of (the per-user index: a user's export
    /// reads only the segments naming their tag). Absent in segments without frames (written
    /// before subject keys or without them, or holding nobody's records): a user's export
    /// looks into each of its topic.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subjects: Option<Vec<String>>,
}

/// A frame line: one subject's records of a segment, as zstd-compressed JSON Lines sealed under
/// the subject's key of `generation` (AES-256-GCM), bound to the segment's topic, partition,
/// epoch and the frame's offsets ([`frame_aad`]). Nothing else of the records is readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    pub tag: String,
    pub generation: u32,
    pub offsets: Vec<i64>,
    /// base64 of the 12-byte nonce.
    pub nonce: String,
    /// base64 of the ciphertext and its tag.
    pub ciphertext: String,
}

/// A placeholder line: offsets of records an erasure had reached before they were written
/// (kept so the offsets stay covered); the tag and nothing else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placeholder {
    pub tag: String,
    pub offsets: Vec<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum SealedLine {
    Frame(Frame),
    Erased(Placeholder),
}

/// What a frame is bound to: moved to another segment, partition, epoch or offsets, or given
/// another subject's or generation's name, it does not open.
pub fn frame_aad(
    topic: &str,
    partition: i32,
    epoch: u32,
    cluster_id: &str,
    tag: &str,
    generation: u32,
    offsets: &[i64],
) -> Vec<u8> {
    let offsets: Vec<String> = offsets.iter().map(i64::to_string).collect();
    format!(
        "kollus-archive-frame-v1|{topic}|{partition}|{epoch}|{cluster_id}|{tag}|{generation}|{}",
        offsets.join(",")
    )
    .into_bytes()
}

/// One offset of a segment as a reader gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    Record(ArchivedRecord),
    /// An offset whose record is not readable, and why.
    Skipped {
        offset: i64,
        tag: String,
        /// The frame's generation (none for a placeholder).
        generation: Option<u32>,
        why: Skip,
    },
}

impl Item {
    pub fn offset(&self) -> i64 {
        match self {
            Self::Record(r) => r.offset,
            Self::Skipped { offset, .. } => *offset,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Skip {
    /// In a frame whose key an erasure destroyed.
    Erased,
    /// In an unattributed day's frame whose key was destroyed by age.
    Expired,
    /// A placeholder: erased before it was written.
    Placeholder,
    /// In a frame whose key is neither there nor accounted for: an error for every reader.
    Missing,
    /// Another subject's frame, not asked for (a user's export).
    NotAsked,
}

/// What a segment's frames and placeholders held back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Skipped {
    pub erased: u64,
    pub expired: u64,
    pub placeholders: u64,
}

/// A segment's lines, checked against its entry, frames still sealed.
#[derive(Debug)]
pub struct Parsed {
    plain: Vec<ArchivedRecord>,
    frames: Vec<Frame>,
    placeholders: Vec<Placeholder>,
}

/// Reads a segment's lines after checking its SHA-256 against its entry.
pub fn parse(entry: &Entry, bytes: &[u8]) -> anyhow::Result<Parsed> {
    let sum = hex::encode(Sha256::digest(bytes));
    anyhow::ensure!(
        sum == entry.sha256,
        "{}: SHA-256 {sum} is not the manifest's {}",
        entry.segment,
        entry.sha256
    );
    let raw = zstd::decode_all(bytes)?;
    let mut parsed = Parsed {
        plain: Vec::new(),
        frames: Vec::new(),
        placeholders: Vec::new(),
    };
    for line in raw.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        if line.starts_with(br#"{"frame""#) || line.starts_with(br#"{"erased""#) {
            match serde_json::from_slice::<SealedLine>(line)? {
                SealedLine::Frame(f) => parsed.frames.push(f),
                SealedLine::Erased(p) => parsed.placeholders.push(p),
            }
        } else {
            parsed.plain.push(serde_json::from_slice(line)?);
        }
    }
    Ok(parsed)
}

impl Parsed {
    /// The (tag, generation) of every frame.
    pub fn keys(&self) -> BTreeSet<(String, u32)> {
        self.frames
            .iter()
            .map(|f| (f.tag.clone(), f.generation))
            .collect()
    }

    /// Every offset in order: plain records, opened frames' records (`key` tells each frame's
    /// key; with `only`, frames of other tags are [`Skip::NotAsked`] unopened), and what could
    /// not be read with why. A frame whose key is there but does not open it (altered, moved to
    /// other offsets or another segment) is an error.
    pub fn open(
        self,
        entry: &Entry,
        key: impl Fn(&str, u32) -> KeyState,
        only: Option<&str>,
    ) -> anyhow::Result<Vec<Item>> {
        let mut items: Vec<Item> = self.plain.into_iter().map(Item::Record).collect();
        for p in self.placeholders {
            items.extend(p.offsets.iter().map(|o| Item::Skipped {
                offset: *o,
                tag: p.tag.clone(),
                generation: None,
                why: Skip::Placeholder,
            }));
        }
        for f in self.frames {
            let skip = |why| {
                f.offsets
                    .iter()
                    .map(|o| Item::Skipped {
                        offset: *o,
                        tag: f.tag.clone(),
                        generation: Some(f.generation),
                        why,
                    })
                    .collect::<Vec<_>>()
            };
            if only.is_some_and(|t| t != f.tag) {
                items.extend(skip(Skip::NotAsked));
                continue;
            }
            let key = match key(&f.tag, f.generation) {
                KeyState::Live(k) => k,
                KeyState::Erased => {
                    items.extend(skip(Skip::Erased));
                    continue;
                }
                KeyState::Expired => {
                    items.extend(skip(Skip::Expired));
                    continue;
                }
                KeyState::Missing => {
                    items.extend(skip(Skip::Missing));
                    continue;
                }
            };
            items.extend(open_frame(entry, &f, &key)?.into_iter().map(Item::Record));
        }
        items.sort_by_key(Item::offset);
        anyhow::ensure!(
            items.len() as u64 == entry.records,
            "{}: {} records, the manifest says {}",
            entry.segment,
            items.len(),
            entry.records
        );
        let mut previous = entry.first_offset - 1;
        for i in &items {
            let topic_ok = match i {
                Item::Record(r) => r.topic == entry.topic && r.partition == entry.partition,
                Item::Skipped { .. } => true,
            };
            let offset = i.offset();
            anyhow::ensure!(
                topic_ok && offset > previous && offset <= entry.last_offset,
                "{}: holds offset {offset} after {previous}, outside the manifest's {}/{} {}..={} in order",
                entry.segment,
                entry.topic,
                entry.partition,
                entry.first_offset,
                entry.last_offset
            );
            previous = offset;
        }
        Ok(items)
    }
}

fn open_frame(entry: &Entry, f: &Frame, key: &SealKey) -> anyhow::Result<Vec<ArchivedRecord>> {
    let refused = || {
        anyhow::anyhow!(
            "{}: the frame of subject {} generation {} (offsets {:?}..) does not open under its              key: altered, or moved from another place",
            entry.segment,
            f.tag,
            f.generation,
            f.offsets.first()
        )
    };
    let mut sealed = STANDARD.decode(&f.nonce).map_err(|_| refused())?;
    sealed.extend(STANDARD.decode(&f.ciphertext).map_err(|_| refused())?);
    let aad = frame_aad(
        &entry.topic,
        entry.partition,
        entry.epoch,
        &entry.cluster_id,
        &f.tag,
        f.generation,
        &f.offsets,
    );
    let plain = key.open(&sealed, &aad).ok_or_else(refused)?;
    let raw = zstd::decode_all(plain.as_slice())?;
    let records = raw
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(serde_json::from_slice)
        .collect::<Result<Vec<ArchivedRecord>, _>>()?;
    let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
    anyhow::ensure!(
        offsets == f.offsets,
        "{}: the frame of subject {} holds other offsets than it names",
        entry.segment,
        f.tag
    );
    Ok(records)
}

/// The records of `items`, with what was skipped counted; an offset whose key is missing is an
/// error naming the subject and generation.
pub fn records_of(
    segment: &str,
    items: Vec<Item>,
) -> anyhow::Result<(Vec<ArchivedRecord>, Skipped)> {
    let mut records = Vec::with_capacity(items.len());
    let mut skipped = Skipped::default();
    for i in items {
        match i {
            Item::Record(r) => records.push(r),
            Item::Skipped {
                why,
                tag,
                generation,
                ..
            } => match why {
                Skip::Erased => skipped.erased += 1,
                Skip::Expired => skipped.expired += 1,
                Skip::Placeholder => skipped.placeholders += 1,
                Skip::NotAsked => {}
                Skip::Missing => anyhow::bail!(
                    "{segment}: the key of subject {tag} generation {} is missing from the key \
                     location and no erasure record names it (ARCHIVE_KEYS_DIR, ARCHIVE_KEK_FILE)",
                    generation.unwrap_or(0)
                ),
            },
        }
    }
    Ok((records, skipped))
}

/// One subject's records waiting in an open segment, with when each was received.
type Waiting = Vec<(ArchivedRecord, OffsetDateTime)>;

/// A closed segment, with what sealing did.
#[derive(Debug)]
pub struct Closed {
    pub bytes: Vec<u8>,
    pub entry: Entry,
    /// Records sealed in frames.
    pub sealed: u64,
    /// Records written as placeholders (an erasure reached them first).
    pub placeholders: u64,
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
    /// Records naming a subject, by tag: sealed when the segment closes.
    subjects: BTreeMap<String, Waiting>,
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
            subjects: BTreeMap::new(),
        })
    }

    /// A record naming nobody: a plain line.
    pub fn push(&mut self, r: &ArchivedRecord) -> anyhow::Result<()> {
        let mut line = r.line();
        line.push(b'\n');
        self.encoder.write_all(&line)?;
        self.count(r, line);
        Ok(())
    }

    /// A record of subject `tag` received at `received_at`: sealed in the subject's frame (or
    /// left as a placeholder) when the segment closes.
    pub fn push_subject(&mut self, r: &ArchivedRecord, tag: &str, received_at: OffsetDateTime) {
        let mut line = r.line();
        line.push(b'\n');
        self.count(r, line);
        self.subjects
            .entry(tag.to_owned())
            .or_default()
            .push((r.clone(), received_at));
    }

    /// The tags whose frames need a key at close: those with a record `barrier` does not erase.
    pub fn tags_to_seal(&self, barrier: &Barrier) -> Vec<String> {
        self.subjects
            .iter()
            .filter(|(tag, rs)| rs.iter().any(|(_, at)| !barrier.erases(tag, *at)))
            .map(|(tag, _)| tag.clone())
            .collect()
    }

    fn count(&mut self, r: &ArchivedRecord, mut line: Vec<u8>) {
        self.raw_bytes += line.len() as u64;
        self.records += 1;
        self.last_offset = r.offset;
        if let Some(ts) = r.timestamp {
            self.oldest_timestamp = Some(self.oldest_timestamp.map_or(ts, |o| o.min(ts)));
            self.last_timestamp = Some(self.last_timestamp.map_or(ts, |l| l.max(ts)));
        }
        line.pop();
        self.last_line = line;
    }

    /// The compressed segment and its manifest entry, for a segment of plain records only.
    pub fn close(self) -> anyhow::Result<(Vec<u8>, Entry)> {
        let closed = self.close_sealed(&HashMap::new(), &Barrier::default())?;
        Ok((closed.bytes, closed.entry))
    }

    /// The compressed segment and its manifest entry: each subject's records that `barrier`
    /// does not erase sealed in one frame under its key in `keys` (by tag: generation and
    /// key; every tag of [`Open::tags_to_seal`] must be there), those it erases as one
    /// placeholder line.
    pub fn close_sealed(
        mut self,
        keys: &HashMap<String, (u32, Arc<SealKey>)>,
        barrier: &Barrier,
    ) -> anyhow::Result<Closed> {
        let (mut sealed, mut placeholders) = (0, 0);
        let mut tags = Vec::new();
        for (tag, waiting) in std::mem::take(&mut self.subjects) {
            let (erased, kept): (Waiting, Waiting) = waiting
                .into_iter()
                .partition(|(_, at)| barrier.erases(&tag, *at));
            if !erased.is_empty() {
                let p = Placeholder {
                    tag: tag.clone(),
                    offsets: erased.iter().map(|(r, _)| r.offset).collect(),
                };
                placeholders += erased.len() as u64;
                let mut line = serde_json::to_vec(&SealedLine::Erased(p))?;
                line.push(b'\n');
                self.encoder.write_all(&line)?;
            }
            if kept.is_empty() {
                continue;
            }
            let (generation, key) = keys.get(&tag).ok_or_else(|| {
                anyhow::anyhow!("closing a segment: no key given for subject {tag}")
            })?;
            let mut plain = zstd::stream::Encoder::new(Vec::new(), 3)?;
            for (r, _) in &kept {
                plain.write_all(&r.line())?;
                plain.write_all(b"\n")?;
            }
            let plain = plain.finish()?;
            let offsets: Vec<i64> = kept.iter().map(|(r, _)| r.offset).collect();
            let aad = frame_aad(
                &self.topic,
                self.partition,
                self.epoch,
                &self.cluster_id,
                &tag,
                *generation,
                &offsets,
            );
            let out = key.seal(&plain, &aad);
            let (nonce, ciphertext) = out.split_at(12);
            let frame = Frame {
                tag: tag.clone(),
                generation: *generation,
                offsets,
                nonce: STANDARD.encode(nonce),
                ciphertext: STANDARD.encode(ciphertext),
            };
            sealed += kept.len() as u64;
            let mut line = serde_json::to_vec(&SealedLine::Frame(frame))?;
            line.push(b'\n');
            self.encoder.write_all(&line)?;
            tags.push(tag);
        }
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
            closed_at: OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)?,
            // Absent without frames: a plaintext segment reads as those from before subject keys.
            subjects: (!tags.is_empty()).then_some(tags),
        };
        Ok(Closed {
            bytes,
            entry,
            sealed,
            placeholders,
        })
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

/// The records of a segment of plain records (and placeholders), after checking it against its
/// entry; a frame is an error naming its subject (read such segments with a key location:
/// `super::read_segment`).
pub fn read(entry: &Entry, bytes: &[u8]) -> anyhow::Result<Vec<ArchivedRecord>> {
    let items = parse(entry, bytes)?.open(entry, |_, _| KeyState::Missing, None)?;
    Ok(records_of(&entry.segment, items)?.0)
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

    fn key(n: u8) -> (u32, Arc<SealKey>) {
        (1, Arc::new(SealKey::new(&[n; 32])))
    }

    /// Offsets 5..=10: plain 5, 8; subject a 6, 9; subject b 7, 10.
    fn mixed(barrier: &Barrier) -> Closed {
        let at = OffsetDateTime::from_unix_timestamp(100).unwrap();
        let mut open = Open::new(&record(5), 1, "c").unwrap();
        for o in 5..=10 {
            match o {
                5 | 8 => open.push(&record(o)).unwrap(),
                6 | 9 => open.push_subject(&record(o), "a", at),
                _ => open.push_subject(&record(o), "b", at),
            }
        }
        let keys: HashMap<String, (u32, Arc<SealKey>)> =
            [("a".to_owned(), key(1)), ("b".to_owned(), key(2))].into();
        open.close_sealed(&keys, barrier).unwrap()
    }

    fn state(live: &[&str], erased: &[&str]) -> impl Fn(&str, u32) -> KeyState {
        let live: Vec<String> = live.iter().map(|s| s.to_string()).collect();
        let erased: Vec<String> = erased.iter().map(|s| s.to_string()).collect();
        move |tag, _| {
            if live.iter().any(|t| t == tag) {
                KeyState::Live(if tag == "a" { key(1).1 } else { key(2).1 })
            } else if erased.iter().any(|t| t == tag) {
                KeyState::Erased
            } else {
                KeyState::Missing
            }
        }
    }

    #[test]
    fn a_segment_of_two_subjects_and_plain_lines_reads_back_in_offset_order() {
        let closed = mixed(&Barrier::default());
        assert_eq!((closed.sealed, closed.placeholders), (4, 0));
        assert_eq!(closed.entry.subjects, Some(vec!["a".into(), "b".into()]));
        let raw = String::from_utf8(zstd::decode_all(closed.bytes.as_slice()).unwrap()).unwrap();
        // The subjects' records are not readable: only the plain ones' ids are.
        assert!(raw.contains("id-5") && raw.contains("id-8"), "{raw}");
        assert!(!raw.contains("id-6") && !raw.contains("id-7"), "{raw}");
        let items = parse(&closed.entry, &closed.bytes)
            .unwrap()
            .open(&closed.entry, state(&["a", "b"], &[]), None)
            .unwrap();
        let (records, skipped) = records_of("s", items).unwrap();
        assert_eq!(records, (5..=10).map(record).collect::<Vec<_>>());
        assert_eq!(skipped, Skipped::default());
        // One subject's export opens that frame only.
        let items = parse(&closed.entry, &closed.bytes)
            .unwrap()
            .open(&closed.entry, state(&["a"], &[]), Some("a"))
            .unwrap();
        let (records, _) = records_of("s", items).unwrap();
        assert_eq!(
            records.iter().map(|r| r.offset).collect::<Vec<_>>(),
            vec![5, 6, 8, 9]
        );
    }

    #[test]
    fn an_erased_frame_is_skipped_and_a_missing_key_is_an_error_naming_it() {
        let closed = mixed(&Barrier::default());
        let items = parse(&closed.entry, &closed.bytes)
            .unwrap()
            .open(&closed.entry, state(&["a"], &["b"]), None)
            .unwrap();
        let (records, skipped) = records_of("s", items).unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(skipped.erased, 2);
        let items = parse(&closed.entry, &closed.bytes)
            .unwrap()
            .open(&closed.entry, state(&["a"], &[]), None)
            .unwrap();
        let e = records_of("s", items).unwrap_err().to_string();
        assert!(e.contains("subject b generation 1"), "{e}");
        // Without keys at all, the plain reader says so.
        assert!(read(&closed.entry, &closed.bytes).is_err());
    }

    #[test]
    fn records_an_erasure_reached_before_close_become_placeholders() {
        let mut barrier = Barrier::default();
        barrier.add(&crate::erasure::ErasureEvent {
            erasure_id: uuid::Uuid::nil(),
            subject_tag: "b".into(),
            erased_at: OffsetDateTime::from_unix_timestamp(200).unwrap(),
        });
        let closed = mixed(&barrier);
        assert_eq!((closed.sealed, closed.placeholders), (2, 2));
        assert_eq!(closed.entry.subjects, Some(vec!["a".into()]));
        let items = parse(&closed.entry, &closed.bytes)
            .unwrap()
            .open(&closed.entry, state(&["a"], &[]), None)
            .unwrap();
        let (records, skipped) = records_of("s", items).unwrap();
        assert_eq!(records.len(), 4);
        assert_eq!(skipped.placeholders, 2);
    }

    #[test]
    fn a_frame_opens_only_with_its_key_and_where_it_was_sealed() {
        let closed = mixed(&Barrier::default());
        // Another key: refused.
        let wrong = |_: &str, _: u32| KeyState::Live(key(3).1);
        let e = parse(&closed.entry, &closed.bytes)
            .unwrap()
            .open(&closed.entry, wrong, None)
            .unwrap_err();
        assert!(e.to_string().contains("does not open"), "{e}");
        // Moved to other offsets (the frame line says 106, 109): refused.
        let raw = String::from_utf8(zstd::decode_all(closed.bytes.as_slice()).unwrap()).unwrap();
        let moved = raw.replace("\"offsets\":[6,9]", "\"offsets\":[7,9]");
        assert_ne!(moved, raw);
        let bytes = zstd::encode_all(moved.as_bytes(), 3).unwrap();
        let mut entry = closed.entry.clone();
        entry.sha256 = hex::encode(Sha256::digest(&bytes));
        let e = parse(&entry, &bytes)
            .unwrap()
            .open(&entry, state(&["a", "b"], &[]), None)
            .unwrap_err();
        assert!(e.to_string().contains("does not open"), "{e}");
        // Another epoch (the same bytes under another entry): refused.
        let mut entry = closed.entry.clone();
        entry.epoch = 2;
        assert!(parse(&entry, &closed.bytes)
            .unwrap()
            .open(&entry, state(&["a", "b"], &[]), None)
            .is_err());
    }
}
