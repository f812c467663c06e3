//! Reading the access record back, for the console: one subject's accesses (the user's page) and
//! a month's review (downloads with their reasons, refused sign-ins, counts per key and action
//! beside the three months before). Every read is bounded: a limit and how many more there are,
//! sums by PostgreSQL. Nothing here opens a sealed user id: a subject is shown by its tag, so
//! reading the record is no access to anyone's data.

use std::net::IpAddr;

use anyhow::Context as _;
use kollus_common::subject::SubjectTag;
use time::OffsetDateTime;
use tokio_postgres::{GenericClient, Row};

use super::record::Action;

/// One access as the console shows it: a row of the log, or a counter of the product app's reads
/// not yet closed into an `api_read` row (`open`: its day is not over).
#[derive(Debug, Clone)]
pub struct Access {
    /// The row's time; a counter's last read.
    pub at: OffsetDateTime,
    pub action: String,
    pub key_name: String,
    pub client_addr: Option<IpAddr>,
    /// The subject's tag (the review's rows; a subject's own rows leave it out: it is theirs).
    pub subject_tag: Option<String>,
    pub target: Option<String>,
    pub reason: Option<String>,
    pub count: i64,
    /// A counter of today's reads, not yet an `api_read` row.
    pub open: bool,
}

impl Access {
    fn from_row(r: &Row) -> Result<Self, tokio_postgres::Error> {
        Ok(Self {
            at: r.try_get("at")?,
            action: r.try_get("action")?,
            key_name: r.try_get("key_name")?,
            client_addr: r.try_get("client_addr")?,
            subject_tag: r.try_get("subject_tag")?,
            target: r.try_get("target")?,
            reason: r.try_get("reason")?,
            count: r.try_get("count")?,
            open: r.try_get("open")?,
        })
    }
}

/// A bounded list and how many it leaves out.
#[derive(Debug, Clone)]
pub struct Bounded<T> {
    pub rows: Vec<T>,
    /// Rows that matched but are not in `rows`.
    pub more: i64,
}

impl<T> Default for Bounded<T> {
    fn default() -> Self {
        Self {
            rows: Vec::new(),
            more: 0,
        }
    }
}

fn limit_sql(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// Every access to the subject `tag`, console and API, newest first: the latest `limit` of the
/// log's rows and of the open read counters together, and how many more there are.
pub async fn of_subject(
    client: &impl GenericClient,
    tag: &SubjectTag,
    limit: usize,
) -> anyhow::Result<Bounded<Access>> {
    let rows = client
        .query(
            "(SELECT at, action, key_name, client_addr, NULL::text AS subject_tag, target, \
                     reason, count, false AS open, count(*) OVER () AS total \
                FROM access_log WHERE subject_tag = $1 ORDER BY at DESC, id DESC LIMIT $2) \
             UNION ALL \
             (SELECT last_at, $3::text, key_name, client_addr, NULL, NULL, NULL, count, true, \
                     count(*) OVER () \
                FROM access_log_reads WHERE subject_tag = $1 ORDER BY last_at DESC LIMIT $2)",
            &[&tag.as_str(), &limit_sql(limit), &Action::ApiRead.as_str()],
        )
        .await
        .context("reading a subject's accesses")?;
    let mut matched = 0i64;
    let mut totals = std::collections::HashSet::new();
    let mut accesses = Vec::with_capacity(rows.len());
    for r in &rows {
        let a = Access::from_row(r)?;
        // Each branch's total, once.
        if totals.insert(a.open) {
            matched += r.try_get::<_, i64>("total")?;
        }
        accesses.push(a);
    }
    accesses.sort_by_key(|a| std::cmp::Reverse(a.at));
    accesses.truncate(limit);
    let shown = i64::try_from(accesses.len()).unwrap_or(i64::MAX);
    Ok(Bounded {
        rows: accesses,
        more: (matched - shown).max(0),
    })
}

/// A month under review, as instants: `[start, end)`, and the start of the three months before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub prior_start: OffsetDateTime,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

/// The downloads (console and API exports) of the month, newest first, with their reasons.
pub const DOWNLOADS: &[Action] = &[Action::ExportCsv, Action::ExportJsonl, Action::ApiExport];

/// The month's rows of `actions`, newest first: at most `limit`, and how many more.
pub async fn month_rows(
    client: &impl GenericClient,
    w: Window,
    actions: &[Action],
    limit: usize,
) -> anyhow::Result<Bounded<Access>> {
    let actions: Vec<&str> = actions.iter().map(|a| a.as_str()).collect();
    let rows = client
        .query(
            "SELECT at, action, key_name, client_addr, subject_tag, target, reason, count, \
                    false AS open, count(*) OVER () AS total \
               FROM access_log WHERE at >= $1 AND at < $2 AND action = ANY($3) \
              ORDER BY at DESC, id DESC LIMIT $4",
            &[&w.start, &w.end, &actions, &limit_sql(limit)],
        )
        .await
        .context("reading a month of the access log")?;
    let total: i64 = match rows.first() {
        Some(r) => r.try_get("total")?,
        None => 0,
    };
    let rows = rows
        .iter()
        .map(Access::from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let shown = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    Ok(Bounded {
        rows,
        more: (total - shown).max(0),
    })
}

/// One key's accesses of one action: this month's, and the three months before together (an
/// `api_read` row counts its `count`; every other row one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    pub key_name: String,
    pub action: String,
    pub this_month: i64,
    /// The three months before, summed (their mean is a third of it).
    pub before: i64,
}

/// Per key and action with accesses this month: this month's count and the three months
/// before's, summed by PostgreSQL (today's open read counters included as `api_read`); those
/// above three times the prior mean (this month > the three months' sum) first, at most
/// `limit`, and how many more.
pub async fn tallies(
    client: &impl GenericClient,
    w: Window,
    limit: usize,
) -> anyhow::Result<Bounded<Tally>> {
    let rows = client
        .query(
            "WITH t AS ( \
                 SELECT key_name, action, count, at FROM access_log \
                  WHERE at >= $1 AND at < $3 \
                 UNION ALL \
                 SELECT key_name, $5::text, count, first_at FROM access_log_reads \
                  WHERE first_at >= $1 AND first_at < $3), \
             g AS ( \
                 SELECT key_name, action, \
                        coalesce(sum(count) FILTER (WHERE at >= $2), 0)::bigint AS this_month, \
                        coalesce(sum(count) FILTER (WHERE at < $2), 0)::bigint AS before \
                   FROM t GROUP BY key_name, action) \
             SELECT key_name, action, this_month, before, count(*) OVER () AS total FROM g \
              WHERE this_month > 0 \
              ORDER BY this_month > before DESC, key_name, action LIMIT $4",
            &[
                &w.prior_start,
                &w.start,
                &w.end,
                &limit_sql(limit),
                &Action::ApiRead.as_str(),
            ],
        )
        .await
        .context("counting a month of the access log")?;
    let total: i64 = match rows.first() {
        Some(r) => r.try_get("total")?,
        None => 0,
    };
    let rows = rows
        .iter()
        .map(|r| {
            Ok(Tally {
                key_name: r.try_get("key_name")?,
                action: r.try_get("action")?,
                this_month: r.try_get("this_month")?,
                before: r.try_get("before")?,
            })
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()?;
    let shown = i64::try_from(rows.len()).unwrap_or(i64::MAX);
    Ok(Bounded {
        rows,
        more: (total - shown).max(0),
    })
}
