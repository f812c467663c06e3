//! ingest's metrics, in the `kollus_ingest` namespace.

use kollus_common::kollus::binding::Binding;
use kollus_common::kollus::callback_secret::{Generation, SecretName};
use kollus_common::kollus::lms::checksum::HashVerdict;
use kollus_common::metrics::{
    counter, counter_vec, gauge, histogram, histogram_vec, latency_buckets, registry,
};
use prometheus::{Histogram, HistogramVec, IntCounter, IntCounterVec, IntGauge, Registry};

use crate::routes::error::Refusal;

#[derive(Clone)]
pub struct Metrics {
    pub registry: Registry,
    pub requests: IntCounterVec,
    pub request_duration: HistogramVec,
    pub kafka_produce_duration: Histogram,
    pub deadletters: IntCounterVec,
    pub lms_hash: IntCounterVec,
    pub callback_auth: IntCounterVec,
    pub lms_binding: IntCounterVec,
    pub spooled: IntCounter,
    pub forwarded: IntCounter,
    pub spooled_records: IntGauge,
    pub spool_bytes: IntGauge,
    pub spool_limit_bytes: IntGauge,
    pub ready: IntGauge,
}

impl Metrics {
    pub fn new() -> Self {
        let r = registry("ingest");
        let m = Self {
            requests: counter_vec(
                &r,
                "requests_total",
                "Callback requests answered, by route and HTTP status.",
                &["route", "status"],
            ),
            request_duration: histogram_vec(
                &r,
                "request_duration_seconds",
                "Time to answer a callback request, by route.",
                &["route"],
                latency_buckets(),
            ),
            kafka_produce_duration: histogram(
                &r,
                "kafka_produce_duration_seconds",
                "Time for Kafka to acknowledge one record.",
                latency_buckets(),
            ),
            deadletters: counter_vec(
                &r,
                "deadletter_total",
                "Requests sent to the dead-letter topic, by reason.",
                &["reason"],
            ),
            lms_hash: counter_vec(
                &r,
                "lms_hash_total",
                "LMS reports whose hash was checked, by verdict (verified, mismatch, absent).",
                &["verdict"],
            ),
            callback_auth: counter_vec(
                &r,
                "callback_auth_total",
                "Callbacks authenticated, by route, the secret that opened it (platform, lms) and \
                 its generation (current, previous): secret=\"platform\" on route=\"lms\" means \
                 a viewer-held URL carries the platform secret; generation=\"previous\" at 0 \
                 means a rotation's old value can go.",
                &["route", "secret", "generation"],
            ),
            lms_binding: counter_vec(
                &r,
                "lms_binding_total",
                "LMS reports whose viewer binding was checked, by what it said (bound, absent, mismatch); PLAYER_BINDING=require refuses all but bound.",
                &["binding"],
            ),
            spooled: counter(
                &r,
                "spooled_total",
                "Records written to the spool because Kafka could not take them in time.",
            ),
            forwarded: counter(&r, "forwarded_total", "Spooled records forwarded to Kafka."),
            spooled_records: gauge(&r, "spooled_records", "Records in the spool now."),
            spool_bytes: gauge(&r, "spool_bytes", "Bytes in the spool now."),
            spool_limit_bytes: gauge(
                &r,
                "spool_limit_bytes",
                "Most bytes the spool may hold (INGEST_SPOOL_LIMIT_BYTES); past it ingest answers 503.",
            ),
            ready: gauge(
                &r,
                "ready",
                "1 while Kafka takes records directly and the spool has room (as /readyz), else 0.",
            ),
            registry: r,
        };
        // Known label values exist at 0 from the start, so rates and alerts see them at once.
        for verdict in HashVerdict::ALL {
            m.lms_hash.with_label_values(&[verdict.as_str()]);
        }
        for binding in Binding::ALL {
            m.lms_binding.with_label_values(&[binding.as_str()]);
        }
        for reason in Refusal::dead_letter_reasons() {
            m.deadletters.with_label_values(&[reason]);
        }
        for kind in kollus_common::kollus::CallbackKind::ALL {
            for status in ["200", "400", "401", "503"] {
                m.requests.with_label_values(&[kind.as_str(), status]);
            }
            for generation in Generation::ALL {
                m.callback_auth.with_label_values(&[
                    kind.as_str(),
                    SecretName::Platform.label(),
                    generation.label(),
                ]);
                if kind == kollus_common::kollus::CallbackKind::Lms {
                    m.callback_auth.with_label_values(&[
                        kind.as_str(),
                        SecretName::Lms.label(),
                        generation.label(),
                    ]);
                }
            }
        }
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
