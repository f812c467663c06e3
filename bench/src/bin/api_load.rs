//! One read API operation under load: checks the answer once (200, and that it holds MUST, a
//! piece of its JSON), then asks for it REQUESTS times from CONCURRENCY keep-alive connections
//! (closed loop), stopping early after MAX_SECONDS. Prints p50, p99 and requests/s on a `RESULT`
//! line.
//!
//! Usage: api-load BASE_URL KEY PATH MUST REQUESTS CONCURRENCY MAX_SECONDS
//!        (BASE_URL like `http://127.0.0.1:8081`, loopback only; KEY an API key with the
//!        operation's scope)

use std::time::Duration;

use anyhow::{bail, ensure, Context as _};

#[path = "../load.rs"]
mod load;

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

    let bytes = body.len();
    let key = key.clone();
    load::closed_loop("requests", requests, concurrency, max, bytes, move || {
        let (http, url, key) = (http.clone(), url.clone(), key.clone());
        async move {
            match http.get(&url).bearer_auth(&key).send().await {
                Ok(res) => res.status() == 200 && res.bytes().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await
}
