//! The sync engine: event in, outcome out (contract.md section 2), exactly once.
//!
//! [`SyncEngine::submit`] reads an event and queues it durably (a line that cannot be read is
//! dead-lettered at once with its raw text and the field named); [`SyncEngine::process`] takes a
//! queued run, applies the policy, resolves what the document depends on, posts it through the
//! [`AccountingProvider`] trait only, and records the outcome. [`SyncEngine::sync_line`] does both
//! for one line, which is what `byte8-ledger sync` runs per input line.
//!
//! # Policy order (byte8-spec.md 4.1)
//!
//! `sync_unpaid_invoices` (P1) → `sync_zero_value_invoices` (P2) → `sync_since` (P3) →
//! `website_filter` and `store_filter` (P4, P5) → `sync_products` (P6) → `sync_stock` (P7). Every
//! skip carries its reason code ([`crate::outcome::skip`]).
//!
//! # Nothing lost, nothing twice
//!
//! - Document events dedupe for good on their key; upserts collapse while queued (see
//!   [`crate::store`]).
//! - Each step that creates a ledger record first writes an *intent* to the cross-reference, then
//!   posts, then records the result. A run that finds an intent without a result (the process died
//!   between the ledger's commit and the local write, or the answer's outcome was unknown) looks
//!   the record up by its reference in the ledger before posting again.
//! - The intent is written at once: it must be durable before the request. The result (a *done*
//!   record: the ledger id, and the facts later events need, such as an invoice's outstanding)
//!   is held by the run and written by [`RunStore::finish`](crate::store::RunStore::finish) with
//!   the run's end, in the same transaction (on PostgreSQL in its one statement), whatever the
//!   status: a credit memo whose note was posted and whose allocation then failed still records
//!   the note. The run reads its own held records, so every step sees what an earlier step
//!   recorded; the next run of the business (runs of a business are processed one at a time:
//!   the service's dispatch lease, the command's one process) starts after the finish. A finish
//!   that fails (the database is down) loses the held records and keeps the intents: the next
//!   attempt looks the records up by reference and adopts them, exactly as after a crash (a
//!   contact, created first without an intent, is created again with the event's idempotency
//!   key and, refused as taken, looked up and adopted). A finish whose claim was lost (another worker took the run over)
//!   still fills in the records that are missing or an intent. This holds for every run
//!   processed alone ([`SyncEngine::process`], [`SyncEngine::sync_line`], the service's workers,
//!   every run of a provider that does not batch); the batched path records its batch's results
//!   at once. A run that panics loses its held records as a failed finish does (its intents
//!   lead the requeued run to the records).
//! - An invoice's entry is read and its intent written in one store call, before its contact is
//!   resolved ([`XrefStore::get_or_put_intent`](crate::store::XrefStore::get_or_put_intent): one
//!   round trip on PostgreSQL where a read and a write were two). An attempt that fails between
//!   that call and the post (its contact refused, the ledger unreachable) leaves an intent whose
//!   invoice was never posted: the next attempt looks it up by reference, finds nothing and
//!   posts, one request more than a clean first attempt, never a second invoice.
//! - Processing is resumable step by step: a credit memo whose note was posted but whose
//!   allocation failed resumes at the allocation.
//! - An `invoice.paid` or `creditmemo.created` whose invoice is not in the ledger yet waits and is
//!   retried ([`Error::Pending`]) rather than failing for good; an invoice that was skipped by
//!   policy (unpaid with `sync_unpaid_invoices` off, zero value, website/store filter) makes its
//!   payment and its credit memos skipped too, with the same reason — the ledger never booked the
//!   sale, so nothing is refunded. The exception is an invoice older than `sync_since`: its
//!   credit memo is posted as an offline refund (open, unallocated), as one without an invoice
//!   is. One that Byte8 created before this crate was installed is found by reference and
//!   adopted.
//! - A credit memo is settled against its invoice: allocated up to what the invoice still has
//!   outstanding, and what is left — the invoice was paid, so the money went back to the
//!   customer — refunded as cash from the bank account the invoice was paid into (else
//!   `default_bank_account_id`) on a ledger that refunds (`Capabilities::credit_note_refunds`:
//!   Sage Standard and Plus with a `CUSTOMER_REFUND` contact payment, Xero). The policy's
//!   `refund_paid_credit_memos` (default on) turns the refund off; the credit note then stays
//!   open as the customer's credit. Each step has its own intent and look-up, so a credit memo
//!   resumes at the allocation or the refund and never posts either twice.
//! - Retryable failures go back in line with the Magento outbox's ladder (60 s, 5 min, 30 min,
//!   2 h, 6 h, 12 h, then daily; byte8-spec.md 11.5–11.6) up to `max_attempts`, then dead-letter;
//!   permanent failures dead-letter at once. Every attempt is kept. An operator's retry of a
//!   dead-lettered or waiting run (`byte8-ledger requeue`, the console's "Retry") gives it a
//!   fresh set of `max_attempts` whose backoff starts again at the ladder's first step (the
//!   operator asks for it now, most likely after fixing the cause); its attempt numbers
//!   continue (attempt 4 after three failed attempts and a retry: [`Run::attempts_before_retry`]).
//!   A deferral (a ledger's daily
//!   call budget is spent, [`Error::Deferred`]) waits exactly as long as the ledger says and never
//!   dead-letters: the outcome says why and until when.
//!
//! # The audit trail
//!
//! Every attempt is recorded ([`AttemptRecord`]): how it ended, and for operators the requests the
//! provider sent to the ledger with the answers (redacted: no header, no token or secret field)
//! and the entity snapshot the attempt worked on. The engine knows nothing of HTTP: it opens a
//! [`Recorder`] per attempt (per batch for batched documents) and runs the attempt inside it; the
//! provider's HTTP layer writes to the task's recorder ([`crate::http::audit`]). The runs
//! table, a run's page with an upsert's diff, and the retries are [`crate::store::audit`]'s.
//!
//! # One run over a file in any order
//!
//! [`SyncEngine::session`] (what `byte8-ledger sync` uses, and [`SyncEngine::sync_run`] over a
//! slice) takes the lines of one run in any order: a payment or credit memo whose invoice comes
//! later in the same run waits and is processed right after it, its outcome the final one, still
//! handed out in input order; only one whose invoice is in no line of the run stays queued, with
//! an outcome that says so. A transient failure (5xx, timeout, 429, an expired token) is tried
//! once more at the end of the run before it is reported `failed` (and stays queued). Within one
//! attempt, a write answered 5xx is looked up and re-sent as long as the client's retry budget
//! allows ([`crate::http::RetryConfig`]). See [`SyncSession`].
//!
//! # Batches
//!
//! When the provider takes several documents a request (`Capabilities::max_batch` > 1, Xero),
//! [`SyncEngine::process_due`], [`SyncEngine::process_claimed`] (what the service's workers call)
//! and [`SyncEngine::sync_lines`] group the `invoice.created` runs
//! they are given into batches of `max_batch`: the contacts of a batch are resolved first (created
//! together where the ledger refuses taken references, else looked up together and the missing
//! ones created together), every invoice's intent is written, then the batch is posted in one
//! request and every invoice's own answer is recorded. Consecutive `invoice.paid` runs are batched
//! the same way (each payment's checks and intent, one post). The same
//! guarantees hold per invoice: an intent before the write, a look-up by reference after an
//! unknown outcome (the provider recovers a batch whose answer was lost by looking every invoice
//! up, and re-sends only the missing ones). Grouping never changes what an event sees: an invoice
//! is only moved ahead of payments and credit memos of *other* invoices, never past a
//! `customer.upserted` or `product.upserted` (which it may depend on) or past an event that
//! refers to it. A provider with `max_batch` = 1 (Sage) gets one request per document, in input
//! order, exactly as before. Events that do not carry their entity (the service's webhooks) have
//! it fetched from Magento one by one before their batch; an event's position relative to an
//! earlier payment or credit memo of the same invoice is then unknown, so at worst an invoice is
//! posted ahead of its own payment, which then syncs at once instead of waiting for it.
//!
//! # Contacts and items: created first
//!
//! On a ledger that refuses a contact reference or an item code already taken
//! (`Capabilities::unique_contact_reference`, `unique_item_code`: Sage and Xero), a new customer's
//! contact and a new product's item are created first — one request — and looked up only when the
//! ledger refuses the reference or code as taken; the record found is adopted under the usual
//! rules (same currency, same guest, active), else the next reference candidate is tried (an item
//! held by an inactive record is refused with the operator's action). The creates carry the
//! event's idempotency key, so a re-send is harmless. Elsewhere (a ledger that would accept a
//! duplicate) they are looked up first, and [`EngineConfig::verify_before_create`] asks for that
//! for items too.

mod batch;
mod handlers;
mod held;
mod session;

pub use session::SyncSession;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use self::held::HeldXrefs;
use crate::{
    canonical::{Entity, Event, EventKind},
    clock::Clock,
    error::{Error, Result},
    http::audit::Recorder,
    identity::sha256_hex,
    outcome::{Outcome, SyncStatus},
    policy::SyncPolicy,
    providers::AccountingProvider,
    store::{AttemptRecord, Dedupe, Enqueued, NewRun, Run, RunId, RunResult, RunStatus, Store},
};

/// Where the engine gets an entity an event does not carry (the Magento module's REST surface,
/// byte8-spec.md 12.4).
#[async_trait]
pub trait EntitySource: std::fmt::Debug + Send + Sync {
    /// Fetches the canonical entity of an event.
    async fn fetch(&self, event: EventKind, magento_entity_id: u64) -> Result<Entity>;
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Attempts before a retryable failure dead-letters (counted since the run's last retry by
    /// an operator, if any).
    pub max_attempts: u32,
    /// Delay before attempt `n + 1` after `n` failed ones (the last entry repeats; `n` counted
    /// since the run's last retry by an operator, if any).
    pub retry_ladder: Vec<Duration>,
    /// How long a claimed run is leased to its worker.
    pub lease: Duration,
    /// Look every document up by reference before creating it, even without an intent: adopts
    /// documents another tool (Byte8) already posted, at the cost of one request a document. It
    /// also looks a new product's item up before creating it where items are otherwise created
    /// first (`Capabilities::unique_item_code`).
    pub verify_before_create: bool,
}

impl Default for EngineConfig {
    /// Ten attempts on the Magento outbox's ladder, a 5-minute lease, no verification.
    fn default() -> Self {
        Self {
            max_attempts: 10,
            retry_ladder: [60u64, 300, 1800, 7200, 21_600, 43_200, 86_400]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            lease: Duration::from_secs(300),
            verify_before_create: false,
        }
    }
}

/// What [`SyncEngine::submit`] did with a line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Submitted {
    /// The run.
    pub run_id: RunId,
    /// How it was queued.
    pub enqueued: Enqueued,
    /// The outcome already known (a line that could not be read, or a document seen before).
    pub outcome: Option<Outcome>,
}

/// What handling an event achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Handled {
    Synced { id: String, number: Option<String>, message: Option<String> },
    Skipped { reason: String, message: Option<String> },
}

/// The sync engine of one ledger business.
#[derive(Debug, Clone)]
pub struct SyncEngine {
    pub(crate) provider: Arc<dyn AccountingProvider>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) scope: String,
    pub(crate) clock: Arc<dyn Clock>,
    pub(crate) config: EngineConfig,
    pub(crate) policy: Arc<SyncPolicy>,
    /// `policy` as queued runs carry it (serialized once, not per event): a run whose snapshot
    /// is this text is processed under `policy` without reading the snapshot again.
    pub(crate) policy_json: Option<Arc<str>>,
    pub(crate) source: Option<Arc<dyn EntitySource>>,
}

impl SyncEngine {
    /// An engine posting to `provider`, keeping state in `store` under `scope` (the business id),
    /// with `policy` as the snapshot of newly submitted events.
    pub fn new(
        provider: Arc<dyn AccountingProvider>,
        store: Arc<dyn Store>,
        scope: impl Into<String>,
        policy: SyncPolicy,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let policy_json = serde_json::to_string(&policy).ok().map(Arc::from);
        Self {
            provider,
            store,
            scope: scope.into(),
            clock,
            config: EngineConfig::default(),
            policy: Arc::new(policy),
            policy_json,
            source: None,
        }
    }

    /// Replaces the settings.
    #[must_use]
    pub fn with_config(mut self, config: EngineConfig) -> Self {
        self.config = config;
        self
    }

    /// Fetches entities events do not carry from `source`.
    #[must_use]
    pub fn with_source(mut self, source: Arc<dyn EntitySource>) -> Self {
        self.source = Some(source);
        self
    }

    /// The scope (business id).
    pub fn scope(&self) -> &str {
        &self.scope
    }

    /// The provider.
    pub fn provider(&self) -> &Arc<dyn AccountingProvider> {
        &self.provider
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// Checks the policy against the ledger's reference data (`not_in_reference`), as Byte8 does
    /// when the settings are saved. Run it once before syncing.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming every id the ledger does not know; the provider's errors.
    pub async fn check_policy(&self) -> Result<()> {
        // Outside any run's recording: its requests are kept as the business's own.
        let reference = crate::store::audit::recorded_outside_runs(
            self.store.as_ref(),
            &self.scope,
            self.clock.now(),
            self.provider.reference_data(false),
        )
        .await?;
        self.policy.validate_against(&reference)
    }

    fn lease_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        crate::clock::later(now, self.config.lease)
    }

    /// Reads a line and queues it. A line that cannot be read is dead-lettered at once (kept with
    /// its raw text) and its failed outcome returned; a document seen before returns its stored
    /// outcome when it is final.
    ///
    /// # Errors
    /// Store failures.
    pub async fn submit(&self, line: &str) -> Result<Submitted> {
        Ok(self.submit_parsed(line, false).await?.0)
    }

    /// As [`SyncEngine::submit`], also answering the event read (so that processing it now does
    /// not read the line again) and, with `claim`, the run claimed when it is new: the caller
    /// processes it at once ([`RunStore::enqueue_claimed`]: on the bundled SQLite and PostgreSQL
    /// stores the new row is written once, already claimed, where enqueueing and then claiming
    /// took two statements).
    async fn submit_parsed(&self, line: &str, claim: bool) -> Result<(Submitted, Option<Event>, Option<Run>)> {
        let now = self.clock.now();
        let policy = match &self.policy_json {
            Some(p) => p.to_string(),
            None => serde_json::to_string(self.policy.as_ref()).map_err(|e| Error::internal(e.to_string()))?,
        };
        match Event::parse(line) {
            Ok(event) => {
                let dedupe = if event.event.is_document() { Dedupe::Permanent } else { Dedupe::WhileQueued };
                let run = NewRun {
                    scope: self.scope.clone(),
                    tenant_id: None,
                    idempotency_key: event.idempotency_key.clone(),
                    event: Some(event.event.as_str().to_owned()),
                    magento_entity_id: Some(event.magento_entity_id),
                    raw: line.to_owned(),
                    fingerprint: sha256_hex(line),
                    policy: Some(policy),
                    received_at: now,
                };
                let (enqueued, claimed) = if claim {
                    self.store.enqueue_claimed(run, dedupe, self.lease_until(now)).await?
                } else {
                    (self.store.enqueue(run, dedupe).await?, None)
                };
                let outcome = match enqueued {
                    Enqueued::Duplicate { id, status } if status.is_terminal() => {
                        self.store.get(id).await?.and_then(|r| r.outcome)
                    }
                    _ => None,
                };
                Ok((Submitted { run_id: enqueued.run_id(), enqueued, outcome }, Some(event), claimed))
            }
            Err(failure) => {
                let key = failure
                    .idempotency_key
                    .clone()
                    .unwrap_or_else(|| format!("unreadable:{}", &sha256_hex(line)[..16]));
                // Claimed as it is queued when new: it is finished at once, below.
                let (enqueued, claimed) = self
                    .store
                    .enqueue_claimed(
                        NewRun {
                            scope: self.scope.clone(),
                            tenant_id: None,
                            idempotency_key: key,
                            event: failure.event.clone(),
                            magento_entity_id: failure.magento_entity_id,
                            raw: line.to_owned(),
                            fingerprint: sha256_hex(line),
                            policy: Some(policy),
                            received_at: now,
                        },
                        Dedupe::Permanent,
                        self.lease_until(now),
                    )
                    .await?;
                let outcome = Outcome {
                    idempotency_key: failure.idempotency_key.clone(),
                    event: failure.event.clone(),
                    entity_type: failure.event.as_deref().and_then(Outcome::entity_type_of),
                    magento_entity_id: failure.magento_entity_id,
                    provider: self.provider.name().to_owned(),
                    sync_status: SyncStatus::Failed,
                    provider_entity_id: None,
                    provider_reference: None,
                    skip_reason: None,
                    error_code: Some(failure.error.code()),
                    message: Some(failure.error.to_string()),
                    last_sync_at: now,
                };
                if let Enqueued::New(id) = enqueued {
                    // Kept as a dead letter with its raw text; never retried by itself.
                    let claim = claimed.map_or(0, |r| r.claim);
                    self.store
                        .finish(
                            id,
                            claim,
                            RunResult {
                                status: RunStatus::DeadLettered,
                                outcome: outcome.clone(),
                                attempt: AttemptRecord {
                                    number: 1,
                                    started_at: now,
                                    finished_at: now,
                                    result: "failed".into(),
                                    error_code: Some(failure.error.code()),
                                    message: Some(failure.error.to_string()),
                                    ledger_id: None,
                                    exchanges: Vec::new(),
                                    recording: None,
                                    snapshot: None,
                                },
                                next_attempt_at: None,
                                xrefs: Vec::new(),
                            },
                        )
                        .await?;
                    return Ok((Submitted { run_id: id, enqueued, outcome: Some(outcome) }, None, None));
                }
                let stored = self.store.get(enqueued.run_id()).await?.and_then(|r| r.outcome);
                Ok((Submitted { run_id: enqueued.run_id(), enqueued, outcome: stored.or(Some(outcome)) }, None, None))
            }
        }
    }

    /// Reads, queues and processes one line now, in the caller's order: the outcome of a new or
    /// still-queued event after this attempt, or the stored outcome of one already final (no
    /// write to the ledger).
    ///
    /// # Errors
    /// Store failures (a ledger failure is an outcome, not an error).
    pub async fn sync_line(&self, line: &str) -> Result<Outcome> {
        let (submitted, event, claimed) = self.submit_parsed(line, true).await?;
        if let Some(o) = submitted.outcome {
            return Ok(o);
        }
        let run = match submitted.enqueued {
            // Just queued, and claimed as it was (nothing else can be known about it).
            Enqueued::New(_) => claimed,
            _ => self.claim_again(submitted.run_id).await?,
        };
        match run {
            // The line just read is the run's own (not an earlier delivery's): not read again.
            Some(run) => {
                let parsed = event.filter(|_| run.raw == line);
                self.process_parsed(run, parsed).await
            }
            None => {
                let r = self.store.get(submitted.run_id).await?.ok_or_else(|| Error::internal("run vanished"))?;
                Ok(r.outcome.clone().unwrap_or_else(|| self.in_progress(&r)))
            }
        }
    }

    /// The run `id` of an event submitted again, claimed now when it is still open: queued (a
    /// run waiting for its retry time is tried again now) or running under a lease that has
    /// ended. `None` when it is finished, held by another claim, or gone.
    pub(crate) async fn claim_again(&self, id: RunId) -> Result<Option<Run>> {
        let now = self.clock.now();
        match self.store.get(id).await? {
            Some(r) if r.status == RunStatus::Queued => {
                let at = r.next_attempt_at.map_or(now, |t| t.max(now));
                self.store.claim_run(r.id, at, self.lease_until(at)).await
            }
            Some(r) if r.status == RunStatus::Running => self.store.claim_run(r.id, now, self.lease_until(now)).await,
            _ => Ok(None),
        }
    }

    fn in_progress(&self, run: &Run) -> Outcome {
        Outcome {
            idempotency_key: Some(run.idempotency_key.clone()),
            event: run.event.clone(),
            entity_type: run.event.as_deref().and_then(Outcome::entity_type_of),
            magento_entity_id: run.magento_entity_id,
            provider: self.provider.name().to_owned(),
            sync_status: SyncStatus::Failed,
            provider_entity_id: None,
            provider_reference: None,
            skip_reason: None,
            error_code: Some(crate::error::ErrorCode::Internal),
            message: Some("another worker holds this event; it stays queued".into()),
            last_sync_at: self.clock.now(),
        }
    }

    /// Claims and processes up to `limit` due runs. When the provider takes batches
    /// (`Capabilities::max_batch` > 1), due `invoice.created` and `invoice.paid` runs are grouped
    /// into batches (see [`crate::engine`]'s "Batches"); otherwise every run is processed alone, in
    /// order.
    ///
    /// # Errors
    /// Store failures.
    pub async fn process_due(&self, limit: usize) -> Result<Vec<(Run, Outcome)>> {
        let now = self.clock.now();
        let runs = self.store.claim(&self.scope, now, self.lease_until(now), limit).await?;
        self.process_runs(runs).await
    }

    /// Processes runs the caller has claimed (as [`process_due`](Self::process_due) does with
    /// the runs it claims): grouped into the provider's batches when it takes them
    /// (`Capabilities::max_batch` > 1, see [`crate::engine`]'s "Batches"), else one by one in
    /// order. Every run gets its own attempt, outcome and, when it fails for good, dead letter,
    /// exactly as [`process`](Self::process) gives it; the answer is one `(run, outcome)` per run,
    /// in the input order. What the service's workers call for a tenant whose ledger batches.
    ///
    /// # Errors
    /// Store failures.
    pub async fn process_claimed(&self, runs: Vec<Run>) -> Result<Vec<(Run, Outcome)>> {
        self.process_runs(runs).await
    }

    /// The entity of an event that does not carry it, fetched from the [`EntitySource`] and
    /// validated (what [`process`](Self::process) does before handling such an event).
    pub(crate) async fn fill_entity(&self, event: &mut Event) -> Result<()> {
        if event.entity.is_some() {
            return Ok(());
        }
        let Some(source) = &self.source else {
            return Err(Error::invalid(
                "event",
                "entity",
                "missing, and no Magento connection is configured to fetch it",
            ));
        };
        let e = source.fetch(event.event, event.magento_entity_id).await?;
        e.validate().map_err(|err| err.at("entity"))?;
        event.entity = Some(e);
        Ok(())
    }

    /// Processes a claimed run: one attempt, recorded in the audit trail; a retryable failure goes
    /// back in line (or dead-letters after `max_attempts`), a permanent one dead-letters.
    ///
    /// # Errors
    /// Store failures.
    pub async fn process(&self, run: Run) -> Result<Outcome> {
        self.process_parsed(run, None).await
    }

    /// As [`SyncEngine::process`], with the run's event when the caller has just read it from
    /// the run's own raw line (`sync_line`).
    async fn process_parsed(&self, run: Run, parsed: Option<Event>) -> Result<Outcome> {
        let (event, policy, attempt, started) = match self.begin_parsed(&run, parsed).await? {
            Ok(begun) => begun,
            Err(outcome) => return Ok(outcome),
        };
        let span = tracing::info_span!("event", key = %event.idempotency_key, attempt);
        // The attempt's ledger exchanges and entity snapshot are recorded for its audit trail
        // (`crate::http::audit`): the provider's HTTP layer writes to the task's recorder.
        let attempt_run = async {
            // Instrumented, not entered: an entered span held across an await would tag the
            // logs of other tasks on this thread (the service runs several).
            let result = tracing::Instrument::instrument(self.handle(&event, &policy), span).await;
            self.finish_result(&run, &event, attempt, started, result).await
        };
        // The run's done cross-reference records are held until its `finish` writes them with
        // the run's end (`held`): one round trip fewer per record. `finish` writes them in the
        // run's scope, so a run of another scope than the engine's (never claimed by the engine
        // itself) has its records written at once, where the engine reads them.
        if run.scope == self.scope {
            Recorder::new().scope(HeldXrefs::default().scope(attempt_run)).await
        } else {
            Recorder::new().scope(attempt_run).await
        }
    }

    /// Reads a claimed run's policy snapshot and event; a run that cannot be read is finished as
    /// failed (the inner `Err` is its outcome).
    pub(crate) async fn begin(
        &self,
        run: &Run,
    ) -> Result<std::result::Result<(Event, Arc<SyncPolicy>, u32, DateTime<Utc>), Outcome>> {
        self.begin_parsed(run, None).await
    }

    /// As [`SyncEngine::begin`], with the event when the caller has already read `run.raw`. The
    /// policy snapshot is read only when it is not the engine's own policy (the usual case is
    /// that it is: the snapshot was taken from it).
    async fn begin_parsed(
        &self,
        run: &Run,
        parsed: Option<Event>,
    ) -> Result<std::result::Result<(Event, Arc<SyncPolicy>, u32, DateTime<Utc>), Outcome>> {
        let started = self.clock.now();
        let attempt = run.attempts + 1;
        let policy = match run.policy.as_deref() {
            None => Arc::clone(&self.policy),
            Some(text) if self.policy_json.as_deref() == Some(text) => Arc::clone(&self.policy),
            Some(text) => match SyncPolicy::from_json(text) {
                Ok(p) => Arc::new(p),
                Err(e) => return Ok(Err(self.finish_failed(run, None, attempt, started, e).await?)),
            },
        };
        if let Some(e) = parsed {
            return Ok(Ok((e, policy, attempt, started)));
        }
        match Event::parse(&run.raw) {
            Ok(e) => Ok(Ok((e, policy, attempt, started))),
            Err(f) => Ok(Err(self.finish_failed(run, None, attempt, started, *f.error).await?)),
        }
    }

    /// Ends a claimed run whose processing panicked (a bug, caught by the service's worker): it
    /// is dead-lettered with an `internal` outcome saying so, its raw event kept for
    /// `byte8-ledger requeue` once the bug is fixed. It is not retried by itself, since the same
    /// input would most likely panic again, and a posting may have been made before the panic
    /// (the cross-reference finds it when the run is requeued).
    ///
    /// # Errors
    /// Store failures (the run's lease then expires and another worker claims it again).
    pub async fn finish_panicked(&self, run: &Run, panic: &str) -> Result<Outcome> {
        let started = self.clock.now();
        let event = Event::parse(&run.raw).ok();
        let error = Error::internal(format!(
            "processing panicked ({panic}); dead-lettered: report the bug, then `byte8-ledger requeue` puts the event back"
        ));
        self.finish_failed(run, event.as_ref(), run.attempts.saturating_add(1), started, error).await
    }

    /// Records how an attempt ended and answers its outcome.
    pub(crate) async fn finish_result(
        &self,
        run: &Run,
        event: &Event,
        attempt: u32,
        started: DateTime<Utc>,
        result: Result<Handled>,
    ) -> Result<Outcome> {
        let now = self.clock.now();
        let (exchanges, recording, snapshot) = audit();
        // A batched document's entity is the event's own (the batch's recorder keeps none).
        let snapshot = snapshot.or_else(|| crate::http::audit::Snapshot::of(event.entity.as_ref()?).ok());
        match result {
            Ok(Handled::Synced { id, number, message }) => {
                let outcome =
                    self.outcome_for(event, SyncStatus::Synced, Some(id.clone()), number, None, None, message, now);
                self.store
                    .finish(
                        run.id,
                        run.claim,
                        RunResult {
                            status: RunStatus::Synced,
                            outcome: outcome.clone(),
                            attempt: AttemptRecord {
                                number: attempt,
                                started_at: started,
                                finished_at: now,
                                result: "synced".into(),
                                error_code: None,
                                message: outcome.message.clone(),
                                ledger_id: Some(id),
                                exchanges,
                                recording,
                                snapshot,
                            },
                            next_attempt_at: None,
                            xrefs: held(),
                        },
                    )
                    .await?;
                Ok(outcome)
            }
            Ok(Handled::Skipped { reason, message }) => {
                let outcome =
                    self.outcome_for(event, SyncStatus::Skipped, None, None, Some(reason), None, message, now);
                self.store
                    .finish(
                        run.id,
                        run.claim,
                        RunResult {
                            status: RunStatus::Skipped,
                            outcome: outcome.clone(),
                            attempt: AttemptRecord {
                                number: attempt,
                                started_at: started,
                                finished_at: now,
                                result: "skipped".into(),
                                error_code: None,
                                message: outcome.skip_reason.clone(),
                                ledger_id: None,
                                exchanges,
                                recording,
                                snapshot,
                            },
                            next_attempt_at: None,
                            xrefs: held(),
                        },
                    )
                    .await?;
                Ok(outcome)
            }
            Err(e) => self.finish_failed(run, Some(event), attempt, started, e).await,
        }
    }

    async fn finish_failed(
        &self,
        run: &Run,
        event: Option<&Event>,
        attempt: u32,
        started: DateTime<Utc>,
        error: Error,
    ) -> Result<Outcome> {
        let now = self.clock.now();
        let (exchanges, recording, snapshot) = audit();
        // The attempts since the run was last retried by an operator (all of them when it never
        // was): the retry ladder and `max_attempts` count these, so a retried run gets a fresh
        // set of attempts and its backoff starts again at the ladder's first step, while the
        // attempt's number (`attempt`) continues the run's count.
        let round = attempt.saturating_sub(run.attempts_before_retry).max(1);
        // A deferral (a spent daily budget) waits as long as it must and never dead-letters.
        let retry = error.is_deferred() || (error.is_retryable() && round < self.config.max_attempts);
        let next = retry.then(|| {
            let idx = usize::try_from(round.saturating_sub(1)).unwrap_or(usize::MAX);
            let ladder = &self.config.retry_ladder;
            let base = ladder.get(idx).or(ladder.last()).copied().unwrap_or(Duration::from_secs(60));
            let wait = match error.retry_after() {
                Some(r) if error.is_deferred() => r,
                Some(r) => r.max(base),
                None => base,
            };
            // Checked: `wait` may come from a server's `Retry-After`.
            crate::clock::later(now, wait)
        });
        let mut message = error.to_string();
        if error.is_deferred() {
            if let Some(at) = next {
                message.push_str(&format!(" (not a failure: the event waits in line until {})", at.to_rfc3339()));
            }
        } else if retry {
            message.push_str(" (retryable: the event stays queued)");
        } else if error.is_retryable() {
            let since = if run.attempts_before_retry > 0 { " since its last retry" } else { "" };
            message.push_str(&format!(
                " (gave up after {round} attempts{since}: dead-lettered; `byte8-ledger requeue` puts it back)"
            ));
        }
        tracing::warn!(key = %run.idempotency_key, attempt, code = %error.code(), "{message}");
        let outcome = match event {
            Some(e) => self.outcome_for(
                e,
                SyncStatus::Failed,
                None,
                None,
                None,
                Some(error.code()),
                Some(message.clone()),
                now,
            ),
            None => Outcome {
                idempotency_key: Some(run.idempotency_key.clone()),
                event: run.event.clone(),
                entity_type: run.event.as_deref().and_then(Outcome::entity_type_of),
                magento_entity_id: run.magento_entity_id,
                provider: self.provider.name().to_owned(),
                sync_status: SyncStatus::Failed,
                provider_entity_id: None,
                provider_reference: None,
                skip_reason: None,
                error_code: Some(error.code()),
                message: Some(message.clone()),
                last_sync_at: now,
            },
        };
        self.store
            .finish(
                run.id,
                run.claim,
                RunResult {
                    status: if retry { RunStatus::Queued } else { RunStatus::DeadLettered },
                    outcome: outcome.clone(),
                    attempt: AttemptRecord {
                        number: attempt,
                        started_at: started,
                        finished_at: now,
                        result: if retry { "retry".into() } else { "failed".into() },
                        error_code: Some(error.code()),
                        message: Some(message),
                        ledger_id: None,
                        exchanges,
                        recording,
                        snapshot,
                    },
                    next_attempt_at: next,
                    xrefs: held(),
                },
            )
            .await?;
        Ok(outcome)
    }

    #[allow(clippy::too_many_arguments)]
    fn outcome_for(
        &self,
        event: &Event,
        status: SyncStatus,
        id: Option<String>,
        number: Option<String>,
        skip: Option<String>,
        code: Option<crate::error::ErrorCode>,
        message: Option<String>,
        now: DateTime<Utc>,
    ) -> Outcome {
        Outcome {
            idempotency_key: Some(event.idempotency_key.clone()),
            event: Some(event.event.as_str().to_owned()),
            entity_type: Some(event.entity_type().to_owned()),
            magento_entity_id: Some(event.magento_entity_id),
            provider: self.provider.name().to_owned(),
            sync_status: status,
            provider_entity_id: id,
            provider_reference: number,
            skip_reason: skip,
            error_code: code,
            message,
            last_sync_at: now,
        }
    }
}

/// The done cross-reference records the task's run held back ([`held`]), taken for its
/// `finish` (none outside a single run: the batched path writes its own at once).
fn held() -> Vec<(crate::store::XrefKind, String, crate::store::Xref)> {
    HeldXrefs::current().map(|h| h.take()).unwrap_or_default()
}

/// The exchanges and entity snapshot recorded so far by the task's recorder (none outside one):
/// what an attempt's record keeps, with where they sit in the recording. In a batch every run
/// keeps the exchanges of its batch and points at the batch's one recording, which a store keeps
/// once.
fn audit() -> (
    Vec<crate::http::audit::ExchangeRecord>,
    Option<crate::http::audit::RecordingRef>,
    Option<crate::http::audit::Snapshot>,
) {
    crate::http::audit::current()
        .map(|r| {
            let (exchanges, recording) = r.recorded();
            (exchanges, recording, r.snapshot())
        })
        .unwrap_or_default()
}
