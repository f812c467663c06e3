//! The read API's refusals and its catalog answer, against real tables. (Answers built from
//! callbacks through the whole pipeline are in the end-to-end tests.)

use serde_json::{json, Value};

use crate::helpers::*;

impl TestApp {
    pub async fn get(&self, key: Option<&str>, path: &str) -> reqwest::Response {
        let mut req = self.client.get(format!("{}{path}", self.address));
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        req.send().await.expect("request")
    }
}

#[tokio::test]
async fn every_read_endpoint_needs_a_key() {
    let app = spawn_app().await;
    for path in [
        "/v1/users/u/media/m/progress",
        "/v1/users/u/history",
        "/v1/media/m",
    ] {
        for key in [None, Some("wrong-key-0123456789")] {
            let res = app.get(key, path).await;
            assert_eq!(res.status(), 401, "{path} with {key:?}");
            assert_eq!(res.headers()["content-type"], "application/problem+json");
        }
    }
}

#[tokio::test]
async fn bad_ids_and_queries_are_400_naming_the_field() {
    let app = spawn_app().await;
    for (path, field) in [
        (
            "/v1/users/u/media/not%20a%20key/progress",
            "media_content_key",
        ),
        ("/v1/media/k%C3%A9y", "media_content_key"),
        ("/v1/users/u/history?media=a%2Fb", "media"),
        ("/v1/users/u/history?from=yesterday", "from"),
        ("/v1/users/u/history?to=1700000000", "to"),
        ("/v1/users/u/history?cursor=bm90LWEtY3Vyc29y", "cursor"),
        ("/v1/users/u/history?limit=0", "limit"),
        ("/v1/users/u/history?limit=201", "limit"),
        ("/v1/users/u/history?limit=ten", "limit"),
    ] {
        let res = app.get(Some(APP_KEY), path).await;
        assert_eq!(res.status(), 400, "{path}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["errors"][0]["field"], field, "{path}: {body}");
    }
}

#[tokio::test]
async fn unknown_users_and_videos_are_404_and_an_empty_history_is_a_page() {
    let app = spawn_app().await;
    for path in ["/v1/users/nobody/media/m1/progress", "/v1/media/unknown"] {
        let res = app.get(Some(APP_KEY), path).await;
        assert_eq!(res.status(), 404, "{path}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
    }
    let res = app.get(Some(APP_KEY), "/v1/users/nobody/history").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body,
        json!({"client_user_id": "nobody", "sessions": [], "next_cursor": null})
    );
}

#[tokio::test]
async fn media_state_says_where_a_video_is_and_whether_it_plays() {
    let app = spawn_app().await;
    app.catalog("playing", true, false).await;
    app.catalog("gone", true, true).await;
    app.catalog("left", false, false).await;
    let doc = kollus_token_api::routes::derived();
    for (media, playable, deleted, status) in [
        ("playing", true, false, "in"),
        ("gone", false, true, "in"),
        ("left", false, false, "left"),
    ] {
        let res = app.get(Some(APP_KEY), &format!("/v1/media/{media}")).await;
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["playable"], playable, "{media}: {body}");
        assert_eq!(body["deleted"], deleted, "{media}: {body}");
        assert_eq!(body["upload"]["upload_file_key"], format!("u-{media}"));
        assert_eq!(body["channels"][0]["channel_key"], "ch");
        assert_eq!(body["channels"][0]["status"], status);
        let mismatches = kollus_test_support::openapi_mismatches(
            &doc,
            &json!({"$ref": "#/components/schemas/MediaState"}),
            &body,
        );
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }
}

#[tokio::test]
async fn a_window_that_ends_before_it_starts_is_empty_not_an_error() {
    let app = spawn_app().await;
    let res = app
        .get(
            Some(APP_KEY),
            "/v1/users/u/history?from=2026-11-02T00:00:00Z&to=2026-11-01T00:00:00Z",
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["sessions"], json!([]));
}

#[tokio::test]
async fn edges_answer_problem_json_and_authentication_comes_first() {
    let app = spawn_app().await;
    let problem =
        |res: &reqwest::Response| res.headers()["content-type"] == "application/problem+json";
    // A query the server cannot parse, without a key: 401, the parameters are not looked at.
    let res = app.get(None, "/v1/users/u/history?limit=1&limit=2").await;
    assert_eq!(res.status(), 401);
    // With a key: 400 naming the parameter.
    let res = app
        .get(Some(APP_KEY), "/v1/users/u/history?limit=1&limit=2")
        .await;
    assert_eq!(res.status(), 400);
    assert!(problem(&res));
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["field"], "limit", "{body}");
    let res = app.get(Some(APP_KEY), "/v1/playback-tokens/verify").await;
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(
        body["errors"][0],
        json!({"field": "token", "message": "is required"})
    );
    // An unknown route, and a known one with the wrong method.
    let res = app.get(Some(APP_KEY), "/v1/nothing-here").await;
    assert_eq!(res.status(), 404);
    assert!(problem(&res));
    let res = app.get(Some(APP_KEY), "/v1/playback-tokens").await;
    assert_eq!(res.status(), 405);
    assert_eq!(res.headers()["allow"], "POST");
    assert!(problem(&res));
}

#[tokio::test]
async fn a_stage_nobody_documented_is_answered_as_unknown_and_the_document_allows_it() {
    let app = spawn_app().await;
    app.catalog("odd", true, false).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE uploads SET transcoding_state = 'unknown' WHERE upload_file_key = 'u-odd'",
            &[],
        )
        .await
        .unwrap();
    let res = app.get(Some(APP_KEY), "/v1/media/odd").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["upload"]["transcoding_state"], "unknown", "{body}");
    let doc = kollus_token_api::routes::derived();
    let mismatches = kollus_test_support::openapi_mismatches(
        &doc,
        &json!({"$ref": "#/components/schemas/MediaState"}),
        &body,
    );
    assert!(mismatches.is_empty(), "{mismatches:#?}");
}

#[tokio::test]
async fn media_state_carries_what_kollus_api_says_and_an_absence_is_not_a_delete() {
    let app = spawn_app().await;
    app.catalog("titled", true, false).await;
    app.describe("titled", "3강 - 미적분 기초", false).await;
    app.catalog("vanished", true, false).await;
    app.describe("vanished", "gone quietly", true).await;
    let doc = kollus_token_api::routes::derived();

    let titled: Value = app
        .get(Some(APP_KEY), "/v1/media/titled")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(titled["upload"]["title"], "3강 - 미적분 기초", "{titled}");
    assert_eq!(titled["upload"]["duration_seconds"], 754);
    assert_eq!(
        titled["upload"]["poster_url"],
        "https://img.example/titled.jpg"
    );
    assert_eq!(titled["upload"]["transcoding_stage"], 21);
    assert_eq!(titled["upload"]["transcoding_stage_name"], "Transcoded");
    assert_eq!(*present(&titled, "absent_since"), Value::Null);
    assert_eq!(titled["playable"], true);

    let vanished: Value = app
        .get(Some(APP_KEY), "/v1/media/vanished")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        vanished["absent_since"], "2026-11-30T03:00:00Z",
        "{vanished}"
    );
    assert_eq!(vanished["playable"], false, "an absent video does not play");
    assert_eq!(vanished["deleted"], false, "no delete callback came");
    assert_eq!(*present(&vanished, "deleted_at"), Value::Null);

    // A video the API never described: every new field is there, null.
    app.catalog("bare", true, false).await;
    let bare: Value = app
        .get(Some(APP_KEY), "/v1/media/bare")
        .await
        .json()
        .await
        .unwrap();
    for field in [
        "title",
        "duration_seconds",
        "poster_url",
        "transcoding_stage",
        "transcoding_stage_name",
    ] {
        assert_eq!(
            *present(&bare["upload"], field),
            Value::Null,
            "{field}: {bare}"
        );
    }
    for body in [&titled, &vanished, &bare] {
        let mismatches = kollus_test_support::openapi_mismatches(
            &doc,
            &json!({"$ref": "#/components/schemas/MediaState"}),
            body,
        );
        assert!(mismatches.is_empty(), "{mismatches:#?}");
    }
}
