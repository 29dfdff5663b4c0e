//! The rollup: brings `usage_monthly` up to date with `usage_events`, exactly and idempotently,
//! keeping each aggregate's id stable (see rollup.sql).

use diesel::sql_types::BigInt;
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

/// Arbitrary, fixed key of the advisory lock that lets one rollup run at a time.
const ROLLUP_LOCK: i64 = 0x726f_6c6c_7570; // "rollup"

#[derive(Debug, Clone, Copy, PartialEq, Eq, QueryableByName)]
pub struct RollupStats {
    /// Aggregates that exist after the rollup.
    #[diesel(sql_type = BigInt)]
    pub groups: i64,
    /// Aggregates inserted or changed.
    #[diesel(sql_type = BigInt)]
    pub changed: i64,
    /// Aggregates removed (their events or account are gone).
    #[diesel(sql_type = BigInt)]
    pub removed: i64,
}

/// Recomputes every aggregate. Concurrent rollups wait for each other instead of racing.
pub async fn run_full(conn: &mut AsyncPgConnection) -> diesel::QueryResult<RollupStats> {
    conn.transaction(async |conn| {
        diesel::sql_query("SELECT pg_advisory_xact_lock($1)")
            .bind::<BigInt, _>(ROLLUP_LOCK)
            .execute(conn)
            .await?;
        diesel::sql_query(include_str!("rollup.sql"))
            .get_result::<RollupStats>(conn)
            .await
    })
    .await
}
