//! history-worker's metrics, in the `kollus_history` namespace.

use kollus_common::metrics::{counter, counter_vec, histogram, registry, zeroed};
use kollus_common::worker::LoopMetrics;
use prometheus::{Histogram, IntCounter, IntCounterVec, Registry};

use crate::sessions::Ceiling;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// By outcome: `applied` (changed its session), `duplicate` (changed nothing: delivered
    /// again, or older than what the session holds), `rejected`.
    pub records: IntCounterVec,
    /// From ingest's receipt of a report to the commit that applied it.
    pub applied_lag: Histogram,
    /// Shard transactions rolled back because a row changed since it was read.
    pub raced: IntCounter,
    /// Reports dropped because their user was erased after ingest received them.
    pub erased: IntCounter,
    pub consume: LoopMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let r = registry("history");
        let m = Self {
            records: counter_vec(
                &r,
                "records_total",
                "LMS reports consumed, by outcome: applied (changed its session), duplicate (changed nothing), rejected.",
                &["outcome"],
            ),
            applied_lag: histogram(
                &r,
                "applied_lag_seconds",
                "Seconds from ingest receiving an LMS report to the commit of the transaction that applied it (reports that changed nothing included).",
                prometheus::exponential_buckets(0.01, 2.0, 16).expect("static buckets"),
            ),
            raced: counter(
                &r,
                "write_conflicts_total",
                "Shard transactions rolled back and retried because a row changed since it was read (consumers overlapping in a rebalance).",
            ),
            erased: counter(
                &r,
                "reports_erased_total",
                "LMS reports dropped, never applied, because their user was erased after ingest received them (the erasure barrier).",
            ),
            consume: LoopMetrics::new(&r),
            registry: r,
        };
        zeroed(&m.records, &[&["applied"], &["duplicate"], &["rejected"]]);
        // Each ceiling a report can be refused for (the other reasons are the loop's own).
        for c in Ceiling::ALL {
            zeroed(&m.consume.deadletters, &[&[c.reason()]]);
        }
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use kollus_common::metrics::series;

    use super::Metrics;
    use crate::sessions::Ceiling;

    #[test]
    fn every_ceiling_has_its_dead_letter_series_from_the_start() {
        let held: Vec<String> = series(&Metrics::new().consume.deadletters)
            .into_iter()
            .map(|s| s["reason"].clone())
            .collect();
        for c in Ceiling::ALL {
            assert!(held.contains(&c.reason().to_owned()), "{c:?}: {held:?}");
        }
    }
}
