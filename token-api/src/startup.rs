//! Building and running token-api: the same [`Application`] runs in `main` and in tests.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::{from_fn, Condition, DefaultHeaders, Next};
use actix_web::{web, App, HttpServer};
use anyhow::Context as _;
use kollus_common::http::{configure_metrics, configure_probes, Readiness};

use crate::access_log::record::AccessLog;
use crate::access_log::Chain;
use crate::auth::KeyRing;
use crate::configuration::Settings;
use crate::console::Console;
use crate::entitlements::Entitlements;
use crate::erasure::Erasures;
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
    console_port: Option<u16>,
    ops_port: Option<u16>,
    /// LISTEN_ADDR's server first, then CONSOLE_LISTEN_ADDR's and OPS_LISTEN_ADDR's when set.
    servers: Vec<actix_web::dev::Server>,
}

/// What one listener serves: LISTEN_ADDR's everything that was not moved to a listener of its
/// own (CONSOLE_LISTEN_ADDR, OPS_LISTEN_ADDR), and each of those only its part.
#[derive(Debug, Clone, Copy)]
struct Serves {
    api: bool,
    console: bool,
    metrics: bool,
    probes: bool,
}

impl Serves {
    const NOTHING: Self = Self {
        api: false,
        console: false,
        metrics: false,
        probes: false,
    };
}

/// Binds `addr`, naming the setting that gave it when that fails.
fn bind(addr: SocketAddr, setting: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).with_context(|| format!("binding {addr} ({setting})"))
}

/// HSTS on the console's answers: a browser that reached it once over HTTPS never again sends
/// its session cookie over plain HTTP to that host (ignored by browsers on a plain-HTTP
/// answer). A year, without `includeSubDomains`: other hosts of the domain are not ours to
/// decide.
const CONSOLE_HSTS: &str = "max-age=31536000";

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.check_listeners().map_err(anyhow::Error::msg)?;
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
        let subjects = kollus_common::subject::Subjects::from_files(
            &settings.access_log.subject_tag_key_file,
            &settings.access_log.archive_kek_file,
        )?;
        let access_log = web::Data::new(AccessLog::new(
            subjects.clone(),
            metrics.access_log_rows.clone(),
        ));
        // The chain: this month and the next ones partitioned, then console_views moved in and
        // the key list recorded, then rows sealed every interval.
        crate::access_log::ensure_partitions(&settings.database).await;
        access_log_at_start(&pool, &settings.database, &access_log, &settings.api_keys).await?;
        let chain = web::Data::new(Chain::new(&settings, pool.clone(), metrics.clone())?);
        chain.spawn_sealer(settings.access_log.access_log_seal_interval);
        let history = web::Data::new(History { pool: pool.clone() });
        // Erasures: published to the erasure topic by an outbox that retries until Kafka
        // acknowledges (token-api starts and erases without Kafka).
        settings.kafka.check().map_err(anyhow::Error::msg)?;
        let publisher = crate::erasure::publish::Publisher::new(
            pool.clone(),
            settings.kafka.clone(),
            metrics.clone(),
            settings.erasure.erasure_publish_interval,
        )?;
        let erasures = web::Data::new(Erasures {
            pool: pool.clone(),
            metrics: metrics.clone(),
            access_log_retention_days: settings.access_log.access_log_retention_days,
            topics: crate::erasure::topics::UserTopics::new(settings.kafka.clone()),
            publish: publisher.waker(),
            key_locations: settings
                .erasure
                .key_locations(settings.archive_dir.as_deref()),
        });
        publisher.spawn();
        let entitlements = web::Data::new(Entitlements {
            pool: pool.clone(),
            metrics: metrics.clone(),
        });
        let courses = web::Data::new(crate::courses::Courses {
            pool: pool.clone(),
            metrics: metrics.clone(),
            default_rate: settings.max_playback_rate,
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
            subjects: subjects.clone(),
        });
        let archive_tagger =
            kollus_common::subject::Tagger::from_file(&settings.access_log.subject_tag_key_file)?;
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
                    erased_before: None,
                    keys: crate::export::ArchiveKeys {
                        tagger: archive_tagger.clone(),
                        location: kollus_common::erasure::keys_location(
                            &archive.location,
                            settings.erasure.archive_keys_dir.as_deref(),
                        ),
                        kek_file: settings.access_log.archive_kek_file.clone(),
                    },
                    archive,
                    topic: settings.kafka.playback_topic.clone(),
                }),
        )?);
        let keys = web::Data::new(KeyRing::new(settings.api_keys.clone()));
        let auth_failures = web::Data::new(crate::auth::AuthFailures::new(
            settings.proxies.trusted_proxies.clone(),
            settings.auth_failures_per_minute,
        ));
        settings.api_keys.warn_unscoped();
        if let Some(file) = &settings.api_keys_file {
            reload_keys_on_sighup(
                file.clone(),
                (**keys).clone(),
                pool.clone(),
                (**access_log).clone(),
            )?;
        }
        // The console on a pool of its own: agents' pages never hold a callback's connection.
        let console_pool = kollus_common::db::pool_with_statement_timeout(
            &kollus_common::settings::DatabaseSettings {
                pool_size: usize::from(settings.console.db_connections),
                ..settings.database.clone()
            },
            crate::console::STATEMENT_TIMEOUT,
        )?;
        kollus_common::metrics::register_pool_as(
            &metrics.registry,
            &console_pool,
            "console_db_pool",
        );
        kollus_common::metrics::register_pool_as(&metrics.registry, &export.pool, "export_db_pool");
        let console = web::Data::new(Console::new(
            console_pool,
            (**keys).clone(),
            &settings.console,
            settings.play.lang,
            settings.proxies.trusted_proxies.clone(),
            metrics.clone(),
            &settings.security_key,
        )?);
        let ready = Readiness::default();
        ready.set(true);
        let listener = bind(settings.listen_addr, "LISTEN_ADDR")?;
        let port = listener.local_addr()?.port();
        let console_listener = settings
            .console_listen_addr
            .map(|addr| bind(addr, "CONSOLE_LISTEN_ADDR"))
            .transpose()?;
        let ops_listener = settings
            .ops_listen_addr
            .map(|addr| bind(addr, "OPS_LISTEN_ADDR"))
            .transpose()?;
        let local_port = |l: &Option<TcpListener>| {
            l.as_ref()
                .map(|l| l.local_addr().map(|a| a.port()))
                .transpose()
        };
        let (console_port, ops_port) = (local_port(&console_listener)?, local_port(&ops_listener)?);
        let main_serves = Serves {
            api: true,
            console: console_listener.is_none(),
            metrics: ops_listener.is_none(),
            probes: true,
        };
        let hsts = !settings.console.insecure_cookie;
        let m = web::Data::new(metrics.clone());
        let registry = metrics.exposition.clone();
        // Every listener's app has the same data; what differs is the routes it serves.
        let app = move |serves: Serves| {
            let (registry, ready) = (registry.clone(), ready.clone());
            App::new()
                .app_data(tokens.clone())
                .app_data(history.clone())
                .app_data(entitlements.clone())
                .app_data(courses.clone())
                .app_data(playback.clone())
                .app_data(export.clone())
                .app_data(console.clone())
                .app_data(access_log.clone())
                .app_data(erasures.clone())
                .app_data(chain.clone())
                .app_data(document.clone())
                .app_data(keys.clone())
                .app_data(auth_failures.clone())
                .app_data(m.clone())
                .app_data(
                    web::JsonConfig::default()
                        .error_handler(|e, _| ApiError::BadJson(e.to_string()).into()),
                )
                .wrap(from_fn(red_metrics))
                .configure(|cfg| {
                    if serves.api {
                        crate::routes::configure(cfg);
                    }
                    if serves.console {
                        // The console's HTML pages: outside the API list and its document.
                        cfg.service(
                            crate::console::scope().wrap(Condition::new(
                                hsts,
                                DefaultHeaders::new()
                                    .add((header::STRICT_TRANSPORT_SECURITY, CONSOLE_HSTS)),
                            )),
                        );
                    }
                    if serves.probes {
                        configure_probes(cfg, ready);
                    }
                    if serves.metrics {
                        configure_metrics(cfg, registry);
                    }
                })
                .default_service(web::to(unknown_route))
        };
        let mut servers = vec![{
            let app = app.clone();
            HttpServer::new(move || app(main_serves))
                .listen(listener)?
                .run()
        }];
        if let Some(listener) = console_listener {
            let app = app.clone();
            let serves = Serves {
                console: true,
                ..Serves::NOTHING
            };
            servers.push(HttpServer::new(move || app(serves)).listen(listener)?.run());
        }
        if let Some(listener) = ops_listener {
            let serves = Serves {
                metrics: true,
                probes: true,
                ..Serves::NOTHING
            };
            let app = app.clone();
            servers.push(
                HttpServer::new(move || app(serves))
                    .workers(1)
                    .listen(listener)?
                    .run(),
            );
        }
        tracing::info!(
            addr = %settings.listen_addr, port,
            console = %settings.console_addr(),
            ops = %settings.ops_listen_addr.unwrap_or(settings.listen_addr),
            keys = ?settings.api_keys, "token-api listening"
        );
        Ok(Self {
            port,
            console_port,
            ops_port,
            servers,
        })
    }

    /// LISTEN_ADDR's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// CONSOLE_LISTEN_ADDR's port, when the console has a listener of its own.
    pub fn console_port(&self) -> Option<u16> {
        self.console_port
    }

    /// OPS_LISTEN_ADDR's port, when `/metrics` has a listener of its own.
    pub fn ops_port(&self) -> Option<u16> {
        self.ops_port
    }

    /// Runs every listener until each has stopped (each stops on SIGTERM or Ctrl-C); the first
    /// to fail ends them all.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        futures_util::future::try_join_all(self.servers)
            .await
            .map(|_| ())
    }
}

/// The access record at start: `console_views`' rows moved in (V15's record, which named users
/// in the clear), and the key list put in force (`keys_reloaded`: who may access from now on).
/// Either failing stops the start. The move runs as the migration role (DATABASE_MIGRATION_URL),
/// which may make the old months' partitions; without it, as the service's own role.
async fn access_log_at_start(
    pool: &deadpool_postgres::Pool,
    database: &kollus_common::settings::DatabaseSettings,
    log: &AccessLog,
    keys: &crate::auth::ApiKeys,
) -> anyhow::Result<()> {
    let owner = kollus_common::db::migration_pool(database)?;
    let moved = crate::access_log::legacy::move_console_views(owner.as_ref().unwrap_or(pool), log)
        .await
        .context("moving console_views into the access log")?;
    if moved > 0 {
        tracing::info!(moved, "console_views rows moved into the access log");
    }
    let started = crate::auth::KeyChange::at_start(keys);
    let summary = if started.is_empty() {
        "no keys".to_owned()
    } else {
        started.summary()
    };
    record_keys(pool, log, &format!("start; {summary}"))
        .await
        .context("recording the key list in force in the access log")
}

/// A `keys_reloaded` row (class rights) by the process itself (key name `-`): `what` names the
/// keys and scopes, never a key.
async fn record_keys(
    pool: &deadpool_postgres::Pool,
    log: &AccessLog,
    what: &str,
) -> anyhow::Result<()> {
    use crate::access_log::record::{Action, Entry};
    let client = pool.get().await?;
    let entry = Entry {
        target: Some(what),
        ..Entry::new(Action::KeysReloaded, "-")
    };
    log.record(&**client, entry).await
}

/// Reads `TOKEN_API_KEYS_FILE` again on every SIGHUP and puts its keys in force; a file that
/// cannot be read or parsed keeps the keys in force (ERROR, naming why, never a key). A reload
/// that changed something writes its `keys_reloaded` row; one that cannot be written leaves the
/// reload in force (a revocation is never held back) and logs the change at ERROR instead.
fn reload_keys_on_sighup(
    file: std::path::PathBuf,
    ring: KeyRing,
    pool: deadpool_postgres::Pool,
    log: AccessLog,
) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    // Registered now, so a SIGHUP from here on is never the default (terminate).
    let mut hangups = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            match ring.reload(&file) {
                Err(e) => tracing::error!(
                    error = e,
                    "SIGHUP: TOKEN_API_KEYS_FILE not reloaded; the keys in force stay"
                ),
                Ok(change) if change.is_empty() => {}
                Ok(change) => {
                    let what = change.summary();
                    if let Err(e) = record_keys(&pool, &log, &what).await {
                        tracing::error!(
                            error = format!("{e:#}"),
                            change = what,
                            "SIGHUP: the key change is in force but not in the access record"
                        );
                    }
                }
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
