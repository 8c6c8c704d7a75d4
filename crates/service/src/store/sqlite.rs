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

/// The service's look for work (`DispatchStore::due_tenants`): `?1` is now.
///
/// Read in proportion to the businesses with open runs or undelivered callbacks, not to the runs
/// and callbacks waiting (migration 0027; PostgreSQL's look reads the same way). Each list of
/// businesses is a loose index scan of a partial index ordered by business (`runs_open`,
/// `callbacks_waiting`): a recursive step takes the first entry after the last business found,
/// by its rowid, as the next entry of the same tenant (or business) or else the first of the
/// next one (two seeks: SQLite ranges a row-value comparison on its first column only, which
/// would read a back-fill's whole queue). The indexes are named (`INDEXED BY`): without,
/// SQLite's planner took `runs_by_tenant` and `callbacks_due`, which hold the finished history
/// too. A business whose dispatch lease is held is then left out: its holder drains it. For the
/// others one due entry is enough: a queued run due now (`next_attempt_at` null, or a range of
/// `runs_due` up to now), a running run whose lease ended (a business's running runs are its last
/// claim), or a callback due (a range up to now). The first version read every open run and
/// every undelivered callback on every call.
const LOOK_FOR_WORK: &str = "WITH RECURSIVE \
   open_pairs(tenant_id, scope) AS ( \
     SELECT * FROM (SELECT tenant_id, scope FROM runs INDEXED BY runs_open WHERE tenant_id IS NOT NULL \
       AND status IN ('queued', 'running') ORDER BY tenant_id, scope LIMIT 1) \
     UNION ALL \
     SELECT r.tenant_id, r.scope FROM open_pairs p JOIN runs r ON r.rowid = COALESCE( \
       (SELECT rowid FROM runs INDEXED BY runs_open WHERE tenant_id = p.tenant_id AND scope > p.scope \
          AND status IN ('queued', 'running') ORDER BY scope LIMIT 1), \
       (SELECT rowid FROM runs INDEXED BY runs_open WHERE tenant_id > p.tenant_id \
          AND status IN ('queued', 'running') ORDER BY tenant_id, scope LIMIT 1))), \
   waiting_pairs(scope, tenant_id) AS ( \
     SELECT * FROM (SELECT scope, tenant_id FROM callbacks INDEXED BY callbacks_waiting WHERE tenant_id IS NOT NULL \
       AND delivered_at IS NULL ORDER BY scope, tenant_id LIMIT 1) \
     UNION ALL \
     SELECT c.scope, c.tenant_id FROM waiting_pairs p JOIN callbacks c ON c.rowid = COALESCE( \
       (SELECT rowid FROM callbacks INDEXED BY callbacks_waiting WHERE scope = p.scope AND tenant_id > p.tenant_id \
          AND delivered_at IS NULL ORDER BY tenant_id LIMIT 1), \
       (SELECT rowid FROM callbacks INDEXED BY callbacks_waiting WHERE scope > p.scope AND tenant_id IS NOT NULL \
          AND delivered_at IS NULL ORDER BY scope, tenant_id LIMIT 1))) \
   SELECT d.scope, d.tenant_id FROM ( \
     SELECT scope, tenant_id FROM open_pairs UNION SELECT scope, tenant_id FROM waiting_pairs) d \
   WHERE NOT EXISTS (SELECT 1 FROM dispatch_leases l WHERE l.scope = d.scope AND l.lease_until > ?1) \
   AND (EXISTS (SELECT 1 FROM runs r WHERE r.scope = d.scope AND r.tenant_id = d.tenant_id \
            AND r.status = 'queued' AND r.next_attempt_at IS NULL) \
       OR EXISTS (SELECT 1 FROM runs r WHERE r.scope = d.scope AND r.tenant_id = d.tenant_id \
            AND r.status = 'queued' AND r.next_attempt_at <= ?1) \
       OR EXISTS (SELECT 1 FROM runs r WHERE r.scope = d.scope AND r.tenant_id = d.tenant_id \
            AND r.status = 'running' AND r.lease_until <= ?1) \
       OR EXISTS (SELECT 1 FROM callbacks c WHERE c.scope = d.scope AND c.tenant_id = d.tenant_id \
            AND c.delivered_at IS NULL AND c.due_at <= ?1)) \
   ORDER BY 1, 2";

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
        let rows = sqlx::query(LOOK_FOR_WORK).bind(micros(now)).fetch_all(self.pool()).await.map_err(db)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What SQLite's planner does with the look for work (`EXPLAIN QUERY PLAN`, one line a step).
    async fn plan(store: &SqliteStore, now: i64) -> Vec<String> {
        let explain = format!("EXPLAIN QUERY PLAN {LOOK_FOR_WORK}");
        let rows = sqlx::query(&explain).bind(now).fetch_all(store.pool()).await.unwrap();
        rows.iter().map(|r| r.try_get::<String, _>("detail").unwrap()).collect()
    }

    /// The look for work reads an entry or two of each business with work waiting, not every run
    /// and callback waiting (migration 0027). On a node of 1,000 businesses with a finished
    /// history, 70 of them with a run waiting for tomorrow, one back-filling (5,000 queued runs
    /// due, its dispatch lease held; its tenant has a run due in the business it was paired to
    /// before) and one whose Magento is down (2,000 undelivered callbacks due, of two tenants), it
    /// names every business and tenant with work due but the back-fill, then the back-fill once its
    /// lease is free; and its
    /// plan, before and after `ANALYZE` (a node's statistics change SQLite's choices), reads runs
    /// and callbacks only by index searches on a business (or a range after the last business
    /// found), never by a scan of a table or of a whole index, except the first entry of each
    /// list. The first version's plan (checked) scanned `runs_open` (next_attempt_at) and
    /// `callbacks_undelivered` (due_at) whole.
    #[tokio::test]
    async fn the_look_for_work_reads_each_business_not_each_run_waiting() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path().join("state.db"), None).await.unwrap();
        let day = 86_400_000_000_i64;
        let now = 20_000 * day;
        let runs = "INSERT INTO runs (scope, idempotency_key, event, magento_entity_id, raw, fingerprint, policy, \
                    status, attempts, created_at, updated_at, tenant_id, claim, next_attempt_at) ";
        let fill = [
            // 1,000 businesses, 20 finished runs each.
            format!(
                "{runs} WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < 19999) \
                 SELECT printf('b%04d', n / 20), 'invoice.created:' || n, 'invoice.created', n, '{{}}', 'fp', '{{}}', \
                 'synced', 1, {old}, {old}, printf('t%04d', n / 20), 1, NULL FROM g",
                old = now - 30 * day
            ),
            // 70 of them with a run waiting for tomorrow (a back-off).
            format!(
                "{runs} WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < 69) \
                 SELECT printf('b%04d', n * 13), 'invoice.created:w' || n, 'invoice.created', n, '{{}}', 'fp', '{{}}', \
                 'queued', 1, {now}, {now}, printf('t%04d', n * 13), 1, {later} FROM g",
                later = now + day
            ),
            // A back-fill: 5,000 runs queued and due.
            format!(
                "{runs} WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < 4999) \
                 SELECT 'backfill', 'invoice.created:' || n, 'invoice.created', n, '{{}}', 'fp', '{{}}', \
                 'queued', 0, {now}, {now}, 'backfill-t', 0, NULL FROM g"
            ),
            // The back-fill's tenant was paired to another business before: a run of it waits
            // there too (a loose scan's step within one tenant).
            format!(
                "{runs} VALUES ('backfill-old', 'invoice.created:1', 'invoice.created', 1, '{{}}', 'fp', '{{}}', \
                 'queued', 0, {now}, {now}, 'backfill-t', 0, NULL)"
            ),
            // A store whose Magento is down: 2,000 finished runs, their callbacks due (a tenth of
            // them a second tenant's of the business: a step within one business), and the
            // 20,000 callbacks the history delivered.
            format!(
                "{runs} WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < 1999) \
                 SELECT 'down', 'invoice.created:' || n, 'invoice.created', n, '{{}}', 'fp', '{{}}', \
                 'synced', 1, {now}, {now}, CASE WHEN n % 10 = 0 THEN 'down-u' ELSE 'down-t' END, 1, NULL FROM g"
            ),
            "INSERT INTO callbacks (run_id, scope, tenant_id, generation, due_at, attempts, created_at, delivered_at) \
             SELECT id, scope, tenant_id, 1, updated_at, 0, updated_at, \
             CASE WHEN scope = 'down' THEN NULL ELSE updated_at END FROM runs WHERE status = 'synced'"
                .to_owned(),
            format!("INSERT INTO dispatch_leases (scope, holder, lease_until) VALUES ('backfill', 'w', {})", now + day),
        ];
        for statement in &fill {
            sqlx::query(statement).execute(store.pool()).await.unwrap();
        }
        let at = DateTime::<Utc>::from_timestamp_micros(now).unwrap();
        let pair = |s: &str, t: &str| (s.to_owned(), t.to_owned());
        let others = [pair("backfill-old", "backfill-t"), pair("down", "down-t"), pair("down", "down-u")];
        assert_eq!(store.due_tenants(at).await.unwrap(), others, "all but the business whose lease is held");
        sqlx::query("DELETE FROM dispatch_leases").execute(store.pool()).await.unwrap();
        let all = [pair("backfill", "backfill-t"), others[0].clone(), others[1].clone(), others[2].clone()];
        assert_eq!(
            store.due_tenants(at).await.unwrap(),
            all,
            "the back-fill's lease released: its business is due again"
        );
        let tomorrow = DateTime::<Utc>::from_timestamp_micros(now + day).unwrap();
        assert_eq!(store.due_tenants(tomorrow).await.unwrap().len(), 74, "tomorrow the 70 back-offs are due too");

        for analysed in [false, true] {
            if analysed {
                sqlx::query("ANALYZE").execute(store.pool()).await.unwrap();
            }
            let plan = plan(&store, now).await;
            let reads: Vec<&String> = plan
                .iter()
                .filter(|d| d.contains("runs") || d.contains("callbacks") || d.contains(" r ") || d.contains(" c "))
                .collect();
            // The first entry of each list: the whole index in order, stopped by `LIMIT 1`.
            let first = |d: &str| d == "SCAN callbacks USING COVERING INDEX callbacks_waiting";
            for d in &reads {
                assert!(
                    d.starts_with("SEARCH ") || first(d),
                    "analysed {analysed}: a step that reads a whole table or index: {d}\n{plan:#?}"
                );
            }
            let steps = [
                "SEARCH runs USING COVERING INDEX runs_open (tenant_id=? AND scope>?)",
                "SEARCH runs USING COVERING INDEX runs_open (tenant_id>?)",
                "SEARCH callbacks USING COVERING INDEX callbacks_waiting (scope=? AND tenant_id>?)",
                "SEARCH callbacks USING COVERING INDEX callbacks_waiting (scope>?)",
            ];
            for step in steps {
                assert!(plan.iter().any(|d| d == step), "analysed {analysed}: the loose scan's step {step}: {plan:#?}");
            }
        }
    }
}
