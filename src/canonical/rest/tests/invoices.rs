//! `invoice_from_rest` on the tutorial invoice and on hand-derived documents.

use rust_decimal::Decimal;

use super::{address, d, fixture, json, line, set, strip_nulls, utc};
use crate::{
    canonical::{
        AddressKind, InvoiceState, MagentoContact,
        rest::{contact_from_order, invoice_from_rest},
    },
    money::Currency,
};

#[test]
fn tutorial_invoice_with_hand_written_order() {
    // The Adobe tutorial invoice (unchanged) with the order written by hand to match it
    // (order.inventory-tutorial.json: items 3, 4, 5 are the invoice's order_item_ids).
    let inv = invoice_from_rest(
        &fixture!("invoice.inventory-tutorial.discount.json"),
        &fixture!("order.inventory-tutorial.json"),
    )
    .unwrap();
    assert_eq!(inv.magento_id, 3);
    assert_eq!(inv.increment_id, "000000003");
    assert_eq!(inv.order_id, 3);
    assert_eq!(inv.order_increment_id, "000000003");
    assert_eq!(inv.store_id, 1);
    assert_eq!(inv.website_id, 0, "orders carry no website (magento.md 1)");
    assert_eq!(inv.currency, Currency::USD);
    assert_eq!(inv.state, InvoiceState::Paid);
    assert_eq!(inv.created_at, utc(2020, 7, 23, 16, 59, 20));
    assert_eq!(inv.base_to_order_rate, Some(d("1")));
    assert_eq!(inv.payment_method.as_deref(), Some("checkmo"));
    assert_eq!(inv.po_number, None);
    // Lines: line_total = row_total + tax − discount; 20 % discount on every row, no tax:
    //   720 + 0 − 144 = 576;  1280 + 0 − 256 = 1024;  22 + 0 − 4.4 = 17.6.
    assert_eq!(
        inv.lines,
        vec![
            line("24-WB03", "Driven Backpack", "20", "36", "720", "0", "576", None, "simple"),
            line("24-WB01", "Voyage Yoga Bag", "40", "32", "1280", "0", "1024", None, "simple"),
            line("240-LV06", "Yoga Adventure", "1", "22", "22", "0", "17.6", None, "simple"),
        ]
    );
    // Header passed through: I-1 2022 + 300 + 0 + 0 − 404.4 = 1917.6.
    assert_eq!(inv.subtotal, d("2022"));
    assert_eq!(inv.tax_amount, d("0"));
    assert_eq!(inv.shipping_amount, d("300"));
    assert_eq!(inv.shipping_tax_amount, d("0"));
    assert_eq!(inv.discount_amount, d("-404.4"));
    assert_eq!(inv.grand_total, d("1917.6"));
    // The line discounts 144 + 256 + 4.4 = 404.4 are the whole header discount: no shipping
    // discount.
    let b = inv.breakdown().unwrap();
    assert_eq!(b.shipping.discount, Decimal::ZERO);
    assert_eq!(b.total(), d("1917.6"));

    let billing = address(
        AddressKind::Billing,
        &["123 Oak Ave"],
        "Purchase",
        Some("New York"),
        Some("10755"),
        "US",
        Some("512-555-1111"),
    );
    let shipping = address(
        AddressKind::Shipping,
        &["123 Oak Ave"],
        "Purchase",
        Some("New York"),
        Some("10755"),
        "US",
        Some("512-555-1111"),
    );
    assert_eq!(inv.billing_address.as_ref(), Some(&billing));
    assert_eq!(inv.shipping_address.as_ref(), Some(&shipping));
    // Registered buyer (customer_id 2, customer_is_guest 0), built from the order; the shipping
    // address is row 5 and the billing row 6, so both are on the contact.
    assert_eq!(
        inv.customer,
        MagentoContact {
            magento_id: 2,
            email: "jdoe@example.com".into(),
            first_name: Some("Jane".into()),
            last_name: Some("Doe".into()),
            company: None,
            vat_number: None,
            phone: Some("512-555-1111".into()),
            website_id: 0,
            group_id: Some(1),
            addresses: vec![billing, shipping],
            created_at: None,
            updated_at: None,
        }
    );
}

#[test]
fn configurable_parent_carries_money_child_is_dummy() {
    // Items: 10 configurable parent (2 × 50, tax 20 %), 11 its simple child (dummy, no
    // row_total), 12 a simple (1 × 15.50, tax 3.10).
    //   parent line: 100 + 20 − 0 = 120, rate 20 / 100 = 0.2
    //   simple line: 15.50 + 3.10 − 0 = 18.60, rate 3.10 / 15.50 = 0.2
    //   header: subtotal 100 + 15.50 = 115.50; tax 20 + 3.10 + shipping tax 2 = 25.10;
    //   I-1 115.50 + 10 + 25.10 + 0 + 0 = 150.60.
    let inv = invoice_from_rest(&fixture!("invoice.configurable.json"), &fixture!("order.configurable.json")).unwrap();
    assert_eq!(
        inv.lines,
        vec![
            // The parent line keeps its SKU, which is the chosen child's (magento.md 5.1).
            line("MH01-S-Gray", "Chaz Kangeroo Hoodie", "2", "50", "100", "20", "120", Some("0.2"), "configurable"),
            line("24-UG01", "Quest Lumaflex&trade; Band", "1", "15.5", "15.5", "3.1", "18.6", Some("0.2"), "simple"),
        ]
    );
    assert_eq!(inv.subtotal, d("115.5"));
    assert_eq!(inv.tax_amount, d("25.1"));
    assert_eq!(inv.shipping_amount, d("10"));
    assert_eq!(inv.shipping_tax_amount, d("2"));
    assert_eq!(inv.grand_total, d("150.6"));
    assert_eq!(inv.currency, Currency::GBP);
    assert_eq!(inv.payment_method.as_deref(), Some("braintree"));
    assert_eq!(inv.created_at, utc(2024, 3, 5, 23, 30, 0));
    // Billing street ["1 High Street", ""]: the empty line is removed; the address's
    // `vat_id` (magento.md 3.7) rides on it.
    let mut billing = address(
        AddressKind::Billing,
        &["1 High Street"],
        "London",
        Some("Greater London"),
        Some("SW1A 1AA"),
        "GB",
        Some("020 7946 0000"),
    );
    billing.vat_id = Some("GB123456789".into());
    assert_eq!(inv.billing_address, Some(billing));
    // The buyer's VAT number is the billing address's (the order has no customer_taxvat).
    assert_eq!(inv.customer.vat_number().as_deref(), Some("GB123456789"));
    assert_eq!(
        inv.shipping_address,
        Some(address(
            AddressKind::Shipping,
            &["Unit 4", "Dock Road"],
            "Liverpool",
            Some("Merseyside"),
            Some("L3 4AA"),
            "GB",
            Some("0151 496 0000")
        ))
    );
    assert_eq!(inv.customer.magento_id, 7);
    assert_eq!(inv.customer.company.as_deref(), Some("Taylor Design Ltd"));
}

#[test]
fn configurable_child_with_populated_prices_is_still_a_dummy() {
    // magento.md 5.1: some versions fill the child's prices. Give the child row the parent's
    // money (2 × 50 = 100, tax 20): it must still be dropped, from the structure alone, and the
    // lines stay those of the test above (a kept child would make Σ line_subtotal 215.50 ≠ 115.50).
    let mut invoice = fixture!("invoice.configurable.json");
    set(&mut invoice, "/items/1/price", json("50"));
    set(&mut invoice, "/items/1/row_total", json("100"));
    set(&mut invoice, "/items/1/tax_amount", json("20"));
    let inv = invoice_from_rest(&invoice, &fixture!("order.configurable.json")).unwrap();
    assert_eq!(inv.lines.len(), 2);
    assert_eq!(inv.lines[0].product_type.as_deref(), Some("configurable"));
    assert_eq!(inv.lines[0].line_subtotal, d("100"));
    assert_eq!(inv.lines[1].sku, "24-UG01");

    // The same when the order has only the embedded `parent_item` copy and no parent row: the
    // child is recognised through `parent_item.product_type`.
    let mut order = fixture!("order.configurable.json");
    super::remove(&mut order, "/items/1/parent_item_id");
    let inv = invoice_from_rest(&invoice, &order).unwrap();
    assert_eq!(inv.lines.len(), 2);
}

#[test]
fn dynamic_and_fixed_bundles() {
    // Dynamic bundle 20 (parent row: price 68 = 18 + 50, no row_total → dummy) with children
    //   21: 1 × 18, tax 3.60 → 18 + 3.60 − 0 = 21.60, rate 3.60 / 18 = 0.2
    //   22: 1 × 50, tax 0 (zero-rated child) → 50, rate null
    // Fixed bundle 30 (parent carries the money): 1 × 80, discount 8, tax after discount
    //   (80 − 8) × 20 % = 14.40 → 80 + 14.40 − 8 = 86.40, rate 14.40 / 80 = 0.18;
    //   children 31, 32 are dummies.
    // Header: subtotal 18 + 50 + 80 = 148; tax 3.60 + 14.40 = 18; discount −8;
    //   I-1 148 + 0 + 18 + 0 − 8 = 158.
    let inv = invoice_from_rest(&fixture!("invoice.bundles.json"), &fixture!("order.bundles.json")).unwrap();
    assert_eq!(
        inv.lines,
        vec![
            line("24-WG084", "Sprite Foam Roller", "1", "18", "18", "3.6", "21.6", Some("0.2"), "simple"),
            line("24-WG080", "Sprite Stasis Ball Guide", "1", "50", "50", "0", "50", None, "simple"),
            line("FIX-KIT", "Fixed Travel Kit", "1", "80", "80", "14.4", "86.4", Some("0.18"), "bundle"),
        ]
    );
    assert_eq!(inv.subtotal, d("148"));
    assert_eq!(inv.tax_amount, d("18"));
    assert_eq!(inv.discount_amount, d("-8"));
    assert_eq!(inv.grand_total, d("158"));
    // 21.60 + 50 + 86.40 = 158: nothing left to place.
    assert!(inv.breakdown().unwrap().placements.is_empty());
}

#[test]
fn bundle_price_type_from_product_options_wins_over_row_total() {
    // If the order items say the price type (product_calculations 0 = CALCULATE_CHILD for the
    // dynamic bundle, 1 = CALCULATE_PARENT for the fixed one), a present `row_total: 0` on the
    // dynamic parent's row does not make it a money line. Without product_options the same
    // row_total would make bundle 20 look fixed (its children dummies, the parent line
    // 1 × 68 ≠ 0) and the document would be refused.
    let mut invoice = fixture!("invoice.bundles.json");
    set(&mut invoice, "/items/0/row_total", json("0"));
    let order = fixture!("order.bundles.json");
    assert!(invoice_from_rest(&invoice, &order).is_err());

    let mut order = order;
    set(&mut order, "/items/0/product_options", json(r#"{"product_calculations": 0}"#));
    set(&mut order, "/items/3/product_options", json(r#"{"product_calculations": "1"}"#));
    let inv = invoice_from_rest(&invoice, &order).unwrap();
    let skus: Vec<&str> = inv.lines.iter().map(|l| l.sku.as_str()).collect();
    assert_eq!(skus, ["24-WG084", "24-WG080", "FIX-KIT"]);
    assert_eq!(inv.lines[2].line_total, d("86.4"));
}

#[test]
fn header_discount_with_shipping_discount_and_half_up_unit_prices() {
    // TENOFF: 10 % off items and shipping, no tax.
    //   40: 3 × 33.3333 → row_total 100 (rounded from 99.9999), discount 10 → total 90;
    //       unit_price round(33.3333) = 33.33
    //   41: 2 × 12.345 = 24.69, discount 2.469 → 2.47 → total 22.22;
    //       unit_price round_half_up(12.345) = 12.35 (banker's rounding would give 12.34)
    //   shipping 10, shipping discount 1
    //   header discount −(10 + 2.47 + 1) = −13.47;
    //   I-1 124.69 + 10 + 0 + 0 − 13.47 = 121.22.
    let inv = invoice_from_rest(&fixture!("invoice.shipping-discount.json"), &fixture!("order.shipping-discount.json"))
        .unwrap();
    assert_eq!(
        inv.lines,
        vec![
            line("WSH12-28-Red", "Erika Running Short", "3", "33.33", "100", "0", "90", None, "simple"),
            line("24-MB02", "Fusion Backpack", "2", "12.35", "24.69", "0", "22.22", None, "simple"),
        ]
    );
    assert_eq!(inv.discount_amount, d("-13.47"));
    assert_eq!(inv.grand_total, d("121.22"));
    assert_eq!(inv.store_id, 2);
    // The part of |−13.47| not on lines: 13.47 − (10 + 2.47) = 1 is the shipping discount.
    let b = inv.breakdown().unwrap();
    assert_eq!(b.shipping.discount, d("1"));
    assert_eq!(b.shipping.net(), d("9"));
    assert_eq!(b.total(), d("121.22"));
}

#[test]
fn tax_inclusive_discount_tax_compensation_i3() {
    // magento.md I-3 worked example: gross 120 incl. 20 %, 10 % discount on the gross.
    //   row_total 100, discount 12, tax after discount 18, dtc 2.
    //   canonical line_total = 100 + 18 − 12 = 106 (the module leaves dtc out);
    //   tax_rate = 18 / 100 = 0.18.
    //   header I-1: 100 + 0 + 18 + 2 − 12 = 108.
    let inv =
        invoice_from_rest(&fixture!("invoice.tax-inclusive.json"), &fixture!("order.tax-inclusive.json")).unwrap();
    assert_eq!(
        inv.lines,
        vec![line("24-WG085", "Sprite Yoga Strap 6 foot", "1", "100", "100", "18", "106", Some("0.18"), "simple")]
    );
    assert_eq!(inv.grand_total, d("108"));
    // totals infers the compensation from the header: 108 − 106 = 2, back to net: 100 − 12 + 2 = 90.
    let b = inv.breakdown().unwrap();
    assert_eq!(b.lines[0].discount_tax_compensation, d("2"));
    assert_eq!(b.lines[0].net(), d("90"));
    assert_eq!(b.total(), d("108"));
}

#[test]
fn guest_order_invoice() {
    // Guest (customer_is_guest 1, no customer_id): synthetic contact, magento_id 0, website 0,
    // group null, company and phone from the billing address, dates from the order.
    //   line: 34 + 7.82 − 0 = 41.82, rate 7.82 / 34 = 0.23
    //   header: tax 7.82 + 1.15 = 8.97; I-1 34 + 5 + 8.97 = 47.97.
    let order = fixture!("order.guest.json");
    let inv = invoice_from_rest(&fixture!("invoice.guest.json"), &order).unwrap();
    assert_eq!(inv.state, InvoiceState::Open);
    assert_eq!(inv.currency, Currency::EUR);
    assert_eq!(
        inv.lines,
        vec![line("24-MB01", "Joust Duffle Bag", "1", "34", "34", "7.82", "41.82", Some("0.23"), "simple")]
    );
    assert_eq!(inv.tax_amount, d("8.97"));
    assert_eq!(inv.grand_total, d("47.97"));
    let billing = address(
        AddressKind::Billing,
        &["12 Main Street"],
        "Dublin",
        Some("Dublin"),
        Some("D02 X285"),
        "IE",
        Some("+353 1 555 0100"),
    );
    let shipping =
        address(AddressKind::Shipping, &["Unit 7, Business Park"], "Cork", None, Some("T12 AB34"), "IE", None);
    let expected = MagentoContact {
        magento_id: 0,
        email: "ann.guest@example.ie".into(),
        first_name: Some("Ann".into()),
        last_name: Some("Byrne".into()),
        company: Some("Byrne Crafts".into()),
        vat_number: None,
        phone: Some("+353 1 555 0100".into()),
        website_id: 0,
        group_id: None,
        addresses: vec![billing, shipping],
        created_at: Some(utc(2024, 6, 1, 9, 15, 0)),
        updated_at: Some(utc(2024, 6, 1, 9, 20, 0)),
    };
    assert_eq!(inv.customer, expected);
    assert!(inv.customer.is_guest());
    assert_eq!(contact_from_order(&order).unwrap(), expected);
}

#[test]
fn virtual_order_has_no_shipping_address() {
    // is_virtual 1: shipping_assignments[0].shipping has no address. The invoice leaves out the
    // shipping and discount keys entirely, which read as 0.
    //   line: 12.50 + 2.50 − 0 = 15, rate 2.50 / 12.50 = 0.2; I-1 12.50 + 0 + 2.50 = 15.
    let inv = invoice_from_rest(&fixture!("invoice.virtual.json"), &fixture!("order.virtual.json")).unwrap();
    assert_eq!(inv.shipping_address, None);
    assert!(inv.billing_address.is_some());
    assert_eq!(inv.customer.addresses.len(), 1);
    assert_eq!(inv.customer.addresses[0].kind, AddressKind::Billing);
    assert_eq!(inv.customer.group_id, Some(2));
    assert_eq!(inv.shipping_amount, Decimal::ZERO);
    assert_eq!(inv.shipping_tax_amount, Decimal::ZERO);
    assert_eq!(inv.discount_amount, Decimal::ZERO);
    assert_eq!(
        inv.lines,
        vec![line(
            "ebook-accounting",
            "Accounting for Shops (e-book)",
            "1",
            "12.5",
            "12.5",
            "2.5",
            "15",
            Some("0.2"),
            "downloadable"
        )]
    );
    assert_eq!(inv.grand_total, d("15"));
}

#[test]
fn explicit_nulls_and_missing_keys_read_the_same() {
    // Custom composite "kit": the parent row has row_total null → a dummy by the fallback rule
    // (magento.md 5.2); children 81 (1 × 10, tax null → 0, discount null → 0: total 10) and
    // 82 (2 × 10 = 20, total 20). Header: subtotal 10 + 20 = 30, tax 0, shipping null → 0,
    // discount null → 0, grand 30. Currency: order_currency_code null → base_currency_code HKD.
    let invoice = fixture!("invoice.explicit-nulls.json");
    let order = fixture!("order.explicit-nulls.json");
    let with_nulls = invoice_from_rest(&invoice, &order).unwrap();
    assert_eq!(
        with_nulls.lines,
        vec![
            line("TEA-GREEN", "Green Tea", "1", "10", "10", "0", "10", None, "simple"),
            line("TEA-CUP", "Tea Cup", "2", "10", "20", "0", "20", None, "simple"),
        ]
    );
    assert_eq!(with_nulls.currency, Currency::HKD);
    assert_eq!(with_nulls.state, InvoiceState::Open);
    assert_eq!(with_nulls.base_to_order_rate, None);
    assert_eq!(with_nulls.shipping_amount, Decimal::ZERO);
    assert_eq!(with_nulls.discount_amount, Decimal::ZERO);
    assert_eq!(with_nulls.po_number, None);
    let billing = with_nulls.billing_address.clone().unwrap();
    assert_eq!((billing.postcode, billing.region), (None, None));
    assert_eq!(with_nulls.customer.company, None);
    assert_eq!(with_nulls.customer.addresses[1].telephone, None);

    // The same documents with every null key removed give exactly the same invoice.
    let (mut invoice_missing, mut order_missing) = (invoice, order);
    strip_nulls(&mut invoice_missing);
    strip_nulls(&mut order_missing);
    assert!(invoice_missing["items"][0].get("row_total").is_none());
    let with_missing = invoice_from_rest(&invoice_missing, &order_missing).unwrap();
    assert_eq!(with_missing, with_nulls);
}

#[test]
fn string_money_and_ids() {
    // Every amount, quantity and id is a string. Order currency EUR on a GBP base, rate 1.25.
    //   line: 2 × 19.99 = 39.98, tax 8.00 (39.98 × 20 % = 7.996 → 8.00) → 39.98 + 8 = 47.98;
    //   tax_rate round(8 / 39.98, 4) = round(0.200100…, 4) = 0.2001
    //   header: tax 8 + shipping tax 1 = 9; I-1 39.98 + 5 + 9 + 0 − 0 = 53.98.
    let inv = invoice_from_rest(&fixture!("invoice.string-money.json"), &fixture!("order.string-money.json")).unwrap();
    assert_eq!(inv.magento_id, 61);
    assert_eq!(inv.order_id, 108);
    assert_eq!(inv.store_id, 4);
    assert_eq!(inv.state, InvoiceState::Open);
    assert_eq!(inv.currency, Currency::EUR);
    assert_eq!(inv.base_to_order_rate, Some(d("1.25")));
    assert_eq!(
        inv.lines,
        vec![line(
            "MSH02-32-Black",
            "Apollo Running Short",
            "2",
            "19.99",
            "39.98",
            "8",
            "47.98",
            Some("0.2001"),
            "simple"
        )]
    );
    assert_eq!(inv.tax_amount, d("9"));
    assert_eq!(inv.shipping_amount, d("5"));
    assert_eq!(inv.shipping_tax_amount, d("1"));
    assert_eq!(inv.discount_amount, Decimal::ZERO);
    assert_eq!(inv.grand_total, d("53.98"));
    assert_eq!(inv.payment_method.as_deref(), Some("purchaseorder"));
    assert_eq!(inv.po_number.as_deref(), Some("PO-2024-0042"));
    assert_eq!(inv.customer.magento_id, 15);
}

#[test]
fn adobe_commerce_tenders_are_read_from_extension_attributes() {
    // The tutorial invoice (1917.60) with 100.00 paid by gift card and 17.60 by store credit, as
    // Adobe Commerce writes them: grand_total 1800.00, the tenders in extension_attributes.
    let mut invoice = fixture!("invoice.inventory-tutorial.discount.json");
    set(&mut invoice, "/grand_total", serde_json::json!(1800));
    set(
        &mut invoice,
        "/extension_attributes",
        serde_json::json!({"gift_cards_amount": 100, "customer_balance_amount": "17.6"}),
    );
    let inv = invoice_from_rest(&invoice, &fixture!("order.inventory-tutorial.json")).unwrap();
    assert_eq!(
        (inv.tenders.gift_cards_amount, inv.tenders.customer_balance_amount, inv.tenders.reward_currency_amount),
        (d("100"), d("17.6"), d("0"))
    );
    assert_eq!(inv.grand_total, d("1800"));
    assert_eq!(inv.breakdown().unwrap().total(), d("1917.6"), "the sale value: 1800 + 100 + 17.6");
    // Without them the same grand_total is a document below its lines, refused.
    set(&mut invoice, "/extension_attributes", serde_json::json!({}));
    assert!(invoice_from_rest(&invoice, &fixture!("order.inventory-tutorial.json")).is_err());
}
