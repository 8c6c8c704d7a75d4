//! [`MagentoClient`]: the ledger's calls to the Byte8 module's REST surface (byte8-spec.md 12.4
//! and 12.6), each signed with a fresh ledger → Magento token.
//!
//! | method | call |
//! |---|---|
//! | [`MagentoClient::ping`] | `GET /rest/V1/byte8/ping` |
//! | [`MagentoClient::payment_methods`] | `GET /rest/V1/byte8/payment-methods` |
//! | [`MagentoClient::invoice`] | `GET /rest/V1/byte8/invoice/{id}` |
//! | [`MagentoClient::customer`] | `GET /rest/V1/byte8/customer/{id}` |
//! | [`MagentoClient::credit_memo`] | `GET /rest/V1/byte8/creditmemo/{id}` |
//! | [`MagentoClient::payment`] | `GET /rest/V1/byte8/payment/{invoice_id}` |
//! | [`MagentoClient::product`] | `GET /rest/V1/byte8/product/{id}` |
//! | [`MagentoClient::post_sync_state`] | `POST /rest/V1/byte8/sync-state` |
//!
//! Entities are read into the canonical types and validated; a field that is missing, mistyped
//! or breaks a rule is named in the error. The client is the engine's
//! [`EntitySource`]: give it to [`SyncEngine::with_source`](byte8_ledger_core::engine::SyncEngine::with_source).
//!
//! The sync-state callback is an upsert keyed on (entity type, id, provider) that Magento
//! overwrites, so sending it twice is harmless: it is retried on 5xx and network errors like a
//! GET.
//!
//! # Connection status
//!
//! [`MagentoClient::status`] is `pending` until a first call succeeds, `active` after any 2xx,
//! and `token_revoked` after a 401: Magento refused a token the ledger signed, so the key it holds
//! is not ours any more (the merchant disconnected or paired again). Every later 401 keeps it
//! there, and a later 2xx (after the merchant paired again with this key) makes it `active`
//! again. [`MagentoClient::watch_status`] notifies every change.

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use url::Url;

use super::{
    Call, ConnectionStatus, PROVIDER, Reply, endpoint,
    jwt::{DEFAULT_INBOUND_TTL, JwtSigner},
    keys::ApiKey,
    magento_base_url, magento_message, redirect_message,
};
use byte8_ledger_core::{
    canonical::{
        Entity, EventKind, MagentoContact, MagentoCreditMemo, MagentoInvoice, MagentoPayment, MagentoProduct,
        serde_time,
    },
    clock::{Clock, SystemClock},
    engine::EntitySource,
    error::{AuthFailure, Error, ErrorCode, FieldError, ProviderFieldError, Result},
    http::{ExchangeObserver, Request, RetryConfig},
    outcome::{Outcome, SyncStatus},
};

/// The answer of `GET /rest/V1/byte8/ping` (informational: the 2xx is the signal).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ping {
    /// Always true from the module.
    #[serde(default)]
    pub ok: bool,
    /// The tenant id Magento holds.
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Magento's clock (ISO 8601), useful to spot skew.
    #[serde(default)]
    pub server_time: Option<String>,
}

/// One entry of `GET /rest/V1/byte8/payment-methods` (byte8-spec.md 3.8).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    /// The Magento method code (`checkmo`).
    pub code: String,
    /// The title at the default scope, when set.
    #[serde(default)]
    pub label: Option<String>,
    /// Active at the default scope.
    pub is_active: bool,
}

/// The body of `POST /rest/V1/byte8/sync-state` (byte8-spec.md 12.6), fields in the documented
/// order, every one present (`null` when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SyncStateBody {
    /// `invoice`, `creditmemo`, `customer` or `product`.
    pub entity_type: String,
    /// The Magento id, > 0.
    pub magento_entity_id: u64,
    /// `sage_accounting`.
    pub provider: String,
    /// `synced`, `skipped` or `failed`: never `pending`, which Magento refuses.
    pub sync_status: SyncStatus,
    /// The ledger's id of the record.
    pub provider_entity_id: Option<String>,
    /// The ledger's number (`SI-27`); sent only when enabled, as v1 sends `null`.
    pub provider_reference: Option<String>,
    /// Why it was skipped.
    pub skip_reason: Option<String>,
    /// The error class.
    pub error_code: Option<ErrorCode>,
    /// When the outcome was reached (RFC 3339, UTC, `Z`).
    #[serde(with = "serde_time")]
    pub last_sync_at: DateTime<Utc>,
}

/// The entity types Magento keeps a sync-state row for.
pub const SYNC_STATE_ENTITY_TYPES: [&str; 4] = ["invoice", "creditmemo", "customer", "product"];

impl SyncStateBody {
    /// The body for `outcome`: `entity_type` is the event name before its first dot (the
    /// outcome's `entity_type` when it has no event), checked with Magento's rules.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming each field Magento would refuse: an unknown or missing
    /// `entity_type`, a missing or zero `magento_entity_id`, an empty `provider`.
    pub fn from_outcome(outcome: &Outcome, send_provider_reference: bool) -> Result<Self> {
        let mut errors = Vec::new();
        let entity_type = outcome
            .event
            .as_deref()
            .and_then(Outcome::entity_type_of)
            .or_else(|| outcome.entity_type.clone())
            .unwrap_or_default();
        if !SYNC_STATE_ENTITY_TYPES.contains(&entity_type.as_str()) {
            errors.push(FieldError::new(
                "entity_type",
                format!("`{entity_type}` is not one of {}", SYNC_STATE_ENTITY_TYPES.join(", ")),
            ));
        }
        let magento_entity_id = outcome.magento_entity_id.unwrap_or(0);
        if magento_entity_id == 0 {
            errors.push(FieldError::new("magento_entity_id", "must be > 0"));
        }
        if outcome.provider.trim().is_empty() {
            errors.push(FieldError::new("provider", "must not be empty"));
        }
        if !errors.is_empty() {
            return Err(Error::Invalid { what: "sync-state callback", errors });
        }
        Ok(Self {
            entity_type,
            magento_entity_id,
            provider: outcome.provider.clone(),
            sync_status: outcome.sync_status,
            provider_entity_id: outcome.provider_entity_id.clone(),
            provider_reference: if send_provider_reference { outcome.provider_reference.clone() } else { None },
            skip_reason: outcome.skip_reason.clone(),
            error_code: outcome.error_code,
            last_sync_at: outcome.last_sync_at,
        })
    }
}

/// Builds a [`MagentoClient`]; every problem is reported by [`build`](Self::build) at once.
#[derive(Default)]
pub struct MagentoClientBuilder {
    base_url: Option<String>,
    tenant_id: Option<String>,
    api_key: Option<ApiKey>,
    clock: Option<Arc<dyn Clock>>,
    retry: Option<RetryConfig>,
    token_ttl: Option<Duration>,
    status: Option<ConnectionStatus>,
    http: Option<reqwest::Client>,
    timeout: Option<Duration>,
    send_provider_reference: bool,
    observer: Option<Arc<dyn ExchangeObserver>>,
}

impl fmt::Debug for MagentoClientBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MagentoClientBuilder")
            .field("base_url", &self.base_url)
            .field("tenant_id", &self.tenant_id)
            .field("api_key", &self.api_key.as_ref().map(|_| "[REDACTED]"))
            .field("retry", &self.retry)
            .field("token_ttl", &self.token_ttl)
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl MagentoClientBuilder {
    /// An empty builder.
    pub fn new() -> Self {
        Self::default()
    }

    /// The store's base URL as the merchant typed it (`https://shop.example.com`).
    #[must_use]
    pub fn with_base_url(mut self, url: impl Into<String>) -> Self {
        self.base_url = Some(url.into());
        self
    }

    /// The tenant id (the `sub` of every token).
    #[must_use]
    pub fn with_tenant_id(mut self, tenant_id: impl Into<String>) -> Self {
        self.tenant_id = Some(tenant_id.into());
        self
    }

    /// The tenant's master key.
    #[must_use]
    pub fn with_api_key(mut self, key: ApiKey) -> Self {
        self.api_key = Some(key);
        self
    }

    /// The clock tokens are dated by (the system clock by default).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Retry settings ([`RetryConfig::default`] otherwise).
    #[must_use]
    pub fn with_retry(mut self, retry: RetryConfig) -> Self {
        self.retry = Some(retry);
        self
    }

    /// Token lifetime, 1 to 300 s (60 s by default).
    #[must_use]
    pub fn with_token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = Some(ttl);
        self
    }

    /// The status to start from (`pending` by default; `active` for a binding known to work).
    #[must_use]
    pub fn with_status(mut self, status: ConnectionStatus) -> Self {
        self.status = Some(status);
        self
    }

    /// An HTTP client of your own (by default one with 5 s connect and 15 s read timeouts).
    #[must_use]
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = Some(http);
        self
    }

    /// The total time of one attempt of a call, connecting and reading the whole body
    /// included ([`REQUEST_TIMEOUT`](super::REQUEST_TIMEOUT), 60 s, by default; 1 s to 10 min).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Shows every call to the store and every answer to `observer`
    /// ([`byte8_ledger_core::http::ExchangeObserver`]), e.g. to record what a sync read from
    /// Magento. None by default.
    #[must_use]
    pub fn with_exchange_observer(mut self, observer: Arc<dyn ExchangeObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Sends the outcome's `provider_reference` in the sync-state callback. Off by default:
    /// Byte8 v1 sends `null` there (byte8-spec.md 13.8).
    #[must_use]
    pub fn with_provider_reference(mut self, send: bool) -> Self {
        self.send_provider_reference = send;
        self
    }

    /// Checks everything and builds the client.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming every missing or refused setting.
    pub fn build(self) -> Result<MagentoClient> {
        let mut errors = Vec::new();
        let base = match self.base_url.as_deref() {
            Some(text) => magento_base_url("base_url", text).map_err(|e| errors.push(e)).ok(),
            None => {
                errors.push(FieldError::new("base_url", "required"));
                None
            }
        };
        let tenant_id = self.tenant_id.as_deref().map(str::trim).unwrap_or_default().to_owned();
        if tenant_id.is_empty() {
            errors.push(FieldError::new("tenant_id", "required"));
        }
        if self.api_key.is_none() {
            errors.push(FieldError::new("api_key", "required"));
        }
        let ttl = self.token_ttl.unwrap_or(DEFAULT_INBOUND_TTL);
        if ttl < Duration::from_secs(1) || ttl > super::jwt::MAX_INBOUND_TTL {
            errors.push(FieldError::new("token_ttl", "must be between 1 s and 300 s (Magento's ceiling)"));
        }
        let retry = self.retry.unwrap_or_default();
        if retry.initial_backoff.is_zero() && retry.max_retries > 0 {
            errors.push(FieldError::new("retry.initial_backoff", "must be > 0 when retries are on"));
        }
        let timeout = self.timeout.unwrap_or(super::REQUEST_TIMEOUT);
        if !(Duration::from_millis(1)..=Duration::from_secs(600)).contains(&timeout) {
            errors.push(FieldError::new("request_timeout", "must be between 1 ms and 10 min"));
        }
        let (Some(base), Some(key), true) = (base, self.api_key, errors.is_empty()) else {
            return Err(Error::Invalid { what: "Magento client configuration", errors });
        };
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let signer = JwtSigner::new(key.derive().inbound, tenant_id, Arc::clone(&clock))?.with_ttl(ttl)?;
        let http = match self.http {
            Some(h) => h,
            None => super::http_client()?,
        };
        let (status, _) = watch::channel(self.status.unwrap_or(ConnectionStatus::Pending));
        Ok(MagentoClient {
            http,
            base,
            signer,
            retry,
            timeout,
            clock,
            status: Arc::new(status),
            send_provider_reference: self.send_provider_reference,
            observer: self.observer,
        })
    }
}

/// The ledger's client of one Magento store.
#[derive(Clone)]
pub struct MagentoClient {
    http: reqwest::Client,
    base: Url,
    signer: JwtSigner,
    retry: RetryConfig,
    timeout: Duration,
    clock: Arc<dyn Clock>,
    status: Arc<watch::Sender<ConnectionStatus>>,
    send_provider_reference: bool,
    observer: Option<Arc<dyn ExchangeObserver>>,
}

impl fmt::Debug for MagentoClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MagentoClient")
            .field("base", &self.base.as_str())
            .field("tenant_id", &self.signer.tenant_id())
            .field("status", &self.status())
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

/// The path segment of the entity an event needs.
fn entity_path(kind: EventKind) -> &'static str {
    match kind {
        EventKind::InvoiceCreated => "invoice",
        EventKind::InvoicePaid => "payment",
        EventKind::CreditMemoCreated => "creditmemo",
        EventKind::CustomerUpserted => "customer",
        EventKind::ProductUpserted => "product",
    }
}

impl MagentoClient {
    /// A builder.
    pub fn builder() -> MagentoClientBuilder {
        MagentoClientBuilder::new()
    }

    /// A client with the defaults: system clock, 60 s tokens, default retries, status `pending`.
    ///
    /// # Errors
    /// As [`MagentoClientBuilder::build`].
    pub fn new(base_url: &str, tenant_id: &str, api_key: ApiKey) -> Result<Self> {
        Self::builder().with_base_url(base_url).with_tenant_id(tenant_id).with_api_key(api_key).build()
    }

    /// The store's base URL, normalised.
    pub fn base_url(&self) -> &Url {
        &self.base
    }

    /// The tenant id.
    pub fn tenant_id(&self) -> &str {
        self.signer.tenant_id()
    }

    /// The connection status now.
    pub fn status(&self) -> ConnectionStatus {
        *self.status.borrow()
    }

    /// A receiver notified of every status change.
    pub fn watch_status(&self) -> watch::Receiver<ConnectionStatus> {
        self.status.subscribe()
    }

    fn set_status(&self, to: ConnectionStatus) {
        let from = self.status.send_replace(to);
        if from != to {
            tracing::info!(tenant = %self.tenant_id(), from = %from, to = %to, "Magento connection status changed");
        }
    }

    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Result<Reply> {
        let label = format!("{method} {path}");
        let mut request = Request::new(method, endpoint(&self.base, path)?, path)
            .label(label)
            // Every call is safe to repeat: reads, and the sync-state upsert.
            .idempotent(true)
            .timeout(self.timeout);
        if let Some(body) = body {
            request = request.json(body);
        }
        Call {
            http: &self.http,
            request,
            signer: Some(&self.signer),
            retry: &self.retry,
            clock: self.clock.as_ref(),
            observer: self.observer.as_deref(),
        }
        .execute()
        .await
    }

    /// Turns a reply into its body or the error its status means; records the status.
    fn accept(&self, reply: Reply, label: &str, not_found: impl FnOnce() -> Error) -> Result<bytes::Bytes> {
        match reply.status {
            200..=299 => {
                self.set_status(ConnectionStatus::Active);
                Ok(reply.body)
            }
            401 => {
                self.set_status(ConnectionStatus::TokenRevoked);
                Err(Error::Auth {
                    provider: PROVIDER,
                    reason: AuthFailure::ReconnectRequired,
                    message: format!(
                        "{label}: Magento refused the ledger's token (401); the store no longer holds this tenant's key \
                         (disconnected or paired again): pair it again"
                    ),
                })
            }
            403 => Err(Error::Auth {
                provider: PROVIDER,
                reason: AuthFailure::AccessDenied,
                message: format!("{label}: Magento denied access (403): {}", magento_message(&reply.body)),
            }),
            404 => Err(not_found()),
            429 => Err(Error::RateLimited { provider: PROVIDER, retry_after: reply.retry_after }),
            s @ 300..=399 => Err(Error::Provider {
                provider: PROVIDER,
                status: Some(s),
                message: redirect_message(label, s),
                retryable: false,
                source: None,
            }),
            s @ (408 | 500..=599) => Err(Error::Provider {
                provider: PROVIDER,
                status: Some(s),
                message: format!("{label}: {}", magento_message(&reply.body)),
                retryable: true,
                source: None,
            }),
            s => Err(Error::Rejected {
                provider: PROVIDER,
                status: s,
                errors: vec![ProviderFieldError {
                    code: String::new(),
                    field: String::new(),
                    message: format!("{label}: {}", magento_message(&reply.body)),
                }],
            }),
        }
    }

    fn json(body: &[u8], label: &str) -> Result<serde_json::Value> {
        // serde_json's syntax errors name a line and column, never a piece of the body.
        serde_json::from_slice(body).map_err(|e| Error::Provider {
            provider: PROVIDER,
            status: None,
            message: format!("{label}: Magento answered something that is not JSON: {e}"),
            retryable: false,
            source: Some(Box::new(e)),
        })
    }

    /// `GET /rest/V1/byte8/ping`: the liveness probe; a 2xx makes the connection `active`.
    ///
    /// # Errors
    /// See the [module docs](super#what-an-http-answer-means); a 401 makes it `token_revoked`.
    pub async fn ping(&self) -> Result<Ping> {
        let label = "GET ping";
        let reply = self.call(Method::GET, "ping", None).await?;
        let body = self.accept(reply, label, || Error::NotFound {
            what: "Magento endpoint (is the Byte8 module installed?)".into(),
            id: "/rest/V1/byte8/ping".into(),
        })?;
        // The body is informational: an unexpected shape is not a failed ping.
        Ok(serde_json::from_slice(&body).unwrap_or_default())
    }

    /// `GET /rest/V1/byte8/payment-methods`.
    ///
    /// # Errors
    /// As [`ping`](Self::ping); [`Error::Parse`] naming the field of an unreadable entry.
    pub async fn payment_methods(&self) -> Result<Vec<PaymentMethod>> {
        let label = "GET payment-methods";
        let reply = self.call(Method::GET, "payment-methods", None).await?;
        let body = self.accept(reply, label, || Error::NotFound {
            what: "Magento endpoint (is the Byte8 module installed?)".into(),
            id: "/rest/V1/byte8/payment-methods".into(),
        })?;
        byte8_ledger_core::canonical::read("Magento payment methods", Self::json(&body, label)?)
    }

    /// The canonical entity an event of `kind` needs: the invoice, the payment (by invoice id),
    /// the credit memo, the customer or the product with id `magento_id`, read and validated.
    ///
    /// # Errors
    /// [`Error::Invalid`] for id 0 (a guest contact has no endpoint: use the embedded one);
    /// [`Error::NotFound`] for a 404; [`Error::Parse`] or [`Error::Invalid`] naming the field of
    /// an entity that cannot be read or breaks a rule; the errors of [`ping`](Self::ping).
    pub async fn entity(&self, kind: EventKind, magento_id: u64) -> Result<Entity> {
        let segment = entity_path(kind);
        if magento_id == 0 {
            let rule = if kind == EventKind::CustomerUpserted {
                "0 is a guest: use the contact embedded in the document, there is no customer to fetch"
            } else {
                "must be > 0"
            };
            return Err(Error::invalid("Magento request", "magento_entity_id", rule));
        }
        let path = format!("{segment}/{magento_id}");
        let label = format!("GET {path}");
        let reply = self.call(Method::GET, &path, None).await?;
        let body = self.accept(reply, &label, || Error::NotFound {
            what: format!("Magento {segment}"),
            id: magento_id.to_string(),
        })?;
        // Read straight from the text when it reads; otherwise again through a `Value`, for the
        // error that names the field (`Entity::from_json_text`).
        let entity = match Entity::from_json_text(kind, &body) {
            Some(entity) => entity,
            None => Entity::from_value(kind, Self::json(&body, &label)?)?,
        };
        entity.validate()?;
        if entity.magento_id() != magento_id && !matches!(entity, Entity::Contact(_)) {
            return Err(Error::invalid(
                "Magento entity",
                "magento_id",
                format!("{} does not match the requested id {magento_id}", entity.magento_id()),
            ));
        }
        Ok(entity)
    }

    /// `GET /rest/V1/byte8/invoice/{id}`.
    ///
    /// # Errors
    /// As [`entity`](Self::entity).
    pub async fn invoice(&self, id: u64) -> Result<MagentoInvoice> {
        match self.entity(EventKind::InvoiceCreated, id).await? {
            Entity::Invoice(e) => Ok(e),
            _ => Err(Error::internal("invoice endpoint read as another entity")),
        }
    }

    /// `GET /rest/V1/byte8/customer/{id}` (never for a guest, id 0).
    ///
    /// # Errors
    /// As [`entity`](Self::entity).
    pub async fn customer(&self, id: u64) -> Result<MagentoContact> {
        match self.entity(EventKind::CustomerUpserted, id).await? {
            Entity::Contact(e) => Ok(e),
            _ => Err(Error::internal("customer endpoint read as another entity")),
        }
    }

    /// `GET /rest/V1/byte8/creditmemo/{id}`.
    ///
    /// # Errors
    /// As [`entity`](Self::entity).
    pub async fn credit_memo(&self, id: u64) -> Result<MagentoCreditMemo> {
        match self.entity(EventKind::CreditMemoCreated, id).await? {
            Entity::CreditMemo(e) => Ok(e),
            _ => Err(Error::internal("creditmemo endpoint read as another entity")),
        }
    }

    /// `GET /rest/V1/byte8/payment/{invoice_id}`: the payment of an invoice, keyed by the invoice.
    ///
    /// # Errors
    /// As [`entity`](Self::entity); 404 when the order has no payment.
    pub async fn payment(&self, invoice_id: u64) -> Result<MagentoPayment> {
        match self.entity(EventKind::InvoicePaid, invoice_id).await? {
            Entity::Payment(e) => Ok(e),
            _ => Err(Error::internal("payment endpoint read as another entity")),
        }
    }

    /// `GET /rest/V1/byte8/product/{id}`.
    ///
    /// # Errors
    /// As [`entity`](Self::entity).
    pub async fn product(&self, id: u64) -> Result<MagentoProduct> {
        match self.entity(EventKind::ProductUpserted, id).await? {
            Entity::Product(e) => Ok(e),
            _ => Err(Error::internal("product endpoint read as another entity")),
        }
    }

    /// `POST /rest/V1/byte8/sync-state` with the body of [`SyncStateBody::from_outcome`];
    /// retried on 5xx and network errors (the upsert is idempotent).
    ///
    /// # Errors
    /// [`Error::Invalid`] for an outcome Magento would refuse (nothing is sent); the errors of
    /// [`ping`](Self::ping), a 400 being [`Error::Rejected`] with Magento's message.
    pub async fn post_sync_state(&self, outcome: &Outcome) -> Result<()> {
        let body = SyncStateBody::from_outcome(outcome, self.send_provider_reference)?;
        self.send_sync_state(&body).await
    }

    /// `POST /rest/V1/byte8/sync-state` with a body built by hand.
    ///
    /// # Errors
    /// As [`post_sync_state`](Self::post_sync_state).
    pub async fn send_sync_state(&self, body: &SyncStateBody) -> Result<()> {
        let label = "POST sync-state";
        let bytes =
            serde_json::to_vec(body).map_err(|e| Error::internal(format!("cannot serialise the sync state: {e}")))?;
        let reply = self.call(Method::POST, "sync-state", Some(bytes)).await?;
        self.accept(reply, label, || Error::NotFound {
            what: "Magento endpoint (is the Byte8 module installed?)".into(),
            id: "/rest/V1/byte8/sync-state".into(),
        })
        .map(|_| ())
    }
}

#[async_trait]
impl EntitySource for MagentoClient {
    async fn fetch(&self, event: EventKind, magento_entity_id: u64) -> Result<Entity> {
        self.entity(event, magento_entity_id).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use byte8_ledger_core::clock::ManualClock;

    fn outcome() -> Outcome {
        Outcome {
            idempotency_key: Some("invoice.paid:1001".into()),
            event: Some("invoice.paid".into()),
            entity_type: None,
            magento_entity_id: Some(1001),
            provider: "sage_accounting".into(),
            sync_status: SyncStatus::Failed,
            provider_entity_id: None,
            provider_reference: Some("SI-27".into()),
            skip_reason: None,
            error_code: Some(ErrorCode::RateLimited),
            message: Some("not sent".into()),
            last_sync_at: DateTime::parse_from_rfc3339("2026-04-29T10:11:12Z").unwrap().with_timezone(&Utc),
        }
    }

    #[test]
    fn sync_state_body_is_exactly_the_documented_one() {
        let body = SyncStateBody::from_outcome(&outcome(), false).unwrap();
        assert_eq!(
            serde_json::to_string(&body).unwrap(),
            r#"{"entity_type":"invoice","magento_entity_id":1001,"provider":"sage_accounting","sync_status":"failed","provider_entity_id":null,"provider_reference":null,"skip_reason":null,"error_code":"rate_limited","last_sync_at":"2026-04-29T10:11:12Z"}"#
        );
        let with_ref = SyncStateBody::from_outcome(&outcome(), true).unwrap();
        assert_eq!(with_ref.provider_reference.as_deref(), Some("SI-27"));
    }

    #[test]
    fn sync_state_entity_type_comes_from_the_event_prefix() {
        for (event, ty) in [
            ("invoice.created", "invoice"),
            ("invoice.paid", "invoice"),
            ("creditmemo.created", "creditmemo"),
            ("customer.upserted", "customer"),
            ("product.upserted", "product"),
        ] {
            let o = Outcome { event: Some(event.into()), entity_type: Some("wrong".into()), ..outcome() };
            assert_eq!(SyncStateBody::from_outcome(&o, false).unwrap().entity_type, ty);
        }
        let o = Outcome { event: None, entity_type: Some("product".into()), ..outcome() };
        assert_eq!(SyncStateBody::from_outcome(&o, false).unwrap().entity_type, "product");
    }

    #[test]
    fn sync_state_refuses_what_magento_refuses() {
        let o = Outcome {
            event: Some("order.shipped".into()),
            magento_entity_id: Some(0),
            provider: " ".into(),
            ..outcome()
        };
        let err = SyncStateBody::from_outcome(&o, false).unwrap_err();
        let fields: Vec<_> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(fields, ["entity_type", "magento_entity_id", "provider"]);
        let o = Outcome { event: None, entity_type: None, magento_entity_id: None, ..outcome() };
        assert_eq!(SyncStateBody::from_outcome(&o, false).unwrap_err().field_errors().len(), 2);
    }

    #[test]
    fn builder_reports_every_problem_and_hides_the_key() {
        let err = MagentoClient::builder()
            .with_base_url("ftp://x")
            .with_token_ttl(Duration::from_secs(301))
            .build()
            .unwrap_err();
        let fields: Vec<_> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(fields, ["base_url", "tenant_id", "api_key", "token_ttl"]);

        let key = ApiKey::new("k3y-that-must-not-show").unwrap();
        let b = MagentoClient::builder()
            .with_base_url("https://shop.example.com")
            .with_tenant_id("t-1")
            .with_api_key(key)
            .with_clock(Arc::new(ManualClock::new(DateTime::from_timestamp(0, 0).unwrap())));
        assert!(!format!("{b:?}").contains("k3y"));
        let c = b.build().unwrap();
        assert!(!format!("{c:?}").contains("k3y"));
        assert_eq!(c.status(), ConnectionStatus::Pending);
        assert_eq!(c.tenant_id(), "t-1");
        assert_eq!(ConnectionStatus::TokenRevoked.to_string(), "token_revoked");
        assert_eq!(serde_json::to_string(&ConnectionStatus::TokenRevoked).unwrap(), "\"token_revoked\"");
    }
}
