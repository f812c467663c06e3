//! Kollus's play and DRM callbacks answered from entitlements and watch history (SPEC.md 5):
//! every answer decoded with `jsonwebtoken` against the security key, claims and header exact.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{json, Value};

use crate::helpers::*;

const FAR: i64 = 1_893_000_000; // 2029-12-27, an expiry in the future for years to come

fn rfc3339(unix: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

/// The answer's claims, after checking status, content type, header and signature.
async fn decoded(res: reqwest::Response) -> Value {
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    assert_eq!(
        res.headers()["content-type"].to_str().unwrap(),
        "text/plain; charset=utf-8"
    );
    assert_eq!(res.headers()["x-kollus-userkey"], CUSTOM_KEY);
    let body = res.text().await.unwrap();
    let mut validation = Validation::new(Algorithm::HS256);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    let data = jsonwebtoken::decode::<Value>(
        &body,
        &DecodingKey::from_secret(SECURITY_KEY.as_bytes()),
        &validation,
    )
    .expect("the answer verifies with the security key");
    assert_eq!(data.header.alg, Algorithm::HS256);
    assert_eq!(data.header.typ.as_deref(), Some("JWT"));
    data.claims
}

impl TestApp {
    async fn grant(&self, user: &str, scope: &str, key: &str, body: Value) -> reqwest::Response {
        self.client
            .put(format!(
                "{}/v1/users/{user}/entitlements/{scope}/{key}",
                self.address
            ))
            .bearer_auth(APP_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn revoke(&self, user: &str, scope: &str, key: &str) -> reqwest::Response {
        self.client
            .delete(format!(
                "{}/v1/users/{user}/entitlements/{scope}/{key}",
                self.address
            ))
            .bearer_auth(APP_KEY)
            .send()
            .await
            .unwrap()
    }

    async fn callback(&self, path: &str, secret: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.client
            .post(format!("{}/kollus/{path}?secret={secret}", self.address))
            .form(form)
            .send()
            .await
            .unwrap()
    }

    async fn play(&self, kind: &str, user: &str, media: &str) -> reqwest::Response {
        self.callback(
            "play",
            PLAY_SECRET,
            &[
                ("kind", kind),
                ("client_user_id", user),
                ("media_content_key", media),
                ("player_id", "player-1"),
                ("device_name", "iPhone"),
                ("uservalues", r#"{"uservalue0":"course-7"}"#),
                ("localtime", "1700000000"),
            ],
        )
        .await
    }

    async fn drm(&self, items: Value) -> reqwest::Response {
        self.callback("drm", PLAY_SECRET, &[("items", &items.to_string())])
            .await
    }

    /// The user's playtime on a video: one watch session, as history-worker would hold it
    /// (the rollup the play callback reads is a view over the sessions).
    async fn watched(&self, user: &str, media: &str, playtime: i64) {
        self.db
            .client()
            .await
            .execute(
                "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, \
                     playtime, real_playtime, first_report_at, last_report_at) \
                 VALUES ($1, $2, 1700000000, $3, $3, now(), now()) \
                 ON CONFLICT (client_user_id, media_content_key, start_at) \
                 DO UPDATE SET playtime = EXCLUDED.playtime",
                &[&user, &media, &playtime],
            )
            .await
            .unwrap();
    }

    async fn count(&self, sql: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(sql, &[])
            .await
            .unwrap()
            .get(0)
    }
}

#[tokio::test]
async fn an_entitled_play_gets_its_expiry_and_the_allowance_left() {
    let app = spawn_app().await;
    let res = app
        .grant(
            "u1",
            "media",
            "m1",
            json!({"expires_at": rfc3339(FAR), "playtime_limit_seconds": 3600}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let granted: Value = res.json().await.unwrap();
    assert_eq!(granted["granted_by"], "app", "the API key's name");
    app.watched("u1", "m1", 1000).await;

    assert_eq!(
        decoded(app.play("1", "u1", "m1").await).await,
        json!({"data": {
            "result": 1, "message": "", "expiration_date": FAR,
            "expiration_playtime": 2600, "vmcheck": 0, "disable_tvout": 0
        }})
    );
    assert_eq!(
        decoded(app.play("3", "u1", "m1").await).await,
        json!({"data": {"result": 1, "message": "", "content_expired": 0}})
    );
    assert_eq!(
        app.count(
            "SELECT count(*) FROM playback_decisions WHERE client_user_id = 'u1' \
             AND result = 1 AND reason = 'entitled' AND playtime_used_seconds = 1000 \
             AND playtime_limit_seconds = 3600 AND player_id = 'player-1'"
        )
        .await,
        2,
        "every decision is recorded with the numbers it used"
    );

    // The allowance used up: refused, with a message for the viewer.
    app.watched("u1", "m1", 3600).await;
    let claims = decoded(app.play("1", "u1", "m1").await).await;
    assert_eq!(claims["data"]["result"], 0);
    assert_eq!(claims["data"]["expiration_playtime"], 0);
    assert_eq!(
        claims["data"]["message"],
        "이 강의의 시청 가능 시간을 모두 사용했습니다."
    );
}

#[tokio::test]
async fn refusals_say_why_and_expired_or_revoked_content_is_marked_expired() {
    let app = spawn_app_with(|s| s.play.lang = kollus_token_api::configuration::Lang::En).await;
    let none = decoded(app.play("1", "nobody", "m1").await).await;
    assert_eq!(
        none,
        json!({"data": {
            "result": 0, "message": "You do not have access to this video.",
            "expiration_date": 0, "expiration_playtime": 0, "vmcheck": 0, "disable_tvout": 0
        }})
    );

    app.grant(
        "u1",
        "media",
        "old",
        json!({"expires_at": rfc3339(1_600_000_000)}),
    )
    .await;
    let expired = decoded(app.play("3", "u1", "old").await).await;
    assert_eq!(
        expired,
        json!({"data": {"result": 0, "message": "Your access to this video has expired.", "content_expired": 1}})
    );

    app.grant("u1", "media", "m2", json!({})).await;
    assert_eq!(
        decoded(app.play("3", "u1", "m2").await).await["data"]["result"],
        1
    );
    assert_eq!(app.revoke("u1", "media", "m2").await.status(), 204);
    assert_eq!(
        app.revoke("u1", "media", "m2").await.status(),
        404,
        "nothing in force to revoke"
    );
    let revoked = decoded(app.play("3", "u1", "m2").await).await;
    assert_eq!(revoked["data"]["content_expired"], 1);
    assert_eq!(
        revoked["data"]["message"],
        "Your access to this video was withdrawn."
    );
    assert_eq!(
        app.count("SELECT count(*) FROM entitlement_changes WHERE client_user_id = 'u1'")
            .await,
        3,
        "two grants and a revocation, each kept"
    );
}

#[tokio::test]
async fn a_channel_entitlement_covers_every_video_the_catalog_has_in_that_channel() {
    let app = spawn_app().await;
    app.catalog("in-ch", true, false).await;
    app.catalog("left-ch", false, false).await;
    app.grant(
        "u1",
        "channel",
        "ch",
        json!({"playtime_limit_seconds": 100}),
    )
    .await;
    let claims = decoded(app.play("1", "u1", "in-ch").await).await;
    assert_eq!(
        (
            &claims["data"]["result"],
            &claims["data"]["expiration_playtime"]
        ),
        (&json!(1), &json!(100))
    );
    assert_eq!(
        decoded(app.play("1", "u1", "left-ch").await).await["data"]["result"],
        0,
        "a video that left the channel is no longer covered"
    );

    let listed: Value = app
        .client
        .get(format!("{}/v1/users/u1/entitlements", app.address))
        .bearer_auth(OPS_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["entitlements"][0]["scope"], "channel");
    assert_eq!(listed["entitlements"][0]["key"], "ch");
    assert_eq!(
        *present(&listed["entitlements"][0], "revoked_at"),
        Value::Null
    );
}

#[tokio::test]
async fn drm_items_are_answered_in_order_and_a_download_counts_once() {
    let app = spawn_app().await;
    app.grant(
        "u1",
        "media",
        "m1",
        json!({"expires_at": rfc3339(FAR), "download": true, "download_limit": 1}),
    )
    .await;
    app.grant("u1", "media", "stream-only", json!({})).await;
    let item = |kind: u8, media: &str, session: &str| {
        json!({"kind": kind, "client_user_id": "u1", "media_content_key": media,
               "player_id": "p1", "session_key": session, "start_at": 1_700_000_000,
               "uservalues": {}, "localtime": 1_700_000_000})
    };
    let claims = decoded(
        app.drm(json!([
            item(1, "m1", "s1"),
            item(1, "stream-only", "s2"),
            item(3, "m1", "s0")
        ]))
        .await,
    )
    .await;
    let data = claims["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(
        data[0],
        json!({"kind": 1, "media_content_key": "m1", "session_key": "s1",
               "start_at": 1_700_000_000, "result": 1, "message": "",
               "expiration_date": FAR, "expiration_count": 0, "expiration_playtime": 0,
               "vmcheck": 0, "content_expired": 0, "content_delete": 0})
    );
    assert_eq!(
        (&data[1]["result"], &data[1]["message"]),
        (&json!(0), &json!("이 강의는 다운로드할 수 없습니다."))
    );
    assert_eq!(data[2]["result"], 1);
    // The download approved completes; Kollus retries the same completion.
    let completed = decoded(
        app.drm(json!([item(2, "m1", "s1"), item(2, "m1", "s1")]))
            .await,
    )
    .await;
    assert_eq!(
        (
            &completed["data"][0]["result"],
            &completed["data"][1]["result"]
        ),
        (&json!(1), &json!(1))
    );
    assert_eq!(app.count("SELECT count(*) FROM drm_downloads").await, 1);

    // The one download allowed is used: the next is refused.
    let again = decoded(app.drm(json!([item(1, "m1", "s3")])).await).await;
    assert_eq!(again["data"][0]["result"], 0);
    assert_eq!(
        again["data"][0]["message"],
        "다운로드 가능 횟수를 모두 사용했습니다."
    );

    // Revoked: a downloaded file is expired and deleted at its next play.
    app.revoke("u1", "media", "m1").await;
    let offline = decoded(app.drm(json!([item(3, "m1", "s1")])).await).await;
    assert_eq!(
        (
            &offline["data"][0]["content_expired"],
            &offline["data"][0]["content_delete"]
        ),
        (&json!(1), &json!(1))
    );
}

impl TestApp {
    async fn decisions(&self, reason: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(
                "SELECT count(*) FROM playback_decisions WHERE callback = 'drm' AND reason = $1",
                &[&reason],
            )
            .await
            .unwrap()
            .get(0)
    }
}

/// Issue 26: a viewer who knows the secret forges "download completed" (kind 2) items to use up
/// someone's download limit. Only a completion whose session key an approval of ours issued
/// (kind 1 answered 1, same user, video and player) counts; any other is recorded, not counted.
#[tokio::test]
async fn a_completion_counts_only_when_an_approval_of_ours_issued_its_session_key() {
    let app = spawn_app().await;
    app.grant(
        "u1",
        "media",
        "m1",
        json!({"download": true, "download_limit": 1}),
    )
    .await;
    app.grant("u1", "media", "stream-only", json!({})).await;
    let item = |kind: u8, user: &str, media: &str, player: &str, session: &str| {
        json!({"kind": kind, "client_user_id": user, "media_content_key": media,
               "player_id": player, "session_key": session, "start_at": 1_700_000_000})
    };
    let unmatched =
        r#"kollus_token_play_decisions_total{kind="drm:2",reason="download_unmatched",result="1"}"#;
    assert_eq!(app.metric(unmatched).await, 0, "shown from the start");

    // A refused approval issues nothing.
    let refused = decoded(
        app.drm(json!([item(1, "u1", "stream-only", "p1", "s-refused")]))
            .await,
    )
    .await;
    assert_eq!(refused["data"][0]["result"], 0);
    // An approval for u1 on p1, and its session key.
    let approved = decoded(app.drm(json!([item(1, "u1", "m1", "p1", "s1")])).await).await;
    assert_eq!(approved["data"][0]["result"], 1);
    assert_eq!(
        approved["data"][0]["session_key"], "s1",
        "the answer echoes it"
    );

    let forged = json!([
        item(2, "u1", "m1", "p1", "never-issued"),
        item(2, "u1", "m1", "p2", "s1"),    // another player
        item(2, "u2", "m1", "p1", "s1"),    // another user
        item(2, "u1", "other", "p1", "s1"), // another video
        item(2, "u1", "stream-only", "p1", "s-refused"),
        // An approval in the same callback is no earlier approval.
        item(1, "u1", "m1", "p1", "s-same"),
        item(2, "u1", "m1", "p1", "s-same"),
    ]);
    let claims = decoded(app.drm(forged).await).await;
    let data = claims["data"].as_array().unwrap();
    assert_eq!(data.len(), 7);
    for (i, answer) in data.iter().enumerate().filter(|(i, _)| *i != 5) {
        assert_eq!(answer["result"], 1, "item {i}: acknowledged, nothing told");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM drm_downloads").await,
        0,
        "no forged completion used up u1's download"
    );
    assert_eq!(
        app.decisions("download_unmatched").await,
        6,
        "each recorded"
    );
    assert_eq!(app.metric(unmatched).await, 6);
    assert_eq!(app.decisions("download_counted").await, 0);

    // The genuine completion counts, once, however often Kollus retries it.
    let genuine = item(2, "u1", "m1", "p1", "s1");
    let claims = decoded(app.drm(json!([genuine.clone(), genuine.clone()])).await).await;
    assert_eq!(claims["data"][0]["result"], 1);
    decoded(app.drm(json!([genuine])).await).await;
    assert_eq!(
        app.count(
            "SELECT count(*) FROM drm_downloads WHERE client_user_id = 'u1' \
             AND media_content_key = 'm1' AND session_key = 's1'"
        )
        .await,
        1
    );
    assert_eq!(app.count("SELECT count(*) FROM drm_downloads").await, 1);
    assert_eq!(app.decisions("download_counted").await, 3);
    assert_eq!(
        app.metric(r#"kollus_token_play_decisions_total{kind="drm:2",reason="download_counted",result="1"}"#)
            .await,
        3
    );
    // The one download allowed is used by the genuine completion: the next is refused.
    let next = decoded(app.drm(json!([item(1, "u1", "m1", "p1", "s2")])).await).await;
    assert_eq!(next["data"][0]["result"], 0);
}

/// Kollus sends a handful of items; a forged callback may not make us answer thousands.
#[tokio::test]
async fn more_than_a_hundred_drm_items_are_refused_naming_the_field() {
    let app = spawn_app().await;
    let item = json!({"kind": 3, "client_user_id": "u1", "media_content_key": "m1"});
    let res = app.drm(Value::Array(vec![item.clone(); 101])).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "items", "{problem}");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("at most 100"),
        "{problem}"
    );
    assert_eq!(
        app.count("SELECT count(*) FROM playback_decisions").await,
        0
    );
    let claims = decoded(app.drm(Value::Array(vec![item; 100])).await).await;
    assert_eq!(claims["data"].as_array().unwrap().len(), 100);
    assert_eq!(
        app.count("SELECT count(*) FROM playback_decisions").await,
        100,
        "every item recorded"
    );
}

/// The facts read stands any stored playtime: a total at the top of `bigint` or far below zero
/// is an answer, never a 500 or a dropped connection, and a negative one adds nothing to the
/// allowance.
#[tokio::test]
async fn extreme_stored_playtimes_are_answered_and_add_nothing_to_the_allowance() {
    let app = spawn_app().await;
    for (user, playtime, left) in [
        ("at-max", i64::MAX, None),
        ("at-min", i64::MIN, Some(3600)),
        ("negative", -1000, Some(3600)),
    ] {
        app.grant(
            user,
            "media",
            "m1",
            json!({"playtime_limit_seconds": 3600, "download": true}),
        )
        .await;
        app.watched(user, "m1", playtime).await;
        let claims = decoded(app.play("1", user, "m1").await).await;
        match left {
            Some(left) => assert_eq!(
                (
                    &claims["data"]["result"],
                    &claims["data"]["expiration_playtime"]
                ),
                (&json!(1), &json!(left)),
                "{user}"
            ),
            None => assert_eq!(claims["data"]["result"], 0, "{user}: used up"),
        }
        let drm = decoded(
            app.drm(
                json!([{"kind": 1, "client_user_id": user, "media_content_key": "m1",
                            "session_key": "s1"}]),
            )
            .await,
        )
        .await;
        assert_eq!(drm["data"][0]["result"], claims["data"]["result"], "{user}");
    }
}

#[tokio::test]
async fn bad_secrets_and_malformed_callbacks_are_refused_and_keep_nothing() {
    let app = spawn_app().await;
    let res = app
        .callback("play", "wrong-secret-0123456789", &[("kind", "1")])
        .await;
    assert_eq!(res.status(), 401);
    let res = app.callback("drm", "", &[("items", "[]")]).await;
    assert_eq!(res.status(), 401);

    for (form, field) in [
        (
            vec![
                ("kind", "7"),
                ("client_user_id", "u1"),
                ("media_content_key", "m1"),
            ],
            "kind",
        ),
        (
            vec![("kind", "1"), ("media_content_key", "m1")],
            "client_user_id",
        ),
        (
            vec![
                ("kind", "1"),
                ("client_user_id", "u1"),
                ("media_content_key", "bad key!"),
            ],
            "media_content_key",
        ),
        (
            vec![
                ("kind", "1"),
                ("client_user_id", "u1"),
                ("media_content_key", "m1"),
                ("uservalues", "{not json"),
            ],
            "uservalues",
        ),
    ] {
        let res = app.callback("play", PLAY_SECRET, &form).await;
        assert_eq!(res.status(), 400, "{form:?}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], field, "{problem}");
    }
    let res = app
        .drm(json!([{"kind": 2, "client_user_id": "u1", "media_content_key": "m1"}]))
        .await;
    let problem: Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "items[0].session_key");
    assert_eq!(
        app.count("SELECT count(*) FROM playback_decisions").await,
        0,
        "nothing decided, nothing recorded"
    );

    let bad = app
        .grant("u1", "media", "m1", json!({"playtime_limit_seconds": -5}))
        .await;
    assert_eq!(bad.status(), 400);
    let problem: Value = bad.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "playtime_limit_seconds");
    let unknown = app
        .grant("u1", "media", "m1", json!({"expires": "tomorrow"}))
        .await;
    assert_eq!(unknown.status(), 400);
}

#[tokio::test]
async fn play_default_allow_lets_unknown_users_play() {
    let app =
        spawn_app_with(|s| s.play.default = kollus_token_api::configuration::PlayDefault::Allow)
            .await;
    let claims = decoded(app.play("1", "stranger", "m9").await).await;
    assert_eq!(claims["data"]["result"], 1);
    assert_eq!(claims["data"]["expiration_playtime"], 0, "no limit");
}

/// `PLAY_TIMEOUT_MS` in the 503 tests: the longest the code waits for PostgreSQL.
const PLAY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);
/// What a busy two-core machine may add to an answer the code bounds by `PLAY_TIMEOUT`.
const SCHEDULER_SLACK: std::time::Duration = std::time::Duration::from_secs(5);

/// A play callback's answer and how long it took; a hang fails here, at `PLAY_TIMEOUT` plus
/// slack, with a message, not at the harness's global timeout.
async fn timed_play(app: &TestApp) -> (reqwest::Response, std::time::Duration) {
    let limit = PLAY_TIMEOUT + SCHEDULER_SLACK;
    let started = std::time::Instant::now();
    let res = tokio::time::timeout(limit, app.play("1", "u1", "m1"))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "no answer within {limit:?} (PLAY_TIMEOUT_MS {PLAY_TIMEOUT:?} + {SCHEDULER_SLACK:?} \
                 for a busy machine): the callback hangs on PostgreSQL"
            )
        });
    (res, started.elapsed())
}

#[tokio::test]
async fn postgres_unreachable_is_a_quick_503_not_a_hang() {
    let db = kollus_test_support::TestDb::new().await;
    let (proxy, proxied) = db.behind_proxy().await;
    let app = spawn_app_with(move |s| {
        s.database = proxied;
        s.play.timeout = PLAY_TIMEOUT;
    })
    .await;
    app.grant("u1", "media", "m1", json!({})).await;
    assert_eq!(
        decoded(app.play("1", "u1", "m1").await).await["data"]["result"],
        1
    );

    proxy.cut();
    let (res, took) = timed_play(&app).await;
    assert_eq!(res.status(), 503, "after {took:?}");
    assert_eq!(res.headers()["content-type"], "application/problem+json");

    proxy.restore();
    kollus_test_support::eventually(
        "answers once PostgreSQL is back",
        std::time::Duration::from_secs(20),
        || async { (app.play("1", "u1", "m1").await.status() == 200).then_some(()) },
    )
    .await;
}

/// A PostgreSQL that takes the connection but does not answer (a lock held, a stuck disk) is
/// a 503 once `PLAY_TIMEOUT_MS` has passed, not before (the wait was the database's) and not
/// much after (nothing else waits).
#[tokio::test]
async fn postgres_not_answering_is_a_503_after_play_timeout_not_a_hang() {
    let app = spawn_app_with(|s| s.play.timeout = PLAY_TIMEOUT).await;
    app.grant("u1", "media", "m1", json!({})).await;
    let (res, _) = timed_play(&app).await;
    assert_eq!(decoded(res).await["data"]["result"], 1);

    // The decision reads watch_progress: hold a lock on it that every read waits for.
    let locker = app.db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE watch_progress IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let (res, took) = timed_play(&app).await;
    assert_eq!(res.status(), 503, "after {took:?}");
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    assert!(
        took >= PLAY_TIMEOUT,
        "a 503 after {took:?}, before PLAY_TIMEOUT_MS: the database was not what it waited for"
    );

    locker.batch_execute("ROLLBACK").await.unwrap();
    let (res, _) = timed_play(&app).await;
    assert_eq!(decoded(res).await["data"]["result"], 1, "answers again");
}

/// Viewer binding (issue 26): the key and slot ingest and token-api share in these tests.
const BINDING_KEY: &str = "test-player-binding-key-0123";

fn with_binding(
    mode: kollus_common::kollus::binding::BindingMode,
) -> impl FnOnce(&mut kollus_token_api::configuration::Settings) {
    move |s| {
        s.binding.player_binding = Some(mode);
        s.binding.player_binding_key = Some(secrecy::SecretString::from(BINDING_KEY));
    }
}

/// The binding a player URL token-api issued for `user` carries, read from that URL.
async fn issued_binding(app: &TestApp, user: &str) -> String {
    let res = app
        .client
        .post(format!("{}/v1/playback-tokens", app.address))
        .bearer_auth(APP_KEY)
        .json(&json!({"client_user_id": user, "media": [{"media_content_key": "m1"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let issued: Value = res.json().await.unwrap();
    let url = reqwest::Url::parse(issued["url"].as_str().unwrap()).unwrap();
    let found: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == "uservalue99")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(found.len(), 1, "one binding in {url}");
    found.into_iter().next().unwrap()
}

#[tokio::test]
async fn under_require_a_forged_play_for_a_victim_tells_and_records_nothing_of_theirs() {
    use kollus_common::kollus::binding::BindingMode;
    let app = spawn_app_with(with_binding(BindingMode::Require)).await;
    let grant = json!({"expires_at": rfc3339(FAR), "playtime_limit_seconds": 3600, "download": true, "download_limit": 1});
    assert_eq!(
        app.grant("victim", "media", "m1", grant).await.status(),
        200
    );
    app.watched("victim", "m1", 600).await;
    let play = |uservalues: String| {
        let app = &app;
        async move {
            decoded(
                app.callback(
                    "play",
                    PLAY_SECRET,
                    &[
                        ("kind", "1"),
                        ("client_user_id", "victim"),
                        ("media_content_key", "m1"),
                        ("uservalues", &uservalues),
                    ],
                )
                .await,
            )
            .await["data"]
                .clone()
        }
    };
    // A forger's player URL carries the forger's own binding, or none.
    let forger = issued_binding(&app, "forger").await;
    for uservalues in [
        "{}".to_owned(),
        json!({"uservalue99": forger}).to_string(),
        json!({"uservalue99": "made-up"}).to_string(),
    ] {
        let data = play(uservalues.clone()).await;
        assert_eq!(data["result"], 0, "{uservalues}: the default policy (deny)");
        assert_eq!(
            data["expiration_playtime"], 0,
            "{uservalues}: no allowance told"
        );
        assert_eq!(data["expiration_date"], 0, "{uservalues}: no expiry told");
    }
    let recorded = app
        .count("SELECT count(*) FROM playback_decisions WHERE reason = 'unbound' AND playtime_used_seconds = 0")
        .await;
    assert_eq!(
        recorded, 3,
        "recorded as unbound, with none of the victim's numbers"
    );
    // The victim's own player URL binds: the real answer.
    let own = issued_binding(&app, "victim").await;
    let data = play(json!({"uservalue99": own}).to_string()).await;
    assert_eq!(data["result"], 1);
    assert_eq!(data["expiration_playtime"], 3000);
    // A forged completion for the victim, unbound, uses up none of their downloads.
    let items = json!([{"kind": 2, "client_user_id": "victim", "media_content_key": "m1",
                        "session_key": "s1", "player_id": "p", "uservalues": {"uservalue99": forger}}]);
    assert_eq!(app.drm(items).await.status(), 200);
    assert_eq!(app.count("SELECT count(*) FROM drm_downloads").await, 0);
    let sample = r#"kollus_token_play_binding_total{binding="mismatch",callback="play"}"#;
    assert_eq!(
        kollus_test_support::scrape(&app.address, sample).await,
        Some(2.0)
    );
}

#[tokio::test]
async fn under_record_an_unbound_play_is_answered_as_before_and_counted() {
    use kollus_common::kollus::binding::BindingMode;
    let app = spawn_app_with(with_binding(BindingMode::Record)).await;
    let grant = json!({"expires_at": rfc3339(FAR), "playtime_limit_seconds": 3600});
    assert_eq!(app.grant("u1", "media", "m1", grant).await.status(), 200);
    let data = decoded(app.play("1", "u1", "m1").await).await;
    assert_eq!(data["data"]["result"], 1, "record changes no answer");
    let sample = r#"kollus_token_play_binding_total{binding="absent",callback="play"}"#;
    assert_eq!(
        kollus_test_support::scrape(&app.address, sample).await,
        Some(1.0)
    );
}

#[tokio::test]
async fn the_binding_uservalue_is_reserved_in_token_requests() {
    use kollus_common::kollus::binding::BindingMode;
    let app = spawn_app_with(with_binding(BindingMode::Record)).await;
    let res = app
        .client
        .post(format!("{}/v1/playback-tokens", app.address))
        .bearer_auth(APP_KEY)
        .json(
            &json!({"client_user_id": "u1", "media": [{"media_content_key": "m1"}],
                      "uservalues": {"uservalue99": "mine"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let problem: Value = res.json().await.unwrap();
    assert_eq!(
        problem["errors"][0]["field"], "uservalues.uservalue99",
        "{problem}"
    );
    // Off (the default without a key): no binding in the URL.
    let off = spawn_app().await;
    let res = off
        .client
        .post(format!("{}/v1/playback-tokens", off.address))
        .bearer_auth(APP_KEY)
        .json(&json!({"client_user_id": "u1", "media": [{"media_content_key": "m1"}]}))
        .send()
        .await
        .unwrap();
    let issued: Value = res.json().await.unwrap();
    assert!(!issued["url"].as_str().unwrap().contains("uservalue99"));
}

/// README's recipe for product apps that build player URLs themselves, run by Python's own
/// `hmac` (another implementation), makes the binding token-api puts in its URLs.
#[tokio::test]
async fn readmes_python_recipe_makes_the_same_binding() {
    use kollus_common::kollus::binding::BindingMode;
    let app = spawn_app_with(with_binding(BindingMode::Record)).await;
    let ours = issued_binding(&app, "kim@example.com").await;
    let readme =
        std::fs::read_to_string(kollus_test_support::workspace_root().join("README.md")).unwrap();
    let recipe = readme
        .split("```python\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("README has the Python recipe");
    let script = format!(
        "PLAYER_BINDING_KEY = {BINDING_KEY:?}\nclient_user_id = 'kim@example.com'\nurl = ''\n{recipe}\nprint(url.split('=', 1)[1])"
    );
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), ours);
}

/// A viewer who strips the binding from their own player URL, where PLAY_DEFAULT=allow, must not
/// fall back to the default and so past their own allowance: unbound is refused whatever the
/// default.
#[tokio::test]
async fn under_require_an_unbound_play_is_refused_even_when_the_default_allows() {
    use kollus_common::kollus::binding::BindingMode;
    let app = spawn_app_with(|s| {
        with_binding(BindingMode::Require)(s);
        s.play.default = kollus_token_api::configuration::PlayDefault::Allow;
    })
    .await;
    let grant = json!({"expires_at": rfc3339(FAR), "playtime_limit_seconds": 600});
    assert_eq!(app.grant("u1", "media", "m1", grant).await.status(), 200);
    app.watched("u1", "m1", 600).await;
    let data = decoded(app.play("1", "u1", "m1").await).await;
    assert_eq!(
        data["data"]["result"], 0,
        "unbound: refused, not the default"
    );
    let items = json!([{"kind": 1, "client_user_id": "u1", "media_content_key": "m1",
                        "session_key": "s1", "player_id": "p"}]);
    let data = decoded(app.drm(items).await).await;
    assert_eq!(
        data["data"][0]["result"], 0,
        "an unbound download approval too"
    );
}

#[tokio::test]
async fn a_play_decision_waits_for_an_erasure_under_way_and_is_never_left_behind_by_one() {
    let app = spawn_app().await;
    // An erasure of u-erase under way: its subject lock held, as token-api's erasure holds it.
    let tagger = kollus_common::subject::Tagger::from_file(std::path::Path::new(
        &kollus_test_support::key_files()
            .env()
            .into_iter()
            .find(|(k, _)| *k == "SUBJECT_TAG_KEY_FILE")
            .unwrap()
            .1,
    ))
    .unwrap();
    let mut eraser = app.db.client().await;
    let tx = eraser.transaction().await.unwrap();
    kollus_common::subject::lock_subject(&tx, &tagger.tag("u-erase"))
        .await
        .unwrap();
    let watcher = app.db.client().await;
    let release = async {
        kollus_test_support::eventually(
            "the play callback to wait on the subject lock",
            std::time::Duration::from_secs(30),
            || async {
                let waiting: i64 = watcher
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' \
                           AND query LIKE '%pg_advisory_xact_lock_shared%' \
                           AND datname = current_database()",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                (waiting == 1).then_some(())
            },
        )
        .await;
        // Waiting, so nothing of the user's written while the erasure holds them.
        assert_eq!(
            app.count("SELECT count(*) FROM playback_decisions WHERE client_user_id = 'u-erase'")
                .await,
            0
        );
        tx.commit().await.unwrap();
    };
    let (res, ()) = tokio::join!(app.play("1", "u-erase", "m-erase"), release);
    assert_eq!(res.status(), 200);
    assert_eq!(
        app.count("SELECT count(*) FROM playback_decisions WHERE client_user_id = 'u-erase'")
            .await,
        1,
        "decided after the erasure: the returning user's"
    );
}
