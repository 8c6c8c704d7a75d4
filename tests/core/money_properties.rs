//! Property tests of the money invariants (tax.md 3.4): for every valid generated Magento invoice
//! and credit memo — several lines, quantities with decimals, discounts, tax-inclusive stores with
//! discount tax compensation, Magento's penny delta rounding, shipping, several rates, foreign
//! currency, exports and collected foreign VAT — the Sage request adds up, as Sage itself computes
//! it, to Magento's `grand_total` to the penny.
//!
//! The generator computes each document the way Magento does (magento.md 4, 5.3, 5.4), in integer
//! cents, so no float ever touches the amounts.

use crate::support;

use byte8_ledger_core::{
    canonical::{MagentoCreditMemo, MagentoInvoice},
    money::{RoundingPolicy, round_money},
    plan,
    providers::sage::transform::{self, DocumentLinks},
};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use support::{policy, uk_reference};

fn cents(c: i64) -> Decimal {
    Decimal::new(c, 2)
}

/// One generated line, before Magento's arithmetic.
#[derive(Debug, Clone)]
struct LineSeed {
    /// Quantity in hundredths (100 = 1).
    qty_hundredths: i64,
    /// Unit price in ten-thousandths (Magento keeps 4 decimals), excluding tax in exclusive stores,
    /// including tax in inclusive ones.
    price_4dp: i64,
    /// 20, 5 or 0.
    rate: i64,
    /// Discount percentage of the row.
    discount_pct: i64,
    /// Simulate Magento's TOTAL delta rounding: −1, 0 or +1 cent on the tax.
    delta: i64,
    virtual_product: bool,
}

fn line_seed() -> impl Strategy<Value = LineSeed> {
    (
        prop_oneof![(1i64..=5).prop_map(|q| q * 100), 25i64..=350],
        1i64..=5_000_000,
        prop_oneof![Just(20i64), Just(5), Just(0)],
        prop_oneof![Just(0i64), Just(5), Just(10), Just(33)],
        -1i64..=1,
        any::<bool>(),
    )
        .prop_map(|(qty_hundredths, price_4dp, rate, discount_pct, delta, virtual_product)| LineSeed {
            qty_hundredths,
            price_4dp,
            rate,
            discount_pct,
            delta,
            virtual_product,
        })
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Buyer {
    Domestic,
    Export,
    Ioss,
}

#[derive(Debug, Clone)]
struct DocSeed {
    lines: Vec<LineSeed>,
    inclusive: bool,
    shipping_cents: i64,
    shipping_rate: i64,
    shipping_delta: i64,
    shipping_discount_pct: i64,
    header_residual: i64,
    foreign: bool,
    buyer: Buyer,
}

fn doc_seed() -> impl Strategy<Value = DocSeed> {
    (
        prop::collection::vec(line_seed(), 1..8),
        any::<bool>(),
        prop_oneof![Just(0i64), 1i64..5_000],
        prop_oneof![Just(20i64), Just(0)],
        -1i64..=1,
        prop_oneof![Just(0i64), Just(50)],
        prop_oneof![4 => Just(0i64), 1 => -1i64..=1],
        any::<bool>(),
        prop_oneof![3 => Just(Buyer::Domestic), 1 => Just(Buyer::Export), 1 => Just(Buyer::Ioss)],
    )
        .prop_map(
            |(
                lines,
                inclusive,
                shipping_cents,
                shipping_rate,
                shipping_delta,
                shipping_discount_pct,
                header_residual,
                foreign,
                buyer,
            )| {
                DocSeed {
                    lines,
                    inclusive,
                    shipping_cents,
                    shipping_rate,
                    shipping_delta,
                    shipping_discount_pct,
                    header_residual,
                    foreign,
                    buyer,
                }
            },
        )
}

fn r2(d: Decimal) -> Decimal {
    round_money(d)
}

/// Magento's delta rounding (magento.md 5.4): each row's tax is the exact tax plus the residue
/// carried from earlier rows, rounded, so it is always within a penny of the exact tax: the exact
/// value rounded down (−1), to nearest (0) or up (+1).
fn delta_round(exact: Decimal, delta: i64) -> Decimal {
    match delta {
        -1 => RoundingPolicy::Down.round(exact, 2),
        1 => RoundingPolicy::Up.round(exact, 2),
        _ => r2(exact),
    }
}

fn num(d: Decimal) -> Value {
    // Exact decimal text as a JSON number (arbitrary_precision keeps it).
    serde_json::from_str(&d.to_string()).unwrap()
}

/// Builds the canonical lines, shipping and header exactly as Magento would compute them.
/// Returns (lines JSON, subtotal, tax, discount magnitude, shipping, shipping tax, grand total,
/// discount tax compensation).
#[allow(clippy::type_complexity)]
fn magento(seed: &DocSeed) -> (Vec<Value>, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal, Decimal) {
    let hundred = Decimal::ONE_HUNDRED;
    let taxed = seed.buyer != Buyer::Export;
    // IOSS: German 19 % on every line; domestic: the line's UK rate; export: no tax.
    let rate_of = |r: i64| -> Decimal {
        match seed.buyer {
            Buyer::Domestic => Decimal::from(r),
            Buyer::Export => Decimal::ZERO,
            Buyer::Ioss => Decimal::from(19),
        }
    };
    let mut lines = Vec::new();
    let (mut subtotal, mut tax_total, mut discount_total, mut dtc_total) =
        (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    for l in &seed.lines {
        let qty = Decimal::new(l.qty_hundredths, 2);
        let rate = rate_of(l.rate) / hundred;
        let price = Decimal::new(l.price_4dp, 4);
        let (row, discount, tax, dtc) = if seed.inclusive && taxed {
            // Catalog price includes tax.
            // calculateWithTaxInPrice: the row tax comes out of the gross row, the net is the rest.
            let row_gross = r2(price * qty);
            let tax_before = delta_round(row_gross * rate / (Decimal::ONE + rate), l.delta);
            let row = row_gross - tax_before;
            let discount = r2(row_gross * Decimal::from(l.discount_pct) / hundred); // a gross discount
            let tax_after =
                if discount.is_zero() { tax_before } else { r2((row_gross - discount) * rate / (Decimal::ONE + rate)) };
            let dtc = (tax_before - tax_after).max(Decimal::ZERO).min(discount);
            (row, discount, tax_after, if discount.is_zero() { Decimal::ZERO } else { dtc })
        } else {
            let row = r2(price * qty);
            let discount = r2(row * Decimal::from(l.discount_pct) / hundred);
            let tax = delta_round((row - discount) * rate, l.delta);
            (row, discount, tax, Decimal::ZERO)
        };
        let unit = if seed.inclusive && taxed {
            r2(RoundingPolicy::HalfUp.round(price / (Decimal::ONE + rate), 4))
        } else {
            r2(price)
        };
        let tax_rate = if row > Decimal::ZERO && tax > Decimal::ZERO {
            num(RoundingPolicy::HalfUp.round(tax / row, 4))
        } else {
            Value::Null
        };
        lines.push(json!({
            "sku": format!("SKU-{}", lines.len()), "name": "Item &amp; co", "qty": num(qty), "unit_price": num(unit),
            "line_subtotal": num(row), "line_tax": num(tax), "line_total": num(row + tax - discount),
            "tax_rate": tax_rate, "product_type": if l.virtual_product { "virtual" } else { "simple" }
        }));
        subtotal += row;
        tax_total += tax;
        discount_total += discount;
        dtc_total += dtc;
    }
    let ship_rate = match seed.buyer {
        Buyer::Domestic => Decimal::from(seed.shipping_rate) / hundred,
        Buyer::Export => Decimal::ZERO,
        Buyer::Ioss => Decimal::new(19, 2),
    };
    let (shipping, ship_discount, ship_tax, ship_dtc) = if seed.inclusive && taxed {
        // Shipping prices include tax too (a store configured consistently).
        let gross = cents(seed.shipping_cents);
        let before = delta_round(gross * ship_rate / (Decimal::ONE + ship_rate), seed.shipping_delta);
        let net = gross - before;
        let discount = r2(gross * Decimal::from(seed.shipping_discount_pct) / hundred);
        let after =
            if discount.is_zero() { before } else { r2((gross - discount) * ship_rate / (Decimal::ONE + ship_rate)) };
        let dtc = (before - after).max(Decimal::ZERO).min(discount);
        (net, discount, after, dtc)
    } else {
        let shipping = cents(seed.shipping_cents);
        let discount = r2(shipping * Decimal::from(seed.shipping_discount_pct) / hundred);
        (shipping, discount, delta_round((shipping - discount) * ship_rate, seed.shipping_delta), Decimal::ZERO)
    };
    dtc_total += ship_dtc;
    let residual =
        if taxed && tax_total > Decimal::ZERO { Decimal::new(seed.header_residual, 2) } else { Decimal::ZERO };
    let tax = tax_total + ship_tax + residual;
    let discount = discount_total + ship_discount;
    let grand = subtotal + shipping + tax - discount + dtc_total;
    (lines, subtotal, tax, discount, shipping, ship_tax, grand, dtc_total)
}

fn address(country: &str, postcode: &str) -> Value {
    json!({"kind": "billing", "street": ["1 Main St"], "city": "Town", "postcode": postcode, "country_id": country})
}

fn invoice(seed: &DocSeed) -> MagentoInvoice {
    let (lines, subtotal, tax, discount, shipping, ship_tax, grand, _) = magento(seed);
    let (country, postcode) = match seed.buyer {
        Buyer::Domestic => ("GB", "SW1A 1AA"),
        Buyer::Export => ("US", "10001"),
        Buyer::Ioss => ("DE", "10115"),
    };
    serde_json::from_value(json!({
        "magento_id": 1, "increment_id": "100000001", "order_id": 1, "order_increment_id": "100000001",
        "currency": if seed.foreign { "EUR" } else { "GBP" }, "state": "open",
        "customer": {"magento_id": 9, "email": "buyer@example.com", "first_name": "B", "last_name": "Uyer"},
        "lines": lines, "subtotal": num(subtotal), "tax_amount": num(tax), "shipping_amount": num(shipping),
        "shipping_tax_amount": num(ship_tax), "discount_amount": num(-discount), "grand_total": num(grand),
        "created_at": "2026-11-22 10:00:00", "billing_address": address(country, postcode),
        "shipping_address": address(country, postcode),
        "base_to_order_rate": if seed.foreign { json!(1.1734) } else { json!(1) }
    }))
    .unwrap()
}

fn credit_memo(seed: &DocSeed, adj_pos: i64, adj_neg: i64) -> MagentoCreditMemo {
    // The canonical credit memo has no discount header, so a shipping discount is inferred from
    // a shortfall — which a discount tax compensation (an excess) would cancel out. Memos of
    // tax-inclusive stores are generated without a shipping discount; the limitation is
    // documented in canonical::totals.
    let mut seed = seed.clone();
    if seed.inclusive {
        seed.shipping_discount_pct = 0;
    }
    let seed = &seed;
    let (lines, _subtotal, _tax, _discount, shipping, ship_tax, _grand, dtc) = magento(seed);
    // A credit memo's canonical header has no discount: its shipping is what was refunded, net of
    // its discount, and its total is the sum of what it refunds.
    let lines_total: Decimal = lines.iter().map(|l| l["line_total"].to_string().parse::<Decimal>().unwrap()).sum();
    let ship_discount = r2(shipping * Decimal::from(seed.shipping_discount_pct) / Decimal::ONE_HUNDRED);
    let (pos, neg) = (cents(adj_pos), cents(adj_neg));
    let grand = lines_total + shipping - ship_discount + ship_tax + pos - neg + dtc;
    serde_json::from_value(json!({
        "magento_id": 2, "increment_id": "200000001", "invoice_id": 1, "invoice_increment_id": "100000001",
        "currency": if seed.foreign { "EUR" } else { "GBP" },
        "customer": {"magento_id": 9, "email": "buyer@example.com"},
        "lines": lines, "adjustment_positive": num(pos), "adjustment_negative": num(neg),
        "grand_total": num(grand), "shipping_amount": num(shipping), "shipping_tax_amount": num(ship_tax),
        "created_at": "2026-11-23T10:00:00Z", "base_to_order_rate": if seed.foreign { json!(1.1734) } else { json!(1) }
    }))
    .unwrap()
}

fn test_policy() -> byte8_ledger_core::policy::SyncPolicy {
    policy(json!({"tax_rate_map": {"20": "GB_STANDARD", "5": "GB_LOWER", "0": "GB_ZERO"},
                  "foreign_vat_ledger_account_id": "OSS"}))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, .. ProptestConfig::default() })]

    #[test]
    fn invoice_sage_total_equals_grand_total(seed in doc_seed()) {
        let inv = invoice(&seed);
        let reference = uk_reference();
        let policy = test_policy();
        // The plan adds up.
        let planned = plan::plan_invoice(&inv, &policy, &reference);
        let planned = match planned {
            Ok(p) => p,
            Err(e) => return Err(TestCaseError::fail(format!("plan failed: {e}\n{inv:#?}"))),
        };
        prop_assert_eq!(planned.total(), inv.grand_total);
        // The request, as Sage computes it, adds up.
        let items = Default::default();
        let links = DocumentLinks { contact_id: "C", items: &items, idempotency_key: Some("invoice.created:1") };
        let t = transform::sales_invoice(&inv, &policy, &reference, &links)
            .map_err(|e| TestCaseError::fail(format!("transform failed: {e}")))?;
        let body = &t.request.sales_invoice;
        prop_assert_eq!(transform::expected_total(body, &reference.tax_rates).unwrap(), inv.grand_total);
        for (line, source) in body.lines().iter().zip(&inv.lines) {
            // Quantities are kept, money has 2 decimals, discounts are never negative.
            prop_assert_eq!(line.quantity, source.qty);
            prop_assert!(line.discount_amount >= Decimal::ZERO);
            prop_assert!(line.unit_price.normalize().scale() <= 2 && line.tax_amount.normalize().scale() <= 2);
            prop_assert_eq!(line.tax_amount, line.currency_tax_amount);
        }
        // Zero-rated lines never carry tax (Sage rejects VAT on a 0 % rate).
        for line in body.lines() {
            if line.tax_rate_id == "GB_ZERO" || line.tax_rate_id == "GB_NO_TAX" {
                prop_assert!(line.tax_amount.is_zero());
            }
        }
        // Collected foreign VAT is never dropped: it is on the liability line.
        if seed.buyer == Buyer::Ioss {
            let on_liability: Decimal = body.lines().iter().filter(|l| l.ledger_account_id == "OSS").map(|l| l.unit_price).sum();
            prop_assert_eq!(on_liability, planned.foreign_vat());
        }
    }

    #[test]
    fn credit_memo_sage_total_equals_grand_total(seed in doc_seed(), adj_pos in 0i64..2_000, adj_neg in 0i64..500) {
        // An adjustment fee never exceeds what the memo refunds (a negative total is refused).
        let refunded = credit_memo(&seed, adj_pos, 0).grand_total;
        let adj_neg = adj_neg.min((refunded * Decimal::ONE_HUNDRED).trunc().try_into().unwrap_or(0i64));
        let memo = credit_memo(&seed, adj_pos, adj_neg);
        let reference = uk_reference();
        let policy = test_policy();
        let items = Default::default();
        let links = DocumentLinks { contact_id: "C", items: &items, idempotency_key: None };
        let addresses = plan::DocumentAddresses { billing: invoice(&seed).billing_address, shipping: None };
        let t = transform::sales_credit_note(&memo, &policy, &reference, &links, Some(&addresses))
            .map_err(|e| TestCaseError::fail(format!("transform failed: {e}\n{memo:#?}")))?;
        prop_assert_eq!(transform::expected_total(&t.request.sales_credit_note, &reference.tax_rates).unwrap(), memo.grand_total);
    }

    #[test]
    fn a_tampered_total_is_rejected_not_posted(seed in doc_seed(), off in prop_oneof![-500i64..-4, 4i64..500]) {
        // Any grand_total more than the residual tolerance away from its lines is refused. (Without
        // discounts: a discounted, taxed line's compensation is inferred from the total, so a
        // different total would read as a different compensation.)
        let mut seed = seed;
        for l in &mut seed.lines {
            l.discount_pct = 0;
        }
        seed.shipping_discount_pct = 0;
        let mut inv = invoice(&seed);
        prop_assert!(inv.validate().is_ok());
        inv.grand_total += cents(off);
        let err = inv.validate().unwrap_err();
        prop_assert!(err.to_string().contains("grand_total"), "{}", err);
    }
}

// =============================================================================================
// Issue 12: the module's line shapes, gift cards, tenders and pro-rata adjustments, against the
// generator's own truth (which rows are money lines, their nets and VAT, the stock each line
// moves, the tenders), never the crate's computation.
// =============================================================================================

/// One item of an order, as Magento structures it.
#[derive(Debug, Clone)]
enum Item {
    /// A simple product: one money row.
    Simple { qty: i64, price: i64, rate: i64 },
    /// A configurable: the parent row carries the money with the child's SKU, the child row 0.
    Configurable { qty: i64, price: i64, rate: i64 },
    /// A dynamic bundle: the parent row has a price (Σ children) but no money; children carry it.
    Dynamic { children: Vec<(i64, i64, i64)> },
    /// A fixed bundle: the parent carries the money, `children` rows of 0.
    Fixed { qty: i64, price: i64, rate: i64, children: usize },
    /// An item left out of this document: a qty-0 row.
    Excluded { price: i64 },
    /// A gift card sold: no VAT.
    GiftCard { price: i64 },
}

/// (qty 1–3, price 1.00–500.00 in cents, rate 20 or 5): every price ≥ 1.00 so the two rates
/// always give different tax.
fn priced() -> impl Strategy<Value = (i64, i64, i64)> {
    (1i64..=3, 100i64..=50_000, prop_oneof![Just(20i64), Just(5)])
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        priced().prop_map(|(qty, price, rate)| Item::Simple { qty, price, rate }),
        priced().prop_map(|(qty, price, rate)| Item::Configurable { qty, price, rate }),
        proptest::collection::vec(priced(), 1..=3).prop_map(|children| Item::Dynamic { children }),
        (priced(), 1usize..=3).prop_map(|((qty, price, rate), children)| Item::Fixed { qty, price, rate, children }),
        (100i64..=9_000).prop_map(|price| Item::Excluded { price }),
        (500i64..=10_000).prop_map(|price| Item::GiftCard { price }),
    ]
}

/// Tax of a net in cents at a whole-percent rate, half up (Magento's per-row rounding).
fn tax_cents(net: i64, rate: i64) -> i64 {
    (net * rate + 50) / 100
}

/// What the generator knows a money line is.
#[derive(Debug, Clone, PartialEq)]
struct TruthLine {
    description: String,
    account: &'static str,
    qty: Decimal,
    net: Decimal,
    rate_id: &'static str,
    tax: Decimal,
    product_id: Option<String>,
}

fn rate_id(rate: i64) -> &'static str {
    if rate == 20 { "GB_STANDARD" } else { "GB_LOWER" }
}

/// One row exactly as the module's `mapLine` writes it (product type null but for gift cards).
fn row(sku: &str, name: &str, qty: i64, price: i64, net: i64, tax: i64, gift: bool) -> Value {
    let rate = (net > 0 && tax > 0).then(|| RoundingPolicy::HalfUp.round(cents(tax) / cents(net), 4));
    json!({"sku": sku, "name": name, "qty": qty, "unit_price": num(cents(price)), "line_subtotal": num(cents(net)),
           "line_tax": num(cents(tax)), "line_total": num(cents(net + tax)), "tax_rate": rate.map(num),
           "product_type": if gift { json!("giftcard") } else { Value::Null }})
}

/// The rows of `items` (`refunded[i]` false makes every row of item i a qty-0 row, as in a partial
/// credit memo) and the truth: the money lines, and Σ net and Σ tax.
fn rows_and_truth(items: &[Item], refunded: &[bool]) -> (Vec<Value>, Vec<TruthLine>) {
    let mut rows = Vec::new();
    let mut truth = Vec::new();
    let money = |rows: &mut Vec<Value>, truth: &mut Vec<TruthLine>, sku: &str, qty: i64, price: i64, rate: i64| {
        let net = qty * price;
        let tax = tax_cents(net, rate);
        rows.push(row(sku, &format!("{sku} name"), qty, price, net, tax, false));
        truth.push(TruthLine {
            description: format!("{sku} name"),
            account: "SALES",
            qty: Decimal::from(qty),
            net: cents(net),
            rate_id: rate_id(rate),
            tax: cents(tax),
            product_id: Some(format!("P-{sku}")),
        });
    };
    for (i, it) in items.iter().enumerate() {
        let on = refunded.get(i).copied().unwrap_or(true);
        let sku = format!("S{i}");
        match it {
            Item::Simple { qty, price, rate } => {
                if on {
                    money(&mut rows, &mut truth, &sku, *qty, *price, *rate);
                } else {
                    rows.push(row(&sku, "off", 0, *price, 0, 0, false));
                }
            }
            Item::Configurable { qty, price, rate } => {
                // The parent row carries the chosen child's SKU; the child row repeats it at 0.
                let child = format!("{sku}-RED");
                if on {
                    money(&mut rows, &mut truth, &child, *qty, *price, *rate);
                    rows.push(row(&child, "child", *qty, 0, 0, 0, false));
                } else {
                    rows.push(row(&child, "off", 0, *price, 0, 0, false));
                    rows.push(row(&child, "off", 0, 0, 0, 0, false));
                }
            }
            Item::Dynamic { children } => {
                let sum: i64 = children.iter().map(|c| c.1).sum();
                rows.push(row(&sku, "bundle", if on { 1 } else { 0 }, sum, 0, 0, false));
                for (j, (qty, price, rate)) in children.iter().enumerate() {
                    let child = format!("{sku}-C{j}");
                    // In a credit memo only the first child of a refunded bundle comes back.
                    if on && (refunded.is_empty() || j == 0) {
                        money(&mut rows, &mut truth, &child, *qty, *price, *rate);
                    } else {
                        rows.push(row(&child, "off", 0, *price, 0, 0, false));
                    }
                }
            }
            Item::Fixed { qty, price, rate, children } => {
                if on {
                    money(&mut rows, &mut truth, &sku, *qty, *price, *rate);
                } else {
                    rows.push(row(&sku, "off", 0, *price, 0, 0, false));
                }
                for j in 0..*children {
                    rows.push(row(&format!("{sku}-C{j}"), "part", if on { *qty } else { 0 }, 0, 0, 0, false));
                }
            }
            Item::Excluded { price } => rows.push(row(&sku, "off", 0, *price, 0, 0, false)),
            Item::GiftCard { price } => {
                if on {
                    rows.push(row(&sku, &format!("{sku} name"), 1, *price, *price, 0, true));
                    truth.push(TruthLine {
                        description: format!("{sku} name"),
                        account: "GIFT",
                        qty: Decimal::ONE,
                        net: cents(*price),
                        rate_id: "GB_NO_TAX",
                        tax: Decimal::ZERO,
                        product_id: None,
                    });
                } else {
                    rows.push(row(&sku, "off", 0, *price, 0, 0, true));
                }
            }
        }
    }
    (rows, truth)
}

/// Every SKU of the rows but gift cards, linked to a stock item `P-{sku}`.
fn stock_links(rows: &[Value]) -> std::collections::BTreeMap<String, byte8_ledger_core::providers::ItemLink> {
    rows.iter()
        .filter(|r| r["product_type"].is_null())
        .map(|r| {
            let sku = r["sku"].as_str().unwrap_or_default().to_owned();
            let link = byte8_ledger_core::providers::ItemLink {
                id: format!("P-{sku}"),
                kind: byte8_ledger_core::providers::ItemKind::StockItem,
            };
            (sku, link)
        })
        .collect()
}

/// What Sage books per line: (description, account, quantity, net = qty × unit − discount, rate,
/// tax, product).
fn booked(body: &byte8_ledger_core::providers::sage::model::DocumentBody) -> Vec<TruthLine> {
    body.lines()
        .iter()
        .map(|l| TruthLine {
            description: l.description.clone(),
            account: match l.ledger_account_id.as_str() {
                "SALES" => "SALES",
                "GIFT" => "GIFT",
                "CREDIT" => "CREDIT",
                _ => "OTHER",
            },
            qty: l.quantity.normalize(),
            net: round_money(l.quantity * l.unit_price) - l.discount_amount,
            rate_id: match l.tax_rate_id.as_str() {
                "GB_STANDARD" => "GB_STANDARD",
                "GB_LOWER" => "GB_LOWER",
                "GB_NO_TAX" => "GB_NO_TAX",
                _ => "OTHER",
            },
            tax: l.tax_amount,
            product_id: l.product_id.clone(),
        })
        .collect()
}

fn issue12_policy(extra: Value) -> byte8_ledger_core::policy::SyncPolicy {
    let mut base = json!({"gift_card_ledger_account_id": "GIFT", "store_credit_ledger_account_id": "CREDIT"});
    for (k, v) in extra.as_object().into_iter().flatten() {
        base[k] = v.clone();
    }
    policy(base)
}

fn gb_customer() -> Value {
    json!({"magento_id": 5, "email": "jane@example.com", "first_name": "Jane", "last_name": "Doe", "addresses": []})
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// An invoice of the module's real rows, paid partly by gift card and store credit: Sage gets
    /// exactly the generator's money lines (one per charged item, each SKU's stock item on one
    /// line), then the tenders out of their liability accounts; Σ net + VAT is what is left to pay.
    #[test]
    fn module_rows_and_tenders_book_the_generators_truth(
        items in proptest::collection::vec(item(), 1..=6),
        gift_pct in 0i64..=40,
        credit_pct in 0i64..=40,
    ) {
        let (rows, mut truth) = rows_and_truth(&items, &[]);
        prop_assume!(!truth.is_empty());
        let net: Decimal = truth.iter().map(|t| t.net).sum();
        let tax: Decimal = truth.iter().map(|t| t.tax).sum();
        let sale = net + tax;
        let sale_cents = i64::try_from((sale * Decimal::ONE_HUNDRED).trunc().mantissa()).expect("a small amount");
        let gift = cents(sale_cents * gift_pct / 100);
        let credit = cents((sale_cents - sale_cents * gift_pct / 100) * credit_pct / 100);
        let grand = sale - gift - credit;
        let links_map = stock_links(&rows);
        let v = json!({
            "magento_id": 1, "increment_id": "000000001", "order_id": 2, "order_increment_id": "000000002",
            "currency": "GBP", "state": "open", "customer": gb_customer(), "lines": rows,
            "subtotal": num(net), "tax_amount": num(tax), "shipping_amount": 0, "shipping_tax_amount": 0,
            "discount_amount": 0, "grand_total": num(grand), "created_at": "2026-11-22T10:00:00Z",
            "billing_address": address("GB", "SW1A 1AA"), "shipping_address": address("GB", "SW1A 1AA"),
            "tenders": {"gift_cards_amount": num(gift), "customer_balance_amount": num(credit)},
        });
        let inv: MagentoInvoice = serde_json::from_value(v).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let links = DocumentLinks { contact_id: "C", items: &links_map, idempotency_key: None };
        let t = transform::sales_invoice(&inv, &issue12_policy(json!({})), &uk_reference(), &links)
            .map_err(|e| TestCaseError::fail(format!("transform failed: {e}")))?;
        for (amount, description, account) in [(gift, "Gift card redeemed", "GIFT"), (credit, "Store credit redeemed", "CREDIT")] {
            if !amount.is_zero() {
                truth.push(TruthLine { description: description.into(), account, qty: Decimal::ONE, net: -amount,
                    rate_id: "GB_NO_TAX", tax: Decimal::ZERO, product_id: None });
            }
        }
        let got = booked(&t.request.sales_invoice);
        prop_assert_eq!(&got, &truth);
        let total: Decimal = got.iter().map(|l| l.net + l.tax).sum();
        prop_assert_eq!(total, grand);
        // Each stock item moves on at most one line.
        let mut ids: Vec<&String> = got.iter().filter_map(|l| l.product_id.as_ref()).collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        prop_assert_eq!(ids.len(), n);
    }

    /// A credit memo of part of the items (qty-0 rows for the rest, one child of each dynamic
    /// bundle) with an adjustment refund and fee, `pro_rata`: the money lines are the generator's,
    /// and the adjustment parts add up to the adjustments, each rate's share is its share of the
    /// refunded gross to within a penny per rate, and each part's VAT is its VAT fraction.
    #[test]
    fn partial_memos_and_pro_rata_adjustments_follow_the_generators_truth(
        items in proptest::collection::vec(item(), 1..=6),
        refunded in proptest::collection::vec(any::<bool>(), 6),
        adj_pos in 0i64..=3_000,
        adj_neg in 0i64..=800,
    ) {
        let mut refunded = refunded;
        // At least one item with money comes back.
        let first = items.iter().position(|i| !matches!(i, Item::Excluded { .. }));
        prop_assume!(first.is_some());
        if let Some(f) = first { refunded[f] = true; }
        let (rows, truth) = rows_and_truth(&items, &refunded);
        let gross: Decimal = truth.iter().map(|t| t.net + t.tax).sum();
        let fee = cents(adj_neg).min(gross);
        let grand = gross + cents(adj_pos) - fee;
        let v = json!({
            "magento_id": 9, "increment_id": "000000009", "invoice_id": 1, "invoice_increment_id": "000000001",
            "currency": "GBP", "customer": gb_customer(), "lines": rows,
            "adjustment_positive": num(cents(adj_pos)), "adjustment_negative": num(fee), "grand_total": num(grand),
            "shipping_amount": 0, "shipping_tax_amount": 0, "created_at": "2026-11-25T10:00:00Z",
        });
        let memo: MagentoCreditMemo = serde_json::from_value(v).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let links_map = std::collections::BTreeMap::new();
        let links = DocumentLinks { contact_id: "C", items: &links_map, idempotency_key: None };
        let addresses = plan::DocumentAddresses { billing: serde_json::from_value(address("GB", "SW1A 1AA")).ok(), shipping: None };
        let t = transform::sales_credit_note(&memo, &issue12_policy(json!({"adjustment_tax_treatment": "pro_rata"})),
            &uk_reference(), &links, Some(&addresses))
            .map_err(|e| TestCaseError::fail(format!("transform failed: {e}")))?;
        let got = booked(&t.request.sales_credit_note);
        let (lines, adjustments) = got.split_at(truth.len());
        let expected: Vec<TruthLine> = truth.iter().map(|t| TruthLine { product_id: None, ..t.clone() }).collect();
        prop_assert_eq!(lines, &expected[..]);
        // The refunded gross per rate (gift cards: no VAT), from the generator.
        let group = |id: &str| -> Decimal {
            truth.iter().filter(|t| if id == "GB_NO_TAX" { t.account == "GIFT" } else { t.rate_id == id && t.account == "SALES" })
                .map(|t| t.net + t.tax).sum()
        };
        let groups = ["GB_STANDARD", "GB_LOWER", "GB_NO_TAX"].iter().filter(|id| !group(id).is_zero()).count();
        for (amount, sign, prefix) in [(cents(adj_pos), Decimal::ONE, "Adjustment refund"), (fee, Decimal::NEGATIVE_ONE, "Adjustment fee")] {
            let parts: Vec<&TruthLine> = adjustments.iter().filter(|l| l.description.starts_with(prefix)).collect();
            let sum: Decimal = parts.iter().map(|l| l.net + l.tax).sum();
            prop_assert_eq!(sum, sign * amount, "{} parts add up", prefix);
            for p in &parts {
                let share = sign * (p.net + p.tax);
                let pct = match p.rate_id { "GB_STANDARD" => Decimal::from(20), "GB_LOWER" => Decimal::from(5), _ => Decimal::ZERO };
                // reg. 38: the VAT fraction of the part, half up.
                prop_assert_eq!(sign * p.tax, RoundingPolicy::HalfUp.round(share * pct / (Decimal::ONE_HUNDRED + pct), 2));
                prop_assert_eq!(p.account, "SALES");
                let exact = amount * group(p.rate_id) / gross;
                prop_assert!((share - exact).abs() <= cents(groups as i64), "share {} vs {}", share, exact);
            }
        }
        prop_assert_eq!(got.iter().map(|l| l.net + l.tax).sum::<Decimal>(), grand);
    }
}

// ---------------------------------------------------------------------------------------------
// The independent oracle (issue 12 item 9).
//
// The properties above compare the request with what Sage would compute from it, which the
// transform already enforces. The properties below compare the request with the *generator's own
// truth*: the generator decides each line's rate, net and VAT in integer pence (as Magento
// charges them), the buyer's country, the currency and its rate, the store's time zone and the
// instant the invoice was raised — and then checks, line by line, that the Sage request books
// exactly those: the rate id chosen from the generator's rate (never re-derived by the crate's
// code), the net, the VAT, the document VAT total = Magento's `tax_amount`, the exchange rate's
// value and direction, the supply type and the store-local date. Sage's own recomputation of the
// shipping panel is modelled here in integer arithmetic (half up), not with the crate's `tax_at`.
// ---------------------------------------------------------------------------------------------

/// Where the generated buyer is, and so what the generator expects.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Where {
    /// GB consumer: UK VAT at the line's rate.
    Home,
    /// French consumer charged the UK rate, no OSS/IOSS registration: still UK VAT (item 3).
    EuAtUkRate,
    /// US consumer, no tax: zero-rated export.
    Export,
    /// German consumer charged 19 %: foreign VAT on the liability account.
    Ioss,
}

#[derive(Debug, Clone)]
struct OLine {
    qty: i64,
    unit_cents: i64,
    rate: i64,
    discount_pct: i64,
    delta: i64,
    virtual_product: bool,
}

#[derive(Debug, Clone)]
struct OSeed {
    lines: Vec<OLine>,
    ship_rate: i64,
    /// Shipping net in pence; for 5 % it is 20k + 10 pence, so the exact VAT is a half penny.
    ship_cents: i64,
    ship_delta: i64,
    place: Where,
    currency: (&'static str, &'static str),
    zone: Option<&'static str>,
    /// Seconds after 2026-01-01T00:00:00Z.
    at: i64,
}

fn o_line() -> impl Strategy<Value = OLine> {
    (1i64..=5, 1i64..=50_000, prop_oneof![Just(20i64), Just(5), Just(0)], 0i64..=100, -1i64..=1, any::<bool>())
        .prop_map(|(qty, unit_cents, rate, discount_pct, delta, virtual_product)| OLine {
            qty,
            unit_cents,
            rate,
            discount_pct,
            delta,
            virtual_product,
        })
}

fn o_seed() -> impl Strategy<Value = OSeed> {
    (
        prop::collection::vec(o_line(), 1..6),
        prop_oneof![Just(20i64), Just(5), Just(0)],
        0i64..250,
        -1i64..=1,
        prop_oneof![Just(Where::Home), Just(Where::EuAtUkRate), Just(Where::Export), Just(Where::Ioss)],
        prop_oneof![Just(("GBP", "1")), Just(("EUR", "1.1734")), Just(("USD", "1.2650"))],
        prop_oneof![
            Just(None),
            Just(Some("Europe/London")),
            Just(Some("Asia/Tokyo")),
            Just(Some("Asia/Kolkata")),
            Just(Some("UTC"))
        ],
        0i64..(365 * 86_400),
    )
        .prop_map(|(mut lines, ship_rate, k, ship_delta, place, currency, zone, at)| {
            if place == Where::Ioss {
                // 19 % must not be within a penny of a UK rate: nets of at least 10.00.
                for l in &mut lines {
                    l.unit_cents = l.unit_cents.max(2_000);
                    l.discount_pct = l.discount_pct.min(50);
                }
            }
            let ship_cents = match ship_rate {
                // 19 % on small shipping reads as a UK rate to the penny: 0 or at least 10.00.
                _ if place == Where::Ioss => {
                    if k == 0 {
                        0
                    } else {
                        1_000 + 7 * k
                    }
                }
                5 => 20 * k + 10,
                _ => 3 * k,
            };
            OSeed { lines, ship_rate, ship_cents, ship_delta, place, currency, zone, at }
        })
}

/// `a × b / 100` rounded: −1 down, 0 half up, +1 up (Magento's delta rounding stays within a
/// penny of the exact value), in integer pence.
fn pct_of(pence: i64, pct: i64, mode: i64) -> i64 {
    let hundredths = pence * pct;
    match mode {
        -1 => hundredths.div_euclid(100),
        1 => (hundredths + 99).div_euclid(100),
        _ => (hundredths + 50).div_euclid(100),
    }
}

fn pence(c: i64) -> Decimal {
    Decimal::new(c, 2)
}

/// The generator's truth for one line.
#[derive(Debug)]
struct TrueLine {
    net: i64,
    tax: i64,
    rate_id: &'static str,
}

struct Truth {
    json: Value,
    lines: Vec<TrueLine>,
    ship_net: i64,
    ship_tax: i64,
    tax_total: i64,
    services_only: bool,
    date: chrono::NaiveDate,
}

/// The UK's clock (BST from 01:00 UTC on the last Sunday of March to 01:00 UTC on the last Sunday
/// of October), written here from the rule, not from a time-zone library.
fn london_offset_hours(at: chrono::DateTime<chrono::Utc>) -> i64 {
    use chrono::{Datelike, TimeZone, Weekday};
    let last_sunday = |month: u32| {
        let mut d = chrono::NaiveDate::from_ymd_opt(at.year(), month, 31).unwrap();
        while d.weekday() != Weekday::Sun {
            d = d.pred_opt().unwrap();
        }
        chrono::Utc.from_utc_datetime(&d.and_hms_opt(1, 0, 0).unwrap())
    };
    if at >= last_sunday(3) && at < last_sunday(10) { 1 } else { 0 }
}

fn o_truth(seed: &OSeed) -> Truth {
    use chrono::TimeZone;
    let taxed_at = |uk: i64| match seed.place {
        Where::Home | Where::EuAtUkRate => uk,
        Where::Export => 0,
        Where::Ioss => 19,
    };
    let mut lines = Vec::new();
    let mut json_lines = Vec::new();
    let (mut subtotal, mut discount_total, mut tax_total) = (0i64, 0i64, 0i64);
    for (i, l) in seed.lines.iter().enumerate() {
        let row = l.qty * l.unit_cents;
        let discount = pct_of(row, l.discount_pct, 0);
        let net = row - discount;
        let rate = taxed_at(l.rate);
        // Delta rounding only where a penny cannot make one rate read as another (nets ≥ 1.00).
        let tax = pct_of(net, rate, if net >= 100 { l.delta } else { 0 });
        let rate_id = match (seed.place, l.rate) {
            (Where::Home | Where::EuAtUkRate, 20) if tax > 0 => "GB_STANDARD",
            (Where::Home | Where::EuAtUkRate, 5) if tax > 0 => "GB_LOWER",
            _ => "GB_ZERO",
        };
        let tax_rate = if row > 0 && tax > 0 {
            num(RoundingPolicy::HalfUp.round(pence(tax) / pence(row), 4))
        } else {
            Value::Null
        };
        json_lines.push(json!({
            "sku": format!("O-{i}"), "name": "Thing", "qty": l.qty, "unit_price": num(pence(l.unit_cents)),
            "line_subtotal": num(pence(row)), "line_tax": num(pence(tax)), "line_total": num(pence(net + tax)),
            "tax_rate": tax_rate, "product_type": if l.virtual_product { "virtual" } else { "simple" }
        }));
        lines.push(TrueLine { net, tax, rate_id });
        subtotal += row;
        discount_total += discount;
        tax_total += tax;
    }
    let ship_net = seed.ship_cents;
    let ship_tax = pct_of(
        ship_net,
        taxed_at(seed.ship_rate),
        if ship_net >= 100 || seed.ship_rate == 5 { seed.ship_delta } else { 0 },
    );
    tax_total += ship_tax;
    let grand = subtotal - discount_total + ship_net + tax_total;
    let (country, postcode) = match seed.place {
        Where::Home => ("GB", "SW1A 1AA"),
        Where::EuAtUkRate => ("FR", "75001"),
        Where::Export => ("US", "10001"),
        Where::Ioss => ("DE", "10115"),
    };
    let at = chrono::Utc.timestamp_opt(1_767_225_600 + seed.at, 0).unwrap();
    let offset_minutes = match seed.zone {
        None | Some("Europe/London") => 60 * london_offset_hours(at),
        Some("Asia/Tokyo") => 9 * 60,
        Some("Asia/Kolkata") => 5 * 60 + 30,
        _ => 0,
    };
    let date = (at + chrono::Duration::minutes(offset_minutes)).date_naive();
    let json = json!({
        "magento_id": 1, "increment_id": "300000001", "order_id": 1, "order_increment_id": "300000001",
        "currency": seed.currency.0, "state": "open",
        "customer": {"magento_id": 9, "email": "buyer@example.com", "first_name": "B", "last_name": "Uyer"},
        "lines": json_lines, "subtotal": num(pence(subtotal)), "tax_amount": num(pence(tax_total)),
        "shipping_amount": num(pence(ship_net)), "shipping_tax_amount": num(pence(ship_tax)),
        "discount_amount": num(pence(-discount_total)), "grand_total": num(pence(grand)),
        "created_at": at.to_rfc3339(), "billing_address": address(country, postcode),
        "shipping_address": address(country, postcode),
        "base_to_order_rate": serde_json::from_str::<Value>(seed.currency.1).unwrap(), "base_currency": "GBP"
    });
    Truth {
        json,
        lines,
        ship_net,
        ship_tax,
        tax_total,
        services_only: seed.lines.iter().all(|l| l.virtual_product),
        date,
    }
}

fn o_policy(zone: Option<&str>) -> byte8_ledger_core::policy::SyncPolicy {
    let mut extra = json!({"tax_rate_map": {"20": "GB_STANDARD", "5": "GB_LOWER", "0": "GB_ZERO"},
                           "foreign_vat_ledger_account_id": "OSS"});
    if let Some(z) = zone {
        extra["store_timezone"] = json!(z);
    }
    policy(extra)
}

/// The percentage Sage holds for a rate id (the demo UK business's rates, written out here).
fn sage_pct(id: &str) -> i64 {
    match id {
        "GB_STANDARD" => 20,
        "GB_LOWER" => 5,
        _ => 0,
    }
}

fn to_pence(d: Decimal) -> i64 {
    let scaled = d * Decimal::ONE_HUNDRED;
    assert_eq!(scaled, scaled.trunc(), "{d} has more than 2 decimals");
    scaled.trunc().try_into().unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, .. ProptestConfig::default() })]

    #[test]
    fn sage_books_every_line_as_the_generator_charged_it(seed in o_seed()) {
        let truth = o_truth(&seed);
        let inv: MagentoInvoice = serde_json::from_value(truth.json.clone()).unwrap();
        let reference = uk_reference();
        let policy = o_policy(seed.zone);
        let items = Default::default();
        let links = DocumentLinks { contact_id: "C", items: &items, idempotency_key: Some("invoice.created:1") };
        let t = transform::sales_invoice(&inv, &policy, &reference, &links)
            .map_err(|e| TestCaseError::fail(format!("transform failed: {e}\n{seed:?}")))?;
        let body = &t.request.sales_invoice;
        let sent = body.lines();
        prop_assert!(sent.len() >= truth.lines.len());
        // Each product line: the generator's rate id, net and VAT, to the penny.
        for (i, (line, want)) in sent.iter().zip(&truth.lines).enumerate() {
            let net = to_pence(round_money(line.quantity * line.unit_price) - line.discount_amount);
            prop_assert_eq!(net, want.net, "line {} net", i);
            prop_assert_eq!(line.tax_rate_id.as_str(), want.rate_id, "line {} rate", i);
            let want_tax = if seed.place == Where::Ioss { 0 } else { want.tax };
            prop_assert_eq!(to_pence(line.tax_amount), want_tax, "line {} VAT", i);
        }
        // Shipping: Magento's VAT, whether on Sage's panel (as Sage recomputes it) or as a line.
        let extra: Vec<_> = sent[truth.lines.len()..].iter().collect();
        let ship_lines: Vec<_> = extra.iter().filter(|l| l.description == "Shipping").collect();
        let panel_vat = match (&body.shipping_tax_rate_id, body.shipping_net_amount) {
            (Some(id), Some(net)) => pct_of(to_pence(net), sage_pct(id), 0),
            _ => 0,
        };
        let ship_net_sent = body.shipping_net_amount.map(to_pence).unwrap_or(0)
            + ship_lines.iter().map(|l| to_pence(l.unit_price)).sum::<i64>();
        prop_assert_eq!(ship_net_sent, truth.ship_net);
        let ship_vat_sent = panel_vat + ship_lines.iter().map(|l| to_pence(l.tax_amount)).sum::<i64>();
        let liability: i64 = extra.iter().filter(|l| l.ledger_account_id == "OSS").map(|l| to_pence(l.unit_price)).sum();
        if seed.place == Where::Ioss {
            // Zero-rated here; every penny Magento collected is on the liability line.
            prop_assert_eq!(ship_vat_sent, 0);
            prop_assert_eq!(liability, truth.tax_total);
        } else {
            prop_assert_eq!(ship_vat_sent, truth.ship_tax, "shipping VAT");
            prop_assert_eq!(liability, 0);
            // The document's VAT = Magento's tax_amount.
            let doc_vat = sent.iter().map(|l| to_pence(l.tax_amount)).sum::<i64>() + panel_vat;
            prop_assert_eq!(doc_vat, truth.tax_total, "document VAT");
        }
        // Exchange rate: none in GBP; otherwise base (GBP) per unit of the document currency,
        // i.e. the inverse of Magento's base_to_order_rate.
        let magento_rate: Decimal = seed.currency.1.parse().unwrap();
        match body.exchange_rate {
            None => prop_assert_eq!(seed.currency.0, "GBP"),
            Some(r) => {
                prop_assert!(seed.currency.0 != "GBP");
                prop_assert!((r * magento_rate - Decimal::ONE).abs() < Decimal::new(1, 9), "{} × {}", r, magento_rate);
            }
        }
        // Supply type: none at home; abroad one type, SERVICES only when every line is a service.
        let want_type = match seed.place {
            Where::Home => None,
            _ if truth.services_only => Some("SERVICES"),
            _ => Some("GOODS"),
        };
        for line in sent {
            prop_assert_eq!(line.eu_goods_services_type_id.as_deref(), want_type);
        }
        // The store's local date.
        prop_assert_eq!(body.date, truth.date);
    }

    #[test]
    fn a_rate_from_another_base_currency_is_never_sent(seed in o_seed()) {
        // Magento based in EUR, ledger in GBP: Magento's rate converts EUR, so a non-GBP document
        // fails naming both currencies, and a GBP document carries no rate.
        let mut truth = o_truth(&seed);
        truth.json["base_currency"] = json!("EUR");
        let inv: MagentoInvoice = serde_json::from_value(truth.json).unwrap();
        let items = Default::default();
        let links = DocumentLinks { contact_id: "C", items: &items, idempotency_key: None };
        let got = transform::sales_invoice(&inv, &o_policy(seed.zone), &uk_reference(), &links);
        if seed.currency.0 == "GBP" {
            prop_assert_eq!(got.unwrap().request.sales_invoice.exchange_rate, None);
        } else {
            let err = got.unwrap_err().to_string();
            prop_assert!(err.contains("EUR") && err.contains("GBP") && err.contains("base_to_order_rate"), "{}", err);
        }
    }
}
