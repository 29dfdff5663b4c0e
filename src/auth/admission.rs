//! Per-organization admission, checked once the token has named the organization (in the
//! `Principal` extractor, so every authenticated route is covered): a rate limit (GCRA with
//! `governor`, keyed by organization: `USAGE_API_ORG_RATE` a second with a burst of
//! `USAGE_API_ORG_BURST`) and a concurrency limit (`USAGE_API_ORG_CONCURRENCY` requests in
//! flight). Past either, `429 rate_limited` with `Retry-After` and the `RateLimit-*` headers:
//! one tenant can never take the pool, the workers or the database from the others.
//!
//! A [`Ticket`] is the admitted request's place among its organization's requests in flight:
//! it is kept in the request's extensions until the answer is sent (a streaming export carries
//! it in its body until the last byte).

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::error::{ApiError, Refusal, RefusalReason};

/// The limits of one organization's traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Requests a second, sustained.
    pub rate: NonZeroU32,
    /// Requests at once above the rate.
    pub burst: NonZeroU32,
    /// Requests in flight at once.
    pub concurrency: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
            concurrency: 8,
        }
    }
}

/// How often the rate limiter forgets organizations that have been quiet for a while.
const RETAIN_EVERY: u64 = 4096;

pub struct Admission {
    limits: Limits,
    rate: DefaultKeyedRateLimiter<String>,
    in_flight: Mutex<HashMap<String, u32>>,
    admitted: AtomicU64,
}

impl Admission {
    pub fn new(limits: Limits) -> Arc<Admission> {
        let quota = Quota::per_second(limits.rate).allow_burst(limits.burst);
        Arc::new(Admission {
            limits,
            rate: RateLimiter::keyed(quota),
            in_flight: Mutex::new(HashMap::new()),
            admitted: AtomicU64::new(0),
        })
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Admits one request of `organization`, or says why not.
    pub fn admit(self: &Arc<Self>, organization: &str) -> Result<Ticket, ApiError> {
        self.admit_or_refuse(organization).map_err(|refusal| {
            metrics::counter!("usage_api_rate_limited_total", "reason" => refusal.reason.as_str())
                .increment(1);
            ApiError::RateLimited(refusal)
        })
    }

    fn admit_or_refuse(self: &Arc<Self>, organization: &str) -> Result<Ticket, Refusal> {
        if self.admitted.fetch_add(1, Ordering::Relaxed) % RETAIN_EVERY == RETAIN_EVERY - 1 {
            self.rate.retain_recent();
        }
        let key = organization.to_owned();
        if let Err(not_until) = self.rate.check_key(&key) {
            return Err(Refusal {
                reason: RefusalReason::Rate,
                limit: self.limits.burst.get(),
                retry_after: not_until.wait_time_from(DefaultClock::default().now()),
            });
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let count = in_flight.entry(key.clone()).or_insert(0);
        if *count >= self.limits.concurrency {
            return Err(Refusal {
                reason: RefusalReason::Concurrency,
                limit: self.limits.concurrency,
                retry_after: Duration::from_secs(1),
            });
        }
        *count += 1;
        Ok(Ticket {
            admission: self.clone(),
            organization: key,
        })
    }

    /// Requests of `organization` in flight now.
    pub fn in_flight(&self, organization: &str) -> u32 {
        let in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.get(organization).copied().unwrap_or(0)
    }

    fn release(&self, organization: &str) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = in_flight.get_mut(organization) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                in_flight.remove(organization);
            }
        }
    }
}

/// An admitted request's place among its organization's requests in flight, given back when
/// dropped.
pub struct Ticket {
    admission: Arc<Admission>,
    organization: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.release(&self.organization);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(rate: u32, burst: u32, concurrency: u32) -> Limits {
        Limits {
            rate: NonZeroU32::new(rate).unwrap(),
            burst: NonZeroU32::new(burst).unwrap(),
            concurrency,
        }
    }

    #[test]
    fn the_burst_then_the_rate_per_organization() {
        let admission = Admission::new(limits(1, 3, 100));
        let tickets: Vec<_> = (0..3).map(|_| admission.admit("a").unwrap()).collect();
        let Err(ApiError::RateLimited(refusal)) = admission.admit("a") else {
            panic!("the 4th request within the burst was admitted")
        };
        assert_eq!(refusal.reason, RefusalReason::Rate);
        assert_eq!(refusal.limit, 3);
        assert!(
            refusal.retry_after > Duration::ZERO && refusal.retry_after <= Duration::from_secs(1)
        );
        // Another organization has a bucket of its own.
        assert!(admission.admit("b").is_ok());
        drop(tickets);
    }

    #[test]
    fn requests_in_flight_are_counted_until_their_ticket_is_dropped() {
        let admission = Admission::new(limits(1000, 1000, 2));
        let first = admission.admit("a").unwrap();
        let second = admission.admit("a").unwrap();
        let Err(ApiError::RateLimited(refusal)) = admission.admit("a") else {
            panic!("a third request in flight was admitted")
        };
        assert_eq!(refusal.reason, RefusalReason::Concurrency);
        assert!(
            admission.admit("b").is_ok(),
            "another organization is not held up"
        );
        assert_eq!(admission.in_flight("a"), 2);
        drop(first);
        let third = admission.admit("a").unwrap();
        drop((second, third));
        assert_eq!(admission.in_flight("a"), 0);
        assert!(
            admission.in_flight.lock().unwrap().is_empty(),
            "no entry is left behind"
        );
    }
}
