//! The delivery worker every `serve` replica runs: claims due deliveries from the outbox, calls
//! each callback once per claim (Twilio's form fields, Standard Webhooks signature, no redirects,
//! a timeout), records the attempt and schedules the next one with exponential backoff and
//! jitter. At most `concurrency` calls are in flight per replica; a slow or hostile receiver
//! holds one slot for at most the timeout, and never the rollup, which only writes the outbox.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::sync::{Notify, Semaphore};
use url::Url;

use super::callback::{CallbackPolicy, ForbiddenAddress, SafeResolver};
use super::outbox::{self, Attempted, Due, Outcome};
use super::{day, Recurring};
use crate::db::DbPool;

/// How the worker delivers.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Calls in flight at once (per replica).
    pub concurrency: usize,
    /// A callback's whole answer (connection, TLS, status) must come within it.
    pub timeout: Duration,
    /// The first retry's delay; each later one doubles, up to `MAX_BACKOFF`.
    pub backoff: Duration,
    /// No attempt starts later than this after the firing; the delivery is then `failed`.
    pub retry_window: Duration,
    /// How often the outbox is looked at when nothing wakes the worker.
    pub poll: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            concurrency: 16,
            timeout: Duration::from_secs(5),
            backoff: Duration::from_secs(10),
            retry_window: Duration::from_secs(24 * 3600),
            poll: Duration::from_secs(1),
        }
    }
}

/// The longest delay between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(3600);

/// `User-Agent` of every delivery.
const USER_AGENT: &str = concat!("usage-api-webhooks/", env!("CARGO_PKG_VERSION"));

/// A delivery's request, the same bytes at every attempt (only the timestamp and signature
/// change).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// `{AccountSid}-FIRES-{Sid}-{period start}`: `webhook-id` and `IdempotencyToken`.
    pub id: String,
    /// The form fields, `application/x-www-form-urlencoded`.
    pub form: String,
}

/// The fields of DESIGN §2d for a firing.
pub fn message(due: &Due) -> Message {
    let id = format!(
        "{}-FIRES-{}-{}",
        due.account_sid,
        due.trigger_sid,
        day(due.period_start)
    );
    let record_uri = record_uri(due);
    let form = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("AccountSid", &due.account_sid)
        .append_pair("UsageTriggerSid", &due.trigger_sid)
        .append_pair("DateFired", &due.fired_at.to_rfc2822())
        .append_pair("Recurring", due.recurring.as_deref().unwrap_or(""))
        .append_pair("UsageCategory", &due.usage_category)
        .append_pair("TriggerBy", &due.trigger_by)
        .append_pair("TriggerValue", due.trigger_value.as_str())
        .append_pair("CurrentValue", due.current_value.as_str())
        .append_pair("UsageRecordUri", &record_uri)
        .append_pair("IdempotencyToken", &id)
        .finish();
    Message { id, form }
}

/// The usage record of the fired period (its category, its dates).
fn record_uri(due: &Due) -> String {
    let recurring = due.recurring.as_deref().and_then(Recurring::parse);
    let start = due.period_start;
    let end = match recurring {
        Some(Recurring::Daily) => Some(start),
        Some(Recurring::Monthly) => start
            .checked_add_months(chrono::Months::new(1))
            .and_then(|d| d.pred_opt()),
        Some(Recurring::Yearly) => start
            .checked_add_months(chrono::Months::new(12))
            .and_then(|d| d.pred_opt()),
        Some(Recurring::AllTime) | None => None,
    };
    let sub = match recurring {
        Some(Recurring::Daily) => "Daily",
        Some(Recurring::Monthly) => "Monthly",
        Some(Recurring::Yearly) => "Yearly",
        Some(Recurring::AllTime) | None => "AllTime",
    };
    let mut query = url::form_urlencoded::Serializer::new(String::new());
    query.append_pair("Category", &due.usage_category);
    if let Some(end) = end {
        query
            .append_pair("StartDate", &day(start))
            .append_pair("EndDate", &day(end));
    }
    format!(
        "/{}/Accounts/{}/Usage/Records/{sub}.json?{}",
        due.api_version,
        url::form_urlencoded::byte_serialize(due.account_sid.as_bytes()).collect::<String>(),
        query.finish()
    )
}

/// `v1,` + base64(HMAC-SHA256(secret, "{id}.{timestamp}.{body}")), per Standard Webhooks.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    use base64::Engine;
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

/// The delay before attempt `attempt + 1`: `backoff` × 2^(attempt − 1), at most `MAX_BACKOFF`,
/// of which a random half is taken off (so receivers that fail together are not retried in step).
pub fn backoff(settings: &Settings, attempt: i32) -> Duration {
    let doublings = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(20);
    let full = settings
        .backoff
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF.max(settings.backoff));
    let half = full / 2;
    half + half.mul_f64(rand::random::<f64>())
}

/// The HTTP client of deliveries: no redirects, no proxy, the timeout, and only permitted
/// addresses.
pub fn client(
    policy: Arc<CallbackPolicy>,
    settings: &Settings,
) -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(settings.timeout)
        .connect_timeout(settings.timeout)
        .user_agent(USER_AGENT)
        .dns_resolver(Arc::new(SafeResolver { policy }))
        .build()
}

/// One attempt: the request, its outcome.
async fn attempt(
    client: &reqwest::Client,
    policy: &CallbackPolicy,
    due: &Due,
) -> (Outcome, Option<i32>) {
    let message = message(due);
    let Ok(mut url) = Url::parse(&due.callback_url) else {
        return (Outcome::ConnectionError, None);
    };
    if policy.refuse_literal(&url).is_some() {
        return (Outcome::ForbiddenAddress, None);
    }
    let timestamp = Utc::now().timestamp();
    let get = due.callback_method == "GET";
    let body = if get { "" } else { message.form.as_str() };
    let signed = signature(&due.secret, &message.id, timestamp, body);
    let request = if get {
        let query = match url.query() {
            Some(q) if !q.is_empty() => format!("{q}&{}", message.form),
            _ => message.form.clone(),
        };
        url.set_query(Some(&query));
        client.get(url)
    } else {
        client
            .post(url)
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(message.form.clone())
    };
    let sent = request
        .header("webhook-id", &message.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header("webhook-signature", signed)
        .send()
        .await;
    match sent {
        Ok(response) if response.status().is_success() => (
            Outcome::Delivered,
            Some(i32::from(response.status().as_u16())),
        ),
        Ok(response) => (
            Outcome::HttpError,
            Some(i32::from(response.status().as_u16())),
        ),
        Err(err) if err.is_timeout() => (Outcome::Timeout, None),
        Err(err) if caused_by_forbidden(&err) => (Outcome::ForbiddenAddress, None),
        Err(_) => (Outcome::ConnectionError, None),
    }
}

fn caused_by_forbidden(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cause {
        if e.is::<ForbiddenAddress>() {
            return true;
        }
        cause = e.source();
    }
    false
}

/// Delivers one claimed firing and records how it went.
async fn deliver(
    pool: &DbPool,
    client: &reqwest::Client,
    policy: &CallbackPolicy,
    settings: &Settings,
    due: Due,
) {
    let started_at = Utc::now();
    let clock = std::time::Instant::now();
    let in_flight = metrics::gauge!("usage_api_webhook_deliveries_in_flight");
    in_flight.increment(1.0);
    let (outcome, response_status) = attempt(client, policy, &due).await;
    in_flight.decrement(1.0);
    let elapsed = clock.elapsed();
    let duration_ms = i32::try_from(elapsed.as_millis()).unwrap_or(i32::MAX);
    metrics::counter!("usage_api_webhook_attempts_total", "outcome" => outcome.as_str())
        .increment(1);
    metrics::histogram!("usage_api_webhook_attempt_seconds").record(elapsed.as_secs_f64());
    let retry_at = (outcome != Outcome::Delivered)
        .then(|| retry_at(settings, &due, Utc::now()))
        .flatten();
    if outcome == Outcome::Delivered {
        metrics::counter!("usage_api_webhook_deliveries_total", "state" => "delivered")
            .increment(1);
        // From the firing's commit (well, its statement) to the receiver's 2xx.
        let lag = (Utc::now() - due.fired_at).to_std().unwrap_or_default();
        metrics::histogram!("usage_api_webhook_delivery_lag_seconds").record(lag.as_secs_f64());
    } else if retry_at.is_none() {
        metrics::counter!("usage_api_webhook_deliveries_total", "state" => "failed").increment(1);
    }
    let attempted = Attempted {
        started_at,
        duration_ms,
        outcome,
        response_status,
        retry_at,
    };
    tracing::info!(
        trigger = %due.trigger_sid,
        period = %due.period_start,
        attempt = due.attempt,
        outcome = outcome.as_str(),
        status = response_status,
        "webhook delivery"
    );
    // The attempt is recorded even if the database was away for a moment: a few tries, then the
    // lease runs out and the delivery is attempted again (at least once, never lost).
    for pause_ms in [0, 200, 1_000, 3_000] {
        tokio::time::sleep(Duration::from_millis(pause_ms)).await;
        match pool.get().await {
            Ok(mut conn) => match outbox::finish(&mut conn, &due, &attempted).await {
                Ok(()) => return,
                Err(err) => tracing::warn!(error = %err, "recording a webhook delivery"),
            },
            Err(err) => tracing::warn!(error = %err, "recording a webhook delivery"),
        }
    }
}

/// When to try again after a failed attempt, or `None` when that would be past the window.
fn retry_at(settings: &Settings, due: &Due, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    let delay = chrono::Duration::from_std(backoff(settings, due.attempt)).ok()?;
    let window = chrono::Duration::from_std(settings.retry_window).ok()?;
    let at = now + delay;
    (at <= due.fired_at + window).then_some(at)
}

/// The lease of a claim: longer than an attempt can take (the timeout), with room to record it.
/// A replica that dies mid-attempt delays that delivery by this much.
fn lease(settings: &Settings) -> f64 {
    (settings.timeout * 2 + Duration::from_secs(5)).as_secs_f64()
}

/// The worker: forever, claims as many due deliveries as it has free slots and delivers each on
/// its own task; sleeps until woken (a rollup fired something), the next due time or `poll`.
pub async fn run_forever(
    pool: DbPool,
    policy: Arc<CallbackPolicy>,
    settings: Settings,
    wake: Arc<Notify>,
) {
    let client = match client(policy.clone(), &settings) {
        Ok(client) => client,
        Err(err) => {
            tracing::error!(error = %err, "the webhook client cannot be built; no deliveries");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(settings.concurrency.max(1)));
    // Signalled by each delivery as it ends, so a worker whose slots were all taken claims more
    // at once rather than after `poll`.
    let freed = Arc::new(Notify::new());
    loop {
        let free = slots.available_permits();
        let pause = if free == 0 {
            settings.poll
        } else {
            match pool.get().await {
                Ok(mut conn) => {
                    claim_and_deliver(
                        &mut conn, &pool, &client, &policy, &settings, &slots, &freed,
                    )
                    .await
                }
                Err(err) => {
                    tracing::warn!(error = %err, "webhook deliveries cannot reach the database");
                    settings.poll
                }
            }
        };
        if pause.is_zero() {
            tokio::task::yield_now().await;
            continue;
        }
        tokio::select! {
            _ = wake.notified() => {}
            _ = freed.notified() => {}
            _ = tokio::time::sleep(pause) => {}
        }
    }
}

/// One round: claims as many due deliveries as there are free slots and starts each on its own
/// task. Returns how long to wait before the next round (zero: more may be due right away).
async fn claim_and_deliver(
    conn: &mut diesel_async::AsyncPgConnection,
    pool: &DbPool,
    client: &reqwest::Client,
    policy: &Arc<CallbackPolicy>,
    settings: &Settings,
    slots: &Arc<Semaphore>,
    freed: &Arc<Notify>,
) -> Duration {
    let free = slots.available_permits();
    let claimed = match outbox::claim(conn, free as i64, lease(settings)).await {
        Ok(claimed) => claimed,
        Err(err) => {
            tracing::warn!(error = %err, "claiming webhook deliveries");
            return settings.poll;
        }
    };
    let full = claimed.len() == free;
    for due in claimed {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            break;
        };
        let (pool, client, policy, settings, freed) = (
            pool.clone(),
            client.clone(),
            policy.clone(),
            settings.clone(),
            freed.clone(),
        );
        tokio::spawn(async move {
            deliver(&pool, &client, &policy, &settings, due).await;
            drop(permit);
            freed.notify_one();
        });
    }
    if full {
        return Duration::ZERO;
    }
    // Sleep until the next retry is due, at most `poll` (other replicas' firings are found then).
    match outbox::next_due(conn).await {
        Ok(Some(at)) => {
            let until = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            settings.poll.min(until.max(Duration::from_millis(20)))
        }
        _ => settings.poll,
    }
}
