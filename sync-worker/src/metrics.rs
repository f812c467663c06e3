//! sync-worker's metrics, in the `kollus_sync` namespace.

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
        for kind in [
            "uploaded",
            "transcoded",
            "channel_join",
            "channel_leave",
            "content_delete",
            "content_poster",
            "other_update",
            "snapshot",
        ] {
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
