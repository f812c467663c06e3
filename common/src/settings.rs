//! Settings several services share, as clap argument groups: every flag has an environment
//! variable, both are listed in `--help`, and secrets are wrapped so they cannot be printed.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;

/// Parses a secret from the command line or environment without ever echoing it.
pub fn secret(s: &str) -> Result<SecretString, String> {
    if s.is_empty() {
        return Err("must not be empty".into());
    }
    Ok(SecretString::from(s.to_owned()))
}

/// Parses the callback URL's secret: ours to choose, so long enough not to be guessed.
pub fn callback_secret(s: &str) -> Result<SecretString, String> {
    if s.chars().count() < 16 {
        return Err("must be at least 16 characters".into());
    }
    secret(s)
}

/// A value parser for secrets whose refusal never shows the value (clap's own errors print
/// `invalid value '<the value>'`): the message names the setting and says what is wrong.
#[derive(Clone, Copy)]
pub struct Redacted<T>(pub fn(&str) -> Result<T, String>);

impl<T: Clone + Send + Sync + 'static> clap::builder::TypedValueParser for Redacted<T> {
    type Value = T;

    fn parse_ref(
        &self,
        cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<T, clap::Error> {
        let name = arg
            .and_then(|a| a.get_env())
            .map(|e| e.to_string_lossy().into_owned())
            .or_else(|| arg.map(|a| format!("--{}", a.get_id())))
            .unwrap_or_else(|| "a secret".into());
        let refuse = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("{name} {why} (its value is a secret and is not shown)\n"),
            )
            .with_cmd(cmd)
        };
        let text = value
            .to_str()
            .ok_or_else(|| refuse("is not valid UTF-8".into()))?;
        (self.0)(text).map_err(refuse)
    }
}

/// Parses an RFC 3339 time (`2026-12-07T09:00:00Z`).
pub fn rfc3339(s: &str) -> Result<time::OffsetDateTime, String> {
    time::OffsetDateTime::parse(s.trim(), &time::format_description::well_known::Rfc3339)
        .map_err(|e| format!("expected an RFC 3339 time such as 2026-12-07T09:00:00Z: {e}"))
}

/// The platform secret's previous value during a rotation (README, "Callback secrets"): taken
/// beside `CALLBACK_SECRET` until `CALLBACK_SECRET_PREVIOUS_UNTIL`, so that Kollus's retries of
/// requests sent before the console's URLs changed still land.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PlatformSecretRotation {
    /// The platform secret's previous value, accepted until CALLBACK_SECRET_PREVIOUS_UNTIL.
    /// Optional: set only during a rotation.
    #[arg(long = "callback-secret-previous", env = "CALLBACK_SECRET_PREVIOUS", value_parser = Redacted(callback_secret), hide_env_values = true)]
    pub previous: Option<SecretString>,
    /// When CALLBACK_SECRET_PREVIOUS stops being accepted (RFC 3339, at most a day ahead).
    /// Optional: set with CALLBACK_SECRET_PREVIOUS.
    #[arg(long = "callback-secret-previous-until", env = "CALLBACK_SECRET_PREVIOUS_UNTIL", value_parser = rfc3339)]
    pub until: Option<time::OffsetDateTime>,
}

impl PlatformSecretRotation {
    /// `CALLBACK_SECRET` with its previous value, checked (see [`crate::kollus::callback_secret::rotating`]).
    pub fn secret(
        &self,
        current: &SecretString,
    ) -> Result<crate::kollus::callback_secret::CallbackSecret, String> {
        crate::kollus::callback_secret::rotating(
            crate::kollus::callback_secret::SecretName::Platform,
            current,
            self.previous.as_ref(),
            self.until,
            time::OffsetDateTime::now_utc(),
        )
    }
}

/// Which clients sit behind our own reverse proxies.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ProxySettings {
    /// Our own reverse proxies, comma-separated CIDRs or addresses. A request from one of them is
    /// taken to come from the right-most `X-Forwarded-For` address that is not one; from anyone
    /// else, the header is ignored. Empty: the TCP peer is the client.
    #[arg(long, env = "TRUSTED_PROXIES", value_parser = crate::client_addr::networks, default_value = "")]
    pub trusted_proxies: crate::client_addr::Networks,
}

/// Parses `args` (the program's name first) as `cmd`'s command line, with every setting's
/// environment variable ignored: what the settings are from the command line and the clap
/// attributes alone.
pub fn parse_ignoring_env<T: clap::FromArgMatches>(
    cmd: clap::Command,
    args: impl IntoIterator<Item = impl Into<std::ffi::OsString> + Clone>,
) -> Result<T, clap::Error> {
    fn without_env(cmd: clap::Command) -> clap::Command {
        cmd.mut_args(|a| a.env(None)).mut_subcommands(without_env)
    }
    let matches = without_env(cmd).try_get_matches_from(args)?;
    T::from_arg_matches(&matches)
}

/// A settings group's defaults: its clap attributes (`default_value`), the one place each is
/// written, read without a command line or environment. For groups whose every setting has a
/// default or is optional (a unit test of each type calls this).
pub fn defaults<A: clap::Args>() -> A {
    let cmd = A::augment_args(clap::Command::new("defaults"));
    parse_ignoring_env(cmd, ["defaults"])
        .unwrap_or_else(|e| panic!("a settings group without a default for every setting: {e}"))
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
    /// How every client reaches the brokers: `plaintext`, `ssl` (TLS), `sasl_plaintext` or
    /// `sasl_ssl` (SASL over TLS: what a production Kafka wants), case-insensitive.
    #[arg(
        long = "kafka-security-protocol",
        env = "KAFKA_SECURITY_PROTOCOL",
        default_value = "plaintext",
        value_parser = security_protocol
    )]
    pub security_protocol: SecurityProtocol,
    /// SASL mechanism: PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512. Optional: for `sasl_*` only.
    #[arg(long = "kafka-sasl-mechanism", env = "KAFKA_SASL_MECHANISM", value_parser = sasl_mechanism)]
    pub sasl_mechanism: Option<SaslMechanism>,
    /// SASL user name. Optional: for `sasl_*` only.
    #[arg(long = "kafka-sasl-username", env = "KAFKA_SASL_USERNAME")]
    pub sasl_username: Option<String>,
    /// SASL password (or KAFKA_SASL_PASSWORD_FILE: a file holding it; never logged).
    /// Optional: for `sasl_*` only.
    #[arg(
        long = "kafka-sasl-password",
        env = "KAFKA_SASL_PASSWORD",
        value_parser = Redacted(secret),
        hide_env_values = true
    )]
    pub sasl_password: Option<SecretString>,
    /// PEM file of the CA(s) that signed the brokers' certificates, for `ssl` and `sasl_ssl`.
    /// Optional: unset, the system's CAs.
    #[arg(long = "kafka-ssl-ca-location", env = "KAFKA_SSL_CA_LOCATION")]
    pub ssl_ca_location: Option<PathBuf>,
    /// PEM file of this client's certificate, for brokers that ask one (mutual TLS); with
    /// KAFKA_SSL_KEY_LOCATION. Optional.
    #[arg(
        long = "kafka-ssl-certificate-location",
        env = "KAFKA_SSL_CERTIFICATE_LOCATION"
    )]
    pub ssl_certificate_location: Option<PathBuf>,
    /// PEM file of the private key of KAFKA_SSL_CERTIFICATE_LOCATION (unencrypted). Optional.
    #[arg(long = "kafka-ssl-key-location", env = "KAFKA_SSL_KEY_LOCATION")]
    pub ssl_key_location: Option<PathBuf>,
    /// Topic for platform callbacks (upload, transcoding, content update, channel).
    #[arg(long, env = "KAFKA_CONTENT_TOPIC", default_value = CONTENT_TOPIC)]
    pub content_topic: String,
    /// Topic for LMS playback-progress callbacks.
    #[arg(
        long,
        env = "KAFKA_PLAYBACK_TOPIC",
        default_value = PLAYBACK_TOPIC
    )]
    pub playback_topic: String,
    /// Topic for what could not be applied, with the reason.
    #[arg(
        long,
        env = "KAFKA_DEADLETTER_TOPIC",
        default_value = DEADLETTER_TOPIC
    )]
    pub deadletter_topic: String,
    /// Topic of erasures (README "Erasing a user"): the subject tag and the time of each, kept
    /// forever, so every archiver destroys the user's key in its location and every rebuild
    /// knows whom not to bring back, even with PostgreSQL lost.
    #[arg(long, env = "KAFKA_ERASURE_TOPIC", default_value = ERASURE_TOPIC)]
    pub erasure_topic: String,
    /// Partitions for topics this service creates when they are missing.
    #[arg(long, env = "KAFKA_TOPIC_PARTITIONS", default_value_t = 6)]
    pub topic_partitions: i32,
    /// Consumer-group session timeout, in ms, under KAFKA_GROUP_PROTOCOL=classic only: how soon
    /// a dead worker's partitions move to another. Default: 45000 (Kafka's). Under `consumer`
    /// the broker's `group.consumer.session.timeout.ms` governs, and this setting is ignored
    /// (with a warning at start-up).
    #[arg(long, env = "KAFKA_SESSION_TIMEOUT_MS", value_parser = clap::value_parser!(u32).range(1000..=300_000))]
    pub session_timeout_ms: Option<u32>,
    /// Consumer-group protocol: `consumer` (KIP-848: the broker assigns partitions and moves
    /// them one at a time, members never stop all together; session timeout and heartbeat set
    /// by the broker) or `classic` (the client-side assignor and its stop-the-world rebalances,
    /// for brokers before Kafka 4.0).
    #[arg(long, env = "KAFKA_GROUP_PROTOCOL", value_enum, default_value_t = GroupProtocol::Consumer)]
    pub group_protocol: GroupProtocol,
    /// Days a topic this service creates keeps its records (`retention.ms`); -1 keeps them
    /// forever. The archive (`kollus-archive dump`) is the long tier: past this age a record
    /// exists only there.
    #[arg(long, env = "KAFKA_RETENTION_DAYS", default_value_t = 14, value_parser = retention_days)]
    pub retention_days: i64,
    /// The continuous archiver's consumer group. The other services look at it to warn when
    /// topics forget (finite retention) and no archiver is a member.
    #[arg(long, env = "ARCHIVE_GROUP_ID", default_value = "kollus-archive")]
    pub archive_group_id: String,
    /// Copies of each partition, on distinct brokers, for topics this service creates. 1 loses
    /// acknowledged records with a broker's disk; 3 survives one broker down (with the default
    /// KAFKA_MIN_INSYNC_REPLICAS) and another lost. Topics are not created while fewer brokers
    /// are alive: they would be refused, or be made with fewer copies than asked.
    #[arg(
        long = "kafka-replication-factor",
        env = "KAFKA_REPLICATION_FACTOR",
        default_value_t = 1,
        value_parser = replicas
    )]
    pub replication_factor: i32,
    /// Copies that must hold a record before Kafka acknowledges it (`min.insync.replicas`; our
    /// producers ask `acks=all`), for topics this service creates. Unset: one less than
    /// KAFKA_REPLICATION_FACTOR, at least 1, so one broker may be down without stopping
    /// writes. At most KAFKA_REPLICATION_FACTOR (more could never be met).
    #[arg(
        long = "kafka-min-insync-replicas",
        env = "KAFKA_MIN_INSYNC_REPLICAS",
        value_parser = replicas
    )]
    pub min_insync: Option<i32>,
}

/// `KAFKA_GROUP_PROTOCOL`: how the services' consumer groups assign partitions (README
/// "Operations", group protocol and rebalance times).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum GroupProtocol {
    /// KIP-848 (`group.protocol=consumer`): the broker's group coordinator assigns partitions
    /// and times sessions out (`group.consumer.session.timeout.ms`).
    #[default]
    Consumer,
    /// The protocol before KIP-848 (`group.protocol=classic`): the client's session timeout
    /// (`KAFKA_SESSION_TIMEOUT_MS`) and assignor.
    Classic,
}

impl GroupProtocol {
    /// The value of librdkafka's `group.protocol`, and of `KAFKA_GROUP_PROTOCOL`.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// `KAFKA_SECURITY_PROTOCOL`: librdkafka's `security.protocol`.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    strum::IntoStaticStr,
    strum::EnumString,
    strum::VariantNames,
)]
#[strum(serialize_all = "snake_case", ascii_case_insensitive)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    /// The name librdkafka's `security.protocol` and `KAFKA_SECURITY_PROTOCOL` take.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether clients authenticate with SASL (and need a mechanism, user and password).
    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }

    /// Whether the connection is TLS (and the `KAFKA_SSL_*` files apply).
    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }
}

fn security_protocol(s: &str) -> Result<SecurityProtocol, String> {
    named_value("KAFKA_SECURITY_PROTOCOL", s)
}

/// A value of `setting` named by one of `T`'s texts (strum's, case-insensitive); refused
/// naming them all.
fn named_value<T>(setting: &str, s: &str) -> Result<T, String>
where
    T: std::str::FromStr + strum::VariantNames,
{
    let s = s.trim();
    s.parse().map_err(|_| {
        let names = T::VARIANTS;
        let (last, rest) = names.split_last().unwrap_or((&"", &[]));
        format!("{setting} {s:?}: expected {} or {last}", rest.join(", "))
    })
}

/// `KAFKA_SASL_MECHANISM`: the SASL mechanisms librdkafka built with OpenSSL offers (no
/// GSSAPI/Kerberos, no OAUTHBEARER).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString, strum::VariantNames,
)]
#[strum(ascii_case_insensitive)]
pub enum SaslMechanism {
    #[strum(serialize = "PLAIN")]
    Plain,
    #[strum(serialize = "SCRAM-SHA-256")]
    ScramSha256,
    #[strum(serialize = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name librdkafka's `sasl.mechanism` and `KAFKA_SASL_MECHANISM` take.
    pub fn as_str(self) -> &'static str {
        self.into()
    }
}

/// `KAFKA_SESSION_TIMEOUT_MS` when unset (classic protocol): Kafka's own default.
pub const CLASSIC_SESSION_TIMEOUT_MS: u32 = 45_000;

fn sasl_mechanism(s: &str) -> Result<SaslMechanism, String> {
    named_value("KAFKA_SASL_MECHANISM", s)
}

/// `KAFKA_REPLICATION_FACTOR`, `KAFKA_MIN_INSYNC_REPLICAS`: a count of copies, from 1 to what
/// Kafka's protocol carries (a 16-bit count).
fn replicas(s: &str) -> Result<i32, String> {
    match s.trim().parse::<i32>() {
        Ok(n) if (1..=i32::from(i16::MAX)).contains(&n) => Ok(n),
        Ok(n) => Err(format!("{n}: expected 1 to {} copies", i16::MAX)),
        Err(e) => Err(format!("expected a whole number of copies: {e}")),
    }
}

/// The topics' default names (`KAFKA_*_TOPIC`), in one place for every service.
pub const CONTENT_TOPIC: &str = "kollus.content.v1";
pub const PLAYBACK_TOPIC: &str = "kollus.playback.v1";
pub const DEADLETTER_TOPIC: &str = "kollus.deadletter.v1";
pub const ERASURE_TOPIC: &str = "kollus.erasure.v1";

/// `KAFKA_RETENTION_DAYS`: -1 (forever) or a whole number of days from 1.
fn retention_days(s: &str) -> Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(-1) => Ok(-1),
        Ok(d) if (1..=36_500).contains(&d) => Ok(d),
        Ok(d) => Err(format!(
            "{d}: expected -1 (keep forever) or 1 to 36500 days"
        )),
        Err(e) => Err(format!("expected a whole number of days, or -1: {e}")),
    }
}

impl KafkaSettings {
    /// The defaults (`--help`), with `brokers`.
    pub fn with_brokers(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            ..defaults()
        }
    }

    /// The session timeout a classic-protocol member asks for: `KAFKA_SESSION_TIMEOUT_MS`, else
    /// [`CLASSIC_SESSION_TIMEOUT_MS`]. Under the consumer protocol the broker decides.
    pub fn classic_session_timeout_ms(&self) -> u32 {
        self.session_timeout_ms
            .unwrap_or(CLASSIC_SESSION_TIMEOUT_MS)
    }

    /// A setting given that the group protocol ignores, said as a warning: under `consumer`,
    /// `KAFKA_SESSION_TIMEOUT_MS` (the broker's `group.consumer.session.timeout.ms` governs).
    pub fn ignored_group_setting(&self) -> Option<String> {
        match (self.group_protocol, self.session_timeout_ms) {
            (GroupProtocol::Consumer, Some(ms)) => Some(format!(
                "KAFKA_SESSION_TIMEOUT_MS={ms} is ignored under KAFKA_GROUP_PROTOCOL=consumer: the \
                 broker's group.consumer.session.timeout.ms governs (Kafka's default 45 s). Unset \
                 it, or set KAFKA_GROUP_PROTOCOL=classic to use it"
            )),
            _ => None,
        }
    }

    /// `min.insync.replicas` for the topics this service creates: `KAFKA_MIN_INSYNC_REPLICAS`,
    /// else one less than the replication factor (at least 1). [`KafkaSettings::check`] refuses
    /// one above the replication factor.
    pub fn min_insync_replicas(&self) -> i32 {
        self.min_insync
            .unwrap_or((self.replication_factor - 1).max(1))
    }

    /// What clap cannot check one setting at a time: the replication settings together. Run at
    /// start-up (topic creation runs it too), so a service refuses to start rather than create
    /// topics no write could ever be acknowledged on.
    pub fn check(&self) -> Result<(), String> {
        self.check_security()?;
        if self.replication_factor < 1 {
            return Err(format!(
                "KAFKA_REPLICATION_FACTOR is {}: at least 1 copy is needed",
                self.replication_factor
            ));
        }
        let min_insync = self.min_insync_replicas();
        if min_insync < 1 {
            return Err(format!(
                "KAFKA_MIN_INSYNC_REPLICAS is {min_insync}: at least 1 copy is needed"
            ));
        }
        if min_insync > self.replication_factor {
            return Err(format!(
                "KAFKA_MIN_INSYNC_REPLICAS ({min_insync}) is more than KAFKA_REPLICATION_FACTOR \
                 ({}): with acks=all no write could ever be acknowledged; lower it or raise the \
                 replication factor",
                self.replication_factor
            ));
        }
        Ok(())
    }

    /// The security settings together: what `sasl_*` needs, nothing given that the protocol
    /// would ignore, files that can be read. Errors name the setting, never the password.
    pub fn check_security(&self) -> Result<(), String> {
        let protocol = self.security_protocol;
        let p = protocol.as_str();
        if protocol.sasl() {
            if self.sasl_mechanism.is_none() {
                return Err(format!(
                    "KAFKA_SECURITY_PROTOCOL={p} needs KAFKA_SASL_MECHANISM (PLAIN, \
                     SCRAM-SHA-256 or SCRAM-SHA-512)"
                ));
            }
            if self.sasl_username.as_deref().is_none_or(str::is_empty) {
                return Err(format!(
                    "KAFKA_SECURITY_PROTOCOL={p} needs KAFKA_SASL_USERNAME"
                ));
            }
            if self.sasl_password.is_none() {
                return Err(format!(
                    "KAFKA_SECURITY_PROTOCOL={p} needs KAFKA_SASL_PASSWORD or \
                     KAFKA_SASL_PASSWORD_FILE"
                ));
            }
        } else {
            let given = [
                ("KAFKA_SASL_MECHANISM", self.sasl_mechanism.is_some()),
                ("KAFKA_SASL_USERNAME", self.sasl_username.is_some()),
                ("KAFKA_SASL_PASSWORD", self.sasl_password.is_some()),
            ];
            if let Some((name, _)) = given.iter().find(|(_, set)| *set) {
                return Err(format!(
                    "{name} is set but KAFKA_SECURITY_PROTOCOL={p} does not use SASL (it would \
                     be ignored): use sasl_ssl or sasl_plaintext, or unset it"
                ));
            }
        }
        let files = [
            ("KAFKA_SSL_CA_LOCATION", &self.ssl_ca_location),
            (
                "KAFKA_SSL_CERTIFICATE_LOCATION",
                &self.ssl_certificate_location,
            ),
            ("KAFKA_SSL_KEY_LOCATION", &self.ssl_key_location),
        ];
        for (name, path) in files {
            let Some(path) = path else { continue };
            if !protocol.tls() {
                return Err(format!(
                    "{name} is set but KAFKA_SECURITY_PROTOCOL={p} is not TLS (it would be \
                     ignored): use ssl or sasl_ssl, or unset it"
                ));
            }
            std::fs::File::open(path)
                .map_err(|e| format!("{name}: reading {}: {e}", path.display()))?;
        }
        if self.ssl_certificate_location.is_some() != self.ssl_key_location.is_some() {
            return Err(
                "KAFKA_SSL_CERTIFICATE_LOCATION and KAFKA_SSL_KEY_LOCATION go together (a \
                 client certificate and its key): set both or neither"
                    .into(),
            );
        }
        Ok(())
    }

    /// `retention.ms` for the topics this service creates: -1 (forever) or the days in ms.
    pub fn retention_ms(&self) -> i64 {
        if self.retention_days < 0 {
            -1
        } else {
            self.retention_days * 24 * 3600 * 1000
        }
    }

    /// Every topic of the services: content, playback, dead letters and erasures.
    pub fn topics(&self) -> [&str; 4] {
        [
            &self.content_topic,
            &self.playback_topic,
            &self.deadletter_topic,
            &self.erasure_topic,
        ]
    }

    /// The topics whose records name users (LMS reports, dead letters): an erasure waits for
    /// their retention to pass before it is complete, and needs it finite.
    pub fn user_topics(&self) -> [&str; 2] {
        [&self.playback_topic, &self.deadletter_topic]
    }

    /// `retention.ms` a topic of ours is created with: [`Self::retention_ms`], except the
    /// erasure topic's, -1 whatever `KAFKA_RETENTION_DAYS` says: an erasure record is tiny and
    /// is the barrier of every future rebuild.
    pub fn retention_ms_of(&self, topic: &str) -> i64 {
        if topic == self.erasure_topic {
            -1
        } else {
            self.retention_ms()
        }
    }
}

#[derive(Debug, Clone, clap::Args)]
pub struct DatabaseSettings {
    /// PostgreSQL connection URL (may hold a password: never logged).
    #[arg(
        long = "database-url",
        env = "DATABASE_URL",
        value_parser = Redacted(secret),
        hide_env_values = true,
        default_value = "postgres://postgres@127.0.0.1:5432/kollus",
        hide_default_value = false
    )]
    pub url: SecretString,
    /// Optional. PostgreSQL URL of the role that owns the schema: migrations at start-up and
    /// `token-api access-log maintain` run through it (one short-lived connection), the service
    /// itself through DATABASE_URL, whose role then needs only `kollus_service`'s rights (it may
    /// only append to and read the access log, and runs no DDL). Unset: DATABASE_URL's role does
    /// both (a development set-up; `make run`). Never logged.
    #[arg(
        long = "database-migration-url",
        env = "DATABASE_MIGRATION_URL",
        value_parser = Redacted(secret),
        hide_env_values = true
    )]
    pub migration_url: Option<SecretString>,
    /// Most connections in the pool.
    #[arg(
        long = "database-pool-size",
        env = "DATABASE_POOL_SIZE",
        default_value_t = 8
    )]
    pub pool_size: usize,
    /// Longest a request waits for one of the pool's connections, in ms (1 to 600000): past
    /// it the request fails as transient (the APIs answer 503, the workers retry), never hangs.
    #[arg(
        long = "database-pool-wait-ms",
        env = "DATABASE_POOL_WAIT_MS",
        value_parser = timeout_millis,
        default_value = "5000"
    )]
    pub pool_wait: Duration,
    /// Longest opening a new PostgreSQL connection may take, in ms (1 to 600000); past it, a
    /// transient failure as above.
    #[arg(
        long = "database-connect-timeout-ms",
        env = "DATABASE_CONNECT_TIMEOUT_MS",
        value_parser = timeout_millis,
        default_value = "5000"
    )]
    pub connect_timeout: Duration,
}

/// A timeout in milliseconds, 1 ms to 10 minutes: 0 would fail every wait at once.
pub fn timeout_millis(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(ms @ 1..=600_000) => Ok(Duration::from_millis(ms)),
        Ok(_) => Err("expected 1 to 600000 milliseconds".into()),
        Err(e) => Err(format!("expected milliseconds: {e}")),
    }
}

impl DatabaseSettings {
    /// The defaults (`--help`), with `url`.
    pub fn new(url: &str) -> Self {
        Self {
            url: SecretString::from(url.to_owned()),
            ..defaults()
        }
    }
}

/// Secrets a service may also take from a file, as `NAME_FILE` (Docker and Compose secrets):
/// the file's content, without its trailing line break, becomes `NAME`.
pub const SECRET_FILE_VARIANTS: &[&str] = &[
    "CALLBACK_SECRET",
    "CALLBACK_SECRET_PREVIOUS",
    "PLAY_CALLBACK_SECRET",
    "PLAY_CALLBACK_SECRET_PREVIOUS",
    "LMS_CALLBACK_SECRET",
    "PLAYER_BINDING_KEY",
    "KOLLUS_SECURITY_KEY",
    "DATABASE_MIGRATION_URL",
    "KOLLUS_SERVICE_ACCOUNT_KEY",
    "TOKEN_API_KEYS",
    "DATABASE_URL",
    "KAFKA_SASL_PASSWORD",
    // The archive's S3 credentials (kollus-archive, and token-api's exports when ARCHIVE_DIR is
    // `s3://`): read from the process's environment by the S3 client once filled in here.
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
];

/// What every `main` does before parsing its settings: answers `<binary> healthcheck` (GET
/// `/healthz` on `LISTEN_ADDR`, else `default_addr`; exit 0 when it answers 200, for container
/// healthchecks in an image without curl), and reads the `NAME_FILE` secrets into `NAME`.
/// Exits 2 when a secret file cannot be read, naming it.
pub fn prepare_process(default_addr: &str) {
    if std::env::args().nth(1).as_deref() == Some("healthcheck") {
        let addr = std::env::var("LISTEN_ADDR").unwrap_or_else(|_| default_addr.to_owned());
        std::process::exit(match crate::http::probe_healthz(&addr) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("healthcheck: {addr}: {e}");
                1
            }
        });
    }
    if let Err(e) = load_secret_files(SECRET_FILE_VARIANTS) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
}

/// For each `NAME` with `NAME_FILE` set, reads that file into `NAME` (given both, `NAME` is
/// refused: one source of truth). Runs before any thread starts.
pub fn load_secret_files(names: &[&str]) -> Result<(), String> {
    for name in names {
        let file_var = format!("{name}_FILE");
        let Some(path) = std::env::var_os(&file_var) else {
            continue;
        };
        if std::env::var_os(name).is_some() {
            return Err(format!("{name} and {file_var} are both set; set one"));
        }
        let content = std::fs::read_to_string(&path)
            .map_err(|e| format!("{file_var}: reading {}: {e}", path.to_string_lossy()))?;
        std::env::set_var(name, content.trim_end_matches(['\n', '\r']));
    }
    Ok(())
}

/// A playback rate setting (HISTORY_MAX_PLAYBACK_RATE, read by history-worker and, as courses'
/// default, by token-api): a finite number of at least 1 (a slower "fastest" rate would refuse
/// viewing at normal speed).
pub fn playback_rate(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(r) if r.is_finite() && r >= 1.0 => Ok(r),
        Ok(r) => Err(format!("{r} is not a playback rate of 1 or more")),
        Err(e) => Err(format!("{s:?} is not a number: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args as _, FromArgMatches as _, Parser as _, ValueEnum as _};

    #[derive(clap::Parser)]
    struct Kafka {
        #[command(flatten)]
        kafka: KafkaSettings,
    }

    fn kafka(args: &[&str]) -> Result<KafkaSettings, clap::Error> {
        Kafka::try_parse_from(std::iter::once("test").chain(args.iter().copied())).map(|k| k.kafka)
    }

    /// A group of one setting, with an environment variable no other test sets.
    #[derive(Debug, clap::Args)]
    struct Probe {
        #[arg(long, env = "KOLLUS_TEST_DEFAULTS_PROBE", default_value_t = 7)]
        probe: u32,
    }

    #[test]
    fn defaults_are_the_clap_attributes_whatever_the_environment() {
        std::env::set_var("KOLLUS_TEST_DEFAULTS_PROBE", "9");
        assert_eq!(
            defaults::<Probe>().probe,
            7,
            "the attribute, not the environment"
        );
        let cmd = Probe::augment_args(clap::Command::new("t"));
        let given: Probe = parse_ignoring_env(cmd.clone(), ["t", "--probe", "8"]).unwrap();
        assert_eq!(given.probe, 8, "the command line still counts");
        let from_env = Probe::from_arg_matches(&cmd.get_matches_from(["t"])).unwrap();
        assert_eq!(from_env.probe, 9, "a real parse reads the environment");
    }

    /// Debug text (secrets show redacted) of `T` parsed from `args`, environment ignored.
    fn parsed<T: clap::Args + std::fmt::Debug>(args: &[&str]) -> String {
        let cmd = T::augment_args(clap::Command::new("t"));
        let t: T =
            parse_ignoring_env(cmd, std::iter::once("t").chain(args.iter().copied())).unwrap();
        format!("{t:?}")
    }

    #[test]
    fn every_constructor_has_the_flags_defaults() {
        assert_eq!(
            format!("{:?}", KafkaSettings::with_brokers("b:9092")),
            parsed::<KafkaSettings>(&["--kafka-brokers=b:9092"])
        );
        assert_eq!(
            format!("{:?}", DatabaseSettings::new("postgres://h/d")),
            parsed::<DatabaseSettings>(&["--database-url=postgres://h/d"])
        );
        let database = DatabaseSettings::new("postgres://h/d");
        assert_eq!(database.pool_size, 8);
        assert_eq!(
            (database.pool_wait, database.connect_timeout),
            (Duration::from_secs(5), Duration::from_secs(5))
        );
        let consume = crate::worker::ConsumeSettings::default();
        assert_eq!(
            format!("{consume:?}"),
            parsed::<crate::worker::ConsumeSettings>(&[])
        );
        assert_eq!(
            (consume.max_batch, consume.linger),
            (1000, Duration::from_millis(20))
        );
        let binding = crate::kollus::binding::BindingSettings::default();
        assert_eq!(
            format!("{binding:?}"),
            parsed::<crate::kollus::binding::BindingSettings>(&[])
        );
        assert_eq!(binding.player_binding_uservalue, "uservalue99");
        assert!(binding.binding().unwrap().is_none(), "off without a key");
    }

    #[test]
    fn a_pool_timeout_of_zero_or_past_ten_minutes_is_refused_naming_its_flag() {
        for (flag, value) in [
            ("--database-pool-wait-ms", "0"),
            ("--database-connect-timeout-ms", "600001"),
            ("--database-pool-wait-ms", "soon"),
        ] {
            let cmd = DatabaseSettings::augment_args(clap::Command::new("t"));
            let e = parse_ignoring_env::<DatabaseSettings>(cmd, ["t", &format!("{flag}={value}")])
                .expect_err(value)
                .to_string();
            assert!(e.contains(flag), "{e}");
        }
        let given = parsed::<DatabaseSettings>(&["--database-pool-wait-ms=250"]);
        assert!(given.contains("pool_wait: 250ms"), "{given}");
    }

    #[test]
    fn each_enum_has_librdkafkas_names_and_parses_them_back() {
        use strum::VariantNames as _;
        assert_eq!(
            SecurityProtocol::VARIANTS,
            ["plaintext", "ssl", "sasl_plaintext", "sasl_ssl"]
        );
        assert_eq!(
            SaslMechanism::VARIANTS,
            ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
        );
        for p in [
            SecurityProtocol::Plaintext,
            SecurityProtocol::Ssl,
            SecurityProtocol::SaslPlaintext,
            SecurityProtocol::SaslSsl,
        ] {
            assert_eq!(security_protocol(&p.as_str().to_uppercase()), Ok(p));
        }
        for m in [
            SaslMechanism::Plain,
            SaslMechanism::ScramSha256,
            SaslMechanism::ScramSha512,
        ] {
            assert_eq!(
                sasl_mechanism(&format!(" {} ", m.as_str().to_lowercase())),
                Ok(m)
            );
        }
        assert_eq!(
            sasl_mechanism("GSSAPI").unwrap_err(),
            "KAFKA_SASL_MECHANISM \"GSSAPI\": expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512"
        );
        for g in GroupProtocol::value_variants() {
            let name = g.to_possible_value().unwrap();
            assert_eq!(g.as_str(), name.get_name(), "librdkafka's name is clap's");
        }
        assert_eq!(GroupProtocol::Consumer.as_str(), "consumer");
    }

    #[test]
    fn replication_defaults_to_one_copy_and_one_in_sync() {
        let parsed = kafka(&[]).unwrap();
        assert_eq!(parsed.replication_factor, 1);
        assert_eq!(parsed.min_insync_replicas(), 1);
        assert_eq!(parsed.check(), Ok(()));
        let built = KafkaSettings::with_brokers("b:9092");
        assert_eq!(
            (built.replication_factor, built.min_insync_replicas()),
            (1, 1),
            "with_brokers has clap's defaults"
        );
    }

    #[test]
    fn min_insync_defaults_to_one_less_than_the_replication_factor() {
        for (rf, want) in [("1", 1), ("2", 1), ("3", 2), ("5", 4)] {
            let s = kafka(&["--kafka-replication-factor", rf]).unwrap();
            assert_eq!(s.min_insync_replicas(), want, "RF {rf}");
            assert_eq!(s.check(), Ok(()));
        }
        let s = kafka(&[
            "--kafka-replication-factor",
            "3",
            "--kafka-min-insync-replicas",
            "3",
        ])
        .unwrap();
        assert_eq!(s.min_insync_replicas(), 3, "an explicit value is kept");
        assert_eq!(s.check(), Ok(()));
    }

    #[test]
    fn min_insync_above_the_replication_factor_is_refused_by_name() {
        let s = kafka(&[
            "--kafka-replication-factor",
            "2",
            "--kafka-min-insync-replicas",
            "3",
        ])
        .unwrap();
        let err = s.check().unwrap_err();
        assert!(err.contains("KAFKA_MIN_INSYNC_REPLICAS"), "{err}");
        assert!(err.contains("KAFKA_REPLICATION_FACTOR"), "{err}");
        let mut built = KafkaSettings::with_brokers("b:9092");
        built.min_insync = Some(2);
        assert!(built.check().is_err(), "RF 1 with 2 in sync");
    }

    #[test]
    fn copies_below_one_or_not_a_number_are_refused() {
        for bad in ["0", "-1", "x", "40000"] {
            let err = kafka(&[&format!("--kafka-replication-factor={bad}")]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad}: {err}"
            );
            let err = kafka(&[&format!("--kafka-min-insync-replicas={bad}")]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation);
        }
        let mut built = KafkaSettings::with_brokers("b:9092");
        built.replication_factor = 0;
        let err = built.check().unwrap_err();
        assert!(err.contains("KAFKA_REPLICATION_FACTOR"), "{err}");
    }

    #[test]
    fn the_group_protocol_is_consumer_by_default_and_classic_on_request() {
        let parsed = kafka(&[]).unwrap();
        assert_eq!(parsed.group_protocol, GroupProtocol::Consumer);
        assert_eq!(parsed.session_timeout_ms, None);
        assert_eq!(parsed.ignored_group_setting(), None);
        let built = KafkaSettings::with_brokers("b:9092");
        assert_eq!(
            (built.group_protocol, built.session_timeout_ms),
            (GroupProtocol::Consumer, None),
            "with_brokers has clap's defaults"
        );
        let classic = kafka(&["--group-protocol", "classic"]).unwrap();
        assert_eq!(classic.group_protocol, GroupProtocol::Classic);
        assert_eq!(
            classic.classic_session_timeout_ms(),
            45_000,
            "Kafka's own default"
        );
        let short = kafka(&[
            "--group-protocol",
            "classic",
            "--session-timeout-ms",
            "6000",
        ])
        .unwrap();
        assert_eq!(short.classic_session_timeout_ms(), 6000);
        assert_eq!(
            short.ignored_group_setting(),
            None,
            "classic uses the timeout"
        );
    }

    #[test]
    fn an_unknown_group_protocol_is_refused_naming_the_choices() {
        let err = kafka(&["--group-protocol", "eager"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
        let text = err.to_string();
        assert!(
            text.contains("eager") && text.contains("consumer") && text.contains("classic"),
            "{text}"
        );
    }

    #[test]
    fn a_session_timeout_out_of_range_is_refused() {
        for bad in ["0", "999", "300001", "x"] {
            let err = kafka(&[&format!("--session-timeout-ms={bad}")]).unwrap_err();
            assert_eq!(
                err.kind(),
                clap::error::ErrorKind::ValueValidation,
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn a_session_timeout_under_the_consumer_protocol_is_named_as_ignored() {
        let s = kafka(&["--session-timeout-ms", "6000"]).unwrap();
        let warning = s.ignored_group_setting().expect("a warning");
        assert!(
            warning.contains("KAFKA_SESSION_TIMEOUT_MS=6000"),
            "{warning}"
        );
        assert!(
            warning.contains("group.consumer.session.timeout.ms"),
            "{warning}"
        );
    }

    #[test]
    fn security_defaults_to_plaintext_and_parses_any_case() {
        let parsed = kafka(&[]).unwrap();
        assert_eq!(parsed.security_protocol, SecurityProtocol::Plaintext);
        assert_eq!(parsed.check(), Ok(()));
        let s = kafka(&[
            "--kafka-security-protocol=SASL_SSL",
            "--kafka-sasl-mechanism=scram-sha-512",
            "--kafka-sasl-username=svc",
            "--kafka-sasl-password=pw-0123",
        ])
        .unwrap();
        assert_eq!(s.security_protocol, SecurityProtocol::SaslSsl);
        assert_eq!(s.sasl_mechanism, Some(SaslMechanism::ScramSha512));
        assert_eq!(s.check(), Ok(()));
        for bad in ["tls", "sasl", ""] {
            let err = kafka(&[&format!("--kafka-security-protocol={bad}")]).unwrap_err();
            assert_eq!(err.kind(), clap::error::ErrorKind::ValueValidation, "{bad}");
            assert!(err.to_string().contains("sasl_ssl"), "{err}");
        }
        let err = kafka(&["--kafka-sasl-mechanism=GSSAPI"]).unwrap_err();
        assert!(err.to_string().contains("SCRAM-SHA-512"), "{err}");
    }

    #[test]
    fn sasl_without_its_settings_is_refused_by_name_never_showing_the_password() {
        let password = "the-sasl-password-0123";
        let full = [
            "--kafka-security-protocol=sasl_ssl",
            "--kafka-sasl-mechanism=PLAIN",
            "--kafka-sasl-username=svc",
        ];
        let with_password = format!("--kafka-sasl-password={password}");
        for (missing, want) in [
            (1, "KAFKA_SASL_MECHANISM"),
            (2, "KAFKA_SASL_USERNAME"),
            (3, "KAFKA_SASL_PASSWORD"),
        ] {
            let mut args: Vec<&str> = full.to_vec();
            args.push(&with_password);
            args.remove(missing);
            let err = kafka(&args).unwrap().check().unwrap_err();
            assert!(err.contains(want), "{want}: {err}");
            assert!(!err.contains(password), "{err}");
        }
        // SASL settings on a protocol without SASL would be ignored: refused.
        let err = kafka(&[&with_password]).unwrap().check().unwrap_err();
        assert!(err.contains("KAFKA_SASL_PASSWORD is set"), "{err}");
        assert!(!err.contains(password), "{err}");
        let s = kafka(&[&full[..], &[with_password.as_str()]].concat()).unwrap();
        let debug = format!("{s:?}");
        assert!(debug.contains("svc"), "{debug}");
        assert!(
            !debug.contains(password),
            "Debug shows the password: {debug}"
        );
        let config = format!("{:?}", crate::kafka::base_config(&s, "c"));
        assert!(!config.contains(password), "{config}");
        // An empty password is refused by name, without the value.
        let err = kafka(&["--kafka-sasl-password="]).unwrap_err().to_string();
        assert!(
            err.contains("--sasl_password") || err.contains("KAFKA_SASL_PASSWORD"),
            "{err}"
        );
    }

    #[test]
    fn tls_files_must_exist_go_together_and_need_tls() {
        let missing = "/nonexistent/kollus-ca.pem";
        let err = kafka(&[
            "--kafka-security-protocol=ssl",
            &format!("--kafka-ssl-ca-location={missing}"),
        ])
        .unwrap()
        .check()
        .unwrap_err();
        assert!(
            err.starts_with("KAFKA_SSL_CA_LOCATION: reading /nonexistent"),
            "{err}"
        );
        let err = kafka(&["--kafka-ssl-ca-location=/etc/hostname"])
            .unwrap()
            .check()
            .unwrap_err();
        assert!(err.contains("KAFKA_SSL_CA_LOCATION is set"), "{err}");
        let err = kafka(&[
            "--kafka-security-protocol=ssl",
            "--kafka-ssl-certificate-location=/etc/hostname",
        ])
        .unwrap()
        .check()
        .unwrap_err();
        assert!(err.contains("KAFKA_SSL_KEY_LOCATION"), "{err}");
        let s = kafka(&[
            "--kafka-security-protocol=Ssl",
            "--kafka-ssl-ca-location=/etc/hostname",
        ])
        .unwrap();
        assert_eq!(s.check(), Ok(()));
        let config = crate::kafka::base_config(&s, "c");
        assert_eq!(config.get("security.protocol"), Some("ssl"));
        assert_eq!(config.get("ssl.ca.location"), Some("/etc/hostname"));
        assert_eq!(config.get("sasl.mechanism"), None);
    }

    #[test]
    fn secret_files_fill_their_variable_and_refuse_two_sources() {
        let dir = std::env::temp_dir().join(format!("kollus-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("s");
        std::fs::write(&file, "from-a-file\n").unwrap();
        std::env::set_var("KOLLUS_TEST_SECRET_A_FILE", &file);
        load_secret_files(&["KOLLUS_TEST_SECRET_A"]).unwrap();
        assert_eq!(
            std::env::var("KOLLUS_TEST_SECRET_A").unwrap(),
            "from-a-file"
        );
        let err = load_secret_files(&["KOLLUS_TEST_SECRET_A"]).unwrap_err();
        assert!(err.contains("both set"), "{err}");
        std::env::set_var("KOLLUS_TEST_SECRET_B_FILE", dir.join("missing"));
        let err = load_secret_files(&["KOLLUS_TEST_SECRET_B"]).unwrap_err();
        assert!(
            err.starts_with("KOLLUS_TEST_SECRET_B_FILE: reading"),
            "{err}"
        );
        assert!(!err.contains("from-a-file"), "never the content");
    }
}
