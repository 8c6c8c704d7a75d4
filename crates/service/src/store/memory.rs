//! The service's stores in memory ([`super`]): [`MemoryServiceStore`], the core's
//! [`MemoryStore`] carrying the service's tables ([`ServiceTables`]) as its extension, so that
//! they live under the store's one lock with the runs.
//!
//! # Why an extension of the core's memory store
//!
//! The SQL stores write the callback outbox row in the transaction that ends the run (a trigger
//! on `runs`), purge a disconnected tenant's runs and binding in one transaction, and read runs
//! and callbacks together ([`DispatchStore::due_tenants`]). A separate service store wrapping
//! the core's would need two locks and could not keep those guarantees; so the core's memory
//! store offers a documented extension point ([`MemoryExtension`]), and:
//!
//! - [`MemoryExtension::run_ended`] queues the callback of a run that `finish` ended, when its
//!   **own tenant** is active on its business, under the lock that wrote the outcome: the outbox
//!   row is written with the terminal outcome, its generation the claim the run finished under,
//!   and tenant A's outcomes are never called back into tenant B's store;
//! - [`MemoryExtension::purge`] purges disconnected tenants (runs, attempts, callbacks,
//!   binding, the cross-reference of a business left with nothing) in the purge's critical
//!   section, before the core purges finished runs' raw events and attempts;
//! - the service traits below take the store's lock ([`MemoryStore::lock_tables`]) and read the
//!   runs and the service's tables under it.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use byte8_ledger_core::{
    error::Result,
    store::{
        Dedupe, EnqueuedOnce, NewRun, Run, RunId, RunStatus,
        memory::{MemoryExtension, MemoryGuard, MemoryStore, MemoryTables},
        retention::{Cutoffs, PurgeReport},
    },
};
use chrono::{DateTime, Utc};

use super::{
    Begun, Binding, BindingInfo, BindingStatus, BindingStore, ConnectionStatus, DispatchStats, DispatchStore,
    PendingCallback, ReplayCache, TurnStart, replay_key,
};

/// The service's memory store: the core's [`MemoryStore`] with the service's tables
/// ([`ServiceTables`]) under its lock. `MemoryServiceStore::default()` is an empty one.
pub type MemoryServiceStore = MemoryStore<ServiceTables>;

/// The service's tables in memory: tenant bindings, dispatch leases, the callback outbox and
/// the replay cache (see the [module docs](self)).
#[derive(Debug, Default)]
pub struct ServiceTables {
    bindings: BTreeMap<String, Binding>,
    leases: HashMap<String, (String, DateTime<Utc>)>,
    callbacks: BTreeMap<RunId, Callback>,
    replay: HashMap<String, i64>,
    /// When each revoked tenant was disconnected (the SQL stores' `bindings.revoked_at`).
    revoked_at: HashMap<String, DateTime<Utc>>,
}

#[derive(Debug, Clone)]
struct Callback {
    scope: String,
    tenant: String,
    generation: i64,
    due_at: DateTime<Utc>,
    attempts: u32,
    delivered_at: Option<DateTime<Utc>>,
}

impl MemoryExtension for ServiceTables {
    /// Queues the callback of `run` when its own tenant is active on its business (what the SQL
    /// stores' trigger does).
    fn run_ended(&mut self, run: &Run, _tables: &MemoryTables) {
        let Some(tenant) = run.tenant_id.clone() else { return };
        let active = self.bindings.get(&tenant).is_some_and(|b| b.scope == run.scope && b.is_active());
        if !run.status.is_terminal() || !active {
            return;
        }
        let (scope, at) = (run.scope.clone(), run.updated_at);
        // The claim it finished under (migration 0016's rule): a run finished again was claimed
        // again.
        let generation = run.claim;
        self.callbacks
            .insert(run.id, Callback { scope, tenant, generation, due_at: at, attempts: 0, delivered_at: None });
    }

    /// Disconnected tenants past their time and delivered callbacks past theirs (see
    /// `byte8_ledger_core::store::retention`).
    fn purge(&mut self, t: &mut MemoryTables, cutoffs: &Cutoffs, apply: bool, report: &mut PurgeReport) -> Vec<RunId> {
        purge(self, t, cutoffs, apply, report)
    }
}

/// Records when a tenant was disconnected: the first time it is seen revoked (a repeated
/// disconnection keeps the first time), forgotten when it is active again.
fn set_revoked(s: &mut ServiceTables, tenant: &str, status: BindingStatus, now: DateTime<Utc>) {
    match status {
        BindingStatus::Active => {
            s.revoked_at.remove(tenant);
        }
        BindingStatus::Revoked => {
            s.revoked_at.entry(tenant.to_owned()).or_insert(now);
        }
    }
}

/// The service's part of the retention purge under the store's one lock; with `apply` false it
/// only counts. Answers the runs of the purged tenants.
fn purge(
    s: &mut ServiceTables,
    t: &mut MemoryTables,
    cutoffs: &Cutoffs,
    apply: bool,
    report: &mut PurgeReport,
) -> Vec<RunId> {
    // Disconnected tenants past their time.
    let gone: Vec<(String, String)> = s
        .bindings
        .values()
        .filter(|b| !b.is_active() && s.revoked_at.get(&b.tenant_id).is_some_and(|t| *t < cutoffs.disconnected))
        .map(|b| (b.tenant_id.clone(), b.scope.clone()))
        .collect();
    let gone_runs: Vec<RunId> = t
        .runs()
        .filter(|r| r.tenant_id.as_ref().is_some_and(|t| gone.iter().any(|(g, _)| g == t)))
        .map(|r| r.id)
        .collect();
    report.runs += count(gone_runs.len());
    let mut attempts = 0;
    let mut callbacks = 0;
    for id in &gone_runs {
        attempts += t.attempt_count(*id);
        callbacks += usize::from(s.callbacks.contains_key(id));
    }
    // Callbacks of the gone tenants not attached to a gone run (none expected) still go.
    callbacks += s
        .callbacks
        .iter()
        .filter(|(id, c)| !gone_runs.contains(id) && gone.iter().any(|(g, _)| *g == c.tenant))
        .count();
    // The cross-reference of businesses left with no tenant and no run.
    let remaining_binding =
        |scope: &str| s.bindings.values().any(|b| b.scope == scope && !gone.iter().any(|(g, _)| *g == b.tenant_id));
    let remaining_run = |scope: &str| t.runs().any(|r| r.scope == scope && !gone_runs.contains(&r.id));
    let mut scopes: Vec<&String> = gone.iter().map(|(_, scope)| scope).collect();
    scopes.sort();
    scopes.dedup();
    let xref_scopes: Vec<String> =
        scopes.into_iter().filter(|scope| !remaining_binding(scope) && !remaining_run(scope)).cloned().collect();
    report.xrefs += count(xref_scopes.iter().map(|scope| t.xref_count(scope)).sum());
    // Delivered callbacks past their time (of the others).
    let delivered: Vec<RunId> = s
        .callbacks
        .iter()
        .filter(|(id, c)| {
            !gone_runs.contains(id)
                && !gone.iter().any(|(g, _)| *g == c.tenant)
                && c.delivered_at.is_some_and(|t| t < cutoffs.delivered_callbacks)
        })
        .map(|(id, _)| *id)
        .collect();
    callbacks += delivered.len();
    report.attempts += count(attempts);
    report.callbacks += count(callbacks);
    report.tenants.extend(gone.iter().map(|(t, _)| t.clone()));
    report.tenants.sort();
    if apply {
        for id in &gone_runs {
            t.remove_run(*id);
            s.callbacks.remove(id);
        }
        for (tenant, _) in &gone {
            s.callbacks.retain(|_, c| c.tenant != *tenant);
            s.bindings.remove(tenant);
            s.revoked_at.remove(tenant);
        }
        for scope in &xref_scopes {
            t.remove_xrefs(scope);
        }
        for id in &delivered {
            s.callbacks.remove(id);
        }
    }
    gone_runs
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

/// The store under its lock, as the service's methods use it: the core's tables (read through
/// their methods) and the service's.
struct Locked<'a> {
    tables: &'a MemoryTables,
    service: &'a mut ServiceTables,
}

/// The two halves of a held lock.
fn split<'a>(g: &'a mut MemoryGuard<'_, ServiceTables>) -> Locked<'a> {
    let (tables, service) = g.parts();
    Locked { tables, service }
}

#[async_trait]
impl BindingStore for MemoryServiceStore {
    async fn put_binding(&self, binding: &Binding) -> Result<()> {
        let mut g = self.lock_tables();
        let s = split(&mut g);
        let mut b = binding.clone();
        if b.is_active()
            && s.service.bindings.values().any(|o| o.scope == b.scope && o.is_active() && o.tenant_id != b.tenant_id)
        {
            return Err(super::scope_taken(&b.scope));
        }
        if let Some(old) = s.service.bindings.get(&b.tenant_id) {
            b.created_at = old.created_at;
        }
        set_revoked(s.service, &b.tenant_id, b.status, b.updated_at);
        s.service.bindings.insert(b.tenant_id.clone(), b);
        Ok(())
    }

    async fn binding(&self, tenant_id: &str) -> Result<Option<Binding>> {
        Ok(split(&mut self.lock_tables()).service.bindings.get(tenant_id).cloned())
    }

    async fn bindings(&self) -> Result<Vec<BindingInfo>> {
        Ok(split(&mut self.lock_tables()).service.bindings.values().map(Binding::info).collect())
    }

    async fn set_binding_status(&self, tenant_id: &str, status: BindingStatus, now: DateTime<Utc>) -> Result<bool> {
        let mut g = self.lock_tables();
        let s = split(&mut g);
        match s.service.bindings.get_mut(tenant_id) {
            Some(b) => {
                b.status = status;
                b.updated_at = now;
                set_revoked(s.service, tenant_id, status, now);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn set_magento_status(
        &self,
        tenant_id: &str,
        paired_at: DateTime<Utc>,
        status: ConnectionStatus,
        now: DateTime<Utc>,
    ) -> Result<bool> {
        let mut g = self.lock_tables();
        let s = split(&mut g);
        match s.service.bindings.get_mut(tenant_id) {
            Some(b) if b.paired_at == paired_at => {
                b.magento_status = status;
                b.updated_at = now;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

#[async_trait]
impl DispatchStore for MemoryServiceStore {
    async fn acquire_dispatch(
        &self,
        scope: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let mut g = self.lock_tables();
        let s = split(&mut g);
        let free = s.service.leases.get(scope).is_none_or(|(h, t)| h == holder || *t <= now);
        if free {
            s.service.leases.insert(scope.to_owned(), (holder.to_owned(), until));
        }
        Ok(free)
    }

    async fn release_dispatch(&self, scope: &str, holder: &str) -> Result<()> {
        let mut g = self.lock_tables();
        let s = split(&mut g);
        if s.service.leases.get(scope).is_some_and(|(h, _)| h == holder) {
            s.service.leases.remove(scope);
        }
        Ok(())
    }

    /// The lease, then the claim (one lock each: nobody else claims a business's runs without
    /// its lease).
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
        let mut g = self.lock_tables();
        let s = split(&mut g);
        let mut due: std::collections::BTreeSet<(String, String)> = s
            .tables
            .runs()
            .filter(|r| s.tables.is_due(r, now))
            .filter_map(|r| r.tenant_id.clone().map(|t| (r.scope.clone(), t)))
            .collect();
        due.extend(
            s.service
                .callbacks
                .values()
                .filter(|c| c.delivered_at.is_none() && c.due_at <= now)
                .map(|c| (c.scope.clone(), c.tenant.clone())),
        );
        // A business whose dispatch lease is held is left out: its holder drains it.
        due.retain(|(scope, _)| s.service.leases.get(scope).is_none_or(|(_, until)| *until <= now));
        Ok(due.into_iter().collect())
    }

    async fn claim_callbacks(
        &self,
        scope: &str,
        tenant: &str,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<PendingCallback>> {
        let mut g = self.lock_tables();
        let s = split(&mut g);
        let mut due: Vec<(DateTime<Utc>, RunId)> = s
            .service
            .callbacks
            .iter()
            .filter(|(_, c)| c.scope == scope && c.tenant == tenant && c.delivered_at.is_none() && c.due_at <= now)
            .map(|(id, c)| (c.due_at, *id))
            .collect();
        due.sort();
        due.truncate(limit);
        let mut out = Vec::with_capacity(due.len());
        for (_, id) in due {
            let Some(run) = s.tables.run(id).cloned() else { continue };
            if let Some(c) = s.service.callbacks.get_mut(&id) {
                c.due_at = lease_until;
                out.push(PendingCallback { run, generation: c.generation, attempts: c.attempts });
            }
        }
        out.sort_by_key(|c| c.run.id);
        Ok(out)
    }

    async fn callback_sent(&self, run: RunId, generation: i64, now: DateTime<Utc>) -> Result<()> {
        let mut g = self.lock_tables();
        let s = split(&mut g);
        if let Some(c) = s.service.callbacks.get_mut(&run).filter(|c| c.generation == generation) {
            c.delivered_at.get_or_insert(now);
        }
        Ok(())
    }

    async fn callback_failed(&self, run: RunId, generation: i64, next_at: DateTime<Utc>, _error: &str) -> Result<()> {
        let mut g = self.lock_tables();
        let s = split(&mut g);
        if let Some(c) =
            s.service.callbacks.get_mut(&run).filter(|c| c.generation == generation && c.delivered_at.is_none())
        {
            c.due_at = next_at;
            c.attempts = c.attempts.saturating_add(1);
        }
        Ok(())
    }

    async fn pending_callbacks(&self, scope: &str) -> Result<u64> {
        let n = split(&mut self.lock_tables())
            .service
            .callbacks
            .values()
            .filter(|c| c.scope == scope && c.delivered_at.is_none())
            .count();
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    async fn dispatch_stats(&self, scope: &str, tenant: &str, failed_since: DateTime<Utc>) -> Result<DispatchStats> {
        let mut g = self.lock_tables();
        let s = split(&mut g);
        let mut stats = DispatchStats::default();
        for r in s.tables.runs().filter(|r| r.scope == scope && r.tenant_id.as_deref() == Some(tenant)) {
            match r.status {
                RunStatus::Queued | RunStatus::Running => stats.pending += 1,
                RunStatus::DeadLettered if r.updated_at >= failed_since => stats.failed_since += 1,
                _ => {}
            }
            if r.status.is_terminal() {
                stats.last_run_at = Some(stats.last_run_at.map_or(r.updated_at, |t| t.max(r.updated_at)));
            }
        }
        Ok(stats)
    }

    async fn entity_runs(
        &self,
        scope: &str,
        tenant: &str,
        events: &[&str],
        magento_entity_id: u64,
    ) -> Result<Vec<Run>> {
        Ok(split(&mut self.lock_tables())
            .tables
            .runs()
            .filter(|r| {
                r.scope == scope
                    && r.tenant_id.as_deref() == Some(tenant)
                    && r.magento_entity_id == Some(magento_entity_id)
                    && r.event.as_deref().is_some_and(|e| events.contains(&e))
            })
            .cloned()
            .collect())
    }
}

#[async_trait]
impl ReplayCache for MemoryServiceStore {
    async fn check_and_record(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        let mut g = self.lock_tables();
        let s = split(&mut g);
        s.service.replay.retain(|_, exp| *exp > now);
        let key = replay_key(jti);
        if s.service.replay.contains_key(&key) {
            return Ok(false);
        }
        s.service.replay.insert(key, expires_at);
        Ok(true)
    }
}
