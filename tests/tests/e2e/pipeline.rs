use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kollus_test_support::{eventually, fixture};

use crate::stack::*;

#[tokio::test]
async fn callbacks_flow_to_the_catalog_and_history_and_tokens_are_signed() {
    let stack = Stack::start().await;

    assert_eq!(
        stack
            .callback("lms", fixture("lms-seed.form"))
            .await
            .status(),
        200
    );
    assert_eq!(
        stack
            .callback("channel", fixture("channel-join.form"))
            .await
            .status(),
        200
    );

    let db = stack.db.client().await;
    let session = eventually("the seed session row", Duration::from_secs(60), || async {
        db.query_opt(
            "SELECT client_user_id, start_at, playtime, \
                    cardinality(array_positions(blocks_played, true)) \
             FROM watch_sessions",
            &[],
        )
        .await
        .ok()
        .flatten()
    })
    .await;
    assert_eq!(session.get::<_, &str>(0), "181353");
    assert_eq!(session.get::<_, i64>(1), 1_593_586_044);
    assert_eq!(session.get::<_, i64>(2), 151);
    assert_eq!(
        session.get::<_, Option<i32>>(3),
        Some(5),
        "5 blocks watched"
    );

    let playable: bool = eventually(
        "vnCVPVyV in the catalog",
        Duration::from_secs(60),
        || async {
            db.query_opt(
                "SELECT playable FROM media_playability WHERE media_content_key = 'vnCVPVyV'",
                &[],
            )
            .await
            .ok()
            .flatten()
            .map(|r| r.get(0))
        },
    )
    .await;
    assert!(playable, "joined a channel: playable");

    // A token for the video the catalog now knows.
    let res = stack
        .http
        .post(format!("{}/v1/playback-tokens", stack.token_api))
        .bearer_auth(API_KEY)
        .json(&serde_json::json!({
            "client_user_id": "181353",
            "media": [{"media_content_key": "vnCVPVyV"}],
            "uservalues": {"uservalue0": "production"}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let body: serde_json::Value = res.json().await.unwrap();
    let token = body["token"].as_str().unwrap();

    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp"]);
    let decoded = jsonwebtoken::decode::<serde_json::Value>(
        token,
        &DecodingKey::from_secret(SECURITY_KEY.as_bytes()),
        &validation,
    )
    .expect("the token verifies with the shared security key");
    let claims = decoded.claims;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let expt = claims["expt"].as_i64().unwrap();
    assert!(
        (now + 3590..=now + 3601).contains(&expt),
        "expt {expt} is an hour from {now}"
    );
    assert_eq!(
        claims,
        serde_json::json!({"cuid": "181353", "expt": expt, "exp": expt, "mc": [{"mckey": "vnCVPVyV"}]})
    );
    let url = body["url"].as_str().unwrap();
    assert!(url.starts_with("https://v.kr.kollus.com/s?jwt="), "{url}");
    assert!(
        url.contains(&format!("&custom_key={CUSTOM_KEY}&uservalue0=production")),
        "{url}"
    );

    // Every service exposes its metrics.
    for (base, name) in [
        (&stack.ingest, "kollus_ingest_requests_total"),
        (&stack.token_api, "kollus_token_issued_total"),
        (&stack.sync_admin, "kollus_sync_records_total"),
        (&stack.history_admin, "kollus_history_records_total"),
    ] {
        let text = stack
            .http
            .get(format!("{base}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains(name), "{base}/metrics lacks {name}");
    }
}

/// Every shared fixture, posted as Kollus or a player would to the real ingest binary, lands in
/// the tables through the broker and both workers.
#[tokio::test]
async fn every_fixture_reaches_the_tables_through_the_real_binaries() {
    let stack = Stack::start().await;
    for (route, file) in [
        ("upload", "upload.form"),
        ("transcoding", "transcoding-success.form"),
        ("transcoding", "transcoding-request-id.form"),
        ("channel", "channel-join.form"),
        ("channel", "channel-leave.form"),
        ("content", "content-poster.form"),
        ("content", "content-delete.form"),
        ("lms", "lms-seed.form"),
        ("lms", "lms-android-hash.form"),
    ] {
        let res = stack.callback(route, fixture(file)).await;
        assert_eq!(res.status(), 200, "{file}: {:?}", res.text().await);
    }
    let json = stack
        .http
        .post(format!(
            "{}/kollus/lms?secret={LMS_CALLBACK_SECRET}",
            stack.ingest
        ))
        .header("content-type", "application/json")
        .body(fixture("lms-seed.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(json.status(), 200, "lms-seed.json");
    let url = String::from_utf8(fixture("lms-query-string.url")).unwrap();
    let get = stack
        .http
        .get(format!(
            "{}{}&secret={LMS_CALLBACK_SECRET}",
            stack.ingest,
            url.trim_end()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200, "lms-query-string.url as a GET");

    let db = stack.db.client().await;
    let count = |sql: &'static str| {
        let db = &db;
        async move {
            db.query_one(sql, &[])
                .await
                .ok()
                .map(|r| r.get::<_, i64>(0))
        }
    };
    eventually(
        "7 platform callbacks and 4 reports applied",
        Duration::from_secs(60),
        || async {
            let events = count("SELECT count(*) FROM content_events").await?;
            let reports = stack.applied_reports().await;
            (events == 7 && reports == 4).then_some(())
        },
    )
    .await;
    let row = db
        .query_one(
            "SELECT request_id, payload->>'filename' FROM content_events \
             WHERE upload_file_key = '20251117-fx7k2m9q'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Option<&str>>(0),
        Some("20251117-callback-65a1f0c3d2b4e")
    );
    assert_eq!(
        row.get::<_, Option<&str>>(1),
        Some("lectures/2025/W01_Intro.MP4")
    );
    let sessions = db
        .query(
            "SELECT client_user_id, playtime, hash_verified FROM watch_sessions ORDER BY 1",
            &[],
        )
        .await
        .unwrap();
    let sessions: Vec<(String, i64, Option<bool>)> = sessions
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    assert_eq!(
        sessions,
        [
            // The seed form and the seed JSON: one session, two unsigned reports.
            ("181353".to_owned(), 151, Some(false)),
            // Android's signed report, then the same document unsigned by GET.
            ("fixture-user-7".to_owned(), 596, Some(false)),
        ]
    );
    let deleted: bool = db
        .query_one(
            "SELECT deleted_at IS NOT NULL FROM uploads WHERE upload_file_key = 'ufk-0001'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(deleted, "content-delete.form applied");
}
