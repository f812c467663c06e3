use clap::Parser as _;
use kollus_token_api::configuration::Settings;
use kollus_token_api::startup::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    let settings = Settings::parse();
    kollus_common::telemetry::init(&settings.log);
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
