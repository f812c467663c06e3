//! The support console's user page under load: signs in through `/console/login` as a browser
//! would (the CSRF cookie and field, then the session cookie), checks the page once, then asks
//! for it REQUESTS times from CONCURRENCY keep-alive connections (closed loop), stopping early
//! after MAX_SECONDS. Prints p50, p99 and requests/s on a `RESULT` line.
//!
//! Usage: console-load BASE_URL KEY USER VIDEOS BLOCKS REQUESTS CONCURRENCY MAX_SECONDS
//!        (BASE_URL like `http://127.0.0.1:8081`, loopback only; VIDEOS x BLOCKS coverage cells
//!        are expected on the page)

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context as _};
use reqwest::header::{ACCEPT_LANGUAGE, COOKIE, SET_COOKIE};
use reqwest::{redirect, Response, StatusCode};

fn cookie_of(res: &Response, name: &str) -> Option<String> {
    res.headers().get_all(SET_COOKIE).iter().find_map(|v| {
        let pair = v.to_str().ok()?.split(';').next()?;
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_owned())
    })
}

/// Signs in with `key`; the `Cookie` header value of the session.
async fn sign_in(http: &reqwest::Client, base: &str, key: &str) -> anyhow::Result<String> {
    let form = http.get(format!("{base}/console/login")).send().await?;
    ensure!(form.status() == 200, "the sign-in form: {}", form.status());
    let csrf = cookie_of(&form, "console_login_csrf").context("no CSRF cookie")?;
    let res = http
        .post(format!("{base}/console/login"))
        .header(COOKIE, format!("console_login_csrf={csrf}"))
        .form(&[("key", key), ("csrf_token", csrf.as_str())])
        .send()
        .await?;
    ensure!(
        res.status() == StatusCode::SEE_OTHER,
        "sign-in answered {}",
        res.status()
    );
    let session = cookie_of(&res, "console_session").context("no session cookie")?;
    Ok(format!("console_session={session}"))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, base, key, user, videos, blocks, requests, concurrency, max_seconds] = args.as_slice()
    else {
        bail!(
            "usage: console-load BASE_URL KEY USER VIDEOS BLOCKS REQUESTS CONCURRENCY MAX_SECONDS"
        );
    };
    ensure!(
        base.starts_with("http://127.0.0.1:"),
        "loopback only: {base}"
    );
    let videos: usize = videos.parse().context("VIDEOS")?;
    let blocks: usize = blocks.parse().context("BLOCKS")?;
    let requests: u64 = requests.parse().context("REQUESTS")?;
    let concurrency: u64 = concurrency.parse().context("CONCURRENCY")?;
    let max = Duration::from_secs(max_seconds.parse().context("MAX_SECONDS")?);
    let http = reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()?;
    let cookie = sign_in(&http, base, key).await?;
    let url = format!("{base}/console/users/{user}");

    // The page is the one meant: a row per video, a coverage cell per block of each.
    let page = http
        .get(&url)
        .header(COOKIE, &cookie)
        .header(ACCEPT_LANGUAGE, "en")
        .send()
        .await?;
    ensure!(page.status() == 200, "{url}: {}", page.status());
    let body = page.text().await?;
    let cells = body.matches("class=\"cell ").count();
    ensure!(
        cells == videos * blocks,
        "{cells} coverage cells on the page, not {videos} x {blocks}"
    );
    eprintln!(
        "console-load: the user page is {} bytes, {cells} coverage cells",
        body.len()
    );

    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + max;
    let mut workers = Vec::new();
    for _ in 0..concurrency {
        let (http, url, cookie, next) = (http.clone(), url.clone(), cookie.clone(), next.clone());
        workers.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let mut failed = 0u64;
            while next.fetch_add(1, Ordering::Relaxed) < requests && Instant::now() < deadline {
                let at = Instant::now();
                let ok = match http
                    .get(&url)
                    .header(COOKIE, &cookie)
                    .header(ACCEPT_LANGUAGE, "en")
                    .send()
                    .await
                {
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
    ensure!(!latencies.is_empty(), "no page answered 200");
    latencies.sort();
    let q = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64()
            * 1000.0
    };
    println!(
        "RESULT pages={} failed={failed} seconds={secs:.1} per_s={:.1} p50_ms={:.1} p99_ms={:.1} max_ms={:.1} concurrency={concurrency} bytes={}",
        latencies.len(),
        latencies.len() as f64 / secs,
        q(0.5),
        q(0.99),
        q(1.0),
        body.len()
    );
    Ok(())
}
