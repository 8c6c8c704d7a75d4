//! Implements `AccountingProvider` for a toy ledger — a double-entry journal with no products,
//! no credit notes and a single currency — and runs the public conformance suite against it.
//!
//! It shows what a third-party provider does: map the neutral requests to its own model (here:
//! journal lines built from the crate's provider-neutral posting plan), report what it cannot do
//! through `Capabilities` (the suite then skips those behaviours and says so), map failures to
//! `byte8_ledger_core::Error` classes, and prove itself with `conformance::run_all`.
//!
//! Run: `cargo run --example toy_ledger` (feature `conformance`, on by default through `cli`).

use std::{collections::BTreeMap, sync::Mutex};

use async_trait::async_trait;
use byte8_ledger_core::{
    Error, Result,
    clock::{Clock, SystemClock},
    error::ProviderFieldError,
    plan::{self, DocumentKind},
    providers::{
        AccountingProvider, AllocationRequest, Capabilities, ContactFor, ContactRecord, ContactRequest,
        CreditNoteRequest, DocumentRecord, InvoiceRequest, ItemKind, ItemRecord, ItemRequest, PaymentRequest,
        StockMovementRequest, TransactionKind, TransactionLookup, TransactionRecord,
        conformance::{self, Fixture},
    },
    reference::ReferenceData,
};
use chrono::NaiveDate;
use rust_decimal::Decimal;

/// One journal line: an account, a document it belongs to, a signed amount (debit positive).
#[derive(Debug, Clone)]
struct Line {
    account: &'static str,
    document: String,
    amount: Decimal,
}

#[derive(Debug, Default)]
struct Books {
    contacts: BTreeMap<String, ContactRecord>,
    invoices: BTreeMap<String, (DocumentRecord, String)>, // id → (record, contact)
    payments: BTreeMap<String, (TransactionRecord, String, NaiveDate)>,
    journal: Vec<Line>,
    next: u64,
}

/// The toy ledger.
#[derive(Debug)]
struct JournalLedger {
    reference: std::sync::Arc<ReferenceData>,
    books: Mutex<Books>,
}

const NAME: &str = "toy_journal";

fn refused(field: &str, message: &str) -> Error {
    Error::Rejected {
        provider: NAME,
        status: 422,
        errors: vec![ProviderFieldError { code: "invalid".into(), field: field.into(), message: message.into() }],
    }
}

fn unsupported(what: &str) -> Error {
    Error::Unsupported { operation: what.into(), provider: NAME }
}

impl JournalLedger {
    fn new() -> Self {
        Self {
            reference: std::sync::Arc::new(ReferenceData::demo_uk(SystemClock.now())),
            books: Mutex::new(Books::default()),
        }
    }

    fn books(&self) -> std::sync::MutexGuard<'_, Books> {
        self.books.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// What is still receivable on an invoice: the balance of its receivables lines.
    fn receivable(b: &Books, invoice: &str) -> Decimal {
        b.journal.iter().filter(|l| l.account == "receivables" && l.document == invoice).map(|l| l.amount).sum()
    }

    fn record(b: &Books, id: &str) -> Option<DocumentRecord> {
        b.invoices.get(id).map(|(r, _)| {
            let mut r = r.clone();
            r.outstanding = Some(if r.voided { Decimal::ZERO } else { Self::receivable(b, id) });
            r
        })
    }
}

#[async_trait]
impl AccountingProvider for JournalLedger {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        let mut c = Capabilities::full();
        c.multi_currency = false;
        c.contact_per_currency = false;
        c.products = false;
        c.stock = false;
        c.credit_notes = false;
        c.allocations = false;
        Ok(c)
    }

    async fn reference_data(&self, _refresh: bool) -> Result<std::sync::Arc<ReferenceData>> {
        Ok(std::sync::Arc::clone(&self.reference))
    }

    async fn find_contact(&self, reference: &str) -> Result<Option<ContactRecord>> {
        Ok(self.books().contacts.values().find(|c| c.reference.as_deref() == Some(reference)).cloned())
    }

    async fn create_contact(&self, request: &ContactRequest<'_>) -> Result<ContactRecord> {
        let mut b = self.books();
        if b.contacts.values().any(|c| c.reference.as_deref() == Some(request.reference)) {
            return Err(refused("reference", "has already been taken"));
        }
        b.next += 1;
        let (name, email) = match request.contact {
            ContactFor::Customer(c) => (c.person_name().unwrap_or_else(|| c.email.clone()), Some(c.email.clone())),
            ContactFor::Fallback => (request.policy.b2c_consolidation.fallback_contact_name.clone(), None),
        };
        let record = ContactRecord {
            id: format!("toy-contact-{}", b.next),
            reference: Some(request.reference.to_owned()),
            currency: None,
            name: Some(name),
            email,
        };
        b.contacts.insert(record.id.clone(), record.clone());
        Ok(record)
    }

    async fn update_contact(&self, id: &str, request: &ContactRequest<'_>) -> Result<ContactRecord> {
        let mut b = self.books();
        let c = b.contacts.get_mut(id).ok_or_else(|| Error::NotFound { what: "contact".into(), id: id.into() })?;
        if let ContactFor::Customer(m) = request.contact {
            c.name = m.company_name().map(str::to_owned).or_else(|| m.person_name());
        }
        Ok(c.clone())
    }

    async fn find_item(&self, _kind: ItemKind, _code: &str) -> Result<Option<ItemRecord>> {
        Ok(None)
    }

    async fn get_item(&self, _kind: ItemKind, id: &str) -> Result<ItemRecord> {
        Err(Error::NotFound { what: "item".into(), id: id.into() })
    }

    async fn create_item(&self, _request: &ItemRequest<'_>) -> Result<ItemRecord> {
        Err(unsupported("items"))
    }

    async fn update_item(&self, _id: &str, _request: &ItemRequest<'_>) -> Result<ItemRecord> {
        Err(unsupported("items"))
    }

    async fn post_stock_movement(&self, _request: &StockMovementRequest<'_>) -> Result<Option<TransactionRecord>> {
        Err(unsupported("stock"))
    }

    async fn post_invoice(&self, request: &InvoiceRequest<'_>) -> Result<DocumentRecord> {
        let inv = request.invoice;
        if inv.currency != self.reference.business.base_currency {
            return Err(refused("currency", "this ledger keeps one currency"));
        }
        // The provider-neutral plan: every penny placed, tax routed, lines adding up.
        let planned = plan::plan_invoice(inv, request.policy, &self.reference)?;
        let caps = self.capabilities().await?;
        let reference = plan::fit_reference(
            &request.policy.document_reference(&inv.increment_id),
            &inv.increment_id,
            caps.max_document_reference,
        );
        let mut b = self.books();
        if !b.contacts.contains_key(request.contact_id) {
            return Err(Error::NotFound { what: "contact".into(), id: request.contact_id.into() });
        }
        b.next += 1;
        let id = format!("toy-invoice-{}", b.next);
        let net: Decimal =
            planned.lines.iter().map(|l| l.net).sum::<Decimal>() + planned.shipping.net + planned.adjustment_positive
                - planned.adjustment_negative;
        let tax: Decimal = planned.lines.iter().map(|l| l.tax).sum::<Decimal>() + planned.shipping.tax;
        b.journal.push(Line { account: "receivables", document: id.clone(), amount: planned.grand_total });
        b.journal.push(Line { account: "sales", document: id.clone(), amount: -net });
        b.journal.push(Line { account: "vat", document: id.clone(), amount: -tax });
        let record = DocumentRecord {
            id: id.clone(),
            kind: DocumentKind::Invoice,
            reference: Some(reference),
            number: Some(format!("J-{}", b.next)),
            contact_id: Some(request.contact_id.to_owned()),
            total: Some(planned.grand_total),
            outstanding: Some(planned.grand_total),
            voided: false,
            // The toy ledger keeps no exchange rates.
            exchange_rate: None,
        };
        b.invoices.insert(id, (record.clone(), request.contact_id.to_owned()));
        Ok(record)
    }

    async fn post_credit_note(&self, _request: &CreditNoteRequest<'_>) -> Result<DocumentRecord> {
        Err(unsupported("credit notes"))
    }

    async fn find_document(&self, kind: DocumentKind, reference: &str) -> Result<Option<DocumentRecord>> {
        if kind != DocumentKind::Invoice {
            return Ok(None);
        }
        let b = self.books();
        let id =
            b.invoices.values().find(|(r, _)| r.reference.as_deref() == Some(reference)).map(|(r, _)| r.id.clone());
        Ok(id.and_then(|id| Self::record(&b, &id)))
    }

    async fn get_document(&self, kind: DocumentKind, id: &str) -> Result<DocumentRecord> {
        let b = self.books();
        match kind {
            DocumentKind::Invoice => {
                Self::record(&b, id).ok_or_else(|| Error::NotFound { what: "invoice".into(), id: id.into() })
            }
            DocumentKind::CreditNote => Err(Error::NotFound { what: "credit note".into(), id: id.into() }),
        }
    }

    async fn void_document(&self, _kind: DocumentKind, id: &str, _reason: &str) -> Result<()> {
        let mut b = self.books();
        let balance = Self::receivable(&b, id);
        let (record, _) =
            b.invoices.get_mut(id).ok_or_else(|| Error::NotFound { what: "invoice".into(), id: id.into() })?;
        record.voided = true;
        // Reverse what is still receivable.
        b.journal.push(Line { account: "receivables", document: id.to_owned(), amount: -balance });
        b.journal.push(Line { account: "sales", document: id.to_owned(), amount: balance });
        Ok(())
    }

    async fn post_payment(&self, request: &PaymentRequest<'_>) -> Result<TransactionRecord> {
        let mut b = self.books();
        let Some((record, contact)) = b.invoices.get(request.invoice_id).cloned() else {
            return Err(Error::NotFound { what: "invoice".into(), id: request.invoice_id.into() });
        };
        if record.voided || contact != request.contact_id {
            return Err(refused("invoice_id", "You can only pay unpaid or part-paid invoices."));
        }
        let allocate = Self::receivable(&b, request.invoice_id).min(request.payment.amount);
        b.next += 1;
        let id = format!("toy-payment-{}", b.next);
        b.journal.push(Line { account: "bank", document: id.clone(), amount: request.payment.amount });
        b.journal.push(Line { account: "receivables", document: request.invoice_id.to_owned(), amount: -allocate });
        b.journal.push(Line { account: "on_account", document: id.clone(), amount: allocate - request.payment.amount });
        let reference = plan::fit_reference(
            &request.policy.document_reference(&request.payment.invoice_increment_id),
            &request.payment.invoice_increment_id,
            25,
        );
        let tx = TransactionRecord { id: id.clone(), reference: Some(reference), total: Some(request.payment.amount) };
        b.payments.insert(id, (tx.clone(), request.contact_id.to_owned(), request.payment.captured_at.date_naive()));
        Ok(tx)
    }

    async fn allocate(&self, _request: &AllocationRequest<'_>) -> Result<TransactionRecord> {
        Err(unsupported("allocations"))
    }

    async fn find_transaction(
        &self,
        kind: TransactionKind,
        lookup: &TransactionLookup<'_>,
    ) -> Result<Option<TransactionRecord>> {
        if kind != TransactionKind::Payment {
            return Ok(None);
        }
        Ok(self
            .books()
            .payments
            .values()
            .find(|(t, contact, date)| {
                contact == lookup.contact_id
                    && *date == lookup.date
                    && lookup.reference.is_none_or(|r| t.reference.as_deref() == Some(r))
            })
            .map(|(t, _, _)| t.clone()))
    }
}

#[tokio::main]
async fn main() {
    let ledger = JournalLedger::new();
    let fixture = Fixture::demo_uk(format!("toy-{}", std::process::id()));
    conformance::run_all(&ledger, &fixture).await;
    let b = ledger.books();
    let mut balances: BTreeMap<&str, Decimal> = BTreeMap::new();
    for l in &b.journal {
        *balances.entry(l.account).or_default() += l.amount;
    }
    println!("the toy journal ledger passes the conformance suite (skipped behaviours are listed above)");
    println!("trial balance after the suite: {balances:?} (sums to {})", balances.values().sum::<Decimal>());
}
