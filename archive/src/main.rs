use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser as _;
use kollus_archive::dump::{self, DumpSettings, KeySettings};
use kollus_archive::metrics::Metrics;
use kollus_archive::restore::{RestoreSettings, Timestamps};
use kollus_archive::store::Archive;
use kollus_archive::{reencrypt, restore, verify};
use kollus_common::settings::KafkaSettings;
use kollus_common::telemetry::LogSettings;

/// `LISTEN_ADDR` when unset; also where `healthcheck` looks then.
const DEFAULT_LISTEN_ADDR: &str = "127.0.0.1:9103";

/// Keeps a copy of every record of the Kafka topics outside Kafka, verifies it, restores it.
#[derive(Debug, clap::Parser)]
#[command(name = "kollus-archive", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    log: LogSettings,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Consume the topics and write segments, committing offsets once they are durable.
    Dump {
        #[command(flatten)]
        dump: DumpSettings,
        /// Address for /metrics, /healthz and /readyz (continuous mode).
        #[arg(long, env = "LISTEN_ADDR", default_value = DEFAULT_LISTEN_ADDR)]
        listen_addr: SocketAddr,
        #[command(flatten)]
        kafka: KafkaSettings,
    },
    /// Check every segment's SHA-256 and record count; report per topic, partition and epoch
    /// the offsets held, gaps, repeats and collisions, and per partition of the brokers whether
    /// archive and topic together still hold every offset. Exit status 1 on any problem.
    Verify {
        /// The archive: a directory, or `s3://bucket/prefix`.
        #[arg(long = "from", env = "ARCHIVE_DIR")]
        from: String,
        /// Skip the comparison with the topics (no broker at hand).
        #[arg(long)]
        no_topics: bool,
        /// Verify only the epochs of this Kafka cluster (its id, as the report names it).
        #[arg(long)]
        cluster: Option<String>,
        #[command(flatten)]
        keys: KeySettings,
        #[command(flatten)]
        kafka: KafkaSettings,
    },
    /// Copy a plaintext archive (written before subject keys) into a new location, records
    /// naming a user sealed under that user's key, same epochs and offsets; again after a
    /// crash, it goes on where it stopped. Then `verify --from` the new one and retire the old:
    /// an erasure does not reach an archive that was not re-encrypted.
    Reencrypt {
        /// The plaintext archive: a directory, or `s3://bucket/prefix`.
        #[arg(long = "from")]
        from: String,
        /// The new archive (its key location: ARCHIVE_KEYS_DIR, default `<to>/keys`).
        #[arg(long = "to")]
        to: String,
        #[command(flatten)]
        keys: KeySettings,
        /// For the topics' names (which topic holds playback records and dead letters).
        #[command(flatten)]
        kafka: KafkaSettings,
    },
    /// Produce every archived record back to the configured brokers (repeats once), by
    /// default with the time of the restore as timestamp and the archived one in the
    /// `kollus-original-timestamp` header: Kafka would delete records restored with timestamps
    /// older than the topic's retention within minutes.
    Restore {
        /// The archive: a directory, or `s3://bucket/prefix`.
        #[arg(long = "from", env = "ARCHIVE_DIR")]
        from: String,
        #[command(flatten)]
        restore: RestoreSettings,
        #[command(flatten)]
        kafka: KafkaSettings,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kollus_common::settings::prepare_process(DEFAULT_LISTEN_ADDR);
    let cli = Cli::parse();
    let _log_guard = kollus_common::telemetry::init(&cli.log);
    let metrics = Metrics::new();
    match cli.command {
        Command::Dump {
            dump,
            listen_addr,
            kafka,
        } => {
            let archive = Archive::open(&dump.to)?;
            let group = dump.group(&kafka);
            if dump.until_end {
                if dump.group_id.is_none() {
                    eprintln!(
                        "one-off dump into {} with its own consumer group {group} (the \
                         continuous archiver's is {}): it resumes where the last dump into \
                         this destination stopped",
                        archive.location, kafka.archive_group_id
                    );
                }
                let records = dump::until_end(&archive, &kafka, &dump, &metrics).await?;
                println!("archived {records} records to {}", archive.location);
                return Ok(());
            }
            let listener = std::net::TcpListener::bind(listen_addr)
                .with_context(|| format!("binding {listen_addr}"))?;
            let ready = kollus_common::http::Readiness::default();
            let admin = kollus_common::http::admin_server(
                listener,
                metrics.registry.clone(),
                ready.clone(),
            )?;
            let handle = admin.handle();
            let admin = tokio::spawn(admin);
            ready.set(true);
            tracing::info!(to = archive.location, %listen_addr, group, "archiving continuously");
            let result = dump::continuous(
                &archive,
                &kafka,
                &dump,
                &metrics,
                kollus_common::http::shutdown_signal(),
            )
            .await;
            handle.stop(true).await;
            admin.await??;
            result
        }
        Command::Verify {
            from,
            no_topics,
            cluster,
            keys,
            kafka,
        } => {
            let problems = verify_command(
                &from,
                no_topics,
                cluster.as_deref(),
                &keys,
                &kafka,
                &metrics,
            )
            .await;
            if problems == 0 {
                println!("ok");
                Ok(())
            } else {
                println!("FAILED: {problems} problem(s), listed above");
                std::process::exit(1)
            }
        }
        Command::Reencrypt {
            from,
            to,
            keys,
            kafka,
        } => {
            let source = Archive::open_existing(&from)?;
            let target = Archive::open(&to)?;
            let s = reencrypt::reencrypt(&source, &target, &kafka, &keys, Some(&metrics)).await?;
            println!(
                "re-encrypted {} segments ({} records, {} sealed, {} placeholders) from {from} \
                 into {to}; {} segments were there already. Now: kollus-archive verify --from \
                 {to}, then retire {from} (an erasure does not reach it)",
                s.segments, s.records, s.sealed, s.placeholders, s.already_there
            );
            Ok(())
        }
        Command::Restore {
            from,
            restore: settings,
            kafka,
        } => {
            let archive = Archive::open_existing(&from)?;
            let summary =
                restore::restore_with(&archive, &kafka, &settings, Some(&metrics)).await?;
            if summary.empty {
                match &settings.cluster {
                    Some(cluster) => println!(
                        "the archive at {from} holds no epoch of cluster {cluster}: nothing to \
                         restore; the brokers were not touched"
                    ),
                    None => println!(
                        "the archive at {from} is empty (no manifest): nothing to restore; \
                         the brokers were not touched"
                    ),
                }
                return Ok(());
            }
            println!(
                "restored {} records to {} ({} repeats skipped)",
                summary.produced, kafka.brokers, summary.repeats_skipped
            );
            println!(
                "erased: {} records of erased subjects skipped, {} placeholders, {} records of \
                 expired unattributed days",
                summary.skipped.erased, summary.skipped.placeholders, summary.skipped.expired
            );
            print_timestamps(&summary);
            Ok(())
        }
    }
}

/// What restore did with timestamps, and what Kafka will delete because of it.
fn print_timestamps(summary: &restore::Summary) {
    match summary.timestamps {
        Timestamps::Now => println!(
            "timestamps: the time of the restore ({} records; their archived timestamps are \
             in the kollus-original-timestamp header)",
            summary.retimestamped
        ),
        Timestamps::Original => println!("timestamps: the archived ones (--timestamps original)"),
    }
    for (topic, records) in &summary.past_retention {
        println!(
            "WARNING {topic}: {records} records are older than the topic's retention.ms: Kafka \
             deletes them at its next retention check (within 5 min by default); restore with \
             --timestamps now to keep them"
        );
    }
    for (topic, why) in &summary.retention_unknown {
        println!(
            "WARNING {topic}: retention.ms unknown ({why}): records older than it are deleted \
             by Kafka, uncounted"
        );
    }
}

/// Runs `verify` and prints its report; returns the number of problems (0: ok).
async fn verify_command(
    from: &str,
    no_topics: bool,
    cluster: Option<&str>,
    keys: &KeySettings,
    kafka: &KafkaSettings,
    metrics: &Metrics,
) -> usize {
    let archive = match Archive::open_existing(from) {
        Ok(a) => a,
        Err(e) => {
            println!("NO ARCHIVE {e:#}");
            return 1;
        }
    };
    let mut ring = match keys.ring(from).await {
        Ok(r) => r,
        Err(e) => {
            println!("NO KEYS {e:#}");
            return 1;
        }
    };
    if let Some(r) = &ring {
        println!(
            "keys: {} (it must be neither versioned nor replicated, or an erasure destroys \
             nothing there; the object store cannot be asked whether it is: see to it)",
            r.location()
        );
    }
    let report = match verify::verify_with(&archive, Some(metrics), cluster, ring.as_mut()).await {
        Ok(r) => r,
        Err(e) => {
            println!("UNREADABLE {from}: {e:#}");
            return 1;
        }
    };
    if report.empty {
        match cluster {
            Some(c) => println!("EMPTY {from}: no epoch of cluster {c} (a wrong cluster id?)"),
            None => {
                println!("EMPTY {from}: no manifest, so nothing archived there (a wrong location?)")
            }
        }
        return 1;
    }
    println!(
        "{} segments, {} records, {} repeats (archived twice; restore produces them once)",
        report.segments, report.records, report.repeats
    );
    for e in &report.epochs {
        let cluster = if e.cluster_id.is_empty() {
            "cluster id unknown".to_owned()
        } else {
            format!("cluster {}", e.cluster_id)
        };
        println!(
            "{}/{} epoch {} ({cluster}): offsets {}..={}, {} records in {} segments, {} repeats",
            e.topic,
            e.partition,
            e.name,
            e.first_offset,
            e.last_offset,
            e.records,
            e.segments,
            e.repeats
        );
    }
    for damaged in &report.damaged {
        println!("DAMAGED {damaged}");
    }
    for collision in &report.collisions {
        println!("COLLISION {collision}");
    }
    for (topic, partition, first) in &report.late_starts {
        println!("START {topic}/{partition}: an epoch of the archive starts at offset {first}");
    }
    for (topic, partition, from, to) in &report.gaps {
        println!("GAP {topic}/{partition}: offsets {from}..={to} are not archived");
    }
    for (tag, generation) in &report.erased {
        println!("ERASED subject {tag} generation {generation}: its key was destroyed by an erasure (recorded in the key location)");
    }
    for day in &report.expired {
        println!("EXPIRED {day}: the unattributed dead letters' key of that day was destroyed by age (ARCHIVE_UNATTRIBUTED_DAYS)");
    }
    if report.placeholders > 0 {
        println!(
            "{} placeholders (records erased before they were archived)",
            report.placeholders
        );
    }
    for (tag, generation) in &report.missing {
        let hint = if ring.is_none() {
            " (ARCHIVE_KEK_FILE not given: the archive holds sealed frames)"
        } else {
            ""
        };
        println!("MISSING KEY subject {tag} generation {generation}: no key and no erasure record in the key location{hint}");
    }
    let mut problems =
        report.damaged.len() + report.collisions.len() + report.gaps.len() + report.missing.len();
    if no_topics {
        println!("topics: not compared (--no-topics)");
        return problems;
    }
    let entries = match verify::entries(&archive).await {
        Ok(mut e) => {
            if let Some(c) = cluster {
                e.retain(|e| e.cluster_id == c);
            }
            e
        }
        Err(e) => {
            println!("UNREADABLE {from}: {e:#}");
            return problems + 1;
        }
    };
    let settings = kafka.clone();
    let coverage = tokio::task::spawn_blocking(move || verify::coverage(&entries, &settings)).await;
    match coverage {
        Ok(Ok(coverage)) => {
            for c in &coverage {
                println!("{c}");
            }
            problems += coverage.iter().filter(|c| c.missing.is_some()).count();
        }
        Ok(Err(e)) => println!(
            "topics: not compared ({} did not answer: {e:#}); --no-topics to skip",
            kafka.brokers
        ),
        Err(e) => println!("topics: not compared ({e})"),
    }
    problems
}
