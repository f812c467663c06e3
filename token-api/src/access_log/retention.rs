//! Keeping the access log as long as the law says, and no longer: `token-api access-log
//! maintain` (daily, under the migration role, DATABASE_MIGRATION_URL) creates the coming
//! months' partitions and drops, one month per transaction (each lock waited for 2 s at most,
//! so the log's writers never queue long behind it), each month partition of a class whose
//! month ended `retention` days ago or more (`ACCESS_LOG_RETENTION_DAYS` for accesses,
//! [`RIGHTS_RETENTION_DAYS`] for access-right changes), the log's and the seals' together.
//! Before a drop, every dropped row that a seal outside the month's partition names as its
//! previous one is recorded in `access_log_anchors` with its mac, so the kept chain still
//! verifies from there, and the drop itself in `access_log_drops`; both carry an HMAC under
//! ACCESS_LOG_KEY_FILE (the database alone cannot forge one: `verify` checks them). A month
//! holding a row without a seal is never dropped (the run fails naming it).

use anyhow::Context as _;
use time::{Date, Month, OffsetDateTime, Time};
use tokio_postgres::GenericClient;

use crate::access_log::record::{Class, RIGHTS_RETENTION_DAYS};
use crate::access_log::seal::{self, ChainKey};

/// Months of partitions kept ready ahead, from this one.
pub const MONTHS_AHEAD: i32 = 4;

/// One month partition of a class (`<parent>_yYYYYmMM`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthPartition {
    pub name: String,
    pub start: OffsetDateTime,
    pub end: OffsetDateTime,
}

/// The month partitions under `parent` (e.g. `access_log_access`), oldest first; the DEFAULT
/// partition and anything not named by `access_log_ensure_partitions` are left out.
pub async fn month_partitions(
    client: &impl GenericClient,
    parent: &str,
) -> anyhow::Result<Vec<MonthPartition>> {
    let rows = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i \
               JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent \
              WHERE p.relname = $1",
            &[&parent],
        )
        .await
        .with_context(|| format!("listing {parent}'s partitions"))?;
    let mut months: Vec<MonthPartition> = rows
        .iter()
        .filter_map(|r| {
            let name: String = r.get(0);
            let start = month_of(name.strip_prefix(parent)?.strip_prefix('_')?)?;
            Some(MonthPartition {
                end: next_month(start),
                start,
                name,
            })
        })
        .collect();
    months.sort_by_key(|m| m.start);
    Ok(months)
}

/// `yYYYYmMM`'s first instant (UTC).
fn month_of(suffix: &str) -> Option<OffsetDateTime> {
    let (y, m) = suffix.strip_prefix('y')?.split_once('m')?;
    let month = Month::try_from(m.parse::<u8>().ok()?).ok()?;
    let date = Date::from_calendar_date(y.parse().ok()?, month, 1).ok()?;
    Some(date.with_time(Time::MIDNIGHT).assume_utc())
}

fn next_month(start: OffsetDateTime) -> OffsetDateTime {
    let d = start.date();
    let (y, m) = match d.month() {
        Month::December => (d.year() + 1, Month::January),
        m => (d.year(), m.next()),
    };
    Date::from_calendar_date(y, m, 1)
        .expect("the first of a month exists")
        .with_time(Time::MIDNIGHT)
        .assume_utc()
}

/// A month dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub class: Class,
    pub partition: String,
    pub rows: i64,
    pub anchors: u64,
}

/// What a maintenance run did.
#[derive(Debug, Clone, Default)]
pub struct Maintained {
    pub partitions_created: i32,
    pub dropped: Vec<Dropped>,
    /// Rows in the DEFAULT partitions (past every month partition: create them, then move).
    pub default_rows: Vec<(String, i64)>,
}

/// Days `class` is kept.
pub fn retention_days(class: Class, access_days: u32) -> u32 {
    match class {
        Class::Access => access_days,
        Class::Rights => RIGHTS_RETENTION_DAYS,
    }
}

/// The least `ACCESS_LOG_RETENTION_DAYS` allows (two years: 안전성 확보조치 기준 제8조 for a
/// system with 50,000 or more subjects).
pub const ACCESS_RETENTION_FLOOR_DAYS: u32 = 730;

/// The shortest retention a drop of `class` may have been made under, for a `verify` run with
/// `access_days` configured: the retention the law requires, or less when the run itself is
/// configured with less (a test's); a drop's own retention ([`drop_auth`]) must reach it, so
/// raising the setting later leaves earlier drops valid and a drop made shorter is not.
pub fn retention_floor(class: Class, access_days: u32) -> u32 {
    match class {
        Class::Access => access_days.min(ACCESS_RETENTION_FLOOR_DAYS),
        Class::Rights => RIGHTS_RETENTION_DAYS,
    }
}

/// How long a step of the maintenance waits for a lock before giving up (and trying again): a
/// `DROP TABLE` of a partition locks the whole log until it commits, and while it waits for the
/// sealer's or a request's transaction every insert into the log queues behind it.
const LOCK_TIMEOUT: &str = "2s";
/// Tries of a step whose lock wait timed out, with a growing pause between them.
const LOCK_ATTEMPTS: u32 = 5;

/// Whether `e` is a lock wait cut short by `lock_timeout` (or a deadlock PostgreSQL broke).
fn lock_timed_out(e: &anyhow::Error) -> bool {
    use tokio_postgres::error::SqlState;
    e.chain().any(|c| {
        c.downcast_ref::<tokio_postgres::Error>()
            .and_then(|e| e.code())
            .is_some_and(|c| {
                *c == SqlState::LOCK_NOT_AVAILABLE || *c == SqlState::T_R_DEADLOCK_DETECTED
            })
    })
}

/// The maintenance run (module doc) on `client` (the migration role's): the coming months'
/// partitions in one transaction, then each month dropped in a transaction of its own, every
/// lock waited for at most [`LOCK_TIMEOUT`] ([`LOCK_ATTEMPTS`] tries). `key`: the chain's, which
/// authenticates each drop and anchor.
pub async fn maintain(
    client: &mut tokio_postgres::Client,
    key: &ChainKey,
    access_days: u32,
) -> anyhow::Result<Maintained> {
    let mut out = Maintained::default();
    let mut attempt = 0;
    let mut backoff = lock_backoff();
    out.partitions_created = loop {
        attempt += 1;
        let tx = client
            .transaction()
            .await
            .context("starting the maintenance transaction")?;
        let step = async {
            tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                .await?;
            let n: i32 = tx
                .query_one(
                    "SELECT access_log_ensure_partitions(now(), $1)",
                    &[&MONTHS_AHEAD],
                )
                .await?
                .get(0);
            anyhow::Ok(n)
        }
        .await
        .context("creating the coming months' partitions (needs the migration role)");
        match step {
            Ok(n) => {
                tx.commit().await.context("committing the partitions")?;
                break n;
            }
            Err(e) if lock_timed_out(&e) && attempt < LOCK_ATTEMPTS => {
                drop(tx);
                backoff.wait().await;
            }
            Err(e) => return Err(e),
        }
    };
    let now: OffsetDateTime = client.query_one("SELECT now()", &[]).await?.get(0);
    for &class in Class::ALL {
        let days = retention_days(class, access_days);
        let cutoff = now - time::Duration::days(i64::from(days));
        let log_parent = format!("access_log_{}", class.as_str());
        let seals_parent = format!("access_log_seals_{}", class.as_str());
        let seal_months = month_partitions(&*client, &seals_parent).await?;
        let due: Vec<MonthPartition> = month_partitions(&*client, &log_parent)
            .await?
            .into_iter()
            .filter(|m| m.end <= cutoff)
            .collect();
        for month in &due {
            let seals = seal_months
                .iter()
                .find(|s| s.start == month.start)
                .map(|s| s.name.clone());
            let mut attempt = 0;
            let mut backoff = lock_backoff();
            let dropped = loop {
                attempt += 1;
                let tx = client
                    .transaction()
                    .await
                    .context("starting a month's drop")?;
                let step = async {
                    tx.batch_execute(&format!("SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
                        .await?;
                    drop_month(&tx, key, class, month, seals.as_deref(), days).await
                }
                .await;
                match step {
                    Ok(d) => {
                        tx.commit()
                            .await
                            .with_context(|| format!("committing the drop of {}", month.name))?;
                        break d;
                    }
                    Err(e) if lock_timed_out(&e) && attempt < LOCK_ATTEMPTS => {
                        drop(tx);
                        backoff.wait().await;
                    }
                    Err(e) => {
                        return Err(e.context(format!(
                            "dropping {} (months dropped before it stay dropped; tried {attempt} \
                             times)",
                            month.name
                        )))
                    }
                }
            };
            tracing::info!(
                class = class.as_str(),
                partition = month.name,
                rows = dropped.rows,
                anchors = dropped.anchors,
                retention_days = days,
                "access log month past retention dropped"
            );
            out.dropped.push(dropped);
        }
    }
    for table in ["access_log_access_default", "access_log_rights_default"] {
        let n: i64 = client
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .get(0);
        if n > 0 {
            tracing::warn!(
                table,
                rows = n,
                "access log rows past every month partition (in DEFAULT): they are kept, and \
                 moved into their month when `access-log maintain` creates it"
            );
            out.default_rows.push((table.to_owned(), n));
        }
    }
    Ok(out)
}

/// Drops one month of `class` (its log partition and `seals`, its seals' partition) in `tx`:
/// refuses a month holding an unsealed row; anchors each dropped row a kept seal names (or the
/// chain's end); records the drop with the kept seals left without a successor; all of it
/// authenticated under `key`.
async fn drop_month(
    tx: &tokio_postgres::Transaction<'_>,
    key: &ChainKey,
    class: Class,
    month: &MonthPartition,
    seals: Option<&str>,
    days: u32,
) -> anyhow::Result<Dropped> {
    let name = class.as_str();
    // Every lock the drop needs, first and in the sealer's order (the log, then its seals): a
    // lock taken half-way could wait on a sealer run that waits on this one.
    tx.batch_execute(&format!(
        "LOCK TABLE {}, {} IN ACCESS EXCLUSIVE MODE",
        ident(&format!("access_log_{name}")),
        ident(&format!("access_log_seals_{name}"))
    ))
    .await
    .context("locking the log's class for the drop")?;
    if let Some(r) = tx
        .query_opt(
            &format!(
                "SELECT l.id FROM {} l WHERE NOT EXISTS ( \
                     SELECT 1 FROM access_log_seals s \
                      WHERE s.class = $1 AND s.log_id = l.id AND s.at = l.at) \
                 ORDER BY l.id LIMIT 1",
                ident(&month.name)
            ),
            &[&name],
        )
        .await?
    {
        anyhow::bail!(
            "{} holds row {} without a seal: it is past retention but is not dropped \
             until the sealer has sealed it (is token-api running with \
             ACCESS_LOG_KEY_FILE?); nothing was dropped",
            month.name,
            r.get::<_, i64>(0)
        );
    }
    let rows: i64 = tx
        .query_one(&format!("SELECT count(*) FROM {}", ident(&month.name)), &[])
        .await?
        .get(0);
    let dropped_at: OffsetDateTime = tx.query_one("SELECT now()", &[]).await?.get(0);
    // The chain's end, when retention drops it too, is where the next seal starts from.
    let end = seal::chain_end(tx, class).await?;
    let mut anchors = 0;
    let mut orphans: Vec<i64> = Vec::new();
    if let Some(seals) = seals {
        // Chosen by the seal's partition, not its time: a kept seal is one outside this month's
        // partition (DEFAULT included).
        let linked = tx
            .query(
                &format!(
                    "SELECT d.log_id, d.mac FROM {} d \
                      WHERE EXISTS (SELECT 1 FROM access_log_seals k \
                                     WHERE k.class = $1 AND k.prev_id = d.log_id \
                                       AND k.tableoid <> to_regclass($2)) \
                         OR d.log_id = $3 \
                      ORDER BY d.log_id",
                    ident(seals)
                ),
                &[&name, &seals, &end.as_ref().map(|e| e.log_id)],
            )
            .await
            .with_context(|| format!("finding the rows to anchor before dropping {seals}"))?;
        for r in &linked {
            let log_id: i64 = r.get(0);
            let mac: Vec<u8> = r.get(1);
            let auth = anchor_auth(
                key,
                name,
                log_id,
                &mac,
                &month.name,
                month.start,
                month.end,
                dropped_at,
            );
            anchors += tx
                .execute(
                    "INSERT INTO access_log_anchors \
                       (class, log_id, mac, partition, month_start, month_end, dropped_at, auth) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT DO NOTHING",
                    &[
                        &name,
                        &log_id,
                        &mac,
                        &month.name,
                        &month.start,
                        &month.end,
                        &dropped_at,
                        &auth.as_slice(),
                    ],
                )
                .await
                .with_context(|| format!("anchoring the chain before dropping {seals}"))?;
        }
        orphans = tx
            .query(
                &format!(
                    "SELECT k.log_id FROM access_log_seals k \
                      WHERE k.class = $1 AND k.tableoid <> to_regclass($2) \
                        AND EXISTS (SELECT 1 FROM {} d WHERE d.prev_id = k.log_id) \
                      ORDER BY 1",
                    ident(seals)
                ),
                &[&name, &seals],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
    }
    let auth = drop_auth(
        key,
        name,
        &month.name,
        month.start,
        month.end,
        dropped_at,
        &orphans,
        Some(days),
    );
    tx.execute(
        "INSERT INTO access_log_drops \
           (class, partition, month_start, month_end, dropped_at, orphans, auth, retention_days) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &name,
            &month.name,
            &month.start,
            &month.end,
            &dropped_at,
            &orphans,
            &auth.as_slice(),
            &i32::try_from(days).unwrap_or(i32::MAX),
        ],
    )
    .await
    .with_context(|| format!("recording the drop of {}", month.name))?;
    tx.batch_execute(&format!("DROP TABLE {}", ident(&month.name)))
        .await
        .with_context(|| format!("dropping {}", month.name))?;
    if let Some(seals) = seals {
        tx.batch_execute(&format!("DROP TABLE {}", ident(seals)))
            .await
            .with_context(|| format!("dropping {seals}"))?;
    }
    Ok(Dropped {
        class,
        partition: month.name.clone(),
        rows,
        anchors,
    })
}

/// Microseconds since the epoch: a `timestamptz` exactly.
fn micros(t: OffsetDateTime) -> i64 {
    (t.unix_timestamp_nanos() / 1_000) as i64
}

/// The HMAC of a record's fields, each length-prefixed (8 bytes, big-endian), after `domain`.
fn record_mac(key: &ChainKey, domain: &[u8], fields: &[&[u8]]) -> [u8; 32] {
    let mut bytes = Vec::new();
    for f in fields {
        bytes.extend_from_slice(&(f.len() as u64).to_be_bytes());
        bytes.extend_from_slice(f);
    }
    key.mac(&[domain, &bytes])
}

/// An anchor's own HMAC: over its class, row id, mac, partition, month and drop time.
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per column authenticated"
)]
pub fn anchor_auth(
    key: &ChainKey,
    class: &str,
    log_id: i64,
    mac: &[u8],
    partition: &str,
    month_start: OffsetDateTime,
    month_end: OffsetDateTime,
    dropped_at: OffsetDateTime,
) -> [u8; 32] {
    record_mac(
        key,
        b"kollus access-log anchor\n",
        &[
            class.as_bytes(),
            &log_id.to_be_bytes(),
            mac,
            partition.as_bytes(),
            &micros(month_start).to_be_bytes(),
            &micros(month_end).to_be_bytes(),
            &micros(dropped_at).to_be_bytes(),
        ],
    )
}

/// A drop record's HMAC: over its class, partition, month, drop time, orphans and the retention
/// in days it was dropped under (V28: domain `kollus access-log drop v2`, the days as a 4-byte
/// big-endian field last); a record from before V28 has no days (`None`: domain `kollus
/// access-log drop`, without the field).
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per column authenticated"
)]
pub fn drop_auth(
    key: &ChainKey,
    class: &str,
    partition: &str,
    month_start: OffsetDateTime,
    month_end: OffsetDateTime,
    dropped_at: OffsetDateTime,
    orphans: &[i64],
    retention_days: Option<u32>,
) -> [u8; 32] {
    let orphans: Vec<u8> = orphans.iter().flat_map(|o| o.to_be_bytes()).collect();
    let (start, end, at) = (
        micros(month_start).to_be_bytes(),
        micros(month_end).to_be_bytes(),
        micros(dropped_at).to_be_bytes(),
    );
    let mut fields: Vec<&[u8]> = vec![
        class.as_bytes(),
        partition.as_bytes(),
        &start,
        &end,
        &at,
        &orphans,
    ];
    let days = retention_days.map(u32::to_be_bytes);
    let domain: &[u8] = match &days {
        Some(days) => {
            fields.push(days);
            b"kollus access-log drop v2\n"
        }
        None => b"kollus access-log drop\n",
    };
    record_mac(key, domain, &fields)
}

/// A partition's name, quoted (names come from `pg_class`, checked to be ours).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// The pause before retrying a statement that waited past `lock_timeout` (the project's
/// backoff: 0.5 s, doubling, at most 4 s).
fn lock_backoff() -> kollus_common::backoff::Backoff {
    kollus_common::backoff::Backoff::new(
        std::time::Duration::from_millis(500),
        std::time::Duration::from_secs(4),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_name_is_its_month() {
        let m = month_of("y2026m12").unwrap();
        assert_eq!(m.to_string(), "2026-12-01 0:00:00.0 +00:00:00");
        assert_eq!(next_month(m).to_string(), "2027-01-01 0:00:00.0 +00:00:00");
        assert!(month_of("default").is_none());
        assert!(month_of("y2026m13").is_none());
    }
}
