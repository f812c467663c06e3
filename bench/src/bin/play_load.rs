//! An open-loop load of Kollus play callbacks (kind 1) against token-api: requests are sent on a
//! fixed schedule whatever the answers take, and each latency is counted from its scheduled
//! time, so a slow answer cannot hide the requests it delayed.
//!
//! Usage: play-load URL RATE SECONDS USERS MEDIA
//!        (URL with `?secret=`; users `bench-u{0..USERS}`, videos `bench-m{0..MEDIA}`)

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, rate, seconds, users, media] = args.as_slice() else {
        anyhow::bail!("usage: play-load URL RATE SECONDS USERS MEDIA");
    };
    let rate: u64 = rate.parse().context("RATE")?;
    let seconds: u64 = seconds.parse().context("SECONDS")?;
    let (users, media): (u64, u64) = (users.parse()?, media.parse()?);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;
    let total = rate * seconds;
    let latencies = Arc::new(std::sync::Mutex::new(Vec::with_capacity(total as usize)));
    let statuses = Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::new()));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    let mut last_report = Instant::now();
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(due.into()).await;
        let (client, url, answered, statuses) = (
            client.clone(),
            url.clone(),
            latencies.clone(),
            statuses.clone(),
        );
        let user = format!("bench-u{}", i % users);
        let video = format!("bench-m{}", (i / users) % media);
        tasks.push(tokio::spawn(async move {
            let status = client
                .post(&url)
                .form(&[
                    ("kind", "1"),
                    ("client_user_id", user.as_str()),
                    ("media_content_key", video.as_str()),
                    ("player_id", "bench-player"),
                    ("device_name", "bench"),
                ])
                .send()
                .await
                .map(|r| r.status().as_u16())
                .unwrap_or(0);
            let took = due.elapsed();
            answered.lock().unwrap().push(took);
            *statuses.lock().unwrap().entry(status).or_insert(0u64) += 1;
        }));
        if last_report.elapsed() >= Duration::from_secs(2) {
            last_report = Instant::now();
            let done = latencies.lock().unwrap().len() as u64;
            let elapsed = started.elapsed().as_secs_f64();
            eprintln!(
                "play-load: {done}/{total} answered, {:.0}/s, {:.0} s left",
                done as f64 / elapsed,
                (total - i) as f64 / rate as f64
            );
        }
    }
    for t in tasks {
        t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    let mut l = latencies.lock().unwrap().clone();
    l.sort();
    let q = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0;
    let statuses = statuses.lock().unwrap().clone();
    let ok = statuses.get(&200).copied().unwrap_or(0);
    println!(
        "RESULT rate={rate} sent={total} answered_per_s={:.0} p50_ms={:.2} p99_ms={:.2} p999_ms={:.2} max_ms={:.2} ok={ok} statuses={statuses:?}",
        total as f64 / secs,
        q(0.5),
        q(0.99),
        q(0.999),
        q(1.0)
    );
    Ok(())
}
