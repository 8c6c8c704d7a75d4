//! The embedded SQLite [`Store`](super::Store) (feature `sqlite`): durable, created on first use,
//! migrated at open, safe under concurrent tasks, tokens encrypted at rest.
//!
//! - WAL journal, `synchronous = FULL` (a commit survives power loss: the intent log and the
//!   cross-reference are only useful if they are durable), a 5-second busy timeout.
//! - A pooled connection is not tested before it is handed out: it is a local file's, which no
//!   server can drop, and the test cost a round trip to the connection's own thread (sqlx runs
//!   each SQLite connection on one) before every statement or transaction.
//! - Enqueueing is one `BEGIN IMMEDIATE` transaction (read the key, then write), so two tasks
//!   enqueueing the same key cannot both insert. Claiming is one `UPDATE … RETURNING` statement,
//!   atomic in SQLite, so two claimers never get the same run.
//! - Tokens are sealed with AES-256-GCM under the master key ([`super::crypto`]).
//!
//! It is meant for one process (`byte8-ledger serve`, `sync` and `connect` lock the state file,
//! so that one process writes it; that is also what makes a token refresh single-flight there,
//! the [`TokenManager`](crate::auth::TokenManager)'s own lock serialising the process's tasks):
//! for several worker processes draining one queue, use the PostgreSQL store (`postgres`
//! module, feature `postgres`).

mod retention;

use std::{collections::BTreeMap, path::Path, str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::{
    Row,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous},
};

use super::{
    AttemptRecord, Claimed, Connection, ConnectionStore, Dedupe, Enqueued, NewRun, Run, RunId, RunResult, RunStatus,
    RunStore, Xref, XrefKind, XrefState, XrefStore,
    audit::{RunPage, RunQuery, increment_id_of_raw},
    crypto::{MasterKey, open_tokens, seal_tokens},
};
use crate::{
    auth::TokenSet,
    error::{Error, ErrorCode, Result},
    reference::ReferenceData,
};

/// The SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    key: Option<Arc<MasterKey>>,
}

/// Maps an sqlx error the way this store does (a locked or busy database, a pool timeout and an
/// I/O error are retryable), so that a package running its own statements on [`SqliteStore::pool`]
/// (the service's tables, the console's) reports failures alike.
pub fn db_error(e: sqlx::Error) -> Error {
    db(e)
}

fn db(e: sqlx::Error) -> Error {
    let retryable = matches!(&e, sqlx::Error::PoolTimedOut | sqlx::Error::Io(_))
        || e.as_database_error().is_some_and(|d| {
            let m = d.message().to_lowercase();
            m.contains("locked") || m.contains("busy")
        });
    Error::database(e.to_string(), retryable, Some(Box::new(e)))
}

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn time(v: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(v).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

use super::audit::{EXCHANGES_PER_INSERT, RequestCount, numbered, read_snapshot, recording_of};
use crate::http::audit::{ExchangeRecord, RecordingRef, Snapshot};

/// Stores the exchanges of `recording` (each once: an exchange a run of the same batch stored
/// already is left as it is).
async fn insert_exchanges(
    conn: &mut sqlx::SqliteConnection,
    scope: &str,
    recording: &RecordingRef,
    exchanges: &[ExchangeRecord],
) -> Result<()> {
    let rows: Vec<(i64, &ExchangeRecord)> = numbered(recording, exchanges).collect();
    for chunk in rows.chunks(EXCHANGES_PER_INSERT) {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new(
            "INSERT INTO exchanges (recording, seq, scope, at, method, url, status, request_body, response_body, error) ",
        );
        qb.push_values(chunk, |mut b, (seq, e)| {
            b.push_bind(recording.id.clone())
                .push_bind(*seq)
                .push_bind(scope.to_owned())
                .push_bind(micros(e.at))
                .push_bind(e.method.clone())
                .push_bind(e.url.clone())
                .push_bind(e.status.map(i64::from))
                .push_bind(e.request_body.clone())
                .push_bind(e.response_body.clone())
                .push_bind(e.error.clone());
        });
        qb.push(" ON CONFLICT (recording, seq) DO NOTHING");
        qb.build().execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

/// The exchanges `recording` points at, in order.
async fn read_exchanges(pool: &SqlitePool, recording: &RecordingRef) -> Result<Vec<ExchangeRecord>> {
    let from = i64::try_from(recording.first).unwrap_or(i64::MAX);
    let to = from.saturating_add(i64::try_from(recording.count).unwrap_or(i64::MAX));
    let rows = sqlx::query(
        "SELECT at, method, url, status, request_body, response_body, error FROM exchanges \
         WHERE recording = ? AND seq >= ? AND seq < ? ORDER BY seq",
    )
    .bind(&recording.id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await
    .map_err(db)?;
    rows.iter()
        .map(|r| {
            let status: Option<i64> = r.try_get("status").map_err(db)?;
            Ok(ExchangeRecord {
                at: time(r.try_get("at").map_err(db)?),
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

impl SqliteStore {
    /// `enqueue`, the new run inserted claimed and leased until `lease_until` when it is given
    /// (`RunStore::enqueue_claimed`).
    async fn enqueue_leased(
        &self,
        run: NewRun,
        dedupe: Dedupe,
        lease_until: Option<DateTime<Utc>>,
    ) -> Result<(Enqueued, Option<Run>)> {
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        if dedupe == Dedupe::WhileQueued {
            let same = sqlx::query(
                "SELECT id, status FROM runs WHERE scope = ? AND tenant_id IS ? AND idempotency_key = ? AND fingerprint = ? \
                 ORDER BY id DESC LIMIT 1",
            )
            .bind(&run.scope)
            .bind(&run.tenant_id)
            .bind(&run.idempotency_key)
            .bind(&run.fingerprint)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db)?;
            if let Some(row) = same {
                let status: String = row.try_get("status").map_err(db)?;
                let id: i64 = row.try_get("id").map_err(db)?;
                tx.commit().await.map_err(db)?;
                return Ok((
                    Enqueued::Duplicate { id, status: RunStatus::parse(&status).unwrap_or(RunStatus::Queued) },
                    None,
                ));
            }
        }
        let existing = sqlx::query(
            "SELECT id, status FROM runs WHERE scope = ? AND tenant_id IS ? AND idempotency_key = ? ORDER BY id DESC LIMIT 1",
        )
        .bind(&run.scope)
        .bind(&run.tenant_id)
        .bind(&run.idempotency_key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let existing = match existing {
            Some(row) => {
                let status: String = row.try_get("status").map_err(db)?;
                Some((row.try_get::<i64, _>("id").map_err(db)?, RunStatus::parse(&status).unwrap_or(RunStatus::Queued)))
            }
            None => None,
        };
        let mut claimed = None;
        let result = match (dedupe, existing) {
            (Dedupe::Permanent, Some((id, status))) => Enqueued::Duplicate { id, status },
            (Dedupe::WhileQueued, Some((id, RunStatus::Queued))) => {
                sqlx::query(
                    "UPDATE runs SET raw = ?, fingerprint = ?, policy = ?, updated_at = ?, \
                     increment_id = COALESCE(?, increment_id) WHERE id = ?",
                )
                .bind(&run.raw)
                .bind(&run.fingerprint)
                .bind(&run.policy)
                .bind(micros(run.received_at))
                .bind(increment_id_of_raw(&run.raw))
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(db)?;
                Enqueued::Collapsed(id)
            }
            _ => {
                let id: i64 = sqlx::query(
                    "INSERT INTO runs (scope, tenant_id, idempotency_key, event, magento_entity_id, raw, fingerprint, policy, status, attempts, created_at, updated_at, increment_id, claim, lease_until) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, CASE WHEN ?12 IS NULL THEN 'queued' ELSE 'running' END, 0, ?9, ?10, ?11, \
                     CASE WHEN ?12 IS NULL THEN 0 ELSE 1 END, ?12) RETURNING id",
                )
                .bind(&run.scope)
                .bind(&run.tenant_id)
                .bind(&run.idempotency_key)
                .bind(&run.event)
                .bind(run.magento_entity_id.and_then(|v| i64::try_from(v).ok()))
                .bind(&run.raw)
                .bind(&run.fingerprint)
                .bind(&run.policy)
                .bind(micros(run.received_at))
                .bind(micros(run.received_at))
                .bind(increment_id_of_raw(&run.raw))
                .bind(lease_until.map(micros))
                .fetch_one(&mut *tx)
                .await
                .map_err(db)?
                .try_get("id")
                .map_err(db)?;
                if lease_until.is_some() {
                    claimed = Some(run.into_claimed(id));
                }
                Enqueued::New(id)
            }
        };
        tx.commit().await.map_err(db)?;
        Ok((result, claimed))
    }

    /// Opens (creating it if missing) the database at `path` and migrates it. `key` encrypts
    /// tokens; without one, storing tokens is refused.
    ///
    /// # Errors
    /// [`Error::Database`] when the file cannot be opened or migrated.
    pub async fn open(path: impl AsRef<Path>, key: Option<MasterKey>) -> Result<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path.as_ref())
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(5))
            .foreign_keys(true);
        Self::connect(options, key).await
    }

    /// An in-memory database (tests).
    ///
    /// # Errors
    /// As [`SqliteStore::open`].
    pub async fn in_memory(key: Option<MasterKey>) -> Result<Self> {
        let options = SqliteConnectOptions::from_str("sqlite::memory:").map_err(db)?.shared_cache(true);
        // One connection: an in-memory database lives as long as its connection.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(options)
            .await
            .map_err(db)?;
        Self::migrate(pool, key).await
    }

    async fn connect(options: SqliteConnectOptions, key: Option<MasterKey>) -> Result<Self> {
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(db)?;
        Self::migrate(pool, key).await
    }

    async fn migrate(pool: SqlitePool, key: Option<MasterKey>) -> Result<Self> {
        sqlx::migrate!("migrations/sqlite")
            .run(&pool)
            .await
            .map_err(|e| Error::database(format!("migrating the state database: {e}"), false, Some(Box::new(e))))?;
        Ok(Self { pool, key: key.map(Arc::new) })
    }

    /// The pool (for tables of the crates above the core, such as the service's console).
    pub fn pool(&self) -> &SqlitePool {
        &self.pool
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

    fn key(&self) -> Result<&MasterKey> {
        self.key.as_deref().ok_or_else(|| {
            Error::config(
                super::crypto::MASTER_KEY_ENV,
                "is needed to store or read tokens (they are encrypted at rest)",
            )
        })
    }
}

/// Reads a row of `runs` (`SELECT *`, or `RETURNING *`) as this store does: what a package
/// selecting runs from [`SqliteStore::pool`] (the service's callback outbox, its status route)
/// reads them with.
///
/// # Errors
/// [`Error::Database`] when a column is missing or the status is unknown.
pub fn run_from_row(row: &SqliteRow) -> Result<Run> {
    run_from(row)
}

fn run_from(row: &SqliteRow) -> Result<Run> {
    let status: String = row.try_get("status").map_err(db)?;
    let outcome: Option<String> = row.try_get("outcome").map_err(db)?;
    let entity: Option<i64> = row.try_get("magento_entity_id").map_err(db)?;
    let attempts: i64 = row.try_get("attempts").map_err(db)?;
    let before_retry: i64 = row.try_get("attempts_before_retry").map_err(db)?;
    Ok(Run {
        id: row.try_get("id").map_err(db)?,
        scope: row.try_get("scope").map_err(db)?,
        tenant_id: row.try_get("tenant_id").map_err(db)?,
        claim: row.try_get("claim").map_err(db)?,
        idempotency_key: row.try_get("idempotency_key").map_err(db)?,
        event: row.try_get("event").map_err(db)?,
        magento_entity_id: entity.and_then(|v| u64::try_from(v).ok()),
        raw: row.try_get("raw").map_err(db)?,
        policy: row.try_get("policy").map_err(db)?,
        status: RunStatus::parse(&status)
            .ok_or_else(|| Error::database(format!("unknown run status {status}"), false, None))?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        attempts_before_retry: u32::try_from(before_retry).unwrap_or(0),
        next_attempt_at: row.try_get::<Option<i64>, _>("next_attempt_at").map_err(db)?.map(time),
        outcome: outcome.and_then(|o| serde_json::from_str(&o).ok()),
        created_at: time(row.try_get("created_at").map_err(db)?),
        updated_at: time(row.try_get("updated_at").map_err(db)?),
    })
}

/// The `WHERE` of the runs table (see [`super::audit`]; `RunQuery::matches` is the reference).
fn push_filters(qb: &mut sqlx::QueryBuilder<'_, sqlx::Sqlite>, q: &RunQuery) {
    if let Some(v) = &q.scope {
        qb.push(" AND scope = ").push_bind(v.clone());
    }
    if let Some(v) = &q.tenant_id {
        qb.push(" AND tenant_id = ").push_bind(v.clone());
    }
    if let Some(v) = &q.event {
        qb.push(" AND event = ").push_bind(v.clone());
    }
    if let Some(v) = q.status {
        qb.push(" AND status = ").push_bind(v.as_str());
    }
    if let Some(v) = q.from {
        qb.push(" AND created_at >= ").push_bind(micros(v));
    }
    if let Some(v) = q.until {
        qb.push(" AND created_at < ").push_bind(micros(v));
    }
    if let Some(v) = q.magento_entity_id {
        qb.push(" AND magento_entity_id = ").push_bind(i64::try_from(v).unwrap_or(-1));
    }
    if let Some(v) = q.before_id {
        qb.push(" AND id < ").push_bind(v);
    }
    if let Some(term) = q.search_term() {
        let term = term.to_owned();
        qb.push(" AND (lower(increment_id) = lower(").push_bind(term.clone());
        qb.push(") OR lower(ledger_reference) = lower(").push_bind(term.clone());
        qb.push(") OR lower(ledger_id) = lower(").push_bind(term.clone());
        qb.push(") OR lower(idempotency_key) = lower(").push_bind(term);
        qb.push(")");
        if let Some(n) = q.search_entity_id() {
            qb.push(" OR magento_entity_id = ").push_bind(n);
        }
        qb.push(")");
    }
}

const DUE: &str = "scope = ?1 AND tenant_id IS ?5 AND ((status = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= ?2)) \
                   OR (status = 'running' AND lease_until <= ?2))";

#[async_trait]
impl RunStore for SqliteStore {
    async fn enqueue(&self, run: NewRun, dedupe: Dedupe) -> Result<Enqueued> {
        Ok(self.enqueue_leased(run, dedupe, None).await?.0)
    }

    /// One transaction, as `enqueue`'s: a new run is inserted running, claim 1, leased until
    /// `lease_until`, instead of inserted queued and then updated by `claim_run`.
    async fn enqueue_claimed(
        &self,
        run: NewRun,
        dedupe: Dedupe,
        lease_until: DateTime<Utc>,
    ) -> Result<(Enqueued, Option<Run>)> {
        self.enqueue_leased(run, dedupe, Some(lease_until)).await
    }

    async fn claim_for(
        &self,
        scope: &str,
        tenant: Option<&str>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<Run>> {
        let sql = format!(
            "UPDATE runs SET status = 'running', claim = claim + 1, lease_until = ?3, updated_at = ?2 \
             WHERE id IN (SELECT id FROM runs WHERE {DUE} ORDER BY id LIMIT ?4) RETURNING *"
        );
        let rows = sqlx::query(&sql)
            .bind(scope)
            .bind(micros(now))
            .bind(micros(lease_until))
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .bind(tenant)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut runs = rows.iter().map(run_from).collect::<Result<Vec<_>>>()?;
        runs.sort_by_key(|r| r.id);
        Ok(runs)
    }

    /// The claim, then one read of whether another run is due (in-process: no round trip).
    async fn claim_next(
        &self,
        scope: &str,
        tenant: Option<&str>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Claimed> {
        let runs = if limit == 0 { Vec::new() } else { self.claim_for(scope, tenant, now, lease_until, limit).await? };
        let sql = format!("SELECT EXISTS (SELECT 1 FROM runs WHERE {DUE}) AS more");
        let more: bool = sqlx::query_scalar(&sql)
            .bind(scope)
            .bind(micros(now))
            .bind(Option::<i64>::None)
            .bind(Option::<i64>::None)
            .bind(tenant)
            .fetch_one(&self.pool)
            .await
            .map_err(db)?;
        Ok(Claimed { runs, more })
    }

    async fn claim_run(&self, id: RunId, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<Option<Run>> {
        let row = sqlx::query(
            "UPDATE runs SET status = 'running', claim = claim + 1, lease_until = ?3, updated_at = ?2 WHERE id = ?1 AND \
             ((status = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= ?2)) OR (status = 'running' AND lease_until <= ?2)) \
             RETURNING *",
        )
        .bind(id)
        .bind(micros(now))
        .bind(micros(lease_until))
        .fetch_optional(&self.pool)
        .await
        .map_err(db)?;
        row.as_ref().map(run_from).transpose()
    }

    async fn release_leases(&self, scope: &str, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("UPDATE runs SET status = 'queued', lease_until = NULL, updated_at = ? WHERE scope = ? AND status = 'running'")
            .bind(micros(now))
            .bind(scope)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn finish(&self, id: RunId, claim: i64, result: RunResult) -> Result<()> {
        let outcome = serde_json::to_string(&result.outcome).map_err(|e| Error::internal(e.to_string()))?;
        let a = &result.attempt;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        // Fenced by the claim: nothing is written unless the run is still running under it.
        let done = sqlx::query(
            "UPDATE runs SET status = ?, attempts = ?, next_attempt_at = ?, lease_until = NULL, outcome = ?, updated_at = ?, \
             ledger_id = ?, ledger_reference = ?, increment_id = COALESCE(increment_id, ?) \
             WHERE id = ? AND status = 'running' AND claim = ? RETURNING scope",
        )
        .bind(result.status.as_str())
        .bind(i64::from(a.number))
        .bind(result.next_attempt_at.map(micros))
        .bind(outcome)
        .bind(micros(a.finished_at))
        .bind(&result.outcome.provider_entity_id)
        .bind(&result.outcome.provider_reference)
        .bind(a.snapshot.as_ref().and_then(Snapshot::increment_id))
        .bind(id)
        .bind(claim)
        .fetch_optional(&mut *tx)
        .await
        .map_err(db)?;
        let Some(done) = done else {
            // A lost claim: the run stays as the later claimer leaves it, but the held
            // cross-reference entries fill in what is missing or an intent (`RunStore::finish`).
            if result.xrefs.is_empty() {
                tx.rollback().await.map_err(db)?;
                return Err(super::claim_lost(id, claim));
            }
            let scope: Option<String> = sqlx::query_scalar("SELECT scope FROM runs WHERE id = ?")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db)?;
            if let Some(scope) = scope {
                write_held_xrefs(&mut tx, &scope, &result.xrefs, false).await?;
            }
            tx.commit().await.map_err(db)?;
            return Err(super::claim_lost(id, claim));
        };
        let scope: String = done.try_get("scope").map_err(db)?;
        write_held_xrefs(&mut tx, &scope, &result.xrefs, true).await?;
        let recording = recording_of(a);
        if let Some(r) = &recording {
            insert_exchanges(&mut tx, &scope, r, &a.exchanges).await?;
        }
        sqlx::query(
            "INSERT INTO attempts (run_id, number, started_at, finished_at, result, error_code, message, ledger_id, \
             recording, recording_first, recording_count, snapshot) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(id)
        .bind(i64::from(a.number))
        .bind(micros(a.started_at))
        .bind(micros(a.finished_at))
        .bind(&a.result)
        .bind(a.error_code.map(ErrorCode::as_str))
        .bind(&a.message)
        .bind(&a.ledger_id)
        .bind(recording.as_ref().map(|r| r.id.clone()))
        .bind(recording.as_ref().map(|r| i64::try_from(r.first).unwrap_or(i64::MAX)))
        .bind(recording.as_ref().map(|r| i64::try_from(r.count).unwrap_or(i64::MAX)))
        .bind(a.snapshot.as_ref().map(Snapshot::as_str))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        tx.commit().await.map_err(db)
    }

    async fn requeue(&self, scope: &str, idempotency_key: &str, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', next_attempt_at = NULL, attempts_before_retry = attempts, lease_until = NULL, updated_at = ? \
             WHERE id = (SELECT id FROM runs WHERE scope = ? AND idempotency_key = ? ORDER BY id DESC LIMIT 1) \
             AND status IN ('dead_lettered', 'queued')",
        )
        .bind(micros(now))
        .bind(scope)
        .bind(idempotency_key)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn get(&self, id: RunId) -> Result<Option<Run>> {
        let row =
            sqlx::query("SELECT * FROM runs WHERE id = ?").bind(id).fetch_optional(&self.pool).await.map_err(db)?;
        row.as_ref().map(run_from).transpose()
    }

    async fn find_by_key(&self, scope: &str, idempotency_key: &str) -> Result<Option<Run>> {
        let row = sqlx::query("SELECT * FROM runs WHERE scope = ? AND idempotency_key = ? ORDER BY id DESC LIMIT 1")
            .bind(scope)
            .bind(idempotency_key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(run_from).transpose()
    }

    async fn attempts(&self, id: RunId) -> Result<Vec<AttemptRecord>> {
        let rows = sqlx::query("SELECT * FROM attempts WHERE run_id = ? ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
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
                started_at: time(r.try_get("started_at").map_err(db)?),
                finished_at: time(r.try_get("finished_at").map_err(db)?),
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await.map_err(db)?;
        sqlx::query(
            "DELETE FROM exchanges WHERE scope = ? AND at < ? \
             AND NOT EXISTS (SELECT 1 FROM attempts WHERE attempts.recording = exchanges.recording)",
        )
        .bind(scope)
        .bind(micros(now - super::audit::LOOSE_EXCHANGES_KEPT))
        .execute(&mut *tx)
        .await
        .map_err(db)?;
        if !exchanges.is_empty() {
            insert_exchanges(&mut tx, scope, recording, exchanges).await?;
        }
        tx.commit().await.map_err(db)
    }

    async fn ledger_requests(&self, scope: &str, since: DateTime<Utc>) -> Result<RequestCount> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n, COALESCE(SUM(status = 429), 0) AS refused FROM exchanges WHERE scope = ? AND at >= ?",
        )
        .bind(scope)
        .bind(micros(since))
        .fetch_one(&self.pool)
        .await
        .map_err(db)?;
        let n: i64 = row.try_get("n").map_err(db)?;
        let refused: i64 = row.try_get("refused").map_err(db)?;
        Ok(RequestCount { requests: u64::try_from(n).unwrap_or(0), rate_limited: u64::try_from(refused).unwrap_or(0) })
    }

    async fn counts(&self, scope: &str) -> Result<BTreeMap<RunStatus, u64>> {
        let rows = sqlx::query("SELECT status, COUNT(*) AS n FROM runs WHERE scope = ? GROUP BY status")
            .bind(scope)
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        let mut out = BTreeMap::new();
        for r in rows {
            let status: String = r.try_get("status").map_err(db)?;
            let n: i64 = r.try_get("n").map_err(db)?;
            if let Some(s) = RunStatus::parse(&status) {
                out.insert(s, u64::try_from(n).unwrap_or(0));
            }
        }
        Ok(out)
    }

    async fn dead_letters(&self, scope: &str, limit: usize) -> Result<Vec<Run>> {
        let rows =
            sqlx::query("SELECT * FROM runs WHERE scope = ? AND status = 'dead_lettered' ORDER BY id DESC LIMIT ?")
                .bind(scope)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.pool)
                .await
                .map_err(db)?;
        rows.iter().map(run_from).collect()
    }

    async fn runs_with_status(&self, scope: &str, status: RunStatus) -> Result<Vec<Run>> {
        let rows = sqlx::query("SELECT * FROM runs WHERE scope = ? AND status = ? ORDER BY id")
            .bind(scope)
            .bind(status.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db)?;
        rows.iter().map(run_from).collect()
    }

    async fn query_runs(&self, query: &RunQuery) -> Result<RunPage> {
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT COUNT(*) AS n FROM runs WHERE 1 = 1");
        push_filters(&mut qb, query);
        let total: i64 = qb.build().fetch_one(&self.pool).await.map_err(db)?.try_get("n").map_err(db)?;
        let mut qb = sqlx::QueryBuilder::<sqlx::Sqlite>::new("SELECT * FROM runs WHERE 1 = 1");
        push_filters(&mut qb, query);
        qb.push(" ORDER BY created_at DESC, id DESC LIMIT ")
            .push_bind(i64::from(query.page_size()))
            .push(" OFFSET ")
            .push_bind(i64::try_from(query.offset).unwrap_or(i64::MAX));
        let rows = qb.build().fetch_all(&self.pool).await.map_err(db)?;
        Ok(RunPage {
            runs: rows.iter().map(run_from).collect::<Result<_>>()?,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    async fn requeue_run(&self, id: RunId, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', next_attempt_at = NULL, attempts_before_retry = attempts, lease_until = NULL, updated_at = ? \
             WHERE id = ? AND status IN ('dead_lettered', 'queued')",
        )
        .bind(micros(now))
        .bind(id)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn requeue_dead_letters(&self, scope: &str, tenant: Option<&str>, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE runs SET status = 'queued', next_attempt_at = NULL, attempts_before_retry = attempts, lease_until = NULL, updated_at = ? \
             WHERE scope = ? AND status = 'dead_lettered' AND (? IS NULL OR tenant_id = ?)",
        )
        .bind(micros(now))
        .bind(scope)
        .bind(tenant)
        .bind(tenant)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(done.rows_affected())
    }

    async fn waiting(&self, scope: &str, limit: usize) -> Result<Vec<Run>> {
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE scope = ? AND status = 'queued' AND outcome IS NOT NULL \
             ORDER BY next_attempt_at, id LIMIT ?",
        )
        .bind(scope)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db)?;
        rows.iter().map(run_from).collect()
    }
}

fn xref_from(row: &SqliteRow) -> Result<Xref> {
    let state: String = row.try_get("state").map_err(db)?;
    let meta: String = row.try_get("meta").map_err(db)?;
    Ok(Xref {
        state: if state == "done" { XrefState::Done } else { XrefState::Intent },
        ledger_id: row.try_get("ledger_id").map_err(db)?,
        reference: row.try_get("reference").map_err(db)?,
        meta: serde_json::from_str(&meta).unwrap_or(serde_json::Value::Null),
        updated_at: time(row.try_get("updated_at").map_err(db)?),
    })
}

/// Inserts or replaces a cross-reference entry (`put_xref`).
const XREF_UPSERT: &str = "INSERT INTO xrefs (scope, kind, key, state, ledger_id, reference, meta, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (scope, kind, key) DO UPDATE SET state = excluded.state, ledger_id = excluded.ledger_id, \
     reference = excluded.reference, meta = excluded.meta, updated_at = excluded.updated_at";

/// As [`XREF_UPSERT`], leaving an entry already done as it is (a finish whose claim was lost).
const XREF_FILL: &str = "INSERT INTO xrefs (scope, kind, key, state, ledger_id, reference, meta, updated_at) \
     VALUES (?, ?, ?, ?, ?, ?, ?, ?) \
     ON CONFLICT (scope, kind, key) DO UPDATE SET state = excluded.state, ledger_id = excluded.ledger_id, \
     reference = excluded.reference, meta = excluded.meta, updated_at = excluded.updated_at \
     WHERE xrefs.state <> 'done'";

/// Binds an entry to [`XREF_UPSERT`] or [`XREF_FILL`].
fn upsert_xref<'q>(
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    scope: &'q str,
    kind: XrefKind,
    key: &'q str,
    xref: &'q Xref,
) -> sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>> {
    q.bind(scope)
        .bind(kind.as_str())
        .bind(key)
        .bind(match xref.state {
            XrefState::Done => "done",
            XrefState::Intent => "intent",
        })
        .bind(&xref.ledger_id)
        .bind(&xref.reference)
        .bind(xref.meta.to_string())
        .bind(micros(xref.updated_at))
}

/// Writes a finish's held cross-reference entries ([`RunResult::xrefs`]) in its transaction:
/// replacing what is stored (`replace`, the claim holds), or only filling in entries missing or
/// not done yet (a lost claim).
async fn write_held_xrefs(
    conn: &mut sqlx::SqliteConnection,
    scope: &str,
    xrefs: &[(XrefKind, String, Xref)],
    replace: bool,
) -> Result<()> {
    let sql = if replace { XREF_UPSERT } else { XREF_FILL };
    for ((kind, key), x) in super::held_xrefs(xrefs) {
        upsert_xref(sqlx::query(sql), scope, kind, key, x).execute(&mut *conn).await.map_err(db)?;
    }
    Ok(())
}

#[async_trait]
impl XrefStore for SqliteStore {
    async fn get_xref(&self, scope: &str, kind: XrefKind, key: &str) -> Result<Option<Xref>> {
        let row = sqlx::query("SELECT * FROM xrefs WHERE scope = ? AND kind = ? AND key = ?")
            .bind(scope)
            .bind(kind.as_str())
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(xref_from).transpose()
    }

    async fn put_xref(&self, scope: &str, kind: XrefKind, key: &str, xref: &Xref) -> Result<()> {
        upsert_xref(sqlx::query(XREF_UPSERT), scope, kind, key, xref).execute(&self.pool).await.map_err(db)?;
        Ok(())
    }

    async fn list_xrefs(&self, scope: &str, kind: XrefKind, prefix: &str) -> Result<Vec<(String, Xref)>> {
        // A range of the primary key (`super::prefix_upper_bound`; `key` has SQLite's `BINARY`
        // collation, the order of UTF-8's bytes): only the keys listed are read.
        let bound = super::prefix_upper_bound(prefix);
        let sql = match bound {
            Some(_) => "SELECT * FROM xrefs WHERE scope = ? AND kind = ? AND key >= ? AND key < ? ORDER BY key",
            None => "SELECT * FROM xrefs WHERE scope = ? AND kind = ? AND key >= ? ORDER BY key",
        };
        let mut query = sqlx::query(sql).bind(scope).bind(kind.as_str()).bind(prefix);
        if let Some(bound) = bound {
            query = query.bind(bound);
        }
        let rows = query.fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(|r| Ok((r.try_get("key").map_err(db)?, xref_from(r)?))).collect()
    }
}

fn connection_from(row: &SqliteRow) -> Result<Connection> {
    Ok(Connection {
        scope: row.try_get("scope").map_err(db)?,
        provider: row.try_get("provider").map_err(db)?,
        base_url: row.try_get("base_url").map_err(db)?,
        token_url: row.try_get("token_url").map_err(db)?,
        created_at: time(row.try_get("created_at").map_err(db)?),
        tenant_id: row.try_get("tenant_id").map_err(db)?,
        connections_url: row.try_get("connections_url").map_err(db)?,
    })
}

#[async_trait]
impl ConnectionStore for SqliteStore {
    async fn save_connection(&self, c: &Connection) -> Result<()> {
        sqlx::query(
            "INSERT INTO connections (scope, provider, base_url, token_url, created_at, tenant_id, connections_url) \
             VALUES (?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (scope) DO UPDATE SET provider = excluded.provider, base_url = excluded.base_url, \
             token_url = excluded.token_url, tenant_id = excluded.tenant_id, connections_url = excluded.connections_url",
        )
        .bind(&c.scope)
        .bind(&c.provider)
        .bind(&c.base_url)
        .bind(&c.token_url)
        .bind(micros(c.created_at))
        .bind(&c.tenant_id)
        .bind(&c.connections_url)
        .execute(&self.pool)
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn connection(&self, scope: &str) -> Result<Option<Connection>> {
        let row = sqlx::query("SELECT * FROM connections WHERE scope = ?")
            .bind(scope)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        row.as_ref().map(connection_from).transpose()
    }

    async fn connections(&self) -> Result<Vec<Connection>> {
        let rows = sqlx::query("SELECT * FROM connections ORDER BY scope").fetch_all(&self.pool).await.map_err(db)?;
        rows.iter().map(connection_from).collect()
    }

    async fn save_tokens(&self, scope: &str, tokens: &TokenSet) -> Result<()> {
        let sealed = seal_tokens(self.key()?, scope, tokens)?;
        let done = sqlx::query("UPDATE connections SET tokens = ? WHERE scope = ?")
            .bind(sealed)
            .bind(scope)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound { what: "connection".into(), id: scope.to_owned() });
        }
        Ok(())
    }

    async fn forget_tokens(&self, scope: &str) -> Result<bool> {
        let done = sqlx::query("UPDATE connections SET tokens = NULL WHERE scope = ? AND tokens IS NOT NULL")
            .bind(scope)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn tokens(&self, scope: &str) -> Result<Option<TokenSet>> {
        let row = sqlx::query("SELECT tokens FROM connections WHERE scope = ?")
            .bind(scope)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        let Some(sealed) = row.map(|r| r.try_get::<Option<String>, _>("tokens")).transpose().map_err(db)?.flatten()
        else {
            return Ok(None);
        };
        open_tokens(self.key()?, scope, &sealed).map(Some)
    }

    async fn save_reference(&self, scope: &str, reference: &ReferenceData) -> Result<()> {
        let json = serde_json::to_string(reference).map_err(|e| Error::internal(e.to_string()))?;
        sqlx::query("UPDATE connections SET reference = ? WHERE scope = ?")
            .bind(json)
            .bind(scope)
            .execute(&self.pool)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn reference(&self, scope: &str) -> Result<Option<ReferenceData>> {
        let row = sqlx::query("SELECT reference FROM connections WHERE scope = ?")
            .bind(scope)
            .fetch_optional(&self.pool)
            .await
            .map_err(db)?;
        Ok(row
            .and_then(|r| r.try_get::<Option<String>, _>("reference").ok().flatten())
            .and_then(|j| serde_json::from_str(&j).ok()))
    }
}
