use clap::Parser as _;
use kollus_token_api::configuration::Settings;
use kollus_token_api::startup::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    kollus_common::settings::prepare_process(kollus_token_api::configuration::DEFAULT_LISTEN_ADDR);
    let settings = Settings::parse();
    if let Err(e) = settings.validate() {
        use clap::CommandFactory as _;
        Settings::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit();
    }
    let _log_guard = kollus_common::telemetry::init(&settings.log);
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
