//! The event-id ledger (`usage_event_ids`): one row per (organization, event id) ever accepted,
//! events and voids alike, whatever its month. Claiming an id is what makes a repeat a
//! duplicate, within one organization only.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::schema::usage_event_ids;
use crate::usage::model::{AccountId, OrganizationId};

/// A ledger entry's key: (organization, event id).
pub type LedgerKey = (OrganizationId, String);

/// One ledger entry to claim.
pub struct Claim<'a> {
    pub organization_id: &'a OrganizationId,
    pub event_id: &'a str,
    pub account_id: &'a AccountId,
    pub occurred_at: DateTime<Utc>,
}

/// Claims ledger entries (sorted by the caller); answers the (organization, event id) pairs
/// that were new. A claim another transaction holds waits for it: if that one commits, the id
/// is a duplicate here.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    claims: &[Claim<'_>],
) -> QueryResult<HashSet<LedgerKey>> {
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
        .get_results::<LedgerKey>(conn)
        .await?
        .into_iter()
        .collect())
}
