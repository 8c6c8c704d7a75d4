//! Authenticating the Magento module's requests: the tenant's binding, its outbound subkey, and
//! the store's replay cache scoped to the tenant.

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};

use super::{Shared, error::ApiError};
use crate::magento::{Claims, ReplayCache, WebhookVerifier, jwt::MAX_TOKEN_LEN};
use crate::store::{Binding, ServiceStore};
use byte8_ledger_core::error::{Error, Result};

/// The store's replay cache for one tenant: a `jti` is recorded as `tenant ␟ jti`, so tenants
/// never burn each other's.
pub(crate) struct TenantReplay {
    store: Arc<dyn ServiceStore>,
    tenant: String,
}

impl fmt::Debug for TenantReplay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TenantReplay").field("tenant", &self.tenant).finish_non_exhaustive()
    }
}

#[async_trait]
impl ReplayCache for TenantReplay {
    async fn check_and_record(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        self.store.check_and_record(&format!("{}\u{1f}{jti}", self.tenant), expires_at, now).await
    }
}

/// A verified webhook token's `jti`, not recorded yet: the key it is recorded under (`tenant ␟
/// jti`, as [`TenantReplay`] does), until when, and the verification's "now" (Unix seconds).
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) jti: String,
    pub(crate) expires_at: i64,
    pub(crate) now: i64,
}

impl Pending {
    /// Records the `jti` without a run (the request was refused after its token verified): a
    /// refused request's token is spent all the same. A store failure is logged; the request is
    /// refused anyway.
    pub(crate) async fn burn(&self, shared: &Shared) {
        if let Err(e) = shared.store.check_and_record(&self.jti, self.expires_at, self.now).await {
            tracing::warn!(error = %e, "cannot record a refused webhook's jti");
        }
    }
}

/// The verifier's replay cache for a webhook: takes the `jti` (and answers "not seen"), so that
/// the route records it with the run ([`Pending`]).
#[derive(Debug, Default)]
struct DeferredReplay {
    taken: std::sync::Mutex<Option<(String, i64, i64)>>,
}

#[async_trait]
impl ReplayCache for DeferredReplay {
    async fn check_and_record(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        *self.taken.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some((jti.to_owned(), expires_at, now));
        Ok(true)
    }
}

/// How long a cached binding serves webhooks before it is read again. Its version is checked
/// with every webhook it lets through, so this only bounds how long a tenant that stopped sending
/// keeps a copy in memory.
const BINDING_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(600);

/// An active tenant's binding as read for a webhook, with the version of its row.
pub(crate) struct CachedBinding {
    binding: Arc<Binding>,
    /// The binding's policy as JSON, serialised once when the binding is read.
    policy: Arc<str>,
    version: i64,
    read_at: std::time::Instant,
}

/// A webhook whose token verified: the tenant's binding, the token's claims, its `jti` (not
/// recorded yet), and the binding's version when the store gives one (to check when queuing).
pub(crate) struct WebhookAuth {
    pub(crate) binding: Arc<Binding>,
    /// The binding's policy as the run keeps it (JSON), serialised once per read of the binding,
    /// not once per webhook (that was 1 % of `serve`'s CPU in round 30's profile).
    pub(crate) policy: Arc<str>,
    pub(crate) claims: Claims,
    pub(crate) jti: Pending,
    pub(crate) binding_version: Option<i64>,
}

/// The answer to a request for a tenant with no active binding (401).
fn unknown_tenant(tenant_id: &str) -> ApiError {
    // Debug-formatted: the id comes from the request, unauthenticated.
    tracing::warn!(tenant = ?tenant_id, "request refused: unknown or disconnected tenant");
    ApiError::unauthorized("unknown or disconnected tenant")
}

/// The answer to a request whose token did not verify: 401 for a refused token, the store's
/// answer when the check could not be made.
fn token_refused(tenant_id: &str, e: &Error) -> ApiError {
    if matches!(e, Error::Auth { .. }) {
        tracing::warn!(tenant = ?tenant_id, error = %e, "request refused");
        ApiError::unauthorized(&e.to_string())
    } else {
        ApiError::from_store(e)
    }
}

/// The bearer token of an `Authorization` header value, if it is one.
fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// The `sub` claim of a token **before** verification: only to find whose key verifies it (the
/// verification then requires `sub` to be that tenant).
pub(crate) fn unverified_subject(header: Option<&str>) -> Option<String> {
    let token = bearer(header)?;
    if token.len() > MAX_TOKEN_LEN {
        return None;
    }
    let payload = token.split('.').nth(1)?;
    let bytes = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let value: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
    value.get("sub")?.as_str().map(str::to_owned).filter(|s| !s.is_empty())
}

/// Which bindings a route serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Active bindings only (webhooks: a revoked tenant's events are refused, 401, so Magento's
    /// outbox dead-letters them, byte8-spec.md 12.7; the status of an entity: a disconnected
    /// tenant's old key reads nothing).
    Active,
    /// Revoked bindings too, still authenticated by their key (the health tile, so the admin
    /// shows `revoked`; a disconnect repeated after one from the dashboard is answered, not
    /// refused).
    Known,
}

impl Shared {
    /// The binding of `tenant_id` (active, or any with [`Access::Known`]) and the verified claims
    /// of the request's token.
    ///
    /// # Errors
    /// 401 for an unknown tenant, a revoked one where `access` is [`Access::Active`], or a
    /// refused token; 503 or 500 when the store fails.
    pub(crate) async fn authenticate(
        self: &Arc<Self>,
        tenant_id: &str,
        authorization: Option<&str>,
        access: Access,
    ) -> std::result::Result<(Binding, Claims), ApiError> {
        let binding = match self.store.binding(tenant_id).await {
            Ok(Some(b)) if b.is_active() || access == Access::Known => b,
            Ok(_) => return Err(unknown_tenant(tenant_id)),
            Err(e) => return Err(ApiError::from_store(&e)),
        };
        let replay = Arc::new(TenantReplay { store: Arc::clone(&self.store), tenant: binding.tenant_id.clone() });
        let verifier = WebhookVerifier::new(binding.api_key.derive().outbound, Arc::clone(&self.clock), replay)
            .map_err(|e| ApiError::internal(&e))?;
        match verifier.verify_authorization(authorization, tenant_id).await {
            Ok(claims) => Ok((binding, claims)),
            Err(e) => Err(token_refused(tenant_id, &e)),
        }
    }

    /// As [`authenticate`](Self::authenticate) for an active tenant's webhook, except that the
    /// token's `jti` is not recorded yet: the route records it with the run it queues
    /// ([`DispatchStore::enqueue_once`](crate::store::DispatchStore::enqueue_once), one statement
    /// on PostgreSQL), or on its own ([`Pending::burn`]) when it refuses the request after all.
    ///
    /// The binding comes from this process's cache of bindings when the store versions them
    /// ([`BindingStore::versioned_binding`](crate::store::BindingStore::versioned_binding):
    /// PostgreSQL), so that a webhook costs no read of the bindings, and with its version, which
    /// the route hands to `enqueue_once`: a binding changed since it was cached (revoked,
    /// re-paired, a new policy) queues nothing there
    /// ([`EnqueuedOnce::StaleBinding`](byte8_ledger_core::store::EnqueuedOnce::StaleBinding)),
    /// and the route asks again with `fresh`, which reads the store. A token the cached copy
    /// refuses is tried once against a fresh read too (the key may have been rotated since), and
    /// the route judges a request it would refuse on a cached copy (its event, its envelope, the
    /// provider it names) again on a fresh read before refusing it.
    ///
    /// # Errors
    /// As `authenticate`, a replay aside (found when the `jti` is recorded).
    pub(crate) async fn authenticate_webhook(
        self: &Arc<Self>,
        tenant_id: &str,
        authorization: Option<&str>,
        fresh: bool,
    ) -> std::result::Result<WebhookAuth, ApiError> {
        if !fresh && let Some((binding, policy, version)) = self.cached_binding(tenant_id) {
            if let Ok((claims, jti)) = self.verify_webhook(&binding, tenant_id, authorization).await {
                return Ok(WebhookAuth { binding, policy, claims, jti, binding_version: Some(version) });
            }
            self.forget_binding(tenant_id);
        }
        let (binding, version) = match self.store.versioned_binding(tenant_id).await {
            Ok(Some((b, version))) if b.is_active() => (Arc::new(b), version),
            Ok(_) => return Err(unknown_tenant(tenant_id)),
            Err(e) => return Err(ApiError::from_store(&e)),
        };
        match self.verify_webhook(&binding, tenant_id, authorization).await {
            Ok((claims, jti)) => {
                let policy: Arc<str> =
                    crate::store::write_policy(&binding.policy).map_err(|e| ApiError::internal(&e))?.into();
                if let Some(version) = version {
                    self.cache_binding(&binding, &policy, version);
                }
                Ok(WebhookAuth { binding, policy, claims, jti, binding_version: version })
            }
            Err(e) => Err(token_refused(tenant_id, &e)),
        }
    }

    /// Verifies a webhook's token with `binding`'s outbound key, its `jti` taken, not recorded.
    async fn verify_webhook(
        &self,
        binding: &Binding,
        tenant_id: &str,
        authorization: Option<&str>,
    ) -> Result<(Claims, Pending)> {
        let deferred = Arc::new(DeferredReplay::default());
        let verifier = WebhookVerifier::new(
            binding.api_key.derive().outbound,
            Arc::clone(&self.clock),
            Arc::clone(&deferred) as _,
        )?;
        let claims = verifier.verify_authorization(authorization, tenant_id).await?;
        let (jti, expires_at, now) = deferred
            .taken
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
            .ok_or_else(|| Error::internal("a verified token's jti was not seen"))?;
        let jti = Pending { jti: format!("{}\u{1f}{jti}", binding.tenant_id), expires_at, now };
        Ok((claims, jti))
    }

    /// The cached binding of `tenant_id` and its version, unless it is older than
    /// [`BINDING_CACHE_TTL`].
    fn cached_binding(&self, tenant_id: &str) -> Option<(Arc<Binding>, Arc<str>, i64)> {
        let cache = self.webhook_bindings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let cached = cache.get(tenant_id)?;
        (cached.read_at.elapsed() < BINDING_CACHE_TTL)
            .then(|| (Arc::clone(&cached.binding), Arc::clone(&cached.policy), cached.version))
    }

    fn cache_binding(&self, binding: &Arc<Binding>, policy: &Arc<str>, version: i64) {
        let mut cache = self.webhook_bindings.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Expired copies go when the cache grows past what it held (bounded by the bindings).
        if cache.len() >= cache.capacity() {
            cache.retain(|_, c| c.read_at.elapsed() < BINDING_CACHE_TTL);
        }
        cache.insert(
            binding.tenant_id.clone(),
            CachedBinding {
                binding: Arc::clone(binding),
                policy: Arc::clone(policy),
                version,
                read_at: std::time::Instant::now(),
            },
        );
    }

    /// Drops `tenant_id`'s cached binding (it proved stale, or refused a token).
    pub(crate) fn forget_binding(&self, tenant_id: &str) {
        self.webhook_bindings.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(tenant_id);
    }

    /// As [`authenticate`](Self::authenticate) for the `/v1` routes, whose tenant is the token's
    /// `sub`.
    pub(crate) async fn authenticate_subject(
        self: &Arc<Self>,
        authorization: Option<&str>,
        access: Access,
    ) -> std::result::Result<(Binding, Claims), ApiError> {
        let Some(tenant) = unverified_subject(authorization) else {
            tracing::warn!("request refused: no bearer token with a subject");
            return Err(ApiError::unauthorized("webhook JWT refused: no bearer token naming its tenant in `sub`"));
        };
        self.authenticate(&tenant, authorization, access).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_subject_is_read_without_trusting_it() {
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"t-1","iss":"magento"}"#);
        let header = format!("Bearer x.{payload}.y");
        assert_eq!(unverified_subject(Some(&header)).as_deref(), Some("t-1"));
        assert_eq!(unverified_subject(Some(&format!("bearer  x.{payload}.y"))).as_deref(), Some("t-1"));
        for bad in [None, Some("Basic abc"), Some("Bearer"), Some("Bearer x.!!!.y"), Some("Bearer x")] {
            assert_eq!(unverified_subject(bad), None, "{bad:?}");
        }
        let empty = URL_SAFE_NO_PAD.encode(r#"{"sub":""}"#);
        assert_eq!(unverified_subject(Some(&format!("Bearer x.{empty}.y"))), None);
    }
}
