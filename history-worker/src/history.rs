//! Applying a batch of LMS reports. Split by (user, video) into `HISTORY_WRITE_SHARDS` shards;
//! per shard, in one transaction:
//!
//! 1. claim the envelope ids (a re-delivered report is dropped here), and read the stored
//!    sessions and rollups the shard touches, in one round trip;
//! 2. merge in Rust: each session with its stored state (`sessions.rs`), each rollup with the
//!    sessions' changes (`progress.rs`);
//! 3. write both back (`store.rs`): update what was stored, if still as read; insert what was
//!    not.
//!
//! Should another transaction have written one of those rows in between (two consumers
//! overlapping in a rebalance), the shard is rolled back and the batch retried: it then reads
//! them anew.

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::hash::{Hash as _, Hasher as _};

use deadpool_postgres::Pool;
use kollus_common::kollus::lms::LmsReport;
use kollus_common::worker::{Applied, Apply, ApplyError, Record, Rejected};
use time::OffsetDateTime;
use uuid::Uuid;

use crate::metrics::Metrics;
use crate::progress::Progress;
use crate::sessions::{coalesce, Plausibility, Session, SessionKey};
use crate::store::{self, PairId, ProgressRow, Raced, SessionRow, Write};

pub struct History {
    pub pool: Pool,
    pub metrics: Metrics,
    pub plausibility: Plausibility,
    /// Transactions one batch is written in, side by side (`HISTORY_WRITE_SHARDS`).
    pub write_shards: usize,
}

/// A report ready to apply: its envelope id, receive time and the session it describes.
struct Report {
    id: Uuid,
    received_at: OffsetDateTime,
    session: Session,
}

/// What one shard did: reports applied (new envelope ids) and reports taken.
struct ShardCounts {
    applied: usize,
    taken: usize,
}

impl History {
    /// Applies one shard of a batch in one transaction.
    async fn apply_shard(&self, reports: Vec<Report>) -> Result<ShardCounts, ApplyError> {
        let mut keys: Vec<&SessionKey> = reports.iter().map(|r| &r.session.key).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut pairs: Vec<(&str, &str)> = keys
            .iter()
            .map(|k| (k.client_user_id.as_str(), k.media_content_key.as_str()))
            .collect();
        pairs.dedup(); // `keys` is sorted, so each pair's keys are adjacent.
        let ids: Vec<Uuid> = reports.iter().map(|r| r.id).collect();
        let received: Vec<OffsetDateTime> = reports.iter().map(|r| r.received_at).collect();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // One round trip: the requests are pipelined, and run in this order.
        let (mut fresh, mut read, read_pairs, ()) = futures_util::future::try_join4(
            store::claim_new(&tx, &ids, &received),
            store::read_sessions(&tx, &keys),
            store::read_progress(&tx, &pairs),
            store::prepare(&tx),
        )
        .await?;
        // Keyed by owned keys, so the reports can be consumed below (no copy of a session).
        let mut stored: HashMap<SessionKey, Session> = HashMap::with_capacity(read.len());
        for k in keys {
            let id = (
                k.client_user_id.as_str().to_owned(),
                k.media_content_key.as_str().to_owned(),
                k.start_at.0,
            );
            if let Some(row) = read.remove(&id) {
                stored.insert(k.clone(), row.into_session(k.clone()));
            }
        }
        let mut rollups: BTreeMap<PairId, Progress> = read_pairs
            .into_iter()
            .map(|(pair, row)| (pair, row.into_progress()))
            .collect();

        let taken = reports.len();
        let applied = fresh.len();
        let batch = coalesce(
            reports
                .into_iter()
                .filter(|r| fresh.remove(&r.id))
                .map(|r| r.session),
        );
        // Each touched rollup, and its `reports` as read (`None`: not stored yet).
        let mut progress: BTreeMap<PairId, (Progress, Option<i64>)> = BTreeMap::new();
        let mut merged_sessions = Vec::with_capacity(batch.len());
        for s in batch {
            let before = stored.remove(&s.key);
            let after = match before.clone() {
                Some(mut m) => {
                    m.merge(s);
                    m
                }
                None => s,
            };
            let pair = (
                after.key.client_user_id.as_str().to_owned(),
                after.key.media_content_key.as_str().to_owned(),
            );
            let (rollup, _) = match progress.entry(pair) {
                Entry::Occupied(e) => e.into_mut(),
                Entry::Vacant(e) => {
                    let loaded = rollups.remove(e.key());
                    let read = loaded.as_ref().map(|p| store::int(p.reports));
                    e.insert((loaded.unwrap_or_else(Progress::empty), read))
                }
            };
            rollup.apply(before.as_ref(), &after);
            merged_sessions.push((after, before.map(|b| store::int(b.reports))));
        }
        let session_rows: Vec<_> = merged_sessions
            .iter()
            .map(|(s, read_reports)| Write {
                row: SessionRow::of(s),
                read_reports: *read_reports,
            })
            .collect();
        let progress_rows: Vec<_> = progress
            .iter()
            .map(|(pair, (p, read_reports))| Write {
                row: ProgressRow::of(&pair.0, &pair.1, p),
                read_reports: *read_reports,
            })
            .collect();

        let Raced(sessions_raced) = store::write_sessions(&tx, &session_rows).await?;
        let Raced(rollups_raced) = store::write_progress(&tx, &progress_rows).await?;
        if sessions_raced + rollups_raced > 0 {
            // Dropping the transaction rolls it back, claims included: the retry applies all.
            self.metrics.raced.inc();
            return Err(ApplyError::Transient(anyhow::anyhow!(
                "{sessions_raced} session(s) and {rollups_raced} rollup(s) of this batch were \
                 written by another writer since they were read; retrying"
            )));
        }
        tx.commit().await?;
        Ok(ShardCounts { applied, taken })
    }
}

impl Apply for History {
    type Payload = LmsReport;

    async fn apply(&self, batch: &[Record<LmsReport>]) -> Result<Applied, ApplyError> {
        let mut rejected = Vec::new();
        // Shards by (user, video): no session or rollup row is in two shards, so their
        // transactions never wait on each other. Each shard commits on its own; should one fail,
        // the whole batch is retried and the committed shards' reports are skipped as already
        // applied (their envelope ids are claimed), so the batch still applies exactly once.
        let shards = self.write_shards.max(1);
        let mut parts: Vec<Vec<Report>> = (0..shards).map(|_| Vec::new()).collect();
        for Record { index, envelope: e } in batch {
            let assessment = match self.plausibility.check(&e.payload, e.received_at) {
                Ok(assessment) => assessment,
                Err(detail) => {
                    rejected.push(Rejected {
                        index: *index,
                        reason: "implausible_report",
                        detail,
                    });
                    continue;
                }
            };
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                e.payload.user.client_user_id.as_str(),
                e.payload.content.media_content_key.as_str(),
            )
                .hash(&mut h);
            parts[(h.finish() % shards as u64) as usize].push(Report {
                id: e.id,
                received_at: e.received_at,
                session: Session::from_report(
                    &e.payload,
                    e.received_at,
                    e.query.iter().map(|(k, v)| (k.clone(), v.clone())),
                    e.lms_hash,
                    assessment,
                ),
            });
        }
        let counts = futures_util::future::try_join_all(
            parts
                .into_iter()
                .filter(|p| !p.is_empty())
                .map(|p| self.apply_shard(p)),
        )
        .await?;
        let (applied, taken) = counts
            .iter()
            .fold((0, 0), |(a, t), c| (a + c.applied, t + c.taken));

        let m = &self.metrics;
        m.records
            .with_label_values(&["applied"])
            .inc_by(applied as u64);
        m.records
            .with_label_values(&["duplicate"])
            .inc_by((taken - applied) as u64);
        m.records
            .with_label_values(&["rejected"])
            .inc_by(rejected.len() as u64);
        Ok(Applied { rejected })
    }

    async fn reset(&self) -> Result<(), ApplyError> {
        let client = self.pool.get().await?;
        client
            .batch_execute(&format!("TRUNCATE {}", store::TABLES.join(", ")))
            .await?;
        Ok(())
    }
}
