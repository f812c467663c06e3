//! Play and download decisions (SPEC.md 5): from the facts one read gathers (the grants covering
//! the video, the playtime used, the downloads completed) to allowed or refused, and why. Pure:
//! no I/O, unit-tested here.

use time::OffsetDateTime;

use crate::configuration::{Lang, PlayDefault};
use crate::entitlements::model::Scope;

/// One stored grant that covers the video.
#[derive(Debug, Clone, PartialEq)]
pub struct Grant {
    pub scope: Scope,
    pub target: String,
    pub expires_at: Option<OffsetDateTime>,
    pub playtime_limit: Option<i64>,
    pub download: bool,
    pub download_limit: Option<i32>,
    pub revoked: bool,
}

/// What a decision is made from: one read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Facts {
    pub grants: Vec<Grant>,
    /// `playtime` this user has spent on the video over all sessions (never negative: read
    /// clamped to `0..=i64::MAX`).
    pub playtime_used: i64,
    /// Downloads of the video this user completed.
    pub downloads: i64,
    /// The catalog knows the video (`media_contents`). No decision reads it: a video the
    /// catalog missed is counted (`kollus_catalog_unknown_media_total`), never refused for it.
    pub catalogued: bool,
}

/// Why a callback got its answer (a bounded metric label, recorded with the decision): its text
/// is strum's.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, strum::IntoStaticStr, strum::EnumString, strum::VariantArray,
)]
#[strum(serialize_all = "snake_case")]
pub enum Reason {
    Entitled,
    DefaultAllow,
    NoEntitlement,
    Expired,
    Revoked,
    PlaytimeUsedUp,
    DownloadNotAllowed,
    DownloadLimitReached,
    DownloadCounted,
    /// A completed download (DRM kind 2) that no approval of ours issued: recorded, not counted
    /// (issue 26: a forged completion must not use up someone's download limit).
    DownloadUnmatched,
    /// Under `PLAYER_BINDING=require`, a callback without its user's viewer binding: answered
    /// from no facts (the default policy), so it reveals and changes nothing of the user's.
    Unbound,
}

kollus_common::text_column!(Reason);

impl Reason {
    pub const ALL: &[Self] = <Self as strum::VariantArray>::VARIANTS;

    pub fn label(self) -> &'static str {
        self.into()
    }

    /// The `play_decisions_total` series (`callback:kind`, result, reason) this reason shows in
    /// from the start: where it arises first (a DRM download request is kind 1, a completion 2).
    pub fn first_series(self) -> [&'static str; 3] {
        let kind = match self {
            Self::DownloadNotAllowed | Self::DownloadLimitReached => "drm:1",
            Self::DownloadCounted | Self::DownloadUnmatched => "drm:2",
            _ => "play:1",
        };
        let allowed = matches!(
            self,
            Self::Entitled | Self::DefaultAllow | Self::DownloadCounted | Self::DownloadUnmatched
        );
        [kind, if allowed { "1" } else { "0" }, self.label()]
    }

    /// What the viewer reads when refused.
    pub fn message(self, lang: Lang) -> &'static str {
        match (self, lang) {
            (
                Self::Entitled
                | Self::DefaultAllow
                | Self::DownloadCounted
                | Self::DownloadUnmatched,
                _,
            ) => "",
            (Self::NoEntitlement | Self::Unbound, Lang::Ko) => "이 강의를 시청할 권한이 없습니다.",
            (Self::NoEntitlement | Self::Unbound, Lang::En) => {
                "You do not have access to this video."
            }
            (Self::Expired, Lang::Ko) => "수강 기간이 만료되었습니다.",
            (Self::Expired, Lang::En) => "Your access to this video has expired.",
            (Self::Revoked, Lang::Ko) => "이 강의의 시청 권한이 취소되었습니다.",
            (Self::Revoked, Lang::En) => "Your access to this video was withdrawn.",
            (Self::PlaytimeUsedUp, Lang::Ko) => "이 강의의 시청 가능 시간을 모두 사용했습니다.",
            (Self::PlaytimeUsedUp, Lang::En) => {
                "You have used up your viewing time for this video."
            }
            (Self::DownloadNotAllowed, Lang::Ko) => "이 강의는 다운로드할 수 없습니다.",
            (Self::DownloadNotAllowed, Lang::En) => "This video cannot be downloaded.",
            (Self::DownloadLimitReached, Lang::Ko) => "다운로드 가능 횟수를 모두 사용했습니다.",
            (Self::DownloadLimitReached, Lang::En) => {
                "You have used up the downloads allowed for this video."
            }
        }
    }
}

/// A decision and the grant it rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub allowed: bool,
    pub reason: Reason,
    pub grant: Option<Grant>,
    /// Seconds of playtime left under the grant's allowance; `None`: no limit.
    pub playtime_left: Option<i64>,
}

impl Decision {
    pub fn refuse(reason: Reason, grant: Option<Grant>) -> Self {
        Self {
            allowed: false,
            reason,
            grant,
            playtime_left: None,
        }
    }
}

/// May the user play the video now? Among several grants in force (the video's own, its
/// channels'), the one leaving the most playtime wins, then the one lasting longest.
pub fn decide_play(facts: &Facts, now: OffsetDateTime, default: PlayDefault) -> Decision {
    // Saturating: no stored number, however large, is a panic or a wrapped allowance.
    let left = |g: &Grant| {
        g.playtime_limit
            .map(|l| l.saturating_sub(facts.playtime_used.max(0)).max(0))
    };
    let in_force = facts
        .grants
        .iter()
        .filter(|g| crate::entitlements::model::in_force_at(g.revoked, g.expires_at, now));
    // `None` (no limit, no expiry) sorts above every number.
    let best = in_force.max_by_key(|g| {
        (
            left(g).map_or(i64::MAX, |l| l),
            g.expires_at
                .map_or(i64::MAX, OffsetDateTime::unix_timestamp),
        )
    });
    match best {
        Some(g) => match left(g) {
            Some(0) => Decision {
                playtime_left: Some(0),
                ..Decision::refuse(Reason::PlaytimeUsedUp, Some(g.clone()))
            },
            left => Decision {
                allowed: true,
                reason: Reason::Entitled,
                grant: Some(g.clone()),
                playtime_left: left,
            },
        },
        None if default == PlayDefault::Allow => Decision {
            allowed: true,
            reason: Reason::DefaultAllow,
            grant: None,
            playtime_left: None,
        },
        // Say why: a grant that was revoked, or one that ran out, rather than "never".
        None => match facts.grants.iter().find(|g| !g.revoked) {
            Some(expired) => Decision::refuse(Reason::Expired, Some(expired.clone())),
            None => match facts.grants.first() {
                Some(revoked) => Decision::refuse(Reason::Revoked, Some(revoked.clone())),
                None => Decision::refuse(Reason::NoEntitlement, None),
            },
        },
    }
}

/// May the user download the video now? As [`decide_play`], and the grant must allow downloads
/// with completed downloads under its limit.
pub fn decide_download(facts: &Facts, now: OffsetDateTime, default: PlayDefault) -> Decision {
    let play = decide_play(facts, now, default);
    match &play.grant {
        Some(g) if play.allowed && !g.download => {
            Decision::refuse(Reason::DownloadNotAllowed, play.grant.clone())
        }
        Some(g)
            if play.allowed
                && g.download_limit
                    .is_some_and(|l| facts.downloads >= i64::from(l)) =>
        {
            Decision::refuse(Reason::DownloadLimitReached, play.grant.clone())
        }
        _ => play,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: i64) -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000 + s).unwrap()
    }

    fn grant(limit: Option<i64>, expires: Option<i64>) -> Grant {
        Grant {
            scope: Scope::Media,
            target: "m1".into(),
            expires_at: expires.map(at),
            playtime_limit: limit,
            download: true,
            download_limit: Some(2),
            revoked: false,
        }
    }

    #[test]
    fn the_allowance_left_is_the_limit_minus_what_was_played() {
        let facts = Facts {
            grants: vec![grant(Some(3600), Some(100))],
            playtime_used: 1000,
            downloads: 0,
            catalogued: true,
        };
        let d = decide_play(&facts, at(0), PlayDefault::Deny);
        assert!(d.allowed);
        assert_eq!(d.playtime_left, Some(2600));
        let used_up = Facts {
            playtime_used: 3600,
            ..facts.clone()
        };
        let d = decide_play(&used_up, at(0), PlayDefault::Deny);
        assert_eq!((d.allowed, d.reason), (false, Reason::PlaytimeUsedUp));
        let d = decide_play(&facts, at(100), PlayDefault::Deny);
        assert_eq!(
            (d.allowed, d.reason),
            (false, Reason::Expired),
            "expires_at is the end"
        );
    }

    #[test]
    fn the_most_generous_grant_in_force_wins_and_refusals_say_why() {
        let mut revoked = grant(None, None);
        revoked.revoked = true;
        let facts = Facts {
            grants: vec![
                grant(Some(10), None),
                grant(Some(500), Some(50)),
                revoked.clone(),
            ],
            playtime_used: 5,
            downloads: 0,
            catalogued: true,
        };
        let d = decide_play(&facts, at(0), PlayDefault::Deny);
        assert_eq!(d.playtime_left, Some(495));
        let only_revoked = Facts {
            grants: vec![revoked],
            ..Facts::default()
        };
        assert_eq!(
            decide_play(&only_revoked, at(0), PlayDefault::Deny).reason,
            Reason::Revoked
        );
        assert_eq!(
            decide_play(&Facts::default(), at(0), PlayDefault::Deny).reason,
            Reason::NoEntitlement
        );
        let allowed = decide_play(&Facts::default(), at(0), PlayDefault::Allow);
        assert_eq!(
            (allowed.allowed, allowed.reason),
            (true, Reason::DefaultAllow)
        );
    }

    #[test]
    fn downloads_need_the_right_and_room_under_the_limit() {
        let mut facts = Facts {
            grants: vec![grant(None, None)],
            playtime_used: 0,
            downloads: 1,
            catalogued: true,
        };
        assert!(decide_download(&facts, at(0), PlayDefault::Deny).allowed);
        facts.downloads = 2;
        assert_eq!(
            decide_download(&facts, at(0), PlayDefault::Deny).reason,
            Reason::DownloadLimitReached
        );
        facts.grants[0].download = false;
        assert_eq!(
            decide_download(&facts, at(0), PlayDefault::Deny).reason,
            Reason::DownloadNotAllowed
        );
    }

    #[test]
    fn extreme_playtimes_neither_panic_nor_add_to_the_allowance() {
        for (used, limit, left) in [
            (i64::MAX, 3600, 0),
            (i64::MIN, 3600, 3600),
            (-1000, 3600, 3600),
            (0, i64::MAX, i64::MAX),
            (i64::MIN, i64::MAX, i64::MAX),
        ] {
            let facts = Facts {
                grants: vec![grant(Some(limit), None)],
                playtime_used: used,
                downloads: i64::MAX,
                catalogued: true,
            };
            let d = decide_play(&facts, at(0), PlayDefault::Deny);
            assert_eq!(d.playtime_left, Some(left), "used {used}, limit {limit}");
            assert_eq!(
                decide_download(&facts, at(0), PlayDefault::Deny).reason,
                if left == 0 {
                    Reason::PlaytimeUsedUp
                } else {
                    Reason::DownloadLimitReached
                }
            );
        }
    }
}
