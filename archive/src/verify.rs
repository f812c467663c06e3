//! `kollus-archive verify`: every segment against its manifest entry (SHA-256, record count,
//! offsets in order), and the offsets of each partition across segments: gaps (records the
//! archive lacks) and repeats (records archived twice after a crash, which restore drops).

use std::collections::BTreeMap;

use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::segment::{self, Entry};
use crate::store::Archive;

#[derive(Debug, Default)]
pub struct Report {
    pub segments: u64,
    pub records: u64,
    /// Segments that do not match their entry, with why.
    pub damaged: Vec<String>,
    /// (topic, partition, first missing offset, last missing offset).
    pub gaps: Vec<(String, i32, i64, i64)>,
    /// Records archived more than once.
    pub repeats: u64,
    /// Partitions whose archive does not start at offset 0: (topic, partition, first offset).
    /// Not an error (the group may have started late, or a new DIR reused its group), but what
    /// comes before is not here.
    pub late_starts: Vec<(String, i32, i64)>,
}

impl Report {
    pub fn ok(&self) -> bool {
        self.damaged.is_empty() && self.gaps.is_empty()
    }
}

/// Every manifest entry of the archive, in (topic, partition, first offset) order.
pub async fn entries(archive: &Archive) -> anyhow::Result<Vec<Entry>> {
    let mut entries = Vec::new();
    for path in archive.list("manifest").await? {
        let bytes = archive.get(&path).await?;
        let entry: Entry = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{path}: not a manifest entry: {e}"))?;
        entries.push(entry);
    }
    entries.sort_by(|a, b| {
        (&a.topic, a.partition, a.first_offset, a.last_offset).cmp(&(
            &b.topic,
            b.partition,
            b.first_offset,
            b.last_offset,
        ))
    });
    Ok(entries)
}

pub async fn verify(archive: &Archive, metrics: Option<&Metrics>) -> anyhow::Result<Report> {
    let entries = entries(archive).await?;
    let mut report = Report::default();
    let mut progress = Progress::new("verify", "segments", entries.len() as u64, metrics);
    // Per partition: the highest offset seen so far.
    let mut reached: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for entry in &entries {
        progress.add(1);
        report.segments += 1;
        let records = match archive
            .get(&entry.segment)
            .await
            .and_then(|bytes| segment::read(entry, &bytes))
        {
            Ok(records) => records,
            Err(e) => {
                report.damaged.push(format!("{e:#}"));
                continue;
            }
        };
        report.records += records.len() as u64;
        let key = (entry.topic.clone(), entry.partition);
        for r in &records {
            match reached.get(&key).copied() {
                None if r.offset > 0 => {
                    report
                        .late_starts
                        .push((entry.topic.clone(), entry.partition, r.offset));
                }
                Some(last) if r.offset <= last => report.repeats += 1,
                Some(last) if r.offset > last + 1 => {
                    report.gaps.push((
                        entry.topic.clone(),
                        entry.partition,
                        last + 1,
                        r.offset - 1,
                    ));
                }
                _ => {}
            }
            let at = reached.entry(key.clone()).or_insert(r.offset);
            *at = (*at).max(r.offset);
        }
    }
    progress.finish();
    Ok(report)
}
