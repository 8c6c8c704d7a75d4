//! What a ledger holds for a period, read back for reconciliation
//! ([`AccountingProvider::list_entries`](super::AccountingProvider::list_entries)).

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// The kind of record a ledger is asked to list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryKind {
    /// Sales invoices.
    Invoice,
    /// Sales credit notes.
    CreditNote,
    /// Customer receipts (not refunds, not allocations).
    Payment,
}

impl EntryKind {
    /// The spelling in reports (`invoice`, `credit_note`, `payment`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Invoice => "invoice",
            Self::CreditNote => "credit_note",
            Self::Payment => "payment",
        }
    }
}

/// One record as the ledger holds it. Amounts are positive as the ledger shows them (a credit
/// note's total is positive).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    /// Invoice, credit note or payment.
    pub kind: EntryKind,
    /// The ledger's id.
    pub id: String,
    /// The business reference it carries (what the sync posted: the Magento increment id by
    /// default), if any.
    pub reference: Option<String>,
    /// The ledger's own number (`SI-12`), if any.
    pub number: Option<String>,
    /// Its date.
    pub date: Option<NaiveDate>,
    /// Its currency (ISO 4217), when the ledger says.
    pub currency: Option<String>,
    /// Net amount (documents; `None` for payments and when the ledger does not say).
    pub net: Option<Decimal>,
    /// VAT (documents; `None` for payments and when the ledger does not say).
    pub vat: Option<Decimal>,
    /// Gross amount (a payment's amount).
    pub gross: Decimal,
    /// For payments: the part allocated to no document (money left on account). Zero for
    /// documents.
    pub unallocated: Decimal,
    /// Voided or deleted in the ledger (not counted as present).
    pub voided: bool,
}
