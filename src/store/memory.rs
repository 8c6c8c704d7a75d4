//! An in-memory [`Store`](super::Store): the reference implementation of the store traits, for
//! tests and hosts that keep state elsewhere. Nothing survives the process.
//!
//! # Extensions: state of a package above the core under the same lock
//!
//! A package built on the core may keep its own tables beside the runs, under the store's
//! **one lock**, so that what the SQL stores do in one transaction (or a trigger) stays atomic in
//! memory too: [`MemoryStore<X>`](MemoryStore) carries an extension `X` ([`MemoryExtension`]),
//! which
//!
//! - is told, under the lock, when [`RunStore::finish`] writes a terminal status
//!   ([`MemoryExtension::run_ended`]: what the SQL stores' triggers on `runs` do);
//! - takes part in the retention purge ([`MemoryExtension::purge`]), in the same critical
//!   section as the core's part of it;
//! - reads and changes the core's tables under the lock ([`MemoryStore::lock_tables`]) through
//!   the documented methods of [`MemoryTables`] (never their fields).
//!
//! The service package's memory store is `MemoryStore<ServiceTables>` (its tenant bindings,
//! dispatch leases, callback outbox and replay cache). [`MemoryStore`] without a parameter is
//! `MemoryStore<()>`: no extension, what an embedder uses.

use std::{
    collections::{BTreeMap, HashMap},
    fmt,
    ops::{Deref, DerefMut},
    sync::Mutex,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{
    AttemptRecord, Claimed, Connection, ConnectionStore, Dedupe, Enqueued, NewRun, Run, RunId, RunResult, RunStatus,
    RunStore, Xref, XrefKind, XrefState, XrefStore,
};
use crate::{
    auth::TokenSet,
    error::Result,
    reference::ReferenceData,
    store::retention::{Cutoffs, PurgeReport},
};

/// The core's tables of a [`MemoryStore`]: runs, their leases, fingerprints and attempts, the
/// cross-reference, connections, tokens and reference data. An extension reaches them under the
/// store's lock ([`MemoryStore::lock_tables`]) through the methods below.
#[derive(Debug, Default)]
pub struct MemoryTables {
    runs: BTreeMap<RunId, Run>,
    lease: HashMap<RunId, DateTime<Utc>>,
    fingerprints: HashMap<RunId, String>,
    /// Attempts as stored: their exchanges are kept once, in `exchanges`, under their recording.
    attempts: HashMap<RunId, Vec<AttemptRecord>>,
    /// Every recorded exchange by (recording, number), with its business: each kept once however
    /// many runs of a batch point at it.
    exchanges: BTreeMap<(String, u64), (String, crate::http::audit::ExchangeRecord)>,
    next: RunId,
    xrefs: BTreeMap<(String, XrefKind, String), Xref>,
    connections: BTreeMap<String, Connection>,
    tokens: HashMap<String, TokenSet>,
    references: HashMap<String, ReferenceData>,
}

impl MemoryTables {
    /// Every run, by id.
    pub fn runs(&self) -> impl Iterator<Item = &Run> + '_ {
        self.runs.values()
    }

    /// A run by id.
    pub fn run(&self, id: RunId) -> Option<&Run> {
        self.runs.get(&id)
    }

    /// Whether a claim at `now` would take `run`: queued and not waiting for a later attempt, or
    /// running under an expired lease.
    pub fn is_due(&self, run: &Run, now: DateTime<Utc>) -> bool {
        due(run, self.lease.get(&run.id), now)
    }

    /// How many attempt records run `id` has.
    pub fn attempt_count(&self, id: RunId) -> usize {
        self.attempts.get(&id).map_or(0, Vec::len)
    }

    /// Removes run `id` with its attempts, lease and fingerprint (the retention purge of a
    /// disconnected tenant's runs).
    pub fn remove_run(&mut self, id: RunId) {
        self.runs.remove(&id);
        self.drop_attempts(id);
        self.lease.remove(&id);
        self.fingerprints.remove(&id);
    }

    /// Removes run `id`'s attempts, and the exchanges of the recordings no attempt points at any
    /// more (what the SQL stores' `attempts_drop_exchanges` trigger does).
    fn drop_attempts(&mut self, id: RunId) {
        let Some(gone) = self.attempts.remove(&id) else { return };
        for recording in gone.iter().filter_map(|a| a.recording.as_ref()) {
            let pointed =
                self.attempts.values().flatten().any(|a| a.recording.as_ref().is_some_and(|r| r.id == recording.id));
            if !pointed {
                self.exchanges.retain(|(rec, _), _| *rec != recording.id);
            }
        }
    }

    /// How many cross-reference entries `scope` has.
    pub fn xref_count(&self, scope: &str) -> usize {
        self.xrefs.keys().filter(|(s, _, _)| s == scope).count()
    }

    /// Removes every cross-reference entry of `scope`.
    pub fn remove_xrefs(&mut self, scope: &str) {
        self.xrefs.retain(|(s, _, _), _| s != scope);
    }
}

/// State a package above the core keeps in a [`MemoryStore`], under its one lock (see the
/// [module docs](self#extensions-state-of-a-package-above-the-core-under-the-same-lock)).
/// Both hooks are called with the lock held: they must not block.
pub trait MemoryExtension: fmt::Debug + Default + Send + 'static {
    /// [`RunStore::finish`] has just written a terminal status (`synced`, `skipped`,
    /// `dead_lettered`) to `run`, shown as written; `tables` are the core's tables after the
    /// write. Called in the same critical section, so nothing sees the run ended without what
    /// this hook records (the memory counterpart of an SQL trigger on `runs`). The default
    /// does nothing.
    fn run_ended(&mut self, run: &Run, tables: &MemoryTables) {
        let _ = (run, tables);
    }

    /// The extension's part of a retention purge at `cutoffs`, run first, in the purge's
    /// critical section: it removes (with `apply`; only counts without) what it holds past its
    /// time and may remove runs and cross-reference entries through `tables`, adding what it
    /// removed to `report`. Answers the runs it purged (or, in a dry run, would purge), which the
    /// core's part then leaves alone. The default purges nothing.
    fn purge(
        &mut self,
        tables: &mut MemoryTables,
        cutoffs: &Cutoffs,
        apply: bool,
        report: &mut PurgeReport,
    ) -> Vec<RunId> {
        let _ = (tables, cutoffs, apply, report);
        Vec::new()
    }
}

/// No extension: the plain store.
impl MemoryExtension for () {}

#[derive(Debug, Default)]
struct State<X> {
    tables: MemoryTables,
    ext: X,
}

impl<X> Deref for State<X> {
    type Target = MemoryTables;

    fn deref(&self) -> &MemoryTables {
        &self.tables
    }
}

impl<X> DerefMut for State<X> {
    fn deref_mut(&mut self) -> &mut MemoryTables {
        &mut self.tables
    }
}

/// The store's one lock held ([`MemoryStore::lock_tables`]); released when dropped.
#[derive(Debug)]
pub struct MemoryGuard<'a, X>(std::sync::MutexGuard<'a, State<X>>);

impl<X> MemoryGuard<'_, X> {
    /// The core's tables and the extension, both borrowed at once.
    pub fn parts(&mut self) -> (&mut MemoryTables, &mut X) {
        let s = &mut *self.0;
        (&mut s.tables, &mut s.ext)
    }
}

/// The in-memory store, with an optional extension `X` kept under the same lock (see the
/// [module docs](self)).
#[derive(Debug, Default)]
pub struct MemoryStore<X = ()> {
    state: Mutex<State<X>>,
}

impl MemoryStore {
    /// An empty store without extension.
    pub fn new() -> Self {
        Self::default()
    }
}

impl<X: MemoryExtension> MemoryStore<X> {
    /// An empty store with extension `ext`.
    pub fn with_extension(ext: X) -> Self {
        Self { state: Mutex::new(State { tables: MemoryTables::default(), ext }) }
    }

    /// Takes the store's one lock for an extension's own store methods: the core's tables and
    /// the extension, read and changed atomically with the runs ([`MemoryGuard::parts`]) until
    /// the guard is dropped. Do not hold it across an `.await`.
    pub fn lock_tables(&self) -> MemoryGuard<'_, X> {
        MemoryGuard(self.lock())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<X>> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn due(run: &Run, lease: Option<&DateTime<Utc>>, now: DateTime<Utc>) -> bool {
    match run.status {
        RunStatus::Queued => run.next_attempt_at.is_none_or(|t| t <= now),
        RunStatus::Running => lease.is_some_and(|l| *l <= now),
        _ => false,
    }
}

/// What the SQL stores keep in `runs.increment_id`, `ledger_id` and `ledger_reference`.
fn search_fields(run: &Run, attempts: &[AttemptRecord]) -> super::audit::SearchFields {
    super::audit::SearchFields {
        increment_id: super::audit::increment_id_of_raw(&run.raw).or_else(|| {
            attempts.iter().find_map(|a| a.snapshot.as_ref().and_then(crate::http::audit::Snapshot::increment_id))
        }),
        ledger_reference: run.outcome.as_ref().and_then(|o| o.provider_reference.clone()),
        ledger_id: run.outcome.as_ref().and_then(|o| o.provider_entity_id.clone()),
    }
}

#[async_trait]
impl<X: MemoryExtension> RunStore for MemoryStore<X> {
    async fn enqueue(&self, run: NewRun, dedupe: Dedupe) -> Result<Enqueued> {
        let mut s = self.lock();
        if dedupe == Dedupe::WhileQueued {
            let same = s
                .runs
                .values()
                .filter(|r| {
                    r.scope == run.scope && r.tenant_id == run.tenant_id && r.idempotency_key == run.idempotency_key
                })
                .find(|r| s.fingerprints.get(&r.id) == Some(&run.fingerprint))
                .map(|r| (r.id, r.status));
            if let Some((id, status)) = same {
                return Ok(Enqueued::Duplicate { id, status });
            }
        }
        let existing = s
            .runs
            .values()
            .filter(|r| {
                r.scope == run.scope && r.tenant_id == run.tenant_id && r.idempotency_key == run.idempotency_key
            })
            .max_by_key(|r| r.id)
            .map(|r| (r.id, r.status));
        match (dedupe, existing) {
            (Dedupe::Permanent, Some((id, status))) => return Ok(Enqueued::Duplicate { id, status }),
            (Dedupe::WhileQueued, Some((id, RunStatus::Queued))) => {
                s.fingerprints.insert(id, run.fingerprint);
                if let Some(r) = s.runs.get_mut(&id) {
                    r.raw = run.raw;
                    r.policy = run.policy;
                    r.updated_at = run.received_at;
                }
                return Ok(Enqueued::Collapsed(id));
            }
            _ => {}
        }
        s.next += 1;
        let id = s.next;
        s.fingerprints.insert(id, run.fingerprint);
        s.runs.insert(
            id,
            Run {
                id,
                scope: run.scope,
                tenant_id: run.tenant_id,
                claim: 0,
                idempotency_key: run.idempotency_key,
                event: run.event,
                magento_entity_id: run.magento_entity_id,
                raw: run.raw,
                policy: run.policy,
                status: RunStatus::Queued,
                attempts: 0,
                attempts_before_retry: 0,
                next_attempt_at: None,
                outcome: None,
                created_at: run.received_at,
                updated_at: run.received_at,
            },
        );
        Ok(Enqueued::New(id))
    }

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

    /// Exact: `more` says whether a run of the tenant's is still due after the claim.
    async fn claim_next(
        &self,
        scope: &str,
        tenant: Option<&str>,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
        limit: usize,
    ) -> Result<Claimed> {
        let mut s = self.lock();
        let mut ids: Vec<RunId> = s
            .runs
            .values()
            .filter(|r| r.scope == scope && r.tenant_id.as_deref() == tenant && due(r, s.lease.get(&r.id), now))
            .take(limit.saturating_add(1))
            .map(|r| r.id)
            .collect();
        let more = ids.len() > limit;
        ids.truncate(limit);
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            s.lease.insert(id, lease_until);
            if let Some(r) = s.runs.get_mut(&id) {
                r.status = RunStatus::Running;
                r.claim += 1;
                r.updated_at = now;
                out.push(r.clone());
            }
        }
        Ok(Claimed { runs: out, more })
    }

    async fn claim_run(&self, id: RunId, now: DateTime<Utc>, lease_until: DateTime<Utc>) -> Result<Option<Run>> {
        let mut s = self.lock();
        let ok = s.runs.get(&id).is_some_and(|r| due(r, s.lease.get(&id), now));
        if !ok {
            return Ok(None);
        }
        s.lease.insert(id, lease_until);
        Ok(s.runs.get_mut(&id).map(|r| {
            r.status = RunStatus::Running;
            r.claim += 1;
            r.updated_at = now;
            r.clone()
        }))
    }

    async fn release_leases(&self, scope: &str, now: DateTime<Utc>) -> Result<u64> {
        let mut s = self.lock();
        let ids: Vec<RunId> =
            s.runs.values().filter(|r| r.scope == scope && r.status == RunStatus::Running).map(|r| r.id).collect();
        for id in &ids {
            s.lease.remove(id);
            if let Some(r) = s.runs.get_mut(id) {
                r.status = RunStatus::Queued;
                r.updated_at = now;
            }
        }
        Ok(u64::try_from(ids.len()).unwrap_or(u64::MAX))
    }

    async fn finish(&self, id: RunId, claim: i64, result: RunResult) -> Result<()> {
        let mut s = self.lock();
        let Some(scope) = s.runs.get(&id).map(|r| r.scope.clone()) else {
            return Err(super::claim_lost(id, claim));
        };
        let held = super::held_xrefs(&result.xrefs);
        if !s.runs.get(&id).is_some_and(|r| r.status == RunStatus::Running && r.claim == claim) {
            // A lost claim: the held entries fill in what is missing or an intent, never a done
            // entry recorded since (see `RunStore::finish`).
            for ((kind, key), x) in held {
                let k = (scope.clone(), kind, key.to_owned());
                if s.xrefs.get(&k).is_none_or(|stored| stored.state != XrefState::Done) {
                    s.xrefs.insert(k, x.clone());
                }
            }
            return Err(super::claim_lost(id, claim));
        }
        for ((kind, key), x) in held {
            s.xrefs.insert((scope.clone(), kind, key.to_owned()), x.clone());
        }
        s.lease.remove(&id);
        let mut attempt = result.attempt.clone();
        attempt.recording = super::audit::recording_of(&attempt);
        if let Some(r) = &attempt.recording {
            for (n, e) in super::audit::numbered(r, &attempt.exchanges) {
                let key = (r.id.clone(), u64::try_from(n).unwrap_or(0));
                s.exchanges.entry(key).or_insert_with(|| (scope.clone(), e.clone()));
            }
        }
        attempt.exchanges = Vec::new();
        s.attempts.entry(id).or_default().push(attempt);
        if let Some(r) = s.runs.get_mut(&id) {
            r.status = result.status;
            r.attempts = result.attempt.number;
            r.next_attempt_at = result.next_attempt_at;
            r.updated_at = result.attempt.finished_at;
            r.outcome = Some(result.outcome);
        }
        // What the SQL stores' triggers on `runs` do, under the same lock.
        let s = &mut *s;
        if let Some(run) = s.tables.runs.get(&id).filter(|r| r.status.is_terminal()) {
            s.ext.run_ended(run, &s.tables);
        }
        Ok(())
    }

    async fn requeue(&self, scope: &str, idempotency_key: &str, now: DateTime<Utc>) -> Result<bool> {
        let mut s = self.lock();
        let id = s
            .runs
            .values()
            .filter(|r| r.scope == scope && r.idempotency_key == idempotency_key)
            .max_by_key(|r| r.id)
            .filter(|r| matches!(r.status, RunStatus::DeadLettered | RunStatus::Queued))
            .map(|r| r.id);
        let Some(id) = id else { return Ok(false) };
        if let Some(r) = s.runs.get_mut(&id) {
            r.status = RunStatus::Queued;
            r.next_attempt_at = None;
            r.attempts_before_retry = r.attempts;
            r.updated_at = now;
        }
        Ok(true)
    }

    async fn get(&self, id: RunId) -> Result<Option<Run>> {
        Ok(self.lock().runs.get(&id).cloned())
    }

    async fn find_by_key(&self, scope: &str, idempotency_key: &str) -> Result<Option<Run>> {
        Ok(self
            .lock()
            .runs
            .values()
            .filter(|r| r.scope == scope && r.idempotency_key == idempotency_key)
            .max_by_key(|r| r.id)
            .cloned())
    }

    async fn attempts(&self, id: RunId) -> Result<Vec<AttemptRecord>> {
        let s = self.lock();
        let mut attempts = s.attempts.get(&id).cloned().unwrap_or_default();
        for a in &mut attempts {
            if let Some(r) = &a.recording {
                let end = r.first.saturating_add(r.count);
                a.exchanges = s
                    .exchanges
                    .range((r.id.clone(), r.first)..(r.id.clone(), end))
                    .map(|(_, (_, e))| e.clone())
                    .collect();
            }
        }
        Ok(attempts)
    }

    async fn record_exchanges(
        &self,
        scope: &str,
        recording: &crate::http::audit::RecordingRef,
        exchanges: &[crate::http::audit::ExchangeRecord],
        now: DateTime<Utc>,
    ) -> Result<()> {
        let mut s = self.lock();
        let cutoff = now - super::audit::LOOSE_EXCHANGES_KEPT;
        let pointed: std::collections::HashSet<String> =
            s.attempts.values().flatten().filter_map(|a| a.recording.as_ref().map(|r| r.id.clone())).collect();
        s.exchanges.retain(|(rec, _), (sc, e)| sc != scope || e.at >= cutoff || pointed.contains(rec));
        for (n, e) in super::audit::numbered(recording, exchanges) {
            let key = (recording.id.clone(), u64::try_from(n).unwrap_or(0));
            s.exchanges.entry(key).or_insert_with(|| (scope.to_owned(), e.clone()));
        }
        Ok(())
    }

    async fn ledger_requests(&self, scope: &str, since: DateTime<Utc>) -> Result<super::audit::RequestCount> {
        let s = self.lock();
        Ok(super::audit::RequestCount::of(s.exchanges.values().filter(|(sc, _)| sc == scope).map(|(_, e)| e), since))
    }

    async fn counts(&self, scope: &str) -> Result<BTreeMap<RunStatus, u64>> {
        let mut out = BTreeMap::new();
        for r in self.lock().runs.values().filter(|r| r.scope == scope) {
            *out.entry(r.status).or_insert(0) += 1;
        }
        Ok(out)
    }

    async fn runs_with_status(&self, scope: &str, status: RunStatus) -> Result<Vec<Run>> {
        Ok(self.lock().runs.values().filter(|r| r.scope == scope && r.status == status).cloned().collect())
    }

    async fn dead_letters(&self, scope: &str, limit: usize) -> Result<Vec<Run>> {
        Ok(self
            .lock()
            .runs
            .values()
            .rev()
            .filter(|r| r.scope == scope && r.status == RunStatus::DeadLettered)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn query_runs(&self, query: &super::audit::RunQuery) -> Result<super::audit::RunPage> {
        let s = self.lock();
        let mut runs: Vec<&Run> = s
            .runs
            .values()
            .filter(|r| {
                let fields = search_fields(r, s.attempts.get(&r.id).map(Vec::as_slice).unwrap_or_default());
                query.matches(r, &fields)
            })
            .collect();
        runs.sort_by_key(|r| std::cmp::Reverse((r.created_at, r.id)));
        let total = u64::try_from(runs.len()).unwrap_or(u64::MAX);
        let page = runs
            .into_iter()
            .skip(usize::try_from(query.offset).unwrap_or(usize::MAX))
            .take(usize::try_from(query.page_size()).unwrap_or(usize::MAX))
            .cloned()
            .collect();
        Ok(super::audit::RunPage { runs: page, total })
    }

    async fn requeue_run(&self, id: RunId, now: DateTime<Utc>) -> Result<bool> {
        let mut s = self.lock();
        let Some(r) = s.runs.get_mut(&id).filter(|r| matches!(r.status, RunStatus::DeadLettered | RunStatus::Queued))
        else {
            return Ok(false);
        };
        r.status = RunStatus::Queued;
        r.next_attempt_at = None;
        r.attempts_before_retry = r.attempts;
        r.updated_at = now;
        Ok(true)
    }

    async fn requeue_dead_letters(&self, scope: &str, tenant: Option<&str>, now: DateTime<Utc>) -> Result<u64> {
        let mut s = self.lock();
        let mut n = 0u64;
        for r in s.runs.values_mut().filter(|r| {
            r.scope == scope
                && r.status == RunStatus::DeadLettered
                && tenant.is_none_or(|t| r.tenant_id.as_deref() == Some(t))
        }) {
            r.status = RunStatus::Queued;
            r.next_attempt_at = None;
            r.attempts_before_retry = r.attempts;
            r.updated_at = now;
            n += 1;
        }
        Ok(n)
    }

    async fn waiting(&self, scope: &str, limit: usize) -> Result<Vec<Run>> {
        let mut runs: Vec<Run> = self
            .lock()
            .runs
            .values()
            .filter(|r| r.scope == scope && r.status == RunStatus::Queued && r.outcome.is_some())
            .cloned()
            .collect();
        runs.sort_by_key(|r| (r.next_attempt_at, r.id));
        runs.truncate(limit);
        Ok(runs)
    }
}

#[async_trait]
impl<X: MemoryExtension> super::retention::RetentionStore for MemoryStore<X> {
    /// The extension's part first ([`MemoryExtension::purge`]: a disconnected tenant's runs, in
    /// the service's store), then the finished runs' raw events and attempts, in one critical
    /// section.
    async fn purge(
        &self,
        policy: &super::retention::RetentionPolicy,
        now: DateTime<Utc>,
        dry_run: bool,
    ) -> Result<PurgeReport> {
        policy.validate()?;
        let cutoffs = policy.cutoffs(now);
        let apply = !dry_run;
        let mut s = self.lock();
        let s = &mut *s;
        let mut report = PurgeReport { dry_run, ..PurgeReport::default() };
        let gone = s.ext.purge(&mut s.tables, &cutoffs, apply, &mut report);
        purge_finished(&mut s.tables, &cutoffs, apply, &gone, &mut report);
        Ok(report)
    }
}

/// The core's part of the purge: finished (`synced`, `skipped`) runs last changed before the
/// cutoff lose their raw event and attempts (runs in `gone` were purged already).
fn purge_finished(t: &mut MemoryTables, cutoffs: &Cutoffs, apply: bool, gone: &[RunId], report: &mut PurgeReport) {
    let old: Vec<RunId> = t
        .runs
        .values()
        .filter(|r| {
            !gone.contains(&r.id)
                && matches!(r.status, RunStatus::Synced | RunStatus::Skipped)
                && r.updated_at < cutoffs.attempts
        })
        .map(|r| r.id)
        .collect();
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    report.raw_events += count(old.iter().filter(|id| t.runs.get(id).is_some_and(|r| !r.raw.is_empty())).count());
    report.attempts += count(old.iter().map(|id| t.attempt_count(*id)).sum::<usize>());
    if apply {
        for id in &old {
            t.drop_attempts(*id);
            if let Some(r) = t.runs.get_mut(id) {
                r.raw.clear();
            }
        }
    }
    let pointed: std::collections::HashSet<&str> =
        t.attempts.values().flatten().filter_map(|a| a.recording.as_ref().map(|r| r.id.as_str())).collect();
    let loose: Vec<(String, u64)> = t
        .exchanges
        .iter()
        .filter(|((rec, _), (_, e))| e.at < cutoffs.loose_exchanges && !pointed.contains(rec.as_str()))
        .map(|(k, _)| k.clone())
        .collect();
    report.loose_requests += count(loose.len());
    if apply {
        for k in &loose {
            t.exchanges.remove(k);
        }
    }
}

#[async_trait]
impl<X: MemoryExtension> XrefStore for MemoryStore<X> {
    async fn get_xref(&self, scope: &str, kind: XrefKind, key: &str) -> Result<Option<Xref>> {
        Ok(self.lock().xrefs.get(&(scope.to_owned(), kind, key.to_owned())).cloned())
    }

    async fn put_xref(&self, scope: &str, kind: XrefKind, key: &str, xref: &Xref) -> Result<()> {
        self.lock().xrefs.insert((scope.to_owned(), kind, key.to_owned()), xref.clone());
        Ok(())
    }

    async fn list_xrefs(&self, scope: &str, kind: XrefKind, prefix: &str) -> Result<Vec<(String, Xref)>> {
        // The map is ordered by (scope, kind, key): the keys with the prefix are one range of it.
        let start = (scope.to_owned(), kind, prefix.to_owned());
        Ok(self
            .lock()
            .xrefs
            .range(start..)
            .take_while(|((s, k, key), _)| s == scope && *k == kind && key.starts_with(prefix))
            .map(|((_, _, key), x)| (key.clone(), x.clone()))
            .collect())
    }
}

#[async_trait]
impl<X: MemoryExtension> ConnectionStore for MemoryStore<X> {
    async fn save_connection(&self, connection: &Connection) -> Result<()> {
        self.lock().connections.insert(connection.scope.clone(), connection.clone());
        Ok(())
    }

    async fn connection(&self, scope: &str) -> Result<Option<Connection>> {
        Ok(self.lock().connections.get(scope).cloned())
    }

    async fn connections(&self) -> Result<Vec<Connection>> {
        Ok(self.lock().connections.values().cloned().collect())
    }

    async fn save_tokens(&self, scope: &str, tokens: &TokenSet) -> Result<()> {
        self.lock().tokens.insert(scope.to_owned(), tokens.clone());
        Ok(())
    }

    async fn tokens(&self, scope: &str) -> Result<Option<TokenSet>> {
        Ok(self.lock().tokens.get(scope).cloned())
    }

    async fn forget_tokens(&self, scope: &str) -> Result<bool> {
        Ok(self.lock().tokens.remove(scope).is_some())
    }

    async fn save_reference(&self, scope: &str, reference: &ReferenceData) -> Result<()> {
        self.lock().references.insert(scope.to_owned(), reference.clone());
        Ok(())
    }

    async fn reference(&self, scope: &str) -> Result<Option<ReferenceData>> {
        Ok(self.lock().references.get(scope).cloned())
    }
}
