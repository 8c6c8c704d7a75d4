//! Pure transforms: canonical entity + policy + reference data (+ the Sage ids it depends on) →
//! the exact Sage v3.1 request that books it. No `&self`, no clock, no network.
//!
//! Follow one invoice: [`sales_invoice`] plans it ([`crate::plan::plan_invoice`]: arithmetic,
//! tax routing, domestic rates), then [`document_body`] turns the plan into Sage's shape, applying
//! every transform-side quirk workaround (docs/QUIRKS.md):
//!
//! - **Unit prices with 2 decimals** (sage-api.md 3.6): Sage keeps 2 decimals and books
//!   `round(qty × unit_price) − discount`. When Magento's 2-decimal unit price times the quantity
//!   does not reach the line's net (a tax-inclusive store: 3 × 8.33 = 24.99 for a row of 25.00),
//!   the unit price is rounded *up* (`8.34`) and the excess shown as discount (`0.02`), so the
//!   quantity stays right for stock and the net is exact.
//! - **Explicit tax per line** (Q5) and `currency_tax_amount` on every line (Q1).
//! - **Shipping panel** (Q6/Q7): Sage recomputes shipping tax as `round(net × rate)`. A zero tax
//!   gets a 0 % rate (Byte8's `GB_ZERO` rule). When Sage's recomputation would differ from
//!   Magento's shipping tax by even a penny (Magento's delta rounding, a half-penny net), or the
//!   rate's percentage is unknown, shipping is posted as an ordinary line carrying Magento's exact
//!   tax (`shipping_as_line`). Every line's tax is then exactly what Magento charged: a penny is
//!   never moved onto a product line (which would misstate that line's VAT even though the total
//!   matched). Sage's total equals Magento's `grand_total`, which [`expected_total`] checks before
//!   anything is returned.
//! - **Both addresses** always (Q2), **HTML entities decoded** (Q4), **length limits** truncated
//!   with the full values kept in the notes (Q8), **exchange rate** only for non-base currencies
//!   (Q6), **reference prefix** never doubled (P14), Sage's **idempotency id** derived from the
//!   event's key.
//!
//! # Exchange-rate direction
//!
//! Magento converts by multiplication, `order = base × base_to_order_rate` (tax.md 4.4, checked in
//! Magento's code). Byte8 sends Sage `exchange_rate = 1 / base_to_order_rate` — base units per unit
//! of the document currency — and reports from its live integration that Sage then derives the
//! base-currency mirrors itself (byte8-spec.md 9 Q6a); tax.md 4.2 reads the same direction from
//! that behaviour. This crate does the same, with 10 decimals rounded half up, and omits the rate
//! when the document is in the base currency.
//!
//! Magento's rate converts from *Magento's* base currency; it is sent only when that is Sage's
//! base currency ([`plan::ledger_rate`]: known from the payload's `base_currency`, else inferred
//! from a rate of 1 between different currencies). When it is not — or Magento sent no rate — no
//! correct rate can be derived from Magento's data, and a Sage document without one is booked at
//! 1 (sage-api.md 3.3: `exchange_rate` defaults to 1): the document fails as `validation` on
//! `base_to_order_rate`, naming both currencies, and nothing is posted.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use super::model::{
    AllocatedArtefact, ContactAllocationBody, ContactBody, ContactPaymentBody, DocumentBody, DocumentLine, ItemBody,
    PostContact, PostContactAllocation, PostContactPayment, PostProduct, PostSalesCreditNote, PostSalesInvoice,
    PostService, PostStockItem, PostStockMovement, SageAddress, SageContactPerson, SalesPrice, SalesRate,
    StockMovementBody,
};
use crate::{
    canonical::{
        Address, AddressKind, MagentoContact, MagentoCreditMemo, MagentoInvoice, MagentoPayment, MagentoProduct,
    },
    error::{Error, Result},
    identity,
    money::{Currency, RoundingPolicy, format_money, round_money},
    plan::{self, DocumentAddresses, DocumentKind, DocumentPlan, PlanWarning},
    policy::{NamePriority, SyncPolicy},
    providers::{ItemKind, ItemLink},
    reference::{ReferenceData, TaxRate},
    tax::{self, TaxTreatment},
};

/// Sage's length limits (sage-api.md 3.5, from the spec's read models).
pub mod limits {
    /// Contact name.
    pub const CONTACT_NAME: usize = 100;
    /// Contact notes.
    pub const CONTACT_NOTES: usize = 4000;
    /// Contact person name, telephone.
    pub const PERSON_FIELD: usize = 50;
    /// E-mail.
    pub const EMAIL: usize = 100;
    /// Address lines, city, region, address name.
    pub const ADDRESS_LINE: usize = 50;
    /// The longest postcode Sage accepts (`postal_code`, 10 characters).
    pub const POSTAL_CODE: usize = 10;
    /// Invoice / credit note / payment reference.
    pub const DOCUMENT_REFERENCE: usize = 25;
    /// Invoice / credit note notes.
    pub const DOCUMENT_NOTES: usize = 2000;
    /// Product / service item code and description.
    pub const ITEM_FIELD: usize = 255;
    /// Stock item code.
    pub const STOCK_ITEM_CODE: usize = 30;
    /// Product notes.
    pub const ITEM_NOTES: usize = 500;
    /// Stock movement details.
    pub const MOVEMENT_DETAILS: usize = 50;
    /// Void reason.
    pub const VOID_REASON: usize = 200;
}

/// A transformed request with what a reviewer should know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transformed<T> {
    /// The request body.
    pub request: T,
    /// Notes for the audit trail (`code: detail`).
    pub notes: Vec<String>,
}

/// The Sage ids a document depends on.
#[derive(Debug, Clone, Copy)]
pub struct DocumentLinks<'a> {
    /// The contact (per customer and currency, or the B2C fallback).
    pub contact_id: &'a str,
    /// Items by SKU, when products sync.
    pub items: &'a BTreeMap<String, ItemLink>,
    /// The event's idempotency key, from which Sage's `idempotency_id` is derived.
    pub idempotency_key: Option<&'a str>,
}

/// Sage's native idempotency id for a request: 32 lower-case hex characters (a hyphenless GUID)
/// derived from SHA-256 of `purpose` and the event's key, so that a retry after a crash sends the
/// same id and a different request kind never reuses it (`IdempotencyResourceMismatch`).
pub fn idempotency_id(key: &str, purpose: &str) -> String {
    let digest = Sha256::digest(format!("byte8-ledger:{purpose}:{key}").as_bytes());
    hex::encode(&digest[..16])
}

/// Keeps text within Sage's limits and remembers what it shortened.
#[derive(Debug, Default)]
struct Fitter {
    shortened: Vec<String>,
}

impl Fitter {
    fn fit(&mut self, path: &str, value: &str, max: usize) -> String {
        let value = value.trim();
        if value.chars().count() <= max {
            return value.to_owned();
        }
        self.shortened.push(format!("{path}: {value}"));
        value.chars().take(max).collect::<String>().trim_end().to_owned()
    }

    fn opt(&mut self, path: &str, value: Option<&str>, max: usize) -> Option<String> {
        value.map(str::trim).filter(|v| !v.is_empty()).map(|v| self.fit(path, v, max))
    }

    /// Notes: the given lines plus the full values of shortened fields, within `max`.
    fn notes(self, mut lines: Vec<String>, max: usize) -> Option<String> {
        if !self.shortened.is_empty() {
            lines.push(format!("Full values shortened to Sage's limits: {}", self.shortened.join("; ")));
        }
        let text = lines.join("\n");
        if text.is_empty() { None } else { Some(text.chars().take(max).collect()) }
    }
}

/// Fits a document reference into Sage's 25 characters (see [`plan::fit_reference`]).
pub fn fit_reference(reference: &str, increment_id: &str) -> String {
    plan::fit_reference(reference, increment_id, limits::DOCUMENT_REFERENCE)
}

fn sage_address(a: &Address, path: &str, f: &mut Fitter) -> SageAddress {
    let line1 = a.street.first().map(String::as_str);
    let rest: Vec<&str> = a.street.iter().skip(1).map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
    let line2 = (!rest.is_empty()).then(|| rest.join(", "));
    SageAddress {
        address_line_1: f.opt(&format!("{path}.address_line_1"), line1, limits::ADDRESS_LINE),
        address_line_2: f.opt(&format!("{path}.address_line_2"), line2.as_deref(), limits::ADDRESS_LINE),
        city: f.opt(&format!("{path}.city"), Some(&a.city), limits::ADDRESS_LINE),
        region: f.opt(&format!("{path}.region"), a.region.as_deref(), limits::ADDRESS_LINE),
        postal_code: f.opt(&format!("{path}.postal_code"), a.postcode.as_deref(), limits::POSTAL_CODE),
        country_id: Some(a.country_id.clone()),
        ..SageAddress::default()
    }
}

/// The id of the business's zero rate: `GB_ZERO` for UK businesses (a Sage system rate), else a
/// 0 % rate found in the reference data.
///
/// # Errors
/// [`Error::NotFound`] when the business has no zero rate.
pub fn zero_rate_id(reference: &ReferenceData) -> Result<String> {
    if reference.tax_rate("GB_ZERO").is_some() || reference.business.country == "GB" {
        return Ok("GB_ZERO".to_owned());
    }
    tax::zero_rate(&reference.tax_rates)
        .map(|r| r.id.clone())
        .ok_or_else(|| Error::NotFound { what: "zero tax rate of the Sage business".into(), id: "0 %".into() })
}

/// The id of the business's "no tax" rate (outside the scope of VAT): `GB_NO_TAX` for UK
/// businesses, else a rate found by name, else the zero rate.
///
/// # Errors
/// As [`zero_rate_id`].
pub fn no_tax_rate_id(reference: &ReferenceData) -> Result<String> {
    if reference.tax_rate("GB_NO_TAX").is_some() || reference.business.country == "GB" {
        return Ok("GB_NO_TAX".to_owned());
    }
    match tax::no_tax_rate(&reference.tax_rates) {
        Some(r) => Ok(r.id.clone()),
        None => zero_rate_id(reference),
    }
}

/// The header `exchange_rate` of a document (see the module docs), or `None` to omit it.
pub fn exchange_rate(currency: Currency, base: Currency, base_to_order_rate: Option<Decimal>) -> Option<Decimal> {
    if currency == base {
        return None;
    }
    match base_to_order_rate {
        Some(r) if r > Decimal::ZERO && r != Decimal::ONE => {
            Some(RoundingPolicy::HalfUp.round(Decimal::ONE / r, 10).normalize())
        }
        _ => None,
    }
}

/// Unit price and discount that make Sage book exactly `net` for `qty` (see the module docs).
pub fn price_and_discount(qty: Decimal, unit_price: Decimal, net: Decimal) -> (Decimal, Decimal) {
    let unit = round_money(unit_price);
    let gross = round_money(qty * unit);
    if gross >= net {
        return (unit, gross - net);
    }
    let unit = RoundingPolicy::Up.round(net / qty, 2);
    (unit, round_money(qty * unit) - net)
}

/// The total Sage computes from a document body: per line `round(qty × unit_price) − discount +
/// tax`, plus the shipping net and `round(net × rate)` for the shipping tax (Sage recomputes it).
///
/// # Errors
/// [`Error::Internal`] when the shipping rate's percentage is unknown while its net is not zero.
pub fn expected_total(body: &DocumentBody, rates: &[TaxRate]) -> Result<Decimal> {
    let lines: Decimal =
        body.lines().iter().map(|l| round_money(l.quantity * l.unit_price) - l.discount_amount + l.tax_amount).sum();
    let net = body.shipping_net_amount.unwrap_or_default();
    let ship_tax = match &body.shipping_tax_rate_id {
        None => Decimal::ZERO,
        Some(id) => {
            let pct = rates.iter().find(|r| &r.id == id).and_then(|r| r.percentage).or_else(|| {
                // Sage's UK system zero rates are 0 % whether or not the cache has them.
                matches!(id.as_str(), "GB_ZERO" | "GB_EXEMPT" | "GB_NO_TAX").then_some(Decimal::ZERO)
            });
            match pct {
                Some(p) => tax::rates::tax_at(net, p),
                None if net.is_zero() => Decimal::ZERO,
                None => return Err(Error::internal(format!("shipping tax rate {id} has no known percentage"))),
            }
        }
    };
    Ok(lines + net + ship_tax)
}

fn rate_pct(reference: &ReferenceData, id: &str) -> Option<Decimal> {
    reference
        .tax_rate(id)
        .and_then(|r| r.percentage)
        .or_else(|| matches!(id, "GB_ZERO" | "GB_EXEMPT" | "GB_NO_TAX").then_some(Decimal::ZERO))
}

/// Turns a plan into the header and lines of a Sage invoice or credit note.
///
/// # Errors
/// [`Error::Invalid`] for a missing ledger account, foreign VAT with no account to book it, or a
/// foreign currency on a business without multi-currency; [`Error::Internal`] if the request would
/// not add up to `grand_total` (never posted).
pub fn document_body(
    plan: &DocumentPlan,
    policy: &SyncPolicy,
    reference: &ReferenceData,
    links: &DocumentLinks<'_>,
    original_invoice_date: Option<NaiveDate>,
    extra_notes: Vec<String>,
) -> Result<Transformed<DocumentBody>> {
    let what = plan.kind.what();
    let base = reference.business.base_currency;
    if plan.currency != base && !reference.business.multi_currency {
        return Err(Error::invalid(
            what,
            "currency",
            format!(
                "{} documents need multi-currency, which is not enabled for this Sage business (base {})",
                plan.currency.code(),
                base.code()
            ),
        ));
    }
    let rate = match plan::ledger_rate(plan.currency, plan.base_currency, base, plan.base_to_order_rate) {
        plan::LedgerRate::BaseCurrency => None,
        plan::LedgerRate::Magento(r) => exchange_rate(plan.currency, base, Some(r)),
        plan::LedgerRate::NotConvertible(why) => {
            return Err(Error::invalid(
                what,
                "base_to_order_rate",
                format!(
                    "{why}; a Sage document in {} without a correct exchange_rate would be booked at 1 {} = 1 {}, so it is not posted",
                    plan.currency.code(),
                    plan.currency.code(),
                    base.code()
                ),
            ));
        }
    };
    let ledger = policy.default_ledger_account_id.clone().ok_or_else(|| {
        Error::invalid(
            "policy",
            "default_ledger_account_id",
            "required: invoice and credit note lines need a sales ledger account",
        )
    })?;
    let zero = zero_rate_id(reference)?;
    let eu_type = plan.eu_type.map(|t| t.as_str().to_owned());
    let mut notes_out = Vec::new();
    let mut f = Fitter::default();

    let mut lines: Vec<DocumentLine> = Vec::with_capacity(plan.lines.len() + 2);
    for l in &plan.lines {
        let (rate_id, tax) = match (l.treatment, &l.rate) {
            // A gift card sold: outside the scope of VAT, on the no-tax rate (the plan put it on
            // its liability account and refused any tax on it).
            _ if l.liability_account.is_some() => (no_tax_rate_id(reference)?, Decimal::ZERO),
            (TaxTreatment::Domestic, Some(r)) => (r.id.clone(), l.tax),
            (TaxTreatment::Domestic, None) => {
                return Err(Error::internal(format!("domestic line {} has no tax rate", l.index)));
            }
            (TaxTreatment::DestinationVat, _) => (zero.clone(), Decimal::ZERO),
            (_, _) if !l.tax.is_zero() => {
                return Err(Error::internal(format!("zero-rated line {} carries tax {}", l.index, l.tax)));
            }
            _ => (zero.clone(), Decimal::ZERO),
        };
        let (unit_price, discount) = price_and_discount(l.qty, l.unit_price, l.net);
        let item = links.items.get(&l.sku);
        lines.push(DocumentLine {
            description: l.description.clone(),
            ledger_account_id: l.liability_account.clone().unwrap_or_else(|| ledger.clone()),
            quantity: l.qty,
            unit_price,
            discount_amount: discount,
            tax_rate_id: rate_id,
            tax_amount: tax,
            currency_tax_amount: tax,
            unit_price_includes_tax: false,
            eu_goods_services_type_id: eu_type.clone(),
            product_id: item.filter(|i| i.kind != ItemKind::Service).map(|i| i.id.clone()),
            service_id: item.filter(|i| i.kind == ItemKind::Service).map(|i| i.id.clone()),
        });
    }

    // Shipping.
    let s = &plan.shipping;
    let mut shipping_net = None;
    let mut shipping_rate = None;
    let mut shipping_tax = None;
    if !s.net.is_zero() || !s.tax.is_zero() {
        let as_line = |rate_id: String, tax: Decimal| DocumentLine {
            description: "Shipping".to_owned(),
            ledger_account_id: ledger.clone(),
            quantity: Decimal::ONE,
            unit_price: s.net,
            discount_amount: Decimal::ZERO,
            tax_rate_id: rate_id,
            tax_amount: tax,
            currency_tax_amount: tax,
            unit_price_includes_tax: false,
            eu_goods_services_type_id: eu_type.clone(),
            product_id: None,
            service_id: None,
        };
        match (s.treatment, &s.rate) {
            (TaxTreatment::Domestic, Some(rate)) => {
                let pct = rate.percentage.or_else(|| rate_pct(reference, &rate.id));
                let mut panel = None;
                if let Some(p) = pct {
                    let sage_tax = tax::rates::tax_at(s.net, p);
                    // Sage recomputes the panel's tax: use the panel only when that gives exactly
                    // what Magento charged. Otherwise shipping becomes an ordinary line carrying
                    // Magento's own tax; no penny ever moves onto a product line.
                    if sage_tax == s.tax {
                        panel = Some(sage_tax);
                    }
                }
                match panel {
                    Some(t) => {
                        shipping_net = Some(s.net);
                        shipping_rate = Some(rate.id.clone());
                        shipping_tax = Some(t);
                    }
                    None => {
                        notes_out.push(format!(
                            "shipping_as_line: Sage would recompute shipping tax on {} as {}, Magento charged {}; shipping is an ordinary line with Magento's tax",
                            s.net,
                            pct.map(|p| tax::rates::tax_at(s.net, p).to_string()).unwrap_or_else(|| "unknown (rate percentage not known)".into()),
                            s.tax
                        ));
                        lines.push(as_line(rate.id.clone(), s.tax));
                    }
                }
            }
            (TaxTreatment::Domestic, None) => {
                return Err(Error::internal("domestic shipping has no tax rate"));
            }
            _ => {
                // Zero-rated shipping (collected foreign VAT on shipping joins the liability line).
                shipping_net = Some(s.net);
                shipping_rate = Some(zero.clone());
                shipping_tax = Some(Decimal::ZERO);
            }
        }
    }

    // VAT Magento collected for another country: a liability, never dropped.
    let foreign = plan.foreign_vat();
    if !foreign.is_zero() {
        let Some(account) = policy.foreign_vat_ledger_account_id.clone() else {
            let lines_taxed: Vec<String> = plan
                .lines
                .iter()
                .filter(|l| l.treatment == TaxTreatment::DestinationVat)
                .map(|l| format!("lines[{}]", l.index))
                .collect();
            return Err(Error::invalid(
                what,
                "foreign_vat_ledger_account_id",
                format!(
                    "Magento collected {} of {} VAT (OSS/IOSS) on {}; set foreign_vat_ledger_account_id to a liability account so it is booked: the crate never drops collected tax",
                    format_money(foreign),
                    plan.destination_country.as_deref().unwrap_or("foreign"),
                    if lines_taxed.is_empty() { "shipping".to_owned() } else { lines_taxed.join(", ") }
                ),
            ));
        };
        lines.push(DocumentLine {
            description: format!(
                "VAT collected for {} (OSS/IOSS)",
                plan.destination_country.as_deref().unwrap_or("another country")
            ),
            ledger_account_id: account,
            quantity: Decimal::ONE,
            unit_price: foreign,
            discount_amount: Decimal::ZERO,
            tax_rate_id: no_tax_rate_id(reference)?,
            tax_amount: Decimal::ZERO,
            currency_tax_amount: Decimal::ZERO,
            unit_price_includes_tax: false,
            eu_goods_services_type_id: eu_type.clone(),
            product_id: None,
            service_id: None,
        });
        notes_out.push(format!(
            "foreign_vat_collected: {} booked to the foreign VAT liability account",
            format_money(foreign)
        ));
    }

    // Credit memo adjustments: as the policy's `adjustment_tax_treatment` split them (no tax by
    // default, as Magento records them, magento.md 5.7; or pro-rata parts with their VAT).
    for a in &plan.adjustments {
        let (rate_id, tax) = match &a.rate {
            Some(r) => (r.id.clone(), a.tax),
            None => (no_tax_rate_id(reference)?, Decimal::ZERO),
        };
        lines.push(DocumentLine {
            description: a.description.clone(),
            ledger_account_id: ledger.clone(),
            quantity: Decimal::ONE,
            unit_price: a.net,
            discount_amount: Decimal::ZERO,
            tax_rate_id: rate_id,
            tax_amount: tax,
            currency_tax_amount: tax,
            unit_price_includes_tax: false,
            eu_goods_services_type_id: eu_type.clone(),
            product_id: None,
            service_id: None,
        });
    }

    // Tenders (gift card, store credit, reward points): out of (invoice) or into (credit note)
    // their liability accounts, no VAT; revenue and VAT lines stay as Magento charged them.
    for t in &plan.tenders {
        lines.push(DocumentLine {
            description: t.description.clone(),
            ledger_account_id: t.account.clone(),
            quantity: Decimal::ONE,
            unit_price: -t.amount,
            discount_amount: Decimal::ZERO,
            tax_rate_id: no_tax_rate_id(reference)?,
            tax_amount: Decimal::ZERO,
            currency_tax_amount: Decimal::ZERO,
            unit_price_includes_tax: false,
            eu_goods_services_type_id: eu_type.clone(),
            product_id: None,
            service_id: None,
        });
        notes_out.push(format!("tender_booked: {} {} to {}", t.field, format_money(t.amount), t.account));
    }

    for w in &plan.warnings {
        notes_out.push(match w {
            PlanWarning::MixedEuTypesCoerced { used } => {
                format!("{}: every line set to {}", w.code(), used.as_str())
            }
            PlanWarning::Placed(p) => format!("{}: {p:?}", w.code()),
        });
    }

    let billing = plan.billing_address.as_ref().or(plan.shipping_address.as_ref());
    let delivery = plan.shipping_address.as_ref().or(plan.billing_address.as_ref());
    let main_address = billing.map(|a| sage_address(a, "main_address", &mut f)).unwrap_or_default();
    let delivery_address = delivery.map(|a| sage_address(a, "delivery_address", &mut f)).unwrap_or_default();
    let reference_text = fit_reference(&plan.reference, &plan.increment_id);
    if reference_text != plan.reference {
        f.shortened.push(format!("reference: {}", plan.reference));
    }
    let idempotency_id = links.idempotency_key.map(|k| {
        idempotency_id(k, if plan.kind == DocumentKind::Invoice { "sales_invoice" } else { "sales_credit_note" })
    });
    let body = DocumentBody {
        contact_id: links.contact_id.to_owned(),
        date: plan.date,
        original_invoice_date,
        reference: reference_text,
        notes: f.notes(extra_notes, limits::DOCUMENT_NOTES),
        currency_id: plan.currency.code().to_owned(),
        exchange_rate: rate,
        inverse_exchange_rate: None,
        main_address,
        delivery_address,
        shipping_net_amount: shipping_net,
        shipping_tax_rate_id: shipping_rate,
        shipping_tax_amount: shipping_tax,
        invoice_lines: (plan.kind == DocumentKind::Invoice).then(|| lines.clone()),
        credit_note_lines: (plan.kind == DocumentKind::CreditNote).then_some(lines),
        idempotency_id,
    };
    let sage_total = expected_total(&body, &reference.tax_rates)?;
    if sage_total != plan.grand_total {
        return Err(Error::internal(format!(
            "{what} {}: Sage would total {sage_total}, Magento's grand_total is {}; not posted",
            plan.increment_id, plan.grand_total
        )));
    }
    Ok(Transformed { request: body, notes: notes_out })
}

/// `invoice.created` → `POST /sales_invoices`.
///
/// # Errors
/// As [`crate::plan::plan_invoice`] and [`document_body`].
pub fn sales_invoice(
    invoice: &MagentoInvoice,
    policy: &SyncPolicy,
    reference: &ReferenceData,
    links: &DocumentLinks<'_>,
) -> Result<Transformed<PostSalesInvoice>> {
    let plan = plan::plan_invoice(invoice, policy, reference)?;
    let notes = invoice
        .po_number
        .as_deref()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|po| vec![format!("Purchase Order: {po}")])
        .unwrap_or_default();
    let t = document_body(&plan, policy, reference, links, None, notes)?;
    Ok(Transformed { request: PostSalesInvoice { sales_invoice: t.request }, notes: t.notes })
}

/// `creditmemo.created` → `POST /sales_credit_notes`. The contact must be the credited invoice's
/// (Sage allocates only within one contact). `original_invoice_date` is the invoice's date, else
/// the credit memo's own (a refund created from the order).
///
/// # Errors
/// As [`sales_invoice`].
pub fn sales_credit_note(
    memo: &MagentoCreditMemo,
    policy: &SyncPolicy,
    reference: &ReferenceData,
    links: &DocumentLinks<'_>,
    invoice_addresses: Option<&DocumentAddresses>,
) -> Result<Transformed<PostSalesCreditNote>> {
    let plan = plan::plan_credit_memo(memo, policy, reference, invoice_addresses)?;
    let original = policy.local_date(memo.invoice_created_at.unwrap_or(memo.created_at), &reference.business.country);
    let linkage = match (&memo.invoice_increment_id, memo.invoice_id) {
        (Some(inc), _) => format!("Credit for invoice {inc}"),
        (None, Some(id)) => format!("Credit for invoice {id}"),
        (None, None) => format!("Credit memo {} (refund from the order, no invoice)", memo.increment_id),
    };
    let text = match memo.reason.as_deref().map(str::trim).filter(|r| !r.is_empty()) {
        Some(reason) => format!("{linkage} — {reason}"),
        None => linkage,
    };
    let t = document_body(&plan, policy, reference, links, Some(original), vec![text])?;
    Ok(Transformed { request: PostSalesCreditNote { sales_credit_note: t.request }, notes: t.notes })
}

/// `customer.upserted` (or a document's buyer) → `POST /contacts` for one currency.
///
/// `reference_code` is the reference chosen from [`identity::reference_candidates`]. Name priority
/// (P15): `Company` makes the company the contact and the person its main contact person;
/// `Person` makes the person the contact and puts the company on the main address's name. Non-base
/// variants end in ` (EUR)`. Sage requires an e-mail on every contact; it rides on the main
/// contact person (the 2022 spec has no top-level e-mail on `postContacts`).
pub fn contact(
    contact: &MagentoContact,
    currency: Currency,
    reference_code: &str,
    policy: &SyncPolicy,
    reference: &ReferenceData,
    idempotency_key: Option<&str>,
) -> Transformed<PostContact> {
    let base = reference.business.base_currency;
    let mut f = Fitter::default();
    let person = contact.person_name();
    let company = contact.company_name().map(plan::decode_entities);
    let (name, person_on_card, company_on_address) = match (policy.customer_name_priority, &company, &person) {
        (NamePriority::Company, Some(c), p) => (c.clone(), p.clone(), None),
        (NamePriority::Person, c, Some(p)) => (p.clone(), Some(p.clone()), c.clone()),
        (_, None, Some(p)) => (p.clone(), Some(p.clone()), None),
        (_, Some(c), None) => (c.clone(), None, None),
        (_, None, None) => (contact.email.trim().to_owned(), None, None),
    };
    if name.chars().count() + if currency == base { 0 } else { 6 } > limits::CONTACT_NAME {
        f.shortened.push(format!("name: {name}"));
    }
    let name = identity::display_name(&name, currency, base, limits::CONTACT_NAME);
    let billing = contact.address(AddressKind::Billing).or(contact.addresses.first());
    let shipping = contact.address(AddressKind::Shipping);
    let mut main_address = billing.map(|a| sage_address(a, "main_address", &mut f));
    if let (Some(addr), Some(c)) = (main_address.as_mut(), &company_on_address) {
        addr.name = Some(f.fit("main_address.name", c, limits::ADDRESS_LINE));
    }
    let delivery_address = shipping.map(|a| sage_address(a, "delivery_address", &mut f));
    let phone = contact.phone.as_deref().or_else(|| billing.and_then(|b| b.telephone.as_deref()));
    let person_card = SageContactPerson {
        name: f.opt("main_contact_person.name", person_on_card.as_deref(), limits::PERSON_FIELD),
        email: f.opt("main_contact_person.email", Some(&contact.email), limits::EMAIL),
        telephone: f.opt("main_contact_person.telephone", phone, limits::PERSON_FIELD),
        is_main_contact: Some(true),
    };
    let body = ContactBody {
        name,
        contact_type_ids: vec!["CUSTOMER".to_owned()],
        reference: Some(reference_code.to_owned()),
        currency_id: (currency != base).then(|| currency.code().to_owned()),
        notes: f.notes(Vec::new(), limits::CONTACT_NOTES),
        // Issue 18: the VAT number the invoice must show for EU B2B supplies.
        tax_number: contact.vat_number(),
        main_address,
        delivery_address,
        main_contact_person: Some(person_card),
        idempotency_id: idempotency_key.map(|k| idempotency_id(&format!("{k}:{reference_code}"), "contact")),
    };
    Transformed { request: PostContact { contact: body }, notes: Vec::new() }
}

/// The B2C fallback contact of a currency (byte8-spec.md 7.5): the policy's name and e-mail, no
/// address (buyers' addresses ride on each document).
pub fn fallback_contact(
    policy: &SyncPolicy,
    currency: Currency,
    reference_code: &str,
    reference: &ReferenceData,
) -> PostContact {
    let b = &policy.b2c_consolidation;
    let base = reference.business.base_currency;
    PostContact {
        contact: ContactBody {
            name: identity::display_name(&b.fallback_contact_name, currency, base, limits::CONTACT_NAME),
            contact_type_ids: vec!["CUSTOMER".to_owned()],
            reference: Some(reference_code.to_owned()),
            currency_id: (currency != base).then(|| currency.code().to_owned()),
            notes: None,
            tax_number: None,
            main_address: None,
            delivery_address: None,
            main_contact_person: Some(SageContactPerson {
                name: None,
                email: Some(b.fallback_contact_email.trim().chars().take(limits::EMAIL).collect()),
                telephone: None,
                is_main_contact: Some(true),
            }),
            idempotency_id: Some(idempotency_id(reference_code, "fallback_contact")),
        },
    }
}

/// What a payment is allocated against.
#[derive(Debug, Clone, Copy)]
pub struct PaymentLinks<'a> {
    /// The invoice's contact.
    pub contact_id: &'a str,
    /// The Sage invoice.
    pub invoice_id: &'a str,
    /// The bank account chosen by the decision tree.
    pub bank_account_id: &'a str,
    /// The invoice's exchange rate (the payment reuses it).
    pub exchange_rate: Option<Decimal>,
    /// The payment's date: the store's local date of `captured_at` ([`SyncPolicy::local_date`]).
    pub date: NaiveDate,
    /// What is still outstanding on the invoice, when known; the allocation never exceeds it.
    pub outstanding: Option<Decimal>,
    /// The event's idempotency key.
    pub idempotency_key: Option<&'a str>,
}

/// `invoice.paid` → one `POST /contact_payments` (`CUSTOMER_RECEIPT`) carrying its allocation
/// inline: the invoice's contact, currency and exchange rate; the amount allocated up to what is
/// outstanding, the rest left on account.
pub fn contact_payment(payment: &MagentoPayment, policy: &SyncPolicy, links: &PaymentLinks<'_>) -> PostContactPayment {
    let allocate = links.outstanding.map_or(payment.amount, |o| o.min(payment.amount)).max(Decimal::ZERO);
    let reference = policy.document_reference(&payment.invoice_increment_id);
    PostContactPayment {
        contact_payment: ContactPaymentBody {
            transaction_type_id: "CUSTOMER_RECEIPT".to_owned(),
            contact_id: links.contact_id.to_owned(),
            bank_account_id: links.bank_account_id.to_owned(),
            date: links.date,
            total_amount: payment.amount,
            currency_id: payment.currency.code().to_owned(),
            exchange_rate: links.exchange_rate,
            reference: Some(fit_reference(&reference, &payment.invoice_increment_id)),
            allocated_artefacts: if allocate.is_zero() {
                Vec::new()
            } else {
                vec![AllocatedArtefact { artefact_id: links.invoice_id.to_owned(), amount: allocate }]
            },
            idempotency_id: links.idempotency_key.map(|k| idempotency_id(k, "contact_payment")),
        },
    }
}

/// `POST /contact_allocations` (`CUSTOMER_ALLOCATION`) settling a credit note against its invoice
/// on their shared contact: the invoice positive, the credit note negative, netting to zero.
pub fn credit_note_allocation(
    contact_id: &str,
    invoice_id: &str,
    credit_note_id: &str,
    amount: Decimal,
    date: NaiveDate,
    idempotency_key: Option<&str>,
) -> PostContactAllocation {
    PostContactAllocation {
        contact_allocation: ContactAllocationBody {
            transaction_type_id: "CUSTOMER_ALLOCATION".to_owned(),
            contact_id: contact_id.to_owned(),
            date,
            allocated_artefacts: vec![
                AllocatedArtefact { artefact_id: invoice_id.to_owned(), amount },
                AllocatedArtefact { artefact_id: credit_note_id.to_owned(), amount: -amount },
            ],
            idempotency_id: idempotency_key.map(|k| idempotency_id(k, "contact_allocation")),
        },
    }
}

/// A credit note refunded as cash: one `POST /contact_payments` (`CUSTOMER_REFUND`) from the bank
/// account the invoice was paid into, on the credit note's contact and in its currency, carrying
/// its allocation to the credit note inline (sage-api.md 4.3, 4.4).
///
/// A choice where the docs are silent: the refund's `total_amount` and the credit note's
/// allocated amount are both positive (the money leaves the bank; a `CUSTOMER_REFUND` is the
/// mirror of a `CUSTOMER_RECEIPT`, whose allocations are positive), unlike a
/// `contact_allocations` request where credits are negative. The simulator refuses a negative
/// refund allocation so a sign slip is caught by the tests.
#[allow(clippy::too_many_arguments)]
pub fn credit_note_refund(
    contact_id: &str,
    credit_note_id: &str,
    bank_account_id: &str,
    amount: Decimal,
    date: NaiveDate,
    currency: Currency,
    exchange_rate: Option<Decimal>,
    reference: &str,
    idempotency_key: Option<&str>,
) -> PostContactPayment {
    PostContactPayment {
        contact_payment: ContactPaymentBody {
            transaction_type_id: "CUSTOMER_REFUND".to_owned(),
            contact_id: contact_id.to_owned(),
            bank_account_id: bank_account_id.to_owned(),
            date,
            total_amount: amount,
            currency_id: currency.code().to_owned(),
            exchange_rate,
            reference: Some(reference.chars().take(limits::DOCUMENT_REFERENCE).collect()),
            allocated_artefacts: vec![AllocatedArtefact { artefact_id: credit_note_id.to_owned(), amount }],
            idempotency_id: idempotency_key.map(|k| idempotency_id(k, "contact_refund")),
        },
    }
}

/// Which ledger item a product becomes (byte8-spec.md 6.5), or the skip reason: the
/// provider-neutral rule of [`crate::providers::types::item_kind`], kept here for Sage callers.
///
/// # Errors
/// `PRODUCT_TYPE_NOT_SUPPORTED` for the types that do not sync.
pub fn item_kind(product: &MagentoProduct, policy: &SyncPolicy) -> std::result::Result<ItemKind, &'static str> {
    crate::providers::types::item_kind(product, policy)
}

/// An item request of one of the three kinds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemRequest {
    /// `POST /products`.
    Product(PostProduct),
    /// `POST /services`.
    Service(PostService),
    /// `POST /stock_items`.
    StockItem(PostStockItem),
}

impl ItemRequest {
    /// The item body, whatever the kind.
    pub fn body(&self) -> &ItemBody {
        match self {
            Self::Product(p) => &p.product,
            Self::Service(s) => &s.service,
            Self::StockItem(s) => &s.stock_item,
        }
    }
}

/// `product.upserted` → a product, service or stock item: `item_code` = SKU (stock items keep 30
/// characters), `description` = name with entities decoded, sales price = `price` in the base
/// currency, purchase ledger account = P11 (Sage validates it even for sales-only items, Q18).
/// The stock level is never set here: it changes only through stock movements.
///
/// # Errors
/// [`Error::Invalid`] when the sales or purchase ledger account is not configured.
pub fn item(
    product: &MagentoProduct,
    kind: ItemKind,
    policy: &SyncPolicy,
    idempotency_key: Option<&str>,
) -> Result<Transformed<ItemRequest>> {
    let sales = policy.default_ledger_account_id.clone().ok_or_else(|| {
        Error::invalid("policy", "default_ledger_account_id", "required: items need a sales ledger account")
    })?;
    let purchase = policy.default_purchase_ledger_account_id.clone().ok_or_else(|| {
        Error::invalid("policy", "default_purchase_ledger_account_id", "required: Sage validates it on every item")
    })?;
    let mut f = Fitter::default();
    let code_max = if kind == ItemKind::StockItem { limits::STOCK_ITEM_CODE } else { limits::ITEM_FIELD };
    let name = plan::decode_entities(product.name.trim());
    let description = if name.is_empty() { product.sku.clone() } else { name };
    let price = product.price.unwrap_or_default();
    let body = ItemBody {
        item_code: f.fit("item_code", &product.sku, code_max),
        description: f.fit("description", &description, limits::ITEM_FIELD),
        sales_ledger_account_id: sales,
        purchase_ledger_account_id: Some(purchase),
        notes: None,
        cost_price: product.cost,
        sales_prices: (kind != ItemKind::Service)
            .then(|| vec![SalesPrice { price_name: "Selling Price".to_owned(), price, price_includes_tax: false }]),
        sales_rates: (kind == ItemKind::Service)
            .then(|| vec![SalesRate { rate_name: "Rate".to_owned(), rate: price, rate_includes_tax: false }]),
        idempotency_id: idempotency_key.map(|k| idempotency_id(k, kind.as_str())),
    };
    let body = ItemBody { notes: f.notes(Vec::new(), limits::ITEM_NOTES), ..body };
    let request = match kind {
        ItemKind::Product => ItemRequest::Product(PostProduct { product: body }),
        ItemKind::Service => ItemRequest::Service(PostService { service: body }),
        ItemKind::StockItem => ItemRequest::StockItem(PostStockItem { stock_item: body }),
    };
    Ok(Transformed { request, notes: Vec::new() })
}

/// The stock movement that makes Sage's quantity match Magento's (snapshot model: Magento is the
/// truth): a signed delta, the product's cost as cost price (else 0), `details` within 50
/// characters. `None` when the quantities already match.
pub fn stock_movement(
    stock_item_id: &str,
    product: &MagentoProduct,
    sage_quantity: Decimal,
    date: NaiveDate,
    idempotency_key: Option<&str>,
) -> Option<PostStockMovement> {
    let target = product.stock_qty?;
    let delta = target - sage_quantity;
    if delta.is_zero() {
        return None;
    }
    let tail = format!(" {}→{}", sage_quantity.normalize(), target.normalize());
    let room = limits::MOVEMENT_DETAILS.saturating_sub("Magento sync ".chars().count() + tail.chars().count());
    let sku: String = product.sku.chars().take(room).collect();
    let details: String = format!("Magento sync {sku}{tail}").chars().take(limits::MOVEMENT_DETAILS).collect();
    Some(PostStockMovement {
        stock_movement: StockMovementBody {
            stock_item_id: stock_item_id.to_owned(),
            date,
            quantity: delta,
            cost_price: product.cost.unwrap_or_default(),
            details,
            idempotency_id: idempotency_key.map(|k| {
                idempotency_id(&format!("{k}:{}:{}", sage_quantity.normalize(), target.normalize()), "stock_movement")
            }),
        },
    })
}

/// Kept for the public API: the reference of a document as Sage will hold it.
pub fn document_reference(policy: &SyncPolicy, increment_id: &str) -> String {
    fit_reference(&policy.document_reference(increment_id), increment_id)
}

#[cfg(test)]
mod tests;
