//! The watch-session policy (SPEC.md section 3, made safe for at-least-once delivery), as a
//! pure merge: one session per (`client_user_id`, `media_content_key`, `start_at`); cumulative
//! counters keep their maximum; blocks merge per block (played: OR, seconds and percent: max);
//! the position comes from the report with the largest `runtime`; played segments merge by
//! (block, start time), keeping the longest play time; a session is `verified` only when every
//! report applied to it carried a valid hash; `device_clock` marks a session whose offline
//! reports came with a device clock we cannot trust; descriptive fields and uservalues, the same
//! in every report of one player, keep the greatest value when a broken player's disagree.
//!
//! Every field is a join (commutative, associative, idempotent), so any order, batching and
//! number of repeats of the same reports give the same session: exactly-once effect needs no
//! record of which reports were applied. It is the only copy of the policy: the worker merges
//! each report into its stored session here, in Rust (`history.rs`); the segment merge and the
//! `verified` rule, which token-api's read API also applies across a user's sessions, live in
//! `kollus_common::kollus::lms::merge`.
//!
//! Before any of that, [`Plausibility`] holds each report to ceilings (counters that cannot be
//! true together, or with when it was received): one past them is refused, never merged.

use std::collections::BTreeMap;

use kollus_common::domain::{ClientUserId, MediaContentKey, UnixSeconds};
use kollus_common::kollus::lms::checksum::HashVerdict;
use kollus_common::kollus::lms::{Block, LmsReport};
// The segment merge and the `verified` rule live in common, where the read API uses them too.
use kollus_common::kollus::binding::Binding;
pub use kollus_common::kollus::lms::merge::{merge_segments, segment_list, Segments, Signed};
use time::OffsetDateTime;

/// The most any number in a report may be (2^40). Seconds, percents and positions of real
/// viewing are far below it (2^40 s is 34,800 years), and over eight million sessions at it
/// still sum within a bigint: a forged counter can overflow neither a column nor a rollup.
pub const MAX_COUNTER: u64 = 1 << 40;

/// How far `start_at` may be ahead of the time the report was received, whatever the clock:
/// a day covers any device set to a wrong time zone (UTC+14 at most), and no player is started
/// tomorrow. Offline (`serial`) reports are forgiven a wrong clock up to here, not beyond.
pub const MAX_START_AT_AHEAD_SECONDS: i64 = 86_400;

/// Slack for `real_playtime` over `duration`. Both are whole seconds, rounded by the player on
/// its own; a player counting 1 s ticks can count the last partial second twice over, and
/// `duration` is one encoding profile's length, which may differ from the one played by a frame
/// or a keyframe interval. 5 s covers that and still refuses any claim of a second viewing.
pub const DURATION_SLACK_SECONDS: u64 = 5;

/// Slack between two counters the player measures on its one clock (`showtime` and `runtime`,
/// `showtime` and `playtime`): each is rounded to whole seconds separately, and a report sent
/// mid-tick can have counted one and not yet the other.
pub const SAME_CLOCK_SLACK_SECONDS: u64 = 2;

/// What a believable report looks like. Players are untrusted: a report outside these bounds is
/// dead-lettered with the reason rather than merged (its maximums would stick forever).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Plausibility {
    /// Most blocks a report may describe.
    #[arg(long, env = "HISTORY_MAX_BLOCKS", default_value_t = 1000)]
    pub max_blocks: u32,
    /// Fastest playback rate players offer (token-api lets a token offer up to 4.0): `playtime`
    /// counts 10 s at 2x as 20 s, so a report's `playtime` may be at most its `showtime` (time
    /// in play state) at this rate, and, without `serial`, the time since `start_at` at this rate.
    #[arg(long, env = "HISTORY_MAX_PLAYBACK_RATE", default_value_t = 4.0, value_parser = kollus_common::settings::playback_rate)]
    pub max_playback_rate: f64,
    /// Seconds of slack for clock skew between the player, Kollus and us.
    #[arg(long, env = "HISTORY_CLOCK_TOLERANCE_SECONDS", default_value_t = 300)]
    pub tolerance_seconds: i64,
}

impl Default for Plausibility {
    /// The clap defaults (`--help`).
    fn default() -> Self {
        kollus_common::settings::defaults()
    }
}

/// Which bound a refused report is past. Its [`reason`](Self::reason) is the dead-letter
/// reason, and the `reason` label of `kollus_history_deadletter_total`: a short, fixed set
/// (strum's text: `implausible_` and the variant).
#[derive(Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::VariantArray)]
#[strum(serialize_all = "snake_case", prefix = "implausible_")]
pub enum Ceiling {
    /// A number over [`MAX_COUNTER`].
    Counter,
    /// `block_count` over `HISTORY_MAX_BLOCKS`.
    BlockCount,
    /// `start_at` over [`MAX_START_AT_AHEAD_SECONDS`] after the report was received.
    StartAt,
    /// `real_playtime` over `duration`.
    RealPlaytime,
    /// `showtime` over `runtime`.
    Showtime,
    /// `playtime` over `showtime` at the fastest playback rate.
    Playtime,
    /// Times only a wrong clock explains, in a report without `serial` (which would be forgiven).
    Clock,
}

impl Ceiling {
    pub const ALL: &[Self] = <Self as strum::VariantArray>::VARIANTS;

    pub fn reason(self) -> &'static str {
        self.into()
    }
}

/// Why a report cannot be true: the bound it is past, and how (naming the field and values).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Implausible {
    pub ceiling: Ceiling,
    pub detail: String,
}

impl Implausible {
    fn new(ceiling: Ceiling, detail: String) -> Self {
        Self { ceiling, detail }
    }
}

/// What the plausibility check makes of a believable report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Assessment {
    /// The report's times only fit a wrong device clock (SPEC.md 4.3: offline reports carry the
    /// device's `start_at` and a `serial`). Applied, and the session flagged.
    pub device_clock: bool,
}

impl Plausibility {
    /// Why `r`, received at `received_at`, cannot be true; or how it can.
    ///
    /// The ceilings ([`Self::ceilings`]) hold for every report. Reports of offline playback
    /// (`serial` present) are real viewing whatever the device's clock says, so a time that does
    /// not fit the clock never refuses them: it flags them instead. `serial` is the player's
    /// word like the rest of the report, so that is all it buys.
    pub fn check(
        &self,
        r: &LmsReport,
        received_at: OffsetDateTime,
    ) -> Result<Assessment, Implausible> {
        self.ceilings(r, received_at)?;
        match (self.clock_problem(r, received_at), r.content.serial) {
            (None, _) => Ok(Assessment::default()),
            (Some(_), Some(_)) => Ok(Assessment { device_clock: true }),
            (Some(problem), None) => Err(Implausible::new(Ceiling::Clock, problem)),
        }
    }

    /// The bounds that do not depend on the device's clock, for every report, `serial` or not.
    /// Each compares counters of one report (SPEC.md 3, Kollus's example: play 0-10 s at 2x,
    /// seek to 0, watch 10 s, pause 10 s gives playtime 40, real_playtime 20, runtime 30,
    /// showtime 20):
    ///
    /// - `real_playtime` is video seconds played, repeats not counted: at most `duration`;
    /// - `showtime` is wall-clock time in play state and `runtime` wall-clock time playing or
    ///   paused, both since the player started: `showtime` at most `runtime` (not `playtime`,
    ///   which is video seconds and exceeds the wall clock at 2x);
    /// - `playtime` is video seconds played, speed-weighted, repeats counted: at most `showtime`
    ///   at the fastest rate.
    ///
    /// A bound whose counter the report omits (old players omit `duration`, `runtime` and
    /// `showtime`) is not checked; [`MAX_COUNTER`] still holds.
    fn ceilings(&self, r: &LmsReport, received_at: OffsetDateTime) -> Result<(), Implausible> {
        counters_within(r)?;
        if let Some(b) = &r.blocks {
            if b.count > self.max_blocks {
                return Err(Implausible::new(
                    Ceiling::BlockCount,
                    format!(
                        "block_count {} is over the limit of {}",
                        b.count, self.max_blocks
                    ),
                ));
            }
        }
        let c = &r.content;
        let start = c.start_at.0;
        let now = received_at.unix_timestamp();
        if start > now.saturating_add(MAX_START_AT_AHEAD_SECONDS) {
            return Err(Implausible::new(
                Ceiling::StartAt,
                format!(
                    "start_at {start} is more than {MAX_START_AT_AHEAD_SECONDS} s after the \
                     report was received ({now}), whatever the device's clock"
                ),
            ));
        }
        if let (Some(real), Some(duration)) = (c.real_playtime, c.duration) {
            if real > duration + DURATION_SLACK_SECONDS {
                return Err(Implausible::new(
                    Ceiling::RealPlaytime,
                    format!(
                        "real_playtime {real} s is more than the video's duration {duration} s \
                         (+{DURATION_SLACK_SECONDS} s)"
                    ),
                ));
            }
        }
        if let (Some(show), Some(run)) = (c.showtime, c.runtime) {
            if show > run + SAME_CLOCK_SLACK_SECONDS {
                return Err(Implausible::new(
                    Ceiling::Showtime,
                    format!(
                        "showtime {show} s is more than runtime {run} s \
                         (+{SAME_CLOCK_SLACK_SECONDS} s)"
                    ),
                ));
            }
        }
        if let (Some(play), Some(show)) = (c.playtime, c.showtime) {
            // Exact in f64: both are at most 2^40 (checked above).
            let most = (show + SAME_CLOCK_SLACK_SECONDS) as f64 * self.max_playback_rate;
            if play as f64 > most {
                return Err(Implausible::new(
                    Ceiling::Playtime,
                    format!(
                        "playtime {play} s is more than showtime {show} s \
                         (+{SAME_CLOCK_SLACK_SECONDS} s) allows at {}x",
                        self.max_playback_rate
                    ),
                ));
            }
        }
        Ok(())
    }

    /// What about the report's times cannot be true with a right clock.
    fn clock_problem(&self, r: &LmsReport, received_at: OffsetDateTime) -> Option<String> {
        let start = r.content.start_at.0;
        let now = received_at.unix_timestamp();
        if start > now + self.tolerance_seconds {
            return Some(format!(
                "start_at {start} is in the future (received at {now})"
            ));
        }
        let elapsed = (now - start).max(0) + self.tolerance_seconds;
        let possible = (elapsed as f64 * self.max_playback_rate) as u64;
        match r.content.playtime {
            Some(p) if p > possible => Some(format!(
                "playtime {p} s is more than {elapsed} s since start_at allows at {}x",
                self.max_playback_rate
            )),
            _ => None,
        }
    }
}

/// Refuses a report with any number over [`MAX_COUNTER`] (`start_at` aside: a time, bounded by
/// [`MAX_START_AT_AHEAD_SECONDS`]), naming the first such field as the wire names it.
fn counters_within(r: &LmsReport) -> Result<(), Implausible> {
    fn within(v: u64, field: impl FnOnce() -> String) -> Result<(), Implausible> {
        if v <= MAX_COUNTER {
            return Ok(());
        }
        Err(Implausible::new(
            Ceiling::Counter,
            format!("{} {v} is over the limit of {MAX_COUNTER}", field()),
        ))
    }
    let c = &r.content;
    let content = [
        ("duration", c.duration),
        ("playtime", c.playtime),
        ("real_playtime", c.real_playtime),
        ("playtime_percent", c.playtime_percent),
        ("last_play_at", c.last_play_at),
        ("runtime", c.runtime),
        ("showtime", c.showtime),
        ("serial", c.serial),
    ];
    for (name, v) in content {
        if let Some(v) = v {
            within(v, || format!("content_info.{name}"))?;
        }
    }
    for (i, b) in r.blocks.iter().flat_map(|b| &b.items).enumerate() {
        within(b.seconds, || format!("block_info.blocks.t{i}"))?;
        within(b.percent, || format!("block_info.blocks.p{i}"))?;
    }
    for (i, s) in r.segments.iter().enumerate() {
        within(s.start_time, || {
            format!("block_info.sessions[{i}].start_time")
        })?;
        within(s.play_time, || {
            format!("block_info.sessions[{i}].play_time")
        })?;
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    pub client_user_id: ClientUserId,
    pub media_content_key: MediaContentKey,
    pub start_at: UnixSeconds,
}

/// One session's state merged from one or more reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    pub key: SessionKey,
    pub channel_key: Option<String>,
    pub encoding_profile: Option<String>,
    pub duration: Option<u64>,
    pub player_id: Option<String>,
    pub hardware_id: Option<String>,
    pub device: Option<String>,
    pub os: Option<String>,
    pub version: Option<String>,
    pub host_name: Option<String>,
    pub uservalues: BTreeMap<String, String>,
    pub playtime: u64,
    pub real_playtime: u64,
    pub runtime: u64,
    pub showtime: u64,
    pub playtime_percent: u64,
    /// (runtime of the report, its position): the largest pair wins.
    pub position: Option<(u64, u64)>,
    pub block_count: Option<u32>,
    pub blocks: Vec<Block>,
    /// Played segments (`block_info.sessions`), merged.
    pub segments: Segments,
    pub signed: Signed,
    /// Whether every report carried its user's viewer binding (the same all-of rule as
    /// `signed`: unchecked when binding was off).
    pub bound: Signed,
    /// Some report's times only fit a wrong device clock.
    pub device_clock: bool,
    pub first_report_at: OffsetDateTime,
    pub last_report_at: OffsetDateTime,
}

impl Session {
    /// A session as one report describes it. `uservalues` from the callback URL's query are
    /// merged under the report's own.
    pub fn from_report(
        r: &LmsReport,
        received_at: OffsetDateTime,
        query_uservalues: impl IntoIterator<Item = (String, String)>,
        hash: Option<HashVerdict>,
        assessment: Assessment,
    ) -> Self {
        let mut segments = Segments::new();
        merge_segments(&mut segments, r.segments.iter().copied());
        let c = &r.content;
        let u = &r.user;
        let mut uservalues: BTreeMap<String, String> = query_uservalues
            .into_iter()
            .filter(|(k, _)| k.starts_with("uservalue"))
            .collect();
        uservalues.extend(r.uservalues.clone());
        Self {
            key: SessionKey {
                client_user_id: u.client_user_id.clone(),
                media_content_key: c.media_content_key.clone(),
                start_at: c.start_at,
            },
            channel_key: c.channel_key.clone(),
            encoding_profile: c.encoding_profile.clone(),
            duration: c.duration,
            player_id: u.player_id.clone(),
            hardware_id: u.hardware_id.clone(),
            device: u.device.clone(),
            os: u.os.clone(),
            version: u.version.clone(),
            host_name: u.host_name.clone(),
            uservalues,
            playtime: c.playtime.unwrap_or(0),
            real_playtime: c.real_playtime.unwrap_or(0),
            runtime: c.runtime.unwrap_or(0),
            showtime: c.showtime.unwrap_or(0),
            playtime_percent: c.playtime_percent.unwrap_or(0),
            position: c.last_play_at.map(|p| (c.runtime.unwrap_or(0), p)),
            block_count: r.blocks.as_ref().map(|b| b.count),
            blocks: r
                .blocks
                .as_ref()
                .map(|b| b.items.clone())
                .unwrap_or_default(),
            segments,
            signed: Signed::of(hash),
            bound: Signed::Unchecked,
            device_clock: assessment.device_clock,
            first_report_at: received_at,
            last_report_at: received_at,
        }
    }

    /// The viewer binding ingest found on the report (`None`: binding was off).
    pub fn with_binding(mut self, binding: Option<Binding>) -> Self {
        self.bound = Signed::from_option(binding.map(Binding::is_bound));
        self
    }

    /// Folds `other` (the same session) into `self`; says whether `self` changed.
    ///
    /// Every field is a join: the result depends only on the set of reports merged, not on
    /// their order, repeats or batching. Counters, blocks and segments keep maxima (and ORs);
    /// times keep the earliest and latest. Descriptive fields are the same in every report of
    /// one player; when a broken player's reports disagree, the greatest value is kept, so the
    /// row still does not depend on which report came first.
    pub fn merge(&mut self, other: Session) -> bool {
        debug_assert_eq!(self.key, other.key);
        let mut changed = false;
        fn join<T: Ord>(mine: &mut T, theirs: T, changed: &mut bool) {
            if theirs > *mine {
                *mine = theirs;
                *changed = true;
            }
        }
        let c = &mut changed;
        join(&mut self.channel_key, other.channel_key, c);
        join(&mut self.encoding_profile, other.encoding_profile, c);
        join(&mut self.duration, other.duration, c);
        join(&mut self.player_id, other.player_id, c);
        join(&mut self.hardware_id, other.hardware_id, c);
        join(&mut self.device, other.device, c);
        join(&mut self.os, other.os, c);
        join(&mut self.version, other.version, c);
        join(&mut self.host_name, other.host_name, c);
        for (k, v) in other.uservalues {
            match self.uservalues.get_mut(&k) {
                Some(mine) => join(mine, v, c),
                None => {
                    self.uservalues.insert(k, v);
                    *c = true;
                }
            }
        }
        join(&mut self.playtime, other.playtime, c);
        join(&mut self.real_playtime, other.real_playtime, c);
        join(&mut self.runtime, other.runtime, c);
        join(&mut self.showtime, other.showtime, c);
        join(&mut self.playtime_percent, other.playtime_percent, c);
        join(&mut self.position, other.position, c);
        join(&mut self.block_count, other.block_count, c);
        if self.blocks.len() < other.blocks.len() {
            self.blocks.resize(other.blocks.len(), Block::default());
            *c = true;
        }
        for (mine, theirs) in self.blocks.iter_mut().zip(other.blocks) {
            join(&mut mine.played, theirs.played, c);
            join(&mut mine.seconds, theirs.seconds, c);
            join(&mut mine.percent, theirs.percent, c);
        }
        for (key, play_time) in other.segments {
            match self.segments.get_mut(&key) {
                Some(mine) => join(mine, play_time, c),
                None => {
                    self.segments.insert(key, play_time);
                    *c = true;
                }
            }
        }
        let signed = self.signed.merge(other.signed);
        if signed != self.signed {
            self.signed = signed;
            *c = true;
        }
        let bound = self.bound.merge(other.bound);
        if bound != self.bound {
            self.bound = bound;
            *c = true;
        }
        join(&mut self.device_clock, other.device_clock, c);
        if other.first_report_at < self.first_report_at {
            self.first_report_at = other.first_report_at;
            *c = true;
        }
        join(&mut self.last_report_at, other.last_report_at, c);
        changed
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use kollus_common::kollus::lms::Segment;

    /// The sessions `sessions` merge into, one per key, in key order.
    fn coalesce(sessions: impl IntoIterator<Item = Session>) -> Vec<Session> {
        let mut by_key: HashMap<SessionKey, Session> = HashMap::new();
        for s in sessions {
            match by_key.get_mut(&s.key) {
                Some(existing) => {
                    existing.merge(s);
                }
                None => {
                    by_key.insert(s.key.clone(), s);
                }
            }
        }
        let mut out: Vec<Session> = by_key.into_values().collect();
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    fn report(
        start_at: i64,
        playtime: u64,
        runtime: u64,
        position: u64,
        blocks: &[(bool, u64)],
    ) -> LmsReport {
        let blocks_json: serde_json::Map<String, serde_json::Value> = blocks
            .iter()
            .enumerate()
            .flat_map(|(i, (b, t))| {
                [
                    (format!("b{i}"), serde_json::json!(u8::from(*b))),
                    (format!("t{i}"), serde_json::json!(t)),
                    (format!("p{i}"), serde_json::json!(t * 2)),
                ]
            })
            .collect();
        let doc = serde_json::json!({
            "user_info": {"client_user_id": "u1", "device": "x86_64"},
            "content_info": {"media_content_key": "m1", "start_at": start_at,
                "playtime": playtime, "real_playtime": playtime / 2, "runtime": runtime,
                "showtime": playtime, "last_play_at": position},
            "block_info": {"block_count": blocks.len(), "blocks": blocks_json},
        });
        LmsReport::from_json(doc.to_string().as_bytes()).unwrap()
    }

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_700_000_000 + s).unwrap()
    }

    fn session(r: &LmsReport, t: i64) -> Session {
        Session::from_report(r, at(t), [], None, Assessment::default())
    }

    /// 20 growing reports of one session: block 0 played from report 4 on, block 1 from
    /// report 11 on.
    fn growing_reports() -> Vec<LmsReport> {
        (1..=20)
            .map(|i| {
                report(
                    100,
                    i * 10,
                    i * 15,
                    i * 7,
                    &[(i > 3, i), (i > 10, i / 2), (false, 0)],
                )
            })
            .collect()
    }

    #[test]
    fn growing_reports_merge_to_their_maximums() {
        let reports = growing_reports();
        let in_order = coalesce(
            reports
                .iter()
                .enumerate()
                .map(|(i, r)| session(r, i as i64)),
        );
        let s = &in_order[0];
        assert_eq!(in_order.len(), 1);
        assert_eq!((s.playtime, s.real_playtime, s.runtime), (200, 100, 300));
        assert_eq!(
            s.position,
            Some((300, 140)),
            "the position of the latest report"
        );
        assert_eq!(
            s.blocks,
            [
                Block {
                    played: true,
                    seconds: 20,
                    percent: 40
                },
                Block {
                    played: true,
                    seconds: 10,
                    percent: 20
                },
                Block {
                    played: false,
                    seconds: 0,
                    percent: 0
                },
            ]
        );
        assert_eq!((s.first_report_at, s.last_report_at), (at(0), at(19)));
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(512))]

        /// Any of the 20! orders (proptest's shuffle reaches every permutation) merges to the
        /// session of the reports merged in order.
        #[test]
        fn growing_reports_merge_to_their_maximums_in_any_order(
            order in proptest::strategy::Strategy::prop_shuffle(
                proptest::strategy::Just((0..20).collect::<Vec<usize>>())
            ),
        ) {
            let reports = growing_reports();
            let in_order = coalesce(
                reports
                    .iter()
                    .enumerate()
                    .map(|(i, r)| session(r, i as i64)),
            );
            let shuffled = coalesce(order.iter().map(|&i| session(&reports[i], i as i64)));
            proptest::prop_assert_eq!(in_order, shuffled, "order {:?}", order);
        }
    }

    #[test]
    fn a_redelivered_report_changes_nothing_and_says_so() {
        let r = report(100, 40, 30, 10, &[(true, 10)]);
        let once = coalesce([session(&r, 0)]);
        let thrice = coalesce([session(&r, 0), session(&r, 0), session(&r, 0)]);
        assert_eq!(once, thrice);
        let mut s = session(&r, 0);
        assert!(!s.merge(session(&r, 0)), "the same report again");
        assert!(s.merge(session(&report(100, 41, 30, 10, &[(true, 10)]), 0)));
        assert!(!s.merge(session(&r, 0)), "an older report, late");
    }

    #[test]
    fn disagreeing_descriptive_fields_keep_the_greatest_in_any_order() {
        let mut a = report(100, 10, 10, 1, &[]);
        let mut b = report(100, 20, 20, 2, &[]);
        a.user.device = Some("a-device".into());
        b.user.device = Some("b-device".into());
        a.uservalues.insert("uservalue0".into(), "zeta".into());
        b.uservalues.insert("uservalue0".into(), "alpha".into());
        let ab = coalesce([session(&a, 0), session(&b, 1)]);
        let ba = coalesce([session(&b, 1), session(&a, 0)]);
        assert_eq!(ab, ba);
        assert_eq!(ab[0].device.as_deref(), Some("b-device"));
        assert_eq!(ab[0].uservalues["uservalue0"], "zeta");
    }

    #[test]
    fn another_start_at_is_another_session() {
        let a = report(100, 40, 30, 10, &[]);
        let b = report(200, 5, 5, 5, &[]);
        let sessions = coalesce([session(&a, 0), session(&b, 1), session(&a, 2)]);
        assert_eq!(sessions.len(), 2);
        assert_eq!(sessions[0].key.start_at, UnixSeconds(100));
        assert_eq!(sessions[1].playtime, 5, "never summed across sessions");
    }

    #[test]
    fn kollus_example_counters() {
        // Play 0-10 s at 2x, seek to 0, watch 10 s, pause 10 s (SPEC.md section 3).
        let doc = br#"{"user_info":{"client_user_id":"u"},"content_info":{"media_content_key":"m",
            "start_at":"1","playtime":"40","real_playtime":"20","runtime":"30","showtime":"20"}}"#;
        let r = LmsReport::from_json(doc).unwrap();
        let s = &coalesce([session(&r, 0), session(&r, 5)])[0];
        assert_eq!(
            (s.playtime, s.real_playtime, s.runtime, s.showtime),
            (40, 20, 30, 20)
        );
    }

    #[test]
    fn impossible_reports_are_named() {
        let p = Plausibility::default();
        let start = at(0).unix_timestamp();
        let r = |playtime: u64, blocks: usize| {
            report(start, playtime, 4000, 1, &vec![(false, 0); blocks])
        };
        let received = at(600);
        assert_eq!(
            p.check(&r(3000, 3), received),
            Ok(Assessment::default()),
            "900 s at 4x allows 3600"
        );
        let refused = |r: &LmsReport, at: OffsetDateTime| p.check(r, at).unwrap_err();
        let e = refused(&r(3601, 3), received);
        assert_eq!(e.ceiling, Ceiling::Clock);
        assert!(e.detail.contains("playtime 3601"), "{e:?}");
        let e = refused(&r(1, 1001), received);
        assert_eq!(e.ceiling, Ceiling::BlockCount);
        assert!(e.detail.contains("block_count 1001"), "{e:?}");
        let e = refused(&r(1, 1), at(-400));
        assert_eq!(e.ceiling, Ceiling::Clock);
        assert!(e.detail.contains("in the future"), "{e:?}");
        assert_eq!(
            p.check(&r(1, 1), at(-200)),
            Ok(Assessment::default()),
            "within the clock tolerance"
        );
    }

    #[test]
    fn offline_reports_with_a_wrong_clock_are_applied_and_flagged() {
        let p = Plausibility::default();
        let start = at(0).unix_timestamp();
        let mut offline = report(start + 86_400, 5000, 5000, 1, &[]);
        offline.content.serial = Some(3);
        let offline_clock = Assessment { device_clock: true };
        let flagged = Ok(offline_clock);
        assert_eq!(p.check(&offline, at(0)), flagged, "a day ahead");
        let mut behind = report(start, 9000, 9000, 1, &[]);
        behind.content.serial = Some(1);
        assert_eq!(p.check(&behind, at(60)), flagged, "too much playtime");
        offline.blocks = Some(kollus_common::kollus::lms::Blocks {
            count: 5000,
            items: vec![Block::default(); 5000],
        });
        assert!(
            p.check(&offline, at(0)).is_err(),
            "only the clock is forgiven"
        );
        let s = Session::from_report(&behind, at(60), [], None, offline_clock);
        let mut merged = session(&behind, 61);
        merged.merge(s);
        assert!(merged.device_clock, "one flagged report flags the session");
    }

    /// A believable report started at `at(0)`, with `serial` or not, its `content_info` fields
    /// replaced by those of `fields`.
    fn with_content(serial: bool, fields: serde_json::Value) -> LmsReport {
        let mut doc = serde_json::json!({
            "user_info": {"client_user_id": "u1"},
            "content_info": {"media_content_key": "m1", "start_at": at(0).unix_timestamp(),
                "duration": 600, "playtime": 100, "real_playtime": 90, "runtime": 120,
                "showtime": 100, "last_play_at": 95},
        });
        if serial {
            doc["content_info"]["serial"] = serde_json::json!(1);
        }
        for (k, v) in fields.as_object().expect("an object of fields") {
            doc["content_info"][k] = v.clone();
        }
        LmsReport::from_json(doc.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn every_ceiling_refuses_offline_reports_too_and_the_ceiling_itself_passes() {
        use serde_json::json;
        let p = Plausibility::default();
        let received = at(600);
        let day_ahead = received.unix_timestamp() + MAX_START_AT_AHEAD_SECONDS;
        let over = MAX_COUNTER + 1;
        // (at the ceiling, one past it, the ceiling): SPEC.md 3's meanings, the constants' slack.
        let cases = [
            (
                json!({"playtime": 700, "real_playtime": 605, "showtime": 200, "runtime": 300}),
                json!({"playtime": 700, "real_playtime": 606, "showtime": 200, "runtime": 300}),
                Ceiling::RealPlaytime,
            ),
            (
                json!({"playtime": 302, "showtime": 302, "runtime": 300}),
                json!({"playtime": 303, "showtime": 303, "runtime": 300}),
                Ceiling::Showtime,
            ),
            (
                json!({"playtime": 408, "showtime": 100}),
                json!({"playtime": 409, "showtime": 100}),
                Ceiling::Playtime,
            ),
            (
                json!({"start_at": day_ahead}),
                json!({"start_at": day_ahead + 1}),
                Ceiling::StartAt,
            ),
            (
                json!({"last_play_at": MAX_COUNTER}),
                json!({"last_play_at": over}),
                Ceiling::Counter,
            ),
            (
                json!({"duration": MAX_COUNTER, "real_playtime": MAX_COUNTER}),
                json!({"duration": over, "real_playtime": over}),
                Ceiling::Counter,
            ),
        ];
        for (at_ceiling, past, ceiling) in cases {
            let r = with_content(true, at_ceiling.clone());
            assert!(p.check(&r, received).is_ok(), "{at_ceiling} with serial");
            for serial in [true, false] {
                let e = p.check(&with_content(serial, past.clone()), received);
                assert_eq!(
                    e.as_ref().map_err(|e| e.ceiling),
                    Err(ceiling),
                    "{past}, serial: {serial}: {e:?}"
                );
            }
        }
        let e = p
            .check(&with_content(true, json!({"duration": over})), received)
            .unwrap_err();
        assert_eq!(
            e.detail,
            format!("content_info.duration {over} is over the limit of 1099511627776")
        );
    }

    #[test]
    fn counters_in_blocks_and_segments_are_bounded_and_named() {
        let p = Plausibility::default();
        let mut r = with_content(true, serde_json::json!({}));
        r.blocks = Some(kollus_common::kollus::lms::Blocks {
            count: 2,
            items: vec![
                Block::default(),
                Block {
                    played: true,
                    seconds: 10,
                    percent: MAX_COUNTER + 1,
                },
            ],
        });
        let e = p.check(&r, at(600)).unwrap_err();
        assert_eq!(e.ceiling, Ceiling::Counter);
        assert!(e.detail.starts_with("block_info.blocks.p1 "), "{e:?}");
        r.blocks = None;
        r.segments = vec![Segment {
            block: 0,
            start_time: 0,
            play_time: MAX_COUNTER + 1,
        }];
        let e = p.check(&r, at(600)).unwrap_err();
        assert!(
            e.detail.starts_with("block_info.sessions[0].play_time "),
            "{e:?}"
        );
    }

    #[test]
    fn two_forged_playtimes_that_would_overflow_a_sum_are_refused() {
        // Just under i64::MAX each: as sessions, their sum overflowed watch_progress (bigint).
        let p = Plausibility::default();
        let huge = i64::MAX as u64 - 1;
        for start in [0, 1] {
            let r = with_content(
                true,
                serde_json::json!({"start_at": at(start).unix_timestamp(), "playtime": huge,
                    "showtime": huge, "runtime": huge}),
            );
            let e = p.check(&r, at(600)).unwrap_err();
            assert_eq!(e.ceiling, Ceiling::Counter);
            assert!(e.detail.starts_with("content_info.playtime "), "{e:?}");
        }
    }

    #[test]
    fn a_report_without_the_counters_a_ceiling_compares_is_not_refused_by_it() {
        // Old players omit duration, runtime and showtime (SPEC.md 4.3).
        let doc = br#"{"user_info":{"client_user_id":"u"},"content_info":{"media_content_key":"m",
            "start_at":"1700000000","playtime":"5000","real_playtime":"5000","serial":"1"}}"#;
        let r = LmsReport::from_json(doc).unwrap();
        assert_eq!(
            Plausibility::default().check(&r, at(600)),
            Ok(Assessment { device_clock: true })
        );
    }

    #[test]
    fn every_refusal_has_its_own_short_reason() {
        let reasons: std::collections::BTreeSet<&str> =
            Ceiling::ALL.iter().map(|c| c.reason()).collect();
        assert_eq!(reasons.len(), Ceiling::ALL.len());
        assert!(reasons.iter().all(|r| r.starts_with("implausible_")
            && r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')));
    }

    #[test]
    fn the_playback_rate_setting_is_a_rate_of_at_least_one() {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            p: Plausibility,
        }
        use clap::Parser as _;
        let rate = |v: &str| {
            Cli::try_parse_from(["history-worker", "--max-playback-rate", v])
                .map(|c| c.p.max_playback_rate)
        };
        assert_eq!(rate("2").unwrap(), 2.0);
        for bad in ["0.5", "NaN", "inf", "fast"] {
            assert!(rate(bad).is_err(), "{bad}");
        }
        assert_eq!(
            format!("{:?}", Cli::try_parse_from(["history-worker"]).unwrap().p),
            format!("{:?}", Plausibility::default()),
            "the flags' defaults are the struct's"
        );
    }

    #[test]
    fn segments_merge_in_any_order_keeping_the_longest_play_time() {
        let seg = |block, start_time, play_time| Segment {
            block,
            start_time,
            play_time,
        };
        let with = |segments: Vec<Segment>| {
            let mut r = report(100, 1, 1, 1, &[]);
            r.segments = segments;
            r
        };
        let reports = [
            with(vec![seg(21, 0, 3)]),
            with(vec![seg(21, 0, 3), seg(22, 0, 20)]),
            with(vec![seg(21, 0, 3), seg(22, 0, 48), seg(23, 5, 10)]),
        ];
        let forward = coalesce(reports.iter().map(|r| session(r, 0)));
        // All six orders, and each again after all of them (repeats).
        for order in [
            [0, 1, 2],
            [0, 2, 1],
            [1, 0, 2],
            [1, 2, 0],
            [2, 0, 1],
            [2, 1, 0],
        ] {
            let once = coalesce(order.iter().map(|&i| session(&reports[i], 0)));
            assert_eq!(once[0].segments, forward[0].segments, "order {order:?}");
            let repeated = coalesce(
                order
                    .iter()
                    .chain(&[0, 1, 2])
                    .map(|&i| session(&reports[i], 0)),
            );
            assert_eq!(
                repeated[0].segments, forward[0].segments,
                "{order:?}, repeated"
            );
        }
        assert_eq!(
            segment_list(&forward[0].segments),
            [seg(21, 0, 3), seg(22, 0, 48), seg(23, 5, 10)]
        );
    }

    #[test]
    fn a_session_is_verified_only_when_every_report_was() {
        use HashVerdict::*;
        let r = report(100, 1, 1, 1, &[]);
        let signed = |verdicts: &[Option<HashVerdict>]| {
            coalesce(
                verdicts
                    .iter()
                    .map(|v| Session::from_report(&r, at(0), [], *v, Assessment::default())),
            )[0]
            .signed
            .as_option()
        };
        assert_eq!(signed(&[None, None]), None, "the check was off");
        assert_eq!(signed(&[Some(Verified), Some(Verified)]), Some(true));
        assert_eq!(signed(&[Some(Verified), Some(Mismatch)]), Some(false));
        assert_eq!(signed(&[Some(Verified), Some(Absent)]), Some(false));
        assert_eq!(
            signed(&[Some(Verified), None]),
            Some(false),
            "one unchecked report"
        );
        assert_eq!(
            signed(&[None, Some(Verified)]),
            Some(false),
            "in either order"
        );
    }

    #[test]
    fn query_uservalues_are_kept_under_the_reports_own() {
        let mut r = report(1, 1, 1, 1, &[]);
        r.uservalues
            .insert("uservalue1".into(), "from-report".into());
        let s = Session::from_report(
            &r,
            at(0),
            [
                ("uservalue0".into(), "production".into()),
                ("uservalue1".into(), "from-query".into()),
                ("other".into(), "ignored".into()),
            ],
            None,
            Assessment::default(),
        );
        assert_eq!(s.uservalues["uservalue0"], "production");
        assert_eq!(s.uservalues["uservalue1"], "from-report");
        assert!(!s.uservalues.contains_key("other"));
    }
}
