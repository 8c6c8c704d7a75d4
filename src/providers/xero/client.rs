//! The thin HTTP layer of the Xero provider. Every request:
//!
//! - takes one call from the organisation's **daily budget** (5,000 a rolling day by default): when
//!   it is spent the request is not sent and the caller gets [`Error::Deferred`] with how long
//!   to wait (Q14: a daily breach is rescheduled, never retried in a loop);
//! - waits for the **minute** limiter (60 a minute, GCRA: [`crate::http::RateLimiter`]) and a
//!   **concurrency** slot (5 at once), shared by every request to the organisation;
//! - carries `Authorization: Bearer`, `xero-tenant-id` (Q21) and, on writes, `Idempotency-Key`
//!   (never empty, ≤ 128 characters, Q2);
//! - is retried by the pure decision of [`crate::http::retry`]: a 429 is read with `Retry-After`
//!   and `X-Rate-Limit-Problem` (a `day` problem defers, anything else waits and retries), a 401
//!   refreshes the token once; `X-DayLimit-Remaining` on every answer keeps the daily budget in
//!   step with Xero's own count.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{Method, header};
use secrecy::ExposeSecret;
use serde::de::DeserializeOwned;
use url::Url;

use super::{PROVIDER, error::from_status};
use crate::{
    auth::TokenManager,
    clock::Clock,
    error::{AuthFailure, Error, Result},
    http::{
        Attempt, Decision, RequestStats, RetryConfig, TenantLimits, after_network_error, decide,
        retry::parse_retry_after, stats::fold_ids,
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

    /// Sends one request with the limits, the token, the tenant header and the retry decision.
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
        let started = Instant::now();
        let mut retries = 0u32;
        let mut refreshed_after_401 = false;
        let label = format!("{method} {}", fold_ids(what));
        let tenant_scoped = !what.starts_with("/connections");
        loop {
            if let Err(wait) = self.limits.daily.take(self.clock.now()) {
                let whose = if self.limits.daily.spent_by_ledger(self.clock.now()) {
                    "Xero says (X-DayLimit-Remaining: 0)".to_owned()
                } else {
                    format!("the client-side budget of {} calls a day", self.limits.daily.limit())
                };
                return Err(Error::Deferred {
                    provider: PROVIDER,
                    message: format!(
                        "the daily call allowance of Xero organisation {} is spent, {whose}; {label} not sent",
                        self.tenant_id
                    ),
                    retry_after: wait,
                });
            }
            self.limits.minute.until_ready().await;
            let _slot = self.limits.concurrency.acquire().await;
            let token = match self.tokens.access_token().await {
                Ok(t) => t,
                Err(e) if e.is_retryable() => {
                    if let Decision::Retry(d) =
                        decide(Attempt::NotSent, retries, started.elapsed(), true, &self.retry, rand::random())
                    {
                        retries += 1;
                        tokio::time::sleep(d).await;
                        continue;
                    }
                    return Err(e);
                }
                Err(e) => return Err(e),
            };
            let mut req = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.expose_secret())
                .header(header::ACCEPT, "application/json");
            if tenant_scoped {
                req = req.header("xero-tenant-id", &self.tenant_id);
            }
            if let Some(k) = &idempotency_key {
                req = req.header("Idempotency-Key", k);
            }
            if let Some(b) = &body {
                req = req.header(header::CONTENT_TYPE, "application/json").body(b.clone());
            }
            self.stats.record(&method, what);
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let headers = resp.headers().clone();
                    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                    if let Some(left) = text("x-daylimit-remaining").and_then(|v| v.trim().parse::<u32>().ok()) {
                        self.limits.daily.observe_remaining(left, self.clock.now());
                    }
                    let retry_after = text("retry-after").and_then(|v| parse_retry_after(&v, self.clock.now()));
                    let problem = text("x-rate-limit-problem");
                    let answer = resp.bytes().await.map_err(|e| {
                        let e = e.without_url();
                        Error::Http {
                            provider: PROVIDER,
                            message: format!("{label}: the answer was cut off: {e}"),
                            outcome_unknown: !idempotent,
                            source: Some(Box::new(e)),
                        }
                    })?;
                    if (200..300).contains(&status) {
                        return Ok(answer);
                    }
                    if status == 401 && !refreshed_after_401 {
                        // A token Xero refused although we thought it fresh: refresh once.
                        refreshed_after_401 = true;
                        self.tokens.invalidate(&token).await;
                        continue;
                    }
                    if status == 429 {
                        self.stats.count_throttled();
                        tracing::warn!(request = %label, problem = problem.as_deref().unwrap_or("?"), retry_after_s = retry_after.map(|d| d.as_secs()), "Xero rate limit hit");
                        if problem.as_deref().is_some_and(|p| p.eq_ignore_ascii_case("day")) {
                            return Err(from_status(status, &answer, retry_after, problem.as_deref(), &label));
                        }
                    }
                    match decide(
                        Attempt::Status { status, retry_after },
                        retries,
                        started.elapsed(),
                        idempotent,
                        &self.retry,
                        rand::random(),
                    ) {
                        Decision::Retry(d) => {
                            tracing::info!(request = %label, status, attempt = retries + 1, delay_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX), "retrying");
                            retries += 1;
                            self.stats.count_retry();
                            tokio::time::sleep(d).await;
                            continue;
                        }
                        Decision::GiveUp | Decision::Ambiguous => {
                            let e = from_status(status, &answer, retry_after, problem.as_deref(), &label);
                            if let Error::Auth { reason: AuthFailure::TokenRejected, .. } = e
                                && refreshed_after_401
                            {
                                return Err(Error::Auth {
                                    provider: PROVIDER,
                                    reason: AuthFailure::ReconnectRequired,
                                    message: format!(
                                        "{label}: Xero refused a freshly refreshed token: reconnect (byte8-ledger connect --provider xero)"
                                    ),
                                });
                            }
                            return Err(e);
                        }
                    }
                }
                Err(e) => {
                    let d =
                        after_network_error(e, PROVIDER, &label, retries, started.elapsed(), idempotent, &self.retry)?;
                    retries += 1;
                    self.stats.count_retry();
                    tokio::time::sleep(d).await;
                }
            }
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
