//! The arithmetic of a Magento document: the identities of magento.md section 4, checked with
//! the tolerances Magento's own rounding needs, and a [`Breakdown`] that places every penny.
//!
//! # Identities and tolerances
//!
//! For each line (I-3): `line_subtotal ≈ qty × unit_price` within `0.00505 × qty + 0.02`: the
//! module rounds Magento's unit price (kept with 4 decimals, itself rounded from the exact price:
//! ±0.00005) to 2 decimals (±0.005 a unit), and `row_total` is either the product rounded once
//! (tax-exclusive prices, ±0.005) or, with tax-inclusive prices, a rounded gross row (±0.005) less
//! a delta-rounded tax (< 0.01 off the exact tax, magento.md 5.4), so within two pennies; the line's discount `line_subtotal + line_tax − line_total` lies in
//! `[0, line_subtotal + line_tax]`; a present `tax_rate` equals `line_tax / line_subtotal` within
//! `0.0001` (the module rounds it to 4 decimals).
//!
//! For an invoice header: `Σ line_subtotal = subtotal` and `Σ line_tax + shipping_tax_amount =
//! tax_amount`, each within [`HEADER_TOLERANCE`] (one penny: Magento forces the last partial
//! invoice to the order's remainder); the part of `|discount_amount|` not on lines is the shipping
//! discount and must fit in `shipping_amount`.
//!
//! The document then reads `grand_total = Σ (line_subtotal − discount + line_tax) + shipping −
//! shipping discount + shipping tax + adjustment_positive − adjustment_negative + r`, and the
//! residual `r` is placed by these rules, in order:
//!
//! 1. `r > 0` and some line (or the shipping) has both a discount and tax: `r` is Magento's
//!    *discount tax compensation* (magento.md 5.3; the canonical shape does not carry it). It is
//!    net revenue, so it is added back to the net of those lines. Each line's share is estimated
//!    from Magento's own formula: with a tax-inclusive discount `d`, compensation `x = d·r/(1+r)`
//!    and `tax + x = r·subtotal`, so `x² + x(s + t − d) − d·t = 0` (subtotal `s`, tax `t`); the
//!    total is split in proportion to those estimates, each share rounded half up and the
//!    remainder on the largest.
//! 2. `|r| ≤` [`RESIDUAL_TOLERANCE`] (two pennies): a rounding residual from Magento's delta
//!    rounding. It goes on the tax of the line with the most tax (Magento's residue moves between
//!    line taxes, magento.md 5.4), or, if no line has tax, on the net of the largest line.
//! 3. `r < 0`, a credit memo (whose canonical header carries no discount) with shipping: the
//!    shortfall is a shipping discount, up to the shipping amount.
//!    The canonical credit memo has no discount header, so a shipping discount can only be
//!    inferred this way: a memo that carries both a discount tax compensation (an excess) and a
//!    shipping discount (a shortfall) reads as their difference. Should that misplace a penny of
//!    net, the rate check of the plan rejects the document with the line named; it is never
//!    posted wrong.
//! 4. Otherwise the document is rejected. A `grand_total` below its lines means an order-level
//!    tender (gift card, store credit, reward points) reduced it; folding that into revenue would
//!    misstate the books, so the crate refuses and says so, unless the document names the tenders
//!    ([`super::Tenders`]): the header's `grand_total` is then the sale value, Magento's
//!    `grand_total` plus the tenders, and the plan books the tenders on their liability accounts.
//!
//! After placement `Breakdown::total() == grand_total` exactly, which the property tests check.

use rust_decimal::Decimal;
use rust_decimal_macros::dec;

use super::{Check, MagentoInvoiceLine};
use crate::{
    error::{Error, Result},
    money::{RoundingPolicy, round_money},
};

/// Tolerance of each header identity (one penny).
pub const HEADER_TOLERANCE: Decimal = dec!(0.01);

/// The largest residual placed as a rounding adjustment (two pennies).
pub const RESIDUAL_TOLERANCE: Decimal = dec!(0.02);

/// The header totals of an invoice or credit memo. Invoices have a subtotal, tax and discount
/// header; credit memos have adjustments instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderTotals {
    /// Invoice subtotal.
    pub subtotal: Option<Decimal>,
    /// Invoice tax total.
    pub tax_amount: Option<Decimal>,
    /// Invoice discount (either sign).
    pub discount_amount: Option<Decimal>,
    /// Shipping before discount, excluding tax.
    pub shipping_amount: Decimal,
    /// Shipping tax.
    pub shipping_tax_amount: Decimal,
    /// Credit memo adjustment refund.
    pub adjustment_positive: Decimal,
    /// Credit memo adjustment fee.
    pub adjustment_negative: Decimal,
    /// The value the lines, shipping and adjustments add up to: Magento's `grand_total` plus the
    /// document's tenders ([`super::Tenders`]; zero for most documents).
    pub grand_total: Decimal,
}

/// The money of one line after reconciliation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineAmounts {
    /// Net before discount (`line_subtotal`).
    pub subtotal: Decimal,
    /// Magento's line discount.
    pub discount: Decimal,
    /// The part of the discount that was tax and is added back to net (rule 1).
    pub discount_tax_compensation: Decimal,
    /// A rounding adjustment to the net (rule 2, only when no line has tax).
    pub net_rounding: Decimal,
    /// Tax, including any rounding adjustment (rule 2).
    pub tax: Decimal,
    /// The rounding adjustment included in `tax`.
    pub tax_rounding: Decimal,
}

impl LineAmounts {
    /// Net after discount: `subtotal − discount + compensation + rounding`.
    pub fn net(&self) -> Decimal {
        self.subtotal - self.discount + self.discount_tax_compensation + self.net_rounding
    }

    /// Net plus tax.
    pub fn total(&self) -> Decimal {
        self.net() + self.tax
    }

    /// The discount the ledger shows: Magento's discount less the compensation.
    pub fn net_discount(&self) -> Decimal {
        self.discount - self.discount_tax_compensation
    }
}

/// The money of the shipping after reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ShippingAmounts {
    /// Shipping before discount.
    pub amount: Decimal,
    /// Shipping discount.
    pub discount: Decimal,
    /// Discount tax compensation on shipping.
    pub discount_tax_compensation: Decimal,
    /// Shipping tax.
    pub tax: Decimal,
}

impl ShippingAmounts {
    /// Shipping net after discount.
    pub fn net(&self) -> Decimal {
        self.amount - self.discount + self.discount_tax_compensation
    }
}

/// A residual placed by the rules of this module, for the audit trail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    /// Rule 1: discount tax compensation added back to net.
    DiscountTaxCompensation {
        /// The amount.
        amount: Decimal,
    },
    /// Rule 2: a rounding residual put on a line's tax (or net).
    Rounding {
        /// The amount (signed).
        amount: Decimal,
        /// The line index.
        line: usize,
        /// True when it went on the tax, false on the net.
        on_tax: bool,
    },
    /// Rule 3: an inferred shipping discount.
    ShippingDiscount {
        /// The amount.
        amount: Decimal,
    },
}

/// Where every penny of a document goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breakdown {
    /// One entry per canonical line, same order.
    pub lines: Vec<LineAmounts>,
    /// The shipping charge: net, tax and gross.
    pub shipping: ShippingAmounts,
    /// Credit memo adjustment refund (0 on invoices).
    pub adjustment_positive: Decimal,
    /// Credit memo adjustment fee (0 on invoices).
    pub adjustment_negative: Decimal,
    /// The document total.
    pub grand_total: Decimal,
    /// The residuals placed, if any.
    pub placements: Vec<Placement>,
}

impl Breakdown {
    /// The total the breakdown adds up to (equal to `grand_total` by construction).
    pub fn total(&self) -> Decimal {
        self.lines.iter().map(LineAmounts::total).sum::<Decimal>()
            + self.shipping.net()
            + self.shipping.tax
            + self.adjustment_positive
            - self.adjustment_negative
    }

    /// Σ line tax + shipping tax.
    pub fn tax_total(&self) -> Decimal {
        self.lines.iter().map(|l| l.tax).sum::<Decimal>() + self.shipping.tax
    }
}

/// The largest money amount a document may carry (a trillion): far above any real invoice, and
/// far enough below `Decimal`'s range that no sum or product of the crate can overflow.
pub const MAX_AMOUNT: Decimal = dec!(1_000_000_000_000);

/// The largest line quantity (a billion).
pub const MAX_QUANTITY: Decimal = dec!(1_000_000_000);

/// Records an out-of-range amount; true when `v` is within ±[`MAX_AMOUNT`].
pub(crate) fn check_amount(c: &mut Check<'_>, field: &str, v: Decimal) -> bool {
    if v.abs() > MAX_AMOUNT {
        c.fail(field, format!("must be at most {MAX_AMOUNT} in magnitude"));
        false
    } else {
        true
    }
}

/// Checks each line's own rules (not the header).
pub(crate) fn check_lines(lines: &[MagentoInvoiceLine], c: &mut Check<'_>) {
    for (i, line) in lines.iter().enumerate() {
        let mut c = c.at(&format!("lines[{i}]"));
        if line.name.trim().is_empty() && line.sku.trim().is_empty() {
            c.fail("name", "must not be empty when sku is empty (the ledger line needs a description)");
        }
        let mut in_range = true;
        if line.qty <= Decimal::ZERO {
            c.fail("qty", "must be > 0");
        } else if line.qty > MAX_QUANTITY {
            c.fail("qty", format!("must be at most {MAX_QUANTITY}"));
            in_range = false;
        }
        for (name, v) in [
            ("unit_price", line.unit_price),
            ("line_subtotal", line.line_subtotal),
            ("line_tax", line.line_tax),
            ("line_total", line.line_total),
        ] {
            if v < Decimal::ZERO {
                c.fail(name, "must be ≥ 0");
            }
            in_range &= check_amount(&mut c, name, v);
        }
        if let Some(rate) = line.tax_rate {
            in_range &= check_amount(&mut c, "tax_rate", rate);
        }
        if !in_range {
            continue;
        }
        if line.qty > Decimal::ZERO && line.unit_price >= Decimal::ZERO {
            let expected = line.qty * line.unit_price;
            let tolerance = dec!(0.00505) * line.qty + dec!(0.02);
            if (expected - line.line_subtotal).abs() > tolerance {
                c.fail(
                    "line_subtotal",
                    format!(
                        "{} does not equal qty × unit_price ({}) within Magento's unit-price rounding (±{})",
                        line.line_subtotal,
                        expected.normalize(),
                        tolerance.normalize()
                    ),
                );
            }
        }
        let discount = line.discount();
        if discount < Decimal::ZERO {
            c.fail(
                "line_total",
                format!(
                    "{} exceeds line_subtotal + line_tax ({}): the implied discount would be negative",
                    line.line_total,
                    line.line_subtotal + line.line_tax
                ),
            );
        }
        if let Some(rate) = line.tax_rate {
            if rate < Decimal::ZERO {
                c.fail("tax_rate", "must be ≥ 0");
            } else if line.line_subtotal > Decimal::ZERO && line.line_tax > Decimal::ZERO {
                let actual = line.line_tax / line.line_subtotal;
                if (actual - rate).abs() > dec!(0.0001) {
                    c.fail(
                        "tax_rate",
                        format!(
                            "{rate} does not match line_tax / line_subtotal ({})",
                            RoundingPolicy::HalfUp.round(actual, 4)
                        ),
                    );
                }
            }
        }
    }
}

/// Reconciles a document's lines with its header and places the residual (see the module docs).
///
/// # Errors
/// [`Error::Invalid`] naming the header field whose identity fails.
pub fn breakdown(lines: &[MagentoInvoiceLine], header: &HeaderTotals) -> Result<Breakdown> {
    let what = if header.subtotal.is_some() { "invoice" } else { "credit memo" };
    let mut out = Breakdown {
        lines: lines
            .iter()
            .map(|l| LineAmounts {
                subtotal: l.line_subtotal,
                discount: l.discount(),
                discount_tax_compensation: Decimal::ZERO,
                net_rounding: Decimal::ZERO,
                tax: l.line_tax,
                tax_rounding: Decimal::ZERO,
            })
            .collect(),
        shipping: ShippingAmounts {
            amount: header.shipping_amount,
            discount: Decimal::ZERO,
            discount_tax_compensation: Decimal::ZERO,
            tax: header.shipping_tax_amount,
        },
        adjustment_positive: header.adjustment_positive,
        adjustment_negative: header.adjustment_negative,
        grand_total: header.grand_total,
        placements: Vec::new(),
    };

    let mut problems = crate::error::Problems::new();
    let sum_sub: Decimal = lines.iter().map(|l| l.line_subtotal).sum();
    let sum_tax: Decimal = lines.iter().map(|l| l.line_tax).sum();
    let sum_disc: Decimal = out.lines.iter().map(|l| l.discount).sum();
    if let Some(subtotal) = header.subtotal
        && (sum_sub - subtotal).abs() > HEADER_TOLERANCE
    {
        problems.push("subtotal", format!("{subtotal} does not equal the sum of line_subtotal ({sum_sub})"));
    }
    if let Some(tax) = header.tax_amount {
        let expected = sum_tax + header.shipping_tax_amount;
        if (expected - tax).abs() > HEADER_TOLERANCE {
            problems.push(
                "tax_amount",
                format!("{tax} does not equal the sum of line_tax plus shipping_tax_amount ({expected})"),
            );
        }
    }
    if header.shipping_amount < Decimal::ZERO {
        problems.push("shipping_amount", "must be ≥ 0");
    }
    if header.shipping_tax_amount < Decimal::ZERO {
        problems.push("shipping_tax_amount", "must be ≥ 0");
    }
    if let Some(discount) = header.discount_amount {
        let magnitude = discount.abs();
        if sum_disc > magnitude + HEADER_TOLERANCE {
            problems.push(
                "discount_amount",
                format!("its magnitude {magnitude} is less than the sum of the line discounts ({sum_disc})"),
            );
        } else {
            let ship_disc = (magnitude - sum_disc).max(Decimal::ZERO);
            if ship_disc > header.shipping_amount + HEADER_TOLERANCE {
                problems.push(
                    "discount_amount",
                    format!(
                        "the part not on lines ({ship_disc}) exceeds shipping_amount ({}), so it cannot be a shipping discount",
                        header.shipping_amount
                    ),
                );
            } else {
                out.shipping.discount = ship_disc.min(header.shipping_amount);
            }
        }
    }
    if !problems.is_empty() {
        return problems.into_result(what).map(|()| out);
    }

    let residual = header.grand_total - out.total();
    if residual.is_zero() {
        return Ok(out);
    }

    // Rule 1: discount tax compensation.
    if residual > Decimal::ZERO {
        let mut weights: Vec<(Option<usize>, Decimal, Decimal)> = Vec::new(); // (line or shipping, weight, cap)
        for (i, l) in out.lines.iter().enumerate() {
            if l.discount > Decimal::ZERO && l.tax > Decimal::ZERO && l.subtotal > Decimal::ZERO {
                weights.push((Some(i), compensation_estimate(l.subtotal, l.tax, l.discount), l.discount));
            }
        }
        let s = &out.shipping;
        if s.discount > Decimal::ZERO && s.tax > Decimal::ZERO && s.amount > Decimal::ZERO {
            weights.push((None, compensation_estimate(s.amount, s.tax, s.discount), s.discount));
        }
        let cap: Decimal = weights.iter().map(|w| w.2).sum();
        if !weights.is_empty() && residual <= cap {
            let shares = apportion(residual, &weights.iter().map(|w| w.1).collect::<Vec<_>>());
            if shares.iter().zip(&weights).all(|(s, w)| *s <= w.2) {
                for (share, (target, _, _)) in shares.into_iter().zip(weights) {
                    match target {
                        Some(i) => out.lines[i].discount_tax_compensation += share,
                        None => out.shipping.discount_tax_compensation += share,
                    }
                }
                out.placements.push(Placement::DiscountTaxCompensation { amount: residual });
                return Ok(out);
            }
        }
    }

    // Rule 2: a rounding residual.
    if residual.abs() <= RESIDUAL_TOLERANCE {
        if let Some(i) = largest(&out.lines, |l| l.tax).filter(|&i| out.lines[i].tax + residual >= Decimal::ZERO) {
            out.lines[i].tax += residual;
            out.lines[i].tax_rounding += residual;
            out.placements.push(Placement::Rounding { amount: residual, line: i, on_tax: true });
            return Ok(out);
        }
        if let Some(i) =
            largest(&out.lines, LineAmounts::net).filter(|&i| out.lines[i].net() + residual >= Decimal::ZERO)
        {
            out.lines[i].net_rounding += residual;
            out.placements.push(Placement::Rounding { amount: residual, line: i, on_tax: false });
            return Ok(out);
        }
    }

    // Rule 3: a credit memo's shipping discount.
    if residual < Decimal::ZERO && header.discount_amount.is_none() && -residual <= header.shipping_amount {
        out.shipping.discount = -residual;
        out.placements.push(Placement::ShippingDiscount { amount: -residual });
        return Ok(out);
    }

    let parts = "the lines, shipping and adjustments";
    let rule = if residual < Decimal::ZERO {
        format!(
            "{} is {} below {parts} ({}); an order-level tender (gift card, store credit, reward points) or a broken document reduced it, and posting it would misstate revenue",
            header.grand_total,
            -residual,
            header.grand_total - residual
        )
    } else {
        format!(
            "{} exceeds {parts} ({}) by {residual}, which no discount tax compensation or rounding explains",
            header.grand_total,
            header.grand_total - residual
        )
    };
    Err(Error::invalid(what, "grand_total", rule))
}

/// Magento's discount tax compensation of a line, estimated from its subtotal `s`, tax `t` and
/// tax-inclusive discount `d`: the positive root of `x² + x(s + t − d) − d·t = 0`.
fn compensation_estimate(s: Decimal, t: Decimal, d: Decimal) -> Decimal {
    use rust_decimal::MathematicalOps;
    let b = s + t - d;
    let disc = b * b + Decimal::from(4) * d * t;
    match disc.sqrt() {
        Some(root) => ((root - b) / Decimal::TWO).max(Decimal::ZERO),
        None => d * t / s,
    }
}

/// Index of the entry with the largest key (first on ties), if the key is > 0.
fn largest<T>(items: &[T], key: impl Fn(&T) -> Decimal) -> Option<usize> {
    let mut best: Option<(usize, Decimal)> = None;
    for (i, it) in items.iter().enumerate() {
        let k = key(it);
        if k > Decimal::ZERO && best.is_none_or(|(_, b)| k > b) {
            best = Some((i, k));
        }
    }
    best.map(|(i, _)| i)
}

/// Splits `amount` (2 decimals) in proportion to `weights`, each share rounded half up and the
/// remainder on the largest weight, so that the shares add up to `amount` exactly.
pub(crate) fn apportion(amount: Decimal, weights: &[Decimal]) -> Vec<Decimal> {
    let total: Decimal = weights.iter().sum();
    if weights.is_empty() {
        return Vec::new();
    }
    if total.is_zero() {
        let mut v = vec![Decimal::ZERO; weights.len()];
        v[0] = amount;
        return v;
    }
    let mut shares: Vec<Decimal> = weights.iter().map(|w| round_money(amount * *w / total)).collect();
    let diff = amount - shares.iter().sum::<Decimal>();
    let idx = largest(weights, |w| *w).unwrap_or(0);
    shares[idx] += diff;
    shares
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn line(sub: Decimal, tax: Decimal, total: Decimal) -> MagentoInvoiceLine {
        MagentoInvoiceLine {
            sku: "S".into(),
            name: "N".into(),
            qty: Decimal::ONE,
            unit_price: sub,
            line_subtotal: sub,
            line_tax: tax,
            line_total: total,
            tax_rate: None,
            tax_class: None,
            product_type: None,
        }
    }

    fn inv_header(
        sub: Decimal,
        tax: Decimal,
        disc: Decimal,
        ship: Decimal,
        ship_tax: Decimal,
        gt: Decimal,
    ) -> HeaderTotals {
        HeaderTotals {
            subtotal: Some(sub),
            tax_amount: Some(tax),
            discount_amount: Some(disc),
            shipping_amount: ship,
            shipping_tax_amount: ship_tax,
            adjustment_positive: Decimal::ZERO,
            adjustment_negative: Decimal::ZERO,
            grand_total: gt,
        }
    }

    #[test]
    fn adobe_tutorial_invoice_adds_up() {
        // invoice.inventory-tutorial.discount.json: 2022 + 300 + 0 − 404.4 = 1917.6 (checked by hand
        // in magento.md §4); the lines carry 144 + 256 + 4.4 = 404.4 of discount.
        let lines = vec![
            line(dec!(720), dec!(0), dec!(576)),
            line(dec!(1280), dec!(0), dec!(1024)),
            line(dec!(22), dec!(0), dec!(17.6)),
        ];
        let b = breakdown(&lines, &inv_header(dec!(2022), dec!(0), dec!(-404.4), dec!(300), dec!(0), dec!(1917.6)))
            .unwrap();
        assert_eq!(b.total(), dec!(1917.6));
        assert_eq!(b.shipping.discount, dec!(0));
        assert!(b.placements.is_empty());
    }

    #[test]
    fn discount_tax_compensation_goes_back_to_net() {
        // magento.md I-3 worked example: gross 120 incl. 20 %, 10 % discount on the gross:
        // row_total 100, discount 12, tax after discount 18, compensation 2 → net 90, gross 108.
        let lines = vec![line(dec!(100), dec!(18), dec!(106))];
        let b = breakdown(&lines, &inv_header(dec!(100), dec!(18), dec!(-12), dec!(0), dec!(0), dec!(108))).unwrap();
        assert_eq!(b.lines[0].discount_tax_compensation, dec!(2));
        assert_eq!(b.lines[0].net(), dec!(90));
        assert_eq!(b.lines[0].net_discount(), dec!(10));
        assert_eq!(b.total(), dec!(108));
    }

    #[test]
    fn shipping_discount_is_the_discount_not_on_lines() {
        // 50 of goods with a 5 discount, 10 shipping with a 2 shipping discount: 50 − 5 + 10 − 2 = 53.
        let lines = vec![line(dec!(50), dec!(0), dec!(45))];
        let b = breakdown(&lines, &inv_header(dec!(50), dec!(0), dec!(-7), dec!(10), dec!(0), dec!(53))).unwrap();
        assert_eq!(b.shipping.discount, dec!(2));
        assert_eq!(b.shipping.net(), dec!(8));
        // The same with the discount given as a positive number.
        let b = breakdown(&lines, &inv_header(dec!(50), dec!(0), dec!(7), dec!(10), dec!(0), dec!(53))).unwrap();
        assert_eq!(b.total(), dec!(53));
    }

    #[test]
    fn penny_residual_goes_on_the_largest_tax() {
        // Header tax says 6.01 while the lines say 6.00 (Magento's delta rounding); grand total 36.01.
        let lines = vec![line(dec!(10), dec!(2), dec!(12)), line(dec!(20), dec!(4), dec!(24))];
        let b = breakdown(&lines, &inv_header(dec!(30), dec!(6.01), dec!(0), dec!(0), dec!(0), dec!(36.01))).unwrap();
        assert_eq!(b.lines[1].tax, dec!(4.01));
        assert_eq!(b.lines[1].tax_rounding, dec!(0.01));
        assert_eq!(b.total(), dec!(36.01));
    }

    #[test]
    fn gift_card_shortfall_is_rejected_naming_grand_total() {
        let lines = vec![line(dec!(100), dec!(20), dec!(120))];
        let err =
            breakdown(&lines, &inv_header(dec!(100), dec!(20), dec!(0), dec!(0), dec!(0), dec!(100))).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("grand_total"), "{msg}");
        assert!(msg.contains("gift card"), "{msg}");
    }

    #[test]
    fn header_identities_name_their_field() {
        let lines = vec![line(dec!(10), dec!(2), dec!(12))];
        let err = breakdown(&lines, &inv_header(dec!(11), dec!(3), dec!(0), dec!(0), dec!(0), dec!(12))).unwrap_err();
        let paths: Vec<_> = err.field_errors().iter().map(|e| e.path.clone()).collect();
        assert_eq!(paths, vec!["subtotal", "tax_amount"]);
    }

    #[test]
    fn credit_memo_shortfall_up_to_shipping_is_a_shipping_discount() {
        let lines = vec![line(dec!(40), dec!(8), dec!(48))];
        let header = HeaderTotals {
            subtotal: None,
            tax_amount: None,
            discount_amount: None,
            shipping_amount: dec!(5),
            shipping_tax_amount: dec!(1),
            adjustment_positive: dec!(2),
            adjustment_negative: dec!(3),
            grand_total: dec!(50),
        };
        // 48 + 5 + 1 + 2 − 3 = 53; the total 50 leaves a 3 shipping discount.
        let b = breakdown(&lines, &header).unwrap();
        assert_eq!(b.shipping.discount, dec!(3));
        assert_eq!(b.total(), dec!(50));
    }

    #[test]
    fn compensation_estimate_solves_magentos_formula() {
        // The I-3 example: s = 100, t = 18, d = 12 → x = 2 (x² + 106x − 216 = 0 → (x − 2)(x + 108)).
        assert_eq!(
            compensation_estimate(dec!(100), dec!(18), dec!(12))
                .round_dp_with_strategy(6, rust_decimal::RoundingStrategy::MidpointAwayFromZero),
            dec!(2)
        );
    }

    #[test]
    fn apportion_adds_up() {
        let shares = apportion(dec!(0.10), &[dec!(1), dec!(1), dec!(1)]);
        assert_eq!(shares.iter().sum::<Decimal>(), dec!(0.10));
        assert_eq!(shares, vec![dec!(0.04), dec!(0.03), dec!(0.03)]);
    }
}
