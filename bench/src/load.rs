//! The closed loop `console-load` and `api-load` share: REQUESTS asked from CONCURRENCY
//! keep-alive connections, stopping early at a deadline, and the `RESULT` line they print.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::ensure;

/// Runs `ask` (true: answered as expected) `requests` times from `concurrency` tasks, at most
/// `max`; prints the `RESULT` line with `what` as the name of its count and `bytes` the size of
/// the answer.
pub async fn closed_loop<F, Fut>(
    what: &str,
    requests: u64,
    concurrency: u64,
    max: Duration,
    bytes: usize,
    ask: F,
) -> anyhow::Result<()>
where
    F: Fn() -> Fut + Clone + Send + 'static,
    Fut: Future<Output = bool> + Send,
{
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + max;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (ask, next) = (ask.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut failed = 0u64;
            while next.fetch_add(1, Ordering::Relaxed) < requests && Instant::now() < deadline {
                let at = Instant::now();
                if ask().await {
                    mine.push(at.elapsed());
                } else {
                    failed += 1;
                }
            }
            (mine, failed)
        }));
    }
    let mut latencies = Vec::new();
    let mut failed = 0;
    for w in workers {
        let (mine, f) = w.await?;
        latencies.extend(mine);
        failed += f;
    }
    let secs = started.elapsed().as_secs_f64();
    ensure!(!latencies.is_empty(), "no request answered 200");
    latencies.sort();
    let q = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    println!(
        "RESULT {what}={} failed={failed} seconds={secs:.1} per_s={:.1} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} concurrency={concurrency} bytes={bytes}",
        latencies.len(),
        latencies.len() as f64 / secs,
        q(0.5),
        q(0.99),
        q(1.0),
    );
    Ok(())
}
