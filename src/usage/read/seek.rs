//! Keyset positions: a page reached through a link starts right after (or ends right before) a
//! known row, so it is read by seeking the order's index instead of counting past `OFFSET` rows.
//!
//! A position is the row's values for every key of the order (the order always ends in `id`, so
//! the position is unique). "After" follows the order, nulls where Postgres puts them (last when
//! ascending, first when descending), so the seek returns exactly the rows `OFFSET` would.

use chrono::NaiveDate;
use diesel::expression::ValidGrouping;
use diesel::expression::{is_aggregate, AppearsOnTable, Expression, SelectableExpression};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::Bool;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::order::{Order, SortField, SortKey};
use super::row::MonthlyRow;
use crate::db::schema::usage_monthly::{self, dsl as um};

/// One key value of a row, as a position token carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyValue {
    Id(Uuid),
    Date(NaiveDate),
    Text(String),
    /// A nullable text column: `direction` or `resolution`.
    Maybe(Option<String>),
    Number(Decimal),
}

/// Which side of the position the wanted rows lie on, in the order's own direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Side {
    #[serde(rename = "a")]
    After,
    #[serde(rename = "b")]
    Before,
}

type Predicate = Box<dyn BoxableExpression<usage_monthly::table, Pg, SqlType = Bool>>;

/// The position of `row` under `order`, or `None` when a key cannot be carried exactly (an
/// aggregate beyond `rust_decimal`'s 28 digits): the link then falls back to its page number.
pub fn position(row: &MonthlyRow, order: &Order) -> Option<Vec<KeyValue>> {
    let number = |amount: &crate::usage::amount::Amount| {
        amount
            .as_str()
            .parse::<Decimal>()
            .ok()
            .filter(|d| d.normalize().to_string() == amount.as_str())
            .map(KeyValue::Number)
    };
    order
        .keys()
        .iter()
        .map(|key| {
            Some(match key.field {
                SortField::Id => KeyValue::Id(row.id),
                SortField::AccountId => KeyValue::Text(row.account_id.clone()),
                SortField::ProductId => KeyValue::Text(row.product_id.clone()),
                SortField::AggrProductId => KeyValue::Text(row.aggr_product_id.clone()),
                SortField::Month => KeyValue::Date(row.month),
                SortField::Type => KeyValue::Text(row.usage_type.as_str().to_owned()),
                SortField::Description => KeyValue::Text(row.description.clone()),
                SortField::Currency => KeyValue::Text(row.currency.clone()),
                SortField::Direction => {
                    KeyValue::Maybe(row.direction.map(|d| d.as_str().to_owned()))
                }
                SortField::Resolution => {
                    KeyValue::Maybe(row.resolution.map(|r| r.as_str().to_owned()))
                }
                SortField::Unit => KeyValue::Text(row.unit.as_str().to_owned()),
                SortField::WalletName => KeyValue::Text(row.wallet_name.clone()),
                SortField::Price => number(&row.price)?,
                SortField::NumberOfUnits => number(&row.number_of_units)?,
                SortField::TotalAmount => number(&row.total_amount)?,
            })
        })
        .collect()
}

/// Whether `values` has the shape of a position under `order` (one value of the right kind per
/// key). Tokens are signed, so this only guards against a format change between versions.
pub fn fits(values: &[KeyValue], order: &Order) -> bool {
    values.len() == order.keys().len()
        && order.keys().iter().zip(values).all(|(key, value)| {
            matches!(
                (key.field, value),
                (SortField::Id, KeyValue::Id(_))
                    | (SortField::Month, KeyValue::Date(_))
                    | (
                        SortField::Direction | SortField::Resolution,
                        KeyValue::Maybe(_)
                    )
                    | (
                        SortField::Price | SortField::NumberOfUnits | SortField::TotalAmount,
                        KeyValue::Number(_)
                    )
                    | (
                        SortField::AccountId
                            | SortField::ProductId
                            | SortField::AggrProductId
                            | SortField::Type
                            | SortField::Description
                            | SortField::Currency
                            | SortField::Unit
                            | SortField::WalletName,
                        KeyValue::Text(_)
                    )
            )
        })
}

/// A column of the order and a bound value, as SQL fragments.
type Fragment = Box<dyn QueryFragment<Pg> + Send>;

fn column_and_value(field: SortField, value: &KeyValue) -> Option<(Fragment, Fragment)> {
    use diesel::sql_types::{Date, Numeric, Text};
    let text = |column: Fragment, value: &KeyValue| match value {
        KeyValue::Text(text) => Some((
            column,
            Box::new(text.clone().into_sql::<Text>()) as Fragment,
        )),
        _ => None,
    };
    match (field, value) {
        (SortField::Id, KeyValue::Id(id)) => Some((
            Box::new(um::id),
            Box::new((*id).into_sql::<diesel::sql_types::Uuid>()),
        )),
        (SortField::Month, KeyValue::Date(date)) => {
            Some((Box::new(um::month), Box::new((*date).into_sql::<Date>())))
        }
        (SortField::Price, KeyValue::Number(n)) => {
            Some((Box::new(um::price), Box::new((*n).into_sql::<Numeric>())))
        }
        (SortField::NumberOfUnits, KeyValue::Number(n)) => Some((
            Box::new(um::number_of_units),
            Box::new((*n).into_sql::<Numeric>()),
        )),
        (SortField::TotalAmount, KeyValue::Number(n)) => Some((
            Box::new(um::total_amount),
            Box::new((*n).into_sql::<Numeric>()),
        )),
        (SortField::AccountId, v) => text(Box::new(um::account_id), v),
        (SortField::ProductId, v) => text(Box::new(um::product_id), v),
        (SortField::AggrProductId, v) => text(Box::new(um::aggr_product_id), v),
        (SortField::Type, v) => text(Box::new(um::usage_type), v),
        (SortField::Description, v) => text(Box::new(um::description), v),
        (SortField::Currency, v) => text(Box::new(um::currency), v),
        (SortField::Unit, v) => text(Box::new(um::unit), v),
        (SortField::WalletName, v) => text(Box::new(um::wallet_name), v),
        _ => None,
    }
}

/// `(c1, c2, …) op (v1, v2, …)`: a row comparison, which Postgres answers with one index range
/// when the index has the same columns in the same direction. Rendered with bind parameters
/// only, and cacheable as a prepared statement.
struct RowCompare {
    op: &'static str,
    columns: Vec<Fragment>,
    values: Vec<Fragment>,
}

impl Expression for RowCompare {
    type SqlType = Bool;
}

impl AppearsOnTable<usage_monthly::table> for RowCompare {}
impl SelectableExpression<usage_monthly::table> for RowCompare {}

impl ValidGrouping<()> for RowCompare {
    type IsAggregate = is_aggregate::Never;
}

impl QueryId for RowCompare {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Pg> for RowCompare {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        for (open, list) in [("((", &self.columns), (" (", &self.values)] {
            out.push_sql(open);
            for (i, part) in list.iter().enumerate() {
                if i > 0 {
                    out.push_sql(", ");
                }
                part.walk_ast(out.reborrow())?;
            }
            out.push_sql(")");
            if open == "((" {
                out.push_sql(" ");
                out.push_sql(self.op);
            }
        }
        out.push_sql(")");
        Ok(())
    }
}

/// Rows strictly after `value` under one key (`descending` as the key is read), with nulls where
/// Postgres sorts them: last ascending, first descending. `None` when the value does not fit
/// the key.
fn beyond(field: SortField, descending: bool, value: &KeyValue) -> Option<Predicate> {
    macro_rules! nullable {
        ($column:expr) => {
            match (value, descending) {
                (KeyValue::Maybe(Some(v)), false) => Some(Box::new(
                    $column
                        .gt(v.clone())
                        .or($column.is_null())
                        .assume_not_null(),
                ) as Predicate),
                (KeyValue::Maybe(Some(v)), true) => {
                    Some(Box::new($column.lt(v.clone()).assume_not_null()) as Predicate)
                }
                (KeyValue::Maybe(None), true) => Some(Box::new($column.is_not_null()) as Predicate),
                (KeyValue::Maybe(None), false) => {
                    Some(Box::new($column.is_null().and($column.is_not_null())) as Predicate)
                }
                _ => None,
            }
        };
    }
    match field {
        SortField::Direction => return nullable!(um::direction),
        SortField::Resolution => return nullable!(um::resolution),
        _ => {}
    }
    let (column, bound) = column_and_value(field, value)?;
    Some(Box::new(RowCompare {
        op: if descending { "<" } else { ">" },
        columns: vec![column],
        values: vec![bound],
    }))
}

/// Rows whose key equals `value` (null equals null); `None` when the value does not fit.
fn same(field: SortField, value: &KeyValue) -> Option<Predicate> {
    match (field, value) {
        (SortField::Direction, KeyValue::Maybe(v)) => {
            Some(Box::new(um::direction.is_not_distinct_from(v.clone())))
        }
        (SortField::Resolution, KeyValue::Maybe(v)) => {
            Some(Box::new(um::resolution.is_not_distinct_from(v.clone())))
        }
        _ => {
            let (column, bound) = column_and_value(field, value)?;
            Some(Box::new(RowCompare {
                op: "=",
                columns: vec![column],
                values: vec![bound],
            }))
        }
    }
}

/// The rows on `side` of `position` under `order`. With every key in one direction and none
/// nullable, one row comparison (an index range); otherwise the expanded form
/// `k1 > v1 OR (k1 = v1 AND k2 > v2) OR …`. `None` when the position does not fit the order
/// (the caller then reads the page by its number; the HTTP layer refuses such a cursor first).
pub fn predicate(order: &Order, side: Side, position: &[KeyValue]) -> Option<Predicate> {
    let flip = side == Side::Before;
    let keys: Vec<SortKey> = order.keys().to_vec();
    let uniform = keys.iter().all(|k| k.descending == keys[0].descending)
        && keys
            .iter()
            .all(|k| !matches!(k.field, SortField::Direction | SortField::Resolution));
    if keys.is_empty() || keys.len() != position.len() {
        return None;
    }
    if uniform {
        let (columns, values) = keys
            .iter()
            .zip(position)
            .map(|(key, value)| column_and_value(key.field, value))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .unzip();
        return Some(Box::new(RowCompare {
            op: if keys[0].descending != flip { "<" } else { ">" },
            columns,
            values,
        }));
    }
    let mut any: Option<Predicate> = None;
    for (i, key) in keys.iter().enumerate() {
        let mut term = beyond(key.field, key.descending != flip, &position[i])?;
        for (prior, value) in keys[..i].iter().zip(position) {
            term = Box::new(same(prior.field, value)?.and(term));
        }
        any = Some(match any {
            None => term,
            Some(so_far) => Box::new(so_far.or(term)),
        });
    }
    any
}
