//! The per-(user, video) rollup policy: what `watch_progress` says about all of a user's
//! sessions of one video, kept up to date from each session's state before and after a batch.
//!
//! Sessions only grow (their merge keeps maximums and ORs, `sessions.rs`), so the rollup follows
//! by differences: a new session adds one, a grown one adds what it grew by. Given the same
//! before and after, [`Progress::apply`] equals recomputing from every session
//! ([`Progress::of_sessions`]); the tests hold the two to that.

use time::OffsetDateTime;

use crate::sessions::Session;

/// One (user, video)'s watch progress over all its sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub sessions: u32,
    /// Sums over the sessions (`playtime` counts faster playback as more).
    pub total_playtime: u64,
    pub total_real_playtime: u64,
    /// The largest `block_count` any session reported.
    pub block_count: Option<u32>,
    /// Blocks played in any session.
    pub blocks_ever_played: Vec<bool>,
    /// (start_at, position) of the latest session that reported a position.
    pub last_position: Option<(i64, u64)>,
    /// `start_at` of the first session.
    pub first_start_at: i64,
    /// When the latest report of any session arrived.
    pub last_watched_at: OffsetDateTime,
}

/// What the rollup needs of a session as stored before a batch grew it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub playtime: u64,
    pub real_playtime: u64,
}

impl Totals {
    pub fn of(s: &Session) -> Self {
        Self {
            playtime: s.playtime,
            real_playtime: s.real_playtime,
        }
    }
}

impl Progress {
    /// No sessions yet: the first [`Progress::apply`] sets every field.
    pub fn empty() -> Self {
        Self {
            sessions: 0,
            total_playtime: 0,
            total_real_playtime: 0,
            block_count: None,
            blocks_ever_played: Vec::new(),
            last_position: None,
            first_start_at: i64::MAX,
            last_watched_at: OffsetDateTime::UNIX_EPOCH,
        }
    }

    /// Recomputed from every session of the pair: the reference [`Progress::apply`] keeps to.
    pub fn of_sessions<'a>(sessions: impl IntoIterator<Item = &'a Session>) -> Self {
        let mut p = Self::empty();
        for s in sessions {
            p.apply(None, s);
        }
        p
    }

    /// Folds one session's change in: `before` is its stored state (`None` for a new session),
    /// `after` its state once merged with the batch (which only ever grows it).
    pub fn apply(&mut self, before: Option<Totals>, after: &Session) {
        let grown = |now: u64, then: Option<u64>| now.saturating_sub(then.unwrap_or(0));
        if before.is_none() {
            self.sessions += 1;
        }
        self.total_playtime = self
            .total_playtime
            .saturating_add(grown(after.playtime, before.map(|b| b.playtime)));
        self.total_real_playtime = self
            .total_real_playtime
            .saturating_add(grown(after.real_playtime, before.map(|b| b.real_playtime)));
        self.block_count = self.block_count.max(after.block_count);
        if self.blocks_ever_played.len() < after.blocks.len() {
            self.blocks_ever_played.resize(after.blocks.len(), false);
        }
        for (mine, block) in self.blocks_ever_played.iter_mut().zip(&after.blocks) {
            *mine |= block.played;
        }
        // The latest session's position, whichever way it moved (a viewer seeking back).
        if let Some((_, position)) = after.position {
            let start_at = after.key.start_at.0;
            if self.last_position.is_none_or(|(at, _)| at <= start_at) {
                self.last_position = Some((start_at, position));
            }
        }
        self.first_start_at = self.first_start_at.min(after.key.start_at.0);
        self.last_watched_at = self.last_watched_at.max(after.last_report_at);
    }

    pub fn blocks_watched(&self) -> usize {
        self.blocks_ever_played.iter().filter(|b| **b).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sessions::{coalesce, Assessment};
    use kollus_common::kollus::lms::LmsReport;

    fn report(start_at: i64, n: u64, position: u64, played: &[bool]) -> LmsReport {
        let blocks: serde_json::Map<String, serde_json::Value> = played
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("b{i}"), serde_json::json!(u8::from(*p))))
            .collect();
        let doc = serde_json::json!({
            "user_info": {"client_user_id": "u1"},
            "content_info": {"media_content_key": "m1", "start_at": start_at,
                "playtime": n * 10, "real_playtime": n * 7, "runtime": n * 12,
                "last_play_at": position},
            "block_info": {"block_count": played.len(), "blocks": blocks},
        });
        LmsReport::from_json(doc.to_string().as_bytes()).unwrap()
    }

    fn session(r: &LmsReport, t: i64) -> Session {
        let at = OffsetDateTime::from_unix_timestamp(1_700_000_000 + t).unwrap();
        Session::from_report(r, at, [], None, Assessment::default())
    }

    /// Applies `reports` in batches of `batch`, as the worker does (merge with the stored state,
    /// fold the difference in), and returns the progress and the sessions.
    fn run(reports: &[Session], batch: usize) -> (Progress, Vec<Session>) {
        let mut stored: std::collections::BTreeMap<_, Session> = Default::default();
        let mut progress = Progress::empty();
        for chunk in reports.chunks(batch) {
            for s in coalesce(chunk.iter().cloned()) {
                let before = stored.get(&s.key).cloned();
                let after = match &before {
                    Some(b) => {
                        let mut m = b.clone();
                        m.merge(s);
                        m
                    }
                    None => s,
                };
                progress.apply(before.as_ref().map(Totals::of), &after);
                stored.insert(after.key.clone(), after);
            }
        }
        (progress, stored.into_values().collect())
    }

    #[test]
    fn kept_up_by_differences_it_equals_recomputing_from_every_session() {
        // Three sessions of one video, reports growing, interleaved and out of order, the
        // latest session seeking back.
        let mut reports = Vec::new();
        for n in 1..=12u64 {
            let played: Vec<bool> = (0..6).map(|b| b < n as usize / 2).collect();
            reports.push(session(&report(100, n, n * 5, &played), n as i64));
            let mut other = played.clone();
            other.reverse();
            reports.push(session(
                &report(5_000, n, 600 - n * 20, &other),
                100 + n as i64,
            ));
            if n % 3 == 0 {
                reports.push(session(&report(50, n / 3, n, &[true]), 200 + n as i64));
            }
        }
        reports.rotate_left(5);
        for batch in [1, 2, 7, reports.len()] {
            let (kept, sessions) = run(&reports, batch);
            assert_eq!(kept, Progress::of_sessions(&sessions), "batches of {batch}");
        }
        let (p, _) = run(&reports, 4);
        assert_eq!(p.sessions, 3);
        assert_eq!(p.total_playtime, 120 + 120 + 40);
        assert_eq!(p.last_position, Some((5_000, 600 - 12 * 20)), "moved back");
        assert_eq!(p.first_start_at, 50);
        assert_eq!(p.blocks_watched(), 6);
    }

    #[test]
    fn a_replayed_report_changes_nothing() {
        let r = session(&report(100, 3, 30, &[true, false]), 1);
        let (once, _) = run(std::slice::from_ref(&r), 1);
        let (twice, _) = run(&[r.clone(), r], 1);
        assert_eq!(once.total_playtime, twice.total_playtime);
        assert_eq!(once.sessions, twice.sessions);
    }
}
