//! What every crate's integration tests run against, as crates.io keeps its test database crate
//! apart from the service: a fresh PostgreSQL database per test ([`db`]), Apache Kafka with topics and groups of each test's
//! own ([`broker`]) and what a consumer group committed on it ([`group`]), a TCP proxy that can cut connections ([`proxy`]), services run
//! as real processes or in-process under a [`Harness`] ([`process`]), a stand-in for Kollus's
//! REST API ([`kollus_api`]), and polling with a deadline. A dev-dependency only: nothing here ships in a service.

pub mod broker;
pub mod cluster;
pub mod db;
pub mod group;
pub mod keys;
pub mod kollus_api;
pub mod layers;
pub mod openapi;
pub mod process;
pub mod proxy;
pub mod settings;
pub mod tls;

use std::future::Future;
use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use broker::{broker_script, read_topic, topic_record_count, Broker};
pub use db::TestDb;
pub use keys::key_files;
pub use kollus_api::FakeKollusApi;
pub use openapi::openapi_mismatches;
pub use process::{Harness, ServiceProcess, StopSignal};
pub use proxy::ChaosProxy;
pub use settings::{settings, settings_group, EPHEMERAL_PORT};

/// The workspace root (where `Cargo.toml`, `scripts/` and `.local/` are).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support/ sits in the workspace root")
        .to_path_buf()
}

/// A fixture from `fixtures/kollus/` (payloads shaped as Kollus sends them), without the trailing
/// newline the files end with.
pub fn fixture(name: &str) -> Vec<u8> {
    let path = workspace_root().join("fixtures/kollus").join(name);
    let mut body = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    while body.last().is_some_and(u8::is_ascii_whitespace) {
        body.pop();
    }
    body
}

/// A free TCP port on loopback for a service a test starts, found free by binding it.
///
/// Chosen at random below Linux's ephemeral range (32768-60999), never from it: an ephemeral
/// port can be taken by any outgoing connection (a Kafka or PostgreSQL client's) between this
/// check and the service's own bind, which made a service fail to start. Only another test's
/// pick can clash here, and tests pick at random among 12,000.
pub fn free_port() -> u16 {
    use std::hash::{BuildHasher as _, Hasher as _};
    const FIRST: u16 = 20_000;
    const COUNT: u64 = 12_000;
    for _ in 0..100 {
        // RandomState is seeded at random per process (and per call after the first).
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        let port = FIRST + (h.finish() % COUNT) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a port on loopback")
}

/// Polls `check` until it returns `Some`, or panics after `timeout` saying what was awaited.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
    }
}

/// As [`eventually`], for a check that says why it is not satisfied yet (`Err`): on a timeout,
/// the panic gives the last reason, so a failing test shows what it last saw.
pub async fn eventually_ok<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    loop {
        tick.tick().await;
        match check().await {
            Ok(v) => return v,
            Err(why) if tokio::time::Instant::now() > deadline => {
                panic!("timed out after {timeout:?} waiting for {what}; last: {why}")
            }
            Err(_) => {}
        }
    }
}

/// The value of one Prometheus sample from `{base}/metrics`, e.g.
/// `scrape("http://127.0.0.1:9101", "kollus_sync_records_total{kind=\"uploaded\",outcome=\"applied\"}")`.
/// `None` when the service does not answer or has no such sample.
pub async fn scrape(base: &str, sample: &str) -> Option<f64> {
    let res = reqwest::get(format!("{base}/metrics")).await.ok()?;
    let text = res.error_for_status().ok()?.text().await.ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(sample)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
}

/// Asserts two snapshots (rows rendered as text, in order) are equal, showing the first rows
/// that differ rather than every row of both.
pub fn assert_same_rows(got: &[String], want: &[String], what: &str) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    panic!(
        "{what}: {} rows, {} expected; first difference at row {at}:\n  got:  {}\n  want: {}",
        got.len(),
        want.len(),
        got.get(at).map_or("(none)", String::as_str),
        want.get(at).map_or("(none)", String::as_str),
    );
}
