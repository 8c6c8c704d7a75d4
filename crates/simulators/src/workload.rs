//! Realistic, reproducible Magento event streams for the benchmarks and the chaos soak: new and
//! returning customers in several currencies, guests, invoices of 1–20 lines, payments (most
//! mapped, some not), credit memos before and after payment, product upserts with stock changes.
//!
//! Every document is computed the way Magento computes it (row totals, per-line tax after
//! discount, shipping), in integer pennies, so it passes the crate's own validation; the
//! [`Expectation`]s say what the ledger must hold afterwards.

use rand::{Rng, SeedableRng, rngs::StdRng};
use rust_decimal::Decimal;
use serde_json::{Value, json};

use byte8_ledger_core::money::round_money;

/// What to generate.
#[derive(Debug, Clone)]
pub struct WorkloadConfig {
    /// The random seed: the same seed gives the same events.
    pub seed: u64,
    /// About how many events.
    pub events: usize,
    /// Registered customers to draw from.
    pub customers: usize,
    /// Products in the catalogue.
    pub products: usize,
    /// Share of invoices paid (the rest stay outstanding).
    pub paid_share: f64,
    /// Share of invoices refunded in part.
    pub refund_share: f64,
}

impl Default for WorkloadConfig {
    fn default() -> Self {
        Self { seed: 7, events: 5_000, customers: 400, products: 60, paid_share: 0.8, refund_share: 0.1 }
    }
}

/// What the ledger must hold for one Magento document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expectation {
    /// An invoice with this reference and total.
    Invoice {
        /// Magento invoice id.
        magento_id: u64,
        /// Sage reference (`MAG-…`).
        reference: String,
        /// Magento's grand total.
        total: Decimal,
        /// The currency the document is in.
        currency: String,
    },
    /// A payment of this invoice (when its method is mapped).
    Payment {
        /// Magento invoice id.
        invoice_id: u64,
        /// The payment's reference.
        reference: String,
        /// The amount paid.
        amount: Decimal,
    },
    /// A credit note with this reference and total, allocated when its invoice still had
    /// something outstanding.
    CreditNote {
        /// Magento credit memo id.
        magento_id: u64,
        /// Credited invoice id.
        invoice_id: u64,
        /// The credit note's reference.
        reference: String,
        /// The credit note's gross total.
        total: Decimal,
    },
}

/// A generated stream.
#[derive(Debug, Clone)]
pub struct Workload {
    /// One JSON event per line, in order.
    pub lines: Vec<String>,
    /// What the ledger must hold afterwards.
    pub expectations: Vec<Expectation>,
}

/// The policy the workload is meant for (the demo business's accounts and rates).
pub const WORKLOAD_POLICY: &str = r#"{
  "default_ledger_account_id": "SALES",
  "default_tax_rate_id": "GB_STANDARD",
  "default_purchase_ledger_account_id": "COS",
  "tax_rate_map": {"20.00": "GB_STANDARD", "5.00": "GB_LOWER", "0.00": "GB_ZERO"},
  "payment_method_map": {"braintree": "BANK", "stripe_payments": "BANK", "paypal_express": "BANK", "checkmo": null},
  "invoice_number_prefix": "MAG-",
  "sync_products": true,
  "sync_stock": true,
  "foreign_vat_ledger_account_id": "OSS"
}"#;

/// [`WORKLOAD_POLICY`] for the Xero simulator's demo organisation
/// ([`crate::xero::XeroOrg::demo`]): the same settings with its account codes
/// (`200` sales, `310` cost of goods sold, `090` bank, `825` foreign VAT) and Xero tax types.
pub const WORKLOAD_POLICY_XERO: &str = r#"{
  "default_ledger_account_id": "200",
  "default_tax_rate_id": "OUTPUT2",
  "default_purchase_ledger_account_id": "310",
  "tax_rate_map": {"20.00": "OUTPUT2", "5.00": "RROUTPUT", "0.00": "ZERORATEDOUTPUT"},
  "payment_method_map": {"braintree": "090", "stripe_payments": "090", "paypal_express": "090", "checkmo": null},
  "invoice_number_prefix": "MAG-",
  "sync_products": true,
  "sync_stock": true,
  "foreign_vat_ledger_account_id": "825"
}"#;

struct Product {
    id: u64,
    sku: String,
    name: String,
    kind: &'static str,
    price_pennies: i64,
    rate: i64,
    stock: i64,
}

struct Customer {
    id: u64,
    email: String,
    first: String,
    last: String,
    company: Option<String>,
    currency: &'static str,
    country: &'static str,
    postcode: &'static str,
    known: bool,
}

fn p(pennies: i64) -> Decimal {
    Decimal::new(pennies, 2)
}

/// Whole pennies of an amount that has at most 2 decimals.
fn pennies(d: Decimal) -> i64 {
    use rust_decimal::prelude::ToPrimitive;
    (d * Decimal::ONE_HUNDRED).trunc().to_i64().unwrap_or(0)
}

fn money(d: Decimal) -> Value {
    serde_json::from_str(&d.to_string()).unwrap_or(Value::Null)
}

impl Workload {
    /// Generates a stream.
    pub fn generate(config: &WorkloadConfig) -> Self {
        let mut rng = StdRng::seed_from_u64(config.seed);
        let mut lines = Vec::with_capacity(config.events + 16);
        let mut expectations = Vec::new();
        let occurred = "2026-11-22T10:00:00Z";
        let event = |kind: &str, id: u64, entity: Value, website: u32, store: u32| {
            json!({"event": kind, "idempotency_key": format!("{kind}:{id}"), "magento_entity_id": id,
                   "website_id": website, "store_id": store, "occurred_at": occurred, "payload": {}, "entity": entity})
            .to_string()
        };
        let mut products: Vec<Product> = (0..config.products.max(3))
            .map(|i| {
                let roll: f64 = rng.random();
                let kind = if roll < 0.7 {
                    "simple"
                } else if roll < 0.9 {
                    "virtual"
                } else {
                    "configurable"
                };
                let rate = if kind == "virtual" {
                    20
                } else if rng.random::<f64>() < 0.15 {
                    5
                } else if rng.random::<f64>() < 0.1 {
                    0
                } else {
                    20
                };
                Product {
                    id: 10_000 + u64::try_from(i).unwrap_or(0),
                    sku: format!("SKU-{i:04}"),
                    name: format!("Product {i} &amp; co"),
                    kind,
                    price_pennies: rng.random_range(199..=24_999),
                    rate,
                    stock: rng.random_range(0..500),
                }
            })
            .collect();
        let product_event = |pr: &Product| {
            json!({"magento_id": pr.id, "sku": pr.sku, "name": pr.name, "product_type": pr.kind,
                   "price": money(p(pr.price_pennies)), "cost": money(p(pr.price_pennies / 3)),
                   "stock_qty": if pr.kind == "simple" { json!(pr.stock) } else { Value::Null },
                   "manage_stock": pr.kind == "simple", "website_ids": [1]})
        };
        for pr in &products {
            lines.push(event("product.upserted", pr.id, product_event(pr), 0, 0));
        }
        let places = [
            ("GBP", "GB", "SW1A 1AA"),
            ("GBP", "GB", "M1 1AE"),
            ("GBP", "GB", "EH1 1YZ"),
            ("EUR", "DE", "10115"),
            ("EUR", "FR", "75001"),
            ("USD", "US", "10001"),
        ];
        let mut customers: Vec<Customer> = (0..config.customers.max(1))
            .map(|i| {
                let roll: f64 = rng.random();
                let (currency, country, postcode) = if roll < 0.7 {
                    places[i % 3]
                } else if roll < 0.9 {
                    places[3 + i % 2]
                } else {
                    places[5]
                };
                Customer {
                    id: 1 + u64::try_from(i).unwrap_or(0),
                    email: format!("customer{i}@example.com"),
                    first: format!("First{i}"),
                    last: format!("Last{i}"),
                    company: (rng.random::<f64>() < 0.15).then(|| format!("Company {i} Ltd")),
                    currency,
                    country,
                    postcode,
                    known: false,
                }
            })
            .collect();
        let sellable: Vec<usize> =
            products.iter().enumerate().filter(|(_, pr)| pr.kind != "configurable").map(|(i, _)| i).collect();
        let mut invoice_id = 100_000u64;
        let mut memo_id = 500_000u64;
        let mut guest_n = 0u64;
        let mut pending_payments: Vec<String> = Vec::new();
        while lines.len() < config.events {
            // Occasionally a product changes (price or stock).
            if rng.random::<f64>() < 0.04 {
                let idx = rng.random_range(0..products.len());
                products[idx].stock = rng.random_range(0..500);
                lines.push(event("product.upserted", products[idx].id, product_event(&products[idx]), 0, 0));
            }
            let guest = rng.random::<f64>() < 0.15;
            let cidx = rng.random_range(0..customers.len());
            let (cust_json, currency, country, postcode) = if guest {
                guest_n += 1;
                let (currency, country, postcode) = places[usize::try_from(guest_n).unwrap_or(0) % 3];
                (
                    json!({"magento_id": 0, "email": format!("guest{guest_n}@example.org"), "first_name": "Guest",
                           "last_name": format!("Buyer{guest_n}"), "website_id": 0, "addresses": []}),
                    currency,
                    country,
                    postcode,
                )
            } else {
                let c = &mut customers[cidx];
                let v = json!({"magento_id": c.id, "email": c.email, "first_name": c.first, "last_name": c.last,
                               "company": c.company, "website_id": 1,
                               "addresses": [{"kind": "billing", "street": ["1 Main Street"], "city": "Town", "postcode": c.postcode, "country_id": c.country}]});
                if !c.known && rng.random::<f64>() < 0.5 {
                    lines.push(event("customer.upserted", c.id, v.clone(), 1, 0));
                }
                c.known = true;
                (v, c.currency, c.country, c.postcode)
            };
            let domestic = country == "GB";
            // 1–20 lines, mostly few.
            let n_lines = match rng.random_range(0..100) {
                0..=49 => rng.random_range(1..=2),
                50..=84 => rng.random_range(3..=6),
                _ => rng.random_range(7..=20),
            };
            let mut json_lines = Vec::new();
            let (mut sub, mut tax, mut disc) = (0i64, 0i64, 0i64);
            for _ in 0..n_lines {
                let pr = &products[sellable[rng.random_range(0..sellable.len())]];
                let qty = rng.random_range(1..=4i64);
                let row = pr.price_pennies * qty;
                let d = if rng.random::<f64>() < 0.1 { row / 10 } else { 0 };
                let rate = if domestic { pr.rate } else { 0 };
                let t_p = pennies(round_money(p(row - d) * Decimal::from(rate) / Decimal::ONE_HUNDRED));
                let line_tax = p(t_p);
                let tax_rate = if row > 0 && t_p > 0 {
                    money(byte8_ledger_core::money::RoundingPolicy::HalfUp.round(line_tax / p(row), 4))
                } else {
                    Value::Null
                };
                json_lines.push(json!({"sku": pr.sku, "name": pr.name, "qty": qty, "unit_price": money(p(pr.price_pennies)),
                    "line_subtotal": money(p(row)), "line_tax": money(line_tax), "line_total": money(p(row) + line_tax - p(d)),
                    "tax_rate": tax_rate, "product_type": pr.kind}));
                sub += row;
                tax += t_p;
                disc += d;
            }
            let ship = [0i64, 395, 499, 695][rng.random_range(0..4)];
            let ship_tax = if domestic { pennies(round_money(p(ship) / Decimal::from(5))) } else { 0 };
            let grand = sub - disc + tax + ship + ship_tax;
            invoice_id += 1;
            let inc = format!("{invoice_id:09}");
            let (rate, method) = match currency {
                "GBP" => {
                    (json!(1.0), ["braintree", "stripe_payments", "checkmo", "paypal_express"][rng.random_range(0..4)])
                }
                "EUR" => (json!(1.17), ["braintree", "stripe_payments"][rng.random_range(0..2)]),
                _ => (json!(1.27), "paypal_express"),
            };
            let paid = rng.random::<f64>() < config.paid_share;
            let address = json!({"kind": "billing", "street": ["1 Main Street"], "city": "Town", "postcode": postcode, "country_id": country});
            let inv = json!({"magento_id": invoice_id, "increment_id": inc, "order_id": invoice_id, "order_increment_id": inc,
                "website_id": 1, "store_id": 1, "currency": currency, "state": if paid { "paid" } else { "open" },
                "customer": cust_json, "lines": json_lines, "subtotal": money(p(sub)), "tax_amount": money(p(tax + ship_tax)),
                "shipping_amount": money(p(ship)), "shipping_tax_amount": money(p(ship_tax)), "discount_amount": money(p(-disc)),
                "grand_total": money(p(grand)), "created_at": "2026-11-22T09:00:00Z", "payment_method": method,
                "billing_address": address.clone(), "shipping_address": address, "base_to_order_rate": rate});
            lines.push(event("invoice.created", invoice_id, inv, 1, 1));
            expectations.push(Expectation::Invoice {
                magento_id: invoice_id,
                reference: format!("MAG-{inc}"),
                total: p(grand),
                currency: currency.to_owned(),
            });
            let payment = json!({"magento_id": invoice_id, "invoice_id": invoice_id, "invoice_increment_id": inc,
                "method": method, "currency": currency, "amount": money(p(grand)), "captured_at": "2026-11-22T09:00:00Z"});
            let payment_line = event("invoice.paid", invoice_id, payment, 1, 1);
            if paid {
                if method != "checkmo" {
                    expectations.push(Expectation::Payment {
                        invoice_id,
                        reference: format!("MAG-{inc}"),
                        amount: p(grand),
                    });
                }
                // Most payments follow at once; some a few documents later.
                if rng.random::<f64>() < 0.8 {
                    lines.push(payment_line);
                } else {
                    pending_payments.push(payment_line);
                }
            }
            if rng.random::<f64>() < 0.3
                && let Some(l) = pending_payments.pop()
            {
                lines.push(l);
            }
            if grand > 0 && rng.random::<f64>() < config.refund_share {
                memo_id += 1;
                let minc = format!("{memo_id:09}");
                // Refund the first line in full.
                let first = json_lines_first(&lines, invoice_id);
                if let Some(line) = first {
                    let total =
                        line.get("line_total").and_then(|v| v.to_string().parse::<Decimal>().ok()).unwrap_or_default();
                    let memo = json!({"magento_id": memo_id, "increment_id": minc, "invoice_id": invoice_id, "invoice_increment_id": inc,
                        "website_id": 1, "currency": currency, "customer": invoice_customer(&lines, invoice_id),
                        "lines": [line], "adjustment_positive": 0, "adjustment_negative": 0, "grand_total": money(total),
                        "shipping_amount": 0, "shipping_tax_amount": 0, "reason": "Returned",
                        "created_at": "2026-11-23T09:00:00Z", "invoice_created_at": "2026-11-22T09:00:00Z", "base_to_order_rate": rate});
                    lines.push(event("creditmemo.created", memo_id, memo, 1, 1));
                    expectations.push(Expectation::CreditNote {
                        magento_id: memo_id,
                        invoice_id,
                        reference: format!("MAG-{minc}"),
                        total,
                    });
                }
            }
        }
        lines.extend(pending_payments);
        Self { lines, expectations }
    }
}

fn find_invoice(lines: &[String], invoice_id: u64) -> Option<Value> {
    let key = format!("\"idempotency_key\":\"invoice.created:{invoice_id}\"");
    lines.iter().rev().find(|l| l.contains(&key)).and_then(|l| serde_json::from_str::<Value>(l).ok())
}

fn json_lines_first(lines: &[String], invoice_id: u64) -> Option<Value> {
    find_invoice(lines, invoice_id).and_then(|v| v["entity"]["lines"].get(0).cloned())
}

fn invoice_customer(lines: &[String], invoice_id: u64) -> Value {
    find_invoice(lines, invoice_id).map(|v| v["entity"]["customer"].clone()).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use byte8_ledger_core::canonical::Event;

    #[test]
    fn every_generated_event_is_valid_and_the_stream_is_reproducible() {
        let config = WorkloadConfig { events: 600, ..WorkloadConfig::default() };
        let w = Workload::generate(&config);
        assert!(w.lines.len() >= 600);
        for line in &w.lines {
            if let Err(e) = Event::parse(line) {
                panic!("invalid generated event: {e}\n{line}");
            }
        }
        assert_eq!(w.lines, Workload::generate(&config).lines, "same seed, same stream");
        let kinds = ["invoice.created", "invoice.paid", "creditmemo.created", "customer.upserted", "product.upserted"];
        for k in kinds {
            assert!(w.lines.iter().any(|l| l.contains(&format!("\"event\":\"{k}\""))), "no {k}");
        }
    }
}
