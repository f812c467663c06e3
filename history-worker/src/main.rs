use clap::Parser as _;
use kollus_history_worker::configuration::Settings;
use kollus_history_worker::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    kollus_common::settings::prepare_process(
        kollus_history_worker::configuration::DEFAULT_LISTEN_ADDR,
    );
    let settings = Settings::parse();
    let _log_guard = kollus_common::telemetry::init(&settings.log);
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}
