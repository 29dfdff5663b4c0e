//! The rollup's queue: every (organization, account, month) whose events changed since its last
//! rollup is marked dirty, in the same transaction as the change (ingest, voids, account moves).
//! The rollup takes marks with `FOR UPDATE SKIP LOCKED` and deletes them when it commits.

use chrono::NaiveDate;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::db::schema::rollup_dirty;
use crate::usage::model::{AccountId, OrganizationId};

/// Marks per INSERT (3 bind parameters each).
const MARKS_PER_INSERT: usize = 5000;

/// A dirty (organization, account, month), ordered as the table's primary key: every writer
/// takes marks in this order.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DirtyMark {
    pub organization_id: OrganizationId,
    pub account_id: AccountId,
    /// The month's first day.
    pub month: NaiveDate,
}

/// Marks the keys dirty, sorted and once each: every transaction takes marks in the same order,
/// so concurrent ones wait for each other instead of deadlocking. `DO UPDATE` (not
/// `DO NOTHING`) on purpose: if a rollup holds a mark locked, this waits for it to commit and
/// then writes the mark anew, so events committed after the rollup's snapshot are never left
/// unmarked.
pub async fn mark_dirty(
    conn: &mut AsyncPgConnection,
    mut marks: Vec<DirtyMark>,
) -> QueryResult<()> {
    marks.sort_unstable();
    marks.dedup();
    for chunk in marks.chunks(MARKS_PER_INSERT) {
        let rows: Vec<_> = chunk
            .iter()
            .map(|mark| {
                (
                    rollup_dirty::organization_id.eq(&mark.organization_id),
                    rollup_dirty::account_id.eq(&mark.account_id),
                    rollup_dirty::month.eq(mark.month),
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
