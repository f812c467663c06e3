//! Courses on the support console: a user's page lists the courses an entitlement enrols the
//! user in (in force or not) with progress, completion and the refund answer; the refund view
//! opens with the answer of each course listing the video; a course page for a user shows the
//! answer over its lessons; each view is recorded; a long list is cut and says so.

use reqwest::StatusCode;
use serde_json::json;

use crate::console::{get, sign_in, spawn_console};
use crate::course_export::{enrolled_course, BY_CHANNEL, BY_COURSE, CHANNEL, COURSE, NOT_ENROLLED};
use crate::helpers::*;

/// The answer of `BY_COURSE`: 10 of 30 minutes, lesson 1 of 3, first play 2026-11-02 in Seoul
/// (CONSOLE_TIME_ZONE's default).
const ANSWER_EN: &str = "per policy `academy`: 1/2 refunded (course 33% complete: 10 m of 30 m \
                         recognised; 1 of 3 lessons complete; first play 2026-11-02)";
const ANSWER_KO: &str = "정책 `academy`에 따라 1/2 환불 (과정 33% 진행: 인정 시간 30분 중 10분; \
                         차시 3개 중 1개 완료; 첫 재생 2026-11-02)";

/// `(action, target)` of the access record's console views, in order.
async fn views(app: &TestApp) -> Vec<(String, Option<String>)> {
    app.db
        .client()
        .await
        .query(
            "SELECT action, target FROM access_log \
              WHERE action IN ('view_user', 'view_refund') ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

#[tokio::test]
async fn a_users_courses_their_refund_answer_and_a_course_page() {
    let (app, web) = spawn_console().await;
    enrolled_course(&app).await;
    let cookie = sign_in(&app, &web).await;
    let course_page = format!("/console/users/{BY_COURSE}/courses/{COURSE}");

    // The user's page: the course, linked, with its progress, completion and answer.
    let page = get(&app, &web, &format!("/console/users/{BY_COURSE}"), &cookie).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("<section class=\"courses\">"), "{body}");
    assert!(body.contains(&format!("href=\"{course_page}\"")), "{body}");
    assert!(
        body.contains("Safety &lt;b&gt;101&lt;/b&gt;"),
        "the title, escaped"
    );
    assert!(body.contains("enrolled (grant in force)"), "{body}");
    assert!(body.contains("33%") && body.contains("1 / 3"), "{body}");
    assert!(body.contains("not complete"), "{body}");
    assert!(body.contains(ANSWER_EN), "{body}");

    // In Korean too.
    let page = web
        .get(format!("{}/console/users/{BY_COURSE}?lang=ko", app.address))
        .header(reqwest::header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert!(page.text().await.unwrap().contains(ANSWER_KO));

    // The refund view of a lesson opens with the answer, above the evidence.
    let refund = format!("/console/users/{BY_COURSE}/media/lesson-1");
    let page = get(&app, &web, &refund, &cookie).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    let answer = body.find(ANSWER_EN).expect("the answer on the refund view");
    let evidence = body.find("Watched per block").expect("the evidence");
    assert!(answer < evidence, "the answer first");
    assert!(body.contains(&format!("href=\"{course_page}\"")));

    // The course page: the answer, then each lesson with a link to its refund view.
    let page = get(&app, &web, &course_page, &cookie).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains(ANSWER_EN), "{body}");
    assert!(body.contains("<table class=\"lessons\">"), "{body}");
    for (n, lesson) in ["lesson-1", "lesson-2", "lesson-3"].iter().enumerate() {
        assert!(
            body.contains(&format!(
                "href=\"/console/users/{BY_COURSE}/media/{lesson}\""
            )),
            "lesson {n}: {body}"
        );
    }
    assert!(body.contains("0:10:00 / 0:10:00"), "lesson 1 whole: {body}");
    assert!(
        body.contains("0:00:00 / 0:10:00"),
        "lesson 2 below the floor"
    );

    // Every view recorded, the course page as a refund view of the course.
    assert_eq!(
        views(&app).await,
        [
            ("view_user".to_owned(), None),
            ("view_user".to_owned(), None),
            ("view_refund".to_owned(), Some("lesson-1".to_owned())),
            ("view_refund".to_owned(), Some(format!("course:{COURSE}"))),
        ]
    );

    // An unknown course is not found and records nothing; an invalid id is a 400.
    let before = views(&app).await.len();
    let page = get(
        &app,
        &web,
        &format!("/console/users/{BY_COURSE}/courses/no-such"),
        &cookie,
    )
    .await;
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    // A user we hold nothing about: not found either, never a page of zeros.
    let page = get(
        &app,
        &web,
        &format!("/console/users/never-seen-user/courses/{COURSE}"),
        &cookie,
    )
    .await;
    assert_eq!(page.status(), StatusCode::NOT_FOUND);
    let page = get(
        &app,
        &web,
        &format!("/console/users/{BY_COURSE}/courses/a%20b"),
        &cookie,
    )
    .await;
    assert_eq!(page.status(), StatusCode::BAD_REQUEST);
    assert_eq!(views(&app).await.len(), before);
}

#[tokio::test]
async fn a_grant_no_longer_in_force_is_said_and_a_long_list_is_cut() {
    let (app, web) = spawn_console().await;
    enrolled_course(&app).await;
    // 22 more courses of the channel: the user's channel grant enrols them all.
    for i in 0..22 {
        let res = app
            .client
            .put(format!("{}/v1/courses/more-{i:02}", app.address))
            .bearer_auth(APP_KEY)
            .json(&json!({"title": "More", "channel_key": CHANNEL, "lessons": ["lesson-1"]}))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
    }
    app.db
        .client()
        .await
        .execute(
            "UPDATE entitlements SET revoked_at = now(), revoked_by = 'shop' \
              WHERE client_user_id = $1",
            &[&BY_CHANNEL],
        )
        .await
        .unwrap();
    let cookie = sign_in(&app, &web).await;
    let page = get(&app, &web, &format!("/console/users/{BY_CHANNEL}"), &cookie).await;
    assert_eq!(page.status(), 200);
    let body = page.text().await.unwrap();
    assert!(body.contains("no grant in force"), "{body}");
    assert!(!body.contains("enrolled (grant in force)"), "{body}");
    assert_eq!(
        body.matches("class=\"course\" href=").count(),
        20,
        "a page of courses"
    );
    assert!(
        body.contains("<span class=\"courses-not-shown\">3</span>"),
        "{body}"
    );
    // The refund view lists each course of the video, cut the same way.
    let page = get(
        &app,
        &web,
        &format!("/console/users/{BY_CHANNEL}/media/lesson-1"),
        &cookie,
    )
    .await;
    let body = page.text().await.unwrap();
    assert_eq!(body.matches("<p class=\"refund-answer\">").count(), 20);
    assert!(body.contains("<span class=\"courses-not-shown\">3</span>"));
    // A user with no course: the page says so.
    let page = get(
        &app,
        &web,
        &format!("/console/users/{NOT_ENROLLED}"),
        &cookie,
    )
    .await;
    assert!(page.text().await.unwrap().contains("No course grant."));
}
