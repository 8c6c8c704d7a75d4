//! Provider-neutral types of the [`AccountingProvider`](super::AccountingProvider) trait: what a
//! caller asks a ledger to do, and what the ledger answers. Nothing here names a provider.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    canonical::{MagentoContact, MagentoCreditMemo, MagentoInvoice, MagentoPayment, MagentoProduct},
    money::Currency,
    plan::{DocumentAddresses, DocumentKind},
    policy::SyncPolicy,
};

/// The kind of ledger item a Magento product becomes (byte8-spec.md 6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// A non-stock product (Magento `simple` without stock sync).
    Product,
    /// A service (Magento `virtual`, `downloadable`).
    Service,
    /// A stock item (Magento `simple` with managed stock and stock sync on).
    StockItem,
}

impl ItemKind {
    /// `product` / `service` / `stock_item`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Product => "product",
            Self::Service => "service",
            Self::StockItem => "stock_item",
        }
    }
}

/// Which ledger item a product becomes (byte8-spec.md 6.5), or the skip reason.
///
/// `simple` with `sync_stock` and managed stock → stock item; `simple` otherwise → product;
/// `virtual`, `downloadable` → service; `configurable`, `bundle`, `grouped` and any other type →
/// `PRODUCT_TYPE_NOT_SUPPORTED` (their child simples sync on their own).
///
/// # Errors
/// `PRODUCT_TYPE_NOT_SUPPORTED` for the types that do not sync.
pub fn item_kind(product: &MagentoProduct, policy: &SyncPolicy) -> std::result::Result<ItemKind, &'static str> {
    match product.product_type.as_str() {
        "simple" if policy.sync_stock && product.manage_stock => Ok(ItemKind::StockItem),
        "simple" => Ok(ItemKind::Product),
        "virtual" | "downloadable" => Ok(ItemKind::Service),
        _ => Err("PRODUCT_TYPE_NOT_SUPPORTED"),
    }
}

/// A ledger item a document line links to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ItemLink {
    /// The ledger's id of the item.
    pub id: String,
    /// Its kind.
    pub kind: ItemKind,
}

/// What a provider can do for the connected business. Callers check it instead of matching on
/// the provider type; a provider detects it per business (subscription tier, settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Capabilities {
    /// Documents in a currency other than the base currency.
    pub multi_currency: bool,
    /// A customer needs one ledger contact per currency (Sage locks a contact's currency).
    pub contact_per_currency: bool,
    /// Products, services and stock items can be created.
    pub products: bool,
    /// Stock items and stock movements.
    pub stock: bool,
    /// Credit notes can be created.
    pub credit_notes: bool,
    /// Credit notes can be allocated against invoices.
    pub allocations: bool,
    /// A payment can carry its allocation in the same request.
    pub inline_payment_allocation: bool,
    /// The ledger dedupes writes itself given an idempotency key (and for how long, in seconds).
    pub native_idempotency_window_secs: Option<u64>,
    /// The largest number of documents one request may carry (1: no batching). The engine groups
    /// due documents into batches of this size when it is above 1 (see
    /// [`AccountingProvider::post_invoices`](super::AccountingProvider::post_invoices)).
    pub max_batch: usize,
    /// What is left of a credit note once its invoice is settled can be refunded as cash from a
    /// bank account ([`AccountingProvider::refund_credit_note`](super::AccountingProvider::refund_credit_note));
    /// without it the rest stays open as the customer's credit.
    pub credit_note_refunds: bool,
    /// The ledger refuses a second contact with a reference already taken (Xero's unique
    /// `ContactNumber`). A batch may then create its new contacts first and look up only those
    /// the ledger refuses as taken, instead of looking every one up before creating it.
    pub unique_contact_reference: bool,
    /// The ledger refuses a second item of a kind with a code already taken (Sage's
    /// `item_code`, Xero's `Code`). The engine then creates a new product's item first (one
    /// request) and looks the code up only when the ledger refuses it as taken, instead of
    /// looking every new product up before creating it.
    pub unique_item_code: bool,
    /// The longest contact reference the ledger accepts.
    pub max_contact_reference: usize,
    /// The longest document reference the ledger accepts.
    pub max_document_reference: usize,
}

impl Capabilities {
    /// Everything on, one document a request: what a full-featured single-document ledger offers.
    pub fn full() -> Self {
        Self {
            multi_currency: true,
            contact_per_currency: true,
            products: true,
            stock: true,
            credit_notes: true,
            allocations: true,
            inline_payment_allocation: true,
            native_idempotency_window_secs: None,
            max_batch: 1,
            credit_note_refunds: false,
            unique_contact_reference: false,
            unique_item_code: false,
            max_contact_reference: 10,
            max_document_reference: 25,
        }
    }
}

/// Who a contact request is for.
#[derive(Debug, Clone, Copy)]
pub enum ContactFor<'a> {
    /// A Magento customer or guest.
    Customer(&'a MagentoContact),
    /// The B2C fallback contact of the policy.
    Fallback,
}

/// Create or update a contact for one currency.
#[derive(Debug, Clone, Copy)]
pub struct ContactRequest<'a> {
    /// The customer or the guest the contact is for.
    pub contact: ContactFor<'a>,
    /// The contact's trading currency.
    pub currency: Currency,
    /// The reference the contact holds (from [`crate::identity::reference_candidates`]).
    pub reference: &'a str,
    /// The policy (name priority, fallback contact settings).
    pub policy: &'a SyncPolicy,
    /// The event's idempotency key, for the ledger's own deduplication.
    pub idempotency_key: Option<&'a str>,
}

/// A ledger contact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRecord {
    /// The ledger's id.
    pub id: String,
    /// Its reference.
    pub reference: Option<String>,
    /// Its currency, when the ledger says.
    #[serde(default, with = "crate::reference::serde_currency_opt")]
    pub currency: Option<Currency>,
    /// Its name.
    pub name: Option<String>,
    /// Its e-mail, when the ledger says.
    pub email: Option<String>,
}

/// Create or update an item.
#[derive(Debug, Clone, Copy)]
pub struct ItemRequest<'a> {
    /// The Magento product.
    pub product: &'a MagentoProduct,
    /// What it becomes.
    pub kind: ItemKind,
    /// The policy (ledger accounts).
    pub policy: &'a SyncPolicy,
    /// The event's idempotency key.
    pub idempotency_key: Option<&'a str>,
}

/// A ledger item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemRecord {
    /// The ledger's id.
    pub id: String,
    /// Its kind.
    pub kind: ItemKind,
    /// Its code (the SKU, possibly shortened to the ledger's limit).
    pub code: String,
    /// Quantity in stock (stock items).
    pub quantity_in_stock: Option<Decimal>,
}

/// A stock adjustment that makes the ledger's quantity match Magento's.
#[derive(Debug, Clone, Copy)]
pub struct StockMovementRequest<'a> {
    /// The ledger's stock item.
    pub item_id: &'a str,
    /// The Magento product (its `stock_qty` is the target, its `cost` the cost price).
    pub product: &'a MagentoProduct,
    /// What the ledger holds now.
    pub ledger_quantity: Decimal,
    /// The movement date.
    pub date: NaiveDate,
    /// The event's idempotency key.
    pub idempotency_key: Option<&'a str>,
}

/// Post a sales invoice.
#[derive(Debug, Clone, Copy)]
pub struct InvoiceRequest<'a> {
    /// The Magento invoice.
    pub invoice: &'a MagentoInvoice,
    /// The policy.
    pub policy: &'a SyncPolicy,
    /// The contact (per customer and currency, or the fallback).
    pub contact_id: &'a str,
    /// Items by SKU, when products sync.
    pub items: &'a BTreeMap<String, ItemLink>,
    /// The event's idempotency key.
    pub idempotency_key: &'a str,
}

/// Post a sales credit note.
#[derive(Debug, Clone, Copy)]
pub struct CreditNoteRequest<'a> {
    /// The Magento credit memo.
    pub memo: &'a MagentoCreditMemo,
    /// The policy.
    pub policy: &'a SyncPolicy,
    /// The credited invoice's contact.
    pub contact_id: &'a str,
    /// Items by SKU.
    pub items: &'a BTreeMap<String, ItemLink>,
    /// The credited invoice's addresses, so the credit routes its tax the same way.
    pub invoice_addresses: Option<&'a DocumentAddresses>,
    /// The event's idempotency key.
    pub idempotency_key: &'a str,
}

/// Post a customer receipt allocated to an invoice.
#[derive(Debug, Clone, Copy)]
pub struct PaymentRequest<'a> {
    /// The Magento payment.
    pub payment: &'a MagentoPayment,
    /// The policy (reference prefix).
    pub policy: &'a SyncPolicy,
    /// The invoice's contact.
    pub contact_id: &'a str,
    /// The ledger invoice.
    pub invoice_id: &'a str,
    /// The bank account the decision tree chose.
    pub bank_account_id: &'a str,
    /// The invoice's Magento `base_to_order_rate` (the payment reuses the invoice's rate).
    pub invoice_base_to_order_rate: Option<Decimal>,
    /// What is still outstanding on the invoice, when known.
    pub outstanding: Option<Decimal>,
    /// The event's idempotency key.
    pub idempotency_key: &'a str,
}

impl PaymentRequest<'_> {
    /// The payment's date: the store's local date of `captured_at` (policy `store_timezone`, else
    /// the zone of the ledger business's country).
    pub fn date(&self, business_country: &str) -> NaiveDate {
        self.policy.local_date(self.payment.captured_at, business_country)
    }
}

/// Allocate a credit note against an invoice on their shared contact.
#[derive(Debug, Clone, Copy)]
pub struct AllocationRequest<'a> {
    /// The shared contact.
    pub contact_id: &'a str,
    /// The ledger invoice.
    pub invoice_id: &'a str,
    /// The ledger credit note.
    pub credit_note_id: &'a str,
    /// The amount to settle (positive).
    pub amount: Decimal,
    /// The allocation date.
    pub date: NaiveDate,
    /// The event's idempotency key.
    pub idempotency_key: &'a str,
}

/// Refund what is left of a credit note as cash, from a bank account (the customer got the money
/// back and the credited invoice has nothing left to settle).
#[derive(Debug, Clone, Copy)]
pub struct RefundRequest<'a> {
    /// The credit note's contact.
    pub contact_id: &'a str,
    /// The ledger credit note.
    pub credit_note_id: &'a str,
    /// The bank account the money left from.
    pub bank_account_id: &'a str,
    /// The amount refunded (positive, at most what is left of the credit note).
    pub amount: Decimal,
    /// The refund date.
    pub date: NaiveDate,
    /// The reference the refund carries (the credit note's reference).
    pub reference: &'a str,
    /// The credit note's currency rate against the base currency, when foreign (Magento's
    /// `base_to_order_rate`).
    pub base_to_order_rate: Option<Decimal>,
    /// The credit note's currency when the caller knows it (the engine passes the credit memo's,
    /// which the note was posted in); `None`: the provider reads the note to learn it (one
    /// request more).
    pub currency: Option<Currency>,
    /// The event's idempotency key.
    pub idempotency_key: &'a str,
}

/// A ledger invoice or credit note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentRecord {
    /// The ledger's id.
    pub id: String,
    /// Invoice or credit note.
    #[serde(with = "document_kind_serde")]
    pub kind: DocumentKind,
    /// The reference it was posted with.
    pub reference: Option<String>,
    /// The ledger's own number (`SI-27`).
    pub number: Option<String>,
    /// The contact.
    pub contact_id: Option<String>,
    /// The gross total the ledger holds, when it said.
    pub total: Option<Decimal>,
    /// What is still owed on the document, when the ledger said.
    pub outstanding: Option<Decimal>,
    /// Whether the document was voided (a voided document is never reused).
    pub voided: bool,
    /// The ledger's exchange rate of the document, when it reports one: base-currency units per
    /// unit of the document's currency (Sage's `exchange_rate`; Xero's 1 / `CurrencyRate`). An
    /// invoice adopted from the ledger keeps this rate for its payments.
    #[serde(default)]
    pub exchange_rate: Option<Decimal>,
}

/// A ledger payment or allocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransactionRecord {
    /// The ledger's id.
    pub id: String,
    /// Its reference.
    pub reference: Option<String>,
    /// Its total.
    pub total: Option<Decimal>,
}

mod document_kind_serde {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::plan::DocumentKind;

    pub(super) fn serialize<S: Serializer>(k: &DocumentKind, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(match k {
            DocumentKind::Invoice => "invoice",
            DocumentKind::CreditNote => "credit_note",
        })
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DocumentKind, D::Error> {
        match String::deserialize(d)?.as_str() {
            "invoice" => Ok(DocumentKind::Invoice),
            "credit_note" => Ok(DocumentKind::CreditNote),
            other => Err(serde::de::Error::custom(format!("unknown document kind `{other}`"))),
        }
    }
}
