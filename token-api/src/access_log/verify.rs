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
//! - no seal without its row (`deleted`), no row sealed twice (`sealed_twice`), no two seals
//!   after the same row (`forked`);
//! - a row without a seal that the sealer will no longer reach ([`seal::in_reach`]) is
//!   `unsealed`; one it will reach is counted as pending, not a problem;
//! - each head object's own mac (`head_forged`), and its row still sealed with its mac
//!   (`head_mismatch` if another), or accounted for by retention (an anchor, or a month dropped);
//!   else `head_missing_row`: the chain's tail was cut.

use std::collections::{BTreeMap, HashMap};

use anyhow::Context as _;
use kollus_archive::store::Archive;
use kollus_common::progress::Progress;
use serde::Serialize;
use time::OffsetDateTime;
use tokio_postgres::GenericClient;

use crate::access_log::heads::{self, Head};
use crate::access_log::record::Class;
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

/// Verifies every chain and, with `archive`, every head. `progress`: for a terminal.
pub async fn verify(
    client: &impl GenericClient,
    key: &ChainKey,
    archive: Option<&Archive>,
    mut progress: Option<&mut Progress>,
) -> anyhow::Result<Report> {
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
    for &class in Class::ALL {
        let (chain, found) = walk(client, key, class, now, progress.as_deref_mut()).await?;
        report.rows += chain.rows;
        report.chains.insert(class.as_str().to_owned(), chain);
        if let Some(b) = found {
            first(&mut report.first_break, b);
        }
        for b in whole_chain_checks(client, class).await? {
            first(&mut report.first_break, b);
        }
    }
    if let Some(archive) = archive {
        let (checked, found) = check_heads(client, key, archive).await?;
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
        let Some(last) = rows.last() else { break };
        after = last.get(0);
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
        for (i, (row, seal)) in sealed_rows.iter().enumerate() {
            chain.rows += 1;
            let sealed = seal.clone();
            let Some((prev_id, mac)) = sealed else {
                if seal::in_reach(row.id, row.at, end.as_ref(), now) {
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
        older = std::mem::replace(&mut recent, page);
        if (rows.len() as i64) < PAGE {
            break;
        }
    }
    Ok((chain, None))
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

/// The checks over all of a chain's seals at once: a seal without its row, a row sealed twice,
/// two seals after one row.
async fn whole_chain_checks(
    client: &impl GenericClient,
    class: Class,
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
            "SELECT s.log_id FROM access_log_seals s WHERE s.class = $1 \
               AND NOT EXISTS (SELECT 1 FROM access_log l WHERE l.class = $1 AND l.id = s.log_id) \
             ORDER BY s.log_id LIMIT 1",
            &[&name],
        )
        .await
        .context("looking for seals without their row")?
    {
        found.push(broken(
            r.get(0),
            BreakKind::Deleted,
            "a sealed row is gone (its seal is there)".into(),
        ));
    }
    if let Some(r) = client
        .query_opt(
            "SELECT log_id FROM access_log_seals WHERE class = $1 \
             GROUP BY log_id HAVING count(*) > 1 ORDER BY log_id LIMIT 1",
            &[&name],
        )
        .await
        .context("looking for rows sealed twice")?
    {
        found.push(broken(
            r.get(0),
            BreakKind::SealedTwice,
            "the row has more than one seal".into(),
        ));
    }
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
    Ok(found)
}

/// The month partitions' starts still holding `class`'s seals, oldest first.
pub async fn oldest_kept_month(
    client: &impl GenericClient,
    class: Class,
) -> anyhow::Result<Option<OffsetDateTime>> {
    let months = crate::access_log::retention::month_partitions(
        client,
        &format!("access_log_seals_{}", class.as_str()),
    )
    .await?;
    Ok(months.first().map(|m| m.start))
}

/// Checks every head object: its mac, and each chain end it names against the database.
async fn check_heads(
    client: &impl GenericClient,
    key: &ChainKey,
    archive: &Archive,
) -> anyhow::Result<(u64, Option<Break>)> {
    let mut checked = 0;
    let mut kept_from: HashMap<&str, Option<OffsetDateTime>> = HashMap::new();
    for &class in Class::ALL {
        kept_from.insert(class.as_str(), oldest_kept_month(client, class).await?);
    }
    for path in heads::list(archive).await? {
        let bytes = archive.get(&path).await?;
        let head = match Head::open(key, &bytes) {
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
                    // Retention dropped its month (its partition is gone)?
                    let dropped = match (end.at, kept_from.get(class.as_str()).copied().flatten()) {
                        (Some(at), Some(kept)) => at < kept,
                        _ => false,
                    };
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
    Ok((checked, None))
}
