//! Every console page bounded, whatever reports planted (issue 30): a user and a video with
//! 10,000 sessions, as forged reports would leave them in `watch_sessions`, is one page under its
//! byte budget that says how many sessions it leaves out and links to them; a session with 10,000
//! segments draws at most one bar per timeline pixel; a user with more videos than a page holds
//! gets the next ones a link away; a video's page counts its viewers in SQL.

use kollus_token_api::auth::ApiKeys;
use reqwest::header::{ACCEPT_LANGUAGE, COOKIE, SET_COOKIE};
use reqwest::{redirect, Response, StatusCode};

use crate::helpers::*;

const SUPPORT_KEY: &str = "support-key-0123456789abcdef";

/// What a console page may weigh (README "The support console": 1 MiB).
const PAGE_BYTES: usize = 1024 * 1024;

/// The refund view's timeline width, in pixels.
const TIMELINE: usize = 240;

/// Every `name=value` a response sets, as one `Cookie` header (whatever the cookies are named).
fn cookies(res: &Response) -> String {
    res.headers()
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_owned))
        .filter(|pair| pair.split_once('=').is_some_and(|(_, v)| !v.is_empty()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Signs in through the form as a browser would; the `Cookie` header of the session.
async fn sign_in(app: &TestApp, web: &reqwest::Client) -> String {
    let form = web
        .get(format!("{}/console/login", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let jar = cookies(&form);
    let body = form.text().await.unwrap();
    let field = "name=\"csrf_token\" value=\"";
    let at = body.find(field).expect("a CSRF field") + field.len();
    let csrf = &body[at..at + body[at..].find('"').unwrap()];
    let res = web
        .post(format!("{}/console/login", app.address))
        .header(COOKIE, jar)
        .form(&[("key", SUPPORT_KEY), ("csrf_token", csrf)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SEE_OTHER, "signed in");
    cookies(&res)
}

async fn spawn_console() -> (TestApp, reqwest::Client, String) {
    let app = spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&format!("support[console]:{SUPPORT_KEY}")).unwrap();
    })
    .await;
    let web = reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = sign_in(&app, &web).await;
    (app, web, cookie)
}

async fn page(app: &TestApp, web: &reqwest::Client, cookie: &str, path: &str) -> String {
    let res = web
        .get(format!("{}{path}", app.address))
        .header(COOKIE, cookie)
        .header(ACCEPT_LANGUAGE, "en")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "{path}");
    res.text().await.unwrap()
}

/// The number in `<span class="{class}">N</span>`, if the page has one.
fn count_in(body: &str, class: &str) -> Option<i64> {
    let open = format!("<span class=\"{class}\">");
    let at = body.find(&open)? + open.len();
    body[at..at + body[at..].find('<')?].parse().ok()
}

/// The `href` of the link with `class`, HTML-unescaped.
fn link(body: &str, class: &str) -> Option<String> {
    let open = format!("<a class=\"{class}\" href=\"");
    let at = body.find(&open)? + open.len();
    Some(body[at..at + body[at..].find('"')?].replace("&amp;", "&"))
}

/// Rows of the refund view's session table.
fn session_rows(body: &str) -> usize {
    body.split("<table class=\"sessions\">")
        .nth(1)
        .map_or(0, |t| {
            t.split("</table>").next().unwrap().matches("<tr>").count() - 1
        })
}

/// Plants `n` sessions of `user` on `media`, 30 blocks each, as forged reports would leave them:
/// session `i` starts at `1_700_000_000 + 60 i`, watched block `i % 29` and carries `segments`
/// played segments. The oldest session alone watched block 29.
async fn plant(app: &TestApp, user: &str, media: &str, n: i64, segments: i64) {
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, device, \
                 playtime, real_playtime, runtime, duration, block_count, blocks_played, \
                 block_percent, segments, hash_verified, first_report_at, last_report_at)
             SELECT $1, $2, 1700000000 + 60 * i, 'forged', 60, 60, 60, 3000, 30,
                    array_fill(false, ARRAY[30]),
                    (SELECT array_agg(CASE WHEN b = (CASE WHEN i = 0 THEN 29 ELSE i % 29 END)
                                           THEN 100 ELSE 0 END::bigint ORDER BY b)
                       FROM generate_series(0, 29) b),
                    (SELECT coalesce(jsonb_agg(jsonb_build_array(k % 30, k * 3000 / $4, 1)), '[]')
                       FROM generate_series(0, $4::bigint - 1) k),
                    false, now(), now()
               FROM generate_series(0, $3::bigint - 1) i",
            &[&user, &media, &n, &segments],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_planted_refund_view_of_10000_sessions_is_one_bounded_page_linking_to_the_rest() {
    let (app, web, cookie) = spawn_console().await;
    plant(&app, "u-forged", "m-forged", 10_000, 20).await;
    let path = "/console/users/u-forged/media/m-forged";
    let first = page(&app, &web, &cookie, path).await;
    assert!(
        first.len() < PAGE_BYTES,
        "the page weighs {} bytes",
        first.len()
    );
    let shown = session_rows(&first);
    assert!(shown > 0 && shown <= 50, "{shown} sessions on the page");
    assert_eq!(
        first.matches("class=\"cell ").count(),
        shown * 30,
        "a heatmap row per session shown"
    );
    assert_eq!(count_in(&first, "total"), Some(10_000), "says of how many");
    let older = count_in(&first, "older-count").expect("says how many it leaves out");
    assert_eq!(older, 10_000 - shown as i64);
    assert_eq!(count_in(&first, "newer-count"), None, "the newest page");
    // The union row is every session's, those on other pages too: block 29 was watched only by
    // the oldest, far from this page.
    assert!(
        first.contains("class=\"union p10\" x=\"348\""),
        "b29 in the union: {}",
        &first[..first.len().min(4000)]
    );
    assert!(first.contains("30 / 30 blocks watched"));

    // The link leads to the next older sessions, numbered on.
    let next = link(&first, "older").expect("an older link");
    assert!(next.starts_with(&format!("{path}?before=")), "{next}");
    let second = page(&app, &web, &cookie, &next).await;
    assert!(second.len() < PAGE_BYTES);
    assert_eq!(
        count_in(&second, "newer-count"),
        Some(shown as i64),
        "the first page's sessions, counted as newer"
    );
    assert!(
        second.contains(&format!("<td class=\"num\">{}</td>", shown + 1)),
        "numbered on from the first page"
    );
    let shown2 = session_rows(&second);
    assert_eq!(
        count_in(&second, "older-count"),
        Some(10_000 - (shown + shown2) as i64)
    );
    assert_eq!(link(&second, "newest").as_deref(), Some(path));

    // Keyset to the end: before the third oldest session, the two oldest and nothing older.
    let last = page(&app, &web, &cookie, &format!("{path}?before=1700000120")).await;
    assert_eq!(session_rows(&last), 2);
    assert_eq!(count_in(&last, "newer-count"), Some(9_998));
    assert_eq!(count_in(&last, "older-count"), None);
    assert!(link(&last, "older").is_none());

    // A cursor that is not a start is a 400, not a page.
    for bad in ["?before=yesterday", "?before=1e9"] {
        let res = web
            .get(format!("{}{path}{bad}", app.address))
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{bad}");
    }
}

#[tokio::test]
async fn a_session_with_10000_segments_draws_at_most_one_bar_per_pixel() {
    let (app, web, cookie) = spawn_console().await;
    plant(&app, "u-seg", "m-seg", 1, 10_000).await;
    let body = page(&app, &web, &cookie, "/console/users/u-seg/media/m-seg").await;
    let bars = body.matches("class=\"segment\"").count();
    assert!(
        bars > 0 && bars <= TIMELINE,
        "{bars} bars for 10,000 segments"
    );
    assert!(body.len() < PAGE_BYTES);
}

#[tokio::test]
async fn a_user_with_more_videos_than_a_page_gets_the_rest_a_link_away() {
    let (app, web, cookie) = spawn_console().await;
    let db = app.db.client().await;
    db.execute(
        "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, playtime, \
             block_count, blocks_played, block_percent, first_report_at, last_report_at)
         SELECT 'u-many', 'm' || lpad(v::text, 3, '0'), 1700000000 + s, 100, 4,
                ARRAY[true, s = 1, false, false], ARRAY[100, 0, 0, 0]::bigint[], now(), now()
           FROM generate_series(0, 119) v, generate_series(0, 1) s",
        &[],
    )
    .await
    .unwrap();
    let first = page(&app, &web, &cookie, "/console/users/u-many").await;
    assert!(first.len() < PAGE_BYTES);
    assert_eq!(count_in(&first, "total"), Some(120));
    let rows = first.matches("<svg class=\"strip\"").count();
    assert!(rows > 0 && rows <= 50, "{rows} videos");
    assert_eq!(count_in(&first, "not-shown"), Some(120 - rows as i64));
    // Summed in SQL: two sessions each, the union of their blocks (b1 played, no percent:
    // watched at 0%).
    assert!(first.contains("0:03:20"), "two sessions' playtime");
    assert!(first.contains("2 / 4"), "blocks watched of the block count");
    assert!(
        first.contains("<title>b1: watched, 0%</title>"),
        "played, no percent"
    );
    let next = link(&first, "next").expect("a next link");
    assert_eq!(
        next,
        format!("/console/users/u-many?after=m{:03}", rows - 1)
    );
    let second = page(&app, &web, &cookie, &next).await;
    assert!(
        second.contains(&format!(">m{:03}<", rows)),
        "the next video"
    );
    assert!(!second.contains(">m000<"), "not the first page's");
    assert!(link(&second, "first").is_some());

    let res = web
        .get(format!("{}/console/users/u-many?after=a%20b", app.address))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_video_page_counts_viewers_per_share_of_blocks_and_per_block_in_sql() {
    let (app, web, cookie) = spawn_console().await;
    let db = app.db.client().await;
    // Viewers watching the first n of `of` blocks; the last one over two sessions.
    for (user, n, of) in [
        ("v0", 0, 4),
        ("v1", 1, 4),
        ("v2", 2, 4),
        ("v3", 3, 4),
        ("v4", 4, 4),
        ("v9", 9, 10),
    ] {
        let played: Vec<bool> = (0..of).map(|i| i < n).collect();
        let halves: Vec<Vec<bool>> = if user == "v9" {
            vec![
                played
                    .iter()
                    .enumerate()
                    .map(|(i, p)| *p && i < 5)
                    .collect(),
                played
                    .iter()
                    .enumerate()
                    .map(|(i, p)| *p && i >= 5)
                    .collect(),
            ]
        } else {
            vec![played]
        };
        for (s, blocks) in halves.iter().enumerate() {
            db.execute(
                "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, \
                     playtime, block_count, blocks_played, first_report_at, last_report_at) \
                 VALUES ($1, 'm-vid', $2, 10, $3, $4, now(), now())",
                &[&user, &(1_700_000_000 + s as i64), &of, blocks],
            )
            .await
            .unwrap();
        }
    }
    let body = page(&app, &web, &cookie, "/console/media/m-vid").await;
    assert!(body.contains("<span class=\"viewers\">6</span>"), "{body}");
    assert!(body.contains("0:01:10"), "seven sessions' playtime");
    for (bucket, n) in [
        ("0-25%", 1),
        ("25-50%", 1),
        ("50-75%", 1),
        ("75-99%", 2),
        ("100%", 1),
    ] {
        assert!(
            body.contains(&format!("<title>{bucket}: {n}</title>")),
            "{bucket}: {n} in {body}"
        );
    }
    for (i, n) in [5, 4, 3, 2, 1, 1, 1, 1, 1, 0].iter().enumerate() {
        assert!(
            body.contains(&format!("<title>b{i}: {n}</title>")),
            "b{i}: {n}"
        );
    }
}

#[tokio::test]
async fn a_session_of_200000_segments_is_read_as_its_first_10000_and_the_page_says_so() {
    let (app, web, cookie) = spawn_console().await;
    // As history-worker's uncapped merge across reports could leave it.
    plant(&app, "u-huge", "m-huge", 1, 200_000).await;
    let body = page(&app, &web, &cookie, "/console/users/u-huge/media/m-huge").await;
    assert!(
        body.len() < PAGE_BYTES,
        "the page weighs {} bytes",
        body.len()
    );
    assert_eq!(
        count_in(&body, "segment-count"),
        Some(200_000),
        "says of how many"
    );
    assert!(
        body.contains("the first 10000 of"),
        "says the timeline is the first 10,000"
    );
    let bars = body.matches("class=\"segment\"").count();
    assert!(bars > 0 && bars <= TIMELINE, "{bars} bars");

    // A session within the bound says nothing of the kind.
    plant(&app, "u-small", "m-small", 1, 10_000).await;
    let body = page(&app, &web, &cookie, "/console/users/u-small/media/m-small").await;
    assert_eq!(count_in(&body, "segment-count"), None);

    // Segments that are no array (no writer stores one, but the column is jsonb) cannot fail
    // the slice: the page answers, with no timeline for them.
    plant(&app, "u-odd", "m-odd", 1, 1).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE watch_sessions SET segments = '{}' WHERE client_user_id = 'u-odd'",
            &[],
        )
        .await
        .unwrap();
    let body = page(&app, &web, &cookie, "/console/users/u-odd/media/m-odd").await;
    assert_eq!(count_in(&body, "segment-count"), None);
}

#[tokio::test]
async fn a_user_page_shows_the_newest_200_grants_and_says_how_many_more_with_cells_clipped() {
    let (app, web, cookie) = spawn_console().await;
    let db = app.db.client().await;
    let long = "x".repeat(5_000);
    db.execute(
        "INSERT INTO entitlements (client_user_id, scope, target, download, granted_by, granted_at)
         SELECT 'u-grants', 'media', 'g' || lpad(i::text, 3, '0'), false, 'app',
                now() - i * interval '1 minute'
           FROM generate_series(0, 249) i
         UNION ALL SELECT 'u-grants', 'media', $1, false, 'app', now() + interval '1 minute'
         UNION ALL SELECT 'u-grants', 'media', 'revoked', false, 'app', now()",
        &[&long],
    )
    .await
    .unwrap();
    db.execute(
        "UPDATE entitlements SET revoked_at = now(), revoked_by = 'app' WHERE target = 'revoked'",
        &[],
    )
    .await
    .unwrap();
    let body = page(&app, &web, &cookie, "/console/users/u-grants").await;
    let table = body
        .split("<table class=\"entitlements\">")
        .nth(1)
        .and_then(|t| t.split("</table>").next())
        .expect("the grants' table");
    assert_eq!(table.matches("<tr>").count() - 1, 200, "200 grants shown");
    assert_eq!(
        count_in(&body, "grants-not-shown"),
        Some(51),
        "251 in force"
    );
    assert!(table.contains(">g000<"), "the newest");
    assert!(!table.contains(">g249<"), "not the oldest");
    assert!(!table.contains(">revoked<"), "only grants in force");
    assert!(!body.contains(&"x".repeat(81)), "the long target clipped");

    // The refund view's decisions: what the player sent is clipped.
    let player = "p".repeat(5_000);
    let target = "t".repeat(5_000);
    db.execute(
        "INSERT INTO playback_decisions (decided_at, callback, kind, client_user_id, \
             media_content_key, result, reason, scope, target, player_id)
         SELECT now() - i * interval '1 second', 'play', 1, 'u-grants', 'm-d', 0,
                'no_entitlement', 'media', $1, $2
           FROM generate_series(1, 300) i",
        &[&target, &player],
    )
    .await
    .unwrap();
    let body = page(&app, &web, &cookie, "/console/users/u-grants/media/m-d").await;
    assert!(
        body.len() < PAGE_BYTES,
        "the page weighs {} bytes",
        body.len()
    );
    assert!(!body.contains(&"p".repeat(81)), "player_id clipped");
    assert!(!body.contains(&"t".repeat(81)), "target clipped");
    assert!(body.contains(&format!("{}…", "p".repeat(80))));
}

#[tokio::test]
async fn a_stale_next_link_says_there_are_no_more_videos_and_links_to_the_first() {
    let (app, web, cookie) = spawn_console().await;
    plant(&app, "u-stale", "m1", 1, 1).await;
    let body = page(&app, &web, &cookie, "/console/users/u-stale?after=m9").await;
    assert!(!body.contains("No watch history"), "{body}");
    assert!(body.contains("No more videos"), "{body}");
    assert_eq!(count_in(&body, "total"), Some(1));
    assert_eq!(
        link(&body, "first").as_deref(),
        Some("/console/users/u-stale")
    );
    assert!(
        body.contains("href=\"/console/users/u-stale?after=m9&amp;lang=ko\""),
        "the language switch keeps the page's cursor: {body}"
    );
    let first = page(&app, &web, &cookie, "/console/users/u-stale").await;
    assert!(first.contains(">m1<"));
}

/// A play callback (kind 1) for `user` and `media`, and how long its answer took.
async fn play(app: &TestApp, user: &str, media: &str) -> (Response, std::time::Duration) {
    let started = std::time::Instant::now();
    let res = app
        .client
        .post(format!("{}/kollus/play?secret={PLAY_SECRET}", app.address))
        .form(&[
            ("kind", "1"),
            ("client_user_id", user),
            ("media_content_key", media),
            ("player_id", "player-1"),
            ("localtime", "1700000000"),
        ])
        .send()
        .await
        .unwrap();
    (res, started.elapsed())
}

#[tokio::test]
async fn console_pages_blocked_in_the_database_hold_only_the_consoles_pool_not_playbacks() {
    let app = spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&format!("support[console]:{SUPPORT_KEY}")).unwrap();
        // CONSOLE_DB_CONNECTIONS's default, 2; a short wait so a page without one is a 503 soon.
        assert_eq!(s.console.db_connections, 2);
        s.database.pool_wait = std::time::Duration::from_millis(1_000);
    })
    .await;
    let web = reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .build()
        .unwrap();
    let cookie = sign_in(&app, &web).await;
    plant(&app, "u-slow", "m-slow", 1, 1).await;

    // Every page's access-record row waits on a lock this test holds: ten slow page loads, more than
    // the callbacks' whole pool (DATABASE_POOL_SIZE, 8).
    let locker = app.db.client().await;
    locker
        .batch_execute("BEGIN; LOCK TABLE access_log IN EXCLUSIVE MODE")
        .await
        .unwrap();
    let loads: Vec<_> = (0..10)
        .map(|_| {
            let (web, cookie) = (web.clone(), cookie.clone());
            let url = format!("{}/console/users/u-slow", app.address);
            tokio::spawn(async move {
                web.get(url)
                    .header(COOKIE, cookie)
                    .send()
                    .await
                    .unwrap()
                    .status()
            })
        })
        .collect();
    let watcher = app.db.client().await;
    kollus_test_support::eventually_ok(
        "the console's two connections blocked on the lock",
        std::time::Duration::from_secs(20),
        || async {
            let waiting: i64 = watcher
                .query_one(
                    "SELECT count(*) AS n FROM pg_stat_activity \
                      WHERE datname = current_database() AND wait_event_type = 'Lock' \
                        AND query LIKE 'INSERT INTO access_log %'",
                    &[],
                )
                .await
                .unwrap()
                .get("n");
            if waiting >= 2 {
                Ok(waiting)
            } else {
                Err(format!("{waiting} waiting"))
            }
        },
    )
    .await;

    // The play callback still gets a connection: a decision within its deadline
    // (PLAY_TIMEOUT_MS, 2 s).
    for _ in 0..3 {
        let (res, took) = play(&app, "u-slow", "m-slow").await;
        assert_eq!(res.status(), 200, "after {took:?}: {:?}", res.text().await);
        assert!(
            took < std::time::Duration::from_secs(2),
            "answered after {took:?}"
        );
    }
    // ... while another console page, with no connection left to it, is the console's 503.
    let res = web
        .get(format!("{}/console/users/u-slow", app.address))
        .header(COOKIE, &cookie)
        .header(ACCEPT_LANGUAGE, "en")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let blocked: i64 = watcher
        .query_one(
            "SELECT count(*) AS n FROM pg_stat_activity \
              WHERE datname = current_database() AND wait_event_type = 'Lock' \
                AND query LIKE 'INSERT INTO access_log %'",
            &[],
        )
        .await
        .unwrap()
        .get("n");
    // Writers of the access record only: the sealer's own pass may queue on the lock too.
    assert_eq!(blocked, 2, "no more than the console's pool ever waited");
    // Operators see it: the console's pool full, the callbacks' and the exports' pools apart.
    assert_eq!(
        app.metric("kollus_token_console_db_pool_max_connections")
            .await,
        2
    );
    assert_eq!(
        app.metric(r#"kollus_token_console_db_pool_connections{state="in_use"}"#)
            .await,
        2
    );
    assert_eq!(
        app.metric("kollus_token_export_db_pool_max_connections")
            .await,
        4
    );
    assert_eq!(app.metric("kollus_token_db_pool_max_connections").await, 8);

    locker.batch_execute("ROLLBACK").await.unwrap();
    let mut answered = Vec::new();
    for load in loads {
        answered.push(load.await.unwrap());
    }
    assert!(
        answered
            .iter()
            .all(|s| *s == StatusCode::OK || *s == StatusCode::SERVICE_UNAVAILABLE),
        "{answered:?}"
    );
    assert!(
        answered.iter().filter(|s| **s == StatusCode::OK).count() >= 2,
        "{answered:?}"
    );
}

/// The binary refuses a console pool outside 1 to 16 connections at start, naming the setting.
#[test]
fn console_db_connections_outside_1_to_16_stop_the_start_naming_the_setting() {
    for value in ["0", "17", "-1", "two"] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_token-api"))
            .env_clear()
            .env("DATABASE_URL", "postgres://127.0.0.1:1/none")
            .env("KOLLUS_SECURITY_KEY", SECURITY_KEY)
            .envs(kollus_test_support::key_files().env())
            .env("KOLLUS_CUSTOM_KEY", CUSTOM_KEY)
            .env("TOKEN_API_KEYS", format!("support[console]:{SUPPORT_KEY}"))
            .env("CONSOLE_DB_CONNECTIONS", value)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{value}: {stderr}");
        assert!(
            stderr.contains("CONSOLE_DB_CONNECTIONS"),
            "{value}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}
