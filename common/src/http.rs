//! HTTP pieces every service has: `/healthz`, `/readyz`, `/metrics`. The workers serve only
//! these (their admin server); ingest and token-api mount them beside their own routes.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix_web::{web, App, HttpResponse, HttpServer};
use prometheus::Registry;

use crate::metrics::metrics_endpoint;

/// Whether the service can do its work now (dependencies reachable). Cheap to clone and set.
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(ready: web::Data<Readiness>) -> HttpResponse {
    if ready.get() {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable().json(serde_json::json!({"status": "not ready"}))
    }
}

/// The liveness path: served by [`configure_ops`], asked by [`probe_healthz`].
const HEALTHZ: &str = "/healthz";

/// Adds `/healthz`, `/readyz` and `/metrics` to an app.
pub fn configure_ops(cfg: &mut web::ServiceConfig, registry: Registry, ready: Readiness) {
    configure_probes(cfg, ready);
    configure_metrics(cfg, registry);
}

/// Adds the probes alone, `/healthz` and `/readyz`: for a listener that serves them without
/// `/metrics` (token-api's main one when `OPS_LISTEN_ADDR` takes `/metrics` elsewhere).
pub fn configure_probes(cfg: &mut web::ServiceConfig, ready: Readiness) {
    cfg.app_data(web::Data::new(ready))
        .route(HEALTHZ, web::get().to(healthz))
        .route("/readyz", web::get().to(readyz));
}

/// Adds `/metrics` alone.
pub fn configure_metrics(cfg: &mut web::ServiceConfig, registry: Registry) {
    cfg.app_data(web::Data::new(registry))
        .route("/metrics", web::get().to(metrics_endpoint));
}

/// The workers' small HTTP server: only the operational endpoints.
pub fn admin_server(
    listener: TcpListener,
    registry: Registry,
    ready: Readiness,
) -> std::io::Result<actix_web::dev::Server> {
    Ok(HttpServer::new(move || {
        App::new().configure(|cfg| configure_ops(cfg, registry.clone(), ready.clone()))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)?
    .run())
}

/// `GET /healthz` on `addr` (a wildcard host means this machine), for `<binary> healthcheck`:
/// a plain HTTP/1.0 request on a socket, so the runtime image needs no curl.
pub fn probe_healthz(addr: &str) -> std::io::Result<()> {
    use std::io::{Read as _, Write as _};
    let mut target: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("{e}")))?;
    if target.ip().is_unspecified() {
        target.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let timeout = std::time::Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&target, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(format!("GET {HEALTHZ} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes())?;
    let mut head = [0u8; 12];
    stream.read_exact(&mut head)?;
    if head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200") {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "answered {}",
            String::from_utf8_lossy(&head)
        )))
    }
}

/// Resolves on Ctrl-C or SIGTERM: what a terminal and an orchestrator send.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<binary> healthcheck` asks the path the operations routes serve.
    #[tokio::test]
    async fn the_probe_passes_against_the_ops_routes_and_fails_elsewhere() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = admin_server(listener, Registry::new(), Readiness::default()).unwrap();
        let handle = server.handle();
        tokio::spawn(server);
        let probe = |addr: String| tokio::task::spawn_blocking(move || probe_healthz(&addr));
        let answer = probe(addr).await.unwrap();
        assert!(answer.is_ok(), "{answer:?}");

        // A server without them: the probe fails, naming the answer.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = listener.local_addr().unwrap().to_string();
        let bare = HttpServer::new(App::new)
            .workers(1)
            .disable_signals()
            .listen(listener)
            .unwrap()
            .run();
        let bare_handle = bare.handle();
        tokio::spawn(bare);
        let answer = probe(other).await.unwrap();
        assert!(
            answer
                .as_ref()
                .is_err_and(|e| e.to_string().contains("404")),
            "{answer:?}"
        );
        handle.stop(false).await;
        bare_handle.stop(false).await;
    }
}
