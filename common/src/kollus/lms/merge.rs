//! The parts of the watch-session merge (SPEC.md 3) that more than one service reads by, kept
//! once: played segments merge by (block, start time) keeping the longest play time, and a
//! session is `verified` only when every report applied to it was. history-worker merges
//! reports into sessions with these; token-api's read API merges a user's sessions of a video
//! with the same functions, and decodes stored segments with [`stored_segments`].

use std::collections::BTreeMap;

use super::checksum::HashVerdict;
use super::report::Segment;

/// Whether a session's reports were signed (SPEC.md 4.2), summed up over its reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signed {
    /// No report was checked (`LMS_HASH_POLICY=off` when they arrived).
    Unchecked,
    /// Every report was checked and verified.
    Verified,
    /// At least one report was unsigned, mismatched, or not checked beside checked ones.
    NotVerified,
}

impl Signed {
    pub fn of(verdict: Option<HashVerdict>) -> Self {
        match verdict {
            None => Self::Unchecked,
            Some(HashVerdict::Verified) => Self::Verified,
            Some(HashVerdict::Mismatch | HashVerdict::Absent) => Self::NotVerified,
        }
    }

    /// Verified only when both are; unchecked only when both are.
    pub fn merge(self, other: Self) -> Self {
        if self == other {
            self
        } else {
            Self::NotVerified
        }
    }

    /// As stored and answered: `null` unchecked, else whether every report was verified.
    pub fn as_option(self) -> Option<bool> {
        match self {
            Self::Unchecked => None,
            Self::Verified => Some(true),
            Self::NotVerified => Some(false),
        }
    }

    pub fn from_option(v: Option<bool>) -> Self {
        match v {
            None => Self::Unchecked,
            Some(true) => Self::Verified,
            Some(false) => Self::NotVerified,
        }
    }
}

/// Played segments keyed by (block, start time): a segment reported again, late, or grown since
/// keeps its longest play time.
pub type Segments = BTreeMap<(u32, u64), u64>;

/// Adds `segments` into `into`, keeping the longest play time of each.
pub fn merge_segments(into: &mut Segments, segments: impl IntoIterator<Item = Segment>) {
    for s in segments {
        let play_time = into.entry((s.block, s.start_time)).or_insert(0);
        *play_time = (*play_time).max(s.play_time);
    }
}

/// The segments as a list, in (block, start time) order.
pub fn segment_list(segments: &Segments) -> Vec<Segment> {
    segments
        .iter()
        .map(|(&(block, start_time), &play_time)| Segment {
            block,
            start_time,
            play_time,
        })
        .collect()
}

/// Segments as `watch_sessions.segments` stores them: a JSON array of `[block, start_time,
/// play_time]` (migrations/V6). Anything else in the array is skipped.
pub fn stored_segments(stored: &serde_json::Value) -> impl Iterator<Item = Segment> + '_ {
    stored
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|triple| {
            let n = |i: usize| triple.get(i).and_then(serde_json::Value::as_u64);
            Some(Segment {
                block: u32::try_from(n(0)?).unwrap_or(u32::MAX),
                start_time: n(1)?,
                play_time: n(2)?,
            })
        })
}

/// Segments as `watch_sessions.segments` stores them.
pub fn to_stored(segments: &Segments) -> serde_json::Value {
    segments
        .iter()
        .map(|(&(block, start), &play)| serde_json::json!([block, start, play]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_segments_round_trip_and_merge_keeps_the_longest() {
        let mut s = Segments::new();
        let seg = |block, start_time, play_time| Segment {
            block,
            start_time,
            play_time,
        };
        merge_segments(&mut s, [seg(0, 0, 5), seg(1, 10, 3)]);
        merge_segments(&mut s, [seg(0, 0, 9), seg(1, 10, 1)]);
        assert_eq!(segment_list(&s), [seg(0, 0, 9), seg(1, 10, 3)]);
        let stored = to_stored(&s);
        assert_eq!(stored, serde_json::json!([[0, 0, 9], [1, 10, 3]]));
        assert_eq!(
            stored_segments(&stored).collect::<Vec<_>>(),
            segment_list(&s)
        );
        let odd = serde_json::json!([[1, 2], "x", [0, 1, 2]]);
        assert_eq!(stored_segments(&odd).collect::<Vec<_>>(), [seg(0, 1, 2)]);
    }

    #[test]
    fn verified_only_when_every_part_was() {
        use Signed::*;
        for (a, b, merged) in [
            (Verified, Verified, Verified),
            (Unchecked, Unchecked, Unchecked),
            (Verified, Unchecked, NotVerified),
            (Verified, NotVerified, NotVerified),
        ] {
            assert_eq!(a.merge(b), merged);
            assert_eq!(b.merge(a), merged);
        }
    }
}
