//! The Magento side of the protocol: what the Byte8 Magento module (`byte8/module-client`)
//! already speaks in merchants' stores (byte8-spec.md sections 2, 3, 11.5 and 12).
//!
//! - [`keys`]: the tenant's master [`ApiKey`] and its two HKDF-SHA256 subkeys, one per direction.
//! - [`jwt`]: HS256 tokens. [`JwtSigner`] mints the ledger → Magento ones; [`WebhookVerifier`]
//!   checks the Magento → ledger webhook ones with Magento's own rules plus a `jti`
//!   [`ReplayCache`].
//! - [`pairing`]: pairing codes (generation, hashing, the 30-minute TTL, constant-time checks)
//!   and the client side of the anonymous `POST /rest/V1/byte8/setup/pair`
//!   ([`PairRequest`]), which hands Magento the master key.
//! - [`client`]: [`MagentoClient`], which calls `/rest/V1/byte8/*` with a fresh token each time:
//!   `ping`, `payment-methods`, the canonical entities (it is the engine's
//!   [`EntitySource`](byte8_ledger_core::engine::EntitySource)) and the sync-state callback; it tracks the
//!   connection status (`pending | active | token_revoked`).
//!
//! # What an HTTP answer means
//!
//! | answer from Magento | error |
//! |---|---|
//! | 2xx | none; the connection is `active` |
//! | 401 | [`Error::Auth`] ([`AuthFailure::ReconnectRequired`](byte8_ledger_core::error::AuthFailure::ReconnectRequired)); the connection becomes `token_revoked` |
//! | 403 | [`Error::Auth`] (`AccessDenied`) |
//! | 404 | [`Error::NotFound`] |
//! | 3xx | [`Error::Provider`], not retryable: no redirect is ever followed ([`http_client`]), so a store cannot send the ledger's token or the pairing call's key elsewhere |
//! | 429, 408, 5xx, network errors | retried by the shared request loop ([`byte8_ledger_core::http::exchange`]) with [`byte8_ledger_core::http::retry::decide`], then a retryable error |
//! | a body over [`MAX_BODY`], or no answer within the total timeout ([`REQUEST_TIMEOUT`]) | [`Error::Provider`] (not retryable) / [`Error::Http`] (retried) |
//! | other 4xx | [`Error::Rejected`] with Magento's message |
//!
//! Messages carry only a short sanitised excerpt of Magento's `message` field (one line, at most
//! [`MAX_MESSAGE`] characters); any other body is described by its size, never quoted: errors
//! reach the tenant through outcomes and `/v1/status`. A `Retry-After` on any answer is read with
//! [`byte8_ledger_core::http::retry::parse_retry_after`] (capped, never a panic).
//!
//! Every attempt, retries included, carries a new token: Magento caches each `jti` and would
//! refuse a re-sent one as a replay.
//!
//! # Plain HTTP
//!
//! Magento refuses the ledger's tokens over plain HTTP in production mode, and the pairing call
//! carries the master key in its body, so a Magento base URL must be `https`, except on a
//! loopback host (`localhost`, `127.0.0.0/8`, `[::1]`) for development and tests.

pub mod client;
pub mod jwt;
pub use crate::store::keys;
pub mod pairing;

use std::time::Duration;

pub use crate::store::{ConnectionStatus, ReplayCache, magento_base_url};
use async_trait::async_trait;
pub use client::{MagentoClient, MagentoClientBuilder, PaymentMethod, Ping, SyncStateBody};
pub use jwt::{Claims, JwtSigner, MemoryReplayCache, WebhookVerifier};
pub use keys::{ApiKey, Direction, MagentoKeys, SubKey};
pub use pairing::{PairRequest, PairingCode};
use secrecy::SecretString;
use url::Url;

use byte8_ledger_core::{
    clock::Clock,
    error::{Error, Result},
    http::{ExchangeObserver, Hooks, Peer, Redirects, Reply, Request, RetryConfig, exchange},
};

/// The peer name in errors (`Error::Auth { provider: "magento", .. }`).
pub const PROVIDER: &str = "magento";
/// Connect timeout of every call to Magento (the module's own client uses the same).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read timeout of every call to Magento (the longest silence between two reads).
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);
/// Total time of one attempt of a call to Magento, from connecting to the last byte of the body
/// (a store sending a byte every 14 s beats the read timeout, not this).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// The largest answer body read from Magento (an invoice with hundreds of lines is tens of
/// kilobytes); a larger one is refused after this many bytes, unread beyond them.
pub const MAX_BODY: usize = 4 * 1024 * 1024;
/// The longest excerpt of a Magento error message kept in an error, an outcome or a status.
pub const MAX_MESSAGE: usize = 200;

/// An HTTP client with the protocol's timeouts (5 s to connect, 15 s to read, 60 s in all) that
/// follows **no redirect**: a store's answer cannot send the ledger (and the tenant's key, or
/// the pairing call's new key) to another address; a 3xx is reported as what it is.
///
/// # Errors
/// [`Error::Config`] when the TLS backend cannot be set up.
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .redirect(Redirects::Never.policy())
        .user_agent(concat!("byte8-ledger-core/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::config("http", format!("cannot build the HTTP client: {e}")))
}

/// `{base}/rest/V1/byte8/{path}`: the base's path with the route appended. The base is a checked
/// [`magento_base_url`] (no query, no fragment), so only the path is set, not a whole address
/// parsed again (a full parse on every request was 0.8 % of `serve`'s CPU). A route is plain
/// segments (`invoice/7`); anything else in it would be percent-encoded, not read as a query.
pub(crate) fn endpoint(base: &Url, path: &str) -> Result<Url> {
    if base.cannot_be_a_base() {
        return Err(Error::internal(format!("bad Magento endpoint {path}: the base {base} takes no path")));
    }
    let mut url = base.clone();
    url.set_path(&format!("{}/rest/V1/byte8/{}", base.path().trim_end_matches('/'), path.trim_start_matches('/')));
    Ok(url)
}

/// One request to Magento, sent by the shared request loop
/// ([`byte8_ledger_core::http::exchange`]): no redirect followed, the body capped at
/// [`MAX_BODY`], a fresh token on every attempt, retried by the crate's decision. The caller
/// turns the [`Reply`] into its error ([`client`]'s table, or the pairing call's).
pub(crate) struct Call<'a> {
    pub(crate) http: &'a reqwest::Client,
    pub(crate) request: Request,
    /// Signs each attempt with a fresh token; `None` for the anonymous pairing route.
    pub(crate) signer: Option<&'a JwtSigner>,
    pub(crate) retry: &'a RetryConfig,
    pub(crate) clock: &'a dyn Clock,
    /// Sees every attempt, when set.
    pub(crate) observer: Option<&'a dyn ExchangeObserver>,
}

/// Magento's side of the loop: a new token for every attempt (Magento caches each `jti` and
/// would refuse a re-sent one as a replay), nothing else.
struct Signing<'a>(Option<&'a JwtSigner>);

#[async_trait]
impl Hooks for Signing<'_> {
    async fn credential(&self) -> Result<Option<SecretString>> {
        self.0.map(JwtSigner::token).transpose()
    }
}

impl Call<'_> {
    /// Sends the request until it gets an answer to keep. Network failures that are not retried
    /// (any more) are [`Error::Http`].
    pub(crate) async fn execute(self) -> Result<Reply> {
        let peer = Peer {
            http: self.http,
            provider: PROVIDER,
            name: "Magento",
            retry: self.retry,
            clock: self.clock,
            max_body: MAX_BODY,
            redirects: Redirects::Never,
            stats: None,
            observer: self.observer,
        };
        exchange::send(&peer, &Signing(self.signer), self.request).await
    }
}

/// Magento's error message from a webapi error body (`{"message": "… %1 …", "parameters": […]}`)
/// with its placeholders filled, as a short, sanitised excerpt (control characters and runs of
/// white space made single spaces, at most [`MAX_MESSAGE`] characters). Anything else (an HTML
/// page, a proxy's text, JSON without `message`) is **not echoed**: it is described by its size
/// only, since errors reach the tenant through outcomes and `/v1/status` and the text may come
/// from somewhere the store's owner should not read.
pub(crate) fn magento_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let Some(msg) = parsed.as_ref().and_then(|v| v.get("message")).and_then(|m| m.as_str()) {
        let mut msg = msg.chars().take(MAX_MESSAGE * 4).collect::<String>();
        match parsed.as_ref().and_then(|v| v.get("parameters")) {
            Some(serde_json::Value::Array(items)) => {
                // Replace %10 before %1.
                for (i, item) in items.iter().enumerate().take(20).rev() {
                    msg = msg.replace(&format!("%{}", i + 1), &plain(item));
                    msg = msg.chars().take(MAX_MESSAGE * 4).collect();
                }
            }
            Some(serde_json::Value::Object(named)) => {
                for (k, item) in named.iter().take(20) {
                    msg = msg.replace(&format!("%{k}"), &plain(item));
                    msg = msg.chars().take(MAX_MESSAGE * 4).collect();
                }
            }
            _ => {}
        }
        return byte8_ledger_core::http::sanitise(&msg, MAX_MESSAGE);
    }
    exchange::unquoted(body, "a Magento error message").unwrap_or_else(|| "(empty body)".to_owned())
}

/// What a redirect from Magento says (its `Location` is not repeated: it may point anywhere).
pub(crate) fn redirect_message(label: &str, status: u16) -> String {
    format!(
        "{label}: Magento answered a redirect (HTTP {status}), which the ledger never follows: the store's base URL is \
         not the address Magento serves its REST API on (an http → https or www redirect?); pair again with the final \
         https address"
    )
}

fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.chars().take(MAX_MESSAGE).collect(),
        other => other.to_string().chars().take(MAX_MESSAGE).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_trimmed_and_checked() {
        let ok = |t: &str| magento_base_url("magento_base_url", t).unwrap().to_string();
        assert_eq!(ok(" https://shop.example.com/ "), "https://shop.example.com/");
        assert_eq!(ok("https://shop.example.com/store//"), "https://shop.example.com/store");
        assert_eq!(ok("http://127.0.0.1:8080"), "http://127.0.0.1:8080/");
        assert_eq!(ok("http://localhost"), "http://localhost/");
        assert_eq!(ok("http://[::1]:1"), "http://[::1]:1/");
        for bad in [
            "",
            "  /",
            "shop.example.com",
            "ftp://x.example",
            "http://shop.example.com",
            "https://a@b.example",
            "https://b.example/?x=1",
        ] {
            let e = magento_base_url("magento_base_url", bad).unwrap_err();
            assert_eq!(e.path, "magento_base_url", "{bad}");
        }
        let base = magento_base_url("m", "https://shop.example.com/sub/").unwrap();
        assert_eq!(
            endpoint(&base, "invoice/7").unwrap().as_str(),
            "https://shop.example.com/sub/rest/V1/byte8/invoice/7"
        );
        for (base, route, expected) in [
            ("https://shop.example.com", "/ping", "https://shop.example.com/rest/V1/byte8/ping"),
            (
                "https://shop.example.com:8443/",
                "creditmemo/12",
                "https://shop.example.com:8443/rest/V1/byte8/creditmemo/12",
            ),
            ("http://127.0.0.1:9000/a/b", "sync-state", "http://127.0.0.1:9000/a/b/rest/V1/byte8/sync-state"),
            // Not a query: a route is segments only, and anything else is sent encoded.
            ("https://shop.example.com/", "ping?x=1", "https://shop.example.com/rest/V1/byte8/ping%3Fx=1"),
        ] {
            let base = magento_base_url("m", base).unwrap_or_else(|e| panic!("{base}: {e:?}"));
            assert_eq!(endpoint(&base, route).unwrap().as_str(), expected, "{base} + {route}");
        }
    }

    #[test]
    fn magento_messages_are_filled_in() {
        let m = magento_message(
            br#"{"message":"Unknown entity_type %1; expected one of: %2","parameters":["order","invoice"]}"#,
        );
        assert_eq!(m, "Unknown entity_type order; expected one of: invoice");
        let m = magento_message(br#"{"message":"No such entity with %fieldName = %fieldValue","parameters":{"fieldName":"id","fieldValue":7}}"#);
        assert_eq!(m, "No such entity with id = 7");
        assert_eq!(magento_message(b""), "(empty body)");
    }

    #[test]
    fn a_foreign_body_is_never_echoed_and_a_message_is_short_and_on_one_line() {
        // Whatever answered (an internal service behind a redirect, a proxy), its text stays out.
        for body in [
            &b"<html>internal-admin-secret</html>"[..],
            b"ami-id\ninstance-id\nsecret-access-key",
            br#"{"Code":"Success","SecretAccessKey":"internal-admin-secret"}"#,
            br#"{"message":{"nested":"internal-admin-secret"}}"#,
        ] {
            let m = magento_message(body);
            assert!(!m.contains("secret") && !m.contains("html"), "{m}");
            assert!(m.contains(&format!("{} bytes", body.len())), "{m}");
        }
        let long = format!(r#"{{"message":"{}"}}"#, "x".repeat(1000));
        let m = magento_message(long.as_bytes());
        assert!(m.ends_with('…') && m.chars().count() == MAX_MESSAGE + 1, "{m}");
        let m = magento_message(br#"{"message":"line one\r\n\tline\u0000two\u202e  %1","parameters":["p\nq"]}"#);
        assert_eq!(m, "line one line two p q");
        // A huge parameter list or value is cut, not multiplied.
        let many = serde_json::json!({"message": "%1%1%1%1%1%1%1%1%1%1", "parameters": ["y".repeat(10_000)]});
        assert!(magento_message(many.to_string().as_bytes()).chars().count() <= MAX_MESSAGE + 1);
    }
}
