//! Durable state below the engine: the run queue and audit trail ([`RunStore`]), the
//! cross-reference between Magento entities and ledger records ([`XrefStore`]), and connections
//! with their tokens ([`ConnectionStore`]), the retention purge ([`retention`]) and the runs'
//! audit ([`audit`]). The ledger service's own state (tenant bindings, dispatch leases, the
//! sync-state callback outbox, the webhook replay cache) is defined and implemented in the
//! service package (`byte8_ledger_service::store`), over these stores: on SQLite and PostgreSQL
//! through their public pools and master keys, in memory as an extension of [`memory::MemoryStore`]
//! ([`memory::MemoryExtension`]).
//!
//! | store | module | feature |
//! |---|---|---|
//! | in memory | [`memory::MemoryStore`] | always |
//! | embedded SQLite (durable, migrations, tokens encrypted at rest) | `sqlite::SqliteStore` | `sqlite` |
//! | PostgreSQL (several worker processes sharing one queue, a token lock and a rate limit) | `postgres::PostgresStore` | `postgres` |
//!
//! SQLite is for one process (the `byte8-ledger sync` command); PostgreSQL is for several workers
//! draining one queue (see the `postgres` module's docs for when to use which).
//!
//! Every implementation passes the same store conformance suite (`conformance`).
//!
//! # The queue's deduplication (byte8-spec.md 2.6)
//!
//! - Document events (`invoice.created`, `invoice.paid`, `creditmemo.created`) dedupe **for good**
//!   on their idempotency key: a second event with a key the store has seen makes no new run.
//! - Upserts (`customer.upserted`, `product.upserted`) carry no version in their key, so they only
//!   **collapse while queued**: a new one replaces the raw event of a run that has not started;
//!   once a run has started or finished, a later upsert makes a new run, which updates the
//!   ledger record through the cross-reference.
//!
//! # Tenants and claims
//!
//! A run queued by the service carries its **tenant** (the paired Magento store,
//! [`NewRun::tenant_id`]); the `sync` command's runs carry none. Deduplication, claiming
//! ([`RunStore::claim_for`]), the callback outbox and the status route all filter by it, so a
//! business paired to a new tenant never processes, reports or shows the old tenant's runs.
//!
//! Every claim increments the run's [`Run::claim`] generation, and [`RunStore::finish`] only writes
//! when the run is still running under the generation it was given ([`claim_lost`] otherwise): a
//! worker that stalled past its lease cannot overwrite the result of the worker that took over.
//!
//! # Schema migrations
//!
//! The SQL stores migrate when they open (`migrations/sqlite`, `migrations/postgres`, the same
//! numbering and meaning in both; a number only PostgreSQL has is a PostgreSQL-only feature: the
//! shared rate limiter, `0011`, the one-statement enqueue, `0012`, the webhook's `jti` and run in
//! one statement, `0013`, the rate limiter's idle block, `0014`, the webhook's enqueue checked
//! against its binding's row version, `0015`, the queue's indexes bounded by tenant, `0017`, the replay check read by expiry, `0019`, the open and the finished runs indexed apart by business, `0020`, the rate limiter's blocks spaced, `0021`, and the planner's statistics of a business's store, the runs indexed by status and the undelivered callbacks by business, `0022`, the replay cache purged one record in sixteen, `0023`, a block of rate permits read with one lock, `0024`, and the callback trigger's `WHEN`, `0025`). The service package's tables (`bindings`, `dispatch_leases`,
//! `callbacks`, `replay_cache`, the console's) are created by this same sequence: one database
//! has one migration sequence and one migrator, run here, so that no two packages number
//! migrations against the same `_sqlx_migrations` table.
//!
//! | migration | what it does |
//! |---|---|
//! | `0001_init` | the run queue, attempts, cross-reference, connections |
//! | `0002_connection_provider_tenant` | a connection's provider organisation (Xero's tenant) and connections endpoint |
//! | `0003_service` | the service: tenant bindings, replay cache, dispatch leases, the callback outbox and its trigger |
//! | `0004_tenant_runs` | `runs.tenant_id` and `runs.claim` (see "Tenants and claims"), `callbacks.tenant_id`, the indexes rebuilt with the tenant, the outbox trigger replaced; existing runs get the tenant bound to their business when they were received (the one paired most recently at or before the run, else the first paired), runs of a business never bound keep none, outbox rows without a tenant are dropped |
//! | `0005_retention` | `bindings.revoked_at` (when a tenant was disconnected; existing revoked bindings take their last change), `callbacks.delivered_at` (delivered callbacks are kept, marked, until [`retention`] removes them), the outbox trigger marks a re-finished run's row pending again |
//! | `0007_console` | the service console's operators, sessions and policy versions |
//! | `0008_run_audit` | `attempts.exchanges` and `attempts.snapshot` (each attempt's ledger requests and answers, redacted, and its entity snapshot: [`AttemptRecord`]); `runs.increment_id`, `runs.ledger_id`, `runs.ledger_reference` (what the runs table searches by, [`audit`]), filled in for existing runs from their raw event and outcome; indexes for listing newest first |
//! | `0009_dispatch_and_rate_window` | the partial index of open runs that `due_tenants` reads; on PostgreSQL the shared rate limiter's window (`rate_limits.recent`) |
//! | `0010_exchanges_once` | `exchanges`: every ledger request of an attempt (or made for a business outside any run, [`RunStore::record_exchanges`]) once, keyed by its recording and number, so that the runs of a batch point at one copy ([`AttemptRecord::recording`]) and [`RunStore::ledger_requests`] counts each request once; the existing `attempts.exchanges` moved there (identical copies of one business sharing a recording) and the column dropped; a trigger removing a recording with its last attempt; `runs.attempts_before_retry` (see [`Run::attempts`]), existing attempts numbered again in order; `oauth_states_used` (the service console's OAuth states used once) |
//! | `0011_rate_permit_blocks` (PostgreSQL) | `byte8_rate_permits`: the shared rate limiter's permits, up to a block of them in one call ([`postgres::SharedRateLimiter`]) |
//! | `0012_enqueue_function` (PostgreSQL) | `byte8_enqueue`: [`RunStore::enqueue`] in one statement (the advisory lock of the (scope, key), the dedupe reads and the insert or collapse, in the call's own transaction) |
//! | `0013_enqueue_once` (PostgreSQL) | `byte8_enqueue_once`: a webhook's `jti` recorded in the replay cache and its run queued (`byte8_enqueue`) in one statement, nothing written for a replay (the service's `DispatchStore::enqueue_once`) |
//! | `0014_rate_permits_when_idle` (PostgreSQL) | `byte8_rate_permits` with an idle business's block: two permits a statement when no process used the business for a second ([`postgres::IDLE_GAP`]) |
//! | `0015_enqueue_bound` (PostgreSQL) | `byte8_enqueue_bound`: `byte8_enqueue_once` only while the tenant's binding row is still the version (`xmin`) the webhook's token was verified against, and active; else nothing written (the service's cached bindings: [`EnqueuedOnce::StaleBinding`]) |
//! | `0016_callback_generation_is_the_claim` | the callback outbox's trigger gives a callback the generation of the claim its run finished under (`runs.claim`), so the worker that finished the run names its callback without reading it back; existing rows keep theirs |
//! | `0017_queue_bounded_by_tenant` (PostgreSQL) | `runs_by_key` (scope, idempotency_key, tenant_id, id), `runs_by_entity` (scope, magento_entity_id, tenant_id) and `runs_due` (scope, status, tenant_id, next_attempt_at) rebuilt so that no index leads with (scope, tenant_id) alone; `byte8_enqueue` looks a key up with `tenant_id =` (or `IS NULL`) instead of `IS NOT DISTINCT FROM`, which no index bounds: a claim and an enqueue cost the same however many runs a business keeps |
//! | `0018_tenant_stats_bounded` | `runs_by_tenant` rebuilt as (tenant_id, scope, status, updated_at): a tenant's health counters (the service's `dispatch_stats`: open runs, the day's dead letters, the newest finished run) are ranges and single entries of it, not a scan of the tenant's whole history; the retention purge by tenant is served as before |
//! | `0019_replay_purge_by_expiry` (PostgreSQL) | `byte8_replay_record`: a webhook's `jti` recorded, after up to a hundred expired keys are purged oldest first by the expiry index (before, a hash semi-join over two sequential scans of the whole replay cache, a cost that grew with the node's webhook rate); `byte8_enqueue_once` and `byte8_enqueue_bound` record through it, the bound one calling `byte8_enqueue` directly (two functions deep, not three); the service's `ReplayCache::check_and_record` calls it |
//! | `0020_runs_by_tenant_open_and_finished` (PostgreSQL) | `runs_open` rebuilt as (tenant_id, scope, id) of the open runs (was `next_attempt_at`) and `runs_by_tenant` as the finished runs only: a claim (`RunStore::claim_next`, the service's `begin_turn`) and the health tile's count of open runs read the business's open runs by `runs_open` (`runs_by_tenant` cannot serve them any more; on some statistics a claim could still take `runs_due` until `0022`); after `0018` the planner's generic plans could read every run of the tenant through `runs_by_tenant`, the statuses a filter (34–118 ms a claim with 200,000 runs kept, `benches/history_plans.sql`); the retention purge asks a tenant's runs as its open or its finished ones, one index each |
//! | `0021_rate_block_spaced` (PostgreSQL) | `byte8_rate_permits`: a block's third and later permits each at least an interval after the one before, so that a block holds at most two permits for the same moment (a business's requests go one after the other; permits for now beyond two were dropped unused and still counted against its limit) |
//! | `0022_plans_know_a_business_is_one_store` (PostgreSQL) | Functional-dependency statistics on `runs` and `callbacks` (scope, tenant_id): without them the planner took a business and its store for independent, estimated a business's runs at under one row for any scope-led index, and a claim's generic plan could take `runs_due` with the statuses as a filter, reading the business's whole history (42–54 ms a claim with 200,000 runs kept; `RunStore::claim_next` and the service's `begin_turn`); `runs_due` (scope, status, tenant_id, next_attempt_at) rebuilt as `runs_by_status` (status, scope, id), which no plan can read by business with the statuses as a filter (the health tile's count of open runs did, on some of `ANALYZE`'s samples), and `RunStore::counts` asks it one status at a time; `runs_by_increment_id` and `runs_by_ledger_reference` dropped (no statement could use them: the console's search compares `translate(column, …)`), and `runs_leased` (its one reader, `RunStore::release_leases`, reads `runs_by_status`); `callbacks_due` rebuilt as (scope, tenant_id, due_at, run_id) of the undelivered callbacks only (a delivered one leaves it: one index entry fewer a delivery) |
//! | `0023_replay_purge_amortised` (PostgreSQL) | `byte8_replay_record` purges only when the key's `hashtext` is a multiple of sixteen, then up to 1,600 expired keys (`byte8_replay_purge`, by the expiry index as in `0019`): the same capacity, a hundred a record, without a `DELETE` and a function-level `SET` on every webhook (the purge was 0.083 ms of the webhook's 0.499 ms statement at 1,000 tenants); the keys are SHA-256 digests of verified tokens' `jti`s, so one record in sixteen purges |
//! | `0024_rate_permits_one_read` (PostgreSQL) | `byte8_rate_permits` with the idle arguments reads and locks its business's row once (it read the last permit, then tried to insert the row, then read it again under the lock: three statements and a second function a call, 0.13 ms at 1,000 tenants), inserts the row only when it is missing, and decides the idle block from the locked row; the seven-argument form calls it with its own count as the idle block; the permits are the same |
//! | `0025_terminal_callback_when` (PostgreSQL) | `runs_terminal_callback` recreated with `WHEN (NEW.status IN ('synced', 'skipped', 'dead_lettered') AND NEW.tenant_id IS NOT NULL)`: a claim (queued to running) queues no after-trigger event and calls no PL/pgSQL (the trigger was 7 % of the client backends' CPU at 1,000 tenants); the function is unchanged |
//! | `0026_callbacks_undelivered_dropped` (PostgreSQL) | `callbacks_undelivered` (every business's undelivered callbacks by `due_at`) dropped: the service's look for due businesses reads `callbacks_due` one business at a time, and custom plans (values known) took the dropped index with the business as a filter, reading every undelivered callback of a store that is down for each other business's turn; a callback written or delivered writes one index entry fewer |
//! | `0028_webhook_begins_the_turn` (PostgreSQL) | `byte8_begin_turn` (the service's turn: its dispatch lease, its claim, whether a callback is due, its first rate permits) as a PL/pgSQL function that keeps its generic plan, and `byte8_enqueue_turn` (the webhook's `byte8_enqueue_bound`, then that turn when a run was queued): the webhook route of a process with a worker waiting begins the worker's turn in the statement that queues the run, a round trip and a transaction fewer an event; no table changes (0027 is SQLite's) |
//! | `0029_webhook_run_inserted_claimed` (PostgreSQL) | `byte8_enqueue_turn` takes the business's dispatch lease first and, when it has it and the business has no run queued or running, has `byte8_enqueue` insert the webhook's run already claimed (running, claim 1, leased until the turn's run lease): the row is written once, not inserted queued and then updated by the claim (a second version through seven indexes); otherwise the run is queued and `byte8_begin_turn` runs as before, and a webhook that queues nothing gives back a lease it took. `byte8_enqueue` and `byte8_enqueue_bound` take the claim's lease as a last argument, `NULL` by default; no table changes |
//! | `0030_rate_window_kept_to_its_span` (PostgreSQL) | `byte8_rate_permits` keeps in `rate_limits.recent` only the permits less than a span before the newest (the others can hold no later permit back), as `Window::reserve` does in process: a limit set far above the traffic no longer keeps every permit ever given and rewrites them all at each request; the permits given are unchanged; no table changes |
//! | `0031_replay_purge_never_scans_the_cache` (PostgreSQL) | `byte8_replay_purge` plans without sequential scans (`enable_seqscan = off` on the function): the generic plan PL/pgSQL keeps for a session, made while the replay cache was small, stayed two sequential scans of the whole cache as it grew (up to 14,441 rows read to delete none at 1,000 tenants); no table changes |
//! | `0032_wide_columns_compressed_with_lz4` (PostgreSQL) | the wide values a run writes (`runs.raw`, `runs.policy`, `runs.outcome`, `attempts.snapshot`, `attempts.message`, `exchanges.request_body`, `exchanges.response_body`, `exchanges.error`) compressed with lz4 instead of pglz, PostgreSQL's default, where the server has lz4 (pglz was 4.4 % of a back-fill's backend CPU); values stored before stay as they are, and both methods read back alike; a server without lz4 keeps pglz and the migration says so in a notice; no table is rewritten |
//!
//! (`0007_console` and `0009` belong to the service: the console's tables, the shared rate
//! limiter's window and the dispatch indexes.)
//!
//! # Exactly-once writes
//!
//! Before a create, the engine durably records its **intent** in the cross-reference
//! ([`XrefState::Intent`], with the business reference it will post); after the ledger answers it
//! records the ledger id ([`XrefState::Done`]). A run that finds an intent without a result (a
//! crash, an answer whose outcome was unknown) looks the record up by reference in the ledger
//! before posting again.
//!
//! The intent is written at once ([`XrefStore::put_xref`], or for an invoice
//! [`XrefStore::get_or_put_intent`] with the read of its entry): it must be durable before the
//! request. The done record of a single run is held by the engine until the run ends and
//! written by [`RunStore::finish`] with the run's status, in the same transaction
//! ([`RunResult::xrefs`]): one round trip fewer per record. A store implementing
//! [`RunStore`] must write those entries (see [`RunStore::finish`] for a lost claim).

pub mod audit;
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod crypto;
pub mod memory;
#[cfg(feature = "postgres")]
#[cfg_attr(docsrs, doc(cfg(feature = "postgres")))]
pub mod postgres;
pub mod retention;
#[cfg(feature = "sqlite")]
#[cfg_attr(docsrs, doc(cfg(feature = "sqlite")))]
pub mod sqlite;

use std::{collections::BTreeMap, fmt, sync::Arc};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{
    auth::{RefreshGuard, TokenSet, TokenStore},
    error::{ErrorCode, Result},
    outcome::Outcome,
    reference::ReferenceData,
};

/// A run's id.
pub type RunId = i64;

/// Where a run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    /// Waiting to be processed (possibly not before `next_attempt_at`).
    Queued,
    /// Claimed by a worker, under a lease.
    Running,
    /// Reached the ledger.
    Synced,
    /// Skipped by policy.
    Skipped,
    /// Failed for good, kept with its raw event and every attempt until requeued.
    DeadLettered,
}

impl RunStatus {
    /// Every status, in the order of the enum (a store that asks per status, as PostgreSQL's
    /// `RunStore::counts` does, asks these).
    pub const ALL: [Self; 5] = [Self::Queued, Self::Running, Self::Synced, Self::Skipped, Self::DeadLettered];

    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Synced => "synced",
            Self::Skipped => "skipped",
            Self::DeadLettered => "dead_lettered",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }

    /// True when nothing more will happen to the run unless it is requeued.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Synced | Self::Skipped | Self::DeadLettered)
    }
}

/// How an event's key dedupes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedupe {
    /// For good: documents.
    Permanent,
    /// Only while a run with the key is queued: upserts.
    WhileQueued,
}

/// A run to enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRun {
    /// The business (or binding) the run belongs to.
    pub scope: String,
    /// The service tenant (paired Magento store) whose webhook queued it; `None` for the
    /// `sync` command's runs. Only that tenant's worker claims it, and only that tenant is
    /// told its outcome: after a business is paired to another tenant, the old tenant's runs
    /// are never fetched from, nor reported to, the new one's store.
    pub tenant_id: Option<String>,
    /// The event's idempotency key (a synthetic one for a line that could not be read).
    pub idempotency_key: String,
    /// The event name as given, if any.
    pub event: Option<String>,
    /// The Magento entity id, if any.
    pub magento_entity_id: Option<u64>,
    /// The raw event text, kept for dead letters and replays.
    pub raw: String,
    /// A hash of the raw event: an upsert delivered again with exactly the same content is a
    /// duplicate even after its run finished (a replayed file never re-applies an old snapshot).
    pub fingerprint: String,
    /// The policy snapshot the run uses (byte8-spec.md 1.4), as JSON.
    pub policy: Option<String>,
    /// When it was received.
    pub received_at: DateTime<Utc>,
}

#[cfg(any(feature = "sqlite", feature = "postgres"))]
impl NewRun {
    /// The run a store that inserts `self` already claimed, as id `id`, has written, as
    /// [`RunStore::claim_run`] would answer it: running, claim 1,
    /// no attempt yet, received and updated at `received_at` to the microsecond (what the bundled
    /// stores keep).
    pub(crate) fn into_claimed(self, id: RunId) -> Run {
        let at = chrono::SubsecRound::trunc_subsecs(self.received_at, 6);
        Run {
            id,
            scope: self.scope,
            tenant_id: self.tenant_id,
            claim: 1,
            idempotency_key: self.idempotency_key,
            event: self.event,
            // Kept as SQL's BIGINT: one beyond it is stored as none.
            magento_entity_id: self.magento_entity_id.filter(|v| i64::try_from(*v).is_ok()),
            raw: self.raw,
            policy: self.policy,
            status: RunStatus::Running,
            attempts: 0,
            attempts_before_retry: 0,
            next_attempt_at: None,
            outcome: None,
            created_at: at,
            updated_at: at,
        }
    }
}

/// A run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    /// The run's id, unique in the store.
    pub id: RunId,
    /// The business (or binding) the run belongs to: the engine's scope.
    pub scope: String,
    /// The tenant that queued it (see [`NewRun::tenant_id`]).
    pub tenant_id: Option<String>,
    /// The claim generation: counts the times the run was claimed. [`RunStore::finish`] is
    /// fenced by it, so that a worker whose lease lapsed, and whose run another worker claimed
    /// since, cannot overwrite that worker's result.
    pub claim: i64,
    /// The event's idempotency key: one run per key and scope.
    pub idempotency_key: String,
    /// Event name.
    pub event: Option<String>,
    /// Magento entity id.
    pub magento_entity_id: Option<u64>,
    /// Raw event.
    pub raw: String,
    /// Policy snapshot.
    pub policy: Option<String>,
    /// Where the run stands: queued, running, synced, skipped or dead-lettered.
    pub status: RunStatus,
    /// Attempts made over the run's whole life: the last attempt's number. An operator's retry
    /// ([`RunStore::requeue`], [`RunStore::requeue_run`]) does not reset it, so the next
    /// attempt of a retried run is numbered after the earlier ones (attempt 3 after two failed
    /// attempts and a retry).
    pub attempts: u32,
    /// The attempts made before the run was last put back in line by a retry (0 when it never
    /// was): the engine's retry ladder and `max_attempts` count only the attempts since
    /// (`attempts − attempts_before_retry`), so a retried run gets a fresh set of attempts and
    /// its backoff starts again at the first step.
    pub attempts_before_retry: u32,
    /// Not before.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// The last outcome (terminal, or the last failed attempt of a queued run).
    pub outcome: Option<Outcome>,
    /// When the event was received.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

/// One attempt of a run, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AttemptRecord {
    /// The attempt number (1-based), counted over the run's whole life: it continues across
    /// retries (see [`Run::attempts`]).
    pub number: u32,
    /// When the attempt started.
    pub started_at: DateTime<Utc>,
    /// When the attempt ended.
    pub finished_at: DateTime<Utc>,
    /// `synced`, `skipped`, `failed`, `retry`.
    pub result: String,
    /// The error class, when it failed.
    pub error_code: Option<ErrorCode>,
    /// The message.
    pub message: Option<String>,
    /// The ledger id, when it synced.
    pub ledger_id: Option<String>,
    /// Every request the provider sent to the ledger during the attempt, with its answer, oldest
    /// first: secrets and tokens redacted, headers never kept, bodies cut (see
    /// [`crate::http::audit`]). Empty for an attempt that never reached the provider (an event
    /// that could not be read, a policy skip decided without a request) and for attempts stored
    /// before migration `0008_run_audit`.
    #[serde(default)]
    pub exchanges: Vec<crate::http::audit::ExchangeRecord>,
    /// Where `exchanges` sit in their recording ([`crate::http::audit`]'s "Recordings"): the
    /// runs of one batch point at the same recording, whose exchanges a store keeps once. `None`
    /// with no exchange; a store gives an attempt recorded with exchanges but without a
    /// recording one of its own.
    #[serde(default)]
    pub recording: Option<crate::http::audit::RecordingRef>,
    /// The canonical entity the attempt worked on, as JSON (secret-named fields redacted): the
    /// event's own, or the one fetched from Magento. A run's page compares an upsert's snapshot
    /// with the previous run's ([`crate::store::audit::snapshot_diff`]). `None` when the attempt
    /// ended before it had one.
    #[serde(default)]
    pub snapshot: Option<crate::http::audit::Snapshot>,
}

/// What enqueueing did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueued {
    /// A new run.
    New(RunId),
    /// The key was seen: no new run (documents), or a run that already started or finished.
    Duplicate {
        /// The existing run.
        id: RunId,
        /// Its status.
        status: RunStatus,
    },
    /// A queued upsert took the newer event.
    Collapsed(RunId),
}

/// What a webhook's enqueue did ([`postgres::PostgresStore::enqueue_unless_replayed`], the
/// service's `DispatchStore::enqueue_once`): the token's `jti` recorded with its run, or nothing
/// written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnqueuedOnce {
    /// The `jti` was recorded and the run queued as [`RunStore::enqueue`] does.
    Queued(Enqueued),
    /// The `jti` was already recorded and is live: a replayed token, nothing queued.
    Replay,
    /// The tenant's binding is no longer the version the token was verified against (revoked,
    /// re-paired, its policy changed), or no longer active: nothing written. The caller reads
    /// the binding again and verifies the token against it.
    StaleBinding,
}

impl Enqueued {
    /// The run concerned.
    pub fn run_id(self) -> RunId {
        match self {
            Self::New(id) | Self::Collapsed(id) | Self::Duplicate { id, .. } => id,
        }
    }
}

/// How a processing attempt ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunResult {
    /// The new status: a terminal one, or `Queued` to try again at `next_attempt_at`.
    pub status: RunStatus,
    /// The outcome of the attempt.
    pub outcome: Outcome,
    /// The attempt.
    pub attempt: AttemptRecord,
    /// When to try again (with `Queued`).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// Cross-reference entries the attempt learnt and held back for the run's end: the engine's
    /// *done* records (a ledger id known after the ledger answered, an invoice's outstanding
    /// after a payment), keyed by kind and key in the run's scope. [`RunStore::finish`] writes
    /// them in the same transaction as the run's end, whatever the status (an attempt that posted
    /// an invoice and then failed a later step still records the invoice), and, unlike the rest
    /// of the result, even when the claim no longer holds (see there). Empty when the attempt
    /// wrote its entries itself (`XrefStore::put_xref`), as the batched path and every caller
    /// outside the engine do. One entry per (kind, key); should a caller give two, the last
    /// one counts.
    pub xrefs: Vec<(XrefKind, String, Xref)>,
}

/// What [`RunStore::claim_next`] claimed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Claimed {
    /// The runs claimed, oldest first.
    pub runs: Vec<Run>,
    /// Whether more runs of the same scope and tenant were due when these were claimed (a hint:
    /// see [`RunStore::claim_next`]).
    pub more: bool,
}

/// The run queue, dead letters and audit trail.
#[async_trait]
pub trait RunStore: fmt::Debug + Send + Sync {
    /// Enqueues a run with the given deduplication, among the runs of the same scope and tenant
    /// (two tenants' `invoice.created:5` are two Magento stores' invoices).
    async fn enqueue(&self, run: NewRun, dedupe: Dedupe) -> Result<Enqueued>;

    /// [`enqueue`](Self::enqueue) for a caller that processes what it queues at once (the
    /// engine's `sync_line`, what `byte8-ledger sync` does for each line): a **new** run is
    /// also claimed, as [`claim_run`](Self::claim_run)`(id, run.received_at, lease_until)`
    /// would leave it (running, [`Run::claim`] 1, leased until `lease_until`), and answered as
    /// the second value. A run collapsed into or found as a duplicate is not claimed (`None`):
    /// the caller decides what to do with it, as after `enqueue`.
    ///
    /// The default is those two calls. The bundled SQLite and PostgreSQL stores write the new
    /// row once, already claimed: one statement and one row version fewer a new event, and no
    /// moment in which another process could claim the run before its caller (on PostgreSQL,
    /// the service's workers). A claimed run is never claimed by anyone else before its lease
    /// ends, so the caller's claim is the same whichever way it was taken.
    async fn enqueue_claimed(
        &self,
        run: NewRun,
        dedupe: Dedupe,
        lease_until: DateTime<Utc>,
    ) -> Result<(Enqueued, Option<Run>)> {
        let at = run.received_at;
        let enqueued = self.enqueue(run, dedupe).await?;
        let claimed = match enqueued {
            Enqueued::New(id) => self.claim_run(id, at, lease_until).await?,
            _ => None,
        };
        Ok((enqueued, claimed))
    }

    /// Claims up to `limit` runs of `scope` queued without a tenant (the `sync` command's and
    /// an embedding host's) that are due: [`claim_for`](Self::claim_for) with no tenant.
    async fn claim(
        &self,
        scope: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Run>> {
        self.claim_for(scope, None, now, lease_until, limit).await
    }

    /// Claims up to `limit` runs of `scope` queued by `tenant` (`None`: without a tenant) that
    /// are due (queued with `next_attempt_at ≤ now`, or running with an expired lease), marking
    /// them running until `lease_until` and incrementing their [`Run::claim`]. Safe under
    /// concurrent claimers: a run is claimed by one of them. Another tenant's runs of the same
    /// business are never claimed.
    async fn claim_for(
        &self,
        scope: &str,
        tenant: Option<&str>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Run>>;

    /// [`claim_for`](Self::claim_for), also saying whether more of the tenant's runs are due
    /// after it ([`Claimed::more`]), so that a worker draining a business knows it is drained
    /// without a further claim that finds nothing (one statement an event fewer for a business
    /// with one run waiting). `limit` 0 claims nothing and only says whether any is due.
    ///
    /// `more` is a hint taken with the claim: a run queued a moment later is not in it (whoever
    /// queues it announces it), and a run another claimer holds locked is not counted. The
    /// default (a store that cannot tell) is `claim_for`, with `more` true whenever it claimed
    /// `limit` runs (the caller claims again to find out); the bundled stores tell exactly.
    async fn claim_next(
        &self,
        scope: &str,
        tenant: Option<&str>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Claimed> {
        let runs = if limit == 0 { Vec::new() } else { self.claim_for(scope, tenant, now, lease_until, limit).await? };
        let more = runs.len() == limit;
        Ok(Claimed { runs, more })
    }

    /// Claims one run by id if it is due (the engine processing an event it just enqueued).
    async fn claim_run(&self, id: RunId, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<Option<Run>>;

    /// Makes every running run of `scope` due again (its worker is known to be gone: the single
    /// `byte8-ledger sync` process holding the state file's lock after a crash). Returns how many.
    async fn release_leases(&self, scope: &str, now: DateTime<Utc>) -> Result<u64>;

    /// Records the end of an attempt of the run claimed with generation `claim` (the
    /// [`Run::claim`] its claim returned): the run's new status and outcome, the attempt with its
    /// exchanges, and the cross-reference entries the attempt held back ([`RunResult::xrefs`],
    /// written as [`XrefStore::put_xref`] would, in the run's scope), all in one transaction
    /// (on PostgreSQL one statement): either all of it is written or none of it.
    ///
    /// **The cross-reference entries are written whatever the status** (`Synced`, `Skipped`,
    /// `Queued` for a retry, `DeadLettered`): they record what the ledger holds, not how the
    /// attempt ended.
    ///
    /// **A lost claim.** When the run is no longer running under `claim` (its lease lapsed and
    /// another worker claimed it since, or it was finished or released), the run, the attempt
    /// and its exchanges are not written: the later claimer's result stands. The entries of
    /// `result.xrefs` are still written, but only where the stored entry is missing or an intent
    /// (an entry already *done* is kept as it is), in the same transaction, and then
    /// [`claim_lost`] is answered. Why: the documents the stalled attempt posted exist in the
    /// ledger whoever holds the run now; dropping their records would leave only intents (a
    /// look-up by reference on the next attempt) or, for a contact created first, nothing; while
    /// a *done* entry stored since was written by the worker that took the run over, which knows
    /// at least as much (it found the same record by reference, or recorded a later step such as
    /// an allocation's effect on the invoice's outstanding), so the stale attempt never
    /// overwrites it. Nothing is written for a run id the store does not know.
    ///
    /// # Errors
    /// [`claim_lost`] when the run is no longer running under that claim (only the
    /// cross-reference entries written, as above). Store failures (nothing written: the held
    /// entries are lost with the attempt, and the intents written before each ledger request
    /// make the next attempt look the records up by reference).
    async fn finish(&self, id: RunId, claim: i64, result: RunResult) -> Result<()>;

    /// Puts a dead-lettered (or queued) run back in line, due now. False when there is none.
    /// Its attempt count is kept (the next attempt's number continues it) and
    /// [`Run::attempts_before_retry`] takes it, so the run gets a fresh set of attempts.
    async fn requeue(&self, scope: &str, idempotency_key: &str, now: DateTime<Utc>) -> Result<bool>;

    /// A run by id.
    async fn get(&self, id: RunId) -> Result<Option<Run>>;

    /// The latest run of a key.
    async fn find_by_key(&self, scope: &str, idempotency_key: &str) -> Result<Option<Run>>;

    /// The attempts of a run, in order.
    async fn attempts(&self, id: RunId) -> Result<Vec<AttemptRecord>>;

    /// Runs of a scope by status.
    async fn counts(&self, scope: &str) -> Result<BTreeMap<RunStatus, u64>>;

    /// Dead-lettered runs of a scope, newest first.
    async fn dead_letters(&self, scope: &str, limit: usize) -> Result<Vec<Run>>;

    /// Every run of a scope with `status`, oldest first (reconciliation reads the synced ones:
    /// [`crate::reconcile`]).
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] by default (a store that cannot list its runs).
    async fn runs_with_status(&self, scope: &str, status: RunStatus) -> Result<Vec<Run>> {
        let _ = (scope, status);
        Err(crate::Error::Unsupported { operation: "listing runs by status".into(), provider: "store" })
    }

    /// Runs of a scope waiting in line after a failed attempt (retryable failures, deferrals such
    /// as a spent daily budget), soonest first, with the outcome that says why. The default lists
    /// none (a store that cannot list them).
    async fn waiting(&self, scope: &str, limit: usize) -> Result<Vec<Run>> {
        let _ = (scope, limit);
        Ok(Vec::new())
    }

    /// One page of the runs table: the runs matching `query`, newest first, and how many match
    /// in all (see [`audit`]).
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] by default (a store that cannot query its runs).
    async fn query_runs(&self, query: &audit::RunQuery) -> Result<audit::RunPage> {
        let _ = query;
        Err(crate::Error::Unsupported { operation: "querying runs".into(), provider: "store" })
    }

    /// Puts run `id` back in line, due now, when it is dead-lettered or queued (a failed attempt
    /// waiting for its retry time): the console's "Retry". As with [`requeue`](Self::requeue),
    /// its attempt numbers continue and its retries start afresh; its earlier attempts stay in
    /// the audit trail. False when
    /// there is no such run or it is running, synced or skipped.
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] by default.
    async fn requeue_run(&self, id: RunId, now: DateTime<Utc>) -> Result<bool> {
        let _ = (id, now);
        Err(crate::Error::Unsupported { operation: "requeueing a run by id".into(), provider: "store" })
    }

    /// Puts every dead-lettered run of `scope` back in line, due now (`tenant`: only the runs
    /// that tenant queued; `None`: every tenant's and the untenanted ones). Answers how many.
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] by default.
    async fn requeue_dead_letters(&self, scope: &str, tenant: Option<&str>, now: DateTime<Utc>) -> Result<u64> {
        let _ = (scope, tenant, now);
        Err(crate::Error::Unsupported { operation: "requeueing dead letters".into(), provider: "store" })
    }

    /// The ledger requests recorded for `scope`'s runs at or after `since` (their exchanges,
    /// [`AttemptRecord::exchanges`]), each counted once however many runs of a batch it
    /// carried, and how many of them the ledger refused with 429: the console's "rate limit's
    /// use in the last hour".
    ///
    /// # Errors
    /// [`crate::Error::Unsupported`] by default (a store that keeps no exchanges).
    async fn ledger_requests(&self, scope: &str, since: DateTime<Utc>) -> Result<audit::RequestCount> {
        let _ = (scope, since);
        Err(crate::Error::Unsupported { operation: "counting ledger requests".into(), provider: "store" })
    }

    /// Keeps the ledger exchanges business `scope` made outside any run (the reference data a
    /// worker loads for a tenant, an operator's refresh: [`audit::recorded_outside_runs`]), so
    /// that [`ledger_requests`](Self::ledger_requests) counts them too; no run's page shows
    /// them. Such exchanges older than [`audit::LOOSE_EXCHANGES_KEPT`] at `now` are removed as
    /// new ones come. The default keeps nothing.
    ///
    /// # Errors
    /// Store failures.
    async fn record_exchanges(
        &self,
        scope: &str,
        recording: &crate::http::audit::RecordingRef,
        exchanges: &[crate::http::audit::ExchangeRecord],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let _ = (scope, recording, exchanges, now);
        Ok(())
    }
}

/// The entries of [`RunResult::xrefs`] as a store writes them: one per (kind, key), the last one
/// given winning, sorted by kind and key (so that two finishes touching the same entries lock
/// them in the same order).
pub(crate) fn held_xrefs(xrefs: &[(XrefKind, String, Xref)]) -> BTreeMap<(XrefKind, &str), &Xref> {
    xrefs.iter().map(|(kind, key, x)| ((*kind, key.as_str()), x)).collect()
}

/// The least string above every string that starts with `prefix`, in the order of UTF-8's bytes
/// (Rust's `str` order, PostgreSQL's `COLLATE "C"` of the `xrefs` columns, SQLite's `BINARY`), or
/// `None` when no string is (an empty `prefix`, or one of U+10FFFF only). A key starts with
/// `prefix` exactly when `prefix <= key < bound`: the last character that has a successor is
/// replaced by it and what follows it dropped, and no character lies between one and its
/// successor, so a key in that range shares every character of `prefix`. That range is what an
/// index on the key bounds, where `left(key, n) = prefix` is a filter read over every key of the
/// business and kind (with 20,000 contact keys, 19,998 read and dropped to list one customer's
/// two: `EXPLAIN ANALYZE` of the old statement, tests/core/postgres.rs).
#[cfg(any(test, feature = "sqlite", feature = "postgres"))]
pub(crate) fn prefix_upper_bound(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        // The next scalar value: the surrogates (U+D800..U+DFFF) are skipped, U+10FFFF has none.
        if let Some(next) = (u32::from(last) + 1..=0x10_FFFF).find_map(char::from_u32) {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// The error of [`RunStore::finish`] with a claim that no longer holds.
pub fn claim_lost(id: RunId, claim: i64) -> crate::error::Error {
    crate::error::Error::database(
        format!(
            "run {id}: this worker's claim (generation {claim}) no longer holds (its lease lapsed and another worker \
             claimed the run, or the run was released): this attempt's result is discarded"
        ),
        false,
        None,
    )
}

/// The kind of a cross-reference entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XrefKind {
    /// A contact of a (customer, currency) or the fallback: key `customer:5:GBP`.
    Contact,
    /// An item: key = SKU.
    Item,
    /// An invoice: key = Magento invoice id.
    Invoice,
    /// A credit note: key = Magento credit memo id.
    CreditNote,
    /// A payment: key = Magento invoice id.
    Payment,
    /// A credit-note allocation: key = Magento credit memo id.
    Allocation,
    /// A stock movement: key = `{sku}:{hash}`.
    StockMovement,
    /// A credit note's cash refund: key = Magento credit memo id.
    Refund,
}

impl XrefKind {
    /// The stored spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Contact => "contact",
            Self::Item => "item",
            Self::Invoice => "invoice",
            Self::CreditNote => "credit_note",
            Self::Payment => "payment",
            Self::Allocation => "allocation",
            Self::StockMovement => "stock_movement",
            Self::Refund => "refund",
        }
    }

    /// Parses the stored spelling.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Contact,
            Self::Item,
            Self::Invoice,
            Self::CreditNote,
            Self::Payment,
            Self::Allocation,
            Self::StockMovement,
            Self::Refund,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// Intent recorded or result known.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum XrefState {
    /// The create is about to be (or was) sent; its result is not known here.
    Intent,
    /// The ledger record exists with `ledger_id`.
    Done,
}

/// A cross-reference entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Xref {
    /// Intent or done.
    pub state: XrefState,
    /// The ledger id (with `Done`).
    pub ledger_id: Option<String>,
    /// The business reference posted (what a look-up searches for).
    pub reference: Option<String>,
    /// Facts later events need (an invoice's contact, total, outstanding, currency, addresses).
    pub meta: serde_json::Value,
    /// Last change.
    pub updated_at: DateTime<Utc>,
}

impl Xref {
    /// An intent to create a record with `reference`.
    pub fn intent(reference: Option<String>, meta: serde_json::Value, now: DateTime<Utc>) -> Self {
        Self { state: XrefState::Intent, ledger_id: None, reference, meta, updated_at: now }
    }

    /// A record known to exist.
    pub fn done(ledger_id: String, reference: Option<String>, meta: serde_json::Value, now: DateTime<Utc>) -> Self {
        Self { state: XrefState::Done, ledger_id: Some(ledger_id), reference, meta, updated_at: now }
    }

    /// The ledger id when done.
    pub fn done_id(&self) -> Option<&str> {
        (self.state == XrefState::Done).then_some(self.ledger_id.as_deref()).flatten()
    }
}

/// The cross-reference between Magento entities and ledger records, scoped per business.
#[async_trait]
pub trait XrefStore: fmt::Debug + Send + Sync {
    /// An entry.
    async fn get_xref(&self, scope: &str, kind: XrefKind, key: &str) -> Result<Option<Xref>>;

    /// Inserts or replaces an entry (durably, before returning).
    async fn put_xref(&self, scope: &str, kind: XrefKind, key: &str, xref: &Xref) -> Result<()>;

    /// Entries of a kind whose key starts with `prefix`, in the order of their keys. The SQL
    /// stores read them as a range of their primary key, however many keys the business has.
    async fn list_xrefs(&self, scope: &str, kind: XrefKind, prefix: &str) -> Result<Vec<(String, Xref)>>;

    /// The entries among `keys` (each `(kind, key)` at most once in the answer, in no particular
    /// order; a key without an entry is left out). What the engine reads ahead of a document's
    /// steps (its contact's and its items' entries): one round trip on PostgreSQL, which
    /// overrides this default (one read per key).
    async fn get_xrefs(&self, scope: &str, keys: &[(XrefKind, &str)]) -> Result<Vec<(XrefKind, String, Xref)>> {
        let mut out = Vec::with_capacity(keys.len());
        for (i, (kind, key)) in keys.iter().enumerate() {
            if keys[..i].contains(&(*kind, *key)) {
                continue;
            }
            if let Some(x) = self.get_xref(scope, *kind, key).await? {
                out.push((*kind, (*key).to_owned(), x));
            }
        }
        Ok(out)
    }

    /// The entry of `(kind, key)` when there is one, left as it is; otherwise stores `intent`
    /// (durably, before returning) and answers `None`. The engine's read of a document's entry
    /// and the intent that guards its write, in one call: one round trip on PostgreSQL, which
    /// overrides this default (a read, then a write when the read found nothing). The engine
    /// calls it under its run's claim, so no other writer of the key races it; a store that
    /// overrides it must still answer an entry stored by another writer meanwhile rather than
    /// replace it.
    async fn get_or_put_intent(&self, scope: &str, kind: XrefKind, key: &str, intent: &Xref) -> Result<Option<Xref>> {
        if let Some(existing) = self.get_xref(scope, kind, key).await? {
            return Ok(Some(existing));
        }
        self.put_xref(scope, kind, key, intent).await?;
        Ok(None)
    }

    /// [`get_or_put_intent`](Self::get_or_put_intent) of `(kind, key)` and
    /// [`get_xrefs`](Self::get_xrefs) of `ahead`, answered together: the engine's read of an
    /// invoice's entry with the intent that guards its post, and its read ahead of the buyer's
    /// contact and the lines' items. One round trip on PostgreSQL, which overrides this default
    /// (the two calls); there `(kind, key)` among `ahead` is answered as it was before the
    /// intent, so a caller leaves it out.
    async fn get_or_put_intent_reading(
        &self,
        scope: &str,
        kind: XrefKind,
        key: &str,
        intent: &Xref,
        ahead: &[(XrefKind, &str)],
    ) -> Result<(Option<Xref>, Vec<(XrefKind, String, Xref)>)> {
        let found = self.get_or_put_intent(scope, kind, key, intent).await?;
        let read = self.get_xrefs(scope, ahead).await?;
        Ok((found, read))
    }
}

/// Which provider a connection is to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ProviderKind {
    /// Sage Business Cloud Accounting (`sage_accounting`).
    #[serde(rename = "sage_accounting")]
    Sage,
    /// Xero Accounting (`xero`).
    #[serde(rename = "xero")]
    Xero,
}

impl ProviderKind {
    /// The stored spelling (the provider's name in outcomes).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Sage => "sage_accounting",
            Self::Xero => "xero",
        }
    }

    /// Parses the stored spelling (`sage` and `xero` as short forms).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sage_accounting" | "sage" => Some(Self::Sage),
            "xero" => Some(Self::Xero),
            _ => None,
        }
    }
}

/// A stored connection to a ledger business.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Connection {
    /// The business id (the scope of its runs and cross-references): Sage's business id, Xero's
    /// tenant id.
    pub scope: String,
    /// The provider kind's stored spelling (`sage_accounting`, `xero`; see [`ProviderKind`]).
    pub provider: String,
    /// The API root.
    pub base_url: String,
    /// The token endpoint.
    pub token_url: String,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// The organisation pinned for the provider's tenant header (Xero's `xero-tenant-id`).
    #[serde(default)]
    pub tenant_id: Option<String>,
    /// Where the provider lists the organisations a token reaches (Xero's connections endpoint).
    #[serde(default)]
    pub connections_url: Option<String>,
}

impl Connection {
    /// The provider kind, when the stored spelling is known.
    pub fn kind(&self) -> Option<ProviderKind> {
        ProviderKind::parse(&self.provider)
    }
}

/// Connections, their tokens (encrypted at rest by durable stores) and their reference cache.
#[async_trait]
pub trait ConnectionStore: fmt::Debug + Send + Sync {
    /// Stores a connection (replacing one with the same scope).
    async fn save_connection(&self, connection: &Connection) -> Result<()>;

    /// A connection by scope.
    async fn connection(&self, scope: &str) -> Result<Option<Connection>>;

    /// Every connection.
    async fn connections(&self) -> Result<Vec<Connection>>;

    /// Stores a connection's tokens.
    async fn save_tokens(&self, scope: &str, tokens: &TokenSet) -> Result<()>;

    /// A connection's tokens.
    async fn tokens(&self, scope: &str) -> Result<Option<TokenSet>>;

    /// Deletes a connection's tokens (the connection and its reference cache stay): nothing can
    /// call the ledger for `scope` until `connect` stores new ones. Answers whether there were
    /// any.
    async fn forget_tokens(&self, scope: &str) -> Result<bool>;

    /// Serialises token refreshes of a scope across processes (default: nothing to do).
    async fn lock_tokens(&self, _scope: &str) -> Result<RefreshGuard> {
        Ok(RefreshGuard::none())
    }

    /// Caches a connection's reference data.
    async fn save_reference(&self, scope: &str, reference: &ReferenceData) -> Result<()>;

    /// A connection's cached reference data.
    async fn reference(&self, scope: &str) -> Result<Option<ReferenceData>>;
}

/// Everything the engine and the command need.
pub trait Store: RunStore + XrefStore + ConnectionStore {}

impl<T: RunStore + XrefStore + ConnectionStore + ?Sized> Store for T {}

/// A [`TokenStore`] over a [`ConnectionStore`] for one scope.
#[derive(Debug, Clone)]
pub struct ScopedTokenStore {
    store: Arc<dyn ConnectionStoreDyn>,
    scope: String,
}

/// Object-safe alias used by [`ScopedTokenStore`].
pub trait ConnectionStoreDyn: ConnectionStore {}
impl<T: ConnectionStore + ?Sized> ConnectionStoreDyn for T {}

impl ScopedTokenStore {
    /// The token store of `scope` in `store`.
    pub fn new(store: Arc<dyn ConnectionStoreDyn>, scope: impl Into<String>) -> Self {
        Self { store, scope: scope.into() }
    }
}

#[async_trait]
impl TokenStore for ScopedTokenStore {
    async fn load(&self) -> Result<Option<TokenSet>> {
        self.store.tokens(&self.scope).await
    }

    async fn save(&self, tokens: &TokenSet) -> Result<()> {
        self.store.save_tokens(&self.scope, tokens).await
    }

    async fn lock_refresh(&self) -> Result<RefreshGuard> {
        self.store.lock_tokens(&self.scope).await
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::prefix_upper_bound;

    /// Characters at the edges the bound must get right: ASCII, the separator and its successor,
    /// the last before the surrogates and the first after, two- and three-byte ones, the last
    /// scalar value.
    fn edgy() -> impl Strategy<Value = String> {
        proptest::collection::vec(
            proptest::sample::select(vec![
                'a',
                'b',
                ':',
                ';',
                '\u{7f}',
                'é',
                '\u{d7ff}',
                '\u{e000}',
                '\u{10fffe}',
                '\u{10ffff}',
            ]),
            0..5,
        )
        .prop_map(|chars| chars.into_iter().collect())
    }

    proptest! {
        /// The range [prefix, bound) holds exactly the strings that start with the prefix (the
        /// model: `str::starts_with`), in `str`'s order, the order of UTF-8's bytes.
        #[test]
        fn the_range_holds_exactly_the_keys_with_the_prefix(prefix in edgy(), rest in edgy(), other in edgy()) {
            let bound = prefix_upper_bound(&prefix);
            for key in [format!("{prefix}{rest}"), other.clone(), format!("{other}{prefix}")] {
                let in_range = key.as_str() >= prefix.as_str() && bound.as_deref().is_none_or(|b| key.as_str() < b);
                prop_assert_eq!(in_range, key.starts_with(&prefix), "key {:?}, prefix {:?}, bound {:?}", key, prefix, bound);
            }
        }
    }

    /// `RunStatus::ALL` holds every status once: a new variant fails to compile here until it is
    /// given its place, and the places must be those of `ALL`.
    #[test]
    fn all_statuses_are_listed() {
        use super::RunStatus;
        let place = |s: RunStatus| match s {
            RunStatus::Queued => 0,
            RunStatus::Running => 1,
            RunStatus::Synced => 2,
            RunStatus::Skipped => 3,
            RunStatus::DeadLettered => 4,
        };
        for (i, s) in RunStatus::ALL.into_iter().enumerate() {
            assert_eq!(place(s), i, "{s:?}");
            assert_eq!(RunStatus::parse(s.as_str()), Some(s), "{s:?} round-trips");
        }
    }

    #[test]
    fn the_bound_of_a_prefix() {
        assert_eq!(prefix_upper_bound("customer:5:").as_deref(), Some("customer:5;"));
        assert_eq!(
            prefix_upper_bound("a\u{10ffff}").as_deref(),
            Some("b"),
            "U+10FFFF has no successor: the one before moves"
        );
        assert_eq!(prefix_upper_bound("\u{d7ff}").as_deref(), Some("\u{e000}"), "the surrogates are skipped");
        assert_eq!(prefix_upper_bound(""), None, "every string starts with the empty prefix");
        assert_eq!(prefix_upper_bound("\u{10ffff}\u{10ffff}"), None);
    }
}
