//! ingest's own work per LMS callback, without HTTP or a broker: find and parse the document in
//! the form, wrap it in an envelope and serialize it, as fast as one core can. Also the same with
//! the hash check (`LMS_HASH_POLICY=record`), and, for scale, the cost of only building a
//! `serde_json::Value` tree of the document (what the hand-written parser did before its walk).
//!
//! Usage: ingest-path BODY_FILE [ITERATIONS]

use std::collections::BTreeMap;
use std::time::Instant;

use kollus_common::envelope::{Envelope, RawRequest};
use kollus_common::kollus::form::parse_form;
use kollus_common::kollus::lms::checksum;
use kollus_common::kollus::lms::request::{locate, DEFAULT_FIELDS};
use kollus_common::kollus::CallbackKind;

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let body = std::fs::read(
        args.get(1)
            .ok_or_else(|| anyhow::anyhow!("usage: ingest-path BODY_FILE [N]"))?,
    )?;
    let body = body.trim_ascii_end();
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let names: Vec<String> = DEFAULT_FIELDS.iter().map(|s| s.to_string()).collect();
    let query = BTreeMap::new();

    let path = |check_hash: bool| -> anyhow::Result<(f64, usize)> {
        let mut bytes = 0usize;
        let started = Instant::now();
        for _ in 0..n {
            let lms_hash = check_hash.then(|| checksum::verify(body, b"bench-key"));
            let located = locate(&names, &query, body, false)?;
            let key = located.report.partition_key();
            let envelope = Envelope {
                form: located.form,
                lms_hash,
                ..Envelope::new(
                    CallbackKind::Lms,
                    located.report,
                    RawRequest::body(None, body),
                )
            };
            bytes += serde_json::to_string(&envelope)?.len() + key.len();
        }
        Ok((n as f64 / started.elapsed().as_secs_f64(), bytes / n))
    };
    let (rps, bytes_per_record) = path(false)?;
    let (rps_hash, _) = path(true)?;

    let document = parse_form(body)?
        .remove("json_data")
        .ok_or_else(|| anyhow::anyhow!("the body has no json_data"))?;
    let started = Instant::now();
    for _ in 0..n {
        let tree: serde_json::Value = serde_json::from_str(&document)?;
        std::hint::black_box(tree);
    }
    let value_tree = n as f64 / started.elapsed().as_secs_f64();

    println!(
        "RESULT rps={rps:.0} rps_with_hash={rps_hash:.0} value_tree_only={value_tree:.0} records={n} bytes_per_record={bytes_per_record}"
    );
    Ok(())
}
