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
    let retention_ms = settings.retention_ms().to_string();
    let new: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|t| {
            NewTopic::new(t, settings.topic_partitions, TopicReplication::Fixed(1))
                // Records are deleted by age only (`KAFKA_RETENTION_DAYS`), never by size: the
                // archive is the long tier, and it must get `KAFKA_RETENTION_DAYS` to catch up
                // whatever happens to it.
                .set("retention.ms", &retention_ms)
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
            Ok(topic) => tracing::info!(
                %topic,
                retention_ms = settings.retention_ms(),
                "created Kafka topic"
            ),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// How a topic deletes records by age, as its brokers report its configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeRetention {
    /// `retention.ms`: a log segment whose newest record's timestamp is older than this is
    /// deleted at the broker's next retention check (`log.retention.check.interval.ms`, 5 min
    /// by default). Negative: never by age.
    pub retention_ms: i64,
    /// `message.timestamp.type=LogAppendTime`: the broker stamps each record as it arrives,
    /// whatever timestamp its producer gave, so age counts from arrival.
    pub log_append_time: bool,
}

impl AgeRetention {
    /// Whether a record produced at `now_ms` with the timestamp `timestamp_ms` (both ms since
    /// the Unix epoch) is past retention already: the broker deletes it at its next check.
    pub fn past(&self, timestamp_ms: i64, now_ms: i64) -> bool {
        !self.log_append_time
            && self.retention_ms >= 0
            && now_ms.saturating_sub(timestamp_ms) > self.retention_ms
    }
}

/// Per topic, how it deletes records by age ([`AgeRetention`]), read from the brokers with
/// DescribeConfigs: a topic that exists keeps its own configuration, whatever
/// `KAFKA_RETENTION_DAYS` says now. The outer error: the brokers did not answer; a topic's
/// own: why its configuration could not be read.
pub async fn age_retention(
    settings: &KafkaSettings,
    topics: &[&str],
) -> anyhow::Result<Vec<(String, Result<AgeRetention, String>)>> {
    use rdkafka::admin::{OwnedResourceSpecifier, ResourceSpecifier};
    let admin: AdminClient<DefaultClientContext> = base_config(&settings.brokers, "kollus-admin")
        .create()
        .context("creating Kafka admin client")?;
    let resources: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let results = admin
        .describe_configs(&resources, &opts)
        .await
        .with_context(|| format!("describing topics {topics:?} on {}", settings.brokers))?;
    Ok(topics
        .iter()
        .enumerate()
        .map(|(i, topic)| {
            // librdkafka answers in the order asked; a configuration is matched by its name all
            // the same, an error (which names nothing) by its place.
            let named = results.iter().find_map(|r| match r {
                Ok(c) if c.specifier == OwnedResourceSpecifier::Topic((*topic).to_owned()) => {
                    Some(Ok(c))
                }
                _ => None,
            });
            let result = named.unwrap_or_else(|| match results.get(i) {
                Some(Err(code)) => Err(format!("describing {topic}: {code}")),
                _ => Err(format!("the brokers did not describe {topic}")),
            });
            let retention = result.and_then(|config| {
                let value = |name: &str| {
                    config
                        .get(name)
                        .and_then(|e| e.value.clone())
                        .ok_or_else(|| format!("{topic} reports no {name}"))
                };
                let retention_ms = value("retention.ms")?
                    .parse::<i64>()
                    .map_err(|e| format!("{topic}: retention.ms is not a number: {e}"))?;
                // Absent from an old broker's answer: CreateTime, Kafka's default.
                let log_append_time = value("message.timestamp.type")
                    .is_ok_and(|t| t.eq_ignore_ascii_case("LogAppendTime"));
                Ok(AgeRetention {
                    retention_ms,
                    log_append_time,
                })
            });
            ((*topic).to_owned(), retention)
        })
        .collect())
}

/// What every consumer-group member of ours sets: the group, its session timeout, and where a
/// new group starts (the beginning: nothing is skipped).
fn group_member_config(settings: &KafkaSettings, group_id: &str) -> ClientConfig {
    let mut c = base_config(&settings.brokers, group_id);
    c.set("group.id", group_id)
        .set(
            "session.timeout.ms",
            settings.session_timeout_ms.to_string(),
        )
        .set("auto.offset.reset", "earliest")
        // librdkafka lets the broker hold a fetch up to 500 ms for more data; the local broker
        // holds it that long even when records are waiting. 50 ms keeps the lag low at the cost
        // of a few more fetch requests while idle.
        .set("fetch.wait.max.ms", "50");
    c
}

/// The partitions `topic` has, by id (none when the broker does not know the topic). A
/// blocking call to the broker.
pub fn partitions<C: rdkafka::consumer::ConsumerContext, K: Consumer<C>>(
    consumer: &K,
    topic: &str,
) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("metadata of {topic}"))?;
    Ok(metadata
        .topics()
        .iter()
        .filter(|t| t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect())
}

/// A consumer-group member that never stores an offset by itself: the caller stores offsets
/// (see [`store_offsets`]) after the records are applied, and librdkafka commits stored offsets
/// in the background. A crash between applying and committing replays those records, which
/// the workers apply idempotently.
pub fn consumer(
    settings: &KafkaSettings,
    group_id: &str,
    topic: &str,
) -> anyhow::Result<WorkerConsumer> {
    let consumer: WorkerConsumer = group_member_config(settings, group_id)
        .set("enable.auto.commit", "true")
        .set("auto.commit.interval.ms", "1000")
        .set("enable.auto.offset.store", "false")
        .set("enable.partition.eof", "false")
        .create()
        .context("creating Kafka consumer")?;
    consumer
        .subscribe(&[topic])
        .with_context(|| format!("subscribing to {topic}"))?;
    Ok(consumer)
}

/// The workers' consumer.
pub type WorkerConsumer = StreamConsumer;

/// Whether `error` is librdkafka telling that a partition's end was reached
/// (`enable.partition.eof`), not a failure. It comes in two shapes: on the message stream as
/// [`KafkaError::PartitionEOF`] (with the partition), and through the client's error callback
/// as [`KafkaError::Global`] with the code `PartitionEOF`.
pub fn is_partition_eof(error: &KafkaError) -> bool {
    matches!(
        error,
        KafkaError::PartitionEOF(_) | KafkaError::Global(RDKafkaErrorCode::PartitionEOF)
    )
}

/// The archive consumer's context: librdkafka reports reaching the end of a partition as an
/// error event, which the default context logs at ERROR; for the archive it is the signal it
/// asked for (`enable.partition.eof`), so it is not logged.
pub struct QuietEof;

impl rdkafka::ClientContext for QuietEof {
    fn error(&self, error: KafkaError, reason: &str) {
        if !is_partition_eof(&error) {
            tracing::error!(%error, reason, "librdkafka error");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for QuietEof {}

/// The archive's consumer.
pub type ArchiveConsumer = StreamConsumer<QuietEof>;

/// A consumer-group member for the archive: it commits offsets itself, synchronously, only once
/// the segment holding them is durable, and reports the end of each partition (`--until-end`).
/// Subscribed to `topics` (none: the caller assigns partitions itself).
pub fn archive_consumer(
    settings: &KafkaSettings,
    group_id: &str,
    topics: &[&str],
) -> anyhow::Result<ArchiveConsumer> {
    let consumer: ArchiveConsumer = group_member_config(settings, group_id)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create_with_context(QuietEof)
        .context("creating Kafka consumer")?;
    if !topics.is_empty() {
        consumer
            .subscribe(topics)
            .with_context(|| format!("subscribing to {topics:?}"))?;
    }
    Ok(consumer)
}

/// Owns a worker's consumer and closes it off the async threads. librdkafka's close (leave the
/// group, commit) runs in the destructor and waits on the broker; with the broker gone it can
/// wait indefinitely (seen: a cancelled worker task hung its runtime for minutes). The last
/// handle is therefore dropped on a thread of its own: nothing async waits for it, and a process
/// that exits does not either.
pub struct OwnedConsumer(Option<std::sync::Arc<WorkerConsumer>>);

impl OwnedConsumer {
    pub fn new(consumer: WorkerConsumer) -> Self {
        Self(Some(std::sync::Arc::new(consumer)))
    }
}

impl std::ops::Deref for OwnedConsumer {
    type Target = std::sync::Arc<WorkerConsumer>;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("present until dropped")
    }
}

impl Drop for OwnedConsumer {
    fn drop(&mut self) {
        if let Some(consumer) = self.0.take() {
            let closing = std::thread::Builder::new()
                .name("consumer-close".into())
                .spawn(move || drop(consumer));
            if let Err(e) = closing {
                tracing::warn!(error = %e, "no thread to close the consumer on; it is leaked");
            }
        }
    }
}

/// Records on this consumer's partitions not consumed yet: per assigned partition, the high
/// watermark that the last fetch response reported (librdkafka keeps it; asking costs no
/// request) minus the consumer's position. Read while the worker is stuck too: librdkafka's
/// fetcher keeps fetching (and updating the watermark) while the application applies nothing.
/// It is never above the truth: a broker that reports a lower high watermark than Apache Kafka
/// does (tansu, which the tests used before Apache Kafka, reported the last batch's base offset
/// + 1) can only make it smaller.
pub fn cached_lag(consumer: &WorkerConsumer) -> Option<i64> {
    use rdkafka::bindings::{rd_kafka_get_watermark_offsets, rd_kafka_resp_err_t};
    let positions = consumer.position().ok()?;
    let mut lag = 0;
    for p in positions.elements() {
        let topic = std::ffi::CString::new(p.topic()).ok()?;
        let (mut low, mut high) = (-1i64, -1i64);
        // SAFETY: the client pointer is valid while `consumer` is borrowed; librdkafka only
        // reads the NUL-terminated topic name and writes the two offsets, under its own locks.
        let err = unsafe {
            rd_kafka_get_watermark_offsets(
                consumer.client().native_ptr(),
                topic.as_ptr(),
                p.partition(),
                &mut low,
                &mut high,
            )
        };
        if err != rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR || high < 0 {
            continue; // Not fetched yet: nothing known.
        }
        let position = match p.offset() {
            rdkafka::Offset::Offset(o) => o,
            // Nothing consumed yet on this partition: everything from its start is lag.
            _ => low.max(0),
        };
        lag += (high - position).max(0);
    }
    Some(lag)
}

/// How long a one-off group operation waits for the group's coordinator (see [`with_coordinator`]).
const COORDINATOR_PATIENCE: Duration = Duration::from_secs(60);

/// Runs `op` (a blocking group operation: commit, committed offsets, describe group) again
/// while the group's coordinator is not ready, up to [`COORDINATOR_PATIENCE`]. Apache Kafka
/// answers NotCoordinator, CoordinatorLoadInProgress or CoordinatorNotAvailable for seconds
/// after a broker starts (its `__consumer_offsets` partitions loading) or when a coordinator
/// moves; librdkafka waits this out inside a group member, but not for a one-off call, which
/// then failed a rebuild run right after a new cluster came up.
fn with_coordinator<T>(
    what: &str,
    mut op: impl FnMut() -> rdkafka::error::KafkaResult<T>,
) -> rdkafka::error::KafkaResult<T> {
    let deadline = std::time::Instant::now() + COORDINATOR_PATIENCE;
    let mut wait = Duration::from_millis(100);
    loop {
        match op() {
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::NotCoordinator
                            | RDKafkaErrorCode::CoordinatorLoadInProgress
                            | RDKafkaErrorCode::CoordinatorNotAvailable
                    )
                ) && std::time::Instant::now() + wait < deadline =>
            {
                tracing::info!(error = %e, "{what}: the group coordinator is not ready yet; retrying");
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(2));
            }
            other => return other,
        }
    }
}

/// Moves `group_id`'s committed offsets on `topic` back to where a replay starts on each
/// partition: `start(partition, earliest)` (the first record still held: `earliest`; after an
/// archive replay, the first offset the archive does not hold), never below the earliest.
/// Returns about how many records the group's next member replays. Refuses while the group has
/// members: they would commit over the rewind and keep their positions. Blocking
/// (librdkafka's synchronous calls): run it off the async runtime.
pub fn rewind_group(
    settings: &KafkaSettings,
    group_id: &str,
    topic: &str,
    start: impl Fn(i32, i64) -> anyhow::Result<i64>,
) -> anyhow::Result<i64> {
    use rdkafka::consumer::{BaseConsumer, CommitMode};
    use rdkafka::{Offset, TopicPartitionList};
    let timeout = Duration::from_secs(10);
    let consumer: BaseConsumer = base_config(&settings.brokers, group_id)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating Kafka consumer for the rewind")?;
    let groups = with_coordinator("describing the group", || {
        consumer.fetch_group_list(Some(group_id), timeout)
    })
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
    let mut starts = TopicPartitionList::new();
    let mut records = 0;
    for partition in partitions {
        let (low, high) = consumer
            .fetch_watermarks(topic, partition, timeout)
            .with_context(|| format!("reading the offsets of {topic}/{partition}"))?;
        let from = start(partition, low)?.max(low);
        records += (high - from).max(0);
        starts.add_partition_offset(topic, partition, Offset::Offset(from))?;
    }
    with_coordinator("rewinding the group", || {
        consumer.commit(&starts, CommitMode::Sync)
    })
    .with_context(|| format!("rewinding consumer group {group_id} on {topic}"))?;
    Ok(records)
}

/// Waits for at least one record, then takes whatever else arrives within `linger`, up to `max`.
pub async fn next_batch(
    consumer: &WorkerConsumer,
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
pub fn store_offsets(consumer: &WorkerConsumer, batch: &[OwnedMessage]) -> anyhow::Result<()> {
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

/// How long a service gives the archiver to join its group before warning: the services of one
/// deployment start together, and the archiver's join takes a few seconds.
pub const ARCHIVE_GRACE: Duration = Duration::from_secs(90);

/// What [`warn_if_nothing_archives`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveWatch {
    /// Retention is infinite: the topics forget nothing, no archive is needed to keep records.
    TopicsKeepEverything,
    /// The archiver's group has a member.
    Archiving,
    /// Nobody archives: the WARN was logged.
    Warned,
    /// The group could not be described (broker unreachable); logged at DEBUG only.
    Unknown,
}

/// Logs one WARN when the topics forget (finite `KAFKA_RETENTION_DAYS`) and no archiver runs:
/// records older than the retention would then exist nowhere. An archiver is seen when the
/// continuous archiver's consumer group (`ARCHIVE_GROUP_ID`) has a member (`kollus-archive
/// dump` without `--until-end` subscribes in it for as long as it runs; one-off dumps use groups
/// of their own), or has committed offsets on the topics (the archiver commits where it starts
/// as soon as it starts, see [`mark_archiver_started`]; a broker that lists no groups, as
/// tansu did, is answered by this). An archiver that stopped later is the alerts' job
/// (`KollusTargetDown`, `KollusArchiveBehindRetention`). Checked every 5 s until `grace` has passed; silent as soon as a member is seen,
/// or when retention is infinite. Spawn it beside the service ([`ARCHIVE_GRACE`]): it never
/// fails the service.
pub async fn warn_if_nothing_archives(settings: KafkaSettings, grace: Duration) -> ArchiveWatch {
    if settings.retention_days < 0 {
        return ArchiveWatch::TopicsKeepEverything;
    }
    let started = tokio::time::Instant::now();
    let last_error = loop {
        let s = settings.clone();
        let seen = tokio::task::spawn_blocking(move || archiver_seen(&s))
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r);
        let error = match seen {
            Ok(true) => return ArchiveWatch::Archiving,
            Ok(_) => None,
            Err(e) => Some(format!("{e:#}")),
        };
        if started.elapsed() >= grace {
            break error;
        }
        tokio::time::sleep(Duration::from_secs(5).min(grace)).await;
    };
    match last_error {
        None => {
            tracing::warn!(
                retention_days = settings.retention_days,
                archive_group = settings.archive_group_id,
                "the topics keep records for KAFKA_RETENTION_DAYS and no archive is running (its \
                 consumer group has no member): older records will exist nowhere. Run \
                 `kollus-archive dump --to DIR` (README \"Your data\"), or set KAFKA_RETENTION_DAYS=-1"
            );
            ArchiveWatch::Warned
        }
        Some(error) => {
            tracing::debug!(
                error,
                "could not tell whether an archive is running (consumer group not described)"
            );
            ArchiveWatch::Unknown
        }
    }
}

/// Whether the continuous archiver's group has a member, or committed offsets on any partition
/// of the topics. Blocking.
fn archiver_seen(settings: &KafkaSettings) -> anyhow::Result<bool> {
    if group_members(settings, &settings.archive_group_id)? > 0 {
        return Ok(true);
    }
    Ok(!committed(settings, &settings.archive_group_id, &settings.topics())?.is_empty())
}

/// The offsets `group_id` has committed on `topics`' partitions: (topic, partition, offset), for
/// the partitions that have one. Blocking.
pub fn committed(
    settings: &KafkaSettings,
    group_id: &str,
    topics: &[&str],
) -> anyhow::Result<Vec<(String, i32, i64)>> {
    use rdkafka::consumer::BaseConsumer;
    use rdkafka::{Offset, TopicPartitionList};
    let client: BaseConsumer = base_config(&settings.brokers, "kollus-archive-watch")
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a Kafka client to read committed offsets")?;
    let mut tpl = TopicPartitionList::new();
    for topic in topics {
        for p in partitions(&client, topic)? {
            tpl.add_partition(topic, p);
        }
    }
    if tpl.count() == 0 {
        return Ok(Vec::new());
    }
    let committed = with_coordinator("reading committed offsets", || {
        client.committed_offsets(tpl.clone(), Duration::from_secs(10))
    })
    .with_context(|| format!("reading the offsets consumer group {group_id} committed"))?;
    Ok(committed
        .elements()
        .iter()
        .filter_map(|e| match e.offset() {
            Offset::Offset(o) => Some((e.topic().to_owned(), e.partition(), o)),
            _ => None,
        })
        .collect())
}

/// Commits, for every partition of `topics` where `group_id` has no committed offset yet, the
/// partition's earliest offset: where the group would start anyway (`auto.offset.reset` is
/// `earliest`), so nothing is skipped, and the group now says an archiver started on this
/// cluster ([`warn_if_nothing_archives`]). Run before the group's member joins. Blocking.
pub fn mark_archiver_started(
    settings: &KafkaSettings,
    group_id: &str,
    topics: &[&str],
) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, CommitMode};
    use rdkafka::{Offset, TopicPartitionList};
    let have: std::collections::HashSet<(String, i32)> = committed(settings, group_id, topics)?
        .into_iter()
        .map(|(t, p, _)| (t, p))
        .collect();
    let client: BaseConsumer = base_config(&settings.brokers, group_id)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating a Kafka client to commit start offsets")?;
    let mut start = TopicPartitionList::new();
    for topic in topics {
        for p in partitions(&client, topic)? {
            if have.contains(&((*topic).to_owned(), p)) {
                continue;
            }
            let (low, _) = client
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .with_context(|| format!("reading the offsets of {topic}/{p}"))?;
            start.add_partition_offset(topic, p, Offset::Offset(low))?;
        }
    }
    if start.count() > 0 {
        with_coordinator("committing start offsets", || {
            client.commit(&start, CommitMode::Sync)
        })
        .with_context(|| format!("committing start offsets for group {group_id}"))?;
    }
    Ok(())
}

/// How many members consumer group `group_id` has now (0 when it does not exist). Blocking.
pub fn group_members(settings: &KafkaSettings, group_id: &str) -> anyhow::Result<usize> {
    use rdkafka::consumer::BaseConsumer;
    // A client only asks about the group: it never subscribes, so it never joins it. Its
    // group.id is the group's (as for the rewind).
    let client: BaseConsumer = base_config(&settings.brokers, "kollus-archive-watch")
        .set("group.id", group_id)
        .create()
        .context("creating a Kafka client to describe a consumer group")?;
    let groups = with_coordinator("describing the group", || {
        client.fetch_group_list(Some(group_id), Duration::from_secs(10))
    })
    .with_context(|| format!("describing consumer group {group_id}"))?;
    Ok(groups
        .groups()
        .iter()
        .filter(|g| g.name() == group_id)
        .map(|g| g.members().len())
        .sum())
}

#[cfg(test)]
mod tests {
    use super::AgeRetention;

    #[test]
    fn a_record_is_past_retention_only_when_its_own_timestamp_counts_and_is_older() {
        const DAY: i64 = 86_400_000;
        let now = 1_800_000_000_000;
        let day = AgeRetention {
            retention_ms: DAY,
            log_append_time: false,
        };
        assert!(day.past(now - 30 * DAY, now));
        assert!(day.past(now - DAY - 1, now));
        assert!(!day.past(now - DAY, now));
        assert!(!day.past(now + 60_000, now), "a clock ahead is not old");
        assert!(day.past(i64::MIN, i64::MAX), "no overflow at the extremes");
        let forever = AgeRetention {
            retention_ms: -1,
            ..day
        };
        assert!(!forever.past(0, now));
        let stamped = AgeRetention {
            log_append_time: true,
            ..day
        };
        assert!(!stamped.past(0, now), "the broker stamps arrivals itself");
    }
}
