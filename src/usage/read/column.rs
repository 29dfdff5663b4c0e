//! The one table of the list's sortable columns: for each, its name in `order_by`, the column of
//! `usage_monthly`, the kind of value a position carries for it, and how to take that value
//! from a row. Ordering (`read::ordered`), positions (`seek::position`) and seeking
//! (`seek::predicate`) all read this table; a new sortable column is one line here.

use chrono::NaiveDate;
use diesel::expression::{AppearsOnTable, Expression};
use diesel::pg::Pg;
use diesel::prelude::*;
use diesel::query_builder::{AstPass, QueryFragment};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::row::MonthlyRow;
use crate::db::schema::usage_monthly::{self, dsl as um};
use crate::usage::amount::Amount;

/// A piece of SQL (a column or a bound value), ready to be walked into a query.
pub type Fragment = Box<dyn QueryFragment<Pg> + Send>;

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

/// The kinds of [`KeyValue`]: what a column's positions hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Id,
    Date,
    Text,
    Maybe,
    Number,
}

impl KeyValue {
    pub fn kind(&self) -> Kind {
        match self {
            KeyValue::Id(_) => Kind::Id,
            KeyValue::Date(_) => Kind::Date,
            KeyValue::Text(_) => Kind::Text,
            KeyValue::Maybe(_) => Kind::Maybe,
            KeyValue::Number(_) => Kind::Number,
        }
    }

    /// The value as a bind parameter of its SQL type.
    pub fn bind(&self) -> Fragment {
        use diesel::sql_types::{Date, Nullable, Numeric, Text};
        match self {
            KeyValue::Id(id) => Box::new((*id).into_sql::<diesel::sql_types::Uuid>()),
            KeyValue::Date(date) => Box::new((*date).into_sql::<Date>()),
            KeyValue::Text(text) => Box::new(text.clone().into_sql::<Text>()),
            KeyValue::Maybe(text) => Box::new(text.clone().into_sql::<Nullable<Text>>()),
            KeyValue::Number(n) => Box::new((*n).into_sql::<Numeric>()),
        }
    }
}

fn text(value: &str) -> Option<KeyValue> {
    Some(KeyValue::Text(value.to_owned()))
}

fn maybe(value: Option<&str>) -> Option<KeyValue> {
    Some(KeyValue::Maybe(value.map(str::to_owned)))
}

/// An amount as a position carries it, or `None` when it cannot be carried exactly (beyond
/// `rust_decimal`'s 28 digits): the link then falls back to its page number.
fn number(amount: &Amount) -> Option<KeyValue> {
    amount
        .as_str()
        .parse::<Decimal>()
        .ok()
        .filter(|d| d.normalize().to_string() == amount.as_str())
        .map(KeyValue::Number)
}

/// Declares [`SortField`] and its table from one list of rows:
/// `Variant "name" column Kind |row| value,`.
macro_rules! sort_fields {
    ($($field:ident $name:literal $column:ident $kind:ident |$row:ident| $value:expr,)+) => {
        /// A field the list can be ordered by.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum SortField {
            $($field,)+
        }

        impl SortField {
            /// Every field, in the order `names` lists them.
            pub const ALL: &'static [SortField] = &[$(SortField::$field,)+];

            /// The field's name in `order_by` (and in the API's JSON).
            pub fn name(self) -> &'static str {
                match self {
                    $(SortField::$field => $name,)+
                }
            }

            /// The column, as SQL.
            pub fn column(self) -> Fragment {
                match self {
                    $(SortField::$field => Box::new(um::$column),)+
                }
            }

            /// The kind of value a position holds for this field.
            pub fn kind(self) -> Kind {
                match self {
                    $(SortField::$field => Kind::$kind,)+
                }
            }

            /// `row`'s value of this field, or `None` when it cannot be carried exactly.
            pub fn value(self, row: &MonthlyRow) -> Option<KeyValue> {
                match self {
                    $(SortField::$field => { let $row = row; $value })+
                }
            }
        }
    };
}

sort_fields! {
    Id              "id"              id               Id      |r| Some(KeyValue::Id(r.id)),
    AccountId       "account_id"      account_id       Text    |r| text(r.account_id.as_str()),
    ProductId       "product_id"      product_id       Text    |r| text(&r.product_id),
    AggrProductId   "aggr_product_id" aggr_product_id  Text    |r| text(&r.aggr_product_id),
    Month           "month"           month            Date    |r| Some(KeyValue::Date(r.month)),
    Type            "type"            usage_type       Text    |r| text(r.usage_type.as_str()),
    Description     "description"     description      Text    |r| text(&r.description),
    Currency        "currency"        currency         Text    |r| text(&r.currency),
    Direction       "direction"       direction        Maybe   |r| maybe(r.direction.map(|d| d.as_str())),
    Resolution      "resolution"      resolution       Maybe   |r| maybe(r.resolution.map(|d| d.as_str())),
    Unit            "unit"            unit             Text    |r| text(r.unit.as_str()),
    Price           "price"           price            Number  |r| number(&r.price),
    WalletName      "wallet_name"     wallet_name      Text    |r| text(&r.wallet_name),
    NumberOfUnits   "number_of_units" number_of_units  Number  |r| number(&r.number_of_units),
    TotalAmount     "total_amount"    total_amount     Number  |r| number(&r.total_amount),
}

impl SortField {
    /// `ORDER BY` term: the column, ascending or descending.
    pub fn sorted(self, descending: bool) -> Sorted {
        Sorted {
            column: self.column(),
            descending,
        }
    }

    /// The field called `name` (any letter case).
    pub fn parse(name: &str) -> Option<SortField> {
        Self::ALL
            .iter()
            .copied()
            .find(|field| field.name().eq_ignore_ascii_case(name))
    }

    /// Every name, for an error message.
    pub fn names() -> String {
        Self::ALL
            .iter()
            .map(|field| field.name())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// `column ASC` or `column DESC` (Postgres puts nulls last ascending, first descending).
pub struct Sorted {
    column: Fragment,
    descending: bool,
}

impl Expression for Sorted {
    type SqlType = diesel::expression::expression_types::NotSelectable;
}

impl AppearsOnTable<usage_monthly::table> for Sorted {}

impl QueryFragment<Pg> for Sorted {
    fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, Pg>) -> QueryResult<()> {
        self.column.walk_ast(out.reborrow())?;
        out.push_sql(if self.descending { " DESC" } else { " ASC" });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_found_by_its_name_and_names_its_own_column() {
        assert_eq!(SortField::ALL.len(), 15);
        for field in SortField::ALL {
            assert_eq!(SortField::parse(field.name()), Some(*field));
            assert_eq!(
                SortField::parse(&field.name().to_ascii_uppercase()),
                Some(*field)
            );
            let sql = diesel::debug_query::<Pg, _>(&field.column()).to_string();
            let column = if *field == SortField::Type {
                "usage_type"
            } else {
                field.name()
            };
            assert!(
                sql.starts_with(&format!("\"usage_monthly\".\"{column}\"")),
                "{sql}"
            );
        }
        assert_eq!(SortField::parse("colour"), None);
    }
}
