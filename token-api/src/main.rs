use clap::Parser as _;
use kollus_token_api::configuration::Settings;
use kollus_token_api::startup::Application;

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    kollus_common::settings::prepare_process(kollus_token_api::configuration::DEFAULT_LISTEN_ADDR);
    // `token-api access-log verify|maintain [flags]`: the service's settings, one job, an exit
    // status.
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let command = (args.get(1).is_some_and(|a| a == "access-log")).then(|| {
        let what = args
            .get(2)
            .and_then(|w| w.to_str())
            .unwrap_or("")
            .to_owned();
        args.drain(1..3.min(args.len()));
        what
    });
    let settings = Settings::parse_from(args);
    if let Err(e) = settings.validate() {
        use clap::CommandFactory as _;
        Settings::command()
            .error(clap::error::ErrorKind::ValueValidation, e)
            .exit();
    }
    let _log_guard = kollus_common::telemetry::init(&settings.log);
    if let Some(what) = command {
        std::process::exit(kollus_token_api::access_log::command(&what, settings).await);
    }
    Application::build(settings)
        .await?
        .run_until_stopped()
        .await?;
    Ok(())
}
