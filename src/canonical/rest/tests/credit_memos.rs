//! `credit_memo_from_rest`.

use super::{d, fixture, json, line, paths, set, utc};
use crate::{canonical::rest::credit_memo_from_rest, error::ErrorCode, money::Currency};

#[test]
fn offline_credit_memo_with_adjustments() {
    // Offline refund (no invoice_id) on the configurable order:
    //   10 (configurable parent): 1 × 50, tax 10 → 50 + 10 − 0 = 60, rate 10 / 50 = 0.2
    //   11 (its child): dummy; 12: qty 0 and no amounts → not a line
    //   shipping 5, shipping tax 1; Adjustment Refund 3, Adjustment Fee 4.50
    //   header: subtotal 50, tax 10 + 1 = 11;
    //   I-2 50 + 5 + 11 + 0 + 0 + 3 − 4.50 = 64.50.
    let cm = credit_memo_from_rest(
        &fixture!("creditmemo.offline-adjustments.json"),
        &fixture!("order.configurable.json"),
        None,
    )
    .unwrap();
    assert_eq!(cm.magento_id, 9);
    assert_eq!(cm.increment_id, "000000009");
    assert_eq!(cm.invoice_id, None);
    assert_eq!(cm.invoice_increment_id, None);
    assert_eq!(cm.invoice_created_at, None);
    assert_eq!(cm.website_id, 0);
    assert_eq!(cm.currency, Currency::GBP);
    assert_eq!(
        cm.lines,
        vec![line("MH01-S-Gray", "Chaz Kangeroo Hoodie", "1", "50", "50", "10", "60", Some("0.2"), "configurable")]
    );
    assert_eq!(cm.adjustment_positive, d("3"));
    assert_eq!(cm.adjustment_negative, d("4.5"));
    assert_eq!(cm.shipping_amount, d("5"));
    assert_eq!(cm.shipping_tax_amount, d("1"));
    assert_eq!(cm.grand_total, d("64.5"));
    // The first comment is empty; the second is the reason.
    assert_eq!(cm.reason.as_deref(), Some("Returned one hoodie; restocking fee kept"));
    assert_eq!(cm.created_at, utc(2024, 3, 20, 10, 0, 0));
    assert_eq!(cm.base_to_order_rate, Some(d("1")));
    assert_eq!(cm.customer.magento_id, 7);
    // 60 + 5 + 1 + 3 − 4.50 = 64.50: nothing to place.
    let b = cm.breakdown().unwrap();
    assert!(b.placements.is_empty());
    assert_eq!(b.total(), d("64.5"));
}

#[test]
fn online_credit_memo_takes_the_invoice_number_and_date() {
    // 5 of the 20 backpacks of the tutorial order refunded against invoice 3:
    //   180 (5 × 36) − 36 (the 20 % discount, 144 / 20 × 5) = 144; the Voyage Yoga Bag row has
    //   qty 0 and is not a line. I-2: 180 + 0 + 0 + 0 − 36 + 0 − 0 = 144.
    let cm = credit_memo_from_rest(
        &fixture!("creditmemo.online.inventory-tutorial.json"),
        &fixture!("order.inventory-tutorial.json"),
        Some(&fixture!("invoice.inventory-tutorial.discount.json")),
    )
    .unwrap();
    assert_eq!(cm.invoice_id, Some(3));
    assert_eq!(cm.invoice_increment_id.as_deref(), Some("000000003"));
    assert_eq!(cm.invoice_created_at, Some(utc(2020, 7, 23, 16, 59, 20)));
    assert_eq!(cm.lines, vec![line("24-WB03", "Driven Backpack", "5", "36", "180", "0", "144", None, "simple")]);
    assert_eq!(cm.grand_total, d("144"));
    assert_eq!(cm.reason, None);
    assert_eq!(cm.currency, Currency::USD);
}

#[test]
fn the_invoice_argument_must_match_invoice_id() {
    let cm = fixture!("creditmemo.online.inventory-tutorial.json");
    let order = fixture!("order.inventory-tutorial.json");
    // invoice_id 3 but no invoice given.
    let e = credit_memo_from_rest(&cm, &order, None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Validation);
    assert_eq!(paths(&e), ["creditmemo.invoice_id"]);
    // The wrong invoice.
    let mut other = fixture!("invoice.inventory-tutorial.discount.json");
    set(&mut other, "/entity_id", json("99"));
    let e = credit_memo_from_rest(&cm, &order, Some(&other)).unwrap_err();
    assert_eq!(paths(&e), ["creditmemo.invoice_id"]);
    assert!(e.to_string().contains("99"), "{e}");
    // An invoice for an offline refund.
    let e = credit_memo_from_rest(
        &fixture!("creditmemo.offline-adjustments.json"),
        &fixture!("order.configurable.json"),
        Some(&fixture!("invoice.configurable.json")),
    )
    .unwrap_err();
    assert_eq!(paths(&e), ["creditmemo.invoice_id"]);
}

#[test]
fn the_rest_header_is_checked_against_the_lines() {
    // subtotal 60 ≠ Σ line row_total 50: the canonical credit memo carries no subtotal, so the
    // adapter checks it and names the REST field.
    let mut cm = fixture!("creditmemo.offline-adjustments.json");
    set(&mut cm, "/subtotal", json("60"));
    let e = credit_memo_from_rest(&cm, &fixture!("order.configurable.json"), None).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Validation);
    assert_eq!(paths(&e), ["creditmemo.subtotal"]);

    // A configurable child row that carries money (2.2.8-style, magento.md 5.1) is still a
    // dummy, decided from the structure: the result has the one parent line, whose 50 matches
    // the header subtotal (keeping the child would make it 100).
    let mut cm = fixture!("creditmemo.offline-adjustments.json");
    set(&mut cm, "/items/1/row_total", json("50"));
    set(&mut cm, "/items/1/tax_amount", json("10"));
    let out = credit_memo_from_rest(&cm, &fixture!("order.configurable.json"), None).unwrap();
    assert_eq!(out.lines.len(), 1);
}

#[test]
fn an_adjustment_only_refund_has_no_lines() {
    // A goodwill refund: every row has qty 0 and no amounts, Adjustment Refund 10, no shipping.
    //   I-2: 0 + 0 + 0 + 0 + 0 + 10 − 0 = 10.
    let mut cm = fixture!("creditmemo.offline-adjustments.json");
    for field in ["/items/0/qty", "/items/0/row_total", "/items/0/tax_amount", "/items/1/qty"] {
        set(&mut cm, field, json("0"));
    }
    for (field, value) in [
        ("/subtotal", "0"),
        ("/tax_amount", "0"),
        ("/shipping_amount", "0"),
        ("/shipping_tax_amount", "0"),
        ("/adjustment_positive", "10"),
        ("/adjustment_negative", "0"),
        ("/grand_total", "10"),
    ] {
        set(&mut cm, field, json(value));
    }
    let out = credit_memo_from_rest(&cm, &fixture!("order.configurable.json"), None).unwrap();
    assert!(out.lines.is_empty());
    assert_eq!(out.adjustment_positive, d("10"));
    assert_eq!(out.grand_total, d("10"));
}
