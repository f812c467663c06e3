//! Which timestamps `restore` gives records, on Apache Kafka (`scripts/kafka.sh run`, one node
//! per test), because Kafka deletes records by timestamp: with the default (`now`) restored
//! records carry the time of the restore and their archived timestamp in the
//! `kollus-original-timestamp` header, and archived again they are the same records (nothing
//! restored twice); with `original`, the records older than the target topic's retention.ms (as
//! the broker reports it, not as the settings say) are counted in the summary and the metrics,
//! and the broker does delete them at its first retention check (30 s after it starts).
//!
//! The archives are written with the crate's own segment writer: records 30 days old need no
//! source broker that would keep them.

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader};
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer as _};
use rdkafka::message::{Message as _, Timestamp};
use rdkafka::{Offset, TopicPartitionList};

use kollus_archive::dump::{self, DumpSettings};
use kollus_archive::metrics::Metrics;
use kollus_archive::record::{ArchivedRecord, Bytes, Header, ORIGINAL_TIMESTAMP_HEADER};
use kollus_archive::restore::{self, RestoreSettings, Timestamps};
use kollus_archive::segment::Open;
use kollus_archive::store::Archive;
use kollus_common::settings::KafkaSettings;

const DAY_MS: i64 = 86_400_000;
const CONTENT: &str = "kollus.content.v1";
const PLAYBACK: &str = "kollus.playback.v1";

/// Apache Kafka, one node, run by `scripts/kafka.sh run PORT` in a process group of its own;
/// stopped with SIGTERM to the group (a controlled shutdown) when dropped.
struct Kafka {
    child: Child,
    addr: String,
}

impl Kafka {
    fn start() -> Self {
        install();
        let mut failures = Vec::new();
        // A port found free can be taken before the broker binds it: another try, another port.
        for _ in 0..3 {
            match Self::try_start(free_port_pair()) {
                Ok(kafka) => return kafka,
                Err(e) => failures.push(e),
            }
        }
        panic!("Apache Kafka did not start: {failures:#?}");
    }

    fn try_start(port: u16) -> Result<Self, String> {
        let root = workspace_root();
        let mut child = Command::new(root.join("scripts/kafka.sh"))
            .args(["run", &port.to_string()])
            // Retention checked every second from the start (Kafka's defaults: 30 s after the
            // start, then every 5 min), so a test sees what the broker deletes.
            .args(["--config", "log.initial.task.delay.ms=1000"])
            .args(["--config", "log.retention.check.interval.ms=1000"])
            .args(["--owner", &std::process::id().to_string()])
            .current_dir(root)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| format!("starting scripts/kafka.sh: {e}"))?;
        let stderr = child.stderr.take().ok_or("no stderr")?;
        // Stopped by Drop from here on, also when it never gets ready.
        let kafka = Self {
            child,
            addr: format!("127.0.0.1:{port}"),
        };
        // Its stderr is read to the end (a full pipe would stop the script), shown with the
        // test's output; `ready` is passed on. The sender goes when the script exits.
        let (ready, readiness) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("[kafka :{port}] {line}");
                if line.trim() == "ready" {
                    let _ = ready.send(());
                }
            }
        });
        // Installed already: a start takes 10-30 s on two busy cores.
        match readiness.recv_timeout(Duration::from_secs(180)) {
            Ok(()) => Ok(kafka),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                Err(format!("port {port}: no `ready` in 180 s"))
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => Err(format!(
                "port {port}: exited before `ready` (its stderr is above)"
            )),
        }
    }

    fn settings(&self) -> KafkaSettings {
        let mut s = KafkaSettings::with_brokers(&self.addr);
        s.topic_partitions = 1;
        s
    }
}

impl Drop for Kafka {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let signal = |sig: &str| {
            let _ = Command::new("kill").args([sig, "--", &group]).status();
        };
        signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(100))
                }
                _ => break,
            }
        }
        signal("-KILL");
        let _ = self.child.wait();
    }
}

fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("archive/ sits in the workspace root")
}

/// `scripts/kafka.sh install`, one test process at a time (nextest runs each test in its own,
/// together): `run` installs too, but two first installs at once would share one directory.
fn install() {
    let root = workspace_root();
    let lock = root.join(".local/kafka/.install.lock");
    std::fs::create_dir_all(lock.parent().expect("a parent")).expect("creating .local/kafka");
    let status = Command::new("flock")
        .arg(&lock)
        .arg(root.join("scripts/kafka.sh"))
        .arg("install")
        .current_dir(root)
        .stdin(Stdio::null())
        .status()
        .expect("running flock scripts/kafka.sh install");
    assert!(status.success(), "scripts/kafka.sh install: {status}");
}

/// A port for the broker whose controller port (PORT+10000) is free too, both below Linux's
/// ephemeral range (32768-60999), where a client's outgoing connection could take them.
fn free_port_pair() -> u16 {
    use std::hash::{BuildHasher as _, Hasher as _};
    let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
    for _ in 0..1000 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = 20_000 + (h.finish() % 2_700) as u16;
        if free(port) && free(port + 10_000) {
            return port;
        }
    }
    panic!("no free pair of ports in 20000-32767");
}

fn now_ms() -> i64 {
    (time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// A record as the services write them (an `id` header) or, with `id: None`, as another
/// producer might (identified by its content).
fn record(topic: &str, offset: i64, timestamp: i64, id: Option<&str>) -> ArchivedRecord {
    let mut headers = vec![Header {
        key: "kind".into(),
        value: Some(Bytes::of(b"lms")),
    }];
    if let Some(id) = id {
        headers.push(Header {
            key: "id".into(),
            value: Some(Bytes::of(id.as_bytes())),
        });
    }
    ArchivedRecord {
        topic: topic.into(),
        partition: 0,
        offset,
        timestamp: Some(timestamp),
        key: Some(Bytes::of(format!("user-{offset}\u{1f}media").as_bytes())),
        headers,
        // Not UTF-8 as well: it must come back byte for byte.
        value: Some(if offset % 2 == 0 {
            Bytes::of(format!("{{\"n\":{offset}}}").as_bytes())
        } else {
            Bytes::of(&[0xff, 0x00, offset as u8])
        }),
    }
}

/// Writes `records` (each partition's in offset order) as one segment per partition of epoch
/// 1 of a cluster that is gone: what `dump` would have written.
async fn write_archive(archive: &Archive, records: &[ArchivedRecord]) {
    let mut partitions: BTreeMap<(String, i32), Vec<&ArchivedRecord>> = BTreeMap::new();
    for r in records {
        partitions
            .entry((r.topic.clone(), r.partition))
            .or_default()
            .push(r);
    }
    for rs in partitions.values() {
        let mut open = Open::new(rs[0], 1, "the-lost-cluster").unwrap();
        for r in rs {
            open.push(r).unwrap();
        }
        let (bytes, entry) = open.close().unwrap();
        let manifest = serde_json::to_vec_pretty(&entry).unwrap();
        archive
            .create(&entry.segment, bytes, |_| false)
            .await
            .unwrap();
        archive
            .create(&entry.manifest_path(), manifest, |_| false)
            .await
            .unwrap();
    }
}

/// Every record of `topic`'s partition 0 still on the broker, with its Kafka timestamp.
fn read_partition(addr: &str, topic: &str) -> Vec<(Timestamp, ArchivedRecord)> {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "restore-timestamps-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Beginning)
        .unwrap();
    consumer.assign(&tpl).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut out = Vec::new();
    while Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => out.push((m.timestamp(), ArchivedRecord::of(&m))),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(_))) => return out,
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    panic!("{topic}: no end of partition within 30 s");
}

/// Waits until `group`'s coordinator answers: a fresh cluster creates `__consumer_offsets` (10
/// partitions) on the first group request, which takes a while on two busy cores, and a
/// `dump --until-end` in that while finds its partitions silent.
async fn await_group_coordinator(addr: &str, group: &str, topic: &str) {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(topic, 0);
    let started = Instant::now();
    loop {
        match consumer.committed_offsets(tpl.clone(), Duration::from_secs(10)) {
            Ok(_) => break,
            Err(e) => {
                assert!(
                    started.elapsed() < Duration::from_secs(120),
                    "no group coordinator within 120 s: {e}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    eprintln!("group coordinator ready in {:?}", started.elapsed());
}

fn low_watermark(addr: &str, topic: &str) -> i64 {
    let consumer: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", addr)
        .set("group.id", "restore-timestamps-reader")
        .create()
        .unwrap();
    consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(10))
        .unwrap()
        .0
}

#[tokio::test]
async fn by_default_restored_records_carry_the_restore_time_and_their_archived_one_in_a_header() {
    let kafka = Kafka::start();
    let settings = kafka.settings();
    let dir = tempfile::tempdir().unwrap();
    let location = dir.path().to_str().unwrap().to_owned();
    let archive = Archive::open(&location).unwrap();
    // 30 days old, beyond the default 14 days' retention: restored as they were, Kafka would
    // delete them at its next retention check.
    let old = now_ms() - 30 * DAY_MS;
    let mut archived: Vec<ArchivedRecord> = (0..5)
        .map(|o| record(PLAYBACK, o, old + o, Some(&format!("envelope-{o}"))))
        .collect();
    archived.extend((0..2).map(|o| record(CONTENT, o, old + 100 + o, None)));
    write_archive(&archive, &archived).await;

    let before = now_ms();
    let summary = restore::restore(&archive, &settings, None).await.unwrap();
    let after = now_ms();
    assert_eq!(summary.timestamps, Timestamps::Now);
    assert_eq!(
        (
            summary.produced,
            summary.repeats_skipped,
            summary.retimestamped
        ),
        (7, 0, 7),
        "{summary:?}"
    );
    assert!(summary.past_retention.is_empty(), "{summary:?}");

    let mut restored = read_partition(&kafka.addr, PLAYBACK);
    restored.extend(read_partition(&kafka.addr, CONTENT));
    assert_eq!(restored.len(), 7);
    for ((timestamp, back), first) in restored.iter().zip(&archived) {
        let Timestamp::CreateTime(ts) = *timestamp else {
            panic!("{timestamp:?}: not the producer's time");
        };
        assert!(
            (before - 1_000..=after + 1_000).contains(&ts),
            "{ts} is not the time of the restore ({before}..={after})"
        );
        let original = back.headers.last().expect("headers");
        assert_eq!(original.key, ORIGINAL_TIMESTAMP_HEADER);
        assert_eq!(
            original.value,
            Some(Bytes::Text(first.timestamp.unwrap().to_string())),
            "decimal ms since the Unix epoch"
        );
        // Everything else as archived: key, value byte for byte, the headers in order, the
        // place; read as first written, the very record.
        assert_eq!(back.original_timestamp(), first.timestamp);
        assert_eq!(&*back.as_first_written(), first);
    }

    // The continuous archiver takes the restored records into a new epoch (another cluster):
    // the same records, by identity, so a later restore produces each once.
    let dump_settings = DumpSettings {
        to: location.clone(),
        until_end: true,
        group_id: Some("re-archive".into()),
        segment_bytes: 64 * 1024 * 1024,
        segment_seconds: 60,
        keys: Default::default(),
    };
    await_group_coordinator(&kafka.addr, "re-archive", CONTENT).await;
    let again = dump::until_end(&archive, &settings, &dump_settings, &Metrics::new())
        .await
        .unwrap();
    assert_eq!(again, 7);
    let mut by_epoch: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for entry in kollus_archive::verify::entries(&archive).await.unwrap() {
        let bytes = archive.get(&entry.segment).await.unwrap();
        for r in kollus_archive::segment::read(&entry, &bytes).unwrap() {
            by_epoch.entry(entry.epoch).or_default().push(r.identity());
        }
    }
    assert_eq!(by_epoch.keys().copied().collect::<Vec<_>>(), [1, 2]);
    assert_eq!(by_epoch[&1], by_epoch[&2]);
    let twice = restore::restore(&archive, &settings, None).await.unwrap();
    assert_eq!((twice.produced, twice.repeats_skipped), (7, 7), "{twice:?}");
}

#[tokio::test]
async fn original_timestamps_past_the_topics_retention_are_counted_and_kafka_deletes_them() {
    let kafka = Kafka::start();
    // The target topics keep records 1 day; the restore's own settings say 14 (the default):
    // the broker's word counts, since a topic that exists keeps its configuration.
    let mut one_day = kafka.settings();
    one_day.retention_days = 1;
    kollus_common::kafka::ensure_topics(&one_day, &one_day.topics())
        .await
        .unwrap();
    let settings = kafka.settings();
    assert_eq!(settings.retention_days, 14);

    let dir = tempfile::tempdir().unwrap();
    let archive = Archive::open(dir.path().to_str().unwrap()).unwrap();
    let now = now_ms();
    // content: 30 days old, all past retention; playback: an hour old, within it.
    let mut archived: Vec<ArchivedRecord> = (0..5)
        .map(|o| record(CONTENT, o, now - 30 * DAY_MS + o, Some(&format!("c-{o}"))))
        .collect();
    archived
        .extend((0..3).map(|o| record(PLAYBACK, o, now - 3_600_000 + o, Some(&format!("p-{o}")))));
    write_archive(&archive, &archived).await;

    let metrics = Metrics::new();
    let original = RestoreSettings {
        timestamps: Timestamps::Original,
        ..RestoreSettings::default()
    };
    let summary = restore::restore_with(&archive, &settings, &original, Some(&metrics))
        .await
        .unwrap();
    let restored_at = Instant::now();
    assert_eq!(
        (summary.produced, summary.retimestamped),
        (8, 0),
        "{summary:?}"
    );
    assert_eq!(
        summary.past_retention,
        BTreeMap::from([(CONTENT.to_owned(), 5)]),
        "{summary:?}"
    );
    assert_eq!(summary.past_retention_total(), 5);
    assert!(summary.retention_unknown.is_empty(), "{summary:?}");
    let counted = |topic: &str| {
        metrics
            .restore_past_retention
            .with_label_values(&[topic])
            .get()
    };
    assert_eq!((counted(CONTENT), counted(PLAYBACK)), (5, 0));

    // Produced as archived: their own timestamps, no header added.
    let playback = read_partition(&kafka.addr, PLAYBACK);
    assert_eq!(playback.len(), 3);
    for ((timestamp, back), first) in playback.iter().zip(&archived[5..]) {
        assert_eq!(*timestamp, Timestamp::CreateTime(first.timestamp.unwrap()));
        assert_eq!(back, first);
    }

    // And the broker does what the summary said, at a retention check (every second here).
    kollus_test_support::eventually(
        "the records past retention deleted by the broker",
        Duration::from_secs(60).saturating_sub(restored_at.elapsed()),
        || async { (low_watermark(&kafka.addr, CONTENT) >= 5).then_some(()) },
    )
    .await;
    assert!(read_partition(&kafka.addr, CONTENT).is_empty());
    assert_eq!(
        low_watermark(&kafka.addr, PLAYBACK),
        0,
        "within retention: kept"
    );
    assert_eq!(read_partition(&kafka.addr, PLAYBACK).len(), 3);
}
