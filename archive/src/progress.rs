//! Progress of a long operation, on the terminal (done/total, rate, time left, every two
//! seconds and at the end) and as metrics (`kollus_archive_progress_{done,total}{operation}`).

use std::time::{Duration, Instant};

pub struct Progress {
    operation: &'static str,
    unit: &'static str,
    total: u64,
    done: u64,
    started: Instant,
    last: Instant,
    gauges: Option<(prometheus::IntGauge, prometheus::IntGauge)>,
}

impl Progress {
    pub fn new(
        operation: &'static str,
        unit: &'static str,
        total: u64,
        metrics: Option<&crate::metrics::Metrics>,
    ) -> Self {
        let gauges = metrics.map(|m| {
            let done = m.progress_done.with_label_values(&[operation]);
            let all = m.progress_total.with_label_values(&[operation]);
            all.set(total as i64);
            done.set(0);
            (done, all)
        });
        Self {
            operation,
            unit,
            total,
            done: 0,
            started: Instant::now(),
            last: Instant::now(),
            gauges,
        }
    }

    pub fn add(&mut self, n: u64) {
        self.done += n;
        if let Some((done, _)) = &self.gauges {
            done.set(self.done as i64);
        }
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
            "{}: {}/{} {}, {:.0}/s, {left}, {:.1} s",
            self.operation, self.done, self.total, self.unit, rate, secs
        )
    }
}
