//! Building and running ingest: the same [`Application`] runs in `main` and in tests.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use kollus_common::backoff::Backoff;
use kollus_common::http::{configure_ops, Readiness};
use kollus_common::kafka;
use tokio::sync::Semaphore;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::configuration::Settings;
use crate::metrics::Metrics;
use crate::publish::{forward, Publisher};
use crate::routes::{callback, State};
use crate::spool::Spool;

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
}

impl Application {
    /// Binds the listener, connects the producer and makes sure the topics exist.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let hash_check = settings.hash_check()?;
        let (platform_secret, lms_secret) = settings.callback_secrets()?;
        let binding = settings.binding.binding().map_err(anyhow::Error::msg)?;
        let hash_policy = hash_check.as_ref().map(|(policy, _)| *policy);
        let spool = Spool::open(&settings.spool_dir, settings.spool_limit)?;
        let metrics = Metrics::new();
        metrics.spooled_records.set(spool.records() as i64);
        metrics.spool_bytes.set(spool.bytes() as i64);
        metrics
            .spool_limit_bytes
            .set(i64::try_from(settings.spool_limit).unwrap_or(i64::MAX));
        // A replication setting no topic could be made with is refused now, not retried.
        settings.kafka.check().map_err(anyhow::Error::msg)?;
        // Without Kafka ingest still starts, and spools; topics are made when Kafka answers
        // (and has KAFKA_REPLICATION_FACTOR brokers alive).
        tokio::spawn(ensure_topics_eventually(settings.kafka.clone()));
        // Requests wait at most the acknowledgement budget; the forwarder can wait longer.
        let producer =
            kafka::durable_producer(&settings.kafka, "kollus-ingest", settings.ack_timeout)?;
        let kafka_ok = Arc::new(AtomicBool::new(true));
        tokio::spawn(forward(
            spool.clone(),
            settings.kafka.clone(),
            kafka_ok.clone(),
            metrics.clone(),
        ));
        let ready = Readiness::default();
        tokio::spawn(track_readiness(
            ready.clone(),
            spool.clone(),
            kafka_ok.clone(),
            metrics.ready.clone(),
        ));
        let state = Arc::new(State {
            platform_secret,
            lms_secret,
            allow: settings.callback_allow_cidrs.clone(),
            proxies: settings.proxies.trusted_proxies.clone(),
            binding: binding.clone(),
            body_limit: settings.body_limit,
            in_flight: Semaphore::new(settings.max_in_flight),
            publisher: Publisher {
                producer: std::sync::RwLock::new(producer),
                kafka: settings.kafka.clone(),
                spool,
                ack_timeout: settings.ack_timeout,
                kafka_ok,
                metrics: metrics.clone(),
            },
            kafka: settings.kafka.clone(),
            metrics: metrics.clone(),
            lms_fields: settings.lms_fields.clone(),
            hash_check,
        });
        let listener = TcpListener::bind(settings.listen_addr)
            .with_context(|| format!("binding {}", settings.listen_addr))?;
        let port = listener.local_addr()?.port();
        let registry = metrics.registry.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .route("/kollus/{kind}", web::post().to(callback))
                // LMS console templates may make the player GET; other routes answer 405.
                .route("/kollus/{kind}", web::get().to(callback))
                .configure(|cfg| configure_ops(cfg, registry.clone(), ready.clone()))
        })
        .listen(listener)?;
        if settings.http_workers > 0 {
            server = server.workers(settings.http_workers);
        }
        tracing::info!(
            addr = %settings.listen_addr, port, brokers = %settings.kafka.brokers,
            lms_fields = %settings.lms_fields.join(","),
            lms_hash_policy = ?hash_policy,
            callback_allow_cidrs = %settings.callback_allow_cidrs,
            trusted_proxies = %settings.proxies.trusted_proxies,
            player_binding = ?binding.as_ref().map(|b| (b.mode, b.slot.as_str())),
            "ingest listening"
        );
        Ok(Self {
            port,
            server: server.run(),
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Creates the topics once Kafka answers with enough brokers alive, retrying in the background
/// (each failure, such as too few brokers for KAFKA_REPLICATION_FACTOR, a WARN with its
/// reason); then warns once if they forget and nothing archives them.
async fn ensure_topics_eventually(kafka_settings: kollus_common::settings::KafkaSettings) {
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
    loop {
        // One try per round (the loop is the retry, while ingest serves and spools); each of
        // its broker requests is bounded (metadata, creation, configuration: 10-15 s), this
        // bounds them all.
        let attempt = tokio::time::timeout(
            Duration::from_secs(45),
            kafka::ensure_topics_within(&kafka_settings, &kafka_settings.topics(), Duration::ZERO),
        )
        .await;
        match attempt {
            Ok(Ok(_report)) => {
                kafka::warn_if_nothing_archives(kafka_settings, kafka::ARCHIVE_GRACE).await;
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = format!("{e:#}"), retry_in = ?backoff.next_delay(), "could not ensure topics")
            }
            Err(_) => {
                tracing::warn!(retry_in = ?backoff.next_delay(), "Kafka did not answer topic creation")
            }
        }
        backoff.wait().await;
    }
}

/// `/readyz`: Kafka is taking records directly and the spool has room.
async fn track_readiness(
    ready: Readiness,
    spool: Spool,
    kafka_ok: Arc<AtomicBool>,
    gauge: prometheus::IntGauge,
) {
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    loop {
        tick.tick().await;
        let now = kafka_ok.load(Ordering::Acquire) && !spool.is_full();
        ready.set(now);
        gauge.set(i64::from(now));
    }
}
