//! `XeroBuilder`: every setting of a [`XeroProvider`](super::XeroProvider), checked at `build()`.
//!
//! Setters never fail; [`XeroBuilder::build`] reports every missing or invalid setting at once.
//! [`XeroBuilder::from_env`] reads `XERO_CLIENT_ID`, `XERO_CLIENT_SECRET`, `XERO_TENANT_ID`,
//! `XERO_BASE_URL`, `XERO_TOKEN_URL`, `XERO_CONNECTIONS_URL`, and the limits
//! `XERO_REQUESTS_PER_MINUTE`, `XERO_CONCURRENT_REQUESTS` and `XERO_REQUESTS_PER_DAY` (whole
//! numbers; 0 lifts that client-side limit, e.g. `1000` a day for an app on Xero's Starter tier).

use std::{fmt, sync::Arc, time::Duration};

use secrecy::SecretString;
use url::Url;

use super::{
    PROVIDER, XeroProvider,
    client::{DEFAULT_TIMEOUT, XeroClient},
};
use crate::{
    auth::{ClientAuth, MemoryTokenStore, OAuthClient, TokenManager, TokenStore},
    clock::{Clock, SystemClock},
    error::{Error, FieldError, Result},
    http::{
        ConcurrencyLimit, DailyBudget, ExchangeObserver, RateConfig, RateLimiter, RequestStats, RetryConfig,
        TenantLimits,
    },
};

/// The Accounting API root.
pub const DEFAULT_BASE_URL: &str = "https://api.xero.com/api.xro/2.0";
/// Xero's token endpoint (code exchange and refresh; client id and secret as HTTP Basic).
pub const DEFAULT_TOKEN_URL: &str = "https://identity.xero.com/connect/token";
/// The connections endpoint (tenant discovery, `xero-identity.yaml`).
pub const DEFAULT_CONNECTIONS_URL: &str = "https://api.xero.com/connections";

/// Xero's per-organisation limits (xero-api.md 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XeroLimits {
    /// Calls in any minute (Xero: 60). The limiter (`http::limit::Window`) lets at most 60 through
    /// in any 60.5 seconds, paced at one a second after a burst of 5, so no 60-second window
    /// ever holds more than 60.
    pub per_minute: u32,
    /// Calls in flight at once (Xero: 5).
    pub concurrent: usize,
    /// Calls in any rolling 24 hours (Xero: 5,000; 1,000 on the Starter app tier).
    pub per_day: u32,
}

impl Default for XeroLimits {
    fn default() -> Self {
        Self { per_minute: 60, concurrent: 5, per_day: 5_000 }
    }
}

impl XeroLimits {
    /// No client-side limit (tests that count calls rather than wait for a rate).
    pub fn unlimited() -> Self {
        Self { per_minute: 0, concurrent: 0, per_day: 0 }
    }
}

/// Builds a [`XeroProvider`].
#[derive(Default)]
pub struct XeroBuilder {
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    tenant_id: Option<String>,
    base_url: Option<String>,
    token_url: Option<String>,
    connections_url: Option<String>,
    limits: Option<XeroLimits>,
    shared_limits: Option<TenantLimits>,
    max_batch: Option<usize>,
    retry: Option<RetryConfig>,
    timeout: Option<Duration>,
    token_store: Option<Arc<dyn TokenStore>>,
    clock: Option<Arc<dyn Clock>>,
    http: Option<reqwest::Client>,
    observer: Option<Arc<dyn ExchangeObserver>>,
    refresh_margin: Option<Duration>,
}

impl fmt::Debug for XeroBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XeroBuilder")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .field("tenant_id", &self.tenant_id)
            .field("base_url", &self.base_url)
            .field("token_url", &self.token_url)
            .field("limits", &self.limits)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

impl XeroBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder from the `XERO_*` environment variables.
    pub fn from_env() -> Self {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let mut limits = XeroLimits::default();
        let mut limited = false;
        if let Some(n) = var("XERO_REQUESTS_PER_MINUTE").and_then(|v| v.trim().parse().ok()) {
            limits.per_minute = n;
            limited = true;
        }
        if let Some(n) = var("XERO_CONCURRENT_REQUESTS").and_then(|v| v.trim().parse().ok()) {
            limits.concurrent = n;
            limited = true;
        }
        if let Some(n) = var("XERO_REQUESTS_PER_DAY").and_then(|v| v.trim().parse().ok()) {
            limits.per_day = n;
            limited = true;
        }
        Self {
            limits: limited.then_some(limits),
            client_id: var("XERO_CLIENT_ID"),
            client_secret: var("XERO_CLIENT_SECRET").map(SecretString::from),
            tenant_id: var("XERO_TENANT_ID"),
            base_url: var("XERO_BASE_URL"),
            token_url: var("XERO_TOKEN_URL"),
            connections_url: var("XERO_CONNECTIONS_URL"),
            ..Self::default()
        }
    }

    /// The OAuth client id.
    #[must_use]
    pub fn with_client_id(mut self, id: impl Into<String>) -> Self {
        self.client_id = Some(id.into());
        self
    }

    /// The OAuth client secret.
    #[must_use]
    pub fn with_client_secret(mut self, secret: SecretString) -> Self {
        self.client_secret = Some(secret);
        self
    }

    /// The organisation (sent as `xero-tenant-id` on every call): a `tenantId` from the
    /// connections endpoint, pinned when the connection was made — never "the first connection".
    #[must_use]
    pub fn with_tenant_id(mut self, id: impl Into<String>) -> Self {
        self.tenant_id = Some(id.into());
        self
    }

    /// The Accounting API root (default [`DEFAULT_BASE_URL`]).
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The token endpoint (default [`DEFAULT_TOKEN_URL`]).
    #[must_use]
    pub fn with_token_url(mut self, url: impl Into<String>) -> Self {
        self.token_url = Some(url.into());
        self
    }

    /// The connections endpoint (default [`DEFAULT_CONNECTIONS_URL`]).
    #[must_use]
    pub fn with_connections_url(mut self, url: impl Into<String>) -> Self {
        self.connections_url = Some(url.into());
        self
    }

    /// Where the tokens live (default: in memory, empty — connect first).
    #[must_use]
    pub fn with_token_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.token_store = Some(store);
        self
    }

    /// The organisation's limits (default [`XeroLimits::default`]).
    #[must_use]
    pub fn with_limits(mut self, limits: XeroLimits) -> Self {
        self.limits = Some(limits);
        self
    }

    /// Limits shared with other providers of the same organisation (several workers of one
    /// process).
    #[must_use]
    pub fn with_shared_limits(mut self, limits: TenantLimits) -> Self {
        self.shared_limits = Some(limits);
        self
    }

    /// The largest batch (default 50, Xero's recommendation; 1 turns batching off).
    #[must_use]
    pub fn with_max_batch(mut self, max: usize) -> Self {
        self.max_batch = Some(max);
        self
    }

    /// Retry settings (default [`RetryConfig::default`]).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Per-request timeout (default 30 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How long before expiry the access token is refreshed (default 60 s; Xero's live 30 min).
    #[must_use]
    pub fn with_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = Some(margin);
        self
    }

    /// The clock (default the system clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// A preconfigured `reqwest` client.
    #[must_use]
    ///
    /// The default client follows redirects only within the request's origin
    /// ([`crate::http::same_origin_redirects`]); give yours the same policy.
    pub fn with_http_client(mut self, client: reqwest::Client) -> Self {
        self.http = Some(client);
        self
    }

    /// Takes its client from `shared` (the one with this builder's timeout) unless it was given
    /// one ([`with_http_client`](Self::with_http_client)): the providers of one factory share
    /// their clients.
    ///
    /// # Errors
    /// When the shared client cannot be built (the TLS backend).
    pub(crate) fn share_http(mut self, shared: &crate::http::SharedClients) -> Result<Self> {
        if self.http.is_none() {
            self.http = Some(shared.get(self.timeout.unwrap_or(DEFAULT_TIMEOUT))?);
        }
        Ok(self)
    }

    /// Shows every request the provider sends and every answer it gets to `observer`
    /// ([`crate::http::ExchangeObserver`]): for recording what a sync sent to Xero and what
    /// Xero answered. None by default.
    #[must_use]
    pub fn with_exchange_observer(mut self, observer: Arc<dyn ExchangeObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Checks every setting and builds the provider.
    ///
    /// # Errors
    /// [`Error::Invalid`] listing every missing or invalid setting.
    pub fn build(self) -> Result<XeroProvider> {
        let mut errors = Vec::new();
        let mut need = |v: &Option<String>, key: &str, env: &str| match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => {
                errors.push(FieldError::new(key, format!("required (or set {env})")));
                String::new()
            }
        };
        let client_id = need(&self.client_id, "client_id", "XERO_CLIENT_ID");
        let tenant_id = need(&self.tenant_id, "tenant_id", "XERO_TENANT_ID");
        if self.client_secret.as_ref().is_none_or(|s| secrecy::ExposeSecret::expose_secret(s).trim().is_empty()) {
            errors.push(FieldError::new("client_secret", "required (or set XERO_CLIENT_SECRET)"));
        }
        let mut url = |v: Option<&str>, default: &str, key: &str| -> Option<Url> {
            let text = v.unwrap_or(default).trim();
            // https unless loopback (the simulators); no credentials in the URL.
            match crate::http::ledger_url(text) {
                Ok(u) => Some(u),
                Err(rule) => {
                    errors.push(FieldError::new(key, rule));
                    None
                }
            }
        };
        let base = url(self.base_url.as_deref(), DEFAULT_BASE_URL, "base_url");
        let token_url = url(self.token_url.as_deref(), DEFAULT_TOKEN_URL, "token_url");
        let connections_url = url(self.connections_url.as_deref(), DEFAULT_CONNECTIONS_URL, "connections_url");
        let max_batch = self.max_batch.unwrap_or(50);
        if max_batch == 0 {
            errors.push(FieldError::new("max_batch", "must be at least 1"));
        }
        let retry = self.retry.unwrap_or_default();
        if retry.initial_backoff.is_zero() && retry.max_retries > 0 {
            errors.push(FieldError::new("retry.initial_backoff", "must be > 0 when retries are on"));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid { what: "Xero configuration", errors });
        }
        let (Some(mut base), Some(token_url), Some(connections_url)) = (base, token_url, connections_url) else {
            return Err(Error::internal("URL checks passed without URLs"));
        };
        if !base.path().ends_with('/') {
            let p = format!("{}/", base.path());
            base.set_path(&p);
        }
        let http = match self.http {
            Some(h) => h,
            None => crate::http::ledger_client(self.timeout.unwrap_or(DEFAULT_TIMEOUT))?,
        };
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let store = self.token_store.unwrap_or_else(|| Arc::new(MemoryTokenStore::default()));
        let oauth = OAuthClient::new(
            http.clone(),
            token_url,
            client_id,
            self.client_secret.unwrap_or_else(|| SecretString::from(String::new())),
            ClientAuth::Basic,
            PROVIDER,
        );
        let tokens = Arc::new(TokenManager::new(
            oauth.clone(),
            store,
            self.refresh_margin.unwrap_or(Duration::from_secs(60)),
            Arc::clone(&clock),
        ));
        let limits = self.shared_limits.unwrap_or_else(|| {
            let l = self.limits.unwrap_or_default();
            TenantLimits {
                minute: RateLimiter::new(RateConfig { requests_per_minute: l.per_minute, burst: 5.min(l.per_minute) }),
                concurrency: ConcurrencyLimit::new(l.concurrent),
                daily: DailyBudget::new(l.per_day),
                clock: Arc::clone(&clock),
            }
        });
        let client = XeroClient {
            http,
            base,
            connections_url,
            tenant_id,
            tokens,
            limits,
            retry,
            clock: Arc::clone(&clock),
            stats: Arc::new(RequestStats::default()),
            // Every exchange also goes to the run being processed, if any (its audit trail).
            observer: Some(crate::http::audit::RunAudit::observer(Arc::clone(&clock), self.observer)),
        };
        Ok(XeroProvider::from_parts(client, oauth, max_batch))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_reports_every_missing_setting() {
        let err = XeroBuilder::new().with_base_url("ftp://x").with_max_batch(0).build().unwrap_err();
        let paths: Vec<&str> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["client_id", "tenant_id", "client_secret", "base_url", "max_batch"]);
    }

    #[test]
    fn builder_debug_hides_the_secret() {
        let b = XeroBuilder::new().with_client_secret(SecretString::from("x3r0-s3cr3t".to_owned()));
        assert!(!format!("{b:?}").contains("x3r0-s3cr3t"));
    }

    #[test]
    fn builds_with_defaults() {
        let p = XeroBuilder::new()
            .with_client_id("id")
            .with_client_secret(SecretString::from("secret".to_owned()))
            .with_tenant_id("tenant")
            .build()
            .unwrap();
        let shown = format!("{p:?}");
        assert!(shown.contains("api.xero.com/api.xro/2.0/") && shown.contains("tenant"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
