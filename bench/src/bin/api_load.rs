//! One read API operation under load: checks the answer once (200, and that it holds MUST, a
//! piece of its JSON), then asks for it REQUESTS times from CONCURRENCY keep-alive connections
//! (closed loop), stopping early after MAX_SECONDS. Prints p50, p99 and requests/s on a `RESULT`
//! line.
//!
//! Usage: api-load BASE_URL KEY PATH MUST REQUESTS CONCURRENCY MAX_SECONDS
//!        (BASE_URL like `http://127.0.0.1:8081`, loopback only; KEY an API key with the
//!        operation's scope)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, key, path, must, requests, concurrency, max_seconds] = args.as_slice() else {
        bail!("usage: api-load BASE_URL KEY PATH MUST REQUESTS CONCURRENCY MAX_SECONDS");
    };
    ensure!(
        base.starts_with("http://127.0.0.1:"),
        "loopback only: {base}"
    );
    let requests: u64 = requests.parse().context("REQUESTS")?;
    let concurrency: u64 = concurrency.parse().context("CONCURRENCY")?;
    let max = Duration::from_secs(max_seconds.parse().context("MAX_SECONDS")?);
    let http = reqwest::Client::new();
    let url = format!("{base}{path}");

    let first = http.get(&url).bearer_auth(key).send().await?;
    ensure!(first.status() == 200, "{url}: {}", first.status());
    let body = first.text().await?;
    ensure!(
        body.contains(must.as_str()),
        "{url} answered without {must:?}: {body}"
    );

    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + max;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, url, key, next) = (http.clone(), url.clone(), key.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut failed = 0u64;
            while next.fetch_add(1, Ordering::Relaxed) < requests && Instant::now() < deadline {
                let at = Instant::now();
                let ok = match http.get(&url).bearer_auth(&key).send().await {
                    Ok(res) => res.status() == 200 && res.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if ok {
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
        "RESULT requests={} failed={failed} seconds={secs:.1} per_s={:.1} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} concurrency={concurrency} bytes={}",
        latencies.len(),
        latencies.len() as f64 / secs,
        q(0.5),
        q(0.99),
        q(1.0),
        body.len()
    );
    Ok(())
}
