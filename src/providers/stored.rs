//! Ledger providers built from the connections a store keeps: what the service's workers and the
//! `byte8-ledger` command use to reach the ledger a business's stored connection names.
//!
//! Each answers the provider of a business (`for_business`: its stored connection's);
//! [`StoredProviders`] picks Sage ([`SageProviders`]) or Xero ([`XeroProviders`], feature `xero`)
//! by the connection's provider. These live in the core (not in the service package) because they
//! need only the store's connections and the providers' builders, and both the service and the
//! command build their providers through them. The service's `ProviderFactory` (the provider of
//! a tenant binding) is implemented for each of them in the service package.

use std::{fmt, sync::Arc};

#[cfg(feature = "xero")]
use crate::providers::xero::{PROVIDER as XERO, XeroBuilder};
use crate::{
    clock::Clock,
    error::{AuthFailure, Error, Result},
    http::RateLimiter,
    providers::{
        AccountingProvider,
        sage::{PROVIDER as SAGE, SageBuilder},
    },
    store::{Connection, ConnectionStoreDyn, ProviderKind, ScopedTokenStore},
};

type LimiterFn = dyn Fn(&str) -> RateLimiter + Send + Sync;
type ConfigureFn = dyn Fn(SageBuilder) -> SageBuilder + Send + Sync;

/// Sage providers from the stored connection of each business (what `byte8-ledger connect`
/// stored): [`SageBuilder::from_env`] (`SAGE_CLIENT_ID`, `SAGE_CLIENT_SECRET`, `SAGE_*`), the
/// connection's URLs, its tokens in the store (refreshed one process at a time where the store
/// locks them), and optionally a rate limiter per business shared by every worker process
/// ([`crate::store::postgres::SharedRateLimiter`]).
#[derive(Clone)]
pub struct SageProviders {
    connections: Arc<dyn ConnectionStoreDyn>,
    limiter: Option<Arc<LimiterFn>>,
    configure: Option<Arc<ConfigureFn>>,
    clock: Option<Arc<dyn Clock>>,
    clients: crate::http::SharedClients,
}

impl fmt::Debug for SageProviders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SageProviders")
            .field("connections", &self.connections)
            .field("shared_limiter", &self.limiter.is_some())
            .finish_non_exhaustive()
    }
}

impl SageProviders {
    /// Providers from the connections (and tokens) in `connections`.
    pub fn new(connections: Arc<dyn ConnectionStoreDyn>) -> Self {
        Self {
            connections,
            limiter: None,
            configure: None,
            clock: None,
            clients: crate::http::SharedClients::default(),
        }
    }

    /// Gives each business's provider the limiter `limiter(business)` (for several worker
    /// processes, a shared one, so that together they keep under Sage's limit).
    #[must_use]
    pub fn with_rate_limiter(mut self, limiter: impl Fn(&str) -> RateLimiter + Send + Sync + 'static) -> Self {
        self.limiter = Some(Arc::new(limiter));
        self
    }

    /// Adjusts each builder after the environment and the connection are applied (credentials
    /// or retries set in code rather than in the environment).
    #[must_use]
    pub fn with_builder(mut self, configure: impl Fn(SageBuilder) -> SageBuilder + Send + Sync + 'static) -> Self {
        self.configure = Some(Arc::new(configure));
        self
    }

    /// The providers' clock (the system clock by default).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }
}

impl SageProviders {
    /// The Sage provider of connection `c`, with this factory's settings.
    fn build(&self, c: &Connection) -> Result<Arc<dyn AccountingProvider>> {
        let mut b = SageBuilder::from_env()
            .with_business_id(c.scope.clone())
            .with_base_url(c.base_url.clone())
            .with_token_url(c.token_url.clone())
            .with_token_store(Arc::new(ScopedTokenStore::new(Arc::clone(&self.connections), c.scope.clone())));
        if let Some(clock) = &self.clock {
            b = b.with_clock(Arc::clone(clock));
        }
        if let Some(limiter) = &self.limiter {
            b = b.with_rate_limiter(limiter(&c.scope));
        }
        if let Some(configure) = &self.configure {
            b = configure(b);
        }
        Ok(Arc::new(b.share_http(&self.clients)?.build()?))
    }

    /// The HTTP clients its providers share (one per request timeout): every provider it builds
    /// whose builder was given no client of its own uses them.
    pub fn clients(&self) -> &crate::http::SharedClients {
        &self.clients
    }
}

impl SageProviders {
    /// The Sage provider of `business`, from its stored connection.
    ///
    /// # Errors
    /// [`AuthFailure::NotConnected`] when the business has no connection yet (its events then
    /// wait in line); [`Error::Unsupported`] when its connection is not to Sage; the builder's.
    pub async fn for_business(&self, business: &str) -> Result<Arc<dyn AccountingProvider>> {
        let c = stored_connection(&self.connections, business, SAGE).await?;
        if c.kind() != Some(ProviderKind::Sage) {
            return Err(Error::Unsupported {
                operation: format!("a `{}` connection (business {business}) in SageProviders", c.provider),
                provider: SAGE,
            });
        }
        self.build(&c)
    }
}

/// Xero providers from the stored connection of each organisation (what `byte8-ledger connect
/// --provider xero` stored): [`XeroBuilder::from_env`] (`XERO_CLIENT_ID`, `XERO_CLIENT_SECRET`),
/// the connection's URLs and pinned organisation (`tenant_id`), and its tokens in the store.
///
/// Xero's limits (60 a minute, 5 at once, 5,000 a day per organisation) are kept by each provider
/// in the process; one worker at a time dispatches a business (the dispatch lease), so one
/// provider speaks for an organisation at a time. They are not shared across processes the way
/// [`SageProviders::with_rate_limiter`] shares Sage's: a lease moving to another process starts
/// a fresh minute there (Xero answers any excess with 429 and `Retry-After`, which is retried).
#[cfg(feature = "xero")]
#[derive(Clone)]
pub struct XeroProviders {
    connections: Arc<dyn ConnectionStoreDyn>,
    configure: Option<Arc<XeroConfigureFn>>,
    clock: Option<Arc<dyn Clock>>,
    clients: crate::http::SharedClients,
}

#[cfg(feature = "xero")]
type XeroConfigureFn = dyn Fn(XeroBuilder) -> XeroBuilder + Send + Sync;

#[cfg(feature = "xero")]
impl fmt::Debug for XeroProviders {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("XeroProviders").field("connections", &self.connections).finish_non_exhaustive()
    }
}

#[cfg(feature = "xero")]
impl XeroProviders {
    /// Providers from the connections (and tokens) in `connections`.
    pub fn new(connections: Arc<dyn ConnectionStoreDyn>) -> Self {
        Self { connections, configure: None, clock: None, clients: crate::http::SharedClients::default() }
    }

    /// Adjusts each builder after the environment and the connection are applied.
    #[must_use]
    pub fn with_builder(mut self, configure: impl Fn(XeroBuilder) -> XeroBuilder + Send + Sync + 'static) -> Self {
        self.configure = Some(Arc::new(configure));
        self
    }

    /// The providers' clock (the system clock by default).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    fn build(&self, c: &Connection) -> Result<Arc<dyn AccountingProvider>> {
        let mut b = XeroBuilder::from_env()
            .with_tenant_id(c.tenant_id.clone().unwrap_or_else(|| c.scope.clone()))
            .with_base_url(c.base_url.clone())
            .with_token_url(c.token_url.clone())
            .with_token_store(Arc::new(ScopedTokenStore::new(Arc::clone(&self.connections), c.scope.clone())));
        if let Some(u) = &c.connections_url {
            b = b.with_connections_url(u.clone());
        }
        if let Some(clock) = &self.clock {
            b = b.with_clock(Arc::clone(clock));
        }
        if let Some(configure) = &self.configure {
            b = configure(b);
        }
        Ok(Arc::new(b.share_http(&self.clients)?.build()?))
    }

    /// The HTTP clients its providers share (as [`SageProviders::clients`]).
    pub fn clients(&self) -> &crate::http::SharedClients {
        &self.clients
    }
}

#[cfg(feature = "xero")]
impl XeroProviders {
    /// The Xero provider of `business` (its organisation), from its stored connection.
    ///
    /// # Errors
    /// [`AuthFailure::NotConnected`] when the business has no connection yet (its events then
    /// wait in line); [`Error::Unsupported`] when its connection is not to Xero; the builder's.
    pub async fn for_business(&self, business: &str) -> Result<Arc<dyn AccountingProvider>> {
        let c = stored_connection(&self.connections, business, XERO).await?;
        if c.kind() != Some(ProviderKind::Xero) {
            return Err(Error::Unsupported {
                operation: format!("a `{}` connection (business {business}) in XeroProviders", c.provider),
                provider: XERO,
            });
        }
        self.build(&c)
    }
}

/// The provider each business's stored connection names: Sage ([`SageProviders`]) or Xero
/// ([`XeroProviders`], feature `xero`). What `byte8-ledger serve` uses, so that one service
/// posts some tenants to Sage and others to Xero.
#[derive(Debug, Clone)]
pub struct StoredProviders {
    connections: Arc<dyn ConnectionStoreDyn>,
    sage: SageProviders,
    #[cfg(feature = "xero")]
    xero: XeroProviders,
}

impl StoredProviders {
    /// Sage and Xero providers, each with its defaults, from `connections`.
    pub fn new(connections: Arc<dyn ConnectionStoreDyn>) -> Self {
        Self {
            sage: SageProviders::new(Arc::clone(&connections)),
            #[cfg(feature = "xero")]
            xero: XeroProviders::new(Arc::clone(&connections)),
            connections,
        }
    }

    /// The Sage providers' settings.
    #[must_use]
    pub fn with_sage(mut self, sage: SageProviders) -> Self {
        self.sage = sage;
        self
    }

    /// The Xero providers' settings.
    #[cfg(feature = "xero")]
    #[must_use]
    pub fn with_xero(mut self, xero: XeroProviders) -> Self {
        self.xero = xero;
        self
    }

    /// The provider of connection `c`, Sage or Xero as it names (what `byte8-ledger` uses for
    /// every command that talks to a stored connection).
    ///
    /// # Errors
    /// [`Error::Unsupported`] for a ledger this build does not serve; the builder's errors.
    pub fn for_connection(&self, c: &Connection) -> Result<Arc<dyn AccountingProvider>> {
        match c.kind() {
            Some(ProviderKind::Sage) => self.sage.build(c),
            #[cfg(feature = "xero")]
            Some(ProviderKind::Xero) => self.xero.build(c),
            _ => Err(Error::Unsupported {
                operation: format!(
                    "business {}'s connection to `{}` (this build serves {})",
                    c.scope,
                    c.provider,
                    if cfg!(feature = "xero") { "Sage and Xero" } else { "Sage" }
                ),
                provider: "service",
            }),
        }
    }
}

impl StoredProviders {
    /// The provider of `business`'s stored connection, Sage or Xero as it names.
    ///
    /// # Errors
    /// [`AuthFailure::NotConnected`] when the business has no connection yet (its events then
    /// wait in line); as [`StoredProviders::for_connection`].
    pub async fn for_business(&self, business: &str) -> Result<Arc<dyn AccountingProvider>> {
        self.for_connection(&stored_connection(&self.connections, business, "ledger").await?)
    }
}

/// The stored connection of `scope`, or [`AuthFailure::NotConnected`] (its events wait in line).
async fn stored_connection(
    connections: &Arc<dyn ConnectionStoreDyn>,
    scope: &str,
    ledger: &'static str,
) -> Result<Connection> {
    connections.connection(scope).await?.ok_or_else(|| Error::Auth {
        provider: ledger,
        reason: AuthFailure::NotConnected,
        message: format!(
            "business {scope} has no ledger connection yet: run `byte8-ledger connect` for it (Sage: --business-id \
             {scope}); its events wait in line"
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{ConnectionStore as _, memory::MemoryStore};
    use chrono::TimeZone as _;
    use secrecy::SecretString;

    async fn connected(businesses: &[&str]) -> Arc<MemoryStore> {
        let store = Arc::new(MemoryStore::new());
        for b in businesses {
            store
                .save_connection(&Connection {
                    scope: (*b).to_owned(),
                    provider: SAGE.into(),
                    base_url: "https://api.accounting.sage.com/v3.1".into(),
                    token_url: "https://oauth.accounting.sage.com/token".into(),
                    created_at: chrono::Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
                    tenant_id: None,
                    connections_url: None,
                })
                .await
                .unwrap();
        }
        store
    }

    fn credentials(b: SageBuilder) -> SageBuilder {
        b.with_client_id("id").with_client_secret(SecretString::from("secret".to_owned()))
    }

    #[tokio::test]
    async fn the_providers_of_one_factory_share_one_http_client_unless_given_their_own() {
        let store = connected(&["a", "b", "c"]).await;
        let shared = SageProviders::new(Arc::clone(&store) as _).with_builder(credentials);
        assert!(shared.clients().is_empty(), "built on first use");
        for b in ["a", "b", "c"] {
            shared.for_business(b).await.unwrap();
        }
        assert_eq!(shared.clients().len(), 1, "three businesses, one client");
        let timed = SageProviders::new(Arc::clone(&store) as _)
            .with_builder(|b| credentials(b).with_timeout(std::time::Duration::from_secs(5)));
        timed.for_business("a").await.unwrap();
        timed.for_business("b").await.unwrap();
        assert_eq!(timed.clients().len(), 1, "one client with the builders' own timeout");
        let own = SageProviders::new(Arc::clone(&store) as _)
            .with_builder(|b| credentials(b).with_http_client(reqwest::Client::new()));
        own.for_business("a").await.unwrap();
        assert!(own.clients().is_empty(), "a builder given its own client keeps it");
    }
}
