//! Usage triggers (DESIGN §2d): a threshold on one scope's usage of a category in the current UTC
//! period. This module keeps the triggers (`create`, `list`, `fetch`, `update`, `delete`, every
//! query carrying the caller's organization), fires them (`evaluate`, called by the rollup in the
//! transaction of the aggregates it wrote), and `outbox` + `deliver` take the firings to their
//! callbacks. `callback` is the rule for where a callback may point.
//!
//! A firing is a row keyed by (trigger, period start): it happens once per period however many
//! replicas evaluate, and it is its own pending delivery, written in the same statement.

pub mod callback;
pub mod deliver;
pub mod outbox;

use chrono::{DateTime, NaiveDate, Utc};
use diesel::sql_types::{Array, Bool, Bytea, Date, Integer, Nullable, Numeric, Text, Timestamptz};
use diesel::{OptionalExtension, QueryableByName};
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use rust_decimal::Decimal;

use crate::usage::amount::Amount;
use crate::usage::model::{vocabulary, OrganizationId};

/// Most triggers one organization may keep.
pub const MAX_PER_ORGANIZATION: i64 = 1_000;

/// Fixed first key of the advisory lock that serializes trigger creation per organization (the
/// limit is counted, then a row inserted).
const CREATE_LOCK: i32 = 0x7472_6967; // "trig"

vocabulary!(
    /// How a trigger recurs (`None`: it fires once ever, as `AllTime`).
    Recurring {
        Daily => "daily",
        Monthly => "monthly",
        Yearly => "yearly",
        AllTime => "alltime",
    }
);

vocabulary!(
    /// The value a trigger watches.
    TriggerBy {
        Count => "count",
        Usage => "usage",
        Price => "price",
    }
);

vocabulary!(
    /// How a delivery is sent.
    Method {
        Get => "GET",
        Post => "POST",
    }
);

/// `TriggerValue` as sent: a value, or `+N` (the current value plus N, fixed at creation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threshold {
    Value(Decimal),
    Offset(Decimal),
}

/// A checked trigger to create.
#[derive(Debug, Clone)]
pub struct NewTrigger {
    /// The scope as named in the path: the organization id or one of its account ids.
    pub account_sid: String,
    pub api_version: &'static str,
    pub callback_url: String,
    pub callback_method: Method,
    pub friendly_name: Option<String>,
    pub recurring: Option<Recurring>,
    pub trigger_by: TriggerBy,
    /// Lower-case ISO 4217.
    pub price_unit: String,
    pub usage_category: String,
    pub threshold: Threshold,
}

/// What an update may change (`None`: unchanged).
#[derive(Debug, Clone, Default)]
pub struct Changes {
    pub callback_url: Option<String>,
    pub callback_method: Option<Method>,
    pub friendly_name: Option<String>,
}

/// A trigger as read, with the value it watches now.
#[derive(Debug, Clone, QueryableByName)]
pub struct Trigger {
    #[diesel(sql_type = Text)]
    pub sid: String,
    #[diesel(sql_type = Text)]
    pub account_sid: String,
    #[diesel(sql_type = Text)]
    pub api_version: String,
    #[diesel(sql_type = Text)]
    pub callback_method: String,
    #[diesel(sql_type = Text)]
    pub callback_url: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub friendly_name: Option<String>,
    #[diesel(sql_type = Nullable<Text>)]
    pub recurring: Option<String>,
    #[diesel(sql_type = Text)]
    pub trigger_by: String,
    #[diesel(sql_type = Text)]
    pub price_unit: String,
    #[diesel(sql_type = Text)]
    pub usage_category: String,
    #[diesel(sql_type = Numeric)]
    pub trigger_value: Amount,
    #[diesel(sql_type = Numeric)]
    pub current_value: Amount,
    #[diesel(sql_type = Timestamptz)]
    pub date_created: DateTime<Utc>,
    #[diesel(sql_type = Timestamptz)]
    pub date_updated: DateTime<Utc>,
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub date_fired: Option<DateTime<Utc>>,
}

/// Every column `Trigger` reads, `current_value` computed for the current period.
const SELECT: &str = "\
    SELECT t.sid, t.account_sid, t.api_version, t.callback_method, t.callback_url, \
           t.friendly_name, t.recurring, t.trigger_by, t.price_unit, t.usage_category, \
           t.trigger_value, t.date_created, t.date_updated, t.date_fired, \
           usage_trigger_value(t.organization_id, t.account_id, t.usage_category, t.trigger_by, \
                               t.price_unit, p.first, p.last) AS current_value \
    FROM usage_triggers t \
    CROSS JOIN LATERAL usage_trigger_period(t.recurring, t.date_created, \
                                            (now() AT TIME ZONE 'UTC')::date) p ";

/// Why a trigger was not created.
#[derive(Debug)]
pub enum Refused {
    /// The `AccountSid` is neither the organization nor one of its accounts.
    Forbidden,
    /// The organization already keeps `MAX_PER_ORGANIZATION` triggers.
    LimitReached,
}

/// The scope `sid` names for `organization`: `Some(None)` the organization, `Some(Some(id))` one
/// of its accounts, `None` anything else.
pub async fn scope_of(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    sid: &str,
) -> diesel::QueryResult<Option<Option<String>>> {
    if organization.as_str() == sid {
        return Ok(Some(None));
    }
    if sid.contains('\0') {
        // Postgres text cannot hold NUL: no account has one.
        return Ok(None);
    }
    #[derive(QueryableByName)]
    struct Found {
        #[diesel(sql_type = Text)]
        id: String,
    }
    let found: Option<Found> =
        diesel::sql_query("SELECT id FROM accounts WHERE organization_id = $1 AND id = $2")
            .bind::<Text, _>(organization.as_str())
            .bind::<Text, _>(sid)
            .get_result(conn)
            .await
            .optional()?;
    Ok(found.map(|f| Some(f.id)))
}

/// Creates a trigger and returns it with its signing secret (`whsec_…`, never shown again). A
/// trigger whose threshold the current period has already reached fires at once.
///
/// One transaction, which first shares the organization's row: a rollup of the organization
/// (which locks that row for update before its aggregates) either commits before and this
/// evaluation sees its aggregates, or starts after and its own evaluation sees this trigger. No
/// crossing falls between the two, and a failure leaves no trigger behind.
pub async fn create(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    new: &NewTrigger,
) -> diesel::QueryResult<Result<(Trigger, String), Refused>> {
    let Some(account) = scope_of(conn, organization, &new.account_sid).await? else {
        return Ok(Err(Refused::Forbidden));
    };
    let secret: [u8; 32] = rand::random();
    let sid = format!("UT{}", uuid::Uuid::new_v4().simple());
    let created = conn
        .transaction(async |conn| {
            diesel::sql_query("SELECT id FROM organizations WHERE id = $1 FOR SHARE")
                .bind::<Text, _>(organization.as_str())
                .execute(conn)
                .await?;
            if !insert_within_limit(conn, organization, new, &sid, account.as_deref(), &secret)
                .await?
            {
                return Ok(None);
            }
            evaluate_one(conn, organization, &sid).await?;
            fetch(conn, organization, &new.account_sid, &sid).await
        })
        .await?;
    let Some(trigger) = created else {
        return Ok(Err(Refused::LimitReached));
    };
    use base64::Engine;
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(secret)
    );
    Ok(Ok((trigger, secret)))
}

/// Inserts the trigger unless the organization already keeps `MAX_PER_ORGANIZATION` (then
/// `false`), counting and inserting under a lock per organization (held to the end of the
/// caller's transaction).
async fn insert_within_limit(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    new: &NewTrigger,
    sid: &str,
    account: Option<&str>,
    secret: &[u8; 32],
) -> diesel::QueryResult<bool> {
    let (value, offset) = match new.threshold {
        Threshold::Value(v) => (v, false),
        Threshold::Offset(v) => (v, true),
    };
    diesel::sql_query("SELECT pg_advisory_xact_lock($1, hashtext($2))")
        .bind::<Integer, _>(CREATE_LOCK)
        .bind::<Text, _>(organization.as_str())
        .execute(conn)
        .await?;
    #[derive(QueryableByName)]
    struct Kept {
        #[diesel(sql_type = diesel::sql_types::BigInt)]
        n: i64,
    }
    let kept: Kept =
        diesel::sql_query("SELECT count(*) AS n FROM usage_triggers WHERE organization_id = $1")
            .bind::<Text, _>(organization.as_str())
            .get_result(conn)
            .await?;
    if kept.n >= MAX_PER_ORGANIZATION {
        return Ok(false);
    }
    diesel::sql_query(INSERT)
        .bind::<Text, _>(organization.as_str())
        .bind::<Text, _>(sid)
        .bind::<Text, _>(&new.account_sid)
        .bind::<Nullable<Text>, _>(account)
        .bind::<Text, _>(new.api_version)
        .bind::<Nullable<Text>, _>(new.friendly_name.as_deref())
        .bind::<Text, _>(&new.callback_url)
        .bind::<Text, _>(new.callback_method.as_str())
        .bind::<Nullable<Text>, _>(new.recurring.map(Recurring::as_str))
        .bind::<Text, _>(new.trigger_by.as_str())
        .bind::<Text, _>(&new.price_unit)
        .bind::<Text, _>(&new.usage_category)
        .bind::<Numeric, _>(value)
        .bind::<Bool, _>(offset)
        .bind::<Bytea, _>(secret.as_slice())
        .execute(conn)
        .await?;
    Ok(true)
}

/// $13 the threshold, or with $14 the offset added to the current period's value.
const INSERT: &str = "\
    INSERT INTO usage_triggers (organization_id, sid, account_sid, account_id, api_version, \
        friendly_name, callback_url, callback_method, recurring, trigger_by, price_unit, \
        usage_category, trigger_value, secret, date_created, date_updated) \
    SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
           CASE WHEN $14 THEN trim_scale(usage_trigger_value($1, $4, $12, $10, $11, p.first, p.last) \
                                         + $13) \
                ELSE $13 END, \
           $15, now(), now() \
    FROM usage_trigger_period($9, now(), (now() AT TIME ZONE 'UTC')::date) p";

/// Filters of a list (`None`: any).
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub recurring: Option<Recurring>,
    pub trigger_by: Option<TriggerBy>,
    pub usage_category: Option<String>,
}

/// One page of the triggers created under `account_sid`, oldest first, and whether more follow.
pub async fn list(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    account_sid: &str,
    filter: &ListFilter,
    offset: i64,
    limit: i64,
) -> diesel::QueryResult<(Vec<Trigger>, bool)> {
    let mut found: Vec<Trigger> = diesel::sql_query(format!(
        "{SELECT} WHERE t.organization_id = $1 AND t.account_sid = $2 \
           AND ($3::text IS NULL OR t.recurring = $3) \
           AND ($4::text IS NULL OR t.trigger_by = $4) \
           AND ($5::text IS NULL OR t.usage_category = $5) \
         ORDER BY t.date_created, t.sid OFFSET $6 LIMIT $7"
    ))
    .bind::<Text, _>(organization.as_str())
    .bind::<Text, _>(account_sid)
    .bind::<Nullable<Text>, _>(filter.recurring.map(Recurring::as_str))
    .bind::<Nullable<Text>, _>(filter.trigger_by.map(TriggerBy::as_str))
    .bind::<Nullable<Text>, _>(filter.usage_category.as_deref())
    .bind::<diesel::sql_types::BigInt, _>(offset)
    .bind::<diesel::sql_types::BigInt, _>(limit.saturating_add(1))
    .load(conn)
    .await?;
    let more = found.len() as i64 > limit;
    found.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok((found, more))
}

/// The trigger `sid` created under `account_sid` in `organization`, if any.
pub async fn fetch(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    account_sid: &str,
    sid: &str,
) -> diesel::QueryResult<Option<Trigger>> {
    diesel::sql_query(format!(
        "{SELECT} WHERE t.organization_id = $1 AND t.account_sid = $2 AND t.sid = $3"
    ))
    .bind::<Text, _>(organization.as_str())
    .bind::<Text, _>(account_sid)
    .bind::<Text, _>(sid)
    .get_result(conn)
    .await
    .optional()
}

/// Whether `organization` keeps the trigger `sid` (under any scope).
pub async fn exists(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    sid: &str,
) -> diesel::QueryResult<bool> {
    let n =
        diesel::sql_query("SELECT 1 FROM usage_triggers WHERE organization_id = $1 AND sid = $2")
            .bind::<Text, _>(organization.as_str())
            .bind::<Text, _>(sid)
            .execute(conn)
            .await?;
    Ok(n > 0)
}

/// Applies `changes`; `None` when there is no such trigger.
pub async fn update(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    account_sid: &str,
    sid: &str,
    changes: &Changes,
) -> diesel::QueryResult<Option<Trigger>> {
    let n = diesel::sql_query(
        "UPDATE usage_triggers SET callback_url = COALESCE($4, callback_url), \
             callback_method = COALESCE($5, callback_method), \
             friendly_name = COALESCE($6, friendly_name), date_updated = now() \
         WHERE organization_id = $1 AND account_sid = $2 AND sid = $3",
    )
    .bind::<Text, _>(organization.as_str())
    .bind::<Text, _>(account_sid)
    .bind::<Text, _>(sid)
    .bind::<Nullable<Text>, _>(changes.callback_url.as_deref())
    .bind::<Nullable<Text>, _>(changes.callback_method.map(Method::as_str))
    .bind::<Nullable<Text>, _>(changes.friendly_name.as_deref())
    .execute(conn)
    .await?;
    if n == 0 {
        return Ok(None);
    }
    fetch(conn, organization, account_sid, sid).await
}

/// Deletes the trigger with its firings and pending deliveries; `false` when there is none.
pub async fn delete(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    account_sid: &str,
    sid: &str,
) -> diesel::QueryResult<bool> {
    let n = diesel::sql_query(
        "DELETE FROM usage_triggers WHERE organization_id = $1 AND account_sid = $2 AND sid = $3",
    )
    .bind::<Text, _>(organization.as_str())
    .bind::<Text, _>(account_sid)
    .bind::<Text, _>(sid)
    .execute(conn)
    .await?;
    Ok(n > 0)
}

/// The (organization, account, month) groups a rollup transaction recomputed.
#[derive(Debug, Default)]
pub struct Touched<'a> {
    pub organizations: Vec<&'a str>,
    pub accounts: Vec<&'a str>,
    pub months: Vec<NaiveDate>,
}

#[derive(QueryableByName)]
struct Fired {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    fired: i64,
}

/// Fires the triggers whose scope and current period the groups `touched` belong to, and that
/// have now reached their threshold. Run inside the rollup's transaction, after its aggregates:
/// a firing commits with the aggregates that caused it, or not at all. Returns how many fired.
pub async fn evaluate(
    conn: &mut AsyncPgConnection,
    touched: &Touched<'_>,
) -> diesel::QueryResult<i64> {
    run_evaluation(conn, touched, false, None).await
}

/// Fires every trigger that has reached its threshold (after a full rebuild).
pub async fn evaluate_all(conn: &mut AsyncPgConnection) -> diesel::QueryResult<i64> {
    run_evaluation(conn, &Touched::default(), true, None).await
}

/// Fires the trigger `sid` if it has already reached its threshold (when it is created).
async fn evaluate_one(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    sid: &str,
) -> diesel::QueryResult<i64> {
    let touched = Touched {
        organizations: vec![organization.as_str()],
        ..Touched::default()
    };
    run_evaluation(conn, &touched, false, Some(sid)).await
}

async fn run_evaluation(
    conn: &mut AsyncPgConnection,
    touched: &Touched<'_>,
    all: bool,
    sid: Option<&str>,
) -> diesel::QueryResult<i64> {
    let fired: Fired = diesel::sql_query(include_str!("evaluate.sql"))
        .bind::<Array<Text>, _>(&touched.organizations)
        .bind::<Array<Text>, _>(&touched.accounts)
        .bind::<Array<Date>, _>(&touched.months)
        .bind::<Bool, _>(all)
        .bind::<Nullable<Text>, _>(sid)
        .get_result(conn)
        .await?;
    // Counted when the statement succeeded; a transaction that then rolls back overcounts, which
    // a counter of attempts to fire may.
    metrics::counter!("usage_api_trigger_firings_total").increment(fired.fired.unsigned_abs());
    Ok(fired.fired)
}

/// `YYYY-MM-DD`, for idempotency tokens and URIs.
pub fn day(date: NaiveDate) -> String {
    date.format("%Y-%m-%d").to_string()
}
