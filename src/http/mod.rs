//! HTTP plumbing shared by the providers: the retry decision ([`retry`]) and the client-side rate
//! limiter ([`limit`]).

pub mod limit;
pub mod retry;

pub use limit::{RateConfig, RateLimiter};
pub use retry::{Attempt, Backoff, Decision, RetryConfig, decide};
