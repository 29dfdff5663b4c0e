//! Storing raw events, idempotent by `event_id` within an organization: checked batches (HTTP, demo) go through
//! `insert_entries`/`submit`; files are read by `Records` and loaded by `bulk`. A bad line never
//! stops a load and is never dropped silently: it is reported with its line number and reason.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;

use chrono::{DateTime, NaiveDate, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::event::{coded, Entry, NewEvent, NewVoid, RawEvent, UNKNOWN_ACCOUNT};
use super::partitions;
use crate::db::schema::{accounts, rollup_dirty, usage_event_ids, usage_events, usage_voids};
use crate::usage::model::Month;

/// Events per INSERT (16 bind parameters each; Postgres allows 65,535 per statement).
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
/// duplicate of one already stored in its organization (or earlier in the batch), or refused
/// because its account is unknown. Each event's organization is its account's.
pub async fn insert_events(
    conn: &mut AsyncPgConnection,
    events: &[NewEvent],
) -> QueryResult<Vec<Outcome>> {
    let entries: Vec<Entry> = events.iter().cloned().map(Entry::Event).collect();
    insert_entries(conn, &entries, None).await
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

/// A dirty (organization, account, month): the rollup queue's key, in its primary key's order.
type DirtyKey = (String, String, NaiveDate);

/// Marks the keys dirty, sorted and once each: every transaction takes marks in the same order,
/// so concurrent ones wait for each other instead of deadlocking.
async fn mark_dirty_keys(conn: &mut AsyncPgConnection, mut keys: Vec<DirtyKey>) -> QueryResult<()> {
    keys.sort_unstable();
    keys.dedup();
    let keys: Vec<(&str, &str, NaiveDate)> = keys
        .iter()
        .map(|(org, account, month)| (org.as_str(), account.as_str(), *month))
        .collect();
    mark_dirty(conn, &keys).await
}

/// The UTC month (its first day) of an event.
pub fn month_of(event: &NewEvent) -> NaiveDate {
    Month::from_date(event.occurred_at.date_naive()).first_day()
}

/// Marks (organization, account, month) dirty. `DO UPDATE` (not `DO NOTHING`) on purpose: if a
/// rollup holds the mark locked, this waits for it to commit and then writes the mark anew, so
/// events committed after the rollup's snapshot are never left unmarked. Keys must be sorted.
pub async fn mark_dirty(
    conn: &mut AsyncPgConnection,
    keys: &[(&str, &str, NaiveDate)],
) -> QueryResult<()> {
    for chunk in keys.chunks(BATCH_SIZE) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|(organization, account, month)| {
                (
                    rollup_dirty::organization_id.eq(*organization),
                    rollup_dirty::account_id.eq(*account),
                    rollup_dirty::month.eq(*month),
                )
            })
            .collect();
        diesel::insert_into(rollup_dirty::table)
            .values(&rows)
            .on_conflict((
                rollup_dirty::organization_id,
                rollup_dirty::account_id,
                rollup_dirty::month,
            ))
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
    /// Answers stored before this instant have expired (`USAGE_API_IDEMPOTENCY_TTL_HOURS`): the
    /// key is then free again, whether or not the cleaning job has deleted it yet.
    pub expired_before: DateTime<Utc>,
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
/// for this one and then replays its answer; a crash loses both or neither. A transaction that
/// loses a race is run again whole (`retrying`).
pub async fn submit(
    conn: &mut AsyncPgConnection,
    organization: &str,
    key: Option<IdempotencyKey<'_>>,
    entries: &[Entry],
    render: impl Fn(&[Outcome]) -> String + Send + Sync,
) -> QueryResult<Submission> {
    ensure_partitions(conn, &events_of(entries)).await?;
    let render = &render;
    retrying(async || {
        conn.transaction(async |conn| {
            if let Some(key) = key {
                if let Some(earlier) = claim_key(conn, organization, key).await? {
                    return Ok(earlier);
                }
            }
            let outcomes = insert_entries_in(conn, entries, Some(organization)).await?;
            let body = render(&outcomes);
            if let Some(key) = key {
                use crate::db::schema::idempotency_keys as keys;
                diesel::update(keys::table.find((organization, key.key)))
                    .set(keys::response.eq(&body))
                    .execute(conn)
                    .await?;
            }
            Ok(Submission::Stored(body))
        })
        .await
    })
    .await
}

/// Claims `key` for this request; `Some` is the answer when the key is taken (by the same
/// request: replay it; by another: refuse). An expired key is taken over: one conditional
/// UPDATE, so of two requests racing for it exactly one wins.
async fn claim_key(
    conn: &mut AsyncPgConnection,
    organization: &str,
    key: IdempotencyKey<'_>,
) -> QueryResult<Option<Submission>> {
    use crate::db::schema::idempotency_keys as keys;
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
    if claimed > 0 {
        return Ok(None);
    }
    let renewed = diesel::update(keys::table.find((organization, key.key)))
        .filter(keys::created_at.lt(key.expired_before))
        .set((
            keys::request_hash.eq(key.request_hash),
            keys::response.eq(""),
            keys::created_at.eq(diesel::dsl::now),
        ))
        .execute(conn)
        .await?;
    if renewed > 0 {
        return Ok(None);
    }
    let (hash, response): (String, String) = keys::table
        .find((organization, key.key))
        .select((keys::request_hash, keys::response))
        .first(conn)
        .await?;
    Ok(Some(if hash == key.request_hash {
        Submission::Replayed(response)
    } else {
        Submission::KeyReused
    }))
}

/// Deletes the `Idempotency-Key` answers stored before `expired_before`, a bounded batch at a
/// time; returns how many went.
pub async fn delete_expired_keys(
    conn: &mut AsyncPgConnection,
    expired_before: DateTime<Utc>,
) -> QueryResult<usize> {
    // A bounded batch per statement, so that no single delete holds many row locks for long.
    const BATCH: usize = 10_000;
    let mut deleted = 0;
    loop {
        let batch = diesel::sql_query(
            "DELETE FROM idempotency_keys WHERE ctid IN \
             (SELECT ctid FROM idempotency_keys WHERE created_at < $1 LIMIT 10000)",
        )
        .bind::<diesel::sql_types::Timestamptz, _>(expired_before)
        .execute(conn)
        .await?;
        deleted += batch;
        if batch < BATCH {
            return Ok(deleted);
        }
    }
}

/// Inserts events and voids in the caller's transaction (after `ensure_partitions`), answering
/// for each entry in order. With `organization` (HTTP), every account named must be one of its
/// own; without (files), each entry's organization is its account's, and a void names the
/// account of the event it voids. Events are stored first, so a void may cancel an event of the
/// same batch.
///
/// Locks are taken in one order by every writer, so concurrent batches wait for each other
/// instead of deadlocking: ledger entries of events by (organization, event id), then those of
/// voids likewise, then void rows by (organization, voided id), then dirty marks.
pub async fn insert_entries_in(
    conn: &mut AsyncPgConnection,
    entries: &[Entry],
    organization: Option<&str>,
) -> QueryResult<Vec<Outcome>> {
    let owners = owners(conn, entries, organization).await?;
    let mut batch = Batch::new(entries.len());
    let (mut events, voids) = batch.candidates(entries, organization, &owners);
    events.sort_unstable_by(|a, b| (a.1, &a.2.event_id).cmp(&(b.1, &b.2.event_id)));
    for chunk in events.chunks(BATCH_SIZE) {
        store_events(conn, chunk, &mut batch).await?;
    }
    if !voids.is_empty() {
        store_voids(conn, &voids, &mut batch).await?;
    }
    mark_dirty_keys(conn, batch.dirty).await?;
    Ok(batch
        .outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Duplicate))
        .collect())
}

/// An entry to store: its index in the batch, its organization, and itself.
type Candidate<'a, T> = (usize, &'a str, &'a T);

/// What a batch comes to so far: an outcome per entry (once known) and the dirty keys.
struct Batch {
    outcomes: Vec<Option<Outcome>>,
    dirty: Vec<DirtyKey>,
}

impl Batch {
    fn new(len: usize) -> Self {
        Batch {
            outcomes: vec![None; len],
            dirty: Vec::new(),
        }
    }

    /// Gives each entry its organization (or its refusal), and keeps the first entry of each
    /// (organization, id) as the candidate: later ones are duplicates.
    fn candidates<'a>(
        &mut self,
        entries: &'a [Entry],
        organization: Option<&'a str>,
        owners: &'a HashMap<String, String>,
    ) -> (Vec<Candidate<'a, NewEvent>>, Vec<Candidate<'a, NewVoid>>) {
        let mut seen: HashSet<(&str, &str)> = HashSet::new();
        let (mut events, mut voids) = (Vec::new(), Vec::new());
        for (index, entry) in entries.iter().enumerate() {
            let placed = match entry {
                Entry::Event(event) => owners
                    .get(event.account_id.as_str())
                    .map(|org| (org.as_str(), event.event_id.as_str()))
                    .ok_or_else(|| unknown_account(&event.account_id)),
                Entry::Void(void) => void_organization(void, organization, owners)
                    .map(|org| (org, void.event_id.as_str())),
            };
            let (org, id) = match placed {
                Ok(placed) => placed,
                Err(refusal) => {
                    self.outcomes[index] = Some(refusal);
                    continue;
                }
            };
            if !seen.insert((org, id)) {
                self.outcomes[index] = Some(Outcome::Duplicate);
                continue;
            }
            match entry {
                Entry::Event(event) => events.push((index, org, event)),
                Entry::Void(void) => voids.push((index, org, void)),
            }
        }
        (events, voids)
    }
}

/// Claims a chunk of candidate events (sorted) and inserts the new ones.
async fn store_events(
    conn: &mut AsyncPgConnection,
    chunk: &[Candidate<'_, NewEvent>],
    batch: &mut Batch,
) -> QueryResult<()> {
    let claims: Vec<Claim> = chunk
        .iter()
        .map(|(_, org, e)| Claim {
            organization_id: org,
            event_id: &e.event_id,
            account_id: &e.account_id,
            occurred_at: e.occurred_at,
        })
        .collect();
    let new = claim(conn, &claims).await?;
    let is_new = |org: &str, e: &NewEvent| new.contains(&(org.to_owned(), e.event_id.clone()));
    let rows: Vec<_> = chunk
        .iter()
        .filter(|(_, org, e)| is_new(org, e))
        .map(|(_, org, e)| (usage_events::organization_id.eq(*org), *e))
        .collect();
    if !rows.is_empty() {
        diesel::insert_into(usage_events::table)
            .values(rows)
            .execute(conn)
            .await?;
    }
    for (index, org, e) in chunk {
        batch.outcomes[*index] = Some(if is_new(org, e) {
            batch
                .dirty
                .push((org.to_string(), e.account_id.clone(), month_of(e)));
            Outcome::Accepted
        } else {
            Outcome::Duplicate
        });
    }
    Ok(())
}

/// The owning organization of every account the entries name (within `organization`, when
/// given: another organization's accounts are then as unknown as missing ones).
async fn owners(
    conn: &mut AsyncPgConnection,
    entries: &[Entry],
    organization: Option<&str>,
) -> QueryResult<HashMap<String, String>> {
    let mut ids: Vec<&str> = entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::Event(event) => Some(event.account_id.as_str()),
            Entry::Void(void) => void.account_id.as_deref(),
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(HashMap::new());
    }
    let mut query = accounts::table
        .filter(accounts::id.eq_any(&ids))
        .select((accounts::id, accounts::organization_id))
        .into_boxed();
    if let Some(org) = organization {
        query = query.filter(accounts::organization_id.eq(org));
    }
    Ok(query
        .load::<(String, String)>(conn)
        .await?
        .into_iter()
        .collect())
}

fn unknown_account(account: &str) -> Outcome {
    Outcome::Rejected(coded(
        UNKNOWN_ACCOUNT,
        format!("'{account}' is not an account of this organization"),
    ))
}

/// The organization a void acts in: the caller's (HTTP; an account it names must be one of
/// the caller's), or that of the account it names (files, where the account is required).
fn void_organization<'a>(
    void: &NewVoid,
    organization: Option<&'a str>,
    owners: &'a HashMap<String, String>,
) -> Result<&'a str, Outcome> {
    match (&void.account_id, organization) {
        (Some(account), _) => owners
            .get(account)
            .map(String::as_str)
            .ok_or_else(|| unknown_account(account)),
        (None, Some(org)) => Ok(org),
        (None, None) => Err(Outcome::Rejected(
            "account_id is missing: a void names the account of the event it voids".to_owned(),
        )),
    }
}

/// One ledger entry to claim.
struct Claim<'a> {
    organization_id: &'a str,
    event_id: &'a str,
    account_id: &'a str,
    occurred_at: DateTime<Utc>,
}

/// Claims ledger entries (sorted by the caller); answers the (organization, event id) pairs
/// that were new. A claim another transaction holds waits for it: if that one commits, the id
/// is a duplicate here.
async fn claim(
    conn: &mut AsyncPgConnection,
    claims: &[Claim<'_>],
) -> QueryResult<HashSet<(String, String)>> {
    if claims.is_empty() {
        return Ok(HashSet::new());
    }
    let rows: Vec<_> = claims
        .iter()
        .map(|c| {
            (
                usage_event_ids::organization_id.eq(c.organization_id),
                usage_event_ids::event_id.eq(c.event_id),
                usage_event_ids::account_id.eq(c.account_id),
                usage_event_ids::occurred_at.eq(c.occurred_at),
            )
        })
        .collect();
    Ok(diesel::insert_into(usage_event_ids::table)
        .values(&rows)
        .on_conflict_do_nothing()
        .returning((usage_event_ids::organization_id, usage_event_ids::event_id))
        .get_results::<(String, String)>(conn)
        .await?
        .into_iter()
        .collect())
}

/// A void whose target was found: the voided event's account and time.
struct Resolved<'a> {
    index: usize,
    organization_id: &'a str,
    void: &'a NewVoid,
    account_id: String,
    occurred_at: DateTime<Utc>,
}

impl Resolved<'_> {
    /// The void's own ledger key.
    fn key(&self) -> (String, String) {
        (self.organization_id.to_owned(), self.void.event_id.clone())
    }

    /// The voided event's month (first day).
    fn month(&self) -> NaiveDate {
        Month::from_date(self.occurred_at.date_naive()).first_day()
    }
}

/// Stores the batch's voids (first of their id in the batch, organization known). The event a
/// void cancels must exist in its organization (of the void's account, when it names one), not
/// be a void, and not be voided already. Its (account, month) is marked dirty so that the
/// rollup drops the event.
async fn store_voids(
    conn: &mut AsyncPgConnection,
    voids: &[Candidate<'_, NewVoid>],
    batch: &mut Batch,
) -> QueryResult<()> {
    let known = Targets::read(conn, voids).await?;
    let mut resolved: Vec<Resolved> = Vec::new();
    for &(index, org, void) in voids {
        match known.resolve(org, void) {
            Ok((account_id, occurred_at)) => resolved.push(Resolved {
                index,
                organization_id: org,
                void,
                account_id,
                occurred_at,
            }),
            Err(refusal) => batch.outcomes[index] = Some(refusal),
        }
    }
    // The voids' own ids, claimed in the ledger like events' (a repeat is a duplicate).
    resolved.sort_unstable_by(|a, b| {
        (a.organization_id, &a.void.event_id).cmp(&(b.organization_id, &b.void.event_id))
    });
    let claims: Vec<Claim> = resolved
        .iter()
        .map(|r| Claim {
            organization_id: r.organization_id,
            event_id: &r.void.event_id,
            account_id: &r.account_id,
            occurred_at: r.occurred_at,
        })
        .collect();
    let new = claim(conn, &claims).await?;
    let (claimed, duplicates): (Vec<Resolved>, Vec<Resolved>) =
        resolved.into_iter().partition(|r| new.contains(&r.key()));
    for r in duplicates {
        batch.outcomes[r.index] = Some(Outcome::Duplicate);
    }
    if claimed.is_empty() {
        return Ok(());
    }
    insert_void_rows(conn, claimed, batch).await
}

/// The voids' targets as the ledger knows them (this transaction's events included), and which
/// of them are voids (the batch's own voids among them).
struct Targets {
    events: HashMap<(String, String), (String, DateTime<Utc>)>,
    voids: HashSet<(String, String)>,
}

impl Targets {
    async fn read(
        conn: &mut AsyncPgConnection,
        voids: &[Candidate<'_, NewVoid>],
    ) -> QueryResult<Targets> {
        let organizations: Vec<&str> = voids.iter().map(|v| v.1).collect();
        let named: Vec<&str> = voids.iter().map(|v| v.2.voids.as_str()).collect();
        let events = usage_event_ids::table
            .filter(usage_event_ids::organization_id.eq_any(&organizations))
            .filter(usage_event_ids::event_id.eq_any(&named))
            .select((
                usage_event_ids::organization_id,
                usage_event_ids::event_id,
                usage_event_ids::account_id,
                usage_event_ids::occurred_at,
            ))
            .load::<(String, String, String, DateTime<Utc>)>(conn)
            .await?
            .into_iter()
            .map(|(org, id, account, at)| ((org, id), (account, at)))
            .collect();
        let mut are_voids: HashSet<(String, String)> = usage_voids::table
            .filter(usage_voids::organization_id.eq_any(&organizations))
            .filter(usage_voids::event_id.eq_any(&named))
            .select((usage_voids::organization_id, usage_voids::event_id))
            .load::<(String, String)>(conn)
            .await?
            .into_iter()
            .collect();
        are_voids.extend(
            voids
                .iter()
                .map(|(_, org, v)| (org.to_string(), v.event_id.clone())),
        );
        Ok(Targets {
            events,
            voids: are_voids,
        })
    }

    /// The account and time of the event `void` cancels, or why it cannot.
    fn resolve(&self, org: &str, void: &NewVoid) -> Result<(String, DateTime<Utc>), Outcome> {
        let key = (org.to_owned(), void.voids.clone());
        if self.voids.contains(&key) {
            let reason = format!("'{}' is a void; it cannot be voided", void.voids);
            return Err(Outcome::Rejected(reason));
        }
        match self.events.get(&key) {
            // A void naming an account must name the voided event's.
            Some((account, at)) if void.account_id.as_ref().is_none_or(|a| a == account) => {
                Ok((account.clone(), *at))
            }
            _ => Err(Outcome::Rejected(format!("unknown event '{}'", void.voids))),
        }
    }
}

/// One void per voided event: the first of the batch wins; the others, and any void of an
/// event voided before, give their ledger claim back.
async fn insert_void_rows(
    conn: &mut AsyncPgConnection,
    mut claimed: Vec<Resolved<'_>>,
    batch: &mut Batch,
) -> QueryResult<()> {
    claimed.sort_by(|a, b| {
        (a.organization_id, &a.void.voids, a.index).cmp(&(
            b.organization_id,
            &b.void.voids,
            b.index,
        ))
    });
    let rows: Vec<_> = claimed
        .iter()
        .map(|r| {
            (
                usage_voids::organization_id.eq(r.organization_id),
                usage_voids::event_id.eq(&r.void.event_id),
                usage_voids::voided_event_id.eq(&r.void.voids),
                usage_voids::account_id.eq(&r.account_id),
                usage_voids::month.eq(r.month()),
            )
        })
        .collect();
    let stored: HashSet<(String, String)> = diesel::insert_into(usage_voids::table)
        .values(&rows)
        .on_conflict_do_nothing()
        .returning((usage_voids::organization_id, usage_voids::event_id))
        .get_results::<(String, String)>(conn)
        .await?
        .into_iter()
        .collect();
    for r in claimed {
        let key = r.key();
        if stored.contains(&key) {
            batch.dirty.push((key.0, r.account_id.clone(), r.month()));
            batch.outcomes[r.index] = Some(Outcome::Accepted);
        } else {
            diesel::delete(usage_event_ids::table.find((&key.0, &key.1)))
                .execute(conn)
                .await?;
            let reason = format!("event '{}' is already voided", r.void.voids);
            batch.outcomes[r.index] = Some(Outcome::Rejected(reason));
        }
    }
    Ok(())
}

/// `insert_entries_in` in a transaction of its own (partitions first, see `ensure_partitions`).
pub async fn insert_entries(
    conn: &mut AsyncPgConnection,
    entries: &[Entry],
    organization: Option<&str>,
) -> QueryResult<Vec<Outcome>> {
    ensure_partitions(conn, &events_of(entries)).await?;
    retrying(async || {
        conn.transaction(async |conn| insert_entries_in(conn, entries, organization).await)
            .await
    })
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

/// Attempts of a write transaction that lost a race.
pub const ATTEMPTS: u32 = 3;

/// Runs `transaction` again (a few times, after a short random pause) when it lost a race that
/// a new attempt resolves: a serialization failure, or a unique violation raised by a row
/// another transaction committed meanwhile. Every attempt is a whole transaction, so nothing
/// is half applied; the last attempt's error is the caller's.
pub async fn retrying<T>(mut transaction: impl AsyncFnMut() -> QueryResult<T>) -> QueryResult<T> {
    let mut attempt = 1;
    loop {
        match transaction().await {
            Err(err) if attempt < ATTEMPTS && crate::error::is_race(&err) => {
                tracing::info!(error = %err, attempt, "write transaction lost a race; retrying");
                let pause = rand::random_range(5..50u64) * u64::from(attempt);
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                attempt += 1;
            }
            result => return result,
        }
    }
}
