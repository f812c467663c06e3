//! token-api's metrics, in the `kollus_token` namespace, and one in the catalog's
//! (`kollus_catalog_unknown_media_total`: token-api is where an unknown video shows) (bottom
//! layer: imports nothing of this crate).

use kollus_common::metrics::{counter_vec, histogram_vec, latency_buckets, registry, zeroed};
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{HistogramVec, IntCounterVec, Opts, Registry};

#[derive(Clone)]
pub struct Metrics {
    /// The `kollus_token_` metrics (its prefix names every metric registered in it).
    pub registry: Registry,
    /// What `/metrics` serves: `registry`'s metrics and `unknown_media`.
    pub exposition: Registry,
    /// Token requests and play callbacks naming a media content key the catalog does not know,
    /// by `source` (`token`, `play`): the catalog missed what Kollus has (`kollus-catalog sweep`).
    pub unknown_media: IntCounterVec,
    /// Token requests by outcome: `issued`, `invalid`, `refused`, `unauthorized`, `forbidden`, `error`.
    pub issued: IntCounterVec,
    pub catalog_rejections: IntCounterVec,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    /// Play and DRM callback answers, by `callback:kind`, result (1, 0) and reason.
    pub play_decisions: IntCounterVec,
    /// Play and DRM callbacks not answered with a decision, by callback and why.
    pub play_refused: IntCounterVec,
    /// Play and DRM callbacks authenticated, by callback, secret and generation.
    pub callback_auth: IntCounterVec,
    /// Play and DRM callbacks whose viewer binding was checked, by callback and verdict.
    pub play_binding: IntCounterVec,
    /// Entitlement grants and revocations.
    pub entitlement_changes: IntCounterVec,
    /// Exports started, by what (`user`, `media`).
    pub exports: IntCounterVec,
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
            play_decisions: counter_vec(
                &r,
                "play_decisions_total",
                "Answers to Kollus's play and DRM callbacks, by callback:kind, result (1 allowed, 0 refused) and reason.",
                &["kind", "result", "reason"],
            ),
            play_refused: counter_vec(
                &r,
                "play_callbacks_refused_total",
                "Play and DRM callbacks answered with an error instead of a decision, by callback and reason (bad_secret, invalid, unavailable, error, off).",
                &["callback", "reason"],
            ),
            callback_auth: counter_vec(
                &r,
                "callback_auth_total",
                "Play and DRM callbacks authenticated, by callback, the secret that opened it (play, platform) and its generation (current, previous): secret=\"platform\" means a viewer-held URL carries the platform secret; generation=\"previous\" at 0 means a rotation's old value can go.",
                &["callback", "secret", "generation"],
            ),
            play_binding: counter_vec(
                &r,
                "play_binding_total",
                "Play callbacks and DRM items whose viewer binding was checked, by callback and what it said (bound, absent, mismatch); PLAYER_BINDING=require answers all but bound from no facts.",
                &["callback", "binding"],
            ),
            entitlement_changes: counter_vec(
                &r,
                "entitlement_changes_total",
                "Entitlements granted or revoked through the API.",
                &["action"],
            ),
            exports: counter_vec(
                &r,
                "exports_total",
                "Exports started, by what is exported (user, media).",
                &["of"],
            ),
            unknown_media: IntCounterVec::new(
                Opts::new(
                    "unknown_media_total",
                    "Token requests (strict catalog on) and play callbacks naming a media content key the catalog does not know, by source (token, play).",
                )
                .namespace("kollus_catalog"),
                &["source"],
            )
            .expect("a static metric definition is valid"),
            exposition: Registry::new(),
            registry: r,
        };
        m.exposition
            .register(Box::new(Gathered(m.registry.clone())))
            .expect("registered once");
        m.exposition
            .register(Box::new(m.unknown_media.clone()))
            .expect("registered once");
        zeroed(&m.unknown_media, &[&["token"], &["play"]]);
        zeroed(&m.exports, &[&["user"], &["media"]]);
        zeroed(&m.entitlement_changes, &[&["grant"], &["revoke"]]);
        for callback in ["play", "drm"] {
            for binding in ["bound", "absent", "mismatch"] {
                m.play_binding.with_label_values(&[callback, binding]);
            }
            for secret in ["play", "platform"] {
                for generation in ["current", "previous"] {
                    m.callback_auth
                        .with_label_values(&[callback, secret, generation]);
                }
            }
            zeroed(
                &m.play_refused,
                &[
                    &[callback, "bad_secret"],
                    &[callback, "invalid"],
                    &[callback, "unavailable"],
                    &[callback, "error"],
                ],
            );
        }
        zeroed(
            &m.play_decisions,
            &[
                &["play:1", "1", "entitled"],
                &["play:1", "0", "no_entitlement"],
                &["play:1", "0", "expired"],
                &["play:1", "0", "playtime_used_up"],
                &["drm:2", "1", "download_counted"],
                // Completions no approval of ours issued: forged, or an approval we lost.
                &["drm:2", "1", "download_unmatched"],
            ],
        );
        zeroed(
            &m.issued,
            &[
                &["issued"],
                &["invalid"],
                &["refused"],
                &["unauthorized"],
                &["forbidden"],
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
        m
    }

    /// Shows each route's requests from the start (at 0), so a rate over them is defined.
    pub fn zero_routes<'a>(&self, routes: impl IntoIterator<Item = &'a str>) {
        for route in routes {
            zeroed(&self.requests, &[&[route, "200"]]);
        }
    }
}

/// A registry's metrics, as gathered (its prefix applied), inside another registry: the
/// `kollus_token_` registry inside the unprefixed one `/metrics` serves.
struct Gathered(Registry);

impl Collector for Gathered {
    /// None: the inner registry checked its own; the outer one merges families by name.
    fn desc(&self) -> Vec<&Desc> {
        Vec::new()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        self.0.gather()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
