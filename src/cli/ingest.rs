//! `usage-api ingest FILE`: load raw events with COPY; print accepted / duplicate / rejected
//! counts; name every rejected line (standard error, or --rejects FILE). A progress bar shows on
//! standard error when it is a terminal.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::FileFormat;
use crate::config::{DatabaseArgs, EventArgs};
use crate::usage::write::bulk;
use crate::usage::write::event::Window;
use crate::usage::write::records::Format;

#[derive(Debug, Args)]
pub struct IngestArgs {
    /// The file to load; '-' reads standard input.
    pub file: String,
    /// The file's format; guessed from its extension when absent.
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    /// Write rejected lines here instead of standard error.
    #[arg(long)]
    pub rejects: Option<String>,
    #[command(flatten)]
    pub events: EventArgs,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

/// A bar over the file's bytes (a spinner for standard input), or none when stderr is not a
/// terminal.
fn progress(path: &str, read: &Arc<AtomicU64>) -> Option<ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let size = std::fs::metadata(path)
        .ok()
        .filter(|_| path != "-")
        .map(|m| m.len());
    let bar = match size {
        Some(size) => ProgressBar::new(size).with_style(
            ProgressStyle::with_template(
                "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        ),
        None => ProgressBar::new_spinner().with_style(
            ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        ),
    };
    let ticking = bar.clone();
    let read = read.clone();
    std::thread::spawn(move || {
        while !ticking.is_finished() {
            ticking.set_position(read.load(Ordering::Relaxed));
            std::thread::sleep(Duration::from_millis(100));
        }
    });
    Some(bar)
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let format = match FileFormat::resolve(args.format, &args.file) {
        Ok(format) => format,
        Err(_) if args.file == "-" => FileFormat::Ndjson,
        Err(err) => return Err(err),
    };
    let read = Arc::new(AtomicU64::new(0));
    let input = super::open_input(&args.file, Some(read.clone()))?;
    let mut rejects: Box<dyn Write> = match &args.rejects {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating '{path}'"))?,
        )),
        None => Box::new(std::io::stderr()),
    };
    // Migrated database first (creating it if needed); the load has its own connection.
    drop(super::connect(&args.db).await?);
    let bar = progress(&args.file, &read);
    let mut write_error = None;
    let format = match format {
        FileFormat::Ndjson => Format::Ndjson,
        FileFormat::Csv => Format::Csv,
    };
    let window = Window::now(args.events.max_event_age_days);
    let counts = bulk::load(
        &args.db.database_url,
        input,
        format,
        window,
        &mut |reject| {
            let mut write = || writeln!(rejects, "line {}: {}", reject.line, reject.reason);
            let result = match &bar {
                Some(bar) => bar.suspend(write),
                None => write(),
            };
            if let Err(err) = result {
                write_error.get_or_insert(err);
            }
        },
    )
    .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let counts = counts?;
    rejects.flush()?;
    if let Some(err) = write_error {
        return Err(err).context("writing rejected lines");
    }
    println!(
        "accepted: {}, duplicate: {}, rejected: {}",
        counts.accepted, counts.duplicate, counts.rejected
    );
    Ok(())
}
