//! Kafka plumbing shared by the services: a durable producer, topic creation, and a consumer
//! that hands out batches and stores offsets only when told to (after the database committed).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::settings::KafkaSettings;

fn base_config(brokers: &str, client_id: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", brokers)
        .set("client.id", client_id)
        // librdkafka logs through its own channel; only warnings and worse are interesting.
        .set("log_level", "4");
    c
}

/// A producer for records that must not be lost or doubled by the producer itself:
/// `acks=all` and idempotence (ordered, deduplicated retries per partition).
pub fn durable_producer(
    settings: &KafkaSettings,
    client_id: &str,
    message_timeout: Duration,
) -> anyhow::Result<FutureProducer> {
    base_config(&settings.brokers, client_id)
        .set("acks", "all")
        .set("enable.idempotence", "true")
        // A short linger lets concurrent requests share a produce request without adding
        // noticeable latency to any one of them. 5 ms beat 2 ms on bench/ingest.sh at 256
        // connections: fewer, larger produce requests cost the broker and librdkafka less per
        // record, and the p99 fell with the queueing (README "Benchmarks").
        .set("linger.ms", "5")
        // Envelopes are repetitive JSON (the raw form beside its parsed payload): lz4 shrinks
        // the seed report's 4.7 kB envelope to 1.6 kB (more across a batch) for Kafka's disks
        // and network at little CPU, and lifted ingest's acknowledged rate by about a quarter
        // on bench/ingest.sh.
        .set("compression.type", "lz4")
        .set(
            "message.timeout.ms",
            message_timeout.as_millis().to_string(),
        )
        .create()
        .context("creating Kafka producer")
}

/// Creates the topics that do not exist yet. Safe to call from every instance at start-up.
pub async fn ensure_topics(settings: &KafkaSettings, topics: &[&str]) -> anyhow::Result<()> {
    let admin: AdminClient<DefaultClientContext> = base_config(&settings.brokers, "kollus-admin")
        .create()
        .context("creating Kafka admin client")?;
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(t, settings.topic_partitions, TopicReplication::Fixed(1))
                // The topics are the system of record: every table is rebuilt by replaying them
                // (`--rebuild`), so the broker must never delete a record by age or size.
                .set("retention.ms", "-1")
                .set("retention.bytes", "-1")
        })
        .collect();
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .create_topics(&new, &opts)
        .await
        .with_context(|| format!("creating topics {topics:?} on {}", settings.brokers))?;
    for result in results {
        match result {
            Ok(topic) => tracing::info!(%topic, "created Kafka topic"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// A consumer-group member that never stores an offset by itself: the caller stores offsets
/// (see [`store_offsets`]) after the records are applied, and librdkafka commits stored offsets
/// in the background. A crash between applying and committing replays those records, which
/// the workers apply idempotently.
pub fn consumer(
    settings: &KafkaSettings,
    group_id: &str,
    topic: &str,
) -> anyhow::Result<StreamConsumer> {
    let consumer: StreamConsumer = base_config(&settings.brokers, group_id)
        .set("group.id", group_id)
        .set(
            "session.timeout.ms",
            settings.session_timeout_ms.to_string(),
        )
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest")
        // librdkafka lets the broker hold a fetch up to 500 ms for more data; the local broker
        // holds it that long even when records are waiting. 50 ms keeps the lag low at the cost
        // of a few more fetch requests while idle.
        .set("fetch.wait.max.ms", "50")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating Kafka consumer")?;
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("subscribing to {topic}"))?;
    Ok(consumer)
}

/// Moves `group_id`'s committed offsets on `topic` back to the first record still held on each
/// partition, so the group's next member replays the whole topic. Returns how many records that
/// is. Refuses while the group has members: they would commit over the rewind and keep their
/// positions. Blocking (librdkafka's synchronous calls): run it off the async runtime.
pub fn rewind_group(settings: &KafkaSettings, group_id: &str, topic: &str) -> anyhow::Result<i64> {
    use rdkafka::consumer::{BaseConsumer, CommitMode};
    use rdkafka::{Offset, TopicPartitionList};
    let timeout = Duration::from_secs(10);
    let consumer: BaseConsumer = base_config(&settings.brokers, group_id)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating Kafka consumer for the rewind")?;
    let groups = consumer
        .fetch_group_list(Some(group_id), timeout)
        .with_context(|| format!("describing consumer group {group_id}"))?;
    if let Some(group) = groups.groups().iter().find(|g| g.name() == group_id) {
        let members = group.members().len();
        anyhow::ensure!(
            members == 0,
            "consumer group {group_id} has {members} member(s) (state {}): stop every instance \
             before a rebuild",
            group.state()
        );
    }
    let metadata = consumer
        .fetch_metadata(Some(topic), timeout)
        .with_context(|| format!("reading the partitions of {topic}"))?;
    let partitions = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .map(|t| t.partitions().iter().map(|p| p.id()).collect::<Vec<_>>())
        .unwrap_or_default();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} has no partitions");
    let mut start = TopicPartitionList::new();
    let mut records = 0;
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .with_context(|| format!("reading the offsets of {topic}/{partition}"))?;
        records += high - low;
        start.add_partition_offset(topic, partition, Offset::Offset(low))?;
    }
    consumer
        .commit(&start, CommitMode::Sync)
        .with_context(|| format!("rewinding consumer group {group_id} on {topic}"))?;
    Ok(records)
}

/// Waits for at least one record, then takes whatever else arrives within `linger`, up to `max`.
pub async fn next_batch(
    consumer: &StreamConsumer,
    max: usize,
    linger: Duration,
) -> Result<Vec<OwnedMessage>, KafkaError> {
    let first = consumer.recv().await?.detach();
    let mut batch = Vec::with_capacity(max.min(1024));
    batch.push(first);
    let deadline = tokio::time::Instant::now() + linger;
    while batch.len() < max {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => batch.push(m.detach()),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "Kafka error while filling a batch");
                break;
            }
            Err(_elapsed) => break,
        }
    }
    Ok(batch)
}

/// Marks every record of `batch` as done, so the next commit moves past it.
pub fn store_offsets(consumer: &StreamConsumer, batch: &[OwnedMessage]) -> anyhow::Result<()> {
    let mut last: HashMap<(&str, i32), i64> = HashMap::new();
    for m in batch {
        let e = last.entry((m.topic(), m.partition())).or_insert(m.offset());
        *e = (*e).max(m.offset());
    }
    for ((topic, partition), offset) in last {
        consumer
            .store_offset(topic, partition, offset)
            .with_context(|| format!("storing offset {offset} of {topic}/{partition}"))?;
    }
    Ok(())
}

/// Record headers as written by the services: kind, schema version, envelope id.
pub fn headers(pairs: &[(&str, &str)]) -> OwnedHeaders {
    pairs.iter().fold(OwnedHeaders::new(), |h, (key, value)| {
        h.insert(Header {
            key,
            value: Some(*value),
        })
    })
}

/// Sends one record and waits until Kafka acknowledged it (or `timeout` passed).
pub async fn send(
    producer: &FutureProducer,
    topic: &str,
    key: &str,
    payload: &[u8],
    headers: OwnedHeaders,
    timeout: Duration,
) -> Result<(), KafkaError> {
    let record = FutureRecord::to(topic)
        .key(key)
        .payload(payload)
        .headers(headers);
    producer
        .send(record, timeout)
        .await
        .map(|_delivery| ())
        .map_err(|(e, _msg)| e)
}
