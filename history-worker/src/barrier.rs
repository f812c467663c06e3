//! Loading the erasure barrier for `--rebuild` (README "Erasing a user"): per subject tag, the
//! latest erasure, from the erasure topic (`KAFKA_ERASURE_TOPIC`, every record from the first to
//! the current end) and, with `ARCHIVE_DIR`, from the erasure records of the archive's key
//! location (`erasures/` in `ARCHIVE_KEYS_DIR`, default `<ARCHIVE_DIR>/keys`), merged into
//! `erasure_barrier` (V27; the greatest time wins) before the replay. So a rebuild after losing
//! PostgreSQL drops the same users' reports as the live worker did: the apply reads the table.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deadpool_postgres::Pool;
use kollus_common::archive::Archive;
use kollus_common::erasure::{Barrier, ErasureEvent, LocationErasure, LOCATION_RECORDS};
use kollus_common::settings::KafkaSettings;
use rdkafka::consumer::Consumer as _;
use rdkafka::error::KafkaError;
use rdkafka::{Message as _, Offset, TopicPartitionList};
use time::OffsetDateTime;

/// How long the erasure topic may stay silent (no record, no end of partition) before the load
/// gives up: a rebuild without the barrier could bring an erased user back, so it does not start.
const TOPIC_SILENCE: Duration = Duration::from_secs(60);

/// Where a barrier came from, and how much of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub from: String,
    /// Erasure records read.
    pub records: u64,
    /// Distinct subjects among them.
    pub subjects: usize,
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} erasure record(s) of {} subject(s) from {}",
            self.records, self.subjects, self.from
        )
    }
}

/// Reads every erasure on `settings.erasure_topic`, from each partition's first record to its
/// current end. A topic that does not exist yet holds none. Blocking.
pub fn from_topic(settings: &KafkaSettings) -> anyhow::Result<(Barrier, Source)> {
    let topic = settings.erasure_topic.as_str();
    let consumer = kollus_common::archive::inspector(settings)?;
    let partitions = kollus_common::kafka::partitions(&consumer, topic)?;
    let mut barrier = Barrier::default();
    let mut records = 0u64;
    let mut open: BTreeSet<i32> = partitions.iter().copied().collect();
    if !open.is_empty() {
        let mut assignment = TopicPartitionList::new();
        for p in &partitions {
            assignment.add_partition_offset(topic, *p, Offset::Beginning)?;
        }
        consumer
            .assign(&assignment)
            .with_context(|| format!("reading {topic}"))?;
    }
    let mut heard = Instant::now();
    while !open.is_empty() {
        match consumer.poll(Duration::from_millis(200)) {
            None => anyhow::ensure!(
                heard.elapsed() < TOPIC_SILENCE,
                "{topic}: partitions {open:?} neither gave a record nor reached their end in {} s; \
                 not rebuilding without the erasure barrier",
                TOPIC_SILENCE.as_secs()
            ),
            Some(Ok(m)) => {
                heard = Instant::now();
                let event: ErasureEvent = serde_json::from_slice(m.payload().unwrap_or_default())
                    .with_context(|| {
                    format!(
                        "{topic} partition {} offset {}: not an erasure record; not \
                             rebuilding without it",
                        m.partition(),
                        m.offset()
                    )
                })?;
                barrier.add(&event);
                records += 1;
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                heard = Instant::now();
                open.remove(&p);
            }
            Some(Err(e)) if kollus_common::kafka::is_partition_eof(&e) => {}
            Some(Err(e)) => return Err(e).with_context(|| format!("reading {topic}")),
        }
    }
    let subjects = barrier.len();
    Ok((
        barrier,
        Source {
            from: format!("topic {topic}"),
            records,
            subjects,
        },
    ))
}

/// Reads the erasure records of the key location `location` (`erasures/<tag>/<id>.json`). A
/// local key location that does not exist holds none when it is only the default one
/// (`explicit` false: an archive that was never encrypted has no keys); when set explicitly
/// (`ARCHIVE_KEYS_DIR`) it must exist, as a mistyped path must not read as "nobody erased".
pub async fn from_location(location: &str, explicit: bool) -> anyhow::Result<(Barrier, Source)> {
    let mut barrier = Barrier::default();
    let mut records = 0u64;
    let is_local = !location.contains("://");
    if is_local && !std::path::Path::new(location).is_dir() {
        anyhow::ensure!(
            !explicit,
            "ARCHIVE_KEYS_DIR: {location} is not a directory (the key location of ARCHIVE_DIR)"
        );
    } else {
        let keys = Archive::open_existing(location)?;
        for path in keys.list(LOCATION_RECORDS).await? {
            if !path.ends_with(".json") {
                continue;
            }
            let bytes = keys.get(&path).await?;
            let record: LocationErasure = serde_json::from_slice(&bytes).with_context(|| {
                format!("{path} in {location}: not an erasure record; not rebuilding without it")
            })?;
            barrier.add(&ErasureEvent::from(&record));
            records += 1;
        }
    }
    let subjects = barrier.len();
    Ok((
        barrier,
        Source {
            from: format!("key location {location}"),
            records,
            subjects,
        },
    ))
}

/// Merges `barrier` into `erasure_barrier` (each subject's greatest time wins). Returns the
/// table's subjects afterwards.
pub async fn store(pool: &Pool, barrier: &Barrier) -> anyhow::Result<i64> {
    let (tags, times): (Vec<&str>, Vec<OffsetDateTime>) = barrier.iter().unzip();
    let client = pool.get().await?;
    client
        .execute(
            "INSERT INTO erasure_barrier AS b (subject_tag, erased_at) \
             SELECT * FROM unnest($1::text[], $2::timestamptz[]) \
             ON CONFLICT (subject_tag) DO UPDATE \
                 SET erased_at = greatest(b.erased_at, EXCLUDED.erased_at)",
            &[&tags, &times],
        )
        .await
        .context("storing the erasure barrier")?;
    Ok(client
        .query_one("SELECT count(*) FROM erasure_barrier", &[])
        .await
        .context("counting the erasure barrier")?
        .get(0))
}

/// `--rebuild`'s first step: the barrier from the topic and (with `archive_dir`) the key
/// location, stored; what was loaded from where said on stderr and in the log.
pub async fn load_for_rebuild(
    pool: &Pool,
    kafka: &KafkaSettings,
    archive_dir: Option<&str>,
    keys_dir: Option<&str>,
) -> anyhow::Result<()> {
    let settings = kafka.clone();
    let (mut barrier, topic) = tokio::task::spawn_blocking(move || from_topic(&settings))
        .await
        .context("reading the erasure topic")??;
    let mut sources = vec![topic];
    if let Some(dir) = archive_dir {
        let location = kollus_common::erasure::keys_location(dir, keys_dir);
        let explicit = keys_dir.is_some_and(|d| !d.trim().is_empty());
        let (found, source) = from_location(&location, explicit).await?;
        for (tag, erased_at) in found.iter() {
            barrier.add(&ErasureEvent {
                erasure_id: uuid::Uuid::nil(),
                subject_tag: tag.to_owned(),
                erased_at,
            });
        }
        sources.push(source);
    }
    let stored = store(pool, &barrier).await?;
    for source in &sources {
        tracing::warn!(
            from = source.from,
            records = source.records,
            subjects = source.subjects,
            "rebuild: erasure barrier loaded"
        );
        eprintln!("rebuild: erasure barrier: {source}");
    }
    tracing::warn!(
        subjects = barrier.len(),
        stored,
        "rebuild: erasure barrier stored; reports of these users received before their \
         erasure will not be replayed into the tables"
    );
    eprintln!(
        "rebuild: erasure barrier: {} subject(s) loaded, {stored} in erasure_barrier",
        barrier.len()
    );
    Ok(())
}
