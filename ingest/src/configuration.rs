//! ingest's settings: flags and environment variables, documented in `--help`.

use std::net::SocketAddr;
use std::time::Duration;

use kollus_common::client_addr::Networks;
use kollus_common::kollus::binding::BindingSettings;
use kollus_common::kollus::callback_secret::{ensure_distinct, CallbackSecret, SecretName};
use kollus_common::settings::{
    callback_secret, millis, KafkaSettings, PlatformSecretRotation, ProxySettings, Redacted,
};
use kollus_common::telemetry::LogSettings;
use secrecy::{ExposeSecret as _, SecretString};

/// `LISTEN_ADDR` when unset; also where `healthcheck` looks then.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8080";

/// `INGEST_BODY_LIMIT` when unset, in bytes.
pub const DEFAULT_BODY_LIMIT: usize = 256 * 1024;

/// Accepts Kollus callbacks, makes them durable on Kafka, and only then answers 200.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "ingest", version)]
pub struct Settings {
    /// Address to listen on for callbacks and /metrics.
    #[arg(long, env = "LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: SocketAddr,
    /// The platform callbacks' secret (`?secret=` of the upload, transcoding, content and
    /// channel URLs in the Kollus console; posted by Kollus's servers). Also taken on /kollus/lms,
    /// with a WARN, during an upgrade (README, "Callback secrets").
    #[arg(long, env = "CALLBACK_SECRET", value_parser = Redacted(callback_secret), hide_env_values = true)]
    pub callback_secret: SecretString,
    #[command(flatten)]
    pub callback_secret_rotation: PlatformSecretRotation,
    /// The LMS callback's secret (`?secret=` of the LMS URL). Every viewer's player holds that
    /// URL, so this secret opens /kollus/lms and nothing else; it must differ from the others.
    #[arg(long, env = "LMS_CALLBACK_SECRET", value_parser = Redacted(callback_secret), hide_env_values = true)]
    pub lms_callback_secret: SecretString,
    /// Where platform callbacks may come from (comma-separated CIDRs, e.g. Kollus's servers'
    /// ranges); a platform callback from elsewhere is a 403. Empty: from anywhere. Never applied
    /// to /kollus/lms: players post from anywhere.
    #[arg(long, env = "CALLBACK_ALLOW_CIDRS", value_parser = kollus_common::client_addr::networks, default_value = "")]
    pub callback_allow_cidrs: Networks,
    /// token-api's play and DRM secret. Optional, and never accepted here: when given, ingest
    /// refuses to start if another of its secrets has the same value.
    #[arg(long, env = "PLAY_CALLBACK_SECRET", value_parser = Redacted(callback_secret), hide_env_values = true)]
    pub play_callback_secret: Option<SecretString>,
    #[command(flatten)]
    pub proxies: ProxySettings,
    #[command(flatten)]
    pub binding: BindingSettings,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "INGEST_BODY_LIMIT", default_value_t = DEFAULT_BODY_LIMIT)]
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
    /// Names of the form field or query parameter that holds the LMS JSON document
    /// (`{JSON_DATA}` in the console template), tried first; any other field that holds one is
    /// found too.
    #[arg(
        long,
        env = "INGEST_LMS_FIELDS",
        value_delimiter = ',',
        default_value = "json_data,lms_data"
    )]
    pub lms_fields: Vec<String>,
    /// The Kollus account's service account key, to verify the `hash` players append to LMS
    /// reports (SPEC.md 4.2). Optional; empty counts as not set.
    #[arg(
        long,
        env = "KOLLUS_SERVICE_ACCOUNT_KEY",
        value_parser = Redacted(optional_secret),
        hide_env_values = true
    )]
    pub service_account_key: Option<SecretString>,
    /// What to do with the LMS `hash`: `off` (not checked), `record` (checked, the verdict kept
    /// on the report and its session), `require` (a report without a valid hash is refused and
    /// dead-lettered). Default: `record` when the service account key is set, else `off`.
    #[arg(long, env = "LMS_HASH_POLICY", value_enum)]
    pub lms_hash_policy: Option<HashPolicy>,
    /// HTTP worker threads (0: one per core).
    #[arg(long, env = "INGEST_HTTP_WORKERS", default_value_t = 0)]
    pub http_workers: usize,
    #[command(flatten)]
    pub kafka: KafkaSettings,
    #[command(flatten)]
    pub log: LogSettings,
}

/// A secret that may be given empty (compose passes `${VAR:-}`), meaning "not set".
fn optional_secret(s: &str) -> Result<SecretString, String> {
    Ok(SecretString::from(s.to_owned()))
}

/// `LMS_HASH_POLICY`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HashPolicy {
    Off,
    Record,
    Require,
}

impl Settings {
    /// The hash policy in force, and the key it needs; refuses a policy that needs a key it
    /// does not have.
    pub fn hash_check(&self) -> anyhow::Result<Option<(HashPolicy, SecretString)>> {
        let key = self
            .service_account_key
            .as_ref()
            .filter(|k| !k.expose_secret().is_empty());
        let policy = self.lms_hash_policy.unwrap_or(if key.is_some() {
            HashPolicy::Record
        } else {
            HashPolicy::Off
        });
        match (policy, key) {
            (HashPolicy::Off, _) => Ok(None),
            (policy, Some(key)) => Ok(Some((policy, key.clone()))),
            (policy, None) => anyhow::bail!(
                "LMS_HASH_POLICY={policy:?} needs KOLLUS_SERVICE_ACCOUNT_KEY, which is not set"
            ),
        }
    }

    /// The platform and LMS secrets, checked: distinct, and a rotation's overlap bounded.
    pub fn callback_secrets(&self) -> anyhow::Result<(CallbackSecret, CallbackSecret)> {
        let rotation = &self.callback_secret_rotation;
        let mut values = vec![
            ("CALLBACK_SECRET", &self.callback_secret),
            ("LMS_CALLBACK_SECRET", &self.lms_callback_secret),
        ];
        if let Some(previous) = &rotation.previous {
            values.push(("CALLBACK_SECRET_PREVIOUS", previous));
        }
        if let Some(play) = &self.play_callback_secret {
            values.push(("PLAY_CALLBACK_SECRET", play));
        }
        if let Some(key) = &self.binding.player_binding_key {
            values.push(("PLAYER_BINDING_KEY", key));
        }
        ensure_distinct(&values).map_err(anyhow::Error::msg)?;
        let platform = rotation
            .secret(&self.callback_secret)
            .map_err(anyhow::Error::msg)?;
        let lms = CallbackSecret::new(SecretName::Lms, &self.lms_callback_secret);
        Ok((platform, lms))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_lms_fields_default_is_the_parsers() {
        let s: super::Settings = kollus_common::settings::parse_ignoring_env(
            <super::Settings as clap::CommandFactory>::command(),
            [
                "ingest",
                "--callback-secret=0123456789abcdef",
                "--lms-callback-secret=0123456789abcdeg",
            ],
        )
        .unwrap();
        assert_eq!(
            s.lms_fields,
            kollus_common::kollus::lms::request::DEFAULT_FIELDS
        );
    }
}
