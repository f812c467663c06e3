//! The support console over HTTP, as a browser with JavaScript off uses it: sign-in with a key
//! carrying the `console` scope (and refusals), the session cookie, expiry, CSRF, the headers
//! every page carries, each page with hostile user ids shown as text, the heatmap's cells, and
//! the audit of who viewed whose data.

use std::time::Duration;

use kollus_test_support::eventually;
use kollus_token_api::auth::ApiKeys;
use reqwest::header::{ACCEPT_LANGUAGE, COOKIE, LOCATION, SET_COOKIE};
use reqwest::{redirect, Response, StatusCode};

use crate::helpers::*;

pub const SUPPORT_KEY: &str = "support-key-0123456789abcdef";
/// The session cookie's name over HTTPS (`__Host-`: Secure, Path=/, no Domain).
pub const SESSION: &str = "__Host-console_session";
/// The sign-in form's CSRF cookie's name over HTTPS.
pub const LOGIN_CSRF: &str = "__Host-console_login_csrf";
const SCRIPT: &str = "<script>alert(1)</script>";
const IMG: &str = "\"><img src=x onerror=alert(1)>";

/// An app whose keys are `app` (every scope but console) and `support[console]`.
pub async fn spawn_console() -> (TestApp, reqwest::Client) {
    let app = spawn_app_with(|s| {
        s.api_keys =
            ApiKeys::parse(&format!("app:{APP_KEY},support[console]:{SUPPORT_KEY}")).unwrap();
    })
    .await;
    (app, browser())
}

/// A client that follows no redirect (tests look at each answer) and keeps no cookies (tests
/// send them).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap()
}

pub fn set_cookies(res: &Response) -> Vec<String> {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

pub fn cookie_of(res: &Response, name: &str) -> Option<String> {
    set_cookies(res).iter().find_map(|c| {
        let (pair, _) = c.split_once(';').unwrap_or((c, ""));
        let (k, v) = pair.split_once('=')?;
        (k == name && !v.is_empty()).then(|| v.to_owned())
    })
}

pub fn csrf_in(body: &str) -> String {
    let at = body
        .find("name=\"csrf_token\" value=\"")
        .unwrap_or_else(|| panic!("no CSRF field in {body}"));
    let rest = &body[at + "name=\"csrf_token\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_owned()
}

/// Posts `key` through the sign-in form as a browser would (its CSRF cookie and field).
pub async fn sign_in_with(app: &TestApp, web: &reqwest::Client, key: &str) -> Response {
    sign_in_holding(app, web, key, None).await
}

/// [`sign_in_with`] from a browser that also holds the cookie `held` (`name=value`).
pub async fn sign_in_holding(
    app: &TestApp,
    web: &reqwest::Client,
    key: &str,
    held: Option<&str>,
) -> Response {
    let form = web
        .get(format!("{}/console/login", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    // `__Host-` prefixed over HTTPS, plain under CONSOLE_INSECURE_COOKIE.
    let name = [LOGIN_CSRF, "console_login_csrf"]
        .into_iter()
        .find(|n| cookie_of(&form, n).is_some())
        .expect("a CSRF cookie");
    let csrf = cookie_of(&form, name).unwrap();
    let body = form.text().await.unwrap();
    assert_eq!(
        csrf_in(&body),
        csrf,
        "double submit: the field is the cookie"
    );
    let mut cookies = format!("{name}={csrf}");
    if let Some(held) = held {
        cookies = format!("{held}; {cookies}");
    }
    web.post(format!("{}/console/login", app.address))
        .header(COOKIE, cookies)
        .form(&[("key", key), ("csrf_token", &csrf)])
        .send()
        .await
        .unwrap()
}

/// Signs in with the support key; returns the `Cookie` header value of the session.
pub async fn sign_in(app: &TestApp, web: &reqwest::Client) -> String {
    let res = sign_in_with(app, web, SUPPORT_KEY).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    format!(
        "{SESSION}={}",
        cookie_of(&res, SESSION).expect("a session cookie")
    )
}

pub async fn get(app: &TestApp, web: &reqwest::Client, path: &str, cookie: &str) -> Response {
    web.get(format!("{}{path}", app.address))
        .header(COOKIE, cookie)
        .header(ACCEPT_LANGUAGE, "en")
        .send()
        .await
        .unwrap()
}

/// Posts the downloads' form of `path` (`/console/users/{id}/export.csv` or `.jsonl`) as a
/// browser would: the session's CSRF token (read from a page) and `reason`.
pub async fn download(
    app: &TestApp,
    web: &reqwest::Client,
    path: &str,
    cookie: &str,
    reason: Option<&str>,
) -> Response {
    let page = get(app, web, "/console/", cookie).await;
    let csrf = csrf_in(&page.text().await.unwrap());
    let mut form = vec![("csrf_token", csrf.as_str())];
    if let Some(reason) = reason {
        form.push(("reason", reason));
    }
    web.post(format!("{}{path}", app.address))
        .header(COOKIE, cookie)
        .header(ACCEPT_LANGUAGE, "en")
        .form(&form)
        .send()
        .await
        .unwrap()
}

pub fn assert_console_headers(res: &Response) {
    let h = res.headers();
    assert_eq!(
        h["content-security-policy"],
        "default-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'; \
         object-src 'none'"
    );
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
}

fn assert_no_inline_code(body: &str) {
    // Tags and attributes, not text: an id like `onerror=` shows escaped inside a tag's text.
    for bad in ["<script", "<style", "<img", "style=\"", "onclick=\""] {
        assert!(!body.contains(bad), "{bad} in the page: {body}");
    }
}

/// Two sessions of `user` on `media` (10 blocks), one verified and one unsigned on a device
/// clock, a play refusal, an entitlement and its change.
pub async fn seed(app: &TestApp, user: &str, media: &str) {
    seed_in(&app.db, user, media).await;
}

async fn seed_in(db: &kollus_test_support::TestDb, user: &str, media: &str) {
    let db = db.client().await;
    for (start_at, percents, verified, clock, device, segments) in [
        (
            1_764_554_400i64,
            vec![100i64, 100, 50, 0, 0, 0, 0, 0, 0, 0],
            Some(true),
            false,
            "PC",
            serde_json::json!([[0, 0, 60], [2, 120, 30]]),
        ),
        (
            1_764_640_800,
            vec![0, 0, 100, 100, 30, 0, 0, 0, 0, 0],
            Some(false),
            true,
            "<i>phone</i>",
            serde_json::json!([[2, 120, 60], [3, 180, 60], [4, 240, 18]]),
        ),
    ] {
        let played: Vec<bool> = percents.iter().map(|p| *p > 0).collect();
        db.execute(
            "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, device, os, \
                 player_id, playtime, real_playtime, runtime, block_count, blocks_played, \
                 block_percent, hash_verified, device_clock, first_report_at, last_report_at, \
                 duration, segments, bound) \
             VALUES ($1, $2, $3, $4, 'Windows', 'html5', 300, 250, 400, 10, $5, $6, $7, $8, \
                 now(), now(), 600, $9, $7)",
            &[
                &user, &media, &start_at, &device, &played, &percents, &verified, &clock, &segments,
            ],
        )
        .await
        .unwrap();
    }
    db.execute(
        "INSERT INTO playback_decisions (decided_at, callback, kind, client_user_id, \
             media_content_key, result, reason) VALUES (now(), 'play', 1, $1, $2, 0, 'expired')",
        &[&user, &media],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO entitlement_changes (client_user_id, scope, target, action, changed_by, \
             changed_at) VALUES ($1, 'media', $2, 'grant', 'shop-backend', now())",
        &[&user, &media],
    )
    .await
    .unwrap();
    db.execute(
        "INSERT INTO entitlements (client_user_id, scope, target, playtime_limit_seconds, \
             download, granted_by, granted_at) VALUES ($1, 'media', $2, 3600, false, \
             'shop-backend', now())",
        &[&user, &media],
    )
    .await
    .unwrap();
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn path_seg(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[tokio::test]
async fn pages_need_a_session_and_a_console_key_opens_one() {
    let (app, web) = spawn_console().await;
    let anonymous = get(&app, &web, "/console/", "").await;
    assert_eq!(anonymous.status(), StatusCode::SEE_OTHER);
    assert_eq!(anonymous.headers()[LOCATION], "/console/login");
    assert_console_headers(&anonymous);

    let res = sign_in_with(&app, &web, SUPPORT_KEY).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_console_headers(&res);
    let cookie = set_cookies(&res)
        .into_iter()
        .find(|c| c.starts_with(&format!("{SESSION}=")))
        .unwrap();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/;"] {
        assert!(cookie.contains(attribute), "{attribute} in {cookie}");
    }
    let id = cookie_of(&res, SESSION).unwrap();
    let db = app.db.client().await;
    // Only the id's hash is kept: the SHA-256 of the cookie's value, computed here by
    // PostgreSQL, and the id itself nowhere in the row, as text or as bytes.
    let row = db
        .query_one(
            "SELECT key_name, id_hash = sha256(convert_to($1, 'UTF8')) AS hashed, \
                    row_to_json(s)::text AS whole, \
                    extract(epoch FROM expires_at - created_at)::bigint AS lasts \
               FROM console_sessions s",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>("key_name"), "support");
    assert!(
        row.get::<_, bool>("hashed"),
        "id_hash is sha256 of the cookie's id"
    );
    let whole: String = row.get("whole");
    // The search below sees bytes: the row shows its bytea as hex, the hash's among them.
    use sha2::Digest as _;
    assert!(
        whole.contains(&hex_of(&sha2::Sha256::digest(id.as_bytes()))),
        "{whole}"
    );
    for plain in [id.clone(), hex_of(id.as_bytes())] {
        assert!(!whole.contains(&plain), "the id is in the row: {whole}");
    }
    assert_eq!(
        row.get::<_, i64>("lasts"),
        8 * 3600,
        "CONSOLE_SESSION_HOURS"
    );

    let page = get(&app, &web, "/console/", &format!("{SESSION}={id}")).await;
    assert_eq!(page.status(), 200);
    assert_console_headers(&page);
    let body = page.text().await.unwrap();
    assert!(
        body.contains("Search") && body.contains("support"),
        "{body}"
    );
    assert!(!body.contains(SUPPORT_KEY), "the key is never in a page");
    assert_no_inline_code(&body);

    let again = get(&app, &web, "/console/login", &format!("{SESSION}={id}")).await;
    assert_eq!(again.status(), StatusCode::SEE_OTHER, "signed in: no form");
    assert_eq!(again.headers()[LOCATION], "/console/");

    let css = get(&app, &web, "/console/style.css", "").await;
    assert_eq!(css.status(), 200);
    assert_eq!(css.headers()["content-type"], "text/css; charset=utf-8");
    assert!(css.text().await.unwrap().contains(".p10"));
}

#[tokio::test]
async fn keys_without_the_console_scope_and_unknown_keys_are_refused() {
    let (app, web) = spawn_console().await;
    let res = sign_in_with(&app, &web, APP_KEY).await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "every scope but console"
    );
    assert!(cookie_of(&res, SESSION).is_none());
    let body = res.text().await.unwrap();
    assert!(body.contains("console"), "{body}");
    assert!(!body.contains(APP_KEY), "the key is never shown back");

    let res = sign_in_with(&app, &web, "no-such-key-0123456789abcdef").await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(cookie_of(&res, SESSION).is_none());
    let sessions = || async {
        app.db
            .client()
            .await
            .query_one("SELECT count(*) FROM console_sessions", &[])
            .await
            .unwrap()
            .get::<_, i64>(0)
    };
    assert_eq!(sessions().await, 0);
    // The control: the console key opens one, and the count shows it.
    let res = sign_in_with(&app, &web, SUPPORT_KEY).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(sessions().await, 1);
}

#[tokio::test]
async fn sign_in_attempts_are_rate_limited() {
    let (app, web) = spawn_console().await;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            sign_in_with(&app, &web, "wrong-key-0123456789abcdef")
                .await
                .status(),
        );
    }
    assert_eq!(statuses[0], StatusCode::UNAUTHORIZED);
    assert_eq!(statuses[11], StatusCode::TOO_MANY_REQUESTS, "{statuses:?}");
    let res = sign_in_with(&app, &web, SUPPORT_KEY).await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the right key waits too: guessing gains nothing"
    );
}

#[tokio::test]
async fn forms_without_their_csrf_token_are_refused() {
    let (app, web) = spawn_console().await;
    // Sign-in: a field that is not the cookie's value.
    let res = web
        .post(format!("{}/console/login", app.address))
        .header(COOKIE, format!("{LOGIN_CSRF}=aaaa"))
        .form(&[("key", SUPPORT_KEY), ("csrf_token", "bbbb")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert!(cookie_of(&res, SESSION).is_none());
    let res = web
        .post(format!("{}/console/login", app.address))
        .form(&[("key", SUPPORT_KEY)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "no token at all");

    // Sign-out: refused without the session's token, done with it.
    let cookie = sign_in(&app, &web).await;
    let page = get(&app, &web, "/console/", &cookie)
        .await
        .text()
        .await
        .unwrap();
    let token = csrf_in(&page);
    let res = web
        .post(format!("{}/console/logout", app.address))
        .header(COOKIE, &cookie)
        .form(&[("csrf_token", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    assert_eq!(get(&app, &web, "/console/", &cookie).await.status(), 200);
    let res = web
        .post(format!("{}/console/logout", app.address))
        .header(COOKIE, &cookie)
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let left: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM console_sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "sign-out deletes the session");
    let after = get(&app, &web, "/console/", &cookie).await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    assert_eq!(after.headers()[LOCATION], "/console/login");
}

#[tokio::test]
async fn an_expired_session_signs_in_again() {
    let (app, web) = spawn_console().await;
    let cookie = sign_in(&app, &web).await;
    assert_eq!(get(&app, &web, "/console/", &cookie).await.status(), 200);
    app.db
        .client()
        .await
        .execute(
            "UPDATE console_sessions SET expires_at = now() - interval '1 second'",
            &[],
        )
        .await
        .unwrap();
    let res = get(&app, &web, "/console/", &cookie).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/console/login");
}

#[tokio::test]
async fn every_page_shows_hostile_ids_as_text_and_records_who_viewed_them() {
    let (app, web) = spawn_console().await;
    let media = "mck-refund-1";
    app.catalog(media, true, false).await;
    app.describe(media, "<b>Intro</b> & more", false).await;
    for user in [SCRIPT, IMG] {
        seed(&app, user, media).await;
    }
    let cookie = sign_in(&app, &web).await;
    for user in [SCRIPT, IMG] {
        // Search: an exact user id goes to the user's page.
        let found = web
            .get(format!("{}/console/", app.address))
            .query(&[("q", user)])
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(found.status(), StatusCode::SEE_OTHER, "{user}");
        let user_path = format!("/console/users/{}", path_seg(user));
        assert_eq!(found.headers()[LOCATION], user_path.as_str());

        let escaped = user
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;");
        let page = get(&app, &web, &user_path, &cookie).await;
        assert_eq!(page.status(), 200, "{user}");
        assert_console_headers(&page);
        let body = page.text().await.unwrap();
        assert!(body.contains(&escaped), "{user} shown as text: {body}");
        assert!(!body.contains(user), "{user} never raw");
        assert_no_inline_code(&body);
        assert!(
            body.contains("&lt;b&gt;Intro&lt;/b&gt; &amp; more"),
            "the title, escaped"
        );
        assert!(
            body.contains("5 / 10"),
            "blocks watched of block count: {body}"
        );
        assert!(body.contains("0:10:00"), "total playtime of two sessions");
        assert_eq!(
            body.matches("class=\"cell ").count(),
            10,
            "the coverage strip: a cell per block"
        );
        assert!(body.contains("shop-backend"), "the entitlement in force");
        // The access list: the access record's rows of the user, this very view among them
        // (recorded before the page is read).
        assert!(body.contains("<section class=\"accesses\">"), "{body}");
        assert!(
            body.contains("<code>view_user</code>"),
            "the page lists its own view: {body}"
        );

        let refund_path = format!("{user_path}/media/{media}");
        let page = get(&app, &web, &refund_path, &cookie).await;
        assert_eq!(page.status(), 200);
        let body = page.text().await.unwrap();
        assert!(body.contains(&escaped) && !body.contains(user));
        assert_no_inline_code(&body);
        assert_eq!(
            body.matches("class=\"cell ").count(),
            2 * 10,
            "heatmap: sessions x block count"
        );
        assert_eq!(body.matches("class=\"union ").count(), 10, "the union row");
        assert_eq!(
            body.matches("class=\"segment\"").count(),
            5,
            "each session's played segments on its timeline"
        );
        assert!(body.contains("badge verified") && body.contains("badge unsigned"));
        assert_eq!(
            body.matches("badge unbound").count(),
            1,
            "the one session with a report not bound to its user"
        );
        assert!(body.contains("device_clock"));
        assert!(body.contains("&lt;i&gt;phone&lt;/i&gt;"), "device as text");
        assert!(
            body.contains("2025-12-01 11:00:00 +09:00"),
            "start in Asia/Seoul: {body}"
        );
        assert!(body.contains("expired"), "the decision's reason");
        assert!(
            body.contains("수강 기간이 만료되었습니다."),
            "the message the viewer saw"
        );
        assert!(body.contains("shop-backend"), "who changed the entitlement");
        for (link, first) in [("export.csv", "client_user_id,"), ("export.jsonl", "{")] {
            let href = format!("{user_path}/{link}");
            assert!(body.contains(&href), "a button posting to {href}");
            let export = download(&app, &web, &href, &cookie, Some("refund claim")).await;
            assert_eq!(export.status(), 200, "{href}");
            let text = export.text().await.unwrap();
            assert!(text.starts_with(first), "{href}: {text}");
            assert!(
                text.matches("mck-refund-1").count() >= 2,
                "both sessions in {href}: {text}"
            );
        }
        assert_eq!(
            get(&app, &web, &format!("{user_path}/export.csv"), "")
                .await
                .status(),
            StatusCode::SEE_OTHER,
            "exports need a session too"
        );
    }
    let nothing = web
        .get(format!("{}/console/", app.address))
        .query(&[("q", format!("{SCRIPT}x"))])
        .header(COOKIE, &cookie)
        .header(ACCEPT_LANGUAGE, "en")
        .send()
        .await
        .unwrap();
    assert_eq!(nothing.status(), 200);
    let body = nothing.text().await.unwrap();
    assert!(
        body.contains("Nothing found for &lt;script&gt;alert(1)&lt;/script&gt;x"),
        "{body}"
    );
    assert_no_inline_code(&body);
    let video = get(&app, &web, &format!("/console/media/{media}"), &cookie).await;
    assert_eq!(video.status(), 200);
    let body = video.text().await.unwrap();
    assert!(body.contains("<span class=\"viewers\">2</span>"), "{body}");
    assert_eq!(body.matches("class=\"bar\"").count(), 5, "0-25-50-75-100%");
    assert_eq!(
        body.matches("class=\"point\"").count(),
        10,
        "one point per block"
    );

    // The access record: a row per view of a user's data and per download (with its reason);
    // the video page holds none. (`access_log_record.rs` checks each row's every field.)
    let views: Vec<(String, String, Option<String>)> = app
        .db
        .client()
        .await
        .query(
            "SELECT key_name, action, target FROM access_log \
              WHERE action NOT IN ('sign_in', 'search', 'keys_reloaded') ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let support =
        |a: &str, m: Option<&str>| ("support".to_owned(), a.to_owned(), m.map(str::to_owned));
    let each = [
        support("view_user", None),
        support("view_refund", Some(media)),
        support("export_csv", None),
        support("export_jsonl", None),
    ];
    assert_eq!(views, [each.clone(), each].concat());
}

#[tokio::test]
async fn korean_by_default_english_on_request_and_the_switch_sticks() {
    let (app, web) = spawn_console().await;
    let form = web
        .get(format!("{}/console/login", app.address))
        .send()
        .await
        .unwrap();
    assert!(form.text().await.unwrap().contains("로그인"));
    let form = web
        .get(format!("{}/console/login", app.address))
        .header(ACCEPT_LANGUAGE, "en-US,en;q=0.9")
        .send()
        .await
        .unwrap();
    assert!(form.text().await.unwrap().contains("Sign in"));
    let switched = web
        .get(format!("{}/console/login?lang=en", app.address))
        .header(ACCEPT_LANGUAGE, "ko")
        .send()
        .await
        .unwrap();
    assert_eq!(cookie_of(&switched, "console_lang").as_deref(), Some("en"));
    assert!(switched
        .text()
        .await
        .unwrap()
        .contains("<html lang=\"en\">"));
}

#[tokio::test]
async fn unknown_users_and_videos_are_not_found_and_leave_no_audit_row() {
    let (app, web) = spawn_console().await;
    let cookie = sign_in(&app, &web).await;
    for path in [
        "/console/users/nobody",
        "/console/users/nobody/media/m1",
        "/console/media/m1",
    ] {
        let res = get(&app, &web, path, &cookie).await;
        assert_eq!(res.status(), StatusCode::NOT_FOUND, "{path}");
        assert_console_headers(&res);
    }
    let res = get(&app, &web, "/console/media/bad%20key", &cookie).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let views: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM access_log WHERE action LIKE 'view_%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(views, 0);
}

/// The binary as an operator runs it: a SIGHUP reload that drops the support key ends the
/// sessions it opened; a refused sign-in is logged at WARN, never with the key.
#[tokio::test]
async fn a_reload_that_drops_the_key_ends_its_sessions() {
    use std::io::{BufRead as _, BufReader};
    use std::process::{Command, Stdio};

    let db = kollus_test_support::TestDb::new().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token_api_keys");
    std::fs::write(
        &file,
        format!("app[read]:{APP_KEY},support[console]:{SUPPORT_KEY}\n"),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_token-api"))
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("KOLLUS_SECURITY_KEY", SECURITY_KEY)
        .envs(kollus_test_support::key_files().env())
        .env("KOLLUS_CUSTOM_KEY", CUSTOM_KEY)
        .env("TOKEN_API_KEYS_FILE", &file)
        .env("CONSOLE_INSECURE_COOKIE", "1")
        .env("LISTEN_ADDR", "127.0.0.1:0")
        .env("LOG_FORMAT", "text")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stderr = child.stderr.take().unwrap();
    let child = Kill(child);
    let (tx, lines) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    let mut until = |what: &str| loop {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("no {what:?} in the log"));
        seen.push(line.clone());
        if line.contains(what) {
            return (line, seen.clone());
        }
    };
    let (listening, _) = until("token-api listening");
    let port: u16 = listening
        .split("port=")
        .nth(1)
        .and_then(|p| p.split_whitespace().next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {listening}"));
    let app = TestApp {
        address: format!("http://127.0.0.1:{port}"),
        db,
        client: reqwest::Client::new(),
    };
    let web = browser();
    let refused = sign_in_with(&app, &web, APP_KEY).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let res = sign_in_with(&app, &web, SUPPORT_KEY).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = set_cookies(&res)
        .into_iter()
        .find(|c| c.starts_with("console_session="))
        .unwrap();
    assert!(
        !cookie.contains("Secure"),
        "CONSOLE_INSECURE_COOKIE=1: {cookie}"
    );
    let cookie = format!(
        "console_session={}",
        cookie_of(&res, "console_session").unwrap()
    );
    assert_eq!(get(&app, &web, "/console/", &cookie).await.status(), 200);

    std::fs::write(&file, format!("app[read]:{APP_KEY}\n")).unwrap();
    let hup = Command::new("kill")
        .args(["-HUP", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    eventually(
        "the session of the dropped key is refused",
        Duration::from_secs(10),
        || async { (get(&app, &web, "/console/", &cookie).await.status() == 303).then_some(()) },
    )
    .await;
    // The access record holds the list put in force at start and what the reload changed
    // (names and scopes, never a key), by the process itself.
    let db = app.db.client().await;
    let reloads: Vec<(String, String, String)> = kollus_test_support::eventually_ok(
        "the reload's row (written once the reload is in force)",
        Duration::from_secs(10),
        || async {
            let rows: Vec<(String, String, String)> = db
                .query(
                    "SELECT class, key_name, target FROM access_log \
                      WHERE action = 'keys_reloaded' ORDER BY id",
                    &[],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1), r.get(2)))
                .collect();
            if rows.len() >= 2 {
                Ok(rows)
            } else {
                Err(format!("{rows:?}"))
            }
        },
    )
    .await;
    let row = |t: &str| ("rights".to_owned(), "-".to_owned(), t.to_owned());
    assert_eq!(
        reloads,
        [
            row("start; added: app[read] support[console]"),
            row("removed: support[console]"),
        ]
    );
    let (_, seen) = until("its key is no longer configured");
    let warned = seen
        .iter()
        .find(|l| l.contains("console sign-in refused"))
        .expect("a WARN for the refused sign-in");
    assert!(warned.contains("WARN"), "{warned}");
    assert!(
        warned.contains("client=127.0.0.1"),
        "the refused address: {warned}"
    );
    let signed_in = seen
        .iter()
        .find(|l| l.contains("console sign-in") && !l.contains("refused"))
        .expect("an INFO for the sign-in");
    assert!(
        signed_in.contains("client=127.0.0.1") && signed_in.contains("support"),
        "who signed in, from where: {signed_in}"
    );
    for line in &seen {
        for key in [APP_KEY, SUPPORT_KEY] {
            assert!(!line.contains(key), "a key in the log: {line}");
        }
    }
    let left: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM console_sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "the refused session is deleted");
}

#[test]
fn a_time_zone_that_is_not_one_stops_the_start_naming_the_setting() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_token-api"))
        .env_clear()
        .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
        .env("KOLLUS_SECURITY_KEY", SECURITY_KEY)
        .envs(kollus_test_support::key_files().env())
        .env("KOLLUS_CUSTOM_KEY", CUSTOM_KEY)
        .env("TOKEN_API_KEYS", format!("support[console]:{SUPPORT_KEY}"))
        .env("CONSOLE_TIME_ZONE", "Mars/Olympus_Mons")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CONSOLE_TIME_ZONE"), "{stderr}");
    assert!(!stderr.contains(SUPPORT_KEY), "{stderr}");
}

#[tokio::test]
async fn times_are_shown_in_the_console_time_zone() {
    let app = spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&format!("support[console]:{SUPPORT_KEY}")).unwrap();
        s.console.time_zone = "Europe/London".into();
    })
    .await;
    let web = browser();
    seed(&app, "u-zone", "m-zone").await;
    let cookie = sign_in(&app, &web).await;
    let body = get(&app, &web, "/console/users/u-zone/media/m-zone", &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("2025-12-01 02:00:00 +00:00"), "{body}");
    assert!(!body.contains("+09:00"), "{body}");
}

/// Every route for an agent, asked without a session or with one that is not live, is the
/// sign-in redirect and shows nothing: the list is the one the console's scope is built from,
/// so a new page cannot skip the check; only sign-in and the stylesheet are open.
#[tokio::test]
async fn every_agent_route_sends_a_request_without_a_session_to_sign_in() {
    use kollus_token_api::console::{routes, Access};
    let (app, web) = spawn_console().await;
    seed(&app, "u1", "m1").await;
    let routes = routes();
    let open: Vec<String> = routes
        .iter()
        .filter(|r| r.access == Access::Anyone)
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(open, ["GET /style.css", "GET /login", "POST /login"]);
    let agent_routes: Vec<_> = routes
        .iter()
        .filter(|r| r.access == Access::Agent)
        .collect();
    assert!(agent_routes.len() >= 7, "every page is listed");
    for r in agent_routes {
        let path = format!("/console{}", r.path)
            .replace("{client_user_id}", "u1")
            .replace("{media_content_key}", "m1");
        let method = reqwest::Method::from_bytes(r.method.as_str().as_bytes()).unwrap();
        for cookie in [String::new(), format!("{SESSION}=0123456789abcdef")] {
            let res = web
                .request(method.clone(), format!("{}{path}", app.address))
                .header(COOKIE, &cookie)
                .send()
                .await
                .unwrap();
            assert_eq!(
                res.status(),
                StatusCode::SEE_OTHER,
                "{method} {path} with {cookie:?}"
            );
            assert_eq!(res.headers()[LOCATION], "/console/login", "{path}");
            assert_console_headers(&res);
            assert!(res.text().await.unwrap().is_empty(), "{path} shows nothing");
        }
    }
    let views: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM access_log WHERE class = 'access' AND action <> 'sign_in'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(views, 0, "no page was shown, so none recorded");
}

/// PostgreSQL unreachable while an agent is signed in: each page is a 503 page saying so, with
/// `Retry-After` (not a 500: nothing of ours failed), counted by route and status; the pages
/// come back with the database.
#[tokio::test]
async fn a_database_outage_is_a_503_page_to_retry() {
    let db = kollus_test_support::TestDb::new().await;
    let (proxy, proxied) = db.behind_proxy().await;
    let app = spawn_app_with(move |s| {
        s.database = proxied;
        s.api_keys =
            ApiKeys::parse(&format!("app:{APP_KEY},support[console]:{SUPPORT_KEY}")).unwrap();
    })
    .await;
    let web = browser();
    seed_in(&db, "u1", "m1").await;
    let cookie = sign_in(&app, &web).await;
    assert_eq!(
        get(&app, &web, "/console/users/u1", &cookie).await.status(),
        200
    );

    proxy.cut();
    for path in [
        "/console/users/u1",
        "/console/users/u1/media/m1",
        "/console/media/m1",
        "/console/?q=u1",
        "/console/login",
    ] {
        let res = get(&app, &web, path, &cookie).await;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(res.headers()["retry-after"], "30", "{path}");
        assert_eq!(res.headers()["content-type"], "text/html; charset=utf-8");
        assert_console_headers(&res);
        let body = res.text().await.unwrap();
        assert!(body.contains("The database is not answering"), "{body}");
    }
    let series =
        "kollus_token_requests_total{route=\"/console/users/{client_user_id}\",status=\"503\"}";
    assert_eq!(app.metric(series).await, 1);

    proxy.restore();
    eventually(
        "the page once PostgreSQL is back",
        Duration::from_secs(20),
        || async {
            (get(&app, &web, "/console/users/u1", &cookie).await.status() == 200).then_some(())
        },
    )
    .await;
}

/// A channel grant covers a video while the catalog has the video in the channel: the refund
/// page lists the changes of the grants the play callback decides on, never those of a channel
/// the video has left (the play callback refuses that video).
#[tokio::test]
async fn the_refund_page_lists_the_changes_of_the_grants_covering_the_video_now() {
    let (app, web) = spawn_console().await;
    app.catalog("in-ch", true, false).await;
    app.catalog("left-ch", false, false).await;
    let db = app.db.client().await;
    db.execute(
        "INSERT INTO entitlement_changes (client_user_id, scope, target, action, changed_by, \
             changed_at) VALUES ('u1', 'channel', 'ch', 'grant', 'channel-shop', now())",
        &[],
    )
    .await
    .unwrap();
    for media in ["in-ch", "left-ch"] {
        db.execute(
            "INSERT INTO playback_decisions (decided_at, callback, kind, client_user_id, \
                 media_content_key, result, reason) VALUES (now(), 'play', 1, 'u1', $1, 0, \
                 'expired')",
            &[&media],
        )
        .await
        .unwrap();
    }
    let cookie = sign_in(&app, &web).await;
    let mut bodies = Vec::new();
    for media in ["in-ch", "left-ch"] {
        let page = get(
            &app,
            &web,
            &format!("/console/users/u1/media/{media}"),
            &cookie,
        )
        .await;
        assert_eq!(page.status(), 200, "{media}");
        bodies.push(page.text().await.unwrap());
    }
    assert!(
        bodies[0].contains("channel-shop"),
        "the channel's grant covers a video in it: {}",
        bodies[0]
    );
    assert!(
        !bodies[1].contains("channel-shop"),
        "a video that left the channel is no longer covered: {}",
        bodies[1]
    );
}

/// A session whose 300 blocks Kollus marked watched without a percent (`b{i}` = 1, `p{i}` = 0,
/// as history-worker stores the LMS report's blocks) beside one 30% block of another session.
async fn seed_marked_blocks(app: &TestApp, user: &str, media: &str) {
    let db = app.db.client().await;
    let none: Vec<i64> = vec![0; 300];
    let mut some = none.clone();
    some[1] = 30;
    for (start_at, played, percent) in [
        (1_764_554_400i64, vec![true; 300], &none),
        (1_764_640_800, vec![false; 300], &some),
    ] {
        db.execute(
            "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, device, \
                 playtime, real_playtime, runtime, block_count, blocks_played, block_percent, \
                 first_report_at, last_report_at, duration, segments) \
             VALUES ($1, $2, $3, 'PC', 600, 600, 600, 300, $4, $5, now(), now(), 3000, '[]')",
            &[&user, &media, &start_at, &played, percent],
        )
        .await
        .unwrap();
    }
}

#[tokio::test]
async fn blocks_kollus_marks_watched_without_a_percent_are_drawn_watched_and_fit_the_page() {
    let (app, web) = spawn_console().await;
    seed_marked_blocks(&app, "u-marked", "m-marked").await;
    let cookie = sign_in(&app, &web).await;

    let page = get(
        &app,
        &web,
        "/console/users/u-marked/media/m-marked",
        &cookie,
    )
    .await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert_no_inline_code(&body);
    assert!(body.contains("300 / 300 blocks watched"), "{body:.3000}");
    // The union row and the first session's row: every block watched, at 0% but b1 at 30%.
    assert_eq!(body.matches("class=\"union ").count(), 300);
    assert_eq!(body.matches("class=\"union p1\"").count(), 299);
    assert_eq!(body.matches("class=\"union p3\"").count(), 1);
    assert!(
        body.contains("<title>b0: watched, 0%</title>"),
        "{body:.3000}"
    );
    // Newest first: the 30% session's row, then the marked one's.
    assert_eq!(
        body.matches("class=\"cell unwatched\"").count(),
        299,
        "only the other session's blocks it never played"
    );
    assert_eq!(body.matches("class=\"cell p1\"").count(), 300);
    assert_eq!(body.matches("class=\"cell p3\"").count(), 1);
    assert!(!body.contains("class=\"union unwatched\""));
    // Drawn to fit the page: a viewBox the stylesheet narrows, cells stretched to it.
    assert!(
        body.contains("viewBox=\"0 0 3600 ") && body.contains("preserveAspectRatio=\"none\""),
        "{body:.3000}"
    );

    let page = get(&app, &web, "/console/users/u-marked", &cookie).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("300 / 300"), "{body:.3000}");
    assert_eq!(body.matches("class=\"cell ").count(), 300, "the strip");
    assert!(!body.contains("unwatched"), "{body:.3000}");

    let css = web
        .get(format!("{}/console/style.css", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(css.contains("svg.strip, svg.heatmap, svg.line { max-width: 100%; }"));
}
