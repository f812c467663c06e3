//! One block of a video as the console's pictures draw it and its counts count it: the one place
//! that decides whether a block was watched (the store folds sessions into cells, the model
//! counts them, the charts shade them).

/// One block as the pictures draw it and the counts count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Cell {
    /// Kollus calls it watched: `b{i}` = 1 (any of the block played), or a percent of it reported.
    pub watched: bool,
    /// Percent of the block played (`p{i}`, 0-100): the shade. A block Kollus marks played with
    /// no percent (`b{i}` = 1, `p{i}` = 0) is watched at 0%.
    pub percent: i64,
}

impl Cell {
    /// Block `i` of a session's `block_percent` and `blocks_played`: the one place that decides
    /// whether a block was watched, for the cells drawn and the counts above them alike.
    pub fn of(percent: &[i64], played: &[bool], i: usize) -> Self {
        let percent = percent.get(i).copied().unwrap_or(0).clamp(0, 100);
        Self {
            watched: percent > 0 || played.get(i).copied().unwrap_or(false),
            percent,
        }
    }

    /// The union of two sessions' block: watched if either watched it, the most either played.
    #[must_use]
    pub fn union(self, other: Self) -> Self {
        Self {
            watched: self.watched || other.watched,
            percent: self.percent.max(other.percent),
        }
    }
}

/// How many of `cells` are watched: the "N / M blocks watched" above a picture of them.
pub fn watched(cells: &[Cell]) -> usize {
    cells.iter().filter(|c| c.watched).count()
}
