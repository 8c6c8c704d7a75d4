//! The PostgreSQL [`Store`](super::Store) (feature `postgres`): one queue, cross-reference and
//! token store shared by several worker processes, with the same meaning as the SQLite store
//! (the same conformance suite), plus a rate limit shared by those workers
//! ([`SharedRateLimiter`]). Its single statements run on [`Statements`], which keeps a few of
//! the pool's connections between statements (sqlx's pool tests every connection it gets back
//! with a round trip); transactions take theirs from the pool.
//!
//! # PostgreSQL or SQLite
//!
//! - **SQLite** (`sqlite::SqliteStore`, feature `sqlite`) is for **one process**: the
//!   `byte8-ledger sync` command on a state file, a single worker. Nothing to run beside it; the
//!   state is a file (locked by the command), and after a crash the next run takes the queue over
//!   with [`RunStore::release_leases`]. (`sync` on PostgreSQL leaves that call out and waits for
//!   the leases instead, as below.)
//! - **PostgreSQL** ([`PostgresStore`]) is for **several workers** (processes, possibly on several
//!   machines) draining one queue: each run is processed by one worker, enqueueing the same event
//!   twice from two processes makes one run, a rotating refresh token is refreshed by one process
//!   at a time, and the workers together keep under each business's rate limit. A crashed
//!   worker's runs come back when their lease expires; do **not** call
//!   [`RunStore::release_leases`] while other workers are alive (it takes their runs too).
//!
//! # How it stays exactly-once across processes
//!
//! - **Enqueue** runs in one transaction that first takes a transaction-scoped advisory lock
//!   keyed by the run's scope and idempotency key (`pg_advisory_xact_lock(hashtextextended(…))`),
//!   then reads the key's latest run and inserts, collapses or reports a duplicate exactly as the
//!   SQLite store does. Two processes enqueueing the same key therefore run one after the other,
//!   and the second sees the first's committed run (the lock is released after the commit). A
//!   unique index cannot express the rule (an upsert key may have many runs over time, at most
//!   one of them queued, and documents one for good), the lock can. Different keys that hash
//!   alike only wait for each other. The latest run is read `FOR NO KEY UPDATE`, so a claimer
//!   cannot start it while a newer upsert collapses into it (the collapse is also conditional on
//!   the run still being queued).
//! - **Claim** is one statement: a `MATERIALIZED` CTE selects up to `n` due runs in id order
//!   `FOR UPDATE SKIP LOCKED`, and the `UPDATE … RETURNING` marks exactly those running under the
//!   new lease. Rows another claimer has locked are skipped, rows it has already claimed (and
//!   committed) fail the due test when PostgreSQL re-checks them, so no run goes to two
//!   claimers and no claimer waits for another. `claim_run` is a single conditional `UPDATE`.
//! - **Finish** is one statement, fenced by the claim: a data-modifying `WITH` updates the run
//!   only while it is running under the worker's claim (the row lock orders a concurrent claim
//!   before or after), and inserts the attempt and its exchanges (bound as arrays, `unnest`ed)
//!   only from that update's `RETURNING`: a worker whose claim lapsed writes nothing at all.
//! - **Token refreshes** ([`ConnectionStore::lock_tokens`]) hold a session advisory lock
//!   (`pg_advisory_lock(hashtextextended('byte8-ledger:tokens:' || scope, 0))`) on a connection
//!   of their own, kept in the [`RefreshGuard`] and closed when it is dropped, which releases the
//!   lock: even a process that dies mid-refresh releases it, since the server ends its session.
//!   A second process waits (at most [`TOKEN_LOCK_TIMEOUT`] by default, then a retryable error),
//!   then re-reads the tokens the first one saved.
//! - Times are `timestamptz` (microseconds, like the SQLite store's integers); keys are ordered
//!   bytewise (`COLLATE "C"`). The raw event is stored as bytes so that any line can be kept;
//!   other text may not hold NUL characters in PostgreSQL, so a NUL in them is stored as U+FFFD.
//!
//! # One run by its id
//!
//! The statements that find one run by its id and check it is open (`finish`'s fence,
//! `claim_run`'s due test) write that check as a `CASE` on `status`, not as `status = …`. The
//! plain form proves the predicate of the partial index `runs_open` (`status IN ('queued',
//! 'running')`) and leads `runs_by_status`, so the planner may take either with the id as a
//! condition on their later columns: a scan of every entry in the status's range. When
//! the statistics give `runs_open` no open run (a back-fill into a node, between autovacuum's
//! visits), the generic plan a connection keeps took it, or `runs_by_status`, for the run's end,
//! and each end read the whole index, every entry dead since the last vacuum with it (a
//! 10,000-event back-fill: 12–37 pages and up to 0.5 ms of each end; BENCHMARKS.md, round 40).
//! A `CASE` proves nothing and leads no index, so only the primary key serves the id. The test
//! `one_run_found_by_its_id_is_read_by_the_primary_key_whatever_is_open` explains each statement's
//! generic plan on such a node.
//!
//! # The shared rate limit
//!
//! [`SharedRateLimiter`] keeps the state of [`crate::http::limit`]'s [`Window`] rule in the
//! `rate_limits` table, one row per business (the GCRA's `tat` and the permit times of the last
//! `L` requests, `recent`). One statement (the `byte8_rate_permits` function of migration 0011,
//! which locks the business's row) takes the next permits, each
//! `max(now, tat − τ, recent[len − L + 1] + span, recent[len])` as the rule does in process, up
//! to [`MAX_PERMIT_BLOCK`] at once; the process hands them to its next requests, each used within
//! [`PERMIT_VALIDITY`] of its time or dropped, and every sharer's window is lengthened by that
//! validity ([`SharedRateLimiter`] has the proof). Row locking serialises the workers' updates,
//! so the rule's bound (at most the limit in any window shorter than a minute plus the margin,
//! so in any minute) holds across every process, and a saturated business gets 98.8 % of its
//! limit. `now` is the database server's clock, so the workers' own clocks need not agree.
//!
//! # A young database's plans
//!
//! PostgreSQL plans a statement a connection runs again and again once (its generic plan), for
//! the tables as they are then, and keeps that plan until the table is analysed. A connection
//! that began on an empty database plans even `UPDATE runs … WHERE id = $1` as a sequential scan
//! (a table of one page), and keeps it while the table grows: each statement then reads every
//! run. The autovacuum daemon analyses a new table only on its first visit to the database, up
//! to a minute later or more: a back-fill into a new database (`byte8-ledger sync`, 10,000
//! events; BENCHMARKS.md, round 38) spent 5.6 ms of the database's CPU an event when that visit
//! came late, and 1.1 ms when it came early, the run's enqueue reading every run before it. The
//! store therefore has the tables its statements look runs and cross-references up in (`runs`,
//! `attempts`, `xrefs`) analysed (`ANALYZE`, in a task and on a connection of its own: the finish
//! does not wait) when the runs it has finished reach 1,024, and again at each four times as many
//! up to about a million
//! ([`YOUNG_ANALYSE_FROM`], [`YOUNG_ANALYSE_UNTIL`]): six times in a process's life, the last ones
//! long after autovacuum has taken over. An analysis ends every connection's plans on those
//! tables, so each is planned again for the table's size. The runs webhooks queue count too
//! ([`PostgresStore::enqueue_unless_replayed`], [`PostgresStore::count_queued_run`]): a new
//! service node's first catalogue queues runs far faster than its businesses' limits let them
//! finish, and its enqueue's read of a key scanned every run queued before it (up to 3,593 runs,
//! 6 ms a webhook, in the bench's first seconds; BENCHMARKS.md, round 40).

mod retention;
mod statements;

pub use statements::{MAX_KEPT, Statements};

use std::{borrow::Cow, collections::BTreeMap, str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    ConnectOptions as _, Connection as _, Row,
    postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow},
};

use super::{
    AttemptRecord, Claimed, Connection, ConnectionStore, Dedupe, Enqueued, EnqueuedOnce, NewRun, Run, RunId, RunResult,
    RunStatus, RunStore, Xref, XrefKind, XrefState, XrefStore,
    audit::{RequestCount, RunPage, RunQuery, increment_id_of_raw, numbered, read_snapshot, recording_of},
    crypto::{MasterKey, open_tokens, seal_tokens},
};
use crate::{
    auth::{RefreshGuard, TokenSet},
    clock::Clock,
    error::{Error, ErrorCode, Result},
    http::{
        audit::{ExchangeRecord, RecordingRef, Snapshot},
        limit::{RateConfig, RateLimiter, SharedLimit, Window},
    },
    reference::ReferenceData,
};

/// How long [`ConnectionStore::lock_tokens`] waits by default for another process's refresh
/// before giving up with a retryable error ([`PostgresStore::with_token_lock_timeout`]).
pub const TOKEN_LOCK_TIMEOUT: Duration = Duration::from_secs(60);

/// Connections in the pool of [`PostgresStore::connect`] (up to half of them kept between the
/// store's statements by [`Statements`]).
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;

/// The runs finished, or queued by a webhook, through a store at which it first has the growing
/// tables analysed (see
/// [A young database's plans](self#a-young-databases-plans)); again at each four times as many.
pub const YOUNG_ANALYSE_FROM: u64 = 1 << 10;

/// What the store analyses while the database is young: the tables its statements look runs and
/// cross-references up in (`exchanges` only takes inserts, checked by its unique index, and its
/// bodies make it the slowest to sample).
const YOUNG_ANALYSE: &str = "ANALYZE runs, attempts, xrefs";

/// The last count of finished runs at which the store has them analysed (2^20, about a
/// million): beyond it autovacuum's own analyses (each 10 % of growth) keep the plans right.
pub const YOUNG_ANALYSE_UNTIL: u64 = 1 << 20;

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    statements: Statements,
    key: Option<Arc<MasterKey>>,
    token_lock_timeout: Duration,
    /// The rate limiters made by [`PostgresStore::rate_limiter`], one per business (the latest),
    /// for a worker's turn to take their permits with ([`PostgresStore::turn_permits`]).
    limiters: Arc<std::sync::Mutex<std::collections::HashMap<String, SharedRateLimiter>>>,
    /// The runs finished, or queued by a webhook, through this store and its clones, for
    /// [`PostgresStore::analyse_when_young`].
    runs_counted: Arc<std::sync::atomic::AtomicU64>,
}

/// Maps an sqlx error the way this store does (serialisation failures, deadlocks, lock and
/// connection errors are retryable), so that a package running its own statements on
/// [`PostgresStore::pool`] (the service's tables, the console's) reports failures alike.
pub fn db_error(e: sqlx::Error) -> Error {
    db(e)
}

fn db(e: sqlx::Error) -> Error {
    let retryable = matches!(&e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed)
        || e.as_database_error().and_then(|d| d.code()).is_some_and(|code| {
            matches!(
                code.as_ref(),
                // serialization_failure, deadlock_detected, lock_not_available, query_canceled,
                // too_many_connections, admin_shutdown, crash_shutdown, cannot_connect_now
                "40001" | "40P01" | "55P03" | "57014" | "53300" | "57P01" | "57P02" | "57P03"
            ) || code.starts_with("08")
        });
    Error::database(e.to_string(), retryable, Some(Box::new(e)))
}

/// PostgreSQL text cannot hold NUL: store it as U+FFFD (the raw event, kept as bytes, is exact).
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(s) }
}

fn opt_text(s: Option<&str>) -> Option<Cow<'_, str>> {
    s.map(text)
}

/// The `WHERE` of the runs table (see [`super::audit`]; `RunQuery::matches` is the reference).
fn push_filters(qb: &mut sqlx::QueryBuilder<'_, sqlx::Postgres>, q: &RunQuery) {
    let t = |v: &str| text(v).into_owned();
    if let Some(v) = &q.scope {
        qb.push(" AND scope = ").push_bind(t(v));
    }
    if let Some(v) = &q.tenant_id {
        qb.push(" AND tenant_id = ").push_bind(t(v));
    }
    if let Some(v) = &q.event {
        qb.push(" AND event = ").push_bind(t(v));
    }
    if let Some(v) = q.status {
        qb.push(" AND status = ").push_bind(v.as_str());
    }
    if let Some(v) = q.from {
        qb.push(" AND created_at >= ").push_bind(v);
    }
    if let Some(v) = q.until {
        qb.push(" AND created_at < ").push_bind(v);
    }
    if let Some(v) = q.magento_entity_id {
        qb.push(" AND magento_entity_id = ").push_bind(i64::try_from(v).unwrap_or(-1));
    }
    if let Some(v) = q.before_id {
        qb.push(" AND id < ").push_bind(v);
    }
    if let Some(term) = q.search_term() {
        // ASCII letters only are folded, as SQLite's lower() and the memory store do.
        let lower = term.to_ascii_lowercase();
        for (i, column) in ["increment_id", "ledger_reference", "ledger_id", "idempotency_key"].into_iter().enumerate()
        {
            qb.push(if i == 0 { " AND (" } else { " OR " });
            qb.push(format!("translate({column}, 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz') = "));
            qb.push_bind(t(&lower));
        }
        if let Some(n) = q.search_entity_id() {
            qb.push(" OR magento_entity_id = ").push_bind(n);
        }
        qb.push(")");
    }
}

fn micros_time(v: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(v).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host/database`, or
    /// `postgres:///database?host=/run/postgresql` for a unix socket) with a pool of
    /// [`DEFAULT_MAX_CONNECTIONS`] and migrates it (`migrations/postgres`; several processes may
    /// do so at once). `key` encrypts tokens; without one, storing tokens is refused.
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be reached or migrated.
    pub async fn connect(url: &str, key: Option<MasterKey>) -> Result<Self> {
        let options = PgConnectOptions::from_str(url).map_err(db)?;
        let pool = PgPoolOptions::new()
            .max_connections(DEFAULT_MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            // No ping before each statement (sqlx's default): it doubled every statement's round
            // trips. A connection the server dropped fails the one statement sent on it (an
            // error retried as any database error is) and is closed, not reused.
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(db)?;
        Self::from_pool(pool, key).await
    }

    /// A store over a pool the host built (its size, timeouts, TLS), migrated first.
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be migrated.
    pub async fn from_pool(pool: PgPool, key: Option<MasterKey>) -> Result<Self> {
        sqlx::migrate!("migrations/postgres")
            .run(&pool)
            .await
            .map_err(|e| Error::database(format!("migrating the state database: {e}"), false, Some(Box::new(e))))?;
        Ok(Self {
            statements: Statements::new(pool.clone()),
            limiters: Arc::default(),
            runs_counted: Arc::default(),
            pool,
            key: key.map(Arc::new),
            token_lock_timeout: TOKEN_LOCK_TIMEOUT,
        })
    }

    /// How long [`ConnectionStore::lock_tokens`] waits for another holder before failing with a
    /// retryable [`Error::Database`] (default [`TOKEN_LOCK_TIMEOUT`]; at least a millisecond).
    #[must_use]
    pub fn with_token_lock_timeout(mut self, timeout: Duration) -> Self {
        self.token_lock_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// The pool (for tables of the crates above the core, such as the service's bindings and
    /// console, and for transactions).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Counts a run finished or queued by a webhook, and at [`YOUNG_ANALYSE_FROM`] of them, each
    /// four times as many after, up to [`YOUNG_ANALYSE_UNTIL`], has the tables that grow with
    /// every event analysed
    /// in a task of its own ([A young database's plans](self#a-young-databases-plans)). A
    /// failure is logged, not returned: the analysis only corrects plans.
    fn analyse_when_young(&self) {
        let n = self.runs_counted.fetch_add(1, std::sync::atomic::Ordering::Relaxed).saturating_add(1);
        let at_a_power_of_four = n.is_power_of_two() && n.trailing_zeros().is_multiple_of(2);
        if !(YOUNG_ANALYSE_FROM..=YOUNG_ANALYSE_UNTIL).contains(&n) || !at_a_power_of_four {
            return;
        }
        // On a connection of its own, which takes none from a busy pool and does not log the
        // analysis as a slow statement (a second or more on a large node is expected).
        let options = (*self.pool.connect_options()).clone().disable_statement_logging();
        tokio::spawn(async move {
            let analysed = async {
                let mut conn = PgConnection::connect_with(&options).await?;
                sqlx::query(YOUNG_ANALYSE).execute(&mut conn).await?;
                conn.close().await
            };
            match analysed.await {
                Ok(()) => tracing::debug!(runs = n, "analysed the growing tables"),
                Err(e) => tracing::warn!(runs = n, error = %e, "cannot analyse the growing tables"),
            }
        });
    }

    /// Closes the store's pool, as `PgPool::close` does, once the connections its statements keep
    /// between them ([`Statements`]) are back in it: `close` on the pool alone waits for every
    /// connection out of the pool, and so, for good, for those (a test that closed a store's pool
    /// this way hung now and then). Statements run after it fail as on a closed pool.
    pub async fn close(&self) {
        // Marked closed when called (before it is awaited): a statement ending after this gives
        // its connection back rather than keep it.
        let closed = self.pool.close();
        self.statements.release_kept();
        closed.await;
    }

    /// The executor of single statements that keeps a few of the pool's connections between
    /// them, sparing the pool's test of each connection it gets back (a round trip): what the
    /// store's own statements run on, and what a crate above runs its frequent ones on.
    pub fn statements(&self) -> &Statements {
        &self.statements
    }

    /// The master key this store seals secrets at rest with: the tokens here, and a package's
    /// own secrets in its tables (the service's tenant api keys), each sealed with its own
    /// associated data ([`MasterKey::seal`]).
    ///
    /// # Errors
    /// [`Error::Config`] naming `LEDGER_MASTER_KEY` when the store was opened without one.
    pub fn master_key(&self) -> Result<&MasterKey> {
        self.key()
    }

    /// A [`SharedRateLimiter`] for `business` in this database, with `config` (every worker of
    /// the business must use the same settings). The limiters this store makes for one business
    /// with one `config` hold their permits in one block (the process's), and the latest is the
    /// one a worker's turn takes permits for ([`PostgresStore::turn_permits`]).
    pub fn rate_limiter(&self, business: impl Into<String>, config: RateConfig) -> SharedRateLimiter {
        SharedRateLimiter::new(self, business, config)
    }

    /// A block of permits for `business`'s limiter (the latest [`PostgresStore::rate_limiter`]
    /// made, with the clock and the block size it was given since) to take in the statement that
    /// starts a worker's turn on it, so that the turn's first ledger request finds its permit in
    /// the process: `None` when the business has no limiter here, when its limiter holds a permit
    /// it can still use or is taking a block now, when the business is not idle in this process
    /// (a permit handed out in the last [`IDLE_GAP`]: its blocks follow its pace, see
    /// [Permits in blocks](SharedRateLimiter#permits-in-blocks)), or while a turn's block is
    /// backed off ([`TURN_BACKOFF`]).
    pub fn turn_permits(&self, business: &str) -> Option<TurnPermits> {
        let limiter = self.limiters.lock().ok()?.get(business)?.clone();
        limiter.window?;
        let mut block = limiter.block.try_lock().ok()?;
        if block.turn_backoff > 0 {
            block.turn_backoff -= 1;
            return None;
        }
        let now = limiter.now_in(&block);
        let idle = duration_micros(IDLE_GAP);
        // A process that never asked has no clock of the database's yet, so nothing is known
        // here: the database's record decides whether the business is idle.
        if let Some(now) = now
            && (block.holds_usable(now) || block.last.is_some_and(|last| now < last.saturating_add(idle)))
        {
            return None;
        }
        drop(block);
        Some(TurnPermits { limiter })
    }

    fn key(&self) -> Result<&MasterKey> {
        self.key.as_deref().ok_or_else(|| {
            Error::config(
                super::crypto::MASTER_KEY_ENV,
                "is needed to store or read tokens (they are encrypted at rest)",
            )
        })
    }
}

/// The exchanges of a recording as parallel arrays, one an `exchanges` column, for one `INSERT
/// ... SELECT ... FROM unnest(...)` however many there are (bound arrays have no limit of bound
/// parameters, unlike a row of placeholders an exchange). Text goes through [`text`], as
/// everywhere in this store.
#[derive(Default)]
struct ExchangeColumns {
    seq: Vec<i64>,
    at: Vec<DateTime<Utc>>,
    method: Vec<String>,
    url: Vec<String>,
    status: Vec<Option<i32>>,
    request_body: Vec<Option<String>>,
    response_body: Vec<Option<String>>,
    error: Vec<Option<String>>,
}

/// The rows of [`ExchangeColumns`] bound as `$1` to `$8` (in [`ExchangeColumns::bind`]'s order):
/// `e(seq, at, method, url, status, request_body, response_body, error)`.
macro_rules! unnest_exchanges {
    () => {
        "unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::integer[], $6::text[], $7::text[], \
         $8::text[]) AS e(seq, at, method, url, status, request_body, response_body, error)"
    };
}

impl ExchangeColumns {
    /// `exchanges` numbered in `recording` ([`numbered`]).
    fn of(recording: &RecordingRef, exchanges: &[ExchangeRecord]) -> Self {
        let n = exchanges.len();
        let mut c = Self {
            seq: Vec::with_capacity(n),
            at: Vec::with_capacity(n),
            method: Vec::with_capacity(n),
            url: Vec::with_capacity(n),
            status: Vec::with_capacity(n),
            request_body: Vec::with_capacity(n),
            response_body: Vec::with_capacity(n),
            error: Vec::with_capacity(n),
        };
        let owned = |t: &str| text(t).into_owned();
        for (seq, e) in numbered(recording, exchanges) {
            c.seq.push(seq);
            c.at.push(e.at);
            c.method.push(owned(&e.method));
            c.url.push(owned(&e.url));
            c.status.push(e.status.map(i32::from));
            c.request_body.push(e.request_body.as_deref().map(owned));
            c.response_body.push(e.response_body.as_deref().map(owned));
            c.error.push(e.error.as_deref().map(owned));
        }
        c
    }

    /// Binds the eight arrays as the first parameters, `$1` to `$8` ([`unnest_exchanges!`]).
    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(self.seq)
            .bind(self.at)
            .bind(self.method)
            .bind(self.url)
            .bind(self.status)
            .bind(self.request_body)
            .bind(self.response_body)
            .bind(self.error)
    }
}

/// A finish's held cross-reference entries ([`RunResult::xrefs`]) as the arrays its statement
/// unnests (`$28` to `$34`): one row per (kind, key), sorted (see [`super::held_xrefs`]).
#[derive(Debug, Default)]
struct XrefColumns {
    kind: Vec<&'static str>,
    key: Vec<String>,
    state: Vec<&'static str>,
    ledger_id: Vec<Option<String>>,
    reference: Vec<Option<String>>,
    meta: Vec<String>,
    updated_at: Vec<DateTime<Utc>>,
}

impl XrefColumns {
    fn of(xrefs: &[(XrefKind, String, Xref)]) -> Self {
        let mut c = Self::default();
        let owned = |t: &str| text(t).into_owned();
        for ((kind, key), x) in super::held_xrefs(xrefs) {
            c.kind.push(kind.as_str());
            c.key.push(owned(key));
            c.state.push(xref_state(x.state));
            c.ledger_id.push(x.ledger_id.as_deref().map(owned));
            c.reference.push(x.reference.as_deref().map(owned));
            c.meta.push(x.meta.to_string());
            c.updated_at.push(x.updated_at);
        }
        c
    }

    /// Binds the seven arrays as the next parameters (`$28` to `$34` of `finish`).
    fn bind<'q>(
        self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(self.kind)
            .bind(self.key)
            .bind(self.state)
            .bind(self.ledger_id)
            .bind(self.reference)
            .bind(self.meta)
            .bind(self.updated_at)
    }
}

/// The stored spelling of an entry's state.
fn xref_state(state: XrefState) -> &'static str {
    match state {
        XrefState::Done => "done",
        XrefState::Intent => "intent",
    }
}

/// The exchanges `recording` points at, in order.
async fn read_exchanges(pool: &PgPool, recording: &RecordingRef) -> Result<Vec<ExchangeRecord>> {
    let from = i64::try_from(recording.first).unwrap_or(i64::MAX);
    let to = from.saturating_add(i64::try_from(recording.count).unwrap_or(i64::MAX));
    let rows = sqlx::query(
        "SELECT at, method, url, status, request_body, response_body, error FROM exchanges \
         WHERE recording = $1 AND seq >= $2 AND seq < $3 ORDER BY seq",
    )
    .bind(text(&recording.id))
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            let status: Option<i32> = r.try_get("status").map_err(db)?;
            Ok(ExchangeRecord {
                at: r.try_get("at").map_err(db)?,
                method: r.try_get("method").map_err(db)?,
                url: r.try_get("url").map_err(db)?,
                status: status.and_then(|s| u16::try_from(s).ok()),
                request_body: r.try_get("request_body").map_err(db)?,
                response_body: r.try_get("response_body").map_err(db)?,
                error: r.try_get("error").map_err(db)?,
            })
        })
        .collect()
}

fn run_from(row: &PgRow) -> Result<Run> {
    let status: String = row.try_get("status").map_err(db)?;
    let outcome: Option<String> = row.try_get("outcome").map_err(db)?;
    let entity: Option<i64> = row.try_get("magento_entity_id").map_err(db)?;
    let attempts: i64 = row.try_get("attempts").map_err(db)?;
    let before_retry: i64 = row.try_get("attempts_before_retry").map_err(db)?;
    let raw: Vec<u8> = row.try_get("raw").map_err(db)?;
    Ok(Run {
        id: row.try_get("id").map_err(db)?,
        scope: row.try_get("scope").map_err(db)?,
        tenant_id: row.try_get("tenant_id").map_err(db)?,
        claim: row.try_get("claim").map_err(db)?,
        idempotency_key: row.try_get("idempotency_key").map_err(db)?,
        event: row.try_get("event").map_err(db)?,
        magento_entity_id: entity.and_then(|v| u64::try_from(v).ok()),
        raw: String::from_utf8(raw).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
        policy: row.try_get("policy").map_err(db)?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| Error::database(format!("unknown run status {status}"), false, None))?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        attempts_before_retry: u32::try_from(before_retry).unwrap_or(0),
        next_attempt_at: row.try_get("next_attempt_at").map_err(db)?,
        outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
        created_at: row.try_get("created_at").map_err(db)?,
        updated_at: row.try_get("updated_at").map_err(db)?,
    })
}

/// The runs and the boolean column `more` of a claiming statement answering at least one row: a
/// row whose `id` is NULL (the `LEFT JOIN` of nothing claimed) carries no run.
fn claimed_from(rows: &[PgRow], more: &str) -> Result<Claimed> {
    let more = match rows.first() {
        Some(row) => row.try_get::<Option<bool>, _>(more).map_err(db)?.unwrap_or(false),
        None => false,
    };
    let mut runs = Vec::with_capacity(rows.len());
    for row in rows {
        if row.try_get::<Option<i64>, _>("id").map_err(db)?.is_some() {
            runs.push(run_from(row)?);
        }
    }
    runs.sort_by_key(|r| r.id);
    Ok(Claimed { runs, more })
}

/// Reads what a package's own claiming statement on this store's tables answered (the service
/// takes its dispatch lease and claims in one) as [`RunStore::claim_next`] does: its rows are
/// `runs.*` plus the boolean column named `more`, at least one row, a row with a NULL `id`
/// (a `LEFT JOIN` of nothing claimed) carrying no run.
///
/// # Errors
/// [`Error::Database`] when a column is missing or a status unknown.
pub fn claimed_from_rows(rows: &[PgRow], more: &str) -> Result<Claimed> {
    claimed_from(rows, more)
}

/// Reads a row of `runs` (`SELECT *`, or `RETURNING *`, extra columns allowed) as this store
/// does: what a package selecting runs from [`PostgresStore::pool`] (the service's callback
/// outbox, its status route) reads them with.
///
/// # Errors
/// [`Error::Database`] when a column is missing or the status is unknown.
pub fn run_from_row(row: &PgRow) -> Result<Run> {
    run_from(row)
}

/// The most cross-reference keys one statement of [`XrefStore::get_xrefs`] reads; more are read
/// in blocks of this many.
const XREF_READ_BLOCK: usize = 8;

/// The statement reading `width` keys of a business (a power of two up to [`XREF_READ_BLOCK`]):
/// `$1` the scope, then each key's kind and name, as a `VALUES` list joined to the table. Four
/// statements in all, each prepared once a connection: their parameters are scalars, so the
/// planner settles on a generic plan (an index probe a key) after its first few custom ones. The
/// keys bound as two arrays and `unnest`ed were planned afresh at every call (the planner cannot
/// know an array's length in a generic plan: it guessed ten keys, and its generic plan was a hash
/// join over a scan of the business's entries), 0.17–0.19 ms of planning a call
/// (`pg_stat_statements`, `bench_service` at 1,000 tenants).
fn xref_read_statement(width: usize) -> &'static str {
    static STATEMENTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    block_statement(&STATEMENTS, 2, width, |places| {
        format!(
            "SELECT x.* FROM (VALUES {places}) AS k(kind, key) \
             JOIN xrefs x ON x.scope = $1 AND x.kind = k.kind AND x.key = k.key"
        )
    })
}

/// The statement for `width` keys (a power of two up to [`XREF_READ_BLOCK`]) of a family built
/// once into `statements`: `build` writes one around its `VALUES` places, `($first, $first+1)`,
/// … (each key's kind and name).
fn block_statement(
    statements: &'static std::sync::OnceLock<Vec<String>>,
    first: usize,
    width: usize,
    build: fn(&str) -> String,
) -> &'static str {
    let statements = statements.get_or_init(|| {
        (0..=XREF_READ_BLOCK.trailing_zeros())
            .map(|power| {
                let places: Vec<String> =
                    (0..1usize << power).map(|i| format!("(${}, ${})", first + 2 * i, first + 1 + 2 * i)).collect();
                build(&places.join(", "))
            })
            .collect()
    });
    let index = usize::try_from(width.max(1).trailing_zeros()).unwrap_or(0).min(statements.len() - 1);
    &statements[index]
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds `byte8_enqueue`'s eleven parameters (migration 0012) from `run`, after those bound
/// already.
fn bind_enqueue<'q>(query: PgQuery<'q>, run: &NewRun, dedupe: Dedupe) -> PgQuery<'q> {
    query
        .bind(text(&run.scope).into_owned())
        .bind(text(&run.idempotency_key).into_owned())
        .bind(run.tenant_id.as_deref().map(|t| text(t).into_owned()))
        .bind(text(&run.fingerprint).into_owned())
        .bind(dedupe == Dedupe::WhileQueued)
        .bind(run.event.as_deref().map(|t| text(t).into_owned()))
        .bind(run.magento_entity_id.and_then(|v| i64::try_from(v).ok()))
        .bind(run.raw.as_bytes().to_vec())
        .bind(run.policy.as_deref().map(|t| text(t).into_owned()))
        .bind(run.received_at)
        .bind(increment_id_of_raw(&run.raw).map(|v| text(&v).into_owned()))
}

/// Binds `byte8_enqueue_bound`'s fifteen parameters (migration 0015), after those bound already:
/// the binding's version, the webhook's replay key, when it expires and now (Unix seconds), then
/// the run's eleven as [`RunStore::enqueue`] binds them. For a package whose statement calls a
/// function that takes these first (the service's `byte8_enqueue_turn`, migration 0028).
pub fn bind_bound_enqueue<'q>(
    query: PgQuery<'q>,
    binding_version: i64,
    replay_key: &str,
    expires_at: i64,
    now: i64,
    run: &NewRun,
    dedupe: Dedupe,
) -> PgQuery<'q> {
    let query = query.bind(binding_version).bind(text(replay_key).into_owned()).bind(expires_at).bind(now);
    bind_enqueue(query, run, dedupe)
}

/// What a row answering with `byte8_enqueue_bound`'s columns (`kind`, `run_id`, `run_status`)
/// says, as [`PostgresStore::enqueue_unless_replayed`] reads it.
///
/// # Errors
/// [`Error::Database`] when a column is missing.
pub fn enqueued_from_row(row: &PgRow) -> Result<EnqueuedOnce> {
    enqueued_from(row)
}

/// What `byte8_enqueue`, `byte8_enqueue_once` or `byte8_enqueue_bound` answered.
fn enqueued_from(row: &PgRow) -> Result<EnqueuedOnce> {
    let kind: String = row.try_get("kind").map_err(db)?;
    let id: i64 = row.try_get("run_id").map_err(db)?;
    let status: String = row.try_get("run_status").map_err(db)?;
    Ok(match kind.as_str() {
        "replay" => EnqueuedOnce::Replay,
        "stale" => EnqueuedOnce::StaleBinding,
        "new" => EnqueuedOnce::Queued(Enqueued::New(id)),
        "collapsed" => EnqueuedOnce::Queued(Enqueued::Collapsed(id)),
        _ => EnqueuedOnce::Queued(Enqueued::Duplicate {
            id,
            status: RunStatus::parse(&status).unwrap_or(RunStatus::Queued),
        }),
    })
}

impl PostgresStore {
    /// `byte8_enqueue`: `run` queued, or inserted claimed and leased until `lease_until` when it
    /// is given and the run is new (`RunStore::enqueue_claimed`).
    async fn enqueue_leased(
        &self,
        run: &NewRun,
        dedupe: Dedupe,
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<Enqueued> {
        let query = sqlx::query(
            "SELECT kind, run_id, run_status FROM byte8_enqueue($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        );
        let row = bind_enqueue(query, run, dedupe).bind(lease_until).fetch_one(&self.statements).await.map_err(db)?;
        match enqueued_from(&row)? {
            EnqueuedOnce::Queued(enqueued) => Ok(enqueued),
            other => Err(Error::internal(format!("byte8_enqueue answered {other:?}"))),
        }
    }

    /// [`RunStore::enqueue`], only when `replay_key` is not live in the replay cache (the
    /// service's table of seen webhook `jti`s): the key recorded until `expires_at` (Unix
    /// seconds; expired keys at `now` purged on the way) and the run queued in one statement
    /// (`byte8_enqueue_once`, migration 0013), or nothing written and
    /// [`EnqueuedOnce::Replay`] for a replay.
    ///
    /// With `binding_version` (the `xmin` of the run's tenant's `bindings` row when its token was
    /// verified, as the service reads it), the same statement first checks that the row is still
    /// that version and active (`byte8_enqueue_bound`, migration 0015): otherwise nothing is
    /// written and the answer is [`EnqueuedOnce::StaleBinding`].
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be reached (nothing recorded then).
    pub async fn enqueue_unless_replayed(
        &self,
        replay_key: &str,
        expires_at: i64,
        now: i64,
        binding_version: Option<i64>,
        run: NewRun,
        dedupe: Dedupe,
    ) -> Result<EnqueuedOnce> {
        let query = match binding_version {
            Some(version) => bind_bound_enqueue(
                sqlx::query(
                    "SELECT kind, run_id, run_status FROM \
                     byte8_enqueue_bound($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
                ),
                version,
                replay_key,
                expires_at,
                now,
                &run,
                dedupe,
            ),
            None => bind_enqueue(
                sqlx::query(
                    "SELECT kind, run_id, run_status FROM \
                     byte8_enqueue_once($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
                )
                .bind(text(replay_key).into_owned())
                .bind(expires_at)
                .bind(now),
                &run,
                dedupe,
            ),
        };
        let row = query.fetch_one(&self.statements).await.map_err(db)?;
        let enqueued = enqueued_from(&row)?;
        self.count_queued_run(&enqueued);
        Ok(enqueued)
    }

    /// Counts the run a webhook's statement answered `enqueued` for, when it queued a new one,
    /// toward the analyses of a young database ([A young database's
    /// plans](self#a-young-databases-plans)), as the store counts the runs it finishes: what
    /// [`PostgresStore::enqueue_unless_replayed`] does, for a caller that queues through a
    /// statement of its own (the service's webhook turn).
    pub fn count_queued_run(&self, enqueued: &EnqueuedOnce) {
        if matches!(enqueued, EnqueuedOnce::Queued(Enqueued::New(_))) {
            self.analyse_when_young();
        }
    }
}

/// Due: queued and not waiting, or running under an expired lease ($1 scope or id, $2 now).
macro_rules! due {
    () => {
        "((status = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= $2)) \
         OR (status = 'running' AND lease_until <= $2))"
    };
}

/// [`due!`] for one run found by its id ($2 now), written as a `CASE` so that the planner can
/// take only the primary key (the module's "One run by its id").
macro_rules! due_by_id {
    () => {
        "CASE status WHEN 'queued' THEN next_attempt_at IS NULL OR next_attempt_at <= $2 \
         WHEN 'running' THEN lease_until <= $2 ELSE false END"
    };
}

#[async_trait]
impl RunStore for PostgresStore {
    /// One statement: `byte8_enqueue` (migration 0012) takes the (scope, key)'s advisory lock,
    /// reads what dedupe needs and inserts or collapses, in its own transaction.
    async fn enqueue(&self, run: NewRun, dedupe: Dedupe) -> Result<Enqueued> {
        self.enqueue_leased(&run, dedupe, None).await
    }

    /// One statement: `byte8_enqueue` with its claim's lease (migration 0029's last argument)
    /// inserts a new run running, claim 1, leased until `lease_until`: the row is written once,
    /// not inserted queued and then updated by `claim_run` (a status change is never a HOT
    /// update: a second version of the row and an entry in seven indexes). Nothing else changes:
    /// a run collapsed into or found as a duplicate is left as it is.
    async fn enqueue_claimed(
        &self,
        run: NewRun,
        dedupe: Dedupe,
        lease_until: DateTime<Utc>,
    ) -> Result<(Enqueued, Option<Run>)> {
        let enqueued = self.enqueue_leased(&run, dedupe, Some(lease_until)).await?;
        let Enqueued::New(id) = enqueued else { return Ok((enqueued, None)) };
        let mut claimed = run.into_claimed(id);
        // As the columns keep them (`text`): a NUL is stored as U+FFFD.
        for s in [&mut claimed.scope, &mut claimed.idempotency_key]
            .into_iter()
            .chain(claimed.tenant_id.as_mut())
            .chain(claimed.event.as_mut())
            .chain(claimed.policy.as_mut())
        {
            let kept = match text(s) {
                Cow::Owned(kept) => Some(kept),
                Cow::Borrowed(_) => None,
            };
            if let Some(kept) = kept {
                *s = kept;
            }
        }
        Ok((enqueued, Some(claimed)))
    }

    /// [`claim_next`](RunStore::claim_next)'s statement, whether more are due left unsaid.
    async fn claim_for(
        &self,
        scope: &str,
        tenant: Option<&str>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Run>> {
        Ok(self.claim_next(scope, tenant, now, lease_until, limit).await?.runs)
    }

    /// One statement: up to `limit + 1` due runs locked (`SKIP LOCKED`), the first `limit`
    /// claimed, `more` whether there was one beyond them.
    async fn claim_next(
        &self,
        scope: &str,
        tenant: Option<&str>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Claimed> {
        macro_rules! claim_next {
            ($tenant:literal) => {
                concat!(
                    "WITH cand AS MATERIALIZED (SELECT id FROM runs WHERE scope = $1 AND ",
                    $tenant,
                    " AND status IN ('queued', 'running') AND ",
                    due!(),
                    " ORDER BY id LIMIT $4 + 1 FOR UPDATE SKIP LOCKED), \
                     next AS (SELECT id FROM cand ORDER BY id LIMIT $4), \
                     claimed AS (UPDATE runs SET status = 'running', claim = runs.claim + 1, lease_until = $3, updated_at = $2 \
                       FROM next WHERE runs.id = next.id RETURNING runs.*) \
                     SELECT (SELECT count(*) FROM cand) > $4 AS claim_more, claimed.* FROM (SELECT 1) AS one LEFT JOIN claimed ON true"
                )
            };
        }
        let sql = match tenant {
            Some(_) => claim_next!("tenant_id = $5"),
            None => claim_next!("tenant_id IS NULL AND $5::text IS NULL"),
        };
        let rows = sqlx::query(sql)
            .bind(text(scope))
            .bind(now)
            .bind(lease_until)
            .bind(i64::try_from(limit).unwrap_or(i64::MAX - 1))
            .bind(tenant.map(text).as_deref())
            .fetch_all(&self.statements)
            .await
            .map_err(db)?;
        claimed_from(&rows, "claim_more")
    }

    async fn claim_run(&self, id: RunId, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<Option<Run>> {
        let row = sqlx::query(concat!(
            "UPDATE runs SET status = 'running', claim = claim + 1, lease_until = $3, updated_at = $2 WHERE id = $1 AND ",
            due_by_id!(),
            " RETURNING *"
        ))
        .bind(id)
        .bind(now)
        .bind(lease_until)
        .fetch_optional(&self.statements)
        .await
        .map_err(db)?;
        row.as_ref().map(run_from).transpose()
    }

    async fn release_leases(&self, scope: &str, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', lease_until = NULL, updated_at = $1 WHERE scope = $2 AND status = 'running'",
        )
        .bind(now)
        .bind(text(scope))
        .execute(&self.statements)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    /// One statement, no transaction: one round trip an event instead of four or five (`BEGIN`,
    /// the run, its exchanges, its attempt, `COMMIT`), each of which cost this process and the
    /// database's backend CPU. A data-modifying `WITH`: the `UPDATE` of the run, fenced by the
    /// claim, and two `INSERT`s (the exchanges, bound as arrays and `unnest`ed, however many; the
    /// attempt) that select from that `UPDATE`'s `RETURNING`, so that they write nothing unless
    /// the run was still running under the claim; the statement is atomic. The sub-statements see
    /// one snapshot: the inserts take the run's `scope` from the `RETURNING`, nothing else of the
    /// updated row. The runs' triggers (the service's terminal callback) fire as on a plain
    /// `UPDATE`.
    async fn finish(&self, id: RunId, claim: i64, result: RunResult) -> Result<()> {
        let outcome = serde_json::to_string(&result.outcome).map_err(|e| Error::internal(e.to_string()))?;
        let a = &result.attempt;
        let snapshot = a.snapshot.as_ref().map(Snapshot::as_str);
        let recording = recording_of(a);
        let exchanges = recording.as_ref().map(|r| ExchangeColumns::of(r, &a.exchanges)).unwrap_or_default();
        let xrefs = XrefColumns::of(&result.xrefs);
        // Fenced by the claim: the run, its attempt and exchanges are written only when the run
        // is still running under it (the row lock the UPDATE takes orders a concurrent claim
        // before or after, never in between). An exchange a run of the same batch stored
        // already is left as it is. The held cross-reference entries (`xr`) are written in the
        // run's scope either way: replacing what is stored under the claim, only filling in
        // entries missing or not done when the claim was lost (`RunStore::finish`).
        let query = sqlx::query(concat!(
            "WITH done AS (UPDATE runs SET status = $10, attempts = $11, next_attempt_at = $12, lease_until = NULL, \
             outcome = $13, updated_at = $14, ledger_id = $17, ledger_reference = $18, \
             increment_id = COALESCE(increment_id, $19) \
             WHERE id = $15 AND CASE status WHEN 'running' THEN claim = $16 ELSE false END RETURNING scope), \
             ex AS (INSERT INTO exchanges (recording, seq, scope, at, method, url, status, request_body, \
             response_body, error) \
             SELECT $9, e.seq, done.scope, e.at, e.method, e.url, e.status, e.request_body, e.response_body, e.error \
             FROM done, ",
            unnest_exchanges!(),
            " WHERE $9 IS NOT NULL ON CONFLICT (recording, seq) DO NOTHING), \
             attempt AS (INSERT INTO attempts (run_id, number, started_at, finished_at, result, error_code, message, \
             ledger_id, recording, recording_first, recording_count, snapshot) \
             SELECT $15, $11, $20, $14, $21, $22, $23, $24, $9, $25, $26, $27 FROM done), \
             xr AS (INSERT INTO xrefs (scope, kind, key, state, ledger_id, reference, meta, updated_at) \
             SELECT r.scope, x.kind, x.key, x.state, x.ledger_id, x.reference, x.meta, x.updated_at \
             FROM (SELECT scope FROM runs WHERE id = $15) r, \
             unnest($28::text[], $29::text[], $30::text[], $31::text[], $32::text[], $33::text[], \
             $34::timestamptz[]) WITH ORDINALITY AS x(kind, key, state, ledger_id, reference, meta, updated_at, n) \
             ORDER BY x.n \
             ON CONFLICT (scope, kind, key) DO UPDATE SET state = excluded.state, ledger_id = excluded.ledger_id, \
             reference = excluded.reference, meta = excluded.meta, updated_at = excluded.updated_at \
             WHERE xrefs.state <> 'done' OR EXISTS (SELECT 1 FROM done)) \
             SELECT scope FROM done"
        ));
        let query = exchanges
            .bind(query)
            .bind(recording.as_ref().map(|r| text(&r.id).into_owned()))
            .bind(result.status.as_str())
            .bind(i64::from(a.number))
            .bind(result.next_attempt_at)
            .bind(text(&outcome))
            .bind(a.finished_at)
            .bind(id)
            .bind(claim)
            .bind(opt_text(result.outcome.provider_entity_id.as_deref()))
            .bind(opt_text(result.outcome.provider_reference.as_deref()))
            .bind(a.snapshot.as_ref().and_then(Snapshot::increment_id).map(|v| text(&v).into_owned()))
            .bind(a.started_at)
            .bind(text(&a.result))
            .bind(a.error_code.map(ErrorCode::as_str))
            .bind(opt_text(a.message.as_deref()))
            .bind(opt_text(a.ledger_id.as_deref()))
            .bind(recording.as_ref().map(|r| i64::try_from(r.first).unwrap_or(i64::MAX)))
            .bind(recording.as_ref().map(|r| i64::try_from(r.count).unwrap_or(i64::MAX)))
            .bind(opt_text(snapshot));
        let done = xrefs.bind(query).fetch_optional(&self.statements).await.map_err(db)?;
        match done {
            Some(_) => {
                self.analyse_when_young();
                Ok(())
            }
            None => Err(super::claim_lost(id, claim)),
        }
    }

    async fn requeue(&self, scope: &str, idempotency_key: &str, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', next_attempt_at = NULL, attempts_before_retry = attempts, lease_until = NULL, updated_at = $1 \
             WHERE id = (SELECT id FROM runs WHERE scope = $2 AND idempotency_key = $3 ORDER BY id DESC LIMIT 1) \
             AND status IN ('dead_lettered', 'queued')",
        )
        .bind(now)
        .bind(text(scope))
        .bind(text(idempotency_key))
        .execute(&self.statements)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn get(&self, id: RunId) -> Result<Option<Run>> {
        let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.statements)
            .await
            .map_err(db)?;
        row.as_ref().map(run_from).transpose()
    }

    async fn find_by_key(&self, scope: &str, idempotency_key: &str) -> Result<Option<Run>> {
        let row = sqlx::query("SELECT * FROM runs WHERE scope = $1 AND idempotency_key = $2 ORDER BY id DESC LIMIT 1")
            .bind(text(scope))
            .bind(text(idempotency_key))
            .fetch_optional(&self.statements)
            .await
            .map_err(db)?;
        row.as_ref().map(run_from).transpose()
    }

    async fn attempts(&self, id: RunId) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query("SELECT * FROM attempts WHERE run_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&self.statements)
            .await
            .map_err(db)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let code: Option<String> = r.try_get("error_code").map_err(db)?;
            let number: i64 = r.try_get("number").map_err(db)?;
            let recording = match r.try_get::<Option<String>, _>("recording").map_err(db)? {
                Some(rid) => Some(RecordingRef {
                    id: rid,
                    first: u64::try_from(r.try_get::<Option<i64>, _>("recording_first").map_err(db)?.unwrap_or(0))
                        .unwrap_or(0),
                    count: u64::try_from(r.try_get::<Option<i64>, _>("recording_count").map_err(db)?.unwrap_or(0))
                        .unwrap_or(0),
                }),
                None => None,
            };
            let exchanges = match &recording {
                Some(rec) => read_exchanges(&self.pool, rec).await?,
                None => Vec::new(),
            };
            out.push(AttemptRecord {
                number: u32::try_from(number).unwrap_or(u32::MAX),
                started_at: r.try_get("started_at").map_err(db)?,
                finished_at: r.try_get("finished_at").map_err(db)?,
                result: r.try_get("result").map_err(db)?,
                error_code: code.and_then(|c| serde_json::from_value(serde_json::Value::String(c)).ok()),
                message: r.try_get("message").map_err(db)?,
                ledger_id: r.try_get("ledger_id").map_err(db)?,
                exchanges,
                recording,
                snapshot: read_snapshot(r.try_get("snapshot").map_err(db)?),
            });
        }
        Ok(out)
    }

    async fn record_exchanges(
        &self,
        scope: &str,
        recording: &RecordingRef,
        exchanges: &[ExchangeRecord],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut tx = self.pool.begin().await.map_err(db)?;
        sqlx::query(
            "DELETE FROM exchanges WHERE scope = $1 AND at < $2 \
             AND NOT EXISTS (SELECT 1 FROM attempts WHERE attempts.recording = exchanges.recording)",
        )
        .bind(text(scope))
        .bind(now - super::audit::LOOSE_EXCHANGES_KEPT)
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if !exchanges.is_empty() {
            // One INSERT however many exchanges (bound as arrays).
            let query = sqlx::query(concat!(
                "INSERT INTO exchanges (recording, seq, scope, at, method, url, status, request_body, response_body, \
                 error) SELECT $9, e.seq, $10, e.at, e.method, e.url, e.status, e.request_body, e.response_body, e.error \
                 FROM ",
                unnest_exchanges!(),
                " ON CONFLICT (recording, seq) DO NOTHING"
            ));
            ExchangeColumns::of(recording, exchanges)
                .bind(query)
                .bind(text(&recording.id))
                .bind(text(scope))
                .execute(&mut *tx)
                .await
                .map_err(db)?;
        }
        tx.commit().await.map_err(db)
    }

    async fn ledger_requests(&self, scope: &str, since: DateTime<Utc>) -> Result<RequestCount> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COUNT(*) FILTER (WHERE status = 429) AS refused FROM exchanges \
             WHERE scope = $1 AND at >= $2",
        )
        .bind(text(scope))
        .bind(since)
        .fetch_one(&self.statements)
        .await
        .map_err(db)?;
        let n: i64 = row.try_get("n").map_err(db)?;
        let refused: i64 = row.try_get("refused").map_err(db)?;
        Ok(RequestCount { requests: u64::try_from(n).unwrap_or(0), rate_limited: u64::try_from(refused).unwrap_or(0) })
    }

    async fn counts(&self, scope: &str) -> Result<BTreeMap<RunStatus, u64>> {
        // One range of `runs_by_status` (status, scope, id) a status (migration 0022): a
        // `GROUP BY` over the business's runs would read every run of the node.
        let statuses = RunStatus::ALL.map(RunStatus::as_str);
        let rows = sqlx::query(
            "SELECT s.status, (SELECT COUNT(*) FROM runs WHERE status = s.status AND scope = $1) AS n \
             FROM unnest($2::text[]) AS s(status)",
        )
        .bind(text(scope))
        .bind(&statuses[..])
        .fetch_all(&self.statements)
        .await
        .map_err(db)?;
        let mut out = BTreeMap::new();
        for r in rows {
            let status: String = r.try_get("status").map_err(db)?;
            let n: i64 = r.try_get("n").map_err(db)?;
            if let Some(s) = RunStatus::parse(&status)
                && n > 0
            {
                out.insert(s, u64::try_from(n).unwrap_or(0));
            }
        }
        Ok(out)
    }

    async fn query_runs(&self, query: &RunQuery) -> Result<RunPage> {
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new("SELECT COUNT(*) AS n FROM runs WHERE TRUE");
        push_filters(&mut qb, query);
        let total: i64 = qb.build().fetch_one(&self.statements).await.map_err(db)?.try_get("n").map_err(db)?;
        let mut qb = sqlx::QueryBuilder::<sqlx::Postgres>::new("SELECT * FROM runs WHERE TRUE");
        push_filters(&mut qb, query);
        qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(query.page_size()))
            .push(" OFFSET ")
            .push_bind(i64::try_from(query.offset).unwrap_or(i64::MAX));
        let rows = qb.build().fetch_all(&self.statements).await.map_err(db)?;
        Ok(RunPage {
            runs: rows.iter().map(run_from).collect::<Result<_>>()?,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    async fn requeue_run(&self, id: RunId, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', next_attempt_at = NULL, attempts_before_retry = attempts, lease_until = NULL, updated_at = $1 \
             WHERE id = $2 AND status IN ('dead_lettered', 'queued')",
        )
        .bind(now)
        .bind(id)
        .execute(&self.statements)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn requeue_dead_letters(&self, scope: &str, tenant: Option<&str>, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', next_attempt_at = NULL, attempts_before_retry = attempts, lease_until = NULL, updated_at = $1 \
             WHERE scope = $2 AND status = 'dead_lettered' AND ($3::text IS NULL OR tenant_id = $3)",
        )
        .bind(now)
        .bind(text(scope))
        .bind(opt_text(tenant))
        .execute(&self.statements)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn dead_letters(&self, scope: &str, limit: usize) -> Result<Vec<Run>> {
        let rows =
            sqlx::query("SELECT * FROM runs WHERE scope = $1 AND status = 'dead_lettered' ORDER BY id DESC LIMIT $2")
                .bind(text(scope))
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.statements)
                .await
                .map_err(db)?;
        rows.iter().map(run_from).collect()
    }

    async fn runs_with_status(&self, scope: &str, status: RunStatus) -> Result<Vec<Run>> {
        let rows = sqlx::query("SELECT * FROM runs WHERE scope = $1 AND status = $2 ORDER BY id")
            .bind(text(scope))
            .bind(status.as_str())
            .fetch_all(&self.statements)
            .await
            .map_err(db)?;
        rows.iter().map(run_from).collect()
    }

    async fn waiting(&self, scope: &str, limit: usize) -> Result<Vec<Run>> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE scope = $1 AND status = 'queued' AND outcome IS NOT NULL \
             ORDER BY next_attempt_at NULLS FIRST, id LIMIT $2",
        )
        .bind(text(scope))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.statements)
        .await
        .map_err(db)?;
        rows.iter().map(run_from).collect()
    }
}

fn xref_from(row: &PgRow) -> Result<Xref> {
    let state: String = row.try_get("state").map_err(db)?;
    let meta: String = row.try_get("meta").map_err(db)?;
    Ok(Xref {
        state: if state == "done" { XrefState::Done } else { XrefState::Intent },
        ledger_id: row.try_get("ledger_id").map_err(db)?,
        reference: row.try_get("reference").map_err(db)?,
        meta: serde_json::from_str(&meta).unwrap_or(serde_json::Value::Null),
        updated_at: row.try_get("updated_at").map_err(db)?,
    })
}

/// Binds `(scope, kind, key)` and the entry as `$1`–`$8` of an `INSERT INTO xrefs` (`put_xref`,
/// `get_or_put_intent`).
fn bind_xref<'q>(
    q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    scope: &str,
    kind: XrefKind,
    key: &str,
    xref: &Xref,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    q.bind(text(scope).into_owned())
        .bind(kind.as_str())
        .bind(text(key).into_owned())
        .bind(xref_state(xref.state))
        .bind(opt_text(xref.ledger_id.as_deref()).map(std::borrow::Cow::into_owned))
        .bind(opt_text(xref.reference.as_deref()).map(std::borrow::Cow::into_owned))
        .bind(xref.meta.to_string())
        .bind(xref.updated_at)
}

/// Each asked `(kind, key)` once, as stored (a key asked twice would be answered twice by a
/// statement's join), in a fixed order.
fn distinct_keys<'k>(keys: &[(XrefKind, &'k str)]) -> Vec<(XrefKind, Cow<'k, str>)> {
    keys.iter().map(|(kind, key)| (*kind, text(key))).collect::<std::collections::BTreeSet<_>>().into_iter().collect()
}

/// Binds a block of keys (kind and name each) to `width` places, after those bound already: the
/// unused places ask a key no entry has (`kind` is never empty).
fn bind_block<'q>(mut query: PgQuery<'q>, block: &'q [(XrefKind, Cow<'q, str>)], width: usize) -> PgQuery<'q> {
    for (kind, key) in
        block.iter().map(|(k, v)| (k.as_str(), v.as_ref())).chain(std::iter::repeat(("", ""))).take(width)
    {
        query = query.bind(kind).bind(key);
    }
    query
}

/// An entry as `get_xrefs` reads it: its kind, its key and the entry.
fn entry_from(row: &PgRow) -> Result<(XrefKind, String, Xref)> {
    let kind: String = row.try_get("kind").map_err(db)?;
    let kind = XrefKind::parse(&kind)
        .ok_or_else(|| Error::internal(format!("xrefs.kind: `{kind}` is not a kind this crate writes")))?;
    Ok((kind, row.try_get("key").map_err(db)?, xref_from(row)?))
}

/// The statement of an intent (`$1` … `$8`, [`bind_xref`]): inserted unless its key has an entry,
/// and the key's row read in the same statement, with whether the insert happened (`inserted`)
/// after the columns `before` (`get_or_put_intent`'s alone, and the first part of
/// [`xref_intent_read_statement`]'s).
macro_rules! intent_statement {
    ($before:literal) => {
        concat!(
            "WITH ins AS ( \
               INSERT INTO xrefs (scope, kind, key, state, ledger_id, reference, meta, updated_at) \
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (scope, kind, key) DO NOTHING RETURNING 1 \
             ) \
             SELECT ",
            $before,
            "EXISTS (SELECT 1 FROM ins) AS inserted, x.* FROM (SELECT 1) AS one \
             LEFT JOIN xrefs x ON x.scope = $1 AND x.kind = $2 AND x.key = $3"
        )
    };
}

/// `get_or_put_intent`'s statement (the intent `$1` … `$8`) with `get_xrefs`' read of `width`
/// keys (a power of two up to [`XREF_READ_BLOCK`], from `$9`) after a `UNION ALL`: the intent's
/// row first (`own`, and whether it was `inserted`), then an entry's row for each key read. Four
/// statements, each prepared once a connection, as `xref_read_statement`'s.
fn xref_intent_read_statement(width: usize) -> &'static str {
    static STATEMENTS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    block_statement(&STATEMENTS, 9, width, |places| {
        format!(
            concat!(
                intent_statement!("true AS own, "),
                " UNION ALL \
             SELECT false, false, x.* FROM (VALUES {places}) AS k(kind, key) \
               JOIN xrefs x ON x.scope = $1 AND x.kind = k.kind AND x.key = k.key"
            ),
            places = places
        )
    })
}

impl PostgresStore {
    /// What an intent's statement answered for its key (its `inserted` column, then the entry's):
    /// `None` when it inserted the intent, the entry found otherwise. An entry committed by another
    /// writer after the statement's snapshot made the insert do nothing while the read did not see
    /// it: then it is read again (never replaced).
    async fn intent_answer(&self, row: &PgRow, scope: &str, kind: XrefKind, key: &str) -> Result<Option<Xref>> {
        if row.try_get::<bool, _>("inserted").map_err(db)? {
            return Ok(None);
        }
        if row.try_get::<Option<String>, _>("state").map_err(db)?.is_some() {
            return xref_from(row).map(Some);
        }
        self.get_xref(scope, kind, key).await
    }
}

#[async_trait]
impl XrefStore for PostgresStore {
    async fn get_xref(&self, scope: &str, kind: XrefKind, key: &str) -> Result<Option<Xref>> {
        let row = sqlx::query("SELECT * FROM xrefs WHERE scope = $1 AND kind = $2 AND key = $3")
            .bind(text(scope))
            .bind(kind.as_str())
            .bind(text(key))
            .fetch_optional(&self.statements)
            .await
            .map_err(db)?;
        row.as_ref().map(xref_from).transpose()
    }

    async fn put_xref(&self, scope: &str, kind: XrefKind, key: &str, xref: &Xref) -> Result<()> {
        let q = sqlx::query(
            "INSERT INTO xrefs (scope, kind, key, state, ledger_id, reference, meta, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (scope, kind, key) DO UPDATE SET state = excluded.state, ledger_id = excluded.ledger_id, \
             reference = excluded.reference, meta = excluded.meta, updated_at = excluded.updated_at",
        );
        bind_xref(q, scope, kind, key, xref).execute(&self.statements).await.map_err(db)?;
        Ok(())
    }

    async fn get_xrefs(&self, scope: &str, keys: &[(XrefKind, &str)]) -> Result<Vec<(XrefKind, String, Xref)>> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let asked = distinct_keys(keys);
        let mut rows = Vec::new();
        for block in asked.chunks(XREF_READ_BLOCK) {
            let width = block.len().next_power_of_two();
            let query = bind_block(sqlx::query(xref_read_statement(width)).bind(text(scope)), block, width);
            rows.extend(query.fetch_all(&self.statements).await.map_err(db)?);
        }
        rows.iter().map(entry_from).collect()
    }

    /// One statement: the intent is inserted unless the key has an entry, and the entry read in
    /// the same statement. An entry committed by another writer after the statement's snapshot
    /// was taken makes the insert do nothing while the read does not see it: then it is read
    /// again (never replaced).
    async fn get_or_put_intent(&self, scope: &str, kind: XrefKind, key: &str, intent: &Xref) -> Result<Option<Xref>> {
        let q = sqlx::query(intent_statement!(""));
        let row = bind_xref(q, scope, kind, key, intent).fetch_one(&self.statements).await.map_err(db)?;
        self.intent_answer(&row, scope, kind, key).await
    }

    /// One statement when `ahead` holds at most eight keys (`XREF_READ_BLOCK`): `get_or_put_intent`'s
    /// insert and read, and `get_xrefs`' read of one block (`xref_intent_read_statement`), their
    /// rows told apart by the column `own`. Further keys are read as `get_xrefs` reads them.
    async fn get_or_put_intent_reading(
        &self,
        scope: &str,
        kind: XrefKind,
        key: &str,
        intent: &Xref,
        ahead: &[(XrefKind, &str)],
    ) -> Result<(Option<Xref>, Vec<(XrefKind, String, Xref)>)> {
        let asked = distinct_keys(ahead);
        let Some(first) = asked.chunks(XREF_READ_BLOCK).next() else {
            return Ok((self.get_or_put_intent(scope, kind, key, intent).await?, Vec::new()));
        };
        let width = first.len().next_power_of_two();
        let query = bind_xref(sqlx::query(xref_intent_read_statement(width)), scope, kind, key, intent);
        let rows = bind_block(query, first, width).fetch_all(&self.statements).await.map_err(db)?;
        let mut found = None;
        let mut read = Vec::new();
        for row in &rows {
            if row.try_get::<bool, _>("own").map_err(db)? {
                found = Some(row);
            } else {
                read.push(entry_from(row)?);
            }
        }
        let own = found.ok_or_else(|| Error::internal("the intent's statement answered no row of its own"))?;
        let found = self.intent_answer(own, scope, kind, key).await?;
        // The keys past the first block, read as `get_xrefs` reads them.
        let rest: Vec<(XrefKind, &str)> = asked[first.len()..].iter().map(|(k, v)| (*k, v.as_ref())).collect();
        if !rest.is_empty() {
            read.extend(self.get_xrefs(scope, &rest).await?);
        }
        Ok((found, read))
    }

    async fn list_xrefs(&self, scope: &str, kind: XrefKind, prefix: &str) -> Result<Vec<(String, Xref)>> {
        // A range of the primary key (`super::prefix_upper_bound`): one generic plan, and only
        // the keys listed are read. The bound is that of the prefix as stored (a NUL kept as
        // U+FFFD, as in the keys), which PostgreSQL's text can hold.
        let stored = text(prefix);
        let bound = super::prefix_upper_bound(&stored);
        let sql = match bound {
            Some(_) => "SELECT * FROM xrefs WHERE scope = $1 AND kind = $2 AND key >= $3 AND key < $4 ORDER BY key",
            None => "SELECT * FROM xrefs WHERE scope = $1 AND kind = $2 AND key >= $3 ORDER BY key",
        };
        let mut query = sqlx::query(sql).bind(text(scope)).bind(kind.as_str()).bind(stored);
        if let Some(bound) = bound {
            query = query.bind(bound);
        }
        let rows = query.fetch_all(&self.statements).await.map_err(db)?;
        rows.iter().map(|r| Ok((r.try_get("key").map_err(db)?, xref_from(r)?))).collect()
    }
}

fn connection_from(row: &PgRow) -> Result<Connection> {
    Ok(Connection {
        scope: row.try_get("scope").map_err(db)?,
        provider: row.try_get("provider").map_err(db)?,
        base_url: row.try_get("base_url").map_err(db)?,
        token_url: row.try_get("token_url").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
        tenant_id: row.try_get("tenant_id").map_err(db)?,
        connections_url: row.try_get("connections_url").map_err(db)?,
    })
}

/// The dedicated connection holding a scope's token advisory lock; dropping it closes the
/// connection, which ends the session and so releases the lock.
struct TokenLock {
    _conn: PgConnection,
}

#[async_trait]
impl ConnectionStore for PostgresStore {
    async fn save_connection(&self, c: &Connection) -> Result<()> {
        sqlx::query(
            "INSERT INTO connections (scope, provider, base_url, token_url, created_at, tenant_id, connections_url) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (scope) DO UPDATE SET provider = excluded.provider, base_url = excluded.base_url, \
             token_url = excluded.token_url, tenant_id = excluded.tenant_id, connections_url = excluded.connections_url",
        )
        .bind(text(&c.scope))
        .bind(text(&c.provider))
        .bind(text(&c.base_url))
        .bind(text(&c.token_url))
        .bind(c.created_at)
        .bind(opt_text(c.tenant_id.as_deref()))
        .bind(opt_text(c.connections_url.as_deref()))
        .execute(&self.statements)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn connection(&self, scope: &str) -> Result<Option<Connection>> {
        let row = sqlx::query("SELECT * FROM connections WHERE scope = $1")
            .bind(text(scope))
            .fetch_optional(&self.statements)
            .await
            .map_err(db)?;
        row.as_ref().map(connection_from).transpose()
    }

    async fn connections(&self) -> Result<Vec<Connection>> {
        let rows =
            sqlx::query("SELECT * FROM connections ORDER BY scope").fetch_all(&self.statements).await.map_err(db)?;
        rows.iter().map(connection_from).collect()
    }

    async fn save_tokens(&self, scope: &str, tokens: &TokenSet) -> Result<()> {
        let sealed = seal_tokens(self.key()?, scope, tokens)?;
        let done = sqlx::query("UPDATE connections SET tokens = $1 WHERE scope = $2")
            .bind(sealed)
            .bind(text(scope))
            .execute(&self.statements)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "connection".into(), id: scope.to_owned() });
        }
        Ok(())
    }

    async fn forget_tokens(&self, scope: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE connections SET tokens = NULL WHERE scope = $1 AND tokens IS NOT NULL")
            .bind(text(scope))
            .execute(&self.statements)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn tokens(&self, scope: &str) -> Result<Option<TokenSet>> {
        let row = sqlx::query("SELECT tokens FROM connections WHERE scope = $1")
            .bind(text(scope))
            .fetch_optional(&self.statements)
            .await
            .map_err(db)?;
        let Some(sealed) = row.map(|r| r.try_get::<Option<String>, _>("tokens")).transpose().map_err(db)?.flatten()
        else {
            return Ok(None);
        };
        open_tokens(self.key()?, scope, &sealed).map(Some)
    }

    /// Holds the session advisory lock `hashtextextended('byte8-ledger:tokens:' || scope, 0)` on a
    /// connection of its own until the guard is dropped (see the module docs). Waits for another
    /// holder at most [`PostgresStore::with_token_lock_timeout`] (default [`TOKEN_LOCK_TIMEOUT`]),
    /// then fails with a retryable [`Error::Database`].
    async fn lock_tokens(&self, scope: &str) -> Result<RefreshGuard> {
        let options = self.pool.connect_options();
        let mut conn = PgConnection::connect_with(&options).await.map_err(db)?;
        let timeout_ms = self.token_lock_timeout.as_millis();
        sqlx::query(&format!("SET lock_timeout = {timeout_ms}")).execute(&mut conn).await.map_err(db)?;
        sqlx::query("SELECT pg_advisory_lock(hashtextextended('byte8-ledger:tokens:' || $1, 0))")
            .bind(text(scope))
            .execute(&mut conn)
            .await
            .map_err(db)?;
        Ok(RefreshGuard::holding(Box::new(TokenLock { _conn: conn })))
    }

    async fn save_reference(&self, scope: &str, reference: &ReferenceData) -> Result<()> {
        let json = serde_json::to_string(reference).map_err(|e| Error::internal(e.to_string()))?;
        sqlx::query("UPDATE connections SET reference = $1 WHERE scope = $2")
            .bind(json)
            .bind(text(scope))
            .execute(&self.statements)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn reference(&self, scope: &str) -> Result<Option<ReferenceData>> {
        let row = sqlx::query("SELECT reference FROM connections WHERE scope = $1")
            .bind(text(scope))
            .fetch_optional(&self.statements)
            .await
            .map_err(db)?;
        Ok(row
            .and_then(|r| r.try_get::<Option<String>, _>("reference").ok().flatten())
            .and_then(|j| serde_json::from_str(&j).ok()))
    }
}

/// One permit of a [`SharedRateLimiter`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Permit {
    /// When it was asked for (on the limiter's clock: the database's, or the one given with
    /// [`SharedRateLimiter::with_clock`]).
    pub now: DateTime<Utc>,
    /// When the request may be sent (on the same clock).
    pub at: DateTime<Utc>,
}

impl Permit {
    /// How long to wait from `now` for `at`.
    pub fn wait(&self) -> Duration {
        (self.at - self.now).to_std().unwrap_or(Duration::ZERO)
    }
}

/// How long after its time a permit of a [`SharedRateLimiter`] block may still be used: a permit
/// taken from the block later than this is dropped (never used) and the next one taken. Every
/// sharer's window is lengthened by it, so that a request sent up to this late still keeps the
/// window rule's bound (module docs).
pub const PERMIT_VALIDITY: Duration = Duration::from_millis(250);

/// How long a business's last permit (any process's) must lie in the past for a
/// [`SharedRateLimiter`] to take [`IDLE_BLOCK`] permits at once.
pub const IDLE_GAP: Duration = Duration::from_secs(1);

/// The permits a [`SharedRateLimiter`] takes at once for a business idle for [`IDLE_GAP`] (at
/// most its burst).
pub const IDLE_BLOCK: usize = 2;

/// The most permits a [`SharedRateLimiter`] takes in one statement.
pub const MAX_PERMIT_BLOCK: usize = 8;

/// The permits a [`SharedRateLimiter`] holds in this process, on the limiter's clock (µs).
#[derive(Debug, Default)]
struct PermitBlock {
    /// Permits taken and not handed out yet, in order.
    permits: std::collections::VecDeque<i64>,
    /// When the last block was taken: this process's instant and the limiter's clock then.
    taken: Option<(std::time::Instant, i64)>,
    /// The size of the next block (1 at first).
    size: usize,
    /// Whether a permit of the current block was dropped unused.
    dropped: bool,
    /// Whether a permit handed out since the last block was for later than its request (the
    /// business is at its pace: its next requests will use the next permits in order).
    waited: bool,
    /// The time of the last permit handed out (the limiter's clock, µs).
    last: Option<i64>,
    /// The permits taken with a worker's turn ([`TurnPermits::deposit`]) still held: how many
    /// of the current block, and whether one of them was handed out.
    turn: Option<(usize, bool)>,
    /// Turns left before [`PostgresStore::turn_permits`] takes a block again ([`TURN_BACKOFF`]).
    turn_backoff: u32,
}

impl PermitBlock {
    /// Whether a permit held is still valid at `now` (the limiter's clock, µs).
    fn holds_usable(&self, now: i64) -> bool {
        self.permits.back().is_some_and(|&at| at.saturating_add(duration_micros(PERMIT_VALIDITY)) >= now)
    }
}

/// How many turns [`PostgresStore::turn_permits`] leaves out after a block taken with a turn went
/// unused for its validity while the turn was still going (its first ledger request came later
/// than [`PERMIT_VALIDITY`] after the turn began: a slow Magento read, for one): the requests
/// that follow take their blocks as before, and the next turn's block is tried again after these.
pub const TURN_BACKOFF: u32 = 16;

/// How late a turn's unused permit may be dropped and still count as the turn's own late start
/// ([`TURN_BACKOFF`]); one dropped later was left by a turn that made no ledger request (an event
/// skipped by the policy) and backs nothing off.
const TURN_LATE: Duration = Duration::from_secs(2);

/// A block of permits to take in a worker's turn statement ([`PostgresStore::turn_permits`]):
/// bind its arguments to the statement ([`TurnPermits::bind`], `byte8_rate_permits`' nine, in
/// order) and hand what the function returned to the limiter ([`TurnPermits::deposit`]).
#[derive(Debug)]
pub struct TurnPermits {
    limiter: SharedRateLimiter,
}

impl TurnPermits {
    /// Binds `byte8_rate_permits`' nine arguments (migrations 0011 and 0014: the business, the
    /// limiter's own clock or null for the database's, a block of one, the window rule's
    /// interval, tolerance, limit and span, the idle gap and the idle block) to `q`, in order;
    /// with `None`, nine nulls of the same types (the statement then takes no permit).
    pub fn bind<'q>(
        permits: Option<&Self>,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        PermitArgs::bind(permits.and_then(|p| p.limiter.permit_args(1)), q)
    }

    /// Hands the permits the turn's statement returned (`byte8_rate_permits`' answer: the
    /// limiter's now, then the permits) to the limiter, for its next requests. When the limiter
    /// took a block of its own meanwhile (a request outside the turn), the turn's permits are left
    /// unused (they count against the limit as any dropped permit does).
    pub async fn deposit(&self, answer: &[i64]) {
        let Some((&now, permits)) = answer.split_first() else { return };
        if permits.is_empty() {
            return;
        }
        let mut block = self.limiter.block.lock().await;
        if block.holds_usable(self.limiter.now_in(&block).unwrap_or(now)) {
            return;
        }
        block.taken = Some((std::time::Instant::now(), now));
        block.permits = permits.iter().copied().collect();
        block.size = 1;
        block.dropped = false;
        block.waited = false;
        block.turn = Some((permits.len(), false));
    }

    /// The business.
    pub fn business(&self) -> &str {
        &self.limiter.key
    }
}

/// `byte8_rate_permits`' arguments for one block.
struct PermitArgs {
    key: String,
    given: Option<i64>,
    count: i32,
    interval: i64,
    tolerance: i64,
    limit: i32,
    span: i64,
    idle_gap: i64,
    idle_block: i32,
}

impl PermitArgs {
    /// Binds the nine arguments to `q`, in `byte8_rate_permits`' order; `None` binds nine nulls
    /// of the same types.
    fn bind<'q>(
        args: Option<Self>,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        let a = args.as_ref();
        q.bind(a.map(|a| a.key.clone()))
            .bind(a.and_then(|a| a.given))
            .bind(a.map(|a| a.count))
            .bind(a.map(|a| a.interval))
            .bind(a.map(|a| a.tolerance))
            .bind(a.map(|a| a.limit))
            .bind(a.map(|a| a.span))
            .bind(a.map(|a| a.idle_gap))
            .bind(a.map(|a| a.idle_block))
    }
}

/// `d` in the limiter's `i64` microseconds (saturating).
fn duration_micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

/// `v` as the limiter's `i64` microseconds (saturating).
fn micros_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// One business's rate limit shared by every worker process connected to the same database (see
/// the module docs and [`crate::http::limit`] for the math): at most `config.requests_per_minute`
/// permits in any minute across all of them, given the same `config` everywhere.
///
/// # Permits in blocks
///
/// One statement (`byte8_rate_permits`, migration 0011) takes up to [`MAX_PERMIT_BLOCK`] permits
/// at once, held in this process and handed to its next requests, so that a busy business costs
/// one statement per several Sage requests rather than one each. A permit must be used within
/// [`PERMIT_VALIDITY`] of its time or it is dropped (the request takes the next one, or a new
/// block); the window every sharer keeps is lengthened by that validity. Hence the bound still
/// holds: permits are in order and any `L + 1` consecutive ones span at least
/// `W + m + PERMIT_VALIDITY`, a request is sent between its permit and `PERMIT_VALIDITY` after
/// it, so any `L + 1` requests span at least `W + m` (and a dropped permit is a request fewer).
/// A business nobody used for [`IDLE_GAP`] (the database's record of every process's permits,
/// migration 0014) gets [`IDLE_BLOCK`] permits a statement (at most its burst): an event's
/// requests follow each other within the validity, so an event of one or two requests costs
/// one statement, and the permit an event of one leaves unused is an idle business's. A busier
/// business under its pace (its permits are for now) takes one permit a statement, as unused
/// permits of a block would eat its burst; once a request has to wait for its permit (the
/// business is at its pace, and its next requests will take the next permits in order) the
/// block doubles, up to 8, and it halves when a permit is dropped. A business that has fallen
/// behind its pace since its last permit (an interval or more without a request) takes one
/// permit again: its next block would be mostly permits for now, which requests one ledger
/// answer apart cannot all use within their validity. The database function spaces a block
/// itself as well (migration 0021): its third and later permits are each at least an interval
/// after the one before, so a block never holds more than two permits for the same moment
/// (what requests sent one after the other can use within the validity), whatever the window
/// would allow. A dropped permit is logged at `debug` (the business, how late). A saturated
/// business keeps
/// `L` per `W + m + PERMIT_VALIDITY`, 200 per 60.75 s (98.8 % of Sage's limit), in about one
/// statement per 8 requests.
///
/// # A turn's block
///
/// The service's worker starts a business's turn with one statement (its dispatch lease and its
/// first runs claimed). When it claims a run and the business is idle in this process (no permit
/// it can still use, none handed out for [`IDLE_GAP`]), that statement takes the business's next
/// block as well, as [`SharedRateLimiter::reserve`] would (the same function, a block of one or
/// the idle block), and hands it to the business's limiter ([`PostgresStore::turn_permits`],
/// [`TurnPermits`]). An event's first requests, a few milliseconds later, then take no
/// statement of their own. The bound above is untouched: the permits are the window rule's, in
/// order, and used within their validity or dropped. What it costs is the permits of a turn that
/// makes no request (an event the policy skips), dropped as any unused permit is. A turn whose
/// first request comes after its permits' validity (a slow Magento read before it) backs the
/// turns' blocks off ([`TURN_BACKOFF`]). The limiters a store makes for one business (one
/// `config`) share one block, so that the turn's block reaches whichever of them asks next.
///
/// Give it to the Sage provider with `SageBuilder::with_rate_limiter(shared.into())` (or
/// [`SharedRateLimiter::into_rate_limiter`]).
#[derive(Debug, Clone)]
pub struct SharedRateLimiter {
    db: Statements,
    key: String,
    config: RateConfig,
    window: Option<Window>,
    clock: Option<Arc<dyn Clock>>,
    block: Arc<tokio::sync::Mutex<PermitBlock>>,
    max_block: usize,
    statements: Arc<std::sync::atomic::AtomicU64>,
    /// The store's limiters by business (weak: the store's map holds the limiters).
    registry: std::sync::Weak<std::sync::Mutex<std::collections::HashMap<String, SharedRateLimiter>>>,
}

impl SharedRateLimiter {
    /// The limiter of `business` in `store`'s database, with `config`. It holds its permits in
    /// the block of the store's latest limiter of the business when that one has the same
    /// `config` (one block a business in the process), and becomes the business's latest
    /// ([`PostgresStore::turn_permits`]).
    pub fn new(store: &PostgresStore, business: impl Into<String>, config: RateConfig) -> Self {
        let key = business.into();
        let block = store
            .limiters
            .lock()
            .ok()
            .and_then(|l| l.get(&key).filter(|l| l.config == config).map(|l| Arc::clone(&l.block)))
            .unwrap_or_default();
        let limiter = Self {
            db: store.statements.clone(),
            key,
            config,
            window: Window::of(config),
            clock: None,
            block,
            max_block: MAX_PERMIT_BLOCK,
            statements: Arc::default(),
            registry: Arc::downgrade(&store.limiters),
        };
        limiter.register();
        limiter
    }

    /// Makes this limiter its business's latest in its store.
    fn register(&self) {
        if let Some(registry) = self.registry.upgrade()
            && let Ok(mut l) = registry.lock()
        {
            l.insert(self.key.clone(), self.clone());
        }
    }

    /// Uses `clock` for "now" instead of the database server's clock (tests with a manual clock;
    /// every sharer must then use the same clock).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self.register();
        self
    }

    /// Takes at most `max` permits a statement (1 to [`MAX_PERMIT_BLOCK`]; 1: no blocks).
    #[must_use]
    pub fn with_max_block(mut self, max: usize) -> Self {
        self.max_block = max.clamp(1, MAX_PERMIT_BLOCK);
        self.register();
        self
    }

    /// "Now" on the limiter's clock: the given clock, or the database's as of the last block plus
    /// the time passed here since (`None` before the first block).
    fn now_in(&self, block: &PermitBlock) -> Option<i64> {
        match (&self.clock, block.taken) {
            (Some(c), _) => Some(c.now().timestamp_micros()),
            (None, Some((instant, then))) => {
                Some(then.saturating_add(i64::try_from(instant.elapsed().as_micros()).unwrap_or(i64::MAX)))
            }
            (None, None) => None,
        }
    }

    /// `byte8_rate_permits`' arguments for a block of `count` (`None` without a limit).
    fn permit_args(&self, count: usize) -> Option<PermitArgs> {
        let window = self.window?;
        let validity = duration_micros(PERMIT_VALIDITY);
        let idle_block = IDLE_BLOCK.min(usize::try_from(self.config.burst).unwrap_or(1)).clamp(1, self.max_block);
        Some(PermitArgs {
            key: text(&self.key).into_owned(),
            given: self.clock.as_ref().map(|c| c.now().timestamp_micros()),
            count: i32::try_from(count).unwrap_or(1),
            interval: micros_i64(window.interval_micros),
            tolerance: micros_i64(window.tolerance_micros()),
            limit: i32::try_from(window.limit).unwrap_or(i32::MAX),
            span: micros_i64(window.span_micros).saturating_add(validity),
            idle_gap: duration_micros(IDLE_GAP),
            idle_block: i32::try_from(idle_block).unwrap_or(1),
        })
    }

    /// The business.
    pub fn business(&self) -> &str {
        &self.key
    }

    /// Statements this limiter (and its clones) sent to the database so far.
    pub fn statements(&self) -> u64 {
        self.statements.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Takes the next permit: from the block this process holds, or with one statement taking a
    /// new block (the [`Window`] rule, see [Permits in blocks](Self#permits-in-blocks)). Use it
    /// at its time ([`Permit::wait`]).
    ///
    /// # Errors
    /// [`Error::Database`] when the database cannot be reached.
    pub async fn reserve(&self) -> Result<Permit> {
        let Some(window) = self.window else {
            let now = self.clock.as_ref().map_or_else(|| crate::clock::SystemClock.now(), |c| c.now());
            return Ok(Permit { now, at: now });
        };
        let validity = duration_micros(PERMIT_VALIDITY);
        let mut block = self.block.lock().await;
        let now = self.now_in(&block);
        if let Some(now) = now {
            let late_turn = duration_micros(TURN_LATE);
            while let Some(&at) = block.permits.front() {
                if at.saturating_add(validity) >= now {
                    break;
                }
                block.permits.pop_front();
                block.dropped = true;
                // The last of a turn's permits dropped, none used, while its turn was likely still
                // going: the turn's first request came too late for them.
                if let Some((held, used)) = block.turn {
                    block.turn = (held > 1).then_some((held - 1, used));
                    if held == 1 && !used && now.saturating_sub(at) < late_turn {
                        block.turn_backoff = TURN_BACKOFF;
                    }
                }
                tracing::debug!(
                    business = %self.key,
                    late_ms = now.saturating_sub(at) / 1000,
                    "a rate permit went unused past its validity: dropped"
                );
            }
            if let Some(at) = block.permits.pop_front() {
                block.waited |= at > now;
                block.last = Some(at);
                if let Some((held, _)) = block.turn {
                    block.turn = (held > 1).then_some((held - 1, true));
                }
                return Ok(Permit { now: micros_time(now), at: micros_time(at.max(now)) });
            }
        }
        // A new block: one permit while the business is not at its pace (its permits are for
        // now: a block would mostly go stale and its unused permits would eat the burst), doubled
        // while it is, halved after a dropped permit. A business that was at its pace and has
        // fallen behind it since its last permit (it spent an interval or more on work without
        // requests: a skipped event, a Magento read) is not at its pace any more: a block taken
        // now would be mostly permits for now, valid for `PERMIT_VALIDITY` only, and the requests
        // that follow (one per ledger answer, 100-150 ms apart) would use one or two of them and
        // drop the rest (measured: blocks of 5-7 dropped at once, the business at 93.5-96 % of
        // its limit at 10 tenants).
        let behind = match (now, block.last) {
            (Some(now), Some(last)) => now >= last.saturating_add(micros_i64(window.interval_micros)),
            _ => false,
        };
        block.size = if block.dropped {
            (block.size / 2).max(1)
        } else if block.waited && !behind {
            (block.size * 2).min(self.max_block)
        } else {
            1
        }
        .clamp(1, self.max_block);
        block.dropped = false;
        block.waited = false;
        block.turn = None;
        let a = self.permit_args(block.size).ok_or_else(|| Error::internal("a limit without a window"))?;
        let q = sqlx::query("SELECT byte8_rate_permits($1, $2, $3, $4, $5, $6, $7, $8, $9) AS permits");
        let row = PermitArgs::bind(Some(a), q).fetch_one(&self.db).await.map_err(db)?;
        self.statements.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let permits: Vec<i64> = row.try_get("permits").map_err(db)?;
        let (&now, permits) =
            permits.split_first().ok_or_else(|| Error::internal("byte8_rate_permits returned nothing"))?;
        block.taken = Some((std::time::Instant::now(), now));
        block.permits = permits.iter().copied().collect();
        let at = block.permits.pop_front().ok_or_else(|| Error::internal("byte8_rate_permits returned no permit"))?;
        block.waited |= at > now;
        block.last = Some(at);
        Ok(Permit { now: micros_time(now), at: micros_time(at.max(now)) })
    }

    /// Takes the next permit and sleeps until it may be used.
    ///
    /// # Errors
    /// As [`SharedRateLimiter::reserve`].
    pub async fn until_ready(&self) -> Result<()> {
        let wait = self.reserve().await?.wait();
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Ok(())
    }

    /// The [`RateLimiter`] the providers take.
    pub fn into_rate_limiter(self) -> RateLimiter {
        RateLimiter::shared(Arc::new(self))
    }
}

#[async_trait]
impl SharedLimit for SharedRateLimiter {
    async fn reserve(&self) -> Result<Duration> {
        Ok(SharedRateLimiter::reserve(self).await?.wait())
    }

    fn config(&self) -> RateConfig {
        self.config
    }
}

impl From<SharedRateLimiter> for RateLimiter {
    fn from(shared: SharedRateLimiter) -> Self {
        shared.into_rate_limiter()
    }
}
