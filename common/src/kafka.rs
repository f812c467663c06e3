//! Kafka plumbing shared by the services: a durable producer, topic creation, and a consumer
//! that hands out batches and stores offsets only when told to (after the database committed).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, ResourceSpecifier, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::types::RDKafkaErrorCode;

use crate::backoff::Backoff;
use crate::settings::{GroupProtocol, KafkaSettings};

/// The configuration every Kafka client of the services starts from: `settings`' brokers and
/// their security (`KAFKA_SECURITY_PROTOCOL`, SASL, TLS files). Every client reaches the
/// brokers through here, so none of them forgets the security settings. What
/// [`KafkaSettings::check_security`] refuses is checked at start-up; rdkafka's `Debug` of a
/// config hides `sasl.password`.
pub fn base_config(settings: &KafkaSettings, client_id: &str) -> ClientConfig {
    use secrecy::ExposeSecret as _;
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.brokers)
        .set("client.id", client_id)
        // librdkafka logs through its own channel; only warnings and worse are interesting.
        .set("log_level", "4")
        .set("security.protocol", settings.security_protocol.as_str());
    if settings.security_protocol.sasl() {
        if let Some(m) = settings.sasl_mechanism {
            c.set("sasl.mechanism", m.as_str());
        }
        if let Some(u) = &settings.sasl_username {
            c.set("sasl.username", u);
        }
        if let Some(p) = &settings.sasl_password {
            c.set("sasl.password", p.expose_secret());
        }
    }
    if settings.security_protocol.tls() {
        let files = [
            ("ssl.ca.location", &settings.ssl_ca_location),
            (
                "ssl.certificate.location",
                &settings.ssl_certificate_location,
            ),
            ("ssl.key.location", &settings.ssl_key_location),
        ];
        for (key, path) in files {
            if let Some(path) = path {
                c.set(key, path.to_string_lossy());
            }
        }
    }
    c
}

/// A producer for records that must not be lost or doubled by the producer itself:
/// `acks=all` and idempotence (ordered, deduplicated retries per partition).
pub fn durable_producer(
    settings: &KafkaSettings,
    client_id: &str,
    message_timeout: Duration,
) -> anyhow::Result<FutureProducer> {
    base_config(settings, client_id)
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

/// `segment.ms` of the topics we create: one day. Kafka deletes whole segments, never the one
/// still being written, and rolls a segment at `segment.bytes` (1 GiB) or `segment.ms` (7 days
/// by its default): on a quiet topic a record would outlive its retention by up to a week. With
/// one day, a deleted record is gone within `KAFKA_RETENTION_DAYS` plus a day.
pub const SEGMENT_MS: i64 = 24 * 3600 * 1000;

/// How long [`ensure_topics`] waits for enough brokers (`KAFKA_REPLICATION_FACTOR`) to create
/// missing topics before it gives up: long enough for the brokers of one deployment to come up
/// beside the services, short enough that a service does not wait unnoticed (it logs a WARN at
/// every retry, and fails naming the reason at the end).
pub const BROKERS_WAIT: Duration = Duration::from_secs(300);

/// What [`ensure_topics`] found and did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicReport {
    /// The topics it created.
    pub created: Vec<String>,
    /// The settings of topics that already existed and differ from what it would create (each
    /// logged at WARN, and 1 on [`TOPIC_CONFIG_MISMATCH`]). None is altered.
    pub mismatches: Vec<TopicMismatch>,
    /// Existing topics not wholly checked (each logged at WARN): the broker did not describe
    /// their configuration (their partitions and copies were checked), or their partitions were
    /// not in its metadata yet (nothing was checked).
    pub unchecked: Vec<String>,
}

/// One setting of an existing topic that differs from what [`ensure_topics`] would create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMismatch {
    pub topic: String,
    /// `partitions` (fewer than ours), `replication.factor`, or a topic configuration name
    /// (`min.insync.replicas`, `retention.ms`, `retention.bytes`, `segment.ms`).
    pub setting: &'static str,
    pub found: String,
    pub wanted: String,
}

/// Why [`ensure_topics`] did not create topics: fewer brokers are alive than
/// `KAFKA_REPLICATION_FACTOR`. Kafka refuses such a topic (each copy of a partition needs a
/// broker of its own); creating it with fewer copies would silently give less durability than
/// asked. Callers find it with `anyhow::Error::downcast_ref`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{alive} Kafka broker(s) alive, fewer than KAFKA_REPLICATION_FACTOR={replication_factor}: \
     topics {missing:?} not created (each copy of a partition needs a broker of its own)"
)]
pub struct TooFewBrokers {
    pub alive: usize,
    pub replication_factor: i32,
    pub missing: Vec<String>,
}

/// `kollus_kafka_topic_config_mismatch{topic,setting}`: 1 while a setting of an existing topic
/// differs from what the services would create it with, 0 once seen to match. Set wherever
/// [`ensure_topics`] runs (every service's start-up), in the registry every service's
/// `/metrics` serves beside its own ([`crate::metrics::process_registry`]); so a difference
/// that a WARN at start-up reported stays visible to alerts. It is not re-read until the next
/// start.
pub const TOPIC_CONFIG_MISMATCH: &str = "kollus_kafka_topic_config_mismatch";

fn topic_config_mismatch() -> &'static prometheus::IntGaugeVec {
    static GAUGE: std::sync::OnceLock<prometheus::IntGaugeVec> = std::sync::OnceLock::new();
    GAUGE.get_or_init(|| {
        crate::metrics::gauge_vec(
            crate::metrics::process_registry(),
            TOPIC_CONFIG_MISMATCH,
            "1 while a setting of an existing Kafka topic differs from what the services would \
             create it with (KAFKA_* settings), 0 once seen to match; read at start-up, never \
             altered automatically.",
            &["topic", "setting"],
        )
    })
}

/// The settings [`ensure_topics`] creates a topic with and checks on an existing one, besides
/// its partitions and replicas: one list, so what is checked is what is created.
fn wanted_config(settings: &KafkaSettings, topic: &str) -> [(&'static str, String); 4] {
    [
        // Records are deleted by age only (`KAFKA_RETENTION_DAYS`), never by size: the archive
        // is the long tier, and it must get `KAFKA_RETENTION_DAYS` to catch up whatever
        // happens to it. The erasure topic keeps its records forever
        // ([`KafkaSettings::retention_ms_of`]).
        ("retention.ms", settings.retention_ms_of(topic).to_string()),
        ("retention.bytes", "-1".to_owned()),
        ("segment.ms", SEGMENT_MS.to_string()),
        // Our producers ask acks=all: a write is acknowledged once this many copies hold it.
        (
            "min.insync.replicas",
            settings.min_insync_replicas().to_string(),
        ),
    ]
}

/// Creates the topics that do not exist yet, with `KAFKA_TOPIC_PARTITIONS` partitions of
/// `KAFKA_REPLICATION_FACTOR` copies, `min.insync.replicas`, `retention.ms`, `retention.bytes`
/// and `segment.ms` ([`SEGMENT_MS`]); reports (WARN, metric, return value) every existing
/// topic whose settings differ, and alters none: a topic's partitions decide which records keep
/// their order, and its copies are moved by a reassignment, both an operator's decision. Safe
/// to call from every instance at start-up.
///
/// Topics are created only while at least `KAFKA_REPLICATION_FACTOR` brokers are alive;
/// otherwise it logs a WARN saying so and retries with backoff, for up to [`BROKERS_WAIT`],
/// then fails with [`TooFewBrokers`]. Topics that all exist are checked without waiting, so a
/// restart during a broker's outage is not held up. Refuses settings that
/// [`KafkaSettings::check`] refuses.
pub async fn ensure_topics(
    settings: &KafkaSettings,
    topics: &[&str],
) -> anyhow::Result<TopicReport> {
    ensure_topics_within(settings, topics, BROKERS_WAIT).await
}

/// [`ensure_topics`], waiting at most `wait` for enough brokers. `Duration::ZERO` tries once:
/// for callers that retry on their own (ingest, which serves meanwhile).
pub async fn ensure_topics_within(
    settings: &KafkaSettings,
    topics: &[&str],
    wait: Duration,
) -> anyhow::Result<TopicReport> {
    settings.check().map_err(anyhow::Error::msg)?;
    let admin: Arc<AdminClient<DefaultClientContext>> = Arc::new(
        base_config(settings, "kollus-admin")
            .create()
            .context("creating Kafka admin client")?,
    );
    let deadline = tokio::time::Instant::now() + wait;
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        let error = match ensure_topics_once(&admin, settings, topics).await {
            Ok(report) => return Ok(report),
            Err(e) => e,
        };
        let Some(few) = error.downcast_ref::<TooFewBrokers>() else {
            return Err(explained(settings, error).await);
        };
        if tokio::time::Instant::now() >= deadline {
            return Err(error);
        }
        tracing::warn!(
            alive = few.alive,
            replication_factor = few.replication_factor,
            setting = "KAFKA_REPLICATION_FACTOR",
            missing = ?few.missing,
            retry_in = ?backoff.next_delay(),
            "not creating Kafka topics: fewer brokers are alive than KAFKA_REPLICATION_FACTOR \
             (each copy of a partition needs a broker of its own); waiting for more"
        );
        // At the deadline: one last attempt, then its error.
        let _ = tokio::time::timeout_at(deadline, backoff.wait()).await;
    }
}

/// `error` with librdkafka's reason first, when a client of `settings` hears one (see
/// [`connection_problem`]): "Broker transport failure" alone does not tell a refused password
/// from a certificate not trusted or a broker down.
async fn explained(settings: &KafkaSettings, error: anyhow::Error) -> anyhow::Error {
    let settings = settings.clone();
    let heard =
        tokio::task::spawn_blocking(move || connection_problem(&settings, Duration::from_secs(5)))
            .await
            .ok()
            .flatten();
    match heard {
        Some(reason) => error.context(format!("Kafka connection failed: {reason}")),
        None => error,
    }
}

/// Why a client of `settings` cannot talk to the brokers, in librdkafka's words (a SASL login
/// refused, a TLS handshake failed: never the password), or `None` when it heard nothing
/// within `wait`. An admin client's own log and error events go to a queue nothing polls
/// (rdkafka forwards them to its main queue), so a failed request of one says only "Broker
/// transport failure"; a consumer that joins no group, polled here, hears them. Blocking.
pub fn connection_problem(settings: &KafkaSettings, wait: Duration) -> Option<String> {
    use rdkafka::config::RDKafkaLogLevel;
    use rdkafka::consumer::BaseConsumer;

    #[derive(Default)]
    struct Heard(std::sync::Mutex<Option<String>>);
    impl Heard {
        fn keep(&self, what: String) {
            let mut heard = self.0.lock().unwrap_or_else(|e| e.into_inner());
            heard.get_or_insert(what);
        }
    }
    impl rdkafka::ClientContext for Heard {
        fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
            if matches!(
                level,
                RDKafkaLogLevel::Emerg
                    | RDKafkaLogLevel::Alert
                    | RDKafkaLogLevel::Critical
                    | RDKafkaLogLevel::Error
            ) {
                self.keep(format!("{fac}: {message}"));
            }
        }
        fn error(&self, error: KafkaError, reason: &str) {
            self.keep(format!("{error}: {reason}"));
        }
    }
    impl rdkafka::consumer::ConsumerContext for Heard {}

    let consumer: BaseConsumer<Heard> = base_config(settings, "kollus-connection-check")
        .set("group.id", "kollus-connection-check")
        .create_with_context(Heard::default())
        .ok()?;
    let deadline = std::time::Instant::now() + wait;
    // A metadata request makes it connect; its events are then polled.
    let _ = consumer.fetch_metadata(None, wait / 2);
    loop {
        if let Some(heard) = consumer
            .context()
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
        {
            return Some(heard);
        }
        if std::time::Instant::now() >= deadline {
            return None;
        }
        let _ = consumer.poll(Duration::from_millis(100));
    }
}

/// What the cluster's metadata says: how many brokers are alive, and for each topic the number
/// of copies (replicas) of each of its partitions.
struct ClusterView {
    brokers: usize,
    topics: HashMap<String, Vec<usize>>,
}

/// The metadata of every topic (never of named ones: a metadata request naming a topic may
/// create it on a broker with `auto.create.topics.enable`). librdkafka's call blocks, so it
/// runs off the async threads.
async fn cluster_view(
    admin: &Arc<AdminClient<DefaultClientContext>>,
) -> anyhow::Result<ClusterView> {
    let admin = admin.clone();
    tokio::task::spawn_blocking(move || {
        let metadata = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(10))
            .context("reading the Kafka cluster's metadata")?;
        let topics = metadata
            .topics()
            .iter()
            .filter(|t| {
                t.error()
                    != Some(rdkafka::types::RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART)
            })
            .map(|t| {
                let replicas = t.partitions().iter().map(|p| p.replicas().len()).collect();
                (t.name().to_owned(), replicas)
            })
            .collect();
        Ok(ClusterView {
            brokers: metadata.brokers().len(),
            topics,
        })
    })
    .await
    .context("reading the Kafka cluster's metadata")?
}

async fn ensure_topics_once(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    settings: &KafkaSettings,
    topics: &[&str],
) -> anyhow::Result<TopicReport> {
    let mut view = cluster_view(admin).await?;
    let missing: Vec<&str> = topics
        .iter()
        .copied()
        .filter(|t| !view.topics.contains_key(*t))
        .collect();
    let mut report = TopicReport::default();
    if !missing.is_empty() {
        let rf = settings.replication_factor;
        if view.brokers < usize::try_from(rf).unwrap_or(usize::MAX) {
            return Err(TooFewBrokers {
                alive: view.brokers,
                replication_factor: rf,
                missing: missing.iter().map(|t| (*t).to_owned()).collect(),
            }
            .into());
        }
        let configs: Vec<_> = missing.iter().map(|t| wanted_config(settings, t)).collect();
        let new: Vec<NewTopic<'_>> = missing
            .iter()
            .zip(&configs)
            .map(|(t, config)| {
                config.iter().fold(
                    NewTopic::new(t, settings.topic_partitions, TopicReplication::Fixed(rf)),
                    |topic, (key, value)| topic.set(key, value),
                )
            })
            .collect();
        let opts = AdminOptions::new()
            .operation_timeout(Some(Duration::from_secs(10)))
            .request_timeout(Some(Duration::from_secs(15)));
        let results = admin
            .create_topics(&new, &opts)
            .await
            .with_context(|| format!("creating topics {missing:?} on {}", settings.brokers))?;
        let mut raced = false;
        for result in results {
            match result {
                Ok(topic) => {
                    tracing::info!(
                        %topic,
                        partitions = settings.topic_partitions,
                        replication_factor = rf,
                        min_insync_replicas = settings.min_insync_replicas(),
                        retention_ms = settings.retention_ms_of(&topic),
                        segment_ms = SEGMENT_MS,
                        "created Kafka topic"
                    );
                    report.created.push(topic);
                }
                // Another instance created it meanwhile: checked like any existing topic.
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => raced = true,
                // A broker left (or began its shutdown) between the metadata read and the
                // request: the same as seeing too few, and waited out the same way.
                Err((_, RDKafkaErrorCode::InvalidReplicationFactor)) => {
                    return Err(TooFewBrokers {
                        alive: view.brokers.saturating_sub(1),
                        replication_factor: rf,
                        missing: missing.iter().map(|t| (*t).to_owned()).collect(),
                    }
                    .into());
                }
                Err((topic, code)) => anyhow::bail!("creating topic {topic}: {code}"),
            }
        }
        if raced {
            view = cluster_view(admin).await?;
        }
    }
    let existing: Vec<&str> = topics
        .iter()
        .copied()
        .filter(|t| !report.created.iter().any(|c| c == t))
        .collect();
    let view = settled(admin, view, &existing).await?;
    let configs = describe_topics(admin, &existing).await;
    for topic in &existing {
        let Some(replicas) = view.topics.get(*topic).filter(|r| !r.is_empty()) else {
            tracing::warn!(
                topic,
                "the Kafka topic exists but its partitions are not in the metadata yet: its \
                 settings are not checked against ours"
            );
            report.unchecked.push((*topic).to_owned());
            continue;
        };
        let config = configs.get(*topic);
        if config.is_none() {
            report.unchecked.push((*topic).to_owned());
        }
        report
            .mismatches
            .extend(differences(settings, topic, replicas, config));
    }
    record(settings, topics, &report);
    Ok(report)
}

/// `view`, or a later one in which every one of `topics` has its partitions listed, waiting up
/// to 10 s: a topic created a moment ago (by another instance, or by hand) reaches a broker's
/// metadata a little later, and is not to be reported as differing only for being new.
async fn settled(
    admin: &Arc<AdminClient<DefaultClientContext>>,
    mut view: ClusterView,
    topics: &[&str],
) -> anyhow::Result<ClusterView> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let complete = |view: &ClusterView| {
        topics
            .iter()
            .all(|t| view.topics.get(*t).is_some_and(|r| !r.is_empty()))
    };
    while !complete(&view) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        view = cluster_view(admin).await?;
    }
    Ok(view)
}

/// Each existing topic's configuration, by topic: those the broker did not describe are absent
/// (logged at WARN; the caller reports them unchecked). Never fails: the check must not stop a
/// service that could otherwise run.
async fn describe_topics(
    admin: &AdminClient<DefaultClientContext>,
    topics: &[&str],
) -> HashMap<String, HashMap<String, Option<String>>> {
    let mut configs = HashMap::new();
    if topics.is_empty() {
        return configs;
    }
    let specifiers: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(15)));
    let results = match admin.describe_configs(&specifiers, &opts).await {
        Ok(results) => results,
        Err(e) => {
            tracing::warn!(
                error = %e,
                ?topics,
                "could not read the Kafka topics' configuration: their retention, segments and \
                 min.insync.replicas are not checked against ours"
            );
            return configs;
        }
    };
    for (topic, result) in topics.iter().zip(results) {
        match result {
            // A topic too new for the broker that answered is described with no entries.
            Ok(resource) if resource.entries.is_empty() => tracing::warn!(
                topic,
                "the broker described no configuration of the Kafka topic: its retention, \
                 segments and min.insync.replicas are not checked against ours"
            ),
            Ok(resource) => {
                let entries = resource
                    .entries
                    .into_iter()
                    .map(|e| (e.name, e.value))
                    .collect();
                configs.insert((*topic).to_owned(), entries);
            }
            Err(code) => tracing::warn!(
                topic,
                error = %code,
                "could not read the Kafka topic's configuration: its retention, segments and \
                 min.insync.replicas are not checked against ours"
            ),
        }
    }
    configs
}

/// The settings of existing `topic` that differ from what [`ensure_topics`] would create:
/// fewer partitions than ours, another number of copies (the fewest any partition has), or a
/// configuration value of [`wanted_config`] (when `config` was read; a value the broker does
/// not report counts as differing).
fn differences(
    settings: &KafkaSettings,
    topic: &str,
    replicas: &[usize],
    config: Option<&HashMap<String, Option<String>>>,
) -> Vec<TopicMismatch> {
    let mismatch = |setting, found: String, wanted: String| TopicMismatch {
        topic: topic.to_owned(),
        setting,
        found,
        wanted,
    };
    let mut found = Vec::new();
    let partitions = i64::try_from(replicas.len()).unwrap_or(i64::MAX);
    if partitions < i64::from(settings.topic_partitions) {
        found.push(mismatch(
            "partitions",
            partitions.to_string(),
            settings.topic_partitions.to_string(),
        ));
    }
    if let Some(fewest) = replicas.iter().min() {
        if i64::try_from(*fewest).unwrap_or(i64::MAX) != i64::from(settings.replication_factor) {
            found.push(mismatch(
                "replication.factor",
                fewest.to_string(),
                settings.replication_factor.to_string(),
            ));
        }
    }
    if let Some(config) = config {
        for (key, wanted) in wanted_config(settings, topic) {
            let value = config.get(key).cloned().flatten();
            let same = value.as_deref().is_some_and(|v| same_value(v, &wanted));
            if !same {
                found.push(mismatch(
                    key,
                    value.unwrap_or_else(|| "(not reported)".to_owned()),
                    wanted,
                ));
            }
        }
    }
    found
}

/// Whether a configuration value the broker reports is the one we want: as numbers when both
/// are (`"86400000"` and `"86400000 "` alike), else as text.
fn same_value(found: &str, wanted: &str) -> bool {
    match (found.trim().parse::<i64>(), wanted.trim().parse::<i64>()) {
        (Ok(f), Ok(w)) => f == w,
        _ => found.trim() == wanted.trim(),
    }
}

/// Logs each difference at WARN and sets [`TOPIC_CONFIG_MISMATCH`] for every setting checked on
/// every one of `topics`: 1 where it differs, 0 where it matches (so alerts see the series
/// before a difference). A configuration not read leaves its series as they were.
fn record(settings: &KafkaSettings, topics: &[&str], report: &TopicReport) {
    for m in &report.mismatches {
        tracing::warn!(
            topic = m.topic,
            setting = m.setting,
            found = m.found,
            wanted = m.wanted,
            "an existing Kafka topic differs from what this service would create it with \
             (KAFKA_* settings); it is left as it is: change the topic (kafka-configs.sh, a \
             partition reassignment) or the settings, whichever is wrong"
        );
    }
    let gauge = topic_config_mismatch();
    let settings_checked: Vec<&str> = ["partitions", "replication.factor"]
        .into_iter()
        .chain(wanted_config(settings, "").map(|(key, _)| key))
        .collect();
    for topic in topics {
        let unread = report.unchecked.iter().any(|t| t == topic);
        for setting in &settings_checked {
            if unread && !matches!(*setting, "partitions" | "replication.factor") {
                continue;
            }
            let differs = report
                .mismatches
                .iter()
                .any(|m| m.topic == *topic && m.setting == *setting);
            gauge
                .with_label_values(&[topic, setting])
                .set(i64::from(differs));
        }
    }
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
    let admin: AdminClient<DefaultClientContext> = base_config(settings, "kollus-admin")
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

/// How long a topic keeps a record, as its brokers report: `retention.ms` (negative: forever)
/// and `segment.ms` (a record outlives its retention by up to one segment: Kafka deletes whole
/// segments, never the one being written).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lifetime {
    pub retention_ms: i64,
    pub segment_ms: i64,
}

impl Lifetime {
    /// What `settings` creates `topic` with: for when the brokers cannot be asked.
    pub fn configured(settings: &KafkaSettings, topic: &str) -> Self {
        Self {
            retention_ms: settings.retention_ms_of(topic),
            segment_ms: SEGMENT_MS,
        }
    }

    /// How long after a moment the topic may still hold a record written before it, in ms:
    /// `None` when retention is infinite.
    pub fn clear_after_ms(&self) -> Option<i64> {
        (self.retention_ms >= 0).then(|| self.retention_ms.saturating_add(self.segment_ms.max(0)))
    }
}

/// Each of `topics`' [`Lifetime`], read from the brokers with DescribeConfigs (a `segment.ms`
/// not reported counts as [`SEGMENT_MS`]). Fails when the brokers do not answer or do not
/// describe one of the topics: the caller then falls back to [`Lifetime::configured`].
pub async fn lifetimes(settings: &KafkaSettings, topics: &[&str]) -> anyhow::Result<Vec<Lifetime>> {
    let admin: AdminClient<DefaultClientContext> = base_config(settings, "kollus-admin")
        .create()
        .context("creating Kafka admin client")?;
    let resources: Vec<ResourceSpecifier<'_>> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(5)));
    let results = admin
        .describe_configs(&resources, &opts)
        .await
        .with_context(|| format!("describing topics {topics:?} on {}", settings.brokers))?;
    anyhow::ensure!(
        results.len() == topics.len(),
        "the brokers described {} of {} topics",
        results.len(),
        topics.len()
    );
    topics
        .iter()
        .zip(results)
        .map(|(topic, result)| {
            let config = result.map_err(|code| anyhow::anyhow!("describing {topic}: {code}"))?;
            let number = |name: &str| {
                config
                    .get(name)
                    .and_then(|e| e.value.as_deref())
                    .map(|v| v.trim().parse::<i64>())
                    .transpose()
                    .with_context(|| format!("{topic}: {name} is not a number"))
            };
            Ok(Lifetime {
                retention_ms: number("retention.ms")?
                    .with_context(|| format!("{topic} reports no retention.ms"))?,
                segment_ms: number("segment.ms")?.unwrap_or(SEGMENT_MS),
            })
        })
        .collect()
}

/// What every consumer-group member of ours sets: the group, its protocol (see
/// [`group_protocol_config`]), and where a new group starts (the beginning: nothing is
/// skipped). Says at INFO which protocol the member joins with, and warns (once per process)
/// about a setting the protocol ignores.
fn group_member_config(settings: &KafkaSettings, group_id: &str) -> ClientConfig {
    let mut c = base_config(settings, group_id);
    c.set("group.id", group_id);
    for (key, value) in group_protocol_config(settings) {
        c.set(key, value);
    }
    c.set("auto.offset.reset", "earliest")
        // librdkafka lets the broker hold a fetch up to 500 ms for more data (a broker answers
        // sooner when records wait, but only once `fetch.min.bytes` of them have). 50 ms keeps
        // the lag low at the cost of a few more fetch requests while idle.
        .set("fetch.wait.max.ms", "50");
    match settings.group_protocol {
        GroupProtocol::Consumer => tracing::info!(
            group = group_id,
            group_protocol = "consumer",
            session_timeout = "the broker's group.consumer.session.timeout.ms",
            "Kafka consumer group protocol: consumer (KIP-848; the broker sets the session timeout)"
        ),
        GroupProtocol::Classic => tracing::info!(
            group = group_id,
            group_protocol = "classic",
            session_timeout_ms = settings.classic_session_timeout_ms(),
            "Kafka consumer group protocol: classic (the client sets the session timeout)"
        ),
    }
    if let Some(warning) = settings.ignored_group_setting() {
        static WARNED: std::sync::Once = std::sync::Once::new();
        WARNED.call_once(|| tracing::warn!(setting = "KAFKA_SESSION_TIMEOUT_MS", "{warning}"));
    }
    c
}

/// The client settings of `KAFKA_GROUP_PROTOCOL`. Under `consumer`, `group.protocol` alone:
/// the broker sets the session timeout and heartbeat, and assigns partitions (librdkafka
/// refuses a consumer given `session.timeout.ms`, `heartbeat.interval.ms` or
/// `partition.assignment.strategy` then). Under `classic`, the session timeout
/// (`KAFKA_SESSION_TIMEOUT_MS`), with a heartbeat at most a third of it (librdkafka's 3 s
/// default would otherwise outlast a short session).
pub fn group_protocol_config(settings: &KafkaSettings) -> Vec<(&'static str, String)> {
    match settings.group_protocol {
        GroupProtocol::Consumer => vec![("group.protocol", "consumer".to_owned())],
        GroupProtocol::Classic => {
            let session = settings.classic_session_timeout_ms();
            vec![
                ("group.protocol", "classic".to_owned()),
                ("session.timeout.ms", session.to_string()),
                ("heartbeat.interval.ms", (session / 3).min(3000).to_string()),
            ]
        }
    }
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
pub struct OwnedConsumer(Option<Arc<WorkerConsumer>>);

impl OwnedConsumer {
    pub fn new(consumer: WorkerConsumer) -> Self {
        Self(Some(Arc::new(consumer)))
    }
}

impl std::ops::Deref for OwnedConsumer {
    type Target = Arc<WorkerConsumer>;

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
#[expect(
    unsafe_code,
    reason = "rust-rdkafka has no safe call for the cached watermarks; one FFI call, its contract stated at the block"
)]
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
pub fn with_coordinator<T>(
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
    let consumer: BaseConsumer = base_config(settings, group_id)
        .set("group.id", group_id)
        .set("enable.auto.commit", "false")
        .create()
        .context("creating Kafka consumer for the rewind")?;
    let group = describe_group(settings, group_id)?;
    anyhow::ensure!(
        group.members == 0,
        "consumer group {group_id} has {} member(s) (state {}): stop every instance before a \
         rebuild",
        group.members,
        group.state
    );
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
    let client: BaseConsumer = base_config(settings, "kollus-archive-watch")
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
    let client: BaseConsumer = base_config(settings, group_id)
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
    Ok(describe_group(settings, group_id)?.members)
}

/// What [`describe_group`] says of a consumer group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// librdkafka's name of the group's state (`Empty`, `Stable`, `PreparingRebalance`, ...;
    /// `Dead` for a group that does not exist).
    pub state: String,
    pub members: usize,
}

/// Describes consumer group `group_id`, of either protocol: librdkafka's DescribeConsumerGroups
/// asks the coordinator with KIP-848's ConsumerGroupDescribe and falls back to the classic
/// DescribeGroups for a classic group. (The classic call alone, `fetch_group_list`, describes a
/// `consumer`-protocol group as `Dead` with no members: a rebuild would then rewind under its
/// running members.) A group that does not exist has no members. Retries while the coordinator
/// is not ready ([`with_coordinator`]). Blocking.
pub fn describe_group(
    settings: &KafkaSettings,
    group_id: &str,
) -> anyhow::Result<GroupDescription> {
    let admin: AdminClient<DefaultClientContext> = base_config(settings, "kollus-group-describe")
        .create()
        .context("creating a Kafka admin client to describe a consumer group")?;
    with_coordinator("describing the group", || {
        describe_group_once(&admin, group_id, Duration::from_secs(10))
    })
    .with_context(|| format!("describing consumer group {group_id}"))
}

#[expect(
    unsafe_code,
    reason = "rust-rdkafka 0.39 has no DescribeConsumerGroups; librdkafka's C API, its contract stated at the block"
)]
fn describe_group_once(
    admin: &AdminClient<DefaultClientContext>,
    group_id: &str,
    timeout: Duration,
) -> rdkafka::error::KafkaResult<GroupDescription> {
    use rdkafka::bindings as rd;
    use std::ffi::{CStr, CString};
    let failed = |code: rd::rd_kafka_resp_err_t| KafkaError::GroupListFetch(code.into());
    let name = CString::new(group_id).map_err(KafkaError::from)?;
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let rk = admin.inner().native_ptr();
    // SAFETY: `rk` is valid while `admin` is borrowed. The queue, options and event are created
    // and destroyed here, each exactly once; the group descriptions and strings read are owned
    // by the event and read before it is destroyed. librdkafka copies the group name.
    unsafe {
        let queue = rd::rd_kafka_queue_new(rk);
        let options = rd::rd_kafka_AdminOptions_new(
            rk,
            rd::rd_kafka_admin_op_t::RD_KAFKA_ADMIN_OP_DESCRIBECONSUMERGROUPS,
        );
        let mut errstr = [0 as std::ffi::c_char; 256];
        rd::rd_kafka_AdminOptions_set_request_timeout(
            options,
            timeout_ms,
            errstr.as_mut_ptr(),
            errstr.len(),
        );
        let mut groups = [name.as_ptr()];
        rd::rd_kafka_DescribeConsumerGroups(rk, groups.as_mut_ptr(), 1, options, queue);
        // The request's own timeout bounds it; the poll waits a little longer for its answer.
        let event = rd::rd_kafka_queue_poll(queue, timeout_ms.saturating_add(5000));
        rd::rd_kafka_AdminOptions_destroy(options);
        rd::rd_kafka_queue_destroy(queue);
        if event.is_null() {
            return Err(failed(
                rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT,
            ));
        }
        let answer = (|| {
            let err = rd::rd_kafka_event_error(event);
            if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
                return Err(failed(err));
            }
            let result = rd::rd_kafka_event_DescribeConsumerGroups_result(event);
            if result.is_null() {
                return Err(failed(rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__BAD_MSG));
            }
            let mut count = 0usize;
            let descriptions =
                rd::rd_kafka_DescribeConsumerGroups_result_groups(result, &mut count);
            if descriptions.is_null() || count == 0 {
                return Err(failed(rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__BAD_MSG));
            }
            let group = *descriptions;
            let error = rd::rd_kafka_ConsumerGroupDescription_error(group);
            if !error.is_null() {
                let code = rd::rd_kafka_error_code(error);
                if code == rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_GROUP_ID_NOT_FOUND {
                    return Ok(GroupDescription {
                        state: "Dead".into(),
                        members: 0,
                    });
                }
                return Err(failed(code));
            }
            let state = rd::rd_kafka_consumer_group_state_name(
                rd::rd_kafka_ConsumerGroupDescription_state(group),
            );
            Ok(GroupDescription {
                state: if state.is_null() {
                    "Unknown".into()
                } else {
                    CStr::from_ptr(state).to_string_lossy().into_owned()
                },
                members: rd::rd_kafka_ConsumerGroupDescription_member_count(group),
            })
        })();
        rd::rd_kafka_event_destroy(event);
        answer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(partitions: i32, rf: i32) -> KafkaSettings {
        let mut s = KafkaSettings::with_brokers("b:9092");
        s.topic_partitions = partitions;
        s.replication_factor = rf;
        s
    }

    fn ours(s: &KafkaSettings) -> HashMap<String, Option<String>> {
        wanted_config(s, "t")
            .into_iter()
            .map(|(k, v)| (k.to_owned(), Some(v)))
            .collect()
    }

    #[test]
    fn a_topic_as_we_create_it_or_with_more_partitions_does_not_differ() {
        let s = settings(3, 3);
        let c = ours(&s);
        assert_eq!(differences(&s, "t", &[3, 3, 3], Some(&c)), []);
        assert_eq!(
            differences(&s, "t", &[3; 12], Some(&c)),
            [],
            "more partitions are not less"
        );
        assert_eq!(
            differences(&s, "t", &[3, 3, 3], None),
            [],
            "configuration not read: only partitions and copies"
        );
    }

    #[test]
    fn fewer_partitions_the_fewest_copies_and_other_values_differ() {
        let s = settings(6, 3);
        let mut c = ours(&s);
        c.insert("retention.ms".into(), Some("604800000".into()));
        c.remove("segment.ms");
        let found: Vec<_> = differences(&s, "t", &[3, 2, 3], Some(&c))
            .into_iter()
            .map(|m| (m.setting, m.found, m.wanted))
            .collect();
        assert_eq!(
            found,
            [
                ("partitions", "3".to_owned(), "6".to_owned()),
                ("replication.factor", "2".to_owned(), "3".to_owned()),
                (
                    "retention.ms",
                    "604800000".to_owned(),
                    "1209600000".to_owned()
                ),
                (
                    "segment.ms",
                    "(not reported)".to_owned(),
                    "86400000".to_owned()
                ),
            ]
        );
    }

    #[test]
    fn the_erasure_topic_keeps_its_records_forever_whatever_the_retention_days() {
        let s = settings(3, 3);
        let erasure = s.erasure_topic.clone();
        let wanted = |topic: &str| wanted_config(&s, topic)[0].1.clone();
        assert_eq!(wanted(&erasure), "-1");
        assert_eq!(wanted(&s.playback_topic), "1209600000");
        let found: Vec<_> = differences(&s, &erasure, &[3, 3, 3], Some(&ours(&s)))
            .into_iter()
            .map(|m| (m.setting, m.found, m.wanted))
            .collect();
        assert_eq!(
            found,
            [("retention.ms", "1209600000".to_owned(), "-1".to_owned())],
            "an erasure topic at 14 days differs"
        );
        assert_eq!(
            Lifetime::configured(&s, &erasure).clear_after_ms(),
            None,
            "forever"
        );
        assert_eq!(
            Lifetime::configured(&s, &s.playback_topic).clear_after_ms(),
            Some(15 * 24 * 3600 * 1000),
            "14 days and a segment"
        );
    }

    /// librdkafka checks a consumer's settings when it is created: no broker is needed.
    fn member(s: &KafkaSettings) -> rdkafka::error::KafkaResult<rdkafka::consumer::BaseConsumer> {
        group_member_config(s, "g").create()
    }

    #[test]
    fn a_consumer_protocol_member_sets_no_session_timeout_and_librdkafka_accepts_it() {
        let s = KafkaSettings::with_brokers("127.0.0.1:1");
        assert!(member(&s).is_ok(), "{:?}", member(&s).err());
        let config = group_protocol_config(&s);
        assert_eq!(config, [("group.protocol", "consumer".to_owned())]);
        // What librdkafka refuses under this protocol (why the member sets none of it):
        for (key, value) in [
            ("session.timeout.ms", "6000"),
            ("heartbeat.interval.ms", "1000"),
            ("partition.assignment.strategy", "range"),
        ] {
            let refused = group_member_config(&s, "g")
                .set(key, value)
                .create::<rdkafka::consumer::BaseConsumer>();
            let err = refused.err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(key), "{key}: {err:?}");
        }
    }

    #[test]
    fn a_classic_member_asks_its_session_timeout_with_a_heartbeat_inside_it() {
        let mut s = KafkaSettings::with_brokers("127.0.0.1:1");
        s.group_protocol = GroupProtocol::Classic;
        assert_eq!(
            group_protocol_config(&s),
            [
                ("group.protocol", "classic".to_owned()),
                ("session.timeout.ms", "45000".to_owned()),
                ("heartbeat.interval.ms", "3000".to_owned()),
            ]
        );
        s.session_timeout_ms = Some(6000);
        let config: HashMap<_, _> = group_protocol_config(&s).into_iter().collect();
        assert_eq!(config["session.timeout.ms"], "6000");
        assert_eq!(config["heartbeat.interval.ms"], "2000");
        assert!(member(&s).is_ok(), "{:?}", member(&s).err());
    }

    #[test]
    fn values_compare_as_numbers_when_both_are() {
        assert!(same_value("86400000", "86400000"));
        assert!(same_value(" 86400000", "86400000"));
        assert!(!same_value("-1", "1"));
        assert!(same_value("delete", "delete"));
        assert!(!same_value("delete", "compact"));
    }

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
