//! The rollup's queue: every (organization, account, month) whose events changed since its last
//! rollup is marked dirty, in the same transaction as the change (ingest, voids, account moves).
//! The rollup leases marks in a short transaction of its own and deletes them, if their version
//! did not move meanwhile, when its work commits (`rollup::run_pending`).

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
/// so concurrent ones wait for each other instead of deadlocking. A mark already there gets a
/// new `version`: the rollup working on it (it holds no lock on it meanwhile, so this never
/// waits for a rollup) then leaves it for the next run instead of deleting it, so events
/// committed after the rollup's snapshot are never left unmarked.
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
            .set(rollup_dirty::version.eq(rollup_dirty::version + 1))
            .execute(conn)
            .await?;
    }
    Ok(())
}

#[derive(QueryableByName)]
struct Age {
    #[diesel(sql_type = diesel::sql_types::Double)]
    seconds: f64,
}

/// How long the oldest mark has waited for the rollup, in seconds (0 when none waits): the
/// rollup's lag, whichever worker or replica is behind. Measured by the database's clock, the
/// one that wrote `marked_at`; one read of `rollup_dirty_marked_idx`.
pub async fn oldest_age(conn: &mut AsyncPgConnection) -> QueryResult<f64> {
    diesel::sql_query(
        "SELECT COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - min(marked_at)), 0)::float8 \
         AS seconds FROM rollup_dirty",
    )
    .get_result::<Age>(conn)
    .await
    .map(|age| age.seconds.max(0.0))
}
