//! Entitlements' SQL: a grant or a revocation and its `entitlement_changes` record in one
//! transaction, with the API key's name and its access-record row (`grant` / `revoke`); the
//! listing. Rows by column name
//! ([`Entitlement::from_row`]).

use deadpool_postgres::Client;
use time::OffsetDateTime;
use tokio_postgres::Error;

use super::body::GrantBody;
use super::model::{Entitlement, Scope};
use crate::access_log::record::{AccessLog, Action, Entry};

/// Who grants or revokes what, when.
pub struct Change<'a> {
    pub user: &'a str,
    pub scope: Scope,
    pub key: &'a str,
    /// The API key's name.
    pub by: &'a str,
    pub at: OffsetDateTime,
    /// The caller's address, for the access record.
    pub addr: Option<std::net::IpAddr>,
}

impl Change<'_> {
    /// This change's access-record row, written in its transaction: a change is never made
    /// unrecorded.
    async fn record(
        &self,
        tx: &tokio_postgres::Transaction<'_>,
        log: &AccessLog,
        action: Action,
    ) -> anyhow::Result<()> {
        let target = format!("{}:{}", self.scope.as_str(), self.key);
        log.record(
            tx,
            Entry {
                client_addr: self.addr,
                subject: Some(self.user),
                target: Some(&target),
                ..Entry::new(action, self.by)
            },
        )
        .await
    }
}

/// Grants or replaces (a revoked grant comes back in force), and records the change.
pub async fn grant(
    client: &mut Client,
    c: &Change<'_>,
    g: &GrantBody,
    log: &AccessLog,
) -> anyhow::Result<Entitlement> {
    let tx = client.transaction().await?;
    // The user's subject lock, shared, first: an erasure under way deletes this change too.
    kollus_common::subject::lock_subjects_shared(&*tx, [&log.tag(c.user)]).await?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO entitlements AS e (client_user_id, scope, target, expires_at, \
                     playtime_limit_seconds, download, download_limit, granted_by, granted_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
                 ON CONFLICT (client_user_id, scope, target) DO UPDATE SET \
                     expires_at = EXCLUDED.expires_at, \
                     playtime_limit_seconds = EXCLUDED.playtime_limit_seconds, \
                     download = EXCLUDED.download, download_limit = EXCLUDED.download_limit, \
                     granted_by = EXCLUDED.granted_by, granted_at = EXCLUDED.granted_at, \
                     revoked_by = NULL, revoked_at = NULL \
                 RETURNING {}",
                Entitlement::COLUMNS
            ),
            &[
                &c.user,
                &c.scope.as_str(),
                &c.key,
                &g.expires_at,
                &g.playtime_limit_seconds,
                &g.download,
                &g.download_limit,
                &c.by,
                &c.at,
            ],
        )
        .await?;
    tx.execute(
        "INSERT INTO entitlement_changes (client_user_id, scope, target, action, expires_at, \
             playtime_limit_seconds, download, download_limit, changed_by, changed_at) \
         VALUES ($1, $2, $3, 'grant', $4, $5, $6, $7, $8, $9)",
        &[
            &c.user,
            &c.scope.as_str(),
            &c.key,
            &g.expires_at,
            &g.playtime_limit_seconds,
            &g.download,
            &g.download_limit,
            &c.by,
            &c.at,
        ],
    )
    .await?;
    let granted = Entitlement::from_row(&row)?;
    c.record(&tx, log, Action::Grant).await?;
    tx.commit().await?;
    Ok(granted)
}

/// Revokes the grant in force and records the change; false (nothing changed) when there is
/// none.
pub async fn revoke(client: &mut Client, c: &Change<'_>, log: &AccessLog) -> anyhow::Result<bool> {
    let tx = client.transaction().await?;
    // The user's subject lock, shared, first: an erasure under way deletes this change too.
    kollus_common::subject::lock_subjects_shared(&*tx, [&log.tag(c.user)]).await?;
    let revoked = tx
        .execute(
            "UPDATE entitlements SET revoked_by = $4, revoked_at = $5 \
             WHERE client_user_id = $1 AND scope = $2 AND target = $3 AND revoked_at IS NULL",
            &[&c.user, &c.scope.as_str(), &c.key, &c.by, &c.at],
        )
        .await?;
    if revoked == 0 {
        return Ok(false);
    }
    tx.execute(
        "INSERT INTO entitlement_changes (client_user_id, scope, target, action, changed_by, \
             changed_at) VALUES ($1, $2, $3, 'revoke', $4, $5)",
        &[&c.user, &c.scope.as_str(), &c.key, &c.by, &c.at],
    )
    .await?;
    c.record(&tx, log, Action::Revoke).await?;
    tx.commit().await?;
    Ok(true)
}

/// Every grant of the user, in force or revoked.
pub async fn list(client: &Client, user: &str) -> Result<Vec<Entitlement>, Error> {
    client
        .query(
            &format!(
                "SELECT {} FROM entitlements WHERE client_user_id = $1 ORDER BY scope, target",
                Entitlement::COLUMNS
            ),
            &[&user],
        )
        .await?
        .iter()
        .map(Entitlement::from_row)
        .collect()
}
