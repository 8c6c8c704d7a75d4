//! The client-side rate limits: keep a full-speed run under a ledger's per-business limits so
//! that 429s are the exception.
//!
//! - [`RateLimiter`]: requests a minute (a sliding window, paced: below);
//! - [`ConcurrencyLimit`]: requests in flight at once (a semaphore);
//! - [`DailyBudget`]: requests in any rolling 24 hours, counted on the crate's [`Clock`]; when it
//!   is spent the caller gets how long to wait instead of a request (Xero: 5,000 a day per
//!   organisation, xero-api.md section 3).
//!
//! Both kinds of [`RateLimiter`] use the same [`Window`] rule:
//!
//! - **in process** ([`RateLimiter::new`]): the rule's state in this process (every provider of
//!   a business in that process shares one budget by cloning the limiter);
//! - **shared** ([`RateLimiter::shared`]): a budget kept outside the process ([`SharedLimit`]),
//!   such as `store::postgres::SharedRateLimiter` (feature `postgres`), so that several worker
//!   processes together stay under one business's limit.
//!
//! # The rule: a sliding window, paced
//!
//! A ledger such as Sage counts requests in any 60-second window (200 per business, sage-api.md
//! 3.7). The limiter keeps, per business, the permit times of its last `L` requests and a GCRA
//! ("generic cell rate algorithm") *theoretical arrival time* `tat`, and gives a request arriving
//! at `t` its permit at
//!
//! > `a = max(t, tat − τ, a₋ₗ + W + m, a₋₁)`
//!
//! where `a₋ₗ` is the permit `L` requests back (none before `L` permits), `W` the window (60 s),
//! `m` a safety margin ([`WINDOW_MARGIN`]), `a₋₁` the previous permit, `T = ⌈W / L⌉` and
//! `τ = (b − 1)·T` the GCRA interval and tolerance for a burst `b`; then `tat ← max(tat, a) + T`.
//!
//! - **Never more than the limit in any window**: permits are in order (`a ≥ a₋₁`), and any `L + 1`
//!   consecutive ones span at least `W + m`, so any window shorter than `W + m` (a minute, closed
//!   at both ends, among them) holds at most `L` permits. The margin covers what happens between a permit and the
//!   ledger's count of the request (the ledger counts at arrival, after network and scheduling
//!   jitter, and the simulator after its 100–150 ms of latency).
//! - **The whole limit when saturated**: a business sending back to back gets `L` permits per
//!   `W + m`: 200 per 60.5 s, **99.2 %** of Sage's limit.
//! - **The burst is not reserved**: the GCRA part only smooths (at most `b` permits at once, then
//!   one every `T = W / L`, the limit's own pace); it takes nothing from the window. The earlier
//!   rule ran GCRA at `L − b` a minute so that `b + (L − b)` stayed under the limit, which kept
//!   the business at 95 % (`b = 10`) because the burst was reserved in every minute, used or not.
//!
//! The state is at most `L` times per business (1.6 KB for Sage's 200), and only those within a
//! span of the newest permit: a permit a span or more older than the newest can hold no later
//! one back (each is at or after the newest), so it is dropped. A limit set far above the traffic
//! (`SAGE_REQUESTS_PER_MINUTE=6000000` for a back-fill into a simulator) keeps the last span's
//! permits, not six million. [`Pacing`] (GCRA alone, at `L − b`) and [`quota`] are kept for
//! callers that pace with `governor` themselves.
//!
//! The bound is on permits: a request is sent at or after its permit, and a process that is
//! slow to send after its permit (scheduling, a slow token refresh) by more than the margin can
//! still bunch up with later ones, as with any client-side limiter; the retry decision handles
//! the rare 429.
//!
//! # GCRA alone ([`Pacing`])
//!
//! A GCRA limiter with an emission interval `T` and a burst `b` gives a request at `t` its permit
//! at `a = max(t, tat − τ)` and moves `tat` to `max(tat, t) + T`. For two permits `j < k`,
//! `a_k ≥ a_j + (k − j)·T − τ`, hence at most `b + ⌊W / T⌋` permits in any window of length `W`:
//! to stay under `L` in every minute alone it must run at `r = L − b` a minute,
//! `T = ⌈60 s / (L − b)⌉`.

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
use governor::Quota;

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

/// The window the ledgers count their limit in (a minute).
const WINDOW_MICROS: u64 = MINUTE_MICROS;

/// The safety margin added to the window (module docs): requests `L` apart are at least 60.5 s
/// apart, so that the jitter between a permit and the ledger's count of the request (up to half
/// a second) cannot put `L + 1` of them in one of the ledger's minutes.
pub const WINDOW_MARGIN: Duration = Duration::from_millis(500);

/// The sliding-window rule of a [`RateConfig`] (see the module docs): at most the limit in any
/// window of a minute plus [`WINDOW_MARGIN`], paced by a GCRA at the limit's own rate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// `L`: permits in any window of [`Window::span_micros`].
    pub limit: u32,
    /// `W + m`, in microseconds.
    pub span_micros: u64,
    /// The GCRA's `T = ⌈W / L⌉`, in microseconds.
    pub interval_micros: u64,
    /// The GCRA's burst `b` (`1 ≤ b ≤ L`).
    pub burst: u32,
}

/// One business's state under a [`Window`]: the GCRA's theoretical arrival time and the last
/// `L` permit times within a span of the newest, in microseconds on the limiter's clock, oldest
/// first.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WindowState {
    /// The theoretical arrival time (`None` before the first permit).
    pub tat: Option<i64>,
    /// The permit times of the last `L` requests, oldest first, less the ones a span or more
    /// before the newest (which can hold no later permit back).
    pub recent: VecDeque<i64>,
}

impl Window {
    /// The rule that keeps under `config`; `None` when the limit is 0 (unlimited).
    pub fn of(config: RateConfig) -> Option<Self> {
        let limit = NonZeroU32::new(config.requests_per_minute)?.get();
        let margin = u64::try_from(WINDOW_MARGIN.as_micros()).unwrap_or(u64::MAX);
        Some(Self {
            limit,
            span_micros: WINDOW_MICROS.saturating_add(margin),
            interval_micros: WINDOW_MICROS.div_ceil(u64::from(limit)),
            burst: config.burst.clamp(1, limit),
        })
    }

    /// `τ = (b − 1)·T`, in microseconds.
    pub fn tolerance_micros(&self) -> u64 {
        self.interval_micros.saturating_mul(u64::from(self.burst.saturating_sub(1)))
    }

    /// Gives a request at `now` (microseconds) its permit time and records it in `state`:
    /// `max(now, tat − τ, the permit L back + W + m, the previous permit)`.
    pub fn reserve(&self, state: &mut WindowState, now: i64) -> i64 {
        let micros = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let mut at = now;
        if let Some(tat) = state.tat {
            at = at.max(tat.saturating_sub(micros(self.tolerance_micros())));
        }
        let limit = usize::try_from(self.limit).unwrap_or(usize::MAX);
        if state.recent.len() >= limit
            && let Some(back) = state.recent.get(state.recent.len() - limit)
        {
            at = at.max(back.saturating_add(micros(self.span_micros)));
        }
        if let Some(&last) = state.recent.back() {
            at = at.max(last);
        }
        state.tat = Some(state.tat.unwrap_or(at).max(at).saturating_add(micros(self.interval_micros)));
        state.recent.push_back(at);
        // Only the last `L` permits can hold a later one back, and of those only the ones less
        // than a span before this one: every later permit is at or after it. The rest go, so a
        // limit far above the traffic keeps the last span's permits, not the last `L`.
        let span_before = at.saturating_sub(micros(self.span_micros));
        while state.recent.len() > limit || state.recent.front().is_some_and(|&t| t <= span_before) {
            state.recent.pop_front();
        }
        at
    }
}

/// A [`Window`] kept in this process, on tokio's clock.
#[derive(Debug)]
struct LocalWindow {
    window: Window,
    state: Mutex<WindowState>,
    origin: tokio::time::Instant,
}

impl LocalWindow {
    fn new(window: Window) -> Self {
        Self { window, state: Mutex::default(), origin: tokio::time::Instant::now() }
    }

    async fn until_ready(&self) {
        let now = i64::try_from(self.origin.elapsed().as_micros()).unwrap_or(i64::MAX);
        let at = {
            let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            self.window.reserve(&mut state, now)
        };
        if at > now {
            let wait = Duration::from_micros(u64::try_from(at).unwrap_or(0));
            tokio::time::sleep_until(self.origin + wait).await;
        }
    }
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

#[derive(Clone)]
enum Backend {
    Unlimited,
    Local(Arc<LocalWindow>),
    Shared {
        limit: Arc<dyn SharedLimit>,
        /// Paces this process alone while the shared budget cannot be reached.
        fallback: Arc<LocalWindow>,
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

    /// An in-process limiter for `config` (the [`Window`] rule); it never waits when the limit is 0.
    pub fn new(config: RateConfig) -> Self {
        match Window::of(config) {
            Some(w) => Self { backend: Backend::Local(Arc::new(LocalWindow::new(w))), config },
            None => Self::unlimited(),
        }
    }

    /// A limiter that takes its permits from a budget shared with other processes. While the
    /// budget cannot be reached it logs a warning and paces this process alone with the same
    /// settings (so the workers together may then exceed the limit, and the retry decision
    /// handles the 429s). It never waits when the limit is 0.
    pub fn shared(limit: Arc<dyn SharedLimit>) -> Self {
        let config = limit.config();
        match Window::of(config) {
            Some(w) => Self {
                backend: Backend::Shared {
                    limit,
                    fallback: Arc::new(LocalWindow::new(w)),
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

    use governor::{RateLimiter as Governor, clock::FakeRelativeClock};
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

    proptest! {
        /// The window rule, with workers asking at random times (each again only after its
        /// previous permit): never more than the limit in any window shorter than a minute plus
        /// the margin (so in any minute), whatever the interleaving; permits come in order and never
        /// before they are asked for.
        #[test]
        fn the_window_rule_never_exceeds_the_limit(
            limit in 1u32..300,
            burst in 0u32..40,
            gaps in proptest::collection::vec((0usize..4, 0i64..2_000_000), 1..800),
        ) {
            let w = Window::of(RateConfig { requests_per_minute: limit, burst }).unwrap();
            let mut state = WindowState::default();
            let mut ready = [0i64; 4];
            let mut permits = Vec::new();
            let mut last = i64::MIN;
            for (worker, gap) in gaps {
                let now = ready[worker] + gap;
                let at = w.reserve(&mut state, now);
                prop_assert!(at >= now);
                prop_assert!(at >= last, "permits in order");
                last = at;
                ready[worker] = at;
                permits.push(at);
            }
            let most = busiest_window(&mut permits, 60_499_999);
            prop_assert!(most <= usize::try_from(limit).unwrap(), "{most} permits in one window, limit {limit}");
        }
    }

    proptest! {
        /// Dropping the permits a span or more before the newest changes no permit: the rule
        /// kept in full (every permit ever given, the formula of the module docs read off it) gives
        /// the same times, with gaps long and short, and the state holds only the last span's
        /// permits, never more than `L`.
        #[test]
        fn the_window_kept_to_its_last_span_gives_what_the_whole_history_gives(
            limit in 1u32..300,
            burst in 0u32..40,
            gaps in proptest::collection::vec(
                (0usize..4, prop_oneof![0i64..2_000_000, 0i64..150_000_000]), 1..600),
        ) {
            let w = Window::of(RateConfig { requests_per_minute: limit, burst }).unwrap();
            let (l, span) = (usize::try_from(limit).unwrap(), i64::try_from(w.span_micros).unwrap());
            let interval = i64::try_from(w.interval_micros).unwrap();
            let tolerance = i64::try_from(w.tolerance_micros()).unwrap();
            let mut state = WindowState::default();
            // The model: every permit, and the GCRA's tat.
            let (mut all, mut tat): (Vec<i64>, Option<i64>) = (Vec::new(), None);
            let mut ready = [0i64; 4];
            for (worker, gap) in gaps {
                let now = ready[worker] + gap;
                let mut want = now;
                if let Some(t) = tat {
                    want = want.max(t - tolerance);
                }
                if all.len() >= l {
                    want = want.max(all[all.len() - l] + span);
                }
                if let Some(&last) = all.last() {
                    want = want.max(last);
                }
                tat = Some(tat.unwrap_or(want).max(want) + interval);
                all.push(want);
                let at = w.reserve(&mut state, now);
                prop_assert_eq!(at, want);
                ready[worker] = at;
                prop_assert!(state.recent.len() <= l);
                prop_assert!(state.recent.iter().all(|&t| t > at - span), "only the last span's permits");
                prop_assert_eq!(state.recent.back(), Some(&at));
            }
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

    /// Permits for `n` requests all asked at `now = 0` (a business sending back to back: each
    /// waits for its permit, and the next one is asked at once).
    fn saturated(window: Window, n: usize) -> Vec<i64> {
        let mut state = WindowState::default();
        (0..n).map(|_| window.reserve(&mut state, 0)).collect()
    }

    #[test]
    fn the_window_rule_of_the_defaults() {
        let w = Window::of(RateConfig::default()).unwrap();
        // T = 60 s / 200 = 300 ms; the span is a minute and the half-second margin.
        assert_eq!(w, Window { limit: 200, span_micros: 60_500_000, interval_micros: 300_000, burst: 10 });
        assert_eq!(w.tolerance_micros(), 9 * 300_000);
        assert!(Window::of(RateConfig { requests_per_minute: 0, burst: 3 }).is_none());
        // The burst is at least 1 and at most the limit.
        assert_eq!(Window::of(RateConfig { requests_per_minute: 5, burst: 50 }).unwrap().burst, 5);
        assert_eq!(Window::of(RateConfig { requests_per_minute: 5, burst: 0 }).unwrap().burst, 1);
    }

    #[test]
    fn a_saturated_business_gets_the_whole_limit_in_every_window_and_never_more() {
        let w = Window::of(RateConfig::default()).unwrap();
        let mut permits = saturated(w, 3000);
        // The burst of 10 at once, then one every T = 300 ms (the limit's own pace): the 200th
        // request (index 199) at (199 − 9) × 300 ms = 57 s; the 201st waits for the first + 60.5 s.
        assert_eq!(&permits[..10], &[0; 10]);
        assert_eq!(permits[10], 300_000);
        assert_eq!(permits[199], 57_000_000);
        assert_eq!(permits[200], 60_500_000);
        // Every L-th request waits exactly one span after the one L before it.
        for n in 1..15 {
            assert_eq!(permits[n * 200], i64::try_from(n).unwrap() * 60_500_000, "request {}", n * 200);
        }
        // At least 99 % of the limit: 2000 requests (10 × 200) by ten spans, 605 s.
        assert!(permits.iter().filter(|&&a| a <= 605_000_000).count() >= 2000);
        // Any window shorter than the span (a minute among them) holds the limit, never more; one
        // of exactly the span holds more (the bursts at both of its ends).
        assert_eq!(busiest_window(&mut permits, 60_499_999), 200);
        assert_eq!(busiest_window(&mut permits, 60_000_000), 200);
        assert!(busiest_window(&mut permits, 60_500_000) > 200);
    }

    #[test]
    fn after_an_idle_spell_the_burst_is_back_and_the_window_still_holds() {
        let w = Window::of(RateConfig { requests_per_minute: 20, burst: 4 }).unwrap();
        let mut state = WindowState::default();
        let first: Vec<i64> = (0..4).map(|_| w.reserve(&mut state, 0)).collect();
        assert_eq!(first, vec![0; 4], "the burst is immediate");
        assert_eq!(w.reserve(&mut state, 0), 3_000_000, "then one every 60 s / 20");
        // Ten minutes later the burst is back at once.
        let later = 600_000_000;
        let again: Vec<i64> = (0..4).map(|_| w.reserve(&mut state, later)).collect();
        assert_eq!(again, vec![later; 4]);
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
        let local = RateLimiter::new(RateConfig::default());
        assert!(!local.is_shared());
        // Its burst is immediate too.
        for _ in 0..5 {
            local.until_ready().await;
        }
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
