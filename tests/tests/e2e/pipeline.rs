use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use kollus_common::testing::{eventually, fixture};

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
