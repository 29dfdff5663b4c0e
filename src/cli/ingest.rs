//! `usage-api ingest FILE`: load raw events; print accepted / duplicate / rejected counts; name
//! every rejected line (standard error, or --rejects FILE).

use std::io::Write;

use anyhow::Context;
use clap::Args;

use super::FileFormat;
use crate::config::DatabaseArgs;
use crate::usage::ingest::{self, Format};

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
    pub db: DatabaseArgs,
}

pub async fn run(args: IngestArgs) -> anyhow::Result<()> {
    let format = match FileFormat::resolve(args.format, &args.file) {
        Ok(format) => format,
        Err(_) if args.file == "-" => FileFormat::Ndjson,
        Err(err) => return Err(err),
    };
    let input = super::open_input(&args.file)?;
    let mut rejects: Box<dyn Write> = match &args.rejects {
        Some(path) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating '{path}'"))?,
        )),
        None => Box::new(std::io::stderr()),
    };
    let mut conn = super::connect(&args.db).await?;
    let mut write_error = None;
    let format = match format {
        FileFormat::Ndjson => Format::Ndjson,
        FileFormat::Csv => Format::Csv,
    };
    let counts = ingest::ingest(&mut conn, input, format, &mut |reject| {
        if let Err(err) = writeln!(rejects, "line {}: {}", reject.line, reject.reason) {
            write_error.get_or_insert(err);
        }
    })
    .await?;
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
