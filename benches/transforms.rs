//! Cost of the pure pipeline per document: parse + validate an `invoice.created` event, then plan
//! and transform it into the Sage request, for invoices of 1, 10 and 100 lines; and the same for
//! the other event kinds of the sample stream (`samples/events.jsonl`: a credit memo, a payment,
//! a customer, a stock product); and an invoice entity read from a Magento GET's body through a
//! `Value` with field paths and straight from the text (`entity_json`).
//!
//! Run: `cargo bench --bench transforms`.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;

use byte8_ledger_core::clock::Clock;
use byte8_ledger_core::{
    canonical::{Entity, Event, EventKind},
    identity::{self, ContactSubject},
    policy::SyncPolicy,
    providers::sage::transform::{self, DocumentLinks, PaymentLinks},
    reference::ReferenceData,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::json;

/// An invoice event with `n` lines of 3 × 8.33 at 20 % (row 25.00, tax 5.00) and 4.99 shipping.
fn event(n: usize) -> String {
    let lines: Vec<_> = (0..n)
        .map(|i| {
            json!({"sku": format!("SKU-{i}"), "name": format!("Widget &amp; Co {i}"), "qty": 3, "unit_price": 8.33,
                   "line_subtotal": 25.00, "line_tax": 5.00, "line_total": 30.00, "tax_rate": 0.2, "product_type": "simple"})
        })
        .collect();
    let sub = 25 * n;
    let tax = 5 * n;
    json!({"event": "invoice.created", "idempotency_key": "invoice.created:1", "magento_entity_id": 1,
        "occurred_at": "2026-11-22T10:00:00Z", "payload": {},
        "entity": {"magento_id": 1, "increment_id": "100000001", "order_id": 1, "order_increment_id": "100000001",
            "currency": "GBP", "state": "open",
            "customer": {"magento_id": 5, "email": "jane@example.com", "first_name": "Jane", "last_name": "Doe"},
            "lines": lines, "subtotal": sub, "tax_amount": tax, "shipping_amount": 4.99, "shipping_tax_amount": 0,
            "discount_amount": 0, "grand_total": format!("{}.99", sub + tax + 4), "created_at": "2026-11-22T09:00:00Z",
            "billing_address": {"kind": "billing", "street": ["1 High St"], "city": "London", "postcode": "SW1A 1AA", "country_id": "GB"}}})
    .to_string()
}

fn bench(c: &mut Criterion) {
    let reference = ReferenceData::demo_uk(byte8_ledger_core::clock::SystemClock.now());
    let policy = SyncPolicy::from_json(
        r#"{"default_ledger_account_id":"SALES","default_tax_rate_id":"GB_STANDARD","tax_rate_map":{"20":"GB_STANDARD"}}"#,
    )
    .expect("policy");
    let items = Default::default();
    let links = DocumentLinks { contact_id: "C1", items: &items, idempotency_key: Some("invoice.created:1") };
    let mut group = c.benchmark_group("invoice");
    for n in [1usize, 10, 100] {
        let text = event(n);
        // Check once that the document is valid, so the bench measures the success path.
        let Ok(Event { entity: Some(Entity::Invoice(inv)), .. }) = Event::parse(&text) else {
            panic!("bad bench input")
        };
        transform::sales_invoice(&inv, &policy, &reference, &links).expect("transforms");
        group.throughput(Throughput::Elements(1));
        group.bench_with_input(BenchmarkId::new("parse_and_transform", n), &text, |b, text| {
            b.iter(|| {
                let event = Event::parse(black_box(text)).expect("parses");
                let Some(Entity::Invoice(inv)) = &event.entity else { unreachable!() };
                black_box(transform::sales_invoice(inv, &policy, &reference, &links).expect("transforms"))
            });
        });
        group.bench_with_input(BenchmarkId::new("transform_only", n), &inv, |b, inv| {
            b.iter(|| {
                black_box(transform::sales_invoice(black_box(inv), &policy, &reference, &links).expect("transforms"))
            });
        });
        group.bench_with_input(BenchmarkId::new("serialize_request", n), &inv, |b, inv| {
            let t = transform::sales_invoice(inv, &policy, &reference, &links).expect("transforms");
            b.iter(|| black_box(serde_json::to_vec(&t.request).expect("serializes")));
        });
    }
    group.finish();

    // The other kinds, each from its sample event: parse + validate + transform.
    let sample = |key: &str| {
        include_str!("../samples/events.jsonl")
            .lines()
            .find(|l| serde_json::from_str::<serde_json::Value>(l).is_ok_and(|v| v["idempotency_key"] == key))
            .unwrap_or_else(|| panic!("no sample {key}"))
            .to_owned()
    };
    let base = reference.business.base_currency;
    let mut group = c.benchmark_group("other_events");
    group.throughput(Throughput::Elements(1));
    let memo = sample("creditmemo.created:3001");
    group.bench_function("creditmemo_parse_and_transform", |b| {
        b.iter(|| {
            let event = Event::parse(black_box(&memo)).expect("parses");
            let Some(Entity::CreditMemo(m)) = &event.entity else { unreachable!() };
            black_box(transform::sales_credit_note(m, &policy, &reference, &links, None).expect("transforms"))
        });
    });
    let payment = sample("invoice.paid:1001");
    group.bench_function("payment_parse_and_transform", |b| {
        b.iter(|| {
            let event = Event::parse(black_box(&payment)).expect("parses");
            let Some(Entity::Payment(p)) = &event.entity else { unreachable!() };
            let links = PaymentLinks {
                contact_id: "C1",
                invoice_id: "I1",
                bank_account_id: "B1",
                exchange_rate: transform::exchange_rate(p.currency, base, None),
                date: policy.local_date(p.captured_at, &reference.business.country),
                outstanding: Some(p.amount),
                idempotency_key: Some(&event.idempotency_key),
            };
            black_box(transform::contact_payment(p, &policy, &links))
        });
    });
    let customer = sample("customer.upserted:5");
    group.bench_function("customer_parse_and_transform", |b| {
        b.iter(|| {
            let event = Event::parse(black_box(&customer)).expect("parses");
            let Some(Entity::Contact(c)) = &event.entity else { unreachable!() };
            let subject = ContactSubject::of(c);
            let refs = identity::reference_candidates(&subject, base, base, "WEBSALES");
            black_box(transform::contact(c, base, &refs[0], &policy, &reference, Some(&event.idempotency_key)))
        });
    });
    let product = sample("product.upserted:2079");
    let stock_policy = SyncPolicy::from_json(
        r#"{"default_ledger_account_id":"SALES","default_tax_rate_id":"GB_STANDARD","sync_products":true,"sync_stock":true,"default_purchase_ledger_account_id":"COS"}"#,
    )
    .expect("policy");
    group.bench_function("product_parse_and_transform", |b| {
        b.iter(|| {
            let event = Event::parse(black_box(&product)).expect("parses");
            let Some(Entity::Product(p)) = &event.entity else { unreachable!() };
            let kind = transform::item_kind(p, &stock_policy).expect("a kind");
            black_box(transform::item(p, kind, &stock_policy, Some(&event.idempotency_key)).expect("transforms"))
        });
    });
    group.finish();

    // An entity as the Magento client reads it from a GET's body: through a `Value` with field
    // paths (`Entity::from_value`, what an error needs), and straight from the text
    // (`Entity::from_json_text`, what the client tries first).
    let mut group = c.benchmark_group("entity_json");
    group.throughput(Throughput::Elements(1));
    for n in [1usize, 10] {
        let mut event: serde_json::Value = serde_json::from_str(&event(n)).expect("json");
        let body = serde_json::to_vec(&event["entity"].take()).expect("json");
        let kind = EventKind::InvoiceCreated;
        let slow = Entity::from_value(kind, serde_json::from_slice(&body).expect("json")).expect("reads");
        assert_eq!(Entity::from_json_text(kind, &body), Some(slow), "the same entity both ways");
        group.bench_with_input(BenchmarkId::new("invoice_through_value", n), &body, |b, body| {
            b.iter(|| {
                let value: serde_json::Value = serde_json::from_slice(black_box(body)).expect("json");
                black_box(Entity::from_value(kind, value).expect("reads"))
            });
        });
        group.bench_with_input(BenchmarkId::new("invoice_straight", n), &body, |b, body| {
            b.iter(|| black_box(Entity::from_json_text(kind, black_box(body)).expect("reads")));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
