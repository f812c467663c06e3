//! Callback trust (issue 26) on token-api's play and DRM callbacks: their own secret opens them,
//! the platform secret too but counted, anything else is a 401 that records nothing; a rotation's
//! previous value lands until its expiry and never after; a deployment that would silently turn
//! the callbacks off does not start.

use std::time::Duration;

use kollus_test_support::{eventually, scrape};
use secrecy::SecretString;
use time::OffsetDateTime;

use crate::helpers::*;

const PLAY_FORM: &[(&str, &str)] = &[
    ("kind", "1"),
    ("client_user_id", "victim"),
    ("media_content_key", "media-1"),
    ("player_id", "player-1"),
];

async fn post(app: &TestApp, path: &str, secret: &str) -> reqwest::Response {
    let form: Vec<(&str, String)> = if path == "drm" {
        let items = serde_json::json!([{
            "kind": 1, "client_user_id": "victim", "media_content_key": "media-1",
            "player_id": "player-1", "session_key": "s-1"
        }]);
        vec![("items", items.to_string())]
    } else {
        PLAY_FORM.iter().map(|(k, v)| (*k, v.to_string())).collect()
    };
    app.client
        .post(format!("{}/kollus/{path}?secret={secret}", app.address))
        .form(&form)
        .send()
        .await
        .unwrap()
}

async fn decisions(app: &TestApp) -> i64 {
    let client = app.db.client().await;
    client
        .query_one("SELECT count(*) FROM playback_decisions", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test]
async fn only_the_play_secret_opens_play_and_drm_and_a_wrong_one_records_nothing() {
    let app = spawn_app().await;
    for path in ["play", "drm"] {
        for wrong in [CALLBACK_SECRET, "test-callback-secret-0123-lms", "", "x"] {
            assert_eq!(
                post(&app, path, wrong).await.status(),
                401,
                "{path} with {wrong:?}"
            );
        }
    }
    assert_eq!(
        decisions(&app).await,
        0,
        "a refused callback records no decision"
    );
    for path in ["play", "drm"] {
        assert_eq!(post(&app, path, PLAY_SECRET).await.status(), 200, "{path}");
    }
    assert_eq!(decisions(&app).await, 2);
}

#[tokio::test]
async fn the_platform_secret_when_set_is_taken_on_play_and_counted() {
    let app = spawn_app_with(|s| {
        s.play.callback_secret = Some(SecretString::from(CALLBACK_SECRET));
    })
    .await;
    let sample = r#"kollus_token_callback_auth_total{callback="play",generation="current",secret="platform"}"#;
    assert_eq!(scrape(&app.address, sample).await, Some(0.0));
    assert_eq!(post(&app, "play", CALLBACK_SECRET).await.status(), 200);
    assert_eq!(scrape(&app.address, sample).await, Some(1.0));
}

#[tokio::test]
async fn a_previous_play_secret_lands_until_its_expiry_and_is_refused_after() {
    const OLD: &str = "the-previous-play-callback-secret";
    let until = OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let app = spawn_app_with(|s| {
        s.play.play_callback_secret_previous = Some(SecretString::from(OLD));
        s.play.play_callback_secret_previous_until = Some(until);
    })
    .await;
    assert_eq!(post(&app, "play", OLD).await.status(), 200);
    let sample =
        r#"kollus_token_callback_auth_total{callback="play",generation="previous",secret="play"}"#;
    assert_eq!(scrape(&app.address, sample).await, Some(1.0));
    eventually(
        "the previous secret refused",
        Duration::from_secs(20),
        || async { (post(&app, "drm", OLD).await.status() == 401).then_some(()) },
    )
    .await;
    assert!(
        OffsetDateTime::now_utc() >= until,
        "refused only once expired"
    );
    assert_eq!(post(&app, "drm", PLAY_SECRET).await.status(), 200);
}

#[tokio::test]
async fn settings_that_would_leak_or_silently_switch_off_the_callbacks_do_not_start() {
    let build = |tweak: fn(&mut kollus_token_api::configuration::Settings)| async move {
        let db = kollus_test_support::TestDb::new().await;
        let mut settings = test_settings(&db);
        tweak(&mut settings);
        kollus_token_api::startup::Application::build(settings)
            .await
            .err()
            .map(|e| format!("{e:#}"))
    };
    let err = build(|s| {
        s.play.play_callback_secret = None;
        s.play.callback_secret = Some(SecretString::from(CALLBACK_SECRET));
    })
    .await
    .expect("the platform secret alone is refused");
    assert!(err.contains("PLAY_CALLBACK_SECRET is not"), "{err}");
    let err = build(|s| {
        s.play.callback_secret = Some(SecretString::from(PLAY_SECRET));
    })
    .await
    .expect("equal secrets are refused");
    assert!(
        err.contains("PLAY_CALLBACK_SECRET and CALLBACK_SECRET"),
        "{err}"
    );
    assert!(!err.contains(PLAY_SECRET), "never the value: {err}");
    let err = build(|s| {
        s.play.play_callback_secret_previous = Some(SecretString::from("a-previous-secret-0001"));
    })
    .await
    .expect("a previous value without an expiry is refused");
    assert!(err.contains("PLAY_CALLBACK_SECRET_PREVIOUS_UNTIL"), "{err}");
    let err = build(|s| {
        s.binding.player_binding_key = Some(SecretString::from(PLAY_SECRET));
    })
    .await
    .expect("the binding key equal to a secret is refused");
    assert!(
        err.contains("PLAY_CALLBACK_SECRET and PLAYER_BINDING_KEY"),
        "{err}"
    );
    let err = build(|s| {
        s.play.lms_callback_secret = Some(SecretString::from(PLAY_SECRET));
    })
    .await
    .expect("the public LMS secret equal to the play secret is refused");
    assert!(err.contains("LMS_CALLBACK_SECRET"), "{err}");
    let err = build(|s| {
        s.play.callback_secret_rotation.previous =
            Some(SecretString::from("a-previous-secret-0001"));
    })
    .await
    .expect("a previous platform secret without a current one is refused");
    assert!(err.contains("without CALLBACK_SECRET"), "{err}");
}

/// 401s on /v1 are limited per client address: past 30 failures in a minute an address gets 429
/// before any key is compared (its right key included), while another client goes on; behind a
/// trusted proxy the client is the forwarded address, not the proxy's.
#[tokio::test]
async fn failed_api_keys_are_limited_per_client_address() {
    let app = spawn_app_with(|s| {
        s.proxies.trusted_proxies =
            kollus_common::client_addr::Networks::parse("127.0.0.1").unwrap();
    })
    .await;
    let get = |key: &'static str, client: &'static str| {
        app.client
            .get(format!("{}/v1/media/m1", app.address))
            .bearer_auth(key)
            .header("x-forwarded-for", client)
            .send()
    };
    for i in 0..kollus_token_api::auth::AUTH_FAILURES_ALLOWED {
        let res = get("wrong-key-0123456789", "198.51.100.7").await.unwrap();
        assert_eq!(res.status(), 401, "failure {i}");
    }
    let res = get("wrong-key-0123456789", "198.51.100.7").await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(res.headers()["retry-after"], "60");
    let res = get(APP_KEY, "198.51.100.7").await.unwrap();
    assert_eq!(
        res.status(),
        429,
        "no key is compared for that address, the right one neither"
    );
    let res = get(APP_KEY, "198.51.100.8").await.unwrap();
    assert_ne!(
        res.status(),
        429,
        "another client behind the same proxy goes on"
    );
    assert_ne!(res.status(), 401);
}

#[tokio::test]
async fn auth_failures_per_minute_zero_limits_nothing() {
    let app = spawn_app_with(|s| s.auth_failures_per_minute = 0).await;
    for i in 0..kollus_token_api::auth::AUTH_FAILURES_ALLOWED + 10 {
        let res = app
            .client
            .get(format!("{}/v1/media/m1", app.address))
            .bearer_auth("wrong-key-0123456789")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401, "failure {i}");
    }
}
