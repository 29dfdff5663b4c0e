//! Monthly partitions of `usage_events`, created on demand before events are written to them
//! (by `usage_events_ensure_partition`, migration 2: a standalone table attached to the parent,
//! which does not stall queries on usage_events the way `CREATE TABLE … PARTITION OF` would).

use chrono::NaiveDate;
use diesel::sql_types::{Array, Date};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Makes sure a partition exists for each month (first days). Safe under concurrency: the SQL
/// function swallows a lost creation race.
pub async fn ensure(conn: &mut AsyncPgConnection, months: &[NaiveDate]) -> diesel::QueryResult<()> {
    if months.is_empty() {
        return Ok(());
    }
    diesel::sql_query("SELECT usage_events_ensure_partition(m) FROM unnest($1) AS m")
        .bind::<Array<Date>, _>(months)
        .execute(conn)
        .await?;
    Ok(())
}
