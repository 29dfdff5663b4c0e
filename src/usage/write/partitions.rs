//! Monthly partitions of `usage_events`, created on demand before events are written to them
//! (by `usage_events_ensure_partition`, migration 2: a standalone table attached to the parent,
//! which does not stall queries on usage_events the way `CREATE TABLE … PARTITION OF` would).

use chrono::NaiveDate;
use diesel::sql_types::{Array, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Creates the partitions of the months `$1` (first days, as `YYYY-MM-DD` text) that do not
/// exist yet. Safe under concurrency: the SQL function swallows a lost creation race. Every
/// writer (HTTP batches, the bulk loaders, the rollup's look-ahead) runs this one statement.
pub const ENSURE: &str =
    "SELECT usage_events_ensure_partition(m::date) FROM unnest($1::text[]) AS m";

/// Makes sure a partition exists for each month (first days).
pub async fn ensure(conn: &mut AsyncPgConnection, months: &[NaiveDate]) -> diesel::QueryResult<()> {
    if months.is_empty() {
        return Ok(());
    }
    let months: Vec<String> = months.iter().map(NaiveDate::to_string).collect();
    diesel::sql_query(ENSURE)
        .bind::<Array<Text>, _>(months)
        .execute(conn)
        .await?;
    Ok(())
}
