//! A course's export for the training institution (`GET /v1/courses/{course_id}/export`): a
//! JSON line per enrolled user, or a CSV row per user and lesson; a reason required, an
//! unknown course not found, the access record written before the first byte.

use kollus_common::subject::Subjects;
use serde_json::{json, Value};

use crate::helpers::*;

pub const COURSE: &str = "safety-101";
pub const CHANNEL: &str = "ch-safety";
/// Enrolled by a course grant: lesson 1 whole, lesson 2 below the floor (33%, academy: 1/2).
pub const BY_COURSE: &str = "learner-1";
/// Enrolled by a channel grant: 94%, complete (academy: none).
pub const BY_CHANNEL: &str = "learner-2";
/// Sessions on the lessons, but no grant: in no course's export.
pub const NOT_ENROLLED: &str = "learner-3";

/// The course (three lessons of 10 minutes, refund `academy`), two enrolled users and one who
/// is not, each with sessions as `watch_sessions` holds them (real time in `showtime`).
pub async fn enrolled_course(app: &TestApp) {
    let put = |path: String, body: Value| {
        app.client
            .put(format!("{}{path}", app.address))
            .bearer_auth(APP_KEY)
            .json(&body)
            .send()
    };
    let res = put(
        format!("/v1/courses/{COURSE}"),
        json!({
            "title": "Safety <b>101</b>",
            "channel_key": CHANNEL,
            "lessons": [
                {"media_content_key": "lesson-1", "recognised_seconds": 600},
                {"media_content_key": "lesson-2", "recognised_seconds": 600},
                {"media_content_key": "lesson-3", "recognised_seconds": 600},
            ],
            "refund": "academy",
        }),
    )
    .await
    .unwrap();
    assert_eq!(res.status(), 201, "{}", res.text().await.unwrap());
    let res = put(
        format!("/v1/users/{BY_COURSE}/entitlements/course/{COURSE}"),
        json!({}),
    )
    .await
    .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let res = put(
        format!("/v1/users/{BY_CHANNEL}/entitlements/channel/{CHANNEL}"),
        json!({}),
    )
    .await
    .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    // (user, lesson, start_at, showtime): 2026-11-02 in Seoul.
    for (user, lesson, start_at, showtime) in [
        (BY_COURSE, "lesson-1", 1_793_570_400i64, 600i64),
        (BY_COURSE, "lesson-2", 1_793_571_400, 120),
        (BY_CHANNEL, "lesson-1", 1_793_570_400, 600),
        (BY_CHANNEL, "lesson-2", 1_793_571_400, 600),
        (BY_CHANNEL, "lesson-3", 1_793_572_400, 500),
        (NOT_ENROLLED, "lesson-1", 1_793_570_400, 600),
    ] {
        app.db
            .client()
            .await
            .execute(
                "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, \
                     showtime, playtime, real_playtime, runtime, duration, first_report_at, \
                     last_report_at) \
                 VALUES ($1, $2, $3::bigint, $4::bigint, $4, $4, $4, 600, to_timestamp($3::bigint), \
                     to_timestamp($3::bigint + $4::bigint))",
                &[&user, &lesson, &start_at, &showtime],
            )
            .await
            .unwrap();
    }
}

async fn export(
    app: &TestApp,
    path: &str,
    accept: &str,
    reason: Option<&str>,
) -> reqwest::Response {
    let mut req = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(OPS_KEY)
        .header("accept", accept);
    if let Some(reason) = reason {
        req = req.query(&[("reason", reason)]);
    }
    req.send().await.unwrap()
}

fn subjects() -> Subjects {
    let files = &kollus_test_support::key_files().files;
    Subjects::from_files(&files[1].2, &files[2].2).unwrap()
}

/// `(subject_tag, target, reason)` of each `api_export` row, in order.
async fn export_rows(app: &TestApp) -> Vec<(Option<String>, Option<String>, Option<String>)> {
    app.db
        .client()
        .await
        .query(
            "SELECT subject_tag, target, reason FROM access_log \
              WHERE action = 'api_export' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
}

#[tokio::test]
async fn a_course_export_has_a_line_per_enrolled_user_or_a_row_per_user_and_lesson() {
    let app = spawn_app().await;
    enrolled_course(&app).await;
    let path = format!("/v1/courses/{COURSE}/export");

    let res = export(&app, &path, "application/x-ndjson", Some("ticket 77")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = res
        .text()
        .await
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{lines:#?}");
    let (one, two) = (&lines[0], &lines[1]);
    assert_eq!(one["type"], "user_course");
    assert_eq!(
        (&one["client_user_id"], &one["course_id"]),
        (&json!(BY_COURSE), &json!(COURSE))
    );
    assert_eq!(one["enrolled"], true);
    assert_eq!(one["progress_percent"], 33);
    assert_eq!(one["lessons_complete"], 1);
    assert_eq!(one["complete"], false);
    assert_eq!(one["completed_at"], Value::Null);
    assert_eq!(one["refund"]["refund_share"], "1/2");
    assert_eq!(
        one["lessons"][1]["recognised_seconds"], 0,
        "below the floor"
    );
    assert_eq!(two["client_user_id"], BY_CHANNEL);
    assert_eq!(two["progress_percent"], 94);
    assert_eq!(two["complete"], true);
    // The third lesson's session ends at its start + 500 s: the completion rests on it.
    assert_eq!(two["completed_at"], "2026-11-01T22:41:40Z");
    assert_eq!(two["refund"]["refund_share"], "none");

    let res = export(&app, &path, "text/csv", Some("ticket 78")).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv; charset=utf-8");
    let text = res.text().await.unwrap();
    let mut reader = csv::Reader::from_reader(text.as_bytes());
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        header,
        [
            "client_user_id",
            "course_id",
            "lesson",
            "media_content_key",
            "recognised_seconds",
            "lesson_seconds",
            "lesson_progress_percent",
            "lesson_complete",
            "course_progress_percent",
            "course_complete",
            "completed_at",
            "enrolled",
            "lesson_duration_known",
        ]
    );
    let rows: Vec<Vec<String>> = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    let row = |cells: &[&str]| cells.iter().map(|c| (*c).to_owned()).collect::<Vec<_>>();
    assert_eq!(
        rows,
        [
            row(&[
                BY_COURSE, COURSE, "1", "lesson-1", "600", "600", "100", "true", "33", "false", "",
                "true", "true"
            ]),
            row(&[
                BY_COURSE, COURSE, "2", "lesson-2", "0", "600", "0", "false", "33", "false", "",
                "true", "true"
            ]),
            row(&[
                BY_COURSE, COURSE, "3", "lesson-3", "0", "600", "0", "false", "33", "false", "",
                "true", "true"
            ]),
            row(&[
                BY_CHANNEL,
                COURSE,
                "1",
                "lesson-1",
                "600",
                "600",
                "100",
                "true",
                "94",
                "true",
                "2026-11-02T07:41:40+09:00",
                "true",
                "true"
            ]),
            row(&[
                BY_CHANNEL,
                COURSE,
                "2",
                "lesson-2",
                "600",
                "600",
                "100",
                "true",
                "94",
                "true",
                "2026-11-02T07:41:40+09:00",
                "true",
                "true"
            ]),
            row(&[
                BY_CHANNEL,
                COURSE,
                "3",
                "lesson-3",
                "500",
                "600",
                "83",
                "true",
                "94",
                "true",
                "2026-11-02T07:41:40+09:00",
                "true",
                "true"
            ]),
        ]
    );

    // The access record: per export, its row (target the course) and a row per user listed,
    // by tag; the user who is not enrolled is in none.
    let s = subjects();
    let tag = |u: &str| Some(s.tag(u).as_str().to_owned());
    let target = Some(format!("course:{COURSE}"));
    let mut expected = Vec::new();
    for reason in ["ticket 77", "ticket 78"] {
        let reason = Some(reason.to_owned());
        expected.push((None, target.clone(), reason.clone()));
        let mut listed = vec![
            (tag(BY_COURSE), target.clone(), reason.clone()),
            (tag(BY_CHANNEL), target.clone(), reason.clone()),
        ];
        listed.sort();
        expected.extend(listed);
    }
    let mut got = export_rows(&app).await;
    // A page's rows per user are written in one statement, in no order that matters.
    got[1..3].sort();
    got[4..6].sort();
    assert_eq!(got, expected);
    assert!(!got.iter().any(|r| r.0 == tag(NOT_ENROLLED)));
}

#[tokio::test]
async fn a_course_export_needs_a_reason_and_a_course() {
    let app = spawn_app().await;
    enrolled_course(&app).await;
    for reason in [None, Some(""), Some("  ")] {
        let res = export(
            &app,
            &format!("/v1/courses/{COURSE}/export"),
            "text/csv",
            reason,
        )
        .await;
        assert_eq!(res.status(), 400, "{reason:?}");
        let problem: Value = res.json().await.unwrap();
        assert_eq!(problem["errors"][0]["field"], "reason", "{problem}");
    }
    let res = export(
        &app,
        "/v1/courses/no-such-course/export",
        "text/csv",
        Some("ticket 1"),
    )
    .await;
    assert_eq!(res.status(), 404);
    let res = export(
        &app,
        "/v1/courses/a%20b/export",
        "text/csv",
        Some("ticket 1"),
    )
    .await;
    assert_eq!(res.status(), 400);
    assert!(
        export_rows(&app).await.is_empty(),
        "nothing exported, nothing recorded"
    );
    // No key, no export.
    let res = app
        .client
        .get(format!(
            "{}/v1/courses/{COURSE}/export?reason=x",
            app.address
        ))
        .bearer_auth("no-such-key")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

/// A reason outlives an erasure in the access record: no listed user's id stays in it (the
/// user who is not listed is not a subject of this export, and is left as written).
#[tokio::test]
async fn a_course_exports_reason_keeps_no_listed_users_id() {
    let app = spawn_app().await;
    enrolled_course(&app).await;
    let path = format!("/v1/courses/{COURSE}/export");
    let reason = format!(
        "dispute of {BY_COURSE} and {}, not {NOT_ENROLLED}",
        BY_CHANNEL.to_uppercase()
    );
    let res = export(&app, &path, "text/csv", Some(&reason)).await;
    assert_eq!(res.status(), 200);
    let _ = res.text().await.unwrap();
    let rows = export_rows(&app).await;
    assert_eq!(rows.len(), 3, "the export's row and one per listed user");
    for (_, _, kept) in rows {
        assert_eq!(
            kept.as_deref(),
            Some(format!("dispute of [user] and [user], not {NOT_ENROLLED}").as_str())
        );
    }

    // A video's export lists the video's viewers: none of their ids stays in its reason either.
    let res = export(&app, "/v1/media/lesson-1/export", "text/csv", Some(&reason)).await;
    assert_eq!(res.status(), 200);
    let _ = res.text().await.unwrap();
    let rows = export_rows(&app).await;
    let media_rows: Vec<_> = rows
        .iter()
        .filter(|(_, target, _)| target.as_deref() == Some("lesson-1"))
        .collect();
    assert!(!media_rows.is_empty());
    for (_, _, kept) in media_rows {
        assert!(
            !kept.as_deref().unwrap_or("").contains(BY_COURSE),
            "{kept:?}"
        );
    }
}
