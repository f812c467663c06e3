//! Progress of a long operation (a dump, a verify, a restore, a rebuild, a catalog scan): on the
//! terminal as done/total, rate and time left, every two seconds and at the end, and as two
//! gauges (done, total) for Prometheus, so a person never wonders whether it hangs.

use std::time::{Duration, Instant};

use prometheus::IntGauge;

/// How often a line is printed while the operation runs.
const EVERY: Duration = Duration::from_secs(2);

pub struct Progress {
    operation: &'static str,
    unit: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
    gauges: Option<(IntGauge, IntGauge)>,
}

impl Progress {
    /// `total` units of `unit` ("records", "requests") to do; 0 while unknown
    /// ([`Progress::set_total`]).
    pub fn new(operation: &'static str, unit: &'static str, total: u64) -> Self {
        Self {
            operation,
            unit,
            total,
            done: 0,
            started: Instant::now(),
            last: Instant::now(),
            gauges: None,
        }
    }

    /// Also keeps `done` and `total` up to date (the operation's metrics).
    pub fn with_gauges(mut self, done: IntGauge, total: IntGauge) -> Self {
        done.set(0);
        total.set(self.total as i64);
        self.gauges = Some((done, total));
        self
    }

    /// The total as far as the operation knows it now (a scan learns it from its answers).
    pub fn set_total(&mut self, total: u64) {
        self.total = total;
        if let Some((_, all)) = &self.gauges {
            all.set(total as i64);
        }
    }

    pub fn add(&mut self, n: u64) {
        self.done += n;
        if let Some((done, _)) = &self.gauges {
            done.set(self.done as i64);
        }
        if self.last.elapsed() >= EVERY {
            self.last = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    /// Units done so far.
    pub fn done(&self) -> u64 {
        self.done
    }

    pub fn finish(&self) {
        eprintln!("{} (done)", self.line());
    }

    /// `dump: 1200/5000 records, 600/s, 6 s left, 2.0 s`.
    pub fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let left = if rate > 0.0 && self.total > self.done {
            format!("{:.0} s left", (self.total - self.done) as f64 / rate)
        } else {
            "-".into()
        };
        // A request a second reads as 1.00/s, not 1/s.
        let rate = if rate < 10.0 {
            format!("{rate:.2}")
        } else {
            format!("{rate:.0}")
        };
        format!(
            "{}: {}/{} {}, {rate}/s, {left}, {secs:.1} s",
            self.operation,
            self.done,
            self.total.max(self.done),
            self.unit
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_done_of_total_and_the_gauges_follow() {
        let done = IntGauge::new("done", "d").unwrap();
        let total = IntGauge::new("total", "t").unwrap();
        let mut p = Progress::new("scan", "requests", 0).with_gauges(done.clone(), total.clone());
        p.set_total(10);
        p.add(4);
        assert_eq!((done.get(), total.get()), (4, 10));
        let line = p.line();
        assert!(line.starts_with("scan: 4/10 requests, "), "{line}");
        assert!(line.contains(" s left"), "{line}");
        p.add(7);
        assert!(
            p.line().starts_with("scan: 11/11 requests"),
            "never less than done"
        );
    }
}
