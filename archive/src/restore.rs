//! `kollus-archive restore`: produces every archived record back to the configured brokers'
//! topics, with its key, headers and value, in its partition where the topic has it. Records
//! archived twice (a crash of `dump`), or in two epochs (a restored cluster archived again), are
//! produced once, by envelope id; epochs in order (by number, then cluster: each epoch whole),
//! so each partition's records keep the order they had. `--cluster` restores one Kafka
//! cluster's epochs alone (an archive two clusters wrote into). An empty archive is said to be so, and touches no broker. Running it again produces
//! the records again, which the workers skip as already applied (they keep every envelope id
//! they applied): nothing is applied twice.
//!
//! **Timestamps** ([`Timestamps`], `--timestamps` / `ARCHIVE_RESTORE_TIMESTAMPS`). Kafka deletes
//! records by their timestamp: a log segment whose newest record is older than the topic's
//! `retention.ms` goes at the broker's next retention check (every 5 min by default). A record
//! produced with its archived timestamp, older than that, is deleted minutes after a restore
//! that "succeeded". So by default (`now`) restored records get the time of the restore, and
//! their archived timestamp goes in the [`ORIGINAL_TIMESTAMP_HEADER`] header (decimal ms since
//! the Unix epoch); a record that has that header already (restored before, archived again)
//! keeps it, so it always names the first write. Nothing of ours reads meaning from a Kafka
//! timestamp: the workers take the receive time from the envelope (`received_at`) and skip
//! envelopes by id; the archive identifies a record by its envelope id, or, without one, by its
//! content as first written ([`ArchivedRecord::identity`]), so a restored record archived again
//! is the same record, not a new one. The lag gauges (the workers' and the archiver's, now minus
//! the oldest record's timestamp) then measure the restore, instead of reading weeks at once
//! and firing their alerts. What `now` costs: a consumer that seeks by time (`offsetsForTimes`)
//! finds restored records at the time of the restore, the header telling the first.
//!
//! `original` keeps the archived timestamps, for such a consumer and a topic that keeps them
//! (`retention.ms=-1`, or long enough): the restore then reads each target topic's
//! `retention.ms` (and `message.timestamp.type`) from the brokers and WARNs, counts in its
//! [`Summary`] and in `kollus_archive_restore_past_retention_records_total{topic}` the records
//! already older than it, which the broker deletes. A topic that sets
//! `message.timestamp.before.max.ms` refuses records older than that outright: the restore
//! then fails with the broker's error, nothing lost silently.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use crate::metrics::Metrics;
use kollus_common::archive::record::{ArchivedRecord, ORIGINAL_TIMESTAMP_HEADER};
use kollus_common::archive::{entries, segment, Archive};
use kollus_common::kafka::{self, AgeRetention};
use kollus_common::settings::KafkaSettings;

/// Which timestamp restored records carry (see the module docs for why `now` is the default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Timestamps {
    /// The time of the restore; the archived timestamp is kept in the
    /// `kollus-original-timestamp` header (decimal ms since the Unix epoch). Kafka keeps the
    /// records for the topic's retention from now.
    #[default]
    Now,
    /// The archived timestamps. Kafka deletes the records already older than the topic's
    /// `retention.ms` at its next retention check: restore counts and WARNs about them.
    Original,
}

/// How `restore` produces the records.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RestoreSettings {
    /// The timestamp restored records carry: `now` (the time of the restore, the archived one
    /// in the `kollus-original-timestamp` header; Kafka keeps them a full retention from now)
    /// or `original` (the archived ones; those older than the topic's retention.ms are
    /// deleted by Kafka within minutes, and counted).
    #[arg(
        long,
        env = "ARCHIVE_RESTORE_TIMESTAMPS",
        value_enum,
        default_value_t = Timestamps::Now
    )]
    pub timestamps: Timestamps,
    /// Restore only the epochs of this Kafka cluster (its id, as `verify` prints it): of an
    /// archive that two clusters wrote into, one cluster's records. Default: every epoch.
    #[arg(long, env = "ARCHIVE_RESTORE_CLUSTER")]
    pub cluster: Option<String>,
    /// The key location and KEK that open the archive's frames (erased subjects' frames and
    /// placeholders are skipped, and counted).
    #[command(flatten)]
    pub keys: crate::dump::KeySettings,
}

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The archive holds nothing: the brokers were not contacted.
    pub empty: bool,
    pub produced: u64,
    pub repeats_skipped: u64,
    /// The timestamps the records were produced with.
    pub timestamps: Timestamps,
    /// Records produced with the time of the restore instead of their archived timestamp
    /// (`now`), which their [`ORIGINAL_TIMESTAMP_HEADER`] holds.
    pub retimestamped: u64,
    /// `original`: per topic, the records produced with a timestamp already older than the
    /// topic's `retention.ms` as the brokers reported it. Kafka deletes them at its next
    /// retention check (a log segment once its newest record is that old: the few beside newer
    /// records in a segment go with it later). Topics with none are absent.
    pub past_retention: BTreeMap<String, u64>,
    /// `original`: the topics whose retention the brokers did not tell, with why: records of
    /// theirs past retention could not be counted.
    pub retention_unknown: BTreeMap<String, String>,
    /// Records not produced because an erasure (or age, for unattributed dead letters)
    /// destroyed their key, and placeholders.
    pub skipped: segment::Skipped,
}

impl Summary {
    /// Records of every topic that Kafka deletes at its next retention check.
    pub fn past_retention_total(&self) -> u64 {
        self.past_retention.values().sum()
    }
}

/// Records awaiting Kafka's acknowledgement at most.
const IN_FLIGHT: usize = 10_000;

/// [`restore_with`] the default settings: records get the time of the restore.
pub async fn restore(
    archive: &Archive,
    kafka_settings: &KafkaSettings,
    metrics: Option<&Metrics>,
) -> anyhow::Result<Summary> {
    restore_with(
        archive,
        kafka_settings,
        &RestoreSettings::default(),
        metrics,
    )
    .await
}

/// Produces every archived record to `kafka_settings`' brokers, as `settings` say.
pub async fn restore_with(
    archive: &Archive,
    kafka_settings: &KafkaSettings,
    settings: &RestoreSettings,
    metrics: Option<&Metrics>,
) -> anyhow::Result<Summary> {
    let mut summary = Summary {
        timestamps: settings.timestamps,
        ..Summary::default()
    };
    let mut entries = entries(archive).await?;
    if let Some(cluster) = &settings.cluster {
        let all = entries.len();
        entries.retain(|e| &e.cluster_id == cluster);
        tracing::info!(
            cluster,
            segments = entries.len(),
            of = all,
            "restoring the epochs of one Kafka cluster"
        );
    }
    if entries.is_empty() {
        summary.empty = true;
        return Ok(summary);
    }
    let mut topics: Vec<&str> = entries.iter().map(|e| e.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    kafka::ensure_topics(kafka_settings, &topics).await?;
    // Only original timestamps can be past retention; `now` ones are a full retention away.
    let retention = match settings.timestamps {
        Timestamps::Original => retention_of(kafka_settings, &topics, &mut summary).await,
        Timestamps::Now => HashMap::new(),
    };
    let producer = kafka::durable_producer(
        kafka_settings,
        "kollus-archive-restore",
        Duration::from_secs(60),
    )?;
    let mut partitions: HashMap<String, i32> = HashMap::new();
    for t in &topics {
        let metadata = {
            use rdkafka::producer::Producer as _;
            producer
                .client()
                .fetch_metadata(Some(t), Duration::from_secs(10))
                .with_context(|| format!("metadata of {t}"))?
        };
        let n = metadata
            .topics()
            .first()
            .map_or(0, |m| m.partitions().len() as i32);
        partitions.insert((*t).to_owned(), n);
    }

    let total = entries.iter().map(|e| e.records).sum();
    let mut progress = crate::metrics::progress_of(metrics, "restore", "records", total);
    let mut seen: HashSet<String> = HashSet::new();
    let mut in_flight = VecDeque::with_capacity(IN_FLIGHT);
    let mut ring = settings.keys.ring(&archive.location).await?;
    // Whom to leave out: the erasures the archive holds (its erasure topic's records, every
    // cluster's) and its key location records. A sealed frame of theirs no longer opens; a
    // plaintext record (archived before subject keys) is dropped here.
    let mut barrier = kollus_common::archive::archived_erasures(
        archive,
        &kollus_common::archive::entries(archive).await?,
        &kafka_settings.erasure_topic,
    )
    .await?;
    if let Some(ring) = &ring {
        barrier.merge(&ring.barrier);
    }
    let tagger = settings
        .keys
        .subject_tag_key_file
        .as_deref()
        .map(kollus_common::subject::Tagger::from_file)
        .transpose()?;
    anyhow::ensure!(
        barrier.is_empty() || tagger.is_some(),
        "the archive records {} erased subject(s): restore needs SUBJECT_TAG_KEY_FILE to leave \
         their records out",
        barrier.len()
    );
    for entry in &entries {
        let (records, skipped) =
            kollus_common::archive::read_segment(archive, entry, ring.as_mut(), None).await?;
        progress.add(skipped.erased + skipped.expired + skipped.placeholders);
        summary.skipped.erased += skipped.erased;
        summary.skipped.expired += skipped.expired;
        summary.skipped.placeholders += skipped.placeholders;
        for r in records {
            progress.add(1);
            let erased = tagger.as_ref().is_some_and(|t| {
                kollus_common::archive::erased_by(
                    &barrier,
                    t,
                    &r,
                    &kafka_settings.playback_topic,
                    &kafka_settings.deadletter_topic,
                )
            });
            if erased {
                summary.skipped.erased += 1;
                continue;
            }
            if !seen.insert(r.identity()) {
                summary.repeats_skipped += 1;
                continue;
            }
            let key = r.key.as_ref().map(|k| k.to_vec()).transpose()?;
            let value = r.value.as_ref().map(|v| v.to_vec()).transpose()?;
            let restored = Restored::of(&r, settings.timestamps)?;
            let headers = restored
                .headers
                .iter()
                .fold(OwnedHeaders::new(), |hs, (k, v)| {
                    hs.insert(Header {
                        key: k,
                        value: v.as_deref(),
                    })
                });
            let mut record: FutureRecord<'_, Vec<u8>, Vec<u8>> =
                FutureRecord::to(&r.topic).headers(headers);
            if let Some(k) = &key {
                record = record.key(k);
            }
            if let Some(v) = &value {
                record = record.payload(v);
            }
            if r.partition < partitions.get(&r.topic).copied().unwrap_or(0) {
                record = record.partition(r.partition);
            }
            // None: librdkafka stamps the record with its clock as it is produced.
            if let Some(ts) = restored.timestamp {
                record = record.timestamp(ts);
                let past = retention
                    .get(&r.topic)
                    .is_some_and(|age| age.past(ts, now_ms()));
                if past {
                    count_past_retention(&mut summary, metrics, &r.topic, &retention);
                }
            }
            if restored.retimestamped {
                summary.retimestamped += 1;
            }
            let mut record = record;
            let delivery = loop {
                match producer.send_result(record) {
                    Ok(d) => break d,
                    Err((e, back)) => {
                        // The local queue is full: wait for the oldest acknowledgement.
                        record = back;
                        match in_flight.pop_front() {
                            Some(oldest) => await_delivery(oldest).await?,
                            None => anyhow::bail!("producing to {}: {e}", r.topic),
                        }
                    }
                }
            };
            in_flight.push_back(delivery);
            summary.produced += 1;
            if in_flight.len() >= IN_FLIGHT {
                if let Some(oldest) = in_flight.pop_front() {
                    await_delivery(oldest).await?;
                }
            }
        }
    }
    while let Some(d) = in_flight.pop_front() {
        await_delivery(d).await?;
    }
    progress.finish();
    for (topic, records) in &summary.past_retention {
        let retention_ms = retention.get(topic).map(|a| a.retention_ms);
        tracing::warn!(
            topic,
            records,
            retention_ms,
            "restored with original timestamps older than the topic's retention.ms: Kafka \
             deletes these records at its next retention check (log.retention.check.interval.ms, \
             5 min by default); restore with --timestamps now to keep them"
        );
    }
    Ok(summary)
}

/// Each topic's age retention, as the brokers tell it; a topic they do not tell about is in
/// `summary.retention_unknown` (and WARNed): its old records cannot be counted, but the restore
/// goes on (the records are what matters).
async fn retention_of(
    kafka_settings: &KafkaSettings,
    topics: &[&str],
    summary: &mut Summary,
) -> HashMap<String, AgeRetention> {
    let answers = match kafka::age_retention(kafka_settings, topics).await {
        Ok(answers) => answers,
        Err(e) => {
            let why = format!("{e:#}");
            topics
                .iter()
                .map(|t| ((*t).to_owned(), Err(why.clone())))
                .collect()
        }
    };
    let mut known = HashMap::new();
    for (topic, answer) in answers {
        match answer {
            Ok(age) => {
                tracing::info!(
                    topic,
                    retention_ms = age.retention_ms,
                    log_append_time = age.log_append_time,
                    "restoring with original timestamps; the topic's retention"
                );
                known.insert(topic, age);
            }
            Err(why) => {
                tracing::warn!(
                    topic,
                    error = why,
                    "restoring with original timestamps, and the topic's retention.ms is \
                     unknown: records older than it will be deleted by Kafka uncounted"
                );
                summary.retention_unknown.insert(topic, why);
            }
        }
    }
    known
}

/// Counts one record produced past its topic's retention; WARNs at a topic's first, so a long
/// restore can be stopped early.
fn count_past_retention(
    summary: &mut Summary,
    metrics: Option<&Metrics>,
    topic: &str,
    retention: &HashMap<String, AgeRetention>,
) {
    let count = summary.past_retention.entry(topic.to_owned()).or_default();
    *count += 1;
    if *count == 1 {
        tracing::warn!(
            topic,
            retention_ms = retention.get(topic).map(|a| a.retention_ms),
            "restoring records whose original timestamps are older than the topic's \
             retention.ms: Kafka deletes them at its next retention check; counting them \
             (--timestamps now keeps them)"
        );
    }
    if let Some(m) = metrics {
        m.restore_past_retention.with_label_values(&[topic]).inc();
    }
}

/// What one archived record is produced as.
#[derive(Debug, PartialEq, Eq)]
struct Restored {
    /// The timestamp to produce with; None: the producer's clock (the time of the restore).
    timestamp: Option<i64>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    /// The archived timestamp was replaced by the time of the restore.
    retimestamped: bool,
}

impl Restored {
    fn of(r: &ArchivedRecord, timestamps: Timestamps) -> anyhow::Result<Self> {
        let mut headers: Vec<(String, Option<Vec<u8>>)> = r
            .headers
            .iter()
            .map(|h| {
                Ok((
                    h.key.clone(),
                    h.value.as_ref().map(|v| v.to_vec()).transpose()?,
                ))
            })
            .collect::<anyhow::Result<_>>()?;
        let Some(archived) = r.timestamp.filter(|_| timestamps == Timestamps::Now) else {
            // `original`, or a record without a timestamp (an old message format): as it was.
            return Ok(Self {
                timestamp: r.timestamp,
                headers,
                retimestamped: false,
            });
        };
        // Restored before and archived again: the header already names the first write. One
        // that does not read as a time is replaced.
        if r.original_timestamp().is_none() {
            headers.retain(|(k, _)| k != ORIGINAL_TIMESTAMP_HEADER);
            headers.push((
                ORIGINAL_TIMESTAMP_HEADER.to_owned(),
                Some(archived.to_string().into_bytes()),
            ));
        }
        Ok(Self {
            timestamp: None,
            headers,
            retimestamped: true,
        })
    }
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

async fn await_delivery(d: rdkafka::producer::DeliveryFuture) -> anyhow::Result<()> {
    match d.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(anyhow::anyhow!("Kafka did not take a restored record: {e}")),
        Err(_) => Err(anyhow::anyhow!("the producer went away")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kollus_common::archive::record::{Bytes, Header as ArchivedHeader};

    fn record(headers: &[(&str, &[u8])]) -> ArchivedRecord {
        ArchivedRecord {
            topic: "t".into(),
            partition: 0,
            offset: 3,
            timestamp: Some(1_700_000_000_000),
            key: Some(Bytes::of(b"k")),
            headers: headers
                .iter()
                .map(|(k, v)| ArchivedHeader {
                    key: (*k).into(),
                    value: Some(Bytes::of(v)),
                })
                .collect(),
            value: Some(Bytes::of(b"{}")),
        }
    }

    fn header(k: &str, v: &[u8]) -> (String, Option<Vec<u8>>) {
        (k.to_owned(), Some(v.to_vec()))
    }

    #[test]
    fn now_takes_the_producers_clock_and_keeps_the_archived_time_in_a_header() {
        let r = record(&[("id", b"e1"), ("kind", &[0xff])]);
        let restored = Restored::of(&r, Timestamps::Now).unwrap();
        assert_eq!(
            restored,
            Restored {
                timestamp: None,
                headers: vec![
                    header("id", b"e1"),
                    header("kind", &[0xff]),
                    header(ORIGINAL_TIMESTAMP_HEADER, b"1700000000000"),
                ],
                retimestamped: true,
            }
        );
    }

    #[test]
    fn a_record_restored_before_keeps_the_first_original_time() {
        let r = record(&[("id", b"e1"), (ORIGINAL_TIMESTAMP_HEADER, b"1600000000000")]);
        let restored = Restored::of(&r, Timestamps::Now).unwrap();
        assert_eq!(
            restored.headers,
            vec![
                header("id", b"e1"),
                header(ORIGINAL_TIMESTAMP_HEADER, b"1600000000000")
            ]
        );
        // One that is not a time is replaced by the archived timestamp.
        let r = record(&[(ORIGINAL_TIMESTAMP_HEADER, b"soon"), ("id", b"e1")]);
        let restored = Restored::of(&r, Timestamps::Now).unwrap();
        assert_eq!(
            restored.headers,
            vec![
                header("id", b"e1"),
                header(ORIGINAL_TIMESTAMP_HEADER, b"1700000000000")
            ]
        );
    }

    #[test]
    fn original_produces_the_record_as_archived() {
        let r = record(&[("id", b"e1")]);
        assert_eq!(
            Restored::of(&r, Timestamps::Original).unwrap(),
            Restored {
                timestamp: Some(1_700_000_000_000),
                headers: vec![header("id", b"e1")],
                retimestamped: false,
            }
        );
        let mut untimed = r.clone();
        untimed.timestamp = None;
        let restored = Restored::of(&untimed, Timestamps::Now).unwrap();
        assert_eq!((restored.timestamp, restored.retimestamped), (None, false));
        assert_eq!(restored.headers, vec![header("id", b"e1")]);
    }

    #[test]
    fn a_header_that_is_not_base64_is_an_error_not_a_panic() {
        let mut r = record(&[]);
        r.headers.push(ArchivedHeader {
            key: "x".into(),
            value: Some(Bytes::Base64("not base64!".into())),
        });
        assert!(Restored::of(&r, Timestamps::Now).is_err());
    }
}
