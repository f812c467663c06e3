//! `--rebuild`: replaying into emptied tables what the worker's topic ever held: the archive's
//! records first (`ARCHIVE_DIR`, every epoch, in order), then the topic from the first offset
//! the archive does not hold. A record met twice (a restored cluster holds archived records
//! again) is harmless: applying a record twice changes nothing.

use rdkafka::message::{OwnedHeaders, OwnedMessage, Timestamp};

use super::apply::{decode_batch, Apply, ApplyError};
use super::consume::{BACKOFF_MAX, BACKOFF_START};
use crate::archive::{self, Archive, ArchivedRecord, Entry};
use crate::backoff::Backoff;
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
    archive_dir: Option<&str>,
    apply: &A,
    progress: &prometheus::IntGaugeVec,
) -> anyhow::Result<()> {
    let (archive, entries) = match archive_dir {
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
    apply
        .reset()
        .await
        .map_err(|e| anyhow::anyhow!("emptying the tables for a rebuild: {e}"))?;
    let from_archive = match &archive {
        Some(archive) => replay_archive(archive, &entries, apply, progress).await?,
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

/// Applies every archived record of `entries` (one topic), in (partition, epoch, offset) order,
/// with retries as the consume loop does. Records that can never apply are counted and logged,
/// not dead-lettered again: the live pipeline did that when they first came, and the
/// dead-letter topic is archived too. Returns the records applied.
async fn replay_archive<A: Apply>(
    archive: &Archive,
    entries: &[Entry],
    apply: &A,
    gauges: &prometheus::IntGaugeVec,
) -> anyhow::Result<u64> {
    let total: u64 = entries.iter().map(|e| e.records).sum();
    let mut progress = Progress::new("rebuild", "archived records", total).with_gauges(
        gauges.with_label_values(&["done"]),
        gauges.with_label_values(&["total"]),
    );
    let mut refused = 0u64;
    for entry in entries {
        let bytes = archive.get(&entry.segment).await?;
        let records = archive::segment::read(entry, &bytes)?;
        for chunk in records.chunks(ARCHIVE_BATCH) {
            let batch: Vec<OwnedMessage> = chunk.iter().map(message).collect::<Result<_, _>>()?;
            let (decoded, rejected) = decode_batch::<A::Payload>(&batch);
            refused += rejected.len() as u64;
            if !decoded.is_empty() {
                let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
                loop {
                    match apply.apply(&decoded).await {
                        Ok(applied) => {
                            refused += applied.rejected.len() as u64;
                            break;
                        }
                        // One record the database refuses must not stop a rebuild: apply the
                        // rest one by one.
                        Err(ApplyError::Permanent(e)) => {
                            tracing::warn!(error = %e, "rebuild: an archived batch refused; applying record by record");
                            for one in decoded.chunks(1) {
                                if !apply_one(apply, one).await {
                                    refused += 1;
                                }
                            }
                            break;
                        }
                        Err(ApplyError::Transient(e)) => {
                            tracing::warn!(error = %e, retry_in = ?backoff.next_delay(), "rebuild: applying archived records failed; will retry");
                            backoff.wait().await;
                        }
                    }
                }
            }
            progress.add(chunk.len() as u64);
        }
    }
    progress.finish();
    let done = progress.done();
    if refused > 0 {
        tracing::warn!(
            refused,
            "rebuild: archived records that do not apply (dead-lettered when they first came)"
        );
    }
    Ok(done)
}

/// Applies one record, retrying transient failures (database away) until they pass, as the
/// consume loop does: only a record the database refuses is given up. Whether it applied.
async fn apply_one<A: Apply>(apply: &A, one: &[super::apply::Record<A::Payload>]) -> bool {
    let mut backoff = Backoff::new(BACKOFF_START, BACKOFF_MAX);
    loop {
        match apply.apply(one).await {
            Ok(applied) => return applied.rejected.is_empty(),
            Err(ApplyError::Permanent(e)) => {
                tracing::warn!(error = %e, "rebuild: an archived record refused; skipped");
                return false;
            }
            Err(ApplyError::Transient(e)) => {
                tracing::warn!(error = %e, retry_in = ?backoff.next_delay(), "rebuild: applying an archived record failed; will retry");
                backoff.wait().await;
            }
        }
    }
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
