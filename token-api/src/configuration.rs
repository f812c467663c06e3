//! token-api's settings: flags and environment variables, documented in `--help`.

use std::net::SocketAddr;
use std::time::Duration;

use kollus_common::kollus::callback_secret::{
    ensure_distinct, rotating, CallbackSecret, SecretName,
};
use kollus_common::settings::{secret, DatabaseSettings, ProxySettings, Redacted};
use kollus_common::telemetry::LogSettings;
use secrecy::SecretString;

use crate::auth::ApiKeys;

/// `LISTEN_ADDR` when unset; also where `healthcheck` looks then.
pub const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:8081";

/// Signs Kollus playback tokens for the product app, and answers its watch-history questions.
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "token-api", version)]
pub struct Settings {
    /// Address to listen on: the API, Kollus's play and DRM callbacks, the probes, and (unless
    /// CONSOLE_LISTEN_ADDR or OPS_LISTEN_ADDR move them) the console and `/metrics`.
    #[arg(long, env = "LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
    pub listen_addr: SocketAddr,
    /// A listener of its own for the support console (`/console/`), off the port Kollus must
    /// reach: e.g. `127.0.0.1:8082` behind the TLS proxy, or an address only the staff network
    /// reaches. Optional: unset, the console is on LISTEN_ADDR. Set, `/console/` on LISTEN_ADDR
    /// answers 404, and this listener serves the console alone.
    #[arg(long, env = "CONSOLE_LISTEN_ADDR")]
    pub console_listen_addr: Option<SocketAddr>,
    /// A listener of its own for `/metrics`, `/healthz` and `/readyz` (Prometheus and the
    /// orchestrator, on an internal address). Optional: unset, they are on LISTEN_ADDR. Set,
    /// `/metrics` on LISTEN_ADDR answers 404; the probes stay there too (a load balancer checks
    /// the port it sends to), and this listener serves these three alone.
    #[arg(long, env = "OPS_LISTEN_ADDR")]
    pub ops_listen_addr: Option<SocketAddr>,
    /// The Kollus account's security key (HS256 secret for playback tokens).
    #[arg(long, env = "KOLLUS_SECURITY_KEY", value_parser = Redacted(secret), hide_env_values = true)]
    pub security_key: SecretString,
    /// The Kollus account's custom (user) key: tells Kollus which key verifies the token.
    #[arg(long, env = "KOLLUS_CUSTOM_KEY")]
    pub custom_key: String,
    /// API keys of callers, as `name[scope+scope]:key,...`, entries separated by `,` or line
    /// breaks (named so one can be rotated out; only the name is ever logged). Scopes: `tokens`
    /// (issue, verify), `tokens:playcallback_ignore` (sign `playcallback_ignore: true`), `read`
    /// (progress, history, media), `entitlements` (grant, revoke, list), `export`, `console`. A
    /// key given without scopes (`name:key`) may do everything but `console` and
    /// `tokens:playcallback_ignore`, and startup warns about it. Names and keys hold no whitespace or control characters; no key is given twice.
    #[arg(long, env = "TOKEN_API_KEYS", value_parser = Redacted(ApiKeys::parse), hide_env_values = true)]
    pub api_keys: ApiKeys,
    /// A file holding `TOKEN_API_KEYS` (read into it at start); read again on SIGHUP, so a
    /// leaked key is revoked without a restart. A file that does not parse keeps the keys in
    /// force and logs an ERROR.
    #[arg(long, env = "TOKEN_API_KEYS_FILE")]
    pub api_keys_file: Option<std::path::PathBuf>,
    /// The Kollus player URL tokens are embedded in.
    #[arg(
        long,
        env = "KOLLUS_PLAYER_URL",
        default_value = "https://v.kr.kollus.com/s"
    )]
    pub player_url: String,
    /// Token lifetime when the request gives none, in seconds.
    #[arg(long, env = "TOKEN_DEFAULT_EXPIRES_IN", default_value_t = 3600)]
    pub default_expires_in: i64,
    /// Longest token lifetime a request may ask for, in seconds (at most a year: 31536000).
    #[arg(long, env = "TOKEN_MAX_EXPIRES_IN", default_value_t = 86_400)]
    pub max_expires_in: i64,
    /// Most videos in one token.
    #[arg(long, env = "TOKEN_MAX_MEDIA", default_value_t = 10)]
    pub max_media: usize,
    /// A course's `max_playback_rate` when its body gives none: history-worker's setting of the
    /// same name (the fastest rate players offer), so set both alike.
    #[arg(long, env = "HISTORY_MAX_PLAYBACK_RATE", default_value_t = 4.0, value_parser = kollus_common::settings::playback_rate)]
    pub max_playback_rate: f64,
    /// Also emit the RFC 7519 `exp` claim, equal to `expt`.
    #[arg(long, env = "TOKEN_EMIT_EXP", default_value_t = true, action = clap::ArgAction::Set)]
    pub emit_exp: bool,
    /// Check videos against the catalog: `off`; `on` refuses videos the catalog knows are
    /// deleted or in no channel; `require` also refuses videos the catalog has never seen.
    #[arg(long, env = "STRICT_CATALOG", value_enum, default_value_t = StrictCatalog::On)]
    pub strict_catalog: StrictCatalog,
    /// How long a catalog answer is reused for strict checks, in ms (0: ask PostgreSQL every
    /// time). A video deleted or removed from its last channel can still get tokens for this
    /// long after the catalog learns of it.
    #[arg(long, env = "STRICT_CATALOG_CACHE_MS", value_parser = kollus_common::settings::millis, default_value = "1000")]
    pub strict_catalog_cache: Duration,
    #[command(flatten)]
    pub play: PlaySettings,
    #[command(flatten)]
    pub proxies: ProxySettings,
    /// Failed API keys a client address may present on /v1 in a minute; past them it gets 429
    /// and no key is compared until the minute is over. 0: not limited.
    #[arg(long, env = "AUTH_FAILURES_PER_MINUTE", default_value_t = crate::auth::AUTH_FAILURES_ALLOWED)]
    pub auth_failures_per_minute: u32,
    #[command(flatten)]
    pub binding: kollus_common::kollus::binding::BindingSettings,
    /// The archive (`kollus-archive dump --to`): a directory or `s3://bucket/prefix`. Set, user
    /// exports also carry the raw LMS reports found in it (a scan of the archive's playback
    /// segments). Optional.
    #[arg(long, env = "ARCHIVE_DIR")]
    pub archive_dir: Option<String>,
    /// Kafka: the brokers, the topics' names (the archive holds the playback topic's records
    /// under its name; erasures are published to KAFKA_ERASURE_TOPIC) and what an erasure reads
    /// of the topics naming users (their retention).
    #[command(flatten)]
    pub kafka: kollus_common::settings::KafkaSettings,
    #[command(flatten)]
    pub erasure: ErasureSettings,
    #[command(flatten)]
    pub console: ConsoleSettings,
    #[command(flatten)]
    pub access_log: AccessLogSettings,
    #[command(flatten)]
    pub export: ExportSettings,
    #[command(flatten)]
    pub database: DatabaseSettings,
    #[command(flatten)]
    pub log: LogSettings,
}

/// Erasures (README "Erasing a user"): where their receipts look for each archive location's
/// confirmation, and how often unpublished ones are retried.
#[derive(Debug, Clone, clap::Args)]
pub struct ErasureSettings {
    /// Where the archive at ARCHIVE_DIR keeps its data keys, as `kollus-archive dump` has it
    /// (a directory or `s3://bucket/prefix`). Optional: unset, `<ARCHIVE_DIR>/keys`. A receipt's
    /// `archive` names this location `destroyed` once the archiver left its erasure record
    /// there.
    #[arg(long, env = "ARCHIVE_KEYS_DIR")]
    pub archive_keys_dir: Option<String>,
    /// Other archives' key locations an erasure must reach (another region's archiver, say),
    /// comma-separated. Optional: each is listed in a receipt's `archive`, and a receipt is
    /// `complete` only once every one of them confirmed.
    #[arg(long, env = "ERASURE_KEY_LOCATIONS", value_delimiter = ',')]
    pub erasure_key_locations: Vec<String>,
    /// How often erasures the erasure topic has not acknowledged are sent again, in ms (also
    /// right after each erasure, and with a growing pause while Kafka fails).
    #[arg(long, env = "ERASURE_PUBLISH_INTERVAL_MS", value_parser = kollus_common::settings::timeout_millis, default_value = "5000")]
    pub erasure_publish_interval: Duration,
}

impl ErasureSettings {
    /// Every key location a receipt lists: ARCHIVE_DIR's (when set), then
    /// ERASURE_KEY_LOCATIONS, each once.
    pub fn key_locations(&self, archive_dir: Option<&str>) -> Vec<String> {
        let own = archive_dir
            .filter(|d| !d.trim().is_empty())
            .map(|d| kollus_common::erasure::keys_location(d, self.archive_keys_dir.as_deref()));
        let mut all: Vec<String> = Vec::new();
        for location in own.into_iter().chain(
            self.erasure_key_locations
                .iter()
                .map(|l| l.trim().to_owned())
                .filter(|l| !l.is_empty()),
        ) {
            if !all.contains(&location) {
                all.push(location);
            }
        }
        all
    }
}

/// The access record (README "The access record"): its keys and how long it is kept.
#[derive(Debug, Clone, clap::Args)]
pub struct AccessLogSettings {
    /// A file holding the access log's chain key (32 random bytes, base64: `openssl rand
    /// -base64 32`). The database never holds it: without it, no row of the log can be
    /// altered, removed or reordered unseen. Keep it like a signing key; losing it ends the
    /// chain (a new key starts a new one, and `verify` needs the old key for the old rows).
    #[arg(long, env = "ACCESS_LOG_KEY_FILE")]
    pub access_log_key_file: std::path::PathBuf,
    /// A file holding the key subject tags are made with (32 random bytes, base64): a tag
    /// names a user in the access log (and the archive) without the id. Never derived from
    /// ARCHIVE_KEK_FILE. Losing it: a user's new records get another tag than their old ones.
    #[arg(long, env = "SUBJECT_TAG_KEY_FILE")]
    pub subject_tag_key_file: std::path::PathBuf,
    /// A file holding the key-encryption key (32 random bytes, base64) that wraps each user's
    /// data key; the user id in an access-log row is sealed under that data key, and erasing
    /// the user destroys it. Losing this file makes every sealed id unreadable.
    #[arg(long, env = "ARCHIVE_KEK_FILE")]
    pub archive_kek_file: std::path::PathBuf,
    /// Days the access log keeps accesses (at least 730: two years, for a system with 50,000
    /// or more data subjects). Access-right changes are kept 1,095 days whatever this says.
    /// Whole months past it are dropped by `token-api access-log maintain`.
    #[arg(long, env = "ACCESS_LOG_RETENTION_DAYS", default_value_t = 730, value_parser = clap::value_parser!(u32).range(730..=36_500))]
    pub access_log_retention_days: u32,
    /// How often new rows are sealed into the chain, in ms.
    #[arg(long, env = "ACCESS_LOG_SEAL_INTERVAL_MS", value_parser = kollus_common::settings::timeout_millis, default_value = "2000")]
    pub access_log_seal_interval: Duration,
}

/// The most `TOKEN_MAX_EXPIRES_IN` may be, in seconds: a year. Unbounded, `now + expires_in`
/// could pass what a date holds (the `expt` claim, the answer's `expires_at`).
pub const MAX_TOKEN_LIFETIME: i64 = 31_536_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StrictCatalog {
    Off,
    On,
    Require,
}

impl Settings {
    /// Checks what one flag alone cannot: a refusal names the setting, so the service exits at
    /// start (status 2) instead of refusing every request later.
    pub fn validate(&self) -> Result<(), String> {
        self.check_listeners()?;
        if self.max_media == 0 {
            return Err("TOKEN_MAX_MEDIA must be at least 1".into());
        }
        if self.default_expires_in <= 0 || self.max_expires_in <= 0 {
            return Err(
                "TOKEN_DEFAULT_EXPIRES_IN and TOKEN_MAX_EXPIRES_IN must be positive".into(),
            );
        }
        if self.max_expires_in > MAX_TOKEN_LIFETIME {
            return Err(format!(
                "TOKEN_MAX_EXPIRES_IN ({}) must not exceed {MAX_TOKEN_LIFETIME} seconds (a year): \
                 a token's expiry must be a date every reader can hold",
                self.max_expires_in
            ));
        }
        if self.default_expires_in > self.max_expires_in {
            return Err(format!(
                "TOKEN_DEFAULT_EXPIRES_IN ({}) must not exceed TOKEN_MAX_EXPIRES_IN ({})",
                self.default_expires_in, self.max_expires_in
            ));
        }
        if time_tz::timezones::get_by_name(&self.console.time_zone).is_none() {
            return Err(format!(
                "CONSOLE_TIME_ZONE {:?} is no IANA time zone (e.g. Asia/Seoul)",
                self.console.time_zone
            ));
        }
        self.console.check()?;
        self.play
            .secrets_beside(self.binding.player_binding_key.as_ref())?;
        self.binding.binding()?;
        Ok(())
    }
}

/// How exports are bounded (`EXPORT_*`), so that they cannot starve playback.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct ExportSettings {
    /// Exports streaming at once (1 to 64), each on a PostgreSQL connection of the exports' own
    /// pool, opened beside DATABASE_POOL_SIZE's (so an export never takes a connection the play
    /// and DRM callbacks need); one more export is answered 503 with Retry-After.
    #[arg(long = "export-concurrency", env = "EXPORT_CONCURRENCY", default_value_t = 4, value_parser = clap::value_parser!(u16).range(1..=64))]
    pub concurrency: u16,
    /// Seconds a client may take to accept each 64 KiB chunk of an export (1 to 3600). Past
    /// them the export is cut: its transaction rolled back, its snapshot, connection and slot
    /// released, and the response ends without its last chunk (never a short file that passes
    /// for a whole one). Also the Retry-After of an export refused for want of a slot.
    #[arg(long = "export-chunk-deadline-seconds", env = "EXPORT_CHUNK_DEADLINE_SECONDS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub chunk_deadline_seconds: u64,
    /// `statement_timeout` of an export's statements, in seconds (1 to 3600): each fetch of a
    /// page of rows.
    #[arg(long = "export-statement-timeout-seconds", env = "EXPORT_STATEMENT_TIMEOUT_SECONDS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub statement_timeout_seconds: u64,
    /// Seconds a whole export may last (10 to 86400), however steadily its client reads: past
    /// them it is cut as a stalled one is (rolled back, snapshot, connection and slot released,
    /// no last chunk), counted `overtime`. What bounds how long an export holds its
    /// REPEATABLE READ snapshot; the transaction's `idle_in_transaction_session_timeout` is
    /// this and [`IDLE_IN_TRANSACTION_MARGIN`] more.
    #[arg(long = "export-max-seconds", env = "EXPORT_MAX_SECONDS", default_value_t = 600, value_parser = clap::value_parser!(u64).range(10..=86400))]
    pub max_seconds: u64,
}

/// How much longer than `EXPORT_MAX_SECONDS` PostgreSQL lets an export's transaction sit idle
/// before it ends the session itself: time for our own cut to roll back first.
pub const IDLE_IN_TRANSACTION_MARGIN: Duration = Duration::from_secs(10);

impl ExportSettings {
    pub fn chunk_deadline(&self) -> Duration {
        Duration::from_secs(self.chunk_deadline_seconds)
    }

    pub fn statement_timeout(&self) -> Duration {
        Duration::from_secs(self.statement_timeout_seconds)
    }

    /// `EXPORT_MAX_SECONDS`: the whole export's deadline, counted from when its task starts.
    pub fn max_duration(&self) -> Duration {
        Duration::from_secs(self.max_seconds)
    }

    /// The transaction's `idle_in_transaction_session_timeout`: PostgreSQL's safety net, which
    /// ends the snapshot of an export this process forgot. The transaction is idle for as long
    /// as one page of rows takes to be pushed through the client, chunk after chunk, each
    /// within the chunk deadline: many chunk deadlines in a row, which only the whole
    /// export's deadline bounds. So the net is set past that deadline, and never cuts an
    /// export our own deadlines allow (a reader slow but steady is ours to cut, at
    /// `EXPORT_MAX_SECONDS`, not the server's half-way through a page).
    pub fn idle_in_transaction(&self) -> Duration {
        self.max_duration() + IDLE_IN_TRANSACTION_MARGIN
    }
}

impl Settings {
    /// Where the console is served: CONSOLE_LISTEN_ADDR, else LISTEN_ADDR.
    pub fn console_addr(&self) -> SocketAddr {
        self.console_listen_addr.unwrap_or(self.listen_addr)
    }

    /// The listeners together: no two on one address, and CONSOLE_INSECURE_COOKIE only where
    /// no other machine can reach the console (a session cookie without `Secure` goes over
    /// plain HTTP, to anyone on the path). Also run by [`crate::startup::Application::build`].
    pub fn check_listeners(&self) -> Result<(), String> {
        let listeners = [
            ("LISTEN_ADDR", Some(self.listen_addr)),
            ("CONSOLE_LISTEN_ADDR", self.console_listen_addr),
            ("OPS_LISTEN_ADDR", self.ops_listen_addr),
        ];
        for (i, (name, addr)) in listeners.iter().enumerate() {
            let Some(addr) = addr else { continue };
            // Port 0 (a free port each) never collides.
            if addr.port() == 0 {
                continue;
            }
            if let Some((other, _)) = listeners[i + 1..]
                .iter()
                .find(|(_, a)| a.is_some_and(|a| a.port() == addr.port() && a.ip() == addr.ip()))
            {
                return Err(format!(
                    "{name} and {other} are both {addr}: give each listener an address of its own"
                ));
            }
        }
        let console = self.console_addr();
        if self.console.insecure_cookie && !console.ip().is_loopback() {
            return Err(format!(
                "CONSOLE_INSECURE_COOKIE is set, but the console listens on {console} \
                 (CONSOLE_LISTEN_ADDR, else LISTEN_ADDR), which is not a loopback address: \
                 the session cookie without Secure would cross the network in clear. Unset \
                 CONSOLE_INSECURE_COOKIE and serve the console over HTTPS (README, \"The \
                 console behind TLS\"), or listen on 127.0.0.1"
            ));
        }
        Ok(())
    }
}

/// How token-api answers play and DRM callbacks (`PLAY_*` settings).
#[derive(Debug, Clone, clap::Args)]
pub struct PlaySettings {
    /// The play and DRM callbacks' secret (`?secret=` of the play and DRM callback URLs in the
    /// Kollus console). Assume a viewer can read it: it opens these two routes only. Unset: the
    /// play and DRM callbacks are off (404).
    #[arg(long, env = "PLAY_CALLBACK_SECRET", value_parser = kollus_common::settings::Redacted(kollus_common::settings::callback_secret), hide_env_values = true)]
    pub play_callback_secret: Option<SecretString>,
    /// PLAY_CALLBACK_SECRET's previous value, accepted until PLAY_CALLBACK_SECRET_PREVIOUS_UNTIL.
    /// Optional: set only during a rotation.
    #[arg(long, env = "PLAY_CALLBACK_SECRET_PREVIOUS", value_parser = kollus_common::settings::Redacted(kollus_common::settings::callback_secret), hide_env_values = true)]
    pub play_callback_secret_previous: Option<SecretString>,
    /// When PLAY_CALLBACK_SECRET_PREVIOUS stops being accepted (RFC 3339, at most a day ahead).
    /// Optional: set with PLAY_CALLBACK_SECRET_PREVIOUS.
    #[arg(long, env = "PLAY_CALLBACK_SECRET_PREVIOUS_UNTIL", value_parser = kollus_common::settings::rfc3339)]
    pub play_callback_secret_previous_until: Option<time::OffsetDateTime>,
    /// The platform callbacks' secret, as ingest's. Optional here: when set, it is also taken on
    /// the play and DRM routes, with a WARN once and a count, for the time an upgrade needs
    /// (README, "Callback secrets"). Set alone, without PLAY_CALLBACK_SECRET, it stops the start.
    #[arg(long, env = "CALLBACK_SECRET", value_parser = kollus_common::settings::Redacted(kollus_common::settings::callback_secret), hide_env_values = true)]
    pub callback_secret: Option<SecretString>,
    #[command(flatten)]
    pub callback_secret_rotation: kollus_common::settings::PlatformSecretRotation,
    /// ingest's LMS secret. Optional, and never accepted here: when given, token-api refuses to
    /// start if PLAY_CALLBACK_SECRET has the same value (the LMS secret is public).
    #[arg(long, env = "LMS_CALLBACK_SECRET", value_parser = kollus_common::settings::Redacted(kollus_common::settings::callback_secret), hide_env_values = true)]
    pub lms_callback_secret: Option<SecretString>,
    /// What to answer when no entitlement covers the video (unknown user or video included).
    #[arg(long, env = "PLAY_DEFAULT", value_enum, default_value_t = PlayDefault::Deny)]
    pub default: PlayDefault,
    /// The language of the messages a refused viewer sees.
    #[arg(long, env = "PLAY_MESSAGE_LANG", value_enum, default_value_t = Lang::Ko)]
    pub lang: Lang,
    /// Ask the player to refuse virtual machines (`vmcheck`).
    #[arg(long, env = "PLAY_VMCHECK", default_value_t = false, action = clap::ArgAction::Set)]
    pub vmcheck: bool,
    /// Ask the player to refuse TV-out (`disable_tvout`).
    #[arg(long, env = "PLAY_DISABLE_TVOUT", default_value_t = false, action = clap::ArgAction::Set)]
    pub disable_tvout: bool,
    /// Longest wait for PostgreSQL before answering 503, in ms.
    #[arg(long, env = "PLAY_TIMEOUT_MS", value_parser = kollus_common::settings::millis, default_value = "2000")]
    pub timeout: Duration,
}

/// The support console (`/console/`, `CONSOLE_*` settings).
#[derive(Debug, Clone, clap::Args)]
pub struct ConsoleSettings {
    /// The time zone the console shows times in (an IANA name).
    #[arg(
        long = "console-time-zone",
        env = "CONSOLE_TIME_ZONE",
        default_value = "Asia/Seoul"
    )]
    pub time_zone: String,
    /// How long a console sign-in lasts at most, in hours, however active its agent: 1 to 12
    /// (anything else stops the start).
    #[arg(
        long = "console-session-hours",
        env = "CONSOLE_SESSION_HOURS",
        value_name = "CONSOLE_SESSION_HOURS",
        default_value_t = 8
    )]
    pub session_hours: u32,
    /// How long a console session may go without its agent loading a page, in minutes (1 to
    /// 720): a session idle longer is refused and deleted.
    #[arg(
        long = "console-idle-minutes",
        env = "CONSOLE_IDLE_MINUTES",
        value_name = "CONSOLE_IDLE_MINUTES",
        default_value_t = 30
    )]
    pub idle_minutes: u32,
    /// Send the session cookie without `Secure`, for local runs over plain HTTP only.
    #[arg(long = "console-insecure-cookie", env = "CONSOLE_INSECURE_COOKIE", default_value = "false", value_parser = clap::builder::BoolishValueParser::new())]
    pub insecure_cookie: bool,
    /// Connections of the console's own pool (1 to 16), on `DATABASE_URL`'s server beside the
    /// callbacks' `DATABASE_POOL_SIZE`: every console page, sign-in and download's view record
    /// takes one, so agents' pages can never hold a connection the play and DRM callbacks need;
    /// a page that gets none within `DATABASE_POOL_WAIT_MS` is the console's 503 page.
    #[arg(
        long = "console-db-connections",
        env = "CONSOLE_DB_CONNECTIONS",
        value_name = "CONSOLE_DB_CONNECTIONS",
        default_value_t = 2,
        value_parser = clap::value_parser!(u16).range(1..=16)
    )]
    pub db_connections: u16,
}

/// The bounds of `CONSOLE_SESSION_HOURS`: a working day at most, so a stolen cookie does not
/// outlive the shift that lost it.
pub const CONSOLE_SESSION_HOURS: std::ops::RangeInclusive<u32> = 1..=12;

impl ConsoleSettings {
    /// The session settings' bounds, each refusal naming its setting.
    pub fn check(&self) -> Result<(), String> {
        if !CONSOLE_SESSION_HOURS.contains(&self.session_hours) {
            return Err(format!(
                "CONSOLE_SESSION_HOURS must be {} to {} (hours), not {}",
                CONSOLE_SESSION_HOURS.start(),
                CONSOLE_SESSION_HOURS.end(),
                self.session_hours
            ));
        }
        let longest = CONSOLE_SESSION_HOURS.end() * 60;
        if !(1..=longest).contains(&self.idle_minutes) {
            return Err(format!(
                "CONSOLE_IDLE_MINUTES must be 1 to {longest} (minutes), not {}",
                self.idle_minutes
            ));
        }
        Ok(())
    }
}

/// The secrets the play and DRM callbacks take: their own, and the platform secret when set.
#[derive(Debug, Clone)]
pub struct PlaySecrets {
    pub play: CallbackSecret,
    pub platform: Option<CallbackSecret>,
}

impl PlaySettings {
    /// The secrets in force, checked: none when the callbacks are off; the platform secret set
    /// without the play secret (a deployment from before they were split) is refused, since
    /// the callbacks would silently be off and Kollus would refuse every play.
    pub fn secrets(&self) -> Result<Option<PlaySecrets>, String> {
        self.secrets_beside(None)
    }

    /// [`Self::secrets`], also refusing a secret equal to `binding_key` (PLAYER_BINDING_KEY).
    pub fn secrets_beside(
        &self,
        binding_key: Option<&SecretString>,
    ) -> Result<Option<PlaySecrets>, String> {
        let now = time::OffsetDateTime::now_utc();
        if self.callback_secret.is_none() && self.callback_secret_rotation.previous.is_some() {
            return Err("CALLBACK_SECRET_PREVIOUS is set without CALLBACK_SECRET".into());
        }
        let Some(play) = &self.play_callback_secret else {
            if self.callback_secret.is_some() {
                return Err(
                    "CALLBACK_SECRET is set but PLAY_CALLBACK_SECRET is not: the play \
                            and DRM callbacks now take a secret of their own. Set \
                            PLAY_CALLBACK_SECRET and put it in the Kollus console's play and DRM \
                            callback URLs (README, \"Callback secrets\", the upgrade steps)"
                        .into(),
                );
            }
            return Ok(None);
        };
        let mut values = vec![("PLAY_CALLBACK_SECRET", play)];
        if let Some(previous) = &self.play_callback_secret_previous {
            values.push(("PLAY_CALLBACK_SECRET_PREVIOUS", previous));
        }
        if let Some(platform) = &self.callback_secret {
            values.push(("CALLBACK_SECRET", platform));
        }
        if let Some(previous) = &self.callback_secret_rotation.previous {
            values.push(("CALLBACK_SECRET_PREVIOUS", previous));
        }
        if let Some(lms) = &self.lms_callback_secret {
            values.push(("LMS_CALLBACK_SECRET", lms));
        }
        if let Some(key) = binding_key {
            values.push(("PLAYER_BINDING_KEY", key));
        }
        ensure_distinct(&values)?;
        let play = rotating(
            SecretName::Play,
            play,
            self.play_callback_secret_previous.as_ref(),
            self.play_callback_secret_previous_until,
            now,
        )?;
        let platform = self
            .callback_secret
            .as_ref()
            .map(|current| self.callback_secret_rotation.secret(current))
            .transpose()?;
        Ok(Some(PlaySecrets { play, platform }))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PlayDefault {
    Deny,
    Allow,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Ko,
    En,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::Parser as _;

    use super::{ExportSettings, IDLE_IN_TRANSACTION_MARGIN};

    #[derive(clap::Parser)]
    struct Exports {
        #[command(flatten)]
        export: ExportSettings,
    }

    #[test]
    fn an_export_is_bounded_in_total_and_the_servers_net_sits_past_that() {
        let default = Exports::try_parse_from(["token-api"]).unwrap().export;
        assert_eq!(default.max_seconds, 600);
        assert_eq!(
            default.idle_in_transaction(),
            Duration::from_secs(600) + IDLE_IN_TRANSACTION_MARGIN
        );
        for refused in ["9", "86401", "0", "ten"] {
            let error = Exports::try_parse_from(["token-api", "--export-max-seconds", refused])
                .err()
                .unwrap_or_else(|| panic!("{refused} taken"))
                .to_string();
            assert!(error.contains("--export-max-seconds"), "{error}");
        }
        for taken in ["10", "86400"] {
            Exports::try_parse_from(["token-api", "--export-max-seconds", taken]).unwrap();
        }
    }
}
