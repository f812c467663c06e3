//! kollus-catalog: backfills and sweeps the catalog from Kollus's REST API (SPEC.md section 7),
//! used as Kollus asks (once at onboarding, then on demand or nightly; at most 1 request a
//! second). What it finds is published as `snapshot` events on `kollus.content.v1`
//! ([`publish`]), never written to the tables: sync-worker applies them, the archive keeps them,
//! `--rebuild` replays them. [`scan`] lists the account, [`sweep`] compares with the catalog,
//! [`api`] speaks v0.

pub mod api;
pub mod configuration;
pub mod metrics;
pub mod publish;
pub mod scan;
pub mod sweep;

use std::time::{Duration, Instant};

use anyhow::Context as _;
use kollus_common::http::Readiness;
use kollus_common::settings::{DatabaseSettings, KafkaSettings};

use crate::api::KollusApi;
use crate::configuration::ApiSettings;
use crate::metrics::Metrics;
use crate::publish::{Outgoing, Publisher};

/// What a run did, for its summary line and for tests.
#[derive(Debug, Default)]
pub struct Report {
    pub channels: usize,
    pub uploads: usize,
    pub requests: u64,
    pub published: usize,
    pub differences: Vec<sweep::Difference>,
    pub elapsed: Duration,
}

/// Starts the /metrics server for the run; the run stops it when it ends.
fn serve_metrics(
    api: &ApiSettings,
    metrics: &Metrics,
) -> anyhow::Result<actix_web::dev::ServerHandle> {
    let addr = api.listen_addr;
    let listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {addr}"))?;
    let ready = Readiness::default();
    ready.set(true);
    let server = kollus_common::http::admin_server(listener, metrics.registry.clone(), ready)?;
    let handle = server.handle();
    tokio::spawn(server);
    Ok(handle)
}

fn client(api: &ApiSettings, metrics: &Metrics) -> anyhow::Result<KollusApi> {
    KollusApi::new(
        api.api_url.clone(),
        api.api_token.clone(),
        api.checked_rate()?,
        metrics.clone(),
        api.retry_start,
    )
}

/// `backfill`: a complete scan, every upload published as a snapshot.
pub async fn backfill(api: &ApiSettings, kafka: &KafkaSettings) -> anyhow::Result<Report> {
    let started = Instant::now();
    let metrics = Metrics::new();
    let client = client(api, &metrics)?;
    let server = serve_metrics(api, &metrics)?;
    let publisher = Publisher::new(kafka, metrics.clone()).await?;
    let mut progress = metrics.progress("backfill");
    let scan = scan::scan(&client, api.per_page, &mut progress)
        .await
        .context("listing the account (nothing was published)")?;
    progress.finish();
    let (channels, requests) = (scan.channels, scan.requests);
    let outgoing: Vec<Outgoing> = scan
        .uploads
        .into_iter()
        .map(|(upload, f)| Outgoing {
            upload,
            snapshot: f.snapshot,
            raw: f.raw,
        })
        .collect();
    let uploads = outgoing.len();
    let published = publisher.publish(outgoing).await?;
    server.stop(true).await;
    Ok(Report {
        channels,
        uploads,
        requests,
        published,
        differences: Vec::new(),
        elapsed: started.elapsed(),
    })
}

/// `sweep`: a complete scan compared with the catalog; what differs is published.
pub async fn sweep(
    api: &ApiSettings,
    grace: Duration,
    database: &DatabaseSettings,
    kafka: &KafkaSettings,
) -> anyhow::Result<Report> {
    let started = Instant::now();
    let metrics = Metrics::new();
    let client = client(api, &metrics)?;
    let pool = kollus_common::db::pool(database)?;
    let server = serve_metrics(api, &metrics)?;
    let publisher = Publisher::new(kafka, metrics.clone()).await?;
    let mut progress = metrics.progress("sweep");
    let scan = scan::scan(&client, api.per_page, &mut progress)
        .await
        .context("listing the account (nothing was published)")?;
    progress.finish();
    let (channels, uploads, mut requests) = (scan.channels, scan.uploads.len(), scan.requests);
    let before = metrics.requests.with_label_values(&["ok"]).get()
        + metrics.requests.with_label_values(&["not_found"]).get();
    let found = sweep::sweep(&client, &pool, scan, grace, &metrics)
        .await
        .context("comparing with the catalog (nothing was published)")?;
    requests += metrics.requests.with_label_values(&["ok"]).get()
        + metrics.requests.with_label_values(&["not_found"]).get()
        - before;
    let published = publisher.publish(found.snapshots).await?;
    server.stop(true).await;
    Ok(Report {
        channels,
        uploads,
        requests,
        published,
        differences: found.differences,
        elapsed: started.elapsed(),
    })
}
