//! Serde wire types of the Xero Accounting API 2.0 subset the provider uses, named and shaped as
//! in Xero's own OpenAPI spec (`tests/fixtures/specs/xero/xero_accounting.yaml`, 16.1.0):
//! PascalCase fields, plural envelopes on every write (`{"Invoices": […]}`), money as JSON numbers
//! with their exact digits (never `f64`), dates sent as `YYYY-MM-DD`. No logic here.
//!
//! Responses carry dates as MS-JSON (`/Date(1552262400000+0000)/`, Q20): [`ms_date`] reads them,
//! and every response field is optional with a default, so an answer with fewer fields still
//! reads.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{serde_decimal, serde_decimal_opt};

/// `{"ContactID": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactRef {
    /// The contact's id.
    #[serde(rename = "ContactID")]
    pub contact_id: String,
}

/// `{"InvoiceID": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvoiceRef {
    /// The invoice's id.
    #[serde(rename = "InvoiceID")]
    pub invoice_id: String,
}

/// `{"CreditNoteID": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreditNoteRef {
    /// The credit note's id.
    #[serde(rename = "CreditNoteID")]
    pub credit_note_id: String,
}

/// `{"AccountID": …}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountRef {
    /// The account's id.
    #[serde(rename = "AccountID")]
    pub account_id: String,
}

/// A document line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct LineItem {
    /// Description (at least one character).
    pub description: String,
    /// Quantity (never negative).
    #[serde(with = "serde_decimal")]
    pub quantity: Decimal,
    /// Unit amount, up to 4 decimals (`unitdp=4`).
    #[serde(with = "serde_decimal")]
    pub unit_amount: Decimal,
    /// The item, by code.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub item_code: Option<String>,
    /// The revenue (or other) account's code.
    pub account_code: String,
    /// The tax type (`OUTPUT2`).
    pub tax_type: String,
    /// The line's tax when Xero's own computation would differ from Magento's.
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_decimal_opt")]
    pub tax_amount: Option<Decimal>,
    /// Discount in money (ACCREC invoices only).
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_decimal_opt")]
    pub discount_amount: Option<Decimal>,
}

/// An invoice (`ACCREC` sales, or an `ACCPAY` stock-adjustment bill).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Invoice {
    /// `ACCREC` or `ACCPAY`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The contact.
    pub contact: ContactRef,
    /// The invoice date (`Date`, `YYYY-MM-DD`): the Magento invoice's date in the store's zone.
    pub date: NaiveDate,
    /// Due date.
    pub due_date: NaiveDate,
    /// `Exclusive`, `Inclusive` or `NoTax`.
    pub line_amount_types: String,
    /// The number (unique for ACCREC): the document reference.
    pub invoice_number: String,
    /// ACCREC only: additional reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The ISO 4217 code of the order's currency (`CurrencyCode`).
    pub currency_code: String,
    /// Units of the document currency per unit of the base currency, for foreign documents.
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_decimal_opt")]
    pub currency_rate: Option<Decimal>,
    /// `AUTHORISED`.
    pub status: String,
    /// The invoice lines (`LineItems`): products, shipping, discounts as Xero lines.
    pub line_items: Vec<LineItem>,
}

/// A credit note (`ACCRECCREDIT`, or an `ACCPAYCREDIT` stock adjustment).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CreditNote {
    /// `ACCRECCREDIT` or `ACCPAYCREDIT`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// The contact.
    pub contact: ContactRef,
    /// The credit note date (`Date`): the Magento credit memo's date in the store's zone.
    pub date: NaiveDate,
    /// `Exclusive`, `Inclusive` or `NoTax`.
    pub line_amount_types: String,
    /// The number: the document reference.
    pub credit_note_number: String,
    /// Additional reference (ACCRECCREDIT only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The ISO 4217 code of the credit note's currency (`CurrencyCode`).
    pub currency_code: String,
    /// See [`Invoice::currency_rate`].
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_decimal_opt")]
    pub currency_rate: Option<Decimal>,
    /// `AUTHORISED`.
    pub status: String,
    /// Lines (no discounts on credit notes).
    pub line_items: Vec<LineItem>,
}

/// A payment of an invoice, or the cash refund of a credit note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Payment {
    /// The invoice paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub invoice: Option<InvoiceRef>,
    /// The credit note refunded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credit_note: Option<CreditNoteRef>,
    /// The bank account.
    pub account: AccountRef,
    /// The date the money was received (`Date`).
    pub date: NaiveDate,
    /// Amount (at most what is outstanding).
    #[serde(with = "serde_decimal")]
    pub amount: Decimal,
    /// Reference (bank-feed matching and the look-up after an unknown outcome).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The document's rate, for foreign documents.
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_decimal_opt")]
    pub currency_rate: Option<Decimal>,
}

/// A credit-note allocation (`PUT /CreditNotes/{id}/Allocations`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Allocation {
    /// The invoice.
    pub invoice: InvoiceRef,
    /// Amount (the JSON field is `Amount`, not `AppliedAmount`).
    #[serde(with = "serde_decimal")]
    pub amount: Decimal,
    /// The date the allocation takes effect (`Date`).
    pub date: NaiveDate,
}

/// An address (`POBOX` is the invoice address, `STREET` the delivery one).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Address {
    /// `POBOX` or `STREET`.
    pub address_type: String,
    /// Line 1.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line1: Option<String>,
    /// Line 2.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address_line2: Option<String>,
    /// The town or city (`City`), omitted when empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// The county, state or province (`Region`), omitted when empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Postal code (≤ 50).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    /// Country (ISO 3166-1 alpha-2: letters only, Q19).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    /// Attention to (the company under the Person name priority).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attention_to: Option<String>,
}

/// A phone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Phone {
    /// `DEFAULT`.
    pub phone_type: String,
    /// Number (≤ 50).
    pub phone_number: String,
}

/// A contact to create or update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Contact {
    /// Set on updates.
    #[serde(rename = "ContactID", skip_serializing_if = "Option::is_none")]
    pub contact_id: Option<String>,
    /// The crate's reference (unique, ≤ 50).
    pub contact_number: String,
    /// Name (unique among active contacts).
    pub name: String,
    /// First name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    /// E-mail.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email_address: Option<String>,
    /// The buyer's VAT number (`TaxNumber`, ≤ 50), normalised by
    /// [`crate::canonical::normalize_vat_number`]; absent when the buyer has none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tax_number: Option<String>,
    /// The billing (`POBOX`) and delivery (`STREET`) addresses, omitted when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub addresses: Vec<Address>,
    /// The telephone numbers (`DEFAULT`), omitted when there are none.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub phones: Vec<Phone>,
}

/// Sales or purchase details of an item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ItemDetails {
    /// Unit price.
    #[serde(skip_serializing_if = "Option::is_none", with = "serde_decimal_opt")]
    pub unit_price: Option<Decimal>,
    /// Account code (sales, or purchases of an untracked item).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_code: Option<String>,
    /// Cost-of-goods-sold account of a tracked item.
    #[serde(rename = "COGSAccountCode", skip_serializing_if = "Option::is_none")]
    pub cogs_account_code: Option<String>,
}

/// An item to create or update.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Item {
    /// Set on updates.
    #[serde(rename = "ItemID", skip_serializing_if = "Option::is_none")]
    pub item_id: Option<String>,
    /// Code (≤ 30).
    pub code: String,
    /// Name (≤ 50).
    pub name: String,
    /// Description (≤ 4000).
    pub description: String,
    /// Whether the item is sold (`IsSold`): always true for Magento products.
    pub is_sold: bool,
    /// Purchased (tracked items are).
    pub is_purchased: bool,
    /// Sales price and account.
    pub sales_details: ItemDetails,
    /// Cost and COGS account (tracked items).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub purchase_details: Option<ItemDetails>,
    /// The inventory asset account (tracked items).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inventory_asset_account_code: Option<String>,
}

// ---------------------------------------------------------------------------------------------
// Responses

/// A validation error of one element: only its presence is read here (an element with any is
/// refused); the messages are read from the raw answer by `error::element_messages`, which also
/// names the field.
#[derive(Debug, Clone, Default, Deserialize)]
pub(crate) struct ValidationError {}

/// A contact as Xero answers it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct ContactOut {
    /// Xero's id of the contact (`ContactID`), absent on an element that failed.
    #[serde(rename = "ContactID")]
    pub(crate) contact_id: Option<String>,
    /// The contact's reference (`ContactNumber`): the Magento customer reference the lookup matches.
    pub(crate) contact_number: Option<String>,
    /// `ACTIVE`, `ARCHIVED`.
    pub(crate) contact_status: Option<String>,
    /// The contact's display name (`Name`), unique within an organisation.
    pub(crate) name: Option<String>,
    /// E-mail.
    pub(crate) email_address: Option<String>,
    /// Default currency (unset: any currency).
    pub(crate) default_currency: Option<String>,
    /// The contact it was merged into.
    #[serde(rename = "MergedToContactID")]
    pub(crate) merged_to_contact_id: Option<String>,
    /// Element errors (batch answers).
    pub(crate) validation_errors: Vec<ValidationError>,
    /// `OK`, `WARNING`, `ERROR`.
    pub(crate) status_attribute_string: Option<String>,
}

/// A payment as Xero answers it (also inside an invoice).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct PaymentOut {
    /// Xero's id of the payment (`PaymentID`).
    #[serde(rename = "PaymentID")]
    pub(crate) payment_id: Option<String>,
    /// Date (MS-JSON).
    pub(crate) date: Option<String>,
    /// The amount paid, in the invoice's currency.
    #[serde(with = "serde_decimal_opt")]
    pub(crate) amount: Option<Decimal>,
    /// The payment's reference: the Magento payment reference the lookup matches.
    pub(crate) reference: Option<String>,
    /// `AUTHORISED`, `DELETED`.
    pub(crate) status: Option<String>,
    /// The invoice paid.
    pub(crate) invoice: Option<DocumentOut>,
    /// The credit note refunded.
    pub(crate) credit_note: Option<DocumentOut>,
    /// Element errors (batch answers).
    pub(crate) validation_errors: Vec<ValidationError>,
    /// `OK`, `WARNING`, `ERROR`.
    pub(crate) status_attribute_string: Option<String>,
}

/// An allocation as Xero answers it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct AllocationOut {
    /// Xero's id of the allocation (`AllocationID`).
    #[serde(rename = "AllocationID")]
    pub(crate) allocation_id: Option<String>,
    /// The amount allocated from the credit note to the invoice.
    #[serde(with = "serde_decimal_opt")]
    pub(crate) amount: Option<Decimal>,
    /// Date (MS-JSON).
    pub(crate) date: Option<String>,
    /// The invoice.
    pub(crate) invoice: Option<DocumentOut>,
    /// Element errors.
    pub(crate) validation_errors: Vec<ValidationError>,
}

/// An invoice or credit note as Xero answers it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct DocumentOut {
    /// Invoice id.
    #[serde(rename = "InvoiceID")]
    pub(crate) invoice_id: Option<String>,
    /// Credit note id.
    #[serde(rename = "CreditNoteID")]
    pub(crate) credit_note_id: Option<String>,
    /// Invoice number.
    pub(crate) invoice_number: Option<String>,
    /// Credit note number.
    pub(crate) credit_note_number: Option<String>,
    /// `ACCREC` (an invoice) or `ACCRECCREDIT` (a credit note); other types are not ours.
    #[serde(rename = "Type")]
    pub(crate) kind: Option<String>,
    /// `DRAFT`, `AUTHORISED`, `PAID` or `VOIDED` (a voided document is skipped by lookups).
    pub(crate) status: Option<String>,
    /// The ISO 4217 code of the document's currency.
    pub(crate) currency_code: Option<String>,
    /// The contact.
    pub(crate) contact: Option<ContactOut>,
    /// The gross total (`Total`).
    #[serde(with = "serde_decimal_opt")]
    pub(crate) total: Option<Decimal>,
    /// What is left to pay (invoices).
    #[serde(with = "serde_decimal_opt")]
    pub(crate) amount_due: Option<Decimal>,
    /// Units of the document currency per unit of the base currency.
    #[serde(with = "serde_decimal_opt")]
    pub(crate) currency_rate: Option<Decimal>,
    /// What is left of a credit note.
    #[serde(with = "serde_decimal_opt")]
    pub(crate) remaining_credit: Option<Decimal>,
    /// The payments already applied to the document (found by reference on recovery).
    pub(crate) payments: Vec<PaymentOut>,
    /// Allocations (credit notes).
    pub(crate) allocations: Vec<AllocationOut>,
    /// Element errors (batch answers).
    pub(crate) validation_errors: Vec<ValidationError>,
    /// `OK`, `WARNING`, `ERROR`.
    pub(crate) status_attribute_string: Option<String>,
}

/// An item as Xero answers it.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct ItemOut {
    /// Xero's id of the item (`ItemID`).
    #[serde(rename = "ItemID")]
    pub(crate) item_id: Option<String>,
    /// The item code (`Code`): the Magento SKU the lookup matches.
    pub(crate) code: Option<String>,
    /// Whether Xero tracks the item's stock (`IsTrackedAsInventory`).
    pub(crate) is_tracked_as_inventory: Option<bool>,
    /// On hand (tracked items).
    #[serde(with = "serde_decimal_opt")]
    pub(crate) quantity_on_hand: Option<Decimal>,
    /// Element errors.
    pub(crate) validation_errors: Vec<ValidationError>,
}

/// Reads an MS-JSON date (`/Date(1552262400000+0000)/`) or an ISO date (`2019-03-11` or
/// `2019-03-11T00:00:00`) into a calendar date (Q20). The offset only shifts the instant; the
/// date is the UTC date of the milliseconds, which is how Xero encodes a plain date.
pub fn ms_date(text: &str) -> Option<NaiveDate> {
    let t = text.trim();
    if let Some(inner) = t.strip_prefix("/Date(").and_then(|r| r.strip_suffix(")/")) {
        let digits: String = inner
            .chars()
            .enumerate()
            .take_while(|(i, c)| c.is_ascii_digit() || (*i == 0 && *c == '-'))
            .map(|(_, c)| c)
            .collect();
        let ms: i64 = digits.parse().ok()?;
        return chrono::DateTime::from_timestamp_millis(ms).map(|d| d.date_naive());
    }
    NaiveDate::parse_from_str(t.get(..10)?, "%Y-%m-%d").ok()
}

/// Writes a date as Xero answers it: `/Date(ms+0000)/` at UTC midnight.
pub fn to_ms_date(date: NaiveDate) -> String {
    let ms = date.and_hms_opt(0, 0, 0).map(|d| d.and_utc().timestamp_millis()).unwrap_or_default();
    format!("/Date({ms}+0000)/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ms_json_dates_read_both_ways() {
        // 1552262400000 ms = 2019-03-11T00:00:00Z (the spec's own example).
        assert_eq!(ms_date("/Date(1552262400000+0000)/"), NaiveDate::from_ymd_opt(2019, 3, 11));
        assert_eq!(ms_date("/Date(1552262400000)/"), NaiveDate::from_ymd_opt(2019, 3, 11));
        assert_eq!(ms_date("2019-03-11T00:00:00"), NaiveDate::from_ymd_opt(2019, 3, 11));
        assert_eq!(ms_date("2019-03-11"), NaiveDate::from_ymd_opt(2019, 3, 11));
        assert_eq!(ms_date("soon"), None);
        let d = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
        assert_eq!(ms_date(&to_ms_date(d)), Some(d));
        assert_eq!(to_ms_date(NaiveDate::from_ymd_opt(2019, 3, 11).unwrap()), "/Date(1552262400000+0000)/");
    }
}
