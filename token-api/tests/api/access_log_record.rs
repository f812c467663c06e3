//! The access record as each access writes it (issue 31): the console's sign-ins, refusals,
//! searches, views and downloads, the API's reads, exports and entitlement changes, each with
//! the key's name and the client's address (through `TRUSTED_PROXIES`), the console's with the
//! session, downloads with their reason; the user named by tag and sealed id only; V15's
//! `console_views` moved in at start.

use kollus_common::client_addr::Networks;
use kollus_common::subject::{SealedSubject, SubjectTag, Subjects};
use kollus_token_api::auth::ApiKeys;
use reqwest::header::{HeaderMap, HeaderValue, COOKIE};
use reqwest::{redirect, StatusCode};
use sha2::Digest as _;

use crate::console::{download, get, seed, sign_in, sign_in_with, SESSION, SUPPORT_KEY};
use crate::helpers::*;

/// A user id that must appear in no row's text.
const USER: &str = "learner-4242";
const MEDIA: &str = "mck-audit-1";
/// The client, as our proxy (127.0.0.1, trusted) forwards it.
const CLIENT: &str = "203.0.113.7";

/// Keys `app` (every scope but console), `ops` (the same) and `support[console]`, behind a
/// trusted proxy at 127.0.0.1.
async fn spawn() -> TestApp {
    spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&format!(
            "app:{APP_KEY},ops:{OPS_KEY},support[console]:{SUPPORT_KEY}"
        ))
        .unwrap();
        s.proxies.trusted_proxies = Networks::parse("127.0.0.1").unwrap();
    })
    .await
}

/// A browser behind our proxy: every request forwarded for [`CLIENT`].
fn forwarded() -> reqwest::Client {
    let mut headers = HeaderMap::new();
    headers.insert("x-forwarded-for", HeaderValue::from_static(CLIENT));
    reqwest::Client::builder()
        .redirect(redirect::Policy::none())
        .default_headers(headers)
        .build()
        .unwrap()
}

fn subjects() -> Subjects {
    let files = &kollus_test_support::key_files().files;
    Subjects::from_files(&files[1].2, &files[2].2).unwrap()
}

/// One access-log row as a test reads it, the user opened from its sealed id.
#[derive(Debug, Clone)]
struct Row {
    class: String,
    action: String,
    key_name: String,
    session: Option<Vec<u8>>,
    addr: Option<String>,
    tag: Option<String>,
    user: Option<String>,
    target: Option<String>,
    reason: Option<String>,
    /// The whole row as text.
    text: String,
}

async fn rows(app: &TestApp) -> Vec<Row> {
    let db = app.db.client().await;
    let subjects = subjects();
    let mut out = Vec::new();
    for r in db
        .query(
            "SELECT class, action, key_name, session_hash, host(client_addr) AS addr, \
                    subject_tag, subject_generation, subject_sealed, target, reason, \
                    to_jsonb(l)::text AS text \
               FROM access_log l ORDER BY id",
            &[],
        )
        .await
        .unwrap()
    {
        let tag: Option<String> = r.get("subject_tag");
        // A row of a subject listed among many (a video's export) holds the tag alone.
        let generation: Option<i32> = r.get("subject_generation");
        let user = match (&tag, generation) {
            (Some(tag), Some(generation)) => {
                let sealed = SealedSubject {
                    tag: SubjectTag::from_stored(tag.clone()),
                    generation,
                    sealed_id: r.get("subject_sealed"),
                };
                subjects.open_id(&db, &sealed).await.unwrap()
            }
            _ => None,
        };
        out.push(Row {
            class: r.get("class"),
            action: r.get("action"),
            key_name: r.get("key_name"),
            session: r.get("session_hash"),
            addr: r.get("addr"),
            tag,
            user,
            target: r.get("target"),
            reason: r.get("reason"),
            text: r.get("text"),
        });
    }
    out
}

/// The rows of `action`.
async fn of(app: &TestApp, action: &str) -> Vec<Row> {
    rows(app)
        .await
        .into_iter()
        .filter(|r| r.action == action)
        .collect()
}

#[tokio::test]
async fn each_console_action_writes_its_row_with_key_session_address_and_reason() {
    let app = spawn().await;
    app.catalog(MEDIA, true, false).await;
    seed(&app, USER, MEDIA).await;
    let web = forwarded();

    // Refused sign-ins: an unknown key (no name to give), a key without `console` (its name).
    assert_eq!(
        sign_in_with(&app, &web, "no-such-key-0123456789")
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        sign_in_with(&app, &web, APP_KEY).await.status(),
        StatusCode::FORBIDDEN
    );
    let refused = of(&app, "sign_in_refused").await;
    let seen: Vec<(&str, Option<&str>)> = refused
        .iter()
        .map(|r| (r.key_name.as_str(), r.target.as_deref()))
        .collect();
    assert_eq!(
        seen,
        [
            ("-", Some("unknown_key")),
            ("app", Some("no_console_scope"))
        ]
    );

    let cookie = sign_in(&app, &web).await;
    let session_id = cookie.strip_prefix(&format!("{SESSION}=")).unwrap();
    let session_hash = sha2::Sha256::digest(session_id.as_bytes()).to_vec();

    let user_path = format!("/console/users/{USER}");
    for q in [USER, "nobody-here"] {
        let res = web
            .get(format!("{}/console/", app.address))
            .query(&[("q", q)])
            .header(COOKIE, &cookie)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success() || res.status().is_redirection());
    }
    assert_eq!(get(&app, &web, &user_path, &cookie).await.status(), 200);
    let refund = get(&app, &web, &format!("{user_path}/media/{MEDIA}"), &cookie).await;
    assert_eq!(refund.status(), 200);
    let body = refund.text().await.unwrap();
    assert!(
        body.contains(&format!("action=\"{user_path}/export.csv\""))
            && body.contains("name=\"reason\""),
        "the refund page asks for a reason before a download: {body}"
    );
    // The video page names no viewer: no row.
    assert_eq!(
        get(&app, &web, &format!("/console/media/{MEDIA}"), &cookie)
            .await
            .status(),
        200
    );

    // A download without a reason (an old link, an empty or blank field) is the form again.
    let csv = format!("{user_path}/export.csv");
    let old_link = get(&app, &web, &csv, &cookie).await;
    assert_eq!(old_link.status(), StatusCode::BAD_REQUEST);
    let page = old_link.text().await.unwrap();
    assert!(
        page.contains("Give a reason before downloading") && page.contains("name=\"reason\""),
        "{page}"
    );
    // The form says not to name the person (a reason outlives their erasure).
    assert!(page.contains("Do not name the person"), "{page}");
    for reason in [None, Some("   ")] {
        let res = download(&app, &web, &csv, &cookie, reason).await;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{reason:?}");
        let page = res.text().await.unwrap();
        assert!(
            page.contains("a reason is required") && page.contains("name=\"reason\""),
            "{page}"
        );
    }
    let forged = web
        .post(format!("{}{csv}", app.address))
        .header(COOKIE, &cookie)
        .form(&[("csrf_token", "not-the-token"), ("reason", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN, "no session token");
    assert!(of(&app, "export_csv").await.is_empty(), "none recorded");

    for (path, reason) in [
        (csv.clone(), "refund claim #77"),
        (
            format!("{user_path}/export.jsonl"),
            "data request of the user",
        ),
    ] {
        let res = download(&app, &web, &path, &cookie, Some(reason)).await;
        assert_eq!(res.status(), 200, "{path}");
        assert!(res.text().await.unwrap().contains(MEDIA));
    }

    let console: Vec<Row> = rows(&app)
        .await
        .into_iter()
        .filter(|r| r.class == "access" && r.action != "sign_in_refused")
        .collect();
    let seen: Vec<_> = console
        .iter()
        .map(|r| {
            (
                r.action.as_str(),
                r.user.as_deref(),
                r.target.as_deref(),
                r.reason.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("sign_in", None, None, None),
            ("search", Some(USER), Some("found"), None),
            ("search", Some("nobody-here"), Some("not_found"), None),
            ("view_user", Some(USER), None, None),
            ("view_refund", Some(USER), Some(MEDIA), None),
            ("export_csv", Some(USER), None, Some("refund claim #77")),
            (
                "export_jsonl",
                Some(USER),
                None,
                Some("data request of the user")
            ),
        ]
    );
    let tag = subjects().tag(USER);
    for r in &console {
        assert_eq!(r.key_name, "support", "{r:?}");
        assert_eq!(r.session.as_deref(), Some(&session_hash[..]), "{r:?}");
        assert_eq!(
            r.addr.as_deref(),
            Some(CLIENT),
            "the forwarded client: {r:?}"
        );
        if r.user.as_deref() == Some(USER) {
            assert_eq!(r.tag.as_deref(), Some(tag.as_str()));
        }
        assert!(
            !r.text.contains(USER),
            "the user id in the clear: {}",
            r.text
        );
    }
    for r in &refused {
        assert_eq!(r.addr.as_deref(), Some(CLIENT));
        assert_eq!(r.session, None);
    }
    assert_eq!(
        app.metric("kollus_token_access_log_rows_total{action=\"export_csv\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn api_reads_count_one_row_per_key_user_and_day() {
    let app = spawn().await;
    app.catalog(MEDIA, true, false).await;
    seed(&app, USER, MEDIA).await;
    let read = |key: &'static str, path: String| {
        let app = &app;
        async move {
            let res = app
                .client
                .get(format!("{}{path}", app.address))
                .bearer_auth(key)
                .header("x-forwarded-for", CLIENT)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200, "{path}");
        }
    };
    let progress = format!("/v1/users/{USER}/media/{MEDIA}/progress");
    read(APP_KEY, progress.clone()).await;
    read(APP_KEY, progress).await;
    read(APP_KEY, format!("/v1/users/{USER}/history")).await;
    read(APP_KEY, format!("/v1/users/{USER}/entitlements")).await;
    read(OPS_KEY, format!("/v1/users/{USER}/history")).await;
    // A video's catalog state names no user: nothing counted.
    read(APP_KEY, format!("/v1/media/{MEDIA}")).await;

    let db = app.db.client().await;
    let counters: Vec<(String, String, i64, Option<String>, bool)> = db
        .query(
            "SELECT key_name, subject_tag, count, host(client_addr), \
                    day = (now() AT TIME ZONE 'UTC')::date \
               FROM access_log_reads ORDER BY key_name",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
        .collect();
    let tag = subjects().tag(USER).as_str().to_owned();
    let addr = Some(CLIENT.to_owned());
    assert_eq!(
        counters,
        [
            ("app".to_owned(), tag.clone(), 4, addr.clone(), true),
            ("ops".to_owned(), tag, 1, addr, true),
        ],
        "one counter per key, user and day, growing with each read"
    );
    assert!(
        of(&app, "api_read").await.is_empty(),
        "written as rows only when the day is over"
    );
    let text: String = db
        .query_one(
            "SELECT string_agg(to_jsonb(r)::text, ' ') FROM access_log_reads r",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!text.contains(USER), "{text}");
}

#[tokio::test]
async fn an_api_export_needs_a_reason_and_is_recorded_before_it_streams() {
    let app = spawn().await;
    app.catalog(MEDIA, true, false).await;
    seed(&app, USER, MEDIA).await;
    let export = |path: String, reason: Option<&'static str>| {
        let app = &app;
        async move {
            let mut req = app
                .client
                .get(format!("{}{path}", app.address))
                .bearer_auth(OPS_KEY)
                .header("x-forwarded-for", CLIENT);
            if let Some(reason) = reason {
                req = req.query(&[("reason", reason)]);
            }
            req.send().await.unwrap()
        }
    };
    for reason in [None, Some(""), Some("  ")] {
        let res = export(format!("/v1/users/{USER}/export"), reason).await;
        assert_eq!(res.status(), 400, "{reason:?}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        let problem: serde_json::Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "reason", "{problem}");
    }
    let res = export(format!("/v1/media/{MEDIA}/export"), None).await;
    assert_eq!(res.status(), 400);
    assert!(of(&app, "api_export").await.is_empty(), "nothing recorded");

    let res = export(format!("/v1/users/{USER}/export"), Some("court order 9")).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.unwrap().contains(MEDIA));
    let res = export(format!("/v1/media/{MEDIA}/export"), Some("course audit")).await;
    assert_eq!(res.status(), 200);
    res.text().await.unwrap();

    let rows = of(&app, "api_export").await;
    let tag = subjects().tag(USER).as_str().to_owned();
    let seen: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.key_name.as_str(),
                r.tag.as_deref(),
                r.user.as_deref(),
                r.target.as_deref(),
                r.reason.as_deref(),
                r.addr.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (
                "ops",
                Some(tag.as_str()),
                Some(USER),
                None,
                Some("court order 9"),
                Some(CLIENT)
            ),
            (
                "ops",
                None,
                None,
                Some(MEDIA),
                Some("course audit"),
                Some(CLIENT)
            ),
            // The video's export lists the user: a row of theirs, by tag.
            (
                "ops",
                Some(tag.as_str()),
                None,
                Some(MEDIA),
                Some("course audit"),
                Some(CLIENT)
            ),
        ]
    );
    assert!(rows.iter().all(|r| !r.text.contains(USER)));
    // The user's page lists both exports.
    let db = app.db.client().await;
    let listed = kollus_token_api::access_log::read::of_subject(
        &db,
        &SubjectTag::from_stored(tag.clone()),
        50,
    )
    .await
    .unwrap();
    let exports: Vec<_> = listed
        .rows
        .iter()
        .filter(|a| a.action == "api_export")
        .map(|a| a.target.as_deref())
        .collect();
    assert_eq!(exports.len(), 2, "{listed:?}");
    assert!(exports.contains(&Some(MEDIA)), "{listed:?}");
    // A reason naming the person (any case) is taken with the id replaced: it would outlive
    // their erasure.
    let named: &'static str = Box::leak(format!("for {}", USER.to_uppercase()).into_boxed_str());
    let res = export(format!("/v1/users/{USER}/export"), Some(named)).await;
    assert_eq!(res.status(), 200);
    res.bytes().await.unwrap();
    let stored: Vec<String> = app
        .db
        .client()
        .await
        .query(
            "SELECT reason FROM access_log WHERE action = 'api_export' AND reason LIKE 'for %'",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(stored, ["for [user]"]);
}

#[tokio::test]
async fn grants_and_revokes_are_recorded_with_the_change() {
    let app = spawn().await;
    let path = format!("{}/v1/users/{USER}/entitlements/media/{MEDIA}", app.address);
    let res = app
        .client
        .put(&path)
        .bearer_auth(APP_KEY)
        .header("x-forwarded-for", CLIENT)
        .json(&serde_json::json!({ "download": true }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let res = app
        .client
        .delete(&path)
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    // Nothing in force to revoke: no change, no row.
    let res = app
        .client
        .delete(&path)
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    let target = format!("media:{MEDIA}");
    let seen: Vec<_> = rows(&app)
        .await
        .into_iter()
        .filter(|r| r.action == "grant" || r.action == "revoke")
        .map(|r| (r.action, r.key_name, r.user, r.target, r.addr))
        .collect();
    assert_eq!(
        seen,
        [
            (
                "grant".to_owned(),
                "app".to_owned(),
                Some(USER.to_owned()),
                Some(target.clone()),
                Some(CLIENT.to_owned())
            ),
            (
                "revoke".to_owned(),
                "app".to_owned(),
                Some(USER.to_owned()),
                Some(target),
                Some("127.0.0.1".to_owned())
            ),
        ]
    );
}

#[tokio::test]
async fn the_key_list_in_force_at_start_is_a_rights_row_naming_no_key() {
    let app = spawn().await;
    let rows = of(&app, "keys_reloaded").await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let r = &rows[0];
    assert_eq!((r.class.as_str(), r.key_name.as_str()), ("rights", "-"));
    let target = r.target.as_deref().unwrap();
    assert!(
        target.starts_with("start; added: app[") && target.contains("support[console]"),
        "{target}"
    );
    for key in [APP_KEY, OPS_KEY, SUPPORT_KEY] {
        assert!(!r.text.contains(key), "never a key: {}", r.text);
    }
}

#[tokio::test]
async fn console_views_of_before_the_log_move_into_it_at_start() {
    let db = kollus_test_support::TestDb::new().await;
    {
        let client = db.client().await;
        client
            .execute(
                "INSERT INTO console_views (key_name, client_user_id, media_content_key, viewed_at) \
                 VALUES ('support', $1, NULL, '2025-03-04T05:06:07Z'), \
                        ('support', $1, $2, '2025-03-04T05:07:00Z'), \
                        ('other', 'someone', NULL, now())",
                &[&USER, &MEDIA],
            )
            .await
            .unwrap();
    }
    let settings = test_settings(&db);
    let built = kollus_token_api::startup::Application::build(settings)
        .await
        .expect("building token-api");
    let app = TestApp {
        address: format!("http://127.0.0.1:{}", built.port()),
        db,
        client: reqwest::Client::new(),
    };
    let left: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM console_views", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "every moved row deleted");
    let moved: Vec<(String, String, Option<String>, Option<String>)> = rows(&app)
        .await
        .into_iter()
        .filter(|r| r.action.starts_with("view_"))
        .map(|r| (r.action, r.key_name, r.user, r.target))
        .collect();
    assert_eq!(
        moved,
        [
            (
                "view_user".to_owned(),
                "support".to_owned(),
                Some(USER.to_owned()),
                None
            ),
            (
                "view_refund".to_owned(),
                "support".to_owned(),
                Some(USER.to_owned()),
                Some(MEDIA.to_owned())
            ),
            (
                "view_user".to_owned(),
                "other".to_owned(),
                Some("someone".to_owned()),
                None
            ),
        ]
    );
    let at: Vec<String> = app
        .db
        .client()
        .await
        .query(
            "SELECT to_char(at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS') FROM access_log \
              WHERE action LIKE 'view_%' ORDER BY id LIMIT 2",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(
        at,
        ["2025-03-04 05:06:07", "2025-03-04 05:07:00"],
        "when viewed"
    );
}

#[tokio::test]
async fn refused_sign_ins_from_one_client_are_recorded_up_to_the_minutes_cap() {
    let app = spawn().await;
    let web = forwarded();
    for _ in 0..25 {
        let res = web
            .post(format!("{}/console/login", app.address))
            .form(&[("key", "whatever-0123456789")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "no CSRF token");
    }
    let refused = of(&app, "sign_in_refused").await;
    assert_eq!(refused.len(), 20, "{refused:?}");
    assert!(refused
        .iter()
        .all(|r| r.target.as_deref() == Some("csrf") && r.addr.as_deref() == Some(CLIENT)));
    assert_eq!(
        app.metric("kollus_token_console_sign_in_failures_total{reason=\"csrf\"}")
            .await,
        25,
        "every refusal counted"
    );
}

/// An access whose row cannot be written (here the database's disk full, as a trigger says) is
/// refused: the console's 503 page, the API's 503 problem, no export streamed, no grant made.
#[tokio::test]
async fn an_access_that_cannot_be_recorded_is_refused_never_shown() {
    let app = spawn().await;
    app.catalog(MEDIA, true, false).await;
    seed(&app, USER, MEDIA).await;
    let web = forwarded();
    let cookie = sign_in(&app, &web).await;
    app.db
        .client()
        .await
        .batch_execute(
            "CREATE FUNCTION refuse_rows() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'disk full' USING ERRCODE = 'disk_full'; END $$; \
             CREATE TRIGGER refuse BEFORE INSERT ON access_log \
                 FOR EACH ROW EXECUTE FUNCTION refuse_rows(); \
             CREATE TRIGGER refuse BEFORE INSERT OR UPDATE ON access_log_reads \
                 FOR EACH ROW EXECUTE FUNCTION refuse_rows();",
        )
        .await
        .unwrap();
    let page = get(&app, &web, &format!("/console/users/{USER}"), &cookie).await;
    assert_eq!(page.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body = page.text().await.unwrap();
    assert!(
        !body.contains("mck-audit-1"),
        "nothing of the user shown: {body}"
    );
    let res = download(
        &app,
        &web,
        &format!("/console/users/{USER}/export.csv"),
        &cookie,
        Some("why"),
    )
    .await;
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    for path in [
        format!("/v1/users/{USER}/history"),
        format!("/v1/users/{USER}/export?reason=why"),
    ] {
        let res = app
            .client
            .get(format!("{}{path}", app.address))
            .bearer_auth(APP_KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE, "{path}");
        assert_eq!(res.headers()["content-type"], "application/problem+json");
        assert!(!res.text().await.unwrap().contains(MEDIA), "{path}");
    }
    let res = app
        .client
        .put(format!(
            "{}/v1/users/{USER}/entitlements/media/m-new",
            app.address
        ))
        .bearer_auth(APP_KEY)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    let granted: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT count(*) FROM entitlements WHERE target = 'm-new'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(granted, 0, "the grant went with its row");
}

/// The document's `reason` is the one `record::reason` checks: its bound, on every export.
#[test]
fn the_documented_reason_is_the_checked_one() {
    use kollus_token_api::access_log::record::REASON_MAX_CHARS;
    let doc = serde_json::to_value(kollus_token_api::routes::derived()).unwrap();
    for path in [
        "/v1/users/{client_user_id}/export",
        "/v1/media/{media_content_key}/export",
    ] {
        let params = doc["paths"][path]["get"]["parameters"].as_array().unwrap();
        let reason = params
            .iter()
            .find(|p| p["name"] == "reason")
            .unwrap_or_else(|| panic!("no reason in {path}"));
        assert_eq!(reason["required"], true, "{path}");
        assert_eq!(reason["in"], "query", "{path}");
        assert_eq!(reason["schema"]["maxLength"], REASON_MAX_CHARS, "{path}");
    }
}

/// The service role adds to today's read counters through V24's function, never edits or
/// deletes one; the finished days move into the log through the other function.
#[tokio::test]
async fn the_service_role_counts_reads_only_through_the_functions() {
    let db = kollus_test_support::TestDb::new().await;
    let client = db.client().await;
    client
        .batch_execute(
            "INSERT INTO access_log_reads (day, key_name, subject_tag, subject_generation, \
                 subject_sealed, client_addr, first_at, last_at, count) VALUES \
             ((now() AT TIME ZONE 'UTC')::date - 1, 'app', 'tag-old', 1, '\\x01', NULL, \
              now() - interval '1 day', now() - interval '20 hours', 7); \
             SET ROLE kollus_service",
        )
        .await
        .unwrap();
    for sql in [
        "UPDATE access_log_reads SET count = 1",
        "DELETE FROM access_log_reads",
        "TRUNCATE access_log_reads",
        "INSERT INTO access_log_reads (day, key_name, subject_tag, subject_generation, \
             subject_sealed, first_at, last_at, count) \
         VALUES (current_date, 'app', 't', 1, '\\x01', now(), now(), 1000000)",
    ] {
        let e = client.batch_execute(sql).await.expect_err(sql);
        assert_eq!(e.code().map(|c| c.code()), Some("42501"), "{sql}: {e}");
    }
    let count = |sealed: Option<&'static [u8]>| {
        let client = &client;
        async move {
            client
                .query_one(
                    "SELECT access_log_count_read('app', 'tag-a', $1, $2, '198.51.100.4')",
                    &[&sealed.map(|_| 1i32), &sealed],
                )
                .await
                .unwrap()
                .get::<_, bool>(0)
        }
    };
    assert!(
        !count(None).await,
        "no counter yet: the sealed id is asked for"
    );
    assert!(count(Some(&b"\x01"[..])).await);
    assert!(count(None).await);
    let n: i64 = client
        .query_one(
            "SELECT count FROM access_log_reads WHERE subject_tag = 'tag-a'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
    let moved: i64 = client
        .query_one("SELECT access_log_close_reads()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(moved, 1, "only the finished day");
    let row = client
        .query_one(
            "SELECT subject_tag, count FROM access_log WHERE action = 'api_read'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i64>(1)),
        ("tag-old".to_owned(), 7)
    );
}

/// V15's rows move in as the migration role: their old months get partitions of their own
/// (never DEFAULT, which retention never drops), and each batch waits for the sealer's lock, so
/// no seal is written while a batch's rows are uncommitted.
#[tokio::test]
async fn console_views_move_into_their_months_under_the_sealers_lock() {
    let db = kollus_test_support::TestDb::new().await;
    let client = db.client().await;
    client
        .execute(
            "INSERT INTO console_views (key_name, client_user_id, media_content_key, viewed_at) \
             VALUES ('support', $1, NULL, '2025-03-04T05:06:07Z'), \
                    ('support', 'someone', NULL, now())",
            &[&USER],
        )
        .await
        .unwrap();
    let log = kollus_token_api::access_log::record::AccessLog::new(
        subjects(),
        prometheus::IntCounterVec::new(prometheus::Opts::new("rows", "rows"), &["action"]).unwrap(),
    );
    let pool =
        kollus_common::db::pool(&kollus_common::settings::DatabaseSettings::new(&db.url)).unwrap();
    let mut sealer = db.client().await;
    let held = sealer.transaction().await.unwrap();
    held.execute(
        "SELECT pg_advisory_xact_lock($1)",
        &[&kollus_token_api::access_log::seal::SEAL_LOCK],
    )
    .await
    .unwrap();
    let moving = tokio::spawn(async move {
        kollus_token_api::access_log::legacy::move_console_views(&pool, &log).await
    });
    kollus_test_support::eventually(
        "the import waits for the sealer's lock",
        std::time::Duration::from_secs(10),
        || async {
            let waiting: i64 = client
                .query_one(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
                        AND database = (SELECT oid FROM pg_database \
                                         WHERE datname = current_database())",
                    &[],
                )
                .await
                .unwrap()
                .get(0);
            (waiting == 1).then_some(())
        },
    )
    .await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM access_log", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing moved while the sealer holds its lock");
    held.commit().await.unwrap();
    assert_eq!(moving.await.unwrap().unwrap(), 2);
    let parts: Vec<String> = client
        .query(
            "SELECT tableoid::regclass::text FROM access_log ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert_eq!(parts[0], "access_log_access_y2025m03", "{parts:?}");
    assert!(parts.iter().all(|p| !p.ends_with("default")), "{parts:?}");
}

/// The monthly review reads a month's rows of a few actions: an index by action, then time.
#[tokio::test]
async fn the_review_has_an_index_by_action_then_time() {
    let db = kollus_test_support::TestDb::new().await;
    let def: String = db
        .client()
        .await
        .query_one(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'access_log_action_at_idx'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(def.ends_with("(action, at)"), "{def}");
}
