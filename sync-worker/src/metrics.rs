//! sync-worker's metrics, in the `kollus_sync` namespace.

use kollus_common::kollus::platform::ChangeKind;
use kollus_common::metrics::{counter_vec, histogram, latency_buckets, registry, zeroed};
use kollus_common::worker::LoopMetrics;
use prometheus::{Histogram, IntCounterVec, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// By change kind and outcome (`applied`, `duplicate`); records that do not decode are
    /// counted by the loop's `deadletter_total`.
    pub records: IntCounterVec,
    pub apply_duration: Histogram,
    /// Uploads whose `absent_since` a batch set (`marked`: a sweep confirmed them gone) or
    /// cleared (`cleared`: a later event); alert `KollusCatalogVideosAbsent`.
    pub absences: IntCounterVec,
    pub consume: LoopMetrics,
}

impl Metrics {
    pub fn new() -> Self {
        let r = registry("sync");
        let m = Self {
            records: counter_vec(
                &r,
                "records_total",
                "Platform callbacks consumed, by change kind and outcome.",
                &["kind", "outcome"],
            ),
            apply_duration: histogram(
                &r,
                "apply_duration_seconds",
                "Time to apply one batch to the catalog in PostgreSQL.",
                latency_buckets(),
            ),
            absences: counter_vec(
                &r,
                "absences_total",
                "Uploads the catalog marked absent from Kollus, or cleared, by change.",
                &["change"],
            ),
            consume: LoopMetrics::new(&r),
            registry: r,
        };
        zeroed(&m.absences, &[&["marked"], &["cleared"]]);
        for kind in kollus_common::vocab::labels::<ChangeKind>() {
            zeroed(&m.records, &[&[kind, "applied"], &[kind, "duplicate"]]);
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
    use kollus_common::kollus::platform::ChangeKind;
    use kollus_common::metrics::series;
    use kollus_common::vocab::labels;

    use super::Metrics;

    #[test]
    fn every_change_kind_has_its_series_from_the_start() {
        let held = series(&Metrics::new().records);
        for kind in labels::<ChangeKind>() {
            for outcome in ["applied", "duplicate"] {
                assert!(
                    held.iter()
                        .any(|s| s["kind"] == kind && s["outcome"] == outcome),
                    "{kind} {outcome}: {held:?}"
                );
            }
        }
        assert_eq!(held.len(), 2 * labels::<ChangeKind>().count());
    }
}
