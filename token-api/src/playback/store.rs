//! The play and DRM callbacks' SQL: the facts a decision is made from (one statement, every part
//! an index lookup), the completed downloads an approval of ours issued counted once, and every
//! decision recorded in `playback_decisions` with the numbers it was made from. Rows are read by
//! column name. Functions take any [`GenericClient`], so the DRM callback runs them in one
//! transaction.

use std::sync::LazyLock;

use deadpool_postgres::GenericClient;
use time::OffsetDateTime;
use tokio_postgres::Error;

use super::policy::{Decision, Facts, Grant};
use crate::entitlements::model::{grants_covering_video, Entitlement};

/// The grants covering the video ([`grants_covering_video`]: its own, and its channels' in the
/// catalog), the user's playtime on it (`watch_progress`, a view over the sessions), the
/// downloads completed, and whether the catalog knows the video at all (a primary key lookup).
///
/// The playtime is read clamped to `0..=i64::MAX`: a negative total (a session row with a
/// negative `playtime`) would otherwise *add* to the allowance left, and a total the view
/// returns as numeric could not be read as `i64` (a 500 instead of an answer).
static FACTS: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {columns},
       coalesce((SELECT LEAST(GREATEST(p.total_playtime, 0), 9223372036854775807)::bigint
                   FROM watch_progress p
                  WHERE p.client_user_id = $1 AND p.media_content_key = $2), 0) AS playtime_used,
       (SELECT count(*) FROM drm_downloads d
         WHERE d.client_user_id = $1 AND d.media_content_key = $2) AS downloads,
       EXISTS (SELECT 1 FROM media_contents m WHERE m.media_content_key = $2) AS catalogued
FROM (SELECT 1) AS one
LEFT JOIN entitlements e ON {covering}",
        columns = Entitlement::COLUMNS,
        covering = grants_covering_video!(),
    )
});

pub async fn facts(client: &impl GenericClient, user: &str, media: &str) -> Result<Facts, Error> {
    let statement = client.prepare_cached(&FACTS).await?;
    let rows = client.query(&statement, &[&user, &media]).await?;
    let mut facts = Facts::default();
    for r in &rows {
        facts.playtime_used = r.try_get("playtime_used")?;
        facts.downloads = r.try_get("downloads")?;
        facts.catalogued = r.try_get("catalogued")?;
        // No grant covers the video: one row, the entitlement's columns null.
        if r.try_get::<_, Option<&str>>("scope")?.is_none() {
            continue;
        }
        let e = Entitlement::from_row(r)?;
        facts.grants.push(Grant {
            scope: e.scope,
            target: e.key,
            expires_at: e.expires_at,
            playtime_limit: e.playtime_limit_seconds,
            download: e.download,
            download_limit: e.download_limit,
            revoked: e.revoked_at.is_some(),
        });
    }
    Ok(facts)
}

/// A completed download (DRM kind 2) as the callback reports it.
pub struct Completion<'a> {
    pub user: &'a str,
    pub media: &'a str,
    pub session_key: &'a str,
    pub player_id: Option<&'a str>,
}

/// Which completions an approval of ours issued, and those counted, in one statement: a
/// completion is *issued* when `playback_decisions` holds a DRM kind 1 we answered with
/// `result = 1` for the same user, video, player and `session_key` (our kind 1 answer echoes
/// that session key to Kollus: it is the download we approved). Issued completions are counted
/// in `drm_downloads` once per `session_key`, however often Kollus retries; the others are not.
/// Index `playback_decisions_drm_approved_idx` (V16) finds the approval.
const COUNT_ISSUED: &str = "
WITH completed AS (
    SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY
        AS c(client_user_id, media_content_key, session_key, player_id, i)
), issued AS (
    SELECT c.* FROM completed c
     WHERE EXISTS (SELECT 1 FROM playback_decisions d
                    WHERE d.callback = 'drm' AND d.kind = 1 AND d.result = 1
                      AND d.client_user_id = c.client_user_id
                      AND d.media_content_key = c.media_content_key
                      AND d.session_key = c.session_key
                      AND d.player_id IS NOT DISTINCT FROM c.player_id)
), counted AS (
    INSERT INTO drm_downloads (client_user_id, media_content_key, session_key, completed_at)
    SELECT DISTINCT client_user_id, media_content_key, session_key, $5::timestamptz FROM issued
    ON CONFLICT DO NOTHING
)
SELECT i FROM issued";

/// Counts the completions an approval of ours issued (see [`COUNT_ISSUED`]); answers, for each
/// completion in order, whether it was issued.
pub async fn count_issued_downloads(
    client: &impl GenericClient,
    completions: &[Completion<'_>],
    now: OffsetDateTime,
) -> Result<Vec<bool>, Error> {
    if completions.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<&str> = completions.iter().map(|c| c.user).collect();
    let media: Vec<&str> = completions.iter().map(|c| c.media).collect();
    let session_keys: Vec<&str> = completions.iter().map(|c| c.session_key).collect();
    let players: Vec<Option<&str>> = completions.iter().map(|c| c.player_id).collect();
    let statement = client.prepare_cached(COUNT_ISSUED).await?;
    let rows = client
        .query(&statement, &[&users, &media, &session_keys, &players, &now])
        .await?;
    let mut issued = vec![false; completions.len()];
    for r in &rows {
        let ordinal: i64 = r.try_get("i")?;
        if let Some(slot) = usize::try_from(ordinal - 1)
            .ok()
            .and_then(|i| issued.get_mut(i))
        {
            *slot = true;
        }
    }
    Ok(issued)
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

/// Records every answered item in one statement (one array per column).
const RECORD: &str = "
INSERT INTO playback_decisions (decided_at, callback, kind, client_user_id, media_content_key,
       result, reason, scope, target, expires_at, playtime_limit_seconds, playtime_used_seconds,
       downloads, download_limit, player_id, session_key)
SELECT $1, * FROM unnest($2::text[], $3::int4[], $4::text[], $5::text[], $6::int4[], $7::text[],
       $8::text[], $9::text[], $10::timestamptz[], $11::int8[], $12::int8[], $13::int8[],
       $14::int4[], $15::text[], $16::text[])";

/// Call it in a transaction that took the users' subject locks shared first (README "Erasing a
/// user"), so an erasure under way either deletes these rows when it commits after them or has
/// committed before they are written; never a row left behind by a concurrent erasure.
pub async fn record(
    client: &impl GenericClient,
    now: OffsetDateTime,
    records: &[Record<'_>],
) -> Result<(), Error> {
    if records.is_empty() {
        return Ok(());
    }
    fn column<'r, 'a, T>(records: &'r [Record<'a>], f: impl Fn(&'r Record<'a>) -> T) -> Vec<T> {
        records.iter().map(f).collect()
    }
    fn grant<'r>(r: &'r Record<'_>) -> Option<&'r Grant> {
        r.decision.grant.as_ref()
    }
    let statement = client.prepare_cached(RECORD).await?;
    client
        .execute(
            &statement,
            &[
                &now,
                &column(records, |r| r.callback),
                &column(records, |r| r.kind),
                &column(records, |r| r.user),
                &column(records, |r| r.media),
                &column(records, |r| i32::from(r.decision.allowed)),
                &column(records, |r| r.decision.reason.label()),
                &column(records, |r| grant(r).map(|g| g.scope.as_str())),
                &column(records, |r| grant(r).map(|g| g.target.as_str())),
                &column(records, |r| grant(r).and_then(|g| g.expires_at)),
                &column(records, |r| grant(r).and_then(|g| g.playtime_limit)),
                &column(records, |r| r.facts.playtime_used),
                &column(records, |r| r.facts.downloads),
                &column(records, |r| grant(r).and_then(|g| g.download_limit)),
                &column(records, |r| r.player_id),
                &column(records, |r| r.session_key),
            ],
        )
        .await?;
    Ok(())
}
