//! Per-organization admission, checked once the token has named the organization (in the
//! `Principal` extractor, so every authenticated route is covered): a rate limit (GCRA with
//! `governor`, keyed by organization: `USAGE_API_ORG_RATE` a second with a burst of
//! `USAGE_API_ORG_BURST`) and a concurrency limit (`USAGE_API_ORG_CONCURRENCY` requests in
//! flight). Past either, `429 rate_limited` with `Retry-After` and the `RateLimit-*` headers:
//! one tenant can never take the pool, the workers or the database from the others.
//!
//! Of an organization's admitted requests, only `USAGE_API_ORG_EXECUTING` run at once; the
//! others wait their turn, first come first served, within their deadline. Connections are not
//! what runs out on a busy database, cores are: one organization's eight heavy sorts at once
//! would take every core of a small database server, and the other organizations' quick reads
//! would queue behind them in the kernel's run queue (bench/load.sh: the quiet organizations'
//! p99 7× worse with eight at once, 1.2× with one).
//!
//! A [`Ticket`] is the admitted request's place among its organization's requests in flight:
//! it is kept in the request's extensions until the answer is sent (a streaming export carries
//! it in its body until the last byte). Its [`Turn`] is its place among the requests that run;
//! a streaming export gives it back once its first rows are read (the sort, if any, is done).

use std::cell::RefCell;
use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

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
    /// Requests running at once; the other admitted ones wait their turn.
    pub executing: NonZeroU32,
    /// How long a request waits for its turn before it is refused (`429`): half its deadline,
    /// so that one that gets its turn has time to finish. Waiting to the end would only hand
    /// the turns to requests too late to answer, and answer none.
    pub turn_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rate: NonZeroU32::new(100).unwrap_or(NonZeroU32::MIN),
            burst: NonZeroU32::new(200).unwrap_or(NonZeroU32::MIN),
            concurrency: 8,
            executing: NonZeroU32::new(crate::config::default_org_executing())
                .unwrap_or(NonZeroU32::MIN),
            turn_wait: Duration::from_secs(5),
        }
    }
}

impl Limits {
    /// `rate` requests a second with a burst of `burst`, `concurrency` in flight and as many
    /// running at once (0 reads as 1), a turn waited for 5 s at most.
    pub fn new(rate: u32, burst: u32, concurrency: u32) -> Limits {
        let positive = |n: u32| NonZeroU32::new(n).unwrap_or(NonZeroU32::MIN);
        Limits {
            rate: positive(rate),
            burst: positive(burst),
            concurrency,
            executing: positive(concurrency),
            turn_wait: Duration::from_secs(5),
        }
    }
}

/// One organization's requests in this replica: how many are in flight, and the turns of those
/// that run.
struct Organization {
    in_flight: u32,
    turns: Arc<Semaphore>,
}

/// How often the rate limiter forgets organizations that have been quiet for a while.
const RETAIN_EVERY: u64 = 4096;

pub struct Admission {
    limits: Limits,
    rate: DefaultKeyedRateLimiter<String>,
    in_flight: Mutex<HashMap<String, Organization>>,
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
        let executing = self.limits.executing.get();
        let org = in_flight
            .entry(key.clone())
            .or_insert_with(|| Organization {
                in_flight: 0,
                turns: Arc::new(Semaphore::new(
                    usize::try_from(executing).unwrap_or(usize::MAX),
                )),
            });
        if org.in_flight >= self.limits.concurrency {
            return Err(Refusal {
                reason: RefusalReason::Concurrency,
                limit: self.limits.concurrency,
                retry_after: Duration::from_secs(1),
            });
        }
        org.in_flight += 1;
        Ok(Ticket {
            admission: self.clone(),
            turns: org.turns.clone(),
            organization: key,
            turn: RefCell::new(None),
        })
    }

    /// Requests of `organization` in flight now.
    pub fn in_flight(&self, organization: &str) -> u32 {
        let in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        in_flight.get(organization).map_or(0, |org| org.in_flight)
    }

    /// Every turn of an organization is held by a request with a ticket, so once its last
    /// ticket is given back nothing refers to its entry any more.
    fn release(&self, organization: &str) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(org) = in_flight.get_mut(organization) {
            org.in_flight = org.in_flight.saturating_sub(1);
            if org.in_flight == 0 {
                in_flight.remove(organization);
            }
        }
    }
}

/// An admitted request's place among its organization's requests in flight, given back when
/// dropped; and, once [`Ticket::wait_turn`] has returned, its turn to run.
pub struct Ticket {
    admission: Arc<Admission>,
    organization: String,
    turns: Arc<Semaphore>,
    turn: RefCell<Option<Turn>>,
}

/// A request's turn among its organization's requests that run at once; the next waiting
/// request runs when it is dropped.
pub struct Turn(#[allow(dead_code)] OwnedSemaphorePermit);

impl Ticket {
    /// Waits until fewer than `USAGE_API_ORG_EXECUTING` of the organization's requests run
    /// (first come, first served), then holds the turn until the ticket is dropped or
    /// [`Ticket::take_turn`] takes it. Past [`Limits::turn_wait`], `429 rate_limited`.
    pub async fn wait_turn(&self) -> Result<(), ApiError> {
        let turns = self.turns.clone();
        let permit = match turns.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                metrics::counter!("usage_api_requests_queued_total").increment(1);
                let limits = self.admission.limits;
                match tokio::time::timeout(limits.turn_wait, turns.acquire_owned()).await {
                    Ok(Ok(permit)) => permit,
                    // Never closed: it lives as long as a ticket refers to it.
                    Ok(Err(_)) => return Ok(()),
                    Err(_) => {
                        let reason = RefusalReason::Turn;
                        metrics::counter!("usage_api_rate_limited_total", "reason" => reason.as_str())
                            .increment(1);
                        return Err(ApiError::RateLimited(Refusal {
                            reason,
                            limit: limits.executing.get(),
                            retry_after: Duration::from_secs(1),
                        }));
                    }
                }
            }
        };
        *self.turn.borrow_mut() = Some(Turn(permit));
        Ok(())
    }

    /// The request's turn, to be given back before the ticket is (a streaming export's, once
    /// its first rows are read).
    pub fn take_turn(&self) -> Option<Turn> {
        self.turn.borrow_mut().take()
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.release(&self.organization);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_burst_then_the_rate_per_organization() {
        let admission = Admission::new(Limits::new(1, 3, 100));
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
        let admission = Admission::new(Limits::new(1000, 1000, 2));
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

    #[tokio::test]
    async fn admitted_requests_run_in_turns_first_come_first_served() {
        let admission = Admission::new(Limits {
            executing: NonZeroU32::new(1).unwrap(),
            ..Limits::new(1000, 1000, 8)
        });
        let soon = Duration::from_millis(100);
        let first = admission.admit("a").unwrap();
        first.wait_turn().await.unwrap();
        let second = admission.admit("a").unwrap();
        let third = admission.admit("a").unwrap();
        let other = admission.admit("b").unwrap();
        assert!(
            tokio::time::timeout(soon, other.wait_turn()).await.is_ok(),
            "another organization's request runs at once"
        );
        let mut second_turn = Box::pin(second.wait_turn());
        assert!(
            tokio::time::timeout(soon, &mut second_turn).await.is_err(),
            "a second request ran beside the first"
        );
        let mut third_turn = Box::pin(third.wait_turn());
        assert!(tokio::time::timeout(soon, &mut third_turn).await.is_err());
        // The first request's turn given back (as a streaming export does), the one that came
        // next runs, and the one after it still waits.
        let turn = first.take_turn();
        assert!(turn.is_some());
        drop(turn);
        assert!(tokio::time::timeout(soon, &mut second_turn).await.is_ok());
        assert!(tokio::time::timeout(soon, &mut third_turn).await.is_err());
        drop(second_turn);
        drop(second);
        assert!(tokio::time::timeout(soon, &mut third_turn).await.is_ok());
        assert_eq!(admission.in_flight("a"), 2);
        drop(third_turn);
        drop((first, third, other));
        assert!(admission.in_flight.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_request_that_waits_too_long_for_its_turn_is_refused() {
        let admission = Admission::new(Limits {
            executing: NonZeroU32::new(1).unwrap(),
            turn_wait: Duration::from_millis(50),
            ..Limits::new(1000, 1000, 8)
        });
        let first = admission.admit("a").unwrap();
        first.wait_turn().await.unwrap();
        let second = admission.admit("a").unwrap();
        let Err(ApiError::RateLimited(refusal)) = second.wait_turn().await else {
            panic!("the second request got a turn while the first held the only one")
        };
        assert_eq!(refusal.reason, RefusalReason::Turn);
        assert_eq!(refusal.limit, 1);
        drop(first);
        assert!(second.wait_turn().await.is_ok());
    }
}
