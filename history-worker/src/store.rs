//! Moving a shard's rows in and out of PostgreSQL, set-based, inside its transaction: claim the
//! envelope ids, read and lock the stored sessions, write them back (update, insert), and
//! recompute the rollup of the pairs they belong to.

use std::collections::HashSet;

use deadpool_postgres::Transaction;
use time::OffsetDateTime;
use uuid::Uuid;

use crate::sessions::{Segments, Session, Signed};

/// Stored segments: a JSON array of `[block, start_time, play_time]` (migrations/V6).
fn segments_from_json(v: &serde_json::Value) -> Segments {
    let mut out = Segments::new();
    for triple in v.as_array().into_iter().flatten() {
        let n = |i: usize| triple.get(i).and_then(serde_json::Value::as_u64);
        if let (Some(block), Some(start), Some(play)) = (n(0), n(1), n(2)) {
            let block = u32::try_from(block).unwrap_or(u32::MAX);
            let mine = out.entry((block, start)).or_insert(0);
            *mine = (*mine).max(play);
        }
    }
    out
}

fn segments_to_json(segments: &Segments) -> String {
    let triples: Vec<[u64; 3]> = segments
        .iter()
        .map(|(&(block, start), &play)| [u64::from(block), start, play])
        .collect();
    serde_json::to_string(&triples).unwrap_or_else(|_| "[]".into())
}

/// The watch-history tables, all derived from `kollus.playback.v1` (emptied by `--rebuild`).
pub const TABLES: &[&str] = &["watch_progress", "watch_sessions", "playback_events"];

/// Records the envelope ids; returns those not seen before (the only ones to apply).
pub async fn claim_new(
    tx: &Transaction<'_>,
    ids: &[Uuid],
    received: &[OffsetDateTime],
) -> Result<HashSet<Uuid>, tokio_postgres::Error> {
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

/// Writes a batch's merged sessions, each merged with its stored row by the session policy.
///
/// The stored rows of the batch's sessions are read and locked (`FOR UPDATE`), merged in Rust
/// (`Session::merge`, cheap) and written back whole; only sessions with no row yet are
/// inserted. Should another transaction insert one of those first (two consumers briefly
/// overlapping in a rebalance), the insert's `ON CONFLICT` merges in SQL: slower, equally exact.
pub async fn write_sessions(
    tx: &Transaction<'_>,
    batch: Vec<Session>,
) -> Result<Vec<Session>, tokio_postgres::Error> {
    let mut stored = load_sessions(tx, &batch).await?;
    let mut updates = Vec::with_capacity(stored.len());
    let mut inserts = Vec::with_capacity(batch.len() - stored.len());
    for s in batch {
        let key = (
            s.key.client_user_id.as_str().to_owned(),
            s.key.media_content_key.as_str().to_owned(),
            s.key.start_at.0,
        );
        match stored.remove(&key) {
            Some(row) => {
                let mut merged = row.into_session(s.key.clone());
                merged.merge(s);
                updates.push(merged);
            }
            None => inserts.push(s),
        }
    }
    if !updates.is_empty() {
        tx.execute(UPDATE_SESSIONS, &Columns::of(&updates).params())
            .await?;
    }
    if !inserts.is_empty() {
        upsert_sessions(tx, &inserts).await?;
    }
    updates.extend(inserts);
    Ok(updates)
}

/// A stored session row, keyed by its (user, media, start_at).
struct StoredSession {
    channel_key: Option<String>,
    encoding_profile: Option<String>,
    duration: Option<i64>,
    player_id: Option<String>,
    hardware_id: Option<String>,
    device: Option<String>,
    os: Option<String>,
    version: Option<String>,
    host_name: Option<String>,
    uservalues: serde_json::Value,
    counters: [i64; 5],
    last_play_at: Option<i64>,
    last_play_at_runtime: Option<i64>,
    block_count: Option<i32>,
    blocks_played: Vec<bool>,
    block_seconds: Vec<i64>,
    block_percent: Vec<i64>,
    segments: serde_json::Value,
    hash_verified: Option<bool>,
    device_clock: bool,
    first_report_at: OffsetDateTime,
    last_report_at: OffsetDateTime,
    reports: i64,
}

type RowKey = (String, String, i64);

impl StoredSession {
    fn into_session(self, key: crate::sessions::SessionKey) -> Session {
        let u = |v: i64| u64::try_from(v).unwrap_or(0);
        let [playtime, real_playtime, runtime, showtime, playtime_percent] = self.counters.map(u);
        let n = self
            .blocks_played
            .len()
            .max(self.block_seconds.len())
            .max(self.block_percent.len());
        let blocks = (0..n)
            .map(|i| kollus_common::kollus::lms::Block {
                played: self.blocks_played.get(i).copied().unwrap_or(false),
                seconds: self.block_seconds.get(i).copied().map_or(0, u),
                percent: self.block_percent.get(i).copied().map_or(0, u),
            })
            .collect();
        let uservalues = match self.uservalues {
            serde_json::Value::Object(m) => m
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                .collect(),
            _ => Default::default(),
        };
        Session {
            key,
            channel_key: self.channel_key,
            encoding_profile: self.encoding_profile,
            duration: self.duration.map(u),
            player_id: self.player_id,
            hardware_id: self.hardware_id,
            device: self.device,
            os: self.os,
            version: self.version,
            host_name: self.host_name,
            uservalues,
            playtime,
            real_playtime,
            runtime,
            showtime,
            playtime_percent,
            position: self
                .last_play_at
                .map(|p| (u(self.last_play_at_runtime.unwrap_or(0)), u(p))),
            block_count: self.block_count.and_then(|c| u32::try_from(c).ok()),
            blocks,
            segments: segments_from_json(&self.segments),
            signed: Signed::from_option(self.hash_verified),
            device_clock: self.device_clock,
            first_report_at: self.first_report_at,
            last_report_at: self.last_report_at,
            reports: u(self.reports),
        }
    }
}

/// Reads and locks the stored rows of `sessions`' keys (in key order, as `coalesce` sorted
/// them, so concurrent writers lock in the same order).
async fn load_sessions(
    tx: &Transaction<'_>,
    sessions: &[Session],
) -> Result<std::collections::HashMap<RowKey, StoredSession>, tokio_postgres::Error> {
    let users: Vec<&str> = sessions
        .iter()
        .map(|s| s.key.client_user_id.as_str())
        .collect();
    let media: Vec<&str> = sessions
        .iter()
        .map(|s| s.key.media_content_key.as_str())
        .collect();
    let starts: Vec<i64> = sessions.iter().map(|s| s.key.start_at.0).collect();
    let rows = tx
        .query(
            "SELECT w.client_user_id, w.media_content_key, w.start_at, w.channel_key,                     w.encoding_profile, w.duration, w.player_id, w.hardware_id, w.device, w.os,                     w.version, w.host_name, w.uservalues, w.playtime, w.real_playtime, w.runtime,                     w.showtime, w.playtime_percent, w.last_play_at, w.last_play_at_runtime,                     w.block_count, w.blocks_played, w.block_seconds, w.block_percent,                     w.first_report_at, w.last_report_at, w.reports, w.segments,                     w.hash_verified, w.device_clock              FROM watch_sessions w              JOIN unnest($1::text[], $2::text[], $3::bigint[]) AS k(cuid, mck, start_at)                ON w.client_user_id = k.cuid AND w.media_content_key = k.mck               AND w.start_at = k.start_at              ORDER BY 1, 2, 3 FOR UPDATE OF w",
            &[&users, &media, &starts],
        )
        .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                (r.get(0), r.get(1), r.get(2)),
                StoredSession {
                    channel_key: r.get(3),
                    encoding_profile: r.get(4),
                    duration: r.get(5),
                    player_id: r.get(6),
                    hardware_id: r.get(7),
                    device: r.get(8),
                    os: r.get(9),
                    version: r.get(10),
                    host_name: r.get(11),
                    uservalues: r.get(12),
                    counters: [r.get(13), r.get(14), r.get(15), r.get(16), r.get(17)],
                    last_play_at: r.get(18),
                    last_play_at_runtime: r.get(19),
                    block_count: r.get(20),
                    blocks_played: r.get(21),
                    block_seconds: r.get(22),
                    block_percent: r.get(23),
                    first_report_at: r.get(24),
                    last_report_at: r.get(25),
                    reports: r.get(26),
                    segments: r.get(27),
                    hash_verified: r.get(28),
                    device_clock: r.get(29),
                },
            )
        })
        .collect())
}

/// Inserts sessions (each key at most once); a row that exists by then is merged with in SQL
/// by the session policy.
pub async fn upsert_sessions(
    tx: &Transaction<'_>,
    sessions: &[Session],
) -> Result<(), tokio_postgres::Error> {
    tx.execute(UPSERT_SESSIONS, &Columns::of(sessions).params())
        .await?;
    Ok(())
}

/// Recomputes the per-(user, video) rollup from all the sessions of the pairs a batch touched
/// (read back in this transaction, so including the batch's own writes), then writes it whole.
/// Recomputing (rather than adding) keeps it exact however often a batch is replayed.
pub async fn refresh_progress(
    tx: &Transaction<'_>,
    sessions: &[Session],
) -> Result<(), tokio_postgres::Error> {
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
    let rows = tx
        .query(
            "SELECT s.client_user_id, s.media_content_key, s.start_at, s.playtime, \
                    s.real_playtime, s.block_count, s.blocks_played, s.last_play_at, \
                    s.last_report_at \
             FROM watch_sessions s \
             JOIN unnest($1::text[], $2::text[]) AS k(cuid, mck) \
               ON s.client_user_id = k.cuid AND s.media_content_key = k.mck",
            &[&users, &media],
        )
        .await?;
    let mut rollups: std::collections::BTreeMap<(String, String), Rollup> = Default::default();
    for r in rows {
        let start_at: i64 = r.get(2);
        let last_report_at: OffsetDateTime = r.get(8);
        let rollup = rollups
            .entry((r.get(0), r.get(1)))
            .or_insert_with(|| Rollup::new(start_at, last_report_at));
        rollup.add(
            start_at,
            r.get(3),
            r.get(4),
            r.get(5),
            &r.get::<_, Vec<bool>>(6),
            r.get(7),
            last_report_at,
        );
    }
    let n = rollups.len();
    let mut c = ProgressColumns::with_capacity(n);
    for ((user, media), p) in &rollups {
        c.push(user, media, p);
    }
    tx.execute(
        UPSERT_PROGRESS,
        &[
            &c.user,
            &c.media,
            &c.sessions,
            &c.total_playtime,
            &c.total_real_playtime,
            &c.block_count,
            &c.blocks_ever_played,
            &c.blocks_watched,
            &c.last_position,
            &c.first_watched_at,
            &c.last_watched_at,
        ],
    )
    .await?;
    Ok(())
}

/// One (user, video)'s rollup over its sessions.
struct Rollup {
    sessions: i32,
    total_playtime: i64,
    total_real_playtime: i64,
    block_count: Option<i32>,
    blocks_ever_played: Vec<bool>,
    /// (start_at, position) of the latest session that reported a position.
    last_position: Option<(i64, i64)>,
    first_start_at: i64,
    last_watched_at: OffsetDateTime,
}

impl Rollup {
    fn new(start_at: i64, last_report_at: OffsetDateTime) -> Self {
        Self {
            sessions: 0,
            total_playtime: 0,
            total_real_playtime: 0,
            block_count: None,
            blocks_ever_played: Vec::new(),
            last_position: None,
            first_start_at: start_at,
            last_watched_at: last_report_at,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        start_at: i64,
        playtime: i64,
        real_playtime: i64,
        block_count: Option<i32>,
        played: &[bool],
        last_play_at: Option<i64>,
        last_report_at: OffsetDateTime,
    ) {
        self.sessions += 1;
        self.total_playtime = self.total_playtime.saturating_add(playtime);
        self.total_real_playtime = self.total_real_playtime.saturating_add(real_playtime);
        self.block_count = self.block_count.max(block_count);
        if self.blocks_ever_played.len() < played.len() {
            self.blocks_ever_played.resize(played.len(), false);
        }
        for (mine, p) in self.blocks_ever_played.iter_mut().zip(played) {
            *mine |= *p;
        }
        if let Some(position) = last_play_at {
            self.last_position = self.last_position.max(Some((start_at, position)));
        }
        self.first_start_at = self.first_start_at.min(start_at);
        self.last_watched_at = self.last_watched_at.max(last_report_at);
    }
}

struct ProgressColumns<'a> {
    user: Vec<&'a str>,
    media: Vec<&'a str>,
    sessions: Vec<i32>,
    total_playtime: Vec<i64>,
    total_real_playtime: Vec<i64>,
    block_count: Vec<Option<i32>>,
    blocks_ever_played: Vec<String>,
    blocks_watched: Vec<i32>,
    last_position: Vec<Option<i64>>,
    first_watched_at: Vec<OffsetDateTime>,
    last_watched_at: Vec<OffsetDateTime>,
}

impl<'a> ProgressColumns<'a> {
    fn with_capacity(n: usize) -> Self {
        Self {
            user: Vec::with_capacity(n),
            media: Vec::with_capacity(n),
            sessions: Vec::with_capacity(n),
            total_playtime: Vec::with_capacity(n),
            total_real_playtime: Vec::with_capacity(n),
            block_count: Vec::with_capacity(n),
            blocks_ever_played: Vec::with_capacity(n),
            blocks_watched: Vec::with_capacity(n),
            last_position: Vec::with_capacity(n),
            first_watched_at: Vec::with_capacity(n),
            last_watched_at: Vec::with_capacity(n),
        }
    }

    fn push(&mut self, user: &'a str, media: &'a str, p: &Rollup) {
        self.user.push(user);
        self.media.push(media);
        self.sessions.push(p.sessions);
        self.total_playtime.push(p.total_playtime);
        self.total_real_playtime.push(p.total_real_playtime);
        self.block_count.push(p.block_count);
        self.blocks_ever_played
            .push(array_literal(p.blocks_ever_played.iter(), |b| {
                if *b { "t" } else { "f" }.to_owned()
            }));
        self.blocks_watched
            .push(p.blocks_ever_played.iter().filter(|b| **b).count() as i32);
        self.last_position.push(p.last_position.map(|(_, pos)| pos));
        self.first_watched_at.push(
            OffsetDateTime::from_unix_timestamp(p.first_start_at)
                .unwrap_or(OffsetDateTime::UNIX_EPOCH),
        );
        self.last_watched_at.push(p.last_watched_at);
    }
}

const UPSERT_PROGRESS: &str = "
INSERT INTO watch_progress AS p (
    client_user_id, media_content_key, sessions, total_playtime, total_real_playtime,
    block_count, blocks_ever_played, blocks_watched, last_position, first_watched_at,
    last_watched_at)
SELECT u.cuid, u.mck, u.sessions, u.total_playtime, u.total_real_playtime, u.block_count,
       u.blocks::boolean[], u.blocks_watched, u.last_position, u.first_watched_at, u.last_watched_at
FROM unnest($1::text[], $2::text[], $3::integer[], $4::bigint[], $5::bigint[], $6::integer[],
            $7::text[], $8::integer[], $9::bigint[], $10::timestamptz[], $11::timestamptz[])
     AS u(cuid, mck, sessions, total_playtime, total_real_playtime, block_count, blocks,
          blocks_watched, last_position, first_watched_at, last_watched_at)
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

/// The sessions of a batch as a table `u`, from the 30 parameters of [`Columns::params`] (both
/// session statements use it, so their parameters cannot drift apart).
macro_rules! sessions_from_params {
    () => {
        "FROM unnest($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::bigint[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[], $13::text[],
            $14::bigint[], $15::bigint[], $16::bigint[], $17::bigint[], $18::bigint[],
            $19::bigint[], $20::bigint[], $21::integer[], $22::text[], $23::text[], $24::text[],
            $25::timestamptz[], $26::timestamptz[], $27::bigint[], $28::text[], $29::boolean[],
            $30::boolean[])
     AS u(cuid, mck, start_at, channel_key, encoding_profile, duration,
          player_id, hardware_id, device, os, version, host_name, uservalues,
          playtime, real_playtime, runtime, showtime, playtime_percent,
          last_play_at, last_play_at_runtime, block_count, blocks_played, block_seconds,
          block_percent, first_report_at, last_report_at, reports, segments, hash_verified,
          device_clock)
"
    };
}

const UPSERT_SESSIONS: &str = concat!(
    "
INSERT INTO watch_sessions AS w (
    client_user_id, media_content_key, start_at, channel_key, encoding_profile, duration,
    player_id, hardware_id, device, os, version, host_name, uservalues,
    playtime, real_playtime, runtime, showtime, playtime_percent,
    last_play_at, last_play_at_runtime, block_count, blocks_played, block_seconds, block_percent,
    first_report_at, last_report_at, reports, segments, hash_verified, device_clock)
SELECT u.cuid, u.mck, u.start_at, u.channel_key, u.encoding_profile, u.duration,
       u.player_id, u.hardware_id, u.device, u.os, u.version, u.host_name, u.uservalues::jsonb,
       u.playtime, u.real_playtime, u.runtime, u.showtime, u.playtime_percent,
       u.last_play_at, u.last_play_at_runtime, u.block_count,
       u.blocks_played::boolean[], u.block_seconds::bigint[], u.block_percent::bigint[],
       u.first_report_at, u.last_report_at, u.reports, u.segments::jsonb, u.hash_verified,
       u.device_clock
",
    sessions_from_params!(),
    "ON CONFLICT (client_user_id, media_content_key, start_at) DO UPDATE SET
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
    reports = w.reports + EXCLUDED.reports,
    segments = (
        SELECT coalesce(jsonb_agg(jsonb_build_array(block, start_time, play_time)
                                  ORDER BY block, start_time), '[]')
        FROM (SELECT (t->>0)::bigint AS block, (t->>1)::bigint AS start_time,
                     max((t->>2)::bigint) AS play_time
              FROM jsonb_array_elements(w.segments || EXCLUDED.segments) AS t
              GROUP BY 1, 2) AS merged),
    hash_verified = CASE WHEN w.hash_verified IS NOT DISTINCT FROM EXCLUDED.hash_verified
                         THEN w.hash_verified ELSE false END,
    device_clock = w.device_clock OR EXCLUDED.device_clock"
);

/// Overwrites stored sessions (already merged with their rows, which this transaction locked).
const UPDATE_SESSIONS: &str = concat!(
    "
UPDATE watch_sessions AS w SET
    channel_key = u.channel_key, encoding_profile = u.encoding_profile, duration = u.duration,
    player_id = u.player_id, hardware_id = u.hardware_id, device = u.device, os = u.os,
    version = u.version, host_name = u.host_name, uservalues = u.uservalues::jsonb,
    playtime = u.playtime, real_playtime = u.real_playtime, runtime = u.runtime,
    showtime = u.showtime, playtime_percent = u.playtime_percent,
    last_play_at = u.last_play_at, last_play_at_runtime = u.last_play_at_runtime,
    block_count = u.block_count, blocks_played = u.blocks_played::boolean[],
    block_seconds = u.block_seconds::bigint[], block_percent = u.block_percent::bigint[],
    first_report_at = u.first_report_at, last_report_at = u.last_report_at, reports = u.reports,
    segments = u.segments::jsonb, hash_verified = u.hash_verified, device_clock = u.device_clock
",
    sessions_from_params!(),
    "WHERE w.client_user_id = u.cuid AND w.media_content_key = u.mck AND w.start_at = u.start_at"
);

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
    segments: Vec<String>,
    hash_verified: Vec<Option<bool>>,
    device_clock: Vec<bool>,
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
    fn of(sessions: &'a [Session]) -> Self {
        let mut c = Self::with_capacity(sessions.len());
        for s in sessions {
            c.push(s);
        }
        c
    }

    /// The statement parameters $1..$30, in the column order both statements use.
    fn params(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 30] {
        [
            &self.user,
            &self.media,
            &self.start_at,
            &self.channel_key,
            &self.encoding_profile,
            &self.duration,
            &self.player_id,
            &self.hardware_id,
            &self.device,
            &self.os,
            &self.version,
            &self.host_name,
            &self.uservalues,
            &self.playtime,
            &self.real_playtime,
            &self.runtime,
            &self.showtime,
            &self.playtime_percent,
            &self.last_play_at,
            &self.last_play_at_runtime,
            &self.block_count,
            &self.blocks_played,
            &self.block_seconds,
            &self.block_percent,
            &self.first_report_at,
            &self.last_report_at,
            &self.reports,
            &self.segments,
            &self.hash_verified,
            &self.device_clock,
        ]
    }

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
            segments: Vec::with_capacity(n),
            hash_verified: Vec::with_capacity(n),
            device_clock: Vec::with_capacity(n),
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
        self.segments.push(segments_to_json(&s.segments));
        self.hash_verified.push(s.signed.as_option());
        self.device_clock.push(s.device_clock);
    }
}
