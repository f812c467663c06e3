//! The broker alone: how many records per second a plain idempotent `acks=all` producer gets
//! acknowledged, with as many in flight as ingest would have. ingest's figure is reported as a
//! share of this ceiling.
//!
//! The records are the ones ingest would produce for BODY_FILE (an LMS form): the same envelope
//! bytes and headers, so the ceiling carries exactly ingest's load and nothing of ingest's work.
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
    let body = envelope_of(&body)?;
    let settings = KafkaSettings::with_brokers(&brokers);
    // BENCH_TOPIC: where to put the records (bench/archive.sh fills kollus.playback.v1).
    let topic = std::env::var("BENCH_TOPIC").unwrap_or_else(|_| "bench.ceiling".into());
    let topic = topic.as_str();
    kafka::ensure_topics(&settings, &[topic]).await?;
    let producer = kafka::durable_producer(&settings, "bench-ceiling", Duration::from_secs(30))?;
    let started = Instant::now();
    let failed = futures_util::stream::iter(0..n)
        .map(|i| {
            let (producer, body) = (&producer, &body);
            async move {
                kafka::send(
                    producer,
                    topic,
                    &format!("k{}", i % 1024),
                    body,
                    // Unique per record, as ingest's (bench/archive.sh restores by id).
                    kafka::headers(&[
                        ("kind", "lms"),
                        ("schema_version", "1"),
                        ("id", &format!("{i:0>width$}", width = ID.len())),
                    ]),
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

/// An envelope id's length, for the `id` header ingest sets.
const ID: &str = "019ad4f2-0000-7000-8000-000000000000";

/// The envelope ingest publishes for an LMS form body.
fn envelope_of(body: &[u8]) -> anyhow::Result<Vec<u8>> {
    use kollus_common::envelope::{Envelope, RawRequest};
    use kollus_common::kollus::lms::request::{locate, DEFAULT_FIELDS};
    let body = body.trim_ascii_end();
    let names: Vec<String> = DEFAULT_FIELDS.iter().map(|s| s.to_string()).collect();
    let located = locate(&names, &Default::default(), body, false)?;
    let envelope = Envelope {
        form: located.form,
        ..Envelope::new(
            kollus_common::kollus::CallbackKind::Lms,
            located.report,
            RawRequest::body(Some("application/x-www-form-urlencoded"), body),
        )
    };
    Ok(serde_json::to_vec(&envelope)?)
}
