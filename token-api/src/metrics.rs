//! token-api's metrics, in the `kollus_token` namespace.

use kollus_common::metrics::{counter_vec, histogram_vec, latency_buckets, registry, zeroed};
use prometheus::{HistogramVec, IntCounterVec, Registry};

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    /// Token requests by outcome: `issued`, `invalid`, `refused`, `unauthorized`, `error`.
    pub issued: IntCounterVec,
    pub catalog_rejections: IntCounterVec,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
}

impl Metrics {
    pub fn new() -> Self {
        let r = registry("token");
        let m = Self {
            issued: counter_vec(
                &r,
                "issued_total",
                "Playback token requests, by outcome.",
                &["outcome"],
            ),
            catalog_rejections: counter_vec(
                &r,
                "catalog_rejections_total",
                "Videos refused by the strict catalog check, by reason.",
                &["reason"],
            ),
            requests: counter_vec(
                &r,
                "requests_total",
                "HTTP requests, by route pattern and status.",
                &["route", "status"],
            ),
            request_duration: histogram_vec(
                &r,
                "request_duration_seconds",
                "Time to answer an HTTP request, by route pattern.",
                &["route"],
                latency_buckets(),
            ),
            registry: r,
        };
        zeroed(
            &m.issued,
            &[
                &["issued"],
                &["invalid"],
                &["refused"],
                &["unauthorized"],
                &["error"],
            ],
        );
        zeroed(
            &m.catalog_rejections,
            &[
                &["deleted"],
                &["in_no_channel"],
                &["unknown"],
                &["check_skipped_catalog_unavailable"],
            ],
        );
        for (route, _, _) in crate::routes::api_routes() {
            zeroed(&m.requests, &[&[route, "200"]]);
        }
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
