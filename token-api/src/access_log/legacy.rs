//! The access record before the access log: `console_views` (V15) named the user in the clear.
//! At start its rows move into the log, each a `view_user` (or a `view_refund` whose target is
//! the video, when it named one) at the time it was viewed, with the key's name and the user
//! sealed like any row's; each batch's rows are written and deleted in one transaction, so a row
//! is moved once or not at all, whichever replica starts first.
//!
//! The move runs as the migration role (DATABASE_MIGRATION_URL, else the service's own): it first
//! makes the month partitions from the oldest row's month on, so no moved row lands in a DEFAULT
//! partition that retention never drops. Each batch holds the sealer's lock
//! ([`super::seal::SEAL_LOCK`], waiting for it): importers take turns, and no seal is written
//! while a batch is open, so a batch's ids (drawn under the lock) land above every sealed id and
//! its old rows are sealed as new ones, never left behind the chain's end. The subjects' keys a
//! batch needs are made before it, one short transaction each in tag order, so two importers (or
//! an importer and a request) never wait on each other's keys.

use anyhow::Context as _;

use super::record::{AccessLog, Action, Class};
use super::seal::SEAL_LOCK;

/// Rows moved per transaction.
const BATCH: i64 = 500;

/// Moves every `console_views` row into the access log; returns how many moved.
pub async fn move_console_views(
    pool: &deadpool_postgres::Pool,
    log: &AccessLog,
) -> anyhow::Result<u64> {
    let mut client = pool.get().await?;
    // Months from the oldest row's through this one (the coming ones are made at start).
    let oldest = client
        .query_opt(
            "SELECT access_log_ensure_partitions(m, greatest(1, \
                 ((extract(year FROM n) - extract(year FROM o)) * 12 \
                  + extract(month FROM n) - extract(month FROM o))::int + 1)) \
               FROM (SELECT min(viewed_at) AS m, \
                            min(viewed_at) AT TIME ZONE 'UTC' AS o, \
                            now() AT TIME ZONE 'UTC' AS n FROM console_views) v \
              WHERE m IS NOT NULL",
            &[],
        )
        .await
        .context(
            "making the partitions of console_views' months (the migration role's work: set \
             DATABASE_MIGRATION_URL)",
        )?;
    if oldest.is_none() {
        return Ok(0);
    }
    let mut moved = 0u64;
    loop {
        // The batch's subjects' keys first, in tag order, each in a transaction of its own.
        let users: Vec<String> = client
            .query(
                "SELECT DISTINCT client_user_id FROM \
                   (SELECT client_user_id FROM console_views ORDER BY id LIMIT $1) b",
                &[&BATCH],
            )
            .await
            .context("reading console_views' users")?
            .iter()
            .map(|r| r.try_get(0))
            .collect::<Result<_, _>>()?;
        if users.is_empty() {
            break;
        }
        let mut tags: Vec<_> = users.iter().map(|u| log.subjects.tag(u)).collect();
        tags.sort_by(|a, b| a.as_str().cmp(b.as_str()));
        tags.dedup_by(|a, b| a.as_str() == b.as_str());
        for tag in &tags {
            log.subjects.current_key(&**client, tag).await?;
        }
        let tx = client.transaction().await?;
        // Waits for the sealer (or another importer) to finish its transaction.
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SEAL_LOCK])
            .await
            .context("taking the sealer's lock to move console_views")?;
        let rows = tx
            .query(
                "SELECT id, key_name, client_user_id, media_content_key, viewed_at \
                   FROM console_views ORDER BY id LIMIT $1 FOR UPDATE",
                &[&BATCH],
            )
            .await
            .context("reading console_views")?;
        if rows.is_empty() {
            break;
        }
        let mut ids = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: i64 = r.try_get("id")?;
            let key_name: String = r.try_get("key_name")?;
            let user: String = r.try_get("client_user_id")?;
            let media: Option<String> = r.try_get("media_content_key")?;
            let at: time::OffsetDateTime = r.try_get("viewed_at")?;
            let action = if media.is_some() {
                Action::ViewRefund
            } else {
                Action::ViewUser
            };
            let sealed = log.subjects.seal_id(&*tx, &user).await?;
            tx.execute(
                "INSERT INTO access_log (class, at, action, key_name, subject_tag, \
                     subject_generation, subject_sealed, target) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                &[
                    &Class::Access.as_str(),
                    &at,
                    &action.as_str(),
                    &key_name,
                    &sealed.tag.as_str(),
                    &sealed.generation,
                    &sealed.sealed_id,
                    &media,
                ],
            )
            .await
            .context("moving a console_views row into the access log")?;
            log.rows.with_label_values(&[action.as_str()]).inc();
            ids.push(id);
        }
        tx.execute("DELETE FROM console_views WHERE id = ANY($1)", &[&ids])
            .await
            .context("deleting moved console_views rows")?;
        tx.commit().await?;
        moved += ids.len() as u64;
    }
    Ok(moved)
}
