//! Helpers for `bench/archive.sh`: varied, real-shaped LMS reports published as ingest would,
//! and a wait for a worker's group to have committed a number of records.
//!
//! Usage:
//!   archive-bench publish BROKERS RECORDS [FIRST]   reports FIRST.. FIRST+RECORDS-1 (FIRST 0)
//!   archive-bench committed BROKERS GROUP TOPIC N   waits until GROUP committed N records
//!
//! Report `i` belongs to session `i % 40,000` (its `i / 40,000 + 1`-th report, counters
//! growing), of one of 12,000 users on one of 1,500 videos; players, devices, OS versions, block
//! counts (10 to 120) and played-block patterns vary by session, as a course platform's
//! traffic does. Each is the form body Kollus posts (`json_data=` and the URL-encoded JSON, as
//! in `lms-seed.form`) in ingest's envelope, with ingest's headers: what the topics and the
//! archive hold in production, not one report repeated.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use futures_util::StreamExt as _;
use kollus_common::envelope::{header, Envelope, RawRequest};
use kollus_common::kafka;
use kollus_common::kollus::lms::LmsReport;
use kollus_common::kollus::CallbackKind;
use kollus_common::settings::KafkaSettings;

const TOPIC: &str = "kollus.playback.v1";
const SESSIONS: u64 = 40_000;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [_, "publish", brokers, records, rest @ ..] => {
            let records: u64 = records.parse().context("RECORDS")?;
            let first: u64 = rest.first().map_or(Ok(0), |s| s.parse()).context("FIRST")?;
            publish(brokers, first, records).await
        }
        [_, "committed", brokers, group, topic, n] => {
            wait_committed(brokers, group, topic, n.parse().context("N")?)
        }
        _ => anyhow::bail!(
            "usage: archive-bench publish BROKERS RECORDS [FIRST] | committed BROKERS GROUP TOPIC N"
        ),
    }
}

/// A small deterministic mix (splitmix64), so runs publish the same reports.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn key(seed: u64, len: usize) -> String {
    const ALNUM: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len)
        .map(|i| ALNUM[(mix(seed ^ (i as u64) << 7) % ALNUM.len() as u64) as usize] as char)
        .collect()
}

/// Report `i`: the form body Kollus posts and its parsed report.
fn report(i: u64) -> (String, LmsReport) {
    let s = i % SESSIONS;
    let n = i / SESSIONS + 1;
    let h = mix(s);
    let user = format!("{}", 100_000 + mix(s % 12_000) % 900_000);
    let media = key(0x006d_6564_6961 ^ (h % 1_500), 8);
    let (device, os, version) = match h % 4 {
        0 => ("x86_64", "MAC", format!("19.{}.0", h % 7)),
        1 => ("SM-G991N", "Android", format!("2.{}.{}", h % 5, h % 13)),
        2 => ("iPhone14,5", "iOS", format!("3.{}.{}", h % 4, h % 9)),
        _ => ("AMD64", "WIN", format!("19.{}.2", h % 6)),
    };
    let blocks = 10 + h % 111;
    let duration = blocks * 49;
    let playtime = (n * (20 + h % 40)).min(duration * 2);
    let start_at = 1_764_000_000 + (h % 2_592_000) as i64;
    let first_block = h % blocks;
    let mut b = String::new();
    for k in 0..blocks {
        let played = k >= first_block && k < first_block + n * (1 + h % 3);
        let t = if played { 20 + mix(h ^ k) % 29 } else { 0 };
        b.push_str(&format!(
            r#""b{k}":"{}","t{k}":"{t}","p{k}":"{}","#,
            u8::from(played),
            t * 100 / 49
        ));
    }
    b.pop();
    let json = format!(
        r#"{{"user_info":{{"content_provider_key":"providerkey","client_user_id":"{user}","player_id":"{}","host_name":"host.video.kr.kollus.com","device":"{device}","os":"{os}","version":"{version}"}},"content_info":{{"duration":"{duration}","encoding_profile":"pc1-high","media_content_key":"{media}","channel_key":"ch-{}","real_playtime":"{}","playtime":"{playtime}","playtime_percent":"{}","start_at":"{start_at}","last_play_at":"{}","runtime":"{}","showtime":"{playtime}"}},"block_info":{{"block_count":"{blocks}","blocks":{{{b}}}}}}}"#,
        key(h, 24),
        h % 40,
        playtime.saturating_sub(h % 5),
        (playtime * 100 / duration).min(100),
        (playtime + h % 60).min(duration),
        playtime + 3 + h % 20,
    );
    let report = LmsReport::from_json(json.as_bytes()).expect("a generated report is valid");
    let body = format!(
        "json_data={}",
        percent_encoding::utf8_percent_encode(&json, percent_encoding::NON_ALPHANUMERIC)
    );
    (body, report)
}

async fn publish(brokers: &str, first: u64, records: u64) -> anyhow::Result<()> {
    let settings = KafkaSettings::with_brokers(brokers);
    kafka::ensure_topics(&settings, &settings.topics()).await?;
    let producer = kafka::durable_producer(&settings, "bench-archive", Duration::from_secs(60))?;
    let started = Instant::now();
    let results = futures_util::stream::iter(first..first + records)
        .map(|i| {
            let producer = &producer;
            async move {
                let (body, report) = report(i);
                let key = report.partition_key();
                let e = Envelope::new(
                    CallbackKind::Lms,
                    report,
                    RawRequest::body(Some("application/x-www-form-urlencoded"), body.as_bytes()),
                );
                let value = serde_json::to_vec(&e).expect("an envelope serializes");
                let id = e.id.to_string();
                let sent = kafka::send(
                    producer,
                    TOPIC,
                    &key,
                    &value,
                    kafka::headers(&[
                        (header::KIND, "lms"),
                        (header::SCHEMA_VERSION, "1"),
                        (header::ID, &id),
                    ]),
                    Duration::from_secs(60),
                )
                .await;
                (sent.is_ok(), value.len())
            }
        })
        .buffer_unordered(512)
        .fold((0u64, 0u64), |(failed, bytes), (ok, len)| async move {
            (failed + u64::from(!ok), bytes + len as u64)
        })
        .await;
    anyhow::ensure!(
        results.0 == 0,
        "{} records were not acknowledged",
        results.0
    );
    let secs = started.elapsed().as_secs_f64();
    println!(
        "RESULT publish records={records} seconds={secs:.1} rps={:.0} envelope_bytes_per_report={:.0}",
        records as f64 / secs,
        results.1 as f64 / records as f64
    );
    Ok(())
}

/// Waits until `group` has committed `n` records of `topic` (its committed offsets, summed over
/// the partitions: every offset from 0), printing progress every 5 s.
fn wait_committed(brokers: &str, group: &str, topic: &str, n: i64) -> anyhow::Result<()> {
    use rdkafka::consumer::{BaseConsumer, Consumer as _};
    use rdkafka::types::RDKafkaErrorCode;
    use rdkafka::{Offset, TopicPartitionList};
    let client: BaseConsumer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("log_level", "3")
        .create()?;
    let partitions = kafka::partitions(&client, topic)?;
    let started = Instant::now();
    let mut last = Instant::now();
    loop {
        let mut tpl = TopicPartitionList::new();
        for p in &partitions {
            tpl.add_partition(topic, *p);
        }
        let done: i64 = match client.committed_offsets(tpl, Duration::from_secs(10)) {
            Ok(committed) => committed
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum(),
            // A new cluster's group coordinator answers these for seconds while Kafka loads
            // __consumer_offsets: nothing is committed yet, as far as this wait is concerned.
            Err(e)
                if matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::NotCoordinator
                            | RDKafkaErrorCode::CoordinatorLoadInProgress
                            | RDKafkaErrorCode::CoordinatorNotAvailable
                    )
                ) =>
            {
                0
            }
            Err(e) => return Err(e.into()),
        };
        if done >= n {
            return Ok(());
        }
        if last.elapsed() >= Duration::from_secs(5) {
            last = Instant::now();
            eprintln!(
                "committed {done}/{n} after {:.0} s",
                started.elapsed().as_secs_f64()
            );
        }
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(3600),
            "{group} committed {done} of {n} records of {topic} within an hour"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
