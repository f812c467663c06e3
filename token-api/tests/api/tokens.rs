use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn issues_a_token_kollus_accepts() {
    let app = spawn_app().await;
    // The clock read on either side of the request: the service's `now` lies between them.
    let before = time::OffsetDateTime::now_utc().unix_timestamp();
    let res = app
        .issue(
            APP_KEY,
            json!({"client_user_id": "181353", "media": [{"media_content_key": "vnCVPVyV"}],
                   "uservalues": {"uservalue0": "production"}, "player": {"t": 120}}),
        )
        .await;
    let after = time::OffsetDateTime::now_utc().unix_timestamp();
    assert_eq!(res.status(), 201);
    let body: serde_json::Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap();

    let (header, claims) = verify_independently(token, SECURITY_KEY);
    assert_eq!(header, json!({"alg": "HS256", "typ": "JWT"}));
    let expt = claims["expt"].as_i64().unwrap();
    // Whole seconds, truncated as `unix_timestamp` truncates: TOKEN_DEFAULT_EXPIRES_IN (3600)
    // after the moment of issue, however long the request took.
    assert!(
        (before + 3600..=after + 3600).contains(&expt),
        "expt {expt} is Unix seconds, an hour after the issue (between {before} and {after})"
    );
    assert_eq!(
        claims,
        json!({"cuid": "181353", "expt": expt, "exp": expt, "mc": [{"mckey": "vnCVPVyV"}]})
    );

    let expires_at = time::OffsetDateTime::parse(
        body["expires_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert_eq!(expires_at.unix_timestamp(), expt);
    assert_eq!(
        body["url"],
        format!("https://v.kr.kollus.com/s?jwt={token}&custom_key={CUSTOM_KEY}&uservalue0=production&t=120")
    );
}

#[tokio::test]
async fn exp_can_be_turned_off() {
    let app = spawn_app_with(|s| s.emit_exp = false).await;
    let res = app
        .issue(
            APP_KEY,
            json!({"client_user_id": "u", "media": [{"media_content_key": "m"}]}),
        )
        .await;
    let body: serde_json::Value = res.json().await.unwrap();
    let (_, claims) = verify_independently(body["token"].as_str().unwrap(), SECURITY_KEY);
    assert!(claims.get("exp").is_none());
    assert!(claims.get("expt").is_some());
}

#[tokio::test]
async fn callers_need_a_valid_key_and_either_key_works() {
    let app = spawn_app().await;
    let body = json!({"client_user_id": "u", "media": [{"media_content_key": "m"}]});
    for key in ["", "wrong-key-0123456789", &APP_KEY[..APP_KEY.len() - 1]] {
        let res = app.issue(key, body.clone()).await;
        assert_eq!(res.status(), 401, "key {key:?}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    let no_header = app
        .client
        .post(format!("{}/v1/playback-tokens", app.address))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(no_header.status(), 401);
    assert_eq!(app.issue(APP_KEY, body.clone()).await.status(), 201);
    assert_eq!(app.issue(OPS_KEY, body).await.status(), 201);
}

#[tokio::test]
async fn invalid_requests_are_400_naming_each_field() {
    let app = spawn_app().await;
    let res = app
        .issue(
            APP_KEY,
            json!({"client_user_id": "", "expires_in": 0,
                   "media": [{"media_content_key": "bad key", "play_section": {"start": 9, "end": 3}}]}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let problem: serde_json::Value = res.json().await.unwrap();
    assert_eq!(problem["status"], 400);
    let fields: Vec<&str> = problem["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "client_user_id",
            "media[0].media_content_key",
            "media[0].play_section",
            "expires_in"
        ]
    );

    let res = app
        .issue(
            APP_KEY,
            json!({"client_user_id": "u", "media": [], "typo_field": 1}),
        )
        .await;
    assert_eq!(res.status(), 400);
    let problem: serde_json::Value = res.json().await.unwrap();
    assert_eq!(problem["errors"][0]["field"], "typo_field", "{problem}");
    assert!(
        problem["errors"][0]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field"),
        "{problem}"
    );
}

#[tokio::test]
async fn strict_catalog_refuses_deleted_and_channelless_videos() {
    let app = spawn_app().await;
    app.catalog("playable1", true, false).await;
    app.catalog("deleted1", true, true).await;
    app.catalog("nochannel1", false, false).await;
    let ask = |m: &str| json!({"client_user_id": "u", "media": [{"media_content_key": m}]});

    assert_eq!(app.issue(APP_KEY, ask("playable1")).await.status(), 201);
    assert_eq!(
        app.issue(APP_KEY, ask("neverseen")).await.status(),
        201,
        "unknown is allowed in `on`"
    );
    for (media, says) in [("deleted1", "deleted"), ("nochannel1", "no Kollus channel")] {
        let res = app.issue(APP_KEY, ask(media)).await;
        assert_eq!(res.status(), 409, "{media}");
        let problem: serde_json::Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "media[0].media_content_key");
        assert!(
            problem["errors"][0]["message"]
                .as_str()
                .unwrap()
                .contains(says),
            "{problem}"
        );
    }
}

#[tokio::test]
async fn require_mode_refuses_unknown_videos() {
    let app = spawn_app_with(|s| {
        s.strict_catalog = kollus_token_api::configuration::StrictCatalog::Require
    })
    .await;
    app.catalog("playable1", true, false).await;
    let ask = |m: &str| json!({"client_user_id": "u", "media": [{"media_content_key": m}]});
    assert_eq!(app.issue(APP_KEY, ask("playable1")).await.status(), 201);
    assert_eq!(app.issue(APP_KEY, ask("neverseen")).await.status(), 409);
}

#[tokio::test]
async fn verify_decodes_what_was_issued_and_refuses_forgeries() {
    let app = spawn_app().await;
    let body: serde_json::Value = app
        .issue(
            APP_KEY,
            json!({"client_user_id": "u", "media": [{"media_content_key": "m"}]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let token = body["token"].as_str().unwrap();
    let verify = |t: String| {
        app.client
            .get(format!("{}/v1/playback-tokens/verify", app.address))
            .query(&[("token", t)])
            .bearer_auth(OPS_KEY)
            .send()
    };
    let res = verify(token.to_owned()).await.unwrap();
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["claims"]["cuid"], "u");

    // Well-formed tokens that are not ours: each refused as not a token signed with our key.
    let (header, claims) = verify_independently(token, SECURITY_KEY);
    let [head, _, signature]: [&str; 3] = token.split('.').collect::<Vec<_>>().try_into().unwrap();
    let mut raised = claims.clone();
    raised["cuid"] = json!("admin");
    let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
    let none = json!({"alg": "none", "typ": "JWT"});
    let forgeries = [
        (
            "signed with another key",
            sign_independently(&header, &claims, "another-security-key-0123456789"),
        ),
        (
            "a claim changed under the old signature",
            format!("{head}.{}.{signature}", b64(&raised)),
        ),
        (
            "alg none, unsigned",
            format!("{}.{}.", b64(&none), b64(&claims)),
        ),
        (
            "alg none, the old signature",
            format!("{}.{}.{signature}", b64(&none), b64(&claims)),
        ),
        (
            "HS512 under our key",
            sign_hs512(
                &json!({"alg": "HS512", "typ": "JWT"}),
                &claims,
                SECURITY_KEY,
            ),
        ),
    ];
    for (what, forged) in forgeries {
        let res = verify(forged).await.unwrap();
        assert_eq!(res.status(), 400, "{what}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    // The control: the same construction under our key is taken, so each refusal above is
    // for the forgery, not for how the test builds tokens.
    let genuine = sign_independently(&header, &raised, SECURITY_KEY);
    let res = verify(genuine).await.unwrap();
    assert_eq!(res.status(), 200);
    let v: serde_json::Value = res.json().await.unwrap();
    assert_eq!(v["claims"]["cuid"], "admin");
}

fn sign_hs512(header: &serde_json::Value, claims: &serde_json::Value, key: &str) -> String {
    use hmac::Mac as _;
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut mac = hmac::Hmac::<sha2::Sha512>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(input.as_bytes());
    format!(
        "{input}.{}",
        URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes())
    )
}

#[tokio::test]
async fn a_rotated_out_key_is_refused_and_the_remaining_one_works() {
    // Rotation: the service restarted with `ops` removed from TOKEN_API_KEYS.
    let app = spawn_app_with(|s| {
        s.api_keys = kollus_token_api::auth::ApiKeys::parse(&format!("app:{APP_KEY}")).unwrap()
    })
    .await;
    let body = json!({"client_user_id": "u", "media": [{"media_content_key": "m"}]});
    assert_eq!(app.issue(OPS_KEY, body.clone()).await.status(), 401);
    assert_eq!(app.issue(APP_KEY, body).await.status(), 201);
}

#[tokio::test]
async fn strict_answers_are_reused_only_as_long_as_the_cache_setting_says() {
    let body = json!({"client_user_id": "u", "media": [{"media_content_key": "m"}]});
    // No cache (STRICT_CATALOG_CACHE_MS=0): the deletion is seen by the next request.
    let exact = spawn_app().await;
    exact.catalog("m", true, false).await;
    assert_eq!(exact.issue(APP_KEY, body.clone()).await.status(), 201);
    delete_upload(&exact, "u-m").await;
    assert_eq!(exact.issue(APP_KEY, body.clone()).await.status(), 409);

    // A minute's cache: the first answer stands, and PostgreSQL is not asked again.
    let cached =
        spawn_app_with(|s| s.strict_catalog_cache = std::time::Duration::from_secs(60)).await;
    cached.catalog("m", true, false).await;
    assert_eq!(cached.issue(APP_KEY, body.clone()).await.status(), 201);
    delete_upload(&cached, "u-m").await;
    assert_eq!(cached.issue(APP_KEY, body.clone()).await.status(), 201);

    // A second's cache: its answer expires, and the deletion is then seen.
    let brief =
        spawn_app_with(|s| s.strict_catalog_cache = std::time::Duration::from_secs(1)).await;
    brief.catalog("m", true, false).await;
    assert_eq!(brief.issue(APP_KEY, body.clone()).await.status(), 201);
    delete_upload(&brief, "u-m").await;
    kollus_test_support::eventually(
        "the cached answer expires",
        std::time::Duration::from_secs(30),
        || async { (brief.issue(APP_KEY, body.clone()).await.status() == 409).then_some(()) },
    )
    .await;
}

async fn delete_upload(app: &TestApp, upload: &str) {
    app.db
        .client()
        .await
        .execute(
            "UPDATE uploads SET deleted_at = now() WHERE upload_file_key = $1",
            &[&upload],
        )
        .await
        .unwrap();
}
