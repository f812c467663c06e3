//! kollus-archive's metrics, in the `kollus_archive` namespace.

use kollus_common::metrics::{counter, counter_vec, gauge, gauge_vec, registry, zeroed};

#[derive(Clone)]
pub struct Metrics {
    pub registry: prometheus::Registry,
    pub records: prometheus::IntCounterVec,
    pub segments: prometheus::IntCounter,
    pub bytes: prometheus::IntCounter,
    pub open_records: prometheus::IntGauge,
    pub last_segment_unix: prometheus::IntGauge,
    pub errors: prometheus::IntCounter,
    pub lag_seconds: prometheus::IntGauge,
    pub retention_seconds: prometheus::IntGauge,
    pub covered_until: prometheus::IntGauge,
    pub progress_done: prometheus::IntGaugeVec,
    pub progress_total: prometheus::IntGaugeVec,
    pub restore_past_retention: prometheus::IntCounterVec,
    pub sealed: prometheus::IntCounter,
    pub placeholders: prometheus::IntCounter,
    pub keys_destroyed: prometheus::IntCounter,
    pub unattributed_expired: prometheus::IntCounter,
}

impl Metrics {
    pub fn new() -> Self {
        let r = registry("archive");
        let m = Self {
            records: counter_vec(
                &r,
                "records_total",
                "Records written to closed, durable segments, by topic.",
                &["topic"],
            ),
            segments: counter(&r, "segments_total", "Segments closed and written."),
            bytes: counter(&r, "bytes_total", "Compressed bytes written."),
            open_records: gauge(
                &r,
                "open_records",
                "Records in segments not closed yet (their offsets are not committed).",
            ),
            last_segment_unix: gauge(
                &r,
                "last_segment_timestamp_seconds",
                "When the last segment was written (Unix seconds).",
            ),
            errors: counter(
                &r,
                "write_errors_total",
                "Segment writes that failed and were retried.",
            ),
            lag_seconds: gauge(
                &r,
                "lag_seconds",
                "Age of the oldest record read but not yet in a durable segment (now minus its Kafka timestamp); 0 when none waits. Grows while writes fail or the archive falls behind.",
            ),
            retention_seconds: gauge(
                &r,
                "topic_retention_seconds",
                "The retention the topics are created with (KAFKA_RETENTION_DAYS), in seconds; -1 for infinite. A record not archived within it is lost.",
            ),
            covered_until: gauge(
                &r,
                "covered_until_timestamp_seconds",
                "Kafka timestamp of the newest record in a closed segment written by this process (Unix seconds).",
            ),
            progress_done: gauge_vec(
                &r,
                "progress_done",
                "Units done by a one-shot operation (dump --until-end, verify, restore).",
                &["operation"],
            ),
            progress_total: gauge_vec(
                &r,
                "progress_total",
                "Units a one-shot operation has to do.",
                &["operation"],
            ),
            restore_past_retention: counter_vec(
                &r,
                "restore_past_retention_records_total",
                "Records `restore --timestamps original` produced with a timestamp already older than their topic's retention.ms (read from the brokers): Kafka deletes them at its next retention check. Always 0 with the default `--timestamps now`.",
                &["topic"],
            ),
            sealed: counter(
                &r,
                "records_sealed_total",
                "Records naming a subject written sealed under the subject's key (in frames).",
            ),
            placeholders: counter(
                &r,
                "placeholders_total",
                "Records an erasure reached before they were written: archived as placeholders (tag and offset only).",
            ),
            keys_destroyed: counter(
                &r,
                "keys_destroyed_total",
                "Subject key generations destroyed in this location by erasures.",
            ),
            unattributed_expired: counter(
                &r,
                "unattributed_keys_expired_total",
                "Unattributed dead letters' day keys destroyed after ARCHIVE_UNATTRIBUTED_DAYS.",
            ),
            registry: r,
        };
        for topic in [
            kollus_common::settings::CONTENT_TOPIC,
            kollus_common::settings::PLAYBACK_TOPIC,
            kollus_common::settings::DEADLETTER_TOPIC,
        ] {
            zeroed(&m.records, &[&[topic]]);
            zeroed(&m.restore_past_retention, &[&[topic]]);
        }
        m
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// A long operation's progress, kept in `progress_{done,total}{operation}` when `metrics` is
/// given (the continuous and one-off commands serve them).
pub fn progress_of(
    metrics: Option<&Metrics>,
    operation: &'static str,
    unit: &'static str,
    total: u64,
) -> kollus_common::progress::Progress {
    let p = kollus_common::progress::Progress::new(operation, unit, total);
    match metrics {
        Some(m) => p.with_gauges(
            m.progress_done.with_label_values(&[operation]),
            m.progress_total.with_label_values(&[operation]),
        ),
        None => p,
    }
}
