//! Courses as Korean online training is judged (README "Courses", SPEC.md section 8): an ordered
//! list of lessons and the rules a course is judged by, and each user's progress, completion and
//! refund in it, computed from the watch sessions when asked (nothing per user is stored).
//!
//! `PUT /v1/courses/{course_id}` creates (201) or replaces (200), `GET` reads, `DELETE` removes
//! (scope `entitlements`; a change writes its `course_change` access-record row in its own
//! transaction). `GET /v1/users/{client_user_id}/courses/{course_id}` (scope `read`) answers a
//! user's progress and counts a read of the user. A user is enrolled by a course grant
//! (`PUT /v1/users/{id}/entitlements/course/{course_id}`) or a channel grant for the course's
//! `channel_key`; progress is answered enrolled or not.

use actix_web::{web, HttpResponse};
use deadpool_postgres::Pool;
use kollus_common::domain::{ClientUserId, CourseId};
use serde::Serialize;
use time::OffsetDateTime;
use time_tz::{OffsetDateTimeExt as _, PrimitiveDateTimeExt as _};

pub mod model;
pub mod progress;
pub mod store;

use self::model::{parse_body, Course};
use self::progress::{CourseProgress, Day, LessonProgress, RefundAnswer};
use crate::access_log::record::AccessLog;
use crate::auth::{ApiScope, Caller};
use crate::metrics::Metrics;
use crate::problem::{change_failed, db_error, invalid, not_recorded, ApiError};

/// What the course operations need, as their own `web::Data`.
pub struct Courses {
    pub pool: Pool,
    pub metrics: Metrics,
    /// A course's `max_playback_rate` when its body gives none (HISTORY_MAX_PLAYBACK_RATE).
    pub default_rate: f64,
}

const NOT_ANSWERING: &str = "the courses database is not answering; retry shortly";

const COURSE: &str = "/v1/courses/{course_id}";

fn course_id(s: &str) -> Result<CourseId, ApiError> {
    CourseId::parse(s).map_err(|e| invalid("course_id", e.to_string()))
}

fn read_error(e: anyhow::Error) -> ApiError {
    match e.downcast::<tokio_postgres::Error>() {
        Ok(e) => db_error(NOT_ANSWERING)(e),
        Err(e) => {
            tracing::error!(
                error = format!("{e:#}"),
                "a stored course does not read back"
            );
            ApiError::Unavailable("a stored course could not be read; see the logs".into())
        }
    }
}

#[utoipa::path(
    put,
    path = COURSE,
    operation_id = "putCourse",
    summary = "Create or replace a course",
    description = "The course's lessons (1 to 500 videos, in order, each once) and the rules it is judged by. Unknown fields are refused, naming them; every invalid field is named at once. The answer is the stored course with every default filled. A change is kept in the access record (`course_change`).",
    params(crate::params::CoursePath),
    request_body(content = model::CourseBody, content_type = "application/json"),
    responses(
        (status = 200, description = "Replaced.", body = Course, content_type = "application/json"),
        (status = 201, description = "Created.", body = Course, content_type = "application/json"),
        (status = 400, description = "An invalid field, named.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::EntitlementsKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["entitlements"]))
)]
pub async fn put(
    caller: Caller,
    path: web::Path<String>,
    body: web::Bytes,
    c: web::Data<Courses>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let id = course_id(&path.into_inner())?;
    let definition = parse_body(&body, c.default_rate)?;
    let mut client = c.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
    let change = store::Change {
        course_id: id.as_str(),
        by: caller.name(),
        at: OffsetDateTime::now_utc(),
        addr: caller.client_addr(),
    };
    let (created, course) = store::put(&mut client, &change, &definition, &log)
        .await
        .map_err(change_failed(NOT_ANSWERING))?;
    tracing::info!(
        caller = caller.name(),
        course_id = id.as_str(),
        lessons = course.lessons.len(),
        created,
        "course stored"
    );
    c.metrics
        .course_changes
        .with_label_values(&[if created { "create" } else { "replace" }])
        .inc();
    Ok(if created {
        HttpResponse::Created().json(course)
    } else {
        HttpResponse::Ok().json(course)
    })
}

#[utoipa::path(
    get,
    path = COURSE,
    operation_id = "getCourse",
    summary = "A course, as stored",
    params(crate::params::CoursePath),
    responses(
        (status = 200, description = "The course, every default filled.", body = Course, content_type = "application/json"),
        (status = 400, description = "An invalid course id.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such course.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::EntitlementsKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["entitlements"]))
)]
pub async fn get(
    caller: Caller,
    path: web::Path<String>,
    c: web::Data<Courses>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let id = course_id(&path.into_inner())?;
    let client = c.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
    match store::get(&client, id.as_str()).await.map_err(read_error)? {
        Some(course) => Ok(HttpResponse::Ok().json(course)),
        None => Err(no_course(&id)),
    }
}

fn no_course(id: &CourseId) -> ApiError {
    ApiError::NotFound(format!("there is no course {}", id.as_str()))
}

#[utoipa::path(
    delete,
    path = COURSE,
    operation_id = "deleteCourse",
    summary = "Delete a course",
    description = "The course and its lessons go; course grants stay in the user's entitlements, covering nothing (a course created again with the id is covered again). Kept in the access record (`course_change`).",
    params(crate::params::CoursePath),
    responses(
        (status = 204, description = "Deleted."),
        (status = 400, description = "An invalid course id.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such course.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::EntitlementsKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["entitlements"]))
)]
pub async fn delete(
    caller: Caller,
    path: web::Path<String>,
    c: web::Data<Courses>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Entitlements)?;
    let id = course_id(&path.into_inner())?;
    let mut client = c.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
    let change = store::Change {
        course_id: id.as_str(),
        by: caller.name(),
        at: OffsetDateTime::now_utc(),
        addr: caller.client_addr(),
    };
    if !store::delete(&mut client, &change, &log)
        .await
        .map_err(change_failed(NOT_ANSWERING))?
    {
        return Err(no_course(&id));
    }
    tracing::info!(
        caller = caller.name(),
        course_id = id.as_str(),
        "course deleted"
    );
    c.metrics
        .course_changes
        .with_label_values(&["delete"])
        .inc();
    Ok(HttpResponse::NoContent().finish())
}

/// A user's progress, completion and refund in a course.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UserCourse {
    pub client_user_id: String,
    pub course_id: String,
    pub title: String,
    /// A course grant or a channel grant for the course's channel is in force.
    pub enrolled: bool,
    /// In course order.
    pub lessons: Vec<LessonProgress>,
    /// floor(100 x the lessons' recognised seconds / their recognised times).
    #[schema(minimum = 0, maximum = 100)]
    pub progress_percent: i64,
    pub recognised_seconds: i64,
    /// The lessons' recognised times summed.
    pub course_seconds: i64,
    pub lessons_complete: usize,
    /// Every lesson's time is known: given, the catalog's, or from the user's own reports. While
    /// one is not, the course is not complete and its progress and refund are over the lessons
    /// whose time is known.
    pub durations_known: bool,
    /// progress_percent >= completion.course_percent, every lesson's time known.
    pub complete: bool,
    /// The largest `last_report_at` among the sessions the completion rests on.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub completed_at: Option<OffsetDateTime>,
    /// Showtime of the sessions that started today in the course's time zone.
    pub today_seconds: i64,
    /// The user's sessions on the lessons that count for nothing: a report in them did not come
    /// from a player URL made for this user (README "Viewer binding").
    pub unbound_sessions: usize,
    pub refund: RefundAnswer,
}

impl UserCourse {
    pub fn new(user: &str, course: &Course, enrolled: bool, p: CourseProgress) -> Self {
        Self {
            client_user_id: user.to_owned(),
            course_id: course.course_id.clone(),
            title: course.title.clone(),
            enrolled,
            lessons: p.lessons,
            progress_percent: p.progress_percent,
            recognised_seconds: p.recognised_seconds,
            course_seconds: p.course_seconds,
            lessons_complete: p.lessons_complete,
            durations_known: p.durations_known,
            complete: p.complete,
            completed_at: p.completed_at,
            today_seconds: p.today_seconds,
            unbound_sessions: p.unbound_sessions,
            refund: p.refund,
        }
    }
}

/// The day `now` falls in, in the IANA zone `tz` (UTC when the zone is unknown: a stored course's
/// zone was checked when it was written): from its midnight to the next.
pub fn today(tz: &str, now: OffsetDateTime) -> Day {
    let Some(zone) = time_tz::timezones::get_by_name(tz) else {
        let start = now.replace_time(time::Time::MIDNIGHT);
        return (start.unix_timestamp(), start.unix_timestamp() + 86_400);
    };
    let date = now.to_timezone(zone).date();
    let midnight = |d: time::Date| {
        let m = time::PrimitiveDateTime::new(d, time::Time::MIDNIGHT);
        m.assume_timezone(zone)
            .take_first()
            .unwrap_or_else(|| m.assume_timezone_utc(zone))
            .unix_timestamp()
    };
    let next = date.next_day().unwrap_or(date);
    (midnight(date), midnight(next))
}

/// The user's answer in the course, read in one snapshot: the course, the lessons' times, the
/// user's sessions and enrolment. `None` for an unknown course.
pub async fn user_course(
    client: &mut deadpool_postgres::Client,
    user: &str,
    id: &str,
    now: OffsetDateTime,
) -> anyhow::Result<Option<UserCourse>> {
    let tx = client
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let Some(course) = store::get(&tx, id).await? else {
        return Ok(None);
    };
    let lessons = store::lesson_times(&tx, id).await?;
    let sessions = store::sessions(&tx, user, id).await?;
    let enrolled = store::enrolled(&tx, user, &course, now).await?;
    tx.commit().await?;
    let p = progress::progress(
        &course.rules,
        &lessons,
        &sessions,
        today(&course.rules.time_zone, now),
    );
    Ok(Some(UserCourse::new(user, &course, enrolled, p)))
}

#[utoipa::path(
    get,
    path = "/v1/users/{client_user_id}/courses/{course_id}",
    operation_id = "getUserCourse",
    summary = "A user's progress, completion and refund in a course",
    description = "Computed from the user's watch sessions on the course's lessons when asked (README \"Courses\"): per lesson the recognised seconds (real time: `showtime`, from the floor, capped at the lesson's time and at the share of its blocks ever played), its progress, completion and whether it is open; the course's progress (진도율), completion and when it was reached, today's time, and the refund its policy gives. A user without sessions gets zeros. Counts a read of the user in the access record.",
    params(crate::params::UserPath, crate::params::CoursePath),
    responses(
        (status = 200, description = "The user's answer in the course.", body = UserCourse, content_type = "application/json"),
        (status = 400, description = "An invalid id.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such course.", body = crate::problem::Problem, content_type = "application/problem+json"),
        crate::problem::ReadKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["read"]))
)]
pub async fn user(
    caller: Caller,
    path: web::Path<(String, String)>,
    c: web::Data<Courses>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Read)?;
    let (user, id) = path.into_inner();
    let user = ClientUserId::parse(user).map_err(|e| invalid("client_user_id", e.to_string()))?;
    let id = course_id(&id)?;
    let mut client = c.pool.get().await.map_err(db_error(NOT_ANSWERING))?;
    let answer = user_course(
        &mut client,
        user.as_str(),
        id.as_str(),
        OffsetDateTime::now_utc(),
    )
    .await
    .map_err(read_error)?
    .ok_or_else(|| no_course(&id))?;
    log.record_read(
        &**client,
        caller.name(),
        caller.client_addr(),
        user.as_str(),
    )
    .await
    .map_err(not_recorded)?;
    Ok(HttpResponse::Ok().json(answer))
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::today;

    #[test]
    fn today_runs_from_the_zones_midnight_to_the_next() {
        // 07:00 in Seoul is 22:00 UTC the day before.
        let (from, to) = today("Asia/Seoul", datetime!(2026-12-06 22:00 UTC));
        assert_eq!(from, datetime!(2026-12-06 15:00 UTC).unix_timestamp());
        assert_eq!(to - from, 86_400);
        // A day of 23 hours where the clocks go forward.
        let (from, to) = today("America/New_York", datetime!(2026-03-08 12:00 UTC));
        assert_eq!(from, datetime!(2026-03-08 05:00 UTC).unix_timestamp());
        assert_eq!(to - from, 23 * 3600);
        // A zone the course no longer names reads as UTC, never a panic.
        let (from, _) = today("Mars/Olympus", datetime!(2026-12-06 22:00 UTC));
        assert_eq!(from, datetime!(2026-12-06 00:00 UTC).unix_timestamp());
    }
}
