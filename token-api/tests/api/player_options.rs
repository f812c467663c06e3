//! The player options of SPEC.md 5.3 in `POST /v1/playback-tokens`: validated with the field
//! named, documented, and signed into a token that PyJWT (another implementation, the one
//! Python integrations use) verifies with the security key and decodes to Kollus's claims.

use serde_json::{json, Value};

use crate::helpers::*;

fn every_option() -> Value {
    json!({
        "client_user_id": "181353",
        "media": [
            {"media_content_key": "intro1", "intro": true,
             "thumbnail": {"enable": true, "thread": false, "type": "sprite"}},
            {"media_content_key": "main1",
             "drm_policy": {"kind": "inka", "streaming_type": "dash",
                            "data": {"license_url": "https://license.example/ri/licenseManager.do",
                                     "certificate_url": "https://license.example/fpsKeyManager.do",
                                     "custom_header": {"key": "pallycon-customdata-v2", "value": "eyJ0eXAiOiJKV1Qi"}}},
             "subtitle_policy": {"filter": {"name": "한국어 자막", "language_code": "ko"},
                                 "show_by_filter": true, "is_showable": true}}
        ],
        "next_episode": true,
        "playback_rates": [0.5, 0.75, 1, 1.25, 1.5, 2],
        "playcallback_ignore": false,
        "pc_skin": {"skin_path": "https://skins.example/academy.zip",
                    "skin_sha1sum": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}
    })
}

/// The token's claims as PyJWT decodes them: HS256 only, signature and `exp` verified. PyJWT
/// comes from the virtualenv `make test` installs it into (`scripts/test.sh`).
fn decoded_by_pyjwt(token: &str, key: &str) -> Value {
    let script = "import json, sys, jwt\n\
                  claims = jwt.decode(sys.argv[1], sys.argv[2], algorithms=['HS256'])\n\
                  print(json.dumps(claims))";
    let python = kollus_test_support::workspace_root().join(".local/pyjwt-venv/bin/python");
    let out = std::process::Command::new(&python)
        .args(["-c", script, token, key])
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{} does not run ({e}): run scripts/test.sh, which installs PyJWT there",
                python.display()
            )
        });
    assert!(
        out.status.success(),
        "PyJWT did not decode the token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn every_option_is_signed_in_kollus_names_and_pyjwt_decodes_it() {
    let app = spawn_app().await;
    let res = app.issue(APP_KEY, every_option()).await;
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap();

    let claims = decoded_by_pyjwt(token, SECURITY_KEY);
    let expt = claims["expt"].as_i64().unwrap();
    assert_eq!(
        claims,
        json!({
            "cuid": "181353", "expt": expt, "exp": expt,
            "mc": [
                {"mckey": "intro1", "intr": true,
                 "thumbnail": {"enable": true, "thread": false, "type": "sprite"}},
                {"mckey": "main1",
                 "drm_policy": {"kind": "inka", "streaming_type": "dash",
                                "data": {"license_url": "https://license.example/ri/licenseManager.do",
                                         "certificate_url": "https://license.example/fpsKeyManager.do",
                                         "custom_header": {"key": "pallycon-customdata-v2", "value": "eyJ0eXAiOiJKV1Qi"}}},
                 "subtitle_policy": {"filter": {"name": "한국어 자막", "language_code": "ko"},
                                     "show_by_filter": true, "is_showable": true}}
            ],
            "next_episode": true,
            "playback_rates": [0.5, 0.75, 1.0, 1.25, 1.5, 2.0],
            "playcallback_ignore": false,
            "pc_skin": {"skin_path": "https://skins.example/academy.zip",
                        "skin_sha1sum": "da39a3ee5e6b4b0d3255bfef95601890afd80709"}
        })
    );
    // The flags are JSON booleans and the rates JSON numbers, as Kollus's samples sign them.
    assert!(claims["next_episode"].is_boolean() && claims["playcallback_ignore"].is_boolean());
    assert!(claims["playback_rates"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r.as_f64().is_some_and(|r| r > 0.0)));

    // A token without the options carries none of them.
    let plain = app
        .issue(
            APP_KEY,
            json!({"client_user_id": "u", "media": [{"media_content_key": "m"}]}),
        )
        .await
        .json::<Value>()
        .await
        .unwrap();
    let plain = decoded_by_pyjwt(plain["token"].as_str().unwrap(), SECURITY_KEY);
    for absent in [
        "next_episode",
        "playback_rates",
        "playcallback_ignore",
        "pc_skin",
    ] {
        assert!(plain.get(absent).is_none(), "{absent}: {plain}");
    }
    assert_eq!(plain["mc"], json!([{"mckey": "m"}]));

    // The document describes the request: the example is valid against it.
    let doc = kollus_token_api::routes::derived();
    let schema = json!({"$ref": "#/components/schemas/TokenRequest"});
    let mismatches = kollus_test_support::openapi_mismatches(&doc, &schema, &every_option());
    assert!(mismatches.is_empty(), "{mismatches:#?}");
    let mut too_fast = every_option();
    too_fast["playback_rates"] = json!([1, 8]);
    assert!(
        !kollus_test_support::openapi_mismatches(&doc, &schema, &too_fast).is_empty(),
        "the document bounds each rate"
    );
}

/// The fields a refused request names, in order.
async fn refused(app: &TestApp, body: Value) -> Vec<String> {
    let res = app.issue(APP_KEY, body).await;
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    problem["errors"]
        .as_array()
        .unwrap_or_else(|| panic!("errors: {problem}"))
        .iter()
        .map(|e| e["field"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn each_wrong_option_is_400_naming_its_field() {
    let app = spawn_app().await;
    let with = |patch: Value| {
        let mut body = every_option();
        for (k, v) in patch.as_object().unwrap() {
            body[k] = v.clone();
        }
        body
    };

    assert_eq!(
        refused(&app, with(json!({"playback_rates": [0.5, 0.25, 5, 2]}))).await,
        [
            "playback_rates[1]",
            "playback_rates[2]",
            "playback_rates[3]"
        ],
        "0.25 descends, 5 is too fast, 2 descends from 5"
    );
    assert_eq!(
        refused(&app, with(json!({"playback_rates": []}))).await,
        ["playback_rates"]
    );
    assert_eq!(
        refused(&app, with(json!({"playback_rates": [0, 1]}))).await,
        ["playback_rates[0]"],
        "a rate must be greater than 0"
    );
    assert_eq!(
        refused(&app, with(json!({"playback_rates": ["fast"]}))).await,
        ["playback_rates[0]"]
    );
    let eleven: Vec<f64> = (1..=11).map(|i| 0.25 * f64::from(i)).collect();
    assert_eq!(
        refused(&app, with(json!({"playback_rates": eleven}))).await,
        ["playback_rates"]
    );
    assert_eq!(
        refused(&app, with(json!({"playcallback_ignore": "yes"}))).await,
        ["playcallback_ignore"]
    );
    assert_eq!(
        refused(&app, with(json!({"next_episode": 1}))).await,
        ["next_episode"]
    );
    assert_eq!(
        refused(
            &app,
            with(json!({"pc_skin": {"skin_path": "", "skin_sha1sum": "not-a-sum"}}))
        )
        .await,
        ["pc_skin.skin_path", "pc_skin.skin_sha1sum"]
    );
    assert_eq!(
        refused(&app, with(json!({"pc_skin": {"skin_path": "a.zip"}}))).await,
        ["pc_skin"],
        "a skin without its sum"
    );

    let media = |item: Value| with(json!({"media": [{"media_content_key": "m1"}, item]}));
    assert_eq!(
        refused(
            &app,
            media(json!({"media_content_key": "m2", "thumbnail": {"enable": "on"}}))
        )
        .await,
        ["media[1].thumbnail.enable"]
    );
    assert_eq!(
        refused(
            &app,
            media(json!({"media_content_key": "m2",
                         "subtitle_policy": {"show_by_filter": true, "is_showable": "no"}}))
        )
        .await,
        ["media[1].subtitle_policy.is_showable"]
    );
    assert_eq!(
        refused(
            &app,
            media(json!({"media_content_key": "m2",
                         "subtitle_policy": {"filter": {"language_code": "korean!"}}}))
        )
        .await,
        ["media[1].subtitle_policy.filter.language_code"]
    );
    assert_eq!(
        refused(
            &app,
            media(json!({"media_content_key": "m2",
                         "drm_policy": {"kind": "inka", "streaming_type": "",
                                        "data": {"license_url": "javascript:alert(1)",
                                                 "custom_header": {"key": "X-Id", "value": "a\r\nSet-Cookie: b"}}}}))
        )
        .await,
        [
            "media[1].drm_policy.streaming_type",
            "media[1].drm_policy.data.license_url",
            "media[1].drm_policy.data.custom_header.value"
        ]
    );
    assert_eq!(
        refused(
            &app,
            media(json!({"media_content_key": "m2",
                         "drm_policy": {"kind": "inka", "streaming_type": "dash",
                                        "data": {"license_url": "https://l.example", "typo": 1}}}))
        )
        .await,
        ["media[1].drm_policy.data.typo"],
        "an unknown field is named where it is"
    );
}
