//! One sync run over lines given in any order: what `byte8-ledger sync` does with its input
//! (contract.md section 6, "Order within a run" and "Retries within a run").
//!
//! Lines are pushed as they are read and processed at once ([`SyncEngine::sync_line`], or
//! [`SyncEngine::sync_lines`] in the provider's batches); their outcomes come back **in input
//! order**. Two kinds of outcome are not final while the run goes on, and hold back the lines
//! after them until they are settled:
//!
//! - **Waiting for its invoice.** An `invoice.paid` or `creditmemo.created` whose invoice is not
//!   in the ledger yet waits ([`Error::Pending`](crate::Error::Pending)). When that invoice's
//!   `invoice.created` is a later line of the same run, the waiting line is processed again
//!   right after it (its payments before its credit memos, as Magento made them), and its
//!   outcome is that second one (`synced`, or `skipped` with the invoice's reason). Only when the invoice is in no line of the run does the line stay
//!   queued, with an outcome that says so.
//! - **A transient failure** (5xx, timeout, 429, expired token: the event stays queued). Before
//!   the run reports it as `failed`, [`SyncSession::finish`] processes every such line once more
//!   (invoices first feed the lines waiting for them). A write whose outcome was unknown is
//!   never repeated blindly: the intent in the cross-reference makes the retry look the record
//!   up first.
//!
//! A choice: output stops at the first line that is not final and resumes when it is, so a run
//! with a transient failure early on prints the rest only at its end. Input order, which the
//! contract promises, is kept over immediacy.

use std::collections::{BTreeMap, BTreeSet};

use super::{SyncEngine, batch::Shape};
use crate::{
    canonical::EventKind,
    error::{ErrorCode, Result},
    outcome::{Outcome, SyncStatus},
    store::RunStatus,
};

/// Where a line's outcome stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Final for this run.
    Final,
    /// Waits for the `invoice.created` of this Magento invoice id.
    Waiting(u64),
    /// A retryable failure: tried once more at the end of the run.
    Transient,
}

/// One line the run has not handed out yet.
#[derive(Debug)]
struct Line {
    text: String,
    shape: Shape,
    outcome: Outcome,
    state: State,
}

/// A sync run over lines in any order: [`push`](Self::push) lines as they come, then
/// [`finish`](Self::finish). See the module docs of [`crate::engine`] and this type's module.
#[derive(Debug)]
pub struct SyncSession<'e> {
    engine: &'e SyncEngine,
    batch: usize,
    next: usize,
    emitted: usize,
    lines: BTreeMap<usize, Line>,
    invoices_in_run: BTreeSet<u64>,
}

impl SyncEngine {
    /// Starts a run over lines given in any order (what `byte8-ledger sync` does with its input):
    /// see [`SyncSession`]. Asks the provider its batch size (1 when it cannot say).
    pub async fn session(&self) -> SyncSession<'_> {
        let batch = self.provider.capabilities().await.map(|c| c.max_batch).unwrap_or(1).max(1);
        SyncSession {
            engine: self,
            batch,
            next: 0,
            emitted: 0,
            lines: BTreeMap::new(),
            invoices_in_run: BTreeSet::new(),
        }
    }

    /// Syncs every line as one run (see [`SyncSession`]) and answers one outcome per line, in
    /// input order.
    ///
    /// # Errors
    /// Store failures (a ledger failure is an outcome, not an error).
    pub async fn sync_run(&self, lines: &[&str]) -> Result<Vec<Outcome>> {
        let mut session = self.session().await;
        let mut out = Vec::with_capacity(lines.len());
        for chunk in lines.chunks(session.batch_size()) {
            out.extend(session.push(chunk).await?);
        }
        out.extend(session.finish().await?);
        Ok(out)
    }
}

impl SyncSession<'_> {
    /// How many lines to push at a time for the provider's batches (1 for Sage).
    pub fn batch_size(&self) -> usize {
        self.batch
    }

    /// Processes `lines` (the next ones of the input) and answers the outcomes that are now
    /// final, in input order: possibly those of earlier lines that were waiting, possibly none.
    ///
    /// # Errors
    /// Store failures.
    pub async fn push(&mut self, lines: &[&str]) -> Result<Vec<Outcome>> {
        if lines.is_empty() {
            return Ok(Vec::new());
        }
        let outcomes = if lines.len() == 1 {
            vec![self.engine.sync_line(lines[0]).await?]
        } else {
            self.engine.sync_lines(lines).await?
        };
        let first = self.next;
        for (text, outcome) in lines.iter().zip(outcomes) {
            let shape = Shape::of_line(text);
            if shape.kind == Some(EventKind::InvoiceCreated)
                && let Some(id) = shape.invoice
            {
                self.invoices_in_run.insert(id);
            }
            let state = self.state_of(&shape, &outcome).await?;
            self.lines.insert(self.next, Line { text: (*text).to_owned(), shape, outcome, state });
            self.next += 1;
        }
        // Lines that waited for an invoice of this push are processed again after it.
        let invoices: Vec<(usize, u64)> = (first..self.next)
            .filter_map(|i| {
                let l = self.lines.get(&i)?;
                (l.shape.kind == Some(EventKind::InvoiceCreated) && l.state == State::Final)
                    .then_some(())
                    .and(l.shape.invoice.map(|id| (i, id)))
            })
            .collect();
        for (_, id) in invoices {
            self.release_waiting_for(id).await?;
        }
        Ok(self.ready())
    }

    /// Ends the run: every line that failed transiently is processed once more (and the lines
    /// waiting for an invoice that then reaches the ledger after it); a line whose invoice is in
    /// no line of the run stays queued with an outcome that says so. Answers every outcome not
    /// handed out yet, in input order.
    ///
    /// # Errors
    /// Store failures.
    pub async fn finish(mut self) -> Result<Vec<Outcome>> {
        let transient: Vec<usize> =
            self.lines.iter().filter(|(_, l)| l.state == State::Transient).map(|(i, _)| *i).collect();
        if !transient.is_empty() {
            tracing::info!(lines = transient.len(), "retrying the transient failures of this run once more");
        }
        for i in transient {
            self.retry(i).await?;
            let line = &self.lines[&i];
            if line.shape.kind == Some(EventKind::InvoiceCreated)
                && line.state == State::Final
                && let Some(id) = line.shape.invoice
            {
                self.release_waiting_for(id).await?;
            }
        }
        // What still waits: say why it stays queued.
        let in_run = self.invoices_in_run.clone();
        for line in self.lines.values_mut() {
            if let State::Waiting(id) = line.state {
                let note = if in_run.contains(&id) {
                    format!(
                        "its invoice (Magento id {id}) is in this run but did not reach the ledger; this event stays queued and follows it"
                    )
                } else {
                    format!(
                        "its invoice (Magento id {id}) is in no line of this run; this event stays queued until a later run brings the invoice"
                    )
                };
                let message = line.outcome.message.take().map_or(note.clone(), |m| format!("{m}; {note}"));
                line.outcome.message = Some(message);
                line.state = State::Final;
            } else {
                line.state = State::Final;
            }
        }
        Ok(self.ready())
    }

    /// Processes again the lines waiting for invoice `id` (which has just been decided): its
    /// payments first, then its credit memos, each in input order. Magento refunds only what was
    /// paid, so a credit memo follows its invoice's payment; processed in that order, the memo
    /// sees the invoice settled and is refunded, whatever order the file gave them.
    async fn release_waiting_for(&mut self, id: u64) -> Result<()> {
        let mut waiting: Vec<(bool, usize)> = self
            .lines
            .iter()
            .filter(|(_, l)| l.state == State::Waiting(id))
            .map(|(i, l)| (l.shape.kind != Some(EventKind::InvoicePaid), *i))
            .collect();
        waiting.sort_unstable();
        let waiting: Vec<usize> = waiting.into_iter().map(|(_, i)| i).collect();
        for i in waiting {
            self.retry(i).await?;
        }
        Ok(())
    }

    /// Processes line `i` again and records its new outcome.
    async fn retry(&mut self, i: usize) -> Result<()> {
        let Some(text) = self.lines.get(&i).map(|l| l.text.clone()) else { return Ok(()) };
        let outcome = self.engine.sync_line(&text).await?;
        let shape = self.lines[&i].shape;
        let state = match self.state_of(&shape, &outcome).await? {
            // Retried once: what fails now is this run's answer.
            State::Transient => State::Final,
            s => s,
        };
        if let Some(line) = self.lines.get_mut(&i) {
            line.outcome = outcome;
            line.state = state;
        }
        Ok(())
    }

    /// Whether `outcome` is final for this run.
    async fn state_of(&self, shape: &Shape, outcome: &Outcome) -> Result<State> {
        if outcome.sync_status != SyncStatus::Failed {
            return Ok(State::Final);
        }
        let Some(key) = outcome.idempotency_key.as_deref() else { return Ok(State::Final) };
        let queued = self
            .engine
            .store
            .find_by_key(&self.engine.scope, key)
            .await?
            .is_some_and(|r| r.status == RunStatus::Queued);
        if !queued {
            return Ok(State::Final);
        }
        // `not_found` on a queued run is the wait for an invoice (the only retryable not-found).
        let waits = matches!(shape.kind, Some(EventKind::InvoicePaid | EventKind::CreditMemoCreated))
            && outcome.error_code == Some(ErrorCode::NotFound);
        Ok(match (waits, shape.invoice) {
            (true, Some(id)) => State::Waiting(id),
            _ => State::Transient,
        })
    }

    /// Takes the outcomes that are final, from the first not handed out, in input order.
    fn ready(&mut self) -> Vec<Outcome> {
        let mut out = Vec::new();
        while let Some(line) = self.lines.get(&self.emitted) {
            if line.state != State::Final {
                break;
            }
            if let Some(line) = self.lines.remove(&self.emitted) {
                out.push(line.outcome);
            }
            self.emitted += 1;
        }
        out
    }
}
