use clap::Parser as _;
use kollus_catalog::configuration::{Cli, Command};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kollus_common::settings::prepare_process(kollus_catalog::configuration::DEFAULT_LISTEN_ADDR);
    if let Err(e) = kollus_common::settings::load_secret_files(&["KOLLUS_API_TOKEN"]) {
        eprintln!("error: {e}");
        std::process::exit(2);
    }
    let cli = Cli::parse();
    let _log_guard = kollus_common::telemetry::init(&cli.log);
    match cli.command {
        Command::Backfill { api, kafka } => {
            let r = kollus_catalog::backfill(&api, &kafka).await?;
            println!(
                "backfill: {} uploads in {} channels published as snapshots ({} requests, {:.1} s)",
                r.published,
                r.channels,
                r.requests,
                r.elapsed.as_secs_f64()
            );
        }
        Command::Sweep {
            api,
            absence_grace_seconds,
            database,
            kafka,
        } => {
            let grace = std::time::Duration::from_secs(absence_grace_seconds);
            let r = kollus_catalog::sweep(&api, grace, &database, &kafka).await?;
            for d in &r.differences {
                println!("{d}");
            }
            println!(
                "sweep: {} differences corrected, {} snapshots published; {} uploads in {} \
                 channels listed ({} requests, {:.1} s)",
                r.differences.len(),
                r.published,
                r.uploads,
                r.channels,
                r.requests,
                r.elapsed.as_secs_f64()
            );
        }
    }
    Ok(())
}
