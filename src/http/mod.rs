//! HTTP plumbing shared by every client: the one request loop ([`exchange`]: send, classify,
//! back off, retry, read the body under a cap), the retry decision it applies ([`retry`]), the
//! client-side rate limits ([`limit`]), the request counters ([`stats`]), the audit of a run's
//! ledger exchanges ([`audit`]), and what a ledger client may be pointed at ([`ledger_url`],
//! [`same_origin_redirects`]).

pub mod audit;
pub mod exchange;
pub mod limit;
pub(crate) mod resend;
pub mod retry;
pub mod stats;

pub use exchange::{Exchange, ExchangeObserver, Hooks, Peer, Redirects, Reply, Request, Verdict};
pub use limit::{ConcurrencyLimit, DailyBudget, RateConfig, RateLimiter, TenantLimits};
pub use retry::{Attempt, Backoff, Decision, RetryConfig, decide};
pub use stats::RequestStats;

use std::net::IpAddr;

use url::Url;

/// True for a loopback host: `localhost`, `127.0.0.0/8`, `[::1]` (where plain `http` is accepted,
/// for development and tests).
pub fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// Checks a ledger URL (API base, token endpoint, connections endpoint): absolute, with a host,
/// no credentials, and `https` unless the host is loopback. The error is the rule broken, for the
/// caller to name the setting with.
///
/// # Errors
/// The rule broken.
pub fn ledger_url(text: &str) -> std::result::Result<Url, String> {
    let url = Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(format!("`{text}` is not an http(s) URL"));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not carry credentials".into());
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(format!("`{text}` must be https (plain http is accepted only on a loopback host)"));
    }
    Ok(url)
}

/// The redirect policy of the ledger clients: a redirect is followed only within the origin
/// (scheme, host and port) of the request, at most 5 times; any other is not followed and its
/// 3xx answer reaches the client, which reports it. A ledger's answer thus cannot send the
/// bearer token or a posting to another address. (The Magento client follows none at all:
/// `byte8_ledger_service::magento::http_client`.)
pub fn same_origin_redirects() -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(|attempt| {
        let same = attempt.previous().first().is_some_and(|first| first.origin() == attempt.url().origin());
        if same && attempt.previous().len() <= 5 { attempt.follow() } else { attempt.stop() }
    })
}

/// `text` on one line without control characters, at most `max` characters (`…` marks a cut):
/// what every remote answer, panic message or other untrusted text goes through before it is
/// quoted in an error, an outcome or a log (the service package uses it too).
pub fn sanitise(text: &str, max: usize) -> String {
    let mut out = String::new();
    let mut count = 0;
    let mut space = false;
    for c in text.chars() {
        if c.is_whitespace() || c.is_control() || matches!(c, '\u{200b}'..='\u{200f}' | '\u{2028}'..='\u{202e}') {
            space = !out.is_empty();
            continue;
        }
        if count + usize::from(space) + 1 > max {
            out.push('…');
            return out;
        }
        if space {
            out.push(' ');
            count += 1;
            space = false;
        }
        out.push(c);
        count += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ledger_urls_must_be_https_except_on_loopback() {
        for ok in [
            "https://api.accounting.sage.com/v3.1",
            "http://127.0.0.1:9000/v3.1",
            "http://127.1.2.3",
            "http://localhost:1",
            "http://[::1]:8080/x",
        ] {
            assert!(ledger_url(ok).is_ok(), "{ok}");
        }
        for bad in [
            "http://api.accounting.sage.com/v3.1",
            "http://10.0.0.1/",
            "http://localhost.example.com",
            "http://[::2]/",
            "ftp://x",
            "https://user:pw@api.example.com",
            "nope",
        ] {
            assert!(ledger_url(bad).is_err(), "{bad}");
        }
    }
}
