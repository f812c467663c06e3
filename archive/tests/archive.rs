//! The archive in an S3-compatible bucket (moto's server from PyPI, `scripts/s3.sh`): dump up to
//! the end, verify, restore into another broker; a damaged segment found by verify; a dump
//! killed mid-stream, which repeats records and never skips one; a replaced broker (offsets from
//! 0 again) archived into the same location without a byte of the first one's archive changing;
//! objects created only once; verify and restore on missing and empty locations; a forged
//! collision; and a quiet continuous run whose log has no ERROR line.

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kollus_archive::dump::{self, DumpSettings};
use kollus_archive::metrics::Metrics;
use kollus_archive::record::ORIGINAL_TIMESTAMP_HEADER;
use kollus_archive::store::{Archive, Created};
use kollus_archive::{restore, verify};
use kollus_common::settings::KafkaSettings;
use kollus_test_support::group::committed;
use kollus_test_support::{eventually, free_port, workspace_root, Broker};
use rdkafka::message::{Header, Headers as _, Message as _, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// A child process killed (SIGKILL) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto's S3 on a free port, with a bucket. Its address and credentials go to the archive as
/// explicit settings ([`S3::open`]), never into this process's `AWS_*` variables: under
/// `cargo test` every test of this file runs in one process, where two S3 tests would point
/// each other's archives at their own server.
struct S3 {
    _server: KillOnDrop,
    endpoint: String,
}

impl S3 {
    async fn with_bucket(bucket: &str) -> Self {
        let bin = workspace_root().join(".local/moto-venv/bin/moto_server");
        assert!(
            bin.exists(),
            "{} is missing: run scripts/s3.sh install",
            bin.display()
        );
        let port = free_port();
        let server = KillOnDrop(
            Command::new(bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("starting scripts/s3.sh run"),
        );
        let endpoint = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        eventually("moto to take a bucket", Duration::from_secs(30), || async {
            let res = http.put(format!("{endpoint}/{bucket}")).send().await.ok()?;
            res.status().is_success().then_some(())
        })
        .await;
        Self {
            _server: server,
            endpoint,
        }
    }

    /// The archive at `location` (`s3://bucket/prefix`) on this server.
    fn open(&self, location: &str) -> Archive {
        Archive::open_s3(
            location,
            &[
                ("aws_access_key_id", "test"),
                ("aws_secret_access_key", "test"),
                ("aws_region", "us-east-1"),
                ("aws_endpoint", &self.endpoint),
                ("aws_allow_http", "true"),
            ],
        )
        .unwrap()
    }
}

fn settings(group: &str) -> DumpSettings {
    DumpSettings {
        to: String::new(),
        until_end: true,
        group_id: Some(group.into()),
        // Small segments, so a partition spans several.
        segment_bytes: 2_000,
        segment_seconds: 60,
        keys: Default::default(),
    }
}

/// A producer for records of every shape a topic may hold, which `Broker::publish_raw` (a key,
/// no headers) does not make.
fn producer(broker: &Broker) -> FutureProducer {
    kollus_common::kafka::durable_producer(
        &KafkaSettings::with_brokers(&broker.addr),
        "archive-test",
        Duration::from_secs(10),
    )
    .expect("a test producer")
}

/// Produces one record and waits for the broker's acknowledgement.
async fn produce(
    producer: &FutureProducer,
    topic: &str,
    key: Option<&str>,
    headers: &[(&str, Option<&[u8]>)],
    value: &[u8],
) {
    let headers = headers
        .iter()
        .fold(OwnedHeaders::new(), |hs, (key, value)| {
            hs.insert(Header { key, value: *value })
        });
    let mut record = FutureRecord::<str, [u8]>::to(topic)
        .payload(value)
        .headers(headers);
    if let Some(k) = key {
        record = record.key(k);
    }
    producer
        .send(record, Duration::from_secs(10))
        .await
        .unwrap_or_else(|(e, _)| panic!("publishing to {topic}: {e}"));
}

/// `n` records over the three topics, each in one of several shapes, all of which must come
/// back byte for byte: values that are not UTF-8 as well as JSON; a key, or none; headers as the
/// services write them (a unique `id`), one with a binary value and one without a value, or
/// none at all.
async fn publish(broker: &Broker, kafka: &KafkaSettings, n: usize) {
    let producer = producer(broker);
    for i in 0..n {
        let topic = &kafka.topics()[i % 3];
        let value = if i % 5 == 0 {
            vec![0xff, 0x00, i as u8]
        } else {
            format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes()
        };
        let key = format!("key-{}", i % 4);
        let key = (i % 7 != 3).then_some(key.as_str());
        let id = format!("e-{i}");
        let binary = [0xfe, 0x00, i as u8];
        let headers: Vec<(&str, Option<&[u8]>)> = match i % 3 {
            0 => vec![],
            1 => vec![("id", Some(id.as_bytes()))],
            _ => vec![
                ("id", Some(id.as_bytes())),
                ("raw", Some(&binary[..])),
                ("empty", None),
            ],
        };
        produce(&producer, topic, key, &headers, &value).await;
    }
}

/// One record as a consumer reads it, all that `restore` promises to bring back.
#[derive(Clone, PartialEq, Eq)]
struct Seen {
    key: Option<Vec<u8>>,
    value: Option<Vec<u8>>,
    headers: Vec<(String, Option<Vec<u8>>)>,
    timestamp: Option<i64>,
}

/// Bytes as escaped ASCII: a failure shows `key-3` and `\xff\x00\x0f`, not lists of numbers.
impl std::fmt::Debug for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |b: &Option<Vec<u8>>| match b {
            Some(b) => format!("\"{}\"", b.escape_ascii()),
            None => "none".to_owned(),
        };
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, v)| format!("{k}={}", show(v)))
            .collect();
        write!(
            f,
            "key {} value {} headers [{}] timestamp {:?}",
            show(&self.key),
            show(&self.value),
            headers.join(", "),
            self.timestamp
        )
    }
}

/// The topics of callbacks and dead letters, which these tests fill and compare: not the
/// erasure topic, which none of them writes to (archive/tests/erasure.rs does).
fn data_topics(kafka: &KafkaSettings) -> Vec<&str> {
    kafka
        .topics()
        .into_iter()
        .filter(|t| *t != kafka.erasure_topic)
        .collect()
}

/// Each partition of a topic (topic, partition): its records in offset order.
type Partitions = BTreeMap<(String, i32), Vec<Seen>>;

/// Every record `topics` hold on `brokers`, each partition read from its start to its end.
async fn records_on(brokers: &str, topics: &[&str]) -> Partitions {
    let brokers = brokers.to_owned();
    let topics: Vec<String> = topics.iter().map(|t| (*t).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        let mut all = Partitions::new();
        for topic in &topics {
            all.extend(read_topic_to_end(&brokers, topic));
        }
        all
    })
    .await
    .expect("reading the topics")
}

/// One topic at a time: an end-of-partition event names the partition, not its topic.
fn read_topic_to_end(brokers: &str, topic: &str) -> Partitions {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::error::KafkaError;
    use rdkafka::{ClientConfig, Offset, TopicPartitionList};
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Assigned, never subscribed: the group only names the client; nothing is committed.
        .set("group.id", "archive-test-reader")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("log_level", "3")
        .create()
        .expect("a reading consumer");
    let partitions = kollus_common::kafka::partitions(&consumer, topic)
        .unwrap_or_else(|e| panic!("partitions of {topic}: {e:#}"));
    assert!(
        !partitions.is_empty(),
        "{topic} on {brokers}: no partitions"
    );
    let mut assignment = TopicPartitionList::new();
    let mut out = Partitions::new();
    for p in &partitions {
        assignment
            .add_partition_offset(topic, *p, Offset::Beginning)
            .expect("a partition");
        out.insert((topic.to_owned(), *p), Vec::new());
    }
    consumer.assign(&assignment).expect("assigning");
    let mut at_end = std::collections::HashSet::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while at_end.len() < partitions.len() {
        assert!(
            std::time::Instant::now() < deadline,
            "reading {topic}: not every partition reached its end"
        );
        match consumer.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
                let headers = m
                    .headers()
                    .map(|hs| {
                        hs.iter()
                            .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                            .collect()
                    })
                    .unwrap_or_default();
                let seen = Seen {
                    key: m.key().map(<[u8]>::to_vec),
                    value: m.payload().map(<[u8]>::to_vec),
                    headers,
                    timestamp: m.timestamp().to_millis(),
                };
                out.entry((topic.to_owned(), m.partition()))
                    .or_default()
                    .push(seen);
            }
            Some(Err(KafkaError::PartitionEOF(p))) => {
                at_end.insert(p);
            }
            Some(Err(e)) => panic!("reading {topic}: {e}"),
            None => {}
        }
    }
    out
}

/// Asserts that `restored` holds what `restore` (`--timestamps now`) promises for `source`:
/// every record in its partition, in its order, with its key, value and headers byte for byte,
/// and its Kafka timestamp in the `kollus-original-timestamp` header added after the others
/// (the record's own timestamp is the time of the restore).
fn assert_restored(source: &Partitions, restored: &Partitions) {
    let promised: BTreeMap<_, Vec<Seen>> = source
        .iter()
        .map(|(place, records)| {
            let records = records
                .iter()
                .map(|r| {
                    let ts = r.timestamp.expect("a source record has a timestamp");
                    let mut headers = r.headers.clone();
                    headers.push((
                        ORIGINAL_TIMESTAMP_HEADER.to_owned(),
                        Some(ts.to_string().into_bytes()),
                    ));
                    Seen {
                        headers,
                        timestamp: None,
                        ..r.clone()
                    }
                })
                .collect();
            (place.clone(), records)
        })
        .collect();
    let got: BTreeMap<_, Vec<Seen>> = restored
        .iter()
        .map(|(place, records)| {
            let records = records
                .iter()
                .map(|r| Seen {
                    timestamp: None,
                    ..r.clone()
                })
                .collect();
            (place.clone(), records)
        })
        .collect();
    assert_eq!(
        promised.keys().collect::<Vec<_>>(),
        got.keys().collect::<Vec<_>>(),
        "the same topics and partitions"
    );
    for (place, want) in &promised {
        let have = &got[place];
        if let Some(i) = (0..want.len().max(have.len())).find(|i| want.get(*i) != have.get(*i)) {
            panic!(
                "{}/{}: record {i} of {} restored as\n  {:?}\nnot as archived:\n  {:?}\n\
                 ({} records restored, {} in the source)",
                place.0,
                place.1,
                want.len(),
                have.get(i),
                want.get(i),
                have.len(),
                want.len()
            );
        }
    }
    assert!(
        promised.values().map(Vec::len).sum::<usize>() > 0,
        "a comparison of nothing"
    );
}

#[tokio::test]
async fn an_archive_in_a_bucket_verifies_and_restores_into_another_broker() {
    let s3 = S3::with_bucket("kollus-archive").await;
    let broker = Broker::start().await;
    let kafka = broker.settings();
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    publish(&broker, &kafka, 60).await;
    let source = records_on(&broker.addr, &data_topics(&kafka)).await;
    assert_eq!(source.values().map(Vec::len).sum::<usize>(), 60);

    let archive = s3.open("s3://kollus-archive/backups/prod");
    let metrics = Metrics::new();
    let archived = dump::until_end(
        &archive,
        &kafka,
        &settings(&broker.group("s3-test")),
        &metrics,
    )
    .await
    .unwrap();
    assert_eq!(archived, 60);
    assert!(
        archive.list("segments").await.unwrap().len() > 3,
        "several segments per partition"
    );
    assert!(archive
        .list("manifest")
        .await
        .unwrap()
        .iter()
        .all(|p| p.starts_with("manifest/")));

    let report = verify::verify(&archive, None).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.records, report.repeats), (60, 0));
    assert!(report.late_starts.is_empty(), "{report:?}");

    let other = broker.another_cluster().await;
    let summary = restore::restore(&archive, &other.settings(), None)
        .await
        .unwrap();
    assert_eq!(summary.produced, 60);
    // Not counts: each record, byte for byte, in its partition and order.
    assert_restored(
        &source,
        &records_on(&other.addr, &data_topics(&kafka)).await,
    );
}

#[tokio::test]
async fn verify_finds_a_damaged_segment_and_a_gap() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start().await;
    let kafka = broker.settings();
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    publish(&broker, &kafka, 300).await;
    let archive = Archive::open(dir.path().to_str().unwrap()).unwrap();
    dump::until_end(
        &archive,
        &kafka,
        &settings(&broker.group("damage-test")),
        &Metrics::new(),
    )
    .await
    .unwrap();
    let segments = archive.list("segments").await.unwrap();
    // One segment changed by a byte, another gone (with its manifest entry: a gap).
    let damaged = dir.path().join(&segments[0]);
    let mut bytes = std::fs::read(&damaged).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x55;
    std::fs::write(&damaged, bytes).unwrap();
    // A partition's second segment of three or more: records after it show the gap.
    let entries = verify::entries(&archive).await.unwrap();
    let middle = entries
        .windows(3)
        .find(|w| {
            w.iter()
                .all(|e| (&e.topic, e.partition) == (&w[0].topic, w[0].partition))
                && w[0].segment != segments[0]
        })
        .map(|w| w[1].manifest_path())
        .expect("a partition with three segments or more");
    std::fs::remove_file(dir.path().join(middle)).unwrap();

    let report = verify::verify(&archive, None).await.unwrap();
    assert!(!report.ok());
    assert_eq!(report.damaged.len(), 1, "{report:?}");
    assert!(report.damaged[0].contains("SHA-256"), "{report:?}");
    // The damaged segment was a partition's first: what follows it starts late.
    assert_eq!(report.late_starts.len(), 1, "{report:?}");
    assert!(!report.gaps.is_empty(), "{report:?}");
}

#[tokio::test]
async fn a_dump_killed_mid_stream_repeats_records_and_never_skips_one() {
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start().await;
    let kafka = broker.settings();
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    publish(&broker, &kafka, 300).await;
    let source = records_on(&broker.addr, &data_topics(&kafka)).await;
    let to = dir.path().to_str().unwrap().to_owned();
    let group = broker.group("crash-test");
    let mut running = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kollus-archive"))
            .args(["dump", "--to", &to])
            .envs(broker.env())
            .env("ARCHIVE_GROUP_ID", &group)
            .env("KAFKA_TOPIC_PARTITIONS", "6")
            .env("ARCHIVE_SEGMENT_BYTES", "2000")
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting kollus-archive dump"),
    );
    let archive = Archive::open(&to).unwrap();
    eventually(
        "a few segments archived",
        Duration::from_secs(30),
        || async { (archive.list("manifest").await.ok()?.len() >= 3).then_some(()) },
    )
    .await;
    running.0.kill().expect("kill -9");
    running.0.wait().expect("reaping it");

    // Killed mid-stream: some records archived and committed, not all. (A segment stays open
    // 60 s unless 2,000 bytes fill it: each partition's last records are never durable before
    // the kill, and their offsets never committed.)
    let at_kill = verify::verify(&archive, None).await.unwrap();
    let mut committed_at_kill = 0;
    for topic in kafka.topics() {
        committed_at_kill += committed(&broker.addr, &group, topic).await;
    }
    assert!(
        at_kill.records > 0 && at_kill.records - at_kill.repeats < 300,
        "the kill came mid-stream: {} records archived ({} repeats) of 300",
        at_kill.records,
        at_kill.repeats
    );
    assert!(
        (1..300).contains(&committed_at_kill),
        "the killed dump committed {committed_at_kill} of 300 records"
    );

    // A new run of the same group finishes the job from its committed offsets.
    let mut settings = settings(&group);
    settings.segment_bytes = 2_000;
    let resumed = dump::until_end(&archive, &kafka, &settings, &Metrics::new())
        .await
        .unwrap();
    assert_eq!(
        resumed,
        300 - committed_at_kill as u64,
        "the second run read from the first one's committed offsets to the end"
    );
    let report = verify::verify(&archive, None).await.unwrap();
    assert!(report.ok(), "no gap after the crash: {report:?}");
    assert!(report.late_starts.is_empty(), "{report:?}");
    assert_eq!(report.records - report.repeats, 300, "{report:?}");

    let other = broker.another_cluster().await;
    let summary = restore::restore(&archive, &other.settings(), None)
        .await
        .unwrap();
    assert_eq!(
        (summary.produced, summary.repeats_skipped),
        (300, report.repeats)
    );
    assert_restored(
        &source,
        &records_on(&other.addr, &data_topics(&kafka)).await,
    );
}

/// Records that look like the services' (an `id` header) or not (none), distinct per broker.
async fn publish_tagged(broker: &Broker, kafka: &KafkaSettings, tag: &str, n: usize) {
    let producer = producer(broker);
    for i in 0..n {
        let topic = &kafka.topics()[i % 3];
        let value = format!("{{\"broker\":\"{tag}\",\"n\":{i}}}");
        let id = format!("{tag}-{i}");
        let headers: Vec<(&str, Option<&[u8]>)> = if i % 2 == 0 {
            vec![("id", Some(id.as_bytes()))]
        } else {
            vec![]
        };
        let key = format!("key-{}", i % 4);
        produce(&producer, topic, Some(&key), &headers, value.as_bytes()).await;
    }
}

#[tokio::test]
async fn a_replaced_broker_opens_a_new_epoch_and_both_brokers_records_stay_restorable() {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_owned();
    let archive = Archive::open(&to).unwrap();
    let first = Broker::start().await;
    let mut settings = settings(&first.group("same-group-on-both"));
    settings.to = to.clone();

    let kafka = first.settings();
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    publish_tagged(&first, &kafka, "first", 90).await;
    let first_records = records_on(&first.addr, &data_topics(&kafka)).await;
    let archived = dump::until_end(&archive, &kafka, &settings, &Metrics::new())
        .await
        .unwrap();
    assert_eq!(archived, 90);
    let before: Vec<(String, bytes::Bytes)> = {
        let mut v = Vec::new();
        for p in archive.list("").await.unwrap() {
            let b = archive.get(&p).await.unwrap();
            v.push((p, b));
        }
        v
    };
    // The disaster: a new broker, offsets from 0 again, other records at the same offsets;
    // the same archive location and group name.
    let second = first.another_cluster().await;
    drop(first);
    let kafka = second.settings();
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    publish_tagged(&second, &kafka, "second", 60).await;
    let second_records = records_on(&second.addr, &data_topics(&kafka)).await;
    let archived = dump::until_end(&archive, &kafka, &settings, &Metrics::new())
        .await
        .unwrap();
    assert_eq!(archived, 60);

    // Every object of the first broker's archive is still there, byte for byte.
    for (path, bytes) in &before {
        assert_eq!(&archive.get(path).await.unwrap(), bytes, "{path} changed");
    }
    let report = verify::verify(&archive, None).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.records, report.repeats), (150, 0), "{report:?}");
    let epochs: std::collections::BTreeSet<u32> = report.epochs.iter().map(|e| e.epoch).collect();
    assert_eq!(epochs, [1, 2].into(), "{report:?}");
    assert!(report.late_starts.is_empty(), "{report:?}");

    // Both brokers' records come back.
    let third = second.another_cluster().await;
    let summary = restore::restore(&archive, &third.settings(), None)
        .await
        .unwrap();
    assert_eq!((summary.produced, summary.repeats_skipped), (150, 0));
    // Each partition: the first broker's records (epoch 1), then the second's (epoch 2), each
    // byte for byte.
    let mut both = first_records;
    for (place, records) in second_records {
        both.entry(place).or_default().extend(records);
    }
    assert_restored(&both, &records_on(&third.addr, &data_topics(&kafka)).await);

    // The same dump again: nothing new, and the archive does not move.
    let objects = archive.list("").await.unwrap().len();
    let again = dump::until_end(&archive, &kafka, &settings, &Metrics::new())
        .await
        .unwrap();
    assert_eq!(again, 0);
    assert_eq!(archive.list("").await.unwrap().len(), objects);
}

#[tokio::test]
async fn an_object_is_created_once_and_a_retry_with_the_same_bytes_converges() {
    let s3 = S3::with_bucket("create-once").await;
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().to_str().unwrap().to_owned();
    for (location, archive) in [
        (local.clone(), Archive::open(&local).unwrap()),
        (
            "s3://create-once/p".to_owned(),
            s3.open("s3://create-once/p"),
        ),
    ] {
        let same = |b: &[u8]| b == b"first";
        let created = archive
            .create("segments/x", b"first".to_vec(), same)
            .await
            .unwrap();
        assert_eq!(created, Created::New, "{location}");
        let again = archive
            .create("segments/x", b"first".to_vec(), same)
            .await
            .unwrap();
        assert_eq!(again, Created::AlreadyThere, "{location}");
        let other = archive
            .create("segments/x", b"other".to_vec(), |b| b == b"other")
            .await
            .unwrap_err();
        assert!(
            format!("{other:#}").contains("collision"),
            "{location}: {other:#}"
        );
        assert_eq!(
            &archive.get("segments/x").await.unwrap()[..],
            b"first",
            "{location}: never written over"
        );
    }
}

/// Runs the binary to completion: (exit code, stdout, stderr).
fn run_archive(args: &[&str], broker: &[(&str, String)]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_kollus-archive"))
        .args(args)
        .envs(broker.iter().map(|(k, v)| (*k, v)))
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("running kollus-archive");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn verify_refuses_a_missing_or_empty_location_and_restore_of_nothing_touches_no_broker() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("not-there");
    let missing = missing.to_str().unwrap();
    // No broker listens there: neither command may need one.
    let nowhere = [("KAFKA_BROKERS", format!("127.0.0.1:{}", free_port()))];

    let (code, out, _) = run_archive(&["verify", "--from", missing], &nowhere);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no such directory"), "{out}");
    assert!(!std::path::Path::new(missing).exists(), "verify created it");

    let empty = dir.path().to_str().unwrap();
    let (code, out, _) = run_archive(&["verify", "--from", empty], &nowhere);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("no manifest"), "{out}");

    let started = std::time::Instant::now();
    let (code, out, err) = run_archive(&["restore", "--from", empty], &nowhere);
    assert_eq!(code, 0, "{out}{err}");
    assert!(
        out.contains("is empty") && out.contains("not touched"),
        "{out}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "it waited for a broker"
    );

    let (code, out, _) = run_archive(&["restore", "--from", missing], &nowhere);
    assert_eq!(code, 1, "{out}");
}

#[tokio::test]
async fn verify_fails_on_two_different_records_at_one_offset_and_reports_topic_coverage() {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_owned();
    let broker = Broker::start().await;
    let kafka = broker.settings();
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    publish_tagged(&broker, &kafka, "only", 30).await;
    let archive = Archive::open(&to).unwrap();
    let mut s = settings(&broker.group("coverage"));
    s.to = to.clone();
    dump::until_end(&archive, &kafka, &s, &Metrics::new())
        .await
        .unwrap();

    let (code, out, err) = run_archive(&["verify", "--from", &to], &broker.env());
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.matches("COVERED ").count(),
        12,
        "4 topics of 3 partitions: {out}"
    );
    assert!(!out.contains("NOT COVERED"), "{out}");
    assert!(out.contains("epoch 0001-"), "{out}");

    // A forged segment in the same epoch holding another record at an archived offset.
    let entries = verify::entries(&archive).await.unwrap();
    let e = &entries[0];
    let bytes = archive.get(&e.segment).await.unwrap();
    let mut records = kollus_archive::segment::read(e, &bytes).unwrap();
    records.truncate(1);
    records[0].value = Some(kollus_archive::record::Bytes::of(b"forged"));
    let mut open = kollus_archive::segment::Open::new(&records[0], e.epoch, &e.cluster_id).unwrap();
    open.push(&records[0]).unwrap();
    let (forged, entry) = open.close().unwrap();
    archive
        .create(&entry.segment, forged, |_| false)
        .await
        .unwrap();
    let manifest = serde_json::to_vec(&entry).unwrap();
    archive
        .create(&entry.manifest_path(), manifest, |_| false)
        .await
        .unwrap();
    let (code, out, _) = run_archive(&["verify", "--from", &to, "--no-topics"], &broker.env());
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("COLLISION") && out.contains("two different records"),
        "{out}"
    );
}

#[tokio::test]
async fn a_quiet_continuous_archive_logs_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_owned();
    let broker = Broker::start().await;
    let kafka = broker.settings();
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    publish_tagged(&broker, &kafka, "quiet", 30).await;
    let log = dir.path().join("archive.log");
    let mut running = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kollus-archive"))
            .args(["dump", "--to", &to])
            .envs(broker.env())
            .env("ARCHIVE_SEGMENT_SECONDS", "1")
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "text")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting kollus-archive dump"),
    );
    let archive = Archive::open(&to).unwrap();
    // Every record archived, then more arriving while it idles at the partitions' ends (where
    // librdkafka reports end-of-partition events, over and over).
    for round in 0..3 {
        let want = 30 * (round + 1);
        eventually("the records archived", Duration::from_secs(60), || async {
            let report = verify::verify(&archive, None).await.ok()?;
            (report.records >= want).then_some(())
        })
        .await;
        publish_tagged(&broker, &kafka, &format!("quiet-{round}"), 30).await;
    }
    eventually(
        "the last records archived",
        Duration::from_secs(60),
        || async {
            let report = verify::verify(&archive, None).await.ok()?;
            (report.records >= 120).then_some(())
        },
    )
    .await;
    running.0.kill().expect("kill");
    running.0.wait().expect("reaping it");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("segment archived"),
        "the log is the archive's: {text}"
    );
    let errors: Vec<&str> = text.lines().filter(|l| l.contains("ERROR")).collect();
    assert!(errors.is_empty(), "ERROR lines in a quiet run: {errors:#?}");
}

#[tokio::test]
async fn services_warn_when_topics_forget_and_no_archiver_is_in_its_group() {
    use kollus_common::kafka::{warn_if_nothing_archives, ArchiveWatch};
    let dir = tempfile::tempdir().unwrap();
    let broker = Broker::start().await;
    let mut kafka = broker.settings();
    kafka.archive_group_id = broker.group("watched-archive");
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    assert_eq!(
        warn_if_nothing_archives(kafka.clone(), Duration::ZERO).await,
        ArchiveWatch::Warned
    );
    let mut forever = kafka.clone();
    forever.retention_days = -1;
    assert_eq!(
        warn_if_nothing_archives(forever, Duration::ZERO).await,
        ArchiveWatch::TopicsKeepEverything
    );
    // A continuous archiver in that group: no warning (it is a member).
    let _running = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kollus-archive"))
            .args(["dump", "--to", dir.path().to_str().unwrap()])
            .envs(broker.env())
            .env("ARCHIVE_GROUP_ID", &kafka.archive_group_id)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("starting kollus-archive dump"),
    );
    eventually(
        "the archiver to be seen in its group",
        Duration::from_secs(30),
        || async {
            let seen = warn_if_nothing_archives(kafka.clone(), Duration::ZERO).await;
            (seen == ArchiveWatch::Archiving).then_some(())
        },
    )
    .await;
}

#[tokio::test]
async fn a_broker_is_the_archived_incarnation_only_when_its_record_at_the_last_offset_is() {
    use kollus_common::archive::{cluster_id, holdings, inspector};
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_owned();
    let archive = Archive::open(&to).unwrap();
    let archived = Broker::start().await;
    let mut s = settings(&archived.group("incarnation"));
    s.to = to;
    let kafka = archived.settings();
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    publish_tagged(&archived, &kafka, "archived", 45).await;
    dump::until_end(&archive, &kafka, &s, &Metrics::new())
        .await
        .unwrap();
    // Another broker with more records than the archive holds, at the same offsets.
    let other = archived.another_cluster().await;
    let other_kafka = other.settings();
    kollus_common::kafka::ensure_topics(&other_kafka, &other_kafka.topics())
        .await
        .unwrap();
    publish_tagged(&other, &other_kafka, "other", 90).await;

    let held = holdings(&verify::entries(&archive).await.unwrap());
    assert!(held.len() >= 3, "{held:?}");
    let (a, b) = (archived.addr.clone(), other.addr.clone());
    tokio::task::spawn_blocking(move || {
        for (addr, want) in [(a, true), (b, false)] {
            let client = inspector(&KafkaSettings::with_brokers(&addr)).unwrap();
            let cluster = cluster_id(&client);
            for ((topic, partition), h) in &held {
                let same = h
                    .matches_broker(&client, &cluster, topic, *partition)
                    .unwrap();
                assert_eq!(same, want, "{addr} {topic}/{partition} {h:?}");
            }
        }
    })
    .await
    .unwrap();
}

/// The archive's cluster id of `broker` (as `dump` records it).
async fn cluster_of(broker: &Broker) -> String {
    let brokers = broker.addr.clone();
    tokio::task::spawn_blocking(move || {
        let client = kollus_common::archive::inspector(&KafkaSettings::with_brokers(&brokers))
            .expect("a client");
        kollus_common::archive::cluster_id(&client)
    })
    .await
    .unwrap()
}

/// Every object of the archive, by path, with its bytes.
async fn objects(archive: &Archive) -> BTreeMap<String, bytes::Bytes> {
    let mut all = BTreeMap::new();
    for path in archive.list("").await.unwrap() {
        let bytes = archive.get(&path).await.unwrap();
        all.insert(path, bytes);
    }
    all
}

#[tokio::test]
async fn two_clusters_archiving_into_one_directory_at_once_keep_their_own_epochs() {
    let started = std::time::Instant::now();
    // Two clusters with the same topic names (as two deployments, or a cluster and its
    // replacement running side by side).
    let (a, b) = tokio::join!(Broker::dedicated(), Broker::dedicated());
    let ka = a.settings();
    let kb = KafkaSettings {
        brokers: b.addr.clone(),
        ..ka.clone()
    };
    let (ca, cb) = (cluster_of(&a).await, cluster_of(&b).await);
    assert!(!ca.is_empty() && !cb.is_empty() && ca != cb, "{ca} {cb}");
    for k in [&ka, &kb] {
        kollus_common::kafka::ensure_topics(k, &k.topics())
            .await
            .unwrap();
    }
    tokio::join!(
        publish_tagged(&a, &ka, "a", 90),
        publish_tagged(&b, &kb, "b", 60)
    );
    let topics = data_topics(&ka);
    let (source_a, source_b) =
        tokio::join!(records_on(&a.addr, &topics), records_on(&b.addr, &topics));

    // One directory, two archivers (two handles, as two processes), at the same time.
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap().to_owned();
    let (archive_a, archive_b) = (Archive::open(&to).unwrap(), Archive::open(&to).unwrap());
    let mut s = settings(&a.group("archive-once"));
    s.to = to.clone();
    let (ma, mb) = (Metrics::new(), Metrics::new());
    let (da, db) = tokio::join!(
        dump::until_end(&archive_a, &ka, &s, &ma),
        dump::until_end(&archive_b, &kb, &s, &mb)
    );
    assert_eq!((da.unwrap(), db.unwrap()), (90, 60));

    // Each entry's epoch is named by its number and its own cluster, in its segment's and its
    // manifest's path: whatever numbers the two archivers picked, no path is shared.
    let entries = verify::entries(&archive_a).await.unwrap();
    let mut numbers: BTreeMap<(String, i32), BTreeMap<String, u32>> = BTreeMap::new();
    for e in &entries {
        let name = format!("{:04}-{}", e.epoch, e.cluster_id);
        let dir = format!("{}/{}/{name}/", e.topic, e.partition);
        assert!(
            e.segment.starts_with(&format!("segments/{dir}"))
                && e.manifest_path().starts_with(&format!("manifest/{dir}")),
            "{} (epoch {name})",
            e.segment
        );
        assert!(e.cluster_id == ca || e.cluster_id == cb, "{e:?}");
        numbers
            .entry((e.topic.clone(), e.partition))
            .or_default()
            .insert(e.cluster_id.clone(), e.epoch);
    }
    let same_number = numbers
        .values()
        .filter(|by| by.len() == 2 && by[&ca] == by[&cb])
        .count();
    eprintln!(
        "two clusters: {} partitions where both archivers picked the same epoch number (of {})",
        same_number,
        numbers.len()
    );

    // Both archives whole: verify passes for each cluster, and for the two together.
    for (cluster, records) in [(&ca, 90), (&cb, 60)] {
        let report = verify::verify_of(&archive_a, None, Some(cluster))
            .await
            .unwrap();
        assert!(report.ok(), "{cluster}: {report:?}");
        assert_eq!((report.records, report.repeats), (records, 0), "{report:?}");
        assert!(
            report.epochs.iter().all(|e| &e.cluster_id == cluster),
            "{report:?}"
        );
    }
    let report = verify::verify(&archive_a, None).await.unwrap();
    assert!(report.ok() && report.collisions.is_empty(), "{report:?}");
    assert_eq!(report.records, 150);
    let env_b = vec![
        ("KAFKA_BROKERS", kb.brokers.clone()),
        ("KAFKA_CONTENT_TOPIC", kb.content_topic.clone()),
        ("KAFKA_PLAYBACK_TOPIC", kb.playback_topic.clone()),
        ("KAFKA_DEADLETTER_TOPIC", kb.deadletter_topic.clone()),
    ];
    let (code, out, err) = run_archive(&["verify", "--from", &to, "--cluster", &cb], &env_b);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains(&format!("-{cb} (cluster {cb})")), "{out}");
    assert!(
        !out.contains(&ca),
        "verify --cluster {cb} shows only its epochs:\n{out}"
    );
    assert_eq!(out.matches("COVERED ").count(), 9, "{out}");
    assert!(!out.contains("NOT COVERED"), "{out}");

    // Nothing is ever written over: the same dumps again add nothing and change no byte, and
    // an object created again with other bytes is refused and kept.
    let before = objects(&archive_a).await;
    let (da, db) = tokio::join!(
        dump::until_end(&archive_a, &ka, &s, &ma),
        dump::until_end(&archive_b, &kb, &s, &mb)
    );
    assert_eq!((da.unwrap(), db.unwrap()), (0, 0));
    assert_eq!(objects(&archive_a).await, before, "the archive changed");
    let (path, bytes) = before.iter().next().unwrap();
    let refused = archive_b
        .create(path, b"other".to_vec(), |there| there == b"other")
        .await
        .expect_err("an existing object written over");
    assert!(format!("{refused:#}").contains("collision"), "{refused:#}");
    assert_eq!(&archive_a.get(path).await.unwrap(), bytes);
    // Each cluster's records come back, its own only, byte for byte: a's into the shared
    // broker (where these topic names are new); b's into cluster a, after a's own records
    // (which stay as they were: no other record of a is produced again).
    let shared = Broker::start().await;
    let only = |cluster: &String| restore::RestoreSettings {
        cluster: Some(cluster.clone()),
        ..Default::default()
    };
    let into_shared = KafkaSettings {
        brokers: shared.addr.clone(),
        ..ka.clone()
    };
    let summary = restore::restore_with(&archive_a, &into_shared, &only(&ca), None)
        .await
        .unwrap();
    assert_eq!((summary.produced, summary.repeats_skipped), (90, 0));
    assert_restored(&source_a, &records_on(&shared.addr, &topics).await);
    let summary = restore::restore_with(&archive_a, &ka, &only(&cb), None)
        .await
        .unwrap();
    assert_eq!((summary.produced, summary.repeats_skipped), (60, 0));
    let mut on_a = records_on(&a.addr, &topics).await;
    let mut restored_b = Partitions::new();
    for (place, records) in &mut on_a {
        let own = source_a[place].len();
        restored_b.insert(place.clone(), records.split_off(own.min(records.len())));
    }
    assert_eq!(
        on_a, source_a,
        "cluster a's own records, before b's restored ones"
    );
    assert_restored(&source_b, &restored_b);

    eprintln!(
        "two clusters into one directory: {:.1} s",
        started.elapsed().as_secs_f64()
    );
}

#[tokio::test]
async fn archives_of_older_layouts_still_verify_and_restore() {
    // Records of a real topic, archived as the layouts before epoch names carried their
    // cluster wrote them: partition 0 as before epochs (no epoch, no cluster, no fingerprint:
    // `segments/{topic}/0/{first}-{last}.jsonl.zst`), the others in epochs named by number
    // alone (`segments/{topic}/{p}/0001/...`). Their topics renamed, so a restore into the
    // same broker makes them anew.
    let broker = Broker::start().await;
    let kafka = broker.settings();
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    publish(&broker, &kafka, 45).await;
    let current = tempfile::tempdir().unwrap();
    let archive = Archive::open(current.path().to_str().unwrap()).unwrap();
    let mut s = settings(&broker.group("old-layouts"));
    s.to = archive.location.clone();
    dump::until_end(&archive, &kafka, &s, &Metrics::new())
        .await
        .unwrap();

    let renamed = |t: &str| format!("{t}-old");
    let old_dir = tempfile::tempdir().unwrap();
    let old = Archive::open(old_dir.path().to_str().unwrap()).unwrap();
    for e in verify::entries(&archive).await.unwrap() {
        let bytes = archive.get(&e.segment).await.unwrap();
        let mut records = kollus_archive::segment::read(&e, &bytes).unwrap();
        for r in &mut records {
            r.topic = renamed(&r.topic);
        }
        let mut open = kollus_archive::segment::Open::new(&records[0], 1, &e.cluster_id).unwrap();
        for r in &records {
            open.push(r).unwrap();
        }
        let (bytes, mut entry) = open.close().unwrap();
        let (topic, p, first, last) = (
            &entry.topic,
            entry.partition,
            entry.first_offset,
            entry.last_offset,
        );
        let mut json = if p == 0 {
            entry.segment = format!("segments/{topic}/{p}/{first:020}-{last:020}.jsonl.zst");
            let mut json = serde_json::to_value(&entry).unwrap();
            for newer in [
                "epoch",
                "cluster_id",
                "last_record_sha256",
                "last_timestamp",
            ] {
                json.as_object_mut().unwrap().remove(newer);
            }
            json
        } else {
            entry.segment = format!(
                "segments/{topic}/{p}/0001/{first:020}-{last:020}-{}.jsonl.zst",
                &entry.sha256[..16]
            );
            serde_json::to_value(&entry).unwrap()
        };
        json["closed_at"] = "2026-01-01T00:00:00Z".into();
        old.create(&entry.segment, bytes.to_vec(), |_| false)
            .await
            .unwrap();
        old.create(
            &entry.manifest_path(),
            serde_json::to_vec(&json).unwrap(),
            |_| false,
        )
        .await
        .unwrap();
    }
    assert!(
        old.list("segments")
            .await
            .unwrap()
            .iter()
            .any(|p| p.contains("/0/0000")),
        "a pre-epoch path"
    );

    let report = verify::verify(&old, None).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!((report.records, report.repeats), (45, 0), "{report:?}");
    let epochs: std::collections::BTreeSet<String> =
        report.epochs.iter().map(|e| e.name.clone()).collect();
    let cluster = cluster_of(&broker).await;
    assert_eq!(
        epochs,
        ["0000".to_owned(), format!("0001-{cluster}")].into(),
        "{report:?}"
    );

    let summary = restore::restore(&old, &kafka, None).await.unwrap();
    assert_eq!((summary.produced, summary.repeats_skipped), (45, 0));
    let topics: Vec<String> = data_topics(&kafka).iter().map(|t| renamed(t)).collect();
    let topics: Vec<&str> = topics.iter().map(String::as_str).collect();
    let source = records_on(&broker.addr, &data_topics(&kafka)).await;
    let source: Partitions = source
        .into_iter()
        .map(|((t, p), records)| ((renamed(&t), p), records))
        .collect();
    assert_restored(&source, &records_on(&broker.addr, &topics).await);
}
