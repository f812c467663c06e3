//! Applying a batch of LMS reports. Split by (user, video) into `HISTORY_WRITE_SHARDS` shards;
//! per shard, in one transaction:
//!
//! 1. read the stored sessions the shard touches, with their versions;
//! 2. merge in Rust: each report into its session (`sessions.rs`);
//! 3. write back only the sessions that changed (`store.rs`): update what was stored, if still
//!    at the version read; insert what was not.
//!
//! One row write per changed session, and nothing else: the per-(user, video) rollup is a view
//! over the sessions (`watch_progress`, migrations/V12).
//!
//! Exactly-once effect comes from the merge itself: it is a join (maxima, ORs, minima), so a
//! report applied again, late or in another batch changes nothing, and no table remembers which
//! reports it has seen. A report that changed nothing is counted as a duplicate.
//!
//! Should another transaction have written one of those rows in between (two consumers
//! overlapping in a rebalance), the shard is rolled back and the batch retried: it then reads
//! them anew.
//!
//! Erasures (README "Erasing a user"): before step 1, the shard takes the subject lock of each
//! of its users, shared (`common::subject::lock_subjects_shared`; token-api's erasure takes it
//! exclusively), and reads those users' erasure barrier (`erasure_barrier`, V27). A report
//! received before its user's latest erasure is dropped, never applied (counted in
//! `kollus_history_reports_erased_total`, logged by subject tag); one received after it applies
//! as any other (a returning user). An erasure under way therefore either finished before the
//! shard read anything (and the shard sees its barrier) or waits for the shard to commit (and
//! deletes what the shard wrote).

use std::collections::HashMap;
use std::hash::{Hash as _, Hasher as _};

use deadpool_postgres::Pool;
use kollus_common::kollus::lms::LmsReport;
use kollus_common::subject::{lock_subjects_shared, SubjectTag, Tagger};
use kollus_common::worker::{Applied, Apply, ApplyError, Record, Rejected};
use time::OffsetDateTime;

use crate::metrics::Metrics;
use crate::sessions::{Plausibility, Session, SessionKey};
use crate::store::{self, Raced, SessionRow, SessionRowExt as _, Version, Write};

pub struct History {
    pub pool: Pool,
    pub metrics: Metrics,
    pub plausibility: Plausibility,
    /// Transactions one batch is written in, side by side (`HISTORY_WRITE_SHARDS`).
    pub write_shards: usize,
    /// Tags each report's user (`SUBJECT_TAG_KEY_FILE`), for the erasure barrier.
    pub tagger: Tagger,
}

/// A report ready to apply: its user's subject tag, when ingest received it and the session it
/// describes.
struct Report {
    tag: SubjectTag,
    received_at: OffsetDateTime,
    session: Session,
}

/// What one shard did: reports that changed their session, reports taken (erased ones not
/// counted), and reports dropped because their user was erased after they were received.
struct ShardCounts {
    applied: usize,
    taken: usize,
    erased: usize,
}

/// Each subject's latest erasure, among `tags`.
async fn read_barrier(
    tx: &deadpool_postgres::Transaction<'_>,
    tags: &[&str],
) -> Result<HashMap<String, OffsetDateTime>, tokio_postgres::Error> {
    read_barrier_with(&**tx, tags).await
}

/// [`read_barrier`] on any client.
async fn read_barrier_with(
    client: &impl tokio_postgres::GenericClient,
    tags: &[&str],
) -> Result<HashMap<String, OffsetDateTime>, tokio_postgres::Error> {
    let rows = client
        .query(
            "SELECT subject_tag, erased_at FROM erasure_barrier WHERE subject_tag = ANY($1)",
            &[&tags],
        )
        .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?)))
        .collect()
}

/// Splits `reports` into those to apply and, per subject tag, how many were received before
/// that subject's erasure in `barrier` (never to apply).
fn drop_erased<R>(
    reports: Vec<R>,
    barrier: &HashMap<String, OffsetDateTime>,
    of: impl Fn(&R) -> (&str, OffsetDateTime),
) -> (Vec<R>, Vec<(String, usize)>) {
    if barrier.is_empty() {
        return (reports, Vec::new());
    }
    let mut erased: HashMap<String, usize> = HashMap::new();
    let kept = reports
        .into_iter()
        .filter(|r| {
            let (tag, received_at) = of(r);
            let gone = barrier.get(tag).is_some_and(|at| received_at < *at);
            if gone {
                *erased.entry(tag.to_owned()).or_default() += 1;
            }
            !gone
        })
        .collect();
    let mut erased: Vec<(String, usize)> = erased.into_iter().collect();
    erased.sort_unstable();
    (kept, erased)
}

/// Merges a shard's reports into its stored sessions (as read, with their versions). Returns
/// the sessions that changed, in key order (so concurrent writers lock rows in the same order),
/// each with its version as read (`None`: new), and how many reports changed one. Pure: the
/// worker and the property tests run the same code.
pub fn merge_shard(
    stored: HashMap<SessionKey, (Session, Version)>,
    reports: impl IntoIterator<Item = Session>,
) -> (Vec<(Session, Option<Version>)>, usize) {
    // (the session as merged so far, its version as read, whether a report changed it)
    let mut merging: HashMap<SessionKey, (Session, Option<Version>, bool)> = stored
        .into_iter()
        .map(|(key, (session, version))| (key, (session, Some(version), false)))
        .collect();
    let mut applied = 0;
    for s in reports {
        if let Some((session, _, changed)) = merging.get_mut(&s.key) {
            if session.merge(s) {
                *changed = true;
                applied += 1;
            }
        } else {
            applied += 1;
            merging.insert(s.key.clone(), (s, None, true));
        }
    }
    let mut changed: Vec<(Session, Option<Version>)> = merging
        .into_values()
        .filter(|(_, _, changed)| *changed)
        .map(|(session, version, _)| (session, version))
        .collect();
    changed.sort_unstable_by(|a, b| a.0.key.cmp(&b.0.key));
    (changed, applied)
}

impl History {
    /// Applies one shard of a batch in one transaction.
    async fn apply_shard(&self, reports: Vec<Report>) -> Result<ShardCounts, ApplyError> {
        let mut keys: Vec<&SessionKey> = reports.iter().map(|r| &r.session.key).collect();
        keys.sort_unstable();
        keys.dedup();
        let mut tags: Vec<&SubjectTag> = reports.iter().map(|r| &r.tag).collect();
        tags.sort_unstable();
        tags.dedup();
        let tag_names: Vec<&str> = tags.iter().map(|t| t.as_str()).collect();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        // One round trip: the requests are pipelined, and run in this order; the reads start
        // once the subject locks are granted, so they see any erasure committed before.
        let ((), barrier, mut read, ()) = futures_util::future::try_join4(
            lock_subjects_shared(&*tx, tags.iter().copied()),
            read_barrier(&tx, &tag_names),
            store::read_sessions(&tx, &keys),
            store::prepare(&tx),
        )
        .await?;
        let mut stored = HashMap::with_capacity(read.len());
        for k in keys {
            let id = (
                k.client_user_id.as_str().to_owned(),
                k.media_content_key.as_str().to_owned(),
                k.start_at.0,
            );
            if let Some((row, version)) = read.remove(&id) {
                stored.insert(k.clone(), (row.into_session(k.clone()), version));
            }
        }

        let (reports, erased) = drop_erased(reports, &barrier, |r| (r.tag.as_str(), r.received_at));
        for (tag, n) in &erased {
            tracing::info!(
                subject_tag = tag.as_str(),
                reports = n,
                erased_at = %barrier[tag],
                "reports of an erased user, received before the erasure, dropped"
            );
        }
        let erased: usize = erased.iter().map(|(_, n)| n).sum();
        let taken = reports.len();
        let (changed, applied) = merge_shard(stored, reports.into_iter().map(|r| r.session));
        let rows: Vec<_> = changed
            .iter()
            .map(|(s, read_version)| Write {
                row: SessionRow::of(s),
                read_version: *read_version,
            })
            .collect();
        let Raced(raced) = store::write_sessions(&tx, &rows).await?;
        if raced > 0 {
            // Dropping the transaction rolls it back: the retry reads the rows anew.
            self.metrics.raced.inc();
            return Err(ApplyError::Transient(anyhow::anyhow!(
                "{raced} session(s) of this batch were written by another writer since they \
                 were read; retrying"
            )));
        }
        tx.commit().await?;
        Ok(ShardCounts {
            applied,
            taken,
            erased,
        })
    }
}

impl Apply for History {
    type Payload = LmsReport;

    async fn apply(&self, batch: &[Record<LmsReport>]) -> Result<Applied, ApplyError> {
        let mut rejected = Vec::new();
        // Shards by (user, video): no session row is in two shards, so their
        // transactions never wait on each other. Each shard commits on its own; should one fail,
        // the whole batch is retried, and the committed shards' reports change nothing the
        // second time (the merge is idempotent), so the batch still applies exactly once.
        let shards = self.write_shards.max(1);
        let mut parts: Vec<Vec<Report>> = (0..shards).map(|_| Vec::new()).collect();
        // One HMAC per user of the batch, not per report.
        let mut tags: HashMap<&str, SubjectTag> = HashMap::new();
        // Implausible reports, dead-lettered below unless their user was erased after they were
        // received: a dead letter is the whole envelope again, so an erased user's replayed
        // report must not become one.
        let mut implausible: Vec<(usize, SubjectTag, OffsetDateTime, Rejected)> = Vec::new();
        for Record { index, envelope: e } in batch {
            let assessment = match self.plausibility.check(&e.payload, e.received_at) {
                Ok(assessment) => assessment,
                Err(why) => {
                    let user = e.payload.user.client_user_id.as_str();
                    let tag = tags
                        .entry(user)
                        .or_insert_with(|| self.tagger.tag(user))
                        .clone();
                    implausible.push((
                        *index,
                        tag,
                        e.received_at,
                        Rejected {
                            index: *index,
                            reason: why.ceiling.reason(),
                            detail: why.detail,
                        },
                    ));
                    continue;
                }
            };
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (
                e.payload.user.client_user_id.as_str(),
                e.payload.content.media_content_key.as_str(),
            )
                .hash(&mut h);
            let user = e.payload.user.client_user_id.as_str();
            let tag = tags
                .entry(user)
                .or_insert_with(|| self.tagger.tag(user))
                .clone();
            parts[(h.finish() % shards as u64) as usize].push(Report {
                tag,
                received_at: e.received_at,
                session: Session::from_report(
                    &e.payload,
                    e.received_at,
                    e.query.iter().map(|(k, v)| (k.clone(), v.clone())),
                    e.lms_hash,
                    assessment,
                )
                .with_binding(e.binding),
            });
        }
        let mut erased_implausible = 0;
        if !implausible.is_empty() {
            let mut names: Vec<&str> = implausible.iter().map(|(_, t, _, _)| t.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            let client = self.pool.get().await?;
            let barrier = read_barrier_with(&**client, &names).await?;
            for (_, tag, received_at, why) in implausible {
                if barrier
                    .get(tag.as_str())
                    .is_some_and(|at| received_at < *at)
                {
                    tracing::info!(
                        subject_tag = tag.as_str(),
                        "an implausible report of an erased user, received before the erasure, \
                         dropped instead of dead-lettered"
                    );
                    erased_implausible += 1;
                } else {
                    rejected.push(why);
                }
            }
        }
        let received: Vec<OffsetDateTime> = parts.iter().flatten().map(|r| r.received_at).collect();
        let counts = futures_util::future::try_join_all(
            parts
                .into_iter()
                .filter(|p| !p.is_empty())
                .map(|p| self.apply_shard(p)),
        )
        .await?;
        let now = OffsetDateTime::now_utc();
        for at in received {
            self.metrics
                .applied_lag
                .observe((now - at).as_seconds_f64().max(0.0));
        }
        let (applied, taken, erased) = counts.iter().fold((0, 0, 0), |(a, t, x), c| {
            (a + c.applied, t + c.taken, x + c.erased)
        });

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
        m.erased.inc_by((erased + erased_implausible) as u64);
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

#[cfg(test)]
mod tests {
    //! Exactly-once effect by construction: whatever the worker is handed (repeats, any order,
    //! any batching), the rows it writes equal those of each distinct report applied once.

    use std::collections::BTreeSet;

    use kollus_common::kollus::lms::checksum::HashVerdict;
    use proptest::prelude::*;
    use proptest::strategy::ValueTree as _;

    use super::*;
    use crate::sessions::Assessment;

    /// A report of one of a few sessions (2 users x 2 players of one video), with counters,
    /// blocks, segments, descriptive fields and uservalues drawn so that reports disagree.
    fn report() -> impl Strategy<Value = (LmsReport, i64, Option<HashVerdict>, bool)> {
        (
            (0u8..2, 0u8..2, 0u64..500, 0u64..500, 0u64..500, 0u64..200),
            (
                proptest::collection::vec((any::<bool>(), 0u64..60, 0u64..100), 0..5),
                proptest::collection::vec((0u32..4, 0u64..3, 0u64..30), 0..3),
                (
                    proptest::option::of(0u8..3),
                    proptest::option::of(0u8..3),
                    0u8..3,
                ),
            ),
            (
                0i64..100,
                proptest::option::of(prop_oneof![
                    Just(HashVerdict::Verified),
                    Just(HashVerdict::Absent),
                    Just(HashVerdict::Mismatch)
                ]),
                any::<bool>(),
            ),
        )
            .prop_map(
                |(
                    (user, player, playtime, real, runtime, position),
                    (blocks, segments, (device, channel, uservalue)),
                    (received, hash, device_clock),
                )| {
                    let blocks: serde_json::Map<String, serde_json::Value> = blocks
                        .iter()
                        .enumerate()
                        .flat_map(|(i, (b, t, p))| {
                            [
                                (format!("b{i}"), serde_json::json!(u8::from(*b))),
                                (format!("t{i}"), serde_json::json!(t)),
                                (format!("p{i}"), serde_json::json!(p)),
                            ]
                        })
                        .collect();
                    let mut doc = serde_json::json!({
                        "user_info": {"client_user_id": format!("u{user}")},
                        "content_info": {"media_content_key": "m1",
                            "start_at": 1_700_000_000 + i64::from(player),
                            "playtime": playtime, "real_playtime": real, "runtime": runtime,
                            "last_play_at": position},
                        "block_info": {"block_count": blocks.len() / 3, "blocks": blocks,
                            "sessions": segments.iter().map(|(b, s, p)| serde_json::json!(
                                {"block": b, "start_time": s, "play_time": p})).collect::<Vec<_>>()},
                        "uservalues": {"uservalue0": format!("v{uservalue}")},
                    });
                    if let Some(d) = device {
                        doc["user_info"]["device"] = serde_json::json!(format!("device-{d}"));
                    }
                    if let Some(c) = channel {
                        doc["content_info"]["channel_key"] = serde_json::json!(format!("ch{c}"));
                    }
                    let r = LmsReport::from_json(doc.to_string().as_bytes()).unwrap();
                    (r, received, hash, device_clock)
                },
            )
    }

    fn session(
        (r, received, hash, device_clock): &(LmsReport, i64, Option<HashVerdict>, bool),
    ) -> Session {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_100 + received).unwrap();
        let assessment = Assessment {
            device_clock: *device_clock,
        };
        Session::from_report(r, at, [], *hash, assessment)
    }

    /// The rows a store holds after `batches` went through [`merge_shard`] one after another,
    /// each merged with what the store held (versions raised on every write, as `xmin` is).
    fn run(batches: &[Vec<Session>]) -> (Vec<SessionRow>, usize) {
        let mut stored: HashMap<SessionKey, (Session, Version)> = HashMap::new();
        let mut version = 0;
        let mut applied = 0;
        for batch in batches {
            let keys: BTreeSet<&SessionKey> = batch.iter().map(|s| &s.key).collect();
            let read = keys
                .iter()
                .filter_map(|k| Some(((*k).clone(), stored.get(*k)?.clone())))
                .collect();
            let (changed, n) = merge_shard(read, batch.iter().cloned());
            applied += n;
            for (s, read_version) in changed {
                let now = stored.get(&s.key).map(|(_, v)| *v);
                assert_eq!(now, read_version, "written at the version read");
                version += 1;
                stored.insert(s.key.clone(), (s, version));
            }
        }
        let mut sessions: Vec<SessionRow> =
            stored.values().map(|(s, _)| SessionRow::of(s)).collect();
        sessions.sort_by_key(SessionRow::id);
        (sessions, applied)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn any_repeats_order_and_batching_give_each_report_applied_once(
            distinct in proptest::collection::vec(report(), 1..12),
            repeats in proptest::collection::vec(any::<prop::sample::Index>(), 0..12),
            order in any::<u64>(),
            cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..6),
        ) {
            let once: Vec<Session> = distinct.iter().map(session).collect();
            let (want, _) = run(std::slice::from_ref(&once));

            // Every report at least once, some again; shuffled; cut into batches.
            let mut delivered: Vec<Session> = once.clone();
            delivered.extend(repeats.iter().map(|i| once[i.index(once.len())].clone()));
            let mut rng = order;
            for i in (1..delivered.len()).rev() {
                rng = rng.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                delivered.swap(i, (rng >> 33) as usize % (i + 1));
            }
            let mut at: Vec<usize> = cuts.iter().map(|i| i.index(delivered.len() + 1)).collect();
            at.extend([0, delivered.len()]);
            at.sort_unstable();
            let batches: Vec<Vec<Session>> =
                at.windows(2).map(|w| delivered[w[0]..w[1]].to_vec()).collect();

            let (sessions, applied) = run(&batches);
            prop_assert_eq!(&sessions, &want);
            prop_assert!(applied <= once.len(), "{} applied of {} distinct", applied, once.len());

            // Everything delivered again, in one batch: nothing changes, nothing is written.
            let mut replayed = batches.clone();
            replayed.push(delivered.clone());
            let (again, applied_again) = run(&replayed);
            prop_assert_eq!(&again, &want);
            prop_assert_eq!(applied_again, applied, "the replay applied nothing");
        }
    }

    #[test]
    fn reports_received_before_their_users_erasure_are_dropped_and_counted_by_tag() {
        let t = |s| OffsetDateTime::from_unix_timestamp(s).unwrap();
        let barrier = HashMap::from([("a".to_owned(), t(100))]);
        let reports = vec![("a", t(99)), ("a", t(100)), ("b", t(1)), ("a", t(5))];
        let (kept, erased) = drop_erased(reports, &barrier, |r| (r.0, r.1));
        assert_eq!(kept, vec![("a", t(100)), ("b", t(1))]);
        assert_eq!(erased, vec![("a".to_owned(), 2)]);
    }

    #[test]
    fn a_batch_that_changes_nothing_writes_nothing() {
        let r = report();
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let s = session(&r.new_tree(&mut runner).unwrap().current());
        let (first, applied) = merge_shard(HashMap::new(), [s.clone()]);
        assert_eq!((first.len(), applied), (1, 1));
        let stored = HashMap::from([(s.key.clone(), (first[0].0.clone(), 7))]);
        let (again, applied) = merge_shard(stored, [s.clone(), s]);
        assert_eq!((again.len(), applied), (0, 0));
    }
}
