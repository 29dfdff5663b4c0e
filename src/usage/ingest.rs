//! Storing raw events, idempotent by `event_id`: checked batches (HTTP, demo) go through
//! `insert_entries`/`submit`; files are read by `Records` and loaded by `bulk`. A bad line never
//! stops a load and is never dropped silently: it is reported with its line number and reason.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::event::{Entry, NewEvent, NewVoid, RawEvent};
use super::model::Month;
use super::partitions;
use crate::db::schema::{accounts, rollup_dirty, usage_event_ids, usage_events, usage_voids};

/// Events per INSERT (15 bind parameters each; Postgres allows 65,535 per statement).
pub const BATCH_SIZE: usize = 1000;
/// Longest accepted NDJSON line, in bytes.
pub const MAX_LINE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Ndjson,
    Csv,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
}

/// A line that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: u64,
    pub reason: String,
}

/// The outcome of one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Accepted,
    Duplicate,
    Rejected(String),
}

/// Inserts checked events in one transaction; answers, per event, whether it was new, a
/// duplicate of one already stored (or earlier in the batch), or refused because its account is
/// unknown.
pub async fn insert_events(
    conn: &mut AsyncPgConnection,
    events: &[NewEvent],
) -> QueryResult<Vec<Outcome>> {
    ensure_partitions(conn, events).await?;
    conn.transaction(async |conn| insert_events_in(conn, events).await)
        .await
}

/// Creates the partitions `events` need, each in its own short statement: creating a partition
/// locks the parent table (lightly: see `partitions`), a lock that should not last as long as an
/// ingest transaction.
pub async fn ensure_partitions(
    conn: &mut AsyncPgConnection,
    events: &[NewEvent],
) -> QueryResult<()> {
    let mut months: Vec<NaiveDate> = events.iter().map(month_of).collect();
    months.sort_unstable();
    months.dedup();
    partitions::ensure(conn, &months).await
}

/// `insert_events` inside the caller's transaction (after `ensure_partitions`): the ledger
/// claims each new event id, the events go to their month's partition, and every
/// (account, month) they touch is marked dirty for the rollup — all or nothing with the caller's
/// transaction.
pub async fn insert_events_in(
    conn: &mut AsyncPgConnection,
    events: &[NewEvent],
) -> QueryResult<Vec<Outcome>> {
    let (outcomes, dirty) = store_events(conn, events, None).await?;
    mark_dirty_keys(conn, dirty).await?;
    Ok(outcomes)
}

/// A dirty (account, month) and the account's organization.
type DirtyKey = (String, NaiveDate, String);

/// Marks the keys dirty, sorted and once each: every transaction takes marks in the same order,
/// so concurrent ones wait for each other instead of deadlocking.
async fn mark_dirty_keys(conn: &mut AsyncPgConnection, mut keys: Vec<DirtyKey>) -> QueryResult<()> {
    keys.sort_unstable();
    keys.dedup();
    let keys: Vec<(&str, NaiveDate, &str)> = keys
        .iter()
        .map(|(account, month, org)| (account.as_str(), *month, org.as_str()))
        .collect();
    mark_dirty(conn, &keys).await
}

/// Stores events and answers for each, with the (account, month) keys they made dirty (not yet
/// marked). With `organization`, accounts of any other organization count as unknown: the
/// caller checked ownership before its transaction, and this holds even if an account moved
/// since.
async fn store_events(
    conn: &mut AsyncPgConnection,
    events: &[NewEvent],
    organization: Option<&str>,
) -> QueryResult<(Vec<Outcome>, Vec<DirtyKey>)> {
    let mut ids: Vec<&str> = events.iter().map(|e| e.account_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    let owners: HashMap<String, String> = accounts::table
        .filter(accounts::id.eq_any(&ids))
        .select((accounts::id, accounts::organization_id))
        .load::<(String, String)>(conn)
        .await?
        .into_iter()
        .filter(|(_, owner)| organization.is_none_or(|org| org == owner))
        .collect();
    // The first occurrence of each id in the batch is the candidate; later ones are duplicates.
    // Sorted by event id so that concurrent batches lock ledger entries in the same order.
    let mut seen = HashSet::new();
    let mut candidates: Vec<&NewEvent> = events
        .iter()
        .filter(|e| owners.contains_key(&e.account_id) && seen.insert(e.event_id.as_str()))
        .collect();
    candidates.sort_unstable_by(|a, b| a.event_id.cmp(&b.event_id));

    let mut inserted: HashSet<String> = HashSet::new();
    for chunk in candidates.chunks(BATCH_SIZE) {
        let claims: Vec<_> = chunk
            .iter()
            .map(|e| {
                (
                    usage_event_ids::event_id.eq(&e.event_id),
                    usage_event_ids::account_id.eq(&e.account_id),
                    usage_event_ids::occurred_at.eq(e.occurred_at),
                )
            })
            .collect();
        let new: HashSet<String> = diesel::insert_into(usage_event_ids::table)
            .values(&claims)
            .on_conflict_do_nothing()
            .returning(usage_event_ids::event_id)
            .get_results::<String>(conn)
            .await?
            .into_iter()
            .collect();
        let rows: Vec<&NewEvent> = chunk
            .iter()
            .filter(|e| new.contains(&e.event_id))
            .copied()
            .collect();
        if !rows.is_empty() {
            diesel::insert_into(usage_events::table)
                .values(rows)
                .execute(conn)
                .await?;
        }
        inserted.extend(new);
    }

    let dirty: Vec<DirtyKey> = candidates
        .iter()
        .filter(|e| inserted.contains(&e.event_id))
        .map(|e| {
            (
                e.account_id.clone(),
                month_of(e),
                owners[&e.account_id].clone(),
            )
        })
        .collect();

    let outcomes = events
        .iter()
        .map(|event| {
            if !owners.contains_key(&event.account_id) {
                Outcome::Rejected(format!("unknown account '{}'", event.account_id))
            } else if inserted.remove(&event.event_id) {
                Outcome::Accepted
            } else {
                Outcome::Duplicate
            }
        })
        .collect();
    Ok((outcomes, dirty))
}

/// The UTC month (its first day) of an event.
pub fn month_of(event: &NewEvent) -> NaiveDate {
    Month::from_date(event.occurred_at.date_naive()).first_day()
}

/// Marks (account, month, organization) dirty. `DO UPDATE` (not `DO NOTHING`) on purpose: if a
/// rollup holds the mark locked, this waits for it to commit and then writes the mark anew, so
/// events committed after the rollup's snapshot are never left unmarked. Keys must be sorted.
pub async fn mark_dirty(
    conn: &mut AsyncPgConnection,
    keys: &[(&str, NaiveDate, &str)],
) -> QueryResult<()> {
    for chunk in keys.chunks(BATCH_SIZE) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|(account, month, organization)| {
                (
                    rollup_dirty::account_id.eq(*account),
                    rollup_dirty::month.eq(*month),
                    rollup_dirty::organization_id.eq(*organization),
                )
            })
            .collect();
        diesel::insert_into(rollup_dirty::table)
            .values(&rows)
            .on_conflict((rollup_dirty::account_id, rollup_dirty::month))
            .do_update()
            .set(rollup_dirty::marked_at.eq(rollup_dirty::marked_at))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Records of either format, each with the line number it starts on.
pub enum Records<R: BufRead> {
    Ndjson {
        input: R,
        line: u64,
        buffer: Vec<u8>,
    },
    Csv {
        reader: csv::Reader<R>,
        headers: Vec<String>,
        record: csv::StringRecord,
    },
}

impl<R: BufRead> Records<R> {
    pub fn new(input: R, format: Format) -> anyhow::Result<Self> {
        Ok(match format {
            Format::Ndjson => Records::Ndjson {
                input,
                line: 0,
                buffer: Vec::new(),
            },
            Format::Csv => {
                let mut reader = csv::ReaderBuilder::new().flexible(true).from_reader(input);
                let headers = reader
                    .headers()
                    .map_err(|err| anyhow::anyhow!("reading the CSV header: {err}"))?
                    .iter()
                    .map(|h| h.trim().trim_start_matches('\u{feff}').to_owned())
                    .collect();
                Records::Csv {
                    reader,
                    headers,
                    record: csv::StringRecord::new(),
                }
            }
        })
    }

    /// The next record and its line; `Ok(None)` at the end; `Err` only when the input itself
    /// cannot be read (a bad record is an `Ok(Some((line, Err(reason))))`).
    pub fn next_record(&mut self) -> anyhow::Result<Option<(u64, Result<RawEvent, String>)>> {
        match self {
            Records::Ndjson {
                input,
                line,
                buffer,
            } => loop {
                buffer.clear();
                *line += 1;
                let read = std::io::Read::take(&mut *input, MAX_LINE_BYTES as u64 + 1)
                    .read_until(b'\n', buffer)?;
                if read == 0 {
                    return Ok(None);
                }
                if buffer.len() > MAX_LINE_BYTES && buffer.last() != Some(&b'\n') {
                    // Skip the rest of the oversized line.
                    let mut rest = Vec::new();
                    input.read_until(b'\n', &mut rest)?;
                    let reason = format!("line is longer than {MAX_LINE_BYTES} bytes");
                    return Ok(Some((*line, Err(reason))));
                }
                let Ok(text) = std::str::from_utf8(buffer) else {
                    return Ok(Some((*line, Err("line is not valid UTF-8".to_owned()))));
                };
                let text = text.trim();
                if !text.is_empty() {
                    return Ok(Some((*line, RawEvent::from_json(text))));
                }
            },
            Records::Csv {
                reader,
                headers,
                record,
            } => loop {
                match reader.read_record(record) {
                    Ok(false) => return Ok(None),
                    Ok(true) => {
                        let line = record.position().map_or(0, |p| p.line());
                        if record.iter().all(|f| f.trim().is_empty()) {
                            continue;
                        }
                        if record.len() != headers.len() {
                            let reason = format!(
                                "has {} fields; the header has {}",
                                record.len(),
                                headers.len()
                            );
                            return Ok(Some((line, Err(reason))));
                        }
                        let mut raw = RawEvent::default();
                        for (name, value) in headers.iter().zip(record.iter()) {
                            raw.set(name, value);
                        }
                        return Ok(Some((line, Ok(raw))));
                    }
                    Err(err) if err.is_io_error() => return Err(err.into()),
                    Err(err) => {
                        let line = err.position().map_or(0, |p| p.line());
                        return Ok(Some((line, Err(format!("unreadable CSV record: {err}")))));
                    }
                }
            },
        }
    }
}

/// An `Idempotency-Key` and the digest of the request it came with.
#[derive(Debug, Clone, Copy)]
pub struct IdempotencyKey<'a> {
    pub key: &'a str,
    pub request_hash: &'a str,
}

/// What became of a submitted batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// Processed now; the rendered answer (stored under the key, if any).
    Stored(String),
    /// The same key and request were processed before: their stored answer.
    Replayed(String),
    /// The key was used before for a different request.
    KeyReused,
}

/// Inserts a batch for `organization` and renders the answer, at most once per idempotency key:
/// the key is claimed first in the same transaction as the events, so a concurrent repeat waits
/// for this one and then replays its answer; a crash loses both or neither.
pub async fn submit(
    conn: &mut AsyncPgConnection,
    organization: &str,
    key: Option<IdempotencyKey<'_>>,
    entries: &[Entry],
    render: impl FnOnce(&[Outcome]) -> String + Send,
) -> QueryResult<Submission> {
    use crate::db::schema::idempotency_keys as keys;
    ensure_partitions(conn, &events_of(entries)).await?;
    conn.transaction(async |conn| {
        if let Some(key) = key {
            let claimed = diesel::insert_into(keys::table)
                .values((
                    keys::organization_id.eq(organization),
                    keys::key.eq(key.key),
                    keys::request_hash.eq(key.request_hash),
                    keys::response.eq(""),
                ))
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
            if claimed == 0 {
                let (hash, response): (String, String) = keys::table
                    .filter(keys::organization_id.eq(organization))
                    .filter(keys::key.eq(key.key))
                    .select((keys::request_hash, keys::response))
                    .first(conn)
                    .await?;
                return Ok(if hash == key.request_hash {
                    Submission::Replayed(response)
                } else {
                    Submission::KeyReused
                });
            }
        }
        let outcomes = insert_entries_in(conn, entries, Some(organization)).await?;
        let body = render(&outcomes);
        if let Some(key) = key {
            diesel::update(keys::table)
                .filter(keys::organization_id.eq(organization))
                .filter(keys::key.eq(key.key))
                .set(keys::response.eq(&body))
                .execute(conn)
                .await?;
        }
        Ok(Submission::Stored(body))
    })
    .await
}

/// Inserts events and voids in one transaction, answering for each entry in order. Events are
/// stored first, so a void may cancel an event of the same batch. With `organization`, a void
/// may only cancel that organization's events (another's look unknown, as for reads).
pub async fn insert_entries_in(
    conn: &mut AsyncPgConnection,
    entries: &[Entry],
    organization: Option<&str>,
) -> QueryResult<Vec<Outcome>> {
    let events = events_of(entries);
    let (event_outcomes, mut dirty) = store_events(conn, &events, organization).await?;
    let mut event_outcomes = event_outcomes.into_iter();
    let mut outcomes = Vec::with_capacity(entries.len());
    for entry in entries {
        outcomes.push(match entry {
            Entry::Event(_) => event_outcomes.next().unwrap_or(Outcome::Duplicate),
            Entry::Void(void) => {
                let (outcome, key) = insert_void(conn, void, organization).await?;
                dirty.extend(key);
                outcome
            }
        });
    }
    mark_dirty_keys(conn, dirty).await?;
    Ok(outcomes)
}

/// `insert_entries_in` in a transaction of its own (partitions first, see `ensure_partitions`).
pub async fn insert_entries(
    conn: &mut AsyncPgConnection,
    entries: &[Entry],
    organization: Option<&str>,
) -> QueryResult<Vec<Outcome>> {
    ensure_partitions(conn, &events_of(entries)).await?;
    conn.transaction(async |conn| insert_entries_in(conn, entries, organization).await)
        .await
}

/// The events among `entries` (for the partitions they need).
pub fn events_of(entries: &[Entry]) -> Vec<NewEvent> {
    entries
        .iter()
        .filter_map(|e| match e {
            Entry::Event(event) => Some(event.clone()),
            Entry::Void(_) => None,
        })
        .collect()
}

/// Stores one void: its own id is claimed in the ledger like an event's (a repeat is a
/// duplicate); the event it cancels must exist (in `organization`, if given), not be a void, and
/// not be voided already. Its (account, month) is marked dirty so the rollup drops the event.
async fn insert_void(
    conn: &mut AsyncPgConnection,
    void: &NewVoid,
    organization: Option<&str>,
) -> QueryResult<(Outcome, Option<DirtyKey>)> {
    let seen: Option<String> = usage_event_ids::table
        .find(&void.event_id)
        .select(usage_event_ids::event_id)
        .first(conn)
        .await
        .optional()?;
    if seen.is_some() {
        return Ok((Outcome::Duplicate, None));
    }
    let unknown = || Outcome::Rejected(format!("unknown event '{}'", void.voids));
    let target: Option<(String, DateTime<Utc>, String)> = usage_event_ids::table
        .inner_join(accounts::table.on(accounts::id.eq(usage_event_ids::account_id)))
        .filter(usage_event_ids::event_id.eq(&void.voids))
        .select((
            usage_event_ids::account_id,
            usage_event_ids::occurred_at,
            accounts::organization_id,
        ))
        .first(conn)
        .await
        .optional()?;
    let Some((account_id, occurred_at, owner)) = target else {
        return Ok((unknown(), None));
    };
    if organization.is_some_and(|org| org != owner) {
        return Ok((unknown(), None));
    }
    let is_void: i64 = usage_voids::table
        .filter(usage_voids::event_id.eq(&void.voids))
        .count()
        .get_result(conn)
        .await?;
    if is_void > 0 {
        let reason = format!("'{}' is a void; it cannot be voided", void.voids);
        return Ok((Outcome::Rejected(reason), None));
    }
    let month = Month::from_date(occurred_at.date_naive()).first_day();
    let stored = diesel::insert_into(usage_voids::table)
        .values((
            usage_voids::event_id.eq(&void.event_id),
            usage_voids::voided_event_id.eq(&void.voids),
            usage_voids::account_id.eq(&account_id),
            usage_voids::month.eq(month),
        ))
        .on_conflict_do_nothing()
        .execute(conn)
        .await?;
    if stored == 0 {
        let reason = format!("event '{}' is already voided", void.voids);
        return Ok((Outcome::Rejected(reason), None));
    }
    diesel::insert_into(usage_event_ids::table)
        .values((
            usage_event_ids::event_id.eq(&void.event_id),
            usage_event_ids::account_id.eq(&account_id),
            usage_event_ids::occurred_at.eq(occurred_at),
        ))
        .execute(conn)
        .await?;
    Ok((Outcome::Accepted, Some((account_id, month, owner))))
}
