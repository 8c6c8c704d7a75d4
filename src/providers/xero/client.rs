//! The thin HTTP layer of the Xero provider. Every request:
//!
//! - takes one call from the organisation's **daily budget** (5,000 a rolling day by default): when
//!   it is spent the request is not sent and the caller gets [`Error::Deferred`] with how long
//!   to wait (Q14: a daily breach is rescheduled, never retried in a loop);
//! - waits for the **minute** limiter (60 a minute, GCRA: [`crate::http::RateLimiter`]) and a
//!   **concurrency** slot (5 at once), shared by every request to the organisation;
//! - carries `Authorization: Bearer`, `xero-tenant-id` (Q21) and, on writes, `Idempotency-Key`
//!   (never empty, ≤ 128 characters, Q2);
//! - goes through the shared request loop ([`crate::http::exchange`]) and is retried by the
//!   pure decision of [`crate::http::retry`]: a 429 is read with `Retry-After`
//!   and `X-Rate-Limit-Problem` (a `day` problem defers, anything else waits and retries), a 401
//!   refreshes the token once; `X-DayLimit-Remaining` on every answer keeps the daily budget in
//!   step with Xero's own count.

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use reqwest::{Method, header::HeaderMap};
use secrecy::SecretString;
use serde::de::DeserializeOwned;
use url::Url;

use super::{PROVIDER, error::from_status};
use crate::{
    auth::TokenManager,
    clock::Clock,
    error::{AuthFailure, Error, Result},
    http::{
        ExchangeObserver, Hooks, Peer, Redirects, Reply, Request, RequestStats, RetryConfig, TenantLimits, Verdict,
        exchange::{self, Admission, DEFAULT_MAX_BODY},
    },
};

/// The HTTP client of one Xero organisation (tenant).
pub(crate) struct XeroClient {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    pub(crate) connections_url: Url,
    pub(crate) tenant_id: String,
    pub(crate) tokens: Arc<TokenManager>,
    pub(crate) limits: TenantLimits,
    pub(crate) retry: RetryConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) stats: Arc<RequestStats>,
    /// Sees every request and answer ([`crate::http::exchange`]), when set.
    pub(crate) observer: Option<Arc<dyn ExchangeObserver>>,
}

impl fmt::Debug for XeroClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XeroClient")
            .field("base", &self.base.as_str())
            .field("tenant_id", &self.tenant_id)
            .field("retry", &self.retry)
            .field("minute", &self.limits.minute.config())
            .field("concurrency", &self.limits.concurrency.limit())
            .field("daily", &self.limits.daily.limit())
            .finish_non_exhaustive()
    }
}

/// A query: pairs, already strings.
pub(crate) type Query<'a> = &'a [(&'a str, String)];

impl XeroClient {
    /// The URL of `path` under the API root (`/Invoices`) with `query`.
    fn url(&self, path: &str, query: Query<'_>) -> Result<Url> {
        let mut url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| Error::internal(format!("bad Xero path {path}: {e}")))?;
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// GET a JSON answer.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str, query: Query<'_>) -> Result<T> {
        let url = self.url(path, query)?;
        let body = self.execute(Method::GET, url, None, true, path, None).await?;
        read_json(&body, path)
    }

    /// The connections of the token (`GET https://api.xero.com/connections`): every organisation
    /// the user connected to this app. Carries no tenant header.
    pub(crate) async fn connections<T: DeserializeOwned>(&self) -> Result<T> {
        let url = self.connections_url.clone();
        let body = self.execute(Method::GET, url, None, true, "/connections", None).await?;
        read_json(&body, "/connections")
    }

    /// A write (PUT creates, POST updates) with a JSON body and `Idempotency-Key`. Not
    /// idempotent: an answer whose outcome is unknown comes back as an error with
    /// `outcome_unknown()`, for the caller to look the records up.
    pub(crate) async fn write<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        query: Query<'_>,
        body: Vec<u8>,
        idempotency_key: &str,
    ) -> Result<T> {
        let url = self.url(path, query)?;
        let key = (!idempotency_key.trim().is_empty()).then(|| idempotency_key.to_owned());
        let answer = self.execute(method, url, Some(body), false, path, key).await?;
        read_json(&answer, path)
    }

    /// The loop's parameters for this organisation.
    fn peer(&self) -> Peer<'_> {
        Peer {
            http: &self.http,
            provider: PROVIDER,
            name: "Xero",
            retry: &self.retry,
            clock: self.clock.as_ref(),
            max_body: DEFAULT_MAX_BODY,
            redirects: Redirects::SameOrigin,
            stats: Some(&self.stats),
            observer: self.observer.as_deref(),
        }
    }

    /// Sends one request through the shared loop ([`crate::http::exchange`]) with the limits,
    /// the token and the tenant header ([`Hooks`] below), and turns an error answer into
    /// Xero's error.
    #[tracing::instrument(level = "debug", skip(self, url, body, idempotency_key), fields(tenant = %self.tenant_id))]
    async fn execute(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        idempotent: bool,
        what: &str,
        idempotency_key: Option<String>,
    ) -> Result<bytes::Bytes> {
        let mut request = Request::new(method, url, what).idempotent(idempotent);
        if !what.starts_with("/connections") {
            request = request.header("xero-tenant-id", self.tenant_id.clone());
        }
        if let Some(key) = idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let label = request.label_text().to_owned();
        let reply = exchange::send(&self.peer(), self, request).await?;
        if reply.is_success() {
            return Ok(reply.body);
        }
        let e = from_status(reply.status, &reply.body, reply.retry_after, reply.header("x-rate-limit-problem"), &label);
        if let Error::Auth { reason: AuthFailure::TokenRejected, .. } = e
            && reply.refreshed
        {
            return Err(Error::Auth {
                provider: PROVIDER,
                reason: AuthFailure::ReconnectRequired,
                message: format!(
                    "{label}: Xero refused a freshly refreshed token: reconnect (byte8-ledger connect --provider xero)"
                ),
            });
        }
        Err(e)
    }
}

/// What the Xero client does around each attempt of the shared loop.
#[async_trait]
impl Hooks for XeroClient {
    /// Takes one call from the daily budget (or defers the request when it is spent), waits for
    /// the minute limiter, and holds a concurrency slot for the attempt.
    async fn admit(&self, request: &Request) -> Result<Admission> {
        if let Err(wait) = self.limits.daily.take(self.clock.now()) {
            let whose = if self.limits.daily.spent_by_ledger(self.clock.now()) {
                "Xero says (X-DayLimit-Remaining: 0)".to_owned()
            } else {
                format!("the client-side budget of {} calls a day", self.limits.daily.limit())
            };
            return Err(Error::Deferred {
                provider: PROVIDER,
                message: format!(
                    "the daily call allowance of Xero organisation {} is spent, {whose}; {} not sent",
                    self.tenant_id,
                    request.label_text()
                ),
                retry_after: wait,
            });
        }
        self.limits.minute.until_ready().await;
        Ok(match self.limits.concurrency.acquire().await {
            Some(slot) => Admission::holding(slot),
            None => Admission::default(),
        })
    }

    /// The organisation's access token (refreshed by the token manager when due).
    async fn credential(&self) -> Result<Option<SecretString>> {
        self.tokens.access_token().await.map(Some)
    }

    async fn refused(&self, credential: &SecretString) {
        self.tokens.invalidate(credential).await;
    }

    /// `X-DayLimit-Remaining` keeps the daily budget in step with Xero's own count.
    fn answered(&self, _status: u16, headers: &HeaderMap) {
        let left = headers
            .get("x-daylimit-remaining")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u32>().ok());
        if let Some(left) = left {
            self.limits.daily.observe_remaining(left, self.clock.now());
        }
    }

    /// A 401 refreshes the token once; a 429 whose `X-Rate-Limit-Problem` is `day` stops at
    /// once (the request waits for the next day, not for a retry).
    fn verdict(&self, reply: &Reply) -> Verdict {
        match reply.status {
            401 => Verdict::Refresh,
            429 => {
                let problem = reply.header("x-rate-limit-problem");
                tracing::warn!(
                    problem = problem.unwrap_or("?"),
                    retry_after_s = reply.retry_after.map(|d| d.as_secs()),
                    "Xero rate limit hit"
                );
                if problem.is_some_and(|p| p.eq_ignore_ascii_case("day")) { Verdict::Stop } else { Verdict::Decide }
            }
            _ => Verdict::Decide,
        }
    }
}

/// Reads a JSON answer, naming the endpoint when it is not what was expected.
pub(crate) fn read_json<T: DeserializeOwned>(body: &[u8], what: &str) -> Result<T> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| Error::Provider {
        provider: PROVIDER,
        status: None,
        message: format!("{what}: Xero answered something that is not JSON: {e}"),
        retryable: false,
        source: Some(Box::new(e)),
    })?;
    crate::canonical::read("Xero response", v).map_err(|e| Error::Provider {
        provider: PROVIDER,
        status: None,
        message: format!("{what}: {e}"),
        retryable: false,
        source: Some(Box::new(e)),
    })
}

/// Xero's per-request timeout by default.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
