//! The play and DRM callbacks' SQL: the facts a decision is made from (one statement, every part
//! an index lookup), a completed download counted once, and every decision recorded in
//! `playback_decisions` with the numbers it was made from. Rows are read by column name.

use deadpool_postgres::Client;
use time::OffsetDateTime;
use tokio_postgres::Error;

use super::policy::{Decision, Facts, Grant};
use crate::entitlements::model::Scope;

/// The grants covering the video (its own, and its channels' in the catalog), the user's
/// playtime on it (`watch_progress`, a view over the sessions), the downloads completed, and
/// whether the catalog knows the video at all (a primary key lookup).
///
/// The playtime is read clamped to `0..=i64::MAX`: a negative total (a session row with a
/// negative `playtime`) would otherwise *add* to the allowance left, and a total the view
/// returns as numeric could not be read as `i64` (a 500 instead of an answer).
const FACTS: &str = "
SELECT e.scope, e.target, e.expires_at, e.playtime_limit_seconds, e.download, e.download_limit,
       e.revoked_at IS NOT NULL AS revoked,
       coalesce((SELECT LEAST(GREATEST(p.total_playtime, 0), 9223372036854775807)::bigint
                   FROM watch_progress p
                  WHERE p.client_user_id = $1 AND p.media_content_key = $2), 0) AS playtime_used,
       (SELECT count(*) FROM drm_downloads d
         WHERE d.client_user_id = $1 AND d.media_content_key = $2) AS downloads,
       EXISTS (SELECT 1 FROM media_contents m WHERE m.media_content_key = $2) AS catalogued
FROM (SELECT 1) AS one
LEFT JOIN entitlements e
  ON e.client_user_id = $1
 AND ((e.scope = 'media' AND e.target = $2)
   OR (e.scope = 'channel' AND e.target IN (SELECT c.channel_key FROM channel_memberships c
                                           WHERE c.media_content_key = $2 AND c.in_channel)))";

pub async fn facts(client: &Client, user: &str, media: &str) -> Result<Facts, Error> {
    let statement = client.prepare_cached(FACTS).await?;
    let rows = client.query(&statement, &[&user, &media]).await?;
    let mut facts = Facts::default();
    for r in &rows {
        facts.playtime_used = r.try_get("playtime_used")?;
        facts.downloads = r.try_get("downloads")?;
        facts.catalogued = r.try_get("catalogued")?;
        let Some(scope) = r.try_get::<_, Option<&str>>("scope")? else {
            continue;
        };
        facts.grants.push(Grant {
            scope: if scope == "channel" {
                Scope::Channel
            } else {
                Scope::Media
            },
            target: r.try_get("target")?,
            expires_at: r.try_get("expires_at")?,
            playtime_limit: r.try_get("playtime_limit_seconds")?,
            download: r.try_get("download")?,
            download_limit: r.try_get("download_limit")?,
            revoked: r.try_get("revoked")?,
        });
    }
    Ok(facts)
}

/// Counts a completed download once per `session_key`, however often Kollus retries.
pub async fn count_download(
    client: &Client,
    user: &str,
    media: &str,
    session_key: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), Error> {
    let statement = client
        .prepare_cached(
            "INSERT INTO drm_downloads (client_user_id, media_content_key, session_key, \
                 completed_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
        )
        .await?;
    client
        .execute(&statement, &[&user, &media, &session_key, &now])
        .await?;
    Ok(())
}

/// One answered callback item, as recorded.
pub struct Record<'a> {
    pub callback: &'static str,
    pub kind: i32,
    pub user: &'a str,
    pub media: &'a str,
    pub decision: &'a Decision,
    pub facts: &'a Facts,
    pub player_id: Option<&'a str>,
    pub session_key: Option<&'a str>,
}

pub async fn record(
    client: &Client,
    now: OffsetDateTime,
    records: &[Record<'_>],
) -> Result<(), Error> {
    let statement = client
        .prepare_cached(
            "INSERT INTO playback_decisions (decided_at, callback, kind, client_user_id, \
                 media_content_key, result, reason, scope, target, expires_at, \
                 playtime_limit_seconds, playtime_used_seconds, downloads, download_limit, \
                 player_id, session_key) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
        )
        .await?;
    for r in records {
        let g = r.decision.grant.as_ref();
        client
            .execute(
                &statement,
                &[
                    &now,
                    &r.callback,
                    &r.kind,
                    &r.user,
                    &r.media,
                    &i32::from(r.decision.allowed),
                    &r.decision.reason.label(),
                    &g.map(|g| g.scope.as_str()),
                    &g.map(|g| g.target.as_str()),
                    &g.and_then(|g| g.expires_at),
                    &g.and_then(|g| g.playtime_limit),
                    &r.facts.playtime_used,
                    &r.facts.downloads,
                    &g.and_then(|g| g.download_limit),
                    &r.player_id,
                    &r.session_key,
                ],
            )
            .await?;
    }
    Ok(())
}
