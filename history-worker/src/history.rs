//! Applying a batch of LMS reports: decode, split by (user, video) into `HISTORY_WRITE_SHARDS`
//! shards, and per shard, in one transaction: drop envelope ids already applied, merge per
//! session, write the sessions and refresh the rollup.

use std::hash::{Hash as _, Hasher as _};

use deadpool_postgres::Pool;
use kollus_common::kollus::lms::LmsReport;
use kollus_common::worker::{decode_batch, Applied, Apply, ApplyError, Rejected};
use rdkafka::message::OwnedMessage;

use crate::metrics::Metrics;
use crate::sessions::{coalesce, Plausibility, Session};
use crate::store;

pub struct History {
    pub pool: Pool,
    pub metrics: Metrics,
    pub plausibility: Plausibility,
    /// Transactions one batch is written in, side by side (`HISTORY_WRITE_SHARDS`).
    pub write_shards: usize,
}

/// A report ready to apply: its envelope id, receive time and the session it describes.
type Report = (uuid::Uuid, time::OffsetDateTime, Session);

impl History {
    /// Applies one shard of a batch in one transaction; returns (applied, decoded) counts.
    async fn apply_shard(&self, reports: Vec<Report>) -> Result<(usize, usize), ApplyError> {
        let ids: Vec<_> = reports.iter().map(|r| r.0).collect();
        let received: Vec<_> = reports.iter().map(|r| r.1).collect();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // `fresh` holds each new id once; a re-delivery in this same batch carries the same id
        // and must not be applied a second time.
        let mut fresh = store::claim_new(&tx, &ids, &received).await?;
        let applied = fresh.len();
        let decoded = reports.len();
        let merged = coalesce(
            reports
                .into_iter()
                .filter(|(id, _, _)| fresh.remove(id))
                .map(|(_, _, s)| s),
        );
        if !merged.is_empty() {
            let written = store::write_sessions(&tx, merged).await?;
            store::refresh_progress(&tx, &written).await?;
        }
        tx.commit().await?;
        Ok((applied, decoded))
    }
}

impl Apply for History {
    async fn apply(&self, batch: &[OwnedMessage]) -> Result<Applied, ApplyError> {
        let (decoded, mut rejected) = decode_batch::<LmsReport>(batch);
        let mut envelopes = Vec::with_capacity(decoded.len());
        for (index, e) in decoded {
            match self.plausibility.check(&e.payload, e.received_at) {
                Ok(assessment) => envelopes.push((e, assessment)),
                Err(detail) => rejected.push(Rejected {
                    index,
                    reason: "implausible_report",
                    detail,
                }),
            }
        }
        let applied = Applied { rejected };
        // Shards by (user, video): no session or rollup row is in two shards, so their
        // transactions never wait on each other. Each shard commits on its own; should one fail,
        // the whole batch is retried and the committed shards' reports are skipped as already
        // applied (their envelope ids are claimed), so the batch still applies exactly once.
        let shards = self.write_shards.max(1);
        let mut parts: Vec<Vec<Report>> = (0..shards).map(|_| Vec::new()).collect();
        for (e, assessment) in envelopes {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                e.payload.user.client_user_id.as_str(),
                e.payload.content.media_content_key.as_str(),
            )
                .hash(&mut h);
            let session =
                Session::from_report(&e.payload, e.received_at, e.query, e.lms_hash, assessment);
            parts[(h.finish() % shards as u64) as usize].push((e.id, e.received_at, session));
        }
        let counts = futures_util::future::try_join_all(
            parts
                .into_iter()
                .filter(|p| !p.is_empty())
                .map(|p| self.apply_shard(p)),
        )
        .await?;
        let (applied_count, decoded) = counts
            .into_iter()
            .fold((0, 0), |(a, d), (a2, d2)| (a + a2, d + d2));

        let m = &self.metrics;
        m.records
            .with_label_values(&["applied"])
            .inc_by(applied_count as u64);
        m.records
            .with_label_values(&["duplicate"])
            .inc_by((decoded - applied_count) as u64);
        m.records
            .with_label_values(&["rejected"])
            .inc_by(applied.rejected.len() as u64);
        Ok(applied)
    }

    async fn reset(&self) -> Result<(), ApplyError> {
        let client = self.pool.get().await?;
        client
            .batch_execute(&format!("TRUNCATE {}", store::TABLES.join(", ")))
            .await?;
        Ok(())
    }
}
