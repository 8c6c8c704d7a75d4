//! Keeping idle connections alive: a Sage refresh token dies after 31 days unused, a Xero one
//! after 60, so a shop with no orders for a month would lose its ledger connection. A task beside
//! the workers looks at every bound business's refresh token every
//! [`token_check_interval`](super::ServiceConfig::token_check_interval) and refreshes it when
//! less than [`refresh_token_margin`](super::ServiceConfig::refresh_token_margin) is left
//! (or when its life is unknown: a pasted token never used), through the business's provider
//! ([`AccountingProvider::refresh_tokens`](byte8_ledger_core::AccountingProvider::refresh_tokens):
//! single-flight, the new pair stored before use).

use std::{
    collections::BTreeSet,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use serde::Serialize;

use super::Shared;
use crate::store::BindingStatus;
use byte8_ledger_core::{
    auth::connect::{RefreshTokenHealth, refresh_token_health},
    error::Result,
};

/// What the idle-refresh tick did for one business.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum IdleRefresh {
    /// Its tokens were refreshed: the refresh token lives a full life again.
    Refreshed {
        /// The business.
        business: String,
    },
    /// Enough life left: nothing done.
    Healthy {
        /// The business.
        business: String,
        /// Whole days left.
        days_left: i64,
    },
    /// The refresh token lapsed already: only connecting again helps.
    Lapsed {
        /// The business.
        business: String,
    },
    /// The refresh failed (logged; tried again at the next tick).
    Failed {
        /// The business.
        business: String,
        /// Why, with what to do.
        error: String,
    },
}

/// A business's refresh-token health at the service's clock, when its tokens can be read.
pub(crate) async fn health_of(shared: &Shared, scope: &str) -> Result<Option<RefreshTokenHealth>> {
    let Some(kind) = shared.store.connection(scope).await?.and_then(|c| c.kind()) else { return Ok(None) };
    let Some(tokens) = shared.store.tokens(scope).await? else { return Ok(None) };
    Ok(refresh_token_health(kind, &tokens, shared.clock.now()))
}

/// One tick over the businesses of active bindings (each once).
pub(crate) async fn refresh_idle(shared: &Shared) -> Result<Vec<IdleRefresh>> {
    let mut done = Vec::new();
    let mut seen = BTreeSet::new();
    for info in shared.store.bindings().await? {
        if info.status != BindingStatus::Active || !seen.insert(info.scope.clone()) {
            continue;
        }
        let business = info.scope.clone();
        let Some(connection) = shared.store.connection(&business).await? else { continue };
        let Some(kind) = connection.kind() else { continue };
        let Some(tokens) = shared.store.tokens(&business).await? else { continue };
        let now = shared.clock.now();
        let margin =
            chrono::Duration::from_std(shared.config.refresh_token_margin).unwrap_or(chrono::Duration::days(7));
        match refresh_token_health(kind, &tokens, now) {
            Some(h) if h.expired => {
                tracing::warn!(business = %business, "the ledger refresh token lapsed: connect the business again (byte8-ledger connect)");
                done.push(IdleRefresh::Lapsed { business });
                continue;
            }
            Some(h) if h.expires_at - now >= margin => {
                done.push(IdleRefresh::Healthy { business, days_left: h.days_left });
                continue;
            }
            _ => {}
        }
        let Some(binding) = shared.store.binding(&info.tenant_id).await? else { continue };
        let outcome = match shared.providers.provider(&binding).await {
            Ok(provider) => provider.refresh_tokens().await,
            Err(e) => Err(e),
        };
        match outcome {
            Ok(_) => {
                tracing::info!(business = %business, "refreshed an idle connection's tokens before its refresh token lapses");
                done.push(IdleRefresh::Refreshed { business });
            }
            Err(e) => {
                tracing::warn!(business = %business, error = %e, "cannot refresh an idle connection's tokens; tried again at the next tick");
                done.push(IdleRefresh::Failed { business, error: e.to_string() });
            }
        }
    }
    Ok(done)
}

/// Runs [`refresh_idle`] every `token_check_interval` until `stop` (the first time one interval
/// after the start: a connection in use refreshes by itself, and a service restarted often does
/// not hit the token endpoint at every start).
pub(crate) async fn token_loop(shared: Arc<Shared>, stop: Arc<AtomicBool>, wake: Arc<tokio::sync::Notify>) {
    let mut next = tokio::time::Instant::now() + shared.config.token_check_interval;
    loop {
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if stop.load(Ordering::Relaxed) {
            break;
        }
        tokio::select! {
            // Woken (a stop, or work for the workers): look at `stop`, keep the same deadline.
            () = notified => continue,
            () = tokio::time::sleep_until(next) => {}
        }
        next = tokio::time::Instant::now() + shared.config.token_check_interval;
        if let Err(e) = refresh_idle(&shared).await {
            tracing::warn!(error = %e, "the idle-token check failed; tried again at the next tick");
        }
    }
}
