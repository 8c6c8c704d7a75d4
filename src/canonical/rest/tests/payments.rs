//! `payment_from_rest`.

use serde_json::Value;

use super::{d, fixture, json, paths, remove, set, utc};
use crate::{canonical::rest::payment_from_rest, error::ErrorCode, money::Currency};

#[test]
fn payment_of_the_tutorial_invoice() {
    // Keyed by the invoice (3); amount = invoice grand_total 1917.6; checkmo has no
    // transaction id at all.
    let p = payment_from_rest(
        &fixture!("invoice.inventory-tutorial.discount.json"),
        &fixture!("order.inventory-tutorial.json"),
    )
    .unwrap();
    assert_eq!((p.magento_id, p.invoice_id), (3, 3));
    assert_eq!(p.invoice_increment_id, "000000003");
    assert_eq!(p.method, "checkmo");
    assert_eq!(p.currency, Currency::USD);
    assert_eq!(p.amount, d("1917.6"));
    assert_eq!(p.captured_at, utc(2020, 7, 23, 16, 59, 20));
    assert_eq!(p.gateway_txn_id, None);
    assert_eq!(p.gateway_metadata, json(r#"["Check / Money order"]"#));
}

#[test]
fn transaction_id_prefers_the_invoice_then_the_payment() {
    let order = fixture!("order.configurable.json");
    let mut invoice = fixture!("invoice.configurable.json");
    let p = payment_from_rest(&invoice, &order).unwrap();
    assert_eq!(p.gateway_txn_id.as_deref(), Some("txn-abc123-capture"));
    assert_eq!(p.amount, d("150.6"));
    assert_eq!(p.gateway_metadata["cc_type"], "VI");
    remove(&mut invoice, "/transaction_id");
    let p = payment_from_rest(&invoice, &order).unwrap();
    assert_eq!(p.gateway_txn_id.as_deref(), Some("txn-abc123"));
    // No additional_information → an empty list, as the module sends.
    let p = payment_from_rest(&fixture!("invoice.virtual.json"), &fixture!("order.virtual.json")).unwrap();
    assert_eq!(p.gateway_metadata, Value::Array(Vec::new()));
    assert_eq!(p.gateway_txn_id.as_deref(), Some("pi_3Nabc"));
}

#[test]
fn an_order_without_payment_is_not_found() {
    let mut order = fixture!("order.inventory-tutorial.json");
    set(&mut order, "/payment", Value::Null);
    let e = payment_from_rest(&fixture!("invoice.inventory-tutorial.discount.json"), &order).unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert!(e.to_string().contains("order 3"), "{e}");
}

#[test]
fn a_payment_without_method_names_the_field() {
    let mut order = fixture!("order.inventory-tutorial.json");
    remove(&mut order, "/payment/method");
    let e = payment_from_rest(&fixture!("invoice.inventory-tutorial.discount.json"), &order).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Serde);
    assert_eq!(paths(&e), ["order.payment.method"]);
}
