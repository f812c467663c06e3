//! The console's pages, rendered with `maud` (compile-time templates; every value is escaped
//! unless marked otherwise, and nothing here marks it): the frame every page shares, sign-in,
//! search, a user, a user and a video (the refund view), and a video. What a page shows is
//! decided in `model`; here only how it looks, in the agent's language and time zone.

use maud::{html, Markup, DOCTYPE};
use time::{OffsetDateTime, UtcOffset};
use time_tz::{Offset as _, TimeZone as _, Tz};

use super::charts;
use super::courses::{refund_sentence, CourseList};
use super::i18n::UiLang;
use super::model::{
    Badge, Flag, Found, RefundModel, ReviewModel, SessionRow, UserModel, VideoModel, WatchedVideo,
    LIST_BYTES,
};
use super::session::Agent;
use super::store::MAX_SEGMENTS;
use crate::access_log::read::{Access, Bounded};
use crate::access_log::record::REASON_MAX_CHARS;
use crate::courses::UserCourse;

/// What every page knows: the language, who is signed in, where it is, the time zone.
pub struct Frame<'a> {
    pub lang: UiLang,
    pub agent: Option<&'a Agent>,
    /// The request's path, for the language switch's links.
    pub path: &'a str,
    /// The request's list cursor (`before=...&` or `after=...&`, re-encoded; else empty), kept
    /// on the language switch's links so switching stays on the same page of a list.
    pub cursor: String,
    pub tz: &'static Tz,
}

/// A path segment, percent-encoded: anything but unreserved characters, and `.` too, so that no
/// segment can read as `.` or `..` to a reader that decodes before it resolves.
pub fn seg(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An id of dots only cannot be a path segment: a browser resolves `..` (and `%2E%2E`, as the
/// URL standard says) to the parent. The parsers refuse such ids (`IdError::DotsOnly`); a row
/// stored before they did is linked to the search for it instead, which stays where it is.
fn dots_only(id: &str) -> bool {
    id.bytes().all(|b| b == b'.')
}

/// The list cursor of a query string (`before` or `after`), each value percent-encoded again,
/// as `name=value&` to put before a link's `lang=`. Decoded by common's strict decoder: a
/// cursor with a NUL, invalid UTF-8 or given twice is no cursor (the page refuses it anyway).
pub fn cursor_of(query: &str) -> String {
    const CURSORS: [&str; 2] = ["before", "after"];
    let Ok(fields) = kollus_common::kollus::form::parse_form_strict_in(query.as_bytes(), &CURSORS)
    else {
        return String::new();
    };
    CURSORS
        .iter()
        .filter_map(|name| Some(format!("{name}={}&", seg(fields.get(*name)?))))
        .collect()
}

fn search_href(q: &str) -> String {
    format!("/console/?q={}", seg(q))
}

pub fn user_href(user: &str) -> String {
    if dots_only(user) {
        return search_href(user);
    }
    format!("/console/users/{}", seg(user))
}

pub fn refund_href(user: &str, media: &str) -> String {
    if dots_only(user) {
        return search_href(user);
    }
    if dots_only(media) {
        return search_href(media);
    }
    format!("/console/users/{}/media/{}", seg(user), seg(media))
}

pub fn media_href(media: &str) -> String {
    if dots_only(media) {
        return search_href(media);
    }
    format!("/console/media/{}", seg(media))
}

/// A time in the console's zone, with its offset; a time that does not fit that zone's dates
/// (past 9999-12-31 there, as a "never" of `9999-12-31T23:59:59Z` is east of UTC) in UTC,
/// marked `UTC`.
pub fn local(t: OffsetDateTime, tz: &Tz) -> String {
    let offset = tz.get_offset_utc(&t).to_utc();
    let Some(t) = t.checked_to_offset(offset) else {
        let t = t.checked_to_offset(UtcOffset::UTC).unwrap_or(t);
        return format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02} UTC",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        );
    };
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

/// A player's word shown in a table cell (device, OS, player): at most [`CLIP`] characters, so a
/// report cannot spend the page's byte budget on one cell.
fn clip(s: Option<&str>) -> String {
    match s {
        None => "-".to_owned(),
        Some(s) if s.chars().count() > CLIP => {
            let mut out: String = s.chars().take(CLIP).collect();
            out.push('…');
            out
        }
        Some(s) => s.to_owned(),
    }
}

const CLIP: usize = 80;

/// The items whose rendered parts fit in `budget` bytes of HTML, in order, rendered (the first
/// always: a page shows at least one); the caller says how many it left out.
fn within<T, const N: usize>(
    items: &[T],
    budget: usize,
    render: impl Fn(usize, &T) -> [Markup; N],
) -> Vec<[Markup; N]> {
    let mut used = 0;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let parts = render(i, item);
        let size: usize = parts.iter().map(|m| m.0.len()).sum();
        if !out.is_empty() && used + size > budget {
            break;
        }
        used += size;
        out.push(parts);
    }
    out
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
                        a href={ (f.path) "?" (f.cursor) "lang=ko" } lang="ko" { "한국어" }
                        " · "
                        a href={ (f.path) "?" (f.cursor) "lang=en" } lang="en" { "English" }
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
                    @if let Some(on) = &found.erased_on {
                        li class="erased" { (l.t("삭제된 사용자입니다 (삭제일: ", "Erased on ")) (on) (l.t(")", "")) }
                    }
                    @if found.user.is_none() && found.media.is_none() && found.erased_on.is_none() {
                        li class="none" { (l.t("찾은 것이 없습니다: ", "Nothing found for ")) (q) }
                    }
                }
            }
        },
    )
}

pub fn user(f: &Frame, p: &UserModel, courses: &CourseList) -> Markup {
    let l = f.lang;
    let rows = within(&p.videos, LIST_BYTES, |_, v| [video_row(f, p.user, v)]);
    let shown = rows.len();
    let first = p.page.earlier + 1;
    let last = p.page.earlier + i64::try_from(shown).unwrap_or(i64::MAX);
    let more = (p.page.total - last).max(0);
    html! {
        (frame(f, &format!("{} {}", l.t("사용자", "User"), p.user), html! {
            p class="subject" { (l.t("사용자 ID", "Client user id")) ": " code { (p.user) } }
            (downloads(f, p.user, None))
            (user_courses(f, p.user, courses))
            h2 { (l.t("시청한 영상", "Videos watched")) }
            @if p.videos.is_empty() && p.page.earlier == 0 { p { (l.t("시청 기록이 없습니다.", "No watch history.")) } }
            @else if p.videos.is_empty() {
                p class="paging no-more" {
                    (l.t("이 지점 이후의 영상이 없습니다 (전체 ", "No more videos past this point (of "))
                    span class="total" { (p.page.total) } (l.t("개). ", "). "))
                    a class="first" href=(user_href(p.user)) { (l.t("← 처음", "← First")) }
                }
            }
            @else {
                @if p.page.earlier > 0 || more > 0 {
                    p class="paging" {
                        (l.t("영상 ", "Videos ")) (first) "–" (last) (l.t(" (전체 ", " of "))
                        span class="total" { (p.page.total) } (l.t(")", ""))
                        @if p.page.earlier > 0 {
                            " · " a class="first" href=(user_href(p.user)) { (l.t("← 처음", "← First")) }
                        }
                        @if more > 0 {
                            @if let Some(v) = shown.checked_sub(1).and_then(|i| p.videos.get(i)) {
                                " · " span class="not-shown" { (more) } (l.t("개 영상 표시 안 함: ", " more videos not shown: "))
                                a class="next" href={ (user_href(p.user)) "?after=" (seg(v.media)) } { (l.t("다음 →", "Next →")) }
                            }
                        }
                    }
                }
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
                    tbody { @for [row] in &rows { (row) } }
                }
            }
            h2 { (l.t("유효한 수강 권한", "Entitlements in force")) }
            @if p.grants.is_empty() { p { (l.t("없음", "None")) } }
            @else {
                @if p.grants_not_shown > 0 {
                    p class="paging" {
                        (l.t("최근에 부여한 ", "The ")) (p.grants.len()) (l.t("개만 표시합니다: ", " most recently granted are shown; "))
                        span class="grants-not-shown" { (p.grants_not_shown) }
                        (l.t("개 더 있습니다 (API: GET /v1/users/{id}/entitlements).", " more are in force (API: GET /v1/users/{id}/entitlements)."))
                    }
                }
                table class="entitlements" {
                    thead { tr {
                        th { (l.t("범위", "Scope")) } th { (l.t("대상", "Target")) }
                        th { (l.t("만료", "Expires")) } th { (l.t("재생 한도", "Playtime limit")) }
                        th { (l.t("사용", "Used")) } th { (l.t("남음", "Left")) }
                        th { (l.t("부여", "Granted by")) }
                    } }
                    tbody {
                        @for g in &p.grants {
                            @let e = g.entitlement;
                            tr {
                                td { (e.scope.as_str()) }
                                td { code { (clip(Some(&e.key))) } }
                                td { (e.expires_at.map(|t| local(t, f.tz)).unwrap_or_else(|| l.t("없음", "never").to_owned())) }
                                td { (e.playtime_limit_seconds.map(duration).unwrap_or_else(|| l.t("무제한", "unlimited").to_owned())) }
                                td { (g.used.map(duration).unwrap_or_else(|| l.t("영상마다", "per video").to_owned())) }
                                td { (g.left.map(duration).unwrap_or_else(|| "-".to_owned())) }
                                td { (e.granted_by) " " (local(e.granted_at, f.tz)) }
                            }
                        }
                    }
                }
            }
            (accesses(f, p.accesses))
        }))
    }
}

/// One video of a user's page.
fn video_row(f: &Frame, user: &str, v: &WatchedVideo) -> Markup {
    let l = f.lang;
    html! {
        tr {
            td {
                a href=(refund_href(user, v.media)) { code { (v.media) } }
                " " span class="title" { (v.name) }
                " " a class="small" href=(media_href(v.media)) { (l.t("영상 통계", "video")) }
            }
            td class="num" { (v.sessions) }
            td class="num" { (duration(v.playtime)) }
            td class="num" { (v.blocks_watched) " / " (v.coverage.len()) }
            td { (v.first.map(|t| local(t, f.tz)).unwrap_or_default()) }
            td { (local(v.last, f.tz)) }
            td { (charts::coverage_strip(l, &v.coverage, l.t("블록별 시청", "Watched per block"))) }
        }
    }
}

/// Every access to the user's data, console and API, newest first: the access record's rows of
/// the user's tag and today's open read counters (`access_log::read::of_subject`).
fn accesses(f: &Frame, a: &Bounded<Access>) -> Markup {
    let l = f.lang;
    html! {
        section class="accesses" {
            h2 { (l.t("이 사용자의 정보에 접근한 기록 (콘솔과 API)", "Who accessed this user's data (console and API)")) }
            @if a.rows.is_empty() { p { (l.t("기록된 접근이 없습니다.", "No access recorded.")) } }
            @else {
                table class="accesses" {
                    thead { tr {
                        th { (l.t("시각", "When")) } th { (l.t("키", "Key")) } th { (l.t("행위", "Action")) }
                        th { (l.t("접속 주소", "Address")) } th { (l.t("대상", "Target")) }
                        th { (l.t("사유", "Reason")) } th { (l.t("횟수", "Count")) }
                    } }
                    tbody {
                        @for r in &a.rows {
                            tr {
                                td { (local(r.at, f.tz)) }
                                td { span class="who" { (r.key_name) } }
                                td {
                                    code { (r.action) }
                                    @if r.open { " " span class="open" { (l.t("(오늘, 집계 중)", "(today, still counting)")) } }
                                }
                                td { (address(r)) }
                                td { (clip(r.target.as_deref())) }
                                td class="reason" { (r.reason.as_deref().unwrap_or("-")) }
                                td class="num" { (r.count) }
                            }
                        }
                    }
                }
            }
            @if a.more > 0 {
                p class="paging" {
                    span class="accesses-more" { (a.more) }
                    (l.t("건의 이전 접근은 표시하지 않습니다 (기록에는 남아 있습니다).", " earlier accesses not shown (the record keeps them)."))
                }
            }
        }
    }
}

fn address(r: &Access) -> String {
    r.client_addr
        .map_or_else(|| "-".to_owned(), |a| a.to_string())
}

pub fn refund(f: &Frame, p: &RefundModel, courses: &CourseList) -> Markup {
    let l = f.lang;
    let blocks = p.coverage.len();
    let number = |i: usize| p.newer + i64::try_from(i + 1).unwrap_or(i64::MAX);
    let rows = within(&p.sessions, LIST_BYTES, |i, r| {
        let start = r.start.map(|t| local(t, f.tz));
        let start = start.unwrap_or_else(|| r.session.start_at.to_string());
        [
            charts::heatmap_row(l, i, &start, &r.cells, blocks),
            session_row(l, number(i), &start, r),
        ]
    });
    let shown = rows.len();
    let (newer, older) = p.not_shown(shown);
    let (heat, table): (Vec<Markup>, Vec<Markup>) = rows.into_iter().map(|[h, t]| (h, t)).unzip();
    let here = refund_href(p.user, p.media);
    let title = format!("{} · {}", p.user, p.media);
    html! {
        (frame(f, &title, html! {
            p class="subject" {
                (l.t("사용자", "User")) " " a href=(user_href(p.user)) { code { (p.user) } } " · "
                (l.t("영상", "Video")) " " a href=(media_href(p.media)) { code { (p.media) } } " " span class="title" { (p.name) }
            }
            (course_answers(f, p.user, courses))
            (downloads(f, p.user, None))
            h2 { (l.t("블록별 시청 (맨 위: 모든 세션의 합)", "Watched per block (top row: all sessions together)")) }
            @if p.total == 0 { p { (l.t("이 영상의 시청 기록이 없습니다.", "No watch history for this video.")) } }
            @else {
                p { (p.blocks_watched) " / " (p.coverage.len()) " " (l.t("블록 시청", "blocks watched")) }
                @if newer > 0 || older > 0 {
                    p class="paging" {
                        (l.t("세션 ", "Sessions ")) (p.newer + 1) "–" (p.newer + i64::try_from(shown).unwrap_or(i64::MAX))
                        (l.t(" (전체 ", " of ")) span class="total" { (p.total) } (l.t(", 최신순)", ", newest first"))
                        @if newer > 0 {
                            " · " span class="newer-count" { (newer) } (l.t("개 최근 세션 표시 안 함: ", " newer sessions not shown: "))
                            a class="newest" href=(here) { (l.t("← 최근 세션", "← Newest sessions")) }
                        }
                        @if older > 0 {
                            @if let Some(r) = shown.checked_sub(1).and_then(|i| p.sessions.get(i)) {
                                " · " span class="older-count" { (older) } (l.t("개 이전 세션 표시 안 함: ", " older sessions not shown: "))
                                a class="older" href={ (here) "?before=" (r.session.start_at) } { (l.t("이전 세션 →", "Older sessions →")) }
                            }
                        }
                    }
                }
                @if shown == 0 {
                    p { (l.t("이 지점 이전의 세션이 없습니다.", "No sessions before this point.")) }
                } @else {
                    (charts::heatmap(l, &p.coverage, &heat, l.t("세션별, 블록별 시청 비율", "Percent of each block watched, per session")))
                    table class="sessions" {
                        thead { tr {
                            th { "#" } th { (l.t("시작", "Start")) } th { (l.t("기기", "Device")) } th { "OS" }
                            th { (l.t("플레이어", "Player")) } th { (l.t("재생 시간", "Playtime")) }
                            th { (l.t("실제 재생 시간", "Real playtime")) } th { (l.t("실행 시간", "Runtime")) }
                            th { (l.t("재생 구간", "Played segments")) }
                            th { (l.t("표시", "Badges")) }
                        } }
                        tbody { @for row in &table { (row) } }
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
                        @for r in &p.decisions {
                            @let d = r.decision;
                            tr {
                                td { (local(d.decided_at, f.tz)) }
                                td { (d.callback) " " (d.kind) }
                                td { @if d.allowed { span class="badge verified" { (l.t("허용", "allowed")) } } @else { span class="badge unsigned" { (l.t("거부", "refused")) } } }
                                td { code { (d.reason) } }
                                td { (r.message) }
                                td { (clip(d.scope.as_deref())) " " (d.target.as_deref().map(|t| clip(Some(t))).unwrap_or_default()) }
                                td { (clip(d.player_id.as_deref())) }
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
            (accesses(f, p.accesses))
        }))
    }
}

pub fn video(f: &Frame, p: &VideoModel) -> Markup {
    let l = f.lang;
    let labels = ["0-25%", "25-50%", "50-75%", "75-99%", "100%"];
    let counts: Vec<(String, usize)> = labels
        .iter()
        .zip(p.completion)
        .map(|(n, c)| ((*n).to_owned(), c))
        .collect();
    html! {
        (frame(f, &format!("{} {}", l.t("영상", "Video"), p.media), html! {
            p class="subject" { code { (p.media) } " " span class="title" { (p.name) } }
            p { (l.t("시청자", "Viewers")) ": " span class="viewers" { (p.viewers) } " · "
                (l.t("총 재생 시간", "Total playtime")) ": " (duration(p.playtime)) }
            h2 { (l.t("완료 분포 (시청한 블록 비율)", "Completion (share of blocks watched)")) }
            (charts::bars(&counts, l.t("완료 분포", "Completion distribution")))
            h2 { (l.t("블록별 시청자 (이탈 지점)", "Viewers per block (where they drop off)")) }
            @if p.per_block.is_empty() { p { (l.t("블록 정보가 없습니다.", "No block information.")) } }
            @else { (charts::line(&p.per_block, l.t("블록별 시청자 수", "Viewers per block"))) }
        }))
    }
}

/// One session's line in the refund view's table, numbered `n` among all the pair's sessions.
fn session_row(l: UiLang, n: i64, start: &str, r: &SessionRow) -> Markup {
    let s = r.session;
    html! {
        tr {
            td class="num" { (n) }
            td { (start) }
            td { (clip(s.device.as_deref())) }
            td { (clip(s.os.as_deref())) }
            td { (clip(s.player_id.as_deref())) }
            td class="num" { (duration(s.playtime)) }
            td class="num" { (duration(s.real_playtime)) }
            td class="num" { (duration(s.runtime)) }
            td {
                (charts::timeline(&r.runs, l.t("영상 위의 재생 구간", "Played segments on the video")))
                @if s.segment_count > i64::try_from(MAX_SEGMENTS).unwrap_or(i64::MAX) {
                    " " span class="segments-cut" {
                        (l.t("처음 ", "the first ")) (MAX_SEGMENTS) (l.t("개 구간만 표시 (전체 ", " of "))
                        span class="segment-count" { (s.segment_count) }
                        (l.t("개)", " segments shown"))
                    }
                }
            }
            td {
                @for (n, b) in r.badges.iter().enumerate() {
                    @if n > 0 { " " }
                    (badge(l, *b))
                }
            }
        }
    }
}

fn badge(l: UiLang, b: Badge) -> Markup {
    match b {
        Badge::Verified => html! { span class="badge verified" { (l.t("서명 확인", "verified")) } },
        Badge::Unsigned => html! { span class="badge unsigned" { (l.t("서명 없음", "unsigned")) } },
        Badge::Unchecked => {
            html! { span class="badge unchecked" { (l.t("확인 안 함", "unchecked")) } }
        }
        Badge::Unbound => html! {
            span class="badge unbound" title=(l.t("이 사용자용으로 발급한 플레이어 URL에서 오지 않은 보고가 있습니다", "A report did not come from a player URL issued for this user")) { (l.t("바인딩 없음", "unbound")) }
        },
        Badge::DeviceClock => html! { span class="badge device-clock" { "device_clock" } },
    }
}

/// The user's downloads (CSV, JSON Lines): a form that asks why before either, posted with the
/// session's CSRF token; `error` says what was wrong with the last one.
pub fn downloads(f: &Frame, user: &str, error: Option<&str>) -> Markup {
    let l = f.lang;
    let href = user_href(user);
    html! {
        form class="downloads" method="post" action={ (href) "/export.csv" } {
            @if let Some(e) = error { p class="error" { (e) } }
            label for="reason" { (l.t("증거 내려받기: 사유 (접속기록에 남습니다)", "Download the evidence: the reason (kept in the access record)")) }
            input id="reason" type="text" name="reason" maxlength=(REASON_MAX_CHARS) required aria-describedby="reason-note";
            p id="reason-note" class="note" { (l.t("사유에 이 사람의 아이디나 이름을 쓰지 마세요 (접속기록은 삭제 후에도 남습니다): 문의 번호 등으로 적어 주세요.", "Do not name the person (their id or name) in the reason: the record outlives their erasure. Give a ticket number or the like.")) }
            @if let Some(agent) = f.agent { input type="hidden" name="csrf_token" value=(agent.csrf_token); }
            button type="submit" formaction={ (href) "/export.csv" } { "CSV" }
            " "
            button type="submit" formaction={ (href) "/export.jsonl" } { "JSON Lines" }
        }
    }
}

/// Where the review of `month` is, as a page or as CSV.
pub fn review_href(month: super::model::Month, csv: bool) -> String {
    format!(
        "/console/review{}?month={month}",
        if csv { ".csv" } else { "" }
    )
}

/// The monthly review of the access record (agents whose key holds `audit`).
pub fn review(f: &Frame, p: &ReviewModel) -> Markup {
    let l = f.lang;
    let title = format!(
        "{} {}",
        l.t("접속기록 점검", "Access record review"),
        p.month
    );
    html! {
        (frame(f, &title, html! {
            nav class="months" {
                a class="previous" href=(review_href(p.previous, false)) { "← " (p.previous) }
                @if let Some(next) = p.next {
                    " · " a class="next" href=(review_href(next, false)) { (next) " →" }
                }
                " · " a class="csv" href=(review_href(p.month, true)) { (l.t("CSV로 내려받기", "Download as CSV")) }
            }
            p class="note" {
                (l.t(
                    "시각은 콘솔의 시간대로 표시합니다. 정보주체는 태그로만 표시합니다: 이 페이지는 누구의 ID도 열지 않습니다. 한 사용자에 대한 행은 모두 같은 태그이고, 내려받은 사람은 누구의 정보였는지 압니다. 그 사용자의 페이지에도 같은 내려받기가 보입니다.",
                    "Times are in the console's time zone. Subjects are shown by tag only: this page opens no one's id. Every row about one user carries the same tag, the agent who downloaded knows whose data it was, and that user's page lists the same download."
                ))
            }
            h2 { (l.t("내려받기와 사유", "Downloads and their reasons")) }
            (log_rows(f, p.downloads, true, "downloads"))
            h2 { (l.t("거부된 로그인", "Refused sign-ins")) }
            (log_rows(f, p.refused, false, "refused"))
            h2 { (l.t("키와 행위별 횟수", "Per key and action")) }
            p {
                (l.t(
                    "이번 달 횟수와 앞선 세 달의 평균. 표시: 평균의 3배 초과(>3×), 앞선 세 달에 없던 것(새로 생김). api_read는 하루 단위 집계의 합입니다.",
                    "This month's count beside the mean of the three months before. Flagged: above three times that mean (>3×), or none in those months (new). api_read counts the product app's reads, summed per day."
                ))
                " " span class="flagged-count" { (p.flagged()) } (l.t("건 표시됨.", " flagged."))
            }
            @if p.tallies.is_empty() { p { (l.t("이번 달 기록이 없습니다.", "Nothing recorded this month.")) } }
            @else {
                table class="tallies" {
                    thead { tr {
                        th { (l.t("키", "Key")) } th { (l.t("행위", "Action")) }
                        th { (l.t("이번 달", "This month")) } th { (l.t("앞선 세 달 평균", "Mean of the 3 months before")) }
                        th { (l.t("표시", "Flag")) }
                    } }
                    tbody {
                        @for t in &p.tallies {
                            tr class=[t.flag.map(|_| "flagged")] {
                                td { span class="who" { (t.tally.key_name) } }
                                td { code { (t.tally.action) } }
                                td class="num" { (t.tally.this_month) }
                                td class="num" { (format!("{:.1}", t.mean)) }
                                td {
                                    @match t.flag {
                                        Some(Flag::AboveThreeTimes) => span class="badge flag above_3x" { ">3×" },
                                        Some(Flag::New) => span class="badge flag new" { (l.t("새로 생김", "new")) },
                                        None => "",
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if p.tallies_more > 0 {
                p class="paging" {
                    span class="tallies-more" { (p.tallies_more) }
                    (l.t("개의 키·행위는 표시하지 않습니다 (CSV에 있습니다).", " more keys and actions not shown (the CSV has them)."))
                }
            }
        }))
    }
}

/// A month's rows of the log: downloads (with the subject and reason) or refused sign-ins.
fn log_rows(f: &Frame, rows: &Bounded<Access>, subject: bool, class: &str) -> Markup {
    let l = f.lang;
    html! {
        @if rows.rows.is_empty() { p { (l.t("없음", "None")) } }
        @else {
            table class=(class) {
                thead { tr {
                    th { (l.t("시각", "When")) } th { (l.t("키", "Key")) } th { (l.t("행위", "Action")) }
                    th { (l.t("접속 주소", "Address")) }
                    @if subject { th { (l.t("정보주체 (태그)", "Subject (tag)")) } }
                    th { (l.t("대상", "Target")) } th { (l.t("사유", "Reason")) }
                } }
                tbody {
                    @for r in &rows.rows {
                        tr {
                            td { (local(r.at, f.tz)) }
                            td { span class="who" { (r.key_name) } }
                            td { code { (r.action) } }
                            td { (address(r)) }
                            @if subject { td { code class="tag" { (r.subject_tag.as_deref().unwrap_or("-")) } } }
                            td { (clip(r.target.as_deref())) }
                            td class="reason" { (r.reason.as_deref().unwrap_or("-")) }
                        }
                    }
                }
            }
            @if rows.more > 0 {
                p class="paging" {
                    span class="not-shown" { (rows.more) }
                    (l.t("건 더 있습니다 (CSV에 있습니다).", " more not shown (the CSV has them)."))
                }
            }
        }
    }
}

/// The downloads' form on a page of its own: asked for, or shown again with `error`.
pub fn download(f: &Frame, user: &str, error: Option<&str>) -> Markup {
    let l = f.lang;
    frame(
        f,
        &format!("{} {}", l.t("내려받기", "Download"), user),
        html! {
            p class="subject" { (l.t("사용자", "User")) " " a href=(user_href(user)) { code { (user) } } }
            (downloads(f, user, error))
        },
    )
}

/// A page for an answer that is not the page asked for (not found, refused, failed).
pub fn notice(f: &Frame, title: &str, text: &str) -> Markup {
    frame(
        f,
        title,
        html! { p class="notice" { (text) } p { a href="/console/" { "←" } } },
    )
}

/// A user's course page.
pub fn course_href(user: &str, course: &str) -> String {
    if dots_only(user) {
        return search_href(user);
    }
    // Course ids are `[A-Za-z0-9_.-]`: one of dots only is refused when the course is written.
    format!("/console/users/{}/courses/{}", seg(user), seg(course))
}

/// Whether a grant enrols the user now, in words (a course listed for a user has a grant, in
/// force or not; a course page may show one the user has no grant for).
fn enrolment(l: UiLang, enrolled: bool) -> &'static str {
    if enrolled {
        l.t("수강 중 (권한 유효)", "enrolled (grant in force)")
    } else {
        l.t("유효한 권한 없음", "no grant in force")
    }
}

/// How many of a user's courses a list leaves out, said.
fn courses_not_shown(l: UiLang, list: &CourseList) -> Markup {
    html! {
        @if list.not_shown > 0 {
            p class="paging" {
                (l.t("처음 ", "The first ")) (list.courses.len()) (l.t("개 과정만 표시합니다: ", " courses are shown; "))
                span class="courses-not-shown" { (list.not_shown) }
                (l.t("개 더 있습니다 (API: GET /v1/users/{id}/courses/{course_id}).", " more are not (API: GET /v1/users/{id}/courses/{course_id})."))
            }
        }
    }
}

/// The user's page's courses: each with its progress, completion and refund answer, linking to
/// the course's page for the user.
pub fn user_courses(f: &Frame, user: &str, list: &CourseList) -> Markup {
    let l = f.lang;
    html! {
        section class="courses" {
            h2 { (l.t("수강 과정", "Courses")) }
            @if list.courses.is_empty() { p { (l.t("수강 권한이 있는 과정이 없습니다.", "No course grant.")) } }
            @else {
                (courses_not_shown(l, list))
                table class="courses" {
                    thead { tr {
                        th { (l.t("과정", "Course")) } th { (l.t("수강 권한", "Enrolment")) }
                        th { (l.t("진도율", "Progress")) } th { (l.t("완료한 차시", "Lessons complete")) }
                        th { (l.t("수료", "Complete")) } th { (l.t("환불", "Refund")) }
                    } }
                    tbody {
                        @for c in &list.courses {
                            tr {
                                td {
                                    a class="course" href=(course_href(user, &c.course_id)) { code { (c.course_id) } }
                                    " " span class="title" { (clip(Some(&c.title))) }
                                }
                                td class=(if c.enrolled { "enrolled" } else { "not-enrolled" }) { (enrolment(l, c.enrolled)) }
                                td class="num progress" { (c.progress_percent) "%" }
                                td class="num" { (c.lessons_complete) " / " (c.lessons.len()) }
                                td { (completion(f, c)) }
                                td class="refund-answer" { (refund_sentence(l, c, f.tz)) }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A course's completion: when, or not yet.
fn completion(f: &Frame, c: &UserCourse) -> Markup {
    let l = f.lang;
    html! {
        @match (c.complete, c.completed_at) {
            (true, Some(at)) => span class="complete" { (l.t("수료 ", "complete ")) (local(at, f.tz)) },
            (true, None) => span class="complete" { (l.t("수료", "complete")) },
            (false, _) => span class="incomplete" { (l.t("미수료", "not complete")) },
        }
    }
}

/// The refund view's opening: the answer of each course listing the video that the user is
/// enrolled in, above the evidence.
pub fn course_answers(f: &Frame, user: &str, list: &CourseList) -> Markup {
    let l = f.lang;
    html! {
        @if !list.courses.is_empty() {
            section class="course-answers" {
                h2 { (l.t("환불 답 (이 영상이 든 과정)", "The refund answer (courses listing this video)")) }
                (courses_not_shown(l, list))
                @for c in &list.courses {
                    p class="refund-answer" {
                        a class="course" href=(course_href(user, &c.course_id)) { code { (c.course_id) } }
                        " " span class="title" { (clip(Some(&c.title))) } " · " (enrolment(l, c.enrolled)) ": "
                        strong class="answer" { (refund_sentence(l, c, f.tz)) }
                    }
                }
            }
        }
    }
}

/// A user's course: the refund answer on top, then each lesson with its recognised time, its
/// progress, whether it is complete and open, and a link to its refund view.
pub fn course(f: &Frame, c: &UserCourse) -> Markup {
    let l = f.lang;
    let user = c.client_user_id.as_str();
    let title = format!("{} · {} {}", user, l.t("과정", "Course"), c.course_id);
    html! {
        (frame(f, &title, html! {
            p class="subject" {
                (l.t("사용자", "User")) " " a href=(user_href(user)) { code { (user) } } " · "
                (l.t("과정", "Course")) " " code { (c.course_id) } " " span class="title" { (clip(Some(&c.title))) }
            }
            p class="refund-answer" { strong class="answer" { (refund_sentence(l, c, f.tz)) } }
            p {
                span class=(if c.enrolled { "enrolled" } else { "not-enrolled" }) { (enrolment(l, c.enrolled)) } " · "
                (l.t("진도율", "Progress")) " " span class="progress" { (c.progress_percent) "%" } " · "
                (completion(f, c)) " · "
                (l.t("오늘 학습 시간", "Today")) " " (duration(c.today_seconds))
            }
            (downloads(f, user, None))
            h2 { (l.t("차시", "Lessons")) }
            table class="lessons" {
                thead { tr {
                    th { "#" } th { (l.t("영상", "Video")) }
                    th { (l.t("인정 시간 / 차시 시간", "Recognised / lesson time")) }
                    th { (l.t("진도", "Progress")) } th { (l.t("완료", "Complete")) }
                    th { (l.t("열림", "Unlocked")) } th { (l.t("근거", "Evidence")) }
                } }
                tbody {
                    @for (i, lesson) in c.lessons.iter().enumerate() {
                        tr {
                            td class="num" { (i + 1) }
                            td { code { (lesson.media_content_key) } }
                            td class="num" {
                                (duration(lesson.recognised_seconds)) " / " (duration(lesson.lesson_seconds))
                                @if !lesson.duration_known { " " span class="note" { (l.t("(길이 모름)", "(duration unknown)")) } }
                            }
                            td class="num" { (lesson.progress_percent) "%" }
                            td { (if lesson.complete { l.t("완료", "yes") } else { l.t("아니오", "no") }) }
                            td { (if lesson.unlocked { l.t("열림", "yes") } else { l.t("잠김", "no") }) }
                            td { a href=(refund_href(user, &lesson.media_content_key)) { (l.t("환불 보기", "refund view")) } }
                        }
                    }
                }
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_language_switch_keeps_a_lists_cursor_only() {
        assert_eq!(cursor_of("after=m%2E1&lang=en"), "after=m%2E1&");
        assert_eq!(cursor_of("before=1700000000"), "before=1700000000&");
        assert_eq!(cursor_of("lang=ko&x=1"), "");
        assert_eq!(cursor_of("after=a%22%3E<b"), "after=a%22%3E%3Cb&");
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(seg("abc-1_2~"), "abc-1_2~");
        assert_eq!(seg("a.b"), "a%2Eb");
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
    fn times_past_the_zones_last_date_are_shown_in_utc() {
        let seoul = time_tz::timezones::get_by_name("Asia/Seoul").unwrap();
        let at = |unix: i64| OffsetDateTime::from_unix_timestamp(unix).unwrap();
        let never = at(253_402_300_799); // 9999-12-31T23:59:59Z

        assert_eq!(local(never, seoul), "9999-12-31 23:59:59 UTC");
        // The last instant Seoul can still write.
        let last = at(253_402_300_799 - 9 * 3600);
        assert_eq!(local(last, seoul), "9999-12-31 23:59:59 +09:00");
        // West of UTC, the first dates do not fit either.
        let la = time_tz::timezones::get_by_name("America/Los_Angeles").unwrap();
        let first = OffsetDateTime::new_utc(
            time::Date::from_calendar_date(-9999, time::Month::January, 1).unwrap(),
            time::Time::MIDNIGHT,
        );
        assert!(local(first, la).ends_with(" UTC"), "{}", local(first, la));
    }

    #[test]
    fn links_encode_dots_and_never_name_a_dots_only_id_as_a_segment() {
        assert_eq!(user_href("u.1"), "/console/users/u%2E1");
        assert_eq!(refund_href("u", "m.1"), "/console/users/u/media/m%2E1");
        assert_eq!(media_href("..."), "/console/?q=%2E%2E%2E");
        for dots in [".", "..", "..."] {
            for href in [
                user_href(dots),
                refund_href(dots, "m"),
                refund_href("u", dots),
            ] {
                assert!(href.starts_with("/console/?q=%2E"), "{href}");
            }
        }
    }
}
