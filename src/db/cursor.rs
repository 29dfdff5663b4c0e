//! Server-side cursors for exports: `DECLARE` a query (built with diesel, binds and all), then
//! `FETCH` it a batch at a time. Between fetches the query is suspended and the database does no
//! work for it; the enclosing transaction's end closes the cursor.

use diesel::pg::Pg;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::{QueryResult, QueryableByName};
use diesel_async::{AsyncPgConnection, RunQueryDsl};

/// Rows one `FETCH` reads.
pub const BATCH: usize = 1_000;

/// The one cursor a transaction of ours opens.
const NAME: &str = "usage_api_export";

/// `DECLARE usage_api_export NO SCROLL CURSOR FOR <query>`.
struct Declare<Q>(Q);

impl<Q: QueryFragment<Pg>> QueryFragment<Pg> for Declare<Q> {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        out.unsafe_to_cache_prepared();
        out.push_sql("DECLARE ");
        out.push_sql(NAME);
        out.push_sql(" NO SCROLL CURSOR FOR ");
        self.0.walk_ast(out.reborrow())
    }
}

impl<Q> QueryId for Declare<Q> {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

/// Opens the cursor over `query`. Call inside a transaction.
pub async fn declare<Q>(conn: &mut AsyncPgConnection, query: Q) -> QueryResult<()>
where
    Q: QueryFragment<Pg> + Send,
{
    Declare(query).execute(conn).await.map(|_| ())
}

/// The next batch of the cursor (fewer than [`BATCH`] rows: the last).
pub async fn fetch<T>(conn: &mut AsyncPgConnection) -> QueryResult<Vec<T>>
where
    T: QueryableByName<Pg> + Send + 'static,
{
    diesel::sql_query(format!("FETCH FORWARD {BATCH} FROM {NAME}"))
        .load(conn)
        .await
}
