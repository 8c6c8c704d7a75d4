//! Transform tests. Every expected value below was worked out by hand from the input in the same
//! test; the arithmetic is in the comments.

use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use rust_decimal_macros::dec;
use serde_json::{Value, json};

use super::*;
use crate::{canonical::MagentoInvoice, reference::ReferenceData};

pub(crate) fn uk_reference() -> ReferenceData {
    ReferenceData::demo_uk(Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap())
}

pub(crate) fn policy(extra: Value) -> SyncPolicy {
    let mut base = json!({
        "default_ledger_account_id": "SALES",
        "default_tax_rate_id": "GB_STANDARD",
        "tax_rate_map": {"20": "GB_STANDARD", "5": "GB_LOWER"},
    });
    for (k, v) in extra.as_object().unwrap() {
        base[k] = v.clone();
    }
    SyncPolicy::from_json(&base.to_string()).unwrap()
}

fn address(kind: &str, country: &str, postcode: &str) -> Value {
    json!({"kind": kind, "street": ["1 High Street", "Flat 2"], "city": "London", "region": null,
           "postcode": postcode, "country_id": country, "telephone": "020 7946 0000"})
}

/// A GBP invoice: 2 × 10.00 at 20 % (tax 4.00), shipping 5.00 at 20 % (tax 1.00): 20 + 4 + 5 + 1 = 30.
fn invoice_json() -> Value {
    json!({
        "magento_id": 1001, "increment_id": "000000123", "order_id": 77, "order_increment_id": "000000077",
        "website_id": 1, "store_id": 1, "currency": "GBP", "state": "open",
        "customer": {"magento_id": 5, "email": "jane@example.com", "first_name": "Jane", "last_name": "Doe",
                     "website_id": 1, "addresses": []},
        "lines": [{"sku": "A-1", "name": "Widget", "qty": 2, "unit_price": 10.00, "line_subtotal": 20.00,
                   "line_tax": 4.00, "line_total": 24.00, "tax_rate": 0.2, "product_type": "simple"}],
        "subtotal": 20.00, "tax_amount": 5.00, "shipping_amount": 5.00, "shipping_tax_amount": 1.00,
        "discount_amount": 0, "grand_total": 30.00, "created_at": "2026-11-22T09:59:00Z",
        "payment_method": "checkmo", "billing_address": address("billing", "GB", "SW1A 1AA"),
        "shipping_address": address("shipping", "GB", "EC1A 1BB"), "po_number": "PO-77",
        "base_to_order_rate": 1.0
    })
}

fn inv(v: Value) -> MagentoInvoice {
    serde_json::from_value(v).unwrap()
}

fn links<'a>(items: &'a BTreeMap<String, ItemLink>) -> DocumentLinks<'a> {
    DocumentLinks { contact_id: "C1", items, idempotency_key: Some("invoice.created:1001") }
}

/// JSON with every number rewritten as its normalised decimal, so that `5.00`, `5.0` and `5`
/// compare equal (serde_json's `arbitrary_precision` compares numbers by their text).
pub(crate) fn norm(v: Value) -> Value {
    match v {
        Value::Number(n) => {
            let d: rust_decimal::Decimal = n.to_string().parse().unwrap();
            Value::Number(d.normalize().to_string().parse().unwrap())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(norm).collect()),
        Value::Object(o) => Value::Object(o.into_iter().map(|(k, v)| (k, norm(v))).collect()),
        other => other,
    }
}

fn to_json<T: serde::Serialize>(t: &T) -> Value {
    norm(serde_json::to_value(t).unwrap())
}

#[test]
fn domestic_invoice_is_exactly_the_expected_request() {
    let items = BTreeMap::new();
    let p = policy(json!({"invoice_number_prefix": "MAG-"}));
    let t = sales_invoice(&inv(invoice_json()), &p, &uk_reference(), &links(&items)).unwrap();
    let got = to_json(&t.request);
    let expected = json!({"sales_invoice": {
        "contact_id": "C1",
        "date": "2026-11-22",
        "reference": "MAG-000000123",
        "notes": "Purchase Order: PO-77",
        "currency_id": "GBP",
        "main_address": {"address_line_1": "1 High Street", "address_line_2": "Flat 2", "city": "London",
                         "postal_code": "SW1A 1AA", "country_id": "GB"},
        "delivery_address": {"address_line_1": "1 High Street", "address_line_2": "Flat 2", "city": "London",
                             "postal_code": "EC1A 1BB", "country_id": "GB"},
        "shipping_net_amount": 5.00,
        "shipping_tax_rate_id": "GB_STANDARD",
        "shipping_tax_amount": 1.00,
        "invoice_lines": [{
            "description": "Widget", "ledger_account_id": "SALES", "quantity": 2, "unit_price": 10.00,
            "discount_amount": 0.00, "tax_rate_id": "GB_STANDARD", "tax_amount": 4.00,
            "currency_tax_amount": 4.00, "unit_price_includes_tax": false
        }],
        "idempotency_id": idempotency_id("invoice.created:1001", "sales_invoice"),
    }});
    let expected = norm(expected);
    assert_eq!(got, expected, "{}", serde_json::to_string_pretty(&got).unwrap());
    assert_eq!(expected_total(&t.request.sales_invoice, &uk_reference().tax_rates).unwrap(), dec!(30));
}

#[test]
fn tax_inclusive_row_keeps_quantity_and_exact_net() {
    // Catalog price 10.00 incl. 20 %: net 8.3333 → unit 8.33; 3 of them: row 25.00, tax 5.00, total 30.00.
    // 3 × 8.33 = 24.99 < 25.00, so Sage gets unit 8.34 (3 × 8.34 = 25.02) and a 0.02 discount: net 25.00.
    let mut v = invoice_json();
    v["lines"] = json!([{"sku": "T", "name": "Tee", "qty": 3, "unit_price": 8.33, "line_subtotal": 25.00,
                         "line_tax": 5.00, "line_total": 30.00, "tax_rate": 0.2, "product_type": "simple"}]);
    v["subtotal"] = json!(25.00);
    v["tax_amount"] = json!(5.00);
    v["shipping_amount"] = json!(0);
    v["shipping_tax_amount"] = json!(0);
    v["grand_total"] = json!(30.00);
    let items = BTreeMap::new();
    let t = sales_invoice(&inv(v), &policy(json!({})), &uk_reference(), &links(&items)).unwrap();
    let line = &t.request.sales_invoice.lines()[0];
    assert_eq!(
        (line.quantity, line.unit_price, line.discount_amount, line.tax_amount),
        (dec!(3), dec!(8.34), dec!(0.02), dec!(5.00))
    );
    assert!(t.request.sales_invoice.shipping_net_amount.is_none(), "no shipping, no panel");
}

#[test]
fn untaxed_shipping_gets_the_zero_rate_whatever_the_default() {
    // Byte8 §32: shipping 4.99 with no tax and default GB_STANDARD → GB_ZERO, or Sage adds 1.00 of phantom VAT.
    let mut v = invoice_json();
    v["shipping_amount"] = json!(4.99);
    v["shipping_tax_amount"] = json!(0);
    v["tax_amount"] = json!(4.00);
    v["grand_total"] = json!(28.99); // 20 + 4 + 4.99
    let items = BTreeMap::new();
    let t = sales_invoice(&inv(v), &policy(json!({})), &uk_reference(), &links(&items)).unwrap();
    let b = &t.request.sales_invoice;
    assert_eq!(b.shipping_tax_rate_id.as_deref(), Some("GB_ZERO"));
    assert_eq!(b.shipping_net_amount, Some(dec!(4.99)));
    assert_eq!(expected_total(b, &uk_reference().tax_rates).unwrap(), dec!(28.99));
}

#[test]
fn shipping_tax_sage_would_recompute_differently_becomes_a_line_and_no_penny_moves() {
    // Shipping 4.17 at 20 %: Sage computes round(0.834) = 0.83, Magento's delta rounding charged 0.84.
    // Line 20 net with 4.00 tax. grand_total = 20 + 4 + 4.17 + 0.84 = 29.01.
    // The product line keeps its 4.00; shipping is a line of 4.17 with 0.84; no shipping panel.
    let mut v = invoice_json();
    v["shipping_amount"] = json!(4.17);
    v["shipping_tax_amount"] = json!(0.84);
    v["tax_amount"] = json!(4.84);
    v["grand_total"] = json!(29.01);
    let items = BTreeMap::new();
    let t = sales_invoice(&inv(v), &policy(json!({})), &uk_reference(), &links(&items)).unwrap();
    let b = &t.request.sales_invoice;
    assert_eq!(b.lines().len(), 2);
    assert_eq!((b.lines()[0].tax_amount, b.lines()[0].currency_tax_amount), (dec!(4.00), dec!(4.00)));
    let ship = &b.lines()[1];
    assert_eq!((ship.description.as_str(), ship.unit_price, ship.tax_amount), ("Shipping", dec!(4.17), dec!(0.84)));
    assert_eq!(ship.tax_rate_id, "GB_STANDARD");
    assert_eq!((b.shipping_net_amount, b.shipping_tax_amount), (None, None));
    assert!(t.notes.iter().any(|n| n.starts_with("shipping_as_line") && n.contains("0.83")), "{:?}", t.notes);
    assert_eq!(expected_total(b, &uk_reference().tax_rates).unwrap(), dec!(29.01));
}

#[test]
fn shipping_tax_sage_reproduces_stays_on_the_panel() {
    // Shipping 5.00 at 20 %: Sage's 1.00 equals Magento's, so the panel is used.
    let mut v = invoice_json();
    v["shipping_amount"] = json!(5.00);
    v["shipping_tax_amount"] = json!(1.00);
    v["tax_amount"] = json!(5.00);
    v["grand_total"] = json!(30.00);
    let items = BTreeMap::new();
    let t = sales_invoice(&inv(v), &policy(json!({})), &uk_reference(), &links(&items)).unwrap();
    let b = &t.request.sales_invoice;
    assert_eq!(b.lines().len(), 1);
    assert_eq!((b.shipping_net_amount, b.shipping_tax_amount), (Some(dec!(5.00)), Some(dec!(1.00))));
    assert_eq!(b.shipping_tax_rate_id.as_deref(), Some("GB_STANDARD"));
}

#[test]
fn taxed_shipping_with_no_line_at_its_rate_becomes_a_line() {
    // Only zero-rated goods (a book, 0 % → GB_ZERO via "0.00"? no: tax 0 → zero rate) and shipping
    // 4.17 with 0.84 tax: no line at GB_STANDARD to take the penny, so shipping is a line with 0.84.
    let mut v = invoice_json();
    v["lines"] = json!([{"sku": "B", "name": "Book", "qty": 1, "unit_price": 12.00, "line_subtotal": 12.00,
                         "line_tax": 0, "line_total": 12.00, "tax_rate": null, "product_type": "simple"}]);
    v["subtotal"] = json!(12.00);
    v["shipping_amount"] = json!(4.17);
    v["shipping_tax_amount"] = json!(0.84);
    v["tax_amount"] = json!(0.84);
    v["grand_total"] = json!(17.01); // 12 + 4.17 + 0.84
    let items = BTreeMap::new();
    let t = sales_invoice(&inv(v), &policy(json!({})), &uk_reference(), &links(&items)).unwrap();
    let b = &t.request.sales_invoice;
    assert!(b.shipping_net_amount.is_none());
    let ship = &b.lines()[1];
    assert_eq!(
        (ship.description.as_str(), ship.unit_price, ship.tax_amount, ship.tax_rate_id.as_str()),
        ("Shipping", dec!(4.17), dec!(0.84), "GB_STANDARD")
    );
    assert_eq!(b.lines()[0].tax_rate_id, "GB_ZERO");
    assert_eq!(expected_total(b, &uk_reference().tax_rates).unwrap(), dec!(17.01));
}

#[test]
fn html_entities_are_decoded() {
    let mut v = invoice_json();
    v["lines"][0]["name"] = json!("Quest Lumaflex&trade; Band &amp; Strap");
    let items = BTreeMap::new();
    let t = sales_invoice(&inv(v), &policy(json!({})), &uk_reference(), &links(&items)).unwrap();
    assert_eq!(t.request.sales_invoice.lines()[0].description, "Quest Lumaflex™ Band & Strap");
}

fn us_invoice() -> Value {
    // A US buyer of goods: no tax. 2 × 10.00 + shipping 5.00 = 25.00.
    let mut v = invoice_json();
    v["lines"][0]["line_tax"] = json!(0);
    v["lines"][0]["line_total"] = json!(20.00);
    v["lines"][0]["tax_rate"] = Value::Null;
    v["tax_amount"] = json!(0);
    v["shipping_tax_amount"] = json!(0);
    v["grand_total"] = json!(25.00);
    v["billing_address"] = address("billing", "US", "10001");
    v["shipping_address"] = address("shipping", "US", "10001");
    v
}

#[test]
fn export_is_zero_rated_with_one_eu_type() {
    let items = BTreeMap::new();
    let t = sales_invoice(&inv(us_invoice()), &policy(json!({})), &uk_reference(), &links(&items)).unwrap();
    let b = &t.request.sales_invoice;
    assert_eq!(b.lines()[0].tax_rate_id, "GB_ZERO");
    assert_eq!(b.lines()[0].eu_goods_services_type_id.as_deref(), Some("GOODS"));
    assert_eq!(b.shipping_tax_rate_id.as_deref(), Some("GB_ZERO"));
}

#[test]
fn mixed_goods_and_services_abroad_are_coerced_and_noted() {
    let mut v = us_invoice();
    let mut service = v["lines"][0].clone();
    service["sku"] = json!("WARRANTY");
    service["product_type"] = json!("virtual");
    service["qty"] = json!(1);
    service["unit_price"] = json!(5.00);
    service["line_subtotal"] = json!(5.00);
    service["line_total"] = json!(5.00);
    v["lines"].as_array_mut().unwrap().push(service);
    v["subtotal"] = json!(25.00);
    v["grand_total"] = json!(30.00); // 20 + 5 + 5 shipping
    let items = BTreeMap::new();
    let t = sales_invoice(
        &inv(v),
        &policy(json!({"default_eu_goods_services_type": "SERVICES"})),
        &uk_reference(),
        &links(&items),
    )
    .unwrap();
    let types: Vec<_> = t.request.sales_invoice.lines().iter().map(|l| l.eu_goods_services_type_id.clone()).collect();
    assert_eq!(types, vec![Some("SERVICES".to_owned()), Some("SERVICES".to_owned())]);
    assert!(t.notes.iter().any(|n| n.starts_with("mixed_eu_goods_services_coerced_to_default")), "{:?}", t.notes);
}

fn ioss_invoice() -> Value {
    // A German consumer, goods, 19 % German VAT collected at checkout (IOSS):
    // 2 × 10.00, tax 3.80; shipping 5.00, tax 0.95: 20 + 3.80 + 5 + 0.95 = 29.75.
    let mut v = invoice_json();
    v["lines"][0]["line_tax"] = json!(3.80);
    v["lines"][0]["line_total"] = json!(23.80);
    v["lines"][0]["tax_rate"] = json!(0.19);
    v["tax_amount"] = json!(4.75);
    v["shipping_tax_amount"] = json!(0.95);
    v["grand_total"] = json!(29.75);
    v["billing_address"] = address("billing", "DE", "10115");
    v["shipping_address"] = address("shipping", "DE", "10115");
    v
}

#[test]
fn collected_foreign_vat_is_never_dropped() {
    let items = BTreeMap::new();
    let err = sales_invoice(&inv(ioss_invoice()), &policy(json!({})), &uk_reference(), &links(&items)).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("foreign_vat_ledger_account_id"), "{msg}");
    assert!(msg.contains("4.75 of DE VAT"), "{msg}");

    let t = sales_invoice(
        &inv(ioss_invoice()),
        &policy(json!({"foreign_vat_ledger_account_id": "OSS"})),
        &uk_reference(),
        &links(&items),
    )
    .unwrap();
    let b = &t.request.sales_invoice;
    // Goods zero-rated, 3.80 + 0.95 = 4.75 on a no-tax liability line.
    assert_eq!((b.lines()[0].tax_rate_id.as_str(), b.lines()[0].tax_amount), ("GB_ZERO", dec!(0)));
    let vat = &b.lines()[1];
    assert_eq!(
        (vat.ledger_account_id.as_str(), vat.unit_price, vat.tax_rate_id.as_str()),
        ("OSS", dec!(4.75), "GB_NO_TAX")
    );
    assert_eq!(expected_total(b, &uk_reference().tax_rates).unwrap(), dec!(29.75));
}

#[test]
fn exchange_rate_direction_and_omission() {
    // Magento: order = base × 1.17 (EUR per GBP). Sage gets base per EUR: 1 / 1.17 = 0.854700854700… → 0.8547008547.
    assert_eq!(exchange_rate(Currency::EUR, Currency::GBP, Some(dec!(1.17))), Some(dec!(0.8547008547)));
    assert_eq!(exchange_rate(Currency::GBP, Currency::GBP, Some(dec!(1.17))), None);
    assert_eq!(exchange_rate(Currency::EUR, Currency::GBP, Some(dec!(1.0))), None, "Magento base is not Sage base");
    assert_eq!(exchange_rate(Currency::EUR, Currency::GBP, None), None);
    let mut v = invoice_json();
    v["currency"] = json!("EUR");
    v["base_to_order_rate"] = json!(1.17);
    let items = BTreeMap::new();
    let t = sales_invoice(&inv(v.clone()), &policy(json!({})), &uk_reference(), &links(&items)).unwrap();
    assert_eq!(t.request.sales_invoice.currency_id, "EUR");
    assert_eq!(t.request.sales_invoice.exchange_rate, Some(dec!(0.8547008547)));
    let mut r = uk_reference();
    r.business.multi_currency = false;
    let err = sales_invoice(&inv(v), &policy(json!({})), &r, &links(&items)).unwrap_err();
    assert!(err.to_string().contains("multi-currency"), "{err}");
}

#[test]
fn reference_fits_25_keeping_the_increment_id() {
    assert_eq!(fit_reference("MAG-000000123", "000000123"), "MAG-000000123");
    // 15 + 12 = 27 characters: the prefix keeps 13 so that the id stays whole.
    assert_eq!(fit_reference("VERYLONGPREFIX-000000000123", "000000000123"), "VERYLONGPREFI000000000123");
    let p = policy(json!({"invoice_number_prefix": "VERYLONGPREFIX-"}));
    let mut v = invoice_json();
    v["increment_id"] = json!("000000000123");
    let items = BTreeMap::new();
    let t = sales_invoice(&inv(v), &p, &uk_reference(), &links(&items)).unwrap();
    let b = &t.request.sales_invoice;
    assert_eq!(b.reference, "VERYLONGPREFI000000000123");
    assert!(b.notes.as_deref().unwrap().contains("reference: VERYLONGPREFIX-000000000123"));
}

#[test]
fn long_address_lines_are_cut_and_kept_in_notes() {
    let mut v = invoice_json();
    let long = "The Old Rectory, Long Lane Business Park, Unit 14 Building C";
    v["billing_address"]["street"] = json!([long]);
    let items = BTreeMap::new();
    let t = sales_invoice(&inv(v), &policy(json!({})), &uk_reference(), &links(&items)).unwrap();
    let b = &t.request.sales_invoice;
    let line1 = b.main_address.address_line_1.as_deref().unwrap();
    // The first 50 characters end in a space, which is trimmed: "…Business Park, Unit 14".
    assert_eq!(line1, "The Old Rectory, Long Lane Business Park, Unit 14");
    assert!(b.notes.as_deref().unwrap().contains(long));
}

#[test]
fn discount_tax_compensation_books_the_net_discount() {
    // magento.md I-3: gross 120 incl. 20 %, 10 % off the gross: row 100, discount 12, tax 18, dtc 2 → 108.
    // Sage: unit 100, discount 10 (12 − 2), tax 18: 100 − 10 + 18 = 108.
    let mut v = invoice_json();
    v["lines"] = json!([{"sku": "S", "name": "Shoe", "qty": 1, "unit_price": 100.00, "line_subtotal": 100.00,
                         "line_tax": 18.00, "line_total": 106.00, "tax_rate": 0.18, "product_type": "simple"}]);
    v["subtotal"] = json!(100.00);
    v["tax_amount"] = json!(18.00);
    v["discount_amount"] = json!(-12.00);
    v["shipping_amount"] = json!(0);
    v["shipping_tax_amount"] = json!(0);
    v["grand_total"] = json!(108.00);
    let items = BTreeMap::new();
    let t = sales_invoice(&inv(v), &policy(json!({})), &uk_reference(), &links(&items)).unwrap();
    let l = &t.request.sales_invoice.lines()[0];
    assert_eq!(
        (l.unit_price, l.discount_amount, l.tax_amount, l.tax_rate_id.as_str()),
        (dec!(100), dec!(10), dec!(18), "GB_STANDARD")
    );
}

#[test]
fn items_link_lines_when_products_sync() {
    let mut items = BTreeMap::new();
    items.insert("A-1".to_owned(), ItemLink { id: "P1".into(), kind: ItemKind::StockItem });
    let t = sales_invoice(&inv(invoice_json()), &policy(json!({})), &uk_reference(), &links(&items)).unwrap();
    let l = &t.request.sales_invoice.lines()[0];
    assert_eq!((l.product_id.as_deref(), l.service_id.as_deref()), (Some("P1"), None));
}

fn memo_json() -> Value {
    // Refund 1 × 10.00 at 20 % (12.00), shipping 5.00 + 1.00, adjustment refund 2.00, fee 3.00:
    // 12 + 6 + 2 − 3 = 17.00.
    json!({
        "magento_id": 55, "increment_id": "000000009", "invoice_id": 1001, "invoice_increment_id": "000000123",
        "website_id": 1, "currency": "GBP",
        "customer": {"magento_id": 5, "email": "jane@example.com", "first_name": "Jane", "last_name": "Doe", "addresses": []},
        "lines": [{"sku": "A-1", "name": "Widget", "qty": 1, "unit_price": 10.00, "line_subtotal": 10.00,
                   "line_tax": 2.00, "line_total": 12.00, "tax_rate": 0.2, "product_type": "simple"}],
        "adjustment_positive": 2.00, "adjustment_negative": 3.00, "grand_total": 17.00,
        "shipping_amount": 5.00, "shipping_tax_amount": 1.00, "reason": "Damaged in transit",
        "created_at": "2026-11-25T12:00:00Z", "invoice_created_at": "2026-11-22T09:59:00Z", "base_to_order_rate": 1
    })
}

#[test]
fn credit_note_request() {
    let memo: MagentoCreditMemo = serde_json::from_value(memo_json()).unwrap();
    let items = BTreeMap::new();
    let l = DocumentLinks { contact_id: "C1", items: &items, idempotency_key: Some("creditmemo.created:55") };
    let addresses = DocumentAddresses {
        billing: serde_json::from_value(address("billing", "GB", "SW1A 1AA")).ok(),
        shipping: None,
    };
    let t = sales_credit_note(
        &memo,
        &policy(json!({"invoice_number_prefix": "MAG-"})),
        &uk_reference(),
        &l,
        Some(&addresses),
    )
    .unwrap();
    let b = &t.request.sales_credit_note;
    assert!(b.invoice_lines.is_none());
    assert_eq!(b.reference, "MAG-000000009");
    assert_eq!(b.original_invoice_date, NaiveDate::from_ymd_opt(2026, 11, 22));
    assert_eq!(b.date, NaiveDate::from_ymd_opt(2026, 11, 25).unwrap());
    assert_eq!(b.notes.as_deref(), Some("Credit for invoice 000000123 — Damaged in transit"));
    let lines = b.lines();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        (lines[1].description.as_str(), lines[1].unit_price, lines[1].tax_rate_id.as_str()),
        ("Adjustment refund", dec!(2), "GB_NO_TAX")
    );
    assert_eq!((lines[2].description.as_str(), lines[2].unit_price), ("Adjustment fee", dec!(-3)));
    assert_eq!(b.main_address.postal_code.as_deref(), Some("SW1A 1AA"));
    assert_eq!(expected_total(b, &uk_reference().tax_rates).unwrap(), dec!(17));
}

#[test]
fn offline_refund_falls_back_to_its_own_date() {
    let mut v = memo_json();
    v["invoice_id"] = Value::Null;
    v["invoice_increment_id"] = Value::Null;
    v["invoice_created_at"] = Value::Null;
    v["reason"] = Value::Null;
    let memo: MagentoCreditMemo = serde_json::from_value(v).unwrap();
    let items = BTreeMap::new();
    let l = DocumentLinks { contact_id: "C1", items: &items, idempotency_key: None };
    let t = sales_credit_note(&memo, &policy(json!({})), &uk_reference(), &l, None).unwrap();
    let b = &t.request.sales_credit_note;
    assert_eq!(b.original_invoice_date, NaiveDate::from_ymd_opt(2026, 11, 25));
    assert_eq!(b.notes.as_deref(), Some("Credit memo 000000009 (refund from the order, no invoice)"));
    assert!(b.idempotency_id.is_none());
}

#[test]
fn payment_carries_its_allocation_inline() {
    let pay: MagentoPayment = serde_json::from_value(json!({
        "magento_id": 1001, "invoice_id": 1001, "invoice_increment_id": "000000123", "method": "braintree",
        "currency": "EUR", "amount": 30.00, "captured_at": "2026-11-22T10:00:00Z"
    }))
    .unwrap();
    let links = PaymentLinks {
        contact_id: "C1",
        invoice_id: "INV1",
        bank_account_id: "BANK",
        exchange_rate: Some(dec!(0.8547008547)),
        date: chrono::NaiveDate::from_ymd_opt(2026, 11, 22).unwrap(),
        outstanding: Some(dec!(18.00)),
        idempotency_key: Some("invoice.paid:1001"),
    };
    let got = to_json(&contact_payment(&pay, &policy(json!({"invoice_number_prefix": "MAG-"})), &links));
    // 30.00 received, 18.00 outstanding after a credit: 18.00 allocated, 12.00 on account.
    assert_eq!(
        got,
        norm(json!({"contact_payment": {
            "transaction_type_id": "CUSTOMER_RECEIPT", "contact_id": "C1", "bank_account_id": "BANK",
            "date": "2026-11-22", "total_amount": 30.00, "currency_id": "EUR", "exchange_rate": 0.8547008547,
            "reference": "MAG-000000123",
            "allocated_artefacts": [{"artefact_id": "INV1", "amount": 18.00}],
            "idempotency_id": idempotency_id("invoice.paid:1001", "contact_payment")
        }}))
    );
}

#[test]
fn allocation_amounts_are_signed() {
    let a = credit_note_allocation("C1", "INV1", "CN1", dec!(17), NaiveDate::from_ymd_opt(2026, 11, 25).unwrap(), None);
    let got = to_json(&a);
    assert_eq!(
        got["contact_allocation"]["allocated_artefacts"],
        norm(json!([{"artefact_id": "INV1", "amount": 17}, {"artefact_id": "CN1", "amount": -17}]))
    );
    assert_eq!(got["contact_allocation"]["transaction_type_id"], json!("CUSTOMER_ALLOCATION"));
}

fn person(company: Option<&str>) -> MagentoContact {
    serde_json::from_value(json!({
        "magento_id": 5, "email": "jane@example.com", "first_name": "Jane", "last_name": "Doe",
        "company": company, "phone": "07700 900000", "website_id": 1,
        "addresses": [address("billing", "GB", "SW1A 1AA"), address("shipping", "GB", "EC1A 1BB")]
    }))
    .unwrap()
}

#[test]
fn contact_name_priority_and_currency_variant() {
    let r = uk_reference();
    let c =
        contact(&person(Some("Acme &amp; Sons")), Currency::EUR, "M5E", &policy(json!({})), &r, None).request.contact;
    assert_eq!(c.name, "Acme & Sons (EUR)");
    assert_eq!(c.reference.as_deref(), Some("M5E"));
    assert_eq!(c.currency_id.as_deref(), Some("EUR"));
    let card = c.main_contact_person.unwrap();
    assert_eq!((card.name.as_deref(), card.email.as_deref()), (Some("Jane Doe"), Some("jane@example.com")));
    assert_eq!(c.delivery_address.unwrap().postal_code.as_deref(), Some("EC1A 1BB"));

    let c = contact(
        &person(Some("Acme")),
        Currency::GBP,
        "M5",
        &policy(json!({"customer_name_priority": "Person"})),
        &r,
        None,
    )
    .request
    .contact;
    assert_eq!(c.name, "Jane Doe");
    assert!(c.currency_id.is_none(), "base currency: no currency_id");
    assert_eq!(c.main_address.unwrap().name.as_deref(), Some("Acme"));
    assert_eq!(c.contact_type_ids, vec!["CUSTOMER"]);
}

#[test]
fn fallback_contact_has_no_address() {
    let p = policy(json!({"b2c_consolidation": {"enabled": true}}));
    let c = fallback_contact(&p, Currency::USD, "WEBSALESU", &uk_reference()).contact;
    assert_eq!(c.name, "Magento Web Sales (USD)");
    assert!(c.main_address.is_none() && c.delivery_address.is_none());
    assert_eq!(c.main_contact_person.unwrap().email.as_deref(), Some("sales@your-shop.example.com"));
}

fn product(kind: &str, manage_stock: bool) -> MagentoProduct {
    serde_json::from_value(json!({
        "magento_id": 2079, "sku": "MS-Champ-S-EXTRA-LONG-SKU-FOR-STOCK", "name": "Champ Tee &quot;Small&quot;",
        "product_type": kind, "price": 25, "cost": 9.5, "stock_qty": 10, "manage_stock": manage_stock, "website_ids": [1]
    }))
    .unwrap()
}

#[test]
fn item_kind_routing() {
    let stock = policy(json!({"sync_products": true, "sync_stock": true, "default_purchase_ledger_account_id": "COS"}));
    let no_stock = policy(json!({"sync_products": true, "default_purchase_ledger_account_id": "COS"}));
    assert_eq!(item_kind(&product("simple", true), &stock), Ok(ItemKind::StockItem));
    assert_eq!(item_kind(&product("simple", false), &stock), Ok(ItemKind::Product));
    assert_eq!(item_kind(&product("simple", true), &no_stock), Ok(ItemKind::Product));
    assert_eq!(item_kind(&product("virtual", false), &stock), Ok(ItemKind::Service));
    assert_eq!(item_kind(&product("downloadable", false), &stock), Ok(ItemKind::Service));
    for t in ["configurable", "bundle", "grouped", "giftcard"] {
        assert_eq!(item_kind(&product(t, false), &stock), Err("PRODUCT_TYPE_NOT_SUPPORTED"));
    }
}

#[test]
fn item_bodies() {
    let p = policy(json!({"sync_products": true, "sync_stock": true, "default_purchase_ledger_account_id": "COS"}));
    let t = item(&product("simple", true), ItemKind::StockItem, &p, None).unwrap();
    let ItemRequest::StockItem(s) = &t.request else { panic!() };
    let b = &s.stock_item;
    assert_eq!(b.item_code, "MS-Champ-S-EXTRA-LONG-SKU-FOR-");
    assert_eq!(b.item_code.len(), 30);
    assert_eq!(b.description, "Champ Tee \"Small\"");
    assert_eq!(b.purchase_ledger_account_id.as_deref(), Some("COS"));
    assert_eq!(b.sales_prices.as_ref().unwrap()[0].price, dec!(25));
    assert!(b.notes.as_deref().unwrap().contains("item_code: MS-Champ-S-EXTRA-LONG-SKU-FOR-STOCK"));
    let t = item(&product("virtual", false), ItemKind::Service, &p, None).unwrap();
    assert!(
        matches!(&t.request, ItemRequest::Service(s) if s.service.sales_rates.as_ref().unwrap()[0].rate == dec!(25))
    );
    let bad = policy(json!({}));
    assert!(
        item(&product("simple", false), ItemKind::Product, &bad, None)
            .unwrap_err()
            .to_string()
            .contains("default_purchase_ledger_account_id")
    );
}

#[test]
fn stock_movement_is_the_signed_delta() {
    let d = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    let m = stock_movement("SI1", &product("simple", true), dec!(13), d, Some("product.upserted:2079")).unwrap();
    let b = &m.stock_movement;
    assert_eq!((b.quantity, b.cost_price), (dec!(-3), dec!(9.5)));
    assert!(b.details.chars().count() <= 50, "{}", b.details);
    assert!(b.details.ends_with(" 13→10"), "{}", b.details);
    assert!(stock_movement("SI1", &product("simple", true), dec!(10), d, None).is_none());
}

#[test]
fn idempotency_ids_are_stable_guids_per_purpose() {
    let a = idempotency_id("invoice.created:1001", "sales_invoice");
    assert_eq!(a.len(), 32);
    assert!(a.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(a, idempotency_id("invoice.created:1001", "sales_invoice"));
    assert_ne!(a, idempotency_id("invoice.created:1001", "contact_payment"));
    assert_ne!(a, idempotency_id("invoice.created:1002", "sales_invoice"));
    // The first 16 bytes of SHA-256("byte8-ledger:sales_invoice:invoice.created:1001"), in
    // lowercase hex, as Python's hashlib gives them: an id must not change across versions, or a
    // retry after an upgrade would post a second invoice.
    assert_eq!(a, "a8db017c31cdaf04904a4047d593b772");
}

#[test]
fn price_and_discount_cases() {
    assert_eq!(price_and_discount(dec!(2), dec!(10), dec!(20)), (dec!(10), dec!(0)));
    assert_eq!(price_and_discount(dec!(2), dec!(10), dec!(18)), (dec!(10), dec!(2)));
    assert_eq!(price_and_discount(dec!(3), dec!(8.33), dec!(25)), (dec!(8.34), dec!(0.02)));
    // A rounding residual that raised the net above qty × unit: 1 × 10.00 for a net of 10.01.
    assert_eq!(price_and_discount(dec!(1), dec!(10), dec!(10.01)), (dec!(10.01), dec!(0)));
    // Decimal quantity: 1.5 kg at 3.33 = 4.995 → 5.00 gross, net 5.00.
    assert_eq!(price_and_discount(dec!(1.5), dec!(3.33), dec!(5.00)), (dec!(3.33), dec!(0)));
}

// ---- issue 12: adjustments, gift cards, tenders ---------------------------------------------

/// (description, ledger account, unit price, tax rate, tax) of every line.
fn line_facts(body: &DocumentBody) -> Vec<(String, String, Decimal, String, Decimal)> {
    body.lines()
        .iter()
        .map(|l| {
            (
                l.description.clone(),
                l.ledger_account_id.clone(),
                l.unit_price.normalize(),
                l.tax_rate_id.clone(),
                l.tax_amount.normalize(),
            )
        })
        .collect()
}

fn fact(
    d: &str,
    account: &str,
    price: Decimal,
    rate: &str,
    tax: Decimal,
) -> (String, String, Decimal, String, Decimal) {
    (d.to_owned(), account.to_owned(), price.normalize(), rate.to_owned(), tax.normalize())
}

/// A memo refunding 1 × 10.00 at 20 % (12.00 gross) with an adjustment refund of 12.00: 24.00.
fn adjustment_memo() -> MagentoCreditMemo {
    let mut v = memo_json();
    v["shipping_amount"] = json!(0);
    v["shipping_tax_amount"] = json!(0);
    v["adjustment_positive"] = json!(12.00);
    v["adjustment_negative"] = json!(0);
    v["grand_total"] = json!(24.00);
    serde_json::from_value(v).unwrap()
}

fn credit(memo: &MagentoCreditMemo, p: &SyncPolicy) -> Result<Transformed<PostSalesCreditNote>> {
    let items = BTreeMap::new();
    let l = DocumentLinks { contact_id: "C1", items: &items, idempotency_key: None };
    sales_credit_note(memo, p, &uk_reference(), &l, None)
}

#[test]
fn adjustments_carry_no_tax_by_default_and_the_vat_fraction_pro_rata() {
    let memo = adjustment_memo();
    let t = credit(&memo, &policy(json!({}))).unwrap();
    assert_eq!(
        line_facts(&t.request.sales_credit_note)[1],
        fact("Adjustment refund", "SALES", dec!(12.00), "GB_NO_TAX", dec!(0)),
        "no_tax is the default: Magento records no VAT on adjustments"
    );
    // reg. 38: 12.00 refunded at 20 % = 10.00 + 12 × 20/120 = 2.00.
    let t = credit(&memo, &policy(json!({"adjustment_tax_treatment": "pro_rata"}))).unwrap();
    assert_eq!(
        line_facts(&t.request.sales_credit_note)[1],
        fact("Adjustment refund (20%)", "SALES", dec!(10.00), "GB_STANDARD", dec!(2.00))
    );
    assert_eq!(expected_total(&t.request.sales_credit_note, &uk_reference().tax_rates).unwrap(), dec!(24.00));
}

#[test]
fn pro_rata_adjustments_split_over_the_memos_own_rates_by_gross() {
    // Lines: 10.00 + 2.00 at 20 % (gross 12.00) and 20.00 + 1.00 at 5 % (gross 21.00): 33.00.
    // Refund 11.00: 11 × 12/33 = 4.00 at 20 % → VAT 4 × 20/120 = 0.666… → 0.67, net 3.33;
    //               11 × 21/33 = 7.00 at 5 % → VAT 7 × 5/105 = 0.333… → 0.33, net 6.67.
    // Fee 3.30: 3.30 × 12/33 = 1.20 → VAT 0.20, net 1.00; 3.30 × 21/33 = 2.10 → VAT 0.10, net 2.00.
    // Total 33.00 + 11.00 − 3.30 = 40.70.
    let mut v = memo_json();
    v["lines"] = json!([
        {"sku": "A-1", "name": "Widget", "qty": 1, "unit_price": 10.00, "line_subtotal": 10.00,
         "line_tax": 2.00, "line_total": 12.00, "tax_rate": 0.2, "product_type": "simple"},
        {"sku": "B-1", "name": "Book", "qty": 1, "unit_price": 20.00, "line_subtotal": 20.00,
         "line_tax": 1.00, "line_total": 21.00, "tax_rate": 0.05, "product_type": "simple"}]);
    v["shipping_amount"] = json!(0);
    v["shipping_tax_amount"] = json!(0);
    v["adjustment_positive"] = json!(11.00);
    v["adjustment_negative"] = json!(3.30);
    v["grand_total"] = json!(40.70);
    let memo: MagentoCreditMemo = serde_json::from_value(v).unwrap();
    let t = credit(&memo, &policy(json!({"adjustment_tax_treatment": "pro_rata"}))).unwrap();
    let facts = line_facts(&t.request.sales_credit_note);
    assert_eq!(
        facts[2..].to_vec(),
        vec![
            fact("Adjustment refund (20%)", "SALES", dec!(3.33), "GB_STANDARD", dec!(0.67)),
            fact("Adjustment refund (5%)", "SALES", dec!(6.67), "GB_LOWER", dec!(0.33)),
            fact("Adjustment fee (20%)", "SALES", dec!(-1.00), "GB_STANDARD", dec!(-0.20)),
            fact("Adjustment fee (5%)", "SALES", dec!(-2.00), "GB_LOWER", dec!(-0.10)),
        ]
    );
    assert_eq!(expected_total(&t.request.sales_credit_note, &uk_reference().tax_rates).unwrap(), dec!(40.70));
}

/// `invoice_json` (30.00) plus a 50.00 gift card sold: 80.00.
fn gift_card_invoice() -> MagentoInvoice {
    let mut v = invoice_json();
    v["lines"].as_array_mut().unwrap().push(json!({"sku": "GC-50", "name": "Gift card £50", "qty": 1,
        "unit_price": 50.00, "line_subtotal": 50.00, "line_tax": 0, "line_total": 50.00, "tax_rate": null,
        "product_type": "giftcard"}));
    v["subtotal"] = json!(70.00);
    v["grand_total"] = json!(80.00);
    inv(v)
}

#[test]
fn a_gift_card_sold_is_a_voucher_on_its_liability_account_without_vat_or_fails_naming_it() {
    let items = BTreeMap::new();
    let p = policy(json!({"gift_card_ledger_account_id": "GIFT_LIAB"}));
    let t = sales_invoice(&gift_card_invoice(), &p, &uk_reference(), &links(&items)).unwrap();
    let facts = line_facts(&t.request.sales_invoice);
    assert_eq!(facts[0], fact("Widget", "SALES", dec!(10.00), "GB_STANDARD", dec!(4.00)));
    assert_eq!(facts[1], fact("Gift card £50", "GIFT_LIAB", dec!(50.00), "GB_NO_TAX", dec!(0)));
    assert_eq!(expected_total(&t.request.sales_invoice, &uk_reference().tax_rates).unwrap(), dec!(80.00));

    let err = sales_invoice(&gift_card_invoice(), &policy(json!({})), &uk_reference(), &links(&items)).unwrap_err();
    assert_eq!(err.code(), crate::error::ErrorCode::Validation);
    let text = err.to_string();
    assert!(
        text.contains("lines[1]") && text.contains("GC-50") && text.contains("gift_card_ledger_account_id"),
        "{text}"
    );
}

#[test]
fn tenders_keep_revenue_and_vat_as_charged_and_book_the_liabilities() {
    // invoice_json: 30.00 charged; 10.00 paid by gift card and 5.00 by store credit: grand_total 15.00.
    let mut v = invoice_json();
    v["grand_total"] = json!(15.00);
    v["tenders"] = json!({"gift_cards_amount": 10.00, "customer_balance_amount": 5.00});
    let items = BTreeMap::new();
    let p =
        policy(json!({"gift_card_ledger_account_id": "GIFT_LIAB", "store_credit_ledger_account_id": "CREDIT_LIAB"}));
    let t = sales_invoice(&inv(v.clone()), &p, &uk_reference(), &links(&items)).unwrap();
    let body = &t.request.sales_invoice;
    assert_eq!(
        line_facts(body),
        vec![
            fact("Widget", "SALES", dec!(10.00), "GB_STANDARD", dec!(4.00)),
            fact("Gift card redeemed", "GIFT_LIAB", dec!(-10.00), "GB_NO_TAX", dec!(0)),
            fact("Store credit redeemed", "CREDIT_LIAB", dec!(-5.00), "GB_NO_TAX", dec!(0)),
        ]
    );
    assert_eq!((body.shipping_net_amount, body.shipping_tax_amount), (Some(dec!(5.00)), Some(dec!(1.00))));
    assert_eq!(expected_total(body, &uk_reference().tax_rates).unwrap(), dec!(15.00), "what is left to pay");

    // Without the accounts: validation naming each tender and its key; without the tenders, the
    // document is below its lines and refused as before.
    let text =
        sales_invoice(&inv(v.clone()), &policy(json!({})), &uk_reference(), &links(&items)).unwrap_err().to_string();
    assert!(text.contains("tenders.gift_cards_amount") && text.contains("gift_card_ledger_account_id"), "{text}");
    assert!(
        text.contains("tenders.customer_balance_amount") && text.contains("store_credit_ledger_account_id"),
        "{text}"
    );
    v["tenders"] = json!({});
    let text = sales_invoice(&inv(v), &p, &uk_reference(), &links(&items)).unwrap_err().to_string();
    assert!(text.contains("below"), "{text}");
}

#[test]
fn a_refund_to_store_credit_credits_the_liability() {
    // 1 × 10.00 + 2.00 refunded, all of it to store credit: cash refunded 0.00.
    let mut v = memo_json();
    v["shipping_amount"] = json!(0);
    v["shipping_tax_amount"] = json!(0);
    v["adjustment_positive"] = json!(0);
    v["adjustment_negative"] = json!(0);
    v["grand_total"] = json!(0);
    v["tenders"] = json!({"customer_balance_amount": 12.00});
    let memo: MagentoCreditMemo = serde_json::from_value(v).unwrap();
    let t = credit(&memo, &policy(json!({"store_credit_ledger_account_id": "CREDIT_LIAB"}))).unwrap();
    assert_eq!(
        line_facts(&t.request.sales_credit_note),
        vec![
            fact("Widget", "SALES", dec!(10.00), "GB_STANDARD", dec!(2.00)),
            fact("Store credit refunded", "CREDIT_LIAB", dec!(-12.00), "GB_NO_TAX", dec!(0)),
        ]
    );
    assert_eq!(expected_total(&t.request.sales_credit_note, &uk_reference().tax_rates).unwrap(), dec!(0));
}

/// Issue 18: the buyer's VAT number goes on the contact as `tax_number` (openapi-v3.1
/// `postContacts.contact.tax_number`), normalised; absent when the buyer has none; the B2C
/// fallback contact never carries one.
#[test]
fn the_vat_number_goes_on_the_contact_as_tax_number() {
    let r = uk_reference();
    let mut c = person(Some("Acme GmbH"));
    let body = |c: &MagentoContact| {
        serde_json::to_value(contact(c, Currency::GBP, "M5", &policy(json!({})), &r, None).request).unwrap()
    };
    assert!(body(&c)["contact"].get("tax_number").is_none(), "no number, no key: {}", body(&c));
    c.vat_number = Some(" de 123 456 789 ".into());
    assert_eq!(body(&c)["contact"]["tax_number"], json!("DE123456789"));
    // The billing address's vat_id wins over the customer's taxvat (magento.md 5.11).
    c.addresses[0].vat_id = Some("de-987.654.321".into());
    assert_eq!(body(&c)["contact"]["tax_number"], json!("DE987654321"));
    let fallback = serde_json::to_value(fallback_contact(&policy(json!({})), Currency::GBP, "WEB", &r)).unwrap();
    assert!(fallback["contact"].get("tax_number").is_none());
}
