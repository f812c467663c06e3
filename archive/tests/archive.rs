//! The archive in an S3-compatible bucket (moto's server from PyPI, `scripts/s3.sh`): dump up to
//! the end, verify, restore into another broker; a damaged segment found by verify; a dump
//! killed mid-stream, which repeats records and never skips one; a replaced broker (offsets from
//! 0 again) archived into the same location without a byte of the first one's archive changing;
//! objects created only once; verify and restore on missing and empty locations; a forged
//! collision; and a quiet continuous run whose log has no ERROR line.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kollus_archive::dump::{self, DumpSettings};
use kollus_archive::metrics::Metrics;
use kollus_archive::store::{Archive, Created};
use kollus_archive::{restore, verify};
use kollus_common::settings::KafkaSettings;
use kollus_test_support::{eventually, free_port, topic_record_count, workspace_root, Broker};

/// A child process killed (SIGKILL) when dropped.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// moto's S3 on a free port, with a bucket, and the `AWS_*` variables pointing at it.
async fn s3_with_bucket(bucket: &str) -> KillOnDrop {
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
    // Each test runs in a process of its own (nextest): these are this test's alone.
    for (k, v) in [
        ("AWS_ACCESS_KEY_ID", "test"),
        ("AWS_SECRET_ACCESS_KEY", "test"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ] {
        std::env::set_var(k, v);
    }
    server
}

fn settings(group: &str) -> DumpSettings {
    DumpSettings {
        to: String::new(),
        until_end: true,
        group_id: Some(group.into()),
        // Small segments, so a partition spans several.
        segment_bytes: 2_000,
        segment_seconds: 60,
    }
}

async fn publish(broker: &Broker, kafka: &KafkaSettings, n: usize) {
    for i in 0..n {
        let topic = &kafka.topics()[i % 3];
        // Bytes that are not UTF-8 as well as JSON: both must come back byte-for-byte.
        let value = if i % 5 == 0 {
            vec![0xff, 0x00, i as u8]
        } else {
            format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(200)).into_bytes()
        };
        broker
            .publish_raw(topic, &format!("key-{}", i % 4), &value)
            .await;
    }
}

#[tokio::test]
async fn an_archive_in_a_bucket_verifies_and_restores_into_another_broker() {
    let _s3 = s3_with_bucket("kollus-archive").await;
    let broker = Broker::start().await;
    let kafka = broker.settings();
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    publish(&broker, &kafka, 60).await;

    let archive = Archive::open("s3://kollus-archive/backups/prod").unwrap();
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
    for topic in kafka.topics() {
        assert_eq!(
            topic_record_count(&other.addr, topic),
            topic_record_count(&broker.addr, topic),
            "{topic}"
        );
    }
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
    let entries = kollus_archive::verify::entries(&archive).await.unwrap();
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
    let to = dir.path().to_str().unwrap().to_owned();
    let mut running = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kollus-archive"))
            .args(["dump", "--to", &to])
            .envs(broker.env())
            .env("ARCHIVE_GROUP_ID", broker.group("crash-test"))
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

    // A new run of the same group finishes the job from its committed offsets.
    let mut settings = settings(&broker.group("crash-test"));
    settings.segment_bytes = 2_000;
    dump::until_end(&archive, &kafka, &settings, &Metrics::new())
        .await
        .unwrap();
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
}

/// Records that look like the services' (an `id` header) or not (none), distinct per broker.
async fn publish_tagged(broker: &Broker, kafka: &KafkaSettings, tag: &str, n: usize) {
    for i in 0..n {
        let topic = &kafka.topics()[i % 3];
        let value = format!("{{\"broker\":\"{tag}\",\"n\":{i}}}");
        broker
            .publish_raw(topic, &format!("key-{}", i % 4), value.as_bytes())
            .await;
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
    let mut total = 0;
    for topic in kafka.topics() {
        total += topic_record_count(&third.addr, topic);
    }
    assert_eq!(total, 150);

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
    let _s3 = s3_with_bucket("create-once").await;
    let dir = tempfile::tempdir().unwrap();
    for location in [
        dir.path().to_str().unwrap().to_owned(),
        "s3://create-once/p".to_owned(),
    ] {
        let archive = Archive::open(&location).unwrap();
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
    assert_eq!(out.matches("COVERED ").count(), 9, "{out}");
    assert!(!out.contains("NOT COVERED"), "{out}");
    assert!(out.contains("epoch 1"), "{out}");

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
            let client = inspector(&addr).unwrap();
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
