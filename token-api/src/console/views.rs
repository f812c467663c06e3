//! The pages of the console: search, a user, a user and a video (the refund view), a user and a
//! course, a video. Every view of a user's data is recorded in the access record before it is
//! shown (`search`, `view_user`, `view_refund`, the course page a `view_refund` with target
//! `course:<id>`, each with the key's name, the session and the client's address); a
//! view that cannot be recorded is the error page. The video page shows sums over its viewers
//! and names none of them, so it writes no row.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest};
use kollus_common::domain::{ClientUserId, CourseId, MediaContentKey};
use serde::Deserialize;
use time::OffsetDateTime;

use super::courses::user_courses;
use super::model::{
    video_name, Found, RefundFacts, RefundModel, UserModel, VideoModel, VideoPage,
    SESSIONS_PER_PAGE, VIDEOS_PER_PAGE,
};
use super::pages;
use super::reply::{frame, html, parse_media, parse_user, see_other, Page, Refusal};
use super::session::Agent;
use super::state::Console;
use super::store;
use crate::access_log::record::{AccessLog, Action, Entry};
use crate::entitlements::model::Scope;
use crate::erasure::model as erasure_model;

/// An entry of `action` by `agent`, in its session, from the request's client.
pub fn entry<'a>(
    req: &HttpRequest,
    console: &Console,
    agent: &'a Agent,
    action: Action,
) -> Entry<'a> {
    Entry {
        session: Some(&agent.session_hash),
        client_addr: kollus_common::client_addr::of_request(req, &console.proxies),
        ..Entry::new(action, &agent.key_name)
    }
}

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `GET /console/?q=`: a client user id (exact) or a media content key.
pub async fn search(
    req: HttpRequest,
    console: web::Data<Console>,
    log: web::Data<AccessLog>,
    agent: web::ReqData<Agent>,
    query: web::Query<SearchQuery>,
) -> Page {
    let q = query.q.trim();
    let f = frame(&req, &console, Some(&agent));
    if q.is_empty() {
        return Ok(html(
            &req,
            &console,
            StatusCode::OK,
            pages::search(&f, "", None),
        ));
    }
    let client = console.pool.get().await?;
    let user = match ClientUserId::parse(q) {
        Ok(u) if store::user_known(&client, u.as_str()).await? => Some(u.as_str().to_owned()),
        _ => None,
    };
    let media = match MediaContentKey::parse(q) {
        Ok(m) if store::media_known(&client, m.as_str()).await? => Some(m.as_str().to_owned()),
        _ => None,
    };
    // The searched id is the subject whether or not we hold it (an id that is no user id at
    // all names no one: no subject); the target says whether a user was found.
    let searched = ClientUserId::parse(q).ok();
    log.record(
        &**client,
        Entry {
            subject: searched.as_ref().map(ClientUserId::as_str),
            target: Some(if user.is_some() { "found" } else { "not_found" }),
            ..entry(&req, &console, &agent, Action::Search)
        },
    )
    .await?;
    // One match: go straight there.
    match (&user, &media) {
        (Some(u), None) => return Ok(see_other(&pages::user_href(u))),
        (None, Some(m)) => return Ok(see_other(&pages::media_href(m))),
        _ => {}
    }
    // A user id we hold nothing of: erased? (by tag, from the receipts; nothing else is told)
    let erased_on = match (&user, &searched) {
        (None, Some(id)) => erasure_model::last_erased(&**client, &log.tag(id.as_str()))
            .await?
            .map(|at| {
                let d = at.to_offset(time::UtcOffset::UTC).date();
                format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
            }),
        _ => None,
    };
    let found = Found {
        user,
        media,
        erased_on,
    };
    Ok(html(
        &req,
        &console,
        StatusCode::OK,
        pages::search(&f, q, Some(&found)),
    ))
}

/// Where a page of a list starts: `?before=` a session's start (the refund view's older
/// sessions), `?after=` a media content key (a user's next videos). Other parameters (`lang`)
/// are the frame's.
#[derive(Deserialize)]
struct Cursor {
    before: Option<String>,
    after: Option<String>,
}

fn cursor(req: &HttpRequest) -> Result<Cursor, Refusal> {
    web::Query::<Cursor>::from_query(req.query_string())
        .map(web::Query::into_inner)
        .map_err(|e| Refusal::BadRequest(format!("the page's query: {e}")))
}

/// `GET /console/users/{client_user_id}[?after=]`: a page of the videos the user watched, each
/// summed in SQL; the view is recorded.
pub async fn user(
    req: HttpRequest,
    console: web::Data<Console>,
    log: web::Data<AccessLog>,
    agent: web::ReqData<Agent>,
    path: web::Path<String>,
) -> Page {
    let user = parse_user(path.into_inner())?;
    let after = cursor(&req)?.after.map(parse_media).transpose()?;
    let after = after.as_ref().map(MediaContentKey::as_str);
    let mut client = console.pool.get().await?;
    let u = user.as_str();
    let (videos, total, earlier) = store::user_videos(&client, u, after, VIDEOS_PER_PAGE).await?;
    let (entitlements, in_force) =
        store::entitlements_in_force(&client, u, store::GRANTS_PER_PAGE).await?;
    if videos.is_empty() && entitlements.is_empty() && !store::user_known(&client, u).await? {
        return Err(Refusal::NotFound(
            "이 사용자에 대해 가진 기록이 없습니다.",
            "We hold nothing about this user.",
        ));
    }
    let granted: Vec<&str> = entitlements
        .iter()
        .filter(|e| e.scope == Scope::Media)
        .map(|e| e.key.as_str())
        .collect();
    let playtime = store::user_playtime(&client, u, &granted).await?;
    log.record(
        &**client,
        Entry {
            subject: Some(u),
            ..entry(&req, &console, &agent, Action::ViewUser)
        },
    )
    .await?;
    let accesses = store::accesses(&client, &log.tag(u)).await?;
    let f = frame(&req, &console, Some(&agent));
    let now = OffsetDateTime::now_utc();
    let courses = user_courses(&mut client, u, None, now).await?;
    let page = VideoPage { total, earlier };
    let mut p = UserModel::new(u, &videos, &playtime, &entitlements, page, &accesses, now);
    // Against what the statement returned, not what the model kept of it at this process's
    // clock: a grant that expired in between is not one left out.
    p.grants_not_shown =
        in_force.saturating_sub(i64::try_from(entitlements.len()).unwrap_or(i64::MAX));
    Ok(html(
        &req,
        &console,
        StatusCode::OK,
        pages::user(&f, &p, &courses),
    ))
}

/// `GET /console/users/{client_user_id}/media/{media_content_key}[?before=]`: the refund view,
/// the union over every session above a page of sessions, newest first; the view is
/// recorded.
pub async fn refund(
    req: HttpRequest,
    console: web::Data<Console>,
    log: web::Data<AccessLog>,
    agent: web::ReqData<Agent>,
    path: web::Path<(String, String)>,
) -> Page {
    let (user, media) = path.into_inner();
    let (user, media) = (parse_user(user)?, parse_media(media)?);
    let before = cursor(&req)?
        .before
        .map(|b| {
            b.parse::<i64>().map_err(|_| {
                Refusal::BadRequest("before: a session's start_at (Unix seconds)".to_owned())
            })
        })
        .transpose()?;
    let mut client = console.pool.get().await?;
    let (u, m) = (user.as_str(), media.as_str());
    let summary = store::pair_summary(&client, u, m, before).await?;
    let sessions = store::user_media_sessions(&client, u, m, before, SESSIONS_PER_PAGE).await?;
    let decisions = store::decisions(&client, u, m).await?;
    let changes = store::changes(&client, u, m).await?;
    if summary.sessions == 0 && decisions.is_empty() && changes.is_empty() {
        return Err(Refusal::NotFound(
            "이 사용자와 영상에 대해 가진 기록이 없습니다.",
            "We hold nothing about this user and video.",
        ));
    }
    let name = store::catalog_entry(&client, m)
        .await?
        .map(|(title, filename)| video_name(title, filename))
        .unwrap_or_default();
    log.record(
        &**client,
        Entry {
            subject: Some(u),
            target: Some(m),
            ..entry(&req, &console, &agent, Action::ViewRefund)
        },
    )
    .await?;
    let accesses = store::accesses(&client, &log.tag(u)).await?;
    let courses = user_courses(&mut client, u, Some(m), OffsetDateTime::now_utc()).await?;
    let f = frame(&req, &console, Some(&agent));
    let p = RefundModel::new(RefundFacts {
        user: u,
        media: m,
        name,
        summary,
        sessions: &sessions,
        decisions: &decisions,
        changes: &changes,
        accesses: &accesses,
        message_lang: console.message_lang,
    });
    Ok(html(
        &req,
        &console,
        StatusCode::OK,
        pages::refund(&f, &p, &courses),
    ))
}

/// `GET /console/media/{media_content_key}`: a video's viewers, completion and drop-off, summed
/// in SQL: counts over its viewers, no one named, so no access-record row (a page that listed
/// viewers would record a `view_user` per viewer listed).
pub async fn video(
    req: HttpRequest,
    console: web::Data<Console>,
    agent: web::ReqData<Agent>,
    path: web::Path<String>,
) -> Page {
    let media = parse_media(path.into_inner())?;
    let client = console.pool.get().await?;
    let catalog = store::catalog_entry(&client, media.as_str()).await?;
    let audience = store::audience(&client, media.as_str()).await?;
    if catalog.is_none() && audience.viewers == 0 {
        return Err(Refusal::NotFound(
            "이 영상에 대해 가진 기록이 없습니다.",
            "We hold nothing about this video.",
        ));
    }
    let name = catalog
        .map(|(title, filename)| video_name(title, filename))
        .unwrap_or_default();
    let f = frame(&req, &console, Some(&agent));
    let p = VideoModel::new(media.as_str(), name, audience);
    Ok(html(&req, &console, StatusCode::OK, pages::video(&f, &p)))
}

/// `GET /console/users/{client_user_id}/courses/{course_id}`: the user's answer in a course (the
/// refund answer, then each lesson), computed as the API computes it; recorded as a refund view
/// with target `course:<id>`. An unknown course is not found and records nothing.
pub async fn course(
    req: HttpRequest,
    console: web::Data<Console>,
    log: web::Data<AccessLog>,
    agent: web::ReqData<Agent>,
    path: web::Path<(String, String)>,
) -> Page {
    let (user, course) = path.into_inner();
    let user = parse_user(user)?;
    let course =
        CourseId::parse(course).map_err(|e| Refusal::BadRequest(format!("course_id: {e}")))?;
    let mut client = console.pool.get().await?;
    let u = user.as_str();
    let Some(answer) =
        crate::courses::user_course(&mut client, u, course.as_str(), OffsetDateTime::now_utc())
            .await?
    else {
        return Err(Refusal::NotFound(
            "그런 과정이 없습니다.",
            "There is no such course.",
        ));
    };
    // A user we hold nothing about is not found, as on the user's page: no page of zeros, and
    // no access row naming a subject we never had.
    if !store::user_known(&client, u).await? {
        return Err(Refusal::NotFound(
            "이 사용자에 대해 가진 기록이 없습니다.",
            "We hold nothing about this user.",
        ));
    }
    let target = format!("course:{}", course.as_str());
    log.record(
        &**client,
        Entry {
            subject: Some(u),
            target: Some(&target),
            ..entry(&req, &console, &agent, Action::ViewRefund)
        },
    )
    .await?;
    let f = frame(&req, &console, Some(&agent));
    Ok(html(
        &req,
        &console,
        StatusCode::OK,
        pages::course(&f, &answer),
    ))
}
