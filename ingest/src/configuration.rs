//! ingest's settings: flags and environment variables, documented in `--help`.

use std::net::SocketAddr;
use std::time::Duration;

use kollus_common::settings::{millis, secret, KafkaSettings};
use kollus_common::telemetry::LogSettings;
use secrecy::SecretString;

/// Accepts Kollus callbacks, makes them durable on Kafka, and only then answers 200.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "ingest", version)]
pub struct Settings {
    /// Address to listen on for callbacks and /metrics.
    #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:8080")]
    pub listen_addr: SocketAddr,
    /// Secret every callback URL must carry as `?secret=` (set it in the Kollus console URLs).
    #[arg(long, env = "CALLBACK_SECRET", value_parser = secret)]
    pub callback_secret: SecretString,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "INGEST_BODY_LIMIT", default_value_t = 256 * 1024)]
    pub body_limit: usize,
    /// How long to wait for Kafka's acknowledgement before giving up on a request, in ms.
    /// Kollus abandons a request after 3 s, so keep this well under it.
    #[arg(long, env = "INGEST_ACK_TIMEOUT_MS", value_parser = millis, default_value = "1500")]
    pub ack_timeout: Duration,
    /// Most requests handled at once; past it ingest answers 503 at once instead of queueing
    /// past Kollus's timeout.
    #[arg(long, env = "INGEST_MAX_IN_FLIGHT", default_value_t = 4096)]
    pub max_in_flight: usize,
    /// Directory of the on-disk spool that keeps callbacks while Kafka is unavailable. One per
    /// ingest instance; what it holds at start-up is forwarded.
    #[arg(long, env = "INGEST_SPOOL_DIR", default_value = "ingest-spool")]
    pub spool_dir: std::path::PathBuf,
    /// Most bytes the spool may hold; past it ingest answers 503 (Kollus retries).
    #[arg(long, env = "INGEST_SPOOL_LIMIT_BYTES", default_value_t = 1 << 30)]
    pub spool_limit: u64,
    /// HTTP worker threads (0: one per core).
    #[arg(long, env = "INGEST_HTTP_WORKERS", default_value_t = 0)]
    pub http_workers: usize,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    #[command(flatten)]
    pub log: LogSettings,
}

impl Settings {
    /// Settings for tests: an ephemeral port and the given broker.
    pub fn for_tests(
        kafka: KafkaSettings,
        callback_secret: &str,
        spool_dir: std::path::PathBuf,
    ) -> Self {
        Self {
            spool_dir,
            spool_limit: 1 << 30,
            listen_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            callback_secret: SecretString::from(callback_secret.to_owned()),
            body_limit: 256 * 1024,
            ack_timeout: Duration::from_millis(1500),
            max_in_flight: 4096,
            http_workers: 2,
            kafka,
            log: LogSettings {
                log_format: kollus_common::telemetry::LogFormat::Text,
                log_filter: "info".into(),
            },
        }
    }
}
