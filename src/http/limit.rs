//! The client-side rate limiter: keeps a full-speed run under a ledger's per-business limit so
//! that 429s are the exception, using `governor` (GCRA).
//!
//! A GCRA limiter with rate `r` a minute and burst `b` lets at most `r + b` requests through in
//! any 60-second window. To stay under a limit of `L` a minute in *every* window (Sage v3 documents
//! 200 a minute per business, sage-api.md 3.7), the limiter runs at `r = L − b`: with the defaults,
//! 190 a minute plus a burst of 10 — never more than 200 in any minute, 95 % of the limit when
//! saturated.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use governor::{Quota, RateLimiter as Gcra, clock::DefaultClock, state::InMemoryState, state::direct::NotKeyed};

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
}
