//! Usage records by category and period (DESIGN §2b): the category catalogue and the reads of
//! the daily aggregates (`usage_daily`, `usage_daily_totals`) the rollup keeps beside the
//! monthly ones. `read` is the one call of the route: the scope's ownership, its version and
//! the sums in one snapshot, then every record of the range, zero-filled and in order.

pub mod catalogue;
pub mod query;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{Datelike, NaiveDate};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use self::catalogue::{Catalogue, TOTAL_PRICE};
use self::query::{periods, Granularity, Scope, Sums};
use crate::db::schema::accounts;
use crate::usage::amount::Amount;
use crate::usage::digest;
use crate::usage::model::{AccountId, OrganizationId};
use crate::usage::read::bodies;
use crate::usage::read::cache::VersionKey;
use crate::usage::read::{self as monthly, Version};

/// Most periods one request may cut its range into (ten years of days).
pub const MAX_PERIODS: usize = 3_660;

/// A checked request for records.
#[derive(Debug, Clone)]
pub struct RecordsRequest {
    /// The organization, or one of its accounts (any other id is refused).
    pub sid: String,
    pub granularity: Granularity,
    /// The range, inclusive; `None` start: the scope's first day with usage (or `end`).
    pub start: Option<NaiveDate>,
    pub end: NaiveDate,
    /// One category (with its descendants), or every category with usage plus the total price.
    pub category: Option<String>,
}

/// One usage record: a category's sums over a period, in one currency and unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub category: String,
    pub start: NaiveDate,
    pub end: NaiveDate,
    /// ISO 4217 code; empty for a zero record of a scope without any usage.
    pub currency: String,
    /// The events' unit; `None` for the total price and for zero records without usage.
    pub unit: Option<String>,
    pub count: i64,
    pub usage: Amount,
    pub price: Amount,
}

/// What a records request comes to.
#[derive(Debug)]
pub enum Outcome {
    /// The sid is neither the organization nor one of its accounts.
    Forbidden,
    /// Every record of the range, in order, and the version they show.
    Records(Version, Arc<Vec<Record>>),
}

/// A range of records and the data version it was read at.
type Remembered = (VersionKey, Arc<Vec<Record>>);

/// Records remembered at most (about 200 bytes each: some 40 MB).
const REMEMBERED_RECORDS: u64 = 200_000;

/// What the records route remembers between requests: per (organization, request), the
/// newest range of records read and the data version it was read at. Every part of a records
/// answer (the sid's ownership, the first day with usage, the sums) changes only with the
/// organization's data version, so a request whose version is the remembered one takes the
/// records without reading them, and any page of a range is as quick as the first. Bounded by
/// records; nothing is invalidated, an older version simply no longer matches.
pub struct RecordsCache {
    entries: Cache<[u8; 32], Arc<Remembered>, ByRecords>,
}

#[derive(Clone)]
struct ByRecords;

impl Weighter<[u8; 32], Arc<Remembered>> for ByRecords {
    fn weight(&self, _key: &[u8; 32], entry: &Arc<Remembered>) -> u64 {
        entry.1.len() as u64 + 1
    }
}

impl Default for RecordsCache {
    fn default() -> Self {
        RecordsCache {
            entries: Cache::with_weighter(10_000, REMEMBERED_RECORDS, ByRecords),
        }
    }
}

impl RecordsCache {
    /// What a request is remembered under: the organization and the request, dates resolved.
    fn key(organization: &OrganizationId, request: &RecordsRequest) -> [u8; 32] {
        let day = |d: Option<NaiveDate>| d.map_or(i32::MIN, |d| d.num_days_from_ce());
        let granularity: &[u8] = match request.granularity {
            Granularity::Whole => b"whole",
            Granularity::Daily => b"daily",
            Granularity::Monthly => b"monthly",
            Granularity::Yearly => b"yearly",
        };
        digest::sha256(&[
            b"usage records v1",
            organization.as_str().as_bytes(),
            request.sid.as_bytes(),
            granularity,
            &day(request.start).to_le_bytes(),
            &day(Some(request.end)).to_le_bytes(),
            request
                .category
                .as_deref()
                .map_or(b"\xff".as_slice(), str::as_bytes),
        ])
    }
}

/// [`read`], or the records remembered for this request when the organization's version is
/// still theirs (then one statement, the version, instead of a snapshot of four).
pub async fn read_remembered(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    request: &RecordsRequest,
    catalogue: &Catalogue,
    cache: &RecordsCache,
) -> QueryResult<Outcome> {
    let key = RecordsCache::key(organization, request);
    let remembered = cache.entries.get(&key);
    let lookup = match remembered {
        Some(entry) => {
            let version = monthly::version(conn, organization).await?;
            if entry.0 == version.key() {
                bodies::counted("records", "hit");
                return Ok(Outcome::Records(version, entry.1.clone()));
            }
            "stale"
        }
        None => "miss",
    };
    bodies::counted("records", lookup);
    let outcome = read(conn, organization, request, catalogue).await?;
    if let Outcome::Records(version, found) = &outcome {
        cache
            .entries
            .insert(key, Arc::new((version.key(), found.clone())));
    }
    Ok(outcome)
}

/// The scope `sid` names for `organization`: all its accounts, one of them, or none.
async fn scope_of(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    sid: &str,
) -> QueryResult<Option<Scope>> {
    if *organization == sid {
        return Ok(Some(Scope {
            organization: organization.clone(),
            account: None,
        }));
    }
    if sid.contains('\0') {
        // Postgres text cannot hold NUL: no account has one.
        return Ok(None);
    }
    let owned: Option<AccountId> = accounts::table
        .filter(accounts::organization_id.eq(organization))
        .filter(accounts::id.eq(sid))
        .select(accounts::id)
        .first(conn)
        .await
        .optional()?;
    Ok(owned.map(|account| Scope {
        organization: organization.clone(),
        account: Some(account),
    }))
}

/// The records of `request` for `organization`: ownership, version and sums in one snapshot.
pub async fn read(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    request: &RecordsRequest,
    catalogue: &Catalogue,
) -> QueryResult<Outcome> {
    conn.build_transaction()
        .read_only()
        .repeatable_read()
        .run(async |conn| {
            let Some(scope) = scope_of(conn, organization, &request.sid).await? else {
                return Ok(Outcome::Forbidden);
            };
            let version = monthly::version(conn, organization).await?;
            let start = match request.start {
                Some(start) => start,
                None => query::first_day(conn, &scope)
                    .await?
                    .map_or(request.end, |first| first.min(request.end)),
            };
            let category = request.category.as_deref();
            let sums = query::sums(
                conn,
                &scope,
                start,
                request.end,
                request.granularity,
                category,
            )
            .await?;
            let periods = periods(request.granularity, start, request.end);
            Ok(Outcome::Records(
                version,
                Arc::new(assemble(sums, &periods, catalogue, category)),
            ))
        })
        .await
}

/// A series of records: one (category, currency, unit) over every period.
type Series = (String, String, Option<String>);

/// Every record of every series over every period (zero where a period has no usage), in the
/// contract's order: catalogue position, start date, currency, unit. The series are those with
/// usage in the range; a requested category without any gets one zero series, without currency
/// or unit (there is none to name).
fn assemble(
    sums: Vec<Sums>,
    periods: &[(NaiveDate, NaiveDate)],
    catalogue: &Catalogue,
    category: Option<&str>,
) -> Vec<Record> {
    let mut series: BTreeSet<Series> = BTreeSet::new();
    let mut found: HashMap<(Series, NaiveDate), Sums> = HashMap::new();
    for sum in sums {
        let key = (sum.category.clone(), sum.currency.clone(), sum.unit.clone());
        series.insert(key.clone());
        found.insert((key, sum.period), sum);
    }
    if let Some(wanted) = category {
        if series.is_empty() {
            series.insert((wanted.to_owned(), String::new(), None));
        }
    }
    let mut records: Vec<Record> = Vec::with_capacity(series.len() * periods.len());
    for key in &series {
        for &(start, end) in periods {
            let record = match found.remove(&(key.clone(), start)) {
                Some(sum) => Record {
                    category: sum.category,
                    start,
                    end,
                    currency: sum.currency,
                    unit: sum.unit,
                    count: sum.count,
                    usage: sum.usage,
                    price: sum.price,
                },
                None => Record {
                    category: key.0.clone(),
                    start,
                    end,
                    currency: key.1.clone(),
                    unit: key.2.clone(),
                    count: 0,
                    usage: Amount::zero(),
                    price: Amount::zero(),
                },
            };
            records.push(record);
        }
    }
    in_contract_order(&mut records, catalogue);
    records
}

/// Catalogue position of the category, then start date, currency, unit.
fn in_contract_order(records: &mut [Record], catalogue: &Catalogue) {
    let position = |slug: &str| {
        catalogue
            .categories
            .iter()
            .position(|c| c.slug == slug)
            .unwrap_or(usize::MAX)
    };
    records.sort_by(|a, b| {
        (position(&a.category), a.start, &a.currency, &a.unit).cmp(&(
            position(&b.category),
            b.start,
            &b.currency,
            &b.unit,
        ))
    });
}

/// Whether `slug` is the total price (no count, usage in price).
pub fn is_total_price(slug: &str) -> bool {
    slug == TOTAL_PRICE
}
