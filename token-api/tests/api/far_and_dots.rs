//! Times that do not fit and ids made of dots (issue 30): a grant expiring
//! `9999-12-31T23:59:59Z` (a common "never") and a session starting as late as a date holds are
//! shown in UTC, marked so, on every console page of their user, where they panicked in
//! Asia/Seoul; an `expires_at` after 2100 is refused naming the field; an id of dots only is
//! refused wherever the API reads one, and a row stored before that is linked without `..`.

use reqwest::StatusCode;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::console::{get, seed, sign_in, spawn_console};
use crate::helpers::*;

/// 9999-12-31T23:59:59Z: the last instant a date holds, past the last one Seoul can write.
const LAST_INSTANT: i64 = 253_402_300_799;

/// One session of `user` on `media` starting at `start_at`, as history-worker stores it.
async fn session_at(app: &TestApp, user: &str, media: &str, start_at: i64) {
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, device, os, \
                 player_id, playtime, real_playtime, runtime, block_count, blocks_played, \
                 block_percent, hash_verified, device_clock, first_report_at, last_report_at, \
                 duration, segments, bound) \
             VALUES ($1, $2, $3, 'PC', 'Windows', 'html5', 60, 60, 60, 2, '{t,f}', '{100,0}', \
                 NULL, true, now(), now(), 600, '[[0, 0, 60]]', NULL)",
            &[&user, &media, &start_at],
        )
        .await
        .unwrap();
}

/// A request as a client that does not resolve `..` sends it: reqwest (the `url` crate) would
/// make `/v1/users/../history` `/v1/history` before sending. The answer's status.
async fn raw_get(app: &TestApp, path: &str, key: &str) -> u16 {
    let host = app.address.trim_start_matches("http://");
    let mut tcp = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {key}\r\n\
         Connection: close\r\n\r\n"
    );
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tcp.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer}"))
}

async fn refused_field(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 400);
    let problem: Value = res.json().await.unwrap();
    problem["errors"][0]["field"]
        .as_str()
        .unwrap_or_else(|| panic!("no field in {problem}"))
        .to_owned()
}

#[tokio::test]
async fn a_grant_that_never_expires_is_shown_in_utc_on_the_users_pages() {
    let (app, web) = spawn_console().await;
    let (user, media) = ("u-never", "m-never");
    seed(&app, user, media).await;
    let db = app.db.client().await;
    // Stored before `expires_at` was bounded (the API now refuses it: below).
    for table in ["entitlements", "entitlement_changes"] {
        db.execute(
            &format!(
                "UPDATE {table} SET expires_at = to_timestamp({LAST_INSTANT}) \
                 WHERE client_user_id = $1"
            ),
            &[&user],
        )
        .await
        .unwrap();
    }
    let cookie = sign_in(&app, &web).await;
    for path in [
        format!("/console/users/{user}"),
        format!("/console/users/{user}/media/{media}"),
    ] {
        let page = get(&app, &web, &path, &cookie).await;
        assert_eq!(page.status(), 200, "{path}");
        let body = page.text().await.unwrap();
        assert!(body.contains("9999-12-31 23:59:59 UTC"), "{path}: {body}");
        // The other times of the page are still in the console's zone.
        assert!(body.contains("+09:00"), "{path}: {body}");
    }
}

#[tokio::test]
async fn an_offline_session_starting_as_late_as_a_date_holds_is_shown_without_a_panic() {
    let (app, web) = spawn_console().await;
    let user = "u-far";
    // Stored before history-worker bounded `start_at` (a day ahead of its arrival): the last
    // instant a date holds, and later than any date.
    session_at(&app, user, "m-far", LAST_INSTANT).await;
    session_at(&app, user, "m-farther", i64::MAX).await;
    let cookie = sign_in(&app, &web).await;
    let page = get(&app, &web, &format!("/console/users/{user}"), &cookie).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("9999-12-31 23:59:59 UTC"), "{body}");
    let page = get(
        &app,
        &web,
        &format!("/console/users/{user}/media/m-far"),
        &cookie,
    )
    .await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("9999-12-31 23:59:59 UTC"), "{body}");
    let page = get(
        &app,
        &web,
        &format!("/console/users/{user}/media/m-farther"),
        &cookie,
    )
    .await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(
        body.contains(&i64::MAX.to_string()),
        "start_at as sent: {body}"
    );
    // The evidence the page offers holds both sessions: `started_at` empty past a date.
    let csv = crate::console::download(
        &app,
        &web,
        &format!("/console/users/{user}/export.csv"),
        &cookie,
        Some("refund evidence"),
    )
    .await;
    assert_eq!(csv.status(), 200);
    let csv = csv.text().await.unwrap();
    assert!(csv.contains("9999-12-31T23:59:59Z"), "{csv}");
    assert!(
        csv.contains(&format!("{},,", i64::MAX)),
        "the far session, its started_at empty: {csv}"
    );
}

#[tokio::test]
async fn an_expiry_after_2100_is_refused_naming_the_field() {
    let app = spawn_app().await;
    let grant = |expires_at: &'static str| {
        app.client
            .put(format!("{}/v1/users/u1/entitlements/media/m1", app.address))
            .bearer_auth(APP_KEY)
            .json(&json!({ "expires_at": expires_at }))
            .send()
    };
    for late in ["2101-01-01T00:00:00Z", "9999-12-31T23:59:59Z"] {
        assert_eq!(
            refused_field(grant(late).await.unwrap()).await,
            "expires_at"
        );
    }
    let last = grant("2100-12-31T23:59:59Z").await.unwrap();
    assert!(last.status().is_success(), "{:?}", last.text().await);
}

#[test]
fn a_token_lifetime_past_a_year_stops_the_start_naming_the_setting() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_token-api"))
        .env_clear()
        .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
        .env("KOLLUS_SECURITY_KEY", SECURITY_KEY)
        .envs(kollus_test_support::key_files().env())
        .env("KOLLUS_CUSTOM_KEY", CUSTOM_KEY)
        .env("TOKEN_API_KEYS", format!("app:{APP_KEY}"))
        .env("TOKEN_MAX_EXPIRES_IN", i64::MAX.to_string())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("TOKEN_MAX_EXPIRES_IN"), "{stderr}");
    assert!(!stderr.contains(APP_KEY), "{stderr}");
}

#[tokio::test]
async fn ids_of_dots_only_are_refused_by_the_api() {
    let app = spawn_app().await;
    // In a path: `..` and `.` only as a client that does not resolve them sends them, encoded
    // or not; `...` is no dot segment, so any client sends it.
    for path in [
        "/v1/users/../history",
        "/v1/users/%2E%2E/history",
        "/v1/users/./entitlements",
        "/v1/users/u1/media/%2E%2E/progress",
        "/v1/media/%2e%2e",
    ] {
        assert_eq!(raw_get(&app, path, APP_KEY).await, 400, "{path}");
    }
    let read = |path: String| {
        app.client
            .get(format!("{}{path}", app.address))
            .bearer_auth(APP_KEY)
            .send()
    };
    let refused = [
        ("/v1/users/.../history".to_owned(), "client_user_id"),
        (
            "/v1/users/u1/media/.../progress".to_owned(),
            "media_content_key",
        ),
        ("/v1/users/u1/history?media=...".to_owned(), "media"),
        ("/v1/users/u1/history?media=..".to_owned(), "media"),
    ];
    for (path, field) in refused {
        assert_eq!(
            refused_field(read(path.clone()).await.unwrap()).await,
            field,
            "{path}"
        );
    }
    let put = app
        .client
        .put(format!(
            "{}/v1/users/u1/entitlements/media/...",
            app.address
        ))
        .bearer_auth(APP_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused_field(put).await, "media_content_key");
    // In a body: a token for `..` would carry it into Kollus and back in every callback.
    let token = app
        .issue(
            APP_KEY,
            json!({"client_user_id": "..", "media": [{"media_content_key": "m1"}]}),
        )
        .await;
    assert_eq!(refused_field(token).await, "client_user_id");
    let token = app
        .issue(
            APP_KEY,
            json!({"client_user_id": "u1", "media": [{"media_content_key": "."}]}),
        )
        .await;
    assert!(refused_field(token).await.ends_with("media_content_key"));
    // Kollus's play callback: a 400 naming the field, counted as invalid, nothing recorded
    // (as any malformed id; an LMS report is a 400 and a dead letter, in ingest).
    for (user, media, field) in [
        ("..", "m1", "client_user_id"),
        ("u1", "...", "media_content_key"),
    ] {
        let res = app
            .client
            .post(format!("{}/kollus/play?secret={PLAY_SECRET}", app.address))
            .form(&[
                ("kind", "1"),
                ("client_user_id", user),
                ("media_content_key", media),
                ("player_id", "p"),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(refused_field(res).await, field);
    }
    let decisions: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM playback_decisions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(decisions, 0);
}

#[tokio::test]
async fn rows_stored_with_dots_are_linked_with_dots_encoded_and_never_as_a_dot_segment() {
    let (app, web) = spawn_console().await;
    let user = "u.dots";
    // Stored before the parsers refused dots only: a video `..` (a link to it was
    // `/console/users/u.dots/media/..`, which a browser opens as `/console/users/u.dots/`).
    seed(&app, user, "..").await;
    seed(&app, user, "v1.2").await;
    let cookie = sign_in(&app, &web).await;
    let page = get(&app, &web, "/console/users/u%2Edots", &cookie).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(
        body.contains("href=\"/console/users/u%2Edots/media/v1%2E2\""),
        "{body}"
    );
    assert!(body.contains("href=\"/console/media/v1%2E2\""), "{body}");
    assert!(!body.contains("/media/.."), "{body}");
    assert!(!body.contains("/media/%2E%2E\""), "{body}");
    // The stored `..` links to its search, which stays on the console.
    assert!(body.contains("href=\"/console/?q=%2E%2E\""), "{body}");
    let page = get(&app, &web, "/console/?q=%2E%2E", &cookie).await;
    assert_eq!(page.status(), 200);
    // An encoded link opens the page it names.
    let page = get(&app, &web, "/console/users/u%2Edots/media/v1%2E2", &cookie).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(
        body.contains("action=\"/console/users/u%2Edots/export.csv\""),
        "{body}"
    );
    // The console refuses a dots-only id in its paths, as the API does.
    let page = get(&app, &web, "/console/users/.../media/v1.2", &cookie).await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    let page = get(&app, &web, "/console/media/...", &cookie).await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
}
