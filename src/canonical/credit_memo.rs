//! `MagentoCreditMemo` (byte8-spec.md section 3.5).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{
    Check, MagentoContact, MagentoInvoiceLine, Tenders,
    totals::{self, Breakdown, HeaderTotals},
};
use crate::{
    error::Result,
    money::{Currency, serde_currency, serde_decimal, serde_decimal_opt},
};

/// A Magento credit memo as the Byte8 module serves it (byte8-spec.md 3.5).
///
/// All amounts are positive: a credit memo is a refund document and the sign flips only when it is
/// posted. `adjustment_positive` (an extra refund) adds to the total and `adjustment_negative` (a
/// fee kept back) subtracts from it; Magento puts no tax on either.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MagentoCreditMemo {
    /// Magento credit memo entity id.
    pub magento_id: u64,
    /// Human credit memo number.
    pub increment_id: String,
    /// The refunded invoice; null for an offline refund created from the order.
    #[serde(default)]
    pub invoice_id: Option<u64>,
    /// The refunded invoice's number.
    #[serde(default)]
    pub invoice_increment_id: Option<String>,
    /// Website of the order's store.
    #[serde(default)]
    pub website_id: u32,
    /// Currency (the order currency).
    #[serde(with = "serde_currency")]
    pub currency: Currency,
    /// The buyer (same guest rule as invoices).
    pub customer: MagentoContact,
    /// Refunded money lines: the module's rows without Magento's dummy rows (qty-0 rows of items
    /// not refunded, bundle and configurable dummies; see [`MagentoInvoiceLine`]).
    #[serde(deserialize_with = "super::invoice::serde_rows::deserialize")]
    pub lines: Vec<MagentoInvoiceLine>,
    /// "Adjustment Refund": an extra amount refunded, without tax.
    #[serde(with = "serde_decimal")]
    pub adjustment_positive: Decimal,
    /// "Adjustment Fee": an amount kept back (e.g. a restocking fee), without tax.
    #[serde(with = "serde_decimal")]
    pub adjustment_negative: Decimal,
    /// What is refunded in all.
    #[serde(with = "serde_decimal")]
    pub grand_total: Decimal,
    /// Shipping refunded, excluding tax.
    #[serde(with = "serde_decimal")]
    pub shipping_amount: Decimal,
    /// Tax on the refunded shipping.
    #[serde(with = "serde_decimal")]
    pub shipping_tax_amount: Decimal,
    /// The first non-empty comment of the credit memo.
    #[serde(default)]
    pub reason: Option<String>,
    /// When the credit memo was created (UTC).
    #[serde(with = "super::serde_time")]
    pub created_at: DateTime<Utc>,
    /// The refunded invoice's date, when there is one.
    #[serde(default, with = "super::serde_time_opt")]
    pub invoice_created_at: Option<DateTime<Utc>>,
    /// The credit memo's own `base_to_order_rate`.
    #[serde(default, with = "serde_decimal_opt")]
    pub base_to_order_rate: Option<Decimal>,
    /// Parts of the refund returned to gift card, store credit or reward points instead of the
    /// payment method (an extension of this crate; see [`Tenders`]).
    #[serde(default)]
    pub tenders: Tenders,
    /// Magento's base currency (`base_currency_code`); as on the invoice.
    #[serde(default, with = "crate::money::serde_currency_opt")]
    pub base_currency: Option<Currency>,
}

impl MagentoCreditMemo {
    /// Checks every rule of the document (see [`MagentoInvoice::validate`](super::MagentoInvoice::validate)).
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) listing every broken rule with its field path.
    pub fn validate(&self) -> Result<()> {
        Check::run("credit memo", |c| {
            if self.increment_id.trim().is_empty() {
                c.fail("increment_id", "must not be empty");
            }
            self.customer.check(&mut c.at("customer"));
            for (name, v) in [
                ("adjustment_positive", self.adjustment_positive),
                ("adjustment_negative", self.adjustment_negative),
                ("shipping_amount", self.shipping_amount),
                ("shipping_tax_amount", self.shipping_tax_amount),
                ("grand_total", self.grand_total),
            ] {
                if v.is_sign_negative() && !v.is_zero() {
                    c.fail(name, "must be ≥ 0 (credit memo amounts are positive)");
                }
                totals::check_amount(c, name, v);
            }
            if let Some(rate) = self.base_to_order_rate {
                totals::check_amount(c, "base_to_order_rate", rate);
                if rate <= Decimal::ZERO {
                    c.fail("base_to_order_rate", "must be > 0 when present");
                }
            }
            if self.lines.is_empty() && self.adjustment_positive.is_zero() && self.shipping_amount.is_zero() {
                c.fail("lines", "must not be empty unless the credit memo refunds shipping or an adjustment");
            }
            self.tenders.check(c);
            totals::check_lines(&self.lines, c);
            if c.is_clean()
                && let Err(e) = self.breakdown()
            {
                c.absorb("", e);
            }
        })
    }

    /// The header totals used by the identities (a credit memo has no subtotal, tax or discount
    /// header in the canonical shape).
    pub fn header(&self) -> HeaderTotals {
        HeaderTotals {
            subtotal: None,
            tax_amount: None,
            discount_amount: None,
            shipping_amount: self.shipping_amount,
            shipping_tax_amount: self.shipping_tax_amount,
            adjustment_positive: self.adjustment_positive,
            adjustment_negative: self.adjustment_negative,
            // The value credited: the cash refunded plus what went back to the tenders.
            grand_total: self.grand_total + self.tenders.total(),
        }
    }

    /// How the credit memo's money splits (see [`totals`](super::totals)).
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) when the totals cannot be reconciled.
    pub fn breakdown(&self) -> Result<Breakdown> {
        totals::breakdown(&self.lines, &self.header())
    }
}
