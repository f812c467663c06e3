//! A user's courses as the console shows them (README "Courses on the console"): which courses
//! an entitlement enrols the user in (a course grant, or a channel grant for the course's
//! `channel_key`; in force or not), each user's answer computed by the courses' own
//! computation (`courses::user_course`, the API's answer), and the refund answer as the
//! sentence the agent reads first: "per policy `academy`: 1/2 refunded (course 41% complete:
//! 12 h 18 m of 30 h recognised; 12 of 30 lessons complete; first play 2026-11-02)".

use deadpool_postgres::Client;
use time::OffsetDateTime;
use time_tz::{OffsetDateTimeExt as _, Tz};

use super::i18n::UiLang;
use crate::courses::{user_course, UserCourse};

/// The most courses a page lists for a user (each is computed from the user's sessions); the
/// page says how many more there are.
pub const COURSES_PER_PAGE: usize = 20;

/// A user's courses on a page: at most [`COURSES_PER_PAGE`], in id order, and how many are not
/// shown.
#[derive(Default)]
pub struct CourseList {
    pub courses: Vec<UserCourse>,
    pub not_shown: i64,
}

/// The courses an entitlement of the user's enrols the user in, in force or not (revoked and
/// expired grants too: a refund question often comes after one), in id order, at most `limit`,
/// and how many there are in all; with `media`, only the courses listing that video.
async fn enrolled_courses(
    client: &Client,
    user: &str,
    media: Option<&str>,
    limit: usize,
) -> anyhow::Result<(Vec<String>, i64)> {
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    // From the user's grants (a primary-key range), never a scan of every course: a course
    // grant names its course, a channel grant finds its courses by `courses_channel_idx`.
    let rows = client
        .query(
            "SELECT c.course_id, count(*) OVER () AS total FROM courses c \
              WHERE c.course_id IN ( \
                      SELECT e.target FROM entitlements e \
                       WHERE e.client_user_id = $1 AND e.scope = 'course' \
                      UNION \
                      SELECT k.course_id FROM entitlements e \
                        JOIN courses k ON k.channel_key = e.target \
                       WHERE e.client_user_id = $1 AND e.scope = 'channel') \
                AND ($2::text IS NULL OR EXISTS (SELECT 1 FROM course_lessons l \
                       WHERE l.course_id = c.course_id AND l.media_content_key = $2)) \
              ORDER BY c.course_id LIMIT $3",
            &[&user, &media, &limit],
        )
        .await?;
    let total = match rows.first() {
        Some(r) => r.try_get("total")?,
        None => 0,
    };
    let ids = rows
        .iter()
        .map(|r| r.try_get("course_id"))
        .collect::<Result<_, _>>()?;
    Ok((ids, total))
}

/// The user's answer in each course an entitlement enrols the user in (with `media`, each
/// listing that video), at most [`COURSES_PER_PAGE`].
pub async fn user_courses(
    client: &mut Client,
    user: &str,
    media: Option<&str>,
    now: OffsetDateTime,
) -> anyhow::Result<CourseList> {
    let (ids, total) = enrolled_courses(client, user, media, COURSES_PER_PAGE).await?;
    let mut courses = Vec::with_capacity(ids.len());
    for id in &ids {
        // A course deleted since the list was read is left out.
        if let Some(answer) = user_course(client, user, id, now).await? {
            courses.push(answer);
        }
    }
    let not_shown = total.saturating_sub(i64::try_from(ids.len()).unwrap_or(i64::MAX));
    Ok(CourseList { courses, not_shown })
}

/// Seconds as hours and minutes (`12 h 18 m`, `30 h`, `5 m`; Korean `12시간 18분`), truncated
/// to the minute.
pub fn hours_minutes(l: UiLang, seconds: i64) -> String {
    let minutes = seconds.max(0) / 60;
    let (h, m) = (minutes / 60, minutes % 60);
    let (hu, mu) = (l.t("시간", " h"), l.t("분", " m"));
    match (h, m) {
        (0, m) => format!("{m}{mu}"),
        (h, 0) => format!("{h}{hu}"),
        (h, m) => format!("{h}{hu} {m}{mu}"),
    }
}

/// The refund share as the agent reads it.
fn share(l: UiLang, share: &str) -> String {
    match (l, share) {
        (UiLang::Ko, "all") => "전액 환불".to_owned(),
        (UiLang::Ko, "none") => "환불 없음".to_owned(),
        (UiLang::Ko, s) => format!("{s} 환불"),
        (UiLang::En, "none") => "nothing refunded".to_owned(),
        (UiLang::En, s) => format!("{s} refunded"),
    }
}

/// The refund answer in a sentence, dates in the console's time zone `tz`.
pub fn refund_sentence(l: UiLang, c: &UserCourse, tz: &Tz) -> String {
    let r = &c.refund;
    let first = match r.first_play_at {
        Some(t) => {
            let d = t.to_timezone(tz).date();
            let date = format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day());
            format!("{}{date}", l.t("첫 재생 ", "first play "))
        }
        None => l.t("재생 기록 없음", "no play yet").to_owned(),
    };
    let (used, total) = (
        hours_minutes(l, c.recognised_seconds),
        hours_minutes(l, c.course_seconds),
    );
    let (done, lessons) = (c.lessons_complete, c.lessons.len());
    let sentence = match l {
        UiLang::Ko => format!(
            "정책 `{}`에 따라 {} (과정 {}% 진행: 인정 시간 {total} 중 {used}; 차시 {lessons}개 중 {done}개 완료; {first})",
            r.rule,
            share(l, &r.refund_share),
            r.course_percent_used,
        ),
        UiLang::En => format!(
            "per policy `{}`: {} (course {}% complete: {used} of {total} recognised; {done} of {lessons} lessons complete; {first})",
            r.rule,
            share(l, &r.refund_share),
            r.course_percent_used,
        ),
    };
    // What the answer leaves out, said with it: an agent reads this sentence first.
    let unknown = c.lessons.iter().filter(|x| !x.duration_known).count();
    let mut notes = Vec::new();
    if unknown > 0 {
        notes.push(match l {
            UiLang::Ko => format!("잠정: 길이를 모르는 차시 {unknown}개는 계산에서 빠짐"),
            UiLang::En => format!("provisional: {unknown} lesson(s) of unknown length not counted"),
        });
    }
    if c.unbound_sessions > 0 {
        notes.push(match l {
            UiLang::Ko => format!(
                "이 사용자용이 아닌 플레이어의 세션 {}개는 인정하지 않음",
                c.unbound_sessions
            ),
            UiLang::En => format!(
                "{} session(s) from players not made for this user not counted",
                c.unbound_sessions
            ),
        });
    }
    if notes.is_empty() {
        sentence
    } else {
        format!("{sentence}; {}", notes.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::courses::progress::{LessonProgress, RefundAnswer};

    fn answer(lessons: usize, complete: usize, first: Option<OffsetDateTime>) -> UserCourse {
        let lesson = |i: usize| LessonProgress {
            media_content_key: format!("m{i}"),
            recognised_seconds: if i < complete { 3600 } else { 0 },
            lesson_seconds: 3600,
            lesson_seconds_from: "given",
            duration_known: true,
            progress_percent: if i < complete { 100 } else { 0 },
            complete: i < complete,
            unlocked: true,
            showtime_seconds: 0,
            blocks_watched: None,
            block_count: None,
        };
        UserCourse {
            client_user_id: "u".into(),
            course_id: "c".into(),
            title: "t".into(),
            enrolled: true,
            lessons: (0..lessons).map(lesson).collect(),
            progress_percent: 41,
            recognised_seconds: 12 * 3600 + 18 * 60 + 59,
            course_seconds: 30 * 3600,
            lessons_complete: complete,
            durations_known: true,
            complete: false,
            completed_at: None,
            today_seconds: 0,
            unbound_sessions: 0,
            refund: RefundAnswer {
                rule: "academy",
                refund_percent: 50.0,
                refund_share: "1/2".into(),
                course_percent_used: 41,
                first_play_at: first,
            },
        }
    }

    #[test]
    fn the_refund_answer_reads_as_the_agent_tells_it() {
        let seoul = time_tz::timezones::get_by_name("Asia/Seoul").unwrap();
        // 2026-11-01 20:00 UTC is 2026-11-02 in Seoul.
        let first = OffsetDateTime::from_unix_timestamp(1_793_563_200).unwrap();
        let a = answer(30, 12, Some(first));
        assert_eq!(
            refund_sentence(UiLang::En, &a, seoul),
            "per policy `academy`: 1/2 refunded (course 41% complete: 12 h 18 m of 30 h \
             recognised; 12 of 30 lessons complete; first play 2026-11-02)"
        );
        assert_eq!(
            refund_sentence(UiLang::Ko, &a, seoul),
            "정책 `academy`에 따라 1/2 환불 (과정 41% 진행: 인정 시간 30시간 중 12시간 18분; \
             차시 30개 중 12개 완료; 첫 재생 2026-11-02)"
        );
        let utc = time_tz::timezones::get_by_name("UTC").unwrap();
        assert!(refund_sentence(UiLang::En, &a, utc).ends_with("first play 2026-11-01)"));
        let mut none = answer(2, 0, None);
        none.refund.refund_share = "all".into();
        assert!(
            refund_sentence(UiLang::En, &none, seoul).contains(": all refunded (")
                && refund_sentence(UiLang::En, &none, seoul).ends_with("; no play yet)"),
            "{}",
            refund_sentence(UiLang::En, &none, seoul)
        );
        assert_eq!(hours_minutes(UiLang::En, 59), "0 m");
    }

    #[test]
    fn the_refund_answer_says_what_it_leaves_out() {
        let mut a = answer(3, 1, None);
        a.lessons[2].duration_known = false;
        a.unbound_sessions = 2;
        let utc = time_tz::timezones::get_by_name("UTC").unwrap();
        let en = refund_sentence(UiLang::En, &a, utc);
        assert!(
            en.ends_with(
                "; provisional: 1 lesson(s) of unknown length not counted; 2 session(s) from players not made for this user not counted"
            ),
            "{en}"
        );
        let ko = refund_sentence(UiLang::Ko, &a, utc);
        assert!(
            ko.contains("잠정: 길이를 모르는 차시 1개는 계산에서 빠짐"),
            "{ko}"
        );
        assert!(!refund_sentence(UiLang::En, &answer(3, 1, None), utc).contains("provisional"));
        assert_eq!(hours_minutes(UiLang::Ko, 5 * 60), "5분");
    }
}
