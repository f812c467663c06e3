//! history-worker's settings: flags and environment variables, documented in `--help`.

use std::net::SocketAddr;

use kollus_common::settings::{DatabaseSettings, KafkaSettings};
use kollus_common::telemetry::LogSettings;
use kollus_common::worker::ConsumeSettings;

/// `LISTEN_ADDR` when unset; also where `healthcheck` looks then.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:9102";

/// Keeps players' watch sessions in PostgreSQL, one row per player session.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "history-worker", version)]
pub struct Settings {
    /// Address for /metrics, /healthz and /readyz.
    #[arg(long, env = "LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: SocketAddr,
    /// Consumer group: every history-worker instance shares it, and partitions are spread over them.
    #[arg(long, env = "KAFKA_GROUP_ID", default_value = "kollus-history-worker")]
    pub group_id: String,
    #[command(flatten)]
    pub consume: ConsumeSettings,
    /// Transactions a batch is written in side by side, each on its own connection, split by
    /// (user, video) so they never wait on each other. At most the pool size.
    #[arg(long, env = "HISTORY_WRITE_SHARDS", default_value_t = 4)]
    pub write_shards: usize,
    /// A file holding the key subject tags are made with (32 random bytes, base64; the same file
    /// as token-api's): the worker tags each report's user to read the erasure barrier, and
    /// drops reports received before that user's erasure. Losing it: erased users' tags no
    /// longer match, and their reports received before the erasure would apply again.
    #[arg(long, env = "SUBJECT_TAG_KEY_FILE")]
    pub subject_tag_key_file: std::path::PathBuf,
    #[command(flatten)]
    pub plausibility: crate::sessions::Plausibility,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    #[command(flatten)]
    pub log: LogSettings,
}
