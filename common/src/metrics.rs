//! Prometheus helpers. Each service declares its metrics in one typed struct, registered in its
//! own [`Registry`] under the `kollus_<service>` namespace.

use std::sync::OnceLock;

use actix_web::{web, HttpResponse};
use prometheus::core::Collector;
use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

/// A registry whose metric names all start with `kollus_<service>_`. `/metrics` also serves the
/// process's own metrics beside it ([`process_registry`]), where `kollus_build_info` names the
/// service and its version.
pub fn registry(service: &str) -> Registry {
    build_info()
        .with_label_values(&[service, env!("CARGO_PKG_VERSION")])
        .set(1);
    Registry::new_custom(Some(format!("kollus_{service}")), None)
        .expect("a static namespace is a valid metric prefix")
}

/// Metrics of the process, without a service prefix: `process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_open_fds`, ... (Linux) and `kollus_build_info`.
pub fn process_registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let r = Registry::new();
        #[cfg(target_os = "linux")]
        r.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))
        .expect("the process collector is registered once");
        r
    })
}

/// `kollus_build_info{service,version} 1`: which build answers, for dashboards and alerts.
fn build_info() -> &'static IntGaugeVec {
    static BUILD_INFO: OnceLock<IntGaugeVec> = OnceLock::new();
    BUILD_INFO.get_or_init(|| {
        register(
            process_registry(),
            IntGaugeVec::new(
                Opts::new(
                    "kollus_build_info",
                    "The service and version of this process (always 1).",
                ),
                &["service", "version"],
            ),
        )
    })
}

/// The series a counter holds so far, each as its labels by name: what a test of the series
/// made at start-up reads.
pub fn series(counter: &IntCounterVec) -> Vec<std::collections::BTreeMap<String, String>> {
    counter
        .collect()
        .iter()
        .flat_map(|family| family.get_metric())
        .map(|m| {
            m.get_label()
                .iter()
                .map(|l| (l.name().to_owned(), l.value().to_owned()))
                .collect()
        })
        .collect()
}

/// Creates each listed label combination at 0, so `rate()` panels and alerts see a counter
/// before its first event.
pub fn zeroed(counter: &IntCounterVec, combinations: &[&[&str]]) {
    for labels in combinations {
        counter.with_label_values(labels);
    }
}

// Metric names, help texts and labels are static, and each is registered once at start-up:
// an error here is a programming error, caught by every test that builds the service.
fn register<M: Collector + Clone + 'static>(registry: &Registry, m: prometheus::Result<M>) -> M {
    let m = m.expect("static metric definition is valid");
    registry
        .register(Box::new(m.clone()))
        .expect("metric is registered once");
    m
}

pub fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    register(r, IntCounter::new(name, help))
}

pub fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    register(r, IntCounterVec::new(Opts::new(name, help), labels))
}

pub fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    register(r, IntGauge::new(name, help))
}

pub fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    register(r, IntGaugeVec::new(Opts::new(name, help), labels))
}

pub fn histogram(r: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    register(
        r,
        Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)),
    )
}

pub fn histogram_vec(
    r: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
    buckets: Vec<f64>,
) -> HistogramVec {
    register(
        r,
        HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels),
    )
}

/// Exponential buckets from 0.5 ms to about 16 s: a fast path up to past Kollus's 3 s timeout.
pub fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 16).expect("static bucket layout is valid")
}

/// `GET /metrics` in the Prometheus text format.
pub async fn metrics_endpoint(registry: web::Data<Registry>) -> HttpResponse {
    let mut buf = Vec::new();
    let mut families = registry.gather();
    families.extend(process_registry().gather());
    match TextEncoder::new().encode(&families, &mut buf) {
        Ok(()) => HttpResponse::Ok()
            .content_type(prometheus::TEXT_FORMAT)
            .body(buf),
        Err(e) => HttpResponse::InternalServerError().body(format!("encoding metrics: {e}")),
    }
}

/// The connection pool's state, read from the pool when Prometheus scrapes:
/// `db_pool_connections{state="idle"|"in_use"}`, `db_pool_max_connections` and
/// `db_pool_waiting` (tasks waiting for a connection: the pool is too small or the database slow).
pub fn register_pool(r: &Registry, pool: &deadpool_postgres::Pool) {
    register_pool_as(r, pool, "db_pool");
}

/// [`register_pool`] for a service's second pool, its metrics named `<prefix>_connections`,
/// `<prefix>_max_connections` and `<prefix>_waiting` (token-api's console and exports have
/// pools of their own beside the one the callbacks use).
pub fn register_pool_as(r: &Registry, pool: &deadpool_postgres::Pool, prefix: &str) {
    let gauges = |name: &str, help: &str| IntGauge::new(format!("{prefix}_{name}"), help);
    let collector = PoolCollector {
        pool: pool.clone(),
        connections: IntGaugeVec::new(
            Opts::new(
                format!("{prefix}_connections"),
                "PostgreSQL connections held by the pool, by state.",
            ),
            &["state"],
        )
        .expect("a metric name of a prefix and a constant is valid"),
        max: gauges("max_connections", "Most connections the pool opens.")
            .expect("a metric name of a prefix and a constant is valid"),
        waiting: gauges("waiting", "Tasks waiting for a PostgreSQL connection.")
            .expect("a metric name of a prefix and a constant is valid"),
    };
    r.register(Box::new(collector))
        .expect("the pool metrics are registered once");
}

struct PoolCollector {
    pool: deadpool_postgres::Pool,
    connections: IntGaugeVec,
    max: IntGauge,
    waiting: IntGauge,
}

impl Collector for PoolCollector {
    fn desc(&self) -> Vec<&prometheus::core::Desc> {
        let mut d = self.connections.desc();
        d.extend(self.max.desc());
        d.extend(self.waiting.desc());
        d
    }

    fn collect(&self) -> Vec<prometheus::proto::MetricFamily> {
        let s = self.pool.status();
        let in_use = s.size.saturating_sub(s.available);
        self.connections
            .with_label_values(&["idle"])
            .set(s.available as i64);
        self.connections
            .with_label_values(&["in_use"])
            .set(in_use as i64);
        self.max.set(s.max_size as i64);
        self.waiting.set(s.waiting as i64);
        let mut m = self.connections.collect();
        m.extend(self.max.collect());
        m.extend(self.waiting.collect());
        m
    }
}
