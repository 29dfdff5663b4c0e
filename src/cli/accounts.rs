//! `usage-api accounts import FILE`: upsert organizations and accounts from CSV or NDJSON
//! (`id, organization_id, name`). Bad lines are named and skipped; the rest are kept.

use std::collections::HashMap;
use std::io::BufRead;

use clap::{Args, Subcommand};
use serde::Deserialize;

use super::FileFormat;
use crate::config::DatabaseArgs;
use crate::usage::accounts::{self, NewAccount};
use crate::usage::model::MAX_ID_CHARS;

#[derive(Debug, Subcommand)]
pub enum AccountsCommand {
    /// Upsert organizations and accounts from a CSV or NDJSON file ('-' reads standard input).
    Import(ImportArgs),
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    pub file: String,
    #[arg(long, value_enum)]
    pub format: Option<FileFormat>,
    #[command(flatten)]
    pub db: DatabaseArgs,
}

#[derive(Debug, Deserialize)]
struct AccountLine {
    id: Option<String>,
    organization_id: Option<String>,
    name: Option<String>,
}

fn check(line: AccountLine) -> Result<NewAccount, String> {
    let field = |name: &str, value: Option<String>| -> Result<String, String> {
        let value = value.map(|v| v.trim().to_owned()).unwrap_or_default();
        if value.is_empty() {
            Err(format!("{name} is missing"))
        } else if value.chars().count() > MAX_ID_CHARS {
            Err(format!("{name} is longer than {MAX_ID_CHARS} characters"))
        } else {
            Ok(value)
        }
    };
    Ok(NewAccount {
        id: field("id", line.id)?,
        organization_id: field("organization_id", line.organization_id)?,
        name: line.name.unwrap_or_default(),
    })
}

/// Reads every line: the accounts (last one wins for a repeated id) and the rejects.
fn read(
    input: Box<dyn BufRead>,
    format: FileFormat,
) -> anyhow::Result<(Vec<NewAccount>, Vec<String>)> {
    let mut accounts: HashMap<String, NewAccount> = HashMap::new();
    let mut order = Vec::new();
    let mut rejects = Vec::new();
    let mut keep = |line: u64, parsed: Result<NewAccount, String>| match parsed {
        Ok(account) => {
            if !accounts.contains_key(&account.id) {
                order.push(account.id.clone());
            }
            accounts.insert(account.id.clone(), account);
        }
        Err(reason) => rejects.push(format!("line {line}: {reason}")),
    };
    match format {
        FileFormat::Ndjson => {
            for (index, line) in input.lines().enumerate() {
                let line = line?;
                if line.trim().is_empty() {
                    continue;
                }
                let parsed = serde_json::from_str::<AccountLine>(&line)
                    .map_err(|err| format!("invalid JSON: {err}"))
                    .and_then(check);
                keep(index as u64 + 1, parsed);
            }
        }
        FileFormat::Csv => {
            let mut reader = csv::Reader::from_reader(input);
            let headers = reader.headers()?.clone();
            for record in reader.records() {
                match record {
                    Ok(record) => {
                        let line = record.position().map_or(0, |p| p.line());
                        let parsed = record
                            .deserialize::<AccountLine>(Some(&headers))
                            .map_err(|err| format!("unreadable CSV record: {err}"))
                            .and_then(check);
                        keep(line, parsed);
                    }
                    Err(err) if err.is_io_error() => return Err(err.into()),
                    Err(err) => {
                        let line = err.position().map_or(0, |p| p.line());
                        keep(line, Err(format!("unreadable CSV record: {err}")));
                    }
                }
            }
        }
    }
    let accounts = order
        .into_iter()
        .filter_map(|id| accounts.remove(&id))
        .collect();
    Ok((accounts, rejects))
}

pub async fn run(command: AccountsCommand) -> anyhow::Result<()> {
    let AccountsCommand::Import(args) = command;
    let format = FileFormat::resolve(args.format, &args.file)?;
    let (accounts, rejects) = read(super::open_input(&args.file, None)?, format)?;
    for reject in &rejects {
        eprintln!("{reject}");
    }
    let mut conn = super::connect(&args.db).await?;
    // One transaction: an account that cannot move refuses the whole file.
    accounts::upsert(&mut conn, &accounts).await?;
    println!("accounts: {}, rejected: {}", accounts.len(), rejects.len());
    Ok(())
}
