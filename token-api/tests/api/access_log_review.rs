//! The access record read back in the console: a user's page lists every access to that user
//! (console rows, the product app's open read counter, an export with its reason) and nothing of
//! another user; the monthly review lists downloads with their reasons and refused sign-ins,
//! flags a key's action above three times its prior mean or new, refuses a key without `audit`
//! and exports as CSV with formula cells neutralised. Rows are written here with `AccessLog`
//! itself (or SQL, for past months), not through the handlers that write them.

use std::net::IpAddr;

use kollus_common::subject::Subjects;
use kollus_test_support::key_files;
use kollus_token_api::access_log::record::{AccessLog, Action, Entry};
use kollus_token_api::auth::ApiKeys;
use reqwest::StatusCode;

use crate::console::{browser, cookie_of, get, seed, sign_in_with, SESSION, SUPPORT_KEY};
use crate::helpers::*;

const AUDITOR_KEY: &str = "auditor-key-0123456789abcdef";

/// An app whose keys are `app`, `support[console]` and `auditor[console+audit]`.
async fn spawn_review() -> (TestApp, reqwest::Client) {
    let app = spawn_app_with(|s| {
        s.api_keys = ApiKeys::parse(&format!(
            "app:{APP_KEY},support[console]:{SUPPORT_KEY},auditor[console+audit]:{AUDITOR_KEY}"
        ))
        .unwrap();
    })
    .await;
    (app, browser())
}

/// A writer over the test process's key files: the app's subjects, tagged and sealed alike.
fn writer() -> AccessLog {
    let files = &key_files().files;
    let subjects = Subjects::from_files(&files[1].2, &files[2].2).unwrap();
    let rows = prometheus::IntCounterVec::new(
        prometheus::Opts::new("test_access_log_rows", "rows"),
        &["action"],
    )
    .unwrap();
    AccessLog::new(subjects, rows)
}

async fn session_of(app: &TestApp, web: &reqwest::Client, key: &str) -> String {
    let res = sign_in_with(app, web, key).await;
    assert_eq!(res.status(), StatusCode::SEE_OTHER);
    format!("{SESSION}={}", cookie_of(&res, SESSION).unwrap())
}

fn ip(s: &str) -> Option<IpAddr> {
    Some(s.parse().unwrap())
}

#[tokio::test]
async fn a_users_page_lists_every_access_to_that_user_and_none_to_another() {
    let (app, web) = spawn_review().await;
    let (user, other) = ("learner-1", "learner-2");
    seed(&app, user, "mck-1").await;
    seed(&app, other, "mck-1").await;
    let log = writer();
    let db = app.db.client().await;
    log.record(
        &db,
        Entry {
            client_addr: ip("203.0.113.5"),
            subject: Some(user),
            target: Some("mck-1"),
            ..Entry::new(Action::ViewRefund, "agent-kim")
        },
    )
    .await
    .unwrap();
    log.record(
        &db,
        Entry {
            client_addr: ip("203.0.113.6"),
            subject: Some(user),
            reason: Some("refund <b>#12</b>"),
            ..Entry::new(Action::ExportCsv, "agent-lee")
        },
    )
    .await
    .unwrap();
    for _ in 0..3 {
        log.record_read(&db, "shop-app", ip("198.51.100.7"), user)
            .await
            .unwrap();
    }
    // Another user's accesses, each with a mark that must not show on this user's page.
    log.record(
        &db,
        Entry {
            client_addr: ip("192.0.2.99"),
            subject: Some(other),
            reason: Some("OTHER-REASON"),
            ..Entry::new(Action::ExportJsonl, "agent-other")
        },
    )
    .await
    .unwrap();
    log.record_read(&db, "other-app", ip("192.0.2.98"), other)
        .await
        .unwrap();

    let cookie = session_of(&app, &web, SUPPORT_KEY).await;
    let page = get(&app, &web, &format!("/console/users/{user}"), &cookie).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    let list = &body[body.find("<section class=\"accesses\">").expect(&body)..];
    for shown in [
        "agent-kim",
        "<code>view_refund</code>",
        "203.0.113.5",
        "mck-1",
        "agent-lee",
        "<code>export_csv</code>",
        "refund &lt;b&gt;#12&lt;/b&gt;",
        "shop-app",
        "<code>api_read</code>",
        "(today, still counting)",
        "198.51.100.7",
        "<td class=\"num\">3</td>",
    ] {
        assert!(list.contains(shown), "{shown} on the user's page: {list}");
    }
    for hidden in [
        "agent-other",
        "OTHER-REASON",
        "192.0.2.99",
        "other-app",
        "192.0.2.98",
    ] {
        assert!(!body.contains(hidden), "{hidden}, another user's, shown");
    }
    assert!(!body.contains("<b>#12"), "a reason is text");
    // The refund view lists them too.
    let refund = get(
        &app,
        &web,
        &format!("/console/users/{user}/media/mck-1"),
        &cookie,
    )
    .await;
    assert_eq!(refund.status(), 200);
    let body = refund.text().await.unwrap();
    assert!(body.contains("agent-lee") && !body.contains("agent-other"));
}

#[tokio::test]
async fn a_users_page_lists_the_latest_accesses_and_says_how_many_more() {
    let (app, web) = spawn_review().await;
    let user = "learner-many";
    seed(&app, user, "mck-1").await;
    let log = writer();
    let db = app.db.client().await;
    for i in 0..60 {
        let key = format!("agent-{i:02}");
        log.record(
            &db,
            Entry {
                subject: Some(user),
                ..Entry::new(Action::Search, &key)
            },
        )
        .await
        .unwrap();
    }
    let cookie = session_of(&app, &web, SUPPORT_KEY).await;
    let body = get(&app, &web, &format!("/console/users/{user}"), &cookie)
        .await
        .text()
        .await
        .unwrap();
    assert!(body.contains("agent-59"), "the newest");
    assert!(!body.contains("agent-09"), "the oldest left out");
    let list = section(&body, "<table class=\"accesses\">");
    assert_eq!(
        list.matches("<tr>").count(),
        1 + 50,
        "a header and fifty rows"
    );
    // However many the page's own view added: the record's count less those shown.
    let total: i64 = db
        .query_one(
            "SELECT count(*) FROM access_log WHERE subject_tag = $1",
            &[&log.tag(user).as_str()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(total >= 60);
    assert!(
        body.contains(&format!(
            "<span class=\"accesses-more\">{}</span>",
            total - 50
        )),
        "{body}"
    );
}

/// Inserts `n` rows of `action` by `key` (each of `count`) now, or in the month `months_ago`
/// before this one, mid-month (the console's months are its zone's, hours off UTC's).
async fn past_rows(app: &TestApp, key: &str, action: &str, months_ago: i32, n: i32, count: i64) {
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO access_log (class, action, key_name, at, count) \
             SELECT 'access', $1, $2, \
                    CASE WHEN $3 = 0 THEN now() \
                         ELSE date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' \
                              - make_interval(months => $3) + interval '14 days' END, $5 \
               FROM generate_series(1, $4)",
            &[&action, &key, &months_ago, &n, &count],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn the_monthly_review_lists_downloads_refusals_and_flags_what_grew() {
    let (app, web) = spawn_review().await;
    let log = writer();
    let db = app.db.client().await;
    // This month: two downloads with their reasons (one a formula), a refused sign-in.
    log.record(
        &db,
        Entry {
            client_addr: ip("203.0.113.5"),
            subject: Some("learner-1"),
            reason: Some("=HYPERLINK(\"http://x\",\"refund\")"),
            ..Entry::new(Action::ExportCsv, "agent-kim")
        },
    )
    .await
    .unwrap();
    log.record(
        &db,
        Entry {
            client_addr: ip("198.51.100.7"),
            subject: Some("learner-2"),
            target: Some("mck-9"),
            reason: Some("court order 2026-117"),
            ..Entry::new(Action::ApiExport, "shop-app")
        },
    )
    .await
    .unwrap();
    log.record(
        &db,
        Entry {
            client_addr: ip("192.0.2.44"),
            target: Some("unknown key"),
            ..Entry::new(Action::SignInRefused, "(no key)")
        },
    )
    .await
    .unwrap();
    let tag = log.tag("learner-1");
    // Per key and action: agent-kim's searches, 1 a month before, 4 now (above 3x the mean of
    // 1); its views, 1 a month before, 3 now (3x, not above); a new key's first view; the
    // product app's reads (30 in a past month: mean 10), 20 closed now and 1 still counting;
    // and a month four back that must not count.
    for months_ago in 1..=3 {
        past_rows(&app, "agent-kim", "search", months_ago, 1, 1).await;
        past_rows(&app, "agent-kim", "view_user", months_ago, 1, 1).await;
    }
    past_rows(&app, "agent-kim", "view_user", 4, 1, 100).await;
    past_rows(&app, "agent-kim", "search", 4, 1, 100).await;
    past_rows(&app, "shop-app", "api_read", 2, 1, 30).await;
    past_rows(&app, "agent-kim", "search", 0, 4, 1).await;
    past_rows(&app, "agent-kim", "view_user", 0, 3, 1).await;
    past_rows(&app, "newcomer", "view_user", 0, 1, 1).await;
    past_rows(&app, "shop-app", "api_read", 0, 1, 20).await;
    log.record_read(&db, "shop-app", None, "learner-3")
        .await
        .unwrap();

    // A key without `audit` gets the 403 page, for the page and the file.
    let support = session_of(&app, &web, SUPPORT_KEY).await;
    for path in ["/console/review", "/console/review.csv"] {
        let res = get(&app, &web, path, &support).await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{path}");
        let body = res.text().await.unwrap();
        assert!(body.contains("audit scope"), "{body}");
        assert!(!body.contains("agent-kim"), "nothing of the record: {body}");
    }

    let auditor = session_of(&app, &web, AUDITOR_KEY).await;
    let res = get(&app, &web, "/console/review?month=2026-13", &auditor).await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST, "no such month");
    let res = get(&app, &web, "/console/review", &auditor).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    let downloads = section(&body, "<table class=\"downloads\">");
    for shown in [
        "agent-kim",
        "=HYPERLINK(&quot;http://x&quot;,&quot;refund&quot;)",
        "203.0.113.5",
        tag.as_str(),
        "shop-app",
        "<code>api_export</code>",
        "court order 2026-117",
        "mck-9",
    ] {
        assert!(
            downloads.contains(shown),
            "{shown} in downloads: {downloads}"
        );
    }
    assert!(!downloads.contains("learner-1"), "subjects by tag only");
    let refused = section(&body, "<table class=\"refused\">");
    assert!(refused.contains("192.0.2.44") && refused.contains("unknown key"));
    let tallies = section(&body, "<table class=\"tallies\">");
    let row = |key: &str, action: &str| -> String {
        let at = tallies
            .find(&format!("{key}</span></td><td><code>{action}</code>"))
            .unwrap_or_else(|| panic!("{key} {action} in {tallies}"));
        let start = tallies[..at].rfind("<tr").unwrap();
        let end = at + tallies[at..].find("</tr>").unwrap();
        tallies[start..end].to_owned()
    };
    let search = row("agent-kim", "search");
    assert!(search.starts_with("<tr class=\"flagged\""), "{search}");
    assert!(search.contains(">4</td>") && search.contains(">1.0</td>"));
    assert!(search.contains("badge flag above_3x"), "{search}");
    let views = row("agent-kim", "view_user");
    assert!(
        !views.contains("flagged") && !views.contains("badge flag"),
        "{views}"
    );
    let new = row("newcomer", "view_user");
    assert!(new.contains("badge flag new"), "{new}");
    let reads = row("shop-app", "api_read");
    assert!(
        reads.contains(">21</td>") && reads.contains(">10.0</td>"),
        "{reads}"
    );
    assert!(!reads.contains("badge flag"), "{reads}");
    assert!(
        tallies.find("agent-kim</span></td><td><code>search")
            < tallies.find("agent-kim</span></td><td><code>view_user")
    );
    assert!(
        body.contains("href=\"/console/review?month="),
        "previous months"
    );

    // The previous month: only its own rows.
    let previous = body
        .split("class=\"previous\" href=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .replace("&amp;", "&");
    let body = get(&app, &web, &previous, &auditor)
        .await
        .text()
        .await
        .unwrap();
    assert!(!body.contains("court order"), "no download last month");
    assert!(section(&body, "<table class=\"tallies\">").contains("agent-kim"));

    // The CSV: every part, formula cells neutralised.
    let res = get(&app, &web, "/console/review.csv", &auditor).await;
    assert_eq!(res.status(), 200);
    assert!(res.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    let text = res.text().await.unwrap();
    let mut csv = csv::Reader::from_reader(text.as_bytes());
    assert_eq!(
        csv.headers().unwrap().iter().collect::<Vec<_>>(),
        [
            "part",
            "at",
            "key_name",
            "action",
            "client_addr",
            "subject_tag",
            "target",
            "reason",
            "count",
            "mean_before",
            "flag"
        ]
    );
    let records: Vec<Vec<String>> = csv
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let find = |part: &str, key: &str, action: &str| {
        records
            .iter()
            .find(|r| r[0] == part && r[2] == key && r[3] == action)
            .unwrap_or_else(|| panic!("{part} {key} {action} in {text}"))
    };
    let formula = find("download", "agent-kim", "export_csv");
    assert_eq!(
        formula[7], "'=HYPERLINK(\"http://x\",\"refund\")",
        "neutralised"
    );
    assert_eq!(formula[5], tag.as_str());
    assert_eq!(formula[4], "203.0.113.5");
    assert_eq!(
        find("download", "shop-app", "api_export")[7],
        "court order 2026-117"
    );
    assert_eq!(
        find("sign_in_refused", "(no key)", "sign_in_refused")[6],
        "unknown key"
    );
    let search = find("tally", "agent-kim", "search");
    assert_eq!(
        (&search[8][..], &search[9][..], &search[10][..]),
        ("4", "1.0", "above_3x")
    );
    assert_eq!(find("tally", "newcomer", "view_user")[10], "new");
    assert_eq!(find("tally", "agent-kim", "view_user")[10], "");
    assert!(!text.contains(",=HYPERLINK"), "no formula cell: {text}");
}

/// The part of `body` from `start` to its table's end.
fn section<'a>(body: &'a str, start: &str) -> &'a str {
    let at = body
        .find(start)
        .unwrap_or_else(|| panic!("{start} in {body}"));
    let end = at + body[at..].find("</table>").unwrap();
    &body[at..end]
}

#[tokio::test]
async fn the_review_shows_at_most_500_downloads_says_how_many_more_and_escapes_reasons() {
    let (app, web) = spawn_review().await;
    app.db
        .client()
        .await
        .execute(
            "INSERT INTO access_log (class, action, key_name, reason, subject_tag) \
             SELECT 'access', 'api_export', 'bulk-app', '<script>alert(' || i || ')</script>', \
                    'tag-' || i FROM generate_series(1, 512) i",
            &[],
        )
        .await
        .unwrap();
    let auditor = session_of(&app, &web, AUDITOR_KEY).await;
    let res = get(&app, &web, "/console/review", &auditor).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    assert!(!body.contains("<script"), "reasons are text");
    let downloads = section(&body, "<table class=\"downloads\">");
    assert_eq!(
        downloads.matches("<tr>").count(),
        1 + 500,
        "a header and 500"
    );
    assert!(
        downloads.contains("&lt;script&gt;alert(512)&lt;/script&gt;"),
        "the newest"
    );
    let rest = &body[body.find("<table class=\"downloads\">").unwrap()..];
    assert!(
        rest.contains("<span class=\"not-shown\">12</span>"),
        "how many more: {rest}"
    );
    let csv = get(&app, &web, "/console/review.csv", &auditor)
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        csv.matches("\ndownload,").count(),
        512,
        "the CSV holds them all"
    );
}
