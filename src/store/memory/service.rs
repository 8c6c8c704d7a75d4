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
}

#[derive(Debug, Clone)]
struct Callback {
    scope: String,
    tenant: String,
    generation: i64,
    due_at: DateTime<Utc>,
    attempts: u32,
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
    s.service.callbacks.insert(id, Callback { scope, tenant, generation, due_at: at, attempts: 0 });
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
            .filter(|(_, c)| c.scope == scope && c.tenant == tenant && c.due_at <= now)
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

    async fn callback_sent(&self, run: RunId, generation: i64) -> Result<()> {
        let mut s = self.lock();
        if s.service.callbacks.get(&run).is_some_and(|c| c.generation == generation) {
            s.service.callbacks.remove(&run);
        }
        Ok(())
    }

    async fn callback_failed(&self, run: RunId, generation: i64, next_at: DateTime<Utc>, _error: &str) -> Result<()> {
        let mut s = self.lock();
        if let Some(c) = s.service.callbacks.get_mut(&run).filter(|c| c.generation == generation) {
            c.due_at = next_at;
            c.attempts = c.attempts.saturating_add(1);
        }
        Ok(())
    }

    async fn pending_callbacks(&self, scope: &str) -> Result<u64> {
        let n = self.lock().service.callbacks.values().filter(|c| c.scope == scope).count();
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
