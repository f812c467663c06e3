use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kollus_test_support::{eventually, eventually_ok, fixture, read_topic, topic_record_count};
use rdkafka::message::Message as _;

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
    let session = eventually("the seed session row", SLACK, || async {
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

    let playable: bool = eventually("vnCVPVyV in the catalog", SLACK, || async {
        db.query_opt(
            "SELECT playable FROM media_playability WHERE media_content_key = 'vnCVPVyV'",
            &[],
        )
        .await
        .ok()
        .flatten()
        .map(|r| r.get(0))
    })
    .await;
    assert!(playable, "joined a channel: playable");

    // A token for the video the catalog now knows.
    let asked = time::OffsetDateTime::now_utc().unix_timestamp();
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
    let answered = time::OffsetDateTime::now_utc().unix_timestamp();
    let expt = claims["expt"].as_i64().unwrap();
    // An hour from when token-api signed it, which was between the request and its answer
    // (however long a loaded machine took).
    assert!(
        (asked + 3600..=answered + 3600).contains(&expt),
        "expt {expt} is an hour from the request, made in [{asked}, {answered}]"
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
/// the tables through the broker and both workers: each fixture's own mark is found there (not a
/// count another fixture or a dead letter could make up), and nothing was dead-lettered.
#[tokio::test]
async fn every_fixture_reaches_the_tables_through_the_real_binaries() {
    let stack = Stack::start().await;
    // (fixture, how it is sent, the route, a query finding its own mark in the tables).
    // `lms-seed.json` and `lms-query-string.url` are the documents of `lms-seed.form` and
    // `lms-android-hash.form` in another shape: each is sent with a user of its own, so its
    // session is its own and not one the other fixture made.
    let fixtures: [(&str, Body, &str, &str); 11] = [
        (
            "upload.form",
            Body::Form,
            "upload",
            "SELECT count(*) FROM content_events \
             WHERE change = 'uploaded' AND upload_file_key = 'ufk-0001'",
        ),
        (
            "transcoding-success.form",
            Body::Form,
            "transcoding",
            "SELECT count(*) FROM content_events \
             WHERE change = 'transcoded' AND upload_file_key = 'ufk-0001'",
        ),
        (
            "transcoding-request-id.form",
            Body::Form,
            "transcoding",
            "SELECT count(*) FROM content_events \
             WHERE change = 'transcoded' AND upload_file_key = '20251117-fx7k2m9q' \
               AND request_id = '20251117-callback-65a1f0c3d2b4e'",
        ),
        (
            "channel-join.form",
            Body::Form,
            "channel",
            "SELECT count(*) FROM content_events WHERE change = 'channel_join' \
               AND media_content_key = 'vnCVPVyV' AND channel_key = 'ch-main'",
        ),
        (
            "channel-leave.form",
            Body::Form,
            "channel",
            "SELECT count(*) FROM content_events WHERE change = 'channel_leave' \
               AND media_content_key = 'vnCVPVyV' AND channel_key = 'ch-main'",
        ),
        (
            "content-poster.form",
            Body::Form,
            "content",
            "SELECT count(*) FROM content_events \
             WHERE change = 'content_poster' AND upload_file_key = 'ufk-0001'",
        ),
        (
            "content-delete.form",
            Body::Form,
            "content",
            "SELECT count(*) FROM content_events \
             WHERE change = 'content_delete' AND upload_file_key = 'ufk-0001'",
        ),
        (
            "lms-seed.form",
            Body::Form,
            "lms",
            "SELECT count(*) FROM watch_sessions \
             WHERE client_user_id = '181353' AND media_content_key = 'mediacontentkey'",
        ),
        (
            "lms-seed.json",
            Body::JsonAs("181353-json"),
            "lms",
            "SELECT count(*) FROM watch_sessions \
             WHERE client_user_id = '181353-json' AND media_content_key = 'mediacontentkey'",
        ),
        (
            "lms-android-hash.form",
            Body::Form,
            "lms",
            // Signed: verified only if this report, not its unsigned copy, made the row.
            "SELECT count(*) FROM watch_sessions WHERE client_user_id = 'fixture-user-7' \
               AND media_content_key = 'fxAndr01' AND hash_verified",
        ),
        (
            "lms-query-string.url",
            Body::QueryAs("fixture-user-7-get"),
            "lms",
            "SELECT count(*) FROM watch_sessions \
             WHERE client_user_id = 'fixture-user-7-get' AND media_content_key = 'fxAndr01'",
        ),
    ];
    for (file, body, route, _) in &fixtures {
        let res = body.send(&stack, route, file).await;
        assert_eq!(res.status(), 200, "{file}: {:?}", res.text().await);
    }

    // Each accepted callback is one record; once both workers have committed past every one,
    // each record is applied or dead-lettered.
    let topics = stack.broker.settings();
    let content = topic_record_count(&stack.broker.addr, &topics.content_topic);
    let playback = topic_record_count(&stack.broker.addr, &topics.playback_topic);
    let lms = fixtures.iter().filter(|f| f.2 == "lms").count() as i64;
    assert_eq!(
        (content, playback),
        (fixtures.len() as i64 - lms, lms),
        "one record per callback"
    );
    eventually_ok(
        "both workers to commit past every record",
        SLACK,
        || async {
            let sync = kollus_test_support::group::committed(
                &stack.broker.addr,
                &stack.broker.group("sync-worker"),
                &topics.content_topic,
            )
            .await;
            let history = stack.applied_reports().await;
            if (sync, history) == (content, playback) {
                Ok(())
            } else {
                Err(format!(
                    "sync-worker {sync} of {content}, history-worker {history} of {playback}"
                ))
            }
        },
    )
    .await;
    let dead = read_topic(
        &stack.broker.addr,
        &topics.deadletter_topic,
        0,
        Duration::from_secs(10),
    )
    .await;
    // Each as "stage reason: detail" (the record it holds is long).
    let dead: Vec<String> = dead
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned();
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(v) => format!("{} {}: {}", v["stage"], v["reason"], v["detail"]),
                Err(_) => text,
            }
        })
        .collect();
    assert!(dead.is_empty(), "dead-lettered: {dead:#?}");

    let db = stack.db.client().await;
    let mut missing = Vec::new();
    for (file, _, _, mark) in &fixtures {
        let found: i64 = db.query_one(*mark, &[]).await.unwrap().get(0);
        if found != 1 {
            missing.push(format!("{file} ({found} rows: {mark})"));
        }
    }
    assert!(
        missing.is_empty(),
        "fixtures whose own mark is not in the tables: {missing:#?}"
    );

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
            ("181353".to_owned(), 151, Some(false)),
            ("181353-json".to_owned(), 151, Some(false)),
            // Android's signed report; the same document unsigned, by GET.
            ("fixture-user-7".to_owned(), 596, Some(true)),
            ("fixture-user-7-get".to_owned(), 596, Some(false)),
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

/// How a fixture is sent to ingest.
enum Body {
    /// The file as a form body, to its route.
    Form,
    /// The JSON file as the body, its user replaced by this one.
    JsonAs(&'static str),
    /// The path and query of the file as a GET (no body), its user replaced by this one.
    QueryAs(&'static str),
}

impl Body {
    async fn send(&self, stack: &Stack, route: &str, file: &str) -> reqwest::Response {
        let text = || String::from_utf8(fixture(file)).unwrap();
        match self {
            Body::Form => stack.callback(route, fixture(file)).await,
            Body::JsonAs(user) => {
                let doc = text().replace("\"181353\"", &format!("\"{user}\""));
                assert!(doc.contains(user), "{file} names user 181353");
                stack
                    .http
                    .post(format!(
                        "{}/kollus/{route}?secret={}",
                        stack.ingest,
                        secret_for(route)
                    ))
                    .header("content-type", "application/json")
                    .body(doc)
                    .send()
                    .await
                    .unwrap()
            }
            Body::QueryAs(user) => {
                let url = text().replace("fixture-user-7", user);
                assert!(url.contains(user), "{file} names user fixture-user-7");
                stack
                    .http
                    .get(format!(
                        "{}{}&secret={}",
                        stack.ingest,
                        url.trim_end(),
                        secret_for(route)
                    ))
                    .send()
                    .await
                    .unwrap()
            }
        }
    }
}
