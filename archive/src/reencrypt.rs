//! `kollus-archive reencrypt --from A --to B`: copies an archive written before subject keys
//! (plaintext) into a new location, each segment as a segment of the same topic, partition,
//! epoch and offsets, its records naming a user sealed under that user's key (and dead letters
//! naming nobody under their day's key), as `dump` writes them now. Idempotent: a segment whose
//! offsets B already holds (same epoch) is not written again, so a re-run after a crash goes on
//! where it stopped. Then `verify --from B`, and retire A: an erasure does not reach an archive
//! that was not re-encrypted.

use std::collections::{HashMap, HashSet};

use anyhow::Context as _;
use sha2::{Digest as _, Sha256};

use crate::dump::KeySettings;
use crate::metrics::Metrics;
use kollus_common::archive::segment::{Entry, Open};
use kollus_common::archive::store::Archive;
use kollus_common::archive::subject::{received_at, subject_of, unattributed_tag, Subject};
use kollus_common::archive::{entries, read_segment};
use kollus_common::settings::KafkaSettings;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// Segments written into B by this run.
    pub segments: u64,
    /// Segments B held already (an earlier run).
    pub already_there: u64,
    pub records: u64,
    /// Records sealed under a subject's key.
    pub sealed: u64,
    /// Records an erasure recorded in B's key location had reached: placeholders.
    pub placeholders: u64,
}

type Span = (String, i32, u32, String, i64, i64);

fn span(e: &Entry) -> Span {
    (
        e.topic.clone(),
        e.partition,
        e.epoch,
        e.cluster_id.clone(),
        e.first_offset,
        e.last_offset,
    )
}

pub async fn reencrypt(
    from: &Archive,
    to: &Archive,
    kafka: &KafkaSettings,
    keys: &KeySettings,
    metrics: Option<&Metrics>,
) -> anyhow::Result<Summary> {
    let mut ring = keys
        .ring(&to.location)
        .await?
        .context("reencrypt needs ARCHIVE_KEK_FILE: the keys it seals under are wrapped by it")?;
    let tagger = kollus_common::subject::Tagger::from_file(
        keys.subject_tag_key_file
            .as_deref()
            .context("reencrypt needs SUBJECT_TAG_KEY_FILE: it names each record's subject")?,
    )?;
    let source = entries(from).await?;
    anyhow::ensure!(
        !source.is_empty(),
        "{}: no manifest, so nothing archived there (a wrong location?)",
        from.location
    );
    // Erasures the plaintext archive holds itself (its erasure topic's records), beside those
    // of the new location's keys: a user erased before the copy is never sealed under a new
    // key, their records become placeholders.
    let archived =
        kollus_common::archive::archived_erasures(from, &source, &kafka.erasure_topic).await?;
    ring.barrier.merge(&archived);
    let done: HashSet<Span> = entries(to).await?.iter().map(span).collect();
    let total = source.iter().map(|e| e.records).sum();
    let mut progress = crate::metrics::progress_of(metrics, "reencrypt", "records", total);
    let mut summary = Summary::default();
    for entry in &source {
        if done.contains(&span(entry)) {
            summary.already_there += 1;
            progress.add(entry.records);
            continue;
        }
        let (records, _) = read_segment(from, entry, None, None)
            .await
            .with_context(|| format!("{}: reencrypt copies plaintext archives", entry.segment))?;
        let Some(first) = records.first() else {
            continue;
        };
        let mut open = Open::new(first, entry.epoch, &entry.cluster_id)?;
        for r in &records {
            match subject_of(r, &kafka.playback_topic, &kafka.deadletter_topic) {
                Subject::Nobody => open.push(r)?,
                Subject::User(user) => {
                    open.push_subject(r, tagger.tag(&user).as_str(), received_at(r))
                }
                Subject::Unattributed => {
                    let at = received_at(r);
                    open.push_subject(r, &unattributed_tag(at), at);
                }
            }
        }
        let mut sealing = HashMap::new();
        for tag in open.tags_to_seal(&ring.barrier) {
            let key = ring.current(&tag).await?;
            sealing.insert(tag, key);
        }
        let closed = open.close_sealed(&sealing, &ring.barrier)?;
        let sha = closed.entry.sha256.clone();
        to.create(&closed.entry.segment, closed.bytes, |there| {
            hex::encode(Sha256::digest(there)) == sha
        })
        .await?;
        let manifest = serde_json::to_vec_pretty(&closed.entry)?;
        let written = closed.entry.clone();
        to.create(&closed.entry.manifest_path(), manifest, |there| {
            serde_json::from_slice::<Entry>(there).is_ok_and(|e| e.same_segment(&written))
        })
        .await?;
        summary.segments += 1;
        summary.records += records.len() as u64;
        summary.sealed += closed.sealed;
        summary.placeholders += closed.placeholders;
        if let Some(m) = metrics {
            m.sealed.inc_by(closed.sealed);
            m.placeholders.inc_by(closed.placeholders);
        }
        progress.add(entry.records);
    }
    progress.finish();
    Ok(summary)
}
