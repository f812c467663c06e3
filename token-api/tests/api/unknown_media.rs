//! A token request or a play callback naming a video the catalog does not know is counted
//! (`kollus_catalog_unknown_media_total{source}`): the catalog missed what Kollus has.

use kollus_token_api::configuration::StrictCatalog;
use serde_json::json;

use crate::helpers::*;

const TOKEN: &str = r#"kollus_catalog_unknown_media_total{source="token"}"#;
const PLAY: &str = r#"kollus_catalog_unknown_media_total{source="play"}"#;

#[tokio::test]
async fn token_requests_count_each_video_the_catalog_does_not_know() {
    let app = spawn_app().await;
    app.catalog("known", true, false).await;
    assert_eq!((app.metric(TOKEN).await, app.metric(PLAY).await), (0, 0));

    let known = app
        .issue(
            APP_KEY,
            json!({"client_user_id": "u1", "media": [{"media_content_key": "known"}]}),
        )
        .await;
    assert_eq!(known.status(), 201);
    assert_eq!(app.metric(TOKEN).await, 0, "a known video is not counted");

    // STRICT_CATALOG=on issues for unknown videos, and counts them: two here.
    let mixed = app
        .issue(
            APP_KEY,
            json!({"client_user_id": "u1", "media": [
                {"media_content_key": "missed-1"},
                {"media_content_key": "known"},
                {"media_content_key": "missed-2"}
            ]}),
        )
        .await;
    assert_eq!(mixed.status(), 201);
    assert_eq!(app.metric(TOKEN).await, 2);
    assert_eq!(app.metric(PLAY).await, 0);
    // The token endpoint's own metric is unchanged by the addition.
    assert_eq!(
        app.metric(r#"kollus_token_issued_total{outcome="issued"}"#)
            .await,
        2
    );
}

#[tokio::test]
async fn require_mode_refuses_and_counts_and_off_mode_reads_nothing() {
    let require = spawn_app_with(|s| s.strict_catalog = StrictCatalog::Require).await;
    let res = require
        .issue(
            APP_KEY,
            json!({"client_user_id": "u1", "media": [{"media_content_key": "missed"}]}),
        )
        .await;
    assert_eq!(res.status(), 409);
    assert_eq!(require.metric(TOKEN).await, 1);

    let off = spawn_app_with(|s| s.strict_catalog = StrictCatalog::Off).await;
    let res = off
        .issue(
            APP_KEY,
            json!({"client_user_id": "u1", "media": [{"media_content_key": "missed"}]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    assert_eq!(off.metric(TOKEN).await, 0, "off: the catalog is not read");
}

#[tokio::test]
async fn play_callbacks_naming_an_unknown_video_are_counted() {
    let app = spawn_app().await;
    app.catalog("known", true, false).await;
    let play = |media: &'static str| {
        let app = &app;
        async move {
            app.client
                .post(format!("{}/kollus/play?secret={PLAY_SECRET}", app.address))
                .form(&[
                    ("kind", "1"),
                    ("client_user_id", "u1"),
                    ("media_content_key", media),
                ])
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(play("known").await.status(), 200);
    assert_eq!(app.metric(PLAY).await, 0);
    assert_eq!(play("missed").await.status(), 200, "answered all the same");
    assert_eq!(play("missed").await.status(), 200);
    assert_eq!(app.metric(PLAY).await, 2);
    assert_eq!(app.metric(TOKEN).await, 0);
}
