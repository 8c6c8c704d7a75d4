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
/// [`MagentoInvoiceLine::discount`].
///
/// # Rows that carry no money
///
/// The Byte8 module maps **every** item of the document (`mapLine` of its `InvoiceRepository` and
/// `CreditMemoRepository`, one line per Magento item, `row_total` cast to a number so a missing
/// one reads 0, no parent link, and a `product_type` that is null for most items because
/// Magento's invoice and credit-memo item tables do not carry it). So its lines include Magento's
/// dummy rows (magento.md 5.1, 5.2, 5.7):
///
/// | row | what the module sends | what it means |
/// |---|---|---|
/// | configurable child | the child's SKU (the same as the parent's line), `unit_price` 0, no money | the parent carries the money and the SKU |
/// | dynamic bundle parent | the bundle's SKU, `unit_price` = Σ children, `line_subtotal` 0, no tax | the children carry the money |
/// | fixed bundle child | the child's SKU, `unit_price` 0, no money | the parent carries the money |
/// | item left out of a partial invoice / credit memo | `qty` 0, no money | nothing of it is on this document |
///
/// The rule, in one place for every input ([`keep_money_rows`], applied when the module's JSON
/// is read and by the REST adapter after its structural rules): **a row whose `line_subtotal`,
/// `line_tax` and `line_total` are all zero is not a line of the document**, whatever its
/// price or type, with one exception: in a document where no row carries money (a £0 invoice of
/// free items, which `sync_zero_value_invoices` may post), the rows with a quantity and a unit
/// price of 0 are its lines, once per SKU (a free configurable's child repeats its parent's SKU).
/// A catalogue item priced 0 sold next to paid items is therefore not a line of its own (Magento's
/// "free gift" rules give a price and a 100 % discount, which is a money line). Every other row is a money line and keeps every line rule
/// (`qty > 0`, `line_subtotal ≈ qty × unit_price`, ...); the header identities (Σ line subtotals
/// = `subtotal`, Σ line tax + shipping tax = `tax_amount`, `grand_total`) are then checked on the
/// money lines, so a row that lost its money is still caught by them. Consequences: one ledger line
/// per charged item; each SKU's stock moves once (a configurable's SKU only through the parent's
/// line; a fixed bundle's children through no line, their levels being Magento's and set by
/// `product.upserted`). A row with no money and a negative quantity or price is kept, so that
/// validation names it.
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
    /// True when the row carries money: a non-zero `line_subtotal`, `line_tax` or `line_total`
    /// (a line given away by a 100 % discount still carries its subtotal).
    pub fn carries_money(&self) -> bool {
        !(self.line_subtotal.is_zero() && self.line_tax.is_zero() && self.line_total.is_zero())
    }

    /// True for one of Magento's dummy rows (see the type's docs): no money, and a quantity and
    /// unit price that are not negative.
    pub fn is_dummy_row(&self) -> bool {
        !self.carries_money() && !self.qty.is_sign_negative() && !self.unit_price.is_sign_negative()
    }

    /// The line's discount: `line_subtotal + line_tax − line_total`.
    pub fn discount(&self) -> Decimal {
        self.line_subtotal + self.line_tax - self.line_total
    }
}

/// What paid part of a document other than the customer's payment method: Adobe Commerce's
/// gift cards, store credit (customer balance) and reward points (magento.md 5.8). They are
/// tenders, not discounts: Magento's `grand_total` is the sale **less** these, so the sale value
/// is `grand_total + total()`.
///
/// The Byte8 module sends **none** of these fields (its `InvoiceRepository` and
/// `CreditMemoRepository` map no extension attribute), so with the module's JSON an Adobe Commerce
/// order paid partly by gift card arrives with a `grand_total` below its lines and is refused
/// (`totals`, rule 4) rather than booked as a discount. A sender that knows them (the REST
/// adapter, from the document's `extension_attributes`; another producer of the canonical JSON)
/// puts them in a `tenders` object, all amounts positive:
///
/// | key | Magento field (invoice / credit memo `extension_attributes`) | booked on |
/// |---|---|---|
/// | `gift_cards_amount` | `gift_cards_amount` | policy `gift_card_ledger_account_id` |
/// | `customer_balance_amount` | `customer_balance_amount` | policy `store_credit_ledger_account_id` |
/// | `reward_currency_amount` | `reward_currency_amount` | policy `reward_points_ledger_account_id` |
///
/// The invoice keys are those magento.md 3.1 found in Adobe Commerce's invoice extension
/// attributes; `reward_currency_amount` and every credit-memo key are by analogy (magento.md 3.3
/// and section 7 mark them unconfirmed, Adobe Commerce's source not being public), and the REST
/// adapter reads each as a magnitude, zero when absent (Magento Open Source has none of them).
///
/// On a credit memo the same keys are the parts of the refund returned to the card, to store
/// credit or to points instead of to the payment method (Adobe Commerce's "refund to store
/// credit"); the credit note then books them to the liability account, and the cash refunded is
/// `grand_total`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tenders {
    /// Paid (or refunded) by gift card.
    #[serde(default, with = "serde_decimal")]
    pub gift_cards_amount: Decimal,
    /// Paid (or refunded) by store credit (Magento's customer balance).
    #[serde(default, with = "serde_decimal")]
    pub customer_balance_amount: Decimal,
    /// Paid (or refunded) by reward points, in money.
    #[serde(default, with = "serde_decimal")]
    pub reward_currency_amount: Decimal,
}

impl Tenders {
    /// Σ of the tenders.
    pub fn total(&self) -> Decimal {
        self.gift_cards_amount + self.customer_balance_amount + self.reward_currency_amount
    }

    /// The tenders with their field names, for messages and the plan.
    pub fn named(&self) -> [(&'static str, Decimal); 3] {
        [
            ("gift_cards_amount", self.gift_cards_amount),
            ("customer_balance_amount", self.customer_balance_amount),
            ("reward_currency_amount", self.reward_currency_amount),
        ]
    }

    /// Records a negative or out-of-range tender.
    pub(crate) fn check(&self, c: &mut Check<'_>) {
        for (name, v) in self.named() {
            if v.is_sign_negative() && !v.is_zero() {
                c.fail(&format!("tenders.{name}"), "must be ≥ 0 (tenders are positive)");
            }
            totals::check_amount(c, &format!("tenders.{name}"), v);
        }
    }
}

/// The money lines of a document's rows: every row but Magento's dummy rows
/// ([`MagentoInvoiceLine::is_dummy_row`]), in order. The one place where dummy rows are dropped,
/// for the module's JSON (on reading) and for the REST adapter.
pub fn keep_money_rows(rows: Vec<MagentoInvoiceLine>) -> Vec<MagentoInvoiceLine> {
    let before = rows.len();
    let zero_document = !rows.iter().any(MagentoInvoiceLine::carries_money);
    let mut free_skus = std::collections::HashSet::new();
    let kept: Vec<MagentoInvoiceLine> = rows
        .into_iter()
        .filter(|r| {
            !r.is_dummy_row()
                || (zero_document && r.qty > Decimal::ZERO && r.unit_price.is_zero() && free_skus.insert(r.sku.clone()))
        })
        .collect();
    if kept.len() != before {
        tracing::debug!(
            dropped = before - kept.len(),
            "rows without money (Magento dummy rows) are not document lines"
        );
    }
    kept
}

/// Serde for the `lines` of a document: reads every row the module sends and keeps the money
/// lines ([`keep_money_rows`]); writes the lines as they are.
pub(crate) mod serde_rows {
    use serde::{Deserialize, Deserializer};

    use super::{MagentoInvoiceLine, keep_money_rows};

    /// Reads the rows and drops the dummy ones.
    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<MagentoInvoiceLine>, D::Error> {
        Ok(keep_money_rows(Vec::<MagentoInvoiceLine>::deserialize(d)?))
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
    /// The money lines: the module's rows without Magento's dummy rows (see
    /// [`MagentoInvoiceLine`], *Rows that carry no money*).
    #[serde(deserialize_with = "serde_rows::deserialize")]
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
    /// Gift card, store credit and reward points that paid part of it (an extension of this
    /// crate; the module does not send it, see [`Tenders`]).
    #[serde(default)]
    pub tenders: Tenders,
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
            self.tenders.check(c);
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
            // The sale value: what the lines and shipping add up to, before the tenders.
            grand_total: self.grand_total + self.tenders.total(),
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

    /// The buyer as the ledger contact should carry it: [`MagentoInvoice::customer`], with the
    /// VAT number of the invoice's billing address (`vat_id`) when the contact has none of its
    /// own (the module's contact carries no VAT number; the order's address may).
    pub fn buyer(&self) -> std::borrow::Cow<'_, MagentoContact> {
        match self.billing_address.as_ref().and_then(Address::vat_number) {
            Some(number) if self.customer.vat_number().is_none() => {
                let mut c = self.customer.clone();
                c.vat_number = Some(number);
                std::borrow::Cow::Owned(c)
            }
            _ => std::borrow::Cow::Borrowed(&self.customer),
        }
    }

    /// True when the invoice is worth nothing: a zero total and no tender. An order paid wholly by
    /// gift card or store credit has `grand_total` 0 but a sale to book, so it is not zero-value
    /// (policy `sync_zero_value_invoices` does not skip it).
    pub fn is_zero_value(&self) -> bool {
        self.grand_total.is_zero() && self.tenders.total().is_zero()
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn row(sku: &str, qty: Decimal, price: Decimal, net: Decimal, tax: Decimal) -> MagentoInvoiceLine {
        MagentoInvoiceLine {
            sku: sku.into(),
            name: format!("{sku} name"),
            qty,
            unit_price: price,
            line_subtotal: net,
            line_tax: tax,
            line_total: net + tax,
            tax_rate: None,
            tax_class: None,
            product_type: None,
        }
    }

    fn skus(rows: &[MagentoInvoiceLine]) -> Vec<&str> {
        rows.iter().map(|r| r.sku.as_str()).collect()
    }

    #[test]
    fn rows_without_money_are_not_lines_unless_the_whole_document_is_free() {
        let rows = vec![
            row("TEE-S", dec!(1), dec!(20), dec!(20), dec!(4)), // configurable parent
            row("TEE-S", dec!(1), dec!(0), dec!(0), dec!(0)),   // its child
            row("KIT", dec!(1), dec!(15), dec!(0), dec!(0)),    // dynamic bundle parent
            row("MUG", dec!(1), dec!(15), dec!(15), dec!(3)),   // its child
            row("POSTER", dec!(0), dec!(8), dec!(0), dec!(0)),  // left out of this invoice
            row("FREE", dec!(1), dec!(10), dec!(10), dec!(0)),  // 100 % discount: still money
        ];
        let mut free = row("FREE", dec!(1), dec!(10), dec!(10), dec!(0));
        free.line_total = dec!(0);
        let mut rows = rows;
        rows[5] = free;
        assert_eq!(skus(&keep_money_rows(rows)), ["TEE-S", "MUG", "FREE"]);

        // A £0 document: its free items are its lines, once per SKU; qty-0 rows still are not.
        let rows = vec![
            row("SAMPLE", dec!(1), dec!(0), dec!(0), dec!(0)),
            row("SAMPLE", dec!(1), dec!(0), dec!(0), dec!(0)),
            row("OTHER", dec!(0), dec!(0), dec!(0), dec!(0)),
        ];
        assert_eq!(skus(&keep_money_rows(rows)), ["SAMPLE"]);

        // A row with no money but a negative quantity is kept so that validation names it.
        let rows = vec![row("A", dec!(1), dec!(5), dec!(5), dec!(1)), row("B", dec!(-1), dec!(0), dec!(0), dec!(0))];
        assert_eq!(skus(&keep_money_rows(rows)), ["A", "B"]);
    }

    #[test]
    fn an_invoice_paid_wholly_by_gift_card_is_not_zero_value() {
        let mut inv: MagentoInvoice = serde_json::from_value(serde_json::json!({
            "magento_id": 1, "increment_id": "1", "order_id": 1, "order_increment_id": "1", "currency": "GBP",
            "state": "paid", "customer": {"magento_id": 0, "email": "a@example.com", "addresses": []},
            "lines": [{"sku": "A", "name": "A", "qty": 1, "unit_price": 10, "line_subtotal": 10, "line_tax": 2,
                       "line_total": 12, "tax_rate": 0.2}],
            "subtotal": 10, "tax_amount": 2, "shipping_amount": 0, "shipping_tax_amount": 0, "discount_amount": 0,
            "grand_total": 0, "created_at": "2026-11-22T10:00:00Z", "tenders": {"gift_cards_amount": 12}
        }))
        .unwrap();
        inv.validate().unwrap();
        assert!(!inv.is_zero_value(), "12.00 of sales paid by gift card");
        inv.tenders = Tenders::default();
        inv.lines[0] = MagentoInvoiceLine {
            line_subtotal: dec!(0),
            line_tax: dec!(0),
            line_total: dec!(0),
            unit_price: dec!(0),
            ..inv.lines[0].clone()
        };
        assert!(inv.is_zero_value());
    }
}
