//! The thin HTTP layer of the Sage provider: every request goes through the shared request loop
//! ([`crate::http::exchange`]), carries the bearer token and `X-Business`, waits for the
//! per-business rate limiter, and is retried by the pure decision of [`crate::http::retry`]; a
//! 401 that Sage's body says is a refused token refreshes it once; lists ask for `attributes=all` and `items_per_page=200` and are paged
//! as real Sage answers them (`$next` relative or missing, `$total`, the last page repeated past
//! the end), with a fallback for lists too big to answer with full objects.

use std::{
    collections::HashSet,
    fmt,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use async_trait::async_trait;
use reqwest::Method;
use secrecy::SecretString;
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use url::Url;

use super::{PROVIDER, error::from_status_seen, model::Page};
pub use crate::http::RequestStats;
use crate::{
    auth::TokenManager,
    clock::Clock,
    error::{AuthFailure, Error, Result},
    http::{
        ExchangeObserver, Hooks, Peer, RateLimiter, Redirects, Reply, Request, RetryConfig, Verdict,
        exchange::{self, Admission, DEFAULT_MAX_BODY},
    },
};

/// The HTTP client of one Sage business.
pub(crate) struct SageClient {
    pub(crate) http: reqwest::Client,
    pub(crate) base: Url,
    pub(crate) business_id: String,
    pub(crate) tokens: Arc<TokenManager>,
    pub(crate) limiter: RateLimiter,
    pub(crate) retry: RetryConfig,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) stats: Arc<RequestStats>,
    /// Whether Sage has answered any request of this business with a success: a later 401 "No
    /// active subscription" then means an endpoint outside the business's edition rather than a
    /// lapsed subscription (both answer the same, sage-api.md Q23).
    pub(crate) answered: std::sync::atomic::AtomicBool,
    /// Sees every request and answer ([`crate::http::exchange`]), when set.
    pub(crate) observer: Option<Arc<dyn ExchangeObserver>>,
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

    /// GET every item of a list: `attributes=all`, `items_per_page=200`, paged as real Sage
    /// answers (see [`Self::list_values`]). A list with `attributes=all` that fails on its size
    /// (500, 502 or 504 once the retries are spent, as Sage does for big pages of full objects) is
    /// asked again with pages of [`SMALL_PAGE`] items, and when that fails too, without
    /// `attributes` (ids only) and then item by item (`GET {path}/{id}`).
    pub(crate) async fn get_all<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<T>> {
        let mut q: Vec<(&str, String)> = query.to_vec();
        if !q.iter().any(|(k, _)| *k == "attributes") {
            q.push(("attributes", "all".into()));
        }
        if !q.iter().any(|(k, _)| *k == "items_per_page") {
            q.push(("items_per_page", PAGE_SIZE.to_string()));
        }
        let full = q.iter().any(|(k, v)| *k == "attributes" && v == "all");
        let values = match self.list_values(path, &q).await {
            Err(e) if full && is_size_failure(&e) => {
                tracing::warn!(path, error = %e, "a full list page failed; asking for smaller pages");
                set_param(&mut q, "items_per_page", SMALL_PAGE.to_string());
                match self.list_values(path, &q).await {
                    Err(e) if is_size_failure(&e) => {
                        tracing::warn!(path, error = %e, "small full pages failed too; listing ids and reading item by item");
                        self.list_item_by_item(path, &q).await?
                    }
                    other => other?,
                }
            }
            other => other?,
        };
        values.into_iter().map(|v| read_value(v, path)).collect()
    }

    /// Every item of a list as JSON, following Sage's envelope:
    ///
    /// - `$next` is followed when present ([`Self::next_url`]: absolute on the same origin, or a
    ///   path with or without the version prefix);
    /// - when `$next` is missing but `$total` says items remain, the next page is asked for by
    ///   number (`page=N+1`): Sage does not guarantee `$next` (sage-api.md Q15, real clients page
    ///   by `$total`);
    /// - a page past the end answers the **last** page again, not an empty one: a page that brings
    ///   no item not seen before (by `id`, or the same items as the page before) ends the list;
    /// - at most [`MAX_PAGES`] pages.
    async fn list_values(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<Value>> {
        let mut url = self.url(path, query)?;
        let mut out: Vec<Value> = Vec::new();
        let mut seen: HashSet<String> = HashSet::new();
        let mut previous: Option<Vec<Value>> = None;
        let mut number: u64 = 1;
        for _ in 0..MAX_PAGES {
            let a = self.execute(Method::GET, url.clone(), None, true, path).await?;
            let page: Page<Value> = read_json(&a.body, path)?;
            // A `$next` elsewhere is refused even on a last page: it is never a sane answer.
            let next = match page.next.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
                Some(n) => Some(self.next_url(n)?),
                None => None,
            };
            if page.items.is_empty() || previous.as_ref() == Some(&page.items) {
                return Ok(out);
            }
            let before = out.len();
            for item in &page.items {
                match item.get("id").and_then(Value::as_str) {
                    Some(id) if !seen.insert(id.to_owned()) => {}
                    _ => out.push(item.clone()),
                }
            }
            if out.len() == before {
                tracing::debug!(path, page = number, "Sage repeated a page: the list is complete");
                return Ok(out);
            }
            let current = page.page.filter(|p| *p > 0).unwrap_or(number);
            number = current.saturating_add(1);
            match next {
                Some(next) => url = next,
                None => match page.total {
                    Some(total) if u64::try_from(out.len()).unwrap_or(u64::MAX) < total => {
                        tracing::debug!(path, page = number, total, "no $next although items remain: paging by $total");
                        url = with_page(&url, number);
                    }
                    _ => return Ok(out),
                },
            }
            previous = Some(page.items);
        }
        Err(Error::Provider {
            provider: PROVIDER,
            status: None,
            message: format!("{path}: more than {MAX_PAGES} pages; the list was not read"),
            retryable: false,
            source: None,
        })
    }

    /// The last resort for a list Sage cannot answer with full objects: the ids without
    /// `attributes`, then each item by id. Sales documents are read with `mark_as_sent=false`
    /// (sage-api.md Q17).
    async fn list_item_by_item(&self, path: &str, query: &[(&str, String)]) -> Result<Vec<Value>> {
        let mut q: Vec<(&str, String)> = query.iter().filter(|(k, _)| *k != "attributes").cloned().collect();
        set_param(&mut q, "items_per_page", PAGE_SIZE.to_string());
        let ids = self.list_values(path, &q).await?;
        let item_query: Vec<(&str, String)> =
            if path.starts_with("/sales_") { vec![("mark_as_sent", "false".to_owned())] } else { Vec::new() };
        let mut out = Vec::with_capacity(ids.len());
        for v in ids {
            let Some(id) = v.get("id").and_then(Value::as_str) else {
                return Err(Error::Provider {
                    provider: PROVIDER,
                    status: None,
                    message: format!("{path}: a list item without an id cannot be read one by one"),
                    retryable: false,
                    source: None,
                });
            };
            let one = format!("{}/{}", path.trim_end_matches('/'), urlencoding_segment(id));
            out.push(self.get::<Value>(&one, &item_query).await?);
        }
        Ok(out)
    }

    /// Resolves `$next`: an absolute URL on the API's own origin (scheme, host and port), a path
    /// that already carries the API root (`/v3.1/contacts?page=2`), or a path relative to it
    /// (`/contacts?page=2`, as Sage answers). A `$next` on another origin — another host, port,
    /// or `http` for an `https` API — is refused: following it would send the bearer token there.
    pub(crate) fn next_url(&self, next: &str) -> Result<Url> {
        let refused = |why: String| Error::Provider {
            provider: PROVIDER,
            status: None,
            message: format!("Sage's $next points to {why}; not followed"),
            retryable: false,
            source: None,
        };
        if next.starts_with("//") {
            return Err(refused("another host (a scheme-relative URL)".into()));
        }
        if let Ok(abs) = Url::parse(next) {
            if abs.host_str() != self.base.host_str() {
                return Err(refused(format!("another host ({})", abs.host_str().unwrap_or("?"))));
            }
            if abs.scheme() != self.base.scheme() {
                return Err(refused(format!("another scheme ({})", abs.scheme())));
            }
            if abs.port_or_known_default() != self.base.port_or_known_default() {
                return Err(refused(format!(
                    "another port ({})",
                    abs.port_or_known_default().map(|p| p.to_string()).unwrap_or_else(|| "?".into())
                )));
            }
            return Ok(abs);
        }
        let (path, query) = next.split_once('?').unwrap_or((next, ""));
        let root = self.base.path().trim_end_matches('/');
        let relative = match path.strip_prefix(root) {
            Some(rest) if !root.is_empty() && (rest.is_empty() || rest.starts_with('/')) => rest,
            _ => path,
        };
        let mut u = self.url(relative, &[])?;
        u.set_query((!query.is_empty()).then_some(query));
        if u.scheme() != self.base.scheme()
            || u.host_str() != self.base.host_str()
            || u.port_or_known_default() != self.base.port_or_known_default()
        {
            return Err(refused("another origin".into()));
        }
        Ok(u)
    }

    /// POST a JSON body. Not idempotent: an answer whose outcome is unknown comes back as an error
    /// with `outcome_unknown()`, for the caller to look the record up.
    pub(crate) async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(&self, path: &str, body: &B) -> Result<T> {
        let url = self.url(path, &[])?;
        let bytes = serde_json::to_vec(body).map_err(|e| Error::internal(format!("cannot serialise {path}: {e}")))?;
        let a = self.execute(Method::POST, url, Some(bytes), false, path).await?;
        read_json(&a.body, format_args!("POST {path}"))
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

    /// The loop's parameters for this business.
    fn peer(&self) -> Peer<'_> {
        Peer {
            http: &self.http,
            provider: PROVIDER,
            name: "Sage",
            retry: &self.retry,
            clock: self.clock.as_ref(),
            max_body: DEFAULT_MAX_BODY,
            redirects: Redirects::SameOrigin,
            stats: Some(&self.stats),
            observer: self.observer.as_deref(),
        }
    }

    /// Sends one request through the shared loop ([`crate::http::exchange`]) with the rate
    /// limiter, the token and `X-Business` ([`Hooks`] below), and turns an error answer into
    /// Sage's error.
    #[tracing::instrument(level = "debug", skip(self, url, body), fields(business = %self.business_id))]
    async fn execute(
        &self,
        method: Method,
        url: Url,
        body: Option<Vec<u8>>,
        idempotent: bool,
        what: &str,
    ) -> Result<Answer> {
        let mut request =
            Request::new(method, url, what).idempotent(idempotent).header("X-Business", self.business_id.clone());
        if let Some(body) = body {
            request = request.json(body);
        }
        let label = request.label_text().to_owned();
        let reply = exchange::send(&self.peer(), self, request).await?;
        if reply.is_success() {
            self.answered.store(true, Ordering::Relaxed);
            return Ok(Answer { body: reply.body });
        }
        let answered_before = self.answered.load(Ordering::Relaxed);
        Err(from_status_seen(reply.status, &reply.body, reply.retry_after, &label, answered_before))
    }
}

/// What the Sage client does around each attempt of the shared loop.
#[async_trait]
impl Hooks for SageClient {
    /// Waits for the business's rate limiter.
    async fn admit(&self, _request: &Request) -> Result<Admission> {
        self.limiter.until_ready().await;
        Ok(Admission::default())
    }

    /// The business's access token (refreshed by the token manager when due).
    async fn credential(&self) -> Result<Option<SecretString>> {
        self.tokens.access_token().await.map(Some)
    }

    async fn refused(&self, credential: &SecretString) {
        self.tokens.invalidate(credential).await;
    }

    /// A 401 that Sage's body says is a refused token (not a lapsed subscription, nor an
    /// endpoint outside the edition) refreshes the token once; any other 401 stops at once.
    fn verdict(&self, reply: &Reply) -> Verdict {
        if reply.status != 401 {
            return Verdict::Decide;
        }
        let answered_before = self.answered.load(Ordering::Relaxed);
        match from_status_seen(reply.status, &reply.body, None, "", answered_before) {
            Error::Auth { reason: AuthFailure::TokenRejected, .. } => Verdict::Refresh,
            _ => Verdict::Stop,
        }
    }
}

/// Reads a JSON answer, naming the endpoint when it is not what was expected.
///
/// Straight from the text when it reads as a `T` (no `Value` tree, no field paths kept in case
/// of an error: `Entity::from_json_text` explains why); otherwise again through a `Value`, for
/// the error that names the endpoint and the field, so an unreadable answer gets the error it
/// always got. The two readings agree on every recorded real Sage answer
/// (`model_tests::both_readings_agree_on_every_real_sage_answer`); a JSON object with a key
/// twice is refused by the first and read, keeping the last, by the second.
pub(crate) fn read_json<T: DeserializeOwned>(body: &[u8], what: impl std::fmt::Display) -> Result<T> {
    if let Ok(read) = serde_json::from_slice(body) {
        return Ok(read);
    }
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| Error::Provider {
        provider: PROVIDER,
        status: None,
        message: format!("{what}: Sage answered something that is not JSON: {e}"),
        retryable: false,
        source: Some(Box::new(e)),
    })?;
    read_value(v, what)
}

/// Reads a JSON value already parsed, naming the endpoint and the field when it does not fit.
pub(crate) fn read_value<T: DeserializeOwned>(v: Value, what: impl std::fmt::Display) -> Result<T> {
    crate::canonical::read("Sage response", v).map_err(|e| Error::Provider {
        provider: PROVIDER,
        status: None,
        message: format!("{what}: {e}"),
        retryable: false,
        source: Some(Box::new(e)),
    })
}

/// True for the failures Sage gives a list page too big to build (500, 502, 504 after retries).
fn is_size_failure(e: &Error) -> bool {
    matches!(e, Error::Provider { status: Some(500 | 502 | 504), .. })
}

/// Sets (or adds) one query parameter.
fn set_param<'a>(q: &mut Vec<(&'a str, String)>, key: &'a str, value: String) {
    q.retain(|(k, _)| *k != key);
    q.push((key, value));
}

/// `url` with its `page` parameter set to `page` (every other parameter kept, in order).
fn with_page(url: &Url, page: u64) -> Url {
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().filter(|(k, _)| k != "page").collect();
    let mut u = url.clone();
    {
        let mut q = u.query_pairs_mut();
        q.clear();
        for (k, v) in &pairs {
            q.append_pair(k, v);
        }
        q.append_pair("page", &page.to_string());
    }
    u
}

/// An id as one path segment: Sage ids are hex GUIDs, but an id from the network is escaped so
/// that it can never add segments or a query.
fn urlencoding_segment(id: &str) -> String {
    url::form_urlencoded::byte_serialize(id.as_bytes()).collect::<String>().replace('+', "%20")
}

/// Items asked for on each list page.
const PAGE_SIZE: u32 = 200;

/// Items asked for on each page when a page of [`PAGE_SIZE`] full objects failed.
const SMALL_PAGE: u32 = 20;

/// The most pages one list may take.
const MAX_PAGES: usize = 10_000;

/// How long Sage's per-request timeout is by default.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
