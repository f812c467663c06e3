//! Applying a batch of LMS reports: decode, drop envelope ids already applied, merge per
//! session, upsert sessions and refresh the rollup, all in one transaction.

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
}

impl Apply for History {
    async fn apply(&self, batch: &[OwnedMessage]) -> Result<Applied, ApplyError> {
        let (decoded, mut rejected) = decode_batch::<LmsReport>(batch);
        let mut envelopes = Vec::with_capacity(decoded.len());
        for (index, e) in decoded {
            match self.plausibility.check(&e.payload, e.received_at) {
                None => envelopes.push(e),
                Some(detail) => rejected.push(Rejected {
                    index,
                    reason: "implausible_report",
                    detail,
                }),
            }
        }
        let applied = Applied {
            rejected,
            newest_received_at: envelopes.iter().map(|e| e.received_at).max(),
        };
        let ids: Vec<_> = envelopes.iter().map(|e| e.id).collect();
        let received: Vec<_> = envelopes.iter().map(|e| e.received_at).collect();
        let sessions: Vec<_> = envelopes
            .into_iter()
            .map(|e| {
                (
                    e.id,
                    Session::from_report(&e.payload, e.received_at, e.query),
                )
            })
            .collect();

        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let new = store::claim_new(&tx, &ids, &received).await?;
        let decoded = sessions.len();
        // `new` holds each fresh id once; a re-delivery in this same batch carries the same id
        // and must not be applied a second time.
        let applied_count = new.len();
        let mut fresh = new;
        let merged = coalesce(
            sessions
                .into_iter()
                .filter(|(id, _)| fresh.remove(id))
                .map(|(_, s)| s),
        );
        if !merged.is_empty() {
            let written = store::write_sessions(&tx, merged).await?;
            store::refresh_progress(&tx, &written).await?;
        }
        tx.commit().await?;

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
