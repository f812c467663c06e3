//! Prometheus helpers. Each service declares its metrics in one typed struct registered in its
//! own [`Registry`] under the `kollus_<service>` namespace.

use actix_web::{web, HttpResponse};
use prometheus::{Encoder, Registry, TextEncoder};

/// A registry whose metric names all start with `kollus_<service>_`.
pub fn registry(service: &str) -> Registry {
    Registry::new_custom(Some(format!("kollus_{service}")), None)
        .expect("a static namespace is a valid metric prefix")
}

/// Registers a metric, for use in a service's `Metrics::new`.
pub fn register<M: prometheus::core::Collector + Clone + 'static>(registry: &Registry, m: M) -> M {
    registry
        .register(Box::new(m.clone()))
        .expect("metric names are static and registered once");
    m
}

/// Exponential buckets from 0.5 ms to about 16 s: covers a fast path and Kollus's 3 s timeout.
pub fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.0005, 2.0, 16).expect("static bucket layout is valid")
}

/// `GET /metrics` in the Prometheus text format.
pub async fn metrics_endpoint(registry: web::Data<Registry>) -> HttpResponse {
    let mut buf = Vec::new();
    match TextEncoder::new().encode(&registry.gather(), &mut buf) {
        Ok(()) => HttpResponse::Ok()
            .content_type(prometheus::TEXT_FORMAT)
            .body(buf),
        Err(e) => HttpResponse::InternalServerError().body(format!("encoding metrics: {e}")),
    }
}
