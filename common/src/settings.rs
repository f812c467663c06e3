//! Settings several services share, as clap argument groups: every flag has an environment
//! variable, both are listed in `--help`, and secrets are wrapped so they cannot be printed.

use std::time::Duration;

use secrecy::SecretString;

/// Parses a secret from the command line or environment without ever echoing it.
pub fn secret(s: &str) -> Result<SecretString, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(SecretString::from(s.to_owned()))
}

/// Parses a duration given in milliseconds.
pub fn millis(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|e| format!("expected milliseconds: {e}"))
}

#[derive(Debug, Clone, clap::Args)]
pub struct KafkaSettings {
    /// Kafka bootstrap servers, comma-separated host:port.
    #[arg(
        long = "kafka-brokers",
        env = "KAFKA_BROKERS",
        default_value = "127.0.0.1:9092"
    )]
    pub brokers: String,
    /// Topic for platform callbacks (upload, transcoding, content update, channel).
    #[arg(long, env = "KAFKA_CONTENT_TOPIC", default_value = "kollus.content.v1")]
    pub content_topic: String,
    /// Topic for LMS playback-progress callbacks.
    #[arg(
        long,
        env = "KAFKA_PLAYBACK_TOPIC",
        default_value = "kollus.playback.v1"
    )]
    pub playback_topic: String,
    /// Topic for what could not be applied, with the reason.
    #[arg(
        long,
        env = "KAFKA_DEADLETTER_TOPIC",
        default_value = "kollus.deadletter.v1"
    )]
    pub deadletter_topic: String,
    /// Partitions for topics this service creates when they are missing.
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 6)]
    pub topic_partitions: i32,
    /// Consumer-group session timeout, in ms: how soon a dead worker's partitions move to
    /// another. Short also because tansu holds a group join for half of it.
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", default_value_t = 6000)]
    pub session_timeout_ms: u32,
}

impl KafkaSettings {
    pub fn with_brokers(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            content_topic: "kollus.content.v1".into(),
            playback_topic: "kollus.playback.v1".into(),
            deadletter_topic: "kollus.deadletter.v1".into(),
            topic_partitions: 6,
            session_timeout_ms: 6000,
        }
    }

    pub fn topics(&self) -> [&str; 3] {
        [
            &self.content_topic,
            &self.playback_topic,
            &self.deadletter_topic,
        ]
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseSettings {
    /// PostgreSQL connection URL (may hold a password: never logged).
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        value_parser = secret,
        default_value = "postgres://postgres@127.0.0.1:5432/kollus",
        hide_default_value = false
    )]
    pub url: SecretString,
    /// Most connections in the pool.
    #[arg(
        long = "database-pool-size",
        env = "DATABASE_POOL_SIZE",
        default_value_t = 8
    )]
    pub pool_size: usize,
}

impl DatabaseSettings {
    pub fn new(url: &str) -> Self {
        Self {
            url: SecretString::from(url.to_owned()),
            pool_size: 8,
        }
    }
}
