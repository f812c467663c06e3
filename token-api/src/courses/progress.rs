//! A user's progress in a course, as Korean online training is judged (SPEC.md section 8): a
//! function of the user's watch sessions on the course's lessons and nothing else, so it is the
//! same in whatever order the reports came, after a rebuild, and on every replica. Integer
//! arithmetic throughout (percents truncated), so thresholds are exact.
//!
//! Per lesson, with `count: showtime` (real time): the sessions' `showtime` summed (each
//! session's is its maximum: SPEC.md 3, "summing across different sessions is right"), zero
//! below `floor_percent` of the recognised time, capped at the recognised time, and, when the
//! reports carry blocks, at the share of the lesson's blocks ever played (so one minute
//! replayed thirty times completes nothing). With `count: blocks`, the covered share alone
//! (the floor applies to it too).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use time::OffsetDateTime;

use super::model::{Count, Refund, Rules};

/// A lesson's recognised time: the time given, else the catalog's duration (`seconds` 0 and
/// `source` `unknown` when neither; [`progress`] then takes the user's own reports' duration).
#[derive(Debug, Clone)]
pub struct LessonTime {
    pub media_content_key: String,
    pub seconds: i64,
    /// Where `seconds` came from: `given`, `catalog`, `reports`, or `unknown` (0).
    pub source: &'static str,
}

/// What a session contributes, as `watch_sessions` holds it.
#[derive(Debug, Clone)]
pub struct SessionFacts {
    pub media_content_key: String,
    pub start_at: i64,
    pub showtime: i64,
    /// Speed-weighted; old players report it without `showtime`.
    pub playtime: i64,
    pub block_count: Option<i32>,
    /// Kollus's `b{i}` flags, merged by OR over the session's reports.
    pub blocks_played: Vec<bool>,
    pub last_report_at: OffsetDateTime,
    /// The longest `duration` its reports gave.
    pub duration: Option<i64>,
    /// Viewer binding (README "Viewer binding"): false when a report did not come from a player
    /// URL made for this user; such a session counts for nothing here.
    pub bound: Option<bool>,
}

/// One lesson's answer.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = LessonProgress)]
pub struct LessonProgress {
    pub media_content_key: String,
    /// Seconds recognised, after the floor and the caps.
    pub recognised_seconds: i64,
    /// The lesson's recognised time (0 when no duration is known).
    pub lesson_seconds: i64,
    /// `given`, `catalog`, `reports` or `unknown`: where `lesson_seconds` came from.
    pub lesson_seconds_from: &'static str,
    /// false when no duration is known: the lesson counts 0 and opens the next one.
    pub duration_known: bool,
    /// Truncated, 0 to 100.
    #[schema(minimum = 0, maximum = 100)]
    pub progress_percent: i64,
    pub complete: bool,
    pub unlocked: bool,
    /// The sessions' showtime summed, before the floor and the caps.
    pub showtime_seconds: i64,
    /// Blocks ever played of `block_count`, when the reports carry blocks.
    #[schema(required = true)]
    pub blocks_watched: Option<i64>,
    #[schema(required = true)]
    pub block_count: Option<i64>,
}

/// The refund the course's policy gives now.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = RefundAnswer)]
pub struct RefundAnswer {
    /// `academy`, `none` or `table`.
    pub rule: &'static str,
    /// Percent of the fee refunded (two decimals: 2/3 is 66.67).
    pub refund_percent: f64,
    /// The same as a fraction where the policy states one (`all`, `2/3`, `1/2`, `none`), else
    /// the percent (`30%`).
    pub refund_share: String,
    /// How much of the course is used, percent (truncated): the course's progress.
    pub course_percent_used: i64,
    /// The earliest session's start (Kollus's `start_at`); null before any play.
    #[serde(with = "time::serde::rfc3339::option")]
    #[schema(required = true)]
    pub first_play_at: Option<OffsetDateTime>,
}

/// A user's answer in a course (without the ids, which the handler adds).
#[derive(Debug, Clone, PartialEq)]
pub struct CourseProgress {
    pub lessons: Vec<LessonProgress>,
    pub recognised_seconds: i64,
    pub course_seconds: i64,
    pub progress_percent: i64,
    pub lessons_complete: usize,
    /// Every lesson's time is known (given, from the catalog, or from the user's reports).
    pub durations_known: bool,
    pub complete: bool,
    pub completed_at: Option<OffsetDateTime>,
    pub today_seconds: i64,
    /// The user's sessions on the lessons left out: proven unbound.
    pub unbound_sessions: usize,
    pub refund: RefundAnswer,
}

/// `[from, to)`, Unix seconds: the day "today" is, in the course's time zone.
pub type Day = (i64, i64);

/// Percent `part` is of `whole`, truncated, 0 when `whole` is 0.
fn percent(part: i64, whole: i64) -> i64 {
    if whole <= 0 {
        return 0;
    }
    (i128::from(part) * 100 / i128::from(whole)).clamp(0, 100) as i64
}

/// `part / whole >= p / 100`, exactly.
fn at_least(part: i64, whole: i64, p: i32) -> bool {
    i128::from(part) * 100 >= i128::from(whole) * i128::from(p)
}

/// One lesson's sums over a set of sessions.
#[derive(Default)]
struct Sums {
    /// Showtime of sessions whose reports carry blocks, and of those that carry none (an old
    /// player, or a channel without blocks): only the first is capped by the blocks covered.
    with_blocks: i64,
    without_blocks: i64,
    /// Blocks ever played, per `block_count` the sessions reported (a changed account setting
    /// splits a video differently; each split is its own union).
    played: BTreeMap<usize, Vec<bool>>,
    /// The longest `duration` the sessions reported.
    duration: i64,
}

impl Sums {
    fn add(&mut self, s: &SessionFacts) {
        let showtime = s.showtime.max(0);
        let count = s.block_count.unwrap_or(0).max(0) as usize;
        if count == 0 {
            self.without_blocks = self.without_blocks.saturating_add(showtime);
        } else {
            self.with_blocks = self.with_blocks.saturating_add(showtime);
            let union = self
                .played
                .entry(count)
                .or_insert_with(|| vec![false; count]);
            for (u, &b) in union.iter_mut().zip(&s.blocks_played) {
                *u |= b;
            }
        }
        self.duration = self.duration.max(s.duration.unwrap_or(0));
    }

    fn showtime(&self) -> i64 {
        self.with_blocks.saturating_add(self.without_blocks)
    }

    /// The split covering the most of the lesson: (blocks played, block count).
    fn coverage(&self) -> Option<(i64, i64)> {
        self.played
            .iter()
            .map(|(count, union)| (union.iter().filter(|b| **b).count() as i64, *count as i64))
            .max_by(|a, b| {
                (i128::from(a.0) * i128::from(b.1)).cmp(&(i128::from(b.0) * i128::from(a.1)))
            })
    }

    /// The lesson's recognised seconds under the course's rules, `seconds` its recognised time.
    /// Adding a session never lowers it (so `completed_at` can be found by bisection).
    fn recognised(&self, seconds: i64, rules: &Rules) -> i64 {
        if seconds <= 0 {
            return 0;
        }
        let covered = self.coverage().map(|(watched, count)| {
            (i128::from(watched) * i128::from(seconds) / i128::from(count)) as i64
        });
        let (counted, met) = match rules.completion.count {
            // Real time met decides the floor; the caps apply after it.
            Count::Showtime => {
                let capped = covered.map_or(self.with_blocks, |c| self.with_blocks.min(c));
                (
                    capped.saturating_add(self.without_blocks).min(seconds),
                    self.showtime(),
                )
            }
            Count::Blocks => {
                let c = covered.unwrap_or(0).min(seconds);
                (c, c)
            }
        };
        if at_least(met, seconds, rules.completion.floor_percent) {
            counted
        } else {
            0
        }
    }
}

/// Each lesson's sums over `sessions` (only those of the course's lessons count), in course order.
fn sums(lessons: &[LessonTime], sessions: &[&SessionFacts]) -> Vec<Sums> {
    let index: HashMap<&str, usize> = lessons
        .iter()
        .enumerate()
        .map(|(i, l)| (l.media_content_key.as_str(), i))
        .collect();
    let mut sums: Vec<Sums> = lessons.iter().map(|_| Sums::default()).collect();
    for s in sessions {
        if let Some(&i) = index.get(s.media_content_key.as_str()) {
            sums[i].add(s);
        }
    }
    sums
}

/// The lessons' recognised seconds over `sessions`, in course order.
fn recognised_all(rules: &Rules, lessons: &[LessonTime], sessions: &[&SessionFacts]) -> Vec<i64> {
    lessons
        .iter()
        .zip(sums(lessons, sessions))
        .map(|(l, s)| s.recognised(l.seconds, rules))
        .collect()
}

fn course_complete(rules: &Rules, lessons: &[LessonTime], recognised: &[i64]) -> bool {
    let total: i64 = lessons.iter().map(|l| l.seconds).sum();
    let got: i64 = recognised.iter().sum();
    total > 0 && percent(got, total) >= i64::from(rules.completion.course_percent)
}

/// The user's progress in the course: `lessons` in course order with the times the course and
/// the catalog give them (0: none), `sessions` the user's sessions (any order; those of other
/// videos are ignored, and those proven unbound are left out and counted), `today` the current
/// day in the course's time zone.
pub fn progress(
    rules: &Rules,
    lessons: &[LessonTime],
    sessions: &[SessionFacts],
    today: Day,
) -> CourseProgress {
    let keys: HashSet<&str> = lessons
        .iter()
        .map(|l| l.media_content_key.as_str())
        .collect();
    let (all, unbound): (Vec<&SessionFacts>, Vec<&SessionFacts>) = sessions
        .iter()
        .filter(|s| keys.contains(s.media_content_key.as_str()))
        .partition(|s| s.bound != Some(false));
    let sums = sums(lessons, &all);
    // A lesson neither the course nor the catalog gives a time takes the longest duration the
    // user's own reports gave: a device speaks for its own user only.
    let lessons: Vec<LessonTime> = lessons
        .iter()
        .zip(&sums)
        .map(|(l, s)| match l.seconds {
            0 if s.duration > 0 => LessonTime {
                media_content_key: l.media_content_key.clone(),
                seconds: s.duration,
                source: "reports",
            },
            _ => l.clone(),
        })
        .collect();
    let recognised: Vec<i64> = lessons
        .iter()
        .zip(&sums)
        .map(|(l, s)| s.recognised(l.seconds, rules))
        .collect();

    let mut out = Vec::with_capacity(lessons.len());
    let mut open = true;
    for ((l, &rec), s) in lessons.iter().zip(&recognised).zip(&sums) {
        let known = l.seconds > 0;
        let unlocked = !rules.unlock_in_order || open;
        // With unlock_in_order, the next lesson opens at unlock_percent of this one; a lesson
        // of unknown length cannot be measured, so it does not hold the course shut.
        open = unlocked && (!known || at_least(rec, l.seconds, rules.completion.unlock_percent));
        let coverage = s.coverage();
        out.push(LessonProgress {
            media_content_key: l.media_content_key.clone(),
            recognised_seconds: rec,
            lesson_seconds: l.seconds.max(0),
            lesson_seconds_from: l.source,
            duration_known: known,
            progress_percent: percent(rec, l.seconds),
            complete: known && at_least(rec, l.seconds, rules.completion.lesson_percent),
            unlocked,
            showtime_seconds: s.showtime(),
            blocks_watched: coverage.map(|(w, _)| w),
            block_count: coverage.map(|(_, c)| c),
        });
    }
    let durations_known = lessons.iter().all(|l| l.seconds > 0);
    let course_seconds: i64 = lessons.iter().map(|l| l.seconds.max(0)).sum();
    let got: i64 = recognised.iter().sum();
    let complete = durations_known && course_complete(rules, &lessons, &recognised);
    // A player opened and never played is no first play; an old player's session (playtime and
    // blocks, no showtime) is one.
    let first_play_at = all
        .iter()
        .filter(|s| s.showtime > 0 || s.playtime > 0 || s.blocks_played.contains(&true))
        .map(|s| s.start_at)
        .min()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok());
    CourseProgress {
        lessons_complete: out.iter().filter(|l| l.complete).count(),
        lessons: out,
        recognised_seconds: got,
        course_seconds,
        progress_percent: percent(got, course_seconds),
        durations_known,
        complete,
        completed_at: complete
            .then(|| completed_at(rules, &lessons, &all))
            .flatten(),
        today_seconds: all
            .iter()
            .filter(|s| s.start_at >= today.0 && s.start_at < today.1)
            .fold(0i64, |acc, s| acc.saturating_add(s.showtime.max(0))),
        unbound_sessions: unbound.len(),
        refund: refund(&rules.refund, got, course_seconds, first_play_at),
    }
}

/// When the course became complete: the earliest `last_report_at` T such that the sessions last
/// reported by T already complete it (with the lessons' times as all the sessions give them),
/// i.e. the largest `last_report_at` among the sessions the completion rests on. A function of
/// the set of sessions, so a rebuild gives the same value; a session that is still reporting
/// moves it until it ends, a later session does not. With the times fixed, progress only grows
/// as sessions are added, so the earliest such T is found by bisection.
fn completed_at(
    rules: &Rules,
    lessons: &[LessonTime],
    sessions: &[&SessionFacts],
) -> Option<OffsetDateTime> {
    let mut times: Vec<OffsetDateTime> = sessions.iter().map(|s| s.last_report_at).collect();
    times.sort_unstable();
    times.dedup();
    let complete_by = |t: OffsetDateTime| {
        let upto: Vec<&SessionFacts> = sessions
            .iter()
            .copied()
            .filter(|s| s.last_report_at <= t)
            .collect();
        course_complete(rules, lessons, &recognised_all(rules, lessons, &upto))
    };
    let i = times.partition_point(|t| !complete_by(*t));
    times.get(i).copied()
}

/// The refund `policy` gives with `used` of `total` recognised seconds used.
pub fn refund(
    policy: &Refund,
    used: i64,
    total: i64,
    first_play_at: Option<OffsetDateTime>,
) -> RefundAnswer {
    // "Before 1/3 of the course": used / total < 1/3, exactly.
    let below = |num: i64, den: i64| {
        i128::from(used) * i128::from(den) < i128::from(total) * i128::from(num)
    };
    let (refund_percent, refund_share) = match policy {
        Refund::None => (0.0, "none".to_owned()),
        // 학원법 시행령 별표 4: before the course starts, all of it.
        Refund::Academy if first_play_at.is_none() => (100.0, "all".to_owned()),
        Refund::Academy if total <= 0 || below(1, 3) => (66.67, "2/3".to_owned()),
        Refund::Academy if below(1, 2) => (50.0, "1/2".to_owned()),
        Refund::Academy => (0.0, "none".to_owned()),
        Refund::Table(rows) => {
            let p = rows
                .iter()
                .find(|r| total <= 0 || below(i64::from(r.below_percent), 100))
                .map_or(0, |r| r.refund_percent);
            (f64::from(p), format!("{p}%"))
        }
    };
    RefundAnswer {
        rule: policy.rule(),
        refund_percent,
        refund_share,
        course_percent_used: percent(used, total),
        first_play_at,
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::super::model::{Completion, RefundRow};
    use super::*;

    fn rules() -> Rules {
        Rules {
            channel_key: None,
            completion: Completion::default(),
            daily_limit_seconds: None,
            one_player_at_a_time: false,
            unlock_in_order: false,
            max_playback_rate: 4.0,
            time_zone: "Asia/Seoul".into(),
            refund: Refund::Academy,
        }
    }

    fn lesson(key: &str, seconds: i64) -> LessonTime {
        LessonTime {
            media_content_key: key.into(),
            seconds,
            source: "given",
        }
    }

    /// A session of `key` opened at `start_at` with `showtime`, and `played` of `count` blocks.
    fn session(
        key: &str,
        start_at: i64,
        showtime: i64,
        blocks: Option<(usize, usize)>,
    ) -> SessionFacts {
        let (count, played) = blocks.unwrap_or((0, 0));
        SessionFacts {
            media_content_key: key.into(),
            start_at,
            showtime,
            playtime: showtime,
            block_count: blocks.map(|_| count as i32),
            blocks_played: (0..count).map(|i| i < played).collect(),
            last_report_at: OffsetDateTime::from_unix_timestamp(start_at + showtime).unwrap(),
            duration: None,
            bound: None,
        }
    }

    #[test]
    fn a_session_without_blocks_is_not_capped_by_another_sessions_blocks() {
        // An old player's 1000 s (no blocks) complete the lesson; a later player's minute on one
        // block of ten takes nothing away.
        let l = [lesson("m", 1000)];
        let old = session("m", NOON, 1000, None);
        assert_eq!(
            progress(&rules(), &l, std::slice::from_ref(&old), DAY).lessons[0].recognised_seconds,
            1000
        );
        let both = progress(
            &rules(),
            &l,
            &[old, session("m", NOON + 5000, 60, Some((10, 1)))],
            DAY,
        );
        assert_eq!(both.lessons[0].recognised_seconds, 1000);
        assert!(both.complete);
        // Blocks split two ways (the account's block count changed): the better split covers.
        let split = [
            session("m", NOON, 900, Some((30, 30))),
            session("m", NOON + 1, 60, Some((60, 3))),
        ];
        assert_eq!(
            progress(&rules(), &l, &split, DAY).lessons[0].recognised_seconds,
            960
        );
    }

    #[test]
    fn unbound_sessions_count_for_nothing_and_are_counted() {
        let mut forged = session("m", NOON, 1000, None);
        forged.bound = Some(false);
        let mut bound = session("m", NOON + 1, 100, None);
        bound.bound = Some(true);
        let p = progress(&rules(), &[lesson("m", 1000)], &[forged, bound], DAY);
        assert_eq!(
            (p.lessons[0].showtime_seconds, p.unbound_sessions),
            (100, 1)
        );
        assert_eq!(
            p.lessons[0].recognised_seconds, 0,
            "100 s is below the floor"
        );
    }

    #[test]
    fn a_lesson_without_a_time_takes_the_users_own_reports_and_the_course_waits_for_every_time() {
        let l = [lesson("a", 100), lesson("b", 0)];
        let p = progress(&rules(), &l, &[session("a", NOON, 100, None)], DAY);
        assert!(!p.durations_known);
        assert_eq!(
            p.progress_percent, 100,
            "over the lessons whose time is known"
        );
        assert!(!p.complete, "b's time is unknown: not complete");
        let mut b = session("b", NOON + 500, 10, None);
        b.duration = Some(400);
        let p = progress(&rules(), &l, &[session("a", NOON, 100, None), b], DAY);
        assert_eq!(
            (
                p.lessons[1].lesson_seconds,
                p.lessons[1].lesson_seconds_from
            ),
            (400, "reports")
        );
        assert!(p.durations_known);
        assert_eq!(p.progress_percent, 20);
    }

    #[test]
    fn a_player_opened_and_never_played_is_no_first_play() {
        let p = progress(
            &rules(),
            &[lesson("m", 100)],
            &[session("m", NOON, 0, None)],
            DAY,
        );
        assert_eq!(p.refund.first_play_at, None);
        assert_eq!(p.refund.refund_share, "all");
    }

    const NOON: i64 = 1_790_000_000;
    const DAY: Day = (0, 1);

    #[test]
    fn two_x_speed_counts_the_real_time() {
        // A 30-minute lesson watched at 2x in 15 minutes: showtime 900 (playtime 1800).
        let p = progress(
            &rules(),
            &[lesson("m", 1800)],
            &[session("m", NOON, 900, None)],
            DAY,
        );
        assert_eq!(p.lessons[0].recognised_seconds, 900);
        assert_eq!(p.lessons[0].progress_percent, 50);
        assert!(!p.lessons[0].complete);
    }

    #[test]
    fn review_past_the_recognised_time_does_not_count() {
        let s = [
            session("m", NOON, 1500, None),
            session("m", NOON + 5000, 1500, None),
        ];
        let p = progress(&rules(), &[lesson("m", 1800)], &s, DAY);
        assert_eq!(p.lessons[0].showtime_seconds, 3000);
        assert_eq!(p.lessons[0].recognised_seconds, 1800);
        assert_eq!(p.lessons[0].progress_percent, 100);
        assert!(p.lessons[0].complete);
    }

    #[test]
    fn a_lesson_counts_nothing_below_the_floor_and_everything_from_it() {
        let l = [lesson("m", 1800)];
        assert_eq!(
            progress(&rules(), &l, &[session("m", NOON, 899, None)], DAY).lessons[0]
                .recognised_seconds,
            0
        );
        assert_eq!(
            progress(&rules(), &l, &[session("m", NOON, 900, None)], DAY).lessons[0]
                .recognised_seconds,
            900
        );
    }

    #[test]
    fn replaying_one_minute_is_capped_at_the_blocks_covered() {
        // 30 minutes of showtime, all of it in 2 of 30 blocks: 2/30 of 1800 s.
        let p = progress(
            &rules(),
            &[lesson("m", 1800)],
            &[session("m", NOON, 1800, Some((30, 2)))],
            DAY,
        );
        assert_eq!(p.lessons[0].recognised_seconds, 120);
        assert_eq!(p.lessons[0].blocks_watched, Some(2));
        assert!(!p.lessons[0].complete);
    }

    #[test]
    fn blocks_count_the_covered_share_alone() {
        let mut r = rules();
        r.completion.count = Count::Blocks;
        // Two sessions cover blocks 0-9 and 0-19 of 25: the union is 20.
        let s = [
            session("m", NOON, 10, Some((25, 10))),
            session("m", NOON + 1, 10, Some((25, 20))),
        ];
        let p = progress(&r, &[lesson("m", 1000)], &s, DAY);
        assert_eq!(p.lessons[0].recognised_seconds, 800);
        assert!(p.lessons[0].complete);
    }

    #[test]
    fn the_course_is_complete_at_its_percent_and_completed_at_rests_on_the_sessions_needed() {
        let l = [lesson("a", 1000), lesson("b", 1000)];
        let s = [
            session("a", NOON, 1000, None),        // last report NOON+1000
            session("b", NOON + 2000, 600, None),  // NOON+2600: 1600/2000 = 80%
            session("b", NOON + 9000, 1000, None), // later review: completion does not move
        ];
        let p = progress(&rules(), &l, &s, DAY);
        assert!(p.complete);
        assert_eq!(p.progress_percent, 100);
        assert_eq!(
            p.completed_at,
            OffsetDateTime::from_unix_timestamp(NOON + 2600).ok()
        );
        // Order-free: reversed, the same answer.
        let mut rev = s.to_vec();
        rev.reverse();
        assert_eq!(progress(&rules(), &l, &rev, DAY), p);
        // One second short of 80%: not complete.
        let short = [
            session("a", NOON, 1000, None),
            session("b", NOON + 2000, 599, None),
        ];
        let p = progress(&rules(), &l, &short, DAY);
        assert_eq!(
            (p.progress_percent, p.complete, p.completed_at),
            (79, false, None)
        );
    }

    #[test]
    fn lessons_unlock_in_order_at_their_percent() {
        let mut r = rules();
        r.unlock_in_order = true;
        let l = [lesson("a", 1000), lesson("b", 1000), lesson("c", 1000)];
        let p = progress(
            &r,
            &l,
            &[session("a", NOON, 800, None), session("b", NOON, 799, None)],
            DAY,
        );
        let unlocked: Vec<bool> = p.lessons.iter().map(|l| l.unlocked).collect();
        assert_eq!(unlocked, [true, true, false]);
        assert!(progress(&rules(), &l, &[], DAY)
            .lessons
            .iter()
            .all(|l| l.unlocked));
    }

    #[test]
    fn a_lesson_without_a_known_duration_counts_zero() {
        let l = [lesson("a", 0), lesson("b", 100)];
        let p = progress(
            &rules(),
            &l,
            &[session("a", NOON, 500, None), session("b", NOON, 100, None)],
            DAY,
        );
        assert!(!p.lessons[0].duration_known);
        assert_eq!(
            (p.lessons[0].recognised_seconds, p.lessons[0].complete),
            (0, false)
        );
        assert_eq!((p.course_seconds, p.progress_percent), (100, 100));
    }

    #[test]
    fn a_video_in_two_courses_counts_in_both_and_other_videos_in_neither() {
        let s = [
            session("shared", NOON, 600, None),
            session("elsewhere", NOON, 600, None),
        ];
        let one = progress(
            &rules(),
            &[lesson("shared", 600), lesson("x", 600)],
            &s,
            DAY,
        );
        let two = progress(&rules(), &[lesson("shared", 600)], &s, DAY);
        assert_eq!((one.recognised_seconds, one.progress_percent), (600, 50));
        assert_eq!((two.recognised_seconds, two.progress_percent), (600, 100));
    }

    #[test]
    fn today_counts_sessions_that_start_in_the_day() {
        let day = (NOON - 100, NOON + 100);
        let s = [
            session("m", NOON - 101, 50, None),
            session("m", NOON - 100, 40, None),
            session("m", NOON + 99, 30, None),
            session("m", NOON + 100, 20, None),
        ];
        assert_eq!(
            progress(&rules(), &[lesson("m", 1000)], &s, day).today_seconds,
            70
        );
    }

    #[test]
    fn the_academy_refund_at_each_threshold() {
        let at = Some(datetime!(2026-11-02 09:00 UTC));
        let r = |used| refund(&Refund::Academy, used, 300, at);
        assert_eq!(
            (r(0).refund_share.as_str(), r(0).refund_percent),
            ("2/3", 66.67)
        );
        assert_eq!(r(99).refund_share, "2/3");
        assert_eq!(
            r(100).refund_share,
            "1/2",
            "exactly 1/3 is no longer before it"
        );
        assert_eq!(r(149).refund_share, "1/2");
        assert_eq!(
            (r(150).refund_share.as_str(), r(150).refund_percent),
            ("none", 0.0)
        );
        assert_eq!(r(150).course_percent_used, 50);
        assert_eq!(refund(&Refund::Academy, 0, 300, None).refund_share, "all");
        assert_eq!(refund(&Refund::None, 0, 300, at).refund_percent, 0.0);
    }

    #[test]
    fn a_refund_table_takes_the_first_row_the_use_is_below() {
        let t = Refund::Table(vec![
            RefundRow {
                below_percent: 10,
                refund_percent: 90,
            },
            RefundRow {
                below_percent: 50,
                refund_percent: 30,
            },
        ]);
        let at = Some(datetime!(2026-11-02 09:00 UTC));
        assert_eq!(refund(&t, 9, 100, at).refund_percent, 90.0);
        assert_eq!(refund(&t, 10, 100, at).refund_percent, 30.0);
        assert_eq!(refund(&t, 50, 100, at).refund_percent, 0.0);
        assert_eq!(refund(&t, 50, 100, at).refund_share, "0%");
    }
}
