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

/// The ledger providers' own HTTP client (Sage's and Xero's builders build it when given none):
/// `timeout` per request, 10 s to connect, [`same_origin_redirects`].
///
/// # Errors
/// [`Error::Config`](crate::error::Error::Config) when the TLS backend cannot be set up.
pub(crate) fn ledger_client(timeout: std::time::Duration) -> crate::error::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(std::time::Duration::from_secs(10))
        .redirect(same_origin_redirects())
        .user_agent(concat!("byte8-ledger-core/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| crate::error::Error::config("http", format!("cannot build the HTTP client: {e}")))
}

/// Ledger HTTP clients shared by the providers of one factory
/// ([`SageProviders`](crate::providers::stored::SageProviders),
/// [`XeroProviders`](crate::providers::stored::XeroProviders)): one client per request timeout,
/// built on first use, given to every provider whose builder has no client of its own. Building
/// a client reads the system's trust roots (some 140 certificates parsed); a service with a
/// thousand businesses built one per business, for 300 MB of roots and pools. Clones share the
/// clients. Use one within one async runtime (a client's pooled connections run on the runtime
/// that opened them).
#[derive(Debug, Clone, Default)]
pub struct SharedClients(
    std::sync::Arc<std::sync::Mutex<std::collections::HashMap<std::time::Duration, reqwest::Client>>>,
);

impl SharedClients {
    /// The shared client with `timeout` per request, built the first time it is asked for.
    ///
    /// # Errors
    /// As [`ledger_client`].
    pub(crate) fn get(&self, timeout: std::time::Duration) -> crate::error::Result<reqwest::Client> {
        let mut clients = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(client) = clients.get(&timeout) {
            return Ok(client.clone());
        }
        let client = ledger_client(timeout)?;
        clients.insert(timeout, client.clone());
        Ok(client)
    }

    /// How many clients were built.
    pub fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Whether none was built yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
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
