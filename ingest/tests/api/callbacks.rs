use kollus_test_support::fixture;

use crate::helpers::*;

#[tokio::test]
async fn seed_lms_form_is_published_keyed_by_user_and_video() {
    let app = spawn_app().await;
    let body = fixture("lms-seed.form");
    let res = app.post("lms", FORM, body.clone()).await;
    assert_eq!(res.status(), 200);
    let answer: serde_json::Value = res.json().await.unwrap();

    let records = app.records(&app.topics.playback, 1).await;
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(key(r), "181353\u{1f}mediacontentkey");
    assert_eq!(header_value(r, KIND).as_deref(), Some("lms"));
    let v = value(r);
    assert_eq!(v["id"], answer["id"], "the answer names the envelope");
    assert_eq!(header_value(r, "id").as_deref(), v["id"].as_str());
    assert_eq!(v["kind"], "lms");
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["source_ip"], "127.0.0.1");
    assert_eq!(v["payload"]["user"]["client_user_id"], "181353");
    assert_eq!(v["payload"]["content"]["playtime"], 151);
    assert_eq!(v["payload"]["content"]["start_at"], 1_593_586_044);
    assert_eq!(v["payload"]["blocks"]["count"], 30);
    assert_eq!(
        v["raw"]["body"].as_str().unwrap().as_bytes(),
        &body[..],
        "the raw body is kept byte for byte"
    );
    // The secret was the query's only pair: with it removed nothing is left to keep (the query
    // holds other pairs, and never the secret, in the next test).
    assert_eq!(v.get("query"), None, "the secret is never stored: {v}");
    assert_eq!(v["raw"].get("query_string"), None, "{v}");
    assert!(!v.to_string().contains(LMS_SECRET), "{v}");
}

#[tokio::test]
async fn lms_json_body_and_uservalues_in_the_query_are_kept() {
    let app = spawn_app().await;
    let res = app
        .client
        .post(format!(
            "{}/kollus/lms?uservalue0=production&secret={LMS_SECRET}",
            app.address
        ))
        .header("content-type", "application/json")
        .body(fixture("lms-seed.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let v = value(&app.records(&app.topics.playback, 1).await[0]);
    assert_eq!(
        v["query"],
        serde_json::json!({"uservalue0": "production"}),
        "the uservalue kept, the secret not"
    );
    assert_eq!(v["raw"]["query_string"], "uservalue0=production");
    assert_eq!(v["payload"]["content"]["last_play_at"], 1225);
}

#[tokio::test]
async fn channel_join_is_published_keyed_by_upload() {
    let app = spawn_app().await;
    let res = app
        .post("channel", FORM, fixture("channel-join.form"))
        .await;
    assert_eq!(res.status(), 200);
    let records = app.records(&app.topics.content, 1).await;
    let r = &records[0];
    assert_eq!(key(r), "ufk-0001");
    let v = value(r);
    assert_eq!(v["kind"], "channel");
    assert_eq!(v["payload"]["change"]["type"], "channel_joined");
    assert_eq!(
        v["payload"]["change"]["channel"]["media_content_key"],
        "vnCVPVyV"
    );
    assert_eq!(
        v["payload"]["change"]["channel"]["profile_keys"],
        serde_json::json!(["pc-high", "mobile-low"])
    );
}

#[tokio::test]
async fn every_platform_fixture_is_accepted_on_its_route() {
    let app = spawn_app().await;
    let cases = [
        ("upload", "upload.form"),
        ("transcoding", "transcoding-success.form"),
        ("channel", "channel-join.form"),
        ("channel", "channel-leave.form"),
        ("content", "content-delete.form"),
        ("content", "content-poster.form"),
    ];
    for (route, file) in cases {
        let res = app.post(route, FORM, fixture(file)).await;
        assert_eq!(res.status(), 200, "{file} on /kollus/{route}");
    }
    let records = app.records(&app.topics.content, cases.len()).await;
    let changes: Vec<String> = records
        .iter()
        .map(|r| {
            value(r)["payload"]["change"]["type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    // One upload: one key, one partition, so arrival order is kept.
    assert_eq!(
        changes,
        [
            "uploaded",
            "transcoded",
            "channel_joined",
            "channel_left",
            "deleted",
            "poster_changed"
        ]
    );
}

#[tokio::test]
async fn wrong_or_missing_secret_is_401_and_keeps_nothing() {
    let app = spawn_app().await;
    let bad = app
        .post_with_secret("lms", "wrong", FORM, fixture("lms-seed.form"))
        .await;
    assert_eq!(bad.status(), 401);
    let body: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    let missing = app
        .client
        .post(format!("{}/kollus/upload", app.address))
        .header("content-type", FORM)
        .body(fixture("upload.form"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 401);

    for topic in [
        &app.topics.playback,
        &app.topics.content,
        &app.topics.deadletter,
    ] {
        assert_eq!(app.count(topic), 0, "nothing kept on {topic}");
    }
    // The same callback with the right secret is kept.
    assert_eq!(
        app.post("lms", FORM, fixture("lms-seed.form"))
            .await
            .status(),
        200
    );
    assert_eq!(app.count(&app.topics.playback), 1);
}

#[tokio::test]
async fn malformed_callback_is_400_naming_the_field_and_dead_lettered() {
    let app = spawn_app().await;
    let res = app
        .post(
            "channel",
            FORM,
            b"upload_file_key=u1&update_type=channel_join".to_vec(),
        )
        .await;
    assert_eq!(res.status(), 400);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "invalid_callback");
    assert_eq!(body["field"], "media_content_key");

    let dead = app.records(&app.topics.deadletter, 1).await;
    assert_eq!(dead.len(), 1);
    let v = value(&dead[0]);
    assert_eq!(v["stage"], "ingest");
    assert_eq!(v["reason"], "invalid_callback");
    assert_eq!(v["kind"], "channel");
    assert!(v["detail"].as_str().unwrap().contains("media_content_key"));
    assert_eq!(
        v["raw"]["body"],
        "upload_file_key=u1&update_type=channel_join"
    );
}

#[tokio::test]
async fn wrong_content_type_is_415_and_oversized_body_is_413() {
    let app = spawn_app_with(|s| s.body_limit = 1024).await;
    let res = app
        .post("upload", "text/plain", fixture("upload.form"))
        .await;
    assert_eq!(res.status(), 415);
    let res = app.post("lms", "text/xml", fixture("lms-seed.json")).await;
    assert_eq!(res.status(), 415);
    let res = app.post("lms", FORM, vec![b'a'; 10 * 1024 * 1024]).await;
    assert_eq!(res.status(), 413);
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "body_too_large");

    // Dead letters are keyed by route, so they may sit in different partitions: no order.
    let dead: Vec<serde_json::Value> = app
        .records(&app.topics.deadletter, 3)
        .await
        .iter()
        .map(value)
        .collect();
    let mut reasons: Vec<(&str, &str)> = dead
        .iter()
        .map(|v| (v["kind"].as_str().unwrap(), v["reason"].as_str().unwrap()))
        .collect();
    reasons.sort_unstable();
    assert_eq!(
        reasons,
        [
            ("lms", "body_too_large"),
            ("lms", "unsupported_media_type"),
            ("upload", "unsupported_media_type")
        ]
    );
    let oversized = dead
        .iter()
        .find(|v| v["reason"] == "body_too_large")
        .unwrap();
    assert_eq!(
        oversized["raw"]["body"].as_str().unwrap().len(),
        1024,
        "an oversized body is kept up to the limit"
    );
}

#[tokio::test]
async fn unknown_route_is_404() {
    let app = spawn_app().await;
    let res = app.post("nope", FORM, b"x=1".to_vec()).await;
    assert_eq!(res.status(), 404);
}

#[tokio::test]
async fn metrics_exist_before_the_first_event_with_the_build_and_the_process() {
    let app = spawn_app().await;
    let text = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "kollus_ingest_deadletter_total{reason=\"lms_document_missing\"} 0",
        "kollus_ingest_deadletter_total{reason=\"invalid_callback\"} 0",
        "kollus_ingest_requests_total{route=\"lms\",status=\"503\"} 0",
        "kollus_ingest_lms_hash_total{verdict=\"mismatch\"} 0",
        &format!(
            "kollus_build_info{{service=\"ingest\",version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        ),
    ] {
        assert!(text.contains(series), "missing {series}");
    }
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
    ] {
        assert!(text.lines().any(|l| l.starts_with(name)), "missing {name}");
    }
}

/// The test helper counts by reading, so a batch of many records counts as many, and an offset
/// that holds no record (an idempotent retry's, a transaction marker's) counts as none.
#[tokio::test]
async fn counting_a_topic_counts_every_record_of_a_batch() {
    let app = spawn_app().await;
    let settings = app.broker.settings();
    let topic = app.broker.topic("count-check");
    kollus_common::kafka::ensure_topics(&settings, &[&topic])
        .await
        .unwrap();
    let producer = kollus_common::kafka::durable_producer(
        &settings,
        "count-check",
        std::time::Duration::from_secs(10),
    )
    .unwrap();
    // Sent together, one key: one partition, batched by the producer's linger.
    let values: Vec<String> = (0..25).map(|i| format!("record {i}")).collect();
    let sends = values.iter().map(|value| {
        kollus_common::kafka::send(
            &producer,
            &topic,
            "one-key",
            value.as_bytes(),
            kollus_common::kafka::headers(&[]),
            std::time::Duration::from_secs(10),
        )
    });
    for sent in futures_util::future::join_all(sends).await {
        sent.unwrap();
    }
    assert_eq!(app.count(&topic), 25);
}
