//! Hostile bytes in Kollus's play and DRM callbacks, as an attacker or a broken player sends
//! them (issue 20): a NUL or invalid UTF-8 in any field we keep, sign or query by is a 400
//! naming the field, counted, with nothing recorded; never a 503 that pages an operator for a
//! database that is fine, never a 200 that stored something other than what was sent.

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{json, Value};

use crate::helpers::*;

impl TestApp {
    async fn raw_callback(&self, path: &str, body: String) -> reqwest::Response {
        self.client
            .post(format!(
                "{}/kollus/{path}?secret={PLAY_SECRET}",
                self.address
            ))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    async fn refused_invalid(&self, callback: &str) -> u64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let line = format!(
            "kollus_token_play_callbacks_refused_total{{callback=\"{callback}\",reason=\"invalid\"}} "
        );
        text.lines()
            .find_map(|l| l.strip_prefix(&line))
            .unwrap_or_else(|| panic!("no {line} in /metrics"))
            .parse()
            .unwrap()
    }

    async fn rows(&self, table: &str) -> i64 {
        self.db
            .client()
            .await
            .query_one(&format!("SELECT count(*) FROM {table}"), &[])
            .await
            .unwrap()
            .get(0)
    }
}

fn percent(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("%{b:02X}")).collect()
}

fn items_body(items: &Value) -> String {
    format!("items={}", percent(items.to_string().as_bytes()))
}

async fn problem_field(res: reqwest::Response) -> String {
    assert_eq!(res.status(), 400);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    problem["errors"][0]["field"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn nul_and_invalid_utf8_are_400_naming_the_field_counted_and_nothing_kept() {
    let app = spawn_app().await;
    let play = "kind=1&client_user_id=u1&media_content_key=m1";
    for (body, field) in [
        // PostgreSQL refuses NUL: this was a 503 "database not answering".
        (format!("{play}&player_id=p%00"), "player_id"),
        // This was stored with replacement characters.
        (
            "kind=1&client_user_id=u%c3%28&media_content_key=m1".to_owned(),
            "client_user_id",
        ),
        (format!("{play}&uservalues=%7B%7D%FF"), "uservalues"),
    ] {
        let res = app.raw_callback("play", body.clone()).await;
        assert_eq!(problem_field(res).await, field, "{body}");
    }
    assert_eq!(app.refused_invalid("play").await, 3);

    let item =
        json!({"kind": 2, "client_user_id": "u1", "media_content_key": "m1", "session_key": "s1"});
    for (name, value) in [("session_key", "s\u{0}1"), ("player_id", "p\u{0}")] {
        let mut hostile = item.clone();
        hostile[name] = json!(value);
        let res = app
            .raw_callback("drm", items_body(&json!([item, hostile])))
            .await;
        assert_eq!(problem_field(res).await, format!("items[1].{name}"));
    }
    let res = app.raw_callback("drm", "items=%5B%FF%5D".into()).await;
    assert_eq!(problem_field(res).await, "items");
    assert_eq!(app.refused_invalid("drm").await, 3);

    for table in ["playback_decisions", "drm_downloads"] {
        assert_eq!(app.rows(table).await, 0, "nothing recorded in {table}");
    }

    // What we ignore is read leniently: an odd device never costs a viewer playback.
    let res = app
        .raw_callback(
            "play",
            format!("{play}&player_id=p1&device_name=Gal%00axy%FF&hardware_id=%c3%28"),
        )
        .await;
    assert_eq!(res.status(), 200, "{:?}", res.text().await);
    assert_eq!(app.rows("playback_decisions").await, 1);
}

/// One decision row's kept text, the latest.
async fn latest_decision(app: &TestApp) -> (String, String, Option<String>, Option<String>) {
    let row = app
        .db
        .client()
        .await
        .query_one(
            "SELECT client_user_id, media_content_key, player_id, session_key \
             FROM playback_decisions ORDER BY id DESC LIMIT 1",
            &[],
        )
        .await
        .unwrap();
    (
        row.get("client_user_id"),
        row.get("media_content_key"),
        row.get("player_id"),
        row.get("session_key"),
    )
}

/// Characters that hurt: NUL, DEL, other C0 and C1 controls, what JSON and forms escape; then
/// ordinary text and any `char` at all. (`any::<String>()` is `\PC*`: it never makes a control
/// character, NUL included.)
fn hostile_char() -> impl Strategy<Value = char> {
    prop_oneof![
        3 => Just('\0'),
        1 => Just('\u{7f}'),
        3 => prop::sample::select(vec![
            '\u{1}', '\u{8}', '\t', '\n', '\r', '\u{1b}', '\u{1f}', '\u{80}', '\u{85}', '\u{9f}',
            '\u{a0}', '\u{2028}', '\u{feff}', '\u{fffd}', '"', '\\', '%', '&', '=', '+', ' ',
        ]),
        5 => prop::sample::select(('a'..='z').chain('0'..='9').collect::<Vec<_>>()),
        2 => any::<char>(),
    ]
}

/// Text for a JSON string: hostile characters, and text that looks like an escape (`%00`,
/// `\u0000`) and must stay the text it is.
fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        6 => hostile_char().prop_map(String::from),
        1 => prop::sample::select(vec!["%00", "%", "%G1", "%FF", "\\u0000", "%2500"])
            .prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

/// A form value as a hostile sender writes it: what goes on the wire, and the bytes it
/// decodes to. Percent-escaped bytes (NUL, DEL, C0 and C1 controls, invalid UTF-8: a lone
/// continuation byte, 0xFF, an overlong NUL, a surrogate, a truncated sequence), `+`, and
/// invalid escapes (`%`, `%4`, `%G1`), which stay the text they are. Every raw piece starts
/// with `%` or `+`, so no piece completes an escape its neighbour left open.
fn hostile_value() -> impl Strategy<Value = (String, Vec<u8>)> {
    let escaped = |bytes: Vec<u8>| -> (String, Vec<u8>) {
        (bytes.iter().map(|b| format!("%{b:02X}")).collect(), bytes)
    };
    let bytes = prop_oneof![
        3 => Just(vec![0u8]),
        1 => Just(vec![0x7f]),
        2 => prop::sample::select(vec![
            vec![0x01], vec![0x1f], vec![0x0a], vec![0xc2, 0x80], vec![0xc2, 0x85],
            vec![0xc2, 0x9f], vec![0x80], vec![0xff], vec![0xc0, 0x80], vec![0xed, 0xa0, 0x80],
            vec![0xc3, 0x28], vec![0xe2, 0x82],
        ]),
        5 => prop::sample::select(b"abcxyz0189-_.".to_vec()).prop_map(|b| vec![b]),
        1 => any::<u8>().prop_map(|b| vec![b]),
    ];
    let invalid_escape = prop::sample::select(vec![
        ("%", "%"),
        ("%4", "%4"),
        ("%G1", "%G1"),
        ("%zz", "%zz"),
        ("%%", "%%"),
        ("+", " "),
    ]);
    let piece = prop_oneof![
        4 => bytes.prop_map(escaped),
        1 => invalid_escape.prop_map(|(wire, decoded)| (wire.to_owned(), decoded.as_bytes().to_vec())),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| {
        pieces
            .into_iter()
            .fold((String::new(), Vec::new()), |(mut w, mut d), (pw, pd)| {
                w.push_str(&pw);
                d.extend(pd);
                (w, d)
            })
    })
}

/// What the play form and a DRM item keep, sign or query by: never taken with a NUL (the
/// test's own lists, so that a field dropped from the service's shows here).
const PLAY_KEPT: &[&str] = &[
    "kind",
    "client_user_id",
    "media_content_key",
    "player_id",
    "uservalues",
    "localtime",
];
const DRM_KEPT: &[&str] = &[
    "kind",
    "client_user_id",
    "media_content_key",
    "session_key",
    "player_id",
    "start_at",
];

/// Hostile bytes and invalid escapes in every field of the play form and hostile text (NUL,
/// DEL, C0 and C1 controls) in every field of a DRM item: never a 5xx, a NUL in a field we keep
/// always a 400 naming it, and a 200 only when what was recorded and answered is exactly what
/// was sent. Both answers are seen: the run counts its NUL refusals and its 200s.
#[test]
fn arbitrary_bytes_never_get_a_5xx_or_a_200_that_altered_them() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let app = rt.block_on(spawn_app());
    // A runner per property: a runner counts its successes across runs, so a second `run` on
    // the first's runner would run no case at all (as the DRM half once did).
    let runner = || {
        TestRunner::new(Config {
            cases: 64,
            ..Config::default()
        })
    };
    let play_fields = vec![
        "kind",
        "client_user_id",
        "media_content_key",
        "player_id",
        "device_name",
        "hardware_id",
        "uservalues",
        "localtime",
    ];
    let play_case = (
        prop::sample::select(play_fields),
        hostile_value(),
        prop::sample::select(vec![b'1', b'3']),
    );
    let (nul_refused, taken) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner()
        .run(&play_case, |(field, (wire, decoded), kind)| {
            let mut fields: Vec<(&str, String, Vec<u8>)> = vec![
                ("kind", (kind as char).to_string(), vec![kind]),
                ("client_user_id", "u1".into(), b"u1".to_vec()),
                ("media_content_key", "m1".into(), b"m1".to_vec()),
                ("player_id", "p1".into(), b"p1".to_vec()),
            ];
            match fields.iter_mut().find(|(n, _, _)| *n == field) {
                Some((_, w, d)) => (*w, *d) = (wire.clone(), decoded.clone()),
                None => fields.push((field, wire.clone(), decoded.clone())),
            }
            let body = fields
                .iter()
                .map(|(n, w, _)| format!("{n}={w}"))
                .collect::<Vec<_>>()
                .join("&");
            let sent = |name: &str| {
                fields
                    .iter()
                    .find(|(n, _, _)| *n == name)
                    .map(|(_, _, d)| d.clone())
            };
            let nul_kept = PLAY_KEPT.contains(&field) && decoded.contains(&0);
            rt.block_on(async {
                let res = app.raw_callback("play", body.clone()).await;
                let status = res.status().as_u16();
                prop_assert!(status < 500, "{body}: {status} {:?}", res.text().await);
                if nul_kept {
                    prop_assert_eq!(problem_field(res).await, field, "{}", body);
                    nul_refused.set(nul_refused.get() + 1);
                } else if status == 200 {
                    taken.set(taken.get() + 1);
                    let (user, media, player, _) = latest_decision(&app).await;
                    // Byte for byte: a lossy decoding would differ here.
                    prop_assert_eq!(Some(user.into_bytes()), sent("client_user_id"), "{}", body);
                    prop_assert_eq!(
                        Some(media.into_bytes()),
                        sent("media_content_key"),
                        "{}",
                        body
                    );
                    prop_assert_eq!(
                        player.map(String::into_bytes),
                        sent("player_id"),
                        "{}",
                        body
                    );
                }
                Ok(())
            })
        })
        .unwrap();
    assert!(
        nul_refused.get() > 0 && taken.get() > 0,
        "play: {} NUL refusals and {} callbacks taken: the generator must make both",
        nul_refused.get(),
        taken.get()
    );

    let drm_fields = vec![
        "kind",
        "client_user_id",
        "media_content_key",
        "session_key",
        "player_id",
        "start_at",
        "device_name",
        "hardware_id",
    ];
    let drm_case = (prop::sample::select(drm_fields), hostile_text(), 1..=3i64);
    let (nul_refused, taken) = (std::cell::Cell::new(0), std::cell::Cell::new(0));
    runner()
        .run(&drm_case, |(field, value, kind)| {
            let mut item = json!({"kind": kind, "client_user_id": "u1", "media_content_key": "m1",
                                  "session_key": "s1", "player_id": "p1", "start_at": 7});
            item[field] = Value::String(value.clone());
            let body = items_body(&json!([item]));
            let nul_kept = DRM_KEPT.contains(&field) && value.contains('\0');
            rt.block_on(async {
                let res = app.raw_callback("drm", body.clone()).await;
                let status = res.status().as_u16();
                prop_assert!(status < 500, "{item}: {status}");
                if nul_kept {
                    prop_assert_eq!(
                        problem_field(res).await,
                        format!("items[0].{field}"),
                        "{}",
                        item
                    );
                    nul_refused.set(nul_refused.get() + 1);
                } else if status == 200 {
                    taken.set(taken.get() + 1);
                    let token = res.text().await.unwrap();
                    let (_, claims) = verify_independently(&token, SECURITY_KEY);
                    let answered = &claims["data"][0];
                    prop_assert_eq!(&answered["media_content_key"], &item["media_content_key"]);
                    prop_assert_eq!(&answered["session_key"], &item["session_key"]);
                    let (user, media, player, session) = latest_decision(&app).await;
                    prop_assert_eq!(Some(user.as_str()), item["client_user_id"].as_str());
                    prop_assert_eq!(Some(media.as_str()), item["media_content_key"].as_str());
                    prop_assert_eq!(
                        player.as_deref(),
                        item["player_id"].as_str().filter(|p| !p.is_empty())
                    );
                    prop_assert_eq!(
                        session.as_deref(),
                        item["session_key"].as_str().filter(|s| !s.is_empty())
                    );
                }
                Ok(())
            })
        })
        .unwrap();
    assert!(
        nul_refused.get() > 0 && taken.get() > 0,
        "DRM: {} NUL refusals and {} callbacks taken: the generator must make both",
        nul_refused.get(),
        taken.get()
    );
}

/// Only a database that does not answer is a 503 (Kollus retries, an operator is paged); a
/// statement PostgreSQL refuses is our fault: a 500, the cause in the log.
#[tokio::test]
async fn a_statement_the_database_refuses_is_a_500_not_an_outage() {
    let app = spawn_app().await;
    app.db
        .client()
        .await
        .batch_execute("ALTER TABLE drm_downloads RENAME TO drm_downloads_gone")
        .await
        .unwrap();
    let res = app
        .raw_callback(
            "play",
            "kind=1&client_user_id=u1&media_content_key=m1".into(),
        )
        .await;
    assert_eq!(res.status(), 500);
    assert_eq!(res.headers()["content-type"], "application/problem+json");
    let problem: Value = res.json().await.unwrap();
    assert!(
        !problem["detail"]
            .as_str()
            .unwrap()
            .contains("drm_downloads"),
        "the cause stays in the log: {problem}"
    );
}

#[tokio::test]
async fn a_strict_catalog_check_the_database_refuses_is_a_500_too() {
    let app = spawn_app_with(|s| {
        s.strict_catalog = kollus_token_api::configuration::StrictCatalog::Require
    })
    .await;
    app.db
        .client()
        .await
        .batch_execute("ALTER VIEW media_playability RENAME TO media_playability_gone")
        .await
        .unwrap();
    let res = app
        .issue(
            APP_KEY,
            json!({"client_user_id": "u", "media": [{"media_content_key": "m1"}]}),
        )
        .await;
    assert_eq!(res.status(), 500);
    let problem: Value = res.json().await.unwrap();
    assert!(!problem["detail"]
        .as_str()
        .unwrap()
        .contains("media_playability"));
}
