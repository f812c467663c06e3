//! Building and running token-api: the same [`Application`] runs in `main` and in tests.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use kollus_common::http::{configure_ops, Readiness};

use crate::auth::KeyRing;
use crate::configuration::Settings;
use crate::console::Console;
use crate::entitlements::Entitlements;
use crate::export::Export;
use crate::history::History;
use crate::metrics::Metrics;
use crate::playback::Playback;
use crate::problem::{unknown_route, ApiError};
use crate::routes::{api_routes, ServedDocument};
use crate::signer::Signer;
use crate::tokens::catalog::CatalogCache;
use crate::tokens::request::Limits;
use crate::tokens::Tokens;

pub struct Application {
    port: u16,
    server: actix_web::dev::Server,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let pool = kollus_common::db::connect_database(&settings.database).await?;
        let metrics = Metrics::new();
        kollus_common::metrics::register_pool(&metrics.registry, &pool);
        metrics.zero_routes(api_routes().iter().map(|r| r.path.as_str()));
        metrics.zero_reasons(
            crate::playback::policy::Reason::ALL
                .iter()
                .map(|r| r.first_series()),
            kollus_common::vocab::labels::<crate::tokens::catalog::Refusal>(),
        );
        let signer = Arc::new(Signer::new(&settings.security_key));
        let limits = Limits {
            default_expires_in: settings.default_expires_in,
            max_expires_in: settings.max_expires_in,
            max_media: settings.max_media,
        };
        let document = web::Data::new(ServedDocument::new(&limits));
        // Each feature's own web::Data: a handler sees only what its feature needs.
        let binding = settings.binding.binding().map_err(anyhow::Error::msg)?;
        if let Some(b) = &binding {
            tracing::info!(mode = ?b.mode, uservalue = b.slot, "viewer binding on");
        }
        let tokens = web::Data::new(Tokens {
            signer: signer.clone(),
            custom_key: settings.custom_key.clone(),
            player_url: settings.player_url.clone(),
            limits,
            emit_exp: settings.emit_exp,
            strict: settings.strict_catalog,
            catalog_cache: CatalogCache::new(settings.strict_catalog_cache),
            pool: pool.clone(),
            metrics: metrics.clone(),
            binding: binding.clone(),
        });
        let history = web::Data::new(History { pool: pool.clone() });
        let entitlements = web::Data::new(Entitlements {
            pool: pool.clone(),
            metrics: metrics.clone(),
        });
        let play_secrets = settings
            .play
            .secrets_beside(settings.binding.player_binding_key.as_ref())
            .map_err(anyhow::Error::msg)?;
        if play_secrets.is_none() {
            tracing::warn!(
                "PLAY_CALLBACK_SECRET is not set: Kollus's play and DRM callbacks are off (404)"
            );
        }
        let playback = web::Data::new(Playback {
            secrets: play_secrets,
            proxies: settings.proxies.trusted_proxies.clone(),
            binding: binding.clone(),
            settings: settings.play.clone(),
            signer,
            custom_key: settings.custom_key.clone(),
            pool: pool.clone(),
            metrics: metrics.clone(),
        });
        // Exports on a pool of their own: a slow reader never holds a callback's connection.
        let export = web::Data::new(Export::new(
            &settings.database,
            settings.export,
            metrics.clone(),
            settings
                .archive_dir
                .as_deref()
                .map(kollus_archive::store::Archive::open)
                .transpose()?
                .map(|archive| crate::export::RawReports {
                    archive,
                    topic: settings.playback_topic.clone(),
                }),
        )?);
        let keys = web::Data::new(KeyRing::new(settings.api_keys.clone()));
        let auth_failures = web::Data::new(crate::auth::AuthFailures::new(
            settings.proxies.trusted_proxies.clone(),
            settings.auth_failures_per_minute,
        ));
        settings.api_keys.warn_unscoped();
        if let Some(file) = &settings.api_keys_file {
            reload_keys_on_sighup(file.clone(), (**keys).clone())?;
        }
        let console = web::Data::new(Console::new(
            pool.clone(),
            (**keys).clone(),
            &settings.console,
            settings.play.lang,
            settings.proxies.trusted_proxies.clone(),
            metrics.clone(),
            &settings.security_key,
        )?);
        let ready = Readiness::default();
        ready.set(true);
        let listener = TcpListener::bind(settings.listen_addr)
            .with_context(|| format!("binding {}", settings.listen_addr))?;
        let port = listener.local_addr()?.port();
        let m = web::Data::new(metrics.clone());
        let registry = metrics.exposition.clone();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(tokens.clone())
                .app_data(history.clone())
                .app_data(entitlements.clone())
                .app_data(playback.clone())
                .app_data(export.clone())
                .app_data(console.clone())
                .app_data(document.clone())
                .app_data(keys.clone())
                .app_data(auth_failures.clone())
                .app_data(m.clone())
                .app_data(
                    web::JsonConfig::default()
                        .error_handler(|e, _| ApiError::BadJson(e.to_string()).into()),
                )
                .wrap(from_fn(red_metrics))
                .configure(crate::routes::configure)
                // The console's HTML pages: outside the API list and its document.
                .service(crate::console::scope())
                .configure(|cfg| configure_ops(cfg, registry.clone(), ready.clone()))
                .default_service(web::to(unknown_route))
        })
        .listen(listener)?
        .run();
        tracing::info!(addr = %settings.listen_addr, port, keys = ?settings.api_keys, "token-api listening");
        Ok(Self { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Reads `TOKEN_API_KEYS_FILE` again on every SIGHUP and puts its keys in force; a file that
/// cannot be read or parsed keeps the keys in force (ERROR, naming why, never a key).
fn reload_keys_on_sighup(file: std::path::PathBuf, ring: KeyRing) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered now, so a SIGHUP from here on is never the default (terminate).
    let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            if let Err(e) = ring.reload(&file) {
                tracing::error!(
                    error = e,
                    "SIGHUP: TOKEN_API_KEYS_FILE not reloaded; the keys in force stay"
                );
            }
        }
    });
    Ok(())
}

/// Requests and latency by route *pattern* (never a user id) and status.
async fn red_metrics(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let metrics = req.app_data::<web::Data<Metrics>>().cloned();
    let res = next.call(req).await?;
    if let Some(m) = metrics {
        let route = res
            .request()
            .match_pattern()
            .unwrap_or_else(|| "unmatched".into());
        m.requests
            .with_label_values(&[&route, res.status().as_str()])
            .inc();
        m.request_duration
            .with_label_values(&[&route])
            .observe(started.elapsed().as_secs_f64());
    }
    Ok(res)
}
