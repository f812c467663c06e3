//! `kollus-archive restore`: produces every archived record back to the configured brokers'
//! topics, with its key, headers, value and timestamp, in its partition where the topic has it.
//! Records archived twice (a crash of `dump`), or in two epochs (a restored cluster archived
//! again), are produced once, by envelope id; epochs in order, so each partition's records keep
//! the order they had. An empty archive is said to be so, and touches no broker. Running it
//! again produces the records again, which the workers skip as already applied (they keep every
//! envelope id they applied): nothing is applied twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::FutureRecord;

use crate::metrics::Metrics;
use kollus_common::archive::{entries, segment, Archive};
use kollus_common::kafka;
use kollus_common::settings::KafkaSettings;

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Summary {
    /// The archive holds nothing: the brokers were not contacted.
    pub empty: bool,
    pub produced: u64,
    pub repeats_skipped: u64,
}

/// Records awaiting Kafka's acknowledgement at most.
const IN_FLIGHT: usize = 10_000;

pub async fn restore(
    archive: &Archive,
    kafka_settings: &KafkaSettings,
    metrics: Option<&Metrics>,
) -> anyhow::Result<Summary> {
    let entries = entries(archive).await?;
    if entries.is_empty() {
        return Ok(Summary {
            empty: true,
            ..Summary::default()
        });
    }
    let mut topics: Vec<&str> = entries.iter().map(|e| e.topic.as_str()).collect();
    topics.sort_unstable();
    topics.dedup();
    kafka::ensure_topics(kafka_settings, &topics).await?;
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
    let mut summary = Summary::default();
    let mut seen: HashSet<String> = HashSet::new();
    let mut in_flight = VecDeque::with_capacity(IN_FLIGHT);
    for entry in &entries {
        let bytes = archive.get(&entry.segment).await?;
        for r in segment::read(entry, &bytes)? {
            progress.add(1);
            if !seen.insert(r.identity()) {
                summary.repeats_skipped += 1;
                continue;
            }
            let key = r.key.as_ref().map(|k| k.to_vec()).transpose()?;
            let value = r.value.as_ref().map(|v| v.to_vec()).transpose()?;
            let header_values: Vec<(String, Option<Vec<u8>>)> = r
                .headers
                .iter()
                .map(|h| {
                    Ok((
                        h.key.clone(),
                        h.value.as_ref().map(|v| v.to_vec()).transpose()?,
                    ))
                })
                .collect::<anyhow::Result<_>>()?;
            let headers = header_values
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
            if let Some(ts) = r.timestamp {
                record = record.timestamp(ts);
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
    Ok(summary)
}

async fn await_delivery(d: rdkafka::producer::DeliveryFuture) -> anyhow::Result<()> {
    match d.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(anyhow::anyhow!("Kafka did not take a restored record: {e}")),
        Err(_) => Err(anyhow::anyhow!("the producer went away")),
    }
}
