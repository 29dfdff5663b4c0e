//! Organizations and their accounts: the ownership rule, and the upsert used by
//! `usage-api accounts import`.

use diesel::prelude::*;
use diesel::upsert::excluded;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::db::schema::{accounts, organizations, usage_monthly};

/// Of `ids`, those that are not accounts of `organization_id` — whether they belong to another
/// organization or do not exist at all: the two must look the same to the caller.
pub async fn foreign_accounts(
    conn: &mut AsyncPgConnection,
    organization_id: &str,
    ids: &[String],
) -> QueryResult<Vec<String>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let own: Vec<String> = accounts::table
        .filter(accounts::organization_id.eq(organization_id))
        .filter(accounts::id.eq_any(ids))
        .select(accounts::id)
        .load(conn)
        .await?;
    Ok(ids.iter().filter(|id| !own.contains(id)).cloned().collect())
}

/// An account as imported.
#[derive(Debug, Clone, PartialEq, Eq, Insertable)]
#[diesel(table_name = accounts)]
pub struct NewAccount {
    pub id: String,
    pub organization_id: String,
    pub name: String,
}

/// Upserts the organizations and accounts (an account may move to another organization).
/// Returns how many account rows were inserted or changed.
pub async fn upsert(conn: &mut AsyncPgConnection, batch: &[NewAccount]) -> QueryResult<usize> {
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
        diesel::insert_into(organizations::table)
            .values(&rows)
            .on_conflict_do_nothing()
            .execute(conn)
            .await?;
        let changed = diesel::insert_into(accounts::table)
            .values(batch)
            .on_conflict(accounts::id)
            .do_update()
            .set((
                accounts::organization_id.eq(excluded(accounts::organization_id)),
                accounts::name.eq(excluded(accounts::name)),
                accounts::updated_at.eq(diesel::dsl::now),
            ))
            .execute(conn)
            .await?;
        // An account that moved takes its aggregates along at once: the old organization must
        // not go on reading them until the next rollup.
        let ids: Vec<&str> = batch.iter().map(|a| a.id.as_str()).collect();
        let mut moved: Vec<(String, chrono::NaiveDate, String)> =
            diesel::update(usage_monthly::table)
                .filter(usage_monthly::account_id.eq_any(&ids))
                .filter(
                    usage_monthly::organization_id.ne_all(
                        accounts::table
                            .filter(accounts::id.eq(usage_monthly::account_id))
                            .select(accounts::organization_id),
                    ),
                )
                .set(
                    usage_monthly::organization_id.eq(accounts::table
                        .filter(accounts::id.eq(usage_monthly::account_id))
                        .select(accounts::organization_id)
                        .single_value()
                        .assume_not_null()),
                )
                .returning((
                    usage_monthly::account_id,
                    usage_monthly::month,
                    usage_monthly::organization_id,
                ))
                .get_results(conn)
                .await?;
        // And their groups are marked dirty: a rollup running right now may write the old
        // organization back from its snapshot; the mark makes the next run set it right.
        moved.sort_unstable();
        moved.dedup();
        let keys: Vec<(&str, chrono::NaiveDate, &str)> = moved
            .iter()
            .map(|(account, month, org)| (account.as_str(), *month, org.as_str()))
            .collect();
        super::ingest::mark_dirty(conn, &keys).await?;
        Ok(changed)
    })
    .await
}
