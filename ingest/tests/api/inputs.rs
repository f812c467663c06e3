//! What players and Kollus may send: every variant accepted, every hostile input answered
//! with a 4xx and kept on the dead-letter topic, never a 5xx.

use kollus_common::envelope::DeadLetter;
use kollus_test_support::fixture;
use serde_json::json;

use crate::helpers::*;

/// Why most hostile inputs are refused.
const INVALID: &str = "invalid_callback";
/// The body limit the tests run with (the default): a dead letter keeps a body up to it.
const BODY_LIMIT: usize = kollus_ingest::configuration::DEFAULT_BODY_LIMIT;

fn lms(content: serde_json::Value, extra: serde_json::Value) -> serde_json::Value {
    let mut doc = json!({
        "user_info": {"client_user_id": "181353"},
        "content_info": content,
    });
    if let (Some(d), Some(e)) = (doc.as_object_mut(), extra.as_object()) {
        d.extend(e.clone());
    }
    doc
}

fn base_content() -> serde_json::Value {
    json!({"media_content_key": "m1", "start_at": "1700000000"})
}

async fn post_json(app: &TestApp, doc: &serde_json::Value) -> reqwest::Response {
    app.post("lms", "application/json", doc.to_string().into_bytes())
        .await
}

#[tokio::test]
async fn every_variant_players_send_is_accepted_and_kept_as_sent() {
    let app = spawn_app().await;
    let blocks: serde_json::Map<String, serde_json::Value> = (0..300)
        .flat_map(|i| {
            [
                (format!("b{i}"), json!(i % 2)),
                (format!("t{i}"), json!((i % 2) * 5)),
                (format!("p{i}"), json!((i % 2) * 100)),
            ]
        })
        .collect();
    let uservalues: serde_json::Map<String, serde_json::Value> = (0..100)
        .map(|i| (format!("uservalue{i}"), json!(format!("v{i}"))))
        .collect();
    let cases = [
        (
            "numbers as numbers",
            lms(
                json!({"media_content_key": "m1", "start_at": 1700000000, "playtime": 40, "runtime": 30}),
                json!({}),
            ),
        ),
        ("only the required fields", lms(base_content(), json!({}))),
        (
            "300 blocks",
            lms(
                base_content(),
                json!({"block_info": {"block_count": "300", "blocks": blocks}}),
            ),
        ),
        (
            "Korean user id",
            json!({"user_info": {"client_user_id": "김철수"}, "content_info": base_content()}),
        ),
        (
            "emoji user id",
            json!({"user_info": {"client_user_id": "🎬 viewer 1"}, "content_info": base_content()}),
        ),
        (
            "uservalue0..99",
            lms(base_content(), json!({"uservalues": uservalues})),
        ),
        (
            "unknown fields",
            lms(
                json!({"media_content_key": "m1", "start_at": "1", "new_field": {"x": 1}}),
                json!({"future": [1, 2]}),
            ),
        ),
        (
            "block sessions",
            lms(
                base_content(),
                json!({"block_info": {"block_count": "1", "blocks": {"b0": "1", "t0": "3", "p0": "6"},
            "sessions": [{"block": "0", "start_time": "0", "play_time": "3"}]}}),
            ),
        ),
    ];
    for (what, doc) in &cases {
        let res = post_json(&app, doc).await;
        assert_eq!(res.status(), 200, "{what}: {}", res.text().await.unwrap());
    }
    let records = app.records(&app.topics.playback, cases.len()).await;
    assert_eq!(records.len(), cases.len());
    let kept: Vec<serde_json::Value> = records.iter().map(value).collect();
    let user_ids: Vec<&str> = kept
        .iter()
        .map(|v| v["payload"]["user"]["client_user_id"].as_str().unwrap())
        .collect();
    assert!(user_ids.contains(&"김철수") && user_ids.contains(&"🎬 viewer 1"));
    let with_blocks = kept
        .iter()
        .find(|v| v["payload"]["blocks"]["count"] == 300)
        .unwrap();
    assert_eq!(
        with_blocks["payload"]["blocks"]["items"]
            .as_array()
            .unwrap()
            .len(),
        300
    );
    let with_uv = kept
        .iter()
        .find(|v| v["payload"]["uservalues"]["uservalue99"] == "v99")
        .unwrap();
    assert_eq!(
        with_uv["payload"]["uservalues"].as_object().unwrap().len(),
        100
    );
    let unknown = kept
        .iter()
        .find(|v| v["raw"]["body"].as_str().unwrap().contains("future"))
        .unwrap();
    assert!(
        unknown["raw"]["body"]
            .as_str()
            .unwrap()
            .contains("new_field"),
        "unknown fields survive in the raw body"
    );
}

#[tokio::test]
async fn hostile_input_is_a_4xx_kept_as_a_dead_letter_never_a_5xx() {
    let app = spawn_app().await;
    let seed = String::from_utf8(fixture("lms-seed.json")).unwrap();
    let json = "application/json";
    // (what, route, content type, body, the reason it is refused for)
    let cases: Vec<(&str, &str, &str, Vec<u8>, &str)> = vec![
        ("truncated JSON", "lms", json, seed.as_bytes()[..seed.len() / 2].to_vec(), INVALID),
        ("not JSON at all", "lms", json, b"<xml/>".to_vec(), INVALID),
        ("a JSON array", "lms", json, b"[1,2,3]".to_vec(), INVALID),
        ("user_info a string", "lms", json, br#"{"user_info":"x","content_info":{}}"#.to_vec(), INVALID),
        ("negative playtime", "lms", json, lms(json!({"media_content_key": "m1", "start_at": "1", "playtime": "-5"}), json!({})).to_string().into_bytes(), INVALID),
        ("huge number", "lms", json, lms(json!({"media_content_key": "m1", "start_at": "1", "runtime": "99999999999999999999999"}), json!({})).to_string().into_bytes(), INVALID),
        ("fractional counter", "lms", json, lms(json!({"media_content_key": "m1", "start_at": "1", "runtime": 1.5}), json!({})).to_string().into_bytes(), INVALID),
        ("block_count disagrees", "lms", json, lms(base_content(), json!({"block_info": {"block_count": "2", "blocks": {"b0": "1", "b1": "0", "b7": "1"}}})).to_string().into_bytes(), INVALID),
        ("block_count absurd", "lms", json, lms(base_content(), json!({"block_info": {"block_count": "4000000000"}})).to_string().into_bytes(), INVALID),
        ("deeply nested", "lms", json, format!("{}{}", "[".repeat(100_000), "]".repeat(100_000)).into_bytes(), INVALID),
        ("invalid UTF-8 in JSON", "lms", json, b"{\"user_info\":{\"client_user_id\":\"\xff\xfe\"}}".to_vec(), INVALID),
        ("invalid UTF-8 in a form", "upload", FORM, b"upload_file_key=%FF%FE".to_vec(), INVALID),
        ("raw invalid UTF-8 bytes", "channel", FORM, vec![0xff, 0x00, 0xfe, b'=', 0x80], INVALID),
        ("json_data not JSON", "lms", FORM, b"json_data=%7Bnope".to_vec(), INVALID),
        ("a key with a slash", "channel", FORM, b"upload_file_key=u1&update_type=channel_join&channel_key=c&media_content_key=a%2Fb".to_vec(), INVALID),
        ("a field twice", "upload", FORM, b"upload_file_key=u1&upload_file_key=u2".to_vec(), INVALID),
        ("empty body", "transcoding", FORM, Vec::new(), INVALID),
        ("wrong content type", "lms", "text/plain", seed.clone().into_bytes(), "unsupported_media_type"),
        ("10 MB body", "lms", FORM, vec![b'x'; 10 * 1024 * 1024], "body_too_large"),
    ];
    for (what, route, content_type, body, reason) in &cases {
        let res = app.post(route, content_type, body.clone()).await;
        let status = res.status().as_u16();
        let answer: serde_json::Value = res
            .json()
            .await
            .unwrap_or_else(|e| panic!("{what}: body not JSON: {e}"));
        assert!(
            (400..500).contains(&status),
            "{what}: answered {status} {answer}"
        );
        assert_eq!(answer["error"], *reason, "{what}: {answer}");
        assert!(answer["detail"].is_string(), "{what}: {answer}");
    }
    // Each refused request is kept, as itself (its route and its body, up to the body limit)
    // and with the reason it was refused for: not merely as many dead letters as requests.
    let mut dead: Vec<DeadLetter> = app
        .dead_letters(cases.len())
        .await
        .into_iter()
        .map(|v| serde_json::from_value(v).expect("a dead letter"))
        .collect();
    for (what, route, _, body, reason) in &cases {
        let kept = &body[..body.len().min(BODY_LIMIT)];
        let at = dead
            .iter()
            .position(|d| {
                d.kind.map(|k| k.as_str()) == Some(*route)
                    && d.raw.as_ref().map(|r| r.body.as_bytes()) == Some(kept)
            })
            .unwrap_or_else(|| panic!("{what}: no dead letter holds it"));
        let d = dead.swap_remove(at);
        assert_eq!(
            (d.stage.as_str(), d.reason.as_str()),
            ("ingest", *reason),
            "{what}"
        );
    }
    assert_eq!(
        app.count(&app.topics.playback) + app.count(&app.topics.content),
        0
    );
}

#[tokio::test]
async fn overload_is_answered_503_at_once() {
    let app = spawn_app_with(|s| s.max_in_flight = 0).await;
    // "At once": no slot frees up with none to hold, so an answer that waited for one would
    // never come. The bound is only how long a busy machine may take to answer at all.
    let res = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        app.post("lms", FORM, fixture("lms-seed.form")),
    )
    .await
    .expect("a callback past the in-flight limit is answered at once, not queued for a slot");
    assert_eq!(res.status(), 503);
    assert!(res.headers().contains_key("retry-after"));
    assert_eq!(app.count(&app.topics.playback), 0);
}
