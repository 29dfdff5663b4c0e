//! The `usage-api` binary: parse the command line, start logging, hand over to `cli`.

use clap::Parser;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = usage_api::cli::Cli::parse();
    usage_api::cli::init_tracing(&cli.command);
    match usage_api::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
