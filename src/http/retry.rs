//! The retry decision: a pure function of what happened, how many times and for how long, so that
//! every case is a row in a table test. The loop that applies it, shared by every client, is
//! [`crate::http::exchange::send`], and boring on purpose.
//!
//! | what happened | GET / PUT / DELETE | POST |
//! |---|---|---|
//! | connection refused or failed before sending | retry | retry |
//! | 429 (throttled; nothing was done) | retry after `Retry-After` or backoff | same |
//! | 408, 500, 502, 503, 504 | retry | **ambiguous**: the ledger may have committed |
//! | 525 (the CDN in front of Sage failed its TLS handshake with the origin) | retry | retry: the origin never saw the request |
//! | timed out or dropped after sending | retry | **ambiguous** |
//! | other 4xx | give up | give up |
//!
//! An ambiguous POST is never re-sent blindly: the caller first looks the record up by its
//! business reference (and Sage's `idempotency_id` makes a re-send within 7 days harmless anyway).
//! Every retry waits an exponential backoff with "equal jitter" (half fixed, half random) or the
//! server's `Retry-After`, within a total `retry_timeout` and `max_retries`.

use std::time::Duration;

/// Retry settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryConfig {
    /// Retries after the first attempt.
    pub max_retries: u32,
    /// First backoff.
    pub initial_backoff: Duration,
    /// Largest backoff (and the largest `Retry-After` honoured).
    pub max_backoff: Duration,
    /// Total time budget of one request, retries included.
    pub retry_timeout: Duration,
}

impl Default for RetryConfig {
    /// Five retries from 500 ms, doubling to at most 30 s, within 2 minutes: long enough to ride
    /// out a rate-limit window or a deploy, short enough for an interactive command.
    fn default() -> Self {
        Self {
            max_retries: 5,
            initial_backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            retry_timeout: Duration::from_secs(120),
        }
    }
}

impl RetryConfig {
    /// No retries at all (tests, and callers that retry themselves).
    pub fn none() -> Self {
        Self { max_retries: 0, ..Self::default() }
    }
}

/// What one attempt ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// The server answered with an error status.
    Status {
        /// The status code.
        status: u16,
        /// The server's `Retry-After`, when it sent one.
        retry_after: Option<Duration>,
    },
    /// The connection failed before the request was sent.
    NotSent,
    /// The request was sent and no answer came (timeout, reset): its effect is unknown.
    Interrupted,
}

/// What to do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Wait this long, then try again.
    Retry(Duration),
    /// Stop and report the failure.
    GiveUp,
    /// A write may have been applied: look it up before any second write.
    Ambiguous,
}

/// Exponential backoff with equal jitter.
#[derive(Debug, Clone, Copy)]
pub struct Backoff;

impl Backoff {
    /// The delay before retry number `retry` (0-based): `min(max, initial × 2^retry)`, of which
    /// half is fixed and half scaled by `jitter` ∈ [0, 1).
    pub fn delay(config: &RetryConfig, retry: u32, jitter: f64) -> Duration {
        let factor = 2u32.saturating_pow(retry.min(30));
        let full = config.initial_backoff.saturating_mul(factor).min(config.max_backoff);
        let half = full / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }
}

/// Decides what follows an attempt. `retries` is how many retries already happened, `elapsed`
/// the time since the first attempt, `idempotent` whether repeating the request is harmless
/// (GET, PUT, DELETE), `jitter` a random number in [0, 1).
pub fn decide(
    attempt: Attempt,
    retries: u32,
    elapsed: Duration,
    idempotent: bool,
    config: &RetryConfig,
    jitter: f64,
) -> Decision {
    let (retryable, ambiguous, retry_after) = match attempt {
        Attempt::NotSent => (true, false, None),
        Attempt::Interrupted => (true, !idempotent, None),
        Attempt::Status { status: 429, retry_after } => (true, false, retry_after),
        Attempt::Status { status: 408 | 500 | 502 | 503 | 504, retry_after } => (true, !idempotent, retry_after),
        // A production Sage client retries 525 with 503 and 504 (tests/fixtures/sage-real/SOURCES.md).
        Attempt::Status { status: 525, retry_after } => (true, false, retry_after),
        Attempt::Status { .. } => (false, false, None),
    };
    if ambiguous {
        return Decision::Ambiguous;
    }
    if !retryable || retries >= config.max_retries {
        return Decision::GiveUp;
    }
    let delay = match retry_after {
        Some(d) if d > config.max_backoff => return Decision::GiveUp,
        Some(d) => d,
        None => Backoff::delay(config, retries, jitter),
    };
    if elapsed + delay > config.retry_timeout {
        return Decision::GiveUp;
    }
    Decision::Retry(delay)
}

/// The longest `Retry-After` believed: a day, the longest window any ledger documents (Xero's
/// daily limit). A larger value (`1e300`, a date in the year 9999) is read as this cap, so that
/// a server cannot park an event for ever, nor overflow the date arithmetic that follows.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

/// Reads a `Retry-After` header value, the delay seconds (`120`, also `1.5`) or an HTTP date
/// (IMF-fixdate, RFC 850 or asctime, as RFC 9110 10.2.3 allows), into a delay of at most
/// [`MAX_RETRY_AFTER`]. Never panics whatever the server sends: a negative, not-a-number or
/// unreadable value is `None` (as if the header were absent), a date in the past is zero, and
/// anything longer than the cap (`1e300`, `99999999999999999999999`) is the cap.
pub fn parse_retry_after(value: &str, now: chrono::DateTime<chrono::Utc>) -> Option<Duration> {
    let v = value.trim();
    if v.is_empty() {
        return None;
    }
    if v.bytes().all(|b| b.is_ascii_digit()) {
        // Digits only: an integer of any length; one beyond u64 is longer than the cap anyway.
        return Some(v.parse::<u64>().map_or(MAX_RETRY_AFTER, Duration::from_secs).min(MAX_RETRY_AFTER));
    }
    if v.bytes().all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-')) {
        let secs = v.parse::<f64>().ok().filter(|s| s.is_finite() && *s >= 0.0)?;
        // Compared in f64 before any conversion: `try_from_secs_f64` of the capped value cannot fail.
        return Duration::try_from_secs_f64(secs.min(MAX_RETRY_AFTER.as_secs_f64())).ok();
    }
    let when = chrono::DateTime::parse_from_rfc2822(v)
        .map(|d| d.with_timezone(&chrono::Utc))
        .ok()
        .or_else(|| httpdate::parse_http_date(v).ok().map(chrono::DateTime::<chrono::Utc>::from))?;
    let wait = when.signed_duration_since(now);
    if wait <= chrono::TimeDelta::zero() {
        return Some(Duration::ZERO);
    }
    Some(wait.to_std().map_or(MAX_RETRY_AFTER, |d| d.min(MAX_RETRY_AFTER)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    fn status(status: u16) -> Attempt {
        Attempt::Status { status, retry_after: None }
    }

    #[test]
    fn decision_table() {
        let c = RetryConfig::default();
        // (attempt, retries, elapsed, idempotent, expected)
        let rows: Vec<(Attempt, u32, Duration, bool, Decision)> = vec![
            (Attempt::NotSent, 0, S(0), false, Decision::Retry(Duration::from_millis(250))),
            (Attempt::NotSent, 0, S(0), true, Decision::Retry(Duration::from_millis(250))),
            (Attempt::Interrupted, 0, S(0), true, Decision::Retry(Duration::from_millis(250))),
            (Attempt::Interrupted, 0, S(0), false, Decision::Ambiguous),
            (status(429), 0, S(0), false, Decision::Retry(Duration::from_millis(250))),
            (Attempt::Status { status: 429, retry_after: Some(S(7)) }, 0, S(0), false, Decision::Retry(S(7))),
            (Attempt::Status { status: 429, retry_after: Some(S(600)) }, 0, S(0), true, Decision::GiveUp),
            (status(500), 0, S(0), true, Decision::Retry(Duration::from_millis(250))),
            (status(500), 0, S(0), false, Decision::Ambiguous),
            (status(503), 2, S(0), false, Decision::Ambiguous),
            (status(502), 1, S(0), true, Decision::Retry(Duration::from_millis(500))),
            (status(504), 2, S(0), true, Decision::Retry(S(1))),
            (status(408), 0, S(0), false, Decision::Ambiguous),
            (status(400), 0, S(0), true, Decision::GiveUp),
            (status(401), 0, S(0), true, Decision::GiveUp),
            (status(404), 0, S(0), true, Decision::GiveUp),
            (status(422), 0, S(0), false, Decision::GiveUp),
            (status(500), 5, S(0), true, Decision::GiveUp),
            (status(500), 0, S(120), true, Decision::GiveUp),
            (status(500), 0, S(119), true, Decision::Retry(Duration::from_millis(250))),
            (status(429), 4, S(0), true, Decision::Retry(S(4))),
        ];
        for (i, (attempt, retries, elapsed, idempotent, expected)) in rows.into_iter().enumerate() {
            assert_eq!(decide(attempt, retries, elapsed, idempotent, &c, 0.0), expected, "row {i}: {attempt:?}");
        }
    }

    #[test]
    fn cdn_525_is_retried_like_503_but_never_ambiguous() {
        let c = RetryConfig::default();
        for idempotent in [true, false] {
            assert_eq!(
                decide(status(525), 0, S(0), idempotent, &c, 0.0),
                Decision::Retry(Duration::from_millis(250)),
                "idempotent: {idempotent}"
            );
        }
        assert_eq!(decide(status(525), c.max_retries, S(0), true, &c, 0.0), Decision::GiveUp);
        assert_eq!(decide(status(526), 0, S(0), true, &c, 0.0), Decision::GiveUp, "only 525 is known");
    }

    #[test]
    fn backoff_doubles_with_equal_jitter_and_caps() {
        let c = RetryConfig::default();
        assert_eq!(Backoff::delay(&c, 0, 0.0), Duration::from_millis(250));
        assert_eq!(Backoff::delay(&c, 0, 0.5), Duration::from_millis(375));
        assert_eq!(Backoff::delay(&c, 3, 0.5), Duration::from_secs(3)); // 4 s: 2 fixed + 1 jitter
        assert_eq!(Backoff::delay(&c, 20, 1.0), Duration::from_secs(30));
    }

    #[test]
    fn retry_after_forms() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z").unwrap().with_timezone(&chrono::Utc);
        assert_eq!(parse_retry_after("120", now), Some(S(120)));
        assert_eq!(parse_retry_after("1.5", now), Some(Duration::from_millis(1500)));
        assert_eq!(parse_retry_after("Sun, 22 Nov 2026 10:00:30 GMT", now), Some(S(30)));
        assert_eq!(parse_retry_after("Sun, 22 Nov 2026 09:00:00 GMT", now), Some(S(0)));
        assert_eq!(parse_retry_after("soon", now), None);
        // RFC 850 and asctime dates (RFC 9110 10.2.3).
        assert_eq!(parse_retry_after("Sunday, 22-Nov-26 10:01:00 GMT", now), Some(S(60)));
        assert_eq!(parse_retry_after("Sun Nov 22 10:02:00 2026", now), Some(S(120)));
    }

    #[test]
    fn absurd_retry_after_values_are_capped_or_ignored_never_a_panic() {
        let now = chrono::DateTime::parse_from_rfc3339("2026-11-22T10:00:00Z").unwrap().with_timezone(&chrono::Utc);
        let day = S(86_400);
        assert_eq!(MAX_RETRY_AFTER, day);
        for (value, expected) in [
            ("1e300", Some(day)),
            ("1E+300", Some(day)),
            ("18446744073709551615", Some(day)),
            ("99999999999999999999999999999999999999", Some(day)),
            ("86401", Some(day)),
            ("86400", Some(day)),
            ("86399.5", Some(Duration::from_millis(86_399_500))),
            ("0", Some(S(0))),
            ("0.0", Some(S(0))),
            ("-1", None),
            ("-0.5", None),
            ("-1e300", None),
            ("NaN", None),
            ("inf", None),
            ("1e400", None),
            ("", None),
            ("   ", None),
            ("1.2.3", None),
            ("Fri, 31 Dec 9999 23:59:59 GMT", Some(day)),
            ("Thu, 01 Jan 1970 00:00:00 GMT", Some(S(0))),
            ("Sun, 22 Nov 2026 10:00:30 +1400", Some(S(0))),
        ] {
            assert_eq!(parse_retry_after(value, now), expected, "Retry-After: {value:?}");
        }
        // Near the ends of chrono's range, too.
        let far = chrono::DateTime::<chrono::Utc>::MAX_UTC;
        assert_eq!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", far), Some(S(0)));
        let early = chrono::DateTime::<chrono::Utc>::MIN_UTC;
        assert_eq!(parse_retry_after("Fri, 31 Dec 9999 23:59:59 GMT", early), Some(day));
    }
}
