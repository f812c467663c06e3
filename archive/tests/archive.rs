//! The archive in an S3-compatible bucket (moto's server from PyPI, `scripts/s3.sh`): dump up to
//! the end, verify, restore into another broker; a damaged segment found by verify; and a dump
//! killed mid-stream, which repeats records and never skips one.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kollus_archive::dump::{self, DumpSettings};
use kollus_archive::metrics::Metrics;
use kollus_archive::store::Archive;
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
        group_id: group.into(),
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
    let kafka = KafkaSettings::with_brokers(&broker.addr);
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    publish(&broker, &kafka, 60).await;

    let archive = Archive::open("s3://kollus-archive/backups/prod").unwrap();
    let metrics = Metrics::new();
    let archived = dump::until_end(&archive, &kafka, &settings("s3-test"), &metrics)
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

    let other = Broker::start().await;
    let summary = restore::restore(&archive, &KafkaSettings::with_brokers(&other.addr), None)
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
    let kafka = KafkaSettings::with_brokers(&broker.addr);
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    publish(&broker, &kafka, 300).await;
    let archive = Archive::open(dir.path().to_str().unwrap()).unwrap();
    dump::until_end(&archive, &kafka, &settings("damage-test"), &Metrics::new())
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
    let kafka = KafkaSettings::with_brokers(&broker.addr);
    kollus_common::kafka::ensure_topics(&kafka, &kafka.topics())
        .await
        .unwrap();
    publish(&broker, &kafka, 300).await;
    let to = dir.path().to_str().unwrap().to_owned();
    let mut running = KillOnDrop(
        Command::new(env!("CARGO_BIN_EXE_kollus-archive"))
            .args(["dump", "--to", &to])
            .env("KAFKA_BROKERS", &broker.addr)
            .env("ARCHIVE_GROUP_ID", "crash-test")
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
    let mut settings = settings("crash-test");
    settings.segment_bytes = 2_000;
    dump::until_end(&archive, &kafka, &settings, &Metrics::new())
        .await
        .unwrap();
    let report = verify::verify(&archive, None).await.unwrap();
    assert!(report.ok(), "no gap after the crash: {report:?}");
    assert!(report.late_starts.is_empty(), "{report:?}");
    assert_eq!(report.records - report.repeats, 300, "{report:?}");

    let other = Broker::start().await;
    let summary = restore::restore(&archive, &KafkaSettings::with_brokers(&other.addr), None)
        .await
        .unwrap();
    assert_eq!(
        (summary.produced, summary.repeats_skipped),
        (300, report.repeats)
    );
}
