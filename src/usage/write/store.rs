//! Storing raw events, idempotent by `event_id` within an organization: checked batches (HTTP,
//! demo, a file's voids) go through `insert_entries`/`submit`; files are read by `records` and
//! loaded by `bulk`. A bad line never stops a load and is never dropped silently: it is reported
//! with its line number and reason.

use chrono::NaiveDate;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

pub use super::batch::Outcome;
use super::batch::{Batch, Candidate, Owners};
use super::event::{Entry, NewEvent};
use super::idempotency::{claim_key, IdempotencyKey, Submission};
use super::ledger::{claim, Claim};
use super::partitions;
use super::voids::store_voids;
use crate::db::schema::{accounts, usage_events};
use crate::usage::model::{AccountId, Month, OrganizationId};
use crate::usage::rollup::dirty::{mark_dirty, DirtyMark};

/// Events per INSERT (16 bind parameters each; Postgres allows 65,535 per statement).
pub const BATCH_SIZE: usize = 1000;
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub accepted: u64,
    pub duplicate: u64,
    pub rejected: u64,
}

impl Counts {
    /// The counts of a batch's outcomes.
    pub fn of(outcomes: &[Outcome]) -> Counts {
        let mut counts = Counts::default();
        for outcome in outcomes {
            match outcome {
                Outcome::Accepted => counts.accepted += 1,
                Outcome::Duplicate => counts.duplicate += 1,
                Outcome::Rejected(_) => counts.rejected += 1,
            }
        }
        counts
    }

    /// Adds committed outcomes to `usage_api_ingest_events_total{outcome}` (`accepted`,
    /// `duplicate`, `rejected`): called once a batch has committed, never for an attempt that
    /// was rolled back or an `Idempotency-Key` answer replayed.
    pub fn record(&self) {
        let outcomes = [
            ("accepted", self.accepted),
            ("duplicate", self.duplicate),
            ("rejected", self.rejected),
        ];
        for (outcome, n) in outcomes {
            metrics::counter!("usage_api_ingest_events_total", "outcome" => outcome).increment(n);
        }
    }
}

/// A line that was not loaded, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub line: u64,
    pub reason: String,
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

/// The UTC month (its first day) of an event.
pub fn month_of(event: &NewEvent) -> NaiveDate {
    Month::of(event.occurred_at).first_day()
}

/// Inserts a batch for `organization` and renders the answer, at most once per idempotency key:
/// the key is claimed first in the same transaction as the events, so a concurrent repeat waits
/// for this one and then replays its answer; a crash loses both or neither. A transaction that
/// loses a race is run again whole (`retrying`).
pub async fn submit(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    key: Option<IdempotencyKey<'_>>,
    entries: &[Entry],
    render: impl Fn(&[Outcome]) -> String + Send + Sync,
) -> QueryResult<Submission> {
    ensure_partitions(conn, &events_of(entries)).await?;
    let render = &render;
    let (submission, counts) = retrying(async || {
        conn.transaction(async |conn| {
            if let Some(key) = key {
                if let Some(earlier) = claim_key(conn, organization, key).await? {
                    return Ok((earlier, Counts::default()));
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
            Ok((Submission::Stored(body), Counts::of(&outcomes)))
        })
        .await
    })
    .await?;
    counts.record();
    Ok(submission)
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
    organization: Option<&OrganizationId>,
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
    mark_dirty(conn, batch.dirty).await?;
    Ok(batch
        .outcomes
        .into_iter()
        .map(|o| o.unwrap_or(Outcome::Duplicate))
        .collect())
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
    let is_new =
        |org: &OrganizationId, e: &NewEvent| new.contains(&(org.clone(), e.event_id.clone()));
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
            batch.dirty.push(DirtyMark {
                organization_id: (*org).clone(),
                account_id: e.account_id.clone(),
                month: month_of(e),
            });
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
    organization: Option<&OrganizationId>,
) -> QueryResult<Owners> {
    let mut ids: Vec<&AccountId> = entries
        .iter()
        .filter_map(|entry| match entry {
            Entry::Event(event) => Some(&event.account_id),
            Entry::Void(void) => void.account_id.as_ref(),
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    if ids.is_empty() {
        return Ok(Owners::new());
    }
    let mut query = accounts::table
        .filter(accounts::id.eq_any(&ids))
        .select((accounts::id, accounts::organization_id))
        .into_boxed();
    if let Some(org) = organization {
        query = query.filter(accounts::organization_id.eq(org));
    }
    Ok(query
        .load::<(AccountId, OrganizationId)>(conn)
        .await?
        .into_iter()
        .collect())
}

/// `insert_entries_in` in a transaction of its own (partitions first, see `ensure_partitions`).
pub async fn insert_entries(
    conn: &mut AsyncPgConnection,
    entries: &[Entry],
    organization: Option<&OrganizationId>,
) -> QueryResult<Vec<Outcome>> {
    ensure_partitions(conn, &events_of(entries)).await?;
    let outcomes = retrying(async || {
        conn.transaction(async |conn| insert_entries_in(conn, entries, organization).await)
            .await
    })
    .await?;
    Counts::of(&outcomes).record();
    Ok(outcomes)
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
