//! The access record before the access log: `console_views` (V15) named the user in the clear.
//! At start its rows move into the log, each a `view_user` (or a `view_refund` whose target is
//! the video, when it named one) at the time it was viewed, with the key's name and the user
//! sealed like any row's; each batch's rows are written and deleted in one transaction, so a row
//! is moved once or not at all, whichever replica starts first.

use anyhow::Context as _;

use super::record::{AccessLog, Action, Class};

/// Rows moved per transaction.
const BATCH: i64 = 500;

/// Moves every `console_views` row into the access log; returns how many moved.
pub async fn move_console_views(
    pool: &deadpool_postgres::Pool,
    log: &AccessLog,
) -> anyhow::Result<u64> {
    let mut moved = 0u64;
    loop {
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        // Another replica starting at once takes other rows (or waits for none).
        let rows = tx
            .query(
                "SELECT id, key_name, client_user_id, media_content_key, viewed_at \
                   FROM console_views ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
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
