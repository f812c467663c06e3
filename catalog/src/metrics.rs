//! kollus-catalog's metrics, in the `kollus_catalog` namespace, served on `LISTEN_ADDR` while a
//! backfill or sweep runs.

use kollus_common::metrics::{
    counter_vec, gauge_vec, histogram, latency_buckets, registry, zeroed,
};
use prometheus::{Histogram, IntCounterVec, IntGaugeVec, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Requests to Kollus's API by [`Outcome`].
    pub requests: IntCounterVec,
    pub request_duration: Histogram,
    /// `state`: `done` or `total` requests of the running scan.
    pub progress: IntGaugeVec,
    /// Snapshots published, by what they say (`found`, `absent`).
    pub snapshots: IntCounterVec,
    /// Differences a sweep found and corrected, by kind.
    pub differences: IntCounterVec,
}

/// How a request to Kollus's API ended: `requests_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Outcome {
    Ok,
    NotFound,
    RateLimited,
    ServerError,
    TransportError,
    Unauthorized,
    Refused,
    BadShape,
}

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
        for outcome in kollus_common::vocab::labels::<Outcome>() {
            zeroed(&m.requests, &[&[outcome]]);
        }
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

#[cfg(test)]
mod tests {
    use kollus_common::metrics::series;
    use kollus_common::vocab::labels;

    use super::{Metrics, Outcome};

    #[test]
    fn every_request_outcome_has_its_series_from_the_start() {
        let mut held: Vec<String> = series(&Metrics::new().requests)
            .into_iter()
            .map(|s| s["outcome"].clone())
            .collect();
        held.sort();
        let mut want: Vec<&str> = labels::<Outcome>().collect();
        want.sort();
        assert_eq!(held, want);
        assert_eq!(want.len(), 8);
    }
}
