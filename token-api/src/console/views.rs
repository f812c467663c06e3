//! The pages of the console: search, a user, a user and a video (the refund view), a video.
//! Every view of a user's data is recorded before it is shown.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use kollus_common::domain::{ClientUserId, MediaContentKey};
use serde::Deserialize;
use time::OffsetDateTime;

use super::pages;
use super::reply::{answer, frame, html, parse_media, parse_user, see_other, signed_in, Refusal};
use super::state::Console;
use super::store;
use crate::playback::policy::Reason;

#[derive(Deserialize)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// `GET /console/?q=`: a client user id (exact) or a media content key.
pub async fn search(
    req: HttpRequest,
    console: web::Data<Console>,
    query: web::Query<SearchQuery>,
) -> HttpResponse {
    let page = async {
        let agent = signed_in(&req, &console).await?;
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
        let client = console.pool.get().await.map_err(anyhow::Error::from)?;
        let user = match ClientUserId::parse(q) {
            Ok(u) if store::user_known(&client, u.as_str()).await? => Some(u.as_str().to_owned()),
            _ => None,
        };
        let media = match MediaContentKey::parse(q) {
            Ok(m) if store::media_known(&client, m.as_str()).await? => Some(m.as_str().to_owned()),
            _ => None,
        };
        // One match: go straight there.
        match (&user, &media) {
            (Some(u), None) => return Ok(see_other(&pages::user_href(u))),
            (None, Some(m)) => return Ok(see_other(&pages::media_href(m))),
            _ => {}
        }
        let found = pages::Found { user, media };
        Ok(html(
            &req,
            &console,
            StatusCode::OK,
            pages::search(&f, q, Some(&found)),
        ))
    }
    .await;
    answer(&req, &console, page)
}

/// `GET /console/users/{client_user_id}`: every video the user watched; the view is recorded.
pub async fn user(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
) -> HttpResponse {
    let page = async {
        let agent = signed_in(&req, &console).await?;
        let user = parse_user(path.into_inner())?;
        let client = console.pool.get().await.map_err(anyhow::Error::from)?;
        let sessions = store::user_sessions(&client, user.as_str()).await?;
        let entitlements = store::entitlements(&client, user.as_str()).await?;
        if sessions.is_empty() && entitlements.is_empty() {
            return Err(Refusal::NotFound(
                "이 사용자에 대해 가진 기록이 없습니다.",
                "We hold nothing about this user.",
            ));
        }
        store::record_view(&client, &agent.key_name, user.as_str(), None).await?;
        let views = store::views(&client, user.as_str()).await?;
        let f = frame(&req, &console, Some(&agent));
        let p = pages::UserPage {
            user: user.as_str(),
            sessions: &sessions,
            entitlements: &entitlements,
            views: &views,
            now: OffsetDateTime::now_utc(),
        };
        Ok(html(&req, &console, StatusCode::OK, pages::user(&f, &p)))
    }
    .await;
    answer(&req, &console, page)
}

/// `GET /console/users/{client_user_id}/media/{media_content_key}`: the refund view; the view
/// is recorded.
pub async fn refund(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<(String, String)>,
) -> HttpResponse {
    let page = async {
        let agent = signed_in(&req, &console).await?;
        let (user, media) = path.into_inner();
        let (user, media) = (parse_user(user)?, parse_media(media)?);
        let client = console.pool.get().await.map_err(anyhow::Error::from)?;
        let (u, m) = (user.as_str(), media.as_str());
        let sessions = store::user_media_sessions(&client, u, m).await?;
        let decisions = store::decisions(&client, u, m).await?;
        let changes = store::changes(&client, u, m).await?;
        if sessions.is_empty() && decisions.is_empty() && changes.is_empty() {
            return Err(Refusal::NotFound(
                "이 사용자와 영상에 대해 가진 기록이 없습니다.",
                "We hold nothing about this user and video.",
            ));
        }
        let name = match store::catalog_entry(&client, m).await? {
            Some((title, filename)) => title.or(filename).unwrap_or_default(),
            None => String::new(),
        };
        store::record_view(&client, &agent.key_name, u, Some(m)).await?;
        let views = store::views(&client, u).await?;
        let lang = console.message_lang;
        let message = move |label: &str| {
            Reason::ALL
                .iter()
                .find(|r| r.label() == label)
                .map(|r| r.message(lang))
                .unwrap_or("")
        };
        let f = frame(&req, &console, Some(&agent));
        let p = pages::RefundPage {
            user: u,
            media: m,
            name,
            sessions: &sessions,
            decisions: &decisions,
            changes: &changes,
            views: &views,
            message: &message,
        };
        Ok(html(&req, &console, StatusCode::OK, pages::refund(&f, &p)))
    }
    .await;
    answer(&req, &console, page)
}

/// `GET /console/media/{media_content_key}`: a video's viewers, completion and drop-off (no
/// one user's data, so no audit row).
pub async fn video(
    req: HttpRequest,
    console: web::Data<Console>,
    path: web::Path<String>,
) -> HttpResponse {
    let page = async {
        let agent = signed_in(&req, &console).await?;
        let media = parse_media(path.into_inner())?;
        let client = console.pool.get().await.map_err(anyhow::Error::from)?;
        let catalog = store::catalog_entry(&client, media.as_str()).await?;
        let viewers = store::viewers(&client, media.as_str()).await?;
        if catalog.is_none() && viewers.is_empty() {
            return Err(Refusal::NotFound(
                "이 영상에 대해 가진 기록이 없습니다.",
                "We hold nothing about this video.",
            ));
        }
        let name = catalog
            .and_then(|(title, filename)| title.or(filename))
            .unwrap_or_default();
        let f = frame(&req, &console, Some(&agent));
        let p = pages::VideoPage {
            media: media.as_str(),
            name,
            viewers: &viewers,
        };
        Ok(html(&req, &console, StatusCode::OK, pages::video(&f, &p)))
    }
    .await;
    answer(&req, &console, page)
}
