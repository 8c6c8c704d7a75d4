//! `MagentoInvoice` and `MagentoInvoiceLine` (byte8-spec.md sections 3.1 and 3.2).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::{
    Address, Check, MagentoContact,
    totals::{self, Breakdown, HeaderTotals},
};
use crate::{
    error::Result,
    money::{Currency, serde_currency, serde_decimal, serde_decimal_opt},
};

/// The state of a Magento invoice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvoiceState {
    /// Not yet paid (authorise-only, offline methods).
    Open,
    /// Paid (captured).
    Paid,
    /// Cancelled; never posted.
    #[serde(alias = "canceled")]
    Cancelled,
}

/// One line of an invoice or a credit memo (byte8-spec.md 3.2).
///
/// `line_total = line_subtotal + line_tax − discount`, so the line's discount is
/// [`MagentoInvoiceLine::discount`]. Dummy lines (configurable children, dynamic bundle parents) are
/// not sent by the module; the REST adapter drops them too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MagentoInvoiceLine {
    /// SKU (for a configurable product: the chosen child's SKU).
    pub sku: String,
    /// Product name, possibly with HTML entities (`Lumaflex&trade;`).
    pub name: String,
    /// Quantity (decimal for products sold by weight).
    #[serde(with = "serde_decimal")]
    pub qty: Decimal,
    /// Unit price excluding tax, before discount, rounded to 2 decimals by the module.
    #[serde(with = "serde_decimal")]
    pub unit_price: Decimal,
    /// Magento `row_total`: net, before discount.
    #[serde(with = "serde_decimal")]
    pub line_subtotal: Decimal,
    /// Tax on the line (after discount with Magento's default settings).
    #[serde(with = "serde_decimal")]
    pub line_tax: Decimal,
    /// `row_total + tax − item discount`.
    #[serde(with = "serde_decimal")]
    pub line_total: Decimal,
    /// `round(line_tax / line_subtotal, 4)` when both are > 0, else null. A ratio: 0.2 is 20 %.
    #[serde(default, with = "serde_decimal_opt")]
    pub tax_rate: Option<Decimal>,
    /// Always null today (the module does not load it).
    #[serde(default)]
    pub tax_class: Option<String>,
    /// Magento product type (`simple`, `virtual`, `downloadable`, ...), when known.
    #[serde(default)]
    pub product_type: Option<String>,
}

impl MagentoInvoiceLine {
    /// The line's discount: `line_subtotal + line_tax − line_total`.
    pub fn discount(&self) -> Decimal {
        self.line_subtotal + self.line_tax - self.line_total
    }
}

/// A Magento invoice as the Byte8 module serves it (byte8-spec.md 3.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MagentoInvoice {
    /// Magento invoice entity id.
    pub magento_id: u64,
    /// Human invoice number (`000000123`).
    pub increment_id: String,
    /// Order entity id.
    pub order_id: u64,
    /// Human order number.
    pub order_increment_id: String,
    /// Website of the order's store.
    #[serde(default)]
    pub website_id: u32,
    /// Store of the invoice.
    #[serde(default)]
    pub store_id: u32,
    /// Invoice (order) currency.
    #[serde(with = "serde_currency")]
    pub currency: Currency,
    /// Open, paid or cancelled.
    pub state: InvoiceState,
    /// The buyer (a synthetic contact with `magento_id = 0` for guests).
    pub customer: MagentoContact,
    /// The lines.
    pub lines: Vec<MagentoInvoiceLine>,
    /// Σ line subtotals.
    #[serde(with = "serde_decimal")]
    pub subtotal: Decimal,
    /// Total tax: Σ line tax + shipping tax.
    #[serde(with = "serde_decimal")]
    pub tax_amount: Decimal,
    /// Shipping excluding tax, before any shipping discount.
    #[serde(with = "serde_decimal")]
    pub shipping_amount: Decimal,
    /// Tax on shipping (included in `tax_amount`).
    #[serde(with = "serde_decimal")]
    pub shipping_tax_amount: Decimal,
    /// The header discount. Magento stores it ≤ 0; either sign is accepted and its magnitude used.
    #[serde(with = "serde_decimal")]
    pub discount_amount: Decimal,
    /// What the customer pays.
    #[serde(with = "serde_decimal")]
    pub grand_total: Decimal,
    /// When the invoice was created (UTC).
    #[serde(with = "super::serde_time")]
    pub created_at: DateTime<Utc>,
    /// Magento payment method code (`checkmo`, `braintree`), if the order has a payment.
    #[serde(default)]
    pub payment_method: Option<String>,
    /// The order's billing address.
    #[serde(default)]
    pub billing_address: Option<Address>,
    /// The order's shipping address (null for virtual orders).
    #[serde(default)]
    pub shipping_address: Option<Address>,
    /// Purchase-order number.
    #[serde(default)]
    pub po_number: Option<String>,
    /// `order = base × rate`; null means no exchange-rate information.
    #[serde(default, with = "serde_decimal_opt")]
    pub base_to_order_rate: Option<Decimal>,
    /// Magento's base currency (`base_currency_code`), the currency `base_to_order_rate` converts
    /// from. Optional for older payloads; see [`crate::plan::ledger_rate`] for how it decides the
    /// exchange rate sent to the ledger.
    #[serde(default, with = "crate::money::serde_currency_opt")]
    pub base_currency: Option<Currency>,
}

impl MagentoInvoice {
    /// Checks every rule of the document: field values and the arithmetic identities of
    /// magento.md section 4 (see [`totals`](super::totals) for the tolerances).
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) listing every broken rule with its field path.
    pub fn validate(&self) -> Result<()> {
        Check::run("invoice", |c| {
            if self.increment_id.trim().is_empty() {
                c.fail("increment_id", "must not be empty");
            }
            self.customer.check(&mut c.at("customer"));
            for (name, a) in [("billing_address", &self.billing_address), ("shipping_address", &self.shipping_address)]
            {
                if let Some(a) = a {
                    a.check(&mut c.at(name));
                }
            }
            if let Some(rate) = self.base_to_order_rate
                && rate <= Decimal::ZERO
            {
                c.fail("base_to_order_rate", "must be > 0 when present");
            }
            if self.lines.is_empty() {
                c.fail("lines", "must not be empty");
            }
            for (name, v) in [
                ("subtotal", self.subtotal),
                ("tax_amount", self.tax_amount),
                ("shipping_amount", self.shipping_amount),
                ("shipping_tax_amount", self.shipping_tax_amount),
                ("discount_amount", self.discount_amount),
                ("grand_total", self.grand_total),
            ] {
                totals::check_amount(c, name, v);
            }
            if let Some(rate) = self.base_to_order_rate {
                totals::check_amount(c, "base_to_order_rate", rate);
            }
            totals::check_lines(&self.lines, c);
            if c.is_clean()
                && let Err(e) = self.breakdown()
            {
                c.absorb("", e);
            }
        })
    }

    /// The header totals used by the identities.
    pub fn header(&self) -> HeaderTotals {
        HeaderTotals {
            subtotal: Some(self.subtotal),
            tax_amount: Some(self.tax_amount),
            discount_amount: Some(self.discount_amount),
            shipping_amount: self.shipping_amount,
            shipping_tax_amount: self.shipping_tax_amount,
            adjustment_positive: Decimal::ZERO,
            adjustment_negative: Decimal::ZERO,
            grand_total: self.grand_total,
        }
    }

    /// How the invoice's money splits into line nets, line taxes and shipping, with the discount
    /// tax compensation and rounding residuals placed (see [`totals`](super::totals)).
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) when the totals cannot be reconciled.
    pub fn breakdown(&self) -> Result<Breakdown> {
        totals::breakdown(&self.lines, &self.header())
    }

    /// True when the invoice total is zero.
    pub fn is_zero_value(&self) -> bool {
        self.grand_total.is_zero()
    }
}
