//! Logging set-up: JSON lines by default (what log pipelines ingest), text for a terminal.

use std::io::IsTerminal as _;
use std::sync::atomic::{AtomicU64, Ordering};

use tracing_subscriber::EnvFilter;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone, clap::Args)]
pub struct LogSettings {
    /// Log line format.
    #[arg(long, env = "LOG_FORMAT", value_enum, default_value_t = LogFormat::Json)]
    pub log_format: LogFormat,
    /// Log filter, in tracing's `RUST_LOG` syntax.
    #[arg(long, env = "RUST_LOG", default_value = "info")]
    pub log_filter: String,
}

/// Installs the global subscriber. Call once, from `main`, and keep the guard until the process
/// ends: lines are written by a background thread (a request never waits on stderr), and the
/// guard flushes what is still queued when it drops. Under a flood the queue drops lines rather
/// than slowing requests down.
pub fn init(settings: &LogSettings) -> tracing_appender::non_blocking::WorkerGuard {
    // The writer thread drains every queued line, then flushes: buffered, a burst of lines is
    // one write, not one system call each (measured in bench/token.sh).
    let (writer, guard) = tracing_appender::non_blocking(std::io::BufWriter::with_capacity(
        64 * 1024,
        std::io::stderr(),
    ));
    let filter = EnvFilter::try_new(&settings.log_filter).unwrap_or_else(|e| {
        eprintln!(
            "invalid log filter {:?} ({e}); using \"info\"",
            settings.log_filter
        );
        EnvFilter::new("info")
    });
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match settings.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
    guard
}

/// Logs a failed authentication at WARN with the route and the source address, never what was
/// presented, and at most once a second per process: a scanner hammering a URL cannot flood the
/// log, and the line says how many were folded into it.
pub fn warn_auth_failure(route: &str, source: Option<std::net::IpAddr>) {
    static LAST_SECOND: AtomicU64 = AtomicU64::new(0);
    static FOLDED: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let last = LAST_SECOND.load(Ordering::Relaxed);
    if now > last
        && LAST_SECOND
            .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    {
        let folded = FOLDED.swap(0, Ordering::Relaxed);
        tracing::warn!(
            route,
            source = source.map(|ip| ip.to_string()).unwrap_or_default(),
            also_refused_since_last_line = folded,
            "authentication failed (the presented credential is not logged)"
        );
    } else {
        FOLDED.fetch_add(1, Ordering::Relaxed);
    }
}
