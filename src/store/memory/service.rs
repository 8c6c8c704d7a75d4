//! The service's stores in memory ([`super::super::service`]), under the store's one lock.

use std::collections::{BTreeMap, HashMap};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{MemoryStore, State};
use crate::{
    error::Result,
    store::service::{ConnectionStatus, ReplayCache},
    store::{
        Run, RunId, RunStatus,
        retention::{Cutoffs, PurgeReport},
        service::{
            Binding, BindingInfo, BindingStatus, BindingStore, DispatchStats, DispatchStore, PendingCallback,
            replay_key,
        },
    },
};

#[derive(Debug, Default)]
pub(super) struct ServiceState {
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

/// Queues the callback of run `id` when it is terminal and its own tenant is active on its
/// business (what the SQL stores' trigger does).
pub(super) fn queue_callback(s: &mut State, id: RunId) {
    let Some(run) = s.runs.get(&id) else { return };
    let Some(tenant) = run.tenant_id.clone() else { return };
    let active = s.service.bindings.get(&tenant).is_some_and(|b| b.scope == run.scope && b.is_active());
    if !run.status.is_terminal() || !active {
        return;
    }
    let (scope, at) = (run.scope.clone(), run.updated_at);
    let generation = s.service.callbacks.get(&id).map_or(0, |c| c.generation) + 1;
    s.service.callbacks.insert(id, Callback { scope, tenant, generation, due_at: at, attempts: 0, delivered_at: None });
}

/// Records when a tenant was disconnected: the first time it is seen revoked (a repeated
/// disconnection keeps the first time), forgotten when it is active again.
fn set_revoked(s: &mut ServiceState, tenant: &str, status: BindingStatus, now: DateTime<Utc>) {
    match status {
        BindingStatus::Active => {
            s.revoked_at.remove(tenant);
        }
        BindingStatus::Revoked => {
            s.revoked_at.entry(tenant.to_owned()).or_insert(now);
        }
    }
}

/// The retention purge under the store's one lock (see [`crate::store::retention`]); with
/// `apply` false it only counts.
pub(super) fn purge(s: &mut State, cutoffs: &Cutoffs, apply: bool) -> PurgeReport {
    let mut report = PurgeReport { dry_run: !apply, ..PurgeReport::default() };
    // Disconnected tenants past their time.
    let gone: Vec<(String, String)> = s
        .service
        .bindings
        .values()
        .filter(|b| !b.is_active() && s.service.revoked_at.get(&b.tenant_id).is_some_and(|t| *t < cutoffs.disconnected))
        .map(|b| (b.tenant_id.clone(), b.scope.clone()))
        .collect();
    let gone_runs: Vec<RunId> = s
        .runs
        .values()
        .filter(|r| r.tenant_id.as_ref().is_some_and(|t| gone.iter().any(|(g, _)| g == t)))
        .map(|r| r.id)
        .collect();
    report.runs = count(gone_runs.len());
    let mut attempts = 0;
    let mut callbacks = 0;
    for id in &gone_runs {
        attempts += s.attempts.get(id).map_or(0, Vec::len);
        callbacks += usize::from(s.service.callbacks.contains_key(id));
    }
    // Callbacks of the gone tenants not attached to a gone run (none expected) still go.
    callbacks += s
        .service
        .callbacks
        .iter()
        .filter(|(id, c)| !gone_runs.contains(id) && gone.iter().any(|(g, _)| *g == c.tenant))
        .count();
    // The cross-reference of businesses left with no tenant and no run.
    let remaining_binding = |scope: &str| {
        s.service.bindings.values().any(|b| b.scope == scope && !gone.iter().any(|(g, _)| *g == b.tenant_id))
    };
    let remaining_run = |scope: &str| s.runs.values().any(|r| r.scope == scope && !gone_runs.contains(&r.id));
    let mut scopes: Vec<&String> = gone.iter().map(|(_, scope)| scope).collect();
    scopes.sort();
    scopes.dedup();
    let xref_scopes: Vec<String> =
        scopes.into_iter().filter(|scope| !remaining_binding(scope) && !remaining_run(scope)).cloned().collect();
    report.xrefs = count(s.xrefs.keys().filter(|(scope, _, _)| xref_scopes.contains(scope)).count());
    // Delivered callbacks past their time (of the others).
    let delivered: Vec<RunId> = s
        .service
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
    // Finished runs' raw events and attempts past their time (of the others).
    let old: Vec<RunId> = s
        .runs
        .values()
        .filter(|r| {
            !gone_runs.contains(&r.id)
                && matches!(r.status, RunStatus::Synced | RunStatus::Skipped)
                && r.updated_at < cutoffs.attempts
        })
        .map(|r| r.id)
        .collect();
    report.raw_events = count(old.iter().filter(|id| s.runs.get(id).is_some_and(|r| !r.raw.is_empty())).count());
    attempts += old.iter().map(|id| s.attempts.get(id).map_or(0, Vec::len)).sum::<usize>();
    report.attempts = count(attempts);
    report.callbacks = count(callbacks);
    report.tenants = gone.iter().map(|(t, _)| t.clone()).collect();
    report.tenants.sort();
    if apply {
        for id in &gone_runs {
            s.runs.remove(id);
            s.attempts.remove(id);
            s.lease.remove(id);
            s.fingerprints.remove(id);
            s.service.callbacks.remove(id);
        }
        for (tenant, _) in &gone {
            s.service.callbacks.retain(|_, c| c.tenant != *tenant);
            s.service.bindings.remove(tenant);
            s.service.revoked_at.remove(tenant);
        }
        s.xrefs.retain(|(scope, _, _), _| !xref_scopes.contains(scope));
        for id in &delivered {
            s.service.callbacks.remove(id);
        }
        for id in &old {
            s.attempts.remove(id);
            if let Some(r) = s.runs.get_mut(id) {
                r.raw.clear();
            }
        }
    }
    report
}

fn count(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[async_trait]
impl BindingStore for MemoryStore {
    async fn put_binding(&self, binding: &Binding) -> Result<()> {
        let mut s = self.lock();
        let mut b = binding.clone();
        if b.is_active()
            && s.service.bindings.values().any(|o| o.scope == b.scope && o.is_active() && o.tenant_id != b.tenant_id)
        {
            return Err(crate::store::service::scope_taken(&b.scope));
        }
        if let Some(old) = s.service.bindings.get(&b.tenant_id) {
            b.created_at = old.created_at;
        }
        set_revoked(&mut s.service, &b.tenant_id, b.status, b.updated_at);
        s.service.bindings.insert(b.tenant_id.clone(), b);
        Ok(())
    }

    async fn binding(&self, tenant_id: &str) -> Result<Option<Binding>> {
        Ok(self.lock().service.bindings.get(tenant_id).cloned())
    }

    async fn bindings(&self) -> Result<Vec<BindingInfo>> {
        Ok(self.lock().service.bindings.values().map(Binding::info).collect())
    }

    async fn set_binding_status(&self, tenant_id: &str, status: BindingStatus, now: DateTime<Utc>) -> Result<bool> {
        let mut s = self.lock();
        match s.service.bindings.get_mut(tenant_id) {
            Some(b) => {
                b.status = status;
                b.updated_at = now;
                set_revoked(&mut s.service, tenant_id, status, now);
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
        let mut s = self.lock();
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
impl DispatchStore for MemoryStore {
    async fn acquire_dispatch(
        &self,
        scope: &str,
        holder: &str,
        now: DateTime<Utc>,
        until: DateTime<Utc>,
    ) -> Result<bool> {
        let mut s = self.lock();
        let free = s.service.leases.get(scope).is_none_or(|(h, t)| h == holder || *t <= now);
        if free {
            s.service.leases.insert(scope.to_owned(), (holder.to_owned(), until));
        }
        Ok(free)
    }

    async fn release_dispatch(&self, scope: &str, holder: &str) -> Result<()> {
        let mut s = self.lock();
        if s.service.leases.get(scope).is_some_and(|(h, _)| h == holder) {
            s.service.leases.remove(scope);
        }
        Ok(())
    }

    async fn due_tenants(&self, now: DateTime<Utc>) -> Result<Vec<(String, String)>> {
        let s = self.lock();
        let mut due: std::collections::BTreeSet<(String, String)> = s
            .runs
            .values()
            .filter(|r| super::due(r, s.lease.get(&r.id), now))
            .filter_map(|r| r.tenant_id.clone().map(|t| (r.scope.clone(), t)))
            .collect();
        due.extend(
            s.service
                .callbacks
                .values()
                .filter(|c| c.delivered_at.is_none() && c.due_at <= now)
                .map(|c| (c.scope.clone(), c.tenant.clone())),
        );
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
        let mut s = self.lock();
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
            let Some(run) = s.runs.get(&id).cloned() else { continue };
            if let Some(c) = s.service.callbacks.get_mut(&id) {
                c.due_at = lease_until;
                out.push(PendingCallback { run, generation: c.generation, attempts: c.attempts });
            }
        }
        out.sort_by_key(|c| c.run.id);
        Ok(out)
    }

    async fn callback_sent(&self, run: RunId, generation: i64, now: DateTime<Utc>) -> Result<()> {
        let mut s = self.lock();
        if let Some(c) = s.service.callbacks.get_mut(&run).filter(|c| c.generation == generation) {
            c.delivered_at.get_or_insert(now);
        }
        Ok(())
    }

    async fn callback_failed(&self, run: RunId, generation: i64, next_at: DateTime<Utc>, _error: &str) -> Result<()> {
        let mut s = self.lock();
        if let Some(c) =
            s.service.callbacks.get_mut(&run).filter(|c| c.generation == generation && c.delivered_at.is_none())
        {
            c.due_at = next_at;
            c.attempts = c.attempts.saturating_add(1);
        }
        Ok(())
    }

    async fn pending_callbacks(&self, scope: &str) -> Result<u64> {
        let n = self.lock().service.callbacks.values().filter(|c| c.scope == scope && c.delivered_at.is_none()).count();
        Ok(u64::try_from(n).unwrap_or(u64::MAX))
    }

    async fn dispatch_stats(&self, scope: &str, tenant: &str, failed_since: DateTime<Utc>) -> Result<DispatchStats> {
        let s = self.lock();
        let mut stats = DispatchStats::default();
        for r in s.runs.values().filter(|r| r.scope == scope && r.tenant_id.as_deref() == Some(tenant)) {
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
        Ok(self
            .lock()
            .runs
            .values()
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
impl ReplayCache for MemoryStore {
    async fn check_and_record(&self, jti: &str, expires_at: i64, now: i64) -> Result<bool> {
        let mut s = self.lock();
        s.service.replay.retain(|_, exp| *exp > now);
        let key = replay_key(jti);
        if s.service.replay.contains_key(&key) {
            return Ok(false);
        }
        s.service.replay.insert(key, expires_at);
        Ok(true)
    }
}
