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
//!   [`EntitySource`](crate::engine::EntitySource)) and the sync-state callback; it tracks the
//!   connection status (`pending | active | token_revoked`).
//!
//! # What an HTTP answer means
//!
//! | answer from Magento | error |
//! |---|---|
//! | 2xx | none; the connection is `active` |
//! | 401 | [`Error::Auth`] ([`AuthFailure::ReconnectRequired`](crate::error::AuthFailure::ReconnectRequired)); the connection becomes `token_revoked` |
//! | 403 | [`Error::Auth`] (`AccessDenied`) |
//! | 404 | [`Error::NotFound`] |
//! | 429, 408, 5xx, network errors | retried by [`crate::http::retry::decide`], then a retryable error |
//! | other 4xx | [`Error::Rejected`] with Magento's message |
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
pub mod keys;
pub mod pairing;

use std::{
    net::IpAddr,
    time::{Duration, Instant},
};

use bytes::Bytes;
pub use client::{ConnectionStatus, MagentoClient, MagentoClientBuilder, PaymentMethod, Ping, SyncStateBody};
pub use jwt::{Claims, JwtSigner, MemoryReplayCache, ReplayCache, WebhookVerifier};
pub use keys::{ApiKey, Direction, MagentoKeys, SubKey};
pub use pairing::{PairRequest, PairingCode};
use reqwest::{Method, header};
use secrecy::ExposeSecret;
use url::Url;

use crate::{
    clock::Clock,
    error::{Error, FieldError, Result},
    http::{Attempt, Decision, RetryConfig, decide, retry::parse_retry_after},
};

/// The peer name in errors (`Error::Auth { provider: "magento", .. }`).
pub const PROVIDER: &str = "magento";
/// Connect timeout of every call to Magento (the module's own client uses the same).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read timeout of every call to Magento.
pub const READ_TIMEOUT: Duration = Duration::from_secs(15);

/// An HTTP client with the protocol's timeouts (5 s to connect, 15 s to read).
///
/// # Errors
/// [`Error::Config`] when the TLS backend cannot be set up.
pub fn http_client() -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .read_timeout(READ_TIMEOUT)
        .user_agent(concat!("byte8-ledger-core/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::config("http", format!("cannot build the HTTP client: {e}")))
}

/// Reads a Magento base URL as the merchant types it: trimmed, trailing slashes dropped, http(s)
/// with a host, no query or fragment, `https` unless the host is loopback.
pub(crate) fn magento_base_url(field: &str, text: &str) -> std::result::Result<Url, FieldError> {
    let text = text.trim().trim_end_matches('/');
    if text.is_empty() {
        return Err(FieldError::new(field, "required"));
    }
    let url = Url::parse(text).map_err(|e| FieldError::new(field, format!("`{text}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(FieldError::new(field, format!("`{text}` is not an absolute http(s) URL")));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(FieldError::new(field, "must not carry credentials, a query or a fragment"));
    }
    if url.scheme() == "http" && !is_loopback(&url) {
        return Err(FieldError::new(field, "must be https (plain http is accepted only on a loopback host)"));
    }
    Ok(url)
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        None => false,
    }
}

/// `{base}/rest/V1/byte8/{path}`.
pub(crate) fn endpoint(base: &Url, path: &str) -> Result<Url> {
    let text = format!("{}/rest/V1/byte8/{}", base.as_str().trim_end_matches('/'), path.trim_start_matches('/'));
    Url::parse(&text).map_err(|e| Error::internal(format!("bad Magento endpoint {path}: {e}")))
}

/// One request to Magento, retried by the crate's decision.
pub(crate) struct Call<'a> {
    pub(crate) http: &'a reqwest::Client,
    pub(crate) method: Method,
    pub(crate) url: Url,
    pub(crate) body: Option<Vec<u8>>,
    /// Signs each attempt with a fresh token; `None` for the anonymous pairing route.
    pub(crate) signer: Option<&'a JwtSigner>,
    pub(crate) idempotent: bool,
    pub(crate) retry: &'a RetryConfig,
    pub(crate) clock: &'a dyn Clock,
    /// `GET invoice/{id}`: what logs and errors name (never a token).
    pub(crate) label: String,
}

/// The last answer of a call: a 2xx, or a status the retry decision gave up on.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) retry_after: Option<Duration>,
    pub(crate) body: Bytes,
}

impl Call<'_> {
    /// Sends the request until it gets an answer to keep. Network failures that are not retried
    /// (any more) are [`Error::Http`].
    pub(crate) async fn execute(self) -> Result<Reply> {
        let started = Instant::now();
        let mut retries = 0u32;
        loop {
            let mut req =
                self.http.request(self.method.clone(), self.url.clone()).header(header::ACCEPT, "application/json");
            if let Some(signer) = self.signer {
                let token = signer.token()?;
                req = req.bearer_auth(token.expose_secret());
            }
            if let Some(b) = &self.body {
                req = req.header(header::CONTENT_TYPE, "application/json").body(b.clone());
            }
            let attempt = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, self.clock.now()));
                    match resp.bytes().await {
                        Ok(body) if (200..300).contains(&status) => return Ok(Reply { status, retry_after, body }),
                        Ok(body) => match decide(
                            Attempt::Status { status, retry_after },
                            retries,
                            started.elapsed(),
                            self.idempotent,
                            self.retry,
                            rand::random(),
                        ) {
                            Decision::Retry(d) => {
                                tracing::info!(request = %self.label, status, attempt = retries + 1, delay_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX), "retrying Magento call");
                                Some(d)
                            }
                            Decision::GiveUp | Decision::Ambiguous => {
                                return Ok(Reply { status, retry_after, body });
                            }
                        },
                        Err(e) => {
                            self.network_failure(Attempt::Interrupted, retries, started, e.without_url(), true)?
                        }
                    }
                }
                Err(e) => {
                    let sent = !e.is_connect() && !e.is_builder();
                    let attempt = if sent { Attempt::Interrupted } else { Attempt::NotSent };
                    self.network_failure(attempt, retries, started, e.without_url(), sent)?
                }
            };
            if let Some(d) = attempt {
                retries += 1;
                tokio::time::sleep(d).await;
            }
        }
    }

    /// Decides on a network failure: the delay of a retry, or the error to return.
    fn network_failure(
        &self,
        attempt: Attempt,
        retries: u32,
        started: Instant,
        e: reqwest::Error,
        sent: bool,
    ) -> Result<Option<Duration>> {
        let message = format!("{}: {e}", self.label);
        match decide(attempt, retries, started.elapsed(), self.idempotent, self.retry, rand::random()) {
            Decision::Retry(d) => {
                tracing::info!(request = %self.label, attempt = retries + 1, error = %message, "retrying Magento call after a network error");
                Ok(Some(d))
            }
            Decision::GiveUp | Decision::Ambiguous => Err(Error::Http {
                provider: PROVIDER,
                message,
                outcome_unknown: sent && !self.idempotent,
                source: Some(Box::new(e)),
            }),
        }
    }
}

/// Magento's error message from a webapi error body (`{"message": "… %1 …", "parameters": […]}`)
/// with its placeholders filled, or the start of the body when it is not one.
pub(crate) fn magento_message(body: &[u8]) -> String {
    let parsed: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    if let Some(msg) = parsed.as_ref().and_then(|v| v.get("message")).and_then(|m| m.as_str()) {
        let mut msg = msg.to_owned();
        match parsed.as_ref().and_then(|v| v.get("parameters")) {
            Some(serde_json::Value::Array(items)) => {
                // Replace %10 before %1.
                for (i, item) in items.iter().enumerate().rev() {
                    msg = msg.replace(&format!("%{}", i + 1), &plain(item));
                }
            }
            Some(serde_json::Value::Object(named)) => {
                for (k, item) in named {
                    msg = msg.replace(&format!("%{k}"), &plain(item));
                }
            }
            _ => {}
        }
        return msg;
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "(empty body)".to_owned();
    }
    let cut: String = text.chars().take(300).collect();
    if cut.len() < text.len() { format!("{cut}…") } else { cut }
}

fn plain(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
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
        assert_eq!(magento_message(b"<html>oops</html>"), "<html>oops</html>");
        assert!(magento_message("x".repeat(1000).as_bytes()).ends_with('…'));
    }
}
