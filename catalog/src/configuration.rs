//! kollus-catalog's settings: flags and environment variables, documented in `--help`.

use std::net::SocketAddr;
use std::time::Duration;

use kollus_common::settings::{secret, DatabaseSettings, KafkaSettings, Redacted};
use kollus_common::telemetry::LogSettings;
use secrecy::SecretString;

/// `LISTEN_ADDR` when unset; also where `healthcheck` looks then.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:9105";

/// Backfills and sweeps the catalog from Kollus's REST API: publishes what it finds as snapshot
/// events on the content topic, which sync-worker applies.
#[derive(Debug, clap::Parser)]
#[command(name = "kollus-catalog", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    #[command(flatten)]
    pub log: LogSettings,
}

#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Once, when operations start: list every channel, its videos and the library, and publish
    /// one snapshot per upload.
    Backfill {
        #[command(flatten)]
        api: ApiSettings,
        #[command(flatten)]
        kafka: KafkaSettings,
    },
    /// On demand or nightly: the same listing, compared with the catalog; publish what differs
    /// (and absences confirmed by a detail request after a grace period), printing each
    /// difference corrected.
    Sweep {
        #[command(flatten)]
        api: ApiSettings,
        /// Seconds between the scan and the detail request that confirms an upload is gone
        /// (Kollus's lists may be cached).
        #[arg(long, env = "KOLLUS_ABSENCE_GRACE_SECONDS", default_value_t = 300)]
        absence_grace_seconds: u64,
        #[command(flatten)]
        database: DatabaseSettings,
        #[command(flatten)]
        kafka: KafkaSettings,
    },
}

#[derive(Debug, Clone, clap::Args)]
pub struct ApiSettings {
    /// Kollus's v0 API base URL (`https://api.jp.kollus.com/0/` for the jp region). `https://`
    /// only: every request carries the API token. `http://` is taken for a loopback host alone
    /// (`127.0.0.0/8`, `::1`, `localhost`: a stand-in in tests, or a local TLS-terminating proxy).
    #[arg(long, env = "KOLLUS_API_URL", default_value = "https://api.kr.kollus.com/0/", value_parser = base_url)]
    pub api_url: reqwest::Url,
    /// The API access token (console: service account > API), or KOLLUS_API_TOKEN_FILE. Issuing
    /// a new one invalidates this one.
    #[arg(
        long,
        env = "KOLLUS_API_TOKEN",
        value_parser = Redacted(secret),
        hide_env_values = true
    )]
    pub api_token: SecretString,
    /// Requests a second. Kollus allows 1 a second and 60 a minute; above 1 is refused for
    /// Kollus's own hosts (for stand-ins in tests).
    #[arg(long, env = "KOLLUS_API_RATE", default_value_t = 1.0)]
    pub api_rate: f64,
    /// Items a list request asks for (Kollus's default is 100).
    #[arg(long, env = "KOLLUS_API_PER_PAGE", default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=1000))]
    pub per_page: i64,
    /// First wait after a 5xx or a lost connection, in ms; doubles up to a minute, 5 attempts.
    #[arg(long, env = "KOLLUS_API_RETRY_MS", default_value = "1000", value_parser = kollus_common::settings::millis)]
    pub retry_start: Duration,
    /// Address for /metrics (progress, requests by outcome) while the command runs.
    #[arg(long, env = "LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: SocketAddr,
}

fn base_url(s: &str) -> Result<reqwest::Url, String> {
    let mut url =
        reqwest::Url::parse(s).map_err(|e| format!("KOLLUS_API_URL is not a URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback(&url) => {}
        "http" => {
            return Err(
                "KOLLUS_API_URL must be https:// (every request carries KOLLUS_API_TOKEN, which \
                 plain http would show to the network); http:// is taken for a loopback host only"
                    .into(),
            )
        }
        _ => return Err("KOLLUS_API_URL must be an https:// URL".into()),
    }
    if url.query().is_some() {
        return Err("must not carry a query string (the token is KOLLUS_API_TOKEN)".into());
    }
    // `join` replaces the last segment of a base without a trailing slash.
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// Whether `url`'s host is this machine: a loopback address, or `localhost` (RFC 6761).
fn is_loopback(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    // An IPv6 host is written in brackets.
    let host = host.trim_start_matches('[').trim_end_matches(']');
    match host.parse::<std::net::IpAddr>() {
        Ok(ip) => ip.is_loopback(),
        Err(_) => host.eq_ignore_ascii_case("localhost"),
    }
}

impl ApiSettings {
    /// The rate, checked: positive, and at most Kollus's 1/s against Kollus's own hosts.
    pub fn checked_rate(&self) -> anyhow::Result<f64> {
        let rate = self.api_rate;
        if !(rate.is_finite() && rate > 0.0) {
            anyhow::bail!("KOLLUS_API_RATE must be a positive number of requests a second");
        }
        let kollus = self
            .api_url
            .host_str()
            .is_some_and(|h| h == "kollus.com" || h.ends_with(".kollus.com"));
        if kollus && rate > 1.0 {
            anyhow::bail!(
                "KOLLUS_API_RATE {rate}: Kollus allows at most 1 request a second (and 60 a minute)"
            );
        }
        Ok(rate)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser as _;

    #[test]
    fn defaults_and_the_rate_kollus_allows() {
        let cli =
            Cli::try_parse_from(["kollus-catalog", "backfill", "--api-token", "t0ken"]).unwrap();
        let Command::Backfill { api, .. } = cli.command else {
            panic!()
        };
        assert_eq!(api.api_url.as_str(), "https://api.kr.kollus.com/0/");
        assert_eq!(api.checked_rate().unwrap(), 1.0);
        let cli = Cli::try_parse_from([
            "kollus-catalog",
            "backfill",
            "--api-token",
            "t",
            "--api-rate",
            "5",
        ])
        .unwrap();
        let Command::Backfill { api, .. } = cli.command else {
            panic!()
        };
        assert!(api
            .checked_rate()
            .unwrap_err()
            .to_string()
            .contains("at most 1 request"));
        let cli = Cli::try_parse_from([
            "kollus-catalog",
            "backfill",
            "--api-token",
            "t",
            "--api-rate",
            "50",
            "--api-url",
            "http://127.0.0.1:1/0",
        ])
        .unwrap();
        let Command::Backfill { api, .. } = cli.command else {
            panic!()
        };
        assert_eq!(
            api.checked_rate().unwrap(),
            50.0,
            "a stand-in may go faster"
        );
        assert_eq!(api.api_url.as_str(), "http://127.0.0.1:1/0/");
    }

    #[test]
    fn the_api_url_is_https_unless_its_host_is_this_machine() {
        let url = |u: &str| {
            Cli::try_parse_from([
                "kollus-catalog",
                "backfill",
                "--api-token",
                "t",
                "--api-url",
                u,
            ])
            .map(|cli| {
                let Command::Backfill { api, .. } = cli.command else {
                    panic!()
                };
                api.api_url.to_string()
            })
        };
        for taken in [
            "https://api.jp.kollus.com/0/",
            "https://10.0.0.7:8443/0/",
            "http://127.0.0.1:1/0/",
            "http://127.3.4.5/0/",
            "http://[::1]:8080/0/",
            "http://localhost:9/0/",
            "http://LOCALHOST/0/",
        ] {
            // A host's name is kept in lower case.
            assert_eq!(
                url(taken).map_err(|e| e.to_string()),
                Ok(taken.to_lowercase())
            );
        }
        for refused in [
            "http://api.kr.kollus.com/0/",
            "http://10.0.0.7/0/",
            "http://[::ffff:127.0.0.1]/0/",
            "http://localhost.example.com/0/",
            "http://127.0.0.1.nip.io/0/",
            "ftp://127.0.0.1/0/",
        ] {
            let err = url(refused).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{refused}"
            );
            assert!(
                err.to_string().contains("KOLLUS_API_URL"),
                "{refused}: {err}"
            );
        }
    }

    #[test]
    fn a_token_is_required_and_never_echoed() {
        let err =
            Cli::try_parse_from(["kollus-catalog", "backfill", "--api-token", ""]).unwrap_err();
        assert!(!err.to_string().contains("''"), "{err}");
        assert!(Cli::try_parse_from(["kollus-catalog", "backfill"]).is_err());
    }
}
