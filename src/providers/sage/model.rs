//! Serde wire types of the Sage Business Cloud Accounting v3.1 requests and responses the crate
//! uses, built from Sage's Swagger spec (`tests/fixtures/specs/sage/openapi-v3.1.json`: the
//! `postX` request definitions and the read models). No logic lives here.
//!
//! Requests are wrapped in their resource namespace (`{"sales_invoice": {...}}`). Money is
//! written as JSON numbers with exact decimal digits; responses accept numbers or strings (Sage
//! answers money as strings, sage-api.md Q16). Two fields the 2022 spec lacks are sent on
//! purpose: `idempotency_id` (Sage's documented native idempotency, sage-api.md section 0) and the
//! line `currency_tax_amount` (byte8-spec.md 9 Q1); the spec checker of the test suite knows them
//! as documented extensions.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{serde_decimal, serde_decimal_opt};

/// A Sage address on a document or a contact (`postSalesInvoices.main_address`,
/// `postContacts.main_address`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SageAddress {
    /// Line 1 (≤ 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line_1: Option<String>,
    /// Line 2 (≤ 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line_2: Option<String>,
    /// City (≤ 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// Region (≤ 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Postcode (≤ 10).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// ISO country code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country_id: Option<String>,
    /// Address name (≤ 50; contacts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `DELIVERY` / `ACCOUNTS` (contacts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_type_id: Option<String>,
    /// Whether this is the main address (contacts only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_main_address: Option<bool>,
}

/// `postContacts.main_contact_person`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SageContactPerson {
    /// Name (≤ 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// E-mail (≤ 100).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Telephone (≤ 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub telephone: Option<String>,
    /// Main contact flag.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub is_main_contact: Option<bool>,
}

/// `postContacts.contact`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactBody {
    /// Name (≤ 100).
    pub name: String,
    /// `["CUSTOMER"]`.
    pub contact_type_ids: Vec<String>,
    /// Reference (≤ 10, unique).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Trading currency (non-base variants only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub currency_id: Option<String>,
    /// Notes (≤ 4000): full values of shortened fields.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// The buyer's VAT registration number (`tax_number`, ≤ 255, format-validated by Sage;
    /// openapi-v3.1 `postContacts` / `putContacts`), normalised by
    /// [`crate::canonical::normalize_vat_number`]; absent when the buyer has none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_number: Option<String>,
    /// Main (billing) address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_address: Option<SageAddress>,
    /// Delivery address.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery_address: Option<SageAddress>,
    /// Main contact person (carries the e-mail).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub main_contact_person: Option<SageContactPerson>,
    /// Sage native idempotency id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_id: Option<String>,
}

/// `POST /contacts` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostContact {
    /// The contact.
    pub contact: ContactBody,
}

/// `PUT /contacts/{id}` body (partial update).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PutContact {
    /// The contact.
    pub contact: ContactBody,
}

/// An invoice or credit-note line (`postSalesInvoices.invoice_lines[]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentLine {
    /// Description (required).
    pub description: String,
    /// Sales ledger account (required).
    pub ledger_account_id: String,
    /// How many units (Magento's quantity).
    #[serde(with = "serde_decimal")]
    pub quantity: Decimal,
    /// Unit price excluding tax, 2 decimals (required).
    #[serde(with = "serde_decimal")]
    pub unit_price: Decimal,
    /// Discount amount.
    #[serde(with = "serde_decimal")]
    pub discount_amount: Decimal,
    /// Tax rate.
    pub tax_rate_id: String,
    /// Tax (required by v3.1 for non-zero rates).
    #[serde(with = "serde_decimal")]
    pub tax_amount: Decimal,
    /// Tax in the document currency (byte8-spec.md 9 Q1; not in the 2022 spec).
    #[serde(with = "serde_decimal")]
    pub currency_tax_amount: Decimal,
    /// Unit price excludes tax.
    pub unit_price_includes_tax: bool,
    /// `GOODS` / `SERVICES` on cross-border documents.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eu_goods_services_type_id: Option<String>,
    /// Linked product or stock item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product_id: Option<String>,
    /// Linked service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_id: Option<String>,
}

/// The header of a sales invoice or credit note (`postSalesInvoices.sales_invoice` /
/// `postSalesCreditNotes.sales_credit_note`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentBody {
    /// Contact (required).
    pub contact_id: String,
    /// Date (required).
    pub date: NaiveDate,
    /// Credit notes: the credited invoice's date.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub original_invoice_date: Option<NaiveDate>,
    /// Reference (≤ 25).
    pub reference: String,
    /// Notes (≤ 2000).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Sage's id of the document's currency (`currency_id`, e.g. `GBP`).
    pub currency_id: String,
    /// Base units per document-currency unit (10 decimals), non-base currencies only.
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_decimal_opt", default)]
    pub exchange_rate: Option<Decimal>,
    /// Document-currency units per base unit.
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_decimal_opt", default)]
    pub inverse_exchange_rate: Option<Decimal>,
    /// Billing address, always sent.
    pub main_address: SageAddress,
    /// Delivery address, always sent (Sage copies billing otherwise, Q2).
    pub delivery_address: SageAddress,
    /// Shipping net (Sage recomputes its tax from the rate).
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_decimal_opt", default)]
    pub shipping_net_amount: Option<Decimal>,
    /// Shipping tax rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shipping_tax_rate_id: Option<String>,
    /// Shipping tax (sent for the record; Sage recomputes it).
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_decimal_opt", default)]
    pub shipping_tax_amount: Option<Decimal>,
    /// Invoice lines (invoices).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice_lines: Option<Vec<DocumentLine>>,
    /// Credit note lines (credit notes).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit_note_lines: Option<Vec<DocumentLine>>,
    /// Sage native idempotency id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_id: Option<String>,
}

impl DocumentBody {
    /// The lines, whichever kind of document this is.
    pub fn lines(&self) -> &[DocumentLine] {
        self.invoice_lines.as_deref().or(self.credit_note_lines.as_deref()).unwrap_or(&[])
    }
}

/// `POST /sales_invoices` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostSalesInvoice {
    /// The invoice.
    pub sales_invoice: DocumentBody,
}

/// `POST /sales_credit_notes` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostSalesCreditNote {
    /// The credit note.
    pub sales_credit_note: DocumentBody,
}

/// `allocated_artefacts[]` of payments and allocations.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatedArtefact {
    /// The invoice or credit note.
    pub artefact_id: String,
    /// Amount: positive for invoices, negative for credit notes in allocations.
    #[serde(with = "serde_decimal")]
    pub amount: Decimal,
}

/// `postContactPayments.contact_payment`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactPaymentBody {
    /// `CUSTOMER_RECEIPT`.
    pub transaction_type_id: String,
    /// Sage's id of the paying contact.
    pub contact_id: String,
    /// Bank account.
    pub bank_account_id: String,
    /// The date the money was received.
    pub date: NaiveDate,
    /// Amount received.
    #[serde(with = "serde_decimal")]
    pub total_amount: Decimal,
    /// Currency (the invoice's).
    pub currency_id: String,
    /// The invoice's exchange rate.
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_decimal_opt", default)]
    pub exchange_rate: Option<Decimal>,
    /// Reference (≤ 25).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// Allocations, inline (one request, not two).
    pub allocated_artefacts: Vec<AllocatedArtefact>,
    /// Sage native idempotency id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_id: Option<String>,
}

/// `POST /contact_payments` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostContactPayment {
    /// The payment.
    pub contact_payment: ContactPaymentBody,
}

/// `postContactAllocations.contact_allocation`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactAllocationBody {
    /// `CUSTOMER_ALLOCATION`.
    pub transaction_type_id: String,
    /// Contact (the invoice's and the credit note's).
    pub contact_id: String,
    /// The date the allocation takes effect.
    pub date: NaiveDate,
    /// Invoice positive, credit note negative; nets to zero.
    pub allocated_artefacts: Vec<AllocatedArtefact>,
    /// Sage native idempotency id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_id: Option<String>,
}

/// `POST /contact_allocations` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostContactAllocation {
    /// The allocation.
    pub contact_allocation: ContactAllocationBody,
}

/// `sales_prices[]` of products and stock items.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesPrice {
    /// Price name.
    pub price_name: String,
    /// The selling price, net or gross as `price_includes_tax` says.
    #[serde(with = "serde_decimal")]
    pub price: Decimal,
    /// Whether it includes tax.
    pub price_includes_tax: bool,
}

/// `sales_rates[]` of services.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesRate {
    /// Rate name.
    pub rate_name: String,
    /// The rate charged for the service, net or gross as `rate_includes_tax` says.
    #[serde(with = "serde_decimal")]
    pub rate: Decimal,
    /// Whether it includes tax.
    pub rate_includes_tax: bool,
}

/// The body of a product, service or stock item (`postProducts.product`, `postServices.service`,
/// `postStockItems.stock_item`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemBody {
    /// Item code (≤ 255; stock items ≤ 30).
    pub item_code: String,
    /// Description (≤ 255).
    pub description: String,
    /// Sales ledger account.
    pub sales_ledger_account_id: String,
    /// Purchase ledger account (sent even for sales-only items, Q18).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchase_ledger_account_id: Option<String>,
    /// Notes (≤ 500).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// Cost price.
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_decimal_opt", default)]
    pub cost_price: Option<Decimal>,
    /// Sales prices (products and stock items).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sales_prices: Option<Vec<SalesPrice>>,
    /// Sales rates (services).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sales_rates: Option<Vec<SalesRate>>,
    /// Sage native idempotency id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_id: Option<String>,
}

/// `POST /products` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostProduct {
    /// The product.
    pub product: ItemBody,
}

/// `POST /services` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostService {
    /// The service.
    pub service: ItemBody,
}

/// `POST /stock_items` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostStockItem {
    /// The stock item.
    pub stock_item: ItemBody,
}

/// `postStockMovements.stock_movement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StockMovementBody {
    /// Stock item.
    pub stock_item_id: String,
    /// The date of the stock movement.
    pub date: NaiveDate,
    /// Signed adjustment.
    #[serde(with = "serde_decimal")]
    pub quantity: Decimal,
    /// Cost price (required).
    #[serde(with = "serde_decimal")]
    pub cost_price: Decimal,
    /// Details (required, ≤ 50).
    pub details: String,
    /// Sage native idempotency id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_id: Option<String>,
}

/// `POST /stock_movements` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PostStockMovement {
    /// The movement.
    pub stock_movement: StockMovementBody,
}

// ---------------------------------------------------------------------------------------------
// Responses

/// A nested reference in a response (`{"id": "...", "displayed_as": "...", "$path": "..."}`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Link {
    /// Sage's id of the linked record (a hex GUID, or a code such as `GBP`).
    #[serde(default)]
    pub(crate) id: String,
    /// Display text.
    #[serde(default)]
    pub(crate) displayed_as: Option<String>,
}

/// A sales invoice or credit note as Sage returns it (the fields the crate reads).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SageDocument {
    /// Sage's id of the document.
    pub(crate) id: String,
    /// Display text (`SI-27`).
    #[serde(default)]
    pub(crate) displayed_as: Option<String>,
    /// The document's reference: the Magento increment id the lookup matches.
    #[serde(default)]
    pub(crate) reference: Option<String>,
    /// The customer the document is for.
    #[serde(default)]
    pub(crate) contact: Option<Link>,
    /// The document's currency.
    #[serde(default)]
    pub(crate) currency: Option<Link>,
    /// Status (`UNPAID`, `PAID`, `VOID`, ...).
    #[serde(default)]
    pub(crate) status: Option<Link>,
    /// The gross total (`total_amount`).
    #[serde(default, with = "serde_decimal_opt")]
    pub(crate) total_amount: Option<Decimal>,
    /// The total before tax.
    #[serde(default, with = "serde_decimal_opt")]
    pub(crate) net_amount: Option<Decimal>,
    /// The total tax.
    #[serde(default, with = "serde_decimal_opt")]
    pub(crate) tax_amount: Option<Decimal>,
    /// What is still owed on the document (zero once paid or fully credited).
    #[serde(default, with = "serde_decimal_opt")]
    pub(crate) outstanding_amount: Option<Decimal>,
    /// The document's exchange rate (base per unit of its currency).
    #[serde(default, with = "serde_decimal_opt")]
    pub(crate) exchange_rate: Option<Decimal>,
    /// The document date as Sage wrote it (`YYYY-MM-DD`).
    #[serde(default)]
    pub(crate) date: Option<String>,
    /// When voided, why.
    #[serde(default)]
    pub(crate) void_reason: Option<String>,
}

/// A contact as Sage returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SageContact {
    /// Sage's id of the contact.
    pub(crate) id: String,
    /// Display text.
    #[serde(default)]
    pub(crate) displayed_as: Option<String>,
    /// The contact's name (a person's or a company's).
    #[serde(default)]
    pub(crate) name: Option<String>,
    /// The contact's reference: the Magento customer reference the lookup matches.
    #[serde(default)]
    pub(crate) reference: Option<String>,
    /// The contact's currency.
    #[serde(default)]
    pub(crate) currency: Option<Link>,
    /// E-mail (read model).
    #[serde(default)]
    pub(crate) email: Option<String>,
    /// Main contact person.
    #[serde(default)]
    pub(crate) main_contact_person: Option<SageContactPerson>,
    /// Deleted at (soft delete).
    #[serde(default)]
    pub(crate) deleted_at: Option<String>,
    /// `false` for a contact made inactive in Sage (sage-api.md 1: `Contact.is_active`, not in
    /// the 2022 spec); absent on older answers.
    #[serde(default)]
    pub(crate) is_active: Option<bool>,
}

impl SageContact {
    /// Whether the contact may be adopted: not soft-deleted and not made inactive.
    pub(crate) fn is_usable(&self) -> bool {
        self.deleted_at.is_none() && self.is_active != Some(false)
    }
}

/// A payment or allocation as Sage returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SageTransaction {
    /// Sage's id of the payment or allocation.
    pub(crate) id: String,
    /// Display text.
    #[serde(default)]
    pub(crate) displayed_as: Option<String>,
    /// The transaction's reference: the Magento payment reference the lookup matches.
    #[serde(default)]
    pub(crate) reference: Option<String>,
    /// The amount of the transaction.
    #[serde(default, with = "serde_decimal_opt")]
    pub(crate) total_amount: Option<Decimal>,
    /// The contact the transaction belongs to.
    #[serde(default)]
    pub(crate) contact: Option<Link>,
}

/// A product, service or stock item as Sage returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SageItem {
    /// Sage's id of the product, service or stock item.
    pub(crate) id: String,
    /// Item code.
    #[serde(default)]
    pub(crate) item_code: Option<String>,
    /// The item's description (Sage requires one).
    #[serde(default)]
    pub(crate) description: Option<String>,
    /// Quantity in stock (stock items).
    #[serde(default, with = "serde_decimal_opt")]
    pub(crate) quantity_in_stock: Option<Decimal>,
    /// `active` as Sage answered it: `None` when the key is absent (a list without
    /// `attributes=all`, an older answer), `Some(None)` for Sage's `"active": null` (seen in a
    /// real `/products` page, `tests/fixtures/sage-real/`), `Some(Some(b))` otherwise.
    #[serde(default, deserialize_with = "present", skip_serializing_if = "Option::is_none")]
    pub(crate) active: Option<Option<bool>>,
    /// Deleted at (soft delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) deleted_at: Option<String>,
}

impl SageItem {
    /// Whether the item may be adopted: `active` is `true` or absent, and the item is not
    /// deleted. An item Sage reports as `"active": false` or `"active": null` is not: the first
    /// is deactivated, the second is a state Sage's own clients had to learn to read, and posting
    /// onto either is a guess (documented choice, docs/QUIRKS.md Sage R3).
    pub(crate) fn is_usable(&self) -> bool {
        self.deleted_at.is_none() && matches!(self.active, None | Some(Some(true)))
    }
}

/// Reads a key that may be present with `null`: present (even `null`) is `Some(…)`; absent keys
/// keep the `default` (`None`).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Option<bool>>, D::Error> {
    Option::<bool>::deserialize(d).map(Some)
}

/// A list envelope (`$items`, `$next`, `$back`, `$total`, `$page`, `$items_per_page`), as real
/// Sage answers it (`tests/fixtures/sage-real/`): `$next` and `$back` are usually paths relative
/// to the API root without the version prefix (`/products?page=2&items_per_page=50`), `$next` may
/// be null while more items exist, and the page size is spelled `$itemsPerPage` or
/// `$items_per_page` (up to 2147483647). Counts that are not small non-negative integers (a
/// string, a negative, a float) are read as absent rather than failing the page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Page<T> {
    /// The records of this page (`$items`).
    #[serde(rename = "$items", default = "Vec::new")]
    pub(crate) items: Vec<T>,
    /// The next page's URL or path, when Sage says.
    #[serde(rename = "$next", default)]
    pub(crate) next: Option<String>,
    /// The previous page's URL or path, when Sage says.
    #[serde(rename = "$back", default)]
    pub(crate) back: Option<String>,
    /// How many items the whole list holds.
    #[serde(rename = "$total", default, deserialize_with = "lenient_count")]
    pub(crate) total: Option<u64>,
    /// This page's number (1-based).
    #[serde(rename = "$page", default, deserialize_with = "lenient_count")]
    pub(crate) page: Option<u64>,
    /// The page size Sage applied (`$itemsPerPage`, or `$items_per_page` on some endpoints).
    #[serde(rename = "$itemsPerPage", alias = "$items_per_page", default, deserialize_with = "lenient_count")]
    pub(crate) items_per_page: Option<u64>,
}

/// Reads a count of a list envelope: a non-negative integer, or an integer in a string; anything
/// else (null, a negative, a fraction, text) is `None`, never an error or a panic.
fn lenient_count<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    Ok(match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    })
}

/// One entry of Sage's error array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SageErrorItem {
    /// `error`.
    #[serde(rename = "$severity", default)]
    pub(crate) severity: Option<String>,
    /// `RecordInvalid`, `AuthorizationFailure`, ...
    #[serde(rename = "$dataCode", default)]
    pub(crate) data_code: Option<String>,
    /// The message.
    #[serde(rename = "$message", default)]
    pub(crate) message: Option<String>,
    /// The field locator, often empty.
    #[serde(rename = "$source", default)]
    pub(crate) source: Option<String>,
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
