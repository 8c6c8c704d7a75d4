//! The service's stores on SQLite ([`super`]) for the core's `SqliteStore`: bindings, dispatch
//! leases, the callback outbox (filled by the `runs_terminal_callback` trigger of
//! `0003_service.sql`, replaced by `0004_tenant_runs.sql`) and the webhook replay cache. One
//! statement each where atomicity matters (SQLite serialises writers). The statements run on
//! the store's pool (`SqliteStore::pool`); errors are classified as the store's own
//! (`store::sqlite::db_error`); runs are read with the store's reader (`store::sqlite::run_from_row`).

use async_trait::async_trait;
use byte8_ledger_core::{
    error::{Error, Result},
    store::{
        Dedupe, EnqueuedOnce, NewRun, Run, RunId,
        sqlite::{SqliteStore, db_error as db, run_from_row as run_from},
    },
};
use chrono::{DateTime, Utc};
use sqlx::{Row, sqlite::SqliteRow};

use super::{
    Begun, Binding, BindingInfo, BindingStatus, BindingStore, ConnectionStatus, DispatchStats, DispatchStore,
    PendingCallback, ReplayCache, TurnStart, open_api_key, parse_connection_status, read_policy, replay_key,
    seal_api_key, write_policy,
};

/// A time as the SQLite schema stores it: microseconds since the epoch.
fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A stored time (microseconds since the epoch; an out-of-range value reads as the epoch, as the
/// core's store reads it).
fn time(v: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp_micros(v).unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

fn info_from(row: &SqliteRow) -> Result<BindingInfo> {
    let status: String = row.try_get("status").map_err(db)?;
    let magento: String = row.try_get("magento_connection_status").map_err(db)?;
    Ok(BindingInfo {
        tenant_id: row.try_get("tenant_id").map_err(db)?,
        scope: row.try_get("scope").map_err(db)?,
        magento_base_url: row.try_get("magento_base_url").map_err(db)?,
        status: BindingStatus::parse(&status)
            .ok_or_else(|| Error::database(format!("unknown binding status {status}"), false, None))?,
        magento_status: parse_connection_status(&magento)
            .ok_or_else(|| Error::database(format!("unknown Magento connection status {magento}"), false, None))?,
        paired_at: time(row.try_get("paired_at").map_err(db)?),
        created_at: time(row.try_get("created_at").map_err(db)?),
        updated_at: time(row.try_get("updated_at").map_err(db)?),
    })
}

/// A row of `bindings`, its api key opened with `store`'s master key.
fn binding_from(store: &SqliteStore, row: &SqliteRow) -> Result<Binding> {
    let tenant_id: String = row.try_get("tenant_id").map_err(db)?;
    let sealed: String = row.try_get("api_key").map_err(db)?;
    let policy: String = row.try_get("policy").map_err(db)?;
    let status: String = row.try_get("status").map_err(db)?;
    let magento: String = row.try_get("magento_connection_status").map_err(db)?;
    Ok(Binding {
        api_key: open_api_key(store.master_key()?, &tenant_id, &sealed)?,
        policy: read_policy(&tenant_id, &policy)?,
        status: BindingStatus::parse(&status)
            .ok_or_else(|| Error::database(format!("unknown binding status {status}"), false, None))?,
        magento_status: parse_connection_status(&magento)
            .ok_or_else(|| Error::database(format!("unknown Magento connection status {magento}"), false, None))?,
        scope: row.try_get("scope").map_err(db)?,
        magento_base_url: row.try_get("magento_base_url").map_err(db)?,
        ledger_base_url: row.try_get("ledger_base_url").map_err(db)?,
        paired_at: time(row.try_get("paired_at").map_err(db)?),
        created_at: time(row.try_get("created_at").map_err(db)?),
        updated_at: time(row.try_get("updated_at").map_err(db)?),
        tenant_id,
    })
}

#[async_trait]
impl BindingStore for SqliteStore {
    async fn put_binding(&self, b: &Binding) -> Result<()> {
        let sealed = seal_api_key(self.master_key()?, &b.tenant_id, &b.api_key)?;
        sqlx::query(
            "INSERT INTO bindings (tenant_id, scope, magento_base_url, ledger_base_url, api_key, policy, status, \
             magento_connection_status, paired_at, created_at, updated_at, revoked_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
             ON CONFLICT (tenant_id) DO UPDATE SET scope = excluded.scope, magento_base_url = excluded.magento_base_url, \
             ledger_base_url = excluded.ledger_base_url, api_key = excluded.api_key, policy = excluded.policy, \
             status = excluded.status, magento_connection_status = excluded.magento_connection_status, \
             paired_at = excluded.paired_at, updated_at = excluded.updated_at, \
             revoked_at = CASE WHEN excluded.status = 'revoked' THEN COALESCE(bindings.revoked_at, excluded.revoked_at) END",
        )
        .bind(&b.tenant_id)
        .bind(&b.scope)
        .bind(&b.magento_base_url)
        .bind(&b.ledger_base_url)
        .bind(sealed)
        .bind(write_policy(&b.policy)?)
        .bind(b.status.as_str())
        .bind(b.magento_status.as_str())
        .bind(micros(b.paired_at))
        .bind(micros(b.created_at))
        .bind(micros(b.updated_at))
        .bind((!b.is_active()).then_some(micros(b.updated_at)))
        .execute(self.pool())
        .await
        .map_err(|e| {
            if e.as_database_error().is_some_and(|d| d.is_unique_violation()) {
                super::scope_taken(&b.scope)
            } else {
                db(e)
            }
        })?;
        Ok(())
    }

    async fn binding(&self, tenant_id: &str) -> Result<Option<Binding>> {
        let row = sqlx::query("SELECT * FROM bindings WHERE tenant_id = ?")
            .bind(tenant_id)
            .fetch_optional(self.pool())
            .await
            .map_err(db)?;
        row.as_ref().map(|r| binding_from(self, r)).transpose()
    }

    async fn bindings(&self) -> Result<Vec<BindingInfo>> {
        let rows = sqlx::query(
            "SELECT tenant_id, scope, magento_base_url, status, magento_connection_status, paired_at, created_at, \
             updated_at FROM bindings ORDER BY tenant_id",
        )
        .fetch_all(self.pool())
        .await
        .map_err(db)?;
        rows.iter().map(info_from).collect()
    }

    async fn set_binding_status(&self, tenant_id: &str, status: BindingStatus, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE bindings SET status = ?1, updated_at = ?2, \
             revoked_at = CASE WHEN ?1 = 'revoked' THEN COALESCE(revoked_at, ?2) END WHERE tenant_id = ?3",
        )
        .bind(status.as_str())
        .bind(micros(now))
        .bind(tenant_id)
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_magento_status(
        &self,
        tenant_id: &str,
        paired_at: DateTime<Utc>,
        status: ConnectionStatus,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE bindings SET magento_connection_status = ?, updated_at = ? WHERE tenant_id = ? AND paired_at = ?",
        )
        .bind(status.as_str())
        .bind(micros(now))
        .bind(tenant_id)
        .bind(micros(paired_at))
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}

#[async_trait]
impl DispatchStore for SqliteStore {
    async fn acquire_dispatch(
        &self,
        scope: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO dispatch_leases (scope, holder, lease_until) VALUES (?1, ?2, ?4) \
             ON CONFLICT (scope) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
             WHERE dispatch_leases.holder = excluded.holder OR dispatch_leases.lease_until <= ?3",
        )
        .bind(scope)
        .bind(holder)
        .bind(micros(now))
        .bind(micros(until))
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_dispatch(&self, scope: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM dispatch_leases WHERE scope = ? AND holder = ?")
            .bind(scope)
            .bind(holder)
            .execute(self.pool())
            .await
            .map_err(db)?;
        Ok(())
    }

    /// The lease, then the claim (in-process: two statements cost no round trip).
    async fn begin_turn(&self, turn: &TurnStart<'_>) -> Result<Option<Begun>> {
        super::begin_turn_in_steps(self, turn).await
    }

    async fn enqueue_once(
        &self,
        jti: &str,
        expires_at: i64,
        now: i64,
        binding_version: Option<i64>,
        run: NewRun,
        dedupe: Dedupe,
    ) -> Result<EnqueuedOnce> {
        super::enqueue_once_in_steps(self, jti, expires_at, now, binding_version, run, dedupe).await
    }

    async fn due_tenants(&self, now: DateTime<Utc>) -> Result<Vec<(String, String)>> {
        // The partial indexes of migration 0009 (open runs, undelivered callbacks) keep this
        // read proportional to the work waiting, not to the history kept. A business whose
        // dispatch lease is held is left out: its holder drains it.
        let rows = sqlx::query(
            "SELECT d.scope, d.tenant_id FROM ( \
               SELECT scope, tenant_id FROM runs WHERE tenant_id IS NOT NULL AND status IN ('queued', 'running') \
                 AND ((status = 'queued' AND (next_attempt_at IS NULL OR next_attempt_at <= ?1)) \
                      OR (status = 'running' AND lease_until <= ?1)) \
               UNION \
               SELECT scope, tenant_id FROM callbacks WHERE delivered_at IS NULL AND due_at <= ?1) d \
             WHERE NOT EXISTS (SELECT 1 FROM dispatch_leases l WHERE l.scope = d.scope AND l.lease_until > ?1) \
             ORDER BY 1, 2",
        )
        .bind(micros(now))
        .fetch_all(self.pool())
        .await
        .map_err(db)?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0).map_err(db)?, r.try_get::<String, _>(1).map_err(db)?)))
            .collect()
    }

    async fn claim_callbacks(
        &self,
        scope: &str,
        tenant: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PendingCallback>> {
        // One statement: SQLite runs it under its single writer lock, so two claimers never get
        // the same row.
        let claimed = sqlx::query(
            "UPDATE callbacks SET due_at = ?3 WHERE run_id IN \
             (SELECT run_id FROM callbacks WHERE scope = ?1 AND tenant_id = ?5 AND delivered_at IS NULL AND due_at <= ?2 \
             ORDER BY due_at, run_id LIMIT ?4) \
             RETURNING run_id, generation, attempts",
        )
        .bind(scope)
        .bind(micros(now))
        .bind(micros(lease_until))
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(tenant)
        .fetch_all(self.pool())
        .await
        .map_err(db)?;
        let mut out = Vec::with_capacity(claimed.len());
        for row in claimed {
            let id: i64 = row.try_get("run_id").map_err(db)?;
            let attempts: i64 = row.try_get("attempts").map_err(db)?;
            let run = sqlx::query("SELECT * FROM runs WHERE id = ?")
                .bind(id)
                .fetch_one(self.pool())
                .await
                .map_err(db)
                .and_then(|r| run_from(&r))?;
            out.push(PendingCallback {
                run,
                generation: row.try_get("generation").map_err(db)?,
                attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            });
        }
        out.sort_by_key(|c| c.run.id);
        Ok(out)
    }

    async fn callback_sent(&self, run: RunId, generation: i64, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE callbacks SET delivered_at = ? WHERE run_id = ? AND generation = ? AND delivered_at IS NULL",
        )
        .bind(micros(now))
        .bind(run)
        .bind(generation)
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn callback_failed(&self, run: RunId, generation: i64, next_at: DateTime<Utc>, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE callbacks SET due_at = ?, attempts = attempts + 1, last_error = ? WHERE run_id = ? AND generation = ? \
             AND delivered_at IS NULL",
        )
        .bind(micros(next_at))
        .bind(error)
        .bind(run)
        .bind(generation)
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn pending_callbacks(&self, scope: &str) -> Result<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM callbacks WHERE scope = ? AND delivered_at IS NULL")
            .bind(scope)
            .fetch_one(self.pool())
            .await
            .map_err(db)?
            .try_get("n")
            .map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn dispatch_stats(&self, scope: &str, tenant: &str, failed_since: DateTime<Utc>) -> Result<DispatchStats> {
        // As on PostgreSQL: each part bounded by `runs_by_tenant` (tenant_id, scope, status,
        // updated_at; migration 0018), not a scan of the tenant's whole history.
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM runs WHERE tenant_id = ?3 AND scope = ?1 AND status IN ('queued', 'running')) \
                 AS pending, \
               (SELECT COUNT(*) FROM runs WHERE tenant_id = ?3 AND scope = ?1 AND status = 'dead_lettered' \
                 AND updated_at >= ?2) AS failed, \
               (SELECT MAX(t) FROM ( \
                 SELECT (SELECT updated_at FROM runs WHERE tenant_id = ?3 AND scope = ?1 AND status = 'synced' \
                   ORDER BY updated_at DESC LIMIT 1) AS t \
                 UNION ALL SELECT (SELECT updated_at FROM runs WHERE tenant_id = ?3 AND scope = ?1 \
                   AND status = 'skipped' ORDER BY updated_at DESC LIMIT 1) \
                 UNION ALL SELECT (SELECT updated_at FROM runs WHERE tenant_id = ?3 AND scope = ?1 \
                   AND status = 'dead_lettered' ORDER BY updated_at DESC LIMIT 1))) AS last_run_at",
        )
        .bind(scope)
        .bind(micros(failed_since))
        .bind(tenant)
        .fetch_one(self.pool())
        .await
        .map_err(db)?;
        let pending: i64 = row.try_get("pending").map_err(db)?;
        let failed: i64 = row.try_get("failed").map_err(db)?;
        let last: Option<i64> = row.try_get("last_run_at").map_err(db)?;
        Ok(DispatchStats {
            pending: u64::try_from(pending).unwrap_or(0),
            failed_since: u64::try_from(failed).unwrap_or(0),
            last_run_at: last.map(time),
        })
    }

    async fn entity_runs(
        &self,
        scope: &str,
        tenant: &str,
        events: &[&str],
        magento_entity_id: u64,
    ) -> Result<Vec<Run>> {
        let Ok(id) = i64::try_from(magento_entity_id) else { return Ok(Vec::new()) };
        let rows =
            sqlx::query("SELECT * FROM runs WHERE scope = ? AND tenant_id = ? AND magento_entity_id = ? ORDER BY id")
                .bind(scope)
                .bind(tenant)
                .bind(id)
                .fetch_all(self.pool())
                .await
                .map_err(db)?;
        let runs = rows.iter().map(run_from).collect::<Result<Vec<_>>>()?;
        Ok(runs.into_iter().filter(|r| r.event.as_deref().is_some_and(|e| events.contains(&e))).collect())
    }
}

#[async_trait]
impl ReplayCache for SqliteStore {
    /// One upsert: a new key is inserted, an expired one is taken over, a live one is left alone
    /// (no row changed: a replay). Expired keys are purged a hundred at a time on the way.
    async fn check_and_record(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        sqlx::query(
            "DELETE FROM replay_cache WHERE key IN (SELECT key FROM replay_cache WHERE expires_at <= ? LIMIT 100)",
        )
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(db)?;
        let done = sqlx::query(
            "INSERT INTO replay_cache (key, expires_at) VALUES (?1, ?2) ON CONFLICT (key) DO UPDATE \
             SET expires_at = excluded.expires_at WHERE replay_cache.expires_at <= ?3",
        )
        .bind(replay_key(jti))
        .bind(expires_at)
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}
