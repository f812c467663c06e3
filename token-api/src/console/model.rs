//! What each page shows, decided from the store's rows (after docs.rs's page structs beside
//! their templates): which videos a user watched and how much of each, which grants are in
//! force and what is left of them, each session's badges, what a refused viewer read, a
//! video's completion. Plain structs, tested without HTML; `pages` only renders them.

use time::OffsetDateTime;

use super::store::{Change, Decision, Session, Viewer, MAX_BLOCKS};
use crate::configuration::Lang;
use crate::entitlements::model::{Entitlement, Scope};
use crate::playback::policy::Reason;

/// What a search found: a user, a video, both (an id that is both), or neither.
pub struct Found {
    pub user: Option<String>,
    pub media: Option<String>,
}

/// A video's name as the catalog has it: its title, else its file's name, else nothing.
pub fn video_name(title: Option<String>, filename: Option<String>) -> String {
    title.or(filename).unwrap_or_default()
}

/// Per block, the most of it any session watched.
pub fn union(sessions: &[&Session]) -> Vec<i64> {
    let blocks = sessions.iter().map(|s| s.blocks()).max().unwrap_or(0);
    (0..blocks)
        .map(|i| sessions.iter().map(|s| s.percent(i)).max().unwrap_or(0))
        .collect()
}

/// A user's page.
pub struct UserModel<'a> {
    pub user: &'a str,
    /// One per video watched, in the store's order.
    pub videos: Vec<WatchedVideo<'a>>,
    /// The entitlements in force now.
    pub grants: Vec<Grant<'a>>,
    /// Who viewed this user's data, and when.
    pub views: &'a [(String, OffsetDateTime)],
}

/// One video a user watched, over all their sessions of it.
pub struct WatchedVideo<'a> {
    pub media: &'a str,
    pub name: String,
    pub sessions: usize,
    pub playtime: i64,
    /// Per block, the most of it any session watched (percent).
    pub coverage: Vec<i64>,
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

impl<'a> UserModel<'a> {
    /// `sessions` come ordered by video, as `store::user_sessions` gives them.
    pub fn new(
        user: &'a str,
        sessions: &'a [Session],
        entitlements: &'a [Entitlement],
        views: &'a [(String, OffsetDateTime)],
        now: OffsetDateTime,
    ) -> Self {
        let mut groups: Vec<Vec<&Session>> = Vec::new();
        for s in sessions {
            match groups.last_mut() {
                Some(g) if g[0].media_content_key == s.media_content_key => g.push(s),
                _ => groups.push(vec![s]),
            }
        }
        let videos = groups
            .into_iter()
            .map(|g| {
                let coverage = union(&g);
                WatchedVideo {
                    media: &g[0].media_content_key,
                    name: video_name(g[0].title.clone(), g[0].filename.clone()),
                    sessions: g.len(),
                    playtime: g.iter().map(|s| s.playtime).sum(),
                    blocks_watched: coverage.iter().filter(|p| **p > 0).count(),
                    coverage,
                    first: g
                        .iter()
                        .map(|s| s.start_at)
                        .min()
                        .and_then(|t| OffsetDateTime::from_unix_timestamp(t).ok()),
                    last: g.iter().map(|s| s.last_report_at).max().unwrap_or(now),
                }
            })
            .collect();
        let playtime_of = |media: &str| -> i64 {
            sessions
                .iter()
                .filter(|s| s.media_content_key == media)
                .map(|s| s.playtime)
                .sum()
        };
        let grants = entitlements
            .iter()
            .filter(|e| e.in_force_at(now))
            .map(|e| {
                let used = (e.scope == Scope::Media).then(|| playtime_of(&e.key));
                Grant {
                    entitlement: e,
                    used,
                    left: e.playtime_limit_seconds.zip(used).map(|(l, u)| l - u),
                }
            })
            .collect();
        Self {
            user,
            videos,
            grants,
            views,
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
    /// Percent watched of each block of the video (as many as the union row has).
    pub percents: Vec<i64>,
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
    /// Per block, the most of it any session watched (percent).
    pub coverage: Vec<i64>,
    pub blocks_watched: usize,
    pub sessions: Vec<SessionRow<'a>>,
    pub decisions: Vec<DecisionRow<'a>>,
    pub changes: &'a [Change],
    pub views: &'a [(String, OffsetDateTime)],
}

pub struct RefundFacts<'a> {
    pub user: &'a str,
    pub media: &'a str,
    pub name: String,
    pub sessions: &'a [Session],
    pub decisions: &'a [Decision],
    pub changes: &'a [Change],
    pub views: &'a [(String, OffsetDateTime)],
    /// The language refused viewers read (`PLAY_MESSAGE_LANG`).
    pub message_lang: Lang,
}

impl<'a> RefundModel<'a> {
    pub fn new(facts: RefundFacts<'a>) -> Self {
        let all: Vec<&Session> = facts.sessions.iter().collect();
        let coverage = union(&all);
        let sessions = facts
            .sessions
            .iter()
            .map(|s| SessionRow {
                session: s,
                start: OffsetDateTime::from_unix_timestamp(s.start_at).ok(),
                percents: (0..coverage.len()).map(|i| s.percent(i)).collect(),
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
            blocks_watched: coverage.iter().filter(|x| **x > 0).count(),
            coverage,
            sessions,
            decisions,
            changes: facts.changes,
            views: facts.views,
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
    pub fn new(media: &'a str, name: String, viewers: &[Viewer]) -> Self {
        let blocks_of = |v: &Viewer| {
            (v.block_count.unwrap_or(0).max(0) as usize).max(v.blocks_ever_played.len())
        };
        let blocks = viewers
            .iter()
            .map(blocks_of)
            .max()
            .unwrap_or(0)
            .min(MAX_BLOCKS);
        let per_block = (0..blocks)
            .map(|i| {
                viewers
                    .iter()
                    .filter(|v| v.blocks_ever_played.get(i).copied().unwrap_or(false))
                    .count()
            })
            .collect();
        let mut completion = [0; 5];
        for v in viewers {
            let blocks = blocks_of(v);
            let watched = v.blocks_ever_played.iter().filter(|b| **b).count();
            let i = if blocks == 0 {
                0
            } else if watched >= blocks {
                4
            } else {
                (watched * 4 / blocks).min(3)
            };
            completion[i] += 1;
        }
        Self {
            media,
            name,
            viewers: viewers.len(),
            playtime: viewers.iter().map(|v| v.total_playtime).sum(),
            completion,
            per_block,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(media: &str, playtime: i64, percents: &[i64]) -> Session {
        Session {
            media_content_key: media.into(),
            title: None,
            filename: Some(format!("{media}.mp4")),
            start_at: 1_764_554_400,
            device: None,
            os: None,
            player_id: None,
            playtime,
            real_playtime: playtime,
            runtime: playtime,
            duration: None,
            segments: Vec::new(),
            block_count: Some(percents.len() as i32),
            blocks_played: percents.iter().map(|p| *p > 0).collect(),
            block_percent: percents.to_vec(),
            hash_verified: None,
            bound: None,
            device_clock: false,
            last_report_at: OffsetDateTime::from_unix_timestamp(1_764_558_000).unwrap(),
        }
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

    #[test]
    fn a_user_page_groups_sessions_by_video_and_shows_grants_in_force_with_what_is_left() {
        let now = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        let sessions = [
            session("m1", 600, &[100, 0, 20]),
            session("m1", 300, &[0, 50, 0]),
            session("m2", 60, &[10]),
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
        let p = UserModel::new("u1", &sessions, &entitlements, &[], now);

        let videos: Vec<_> = p
            .videos
            .iter()
            .map(|v| (v.media, v.sessions, v.playtime))
            .collect();
        assert_eq!(videos, [("m1", 2, 900), ("m2", 1, 60)]);
        assert_eq!(
            p.videos[0].coverage,
            [100, 50, 20],
            "the most any session watched"
        );
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
        let mut unsigned = session("m1", 60, &[100, 100]);
        unsigned.hash_verified = Some(false);
        unsigned.bound = Some(false);
        unsigned.device_clock = true;
        unsigned.start_at = i64::MAX;
        let mut verified = session("m1", 60, &[0, 0, 0, 40]);
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
        let p = RefundModel::new(RefundFacts {
            user: "u1",
            media: "m1",
            name: String::new(),
            sessions: &sessions,
            decisions: &decisions,
            changes: &[],
            views: &[],
            message_lang: Lang::En,
        });
        assert_eq!(p.coverage, [100, 100, 0, 40]);
        assert_eq!(p.blocks_watched, 3);
        let badges: Vec<_> = p.sessions.iter().map(|r| r.badges.clone()).collect();
        assert_eq!(
            badges,
            [
                vec![Badge::Unsigned, Badge::Unbound, Badge::DeviceClock],
                vec![Badge::Verified]
            ]
        );
        assert_eq!(
            p.sessions[0].percents,
            [100, 100, 0, 0],
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
    fn a_video_page_buckets_viewers_by_share_of_blocks_and_counts_viewers_per_block() {
        let v = |n: usize, of: usize| Viewer {
            block_count: Some(of as i32),
            blocks_ever_played: (0..of).map(|i| i < n).collect(),
            total_playtime: 10,
        };
        let viewers = [v(0, 4), v(1, 4), v(2, 4), v(3, 4), v(4, 4), v(9, 10)];
        let p = VideoModel::new("m1", String::new(), &viewers);
        assert_eq!(p.completion, [1, 1, 1, 2, 1]);
        assert_eq!(p.per_block, [5, 4, 3, 2, 1, 1, 1, 1, 1, 0]);
        assert_eq!((p.viewers, p.playtime), (6, 60));
    }
}
