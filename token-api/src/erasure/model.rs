//! Erasures (issue 32) as stored: applying one in a transaction ([`apply`]), its receipt
//! ([`Receipt`], `erasures`), and the latest receipt of a subject tag (the console's "erased on
//! ..."). Other features use this model; the handlers are `erasure`'s.

use std::collections::BTreeMap;

use anyhow::Context as _;
use kollus_common::subject::{lock_subject, SubjectTag};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::access_log::record::{AccessLog, Action, Entry};

/// Why a user is erased. Its text (snake_case) is the receipt's `basis`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    Serialize,
    Deserialize,
    strum::IntoStaticStr,
    strum::EnumString,
    utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
#[strum(serialize_all = "snake_case")]
pub enum Basis {
    /// 개인정보 보호법 제36조 (정정·삭제).
    #[serde(rename = "pipa_36")]
    #[strum(serialize = "pipa_36")]
    Pipa36,
    /// GDPR Art. 17 (right to erasure).
    #[serde(rename = "gdpr_17")]
    #[strum(serialize = "gdpr_17")]
    Gdpr17,
    /// Anything else (say what in `note`); the basis of a request that names none.
    #[default]
    Other,
}

impl Basis {
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// Every table whose rows name a user by `client_user_id`, deleted by an erasure (a test holds
/// this list to the schema's columns of that name). The day's read counters
/// (`access_log_reads`) are the access record's, kept as it is: their sealed id stops opening
/// with the key, and the service role may not delete them.
pub const USER_TABLES: &[&str] = &[
    "watch_sessions",
    "entitlements",
    "entitlement_changes",
    "drm_downloads",
    "playback_decisions",
    "console_views",
];

/// What an erasure was asked for.
#[derive(Debug)]
pub struct Request<'a> {
    pub client_user_id: &'a str,
    pub key_name: &'a str,
    pub client_addr: Option<std::net::IpAddr>,
    pub basis: Basis,
    pub note: Option<&'a str>,
}

/// What an erasure did, as its receipt keeps it.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub id: Uuid,
    pub subject_tag: SubjectTag,
    /// The data key generation destroyed (`None`: the subject had no live key).
    pub generation: Option<i32>,
    pub requested_at: OffsetDateTime,
    pub requested_by: String,
    pub basis: String,
    pub note: Option<String>,
    pub status: String,
    pub applied_at: Option<OffsetDateTime>,
    pub tables: BTreeMap<String, i64>,
    /// When the erasure topic acknowledged the erasure's record (`None`: not yet).
    pub published_at: Option<OffsetDateTime>,
    /// When the topics naming users hold nothing from before the erasure (`None`: unknown).
    pub topics_clear_by: Option<OffsetDateTime>,
    pub completed_at: Option<OffsetDateTime>,
    /// Each archive location's answer, kept when the receipt became `complete`.
    pub archive: Option<BTreeMap<String, String>>,
}

/// Erases one user in ONE transaction: the subject locked (`lock_subject`), their rows deleted
/// from every table naming them (counted), the `erase` access-log row written (the id sealed
/// under the subject's current key, which is destroyed right after, so it ends unreadable), the
/// key destroyed and the receipt inserted as `applied`. The access record itself is kept.
///
/// `clear_after_ms`: how long the topics naming users may still hold a record from before the
/// erasure (their longest retention plus a segment); the receipt's `topics_clear_by` is that
/// long after `applied_at`. The receipt starts unpublished: [`unpublished`] hands it to the
/// erasure topic's publisher.
pub async fn apply(
    client: &mut deadpool_postgres::Client,
    log: &AccessLog,
    r: &Request<'_>,
    clear_after_ms: i64,
) -> anyhow::Result<Receipt> {
    let tag = log.tag(r.client_user_id);
    let tx = client.transaction().await.context("starting an erasure")?;
    let tx_ = &*tx;
    lock_subject(tx_, &tag).await?;
    let mut tables = BTreeMap::new();
    for table in USER_TABLES {
        let n = tx
            .execute(
                &format!("DELETE FROM {table} WHERE client_user_id = $1"),
                &[&r.client_user_id],
            )
            .await
            .with_context(|| format!("erasing from {table}"))?;
        tables.insert((*table).to_owned(), n as i64);
    }
    let id = Uuid::now_v7();
    let target = format!("erasure:{id}");
    // Sealed under the current key (made if the subject had none), destroyed just below.
    log.record(
        tx_,
        Entry {
            client_addr: r.client_addr,
            subject: Some(r.client_user_id),
            target: Some(&target),
            ..Entry::new(Action::Erase, r.key_name)
        },
    )
    .await?;
    let generation = log.subjects.erase(tx_, &tag).await?;
    let tables_json = serde_json::to_value(&tables).context("a receipt's tables")?;
    let row = tx
        .query_one(
            // Applied now, after the subject's lock and the deletes (clock_timestamp, not the
            // transaction's start): a report a worker applied before the lock was received
            // before this time, so the barrier keeps it out of a rebuild too.
            "INSERT INTO erasures (id, subject_tag, generation, requested_by, basis, note, \
                 status, applied_at, tables, topics_clear_by) \
             SELECT $1, $2, $3, $4, $5, $6, 'applied', at, $7, \
                    at + $8::bigint * interval '1 millisecond' \
               FROM (SELECT clock_timestamp() AS at) now_ \
             RETURNING requested_at, applied_at, topics_clear_by",
            &[
                &id,
                &tag.as_str(),
                &generation,
                &r.key_name,
                &r.basis.as_str(),
                &r.note,
                &tables_json,
                &clear_after_ms,
            ],
        )
        .await
        .context("writing an erasure receipt")?;
    tx.commit().await.context("committing an erasure")?;
    Ok(Receipt {
        id,
        subject_tag: tag,
        generation,
        requested_at: row.try_get("requested_at")?,
        requested_by: r.key_name.to_owned(),
        basis: r.basis.as_str().to_owned(),
        note: r.note.map(str::to_owned),
        status: "applied".into(),
        applied_at: row.try_get("applied_at")?,
        tables,
        published_at: None,
        topics_clear_by: row.try_get("topics_clear_by")?,
        completed_at: None,
        archive: None,
    })
}

const RECEIPT_COLUMNS: &str = "id, subject_tag, generation, requested_at, requested_by, basis, \
                               note, status, applied_at, tables, published_at, \
                               topics_clear_by, completed_at, archive";

fn receipt(row: &tokio_postgres::Row) -> anyhow::Result<Receipt> {
    let tables: serde_json::Value = row.try_get("tables")?;
    Ok(Receipt {
        id: row.try_get("id")?,
        subject_tag: SubjectTag::from_stored(row.try_get("subject_tag")?),
        generation: row.try_get("generation")?,
        requested_at: row.try_get("requested_at")?,
        requested_by: row.try_get("requested_by")?,
        basis: row.try_get("basis")?,
        note: row.try_get("note")?,
        status: row.try_get("status")?,
        applied_at: row.try_get("applied_at")?,
        tables: serde_json::from_value(tables).context("a receipt's tables")?,
        published_at: row.try_get("published_at")?,
        topics_clear_by: row.try_get("topics_clear_by")?,
        completed_at: row.try_get("completed_at")?,
        archive: row
            .try_get::<_, Option<serde_json::Value>>("archive")?
            .map(serde_json::from_value)
            .transpose()
            .context("a receipt's archive")?,
    })
}

/// Fills the `topics_clear_by` of a receipt from before it was kept (`applied_at` plus
/// `clear_after_ms`), and returns it.
pub async fn set_topics_clear_by(
    client: &impl GenericClient,
    id: Uuid,
    clear_after_ms: i64,
) -> anyhow::Result<Option<OffsetDateTime>> {
    let row = client
        .query_opt(
            "UPDATE erasures \
                SET topics_clear_by = applied_at + $2::bigint * interval '1 millisecond' \
              WHERE id = $1 AND topics_clear_by IS NULL AND applied_at IS NOT NULL \
              RETURNING topics_clear_by",
            &[&id, &clear_after_ms],
        )
        .await
        .context("filling an erasure's topics_clear_by")?;
    Ok(row.map(|r| r.get("topics_clear_by")))
}

/// Marks the receipt `complete` with what the archive locations answered (once: a receipt
/// complete already keeps its first answer). Returns when it was completed.
pub async fn complete(
    client: &impl GenericClient,
    id: Uuid,
    archive: &BTreeMap<String, String>,
) -> anyhow::Result<OffsetDateTime> {
    let archive = serde_json::to_value(archive).context("a receipt's archive")?;
    let row = client
        .query_one(
            "WITH done AS ( \
                UPDATE erasures SET status = 'complete', completed_at = now(), archive = $2 \
                 WHERE id = $1 AND status <> 'complete' RETURNING completed_at) \
             SELECT completed_at FROM done \
             UNION ALL SELECT completed_at FROM erasures WHERE id = $1 AND status = 'complete' \
             LIMIT 1",
            &[&id, &archive],
        )
        .await
        .context("completing an erasure")?;
    Ok(row.get("completed_at"))
}

/// An erasure the erasure topic has not acknowledged yet.
#[derive(Debug, Clone)]
pub struct Unpublished {
    pub id: Uuid,
    pub subject_tag: String,
    pub applied_at: OffsetDateTime,
}

/// Up to `limit` unpublished erasures, oldest first, locked for this transaction: rows
/// another replica is publishing are skipped (`SKIP LOCKED`), so one replica publishes each.
pub async fn unpublished(tx: &impl GenericClient, limit: i64) -> anyhow::Result<Vec<Unpublished>> {
    let rows = tx
        .query(
            "SELECT id, subject_tag, applied_at FROM erasures \
              WHERE published_at IS NULL AND applied_at IS NOT NULL \
              ORDER BY applied_at LIMIT $1 FOR UPDATE SKIP LOCKED",
            &[&limit],
        )
        .await
        .context("reading unpublished erasures")?;
    rows.iter()
        .map(|r| {
            Ok(Unpublished {
                id: r.try_get("id")?,
                subject_tag: r.try_get("subject_tag")?,
                applied_at: r.try_get("applied_at")?,
            })
        })
        .collect()
}

/// Marks `ids` published now.
pub async fn mark_published(tx: &impl GenericClient, ids: &[Uuid]) -> anyhow::Result<()> {
    tx.execute(
        "UPDATE erasures SET published_at = now() WHERE id = ANY($1) AND published_at IS NULL",
        &[&ids],
    )
    .await
    .context("marking erasures published")?;
    Ok(())
}

/// How many erasures are unpublished, and the oldest one's age in seconds (0: none).
pub async fn unpublished_backlog(client: &impl GenericClient) -> anyhow::Result<(i64, f64)> {
    let row = client
        .query_one(
            "SELECT count(*) AS n, \
                    coalesce(extract(epoch FROM now() - min(applied_at)), 0)::float8 AS oldest \
               FROM erasures WHERE published_at IS NULL AND applied_at IS NOT NULL",
            &[],
        )
        .await
        .context("counting unpublished erasures")?;
    Ok((row.try_get("n")?, row.try_get("oldest")?))
}

/// The receipt `id`, `None` when there is none.
pub async fn find(client: &impl GenericClient, id: Uuid) -> anyhow::Result<Option<Receipt>> {
    let row = client
        .query_opt(
            &format!("SELECT {RECEIPT_COLUMNS} FROM erasures WHERE id = $1"),
            &[&id],
        )
        .await
        .context("reading an erasure receipt")?;
    row.as_ref().map(receipt).transpose()
}

/// The time of `tag`'s latest erasure as the workers' barrier holds it (`erasure_barrier`, V27:
/// each erasure's `applied_at`, also those a rebuild loaded), if they were ever erased: what
/// was received before it is never shown again.
pub async fn erased_before(
    client: &impl GenericClient,
    tag: &SubjectTag,
) -> anyhow::Result<Option<OffsetDateTime>> {
    let row = client
        .query_opt(
            "SELECT erased_at FROM erasure_barrier WHERE subject_tag = $1",
            &[&tag.as_str()],
        )
        .await
        .context("reading the erasure barrier")?;
    Ok(row.map(|r| r.get("erased_at")))
}

/// When the subject was last erased, `None` if never.
pub async fn last_erased(
    client: &impl GenericClient,
    tag: &SubjectTag,
) -> anyhow::Result<Option<OffsetDateTime>> {
    let row = client
        .query_opt(
            "SELECT requested_at FROM erasures WHERE subject_tag = $1 \
              ORDER BY requested_at DESC LIMIT 1",
            &[&tag.as_str()],
        )
        .await
        .context("reading erasure receipts")?;
    Ok(row.map(|r| r.get("requested_at")))
}
