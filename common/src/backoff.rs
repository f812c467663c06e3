//! The one backoff every retry loop uses: waits double from a start to a cap, and start over
//! after a success. Loops keep their own logging and readiness; this only says how long to wait.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    start: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(start: Duration, max: Duration) -> Self {
        Self {
            start,
            max,
            next: start,
        }
    }

    /// What the workers wait between attempts at a batch or a dead letter: from 100 ms, doubling
    /// to 10 s.
    pub fn worker() -> Self {
        Self::new(Duration::from_millis(100), Duration::from_secs(10))
    }

    /// How long the next wait will be (for the log line before it).
    pub fn next_delay(&self) -> Duration {
        self.next
    }

    /// Waits, and doubles the next wait (up to the cap).
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next).await;
        self.next = (self.next * 2).min(self.max);
    }

    /// After a success: the next failure waits the shortest time again.
    pub fn reset(&mut self) {
        self.next = self.start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_up_to_the_cap_and_starts_over_after_a_reset() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let mut waits = Vec::new();
        for _ in 0..4 {
            waits.push(b.next_delay());
            b.wait().await;
        }
        assert_eq!(
            waits,
            [100, 200, 350, 350].map(Duration::from_millis),
            "doubling, capped"
        );
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }
}
