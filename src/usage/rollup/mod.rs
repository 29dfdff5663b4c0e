//! The rollup: brings `usage_monthly` up to date with `usage_events`, exactly and idempotently,
//! keeping each aggregate's id stable (see rollup.sql).
//!
//! Incremental runs claim dirty (account, month) marks with a lease, in a short transaction of
//! their own (`FOR UPDATE SKIP LOCKED`), so any number of workers (server replicas,
//! `usage-api rollup`) share the work without ever recomputing the same group at once, and no
//! ingest waits for a rollup at work; they hold a shared advisory lock, which a full rebuild
//! takes exclusively. A run's aggregates and the deletion of its marks commit together, and
//! only marks no ingest touched meanwhile are deleted: a crash leaves the marks for the next
//! run, a concurrent ingest's mark stays for it.

pub mod dirty;

use std::sync::LazyLock;

use chrono::NaiveDate;
use diesel::sql_types::{Array, BigInt, Date, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};

use super::triggers;

/// Arbitrary, fixed first key of the advisory lock between incremental runs (shared) and full
/// rebuilds (exclusive). The second key is the schema's (`hashtext(current_schema())`):
/// advisory locks are database-wide, and deployments (or tests) in other schemas of the same
/// database must not wait for each other's rebuilds.
const ROLLUP_LOCK: i32 = 0x726f_6c6c; // "roll"

/// Dirty groups one incremental transaction takes at most.
pub const DEFAULT_BATCH: i64 = 5_000;

static FULL: LazyLock<String> = LazyLock::new(|| full_pass(""));

/// The full pass for events that share their groups (see [`Grouping`]): its groups hashed, and
/// the days written in key order.
static FULL_HASHED: LazyLock<String> = LazyLock::new(|| {
    full_pass("ORDER BY organization_id, account_id, day, category, currency, unit")
});

fn full_pass(daily_order: &str) -> String {
    include_str!("rollup.sql")
        .replace("{events}", "TRUE")
        .replace("{stale_daily}", "TRUE")
        .replace("{stale}", "TRUE")
        .replace("{delta}", "FALSE")
        .replace("{daily_order}", daily_order)
}

/// Events of a sample, and the monthly groups they make: how many events share a group.
#[derive(diesel::QueryableByName)]
struct Sharing {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    events: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    groups: i64,
}

/// The first events by (account, time) — whole account-months through the events' account
/// index, a few milliseconds — and the monthly groups among them.
const SHARING: &str = "SELECT count(*) AS events,
       count(DISTINCT (account_id, product_id, aggr_product_id,
                       date_trunc('month', occurred_at AT TIME ZONE 'UTC'), usage_type,
                       description, currency, direction, resolution, unit,
                       trim_scale(unit_price), wallet_name)) AS groups
FROM (SELECT * FROM usage_events ORDER BY account_id, occurred_at LIMIT 5000) sample";

/// Events per group at or above which a full pass hashes its groups.
const HASH_FROM_EVENTS_PER_GROUP: i64 = 4;

/// How a full pass groups the events. The planner cannot know how many events share a group,
/// assumes none do, and sorts every event to group them: right when each event is its own
/// group (the sort also writes the days in key order), 2.3× slower than hashing when 50 share
/// each (2.4 M events: 8.7 s against 3.8 s). A sample of whole account-months tells the two
/// apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grouping {
    Sorted,
    Hashed,
}

/// How the next full pass will group the events.
pub async fn grouping(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Grouping> {
    let sample: Sharing = diesel::sql_query(SHARING).get_result(conn).await?;
    Ok(
        if sample.events >= HASH_FROM_EVENTS_PER_GROUP * sample.groups.max(1) {
            Grouping::Hashed
        } else {
            Grouping::Sorted
        },
    )
}

/// A full rebuild's organization-wide days and months: recomputed whole, the days from
/// usage_daily, then the months from those days (rows that did not change are not rewritten;
/// days and months left with no event go). Two statements of one template, hence
/// `batch_execute`.
static FULL_TOTALS: LazyLock<String> = LazyLock::new(|| {
    let totals = |table: &str, source: &str, period: &str, period_of: &str| {
        include_str!("totals.sql")
            .replace("{table}", table)
            .replace("{source}", source)
            .replace("{period_of}", period_of)
            .replace("{period}", period)
    };
    [
        totals("usage_daily_totals", "usage_daily", "day", "day"),
        totals(
            "usage_monthly_totals",
            "usage_daily_totals",
            "month",
            "date_trunc('month', day)::date",
        ),
    ]
    .join(";\n")
});

/// $1 the dirty accounts, $2 and $3 the month's bounds, $4 the month, $5 the accounts'
/// organizations (account ids are unique, so they only let the aggregates be found through
/// `usage_monthly_org_account_month_idx`, which leads with the organization: without them each
/// statement scanned every aggregate).
static ONE_MONTH: LazyLock<String> = LazyLock::new(|| {
    include_str!("rollup.sql")
        .replace(
            "{events}",
            "e.account_id = ANY($1::text[]) AND e.occurred_at >= $2 AND e.occurred_at < $3",
        )
        .replace(
            "{stale_daily}",
            "d.account_id = ANY($1::text[]) AND d.day >= $4 \
             AND d.day < ($4 + interval '1 month')::date",
        )
        .replace(
            "{stale}",
            "m.organization_id = ANY($5::text[]) AND m.account_id = ANY($1::text[]) \
             AND m.month = $4",
        )
        .replace("{delta}", "TRUE")
        .replace("{daily_order}", "")
});

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RollupStats {
    /// Aggregates recomputed.
    pub groups: i64,
    /// Aggregates inserted or changed.
    pub changed: i64,
    /// Aggregates removed (their events were voided or their account is gone).
    pub removed: i64,
    /// Daily aggregates (usage_daily) inserted, changed or removed.
    pub days_changed: i64,
    /// Usage triggers fired (their deliveries are pending in the outbox).
    pub fired: i64,
}

/// What one statement of rollup.sql reports.
#[derive(QueryableByName)]
struct Counts {
    #[diesel(sql_type = BigInt)]
    groups: i64,
    #[diesel(sql_type = BigInt)]
    changed: i64,
    #[diesel(sql_type = BigInt)]
    removed: i64,
    #[diesel(sql_type = BigInt)]
    days_changed: i64,
}

impl From<Counts> for RollupStats {
    fn from(c: Counts) -> Self {
        RollupStats {
            groups: c.groups,
            changed: c.changed,
            removed: c.removed,
            days_changed: c.days_changed,
            fired: 0,
        }
    }
}

impl std::ops::AddAssign for RollupStats {
    fn add_assign(&mut self, other: Self) {
        self.groups += other.groups;
        self.changed += other.changed;
        self.removed += other.removed;
        self.days_changed += other.days_changed;
        self.fired += other.fired;
    }
}

#[derive(QueryableByName)]
struct Mark {
    #[diesel(sql_type = Text)]
    organization_id: String,
    #[diesel(sql_type = Text)]
    account_id: String,
    #[diesel(sql_type = Date)]
    month: NaiveDate,
    /// As read: the mark is deleted only if it still has it.
    #[diesel(sql_type = BigInt)]
    version: i64,
}

/// How long a worker's claim on its marks lasts. A worker still at work after that rolls back
/// if another one took any of them over; a crashed worker's marks are free again after it.
const LEASE_SECONDS: i32 = 60;

/// A rollup transaction waits at most this long for a lock (an ingest marking one of its
/// groups, a trigger being created), then fails and is retried on the next tick.
const LOCK_TIMEOUT: &str = "SET LOCAL lock_timeout = '10s'";

/// Recomputes every aggregate and clears the marks that existed when it started, unless an
/// ingest marked them again meanwhile (those stay for the next incremental run). It holds no
/// mark locked while it works: ingest never waits for it (only, at the very end, for the
/// deletion of the marks and the commit).
pub async fn run_full(conn: &mut AsyncPgConnection) -> diesel::QueryResult<RollupStats> {
    conn.transaction(async |conn| {
        unbounded(conn).await?;
        diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext(current_schema()))")
            .bind::<diesel::sql_types::Integer, _>(ROLLUP_LOCK)
            .execute(conn)
            .await?;
        let marks: Vec<Mark> = diesel::sql_query(
            "SELECT organization_id, account_id, month, version FROM rollup_dirty",
        )
        .load(conn)
        .await?;
        let pass = match grouping(conn).await? {
            Grouping::Sorted => FULL.as_str(),
            Grouping::Hashed => {
                // A rare pass of a single process: memory for the groups (a table larger than
                // that spills to disk in batches), and no sort of every event.
                conn.batch_execute("SET LOCAL work_mem = '256MB'; SET LOCAL enable_sort = off")
                    .await?;
                FULL_HASHED.as_str()
            }
        };
        let mut stats: RollupStats = diesel::sql_query(pass)
            .get_result::<Counts>(conn)
            .await?
            .into();
        conn.batch_execute("SET LOCAL enable_sort = on").await?;
        conn.batch_execute(&FULL_TOTALS).await?;
        stats.fired = triggers::evaluate_all(conn).await?;
        finish(conn, &marks, None).await?;
        Ok(stats)
    })
    .await
}

/// Takes up to `batch` dirty groups no other worker holds and recomputes them, a month at a
/// time. Returns how many marks it took and what it did; no marks taken means there was nothing
/// (free) to do.
pub async fn run_pending(
    conn: &mut AsyncPgConnection,
    batch: i64,
) -> diesel::QueryResult<(usize, RollupStats)> {
    run_pending_as(conn, batch, uuid::Uuid::new_v4()).await
}

/// [`run_pending`] as the worker `owner`, which takes back its own unexpired claims (left by a
/// run of its that failed) before anyone else's expired ones.
///
/// Two transactions: the claim (committed at once, so the marks are locked for a moment only)
/// and the work. An ingest marking a claimed group meanwhile neither waits nor is lost: it
/// moves the mark's version, and the work then leaves that mark for the next run.
async fn run_pending_as(
    conn: &mut AsyncPgConnection,
    batch: i64,
    owner: uuid::Uuid,
) -> diesel::QueryResult<(usize, RollupStats)> {
    let marks = claim(conn, batch, owner).await?;
    if marks.is_empty() {
        return Ok((0, RollupStats::default()));
    }
    let worked = conn
        .transaction(async |conn| {
            unbounded(conn).await?;
            diesel::sql_query(LOCK_TIMEOUT).execute(conn).await?;
            let organizations: Vec<&str> =
                marks.iter().map(|m| m.organization_id.as_str()).collect();
            lock_organizations(conn, &organizations).await?;
            let mut stats = recompute(conn, &marks).await?;
            stats.fired = fire(conn, &marks).await?;
            finish(conn, &marks, Some(owner)).await?;
            Ok(stats)
        })
        .await;
    match worked {
        Ok(stats) => Ok((marks.len(), stats)),
        // Another worker (or a full rebuild) has some of these marks now: nothing was written.
        Err(diesel::result::Error::RollbackTransaction) => Ok((0, RollupStats::default())),
        Err(err) => Err(err),
    }
}

/// Claims up to `batch` marks for `owner` (oldest first; its own unexpired claims too) in one
/// statement of its own transaction.
async fn claim(
    conn: &mut AsyncPgConnection,
    batch: i64,
    owner: uuid::Uuid,
) -> diesel::QueryResult<Vec<Mark>> {
    diesel::sql_query(
        "UPDATE rollup_dirty d \
         SET lease_owner = $2, leased_until = now() + make_interval(secs => $3) \
         FROM (SELECT organization_id, account_id, month FROM rollup_dirty \
               WHERE leased_until IS NULL OR leased_until < now() OR lease_owner = $2 \
               ORDER BY marked_at LIMIT $1 FOR UPDATE SKIP LOCKED) c \
         WHERE d.organization_id = c.organization_id AND d.account_id = c.account_id \
           AND d.month = c.month \
         RETURNING d.organization_id, d.account_id, d.month, d.version",
    )
    .bind::<BigInt, _>(batch)
    .bind::<diesel::sql_types::Uuid, _>(owner)
    .bind::<diesel::sql_types::Integer, _>(LEASE_SECONDS)
    .load(conn)
    .await
}

/// Recomputes the groups of `marks`, one statement per month.
async fn recompute(
    conn: &mut AsyncPgConnection,
    marks: &[Mark],
) -> diesel::QueryResult<RollupStats> {
    let mut stats = RollupStats::default();
    type Dirty<'a> = (Vec<&'a str>, std::collections::BTreeSet<&'a str>);
    let mut by_month: std::collections::BTreeMap<NaiveDate, Dirty> = Default::default();
    for mark in marks {
        let (accounts, organizations) = by_month.entry(mark.month).or_default();
        accounts.push(mark.account_id.as_str());
        organizations.insert(mark.organization_id.as_str());
    }
    for (month, (accounts, organizations)) in by_month {
        let organizations: Vec<&str> = organizations.into_iter().collect();
        let start = month.and_time(chrono::NaiveTime::MIN).and_utc();
        let end = month
            .checked_add_months(chrono::Months::new(1))
            .unwrap_or(NaiveDate::MAX)
            .and_time(chrono::NaiveTime::MIN)
            .and_utc();
        stats += diesel::sql_query(ONE_MONTH.as_str())
            .bind::<Array<Text>, _>(&accounts)
            .bind::<Timestamptz, _>(start)
            .bind::<Timestamptz, _>(end)
            .bind::<Date, _>(month)
            .bind::<Array<Text>, _>(&organizations)
            .get_result::<Counts>(conn)
            .await?
            .into();
    }
    Ok(stats)
}

/// Fires the triggers the groups of `marks` may have crossed, in the transaction of the
/// aggregates that crossed them.
async fn fire(conn: &mut AsyncPgConnection, marks: &[Mark]) -> diesel::QueryResult<i64> {
    let touched = triggers::Touched {
        organizations: marks.iter().map(|m| m.organization_id.as_str()).collect(),
        accounts: marks.iter().map(|m| m.account_id.as_str()).collect(),
        months: marks.iter().map(|m| m.month).collect(),
    };
    triggers::evaluate(conn, &touched).await
}

/// The locks every transaction that changes aggregates (an incremental rollup, an account's
/// move) takes before any of them, in this order: the rollup's advisory lock, shared (a full
/// rebuild takes it alone), then `organizations` in id order. Every statement that changes
/// aggregates bumps its organizations' data version (a row lock held to the commit), so a
/// writer that locked aggregate rows first and their organization last could wait for one that
/// did the opposite: a deadlock. `FOR UPDATE`, the mode of that bump
/// (organizations_bump_data_version), so that the bump never has to upgrade the lock.
pub async fn lock_organizations(
    conn: &mut AsyncPgConnection,
    organizations: &[&str],
) -> diesel::QueryResult<()> {
    diesel::sql_query("SELECT pg_advisory_xact_lock_shared($1, hashtext(current_schema()))")
        .bind::<diesel::sql_types::Integer, _>(ROLLUP_LOCK)
        .execute(conn)
        .await?;
    diesel::sql_query("SELECT id FROM organizations WHERE id = ANY($1) ORDER BY id FOR UPDATE")
        .bind::<Array<Text>, _>(organizations)
        .execute(conn)
        .await
        .map(|_| ())
}

/// Dirty marks from which `usage-api rollup` considers the set-based pass.
pub const SET_BASED_MIN_MARKS: i64 = 10_000;

/// How a sized run went about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// [`run_full`]: one set-based pass over every event.
    SetBased,
    /// [`run_until_clean`]: batches of dirty groups.
    Incremental,
}

/// What `usage-api rollup` runs: the set-based pass ([`run_full`]) when at least `min_marks`
/// groups are dirty and they are at least half of the (organization, account, month) groups
/// known (after a bulk load), else incremental batches. The set-based pass does the same work
/// about 2.3× faster (bench/rollup.sh) in one transaction, as crash-safe and exact as the
/// batches; the batches commit as they go, so they win when few groups changed.
pub async fn run_sized(
    conn: &mut AsyncPgConnection,
    min_marks: i64,
) -> diesel::QueryResult<(Strategy, RollupStats)> {
    #[derive(QueryableByName)]
    struct Mostly {
        #[diesel(sql_type = diesel::sql_types::Bool)]
        mostly: bool,
    }
    // The marks are counted up to `min_marks` only: a quick no for the usual small backlog.
    let sized: Mostly = diesel::sql_query(
        "WITH marks AS (SELECT count(*) AS n FROM (SELECT 1 FROM rollup_dirty LIMIT $1) m) \
         SELECT (SELECT n FROM marks) >= $1 AND (SELECT count(*) FROM rollup_dirty) * 2 >= \
                (SELECT count(*) FROM (SELECT DISTINCT organization_id, account_id, month \
                                        FROM usage_monthly) g) AS mostly",
    )
    .bind::<diesel::sql_types::BigInt, _>(min_marks)
    .get_result(conn)
    .await?;
    if sized.mostly {
        Ok((Strategy::SetBased, run_full(conn).await?))
    } else {
        Ok((Strategy::Incremental, run_until_clean(conn).await?))
    }
}

/// Runs incremental batches until no free dirty group is left.
pub async fn run_until_clean(conn: &mut AsyncPgConnection) -> diesel::QueryResult<RollupStats> {
    run_until_clean_as(conn, uuid::Uuid::new_v4()).await
}

/// [`run_until_clean`] as the worker `owner` (the server's worker keeps one for its life).
async fn run_until_clean_as(
    conn: &mut AsyncPgConnection,
    owner: uuid::Uuid,
) -> diesel::QueryResult<RollupStats> {
    let mut total = RollupStats::default();
    loop {
        let started = std::time::Instant::now();
        let (taken, stats) = run_pending_as(conn, DEFAULT_BATCH, owner).await?;
        if taken == 0 {
            return Ok(total);
        }
        record_batch(taken, &stats, started.elapsed());
        total += stats;
    }
}

/// The metrics of one committed incremental batch: its duration
/// (`usage_api_rollup_batch_seconds`), the dirty marks it took
/// (`usage_api_rollup_marks_total`), the monthly aggregates it recomputed
/// (`usage_api_rollup_groups_total`) and what it wrote (`usage_api_rollup_aggregates_total`:
/// monthly rows changed or removed, daily rows changed). Triggers fired are counted where they
/// fire (`usage_api_trigger_firings_total`). The lag is sampled when the metrics are rendered.
fn record_batch(marks: usize, stats: &RollupStats, elapsed: std::time::Duration) {
    let count = |n: i64| n.unsigned_abs();
    metrics::histogram!("usage_api_rollup_batch_seconds").record(elapsed.as_secs_f64());
    metrics::counter!("usage_api_rollup_marks_total").increment(marks as u64);
    metrics::counter!("usage_api_rollup_groups_total").increment(count(stats.groups));
    let written = |table: &'static str, change: &'static str| {
        metrics::counter!(
            "usage_api_rollup_aggregates_total",
            "table" => table,
            "change" => change
        )
    };
    written("monthly", "changed").increment(count(stats.changed));
    written("monthly", "removed").increment(count(stats.removed));
    written("daily", "changed").increment(count(stats.days_changed));
}

/// A rollup may take longer than the API's statement timeout (a backfilled month, a full
/// rebuild); a timeout would make the worker fail on the same marks forever.
async fn unbounded(conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
    diesel::sql_query("SET LOCAL statement_timeout = 0")
        .execute(conn)
        .await
        .map(|_| ())
}

/// Ends a run, last thing before its commit (so the marks' row locks, which an ingest of the
/// same groups would wait for, are held only for the commit):
/// - an incremental run (`owner`) checks that it still holds every claim, else rolls back
///   (`RollbackTransaction`): another worker took some over after its lease ran out;
/// - deletes the marks whose version is the one it read, and frees the others (an ingest
///   marked them again meanwhile) for the next run;
/// - records when the organizations concerned (all of them after a full rebuild) were last
///   rolled up. Their data version moves by itself: triggers on usage_monthly bump it whenever
///   a row changes (migration 3).
async fn finish(
    conn: &mut AsyncPgConnection,
    marks: &[Mark],
    owner: Option<uuid::Uuid>,
) -> diesel::QueryResult<()> {
    let organizations: Vec<&str> = marks.iter().map(|m| m.organization_id.as_str()).collect();
    let accounts: Vec<&str> = marks.iter().map(|m| m.account_id.as_str()).collect();
    let months: Vec<NaiveDate> = marks.iter().map(|m| m.month).collect();
    let versions: Vec<i64> = marks.iter().map(|m| m.version).collect();
    if let Some(owner) = owner {
        if !still_held(conn, &organizations, &accounts, &months, owner).await? {
            return Err(diesel::result::Error::RollbackTransaction);
        }
    }
    // Sorted as ingest marks them (one lock order, no deadlock).
    diesel::sql_query(
        "WITH t AS (SELECT * FROM unnest($1::text[], $2::text[], $3::date[], $4::bigint[]) \
                    AS t(organization_id, account_id, month, version)), \
         gone AS (DELETE FROM rollup_dirty d USING t \
                  WHERE d.organization_id = t.organization_id AND d.account_id = t.account_id \
                    AND d.month = t.month AND d.version = t.version RETURNING 1) \
         UPDATE rollup_dirty d SET lease_owner = NULL, leased_until = NULL FROM t \
         WHERE d.organization_id = t.organization_id AND d.account_id = t.account_id \
           AND d.month = t.month AND d.version <> t.version AND $5",
    )
    .bind::<Array<Text>, _>(&organizations)
    .bind::<Array<Text>, _>(&accounts)
    .bind::<Array<Date>, _>(&months)
    .bind::<Array<BigInt>, _>(&versions)
    .bind::<diesel::sql_types::Bool, _>(owner.is_some())
    .execute(conn)
    .await?;
    diesel::sql_query(
        "UPDATE organizations o SET rolled_up_at = now() \
         FROM (SELECT id FROM organizations \
               WHERE $2 OR id = ANY($1) OR id IN (SELECT organization_id FROM accounts \
                                                  WHERE id = ANY($3)) \
               ORDER BY id FOR UPDATE) locked \
         WHERE o.id = locked.id",
    )
    .bind::<Array<Text>, _>(&organizations)
    .bind::<diesel::sql_types::Bool, _>(owner.is_none())
    .bind::<Array<Text>, _>(&accounts)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether `owner` still holds the claim on every one of these marks; locks them, in the order
/// ingest takes them, until the commit.
async fn still_held(
    conn: &mut AsyncPgConnection,
    organizations: &[&str],
    accounts: &[&str],
    months: &[NaiveDate],
    owner: uuid::Uuid,
) -> diesel::QueryResult<bool> {
    #[derive(QueryableByName)]
    struct Held {
        #[diesel(sql_type = BigInt)]
        held: i64,
    }
    let held: Held = diesel::sql_query(
        "WITH mine AS (SELECT 1 FROM rollup_dirty d \
             JOIN unnest($1::text[], $2::text[], $3::date[]) AS t(organization_id, account_id, month) \
               ON d.organization_id = t.organization_id AND d.account_id = t.account_id \
              AND d.month = t.month \
             WHERE d.lease_owner = $4 \
             ORDER BY d.organization_id COLLATE \"C\", d.account_id COLLATE \"C\", d.month \
             FOR UPDATE OF d) \
         SELECT count(*) AS held FROM mine",
    )
    .bind::<Array<Text>, _>(organizations)
    .bind::<Array<Text>, _>(accounts)
    .bind::<Array<Date>, _>(months)
    .bind::<diesel::sql_types::Uuid, _>(owner)
    .get_result(conn)
    .await?;
    Ok(usize::try_from(held.held).unwrap_or(0) == organizations.len())
}

/// Creates this month's and next month's partitions ahead of the events, so that ingest rarely
/// has to.
async fn prepare_months(conn: &mut AsyncPgConnection) -> diesel::QueryResult<()> {
    let this = super::model::Month::of(chrono::Utc::now()).first_day();
    let next = this
        .checked_add_months(chrono::Months::new(1))
        .unwrap_or(this);
    super::write::partitions::ensure(conn, &[this, next]).await
}

/// The server's rollup worker: runs incremental batches whenever woken (an ingest just
/// committed) or every `interval`, forever, and wakes the webhook deliveries (`fired`) when
/// triggers fired. Errors are logged and retried on the next tick.
pub async fn run_forever(
    pool: crate::db::DbPool,
    interval: std::time::Duration,
    wake: std::sync::Arc<tokio::sync::Notify>,
    fired: std::sync::Arc<tokio::sync::Notify>,
) {
    let owner = uuid::Uuid::new_v4();
    loop {
        match pool.get().await {
            Ok(mut conn) => match async {
                prepare_months(&mut conn).await?;
                run_until_clean_as(&mut conn, owner).await
            }
            .await
            {
                Ok(stats) if stats.groups > 0 || stats.removed > 0 => {
                    tracing::info!(
                        groups = stats.groups,
                        changed = stats.changed,
                        removed = stats.removed,
                        fired = stats.fired,
                        "rollup"
                    );
                    if stats.fired > 0 {
                        fired.notify_one();
                    }
                }
                Ok(_) => {}
                Err(err) => {
                    metrics::counter!("usage_api_rollup_failures_total").increment(1);
                    tracing::warn!(error = %err, "rollup failed; retrying");
                }
            },
            Err(err) => {
                metrics::counter!("usage_api_rollup_failures_total").increment(1);
                tracing::warn!(error = %err, "rollup cannot reach the database; retrying");
            }
        }
        let _ = tokio::time::timeout(interval, wake.notified()).await;
    }
}
