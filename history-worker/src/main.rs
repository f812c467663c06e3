use clap::Parser as _;
use kollus_history_worker::configuration::Settings;
use kollus_history_worker::startup::Application;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    kollus_common::telemetry::init(&settings.log);
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await
}
