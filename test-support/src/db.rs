//! A PostgreSQL database of its own for every test, cloned from a migrated template.

use std::net::SocketAddr;

use anyhow::Context as _;
use kollus_common::settings::DatabaseSettings;
use tokio_postgres::NoTls;

use crate::proxy::ChaosProxy;

/// The server tests use: `DATABASE_URL`'s server (its database is ignored), else the local one.
fn admin_url() -> String {
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    with_database(&url, "postgres")
}

/// `url` naming database `db` instead, all else (user, host, options) as it was.
fn with_database(url: &str, db: &str) -> String {
    let mut url = url::Url::parse(url).expect("DATABASE_URL is a URL");
    url.set_path(db);
    url.into()
}

/// FNV-1a: a stable hash of the migrations, so a schema change gets a new template database.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// A database of its own for one test, cloned from a migrated template (fast), dropped after.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub async fn new() -> Self {
        Self::try_new().await.expect("creating a test database")
    }

    async fn try_new() -> anyhow::Result<Self> {
        let admin = admin_url();
        let (client, conn) = tokio_postgres::connect(&admin, NoTls)
            .await
            .with_context(|| format!("connecting to PostgreSQL at {admin} (is it running?)"))?;
        tokio::spawn(conn);
        let sources: String = kollus_common::db::migration_sources()
            .into_iter()
            .map(|(name, sql)| format!("{name}\n{sql}\n"))
            .collect();
        let template = format!("kollus_tpl_{:016x}", fnv1a(sources.as_bytes()));
        // One process builds the template; the others wait on the lock and then find it.
        client.execute("SELECT pg_advisory_lock(7171)", &[]).await?;
        let exists = client
            .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&template])
            .await?
            .is_some();
        if !exists {
            let building = format!("{template}_building");
            // Left over by a run that died while building: start again.
            client
                .batch_execute(&format!("DROP DATABASE IF EXISTS {building}"))
                .await?;
            client
                .batch_execute(&format!("CREATE DATABASE {building}"))
                .await?;
            {
                let pool = kollus_common::db::pool(&DatabaseSettings::new(&with_database(
                    &admin, &building,
                )))?;
                kollus_common::db::migrate(&pool).await?;
                pool.close();
            }
            client
                .batch_execute(&format!("ALTER DATABASE {building} RENAME TO {template}"))
                .await?;
        }
        client
            .execute("SELECT pg_advisory_unlock(7171)", &[])
            .await?;
        let name = format!("kollus_test_{}", uuid::Uuid::now_v7().simple());
        client
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE {template}"))
            .await
            .with_context(|| format!("creating {name} from {template}"))?;
        Ok(Self {
            url: with_database(&admin, &name),
            name,
        })
    }

    pub fn settings(&self) -> DatabaseSettings {
        DatabaseSettings::new(&self.url)
    }

    /// Settings that reach this database through a fault proxy the test can cut and restore.
    pub async fn behind_proxy(&self) -> (ChaosProxy, DatabaseSettings) {
        let mut url = url::Url::parse(&self.url).expect("the test database URL is a URL");
        let upstream: SocketAddr = url
            .socket_addrs(|| Some(5432))
            .ok()
            .and_then(|addrs| addrs.into_iter().next())
            .expect("the test database URL names a reachable host");
        let proxy = ChaosProxy::start(upstream).await;
        url.set_ip_host(proxy.addr.ip())
            .and_then(|()| url.set_port(Some(proxy.addr.port())))
            .expect("a postgres:// URL takes a host and a port");
        (proxy, DatabaseSettings::new(url.as_str()))
    }

    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connecting to the test database");
        tokio::spawn(conn);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside any async context we can rely on: use a thread with its own runtime.
        let name = self.name.clone();
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async move {
                let (client, conn) = tokio_postgres::connect(&admin_url(), NoTls).await?;
                tokio::spawn(conn);
                client
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await?;
                Ok::<_, anyhow::Error>(())
            })
        })
        .join();
    }
}

/// Rows of `queries`, in their order, as JSON text.
async fn rows_as_json(db: &tokio_postgres::Client, queries: &[&str]) -> Vec<String> {
    let mut rows = Vec::new();
    for query in queries {
        for row in db.query(*query, &[]).await.expect(query) {
            rows.push(row.get::<_, serde_json::Value>(0).to_string());
        }
    }
    rows
}

/// Every catalog table, row by row in key order, as JSON text; `content_events.applied_at`
/// (the wall clock of the apply) is left out. Two catalogs are the same when these are equal.
pub async fn catalog_snapshot(db: &tokio_postgres::Client) -> Vec<String> {
    rows_as_json(
        db,
        &[
            "SELECT to_jsonb(t) FROM uploads t ORDER BY upload_file_key",
            "SELECT to_jsonb(t) FROM media_contents t ORDER BY media_content_key",
            "SELECT to_jsonb(t) FROM channel_memberships t ORDER BY media_content_key, channel_key",
            "SELECT to_jsonb(t) - 'applied_at' FROM content_events t ORDER BY envelope_id",
            "SELECT to_jsonb(t) FROM snapshot_channels t \
             ORDER BY envelope_id, media_content_key, channel_key",
        ],
    )
    .await
}

/// Every watch-history table, row by row in key order, as JSON text: two runs that end with equal
/// snapshots hold the same history.
pub async fn history_snapshot(db: &tokio_postgres::Client) -> Vec<String> {
    rows_as_json(
        db,
        &[
            "SELECT to_jsonb(t) FROM watch_sessions t \
             ORDER BY client_user_id, media_content_key, start_at",
            "SELECT to_jsonb(t) FROM watch_progress t ORDER BY client_user_id, media_content_key",
        ],
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_database_on_the_same_server_keeps_user_host_and_options() {
        assert_eq!(
            with_database("postgres://u:p@db.local:6543/app?sslmode=disable", "other"),
            "postgres://u:p@db.local:6543/other?sslmode=disable"
        );
        assert_eq!(with_database("postgres://h", "x"), "postgres://h/x");
    }
}
