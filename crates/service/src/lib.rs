//! The ledger service for the Byte8 Magento module: what a merchant's store
//! running `byte8/module-client` talks to, as an axum [`Router`](axum::Router) a host can embed,
//! and the workers that sync what it queues. `byte8-ledger serve` runs both.
//!
//! # Routes (byte8-spec.md 12.5)
//!
//! | route | what it does |
//! |---|---|
//! | `POST /webhooks/magento/{tenant_id}/{event_name}` | verifies the webhook JWT, reads the Byte8 envelope (byte8-spec.md 2), queues the event durably and answers `202 {"sync_run_id": …}` |
//! | `GET /v1/status?entity_type=&entity_id=` | the sync state of one Magento entity: `{entity_type, entity_id, provider, sync_status, provider_entity_id, provider_reference, skip_reason, error_code, message, last_sync_at, runs: [{sync_run_id, event, idempotency_key, status, sync_status, provider_entity_id, skip_reason, error_code, message, attempts, received_at, updated_at}]}`; `sync_status` is the most recently changed run's (`pending` while it waits, `null` when there is none: the admin's "—") |
//! | `GET /v1/tile/health` | the admin tile's feed (byte8-spec.md 11.7): `{tenant: {magento_connection_status}, binding: {status, region, ledger_connected, refresh_token_days_left, refresh_token_expires_at}, sync: {pending_count, failed_24h, last_run_at}}`; `region` is the ledger business's country (`GB`), `null` until its reference data is known; `failed_24h` counts runs dead-lettered in the last 24 hours; the three `binding` fields after `region` are this service's additions (the module ignores them): whether the business has ledger tokens, and its refresh token's whole days left and expiry (`null` when unknown; an idle connection is refreshed when fewer than [`ServiceConfig::refresh_token_margin`] remain, see `tokens`) |
//! | `POST /v1/tenant/disconnect` | revokes the binding: dispatch stops, later webhooks get 401; runs and cross-reference are kept until the retention purge ([`ServiceConfig::retention`], 90 days after the disconnection by default; a repeated call answers the same and keeps the first disconnection's time) |
//!
//! Beside them, [`console`] is the operator console (`/console`, behind an operator login) and
//! the OAuth connect routes (`/connect/{provider}`, `/oauth/{provider}/callback`): see
//! [`console::Console`].
//!
//! The routes above are authenticated by the module's bearer JWT (HS256 under the tenant's
//! **outbound** subkey, `iss` `magento`, `aud` `byte8-ledger`, `sub` the tenant id, at most
//! 60 s, `jti` single-use; [`WebhookVerifier`](crate::magento::WebhookVerifier)). The webhook's
//! tenant is its URL's; the `/v1` routes' tenant is the token's `sub`, which the verification
//! then binds to that tenant's key. `jti`s are recorded in the store
//! ([`ReplayCache`](crate::magento::ReplayCache)), so a token replayed to another process
//! sharing the database is refused too. A webhook's `jti` is recorded with the run it queues
//! ([`DispatchStore::enqueue_once`](crate::store::DispatchStore::enqueue_once): one statement on
//! PostgreSQL, and a replay queues nothing), or on its own when the request is refused after its
//! token verified (an unknown event, a malformed envelope): a token is spent either way.
//!
//! # Status codes: 4xx only for what will never succeed (byte8-spec.md 11.5)
//!
//! Magento's outbox dead-letters a webhook on any 4xx at the first attempt and retries 5xx for
//! about a week, so:
//!
//! | answer | when |
//! |---|---|
//! | 202 | queued (or already queued: a repeated delivery gets the same `sync_run_id`) |
//! | 400 | the body is not a JSON object; a `/v1/status` query without a valid `entity_type` or `entity_id`; a webhook whose `?provider=` names another ledger than the tenant's business is connected to ("tenant has no active xero binding", byte8-xero-spec.md 1.4) or one this service does not know |
//! | 401 | unknown tenant, a webhook or `/v1/status` request of a revoked binding (a disconnected tenant's old key reads nothing: its business may be paired to another store since), missing, malformed, forged, expired or replayed JWT (`/v1/tile/health` and `/v1/tenant/disconnect` still answer a revoked tenant's signed request, so its admin shows `binding.status: revoked`; the tile counts only that tenant's own runs) |
//! | 422 | an unknown event name, or an envelope field missing, mistyped or breaking a rule (named in the body) |
//! | 503 | the store cannot be reached or is busy (transient: Magento retries) |
//! | 500 | anything else on the ledger's side (Magento retries it too) |
//!
//! Error bodies are `{"error": "<code>", "message": "<what is wrong>"}`; no message holds a
//! token, a key or a claim value.
//!
//! # From webhook to Sage and back
//!
//! 1. The webhook becomes the crate's [`Event`](byte8_ledger_core::canonical::Event) **without an entity**
//!    (contract.md 1; only the envelope's `magento_entity_id`, `website_id`, `store_id`,
//!    `occurred_at` and `payload` are read, byte8-spec.md 2.5: the worker always fetches the
//!    entity), keyed by the `Idempotency-Key` header (`{event}:{magento_entity_id}` when absent),
//!    and is queued in the [`RunStore`](byte8_ledger_core::store::RunStore) under the
//!    binding's ledger business with the binding's policy as its snapshot (byte8-spec.md 1.4).
//!    Documents dedupe for good on their key; an upsert delivered again makes a new run once the
//!    previous one started, since the entity is fetched when it is processed (each delivery is
//!    its own content).
//! 2. A worker claims the run, fetches the entity from Magento
//!    ([`MagentoClient`](crate::magento::MagentoClient) as the engine's
//!    [`EntitySource`](byte8_ledger_core::engine::EntitySource)), and runs it through that tenant's
//!    [`SyncEngine`](byte8_ledger_core::engine::SyncEngine): its policy, its ledger provider (Sage or Xero,
//!    as the stored connection of its business says: [`StoredProviders`]) and its cross-reference.
//! 3. The terminal outcome (synced, skipped, dead-lettered) is written together with a row in the
//!    store's **callback outbox** (a trigger in SQLite and PostgreSQL), so that the sync-state
//!    callback survives a crash between the two (a callback sent whose delivery the crash kept
//!    from being recorded is sent again, with the same state). Workers send the outbox
//!    (`POST /rest/V1/byte8/sync-state`, byte8-spec.md 12.6) and retry failures with
//!    [`ServiceConfig::callback_backoff`]. A retryable failure of a run is not terminal: no
//!    callback until it ends.
//!
//! # Tenants stay apart
//!
//! A business has at most one active tenant, but it may be paired to another one after the first
//! is disconnected (a store re-installed, or moved). Every run carries the tenant whose webhook
//! queued it ([`NewRun::tenant_id`](byte8_ledger_core::store::NewRun::tenant_id)), and the workers claim runs
//! and callbacks **by tenant** as well as by business: the new tenant's worker never fetches the
//! old tenant's entity ids from its own store, the old tenant's outcomes are never posted to the
//! new tenant's store (no outbox row is written for a run whose tenant is no longer active), and
//! `/v1/status` answers the active tenant only, with its own runs. The old tenant's runs wait in
//! line, untouched, until it pairs again.
//!
//! # Workers
//!
//! A worker is a loop (a tokio task; `serve --workers N` starts N, and `serve --no-http` runs
//! processes without HTTP) that takes the next tenant from this process's **line** of tenants with
//! work, takes its business's **dispatch lease** and claims the tenant's first due runs with it
//! ([`DispatchStore::begin_turn`](crate::store::DispatchStore::begin_turn): one statement on
//! PostgreSQL, which also says whether more are due), processes them and claims more while more
//! are due, then sends its pending callbacks (up to [`ServiceConfig::batch`] of each; the lease
//! is renewed once a quarter of [`ServiceConfig::dispatch_lease`] has passed), and ends the turn
//! recording the callbacks delivered and releasing the lease together; then it takes the next
//! tenant. A turn's end waits up to [`ServiceConfig::turn_end_delay`] for the other turns of the
//! process that end meanwhile, and all of them are recorded in one go
//! ([`DispatchStore::end_turns`](crate::store::DispatchStore::end_turns): one statement on
//! PostgreSQL); until then the business stays leased, and a turn of this process on it records
//! the waiting ends first. Each turn's lease has a name of its own (the worker's and a number),
//! so that an end recorded late never gives up a later turn's lease. The callbacks of the runs
//! the turn itself finished synced or skipped are sent without claiming them: a callback's generation is the claim its run finished under, which the worker
//! knows, and every sender of a tenant's callbacks holds the business's dispatch lease, so no one
//! else sends them meanwhile. Other callbacks (a retry due, a run that failed) are claimed only
//! when the turn's start saw one due, or a run of the turn failed. A tenant with one event
//! waiting thus costs its turn a statement before the engine's own (the begin) and a share of
//! one after (its end, recorded with the others that end within the delay). A worker
//! with nothing in line waits without reading the store. The line is fed by:
//!
//! - **the webhook route**, the moment it queues a run: the tenant goes in line and an idle
//!   worker wakes (no polling delay, no read). When a worker is waiting and the tenant's runtime
//!   is built, the statement that queues the run also begins the worker's turn
//!   ([`DispatchStore::enqueue_and_begin`](crate::store::DispatchStore::enqueue_and_begin):
//!   the lease taken and the run claimed, one statement on PostgreSQL), and the tenant goes in
//!   line with that turn: the worker continues it under the name it was begun with, without a
//!   begin of its own. A tenant with one event waiting then costs its turn no statement besides
//!   the enqueue and the engine's own but its share of a recorded end. Workers told to stop
//!   still take such a turn (its run is claimed), and nothing else;
//! - **the console**, the moment an operator retries a run or a store's (or every business's)
//!   dead letters, or connects a business whose stores' events waited for a ledger (the same
//!   announcement as the webhook's);
//! - **a turn that stopped at its bound** ([`ServiceConfig::batch`]) or during which more work
//!   was announced: the tenant goes back in line, behind the others;
//! - **the dispatcher's look**, every [`ServiceConfig::poll_interval`] (a second by default): one
//!   read of the tenants with work due that nothing announced
//!   ([`DispatchStore::due_tenants`](crate::store::DispatchStore::due_tenants)):
//!   a run due again after its back-off, a callback to retry, a run requeued by the command (another
//!   process), a webhook another process accepted (a process started with `--workers 0`), a
//!   business whose worker died. The read costs an entry or two of each business with open runs
//!   or undelivered callbacks, not one of each run or callback waiting (PostgreSQL's migration
//!   0026, SQLite's 0027), so a back-fill's long queue or a store whose Magento is down for a day
//!   does not make it dearer. Every `probe_interval` it also puts in line the tenants whose
//!   Magento refused the ledger, to be pinged.
//!
//! A tenant is in line, or being drained, at most once per process, so two workers of one process
//! never contend for a business. Across processes, a process whose lease attempt fails leaves the
//! business to the holder. On SQLite (one process) the route's wake-up and the look are all there
//! is. On PostgreSQL a webhook is drained by the process that accepted it when that process runs
//! workers; a process without workers (`serve --workers 0`) announces it on the
//! [`wake::WakeBus`] set with [`Service::set_wake_bus`] (`LISTEN`/`NOTIFY`, which `serve` sets), and
//! every process with workers then looks at once; anything else is found by the periodic look.
//!
//! **How many workers.** A worker spends most of an event waiting for Sage (100–150 ms a request,
//! one to three requests an event) and Magento, so a node needs as many as it has round trips in
//! flight, not as many as it has cores: 1,000 tenants at a busy hour's two events a minute each
//! need about 64 (BENCHMARKS.md). [`Service::spawn_workers_up_to`] starts some and grows the pool,
//! up to a cap, whenever tenants wait in line while no worker is idle; `serve` starts one worker
//! per 16 active tenants (at least 4) and grows up to 256 (`--workers`, `--max-workers`). An idle
//! worker costs a parked task, nothing more.
//!
//! A ledger
//! that takes one document a request (Sage) gets one run a claim, processed alone; one that takes
//! several (`Capabilities::max_batch` > 1: Xero) gets up to that many a claim (at most
//! [`ServiceConfig::batch`]), processed through the engine's batched path
//! ([`SyncEngine::process_claimed`](byte8_ledger_core::engine::SyncEngine::process_claimed)): the
//! invoices and payments among them are posted in Xero's batches, and every run still gets its
//! own attempt, outcome, dead letter and callback, exactly as alone.
//!
//! One worker at a time per business is deliberate. The engine's steps within one business
//! assume a single writer: two invoices of a new customer processed at once would both create the
//! customer's contact, and a payment and a credit memo of one invoice would both spend its
//! outstanding amount. And Sage limits each business (200 requests a minute), so a second worker
//! on the same business adds no throughput. Workers spread over businesses (tenants) instead,
//! and take over a business within [`ServiceConfig::dispatch_lease`] when its worker dies (its
//! claimed runs come back when their own lease expires, [`EngineConfig::lease`]).
//!
//! Workers are supervised: a run whose processing panics (a bug) is dead-lettered with an
//! `internal` outcome saying so (Magento hears it through the callback; `byte8-ledger requeue`
//! puts it back once the bug is fixed) and the worker goes on with the next run; a panic
//! elsewhere on a tenant's turn releases its dispatch lease and drops its runtime (rebuilt on the
//! next turn); a worker task that panics anyway is logged and restarted. A dead-letter rather
//! than a retry, because the same input would most likely panic again.
//! Beside the workers, [`Service::spawn_workers`] starts a **purge task**: every
//! [`ServiceConfig::purge_interval`] (hourly by default, first at start) it removes what
//! [`ServiceConfig::retention`] no longer keeps ([`byte8_ledger_core::store::retention`]), at the service's
//! clock's time; a failed purge is logged and tried again at the next tick.
//! [`WorkerPool::stop`] stops the workers in parallel after their current run;
//! [`WorkerPool::stop_within`] bounds the wait.
//!
//! # Untrusted stores
//!
//! A merchant's store is not trusted by the others' service. Calls to it follow no redirect
//! (its answers cannot send the ledger's token elsewhere), each attempt has
//! [`ServiceConfig::magento_timeout`] in all, its bodies are read up to
//! [`MAX_BODY`](crate::magento::MAX_BODY), its `Retry-After` is capped at a day, and only a short
//! sanitised excerpt of its error `message` reaches an outcome or `/v1/status`.
//!
//! # Time limits on the HTTP side
//!
//! The router answers 503 to a request not done within [`ServiceConfig::request_timeout`] (the
//! body read included; 503 so that Magento's outbox retries, where a 4xx would dead-letter the
//! webhook). [`serve()`] adds what only the server can: a header-read timeout, a connection limit
//! and a bounded graceful shutdown ([`HttpLimits`]).
//!
//! A Magento 401 (on a fetch or a callback) marks the binding `token_revoked`, visible in the
//! health feed: the merchant disconnected or paired again elsewhere. The tenant's runs and
//! callbacks then wait (a run whose fetch got 401 goes back in line rather than failing) and a
//! ping is tried every [`ServiceConfig::probe_interval`]; pairing again resumes it.
//! A business without a Sage connection yet (paired, Sage not connected) is skipped: its events
//! wait in line.
//!
//! # Where the service keeps its state
//!
//! [`store`] defines the service's half of the stores: tenant bindings ([`store::BindingStore`],
//! their api keys sealed under the store's master key), dispatch leases, the sync-state callback
//! outbox, due tenants, the health counters and a Magento entity's runs
//! ([`store::DispatchStore`]), the webhook replay cache ([`store::ReplayCache`]); a
//! [`store::ServiceStore`] is all of them with the core's run queue, cross-reference, tokens and
//! retention purge. They are implemented for the core's `SqliteStore` and `PostgresStore`
//! (features `sqlite` and `postgres`, on the stores' pools; the tables come from the core's
//! migrations) and for [`store::MemoryServiceStore`] (tests, the demo).
//!
//! # Embedding
//!
//! ```no_run
//! use std::sync::Arc;
//! use byte8_ledger_core::{
//!     clock::SystemClock,
//!     store::{crypto::MasterKey, sqlite::SqliteStore},
//! };
//! use byte8_ledger_service::{SageProviders, Service, ServiceConfig};
//!
//! # #[cfg(feature = "sqlite")] // the `ServiceStore` of `SqliteStore`
//! # async fn demo() -> byte8_ledger_core::Result<()> {
//! let store = Arc::new(SqliteStore::open("state.db", Some(MasterKey::from_env()?)).await?);
//! let providers = Arc::new(SageProviders::new(Arc::clone(&store) as _));
//! let service = Service::new(store, providers, Arc::new(SystemClock), ServiceConfig::default());
//! let workers = service.spawn_workers(2);
//! let app = axum::Router::new().merge(service.router()); // add your own routes beside it
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.expect("bind");
//! let shutdown = async { let _ = tokio::signal::ctrl_c().await; };
//! byte8_ledger_service::serve(listener, app, byte8_ledger_service::HttpLimits::default(), shutdown).await;
//! workers.stop_within(std::time::Duration::from_secs(30)).await;
//! # Ok(()) }
//! ```

mod auth;
pub mod console;
mod error;
mod http;
pub mod magento;
mod retention;
pub mod serve;
pub mod store;
mod tokens;
pub mod wake;
mod worker;

use std::{fmt, sync::Arc, time::Duration};

#[cfg(feature = "xero")]
pub use byte8_ledger_core::providers::stored::XeroProviders;
/// The providers of a tenant's business, built from its stored connection (defined in the core,
/// `byte8_ledger_core::providers::stored`, so that the command builds its providers the same way;
/// [`ProviderFactory`] is implemented for each here).
pub use byte8_ledger_core::providers::stored::{SageProviders, StoredProviders};
pub use serve::{HttpLimits, serve};
pub use tokens::IdleRefresh;
pub use worker::WorkerPool;

use async_trait::async_trait;
use byte8_ledger_core::{
    clock::Clock,
    engine::EngineConfig,
    error::Result,
    http::RetryConfig,
    providers::AccountingProvider,
    store::retention::{PurgeReport, RetentionPolicy},
};
use store::{Binding, ServiceStore};

/// Builds the ledger provider a tenant's events post to.
#[async_trait]
pub trait ProviderFactory: fmt::Debug + Send + Sync {
    /// The provider of `binding`'s business.
    ///
    /// # Errors
    /// When the business has no usable connection (its events then wait in line).
    async fn provider(&self, binding: &Binding) -> Result<Arc<dyn AccountingProvider>>;
}

#[async_trait]
impl ProviderFactory for SageProviders {
    /// The Sage provider of the binding's business ([`SageProviders::for_business`]).
    async fn provider(&self, binding: &Binding) -> Result<Arc<dyn AccountingProvider>> {
        self.for_business(&binding.scope).await
    }
}

#[cfg(feature = "xero")]
#[async_trait]
impl ProviderFactory for XeroProviders {
    /// The Xero provider of the binding's business ([`XeroProviders::for_business`]).
    async fn provider(&self, binding: &Binding) -> Result<Arc<dyn AccountingProvider>> {
        self.for_business(&binding.scope).await
    }
}

#[async_trait]
impl ProviderFactory for StoredProviders {
    /// The provider the binding's business's stored connection names
    /// ([`StoredProviders::for_business`]).
    async fn provider(&self, binding: &Binding) -> Result<Arc<dyn AccountingProvider>> {
        self.for_business(&binding.scope).await
    }
}

/// Service settings.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// How often the dispatcher looks for work nothing announced (a run due after its back-off,
    /// a callback to retry, a webhook another process accepted): see [Workers](self#workers). A
    /// webhook this process accepts wakes a worker at once.
    pub poll_interval: Duration,
    /// Runs (and then callbacks) a worker handles for one business before it moves on to the
    /// next (each claimed one at a time).
    pub batch: usize,
    /// How long a worker holds a business's dispatch lease without renewing it (it renews once a
    /// quarter of it has passed, before its next claim): how soon another worker takes over a dead
    /// worker's business.
    pub dispatch_lease: Duration,
    /// How long a claimed callback is leased to its sender.
    pub callback_lease: Duration,
    /// How long a turn's end may wait to be recorded with others: the callbacks a turn
    /// delivered are marked and its business's dispatch lease given up by one statement for
    /// every turn of this process that ended within this delay of the first
    /// ([`DispatchStore::end_turns`](crate::store::DispatchStore::end_turns)), not one a turn.
    /// Meanwhile the business stays leased: a turn of this process on it records the waiting
    /// ends first, and another process's worker finds it at its next look once they are
    /// recorded (at most this delay and a [`poll_interval`](Self::poll_interval) later). Zero
    /// records each turn's end at once, as it ends. 50 ms by default.
    pub turn_end_delay: Duration,
    /// Delay before sending a callback again after `n` failed sends (the last entry repeats).
    pub callback_backoff: Vec<Duration>,
    /// How often a `token_revoked` tenant is pinged to see if it is back.
    pub probe_interval: Duration,
    /// Retries of each call to Magento within one attempt (the callback outbox retries beyond).
    pub magento_retry: RetryConfig,
    /// The engine's settings (attempts, retry ladder, run lease).
    pub engine: EngineConfig,
    /// The largest request body accepted (a webhook envelope is a few hundred bytes).
    pub max_body: usize,
    /// The total time of one attempt of a call to a tenant's Magento, connecting and reading the
    /// whole body included: a store that answers slowly (a byte every few seconds) cannot hold
    /// a worker longer.
    pub magento_timeout: Duration,
    /// The total time of one HTTP request to the service, its body read and its handling
    /// included; beyond it the answer is 503 (Magento retries it; a 4xx would dead-letter a
    /// webhook).
    pub request_timeout: Duration,
    /// What the workers' periodic purge keeps ([`byte8_ledger_core::store::retention`]); `None`: no purge
    /// (the host purges with [`Service::purge`] or `byte8-ledger purge`).
    pub retention: Option<RetentionPolicy>,
    /// Refresh an idle connection's tokens when its refresh token has less than this left
    /// (Sage's die after 31 days unused, Xero's after 60): 7 days by default.
    pub refresh_token_margin: Duration,
    /// How often [`Service::spawn_workers`]' idle-token task looks (the first time one interval
    /// after the start): hourly by default; [`Service::refresh_idle_tokens`] runs one look.
    pub token_check_interval: Duration,
    /// How often [`Service::spawn_workers`]' purge task runs (the first time at start). Every
    /// process sharing a database purges: a purge is one transaction and a second one finds
    /// nothing left.
    pub purge_interval: Duration,
}

impl Default for ServiceConfig {
    /// A look for unannounced work every second, batches of 20, a 2-minute dispatch lease, turns'
    /// ends recorded together within 50 ms, callbacks retried after 5 s,
    /// 30 s, 2 min, 10 min, 30 min then hourly, a ping a minute for a revoked token, two quick
    /// retries per Magento call of at most 60 s each, the engine's defaults, 256 KiB bodies
    /// read within 30 s requests, Byte8's retention promise purged hourly.
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_secs(1),
            batch: 20,
            dispatch_lease: Duration::from_secs(120),
            callback_lease: Duration::from_secs(60),
            turn_end_delay: Duration::from_millis(50),
            callback_backoff: [5u64, 30, 120, 600, 1800, 3600].into_iter().map(Duration::from_secs).collect(),
            probe_interval: Duration::from_secs(60),
            magento_retry: RetryConfig {
                max_retries: 2,
                initial_backoff: Duration::from_millis(500),
                max_backoff: Duration::from_secs(5),
                retry_timeout: Duration::from_secs(30),
            },
            engine: EngineConfig::default(),
            max_body: 256 * 1024,
            magento_timeout: crate::magento::REQUEST_TIMEOUT,
            request_timeout: Duration::from_secs(30),
            retention: Some(RetentionPolicy::default()),
            purge_interval: Duration::from_secs(3600),
            refresh_token_margin: Duration::from_secs(7 * 24 * 3600),
            token_check_interval: Duration::from_secs(3600),
        }
    }
}

impl ServiceConfig {
    /// The delay before the next send of a callback that failed `attempts` times (≥ 1).
    pub fn callback_delay(&self, attempts: u32) -> Duration {
        let i = usize::try_from(attempts.saturating_sub(1)).unwrap_or(usize::MAX);
        self.callback_backoff.get(i).or(self.callback_backoff.last()).copied().unwrap_or(Duration::from_secs(60))
    }
}

/// The service: its routes and its workers over one store.
#[derive(Clone)]
pub struct Service {
    shared: Arc<Shared>,
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn ServiceStore>,
    pub(crate) providers: Arc<dyn ProviderFactory>,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: ServiceConfig,
    pub(crate) runtimes: worker::Runtimes,
    /// This process's id in dispatch leases (with a worker number).
    pub(crate) process: String,
    /// The last dispatch error of each tenant (logged once, not every pass).
    pub(crate) last_errors: std::sync::Mutex<std::collections::HashMap<String, String>>,
    /// The tenants with work announced, which this process's workers take from.
    pub(crate) queue: Arc<worker::Queue>,
    /// Turns of this process's workers that ended and are not recorded yet.
    pub(crate) turn_ends: worker::TurnEnds,
    /// Where a process without workers announces the work it queued ([`wake`]).
    pub(crate) wake: std::sync::OnceLock<Arc<dyn wake::WakeBus>>,
    /// The HTTP client every tenant's Magento client shares (built on first use): one client
    /// per tenant read the system's trust roots a thousand times over.
    pub(crate) magento_http: std::sync::OnceLock<reqwest::Client>,
    /// Active tenants' bindings as the webhook route last read them, with their row version
    /// ([`auth`]: checked again when each webhook is queued).
    pub(crate) webhook_bindings: std::sync::Mutex<std::collections::HashMap<String, auth::CachedBinding>>,
}

impl Shared {
    /// The Magento HTTP client the tenants share ([`magento::http_client`]), built on first use.
    ///
    /// # Errors
    /// When it cannot be built (the TLS backend).
    pub(crate) fn magento_http(&self) -> byte8_ledger_core::Result<reqwest::Client> {
        if let Some(http) = self.magento_http.get() {
            return Ok(http.clone());
        }
        let http = magento::http_client()?;
        Ok(self.magento_http.get_or_init(|| http).clone())
    }

    /// Tells the workers that `info`'s tenant has work queued now (a webhook, an operator's
    /// retry): this process's workers hear of it at once, not at their next look for work; a
    /// process without workers announces it to the others' ([`wake`]). A failed announcement
    /// only costs the wait until that look (logged).
    pub(crate) async fn announce(&self, info: store::BindingInfo) {
        if self.queue.has_workers() {
            self.queue.offer(info);
        } else if let Some(bus) = self.wake.get()
            && let Err(e) = bus.announce(&info.scope, &info.tenant_id).await
        {
            tracing::warn!(tenant = %info.tenant_id, error = %e, "cannot announce the queued run to the workers (they find it at their next look)");
        }
    }

    /// [`announce`](Self::announce)s every active store of the businesses `scopes` (their dead
    /// letters went back in line, or one has just been connected and its waiting events can
    /// go), reading the bindings once.
    pub(crate) async fn announce_businesses(&self, scopes: &[String]) -> byte8_ledger_core::Result<()> {
        if scopes.is_empty() {
            return Ok(());
        }
        for b in self.store.bindings().await? {
            if b.is_active() && scopes.contains(&b.scope) {
                self.announce(b).await;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Service")
            .field("store", &self.shared.store)
            .field("providers", &self.shared.providers)
            .field("config", &self.shared.config)
            .field("process", &self.shared.process)
            .finish_non_exhaustive()
    }
}

impl Service {
    /// A service over `store`, building each business's ledger provider with `providers`.
    pub fn new(
        store: Arc<dyn ServiceStore>,
        providers: Arc<dyn ProviderFactory>,
        clock: Arc<dyn Clock>,
        config: ServiceConfig,
    ) -> Self {
        Self {
            shared: Arc::new(Shared {
                store,
                providers,
                clock,
                config,
                runtimes: worker::Runtimes::default(),
                process: uuid::Uuid::new_v4().simple().to_string(),
                last_errors: std::sync::Mutex::default(),
                queue: Arc::default(),
                turn_ends: worker::TurnEnds::default(),
                wake: std::sync::OnceLock::new(),
                magento_http: std::sync::OnceLock::new(),
                webhook_bindings: std::sync::Mutex::default(),
            }),
        }
    }

    /// The routes, with their state: merge them into a host's router or serve them as they are.
    pub fn router(&self) -> axum::Router {
        http::router(Arc::clone(&self.shared))
    }

    /// Starts `n` worker tasks on the current tokio runtime (a fixed number), their dispatcher,
    /// and the periodic retention purge when [`ServiceConfig::retention`] is set; stop them with
    /// [`WorkerPool::stop`].
    pub fn spawn_workers(&self, n: usize) -> WorkerPool {
        WorkerPool::spawn(Arc::clone(&self.shared), n, n)
    }

    /// As [`spawn_workers`](Self::spawn_workers), starting `n` workers and growing the pool up
    /// to `cap` while tenants with work wait in line and no worker is idle (see
    /// [Workers](self#workers): how many a node needs is set by the Sage round trips in flight,
    /// not by the CPU). The pool does not shrink: an idle worker waits without reading the store.
    pub fn spawn_workers_up_to(&self, n: usize, cap: usize) -> WorkerPool {
        WorkerPool::spawn(Arc::clone(&self.shared), n, cap)
    }

    /// Sets the bus on which this process announces the work it queues while it runs no
    /// worker, and on which its workers hear other processes' announcements ([`wake`]; on
    /// PostgreSQL, [`wake::PgWakeBus`]). Set it before [`spawn_workers`](Self::spawn_workers);
    /// false when a bus was already set (the first one is kept).
    pub fn set_wake_bus(&self, bus: Arc<dyn wake::WakeBus>) -> bool {
        self.shared.wake.set(bus).is_ok()
    }

    /// The providers' factory (another [`Service`] on the same store may share it).
    pub fn providers(&self) -> &Arc<dyn ProviderFactory> {
        &self.shared.providers
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn ServiceStore> {
        &self.shared.store
    }

    /// Purges what `policy` no longer keeps, at the service's clock's time (what the workers'
    /// periodic purge does with [`ServiceConfig::retention`]).
    ///
    /// # Errors
    /// An invalid policy; store failures.
    pub async fn purge(&self, policy: &RetentionPolicy, dry_run: bool) -> Result<PurgeReport> {
        self.shared.store.purge(policy, self.shared.clock.now(), dry_run).await
    }

    /// One look of the idle-token task: refreshes the tokens of every bound business whose
    /// refresh token has less than [`ServiceConfig::refresh_token_margin`] left at the
    /// service's clock (or an unknown life), and says what it did for each.
    ///
    /// # Errors
    /// Store failures reading the bindings or tokens (a failed refresh is an
    /// [`IdleRefresh::Failed`], not an error).
    pub async fn refresh_idle_tokens(&self) -> Result<Vec<IdleRefresh>> {
        tokens::refresh_idle(&self.shared).await
    }

    /// Callbacks of `scope` not delivered yet.
    ///
    /// # Errors
    /// Store failures.
    pub async fn pending_callbacks(&self, scope: &str) -> Result<u64> {
        self.shared.store.pending_callbacks(scope).await
    }
}
