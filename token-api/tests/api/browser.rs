//! The support console end to end in a real browser: Debian's headless Chromium, driven over
//! WebDriver (its `chromedriver`) with fantoccini. Sign in through the form, search the seed
//! report's user, open the refund view, count the heatmap's cells and read the badges, fetch the
//! CSV link with the browser's session cookie, open the video's page, measure that a 300-block
//! strip and heatmap fit the page with every watched block drawn watched, and sign out. Each
//! view is saved as a PNG under `<target>/console-screenshots/`.
//!
//! `make test` installs `chromium` and `chromium-driver` when missing; without them this test
//! fails and says so.

use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::FutureExt;
use hyper_util::client::legacy::connect::HttpConnector;
use kollus_test_support::{eventually, fixture, free_port};
use kollus_token_api::auth::ApiKeys;
use reqwest::header::{CONTENT_TYPE, COOKIE};

use crate::helpers::*;

const SUPPORT_KEY: &str = "support-key-0123456789abcdef";
/// The seed report's user and video (`lms-seed.json`).
const USER: &str = "181353";
const MEDIA: &str = "mediacontentkey";
/// A user and video with 300 blocks, Kollus's `b{i}` = 1 with `p{i}` = 0 in one session.
const MARKED_USER: &str = "u-marked";
const MARKED_MEDIA: &str = "m-marked";
const MARKED_BLOCKS: usize = 300;
/// How long the browser may take to show a page.
const PAGE: Duration = Duration::from_secs(15);

/// `chromedriver` on a free loopback port, killed when dropped.
struct ChromeDriver {
    child: Child,
    url: String,
}

impl ChromeDriver {
    async fn start() -> Self {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "starting chromedriver: {e}. The browser test needs Debian's `chromium` and \
                     `chromium-driver`: `make test` installs them (or `apt-get install chromium \
                     chromium-driver`)"
                )
            });
        let driver = Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let status = format!("{}/status", driver.url);
        let http = reqwest::Client::new();
        eventually("chromedriver ready", Duration::from_secs(20), || async {
            let res = http.get(&status).send().await.ok()?;
            let body: serde_json::Value = res.json().await.ok()?;
            (body["value"]["ready"] == true).then_some(())
        })
        .await;
        driver
    }

    /// A new headless Chromium session with its own profile in `profile`.
    async fn browser(&self, profile: &std::path::Path) -> Client {
        let mut args = vec![
            "--headless=new".to_owned(),
            "--disable-gpu".to_owned(),
            "--disable-dev-shm-usage".to_owned(),
            "--window-size=1280,1100".to_owned(),
            format!("--user-data-dir={}", profile.display()),
        ];
        if is_root() {
            // Chromium refuses to run as root with its sandbox on.
            args.push("--no-sandbox".to_owned());
        }
        let mut options = serde_json::json!({ "args": args });
        if std::path::Path::new("/usr/bin/chromium").exists() {
            options["binary"] = "/usr/bin/chromium".into();
        }
        let mut caps = serde_json::Map::new();
        caps.insert("goog:chromeOptions".into(), options);
        ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await
            .expect("a Chromium session from chromedriver")
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `<target>/console-screenshots/`: the test binary is `<target>/debug/deps/api-…`, so this
/// follows `CARGO_TARGET_DIR`.
fn screenshot_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).expect("<target>/debug/deps/<test>");
    let dir = target.join("console-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

async fn screenshot(browser: &Client, name: &str) {
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{name}: a PNG");
    let path = screenshot_dir().join(format!("{name}.png"));
    std::fs::write(&path, png).unwrap();
    eprintln!("screenshot: {}", path.display());
}

async fn wait_for(browser: &Client, css: &str) -> fantoccini::elements::Element {
    browser
        .wait()
        .at_most(PAGE)
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("waiting for `{css}`: {e}"))
}

async fn count(browser: &Client, css: &str) -> usize {
    browser.find_all(Locator::Css(css)).await.unwrap().len()
}

/// The seed report's session as history-worker stores it (unsigned: the report has no hash),
/// and a second, verified session on the player's clock, for the badges.
async fn seed(app: &TestApp) -> Vec<i64> {
    let report: serde_json::Value = serde_json::from_slice(&fixture("lms-seed.json")).unwrap();
    let (user, content, blocks) = (
        &report["user_info"],
        &report["content_info"],
        &report["block_info"],
    );
    assert_eq!(user["client_user_id"], USER);
    assert_eq!(content["media_content_key"], MEDIA);
    let n = |v: &serde_json::Value| v.as_str().unwrap().parse::<i64>().unwrap();
    let block_count = n(&blocks["block_count"]);
    let percents: Vec<i64> = (0..block_count)
        .map(|i| n(&blocks["blocks"][format!("p{i}")]))
        .collect();
    let second: Vec<i64> = (0..block_count)
        .map(|i| if i < 4 { 100 } else { 0 })
        .collect();
    app.catalog(MEDIA, true, false).await;
    app.describe(MEDIA, "Seed course, lesson 1", false).await;
    let db = app.db.client().await;
    for (start_at, percents, verified, clock, device, os, segments) in [
        (
            n(&content["start_at"]),
            &percents,
            false,
            false,
            user["device"].as_str().unwrap(),
            user["os"].as_str().unwrap(),
            serde_json::json!([[21, 1025, 3], [22, 1030, 144], [25, 1217, 4]]),
        ),
        (
            n(&content["start_at"]) + 86_400,
            &second,
            true,
            true,
            "iPhone",
            "iOS",
            serde_json::json!([[0, 0, 195]]),
        ),
    ] {
        let played: Vec<bool> = percents.iter().map(|p| *p > 0).collect();
        db.execute(
            "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, device, os, \
                 player_id, playtime, real_playtime, runtime, block_count, blocks_played, \
                 block_percent, hash_verified, device_clock, first_report_at, last_report_at, \
                 duration, segments) \
             VALUES ($1, $2, $3, $4, $5, $6, 151, 151, 2245, $7, $8, $9, $10, $11, now(), now(), \
                 1461, $12)",
            &[
                &USER,
                &MEDIA,
                &start_at,
                &device,
                &os,
                &user["player_id"].as_str().unwrap(),
                &(block_count as i32),
                &played,
                percents,
                &verified,
                &clock,
                &segments,
            ],
        )
        .await
        .unwrap();
    }
    percents
}

/// [`MARKED_USER`]'s two sessions of [`MARKED_MEDIA`]: one whose every block Kollus marked
/// played without a percent (`b{i}` = 1, `p{i}` = 0), one that played 30% of block 1 alone.
async fn seed_marked(app: &TestApp) {
    let db = app.db.client().await;
    let none = vec![0i64; MARKED_BLOCKS];
    let mut some = none.clone();
    some[1] = 30;
    for (start_at, played, percent) in [
        (1_764_554_400i64, vec![true; MARKED_BLOCKS], &none),
        (1_764_640_800, vec![false; MARKED_BLOCKS], &some),
    ] {
        db.execute(
            "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, device, \
                 playtime, real_playtime, runtime, block_count, blocks_played, block_percent, \
                 first_report_at, last_report_at, duration, segments) \
             VALUES ($1, $2, $3, 'PC', 600, 600, 600, $4, $5, $6, now(), now(), 3000, '[]')",
            &[
                &MARKED_USER,
                &MARKED_MEDIA,
                &start_at,
                &(MARKED_BLOCKS as i32),
                &played,
                percent,
            ],
        )
        .await
        .unwrap();
    }
}

/// Each `svg` matching the selector laid out: its width, its right edge, its container's width,
/// and the page's viewport and scroll widths (a page wider than its viewport scrolls sideways).
const MEASURE: &str = "const out = []; \
    for (const s of document.querySelectorAll(arguments[0])) { \
      const r = s.getBoundingClientRect(); \
      const c = s.parentElement.getBoundingClientRect(); \
      out.push({ width: r.width, right: r.right, height: r.height, container: c.width }); } \
    const d = document.documentElement; \
    return { svgs: out, viewport: d.clientWidth, scroll: d.scrollWidth };";

/// The computed fill of each `rect` matching the selector, with its title.
const FILLS: &str = "return Array.from(document.querySelectorAll(arguments[0]), \
    r => [getComputedStyle(r).fill, r.querySelector('title').textContent]);";

/// Asserts every `svg` matching `css` is laid out no wider than its container and the viewport,
/// and the page does not scroll sideways.
async fn assert_fits(browser: &Client, css: &str) {
    let m = browser.execute(MEASURE, vec![css.into()]).await.unwrap();
    let svgs = m["svgs"].as_array().unwrap();
    assert!(!svgs.is_empty(), "{css}: {m}");
    let viewport = m["viewport"].as_f64().unwrap();
    for s in svgs {
        let f = |k: &str| s[k].as_f64().unwrap();
        assert!(f("width") > 0.0 && f("height") > 0.0, "{css} is drawn: {m}");
        assert!(
            f("width") <= f("container") + 0.5,
            "{css} within its container: {m}"
        );
        assert!(
            f("right") <= viewport + 0.5,
            "{css} within the viewport: {m}"
        );
    }
    assert!(
        m["scroll"].as_f64().unwrap() <= viewport,
        "the page does not scroll sideways: {m}"
    );
}

async fn fills(browser: &Client, css: &str) -> Vec<(String, String)> {
    let v = browser.execute(FILLS, vec![css.into()]).await.unwrap();
    serde_json::from_value(v).unwrap()
}

/// The 300-block user's page and refund view: the strip and the heatmap fit the page, and no
/// block Kollus calls watched is drawn in the unwatched class or its colour.
async fn marked_blocks(app: &TestApp, browser: &Client) {
    let base = &app.address;
    browser
        .goto(&format!(
            "{base}/console/users/{MARKED_USER}/media/{MARKED_MEDIA}"
        ))
        .await
        .unwrap();
    wait_for(browser, "section.accesses").await;
    assert_fits(browser, "svg.heatmap").await;
    let body = browser
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains(&format!("{MARKED_BLOCKS} / {MARKED_BLOCKS} blocks watched")),
        "{body}"
    );
    // Newest first: the 30% session's row (299 blocks it never played), then the marked one's.
    let cells = fills(browser, "svg.heatmap rect.cell, svg.heatmap rect.union").await;
    assert_eq!(cells.len(), 3 * MARKED_BLOCKS);
    let unwatched: Vec<&String> = cells
        .iter()
        .filter(|(_, t)| t.ends_with("not watched"))
        .map(|(fill, _)| fill)
        .collect();
    assert_eq!(unwatched.len(), MARKED_BLOCKS - 1, "{cells:?}");
    let grey = unwatched[0].clone();
    assert!(unwatched.iter().all(|f| **f == grey));
    let watched: Vec<_> = cells.iter().filter(|(fill, _)| *fill != grey).collect();
    assert_eq!(
        watched.len(),
        2 * MARKED_BLOCKS + 1,
        "the union row, the marked session's row and b1 of the other: {cells:?}"
    );
    assert!(watched.iter().all(|(_, t)| t.contains(": watched, ")));
    assert_eq!(
        count(browser, "svg.heatmap rect.unwatched").await,
        MARKED_BLOCKS - 1
    );
    screenshot(browser, "6-300-blocks-refund-view").await;

    browser
        .goto(&format!("{base}/console/users/{MARKED_USER}"))
        .await
        .unwrap();
    wait_for(browser, "section.accesses").await;
    assert_fits(browser, "table.videos svg.strip").await;
    let strip = fills(browser, "table.videos svg.strip rect.cell").await;
    assert_eq!(strip.len(), MARKED_BLOCKS);
    assert!(
        strip
            .iter()
            .all(|(fill, t)| *fill != grey && t.contains(": watched, ")),
        "{strip:?}"
    );
    assert_eq!(count(browser, "svg.strip rect.unwatched").await, 0);
    screenshot(browser, "7-300-blocks-user").await;
}

#[tokio::test]
async fn an_agent_signs_in_finds_the_seed_user_reads_the_refund_view_and_signs_out() {
    let app = spawn_app_with(|s| {
        s.api_keys =
            ApiKeys::parse(&format!("app:{APP_KEY},support[console]:{SUPPORT_KEY}")).unwrap();
        // Plain http on loopback, as `make run` serves it.
        s.console.insecure_cookie = true;
    })
    .await;
    let seed_percents = seed(&app).await;
    seed_marked(&app).await;
    seed_course(&app).await;
    let driver = ChromeDriver::start().await;
    let profile = tempfile::tempdir().unwrap();
    let browser = driver.browser(profile.path()).await;
    let outcome = AssertUnwindSafe(walk(&app, &browser, &seed_percents))
        .catch_unwind()
        .await;
    let _ = browser.close().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

async fn walk(app: &TestApp, browser: &Client, seed_percents: &[i64]) {
    let base = &app.address;
    let blocks = seed_percents.len();

    // Sign in through the form (in English: the language switch).
    browser
        .goto(&format!("{base}/console/login?lang=en"))
        .await
        .unwrap();
    let key = wait_for(browser, "input#key").await;
    screenshot(browser, "1-login").await;
    key.send_keys(SUPPORT_KEY).await.unwrap();
    browser
        .find(Locator::Css("main form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The search; an exact user id goes to the user's page.
    let q = wait_for(browser, "form.search input#q").await;
    assert_eq!(
        browser
            .find(Locator::Css("form.signout .who"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "support",
        "signed in as the key's name"
    );
    let source = browser.source().await.unwrap();
    assert!(!source.contains(SUPPORT_KEY), "the key is never in a page");
    screenshot(browser, "2-search").await;
    q.send_keys(USER).await.unwrap();
    browser
        .find(Locator::Css("form.search button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    // The user's page: one video, its coverage strip, the access list.
    let refund_link = wait_for(
        browser,
        &format!("table.videos a[href='/console/users/{USER}/media/{MEDIA}']"),
    )
    .await;
    // The access list closes the page: all of it is there.
    wait_for(browser, "section.accesses").await;
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        format!("/console/users/{USER}")
    );
    assert_eq!(count(browser, "table.videos tbody tr").await, 1);
    assert_eq!(
        count(browser, "table.videos svg.strip rect.cell").await,
        blocks
    );
    let body = browser
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(body.contains("Seed course, lesson 1"), "{body}");
    assert!(
        body.contains("Who accessed this user's data"),
        "the access list: {body}"
    );
    screenshot(browser, "3-user").await;
    refund_link.click().await.unwrap();

    // The refund view: sessions x blocks, the union row on top, the badges.
    wait_for(browser, "svg.heatmap").await;
    wait_for(browser, "section.accesses").await;
    assert_eq!(
        count(browser, "svg.heatmap rect.cell").await,
        2 * blocks,
        "a cell per session and block"
    );
    assert_eq!(
        count(browser, "svg.heatmap rect.union").await,
        blocks,
        "the union row"
    );
    let union_watched = (0..blocks)
        .filter(|&i| seed_percents[i] > 0 || i < 4)
        .count();
    let body = browser
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        body.contains(&format!("{union_watched} / {blocks} blocks watched")),
        "{body}"
    );
    assert_eq!(count(browser, "table.sessions tbody tr").await, 2);
    assert_eq!(count(browser, "table.sessions .badge.verified").await, 1);
    assert_eq!(count(browser, "table.sessions .badge.unsigned").await, 1);
    assert_eq!(
        count(browser, "table.sessions .badge.device-clock").await,
        1
    );
    assert_eq!(
        count(browser, "table.sessions svg.timeline rect.segment").await,
        4,
        "the played segments"
    );
    // The heatmap is drawn (laid out with a size), not only present in the markup.
    let (_, _, width, height) = browser
        .find(Locator::Css("svg.heatmap"))
        .await
        .unwrap()
        .rectangle()
        .await
        .unwrap();
    assert!(
        width >= (blocks * 12) as f64 && height > 0.0,
        "{width}x{height}"
    );
    screenshot(browser, "4-refund-view").await;

    // The downloads' form (a reason first), posted with the browser's session cookie and the
    // form's CSRF token.
    let csv_href = browser
        .find(Locator::Css("form.downloads"))
        .await
        .unwrap()
        .prop("action")
        .await
        .unwrap()
        .expect("the downloads' form has an action");
    assert_eq!(csv_href, format!("{base}/console/users/{USER}/export.csv"));
    let csrf = browser
        .find(Locator::Css("form.downloads input[name=csrf_token]"))
        .await
        .unwrap()
        .attr("value")
        .await
        .unwrap()
        .expect("the form's CSRF token");
    let session = browser.get_named_cookie("console_session").await.unwrap();
    let cookie = format!("console_session={}", session.value());
    let res = reqwest::Client::new()
        .post(&csv_href)
        .header(COOKIE, &cookie)
        .form(&[("csrf_token", csrf.as_str()), ("reason", "refund claim")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()[CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/csv"),
        "{:?}",
        res.headers()
    );
    let text = res.text().await.unwrap();
    let mut csv = csv::Reader::from_reader(text.as_bytes());
    let header = csv.headers().unwrap().clone();
    assert_eq!(&header[0], "client_user_id", "{text}");
    let media_at = header
        .iter()
        .position(|h| h == "media_content_key")
        .unwrap();
    let rows: Vec<csv::StringRecord> = csv.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 2, "the user's two sessions: {text}");
    for row in &rows {
        assert_eq!(&row[0], USER);
        assert_eq!(&row[media_at], MEDIA);
    }

    // The refund answer of the seed video's course opens the refund view, read as the agent
    // reads it (the seed's sessions carry no showtime: nothing recognised, 2/3 refunded).
    let answer = browser
        .find(Locator::Css(
            "section.course-answers p.refund-answer .answer",
        ))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        answer,
        "per policy `academy`: 2/3 refunded (course 0% complete: 0 m of 10 m recognised; \
         0 of 1 lessons complete; first play 2020-07-01)"
    );

    // The video's page.
    browser
        .find(Locator::Css(&format!(
            "p.subject a[href='/console/media/{MEDIA}']"
        )))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(browser, "svg.bars").await;
    assert_eq!(
        browser
            .find(Locator::Css(".viewers"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "1"
    );
    screenshot(browser, "5-video").await;

    marked_blocks(app, browser).await;

    // Sign out: the session is gone, and a protected page sends the browser to the sign-in.
    browser
        .find(Locator::Css("form.signout button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for(browser, "input#key").await;
    let sessions: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM console_sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sessions, 0, "sign-out deletes the session");
    browser
        .goto(&format!("{base}/console/users/{USER}"))
        .await
        .unwrap();
    wait_for(browser, "input#key").await;
    assert_eq!(
        browser.current_url().await.unwrap().path(),
        "/console/login"
    );
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
        .get(&csv_href)
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "the old cookie opens nothing");
}

/// A course of the seed video (10 minutes, refund `academy`) and the seed user's grant for it.
async fn seed_course(app: &TestApp) {
    let put = |path: String, body: serde_json::Value| {
        app.client
            .put(format!("{}{path}", app.address))
            .bearer_auth(APP_KEY)
            .json(&body)
            .send()
    };
    let res = put(
        "/v1/courses/seed-course".into(),
        serde_json::json!({
            "title": "Seed course",
            "lessons": [{"media_content_key": MEDIA, "recognised_seconds": 600}],
            "refund": "academy",
        }),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201);
    let res = put(
        format!("/v1/users/{USER}/entitlements/course/seed-course"),
        serde_json::json!({}),
    )
    .await
    .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
}
