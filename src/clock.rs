//! Time as a parameter: code that needs "now" takes a [`Clock`], so that tests and the simulator
//! can move time by hand (token expiry, backoff, `sync_since`). `chrono::Utc::now` is banned
//! elsewhere by `clippy.toml`.

use std::{
    fmt,
    sync::{Arc, Mutex},
};

use chrono::{DateTime, Duration, Utc};

/// A source of the current time.
pub trait Clock: fmt::Debug + Send + Sync {
    /// The current instant, in UTC.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[allow(clippy::disallowed_methods)]
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock moved by hand.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<DateTime<Utc>>>,
}

impl ManualClock {
    /// A clock at `start`.
    pub fn new(start: DateTime<Utc>) -> Self {
        Self { now: Arc::new(Mutex::new(start)) }
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *now += by;
    }

    /// Sets the clock.
    pub fn set(&self, to: DateTime<Utc>) {
        *self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = to;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.now.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The longest delay [`later`] adds: a hundred years, far beyond any lease, retry or token life,
/// and well inside what every store's timestamp columns hold.
pub const MAX_DELAY: std::time::Duration = std::time::Duration::from_secs(100 * 365 * 24 * 3600);

/// `now + delay` without any chance of a panic: the delay is capped at [`MAX_DELAY`] and the
/// addition checked (a result beyond chrono's range is its largest date). Every date computed
/// from a number the network or a setting supplied (`Retry-After`, `expires_in`, a retry ladder,
/// a lease) goes through here, since `DateTime + Duration` panics on overflow.
pub fn later(now: DateTime<Utc>, delay: std::time::Duration) -> DateTime<Utc> {
    let capped = delay.min(MAX_DELAY);
    Duration::from_std(capped).ok().and_then(|d| now.checked_add_signed(d)).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The system clock as a shared [`Clock`].
pub fn system() -> Arc<dyn Clock> {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_caps_the_delay_and_never_overflows() {
        let t0 = DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(later(t0, std::time::Duration::from_secs(90)), t0 + Duration::seconds(90));
        assert_eq!(later(t0, std::time::Duration::ZERO), t0);
        let century = t0 + Duration::days(100 * 365);
        assert_eq!(later(t0, MAX_DELAY), century);
        assert_eq!(later(t0, std::time::Duration::MAX), century, "capped, not a panic");
        assert_eq!(later(t0, std::time::Duration::from_secs(u64::MAX / 2)), century);
        assert_eq!(later(DateTime::<Utc>::MAX_UTC, std::time::Duration::from_secs(1)), DateTime::<Utc>::MAX_UTC);
    }
}
