//! A course's export, for the training institution that submits its learners' progress:
//! `GET /v1/courses/{course_id}/export`. The users are those an entitlement enrols in the course
//! (a course grant, or a channel grant for the course's `channel_key`), in force or not (each
//! answer's `enrolled` says which), in id order. JSON Lines: one line per user, the user's answer
//! in the course as `GET /v1/users/{id}/courses/{course_id}` gives it (with `type`
//! `user_course`); CSV (`Accept: text/csv`): a row per user and lesson ([`COURSE_CSV`]).
//!
//! Each user's answer is computed when its line is written (the courses' own computation, in
//! one read-only snapshot for the whole file), so memory stays flat however many users there
//! are; the export's slot, deadlines and cut are a user export's ([`super::stream`]). As every export,
//! it takes a `reason`, and the access record holds its `api_export` row (target
//! `course:<id>`) and a row per user listed before the first byte.

use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use anyhow::Context as _;
use kollus_common::domain::CourseId;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::mpsc;

use super::gate::{Admitted, Export};
use super::request::{admit_or_answer, format_of, reason_of, REASON_PARAM};
use super::sink::Sink;
use super::stream::{csv_line, neutralised, respond, settle, Format, APPLICATION_NAME};
use crate::access_log::record::{AccessLog, Action, Entry};
use crate::auth::{ApiScope, Caller};
use crate::courses::model::Course;
use crate::courses::progress::progress;
use crate::courses::{self, UserCourse};
use crate::problem::{invalid, not_recorded, ApiError};

/// The CSV's columns: a row per user and lesson. `lesson` is the lesson's place in the course,
/// from 1; `completed_at` is RFC 3339 in the course's time zone, empty until the course is
/// complete.
pub const COURSE_CSV: &[&str] = &[
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
];

#[utoipa::path(
    get,
    path = "/v1/courses/{course_id}/export",
    operation_id = "exportCourse",
    summary = "Every enrolled user's progress in a course, for the training institution",
    description = "The users a course grant or a channel grant for the course's channel enrols, in force or not (`enrolled` says which), in id order. JSON Lines (default): a `user_course` line per user, the answer of `GET /v1/users/{client_user_id}/courses/{course_id}`; with `Accept: text/csv`, a row per user and lesson: `client_user_id`, `course_id`, `lesson` (from 1), `media_content_key`, `recognised_seconds`, `lesson_seconds`, `lesson_progress_percent`, `lesson_complete`, `course_progress_percent`, `course_complete`, `completed_at` (RFC 3339 in the course's time zone, empty until complete), `enrolled`, `lesson_duration_known`. Each answer is computed as its line is written. Cut as a user's export is, at the same deadlines.",
    params(
        crate::params::CoursePath,
        ("reason" = String, Query, description = REASON_PARAM, min_length = 1, pattern = r"^[^\u0000-\u001f\u007f-\u009f]*[^\s\u0000-\u001f\u007f-\u009f][^\u0000-\u001f\u007f-\u009f]*$", max_length = 500)
    ),
    responses(
        (status = 200, description = "Streamed as it is computed; the access record holds the export (`api_export`, target `course:<id>`, and a row per user listed) before the first byte.", content((String = "application/x-ndjson"), (String = "text/csv"))),
        (status = 400, description = "An invalid course id, or no `reason`.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 404, description = "No such course.", body = crate::problem::Problem, content_type = "application/problem+json"),
        (status = 503, description = "Every export slot is streaming (`EXPORT_CONCURRENCY`; `Retry-After` says when to ask again), or PostgreSQL is not answering.", body = crate::problem::Problem, content_type = "application/problem+json", headers(("Retry-After" = u64, description = "Seconds to wait, when every slot is streaming."))),
        crate::problem::ExportKeyRefused
    ),
    security(("bearer" = ["export"]))
)]
pub async fn course(
    caller: Caller,
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<Export>,
    log: web::Data<AccessLog>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Export)?;
    let id = CourseId::parse(path.into_inner()).map_err(|e| invalid("course_id", e.to_string()))?;
    let reason = reason_of(&req, None)?;
    let format = format_of(&req);
    let admitted = match admit_or_answer(&state).await {
        Ok(admitted) => admitted,
        Err(answer) => return answer,
    };
    let unavailable = |e: anyhow::Error| {
        tracing::warn!(
            error = format!("{e:#}"),
            "course export: reading the course failed"
        );
        ApiError::Unavailable("PostgreSQL is not answering; retry".into())
    };
    let Some(course) = courses::store::get(&admitted.client, id.as_str())
        .await
        .map_err(unavailable)?
    else {
        return Err(ApiError::NotFound(format!(
            "there is no course {}",
            id.as_str()
        )));
    };
    let users = enrolled_users(
        &admitted.client,
        id.as_str(),
        course.rules.channel_key.as_deref(),
    )
    .await
    .map_err(unavailable)?;
    // A reason outlives an erasure in the access record: no listed user's id stays in it, as a
    // user export leaves out its user's.
    let reason = crate::access_log::record::redacted_all(&reason, users.iter().map(String::as_str));
    let target = format!("course:{}", id.as_str());
    let entry = Entry {
        client_addr: caller.client_addr(),
        target: Some(&target),
        reason: Some(&reason),
        ..Entry::new(Action::ApiExport, caller.name())
    };
    log.record(&**admitted.client, entry)
        .await
        .map_err(not_recorded)?;
    // Each user listed is a data subject of the export: a row per user, so the user's page
    // shows it too.
    let subjects = log
        .record_each(&**admitted.client, entry, &users)
        .await
        .map_err(not_recorded)?;
    tracing::info!(
        caller = caller.name(),
        course_id = id.as_str(),
        subjects,
        ?format,
        "course export"
    );
    state.metrics.exports.with_label_values(&["course"]).inc();
    Ok(stream_answers(&state, admitted, course, users, format))
}

/// The users an entitlement enrols in the course, in force or not, in id order.
async fn enrolled_users(
    client: &deadpool_postgres::Object,
    course_id: &str,
    channel_key: Option<&str>,
) -> anyhow::Result<Vec<String>> {
    client
        .query(
            "SELECT DISTINCT client_user_id FROM entitlements \
              WHERE (scope = 'course' AND target = $1) \
                 OR (scope = 'channel' AND target = $2) \
              ORDER BY client_user_id",
            &[&course_id, &channel_key],
        )
        .await
        .context("reading the users a course's export lists")?
        .iter()
        .map(|r| r.try_get(0).map_err(anyhow::Error::from))
        .collect()
}

/// Streams each user's answer as `format`, computed as it is written, on the admitted export's
/// connection, to the deadlines of every export. One read-only snapshot for the whole file (as
/// every export): the lessons' times are read once, then each user's sessions and enrolment;
/// each answer is the courses' own computation (`courses::progress`), as the API's.
fn stream_answers(
    export: &Export,
    admitted: Admitted,
    course: Course,
    users: Vec<String>,
    format: Format,
) -> HttpResponse {
    let (tx, rx) = mpsc::channel(4);
    let cut = Arc::new(AtomicBool::new(false));
    let cut_by_task = cut.clone();
    let settings = export.settings;
    let metrics = export.metrics.clone();
    tokio::spawn(async move {
        let Admitted { permit, mut client } = admitted;
        let ends_at = tokio::time::Instant::now() + settings.max_duration();
        let mut sink = Sink::new(tx, settings.chunk_deadline(), ends_at);
        let now = OffsetDateTime::now_utc();
        let result = tokio::time::timeout_at(ends_at, async {
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            tx.batch_execute(&format!(
                "{}; SET LOCAL application_name = '{APPLICATION_NAME}'",
                kollus_common::db::transaction_timeouts(
                    settings.statement_timeout(),
                    settings.idle_in_transaction(),
                )
            ))
            .await?;
            let id = course.course_id.as_str();
            // The course as this snapshot has it: one changed or deleted since the request
            // was admitted ends the export as a failure (an error line, a cut CSV), never a
            // file of old rules over new lessons, or of no lessons.
            match courses::store::get(&tx, id).await? {
                Some(now) if now.changed_at == course.changed_at => {}
                _ => anyhow::bail!("the course changed while its export started; ask again"),
            }
            let lessons = courses::store::lesson_times(&tx, id).await?;
            let today = courses::today(&course.rules.time_zone, now);
            if format == Format::Csv {
                sink.push(&csv_line(COURSE_CSV)?).await;
            }
            for user in &users {
                let sessions = courses::store::sessions(&tx, user, id).await?;
                let enrolled = courses::store::enrolled(&tx, user, &course, now).await?;
                let p = progress(&course.rules, &lessons, &sessions, today);
                let answer = UserCourse::new(user, &course, enrolled, p);
                let bytes = match format {
                    Format::Csv => csv_rows(&answer, &course.rules.time_zone)?,
                    Format::Ndjson => json_line(&answer)?,
                };
                if !sink.push(&bytes).await {
                    return Ok(());
                }
            }
            tx.commit().await?;
            anyhow::Ok(())
        })
        .await;
        settle(
            result,
            sink,
            client,
            permit,
            format,
            &settings,
            &metrics,
            &cut_by_task,
        )
        .await;
    });
    respond(rx, cut, format)
}

/// A user's answer as one JSON line, `type` `user_course`.
fn json_line(answer: &UserCourse) -> anyhow::Result<Vec<u8>> {
    let mut v = serde_json::to_value(answer)?;
    if let serde_json::Value::Object(m) = &mut v {
        m.insert("type".into(), "user_course".into());
    }
    let mut line = serde_json::to_vec(&v)?;
    line.push(b'\n');
    Ok(line)
}

/// A user's answer as CSV rows, one per lesson, in course order; `completed_at` in the course's
/// time zone `tz` with its offset (a 수료일 read off the date is the course's day).
fn csv_rows(a: &UserCourse, tz: &str) -> anyhow::Result<Vec<u8>> {
    let completed_at = match a.completed_at {
        Some(t) => match time_tz::timezones::get_by_name(tz) {
            Some(zone) => {
                use time_tz::OffsetDateTimeExt as _;
                t.to_timezone(zone).format(&Rfc3339)?
            }
            None => t.format(&Rfc3339)?,
        },
        None => String::new(),
    };
    let mut out = Vec::new();
    for (i, l) in a.lessons.iter().enumerate() {
        out.extend(csv_line([
            neutralised(a.client_user_id.clone()),
            neutralised(a.course_id.clone()),
            (i + 1).to_string(),
            neutralised(l.media_content_key.clone()),
            l.recognised_seconds.to_string(),
            l.lesson_seconds.to_string(),
            l.progress_percent.to_string(),
            l.complete.to_string(),
            a.progress_percent.to_string(),
            a.complete.to_string(),
            completed_at.clone(),
            a.enrolled.to_string(),
            l.duration_known.to_string(),
        ])?);
    }
    Ok(out)
}
