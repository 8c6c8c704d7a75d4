//! OAuth 2.0 token custody, shared by the providers: the token pair, the store it is persisted
//! in, the token endpoint client, and a manager that hands out fresh access tokens.
//!
//! Ledger refresh tokens rotate: every refresh returns a new refresh token and the old one stops
//! working (Sage: sage-api.md 2.1 and Q1). So:
//!
//! - the new pair is **saved through the [`TokenStore`] before it is used**: if the process dies
//!   right after a refresh, the next one starts from the new pair, not from a dead one; a save
//!   that fails is retried with backoff and the pair is **kept in memory** meanwhile, and the
//!   spent refresh token is never sent again ([`TokenManager`]'s "A refreshed pair is never
//!   lost");
//! - refreshes are **single-flight**: the [`TokenManager`] holds one async mutex per connection,
//!   so a hundred concurrent requests with an expired token cause exactly one refresh; a store
//!   shared by several processes can also serialise refreshes across them
//!   ([`TokenStore::lock_refresh`]), and after taking the lock the manager re-reads the store in
//!   case another process refreshed first;
//! - access tokens are refreshed ahead of expiry (60 s by default), trusting the `expires_in`
//!   the endpoint returns rather than a documented lifetime;
//! - `invalid_grant` becomes [`AuthFailure::ReconnectRequired`]: the user must reconnect, and
//!   nothing retries it.
//!
//! Secrets are [`SecretString`]s: no `Debug`, log line or error ever shows one (tested below).

use std::{
    any::Any,
    fmt,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use url::Url;

use crate::{
    clock::Clock,
    error::{AuthFailure, Error, Result},
};

pub mod connect;

/// An access token and its refresh token.
#[derive(Clone)]
pub struct TokenSet {
    /// The bearer token.
    pub access_token: SecretString,
    /// The refresh token (single use: it rotates).
    pub refresh_token: SecretString,
    /// When the access token expires.
    pub access_expires_at: DateTime<Utc>,
    /// When the refresh token expires, when the endpoint says.
    pub refresh_expires_at: Option<DateTime<Utc>>,
    /// When the token endpoint issued this pair (the last code exchange or refresh), when known:
    /// a refresh token's documented life counts from here when the endpoint gives no expiry
    /// ([`connect::refresh_token_health`]). `None` for a pair pasted by hand.
    pub issued_at: Option<DateTime<Utc>>,
}

impl TokenSet {
    /// A pair holding only a refresh token (from `byte8-ledger connect`): the first use refreshes.
    pub fn from_refresh_token(refresh_token: SecretString) -> Self {
        Self {
            access_token: SecretString::from(String::new()),
            refresh_token,
            access_expires_at: DateTime::<Utc>::UNIX_EPOCH,
            refresh_expires_at: None,
            issued_at: None,
        }
    }

    /// True when the access token is valid for at least `margin` more.
    pub fn fresh_at(&self, now: DateTime<Utc>, margin: Duration) -> bool {
        !self.access_token.expose_secret().is_empty()
            && chrono::Duration::from_std(margin).is_ok_and(|m| self.access_expires_at > now + m)
    }
}

impl fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSet")
            .field("access_expires_at", &self.access_expires_at)
            .field("refresh_expires_at", &self.refresh_expires_at)
            .field("issued_at", &self.issued_at)
            .finish_non_exhaustive()
    }
}

/// A guard held while a refresh is in flight; dropping it releases the lock.
pub struct RefreshGuard(#[allow(dead_code)] Option<Box<dyn Any + Send>>);

impl RefreshGuard {
    /// A guard that holds nothing (stores used by one process).
    pub fn none() -> Self {
        Self(None)
    }

    /// A guard that keeps `held` (a transaction, a lock) alive until dropped.
    pub fn holding(held: Box<dyn Any + Send>) -> Self {
        Self(Some(held))
    }
}

impl fmt::Debug for RefreshGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshGuard")
    }
}

/// Where a connection's tokens live. The crate's stores (memory, SQLite with encryption at rest,
/// PostgreSQL) implement it; a host can bring its own.
#[async_trait]
pub trait TokenStore: fmt::Debug + Send + Sync {
    /// The stored pair, if any.
    async fn load(&self) -> Result<Option<TokenSet>>;

    /// Persists a new pair (durably, before it is used).
    async fn save(&self, tokens: &TokenSet) -> Result<()>;

    /// Serialises refreshes across processes that share this store. The default does nothing
    /// (one process: the manager's mutex is enough).
    async fn lock_refresh(&self) -> Result<RefreshGuard> {
        Ok(RefreshGuard::none())
    }
}

/// A [`TokenStore`] in memory.
#[derive(Debug, Default)]
pub struct MemoryTokenStore {
    tokens: std::sync::Mutex<Option<TokenSet>>,
    saves: AtomicU64,
}

impl MemoryTokenStore {
    /// A store holding `tokens`.
    pub fn new(tokens: Option<TokenSet>) -> Self {
        Self { tokens: std::sync::Mutex::new(tokens), saves: AtomicU64::new(0) }
    }

    /// How many times a pair was saved.
    pub fn saves(&self) -> u64 {
        self.saves.load(Ordering::SeqCst)
    }
}

#[async_trait]
impl TokenStore for MemoryTokenStore {
    async fn load(&self) -> Result<Option<TokenSet>> {
        Ok(self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone())
    }

    async fn save(&self, tokens: &TokenSet) -> Result<()> {
        *self.tokens.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tokens.clone());
        self.saves.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

/// How the client authenticates at the token endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// `client_id` and `client_secret` in the form body (Sage).
    Body,
    /// HTTP Basic with the client id and secret (Xero).
    Basic,
}

/// A client of one OAuth 2.0 token endpoint.
#[derive(Clone)]
pub struct OAuthClient {
    http: reqwest::Client,
    endpoint: Url,
    client_id: String,
    client_secret: SecretString,
    auth: ClientAuth,
    provider: &'static str,
}

impl fmt::Debug for OAuthClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthClient")
            .field("endpoint", &self.endpoint.as_str())
            .field("client_id", &self.client_id)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: SecretString,
    #[serde(default)]
    refresh_token: Option<SecretString>,
    #[serde(default, deserialize_with = "seconds")]
    expires_in: Option<u64>,
    #[serde(default, deserialize_with = "seconds")]
    refresh_token_expires_in: Option<u64>,
}

/// The longest access-token life believed from `expires_in` (Sage's tokens live 5 minutes,
/// Xero's 30): a larger value is read as this, so the token is refreshed at least daily.
pub const MAX_ACCESS_LIFETIME: Duration = Duration::from_secs(24 * 3600);

/// The longest refresh-token life believed from `refresh_token_expires_in` (Sage's live 31 days,
/// Xero's 60).
pub const MAX_REFRESH_LIFETIME: Duration = Duration::from_secs(366 * 24 * 3600);

/// A lifetime in seconds as token endpoints write it: an integer, also a decimal (`3600.0`,
/// `1e300`) or a string of one; whatever its size it never panics (the caller caps it). A
/// negative number is 0 (already expired); `null` is absent; anything else is an error (which
/// names the field, not the value).
fn seconds<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Option<u64>, D::Error> {
    use serde::de::Error as _;
    let v = Option::<serde_json::Value>::deserialize(d)?;
    let text = match &v {
        None | Some(serde_json::Value::Null) => return Ok(None),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        Some(serde_json::Value::String(s)) => s.trim().to_owned(),
        Some(_) => return Err(D::Error::custom("a lifetime that is not a number")),
    };
    if let Ok(n) = text.parse::<u64>() {
        return Ok(Some(n));
    }
    match text.parse::<f64>() {
        Ok(f) if f.is_nan() => Err(D::Error::custom("a lifetime that is not a number")),
        Ok(f) if f <= 0.0 => Ok(Some(0)),
        // Saturating: `as` from f64 clamps to u64::MAX (and the caller caps far below it).
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(f) => Ok(Some(f as u64)),
        Err(_) => Err(D::Error::custom("a lifetime that is not a number")),
    }
}

/// Why a token reply could not be read, as the source of the error that reports it.
///
/// serde's own message may quote the body (it quotes a string where it expected a number, an
/// unknown variant or field), and a token reply carries tokens. So this keeps serde's wording only
/// when it quotes nothing from the body (syntax errors, a missing or duplicate field) and otherwise
/// says where the unexpected value is, not what it is. It does not chain to the serde error.
struct UnreadableTokenReply {
    detail: String,
}

impl UnreadableTokenReply {
    fn new(e: &serde_json::Error) -> Self {
        use serde_json::error::Category;
        let text = e.to_string();
        let quotes_nothing = match e.classify() {
            Category::Io | Category::Syntax | Category::Eof => true,
            Category::Data => text.starts_with("missing field") || text.starts_with("duplicate field"),
        };
        let detail = if quotes_nothing {
            text
        } else {
            format!("a value of the wrong type or shape at line {} column {}", e.line(), e.column())
        };
        Self { detail }
    }
}

impl fmt::Debug for UnreadableTokenReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnreadableTokenReply").field("detail", &self.detail).finish()
    }
}

impl fmt::Display for UnreadableTokenReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.detail)
    }
}

impl std::error::Error for UnreadableTokenReply {}

#[derive(Deserialize, Default)]
struct TokenError {
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl OAuthClient {
    /// A client of the token endpoint `endpoint`.
    pub fn new(
        http: reqwest::Client,
        endpoint: Url,
        client_id: String,
        client_secret: SecretString,
        auth: ClientAuth,
        provider: &'static str,
    ) -> Self {
        Self { http, endpoint, client_id, client_secret, auth, provider }
    }

    /// Exchanges an authorisation code (single use; Sage's lives 60 s) for a token pair. The code
    /// is passed through verbatim (Sage's carries a country prefix such as `GB/`), and
    /// `redirect_uri` must match the registered one exactly.
    ///
    /// # Errors
    /// [`Error::Auth`] when the endpoint refuses the code; network and 5xx errors as usual.
    pub async fn exchange_code(&self, code: &str, redirect_uri: &str, now: DateTime<Utc>) -> Result<TokenSet> {
        self.exchange_code_pkce(&SecretString::from(code.to_owned()), redirect_uri, None, now).await
    }

    /// [`exchange_code`](Self::exchange_code) with the code as a secret and, for PKCE (Xero), the
    /// `code_verifier` whose S256 challenge was in the authorize URL.
    ///
    /// # Errors
    /// [`AuthFailure::ReconnectRequired`] when the endpoint refuses the code, with what to do
    /// next: `invalid_grant` reads "the code expired or was used already: run connect again",
    /// a redirect mismatch (`redirect_uri_mismatch`, or a description naming `redirect_uri`)
    /// "redirect_uri must match the app's registration exactly"; bad client credentials
    /// [`AuthFailure::AccessDenied`]; network and 5xx errors as usual.
    pub async fn exchange_code_pkce(
        &self,
        code: &SecretString,
        redirect_uri: &str,
        code_verifier: Option<&SecretString>,
        now: DateTime<Utc>,
    ) -> Result<TokenSet> {
        let mut form = vec![
            ("grant_type", "authorization_code".to_owned()),
            ("code", code.expose_secret().to_owned()),
            ("redirect_uri", redirect_uri.to_owned()),
        ];
        if let Some(v) = code_verifier {
            form.push(("code_verifier", v.expose_secret().to_owned()));
        }
        self.request(form, now, None).await
    }

    /// The provider name this client reports in errors (`sage_accounting`, `xero`).
    pub fn provider(&self) -> &'static str {
        self.provider
    }

    /// The client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// How this client authenticates.
    pub fn client_auth(&self) -> ClientAuth {
        self.auth
    }

    /// Refreshes a token pair.
    ///
    /// # Errors
    /// [`AuthFailure::ReconnectRequired`] on `invalid_grant`; network and 5xx errors as usual.
    pub async fn refresh(&self, refresh_token: &SecretString, now: DateTime<Utc>) -> Result<TokenSet> {
        let form = vec![
            ("grant_type", "refresh_token".to_owned()),
            ("refresh_token", refresh_token.expose_secret().to_owned()),
        ];
        self.request(form, now, Some(refresh_token)).await
    }

    async fn request(
        &self,
        mut form: Vec<(&'static str, String)>,
        now: DateTime<Utc>,
        previous_refresh: Option<&SecretString>,
    ) -> Result<TokenSet> {
        let mut req = self.http.post(self.endpoint.clone()).header(reqwest::header::ACCEPT, "application/json");
        match self.auth {
            ClientAuth::Body => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", self.client_secret.expose_secret().to_owned()));
            }
            ClientAuth::Basic => {
                req = req.basic_auth(&self.client_id, Some(self.client_secret.expose_secret()));
            }
        }
        let resp = req.form(&form).send().await.map_err(|e| {
            let outcome_unknown = !e.is_connect();
            // Neither the URL nor the form (which carries the secrets) reaches the error.
            let e = e.without_url();
            Error::Http {
                provider: self.provider,
                message: format!("token endpoint unreachable: {e}"),
                outcome_unknown,
                source: Some(Box::new(e)),
            }
        })?;
        let status = resp.status();
        let body = resp.bytes().await.map_err(|e| {
            let e = e.without_url();
            Error::Http {
                provider: self.provider,
                message: format!("token endpoint answered HTTP {} but the answer was cut off: {e}", status.as_u16()),
                // The grant may have been used (a refresh token rotated) without us seeing the new one.
                outcome_unknown: true,
                source: Some(Box::new(e)),
            }
        })?;
        if status.is_success() {
            let t: TokenResponse = serde_json::from_slice(&body).map_err(|e| {
                let cause = UnreadableTokenReply::new(&e);
                Error::Provider {
                    provider: self.provider,
                    status: Some(status.as_u16()),
                    message: format!("token endpoint answered something unreadable: {cause}"),
                    retryable: false,
                    source: Some(Box::new(cause)),
                }
            })?;
            // Checked and capped: a huge `expires_in` must not overflow the date (it would panic).
            let secs = |s: u64, cap: Duration| crate::clock::later(now, Duration::from_secs(s).min(cap));
            return Ok(TokenSet {
                access_token: t.access_token,
                refresh_token: match (t.refresh_token, previous_refresh) {
                    (Some(r), _) => r,
                    (None, Some(prev)) => prev.clone(),
                    (None, None) => SecretString::from(String::new()),
                },
                access_expires_at: secs(t.expires_in.unwrap_or(300), MAX_ACCESS_LIFETIME),
                refresh_expires_at: t.refresh_token_expires_in.map(|s| secs(s, MAX_REFRESH_LIFETIME)),
                issued_at: Some(now),
            });
        }
        let err: TokenError = serde_json::from_slice(&body).unwrap_or_default();
        let described = err.error_description.as_deref().map(|d| format!(" ({d})")).unwrap_or_default();
        let code_grant = previous_refresh.is_none();
        let redirect_named = err.error == "redirect_uri_mismatch"
            || err.error_description.as_deref().is_some_and(|d| d.to_ascii_lowercase().contains("redirect"));
        Err(match (status.as_u16(), err.error.as_str()) {
            (_, "invalid_grant" | "invalid_request" | "redirect_uri_mismatch") if code_grant && redirect_named => {
                Error::Auth {
                    provider: self.provider,
                    reason: AuthFailure::ReconnectRequired,
                    message: format!(
                        "the token endpoint refused the code ({}{described}): redirect_uri must match the app's registration exactly (scheme, host, port, path and case); fix --redirect-uri or the app's registration, then run connect again",
                        err.error
                    ),
                }
            }
            (_, "invalid_grant") if code_grant => Error::Auth {
                provider: self.provider,
                reason: AuthFailure::ReconnectRequired,
                message: format!(
                    "the token endpoint refused the code (invalid_grant{described}): the code expired (it lives about 60 seconds) or was used already: run connect again"
                ),
            },
            (_, "invalid_grant") => Error::Auth {
                provider: self.provider,
                reason: AuthFailure::ReconnectRequired,
                message: format!(
                    "the token endpoint refused the grant (invalid_grant{described}): the refresh token expired, was used already or was revoked; the user must reconnect (byte8-ledger connect)"
                ),
            },
            (_, "invalid_client" | "unauthorized_client") | (401, _) => Error::Auth {
                provider: self.provider,
                reason: AuthFailure::AccessDenied,
                message: format!(
                    "the token endpoint refused the client credentials ({}{described}): check the client id and secret",
                    err.error
                ),
            },
            (s, _) if s >= 500 || s == 429 => Error::Provider {
                provider: self.provider,
                status: Some(s),
                message: format!("token endpoint failed ({}{described})", err.error),
                retryable: true,
                source: None,
            },
            (s, e) => Error::Auth {
                provider: self.provider,
                reason: AuthFailure::ReconnectRequired,
                message: format!("the token endpoint refused the request (HTTP {s} {e}{described})"),
            },
        })
    }
}

/// What a [`TokenManager`] holds between calls.
#[derive(Default)]
struct Held {
    /// The pair in use.
    tokens: Option<TokenSet>,
    /// True while `tokens` is a refreshed pair the store has not taken yet (its save failed):
    /// the store still holds the spent pair, so this one is the only live copy.
    unsaved: bool,
    /// The refresh token this manager last spent, by hash: a pair the store gives back with it
    /// is stale (the save of its successor failed) and is never used again.
    spent: Option<String>,
}

/// Hands out fresh access tokens for one connection, refreshing single-flight ahead of expiry and
/// persisting each new pair before using it.
///
/// # A refreshed pair is never lost
///
/// The old refresh token is spent the moment the endpoint answers, so the new pair is kept in
/// memory **before** it is saved. A save that fails (SQLite busy, a full disk, a PostgreSQL blip)
/// is retried with backoff ([`with_save_retry`](Self::with_save_retry)); if it still fails, the
/// access token is used anyway, the pair stays in memory and its save is tried again at the start
/// of every later call until the store takes it. Meanwhile a pair the store gives back holding the
/// spent refresh token is ignored: the old token is never sent again (the endpoint would answer
/// `invalid_grant`, and the business would have to be reconnected by hand).
pub struct TokenManager {
    oauth: OAuthClient,
    store: Arc<dyn TokenStore>,
    state: tokio::sync::Mutex<Held>,
    margin: Duration,
    clock: Arc<dyn Clock>,
    refreshes: AtomicU64,
    save_retry: crate::http::RetryConfig,
    /// The lifetime of the last access token this manager obtained.
    lifetime: std::sync::Mutex<Option<Duration>>,
    /// A refresh token the endpoint refused for good (`invalid_grant`), by hash, with the error:
    /// every caller gets that error at once instead of asking again, until the store holds
    /// another refresh token (the connection was renewed).
    dead: std::sync::Mutex<Option<(String, String)>>,
}

impl fmt::Debug for TokenManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenManager")
            .field("oauth", &self.oauth)
            .field("margin", &self.margin)
            .field("refreshes", &self.refreshes.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl TokenManager {
    /// A manager over `store`, refreshing `margin` before expiry; a failed save of a new pair is
    /// retried 4 times from 200 ms, doubling to at most 5 s.
    pub fn new(oauth: OAuthClient, store: Arc<dyn TokenStore>, margin: Duration, clock: Arc<dyn Clock>) -> Self {
        Self {
            oauth,
            store,
            state: tokio::sync::Mutex::new(Held::default()),
            margin,
            clock,
            refreshes: AtomicU64::new(0),
            save_retry: crate::http::RetryConfig {
                max_retries: 4,
                initial_backoff: Duration::from_millis(200),
                max_backoff: Duration::from_secs(5),
                retry_timeout: Duration::from_secs(30),
            },
            lifetime: std::sync::Mutex::new(None),
            dead: std::sync::Mutex::new(None),
        }
    }

    /// How a failed save of a new pair is retried within the call that refreshed it
    /// (`max_retries` and the backoff; `retry_timeout` is not used). Later calls try again.
    #[must_use]
    pub fn with_save_retry(mut self, retry: crate::http::RetryConfig) -> Self {
        self.save_retry = retry;
        self
    }

    /// The refresh margin: the configured one, but never more than a quarter of the access
    /// token's lifetime (tokens that live seconds are not refreshed on every call).
    fn margin(&self) -> Duration {
        match *self.lifetime.lock().unwrap_or_else(std::sync::PoisonError::into_inner) {
            Some(l) => self.margin.min(l / 4),
            None => self.margin,
        }
    }

    /// How many refreshes this manager made.
    pub fn refreshes(&self) -> u64 {
        self.refreshes.load(Ordering::SeqCst)
    }

    /// True while a refreshed pair is held in memory only (its save failed so far).
    pub async fn has_unsaved_tokens(&self) -> bool {
        self.state.lock().await.unsaved
    }

    /// Saves the held pair if the store has not taken it yet: `retries` more tries after the
    /// first, with backoff. A failure is logged, never returned: the pair stays held.
    async fn save_held(&self, held: &mut Held, retries: u32) {
        let Some(tokens) = held.tokens.clone().filter(|_| held.unsaved) else { return };
        for attempt in 0..=retries {
            match self.store.save(&tokens).await {
                Ok(()) => {
                    if attempt > 0 || held.unsaved {
                        tracing::info!(provider = self.oauth.provider, "the refreshed token pair is saved");
                    }
                    held.unsaved = false;
                    return;
                }
                Err(e) if attempt < retries => {
                    let delay = crate::http::Backoff::delay(&self.save_retry, attempt, rand::random::<f64>());
                    tracing::warn!(provider = self.oauth.provider, error = %e, retry_in_ms = delay.as_millis(), "cannot save the refreshed token pair; retrying");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => {
                    tracing::error!(provider = self.oauth.provider, error = %e, "cannot save the refreshed token pair: it is kept in memory (the old refresh token is spent and never used again) and saved again on the next call");
                }
            }
        }
    }

    /// A fresh access token: the cached one, else the store's, else a refreshed one (kept in
    /// memory, then saved, before it is returned).
    ///
    /// # Errors
    /// [`AuthFailure::NotConnected`] when no tokens are stored; the refresh's errors. A failed
    /// save of a refreshed pair is not an error (see the type's docs).
    pub async fn access_token(&self) -> Result<SecretString> {
        self.obtain(false).await
    }

    /// Refreshes the pair now, whatever its access token's expiry: what keeps an idle
    /// connection's refresh token alive (a Sage refresh token dies after 31 days unused, a
    /// Xero one after 60). The same single-flight, store-first rules as
    /// [`access_token`](Self::access_token) apply.
    ///
    /// # Errors
    /// As [`access_token`](Self::access_token).
    pub async fn refresh_now(&self) -> Result<()> {
        self.obtain(true).await.map(drop)
    }

    async fn obtain(&self, force: bool) -> Result<SecretString> {
        let mut held = self.state.lock().await;
        if held.unsaved {
            self.save_held(&mut held, 0).await;
        }
        let now = self.clock.now();
        let margin = self.margin();
        if let Some(t) = held.tokens.as_ref().filter(|t| !force && t.fresh_at(now, margin)) {
            return Ok(t.access_token.clone());
        }
        let _guard = self.store.lock_refresh().await?;
        // The store may hold a newer pair (another process refreshed, or first use); one holding
        // the refresh token this manager spent is stale, never used again.
        let stored = match self.store.load().await {
            Ok(stored) => stored.filter(|t| {
                held.spent.as_deref() != Some(crate::identity::sha256_hex(t.refresh_token.expose_secret()).as_str())
            }),
            // With a pair held in memory only, the store is not needed to go on.
            Err(_) if held.unsaved => None,
            Err(e) => return Err(e),
        };
        if stored.is_some() {
            // A pair stored by someone else (a reconnection) replaces one held unsaved.
            held.unsaved = false;
        }
        if let Some(t) = stored.as_ref().filter(|t| !force && t.fresh_at(now, margin)) {
            let token = t.access_token.clone();
            held.tokens = stored;
            return Ok(token);
        }
        let current = stored.or_else(|| held.tokens.clone()).ok_or_else(|| Error::Auth {
            provider: self.oauth.provider,
            reason: AuthFailure::NotConnected,
            message: "no tokens are stored for this connection: connect it first (byte8-ledger connect)".into(),
        })?;
        let fingerprint = crate::identity::sha256_hex(current.refresh_token.expose_secret());
        if let Some((dead, message)) = self.dead.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref()
            && *dead == fingerprint
        {
            return Err(Error::Auth {
                provider: self.oauth.provider,
                reason: AuthFailure::ReconnectRequired,
                message: message.clone(),
            });
        }
        tracing::info!(provider = self.oauth.provider, "refreshing the access token");
        let fresh = match self.oauth.refresh(&current.refresh_token, now).await {
            Ok(f) => f,
            Err(e) => {
                if let Error::Auth { reason: AuthFailure::ReconnectRequired, message, .. } = &e {
                    *self.dead.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some((fingerprint, message.clone()));
                }
                return Err(e);
            }
        };
        self.refreshes.fetch_add(1, Ordering::SeqCst);
        // The old refresh token is spent: the new pair is held before anything can fail.
        *self.lifetime.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            (fresh.access_expires_at - now).to_std().ok();
        let token = fresh.access_token.clone();
        held.spent = Some(fingerprint);
        held.tokens = Some(fresh);
        held.unsaved = true;
        self.save_held(&mut held, self.save_retry.max_retries).await;
        Ok(token)
    }

    /// Marks `rejected` as unusable (the API answered 401 with it) so that the next call refreshes;
    /// a token already replaced is left alone.
    pub async fn invalidate(&self, rejected: &SecretString) {
        let mut held = self.state.lock().await;
        if let Some(t) = held.tokens.as_mut()
            && t.access_token.expose_secret() == rejected.expose_secret()
        {
            t.access_expires_at = DateTime::<Utc>::UNIX_EPOCH;
        }
        // The store's copy is the same token: make sure it is not read back as fresh.
        if let Ok(Some(mut stored)) = self.store.load().await
            && stored.access_token.expose_secret() == rejected.expose_secret()
        {
            stored.access_expires_at = DateTime::<Utc>::UNIX_EPOCH;
            let _ = self.store.save(&stored).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_show_in_debug() {
        let t = TokenSet {
            access_token: SecretString::from("access-SECRET-1".to_owned()),
            refresh_token: SecretString::from("refresh-SECRET-2".to_owned()),
            access_expires_at: DateTime::<Utc>::UNIX_EPOCH,
            refresh_expires_at: None,
            issued_at: None,
        };
        let store = MemoryTokenStore::new(Some(t.clone()));
        let oauth = OAuthClient::new(
            reqwest::Client::new(),
            Url::parse("https://oauth.example.com/token").unwrap(),
            "client-id".into(),
            SecretString::from("client-SECRET-3".to_owned()),
            ClientAuth::Body,
            "sage_accounting",
        );
        let manager =
            TokenManager::new(oauth.clone(), Arc::new(store), Duration::from_secs(60), crate::clock::system());
        for text in [
            format!("{t:?}"),
            format!("{oauth:?}"),
            format!("{manager:?}"),
            format!("{:?}", MemoryTokenStore::new(Some(t))),
        ] {
            assert!(!text.contains("SECRET"), "{text}");
        }
    }

    /// A token store whose saves fail while `failing` says so (SQLite busy, a full disk).
    #[derive(Debug)]
    struct FlakyStore {
        inner: MemoryTokenStore,
        failing: std::sync::atomic::AtomicBool,
        refused: AtomicU64,
    }

    #[async_trait]
    impl TokenStore for FlakyStore {
        async fn load(&self) -> Result<Option<TokenSet>> {
            self.inner.load().await
        }

        async fn save(&self, tokens: &TokenSet) -> Result<()> {
            if self.failing.load(Ordering::SeqCst) {
                self.refused.fetch_add(1, Ordering::SeqCst);
                return Err(Error::database("database is locked", true, None));
            }
            self.inner.save(tokens).await
        }
    }

    /// The token endpoint: each refresh token is accepted once, and answers the next pair
    /// (`r0` → `r1` → `r2`); a spent one gets `invalid_grant`, as Sage and Xero answer.
    async fn rotating_endpoint() -> wiremock::MockServer {
        use wiremock::{Mock, ResponseTemplate, matchers};
        let server = wiremock::MockServer::start().await;
        for (from, to) in [("r0", "r1"), ("r1", "r2")] {
            Mock::given(matchers::method("POST"))
                .and(matchers::body_string_contains(format!("refresh_token={from}&")))
                .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                    "access_token": format!("access-{to}"), "refresh_token": to, "expires_in": 300,
                })))
                .up_to_n_times(1)
                .with_priority(1)
                .mount(&server)
                .await;
        }
        Mock::given(matchers::method("POST"))
            .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({"error": "invalid_grant"})))
            .with_priority(10)
            .mount(&server)
            .await;
        server
    }

    async fn spent_tokens(server: &wiremock::MockServer) -> Vec<String> {
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(|r| {
                url::form_urlencoded::parse(&r.body).find(|(k, _)| k == "refresh_token").map(|(_, v)| v.into_owned())
            })
            .collect()
    }

    #[tokio::test]
    async fn a_refreshed_pair_whose_save_fails_is_kept_used_and_saved_later_and_the_old_token_never_reused() {
        let server = rotating_endpoint().await;
        let store = Arc::new(FlakyStore {
            inner: MemoryTokenStore::new(Some(TokenSet::from_refresh_token(SecretString::from("r0".to_owned())))),
            failing: std::sync::atomic::AtomicBool::new(true),
            refused: AtomicU64::new(0),
        });
        let oauth = OAuthClient::new(
            reqwest::Client::new(),
            Url::parse(&format!("{}/token", server.uri())).unwrap(),
            "client-id".into(),
            SecretString::from("client-secret".to_owned()),
            ClientAuth::Body,
            "sage_accounting",
        );
        let clock =
            Arc::new(crate::clock::ManualClock::new(DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000)));
        let retry = crate::http::RetryConfig {
            max_retries: 2,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            retry_timeout: Duration::from_secs(1),
        };
        let manager = TokenManager::new(
            oauth,
            Arc::clone(&store) as Arc<dyn TokenStore>,
            Duration::from_secs(60),
            Arc::clone(&clock) as Arc<dyn Clock>,
        )
        .with_save_retry(retry);

        // The refresh spends r0; every save fails (the first and its 2 retries): the new pair is
        // used anyway and held in memory.
        let token = manager.access_token().await.expect("the refreshed access token, despite the store");
        assert_eq!(token.expose_secret(), "access-r1");
        assert_eq!(store.refused.load(Ordering::SeqCst), 3, "the save was retried");
        assert!(manager.has_unsaved_tokens().await);
        assert_eq!(
            store.inner.load().await.unwrap().unwrap().refresh_token.expose_secret(),
            "r0",
            "the store still holds the spent pair"
        );

        // The access token expires while the store is still failing: the next refresh uses r1,
        // the pair held in memory, never r0 (which the store gives back).
        clock.advance(chrono::Duration::seconds(600));
        let token = manager.access_token().await.expect("refreshed with the held pair");
        assert_eq!(token.expose_secret(), "access-r2");
        assert_eq!(spent_tokens(&server).await, ["r0", "r1"], "the spent refresh token is never sent again");

        // The store recovers: the next call saves the held pair before anything else.
        store.failing.store(false, Ordering::SeqCst);
        assert_eq!(manager.access_token().await.unwrap().expose_secret(), "access-r2");
        assert!(!manager.has_unsaved_tokens().await, "saved once the store takes it");
        let saved = store.inner.load().await.unwrap().unwrap();
        assert_eq!(
            (saved.refresh_token.expose_secret(), saved.access_token.expose_secret()),
            ("r2", "access-r2"),
            "the live pair reached the store"
        );
        assert_eq!(manager.refreshes(), 2);
    }

    #[tokio::test]
    async fn a_save_that_fails_once_is_retried_within_the_refresh() {
        let server = rotating_endpoint().await;
        let store = Arc::new(FlakyStore {
            inner: MemoryTokenStore::new(Some(TokenSet::from_refresh_token(SecretString::from("r0".to_owned())))),
            failing: std::sync::atomic::AtomicBool::new(true),
            refused: AtomicU64::new(0),
        });
        let oauth = OAuthClient::new(
            reqwest::Client::new(),
            Url::parse(&format!("{}/token", server.uri())).unwrap(),
            "client-id".into(),
            SecretString::from("client-secret".to_owned()),
            ClientAuth::Body,
            "sage_accounting",
        );
        // The store fails the first save only: a wrapper that clears `failing` after one refusal.
        #[derive(Debug)]
        struct OnceFailing(Arc<FlakyStore>);
        #[async_trait]
        impl TokenStore for OnceFailing {
            async fn load(&self) -> Result<Option<TokenSet>> {
                self.0.load().await
            }
            async fn save(&self, tokens: &TokenSet) -> Result<()> {
                let r = self.0.save(tokens).await;
                self.0.failing.store(false, Ordering::SeqCst);
                r
            }
        }
        let retry = crate::http::RetryConfig {
            max_retries: 3,
            initial_backoff: Duration::from_millis(1),
            max_backoff: Duration::from_millis(2),
            retry_timeout: Duration::from_secs(1),
        };
        let manager = TokenManager::new(
            oauth,
            Arc::new(OnceFailing(Arc::clone(&store))),
            Duration::from_secs(60),
            crate::clock::system(),
        )
        .with_save_retry(retry);
        assert_eq!(manager.access_token().await.unwrap().expose_secret(), "access-r1");
        assert_eq!(store.refused.load(Ordering::SeqCst), 1);
        assert!(!manager.has_unsaved_tokens().await, "the retry saved it");
        assert_eq!(store.inner.load().await.unwrap().unwrap().refresh_token.expose_secret(), "r1");
    }

    #[test]
    fn token_lifetimes_of_any_size_are_read_and_capped_without_a_panic() {
        let read = |json: &str| -> (Option<u64>, Option<u64>) {
            let t: TokenResponse = serde_json::from_str(json).unwrap_or_else(|e| panic!("{json}: {e}"));
            (t.expires_in, t.refresh_token_expires_in)
        };
        assert_eq!(read(r#"{"access_token":"a","expires_in":300}"#), (Some(300), None));
        assert_eq!(read(r#"{"access_token":"a","expires_in":"1800"}"#), (Some(1800), None));
        assert_eq!(read(r#"{"access_token":"a","expires_in":3600.0}"#), (Some(3600), None));
        assert_eq!(read(r#"{"access_token":"a","expires_in":-5}"#), (Some(0), None));
        assert_eq!(read(r#"{"access_token":"a","expires_in":null}"#), (None, None));
        assert_eq!(
            read(r#"{"access_token":"a","expires_in":1e300,"refresh_token_expires_in":99999999999999999999999999}"#),
            (Some(u64::MAX), Some(u64::MAX))
        );
        assert!(serde_json::from_str::<TokenResponse>(r#"{"access_token":"a","expires_in":"soon"}"#).is_err());
        assert!(serde_json::from_str::<TokenResponse>(r#"{"access_token":"a","expires_in":[1]}"#).is_err());
    }

    #[tokio::test]
    async fn a_huge_expires_in_from_the_token_endpoint_is_capped_not_a_panic() {
        use wiremock::{Mock, MockServer, ResponseTemplate, matchers::method};
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_raw(
                r#"{"access_token":"a","refresh_token":"r2","expires_in":1e300,"refresh_token_expires_in":99999999999999999999999999}"#,
                "application/json",
            ))
            .mount(&server)
            .await;
        let oauth = OAuthClient::new(
            reqwest::Client::new(),
            Url::parse(&format!("{}/token", server.uri())).unwrap(),
            "id".into(),
            SecretString::from("secret".to_owned()),
            ClientAuth::Body,
            "sage_accounting",
        );
        let now = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000);
        let t = oauth.refresh(&SecretString::from("r1".to_owned()), now).await.unwrap();
        // Capped: a day for access, 366 days for refresh, whatever the endpoint claims.
        assert_eq!(t.access_expires_at, now + chrono::Duration::days(1));
        assert_eq!(t.refresh_expires_at, Some(now + chrono::Duration::days(366)));
    }

    #[test]
    fn freshness_uses_the_margin() {
        let now = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000);
        let mut t = TokenSet::from_refresh_token(SecretString::from("r".to_owned()));
        assert!(!t.fresh_at(now, Duration::from_secs(60)), "no access token yet");
        t.access_token = SecretString::from("a".to_owned());
        t.access_expires_at = now + chrono::Duration::seconds(61);
        assert!(t.fresh_at(now, Duration::from_secs(60)));
        t.access_expires_at = now + chrono::Duration::seconds(60);
        assert!(!t.fresh_at(now, Duration::from_secs(60)));
    }
}
