//! The subcommands of `usage-api`, one file each.

pub mod accounts;
pub mod demo;
pub mod ingest;
pub mod migrate;
pub mod pull;
pub mod rollup;
pub mod serve;
pub mod token;

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use diesel_async::{AsyncConnection, AsyncPgConnection};
use tracing_subscriber::fmt::writer::BoxMakeWriter;

use crate::config::DatabaseArgs;
use crate::db;

#[derive(Debug, Parser)]
#[command(
    name = "usage-api",
    version,
    about = "Month-aggregated usage per product, per account, as a paged HAL+JSON API behind OAuth2"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the HTTP server (applies pending migrations first unless --no-migrate).
    Serve(serve::ServeArgs),
    /// Apply the embedded database migrations.
    Migrate(migrate::MigrateArgs),
    /// Organizations and accounts.
    #[command(subcommand)]
    Accounts(accounts::AccountsCommand),
    /// Load raw usage events from an NDJSON or CSV file ('-' reads standard input).
    Ingest(ingest::IngestArgs),
    /// Bring the monthly aggregates up to date with the raw events.
    Rollup(rollup::RollupArgs),
    /// One command for a newcomer: database, migrations, demo data, server, and a token.
    Demo(demo::DemoArgs),
    /// Mint an access token with the local development key (OAUTH_DEV_SECRET).
    Token(token::TokenArgs),
    /// Pull every page of a list into a file, as a reseller (OAuth2 client credentials).
    Pull(pull::PullArgs),
}

/// Input formats of files (events and accounts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FileFormat {
    Ndjson,
    Csv,
}

impl FileFormat {
    /// The format given, or the one the file name says.
    pub fn resolve(given: Option<FileFormat>, path: &str) -> anyhow::Result<FileFormat> {
        if let Some(format) = given {
            return Ok(format);
        }
        let lower = path.to_ascii_lowercase();
        if lower.ends_with(".csv") {
            Ok(FileFormat::Csv)
        } else if [".ndjson", ".jsonl", ".json"]
            .iter()
            .any(|ext| lower.ends_with(ext))
        {
            Ok(FileFormat::Ndjson)
        } else {
            anyhow::bail!("cannot tell the format of '{path}' from its name: pass --format ndjson or --format csv")
        }
    }
}

/// Opens `path` ('-' is standard input) for buffered reading; `read` counts the bytes read.
pub fn open_input(
    path: &str,
    read: Option<Arc<AtomicU64>>,
) -> anyhow::Result<Box<dyn std::io::BufRead + Send>> {
    let source: Box<dyn Read + Send> = if path == "-" {
        Box::new(std::io::stdin())
    } else {
        Box::new(std::fs::File::open(path).with_context(|| format!("opening '{path}'"))?)
    };
    let source: Box<dyn Read + Send> = match read {
        Some(read) => Box::new(Counting {
            inner: source,
            read,
        }),
        None => source,
    };
    Ok(Box::new(std::io::BufReader::with_capacity(1 << 16, source)))
}

/// A reader that adds what it reads to a shared counter (for progress bars).
struct Counting<R> {
    inner: R,
    read: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// A migrated database and one connection to it, for the one-shot commands.
/// `--scope` values, each possibly several space-separated scopes, as one list.
pub fn scopes(given: &[String]) -> Vec<String> {
    given
        .iter()
        .flat_map(|s| s.split_whitespace().map(str::to_owned))
        .collect()
}

pub async fn connect(args: &DatabaseArgs) -> anyhow::Result<AsyncPgConnection> {
    db::migrate::ensure_database(&args.database_url).await?;
    db::migrate::run(&args.database_url).await?;
    AsyncPgConnection::establish(&args.database_url)
        .await
        .context("connecting to the database")
}

/// Logs to standard error, filtered by `RUST_LOG` (default `info` for the server, `warn` for
/// the one-shot commands), as text or, with `USAGE_API_LOG_FORMAT=json`, as one JSON object a
/// line: the event's fields at the top level beside `timestamp`, `level`, `target` and
/// `message`, and the fields of the span it happened in (a request's `request_id`, `method`,
/// `route`, `organization`, `subject`) under `span`.
///
/// A server writes a line per request: its lines go through a buffer that a thread of their own
/// writes out, a batch at a time, so that no request waits for a write to standard error (nothing
/// is dropped: a full buffer, 128,000 lines, makes the logging wait). Keep the returned guard
/// until the process ends: dropping it writes out what is left. Colours only on a terminal.
pub fn init_tracing(command: &Command) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    let serving = matches!(command, Command::Serve(_) | Command::Demo(_));
    let default = if serving { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let format = std::env::var("USAGE_API_LOG_FORMAT").unwrap_or_default();
    let json = format.eq_ignore_ascii_case("json");
    let (writer, guard) = if serving {
        let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .thread_name("usage-api-log")
            .finish(std::io::BufWriter::new(std::io::stderr()));
        (BoxMakeWriter::new(writer), Some(guard))
    } else {
        (BoxMakeWriter::new(std::io::stderr), None)
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(writer);
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init()
    } else {
        builder.try_init()
    };
    if !json && !format.is_empty() && !format.eq_ignore_ascii_case("text") {
        tracing::warn!(
            value = format.as_str(),
            "USAGE_API_LOG_FORMAT is neither 'text' nor 'json': logging as text"
        );
    }
    guard
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => serve::run(args).await,
        Command::Migrate(args) => migrate::run(args).await,
        Command::Accounts(command) => accounts::run(command).await,
        Command::Ingest(args) => ingest::run(args).await,
        Command::Rollup(args) => rollup::run(args).await,
        Command::Demo(args) => demo::run(args).await,
        Command::Token(args) => token::run(args),
        Command::Pull(args) => pull::run(args).await.map_err(anyhow::Error::from),
    }
}
