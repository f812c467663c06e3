//! `--rebuild`: replaying into emptied tables what the worker's topic ever held: the archive's
//! records first (`ARCHIVE_DIR`, every epoch, in order), then the topic from the first offset
//! the archive does not hold. A record met twice (a restored cluster holds archived records
//! again) is harmless: applying a record twice changes nothing.

use rdkafka::message::{OwnedHeaders, OwnedMessage, Timestamp};

use super::apply::{decode_batch, Apply};
use super::consume::ConsumeSettings;
use super::retry::apply_with_retry;
use crate::archive::{self, Archive, ArchivedRecord, Entry, KeyRing};
use crate::kafka;
use crate::progress::Progress;
use crate::settings::KafkaSettings;

/// Records applied per transaction while replaying the archive.
const ARCHIVE_BATCH: usize = 1000;

/// Rewinds the group, then empties the tables: in this order, so a refused rewind (the group
/// still has members) leaves the tables as they were; then replays the archive. Should the
/// emptying fail after the rewind, the replay applies onto the existing rows, which changes
/// nothing (every apply is idempotent).
pub(super) async fn rebuild<A: Apply>(
    settings: &KafkaSettings,
    group_id: &str,
    topic: &str,
    consume: &ConsumeSettings,
    apply: &A,
    progress: &prometheus::IntGaugeVec,
) -> anyhow::Result<()> {
    let (archive, entries) = match consume.archive_dir.as_deref() {
        Some(dir) => {
            let archive = Archive::open_existing(dir)?;
            let entries: Vec<Entry> = archive::entries(&archive)
                .await?
                .into_iter()
                .filter(|e| e.topic == topic)
                .collect();
            (Some(archive), entries)
        }
        None => (None, Vec::new()),
    };
    let rewound = {
        let (settings, group_id, topic) = (settings.clone(), group_id.to_owned(), topic.to_owned());
        let entries = entries.clone();
        tokio::task::spawn_blocking(move || {
            let client = archive::inspector(&settings)?;
            let cluster = archive::cluster_id(&client);
            // What this cluster's own epochs hold: another cluster archiving into the same
            // location has epochs of its own, which this topic never continues.
            let holdings = archive::holdings_of_cluster(&entries, &cluster);
            kafka::rewind_group(&settings, &group_id, &topic, |partition, earliest| {
                let Some(h) = holdings.get(&(topic.clone(), partition)) else {
                    return Ok(earliest);
                };
                // The archive holds this very incarnation up to `last_offset`: the topic
                // continues after it. Another incarnation: the whole topic is new to it.
                let same = h.matches_broker(&client, &cluster, &topic, partition)?;
                tracing::info!(
                    topic,
                    partition,
                    archived_epoch = h.epoch,
                    archived_up_to = h.last_offset,
                    same_incarnation = same,
                    "rebuild: where the topic's replay starts"
                );
                Ok(if same { h.last_offset + 1 } else { earliest })
            })
        })
        .await??
    };
    // The keys before the tables are emptied: a missing KEK refuses the rebuild untouched.
    let mut keys = keys_for(consume, &entries).await?;
    apply
        .reset()
        .await
        .map_err(|e| anyhow::anyhow!("emptying the tables for a rebuild: {e}"))?;
    let from_archive = match &archive {
        Some(archive) => replay_archive(archive, &entries, keys.as_mut(), apply, progress).await?,
        None => 0,
    };
    tracing::warn!(
        group = group_id,
        topic,
        from_archive,
        from_topic = rewound,
        "rebuild: tables emptied, the archive replayed, the group rewound; replaying the topic"
    );
    Ok(())
}

/// The archive's key location, when its entries hold frames (then `ARCHIVE_KEK_FILE` is
/// required, and its absence an error naming it).
async fn keys_for(consume: &ConsumeSettings, entries: &[Entry]) -> anyhow::Result<Option<KeyRing>> {
    if !archive::holds_frames(entries) {
        return Ok(None);
    }
    let (Some(location), Some(kek)) = (consume.archive_keys_location(), &consume.archive_kek_file)
    else {
        anyhow::bail!(
            "the archive holds records sealed under subject keys: --rebuild needs \
             ARCHIVE_KEK_FILE (and ARCHIVE_KEYS_DIR when the keys are not in <archive>/keys)"
        );
    };
    KeyRing::open(&location, kek).await.map(Some)
}

/// Applies every archived record of `entries` (one topic), in (partition, epoch, offset) order,
/// with the consume loop's retry ([`apply_with_retry`]). Records that can never apply are counted and logged,
/// not dead-lettered again: the live pipeline did that when they first came, and the
/// dead-letter topic is archived too. Returns the records applied.
async fn replay_archive<A: Apply>(
    archive: &Archive,
    entries: &[Entry],
    mut keys: Option<&mut KeyRing>,
    apply: &A,
    gauges: &prometheus::IntGaugeVec,
) -> anyhow::Result<u64> {
    let total: u64 = entries.iter().map(|e| e.records).sum();
    let mut progress = Progress::new("rebuild", "archived records", total).with_gauges(
        gauges.with_label_values(&["done"]),
        gauges.with_label_values(&["total"]),
    );
    let mut refused = 0u64;
    let mut erased = 0u64;
    for entry in entries {
        let (records, skipped) =
            archive::read_segment(archive, entry, keys.as_deref_mut(), None).await?;
        let held_back = skipped.erased + skipped.expired + skipped.placeholders;
        erased += held_back;
        progress.add(held_back);
        for chunk in records.chunks(ARCHIVE_BATCH) {
            let batch: Vec<OwnedMessage> = chunk.iter().map(message).collect::<Result<_, _>>()?;
            let (decoded, rejected) = decode_batch::<A::Payload>(&batch);
            refused += rejected.len() as u64;
            if !decoded.is_empty() {
                refused += apply_with_retry(apply, &decoded, &|_| ())
                    .await
                    .rejected
                    .len() as u64;
            }
            progress.add(chunk.len() as u64);
        }
    }
    progress.finish();
    let done = progress.done() - erased;
    if erased > 0 {
        tracing::info!(
            erased,
            "rebuild: archived records of erased subjects (or expired unattributed days) skipped"
        );
    }
    if refused > 0 {
        tracing::warn!(
            refused,
            "rebuild: archived records that do not apply (dead-lettered when they first came)"
        );
    }
    Ok(done)
}

/// The Kafka record an archived record was.
fn message(r: &ArchivedRecord) -> anyhow::Result<OwnedMessage> {
    let headers = r.headers.iter().try_fold(OwnedHeaders::new(), |hs, h| {
        let value = h.value.as_ref().map(|v| v.to_vec()).transpose()?;
        anyhow::Ok(hs.insert(rdkafka::message::Header {
            key: &h.key,
            value: value.as_deref(),
        }))
    })?;
    Ok(OwnedMessage::new(
        r.value.as_ref().map(|v| v.to_vec()).transpose()?,
        r.key.as_ref().map(|k| k.to_vec()).transpose()?,
        r.topic.clone(),
        r.timestamp
            .map_or(Timestamp::NotAvailable, Timestamp::CreateTime),
        r.partition,
        r.offset,
        Some(headers),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(subjects: Option<Vec<String>>) -> Entry {
        Entry {
            segment: "segments/t/0/0001/x".into(),
            topic: "t".into(),
            partition: 0,
            epoch: 1,
            cluster_id: String::new(),
            first_offset: 0,
            last_offset: 0,
            records: 1,
            bytes: 1,
            sha256: String::new(),
            last_record_sha256: String::new(),
            last_timestamp: None,
            closed_at: String::new(),
            subjects,
        }
    }

    #[tokio::test]
    async fn a_sealed_archive_without_the_kek_is_refused_naming_the_setting() {
        let consume = ConsumeSettings {
            archive_dir: Some("/nonexistent-archive".into()),
            ..ConsumeSettings::default()
        };
        // Plaintext (older) and frame-less entries need no key.
        let plain = [entry(None), entry(Some(vec![]))];
        assert!(keys_for(&consume, &plain).await.unwrap().is_none());
        let sealed = [entry(Some(vec!["abc".into()]))];
        let e = keys_for(&consume, &sealed).await.unwrap_err().to_string();
        assert!(e.contains("ARCHIVE_KEK_FILE"), "{e}");
    }
}
