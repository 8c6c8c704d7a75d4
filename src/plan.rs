//! The provider-neutral posting plan of an invoice or credit memo: the canonical document after
//! its arithmetic is reconciled ([`crate::canonical::totals`]), each line routed
//! ([`crate::tax::routing`]) and each domestic line given its rate from the policy
//! ([`crate::tax::rates`]).
//!
//! A plan says *what* a document books, line by line: net, tax, treatment, rate. A provider's
//! transform then says *how* its ledger takes it (Sage: unit prices with 2 decimals, a shipping
//! panel whose tax Sage recomputes, the zero-rate id). Invariant, checked by the property tests:
//! `Σ line net + Σ line tax + shipping net + shipping tax + adjustments − tenders = grand_total`.
//!
//! Three kinds of entry beyond Magento's lines and shipping (issue 12):
//!
//! - **Gift cards sold** (a line of product type `giftcard`): a multi-purpose voucher, outside
//!   the scope of VAT and a liability, so the line is booked on the policy's
//!   `gift_card_ledger_account_id` with the ledger's no-tax rate ([`PlanLine::liability_account`]).
//!   Without that setting, or with tax on the line, the document fails as `validation` naming the
//!   line and nothing is posted.
//! - **Tenders** ([`crate::canonical::Tenders`]: gift card, store credit, reward points): a line of
//!   `−amount` on the tender's liability account with the no-tax rate ([`PlanTender`]). Revenue and
//!   VAT stay exactly as Magento charged them; the liability is debited when a card or credit is
//!   spent on an invoice and credited when a credit memo refunds to it; the document totals
//!   Magento's `grand_total` (what is left to pay, or the cash refunded), so payments and
//!   allocations work as for any document. A chosen alternative to a separate receipt from the
//!   liability account: one document, one request, nothing to allocate, same ledger result.
//! - **Adjustments** of credit memos ([`PlanAdjustment`]), split by the policy's
//!   `adjustment_tax_treatment`.

use chrono::NaiveDate;
use rust_decimal::Decimal;

use crate::{
    canonical::{
        Address, AddressKind, Breakdown, MagentoContact, MagentoCreditMemo, MagentoInvoice, MagentoInvoiceLine, Tenders,
    },
    error::{Error, Problems, Result},
    money::{Currency, PENNY},
    policy::{EuSupplyType, SyncPolicy},
    reference::ReferenceData,
    tax::{self, Buyer, Place, RateChoice, Seller, Supply, TaxTreatment},
};

/// Invoice or credit note.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DocumentKind {
    /// A sales invoice.
    Invoice,
    /// A sales credit note.
    CreditNote,
}

impl DocumentKind {
    /// `invoice` / `credit memo`, for messages.
    pub fn what(self) -> &'static str {
        match self {
            Self::Invoice => "invoice",
            Self::CreditNote => "credit memo",
        }
    }
}

/// Something a reviewer of the posted document should know.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanWarning {
    /// Mixed goods and services on a cross-border document: every line coerced to the default
    /// type (Byte8's `mixed_eu_goods_services_coerced_to_default`).
    MixedEuTypesCoerced {
        /// The type used.
        used: EuSupplyType,
    },
    /// A residual was placed (discount tax compensation, rounding, inferred shipping discount).
    Placed(crate::canonical::totals::Placement),
}

impl PlanWarning {
    /// A stable code for the audit trail.
    pub fn code(&self) -> &'static str {
        match self {
            Self::MixedEuTypesCoerced { .. } => "mixed_eu_goods_services_coerced_to_default",
            Self::Placed(crate::canonical::totals::Placement::DiscountTaxCompensation { .. }) => {
                "discount_tax_compensation"
            }
            Self::Placed(crate::canonical::totals::Placement::Rounding { .. }) => "rounding_adjustment",
            Self::Placed(crate::canonical::totals::Placement::ShippingDiscount { .. }) => "shipping_discount_inferred",
        }
    }
}

/// One planned line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanLine {
    /// Index of the canonical line.
    pub index: usize,
    /// SKU.
    pub sku: String,
    /// Description: the name with HTML entities decoded (the SKU when the name is empty).
    pub description: String,
    /// Magento product type.
    pub product_type: Option<String>,
    /// How many units (Magento's quantity, never rounded).
    pub qty: Decimal,
    /// Magento's unit price (2 decimals).
    pub unit_price: Decimal,
    /// Net before discount.
    pub subtotal: Decimal,
    /// Net after discount (the booked net).
    pub net: Decimal,
    /// Tax Magento charged (with any rounding placed).
    pub tax: Decimal,
    /// The canonical `tax_rate` ratio.
    pub canonical_rate: Option<Decimal>,
    /// The routed treatment.
    pub treatment: TaxTreatment,
    /// Goods or services.
    pub supply: EuSupplyType,
    /// The domestic rate (only for `Domestic` lines).
    pub rate: Option<RateChoice>,
    /// For a gift card sold (Magento product type `giftcard`): the policy's
    /// `gift_card_ledger_account_id`. The line is a multi-purpose voucher, outside the scope of
    /// VAT (treatment `OutsideScope`, no tax), booked on this liability account with the no-tax rate.
    pub liability_account: Option<String>,
}

/// The Magento product type of a gift card (Adobe Commerce).
pub const GIFT_CARD_PRODUCT_TYPE: &str = "giftcard";

/// One part of a credit memo adjustment (policy `adjustment_tax_treatment`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanAdjustment {
    /// `Adjustment refund` or `Adjustment fee`.
    pub description: String,
    /// Net, signed: positive for a refund, negative for a fee kept back.
    pub net: Decimal,
    /// VAT of the part, same sign (zero with `no_tax`).
    pub tax: Decimal,
    /// The rate of the part: `None` books it on the no-tax rate; `Some` on that domestic rate.
    pub rate: Option<RateChoice>,
}

/// A tender of the document (gift card, store credit, reward points): booked as a line of
/// `−amount` on its liability account with the no-tax rate, so that revenue and VAT stay as
/// Magento charged them and the document's total is what is left to pay (or the cash refunded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanTender {
    /// The Magento field (`gift_cards_amount`, ...).
    pub field: &'static str,
    /// The line's description.
    pub description: String,
    /// The amount (positive).
    pub amount: Decimal,
    /// The ledger account from the policy.
    pub account: String,
}

impl PlanLine {
    /// The discount the ledger should show: `subtotal − net` (may be negative only when a rounding
    /// residual raised the net).
    pub fn discount(&self) -> Decimal {
        self.subtotal - self.net
    }
}

/// The planned shipping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanShipping {
    /// Net after discount.
    pub net: Decimal,
    /// Tax Magento charged.
    pub tax: Decimal,
    /// The routed treatment (shipping follows the goods).
    pub treatment: TaxTreatment,
    /// The domestic rate (only for `Domestic` shipping).
    pub rate: Option<RateChoice>,
}

/// A planned document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentPlan {
    /// Invoice or credit note.
    pub kind: DocumentKind,
    /// Magento entity id.
    pub magento_id: u64,
    /// Magento increment id.
    pub increment_id: String,
    /// The document reference: prefix + increment id, never doubled, not yet truncated.
    pub reference: String,
    /// The document's currency (the order's).
    pub currency: Currency,
    /// Document date: the store's local date of `created_at` (policy `store_timezone`, default the
    /// zone of the ledger business's country), so that 23:30 UTC on 30 June is 1 July in London.
    pub date: NaiveDate,
    /// The product lines, in Magento's order.
    pub lines: Vec<PlanLine>,
    /// The shipping charge as its own line, with its tax.
    pub shipping: PlanShipping,
    /// Credit memo adjustment refund (no tax).
    pub adjustment_positive: Decimal,
    /// Credit memo adjustment fee (no tax).
    pub adjustment_negative: Decimal,
    /// How the adjustments are booked: their parts, which add up to `adjustment_positive −
    /// adjustment_negative` (one no-tax part per adjustment, or pro-rata parts).
    pub adjustments: Vec<PlanAdjustment>,
    /// Tenders booked out of (invoice) or into (credit note) their liability accounts.
    pub tenders: Vec<PlanTender>,
    /// Cross-border: every line carries `eu_type`.
    pub cross_border: bool,
    /// The one EU goods/services type of a cross-border document.
    pub eu_type: Option<EuSupplyType>,
    /// The document total.
    pub grand_total: Decimal,
    /// Magento's `base_to_order_rate`.
    pub base_to_order_rate: Option<Decimal>,
    /// Magento's base currency, when the payload carries it.
    pub base_currency: Option<Currency>,
    /// Billing address (the order's, else the contact's).
    pub billing_address: Option<Address>,
    /// Shipping address (the order's, else the contact's).
    pub shipping_address: Option<Address>,
    /// The destination country used for cross-border treatment, for messages.
    pub destination_country: Option<String>,
    /// The buyer's VAT number, normalised, that the routing used: the billing address's `vat_id`
    /// (the document's address, else the contact's), else the customer's `taxvat`
    /// ([`MagentoContact::vat_number`]). `Some` makes the buyer a business for the EU B2B rules
    /// ([`crate::tax::routing`]); the ledger contact carries it.
    pub vat_number: Option<String>,
    /// Warnings for the audit trail.
    pub warnings: Vec<PlanWarning>,
}

impl DocumentPlan {
    /// Σ line net + Σ line tax + shipping + adjustments − tenders: equals `grand_total`.
    pub fn total(&self) -> Decimal {
        self.lines.iter().map(|l| l.net + l.tax).sum::<Decimal>()
            + self.shipping.net
            + self.shipping.tax
            + self.adjustment_positive
            - self.adjustment_negative
            - self.tenders.iter().map(|t| t.amount).sum::<Decimal>()
    }

    /// Tax Magento collected for another country (`DestinationVat` lines and shipping).
    pub fn foreign_vat(&self) -> Decimal {
        let lines: Decimal =
            self.lines.iter().filter(|l| l.treatment == TaxTreatment::DestinationVat).map(|l| l.tax).sum();
        let ship =
            if self.shipping.treatment == TaxTreatment::DestinationVat { self.shipping.tax } else { Decimal::ZERO };
        lines + ship
    }
}

/// Fits a document reference into `max` characters, keeping the increment id whole (it is what
/// makes the reference unique) and shortening the prefix first; an increment id longer than
/// `max` keeps its last `max` characters.
pub fn fit_reference(reference: &str, increment_id: &str, max: usize) -> String {
    let len = reference.chars().count();
    if len <= max {
        return reference.to_owned();
    }
    let id_len = increment_id.chars().count();
    if id_len >= max || !reference.ends_with(increment_id) {
        return reference.chars().skip(len - max).collect();
    }
    let prefix: String = reference.chars().take(len - id_len).collect();
    format!("{}{increment_id}", prefix.chars().take(max - id_len).collect::<String>())
}

/// Decodes HTML entities (`Lumaflex&trade;` → `Lumaflex™`), as Sage rejects raw entities
/// (byte8-spec.md 9 Q4).
pub fn decode_entities(text: &str) -> String {
    html_escape::decode_html_entities(text).into_owned()
}

struct Source<'a> {
    kind: DocumentKind,
    magento_id: u64,
    increment_id: &'a str,
    currency: Currency,
    created: chrono::DateTime<chrono::Utc>,
    customer: &'a MagentoContact,
    lines: &'a [MagentoInvoiceLine],
    billing: Option<&'a Address>,
    shipping: Option<&'a Address>,
    base_to_order_rate: Option<Decimal>,
    base_currency: Option<Currency>,
    breakdown: Breakdown,
    tenders: &'a Tenders,
    grand_total: Decimal,
}

/// Plans an invoice.
///
/// # Errors
/// [`Error::Invalid`] when the invoice breaks its own rules or a domestic line's tax matches no
/// rate of the policy.
pub fn plan_invoice(inv: &MagentoInvoice, policy: &SyncPolicy, reference: &ReferenceData) -> Result<DocumentPlan> {
    inv.validate()?;
    plan(
        Source {
            kind: DocumentKind::Invoice,
            magento_id: inv.magento_id,
            increment_id: &inv.increment_id,
            currency: inv.currency,
            created: inv.created_at,
            customer: &inv.customer,
            lines: &inv.lines,
            billing: inv.billing_address.as_ref(),
            shipping: inv.shipping_address.as_ref(),
            base_to_order_rate: inv.base_to_order_rate,
            base_currency: inv.base_currency,
            breakdown: inv.breakdown()?,
            tenders: &inv.tenders,
            grand_total: inv.grand_total,
        },
        policy,
        reference,
    )
}

/// The addresses of a posted invoice, kept so that its credit notes route the same way.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DocumentAddresses {
    /// Billing address.
    pub billing: Option<Address>,
    /// Shipping address.
    pub shipping: Option<Address>,
}

/// Plans a credit memo with the same routing as invoices, so that a credit mirrors its invoice's
/// rates and EU type (tax.md 2.5). The canonical credit memo carries no addresses: pass the
/// refunded invoice's addresses when they are known, else the customer's are used.
///
/// # Errors
/// As [`plan_invoice`].
pub fn plan_credit_memo(
    memo: &MagentoCreditMemo,
    policy: &SyncPolicy,
    reference: &ReferenceData,
    invoice_addresses: Option<&DocumentAddresses>,
) -> Result<DocumentPlan> {
    memo.validate()?;
    plan(
        Source {
            kind: DocumentKind::CreditNote,
            magento_id: memo.magento_id,
            increment_id: &memo.increment_id,
            currency: memo.currency,
            created: memo.created_at,
            customer: &memo.customer,
            lines: &memo.lines,
            billing: invoice_addresses.and_then(|a| a.billing.as_ref()),
            shipping: invoice_addresses.and_then(|a| a.shipping.as_ref()),
            base_to_order_rate: memo.base_to_order_rate,
            base_currency: memo.base_currency,
            breakdown: memo.breakdown()?,
            tenders: &memo.tenders,
            grand_total: memo.grand_total,
        },
        policy,
        reference,
    )
}

fn place(a: Option<&Address>) -> Option<Place<'_>> {
    a.map(|a| Place { country: a.country_id.as_str(), postcode: a.postcode.as_deref() })
}

fn plan(src: Source<'_>, policy: &SyncPolicy, reference: &ReferenceData) -> Result<DocumentPlan> {
    let what = src.kind.what();
    let billing = src.billing.or_else(|| src.customer.address(AddressKind::Billing)).cloned();
    let shipping = src.shipping.or_else(|| src.customer.address(AddressKind::Shipping)).cloned();
    let seller = Seller {
        country: reference.business.country.clone(),
        northern_ireland: reference.business.northern_ireland,
        oss: policy.oss_registration,
    };
    // The VAT number, not the company name, makes a business buyer (issue 18; tax::routing).
    let vat_number = billing.as_ref().and_then(Address::vat_number).or_else(|| src.customer.vat_number());
    let buyer = Buyer {
        billing: place(billing.as_ref()),
        shipping: place(shipping.as_ref()),
        // Policy `company_name_without_vat_number_is_b2b`: the pre-issue-18 rule, by choice.
        has_vat_number: vat_number.is_some()
            || (policy.company_name_without_vat_number_is_b2b && src.customer.company_name().is_some()),
    };
    let domestic_rates = reference.domestic_percentages();
    let b = &src.breakdown;
    let supplies: Vec<Supply> = src
        .lines
        .iter()
        .zip(&b.lines)
        .map(|(l, a)| Supply {
            kind: policy.eu_type_for(l.product_type.as_deref()),
            digital: l.product_type.as_deref() == Some("downloadable"),
            net: a.net(),
            // Routed on Magento's own tax, as the rate is chosen below: the header's rounding
            // residual placed on a line could make a foreign rate look domestic on a small net
            // (German 19 % of 0.63, 0.11 rounded down, plus a residual penny, fits the UK's 20 %).
            tax: a.tax - a.tax_rounding,
        })
        .collect();
    let route = tax::route_document(&seller, &buyer, &supplies, policy.default_eu_goods_services_type, &domestic_rates);
    let ship_supply = Supply { kind: EuSupplyType::Goods, digital: false, net: b.shipping.net(), tax: b.shipping.tax };
    let ship_route = tax::route_line(&seller, &buyer, &ship_supply, &domestic_rates);

    let mut problems = Problems::new();
    let gift_card_line = |l: &MagentoInvoiceLine| l.product_type.as_deref() == Some(GIFT_CARD_PRODUCT_TYPE);
    let untaxed_without_number =
        src.lines.iter().zip(&route.lines).any(|(l, r)| r.missing_vat_number && !gift_card_line(l))
            || (ship_route.missing_vat_number && !b.shipping.net().is_zero());
    if untaxed_without_number {
        let country = shipping.as_ref().or(billing.as_ref()).map_or("abroad", |a| a.country_id.as_str());
        problems.push(
            "customer.vat_number",
            format!(
                "Magento charged no VAT on a supply to {country} that is free of VAT only for a VAT-registered business buyer (intra-EU supply or reverse charge), but the buyer has no VAT number: add it in Magento (the billing address's VAT number or the customer's Tax/VAT number) and resend, or correct the order's tax (a company name alone does not make a business buyer unless the policy says so with company_name_without_vat_number_is_b2b; the document was not posted)"
            ),
        );
    }
    let mut lines = Vec::with_capacity(src.lines.len());
    for (i, ((l, a), (s, r))) in src.lines.iter().zip(&b.lines).zip(supplies.iter().zip(&route.lines)).enumerate() {
        let gift_card = gift_card_line(l);
        let liability_account = if gift_card {
            if !a.tax.is_zero() {
                problems.push(
                    format!("lines[{i}].line_tax"),
                    format!(
                        "gift card `{}` carries tax {}: a gift card is a multi-purpose voucher, outside the scope of VAT when sold (VAT is due when it is redeemed); fix the gift card's tax class in Magento",
                        l.sku, a.tax
                    ),
                );
            }
            match policy.gift_card_ledger_account_id.clone() {
                Some(account) => Some(account),
                None => {
                    problems.push(
                        format!("lines[{i}].product_type"),
                        format!(
                            "gift card `{}` sold ({}): a multi-purpose voucher is a liability, not revenue; set the policy's gift_card_ledger_account_id to the gift card liability account so it is booked there (nothing was posted)",
                            l.sku,
                            a.net()
                        ),
                    );
                    None
                }
            }
        } else {
            None
        };
        let rate = if gift_card {
            None
        } else if r.treatment == TaxTreatment::Domestic {
            // The rate is chosen on Magento's own tax, before any rounding residual was placed on it.
            let line = tax::LineTax {
                net: a.net(),
                subtotal: a.subtotal,
                tax: a.tax - a.tax_rounding,
                tolerance: if a.discount_tax_compensation.is_zero() { PENNY } else { PENNY + PENNY },
                before_discount: policy.tax_calculated_before_discount,
            };
            match tax::domestic_rate(policy, &reference.tax_rates, line, l.tax_rate) {
                Ok(c) => Some(c),
                Err(rule) => {
                    problems.push(format!("lines[{i}].line_tax"), rule);
                    None
                }
            }
        } else {
            None
        };
        let name = decode_entities(l.name.trim());
        lines.push(PlanLine {
            index: i,
            sku: l.sku.clone(),
            description: if name.is_empty() { l.sku.clone() } else { name },
            product_type: l.product_type.clone(),
            qty: l.qty,
            unit_price: l.unit_price,
            subtotal: a.subtotal,
            net: a.net(),
            tax: a.tax,
            canonical_rate: l.tax_rate,
            treatment: if gift_card { TaxTreatment::OutsideScope } else { r.treatment },
            supply: s.kind,
            rate,
            liability_account,
        });
    }
    let ship_rate = if ship_route.treatment == TaxTreatment::Domestic
        && (!b.shipping.net().is_zero() || !b.shipping.tax.is_zero())
    {
        let line = tax::LineTax {
            net: b.shipping.net(),
            subtotal: b.shipping.amount,
            tax: b.shipping.tax,
            tolerance: if b.shipping.discount_tax_compensation.is_zero() { PENNY } else { PENNY + PENNY },
            before_discount: policy.tax_calculated_before_discount,
        };
        match tax::domestic_rate(policy, &reference.tax_rates, line, None) {
            Ok(c) => Some(c),
            Err(rule) => {
                problems.push("shipping_tax_amount", rule);
                None
            }
        }
    } else {
        None
    };
    let mut tenders = Vec::new();
    for (field, amount) in src.tenders.named() {
        if amount.is_zero() {
            continue;
        }
        let (key, account, label) = match field {
            "gift_cards_amount" => ("gift_card_ledger_account_id", &policy.gift_card_ledger_account_id, "Gift card"),
            "customer_balance_amount" => {
                ("store_credit_ledger_account_id", &policy.store_credit_ledger_account_id, "Store credit")
            }
            _ => ("reward_points_ledger_account_id", &policy.reward_points_ledger_account_id, "Reward points"),
        };
        let description = match src.kind {
            DocumentKind::Invoice => format!("{label} redeemed"),
            DocumentKind::CreditNote => format!("{label} refunded"),
        };
        match account {
            Some(account) => {
                tenders.push(PlanTender { field, description, amount, account: account.clone() })
            }
            None => problems.push(
                format!("tenders.{field}"),
                format!(
                    "{} of the {what} was {} by {}; set the policy's {key} to its liability account so the tender is booked there (never as a discount; nothing was posted)",
                    amount,
                    if src.kind == DocumentKind::Invoice { "paid" } else { "refunded" },
                    label.to_lowercase()
                ),
            ),
        }
    }
    problems.into_result(what)?;

    let adjustments = plan_adjustments(policy, reference, &lines, b, ship_rate.as_ref(), ship_route.treatment);

    let mut warnings: Vec<PlanWarning> = b.placements.iter().cloned().map(PlanWarning::Placed).collect();
    if route.coerced {
        warnings.push(PlanWarning::MixedEuTypesCoerced { used: policy.default_eu_goods_services_type });
    }
    let destination_country = shipping.as_ref().or(billing.as_ref()).map(|a| a.country_id.clone());
    let out = DocumentPlan {
        kind: src.kind,
        magento_id: src.magento_id,
        increment_id: src.increment_id.to_owned(),
        reference: policy.document_reference(src.increment_id),
        currency: src.currency,
        date: policy.local_date(src.created, &reference.business.country),
        lines,
        shipping: PlanShipping {
            net: b.shipping.net(),
            tax: b.shipping.tax,
            treatment: ship_route.treatment,
            rate: ship_rate,
        },
        adjustment_positive: b.adjustment_positive,
        adjustment_negative: b.adjustment_negative,
        adjustments,
        tenders,
        cross_border: route.cross_border,
        eu_type: route.eu_type,
        grand_total: src.grand_total,
        base_to_order_rate: src.base_to_order_rate,
        base_currency: src.base_currency,
        billing_address: billing,
        shipping_address: shipping,
        destination_country,
        vat_number,
        warnings,
    };
    if out.total() != out.grand_total {
        return Err(Error::internal(format!(
            "{what} {} plan adds up to {} instead of grand_total {}",
            out.increment_id,
            out.total(),
            out.grand_total
        )));
    }
    Ok(out)
}

/// The parts of a credit memo's adjustments under the policy's `adjustment_tax_treatment`.
///
/// `pro_rata`: each adjustment (VAT-inclusive, reg. 38) is split over the memo's own money in
/// proportion to the gross (net + VAT) each rate refunds: domestic lines and shipping grouped by
/// rate id, every other treatment (zero-rated, outside scope, reverse charge, foreign VAT, gift
/// cards) in one group without VAT. Each group's share is rounded half up with the remainder on
/// the largest group, so the parts add up to the adjustment exactly; a part's VAT is its VAT
/// fraction `share × pct / (100 + pct)` rounded half up (the rate's percentage, else the
/// group's own VAT ÷ net when the ledger gave none).
fn plan_adjustments(
    policy: &SyncPolicy,
    reference: &ReferenceData,
    lines: &[PlanLine],
    b: &Breakdown,
    ship_rate: Option<&RateChoice>,
    ship_treatment: TaxTreatment,
) -> Vec<PlanAdjustment> {
    use crate::{money::round_money, policy::AdjustmentTaxTreatment};

    struct Group {
        rate: Option<RateChoice>,
        net: Decimal,
        tax: Decimal,
    }
    let mut groups: Vec<Group> = Vec::new();
    let mut add = |rate: Option<&RateChoice>, net: Decimal, tax: Decimal| {
        let id = rate.map(|r| r.id.as_str());
        match groups.iter_mut().find(|g| g.rate.as_ref().map(|r| r.id.as_str()) == id) {
            Some(g) => {
                g.net += net;
                g.tax += tax;
            }
            None => groups.push(Group { rate: rate.cloned(), net, tax }),
        }
    };
    for l in lines {
        let domestic = l.treatment == TaxTreatment::Domestic && l.liability_account.is_none();
        add(if domestic { l.rate.as_ref() } else { None }, l.net, if domestic { l.tax } else { Decimal::ZERO });
    }
    let (ship_net, ship_tax) = (b.shipping.net(), b.shipping.tax);
    if !ship_net.is_zero() || !ship_tax.is_zero() {
        let domestic = ship_treatment == TaxTreatment::Domestic;
        add(if domestic { ship_rate } else { None }, ship_net, if domestic { ship_tax } else { Decimal::ZERO });
    }
    let gross_total: Decimal = groups.iter().map(|g| g.net + g.tax).sum();
    let pro_rata = policy.adjustment_tax_treatment == AdjustmentTaxTreatment::ProRata && gross_total > Decimal::ZERO;

    let mut out = Vec::new();
    for (amount, sign, description) in [
        (b.adjustment_positive, Decimal::ONE, "Adjustment refund"),
        (b.adjustment_negative, Decimal::NEGATIVE_ONE, "Adjustment fee"),
    ] {
        if amount.is_zero() {
            continue;
        }
        if !pro_rata {
            out.push(PlanAdjustment {
                description: description.to_owned(),
                net: sign * amount,
                tax: Decimal::ZERO,
                rate: None,
            });
            continue;
        }
        let mut shares: Vec<Decimal> =
            groups.iter().map(|g| round_money(amount * (g.net + g.tax) / gross_total)).collect();
        let rest = amount - shares.iter().copied().sum::<Decimal>();
        if let Some(largest) = (0..groups.len()).max_by_key(|&i| groups[i].net + groups[i].tax) {
            shares[largest] += rest;
        }
        for (g, share) in groups.iter().zip(shares) {
            if share.is_zero() {
                continue;
            }
            let pct = g
                .rate
                .as_ref()
                .and_then(|r| r.percentage.or_else(|| reference.tax_rate(&r.id).and_then(|t| t.percentage)));
            let tax = match (&g.rate, pct) {
                (None, _) => Decimal::ZERO,
                (Some(_), Some(p)) => round_money(share * p / (Decimal::ONE_HUNDRED + p)),
                (Some(_), None) if !g.net.is_zero() => round_money(share * g.tax / (g.net + g.tax)),
                (Some(_), None) => Decimal::ZERO,
            };
            out.push(PlanAdjustment {
                description: match &g.rate {
                    Some(r) => format!(
                        "{description} ({})",
                        pct.map_or_else(|| r.id.clone(), |p| format!("{}%", p.normalize()))
                    ),
                    None => format!("{description} (no VAT)"),
                },
                net: sign * (share - tax),
                tax: sign * tax,
                // The group's rate even when a small share's VAT rounds to 0: it adjusts that supply.
                rate: g.rate.clone(),
            });
        }
    }
    out
}

/// What Magento's exchange-rate information means to a ledger whose base currency is
/// `ledger_base` (issue 12 item 7).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LedgerRate {
    /// The document is in the ledger's base currency: no rate.
    BaseCurrency,
    /// Magento's `base_to_order_rate` converts from the ledger's base currency (`order = base ×
    /// rate`): it can be sent, in the ledger's direction.
    Magento(Decimal),
    /// Magento's rate does not convert into the ledger's base currency (Magento's base currency is
    /// another one, or Magento sent no usable rate): the reason names both currencies.
    NotConvertible(String),
}

/// Decides whether Magento's `base_to_order_rate` can be sent to a ledger of base currency
/// `ledger_base`:
///
/// - a document in the ledger's base currency needs no rate;
/// - Magento's rate converts from Magento's base currency, so it is sent only when that is the
///   ledger's base currency — known from `base_currency_code` when the payload carries it, else
///   inferred: a rate of exactly 1 between different currencies means Magento's base currency is
///   the document's own, not the ledger's;
/// - otherwise there is no correct rate to derive from Magento's data (Magento knows no rate into
///   the ledger's currency): [`LedgerRate::NotConvertible`], with a reason naming both currencies.
///   Sage then fails the document (Sage would otherwise book at a rate of 1), Xero omits its
///   `CurrencyRate` so that Xero's own daily rate applies.
pub fn ledger_rate(
    currency: Currency,
    magento_base: Option<Currency>,
    ledger_base: Currency,
    base_to_order_rate: Option<Decimal>,
) -> LedgerRate {
    if currency == ledger_base {
        return LedgerRate::BaseCurrency;
    }
    let (doc, ledger) = (currency.code(), ledger_base.code());
    match (magento_base, base_to_order_rate) {
        (Some(m), _) if m != ledger_base => LedgerRate::NotConvertible(format!(
            "Magento's base currency is {} and the ledger's is {ledger}: Magento's base_to_order_rate converts {} into {doc}, not {doc} into {ledger}, and Magento holds no {doc}→{ledger} rate",
            m.code(),
            m.code()
        )),
        (_, Some(r)) if r > Decimal::ZERO && (r != Decimal::ONE || magento_base.is_some()) => LedgerRate::Magento(r),
        (None, Some(r)) if r == Decimal::ONE => LedgerRate::NotConvertible(format!(
            "Magento's base_to_order_rate is 1 on a {doc} document, so Magento's base currency is {doc}, not the ledger's {ledger}: Magento holds no {doc}→{ledger} rate"
        )),
        _ => LedgerRate::NotConvertible(format!(
            "Magento sent no base_to_order_rate for this {doc} document, so there is no {doc}→{ledger} rate to send"
        )),
    }
}

#[cfg(test)]
mod ledger_rate_tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn cur(c: &str) -> Currency {
        Currency::from_code(c).unwrap()
    }

    #[test]
    fn rate_is_sent_only_when_it_converts_into_the_ledger_base() {
        let (gbp, eur, usd) = (cur("GBP"), cur("EUR"), cur("USD"));
        assert_eq!(ledger_rate(gbp, Some(eur), gbp, Some(dec!(0.85))), LedgerRate::BaseCurrency);
        assert_eq!(ledger_rate(eur, Some(gbp), gbp, Some(dec!(1.17))), LedgerRate::Magento(dec!(1.17)));
        assert_eq!(ledger_rate(eur, None, gbp, Some(dec!(1.17))), LedgerRate::Magento(dec!(1.17)));
        // Magento based in EUR, ledger in GBP, order in USD: the rate is EUR→USD, useless to GBP.
        let LedgerRate::NotConvertible(why) = ledger_rate(usd, Some(eur), gbp, Some(dec!(1.08))) else {
            panic!("a EUR→USD rate must not be sent to a GBP ledger")
        };
        assert!(why.contains("EUR") && why.contains("GBP") && why.contains("USD"), "{why}");
        // Order in Magento's own base EUR (rate 1) on a GBP ledger.
        let LedgerRate::NotConvertible(why) = ledger_rate(eur, None, gbp, Some(dec!(1))) else {
            panic!("rate 1 between EUR and GBP must not be sent")
        };
        assert!(why.contains("EUR") && why.contains("GBP"), "{why}");
        assert!(matches!(ledger_rate(eur, Some(gbp), gbp, None), LedgerRate::NotConvertible(_)));
    }
}
