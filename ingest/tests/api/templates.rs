//! LMS reports as real Kollus installations send them (SPEC.md 4.1-4.3): the console template
//! decides where the document is, what stands beside it, and whether the player signs it.

use kollus_ingest::configuration::HashPolicy;
use kollus_test_support::fixture;
use secrecy::SecretString;
use serde_json::json;

use crate::helpers::*;

const FIXTURE_KEY: &str = "fixture-service-account-key";

fn trimmed(name: &str) -> Vec<u8> {
    let mut body = fixture(name);
    while body.last().is_some_and(u8::is_ascii_whitespace) {
        body.pop();
    }
    body
}

/// `fixtures/lms-query-string.url`: the path and query the player requests, without our secret.
fn query_string_fixture() -> String {
    String::from_utf8(trimmed("lms-query-string.url")).unwrap()
}

async fn with_hash_policy(policy: Option<HashPolicy>) -> TestApp {
    spawn_app_with(|s| {
        s.service_account_key = Some(SecretString::from(FIXTURE_KEY));
        s.lms_hash_policy = policy;
    })
    .await
}

/// A byte of the signed part changed, keeping the body a valid report (a digit of `playtime`).
fn tampered(body: &[u8]) -> Vec<u8> {
    let needle = b"%22playtime%22%3A%22596";
    let at = body
        .windows(needle.len())
        .position(|w| w == needle)
        .expect("the fixture reports playtime 596");
    let mut changed = body.to_vec();
    changed[at + needle.len() - 1] = b'7';
    changed
}

#[tokio::test]
async fn the_android_report_verifies_and_keeps_its_flat_fields_and_segments() {
    let app = with_hash_policy(None).await;
    let body = trimmed("lms-android-hash.form");
    assert_eq!(app.post("lms", FORM, body.clone()).await.status(), 200);
    assert_eq!(app.post("lms", FORM, tampered(&body)).await.status(), 200);

    let records = app.records(&app.topics.playback, 2).await;
    let v = value(&records[0]);
    assert_eq!(
        v["lms_hash"], "verified",
        "the default policy with a key is record"
    );
    assert_eq!(
        v["form"],
        json!({"client_user_id": "fixture-user-7", "start_at": "1763366400"}),
        "flat template fields are kept; the document and the hash are not repeated"
    );
    let p = &v["payload"];
    assert_eq!(p["user"]["device"], "starqltesq/SM-G960U");
    assert_eq!(p["user"].get("hardware_id"), None, "Android sends none");
    assert_eq!(p["content"]["serial"], 3);
    assert_eq!(
        p["segments"],
        json!([
            {"block": 21, "start_time": 0, "play_time": 3},
            {"block": 22, "start_time": 0, "play_time": 48},
            {"block": 23, "start_time": 0, "play_time": 48},
        ])
    );
    assert_eq!(p["uservalues"]["uservalue1"], "course-42");
    let changed = value(&records[1]);
    assert_eq!(changed["lms_hash"], "mismatch", "one changed byte");
    assert_eq!(changed["payload"]["content"]["playtime"], 597);
}

#[tokio::test]
async fn require_refuses_unsigned_and_tampered_reports_and_keeps_them_as_dead_letters() {
    let app = with_hash_policy(Some(HashPolicy::Require)).await;
    let body = trimmed("lms-android-hash.form");
    let unsigned = {
        let at = body.windows(6).rposition(|w| w == b"&hash=").unwrap();
        body[..at].to_vec()
    };
    assert_eq!(app.post("lms", FORM, body.clone()).await.status(), 200);
    let refused = [
        (tampered(&body), "lms_hash_mismatch"),
        (unsigned, "lms_hash_absent"),
    ];
    for (bad, reason) in &refused {
        let res = app.post("lms", FORM, bad.clone()).await;
        assert_eq!(res.status(), 400, "{reason}");
        let answer: serde_json::Value = res.json().await.unwrap();
        assert_eq!(answer["error"], *reason);
        assert_eq!(answer["field"], "hash");
    }
    let dead = app.dead_letters(2).await;
    for (bad, reason) in &refused {
        let d = dead
            .iter()
            .find(|d| d["reason"] == *reason)
            .unwrap_or_else(|| panic!("no dead letter for {reason}"));
        assert_eq!(d["raw"]["body"].as_str().unwrap().as_bytes(), &bad[..]);
    }
    // The signed report once more: same user and video, so the same partition. Had a refused
    // report been published, it would sit between the two.
    assert_eq!(app.post("lms", FORM, body.clone()).await.status(), 200);
    let accepted = app.records(&app.topics.playback, 2).await;
    assert_eq!(accepted.len(), 2);
    for r in &accepted {
        assert_eq!(
            value(r)["lms_hash"],
            "verified",
            "a refused report never reaches a session"
        );
    }
}

#[tokio::test]
async fn policy_off_checks_nothing_and_require_without_a_key_does_not_start() {
    let app = spawn_app().await;
    let res = app
        .post("lms", FORM, tampered(&trimmed("lms-android-hash.form")))
        .await;
    assert_eq!(res.status(), 200);
    let v = value(&app.records(&app.topics.playback, 1).await[0]);
    assert_eq!(v.get("lms_hash"), None);

    let mut settings = settings(app.broker.settings());
    settings.lms_hash_policy = Some(HashPolicy::Require);
    // Compose passes an unset key as an empty value: still no key.
    settings.service_account_key = Some(SecretString::from(""));
    let err = kollus_ingest::startup::Application::build(settings)
        .await
        .err()
        .expect("require without a key is refused");
    assert!(
        err.to_string().contains("KOLLUS_SERVICE_ACCOUNT_KEY"),
        "{err}"
    );
}

#[tokio::test]
async fn the_document_in_the_query_string_works_as_post_and_as_get() {
    let app = spawn_app().await;
    let url = format!(
        "{}{}&secret={LMS_SECRET}",
        app.address,
        query_string_fixture()
    );
    let post = app.client.post(&url).send().await.unwrap();
    assert_eq!(post.status(), 200, "{:?}", post.text().await);
    let get = app.client.get(&url).send().await.unwrap();
    assert_eq!(get.status(), 200, "{:?}", get.text().await);

    let records = app.records(&app.topics.playback, 2).await;
    assert_eq!(records.len(), 2);
    for (r, method) in records.iter().zip(["POST", "GET"]) {
        let v = value(r);
        assert_eq!(key(r), "fixture-user-7\u{1f}fxAndr01");
        assert_eq!(v["payload"]["content"]["playtime"], 596);
        assert_eq!(v["payload"]["segments"].as_array().unwrap().len(), 3);
        assert_eq!(
            v["query"],
            json!({"client_user_id": "fixture-user-7", "start_at": "1763366400"}),
            "the document is the payload, not repeated among the query parameters"
        );
        assert_eq!(v["raw"]["method"], method);
        let kept = v["raw"]["query_string"].as_str().unwrap();
        assert!(kept.starts_with("json_data=%7B%22user_info"), "{kept}");
        assert!(!kept.contains("secret"), "the secret is never stored");
    }
}

#[tokio::test]
async fn any_field_name_in_form_json_or_query_is_found() {
    let app = spawn_app_with(|s| s.lms_fields = vec!["progress".into()]).await;
    let doc = String::from_utf8(fixture("lms-seed.json")).unwrap();
    let form = |pairs: &[(&str, &str)]| {
        form_urlencoded::Serializer::new(String::new())
            .extend_pairs(pairs)
            .finish()
            .into_bytes()
    };
    let cases: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "configured name",
            FORM,
            form(&[("progress", &doc), ("play_status", "stop")]),
        ),
        ("Kollus live sample", FORM, form(&[("lms_data", &doc)])),
        (
            "a customer's own name",
            FORM,
            form(&[("lmsdoc", &doc), ("uv0", "x")]),
        ),
        (
            "JSON wrapper",
            "application/json",
            json!({"json_data": doc}).to_string().into_bytes(),
        ),
        (
            "bare JSON",
            "application/json; charset=utf-8",
            doc.clone().into_bytes(),
        ),
    ];
    for (what, content_type, body) in &cases {
        let res = app.post("lms", content_type, body.clone()).await;
        assert_eq!(res.status(), 200, "{what}: {:?}", res.text().await);
    }
    let records = app.records(&app.topics.playback, cases.len()).await;
    assert_eq!(records.len(), cases.len());
    for r in &records {
        assert_eq!(value(r)["payload"]["content"]["playtime"], 151);
    }
    let first = value(&records[0]);
    assert_eq!(first["payload"]["play_status"], "stop");
    assert_eq!(first["form"], json!({"play_status": "stop"}));
    assert_eq!(value(&records[2])["form"], json!({"uv0": "x"}));
}

#[tokio::test]
async fn a_template_without_the_document_is_a_400_kept_with_its_query_string() {
    let app = spawn_app().await;
    // Flat placeholders only, with customer-chosen names, in the body and the query.
    let res = app
        .client
        .post(format!(
            "{}/kollus/lms?userid=kim%40example.com&secret={LMS_SECRET}",
            app.address
        ))
        .header("content-type", FORM)
        .body("mck=fxAndr01&pt=30&status=play")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let answer: serde_json::Value = res.json().await.unwrap();
    assert_eq!(answer["error"], "lms_document_missing");
    assert!(
        answer["detail"].as_str().unwrap().contains("{JSON_DATA}"),
        "{answer}"
    );
    // A GET carrying nothing usable: a 400 kept too, never a 404.
    let get = app
        .client
        .get(format!(
            "{}/kollus/lms?start_at=1&secret={LMS_SECRET}",
            app.address
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 400);

    let dead = app.dead_letters(2).await;
    assert_eq!(dead.len(), 2);
    assert!(dead.iter().all(|d| d["reason"] == "lms_document_missing"));
    let post = dead.iter().find(|d| d["raw"]["method"] == "POST").unwrap();
    assert_eq!(post["raw"]["body"], "mck=fxAndr01&pt=30&status=play");
    assert_eq!(post["raw"]["query_string"], "userid=kim%40example.com");
    let get = dead.iter().find(|d| d["raw"]["method"] == "GET").unwrap();
    assert_eq!(get["raw"]["query_string"], "start_at=1");
}

#[tokio::test]
async fn platform_routes_take_no_get_and_keep_the_request_id() {
    let app = spawn_app().await;
    let get = app
        .client
        .get(format!("{}/kollus/upload?secret={SECRET}", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 405);
    assert_eq!(get.headers()["allow"], "POST");

    let res = app
        .post("transcoding", FORM, trimmed("transcoding-request-id.form"))
        .await;
    assert_eq!(res.status(), 200);
    let v = value(&app.records(&app.topics.content, 1).await[0]);
    assert_eq!(
        v["payload"]["request_id"],
        "20251117-callback-65a1f0c3d2b4e"
    );
    assert_eq!(v["payload"]["filename"], "lectures/2025/W01_Intro.MP4");
    assert_eq!(app.count(&app.topics.deadletter), 0, "a 405 keeps nothing");
    // What a refused callback keeps is seen on this topic: a 400 is kept.
    let res = app
        .post("transcoding", FORM, b"transcoding_result=success".to_vec())
        .await;
    assert_eq!(res.status(), 400);
    assert_eq!(app.count(&app.topics.deadletter), 1);
}

#[tokio::test]
async fn fields_that_vary_across_players_are_accepted() {
    let app = spawn_app().await;
    let docs = [
        // block_count 0 with empty blocks (blocks disabled on the channel), e-mail user id.
        json!({"user_info": {"client_user_id": "kim@example.com"},
               "content_info": {"media_content_key": "m1", "start_at": "1700000000"},
               "block_info": {"block_count": "0", "blocks": {}}}),
        // An old player: no device, os, version, real_playtime, runtime, showtime.
        json!({"user_info": {"client_user_id": "u2"},
               "content_info": {"media_content_key": "m1", "start_at": "1700000000",
                                "playtime": "30", "duration": "1461"}}),
        // Any uservalue text, device names with '/', sessions only.
        json!({"user_info": {"client_user_id": "u3", "device_name": "SM-G960U/starqltesq"},
               "content_info": {"media_content_key": "m1", "start_at": 1_700_000_000},
               "block_info": {"sessions": [{"block": 0, "start_time": 0, "play_time": 9}]},
               "uservalues": {"uservalue0": "강의 1 & 2 = 3%"}}),
    ];
    for doc in &docs {
        let body = form_urlencoded::Serializer::new(String::new())
            .append_pair("json_data", &doc.to_string())
            .finish();
        let res = app.post("lms", FORM, body.into_bytes()).await;
        assert_eq!(res.status(), 200, "{doc}: {:?}", res.text().await);
    }
    let records = app.records(&app.topics.playback, docs.len()).await;
    let third = records
        .iter()
        .map(value)
        .find(|v| v["payload"]["user"]["client_user_id"] == "u3")
        .unwrap();
    assert_eq!(third["payload"]["user"]["device"], "SM-G960U/starqltesq");
    assert_eq!(
        third["payload"]["uservalues"]["uservalue0"],
        "강의 1 & 2 = 3%"
    );
}
