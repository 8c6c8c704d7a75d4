//! The service's stores on PostgreSQL ([`super`]) for the core's `PostgresStore`: bindings,
//! dispatch leases, the callback outbox (filled by the `runs_terminal_callback` trigger of
//! `0003_service.sql`, replaced by `0004_tenant_runs.sql`, in the transaction that finishes the
//! run) and the webhook replay cache shared by every process. The statements run on the store's
//! pool (`PostgresStore::pool`); errors are classified as the store's own (`store::postgres::db_error`); runs
//! are read with the store's reader (`store::postgres::run_from_row`).
//!
//! - A dispatch lease is one `INSERT … ON CONFLICT DO UPDATE … WHERE` (the holder renews, anyone
//!   takes over an expired lease): row locking makes two processes racing for it serialise, and
//!   the loser's `WHERE` fails.
//! - Callbacks are claimed like runs: a `MATERIALIZED` CTE selecting due rows `FOR UPDATE SKIP
//!   LOCKED`, updated to the lease in the same statement.
//! - The replay cache is one `INSERT … ON CONFLICT DO UPDATE … WHERE expires_at <= now`: of two
//!   processes recording the same `jti` at once, the second waits for the first's row and then
//!   changes nothing (a replay).

use std::borrow::Cow;

use async_trait::async_trait;
use byte8_ledger_core::{
    error::{Error, Result},
    store::{
        Dedupe, Enqueued, EnqueuedOnce, NewRun, Run, RunId,
        postgres::{
            PostgresStore, TurnPermits, bind_bound_enqueue, claimed_from_rows, db_error as db, enqueued_from_row,
            run_from_row as run_from,
        },
    },
};
use chrono::{DateTime, Utc};
use sqlx::{Row, postgres::PgRow};

use super::{
    Begun, Binding, BindingInfo, BindingStatus, BindingStore, ConnectionStatus, DispatchStats, DispatchStore,
    PendingCallback, ReplayCache, TurnEnd, TurnStart, WebhookToken, enqueue_and_begin_in_steps, open_api_key,
    parse_connection_status, read_policy, replay_key, seal_api_key, turn_on_the_run, write_policy,
};

/// PostgreSQL text cannot hold NUL: store it as U+FFFD, as the core's store does.
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(s) }
}

fn opt_text(s: Option<&str>) -> Option<Cow<'_, str>> {
    s.map(text)
}

fn info_from(row: &PgRow) -> Result<BindingInfo> {
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
        paired_at: row.try_get("paired_at").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
        updated_at: row.try_get("updated_at").map_err(db)?,
    })
}

/// A row of `bindings`, its api key opened with `store`'s master key.
fn binding_from(store: &PostgresStore, row: &PgRow) -> Result<Binding> {
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
        paired_at: row.try_get("paired_at").map_err(db)?,
        created_at: row.try_get("created_at").map_err(db)?,
        updated_at: row.try_get("updated_at").map_err(db)?,
        tenant_id,
    })
}

#[async_trait]
impl BindingStore for PostgresStore {
    async fn put_binding(&self, b: &Binding) -> Result<()> {
        let sealed = seal_api_key(self.master_key()?, &b.tenant_id, &b.api_key)?;
        let policy = write_policy(&b.policy)?;
        sqlx::query(
            "INSERT INTO bindings (tenant_id, scope, magento_base_url, ledger_base_url, api_key, policy, status, \
             magento_connection_status, paired_at, created_at, updated_at, revoked_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) \
             ON CONFLICT (tenant_id) DO UPDATE SET scope = excluded.scope, magento_base_url = excluded.magento_base_url, \
             ledger_base_url = excluded.ledger_base_url, api_key = excluded.api_key, policy = excluded.policy, \
             status = excluded.status, magento_connection_status = excluded.magento_connection_status, \
             paired_at = excluded.paired_at, updated_at = excluded.updated_at, \
             revoked_at = CASE WHEN excluded.status = 'revoked' THEN COALESCE(bindings.revoked_at, excluded.revoked_at) END",
        )
        .bind(text(&b.tenant_id))
        .bind(text(&b.scope))
        .bind(text(&b.magento_base_url))
        .bind(opt_text(b.ledger_base_url.as_deref()))
        .bind(sealed)
        .bind(text(&policy))
        .bind(b.status.as_str())
        .bind(b.magento_status.as_str())
        .bind(b.paired_at)
        .bind(b.created_at)
        .bind(b.updated_at)
        .bind((!b.is_active()).then_some(b.updated_at))
        .execute(self.statements())
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
        let row = sqlx::query("SELECT * FROM bindings WHERE tenant_id = $1")
            .bind(text(tenant_id))
            .fetch_optional(self.statements())
            .await
            .map_err(db)?;
        row.as_ref().map(|r| binding_from(self, r)).transpose()
    }

    /// The version is the row's `xmin` (the transaction that wrote this version of the row: every
    /// update writes a new one), which `byte8_enqueue_bound` (migration 0015) compares.
    async fn versioned_binding(&self, tenant_id: &str) -> Result<Option<(Binding, Option<i64>)>> {
        let row = sqlx::query("SELECT xmin::text::bigint AS row_version, * FROM bindings WHERE tenant_id = $1")
            .bind(text(tenant_id))
            .fetch_optional(self.statements())
            .await
            .map_err(db)?;
        let Some(row) = row else { return Ok(None) };
        let version: i64 = row.try_get("row_version").map_err(db)?;
        Ok(Some((binding_from(self, &row)?, Some(version))))
    }

    async fn bindings(&self) -> Result<Vec<BindingInfo>> {
        let rows = sqlx::query(
            "SELECT tenant_id, scope, magento_base_url, status, magento_connection_status, paired_at, created_at, \
             updated_at FROM bindings ORDER BY tenant_id",
        )
        .fetch_all(self.statements())
        .await
        .map_err(db)?;
        rows.iter().map(info_from).collect()
    }

    async fn set_binding_status(&self, tenant_id: &str, status: BindingStatus, now: DateTime<Utc>) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE bindings SET status = $1, updated_at = $2, \
             revoked_at = CASE WHEN $1 = 'revoked' THEN COALESCE(revoked_at, $2) END WHERE tenant_id = $3",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(text(tenant_id))
        .execute(self.statements())
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
            "UPDATE bindings SET magento_connection_status = $1, updated_at = $2 WHERE tenant_id = $3 AND paired_at = $4",
        )
        .bind(status.as_str())
        .bind(now)
        .bind(text(tenant_id))
        .bind(paired_at)
        .execute(self.statements())
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }
}

/// Marks the callbacks of the (run, generation) pairs of two parallel arrays (the parameters
/// named) delivered at `$at` (kept when delivered already). The pairs drive a nested loop over the
/// primary key: with `delivered_at IS NULL` in the `WHERE`, the planner scanned the partial index
/// of undelivered callbacks instead, through every dead entry a busy hour leaves in it.
macro_rules! mark_delivered {
    ($at:literal, $runs:literal, $generations:literal) => {
        concat!(
            "UPDATE callbacks c SET delivered_at = COALESCE(c.delivered_at, ",
            $at,
            ") \
             FROM unnest(",
            $runs,
            "::bigint[], ",
            $generations,
            "::bigint[]) AS d(run_id, generation) \
             WHERE c.run_id = d.run_id AND c.generation = d.generation"
        )
    };
}

/// A turn's end: the callbacks marked delivered (`$1`, `$2` are the scope and the holder whose
/// lease is deleted).
macro_rules! ending_turn {
    ($($mark:tt)*) => {
        concat!("WITH sent AS (", $($mark)*, " RETURNING 1) DELETE FROM dispatch_leases WHERE scope = $1 AND holder = $2")
    };
}

/// One callback marked delivered: what a turn usually delivers. The array form
/// ([`mark_delivered!`]) is planned anew at every call (PostgreSQL estimates `unnest` of a
/// parameter at 10 rows, so its generic plan never looks cheaper than one planned for the
/// array given); this one keeps its generic plan after five calls.
macro_rules! mark_one_delivered {
    ($at:literal, $run:literal, $generation:literal) => {
        concat!(
            "UPDATE callbacks c SET delivered_at = COALESCE(c.delivered_at, ",
            $at,
            ") WHERE c.run_id = ",
            $run,
            " AND c.generation = ",
            $generation
        )
    };
}

/// A turn's claim limit as its statement binds it (`LIMIT $n + 1` must not overflow).
fn claim_limit(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX - 1).min(i64::MAX - 1)
}

/// What `byte8_begin_turn`'s columns say (`turn_held`, `turn_more`, `turn_callbacks`,
/// `turn_permits`, then the claimed run's, null when none): `None` when the lease was not taken.
/// The permits it took go to the limiter they were taken for.
async fn turn_from_rows(rows: &[PgRow], permits: Option<&TurnPermits>) -> Result<Option<Begun>> {
    let Some(row) = rows.first() else { return Ok(None) };
    if !row.try_get::<Option<bool>, _>("turn_held").map_err(db)?.unwrap_or(false) {
        return Ok(None);
    }
    if let Some(permits) = permits
        && let Some(answer) = row.try_get::<Option<Vec<i64>>, _>("turn_permits").map_err(db)?
    {
        permits.deposit(&answer).await;
    }
    let callbacks_due = row.try_get::<Option<bool>, _>("turn_callbacks").map_err(db)?.unwrap_or(true);
    Ok(Some(Begun { claimed: claimed_from_rows(rows, "turn_more")?, callbacks_due }))
}

#[async_trait]
impl DispatchStore for PostgresStore {
    async fn acquire_dispatch(
        &self,
        scope: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "INSERT INTO dispatch_leases AS l (scope, holder, lease_until) VALUES ($1, $2, $4) \
             ON CONFLICT (scope) DO UPDATE SET holder = excluded.holder, lease_until = excluded.lease_until \
             WHERE l.holder = excluded.holder OR l.lease_until <= $3",
        )
        .bind(text(scope))
        .bind(text(holder))
        .bind(now)
        .bind(until)
        .execute(self.statements())
        .await
        .map_err(db)?;
        Ok(done.rows_affected() > 0)
    }

    async fn release_dispatch(&self, scope: &str, holder: &str) -> Result<()> {
        sqlx::query("DELETE FROM dispatch_leases WHERE scope = $1 AND holder = $2")
            .bind(text(scope))
            .bind(text(holder))
            .execute(self.statements())
            .await
            .map_err(db)?;
        Ok(())
    }

    /// One statement (`byte8_begin_turn`, migration 0028): the lease's upsert, and under it (only
    /// when it was taken) up to `limit + 1` of the tenant's due runs locked (`SKIP LOCKED`), the
    /// first `limit` claimed; when one is, and the business's rate limiter in this process has
    /// no permit it can use, a block of its permits taken as well (`byte8_rate_permits`, see
    /// `PostgresStore::turn_permits`) and handed to the limiter. Whether a callback is due is
    /// asked as "the business's oldest undelivered callback, due by now?" (`ORDER BY due_at LIMIT
    /// 1`), which only `callbacks_due` answers without reading the rest: asked as an `EXISTS`,
    /// the plans PostgreSQL makes for given values took a sequential scan of every callback as
    /// cheaper to the first match (its estimate of a business's undelivered callbacks is
    /// thousands when they are none) and read the whole table on each turn. The function keeps
    /// the query's generic plan (see the migration).
    async fn begin_turn(&self, turn: &TurnStart<'_>) -> Result<Option<Begun>> {
        let statement = sqlx::query(
            "SELECT t.turn_held, t.turn_more, t.turn_callbacks, t.turn_permits, (t.run).* FROM \
             byte8_begin_turn($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) AS t",
        )
        .bind(text(turn.scope))
        .bind(text(turn.holder))
        .bind(turn.now)
        .bind(turn.lease_until)
        .bind(text(turn.tenant))
        .bind(claim_limit(turn.limit))
        .bind(turn.run_lease_until);
        // The business's first permits, when a run is claimed and its limiter here has none it can
        // use (`PostgresStore::turn_permits`): the turn's first ledger request then costs no
        // statement of its own.
        let permits = if turn.limit > 0 { self.turn_permits(turn.scope) } else { None };
        let rows = TurnPermits::bind(permits.as_ref(), statement).fetch_all(self.statements()).await.map_err(db)?;
        turn_from_rows(&rows, permits.as_ref()).await
    }

    /// One statement (`byte8_enqueue_turn`, migrations 0028 and 0029): `byte8_enqueue_bound` and,
    /// when it queued a run, `byte8_begin_turn`, as [`enqueue_once`](DispatchStore::enqueue_once)
    /// and [`begin_turn`](DispatchStore::begin_turn) bind them. The lease is taken first; on an
    /// idle business (no run of the tenant queued or running) the webhook's run is inserted
    /// already claimed, the turn `byte8_begin_turn` would have begun, and the row is written once
    /// instead of inserted and then updated by the claim. A token without a binding version
    /// (which this store always gives) takes the two steps.
    async fn enqueue_and_begin(
        &self,
        webhook: &WebhookToken<'_>,
        run: NewRun,
        dedupe: Dedupe,
        turn: &TurnStart<'_>,
    ) -> Result<(EnqueuedOnce, Option<Begun>)> {
        turn_on_the_run(&run, turn)?;
        let Some(version) = webhook.binding_version else {
            return enqueue_and_begin_in_steps(self, webhook, run, dedupe, turn).await;
        };
        let statement = bind_bound_enqueue(
            sqlx::query(
                "SELECT t.kind, t.run_id, t.run_status, t.turn_held, t.turn_more, t.turn_callbacks, t.turn_permits, \
                 (t.run).* FROM byte8_enqueue_turn($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, \
                 $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28, $29) AS t",
            ),
            version,
            &replay_key(webhook.jti),
            webhook.expires_at,
            webhook.now,
            &run,
            dedupe,
        )
        .bind(text(turn.holder))
        .bind(turn.now)
        .bind(turn.lease_until)
        .bind(claim_limit(turn.limit))
        .bind(turn.run_lease_until);
        let permits = if turn.limit > 0 { self.turn_permits(turn.scope) } else { None };
        let rows = TurnPermits::bind(permits.as_ref(), statement).fetch_all(self.statements()).await.map_err(db)?;
        let first = rows.first().ok_or_else(|| Error::internal("byte8_enqueue_turn answered no row"))?;
        let enqueued = enqueued_from_row(first)?;
        self.count_queued_run(&enqueued);
        let begun = match &enqueued {
            EnqueuedOnce::Queued(Enqueued::New(_) | Enqueued::Collapsed(_)) => {
                turn_from_rows(&rows, permits.as_ref()).await?
            }
            _ => None,
        };
        Ok((enqueued, begun))
    }

    /// One statement, however many.
    async fn callbacks_sent(&self, delivered: &[(RunId, i64)], now: DateTime<Utc>) -> Result<()> {
        let statement = match delivered {
            [] => return Ok(()),
            [(run, generation)] => {
                sqlx::query(mark_one_delivered!("$1", "$2", "$3")).bind(now).bind(run).bind(generation)
            }
            _ => {
                let (runs, generations): (Vec<i64>, Vec<i64>) = delivered.iter().copied().unzip();
                sqlx::query(mark_delivered!("$1", "$2", "$3")).bind(now).bind(runs).bind(generations)
            }
        };
        statement.execute(self.statements()).await.map_err(db)?;
        Ok(())
    }

    /// One statement: the delivered callbacks marked and the lease deleted (a form for one
    /// delivery and one for several, so that each keeps one plan: see `mark_one_delivered!`;
    /// with none, `release_dispatch`).
    async fn end_turn(&self, scope: &str, holder: &str, delivered: &[(RunId, i64)], now: DateTime<Utc>) -> Result<()> {
        let lease = |sql: &'static str| sqlx::query(sql).bind(text(scope)).bind(text(holder));
        let statement = match delivered {
            [] => return self.release_dispatch(scope, holder).await,
            [(run, generation)] => {
                lease(ending_turn!(mark_one_delivered!("$3", "$4", "$5"))).bind(now).bind(run).bind(generation)
            }
            _ => {
                let (runs, generations): (Vec<i64>, Vec<i64>) = delivered.iter().copied().unzip();
                lease(ending_turn!(mark_delivered!("$3", "$4", "$5"))).bind(now).bind(runs).bind(generations)
            }
        };
        statement.execute(self.statements()).await.map_err(db)?;
        Ok(())
    }

    /// One statement for every turn of `ends` (one turn: [`end_turn`](DispatchStore::end_turn)'s):
    /// the deliveries of all of them marked, and each lease deleted where its holder still holds
    /// it. Both arrays are `unnest`ed, so the statement is planned at each call (see
    /// `mark_one_delivered!`): it stands for several statements, each of which would be a round
    /// trip of its own.
    async fn end_turns(&self, ends: &[TurnEnd], now: DateTime<Utc>) -> Result<()> {
        if let [end] = ends {
            return self.end_turn(&end.scope, &end.holder, &end.delivered, now).await;
        }
        if ends.is_empty() {
            return Ok(());
        }
        let (runs, generations): (Vec<i64>, Vec<i64>) =
            ends.iter().flat_map(|end| end.delivered.iter().copied()).unzip();
        let scopes: Vec<String> = ends.iter().map(|end| text(&end.scope).into_owned()).collect();
        let holders: Vec<String> = ends.iter().map(|end| text(&end.holder).into_owned()).collect();
        sqlx::query(concat!(
            "WITH sent AS (",
            mark_delivered!("$1", "$2", "$3"),
            " RETURNING 1) DELETE FROM dispatch_leases l USING unnest($4::text[], $5::text[]) AS e(scope, holder) \
             WHERE l.scope = e.scope AND l.holder = e.holder"
        ))
        .bind(now)
        .bind(runs)
        .bind(generations)
        .bind(scopes)
        .bind(holders)
        .execute(self.statements())
        .await
        .map_err(db)?;
        Ok(())
    }

    /// One statement (`byte8_enqueue_once`, migration 0013).
    async fn enqueue_once(
        &self,
        jti: &str,
        expires_at: i64,
        now: i64,
        binding_version: Option<i64>,
        run: NewRun,
        dedupe: Dedupe,
    ) -> Result<EnqueuedOnce> {
        self.enqueue_unless_replayed(&replay_key(jti), expires_at, now, binding_version, run, dedupe).await
    }

    async fn due_tenants(&self, now: DateTime<Utc>) -> Result<Vec<(String, String)>> {
        // Read in proportion to the businesses with open runs or undelivered callbacks, not to
        // the runs and callbacks waiting: a back-fill's queue of thousands, or a store whose
        // Magento is down with thousands of callbacks due, is one entry of each index, read once
        // a second by every process. Each list of businesses is a loose index scan (a recursive
        // step takes the first entry after the last business found: `runs_open` is ordered by
        // (tenant_id, scope), `callbacks_due` by (scope, tenant_id, due_at)). A business whose
        // dispatch lease is held is then left out before its runs are looked at: its holder
        // drains it. For the others, one due run or one due callback is enough (a scalar
        // subquery a business, `LIMIT 1`: an `EXISTS` beside an `OR` is planned as a hashed
        // subplan, which reads every due run of every business first), and the first callback of
        // a business in `callbacks_due` is its oldest. The first version read every
        // open run and every due callback on every call (3 ms a call in the bench's window, 20
        // ms during a catalogue's burst).
        let rows = sqlx::query(
            "WITH RECURSIVE open_pairs(tenant_id, scope) AS ( \
               (SELECT tenant_id, scope FROM runs WHERE tenant_id IS NOT NULL AND status IN ('queued', 'running') \
                ORDER BY tenant_id, scope LIMIT 1) \
               UNION ALL \
               SELECT n.tenant_id, n.scope FROM open_pairs p CROSS JOIN LATERAL ( \
                 SELECT tenant_id, scope FROM runs WHERE tenant_id IS NOT NULL AND status IN ('queued', 'running') \
                   AND (tenant_id, scope) > (p.tenant_id, p.scope) ORDER BY tenant_id, scope LIMIT 1) n), \
             waiting_pairs(scope, tenant_id) AS ( \
               (SELECT scope, tenant_id FROM callbacks WHERE delivered_at IS NULL AND tenant_id IS NOT NULL \
                ORDER BY scope, tenant_id LIMIT 1) \
               UNION ALL \
               SELECT n.scope, n.tenant_id FROM waiting_pairs p CROSS JOIN LATERAL ( \
                 SELECT scope, tenant_id FROM callbacks WHERE delivered_at IS NULL AND tenant_id IS NOT NULL \
                   AND (scope, tenant_id) > (p.scope, p.tenant_id) ORDER BY scope, tenant_id LIMIT 1) n), \
             unleased AS MATERIALIZED ( \
               SELECT d.scope, d.tenant_id FROM ( \
                 SELECT scope, tenant_id FROM open_pairs UNION SELECT scope, tenant_id FROM waiting_pairs) d \
               WHERE NOT EXISTS (SELECT 1 FROM dispatch_leases l WHERE l.scope = d.scope AND l.lease_until > $1)) \
             SELECT u.scope, u.tenant_id FROM unleased u \
             WHERE (SELECT true FROM runs r WHERE r.tenant_id = u.tenant_id AND r.scope = u.scope \
                      AND r.status IN ('queued', 'running') \
                      AND ((r.status = 'queued' AND (r.next_attempt_at IS NULL OR r.next_attempt_at <= $1)) \
                           OR (r.status = 'running' AND r.lease_until <= $1)) LIMIT 1) \
                OR (SELECT c.due_at FROM callbacks c WHERE c.scope = u.scope AND c.tenant_id = u.tenant_id \
                      AND c.delivered_at IS NULL ORDER BY c.due_at LIMIT 1) <= $1 \
             ORDER BY 1, 2",
        )
        .bind(now)
        .fetch_all(self.statements())
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
        let rows = sqlx::query(
            "WITH next AS MATERIALIZED (SELECT run_id FROM callbacks WHERE scope = $1 AND tenant_id = $5 AND delivered_at IS NULL AND due_at <= $2 \
               ORDER BY due_at, run_id LIMIT $4 FOR UPDATE SKIP LOCKED), \
             claimed AS (UPDATE callbacks c SET due_at = $3 FROM next WHERE c.run_id = next.run_id \
               RETURNING c.run_id, c.generation, c.attempts) \
             SELECT claimed.generation AS cb_generation, claimed.attempts AS cb_attempts, runs.* \
             FROM claimed JOIN runs ON runs.id = claimed.run_id ORDER BY runs.id",
        )
        .bind(text(scope))
        .bind(now)
        .bind(lease_until)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .bind(text(tenant))
        .fetch_all(self.statements())
        .await
        .map_err(db)?;
        rows.iter()
            .map(|row| {
                let attempts: i64 = row.try_get("cb_attempts").map_err(db)?;
                Ok(PendingCallback {
                    run: run_from(row)?,
                    generation: row.try_get("cb_generation").map_err(db)?,
                    attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn callback_sent(&self, run: RunId, generation: i64, now: DateTime<Utc>) -> Result<()> {
        sqlx::query(
            "UPDATE callbacks SET delivered_at = $3 WHERE run_id = $1 AND generation = $2 AND delivered_at IS NULL",
        )
        .bind(run)
        .bind(generation)
        .bind(now)
        .execute(self.statements())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn callback_failed(&self, run: RunId, generation: i64, next_at: DateTime<Utc>, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE callbacks SET due_at = $1, attempts = attempts + 1, last_error = $2 \
             WHERE run_id = $3 AND generation = $4 AND delivered_at IS NULL",
        )
        .bind(next_at)
        .bind(text(error))
        .bind(run)
        .bind(generation)
        .execute(self.statements())
        .await
        .map_err(db)?;
        Ok(())
    }

    async fn pending_callbacks(&self, scope: &str) -> Result<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM callbacks WHERE scope = $1 AND delivered_at IS NULL")
            .bind(text(scope))
            .fetch_one(self.statements())
            .await
            .map_err(db)?
            .try_get("n")
            .map_err(db)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn dispatch_stats(&self, scope: &str, tenant: &str, failed_since: DateTime<Utc>) -> Result<DispatchStats> {
        // Each part bounded whatever the tenant's history: its open runs by `runs_open` (tenant_id,
        // scope, id of the open runs; migration 0020), its dead letters since `failed_since` and
        // the newest run of each finished status (an index scan backwards, one entry each) by
        // `runs_by_tenant` (tenant_id, scope, status, updated_at of the finished runs; migrations
        // 0018, 0020) — not a scan of every run it ever had (`benches/history_plans.sql`).
        let row = sqlx::query(
            "SELECT \
               (SELECT COUNT(*) FROM runs WHERE tenant_id = $3 AND scope = $1 AND status IN ('queued', 'running')) \
                 AS pending, \
               (SELECT COUNT(*) FROM runs WHERE tenant_id = $3 AND scope = $1 AND status = 'dead_lettered' \
                 AND updated_at >= $2) AS failed, \
               GREATEST( \
                 (SELECT updated_at FROM runs WHERE tenant_id = $3 AND scope = $1 AND status = 'synced' \
                   ORDER BY updated_at DESC LIMIT 1), \
                 (SELECT updated_at FROM runs WHERE tenant_id = $3 AND scope = $1 AND status = 'skipped' \
                   ORDER BY updated_at DESC LIMIT 1), \
                 (SELECT updated_at FROM runs WHERE tenant_id = $3 AND scope = $1 AND status = 'dead_lettered' \
                   ORDER BY updated_at DESC LIMIT 1)) AS last_run_at",
        )
        .bind(text(scope))
        .bind(failed_since)
        .bind(text(tenant))
        .fetch_one(self.statements())
        .await
        .map_err(db)?;
        let pending: i64 = row.try_get("pending").map_err(db)?;
        let failed: i64 = row.try_get("failed").map_err(db)?;
        Ok(DispatchStats {
            pending: u64::try_from(pending).unwrap_or(0),
            failed_since: u64::try_from(failed).unwrap_or(0),
            last_run_at: row.try_get("last_run_at").map_err(db)?,
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
        let events: Vec<String> = events.iter().map(|e| (*e).to_owned()).collect();
        let rows = sqlx::query(
            "SELECT * FROM runs WHERE scope = $1 AND magento_entity_id = $2 AND event = ANY($3) AND tenant_id = $4 \
             ORDER BY id",
        )
        .bind(text(scope))
        .bind(id)
        .bind(events)
        .bind(text(tenant))
        .fetch_all(self.statements())
        .await
        .map_err(db)?;
        rows.iter().map(run_from).collect()
    }
}

#[async_trait]
impl ReplayCache for PostgresStore {
    /// One statement, `byte8_replay_record` (migrations 0019 and 0023): the upsert (see the module
    /// docs), after up to 1,600 expired keys other than this one are purged, the oldest first,
    /// when the key's `hashtext` is a multiple of sixteen (one record in sixteen: the keys are
    /// SHA-256 digests), read
    /// by the expiry index (an expired row of this key is taken over by the upsert itself). The
    /// function is the one `byte8_enqueue_once` records a webhook's `jti` with.
    async fn check_and_record(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        let recorded: bool = sqlx::query_scalar("SELECT byte8_replay_record($1, $2, $3)")
            .bind(replay_key(jti))
            .bind(expires_at)
            .bind(now)
            .fetch_one(self.statements())
            .await
            .map_err(db)?;
        Ok(recorded)
    }
}
