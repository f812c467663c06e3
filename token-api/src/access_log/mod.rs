//! The access record (접속기록; README "The access record"): one append-only log of who accessed
//! whose personal data, when, from where, what they did and why, for the console and the API.
//!
//! - `record`: writing rows ([`record::AccessLog`]); every feature that shows or changes a
//!   user's data records through it, before it answers.
//! - `legacy`: `console_views` (V15), moved into the log at start.
//! - `read`: reading rows back for the console (a subject's accesses, the monthly review),
//!   bounded, subjects by tag (no sealed id opened).
//! - `seal`: rows are chained by an HMAC keyed by `ACCESS_LOG_KEY_FILE` (a key the database never
//!   holds), sealed in id order a few seconds after they are written ([`Chain::spawn_sealer`]).
//! - `heads`: each chain's end written daily to the archive, create-only.
//! - `verify`: the chains and the heads checked, the first break named (`token-api access-log
//!   verify`, `GET /v1/access-log/verify`).
//! - `retention`: months past retention dropped, the chain anchored (`token-api access-log
//!   maintain`).

pub mod heads;
pub mod legacy;
pub mod read;
pub mod record;
pub mod retention;
pub mod seal;
pub mod verify;

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use anyhow::Context as _;
use kollus_archive::store::Archive;
use tokio::sync::Mutex;

use crate::api_scope::ApiScope;
use crate::auth::Caller;
use crate::configuration::Settings;
use crate::metrics::Metrics;
use crate::problem::ApiError;
use seal::ChainKey;

/// The chain's side of the access log: its key, where its heads go, and the pool it seals on.
#[derive(Clone)]
pub struct Chain {
    pub pool: deadpool_postgres::Pool,
    /// One connection of its own for verifications (minutes on a large log): they never hold
    /// one the callbacks need, and a second one at once waits for it, then answers 503.
    verify_pool: deadpool_postgres::Pool,
    pub key: ChainKey,
    /// `ARCHIVE_DIR`, where the daily heads go; `None`: no heads (WARN at start).
    pub heads: Option<Archive>,
    pub metrics: Metrics,
    /// The UTC day whose head this process has written (or found written), and when a failed
    /// head write may be tried again.
    head_day: Arc<Mutex<HeadState>>,
    /// ACCESS_LOG_RETENTION_DAYS: verify checks each drop respected it.
    retention_days: u32,
}

/// The daily head's writing: the day written, and the pause after failures.
#[derive(Debug, Default)]
struct HeadState {
    day: Option<String>,
    retry_at: Option<std::time::Instant>,
    pause: Duration,
}

/// The first pause after a failed head write; it doubles up to [`HEAD_PAUSE_MAX`].
const HEAD_PAUSE_MIN: Duration = Duration::from_secs(10);
const HEAD_PAUSE_MAX: Duration = Duration::from_secs(600);

impl Chain {
    /// Reads `ACCESS_LOG_KEY_FILE` and opens `ARCHIVE_DIR` (a WARN without it: no heads).
    pub fn new(
        settings: &Settings,
        pool: deadpool_postgres::Pool,
        metrics: Metrics,
    ) -> anyhow::Result<Self> {
        let key = ChainKey::from_file(&settings.access_log.access_log_key_file)?;
        let heads = settings
            .archive_dir
            .as_deref()
            .map(Archive::open)
            .transpose()
            .context("ARCHIVE_DIR (the access log's daily heads)")?;
        if heads.is_none() {
            tracing::warn!(
                "ARCHIVE_DIR is not set: the access log's daily heads are not written, so a cut \
                 tail of the log (rows and seals removed together) goes unseen by verify"
            );
        }
        let verify_pool = kollus_common::db::pool(&kollus_common::settings::DatabaseSettings {
            pool_size: 1,
            ..settings.database.clone()
        })?;
        Ok(Self {
            pool,
            verify_pool,
            key,
            heads,
            metrics,
            head_day: Arc::default(),
            retention_days: settings.access_log.access_log_retention_days,
        })
    }

    /// Runs the sealer every `interval` until the process ends.
    pub fn spawn_sealer(&self, interval: Duration) {
        let chain = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                if let Err(e) = chain.seal_once().await {
                    chain.metrics.access_log_seal_failures.inc();
                    tracing::error!(error = format!("{e:#}"), "access log sealer run failed");
                }
            }
        });
    }

    /// One run of the sealer, then today's head if this process has not written it yet.
    pub async fn seal_once(&self) -> anyhow::Result<seal::Run> {
        let mut client = self
            .pool
            .get()
            .await
            .context("connecting to PostgreSQL to seal")?;
        let run = seal::run(&mut client, &self.key).await?;
        drop(client);
        let m = &self.metrics;
        for (class, n) in &run.sealed {
            m.access_log_sealed
                .with_label_values(&[class.as_str()])
                .inc_by(*n);
        }
        if run.reads_moved > 0 {
            m.access_log_rows
                .with_label_values(&[record::Action::ApiRead.as_str()])
                .inc_by(run.reads_moved);
        }
        m.access_log_unsealed.set(run.backlog as i64);
        m.access_log_oldest_unsealed
            .set(run.oldest_unsealed_seconds);
        if let Some(archive) = &self.heads {
            let now = time::OffsetDateTime::now_utc();
            let today = heads::day(now);
            let mut state = self.head_day.lock().await;
            let paused = state
                .retry_at
                .is_some_and(|t| std::time::Instant::now() < t);
            if state.day.as_deref() != Some(today.as_str()) && !paused {
                let head = heads::Head::new(&self.key, &run.ends, now);
                // The seals are committed whatever happens here: a head not written is tried
                // again after a pause that doubles with each failure (one ERROR per try, not
                // one per run).
                match heads::write(archive, &head).await {
                    Ok(new) => {
                        if new {
                            tracing::info!(day = today, "access log head written");
                        }
                        *state = HeadState {
                            day: Some(today),
                            ..HeadState::default()
                        };
                    }
                    Err(e) => {
                        m.access_log_head_failures.inc();
                        state.pause = (state.pause * 2).clamp(HEAD_PAUSE_MIN, HEAD_PAUSE_MAX);
                        state.retry_at = Some(std::time::Instant::now() + state.pause);
                        tracing::error!(
                            error = format!("{e:#}"),
                            day = today,
                            retry_in_seconds = state.pause.as_secs(),
                            "access log head not written to ARCHIVE_DIR (is it writable?)"
                        );
                    }
                }
            }
        }
        m.access_log_sealer_last_run
            .set(time::OffsetDateTime::now_utc().unix_timestamp() as f64);
        Ok(run)
    }

    /// Verifies the chains and heads (on the verifications' own connection).
    pub async fn verify(
        &self,
        progress: Option<&mut kollus_common::progress::Progress>,
    ) -> anyhow::Result<verify::Report> {
        let mut client = self
            .verify_pool
            .get()
            .await
            .context("connecting to PostgreSQL to verify")?;
        // One snapshot for every statement: a row written and sealed meanwhile is either wholly
        // seen or not at all (never a seal without its row).
        let outcome = async {
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await
                .context("starting the verification's snapshot")?;
            let report = verify::verify(
                &*tx,
                &self.key,
                self.heads.as_ref(),
                self.retention_days,
                progress,
            )
            .await?;
            tx.commit().await?;
            anyhow::Ok(report)
        }
        .await;
        let label = match &outcome {
            Ok(r) if r.ok => "ok",
            Ok(_) => "broken",
            Err(_) => "failed",
        };
        self.metrics
            .access_log_verifications
            .with_label_values(&[label])
            .inc();
        outcome
    }
}

/// Creates the coming months' partitions through the migration role (DATABASE_MIGRATION_URL,
/// else DATABASE_URL's), so a fresh start never lacks a month; a WARN if it cannot (the rows
/// then go to DEFAULT, kept, until `token-api access-log maintain` runs).
pub async fn ensure_partitions(settings: &kollus_common::settings::DatabaseSettings) {
    let attempt = async {
        let pool = match kollus_common::db::migration_pool(settings)? {
            Some(p) => p,
            None => kollus_common::db::pool(settings)?,
        };
        let client = pool.get().await?;
        let n: i32 = client
            .query_one(
                "SELECT access_log_ensure_partitions(now(), $1)",
                &[&retention::MONTHS_AHEAD],
            )
            .await?
            .get(0);
        anyhow::Ok(n)
    };
    match attempt.await {
        Ok(0) => {}
        Ok(n) => tracing::info!(created = n, "access log month partitions created"),
        Err(e) => tracing::warn!(
            error = format!("{e:#}"),
            "the access log's coming months' partitions could not be created (set \
             DATABASE_MIGRATION_URL to a role that may); run `token-api access-log maintain`"
        ),
    }
}

#[utoipa::path(
    get,
    path = "/v1/access-log/verify",
    operation_id = "verifyAccessLog",
    summary = "Verify the access record's chains and daily heads",
    description = "Walks every chain of the access record from its start (or its retention anchor), recomputing each row's seal, and checks each daily head in the archive. `first_break` names the first problem: `altered`, `reordered`, `deleted`, `unsealed`, `sealed_twice`, `forked`, `head_forged`, `head_mismatch`, `head_missing_row`, `anchor_forged` (a retention record whose HMAC fails, whose partition is still there, or whose month was dropped before its retention ended), `second_end` (a sealed row no seal follows, besides the chain's end), `heads_absent` (`ARCHIVE_DIR` set, but no daily head is being written). Reads one snapshot of the log. Reads the whole log: minutes for millions of rows.",
    responses(
        (status = 200, description = "The outcome; `ok: false` names the first break.", body = verify::Report, content_type = "application/json"),
        crate::problem::AuditKeyRefused,
        crate::problem::DatabaseFailed
    ),
    security(("bearer" = ["audit"]))
)]
pub async fn verify_chain(
    caller: Caller,
    chain: web::Data<Chain>,
) -> Result<HttpResponse, ApiError> {
    caller.require(ApiScope::Audit)?;
    let report = chain.verify(None).await.map_err(|e| {
        let transient = e.chain().any(|c| {
            c.downcast_ref::<tokio_postgres::Error>()
                .is_some_and(kollus_common::db::is_transient)
                || c.is::<deadpool_postgres::PoolError>()
        });
        if transient {
            tracing::warn!(
                error = format!("{e:#}"),
                "access log verification: PostgreSQL is not answering"
            );
            ApiError::Unavailable("PostgreSQL is not answering; retry the verification".into())
        } else {
            tracing::error!(error = format!("{e:#}"), "access log verification failed");
            ApiError::Internal("the verification failed; the cause is logged".into())
        }
    })?;
    if !report.ok {
        tracing::error!(
            key = caller.name(),
            summary = report.summary(),
            "access log verification found a break"
        );
    }
    Ok(HttpResponse::Ok().json(report))
}

/// `token-api access-log <verify|maintain>`: the exit status (0 ok, 1 a break or a failure).
pub async fn command(what: &str, settings: Settings) -> i32 {
    match command_inner(what, settings).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("access-log {what}: {e:#}");
            1
        }
    }
}

async fn command_inner(what: &str, settings: Settings) -> anyhow::Result<i32> {
    match what {
        "verify" => {
            let pool = kollus_common::db::pool(&settings.database)?;
            let chain = Chain::new(&settings, pool, Metrics::new())?;
            let mut progress = kollus_common::progress::Progress::new("verify", "rows", 0);
            let report = chain.verify(Some(&mut progress)).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            eprintln!("{}", report.summary());
            Ok(if report.ok { 0 } else { 1 })
        }
        "maintain" => {
            let pool = match kollus_common::db::migration_pool(&settings.database)? {
                Some(p) => p,
                None => kollus_common::db::pool(&settings.database)?,
            };
            let key = ChainKey::from_file(&settings.access_log.access_log_key_file)?;
            let mut client = pool.get().await.context("connecting to PostgreSQL")?;
            let done = retention::maintain(
                &mut client,
                &key,
                settings.access_log.access_log_retention_days,
            )
            .await?;
            for d in &done.dropped {
                println!(
                    "dropped {} ({} rows, {} anchors; {} kept {} days)",
                    d.partition,
                    d.rows,
                    d.anchors,
                    d.class.as_str(),
                    retention::retention_days(d.class, settings.access_log.access_log_retention_days)
                );
            }
            for (table, rows) in &done.default_rows {
                println!("WARNING: {table} holds {rows} rows past every month partition");
            }
            println!(
                "access-log maintain: {} partitions created, {} dropped",
                done.partitions_created,
                done.dropped.len()
            );
            Ok(0)
        }
        other => anyhow::bail!("unknown command {other:?}: `token-api access-log verify` or `token-api access-log maintain`"),
    }
}
