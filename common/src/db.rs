//! PostgreSQL plumbing: the connection pool and the schema migrations every service runs at
//! start-up (refinery, from `migrations/` at the workspace root).

use std::str::FromStr as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use secrecy::{ExposeSecret as _, SecretString};
use tokio_postgres::NoTls;

use crate::backoff::Backoff;
use crate::settings::DatabaseSettings;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// A pool that connects lazily: building it never fails because the database is down.
pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<Pool> {
    let config = tokio_postgres::Config::from_str(settings.url.expose_secret())
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(settings.pool_size)
        .build()
        .context("building the PostgreSQL pool")
}

/// Connects and migrates, retrying while PostgreSQL is not up yet (a service started before
/// its database waits up to a minute instead of dying).
pub async fn connect_database(settings: &DatabaseSettings) -> anyhow::Result<Pool> {
    let pool = pool(settings)?;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match migrate(&pool).await {
            Ok(()) => return Ok(pool),
            Err(e) if Instant::now() < deadline => {
                tracing::warn!(
                    error = format!("{e:#}"), db = describe(&settings.url),
                    retry_in = ?backoff.next_delay(), "database not ready"
                );
                backoff.wait().await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// An arbitrary constant naming the advisory lock that serialises migrations, so several
/// instances starting together do not race.
const MIGRATION_LOCK: i64 = 0x6b6f_6c6c_7573;

/// Brings the schema up to date. Safe to run from every instance at once.
pub async fn migrate(pool: &Pool) -> anyhow::Result<()> {
    let mut client = pool
        .get()
        .await
        .context("connecting to PostgreSQL to run migrations")?;
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
        .await
        .context("taking the migration lock")?;
    let result = embedded::migrations::runner()
        .run_async(&mut **client)
        .await
        .context("running schema migrations");
    client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await
        .context("releasing the migration lock")?;
    let report = result?;
    for m in report.applied_migrations() {
        tracing::info!(migration = %m, "applied schema migration");
    }
    Ok(())
}

/// The text of every migration, in order: tests use it to name template databases.
pub fn migration_sources() -> Vec<(String, String)> {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| (m.to_string(), m.sql().unwrap_or_default().to_owned()))
        .collect()
}

/// A redacted form of a database URL for logs: host, port and database, never credentials.
pub fn describe(url: &SecretString) -> String {
    match tokio_postgres::Config::from_str(url.expose_secret()) {
        Ok(c) => format!(
            "{:?}:{:?}/{}",
            c.get_hosts(),
            c.get_ports(),
            c.get_dbname().unwrap_or("")
        ),
        Err(_) => "<invalid DATABASE_URL>".into(),
    }
}
