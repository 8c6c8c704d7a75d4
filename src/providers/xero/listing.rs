//! Reading back what the organisation holds for a period (reconciliation): `GET /Invoices`
//! (`Type=="ACCREC"`), `GET /CreditNotes` (`Type=="ACCRECCREDIT"`) and `GET /Payments`
//! (`PaymentType=="ACCRECPAYMENT"`) with
//! `where=… && Date>=DateTime(y, m, d) && Date<=DateTime(y, m, d)` (xero-api.md: lists filter with
//! `where` and page at 100 with `page=`). Pages are read until one holds fewer than 100 records;
//! every page goes through the client, within Xero's limits.
//!
//! The reference reconciliation matches on is what the sync posts and looks documents up by:
//! the document number (`InvoiceNumber`, `CreditNoteNumber`); a payment's `Reference`.
//! Xero allocates a payment to exactly one document, so a receipt never has money on account.

use chrono::{Datelike, NaiveDate};
use rust_decimal::Decimal;
use serde_json::Value;

use super::{client::XeroClient, model::ms_date};
use crate::{
    error::{Error, Result},
    money::parse_decimal,
    providers::{EntryKind, LedgerEntry},
};

/// Xero's page size for these lists.
const PAGE: usize = 100;

fn dt(d: NaiveDate) -> String {
    format!("DateTime({}, {:02}, {:02})", d.year(), d.month(), d.day())
}

fn amount(v: &Value, field: &str, what: &str) -> Result<Option<Decimal>> {
    match v.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => parse_decimal(&n.to_string()).map(Some),
        Some(Value::String(s)) => parse_decimal(s).map(Some),
        Some(other) => Err(format!("`{other}` is not an amount")),
    }
    .map_err(|e| Error::internal(format!("Xero {what}: {field}: {e}")))
}

fn text(v: &Value, field: &str) -> Option<String> {
    v.get(field).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned)
}

/// Every `kind` record dated `from..=to`.
pub(super) async fn list_entries(
    client: &XeroClient,
    kind: EntryKind,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<LedgerEntry>> {
    let (path, envelope, filter) = match kind {
        EntryKind::Invoice => ("/Invoices", "Invoices", "Type==\"ACCREC\""),
        EntryKind::CreditNote => ("/CreditNotes", "CreditNotes", "Type==\"ACCRECCREDIT\""),
        EntryKind::Payment => ("/Payments", "Payments", "PaymentType==\"ACCRECPAYMENT\""),
    };
    let filter = format!("{filter} && Date>={} && Date<={}", dt(from), dt(to));
    let mut out = Vec::new();
    for page in 1..=10_000u32 {
        let v: Value = client.get(path, &[("where", filter.clone()), ("page", page.to_string())]).await?;
        let items = v.get(envelope).and_then(Value::as_array).cloned().unwrap_or_default();
        let n = items.len();
        for item in items {
            out.push(entry(kind, &item, path)?);
        }
        if n < PAGE {
            return Ok(out);
        }
    }
    Err(Error::internal(format!("{path}: more than 10,000 pages")))
}

fn entry(kind: EntryKind, v: &Value, path: &str) -> Result<LedgerEntry> {
    let (id_field, number_field) = match kind {
        EntryKind::Invoice => ("InvoiceID", "InvoiceNumber"),
        EntryKind::CreditNote => ("CreditNoteID", "CreditNoteNumber"),
        EntryKind::Payment => ("PaymentID", "Reference"),
    };
    let id = text(v, id_field).ok_or_else(|| Error::internal(format!("Xero {path}: a record has no {id_field}")))?;
    let what = format!("{path} {id}");
    let date = match v.get("Date").and_then(Value::as_str) {
        Some(d) => Some(ms_date(d).ok_or_else(|| Error::internal(format!("Xero {what}: Date `{d}` is not a date")))?),
        None => None,
    };
    let status = text(v, "Status").unwrap_or_default();
    let voided = matches!(status.as_str(), "VOIDED" | "DELETED");
    Ok(match kind {
        EntryKind::Invoice | EntryKind::CreditNote => LedgerEntry {
            kind,
            reference: text(v, number_field),
            number: text(v, number_field),
            date,
            currency: text(v, "CurrencyCode"),
            net: amount(v, "SubTotal", &what)?,
            vat: amount(v, "TotalTax", &what)?,
            gross: amount(v, "Total", &what)?.ok_or_else(|| Error::internal(format!("Xero {what}: no Total")))?,
            unallocated: Decimal::ZERO,
            voided,
            id,
        },
        EntryKind::Payment => LedgerEntry {
            kind,
            reference: text(v, "Reference"),
            number: None,
            date,
            currency: v.get("Invoice").and_then(|i| text(i, "CurrencyCode")),
            net: None,
            vat: None,
            gross: amount(v, "Amount", &what)?.ok_or_else(|| Error::internal(format!("Xero {what}: no Amount")))?,
            unallocated: Decimal::ZERO,
            voided,
            id,
        },
    })
}
