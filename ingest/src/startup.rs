//! Building and running ingest: the same [`Application`] runs in `main` and in tests.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use kollus_common::http::{configure_ops, Readiness};
use kollus_common::kafka;
use tokio::sync::Semaphore;

use crate::configuration::Settings;
use crate::metrics::Metrics;
use crate::routes::{callback, State};

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
}

impl Application {
    /// Binds the listener, connects the producer and makes sure the topics exist.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        kafka::ensure_topics(&settings.kafka, &settings.kafka.topics()).await?;
        let producer =
            kafka::durable_producer(&settings.kafka, "kollus-ingest", settings.ack_timeout)?;
        let metrics = Metrics::new();
        let ready = Readiness::default();
        ready.set(true);
        let state = Arc::new(State {
            secret: settings.callback_secret.clone(),
            body_limit: settings.body_limit,
            ack_timeout: settings.ack_timeout,
            in_flight: Semaphore::new(settings.max_in_flight),
            producer,
            kafka: settings.kafka.clone(),
            metrics: metrics.clone(),
        });
        let listener = TcpListener::bind(settings.listen_addr)
            .with_context(|| format!("binding {}", settings.listen_addr))?;
        let port = listener.local_addr()?.port();
        let registry = metrics.registry.clone();
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(web::Data::new(state.clone()))
                .route("/kollus/{kind}", web::post().to(callback))
                .configure(|cfg| configure_ops(cfg, registry.clone(), ready.clone()))
        })
        .listen(listener)?;
        if settings.http_workers > 0 {
            server = server.workers(settings.http_workers);
        }
        tracing::info!(
            addr = %settings.listen_addr, port, brokers = %settings.kafka.brokers,
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
