//! The client-side rate limits: keep a full-speed run under a ledger's per-business limits so
//! that 429s are the exception.
//!
//! - [`RateLimiter`]: requests a minute, using `governor` (GCRA);
//! - [`ConcurrencyLimit`]: requests in flight at once (a semaphore);
//! - [`DailyBudget`]: requests in any rolling 24 hours, counted on the crate's [`Clock`]; when it
//!   is spent the caller gets how long to wait instead of a request (Xero: 5,000 a day per
//!   organisation, xero-api.md section 3).
//!
//! A GCRA limiter with rate `r` a minute and burst `b` lets at most `r + b` requests through in
//! any 60-second window. To stay under a limit of `L` a minute in *every* window (Sage v3 documents
//! 200 a minute per business, sage-api.md 3.7), the limiter runs at `r = L − b`: with the defaults,
//! 190 a minute plus a burst of 10 — never more than 200 in any minute, 95 % of the limit when
//! saturated.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use std::{collections::VecDeque, sync::Mutex};

use chrono::{DateTime, Utc};
use governor::{Quota, RateLimiter as Gcra, clock::DefaultClock, state::InMemoryState, state::direct::NotKeyed};

use crate::clock::Clock;

/// Rate-limit settings of one business.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateConfig {
    /// The ledger's limit: requests a minute per business.
    pub requests_per_minute: u32,
    /// Requests allowed back to back before pacing starts.
    pub burst: u32,
}

impl Default for RateConfig {
    /// 200 a minute (the documented Sage v3 figure) with a burst of 10.
    fn default() -> Self {
        Self { requests_per_minute: 200, burst: 10 }
    }
}

/// The GCRA quota of `config` (see the module docs); `None` when the limit is 0.
pub fn quota(config: RateConfig) -> Option<Quota> {
    let limit = NonZeroU32::new(config.requests_per_minute)?;
    let burst = config.burst.clamp(1, limit.get());
    let rate = limit.get().saturating_sub(burst).max(1);
    let period = Duration::from_secs(60) / rate;
    Some(
        Quota::with_period(period)
            .unwrap_or_else(|| Quota::per_minute(limit))
            .allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN)),
    )
}

/// A shareable per-business limiter (clone it to share one budget between providers).
#[derive(Debug, Clone)]
pub struct RateLimiter {
    inner: Option<Arc<Gcra<NotKeyed, InMemoryState, DefaultClock>>>,
    config: RateConfig,
}

impl RateLimiter {
    /// A limiter that never waits (tests of other things).
    pub fn unlimited() -> Self {
        Self { inner: None, config: RateConfig { requests_per_minute: 0, burst: 0 } }
    }

    /// A limiter for `config`; it never waits when the limit is 0.
    pub fn new(config: RateConfig) -> Self {
        match quota(config) {
            Some(q) => Self { inner: Some(Arc::new(Gcra::direct(q))), config },
            None => Self::unlimited(),
        }
    }

    /// Waits until one more request is allowed.
    pub async fn until_ready(&self) {
        if let Some(l) = &self.inner {
            l.until_ready().await;
        }
    }

    /// The settings.
    pub fn config(&self) -> RateConfig {
        self.config
    }
}

/// At most `limit` requests in flight at once (clone it to share the limit).
#[derive(Debug, Clone)]
pub struct ConcurrencyLimit {
    inner: Option<Arc<tokio::sync::Semaphore>>,
    limit: usize,
}

impl ConcurrencyLimit {
    /// `limit` at once; 0 means unlimited.
    pub fn new(limit: usize) -> Self {
        Self { inner: (limit > 0).then(|| Arc::new(tokio::sync::Semaphore::new(limit))), limit }
    }

    /// Waits for a slot; the slot is released when the permit is dropped.
    pub async fn acquire(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        match &self.inner {
            Some(s) => Arc::clone(s).acquire_owned().await.ok(),
            None => None,
        }
    }

    /// The limit (0: unlimited).
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Slots free now.
    pub fn available(&self) -> usize {
        self.inner.as_ref().map_or(usize::MAX, |s| s.available_permits())
    }
}

/// What the ledger said is left, and when.
type Observed = (u32, DateTime<Utc>);

/// Requests in any rolling 24 hours, on the crate's clock (clone it to share one budget).
#[derive(Debug, Clone)]
pub struct DailyBudget {
    limit: u32,
    spent: Arc<Mutex<VecDeque<DateTime<Utc>>>>,
    /// What the ledger itself said is left (`X-DayLimit-Remaining`), with when it said so.
    remaining: Arc<Mutex<Option<Observed>>>,
}

impl DailyBudget {
    /// A budget of `limit` requests a day; 0 means unlimited.
    pub fn new(limit: u32) -> Self {
        Self { limit, spent: Arc::default(), remaining: Arc::default() }
    }

    /// The limit (0: unlimited).
    pub fn limit(&self) -> u32 {
        self.limit
    }

    fn window() -> chrono::Duration {
        chrono::Duration::hours(24)
    }

    /// Takes one request from the budget at `now`, or says how long until one is free again.
    ///
    /// # Errors
    /// The wait, when the budget is spent (by this client's count or the ledger's own).
    pub fn take(&self, now: DateTime<Utc>) -> std::result::Result<(), Duration> {
        let ledger_says_spent_at = self
            .remaining
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .filter(|(left, at)| *left == 0 && now - *at < Self::window())
            .map(|(_, at)| at);
        if self.limit == 0 {
            // No client-side count, but the ledger's own count still holds.
            return match ledger_says_spent_at {
                Some(at) => Err((at + Self::window() - now)
                    .to_std()
                    .unwrap_or(Duration::from_secs(60))
                    .max(Duration::from_secs(1))),
                None => Ok(()),
            };
        }
        let mut spent = self.spent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        while spent.front().is_some_and(|t| now - *t >= Self::window()) {
            spent.pop_front();
        }
        if spent.len() >= self.limit as usize || ledger_says_spent_at.is_some() {
            let oldest = spent.front().copied().unwrap_or(now);
            let wait = (oldest + Self::window() - now).to_std().unwrap_or(Duration::from_secs(60));
            return Err(wait.max(Duration::from_secs(1)));
        }
        spent.push_back(now);
        Ok(())
    }

    /// Records what the ledger says is left of its daily allowance (`X-DayLimit-Remaining`).
    pub fn observe_remaining(&self, remaining: u32, now: DateTime<Utc>) {
        *self.remaining.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((remaining, now));
    }

    /// True when the ledger itself said its allowance is spent (`X-DayLimit-Remaining: 0`) within
    /// the last 24 hours.
    pub fn spent_by_ledger(&self, now: DateTime<Utc>) -> bool {
        self.remaining
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some_and(|(left, at)| left == 0 && now - at < Self::window())
    }

    /// Requests counted in the 24 hours before `now`.
    pub fn used(&self, now: DateTime<Utc>) -> usize {
        let spent = self.spent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        spent.iter().filter(|t| now - **t < Self::window()).count()
    }
}

/// The three per-organisation limits of a ledger such as Xero, shared by every request of one
/// organisation: a minute rate, requests in flight, and a daily budget.
#[derive(Debug, Clone)]
pub struct TenantLimits {
    /// Requests a minute.
    pub minute: RateLimiter,
    /// Requests at once.
    pub concurrency: ConcurrencyLimit,
    /// Requests a day.
    pub daily: DailyBudget,
    /// The clock of the daily budget.
    pub clock: Arc<dyn Clock>,
}

impl TenantLimits {
    /// No limit at all (tests of other things).
    pub fn unlimited(clock: Arc<dyn Clock>) -> Self {
        Self {
            minute: RateLimiter::unlimited(),
            concurrency: ConcurrencyLimit::new(0),
            daily: DailyBudget::new(0),
            clock,
        }
    }
}

#[cfg(test)]
mod tests {
    use governor::clock::FakeRelativeClock;

    use super::*;

    #[test]
    fn never_more_than_the_limit_in_any_minute() {
        // 200 a minute with a burst of 10: the limiter runs at 190 a minute plus the burst.
        let clock = FakeRelativeClock::default();
        let l = Gcra::direct_with_clock(quota(RateConfig::default()).unwrap(), clock.clone());
        let mut sent = 0;
        // Offer a request every millisecond for 60 s: count what gets through.
        for _ in 0..60_000 {
            if l.check().is_ok() {
                sent += 1;
            }
            clock.advance(Duration::from_millis(1));
        }
        // 10 at once, then one every 60 s / 190 = 315.8 ms: 10 + 189 = 199 in the first minute.
        assert_eq!(sent, 199);
        assert!(sent <= 200);
    }

    #[test]
    fn burst_then_pacing() {
        let clock = FakeRelativeClock::default();
        let l =
            Gcra::direct_with_clock(quota(RateConfig { requests_per_minute: 600, burst: 5 }).unwrap(), clock.clone());
        for _ in 0..5 {
            assert!(l.check().is_ok(), "the burst is immediate");
        }
        assert!(l.check().is_err(), "then paced");
        // One every 60 s / 595 ≈ 100.84 ms.
        clock.advance(Duration::from_millis(100));
        assert!(l.check().is_err());
        clock.advance(Duration::from_millis(1));
        assert!(l.check().is_ok());
    }

    #[test]
    fn zero_means_unlimited() {
        assert!(quota(RateConfig { requests_per_minute: 0, burst: 0 }).is_none());
    }

    #[test]
    fn daily_budget_counts_a_rolling_day() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z").unwrap().with_timezone(&Utc);
        let budget = DailyBudget::new(3);
        for i in 0..3 {
            assert!(budget.take(t0 + chrono::Duration::hours(i)).is_ok(), "request {i} is within the budget");
        }
        // The fourth, at 13:00, waits until the first (10:00) leaves the window: 21 hours.
        assert_eq!(budget.take(t0 + chrono::Duration::hours(3)), Err(Duration::from_secs(21 * 3600)));
        // At 10:00 the next day the first one has left the window.
        assert!(budget.take(t0 + chrono::Duration::hours(24)).is_ok());
        assert_eq!(budget.used(t0 + chrono::Duration::hours(24)), 3);
        assert!(DailyBudget::new(0).take(t0).is_ok(), "0 is unlimited");
    }

    #[test]
    fn the_ledgers_own_count_spends_the_budget() {
        let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z").unwrap().with_timezone(&Utc);
        let budget = DailyBudget::new(5000);
        budget.observe_remaining(0, t0);
        assert!(budget.take(t0 + chrono::Duration::minutes(1)).is_err(), "the ledger said nothing is left");
        budget.observe_remaining(10, t0 + chrono::Duration::minutes(2));
        assert!(budget.take(t0 + chrono::Duration::minutes(3)).is_ok());
    }

    #[tokio::test]
    async fn concurrency_limit_holds_slots_until_dropped() {
        let limit = ConcurrencyLimit::new(2);
        let a = limit.acquire().await;
        let b = limit.acquire().await;
        assert!(a.is_some() && b.is_some());
        assert_eq!(limit.available(), 0);
        drop(a);
        assert_eq!(limit.available(), 1);
        assert!(ConcurrencyLimit::new(0).acquire().await.is_none(), "0 is unlimited");
    }
}
