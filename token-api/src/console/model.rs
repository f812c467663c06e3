//! What each page shows, decided from the store's rows (after docs.rs's page structs beside
//! their templates): which videos a user watched and how much of each, which grants are in
//! force and what is left of them, each session's badges, what a refused viewer read, a
//! video's completion. Plain structs, tested without HTML; `pages` only renders them.

use time::OffsetDateTime;
use time_tz::{OffsetDateTimeExt as _, PrimitiveDateTimeExt as _, Tz};

use kollus_common::kollus::lms::Segment;

use crate::access_log::read::{Access, Bounded, Tally, Window};

pub use super::cell::{watched, Cell};
use super::store::{Change, Decision, PairSummary, Session, VideoAudience, VideoSummary};
use crate::configuration::Lang;
use crate::entitlements::model::{Entitlement, Scope};
use crate::playback::policy::Reason;

/// What a search found: a user, a video, both (an id that is both), or neither.
pub struct Found {
    pub user: Option<String>,
    pub media: Option<String>,
    /// The searched user id, not held, was erased on this UTC day (`YYYY-MM-DD`): the one thing
    /// the console tells about an erased user (the id itself is not shown back).
    pub erased_on: Option<String>,
}

/// A video's name as the catalog has it: its title, else its file's name, else nothing.
pub fn video_name(title: Option<String>, filename: Option<String>) -> String {
    title.or(filename).unwrap_or_default()
}

/// Sessions a refund view shows at most on one page (fewer when the page's byte budget is spent
/// first); the rest are a keyset link away.
pub const SESSIONS_PER_PAGE: usize = 25;

/// Videos a user's page shows at most (fewer when the byte budget is spent first).
pub const VIDEOS_PER_PAGE: usize = 50;

/// What a page may weigh, in bytes of HTML: its sessions or videos are shown until their part
/// ([`LIST_BYTES`]) is spent, every other part is bounded by its own count (200 decisions, 200
/// changes, `store::ACCESSES_PER_PAGE` accesses).
pub const PAGE_BYTES: usize = 1024 * 1024;

/// The part of [`PAGE_BYTES`] a page's list of sessions or videos may use (a quarter: drawing
/// is most of a page's time once its sums are PostgreSQL's).
pub const LIST_BYTES: usize = PAGE_BYTES / 4;

/// Width of a session's timeline, in SVG units (pixels at the page's scale).
pub const TIMELINE: u64 = 240;

/// One bar of a session's timeline: `[x, x + width)` in timeline pixels, over the played time
/// `[from, to)` in seconds of the video.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Run {
    pub x: u64,
    pub width: u64,
    pub from: u64,
    pub to: u64,
}

/// A session's played segments on a timeline `TIMELINE` pixels wide, for a video `duration`
/// seconds long (else as long as its furthest segment): each segment from where it started for
/// as long as it played (capped at the end, at least one pixel), and segments that share a pixel
/// merged into one bar. So at most one bar per pixel, whatever a report claimed.
pub fn timeline_runs(segments: &[Segment], duration: Option<i64>) -> Vec<Run> {
    let end = segments
        .iter()
        .map(|s| s.start_time.saturating_add(s.play_time))
        .max()
        .unwrap_or(0);
    let length = duration
        .and_then(|d| u64::try_from(d).ok())
        .filter(|d| *d > 0)
        .unwrap_or(end)
        .max(1);
    // In u128: seconds times the width cannot overflow.
    let x = |t: u64| (u128::from(t.min(length)) * u128::from(TIMELINE) / u128::from(length)) as u64;
    let mut spans: Vec<(u64, u64, u64, u64)> = segments
        .iter()
        .map(|s| {
            let to = s.start_time.saturating_add(s.play_time);
            let x0 = x(s.start_time).min(TIMELINE - 1);
            (x0, x(to).max(x0 + 1), s.start_time, to)
        })
        .collect();
    spans.sort_unstable();
    let mut runs: Vec<Run> = Vec::new();
    for (x0, x1, from, to) in spans {
        match runs.last_mut() {
            Some(r) if x0 < r.x + r.width => {
                r.width = r.width.max(x1 - r.x);
                r.from = r.from.min(from);
                r.to = r.to.max(to);
            }
            _ => runs.push(Run {
                x: x0,
                width: x1 - x0,
                from,
                to,
            }),
        }
    }
    runs
}

/// A user's page.
pub struct UserModel<'a> {
    pub user: &'a str,
    /// One per video watched, in the store's order.
    pub videos: Vec<WatchedVideo<'a>>,
    /// The entitlements in force now, newest first (at most `store::GRANTS_PER_PAGE`).
    pub grants: Vec<Grant<'a>>,
    /// Grants in force the page leaves out (past `store::GRANTS_PER_PAGE`).
    pub grants_not_shown: i64,
    /// Every access to this user's data, console and API, newest first (bounded).
    pub accesses: &'a Bounded<Access>,
    /// Where `videos` stand among all the user's.
    pub page: VideoPage,
}

/// One video a user watched, over all their sessions of it.
pub struct WatchedVideo<'a> {
    pub media: &'a str,
    pub name: String,
    pub sessions: i64,
    pub playtime: i64,
    /// Per block, over every session: watched by any, the most of it any session played.
    pub coverage: Vec<Cell>,
    /// Watched cells of `coverage` ([`watched`]).
    pub blocks_watched: usize,
    /// The earliest session's start (`None` if it is no time we can show).
    pub first: Option<OffsetDateTime>,
    pub last: OffsetDateTime,
}

/// An entitlement in force, with what its playtime limit leaves.
pub struct Grant<'a> {
    pub entitlement: &'a Entitlement,
    /// Playtime used on the one video a media grant covers (`None`: a channel grant's limit
    /// counts per video).
    pub used: Option<i64>,
    /// The limit less what was used (`None`: no limit, or counted per video).
    pub left: Option<i64>,
}

/// Where a user's page of videos stands among all the user's videos.
pub struct VideoPage {
    /// Every video the user watched.
    pub total: i64,
    /// Those sorting before this page (on the pages before it).
    pub earlier: i64,
}

impl<'a> UserModel<'a> {
    /// `videos` is a page of the user's videos, summed by the store (`store::user_videos`);
    /// `playtime` the user's playtime on the videos of their media grants (`store::user_playtime`).
    pub fn new(
        user: &'a str,
        videos: &'a [VideoSummary],
        playtime: &[(String, i64)],
        entitlements: &'a [Entitlement],
        page: VideoPage,
        accesses: &'a Bounded<Access>,
        now: OffsetDateTime,
    ) -> Self {
        let videos = videos
            .iter()
            .map(|v| WatchedVideo {
                media: &v.media_content_key,
                name: video_name(v.title.clone(), v.filename.clone()),
                sessions: v.sessions,
                playtime: v.playtime,
                blocks_watched: watched(&v.coverage),
                coverage: v.coverage.clone(),
                first: OffsetDateTime::from_unix_timestamp(v.first_start_at).ok(),
                last: v.last_report_at,
            })
            .collect();
        let playtime_of = |media: &str| -> i64 {
            playtime
                .iter()
                .find(|(m, _)| m == media)
                .map_or(0, |(_, p)| *p)
        };
        let grants = entitlements
            .iter()
            .filter(|e| e.in_force_at(now))
            .map(|e| {
                let used = (e.scope == Scope::Media).then(|| playtime_of(&e.key));
                Grant {
                    entitlement: e,
                    used,
                    left: e
                        .playtime_limit_seconds
                        .zip(used)
                        .map(|(l, u)| l.saturating_sub(u)),
                }
            })
            .collect();
        Self {
            user,
            videos,
            grants,
            grants_not_shown: 0,
            accesses,
            page,
        }
    }
}

/// A session's marks on the refund view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Badge {
    /// Its reports carried a valid hash.
    Verified,
    /// Its reports carried none.
    Unsigned,
    /// Hashes were not checked.
    Unchecked,
    /// A report did not come from a player URL issued for this user.
    Unbound,
    /// Its times are the device's clock.
    DeviceClock,
}

/// One session on the refund view.
pub struct SessionRow<'a> {
    pub session: &'a Session,
    /// Its start (`None` if it is no time we can show: the page shows the number).
    pub start: Option<OffsetDateTime>,
    /// Each block of the video as this session watched it (as many as the union row has).
    pub cells: Vec<Cell>,
    /// Its played segments on the timeline, at most one bar per pixel.
    pub runs: Vec<Run>,
    pub badges: Vec<Badge>,
}

/// One play or DRM answer, with the message a refused viewer read.
pub struct DecisionRow<'a> {
    pub decision: &'a Decision,
    /// Empty when the reason is no refusal of ours.
    pub message: &'static str,
}

/// The refund view: one user and one video.
pub struct RefundModel<'a> {
    pub user: &'a str,
    pub media: &'a str,
    pub name: String,
    /// Per block, over every session: watched by any, the most of it any session played.
    pub coverage: Vec<Cell>,
    /// Watched cells of `coverage` ([`watched`]).
    pub blocks_watched: usize,
    /// Every session of the user on the video.
    pub total: i64,
    /// Sessions newer than this page's (on the pages before it).
    pub newer: i64,
    /// This page's sessions, newest first (the page may show fewer: its byte budget).
    pub sessions: Vec<SessionRow<'a>>,
    pub decisions: Vec<DecisionRow<'a>>,
    pub changes: &'a [Change],
    /// Every access to the user's data, newest first (bounded).
    pub accesses: &'a Bounded<Access>,
}

impl RefundModel<'_> {
    /// How many sessions the page leaves out when it shows the first `shown` of its own:
    /// (newer ones, older ones).
    pub fn not_shown(&self, shown: usize) -> (i64, i64) {
        let shown = i64::try_from(shown).unwrap_or(i64::MAX);
        (
            self.newer,
            (self.total - self.newer).saturating_sub(shown).max(0),
        )
    }
}

pub struct RefundFacts<'a> {
    pub user: &'a str,
    pub media: &'a str,
    pub name: String,
    /// The union and counts over every session (`store::pair_summary`).
    pub summary: PairSummary,
    /// A page of sessions, newest first (`store::user_media_sessions`).
    pub sessions: &'a [Session],
    pub decisions: &'a [Decision],
    pub changes: &'a [Change],
    /// Every access to the user's data, newest first (bounded).
    pub accesses: &'a Bounded<Access>,
    /// The language refused viewers read (`PLAY_MESSAGE_LANG`).
    pub message_lang: Lang,
}

impl<'a> RefundModel<'a> {
    pub fn new(facts: RefundFacts<'a>) -> Self {
        let coverage = facts.summary.coverage;
        let sessions = facts
            .sessions
            .iter()
            .map(|s| SessionRow {
                session: s,
                start: OffsetDateTime::from_unix_timestamp(s.start_at).ok(),
                cells: (0..coverage.len()).map(|i| s.cell(i)).collect(),
                runs: timeline_runs(&s.segments, s.duration),
                badges: badges(s),
            })
            .collect();
        let lang = facts.message_lang;
        let decisions = facts
            .decisions
            .iter()
            .map(|d| DecisionRow {
                decision: d,
                message: Reason::ALL
                    .iter()
                    .find(|r| r.label() == d.reason)
                    .map(|r| r.message(lang))
                    .unwrap_or(""),
            })
            .collect();
        Self {
            user: facts.user,
            media: facts.media,
            name: facts.name,
            blocks_watched: watched(&coverage),
            coverage,
            total: facts.summary.sessions,
            newer: facts.summary.newer,
            sessions,
            decisions,
            changes: facts.changes,
            accesses: facts.accesses,
        }
    }
}

fn badges(s: &Session) -> Vec<Badge> {
    let mut badges = vec![match s.hash_verified {
        Some(true) => Badge::Verified,
        Some(false) => Badge::Unsigned,
        None => Badge::Unchecked,
    }];
    if s.bound == Some(false) {
        badges.push(Badge::Unbound);
    }
    if s.device_clock {
        badges.push(Badge::DeviceClock);
    }
    badges
}

/// A video's page: its viewers, completion and drop-off.
pub struct VideoModel<'a> {
    pub media: &'a str,
    pub name: String,
    pub viewers: usize,
    pub playtime: i64,
    /// Viewers by share of blocks watched: fewer than 25%, 25-50, 50-75, 75-100 (not all), all.
    pub completion: [usize; 5],
    /// Per block, how many viewers watched it.
    pub per_block: Vec<usize>,
}

impl<'a> VideoModel<'a> {
    /// From the store's sums (`store::audience`): the page reads no viewer.
    pub fn new(media: &'a str, name: String, audience: VideoAudience) -> Self {
        let count = |n: i64| usize::try_from(n).unwrap_or(0);
        Self {
            media,
            name,
            viewers: count(audience.viewers),
            playtime: audience.playtime,
            completion: audience.completion.map(count),
            per_block: audience.per_block.into_iter().map(count).collect(),
        }
    }
}

/// A calendar month of the review, in the console's time zone (`CONSOLE_TIME_ZONE`): the page
/// shows its times there, so its months begin at that zone's midnight.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Month {
    year: i32,
    /// 1 to 12.
    month: u8,
}

/// The first year a review may ask for, and the last: before the record, and a year PostgreSQL
/// and `time` both hold.
const MONTH_YEARS: std::ops::RangeInclusive<i32> = 2000..=9998;

impl Month {
    /// `YYYY-MM`, exactly (a year from 2000 to 9998).
    pub fn parse(s: &str) -> Result<Self, String> {
        let bad = || format!("month: {s:?} is no month; give YYYY-MM (e.g. 2026-12)");
        let (y, m) = s.split_once('-').ok_or_else(bad)?;
        let digits = |t: &str, n: usize| t.len() == n && t.bytes().all(|b| b.is_ascii_digit());
        if !digits(y, 4) || !digits(m, 2) {
            return Err(bad());
        }
        let (year, month): (i32, u8) =
            (y.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if !MONTH_YEARS.contains(&year) || !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(Self { year, month })
    }

    /// The month `t` falls in, in `tz`.
    pub fn containing(t: OffsetDateTime, tz: &Tz) -> Self {
        let local = t.to_timezone(tz);
        Self {
            year: local.year().clamp(*MONTH_YEARS.start(), *MONTH_YEARS.end()),
            month: u8::from(local.month()),
        }
    }

    /// `n` months before (negative: after).
    pub fn minus(self, n: i32) -> Self {
        let index = self.year * 12 + i32::from(self.month) - 1 - n;
        Self {
            year: index.div_euclid(12),
            month: u8::try_from(index.rem_euclid(12) + 1).unwrap_or(1),
        }
    }

    /// Midnight of its first day in `tz` (the first instant after it when a time change skips
    /// that midnight).
    pub fn start(self, tz: &Tz) -> OffsetDateTime {
        let month = time::Month::try_from(self.month).unwrap_or(time::Month::January);
        let date = time::Date::from_calendar_date(self.year, month, 1).unwrap_or(time::Date::MIN);
        let midnight = time::PrimitiveDateTime::new(date, time::Time::MIDNIGHT);
        midnight
            .assume_timezone(tz)
            .take_first()
            .unwrap_or_else(|| midnight.assume_timezone_utc(tz))
    }

    /// The instants the review reads: this month, and the three before it.
    pub fn window(self, tz: &Tz) -> Window {
        Window {
            prior_start: self.minus(3).start(tz),
            start: self.start(tz),
            end: self.minus(-1).start(tz),
        }
    }
}

impl std::fmt::Display for Month {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// Why a key's count of an action stands out in the review.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    /// More than three times the mean of the three months before.
    AboveThreeTimes,
    /// None in the three months before (a new key, or an action it never did).
    New,
}

impl Flag {
    /// This month's `count` against the three months before's `before` (summed): new when they
    /// hold none, above when `count > 3 × (before / 3)`, that is `count > before`, in integers.
    pub fn of(count: i64, before: i64) -> Option<Self> {
        if count <= 0 {
            None
        } else if before <= 0 {
            Some(Self::New)
        } else if count > before {
            Some(Self::AboveThreeTimes)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::AboveThreeTimes => "above_3x",
            Self::New => "new",
        }
    }
}

/// One key and action on the review.
pub struct TallyRow<'a> {
    pub tally: &'a Tally,
    /// The mean of the three months before.
    pub mean: f64,
    pub flag: Option<Flag>,
}

/// Downloads and refused sign-ins the review page lists at most (each).
pub const REVIEW_ROWS: usize = 500;
/// Keys and actions the review counts at most (the flagged first).
pub const REVIEW_TALLIES: usize = 500;
/// Rows of each part the review's CSV holds at most.
pub const REVIEW_CSV_ROWS: usize = 10_000;

/// The monthly review of the access record.
pub struct ReviewModel<'a> {
    pub month: Month,
    /// The month before, and the one after unless it is still to come.
    pub previous: Month,
    pub next: Option<Month>,
    pub downloads: &'a Bounded<Access>,
    pub refused: &'a Bounded<Access>,
    pub tallies: Vec<TallyRow<'a>>,
    pub tallies_more: i64,
}

impl<'a> ReviewModel<'a> {
    /// `now`'s month bounds the links: no month after it.
    pub fn new(
        month: Month,
        now: Month,
        downloads: &'a Bounded<Access>,
        refused: &'a Bounded<Access>,
        tallies: &'a Bounded<Tally>,
    ) -> Self {
        let next = month.minus(-1);
        Self {
            month,
            previous: month.minus(1),
            next: (next <= now).then_some(next),
            downloads,
            refused,
            tallies: tallies
                .rows
                .iter()
                .map(|t| TallyRow {
                    tally: t,
                    // A mean to show, not to compare: the flag compares integers.
                    mean: t.before as f64 / 3.0,
                    flag: Flag::of(t.this_month, t.before),
                })
                .collect(),
            tallies_more: tallies.more,
        }
    }

    /// Flagged keys and actions on the page.
    pub fn flagged(&self) -> usize {
        self.tallies.iter().filter(|t| t.flag.is_some()).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(playtime: i64, percents: &[i64]) -> Session {
        Session {
            start_at: 1_764_554_400,
            device: None,
            os: None,
            player_id: None,
            playtime,
            real_playtime: playtime,
            runtime: playtime,
            duration: None,
            segments: Vec::new(),
            segment_count: 0,
            blocks_played: percents.iter().map(|p| *p > 0).collect(),
            block_percent: percents.to_vec(),
            hash_verified: None,
            bound: None,
            device_clock: false,
        }
    }

    /// Cells as Kollus reports blocks with a percent: played when some of it was.
    fn cells(percents: &[i64]) -> Vec<Cell> {
        let played: Vec<bool> = percents.iter().map(|p| *p > 0).collect();
        (0..percents.len())
            .map(|i| Cell::of(percents, &played, i))
            .collect()
    }

    fn grant(scope: Scope, key: &str, limit: Option<i64>) -> Entitlement {
        Entitlement {
            scope,
            key: key.into(),
            expires_at: None,
            playtime_limit_seconds: limit,
            download: false,
            download_limit: None,
            granted_by: "app".into(),
            granted_at: OffsetDateTime::UNIX_EPOCH,
            revoked_by: None,
            revoked_at: None,
        }
    }

    fn summary(media: &str, sessions: i64, playtime: i64, coverage: &[i64]) -> VideoSummary {
        VideoSummary {
            media_content_key: media.into(),
            title: None,
            filename: Some(format!("{media}.mp4")),
            sessions,
            playtime,
            coverage: cells(coverage),
            first_start_at: 1_764_554_400,
            last_report_at: OffsetDateTime::from_unix_timestamp(1_764_558_000).unwrap(),
        }
    }

    #[test]
    fn a_user_page_shows_each_video_summed_and_grants_in_force_with_what_is_left() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let videos = [
            summary("m1", 2, 900, &[100, 50, 20]),
            summary("m2", 1, 60, &[10]),
        ];
        let mut expired = grant(Scope::Media, "m2", None);
        expired.expires_at = Some(now);
        let mut revoked = grant(Scope::Media, "m2", None);
        revoked.revoked_at = Some(now - time::Duration::hours(1));
        let mut later = grant(Scope::Channel, "c1", Some(100));
        later.expires_at = Some(now + time::Duration::seconds(1));
        let entitlements = [
            grant(Scope::Media, "m1", Some(3600)),
            expired,
            revoked,
            later,
        ];
        let page = VideoPage {
            total: 2,
            earlier: 0,
        };
        let playtime = [("m1".to_owned(), 900)];
        let none = Bounded::default();
        let p = UserModel::new("u1", &videos, &playtime, &entitlements, page, &none, now);

        let shown: Vec<_> = p
            .videos
            .iter()
            .map(|v| (v.media, v.sessions, v.playtime))
            .collect();
        assert_eq!(shown, [("m1", 2, 900), ("m2", 1, 60)]);
        assert_eq!(p.videos[0].blocks_watched, 3);
        assert_eq!(
            p.videos[0].name, "m1.mp4",
            "the file's name without a title"
        );
        assert_eq!(
            p.videos[0].first.map(|t| t.unix_timestamp()),
            Some(1_764_554_400)
        );

        let grants: Vec<_> = p
            .grants
            .iter()
            .map(|g| (g.entitlement.key.as_str(), g.used, g.left))
            .collect();
        // Expired at `now` and revoked grants are not in force; a channel's limit is per video.
        assert_eq!(grants, [("m1", Some(900), Some(2700)), ("c1", None, None)]);
    }

    #[test]
    fn the_refund_view_marks_each_session_and_shows_what_a_refused_viewer_read() {
        let mut unsigned = session(60, &[100, 100]);
        unsigned.hash_verified = Some(false);
        unsigned.bound = Some(false);
        unsigned.device_clock = true;
        unsigned.start_at = i64::MAX;
        let mut verified = session(60, &[0, 0, 0, 40]);
        verified.hash_verified = Some(true);
        verified.bound = Some(true);
        let sessions = [unsigned, verified];
        let decision = |reason: &str| Decision {
            decided_at: OffsetDateTime::UNIX_EPOCH,
            callback: "play".into(),
            kind: 1,
            allowed: false,
            reason: reason.into(),
            scope: None,
            target: None,
            player_id: None,
        };
        let decisions = [
            decision(Reason::NoEntitlement.label()),
            decision("not_ours"),
        ];
        let none = Bounded::default();
        let p = RefundModel::new(RefundFacts {
            user: "u1",
            media: "m1",
            name: String::new(),
            summary: PairSummary {
                sessions: 120,
                newer: 50,
                coverage: cells(&[100, 100, 0, 40]),
            },
            sessions: &sessions,
            decisions: &decisions,
            changes: &[],
            accesses: &none,
            message_lang: Lang::En,
        });
        assert_eq!(p.coverage, cells(&[100, 100, 0, 40]), "the store's union");
        assert_eq!(p.blocks_watched, 3);
        assert_eq!(
            p.not_shown(2),
            (50, 68),
            "newer on the pages before, older on those after"
        );
        assert_eq!(p.not_shown(1000), (50, 0));
        let badges: Vec<_> = p.sessions.iter().map(|r| r.badges.clone()).collect();
        assert_eq!(
            badges,
            [
                vec![Badge::Unsigned, Badge::Unbound, Badge::DeviceClock],
                vec![Badge::Verified]
            ]
        );
        assert_eq!(
            p.sessions[0].cells,
            cells(&[100, 100, 0, 0]),
            "every block of the union"
        );
        assert_eq!(
            p.sessions[0].start, None,
            "no time to show: the page shows the number"
        );
        assert_eq!(
            p.decisions[0].message,
            Reason::NoEntitlement.message(Lang::En)
        );
        assert!(!p.decisions[0].message.is_empty());
        assert_eq!(
            p.decisions[1].message, "",
            "no message for a reason that is not ours"
        );
    }

    #[test]
    fn blocks_kollus_marks_played_without_a_percent_are_watched_cells_and_counted_as_drawn() {
        // 300 blocks, each `b{i}` = 1 with `p{i}` = 0 (the LMS report's played flag alone).
        let mut marked = session(60, &[]);
        marked.blocks_played = vec![true; 300];
        marked.block_percent = vec![0; 300];
        // And one block of another session at 30%, past a block nobody watched.
        let mut other = session(60, &[]);
        other.blocks_played = vec![false, true];
        other.block_percent = vec![0, 30];
        let union: Vec<Cell> = (0..300)
            .map(|i| marked.cell(i).union(other.cell(i)))
            .collect();
        assert_eq!(
            union[1],
            Cell {
                watched: true,
                percent: 30
            }
        );
        let sessions = [marked, other];
        let none = Bounded::default();
        let p = RefundModel::new(RefundFacts {
            user: "u1",
            media: "m1",
            name: String::new(),
            summary: PairSummary {
                sessions: 2,
                newer: 0,
                coverage: union.clone(),
            },
            sessions: &sessions,
            decisions: &[],
            changes: &[],
            accesses: &none,
            message_lang: Lang::En,
        });
        let zero = Cell {
            watched: true,
            percent: 0,
        };
        assert!(
            p.sessions[0].cells.iter().all(|c| *c == zero),
            "watched, 0%"
        );
        assert_eq!(p.sessions[0].cells.len(), 300);
        assert_eq!(watched(&p.sessions[0].cells), 300);
        assert_eq!(watched(&p.sessions[1].cells), 1, "b1 only");
        assert!(!p.sessions[1].cells[0].watched);
        assert_eq!(p.blocks_watched, 300);
        assert_eq!(
            p.blocks_watched,
            watched(&p.coverage),
            "the count is the cells'"
        );

        let mut video = summary("m1", 1, 60, &[]);
        video.coverage = union;
        video.coverage.push(Cell::default());
        let videos = [video];
        let page = VideoPage {
            total: 1,
            earlier: 0,
        };
        let u = UserModel::new(
            "u1",
            &videos,
            &[],
            &[],
            page,
            &none,
            OffsetDateTime::UNIX_EPOCH,
        );
        assert_eq!(
            (u.videos[0].blocks_watched, u.videos[0].coverage.len()),
            (300, 301)
        );
    }

    #[test]
    fn a_timeline_has_at_most_one_bar_per_pixel_whatever_the_segments() {
        let seg = |start_time, play_time| Segment {
            block: 0,
            start_time,
            play_time,
        };
        // 10,000 one-second segments, two seconds apart, on a 20,000 s video: 84 s per pixel.
        let many: Vec<_> = (0..10_000).map(|i| seg(i * 2, 1)).collect();
        let runs = timeline_runs(&many, Some(20_000));
        assert_eq!(
            runs.len(),
            TIMELINE as usize,
            "a bar per pixel, not per segment"
        );
        assert_eq!((runs[0].from, runs[239].to), (0, 19_999));
        assert!(runs.iter().all(|r| r.width == 1));
        // Scattered over every pixel and beyond: never more bars than pixels, none sharing one.
        let scattered: Vec<_> = (0..10_000u64).map(|i| seg(i * 7919 % 20_000, 3)).collect();
        let runs = timeline_runs(&scattered, Some(20_000));
        assert!(runs.len() <= TIMELINE as usize, "{}", runs.len());
        for w in runs.windows(2) {
            assert!(w[0].x + w[0].width <= w[1].x, "no pixel shared: {w:?}");
        }
        assert!(runs.iter().all(|r| r.x + r.width <= TIMELINE));
        // Apart on the screen, apart on the timeline; in the order played.
        let runs = timeline_runs(&[seg(120, 600), seg(0, 60)], Some(240));
        let bars: Vec<_> = runs.iter().map(|r| (r.x, r.width)).collect();
        assert_eq!(bars, [(0, 60), (120, 120)], "capped at the end");
        let runs = timeline_runs(&[seg(u64::MAX, u64::MAX)], None);
        assert_eq!(
            (runs[0].x, runs[0].width),
            (TIMELINE - 1, 1),
            "on the timeline"
        );
    }
    #[test]
    fn a_review_month_is_yyyy_mm_and_starts_at_the_zones_midnight() {
        let seoul = time_tz::timezones::get_by_name("Asia/Seoul").unwrap();
        let m = Month::parse("2026-12").unwrap();
        assert_eq!(m.to_string(), "2026-12");
        for bad in [
            "2026-13",
            "2026-00",
            "26-12",
            "2026-1",
            "2026/12",
            "",
            "1999-12",
            "+026-12",
            "2026-12-01",
        ] {
            assert!(Month::parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(m.minus(1).to_string(), "2026-11");
        assert_eq!(m.minus(12).to_string(), "2025-12");
        assert_eq!(m.minus(-1).to_string(), "2027-01");
        assert_eq!(
            Month::parse("2026-01").unwrap().minus(3).to_string(),
            "2025-10"
        );
        let w = m.window(seoul);
        let utc = |s: &str| {
            OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).unwrap()
        };
        assert_eq!(w.start, utc("2026-11-30T15:00:00Z"), "midnight in Seoul");
        assert_eq!(w.end, utc("2026-12-31T15:00:00Z"));
        assert_eq!(w.prior_start, utc("2026-08-31T15:00:00Z"));
        assert_eq!(Month::containing(utc("2026-11-30T15:00:00Z"), seoul), m);
        assert_eq!(
            Month::containing(utc("2026-11-30T14:59:59Z"), seoul),
            m.minus(1)
        );
    }

    #[test]
    fn a_count_is_flagged_above_three_times_the_prior_mean_or_when_new() {
        // The three months before summed: 3 x their mean is their sum.
        assert_eq!(Flag::of(4, 3), Some(Flag::AboveThreeTimes));
        assert_eq!(Flag::of(3, 3), None, "three times the mean is not above it");
        assert_eq!(Flag::of(1, 0), Some(Flag::New));
        assert_eq!(Flag::of(0, 0), None);
        assert_eq!(Flag::of(31, 30), Some(Flag::AboveThreeTimes));
        let t = |key: &str, this_month, before| Tally {
            key_name: key.into(),
            action: "search".into(),
            this_month,
            before,
        };
        let tallies = Bounded {
            rows: vec![t("a", 4, 3), t("b", 1, 0), t("c", 2, 3)],
            more: 7,
        };
        let none = Bounded::default();
        let now = Month::parse("2026-12").unwrap();
        let p = ReviewModel::new(now, now, &none, &none, &tallies);
        assert_eq!(p.flagged(), 2);
        assert_eq!((p.tallies[2].mean * 10.0).round(), 10.0);
        assert_eq!(p.tallies_more, 7);
        assert_eq!(p.previous.to_string(), "2026-11");
        assert_eq!(p.next, None, "no month still to come");
        let p = ReviewModel::new(now.minus(1), now, &none, &none, &tallies);
        assert_eq!(p.next, Some(now));
    }
}
