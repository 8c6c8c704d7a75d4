//! The workers: dispatch leases, one engine per tenant, the callback outbox, the Magento
//! connection status (see the [module docs](super#workers)).

use std::{
    collections::HashMap,
    panic::AssertUnwindSafe,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Instant,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::FutureExt as _;
use tokio::task::JoinHandle;

use super::Shared;
use crate::magento::{ConnectionStatus, MagentoClient};
use crate::store::{Begun, BindingInfo, PendingCallback, TurnEnd, TurnStart};
use byte8_ledger_core::{
    canonical::{Entity, EventKind},
    engine::{EntitySource, SyncEngine},
    error::{AuthFailure, Error, Result},
    outcome::SyncStatus,
    store::{Run, RunId, RunStatus, Store},
};

/// The engine's [`EntitySource`] over a tenant's [`MagentoClient`]: a 401 (the store no longer
/// holds this tenant's key) makes the run wait and retry ([`Error::Pending`]) rather than
/// dead-letter, since pairing again fixes it; the tenant is paused meanwhile.
#[derive(Debug)]
struct MagentoSource(MagentoClient);

#[async_trait]
impl EntitySource for MagentoSource {
    async fn fetch(&self, event: EventKind, magento_entity_id: u64) -> Result<Entity> {
        self.0.entity(event, magento_entity_id).await.map_err(|e| match e {
            Error::Auth { provider: crate::magento::PROVIDER, reason: AuthFailure::ReconnectRequired, message } => {
                Error::Pending { what: "the Magento connection".into(), message }
            }
            other => other,
        })
    }
}

/// One tenant's engine and Magento client in this process.
pub(crate) struct TenantRuntime {
    tenant_id: String,
    /// The business (the console drops a business's runtimes when its connection changes).
    pub(crate) scope: String,
    paired_at: DateTime<Utc>,
    engine: SyncEngine,
    magento: MagentoClient,
    last_probe: Mutex<Option<Instant>>,
}

/// The tenants' runtimes in this process, rebuilt when a tenant pairs again.
pub(crate) type Runtimes = tokio::sync::Mutex<HashMap<String, Arc<TenantRuntime>>>;

/// A worker's name in dispatch leases: the process and the worker number.
fn holder(shared: &Shared, worker: usize) -> String {
    format!("{}/{worker}", shared.process)
}

async fn runtime(shared: &Arc<Shared>, info: &BindingInfo) -> Result<Arc<TenantRuntime>> {
    if let Some(rt) = shared.runtimes.lock().await.get(&info.tenant_id)
        && rt.paired_at == info.paired_at
        && rt.scope == info.scope
    {
        return Ok(Arc::clone(rt));
    }
    let binding = shared
        .store
        .binding(&info.tenant_id)
        .await?
        .ok_or_else(|| Error::NotFound { what: "tenant binding".into(), id: info.tenant_id.clone() })?;
    let provider = shared.providers.provider(&binding).await?;
    let magento = MagentoClient::builder()
        .with_http_client(shared.magento_http()?)
        .with_base_url(binding.magento_base_url.clone())
        .with_tenant_id(binding.tenant_id.clone())
        .with_api_key(binding.api_key.clone())
        .with_clock(Arc::clone(&shared.clock))
        .with_retry(shared.config.magento_retry)
        .with_request_timeout(shared.config.magento_timeout)
        .with_status(binding.magento_status)
        .build()?;
    let store: Arc<dyn Store> = Arc::clone(&shared.store) as Arc<dyn Store>;
    let engine =
        SyncEngine::new(provider, store, binding.scope.clone(), binding.policy.clone(), Arc::clone(&shared.clock))
            .with_config(shared.config.engine.clone())
            .with_source(Arc::new(MagentoSource(magento.clone())));
    // The reference data: cached for the health feed's region, and the policy checked against it.
    // Recorded (issue 16): the console counts these requests among the business's ledger
    // requests of the hour.
    let loaded = byte8_ledger_core::store::audit::recorded_outside_runs(
        shared.store.as_ref(),
        &binding.scope,
        shared.clock.now(),
        engine.provider().reference_data(false),
    )
    .await;
    match loaded {
        Ok(reference) => {
            if let Err(e) = shared.store.save_reference(&binding.scope, &reference).await {
                tracing::warn!(business = %binding.scope, error = %e, "cannot cache the ledger's reference data");
            }
            if let Err(e) = binding.policy.validate_against(&reference) {
                tracing::warn!(tenant = %binding.tenant_id, error = %e, "the tenant's policy does not check against its ledger's reference data; its events may fail");
            }
        }
        Err(e) => tracing::warn!(tenant = %binding.tenant_id, error = %e, "cannot read the ledger's reference data"),
    }
    let rt = Arc::new(TenantRuntime {
        tenant_id: binding.tenant_id.clone(),
        scope: binding.scope.clone(),
        paired_at: binding.paired_at,
        engine,
        magento,
        last_probe: Mutex::new(None),
    });
    shared.runtimes.lock().await.insert(binding.tenant_id.clone(), Arc::clone(&rt));
    tracing::info!(tenant = %binding.tenant_id, business = %binding.scope, "tenant ready for dispatch");
    Ok(rt)
}

/// Writes the Magento connection status when the client's view differs from the stored one.
struct StatusSync {
    stored: ConnectionStatus,
}

impl StatusSync {
    async fn sync(&mut self, shared: &Shared, rt: &TenantRuntime) {
        let now_status = rt.magento.status();
        if now_status == self.stored {
            return;
        }
        if now_status == ConnectionStatus::TokenRevoked {
            tracing::warn!(tenant = %rt.tenant_id, "Magento refused the ledger's token (401): the tenant is token_revoked and waits until it pairs again");
        } else {
            tracing::info!(tenant = %rt.tenant_id, status = %now_status, "Magento connection status changed");
        }
        match shared.store.set_magento_status(&rt.tenant_id, rt.paired_at, now_status, shared.clock.now()).await {
            Ok(_) => self.stored = now_status,
            Err(e) => tracing::warn!(tenant = %rt.tenant_id, error = %e, "cannot store the Magento connection status"),
        }
    }
}

async fn renew(shared: &Shared, scope: &str, holder: &str) -> Result<bool> {
    let now = shared.clock.now();
    shared
        .store
        .acquire_dispatch(scope, holder, now, byte8_ledger_core::clock::later(now, shared.config.dispatch_lease))
        .await
}

/// A business's dispatch lease as this worker holds it: renewed in the store only once a quarter
/// of [`ServiceConfig::dispatch_lease`](super::ServiceConfig::dispatch_lease) has passed since
/// the last renewal, not before every run and callback. Until it expires nobody else can take
/// it, so with three quarters of it left the worker still holds it; one statement a run fewer.
struct HeldLease {
    renewed: Instant,
}

impl HeldLease {
    /// Taken (or renewed) just now.
    fn now() -> Self {
        Self { renewed: Instant::now() }
    }

    /// Whether this worker still holds the lease, renewing it when it is due for renewal.
    async fn keep(&mut self, shared: &Shared, scope: &str, holder: &str) -> Result<bool> {
        if self.renewed.elapsed() < shared.config.dispatch_lease / 4 {
            return Ok(true);
        }
        let held = renew(shared, scope, holder).await?;
        if held {
            self.renewed = Instant::now();
        }
        Ok(held)
    }
}

/// Whether an error sending a callback can never be fixed by sending it again.
fn permanent(e: &Error) -> bool {
    matches!(e, Error::Invalid { .. } | Error::Rejected { .. })
}

/// What a turn starts [`dispatch`] with.
struct Started {
    /// The business's dispatch lease, just taken.
    lease: HeldLease,
    /// The runs claimed with it (none when the runtime was not ready), and whether a callback was
    /// due.
    first: Begun,
    /// The tenant's runtime when it was built already, with its batch size ([`batch_size`]).
    ready: Option<(Arc<TenantRuntime>, usize)>,
}

/// One tenant's turn, under its business's dispatch lease (`start`): due runs, then
/// due callbacks, up to [`ServiceConfig::batch`](super::ServiceConfig::batch) of each. True when
/// either stopped at that bound (more may be waiting: the business goes back in line), false
/// when both were drained, the worker stops or the lease is lost. The callbacks delivered are
/// pushed on `delivered` for the turn's end to record ([`DispatchStore::end_turn`]).
async fn dispatch(
    shared: &Arc<Shared>,
    info: &BindingInfo,
    holder: &str,
    stop: &AtomicBool,
    start: Started,
    delivered: &mut Vec<(RunId, i64)>,
) -> Result<bool> {
    let Started { mut lease, first: Begun { claimed: first, callbacks_due }, ready } = start;
    let (rt, per_claim) = match ready {
        Some(ready) => ready,
        None => {
            let rt = runtime(shared, info).await?;
            let per_claim = batch_size(&rt).await;
            (rt, per_claim)
        }
    };
    let mut status = StatusSync { stored: info.magento_status };
    // Runs are claimed with the lease only for a tenant whose Magento accepts the ledger (see
    // `turn`): one whose token was refused is probed first, and claims nothing until it answers.
    if first.runs.is_empty()
        && (rt.magento.status() == ConnectionStatus::TokenRevoked
            || info.magento_status == ConnectionStatus::TokenRevoked)
    {
        {
            let mut last = rt.last_probe.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.is_some_and(|t| t.elapsed() < shared.config.probe_interval) {
                return Ok(false);
            }
            *last = Some(Instant::now());
        }
        let ping = rt.magento.ping().await;
        status.sync(shared, &rt).await;
        if let Err(e) = ping {
            tracing::debug!(tenant = %rt.tenant_id, error = %e, "Magento still refuses the ledger");
            return Ok(false);
        }
    }
    let config = &shared.config;
    let mut handled = 0;
    // One run at a time — or, on a ledger that takes several documents a request (Xero), up to
    // its batch size at a time, grouped by the engine — the lease checked before each claim (and
    // renewed when a quarter of it has passed): a worker that stops, or loses the lease, leaves
    // nothing claimed behind. Each claim says whether more are due, so a drained tenant costs
    // no further (empty) claim.
    let mut next = Some(first);
    // The callbacks of the runs this turn finishes synced or skipped, sent without claiming them
    // (below); the tenant's other due callbacks are claimed only when the turn's start saw one
    // due, or a run of the turn may have left one it cannot name.
    let mut own = Vec::new();
    let mut claim_callbacks = callbacks_due;
    let more = loop {
        let claimed = match next.take() {
            Some(claimed) => claimed,
            None => {
                if stop.load(Ordering::Relaxed) || !lease.keep(shared, &rt.scope, holder).await? {
                    return Ok(false);
                }
                let now = shared.clock.now();
                // This tenant's runs only: a business paired to another tenant since keeps the
                // old tenant's runs, which must never be fetched from this tenant's store.
                let claimed = shared
                    .store
                    .claim_next(
                        &rt.scope,
                        Some(&rt.tenant_id),
                        now,
                        byte8_ledger_core::clock::later(now, config.engine.lease),
                        per_claim.min(config.batch - handled),
                    )
                    .await?;
                if claimed.runs.is_empty() {
                    break false;
                }
                claimed
            }
        };
        if !claimed.runs.is_empty() {
            handled += claimed.runs.len();
            if !process_claimed(shared, &rt, claimed.runs, &mut own).await? {
                claim_callbacks = true;
            }
            status.sync(shared, &rt).await;
        }
        if !claimed.more {
            break false;
        }
        if handled >= config.batch {
            break true;
        }
    };
    if rt.magento.status() == ConnectionStatus::TokenRevoked {
        return Ok(false);
    }
    // The callbacks of the runs this turn finished, sent without a claim: every sender of a
    // tenant's callbacks holds its business's dispatch lease, as this worker does (checked, and
    // renewed once a quarter of it has passed, before each), so no other worker sends them
    // meanwhile; one not sent (the worker stops, the lease is lost, the token refused) stays
    // due, and a later turn claims it. If the tenant was disconnected in the meantime, the store
    // queued no callback and Magento hears of the run once, from here.
    for cb in own {
        if stop.load(Ordering::Relaxed) || !lease.keep(shared, &rt.scope, holder).await? {
            return Ok(false);
        }
        if !send_callback(shared, &rt, &cb, delivered).await? {
            status.sync(shared, &rt).await;
            return Ok(false);
        }
        status.sync(shared, &rt).await;
    }
    if !claim_callbacks {
        return Ok(more);
    }
    // The due callbacks in one claim (up to the batch), sent one by one: a claim that returns
    // fewer than asked means none is left, without a further (empty) claim. Callbacks claimed
    // and not sent (the tenant's token revoked meanwhile) are due again when their lease ends.
    // Those delivered are recorded together: with the lease's release at the turn's end, or
    // before the next claim when the batch is full.
    let mut callbacks_left = true;
    let mut sent = 0;
    while sent < config.batch {
        if stop.load(Ordering::Relaxed) || !lease.keep(shared, &rt.scope, holder).await? {
            return Ok(false);
        }
        if !delivered.is_empty() {
            shared.store.callbacks_sent(delivered, shared.clock.now()).await?;
            delivered.clear();
        }
        let now = shared.clock.now();
        let asked = config.batch - sent;
        let claimed = shared
            .store
            .claim_callbacks(
                &rt.scope,
                &rt.tenant_id,
                now,
                byte8_ledger_core::clock::later(now, config.callback_lease),
                asked,
            )
            .await?;
        if claimed.len() < asked {
            callbacks_left = false;
        }
        if claimed.is_empty() {
            break;
        }
        sent += claimed.len();
        for cb in claimed {
            if !send_callback(shared, &rt, &cb, delivered).await? {
                status.sync(shared, &rt).await;
                return Ok(false);
            }
            status.sync(shared, &rt).await;
        }
        if !callbacks_left {
            break;
        }
    }
    Ok(more || callbacks_left)
}

/// Sends one claimed callback and records what became of it: delivered (or never deliverable)
/// goes on `delivered`, a failure is recorded at once. False when Magento refused the ledger's
/// token (the tenant's other callbacks then wait until it pairs again).
async fn send_callback(
    shared: &Shared,
    rt: &TenantRuntime,
    cb: &PendingCallback,
    delivered: &mut Vec<(RunId, i64)>,
) -> Result<bool> {
    let (id, generation) = (cb.run.id, cb.generation);
    let Some(outcome) = cb.run.outcome.as_ref() else {
        tracing::error!(tenant = %rt.tenant_id, run = id, "a terminal run without an outcome: no callback to send");
        delivered.push((id, generation));
        return Ok(true);
    };
    match rt.magento.post_sync_state(outcome).await {
        Ok(()) => {
            delivered.push((id, generation));
            tracing::info!(tenant = %rt.tenant_id, run = id, key = %cb.run.idempotency_key, "sync state sent to Magento");
        }
        Err(e) if permanent(&e) => {
            tracing::error!(tenant = %rt.tenant_id, run = id, error = %e, "Magento can never accept this sync state: dropped");
            delivered.push((id, generation));
        }
        Err(e) => {
            let delay = shared.config.callback_delay(cb.attempts.saturating_add(1));
            tracing::warn!(tenant = %rt.tenant_id, run = id, attempt = cb.attempts + 1, retry_in_s = delay.as_secs_f64(), error = %e, "sync-state callback failed; it stays queued");
            shared
                .store
                .callback_failed(
                    id,
                    generation,
                    byte8_ledger_core::clock::later(shared.clock.now(), delay),
                    &e.to_string(),
                )
                .await?;
            if rt.magento.status() == ConnectionStatus::TokenRevoked {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// How many runs a worker claims at once for a tenant: its ledger's batch size
/// (`Capabilities::max_batch`: Xero takes several documents a request), 1 for a ledger that
/// takes one (Sage) or whose capabilities cannot be read now.
async fn batch_size(rt: &TenantRuntime) -> usize {
    match rt.engine.provider().capabilities().await {
        Ok(caps) => caps.max_batch.max(1),
        Err(e) => {
            tracing::debug!(tenant = %rt.tenant_id, error = %e, "capabilities unknown: one run at a time");
            1
        }
    }
}

/// Processes runs claimed for a tenant: one alone ([`SyncEngine::process`]), several through the
/// engine's batched path ([`SyncEngine::process_claimed`]: the invoices and payments among them
/// posted in the ledger's batches), each with its own outcome, dead letter and callback. A panic
/// (a bug) ends the runs it left unfinished, not the worker: they are dead-lettered with an
/// `internal` outcome (so Magento hears of it), the tenant's runtime is rebuilt, and the worker
/// goes on.
///
/// The callbacks of the runs it saw end synced or skipped are pushed on `own` (their generation
/// is the claim they finished under, migration 0016), for the turn to send without claiming
/// them. False when some run may have left a callback it did not push (one that failed: dead-
/// lettered or queued again, which the outcome does not tell; or a panic): the turn then claims
/// the tenant's due callbacks as well.
async fn process_claimed(
    shared: &Arc<Shared>,
    rt: &Arc<TenantRuntime>,
    mut runs: Vec<Run>,
    own: &mut Vec<PendingCallback>,
) -> Result<bool> {
    let result = if runs.len() == 1 {
        let run = runs[0].clone();
        AssertUnwindSafe(async { rt.engine.process(run.clone()).await.map(|o| vec![(run, o)]) }).catch_unwind().await
    } else {
        AssertUnwindSafe(rt.engine.process_claimed(runs.clone())).catch_unwind().await
    };
    match result {
        Ok(done) => {
            let mut all_own = true;
            for (mut run, outcome) in done? {
                tracing::info!(tenant = %rt.tenant_id, key = %run.idempotency_key, status = %outcome.sync_status.as_str(), "run processed");
                if matches!(outcome.sync_status, SyncStatus::Synced | SyncStatus::Skipped) {
                    let generation = run.claim;
                    run.outcome = Some(outcome);
                    own.push(PendingCallback { run, generation, attempts: 0 });
                } else {
                    all_own = false;
                }
            }
            Ok(all_own)
        }
        Err(panic) => {
            let text = panic_text(panic.as_ref());
            forget_runtime(shared, rt).await;
            // The runs the panic left claimed (a batch may have finished some before it).
            let mut unfinished = Vec::new();
            for run in runs.drain(..) {
                match shared.store.get(run.id).await? {
                    Some(now) if now.status == RunStatus::Running && now.claim == run.claim => unfinished.push(run),
                    _ => {}
                }
            }
            for run in unfinished {
                tracing::error!(tenant = %rt.tenant_id, key = %run.idempotency_key, panic = %text, "processing a run panicked: it is dead-lettered and the worker goes on");
                rt.engine.finish_panicked(&run, &text).await?;
            }
            Ok(false)
        }
    }
}

/// One tenant's turn: takes its business's dispatch lease and claims its first runs in one go
/// ([`DispatchStore::begin_turn`]; a business another worker holds is left alone: that worker
/// drains it), drains it ([`dispatch`]), and ends the turn recording the callbacks delivered and
/// releasing the lease in one go: with the other turns that end within
/// [`ServiceConfig::turn_end_delay`](super::ServiceConfig::turn_end_delay) ([`TurnEnds`]), or at
/// once ([`DispatchStore::end_turn`]) when that is zero or the pool is stopping. Runs are
/// claimed with the lease only when the tenant's runtime is built and its Magento accepts the
/// ledger, so that what is claimed is processed at once; otherwise the lease alone is taken. A
/// turn the webhook route began (`begun`: [`webhook_turn`]) is continued instead, under the name
/// it was begun with. True when the turn ended on
/// [`ServiceConfig::batch`](super::ServiceConfig::batch) with more possibly waiting (the business
/// goes back in line, behind the others).
async fn turn(
    shared: &Arc<Shared>,
    worker: &str,
    stop: &AtomicBool,
    info: &BindingInfo,
    begun: Option<BegunTurn>,
) -> bool {
    let (holder, lease, first, ready) = match begun {
        Some(BegunTurn { holder, taken, begun, ready, .. }) => {
            tracing::debug!(tenant = %info.tenant_id, holder = %holder, runs = begun.claimed.runs.len(), "continuing the turn the webhook began");
            // The runtime the route found ready (none only in the queue's own tests).
            let ready = match ready {
                Some(ready) => Some(ready),
                None => ready_with_batch(shared, info).await,
            };
            (holder, HeldLease { renewed: taken }, begun, ready)
        }
        None => {
            let ready = ready_with_batch(shared, info).await;
            let limit = ready.as_ref().map_or(0, |(_, per_claim)| (*per_claim).min(shared.config.batch));
            // A turn of this process on the business that ended and is not recorded yet still
            // holds its lease: recorded first, or this turn would find the lease taken.
            shared.turn_ends.settle(shared, &info.scope).await;
            // The lease is held under the worker's name and a number of the turn's own: an end
            // of an earlier turn recorded late never gives up this turn's lease.
            let number = shared.queue.begun_turns.fetch_add(1, Ordering::Relaxed);
            let plan = TurnPlan::now(shared, format!("{worker}.{number}"), limit);
            match shared.store.begin_turn(&plan.start(info)).await {
                Ok(Some(first)) => (plan.holder, HeldLease::now(), first, ready),
                Ok(None) => return false,
                Err(e) => {
                    tracing::warn!(business = %info.scope, error = %e, "cannot take the dispatch lease");
                    return false;
                }
            }
        }
    };
    let holder = holder.as_str();
    // Anything else that panics in the tenant's turn (a callback, building its runtime) is
    // caught here: the lease is released below and the tenant's runtime rebuilt next time.
    let mut delivered = Vec::new();
    let started = Started { lease, first, ready };
    let drained = dispatch(shared, info, holder, stop, started, &mut delivered);
    let result = match AssertUnwindSafe(drained).catch_unwind().await {
        Ok(result) => result,
        Err(panic) => {
            let text = panic_text(panic.as_ref());
            tracing::error!(tenant = %info.tenant_id, panic = %text, "a worker panicked on the tenant's turn; it goes on");
            shared.runtimes.lock().await.remove(&info.tenant_id);
            Err(Error::internal(format!("a worker panicked: {text}")))
        }
    };
    if shared.config.turn_end_delay.is_zero() || !shared.queue.has_workers() {
        if let Err(e) = shared.store.end_turn(&info.scope, holder, &delivered, shared.clock.now()).await {
            tracing::warn!(business = %info.scope, error = %e, "cannot end the turn (the lease expires by itself; the callbacks delivered are sent again)");
        }
    } else {
        shared.turn_ends.push(TurnEnd { scope: info.scope.clone(), holder: holder.to_owned(), delivered });
    }
    match result {
        Ok(more) => {
            shared.report(&info.tenant_id, None);
            more
        }
        Err(e) => {
            shared.report(&info.tenant_id, Some(&e));
            false
        }
    }
}

/// A turn's start as it is taken now: under whose name, until when the lease and the claimed runs
/// are held, and how many runs are claimed ([`TurnPlan::start`] for a tenant).
struct TurnPlan {
    holder: String,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    run_lease_until: DateTime<Utc>,
    limit: usize,
}

impl TurnPlan {
    /// The lease for [`ServiceConfig::dispatch_lease`](super::ServiceConfig::dispatch_lease) and
    /// the runs for the engine's lease, from now on the service's clock.
    fn now(shared: &Shared, holder: String, limit: usize) -> Self {
        let now = shared.clock.now();
        Self {
            holder,
            now,
            lease_until: byte8_ledger_core::clock::later(now, shared.config.dispatch_lease),
            run_lease_until: byte8_ledger_core::clock::later(now, shared.config.engine.lease),
            limit,
        }
    }

    /// The turn's start for the tenant of `info`.
    fn start<'a>(&'a self, info: &'a BindingInfo) -> TurnStart<'a> {
        TurnStart {
            scope: &info.scope,
            tenant: &info.tenant_id,
            holder: &self.holder,
            now: self.now,
            lease_until: self.lease_until,
            run_lease_until: self.run_lease_until,
            limit: self.limit,
        }
    }
}

/// A turn the webhook route may begin for this process's workers, with the run it queues
/// ([`webhook_turn`]).
pub(crate) struct WebhookTurn {
    /// Its start. The holder is the process and a number of its own, so that no worker (named
    /// by its number alone) or other begun turn renews or releases the lease by mistake.
    plan: TurnPlan,
    taken: Instant,
    /// The tenant's runtime, found ready, and its batch size: the worker's turn uses them.
    ready: (Arc<TenantRuntime>, usize),
}

impl WebhookTurn {
    /// The turn's start for the tenant of `info` (the webhook's run's).
    pub(crate) fn start<'a>(&'a self, info: &'a BindingInfo) -> TurnStart<'a> {
        self.plan.start(info)
    }

    /// Hands the begun turn to this process's workers: the next one free continues it.
    pub(crate) fn hand_over(self, shared: &Shared, info: BindingInfo, begun: Begun) {
        let turn =
            BegunTurn { holder: self.plan.holder, taken: self.taken, begun, ready: Some(self.ready), announced: false };
        shared.queue.offer_begun(info, turn);
    }
}

/// The turn the webhook route begins with the run it queues, when this process's workers can
/// take the tenant at once: workers run here, one of them is waiting for work (so the turn's
/// permits and claim do not wait in line behind busy workers), and the tenant's runtime is built
/// and its Magento accepts the ledger (as a worker's own turn claims runs only then). Its lease
/// and claim are those a worker's own turn would take now. `None`: the route only queues, and
/// announces.
pub(crate) async fn webhook_turn(shared: &Shared, info: &BindingInfo) -> Option<WebhookTurn> {
    // A turn on the business that ended and is not recorded yet holds its lease: the worker
    // the route announces to records it and begins the turn.
    if !shared.queue.has_workers()
        || shared.queue.idle.load(Ordering::Relaxed) == 0
        || shared.turn_ends.is_open(&info.scope)
    {
        return None;
    }
    let ready = ready_with_batch(shared, info).await?;
    let number = shared.queue.begun_turns.fetch_add(1, Ordering::Relaxed);
    let holder = format!("{}/webhook-{number}", shared.process);
    let plan = TurnPlan::now(shared, holder, ready.1.min(shared.config.batch));
    Some(WebhookTurn { plan, taken: Instant::now(), ready })
}

/// [`ready_runtime`] with its [`batch_size`]: what a turn claims with.
async fn ready_with_batch(shared: &Shared, info: &BindingInfo) -> Option<(Arc<TenantRuntime>, usize)> {
    let rt = ready_runtime(shared, info).await?;
    let per_claim = batch_size(&rt).await;
    Some((rt, per_claim))
}

/// The tenant's runtime when it is built already (for its binding as paired now) and its
/// Magento is not known to refuse the ledger: a turn may then claim runs with its lease.
async fn ready_runtime(shared: &Shared, info: &BindingInfo) -> Option<Arc<TenantRuntime>> {
    if info.magento_status == ConnectionStatus::TokenRevoked {
        return None;
    }
    let runtimes = shared.runtimes.lock().await;
    let rt = runtimes.get(&info.tenant_id)?;
    (rt.paired_at == info.paired_at && rt.scope == info.scope && rt.magento.status() != ConnectionStatus::TokenRevoked)
        .then(|| Arc::clone(rt))
}

/// The safety net: one read of the tenants with work due that nobody announced (a run due again
/// after its back-off, a callback to retry, a webhook another process queued, a run requeued by
/// the command) — `DispatchStore::due_tenants`, which leaves out businesses whose dispatch lease
/// is held — and, when `probe` is set, the active tenants whose Magento refused the ledger
/// (probed every `probe_interval`). Each goes in line ([`Queue::offer`]). Returns how many.
async fn look(shared: &Arc<Shared>, probe: bool) -> Result<usize> {
    let due: std::collections::HashSet<(String, String)> =
        shared.store.due_tenants(shared.clock.now()).await?.into_iter().collect();
    if due.is_empty() && !probe {
        return Ok(0);
    }
    let mut offered = 0;
    for info in shared.store.bindings().await?.into_iter().filter(BindingInfo::is_active) {
        if due.contains(&(info.scope.clone(), info.tenant_id.clone()))
            || (probe && info.magento_status == ConnectionStatus::TokenRevoked)
        {
            shared.queue.offer(info);
            offered += 1;
        }
    }
    Ok(offered)
}

/// Drops a tenant's runtime after a panic (its state may be half-updated): the next turn builds
/// a new one.
async fn forget_runtime(shared: &Shared, rt: &Arc<TenantRuntime>) {
    let mut runtimes = shared.runtimes.lock().await;
    if runtimes.get(&rt.tenant_id).is_some_and(|r| Arc::ptr_eq(r, rt)) {
        runtimes.remove(&rt.tenant_id);
    }
}

/// A panic's message, short and on one line (for logs and the run's outcome).
fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    byte8_ledger_core::http::sanitise(&text, 200)
}

impl Shared {
    /// Logs a tenant's dispatch error once (not every pass), and when it clears.
    fn report(&self, tenant: &str, error: Option<&Error>) {
        let mut last = self.last_errors.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match error {
            Some(e) => {
                let text = e.to_string();
                if last.get(tenant) != Some(&text) {
                    tracing::warn!(tenant = %tenant, error = %text, "cannot dispatch the tenant's events for now");
                    last.insert(tenant.to_owned(), text);
                }
            }
            None => {
                if last.remove(tenant).is_some() {
                    tracing::info!(tenant = %tenant, "the tenant's events are dispatched again");
                }
            }
        }
    }
}

/// The turns of this process's workers that ended and are not recorded yet: a turn's end (its
/// callbacks delivered, its business's lease given up) waits here up to
/// [`ServiceConfig::turn_end_delay`](super::ServiceConfig::turn_end_delay), and every end waiting
/// then is recorded in one go ([`DispatchStore::end_turns`](crate::store::DispatchStore::end_turns),
/// by [`record_turn_ends`]). At a busy hour's pace, turns of different businesses end within
/// milliseconds of one another, and each recorded alone cost a statement an event.
///
/// A business whose end waits is still leased in the store. A turn of this process on it
/// records the waiting ends first ([`settle`](Self::settle)); the webhook route does not begin
/// one ([`webhook_turn`]). A process that dies with ends waiting leaves their leases to expire
/// and their callbacks due, as a worker that dies in its turn does: they are sent again.
#[derive(Debug, Default)]
pub(crate) struct TurnEnds {
    waiting: Mutex<WaitingEnds>,
    /// Held while ends are recorded, so that a settle waits for the ones being recorded.
    recording: tokio::sync::Mutex<()>,
    /// The recorder waits here for an end.
    ended: tokio::sync::Notify,
}

#[derive(Debug, Default)]
struct WaitingEnds {
    ends: Vec<TurnEnd>,
    /// The businesses with an end waiting or being recorded, and how many.
    open: HashMap<String, usize>,
}

impl TurnEnds {
    fn lock(&self) -> std::sync::MutexGuard<'_, WaitingEnds> {
        self.waiting.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A turn ended: recorded with the others that end within the delay.
    fn push(&self, end: TurnEnd) {
        {
            let mut waiting = self.lock();
            *waiting.open.entry(end.scope.clone()).or_default() += 1;
            waiting.ends.push(end);
        }
        self.ended.notify_one();
    }

    /// Whether an end of a turn on `scope` waits or is being recorded (its lease still held).
    fn is_open(&self, scope: &str) -> bool {
        self.lock().open.contains_key(scope)
    }

    /// Records every end waiting now, in one store call. A failure is logged: the leases then
    /// expire by themselves and the callbacks delivered are sent again, as when a turn's own end
    /// fails.
    async fn record(&self, shared: &Shared) {
        let _recording = self.recording.lock().await;
        let ends = std::mem::take(&mut self.lock().ends);
        if ends.is_empty() {
            return;
        }
        if let Err(e) = shared.store.end_turns(&ends, shared.clock.now()).await {
            tracing::warn!(turns = ends.len(), error = %e, "cannot end the turns (their leases expire by themselves; the callbacks delivered are sent again)");
        }
        let mut waiting = self.lock();
        for end in &ends {
            if let Some(n) = waiting.open.get_mut(&end.scope) {
                *n -= 1;
                if *n == 0 {
                    waiting.open.remove(&end.scope);
                }
            }
        }
    }

    /// Before a turn on `scope`: records the ends waiting when one of them is `scope`'s (and
    /// waits for those being recorded), so that its lease is free.
    async fn settle(&self, shared: &Shared, scope: &str) {
        if self.is_open(scope) {
            self.record(shared).await;
        }
    }
}

/// Records the turns' ends ([`TurnEnds`]): from the first end that waits, the delay, then all
/// that wait, in one go; until the pool stops (which records the last ones once its workers
/// have stopped).
async fn record_turn_ends(shared: Arc<Shared>, pool: Arc<PoolState>) {
    loop {
        let Some(mut woken) = pool.watch() else {
            break;
        };
        tokio::select! {
            () = shared.turn_ends.ended.notified() => {}
            () = &mut woken => continue,
        }
        tokio::select! {
            () = tokio::time::sleep(shared.config.turn_end_delay) => {}
            () = &mut woken => {}
        }
        shared.turn_ends.record(&shared).await;
    }
}

/// Where a business stands in this process's line ([`Queue`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    /// In line, waiting for a worker.
    Queued,
    /// A worker is on it.
    Busy,
    /// A worker is on it, and work was announced meanwhile: back in line after the turn.
    BusyAgain,
}

#[derive(Debug, Default)]
struct Line {
    order: std::collections::VecDeque<(String, String)>,
    marks: HashMap<(String, String), (Mark, BindingInfo)>,
    /// Turns the webhook route began for a business in line ([`Queue::offer_begun`]), handed to
    /// the worker that takes it.
    begun: HashMap<(String, String), BegunTurn>,
}

impl std::fmt::Debug for BegunTurn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BegunTurn")
            .field("holder", &self.holder)
            .field("begun", &self.begun)
            .field("ready", &self.ready.is_some())
            .field("announced", &self.announced)
            .finish_non_exhaustive()
    }
}

impl Line {
    /// `key`'s tenant, taken out of line by a worker: marked as being drained (to come back in
    /// line after the turn when work was announced while its begun turn waited), with the turn
    /// begun for it if any.
    fn hand_out(&mut self, key: &(String, String)) -> Option<(BindingInfo, Option<BegunTurn>)> {
        let turn = self.begun.remove(key);
        let entry = self.marks.get_mut(key)?;
        entry.0 = if turn.as_ref().is_some_and(|t| t.announced) { Mark::BusyAgain } else { Mark::Busy };
        Some((entry.1.clone(), turn))
    }
}

/// A turn the webhook route began for this process's workers in the statement that queued its
/// run ([`DispatchStore::enqueue_and_begin`](crate::store::DispatchStore::enqueue_and_begin)):
/// the worker that takes the business from the line drains it and ends it under its holder's
/// name, with no `begin_turn` of its own.
pub(crate) struct BegunTurn {
    /// The name the lease was taken under ([`webhook_turn`]).
    holder: String,
    /// When the lease was taken (its renewal is due a quarter of the lease after).
    taken: Instant,
    /// What the turn's start claimed.
    begun: Begun,
    /// The tenant's runtime the route found ready, and its batch size.
    ready: Option<(Arc<TenantRuntime>, usize)>,
    /// Work was announced for the tenant while the turn waited in line (after its claim, maybe):
    /// the tenant comes back in line after it.
    announced: bool,
}

/// This process's line of tenants with work to do, which its workers take from: fed by the
/// webhook route the moment it queues a run ([`Queue::offer`]), by a turn that stopped at its
/// bound, and by the dispatcher's periodic look (the safety net: [`look`]). A tenant is in line
/// (or being drained) at most once, so an idle worker waits here without reading the store, and
/// two workers of one process never contend for one business.
#[derive(Debug, Default)]
pub(crate) struct Queue {
    line: Mutex<Line>,
    /// Workers wait here for a tenant.
    ready: tokio::sync::Notify,
    /// The dispatcher waits here (a tenant offered while no worker is idle: one more may be
    /// started, up to the pool's cap).
    poke: tokio::sync::Notify,
    /// Workers waiting for a tenant now.
    idle: AtomicUsize,
    /// Whether a worker pool runs in this process.
    running: AtomicBool,
    /// Another process announced work ([`crate::wake`]): the dispatcher looks at once.
    look_now: AtomicBool,
    /// Turns begun so far, by the webhook route ([`webhook_turn`]) and by the workers: numbers
    /// their holders, so that each turn's lease has a name of its own.
    begun_turns: std::sync::atomic::AtomicU64,
}

impl Queue {
    fn lock(&self) -> std::sync::MutexGuard<'_, Line> {
        self.line.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts `info`'s tenant in line, unless it is already; a tenant being drained goes back in
    /// line after its turn. Wakes a worker (or the dispatcher, when none is idle).
    pub(crate) fn offer(&self, info: BindingInfo) {
        self.offer_with(info, None);
    }

    /// [`offer`](Self::offer)s `info`'s tenant with the turn the webhook route began for it: the
    /// worker that takes the tenant continues that turn. A turn already waiting for the tenant
    /// (its lease must have lapsed for this one to be begun) is dropped: its claimed runs come
    /// back when their lease expires.
    pub(crate) fn offer_begun(&self, info: BindingInfo, turn: BegunTurn) {
        self.offer_with(info, Some(turn));
    }

    fn offer_with(&self, info: BindingInfo, turn: Option<BegunTurn>) {
        let key = (info.scope.clone(), info.tenant_id.clone());
        let mut line = self.lock();
        let Line { order, marks, begun } = &mut *line;
        match turn {
            Some(turn) => {
                if let Some(old) = begun.insert(key.clone(), turn) {
                    tracing::warn!(tenant = %info.tenant_id, holder = %old.holder, "a turn begun for the tenant was replaced before a worker took it; its runs come back when their lease expires");
                }
            }
            // Announced while a begun turn waits in line: that turn's claim may have been made
            // before this work was queued, so the tenant comes back in line after it.
            None => {
                if let Some(waiting) = begun.get_mut(&key) {
                    waiting.announced = true;
                }
            }
        }
        match marks.get_mut(&key) {
            None => {
                marks.insert(key.clone(), (Mark::Queued, info));
                order.push_back(key);
            }
            Some((mark, stored)) => {
                if *mark == Mark::Busy {
                    *mark = Mark::BusyAgain;
                }
                *stored = info;
                return;
            }
        }
        drop(line);
        self.ready.notify_one();
        if self.idle.load(Ordering::Relaxed) == 0 {
            self.poke.notify_one();
        }
    }

    /// The next tenant in line, now marked as being drained (the tests' view of
    /// [`take_with_turn`](Self::take_with_turn), for tenants offered without a begun turn).
    #[cfg(test)]
    fn take(&self) -> Option<BindingInfo> {
        self.take_with_turn().map(|(info, _)| info)
    }

    /// The next tenant in line, now marked as being drained, with the turn begun for it if any
    /// (work announced after that turn was begun brings the tenant back in line after it).
    fn take_with_turn(&self) -> Option<(BindingInfo, Option<BegunTurn>)> {
        let mut line = self.lock();
        let key = line.order.pop_front()?;
        line.hand_out(&key)
    }

    /// A turn on `info`'s tenant is over: back in line when `more` may be waiting or work was
    /// announced during the turn, out of line otherwise.
    fn done(&self, info: &BindingInfo, more: bool) {
        let key = (info.scope.clone(), info.tenant_id.clone());
        let mut line = self.lock();
        let again = line.marks.get(&key).is_some_and(|(mark, _)| *mark == Mark::BusyAgain);
        if more || again {
            if let Some(entry) = line.marks.get_mut(&key) {
                entry.0 = Mark::Queued;
            }
            line.order.push_back(key);
            drop(line);
            self.ready.notify_one();
        } else {
            line.marks.remove(&key);
        }
    }

    /// Puts back in line every tenant marked as being drained: what a pool whose workers were
    /// aborted mid-turn (`WorkerPool::stop_within`) left behind, for the next pool to take over.
    fn recover(&self) {
        let mut line = self.lock();
        let Line { order, marks, .. } = &mut *line;
        for (key, (mark, _)) in marks.iter_mut() {
            if *mark != Mark::Queued {
                *mark = Mark::Queued;
                order.push_back(key.clone());
            }
        }
    }

    /// Whether this process runs workers (a webhook is then announced to them, not on the bus).
    pub(crate) fn has_workers(&self) -> bool {
        self.running.load(Ordering::Relaxed)
    }

    /// Once the workers stop: a tenant in line with a turn begun for it (its runs claimed), so
    /// that what the webhook route claimed is processed rather than left to its lease.
    fn take_begun(&self) -> Option<(BindingInfo, BegunTurn)> {
        let mut line = self.lock();
        let position = line.order.iter().position(|key| line.begun.contains_key(key))?;
        let key = line.order.remove(position)?;
        match line.hand_out(&key)? {
            (info, Some(turn)) => Some((info, turn)),
            (_, None) => None,
        }
    }

    /// Waits for the next tenant in line (marked as being drained), with the turn the webhook
    /// route began for it if any, without reading the store. Once `stop` is set (the pool then
    /// wakes every waiter), only tenants with a begun turn are handed out, then `None`.
    async fn next(&self, stop: &AtomicBool) -> Option<(BindingInfo, Option<BegunTurn>)> {
        loop {
            // Registered before looking at the line, so that an offer in between is not missed,
            // and gone when this returns: a worker busy on a turn holds no registration, which
            // would take an offer's wake-up from an idle worker until the turn ended.
            let ready = self.ready.notified();
            tokio::pin!(ready);
            ready.as_mut().enable();
            if stop.load(Ordering::Relaxed) {
                return self.take_begun().map(|(info, turn)| (info, Some(turn)));
            }
            if let Some(taken) = self.take_with_turn() {
                return Some(taken);
            }
            self.idle.fetch_add(1, Ordering::Relaxed);
            ready.await;
            self.idle.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Tenants in line (not counting those being drained).
    fn waiting(&self) -> usize {
        self.lock().order.len()
    }
}

/// One worker's loop: takes the next tenant in line and drains it, or waits for one (without
/// reading the store) until `stop` is set.
async fn work(shared: Arc<Shared>, i: usize, stop: Arc<AtomicBool>) {
    let name = holder(&shared, i);
    let queue = Arc::clone(&shared.queue);
    while let Some((info, begun)) = queue.next(&stop).await {
        let more = turn(&shared, &name, &stop, &info, begun).await;
        queue.done(&info, more && !stop.load(Ordering::Relaxed));
    }
}

/// The dispatcher: every [`ServiceConfig::poll_interval`](super::ServiceConfig::poll_interval)
/// it looks for work nobody announced ([`look`]), and whenever tenants wait in line while no
/// worker is idle it starts another worker, up to the pool's cap.
async fn dispatcher(shared: Arc<Shared>, pool: Arc<PoolState>) {
    let mut probed: Option<Instant> = None;
    let mut next = tokio::time::Instant::now();
    loop {
        let poke = shared.queue.poke.notified();
        tokio::pin!(poke);
        poke.as_mut().enable();
        let Some(mut woken) = pool.watch() else {
            break;
        };
        if shared.queue.look_now.swap(false, Ordering::Relaxed) {
            next = tokio::time::Instant::now();
        }
        if tokio::time::Instant::now() >= next {
            let probe = probed.is_none_or(|t| t.elapsed() >= shared.config.probe_interval);
            if probe {
                probed = Some(Instant::now());
            }
            if let Err(e) = look(&shared, probe).await {
                tracing::warn!(error = %e, "cannot read the tenants with work due");
            }
            next = tokio::time::Instant::now() + shared.config.poll_interval;
        }
        pool.grow(&shared);
        tokio::select! {
            () = &mut poke => {}
            () = &mut woken => {}
            () = tokio::time::sleep_until(next) => {}
        }
    }
}

/// Hears other processes' announcements of work ([`crate::wake`]) and has the dispatcher look at
/// once; after a broken connection, tries again a poll interval later.
async fn listen(shared: Arc<Shared>, bus: Arc<dyn crate::wake::WakeBus>, pool: Arc<PoolState>) {
    let mut failing = false;
    loop {
        let Some(mut woken) = pool.watch() else {
            break;
        };
        tokio::select! {
            () = &mut woken => continue,
            heard = bus.next() => match heard {
                Ok(()) => {
                    failing = false;
                    shared.queue.look_now.store(true, Ordering::Relaxed);
                    shared.queue.poke.notify_one();
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "cannot listen for other processes' work (found at each look instead)");
                    }
                    failing = true;
                    tokio::select! {
                        () = &mut woken => {}
                        () = tokio::time::sleep(shared.config.poll_interval) => {}
                    }
                }
            },
        }
    }
}

/// What the pool's tasks share.
#[derive(Debug)]
struct PoolState {
    stop: Arc<AtomicBool>,
    wake: Arc<tokio::sync::Notify>,
    /// The workers' supervisors.
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The most workers the dispatcher may start.
    cap: usize,
}

impl PoolState {
    /// The pool's wake-up, registered before its stop is looked at (so that a stop in between
    /// is not missed): what its tasks other than the workers wait on beside their own work.
    /// `None` once the pool stops.
    fn watch(&self) -> Option<std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>>> {
        let mut woken = Box::pin(self.wake.notified());
        woken.as_mut().enable();
        (!self.stop.load(Ordering::Relaxed)).then_some(woken)
    }

    fn workers(&self) -> usize {
        self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }

    /// Starts worker number `i` under a supervisor.
    fn spawn(&self, shared: &Arc<Shared>, i: usize) -> JoinHandle<()> {
        let (shared, stop) = (Arc::clone(shared), Arc::clone(&self.stop));
        // The supervisor: a worker whose task panicked anyway is logged and restarted
        // (after a poll interval, so that a panic on every turn does not spin).
        tokio::spawn(async move {
            loop {
                let mut task = AbortOnDrop(tokio::spawn(work(Arc::clone(&shared), i, Arc::clone(&stop))));
                match (&mut task.0).await {
                    Err(e) if e.is_panic() && !stop.load(Ordering::Relaxed) => {
                        let text = panic_text(e.into_panic().as_ref());
                        tracing::error!(worker = i, panic = %text, "a worker panicked: restarting it");
                        tokio::time::sleep(shared.config.poll_interval).await;
                    }
                    _ => return,
                }
            }
        })
    }

    /// Tenants waiting in line and no worker idle: starts one more worker per waiting tenant, up
    /// to the cap.
    fn grow(&self, shared: &Arc<Shared>) {
        let waiting = shared.queue.waiting();
        if waiting == 0 || shared.queue.idle.load(Ordering::Relaxed) > 0 {
            return;
        }
        let mut tasks = self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.stop.load(Ordering::Relaxed) || tasks.len() >= self.cap {
            return;
        }
        let add = waiting.min(self.cap - tasks.len());
        for _ in 0..add {
            let i = tasks.len();
            tasks.push(self.spawn(shared, i));
        }
        tracing::info!(workers = tasks.len(), cap = self.cap, waiting, "all workers busy: started {add} more");
    }
}

/// Running worker tasks.
pub struct WorkerPool {
    state: Arc<PoolState>,
    /// The dispatcher (`dispatcher`).
    dispatcher: Option<JoinHandle<()>>,
    /// The listener of other processes' announcements (`listen`), when a bus is set.
    listener: Option<JoinHandle<()>>,
    /// The periodic retention purge (`super::retention`), when configured.
    purger: Option<JoinHandle<()>>,
    /// The idle-token task (`super::tokens`).
    token_keeper: Option<JoinHandle<()>>,
    /// The recorder of the turns' ends (`record_turn_ends`), when they wait to be recorded together.
    end_recorder: Option<JoinHandle<()>>,
    /// What the pool runs on: the turns' last ends are recorded once it stops.
    shared: Arc<Shared>,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("state", &self.state)
            .field("queue", &self.shared.queue)
            .field("dispatcher", &self.dispatcher.is_some())
            .field("listener", &self.listener.is_some())
            .field("purger", &self.purger.is_some())
            .field("token_keeper", &self.token_keeper.is_some())
            .field("end_recorder", &self.end_recorder.is_some())
            .finish_non_exhaustive()
    }
}

impl WorkerPool {
    /// `n` workers at once, growing up to `cap` while tenants wait in line and none is idle.
    pub(crate) fn spawn(shared: Arc<Shared>, n: usize, cap: usize) -> Self {
        if !shared.queue.has_workers() {
            shared.queue.recover();
        }
        let state = Arc::new(PoolState {
            stop: Arc::new(AtomicBool::new(false)),
            wake: Arc::new(tokio::sync::Notify::new()),
            tasks: Mutex::new(Vec::new()),
            cap: cap.max(n),
        });
        {
            let mut tasks = state.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            for i in 0..n {
                tasks.push(state.spawn(&shared, i));
            }
        }
        let dispatcher = (n > 0).then(|| tokio::spawn(dispatcher(Arc::clone(&shared), Arc::clone(&state))));
        shared.queue.running.store(n > 0, Ordering::Relaxed);
        let listener = match (n > 0, shared.wake.get()) {
            (true, Some(bus)) => Some(tokio::spawn(listen(Arc::clone(&shared), Arc::clone(bus), Arc::clone(&state)))),
            _ => None,
        };
        let purger = shared.config.retention.is_some().then(|| {
            tokio::spawn(super::retention::purge_loop(
                Arc::clone(&shared),
                Arc::clone(&state.stop),
                Arc::clone(&state.wake),
            ))
        });
        let token_keeper = (n > 0).then(|| {
            tokio::spawn(super::tokens::token_loop(
                Arc::clone(&shared),
                Arc::clone(&state.stop),
                Arc::clone(&state.wake),
            ))
        });
        let end_recorder = (n > 0 && !shared.config.turn_end_delay.is_zero())
            .then(|| tokio::spawn(record_turn_ends(Arc::clone(&shared), Arc::clone(&state))));
        Self { state, dispatcher, listener, purger, token_keeper, end_recorder, shared }
    }

    /// How many workers run now (the pool may have grown since it started).
    pub fn len(&self) -> usize {
        self.state.workers()
    }

    /// True when there is none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most workers the pool grows to.
    pub fn cap(&self) -> usize {
        self.state.cap
    }

    fn halt(&self) -> Vec<JoinHandle<()>> {
        self.state.stop.store(true, Ordering::Relaxed);
        self.shared.queue.running.store(false, Ordering::Relaxed);
        self.state.wake.notify_waiters();
        self.shared.queue.ready.notify_waiters();
        std::mem::take(&mut *self.state.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Stops every worker after the run or callback it is on, and waits for them (all at
    /// once: they stop in parallel), however long that takes.
    pub async fn stop(mut self) {
        let tasks = self.halt();
        let others = self.others();
        futures::future::join_all(tasks.into_iter().chain(others.into_iter().flatten())).await;
        self.shared.turn_ends.record(&self.shared).await;
    }

    /// The pool's tasks other than its workers.
    fn others(&mut self) -> [Option<JoinHandle<()>>; 5] {
        [
            self.dispatcher.take(),
            self.listener.take(),
            self.purger.take(),
            self.token_keeper.take(),
            self.end_recorder.take(),
        ]
    }

    /// As [`stop`](Self::stop), waiting at most `limit`: workers still busy then (a call that
    /// hangs) are aborted, and what they had claimed comes back when its lease expires
    /// ([`EngineConfig::lease`](byte8_ledger_core::engine::EngineConfig::lease)). True when every worker
    /// stopped by itself.
    pub async fn stop_within(mut self, limit: std::time::Duration) -> bool {
        let tasks = self.halt();
        let others = self.others();
        let tasks: Vec<_> = tasks.into_iter().chain(others.into_iter().flatten()).collect();
        let aborts: Vec<_> = tasks.iter().map(JoinHandle::abort_handle).collect();
        if tokio::time::timeout(limit, futures::future::join_all(tasks)).await.is_ok() {
            self.shared.turn_ends.record(&self.shared).await;
            return true;
        }
        tracing::warn!(
            limit_s = limit.as_secs_f64(),
            "workers still busy at the shutdown limit: aborted (their claims come back when their leases expire)"
        );
        for a in aborts {
            a.abort();
        }
        // The turns that did end are recorded; the aborted ones' leases expire.
        self.shared.turn_ends.record(&self.shared).await;
        false
    }
}

/// A task aborted when its handle is dropped (a supervisor aborted takes its worker with it).
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::BindingStatus;

    fn info(scope: &str, tenant: &str) -> BindingInfo {
        let t = DateTime::<Utc>::from_timestamp(1_700_000_000, 0).unwrap_or_default();
        BindingInfo {
            tenant_id: tenant.into(),
            scope: scope.into(),
            magento_base_url: "http://127.0.0.1:1".into(),
            status: BindingStatus::Active,
            magento_status: ConnectionStatus::Active,
            paired_at: t,
            created_at: t,
            updated_at: t,
        }
    }

    fn tenant(i: Option<BindingInfo>) -> Option<String> {
        i.map(|i| i.tenant_id)
    }

    #[test]
    fn a_tenant_is_in_line_once_however_often_it_is_offered() {
        let q = Queue::default();
        q.offer(info("b1", "t1"));
        q.offer(info("b2", "t2"));
        q.offer(info("b1", "t1"));
        assert_eq!(q.waiting(), 2);
        assert_eq!(tenant(q.take()).as_deref(), Some("t1"));
        assert_eq!(tenant(q.take()).as_deref(), Some("t2"));
        assert_eq!(tenant(q.take()), None);
    }

    #[test]
    fn a_tenant_being_drained_is_not_handed_to_a_second_worker_but_comes_back_if_work_was_announced() {
        let q = Queue::default();
        q.offer(info("b1", "t1"));
        let first = q.take().unwrap();
        // Announced while a worker drains it: not in line twice, no second worker on it.
        q.offer(info("b1", "t1"));
        assert_eq!(q.waiting(), 0);
        assert_eq!(tenant(q.take()), None);
        // After the turn it is back in line (the announcement may have come after its last claim).
        q.done(&first, false);
        assert_eq!(tenant(q.take()).as_deref(), Some("t1"));
        q.done(&first, false);
        assert_eq!(q.waiting(), 0, "nothing announced during that turn: out of line");
        assert_eq!(tenant(q.take()), None);
    }

    /// Two idle workers wait on the line; the first offer goes to one of them, which keeps it (a
    /// long turn: it does not come back to the line); a second offer must then wake the other
    /// one, not wait for the first one's turn to end.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_offer_wakes_an_idle_worker_while_another_is_busy_on_a_turn() {
        let q = Arc::new(Queue::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for _ in 0..2 {
            let (q, stop, tx) = (Arc::clone(&q), Arc::clone(&stop), tx.clone());
            tokio::spawn(async move {
                // One turn each, never finished.
                if let Some((info, _)) = q.next(&stop).await {
                    let _ = tx.send(info.tenant_id);
                }
                std::future::pending::<()>().await;
            });
        }
        while q.idle.load(Ordering::Relaxed) < 2 {
            tokio::task::yield_now().await;
        }
        q.offer(info("b1", "t1"));
        assert_eq!(rx.recv().await.as_deref(), Some("t1"));
        q.offer(info("b2", "t2"));
        // Never arrives if the busy worker took the wake-up (a hang, not a timing assertion: the
        // bound only turns it into a failure).
        let second = tokio::time::timeout(std::time::Duration::from_secs(60), rx.recv()).await;
        assert_eq!(second.ok().flatten().as_deref(), Some("t2"), "the idle worker was not woken");
        // Stopping wakes nobody into a turn.
        stop.store(true, Ordering::Relaxed);
        q.ready.notify_waiters();
        assert_eq!(q.waiting(), 0);
    }

    #[test]
    fn a_turn_cut_off_by_an_abort_is_taken_over_by_the_next_pool() {
        let q = Queue::default();
        q.offer(info("b1", "t1"));
        q.offer(info("b2", "t2"));
        let _aborted = q.take().unwrap();
        assert_eq!(tenant(q.take()).as_deref(), Some("t2"));
        q.done(&info("b2", "t2"), false);
        // t1's turn never ended: its mark would keep it out of line for good.
        q.offer(info("b1", "t1"));
        assert_eq!(q.waiting(), 0);
        q.recover();
        assert_eq!(tenant(q.take()).as_deref(), Some("t1"));
        assert_eq!(tenant(q.take()), None);
    }

    fn begun(holder: &str) -> BegunTurn {
        BegunTurn {
            holder: holder.into(),
            taken: Instant::now(),
            begun: Begun::default(),
            ready: None,
            announced: false,
        }
    }

    /// A turn the webhook route began goes to the worker that takes its tenant, once; a tenant
    /// offered without one is taken without one; a tenant being drained when a turn is begun for
    /// it comes back with that turn after the drain.
    #[tokio::test]
    async fn a_begun_turn_goes_with_its_tenant_to_the_worker_that_takes_it() {
        let q = Queue::default();
        let stop = AtomicBool::new(false);
        q.offer(info("b2", "t2"));
        q.offer_begun(info("b1", "t1"), begun("p/webhook-1"));
        let (first, turn) = q.next(&stop).await.expect("t2 in line");
        assert_eq!((first.tenant_id.as_str(), turn.map(|t| t.holder)), ("t2", None));
        let (second, turn) = q.next(&stop).await.expect("t1 in line");
        assert_eq!((second.tenant_id.as_str(), turn.map(|t| t.holder).as_deref()), ("t1", Some("p/webhook-1")));
        // Begun while t1 is being drained (its worker ended the turn, and so the lease, but has
        // not come back to the line yet): after the drain, t1 comes back with it.
        q.offer_begun(info("b1", "t1"), begun("p/webhook-2"));
        assert_eq!(q.waiting(), 0, "not in line twice");
        q.done(&second, false);
        let (again, turn) = q.next(&stop).await.expect("t1 back in line");
        assert_eq!((again.tenant_id.as_str(), turn.map(|t| t.holder).as_deref()), ("t1", Some("p/webhook-2")));
        q.done(&again, false);
        q.done(&first, false);
        assert_eq!(q.waiting(), 0);
        assert!(q.lock().begun.is_empty(), "every begun turn was handed out");
        // Work announced while a begun turn waits in line (its claim may predate that work):
        // the tenant comes back in line after the turn, without a turn begun.
        q.offer_begun(info("b1", "t1"), begun("p/webhook-3"));
        q.offer(info("b1", "t1"));
        assert_eq!(q.waiting(), 1, "in line once");
        let (taken, turn) = q.next(&stop).await.expect("t1");
        assert_eq!(turn.map(|t| t.holder).as_deref(), Some("p/webhook-3"));
        q.done(&taken, false);
        let (taken, turn) = q.next(&stop).await.expect("t1 again, for the work announced");
        assert_eq!((taken.tenant_id.as_str(), turn.is_none()), ("t1", true));
        q.done(&taken, false);
        assert_eq!(q.waiting(), 0);
    }

    /// Once the workers stop, a tenant in line with a begun turn is still handed out (its runs
    /// are claimed: processed now rather than left to their lease), one without is not.
    #[tokio::test]
    async fn stopping_workers_still_take_the_turns_the_webhook_began() {
        let q = Queue::default();
        let stop = AtomicBool::new(true);
        q.offer(info("b1", "t1"));
        q.offer_begun(info("b2", "t2"), begun("p/webhook-1"));
        let (taken, turn) = q.next(&stop).await.expect("the begun turn");
        assert_eq!((taken.tenant_id.as_str(), turn.map(|t| t.holder).as_deref()), ("t2", Some("p/webhook-1")));
        q.done(&taken, false);
        assert!(q.next(&stop).await.is_none(), "nothing else once stopped");
        assert_eq!(q.waiting(), 1, "t1 stays in line for the next pool");
    }

    #[test]
    fn a_turn_that_stopped_at_its_bound_goes_behind_the_others() {
        let q = Queue::default();
        q.offer(info("b1", "t1"));
        q.offer(info("b2", "t2"));
        let first = q.take().unwrap();
        q.done(&first, true);
        assert_eq!(tenant(q.take()).as_deref(), Some("t2"));
        assert_eq!(tenant(q.take()).as_deref(), Some("t1"));
    }
}
