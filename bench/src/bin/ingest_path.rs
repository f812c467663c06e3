//! ingest's own work per LMS callback, without HTTP or a broker: find and parse the document in
//! the form, wrap it in an envelope and serialize it, as fast as one core can. Also the same with
//! the hash check (`LMS_HASH_POLICY=record`), and, for scale, the cost of only building a
//! `serde_json::Value` tree of the document (what the hand-written parser did before its walk).
//! Last, what callback trust adds to each callback (issue 26): the `?secret=` check against the
//! LMS and platform secrets (SHA-256 digests compared in constant time) and the viewer binding's
//! verdict (one HMAC-SHA256 of the user id), alone and beside the whole path.
//!
//! Usage: ingest-path BODY_FILE [ITERATIONS]

use std::collections::BTreeMap;
use std::time::Instant;

use kollus_common::envelope::{Envelope, RawRequest};
use kollus_common::kollus::binding::{BindingMode, PlayerBinding};
use kollus_common::kollus::callback_secret::{check_callback_secret, CallbackSecret, SecretName};
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

    // Callback trust, per callback: the query as a player sends it, both secrets a route of
    // ingest's LMS takes, and the binding of the report's user.
    let lms = CallbackSecret::new(
        SecretName::Lms,
        &"bench-lms-callback-secret".to_owned().into(),
    );
    let platform = CallbackSecret::new(
        SecretName::Platform,
        &"bench-callback-secret".to_owned().into(),
    );
    let binding = PlayerBinding::new(
        BindingMode::Record,
        &"bench-player-binding-key".to_owned().into(),
        "uservalue99",
    )
    .map_err(anyhow::Error::msg)?;
    let user = locate(&names, &query, body, false)?
        .report
        .user
        .client_user_id
        .as_str()
        .to_owned();
    let presented = binding.value_for(&user);
    let query_string = format!("uservalue99={presented}&secret=bench-lms-callback-secret");
    let now = time::OffsetDateTime::now_utc();
    let started = Instant::now();
    for _ in 0..n {
        let found = check_callback_secret(&query_string, &[&lms, &platform], now)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let verdict = binding.judge(&user, found.rest.get("uservalue99").map(String::as_str));
        std::hint::black_box(verdict);
    }
    let trust = n as f64 / started.elapsed().as_secs_f64();

    println!(
        "RESULT rps={rps:.0} rps_with_hash={rps_hash:.0} value_tree_only={value_tree:.0} trust_checks_only={trust:.0} trust_share_of_path={:.3} records={n} bytes_per_record={bytes_per_record}",
        rps / trust
    );
    Ok(())
}
