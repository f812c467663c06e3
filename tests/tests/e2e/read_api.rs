//! token-api's read API answering from what ingest, the broker and the workers applied.

use kollus_test_support::{eventually, fixture, openapi_mismatches};
use serde_json::{json, Value};

use crate::stack::*;

/// An LMS report (JSON, as players post it) for one moment of one session.
pub(crate) fn report(
    user: &str,
    media: &str,
    start_at: i64,
    playtime: u64,
    position: u64,
    blocks: &[bool],
) -> Vec<u8> {
    let mut b = serde_json::Map::new();
    for (i, played) in blocks.iter().enumerate() {
        b.insert(format!("b{i}"), json!(if *played { "1" } else { "0" }));
        b.insert(format!("t{i}"), json!(if *played { "10" } else { "0" }));
        b.insert(format!("p{i}"), json!(if *played { "100" } else { "0" }));
    }
    json!({
        "user_info": {"client_user_id": user, "player_id": "p", "device": "x86_64", "os": "MAC"},
        "content_info": {"media_content_key": media, "start_at": start_at.to_string(),
            // Repeats count in playtime, not in real_playtime: that never passes the duration.
            "duration": "100", "playtime": playtime.to_string(), "real_playtime": playtime.min(100).to_string(),
            "runtime": (playtime + 1).to_string(), "showtime": playtime.to_string(),
            "last_play_at": position.to_string(), "playtime_percent": playtime.to_string()},
        "block_info": {"block_count": blocks.len().to_string(), "blocks": b}
    })
    .to_string()
    .into_bytes()
}

impl Stack {
    pub(crate) async fn lms(&self, body: Vec<u8>) {
        let res = self
            .http
            .post(format!(
                "{}/kollus/lms?secret={LMS_CALLBACK_SECRET}",
                self.ingest
            ))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    /// The OpenAPI document token-api serves.
    async fn openapi(&self) -> Value {
        let res = self
            .http
            .get(format!("{}/openapi.json", self.token_api))
            .send()
            .await
            .unwrap();
        res.json().await.unwrap()
    }

    async fn read(&self, path: &str) -> (u16, Value) {
        let res = self
            .http
            .get(format!("{}{path}", self.token_api))
            .bearer_auth(API_KEY)
            .send()
            .await
            .unwrap();
        (res.status().as_u16(), res.json().await.unwrap())
    }
}

fn conforms(doc: &Value, schema: &str, body: &Value) {
    let m = openapi_mismatches(
        doc,
        &json!({"$ref": format!("#/components/schemas/{schema}")}),
        body,
    );
    assert!(m.is_empty(), "{schema}: {m:#?}\n{body}");
}

#[tokio::test]
async fn the_read_api_answers_from_what_the_pipeline_applied() {
    let stack = Stack::start().await;
    let day = 86_400;
    let t0 = 1_790_000_000; // 2026-09-21
                            // Five sessions on mA (a day apart), two reports each (the second one further along);
                            // two sessions on mB. Blocks: each session of mA plays a different one of five.
    for s in 0..5usize {
        let mut blocks = [false; 5];
        blocks[s] = true;
        let start = t0 + s as i64 * day;
        stack
            .lms(report("reader", "mA", start, 5, 5, &[false; 5]))
            .await;
        stack
            .lms(report(
                "reader",
                "mA",
                start,
                10 + s as u64,
                20 + s as u64,
                &blocks,
            ))
            .await;
    }
    for s in 0..2 {
        stack
            .lms(report(
                "reader",
                "mB",
                t0 + day / 2 + s * day,
                30,
                40,
                &[true, false],
            ))
            .await;
    }
    for (kind, file) in [("upload", "upload.form"), ("channel", "channel-join.form")] {
        assert_eq!(stack.callback(kind, fixture(file)).await.status(), 200);
    }
    let doc = stack.openapi().await;

    // Progress: once every report is applied.
    let progress = eventually("mA progress over 5 sessions", SLACK, || async {
        let (status, body) = stack.read("/v1/users/reader/media/mA/progress").await;
        (status == 200 && body["sessions"] == 5 && body["total_real_playtime"] == 60)
            .then_some(body)
    })
    .await;
    conforms(&doc, "Progress", &progress);
    assert_eq!(
        progress["resume_position"], 24,
        "the latest session's position"
    );
    assert_eq!(progress["total_playtime"], 10 + 11 + 12 + 13 + 14);
    assert_eq!(
        progress["blocks"],
        json!({"count": 5, "watched": 5, "share": 1.0, "watched_blocks": [0, 1, 2, 3, 4]}),
        "each session watched one block: together, all of them"
    );

    // History: all seven sessions, newest first, across pages of three.
    eventually("both mB sessions", SLACK, || async {
        let (_, body) = stack.read("/v1/users/reader/history?media=mB").await;
        (body["sessions"].as_array()?.len() == 2).then_some(())
    })
    .await;
    let mut starts = Vec::new();
    let mut path = "/v1/users/reader/history?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let (status, page) = stack.read(&path).await;
        assert_eq!(status, 200);
        conforms(&doc, "HistoryPage", &page);
        pages += 1;
        for s in page["sessions"].as_array().unwrap() {
            starts.push(s["start_at"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/users/reader/history?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let mut expected: Vec<i64> = (0..5)
        .map(|s| t0 + s * day)
        .chain((0..2).map(|s| t0 + day / 2 + s * day))
        .collect();
    expected.sort_unstable_by(|a, b| b.cmp(a));
    assert_eq!(starts, expected, "every session once, newest first");

    // A time window: sessions started on days 1 and 2 of mA (and mB's second, in between).
    let from = time::OffsetDateTime::from_unix_timestamp(t0 + day).unwrap();
    let to = time::OffsetDateTime::from_unix_timestamp(t0 + 3 * day).unwrap();
    let fmt = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap()
    };
    let (_, window) = stack
        .read(&format!(
            "/v1/users/reader/history?from={}&to={}",
            fmt(from),
            fmt(to)
        ))
        .await;
    let window: Vec<(String, i64, i64)> = window["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["media_content_key"].as_str().unwrap().to_owned(),
                s["start_at"].as_i64().unwrap(),
                s["real_playtime"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        window,
        [
            ("mA".into(), t0 + 2 * day, 12),
            ("mB".into(), t0 + day + day / 2, 30),
            ("mA".into(), t0 + day, 11)
        ]
    );

    // The catalog state of the video the channel callback named.
    let media = eventually("vnCVPVyV in the catalog", SLACK, || async {
        let (status, body) = stack.read("/v1/media/vnCVPVyV").await;
        (status == 200).then_some(body)
    })
    .await;
    conforms(&doc, "MediaState", &media);
    assert_eq!(media["playable"], true);
    assert_eq!(media["upload"]["upload_file_key"], "ufk-0001");
    assert_eq!(media["upload"]["filename"], "lecture-01.mp4");
    assert_eq!(media["channels"][0]["channel_key"], "ch-main");
    assert_eq!(media["channels"][0]["status"], "in");
    assert_eq!(
        media["channels"][0]["profile_keys"],
        json!(["pc-high", "mobile-low"])
    );
}

/// `fixtures/lms-query-string.url`, requested as the player would, with our secret added.
fn query_string_fixture() -> String {
    String::from_utf8(fixture("lms-query-string.url"))
        .unwrap()
        .trim_end()
        .to_owned()
}

#[tokio::test]
async fn real_installations_reports_reach_the_read_api_signed_segmented_and_flagged() {
    let stack = Stack::start().await;
    let doc = stack.openapi().await;
    // The Android player's signed report, twice (its timer fired again).
    for _ in 0..2 {
        let res = stack
            .callback("lms", fixture("lms-android-hash.form"))
            .await;
        assert_eq!(res.status(), 200);
    }
    let history = "/v1/users/fixture-user-7/history";
    let session = eventually("two signed reports applied", SLACK, || async {
        if stack.applied_reports().await < 2 {
            return None;
        }
        let (_, body) = stack.read(history).await;
        body["sessions"].get(0).cloned()
    })
    .await;
    assert_eq!(
        session["verified"], true,
        "every report carried a valid hash"
    );
    assert_eq!(session["device"], "starqltesq/SM-G960U");
    assert_eq!(
        session["segments"],
        json!([
            {"block": 21, "start_time": 0, "play_time": 3},
            {"block": 22, "start_time": 0, "play_time": 48},
            {"block": 23, "start_time": 0, "play_time": 48},
        ])
    );
    assert_eq!(session["device_clock"], false);

    // The same document through an ASP-style template: in the query string of a GET, unsigned.
    let res = stack
        .http
        .get(format!(
            "{}{}&secret={LMS_CALLBACK_SECRET}",
            stack.ingest,
            query_string_fixture()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let (_, page) = eventually("the unsigned report applied", SLACK, || async {
        if stack.applied_reports().await < 3 {
            return None;
        }
        Some(stack.read(history).await)
    })
    .await;
    conforms(&doc, "HistoryPage", &page);
    assert_eq!(
        page["sessions"][0]["verified"], false,
        "one unsigned report: the session no longer rests on signed reports only"
    );
    assert_eq!(
        page["sessions"][0]["playtime"], 596,
        "the same report, counted once"
    );

    // Offline playback on a device whose clock ran a day ahead: applied, flagged.
    let ahead = time::OffsetDateTime::now_utc().unix_timestamp() + 86_400;
    let offline = json!({
        "user_info": {"client_user_id": "fixture-user-7", "device": "starqltesq/SM-G960U"},
        "content_info": {"media_content_key": "fxOffl01", "start_at": ahead.to_string(),
                         "playtime": "300", "serial": "1"},
        "block_info": {"block_count": "0", "blocks": {},
                       "sessions": [{"block": 0, "start_time": 0, "play_time": 300}]},
    });
    stack.lms(offline.to_string().into_bytes()).await;
    let progress = eventually("the offline report applied", SLACK, || async {
        let (status, body) = stack
            .read("/v1/users/fixture-user-7/media/fxOffl01/progress")
            .await;
        (status == 200).then_some(body)
    })
    .await;
    conforms(&doc, "Progress", &progress);
    assert_eq!(progress["device_clock"], true);
    assert_eq!(progress["verified"], false, "a JSON body carries no hash");
    assert_eq!(progress["total_playtime"], 300);
    assert_eq!(
        progress["segments"],
        json!([{"block": 0, "start_time": 0, "play_time": 300}])
    );
}
