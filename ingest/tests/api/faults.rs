//! Kafka unreachable: ingest keeps answering 200 from its spool and forwards everything once
//! Kafka is back. A real TCP proxy stands between ingest and the broker and is cut.

use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use kollus_test_support::{eventually, fixture, free_port, scrape, Broker};
use rdkafka::consumer::{Consumer as _, StreamConsumer};
use rdkafka::message::{Headers as _, Message as _};
use rdkafka::ClientConfig;

use crate::helpers::*;

/// Envelope ids on `topic` (the `id` header), read until `want` are all there or `timeout`.
async fn ids_on_topic(
    brokers: &str,
    topic: &str,
    want: &HashSet<String>,
    timeout: Duration,
) -> (HashSet<String>, usize) {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("fault-reader-{}", uuid::Uuid::now_v7()))
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("log_level", "3")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    let (mut seen, mut total) = (HashSet::new(), 0usize);
    let deadline = tokio::time::Instant::now() + timeout;
    while !want.is_subset(&seen) {
        match tokio::time::timeout_at(deadline, consumer.recv()).await {
            Ok(Ok(m)) => {
                total += 1;
                let id = m
                    .headers()
                    .and_then(|h| h.iter().find(|h| h.key == "id").and_then(|h| h.value))
                    .map(|v| String::from_utf8_lossy(v).into_owned())
                    .expect("every record has an id header");
                seen.insert(id);
            }
            // The topic may not exist yet: ingest creates it once Kafka answers (in the
            // background, with backoff), which after an outage can be a moment after the restore.
            Ok(Err(rdkafka::error::KafkaError::MessageConsumption(
                rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
            ))) => continue,
            Ok(Err(e)) => panic!("reading {topic}: {e}"),
            Err(_) => break,
        }
    }
    (seen, total)
}

/// The envelope id (the `id` header) of every record `topic` holds, each partition read from
/// its start to its end: a record twice is here twice.
async fn every_id_on_topic(brokers: &str, topic: &str) -> Vec<String> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        use rdkafka::consumer::BaseConsumer;
        use rdkafka::error::KafkaError;
        use rdkafka::{Offset, TopicPartitionList};
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            // Assigned, never subscribed: the group only names the client.
            .set("group.id", "fault-reader-to-end")
            .set("enable.auto.commit", "false")
            .set("enable.partition.eof", "true")
            .set("log_level", "3")
            .create()
            .unwrap();
        let partitions = kollus_common::kafka::partitions(&consumer, &topic).unwrap();
        assert!(!partitions.is_empty(), "{topic}: no partitions");
        let mut assignment = TopicPartitionList::new();
        for p in &partitions {
            assignment
                .add_partition_offset(&topic, *p, Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&assignment).unwrap();
        let (mut ids, mut at_end) = (Vec::new(), HashSet::new());
        let deadline = Instant::now() + Duration::from_secs(60);
        while at_end.len() < partitions.len() {
            assert!(Instant::now() < deadline, "{topic}: never read to its end");
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => ids.push(
                    m.headers()
                        .and_then(|h| h.iter().find(|h| h.key == "id").and_then(|h| h.value))
                        .map(|v| String::from_utf8_lossy(v).into_owned())
                        .expect("every record has an id header"),
                ),
                Some(Err(KafkaError::PartitionEOF(p))) => {
                    at_end.insert(p);
                }
                Some(Err(e)) => panic!("reading {topic}: {e}"),
                None => {}
            }
        }
        ids
    })
    .await
    .unwrap()
}

/// One LMS callback for a distinct user; returns (status, answer id, latency).
async fn post_one(
    client: &reqwest::Client,
    base: &str,
    n: usize,
) -> (u16, Option<String>, Duration) {
    let body = String::from_utf8(fixture("lms-seed.form"))
        .unwrap()
        .replace("%22181353%22", &format!("%22user{n}%22"));
    let started = Instant::now();
    let res = client
        .post(format!("{base}/kollus/lms?secret={LMS_SECRET}"))
        .header("content-type", FORM)
        .body(body)
        .send()
        .await;
    let elapsed = started.elapsed();
    match res {
        Ok(r) => {
            let status = r.status().as_u16();
            let v: Option<serde_json::Value> = r.json().await.ok();
            let id = v.and_then(|v| v["id"].as_str().map(str::to_owned));
            (status, id, elapsed)
        }
        // No answer: the transport error in place of the envelope id, for the failure message.
        Err(e) => {
            let mut why = format!("no answer: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(cause) = source {
                why.push_str(&format!(": {cause}"));
                source = cause.source();
            }
            (0, Some(why), elapsed)
        }
    }
}

/// A client for many callbacks over a minute: it never reuses a pooled connection that has been
/// idle long enough for ingest to close it (actix-web's keep-alive is 5 s). Reusing one as the
/// server closes it is a transport error no real sender retries here, and no answer of ingest's.
fn steady_client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(Duration::from_secs(1))
        .build()
        .expect("a reqwest client")
}

#[tokio::test]
async fn kafka_unreachable_for_a_minute_loses_nothing() {
    let _log_guard = std::env::var_os("TEST_LOG").is_some().then(|| {
        kollus_common::telemetry::init(&kollus_common::telemetry::LogSettings {
            log_format: kollus_common::telemetry::LogFormat::Text,
            log_filter: "info,librdkafka=warn".into(),
        })
    });
    const CALLBACKS: usize = 5000;
    const OUTAGE: Duration = Duration::from_secs(60);
    // How long a request waits for Kafka's acknowledgement before the spool takes it (the
    // default, named here because the timing below rests on it).
    const ACK_TIMEOUT: Duration = Duration::from_millis(1500);
    let app = spawn_app_on(Broker::start_behind_proxy().await, |s| {
        s.ack_timeout = ACK_TIMEOUT;
    })
    .await;
    // Kafka is up: a first callback is acknowledged (straight through, or spooled while the
    // fresh broker is still creating ingest's topics: counted here, so only the outage's count).
    let (status, first_id, _) = post_one(&app.client, &app.address, 0).await;
    assert_eq!(status, 200);
    let first_id = first_id.expect("the answer names the envelope");
    let spooled_before = scrape(&app.address, "kollus_ingest_spooled_total")
        .await
        .unwrap_or(0.0);

    app.broker.proxy().cut();
    let client = steady_client();
    let started = Instant::now();
    let interval = OUTAGE.mul_f64(0.9) / CALLBACKS as u32;
    let results: Vec<_> = futures_util::stream::iter(1..=CALLBACKS)
        .map(|n| {
            let (client, base) = (client.clone(), app.address.clone());
            async move {
                // A steady arrival rate over the outage, as players and Kollus would send.
                tokio::time::sleep_until((started + interval * n as u32).into()).await;
                post_one(&client, &base, n).await
            }
        })
        .buffer_unordered(512)
        .collect()
        .await;
    let not_ok: Vec<_> = results
        .iter()
        .filter(|r| r.0 != 200)
        .map(|r| (r.0, r.1.clone()))
        .collect();
    assert!(
        not_ok.is_empty(),
        "{} callbacks not answered 200: {:?}",
        not_ok.len(),
        &not_ok[..not_ok.len().min(10)]
    );
    // What the code controls: a request waits for Kafka at most ACK_TIMEOUT, and only until
    // the first one gave up; from then on the spool takes every request at once. The rest of
    // an answer is a spool append and the scheduler, which two busy cores can stretch by a
    // second: the slowest is bounded by the deadline plus 1.5 s (Kollus's own 3 s limit), and
    // the median, which a few stalls do not move, by half the deadline (every request waiting
    // for Kafka would put it past the deadline).
    let mut latencies: Vec<Duration> = results.iter().map(|r| r.2).collect();
    latencies.sort_unstable();
    let (median, slowest) = (
        latencies[latencies.len() / 2],
        latencies[latencies.len() - 1],
    );
    assert!(
        slowest < ACK_TIMEOUT + Duration::from_millis(1500),
        "slowest answer took {slowest:?}; Kollus gives up at 3 s"
    );
    assert!(
        median < ACK_TIMEOUT / 2,
        "the median answer took {median:?}: requests kept waiting for Kafka during the outage"
    );
    let spooled = scrape(&app.address, "kollus_ingest_spooled_total")
        .await
        .unwrap_or(0.0);
    assert_eq!(
        spooled - spooled_before,
        CALLBACKS as f64,
        "all {CALLBACKS} spooled"
    );
    let ready = app
        .client
        .get(format!("{}/readyz", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "not ready while Kafka is unreachable");
    tokio::time::sleep_until((started + OUTAGE).into()).await;

    app.broker.proxy().restore();
    let acked: HashSet<String> = results.into_iter().filter_map(|r| r.1).collect();
    assert_eq!(
        acked.len(),
        CALLBACKS,
        "each answer names an envelope of its own"
    );
    // Readiness returns once the forwarder has emptied the spool: nothing more is on its way.
    eventually(
        "the spool to drain and readiness to return",
        Duration::from_secs(120),
        || async {
            let res = app
                .client
                .get(format!("{}/readyz", app.address))
                .send()
                .await
                .ok()?;
            (res.status() == 200).then_some(())
        },
    )
    .await;
    let ids = every_id_on_topic(&app.broker.addr, &app.topics.playback).await;
    let distinct: HashSet<&String> = ids.iter().collect();
    let missing = acked
        .iter()
        .chain([&first_id])
        .filter(|id| !distinct.contains(id))
        .count();
    assert_eq!(missing, 0, "every acknowledged callback is on the topic");
    // With none missing, CALLBACKS + 1 distinct ids are the acknowledged ones and no other; as
    // many records as ids: none twice.
    assert_eq!(
        (ids.len(), distinct.len()),
        (CALLBACKS + 1, CALLBACKS + 1),
        "(records, distinct ids) on the topic: nothing else, nothing doubled"
    );
}

struct Ingest(Child);

impl Drop for Ingest {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_ingest(port: u16, broker: &Broker, spool: &std::path::Path) -> Ingest {
    Ingest(
        Command::new(env!("CARGO_BIN_EXE_ingest"))
            .env("LISTEN_ADDR", format!("127.0.0.1:{port}"))
            .env("CALLBACK_SECRET", SECRET)
            .env("LMS_CALLBACK_SECRET", LMS_SECRET)
            .envs(broker.env())
            .env("INGEST_SPOOL_DIR", spool)
            .env("RUST_LOG", "error")
            .stdin(Stdio::null())
            .spawn()
            .expect("starting the ingest binary"),
    )
}

#[tokio::test]
async fn kill_9_mid_outage_keeps_every_acknowledged_callback() {
    let broker = Broker::start_behind_proxy().await;
    let spool = spool_dir();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let up = || async {
        let res = client.get(format!("{base}/healthz")).send().await.ok()?;
        res.status().is_success().then_some(())
    };
    let mut ingest = start_ingest(port, &broker, &spool);
    eventually("ingest to start", Duration::from_secs(30), up).await;
    broker.proxy().cut();

    // Callbacks pour in; ingest is killed (SIGKILL) while they do.
    let sender = {
        let (client, base) = (client.clone(), base.clone());
        tokio::spawn(async move {
            futures_util::stream::iter(0..3000)
                .map(|n| post_one(&client, &base, n))
                .buffer_unordered(64)
                .collect::<Vec<_>>()
                .await
        })
    };
    eventually(
        "some callbacks to be spooled",
        Duration::from_secs(30),
        || async {
            let spooled = scrape(&base, "kollus_ingest_spooled_total").await?;
            (spooled >= 1000.0).then_some(())
        },
    )
    .await;
    ingest.0.kill().expect("kill -9");
    ingest.0.wait().unwrap();
    let first_round = sender.await.unwrap();
    let mut acked: HashSet<String> = first_round
        .iter()
        .filter(|r| r.0 == 200)
        .filter_map(|r| r.1.clone())
        .collect();
    let refused = first_round.iter().filter(|r| r.0 != 200).count();
    assert!(
        acked.len() >= 1000 && refused > 0,
        "killed mid-stream: {} acked, {refused} cut off",
        acked.len()
    );

    // Restarted on the same spool, still without Kafka: it takes more, then forwards it all.
    let _ingest = start_ingest(port, &broker, &spool);
    eventually("ingest to restart", Duration::from_secs(30), up).await;
    for n in 5000..5100 {
        let (status, id, _) = post_one(&client, &base, n).await;
        assert_eq!(status, 200);
        acked.insert(id.unwrap());
    }
    broker.proxy().restore();
    let (seen, _) = ids_on_topic(
        &broker.addr,
        &broker.settings().playback_topic,
        &acked,
        Duration::from_secs(90),
    )
    .await;
    assert_eq!(
        acked.difference(&seen).count(),
        0,
        "every acknowledged callback is on the topic"
    );
    let _ = std::fs::remove_dir_all(&spool);
}

#[tokio::test]
async fn a_full_spool_answers_503_with_retry_after_instead_of_acknowledging() {
    let app = spawn_app_on(Broker::start_behind_proxy().await, |s| {
        s.spool_limit = 1;
        s.ack_timeout = Duration::from_millis(300);
    })
    .await;
    app.broker.proxy().cut();
    let res = app.post("lms", FORM, fixture("lms-seed.form")).await;
    assert_eq!(res.status(), 503, "neither Kafka nor the spool can take it");
    assert!(
        res.headers().contains_key("retry-after"),
        "Kollus is told to retry"
    );
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "spool_full");
    let spooled = scrape(&app.address, "kollus_ingest_spooled_total").await;
    assert_eq!(spooled, Some(0.0), "nothing was written to the spool");
}
