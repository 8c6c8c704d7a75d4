//! Bad input: every error names the REST field, and no input panics.

use proptest::prelude::*;
use serde_json::Value;

use super::{fixture, json, paths, remove, set};
use crate::{
    canonical::rest::{credit_memo_from_rest, invoice_from_rest, payment_from_rest},
    error::ErrorCode,
};

fn configurable() -> (Value, Value) {
    (fixture!("invoice.configurable.json"), fixture!("order.configurable.json"))
}

#[test]
fn an_unknown_order_item_id_names_the_invoice_item() {
    let (mut invoice, order) = configurable();
    set(&mut invoice, "/items/2/order_item_id", json("999"));
    let e = invoice_from_rest(&invoice, &order).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Validation);
    assert_eq!(paths(&e), ["invoice.items[2].order_item_id"]);
    assert!(e.to_string().contains("999"), "{e}");
}

#[test]
fn a_missing_parent_order_item_names_the_order_item() {
    let (invoice, mut order) = configurable();
    set(&mut order, "/items/1/parent_item_id", json("77"));
    remove(&mut order, "/items/1/parent_item");
    let e = invoice_from_rest(&invoice, &order).unwrap_err();
    assert_eq!(paths(&e), ["order.items[1].parent_item_id"]);
}

#[test]
fn a_money_line_without_row_total_is_refused() {
    // The configurable parent carries the money; without row_total the document cannot be right.
    let (mut invoice, order) = configurable();
    remove(&mut invoice, "/items/0/row_total");
    let e = invoice_from_rest(&invoice, &order).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Serde);
    assert_eq!(paths(&e), ["invoice.items[0].row_total"]);
    assert!(e.to_string().contains("configurable"), "{e}");
}

#[test]
fn header_and_link_errors() {
    let (invoice, order) = configurable();

    let mut bad = invoice.clone();
    set(&mut bad, "/order_id", json("102"));
    let e = invoice_from_rest(&bad, &order).unwrap_err();
    assert_eq!(paths(&e), ["invoice.order_id"]);

    let mut bad = invoice.clone();
    remove(&mut bad, "/created_at");
    assert_eq!(paths(&invoice_from_rest(&bad, &order).unwrap_err()), ["invoice.created_at"]);
    set(&mut bad, "/created_at", json(r#""yesterday""#));
    assert_eq!(paths(&invoice_from_rest(&bad, &order).unwrap_err()), ["invoice.created_at"]);

    let mut bad = invoice.clone();
    set(&mut bad, "/order_currency_code", json(r#""gbp""#));
    assert_eq!(paths(&invoice_from_rest(&bad, &order).unwrap_err()), ["invoice.order_currency_code"]);

    let mut bad = invoice.clone();
    set(&mut bad, "/items/2/price", json(r#""15,50""#));
    assert_eq!(paths(&invoice_from_rest(&bad, &order).unwrap_err()), ["invoice.items[2].price"]);

    let mut bad = invoice.clone();
    set(&mut bad, "/items/2/qty", json("true"));
    assert_eq!(paths(&invoice_from_rest(&bad, &order).unwrap_err()), ["invoice.items[2].qty"]);

    let mut bad = invoice.clone();
    set(&mut bad, "/items", json(r#"{"0": {}}"#));
    assert_eq!(paths(&invoice_from_rest(&bad, &order).unwrap_err()), ["invoice.items"]);

    let mut bad_order = order.clone();
    remove(&mut bad_order, "/billing_address/country_id");
    assert_eq!(paths(&invoice_from_rest(&invoice, &bad_order).unwrap_err()), ["order.billing_address.country_id"]);

    let mut bad_order = order.clone();
    set(&mut bad_order, "/items/2/item_id", json("10"));
    assert_eq!(paths(&invoice_from_rest(&invoice, &bad_order).unwrap_err()), ["order.items[2].item_id"]);

    assert_eq!(paths(&invoice_from_rest(&json("[]"), &order).unwrap_err()), ["invoice"]);
    assert_eq!(paths(&invoice_from_rest(&invoice, &json("null")).unwrap_err()), ["order"]);
    assert_eq!(paths(&payment_from_rest(&invoice, &json("3")).unwrap_err()), ["order"]);
}

#[test]
fn a_document_that_does_not_add_up_is_the_canonical_validate_error() {
    // grand_total 155.60 where I-1 gives 150.60: the lines cannot explain the extra 5.
    let (mut invoice, order) = configurable();
    set(&mut invoice, "/grand_total", json("155.6"));
    let e = invoice_from_rest(&invoice, &order).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Validation);
    assert_eq!(paths(&e), ["grand_total"]);
    // subtotal 120 ≠ Σ row_total 115.50.
    let (mut invoice, order) = configurable();
    set(&mut invoice, "/subtotal", json("120"));
    let e = invoice_from_rest(&invoice, &order).unwrap_err();
    assert_eq!(paths(&e), ["subtotal"]);
}

#[test]
fn extreme_amounts_are_refused_not_panicked_on() {
    let (mut invoice, order) = configurable();
    set(&mut invoice, "/items/2/row_total", json("1e40"));
    assert_eq!(paths(&invoice_from_rest(&invoice, &order).unwrap_err()), ["invoice.items[2].row_total"]);
    // Within range but with a tiny net: the tax ratio or the identity weights would overflow.
    let (mut invoice, order) = configurable();
    set(&mut invoice, "/items/2/row_total", json("0.0000000000000000000000001"));
    set(&mut invoice, "/items/2/tax_amount", json("900000000000000"));
    assert!(invoice_from_rest(&invoice, &order).is_err());
}

/// Decimal texts of every magnitude and scale, plus non-numbers.
fn amount_text() -> impl Strategy<Value = Value> {
    prop_oneof![
        (any::<i64>(), 0u32..=28).prop_map(|(m, s)| json(&rust_decimal::Decimal::new(m, s).to_string())),
        (any::<i32>(), -40i32..40).prop_map(|(m, e)| json(&format!("{m}e{e}"))),
        (any::<i64>(), 0u32..=28).prop_map(|(m, s)| Value::String(rust_decimal::Decimal::new(m, s).to_string())),
        Just(Value::Null),
        Just(json(r#""abc""#)),
        Just(json("0")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever the amounts, the adapters return; they never panic.
    #[test]
    fn no_amounts_make_the_adapters_panic(
        values in proptest::collection::vec(amount_text(), 12),
    ) {
        let (mut invoice, order) = configurable();
        let fields = [
            "/items/0/qty", "/items/0/price", "/items/0/row_total", "/items/0/tax_amount", "/items/0/discount_amount",
            "/items/2/row_total", "/items/2/tax_amount", "/subtotal", "/tax_amount", "/shipping_amount",
            "/shipping_tax_amount", "/grand_total",
        ];
        for (field, v) in fields.iter().zip(values.iter()) {
            set(&mut invoice, field, v.clone());
        }
        let _ = invoice_from_rest(&invoice, &order);
        let _ = payment_from_rest(&invoice, &order);

        let mut cm = fixture!("creditmemo.offline-adjustments.json");
        let fields = [
            "/items/0/qty", "/items/0/price", "/items/0/row_total", "/items/0/tax_amount", "/items/0/discount_amount",
            "/subtotal", "/tax_amount", "/shipping_amount", "/shipping_tax_amount", "/adjustment_positive",
            "/adjustment_negative", "/grand_total",
        ];
        for (field, v) in fields.iter().zip(values.iter()) {
            set(&mut cm, field, v.clone());
        }
        let _ = credit_memo_from_rest(&cm, &order, None);
    }
}

/// Decimals up to the read bound (10^15) at every scale, including tiny positive ones.
fn nasty_decimal() -> impl Strategy<Value = rust_decimal::Decimal> {
    prop_oneof![
        (0i64..1_000_000_000_000_000, 0u32..=28).prop_map(|(m, s)| rust_decimal::Decimal::new(m, s)),
        (0i64..100_000, 0u32..=4).prop_map(|(m, s)| rust_decimal::Decimal::new(m, s)),
        Just(rust_decimal::Decimal::new(1, 28)),
        Just(rust_decimal::Decimal::new(1_000_000_000_000_000, 0)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Consistent headers with extreme line amounts reach the canonical identity checks, which
    /// must not panic either: the adapter refuses what they cannot compute.
    #[test]
    fn consistent_extreme_documents_do_not_panic(
        (qty, row_total, tax, discount) in (nasty_decimal(), nasty_decimal(), nasty_decimal(), nasty_decimal()),
        (shipping, shipping_tax, shipping_discount, residual) in
            (nasty_decimal(), nasty_decimal(), nasty_decimal(), nasty_decimal()),
    ) {
        let header = || -> Option<(rust_decimal::Decimal, rust_decimal::Decimal, rust_decimal::Decimal, rust_decimal::Decimal)> {
            let subtotal = row_total;
            let tax_amount = tax.checked_add(shipping_tax)?;
            let disc = discount.checked_add(shipping_discount)?;
            let grand = subtotal
                .checked_add(shipping)?
                .checked_add(tax_amount)?
                .checked_sub(disc)?
                .checked_add(residual)?;
            Some((subtotal, tax_amount, -disc, grand))
        };
        let Some((subtotal, tax_amount, disc, grand)) = header() else { return Ok(()) };
        let mut invoice = fixture!("invoice.tax-inclusive.json");
        let n = |v: rust_decimal::Decimal| json(&v.to_string());
        set(&mut invoice, "/items/0/qty", n(qty));
        set(&mut invoice, "/items/0/price", n(row_total));
        set(&mut invoice, "/items/0/row_total", n(row_total));
        set(&mut invoice, "/items/0/tax_amount", n(tax));
        set(&mut invoice, "/items/0/discount_amount", n(discount));
        set(&mut invoice, "/subtotal", n(subtotal));
        set(&mut invoice, "/tax_amount", n(tax_amount));
        set(&mut invoice, "/shipping_amount", n(shipping));
        set(&mut invoice, "/shipping_tax_amount", n(shipping_tax));
        set(&mut invoice, "/discount_amount", n(disc));
        set(&mut invoice, "/grand_total", n(grand));
        let _ = invoice_from_rest(&invoice, &fixture!("order.tax-inclusive.json"));
    }
}
