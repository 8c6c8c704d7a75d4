//! Unit tests of the pure Xero transforms. Every expected value is computed by hand in the
//! comments, never copied from the code's output.

use std::collections::BTreeMap;

use chrono::{NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::{Value, json};

use super::*;
use crate::{
    canonical::{MagentoCreditMemo, MagentoInvoice, MagentoProduct},
    money::Currency,
    policy::SyncPolicy,
    providers::{ItemKind, ItemLink},
    reference::{BankAccount, BusinessProfile, LedgerAccount, ReferenceData, TaxRate},
};

fn reference() -> ReferenceData {
    let rate = |id: &str, name: &str, p: Decimal| TaxRate {
        id: id.into(),
        name: name.into(),
        percentage: Some(p),
        visible: true,
    };
    let account = |code: &str, sales: bool| LedgerAccount {
        id: code.into(),
        name: code.into(),
        code: Some(code.into()),
        visible_in_sales: sales,
        visible_in_expenses: !sales,
    };
    let mut extensions = BTreeMap::new();
    extensions.insert(INVENTORY_ACCOUNT_KEY.to_owned(), "630".to_owned());
    ReferenceData {
        business: BusinessProfile {
            id: "tenant".into(),
            name: "Test Shop Ltd".into(),
            country: "GB".into(),
            northern_ireland: false,
            base_currency: Currency::GBP,
            multi_currency: true,
            subscription: Some("PREMIUM".into()),
        },
        tax_rates: vec![
            rate("OUTPUT2", "20% (VAT on Income)", dec!(20)),
            rate("RROUTPUT", "5% (VAT on Income)", dec!(5)),
            rate("ZERORATEDOUTPUT", "Zero Rated Income", dec!(0)),
            rate("EXEMPTOUTPUT", "Exempt Income", dec!(0)),
            rate("ECZROUTPUT", "Zero Rated EC Goods Income", dec!(0)),
            rate("ECZROUTPUTSERVICES", "Zero Rated EC Services", dec!(0)),
            rate("NONE", "No VAT", dec!(0)),
        ],
        ledger_accounts: vec![account("200", true), account("310", false), account("825", true)],
        bank_accounts: vec![BankAccount {
            id: "090".into(),
            name: "Bank".into(),
            currency: Some(Currency::GBP),
            active: true,
        }],
        payment_methods: Vec::new(),
        currencies: vec!["GBP".into(), "EUR".into(), "USD".into()],
        fetched_at: Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap(),
        extensions,
    }
}

fn policy(extra: Value) -> SyncPolicy {
    let mut p = json!({"default_ledger_account_id": "200", "default_tax_rate_id": "OUTPUT2",
        "default_purchase_ledger_account_id": "310",
        "tax_rate_map": {"20": "OUTPUT2", "5": "RROUTPUT", "0": "ZERORATEDOUTPUT"}, "invoice_number_prefix": "MAG-"});
    for (k, v) in extra.as_object().unwrap() {
        p[k] = v.clone();
    }
    SyncPolicy::from_json(&p.to_string()).unwrap()
}

fn address(country: &str, postcode: &str) -> Value {
    json!({"kind": "billing", "street": ["1 High Street", "Flat 2"], "city": "London", "postcode": postcode, "country_id": country})
}

/// 2 × 10.00 at 20 % (4.00) + shipping 5.00 at 20 % (1.00) = 30.00.
fn invoice_json() -> Value {
    json!({
        "magento_id": 1001, "increment_id": "000000123", "order_id": 77, "order_increment_id": "000000077",
        "website_id": 1, "store_id": 1, "currency": "GBP", "state": "open",
        "customer": {"magento_id": 5, "email": "jane@example.com", "first_name": "Jane", "last_name": "Doe", "website_id": 1, "addresses": []},
        "lines": [{"sku": "A-1", "name": "Widget", "qty": 2, "unit_price": 10.00, "line_subtotal": 20.00,
                   "line_tax": 4.00, "line_total": 24.00, "tax_rate": 0.2, "product_type": "simple"}],
        "subtotal": 20.00, "tax_amount": 5.00, "shipping_amount": 5.00, "shipping_tax_amount": 1.00,
        "discount_amount": 0, "grand_total": 30.00, "created_at": "2026-11-22T09:59:00Z",
        "billing_address": address("GB", "SW1A 1AA"), "shipping_address": address("GB", "SW1A 1AA"),
        "po_number": "PO-9", "base_to_order_rate": 1
    })
}

fn inv(v: Value) -> MagentoInvoice {
    serde_json::from_value(v).unwrap()
}

fn links(items: &BTreeMap<String, ItemLink>) -> DocumentLinks<'_> {
    DocumentLinks { contact_id: "C1", items }
}

fn with_lines(lines: Value, shipping: (f64, f64), grand: Value) -> Value {
    let mut v = invoice_json();
    let subtotal: Decimal =
        lines.as_array().unwrap().iter().map(|l| l["line_subtotal"].to_string().parse::<Decimal>().unwrap()).sum();
    let tax: Decimal =
        lines.as_array().unwrap().iter().map(|l| l["line_tax"].to_string().parse::<Decimal>().unwrap()).sum();
    v["lines"] = lines;
    v["subtotal"] = serde_json::from_str(&subtotal.to_string()).unwrap();
    let ship_tax = Decimal::try_from(shipping.1).unwrap();
    v["tax_amount"] = serde_json::from_str(&(tax + ship_tax).to_string()).unwrap();
    v["shipping_amount"] = json!(shipping.0);
    v["shipping_tax_amount"] = json!(shipping.1);
    v["grand_total"] = grand;
    v
}

#[test]
fn a_domestic_invoice_is_exactly_the_expected_element() {
    let items = BTreeMap::new();
    let t = invoice(&inv(invoice_json()), &policy(json!({})), &reference(), &links(&items)).unwrap();
    let expected = json!({
        "Type": "ACCREC", "Contact": {"ContactID": "C1"}, "Date": "2026-11-22", "DueDate": "2026-12-06",
        "LineAmountTypes": "Exclusive", "InvoiceNumber": "MAG-000000123", "Reference": "Order 000000077 / PO PO-9",
        "CurrencyCode": "GBP", "Status": "AUTHORISED",
        "LineItems": [
            // 2 × 10.00 = 20.00; Xero: round(20.00 × 20 %) = 4.00 = Magento's: no TaxAmount.
            {"Description": "Widget", "Quantity": 2, "UnitAmount": 10.00, "AccountCode": "200", "TaxType": "OUTPUT2"},
            // Shipping is an ordinary line: 5.00 at 20 % = 1.00.
            {"Description": "Shipping", "Quantity": 1, "UnitAmount": 5.00, "AccountCode": "200", "TaxType": "OUTPUT2"}
        ]
    });
    assert_eq!(serde_json::to_value(&t.request).unwrap(), expected);
}

#[test]
fn the_prefix_is_never_doubled() {
    let mut v = invoice_json();
    v["increment_id"] = json!("MAG-000000123");
    let items = BTreeMap::new();
    let t = invoice(&inv(v), &policy(json!({})), &reference(), &links(&items)).unwrap();
    assert_eq!(t.request.invoice_number, "MAG-000000123");
}

#[test]
fn a_tax_inclusive_store_gets_inclusive_line_amounts() {
    // Gross 0.99 at 20 %: Magento backs out round(0.99 × 20/120) = round(0.165) = 0.17, net 0.82.
    // Exclusive, Xero would compute round(0.82 × 20 %) = round(0.164) = 0.16 ≠ 0.17;
    // inclusive, Xero computes round(0.99 × 20/120) = 0.17 = Magento's: Inclusive, no override.
    let v = with_lines(
        json!([{"sku": "P", "name": "Pencil", "qty": 1, "unit_price": 0.82, "line_subtotal": 0.82,
                "line_tax": 0.17, "line_total": 0.99, "tax_rate": 0.2073, "product_type": "simple"}]),
        (0.0, 0.0),
        json!(0.99),
    );
    let items = BTreeMap::new();
    let t = invoice(&inv(v), &policy(json!({})), &reference(), &links(&items)).unwrap();
    assert_eq!(t.request.line_amount_types, "Inclusive");
    let line = &t.request.line_items[0];
    assert_eq!((line.quantity, line.unit_amount, line.tax_amount), (dec!(1), dec!(0.99), None));
}

#[test]
fn xeros_rounding_that_cannot_match_gets_an_explicit_tax_amount() {
    // Net 10.00 with 2.01 tax (Magento's per-document rounding put a penny here). Exclusive:
    // round(10.00 × 20 %) = 2.00; inclusive: round(12.01 × 20/120) = round(2.0017) = 2.00. Neither
    // reproduces 2.01: Exclusive (the tie) with TaxAmount 2.01, total 10.00 + 2.01 = 12.01.
    let v = with_lines(
        json!([{"sku": "A", "name": "A", "qty": 1, "unit_price": 10.00, "line_subtotal": 10.00,
                "line_tax": 2.01, "line_total": 12.01, "tax_rate": 0.201, "product_type": "simple"}]),
        (0.0, 0.0),
        json!(12.01),
    );
    let items = BTreeMap::new();
    let t = invoice(&inv(v), &policy(json!({})), &reference(), &links(&items)).unwrap();
    assert_eq!(t.request.line_amount_types, "Exclusive");
    assert_eq!(t.request.line_items[0].tax_amount, Some(dec!(2.01)));
    assert!(t.notes.iter().any(|n| n.starts_with("tax_amount_override")), "{:?}", t.notes);
}

#[test]
fn discounts_ride_on_the_line_and_fine_prices_use_four_decimals() {
    // 2 × 10.00 = 20.00 less a 2.00 discount = 18.00 net, 3.60 tax (20 %): 21.60.
    let mut v = with_lines(
        json!([{"sku": "A", "name": "A", "qty": 2, "unit_price": 10.00, "line_subtotal": 20.00,
                "line_tax": 3.60, "line_total": 21.60, "tax_rate": 0.18, "product_type": "simple"}]),
        (0.0, 0.0),
        json!(21.60),
    );
    v["discount_amount"] = json!(-2.00);
    let items = BTreeMap::new();
    let t = invoice(&inv(v), &policy(json!({})), &reference(), &links(&items)).unwrap();
    let l = &t.request.line_items[0];
    assert_eq!(
        (l.quantity, l.unit_amount, l.discount_amount, l.tax_amount),
        (dec!(2), dec!(10.00), Some(dec!(2.00)), None)
    );
    // 3 × 8.33 = 24.99 cannot reach 25.00 with a discount: 25.00 / 3 = 8.3333 (4 dp), 3 × 8.3333 = 24.9999 → 25.00.
    assert_eq!(fit_amount(dec!(3), dec!(8.33), dec!(25.00), true), (dec!(3), dec!(8.3333), None, false));
    // 300 × 0.3333 = 99.99: no 4-decimal unit reaches 100.00; one row of 100.00.
    assert_eq!(fit_amount(dec!(300), dec!(0.33), dec!(100.00), false), (dec!(1), dec!(100.00), None, true));
    // Exact already.
    assert_eq!(fit_amount(dec!(2), dec!(10.00), dec!(20.00), true), (dec!(2), dec!(10.00), None, false));
}

#[test]
fn exports_are_zero_rated_in_the_vat_return_not_no_vat() {
    // A US buyer of goods, no tax: 20.00 + 5.00 shipping = 25.00, every line ZERORATEDOUTPUT (box 6).
    let mut v = with_lines(
        json!([{"sku": "A", "name": "A", "qty": 2, "unit_price": 10.00, "line_subtotal": 20.00,
                "line_tax": 0, "line_total": 20.00, "tax_rate": null, "product_type": "simple"}]),
        (5.0, 0.0),
        json!(25.00),
    );
    v["billing_address"] = address("US", "10001");
    v["shipping_address"] = address("US", "10001");
    let items = BTreeMap::new();
    let t = invoice(&inv(v), &policy(json!({})), &reference(), &links(&items)).unwrap();
    let types: Vec<&str> = t.request.line_items.iter().map(|l| l.tax_type.as_str()).collect();
    assert_eq!(types, ["ZERORATEDOUTPUT", "ZERORATEDOUTPUT"]);
}

#[test]
fn collected_foreign_vat_goes_to_its_liability_account_or_fails_naming_the_field() {
    // A German consumer charged 19 %: 20.00 + 3.80, shipping 5.00 + 0.95 = 29.75.
    let mut v = with_lines(
        json!([{"sku": "A", "name": "A", "qty": 2, "unit_price": 10.00, "line_subtotal": 20.00,
                "line_tax": 3.80, "line_total": 23.80, "tax_rate": 0.19, "product_type": "simple"}]),
        (5.0, 0.95),
        json!(29.75),
    );
    v["billing_address"] = address("DE", "10115");
    v["shipping_address"] = address("DE", "10115");
    let items = BTreeMap::new();
    let e = invoice(&inv(v.clone()), &policy(json!({})), &reference(), &links(&items)).unwrap_err();
    assert_eq!(e.field_errors()[0].path, "foreign_vat_ledger_account_id");
    let t = invoice(&inv(v), &policy(json!({"foreign_vat_ledger_account_id": "825"})), &reference(), &links(&items))
        .unwrap();
    let vat = t.request.line_items.last().unwrap();
    // 3.80 + 0.95 = 4.75 to 825 with No VAT.
    assert_eq!((vat.account_code.as_str(), vat.tax_type.as_str(), vat.unit_amount), ("825", "NONE", dec!(4.75)));
}

#[test]
fn foreign_currency_sends_magentos_rate_and_an_unknown_currency_is_refused() {
    let mut v = invoice_json();
    v["currency"] = json!("EUR");
    v["base_to_order_rate"] = json!(1.17);
    let items = BTreeMap::new();
    let t = invoice(&inv(v.clone()), &policy(json!({})), &reference(), &links(&items)).unwrap();
    assert_eq!((t.request.currency_code.as_str(), t.request.currency_rate), ("EUR", Some(dec!(1.17))));
    v["currency"] = json!("CHF");
    let e = invoice(&inv(v), &policy(json!({})), &reference(), &links(&items)).unwrap_err();
    assert!(e.to_string().contains("CHF is not one of this Xero organisation's currencies"), "{e}");
    assert_eq!(currency_rate(Currency::GBP, Currency::GBP, Some(dec!(1.17))), None);
    assert_eq!(
        currency_rate(Currency::EUR, Currency::GBP, Some(dec!(1))),
        None,
        "rate 1 between currencies: Xero's own"
    );
    assert_eq!(
        currency_rate(Currency::EUR, Currency::GBP, Some(dec!(1.123456789))),
        Some(dec!(1.123457)),
        "6 dp half up"
    );
}

#[test]
fn a_rate_from_magentos_other_base_is_left_to_xero_with_a_note() {
    // Magento based in EUR, the organisation in GBP: a EUR invoice at rate 1 says nothing of GBP.
    let mut v = invoice_json();
    v["currency"] = json!("EUR");
    v["base_currency"] = json!("EUR");
    v["base_to_order_rate"] = json!(1);
    let items = BTreeMap::new();
    let t = invoice(&inv(v), &policy(json!({})), &reference(), &links(&items)).unwrap();
    assert_eq!(t.request.currency_rate, None, "no EUR→GBP rate in Magento's data: Xero's day rate");
    let note = t.notes.iter().find(|n| n.starts_with("currency_rate_from_xero")).expect("a note");
    assert!(note.contains("EUR") && note.contains("GBP"), "{note}");
    // Magento based in GBP: its rate is sent as it is.
    let mut v = invoice_json();
    v["currency"] = json!("EUR");
    v["base_currency"] = json!("GBP");
    v["base_to_order_rate"] = json!(1.17);
    let t = invoice(&inv(v), &policy(json!({})), &reference(), &links(&items)).unwrap();
    assert_eq!(t.request.currency_rate, Some(dec!(1.17)));
}

#[test]
fn xero_documents_and_payments_carry_the_stores_local_date() {
    // 23:30 UTC on 30 June is 1 July in London (BST), the default zone of a GB organisation.
    let mut v = invoice_json();
    v["created_at"] = json!("2026-06-30T23:30:00Z");
    let items = BTreeMap::new();
    let t = invoice(&inv(v), &policy(json!({})), &reference(), &links(&items)).unwrap();
    assert_eq!(t.request.date, NaiveDate::from_ymd_opt(2026, 7, 1).unwrap());
    let mut v = invoice_json();
    v["created_at"] = json!("2026-06-30T23:30:00Z");
    let t = invoice(&inv(v), &policy(json!({"store_timezone": "UTC"})), &reference(), &links(&items)).unwrap();
    assert_eq!(t.request.date, NaiveDate::from_ymd_opt(2026, 6, 30).unwrap());
}

#[test]
fn items_link_by_code() {
    let mut items = BTreeMap::new();
    items.insert("A-1".to_owned(), ItemLink { id: "I1".into(), kind: ItemKind::StockItem });
    let t = invoice(&inv(invoice_json()), &policy(json!({})), &reference(), &links(&items)).unwrap();
    assert_eq!(t.request.line_items[0].item_code.as_deref(), Some("A-1"));
    assert_eq!(t.request.line_items[1].item_code, None, "shipping has no item");
}

#[test]
fn credit_notes_carry_no_discount_and_adjustments_are_no_vat() {
    // 1 × 10.00 at 20 % (12.00), shipping 5.00 + 1.00, adjustment refund 2.00, fee 3.00: 17.00.
    let memo: MagentoCreditMemo = serde_json::from_value(json!({
        "magento_id": 55, "increment_id": "000000009", "invoice_id": 1001, "invoice_increment_id": "000000123",
        "website_id": 1, "currency": "GBP",
        "customer": {"magento_id": 5, "email": "jane@example.com", "first_name": "Jane", "last_name": "Doe", "addresses": []},
        "lines": [{"sku": "A-1", "name": "Widget", "qty": 1, "unit_price": 10.00, "line_subtotal": 10.00,
                   "line_tax": 2.00, "line_total": 12.00, "tax_rate": 0.2, "product_type": "simple"}],
        "adjustment_positive": 2.00, "adjustment_negative": 3.00, "grand_total": 17.00,
        "shipping_amount": 5.00, "shipping_tax_amount": 1.00, "created_at": "2026-11-25T12:00:00Z", "base_to_order_rate": 1
    }))
    .unwrap();
    let items = BTreeMap::new();
    let t = credit_note(&memo, &policy(json!({})), &reference(), &links(&items), None).unwrap();
    let r = &t.request;
    assert_eq!((r.kind.as_str(), r.credit_note_number.as_str()), ("ACCRECCREDIT", "MAG-000000009"));
    assert_eq!(r.reference.as_deref(), Some("Credit for invoice MAG-000000123"));
    assert!(r.line_items.iter().all(|l| l.discount_amount.is_none()));
    let adjustments: Vec<(Decimal, &str)> = r
        .line_items
        .iter()
        .filter(|l| l.description.starts_with("Adjustment"))
        .map(|l| (l.unit_amount, l.tax_type.as_str()))
        .collect();
    assert_eq!(adjustments, [(dec!(2.00), "NONE"), (dec!(-3.00), "NONE")]);
}

#[test]
fn tax_types_are_resolved_from_the_organisations_rates() {
    let t = TaxTypes::resolve(&reference()).unwrap();
    assert_eq!(
        (t.zero_rated.as_str(), t.ec_goods.as_str(), t.no_vat.as_str()),
        ("ZERORATEDOUTPUT", "ECZROUTPUT", "NONE")
    );
    assert_eq!(t.for_treatment(TaxTreatment::ReverseCharge, EuSupplyType::Services), "ECZROUTPUTSERVICES");
    assert_eq!(t.for_treatment(TaxTreatment::OutsideScope, EuSupplyType::Services), "ZERORATEDOUTPUT");
    // An organisation of another country with custom rates: found by name.
    let mut r = reference();
    r.tax_rates = vec![
        TaxRate { id: "TAX001".into(), name: "GST on Income".into(), percentage: Some(dec!(15)), visible: true },
        TaxRate { id: "TAX002".into(), name: "Zero Rated".into(), percentage: Some(dec!(0)), visible: true },
        TaxRate { id: "TAX003".into(), name: "No GST".into(), percentage: Some(dec!(0)), visible: true },
    ];
    let t = TaxTypes::resolve(&r).unwrap();
    assert_eq!((t.zero_rated.as_str(), t.ec_goods.as_str()), ("TAX002", "TAX002"));
    r.tax_rates.retain(|x| x.percentage != Some(dec!(0)));
    assert!(TaxTypes::resolve(&r).is_err());
}

#[test]
fn idempotency_keys_are_short_stable_and_follow_the_body() {
    let a = idempotency_key("invoice.created:1001", "invoices", b"{\"a\":1}");
    assert_eq!(a, idempotency_key("invoice.created:1001", "invoices", b"{\"a\":1}"));
    assert_ne!(a, idempotency_key("invoice.created:1001", "invoices", b"{\"a\":2}"), "another body, another key");
    assert_ne!(a, idempotency_key("invoice.created:1002", "invoices", b"{\"a\":1}"));
    assert!(a.len() <= 128 && !a.is_empty());
    // SHA-256 of the key (12 bytes) and of the body (8 bytes) in lowercase hex, as Python's
    // hashlib gives them: a key must not change across versions.
    assert_eq!(a, "byte8-ledger:invoices:d453ca55a423ef3376f92441:015abd7f5cc57a2d");
    let long = "x".repeat(500);
    assert!(idempotency_key(&long, &long, long.as_bytes()).chars().count() <= 128);
}

#[test]
fn long_skus_get_a_deterministic_30_character_code() {
    assert_eq!(item_code("MS-Champ-S"), "MS-Champ-S");
    let a = item_code("VERY-LONG-SKU-0123456789-RED-XL-A");
    let b = item_code("VERY-LONG-SKU-0123456789-RED-XL-B");
    assert_eq!(a.chars().count(), 30);
    assert!(a.starts_with("VERY-LONG-SKU-0123456") && a.contains('~'));
    assert_ne!(a, b, "a shared prefix never shares a code");
    assert_eq!(a, item_code("VERY-LONG-SKU-0123456789-RED-XL-A"));
}

#[test]
fn contacts_follow_the_name_priority_with_invoice_and_delivery_addresses() {
    let c: crate::canonical::MagentoContact = serde_json::from_value(json!({
        "magento_id": 5, "email": "jane@example.com", "first_name": "Jane", "last_name": "Doe", "company": "Acme &amp; Co",
        "phone": "020 7946 0018",
        "addresses": [address("GB", "SW1A 1AA"), {"kind": "shipping", "street": ["2 Low Road"], "city": "Leeds", "postcode": "LS1 1AA", "country_id": "GB"}]
    }))
    .unwrap();
    let company = contact(&c, "M5", &policy(json!({})));
    assert_eq!((company.name.as_str(), company.contact_number.as_str()), ("Acme & Co", "M5"));
    assert_eq!(company.addresses[0].address_type, "POBOX");
    assert_eq!(company.addresses[1].address_type, "STREET");
    assert_eq!(company.addresses[1].city.as_deref(), Some("Leeds"));
    let person = contact(&c, "M5", &policy(json!({"customer_name_priority": "Person"})));
    assert_eq!(person.name, "Jane Doe");
    assert_eq!(person.addresses[0].attention_to.as_deref(), Some("Acme & Co"));
    assert_eq!(unique_name("Jane Doe", "M5"), "Jane Doe (M5)");
}

#[test]
fn stock_adjustments_are_zero_value_bills_or_supplier_credits() {
    let product: MagentoProduct =
        serde_json::from_value(json!({"magento_id": 1, "sku": "S", "name": "S", "product_type": "simple",
        "price": 25, "cost": 9.5, "stock_qty": 10, "manage_stock": true}))
        .unwrap();
    let date = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    let p = policy(json!({}));
    // 7 → 10: +3 at 9.50 = 28.50 to inventory, −28.50 to COGS: a zero-value bill.
    match stock_adjustment(&product, dec!(7), date, "ADJ", &p, &reference(), Some("k")).unwrap() {
        Some(StockAdjustment::Increase(bill)) => {
            assert_eq!(bill.kind, "ACCPAY");
            let amounts: Vec<(Decimal, Decimal, &str)> =
                bill.line_items.iter().map(|l| (l.quantity, l.unit_amount, l.account_code.as_str())).collect();
            assert_eq!(amounts, [(dec!(3), dec!(9.50), "630"), (dec!(1), dec!(-28.50), "310")]);
        }
        other => panic!("{other:?}"),
    }
    // 12 → 10: −2: a supplier credit note.
    assert!(matches!(
        stock_adjustment(&product, dec!(12), date, "ADJ", &p, &reference(), None).unwrap(),
        Some(StockAdjustment::Decrease(c)) if c.kind == "ACCPAYCREDIT" && c.line_items[0].quantity == dec!(2)
    ));
    assert!(stock_adjustment(&product, dec!(10), date, "ADJ", &p, &reference(), None).unwrap().is_none());
}

#[test]
fn xero_total_is_computed_as_xero_computes_it() {
    let line = |q: Decimal, u: Decimal, d: Option<Decimal>, t: Option<Decimal>| LineItem {
        description: "x".into(),
        quantity: q,
        unit_amount: u,
        item_code: None,
        account_code: "200".into(),
        tax_type: "OUTPUT2".into(),
        tax_amount: t,
        discount_amount: d,
    };
    let pct = |_: &str| Some(dec!(20));
    // 3 × 8.3333 = 24.9999 → 25.00, +5.00 tax; 2 × 10.00 − 2.00 = 18.00, +3.60: 51.60.
    let lines = [line(dec!(3), dec!(8.3333), None, None), line(dec!(2), dec!(10.00), Some(dec!(2.00)), None)];
    assert_eq!(xero_total(&lines, AmountMode::Exclusive, pct).unwrap(), dec!(51.60));
    // Inclusive: the line amounts are the total.
    assert_eq!(xero_total(&lines, AmountMode::Inclusive, pct).unwrap(), dec!(43.00));
    assert_eq!(xero_line_tax(dec!(0.99), dec!(20), AmountMode::Inclusive), dec!(0.17));
}

#[test]
fn gift_cards_tenders_and_pro_rata_adjustments_book_as_on_sage() {
    // invoice_json (30.00) + a 50.00 gift card sold (no VAT) = 80.00; 20.00 of it paid by gift
    // card: grand_total 60.00.
    let mut v = invoice_json();
    v["lines"].as_array_mut().unwrap().push(json!({"sku": "GC-50", "name": "Gift card", "qty": 1,
        "unit_price": 50.00, "line_subtotal": 50.00, "line_tax": 0, "line_total": 50.00, "product_type": "giftcard"}));
    v["subtotal"] = json!(70.00);
    v["grand_total"] = json!(60.00);
    v["tenders"] = json!({"gift_cards_amount": 20.00});
    let items = BTreeMap::new();
    let p = policy(json!({"gift_card_ledger_account_id": "820"}));
    let t = invoice(&inv(v.clone()), &p, &reference(), &links(&items)).unwrap();
    let facts: Vec<(&str, Decimal, &str, &str)> = t
        .request
        .line_items
        .iter()
        .map(|l| (l.description.as_str(), l.unit_amount, l.account_code.as_str(), l.tax_type.as_str()))
        .collect();
    assert!(facts.contains(&("Gift card", dec!(50.00), "820", "NONE")), "{facts:?}");
    assert!(facts.contains(&("Gift card redeemed", dec!(-20.00), "820", "NONE")), "{facts:?}");
    assert!(facts.contains(&("Widget", dec!(10.00), "200", "OUTPUT2")), "revenue as charged: {facts:?}");
    let err = invoice(&inv(v), &policy(json!({})), &reference(), &links(&items)).unwrap_err();
    assert_eq!(err.code(), crate::error::ErrorCode::Validation);
    assert!(err.to_string().contains("gift_card_ledger_account_id"), "{err}");

    // A memo of 10.00 + 2.00 with an adjustment refund of 12.00, pro rata: 10.00 + 2.00 VAT.
    let memo: MagentoCreditMemo = serde_json::from_value(json!({
        "magento_id": 56, "increment_id": "000000010", "invoice_id": 1001, "invoice_increment_id": "000000123",
        "website_id": 1, "currency": "GBP",
        "customer": {"magento_id": 5, "email": "jane@example.com", "first_name": "Jane", "last_name": "Doe", "addresses": []},
        "lines": [{"sku": "A-1", "name": "Widget", "qty": 1, "unit_price": 10.00, "line_subtotal": 10.00,
                   "line_tax": 2.00, "line_total": 12.00, "tax_rate": 0.2, "product_type": "simple"}],
        "adjustment_positive": 12.00, "adjustment_negative": 0, "grand_total": 24.00,
        "shipping_amount": 0, "shipping_tax_amount": 0, "created_at": "2026-11-25T12:00:00Z", "base_to_order_rate": 1
    }))
    .unwrap();
    let t = credit_note(
        &memo,
        &policy(json!({"adjustment_tax_treatment": "pro_rata"})),
        &reference(),
        &links(&items),
        None,
    )
    .unwrap();
    let adj = t.request.line_items.iter().find(|l| l.description.starts_with("Adjustment")).unwrap();
    assert_eq!((adj.unit_amount, adj.tax_type.as_str()), (dec!(10.00), "OUTPUT2"));
    // No explicit TaxAmount means Xero's own 20 % of 10.00 = 2.00 is Magento's; either way 2.00.
    assert!(adj.tax_amount.is_none_or(|t| t == dec!(2.00)), "{:?}", adj.tax_amount);
    let none = credit_note(&memo, &policy(json!({})), &reference(), &links(&items), None).unwrap();
    let adj = none.request.line_items.iter().find(|l| l.description.starts_with("Adjustment")).unwrap();
    assert_eq!((adj.unit_amount, adj.tax_type.as_str()), (dec!(12.00), "NONE"), "no_tax by default");
}

/// Issue 18: the buyer's VAT number goes on the Xero contact as `TaxNumber`, normalised; absent
/// when the buyer has none.
#[test]
fn the_vat_number_goes_on_the_contact_as_tax_number() {
    let mut c: crate::canonical::MagentoContact = serde_json::from_value(json!({
        "magento_id": 5, "email": "jane@example.com", "company": "Acme SARL", "vat_number": "fr 12 345678901",
        "addresses": [address("FR", "75001")]
    }))
    .unwrap();
    let v = serde_json::to_value(contact(&c, "M5", &policy(json!({})))).unwrap();
    assert_eq!(v["TaxNumber"], json!("FR12345678901"));
    c.vat_number = None;
    let v = serde_json::to_value(contact(&c, "M5", &policy(json!({})))).unwrap();
    assert!(v.get("TaxNumber").is_none(), "{v}");
}
