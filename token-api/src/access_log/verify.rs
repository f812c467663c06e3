//! Verifying the access log: every chain walked from its start (a genesis or an anchor) in id
//! order, in pages (never the whole log in memory), then every daily head in the archive. It
//! names the first problem (by class, then row id) and counts the rows checked. The same function
//! answers `token-api access-log verify` and `GET /v1/access-log/verify`.
//!
//! What it checks, per class:
//! - every row has a seal, and the seal's mac recomputes from the row and its previous mac:
//!   else `altered` (a column, or the seal, changed), or `reordered` when the row's content
//!   is sealed at another row's place nearby (rows' contents swapped);
//! - each seal's previous row is a sealed row or an anchor: else `deleted` (naming the previous
//!   id: a row removed with its seal);
//! - no seal without its row (`deleted`), no row sealed twice (`sealed_twice`: also what a
//!   row whose time was changed becomes, the sealer taking it for a new one), no two seals
//!   after the same row (`forked`);
//! - a row without a seal that the sealer will no longer reach ([`seal::Reach`]) is
//!   `unsealed`; one it will reach is counted as pending, not a problem;
//! - each anchor and drop record of retention carries its HMAC, names a partition that is gone,
//!   and a month that was past retention when it was dropped: else `anchor_forged` (a row
//!   deleted and "anchored" by whoever can write the database, or a month dropped early);
//! - a chain has one end: a seal that no seal names as its previous one, other than the
//!   chain's end and the kept seals whose successor retention dropped, is `second_end` (rows
//!   removed after it, the chain relinked past them by a forged anchor);
//! - each head object's own mac (`head_forged`), and its row still sealed with its mac
//!   (`head_mismatch` if another), or accounted for by retention (a valid drop record of the
//!   row's month); else `head_missing_row`: the chain's tail was cut. With `ARCHIVE_DIR`, a log
//!   sealed for more than a day without any head (or none for two days) is `heads_absent`.
//!
//! It reads from one snapshot (`Chain::verify` opens a REPEATABLE READ READ ONLY transaction):
//! a row written and sealed while it runs is not half seen (a seal without its row).

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use kollus_archive::store::Archive;
use kollus_common::progress::Progress;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::GenericClient;

use crate::access_log::heads::{self, Head};
use crate::access_log::record::Class;
use crate::access_log::retention;
use crate::access_log::seal::{self, ChainKey, LogRow, GENESIS, ROW_COLUMNS, ROW_WIDTH};

/// Rows read per page.
const PAGE: i64 = 5_000;
/// How far around a row whose mac fails its content is looked for (rows swapped).
const REORDER_REACH: usize = 16;

/// What is wrong where a chain breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema, strum::IntoStaticStr)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum BreakKind {
    Altered,
    Reordered,
    Deleted,
    Unsealed,
    SealedTwice,
    Forked,
    HeadForged,
    HeadMismatch,
    HeadMissingRow,
    AnchorForged,
    SecondEnd,
    HeadsAbsent,
}

/// The first problem found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Break {
    /// The chain (`access`, `rights`); for a head that does not open, `head`.
    pub class: String,
    /// The row named (0 for a head that does not open).
    pub log_id: i64,
    pub problem: BreakKind,
    /// What was found, in words.
    pub detail: String,
}

/// One chain's walk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ChainReport {
    /// Rows checked.
    pub rows: u64,
    /// Rows not sealed yet that the sealer will still seal.
    pub pending: u64,
    /// The anchors the chain starts from (retention dropped what was before).
    pub anchors: u64,
    /// The chain's last sealed row.
    pub end: Option<i64>,
}

/// `GET /v1/access-log/verify`'s answer, and the command's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub ok: bool,
    /// Rows checked, every chain.
    pub rows: u64,
    pub chains: BTreeMap<String, ChainReport>,
    /// Daily head objects checked (0 without `ARCHIVE_DIR`: `heads` says so).
    pub heads_checked: u64,
    /// `checked`, or `not_configured` (no `ARCHIVE_DIR`: a cut tail goes unseen).
    pub heads: &'static str,
    pub first_break: Option<Break>,
}

impl Report {
    /// One line for a terminal or a log.
    pub fn summary(&self) -> String {
        match &self.first_break {
            None => format!(
                "access log verified: {} rows, {} heads ({})",
                self.rows, self.heads_checked, self.heads
            ),
            Some(b) => format!(
                "access log BROKEN at {} row {}: {} ({}); {} rows checked",
                b.class,
                b.log_id,
                <&str>::from(b.problem),
                b.detail,
                self.rows
            ),
        }
    }
}

/// Keeps the first break by (class, log id).
fn first(found: &mut Option<Break>, b: Break) {
    let key = |b: &Break| (b.class.clone(), b.log_id);
    if found.as_ref().is_none_or(|f| key(&b) < key(f)) {
        *found = Some(b);
    }
}

/// Verifies every chain and, with `archive`, every head. `access_days`: the access class's
/// retention (ACCESS_LOG_RETENTION_DAYS), which a drop must have respected. `progress`: for a
/// terminal. Run it inside one REPEATABLE READ transaction (module doc).
pub async fn verify(
    client: &impl GenericClient,
    key: &ChainKey,
    archive: Option<&Archive>,
    access_days: u32,
    mut progress: Option<&mut Progress>,
) -> anyhow::Result<Report> {
    // The heads are read before the first statement takes the transaction's snapshot: a head
    // is written after its seals commit, so every head read here names seals the snapshot
    // sees (one written later is the next verification's).
    let heads = match archive {
        Some(archive) => Some(read_heads(archive).await?),
        None => None,
    };
    if let Some(p) = progress.as_deref_mut() {
        let total: i64 = client
            .query_one("SELECT count(*) FROM access_log", &[])
            .await
            .context("counting the access log")?
            .get(0);
        p.set_total(total.max(0) as u64);
    }
    let now: OffsetDateTime = client.query_one("SELECT now()", &[]).await?.get(0);
    let mut report = Report {
        ok: true,
        rows: 0,
        chains: BTreeMap::new(),
        heads_checked: 0,
        heads: if archive.is_some() {
            "checked"
        } else {
            "not_configured"
        },
        first_break: None,
    };
    let mut drops: HashMap<&'static str, Vec<Drop>> = HashMap::new();
    for &class in Class::ALL {
        let (valid, found) = retention_records(client, key, class, access_days).await?;
        if let Some(b) = found {
            first(&mut report.first_break, b);
        }
        let (chain, found) = walk(client, key, class, now, progress.as_deref_mut()).await?;
        report.rows += chain.rows;
        report.chains.insert(class.as_str().to_owned(), chain);
        // A second end is what a row removed with its seal also leaves behind: the walk's
        // break (naming the row removed) says more, so it is named only when the walk found none.
        let walked_clean = found.is_none();
        if let Some(b) = found {
            first(&mut report.first_break, b);
        }
        for b in whole_chain_checks(client, class, &valid).await? {
            if b.problem != BreakKind::SecondEnd || walked_clean {
                first(&mut report.first_break, b);
            }
        }
        drops.insert(class.as_str(), valid);
    }
    if let Some(heads) = &heads {
        let (checked, found) = check_heads(client, key, heads, &drops, now).await?;
        report.heads_checked = checked;
        if let Some(b) = found {
            // A forged or mismatched head is reported even after a row's break: it is about the
            // archive, which a database break does not explain.
            if report.first_break.is_none() {
                report.first_break = Some(b);
            }
        }
    }
    if let Some(p) = progress {
        p.finish();
    }
    report.ok = report.first_break.is_none();
    Ok(report)
}

/// A row's seal as the walk reads it: its previous row's id and its mac.
type Seal = (Option<i64>, Vec<u8>);

/// Walks `class`'s rows in id order, page by page; stops at its first break.
async fn walk(
    client: &impl GenericClient,
    key: &ChainKey,
    class: Class,
    now: OffsetDateTime,
    mut progress: Option<&mut Progress>,
) -> anyhow::Result<(ChainReport, Option<Break>)> {
    let name = class.as_str();
    let end = seal::chain_end(client, class).await?;
    let reach = seal::Reach::after(end.as_ref(), now);
    let anchors: i64 = client
        .query_one(
            "SELECT count(*) FROM access_log_anchors WHERE class = $1",
            &[&name],
        )
        .await?
        .get(0);
    let mut chain = ChainReport {
        end: end.as_ref().map(|e| e.log_id),
        anchors: anchors as u64,
        ..ChainReport::default()
    };
    let broken = |log_id: i64, problem: BreakKind, detail: String| Break {
        class: name.to_owned(),
        log_id,
        problem,
        detail,
    };
    // The macs of the last two pages' rows: a row's previous one is almost always among them.
    let mut recent: HashMap<i64, Vec<u8>> = HashMap::new();
    let mut older: HashMap<i64, Vec<u8>> = HashMap::new();
    let mut after = i64::MIN;
    loop {
        let rows = client
            .query(
                &format!(
                    "SELECT {ROW_COLUMNS}, s.prev_id, s.mac FROM access_log l \
                       LEFT JOIN access_log_seals s \
                         ON s.class = l.class AND s.log_id = l.id AND s.at = l.at \
                      WHERE l.class = $1 AND l.id > $2 ORDER BY l.id LIMIT $3"
                ),
                &[&name, &after, &PAGE],
            )
            .await
            .context("reading a page of the access log")?;
        let from = after;
        let Some(last) = rows.last() else { break };
        after = last.get(0);
        let full = rows.len() as i64 == PAGE;
        // The page's rows with their seals (a row joined to two seals once: the whole-chain
        // checks name it).
        let mut sealed_rows: Vec<(LogRow, Option<Seal>)> = Vec::with_capacity(rows.len());
        for r in &rows {
            let row = LogRow::from_row(r)?;
            if sealed_rows.last().is_some_and(|(w, _)| w.id == row.id) {
                continue;
            }
            let seal = match r.get::<_, Option<Vec<u8>>>(ROW_WIDTH + 1) {
                Some(mac) => Some((r.get(ROW_WIDTH), mac)),
                // Sealed at another time than the row's (its `at` changed)?
                None => client
                    .query_opt(
                        "SELECT prev_id, mac FROM access_log_seals \
                          WHERE class = $1 AND log_id = $2 LIMIT 1",
                        &[&name, &row.id],
                    )
                    .await?
                    .map(|s| (s.get(0), s.get(1))),
            };
            sealed_rows.push((row, seal));
        }
        let page: HashMap<i64, Vec<u8>> = sealed_rows
            .iter()
            .filter_map(|(row, s)| s.as_ref().map(|(_, mac)| (row.id, mac.clone())))
            .collect();
        let known = |id: i64| {
            page.get(&id)
                .or_else(|| recent.get(&id))
                .or_else(|| older.get(&id))
                .cloned()
        };
        // The seals of this page's id range (to the end, on the last page): one without its
        // row is a row deleted; one row's two seals, a row sealed twice.
        let rowless = seal_range_break(
            client,
            name,
            from,
            if full { after } else { i64::MAX },
            &sealed_rows,
        )
        .await?;
        for (i, (row, seal)) in sealed_rows.iter().enumerate() {
            if let Some(b) = rowless.as_ref().filter(|b| b.log_id < row.id) {
                return Ok((chain, Some(b.clone())));
            }
            chain.rows += 1;
            let sealed = seal.clone();
            let Some((prev_id, mac)) = sealed else {
                if reach.holds(row.id, row.at) {
                    chain.pending += 1;
                    continue;
                }
                return Ok((
                    chain,
                    Some(broken(
                        row.id,
                        BreakKind::Unsealed,
                        "a row without a seal, written before rows the sealer sealed after it"
                            .into(),
                    )),
                ));
            };
            let prev_mac = match prev_id {
                None => Some(GENESIS.to_vec()),
                Some(p) => match known(p) {
                    Some(m) => Some(m),
                    None => previous_mac(client, name, p).await?,
                },
            };
            let Some(prev_mac) = prev_mac else {
                let p = prev_id.unwrap_or_default();
                return Ok((
                    chain,
                    Some(broken(
                        p,
                        BreakKind::Deleted,
                        format!(
                            "row {}'s seal names row {p} before it, which has neither a seal \
                             nor an anchor: removed with its seal",
                            row.id
                        ),
                    )),
                ));
            };
            if !key.verifies(&prev_mac, row, prev_id, &mac) {
                // Is this content sealed at a nearby row's place (rows swapped)?
                let near = sealed_rows
                    .iter()
                    .skip(i.saturating_sub(REORDER_REACH))
                    .take(2 * REORDER_REACH + 1);
                let mut swapped = None;
                for (other, s) in near {
                    let Some((other_prev, other_mac)) = s else {
                        continue;
                    };
                    if other.id == row.id {
                        continue;
                    }
                    let other_prev_mac = match other_prev {
                        None => Some(GENESIS.to_vec()),
                        Some(p) => known(*p),
                    };
                    let mut moved = row.clone();
                    moved.id = other.id;
                    if other_prev_mac
                        .is_some_and(|pm| key.verifies(&pm, &moved, *other_prev, other_mac))
                    {
                        swapped = Some(other.id);
                        break;
                    }
                }
                let b = match swapped {
                    Some(other) => broken(
                        row.id,
                        BreakKind::Reordered,
                        format!("row {} holds what was sealed as row {other}", row.id),
                    ),
                    None => broken(
                        row.id,
                        BreakKind::Altered,
                        "the row (or its seal) is not as it was sealed".into(),
                    ),
                };
                return Ok((chain, Some(b)));
            }
            if let Some(p) = progress.as_deref_mut() {
                p.add(1);
            }
        }
        if let Some(b) = rowless {
            return Ok((chain, Some(b)));
        }
        older = std::mem::replace(&mut recent, page);
        if !full {
            break;
        }
    }
    if after == i64::MIN {
        // No row at all: any seal is one without its row.
        if let Some(b) = seal_range_break(client, name, i64::MIN, i64::MAX, &[]).await? {
            return Ok((chain, Some(b)));
        }
    }
    Ok((chain, None))
}

/// Reads the seals of ids in (`from`, `to`] (an index range, in id order) and names the first
/// that has no row among `rows` (`deleted`) or follows a seal of the same row (`sealed_twice`).
async fn seal_range_break(
    client: &impl GenericClient,
    class: &str,
    from: i64,
    to: i64,
    rows: &[(LogRow, Option<Seal>)],
) -> anyhow::Result<Option<Break>> {
    let ids: std::collections::HashSet<i64> = rows.iter().map(|(r, _)| r.id).collect();
    let seals = client
        .query(
            "SELECT log_id FROM access_log_seals \
              WHERE class = $1 AND log_id > $2 AND log_id <= $3 ORDER BY log_id",
            &[&class, &from, &to],
        )
        .await
        .context("reading a page of seals")?;
    let mut previous = None;
    for s in &seals {
        let id: i64 = s.get(0);
        let broken = |problem, detail: &str| Break {
            class: class.to_owned(),
            log_id: id,
            problem,
            detail: detail.to_owned(),
        };
        if !ids.contains(&id) {
            return Ok(Some(broken(
                BreakKind::Deleted,
                "a sealed row is gone (its seal is there)",
            )));
        }
        if previous == Some(id) {
            return Ok(Some(broken(
                BreakKind::SealedTwice,
                "the row has more than one seal",
            )));
        }
        previous = Some(id);
    }
    Ok(None)
}

/// The mac a seal after row `id` chains from: its seal's, or its anchor's.
async fn previous_mac(
    client: &impl GenericClient,
    class: &str,
    id: i64,
) -> anyhow::Result<Option<Vec<u8>>> {
    let found = client
        .query_opt(
            "SELECT mac FROM access_log_seals WHERE class = $1 AND log_id = $2 \
             UNION ALL SELECT mac FROM access_log_anchors WHERE class = $1 AND log_id = $2 \
             LIMIT 1",
            &[&class, &id],
        )
        .await
        .context("reading a previous seal")?;
    Ok(found.map(|r| r.get(0)))
}

/// The checks over all of a chain's seals at once: two seals after one row, and a second end
/// (a seal no seal follows, besides the chain's end and the orphans of valid `drops`).
async fn whole_chain_checks(
    client: &impl GenericClient,
    class: Class,
    drops: &[Drop],
) -> anyhow::Result<Vec<Break>> {
    let name = class.as_str();
    let mut found = Vec::new();
    let broken = |log_id: i64, problem: BreakKind, detail: String| Break {
        class: name.to_owned(),
        log_id,
        problem,
        detail,
    };
    if let Some(r) = client
        .query_opt(
            "SELECT prev_id, max(log_id) FROM access_log_seals WHERE class = $1 \
             GROUP BY prev_id HAVING count(*) > 1 ORDER BY 2 LIMIT 1",
            &[&name],
        )
        .await
        .context("looking for forks")?
    {
        let prev: Option<i64> = r.get(0);
        found.push(broken(
            r.get(1),
            BreakKind::Forked,
            match prev {
                Some(p) => format!("two seals follow row {p}"),
                None => "two seals start the chain".into(),
            },
        ));
    }
    let orphans: Vec<i64> = drops
        .iter()
        .flat_map(|d| d.orphans.iter().copied())
        .collect();
    let ends: Vec<i64> = client
        .query(
            "SELECT s.log_id FROM access_log_seals s WHERE s.class = $1 \
                AND NOT EXISTS (SELECT 1 FROM access_log_seals n \
                                 WHERE n.class = $1 AND n.prev_id = s.log_id) \
                AND NOT s.log_id = ANY($2) \
              ORDER BY s.log_id LIMIT 2",
            &[&name, &orphans],
        )
        .await
        .context("looking for the chain's ends")?
        .iter()
        .map(|r| r.get(0))
        .collect();
    if let [second, end, ..] = ends[..] {
        found.push(broken(
            second,
            BreakKind::SecondEnd,
            format!(
                "no seal follows row {second}'s, yet the chain goes on to row {end}: the rows \
                 after it were removed with their seals and the chain relinked past them"
            ),
        ));
    }
    Ok(found)
}

/// A month retention dropped, its record verified.
#[derive(Debug, Clone)]
struct Drop {
    start: OffsetDateTime,
    end: OffsetDateTime,
    orphans: Vec<i64>,
}

/// Checks `class`'s drop records and anchors (module doc); returns the valid drops and the
/// first bad record.
async fn retention_records(
    client: &impl GenericClient,
    key: &ChainKey,
    class: Class,
    access_days: u32,
) -> anyhow::Result<(Vec<Drop>, Option<Break>)> {
    let name = class.as_str();
    let configured = retention::retention_days(class, access_days);
    let floor = retention::retention_floor(class, access_days);
    let mut found = None;
    let mut valid = Vec::new();
    let forged = |log_id: i64, detail: String| Break {
        class: name.to_owned(),
        log_id,
        problem: BreakKind::AnchorForged,
        detail,
    };
    let drops = client
        .query(
            "SELECT partition, month_start, month_end, dropped_at, orphans, auth, \
                    to_regclass(partition) IS NOT NULL, retention_days \
               FROM access_log_drops WHERE class = $1 ORDER BY month_start",
            &[&name],
        )
        .await
        .context("reading retention's drop records")?;
    let mut dropped: HashMap<String, (OffsetDateTime, OffsetDateTime, OffsetDateTime)> =
        HashMap::new();
    for r in &drops {
        let partition: String = r.get(0);
        let (start, end, at): (OffsetDateTime, OffsetDateTime, OffsetDateTime) =
            (r.get(1), r.get(2), r.get(3));
        let orphans: Vec<i64> = r.get(4);
        let auth: Vec<u8> = r.get(5);
        // The retention it was dropped under (V28), else (an older record) today's.
        let own: Option<u32> = r
            .get::<_, Option<i32>>(7)
            .map(|d| u32::try_from(d).unwrap_or(0));
        let days = own.unwrap_or(configured);
        let why = if !macs_equal(
            &auth,
            &retention::drop_auth(key, name, &partition, start, end, at, &orphans, own),
        ) {
            Some("its HMAC does not verify under ACCESS_LOG_KEY_FILE".to_owned())
        } else if r.get::<_, bool>(6) {
            Some("its partition is still there".to_owned())
        } else if days < floor {
            Some(format!(
                "it was dropped under a retention of {days} days, short of the {floor} required"
            ))
        } else if end + time::Duration::days(i64::from(days)) > at {
            Some("its month was not past retention when it was dropped".to_owned())
        } else {
            None
        };
        match why {
            Some(why) => {
                let b = forged(0, format!("the drop record of {partition}: {why}"));
                if found.is_none() {
                    found = Some(b);
                }
            }
            None => {
                dropped.insert(partition, (start, end, at));
                valid.push(Drop {
                    start,
                    end,
                    orphans,
                });
            }
        }
    }
    let anchors = client
        .query(
            "SELECT log_id, mac, partition, month_start, month_end, dropped_at, auth \
               FROM access_log_anchors WHERE class = $1 ORDER BY log_id",
            &[&name],
        )
        .await
        .context("reading the chain's anchors")?;
    for r in &anchors {
        let log_id: i64 = r.get(0);
        let mac: Vec<u8> = r.get(1);
        let partition: String = r.get(2);
        let month: Option<(OffsetDateTime, OffsetDateTime)> =
            r.get::<_, Option<OffsetDateTime>>(3).zip(r.get(4));
        let at: Option<OffsetDateTime> = r.get(5);
        let auth: Option<Vec<u8>> = r.get(6);
        let authentic = match (month, at, &auth) {
            (Some((start, end)), Some(at), Some(auth)) => macs_equal(
                auth,
                &retention::anchor_auth(key, name, log_id, &mac, &partition, start, end, at),
            ),
            _ => false,
        };
        let why = if !authentic {
            Some("its HMAC does not verify under ACCESS_LOG_KEY_FILE (or it has none)")
        } else if dropped.get(&partition) != month.zip(at).map(|((s, e), a)| (s, e, a)).as_ref() {
            Some("no valid drop record of its partition and month")
        } else {
            None
        };
        if let Some(why) = why {
            let b = forged(log_id, format!("the anchor in {partition}: {why}"));
            if found
                .as_ref()
                .is_none_or(|f: &Break| f.log_id == 0 || log_id < f.log_id)
            {
                found = Some(b);
            }
        }
    }
    Ok((valid, found))
}

/// Two macs equal, in constant time.
fn macs_equal(a: &[u8], b: &[u8]) -> bool {
    subtle::ConstantTimeEq::ct_eq(a, b).into()
}

/// Checks every head object: its mac, and each chain end it names against the database.
/// Every head object: (its path, its bytes).
async fn read_heads(archive: &Archive) -> anyhow::Result<Vec<(String, bytes::Bytes)>> {
    let mut heads = Vec::new();
    for path in heads::list(archive).await? {
        let bytes = archive.get(&path).await?;
        heads.push((path, bytes));
    }
    Ok(heads)
}

async fn check_heads(
    client: &impl GenericClient,
    key: &ChainKey,
    heads: &[(String, bytes::Bytes)],
    drops: &HashMap<&'static str, Vec<Drop>>,
    now: OffsetDateTime,
) -> anyhow::Result<(u64, Option<Break>)> {
    let mut checked = 0;
    let mut newest: Option<OffsetDateTime> = None;
    for (path, bytes) in heads {
        let head = match Head::open(key, bytes) {
            Ok(h) => h,
            Err(why) => {
                return Ok((
                    checked,
                    Some(Break {
                        class: "head".into(),
                        log_id: 0,
                        problem: BreakKind::HeadForged,
                        detail: format!("{path}: {why}"),
                    }),
                ))
            }
        };
        checked += 1;
        newest = newest.max(Some(head.written_at));
        for (class, end) in &head.chains {
            let mac = hex::decode(&end.mac).unwrap_or_default();
            let found = client
                .query_opt(
                    "SELECT mac FROM access_log_seals WHERE class = $1 AND log_id = $2 \
                     UNION ALL SELECT mac FROM access_log_anchors WHERE class = $1 AND log_id = $2",
                    &[class, &end.log_id],
                )
                .await?;
            let broken = |problem, detail: String| {
                Some(Break {
                    class: class.clone(),
                    log_id: end.log_id,
                    problem,
                    detail: format!("{path}: {detail}"),
                })
            };
            match found {
                Some(r) if r.get::<_, Vec<u8>>(0) == mac => {}
                Some(_) => {
                    return Ok((
                        checked,
                        broken(
                            BreakKind::HeadMismatch,
                            "the row is sealed with another mac than the head's".into(),
                        ),
                    ))
                }
                None => {
                    // Retention dropped its month (a valid drop record covers it)?
                    let dropped = end.at.is_some_and(|at| {
                        drops
                            .get(class.as_str())
                            .is_some_and(|d| d.iter().any(|d| d.start <= at && at < d.end))
                    });
                    if !dropped {
                        return Ok((
                            checked,
                            broken(
                                BreakKind::HeadMissingRow,
                                "the chain's end that day is gone: rows and seals removed from \
                                 the chain's tail"
                                    .into(),
                            ),
                        ));
                    }
                }
            }
        }
    }
    // Heads are written on the first sealer run of each day: none while seals are more than a
    // day old (or none for two days while sealing goes on) means they are not being written.
    let since = newest.unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let late = client
        .query_opt(
            "SELECT sealed_at FROM access_log_seals WHERE sealed_at > $1 AND sealed_at < $2 \
              LIMIT 1",
            &[
                &since,
                &(now - time::Duration::days(if newest.is_some() { 2 } else { 1 })),
            ],
        )
        .await
        .context("looking for seals no head covers")?;
    if late.is_some() {
        return Ok((
            checked,
            Some(Break {
                class: "head".into(),
                log_id: 0,
                problem: BreakKind::HeadsAbsent,
                detail: match newest {
                    None => "ARCHIVE_DIR holds no daily head, yet rows were sealed more than a \
                             day ago: heads are not being written (is ARCHIVE_DIR writable?)"
                        .into(),
                    Some(t) => format!(
                        "no daily head since {t}, yet rows were sealed since: heads are not \
                         being written (is ARCHIVE_DIR writable?)"
                    ),
                },
            }),
        ));
    }
    Ok((checked, None))
}
