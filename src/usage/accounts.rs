//! Organizations and their accounts: the upsert used by `usage-api accounts import` (which moves
//! an account's usage along with it). Whose an account is, is asked where it matters: by reads
//! in `read::foreign_accounts` (cached per data version), by writes in `write::store`'s owners.

use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use super::model::{AccountId, OrganizationId};
use super::rollup::dirty::{mark_dirty, DirtyMark};
use crate::db::schema::{
    accounts, organizations, usage_event_ids, usage_events, usage_monthly, usage_voids,
};

/// An account as imported.
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = accounts)]
pub struct NewAccount {
    pub id: String,
    pub organization_id: String,
    pub name: String,
}

/// Rows per INSERT statement (Postgres allows 65,535 bind parameters per statement).
const ROWS_PER_INSERT: usize = 1000;

/// Why an import changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// Event ids are unique per organization: an account cannot bring along an id its new
    /// organization already has.
    #[error(
        "account '{account}' cannot move to organization '{organization}': its event id \
         '{event_id}' is already used there (nothing was imported)"
    )]
    IdCollision {
        account: String,
        organization: String,
        event_id: String,
    },
    #[error(transparent)]
    Database(#[from] diesel::result::Error),
}

/// Upserts the organizations and accounts. An account may move to another organization: it
/// takes its events, their ids, its voids and its aggregates along, in the same transaction;
/// if one of its event ids is already used in the new organization, nothing of the batch
/// changes (it is one transaction, whatever its size).
/// Returns how many account rows were inserted or changed.
pub async fn upsert(
    conn: &mut AsyncPgConnection,
    batch: &[NewAccount],
) -> Result<usize, ImportError> {
    if batch.is_empty() {
        return Ok(0);
    }
    let mut organizations: Vec<&str> = batch.iter().map(|a| a.organization_id.as_str()).collect();
    organizations.sort_unstable();
    organizations.dedup();
    let rows: Vec<_> = organizations
        .iter()
        .map(|id| organizations::id.eq(*id))
        .collect();
    conn.transaction(async |conn| {
        for chunk in rows.chunks(ROWS_PER_INSERT) {
            diesel::insert_into(organizations::table)
                .values(chunk)
                .on_conflict_do_nothing()
                .execute(conn)
                .await?;
        }
        let moving = moving(conn, batch).await?;
        // Every organization the batch changes (each chunk of accounts bumps its own, and a
        // move changes both sides' aggregates) is locked first, all at once, in the rollup's
        // order: a rollup at work on some of them never deadlocks with the import.
        let mut involved: Vec<&str> = organizations.clone();
        involved.extend(moving.iter().map(|(_, from)| from.as_str()));
        involved.sort_unstable();
        involved.dedup();
        super::rollup::lock_organizations(conn, &involved).await?;
        let moving: Vec<&NewAccount> = moving.into_iter().map(|(account, _)| account).collect();
        for account in &moving {
            refuse_collisions(conn, account).await?;
        }
        let mut changed = 0;
        for chunk in batch.chunks(ROWS_PER_INSERT) {
            changed += diesel::insert_into(accounts::table)
                .values(chunk)
                .on_conflict(accounts::id)
                .do_update()
                .set((
                    accounts::organization_id.eq(excluded(accounts::organization_id)),
                    accounts::name.eq(excluded(accounts::name)),
                    accounts::updated_at.eq(diesel::dsl::now),
                ))
                .execute(conn)
                .await?;
        }
        for account in &moving {
            move_usage(conn, account).await?;
        }
        Ok(changed)
    })
    .await
}

/// The accounts of `batch` that exist in another organization, with that organization (locked,
/// in id order, until the transaction ends, so that they cannot move meanwhile).
async fn moving<'a>(
    conn: &mut AsyncPgConnection,
    batch: &'a [NewAccount],
) -> QueryResult<Vec<(&'a NewAccount, String)>> {
    let ids: Vec<&str> = batch.iter().map(|a| a.id.as_str()).collect();
    let current: Vec<(String, String)> = accounts::table
        .filter(accounts::id.eq_any(&ids))
        .select((accounts::id, accounts::organization_id))
        .order(accounts::id)
        .for_update()
        .load(conn)
        .await?;
    Ok(batch
        .iter()
        .filter_map(|a| {
            current
                .iter()
                .find(|(id, org)| *id == a.id && *org != a.organization_id)
                .map(|(_, org)| (a, org.clone()))
        })
        .collect())
}

/// Refuses the move of `account` when one of its event ids exists in its new organization.
async fn refuse_collisions(
    conn: &mut AsyncPgConnection,
    account: &NewAccount,
) -> Result<(), ImportError> {
    let theirs = diesel::alias!(usage_event_ids as theirs);
    let clash: Option<String> = usage_event_ids::table
        .filter(usage_event_ids::account_id.eq(&account.id))
        .filter(diesel::dsl::exists(
            theirs
                .filter(
                    theirs
                        .field(usage_event_ids::organization_id)
                        .eq(&account.organization_id),
                )
                .filter(
                    theirs
                        .field(usage_event_ids::event_id)
                        .eq(usage_event_ids::event_id),
                ),
        ))
        .select(usage_event_ids::event_id)
        .first(conn)
        .await
        .optional()?;
    match clash {
        Some(event_id) => Err(ImportError::IdCollision {
            account: account.id.clone(),
            organization: account.organization_id.clone(),
            event_id,
        }),
        None => Ok(()),
    }
}

/// Deletes account $1's days outside organization $2 and subtracts them from their
/// organizations' daily and monthly totals (rows in key order, as the rollup writes them).
const MOVE_DAYS: &str = "\
WITH gone AS (
    DELETE FROM usage_daily WHERE account_id = $1 AND organization_id <> $2
    RETURNING organization_id, day, category, currency, unit, event_count, quantity, amount
),
days AS (
    INSERT INTO usage_daily_totals AS t (
        organization_id, day, category, currency, unit, event_count, quantity, amount)
    SELECT organization_id, day, category, currency, unit,
           -sum(event_count), -sum(quantity), -sum(amount)
    FROM gone
    GROUP BY organization_id, day, category, currency, unit
    ORDER BY organization_id, day, category, currency, unit
    ON CONFLICT (organization_id, day, category, currency, unit) DO UPDATE SET
        event_count = t.event_count + EXCLUDED.event_count,
        quantity    = trim_scale(t.quantity + EXCLUDED.quantity),
        amount      = trim_scale(t.amount + EXCLUDED.amount)
    RETURNING 1
)
INSERT INTO usage_monthly_totals AS t (
    organization_id, month, category, currency, unit, event_count, quantity, amount)
SELECT organization_id, date_trunc('month', day)::date, category, currency, unit,
       -sum(event_count), -sum(quantity), -sum(amount)
FROM gone
GROUP BY organization_id, date_trunc('month', day)::date, category, currency, unit
ORDER BY organization_id, date_trunc('month', day)::date, category, currency, unit
ON CONFLICT (organization_id, month, category, currency, unit) DO UPDATE SET
    event_count = t.event_count + EXCLUDED.event_count,
    quantity    = trim_scale(t.quantity + EXCLUDED.quantity),
    amount      = trim_scale(t.amount + EXCLUDED.amount)";

/// Moves an account's events, ledger entries, voids and aggregates to its new organization.
async fn move_usage(conn: &mut AsyncPgConnection, account: &NewAccount) -> QueryResult<()> {
    let (id, org) = (account.id.as_str(), account.organization_id.as_str());
    diesel::update(usage_events::table)
        .filter(usage_events::account_id.eq(id))
        .filter(usage_events::organization_id.ne(org))
        .set(usage_events::organization_id.eq(org))
        .execute(conn)
        .await?;
    diesel::update(usage_event_ids::table)
        .filter(usage_event_ids::account_id.eq(id))
        .set(usage_event_ids::organization_id.eq(org))
        .execute(conn)
        .await?;
    diesel::update(usage_voids::table)
        .filter(usage_voids::account_id.eq(id))
        .set(usage_voids::organization_id.eq(org))
        .execute(conn)
        .await?;
    // The aggregates go at once: the old organization must not go on reading them until the
    // next rollup…
    let moved: Vec<(OrganizationId, AccountId, chrono::NaiveDate)> =
        diesel::update(usage_monthly::table)
            .filter(usage_monthly::account_id.eq(id))
            .filter(usage_monthly::organization_id.ne(org))
            .set(usage_monthly::organization_id.eq(org))
            .returning((
                usage_monthly::organization_id,
                usage_monthly::account_id,
                usage_monthly::month,
            ))
            .get_results(conn)
            .await?;
    // Its days leave the old organization at once too, taken out of that organization's
    // totals; the rollup (marked below) writes them under the new one.
    diesel::sql_query(MOVE_DAYS)
        .bind::<diesel::sql_types::Text, _>(id)
        .bind::<diesel::sql_types::Text, _>(org)
        .execute(conn)
        .await?;
    // …and their groups are marked dirty: a rollup running right now may write the old
    // organization back from its snapshot; the mark makes the next run set it right.
    let marks = moved
        .into_iter()
        .map(|(organization_id, account_id, month)| DirtyMark {
            organization_id,
            account_id,
            month,
        })
        .collect();
    mark_dirty(conn, marks).await
}
