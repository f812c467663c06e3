//! The baseline: an actix-web server that reads the request body and answers 200, nothing
//! else. ingest and token-api are measured against it, on the same machine in the same run.
//!
//! Usage: bare-handler ADDR [WORKERS]

use actix_web::{web, App, HttpResponse, HttpServer};

async fn accept(body: web::Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(format!("{{\"len\":{}}}", body.len()))
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let addr = args.next().unwrap_or_else(|| "127.0.0.1:18090".into());
    let workers: usize = args.next().and_then(|w| w.parse().ok()).unwrap_or(0);
    let mut server = HttpServer::new(|| {
        App::new()
            .app_data(web::PayloadConfig::new(256 * 1024))
            .default_service(web::to(accept))
    })
    .bind(&addr)?;
    if workers > 0 {
        server = server.workers(workers);
    }
    server.run().await
}
