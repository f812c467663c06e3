//! The one retry of a worker's apply, shared by the consume loop and by `--rebuild`'s replay of
//! the archive: a transient failure (database away) is waited out with backoff, forever, so
//! nothing is skipped; a permanent one is narrowed down record by record, and only a record the
//! database refuses alone is rejected.

use super::apply::{Applied, Apply, ApplyError, Record, Rejected};
use crate::backoff::Backoff;

/// What a caller hears of the retries: `Waiting` before each wait, `Applied` once the records
/// applied (the consume loop's readiness and retry counter).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Attempt {
    Waiting,
    Applied,
}

/// Applies `records` (never empty) as [`super::ConsumeLoop`] and `--rebuild` both do. Returns
/// what applied, with the records refused (`refused_by_database` for one refused alone).
pub(super) async fn apply_with_retry<A: Apply>(
    apply: &A,
    records: &[Record<A::Payload>],
    observe: &(dyn Fn(Attempt) + Sync),
) -> Applied {
    let mut backoff = Backoff::worker();
    loop {
        match apply.apply(records).await {
            Ok(applied) => {
                observe(Attempt::Applied);
                return applied;
            }
            Err(ApplyError::Permanent(e)) if records.len() > 1 => {
                tracing::warn!(error = %e, records = records.len(), "records refused; applying them one by one");
                let mut all = Applied::default();
                for record in records {
                    let one = Box::pin(apply_with_retry(
                        apply,
                        std::slice::from_ref(record),
                        observe,
                    ));
                    all.rejected.extend(one.await.rejected);
                }
                return all;
            }
            Err(ApplyError::Permanent(e)) => {
                return Applied {
                    rejected: vec![Rejected {
                        index: records[0].index,
                        reason: "refused_by_database",
                        detail: format!("{e:#}"),
                    }],
                }
            }
            Err(ApplyError::Transient(e)) => {
                observe(Attempt::Waiting);
                tracing::warn!(error = %e, records = records.len(), retry_in = ?backoff.next_delay(), "applying records failed; will retry");
                backoff.wait().await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::worker::Delivered;

    /// A database that is away for its first `away` calls, then refuses payload 13 (alone or in
    /// a batch) and applies the rest; it remembers every batch it was given.
    struct Database {
        away: Mutex<u32>,
        calls: Mutex<Vec<Vec<u32>>>,
    }

    impl Apply for Database {
        type Payload = u32;

        async fn apply(&self, batch: &[Record<u32>]) -> Result<Applied, ApplyError> {
            let payloads: Vec<u32> = batch.iter().map(|r| r.envelope.payload).collect();
            self.calls.lock().unwrap().push(payloads.clone());
            let mut away = self.away.lock().unwrap();
            if *away > 0 {
                *away -= 1;
                return Err(ApplyError::Transient(anyhow::anyhow!("database away")));
            }
            if payloads.contains(&13) {
                return Err(ApplyError::Permanent(anyhow::anyhow!("13 refused")));
            }
            Ok(Applied::default())
        }

        async fn reset(&self) -> Result<(), ApplyError> {
            Ok(())
        }
    }

    fn record(index: usize, payload: u32) -> Record<u32> {
        Record {
            index,
            envelope: Delivered {
                id: uuid::Uuid::now_v7(),
                kind: crate::kollus::CallbackKind::Lms,
                schema_version: 1,
                received_at: time::OffsetDateTime::UNIX_EPOCH,
                source_ip: None,
                query: Default::default(),
                form: Default::default(),
                lms_hash: None,
                binding: None,
                payload,
            },
        }
    }

    #[tokio::test(start_paused = true)]
    async fn waits_out_the_database_then_rejects_only_the_record_it_refuses_alone() {
        let db = Database {
            away: Mutex::new(2),
            calls: Mutex::new(Vec::new()),
        };
        let heard = Mutex::new(Vec::new());
        let records = [record(4, 1), record(5, 13), record(6, 2)];
        let applied = apply_with_retry(&db, &records, &|a| heard.lock().unwrap().push(a)).await;
        let rejected: Vec<_> = applied
            .rejected
            .iter()
            .map(|r| (r.index, r.reason))
            .collect();
        assert_eq!(rejected, [(5, "refused_by_database")]);
        assert_eq!(
            *db.calls.lock().unwrap(),
            [
                vec![1, 13, 2],
                vec![1, 13, 2],
                vec![1, 13, 2],
                vec![1],
                vec![13],
                vec![2]
            ],
            "the same batch until the database is back, then one by one"
        );
        use Attempt::{Applied as A, Waiting as W};
        assert_eq!(*heard.lock().unwrap(), [W, W, A, A]);
    }
}
