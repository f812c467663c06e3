//! token-api's metrics, in the `kollus_token` namespace, and one in the catalog's
//! (`kollus_catalog_unknown_media_total`: token-api is where an unknown video shows) (bottom
//! layer: imports nothing of this crate).

use kollus_common::kollus::binding::Binding;
use kollus_common::kollus::callback_secret::{Generation, SecretName};
use kollus_common::metrics::{
    counter, counter_vec, gauge, histogram_vec, latency_buckets, registry, zeroed,
};
use kollus_common::vocab::labels;
use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{Gauge, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

/// How a token request ended: `issued_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum TokenOutcome {
    Issued,
    Invalid,
    Refused,
    Unauthorized,
    Forbidden,
    Error,
}

/// Why a play or DRM callback got an error instead of a decision:
/// `play_callbacks_refused_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum Undecided {
    BadSecret,
    Invalid,
    Unavailable,
    Error,
    /// The callbacks are turned off (404).
    Off,
}

/// Why a console sign-in was refused: `console_sign_in_failures_total{reason}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case")]
pub enum SignInFailure {
    /// No configured key is the one posted (counts against the client's address).
    UnknownKey,
    /// A configured key without the `console` scope (counts against the client's address).
    NoConsoleScope,
    /// The form's CSRF token is missing, not the cookie's, not signed here, or too old.
    Csrf,
    /// The client's address had used up its failures: refused before any key was compared.
    Limited,
}

#[derive(Clone)]
pub struct Metrics {
    /// The `kollus_token_` metrics (its prefix names every metric registered in it).
    pub registry: Registry,
    /// What `/metrics` serves: `registry`'s metrics and `unknown_media`.
    pub exposition: Registry,
    /// Token requests and play callbacks naming a media content key the catalog does not know,
    /// by `source` (`token`, `play`): the catalog missed what Kollus has (`kollus-catalog sweep`).
    pub unknown_media: IntCounterVec,
    /// Token requests by outcome ([`TokenOutcome`]).
    pub issued: IntCounterVec,
    pub catalog_rejections: IntCounterVec,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    /// Play and DRM callback answers, by `callback:kind`, result (1, 0) and reason.
    pub play_decisions: IntCounterVec,
    /// Play and DRM callbacks not answered with a decision, by callback and why
    /// ([`Undecided`]).
    pub play_refused: IntCounterVec,
    /// Play and DRM callbacks authenticated, by callback, secret and generation.
    pub callback_auth: IntCounterVec,
    /// Play and DRM callbacks whose viewer binding was checked, by callback and verdict.
    pub play_binding: IntCounterVec,
    /// Entitlement grants and revocations.
    pub entitlement_changes: IntCounterVec,
    /// Exports started, by what (`user`, `media`).
    pub exports: IntCounterVec,
    /// Exports refused or ended early, by reason (`busy`: no slot; `stalled`: the client
    /// took no chunk within the deadline; `overtime`: still running at `EXPORT_MAX_SECONDS`;
    /// `failed`: PostgreSQL failed half-way).
    pub exports_unfinished: IntCounterVec,
    /// Console sign-ins refused, by reason ([`SignInFailure`]).
    pub console_sign_in_failures: IntCounterVec,
    /// Access-log rows written, by action (`access_log::record::Action`).
    pub access_log_rows: IntCounterVec,
    /// Access-log rows sealed into their chain, by class.
    pub access_log_sealed: IntCounterVec,
    /// Sealer runs that failed (the cause logged).
    pub access_log_seal_failures: IntCounter,
    /// Unsealed rows the sealer will seal, as last measured.
    pub access_log_unsealed: IntGauge,
    /// The oldest of those rows' age, in seconds.
    pub access_log_oldest_unsealed: Gauge,
    /// When a sealer run last ended without error (unix seconds).
    pub access_log_sealer_last_run: Gauge,
    /// Verifications of the access log, by outcome (`ok`, `broken`, `failed`).
    pub access_log_verifications: IntCounterVec,
    /// Users erased (`POST /v1/users/{id}/erasure`, each request: a repeat counts again).
    pub erasures: IntCounter,
    /// Daily head writes to ARCHIVE_DIR that failed (retried with a growing pause).
    pub access_log_head_failures: IntCounter,
    /// Erasures the erasure topic acknowledged.
    pub erasures_published: IntCounter,
    /// Erasure records an attempt did not publish (Kafka unreachable or not acknowledging; each
    /// retried).
    pub erasure_publish_failures: IntCounter,
    /// Erasures not on the erasure topic yet, as the publisher last counted.
    pub erasures_unpublished: IntGauge,
    /// The oldest of those erasures' age, in seconds (0: none).
    pub erasures_unpublished_oldest: Gauge,
    /// Courses created, replaced or deleted through the API.
    pub course_changes: IntCounterVec,
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
                &format!(
                    "Play and DRM callbacks answered with an error instead of a decision, by callback and reason ({}).",
                    labels::<Undecided>().collect::<Vec<_>>().join(", ")
                ),
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
            course_changes: counter_vec(
                &r,
                "course_changes_total",
                "Courses created, replaced or deleted through the API, by action.",
                &["action"],
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
                "Exports started, by what is exported (user, media, course).",
                &["of"],
            ),
            exports_unfinished: counter_vec(
                &r,
                "exports_unfinished_total",
                "Exports refused for want of a slot (busy), cut for a client that stopped reading (stalled) or at the export's deadline (overtime), or failed half-way (failed).",
                &["reason"],
            ),
            console_sign_in_failures: counter_vec(
                &r,
                "console_sign_in_failures_total",
                &format!(
                    "Console sign-ins refused, by reason ({}); successes are not counted.",
                    labels::<SignInFailure>().collect::<Vec<_>>().join(", ")
                ),
                &["reason"],
            ),
            access_log_rows: counter_vec(
                &r,
                "access_log_rows_total",
                "Rows appended to the access record, by action (api_read: one per key, subject and day).",
                &["action"],
            ),
            access_log_sealed: counter_vec(
                &r,
                "access_log_sealed_total",
                "Access-log rows sealed into their chain, by class (access, rights).",
                &["class"],
            ),
            access_log_seal_failures: counter(
                &r,
                "access_log_seal_failures_total",
                "Runs of the access log's sealer that failed (the cause is logged).",
            ),
            access_log_unsealed: gauge(
                &r,
                "access_log_unsealed_rows",
                "Access-log rows not sealed yet, as the last sealer run saw them.",
            ),
            access_log_oldest_unsealed: float_gauge(
                &r,
                "access_log_oldest_unsealed_seconds",
                "Age of the oldest access-log row not sealed yet, as the last sealer run saw it (0: none).",
            ),
            access_log_sealer_last_run: float_gauge(
                &r,
                "access_log_sealer_last_run_timestamp_seconds",
                "When a run of the access log's sealer last ended without error (unix seconds).",
            ),
            access_log_verifications: counter_vec(
                &r,
                "access_log_verifications_total",
                "Verifications of the access log's chains and heads, by outcome (ok, broken, failed).",
                &["outcome"],
            ),
            erasures: counter(
                &r,
                "erasures_total",
                "Erasure requests applied (a user's rows deleted and data key destroyed; a repeat counts again).",
            ),
            access_log_head_failures: counter(
                &r,
                "access_log_head_failures_total",
                "Writes of the access log's daily head to ARCHIVE_DIR that failed (the cause is logged; retried with a growing pause).",
            ),
            erasures_published: counter(
                &r,
                "erasures_published_total",
                "Erasures the erasure topic (KAFKA_ERASURE_TOPIC) acknowledged.",
            ),
            erasure_publish_failures: counter(
                &r,
                "erasure_publish_failures_total",
                "Erasure records an attempt did not get onto the erasure topic (Kafka unreachable, the topic not created, no acknowledgement; the cause is logged; each is retried).",
            ),
            erasures_unpublished: gauge(
                &r,
                "erasures_unpublished",
                "Erasures applied to the tables but not on the erasure topic yet, as the publisher last counted.",
            ),
            erasures_unpublished_oldest: float_gauge(
                &r,
                "erasures_unpublished_oldest_seconds",
                "Age of the oldest erasure not on the erasure topic yet, as the publisher last saw it (0: none).",
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
        zeroed(&m.exports, &[&["user"], &["media"], &["course"]]);
        zeroed(
            &m.exports_unfinished,
            &[&["busy"], &["stalled"], &["overtime"], &["failed"]],
        );
        zeroed(&m.entitlement_changes, &[&["grant"], &["revoke"]]);
        zeroed(&m.course_changes, &[&["create"], &["replace"], &["delete"]]);
        for callback in ["play", "drm"] {
            for binding in labels::<Binding>() {
                m.play_binding.with_label_values(&[callback, binding]);
            }
            // The secrets a player route takes: its own, and the platform's (counted, warned).
            for secret in [SecretName::Play.label(), SecretName::Platform.label()] {
                for generation in labels::<Generation>() {
                    m.callback_auth
                        .with_label_values(&[callback, secret, generation]);
                }
            }
            for reason in labels::<Undecided>() {
                zeroed(&m.play_refused, &[&[callback, reason]]);
            }
        }
        for reason in labels::<SignInFailure>() {
            zeroed(&m.console_sign_in_failures, &[&[reason]]);
        }
        for outcome in labels::<TokenOutcome>() {
            zeroed(&m.issued, &[&[outcome]]);
        }
        zeroed(&m.catalog_rejections, &[&[Self::CATALOG_CHECK_SKIPPED]]);
        zeroed(&m.access_log_sealed, &[&["access"], &["rights"]]);
        zeroed(
            &m.access_log_verifications,
            &[&["ok"], &["broken"], &["failed"]],
        );
        m
    }

    /// `catalog_rejections_total`'s reason when the catalog could not be asked (`STRICT_CATALOG=on`
    /// issues anyway).
    pub const CATALOG_CHECK_SKIPPED: &str = "check_skipped_catalog_unavailable";

    /// Shows every reason a feature counts from the start (at 0), so a rate over it is defined:
    /// `decisions` (`callback:kind`, result, reason) for `play_decisions_total`, one per playback
    /// reason, and `refusals` for `catalog_rejections_total`. Startup passes the features'
    /// vocabularies in: this bottom layer does not name them.
    pub fn zero_reasons(
        &self,
        decisions: impl IntoIterator<Item = [&'static str; 3]>,
        refusals: impl IntoIterator<Item = &'static str>,
    ) {
        for series in decisions {
            zeroed(&self.play_decisions, &[&series]);
        }
        for reason in refusals {
            zeroed(&self.catalog_rejections, &[&[reason]]);
        }
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

/// A float gauge registered in `r` (seconds, timestamps).
fn float_gauge(r: &Registry, name: &str, help: &str) -> Gauge {
    let g = Gauge::new(name, help).expect("a static metric definition is valid");
    r.register(Box::new(g.clone())).expect("registered once");
    g
}

#[cfg(test)]
mod tests {
    use kollus_common::metrics::series;
    use kollus_common::vocab::labels;

    use super::{Metrics, TokenOutcome, Undecided};
    use crate::playback::policy::Reason;
    use crate::tokens::catalog::Refusal;

    fn values(m: &prometheus::IntCounterVec, label: &str) -> Vec<String> {
        series(m).into_iter().map(|s| s[label].clone()).collect()
    }

    #[test]
    fn every_reason_and_refusal_has_its_series_from_the_start() {
        let m = Metrics::new();
        m.zero_reasons(
            Reason::ALL.iter().map(|r| r.first_series()),
            labels::<Refusal>(),
        );
        let decided = values(&m.play_decisions, "reason");
        for r in Reason::ALL {
            assert!(
                decided.contains(&r.label().to_owned()),
                "{r:?}: {decided:?}"
            );
        }
        assert_eq!(decided.len(), Reason::ALL.len(), "one series each");
        let refused = values(&m.catalog_rejections, "reason");
        for r in labels::<Refusal>().chain([Metrics::CATALOG_CHECK_SKIPPED]) {
            assert!(refused.contains(&r.to_owned()), "{r}: {refused:?}");
        }
    }

    #[test]
    fn a_reason_shows_where_it_arises_with_its_result() {
        let series = |r: Reason| r.first_series();
        assert_eq!(series(Reason::Entitled), ["play:1", "1", "entitled"]);
        assert_eq!(series(Reason::Unbound), ["play:1", "0", "unbound"]);
        assert_eq!(
            series(Reason::DownloadLimitReached),
            ["drm:1", "0", "download_limit_reached"]
        );
        assert_eq!(
            series(Reason::DownloadUnmatched),
            ["drm:2", "1", "download_unmatched"]
        );
    }

    #[test]
    fn every_token_outcome_and_undecided_callback_has_its_series() {
        let m = Metrics::new();
        let mut outcomes = values(&m.issued, "outcome");
        outcomes.sort();
        let mut want: Vec<&str> = labels::<TokenOutcome>().collect();
        want.sort();
        assert_eq!(outcomes, want);
        for callback in ["play", "drm"] {
            let reasons: Vec<String> = series(&m.play_refused)
                .into_iter()
                .filter(|s| s["callback"] == callback)
                .map(|s| s["reason"].clone())
                .collect();
            let mut want: Vec<&str> = labels::<Undecided>().collect();
            want.sort();
            let mut reasons = reasons;
            reasons.sort();
            assert_eq!(reasons, want, "{callback}");
        }
    }

    #[test]
    fn every_binding_verdict_and_secret_generation_has_its_series() {
        let m = Metrics::new();
        for (label, want) in [
            ("binding", vec!["absent", "bound", "mismatch"]),
            ("callback", vec!["drm", "play"]),
        ] {
            let mut got = values(&m.play_binding, label);
            got.sort();
            got.dedup();
            assert_eq!(got, want, "{label}");
        }
        let mut generations = values(&m.callback_auth, "generation");
        generations.sort();
        generations.dedup();
        assert_eq!(generations, ["current", "previous"]);
    }
}
