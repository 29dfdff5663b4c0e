//! Reads of the rollup table, always inside one organization: a filtered, ordered page with its
//! exact total, and a single record by id.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use super::amount::Amount;
use super::filter::Filter;
use super::page::{Order, SortField};
use crate::db::schema::rollup_dirty;
use crate::db::schema::usage_monthly::{self, dsl as um};

/// One monthly aggregate, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Queryable, Selectable)]
#[diesel(table_name = usage_monthly, check_for_backend(Pg))]
pub struct MonthlyRow {
    pub id: Uuid,
    pub account_id: String,
    pub product_id: String,
    pub aggr_product_id: String,
    pub month: NaiveDate,
    pub usage_type: String,
    pub description: String,
    pub currency: String,
    pub direction: Option<String>,
    pub resolution: Option<String>,
    pub unit: String,
    pub price: Amount,
    pub wallet_name: String,
    pub number_of_units: Amount,
    pub total_amount: Amount,
}

/// What the caller asked for: which rows, in which order, which page.
#[derive(Debug, Clone)]
pub struct ListQuery {
    pub filter: Option<Filter>,
    pub order: Order,
    pub page: u32,
    pub per_page: u32,
}

/// A page of rows, the exact number of rows matching the query, and how fresh they are.
#[derive(Debug, Clone)]
pub struct Page {
    pub total: i64,
    pub rows: Vec<MonthlyRow>,
    /// Events ingested before this instant are all included: the oldest pending dirty mark of
    /// the organization, or, with none pending, the time of the read.
    pub as_of: DateTime<Utc>,
}

type Boxed<'a> = usage_monthly::BoxedQuery<'a, Pg>;

fn scoped<'a>(organization_id: &'a str, filter: Option<&Filter>) -> Boxed<'a> {
    let mut query = um::usage_monthly
        .filter(um::organization_id.eq(organization_id))
        .into_boxed();
    if let Some(filter) = filter {
        query = query.filter(filter.to_sql());
    }
    query
}

macro_rules! order_by {
    ($query:expr, $column:expr, $descending:expr) => {
        if $descending {
            $query.then_order_by($column.desc())
        } else {
            $query.then_order_by($column.asc())
        }
    };
}

fn ordered<'a>(mut query: Boxed<'a>, order: &Order) -> Boxed<'a> {
    for key in order.keys() {
        let d = key.descending;
        query = match key.field {
            SortField::Id => order_by!(query, um::id, d),
            SortField::AccountId => order_by!(query, um::account_id, d),
            SortField::ProductId => order_by!(query, um::product_id, d),
            SortField::AggrProductId => order_by!(query, um::aggr_product_id, d),
            SortField::Month => order_by!(query, um::month, d),
            SortField::Type => order_by!(query, um::usage_type, d),
            SortField::Description => order_by!(query, um::description, d),
            SortField::Currency => order_by!(query, um::currency, d),
            SortField::Direction => order_by!(query, um::direction, d),
            SortField::Resolution => order_by!(query, um::resolution, d),
            SortField::Unit => order_by!(query, um::unit, d),
            SortField::Price => order_by!(query, um::price, d),
            SortField::WalletName => order_by!(query, um::wallet_name, d),
            SortField::NumberOfUnits => order_by!(query, um::number_of_units, d),
            SortField::TotalAmount => order_by!(query, um::total_amount, d),
        };
    }
    query
}

/// The page of `query` in `organization_id`, and the total, read in one snapshot so that they
/// agree even while the rollup writes.
pub async fn list(
    conn: &mut AsyncPgConnection,
    organization_id: &str,
    query: &ListQuery,
) -> QueryResult<Page> {
    let offset = i64::from(query.page - 1) * i64::from(query.per_page);
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(async |conn| {
            let total: i64 = scoped(organization_id, query.filter.as_ref())
                .count()
                .get_result(conn)
                .await?;
            let rows = if offset >= total {
                Vec::new()
            } else {
                ordered(scoped(organization_id, query.filter.as_ref()), &query.order)
                    .select(MonthlyRow::as_select())
                    .limit(i64::from(query.per_page))
                    .offset(offset)
                    .load(conn)
                    .await?
            };
            let as_of = rollup_dirty::table
                .filter(rollup_dirty::organization_id.eq(organization_id))
                .select(diesel::dsl::sql::<diesel::sql_types::Timestamptz>(
                    "coalesce(min(marked_at), now())",
                ))
                .get_result(conn)
                .await?;
            Ok(Page { total, rows, as_of })
        })
        .await
}

/// One record of `organization_id`; `None` when it does not exist or belongs to another.
pub async fn find(
    conn: &mut AsyncPgConnection,
    organization_id: &str,
    id: Uuid,
) -> QueryResult<Option<MonthlyRow>> {
    um::usage_monthly
        .filter(um::organization_id.eq(organization_id))
        .filter(um::id.eq(id))
        .select(MonthlyRow::as_select())
        .first(conn)
        .await
        .optional()
}
