//! sync-worker's settings: flags and environment variables, documented in `--help`.

use std::net::SocketAddr;

use kollus_common::settings::{DatabaseSettings, KafkaSettings};
use kollus_common::telemetry::LogSettings;
use kollus_common::worker::ConsumeSettings;

/// `LISTEN_ADDR` when unset; also where `healthcheck` looks then.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:9101";

/// Keeps the media catalog in PostgreSQL in step with Kollus's platform callbacks.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "sync-worker", version)]
pub struct Settings {
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: SocketAddr,
    /// Consumer group: every sync-worker instance shares it, and partitions are spread over them.
    #[arg(long, env = "KAFKA_GROUP_ID", default_value = "kollus-sync-worker")]
    pub group_id: String,
    #[command(flatten)]
    pub consume: ConsumeSettings,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    #[command(flatten)]
    pub log: LogSettings,
}
