//! What the ledger service keeps beside the run queue, in the same database so that every
//! service process sharing it sees the same state. The core (`byte8-ledger-core`) keeps what an
//! embedder needs (runs, cross-reference, tokens, reference cache, retention, the runs' audit);
//! the service's concepts are defined and implemented here:
//!
//! - [`BindingStore`]: the **tenant bindings**, one per paired Magento store: its tenant id, base
//!   URL, master `api_key` (a secret, sealed with AES-256-GCM under the store's
//!   [master key](byte8_ledger_core::store::crypto::MasterKey) like the tokens, never shown by
//!   `Debug`, logs or errors), the ledger business it posts to (the scope of its runs and
//!   cross-reference), its sync policy, its status (`active | revoked`) and the Magento
//!   connection status (`pending | active | token_revoked`).
//! - [`DispatchStore`]: what the workers coordinate through. A **dispatch lease** per business
//!   (one worker at a time drains a business's queue, see the crate docs for why); the
//!   **sync-state callback outbox**, one row per run whose terminal outcome Magento has not been
//!   told yet; the due tenants; the health counters; the runs of one Magento entity.
//! - [`ReplayCache`]: the webhook `jti`s seen, until they expire, so that a token replayed to
//!   another service process is refused too.
//! - [`keys`]: the tenant's master [`ApiKey`] and its HKDF subkeys.
//!
//! # Layout
//!
//! | module | what |
//! |---|---|
//! | this one | the traits ([`ServiceStore`] is all of them with the core's `Store` and `RetentionStore`), [`Binding`], the checks of tenant ids ([`check_tenant_id`]) and Magento URLs ([`magento_base_url`]) |
//! | [`keys`] | [`ApiKey`] and its subkeys |
//! | [`memory`] | [`MemoryServiceStore`]: the core's memory store with the service's tables as its extension |
//! | `sqlite` (feature `sqlite`) | the traits for the core's `SqliteStore`, through its public pool and master key |
//! | `postgres` (feature `postgres`) | the traits for the core's `PostgresStore`, likewise |
//! | `conformance` (feature `conformance`) | the conformance suite of these traits, run against every store |
//!
//! The SQL implementations run on the core stores' pools (`SqliteStore::pool`,
//! `PostgresStore::pool`), seal api keys under their master key (`SqliteStore::master_key`,
//! `PostgresStore::master_key`), read `runs` rows with the core's own readers
//! (`store::sqlite::run_from_row`, `store::postgres::run_from_row`, so that a run reads the same
//! whichever package loads it) and classify database errors as the core does (`db_error`):
//! documented accessors of the core, not its internals.
//!
//! # The schema stays in the core's migrations
//!
//! The tables of this module (`bindings`, `dispatch_leases`, `callbacks`, `replay_cache`) and the
//! trigger that fills the outbox are created by the core's migrations (`migrations/sqlite`,
//! `migrations/postgres`, from `0003_service`): one database has **one** migration sequence and
//! one migrator, run when the core's store opens, so that no two packages number migrations
//! against the same `_sqlx_migrations` table. The retention purge
//! (`byte8_ledger_core::store::retention`) is the core's too and covers these tables, in the same
//! transaction as the runs.
//!
//! # The callback outbox is written with the terminal outcome
//!
//! The callback must survive a crash between the terminal outcome and the POST to Magento, so
//! the outbox row is written **in the same transaction** as the run's terminal status: in SQLite
//! and PostgreSQL by a trigger on `runs` (`migrations/*/0004_tenant_runs.sql`: after an update
//! of `status` to `synced`, `skipped` or `dead_lettered` of a run whose **own tenant** is active
//! on the run's business), in the memory store under the lock of
//! [`RunStore::finish`](byte8_ledger_core::store::RunStore::finish) itself (see [`memory`]). A run
//! finished again after a requeue gets a new row generation, and a callback sent for an older
//! generation never clears the newer one. Runs without a tenant (the `sync`
//! command's) and runs of a tenant disconnected since get no row: tenant A's outcomes are never
//! called back into tenant B's store after B is paired to A's business.
//!
//! # Tenants stay apart
//!
//! Runs and callbacks carry the tenant that queued them, and every read here is by tenant as
//! well as business: [`DispatchStore::claim_callbacks`] (with
//! [`RunStore::claim_for`](byte8_ledger_core::store::RunStore::claim_for) for runs),
//! [`DispatchStore::entity_runs`] (the status route) and [`DispatchStore::dispatch_stats`] (the health tile).
//!
//! Every implementation passes `conformance` (memory, SQLite, PostgreSQL).

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use url::Url;

pub use self::keys::ApiKey;
pub use self::memory::{MemoryServiceStore, ServiceTables};
#[cfg(any(test, feature = "sqlite", feature = "postgres"))]
use byte8_ledger_core::store::crypto::MasterKey;
use byte8_ledger_core::{
    error::{Error, FieldError, Result},
    policy::SyncPolicy,
    store::{Claimed, Dedupe, Enqueued, EnqueuedOnce, NewRun, Run, RunId, Store, retention::RetentionStore},
};

#[cfg(feature = "conformance")]
#[cfg_attr(docsrs, doc(cfg(feature = "conformance")))]
pub mod conformance;
pub mod keys;
pub mod memory;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "sqlite")]
mod sqlite;

/// The ledger's view of its connection to one Magento store (the health feed's
/// `magento_connection_status`, byte8-spec.md 11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// Paired, no call has succeeded yet.
    Pending,
    /// The last signed call was accepted.
    Active,
    /// Magento answered 401 to a signed call: the store must be paired again.
    TokenRevoked,
}

impl ConnectionStatus {
    /// The wire spelling (`token_revoked`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Active => "active",
            Self::TokenRevoked => "token_revoked",
        }
    }
}

impl fmt::Display for ConnectionStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where seen `jti`s are kept until their tokens expire. The in-memory
/// [`MemoryReplayCache`](crate::magento::MemoryReplayCache) serves one process; a store shared by
/// several ledger processes implements this trait too (the core's SQLite and PostgreSQL stores
/// do, here, and [`MemoryServiceStore`]).
#[async_trait]
pub trait ReplayCache: fmt::Debug + Send + Sync {
    /// Records `jti` until `expires_at` and returns `true`, or returns `false` when it is already
    /// recorded (a replay). Atomic: of two concurrent calls with one `jti`, one gets `false`.
    ///
    /// # Errors
    /// A retryable error when the cache cannot record (full, or its store is down): the token
    /// must then be refused for now, never accepted unrecorded.
    async fn check_and_record(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool>;
}

/// Reads a Magento base URL as the merchant types it: trimmed, trailing slashes dropped, http(s)
/// with a host, no query or fragment, `https` unless the host is loopback. A binding's
/// `magento_base_url` is checked with it, and so is every Magento URL the service package reads.
///
/// # Errors
/// A [`FieldError`] on `field` naming the rule broken.
pub fn magento_base_url(field: &str, text: &str) -> std::result::Result<Url, FieldError> {
    let text = text.trim().trim_end_matches('/');
    if text.is_empty() {
        return Err(FieldError::new(field, "required"));
    }
    let url = Url::parse(text).map_err(|e| FieldError::new(field, format!("`{text}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(FieldError::new(field, format!("`{text}` is not an absolute http(s) URL")));
    }
    if url.query().is_some() || url.fragment().is_some() || !url.username().is_empty() || url.password().is_some() {
        return Err(FieldError::new(field, "must not carry credentials, a query or a fragment"));
    }
    if url.scheme() == "http" && !byte8_ledger_core::http::is_loopback(&url) {
        return Err(FieldError::new(field, "must be https (plain http is accepted only on a loopback host)"));
    }
    Ok(url)
}

/// Whether a binding dispatches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BindingStatus {
    /// Paired: webhooks are accepted and its runs dispatched.
    Active,
    /// Disconnected: webhooks are refused (401) and nothing is dispatched; its runs and
    /// cross-reference are kept until the retention purge removes them
    /// ([`RetentionPolicy::disconnected_days`](byte8_ledger_core::store::retention::RetentionPolicy::disconnected_days)
    /// after the disconnection).
    Revoked,
}

impl BindingStatus {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Active, Self::Revoked].into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for BindingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses the stored spelling of a [`ConnectionStatus`].
pub fn parse_connection_status(s: &str) -> Option<ConnectionStatus> {
    [ConnectionStatus::Pending, ConnectionStatus::Active, ConnectionStatus::TokenRevoked]
        .into_iter()
        .find(|x| x.as_str() == s)
}

/// The longest tenant id (it is a path segment of the webhook URL).
pub const TENANT_ID_MAX: usize = 128;

/// Checks a tenant id: 1 to [`TENANT_ID_MAX`] characters of `A–Z a–z 0–9 . _ -` (it appears in
/// the webhook URL and in every token's `sub`).
///
/// # Errors
/// A [`FieldError`] on `tenant_id` naming the rule.
pub fn check_tenant_id(tenant_id: &str) -> std::result::Result<(), FieldError> {
    if tenant_id.is_empty() {
        return Err(FieldError::new("tenant_id", "required"));
    }
    if tenant_id.len() > TENANT_ID_MAX {
        return Err(FieldError::new("tenant_id", format!("at most {TENANT_ID_MAX} characters")));
    }
    if !tenant_id.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')) {
        return Err(FieldError::new("tenant_id", "only letters, digits, `.`, `_` and `-`"));
    }
    Ok(())
}

/// A time at the stores' precision (microseconds), so that it compares equal after a round trip.
pub fn at_store_precision(t: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(t.timestamp_micros()).unwrap_or(t)
}

/// One paired Magento store.
#[derive(Clone)]
pub struct Binding {
    /// The tenant id: the webhook URL's segment and every token's `sub`.
    pub tenant_id: String,
    /// The ledger business its events post to (the scope of its runs and cross-reference).
    pub scope: String,
    /// The store's base URL, normalised (`https://shop.example.com`).
    pub magento_base_url: String,
    /// The ledger base URL given to Magento at pairing (where it sends webhooks), if recorded.
    pub ledger_base_url: Option<String>,
    /// The master key shared with Magento (a secret).
    pub api_key: ApiKey,
    /// The sync policy, snapshotted into each run at enqueue time (byte8-spec.md 1.4).
    pub policy: SyncPolicy,
    /// Active or revoked.
    pub status: BindingStatus,
    /// The ledger's view of its calls to Magento (the health feed's `magento_connection_status`).
    pub magento_status: ConnectionStatus,
    /// When the current key was paired (a re-pairing changes it).
    pub paired_at: DateTime<Utc>,
    /// When the tenant was first stored.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl fmt::Debug for Binding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Binding")
            .field("tenant_id", &self.tenant_id)
            .field("scope", &self.scope)
            .field("magento_base_url", &self.magento_base_url)
            .field("ledger_base_url", &self.ledger_base_url)
            .field("status", &self.status)
            .field("magento_status", &self.magento_status)
            .field("paired_at", &self.paired_at)
            .finish_non_exhaustive()
    }
}

impl Binding {
    /// A new active binding, paired `now`, Magento status `active` (Magento accepted the key).
    /// The base URL is normalised as the Magento client reads it.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming every refused field: `tenant_id` (see [`check_tenant_id`]),
    /// `scope` (required), `magento_base_url` (an absolute `https` URL, `http` only on loopback).
    pub fn new(
        tenant_id: &str,
        scope: &str,
        magento_base_url: &str,
        api_key: ApiKey,
        policy: SyncPolicy,
        now: DateTime<Utc>,
    ) -> Result<Self> {
        let mut errors = Vec::new();
        let tenant_id = tenant_id.trim();
        if let Err(e) = check_tenant_id(tenant_id) {
            errors.push(e);
        }
        let scope = scope.trim();
        if scope.is_empty() {
            errors.push(FieldError::new("scope", "required (the ledger business id)"));
        }
        let base = self::magento_base_url("magento_base_url", magento_base_url).map_err(|e| errors.push(e)).ok();
        let Some(base) = base.filter(|_| errors.is_empty()) else {
            return Err(Error::Invalid { what: "tenant binding", errors });
        };
        let now = at_store_precision(now);
        Ok(Self {
            tenant_id: tenant_id.to_owned(),
            scope: scope.to_owned(),
            magento_base_url: base.as_str().trim_end_matches('/').to_owned(),
            ledger_base_url: None,
            api_key,
            policy,
            status: BindingStatus::Active,
            magento_status: ConnectionStatus::Active,
            paired_at: now,
            created_at: now,
            updated_at: now,
        })
    }

    /// True when webhooks are accepted and runs dispatched.
    pub fn is_active(&self) -> bool {
        self.status == BindingStatus::Active
    }

    /// What [`BindingStore::bindings`] lists of it.
    pub fn info(&self) -> BindingInfo {
        BindingInfo {
            tenant_id: self.tenant_id.clone(),
            scope: self.scope.clone(),
            magento_base_url: self.magento_base_url.clone(),
            status: self.status,
            magento_status: self.magento_status,
            paired_at: self.paired_at,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

/// A binding without its secret: what listing tenants needs (no master key, no decryption, so
/// one row that does not open cannot hide the others).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindingInfo {
    /// The tenant id.
    pub tenant_id: String,
    /// The ledger business.
    pub scope: String,
    /// The store's base URL.
    pub magento_base_url: String,
    /// Active or revoked.
    pub status: BindingStatus,
    /// The Magento connection status.
    pub magento_status: ConnectionStatus,
    /// When the current key was paired.
    pub paired_at: DateTime<Utc>,
    /// When the tenant was first stored.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl BindingInfo {
    /// True when webhooks are accepted and runs dispatched.
    pub fn is_active(&self) -> bool {
        self.status == BindingStatus::Active
    }
}

#[cfg(any(test, feature = "sqlite", feature = "postgres"))]
/// The additional authenticated data binding a sealed `api_key` to its tenant: a ciphertext
/// copied to another tenant's row does not open.
fn api_key_aad(tenant_id: &str) -> Vec<u8> {
    format!("byte8-ledger:api_key:{tenant_id}").into_bytes()
}

#[cfg(any(test, feature = "sqlite", feature = "postgres"))]
/// Seals a tenant's `api_key` for storage (AES-256-GCM, `v1:` + base64).
///
/// # Errors
/// [`Error::Internal`] if encryption fails (it does not for valid inputs).
pub(crate) fn seal_api_key(key: &MasterKey, tenant_id: &str, api_key: &ApiKey) -> Result<String> {
    key.seal(api_key.expose_secret().as_bytes(), &api_key_aad(tenant_id))
}

#[cfg(any(test, feature = "sqlite", feature = "postgres"))]
/// Opens what [`seal_api_key`] sealed.
///
/// # Errors
/// [`Error::Config`] naming `LEDGER_MASTER_KEY` when the key differs or the row was altered or
/// moved to another tenant (the message never holds the key).
pub(crate) fn open_api_key(key: &MasterKey, tenant_id: &str, sealed: &str) -> Result<ApiKey> {
    let plain = key.open(sealed, &api_key_aad(tenant_id)).map_err(|_| {
        Error::config(
            byte8_ledger_core::store::crypto::MASTER_KEY_ENV,
            format!(
                "cannot decrypt the stored api_key of tenant {tenant_id}: the master key differs from the one it was \
                 stored with, or the row was altered"
            ),
        )
    })?;
    let text = std::str::from_utf8(&plain)
        .map_err(|_| Error::database(format!("the stored api_key of tenant {tenant_id} is not text"), false, None))?;
    ApiKey::new(text)
}

#[cfg(any(test, feature = "sqlite", feature = "postgres"))]
/// Reads a stored policy (it was checked when stored; a row that no longer reads is an error
/// naming the tenant and the field).
///
/// # Errors
/// [`Error::Database`] carrying the policy error.
pub(crate) fn read_policy(tenant_id: &str, json: &str) -> Result<SyncPolicy> {
    SyncPolicy::from_json(json).map_err(|e| {
        Error::database(format!("the stored policy of tenant {tenant_id} does not read: {e}"), false, None)
    })
}

/// Serialises a policy for storage.
///
/// # Errors
/// [`Error::Internal`] if it cannot be serialised (it always can).
pub(crate) fn write_policy(policy: &SyncPolicy) -> Result<String> {
    serde_json::to_string(policy).map_err(|e| Error::internal(format!("cannot serialise the policy: {e}")))
}

/// The error of a second active tenant on one business.
pub(crate) fn scope_taken(scope: &str) -> Error {
    Error::Invalid {
        what: "tenant binding",
        errors: vec![FieldError::new(
            "scope",
            format!("business {scope} is already bound to another active tenant: disconnect it first"),
        )],
    }
}

/// The tenant bindings.
#[async_trait]
pub trait BindingStore: fmt::Debug + Send + Sync {
    /// Inserts the binding of `binding.tenant_id`, or replaces it (pairing again rotates the key
    /// and reactivates a revoked tenant); `created_at` of an existing tenant is kept.
    ///
    /// # Errors
    /// [`Error::Invalid`] (field `scope`) when the binding is active and another tenant's active
    /// binding has the same business: workers dispatch by business, so two active stores on one
    /// business would fetch each other's entities and mix their cross-references (enforced by a
    /// unique index in SQLite and PostgreSQL, so two processes pairing at once cannot both win).
    async fn put_binding(&self, binding: &Binding) -> Result<()>;

    /// A binding by tenant id.
    async fn binding(&self, tenant_id: &str) -> Result<Option<Binding>>;

    /// A binding by tenant id with the version of its row, for a cache of bindings: a store that
    /// gives a version (PostgreSQL: the row's `xmin`) checks it again in
    /// [`DispatchStore::enqueue_once`], so that a webhook verified against a cached copy is
    /// queued only while the binding is still that version and active. The default gives none
    /// (the memory and SQLite stores: a read costs no round trip, so nothing is cached).
    async fn versioned_binding(&self, tenant_id: &str) -> Result<Option<(Binding, Option<i64>)>> {
        Ok(self.binding(tenant_id).await?.map(|b| (b, None)))
    }

    /// Every binding without its key, by tenant id (no master key needed).
    async fn bindings(&self) -> Result<Vec<BindingInfo>>;

    /// Sets a binding's status; false when there is no such tenant.
    async fn set_binding_status(&self, tenant_id: &str, status: BindingStatus, now: DateTime<Utc>) -> Result<bool>;

    /// Sets the Magento connection status, only if the binding is still the pairing made at
    /// `paired_at` (a 401 seen with an old key never marks a tenant that paired again); false
    /// otherwise.
    async fn set_magento_status(
        &self,
        tenant_id: &str,
        paired_at: DateTime<Utc>,
        status: ConnectionStatus,
        now: DateTime<Utc>,
    ) -> Result<bool>;
}

/// A sync-state callback waiting to be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingCallback {
    /// The run whose terminal outcome is to be sent (its `outcome`).
    pub run: Run,
    /// The outbox row's generation: the run's claim (`Run::claim`) when it finished
    /// (migration 0016; a run finished again was claimed again, so it gets a new one). The
    /// worker that finished the run therefore knows its callback's generation without reading
    /// it, and sends it without claiming it while it holds the business's dispatch lease.
    pub generation: i64,
    /// Failed sends so far.
    pub attempts: u32,
}

/// The health feed's counters of one business (byte8-spec.md 11.7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DispatchStats {
    /// Runs queued or running.
    pub pending: u64,
    /// Runs dead-lettered since the given time.
    pub failed_since: u64,
    /// When a run last reached a terminal status.
    pub last_run_at: Option<DateTime<Utc>>,
}

/// What a worker's turn on a business starts with ([`DispatchStore::begin_turn`]): the dispatch
/// lease it takes and the runs it claims under it.
#[derive(Debug, Clone, Copy)]
pub struct TurnStart<'a> {
    /// The business.
    pub scope: &'a str,
    /// The tenant whose runs are claimed (another tenant's runs of the business are not).
    pub tenant: &'a str,
    /// The worker taking the lease (process and worker number).
    pub holder: &'a str,
    /// Now, on the service's clock.
    pub now: DateTime<Utc>,
    /// Until when the dispatch lease is held (renewed by the worker while it drains).
    pub lease_until: DateTime<Utc>,
    /// Until when the claimed runs are leased (a worker that dies leaves them due again then).
    pub run_lease_until: DateTime<Utc>,
    /// How many runs to claim at most (0: none, only whether any is due).
    pub limit: usize,
}

/// A worker's turn over, as [`DispatchStore::end_turns`] records it with others: the business,
/// the name its dispatch lease was held under, and the callbacks (run, generation) the turn
/// delivered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TurnEnd {
    /// The business whose lease is given up.
    pub scope: String,
    /// The name the lease was taken under (a lease held under another name stays).
    pub holder: String,
    /// The callbacks the turn delivered, each marked delivered (a generation not delivered is not).
    pub delivered: Vec<(RunId, i64)>,
}

/// A verified webhook token as [`DispatchStore::enqueue_once`] takes it, for
/// [`DispatchStore::enqueue_and_begin`].
#[derive(Debug, Clone, Copy)]
pub struct WebhookToken<'a> {
    /// The token's `jti`, recorded until it expires (a second use is a replay).
    pub jti: &'a str,
    /// When the token expires (Unix seconds): how long its `jti` is kept.
    pub expires_at: i64,
    /// Now (Unix seconds), on the service's clock.
    pub now: i64,
    /// The version of the tenant's binding the token was verified against
    /// ([`BindingStore::versioned_binding`]), checked in the same statement when given.
    pub binding_version: Option<i64>,
}

/// What [`DispatchStore::begin_turn`] found, its lease taken.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Begun {
    /// The runs claimed with the lease, and whether more are due.
    pub claimed: Claimed,
    /// Whether a callback of the tenant was due when the turn started (true when the store
    /// cannot tell cheaply: the memory and SQLite stores). False means the callbacks the turn has
    /// to send are those of the runs it finishes itself.
    pub callbacks_due: bool,
}

/// What the service's workers coordinate through, and what its status and health routes read.
#[async_trait]
pub trait DispatchStore: fmt::Debug + Send + Sync {
    /// Takes (or renews) the dispatch lease of `scope` for `holder` until `until`: true when
    /// `holder` now holds it, false when another holder's lease has not expired. Atomic across
    /// processes.
    async fn acquire_dispatch(
        &self,
        scope: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool>;

    /// Gives up `holder`'s dispatch lease of `scope` (nothing when another holds it).
    async fn release_dispatch(&self, scope: &str, holder: &str) -> Result<()>;

    /// What the webhook route does with a verified token's `jti` and the run it carries: records
    /// the `jti` until `expires_at` as [`ReplayCache::check_and_record`] does and, only when it
    /// was not seen, queues `run` as [`RunStore::enqueue`](byte8_ledger_core::store::RunStore::enqueue)
    /// does; [`EnqueuedOnce::Replay`] for a replay (nothing queued). One statement on PostgreSQL
    /// (the `jti` is recorded only with its run: a failure writes neither); the memory and SQLite
    /// stores record, then queue.
    ///
    /// With `binding_version` (from [`BindingStore::versioned_binding`]), nothing is written and
    /// the answer is [`EnqueuedOnce::StaleBinding`] unless the run's tenant's binding is still
    /// that version and active, checked in the same statement. A store that gives no versions
    /// refuses one (an internal error).
    async fn enqueue_once(
        &self,
        jti: &str,
        expires_at: i64,
        now: i64,
        binding_version: Option<i64>,
        run: NewRun,
        dedupe: Dedupe,
    ) -> Result<EnqueuedOnce>;

    /// What the webhook route does when this process's workers can take the tenant at once:
    /// [`enqueue_once`](Self::enqueue_once) and then, only when a run was queued (new, or
    /// collapsed into a queued one), [`begin_turn`](Self::begin_turn) with `turn` (whose scope
    /// and tenant are the run's). The turn is `None` when none was begun: nothing queued (a
    /// replay, a stale binding, a duplicate) or the business's lease held by another holder. One
    /// statement on PostgreSQL (`byte8_enqueue_turn`, migrations 0028 and 0029), which writes the
    /// enqueue and the turn together or neither, and on an idle business (no run of the tenant
    /// queued or running) inserts the run already claimed instead of claiming it with a second
    /// write; the memory and SQLite stores take the two steps. Either way the answer is the same.
    ///
    /// The turn begun is `turn.holder`'s: whoever is handed it drains it and ends it under that
    /// name, as the worker that begins its own turn does. Until then the business's lease and the
    /// claimed runs are held; a process that dies first leaves both to expire, as a worker that
    /// dies in its turn does.
    async fn enqueue_and_begin(
        &self,
        webhook: &WebhookToken<'_>,
        run: NewRun,
        dedupe: Dedupe,
        turn: &TurnStart<'_>,
    ) -> Result<(EnqueuedOnce, Option<Begun>)> {
        enqueue_and_begin_in_steps(self, webhook, run, dedupe, turn).await
    }

    /// Starts a worker's turn: takes the dispatch lease as [`acquire_dispatch`](Self::acquire_dispatch)
    /// does and, holding it, claims up to `turn.limit` of the tenant's due runs as
    /// [`RunStore::claim_next`](byte8_ledger_core::store::RunStore::claim_next) does, saying whether
    /// more are due. `None` (nothing claimed) when another holder's lease has not expired. One
    /// statement on PostgreSQL: a turn on a business with one run waiting costs its lease and
    /// its claim in one round trip, with no further claim to find it drained.
    ///
    /// It also says whether any of the tenant's callbacks was due when the turn started
    /// ([`Begun::callbacks_due`]): a turn whose runs' own callbacks are all it has to send then
    /// sends them without claiming them (see `PendingCallback::generation`).
    async fn begin_turn(&self, turn: &TurnStart<'_>) -> Result<Option<Begun>>;

    /// Marks each callback of `delivered` (run, generation) delivered at `now`, as
    /// [`callback_sent`](Self::callback_sent) does one: one statement on PostgreSQL.
    async fn callbacks_sent(&self, delivered: &[(RunId, i64)], now: DateTime<Utc>) -> Result<()> {
        for &(run, generation) in delivered {
            self.callback_sent(run, generation, now).await?;
        }
        Ok(())
    }

    /// Ends `holder`'s turn on `scope`: [`callbacks_sent`](Self::callbacks_sent) for the
    /// callbacks it delivered and [`release_dispatch`](Self::release_dispatch), in one statement
    /// on PostgreSQL. A worker records the callbacks it delivered here rather than one statement
    /// each; one that dies before leaves them due again when their claim lapses, and they are
    /// sent again (a sync state sent twice sets the same state).
    async fn end_turn(&self, scope: &str, holder: &str, delivered: &[(RunId, i64)], now: DateTime<Utc>) -> Result<()> {
        self.callbacks_sent(delivered, now).await?;
        self.release_dispatch(scope, holder).await
    }

    /// Ends several turns at once, each as [`end_turn`](Self::end_turn) does (its deliveries
    /// marked at `now`, its lease given up when its holder still holds it): one statement on
    /// PostgreSQL however many, one turn after another here. What a process's workers use to
    /// record the turns that ended within a few milliseconds of one another together (see
    /// [`ServiceConfig::turn_end_delay`](crate::ServiceConfig::turn_end_delay)).
    async fn end_turns(&self, ends: &[TurnEnd], now: DateTime<Utc>) -> Result<()> {
        for end in ends {
            self.end_turn(&end.scope, &end.holder, &end.delivered, now).await?;
        }
        Ok(())
    }

    /// The (business, tenant) pairs with work due at `now`: a run of the tenant's that a claim
    /// would take (`RunStore::claim_for` with that tenant), or a callback of its that
    /// [`DispatchStore::claim_callbacks`] would. One read, ordered by business then tenant: what
    /// a worker's pass visits, so that a tenant with nothing to do costs it nothing. Runs queued
    /// without a tenant (the command's) are not the service's and are left out, and so is every
    /// business whose dispatch lease is held at `now` (by anyone: its holder drains it, and
    /// another worker trying for the lease would only contend).
    async fn due_tenants(&self, now: DateTime<Utc>) -> Result<Vec<(String, String)>>;

    /// Claims up to `limit` callbacks of `tenant`'s runs of `scope` due at `now`, oldest first,
    /// leasing them until `lease_until` (a sender that dies leaves them due again then). Safe
    /// under concurrent claimers. Another tenant's callbacks are never claimed.
    async fn claim_callbacks(
        &self,
        scope: &str,
        tenant: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PendingCallback>>;

    /// The callback of `run` at `generation` was delivered (or can never be) at `now`: marks it
    /// delivered (never claimed or counted as pending again; kept until
    /// [`RetentionPolicy::delivered_callback_days`](byte8_ledger_core::store::retention::RetentionPolicy::delivered_callback_days)
    /// have passed), unless the run was finished again since.
    async fn callback_sent(&self, run: RunId, generation: i64, now: DateTime<Utc>) -> Result<()>;

    /// A send failed: due again at `next_at`, with `error` kept for operators.
    async fn callback_failed(&self, run: RunId, generation: i64, next_at: DateTime<Utc>, error: &str) -> Result<()>;

    /// Callbacks of `scope` not delivered yet (every tenant's).
    async fn pending_callbacks(&self, scope: &str) -> Result<u64>;

    /// The health counters of `tenant`'s runs of `scope`, counting dead letters since
    /// `failed_since`.
    async fn dispatch_stats(&self, scope: &str, tenant: &str, failed_since: DateTime<Utc>) -> Result<DispatchStats>;

    /// The runs `tenant` queued in `scope` for Magento entity `magento_entity_id` with one of
    /// `events`, oldest first (another tenant's entity with the same id is another store's).
    async fn entity_runs(&self, scope: &str, tenant: &str, events: &[&str], magento_entity_id: u64)
    -> Result<Vec<Run>>;
}

/// [`DispatchStore::enqueue_and_begin`] in two steps (the trait's default, and PostgreSQL's for a
/// token without a binding version): [`DispatchStore::enqueue_once`], then, when a run was
/// queued, [`DispatchStore::begin_turn`].
pub(crate) async fn enqueue_and_begin_in_steps<S: DispatchStore + ?Sized>(
    store: &S,
    webhook: &WebhookToken<'_>,
    run: NewRun,
    dedupe: Dedupe,
    turn: &TurnStart<'_>,
) -> Result<(EnqueuedOnce, Option<Begun>)> {
    turn_on_the_run(&run, turn)?;
    let enqueued =
        store.enqueue_once(webhook.jti, webhook.expires_at, webhook.now, webhook.binding_version, run, dedupe).await?;
    let begun = match &enqueued {
        EnqueuedOnce::Queued(Enqueued::New(_) | Enqueued::Collapsed(_)) => store.begin_turn(turn).await?,
        _ => None,
    };
    Ok((enqueued, begun))
}

/// Refuses a turn ([`DispatchStore::enqueue_and_begin`]) on another business or tenant than its
/// run's, before anything is written: the turn begun with a webhook is its run's.
pub(crate) fn turn_on_the_run(run: &NewRun, turn: &TurnStart<'_>) -> Result<()> {
    if run.scope == turn.scope && run.tenant_id.as_deref() == Some(turn.tenant) {
        Ok(())
    } else {
        Err(Error::internal("a webhook's turn is begun on its own run's business and tenant"))
    }
}

/// [`DispatchStore::begin_turn`] in two steps, for a store whose round trips cost nothing (in
/// memory, SQLite in-process): the lease, then the claim under it. `callbacks_due` is true
/// (the worker then claims callbacks as it always did).
pub(crate) async fn begin_turn_in_steps<S>(store: &S, turn: &TurnStart<'_>) -> Result<Option<Begun>>
where
    S: DispatchStore + byte8_ledger_core::store::RunStore + ?Sized,
{
    if !store.acquire_dispatch(turn.scope, turn.holder, turn.now, turn.lease_until).await? {
        return Ok(None);
    }
    let claimed = store.claim_next(turn.scope, Some(turn.tenant), turn.now, turn.run_lease_until, turn.limit).await?;
    Ok(Some(Begun { claimed, callbacks_due: true }))
}

/// [`DispatchStore::enqueue_once`] in two steps, for the same stores: the `jti`, then the run.
/// These stores give no binding versions ([`BindingStore::versioned_binding`]'s default), so
/// one given is refused.
pub(crate) async fn enqueue_once_in_steps<S>(
    store: &S,
    jti: &str,
    expires_at: i64,
    now: i64,
    binding_version: Option<i64>,
    run: NewRun,
    dedupe: Dedupe,
) -> Result<EnqueuedOnce>
where
    S: ReplayCache + byte8_ledger_core::store::RunStore + ?Sized,
{
    if binding_version.is_some() {
        return Err(Error::internal("this store gives no binding versions, and cannot check one"));
    }
    if !store.check_and_record(jti, expires_at, now).await? {
        return Ok(EnqueuedOnce::Replay);
    }
    store.enqueue(run, dedupe).await.map(EnqueuedOnce::Queued)
}

/// Everything the service needs from one store (its retention purge included).
pub trait ServiceStore: Store + BindingStore + DispatchStore + ReplayCache + RetentionStore {}

impl<T: Store + BindingStore + DispatchStore + ReplayCache + RetentionStore + ?Sized> ServiceStore for T {}

/// The key a store's [`ReplayCache`] records for `jti`: hex SHA-256, so that any `jti` takes 64
/// characters.
pub(crate) fn replay_key(jti: &str) -> String {
    byte8_ledger_core::identity::sha256_hex(jti)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_ids_are_checked() {
        for ok in ["6f1c2b4e-0d1a-4e7b-9a51-3c2d1e0f9a8b", "shop_1.eu", "A"] {
            check_tenant_id(ok).unwrap();
        }
        for bad in ["", "a/b", "a b", "ü", &"x".repeat(129), "a%2F"] {
            assert_eq!(check_tenant_id(bad).unwrap_err().path, "tenant_id", "{bad}");
        }
    }

    #[test]
    fn a_binding_names_every_bad_field_and_never_shows_its_key() {
        let key = ApiKey::new("do-not-show-this-key").unwrap();
        let err =
            Binding::new("a/b", " ", "ftp://x", key.clone(), SyncPolicy::default(), DateTime::UNIX_EPOCH).unwrap_err();
        let fields: Vec<_> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(fields, ["tenant_id", "scope", "magento_base_url"]);
        assert!(!err.to_string().contains("do-not-show"));
        let b =
            Binding::new("t-1", "biz", "https://shop.example.com/", key, SyncPolicy::default(), DateTime::UNIX_EPOCH)
                .unwrap();
        assert_eq!(b.magento_base_url, "https://shop.example.com");
        assert!(!format!("{b:?}").contains("do-not-show"), "{b:?}");
        assert!(!format!("{b:#?}").contains("do-not-show"));
    }

    #[test]
    fn sealed_keys_open_only_for_their_tenant_and_master_key() {
        let master = super::MasterKey::generate();
        let key = ApiKey::new("k-123").unwrap();
        let sealed = seal_api_key(&master, "t-1", &key).unwrap();
        assert!(!sealed.contains("k-123"));
        assert_eq!(open_api_key(&master, "t-1", &sealed).unwrap().expose_secret(), "k-123");
        let moved = open_api_key(&master, "t-2", &sealed).unwrap_err();
        assert!(moved.to_string().contains("LEDGER_MASTER_KEY") && moved.to_string().contains("t-2"), "{moved}");
        let other = super::MasterKey::generate();
        assert!(open_api_key(&other, "t-1", &sealed).is_err());
    }
}
