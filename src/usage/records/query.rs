//! The sums behind usage records: per category (its descendants included), period, currency
//! and unit, read from the daily aggregates of one account (`usage_daily`) or of a whole
//! organization (`usage_daily_totals`, and `usage_monthly_totals` for the whole months of a
//! range): never from raw events, so a year of a reseller's thousands of accounts is a few
//! rows per month.

use chrono::{Datelike, NaiveDate};
use diesel::sql_types::{BigInt, Date, Nullable, Numeric, Text};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::usage::amount::Amount;
use crate::usage::model::{AccountId, OrganizationId};

/// How a range is cut into records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granularity {
    /// One record for the whole range.
    Whole,
    Daily,
    Monthly,
    Yearly,
}

/// The first day of the period of `granularity` holding `day`.
pub fn period_start(granularity: Granularity, day: NaiveDate, range_start: NaiveDate) -> NaiveDate {
    match granularity {
        Granularity::Whole => range_start,
        Granularity::Daily => day,
        Granularity::Monthly => day.with_day(1).unwrap_or(day),
        Granularity::Yearly => day.with_ordinal(1).unwrap_or(day),
    }
}

/// The periods of `granularity` overlapping `start..=end`, each clipped to the range, in order.
pub fn periods(
    granularity: Granularity,
    start: NaiveDate,
    end: NaiveDate,
) -> Vec<(NaiveDate, NaiveDate)> {
    let mut out = Vec::new();
    let mut from = start;
    while from <= end {
        let next =
            match granularity {
                Granularity::Whole => None,
                Granularity::Daily => from.succ_opt(),
                Granularity::Monthly => period_start(granularity, from, start)
                    .checked_add_months(chrono::Months::new(1)),
                Granularity::Yearly => period_start(granularity, from, start)
                    .checked_add_months(chrono::Months::new(12)),
            };
        let last = next.and_then(|n| n.pred_opt()).map_or(end, |l| l.min(end));
        out.push((from, last));
        match next {
            Some(n) => from = n,
            None => break,
        }
    }
    out
}

/// What a record's sums are read for.
#[derive(Debug, Clone)]
pub struct Scope {
    pub organization: OrganizationId,
    /// One account of the organization, or all of them.
    pub account: Option<AccountId>,
}

/// The sums of one (category, period, currency, unit) with usage.
#[derive(Debug, Clone, PartialEq, Eq, QueryableByName)]
pub struct Sums {
    /// A catalogue slug; `totalprice` for the price of everything.
    #[diesel(sql_type = Text)]
    pub category: String,
    /// The first day of the period (clipped to the range).
    #[diesel(sql_type = Date)]
    pub period: NaiveDate,
    #[diesel(sql_type = Text)]
    pub currency: String,
    /// The events' unit (`MINUTES`…); `None` for `totalprice`.
    #[diesel(sql_type = Nullable<Text>)]
    pub unit: Option<String>,
    #[diesel(sql_type = BigInt)]
    pub count: i64,
    #[diesel(sql_type = Numeric)]
    pub usage: Amount,
    #[diesel(sql_type = Numeric)]
    pub price: Amount,
}

/// $1 organization, $2 account (null: every account), $3..=$4 the range, $5 the granularity
/// ('whole', 'day', 'month', 'year'), $6 one category (null: every category with usage; the
/// total price is then added, per currency), $7..$8 (half-open) the whole months read from the
/// organization's monthly totals instead of its days (empty for one account or daily records).
const SUMS: &str = "\
WITH days AS (
    SELECT day, category, currency, unit, event_count, quantity, amount
    FROM {table}
    WHERE organization_id = $1 AND {account}
      AND day >= $3 AND day < $7 AND event_count > 0
    UNION ALL
    SELECT month, category, currency, unit, event_count, quantity, amount
    FROM usage_monthly_totals
    WHERE organization_id = $1 AND $2::text IS NULL
      AND month >= $7 AND month < $8 AND event_count > 0
    UNION ALL
    SELECT day, category, currency, unit, event_count, quantity, amount
    FROM {table}
    WHERE organization_id = $1 AND {account}
      AND day >= $8 AND day <= $4 AND event_count > 0
),
periods AS (
    SELECT CASE $5 WHEN 'day' THEN day
                   WHEN 'month' THEN greatest(date_trunc('month', day)::date, $3)
                   WHEN 'year' THEN greatest(date_trunc('year', day)::date, $3)
                   ELSE $3 END AS period,
           category, currency, unit, event_count, quantity, amount
    FROM days
)
SELECT t.ancestor AS category, p.period, p.currency, p.unit,
       sum(p.event_count)::bigint AS count,
       trim_scale(sum(p.quantity)) AS usage, trim_scale(sum(p.amount)) AS price
FROM periods p
JOIN usage_category_tree t ON t.descendant = p.category
WHERE $6::text IS NULL OR t.ancestor = $6
GROUP BY t.ancestor, p.period, p.currency, p.unit
UNION ALL
SELECT 'totalprice', p.period, p.currency, NULL, sum(p.event_count)::bigint,
       trim_scale(sum(p.amount)), trim_scale(sum(p.amount))
FROM periods p
WHERE $6::text IS NULL OR $6 = 'totalprice'
GROUP BY p.period, p.currency";

fn sums_sql(per_account: bool) -> String {
    let (table, account) = if per_account {
        ("usage_daily", "account_id = $2")
    } else {
        ("usage_daily_totals", "$2::text IS NULL")
    };
    SUMS.replace("{table}", table).replace("{account}", account)
}

/// The whole calendar months of `start..=end` (half-open: first day of the first, first day
/// after the last), or an empty span at `start` when there are none.
pub fn whole_months(start: NaiveDate, end: NaiveDate) -> (NaiveDate, NaiveDate) {
    let first_of = |day: NaiveDate| day.with_day(1).unwrap_or(day);
    let from = if start.day() == 1 {
        Some(start)
    } else {
        first_of(start).checked_add_months(chrono::Months::new(1))
    };
    let until = end.succ_opt().map(first_of);
    match (from, until) {
        (Some(from), Some(until)) if from < until => (from, until),
        _ => (start, start),
    }
}

/// Every (category, period, currency, unit) of `scope` with usage in `start..=end`, cut by
/// `granularity`; one `category` (a catalogue slug, `totalprice` included) or all. Unordered.
/// Organization-wide records coarser than a day read whole months from the monthly totals.
pub async fn sums(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
    start: NaiveDate,
    end: NaiveDate,
    granularity: Granularity,
    category: Option<&str>,
) -> diesel::QueryResult<Vec<Sums>> {
    let (months_from, months_until) =
        if scope.account.is_some() || granularity == Granularity::Daily {
            (start, start)
        } else {
            whole_months(start, end)
        };
    let granularity = match granularity {
        Granularity::Whole => "whole",
        Granularity::Daily => "day",
        Granularity::Monthly => "month",
        Granularity::Yearly => "year",
    };
    diesel::sql_query(sums_sql(scope.account.is_some()))
        .bind::<Text, _>(&scope.organization)
        .bind::<Nullable<Text>, _>(scope.account.as_ref())
        .bind::<Date, _>(start)
        .bind::<Date, _>(end)
        .bind::<Text, _>(granularity)
        .bind::<Nullable<Text>, _>(category)
        .bind::<Date, _>(months_from)
        .bind::<Date, _>(months_until)
        .load(conn)
        .await
}

/// The first day with usage of `scope` (events of any category), if any.
pub async fn first_day(
    conn: &mut AsyncPgConnection,
    scope: &Scope,
) -> diesel::QueryResult<Option<NaiveDate>> {
    #[derive(QueryableByName)]
    struct First {
        #[diesel(sql_type = Nullable<Date>)]
        day: Option<NaiveDate>,
    }
    let sql = if scope.account.is_some() {
        "SELECT min(day) AS day FROM usage_daily \
         WHERE organization_id = $1 AND account_id = $2 AND event_count > 0"
    } else {
        "SELECT min(day) AS day FROM usage_daily_totals \
         WHERE organization_id = $1 AND $2::text IS NULL AND event_count > 0"
    };
    let first: First = diesel::sql_query(sql)
        .bind::<Text, _>(&scope.organization)
        .bind::<Nullable<Text>, _>(scope.account.as_ref())
        .get_result(conn)
        .await?;
    Ok(first.day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(text: &str) -> NaiveDate {
        text.parse().unwrap()
    }

    #[test]
    fn periods_overlap_the_range_and_are_clipped_to_it() {
        assert_eq!(
            periods(Granularity::Monthly, d("2024-01-15"), d("2024-03-02")),
            [
                (d("2024-01-15"), d("2024-01-31")),
                (d("2024-02-01"), d("2024-02-29")),
                (d("2024-03-01"), d("2024-03-02")),
            ]
        );
        assert_eq!(
            periods(Granularity::Yearly, d("2023-12-31"), d("2024-01-01")),
            [
                (d("2023-12-31"), d("2023-12-31")),
                (d("2024-01-01"), d("2024-01-01"))
            ]
        );
        assert_eq!(
            periods(Granularity::Daily, d("2024-02-28"), d("2024-03-01")).len(),
            3
        );
        assert_eq!(
            periods(Granularity::Whole, d("2020-01-01"), d("2024-03-01")),
            [(d("2020-01-01"), d("2024-03-01"))]
        );
        assert!(periods(Granularity::Daily, d("2024-03-02"), d("2024-03-01")).is_empty());
    }

    #[test]
    fn whole_months_are_the_calendar_months_inside_the_range() {
        assert_eq!(
            whole_months(d("2024-01-01"), d("2024-12-31")),
            (d("2024-01-01"), d("2025-01-01"))
        );
        assert_eq!(
            whole_months(d("2024-01-15"), d("2024-03-02")),
            (d("2024-02-01"), d("2024-03-01"))
        );
        assert_eq!(
            whole_months(d("2024-02-01"), d("2024-02-29")),
            (d("2024-02-01"), d("2024-03-01"))
        );
        // None inside: an empty span, so every day is read from the days.
        assert_eq!(
            whole_months(d("2024-01-15"), d("2024-02-28")),
            (d("2024-01-15"), d("2024-01-15"))
        );
        assert_eq!(
            whole_months(d("2024-01-02"), d("2024-01-31")),
            (d("2024-01-02"), d("2024-01-02"))
        );
        assert_eq!(
            whole_months(d("2024-03-01"), d("2024-03-01")),
            (d("2024-03-01"), d("2024-03-01"))
        );
    }
}
