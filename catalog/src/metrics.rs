//! kollus-catalog's metrics, in the `kollus_catalog` namespace, served on `LISTEN_ADDR` while a
//! backfill or sweep runs.

use kollus_common::metrics::{
    counter_vec, gauge_vec, histogram, latency_buckets, registry, zeroed,
};
use prometheus::{Histogram, IntCounterVec, IntGaugeVec, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Requests to Kollus's API by outcome (`ok`, `rate_limited`, `server_error`, ...).
    pub requests: IntCounterVec,
    pub request_duration: Histogram,
    /// `state`: `done` or `total` requests of the running scan.
    pub progress: IntGaugeVec,
    /// Snapshots published, by what they say (`found`, `absent`).
    pub snapshots: IntCounterVec,
    /// Differences a sweep found and corrected, by kind.
    pub differences: IntCounterVec,
}

pub const OUTCOMES: &[&str] = &[
    "ok",
    "not_found",
    "rate_limited",
    "server_error",
    "transport_error",
    "unauthorized",
    "refused",
    "bad_shape",
];

impl Metrics {
    pub fn new() -> Self {
        let r = registry("catalog");
        let m = Self {
            requests: counter_vec(
                &r,
                "requests_total",
                "Requests to Kollus's REST API, by outcome.",
                &["outcome"],
            ),
            request_duration: histogram(
                &r,
                "request_duration_seconds",
                "Time for one request to Kollus's REST API.",
                latency_buckets(),
            ),
            progress: gauge_vec(
                &r,
                "progress_requests",
                "Requests of the running scan: done, and the total the answers so far imply.",
                &["state"],
            ),
            snapshots: counter_vec(
                &r,
                "snapshots_published_total",
                "Snapshot events published to the content topic.",
                &["found"],
            ),
            differences: counter_vec(
                &r,
                "differences_total",
                "Differences between Kollus's API and the catalog a sweep corrected, by kind.",
                &["kind"],
            ),
            registry: r,
        };
        let outcomes: Vec<[&str; 1]> = OUTCOMES.iter().map(|o| [*o]).collect();
        let outcomes: Vec<&[&str]> = outcomes.iter().map(|o| &o[..]).collect();
        zeroed(&m.requests, &outcomes);
        zeroed(&m.snapshots, &[&["found"], &["absent"]]);
        m
    }
}

impl Metrics {
    /// A scan's progress in requests, kept in `progress_requests{state}`.
    pub fn progress(&self, operation: &'static str) -> kollus_common::progress::Progress {
        kollus_common::progress::Progress::new(operation, "requests", 0).with_gauges(
            self.progress.with_label_values(&["done"]),
            self.progress.with_label_values(&["total"]),
        )
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
