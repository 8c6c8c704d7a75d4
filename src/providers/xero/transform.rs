//! Pure transforms: canonical entity + policy + reference data (+ the Xero ids it depends on) →
//! the exact Xero request that books it. No `&self`, no clock, no network.
//!
//! Follow one invoice: [`invoice`] plans it with the provider-neutral plan
//! ([`crate::plan::plan_invoice`]: arithmetic, tax routing, the policy's domestic rates), then
//! [`document`] turns the plan into Xero's shape:
//!
//! - **Tax types** come from the crate's tax router: a domestic line takes the policy's rate id
//!   (which is a Xero `TaxType`), every other treatment the type [`TaxTypes::resolve`] finds
//!   among the organisation's own tax rates (UK: `ZERORATEDOUTPUT` for exports and services
//!   outside the scope, `ECZROUTPUT` / `ECZROUTPUTSERVICES` for intra-EU reverse-charge
//!   supplies, `NONE` for what is not a supply at all).
//!
//!   | domestic rate (`tax_rate_map`) | UK `TaxType` | Xero's name |
//!   |---|---|---|
//!   | 20 % | `OUTPUT2` | 20% (VAT on Income) |
//!   | 5 % | `RROUTPUT` | 5% (VAT on Income) |
//!   | 0 %, zero-rated goods | `ZERORATEDOUTPUT` | Zero Rated Income |
//!   | 0 %, exempt supplies | `EXEMPTOUTPUT` | Exempt Income |
//!
//!   The map is keyed by the rate, so a shop books its 0 % lines either as zero-rated
//!   (`{"0": "ZERORATEDOUTPUT"}`) or as exempt (`{"0": "EXEMPTOUTPUT"}`), not both; any active
//!   revenue tax type of the organisation is accepted (custom `TAX00n` rates too), and
//!   [`SyncPolicy::validate_against`] refuses a policy naming one the organisation does not have.
//! - **Xero computes tax** per line from the tax type and the document's `LineAmountTypes`,
//!   rounding each line half up to 2 decimals (xero-api.md 8). [`document`] computes what Xero
//!   would book for every line under both `Exclusive` and `Inclusive`, picks the mode in which
//!   Xero's own arithmetic reproduces Magento's tax on more lines (ties: `Exclusive`), and sends
//!   an explicit `TaxAmount` only on the lines where Xero's computation would still differ. The
//!   request's total, computed as Xero computes it ([`xero_total`]), must equal Magento's
//!   `grand_total` to the penny, or nothing is returned.
//! - **Shipping** is an ordinary line (Xero has no shipping panel), routed like the goods.
//! - **Line amounts**: Magento's 2-decimal unit price plus a `DiscountAmount` on invoices when
//!   that reproduces the row's net; otherwise a 4-decimal unit amount (`unitdp=4`); otherwise
//!   quantity 1 for the row's amount, with the real quantity in the description (Xero's own
//!   advice for prices finer than 4 decimals, \[ROUND\]). Credit notes carry no discounts (Q12).
//! - **Currency**: `CurrencyCode`, and `CurrencyRate` = Magento's `base_to_order_rate` for a
//!   foreign document (see [`currency_rate`] for the direction).
//! - **Numbers**: `InvoiceNumber` / `CreditNoteNumber` = the prefixed increment id (the crate's
//!   document reference, unique per organisation for sales documents).
//!
//! # Choices where Byte8's Xero connector and the evidence disagree (byte8-xero-spec.md 13)
//!
//! | Byte8 | this crate | why |
//! |---|---|---|
//! | `LineAmountTypes=Exclusive` always, no `TaxAmount` (D9) | the mode that matches Magento's arithmetic, `TaxAmount` where Xero's per-line rounding would differ | Xero rounds tax per line; Magento's tax-inclusive stores compute tax from the gross: the totals would drift by pennies (\[ROUND\], xero-api.md 8) |
//! | `CurrencyRate` never sent (D13) | Magento's rate, 6 decimals | base-currency amounts must match Magento's `base_*`, not XE.com's rate of another moment |
//! | zero-rated shipping → `NONE` (quirk §3) | `ZERORATEDOUTPUT` | `NONE` is outside the VAT return; zero-rated sales belong in box 6 (tax.md 2.2) |
//! | unset tax type → `NONE`, unset account → omitted (D10) | both required from the policy | an AUTHORISED invoice needs account and tax type; `NONE` silently removes sales from the VAT return |
//! | Xero dedupes contacts on `ContactNumber` (D8) | look the number up first; a taken number is a refusal | evidence: "Another contact has this contact number" (\[WG\]) |
//! | DRAFT invoices can be paid (D4) | invoices are posted `AUTHORISED` | Xero takes payments only against authorised documents (\[PAYAUTH\]) |
//! | credit notes neither allocated nor refunded (D7) | allocated up to the invoice's amount due, the rest refunded as cash | without it the invoice stays outstanding and the credit floats |

use std::collections::BTreeMap;

use chrono::{Days, NaiveDate};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use super::model::{
    AccountRef, Address, Allocation, ContactRef, CreditNote, CreditNoteRef, Invoice, InvoiceRef, Item, ItemDetails,
    LineItem, Payment, Phone,
};
use crate::{
    canonical::{
        Address as MagentoAddress, AddressKind, MagentoContact, MagentoCreditMemo, MagentoInvoice, MagentoPayment,
        MagentoProduct,
    },
    error::{Error, Result},
    money::{Currency, RoundingPolicy, format_money, round_money},
    plan::{self, DocumentAddresses, DocumentKind, DocumentPlan, PlanWarning},
    policy::{EuSupplyType, NamePriority, SyncPolicy},
    providers::{ItemKind, ItemLink},
    reference::ReferenceData,
    tax::{self, TaxTreatment},
};

/// Xero's length limits (the spec's `maxLength`s, xero-api.md 6 and Q19).
pub mod limits {
    /// `Contact.ContactNumber`.
    pub const CONTACT_NUMBER: usize = 50;
    /// `Contact.Name`, `FirstName`, `LastName`, `EmailAddress`.
    pub const CONTACT_NAME: usize = 255;
    /// `Invoice.InvoiceNumber` (and the crate's credit note numbers).
    pub const DOCUMENT_NUMBER: usize = 255;
    /// `Item.Code`.
    pub const ITEM_CODE: usize = 30;
    /// `Item.Name`.
    pub const ITEM_NAME: usize = 50;
    /// `Item.Description`, line descriptions.
    pub const DESCRIPTION: usize = 4000;
    /// `Address.AddressLine1..4`.
    pub const ADDRESS_LINE: usize = 500;
    /// `Address.City`, `Region`, `AttentionTo`.
    pub const ADDRESS_FIELD: usize = 255;
    /// `Address.PostalCode`, `Country`, `Phone.PhoneNumber`.
    pub const SHORT_FIELD: usize = 50;
    /// `Idempotency-Key` ("128 character max").
    pub const IDEMPOTENCY_KEY: usize = 128;
}

/// Days from an invoice's date to its due date (Byte8's default, byte8-xero-spec.md D18).
pub const PAYMENT_TERMS_DAYS: u64 = 14;

/// A transformed request with what a reviewer should know about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transformed<T> {
    /// The request element.
    pub request: T,
    /// Notes for the audit trail (`code: detail`).
    pub notes: Vec<String>,
}

/// The Xero ids a document depends on.
#[derive(Debug, Clone, Copy)]
pub struct DocumentLinks<'a> {
    /// The contact (one per customer, whatever the currency).
    pub contact_id: &'a str,
    /// Items by SKU, when products sync: their lines carry `ItemCode` (tracked items then move
    /// stock when the document is approved).
    pub items: &'a BTreeMap<String, ItemLink>,
}

/// The tax types a document needs besides the policy's domestic rates, resolved from the
/// organisation's tax rates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaxTypes {
    /// Zero-rated sales in the VAT return (exports, services outside the scope).
    pub zero_rated: String,
    /// Intra-EU zero-rated goods (reverse charge).
    pub ec_goods: String,
    /// Intra-EU zero-rated services (reverse charge).
    pub ec_services: String,
    /// Not a supply at all (adjustments, collected foreign VAT, stock adjustments).
    pub no_vat: String,
}

impl TaxTypes {
    /// Finds the types among the organisation's tax rates (`ReferenceData::tax_rates`, whose ids
    /// are Xero `TaxType`s): the UK system types when the organisation has them, else a 0 % rate
    /// whose name says what it is (custom `TAX00n` rates of other countries).
    ///
    /// # Errors
    /// [`Error::NotFound`] when the organisation has no zero rate at all.
    pub fn resolve(reference: &ReferenceData) -> Result<Self> {
        let has = |id: &str| reference.tax_rate(id).is_some();
        let zero_rated = if has("ZERORATEDOUTPUT") {
            "ZERORATEDOUTPUT".to_owned()
        } else {
            tax::zero_rate(&reference.tax_rates).map(|r| r.id.clone()).ok_or_else(|| Error::NotFound {
                what: "zero-rated sales tax type of the Xero organisation".into(),
                id: "0 % (ZERORATEDOUTPUT)".into(),
            })?
        };
        let or_zero = |id: &str| if has(id) { id.to_owned() } else { zero_rated.clone() };
        let no_vat = if has("NONE") {
            "NONE".to_owned()
        } else {
            tax::no_tax_rate(&reference.tax_rates).map_or_else(|| zero_rated.clone(), |r| r.id.clone())
        };
        Ok(Self { ec_goods: or_zero("ECZROUTPUT"), ec_services: or_zero("ECZROUTPUTSERVICES"), no_vat, zero_rated })
    }

    /// The tax type of a line that is not domestic.
    pub fn for_treatment(&self, treatment: TaxTreatment, supply: EuSupplyType) -> &str {
        match (treatment, supply) {
            (TaxTreatment::ReverseCharge, EuSupplyType::Goods) => &self.ec_goods,
            (TaxTreatment::ReverseCharge, EuSupplyType::Services) => &self.ec_services,
            _ => &self.zero_rated,
        }
    }
}

/// Xero's native `Idempotency-Key` for a write: derived from the event's key and the request
/// body, at most 128 characters (Q2). The same event re-sent with the same body within Xero's
/// window is answered from Xero's cache; a changed body (a new policy, a batch re-sent with
/// fewer items after a recovery) gets a new key instead of Xero's 400 for a reused key.
pub fn idempotency_key(event_key: &str, purpose: &str, body: &[u8]) -> String {
    let event = hex::encode(&Sha256::digest(event_key.as_bytes())[..12]);
    let content = hex::encode(&Sha256::digest(body)[..8]);
    let key = format!("byte8-ledger:{purpose}:{event}:{content}");
    key.chars().take(limits::IDEMPOTENCY_KEY).collect()
}

/// The key of a batch: every item's event key, in order, stands for the batch's "event".
pub fn batch_idempotency_key<'a>(purpose: &str, event_keys: impl Iterator<Item = &'a str>, body: &[u8]) -> String {
    let joined: Vec<&str> = event_keys.collect();
    idempotency_key(&joined.join("\n"), purpose, body)
}

/// The `CurrencyRate` of a document: `None` for the base currency, for no Magento rate, and for
/// a rate of exactly 1 between different currencies (Magento's base is then not the
/// organisation's, so Magento's rate means nothing to Xero and Xero's own day rate applies).
///
/// Direction: units of the document currency per unit of the base currency, which is Magento's
/// `base_to_order_rate` as it is (`order = base × rate`, tax.md 4.4). Xero's spec example (a NZ
/// organisation, `0.7500`) and Xero's UI ("1 GBP = 1.17 EUR") read the same way; one 2026
/// integration reads it the other way (xero-api.md 6.8, UNCONFIRMED: verify on a Demo Company).
/// Xero stores 6 decimals ("max length \[18\].\[6\]"): rounded half up.
pub fn currency_rate(currency: Currency, base: Currency, base_to_order_rate: Option<Decimal>) -> Option<Decimal> {
    if currency == base {
        return None;
    }
    match base_to_order_rate {
        Some(r) if r > Decimal::ZERO && r != Decimal::ONE => Some(RoundingPolicy::HalfUp.round(r, 6).normalize()),
        _ => None,
    }
}

/// The `CurrencyRate` of a planned document: Magento's rate only when it converts from the
/// organisation's base currency ([`plan::ledger_rate`]). When Magento's base currency is another
/// one, or Magento sent no rate, there is no correct rate in Magento's data: the rate is omitted so
/// that Xero applies its own daily rate for the document's date (Xero's documented behaviour when
/// `CurrencyRate` is absent), and a `currency_rate_from_xero` note names both currencies.
pub fn document_currency_rate(plan: &DocumentPlan, base: Currency, notes: &mut Vec<String>) -> Option<Decimal> {
    match plan::ledger_rate(plan.currency, plan.base_currency, base, plan.base_to_order_rate) {
        plan::LedgerRate::BaseCurrency => None,
        plan::LedgerRate::Magento(r) => currency_rate(plan.currency, base, Some(r)),
        plan::LedgerRate::NotConvertible(why) => {
            notes.push(format!("currency_rate_from_xero: {why}; Xero's own daily rate applies"));
            None
        }
    }
}

/// A SKU as a Xero item code (≤ 30 characters, Q19): the SKU itself when it fits, else its
/// first 21 characters, `~` and 8 hex characters of its SHA-256, so that two long SKUs sharing a
/// prefix never share a code.
pub fn item_code(sku: &str) -> String {
    let sku = sku.trim();
    if sku.chars().count() <= limits::ITEM_CODE {
        return sku.to_owned();
    }
    let hash: String = Sha256::digest(sku.as_bytes()).iter().take(4).map(|b| format!("{b:02x}")).collect();
    format!("{}~{hash}", sku.chars().take(limits::ITEM_CODE - 9).collect::<String>())
}

fn fit(value: &str, max: usize) -> String {
    value.trim().chars().take(max).collect::<String>().trim_end().to_owned()
}

fn opt_fit(value: Option<&str>, max: usize) -> Option<String> {
    value.map(str::trim).filter(|v| !v.is_empty()).map(|v| fit(v, max))
}

/// `LineAmountTypes`: whether line amounts include tax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AmountMode {
    /// Line amounts are net; Xero adds `round(net × rate)`.
    Exclusive,
    /// Line amounts are gross; Xero backs out `round(gross × rate / (100 + rate))`.
    Inclusive,
}

impl AmountMode {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Exclusive => "Exclusive",
            Self::Inclusive => "Inclusive",
        }
    }
}

/// The tax Xero computes for a line of `amount` at `pct` in `mode`, rounded half up per line.
pub fn xero_line_tax(amount: Decimal, pct: Decimal, mode: AmountMode) -> Decimal {
    match mode {
        AmountMode::Exclusive => tax::rates::tax_at(amount, pct),
        AmountMode::Inclusive if pct.is_zero() => Decimal::ZERO,
        AmountMode::Inclusive => round_money(amount * pct / (Decimal::ONE_HUNDRED + pct)),
    }
}

/// One component of a document before it becomes a line: what it books.
#[derive(Debug, Clone)]
struct Component {
    description: String,
    qty: Decimal,
    unit_price: Decimal,
    net: Decimal,
    tax: Decimal,
    tax_type: String,
    pct: Option<Decimal>,
    account: String,
    item_code: Option<String>,
}

impl Component {
    fn amount(&self, mode: AmountMode) -> Decimal {
        match mode {
            AmountMode::Exclusive => self.net,
            AmountMode::Inclusive => self.net + self.tax,
        }
    }

    /// True when Xero's own arithmetic books exactly Magento's tax in `mode`.
    fn xero_agrees(&self, mode: AmountMode) -> bool {
        match self.pct {
            Some(p) => xero_line_tax(self.amount(mode), p, mode) == self.tax,
            None => false,
        }
    }
}

/// Quantity, unit amount and discount that make Xero book exactly `amount`: Magento's 2-decimal
/// unit price with a discount when allowed, else a 4-decimal unit amount, else quantity 1.
/// Returns `(qty, unit, discount, whole_row)`; `whole_row` means the quantity was folded into the
/// unit amount.
pub fn fit_amount(
    qty: Decimal,
    unit_price: Decimal,
    amount: Decimal,
    allow_discount: bool,
) -> (Decimal, Decimal, Option<Decimal>, bool) {
    if qty <= Decimal::ZERO {
        return (Decimal::ONE, amount, None, true);
    }
    let unit2 = round_money(unit_price);
    let gross = round_money(qty * unit2);
    if gross == amount {
        return (qty, unit2, None, false);
    }
    if allow_discount && gross > amount && amount >= Decimal::ZERO {
        return (qty, unit2, Some(gross - amount), false);
    }
    let unit4 = RoundingPolicy::HalfUp.round(amount / qty, 4);
    if round_money(qty * unit4) == amount {
        return (qty, unit4.normalize(), None, false);
    }
    (Decimal::ONE, amount, None, true)
}

/// The total Xero computes for lines in `mode`: per line `round(qty × unit) − discount`, plus
/// the line's `TaxAmount` or Xero's own tax (exclusive), or the line amounts alone (inclusive,
/// where the tax is inside). `pct_of` gives a tax type's percentage.
pub fn xero_total(lines: &[LineItem], mode: AmountMode, pct_of: impl Fn(&str) -> Option<Decimal>) -> Result<Decimal> {
    let mut total = Decimal::ZERO;
    for (i, l) in lines.iter().enumerate() {
        let amount = round_money(l.quantity * l.unit_amount) - l.discount_amount.unwrap_or_default();
        match mode {
            AmountMode::Inclusive => total += amount,
            AmountMode::Exclusive => {
                let tax = match l.tax_amount {
                    Some(t) => t,
                    None => {
                        let pct = pct_of(&l.tax_type).ok_or_else(|| {
                            Error::internal(format!("line {i}: tax type {} has no known percentage", l.tax_type))
                        })?;
                        xero_line_tax(amount, pct, mode)
                    }
                };
                total += amount + tax;
            }
        }
    }
    Ok(total)
}

fn pct_in(reference: &ReferenceData, id: &str) -> Option<Decimal> {
    reference.tax_rate(id).and_then(|r| r.percentage)
}

/// What a planned document becomes in Xero: its mode and its lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XeroLines {
    /// `LineAmountTypes`.
    pub mode: AmountMode,
    /// The lines.
    pub lines: Vec<LineItem>,
    /// Notes for the audit trail.
    pub notes: Vec<String>,
}

/// Turns a plan into Xero lines (see the module docs) and checks that Xero will total Magento's
/// `grand_total`.
///
/// # Errors
/// [`Error::Invalid`] for a missing sales account or foreign-VAT account, or a foreign currency
/// the organisation cannot post; [`Error::Internal`] if the lines would not add up (never
/// posted).
pub fn document(
    plan: &DocumentPlan,
    policy: &SyncPolicy,
    reference: &ReferenceData,
    links: &DocumentLinks<'_>,
) -> Result<XeroLines> {
    let what = plan.kind.what();
    let base = reference.business.base_currency;
    if plan.currency != base && !reference.business.multi_currency {
        return Err(Error::invalid(
            what,
            "currency",
            format!(
                "{} documents need multi-currency, which this Xero organisation does not have (base {}): Xero answers \"Organisation is not subscribed to currency\"",
                plan.currency.code(),
                base.code()
            ),
        ));
    }
    if plan.currency != base && !reference.currencies.iter().any(|c| c == plan.currency.code()) {
        return Err(Error::invalid(
            what,
            "currency",
            format!(
                "{} is not one of this Xero organisation's currencies ({}): add it in Xero (Settings → Currencies) first",
                plan.currency.code(),
                reference.currencies.join(", ")
            ),
        ));
    }
    let account = policy.default_ledger_account_id.clone().ok_or_else(|| {
        Error::invalid(
            "policy",
            "default_ledger_account_id",
            "required: every line of an AUTHORISED Xero document needs an account code",
        )
    })?;
    let types = TaxTypes::resolve(reference)?;
    let mut notes = Vec::new();
    let mut parts: Vec<Component> = Vec::with_capacity(plan.lines.len() + 3);
    for l in &plan.lines {
        let (tax_type, booked_tax, pct) = match (l.treatment, &l.rate) {
            // A gift card sold: a multi-purpose voucher, no VAT, on its liability account.
            _ if l.liability_account.is_some() => (types.no_vat.clone(), Decimal::ZERO, Some(Decimal::ZERO)),
            (TaxTreatment::Domestic, Some(r)) => {
                (r.id.clone(), l.tax, r.percentage.or_else(|| pct_in(reference, &r.id)))
            }
            (TaxTreatment::Domestic, None) => {
                return Err(Error::internal(format!("domestic line {} has no tax rate", l.index)));
            }
            (TaxTreatment::DestinationVat, _) => {
                (types.for_treatment(l.treatment, l.supply).to_owned(), Decimal::ZERO, Some(Decimal::ZERO))
            }
            (_, _) if !l.tax.is_zero() => {
                return Err(Error::internal(format!("zero-rated line {} carries tax {}", l.index, l.tax)));
            }
            (t, _) => (types.for_treatment(t, l.supply).to_owned(), Decimal::ZERO, Some(Decimal::ZERO)),
        };
        parts.push(Component {
            description: l.description.clone(),
            qty: l.qty,
            unit_price: l.unit_price,
            net: l.net,
            tax: booked_tax,
            tax_type,
            pct,
            account: l.liability_account.clone().unwrap_or_else(|| account.clone()),
            item_code: links.items.get(&l.sku).map(|_| item_code(&l.sku)),
        });
    }
    let s = &plan.shipping;
    if !s.net.is_zero() || !s.tax.is_zero() {
        let (tax_type, booked, pct) = match (s.treatment, &s.rate) {
            (TaxTreatment::Domestic, Some(r)) => {
                (r.id.clone(), s.tax, r.percentage.or_else(|| pct_in(reference, &r.id)))
            }
            (TaxTreatment::Domestic, None) => return Err(Error::internal("domestic shipping has no tax rate")),
            (t, _) => (types.for_treatment(t, EuSupplyType::Goods).to_owned(), Decimal::ZERO, Some(Decimal::ZERO)),
        };
        parts.push(Component {
            description: "Shipping".into(),
            qty: Decimal::ONE,
            unit_price: s.net,
            net: s.net,
            tax: booked,
            tax_type,
            pct,
            account: account.clone(),
            item_code: None,
        });
    }
    // VAT Magento collected for another country: a liability, never dropped.
    let foreign = plan.foreign_vat();
    if !foreign.is_zero() {
        let Some(liability) = policy.foreign_vat_ledger_account_id.clone() else {
            return Err(Error::invalid(
                what,
                "foreign_vat_ledger_account_id",
                format!(
                    "Magento collected {} of {} VAT (OSS/IOSS); set foreign_vat_ledger_account_id to a liability account code so it is booked: the crate never drops collected tax",
                    format_money(foreign),
                    plan.destination_country.as_deref().unwrap_or("foreign"),
                ),
            ));
        };
        parts.push(Component {
            description: format!(
                "VAT collected for {} (OSS/IOSS)",
                plan.destination_country.as_deref().unwrap_or("another country")
            ),
            qty: Decimal::ONE,
            unit_price: foreign,
            net: foreign,
            tax: Decimal::ZERO,
            tax_type: types.no_vat.clone(),
            pct: Some(Decimal::ZERO),
            account: liability,
            item_code: None,
        });
        notes.push(format!(
            "foreign_vat_collected: {} booked to the foreign VAT liability account",
            format_money(foreign)
        ));
    }
    // Credit memo adjustments as the policy's `adjustment_tax_treatment` split them.
    for a in &plan.adjustments {
        let (tax_type, tax, pct) = match &a.rate {
            Some(r) => (r.id.clone(), a.tax, r.percentage.or_else(|| pct_in(reference, &r.id))),
            None => (types.no_vat.clone(), Decimal::ZERO, Some(Decimal::ZERO)),
        };
        parts.push(Component {
            description: a.description.clone(),
            qty: Decimal::ONE,
            unit_price: a.net,
            net: a.net,
            tax,
            tax_type,
            pct,
            account: account.clone(),
            item_code: None,
        });
    }
    // Tenders: out of (invoice) or into (credit note) their liability accounts, no VAT.
    for t in &plan.tenders {
        parts.push(Component {
            description: t.description.clone(),
            qty: Decimal::ONE,
            unit_price: -t.amount,
            net: -t.amount,
            tax: Decimal::ZERO,
            tax_type: types.no_vat.clone(),
            pct: Some(Decimal::ZERO),
            account: t.account.clone(),
            item_code: None,
        });
        notes.push(format!("tender_booked: {} {} to {}", t.field, format_money(t.amount), t.account));
    }
    // The mode in which Xero's own arithmetic agrees with Magento's on more lines.
    let disagree = |mode| parts.iter().filter(|p| !p.xero_agrees(mode)).count();
    let mode = if disagree(AmountMode::Inclusive) < disagree(AmountMode::Exclusive) {
        AmountMode::Inclusive
    } else {
        AmountMode::Exclusive
    };
    let allow_discount = plan.kind == DocumentKind::Invoice && mode == AmountMode::Exclusive;
    let mut lines = Vec::with_capacity(parts.len());
    for (i, p) in parts.iter().enumerate() {
        let amount = p.amount(mode);
        let (qty, unit, discount, whole_row) = fit_amount(p.qty, p.unit_price, amount, allow_discount);
        let description = if whole_row && p.qty != Decimal::ONE {
            notes.push(format!(
                "quantity_folded: line {i} posted as 1 × {amount} (the unit price needs more than 4 decimals)"
            ));
            format!("{} × {}", p.qty.normalize(), p.description)
        } else {
            p.description.clone()
        };
        let tax_amount = (!p.xero_agrees(mode)).then_some(p.tax);
        if tax_amount.is_some() {
            notes.push(format!(
                "tax_amount_override: line {i}: Xero would compute {} on {amount}, Magento charged {}",
                p.pct.map_or_else(|| "?".to_owned(), |pct| xero_line_tax(amount, pct, mode).to_string()),
                p.tax
            ));
        }
        lines.push(LineItem {
            description: fit(&description, limits::DESCRIPTION),
            quantity: qty,
            unit_amount: unit,
            item_code: p.item_code.clone(),
            account_code: p.account.clone(),
            tax_type: p.tax_type.clone(),
            tax_amount,
            discount_amount: discount,
        });
    }
    for w in &plan.warnings {
        notes.push(match w {
            PlanWarning::MixedEuTypesCoerced { used } => format!("{}: every line set to {}", w.code(), used.as_str()),
            PlanWarning::Placed(p) => format!("{}: {p:?}", w.code()),
        });
    }
    let pct_of =
        |id: &str| pct_in(reference, id).or_else(|| parts.iter().find(|p| p.tax_type == id).and_then(|p| p.pct));
    let total = xero_total(&lines, mode, pct_of)?;
    if total != plan.grand_total {
        return Err(Error::internal(format!(
            "{what} {}: Xero would total {total}, Magento's grand_total is {}; not posted",
            plan.increment_id, plan.grand_total
        )));
    }
    Ok(XeroLines { mode, lines, notes })
}

/// A document number within Xero's 255 characters (see [`plan::fit_reference`]).
pub fn document_number(policy: &SyncPolicy, increment_id: &str) -> String {
    plan::fit_reference(&policy.document_reference(increment_id), increment_id, limits::DOCUMENT_NUMBER)
}

/// `invoice.created` → one element of `PUT /Invoices`: `ACCREC`, `AUTHORISED` (so that payments
/// and allocations can follow), due 14 days after its date.
///
/// # Errors
/// As [`crate::plan::plan_invoice`] and [`document`].
pub fn invoice(
    inv: &MagentoInvoice,
    policy: &SyncPolicy,
    reference: &ReferenceData,
    links: &DocumentLinks<'_>,
) -> Result<Transformed<Invoice>> {
    let plan = plan::plan_invoice(inv, policy, reference)?;
    let mut x = document(&plan, policy, reference, links)?;
    let rate = document_currency_rate(&plan, reference.business.base_currency, &mut x.notes);
    let mut reference_text = format!("Order {}", inv.order_increment_id);
    if let Some(po) = inv.po_number.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
        reference_text.push_str(&format!(" / PO {po}"));
    }
    let request = Invoice {
        kind: "ACCREC".into(),
        contact: ContactRef { contact_id: links.contact_id.to_owned() },
        date: plan.date,
        due_date: plan.date.checked_add_days(Days::new(PAYMENT_TERMS_DAYS)).unwrap_or(plan.date),
        line_amount_types: x.mode.as_str().into(),
        invoice_number: document_number(policy, &inv.increment_id),
        reference: Some(fit(&reference_text, limits::DOCUMENT_NUMBER)),
        currency_code: plan.currency.code().into(),
        currency_rate: rate,
        status: "AUTHORISED".into(),
        line_items: x.lines,
    };
    Ok(Transformed { request, notes: x.notes })
}

/// `creditmemo.created` → one element of `PUT /CreditNotes`: `ACCRECCREDIT`, `AUTHORISED` (so that
/// it can be allocated or refunded), on the credited invoice's contact, routed with the invoice's
/// addresses.
///
/// # Errors
/// As [`invoice`].
pub fn credit_note(
    memo: &MagentoCreditMemo,
    policy: &SyncPolicy,
    reference: &ReferenceData,
    links: &DocumentLinks<'_>,
    invoice_addresses: Option<&DocumentAddresses>,
) -> Result<Transformed<CreditNote>> {
    let plan = plan::plan_credit_memo(memo, policy, reference, invoice_addresses)?;
    let mut x = document(&plan, policy, reference, links)?;
    let rate = document_currency_rate(&plan, reference.business.base_currency, &mut x.notes);
    let linkage = match (&memo.invoice_increment_id, memo.invoice_id) {
        (Some(inc), _) => format!("Credit for invoice {}", document_number(policy, inc)),
        (None, Some(id)) => format!("Credit for invoice {id}"),
        (None, None) => format!("Credit memo {} (refund from the order, no invoice)", memo.increment_id),
    };
    let request = CreditNote {
        kind: "ACCRECCREDIT".into(),
        contact: ContactRef { contact_id: links.contact_id.to_owned() },
        date: plan.date,
        line_amount_types: x.mode.as_str().into(),
        credit_note_number: document_number(policy, &memo.increment_id),
        reference: Some(fit(&linkage, limits::DOCUMENT_NUMBER)),
        currency_code: plan.currency.code().into(),
        currency_rate: rate,
        status: "AUTHORISED".into(),
        line_items: x.lines,
    };
    Ok(Transformed { request, notes: x.notes })
}

fn address(a: &MagentoAddress, kind: &str, attention: Option<&str>) -> Address {
    let line1 = a.street.first().map(String::as_str);
    let rest: Vec<&str> = a.street.iter().skip(1).map(|s| s.trim()).filter(|s| !s.is_empty()).collect();
    let line2 = (!rest.is_empty()).then(|| rest.join(", "));
    let country: String = a.country_id.trim().chars().filter(char::is_ascii_alphabetic).collect();
    Address {
        address_type: kind.into(),
        address_line1: opt_fit(line1, limits::ADDRESS_LINE),
        address_line2: opt_fit(line2.as_deref(), limits::ADDRESS_LINE),
        city: opt_fit(Some(&a.city), limits::ADDRESS_FIELD),
        region: opt_fit(a.region.as_deref(), limits::ADDRESS_FIELD),
        postal_code: opt_fit(a.postcode.as_deref(), limits::SHORT_FIELD),
        country: (!country.is_empty()).then(|| fit(&country, limits::SHORT_FIELD)),
        attention_to: opt_fit(attention, limits::ADDRESS_FIELD),
    }
}

/// A name made unique among active contacts by the contact's number (Q3: two customers called
/// "John Smith" would otherwise collide): `John Smith (M5)`.
pub fn unique_name(name: &str, contact_number: &str) -> String {
    let suffix = format!(" ({contact_number})");
    let room = limits::CONTACT_NAME.saturating_sub(suffix.chars().count());
    format!("{}{suffix}", fit(name, room))
}

/// `customer.upserted` (or a document's buyer) → one element of `PUT /Contacts`: one contact for
/// every currency (no `DefaultCurrency`, so it can be invoiced in any of the organisation's
/// currencies), `ContactNumber` = the crate's reference, name by the policy's priority (P15),
/// billing address as `POBOX`, shipping as `STREET`.
pub fn contact(contact: &MagentoContact, contact_number: &str, policy: &SyncPolicy) -> super::model::Contact {
    let person = contact.person_name();
    let company = contact.company_name().map(plan::decode_entities);
    let (name, attention) = match (policy.customer_name_priority, &company, &person) {
        (NamePriority::Company, Some(c), _) => (c.clone(), None),
        (NamePriority::Person, c, Some(p)) => (p.clone(), c.clone()),
        (_, None, Some(p)) => (p.clone(), None),
        (_, Some(c), None) => (c.clone(), None),
        (_, None, None) => (contact.email.trim().to_owned(), None),
    };
    let billing = contact.address(AddressKind::Billing).or(contact.addresses.first());
    let shipping = contact.address(AddressKind::Shipping);
    let mut addresses = Vec::new();
    if let Some(b) = billing {
        addresses.push(address(b, "POBOX", attention.as_deref()));
    }
    if let Some(s) = shipping {
        addresses.push(address(s, "STREET", attention.as_deref()));
    }
    let phone = contact.phone.as_deref().or_else(|| billing.and_then(|b| b.telephone.as_deref()));
    super::model::Contact {
        contact_id: None,
        contact_number: fit(contact_number, limits::CONTACT_NUMBER),
        name: fit(&name, limits::CONTACT_NAME),
        first_name: opt_fit(contact.first_name.as_deref(), limits::CONTACT_NAME),
        last_name: opt_fit(contact.last_name.as_deref(), limits::CONTACT_NAME),
        email_address: opt_fit(Some(&contact.email), limits::CONTACT_NAME),
        // Issue 18: the VAT number the invoice must show for EU B2B supplies.
        tax_number: contact.vat_number(),
        addresses,
        phones: opt_fit(phone, limits::SHORT_FIELD)
            .map(|n| vec![Phone { phone_type: "DEFAULT".into(), phone_number: n }])
            .unwrap_or_default(),
    }
}

/// The B2C fallback contact (byte8-spec.md 7.5): the policy's name and e-mail.
pub fn fallback_contact(policy: &SyncPolicy, contact_number: &str) -> super::model::Contact {
    let b = &policy.b2c_consolidation;
    super::model::Contact {
        contact_id: None,
        contact_number: fit(contact_number, limits::CONTACT_NUMBER),
        name: fit(&b.fallback_contact_name, limits::CONTACT_NAME),
        first_name: None,
        last_name: None,
        email_address: opt_fit(Some(&b.fallback_contact_email), limits::CONTACT_NAME),
        tax_number: None,
        addresses: Vec::new(),
        phones: Vec::new(),
    }
}

/// `invoice.paid` → one element of `PUT /Payments`: one payment settles the invoice (Xero has no
/// separate allocation), for at most what is outstanding (Xero refuses more, Q7), at the
/// invoice's rate for foreign invoices.
pub fn payment(
    p: &MagentoPayment,
    policy: &SyncPolicy,
    invoice_id: &str,
    bank_account_id: &str,
    outstanding: Option<Decimal>,
    currency_rate: Option<Decimal>,
    date: NaiveDate,
) -> Payment {
    let amount = outstanding.map_or(p.amount, |o| o.min(p.amount)).max(Decimal::ZERO);
    Payment {
        invoice: Some(InvoiceRef { invoice_id: invoice_id.to_owned() }),
        credit_note: None,
        account: AccountRef { account_id: bank_account_id.to_owned() },
        date,
        amount,
        reference: Some(document_number(policy, &p.invoice_increment_id)),
        currency_rate,
    }
}

/// The cash refund of a credit note: a payment against the credit note (`ARCREDITPAYMENT`) from
/// the bank account the money left from.
pub fn refund(
    credit_note_id: &str,
    bank_account_id: &str,
    amount: Decimal,
    date: NaiveDate,
    reference: &str,
    currency_rate: Option<Decimal>,
) -> Payment {
    Payment {
        invoice: None,
        credit_note: Some(CreditNoteRef { credit_note_id: credit_note_id.to_owned() }),
        account: AccountRef { account_id: bank_account_id.to_owned() },
        date,
        amount,
        reference: Some(fit(reference, limits::DOCUMENT_NUMBER)),
        currency_rate,
    }
}

/// A credit-note allocation against an invoice.
pub fn allocation(invoice_id: &str, amount: Decimal, date: NaiveDate) -> Allocation {
    Allocation { invoice: InvoiceRef { invoice_id: invoice_id.to_owned() }, amount, date }
}

/// `product.upserted` → one element of `PUT /Items`: code = the SKU (≤ 30, [`item_code`]), name
/// ≤ 50 with the full name in the description, sales price and account; a stock item is a
/// *tracked* item (inventory asset account and COGS account), whose quantity Xero changes only
/// through documents.
///
/// # Errors
/// [`Error::Invalid`] when an account the item needs is not configured.
pub fn item(product: &MagentoProduct, kind: ItemKind, policy: &SyncPolicy, reference: &ReferenceData) -> Result<Item> {
    let sales = policy.default_ledger_account_id.clone().ok_or_else(|| {
        Error::invalid("policy", "default_ledger_account_id", "required: Xero items need a sales account code")
    })?;
    let name = plan::decode_entities(product.name.trim());
    let name = if name.is_empty() { product.sku.clone() } else { name };
    let (purchase_details, inventory) = if kind == ItemKind::StockItem {
        let cogs = policy.default_purchase_ledger_account_id.clone().ok_or_else(|| {
            Error::invalid(
                "policy",
                "default_purchase_ledger_account_id",
                "required: a tracked Xero item needs a cost-of-goods-sold account",
            )
        })?;
        let asset = inventory_account(reference).ok_or_else(|| Error::NotFound {
            what: "inventory asset account (Type INVENTORY) of the Xero organisation".into(),
            id: "tracked inventory".into(),
        })?;
        (Some(ItemDetails { unit_price: product.cost, account_code: None, cogs_account_code: Some(cogs) }), Some(asset))
    } else {
        (None, None)
    };
    Ok(Item {
        item_id: None,
        code: item_code(&product.sku),
        name: fit(&name, limits::ITEM_NAME),
        description: fit(&name, limits::DESCRIPTION),
        is_sold: true,
        is_purchased: kind == ItemKind::StockItem,
        sales_details: ItemDetails {
            unit_price: Some(product.price.unwrap_or_default()),
            account_code: Some(sales),
            cogs_account_code: None,
        },
        purchase_details,
        inventory_asset_account_code: inventory,
    })
}

/// The key under which the reference data keeps the organisation's inventory asset account code.
pub const INVENTORY_ACCOUNT_KEY: &str = "xero.inventory_asset_account_code";

/// The organisation's inventory asset account, when it has tracked inventory.
pub fn inventory_account(reference: &ReferenceData) -> Option<String> {
    reference.extensions.get(INVENTORY_ACCOUNT_KEY).cloned()
}

/// The contact number of the stock-adjustment supplier (Xero's tracked-inventory guide books
/// adjustments as zero-value bills to a dedicated contact, \[INV-TRK\]).
pub const ADJUSTMENT_CONTACT_NUMBER: &str = "B8-STOCKADJ";

/// A stock adjustment: a zero-total `ACCPAY` bill that adds stock, or an `ACCPAYCREDIT` credit note
/// that removes it, each with the item line (at the product's cost, to the inventory account) and
/// the opposite amount to the cost-of-goods-sold account (\[INV-TRK\]). `None` when the quantities
/// already match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockAdjustment {
    /// More stock: a bill.
    Increase(Invoice),
    /// Less stock: a supplier credit note.
    Decrease(CreditNote),
}

impl StockAdjustment {
    /// The adjustment's number (what a look-up after an unknown outcome searches).
    pub fn number(&self) -> &str {
        match self {
            Self::Increase(i) => &i.invoice_number,
            Self::Decrease(c) => &c.credit_note_number,
        }
    }
}

/// See [`StockAdjustment`].
///
/// # Errors
/// [`Error::Invalid`] / [`Error::NotFound`] when the accounts it needs are not configured.
#[allow(clippy::too_many_arguments)]
pub fn stock_adjustment(
    product: &MagentoProduct,
    ledger_quantity: Decimal,
    date: NaiveDate,
    contact_id: &str,
    policy: &SyncPolicy,
    reference: &ReferenceData,
    idempotency_key: Option<&str>,
) -> Result<Option<StockAdjustment>> {
    let Some(target) = product.stock_qty else { return Ok(None) };
    let delta = target - ledger_quantity;
    if delta.is_zero() {
        return Ok(None);
    }
    let cogs = policy.default_purchase_ledger_account_id.clone().ok_or_else(|| {
        Error::invalid("policy", "default_purchase_ledger_account_id", "required: stock adjustments book against it")
    })?;
    let asset = inventory_account(reference).ok_or_else(|| Error::NotFound {
        what: "inventory asset account (Type INVENTORY) of the Xero organisation".into(),
        id: "tracked inventory".into(),
    })?;
    let types = TaxTypes::resolve(reference)?;
    let qty = delta.abs();
    let cost = round_money(product.cost.unwrap_or_default());
    let value = round_money(qty * cost);
    let lines = vec![
        LineItem {
            description: fit(
                &format!("Magento stock {} → {}", ledger_quantity.normalize(), target.normalize()),
                limits::DESCRIPTION,
            ),
            quantity: qty,
            unit_amount: cost,
            item_code: Some(item_code(&product.sku)),
            account_code: asset,
            tax_type: types.no_vat.clone(),
            tax_amount: None,
            discount_amount: None,
        },
        LineItem {
            description: "Inventory adjustment".into(),
            quantity: Decimal::ONE,
            unit_amount: -value,
            item_code: None,
            account_code: cogs,
            tax_type: types.no_vat,
            tax_amount: None,
            discount_amount: None,
        },
    ];
    let tag: String = Sha256::digest(
        format!(
            "{}:{}:{}:{}",
            idempotency_key.unwrap_or(""),
            product.sku,
            ledger_quantity.normalize(),
            target.normalize()
        )
        .as_bytes(),
    )
    .iter()
    .take(4)
    .map(|b| format!("{b:02x}"))
    .collect();
    let number = fit(&format!("STOCK-{}-{tag}", item_code(&product.sku)), limits::DOCUMENT_NUMBER);
    let base = reference.business.base_currency.code().to_owned();
    let contact = ContactRef { contact_id: contact_id.to_owned() };
    Ok(Some(if delta > Decimal::ZERO {
        StockAdjustment::Increase(Invoice {
            kind: "ACCPAY".into(),
            contact,
            date,
            due_date: date,
            line_amount_types: "NoTax".into(),
            invoice_number: number,
            reference: None,
            currency_code: base,
            currency_rate: None,
            status: "AUTHORISED".into(),
            line_items: lines,
        })
    } else {
        StockAdjustment::Decrease(CreditNote {
            kind: "ACCPAYCREDIT".into(),
            contact,
            date,
            line_amount_types: "NoTax".into(),
            credit_note_number: number,
            reference: None,
            currency_code: base,
            currency_rate: None,
            status: "AUTHORISED".into(),
            line_items: lines,
        })
    }))
}

#[cfg(test)]
mod tests;
