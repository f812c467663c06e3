use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac};
use kollus_test_support::TestDb;
use kollus_token_api::configuration::Settings;
use kollus_token_api::startup::Application;
use sha2::Sha256;

pub const SECURITY_KEY: &str = "test-security-key-0123456789";
pub const CUSTOM_KEY: &str = "custom-key-abc";
pub const APP_KEY: &str = "app-key-0123456789abcdef";
pub const OPS_KEY: &str = "ops-key-0123456789abcdef";
/// `PLAY_CALLBACK_SECRET`: the play and DRM callbacks' own secret.
pub const PLAY_SECRET: &str = "test-play-callback-secret-0123";
/// `CALLBACK_SECRET`, the platform secret: unset unless a test sets it.
pub const CALLBACK_SECRET: &str = "test-callback-secret-0123";

pub struct TestApp {
    pub address: String,
    pub db: TestDb,
    pub client: reqwest::Client,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Settings)) -> TestApp {
    let db = TestDb::new().await;
    let mut settings = test_settings(&db);
    tweak(&mut settings);
    let app = Application::build(settings)
        .await
        .expect("building token-api");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address,
        db,
        client: reqwest::Client::new(),
    }
}

/// The settings every test starts from, on `db`.
pub fn test_settings(db: &TestDb) -> Settings {
    let api_keys = format!("app:{APP_KEY},ops:{OPS_KEY}");
    let key_args = kollus_test_support::key_files().args();
    let mut s: Settings = kollus_test_support::settings(&[
        kollus_test_support::EPHEMERAL_PORT,
        &key_args[0],
        &key_args[1],
        &key_args[2],
        "--security-key",
        SECURITY_KEY,
        "--custom-key",
        CUSTOM_KEY,
        "--api-keys",
        &api_keys,
        "--play-callback-secret",
        PLAY_SECRET,
        // Exact answers unless a test is about the cache.
        "--strict-catalog-cache=0",
    ]);
    s.database = db.settings();
    // No broker unless a test gives one (erasures are then kept unpublished, and read the
    // topics' retention from KAFKA_RETENTION_DAYS): never a broker that happens to listen on
    // the default port.
    s.kafka.brokers = "127.0.0.1:1".into();
    s
}

impl TestApp {
    pub async fn issue(&self, key: &str, body: serde_json::Value) -> reqwest::Response {
        self.client
            .post(format!("{}/v1/playback-tokens", self.address))
            .bearer_auth(key)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// Puts a video in the catalog as sync-worker would leave it.
    pub async fn catalog(&self, media: &str, in_channel: bool, deleted: bool) {
        let db = self.db.client().await;
        db.execute(
            "INSERT INTO uploads (upload_file_key, first_event_at, last_event_at, deleted_at) \
             VALUES ($1, now(), now(), CASE WHEN $2 THEN now() END)",
            &[&format!("u-{media}"), &deleted],
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO media_contents VALUES ($1, $2, now(), now())",
            &[&media, &format!("u-{media}")],
        )
        .await
        .unwrap();
        db.execute(
            "INSERT INTO channel_memberships (media_content_key, channel_key, in_channel, \
                 decided_at, decided_by) VALUES ($1, 'ch', $2, now(), gen_random_uuid())",
            &[&media, &in_channel],
        )
        .await
        .unwrap();
    }
}

impl TestApp {
    /// The value `/metrics` shows for one series, e.g. `kollus_token_issued_total{outcome="issued"}`.
    pub async fn metric(&self, series: &str) -> u64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("no {series} in /metrics:\n{text}"))
            .parse()
            .unwrap()
    }

    /// Gives a catalogued video what Kollus's API says of it (V13's columns), absent or not.
    pub async fn describe(&self, media: &str, title: &str, absent: bool) {
        self.db
            .client()
            .await
            .execute(
                "UPDATE uploads SET title = $2, duration_seconds = 754, \
                     poster_url = 'https://img.example/' || $1 || '.jpg', \
                     transcoding_stage = 21, transcoding_stage_name = 'Transcoded', \
                     absent_since = CASE WHEN $3 THEN '2026-11-30T03:00:00Z'::timestamptz END \
                 WHERE upload_file_key = 'u-' || $1",
                &[&media, &title, &absent],
            )
            .await
            .unwrap();
    }
}

/// Verifies an HS256 JWT with HMAC-SHA256 directly (not the library that signed it) and
/// returns its header and claims.
pub fn verify_independently(token: &str, key: &str) -> (serde_json::Value, serde_json::Value) {
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "a JWS compact token has three parts");
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(format!("{}.{}", parts[0], parts[1]).as_bytes());
    let signature = URL_SAFE_NO_PAD
        .decode(parts[2])
        .expect("base64url signature");
    mac.verify_slice(&signature)
        .expect("the signature verifies with the security key");
    let decode = |p: &str| -> serde_json::Value {
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).expect("base64url")).expect("JSON")
    };
    (decode(parts[0]), decode(parts[1]))
}

/// Signs `header` and `claims` as a compact JWS with HMAC-SHA256 under `key`, directly (not the
/// library the service uses): a forger's token, or with `key` the security key a genuine one.
pub fn sign_independently(
    header: &serde_json::Value,
    claims: &serde_json::Value,
    key: &str,
) -> String {
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(signing_input.as_bytes());
    format!(
        "{signing_input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

/// `value[key]`, which must be there. Indexing a `serde_json::Value` gives `Null` for a key
/// that is missing, so `v["k"] == Value::Null` holds as well when `k` was never sent.
#[track_caller]
pub fn present<'a>(value: &'a serde_json::Value, key: &str) -> &'a serde_json::Value {
    value
        .get(key)
        .unwrap_or_else(|| panic!("no {key:?} in {value}"))
}
