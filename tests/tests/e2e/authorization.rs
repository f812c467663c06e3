//! Playback authorization end to end: the product app grants an entitlement with a viewing
//! allowance, the viewer's player reports through ingest, history-worker applies the reports,
//! and token-api's answers to Kollus's play callback shrink the allowance until it refuses.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kollus_test_support::{eventually, eventually_ok};
use serde_json::{json, Value};

use crate::read_api::report;
use crate::stack::*;

impl Stack {
    /// token-api's answer to a play callback (kind 1), verified and decoded.
    async fn play(&self, user: &str, media: &str) -> Value {
        let res = self
            .http
            .post(format!(
                "{}/kollus/play?secret={PLAY_CALLBACK_SECRET}",
                self.token_api
            ))
            .form(&[
                ("kind", "1"),
                ("client_user_id", user),
                ("media_content_key", media),
                ("player_id", "p"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-kollus-userkey"], CUSTOM_KEY);
        let mut validation = Validation::new(Algorithm::HS256);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        jsonwebtoken::decode::<Value>(
            &res.text().await.unwrap(),
            &DecodingKey::from_secret(SECURITY_KEY.as_bytes()),
            &validation,
        )
        .expect("signed with the security key")
        .claims["data"]
            .clone()
    }
}

#[tokio::test]
async fn the_allowance_shrinks_as_the_viewer_watches_until_kollus_is_told_no() {
    let stack = Stack::start().await;
    let res = stack
        .http
        .put(format!(
            "{}/v1/users/viewer/entitlements/media/mAuth",
            stack.token_api
        ))
        .bearer_auth(API_KEY)
        .json(&json!({"playtime_limit_seconds": 120}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let first = stack.play("viewer", "mAuth").await;
    assert_eq!(
        (&first["result"], &first["expiration_playtime"]),
        (&json!(1), &json!(120))
    );

    let start = time::OffsetDateTime::now_utc().unix_timestamp() - 600;
    stack
        .lms(report("viewer", "mAuth", start, 50, 50, &[true, false]))
        .await;
    eventually(
        "the play answer to count the 50 s watched",
        SLACK,
        || async {
            let data = stack.play("viewer", "mAuth").await;
            (data["expiration_playtime"] == 70).then_some(())
        },
    )
    .await;

    // The same session goes on past the allowance.
    stack
        .lms(report("viewer", "mAuth", start, 130, 130, &[true, true]))
        .await;
    let refused = eventually(
        "the play callback to be refused once the allowance is used up",
        SLACK,
        || async {
            let data = stack.play("viewer", "mAuth").await;
            (data["result"] == 0).then_some(data)
        },
    )
    .await;
    assert_eq!(refused["expiration_playtime"], 0);
    assert_eq!(
        refused["message"],
        "이 강의의 시청 가능 시간을 모두 사용했습니다."
    );
}

/// Callback trust through the binaries: each of the three secrets opens its own routes and no
/// other (the platform secret aside, which the services' own tests cover), and a refused request
/// leaves nothing on any topic nor any decision in PostgreSQL.
#[tokio::test]
async fn each_callback_secret_opens_only_its_own_routes() {
    let stack = Stack::start().await;
    let post = |base: &str, route: &str, secret: &str| {
        let body: Vec<(&str, String)> = match route {
            "drm" => vec![(
                "items",
                json!([{"kind": 1, "client_user_id": "u", "media_content_key": "m",
                        "player_id": "p", "session_key": "s"}])
                .to_string(),
            )],
            "play" => vec![
                ("kind", "1".into()),
                ("client_user_id", "u".into()),
                ("media_content_key", "m".into()),
            ],
            _ => vec![("upload_file_key", "u".into())],
        };
        stack
            .http
            .post(format!("{base}/kollus/{route}?secret={secret}"))
            .form(&body)
            .send()
    };
    let ingest_routes = ["upload", "transcoding", "content", "channel", "lms"];
    for route in ingest_routes {
        for secret in [PLAY_CALLBACK_SECRET, LMS_CALLBACK_SECRET] {
            if secret == secret_for(route) {
                continue;
            }
            let res = post(&stack.ingest, route, secret).await.unwrap();
            assert_eq!(res.status(), 401, "ingest {route} with {secret}");
        }
    }
    for route in ["play", "drm"] {
        for secret in [CALLBACK_SECRET, LMS_CALLBACK_SECRET] {
            let res = post(&stack.token_api, route, secret).await.unwrap();
            assert_eq!(res.status(), 401, "token-api {route} with {secret}");
        }
    }
    let topics = stack.broker.settings();
    let kept = || {
        // The callbacks' and dead letters' topics (no erasure is asked here).
        topics
            .topics()
            .into_iter()
            .filter(|topic| *topic != topics.erasure_topic)
            .map(|topic| {
                let n = kollus_test_support::topic_record_count(&stack.broker.addr, topic);
                (topic.to_owned(), n)
            })
            .collect::<Vec<_>>()
    };
    for (topic, n) in kept() {
        assert_eq!(n, 0, "nothing kept on {topic}");
    }
    let decisions = || async {
        stack
            .db
            .client()
            .await
            .query_one("SELECT count(*) FROM playback_decisions", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(decisions().await, 0, "a refused callback decides nothing");
    // Each route with its own secret is answered: a 200 keeps the callback on its topic, a
    // 400 (the form above is no valid callback of most routes) keeps a dead letter.
    let (mut content, mut playback, mut dead) = (0, 0, 0);
    for route in ingest_routes {
        let res = post(&stack.ingest, route, secret_for(route)).await.unwrap();
        match (res.status().as_u16(), route) {
            (200, "lms") => playback += 1,
            (200, _) => content += 1,
            (400, _) => dead += 1,
            (status, _) => panic!("ingest {route} with its own secret: {status}"),
        }
    }
    for route in ["play", "drm"] {
        let res = post(&stack.token_api, route, PLAY_CALLBACK_SECRET)
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "token-api {route} with its own secret");
    }
    // The counts above could have seen a record or a decision: those the right secrets let in
    // are there.
    let expected: Vec<(String, i64)> = topics
        .topics()
        .into_iter()
        .zip([content, playback, dead])
        .map(|(t, n)| (t.to_owned(), n))
        .collect();
    assert_eq!(content + playback + dead, 5);
    eventually_ok(
        "what the answered callbacks kept: their records, a decision per token-api route",
        SLACK,
        || async {
            let (kept, decided) = (kept(), decisions().await);
            if kept == expected && decided == 2 {
                Ok(())
            } else {
                Err(format!(
                    "kept {kept:?}, {decided} decisions; expected {expected:?}"
                ))
            }
        },
    )
    .await;
}
