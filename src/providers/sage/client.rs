//! The thin HTTP layer of the Sage provider: every request carries the bearer token and
//! `X-Business`, waits for the per-business rate limiter, and is retried by the pure decision of
//! [`crate::http::retry`]; lists ask for `attributes=all` and `items_per_page=200` and follow
//! `$next`.

use std::{
    fmt,
    sync::Arc,
    time::{Duration, Instant},
};

use reqwest::{Method, header};
use secrecy::ExposeSecret;
use serde::{Serialize, de::DeserializeOwned};
use url::Url;

use super::{PROVIDER, error::from_status, model::Page};
pub use crate::http::RequestStats;
use crate::http::stats::fold_ids;
use crate::{
    auth::TokenManager,
    clock::Clock,
    error::{AuthFailure, Error, Result},
    http::{Attempt, Decision, RateLimiter, RetryConfig, after_network_error, decide, retry::parse_retry_after},
};

/// The HTTP client of one Sage business.
pub struct SageClient {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    pub(crate) business_id: String,
    pub(crate) tokens: Arc<TokenManager>,
    pub(crate) limiter: RateLimiter,
    pub(crate) retry: RetryConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) stats: Arc<RequestStats>,
}

impl fmt::Debug for SageClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SageClient")
            .field("base", &self.base.as_str())
            .field("business_id", &self.business_id)
            .field("retry", &self.retry)
            .field("rate", &self.limiter.config())
            .finish_non_exhaustive()
    }
}

/// One successful answer.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) body: bytes::Bytes,
}

impl SageClient {
    /// The URL of `path` (relative to the API root, e.g. `/contacts`) with `query`.
    fn url(&self, path: &str, query: &[(&str, String)]) -> Result<Url> {
        let mut url = self
            .base
            .join(path.trim_start_matches('/'))
            .map_err(|e| Error::internal(format!("bad Sage path {path}: {e}")))?;
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        Ok(url)
    }

    /// GET a JSON object.
    pub(crate) async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<T> {
        let url = self.url(path, query)?;
        let a = self.execute(Method::GET, url, None, true, path).await?;
        read_json(&a.body, path)
    }

    /// GET every item of a list: `attributes=all`, `items_per_page=200`, following `$next`.
    pub(crate) async fn get_all<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<T>> {
        let mut q: Vec<(&str, String)> = query.to_vec();
        if !q.iter().any(|(k, _)| *k == "attributes") {
            q.push(("attributes", "all".into()));
        }
        if !q.iter().any(|(k, _)| *k == "items_per_page") {
            q.push(("items_per_page", "200".into()));
        }
        let mut url = self.url(path, &q)?;
        let mut out = Vec::new();
        for _page in 0..10_000 {
            let a = self.execute(Method::GET, url.clone(), None, true, path).await?;
            let page: Page<T> = read_json(&a.body, path)?;
            out.extend(page.items);
            match page.next.filter(|n| !n.is_empty()) {
                None => return Ok(out),
                Some(next) => url = self.next_url(&next)?,
            }
        }
        Err(Error::internal(format!("{path}: more than 10,000 pages")))
    }

    /// Resolves `$next`: an absolute URL on the API host, a path that already carries the API
    /// root (`/v3.1/contacts?page=2`), or a path relative to it (`/contacts?page=2`).
    fn next_url(&self, next: &str) -> Result<Url> {
        if let Ok(abs) = Url::parse(next) {
            if abs.host_str() != self.base.host_str()
                || abs.port_or_known_default() != self.base.port_or_known_default()
            {
                return Err(Error::Provider {
                    provider: PROVIDER,
                    status: None,
                    message: format!(
                        "Sage's $next points to another host ({}); not followed",
                        abs.host_str().unwrap_or("?")
                    ),
                    retryable: false,
                    source: None,
                });
            }
            return Ok(abs);
        }
        let root = self.base.path().trim_end_matches('/');
        if !root.is_empty() && next.starts_with(root) {
            let mut u = self.base.clone();
            let (path, query) = next.split_once('?').unwrap_or((next, ""));
            u.set_path(path);
            u.set_query((!query.is_empty()).then_some(query));
            return Ok(u);
        }
        let (path, query) = next.split_once('?').unwrap_or((next, ""));
        let mut u = self.url(path, &[])?;
        u.set_query((!query.is_empty()).then_some(query));
        Ok(u)
    }

    /// POST a JSON body. Not idempotent: an answer whose outcome is unknown comes back as an error
    /// with `outcome_unknown()`, for the caller to look the record up.
    pub(crate) async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let url = self.url(path, &[])?;
        let bytes = serde_json::to_vec(body).map_err(|e| Error::internal(format!("cannot serialise {path}: {e}")))?;
        let a = self.execute(Method::POST, url, Some(bytes), false, path).await?;
        read_json(&a.body, path)
    }

    /// PUT a JSON body.
    pub(crate) async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let url = self.url(path, &[])?;
        let bytes = serde_json::to_vec(body).map_err(|e| Error::internal(format!("cannot serialise {path}: {e}")))?;
        let a = self.execute(Method::PUT, url, Some(bytes), true, path).await?;
        read_json(&a.body, path)
    }

    /// DELETE (Sage voids sales documents this way and answers 200 with the body).
    pub(crate) async fn delete(&self, path: &str, query: &[(&str, String)]) -> Result<()> {
        let url = self.url(path, query)?;
        self.execute(Method::DELETE, url, None, true, path).await.map(|_| ())
    }

    /// Sends one request with the rate limiter, the token, `X-Business` and the retry decision.
    #[tracing::instrument(level = "debug", skip(self, url, body), fields(business = %self.business_id))]
    async fn execute(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        idempotent: bool,
        what: &str,
    ) -> Result<Answer> {
        let started = Instant::now();
        let mut retries = 0u32;
        let mut refreshed_after_401 = false;
        let label = format!("{method} {}", fold_ids(what));
        loop {
            self.limiter.until_ready().await;
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
                .header("X-Business", &self.business_id)
                .header(header::ACCEPT, "application/json");
            if let Some(b) = &body {
                req = req.header(header::CONTENT_TYPE, "application/json").body(b.clone());
            }
            self.stats.record(&method, what);
            match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get(header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| parse_retry_after(v, self.clock.now()));
                    let body = resp.bytes().await.map_err(|e| {
                        let e = e.without_url();
                        Error::Http {
                            provider: PROVIDER,
                            message: format!("{label}: the answer was cut off: {e}"),
                            outcome_unknown: !idempotent,
                            source: Some(Box::new(e)),
                        }
                    })?;
                    if (200..300).contains(&status) {
                        return Ok(Answer { body });
                    }
                    if status == 401 {
                        let err = from_status(status, &body, None, &label);
                        if matches!(err, Error::Auth { reason: AuthFailure::TokenRejected, .. }) && !refreshed_after_401
                        {
                            // A token Sage refused although we thought it fresh: refresh once.
                            refreshed_after_401 = true;
                            self.tokens.invalidate(&token).await;
                            continue;
                        }
                        return Err(err);
                    }
                    if status == 429 {
                        self.stats.count_throttled();
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
                            return Err(from_status(status, &body, retry_after, &label));
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
        message: format!("{what}: Sage answered something that is not JSON: {e}"),
        retryable: false,
        source: Some(Box::new(e)),
    })?;
    crate::canonical::read("Sage response", v).map_err(|e| Error::Provider {
        provider: PROVIDER,
        status: None,
        message: format!("{what}: {e}"),
        retryable: false,
        source: Some(Box::new(e)),
    })
}

/// How long Sage's per-request timeout is by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
