//! Callback trust (issue 26): each secret opens only its own routes, a rotation's previous value
//! lands until its expiry and never after, platform callbacks from outside CALLBACK_ALLOW_CIDRS
//! are refused, and `X-Forwarded-For` is believed only from our own proxies.

use std::time::Duration;

use kollus_common::client_addr::Networks;
use kollus_test_support::{eventually, fixture, scrape};
use secrecy::SecretString;
use time::OffsetDateTime;

use crate::helpers::*;

const PLATFORM_ROUTES: [(&str, &str); 4] = [
    ("upload", "upload.form"),
    ("transcoding", "transcoding-success.form"),
    ("content", "content-delete.form"),
    ("channel", "channel-join.form"),
];

fn all_topics(app: &TestApp) -> [&str; 3] {
    [
        &app.topics.playback,
        &app.topics.content,
        &app.topics.deadletter,
    ]
}

#[tokio::test]
async fn the_lms_secret_every_viewer_holds_opens_no_platform_route() {
    let app = spawn_app().await;
    for (route, body) in PLATFORM_ROUTES {
        let res = app
            .post_with_secret(route, LMS_SECRET, FORM, fixture(body))
            .await;
        assert_eq!(res.status(), 401, "{route} with the LMS secret");
    }
    for topic in all_topics(&app) {
        assert_eq!(app.count(topic), 0, "nothing kept on {topic}");
    }
    // The platform routes take their own secret.
    for (route, body) in PLATFORM_ROUTES {
        let res = app.post(route, FORM, fixture(body)).await;
        assert_eq!(res.status(), 200, "{route} with CALLBACK_SECRET");
    }
    assert_eq!(app.count(&app.topics.content), 4);
}

#[tokio::test]
async fn the_platform_secret_still_opens_the_lms_route_and_is_counted() {
    let app = spawn_app().await;
    let sample =
        r#"kollus_ingest_callback_auth_total{generation="current",route="lms",secret="platform"}"#;
    assert_eq!(scrape(&app.address, sample).await, Some(0.0));
    let res = app
        .post_with_secret("lms", SECRET, FORM, fixture("lms-seed.form"))
        .await;
    assert_eq!(res.status(), 200, "an upgrade not finished keeps working");
    assert_eq!(scrape(&app.address, sample).await, Some(1.0));
    let own = r#"kollus_ingest_callback_auth_total{generation="current",route="lms",secret="lms"}"#;
    assert_eq!(scrape(&app.address, own).await, Some(0.0));
    assert_eq!(
        app.post("lms", FORM, fixture("lms-seed.form"))
            .await
            .status(),
        200
    );
    assert_eq!(scrape(&app.address, own).await, Some(1.0));
}

#[tokio::test]
async fn an_encoded_secret_name_authenticates_and_is_never_archived() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(format!(
            "{}/kollus/lms?s%65cret={LMS_SECRET}&uservalue0=x",
            app.address
        ))
        .header("content-type", FORM)
        .body(fixture("lms-seed.form"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v = value(&app.records(&app.topics.playback, 1).await[0]);
    let kept = v["raw"]["query_string"].as_str().unwrap_or_default();
    assert_eq!(
        kept, "uservalue0=x",
        "the secret's pair is stripped by its decoded name"
    );
    assert!(
        !v.to_string().contains(LMS_SECRET),
        "the secret is nowhere in the record"
    );
}

#[tokio::test]
async fn a_previous_platform_secret_lands_until_its_expiry_and_is_refused_after() {
    const OLD: &str = "the-previous-callback-secret";
    let until = OffsetDateTime::now_utc() + time::Duration::seconds(3);
    let app = spawn_app_with(|s| {
        s.callback_secret_rotation.previous = Some(SecretString::from(OLD));
        s.callback_secret_rotation.until = Some(until);
    })
    .await;
    let res = app
        .post_with_secret("upload", OLD, FORM, fixture("upload.form"))
        .await;
    assert_eq!(res.status(), 200, "Kollus's retry of the old URL lands");
    let previous = r#"kollus_ingest_callback_auth_total{generation="previous",route="upload",secret="platform"}"#;
    assert_eq!(scrape(&app.address, previous).await, Some(1.0));
    // It stops at its expiry, while the current value goes on.
    eventually(
        "the previous secret refused",
        Duration::from_secs(20),
        || async {
            let res = app
                .post_with_secret("upload", OLD, FORM, fixture("upload.form"))
                .await;
            (res.status() == 401).then_some(())
        },
    )
    .await;
    assert!(
        OffsetDateTime::now_utc() >= until,
        "refused only once expired"
    );
    assert_eq!(
        app.post("upload", FORM, fixture("upload.form"))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn two_secrets_with_one_value_or_an_overlap_past_a_day_do_not_start() {
    let app = spawn_app().await;
    let broker = app.broker.settings();
    let mut same = settings(broker.clone());
    same.lms_callback_secret = SecretString::from(SECRET);
    let err = kollus_ingest::startup::Application::build(same)
        .await
        .err()
        .expect("equal secrets refused")
        .to_string();
    assert!(
        err.contains("CALLBACK_SECRET and LMS_CALLBACK_SECRET"),
        "{err}"
    );
    assert!(!err.contains(SECRET), "never the value: {err}");

    let mut long = settings(broker);
    long.callback_secret_rotation.previous =
        Some(SecretString::from("the-previous-callback-secret"));
    long.callback_secret_rotation.until =
        Some(OffsetDateTime::now_utc() + time::Duration::hours(30));
    let err = kollus_ingest::startup::Application::build(long)
        .await
        .err()
        .expect("a long overlap refused")
        .to_string();
    assert!(err.contains("more than a day"), "{err}");

    let mut key = settings(app.broker.settings());
    key.binding.player_binding_key = Some(SecretString::from(LMS_SECRET));
    let err = kollus_ingest::startup::Application::build(key)
        .await
        .err()
        .expect("a binding key equal to the public LMS secret refused")
        .to_string();
    assert!(
        err.contains("LMS_CALLBACK_SECRET and PLAYER_BINDING_KEY"),
        "{err}"
    );
}

#[tokio::test]
async fn platform_callbacks_from_outside_the_allowed_networks_are_403_and_lms_is_not_checked() {
    let app = spawn_app_with(|s| {
        s.callback_allow_cidrs = Networks::parse("192.0.2.0/24").unwrap();
    })
    .await;
    let res = app.post("upload", FORM, fixture("upload.form")).await;
    assert_eq!(res.status(), 403, "127.0.0.1 is not Kollus");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "forbidden_source");
    // Without trusted proxies, a forwarded-for header changes nothing.
    let res = app
        .client
        .post(format!("{}/kollus/upload?secret={SECRET}", app.address))
        .header("x-forwarded-for", "192.0.2.5")
        .header("content-type", FORM)
        .body(fixture("upload.form"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.status(),
        403,
        "an untrusted peer cannot claim an address"
    );
    assert_eq!(app.count(&app.topics.content), 0);
    // Players post from anywhere: the LMS route is never address-checked.
    assert_eq!(
        app.post("lms", FORM, fixture("lms-seed.form"))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.count(&app.topics.playback),
        1,
        "what is kept is counted"
    );
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_right_most_untrusted_hop_is_the_source() {
    let app = spawn_app_with(|s| {
        s.callback_allow_cidrs = Networks::parse("192.0.2.0/24").unwrap();
        s.proxies.trusted_proxies = Networks::parse("127.0.0.1").unwrap();
    })
    .await;
    let post = |xff: &'static str| {
        app.client
            .post(format!("{}/kollus/upload?secret={SECRET}", app.address))
            .header("x-forwarded-for", xff)
            .header("content-type", FORM)
            .body(fixture("upload.form"))
            .send()
    };
    // The client wrote "192.0.2.5" itself; our proxy appended its real address.
    assert_eq!(post("192.0.2.5, 198.51.100.7").await.unwrap().status(), 403);
    assert_eq!(post("198.51.100.7, 192.0.2.5").await.unwrap().status(), 200);
    let v = value(&app.records(&app.topics.content, 1).await[0]);
    assert_eq!(
        v["source_ip"], "192.0.2.5",
        "the envelope records the client, not the proxy"
    );
}

const BINDING_KEY: &str = "test-player-binding-key-0123";

fn binding(
    mode: kollus_common::kollus::binding::BindingMode,
) -> impl FnOnce(&mut kollus_ingest::configuration::Settings) {
    move |s| {
        s.binding.player_binding = Some(mode);
        s.binding.player_binding_key = Some(SecretString::from(BINDING_KEY));
    }
}

/// The seed report (user 181353) with `uservalue99` set in its URL. A client of its own: a
/// pooled connection idle past actix's keep-alive (5 s, while the test reads a topic) is closed
/// by the server just as it is reused.
async fn post_bound(app: &TestApp, uservalue99: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!(
            "{}/kollus/lms?uservalue99={uservalue99}&secret={LMS_SECRET}",
            app.address
        ))
        .header("content-type", FORM)
        .body(fixture("lms-seed.form"))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn under_require_a_report_without_its_users_binding_is_refused_and_dead_lettered() {
    use kollus_common::kollus::binding::{BindingMode, PlayerBinding};
    let app = spawn_app_with(binding(BindingMode::Require)).await;
    let b = PlayerBinding::new(
        BindingMode::Require,
        &SecretString::from(BINDING_KEY),
        "uservalue99",
    )
    .unwrap();
    // None, another user's (a forger's own player URL), made up: refused, dead-lettered.
    let res = app.post("lms", FORM, fixture("lms-seed.form")).await;
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "lms_unbound");
    assert_eq!(post_bound(&app, &b.value_for("forger")).await.status(), 400);
    assert_eq!(post_bound(&app, "made-up").await.status(), 400);
    assert_eq!(
        app.count(&app.topics.playback),
        0,
        "nothing reaches history"
    );
    // Each of the three kept, with its own binding value (none, the forger's, made up), and
    // refused as unbound.
    let forged = b.value_for("forger");
    let dead = app.dead_letters(3).await;
    let mut kept: Vec<(Option<&str>, &str)> = dead
        .iter()
        .map(|d| {
            let value = d.get("query").map(|q| {
                q.get("uservalue99")
                    .and_then(|v| v.as_str())
                    .unwrap_or_else(|| panic!("a query without uservalue99: {d}"))
            });
            (value, d["reason"].as_str().expect("a reason"))
        })
        .collect();
    kept.sort_unstable();
    let mut want = vec![
        (None, "lms_unbound"),
        (Some(forged.as_str()), "lms_unbound"),
        (Some("made-up"), "lms_unbound"),
    ];
    want.sort_unstable();
    assert_eq!(kept, want);
    // The user's own binding: kept, and said so.
    assert_eq!(post_bound(&app, &b.value_for("181353")).await.status(), 200);
    let v = value(&app.records(&app.topics.playback, 1).await[0]);
    assert_eq!(v["binding"], "bound");
    let sample = r#"kollus_ingest_lms_binding_total{binding="mismatch"}"#;
    assert_eq!(scrape(&app.address, sample).await, Some(2.0));
}

#[tokio::test]
async fn under_record_an_unbound_report_is_kept_and_marked() {
    use kollus_common::kollus::binding::BindingMode;
    let app = spawn_app_with(binding(BindingMode::Record)).await;
    assert_eq!(
        app.post("lms", FORM, fixture("lms-seed.form"))
            .await
            .status(),
        200
    );
    let v = value(&app.records(&app.topics.playback, 1).await[0]);
    assert_eq!(v["binding"], "absent");
    // Off (no key): no verdict at all.
    let off = spawn_app().await;
    assert_eq!(
        off.post("lms", FORM, fixture("lms-seed.form"))
            .await
            .status(),
        200
    );
    let v = value(&off.records(&off.topics.playback, 1).await[0]);
    assert!(v.get("binding").is_none(), "{v}");
}
