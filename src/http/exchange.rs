//! The one request loop every HTTP client of the crate family shares (the Sage and Xero
//! providers here, the Magento client of `byte8-ledger-service`): send, classify, back off,
//! retry (with the server's `Retry-After`), read the body under a size cap, and describe what
//! went wrong without quoting a stranger's text.
//!
//! [`send`] takes three things:
//!
//! - a [`Request`]: method, URL, the JSON body, the client's own headers (`X-Business`,
//!   `xero-tenant-id`, `Idempotency-Key`), whether repeating it is harmless, and the label that
//!   logs and errors name (`GET /contacts/{id}`, never a token);
//! - the [`Peer`]: the parameters that differ between clients — the error's provider name, the
//!   retry settings, the clock `Retry-After` dates are read with, the body cap
//!   ([`DEFAULT_MAX_BODY`] for the ledgers, 4 MiB for Magento), the [`Redirects`] policy, the
//!   request counters and an optional [`ExchangeObserver`];
//! - the [`Hooks`]: what a client does around each attempt — wait for its rate limits or refuse
//!   (Xero's spent daily allowance), mint the bearer token (a [`TokenManager`](crate::auth::TokenManager)'s,
//!   or a fresh Magento JWT each attempt), read the headers of every answer (Xero's
//!   `X-DayLimit-Remaining`), and say what an error answer means ([`Verdict`]: apply the retry
//!   decision, refresh a refused token once, or stop at once).
//!
//! # What the loop does with an attempt
//!
//! | what happened | what the loop does |
//! |---|---|
//! | [`Hooks::admit`] refuses | returns its error, nothing sent |
//! | the token cannot be had, retryably | retries as a request never sent ([`Attempt::NotSent`]) |
//! | 2xx | returns the [`Reply`] |
//! | the answer came from another address than allowed ([`Redirects`]) | [`Error::Provider`], not retryable, body unread |
//! | the body is larger than the cap | [`Error::Provider`], not retryable, unread past the cap |
//! | the body was cut off, or the request failed in the network | [`decide`] with [`Attempt::Interrupted`] / [`Attempt::NotSent`]; when it gives up, [`Error::Http`] whose `outcome_unknown` is true for a sent request that is not idempotent |
//! | another status, [`Verdict::Refresh`] and no refresh yet | the token is reported refused ([`Hooks::refused`]) and the request sent again (not counted as a retry) |
//! | another status, [`Verdict::Stop`] | returns the [`Reply`] |
//! | another status, [`Verdict::Decide`] | [`decide`]: wait and retry, or return the [`Reply`] |
//!
//! The loop returns the last answer rather than an error for a status, since only the client
//! knows its ledger's error body: it turns a non-2xx [`Reply`] into its error (Sage's
//! `from_status`, Xero's, Magento's table). Error bodies that are not the ledger's own error
//! format are described by [`unquoted`], never quoted.
//!
//! Writes that are not idempotent are never re-sent by the loop once their outcome is unknown:
//! the provider looks the record up and re-sends within a budget drawn from the same
//! [`RetryConfig`] (`ResendBudget`, in [`crate::http`]'s private `resend` module).
//!
//! # The exchange observer
//!
//! Every attempt that was sent (answered or not) is shown to the peer's [`ExchangeObserver`],
//! when it has one: method, URL, attempt number, the request body (withheld when the request is
//! marked [`Request::secret_json`], as the Magento pairing call is, since it carries the
//! tenant's key), the status and the answer's body (as read, up to the cap), or the network
//! error. Headers are never shown: they carry the bearer token. This is the hook point for a
//! per-run audit of the requests a sync made; the observer is called synchronously on the
//! request's task, so it should only copy what it keeps (and redact it) and return.

use std::{
    fmt,
    time::{Duration, Instant},
};

use async_trait::async_trait;
use bytes::Bytes;
use reqwest::{
    Method,
    header::{self, HeaderMap},
};
use secrecy::{ExposeSecret, SecretString};
use url::Url;

use super::{
    Attempt, Decision, RequestStats, RetryConfig, decide, retry::parse_retry_after, same_origin_redirects,
    stats::fold_ids,
};
use crate::{
    clock::Clock,
    error::{Error, Result},
};

/// The largest answer body the ledger clients read: 32 MiB. A Sage list page of 200 full sales
/// invoices is a few megabytes; a larger answer is refused after this many bytes, unread beyond
/// them, so that no server can make the process hold an unbounded body.
pub const DEFAULT_MAX_BODY: usize = 32 * 1024 * 1024;

/// Which redirects a client's requests may follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redirects {
    /// Within the request's origin (scheme, host and port), at most 5 times
    /// ([`same_origin_redirects`]): the ledger clients. An answer that nevertheless comes from
    /// another origin (a client of the caller's own with another policy) is refused unread.
    SameOrigin,
    /// None at all: the Magento client, whose requests carry the tenant's token or key. A 3xx
    /// is returned as the answer; an answer from another URL than the one asked (a client of the
    /// caller's own that followed a redirect) is refused unread.
    Never,
}

impl Redirects {
    /// The `reqwest` policy that implements this one, for building the client.
    pub fn policy(self) -> reqwest::redirect::Policy {
        match self {
            Self::SameOrigin => same_origin_redirects(),
            Self::Never => reqwest::redirect::Policy::none(),
        }
    }

    /// Whether an answer from `answered` is acceptable for a request to `asked`.
    fn allows(self, asked: &Url, answered: &Url) -> bool {
        match self {
            Self::SameOrigin => asked.origin() == answered.origin(),
            Self::Never => asked == answered,
        }
    }
}

/// One request for [`send`].
#[derive(Clone)]
pub struct Request {
    method: Method,
    url: Url,
    path: String,
    label: String,
    body: Option<Bytes>,
    secret_body: bool,
    headers: Vec<(&'static str, String)>,
    idempotent: bool,
    timeout: Option<Duration>,
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Request")
            .field("label", &self.label)
            .field("url", &self.url.as_str())
            .field("body_bytes", &self.body.as_ref().map(Bytes::len))
            .field("idempotent", &self.idempotent)
            .finish_non_exhaustive()
    }
}

impl Request {
    /// A request of `method` to `url`; `path` is the endpoint the request counters and the
    /// label name, ids folded (`/contacts/0c8f…` counts as `GET /contacts/{id}`). GET, HEAD,
    /// PUT and DELETE are idempotent unless [`idempotent`](Self::idempotent) says otherwise;
    /// POST and PATCH are not.
    pub fn new(method: Method, url: Url, path: &str) -> Self {
        let idempotent = matches!(method, Method::GET | Method::HEAD | Method::PUT | Method::DELETE);
        let label = format!("{method} {}", fold_ids(path));
        Self {
            method,
            url,
            path: path.to_owned(),
            label,
            body: None,
            secret_body: false,
            headers: Vec::new(),
            idempotent,
            timeout: None,
        }
    }

    /// A JSON body (sent with `Content-Type: application/json`).
    #[must_use]
    pub fn json(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self
    }

    /// A JSON body that carries a secret (the pairing call's key): an [`ExchangeObserver`] is
    /// told its size only.
    #[must_use]
    pub fn secret_json(mut self, body: impl Into<Bytes>) -> Self {
        self.body = Some(body.into());
        self.secret_body = true;
        self
    }

    /// A header of the client's own on every attempt (`X-Business`, `Idempotency-Key`); never
    /// a credential, which [`Hooks::credential`] gives.
    #[must_use]
    pub fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    /// Whether repeating the request is harmless: then a 5xx, 408 or an interrupted attempt is
    /// retried; otherwise the outcome of such an attempt is unknown and the loop stops
    /// ([`crate::http::retry`]'s table). Magento's sync-state POST is an upsert, so idempotent.
    #[must_use]
    pub fn idempotent(mut self, idempotent: bool) -> Self {
        self.idempotent = idempotent;
        self
    }

    /// What logs and errors call the request, instead of `METHOD path-with-ids-folded`.
    #[must_use]
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// The total time of each attempt, connecting and reading the body included (the client's
    /// own timeout otherwise).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// What logs and errors call the request.
    pub fn label_text(&self) -> &str {
        &self.label
    }
}

/// The answer [`send`] stopped at: a 2xx, or an error status that is not retried (any more).
#[derive(Debug, Clone)]
pub struct Reply {
    /// The HTTP status.
    pub status: u16,
    /// The server's `Retry-After`, read with [`parse_retry_after`] (capped, never a panic).
    pub retry_after: Option<Duration>,
    /// The answer's headers (Xero's `X-Rate-Limit-Problem` is read from them).
    pub headers: HeaderMap,
    /// The body, at most the peer's cap.
    pub body: Bytes,
    /// Whether the token was refreshed after a refusal on the way ([`Verdict::Refresh`]): a
    /// second refusal then means the refreshed token is refused too.
    pub refreshed: bool,
}

impl Reply {
    /// True for a 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// A header's value as text, when present and readable.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// What the loop does with an error answer, as the client's [`Hooks::verdict`] says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Apply the retry decision ([`decide`]).
    Decide,
    /// The peer refused the token: report it refused ([`Hooks::refused`]) and send again with a
    /// new one, once per request; a second refusal is decided like any other status.
    Refresh,
    /// Stop now and return the answer (Xero's 429 for a spent daily allowance, which waits for
    /// the next day rather than a retry).
    Stop,
}

/// What lets an attempt go: held until the attempt's answer has been read and decided on (a
/// Xero concurrency slot).
#[derive(Default)]
pub struct Admission {
    held: Option<Box<dyn Send + Sync>>,
}

impl fmt::Debug for Admission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Admission").field("holding", &self.held.is_some()).finish()
    }
}

impl Admission {
    /// An admission holding `guard` (a semaphore permit) for the attempt.
    pub fn holding(guard: impl Send + Sync + 'static) -> Self {
        Self { held: Some(Box::new(guard)) }
    }
}

/// What a client does around each attempt of [`send`]. Every method has a default that does
/// nothing but [`credential`](Self::credential).
#[async_trait]
pub trait Hooks: Send + Sync {
    /// Before each attempt: waits for the client's rate limits and returns what to hold during
    /// the attempt, or refuses it (Xero's daily allowance, spent: [`Error::Deferred`]).
    ///
    /// # Errors
    /// Returned by [`send`] as it is, with nothing sent.
    async fn admit(&self, request: &Request) -> Result<Admission> {
        let _ = request;
        Ok(Admission::default())
    }

    /// The bearer token of this attempt, or `None` to send no `Authorization` (Magento's
    /// anonymous pairing call).
    ///
    /// # Errors
    /// A retryable error (the token endpoint is down) is retried as a request never sent; any
    /// other is returned by [`send`].
    async fn credential(&self) -> Result<Option<SecretString>>;

    /// Reports the token of an attempt the peer refused ([`Verdict::Refresh`]), so that the next
    /// [`credential`](Self::credential) is a new one.
    async fn refused(&self, credential: &SecretString) {
        let _ = credential;
    }

    /// Sees the status and headers of every answer before its body is read (Xero's
    /// `X-DayLimit-Remaining` keeps the daily budget in step).
    fn answered(&self, status: u16, headers: &HeaderMap) {
        let _ = (status, headers);
    }

    /// What an answer that is not a 2xx means for the loop.
    fn verdict(&self, reply: &Reply) -> Verdict {
        let _ = reply;
        Verdict::Decide
    }
}

/// One attempt as the loop saw it, for an [`ExchangeObserver`].
#[derive(Debug, Clone, Copy)]
pub struct Exchange<'a> {
    /// The peer (`sage_accounting`, `xero`, `magento`).
    pub provider: &'static str,
    /// The method.
    pub method: &'a Method,
    /// The URL asked (its query included; never a credential: ledger URLs carry none).
    pub url: &'a Url,
    /// The request's label (`POST /sales_invoices`).
    pub label: &'a str,
    /// 0 for the first attempt, then 1, 2, … (token refreshes and retries alike).
    pub attempt: u32,
    /// The request body; `None` without one or when it carries a secret
    /// ([`Request::secret_json`]).
    pub request_body: Option<&'a [u8]>,
    /// The answer's status; `None` when no answer came.
    pub status: Option<u16>,
    /// The answer's body as read (at most the cap); `None` when none was read.
    pub response_body: Option<&'a [u8]>,
    /// What failed, when the attempt did not end with a readable answer (a network error, a
    /// body cut off or over the cap, a refused redirect).
    pub failure: Option<&'a str>,
    /// How long the attempt took, from sending to the end of the body.
    pub elapsed: Duration,
}

/// Sees every attempt [`send`] makes: the hook point for recording what a sync sent and what
/// the ledger answered (an audit per run). Called on the request's task after each attempt;
/// the default does nothing. It receives bodies as sent and answered: an implementation that
/// stores them redacts what it must. It never sees headers.
pub trait ExchangeObserver: Send + Sync + fmt::Debug {
    /// One attempt ended.
    fn exchange(&self, exchange: &Exchange<'_>) {
        let _ = exchange;
    }
}

/// The per-client parameters of [`send`].
#[derive(Clone, Copy)]
pub struct Peer<'a> {
    /// The client that sends (its redirect policy should be [`Redirects::policy`] of
    /// [`redirects`](Self::redirects)).
    pub http: &'a reqwest::Client,
    /// The provider name errors carry (`sage_accounting`).
    pub provider: &'static str,
    /// The peer's name in messages (`Sage`).
    pub name: &'static str,
    /// Retry settings.
    pub retry: &'a RetryConfig,
    /// The clock an HTTP-date `Retry-After` is read against.
    pub clock: &'a dyn Clock,
    /// The largest body read ([`DEFAULT_MAX_BODY`] for the ledgers).
    pub max_body: usize,
    /// Which answers from another address are refused.
    pub redirects: Redirects,
    /// Counters of requests, retries and 429s, when the client keeps them.
    pub stats: Option<&'a RequestStats>,
    /// Sees every attempt, when set.
    pub observer: Option<&'a dyn ExchangeObserver>,
}

impl fmt::Debug for Peer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Peer")
            .field("provider", &self.provider)
            .field("retry", self.retry)
            .field("max_body", &self.max_body)
            .field("redirects", &self.redirects)
            .finish_non_exhaustive()
    }
}

/// Why a body was not read.
enum BodyError {
    /// The connection failed or timed out while the body was read.
    Network(reqwest::Error),
    /// The body is longer than the cap.
    TooLarge,
}

/// Reads a body chunk by chunk, refusing it as soon as it passes `cap` bytes (a body that says
/// its length is refused before any of it is read).
async fn read_capped(mut resp: reqwest::Response, cap: usize) -> std::result::Result<Bytes, BodyError> {
    if resp.content_length().is_some_and(|n| n > u64::try_from(cap).unwrap_or(u64::MAX)) {
        return Err(BodyError::TooLarge);
    }
    let within = |n: usize| if n > cap { Err(BodyError::TooLarge) } else { Ok(()) };
    let Some(first) = resp.chunk().await.map_err(BodyError::Network)? else {
        return Ok(Bytes::new());
    };
    within(first.len())?;
    // A body that comes in one chunk (most answers) is that chunk, not a copy of it.
    let Some(mut chunk) = resp.chunk().await.map_err(BodyError::Network)? else {
        return Ok(first);
    };
    let mut body = bytes::BytesMut::from(&first[..]);
    loop {
        within(body.len().saturating_add(chunk.len()))?;
        body.extend_from_slice(&chunk);
        match resp.chunk().await.map_err(BodyError::Network)? {
            Some(next) => chunk = next,
            None => return Ok(body.freeze()),
        }
    }
}

/// "an answer of 1234 bytes that is not Sage's error JSON (not quoted)": how an error body that
/// is not the peer's own error format is described, or `None` for an empty (or blank) body.
/// Such a body may be a proxy's page or come from somewhere the tenant should not read, and the
/// description reaches outcomes and `/v1/status`: it is never quoted.
pub fn unquoted(body: &[u8], what: &str) -> Option<String> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    Some(format!("an answer of {} bytes that is not {what} (not quoted)", body.len()))
}

/// A delay in whole milliseconds, for logs.
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// How one attempt failed without an answer to decide on.
struct NetworkFailure {
    error: reqwest::Error,
    /// Whether the request had been sent.
    sent: bool,
    /// Whether the answer had begun (its body was cut off).
    cut_off: bool,
}

/// Sends `request` until it gets an answer to keep, as the [module docs](self) describe: a 2xx,
/// or an error status that is not retried (any more), for the client to turn into its error.
///
/// # Errors
/// [`Hooks::admit`]'s refusal; the credential's error; [`Error::Provider`] (not retryable) for
/// an answer over the cap or from an address the [`Redirects`] policy refuses; [`Error::Http`]
/// for a network failure that is not retried (any more), `outcome_unknown` when a request that
/// is not idempotent was sent.
pub async fn send(peer: &Peer<'_>, hooks: &dyn Hooks, request: Request) -> Result<Reply> {
    let started = Instant::now();
    let mut retries = 0u32;
    let mut attempt = 0u32;
    let mut refreshed = false;
    let label = request.label.as_str();
    loop {
        let admission = hooks.admit(&request).await?;
        let credential = match hooks.credential().await {
            Ok(c) => c,
            Err(e) if e.is_retryable() => {
                if let Decision::Retry(d) =
                    decide(Attempt::NotSent, retries, started.elapsed(), true, peer.retry, rand::random())
                {
                    drop(admission);
                    tracing::info!(request = %label, attempt = retries + 1, error = %e, "retrying: no token yet");
                    retries += 1;
                    tokio::time::sleep(d).await;
                    continue;
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let mut req =
            peer.http.request(request.method.clone(), request.url.clone()).header(header::ACCEPT, "application/json");
        if let Some(token) = &credential {
            req = req.bearer_auth(token.expose_secret());
        }
        for (name, value) in &request.headers {
            req = req.header(*name, value);
        }
        if let Some(body) = &request.body {
            req = req.header(header::CONTENT_TYPE, "application/json").body(body.clone());
        }
        if let Some(timeout) = request.timeout {
            req = req.timeout(timeout);
        }
        if let Some(stats) = peer.stats {
            stats.record(&request.method, &request.path);
        }
        let this_attempt = attempt;
        attempt += 1;
        let sent_at = Instant::now();
        let observe = |status: Option<u16>, response_body: Option<&[u8]>, failure: Option<&str>| {
            if let Some(observer) = peer.observer {
                observer.exchange(&Exchange {
                    provider: peer.provider,
                    method: &request.method,
                    url: &request.url,
                    label,
                    attempt: this_attempt,
                    request_body: request.body.as_deref().filter(|_| !request.secret_body),
                    status,
                    response_body,
                    failure,
                    elapsed: sent_at.elapsed(),
                });
            }
        };
        // An answer the loop will not use (from another address, or over the cap): observed
        // with why, and a provider error that is not retried.
        let refuse = |status: u16, message: String| {
            observe(Some(status), None, Some(&message));
            Error::Provider { provider: peer.provider, status: Some(status), message, retryable: false, source: None }
        };
        let failure = match req.send().await {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                if !peer.redirects.allows(&request.url, resp.url()) {
                    let message = format!(
                        "{label}: {} redirected the call elsewhere, which the ledger never follows: check the base URL it \
                         is set up with",
                        peer.name
                    );
                    return Err(refuse(status, message));
                }
                // Taken, not copied: the body is read without them.
                let headers = std::mem::take(resp.headers_mut());
                hooks.answered(status, &headers);
                let retry_after = headers
                    .get(header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| parse_retry_after(v, peer.clock.now()));
                match read_capped(resp, peer.max_body).await {
                    Err(BodyError::TooLarge) => {
                        let message = format!(
                            "{label}: {}'s answer (HTTP {status}) is larger than {} MiB: not read",
                            peer.name,
                            peer.max_body / (1024 * 1024)
                        );
                        return Err(refuse(status, message));
                    }
                    Err(BodyError::Network(error)) => NetworkFailure { error, sent: true, cut_off: true },
                    Ok(body) => {
                        observe(Some(status), Some(&body), None);
                        let reply = Reply { status, retry_after, headers, body, refreshed };
                        if reply.is_success() {
                            return Ok(reply);
                        }
                        if status == 429
                            && let Some(stats) = peer.stats
                        {
                            stats.count_throttled();
                        }
                        match hooks.verdict(&reply) {
                            Verdict::Stop => return Ok(reply),
                            Verdict::Refresh if !refreshed => {
                                // A token the peer refused although we thought it fresh: once.
                                refreshed = true;
                                if let Some(token) = &credential {
                                    hooks.refused(token).await;
                                }
                                continue;
                            }
                            Verdict::Refresh | Verdict::Decide => {}
                        }
                        match decide(
                            Attempt::Status { status, retry_after },
                            retries,
                            started.elapsed(),
                            request.idempotent,
                            peer.retry,
                            rand::random(),
                        ) {
                            Decision::Retry(d) => {
                                drop(admission);
                                tracing::info!(request = %label, provider = peer.provider, status, attempt = retries + 1, delay_ms = millis(d), "retrying");
                                retries += 1;
                                if let Some(stats) = peer.stats {
                                    stats.count_retry();
                                }
                                tokio::time::sleep(d).await;
                                continue;
                            }
                            Decision::GiveUp | Decision::Ambiguous => return Ok(reply),
                        }
                    }
                }
            }
            Err(error) => {
                let sent = !error.is_connect() && !error.is_builder();
                NetworkFailure { error, sent, cut_off: false }
            }
        };
        let NetworkFailure { error, sent, cut_off } = failure;
        let error = error.without_url();
        let message =
            if cut_off { format!("{label}: the answer was cut off: {error}") } else { format!("{label}: {error}") };
        observe(None, None, Some(&message));
        let what = if sent { Attempt::Interrupted } else { Attempt::NotSent };
        match decide(what, retries, started.elapsed(), request.idempotent, peer.retry, rand::random()) {
            Decision::Retry(d) => {
                drop(admission);
                tracing::info!(request = %label, provider = peer.provider, attempt = retries + 1, error = %message, "retrying after a network error");
                retries += 1;
                if let Some(stats) = peer.stats {
                    stats.count_retry();
                }
                tokio::time::sleep(d).await;
            }
            Decision::GiveUp | Decision::Ambiguous => {
                return Err(Error::Http {
                    provider: peer.provider,
                    message,
                    outcome_unknown: sent && !request.idempotent,
                    source: Some(Box::new(error)),
                });
            }
        }
    }
}
