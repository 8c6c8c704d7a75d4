//! The routes (see the [module docs](super) for the status codes).

use std::{collections::HashMap, str::FromStr, sync::Arc};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

use super::{
    Shared,
    auth::{Access, WebhookAuth},
    error::ApiError,
    store::WebhookToken,
};
use byte8_ledger_core::{
    canonical::{Event, EventKind, serde_time},
    error::{Error, ErrorCode},
    identity::sha256_hex,
    outcome::SyncStatus,
    store::{Dedupe, Enqueued, EnqueuedOnce, NewRun, ProviderKind, Run, RunStatus},
};

/// The longest `Idempotency-Key` accepted.
const MAX_KEY_LEN: usize = 255;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    let limit = shared.config.max_body;
    Router::new()
        .route("/webhooks/magento/{tenant_id}/{event_name}", post(webhook))
        .route("/v1/status", get(status))
        .route("/v1/tile/health", get(health))
        .route("/v1/tenant/disconnect", post(disconnect))
        .layer(DefaultBodyLimit::max(limit))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            shared.config.request_timeout,
        ))
        .with_state(shared)
}

/// RFC 3339 in UTC with a `Z`, to the second (the protocol's timestamps).
fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn authorization(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
}

/// `POST /webhooks/magento/{tenant_id}/{event_name}`.
async fn webhook(
    State(shared): State<Arc<Shared>>,
    Path((tenant_id, event_name)): Path<(String, String)>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    // The token's jti is recorded with the run it carries (one statement on PostgreSQL), or on
    // its own when the request is refused after its token verified: spent either way. The
    // binding may come from this process's cache (`Shared::authenticate_webhook`): when the
    // store finds it changed since, nothing is queued and the webhook is verified again against
    // the binding read afresh.
    let mut fresh = false;
    let (info, enqueued, key, begun) = loop {
        let auth = shared.authenticate_webhook(&tenant_id, authorization(&headers), fresh).await?;
        let (run, dedupe) = match webhook_run(&shared, &auth, &query, &event_name, &headers, &body).await {
            Ok(run) => run,
            // Refused on a binding that may be a cached copy (its business, and so the
            // provider asked for, may have changed): judged again on the binding read afresh.
            Err(_) if !fresh && auth.binding_version.is_some() => {
                shared.forget_binding(&tenant_id);
                fresh = true;
                continue;
            }
            Err(refused) => {
                auth.jti.burn(&shared).await;
                return Err(refused);
            }
        };
        let jti = &auth.jti;
        let key = run.idempotency_key.clone();
        // When this process's workers can take the tenant at once, the statement that queues the
        // run also begins their turn (`DispatchStore::enqueue_and_begin`): a worker then
        // continues it without a statement of its own to start it.
        let info = auth.binding.info();
        let turn = crate::worker::webhook_turn(&shared, &info).await;
        let answer = match &turn {
            Some(turn) => {
                let token = WebhookToken {
                    jti: &jti.jti,
                    expires_at: jti.expires_at,
                    now: jti.now,
                    binding_version: auth.binding_version,
                };
                shared.store.enqueue_and_begin(&token, run, dedupe, &turn.start(&info)).await
            }
            None => shared
                .store
                .enqueue_once(&jti.jti, jti.expires_at, jti.now, auth.binding_version, run, dedupe)
                .await
                .map(|enqueued| (enqueued, None)),
        };
        match answer {
            Ok((EnqueuedOnce::Queued(enqueued), begun)) => break (info, enqueued, key, turn.zip(begun)),
            Ok((EnqueuedOnce::Replay, _)) => {
                let e = crate::magento::jwt::replay_refused();
                tracing::warn!(tenant = ?tenant_id, error = %e, "request refused");
                return Err(ApiError::unauthorized(&e.to_string()));
            }
            Ok((EnqueuedOnce::StaleBinding, _)) if !fresh => {
                shared.forget_binding(&tenant_id);
                fresh = true;
            }
            Ok((EnqueuedOnce::StaleBinding, _)) => {
                // Changed again between the fresh read and the enqueue (a revocation or a pairing
                // at this instant): Magento sends it again and meets the binding as it is then.
                let e = Error::database("the tenant's binding changed while the webhook was queued", true, None);
                return Err(ApiError::from_store(&e));
            }
            Err(e) => return Err(ApiError::from_store(&e)),
        }
    };
    let how = match enqueued {
        Enqueued::New(_) => "queued",
        Enqueued::Collapsed(_) => "collapsed into the queued run",
        Enqueued::Duplicate { .. } => "already queued",
    };
    tracing::info!(tenant = %info.tenant_id, key = %key, run = enqueued.run_id(), "webhook {how}");
    if let Some((turn, begun)) = begun {
        turn.hand_over(&shared, info, begun);
    } else if !matches!(enqueued, Enqueued::Duplicate { .. }) {
        // This process's workers hear of it now, not at their next look for work; without
        // workers here, the other processes' do (crate::wake).
        shared.announce(info).await;
    }
    Ok((StatusCode::ACCEPTED, Json(json!({"sync_run_id": enqueued.run_id()}))).into_response())
}

/// The run a verified webhook carries, or why it is refused (its provider, event name or
/// envelope).
async fn webhook_run(
    shared: &Shared,
    auth: &WebhookAuth,
    query: &HashMap<String, String>,
    event_name: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(NewRun, Dedupe), ApiError> {
    let (binding, claims) = (&*auth.binding, &auth.claims);
    if let Some(asked) = query.get("provider") {
        check_provider(shared, &binding.scope, asked).await?;
    }
    let kind = EventKind::from_str(event_name).map_err(|e| ApiError::unprocessable("unknown_event", e))?;
    let envelope = read_envelope(body)?;
    let header_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::unprocessable("invalid_envelope", "Idempotency-Key (header): not visible ASCII")
                })?
                .trim()
                .to_owned(),
        )
        .filter(|k| !k.is_empty()),
    };
    let (value, key_from_header) = event_value(kind, &envelope, header_key)?;
    // The line as the run keeps it, written before the value is moved into the event.
    let raw = value.to_string();
    let event = Event::from_value(value).map_err(|f| {
        let mut message = f.error.to_string();
        if key_from_header {
            message = message.replace("idempotency_key:", "Idempotency-Key (header):");
        }
        ApiError::unprocessable("invalid_envelope", message)
    })?;
    // Documents dedupe for good on their key. An upsert's entity is fetched when it is processed,
    // so each delivery is new content: the token's jti makes its fingerprint unique, and a later
    // delivery makes a new run once the previous one started (it still collapses while queued).
    let (dedupe, fingerprint) = if kind.is_document() {
        (Dedupe::Permanent, sha256_hex(&raw))
    } else {
        (Dedupe::WhileQueued, sha256_hex(&format!("{raw}\n{}", claims.jti)))
    };
    let run = NewRun {
        scope: binding.scope.clone(),
        tenant_id: Some(binding.tenant_id.clone()),
        idempotency_key: event.idempotency_key,
        event: Some(kind.as_str().to_owned()),
        magento_entity_id: Some(event.magento_entity_id),
        raw,
        fingerprint,
        policy: Some(auth.policy.to_string()),
        received_at: shared.clock.now(),
    };
    Ok((run, dedupe))
}

/// The module's per-provider routing (byte8-xero-spec.md 1.4): a webhook may name its ledger
/// (`?provider=xero`; Sage's module sends none). Naming another ledger than the one the tenant's
/// business is connected to is the deterministic 400 "tenant has no active xero binding" (the
/// event belongs to another connector's outbox segment). A business not connected yet accepts
/// it: its events wait in line until `connect`.
async fn check_provider(shared: &Shared, scope: &str, asked: &str) -> Result<(), ApiError> {
    let Some(kind) = ProviderKind::parse(asked) else {
        return Err(ApiError::bad_request(format!(
            "provider (query): `{asked}` is not a ledger this service knows (sage_accounting, xero)"
        )));
    };
    let connection = shared.store.connection(scope).await.map_err(|e| ApiError::from_store(&e))?;
    match connection.map(|c| c.kind()) {
        Some(Some(have)) if have != kind => {
            Err(ApiError::bad_request(format!("tenant has no active {} binding", kind.as_str())))
        }
        _ => Ok(()),
    }
}

fn read_envelope(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ApiError::bad_request("the body must be a JSON object (the Byte8 event envelope)")),
        Err(e) => Err(ApiError::bad_request(format!("the body is not JSON: {e}"))),
    }
}

/// The crate's event (contract.md 1) from the envelope: the envelope's own fields only (the
/// entity is always fetched), the key from the header or `{event}:{magento_entity_id}`.
fn event_value(
    kind: EventKind,
    envelope: &Map<String, Value>,
    header_key: Option<String>,
) -> Result<(Value, bool), ApiError> {
    let from_header = header_key.is_some();
    let key = match header_key {
        Some(k) if k.len() > MAX_KEY_LEN => {
            return Err(ApiError::unprocessable(
                "invalid_envelope",
                format!("Idempotency-Key (header): at most {MAX_KEY_LEN} characters"),
            ));
        }
        Some(k) => Value::String(k),
        None => match envelope.get("magento_entity_id") {
            Some(Value::Number(n)) => Value::String(format!("{}:{n}", kind.as_str())),
            // Left out: the parser then names `magento_entity_id` as the problem.
            _ => Value::String(format!("{}:0", kind.as_str())),
        },
    };
    let mut event = Map::new();
    event.insert("event".into(), Value::String(kind.as_str().to_owned()));
    event.insert("idempotency_key".into(), key);
    for field in ["magento_entity_id", "website_id", "store_id", "occurred_at", "payload"] {
        match envelope.get(field) {
            // PHP's `json_encode([])` is `[]`: the module's empty payload array. Read as the
            // empty object it means, not a 422 that Magento would dead-letter for good.
            Some(Value::Array(a)) if field == "payload" && a.is_empty() => {
                event.insert(field.into(), Value::Object(Map::new()));
            }
            Some(v) => {
                event.insert(field.into(), v.clone());
            }
            None => {}
        }
    }
    Ok((Value::Object(event), from_header))
}

/// The events whose runs make up an entity's sync state (byte8-spec.md 12.6: the event name
/// before its first dot).
fn events_of(entity_type: &str) -> Option<&'static [&'static str]> {
    match entity_type {
        "invoice" => Some(&["invoice.created", "invoice.paid"]),
        "creditmemo" => Some(&["creditmemo.created"]),
        "customer" => Some(&["customer.upserted"]),
        "product" => Some(&["product.upserted"]),
        _ => None,
    }
}

#[derive(Debug, Serialize)]
struct RunView {
    sync_run_id: i64,
    event: Option<String>,
    idempotency_key: String,
    status: RunStatus,
    sync_status: Option<SyncStatus>,
    provider_entity_id: Option<String>,
    skip_reason: Option<String>,
    error_code: Option<ErrorCode>,
    message: Option<String>,
    attempts: u32,
    #[serde(with = "serde_time")]
    received_at: DateTime<Utc>,
    #[serde(with = "serde_time")]
    updated_at: DateTime<Utc>,
}

impl RunView {
    fn of(run: &Run) -> Self {
        let o = run.outcome.as_ref().filter(|_| run.status.is_terminal());
        Self {
            sync_run_id: run.id,
            event: run.event.clone(),
            idempotency_key: run.idempotency_key.clone(),
            status: run.status,
            sync_status: o.map(|o| o.sync_status),
            provider_entity_id: o.and_then(|o| o.provider_entity_id.clone()),
            skip_reason: o.and_then(|o| o.skip_reason.clone()),
            error_code: o.and_then(|o| o.error_code),
            message: run.outcome.as_ref().and_then(|o| o.message.clone()),
            attempts: run.attempts,
            received_at: run.created_at,
            updated_at: run.updated_at,
        }
    }
}

/// `GET /v1/status?entity_type=&entity_id=`.
async fn status(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    // Active tenants only: a disconnected tenant's old key reads nothing, even of its own runs
    // (the business may be paired to another store since).
    let (binding, _) = shared.authenticate_subject(authorization(&headers), Access::Active).await?;
    let entity_type = query.get("entity_type").map(|s| s.trim()).unwrap_or_default();
    let events = events_of(entity_type).ok_or_else(|| {
        ApiError::bad_request(format!(
            "entity_type: `{entity_type}` is not one of invoice, creditmemo, customer, product"
        ))
    })?;
    let raw_id = query.get("entity_id").map(|s| s.trim()).unwrap_or_default();
    let entity_id = raw_id
        .parse::<u64>()
        .ok()
        .filter(|id| *id > 0)
        .ok_or_else(|| ApiError::bad_request(format!("entity_id: `{raw_id}` is not an integer > 0")))?;
    let runs = shared
        .store
        .entity_runs(&binding.scope, &binding.tenant_id, events, entity_id)
        .await
        .map_err(|e| ApiError::from_store(&e))?;
    // The entity's state is its most recently changed run's (one mirror row per entity).
    let latest = runs.iter().max_by_key(|r| (r.updated_at, r.id));
    let (sync_status, outcome) = match latest {
        None => (Value::Null, None),
        Some(r) if !r.status.is_terminal() => (json!("pending"), None),
        Some(r) => (json!(r.outcome.as_ref().map(|o| o.sync_status)), r.outcome.as_ref()),
    };
    let body = json!({
        "entity_type": entity_type,
        "entity_id": entity_id,
        "provider": outcome.map(|o| o.provider.clone()),
        "sync_status": sync_status,
        "provider_entity_id": outcome.and_then(|o| o.provider_entity_id.clone()),
        "provider_reference": Value::Null,
        "skip_reason": outcome.and_then(|o| o.skip_reason.clone()),
        "error_code": outcome.and_then(|o| o.error_code),
        "message": outcome.and_then(|o| o.message.clone()),
        "last_sync_at": outcome.map(|o| rfc3339(o.last_sync_at)),
        "runs": runs.iter().map(RunView::of).collect::<Vec<_>>(),
    });
    Ok(Json(body).into_response())
}

/// `GET /v1/tile/health` (byte8-spec.md 11.7).
async fn health(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (binding, _) = shared.authenticate_subject(authorization(&headers), Access::Known).await?;
    let now = shared.clock.now();
    let stats = shared
        .store
        .dispatch_stats(&binding.scope, &binding.tenant_id, now - chrono::Duration::hours(24))
        .await
        .map_err(|e| ApiError::from_store(&e))?;
    let region = shared
        .store
        .reference(&binding.scope)
        .await
        .map_err(|e| ApiError::from_store(&e))?
        .map(|r| r.business.country.clone());
    // This service's additions to the module's shape (byte8-spec.md 11.7 keeps its fields): the
    // ledger connection's refresh-token life. Unreadable tokens are reported as unknown, never
    // as a failed health check.
    let connected = matches!(shared.store.tokens(&binding.scope).await, Ok(Some(_)));
    let token = crate::tokens::health_of(&shared, &binding.scope).await.ok().flatten();
    let body = json!({
        "tenant": {"magento_connection_status": binding.magento_status},
        "binding": {
            "status": binding.status,
            "region": region,
            "ledger_connected": connected,
            "refresh_token_days_left": token.map(|h| h.days_left),
            "refresh_token_expires_at": token.map(|h| rfc3339(h.expires_at)),
        },
        "sync": {
            "pending_count": stats.pending,
            "failed_24h": stats.failed_since,
            "last_run_at": stats.last_run_at.map(rfc3339),
        },
    });
    Ok(Json(body).into_response())
}

/// `POST /v1/tenant/disconnect` (body `{}`, ignored).
async fn disconnect(State(shared): State<Arc<Shared>>, headers: HeaderMap) -> Result<Response, ApiError> {
    let (binding, _) = shared.authenticate_subject(authorization(&headers), Access::Known).await?;
    if !binding.is_active() {
        // Already revoked (from the dashboard, or a repeated call): the same answer, nothing new.
        return Ok(Json(json!({"tenant_id": binding.tenant_id, "status": "revoked"})).into_response());
    }
    let now = shared.clock.now();
    shared
        .store
        .set_binding_status(&binding.tenant_id, crate::store::BindingStatus::Revoked, now)
        .await
        .map_err(|e| ApiError::from_store(&e))?;
    tracing::warn!(tenant = %binding.tenant_id, business = %binding.scope, "tenant disconnected by Magento: dispatch stops");
    Ok(Json(json!({"tenant_id": binding.tenant_id, "status": "revoked"})).into_response())
}
