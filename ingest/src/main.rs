use clap::Parser as _;
use kollus_ingest::configuration::Settings;
use kollus_ingest::startup::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    kollus_common::settings::prepare_process(kollus_ingest::configuration::DEFAULT_LISTEN_ADDR);
    let settings = Settings::parse();
    if let Err(e) = settings
        .callback_secrets()
        .map(drop)
        .map_err(|e| e.to_string())
        .and_then(|()| settings.binding.binding().map(drop))
    {
        use clap::CommandFactory as _;
        Settings::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit();
    }
    let _log_guard = kollus_common::telemetry::init(&settings.log);
    let app = Application::build(settings).await?;
    app.run_until_stopped().await?;
    Ok(())
}
