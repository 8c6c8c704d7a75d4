//! Reading back what the business holds for a period (reconciliation): `GET /sales_invoices`,
//! `GET /sales_credit_notes` and `GET /contact_payments` (`transaction_type_id=CUSTOMER_RECEIPT`)
//! with `from_date` / `to_date` (both inclusive, sage-api.md and the v3.1 OpenAPI list them on
//! all three), `attributes=all` and `$next` paging through the client, which paces every page
//! within the business's rate limit.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Deserialize;

use super::{
    client::SageClient,
    model::{Link, SageDocument},
};
use crate::{
    error::{Error, Result},
    money::serde_decimal_opt,
    providers::{EntryKind, LedgerEntry},
};

/// A receipt as `GET /contact_payments` lists it (the fields reconciliation reads).
#[derive(Debug, Deserialize)]
struct SagePaymentListed {
    id: String,
    #[serde(default)]
    displayed_as: Option<String>,
    #[serde(default)]
    reference: Option<String>,
    #[serde(default)]
    date: Option<String>,
    #[serde(default)]
    currency: Option<Link>,
    #[serde(default)]
    transaction_type: Option<Link>,
    #[serde(default, with = "serde_decimal_opt")]
    total_amount: Option<Decimal>,
    #[serde(default)]
    allocated_artefacts: Vec<AllocatedArtefact>,
    #[serde(default)]
    payment_on_account: Option<OnAccount>,
    #[serde(default)]
    deleted_at: Option<String>,
}

#[derive(Debug, Deserialize)]
struct AllocatedArtefact {
    #[serde(default, with = "serde_decimal_opt")]
    amount: Option<Decimal>,
}

#[derive(Debug, Deserialize)]
struct OnAccount {
    #[serde(default, with = "serde_decimal_opt")]
    outstanding_amount: Option<Decimal>,
}

fn day(text: Option<&str>, what: &str) -> Result<Option<NaiveDate>> {
    text.map(|t| {
        NaiveDate::parse_from_str(t.get(..10).unwrap_or(t), "%Y-%m-%d")
            .map_err(|e| Error::internal(format!("Sage {what}: date `{t}` is not YYYY-MM-DD: {e}")))
    })
    .transpose()
}

/// Every `kind` record dated `from..=to`.
pub(super) async fn list_entries(
    client: &SageClient,
    kind: EntryKind,
    from: NaiveDate,
    to: NaiveDate,
) -> Result<Vec<LedgerEntry>> {
    let range = [("from_date", from.format("%Y-%m-%d").to_string()), ("to_date", to.format("%Y-%m-%d").to_string())];
    match kind {
        EntryKind::Invoice | EntryKind::CreditNote => {
            let path = if kind == EntryKind::Invoice { "/sales_invoices" } else { "/sales_credit_notes" };
            let docs: Vec<SageDocument> = client.get_all(path, &range).await?;
            docs.into_iter()
                .map(|d| {
                    let voided =
                        d.status.as_ref().is_some_and(|s| s.id.eq_ignore_ascii_case("VOID")) || d.void_reason.is_some();
                    Ok(LedgerEntry {
                        kind,
                        date: day(d.date.as_deref(), path)?,
                        gross: d.total_amount.ok_or_else(|| {
                            Error::internal(format!("Sage {path}: document {} has no total_amount", d.id))
                        })?,
                        id: d.id,
                        reference: d.reference,
                        number: d.displayed_as,
                        currency: d.currency.map(|c| c.id),
                        net: d.net_amount,
                        vat: d.tax_amount,
                        unallocated: Decimal::ZERO,
                        voided,
                    })
                })
                .collect()
        }
        EntryKind::Payment => {
            let mut query = range.to_vec();
            query.push(("transaction_type_id", "CUSTOMER_RECEIPT".into()));
            let listed: Vec<SagePaymentListed> = client.get_all("/contact_payments", &query).await?;
            listed
                .into_iter()
                // The filter is Sage's; a refund is never taken for a receipt.
                .filter(|p| p.transaction_type.as_ref().is_none_or(|t| t.id == "CUSTOMER_RECEIPT"))
                .map(|p| {
                    let gross = p.total_amount.ok_or_else(|| {
                        Error::internal(format!("Sage /contact_payments: payment {} has no total_amount", p.id))
                    })?;
                    let allocated: Decimal = p.allocated_artefacts.iter().filter_map(|a| a.amount).sum();
                    // Money on account is what Sage says is left; without that, what the
                    // allocations do not cover.
                    let unallocated = p
                        .payment_on_account
                        .as_ref()
                        .and_then(|o| o.outstanding_amount)
                        .unwrap_or(gross - allocated)
                        .max(Decimal::ZERO);
                    Ok(LedgerEntry {
                        kind,
                        date: day(p.date.as_deref(), "/contact_payments")?,
                        voided: p.deleted_at.is_some(),
                        id: p.id,
                        reference: p.reference,
                        number: p.displayed_as,
                        currency: p.currency.map(|c| c.id),
                        net: None,
                        vat: None,
                        gross,
                        unallocated,
                    })
                })
                .collect()
        }
    }
}
