//! The seal: every row of the access log chained, per class, by an HMAC under
//! `ACCESS_LOG_KEY_FILE` (a key the database never holds), a few seconds after it is written.
//!
//! **The chain.** Each class (`access`, `rights`) is a linked list of seals
//! (`access_log_seals`): a seal names its row (`log_id`) and the row sealed before it
//! (`prev_id`), and carries
//!
//! ```text
//! mac = HMAC-SHA256(key, prev_mac || canonical(row, prev_id))
//! ```
//!
//! where `prev_mac` is the previous seal's mac, an anchor's (`access_log_anchors`: a row that
//! retention dropped), or 32 zero bytes for a chain's very first row.
//!
//! **The canonical encoding** of a row is the compact JSON (serde_json) of one array holding every
//! column, in this order, then the previous row's id:
//!
//! ```text
//! [id, class, at (unix microseconds), action, key_name, session_hash (hex|null),
//!  client_addr (PostgreSQL's inet text|null), subject_tag|null, subject_generation|null,
//!  subject_sealed (hex|null), target|null, reason|null, count, prev_id|null]
//! ```
//!
//! Strings are JSON strings (UTF-8, serde_json's escaping), numbers JSON integers. Changing any
//! column, the order of the rows (ids or `at`) or the links changes a mac.
//!
//! **The sealer** ([`run`]): rows are inserted freely (no lock on the request path); every
//! `ACCESS_LOG_SEAL_INTERVAL_MS` one replica (the holder of a transaction-level advisory lock)
//! appends the rows that have no seal to their chain's end, in id order. A row committed late
//! (a lower id than rows already sealed) is appended at the end when it shows, never lost: the
//! rows looked at ([`Reach`]) are those above the highest id sealed (an index range, no
//! anti-join), and those below it written less than [`LATE_WINDOW`] before the end was sealed
//! and still without a seal (one index probe each; a transaction that took longer than that to
//! commit its row leaves it unsealed, and `verify` names it). So a run costs the rows of the
//! last hour, not the log's size.
//!
//! **The chain's end** is the seal no other seal names as its previous. Found without a scan: the
//! seal of the highest id, then forward through the seals naming it (index on `prev_id`) until
//! none does. Rows sealed after the highest id are late ones, a handful at most, so the walk is
//! short; the highest id alone would be wrong as soon as one late row is sealed.

use std::time::Duration;

use anyhow::Context as _;
use hmac::{Hmac, Mac as _};
use sha2::Sha256;
use time::OffsetDateTime;
use tokio_postgres::types::ToSql;
use tokio_postgres::GenericClient;

use crate::access_log::record::Class;

/// The advisory lock (transaction level) whose holder seals; other replicas skip the run.
pub const SEAL_LOCK: i64 = 0x6b6f_6c6c_7573_3331;

/// How long before the chain's end was sealed a row may have been written and still be looked
/// for (a row whose transaction took longer than this to commit is left unsealed and named by
/// `verify`). Longer than any of token-api's transactions.
pub const LATE_WINDOW: Duration = Duration::from_secs(3600);

/// Rows sealed per statement (a run loops while a batch is full).
pub const BATCH: i64 = 1_000;
/// Batches a run seals at most per class, so one transaction stays short after a large backlog
/// (a day's reads moved in); the next run goes on.
pub const MAX_BATCHES: u32 = 100;

/// A chain's very first row's previous mac.
pub const GENESIS: [u8; 32] = [0; 32];

/// `ACCESS_LOG_KEY_FILE`'s key.
#[derive(Clone)]
pub struct ChainKey(Hmac<Sha256>);

impl std::fmt::Debug for ChainKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ChainKey(..)")
    }
}

impl ChainKey {
    pub fn new(key: &[u8; kollus_common::subject::KEY_LEN]) -> Self {
        Self(Hmac::new_from_slice(key).expect("HMAC takes any key"))
    }

    pub fn from_file(path: &std::path::Path) -> anyhow::Result<Self> {
        Ok(Self::new(&kollus_common::subject::read_key_file(
            "ACCESS_LOG_KEY_FILE",
            path,
        )?))
    }

    /// HMAC-SHA256 over `parts`, concatenated.
    pub fn mac(&self, parts: &[&[u8]]) -> [u8; 32] {
        let mut m = self.0.clone();
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().into()
    }

    /// A row's seal: over its previous mac and its canonical encoding.
    pub fn seal(&self, prev_mac: &[u8], row: &LogRow, prev_id: Option<i64>) -> [u8; 32] {
        self.mac(&[prev_mac, &row.canonical(prev_id)])
    }

    /// Whether `mac` is the seal of `row` after `prev_mac` (constant time).
    pub fn verifies(
        &self,
        prev_mac: &[u8],
        row: &LogRow,
        prev_id: Option<i64>,
        mac: &[u8],
    ) -> bool {
        let mut m = self.0.clone();
        m.update(prev_mac);
        m.update(&row.canonical(prev_id));
        m.verify_slice(mac).is_ok()
    }
}

/// The columns a [`LogRow`] is read from, `l` being `access_log`.
pub const ROW_COLUMNS: &str = "l.id, l.class, (extract(epoch FROM l.at) * 1000000)::bigint, \
     l.action, l.key_name, l.session_hash, l.client_addr::text, l.subject_tag, \
     l.subject_generation, l.subject_sealed, l.target, l.reason, l.count, l.at";
/// How many columns [`ROW_COLUMNS`] is.
pub const ROW_WIDTH: usize = 14;

/// One row of the log, every column, as sealed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRow {
    pub id: i64,
    pub class: String,
    pub at_micros: i64,
    pub action: String,
    pub key_name: String,
    pub session_hash: Option<Vec<u8>>,
    pub client_addr: Option<String>,
    pub subject_tag: Option<String>,
    pub subject_generation: Option<i32>,
    pub subject_sealed: Option<Vec<u8>>,
    pub target: Option<String>,
    pub reason: Option<String>,
    pub count: i64,
    pub at: OffsetDateTime,
}

impl LogRow {
    /// From a row whose first columns are [`ROW_COLUMNS`].
    pub fn from_row(r: &tokio_postgres::Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            id: r.try_get(0)?,
            class: r.try_get(1)?,
            at_micros: r.try_get(2)?,
            action: r.try_get(3)?,
            key_name: r.try_get(4)?,
            session_hash: r.try_get(5)?,
            client_addr: r.try_get(6)?,
            subject_tag: r.try_get(7)?,
            subject_generation: r.try_get(8)?,
            subject_sealed: r.try_get(9)?,
            target: r.try_get(10)?,
            reason: r.try_get(11)?,
            count: r.try_get(12)?,
            at: r.try_get(13)?,
        })
    }

    /// The module's canonical encoding, with the previous row's id.
    pub fn canonical(&self, prev_id: Option<i64>) -> Vec<u8> {
        serde_json::to_vec(&serde_json::json!([
            self.id,
            self.class,
            self.at_micros,
            self.action,
            self.key_name,
            self.session_hash.as_deref().map(hex::encode),
            self.client_addr,
            self.subject_tag,
            self.subject_generation,
            self.subject_sealed.as_deref().map(hex::encode),
            self.target,
            self.reason,
            self.count,
            prev_id,
        ]))
        .expect("a JSON array serializes")
    }
}

/// Where a chain ends now: its last seal, or the anchor retention left when it dropped them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub log_id: i64,
    pub mac: Vec<u8>,
    /// The row's time (`None` for an anchor).
    pub at: Option<OffsetDateTime>,
    /// When it was sealed (`None` for an anchor).
    pub sealed_at: Option<OffsetDateTime>,
    /// The highest id sealed in the chain (every row above it is unsealed).
    pub highest: i64,
}

/// The chain's end (the module doc says how it is found); `None` before its first row.
pub async fn chain_end(client: &impl GenericClient, class: Class) -> anyhow::Result<Option<End>> {
    let class = class.as_str();
    let Some(top) = client
        .query_opt(
            "SELECT log_id, mac, at, sealed_at FROM access_log_seals WHERE class = $1 \
             ORDER BY log_id DESC LIMIT 1",
            &[&class],
        )
        .await
        .context("finding the chain's highest seal")?
    else {
        let anchor = client
            .query_opt(
                "SELECT log_id, mac FROM access_log_anchors a WHERE class = $1 \
                   AND NOT EXISTS (SELECT 1 FROM access_log_seals s \
                                    WHERE s.class = a.class AND s.prev_id = a.log_id) \
                 ORDER BY log_id DESC LIMIT 1",
                &[&class],
            )
            .await
            .context("finding the chain's anchor")?;
        return Ok(anchor.map(|r| End {
            log_id: r.get(0),
            mac: r.get(1),
            at: None,
            sealed_at: None,
            highest: r.get(0),
        }));
    };
    let highest: i64 = top.get(0);
    let end = |r: &tokio_postgres::Row| End {
        log_id: r.get(0),
        mac: r.get(1),
        at: Some(r.get(2)),
        sealed_at: Some(r.get(3)),
        highest,
    };
    let mut last = end(&top);
    // Forward while a seal names this one (late rows sealed after the highest id).
    while let Some(next) = client
        .query_opt(
            "SELECT log_id, mac, at, sealed_at FROM access_log_seals \
              WHERE class = $1 AND prev_id = $2 ORDER BY sealed_at, log_id LIMIT 1",
            &[&class, &last.log_id],
        )
        .await
        .context("walking to the chain's end")?
    {
        last = end(&next);
    }
    Ok(Some(last))
}

/// What the sealer still looks at after a chain's end: every row above the highest id sealed
/// (none of them is), and below it the rows written less than [`LATE_WINDOW`] before the end
/// was sealed that have no seal (late ones). A row counts as sealed when a seal of its id and
/// time exists (one index probe): a row whose time was changed after its seal is sealed again,
/// and verify names it `sealed_twice`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reach {
    pub above: i64,
    pub since: OffsetDateTime,
}

impl Reach {
    pub fn after(end: Option<&End>, now: OffsetDateTime) -> Self {
        match end {
            Some(e) => Self {
                above: e.highest,
                since: e.sealed_at.unwrap_or(now) - LATE_WINDOW,
            },
            None => Self {
                above: i64::MIN,
                since: now - LATE_WINDOW,
            },
        }
    }

    /// Whether a row without a seal will still be sealed (`verify` counts it as pending).
    pub fn holds(&self, row_id: i64, row_at: OffsetDateTime) -> bool {
        row_id > self.above || row_at > self.since
    }
}

/// New rows: `$1` class, `$2` [`Reach::above`].
const NEW: &str = "l.class = $1 AND l.id > $2";
/// Late rows: `$1` class, `$2` [`Reach::above`], `$3` [`Reach::since`].
const LATE: &str = "l.class = $1 AND l.id < $2 AND l.at > $3 \
     AND NOT EXISTS (SELECT 1 FROM access_log_seals s \
                      WHERE s.class = $1 AND s.log_id = l.id AND s.at = l.at)";

/// What one run of the sealer did and saw.
#[derive(Debug, Default, Clone)]
pub struct Run {
    /// Whether this replica held the lock (and sealed).
    pub sealed_here: bool,
    /// Finished days' read counters turned into `api_read` rows.
    pub reads_moved: u64,
    /// Rows sealed, by class.
    pub sealed: Vec<(Class, u64)>,
    /// Unsealed rows in reach before sealing, and the oldest one's age in seconds.
    pub backlog: u64,
    pub oldest_unsealed_seconds: f64,
    /// Each chain's end after the run.
    pub ends: Vec<(Class, Option<End>)>,
}

/// One run: under the lock, moves finished days' read counters into the log and seals every
/// row in reach; with or without it, measures the backlog. One transaction.
pub async fn run(client: &mut tokio_postgres::Client, key: &ChainKey) -> anyhow::Result<Run> {
    let tx = client
        .transaction()
        .await
        .context("starting the sealer's transaction")?;
    tx.batch_execute(&kollus_common::db::transaction_timeouts(
        Duration::from_secs(60),
        Duration::from_secs(60),
    ))
    .await
    .context("bounding the sealer's transaction")?;
    let locked: bool = tx
        .query_one("SELECT pg_try_advisory_xact_lock($1)", &[&SEAL_LOCK])
        .await
        .context("taking the sealer's lock")?
        .get(0);
    let mut out = Run {
        sealed_here: locked,
        ..Run::default()
    };
    let now: OffsetDateTime = tx.query_one("SELECT now()", &[]).await?.get(0);
    // Before the reads move in (their rows carry the day's first read's time: old at birth).
    for &class in Class::ALL {
        let end = chain_end(&tx, class).await?;
        let reach = Reach::after(end.as_ref(), now);
        for (condition, params) in [
            (
                NEW,
                &[&class.as_str() as &(dyn ToSql + Sync), &reach.above][..],
            ),
            (
                LATE,
                &[
                    &class.as_str() as &(dyn ToSql + Sync),
                    &reach.above,
                    &reach.since,
                ][..],
            ),
        ] {
            let r = tx
                .query_one(
                    &format!(
                        "SELECT count(*), \
                                coalesce(extract(epoch FROM now() - min(l.at))::float8, 0) \
                           FROM access_log l WHERE {condition}"
                    ),
                    params,
                )
                .await
                .context("measuring the unsealed backlog")?;
            out.backlog += r.get::<_, i64>(0).max(0) as u64;
            out.oldest_unsealed_seconds = out.oldest_unsealed_seconds.max(r.get(1));
        }
    }
    if locked {
        out.reads_moved = move_reads(&tx).await?;
    }
    for &class in Class::ALL {
        let mut end = chain_end(&tx, class).await?;
        let mut sealed = 0;
        if locked {
            let reach = Reach::after(end.as_ref(), now);
            // Late rows first (ids below the new ones), then the new, each in id order.
            for _ in 0..MAX_BATCHES {
                let rows = tx
                    .query(
                        &format!(
                            "SELECT {ROW_COLUMNS} FROM access_log l WHERE {LATE} \
                             ORDER BY l.id LIMIT $4"
                        ),
                        &[&class.as_str(), &reach.above, &reach.since, &BATCH],
                    )
                    .await
                    .context("reading late rows to seal")?;
                let n = seal_rows(&tx, key, class, &mut end, now, &rows).await?;
                sealed += n;
                if n < BATCH as u64 {
                    break;
                }
            }
            let mut above = reach.above;
            for _ in 0..MAX_BATCHES {
                let rows = tx
                    .query(
                        &format!(
                            "SELECT {ROW_COLUMNS} FROM access_log l WHERE {NEW} \
                             ORDER BY l.id LIMIT $3"
                        ),
                        &[&class.as_str(), &above, &BATCH],
                    )
                    .await
                    .context("reading new rows to seal")?;
                let n = seal_rows(&tx, key, class, &mut end, now, &rows).await?;
                sealed += n;
                if let Some(e) = &end {
                    above = above.max(e.log_id);
                }
                if n < BATCH as u64 {
                    break;
                }
            }
        }
        out.sealed.push((class, sealed));
        out.ends.push((class, end));
    }
    tx.commit().await.context("committing the seals")?;
    Ok(out)
}

/// Turns every finished day's (UTC) read counters into `api_read` rows, through the migration
/// role's function (V24): the service role may not delete a counter itself.
async fn move_reads(tx: &impl GenericClient) -> anyhow::Result<u64> {
    let moved: i64 = tx
        .query_one("SELECT access_log_close_reads()", &[])
        .await
        .context("moving finished days' API reads into the access log")?
        .get(0);
    Ok(moved.max(0) as u64)
}

/// Seals `rows` (read with [`ROW_COLUMNS`]) after `end`, in their order; `end` becomes the
/// last one sealed.
async fn seal_rows(
    tx: &impl GenericClient,
    key: &ChainKey,
    class: Class,
    end: &mut Option<End>,
    now: OffsetDateTime,
    rows: &[tokio_postgres::Row],
) -> anyhow::Result<u64> {
    let (mut ids, mut prevs, mut ats, mut macs) = (vec![], vec![], vec![], vec![]);
    for r in rows {
        let row = LogRow::from_row(r).context("reading a row to seal")?;
        let prev_id = end.as_ref().map(|e| e.log_id);
        let prev_mac = end.as_ref().map_or(&GENESIS[..], |e| &e.mac[..]);
        let mac = key.seal(prev_mac, &row, prev_id).to_vec();
        ids.push(row.id);
        prevs.push(prev_id);
        ats.push(row.at);
        macs.push(mac.clone());
        let highest = end.as_ref().map_or(row.id, |e| e.highest.max(row.id));
        *end = Some(End {
            log_id: row.id,
            mac,
            at: Some(row.at),
            sealed_at: Some(now),
            highest,
        });
    }
    if ids.is_empty() {
        return Ok(0);
    }
    tx.execute(
        "INSERT INTO access_log_seals (class, log_id, prev_id, at, mac, sealed_at) \
         SELECT $1, * , $6 FROM unnest($2::bigint[], $3::bigint[], $4::timestamptz[], $5::bytea[])",
        &[&class.as_str(), &ids, &prevs, &ats, &macs, &now],
    )
    .await
    .context("writing seals")?;
    Ok(ids.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row() -> LogRow {
        LogRow {
            id: 7,
            class: "access".into(),
            at_micros: 1_765_000_000_123_456,
            action: "view_user".into(),
            key_name: "agent".into(),
            session_hash: Some(vec![1, 2]),
            client_addr: Some("203.0.113.9".into()),
            subject_tag: Some("t".into()),
            subject_generation: Some(1),
            subject_sealed: Some(vec![0xff]),
            target: None,
            reason: Some("a \"quoted\" reason".into()),
            count: 1,
            at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn the_encoding_is_every_column_in_order_then_the_previous_id() {
        assert_eq!(
            String::from_utf8(row().canonical(Some(6))).unwrap(),
            r#"[7,"access",1765000000123456,"view_user","agent","0102","203.0.113.9","t",1,"ff",null,"a \"quoted\" reason",1,6]"#
        );
    }

    #[test]
    fn every_column_and_the_link_change_the_mac() {
        let key = ChainKey::new(&[9; 32]);
        let mac = key.seal(&GENESIS, &row(), Some(6));
        assert!(key.verifies(&GENESIS, &row(), Some(6), &mac));
        assert!(!key.verifies(&GENESIS, &row(), Some(5), &mac));
        assert!(!key.verifies(&[1; 32], &row(), Some(6), &mac));
        let changes: Vec<fn(&mut LogRow)> = vec![
            |r| r.id += 1,
            |r| r.class = "rights".into(),
            |r| r.at_micros += 1,
            |r| r.action = "search".into(),
            |r| r.key_name = "agent2".into(),
            |r| r.session_hash = None,
            |r| r.client_addr = Some("203.0.113.10".into()),
            |r| r.subject_tag = None,
            |r| r.subject_generation = Some(2),
            |r| r.subject_sealed = Some(vec![0xfe]),
            |r| r.target = Some(String::new()),
            |r| r.reason = None,
            |r| r.count = 2,
        ];
        for change in changes {
            let mut r = row();
            change(&mut r);
            assert!(!key.verifies(&GENESIS, &r, Some(6), &mac), "{r:?}");
        }
        assert!(!ChainKey::new(&[8; 32]).verifies(&GENESIS, &row(), Some(6), &mac));
    }
}
