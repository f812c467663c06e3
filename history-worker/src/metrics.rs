//! history-worker's metrics, in the `kollus_history` namespace.

use kollus_common::metrics::{counter, counter_vec, registry, zeroed};
use kollus_common::worker::LoopMetrics;
use prometheus::{IntCounter, IntCounterVec, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// By outcome: `applied`, `duplicate` (envelope applied before), `rejected`.
    pub records: IntCounterVec,
    /// Shard transactions rolled back because a row changed since it was read.
    pub raced: IntCounter,
    pub consume: LoopMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let r = registry("history");
        let m = Self {
            records: counter_vec(
                &r,
                "records_total",
                "LMS reports consumed, by outcome.",
                &["outcome"],
            ),
            raced: counter(
                &r,
                "write_conflicts_total",
                "Shard transactions rolled back and retried because a row changed since it was read (consumers overlapping in a rebalance).",
            ),
            consume: LoopMetrics::new(&r),
            registry: r,
        };
        zeroed(&m.records, &[&["applied"], &["duplicate"], &["rejected"]]);
        zeroed(&m.consume.deadletters, &[&["implausible_report"]]);
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
