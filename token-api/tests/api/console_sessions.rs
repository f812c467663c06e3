//! The console's sign-in limits and sessions (issue 30): failed sign-ins limited per client
//! address behind a trusted proxy (IPv6 by /64), successes free, the failures counted by
//! reason; idle expiry, rotation on sign-in, the signed sign-in token a tossed cookie cannot
//! match (nor a genuine one served to another client), an old cookie that no longer blocks
//! sign-in, the cookies' attributes, and CONSOLE_SESSION_HOURS bounded at start.

use kollus_common::client_addr::Networks;
use kollus_token_api::auth::ApiKeys;
use reqwest::header::{COOKIE, LOCATION, RETRY_AFTER};
use reqwest::{Response, StatusCode};

use crate::console::{
    assert_console_headers, browser, cookie_of, csrf_in, get, set_cookies, sign_in,
    sign_in_holding, sign_in_with, spawn_console, LOGIN_CSRF, SESSION, SUPPORT_KEY,
};
use crate::helpers::*;

const WRONG_KEY: &str = "wrong-key-0123456789abcdef";

/// An app behind a proxy at 127.0.0.1 (`TRUSTED_PROXIES`), with the support key.
async fn spawn_behind_proxy() -> TestApp {
    spawn_app_with(|s| {
        s.api_keys =
            ApiKeys::parse(&format!("app:{APP_KEY},support[console]:{SUPPORT_KEY}")).unwrap();
        s.proxies.trusted_proxies = Networks::parse("127.0.0.1").unwrap();
    })
    .await
}

/// The sign-in form's CSRF token served to `client` (the proxy saying so).
async fn login_token_for(app: &TestApp, web: &reqwest::Client, client: &str) -> String {
    let form = web
        .get(format!("{}/console/login", app.address))
        .header("x-forwarded-for", client)
        .send()
        .await
        .unwrap();
    cookie_of(&form, LOGIN_CSRF).expect("a CSRF cookie")
}

/// Posts `key` with the CSRF token `csrf` (cookie and field), the proxy saying the client is
/// `client`.
async fn post_from(
    app: &TestApp,
    web: &reqwest::Client,
    client: &str,
    csrf: &str,
    key: &str,
) -> Response {
    web.post(format!("{}/console/login", app.address))
        .header("x-forwarded-for", client)
        .header(COOKIE, format!("{LOGIN_CSRF}={csrf}"))
        .form(&[("key", key), ("csrf_token", csrf)])
        .send()
        .await
        .unwrap()
}

/// Posts `key` through the sign-in form, the proxy saying the client is `client`.
async fn sign_in_from(app: &TestApp, client: &str, key: &str) -> Response {
    let web = browser();
    let csrf = login_token_for(app, &web, client).await;
    post_from(app, &web, client, &csrf, key).await
}

async fn failures(app: &TestApp, reason: &str) -> u64 {
    app.metric(&format!(
        "kollus_token_console_sign_in_failures_total{{reason=\"{reason}\"}}"
    ))
    .await
}

async fn sessions(app: &TestApp) -> i64 {
    app.db
        .client()
        .await
        .query_one("SELECT count(*) FROM console_sessions", &[])
        .await
        .unwrap()
        .get(0)
}

/// Before issue 30, every agent behind the proxy shared the proxy's bucket: one client posting
/// wrong keys locked everyone out.
#[tokio::test]
async fn behind_a_trusted_proxy_one_clients_wrong_keys_do_not_lock_another_out() {
    let app = spawn_behind_proxy().await;
    for reason in ["unknown_key", "no_console_scope", "csrf", "limited"] {
        assert_eq!(
            failures(&app, reason).await,
            0,
            "{reason} shown from the start"
        );
    }
    for i in 0..10 {
        let res = sign_in_from(&app, "198.51.100.7", WRONG_KEY).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    let limited = sign_in_from(&app, "198.51.100.7", WRONG_KEY).await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_console_headers(&limited);
    let wait: u64 = limited.headers()[RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&wait), "Retry-After {wait}");
    let right = sign_in_from(&app, "198.51.100.7", SUPPORT_KEY).await;
    assert_eq!(
        right.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the limited client's right key waits too: guessing gains nothing"
    );
    let other = sign_in_from(&app, "198.51.100.8", SUPPORT_KEY).await;
    assert_eq!(
        other.status(),
        StatusCode::SEE_OTHER,
        "another client behind the same proxy signs in"
    );
    let other = sign_in_from(&app, "198.51.100.9", APP_KEY).await;
    assert_eq!(
        other.status(),
        StatusCode::FORBIDDEN,
        "and is refused for its own reason"
    );
    assert_eq!(failures(&app, "unknown_key").await, 10);
    assert_eq!(failures(&app, "limited").await, 2);
    assert_eq!(failures(&app, "no_console_scope").await, 1);
}

/// The failures map is bounded: past 10,000 other failing addresses, the least recently failed
/// is forgotten (in O(1), no sweep), so it may fail a whole burst again. Had it been kept, the
/// seconds since its burst would have given it back only one failure per 6 s.
#[tokio::test]
async fn the_failures_map_holds_at_most_10000_addresses_the_least_recent_going_first() {
    use futures_util::StreamExt as _;
    let app = spawn_behind_proxy().await;
    let web = browser();
    // Each address posts the token served to it (a token holds for its own address only),
    // fetched before the clock below starts.
    let address = |i: u32| format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
    let tokens: Vec<(String, String)> = futures_util::stream::iter(0..11_000u32)
        .map(|i| {
            let (app, web) = (&app, &web);
            async move {
                let client = address(i);
                let csrf = login_token_for(app, web, &client).await;
                (client, csrf)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    let post = |client: String, csrf: String| {
        let (web, address) = (web.clone(), app.address.clone());
        async move {
            web.post(format!("{address}/console/login"))
                .header("x-forwarded-for", client)
                .header(COOKIE, format!("{LOGIN_CSRF}={csrf}"))
                .form(&[("key", WRONG_KEY), ("csrf_token", csrf.as_str())])
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    let first = "198.51.100.1".to_owned();
    let csrf = login_token_for(&app, &web, &first).await;
    let burst_at = std::time::Instant::now();
    for _ in 0..10 {
        assert_eq!(
            post(first.clone(), csrf.clone()).await,
            StatusCode::UNAUTHORIZED
        );
    }
    assert_eq!(
        post(first.clone(), csrf.clone()).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // More than the bound, and more than moka's pending writes, so the eviction has run.
    let others: Vec<StatusCode> = futures_util::stream::iter(tokens)
        .map(|(client, csrf)| post(client, csrf))
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(others.iter().all(|s| *s == StatusCode::UNAUTHORIZED));
    let since = burst_at.elapsed();
    assert!(
        since < std::time::Duration::from_secs(48),
        "{since:?}: too slow to tell a forgotten address from a refilled one"
    );
    let mut allowed = 0;
    while post(first.clone(), csrf.clone()).await == StatusCode::UNAUTHORIZED {
        allowed += 1;
        assert!(allowed <= 10, "never limited again");
    }
    assert_eq!(
        allowed,
        10,
        "forgotten: a whole burst again ({since:?} after its first; kept, it would have had {})",
        (since.as_secs() / 6).min(9)
    );
}

#[tokio::test]
async fn successes_use_no_quota() {
    let (app, web) = spawn_console().await;
    for i in 0..15 {
        let res = sign_in_with(&app, &web, SUPPORT_KEY).await;
        assert_eq!(res.status(), StatusCode::SEE_OTHER, "sign-in {i}");
    }
    for i in 0..10 {
        let res = sign_in_with(&app, &web, WRONG_KEY).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED, "failure {i}");
    }
    let res = sign_in_with(&app, &web, WRONG_KEY).await;
    assert_eq!(
        res.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "ten failures, whatever the successes before them"
    );
}

#[tokio::test]
async fn two_addresses_in_one_ipv6_slash_64_share_a_bucket() {
    let app = spawn_behind_proxy().await;
    for _ in 0..10 {
        let res = sign_in_from(&app, "2001:db8:1:2::1", WRONG_KEY).await;
        assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    }
    let neighbour = sign_in_from(&app, "2001:db8:1:2:ffff:ffff:ffff:ffff", WRONG_KEY).await;
    assert_eq!(
        neighbour.status(),
        StatusCode::TOO_MANY_REQUESTS,
        "the same /64"
    );
    let next = sign_in_from(&app, "2001:db8:1:3::1", WRONG_KEY).await;
    assert_eq!(next.status(), StatusCode::UNAUTHORIZED, "the next /64");
}

#[tokio::test]
async fn a_session_idle_too_long_is_refused_and_deleted_and_each_page_moves_it() {
    let (app, web) = spawn_console().await;
    let cookie = sign_in(&app, &web).await;
    let db = app.db.client().await;
    let age = |minutes: i32| {
        let db = &db;
        async move {
            db.execute(
                "UPDATE console_sessions SET last_seen_at = now() - make_interval(mins => $1)",
                &[&minutes],
            )
            .await
            .unwrap();
        }
    };
    age(29).await;
    assert_eq!(get(&app, &web, "/console/", &cookie).await.status(), 200);
    let idle: f64 = db
        .query_one(
            "SELECT extract(epoch FROM now() - last_seen_at)::float8 FROM console_sessions",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(idle < 60.0, "the page moved last_seen_at: idle {idle} s");
    age(29).await;
    assert_eq!(
        get(&app, &web, "/console/users/nobody", &cookie)
            .await
            .status(),
        StatusCode::NOT_FOUND,
        "29 minutes idle: still signed in"
    );
    age(31).await;
    let res = get(&app, &web, "/console/", &cookie).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "CONSOLE_IDLE_MINUTES (30)"
    );
    assert_eq!(res.headers()[LOCATION], "/console/login");
    assert_eq!(sessions(&app).await, 0, "the idle session is deleted");
}

#[tokio::test]
async fn an_idle_time_set_shorter_is_the_one_applied() {
    let app = spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&format!("support[console]:{SUPPORT_KEY}")).unwrap();
        s.console.idle_minutes = 5;
    })
    .await;
    let web = browser();
    let cookie = sign_in(&app, &web).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE console_sessions SET last_seen_at = now() - interval '6 minutes'",
            &[],
        )
        .await
        .unwrap();
    let res = get(&app, &web, "/console/", &cookie).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    assert_eq!(res.headers()[LOCATION], "/console/login");
}

#[tokio::test]
async fn signing_in_again_ends_the_session_the_cookie_names() {
    let (app, web) = spawn_console().await;
    let old = sign_in(&app, &web).await;
    assert_eq!(get(&app, &web, "/console/", &old).await.status(), 200);
    let res = sign_in_holding(&app, &web, SUPPORT_KEY, Some(&old)).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let new = format!("{SESSION}={}", cookie_of(&res, SESSION).unwrap());
    assert_ne!(new, old);
    let refused = get(&app, &web, "/console/", &old).await;
    assert_eq!(
        refused.status(),
        StatusCode::SEE_OTHER,
        "the old cookie opens nothing"
    );
    assert_eq!(refused.headers()[LOCATION], "/console/login");
    assert_eq!(get(&app, &web, "/console/", &new).await.status(), 200);
    assert_eq!(sessions(&app).await, 1);
    // Another browser's sign-in ends nobody else's session.
    sign_in(&app, &web).await;
    assert_eq!(get(&app, &web, "/console/", &new).await.status(), 200);
    assert_eq!(sessions(&app).await, 2);
}

/// A sibling site can toss a cookie (the unprefixed one, or any under plain HTTP) and post a
/// form with the same value: without this process's signature on it, the form is refused. (A
/// genuine token served to another client is refused too: see the next test.)
#[tokio::test]
async fn a_tossed_login_cookie_with_a_matching_form_value_is_refused() {
    let (app, web) = spawn_console().await;
    let insecure = spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&format!("support[console]:{SUPPORT_KEY}")).unwrap();
        s.console.insecure_cookie = true;
    })
    .await;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let forged = format!("{}.{now}.{}", "ab".repeat(32), "cd".repeat(32));
    for (app, name) in [(&app, LOGIN_CSRF), (&insecure, "console_login_csrf")] {
        for token in ["tossed", forged.as_str()] {
            let res = web
                .post(format!("{}/console/login", app.address))
                .header(COOKIE, format!("{name}={token}"))
                .form(&[("key", SUPPORT_KEY), ("csrf_token", token)])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), StatusCode::FORBIDDEN, "{name}={token}");
            assert!(cookie_of(&res, SESSION).is_none());
            assert!(cookie_of(&res, "console_session").is_none());
        }
        assert_eq!(failures(app, "csrf").await, 2);
        assert_eq!(sessions(app).await, 0);
    }
    // A form signed under another security key is refused too...
    let elsewhere = spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&format!("support[console]:{SUPPORT_KEY}")).unwrap();
        s.security_key = "another security key".to_owned().into();
    })
    .await;
    let form = web
        .get(format!("{}/console/login", elsewhere.address))
        .send()
        .await
        .unwrap();
    let token = csrf_in(&form.text().await.unwrap());
    let res = web
        .post(format!("{}/console/login", app.address))
        .header(COOKIE, format!("{LOGIN_CSRF}={token}"))
        .form(&[("key", SUPPORT_KEY), ("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    // ...while one another replica (the same key) served signs in here: no sticky sessions
    // needed behind a balancer.
    let form = web
        .get(format!("{}/console/login", insecure.address))
        .send()
        .await
        .unwrap();
    let token = csrf_in(&form.text().await.unwrap());
    let res = web
        .post(format!("{}/console/login", app.address))
        .header(COOKIE, format!("{LOGIN_CSRF}={token}"))
        .form(&[("key", SUPPORT_KEY), ("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "a replica's form");
    // The control: this process's own form signs in.
    assert_eq!(
        sign_in_with(&app, &web, SUPPORT_KEY).await.status(),
        StatusCode::SEE_OTHER
    );
}

/// Anyone may GET a genuine token and cookie; tossed into another client's browser with the
/// same token posted (login CSRF: the victim signed in as the attacker), it is refused, since
/// the token is signed for the address bucket it was served to. The same client, or another
/// address of its IPv6 /64, signs in with it.
#[tokio::test]
async fn a_genuine_token_served_to_one_client_is_refused_from_another() {
    let app = spawn_behind_proxy().await;
    let web = browser();
    let attacker = login_token_for(&app, &web, "198.51.100.66").await;
    let res = post_from(&app, &web, "203.0.113.5", &attacker, SUPPORT_KEY).await;
    assert_eq!(
        res.status(),
        StatusCode::FORBIDDEN,
        "posted from another client"
    );
    assert_console_headers(&res);
    assert!(cookie_of(&res, SESSION).is_none());
    assert_eq!(failures(&app, "csrf").await, 1);
    assert_eq!(failures(&app, "unknown_key").await, 0);
    assert_eq!(sessions(&app).await, 0);
    let res = post_from(&app, &web, "198.51.100.66", &attacker, SUPPORT_KEY).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "posted from the client served"
    );
    assert!(cookie_of(&res, SESSION).is_some());

    let v6 = login_token_for(&app, &web, "2001:db8:1:2::1").await;
    let res = post_from(&app, &web, "2001:db8:1:3::1", &v6, SUPPORT_KEY).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN, "the next /64");
    let res = post_from(&app, &web, "2001:db8:1:2:ffff::7", &v6, SUPPORT_KEY).await;
    assert_eq!(
        res.status(),
        StatusCode::SEE_OTHER,
        "the same /64 is one client"
    );
    assert_eq!(failures(&app, "csrf").await, 2);
    assert_eq!(sessions(&app).await, 2);
}

/// Under CONSOLE_INSECURE_COOKIE the form's cookie is named as the `/console`-scoped one earlier
/// versions set for an hour, which the browser sends first: the login page clears it, and
/// until it goes, a post whose token is in any cookie of the name signs in.
#[tokio::test]
async fn an_old_login_cookie_sent_first_no_longer_blocks_sign_in() {
    let app = spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&format!("support[console]:{SUPPORT_KEY}")).unwrap();
        s.console.insecure_cookie = true;
    })
    .await;
    let web = browser();
    let form = get(&app, &web, "/console/login", "").await;
    let removals = set_cookies(&form);
    for name in ["console_login_csrf", "console_session"] {
        assert!(
            removals.iter().any(|c| c.starts_with(&format!("{name}=;"))
                && c.contains("Path=/console;")
                && c.contains("Max-Age=0")),
            "the login page removes the old {name}: {removals:?}"
        );
    }
    let csrf = cookie_of(&form, "console_login_csrf").expect("a CSRF cookie");
    let stale = format!("{}.1700000000.{}", "ab".repeat(32), "cd".repeat(32));
    let res = web
        .post(format!("{}/console/login", app.address))
        .header(
            COOKIE,
            format!("console_login_csrf={stale}; console_login_csrf={csrf}"),
        )
        .form(&[("key", SUPPORT_KEY), ("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "the old cookie first");
    assert!(cookie_of(&res, "console_session").is_some());
    // Only a cookie holding the form's token counts: the old one alone is refused.
    let res = web
        .post(format!("{}/console/login", app.address))
        .header(COOKIE, format!("console_login_csrf={stale}"))
        .form(&[("key", SUPPORT_KEY), ("csrf_token", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
}

fn the_cookie(res: &Response, name: &str) -> String {
    set_cookies(res)
        .into_iter()
        .find(|c| c.starts_with(&format!("{name}=")) && !c.contains("Max-Age=0"))
        .unwrap_or_else(|| panic!("no {name} in {:?}", set_cookies(res)))
}

#[tokio::test]
async fn cookies_are_host_prefixed_browser_session_cookies_and_plain_only_when_insecure() {
    let (app, web) = spawn_console().await;
    let form = get(&app, &web, "/console/login", "").await;
    assert_console_headers(&form);
    let signed_in = sign_in_with(&app, &web, SUPPORT_KEY).await;
    for cookie in [
        the_cookie(&form, LOGIN_CSRF),
        the_cookie(&signed_in, SESSION),
    ] {
        for attribute in ["; Path=/;", "; HttpOnly", "; SameSite=Strict", "; Secure"] {
            assert!(cookie.contains(attribute), "{attribute} in {cookie}");
        }
        for absent in ["Max-Age", "Expires", "Domain"] {
            assert!(
                !cookie.contains(absent),
                "{absent} in {cookie}: a browser-session cookie"
            );
        }
    }
    assert!(
        set_cookies(&signed_in)
            .iter()
            .any(|c| c.starts_with(&format!("{LOGIN_CSRF}=;")) && c.contains("Max-Age=0")),
        "the sign-in form's cookie is removed: {:?}",
        set_cookies(&signed_in)
    );

    let insecure = spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&format!("support[console]:{SUPPORT_KEY}")).unwrap();
        s.console.insecure_cookie = true;
    })
    .await;
    let res = sign_in_with(&insecure, &web, SUPPORT_KEY).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    let cookie = the_cookie(&res, "console_session");
    assert!(
        !cookie.contains("Secure") && !cookie.contains("Max-Age") && cookie.contains("; Path=/;"),
        "plain HTTP cannot carry __Host-: {cookie}"
    );
    assert!(cookie_of(&res, SESSION).is_none());
}

/// The binary refuses a session lifetime outside 1 to 12 hours (or an idle time of 0) at
/// start, naming the setting, instead of panicking at a sign-in.
#[test]
fn session_hours_outside_1_to_12_stop_the_start_naming_the_setting() {
    for (name, value) in [
        ("CONSOLE_SESSION_HOURS", "0"),
        ("CONSOLE_SESSION_HOURS", "13"),
        ("CONSOLE_SESSION_HOURS", "4294967295"),
        ("CONSOLE_SESSION_HOURS", "-1"),
        ("CONSOLE_SESSION_HOURS", "eight"),
        ("CONSOLE_IDLE_MINUTES", "0"),
        ("CONSOLE_IDLE_MINUTES", "721"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_token-api"))
            .env_clear()
            .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
            .env("KOLLUS_SECURITY_KEY", SECURITY_KEY)
            .envs(kollus_test_support::key_files().env())
            .env("KOLLUS_CUSTOM_KEY", CUSTOM_KEY)
            .env("TOKEN_API_KEYS", format!("support[console]:{SUPPORT_KEY}"))
            .env(name, value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}={value}: {stderr}");
        assert!(stderr.contains(name), "{name}={value}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[tokio::test]
async fn an_application_built_with_13_session_hours_is_refused() {
    let db = kollus_test_support::TestDb::new().await;
    let mut settings = test_settings(&db);
    settings.console.session_hours = 13;
    let err = match kollus_token_api::startup::Application::build(settings).await {
        Ok(_) => panic!("13 hours accepted"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("CONSOLE_SESSION_HOURS"), "{err}");
}
