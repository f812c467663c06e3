//! The broker alone: how many records per second a plain idempotent `acks=all` producer gets
//! acknowledged, with as many in flight as ingest would have. ingest's figure is reported as a
//! share of this ceiling.
//!
//! Usage: broker-ceiling BROKERS RECORDS BODY_FILE [IN_FLIGHT]

use std::time::{Duration, Instant};

use futures_util::StreamExt as _;
use kollus_common::kafka;
use kollus_common::settings::KafkaSettings;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, n, body) = match args.as_slice() {
        [_, b, n, f, ..] => (b.clone(), n.parse::<usize>()?, std::fs::read(f)?),
        _ => anyhow::bail!("usage: broker-ceiling BROKERS RECORDS BODY_FILE [IN_FLIGHT]"),
    };
    let in_flight: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(256);
    let settings = KafkaSettings::with_brokers(&brokers);
    kafka::ensure_topics(&settings, &["bench.ceiling"]).await?;
    let producer = kafka::durable_producer(&settings, "bench-ceiling", Duration::from_secs(30))?;
    let started = Instant::now();
    let failed = futures_util::stream::iter(0..n)
        .map(|i| {
            let (producer, body) = (&producer, &body);
            async move {
                kafka::send(
                    producer,
                    "bench.ceiling",
                    &format!("k{}", i % 1024),
                    body,
                    kafka::headers(&[]),
                    Duration::from_secs(30),
                )
                .await
                .is_err()
            }
        })
        .buffer_unordered(in_flight)
        .filter(|failed| std::future::ready(*failed))
        .count()
        .await;
    let secs = started.elapsed().as_secs_f64();
    println!(
        "RESULT rps={:.0} records={n} failed={failed} seconds={secs:.2}",
        n as f64 / secs
    );
    Ok(())
}
