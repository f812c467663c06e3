//! PostgreSQL plumbing: the connection pool and the schema migrations every service runs at
//! start-up (refinery, from `migrations/` at the workspace root).

use std::str::FromStr as _;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use secrecy::{ExposeSecret as _, SecretString};
use tokio_postgres::NoTls;

use crate::backoff::Backoff;
use crate::settings::DatabaseSettings;

mod embedded {
    refinery::embed_migrations!("../migrations");
}

/// A pool that connects lazily: building it never fails because the database is down. TLS
/// as the URL's `sslmode` asks ([`crate::pg_tls`]); a root file that cannot be read fails here.
/// A connection not free within `DATABASE_POOL_WAIT_MS`, or not opened within
/// `DATABASE_CONNECT_TIMEOUT_MS`, is a `PoolError::Timeout`: transient, so an API answers 503 and
/// a worker retries, instead of waiting for as long as the pool stays full.
pub fn pool(settings: &DatabaseSettings) -> anyhow::Result<Pool> {
    pool_with(settings, None)
}

/// [`pool`] whose every connection runs its statements under `statement_timeout` (a session
/// setting sent as the connection opens): a statement that outlives it is cancelled (57014,
/// transient), so a request nobody waits for any more cannot hold a connection for long.
pub fn pool_with_statement_timeout(
    settings: &DatabaseSettings,
    statement_timeout: Duration,
) -> anyhow::Result<Pool> {
    pool_with(settings, Some(statement_timeout))
}

fn pool_with(
    settings: &DatabaseSettings,
    statement_timeout: Option<Duration>,
) -> anyhow::Result<Pool> {
    let (url, tls) =
        crate::pg_tls::split_url(settings.url.expose_secret()).map_err(anyhow::Error::msg)?;
    let mut config = tokio_postgres::Config::from_str(&url)
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    if let Some(timeout) = statement_timeout {
        // After any options the URL gives, so this one wins for statement_timeout only.
        let given = config.get_options().unwrap_or_default();
        let options = format!(
            "{given} -c statement_timeout={}",
            timeout.as_millis().max(1)
        );
        config.options(options.trim_start());
    }
    let manager_config = ManagerConfig {
        recycling_method: RecyclingMethod::Fast,
    };
    let manager = match tls.connector().map_err(anyhow::Error::msg)? {
        Some(tls) => Manager::from_config(config, tls, manager_config),
        None => Manager::from_config(config, NoTls, manager_config),
    };
    Pool::builder(manager)
        .max_size(settings.pool_size)
        // deadpool's timeouts need the runtime whose timers they use.
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(settings.pool_wait))
        .create_timeout(Some(settings.connect_timeout))
        .build()
        .context("building the PostgreSQL pool")
}

/// The statements that bound a transaction on the server's side, for its first statements
/// (`SET LOCAL`: they end with the transaction, so a pooled connection keeps its defaults):
/// `statement_timeout` cancels one statement running longer, and
/// `idle_in_transaction_session_timeout` ends the session when the transaction sits idle
/// longer (its snapshot held while a client reads slowly, or a task of ours stuck), so no
/// snapshot outlives them whatever our process does.
pub fn transaction_timeouts(statement: Duration, idle_in_transaction: Duration) -> String {
    format!(
        "SET LOCAL statement_timeout = {}; SET LOCAL idle_in_transaction_session_timeout = {}",
        statement.as_millis().max(1),
        idle_in_transaction.as_millis().max(1)
    )
}

/// Connects and migrates, retrying while PostgreSQL is not up yet (a service started before
/// its database waits up to a minute instead of dying).
/// Migrations run through `DATABASE_MIGRATION_URL` when it is set (its own one-connection pool,
/// dropped after), so the service's role needs no DDL rights.
pub async fn connect_database(settings: &DatabaseSettings) -> anyhow::Result<Pool> {
    let pool = pool(settings)?;
    let migrator = migration_pool(settings)?;
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match migrate(migrator.as_ref().unwrap_or(&pool)).await {
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

/// A one-connection pool on `DATABASE_MIGRATION_URL`, `None` when it is unset (DATABASE_URL's
/// role migrates).
pub fn migration_pool(settings: &DatabaseSettings) -> anyhow::Result<Option<Pool>> {
    settings
        .migration_url
        .as_ref()
        .map(|url| {
            pool(&DatabaseSettings {
                url: url.clone(),
                migration_url: None,
                pool_size: 1,
                ..settings.clone()
            })
            .context("DATABASE_MIGRATION_URL")
        })
        .transpose()
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
    let parsed = crate::pg_tls::split_url(url.expose_secret())
        .ok()
        .and_then(|(url, _)| tokio_postgres::Config::from_str(&url).ok());
    match parsed {
        Some(c) => format!(
            "{:?}:{:?}/{}",
            c.get_hosts(),
            c.get_ports(),
            c.get_dbname().unwrap_or("")
        ),
        None => "<invalid DATABASE_URL>".into(),
    }
}

/// Is this PostgreSQL failure transient: the database, or the way to it, cannot serve now, and
/// the same statement may well succeed later, unchanged? The one answer for every service: a
/// worker retries a transient failure with backoff and dead-letters anything else; the APIs
/// answer 503 to a transient failure and 500 to anything else.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    match e.code() {
        Some(code) => sqlstate_is_transient(code.code()),
        // No SQLSTATE: a closed connection or I/O under it is the way to the server failing;
        // anything else (a value that does not convert, a wrong column count) is ours and
        // repeats on every retry.
        None => {
            e.is_closed()
                || std::iter::successors(std::error::Error::source(e), |e| e.source())
                    .any(|e| e.is::<std::io::Error>())
        }
    }
}

/// A connection the pool could not give: transient whatever the cause (no connection in time,
/// the server refusing or unreachable, even a password it rejects), so a worker waits for its
/// database instead of dead-lettering good records, and an API answers 503.
pub fn pool_error_is_transient(_: &deadpool_postgres::PoolError) -> bool {
    true
}

/// The SQLSTATEs that mean "not now" rather than "never" (PostgreSQL's appendix A). Everything
/// not listed (a value or constraint refused, a statement or schema of ours that is wrong, an
/// internal error) fails again the same way, so retrying it would stall a worker forever.
pub fn sqlstate_is_transient(code: &str) -> bool {
    // 08: connection exception.
    code.starts_with("08")
        || matches!(
            code,
            // The transaction lost a race (serialization failure, deadlock): run it again.
            "40001" | "40P01"
            // Out of resources (disk full, out of memory, too many connections), all freed in
            // time; not 53400, a statement over a configured limit, which repeats.
            | "53000" | "53100" | "53200" | "53300"
            // A lock held by another session past `lock_timeout` or `NOWAIT`.
            | "55P03"
            // Operator intervention: a statement timeout, a shutdown, a crash, a server still
            // starting, an idle session closed; not 57P04, a database dropped.
            | "57000" | "57014" | "57P01" | "57P02" | "57P03" | "57P05"
            // The server's storage failed an I/O.
            | "58030"
        )
}

#[cfg(test)]
mod tests {
    use super::sqlstate_is_transient;

    #[test]
    fn not_now_is_transient_and_never_is_not() {
        let transient = [
            "08000", "08001", "08003", "08006", "08P01", // connection
            "40001", "40P01", // serialization failure, deadlock
            "53000", "53100", "53200", "53300", // resources: disk full, memory, connections
            "55P03", // lock not available
            "57000", "57014", "57P01", "57P02", "57P03", "57P05", // operator intervention
            "58030", // I/O error
        ];
        let permanent = [
            "22001", "22P02", "22003", // data exception
            "23505", "23503", "23514", // integrity constraint violation
            "42703", "42P01", "42501", // syntax or access rule
            "40002", "40003", // rollbacks that are not lost races
            "53400", // a configured limit: the same statement exceeds it again
            "55000", "55006", // object state other than a lock
            "57P04", // database dropped
            "58000", "58P01", // system errors other than I/O
            "0A000", "25P02", "28P01", "P0001", "XX000", "XX001",
        ];
        for code in transient {
            assert!(sqlstate_is_transient(code), "{code} is transient");
        }
        for code in permanent {
            assert!(!sqlstate_is_transient(code), "{code} is not transient");
        }
    }
}
