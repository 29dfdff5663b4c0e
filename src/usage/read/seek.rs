//! Keyset positions: a page reached through a link starts right after (or ends right before) a
//! known row, so it is read by seeking the order's index instead of counting past `OFFSET` rows.
//!
//! A position is the row's values for every key of the order (the order always ends in `id`, so
//! the position is unique). "After" follows the order, nulls where Postgres puts them (last when
//! ascending, first when descending), so the seek returns exactly the rows `OFFSET` would.
//! Which column each key is, and which value a row has for it, is `column`'s table.

use diesel::expression::ValidGrouping;
use diesel::expression::{is_aggregate, AppearsOnTable, Expression, SelectableExpression};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment, QueryId};
use diesel::sql_types::Bool;
use serde::{Deserialize, Serialize};

use super::column::{Fragment, KeyValue, Kind, SortField};
use super::order::{Order, SortKey};
use super::row::MonthlyRow;
use crate::db::schema::usage_monthly;

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
    order
        .keys()
        .iter()
        .map(|key| key.field.value(row))
        .collect()
}

/// Whether `values` has the shape of a position under `order` (one value of the right kind per
/// key). Tokens are signed, so this only guards against a format change between versions.
pub fn fits(values: &[KeyValue], order: &Order) -> bool {
    values.len() == order.keys().len()
        && order
            .keys()
            .iter()
            .zip(values)
            .all(|(key, value)| key.field.kind() == value.kind())
}

/// SQL text and fragments in sequence, as a condition on `usage_monthly`. Rendered with bind
/// parameters only, and cacheable as a prepared statement.
struct Sql(Vec<Part>);

enum Part {
    Text(&'static str),
    Fragment(Fragment),
}

impl Sql {
    fn text(mut self, text: &'static str) -> Self {
        self.0.push(Part::Text(text));
        self
    }

    fn fragment(mut self, fragment: Fragment) -> Self {
        self.0.push(Part::Fragment(fragment));
        self
    }

    /// `(c1, c2, …) op (v1, v2, …)`: a row comparison, which Postgres answers with one index
    /// range when the index has the same columns in the same direction.
    fn compare(op: &'static str, keys: &[(SortField, &KeyValue)]) -> Predicate {
        let mut sql = Sql(Vec::new());
        for (list, open) in [(0, "(("), (1, " (")] {
            sql = sql.text(open);
            for (i, (field, value)) in keys.iter().enumerate() {
                if i > 0 {
                    sql = sql.text(", ");
                }
                sql = sql.fragment(if list == 0 {
                    field.column()
                } else {
                    value.bind()
                });
            }
            sql = sql.text(")");
            if list == 0 {
                sql = sql.text(" ").text(op);
            }
        }
        Box::new(sql.text(")"))
    }
}

impl Expression for Sql {
    type SqlType = Bool;
}

impl AppearsOnTable<usage_monthly::table> for Sql {}
impl SelectableExpression<usage_monthly::table> for Sql {}

impl ValidGrouping<()> for Sql {
    type IsAggregate = is_aggregate::Never;
}

impl QueryId for Sql {
    type QueryId = ();
    const HAS_STATIC_QUERY_ID: bool = false;
}

impl QueryFragment<Pg> for Sql {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        for part in &self.0 {
            match part {
                Part::Text(text) => out.push_sql(text),
                Part::Fragment(fragment) => fragment.walk_ast(out.reborrow())?,
            }
        }
        Ok(())
    }
}

/// Rows strictly after `value` under one key (`descending` as the key is read), with nulls where
/// Postgres sorts them: last ascending, first descending.
fn beyond(field: SortField, descending: bool, value: &KeyValue) -> Predicate {
    let sql = Sql(Vec::new()).text("(");
    let sql = match (value, descending) {
        (KeyValue::Maybe(Some(_)), false) => sql
            .fragment(field.column())
            .text(" > ")
            .fragment(value.bind())
            .text(" OR ")
            .fragment(field.column())
            .text(" IS NULL"),
        (KeyValue::Maybe(None), true) => sql.fragment(field.column()).text(" IS NOT NULL"),
        // Nothing sorts after a null, ascending.
        (KeyValue::Maybe(None), false) => sql.text("FALSE"),
        _ => {
            let op = if descending { " < " } else { " > " };
            sql.fragment(field.column()).text(op).fragment(value.bind())
        }
    };
    Box::new(sql.text(")"))
}

/// Rows whose key equals `value` (null equals null).
fn same(field: SortField, value: &KeyValue) -> Predicate {
    let op = if value.kind() == Kind::Maybe {
        " IS NOT DISTINCT FROM "
    } else {
        " = "
    };
    Box::new(
        Sql(Vec::new())
            .text("(")
            .fragment(field.column())
            .text(op)
            .fragment(value.bind())
            .text(")"),
    )
}

/// The rows on `side` of `position` under `order`. With every key in one direction and none
/// nullable, one row comparison (an index range); otherwise the expanded form
/// `k1 > v1 OR (k1 = v1 AND k2 > v2) OR …`. `None` when the position does not fit the order
/// (the caller then reads the page by its number; the HTTP layer refuses such a cursor first).
pub fn predicate(order: &Order, side: Side, position: &[KeyValue]) -> Option<Predicate> {
    if order.keys().is_empty() || !fits(position, order) {
        return None;
    }
    let flip = side == Side::Before;
    let keys: &[SortKey] = order.keys();
    let uniform = keys.iter().all(|k| k.descending == keys[0].descending)
        && keys.iter().all(|k| k.field.kind() != Kind::Maybe);
    if uniform {
        let op = if keys[0].descending != flip { "<" } else { ">" };
        let pairs: Vec<(SortField, &KeyValue)> =
            keys.iter().map(|key| key.field).zip(position).collect();
        return Some(Sql::compare(op, &pairs));
    }
    let mut any: Option<Predicate> = None;
    for (i, key) in keys.iter().enumerate() {
        let mut term = beyond(key.field, key.descending != flip, &position[i]);
        for (prior, value) in keys[..i].iter().zip(position) {
            term = Box::new(same(prior.field, value).and(term));
        }
        any = Some(match any {
            None => term,
            Some(so_far) => Box::new(so_far.or(term)),
        });
    }
    any
}
