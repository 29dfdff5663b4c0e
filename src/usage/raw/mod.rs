//! Raw usage records (DESIGN §2c): the events behind every aggregate, newest first
//! (`occurred_at` desc, then `event_id` desc), for one organization, read by key (never
//! `OFFSET`) a page at a time, or whole through a database cursor for exports.
//!
//! Every read is scoped by the organization, which leads the events' primary key
//! `(organization_id, occurred_at, seq)` in every monthly partition: a page reads the newest
//! rows of that organization through the index and stops, whatever the other organizations
//! hold. Filters are bind parameters of one fixed statement; nothing from a request is spliced
//! into it.

use chrono::{DateTime, Utc};
use diesel::sql_types::{Array, BigInt, Bool, Nullable, Numeric, Text, Timestamptz};
use diesel::QueryableByName;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};

use crate::usage::amount::Amount;
use crate::usage::model::{AccountId, OrganizationId, UsageType};

/// Most events one page may hold.
pub const MAX_PER_PAGE: u32 = 1_000;
pub const DEFAULT_PER_PAGE: u32 = 100;

/// Which events: one organization's, narrowed by the optional filters.
#[derive(Debug, Clone)]
pub struct Query {
    pub organization: OrganizationId,
    /// One account (the caller has checked it is the organization's).
    pub account: Option<AccountId>,
    /// The event's category is one of these (a slug and its descendants).
    pub categories: Option<Vec<String>>,
    pub usage_type: Option<UsageType>,
    /// `occurred_at >= from`.
    pub from: Option<DateTime<Utc>>,
    /// `occurred_at < until`.
    pub until: Option<DateTime<Utc>>,
    /// Voided events too, with the void's id in `voided_by`.
    pub include_voided: bool,
}

/// A place in the order: an event's (occurred_at, event_id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Position {
    pub occurred_at: DateTime<Utc>,
    pub event_id: String,
}

/// Where a page starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seek {
    /// The newest events.
    First,
    /// The events right after (older than) this one: a `next` link.
    After(Position),
    /// The events right before (newer than) this one: a `prev` link.
    Before(Position),
}

/// One raw event as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct EventRecord {
    #[diesel(sql_type = Text)]
    pub event_id: String,
    #[diesel(sql_type = Text)]
    pub account_id: String,
    /// Its own category, else its type's default.
    #[diesel(sql_type = Text)]
    pub category: String,
    #[diesel(sql_type = Text)]
    pub product_id: String,
    #[diesel(sql_type = Text)]
    pub aggr_product_id: String,
    #[diesel(sql_type = Text)]
    pub usage_type: String,
    #[diesel(sql_type = Text)]
    pub description: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub direction: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub resolution: Option<String>,
    #[diesel(sql_type = Text)]
    pub unit: String,
    #[diesel(sql_type = Numeric)]
    pub quantity: Amount,
    #[diesel(sql_type = Numeric)]
    pub unit_price: Amount,
    /// quantity × unit_price, exact.
    #[diesel(sql_type = Numeric)]
    pub amount: Amount,
    #[diesel(sql_type = Text)]
    pub currency: String,
    #[diesel(sql_type = Text)]
    pub wallet_name: String,
    #[diesel(sql_type = Timestamptz)]
    pub occurred_at: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub ingested_at: DateTime<Utc>,
    /// The void's event id, when the event is voided (shown only with `include_voided`).
    #[diesel(sql_type = Nullable<Text>)]
    pub voided_by: Option<String>,
}

impl EventRecord {
    pub fn position(&self) -> Position {
        Position {
            occurred_at: self.occurred_at,
            event_id: self.event_id.clone(),
        }
    }
}

/// $1 organization, $2 account, $3 categories, $4 type, $5..$6 the time range (half-open),
/// $7 include voided, $8/$9 the position (null: from the start), $10 the limit (null: all).
/// `{cmp}` and `{dir}`: `<`/`DESC` reads older events (the list's own order), `>`/`ASC` newer
/// ones (a `prev` page, reversed afterwards).
///
/// Written, and run with the settings of [`SETTINGS`], for one plan: the organization's
/// primary-key index `(organization_id, occurred_at, seq)` read in order, partition after
/// partition, an incremental sort for ties on `event_id`, rows coming out as they are read (a
/// page stops at its limit, an export's first rows come at once). Voided events are left out
/// in a way that keeps that order (a join with the voids would not, and the planner would sort
/// the organization's every event first): a page probes the voids' index for each of its few
/// rows ([`PAGE_VOIDS`]); an export, which reads every row, hashes the organization's voids
/// once ([`EXPORT_VOIDS`]). The void's id is looked up per row only when voided events are
/// shown. The position also bounds `occurred_at` alone, which the index can seek to.
const SELECT: &str = "\
SELECT e.event_id, e.account_id,
       coalesce(e.category, usage_default_category(e.usage_type, e.direction)) AS category,
       e.product_id, e.aggr_product_id, e.usage_type, e.description, e.direction,
       e.resolution, e.unit,
       trim_scale(e.quantity) AS quantity, trim_scale(e.unit_price) AS unit_price,
       trim_scale(e.quantity * e.unit_price) AS amount,
       e.currency, e.wallet_name, e.occurred_at, e.ingested_at,
       CASE WHEN $7 THEN (SELECT v.event_id FROM usage_voids v
                          WHERE v.organization_id = e.organization_id
                            AND v.voided_event_id = e.event_id) END AS voided_by
FROM usage_events e
WHERE e.organization_id = $1
  AND ($2::text IS NULL OR e.account_id = $2)
  AND ($3::text[] IS NULL
       OR coalesce(e.category, usage_default_category(e.usage_type, e.direction)) = ANY($3))
  AND ($4::text IS NULL OR e.usage_type = $4)
  AND ($5::timestamptz IS NULL OR e.occurred_at >= $5)
  AND ($6::timestamptz IS NULL OR e.occurred_at < $6)
  AND ($7 OR {not_voided})
  AND ($8::timestamptz IS NULL OR e.occurred_at {cmp}= $8)
  AND ($8::timestamptz IS NULL
       OR (e.occurred_at, e.event_id COLLATE \"C\") {cmp} ($8, $9::text COLLATE \"C\"))
ORDER BY e.occurred_at {dir}, e.event_id COLLATE \"C\" {dir}
LIMIT $10";

/// Run before [`SELECT`], in its transaction (see there): no full sort (the planner would
/// otherwise sort an organization's every event when it misjudges the filters); no JIT (the
/// cost a disabled sort is charged with would make Postgres compile a query that takes less
/// than a millisecond); and room to hash the organization's voids (about a million ids: with
/// more, an export's `NOT IN` is no longer hashed and slows down: see docs/PERFORMANCE.md).
const SETTINGS: &str = "SELECT set_config('enable_sort', 'off', true), \
                        set_config('jit', 'off', true), set_config('work_mem', '64MB', true)";

/// A page's void filter: an index probe per row read.
const PAGE_VOIDS: &str = "NOT EXISTS (SELECT 1 FROM usage_voids v \
                          WHERE v.organization_id = e.organization_id \
                            AND v.voided_event_id = e.event_id)";

/// An export's void filter: the organization's voids hashed once.
const EXPORT_VOIDS: &str =
    "e.event_id NOT IN (SELECT v.voided_event_id FROM usage_voids v WHERE v.organization_id = $1)";

fn select(newer: bool, voids: &str) -> String {
    let (cmp, dir) = if newer { (">", "ASC") } else { ("<", "DESC") };
    SELECT
        .replace("{cmp}", cmp)
        .replace("{dir}", dir)
        .replace("{not_voided}", voids)
}

type Statement =
    diesel::query_builder::BoxedSqlQuery<'static, diesel::pg::Pg, diesel::query_builder::SqlQuery>;

/// The statement for `query` from `seek`, with every bind: one place for pages and exports
/// (`limit` `None`).
fn statement(query: &Query, seek: &Seek, limit: Option<i64>) -> Statement {
    let (newer, position) = match seek {
        Seek::First => (false, None),
        Seek::After(p) => (false, Some(p.clone())),
        Seek::Before(p) => (true, Some(p.clone())),
    };
    let voids = if limit.is_some() {
        PAGE_VOIDS
    } else {
        EXPORT_VOIDS
    };
    diesel::sql_query(select(newer, voids))
        .into_boxed()
        .bind::<Text, _>(query.organization.clone())
        .bind::<Nullable<Text>, _>(query.account.clone())
        .bind::<Nullable<Array<Text>>, _>(query.categories.clone())
        .bind::<Nullable<Text>, _>(query.usage_type.map(|t| t.as_str()))
        .bind::<Nullable<Timestamptz>, _>(query.from)
        .bind::<Nullable<Timestamptz>, _>(query.until)
        .bind::<Bool, _>(query.include_voided)
        .bind::<Nullable<Timestamptz>, _>(position.as_ref().map(|p| p.occurred_at))
        .bind::<Nullable<Text>, _>(position.map(|p| p.event_id))
        .bind::<Nullable<BigInt>, _>(limit)
}

/// Up to `limit` events from `seek`, in the list's order (newest first).
pub async fn page(
    conn: &mut AsyncPgConnection,
    query: &Query,
    seek: &Seek,
    limit: u32,
) -> diesel::QueryResult<Vec<EventRecord>> {
    let statement = statement(query, seek, Some(i64::from(limit)));
    let mut rows: Vec<EventRecord> = conn
        .transaction(async |conn| {
            diesel::sql_query(SETTINGS).execute(conn).await?;
            statement.load(conn).await
        })
        .await?;
    if matches!(seek, Seek::Before(_)) {
        rows.reverse();
    }
    Ok(rows)
}

/// Whether `account` is one of `organization`'s accounts.
pub async fn owns(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    account: &AccountId,
) -> diesel::QueryResult<bool> {
    use crate::db::schema::accounts;
    use diesel::{ExpressionMethods, QueryDsl};
    diesel::select(diesel::dsl::exists(
        accounts::table
            .filter(accounts::id.eq(account))
            .filter(accounts::organization_id.eq(organization)),
    ))
    .get_result(conn)
    .await
}

/// Opens a cursor over every event of `query`, in the list's order. Call inside a transaction;
/// then [`crate::db::cursor::fetch`] until a batch is short.
pub async fn declare(conn: &mut AsyncPgConnection, query: &Query) -> diesel::QueryResult<()> {
    diesel::sql_query(SETTINGS).execute(conn).await?;
    crate::db::cursor::declare(conn, statement(query, &Seek::First, None)).await
}
