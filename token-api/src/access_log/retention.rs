//! Keeping the access log as long as the law says, and no longer: `token-api access-log
//! maintain` (daily, under the migration role, DATABASE_MIGRATION_URL) creates the coming
//! months' partitions and drops, in one transaction, each month partition of a class whose
//! month ended `retention` days ago or more (`ACCESS_LOG_RETENTION_DAYS` for accesses,
//! [`RIGHTS_RETENTION_DAYS`] for access-right changes), the log's and the seals' together.
//! Before a drop, every dropped row that a kept seal names as its previous one is recorded in
//! `access_log_anchors` with its mac, so the kept chain still verifies from there. A month
//! holding a row without a seal is never dropped (the run fails naming it).

use anyhow::Context as _;
use time::{Date, Month, OffsetDateTime, Time};
use tokio_postgres::GenericClient;

use crate::access_log::record::{Class, RIGHTS_RETENTION_DAYS};
use crate::access_log::seal;

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

/// The maintenance run (module doc), in one transaction on `client` (the migration role's).
pub async fn maintain(
    client: &mut tokio_postgres::Client,
    access_days: u32,
) -> anyhow::Result<Maintained> {
    let tx = client
        .transaction()
        .await
        .context("starting the maintenance transaction")?;
    let mut out = Maintained {
        partitions_created: tx
            .query_one(
                "SELECT access_log_ensure_partitions(now(), $1)",
                &[&MONTHS_AHEAD],
            )
            .await
            .context("creating the coming months' partitions (needs the migration role)")?
            .get(0),
        ..Maintained::default()
    };
    let now: OffsetDateTime = tx.query_one("SELECT now()", &[]).await?.get(0);
    for &class in Class::ALL {
        let days = retention_days(class, access_days);
        let cutoff = now - time::Duration::days(i64::from(days));
        let log_parent = format!("access_log_{}", class.as_str());
        let seals_parent = format!("access_log_seals_{}", class.as_str());
        let seal_months = month_partitions(&tx, &seals_parent).await?;
        let due: Vec<MonthPartition> = month_partitions(&tx, &log_parent)
            .await?
            .into_iter()
            .filter(|m| m.end <= cutoff)
            .collect();
        let Some(boundary) = due.last().map(|m| m.end) else {
            continue;
        };
        // The chain's end, when retention drops it too, is where the next seal starts from.
        let end = seal::chain_end(&tx, class).await?;
        for month in &due {
            let seals = seal_months
                .iter()
                .find(|s| s.start == month.start)
                .map(|s| s.name.clone());
            if let Some(r) = tx
                .query_opt(
                    &format!(
                        "SELECT l.id FROM {} l WHERE NOT EXISTS ( \
                             SELECT 1 FROM access_log_seals s \
                              WHERE s.class = $1 AND s.log_id = l.id AND s.at = l.at) \
                         ORDER BY l.id LIMIT 1",
                        ident(&month.name)
                    ),
                    &[&class.as_str()],
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
            let mut anchors = 0;
            if let Some(seals) = &seals {
                anchors = tx
                    .execute(
                        &format!(
                            "INSERT INTO access_log_anchors (class, log_id, mac, partition) \
                             SELECT d.class, d.log_id, d.mac, $3 FROM {} d \
                              WHERE EXISTS (SELECT 1 FROM access_log_seals k \
                                             WHERE k.class = $1 AND k.prev_id = d.log_id \
                                               AND k.at >= $2) \
                                 OR d.log_id = $4 \
                             ON CONFLICT DO NOTHING",
                            ident(seals)
                        ),
                        &[
                            &class.as_str(),
                            &boundary,
                            &month.name,
                            &end.as_ref().map(|e| e.log_id),
                        ],
                    )
                    .await
                    .with_context(|| format!("anchoring the chain before dropping {seals}"))?;
            }
            tx.batch_execute(&format!("DROP TABLE {}", ident(&month.name)))
                .await
                .with_context(|| format!("dropping {}", month.name))?;
            if let Some(seals) = &seals {
                tx.batch_execute(&format!("DROP TABLE {}", ident(seals)))
                    .await
                    .with_context(|| format!("dropping {seals}"))?;
            }
            tracing::info!(
                class = class.as_str(),
                partition = month.name,
                rows,
                anchors,
                retention_days = days,
                "access log month past retention dropped"
            );
            out.dropped.push(Dropped {
                class,
                partition: month.name.clone(),
                rows,
                anchors,
            });
        }
    }
    for table in ["access_log_access_default", "access_log_rights_default"] {
        let n: i64 = tx
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await?
            .get(0);
        if n > 0 {
            tracing::warn!(
                table,
                rows = n,
                "access log rows past every month partition (in DEFAULT): they are kept, but \
                 no month drops them; create their months' partitions and move them"
            );
            out.default_rows.push((table.to_owned(), n));
        }
    }
    tx.commit().await.context("committing the maintenance")?;
    Ok(out)
}

/// A partition's name, quoted (names come from `pg_class`, checked to be ours).
fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
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
