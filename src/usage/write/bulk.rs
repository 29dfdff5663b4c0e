//! Bulk ingest at the database's speed: a parser thread reads the file record by record
//! (NDJSON or CSV), checks each one and encodes the good ones in `COPY` text format, a batch at
//! a time; meanwhile the loader `COPY`s the previous batch into a temporary staging table and
//! moves it with one `INSERT … SELECT` through the event-id ledger (bulk.sql). Each batch is one
//! transaction: a crash loses at most the batch in flight, and running the file again finishes
//! the job without counting anything twice.
//!
//! Memory is bounded by a few batches (one parsing, one per loader), whatever the file's size.
//! `COPY` is not something diesel offers, so this module talks to Postgres with tokio-postgres.

use std::collections::BTreeSet;
use std::io::BufRead;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{NaiveDate, SecondsFormat};
use futures_util::SinkExt;
use tokio::sync::mpsc;

use super::event::{coded, Entry, NewEvent, NewVoid, Window, UNKNOWN_ACCOUNT};
use super::records::{Format, Records};
use super::store::{self, month_of, Counts, Outcome, Reject};
use crate::usage::model::{Category, Direction, Resolution};

/// Events per COPY batch (and transaction)…
pub const BATCH_ROWS: usize = 50_000;
/// …or fewer, when their COPY text reaches this size (long texts would otherwise make batches,
/// and memory, grow with the records).
pub const BATCH_BYTES: usize = 16 * 1024 * 1024;
/// Batches loading at once, each on its own connection: Postgres moves a batch on one core, so
/// two keep both of this machine's cores busy. Ledger keys and dirty marks are locked in sorted
/// order, so concurrent batches wait for each other rather than deadlock.
const LOADERS: usize = 2;

const STAGING: &str = "
    CREATE TEMPORARY TABLE IF NOT EXISTS ingest_staging (
        line bigint, event_id text, account_id text, product_id text, aggr_product_id text,
        usage_type text, description text, currency text, direction text, resolution text,
        unit text, unit_price numeric, wallet_name text, quantity numeric,
        occurred_at timestamptz, category text
    ) ON COMMIT DELETE ROWS";

/// One batch, parsed and encoded, on its way to the database.
#[derive(Default)]
struct Staged {
    copy: Vec<u8>,
    rows: usize,
    months: BTreeSet<NaiveDate>,
    voids: Vec<(u64, NewVoid)>,
    rejects: Vec<Reject>,
}

/// Loads every record of `input`; `on_reject` hears of each record not loaded, with its line.
pub async fn load(
    database_url: &str,
    input: Box<dyn BufRead + Send>,
    format: Format,
    window: Window,
    on_reject: &mut dyn FnMut(Reject),
) -> anyhow::Result<Counts> {
    let (sender, batches) = mpsc::channel::<Staged>(LOADERS);
    let parser = std::thread::spawn(move || parse(input, format, window, sender));
    let batches = Arc::new(tokio::sync::Mutex::new(batches));

    // Loaders take batches as they come and report back here, where rejects are told in order
    // of arrival and the counts are summed.
    let (reports, mut reported) = mpsc::unbounded_channel::<Report>();
    let mut loaders = Vec::new();
    for _ in 0..LOADERS {
        let client = crate::db::connect::client(database_url).await?;
        client.batch_execute(STAGING).await?;
        loaders.push(tokio::spawn(loader(
            client,
            batches.clone(),
            reports.clone(),
        )));
    }
    drop(reports);

    let mut counts = Counts::default();
    let mut voids: Vec<(u64, NewVoid)> = Vec::new();
    while let Some(report) = reported.recv().await {
        // Each report is a committed batch (and the lines refused before it).
        report.counts.record();
        counts.accepted += report.counts.accepted;
        counts.duplicate += report.counts.duplicate;
        counts.rejected += report.counts.rejected;
        report.rejects.into_iter().for_each(&mut *on_reject);
        voids.extend(report.voids);
    }
    for loader in loaders {
        loader.await??;
    }
    parser
        .join()
        .map_err(|_| anyhow::anyhow!("the parser thread panicked"))??;

    // Voids last, once every event of the file is in: a void may name any of them.
    if !voids.is_empty() {
        load_voids(database_url, &voids, &mut counts, on_reject).await?;
    }
    Ok(counts)
}

/// Stores a file's voids, a batch at a time, each with the line it came from.
async fn load_voids(
    database_url: &str,
    voids: &[(u64, NewVoid)],
    counts: &mut Counts,
    on_reject: &mut dyn FnMut(Reject),
) -> anyhow::Result<()> {
    let mut conn = crate::db::connect::establish(database_url).await?;
    for chunk in voids.chunks(store::BATCH_SIZE) {
        let entries: Vec<Entry> = chunk.iter().map(|(_, v)| Entry::Void(v.clone())).collect();
        let outcomes = store::insert_entries(&mut conn, &entries, None).await?;
        for ((line, _), outcome) in chunk.iter().zip(outcomes) {
            match outcome {
                Outcome::Accepted => counts.accepted += 1,
                Outcome::Duplicate => counts.duplicate += 1,
                Outcome::Rejected(reason) => {
                    counts.rejected += 1;
                    on_reject(Reject {
                        line: *line,
                        reason,
                    });
                }
            }
        }
    }
    Ok(())
}

/// What a loader did with one batch.
struct Report {
    counts: Counts,
    rejects: Vec<Reject>,
    voids: Vec<(u64, NewVoid)>,
}

/// One loader connection: takes the next parsed batch, loads it, reports, until none is left.
async fn loader(
    mut client: tokio_postgres::Client,
    batches: Arc<tokio::sync::Mutex<mpsc::Receiver<Staged>>>,
    reports: mpsc::UnboundedSender<Report>,
) -> anyhow::Result<()> {
    loop {
        let Some(batch) = batches.lock().await.recv().await else {
            return Ok(());
        };
        let mut report = Report {
            counts: Counts::default(),
            rejects: batch.rejects,
            voids: batch.voids,
        };
        report.counts.rejected += report.rejects.len() as u64;
        if batch.rows > 0 {
            load_batch(
                &mut client,
                batch.copy,
                batch.rows,
                &batch.months,
                &mut report,
            )
            .await?;
        }
        if reports.send(report).is_err() {
            return Ok(());
        }
    }
}

/// COPYs one batch into staging and moves it, in one transaction.
async fn load_batch(
    client: &mut tokio_postgres::Client,
    copy: Vec<u8>,
    rows: usize,
    months: &BTreeSet<NaiveDate>,
    report: &mut Report,
) -> anyhow::Result<()> {
    // Partitions first, outside the batch's transaction: creating one locks the parent table
    // (lightly), a lock better held for an instant than for a whole batch.
    let months: Vec<String> = months.iter().map(|m| m.to_string()).collect();
    client
        .execute(super::partitions::ENSURE, &[&months])
        .await?;
    let tx = client.transaction().await?;
    // Enough memory to sort a batch by event id without spilling to disk.
    tx.batch_execute("SET LOCAL work_mem = '64MB'").await?;
    let sink = tx.copy_in("COPY ingest_staging FROM STDIN").await?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(copy)).await?;
    sink.finish().await?;
    let moved = tx.query_one(include_str!("bulk.sql"), &[]).await?;
    tx.commit().await?;
    let accepted = moved.get::<_, i64>("accepted") as u64;
    let lines: Vec<i64> = moved.get("unknown_lines");
    let accounts: Vec<String> = moved.get("unknown_accounts");
    let rejected = lines.len() as u64;
    report.counts.accepted += accepted;
    report.counts.rejected += rejected;
    report.counts.duplicate += (rows as u64).saturating_sub(accepted + rejected);
    for (line, account) in lines.into_iter().zip(accounts) {
        report.rejects.push(Reject {
            line: line as u64,
            reason: coded(
                UNKNOWN_ACCOUNT,
                format!("'{account}' is not an account of this organization"),
            ),
        });
    }
    Ok(())
}

/// The parser thread: records → checked entries → COPY text, a batch at a time.
fn parse(
    input: Box<dyn BufRead + Send>,
    format: Format,
    window: Window,
    batches: mpsc::Sender<Staged>,
) -> anyhow::Result<()> {
    let mut records = Records::new(input, format)?;
    let mut batch = Staged::default();
    while let Some((line, raw)) = records.next_record()? {
        match raw.and_then(|raw| raw.into_entry(&window)) {
            Ok(Entry::Event(event)) => {
                encode(&mut batch.copy, line, &event);
                batch.months.insert(month_of(&event));
                batch.rows += 1;
            }
            Ok(Entry::Void(void)) => batch.voids.push((line, void)),
            Err(reason) => batch.rejects.push(Reject { line, reason }),
        }
        let full = batch.rows.max(batch.rejects.len()).max(batch.voids.len()) >= BATCH_ROWS
            || batch.copy.len() >= BATCH_BYTES;
        // A send fails only when the loader stopped; its error is the one to report.
        if full && batches.blocking_send(std::mem::take(&mut batch)).is_err() {
            return Ok(());
        }
    }
    let _ = batches.blocking_send(batch);
    Ok(())
}

/// Appends one event as a line of COPY text format, in ingest_staging's column order.
fn encode(out: &mut Vec<u8>, line: u64, e: &NewEvent) {
    let text = |out: &mut Vec<u8>, value: &str| {
        for byte in value.bytes() {
            match byte {
                b'\\' => out.extend_from_slice(b"\\\\"),
                b'\t' => out.extend_from_slice(b"\\t"),
                b'\n' => out.extend_from_slice(b"\\n"),
                b'\r' => out.extend_from_slice(b"\\r"),
                _ => out.push(byte),
            }
        }
        out.push(b'\t');
    };
    let nullable = |out: &mut Vec<u8>, value: Option<&str>| match value {
        Some(v) => text(out, v),
        None => out.extend_from_slice(b"\\N\t"),
    };
    text(out, &line.to_string());
    text(out, &e.event_id);
    text(out, e.account_id.as_str());
    text(out, &e.product_id);
    text(out, &e.aggr_product_id);
    text(out, e.usage_type.as_str());
    text(out, &e.description);
    text(out, &e.currency);
    nullable(out, e.direction.map(Direction::as_str));
    nullable(out, e.resolution.map(Resolution::as_str));
    text(out, e.unit.as_str());
    text(out, &e.unit_price.to_string());
    text(out, &e.wallet_name);
    text(out, &e.quantity.to_string());
    text(
        out,
        &e.occurred_at.to_rfc3339_opts(SecondsFormat::Micros, true),
    );
    nullable(out, e.category.map(Category::as_str));
    // Replace the last field's tab with the row's end.
    out.pop();
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_text_escapes_what_copy_would_misread() {
        let mut e = crate::usage::write::event::RawEvent::from_json(
            r#"{"event_id":"e\t1","account_id":"a","product_id":"p\\x","aggr_product_id":"ap","type":"CALL","unit":"MINUTES","description":"two\nlines","occurred_at":"2023-08-31T23:59:59.999999Z","quantity":"1.50","unit_price":"0.0001","currency":"USD"}"#,
        )
        .unwrap()
        .validate(&Window::default())
        .unwrap();
        e.resolution = Some(Resolution::Answered);
        let mut out = Vec::new();
        encode(&mut out, 7, &e);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "7\te\\t1\ta\tp\\\\x\tap\tCALL\ttwo\\nlines\tUSD\t\\N\tANSWERED\tMINUTES\t0.0001\t\t1.5\t2023-08-31T23:59:59.999999Z\t\\N\n"
        );
    }
}
