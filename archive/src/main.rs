use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser as _;
use kollus_archive::dump::{self, DumpSettings};
use kollus_archive::metrics::Metrics;
use kollus_archive::store::Archive;
use kollus_archive::{restore, verify};
use kollus_common::settings::KafkaSettings;
use kollus_common::telemetry::LogSettings;

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
        #[arg(long, env = "LISTEN_ADDR", default_value = "127.0.0.1:9103")]
        listen_addr: SocketAddr,
        #[command(flatten)]
        kafka: KafkaSettings,
    },
    /// Check every segment's SHA-256 and record count, and report gaps in offsets.
    Verify {
        /// The archive: a directory, or `s3://bucket/prefix`.
        #[arg(long = "from", env = "ARCHIVE_DIR")]
        from: String,
    },
    /// Produce every archived record back to the configured brokers (repeats once).
    Restore {
        #[arg(long = "from", env = "ARCHIVE_DIR")]
        from: String,
        #[command(flatten)]
        kafka: KafkaSettings,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kollus_common::settings::prepare_process("127.0.0.1:9103");
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
            if dump.until_end {
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
            tracing::info!(to = archive.location, %listen_addr, "archiving continuously");
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
        Command::Verify { from } => {
            let archive = Archive::open(&from)?;
            let report = verify::verify(&archive, Some(&metrics)).await?;
            println!(
                "{} segments, {} records, {} repeats (archived twice; restore produces them once)",
                report.segments, report.records, report.repeats
            );
            for damaged in &report.damaged {
                println!("DAMAGED {damaged}");
            }
            for (topic, partition, first) in &report.late_starts {
                println!("START {topic}/{partition}: the archive starts at offset {first}");
            }
            for (topic, partition, from, to) in &report.gaps {
                println!("GAP {topic}/{partition}: offsets {from}..={to} are not archived");
            }
            if report.ok() {
                println!("ok");
                Ok(())
            } else {
                std::process::exit(1)
            }
        }
        Command::Restore { from, kafka } => {
            let archive = Archive::open(&from)?;
            let summary = restore::restore(&archive, &kafka, Some(&metrics)).await?;
            println!(
                "restored {} records to {} ({} repeats skipped)",
                summary.produced, kafka.brokers, summary.repeats_skipped
            );
            Ok(())
        }
    }
}
