//! Courses (README "Courses"): their contract (create, replace, read, delete, every invalid
//! field named), enrolment by a course or channel grant, a course grant covering its lessons
//! when Kollus asks, and a user's answer computed from the sessions (the rules themselves, with
//! reports as Kollus sends them, are held by the end-to-end test `tests/e2e/courses.rs` and the
//! unit tests of `courses::progress`).

use serde_json::{json, Value};

use crate::helpers::*;

impl TestApp {
    async fn put_course(&self, id: &str, body: Value) -> reqwest::Response {
        self.client
            .put(format!("{}/v1/courses/{id}", self.address))
            .bearer_auth(APP_KEY)
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn get_as(&self, key: &str, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{path}", self.address))
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    async fn course_of(&self, user: &str, id: &str) -> Value {
        let res = self
            .get_as(APP_KEY, &format!("/v1/users/{user}/courses/{id}"))
            .await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    /// One session of `user` on `media`, as history-worker holds it.
    async fn session(
        &self,
        user: &str,
        media: &str,
        start_at: i64,
        showtime: i64,
        blocks: &[bool],
    ) {
        self.db
            .client()
            .await
            .execute(
                "INSERT INTO watch_sessions (client_user_id, media_content_key, start_at, \
                     showtime, playtime, block_count, blocks_played, first_report_at, \
                     last_report_at) \
                 VALUES ($1, $2, $3::bigint, $4::bigint, $4, $5, $6, to_timestamp($3::bigint), \
                         to_timestamp($3::bigint + $4::bigint))",
                &[
                    &user,
                    &media,
                    &start_at,
                    &showtime,
                    &(!blocks.is_empty()).then_some(blocks.len() as i32),
                    &blocks,
                ],
            )
            .await
            .unwrap();
    }

    async fn grant_to(&self, user: &str, scope: &str, key: &str) {
        let res = self
            .client
            .put(format!(
                "{}/v1/users/{user}/entitlements/{scope}/{key}",
                self.address
            ))
            .bearer_auth(APP_KEY)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{:?}", res.text().await);
    }

    async fn problem_fields(res: reqwest::Response) -> Vec<String> {
        assert_eq!(res.status(), 400);
        let p: Value = res.json().await.unwrap();
        p["errors"]
            .as_array()
            .unwrap_or_else(|| panic!("{p}"))
            .iter()
            .map(|e| e["field"].as_str().unwrap().to_owned())
            .collect()
    }
}

#[tokio::test]
async fn a_course_is_created_then_replaced_read_and_deleted_with_every_default_filled() {
    let app = spawn_app().await;
    let res = app
        .put_course(
            "safety-101",
            json!({"title": "산업안전 기초", "lessons": ["m1", {"media_content_key": "m2", "recognised_seconds": 1800}]}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    assert_eq!(created["course_id"], "safety-101");
    assert_eq!(
        created["lessons"],
        json!([{"media_content_key": "m1", "recognised_seconds": null},
               {"media_content_key": "m2", "recognised_seconds": 1800}])
    );
    assert_eq!(
        created["completion"],
        json!({"lesson_percent": 80, "course_percent": 80, "count": "showtime",
               "floor_percent": 50, "unlock_percent": 80})
    );
    assert_eq!(created["daily_limit_seconds"], Value::Null);
    assert_eq!(created["one_player_at_a_time"], false);
    assert_eq!(created["unlock_in_order"], false);
    assert_eq!(
        created["max_playback_rate"], 4.0,
        "HISTORY_MAX_PLAYBACK_RATE"
    );
    assert_eq!(created["time_zone"], "Asia/Seoul");
    assert_eq!(created["refund"], "academy");
    assert_eq!(created["channel_key"], Value::Null);
    assert_eq!(created["changed_by"], "app");

    let res = app
        .put_course(
            "safety-101",
            json!({"title": "t2", "lessons": ["m3"], "refund": {"table": [{"below_percent": 10, "refund_percent": 90}]},
                   "completion": {"count": "blocks"}, "daily_limit_seconds": 28800, "time_zone": "UTC"}),
        )
        .await;
    assert_eq!(res.status(), 200, "a replacement");
    let replaced: Value = res.json().await.unwrap();
    assert_eq!(replaced["created_at"], created["created_at"]);
    let read: Value = app
        .get_as(APP_KEY, "/v1/courses/safety-101")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(read, replaced, "what GET answers is what PUT stored");
    assert_eq!(
        read["lessons"],
        json!([{"media_content_key": "m3", "recognised_seconds": null}])
    );
    assert_eq!(read["completion"]["count"], "blocks");

    let delete = |id: &'static str| {
        let app = &app;
        async move {
            app.client
                .delete(format!("{}/v1/courses/{id}", app.address))
                .bearer_auth(APP_KEY)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(delete("safety-101").await, 204);
    assert_eq!(delete("safety-101").await, 404);
    assert_eq!(
        app.get_as(APP_KEY, "/v1/courses/safety-101").await.status(),
        404
    );
    let lessons: i64 = app
        .db
        .client()
        .await
        .query_one("SELECT count(*) FROM course_lessons", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(lessons, 0, "the lessons go with the course");

    // Each change is in the access record, with the key's name and the course.
    let changes: Vec<(String, String)> = app
        .db
        .client()
        .await
        .query(
            "SELECT key_name, target FROM access_log WHERE action = 'course_change' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert_eq!(
        changes,
        vec![("app".to_owned(), "course:safety-101".to_owned()); 3]
    );
    assert_eq!(
        app.metric("kollus_token_course_changes_total{action=\"create\"}")
            .await,
        1
    );
    assert_eq!(
        app.metric("kollus_token_course_changes_total{action=\"delete\"}")
            .await,
        1
    );
}

#[tokio::test]
async fn bad_courses_are_refused_naming_every_field_and_ids_are_checked() {
    let app = spawn_app().await;
    let fields = TestApp::problem_fields(
        app.put_course(
            "c1",
            json!({"title": "", "lessons": ["m1", "m1", {"media_content_key": "m2", "recognised_seconds": -5}],
                   "completion": {"course_percent": 0}, "refund": {"table": [{"below_percent": 50, "refund_percent": 10},
                   {"below_percent": 40, "refund_percent": 0}]}, "time_zone": "Seoul"}),
        )
        .await,
    )
    .await;
    assert_eq!(
        fields,
        [
            "title",
            "lessons[1]",
            "lessons[2].recognised_seconds",
            "completion.course_percent",
            "time_zone",
            "refund.table[1].below_percent"
        ]
    );
    assert_eq!(
        TestApp::problem_fields(
            app.put_course(
                "c1",
                json!({"title": "t", "lessons": ["m1"], "teacher": "kim"})
            )
            .await
        )
        .await,
        ["teacher"],
        "an unknown field is named"
    );
    assert_eq!(
        TestApp::problem_fields(
            app.put_course("a%20b", json!({"title": "t", "lessons": ["m1"]}))
                .await
        )
        .await,
        ["course_id"]
    );
    let too_long = "c".repeat(129);
    assert_eq!(
        app.put_course(&too_long, json!({"title": "t", "lessons": ["m1"]}))
            .await
            .status(),
        400
    );
    // Nothing was stored by a refused body.
    assert_eq!(app.get_as(APP_KEY, "/v1/courses/c1").await.status(), 404);
    // The scope: a read-only key may not write courses.
    let res = app
        .client
        .put(format!("{}/v1/courses/c1", app.address))
        .bearer_auth("nobody")
        .json(&json!({"title": "t", "lessons": ["m1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
}

#[tokio::test]
async fn a_users_course_answer_comes_from_the_sessions_and_is_zero_without_them() {
    let app = spawn_app().await;
    app.put_course(
        "c1",
        json!({"title": "t", "lessons": [{"media_content_key": "m1", "recognised_seconds": 1000},
                                           {"media_content_key": "m2", "recognised_seconds": 1000},
                                           "m3"],
               "unlock_in_order": true}),
    )
    .await;
    // An unknown course is the only 404; a user without data gets zeros.
    assert_eq!(
        app.get_as(APP_KEY, "/v1/users/u1/courses/nope")
            .await
            .status(),
        404
    );
    let empty = app.course_of("nobody", "c1").await;
    assert_eq!(empty["progress_percent"], 0);
    assert_eq!(empty["complete"], false);
    assert_eq!(empty["completed_at"], Value::Null);
    assert_eq!(empty["enrolled"], false);
    assert_eq!(empty["refund"]["first_play_at"], Value::Null);
    assert_eq!(
        empty["lessons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["unlocked"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [true, false, false]
    );

    // m1 complete, m2 at 70% with 10 of 10 blocks; m3 has no known duration.
    app.session("u1", "m1", 1_790_000_000, 1000, &[]).await;
    app.session("u1", "m2", 1_790_010_000, 700, &[true; 10])
        .await;
    app.session("u1", "m3", 1_790_020_000, 500, &[]).await;
    app.session("u1", "other", 1_790_020_000, 5000, &[]).await;
    let c = app.course_of("u1", "c1").await;
    let lessons = c["lessons"].as_array().unwrap();
    assert_eq!(lessons[0]["recognised_seconds"], 1000);
    assert_eq!(lessons[0]["complete"], true);
    assert_eq!(lessons[1]["recognised_seconds"], 700);
    assert_eq!(lessons[1]["progress_percent"], 70);
    assert_eq!(
        (
            lessons[1]["blocks_watched"].clone(),
            lessons[1]["block_count"].clone()
        ),
        (json!(10), json!(10))
    );
    assert_eq!(lessons[2]["duration_known"], false);
    assert_eq!(lessons[2]["lesson_seconds_from"], "unknown");
    assert_eq!(
        lessons
            .iter()
            .map(|l| l["unlocked"].as_bool().unwrap())
            .collect::<Vec<_>>(),
        [true, true, false],
        "m2 is below unlock_percent: m3 stays shut"
    );
    assert_eq!(c["progress_percent"], 85, "1700 of the 2000 s known");
    assert_eq!(c["durations_known"], false);
    assert_eq!(
        c["complete"], false,
        "m3's time is unknown: not complete yet"
    );
    assert_eq!(c["completed_at"], Value::Null);
    assert_eq!(c["lessons_complete"], 1);
    assert_eq!(c["refund"]["rule"], "academy");
    assert_eq!(c["refund"]["refund_share"], "none");
    assert_eq!(c["refund"]["course_percent_used"], 85);
    assert_eq!(c["refund"]["first_play_at"], "2026-09-21T14:13:20Z");

    // The catalog's duration gives m3 its time once known.
    app.catalog("m3", true, false).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE uploads SET duration_seconds = 1000 WHERE upload_file_key = \
             (SELECT upload_file_key FROM media_contents WHERE media_content_key = 'm3')",
            &[],
        )
        .await
        .unwrap();
    let c = app.course_of("u1", "c1").await;
    assert_eq!(c["lessons"][2]["lesson_seconds"], 1000);
    assert_eq!(c["lessons"][2]["lesson_seconds_from"], "catalog");
    assert_eq!(c["lessons"][2]["recognised_seconds"], 500);
    assert_eq!(c["progress_percent"], 73, "2200 of 3000, truncated");
    assert_eq!(c["durations_known"], true);
    assert_eq!(c["complete"], false);
    // A second viewing of m2 takes the course to 83%: complete when that session last reported.
    app.session("u1", "m2", 1_790_030_000, 300, &[true; 10])
        .await;
    let c = app.course_of("u1", "c1").await;
    assert_eq!(
        (c["progress_percent"].clone(), c["complete"].clone()),
        (json!(83), json!(true))
    );
    assert_eq!(
        c["completed_at"], "2026-09-21T22:38:20Z",
        "the second viewing's last report"
    );
    // A forged session marked unbound changes nothing, and is counted.
    app.session("u1", "m3", 1_790_040_000, 1000, &[]).await;
    app.db
        .client()
        .await
        .execute(
            "UPDATE watch_sessions SET bound = false WHERE start_at = 1790040000",
            &[],
        )
        .await
        .unwrap();
    let forged = app.course_of("u1", "c1").await;
    assert_eq!(forged["unbound_sessions"], 1);
    assert_eq!(forged["progress_percent"], 83);

    // Each answer counted a read of the user.
    let reads: i64 = app
        .db
        .client()
        .await
        .query_one(
            "SELECT coalesce(sum(count), 0)::bigint FROM access_log_reads WHERE key_name = 'app'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(reads >= 3, "reads counted: {reads}");
}

#[tokio::test]
async fn a_course_grant_enrols_and_covers_the_lessons_when_kollus_asks() {
    let app = spawn_app().await;
    app.put_course(
        "c1",
        json!({"title": "t", "lessons": ["m1", "m2"], "channel_key": "chan0001"}),
    )
    .await;
    app.put_course("c2", json!({"title": "t", "lessons": ["m2"]}))
        .await;
    app.grant_to("u1", "course", "c1").await;
    app.grant_to("u2", "channel", "chan0001").await;
    assert_eq!(app.course_of("u1", "c1").await["enrolled"], true);
    assert_eq!(
        app.course_of("u2", "c1").await["enrolled"],
        true,
        "by the course's channel"
    );
    assert_eq!(app.course_of("u1", "c2").await["enrolled"], false);

    let play = |user: &'static str, media: &'static str| {
        let app = &app;
        async move {
            let res = app
                .client
                .post(format!("{}/kollus/play?secret={PLAY_SECRET}", app.address))
                .form(&[
                    ("kind", "1"),
                    ("client_user_id", user),
                    ("media_content_key", media),
                ])
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 200);
            let body = res.text().await.unwrap();
            let payload = body.split('.').nth(1).unwrap();
            use base64::Engine as _;
            let claims: Value = serde_json::from_slice(
                &base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .decode(payload)
                    .unwrap(),
            )
            .unwrap();
            claims["data"]["result"].as_i64().unwrap()
        }
    };
    assert_eq!(play("u1", "m1").await, 1, "a lesson of c1");
    assert_eq!(play("u1", "m2").await, 1, "a lesson of c1 (and of c2)");
    assert_eq!(play("u1", "m9").await, 0, "no lesson of the course");
    let reason: String = app
        .db
        .client()
        .await
        .query_one(
            "SELECT scope || ':' || target FROM playback_decisions \
             WHERE client_user_id = 'u1' AND media_content_key = 'm1'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        reason, "course:c1",
        "the decision names the grant it rests on"
    );

    // The lesson leaves the course: the grant no longer covers it.
    app.put_course("c1", json!({"title": "t", "lessons": ["m2"]}))
        .await;
    assert_eq!(play("u1", "m1").await, 0);
    // Revoked: nothing covered, not enrolled.
    let res = app
        .client
        .delete(format!(
            "{}/v1/users/u1/entitlements/course/c1",
            app.address
        ))
        .bearer_auth(APP_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(play("u1", "m2").await, 0);
    assert_eq!(app.course_of("u1", "c1").await["enrolled"], false);
}
