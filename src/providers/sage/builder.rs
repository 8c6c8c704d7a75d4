//! `SageBuilder`: every setting of a [`SageProvider`](super::SageProvider), checked at `build()`.
//!
//! Setters never fail; [`SageBuilder::build`] reports every missing or invalid setting at once.
//! [`SageBuilder::from_env`] reads `SAGE_CLIENT_ID`, `SAGE_CLIENT_SECRET`, `SAGE_BUSINESS_ID`,
//! `SAGE_BASE_URL` and `SAGE_TOKEN_URL`; [`SageBuilder::with_config`] sets one by its
//! [`SageConfigKey`].

use std::{fmt, str::FromStr, sync::Arc, time::Duration};

use secrecy::SecretString;
use url::Url;

use super::{
    PROVIDER, SageProvider,
    client::{DEFAULT_TIMEOUT, RequestStats, SageClient},
};
use crate::{
    auth::{ClientAuth, MemoryTokenStore, OAuthClient, TokenManager, TokenStore},
    clock::{Clock, SystemClock},
    error::{Error, FieldError, Result},
    http::{ExchangeObserver, RateConfig, RateLimiter, RetryConfig},
};

/// The API root of every region (sage-api.md 2.3: v3.1 uses one host for all countries).
pub const DEFAULT_BASE_URL: &str = "https://api.accounting.sage.com/v3.1";
/// Sage's token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://oauth.accounting.sage.com/token";

/// A setting of the builder, by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum SageConfigKey {
    /// `client_id` / `SAGE_CLIENT_ID`.
    ClientId,
    /// `client_secret` / `SAGE_CLIENT_SECRET`.
    ClientSecret,
    /// `business_id` / `SAGE_BUSINESS_ID`.
    BusinessId,
    /// `base_url` / `SAGE_BASE_URL`.
    BaseUrl,
    /// `token_url` / `SAGE_TOKEN_URL`.
    TokenUrl,
    /// `requests_per_minute` / `SAGE_REQUESTS_PER_MINUTE`.
    RequestsPerMinute,
    /// `max_retries` / `SAGE_MAX_RETRIES`.
    MaxRetries,
    /// `retry_backoff_ms` / `SAGE_RETRY_BACKOFF_MS`: the first backoff, in milliseconds.
    RetryBackoffMs,
}

impl SageConfigKey {
    const ALL: [Self; 8] = [
        Self::ClientId,
        Self::ClientSecret,
        Self::BusinessId,
        Self::BaseUrl,
        Self::TokenUrl,
        Self::RequestsPerMinute,
        Self::MaxRetries,
        Self::RetryBackoffMs,
    ];

    /// The environment variable of the key.
    pub fn env(self) -> &'static str {
        match self {
            Self::ClientId => "SAGE_CLIENT_ID",
            Self::ClientSecret => "SAGE_CLIENT_SECRET",
            Self::BusinessId => "SAGE_BUSINESS_ID",
            Self::BaseUrl => "SAGE_BASE_URL",
            Self::TokenUrl => "SAGE_TOKEN_URL",
            Self::RequestsPerMinute => "SAGE_REQUESTS_PER_MINUTE",
            Self::MaxRetries => "SAGE_MAX_RETRIES",
            Self::RetryBackoffMs => "SAGE_RETRY_BACKOFF_MS",
        }
    }
}

impl AsRef<str> for SageConfigKey {
    fn as_ref(&self) -> &str {
        match self {
            Self::ClientId => "client_id",
            Self::ClientSecret => "client_secret",
            Self::BusinessId => "business_id",
            Self::BaseUrl => "base_url",
            Self::TokenUrl => "token_url",
            Self::RequestsPerMinute => "requests_per_minute",
            Self::MaxRetries => "max_retries",
            Self::RetryBackoffMs => "retry_backoff_ms",
        }
    }
}

impl FromStr for SageConfigKey {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim().to_ascii_lowercase();
        Self::ALL
            .into_iter()
            .find(|k| k.as_ref() == s || k.env().eq_ignore_ascii_case(&s))
            .ok_or_else(|| Error::config(s, "not a Sage setting"))
    }
}

/// Builds a [`SageProvider`].
#[derive(Default)]
pub struct SageBuilder {
    client_id: Option<String>,
    client_secret: Option<SecretString>,
    business_id: Option<String>,
    base_url: Option<String>,
    token_url: Option<String>,
    requests_per_minute: Option<String>,
    max_retries: Option<String>,
    retry_backoff_ms: Option<String>,
    rate: Option<RateConfig>,
    limiter: Option<RateLimiter>,
    retry: Option<RetryConfig>,
    timeout: Option<Duration>,
    token_store: Option<Arc<dyn TokenStore>>,
    clock: Option<Arc<dyn Clock>>,
    http: Option<reqwest::Client>,
    observer: Option<Arc<dyn ExchangeObserver>>,
    refresh_margin: Option<Duration>,
}

impl fmt::Debug for SageBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SageBuilder")
            .field("client_id", &self.client_id)
            .field("client_secret", &self.client_secret.as_ref().map(|_| "[redacted]"))
            .field("business_id", &self.business_id)
            .field("base_url", &self.base_url)
            .field("token_url", &self.token_url)
            .field("rate", &self.rate)
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

impl SageBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder from the `SAGE_*` environment variables.
    pub fn from_env() -> Self {
        let mut b = Self::new();
        for key in SageConfigKey::ALL {
            if let Ok(v) = std::env::var(key.env()) {
                b = b.with_config(key, &v);
            }
        }
        b
    }

    /// Sets one setting by key.
    #[must_use]
    pub fn with_config(mut self, key: SageConfigKey, value: &str) -> Self {
        let v = value.to_owned();
        match key {
            SageConfigKey::ClientId => self.client_id = Some(v),
            SageConfigKey::ClientSecret => self.client_secret = Some(SecretString::from(v)),
            SageConfigKey::BusinessId => self.business_id = Some(v),
            SageConfigKey::BaseUrl => self.base_url = Some(v),
            SageConfigKey::TokenUrl => self.token_url = Some(v),
            SageConfigKey::RequestsPerMinute => self.requests_per_minute = Some(v),
            SageConfigKey::MaxRetries => self.max_retries = Some(v),
            SageConfigKey::RetryBackoffMs => self.retry_backoff_ms = Some(v),
        }
        self
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

    /// The Sage business (sent as `X-Business` on every request).
    #[must_use]
    pub fn with_business_id(mut self, id: impl Into<String>) -> Self {
        self.business_id = Some(id.into());
        self
    }

    /// The API root, including the version (default [`DEFAULT_BASE_URL`]); tests point it at a
    /// mock or the simulator.
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

    /// Where the tokens live (default: in memory, empty — connect first).
    #[must_use]
    pub fn with_token_store(mut self, store: Arc<dyn TokenStore>) -> Self {
        self.token_store = Some(store);
        self
    }

    /// Retry settings (default [`RetryConfig::default`]).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Rate-limit settings (default 200 a minute, burst 10).
    #[must_use]
    pub fn with_rate(mut self, rate: RateConfig) -> Self {
        self.rate = Some(rate);
        self
    }

    /// A limiter shared with other providers of the same business: a clone of an in-process
    /// [`RateLimiter::new`], or a [`RateLimiter::shared`] budget that several worker processes
    /// draw on together (`store::postgres::SharedRateLimiter`, feature `postgres`). Without one,
    /// the provider paces itself alone with [`SageBuilder::with_rate`]'s settings.
    #[must_use]
    pub fn with_rate_limiter(mut self, limiter: RateLimiter) -> Self {
        self.limiter = Some(limiter);
        self
    }

    /// Per-request timeout (default 30 s).
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// How long before expiry the access token is refreshed (default 60 s).
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

    /// A preconfigured `reqwest` client (proxies, custom roots).
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
    /// ([`crate::http::ExchangeObserver`]): for recording what a sync sent to Sage and what
    /// Sage answered. None by default.
    #[must_use]
    pub fn with_exchange_observer(mut self, observer: Arc<dyn ExchangeObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Checks every setting and builds the provider.
    ///
    /// # Errors
    /// [`Error::Invalid`] listing every missing or invalid setting.
    pub fn build(self) -> Result<SageProvider> {
        let mut errors = Vec::new();
        let mut need = |v: &Option<String>, key: SageConfigKey| match v.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => s.to_owned(),
            _ => {
                errors.push(FieldError::new(key.as_ref(), format!("required (or set {})", key.env())));
                String::new()
            }
        };
        let client_id = need(&self.client_id, SageConfigKey::ClientId);
        let business_id = need(&self.business_id, SageConfigKey::BusinessId);
        let secret_missing =
            self.client_secret.as_ref().is_none_or(|s| secrecy::ExposeSecret::expose_secret(s).trim().is_empty());
        if secret_missing {
            errors.push(FieldError::new("client_secret", "required (or set SAGE_CLIENT_SECRET)"));
        }
        let mut url = |v: Option<&str>, default: &str, key: SageConfigKey| -> Option<Url> {
            let text = v.unwrap_or(default).trim();
            // https unless loopback (the simulators); no credentials in the URL.
            match crate::http::ledger_url(text) {
                Ok(u) => Some(u),
                Err(rule) => {
                    errors.push(FieldError::new(key.as_ref(), rule));
                    None
                }
            }
        };
        let base = url(self.base_url.as_deref(), DEFAULT_BASE_URL, SageConfigKey::BaseUrl);
        let token_url = url(self.token_url.as_deref(), DEFAULT_TOKEN_URL, SageConfigKey::TokenUrl);
        let mut rate = self.rate.unwrap_or_default();
        if let Some(text) = &self.requests_per_minute {
            match text.trim().parse::<u32>() {
                Ok(n) => rate.requests_per_minute = n,
                Err(_) => {
                    errors.push(FieldError::new("requests_per_minute", format!("`{text}` is not a whole number")))
                }
            }
        }
        let mut retry = self.retry.unwrap_or_default();
        if let Some(text) = &self.max_retries {
            match text.trim().parse::<u32>() {
                Ok(n) => retry.max_retries = n,
                Err(_) => errors.push(FieldError::new("max_retries", format!("`{text}` is not a whole number"))),
            }
        }
        if let Some(text) = &self.retry_backoff_ms {
            match text.trim().parse::<u64>() {
                Ok(n) => retry.initial_backoff = Duration::from_millis(n),
                Err(_) => errors.push(FieldError::new("retry_backoff_ms", format!("`{text}` is not a whole number"))),
            }
        }
        if retry.initial_backoff.is_zero() && retry.max_retries > 0 {
            errors.push(FieldError::new("retry.initial_backoff", "must be > 0 when retries are on"));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid { what: "Sage configuration", errors });
        }
        let (Some(mut base), Some(token_url)) = (base, token_url) else {
            return Err(Error::internal("URL checks passed without URLs"));
        };
        // Join relative paths under the version root: `…/v3.1` → `…/v3.1/`.
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
            ClientAuth::Body,
            PROVIDER,
        );
        let tokens = Arc::new(TokenManager::new(
            oauth.clone(),
            store,
            self.refresh_margin.unwrap_or(Duration::from_secs(60)),
            Arc::clone(&clock),
        ));
        let client = SageClient {
            http,
            base,
            business_id,
            tokens,
            limiter: self.limiter.unwrap_or_else(|| RateLimiter::new(rate)),
            retry,
            clock: Arc::clone(&clock),
            stats: Arc::new(RequestStats::default()),
            // Every exchange also goes to the run being processed, if any (its audit trail).
            observer: Some(crate::http::audit::RunAudit::observer(Arc::clone(&clock), self.observer)),
            answered: std::sync::atomic::AtomicBool::new(false),
        };
        Ok(SageProvider::from_parts(client, oauth))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_reports_every_missing_setting() {
        let err = SageBuilder::new().with_base_url("ftp://x").build().unwrap_err();
        let paths: Vec<&str> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, vec!["client_id", "business_id", "client_secret", "base_url"]);
    }

    #[test]
    fn keys_parse_from_names_and_env() {
        assert_eq!("client_id".parse::<SageConfigKey>().unwrap(), SageConfigKey::ClientId);
        assert_eq!("SAGE_TOKEN_URL".parse::<SageConfigKey>().unwrap(), SageConfigKey::TokenUrl);
        assert!("nope".parse::<SageConfigKey>().is_err());
    }

    #[test]
    fn builder_debug_hides_the_secret() {
        let b = SageBuilder::new().with_client_secret(SecretString::from("s3cr3t-VALUE".to_owned()));
        assert!(!format!("{b:?}").contains("s3cr3t-VALUE"));
    }

    #[test]
    fn builds_with_defaults() {
        let p = SageBuilder::new()
            .with_client_id("id")
            .with_client_secret(SecretString::from("secret".to_owned()))
            .with_business_id("biz")
            .with_config(SageConfigKey::RequestsPerMinute, "120")
            .build()
            .unwrap();
        assert!(format!("{p:?}").contains("api.accounting.sage.com/v3.1/"));
    }
}
