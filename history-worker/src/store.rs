//! Writing a batch of merged sessions to PostgreSQL in one transaction, set-based:
//! one statement for the envelope ids, one for the sessions, one for the rollup.

use std::collections::HashSet;

use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::sessions::Session;

/// The watch-history tables, all derived from `kollus.playback.v1` (emptied by `--rebuild`).
pub const TABLES: &[&str] = &["watch_progress", "watch_sessions", "playback_events"];

/// Records the envelope ids; returns those not seen before (the only ones to apply).
pub async fn claim_new(
    tx: &Transaction<'_>,
    ids: &[Uuid],
    received: &[OffsetDateTime],
) -> anyhow::Result<HashSet<Uuid>> {
    let rows = tx
        .query(
            "INSERT INTO playback_events (envelope_id, received_at) \
             SELECT * FROM unnest($1::uuid[], $2::timestamptz[]) \
             ON CONFLICT (envelope_id) DO NOTHING RETURNING envelope_id",
            &[&ids, &received],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Upserts sessions (each key at most once), merging with stored rows by the session policy.
pub async fn upsert_sessions(tx: &Transaction<'_>, sessions: &[Session]) -> anyhow::Result<()> {
    let n = sessions.len();
    let mut c = Columns::with_capacity(n);
    for s in sessions {
        c.push(s);
    }
    tx.execute(
        UPSERT_SESSIONS,
        &[
            &c.user,
            &c.media,
            &c.start_at,
            &c.channel_key,
            &c.encoding_profile,
            &c.duration,
            &c.player_id,
            &c.hardware_id,
            &c.device,
            &c.os,
            &c.version,
            &c.host_name,
            &c.uservalues,
            &c.playtime,
            &c.real_playtime,
            &c.runtime,
            &c.showtime,
            &c.playtime_percent,
            &c.last_play_at,
            &c.last_play_at_runtime,
            &c.block_count,
            &c.blocks_played,
            &c.block_seconds,
            &c.block_percent,
            &c.first_report_at,
            &c.last_report_at,
            &c.reports,
        ],
    )
    .await?;
    Ok(())
}

/// Recomputes the per-(user, video) rollup from the sessions, for the pairs a batch touched.
/// Recomputing (rather than adding) keeps it exact however often a batch is replayed.
pub async fn refresh_progress(tx: &Transaction<'_>, sessions: &[Session]) -> anyhow::Result<()> {
    let mut pairs: Vec<(&str, &str)> = sessions
        .iter()
        .map(|s| {
            (
                s.key.client_user_id.as_str(),
                s.key.media_content_key.as_str(),
            )
        })
        .collect();
    pairs.sort_unstable();
    pairs.dedup();
    let (users, media): (Vec<&str>, Vec<&str>) = pairs.into_iter().unzip();
    tx.execute(REFRESH_PROGRESS, &[&users, &media]).await?;
    Ok(())
}

const UPSERT_SESSIONS: &str = "
INSERT INTO watch_sessions AS w (
    client_user_id, media_content_key, start_at, channel_key, encoding_profile, duration,
    player_id, hardware_id, device, os, version, host_name, uservalues,
    playtime, real_playtime, runtime, showtime, playtime_percent,
    last_play_at, last_play_at_runtime, block_count, blocks_played, block_seconds, block_percent,
    first_report_at, last_report_at, reports)
SELECT u.cuid, u.mck, u.start_at, u.channel_key, u.encoding_profile, u.duration,
       u.player_id, u.hardware_id, u.device, u.os, u.version, u.host_name, u.uservalues::jsonb,
       u.playtime, u.real_playtime, u.runtime, u.showtime, u.playtime_percent,
       u.last_play_at, u.last_play_at_runtime, u.block_count,
       u.blocks_played::boolean[], u.block_seconds::bigint[], u.block_percent::bigint[],
       u.first_report_at, u.last_report_at, u.reports
FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
            $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[],
            $19::bigint[], $20::bigint[], $21::integer[], $22::text[], $23::text[], $24::text[],
            $25::timestamptz[], $26::timestamptz[], $27::bigint[])
     AS u(cuid, mck, start_at, channel_key, encoding_profile, duration,
          player_id, hardware_id, device, os, version, host_name, uservalues,
          playtime, real_playtime, runtime, showtime, playtime_percent,
          last_play_at, last_play_at_runtime, block_count, blocks_played, block_seconds,
          block_percent, first_report_at, last_report_at, reports)
ON CONFLICT (client_user_id, media_content_key, start_at) DO UPDATE SET
    channel_key = COALESCE(w.channel_key, EXCLUDED.channel_key),
    encoding_profile = COALESCE(w.encoding_profile, EXCLUDED.encoding_profile),
    duration = GREATEST(w.duration, EXCLUDED.duration),
    player_id = COALESCE(w.player_id, EXCLUDED.player_id),
    hardware_id = COALESCE(w.hardware_id, EXCLUDED.hardware_id),
    device = COALESCE(w.device, EXCLUDED.device),
    os = COALESCE(w.os, EXCLUDED.os),
    version = COALESCE(w.version, EXCLUDED.version),
    host_name = COALESCE(w.host_name, EXCLUDED.host_name),
    uservalues = EXCLUDED.uservalues || w.uservalues,
    playtime = GREATEST(w.playtime, EXCLUDED.playtime),
    real_playtime = GREATEST(w.real_playtime, EXCLUDED.real_playtime),
    runtime = GREATEST(w.runtime, EXCLUDED.runtime),
    showtime = GREATEST(w.showtime, EXCLUDED.showtime),
    playtime_percent = GREATEST(w.playtime_percent, EXCLUDED.playtime_percent),
    last_play_at = CASE
        WHEN w.last_play_at IS NULL
          OR (EXCLUDED.last_play_at_runtime, EXCLUDED.last_play_at) > (w.last_play_at_runtime, w.last_play_at)
        THEN COALESCE(EXCLUDED.last_play_at, w.last_play_at) ELSE w.last_play_at END,
    last_play_at_runtime = CASE
        WHEN w.last_play_at IS NULL
          OR (EXCLUDED.last_play_at_runtime, EXCLUDED.last_play_at) > (w.last_play_at_runtime, w.last_play_at)
        THEN COALESCE(EXCLUDED.last_play_at_runtime, w.last_play_at_runtime) ELSE w.last_play_at_runtime END,
    block_count = GREATEST(w.block_count, EXCLUDED.block_count),
    blocks_played = merge_or(w.blocks_played, EXCLUDED.blocks_played),
    block_seconds = merge_max(w.block_seconds, EXCLUDED.block_seconds),
    block_percent = merge_max(w.block_percent, EXCLUDED.block_percent),
    first_report_at = LEAST(w.first_report_at, EXCLUDED.first_report_at),
    last_report_at = GREATEST(w.last_report_at, EXCLUDED.last_report_at),
    reports = w.reports + EXCLUDED.reports";

const REFRESH_PROGRESS: &str = "
INSERT INTO watch_progress AS p (
    client_user_id, media_content_key, sessions, total_playtime, total_real_playtime,
    block_count, blocks_ever_played, blocks_watched, last_position, first_watched_at,
    last_watched_at)
SELECT s.client_user_id, s.media_content_key, count(*)::integer,
       sum(s.playtime)::bigint, sum(s.real_playtime)::bigint, max(s.block_count),
       or_merge(s.blocks_played),
       cardinality(array_positions(or_merge(s.blocks_played), true)),
       (array_agg(s.last_play_at ORDER BY s.start_at DESC)
            FILTER (WHERE s.last_play_at IS NOT NULL))[1],
       to_timestamp(min(s.start_at)), max(s.last_report_at)
FROM watch_sessions s
JOIN unnest($1::text[], $2::text[]) AS k(cuid, mck)
  ON s.client_user_id = k.cuid AND s.media_content_key = k.mck
GROUP BY s.client_user_id, s.media_content_key
ON CONFLICT (client_user_id, media_content_key) DO UPDATE SET
    sessions = EXCLUDED.sessions,
    total_playtime = EXCLUDED.total_playtime,
    total_real_playtime = EXCLUDED.total_real_playtime,
    block_count = EXCLUDED.block_count,
    blocks_ever_played = EXCLUDED.blocks_ever_played,
    blocks_watched = EXCLUDED.blocks_watched,
    last_position = EXCLUDED.last_position,
    first_watched_at = EXCLUDED.first_watched_at,
    last_watched_at = EXCLUDED.last_watched_at";

/// Sessions turned into one array per column, for `unnest`.
struct Columns<'a> {
    user: Vec<&'a str>,
    media: Vec<&'a str>,
    start_at: Vec<i64>,
    channel_key: Vec<Option<&'a str>>,
    encoding_profile: Vec<Option<&'a str>>,
    duration: Vec<Option<i64>>,
    player_id: Vec<Option<&'a str>>,
    hardware_id: Vec<Option<&'a str>>,
    device: Vec<Option<&'a str>>,
    os: Vec<Option<&'a str>>,
    version: Vec<Option<&'a str>>,
    host_name: Vec<Option<&'a str>>,
    uservalues: Vec<String>,
    playtime: Vec<i64>,
    real_playtime: Vec<i64>,
    runtime: Vec<i64>,
    showtime: Vec<i64>,
    playtime_percent: Vec<i64>,
    last_play_at: Vec<Option<i64>>,
    last_play_at_runtime: Vec<Option<i64>>,
    block_count: Vec<Option<i32>>,
    blocks_played: Vec<String>,
    block_seconds: Vec<String>,
    block_percent: Vec<String>,
    first_report_at: Vec<OffsetDateTime>,
    last_report_at: Vec<OffsetDateTime>,
    reports: Vec<i64>,
}

/// Counters are bounded by parsing and validation far below `i64::MAX`; saturate regardless.
fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// A PostgreSQL array literal, e.g. `{t,f}` or `{1,2}`, cast to its type in SQL.
fn array_literal<T>(items: impl Iterator<Item = T>, f: impl Fn(T) -> String) -> String {
    let parts: Vec<String> = items.map(f).collect();
    format!("{{{}}}", parts.join(","))
}

impl<'a> Columns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            user: Vec::with_capacity(n),
            media: Vec::with_capacity(n),
            start_at: Vec::with_capacity(n),
            channel_key: Vec::with_capacity(n),
            encoding_profile: Vec::with_capacity(n),
            duration: Vec::with_capacity(n),
            player_id: Vec::with_capacity(n),
            hardware_id: Vec::with_capacity(n),
            device: Vec::with_capacity(n),
            os: Vec::with_capacity(n),
            version: Vec::with_capacity(n),
            host_name: Vec::with_capacity(n),
            uservalues: Vec::with_capacity(n),
            playtime: Vec::with_capacity(n),
            real_playtime: Vec::with_capacity(n),
            runtime: Vec::with_capacity(n),
            showtime: Vec::with_capacity(n),
            playtime_percent: Vec::with_capacity(n),
            last_play_at: Vec::with_capacity(n),
            last_play_at_runtime: Vec::with_capacity(n),
            block_count: Vec::with_capacity(n),
            blocks_played: Vec::with_capacity(n),
            block_seconds: Vec::with_capacity(n),
            block_percent: Vec::with_capacity(n),
            first_report_at: Vec::with_capacity(n),
            last_report_at: Vec::with_capacity(n),
            reports: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, s: &'a Session) {
        self.user.push(s.key.client_user_id.as_str());
        self.media.push(s.key.media_content_key.as_str());
        self.start_at.push(s.key.start_at.0);
        self.channel_key.push(s.channel_key.as_deref());
        self.encoding_profile.push(s.encoding_profile.as_deref());
        self.duration.push(s.duration.map(int));
        self.player_id.push(s.player_id.as_deref());
        self.hardware_id.push(s.hardware_id.as_deref());
        self.device.push(s.device.as_deref());
        self.os.push(s.os.as_deref());
        self.version.push(s.version.as_deref());
        self.host_name.push(s.host_name.as_deref());
        self.uservalues
            .push(serde_json::to_string(&s.uservalues).unwrap_or_else(|_| "{}".into()));
        self.playtime.push(int(s.playtime));
        self.real_playtime.push(int(s.real_playtime));
        self.runtime.push(int(s.runtime));
        self.showtime.push(int(s.showtime));
        self.playtime_percent.push(int(s.playtime_percent));
        self.last_play_at.push(s.position.map(|(_, p)| int(p)));
        self.last_play_at_runtime
            .push(s.position.map(|(r, _)| int(r)));
        self.block_count
            .push(s.block_count.map(|c| i32::try_from(c).unwrap_or(i32::MAX)));
        self.blocks_played.push(array_literal(s.blocks.iter(), |b| {
            if b.played { "t" } else { "f" }.to_owned()
        }));
        self.block_seconds.push(array_literal(s.blocks.iter(), |b| {
            int(b.seconds).to_string()
        }));
        self.block_percent.push(array_literal(s.blocks.iter(), |b| {
            int(b.percent).to_string()
        }));
        self.first_report_at.push(s.first_report_at);
        self.last_report_at.push(s.last_report_at);
        self.reports.push(int(s.reports));
    }
}
