//! The public conformance suite against the in-memory reference provider: the whole suite, each
//! behaviour on its own (so a failure names it), the suite with capabilities switched off, and
//! proof that the suite fails a provider that breaks a rule.
#![cfg(feature = "conformance")]

use std::{panic::AssertUnwindSafe, sync::Arc};

use async_trait::async_trait;
use byte8_ledger_core::{
    Result,
    plan::DocumentKind,
    providers::{
        AccountingProvider, AllocationRequest, Capabilities, ContactRecord, ContactRequest, CreditNoteRequest,
        DocumentRecord, InvoiceRequest, ItemKind, ItemRecord, ItemRequest, PaymentRequest, StockMovementRequest,
        TransactionKind, TransactionLookup, TransactionRecord,
        conformance::{self, Fixture},
        memory::InMemoryProvider,
    },
    reference::ReferenceData,
};
use futures::FutureExt;
use rust_decimal::Decimal;

fn fixture() -> Fixture {
    Fixture::demo_uk("conformance-memory")
}

macro_rules! behaviour_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                conformance::$name(&InMemoryProvider::demo(), &fixture()).await;
            }
        )*
    };
}

behaviour_tests!(
    reference_data_and_policy,
    contact_round_trip,
    duplicate_contact_reference_is_taken,
    resolve_contact_adopts_and_moves_on,
    invoice_round_trip,
    payment_settles_invoice,
    credit_note_allocation,
    find_or_post_invoice_posts_once,
    currency_lock,
    unknown_ids_are_not_found,
    items_round_trip,
    stock_movements,
    void_document,
);

#[tokio::test]
async fn run_all_passes() {
    let provider = InMemoryProvider::demo();
    conformance::run_all(&provider, &fixture()).await;
    assert!(!provider.snapshot().documents.is_empty());
}

#[tokio::test]
async fn run_all_passes_behind_arc_and_box() {
    let arc: Arc<dyn AccountingProvider> = Arc::new(InMemoryProvider::demo());
    conformance::run_all(&arc, &fixture()).await;
    let boxed: Box<dyn AccountingProvider> = Box::new(InMemoryProvider::demo());
    conformance::run_all(boxed.as_ref(), &fixture()).await;
}

#[tokio::test]
async fn run_all_passes_on_a_minimal_business() {
    // A Start-like business: base currency only, no credit notes, allocations, items or stock.
    let mut caps = Capabilities::full();
    caps.multi_currency = false;
    caps.credit_notes = false;
    caps.allocations = false;
    caps.products = false;
    caps.stock = false;
    let provider = InMemoryProvider::demo().with_capabilities(caps);
    conformance::run_all(&provider, &fixture()).await;
    assert!(provider.snapshot().items.is_empty());
}

#[tokio::test]
async fn run_all_passes_without_a_currency_lock_or_foreign_currency() {
    let mut caps = Capabilities::full();
    caps.contact_per_currency = false;
    let provider = InMemoryProvider::demo().with_capabilities(caps);
    conformance::run_all(&provider, &fixture()).await;
    conformance::run_all(&InMemoryProvider::demo(), &fixture().with_foreign_currency(None)).await;
}

#[tokio::test]
async fn run_all_passes_with_native_idempotency() {
    let mut caps = Capabilities::full();
    caps.native_idempotency_window_secs = Some(7 * 24 * 3600);
    conformance::run_all(&InMemoryProvider::demo().with_capabilities(caps), &fixture()).await;
}

/// A provider that breaks one rule on top of the in-memory ledger.
#[derive(Debug)]
struct Broken {
    inner: InMemoryProvider,
    fault: Fault,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// Answers invoice totals a penny off.
    WrongTotal,
    /// Posts an invoice on any contact, ignoring the currency lock (answers a made-up document).
    IgnoresCurrencyLock,
    /// Finds documents by prefix instead of exactly.
    PrefixSearch,
    /// Reports unknown ids as validation errors.
    NotFoundAsValidation,
    /// Accepts a duplicate contact reference.
    DuplicateContacts,
}

impl Broken {
    fn new(fault: Fault) -> Self {
        Self { inner: InMemoryProvider::demo(), fault }
    }
}

#[async_trait]
impl AccountingProvider for Broken {
    fn name(&self) -> &'static str {
        "broken"
    }
    async fn capabilities(&self) -> Result<Capabilities> {
        self.inner.capabilities().await
    }
    async fn reference_data(&self, refresh: bool) -> Result<Arc<ReferenceData>> {
        self.inner.reference_data(refresh).await
    }
    async fn find_contact(&self, reference: &str) -> Result<Option<ContactRecord>> {
        self.inner.find_contact(reference).await
    }
    async fn create_contact(&self, request: &ContactRequest<'_>) -> Result<ContactRecord> {
        match self.inner.create_contact(request).await {
            Err(_) if self.fault == Fault::DuplicateContacts => Ok(ContactRecord {
                id: "duplicate".into(),
                reference: Some(request.reference.into()),
                currency: Some(request.currency),
                name: None,
                email: None,
            }),
            other => other,
        }
    }
    async fn update_contact(&self, id: &str, request: &ContactRequest<'_>) -> Result<ContactRecord> {
        self.inner.update_contact(id, request).await
    }
    async fn find_item(&self, kind: ItemKind, code: &str) -> Result<Option<ItemRecord>> {
        self.inner.find_item(kind, code).await
    }
    async fn get_item(&self, kind: ItemKind, id: &str) -> Result<ItemRecord> {
        self.inner.get_item(kind, id).await
    }
    async fn create_item(&self, request: &ItemRequest<'_>) -> Result<ItemRecord> {
        self.inner.create_item(request).await
    }
    async fn update_item(&self, id: &str, request: &ItemRequest<'_>) -> Result<ItemRecord> {
        self.inner.update_item(id, request).await
    }
    async fn post_stock_movement(&self, request: &StockMovementRequest<'_>) -> Result<Option<TransactionRecord>> {
        self.inner.post_stock_movement(request).await
    }
    async fn post_invoice(&self, request: &InvoiceRequest<'_>) -> Result<DocumentRecord> {
        match (self.inner.post_invoice(request).await, self.fault) {
            (Ok(mut doc), Fault::WrongTotal) => {
                doc.total = doc.total.map(|t| t + Decimal::new(1, 2));
                Ok(doc)
            }
            (Err(_), Fault::IgnoresCurrencyLock) => Ok(DocumentRecord {
                id: "made-up".into(),
                kind: DocumentKind::Invoice,
                reference: None,
                number: None,
                contact_id: Some(request.contact_id.into()),
                total: Some(request.invoice.grand_total),
                outstanding: Some(request.invoice.grand_total),
                voided: false,
                exchange_rate: None,
            }),
            (other, _) => other,
        }
    }
    async fn post_credit_note(&self, request: &CreditNoteRequest<'_>) -> Result<DocumentRecord> {
        self.inner.post_credit_note(request).await
    }
    async fn find_document(&self, kind: DocumentKind, reference: &str) -> Result<Option<DocumentRecord>> {
        if self.fault == Fault::PrefixSearch {
            return Ok(self
                .inner
                .documents()
                .into_iter()
                .find(|d| {
                    d.record.kind == kind && d.record.reference.as_deref().is_some_and(|r| r.starts_with(reference))
                })
                .map(|d| d.record));
        }
        self.inner.find_document(kind, reference).await
    }
    async fn get_document(&self, kind: DocumentKind, id: &str) -> Result<DocumentRecord> {
        match self.inner.get_document(kind, id).await {
            Err(_) if self.fault == Fault::NotFoundAsValidation => {
                Err(byte8_ledger_core::Error::invalid("document", "id", "unknown"))
            }
            other => other,
        }
    }
    async fn void_document(&self, kind: DocumentKind, id: &str, reason: &str) -> Result<()> {
        self.inner.void_document(kind, id, reason).await
    }
    async fn post_payment(&self, request: &PaymentRequest<'_>) -> Result<TransactionRecord> {
        self.inner.post_payment(request).await
    }
    async fn allocate(&self, request: &AllocationRequest<'_>) -> Result<TransactionRecord> {
        self.inner.allocate(request).await
    }
    async fn find_transaction(
        &self,
        kind: TransactionKind,
        lookup: &TransactionLookup<'_>,
    ) -> Result<Option<TransactionRecord>> {
        self.inner.find_transaction(kind, lookup).await
    }
}

/// Runs `behaviour` against a provider with `fault` and returns its panic message.
async fn panic_message<F>(fault: Fault, behaviour: F) -> String
where
    F: for<'a> AsyncFnOnce(&'a dyn AccountingProvider, &'a Fixture),
{
    let provider = Broken::new(fault);
    let fixture = fixture();
    let outcome = AssertUnwindSafe(behaviour(&provider, &fixture)).catch_unwind().await;
    let payload = outcome.expect_err("the suite must fail a provider that breaks the rule");
    payload
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_default()
}

#[tokio::test]
async fn suite_fails_a_provider_with_wrong_totals() {
    let msg = panic_message(Fault::WrongTotal, conformance::invoice_round_trip).await;
    assert!(msg.contains("[invoice_round_trip]") && msg.contains("grand_total"), "{msg}");
}

#[tokio::test]
async fn suite_fails_a_provider_that_ignores_the_currency_lock() {
    let msg = panic_message(Fault::IgnoresCurrencyLock, conformance::currency_lock).await;
    assert!(msg.contains("[currency_lock]") && msg.contains("must be refused"), "{msg}");
}

#[tokio::test]
async fn suite_fails_a_provider_that_searches_by_prefix() {
    let msg = panic_message(Fault::PrefixSearch, conformance::invoice_round_trip).await;
    assert!(msg.contains("exactly"), "{msg}");
}

#[tokio::test]
async fn suite_fails_a_provider_that_hides_not_found() {
    let msg = panic_message(Fault::NotFoundAsValidation, conformance::unknown_ids_are_not_found).await;
    assert!(msg.contains("not_found"), "{msg}");
}

#[tokio::test]
async fn suite_fails_a_provider_that_accepts_duplicate_contacts() {
    let msg = panic_message(Fault::DuplicateContacts, conformance::duplicate_contact_reference_is_taken).await;
    assert!(msg.contains("must be refused"), "{msg}");
}

#[tokio::test]
async fn the_intact_wrapper_passes() {
    // The wrapper itself is faithful when its fault does not apply (a guard against a broken test).
    let provider = Broken::new(Fault::WrongTotal);
    conformance::contact_round_trip(&provider, &fixture()).await;
}
