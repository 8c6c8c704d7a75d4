//! Every document-checking rule of `canonical`, one table row each: a valid document with exactly
//! that rule broken must fail with exactly one field error naming the field path and the rule, and
//! the boundary values on the accepted side must pass.
//!
//! The expected messages and boundaries are worked out by hand in the comments of each row (the
//! tolerances are those documented in `canonical::totals`), never copied from the code's output.

use byte8_ledger_core::{
    Error,
    canonical::{
        InvoiceState, MagentoContact, MagentoCreditMemo, MagentoInvoice, MagentoInvoiceLine, MagentoPayment,
        MagentoProduct,
    },
    error::FieldError,
    money::Currency,
};
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

fn at() -> DateTime<Utc> {
    "2026-11-22T10:00:00Z".parse().unwrap()
}

fn contact() -> MagentoContact {
    MagentoContact {
        magento_id: 5,
        email: "jane@example.com".into(),
        first_name: Some("Jane".into()),
        last_name: Some("Doe".into()),
        company: None,
        vat_number: None,
        phone: None,
        website_id: 1,
        group_id: None,
        addresses: vec![],
        created_at: None,
        updated_at: None,
    }
}

/// A line with `sku` "A" and name "Widget".
fn line(
    qty: Decimal,
    unit_price: Decimal,
    line_subtotal: Decimal,
    line_tax: Decimal,
    line_total: Decimal,
    tax_rate: Option<Decimal>,
) -> MagentoInvoiceLine {
    MagentoInvoiceLine {
        sku: "A".into(),
        name: "Widget".into(),
        qty,
        unit_price,
        line_subtotal,
        line_tax,
        line_total,
        tax_rate,
        tax_class: None,
        product_type: Some("simple".into()),
    }
}

/// 2 × 10.00, tax 4.00 at 20 %: the line every case starts from.
fn good_line() -> MagentoInvoiceLine {
    line(dec!(2), dec!(10.00), dec!(20.00), dec!(4.00), dec!(24.00), Some(dec!(0.2)))
}

/// An invoice of the one line `l` whose header agrees with it exactly: subtotal = line_subtotal,
/// tax = line tax + shipping tax, discount = the line's discount, grand total = line total +
/// shipping + shipping tax. So the only rule it can break is one of the line's own.
fn invoice_of(l: MagentoInvoiceLine, shipping: Decimal, shipping_tax: Decimal) -> MagentoInvoice {
    let discount = (l.line_subtotal + l.line_tax - l.line_total).max(Decimal::ZERO);
    MagentoInvoice {
        magento_id: 1001,
        increment_id: "000000123".into(),
        order_id: 77,
        order_increment_id: "000000077".into(),
        website_id: 1,
        store_id: 1,
        currency: Currency::GBP,
        state: InvoiceState::Open,
        customer: contact(),
        subtotal: l.line_subtotal,
        tax_amount: l.line_tax + shipping_tax,
        shipping_amount: shipping,
        shipping_tax_amount: shipping_tax,
        discount_amount: -discount,
        grand_total: l.line_total + shipping + shipping_tax,
        lines: vec![l],
        created_at: at(),
        payment_method: Some("checkmo".into()),
        billing_address: None,
        shipping_address: None,
        po_number: None,
        base_to_order_rate: Some(dec!(1.0)),
        tenders: Default::default(),
        base_currency: None,
    }
}

/// The invoice of [`good_line`] with 5.00 shipping and 1.00 shipping tax: grand total 30.00.
fn invoice_with(l: MagentoInvoiceLine) -> MagentoInvoice {
    invoice_of(l, dec!(5.00), dec!(1.00))
}

fn invoice() -> MagentoInvoice {
    invoice_with(good_line())
}

/// A credit memo refunding [`good_line`] (24.00), 5.00 shipping, 1.00 shipping tax, a 2.00
/// adjustment refund and a 3.00 fee: 24 + 5 + 1 + 2 − 3 = 29.00.
fn credit_memo() -> MagentoCreditMemo {
    MagentoCreditMemo {
        magento_id: 2001,
        increment_id: "000000045".into(),
        invoice_id: Some(1001),
        invoice_increment_id: Some("000000123".into()),
        website_id: 1,
        currency: Currency::GBP,
        customer: contact(),
        lines: vec![good_line()],
        adjustment_positive: dec!(2.00),
        adjustment_negative: dec!(3.00),
        grand_total: dec!(29.00),
        shipping_amount: dec!(5.00),
        shipping_tax_amount: dec!(1.00),
        reason: None,
        created_at: at(),
        invoice_created_at: Some(at()),
        base_to_order_rate: Some(dec!(1.0)),
        tenders: Default::default(),
        base_currency: None,
    }
}

/// A credit memo without lines refunding only what the arguments say (grand total = their sum).
fn credit_memo_without_lines(shipping: Decimal, shipping_tax: Decimal, adjustment: Decimal) -> MagentoCreditMemo {
    MagentoCreditMemo {
        lines: vec![],
        shipping_amount: shipping,
        shipping_tax_amount: shipping_tax,
        adjustment_positive: adjustment,
        adjustment_negative: Decimal::ZERO,
        grand_total: shipping + shipping_tax + adjustment,
        ..credit_memo()
    }
}

fn payment() -> MagentoPayment {
    MagentoPayment {
        magento_id: 1001,
        invoice_id: 1001,
        invoice_increment_id: "000000123".into(),
        method: "checkmo".into(),
        currency: Currency::GBP,
        amount: dec!(30.00),
        captured_at: at(),
        gateway_txn_id: None,
        gateway_metadata: serde_json::Value::Null,
    }
}

fn product() -> MagentoProduct {
    MagentoProduct {
        magento_id: 9,
        sku: "A".into(),
        name: "Widget".into(),
        product_type: "simple".into(),
        price: Some(dec!(10.00)),
        special_price: Some(dec!(9.00)),
        cost: Some(dec!(4.00)),
        weight: Some(dec!(1.5)),
        stock_qty: Some(dec!(100)),
        manage_stock: true,
        tax_class: Some("2".into()),
        website_ids: vec![],
        created_at: None,
        updated_at: None,
    }
}

// A few dozen short-lived test values: boxing the invoice would only add noise.
#[allow(clippy::large_enum_variant)]
enum Doc {
    Invoice(MagentoInvoice),
    CreditMemo(MagentoCreditMemo),
    Payment(MagentoPayment),
    Product(MagentoProduct),
}

impl Doc {
    fn validate(&self) -> byte8_ledger_core::Result<()> {
        match self {
            Self::Invoice(d) => d.validate(),
            Self::CreditMemo(d) => d.validate(),
            Self::Payment(d) => d.validate(),
            Self::Product(d) => d.validate(),
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Self::Invoice(_) => "invoice",
            Self::CreditMemo(_) => "credit memo",
            Self::Payment(_) => "payment",
            Self::Product(_) => "product",
        }
    }
}

/// `None`: the document must pass. `Some((path, rule))`: it must fail with exactly that error.
type Expect = Option<(&'static str, String)>;

fn ok() -> Expect {
    None
}

fn broken(path: &'static str, rule: impl Into<String>) -> Expect {
    Some((path, rule.into()))
}

/// An invoice whose one line is changed by `f`, the header following the line.
fn inv_line(f: impl FnOnce(&mut MagentoInvoiceLine)) -> Doc {
    let mut l = good_line();
    f(&mut l);
    Doc::Invoice(invoice_with(l))
}

fn inv(f: impl FnOnce(&mut MagentoInvoice)) -> Doc {
    let mut d = invoice();
    f(&mut d);
    Doc::Invoice(d)
}

fn memo(f: impl FnOnce(&mut MagentoCreditMemo)) -> Doc {
    let mut d = credit_memo();
    f(&mut d);
    Doc::CreditMemo(d)
}

fn pay(f: impl FnOnce(&mut MagentoPayment)) -> Doc {
    let mut d = payment();
    f(&mut d);
    Doc::Payment(d)
}

fn prod(f: impl FnOnce(&mut MagentoProduct)) -> Doc {
    let mut d = product();
    f(&mut d);
    Doc::Product(d)
}

const NOT_NEGATIVE: &str = "must be ≥ 0";
const MEMO_NOT_NEGATIVE: &str = "must be ≥ 0 (credit memo amounts are positive)";
const RATE_POSITIVE: &str = "must be > 0 when present";
const AMOUNT_LIMIT: &str = "must be at most 1000000000000 in magnitude";
const NAME_OR_SKU: &str = "must not be empty when sku is empty (the ledger line needs a description)";

const VAT_SHAPE: &str =
    "must be a VAT number: 8 to 20 letters and digits, optionally after the country prefix (e.g. `DE123456789`)";

/// A German billing address with this `vat_id`.
fn billing_with_vat_id(vat_id: &str) -> byte8_ledger_core::canonical::Address {
    serde_json::from_value(
        serde_json::json!({"kind": "billing", "city": "Berlin", "country_id": "DE", "vat_id": vat_id}),
    )
    .unwrap()
}

fn subtotal_rule(subtotal: &str, expected: &str, tolerance: &str) -> String {
    format!(
        "{subtotal} does not equal qty × unit_price ({expected}) within Magento's unit-price rounding (±{tolerance})"
    )
}

fn cases() -> Vec<(&'static str, Doc, Expect)> {
    vec![
        // The starting points themselves are valid.
        ("valid invoice", Doc::Invoice(invoice()), ok()),
        ("valid credit memo", Doc::CreditMemo(credit_memo()), ok()),
        ("valid payment", Doc::Payment(payment()), ok()),
        ("valid product", Doc::Product(product()), ok()),
        // --- totals::check_lines: line_subtotal ≈ qty × unit_price within 0.00505 × qty + 0.02.
        // qty 2 × 10.00 = 20; tolerance 0.0101 + 0.02 = 0.0301. The comparison is `>`, so a
        // difference of exactly 0.0301 passes and 0.0302 fails, on either side.
        (
            "line_subtotal exactly at +tolerance (qty 2)",
            inv_line(|l| {
                (l.line_subtotal, l.line_tax, l.line_total, l.tax_rate) = (dec!(20.0301), dec!(0), dec!(20.0301), None)
            }),
            ok(),
        ),
        (
            "line_subtotal just beyond +tolerance (qty 2)",
            inv_line(|l| {
                (l.line_subtotal, l.line_tax, l.line_total, l.tax_rate) = (dec!(20.0302), dec!(0), dec!(20.0302), None)
            }),
            broken("lines[0].line_subtotal", subtotal_rule("20.0302", "20", "0.0301")),
        ),
        (
            "line_subtotal exactly at −tolerance (qty 2)",
            inv_line(|l| {
                (l.line_subtotal, l.line_tax, l.line_total, l.tax_rate) = (dec!(19.9699), dec!(0), dec!(19.9699), None)
            }),
            ok(),
        ),
        (
            "line_subtotal just beyond −tolerance (qty 2)",
            inv_line(|l| {
                (l.line_subtotal, l.line_tax, l.line_total, l.tax_rate) = (dec!(19.9698), dec!(0), dec!(19.9698), None)
            }),
            broken("lines[0].line_subtotal", subtotal_rule("19.9698", "20", "0.0301")),
        ),
        // qty 100 × 1.00 = 100; tolerance 0.505 + 0.02 = 0.525 (the per-unit term dominates).
        (
            "line_subtotal exactly at +tolerance (qty 100)",
            Doc::Invoice(invoice_with(line(dec!(100), dec!(1.00), dec!(100.525), dec!(0), dec!(100.525), None))),
            ok(),
        ),
        (
            "line_subtotal just beyond +tolerance (qty 100)",
            Doc::Invoice(invoice_with(line(dec!(100), dec!(1.00), dec!(100.526), dec!(0), dec!(100.526), None))),
            broken("lines[0].line_subtotal", subtotal_rule("100.526", "100", "0.525")),
        ),
        // --- line_total ≤ line_subtotal + line_tax (the implied discount must not be negative).
        // 20.00 + 4.00 = 24.00; 24.01 implies a discount of −0.01. (24.00 is the valid invoice.)
        (
            "line_total above subtotal + tax",
            inv_line(|l| l.line_total = dec!(24.01)),
            broken(
                "lines[0].line_total",
                "24.01 exceeds line_subtotal + line_tax (24.00): the implied discount would be negative",
            ),
        ),
        // --- tax_rate = line_tax / line_subtotal within 0.0001. 4.00 / 20.00 = 0.2: 0.2001 and
        // 0.1999 are exactly 0.0001 off (pass), 0.2002 and 0.1998 are 0.0002 off (fail). The quotient is
        // shown with the scale Decimal division gives it (4.00 / 20.00 = 0.20).
        ("tax_rate exactly at +0.0001", inv_line(|l| l.tax_rate = Some(dec!(0.2001))), ok()),
        ("tax_rate exactly at −0.0001", inv_line(|l| l.tax_rate = Some(dec!(0.1999))), ok()),
        (
            "tax_rate 0.0002 above line_tax / line_subtotal",
            inv_line(|l| l.tax_rate = Some(dec!(0.2002))),
            broken("lines[0].tax_rate", "0.2002 does not match line_tax / line_subtotal (0.20)"),
        ),
        (
            "tax_rate 0.0002 below line_tax / line_subtotal",
            inv_line(|l| l.tax_rate = Some(dec!(0.1998))),
            broken("lines[0].tax_rate", "0.1998 does not match line_tax / line_subtotal (0.20)"),
        ),
        // 1.00 / 3.00 = 0.33333…, shown rounded half up to 4 places: 0.3333. 0.3335 is 0.000167 off.
        (
            "tax_rate off a recurring ratio",
            Doc::Invoice(invoice_with(line(
                dec!(3),
                dec!(1.00),
                dec!(3.00),
                dec!(1.00),
                dec!(4.00),
                Some(dec!(0.3335)),
            ))),
            broken("lines[0].tax_rate", "0.3335 does not match line_tax / line_subtotal (0.3333)"),
        ),
        (
            "tax_rate within 0.0001 of a recurring ratio",
            Doc::Invoice(invoice_with(line(
                dec!(3),
                dec!(1.00),
                dec!(3.00),
                dec!(1.00),
                dec!(4.00),
                Some(dec!(0.3334)),
            ))),
            ok(),
        ),
        ("negative tax_rate", inv_line(|l| l.tax_rate = Some(dec!(-0.2))), broken("lines[0].tax_rate", NOT_NEGATIVE)),
        // --- a line needs a name or a SKU.
        (
            "name and sku both empty",
            inv_line(|l| (l.name, l.sku) = (String::new(), String::new())),
            broken("lines[0].name", NAME_OR_SKU),
        ),
        (
            "name and sku both blank",
            inv_line(|l| (l.name, l.sku) = ("  ".into(), "\t".into())),
            broken("lines[0].name", NAME_OR_SKU),
        ),
        ("name empty, sku present", inv_line(|l| l.name = String::new()), ok()),
        ("sku empty, name present", inv_line(|l| l.sku = String::new()), ok()),
        // --- line amounts: ≥ 0 and at most 10^12 in magnitude; qty at most 10^9.
        ("negative unit_price", inv_line(|l| l.unit_price = dec!(-10.00)), broken("lines[0].unit_price", NOT_NEGATIVE)),
        (
            "negative line_total",
            // Subtotal 0, tax 0, total −1: the implied discount 1 is positive, so only the sign rule.
            Doc::Invoice(invoice_with(line(dec!(1), dec!(0), dec!(0), dec!(0), dec!(-1), None))),
            broken("lines[0].line_total", NOT_NEGATIVE),
        ),
        (
            "unit_price above the amount limit",
            inv_line(|l| l.unit_price = dec!(1_000_000_000_000.01)),
            broken("lines[0].unit_price", AMOUNT_LIMIT),
        ),
        // (The header is left as it is: following the line, it would break its own limit too.)
        (
            "line_subtotal above the amount limit",
            inv(|d| d.lines[0].line_subtotal = dec!(1_000_000_000_000.01)),
            broken("lines[0].line_subtotal", AMOUNT_LIMIT),
        ),
        (
            "line_tax above the amount limit",
            inv(|d| d.lines[0].line_tax = dec!(1_000_000_000_000.01)),
            broken("lines[0].line_tax", AMOUNT_LIMIT),
        ),
        (
            "line_total above the amount limit",
            inv(|d| d.lines[0].line_total = dec!(1_000_000_000_000.01)),
            broken("lines[0].line_total", AMOUNT_LIMIT),
        ),
        (
            "tax_rate above the amount limit",
            inv_line(|l| l.tax_rate = Some(dec!(1_000_000_000_000.01))),
            broken("lines[0].tax_rate", AMOUNT_LIMIT),
        ),
        (
            "amounts exactly at the limit",
            // 1 × 10^12 with no shipping, so the header stays at the limit too.
            Doc::Invoice(invoice_of(
                line(dec!(1), dec!(1_000_000_000_000), dec!(1_000_000_000_000), dec!(0), dec!(1_000_000_000_000), None),
                dec!(0),
                dec!(0),
            )),
            ok(),
        ),
        (
            "qty above the quantity limit",
            inv_line(|l| l.qty = dec!(1_000_000_000.5)),
            broken("lines[0].qty", "must be at most 1000000000"),
        ),
        (
            "qty exactly at the quantity limit",
            // 10^9 × 0.01 = 10,000,000.00.
            Doc::Invoice(invoice_with(line(
                dec!(1_000_000_000),
                dec!(0.01),
                dec!(10_000_000.00),
                dec!(0),
                dec!(10_000_000.00),
                None,
            ))),
            ok(),
        ),
        // --- invoice header: base_to_order_rate > 0 when present.
        (
            "invoice rate zero",
            inv(|d| d.base_to_order_rate = Some(dec!(0))),
            broken("base_to_order_rate", RATE_POSITIVE),
        ),
        (
            "invoice rate negative",
            inv(|d| d.base_to_order_rate = Some(dec!(-1.1))),
            broken("base_to_order_rate", RATE_POSITIVE),
        ),
        ("invoice rate absent", inv(|d| d.base_to_order_rate = None), ok()),
        ("invoice rate 1.25", inv(|d| d.base_to_order_rate = Some(dec!(1.25))), ok()),
        // --- credit memo: every header amount ≥ 0.
        (
            "memo adjustment_positive negative",
            memo(|d| d.adjustment_positive = dec!(-0.01)),
            broken("adjustment_positive", MEMO_NOT_NEGATIVE),
        ),
        (
            "memo adjustment_negative negative",
            memo(|d| d.adjustment_negative = dec!(-0.01)),
            broken("adjustment_negative", MEMO_NOT_NEGATIVE),
        ),
        (
            "memo shipping_amount negative",
            memo(|d| d.shipping_amount = dec!(-0.01)),
            broken("shipping_amount", MEMO_NOT_NEGATIVE),
        ),
        (
            "memo shipping_tax_amount negative",
            memo(|d| d.shipping_tax_amount = dec!(-0.01)),
            broken("shipping_tax_amount", MEMO_NOT_NEGATIVE),
        ),
        ("memo grand_total negative", memo(|d| d.grand_total = dec!(-0.01)), broken("grand_total", MEMO_NOT_NEGATIVE)),
        (
            "memo grand_total above the amount limit",
            memo(|d| d.grand_total = dec!(1_000_000_000_000.01)),
            broken("grand_total", AMOUNT_LIMIT),
        ),
        // --- credit memo: lines may be empty only when shipping or an adjustment is refunded.
        (
            "memo without lines, shipping or adjustment",
            Doc::CreditMemo(credit_memo_without_lines(dec!(0), dec!(0), dec!(0))),
            broken("lines", "must not be empty unless the credit memo refunds shipping or an adjustment"),
        ),
        (
            "memo refunding only shipping",
            Doc::CreditMemo(credit_memo_without_lines(dec!(5.00), dec!(1.00), dec!(0))),
            ok(),
        ),
        (
            "memo refunding only an adjustment",
            Doc::CreditMemo(credit_memo_without_lines(dec!(0), dec!(0), dec!(2.00))),
            ok(),
        ),
        // --- credit memo: base_to_order_rate > 0 when present.
        ("memo rate zero", memo(|d| d.base_to_order_rate = Some(dec!(0))), broken("base_to_order_rate", RATE_POSITIVE)),
        (
            "memo rate negative",
            memo(|d| d.base_to_order_rate = Some(dec!(-0.5))),
            broken("base_to_order_rate", RATE_POSITIVE),
        ),
        ("memo rate absent", memo(|d| d.base_to_order_rate = None), ok()),
        // --- payment.
        (
            "payment magento_id differs from invoice_id",
            pay(|d| d.magento_id = 1002),
            broken("magento_id", "must equal invoice_id (1001)"),
        ),
        ("payment amount negative", pay(|d| d.amount = dec!(-0.01)), broken("amount", NOT_NEGATIVE)),
        ("payment amount zero", pay(|d| d.amount = dec!(0)), ok()),
        (
            "payment amount above the amount limit",
            pay(|d| d.amount = dec!(1_000_000_000_000.01)),
            broken("amount", AMOUNT_LIMIT),
        ),
        (
            "payment invoice_id zero",
            pay(|d| (d.magento_id, d.invoice_id) = (0, 0)),
            broken("invoice_id", "must be > 0"),
        ),
        (
            "payment invoice_increment_id blank",
            pay(|d| d.invoice_increment_id = " ".into()),
            broken("invoice_increment_id", "must not be empty"),
        ),
        // --- product.
        ("product sku empty", prod(|d| d.sku = String::new()), broken("sku", "must not be empty")),
        ("product sku blank", prod(|d| d.sku = "  ".into()), broken("sku", "must not be empty")),
        ("product type empty", prod(|d| d.product_type = String::new()), broken("product_type", "must not be empty")),
        ("product price negative", prod(|d| d.price = Some(dec!(-0.01))), broken("price", NOT_NEGATIVE)),
        ("product cost negative", prod(|d| d.cost = Some(dec!(-0.01))), broken("cost", NOT_NEGATIVE)),
        (
            "product special_price negative",
            prod(|d| d.special_price = Some(dec!(-0.01))),
            broken("special_price", NOT_NEGATIVE),
        ),
        // --- VAT numbers (issue 18): whitespace, `.` and `-` removed, upper-cased, then 8 to 20
        // characters of A-Z, 0-9, `+`, `*` with a digit, and a known prefix when it starts with
        // two letters. "de 1234567" is DE1234567 (9: fine); "DE12345" is 7: too short.
        ("customer VAT number normalised", inv(|d| d.customer.vat_number = Some(" de 123-456.789 ".into())), ok()),
        ("customer VAT number of 8 characters", inv(|d| d.customer.vat_number = Some("DK123456".into())), ok()),
        (
            "customer VAT number of 7 characters",
            inv(|d| d.customer.vat_number = Some("DE12345".into())),
            broken("customer.vat_number", format!("{VAT_SHAPE}; got `DE12345`")),
        ),
        (
            "customer VAT number of 20 characters",
            inv(|d| d.customer.vat_number = Some("NL".to_owned() + &"1".repeat(18))),
            ok(),
        ),
        (
            "customer VAT number of 21 characters",
            inv(|d| d.customer.vat_number = Some("NL".to_owned() + &"1".repeat(19))),
            broken("customer.vat_number", format!("{VAT_SHAPE}; got `NL{}`", "1".repeat(19))),
        ),
        (
            "customer VAT number with a symbol",
            inv(|d| d.customer.vat_number = Some("DE123/456789".into())),
            broken("customer.vat_number", format!("{VAT_SHAPE}; got `DE123/456789`")),
        ),
        (
            "customer VAT number without a digit",
            inv(|d| d.customer.vat_number = Some("VAT EXEMPT".into())),
            broken("customer.vat_number", format!("{VAT_SHAPE}; got `VAT EXEMPT`")),
        ),
        (
            "billing address vat_id with an unknown prefix",
            inv(|d| d.billing_address = Some(billing_with_vat_id("ZZ123456789"))),
            broken(
                "billing_address.vat_id",
                "must start with a VAT country prefix (`DE`, `FR`, `EL` for Greece, `XI` for Northern Ireland, `GB`, ...) or with no prefix; `ZZ` is not one (got `ZZ123456789`)",
            ),
        ),
        (
            "billing address vat_id without a prefix",
            inv(|d| d.billing_address = Some(billing_with_vat_id("123456789"))),
            ok(),
        ),
        ("product price zero", prod(|d| d.price = Some(dec!(0))), ok()),
        ("product without prices", prod(|d| (d.price, d.cost, d.special_price) = (None, None, None)), ok()),
        (
            "product weight above the amount limit",
            prod(|d| d.weight = Some(dec!(1_000_000_000_000.01))),
            broken("weight", AMOUNT_LIMIT),
        ),
    ]
}

#[test]
fn each_rule_broken_alone_is_reported_with_its_field_path_and_rule() {
    let mut failures = Vec::new();
    for (name, doc, expect) in cases() {
        let result = doc.validate();
        match (expect, result) {
            (None, Ok(())) => {}
            (None, Err(e)) => failures.push(format!("{name}: expected valid, got `{e}`")),
            (Some((path, rule)), Ok(())) => failures.push(format!("{name}: expected `{path}: {rule}`, got Ok")),
            (Some((path, rule)), Err(e)) => {
                let Error::Invalid { what, errors } = &e else {
                    failures.push(format!("{name}: expected Error::Invalid, got {e:?}"));
                    continue;
                };
                if *what != doc.what() {
                    failures.push(format!("{name}: checked as `{what}`, expected `{}`", doc.what()));
                }
                if errors != &[FieldError::new(path, rule.clone())] {
                    failures.push(format!("{name}: expected exactly `{path}: {rule}`, got {errors:?}"));
                }
                let shown = e.to_string();
                if !shown.contains(&format!("{path}: {rule}")) {
                    failures.push(format!("{name}: message `{shown}` does not name `{path}: {rule}`"));
                }
            }
        }
    }
    assert!(failures.is_empty(), "{} case(s) failed:\n{}", failures.len(), failures.join("\n"));
}

/// The policy keys of issue 12 (items 2, 3, 6): each bad value alone is refused with exactly one
/// field error naming the key and the rule; the good values are accepted.
#[test]
fn new_policy_keys_refuse_unknown_values_naming_the_key() {
    use byte8_ledger_core::policy::{OssRegistration, SyncPolicy};
    let cases: [(&str, &str, &str); 4] = [
        (r#"{"oss_registration":"moss"}"#, "oss_registration", "OUT_OF_RANGE"),
        (r#"{"store_timezone":"Europe/Londres"}"#, "store_timezone", "OUT_OF_RANGE"),
        (r#"{"store_timezone":"BST"}"#, "store_timezone", "OUT_OF_RANGE"),
        (r#"{"tax_calculated_before_discount":"yes"}"#, "tax_calculated_before_discount", ""),
    ];
    for (json, path, rule) in cases {
        let err = SyncPolicy::from_json(json).expect_err(json);
        let errors = err.field_errors();
        assert_eq!(errors.len(), 1, "{json}: {errors:?}");
        assert!(errors[0].path.contains(path), "{json}: {errors:?}");
        assert!(errors[0].rule.contains(rule), "{json}: {errors:?}");
    }
    for (value, want) in [
        ("none", OssRegistration::None),
        ("oss", OssRegistration::Oss),
        ("ioss", OssRegistration::Ioss),
        ("oss_and_ioss", OssRegistration::OssAndIoss),
    ] {
        let p = SyncPolicy::from_json(&format!(r#"{{"oss_registration":"{value}"}}"#)).unwrap();
        assert_eq!(p.oss_registration, want);
    }
    let p =
        SyncPolicy::from_json(r#"{"store_timezone":"Europe/Dublin","tax_calculated_before_discount":true}"#).unwrap();
    assert_eq!(p.store_timezone.as_deref(), Some("Europe/Dublin"));
    assert!(p.tax_calculated_before_discount);
}
