//! Batches: grouping claimed runs so that a provider that takes several documents a request
//! (`Capabilities::max_batch` > 1) gets them together, with the same per-document guarantees
//! (see the module docs of [`crate::engine`]).

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::json;

use super::{
    Handled, SyncEngine,
    handlers::{ContactJob, ContactNeed, PaymentPrep, invoice_meta},
};
use crate::{
    canonical::{Entity, Event, EventKind, MagentoInvoice},
    error::{Error, Result},
    http::audit::Recorder,
    outcome::Outcome,
    plan::DocumentKind,
    policy::SyncPolicy,
    providers::{ContactRequest, InvoiceRequest, ItemLink, adoptable, is_reference_taken},
    store::{Run, Xref, XrefKind},
};

/// What a run is, for grouping: its kind, the invoice it is (`invoice.created`) or refers to
/// (`invoice.paid`, `creditmemo.created`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub(crate) kind: Option<EventKind>,
    pub(crate) invoice: Option<u64>,
}

impl Shape {
    fn of(run: &Run) -> Self {
        Self::of_line(&run.raw)
    }

    /// The shape of an input line (no kind when it cannot be read).
    pub(crate) fn of_line(line: &str) -> Self {
        match Event::parse(line) {
            Ok(e) => {
                let invoice = match (&e.event, &e.entity) {
                    (EventKind::InvoiceCreated, _) => Some(e.magento_entity_id),
                    (EventKind::InvoicePaid, Some(Entity::Payment(p))) => Some(p.invoice_id),
                    (EventKind::CreditMemoCreated, Some(Entity::CreditMemo(m))) => m.invoice_id,
                    _ => None,
                };
                Self { kind: Some(e.event), invoice }
            }
            Err(_) => Self { kind: None, invoice: None },
        }
    }
}

/// One step of processing: a run alone, or a batch of runs of one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// One run.
    One(usize),
    /// `invoice.created` runs posted together.
    Invoices(Vec<usize>),
    /// `invoice.paid` runs posted together.
    Payments(Vec<usize>),
}

/// The order in which to process runs. Within a segment (between upserts, which a document may
/// depend on), invoices go first in batches of `max_batch`, then the other events in their order,
/// consecutive payments in batches. An invoice that an earlier event of the segment refers to
/// starts a new segment, so that event sees what it saw before.
pub(crate) fn plan_steps(shapes: &[Shape], max_batch: usize) -> Vec<Step> {
    let max_batch = max_batch.max(1);
    let mut steps: Vec<Step> = Vec::new();
    let mut segment: Vec<usize> = Vec::new();
    let batch =
        |ids: Vec<usize>, make: fn(Vec<usize>) -> Step| if ids.len() == 1 { Step::One(ids[0]) } else { make(ids) };
    let flush = |segment: &mut Vec<usize>, steps: &mut Vec<Step>| {
        let (invoices, others): (Vec<usize>, Vec<usize>) =
            segment.drain(..).partition(|i| shapes[*i].kind == Some(EventKind::InvoiceCreated));
        for chunk in invoices.chunks(max_batch) {
            steps.push(batch(chunk.to_vec(), Step::Invoices));
        }
        let mut payments: Vec<usize> = Vec::new();
        for i in others {
            if shapes[i].kind == Some(EventKind::InvoicePaid) {
                payments.push(i);
                if payments.len() == max_batch {
                    steps.push(batch(std::mem::take(&mut payments), Step::Payments));
                }
                continue;
            }
            if !payments.is_empty() {
                steps.push(batch(std::mem::take(&mut payments), Step::Payments));
            }
            steps.push(Step::One(i));
        }
        if !payments.is_empty() {
            steps.push(batch(payments, Step::Payments));
        }
    };
    for (i, shape) in shapes.iter().enumerate() {
        match shape.kind {
            Some(EventKind::CustomerUpserted | EventKind::ProductUpserted) => {
                flush(&mut segment, &mut steps);
                steps.push(Step::One(i));
            }
            Some(EventKind::InvoiceCreated) => {
                let referred = segment
                    .iter()
                    .any(|j| shapes[*j].kind != Some(EventKind::InvoiceCreated) && shapes[*j].invoice == shape.invoice);
                if referred {
                    flush(&mut segment, &mut steps);
                }
                segment.push(i);
            }
            _ => segment.push(i),
        }
    }
    flush(&mut segment, &mut steps);
    steps
}

/// A begun run of a batch: its index, event, policy snapshot, attempt number and start.
type Begun = (usize, Event, std::sync::Arc<SyncPolicy>, u32, DateTime<Utc>);

/// Where an invoice of a batch stands after its own checks.
enum Prep<'a> {
    /// Decided without posting (skipped, already synced, found by reference).
    Decided(Handled),
    /// To post: its reference, its contact, its items.
    Ready(String, ContactNeed<'a>, BTreeMap<String, ItemLink>),
}

/// One invoice of a batch on its way.
struct Job<'a> {
    index: usize,
    event: &'a Event,
    inv: &'a MagentoInvoice,
    policy: &'a SyncPolicy,
    attempt: u32,
    started: DateTime<Utc>,
    doc_ref: String,
    contact: Option<String>,
    need: Option<ContactJob<'a>>,
    items: BTreeMap<String, ItemLink>,
}

impl SyncEngine {
    /// Reads, queues and processes several lines, in the caller's order, and answers one outcome
    /// per line in that order, as [`sync_line`](Self::sync_line) would for each — but with the
    /// provider's batches (`invoice.created` runs grouped, see the module docs) when it takes
    /// them.
    ///
    /// # Errors
    /// Store failures (a ledger failure is an outcome, not an error).
    pub async fn sync_lines(&self, lines: &[&str]) -> Result<Vec<Outcome>> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; lines.len()];
        let mut line_runs: Vec<Option<i64>> = vec![None; lines.len()];
        let mut done: BTreeMap<i64, Outcome> = BTreeMap::new();
        let mut runs: Vec<Run> = Vec::new();
        let mut claimed: BTreeSet<i64> = BTreeSet::new();
        let mut keys: BTreeSet<String> = BTreeSet::new();
        for (i, line) in lines.iter().enumerate() {
            // A key seen again in this round (a replayed document, a newer upsert) is submitted
            // only after what came before it was processed: exactly what line-by-line would do.
            if let Ok(e) = Event::parse(line)
                && !keys.insert(e.idempotency_key.clone())
            {
                done.extend(self.process_runs(std::mem::take(&mut runs)).await?.into_iter().map(|(r, o)| (r.id, o)));
                claimed.clear();
                keys.clear();
                keys.insert(e.idempotency_key);
            }
            let (submitted, _, new) = self.submit_parsed(line, true).await?;
            if let Some(o) = submitted.outcome {
                outcomes[i] = Some(o);
                continue;
            }
            line_runs[i] = Some(submitted.run_id);
            if claimed.contains(&submitted.run_id) {
                continue;
            }
            let run = match new {
                // Queued and claimed in one step.
                Some(run) => Some(run),
                None => self.claim_again(submitted.run_id).await?,
            };
            if let Some(run) = run {
                claimed.insert(run.id);
                done.remove(&run.id);
                runs.push(run);
            }
        }
        done.extend(self.process_runs(runs).await?.into_iter().map(|(r, o)| (r.id, o)));
        let mut out = Vec::with_capacity(lines.len());
        for (i, known) in outcomes.into_iter().enumerate() {
            if let Some(o) = known {
                out.push(o);
                continue;
            }
            let id = line_runs[i].unwrap_or_default();
            match done.get(&id) {
                Some(o) => out.push(o.clone()),
                None => {
                    let r = self.store.get(id).await?.ok_or_else(|| Error::internal("run vanished"))?;
                    out.push(r.outcome.clone().unwrap_or_else(|| self.in_progress(&r)));
                }
            }
        }
        Ok(out)
    }

    /// Processes claimed runs, batching `invoice.created` and `invoice.paid` runs when the provider
    /// takes batches.
    pub(crate) async fn process_runs(&self, runs: Vec<Run>) -> Result<Vec<(Run, Outcome)>> {
        let shapes: Vec<Shape> = runs.iter().map(Shape::of).collect();
        let batchable = shapes
            .iter()
            .filter(|s| matches!(s.kind, Some(EventKind::InvoiceCreated | EventKind::InvoicePaid)))
            .count();
        // Capabilities are asked only when there is something to batch (no request otherwise).
        // Outside any run's recording: its requests (if any) are kept as the business's own.
        let max_batch = if batchable > 1 {
            crate::store::audit::recorded_outside_runs(
                self.store.as_ref(),
                &self.scope,
                self.clock.now(),
                self.provider.capabilities(),
            )
            .await
            .map(|c| c.max_batch)
            .unwrap_or(1)
        } else {
            1
        };
        let steps: Vec<Step> =
            if max_batch > 1 { plan_steps(&shapes, max_batch) } else { (0..runs.len()).map(Step::One).collect() };
        let mut outcomes: Vec<Option<Outcome>> = vec![None; runs.len()];
        for step in steps {
            let (ids, batch) = match step {
                Step::One(i) => {
                    outcomes[i] = Some(self.process(runs[i].clone()).await?);
                    continue;
                }
                // A batch's runs each keep the exchanges of their batch (one request carried them).
                Step::Invoices(ids) => {
                    let batch: Vec<Run> = ids.iter().map(|i| runs[*i].clone()).collect();
                    let done = Recorder::new().scope(self.process_invoice_batch(&batch)).await?;
                    (ids, done)
                }
                Step::Payments(ids) => {
                    let batch: Vec<Run> = ids.iter().map(|i| runs[*i].clone()).collect();
                    let done = Recorder::new().scope(self.process_payment_batch(&batch)).await?;
                    (ids, done)
                }
            };
            for (i, o) in ids.iter().zip(batch) {
                outcomes[*i] = Some(o);
            }
        }
        Ok(runs
            .into_iter()
            .zip(outcomes)
            .map(|(r, o)| {
                let o = o.unwrap_or_else(|| self.in_progress(&r));
                (r, o)
            })
            .collect())
    }

    /// One batch of `invoice.created` runs: policy and cross-reference per invoice, then the
    /// contacts (looked up together, the missing ones created together), the intents, one post,
    /// and each invoice's own result.
    async fn process_invoice_batch(&self, runs: &[Run]) -> Result<Vec<Outcome>> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; runs.len()];
        let mut begun = Vec::with_capacity(runs.len());
        for (i, run) in runs.iter().enumerate() {
            match self.begin(run).await? {
                Ok((event, policy, attempt, started)) => begun.push((i, event, policy, attempt, started)),
                Err(o) => outcomes[i] = Some(o),
            }
        }
        // Events without their entity (the service's webhooks) get it from Magento first, one
        // by one as the single way does; one that cannot be fetched ends its own run.
        let begun = self.fill_entities(runs, begun, &mut outcomes).await?;
        let (reference, caps) = self.context().await?;
        let mut jobs: Vec<Job<'_>> = Vec::new();
        for (i, event, policy, attempt, started) in &begun {
            let Some(Entity::Invoice(inv)) = &event.entity else {
                // An event whose entity is not an invoice goes the single way (which reports it).
                outcomes[*i] = Some(self.process(runs[*i].clone()).await?);
                continue;
            };
            let prep: Result<Prep<'_>> = async {
                if let Some(h) = self.invoice_precheck(event, inv, policy).await? {
                    return Ok(Prep::Decided(h));
                }
                let doc_ref = self.reference_of(policy, &inv.increment_id, &caps);
                let key = inv.magento_id.to_string();
                // After a crash or an unknown outcome: look it up before any second write.
                if (self.get(XrefKind::Invoice, &key).await?.is_some() || self.config.verify_before_create)
                    && let Some(doc) = self.provider.find_document(DocumentKind::Invoice, &doc_ref).await?
                {
                    let contact = doc.contact_id.clone().unwrap_or_default();
                    let meta = invoice_meta(inv, &doc, &contact, &doc_ref);
                    self.put(
                        XrefKind::Invoice,
                        &key,
                        Xref::done(doc.id.clone(), Some(doc_ref.clone()), meta, self.clock.now()),
                    )
                    .await?;
                    return Ok(Prep::Decided(Handled::Synced {
                        id: doc.id,
                        number: doc.number,
                        message: Some("found in the ledger by reference (an earlier attempt had posted it)".into()),
                    }));
                }
                let need =
                    self.contact_need(&inv.customer, inv.currency, inv.grand_total, policy, &reference, &caps).await?;
                let items = self.item_links(inv.lines.iter().map(|l| l.sku.as_str()), policy).await?;
                Ok(Prep::Ready(doc_ref, need, items))
            }
            .await;
            match prep {
                Ok(Prep::Decided(h)) => {
                    outcomes[*i] = Some(self.finish_result(&runs[*i], event, *attempt, *started, Ok(h)).await?);
                }
                Ok(Prep::Ready(doc_ref, need, items)) => {
                    let (contact, need) = match need {
                        ContactNeed::Known(id) => (Some(id), None),
                        ContactNeed::Resolve(job) => (None, Some(job)),
                    };
                    jobs.push(Job {
                        index: *i,
                        event,
                        inv,
                        policy,
                        attempt: *attempt,
                        started: *started,
                        doc_ref,
                        contact,
                        need,
                        items,
                    });
                }
                Err(e) => {
                    outcomes[*i] = Some(self.finish_result(&runs[*i], event, *attempt, *started, Err(e)).await?);
                }
            }
        }
        // Contacts first: every distinct one looked up in one go, the missing ones created in one go.
        let mut failed: BTreeMap<usize, Error> = BTreeMap::new();
        let resolved = self.resolve_jobs(&jobs, caps.unique_contact_reference).await?;
        for job in &mut jobs {
            if job.contact.is_some() {
                continue;
            }
            let key = job.need.as_ref().map(|n| n.xref_key.clone()).unwrap_or_default();
            match resolved.get(&key) {
                Some(Ok(id)) => job.contact = Some(id.clone()),
                Some(Err(e)) => {
                    failed.insert(job.index, e.copy());
                }
                None => {
                    failed.insert(job.index, Error::internal("a contact of the batch was not resolved"));
                }
            }
        }
        // Intents, then one post.
        let mut ready: Vec<&Job<'_>> = Vec::new();
        for job in &jobs {
            if failed.contains_key(&job.index) {
                continue;
            }
            let key = job.inv.magento_id.to_string();
            self.put(XrefKind::Invoice, &key, Xref::intent(Some(job.doc_ref.clone()), json!({}), self.clock.now()))
                .await?;
            ready.push(job);
        }
        let requests: Vec<InvoiceRequest<'_>> = ready
            .iter()
            .map(|j| InvoiceRequest {
                invoice: j.inv,
                policy: j.policy,
                contact_id: j.contact.as_deref().unwrap_or_default(),
                items: &j.items,
                idempotency_key: &j.event.idempotency_key,
            })
            .collect();
        tracing::info!(invoices = requests.len(), "posting a batch of invoices");
        let posted = if requests.is_empty() { Vec::new() } else { self.provider.post_invoices(&requests).await };
        let mut results: BTreeMap<usize, Result<Handled>> = BTreeMap::new();
        for (job, result) in ready.iter().zip(posted) {
            let handled = match result {
                Ok(doc) => {
                    let key = job.inv.magento_id.to_string();
                    let contact = job.contact.clone().unwrap_or_default();
                    let x = Xref::done(
                        doc.id.clone(),
                        Some(job.doc_ref.clone()),
                        invoice_meta(job.inv, &doc, &contact, &job.doc_ref),
                        self.clock.now(),
                    );
                    self.put(XrefKind::Invoice, &key, x).await?;
                    Ok(Handled::Synced { id: doc.id, number: doc.number, message: None })
                }
                Err(e) => Err(e),
            };
            results.insert(job.index, handled);
        }
        for (index, e) in failed {
            results.insert(index, Err(e));
        }
        for job in &jobs {
            if let Some(result) = results.remove(&job.index) {
                outcomes[job.index] =
                    Some(self.finish_result(&runs[job.index], job.event, job.attempt, job.started, result).await?);
            }
        }
        Ok(runs.iter().zip(outcomes).map(|(r, o)| o.unwrap_or_else(|| self.in_progress(r))).collect())
    }

    /// One batch of `invoice.paid` runs: each payment's own checks (policy, cross-reference, its
    /// invoice, the recovery look-up), every intent, one post, and each payment's own result.
    async fn process_payment_batch(&self, runs: &[Run]) -> Result<Vec<Outcome>> {
        let mut outcomes: Vec<Option<Outcome>> = vec![None; runs.len()];
        let mut begun = Vec::with_capacity(runs.len());
        for (i, run) in runs.iter().enumerate() {
            match self.begin(run).await? {
                Ok((event, policy, attempt, started)) => begun.push((i, event, policy, attempt, started)),
                Err(o) => outcomes[i] = Some(o),
            }
        }
        let begun = self.fill_entities(runs, begun, &mut outcomes).await?;
        let mut ready = Vec::new();
        for (i, event, policy, attempt, started) in &begun {
            let Some(Entity::Payment(pay)) = &event.entity else {
                outcomes[*i] = Some(self.process(runs[*i].clone()).await?);
                continue;
            };
            let prep = match policy.filter_skip_reason(event.website_id, event.store_id) {
                Some(reason) => Ok(PaymentPrep::Decided(Handled::Skipped {
                    reason: reason.to_owned(),
                    message: Some("outside the website/store filter".into()),
                })),
                None => self.payment_prepare(pay, policy).await,
            };
            match prep {
                Ok(PaymentPrep::Decided(h)) => {
                    outcomes[*i] = Some(self.finish_result(&runs[*i], event, *attempt, *started, Ok(h)).await?);
                }
                Ok(PaymentPrep::Ready(job)) => {
                    self.payment_intent(&job).await?;
                    ready.push((*i, event, pay, policy, *attempt, *started, job));
                }
                Err(e) => {
                    outcomes[*i] = Some(self.finish_result(&runs[*i], event, *attempt, *started, Err(e)).await?);
                }
            }
        }
        let requests: Vec<_> =
            ready.iter().map(|(_, event, pay, policy, _, _, job)| job.request(event, pay, policy)).collect();
        tracing::info!(payments = requests.len(), "posting a batch of payments");
        let posted = if requests.is_empty() { Vec::new() } else { self.provider.post_payments(&requests).await };
        for ((i, event, pay, _, attempt, started, job), result) in ready.iter().zip(posted) {
            let handled = match result {
                Ok(t) => self.payment_done(job, pay, t.id).await,
                Err(e) => Err(e),
            };
            outcomes[*i] = Some(self.finish_result(&runs[*i], event, *attempt, *started, handled).await?);
        }
        Ok(runs.iter().zip(outcomes).map(|(r, o)| o.unwrap_or_else(|| self.in_progress(r))).collect())
    }

    /// Fetches the entity of every begun run of a batch that does not carry it; a run whose
    /// entity cannot be fetched is finished with that failure (retried or dead-lettered as the
    /// single way would) and left out.
    async fn fill_entities(
        &self,
        runs: &[Run],
        begun: Vec<Begun>,
        outcomes: &mut [Option<Outcome>],
    ) -> Result<Vec<Begun>> {
        let mut out = Vec::with_capacity(begun.len());
        for (i, mut event, policy, attempt, started) in begun {
            match self.fill_entity(&mut event).await {
                Ok(()) => out.push((i, event, policy, attempt, started)),
                Err(e) => outcomes[i] = Some(self.finish_result(&runs[i], &event, attempt, started, Err(e)).await?),
            }
        }
        Ok(out)
    }

    /// Resolves the distinct contact jobs of a batch. On a ledger that refuses taken references
    /// (`Capabilities::unique_contact_reference`) the new contacts are created in one go and only
    /// those refused as taken are looked up; otherwise every first candidate is looked up in one
    /// go and the missing ones created in one go. A candidate held by another contact (another
    /// currency, another guest) falls back to the one-by-one resolution, which tries the next
    /// candidates. Answers by cross-reference key.
    async fn resolve_jobs(&self, jobs: &[Job<'_>], create_first: bool) -> Result<BTreeMap<String, Result<String>>> {
        let mut distinct: Vec<(&ContactJob<'_>, &Job<'_>)> = Vec::new();
        for job in jobs {
            if let Some(need) = &job.need
                && !distinct.iter().any(|(n, _)| n.xref_key == need.xref_key)
            {
                distinct.push((need, job));
            }
        }
        let mut out = BTreeMap::new();
        if distinct.is_empty() {
            return Ok(out);
        }
        let mut create: Vec<(&ContactJob<'_>, &Job<'_>)> = Vec::new();
        let mut look: Vec<(&ContactJob<'_>, &Job<'_>)> = Vec::new();
        let mut one_by_one: Vec<(&ContactJob<'_>, &Job<'_>)> = Vec::new();
        if create_first {
            create = distinct;
        } else {
            look = distinct;
        }
        for round in 0..2 {
            if !look.is_empty() {
                let firsts: Vec<&str> = look.iter().map(|(n, _)| n.candidates[0].as_str()).collect();
                match self.provider.find_contacts(&firsts).await {
                    Ok(found) => {
                        for ((need, job), found) in look.drain(..).zip(found) {
                            match found {
                                Some(record) if adoptable(&record, &need.subject, need.currency) => {
                                    self.record_contact(need, &record, false).await?;
                                    out.insert(need.xref_key.clone(), Ok(record.id));
                                }
                                Some(_) => one_by_one.push((need, job)),
                                // Refused as taken, yet not found (deleted, archived elsewhere):
                                // the one-by-one resolution tries the next candidates.
                                None if create_first => one_by_one.push((need, job)),
                                None => create.push((need, job)),
                            }
                        }
                    }
                    Err(e) => {
                        for (n, _) in look.drain(..) {
                            out.insert(n.xref_key.clone(), Err(e.copy()));
                        }
                    }
                }
            }
            if round == 1 || create.is_empty() {
                break;
            }
            let requests: Vec<ContactRequest<'_>> = create
                .iter()
                .map(|(need, job)| ContactRequest {
                    contact: need.who,
                    currency: need.currency,
                    reference: &need.candidates[0],
                    policy: job.policy,
                    idempotency_key: Some(&job.event.idempotency_key),
                })
                .collect();
            let results = self.provider.create_contacts(&requests).await;
            for ((need, job), result) in create.drain(..).zip(results) {
                match result {
                    Ok(record) => {
                        self.record_contact(need, &record, true).await?;
                        out.insert(need.xref_key.clone(), Ok(record.id));
                    }
                    // Taken: look it up (it may be this customer's, made by Byte8 or an earlier run).
                    Err(e) if is_reference_taken(&e) && create_first => look.push((need, job)),
                    Err(e) if is_reference_taken(&e) || e.outcome_unknown() => one_by_one.push((need, job)),
                    Err(e) => {
                        out.insert(need.xref_key.clone(), Err(e));
                    }
                }
            }
            if !create_first {
                break;
            }
        }
        for (need, job) in one_by_one {
            let r = self.resolve_job(need, job.policy, &job.event.idempotency_key).await;
            out.insert(need.xref_key.clone(), r);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(kind: EventKind, invoice: Option<u64>) -> Shape {
        Shape { kind: Some(kind), invoice }
    }

    #[test]
    fn invoices_are_grouped_ahead_of_other_invoices_events_only() {
        use EventKind::*;
        // created 1, paid 1, created 2, paid 2, created 3, memo on 1
        let shapes = [
            s(InvoiceCreated, Some(1)),
            s(InvoicePaid, Some(1)),
            s(InvoiceCreated, Some(2)),
            s(InvoicePaid, Some(2)),
            s(InvoiceCreated, Some(3)),
            s(CreditMemoCreated, Some(1)),
        ];
        assert_eq!(
            plan_steps(&shapes, 50),
            vec![Step::Invoices(vec![0, 2, 4]), Step::Payments(vec![1, 3]), Step::One(5)]
        );
        // Batches of 2.
        assert_eq!(
            plan_steps(&shapes, 2),
            vec![Step::Invoices(vec![0, 2]), Step::One(4), Step::Payments(vec![1, 3]), Step::One(5)]
        );
    }

    #[test]
    fn an_upsert_or_an_earlier_reference_is_a_barrier() {
        use EventKind::*;
        let shapes = [
            s(InvoiceCreated, Some(1)),
            s(ProductUpserted, None),
            s(InvoiceCreated, Some(2)),
            s(InvoicePaid, Some(3)), // paid before its invoice: the invoice must not jump it
            s(InvoiceCreated, Some(3)),
            s(InvoiceCreated, Some(4)),
            Shape { kind: None, invoice: None },
        ];
        assert_eq!(
            plan_steps(&shapes, 50),
            vec![Step::One(0), Step::One(1), Step::One(2), Step::One(3), Step::Invoices(vec![4, 5]), Step::One(6)]
        );
    }

    #[test]
    fn a_credit_memo_between_payments_keeps_its_place() {
        use EventKind::*;
        // paid 1, memo on 2, paid 3: the memo must not move past either payment.
        let shapes = [s(InvoicePaid, Some(1)), s(CreditMemoCreated, Some(2)), s(InvoicePaid, Some(3))];
        assert_eq!(plan_steps(&shapes, 50), vec![Step::One(0), Step::One(1), Step::One(2)]);
    }
}
