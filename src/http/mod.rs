//! HTTP plumbing shared by the providers: the retry decision ([`retry`]) and the client-side rate
//! limits ([`limit`]).

pub mod limit;
pub mod retry;
pub mod stats;

pub use limit::{ConcurrencyLimit, DailyBudget, RateConfig, RateLimiter, TenantLimits};
pub use retry::{Attempt, Backoff, Decision, RetryConfig, after_network_error, decide};
pub use stats::RequestStats;
