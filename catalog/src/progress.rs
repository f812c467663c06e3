//! Progress of a scan, on the terminal (done/total requests, rate, time left: every two seconds
//! and at the end) and as metrics (`kollus_catalog_progress_requests{state="done"|"total"}`). At
//! Kollus's 1 request a second a scan of 10,000 videos takes minutes: the operator sees how many.

use std::time::{Duration, Instant};

use prometheus::IntGauge;

pub struct Progress {
    operation: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
    done_gauge: IntGauge,
    total_gauge: IntGauge,
}

impl Progress {
    pub fn new(operation: &'static str, metrics: &crate::metrics::Metrics) -> Self {
        let done_gauge = metrics.progress.with_label_values(&["done"]);
        let total_gauge = metrics.progress.with_label_values(&["total"]);
        done_gauge.set(0);
        total_gauge.set(0);
        Self {
            operation,
            total: 0,
            done: 0,
            started: Instant::now(),
            last: Instant::now(),
            done_gauge,
            total_gauge,
        }
    }

    /// The requests the scan will take, as far as the answers so far tell.
    pub fn set_total(&mut self, total: u64) {
        self.total = total;
        self.total_gauge.set(total as i64);
    }

    pub fn add(&mut self, n: u64) {
        self.done += n;
        self.done_gauge.set(self.done as i64);
        if self.last.elapsed() >= Duration::from_secs(2) {
            self.last = Instant::now();
            eprintln!("{}", self.line());
        }
    }

    pub fn finish(&self) {
        eprintln!("{} (done)", self.line());
    }

    fn line(&self) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(1e-3);
        let rate = self.done as f64 / secs;
        let left = if rate > 0.0 && self.total > self.done {
            format!("{:.0} s left", (self.total - self.done) as f64 / rate)
        } else {
            "-".into()
        };
        format!(
            "{}: {}/{} requests, {:.2}/s, {left}, {:.1} s",
            self.operation,
            self.done,
            self.total.max(self.done),
            rate,
            secs
        )
    }
}
