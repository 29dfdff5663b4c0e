//! The deliveries' outbox: the firings still `pending`, claimed by any replica with
//! `FOR UPDATE SKIP LOCKED`, every attempt recorded. A claim is a lease (`next_attempt_at` moved
//! past the attempt's longest end) committed before the callback is called, so no transaction
//! stays open across the network and a replica that dies mid-attempt only delays the delivery.
//!
//! States: `pending` → (attempt) → `delivered` on a 2xx; `pending` again, due after a backoff,
//! on anything else; `failed` once the next attempt would come later than the retry window after
//! the firing. Each attempt is a row of `usage_trigger_attempts`.

use chrono::{DateTime, NaiveDate, Utc};
use diesel::sql_types::{
    BigInt, Bytea, Date, Double, Integer, Nullable, Numeric, Text, Timestamptz,
};
use diesel::QueryableByName;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use crate::usage::amount::Amount;
use crate::usage::model::OrganizationId;

/// A claimed delivery, with what its request is made of.
#[derive(Debug, Clone, QueryableByName)]
pub struct Due {
    #[diesel(sql_type = Text)]
    pub organization_id: String,
    #[diesel(sql_type = Text)]
    pub trigger_sid: String,
    #[diesel(sql_type = Date)]
    pub period_start: NaiveDate,
    #[diesel(sql_type = Timestamptz)]
    pub fired_at: DateTime<Utc>,
    #[diesel(sql_type = Numeric)]
    pub current_value: Amount,
    /// This attempt's number (1 for the first).
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    #[diesel(sql_type = Text)]
    pub account_sid: String,
    #[diesel(sql_type = Text)]
    pub api_version: String,
    #[diesel(sql_type = Text)]
    pub callback_url: String,
    #[diesel(sql_type = Text)]
    pub callback_method: String,
    #[diesel(sql_type = Nullable<Text>)]
    pub recurring: Option<String>,
    #[diesel(sql_type = Text)]
    pub trigger_by: String,
    #[diesel(sql_type = Numeric)]
    pub trigger_value: Amount,
    #[diesel(sql_type = Text)]
    pub usage_category: String,
    #[diesel(sql_type = Bytea)]
    pub secret: Vec<u8>,
}

/// Claims up to `limit` due deliveries for `lease_secs`.
pub async fn claim(
    conn: &mut AsyncPgConnection,
    limit: i64,
    lease_secs: f64,
) -> diesel::QueryResult<Vec<Due>> {
    diesel::sql_query(
        "UPDATE usage_trigger_firings f \
         SET attempts = f.attempts + 1, \
             next_attempt_at = clock_timestamp() + make_interval(secs => $2) \
         FROM (SELECT organization_id, trigger_sid, period_start FROM usage_trigger_firings \
               WHERE state = 'pending' AND next_attempt_at <= clock_timestamp() \
               ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED) due, \
              usage_triggers t \
         WHERE f.organization_id = due.organization_id AND f.trigger_sid = due.trigger_sid \
           AND f.period_start = due.period_start \
           AND t.organization_id = f.organization_id AND t.sid = f.trigger_sid \
         RETURNING f.organization_id, f.trigger_sid, f.period_start, f.fired_at, \
                   f.current_value, f.attempts AS attempt, t.account_sid, t.api_version, \
                   t.callback_url, t.callback_method, t.recurring, t.trigger_by, \
                   t.trigger_value, t.usage_category, t.secret",
    )
    .bind::<BigInt, _>(limit)
    .bind::<Double, _>(lease_secs)
    .load(conn)
    .await
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx.
    Delivered,
    /// Any other status (redirects are not followed).
    HttpError,
    /// No answer within the timeout.
    Timeout,
    /// Refused, reset, TLS failure, a name that does not resolve…
    ConnectionError,
    /// The callback's address is not public and the operator did not allow it.
    ForbiddenAddress,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::HttpError => "http_error",
            Outcome::Timeout => "timeout",
            Outcome::ConnectionError => "connection_error",
            Outcome::ForbiddenAddress => "forbidden_address",
        }
    }
}

/// An attempt's result, and what becomes of the delivery.
#[derive(Debug, Clone)]
pub struct Attempted {
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub outcome: Outcome,
    pub response_status: Option<i32>,
    /// When to try again; `None` with a failed outcome: given up.
    pub retry_at: Option<DateTime<Utc>>,
}

/// Records the attempt and moves the delivery on, unless another replica has taken it since
/// (its lease ran out): then only the attempt is kept. A trigger deleted meanwhile took its
/// firing along: then nothing is recorded.
pub async fn finish(
    conn: &mut AsyncPgConnection,
    due: &Due,
    attempted: &Attempted,
) -> diesel::QueryResult<()> {
    let state = match (attempted.outcome, attempted.retry_at) {
        (Outcome::Delivered, _) => "delivered",
        (_, Some(_)) => "pending",
        (_, None) => "failed",
    };
    diesel::sql_query(
        "WITH attempt AS ( \
             INSERT INTO usage_trigger_attempts (organization_id, trigger_sid, period_start, \
                 attempt, started_at, duration_ms, outcome, response_status) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
             WHERE EXISTS (SELECT 1 FROM usage_trigger_firings \
                           WHERE organization_id = $1 AND trigger_sid = $2 \
                             AND period_start = $3) \
             ON CONFLICT DO NOTHING) \
         UPDATE usage_trigger_firings \
         SET state = $9, next_attempt_at = COALESCE($10, next_attempt_at), \
             finished_at = CASE WHEN $9 = 'pending' THEN NULL ELSE clock_timestamp() END \
         WHERE organization_id = $1 AND trigger_sid = $2 AND period_start = $3 \
           AND attempts = $4 AND state = 'pending'",
    )
    .bind::<Text, _>(&due.organization_id)
    .bind::<Text, _>(&due.trigger_sid)
    .bind::<Date, _>(due.period_start)
    .bind::<Integer, _>(due.attempt)
    .bind::<Timestamptz, _>(attempted.started_at)
    .bind::<Integer, _>(attempted.duration_ms)
    .bind::<Text, _>(attempted.outcome.as_str())
    .bind::<Nullable<Integer>, _>(attempted.response_status)
    .bind::<Text, _>(state)
    .bind::<Nullable<Timestamptz>, _>(attempted.retry_at)
    .execute(conn)
    .await
    .map(|_| ())
}

/// The earliest pending delivery's due time, if any.
pub async fn next_due(conn: &mut AsyncPgConnection) -> diesel::QueryResult<Option<DateTime<Utc>>> {
    #[derive(QueryableByName)]
    struct Next {
        #[diesel(sql_type = Nullable<Timestamptz>)]
        at: Option<DateTime<Utc>>,
    }
    let next: Next = diesel::sql_query(
        "SELECT min(next_attempt_at) AS at FROM usage_trigger_firings WHERE state = 'pending'",
    )
    .get_result(conn)
    .await?;
    Ok(next.at)
}

/// One attempt as `GET /express/usage/triggers/{Sid}/deliveries` lists it.
#[derive(Debug, Clone, QueryableByName)]
pub struct AttemptRow {
    #[diesel(sql_type = Text)]
    pub account_sid: String,
    #[diesel(sql_type = Date)]
    pub period_start: NaiveDate,
    #[diesel(sql_type = Integer)]
    pub attempt: i32,
    #[diesel(sql_type = Timestamptz)]
    pub started_at: DateTime<Utc>,
    #[diesel(sql_type = Integer)]
    pub duration_ms: i32,
    #[diesel(sql_type = Text)]
    pub outcome: String,
    #[diesel(sql_type = Nullable<Integer>)]
    pub response_status: Option<i32>,
    /// The delivery's state now.
    #[diesel(sql_type = Text)]
    pub state: String,
    #[diesel(sql_type = Timestamptz)]
    pub fired_at: DateTime<Utc>,
    /// When the next attempt is due, on the delivery's latest attempt while it is pending.
    #[diesel(sql_type = Nullable<Timestamptz>)]
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// A page of the trigger's attempts, newest first, and how many there are in all.
pub async fn attempts(
    conn: &mut AsyncPgConnection,
    organization: &OrganizationId,
    sid: &str,
    offset: i64,
    limit: i64,
) -> diesel::QueryResult<(Vec<AttemptRow>, i64)> {
    #[derive(QueryableByName)]
    struct Total {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let total: Total = diesel::sql_query(
        "SELECT count(*) AS n FROM usage_trigger_attempts \
         WHERE organization_id = $1 AND trigger_sid = $2",
    )
    .bind::<Text, _>(organization.as_str())
    .bind::<Text, _>(sid)
    .get_result(conn)
    .await?;
    let rows = diesel::sql_query(
        "SELECT t.account_sid, a.period_start, a.attempt, a.started_at, a.duration_ms, a.outcome, \
                a.response_status, f.state, f.fired_at, \
                CASE WHEN f.state = 'pending' AND a.attempt = f.attempts \
                     THEN f.next_attempt_at END AS next_attempt_at \
         FROM usage_trigger_attempts a \
         JOIN usage_trigger_firings f USING (organization_id, trigger_sid, period_start) \
         JOIN usage_triggers t ON t.organization_id = a.organization_id AND t.sid = a.trigger_sid \
         WHERE a.organization_id = $1 AND a.trigger_sid = $2 \
         ORDER BY a.started_at DESC, a.period_start DESC, a.attempt DESC \
         OFFSET $3 LIMIT $4",
    )
    .bind::<Text, _>(organization.as_str())
    .bind::<Text, _>(sid)
    .bind::<BigInt, _>(offset)
    .bind::<BigInt, _>(limit)
    .load(conn)
    .await?;
    Ok((rows, total.n))
}
