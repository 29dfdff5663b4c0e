//! A row of `usage_monthly` as the read API serves it.

use chrono::NaiveDate;
use diesel::pg::Pg;
use diesel::prelude::*;
use uuid::Uuid;

use crate::db::schema::usage_monthly;
use crate::usage::amount::Amount;
use crate::usage::model::{AccountId, Direction, Resolution, Unit, UsageType};

/// One monthly aggregate, as stored (by position from diesel's selects, by name from an
/// export's cursor).
#[derive(Debug, Clone, PartialEq, Eq, Queryable, QueryableByName, Selectable)]
#[diesel(table_name = usage_monthly, check_for_backend(Pg))]
pub struct MonthlyRow {
    pub id: Uuid,
    pub account_id: AccountId,
    pub product_id: String,
    pub aggr_product_id: String,
    pub month: NaiveDate,
    pub usage_type: UsageType,
    pub description: String,
    pub currency: String,
    pub direction: Option<Direction>,
    pub resolution: Option<Resolution>,
    pub unit: Unit,
    pub price: Amount,
    pub wallet_name: String,
    pub number_of_units: Amount,
    pub total_amount: Amount,
}
