//! How often a write whose outcome was unknown may be sent again, shared by every provider: the
//! idempotency re-send budget that sits above the request loop ([`crate::http::exchange`]), which
//! itself never re-sends such a write.
//!
//! A POST (or a Xero PUT batch) answered 5xx, or interrupted after it was sent, may have been
//! committed. The provider looks the record up first (and the ledger's idempotency id makes a
//! repeat harmless); when it is not there, the write is sent again — as long as the request's
//! own retry budget allows: at most [`RetryConfig::max_retries`] re-sends, each after the same
//! exponential backoff as any other retry, all within [`RetryConfig::retry_timeout`]. Earlier the
//! loop stopped after a fixed three sends, so a burst of 5xx failed an event that one more try
//! would have posted (issue 13).

use std::time::{Duration, Instant};

use crate::http::{Attempt, Decision, RetryConfig, decide};

/// The re-send budget of one ambiguous write.
#[derive(Debug, Clone)]
pub(crate) struct ResendBudget {
    config: RetryConfig,
    started: Instant,
    resent: u32,
}

impl ResendBudget {
    /// A budget starting now, from the client's retry settings.
    pub(crate) fn new(config: RetryConfig) -> Self {
        Self { config, started: Instant::now(), resent: 0 }
    }

    /// After a write whose outcome was unknown was looked up and not found: how long to wait
    /// before sending it again, or `None` when the budget is spent (the caller reports the
    /// error, which stays retryable for the engine).
    pub(crate) fn next_resend(&mut self) -> Option<Duration> {
        // Once looked up, sending again is as harmless as repeating an idempotent request.
        let attempt = Attempt::Status { status: 503, retry_after: None };
        match decide(attempt, self.resent, self.started.elapsed(), true, &self.config, rand::random()) {
            Decision::Retry(d) => {
                self.resent += 1;
                Some(d)
            }
            Decision::GiveUp | Decision::Ambiguous => None,
        }
    }

    /// How many times the write was sent again so far.
    #[cfg(test)]
    pub(crate) fn resent(&self) -> u32 {
        self.resent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resends_as_often_as_the_retry_budget_allows() {
        let config = RetryConfig {
            max_retries: 4,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            retry_timeout: Duration::from_secs(3600),
        };
        let mut b = ResendBudget::new(config);
        let waits: Vec<Duration> = std::iter::from_fn(|| b.next_resend()).take(10).collect();
        assert_eq!(waits.len(), 4, "max_retries re-sends, not a fixed three");
        assert!(waits.iter().all(|d| *d <= Duration::from_millis(2)));
        assert_eq!(b.resent(), 4);
        let mut none = ResendBudget::new(RetryConfig::none());
        assert_eq!(none.next_resend(), None, "no retries configured: never re-sent");
    }

    #[test]
    fn the_time_budget_ends_resending() {
        let config = RetryConfig {
            max_retries: 100,
            initial_backoff: Duration::from_secs(10),
            max_backoff: Duration::from_secs(10),
            retry_timeout: Duration::from_secs(1),
        };
        // The first backoff (5–10 s) already exceeds the 1 s budget.
        assert_eq!(ResendBudget::new(config).next_resend(), None);
    }
}
