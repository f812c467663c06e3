//! Moving history rows in and out of PostgreSQL, and nothing else: common's read model of the
//! table ([`SessionRow`], its fields named as the columns), every statement built from its one
//! column list.
//! Merging is not done here (`sessions.rs`).
//!
//! Writes go through a temporary staging table per table (`COPY ... BINARY` into it, then one
//! `UPDATE ... FROM` for the rows that exist and one `INSERT` for the new ones), which carries
//! arrays and JSON in PostgreSQL's binary form instead of text to be parsed.
//!
//! Rows are read without locks and written back only if unchanged since (optimistically): each
//! is read with its version, PostgreSQL's `xmin` (the transaction that wrote it last, which every
//! update changes), and updated only where `xmin` is still the one read. A write that finds
//! otherwise (or finds a new row already inserted) says so ([`Raced`]); the caller rolls back and
//! retries. Only two consumers overlapping in a rebalance ever race, so the common path pays for
//! no row locks. `xmin` is a system column: it is in no snapshot of the tables, so two runs that
//! merged the same reports in different batches still hold equal rows.

use std::collections::{BTreeMap, HashMap};
use std::pin::pin;
use std::sync::LazyLock;

use deadpool_postgres::Transaction;
use kollus_common::kollus::lms::merge::{merge_segments, stored_segments, to_stored};
use kollus_common::kollus::lms::Block;
pub use kollus_common::model::SessionRow;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};

use crate::sessions::{Segments, Session, SessionKey, Signed};

/// The watch-history tables, all derived from `kollus.playback.v1` (emptied by `--rebuild`).
/// `watch_progress` is a view over them.
pub const TABLES: &[&str] = &["watch_sessions"];

/// A session's identity as stored: (client_user_id, media_content_key, start_at).
pub type SessionId = (String, String, i64);
/// A row's version as read (its `xmin`): the write-back matches only the same version.
pub type Version = i64;

/// The statements one table's rows move with, built once from its column list.
struct Statements {
    select: String,
    stage: String,
    copy: String,
    update: String,
    insert: String,
}

impl Statements {
    fn new(table: &str, columns: &[&str], keys: usize) -> Self {
        let list = columns.join(", ");
        let key = &columns[..keys];
        let stage = format!("{table}_stage");
        let matches = |a: &str, b: &str| {
            key.iter()
                .map(|k| format!("{a}.{k} = {b}.{k}"))
                .collect::<Vec<_>>()
                .join(" AND ")
        };
        let key_types = ["text", "text", "bigint"];
        let unnest = key
            .iter()
            .enumerate()
            .map(|(i, _)| format!("${}::{}[]", i + 1, key_types[i]))
            .collect::<Vec<_>>()
            .join(", ");
        Self {
            // The version comes last, after `COLUMNS`.
            select: format!(
                "SELECT {cols}, t.xmin::text::bigint FROM {table} t \
                 JOIN unnest({unnest}) AS k({keys}) ON {on}",
                cols = columns
                    .iter()
                    .map(|c| format!("t.{c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                keys = key.join(", "),
                on = matches("t", "k"),
            ),
            // Emptied at every commit; created once per connection. `read_version`: the row's
            // `xmin` when it was read, null for a row not stored yet.
            stage: format!(
                "CREATE TEMPORARY TABLE IF NOT EXISTS {stage} (LIKE {table}, read_version bigint) \
                 ON COMMIT DELETE ROWS"
            ),
            copy: format!("COPY {stage} ({list}, read_version) FROM STDIN (FORMAT binary)"),
            update: format!(
                "UPDATE {table} AS t SET {set} FROM {stage} AS s \
                 WHERE {on} AND t.xmin::text::bigint = s.read_version",
                set = columns[keys..]
                    .iter()
                    .map(|c| format!("{c} = s.{c}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                on = matches("t", "s"),
            ),
            insert: format!(
                "INSERT INTO {table} ({list}) SELECT {list} FROM {stage} \
                 WHERE read_version IS NULL ON CONFLICT DO NOTHING"
            ),
        }
    }
}

static SESSIONS: LazyLock<Statements> =
    LazyLock::new(|| Statements::new(SessionRow::TABLE, SessionRow::COLUMNS, SessionRow::KEYS));

/// What a write found: rows another transaction wrote (or inserted) since this one read them,
/// which this write therefore left alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Raced(pub u64);

/// Creates this connection's staging tables, unless it has them.
pub async fn prepare(tx: &Transaction<'_>) -> Result<(), tokio_postgres::Error> {
    tx.batch_execute(&format!(
        "SET LOCAL client_min_messages = warning; {}",
        SESSIONS.stage
    ))
    .await
}

/// Reads the stored sessions among `keys` (distinct).
pub async fn read_sessions(
    tx: &Transaction<'_>,
    keys: &[&SessionKey],
) -> Result<HashMap<SessionId, (SessionRow, Version)>, tokio_postgres::Error> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let users: Vec<&str> = keys.iter().map(|k| k.client_user_id.as_str()).collect();
    let media: Vec<&str> = keys.iter().map(|k| k.media_content_key.as_str()).collect();
    let starts: Vec<i64> = keys.iter().map(|k| k.start_at.0).collect();
    let rows = tx
        .query(&SESSIONS.select, &[&users, &media, &starts])
        .await?;
    rows.iter()
        .map(|r| {
            let row = SessionRow::from_row(r)?;
            Ok((row.id(), (row, r.try_get(SessionRow::COLUMNS.len())?)))
        })
        .collect()
}

/// A row to write, and its version when read (`None`: not stored then).
pub struct Write<R> {
    pub row: R,
    pub read_version: Option<Version>,
}

/// Writes sessions read by [`read_sessions`] (or new).
pub async fn write_sessions(
    tx: &Transaction<'_>,
    rows: &[Write<SessionRow>],
) -> Result<Raced, tokio_postgres::Error> {
    let values: Vec<_> = rows
        .iter()
        .map(|w| with_read(w.row.values(), &w.read_version))
        .collect();
    write(tx, &SESSIONS, SessionRow::TYPES, &values, rows).await
}

fn with_read<'a>(
    mut values: Vec<&'a (dyn ToSql + Sync)>,
    read_version: &'a Option<Version>,
) -> Vec<&'a (dyn ToSql + Sync)> {
    values.push(read_version);
    values
}

/// Stages `rows`, then updates the stored ones that are as they were read and inserts the new
/// ones that nobody inserted meanwhile; counts the others.
async fn write<R>(
    tx: &Transaction<'_>,
    statements: &Statements,
    types: &[Type],
    values: &[Vec<&(dyn ToSql + Sync)>],
    rows: &[Write<R>],
) -> Result<Raced, tokio_postgres::Error> {
    if rows.is_empty() {
        return Ok(Raced(0));
    }
    let types: Vec<Type> = types.iter().cloned().chain([Type::INT8]).collect();
    let sink = tx.copy_in(&statements.copy).await?;
    let mut writer = pin!(BinaryCopyInWriter::new(sink, &types));
    for row in values {
        writer.as_mut().write(row).await?;
    }
    writer.finish().await?;
    let (updated, inserted) = futures_util::future::try_join(
        tx.execute(&statements.update, &[]),
        tx.execute(&statements.insert, &[]),
    )
    .await?;
    Ok(Raced(
        (rows.len() as u64).saturating_sub(updated + inserted),
    ))
}

/// Counters are bounded by parsing and validation far below `i64::MAX`; saturate regardless.
pub fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn uint(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// A session as its row, and back: the worker's side of common's [`SessionRow`].
pub trait SessionRowExt {
    fn of(s: &Session) -> Self;
    /// The session this row stores (`key` is its identity, already parsed).
    fn into_session(self, key: SessionKey) -> Session;
}

impl SessionRowExt for SessionRow {
    fn of(s: &Session) -> Self {
        let blocks = &s.blocks;
        Self {
            client_user_id: s.key.client_user_id.as_str().to_owned(),
            media_content_key: s.key.media_content_key.as_str().to_owned(),
            start_at: s.key.start_at.0,
            channel_key: s.channel_key.clone(),
            encoding_profile: s.encoding_profile.clone(),
            duration: s.duration.map(int),
            player_id: s.player_id.clone(),
            hardware_id: s.hardware_id.clone(),
            device: s.device.clone(),
            os: s.os.clone(),
            version: s.version.clone(),
            host_name: s.host_name.clone(),
            uservalues: serde_json::Value::Object(
                s.uservalues
                    .iter()
                    .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                    .collect(),
            ),
            playtime: int(s.playtime),
            real_playtime: int(s.real_playtime),
            runtime: int(s.runtime),
            showtime: int(s.showtime),
            playtime_percent: int(s.playtime_percent),
            last_play_at: s.position.map(|(_, p)| int(p)),
            last_play_at_runtime: s.position.map(|(r, _)| int(r)),
            block_count: s.block_count.map(|c| i32::try_from(c).unwrap_or(i32::MAX)),
            blocks_played: blocks.iter().map(|b| b.played).collect(),
            block_seconds: blocks.iter().map(|b| int(b.seconds)).collect(),
            block_percent: blocks.iter().map(|b| int(b.percent)).collect(),
            first_report_at: s.first_report_at,
            last_report_at: s.last_report_at,
            segments: to_stored(&s.segments),
            hash_verified: s.signed.as_option(),
            bound: s.bound.as_option(),
            device_clock: s.device_clock,
        }
    }

    fn into_session(self, key: SessionKey) -> Session {
        let n = self
            .blocks_played
            .len()
            .max(self.block_seconds.len())
            .max(self.block_percent.len());
        let blocks = (0..n)
            .map(|i| Block {
                played: self.blocks_played.get(i).copied().unwrap_or(false),
                seconds: self.block_seconds.get(i).copied().map_or(0, uint),
                percent: self.block_percent.get(i).copied().map_or(0, uint),
            })
            .collect();
        let uservalues: BTreeMap<String, String> = match self.uservalues {
            serde_json::Value::Object(m) => m
                .into_iter()
                .filter_map(|(k, v)| Some((k, v.as_str()?.to_owned())))
                .collect(),
            _ => BTreeMap::new(),
        };
        let mut segments = Segments::new();
        merge_segments(&mut segments, stored_segments(&self.segments));
        Session {
            key,
            channel_key: self.channel_key,
            encoding_profile: self.encoding_profile,
            duration: self.duration.map(uint),
            player_id: self.player_id,
            hardware_id: self.hardware_id,
            device: self.device,
            os: self.os,
            version: self.version,
            host_name: self.host_name,
            uservalues,
            playtime: uint(self.playtime),
            real_playtime: uint(self.real_playtime),
            runtime: uint(self.runtime),
            showtime: uint(self.showtime),
            playtime_percent: uint(self.playtime_percent),
            position: self
                .last_play_at
                .map(|p| (uint(self.last_play_at_runtime.unwrap_or(0)), uint(p))),
            block_count: self.block_count.and_then(|c| u32::try_from(c).ok()),
            blocks,
            segments,
            signed: Signed::from_option(self.hash_verified),
            bound: Signed::from_option(self.bound),
            device_clock: self.device_clock,
            first_report_at: self.first_report_at,
            last_report_at: self.last_report_at,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_every_column_once_and_keys_only_where_they_identify() {
        let s = &*SESSIONS;
        assert!(s
            .select
            .starts_with("SELECT t.client_user_id, t.media_content_key, t.start_at,"));
        assert!(
            s.select
                .contains(", t.device_clock, t.xmin::text::bigint FROM"),
            "the version after the columns: {}",
            s.select
        );
        assert!(s.select.contains("ON t.client_user_id = k.client_user_id AND t.media_content_key = k.media_content_key AND t.start_at = k.start_at"), "{}", s.select);
        assert!(!s.update.contains("SET client_user_id"), "{}", s.update);
        for c in SessionRow::COLUMNS {
            assert_eq!(
                s.copy.matches(&format!(" {c},")).count()
                    + s.copy.matches(&format!(" {c})")).count()
                    + s.copy.matches(&format!("({c},")).count(),
                1,
                "{c} in {}",
                s.copy
            );
        }
        assert_eq!(SessionRow::COLUMNS.len(), SessionRow::TYPES.len());
    }
}
