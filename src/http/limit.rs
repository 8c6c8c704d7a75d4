//! The client-side rate limits: keep a full-speed run under a ledger's per-business limits so
//! that 429s are the exception.
//!
//! - [`RateLimiter`]: requests a minute (GCRA, below);
//! - [`ConcurrencyLimit`]: requests in flight at once (a semaphore);
//! - [`DailyBudget`]: requests in any rolling 24 hours, counted on the crate's [`Clock`]; when it
//!   is spent the caller gets how long to wait instead of a request (Xero: 5,000 a day per
//!   organisation, xero-api.md section 3).
//!
//! Both kinds of [`RateLimiter`] use the same GCRA ("generic cell rate algorithm") pacing
//! ([`Pacing`]):
//!
//! - **in process** ([`RateLimiter::new`]): `governor`, for one process (every provider of a
//!   business in that process shares one budget by cloning the limiter);
//! - **shared** ([`RateLimiter::shared`]): a budget kept outside the process ([`SharedLimit`]),
//!   such as `store::postgres::SharedRateLimiter` (feature `postgres`), so that several worker
//!   processes together stay under one business's limit.
//!
//! # The math
//!
//! A GCRA limiter with an emission interval `T` and a burst `b` keeps one number per business,
//! the *theoretical arrival time* `tat`. A request arriving at `t` gets its permit at
//! `a = max(t, tat − τ)`, where `τ = (b − 1)·T` is the tolerance, and moves `tat` to
//! `max(tat, t) + T`. Each permit moves `tat` forward by at least `T`, so for two permits `j < k`
//! of one business, `a_k ≥ tat_k − τ ≥ tat_{j+1} + (k − j − 1)·T − τ ≥ a_j + (k − j)·T − τ`. Hence
//! `n` permits within a window of length `W` need `(n − 1)·T − (b − 1)·T ≤ W`:
//!
//! > at most `b + ⌊W / T⌋` permits in any window of length `W` (closed at both ends).
//!
//! To stay under a limit of `L` a minute in *every* 60-second window (Sage v3 documents 200 a
//! minute per business, sage-api.md 3.7), the limiter runs at `r = L − b` a minute, that is
//! `T = ⌈60 s / (L − b)⌉` (rounded up to the microsecond, never faster): at most
//! `b + (L − b) = L` in any minute. With the defaults, 190 a minute plus a burst of 10 — never
//! more than 200 in any minute, 95 % of the limit when saturated. The burst is kept below the
//! limit (`1 ≤ b ≤ L − 1`, when `L ≥ 2`).
//!
//! The bound is on permits: a request is sent at or after its permit, and a process that is
//! slow to send after its permit (scheduling, a slow token refresh) can still bunch up with later
//! ones, as with any client-side limiter; the retry decision handles the rare 429.

use std::{
    fmt,
    num::NonZeroU32,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use governor::{Quota, RateLimiter as Governor, clock::DefaultClock, state::InMemoryState, state::direct::NotKeyed};

use crate::error::Result;
use std::{collections::VecDeque, sync::Mutex};

use chrono::{DateTime, Utc};

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

const MINUTE_MICROS: u64 = 60_000_000;

/// The GCRA pacing of a [`RateConfig`] (see the module docs): an emission interval and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pacing {
    /// `T`, in microseconds: one permit per interval once the burst is spent.
    pub interval_micros: u64,
    /// `b`: permits allowed back to back.
    pub burst: u32,
}

impl Pacing {
    /// The pacing that keeps under `config` in every minute; `None` when the limit is 0
    /// (unlimited).
    pub fn of(config: RateConfig) -> Option<Self> {
        let limit = NonZeroU32::new(config.requests_per_minute)?.get();
        let burst = config.burst.clamp(1, limit.saturating_sub(1).max(1));
        let rate = limit.saturating_sub(burst).max(1);
        Some(Self { interval_micros: MINUTE_MICROS.div_ceil(u64::from(rate)), burst })
    }

    /// `T` as a duration.
    pub fn interval(&self) -> Duration {
        Duration::from_micros(self.interval_micros)
    }

    /// `τ = (b − 1)·T`, in microseconds.
    pub fn tolerance_micros(&self) -> u64 {
        self.interval_micros.saturating_mul(u64::from(self.burst.saturating_sub(1)))
    }

    /// One GCRA step for a request at `now` given the stored `tat` (`None` for a business never
    /// seen), all in microseconds on one clock: returns the new `tat` and the permit time.
    pub fn reserve(&self, tat: Option<i64>, now: i64) -> (i64, i64) {
        let interval = i64::try_from(self.interval_micros).unwrap_or(i64::MAX);
        let new_tat = tat.unwrap_or(now).max(now).saturating_add(interval);
        (new_tat, self.permit_at(new_tat, now))
    }

    /// The permit time of a request at `now` that moved the `tat` to `new_tat`:
    /// `max(now, new_tat − T − τ)` (equal to `max(now, tat − τ)` with the old `tat`). This is how a
    /// store that updates `tat` atomically and returns the new value finds the permit.
    pub fn permit_at(&self, new_tat: i64, now: i64) -> i64 {
        let back = i64::try_from(self.interval_micros.saturating_add(self.tolerance_micros())).unwrap_or(i64::MAX);
        now.max(new_tat.saturating_sub(back))
    }
}

/// The GCRA quota of `config` for `governor` (see the module docs); `None` when the limit is 0.
pub fn quota(config: RateConfig) -> Option<Quota> {
    let pacing = Pacing::of(config)?;
    Some(
        Quota::with_period(pacing.interval())
            .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(pacing.burst).unwrap_or(NonZeroU32::MIN)),
    )
}

/// A rate-limit budget kept outside this process and shared by several workers (one business's
/// budget in a database, for instance). Every sharer must use the same [`RateConfig`].
#[async_trait]
pub trait SharedLimit: fmt::Debug + Send + Sync {
    /// Takes the next permit of the shared budget and returns how long to wait before using it
    /// (zero when it may be used now).
    ///
    /// # Errors
    /// When the shared budget cannot be reached; [`RateLimiter`] then paces this process alone
    /// until it can again.
    async fn reserve(&self) -> Result<Duration>;

    /// The settings the budget keeps to.
    fn config(&self) -> RateConfig;
}

type Local = Governor<NotKeyed, InMemoryState, DefaultClock>;

#[derive(Clone)]
enum Backend {
    Unlimited,
    Local(Arc<Local>),
    Shared {
        limit: Arc<dyn SharedLimit>,
        /// Paces this process alone while the shared budget cannot be reached.
        fallback: Arc<Local>,
        /// Whether the last reservation failed (to log the change once, not every request).
        degraded: Arc<AtomicBool>,
    },
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unlimited => f.write_str("Unlimited"),
            Self::Local(_) => f.write_str("Local"),
            Self::Shared { limit, .. } => f.debug_tuple("Shared").field(limit).finish(),
        }
    }
}

/// A per-business limiter: in this process (clone it to share one budget between providers) or
/// shared with other processes through a [`SharedLimit`].
#[derive(Debug, Clone)]
pub struct RateLimiter {
    backend: Backend,
    config: RateConfig,
}

impl RateLimiter {
    /// A limiter that never waits (tests of other things).
    pub fn unlimited() -> Self {
        Self { backend: Backend::Unlimited, config: RateConfig { requests_per_minute: 0, burst: 0 } }
    }

    /// An in-process limiter for `config`; it never waits when the limit is 0.
    pub fn new(config: RateConfig) -> Self {
        match quota(config) {
            Some(q) => Self { backend: Backend::Local(Arc::new(Governor::direct(q))), config },
            None => Self::unlimited(),
        }
    }

    /// A limiter that takes its permits from a budget shared with other processes. While the
    /// budget cannot be reached it logs a warning and paces this process alone with the same
    /// settings (so the workers together may then exceed the limit, and the retry decision
    /// handles the 429s). It never waits when the limit is 0.
    pub fn shared(limit: Arc<dyn SharedLimit>) -> Self {
        let config = limit.config();
        match quota(config) {
            Some(q) => Self {
                backend: Backend::Shared {
                    limit,
                    fallback: Arc::new(Governor::direct(q)),
                    degraded: Arc::new(AtomicBool::new(false)),
                },
                config,
            },
            None => Self::unlimited(),
        }
    }

    /// Whether the budget is shared with other processes.
    pub fn is_shared(&self) -> bool {
        matches!(self.backend, Backend::Shared { .. })
    }

    /// Waits until one more request is allowed.
    pub async fn until_ready(&self) {
        match &self.backend {
            Backend::Unlimited => {}
            Backend::Local(l) => l.until_ready().await,
            Backend::Shared { limit, fallback, degraded } => match limit.reserve().await {
                Ok(wait) => {
                    if degraded.swap(false, Ordering::Relaxed) {
                        tracing::info!(limit = ?limit, "the shared rate limit is back");
                    }
                    if !wait.is_zero() {
                        tokio::time::sleep(wait).await;
                    }
                }
                Err(e) => {
                    if !degraded.swap(true, Ordering::Relaxed) {
                        tracing::warn!(limit = ?limit, error = %e, "the shared rate limit cannot be reached; pacing this process alone");
                    }
                    fallback.until_ready().await;
                }
            },
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
    use std::sync::Mutex;

    use governor::clock::FakeRelativeClock;
    use proptest::prelude::*;

    use super::*;
    use crate::error::Error;

    #[test]
    fn never_more_than_the_limit_in_any_minute() {
        // 200 a minute with a burst of 10: the limiter runs at 190 a minute plus the burst.
        let clock = FakeRelativeClock::default();
        let l = Governor::direct_with_clock(quota(RateConfig::default()).unwrap(), clock.clone());
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
        let l = Governor::direct_with_clock(
            quota(RateConfig { requests_per_minute: 600, burst: 5 }).unwrap(),
            clock.clone(),
        );
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
        assert!(Pacing::of(RateConfig { requests_per_minute: 0, burst: 5 }).is_none());
    }

    #[test]
    fn pacing_of_the_defaults() {
        let p = Pacing::of(RateConfig::default()).unwrap();
        // ⌈60 s / 190⌉ = 315 790 µs; τ = 9·T.
        assert_eq!(p, Pacing { interval_micros: 315_790, burst: 10 });
        assert_eq!(p.tolerance_micros(), 9 * 315_790);
        // The burst is kept below the limit, and a limit of 1 still paces.
        assert_eq!(Pacing::of(RateConfig { requests_per_minute: 5, burst: 50 }).unwrap().burst, 4);
        assert_eq!(
            Pacing::of(RateConfig { requests_per_minute: 1, burst: 0 }).unwrap(),
            Pacing { interval_micros: 60_000_000, burst: 1 }
        );
    }

    #[test]
    fn reserve_gives_the_burst_then_one_per_interval() {
        let p = Pacing::of(RateConfig { requests_per_minute: 20, burst: 4 }).unwrap();
        assert_eq!(p.interval_micros, 3_750_000);
        let mut tat = None;
        let permits: Vec<i64> = (0..8)
            .map(|_| {
                let (next, at) = p.reserve(tat, 0);
                tat = Some(next);
                at
            })
            .collect();
        assert_eq!(permits, vec![0, 0, 0, 0, 3_750_000, 7_500_000, 11_250_000, 15_000_000]);
        // After a long pause the burst is back.
        let later = 600_000_000;
        let (next, at) = p.reserve(tat, later);
        assert_eq!((next, at), (later + 3_750_000, later));
    }

    /// The largest number of permits in any closed window of `window` µs.
    fn busiest_window(permits: &mut [i64], window: i64) -> usize {
        permits.sort_unstable();
        let mut best = 0;
        let mut start = 0;
        for end in 0..permits.len() {
            while permits[end] - permits[start] > window {
                start += 1;
            }
            best = best.max(end - start + 1);
        }
        best
    }

    proptest! {
        /// Workers that each ask at random times (and then wait for their permit) never get more
        /// than the limit in any minute, whatever the interleaving, and a saturated business gets
        /// close to it.
        #[test]
        fn interleaved_workers_never_exceed_the_limit(
            limit in 2u32..400,
            burst in 0u32..40,
            gaps in proptest::collection::vec((0usize..4, 0i64..2_000_000), 1..600),
        ) {
            let p = Pacing::of(RateConfig { requests_per_minute: limit, burst }).unwrap();
            let mut tat = None;
            // Each worker's clock: it asks again only after its previous permit.
            let mut ready = [0i64; 4];
            let mut permits = Vec::new();
            for (worker, gap) in gaps {
                let now = ready[worker] + gap;
                let (next, at) = p.reserve(tat, now);
                prop_assert!(at >= now);
                tat = Some(next);
                ready[worker] = at;
                permits.push(at);
            }
            let most = busiest_window(&mut permits, 60_000_000);
            prop_assert!(most <= usize::try_from(limit).unwrap(), "{most} permits in one minute, limit {limit}");
        }
    }

    #[test]
    fn a_saturated_business_gets_the_limit_in_the_first_minute() {
        let config = RateConfig { requests_per_minute: 200, burst: 10 };
        let p = Pacing::of(config).unwrap();
        let mut tat = None;
        let mut permits = Vec::new();
        for _ in 0..1000 {
            let (next, at) = p.reserve(tat, 0);
            tat = Some(next);
            permits.push(at);
        }
        // The burst at 0, then one every ⌈60 s / 190⌉ = 315 790 µs: 189 more by 60 s (the interval
        // is rounded up, which costs the 190th), and no other minute is busier.
        assert_eq!(permits.iter().filter(|&&a| a <= 60_000_000).count(), 199);
        assert_eq!(busiest_window(&mut permits, 60_000_000), 199);
    }

    #[derive(Debug)]
    struct FlakyLimit {
        fail: AtomicBool,
        calls: Mutex<u32>,
    }

    #[async_trait]
    impl SharedLimit for FlakyLimit {
        async fn reserve(&self) -> Result<Duration> {
            *self.calls.lock().unwrap() += 1;
            if self.fail.load(Ordering::SeqCst) {
                Err(Error::database("unreachable", true, None))
            } else {
                Ok(Duration::from_millis(1))
            }
        }

        fn config(&self) -> RateConfig {
            RateConfig { requests_per_minute: 6000, burst: 5 }
        }
    }

    #[tokio::test]
    async fn a_shared_limiter_asks_the_budget_and_falls_back_when_it_is_unreachable() {
        let flaky = Arc::new(FlakyLimit { fail: AtomicBool::new(false), calls: Mutex::new(0) });
        let l = RateLimiter::shared(Arc::clone(&flaky) as Arc<dyn SharedLimit>);
        assert!(l.is_shared());
        assert_eq!(l.config(), RateConfig { requests_per_minute: 6000, burst: 5 });
        l.until_ready().await;
        flaky.fail.store(true, Ordering::SeqCst);
        // The fallback paces alone: its burst is immediate.
        for _ in 0..3 {
            l.until_ready().await;
        }
        flaky.fail.store(false, Ordering::SeqCst);
        l.until_ready().await;
        assert_eq!(*flaky.calls.lock().unwrap(), 5);
        assert!(!RateLimiter::new(RateConfig::default()).is_shared());
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
