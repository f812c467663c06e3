//! ingest's own work per callback, without HTTP or a broker: parse the seed LMS form, wrap it in
//! an envelope and serialize it, as fast as one core can.
//!
//! Usage: ingest-path BODY_FILE [ITERATIONS]

use std::time::Instant;

use kollus_common::envelope::{Envelope, RawBody, RawRequest};
use kollus_common::kollus::lms::LmsReport;
use kollus_common::kollus::CallbackKind;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let body = std::fs::read(
        args.get(1)
            .ok_or_else(|| anyhow::anyhow!("usage: ingest-path BODY_FILE [N]"))?,
    )?;
    let body = body.trim_ascii_end();
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let mut bytes = 0usize;
    let started = Instant::now();
    for _ in 0..n {
        let report = LmsReport::from_body(body, false)?;
        let key = report.partition_key();
        let envelope = Envelope::new(
            CallbackKind::Lms,
            report,
            RawRequest {
                content_type: None,
                body: RawBody::from_bytes(body),
            },
        );
        bytes += serde_json::to_string(&envelope)?.len() + key.len();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "RESULT rps={:.0} records={n} bytes_per_record={} seconds={secs:.2}",
        n as f64 / secs,
        bytes / n
    );
    Ok(())
}
