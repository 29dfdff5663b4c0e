//! The `usage-api` binary: parse the command line, start logging, hand over to `cli`.

use clap::Parser;

/// glibc's allocator spent a fifth of the server's CPU on a page request (consolidating and
/// splitting chunks for rows, JSON and buffers); mimalloc's thread-local free lists do not.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[actix_web::main]
async fn main() -> std::process::ExitCode {
    let cli = usage_api::cli::Cli::parse();
    let log = usage_api::cli::init_tracing(&cli.command);
    let outcome = usage_api::cli::run(cli).await;
    // The log's last lines before the error's.
    drop(log);
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            // `pull` documents its exit codes (2 usage, 3 authentication, 4 server or network).
            match err.downcast_ref::<usage_api::cli::pull::Failure>() {
                Some(failure) => std::process::ExitCode::from(failure.exit_code()),
                None => std::process::ExitCode::FAILURE,
            }
        }
    }
}
