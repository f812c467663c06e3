//! The console's pages, rendered with `maud` (compile-time templates; every value is escaped
//! unless marked otherwise, and nothing here marks it): the frame every page shares, sign-in,
//! search, a user, a user and a video (the refund view), and a video.

use maud::{html, Markup, DOCTYPE};
use time::OffsetDateTime;
use time_tz::{OffsetDateTimeExt as _, Tz};

use super::charts;
use super::i18n::UiLang;
use super::session::Agent;
use super::store::{Change, Decision, Session, Viewer, MAX_BLOCKS};
use crate::entitlements::model::Entitlement;

/// What every page knows: the language, who is signed in, where it is, the time zone.
pub struct Frame<'a> {
    pub lang: UiLang,
    pub agent: Option<&'a Agent>,
    /// The request's path, for the language switch's links.
    pub path: &'a str,
    pub tz: &'static Tz,
}

/// A path segment, percent-encoded: anything but unreserved characters.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

pub fn user_href(user: &str) -> String {
    format!("/console/users/{}", seg(user))
}

pub fn refund_href(user: &str, media: &str) -> String {
    format!("/console/users/{}/media/{}", seg(user), seg(media))
}

pub fn media_href(media: &str) -> String {
    format!("/console/media/{}", seg(media))
}

/// A time in the console's zone, with its offset.
pub fn local(t: OffsetDateTime, tz: &Tz) -> String {
    let t = t.to_timezone(tz);
    let (h, m, _) = t.offset().as_hms();
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02} {}{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        if h < 0 || m < 0 { '-' } else { '+' },
        h.abs(),
        m.abs()
    )
}

/// Seconds as `H:MM:SS`.
pub fn duration(seconds: i64) -> String {
    let s = seconds.max(0);
    format!("{}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
}

fn frame(f: &Frame, title: &str, body: Markup) -> Markup {
    let l = f.lang;
    html! {
        (DOCTYPE)
        html lang=(l.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (l.t("지원 콘솔", "Support console")) }
                link rel="stylesheet" href="/console/style.css";
            }
            body {
                header {
                    a class="home" href="/console/" { (l.t("지원 콘솔", "Support console")) }
                    nav class="lang" {
                        a href={ (f.path) "?lang=ko" } lang="ko" { "한국어" }
                        " · "
                        a href={ (f.path) "?lang=en" } lang="en" { "English" }
                    }
                    @if let Some(agent) = f.agent {
                        form class="signout" method="post" action="/console/logout" {
                            span class="who" { (agent.key_name) }
                            input type="hidden" name="csrf_token" value=(agent.csrf_token);
                            button type="submit" { (l.t("로그아웃", "Sign out")) }
                        }
                    }
                }
                main { h1 { (title) } (body) }
            }
        }
    }
}

pub fn login(f: &Frame, csrf: &str, error: Option<&str>) -> Markup {
    let l = f.lang;
    frame(
        f,
        l.t("로그인", "Sign in"),
        html! {
            @if let Some(e) = error { p class="error" { (e) } }
            form method="post" action="/console/login" {
                input type="hidden" name="csrf_token" value=(csrf);
                label for="key" { (l.t("console 권한이 있는 API 키", "An API key with the console scope")) }
                input id="key" type="password" name="key" autocomplete="off" required;
                button type="submit" { (l.t("로그인", "Sign in")) }
            }
        },
    )
}

/// What a search found.
pub struct Found {
    pub user: Option<String>,
    pub media: Option<String>,
}

pub fn search(f: &Frame, q: &str, found: Option<&Found>) -> Markup {
    let l = f.lang;
    frame(
        f,
        l.t("검색", "Search"),
        html! {
            form class="search" method="get" action="/console/" {
                label for="q" { (l.t("사용자 ID (정확히) 또는 미디어 콘텐츠 키", "Client user id (exact) or media content key")) }
                input id="q" type="search" name="q" value=(q) required;
                button type="submit" { (l.t("검색", "Search")) }
            }
            @if let Some(found) = found {
                ul class="results" {
                    @if let Some(u) = &found.user {
                        li { (l.t("사용자", "User")) ": " a href=(user_href(u)) { (u) } }
                    }
                    @if let Some(m) = &found.media {
                        li { (l.t("영상", "Video")) ": " a href=(media_href(m)) { (m) } }
                    }
                    @if found.user.is_none() && found.media.is_none() {
                        li class="none" { (l.t("찾은 것이 없습니다: ", "Nothing found for ")) (q) }
                    }
                }
            }
        },
    )
}

fn video_name(title: &Option<String>, filename: &Option<String>) -> String {
    title
        .clone()
        .or_else(|| filename.clone())
        .unwrap_or_default()
}

/// Per block, the most of it any session watched.
pub fn union(sessions: &[&Session]) -> Vec<i64> {
    let blocks = sessions.iter().map(|s| s.blocks()).max().unwrap_or(0);
    (0..blocks)
        .map(|i| sessions.iter().map(|s| s.percent(i)).max().unwrap_or(0))
        .collect()
}

pub struct UserPage<'a> {
    pub user: &'a str,
    pub sessions: &'a [Session],
    pub entitlements: &'a [Entitlement],
    pub views: &'a [(String, OffsetDateTime)],
    pub now: OffsetDateTime,
}

pub fn user(f: &Frame, p: &UserPage) -> Markup {
    let l = f.lang;
    // Sessions come ordered by video: one group per video.
    let mut videos: Vec<Vec<&Session>> = Vec::new();
    for s in p.sessions {
        match videos.last_mut() {
            Some(g) if g[0].media_content_key == s.media_content_key => g.push(s),
            _ => videos.push(vec![s]),
        }
    }
    let playtime_of = |media: &str| -> i64 {
        p.sessions
            .iter()
            .filter(|s| s.media_content_key == media)
            .map(|s| s.playtime)
            .sum()
    };
    html! {
        (frame(f, &format!("{} {}", l.t("사용자", "User"), p.user), html! {
            p class="subject" { (l.t("사용자 ID", "Client user id")) ": " code { (p.user) } }
            h2 { (l.t("시청한 영상", "Videos watched")) }
            @if videos.is_empty() { p { (l.t("시청 기록이 없습니다.", "No watch history.")) } }
            @else {
                table class="videos" {
                    thead { tr {
                        th { (l.t("영상", "Video")) }
                        th { (l.t("세션", "Sessions")) }
                        th { (l.t("총 재생 시간", "Total playtime")) }
                        th { (l.t("시청한 블록", "Blocks watched")) }
                        th { (l.t("처음 시청", "First watched")) }
                        th { (l.t("마지막 시청", "Last watched")) }
                        th { (l.t("구간", "Coverage")) }
                    } }
                    tbody {
                        @for g in &videos {
                            @let s0 = g[0];
                            @let cover = union(g);
                            @let watched = cover.iter().filter(|p| **p > 0).count();
                            @let first = g.iter().map(|s| s.start_at).min().unwrap_or(0);
                            @let last = g.iter().map(|s| s.last_report_at).max().unwrap_or(p.now);
                            tr {
                                td {
                                    a href=(refund_href(p.user, &s0.media_content_key)) { code { (s0.media_content_key) } }
                                    " " span class="title" { (video_name(&s0.title, &s0.filename)) }
                                    " " a class="small" href=(media_href(&s0.media_content_key)) { (l.t("영상 통계", "video")) }
                                }
                                td class="num" { (g.len()) }
                                td class="num" { (duration(g.iter().map(|s| s.playtime).sum())) }
                                td class="num" { (watched) " / " (cover.len()) }
                                td { (OffsetDateTime::from_unix_timestamp(first).map(|t| local(t, f.tz)).unwrap_or_default()) }
                                td { (local(last, f.tz)) }
                                td { (charts::coverage_strip(&cover, l.t("블록별 시청", "Watched per block"))) }
                            }
                        }
                    }
                }
            }
            h2 { (l.t("유효한 수강 권한", "Entitlements in force")) }
            @let in_force: Vec<&Entitlement> = p.entitlements.iter()
                .filter(|e| e.in_force_at(p.now)).collect();
            @if in_force.is_empty() { p { (l.t("없음", "None")) } }
            @else {
                table class="entitlements" {
                    thead { tr {
                        th { (l.t("범위", "Scope")) } th { (l.t("대상", "Target")) }
                        th { (l.t("만료", "Expires")) } th { (l.t("재생 한도", "Playtime limit")) }
                        th { (l.t("사용", "Used")) } th { (l.t("남음", "Left")) }
                        th { (l.t("부여", "Granted by")) }
                    } }
                    tbody {
                        @for e in &in_force {
                            @let used = (e.scope.as_str() == "media").then(|| playtime_of(&e.key));
                            tr {
                                td { (e.scope.as_str()) }
                                td { code { (e.key) } }
                                td { (e.expires_at.map(|t| local(t, f.tz)).unwrap_or_else(|| l.t("없음", "never").to_owned())) }
                                td { (e.playtime_limit_seconds.map(duration).unwrap_or_else(|| l.t("무제한", "unlimited").to_owned())) }
                                td { (used.map(duration).unwrap_or_else(|| l.t("영상마다", "per video").to_owned())) }
                                td { @if let (Some(limit), Some(u)) = (e.playtime_limit_seconds, used) { (duration(limit - u)) } @else { "-" } }
                                td { (e.granted_by) " " (local(e.granted_at, f.tz)) }
                            }
                        }
                    }
                }
            }
            (audit(f, p.views))
        }))
    }
}

fn audit(f: &Frame, views: &[(String, OffsetDateTime)]) -> Markup {
    let l = f.lang;
    html! {
        h2 { (l.t("이 사용자의 기록을 본 사람", "Who viewed this user's data")) }
        ul class="audit" {
            @for (who, when) in views {
                li { (l.t("열람: ", "viewed by ")) span class="who" { (who) } " " (l.t("시각 ", "at ")) (local(*when, f.tz)) }
            }
        }
    }
}

pub struct RefundPage<'a> {
    pub user: &'a str,
    pub media: &'a str,
    pub name: String,
    pub sessions: &'a [Session],
    pub decisions: &'a [Decision],
    pub changes: &'a [Change],
    pub views: &'a [(String, OffsetDateTime)],
    /// The message a refused viewer saw, by reason label.
    pub message: &'a dyn Fn(&str) -> &'static str,
}

pub fn refund(f: &Frame, p: &RefundPage) -> Markup {
    let l = f.lang;
    let all: Vec<&Session> = p.sessions.iter().collect();
    let cover = union(&all);
    let rows: Vec<(String, Vec<i64>)> = p
        .sessions
        .iter()
        .map(|s| {
            let start = OffsetDateTime::from_unix_timestamp(s.start_at)
                .map(|t| local(t, f.tz))
                .unwrap_or_else(|_| s.start_at.to_string());
            (start, (0..cover.len()).map(|i| s.percent(i)).collect())
        })
        .collect();
    let title = format!("{} · {}", p.user, p.media);
    html! {
        (frame(f, &title, html! {
            p class="subject" {
                (l.t("사용자", "User")) " " a href=(user_href(p.user)) { code { (p.user) } } " · "
                (l.t("영상", "Video")) " " a href=(media_href(p.media)) { code { (p.media) } } " " span class="title" { (p.name) }
            }
            p class="downloads" {
                (l.t("증거 내려받기: ", "Download the evidence: "))
                a href={ (user_href(p.user)) "/export.csv" } { "CSV" } " · "
                a href={ (user_href(p.user)) "/export.jsonl" } { "JSON Lines" }
            }
            h2 { (l.t("블록별 시청 (맨 위: 모든 세션의 합)", "Watched per block (top row: all sessions together)")) }
            @if p.sessions.is_empty() { p { (l.t("이 영상의 시청 기록이 없습니다.", "No watch history for this video.")) } }
            @else {
                p { (cover.iter().filter(|x| **x > 0).count()) " / " (cover.len()) " " (l.t("블록 시청", "blocks watched")) }
                (charts::heatmap(&cover, &rows, l.t("세션별, 블록별 시청 비율", "Percent of each block watched, per session")))
                table class="sessions" {
                    thead { tr {
                        th { "#" } th { (l.t("시작", "Start")) } th { (l.t("기기", "Device")) } th { "OS" }
                        th { (l.t("플레이어", "Player")) } th { (l.t("재생 시간", "Playtime")) }
                        th { (l.t("실제 재생 시간", "Real playtime")) } th { (l.t("실행 시간", "Runtime")) }
                        th { (l.t("재생 구간", "Played segments")) }
                        th { (l.t("표시", "Badges")) }
                    } }
                    tbody {
                        @for (i, s) in p.sessions.iter().enumerate() {
                            tr {
                                td class="num" { (i + 1) }
                                td { (rows[i].0) }
                                td { (s.device.as_deref().unwrap_or("-")) }
                                td { (s.os.as_deref().unwrap_or("-")) }
                                td { (s.player_id.as_deref().unwrap_or("-")) }
                                td class="num" { (duration(s.playtime)) }
                                td class="num" { (duration(s.real_playtime)) }
                                td class="num" { (duration(s.runtime)) }
                                td { (charts::timeline(&s.segments, s.duration, l.t("영상 위의 재생 구간", "Played segments on the video"))) }
                                td {
                                    @match s.hash_verified {
                                        Some(true) => span class="badge verified" { (l.t("서명 확인", "verified")) },
                                        Some(false) => span class="badge unsigned" { (l.t("서명 없음", "unsigned")) },
                                        None => span class="badge unchecked" { (l.t("확인 안 함", "unchecked")) },
                                    }
                                    @if s.bound == Some(false) {
                                        " " span class="badge unbound" title=(l.t("이 사용자용으로 발급한 플레이어 URL에서 오지 않은 보고가 있습니다", "A report did not come from a player URL issued for this user")) { (l.t("바인딩 없음", "unbound")) }
                                    }
                                    @if s.device_clock { " " span class="badge device-clock" { "device_clock" } }
                                }
                            }
                        }
                    }
                }
            }
            h2 { (l.t("재생·DRM 결정", "Play and DRM decisions")) }
            @if p.decisions.is_empty() { p { (l.t("없음", "None")) } }
            @else {
                table class="decisions" {
                    thead { tr {
                        th { (l.t("시각", "When")) } th { (l.t("콜백", "Callback")) } th { (l.t("결과", "Answer")) }
                        th { (l.t("이유", "Reason")) } th { (l.t("시청자가 본 메시지", "Message the viewer saw")) }
                        th { (l.t("근거", "Grant")) } th { (l.t("플레이어", "Player")) }
                    } }
                    tbody {
                        @for d in p.decisions {
                            tr {
                                td { (local(d.decided_at, f.tz)) }
                                td { (d.callback) " " (d.kind) }
                                td { @if d.allowed { span class="badge verified" { (l.t("허용", "allowed")) } } @else { span class="badge unsigned" { (l.t("거부", "refused")) } } }
                                td { code { (d.reason) } }
                                td { ((p.message)(&d.reason)) }
                                td { (d.scope.as_deref().unwrap_or("-")) " " (d.target.as_deref().unwrap_or("")) }
                                td { (d.player_id.as_deref().unwrap_or("-")) }
                            }
                        }
                    }
                }
            }
            h2 { (l.t("수강 권한 변경", "Entitlement changes")) }
            @if p.changes.is_empty() { p { (l.t("없음", "None")) } }
            @else {
                table class="changes" {
                    thead { tr {
                        th { (l.t("시각", "When")) } th { (l.t("변경", "Change")) } th { (l.t("범위", "Scope")) }
                        th { (l.t("만료", "Expires")) } th { (l.t("재생 한도", "Playtime limit")) } th { (l.t("변경한 사람", "By")) }
                    } }
                    tbody {
                        @for c in p.changes {
                            tr {
                                td { (local(c.changed_at, f.tz)) }
                                td { (c.action) }
                                td { (c.scope) " " code { (c.target) } }
                                td { (c.expires_at.map(|t| local(t, f.tz)).unwrap_or_else(|| "-".to_owned())) }
                                td { (c.playtime_limit_seconds.map(duration).unwrap_or_else(|| "-".to_owned())) }
                                td { (c.changed_by) }
                            }
                        }
                    }
                }
            }
            (audit(f, p.views))
        }))
    }
}

pub struct VideoPage<'a> {
    pub media: &'a str,
    pub name: String,
    pub viewers: &'a [Viewer],
}

/// The completion buckets: fewer than 25% of blocks, 25-50, 50-75, 75-100 (not all), all.
pub fn completion(viewers: &[Viewer]) -> [usize; 5] {
    let mut buckets = [0; 5];
    for v in viewers {
        let blocks = (v.block_count.unwrap_or(0).max(0) as usize).max(v.blocks_ever_played.len());
        let watched = v.blocks_ever_played.iter().filter(|b| **b).count();
        let i = if blocks == 0 {
            0
        } else if watched >= blocks {
            4
        } else {
            (watched * 4 / blocks).min(3)
        };
        buckets[i] += 1;
    }
    buckets
}

pub fn video(f: &Frame, p: &VideoPage) -> Markup {
    let l = f.lang;
    let buckets = completion(p.viewers);
    let labels = ["0-25%", "25-50%", "50-75%", "75-99%", "100%"];
    let counts: Vec<(String, usize)> = labels
        .iter()
        .zip(buckets)
        .map(|(n, c)| ((*n).to_owned(), c))
        .collect();
    let blocks = p
        .viewers
        .iter()
        .map(|v| (v.block_count.unwrap_or(0).max(0) as usize).max(v.blocks_ever_played.len()))
        .max()
        .unwrap_or(0)
        .min(MAX_BLOCKS);
    let per_block: Vec<usize> = (0..blocks)
        .map(|i| {
            p.viewers
                .iter()
                .filter(|v| v.blocks_ever_played.get(i).copied().unwrap_or(false))
                .count()
        })
        .collect();
    let total: i64 = p.viewers.iter().map(|v| v.total_playtime).sum();
    html! {
        (frame(f, &format!("{} {}", l.t("영상", "Video"), p.media), html! {
            p class="subject" { code { (p.media) } " " span class="title" { (p.name) } }
            p { (l.t("시청자", "Viewers")) ": " span class="viewers" { (p.viewers.len()) } " · "
                (l.t("총 재생 시간", "Total playtime")) ": " (duration(total)) }
            h2 { (l.t("완료 분포 (시청한 블록 비율)", "Completion (share of blocks watched)")) }
            (charts::bars(&counts, l.t("완료 분포", "Completion distribution")))
            h2 { (l.t("블록별 시청자 (이탈 지점)", "Viewers per block (where they drop off)")) }
            @if per_block.is_empty() { p { (l.t("블록 정보가 없습니다.", "No block information.")) } }
            @else { (charts::line(&per_block, l.t("블록별 시청자 수", "Viewers per block"))) }
        }))
    }
}

/// A page for an answer that is not the page asked for (not found, refused, failed).
pub fn notice(f: &Frame, title: &str, text: &str) -> Markup {
    frame(
        f,
        title,
        html! { p class="notice" { (text) } p { a href="/console/" { "←" } } },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(seg("abc-1_2.~"), "abc-1_2.~");
        assert_eq!(seg("a/b c"), "a%2Fb%20c");
        assert_eq!(seg("<\"'>"), "%3C%22%27%3E");
        assert_eq!(seg("홍"), "%ED%99%8D");
    }

    #[test]
    fn durations_and_local_times_read_plainly() {
        assert_eq!(duration(3723), "1:02:03");
        assert_eq!(duration(-5), "0:00:00");
        let seoul = time_tz::timezones::get_by_name("Asia/Seoul").unwrap();
        let t = OffsetDateTime::from_unix_timestamp(0).unwrap();
        assert_eq!(local(t, seoul), "1970-01-01 09:00:00 +09:00");
    }

    #[test]
    fn completion_buckets_by_share_of_blocks() {
        let v = |n: usize, of: usize| Viewer {
            block_count: Some(of as i32),
            blocks_ever_played: (0..of).map(|i| i < n).collect(),
            total_playtime: 0,
        };
        let viewers = [v(0, 4), v(1, 4), v(2, 4), v(3, 4), v(4, 4), v(9, 10)];
        assert_eq!(completion(&viewers), [1, 1, 1, 2, 1]);
    }
}
