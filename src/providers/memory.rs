//! The in-memory reference provider: a ledger held in a mutex, and the test double of the sync
//! engine.
//!
//! [`InMemoryProvider`] implements [`AccountingProvider`] with the rules a real ledger enforces
//! (sage-api.md sections 3, 4 and 6), so that code which passes against it does not trip over them
//! later:
//!
//! - **contacts**: the reference is unique and at most
//!   [`max_contact_reference`](Capabilities::max_contact_reference) characters long (a reference can
//!   also be *reserved* with [`reserve_contact_reference`](InMemoryProvider::reserve_contact_reference),
//!   as Sage keeps a deleted contact's reference); a contact trades in one currency when
//!   [`contact_per_currency`](Capabilities::contact_per_currency) is on; a currency other than the
//!   base currency needs [`multi_currency`](Capabilities::multi_currency);
//! - **documents** are planned with the same provider-neutral plan as every provider
//!   ([`crate::plan::plan_invoice`], [`crate::plan::plan_credit_memo`]) and total what the plan adds
//!   up to, which is Magento's `grand_total`; they must be in their contact's currency, link only
//!   items that exist, and are found again by their exact reference;
//! - **payments** allocate at most what is outstanding on an invoice of the same contact and in
//!   the same currency; what is not allocated stays on account; a fully paid or voided invoice
//!   cannot be paid (`You can only pay unpaid or part-paid invoices.`);
//! - **allocations** settle a credit note (negative) against an invoice (positive) of the same
//!   contact, netting to zero, each within what is outstanding;
//! - **items** are unique per (kind, code); stock items hold a quantity that only stock movements
//!   change;
//! - unknown ids are [`Error::NotFound`]; refusals are [`Error::Rejected`] with HTTP status 422,
//!   like a real ledger's.
//!
//! The rules it shares with the Sage and Xero simulators (settling money against a document,
//! netting, uniqueness, stock arithmetic) are written once in [`rules`], which also names where
//! each fake differs to mimic its ledger.
//!
//! As a test double it records every call ([`calls`](InMemoryProvider::calls)), can be told to
//! fail the next call of a method before acting ([`fail_next`](InMemoryProvider::fail_next)) or
//! after committing with an outcome-unknown error
//! ([`fail_after_commit_next`](InMemoryProvider::fail_after_commit_next)), and exposes what it
//! stores ([`snapshot`](InMemoryProvider::snapshot)).
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use byte8_ledger_core::providers::{
//!     AccountingProvider,
//!     memory::{InMemoryProvider, Method},
//! };
//!
//! let ledger = InMemoryProvider::demo();
//! assert!(ledger.find_contact("M5").await?.is_none());
//! ledger.fail_next(Method::FindContact, byte8_ledger_core::Error::internal("boom"));
//! assert!(ledger.find_contact("M5").await.is_err());
//! assert_eq!(ledger.calls().len(), 2);
//! # Ok::<(), byte8_ledger_core::Error>(())
//! # }).unwrap();
//! ```
//!
//! The state lives behind a [`std::sync::Mutex`] that is never held across an `.await`; every
//! operation checks everything before it changes anything, so a refused request leaves no trace
//! but its [`Call`].

pub mod rules;

use std::{
    collections::{BTreeMap, VecDeque},
    fmt,
    str::FromStr,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
};

use async_trait::async_trait;
use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;

use super::{
    AccountingProvider, AllocationRequest, Capabilities, ContactFor, ContactRecord, ContactRequest, CreditNoteRequest,
    DocumentRecord, InvoiceRequest, ItemKind, ItemLink, ItemRecord, ItemRequest, PaymentRequest, StockMovementRequest,
    TransactionKind, TransactionLookup, TransactionRecord,
};
use crate::{
    error::{Error, ProviderFieldError, Result},
    identity,
    money::{Currency, round_money},
    plan::{self, DocumentKind, DocumentPlan},
    policy::{NamePriority, SyncPolicy},
    reference::ReferenceData,
};

/// The provider name of the in-memory ledger in outcomes and errors.
pub const PROVIDER: &str = "memory";

/// What a real ledger answers when an artefact is fully paid, voided or missing (sage-api.md 4.5,
/// Q11): it does not say which artefact.
pub const UNPAID_ONLY: &str = "You can only pay unpaid or part-paid invoices.";

/// The longest contact name (Sage's limit, kept here so names look like a ledger's).
const CONTACT_NAME_MAX: usize = 100;

/// A method of [`AccountingProvider`], to name calls and failure injections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Method {
    /// [`AccountingProvider::capabilities`].
    Capabilities,
    /// [`AccountingProvider::reference_data`].
    ReferenceData,
    /// [`AccountingProvider::find_contact`].
    FindContact,
    /// [`AccountingProvider::create_contact`].
    CreateContact,
    /// [`AccountingProvider::update_contact`].
    UpdateContact,
    /// [`AccountingProvider::find_item`].
    FindItem,
    /// [`AccountingProvider::get_item`].
    GetItem,
    /// [`AccountingProvider::create_item`].
    CreateItem,
    /// [`AccountingProvider::update_item`].
    UpdateItem,
    /// [`AccountingProvider::post_stock_movement`].
    PostStockMovement,
    /// [`AccountingProvider::post_invoice`].
    PostInvoice,
    /// [`AccountingProvider::post_credit_note`].
    PostCreditNote,
    /// [`AccountingProvider::find_document`].
    FindDocument,
    /// [`AccountingProvider::get_document`].
    GetDocument,
    /// [`AccountingProvider::void_document`].
    VoidDocument,
    /// [`AccountingProvider::post_payment`].
    PostPayment,
    /// [`AccountingProvider::allocate`].
    Allocate,
    /// [`AccountingProvider::find_transaction`].
    FindTransaction,
}

impl Method {
    /// Every method, in the trait's order.
    pub const ALL: [Method; 18] = [
        Self::Capabilities,
        Self::ReferenceData,
        Self::FindContact,
        Self::CreateContact,
        Self::UpdateContact,
        Self::FindItem,
        Self::GetItem,
        Self::CreateItem,
        Self::UpdateItem,
        Self::PostStockMovement,
        Self::PostInvoice,
        Self::PostCreditNote,
        Self::FindDocument,
        Self::GetDocument,
        Self::VoidDocument,
        Self::PostPayment,
        Self::Allocate,
        Self::FindTransaction,
    ];

    /// The trait method's name (`post_invoice`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Capabilities => "capabilities",
            Self::ReferenceData => "reference_data",
            Self::FindContact => "find_contact",
            Self::CreateContact => "create_contact",
            Self::UpdateContact => "update_contact",
            Self::FindItem => "find_item",
            Self::GetItem => "get_item",
            Self::CreateItem => "create_item",
            Self::UpdateItem => "update_item",
            Self::PostStockMovement => "post_stock_movement",
            Self::PostInvoice => "post_invoice",
            Self::PostCreditNote => "post_credit_note",
            Self::FindDocument => "find_document",
            Self::GetDocument => "get_document",
            Self::VoidDocument => "void_document",
            Self::PostPayment => "post_payment",
            Self::Allocate => "allocate",
            Self::FindTransaction => "find_transaction",
        }
    }

    /// True for the methods that change the ledger.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Self::CreateContact
                | Self::UpdateContact
                | Self::CreateItem
                | Self::UpdateItem
                | Self::PostStockMovement
                | Self::PostInvoice
                | Self::PostCreditNote
                | Self::VoidDocument
                | Self::PostPayment
                | Self::Allocate
        )
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Method {
    type Err = Error;

    /// Parses a trait method's name (`"post_invoice"`).
    fn from_str(s: &str) -> Result<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s.trim()).ok_or_else(|| {
            Error::config("method", format!("`{s}` is not a method of AccountingProvider (e.g. `post_invoice`)"))
        })
    }
}

/// One call made to the provider, with its key arguments, as [`InMemoryProvider::calls`] records
/// it (whether it succeeded or not).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Call {
    /// `capabilities()`.
    Capabilities,
    /// `reference_data(refresh)`.
    ReferenceData {
        /// Whether a refresh was forced.
        refresh: bool,
    },
    /// `find_contact(reference)`.
    FindContact {
        /// The reference looked up.
        reference: String,
    },
    /// `create_contact(request)`.
    CreateContact {
        /// The reference asked for.
        reference: String,
        /// The currency asked for.
        currency: Currency,
    },
    /// `update_contact(id, request)`.
    UpdateContact {
        /// The contact.
        id: String,
        /// The currency of the request.
        currency: Currency,
    },
    /// `find_item(kind, code)`.
    FindItem {
        /// The kind.
        kind: ItemKind,
        /// The code looked up.
        code: String,
    },
    /// `get_item(kind, id)`.
    GetItem {
        /// The kind.
        kind: ItemKind,
        /// The id.
        id: String,
    },
    /// `create_item(request)`.
    CreateItem {
        /// The kind.
        kind: ItemKind,
        /// The product's SKU.
        sku: String,
    },
    /// `update_item(id, request)`.
    UpdateItem {
        /// The item.
        id: String,
        /// The product's SKU.
        sku: String,
    },
    /// `post_stock_movement(request)`.
    PostStockMovement {
        /// The stock item.
        item_id: String,
        /// What the caller says the ledger holds.
        ledger_quantity: Decimal,
        /// Magento's quantity.
        target: Option<Decimal>,
    },
    /// `post_invoice(request)`.
    PostInvoice {
        /// The contact.
        contact_id: String,
        /// The Magento invoice number.
        increment_id: String,
        /// Magento's total.
        grand_total: Decimal,
        /// The event's idempotency key.
        idempotency_key: String,
    },
    /// `post_credit_note(request)`.
    PostCreditNote {
        /// The contact.
        contact_id: String,
        /// The Magento credit memo number.
        increment_id: String,
        /// Magento's total.
        grand_total: Decimal,
        /// The event's idempotency key.
        idempotency_key: String,
    },
    /// `find_document(kind, reference)`.
    FindDocument {
        /// Invoice or credit note.
        kind: DocumentKind,
        /// The reference looked up.
        reference: String,
    },
    /// `get_document(kind, id)`.
    GetDocument {
        /// Invoice or credit note.
        kind: DocumentKind,
        /// The id.
        id: String,
    },
    /// `void_document(kind, id, reason)`.
    VoidDocument {
        /// Invoice or credit note.
        kind: DocumentKind,
        /// The id.
        id: String,
        /// The reason.
        reason: String,
    },
    /// `post_payment(request)`.
    PostPayment {
        /// The contact.
        contact_id: String,
        /// The invoice.
        invoice_id: String,
        /// The amount received.
        amount: Decimal,
        /// What the caller says is outstanding.
        outstanding: Option<Decimal>,
        /// The event's idempotency key.
        idempotency_key: String,
    },
    /// `allocate(request)`.
    Allocate {
        /// The contact.
        contact_id: String,
        /// The invoice.
        invoice_id: String,
        /// The credit note.
        credit_note_id: String,
        /// The amount.
        amount: Decimal,
        /// The event's idempotency key.
        idempotency_key: String,
    },
    /// `find_transaction(kind, lookup)`.
    FindTransaction {
        /// Payment or allocation.
        kind: TransactionKind,
        /// The contact.
        contact_id: String,
        /// The reference, when given.
        reference: Option<String>,
        /// The date.
        date: NaiveDate,
        /// The documents it settles.
        artefact_ids: Vec<String>,
    },
}

impl Call {
    /// The method called.
    pub fn method(&self) -> Method {
        match self {
            Self::Capabilities => Method::Capabilities,
            Self::ReferenceData { .. } => Method::ReferenceData,
            Self::FindContact { .. } => Method::FindContact,
            Self::CreateContact { .. } => Method::CreateContact,
            Self::UpdateContact { .. } => Method::UpdateContact,
            Self::FindItem { .. } => Method::FindItem,
            Self::GetItem { .. } => Method::GetItem,
            Self::CreateItem { .. } => Method::CreateItem,
            Self::UpdateItem { .. } => Method::UpdateItem,
            Self::PostStockMovement { .. } => Method::PostStockMovement,
            Self::PostInvoice { .. } => Method::PostInvoice,
            Self::PostCreditNote { .. } => Method::PostCreditNote,
            Self::FindDocument { .. } => Method::FindDocument,
            Self::GetDocument { .. } => Method::GetDocument,
            Self::VoidDocument { .. } => Method::VoidDocument,
            Self::PostPayment { .. } => Method::PostPayment,
            Self::Allocate { .. } => Method::Allocate,
            Self::FindTransaction { .. } => Method::FindTransaction,
        }
    }
}

/// A stored item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemEntry {
    /// What [`AccountingProvider::get_item`] answers.
    pub record: ItemRecord,
    /// Description (the product's name with entities decoded).
    pub description: String,
    /// Sales price (base currency).
    pub price: Option<Decimal>,
    /// Cost price.
    pub cost: Option<Decimal>,
}

/// A stored invoice or credit note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentEntry {
    /// What [`AccountingProvider::get_document`] answers.
    pub record: DocumentRecord,
    /// Its currency.
    pub currency: Currency,
    /// Its date.
    pub date: NaiveDate,
    /// The Magento number it was posted from.
    pub increment_id: String,
    /// The plan it was booked from (lines, shipping, adjustments).
    pub plan: DocumentPlan,
    /// The void reason, once voided.
    pub void_reason: Option<String>,
    /// The event's idempotency key.
    pub idempotency_key: String,
}

/// A stored customer receipt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentEntry {
    /// What [`AccountingProvider::post_payment`] answered.
    pub record: TransactionRecord,
    /// The contact.
    pub contact_id: String,
    /// The bank account.
    pub bank_account_id: String,
    /// The currency.
    pub currency: Currency,
    /// The date.
    pub date: NaiveDate,
    /// The amount received.
    pub amount: Decimal,
    /// Allocations: (invoice id, amount).
    pub allocations: Vec<(String, Decimal)>,
    /// What was left on account.
    pub on_account: Decimal,
    /// The event's idempotency key.
    pub idempotency_key: String,
}

/// A stored credit-note allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllocationEntry {
    /// What [`AccountingProvider::allocate`] answered.
    pub record: TransactionRecord,
    /// The contact.
    pub contact_id: String,
    /// The date.
    pub date: NaiveDate,
    /// (artefact id, signed amount): the invoice positive, the credit note negative; they net to
    /// zero.
    pub artefacts: Vec<(String, Decimal)>,
    /// The event's idempotency key.
    pub idempotency_key: String,
}

/// A stored stock movement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StockMovementEntry {
    /// What [`AccountingProvider::post_stock_movement`] answered (its total is the signed
    /// quantity moved).
    pub record: TransactionRecord,
    /// The stock item.
    pub item_id: String,
    /// The date.
    pub date: NaiveDate,
    /// The signed quantity moved.
    pub quantity: Decimal,
    /// The cost price.
    pub cost_price: Decimal,
    /// The details line.
    pub details: String,
    /// The event's idempotency key.
    pub idempotency_key: Option<String>,
}

/// Everything the in-memory ledger holds, in creation order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Every contact, in creation order.
    pub contacts: Vec<ContactRecord>,
    /// References reserved without a contact (a deleted contact's, see
    /// [`InMemoryProvider::reserve_contact_reference`]).
    pub reserved_references: Vec<String>,
    /// Every item with its stock quantity, in creation order.
    pub items: Vec<ItemEntry>,
    /// Invoices and credit notes.
    pub documents: Vec<DocumentEntry>,
    /// Customer receipts.
    pub payments: Vec<PaymentEntry>,
    /// Credit-note allocations.
    pub allocations: Vec<AllocationEntry>,
    /// Stock movements.
    pub stock_movements: Vec<StockMovementEntry>,
}

#[derive(Debug)]
enum Injection {
    Before(Error),
    AfterCommit(Error),
    Panic,
}

#[derive(Debug, Default)]
struct State {
    seq: BTreeMap<&'static str, u64>,
    data: Snapshot,
    calls: Vec<Call>,
    injections: BTreeMap<Method, VecDeque<Injection>>,
    /// (method, idempotency key) → id of what the first request created (native idempotency).
    replays: BTreeMap<(Method, String), String>,
}

impl State {
    fn next(&mut self, kind: &'static str) -> u64 {
        let n = self.seq.entry(kind).or_insert(0);
        *n += 1;
        *n
    }

    fn next_id(&mut self, kind: &'static str) -> String {
        format!("mem-{kind}-{}", self.next(kind))
    }

    fn contact(&self, id: &str) -> Result<&ContactRecord> {
        self.data.contacts.iter().find(|c| c.id == id).ok_or_else(|| not_found("contact", id))
    }

    fn document_index(&self, kind: DocumentKind, id: &str) -> Result<usize> {
        self.data
            .documents
            .iter()
            .position(|d| d.record.id == id && d.record.kind == kind)
            .ok_or_else(|| not_found(kind_name(kind), id))
    }

    fn item_index(&self, kind: Option<ItemKind>, id: &str) -> Result<usize> {
        self.data
            .items
            .iter()
            .position(|i| i.record.id == id && kind.is_none_or(|k| i.record.kind == k))
            .ok_or_else(|| not_found(kind.map_or("item", ItemKind::as_str), id))
    }
}

/// The in-memory reference ledger and test double (see the [module docs](self)).
#[derive(Debug)]
pub struct InMemoryProvider {
    reference: Arc<ReferenceData>,
    capabilities: Capabilities,
    state: Mutex<State>,
}

impl Default for InMemoryProvider {
    /// [`InMemoryProvider::demo`].
    fn default() -> Self {
        Self::demo()
    }
}

impl InMemoryProvider {
    /// An empty ledger for the business of `reference`, with every capability on
    /// ([`Capabilities::full`]) except multi-currency, which follows the business's profile.
    pub fn new(reference: ReferenceData) -> Self {
        let capabilities = Capabilities { multi_currency: reference.business.multi_currency, ..Capabilities::full() };
        Self { reference: Arc::new(reference), capabilities, state: Mutex::new(State::default()) }
    }

    /// An empty ledger for the demo UK business ([`ReferenceData::demo_uk`]).
    pub fn demo() -> Self {
        Self::new(ReferenceData::demo_uk(DateTime::<Utc>::UNIX_EPOCH))
    }

    /// The same ledger reporting (and enforcing) `capabilities`.
    #[must_use]
    pub fn with_capabilities(mut self, capabilities: Capabilities) -> Self {
        self.capabilities = capabilities;
        self
    }

    /// The reference data it serves.
    pub fn reference(&self) -> &ReferenceData {
        &self.reference
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while the lock was held cannot leave the state half-written (every operation
        // checks before it writes), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every call made so far, in order (failed ones included).
    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The calls of one method, in order.
    pub fn calls_to(&self, method: Method) -> Vec<Call> {
        self.lock().calls.iter().filter(|c| c.method() == method).cloned().collect()
    }

    /// Forgets the recorded calls.
    pub fn clear_calls(&self) {
        self.lock().calls.clear();
    }

    /// Makes the next call of `method` fail with `error` before it does anything. Several
    /// failures for the same method apply to its next calls in the order they were queued.
    pub fn fail_next(&self, method: Method, error: Error) {
        self.lock().injections.entry(method).or_default().push_back(Injection::Before(error));
    }

    /// Makes the next call of `method` act (commit) and then fail with an error whose
    /// [`outcome_unknown`](Error::outcome_unknown) is true, like a request that timed out after it
    /// was sent. If the call is refused on its own merits, that error is returned instead.
    pub fn fail_after_commit_next(&self, method: Method) {
        let error = Error::Http {
            provider: PROVIDER,
            message: format!("connection lost after {method} was sent (injected)"),
            outcome_unknown: true,
            source: None,
        };
        self.fail_after_commit_next_with(method, error);
    }

    /// As [`fail_after_commit_next`](Self::fail_after_commit_next), with the error to return.
    pub fn fail_after_commit_next_with(&self, method: Method, error: Error) {
        self.lock().injections.entry(method).or_default().push_back(Injection::AfterCommit(error));
    }

    /// Makes the next call of `method` panic before it does anything: a bug in a provider, for
    /// testing that whoever drives the provider (the service's workers) survives one.
    pub fn panic_next(&self, method: Method) {
        self.lock().injections.entry(method).or_default().push_back(Injection::Panic);
    }

    /// Drops every queued failure.
    pub fn clear_failures(&self) {
        self.lock().injections.clear();
    }

    /// Reserves a contact reference without a contact, as Sage keeps the reference of a deleted
    /// contact: [`find_contact`](AccountingProvider::find_contact) does not find it and
    /// [`create_contact`](AccountingProvider::create_contact) refuses it as taken.
    pub fn reserve_contact_reference(&self, reference: &str) {
        let mut st = self.lock();
        if !st.data.reserved_references.iter().any(|r| r == reference) {
            st.data.reserved_references.push(reference.to_owned());
        }
    }

    /// Everything the ledger holds.
    pub fn snapshot(&self) -> Snapshot {
        self.lock().data.clone()
    }

    /// The contacts.
    pub fn contacts(&self) -> Vec<ContactRecord> {
        self.lock().data.contacts.clone()
    }

    /// The items.
    pub fn items(&self) -> Vec<ItemEntry> {
        self.lock().data.items.clone()
    }

    /// The invoices and credit notes.
    pub fn documents(&self) -> Vec<DocumentEntry> {
        self.lock().data.documents.clone()
    }

    /// One invoice or credit note by id, whatever its kind.
    pub fn document(&self, id: &str) -> Option<DocumentEntry> {
        self.lock().data.documents.iter().find(|d| d.record.id == id).cloned()
    }

    /// The customer receipts.
    pub fn payments(&self) -> Vec<PaymentEntry> {
        self.lock().data.payments.clone()
    }

    /// The credit-note allocations.
    pub fn allocations(&self) -> Vec<AllocationEntry> {
        self.lock().data.allocations.clone()
    }

    /// The stock movements.
    pub fn stock_movements(&self) -> Vec<StockMovementEntry> {
        self.lock().data.stock_movements.clone()
    }

    /// Records `call`, applies a queued failure, runs `op` on the state.
    fn run<T>(&self, call: Call, op: impl FnOnce(&mut State) -> Result<T>) -> Result<T> {
        let mut st = self.lock();
        let method = call.method();
        st.calls.push(call);
        let injection = st.injections.get_mut(&method).and_then(VecDeque::pop_front);
        match injection {
            Some(Injection::Before(e)) => Err(e),
            Some(Injection::AfterCommit(e)) => op(&mut st).and(Err(e)),
            Some(Injection::Panic) => {
                drop(st);
                panic!("{method} panicked (injected by panic_next)")
            }
            None => op(&mut st),
        }
    }

    /// The id a keyed write created earlier, when the ledger dedupes by idempotency key.
    fn replay(&self, st: &State, method: Method, key: Option<&str>) -> Option<String> {
        self.capabilities.native_idempotency_window_secs?;
        st.replays.get(&(method, key?.to_owned())).cloned()
    }

    fn remember(&self, st: &mut State, method: Method, key: Option<&str>, id: &str) {
        if let (Some(_), Some(key)) = (self.capabilities.native_idempotency_window_secs, key) {
            st.replays.insert((method, key.to_owned()), id.to_owned());
        }
    }

    fn base(&self) -> Currency {
        self.reference.business.base_currency
    }

    /// A currency the business may trade in.
    fn check_currency(&self, currency: Currency) -> Result<()> {
        if currency == self.base() {
            return Ok(());
        }
        if !self.capabilities.multi_currency {
            return Err(rejected(
                "currency_id",
                format!(
                    "{} is not the base currency ({}) and multi-currency is not enabled for this business",
                    currency.code(),
                    self.base().code()
                ),
            ));
        }
        let known = &self.reference.currencies;
        if !known.is_empty() && !known.iter().any(|c| c == currency.code()) {
            return Err(rejected("currency_id", format!("Couldn't find currency {}", currency.code())));
        }
        Ok(())
    }

    fn sales_account(&self, policy: &SyncPolicy) -> Result<String> {
        let id = policy.default_ledger_account_id.clone().ok_or_else(|| {
            Error::invalid("policy", "default_ledger_account_id", "required: ledger lines need a sales ledger account")
        })?;
        match self.reference.ledger_account(&id) {
            Some(a) if a.visible_in_sales => Ok(id),
            Some(_) => Err(rejected("ledger_account_id", format!("{id} is not visible on sales"))),
            None => Err(rejected("ledger_account_id", format!("Couldn't find ledger account {id}"))),
        }
    }

    fn purchase_account(&self, policy: &SyncPolicy) -> Result<String> {
        let id = policy.default_purchase_ledger_account_id.clone().ok_or_else(|| {
            Error::invalid("policy", "default_purchase_ledger_account_id", "required: items need a purchase account")
        })?;
        match self.reference.ledger_account(&id) {
            Some(_) => Ok(id),
            None => Err(rejected("purchase_ledger_account_id", format!("Couldn't find ledger account {id}"))),
        }
    }

    fn create_contact_in(&self, st: &mut State, request: &ContactRequest<'_>) -> Result<ContactRecord> {
        if let Some(id) = self.replay(st, Method::CreateContact, request.idempotency_key) {
            return st.contact(&id).cloned();
        }
        let reference = request.reference;
        if reference.trim().is_empty() {
            return Err(rejected("reference", "can't be blank"));
        }
        let max = self.capabilities.max_contact_reference;
        if reference.chars().count() > max {
            return Err(rejected("reference", format!("is too long (maximum is {max} characters)")));
        }
        let held = st.data.contacts.iter().filter_map(|c| c.reference.as_deref());
        if rules::is_taken(reference, held.chain(st.data.reserved_references.iter().map(String::as_str))) {
            return Err(rejected("reference", "has already been taken"));
        }
        self.check_currency(request.currency)?;
        let (name, email) = contact_name_and_email(request, self.base())?;
        let id = st.next_id("contact");
        let record = ContactRecord {
            id: id.clone(),
            reference: Some(reference.to_owned()),
            currency: Some(request.currency),
            name: Some(name),
            email: Some(email),
        };
        st.data.contacts.push(record.clone());
        self.remember(st, Method::CreateContact, request.idempotency_key, &id);
        Ok(record)
    }

    fn update_contact_in(&self, st: &mut State, id: &str, request: &ContactRequest<'_>) -> Result<ContactRecord> {
        let current = st.contact(id)?;
        let currency = current.currency.unwrap_or(self.base());
        if self.capabilities.contact_per_currency && currency != request.currency {
            return Err(rejected(
                "currency_id",
                format!("the contact trades in {}; its currency cannot change", currency.code()),
            ));
        }
        let (name, email) = contact_name_and_email(request, self.base())?;
        let contact = st
            .data
            .contacts
            .iter_mut()
            .find(|c| c.id == id)
            .ok_or_else(|| Error::internal("memory contact vanished under the lock"))?;
        contact.name = Some(name);
        contact.email = Some(email);
        Ok(contact.clone())
    }

    fn item_entry(&self, st: &State, request: &ItemRequest<'_>, except: Option<&str>) -> Result<ItemEntry> {
        if !self.capabilities.products {
            return Err(unsupported("creating and updating items"));
        }
        if request.kind == ItemKind::StockItem && !self.capabilities.stock {
            return Err(unsupported("stock items"));
        }
        request.product.validate()?;
        self.sales_account(request.policy)?;
        self.purchase_account(request.policy)?;
        let code = request.product.sku.trim().to_owned();
        let same_kind =
            st.data.items.iter().filter(|i| i.record.kind == request.kind && except.is_none_or(|e| e != i.record.id));
        if rules::is_taken(&code, same_kind.map(|i| i.record.code.as_str())) {
            return Err(rejected("item_code", format!("{code} has already been taken")));
        }
        let name = plan::decode_entities(request.product.name.trim());
        Ok(ItemEntry {
            record: ItemRecord {
                id: String::new(),
                kind: request.kind,
                code: code.clone(),
                quantity_in_stock: (request.kind == ItemKind::StockItem).then_some(Decimal::ZERO),
            },
            description: if name.is_empty() { code } else { name },
            price: request.product.price,
            cost: request.product.cost,
        })
    }

    fn create_item_in(&self, st: &mut State, request: &ItemRequest<'_>) -> Result<ItemRecord> {
        if let Some(id) = self.replay(st, Method::CreateItem, request.idempotency_key) {
            let i = st.item_index(None, &id)?;
            return Ok(st.data.items[i].record.clone());
        }
        let mut entry = self.item_entry(st, request, None)?;
        entry.record.id = st.next_id(match request.kind {
            ItemKind::Product => "product",
            ItemKind::Service => "service",
            ItemKind::StockItem => "stock-item",
        });
        let record = entry.record.clone();
        st.data.items.push(entry);
        self.remember(st, Method::CreateItem, request.idempotency_key, &record.id);
        Ok(record)
    }

    fn update_item_in(&self, st: &mut State, id: &str, request: &ItemRequest<'_>) -> Result<ItemRecord> {
        let i = st.item_index(Some(request.kind), id)?;
        let entry = self.item_entry(st, request, Some(id))?;
        let stored = &mut st.data.items[i];
        stored.record.code = entry.record.code;
        stored.description = entry.description;
        stored.price = entry.price;
        stored.cost = entry.cost;
        Ok(stored.record.clone())
    }

    fn stock_movement_in(
        &self,
        st: &mut State,
        request: &StockMovementRequest<'_>,
    ) -> Result<Option<TransactionRecord>> {
        if !self.capabilities.stock {
            return Err(unsupported("stock movements"));
        }
        let i = st.item_index(Some(ItemKind::StockItem), request.item_id)?;
        request.product.validate()?;
        let Some(target) = request.product.stock_qty else { return Ok(None) };
        let key = request
            .idempotency_key
            .map(|k| format!("{k}:{}:{}", request.ledger_quantity.normalize(), target.normalize()));
        if let Some(id) = self.replay(st, Method::PostStockMovement, key.as_deref()) {
            return Ok(st.data.stock_movements.iter().find(|m| m.record.id == id).map(|m| m.record.clone()));
        }
        let delta = rules::movement_to(target, request.ledger_quantity)
            .ok_or_else(|| rejected("quantity", "is out of range"))?;
        if delta.is_zero() {
            return Ok(None);
        }
        let current = st.data.items[i].record.quantity_in_stock.unwrap_or_default();
        let after = rules::stock_after(current, delta).ok_or_else(|| rejected("quantity", "is out of range"))?;
        let id = st.next_id("movement");
        let record = TransactionRecord { id: id.clone(), reference: None, total: Some(delta) };
        let sku: String = request.product.sku.chars().take(20).collect();
        st.data.items[i].record.quantity_in_stock = Some(after);
        st.data.stock_movements.push(StockMovementEntry {
            record: record.clone(),
            item_id: request.item_id.to_owned(),
            date: request.date,
            quantity: delta,
            cost_price: request.product.cost.unwrap_or_default(),
            details: format!("Magento sync {sku} {}→{}", request.ledger_quantity.normalize(), target.normalize()),
            idempotency_key: request.idempotency_key.map(str::to_owned),
        });
        self.remember(st, Method::PostStockMovement, key.as_deref(), &id);
        Ok(Some(record))
    }

    /// Books a planned document after checking what a ledger checks.
    fn post_document_in(
        &self,
        st: &mut State,
        plan: DocumentPlan,
        policy: &SyncPolicy,
        contact_id: &str,
        items: &BTreeMap<String, ItemLink>,
        idempotency_key: &str,
    ) -> Result<DocumentRecord> {
        let kind = plan.kind;
        self.sales_account(policy)?;
        let contact = st.contact(contact_id)?;
        self.check_currency(plan.currency)?;
        let contact_currency = contact.currency.unwrap_or(self.base());
        if self.capabilities.contact_per_currency && contact_currency != plan.currency {
            return Err(rejected(
                "currency_id",
                format!(
                    "the document is in {} but the contact trades in {}",
                    plan.currency.code(),
                    contact_currency.code()
                ),
            ));
        }
        let rate_ids = plan.lines.iter().filter_map(|l| l.rate.as_ref()).chain(plan.shipping.rate.as_ref());
        for rate in rate_ids {
            if self.reference.tax_rate(&rate.id).is_none() {
                return Err(rejected("tax_rate_id", format!("Couldn't find tax rate {}", rate.id)));
            }
        }
        if !plan.foreign_vat().is_zero() && policy.foreign_vat_ledger_account_id.is_none() {
            return Err(Error::invalid(
                "policy",
                "foreign_vat_ledger_account_id",
                "required: the document carries VAT collected for another country (OSS/IOSS)",
            ));
        }
        for line in &plan.lines {
            if let Some(link) = items.get(&line.sku)
                && !st.data.items.iter().any(|i| i.record.id == link.id && i.record.kind == link.kind)
            {
                return Err(rejected(
                    "product_id",
                    format!("Couldn't find {} {} (line {})", link.kind.as_str(), link.id, line.index),
                ));
            }
        }
        // What the ledger books: each line rounded to pennies, then shipping, adjustments and
        // tenders (booked out of their liability accounts).
        let total = plan.lines.iter().map(|l| round_money(l.net) + round_money(l.tax)).sum::<Decimal>()
            + round_money(plan.shipping.net)
            + round_money(plan.shipping.tax)
            + plan.adjustments.iter().map(|a| round_money(a.net) + round_money(a.tax)).sum::<Decimal>()
            - plan.tenders.iter().map(|t| round_money(t.amount)).sum::<Decimal>();
        if total != plan.grand_total {
            return Err(Error::internal(format!(
                "{} {}: the ledger would total {total}, Magento's grand_total is {}; not posted",
                kind.what(),
                plan.increment_id,
                plan.grand_total
            )));
        }
        if total < Decimal::ZERO {
            return Err(rejected("total_amount", "must not be negative"));
        }
        let reference =
            plan::fit_reference(&plan.reference, &plan.increment_id, self.capabilities.max_document_reference);
        let (id, number) = match kind {
            DocumentKind::Invoice => {
                let n = st.next("invoice");
                (format!("mem-invoice-{n}"), format!("SI-{n}"))
            }
            DocumentKind::CreditNote => {
                let n = st.next("credit-note");
                (format!("mem-credit-note-{n}"), format!("SCN-{n}"))
            }
        };
        let record = DocumentRecord {
            id,
            kind,
            reference: Some(reference),
            number: Some(number),
            contact_id: Some(contact_id.to_owned()),
            total: Some(total),
            outstanding: Some(total),
            voided: false,
            exchange_rate: match plan::ledger_rate(
                plan.currency,
                plan.base_currency,
                self.reference.business.base_currency,
                plan.base_to_order_rate,
            ) {
                plan::LedgerRate::Magento(r) => Decimal::ONE.checked_div(r),
                _ => None,
            },
        };
        st.data.documents.push(DocumentEntry {
            record: record.clone(),
            currency: plan.currency,
            date: plan.date,
            increment_id: plan.increment_id.clone(),
            plan,
            void_reason: None,
            idempotency_key: idempotency_key.to_owned(),
        });
        Ok(record)
    }

    fn replayed_document(&self, st: &State, method: Method, key: &str) -> Option<DocumentRecord> {
        let id = self.replay(st, method, Some(key))?;
        st.data.documents.iter().find(|d| d.record.id == id).map(|d| d.record.clone())
    }

    fn post_invoice_in(&self, st: &mut State, request: &InvoiceRequest<'_>) -> Result<DocumentRecord> {
        if let Some(found) = self.replayed_document(st, Method::PostInvoice, request.idempotency_key) {
            return Ok(found);
        }
        let plan = plan::plan_invoice(request.invoice, request.policy, &self.reference)?;
        let record = self.post_document_in(
            st,
            plan,
            request.policy,
            request.contact_id,
            request.items,
            request.idempotency_key,
        )?;
        self.remember(st, Method::PostInvoice, Some(request.idempotency_key), &record.id);
        Ok(record)
    }

    fn post_credit_note_in(&self, st: &mut State, request: &CreditNoteRequest<'_>) -> Result<DocumentRecord> {
        if !self.capabilities.credit_notes {
            return Err(unsupported("credit notes"));
        }
        if let Some(found) = self.replayed_document(st, Method::PostCreditNote, request.idempotency_key) {
            return Ok(found);
        }
        let plan = plan::plan_credit_memo(request.memo, request.policy, &self.reference, request.invoice_addresses)?;
        let record = self.post_document_in(
            st,
            plan,
            request.policy,
            request.contact_id,
            request.items,
            request.idempotency_key,
        )?;
        self.remember(st, Method::PostCreditNote, Some(request.idempotency_key), &record.id);
        Ok(record)
    }

    fn void_in(st: &mut State, kind: DocumentKind, id: &str, reason: &str) -> Result<()> {
        let i = st.document_index(kind, id)?;
        let doc = &st.data.documents[i];
        if reason.trim().is_empty() {
            return Err(rejected("void_reason", "can't be blank"));
        }
        if doc.record.voided {
            return Err(rejected("base", format!("{} {id} is already void", kind_name(kind))));
        }
        if doc.record.outstanding != doc.record.total {
            return Err(rejected(
                "base",
                format!("{} {id} has payments or allocations; remove them before voiding", kind_name(kind)),
            ));
        }
        let doc = &mut st.data.documents[i];
        doc.record.voided = true;
        doc.record.outstanding = Some(Decimal::ZERO);
        doc.void_reason = Some(reason.trim().to_owned());
        Ok(())
    }

    fn post_payment_in(&self, st: &mut State, request: &PaymentRequest<'_>) -> Result<TransactionRecord> {
        if let Some(id) = self.replay(st, Method::PostPayment, Some(request.idempotency_key)) {
            return st
                .data
                .payments
                .iter()
                .find(|p| p.record.id == id)
                .map(|p| p.record.clone())
                .ok_or_else(|| not_found("payment", &id));
        }
        let payment = request.payment;
        payment.validate()?;
        st.contact(request.contact_id)?;
        let inv = st.document_index(DocumentKind::Invoice, request.invoice_id)?;
        match self.reference.bank_account(request.bank_account_id) {
            Some(b) if b.active => {}
            Some(_) => return Err(rejected("bank_account_id", "the bank account is inactive")),
            None => {
                return Err(rejected(
                    "bank_account_id",
                    format!("Couldn't find bank account {}", request.bank_account_id),
                ));
            }
        }
        if payment.amount <= Decimal::ZERO {
            return Err(rejected("total_amount", "must be greater than 0"));
        }
        self.check_currency(payment.currency)?;
        let invoice = &st.data.documents[inv];
        if invoice.record.contact_id.as_deref() != Some(request.contact_id) {
            return Err(rejected("allocated_artefacts", "the invoice belongs to another contact"));
        }
        if invoice.currency != payment.currency {
            return Err(rejected(
                "currency_id",
                format!(
                    "the payment is in {} but the invoice is in {}",
                    payment.currency.code(),
                    invoice.currency.code()
                ),
            ));
        }
        let outstanding = invoice.record.outstanding.unwrap_or_default();
        if invoice.record.voided {
            return Err(rejected("allocated_artefacts", UNPAID_ONLY));
        }
        // As a provider's transform does: allocate up to what the caller says is outstanding.
        let allocate = request.outstanding.map_or(payment.amount, |o| o.min(payment.amount)).max(Decimal::ZERO);
        // Nothing allocated (all of it on account) settles nothing.
        let remaining = if allocate.is_zero() {
            outstanding
        } else {
            match rules::check_settlement(allocate, outstanding, false) {
                Ok(remaining) => remaining,
                Err(rules::Unsettleable::Exceeds { .. }) => {
                    return Err(rejected(
                        "allocated_artefacts",
                        format!("the amount allocated ({allocate}) exceeds the outstanding amount ({outstanding})"),
                    ));
                }
                Err(_) => return Err(rejected("allocated_artefacts", UNPAID_ONLY)),
            }
        };
        let increment_id = &payment.invoice_increment_id;
        let reference = plan::fit_reference(
            &request.policy.document_reference(increment_id),
            increment_id,
            self.capabilities.max_document_reference,
        );
        let id = st.next_id("payment");
        let record = TransactionRecord { id: id.clone(), reference: Some(reference), total: Some(payment.amount) };
        let invoice = &mut st.data.documents[inv].record;
        invoice.outstanding = Some(remaining);
        st.data.payments.push(PaymentEntry {
            record: record.clone(),
            contact_id: request.contact_id.to_owned(),
            bank_account_id: request.bank_account_id.to_owned(),
            currency: payment.currency,
            date: request.date(&self.reference.business.country),
            amount: payment.amount,
            allocations: if allocate.is_zero() { Vec::new() } else { vec![(request.invoice_id.to_owned(), allocate)] },
            on_account: payment.amount - allocate,
            idempotency_key: request.idempotency_key.to_owned(),
        });
        self.remember(st, Method::PostPayment, Some(request.idempotency_key), &id);
        Ok(record)
    }

    fn allocate_in(&self, st: &mut State, request: &AllocationRequest<'_>) -> Result<TransactionRecord> {
        if !self.capabilities.allocations {
            return Err(unsupported("credit-note allocations"));
        }
        if let Some(id) = self.replay(st, Method::Allocate, Some(request.idempotency_key)) {
            return st
                .data
                .allocations
                .iter()
                .find(|a| a.record.id == id)
                .map(|a| a.record.clone())
                .ok_or_else(|| not_found("allocation", &id));
        }
        st.contact(request.contact_id)?;
        let inv = st.document_index(DocumentKind::Invoice, request.invoice_id)?;
        let cn = st.document_index(DocumentKind::CreditNote, request.credit_note_id)?;
        let amount = request.amount;
        if amount <= Decimal::ZERO {
            return Err(rejected("allocated_artefacts", "the amount must be greater than 0"));
        }
        let (invoice, credit) = (&st.data.documents[inv], &st.data.documents[cn]);
        for doc in [invoice, credit] {
            if doc.record.contact_id.as_deref() != Some(request.contact_id) {
                return Err(rejected(
                    "allocated_artefacts",
                    format!("{} {} belongs to another contact", kind_name(doc.record.kind), doc.record.id),
                ));
            }
            let outstanding = doc.record.outstanding.unwrap_or_default();
            match rules::check_settlement(amount, outstanding, doc.record.voided) {
                Ok(_) => {}
                Err(rules::Unsettleable::Exceeds { .. }) => {
                    return Err(rejected(
                        "allocated_artefacts",
                        format!(
                            "the amount allocated ({amount}) exceeds what is outstanding on {} {} ({outstanding})",
                            kind_name(doc.record.kind),
                            doc.record.id
                        ),
                    ));
                }
                Err(_) => return Err(rejected("allocated_artefacts", UNPAID_ONLY)),
            }
        }
        if invoice.currency != credit.currency {
            return Err(rejected("allocated_artefacts", "the invoice and the credit note are in different currencies"));
        }
        let artefacts = vec![(request.invoice_id.to_owned(), amount), (request.credit_note_id.to_owned(), -amount)];
        if !rules::nets_to_zero(artefacts.iter().map(|(_, a)| *a)) {
            return Err(rejected("allocated_artefacts", "the allocations must net to zero"));
        }
        for i in [inv, cn] {
            let record = &mut st.data.documents[i].record;
            let outstanding = record.outstanding.unwrap_or_default();
            // Checked above for both documents.
            record.outstanding = Some(rules::check_settlement(amount, outstanding, false).unwrap_or(outstanding));
        }
        let id = st.next_id("allocation");
        let record = TransactionRecord { id: id.clone(), reference: None, total: Some(amount) };
        st.data.allocations.push(AllocationEntry {
            record: record.clone(),
            contact_id: request.contact_id.to_owned(),
            date: request.date,
            artefacts,
            idempotency_key: request.idempotency_key.to_owned(),
        });
        self.remember(st, Method::Allocate, Some(request.idempotency_key), &id);
        Ok(record)
    }

    fn find_transaction_in(
        st: &State,
        kind: TransactionKind,
        lookup: &TransactionLookup<'_>,
    ) -> Option<TransactionRecord> {
        let contains_all = |artefacts: &mut dyn Iterator<Item = &String>| {
            let held: Vec<&String> = artefacts.collect();
            !lookup.artefact_ids.is_empty() && lookup.artefact_ids.iter().all(|a| held.iter().any(|h| h == a))
        };
        match kind {
            TransactionKind::Payment => st
                .data
                .payments
                .iter()
                .find(|p| {
                    p.contact_id == lookup.contact_id
                        && p.date == lookup.date
                        && match lookup.reference {
                            Some(r) => p.record.reference.as_deref() == Some(r),
                            None => contains_all(&mut p.allocations.iter().map(|(id, _)| id)),
                        }
                })
                .map(|p| p.record.clone()),
            TransactionKind::Allocation => st
                .data
                .allocations
                .iter()
                .find(|a| a.contact_id == lookup.contact_id && contains_all(&mut a.artefacts.iter().map(|(id, _)| id)))
                .map(|a| a.record.clone()),
            // The memory ledger does not refund credit notes (`credit_note_refunds` is off).
            TransactionKind::Refund => None,
        }
    }
}

fn kind_name(kind: DocumentKind) -> &'static str {
    match kind {
        DocumentKind::Invoice => "invoice",
        DocumentKind::CreditNote => "credit note",
    }
}

fn rejected(field: &str, message: impl Into<String>) -> Error {
    Error::Rejected {
        provider: PROVIDER,
        status: 422,
        errors: vec![ProviderFieldError {
            code: "RecordInvalid".to_owned(),
            field: field.to_owned(),
            message: message.into(),
        }],
    }
}

fn not_found(what: &str, id: &str) -> Error {
    Error::NotFound { what: format!("{PROVIDER} {what}"), id: id.to_owned() }
}

fn unsupported(operation: &str) -> Error {
    Error::Unsupported { operation: operation.to_owned(), provider: PROVIDER }
}

/// The contact's display name and e-mail, as a ledger shows them.
fn contact_name_and_email(request: &ContactRequest<'_>, base: Currency) -> Result<(String, String)> {
    let (name, email) = match request.contact {
        ContactFor::Customer(c) => {
            let person = c.person_name();
            let company = c.company_name().map(plan::decode_entities);
            let name = match request.policy.customer_name_priority {
                NamePriority::Company => company.or(person),
                NamePriority::Person => person.or(company),
            };
            let email = c.email.trim().to_owned();
            (name.unwrap_or_else(|| email.clone()), email)
        }
        ContactFor::Fallback => {
            let b = &request.policy.b2c_consolidation;
            (b.fallback_contact_name.trim().to_owned(), b.fallback_contact_email.trim().to_owned())
        }
    };
    if name.trim().is_empty() {
        return Err(rejected("name", "can't be blank"));
    }
    if email.is_empty() {
        return Err(rejected("main_contact_person.email", "can't be blank"));
    }
    Ok((identity::display_name(&name, request.currency, base, CONTACT_NAME_MAX), email))
}

#[async_trait]
impl AccountingProvider for InMemoryProvider {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        self.run(Call::Capabilities, |_| Ok(self.capabilities.clone()))
    }

    async fn reference_data(&self, refresh: bool) -> Result<Arc<ReferenceData>> {
        self.run(Call::ReferenceData { refresh }, |_| Ok(Arc::clone(&self.reference)))
    }

    async fn find_contact(&self, reference: &str) -> Result<Option<ContactRecord>> {
        self.run(Call::FindContact { reference: reference.to_owned() }, |st| {
            Ok(st.data.contacts.iter().find(|c| c.reference.as_deref() == Some(reference)).cloned())
        })
    }

    async fn create_contact(&self, request: &ContactRequest<'_>) -> Result<ContactRecord> {
        let call = Call::CreateContact { reference: request.reference.to_owned(), currency: request.currency };
        self.run(call, |st| self.create_contact_in(st, request))
    }

    async fn update_contact(&self, id: &str, request: &ContactRequest<'_>) -> Result<ContactRecord> {
        let call = Call::UpdateContact { id: id.to_owned(), currency: request.currency };
        self.run(call, |st| self.update_contact_in(st, id, request))
    }

    async fn find_item(&self, kind: ItemKind, code: &str) -> Result<Option<ItemRecord>> {
        self.run(Call::FindItem { kind, code: code.to_owned() }, |st| {
            Ok(st.data.items.iter().find(|i| i.record.kind == kind && i.record.code == code).map(|i| i.record.clone()))
        })
    }

    async fn get_item(&self, kind: ItemKind, id: &str) -> Result<ItemRecord> {
        self.run(Call::GetItem { kind, id: id.to_owned() }, |st| {
            let i = st.item_index(Some(kind), id)?;
            Ok(st.data.items[i].record.clone())
        })
    }

    async fn create_item(&self, request: &ItemRequest<'_>) -> Result<ItemRecord> {
        let call = Call::CreateItem { kind: request.kind, sku: request.product.sku.clone() };
        self.run(call, |st| self.create_item_in(st, request))
    }

    async fn update_item(&self, id: &str, request: &ItemRequest<'_>) -> Result<ItemRecord> {
        let call = Call::UpdateItem { id: id.to_owned(), sku: request.product.sku.clone() };
        self.run(call, |st| self.update_item_in(st, id, request))
    }

    async fn post_stock_movement(&self, request: &StockMovementRequest<'_>) -> Result<Option<TransactionRecord>> {
        let call = Call::PostStockMovement {
            item_id: request.item_id.to_owned(),
            ledger_quantity: request.ledger_quantity,
            target: request.product.stock_qty,
        };
        self.run(call, |st| self.stock_movement_in(st, request))
    }

    async fn post_invoice(&self, request: &InvoiceRequest<'_>) -> Result<DocumentRecord> {
        let call = Call::PostInvoice {
            contact_id: request.contact_id.to_owned(),
            increment_id: request.invoice.increment_id.clone(),
            grand_total: request.invoice.grand_total,
            idempotency_key: request.idempotency_key.to_owned(),
        };
        self.run(call, |st| self.post_invoice_in(st, request))
    }

    async fn post_credit_note(&self, request: &CreditNoteRequest<'_>) -> Result<DocumentRecord> {
        let call = Call::PostCreditNote {
            contact_id: request.contact_id.to_owned(),
            increment_id: request.memo.increment_id.clone(),
            grand_total: request.memo.grand_total,
            idempotency_key: request.idempotency_key.to_owned(),
        };
        self.run(call, |st| self.post_credit_note_in(st, request))
    }

    async fn find_document(&self, kind: DocumentKind, reference: &str) -> Result<Option<DocumentRecord>> {
        self.run(Call::FindDocument { kind, reference: reference.to_owned() }, |st| {
            let matching = || {
                st.data
                    .documents
                    .iter()
                    .filter(|d| d.record.kind == kind && d.record.reference.as_deref() == Some(reference))
            };
            // A live document wins over a voided one holding the same reference.
            Ok(matching().find(|d| !d.record.voided).or_else(|| matching().next_back()).map(|d| d.record.clone()))
        })
    }

    async fn get_document(&self, kind: DocumentKind, id: &str) -> Result<DocumentRecord> {
        self.run(Call::GetDocument { kind, id: id.to_owned() }, |st| {
            let i = st.document_index(kind, id)?;
            Ok(st.data.documents[i].record.clone())
        })
    }

    async fn void_document(&self, kind: DocumentKind, id: &str, reason: &str) -> Result<()> {
        let call = Call::VoidDocument { kind, id: id.to_owned(), reason: reason.to_owned() };
        self.run(call, |st| Self::void_in(st, kind, id, reason))
    }

    async fn post_payment(&self, request: &PaymentRequest<'_>) -> Result<TransactionRecord> {
        let call = Call::PostPayment {
            contact_id: request.contact_id.to_owned(),
            invoice_id: request.invoice_id.to_owned(),
            amount: request.payment.amount,
            outstanding: request.outstanding,
            idempotency_key: request.idempotency_key.to_owned(),
        };
        self.run(call, |st| self.post_payment_in(st, request))
    }

    async fn allocate(&self, request: &AllocationRequest<'_>) -> Result<TransactionRecord> {
        let call = Call::Allocate {
            contact_id: request.contact_id.to_owned(),
            invoice_id: request.invoice_id.to_owned(),
            credit_note_id: request.credit_note_id.to_owned(),
            amount: request.amount,
            idempotency_key: request.idempotency_key.to_owned(),
        };
        self.run(call, |st| self.allocate_in(st, request))
    }

    async fn find_transaction(
        &self,
        kind: TransactionKind,
        lookup: &TransactionLookup<'_>,
    ) -> Result<Option<TransactionRecord>> {
        let call = Call::FindTransaction {
            kind,
            contact_id: lookup.contact_id.to_owned(),
            reference: lookup.reference.map(str::to_owned),
            date: lookup.date,
            artefact_ids: lookup.artefact_ids.iter().map(|a| (*a).to_owned()).collect(),
        };
        self.run(call, |st| Ok(Self::find_transaction_in(st, kind, lookup)))
    }
}

#[cfg(test)]
mod tests;
