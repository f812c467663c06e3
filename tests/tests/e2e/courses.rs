//! Courses judged as Korean online training is (README "Courses", SPEC.md section 8), end to
//! end: LMS reports shaped as Kollus's players send them (a `json_data` form field, numbers as
//! strings, cumulative counters, `b`/`t`/`p` blocks) go through ingest, the broker and
//! history-worker, and token-api answers each user's progress in a course from the sessions
//! that made. One user per rule: 2x speed, review past the end, the 50% floor, the blocks cap (and
//! a block Kollus marks played with 0%), the day boundary in Asia/Seoul, each refund threshold, a
//! video in two courses.

use std::collections::HashMap;

use kollus_test_support::eventually;
use serde_json::{json, Value};
use time::OffsetDateTime;

use crate::stack::*;

/// One report of a session as a player posts it: `json_data` holding the document, every number
/// a string. `blocks`: Kollus's `(b, t, p)` per block.
struct Report<'a> {
    /// Whether it comes from a player URL token-api made for its user, carrying that URL's
    /// `uservalue99` (README "Viewer binding"); false: forged by hand, without it.
    bound: bool,
    user: &'a str,
    media: &'a str,
    start_at: i64,
    duration: u64,
    playtime: u64,
    real_playtime: u64,
    showtime: u64,
    blocks: Vec<(u8, u64, u64)>,
}

impl Report<'_> {
    /// The form, with the binding of `bindings` (user to the MAC its player URL carries).
    fn form(&self, bindings: &HashMap<String, String>) -> Vec<u8> {
        let mut blocks = serde_json::Map::new();
        for (i, (b, t, p)) in self.blocks.iter().enumerate() {
            blocks.insert(format!("b{i}"), json!(b.to_string()));
            blocks.insert(format!("t{i}"), json!(t.to_string()));
            blocks.insert(format!("p{i}"), json!(p.to_string()));
        }
        let doc = json!({
            "user_info": {"client_user_id": self.user, "player_id": "kollus-player-1",
                          "device": "Windows", "os": "Windows 10", "host_name": "lms.example.com"},
            "content_info": {
                "media_content_key": self.media, "channel_key": "chan0001",
                "start_at": self.start_at.to_string(), "duration": self.duration.to_string(),
                "playtime": self.playtime.to_string(), "real_playtime": self.real_playtime.to_string(),
                "runtime": (self.showtime + 10).to_string(), "showtime": self.showtime.to_string(),
                "playtime_percent": (self.playtime * 100 / self.duration.max(1)).to_string(),
                "last_play_at": self.real_playtime.min(self.duration).to_string()
            },
            "block_info": {"block_count": self.blocks.len().to_string(), "blocks": blocks},
            "uservalues": if self.bound {
                json!({"uservalue99": bindings.get(self.user).unwrap_or_else(|| panic!("no player URL for {}", self.user))})
            } else {
                json!({})
            }
        });
        form_urlencoded::Serializer::new(String::new())
            .append_pair("json_data", &doc.to_string())
            .finish()
            .into_bytes()
    }
}

/// A session's report at normal speed with `showtime` seconds shown and no blocks.
fn plain<'a>(
    user: &'a str,
    media: &'a str,
    start_at: i64,
    duration: u64,
    showtime: u64,
) -> Report<'a> {
    Report {
        bound: true,
        user,
        media,
        start_at,
        duration,
        playtime: showtime,
        real_playtime: showtime.min(duration),
        showtime,
        blocks: Vec::new(),
    }
}

impl Stack {
    /// Asks token-api for a player URL for `user`, as the product app does; the binding it
    /// carries, which the player echoes in every report.
    async fn player_url_for(&self, user: &str) -> String {
        let res = self
            .http
            .post(format!("{}/v1/playback-tokens", self.token_api))
            .bearer_auth(API_KEY)
            .json(&json!({"client_user_id": user, "media": [{"media_content_key": "m-speed"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let body: Value = res.json().await.unwrap();
        let url = body["url"].as_str().unwrap();
        let mac = url
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("uservalue99="))
            .unwrap_or_else(|| panic!("no binding in {url}"));
        mac.to_owned()
    }

    async fn api(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.token_api))
            .bearer_auth(API_KEY);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.unwrap();
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    async fn course(&self, id: &str, body: Value) {
        let (status, answer) = self
            .api(
                reqwest::Method::PUT,
                &format!("/v1/courses/{id}"),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{answer}");
    }

    async fn progress(&self, user: &str, course: &str) -> Value {
        let (status, answer) = self
            .api(
                reqwest::Method::GET,
                &format!("/v1/users/{user}/courses/{course}"),
                None,
            )
            .await;
        assert_eq!(status, 200, "{answer}");
        answer
    }
}

/// Midnight in Seoul (UTC+9, no daylight saving) of the day `now` falls in there.
fn seoul_midnight(now: i64) -> i64 {
    let kst = now + 9 * 3600;
    kst - kst.rem_euclid(86_400) - 9 * 3600
}

#[tokio::test]
async fn courses_are_judged_from_reports_as_kollus_sends_them() {
    let stack = Stack::start().await;
    let now = OffsetDateTime::now_utc().unix_timestamp();
    let earlier = now - 20_000;
    let lesson =
        |key: &str, seconds: i64| json!({"media_content_key": key, "recognised_seconds": seconds});
    for (id, lessons, extra) in [
        ("c-speed", vec![lesson("m-speed", 1800)], json!({})),
        ("c-review", vec![lesson("m-review", 1800)], json!({})),
        ("c-floor", vec![lesson("m-floor", 1800)], json!({})),
        ("c-blocks", vec![lesson("m-blocks", 1800)], json!({})),
        (
            "c-day",
            vec![lesson("m-day", 1800)],
            json!({"time_zone": "Asia/Seoul"}),
        ),
        (
            "c-refund",
            vec![
                lesson("m-r1", 300),
                lesson("m-r2", 300),
                lesson("m-r3", 300),
            ],
            json!({"completion": {"floor_percent": 0}}),
        ),
        (
            "c-two-a",
            vec![lesson("m-shared", 600), lesson("m-a2", 600)],
            json!({}),
        ),
        ("c-two-b", vec![lesson("m-shared", 600)], json!({})),
    ] {
        let mut body = json!({"title": id, "lessons": lessons});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        stack.course(id, body).await;
    }

    let mut bindings = HashMap::new();
    for user in [
        "fast", "reviewer", "below", "at", "replayer", "skimmer", "night", "r-early", "r-third",
        "r-half", "both",
    ] {
        bindings.insert(user.to_owned(), stack.player_url_for(user).await);
    }
    let midnight = seoul_midnight(now);
    let mut reports = vec![
        // A 30-minute lesson watched at 2x in 15 minutes: two reports of one session, cumulative.
        Report {
            playtime: 600,
            real_playtime: 600,
            showtime: 300,
            ..plain("fast", "m-speed", earlier, 1800, 0)
        },
        Report {
            playtime: 1800,
            real_playtime: 1800,
            showtime: 900,
            ..plain("fast", "m-speed", earlier, 1800, 0)
        },
        // Watched twice, 25 minutes each: the second viewing is review past the lesson's time.
        plain("reviewer", "m-review", earlier, 1800, 1500),
        plain("reviewer", "m-review", earlier + 5000, 1800, 1500),
        // One second under the floor, and at it.
        plain("below", "m-floor", earlier, 1800, 899),
        plain("at", "m-floor", earlier, 1800, 900),
        // 30 minutes shown, all of it replaying 2 of 30 blocks.
        Report {
            blocks: (0..30)
                .map(|i| if i < 2 { (1, 900, 100) } else { (0, 0, 0) })
                .collect(),
            real_playtime: 120,
            ..plain("replayer", "m-blocks", earlier, 1800, 1800)
        },
        // Every block marked played with p=0 (as Kollus sends for a seek-through): watched.
        Report {
            blocks: (0..30).map(|_| (1, 60, 0)).collect(),
            ..plain("skimmer", "m-blocks", earlier, 1800, 1800)
        },
        // A session opened a second before midnight in Seoul, and one at midnight.
        plain("night", "m-day", midnight - 1, 1800, 60),
        plain("night", "m-day", midnight, 1800, 40),
        // Refund: 299, 300 (exactly 1/3) and 450 (exactly 1/2) of 900 seconds.
        plain("r-early", "m-r1", earlier, 300, 299),
        plain("r-third", "m-r1", earlier, 300, 300),
        plain("r-half", "m-r1", earlier, 300, 300),
        plain("r-half", "m-r2", earlier, 300, 150),
        // One video, two courses.
        plain("both", "m-shared", earlier, 600, 600),
        // A report forged for someone else (no binding): the victim's course is untouched.
        Report {
            bound: false,
            ..plain("victim", "m-review", earlier, 1800, 1800)
        },
    ];
    let posted = reports.len() as i64;
    for r in reports.drain(..) {
        assert_eq!(stack.callback("lms", r.form(&bindings)).await.status(), 200);
    }
    eventually("history-worker applied every report", SLACK, || async {
        (stack.applied_reports().await >= posted).then_some(())
    })
    .await;
    let dead: i64 = stack
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM watch_sessions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dead, 15, "every session applied, none dead-lettered");

    let lesson0 = |v: &Value| v["lessons"][0].clone();
    let fast = stack.progress("fast", "c-speed").await;
    assert_eq!(lesson0(&fast)["showtime_seconds"], 900);
    assert_eq!(
        lesson0(&fast)["recognised_seconds"],
        900,
        "real time, not 2x playtime"
    );
    assert_eq!(fast["progress_percent"], 50);

    let review = stack.progress("reviewer", "c-review").await;
    assert_eq!(lesson0(&review)["showtime_seconds"], 3000);
    assert_eq!(
        lesson0(&review)["recognised_seconds"],
        1800,
        "capped at the lesson's time"
    );
    assert_eq!(review["complete"], true);
    let second_last = OffsetDateTime::parse(
        review["completed_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    assert!(second_last <= OffsetDateTime::now_utc());

    assert_eq!(
        lesson0(&stack.progress("below", "c-floor").await)["recognised_seconds"],
        0
    );
    assert_eq!(
        lesson0(&stack.progress("at", "c-floor").await)["recognised_seconds"],
        900
    );

    let replayer = lesson0(&stack.progress("replayer", "c-blocks").await);
    assert_eq!(
        (
            replayer["blocks_watched"].clone(),
            replayer["block_count"].clone()
        ),
        (json!(2), json!(30))
    );
    assert_eq!(
        replayer["recognised_seconds"], 120,
        "2/30 of 1800: the blocks covered"
    );
    let skimmer = lesson0(&stack.progress("skimmer", "c-blocks").await);
    assert_eq!(
        skimmer["blocks_watched"], 30,
        "b=1 with p=0 is a played block"
    );
    assert_eq!(skimmer["recognised_seconds"], 1800);

    let night = stack.progress("night", "c-day").await;
    if seoul_midnight(OffsetDateTime::now_utc().unix_timestamp()) == midnight {
        assert_eq!(
            night["today_seconds"], 40,
            "the session opened before midnight was yesterday's"
        );
    } else {
        eprintln!("the day in Seoul changed during the test: today_seconds not checked");
    }

    let refund = |v: &Value| {
        (
            v["refund"]["refund_share"].as_str().unwrap().to_owned(),
            v["refund"]["course_percent_used"].clone(),
        )
    };
    assert_eq!(
        refund(&stack.progress("nobody", "c-refund").await),
        ("all".into(), json!(0)),
        "before the course starts"
    );
    assert_eq!(
        refund(&stack.progress("r-early", "c-refund").await),
        ("2/3".into(), json!(33))
    );
    assert_eq!(
        refund(&stack.progress("r-third", "c-refund").await),
        ("1/2".into(), json!(33)),
        "exactly 1/3 is past it"
    );
    assert_eq!(
        refund(&stack.progress("r-half", "c-refund").await),
        ("none".into(), json!(50))
    );

    let victim = stack.progress("victim", "c-review").await;
    assert_eq!(
        (
            victim["progress_percent"].clone(),
            victim["unbound_sessions"].clone()
        ),
        (json!(0), json!(1)),
        "a forged, unbound report completes nothing for its victim"
    );

    let a = stack.progress("both", "c-two-a").await;
    let b = stack.progress("both", "c-two-b").await;
    assert_eq!(
        (a["progress_percent"].clone(), a["complete"].clone()),
        (json!(50), json!(false))
    );
    assert_eq!(
        (b["progress_percent"].clone(), b["complete"].clone()),
        (json!(100), json!(true))
    );
}
