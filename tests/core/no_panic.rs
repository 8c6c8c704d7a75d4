//! No input panics the process: arbitrary bytes, arbitrary JSON in every field of an event, and
//! mutated real events go through parsing, validation, planning and the Sage transforms, and come
//! out as `Ok` or as an error that names a field.

use crate::support;

use byte8_ledger_core::{
    canonical::{Entity, Event, MagentoContact},
    identity::{self, ContactSubject},
    money::Currency,
    plan,
    policy::SyncPolicy,
    providers::sage::transform::{self, DocumentLinks, PaymentLinks},
    reference::ReferenceData,
};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use support::{policy, uk_reference};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        // Numbers as text, including huge, tiny, negative and exponent forms.
        prop_oneof![
            Just("1e400".to_owned()),
            Just("-0.0000000000000000000000000000001".to_owned()),
            Just("79228162514264337593543950336".to_owned()),
            "-?[0-9]{1,30}(\\.[0-9]{1,30})?(e-?[0-9]{1,3})?".prop_map(|s| s),
        ]
        .prop_filter_map("valid JSON number", |s| serde_json::from_str::<Value>(&s).ok()),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_]{1,16}", inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn valid_invoice_event() -> Value {
    json!({"event": "invoice.created", "idempotency_key": "invoice.created:1", "magento_entity_id": 1,
      "website_id": 1, "store_id": 1, "occurred_at": "2026-11-22T10:00:00Z", "payload": {},
      "entity": {"magento_id": 1, "increment_id": "1", "order_id": 1, "order_increment_id": "1", "currency": "GBP",
        "state": "open", "customer": {"magento_id": 5, "email": "a@b.co", "addresses": [
          {"kind": "billing", "street": ["x"], "city": "y", "postcode": "SW1A 1AA", "country_id": "GB"}]},
        "lines": [{"sku": "A", "name": "W", "qty": 2, "unit_price": 10, "line_subtotal": 20, "line_tax": 4,
                   "line_total": 24, "tax_rate": 0.2, "product_type": "simple"}],
        "subtotal": 20, "tax_amount": 4, "shipping_amount": 0, "shipping_tax_amount": 0, "discount_amount": 0,
        "grand_total": 24, "created_at": "2026-11-22T09:00:00Z"}})
}

/// Every path to a leaf of `v`.
fn paths(v: &Value, prefix: Vec<PathSeg>, out: &mut Vec<Vec<PathSeg>>) {
    out.push(prefix.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                let mut p = prefix.clone();
                p.push(PathSeg::Key(k.clone()));
                paths(c, p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let mut p = prefix.clone();
                p.push(PathSeg::Index(i));
                paths(c, p, out);
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum PathSeg {
    Key(String),
    Index(usize),
}

fn set(v: &mut Value, path: &[PathSeg], new: Value) {
    let mut cur = v;
    for seg in path {
        cur = match (seg, cur) {
            (PathSeg::Key(k), Value::Object(m)) => m.get_mut(k).expect("path exists"),
            (PathSeg::Index(i), Value::Array(a)) => &mut a[*i],
            _ => return,
        };
    }
    *cur = new;
}

fn valid_contact_event() -> Value {
    json!({"event": "customer.upserted", "idempotency_key": "customer.upserted:5", "magento_entity_id": 5,
      "website_id": 1, "occurred_at": "2026-11-22T10:00:00Z", "payload": {},
      "entity": {"magento_id": 5, "email": "a@b.co", "first_name": "Jane", "last_name": "Doe",
        "company": "Acme & Sons", "phone": "0123", "website_id": 1, "group_id": 1, "addresses": [
          {"kind": "billing", "street": ["1 High St"], "city": "London", "postcode": "SW1A 1AA", "country_id": "GB"},
          {"kind": "shipping", "street": ["2 Low St"], "city": "Paris", "postcode": "75001", "country_id": "FR"}]}})
}

fn valid_payment_event() -> Value {
    json!({"event": "invoice.paid", "idempotency_key": "invoice.paid:1", "magento_entity_id": 1,
      "website_id": 1, "occurred_at": "2026-11-22T10:00:00Z", "payload": {},
      "entity": {"magento_id": 1, "invoice_id": 1, "invoice_increment_id": "1", "method": "checkmo",
        "currency": "GBP", "amount": 24, "captured_at": "2026-11-22T10:00:00Z"}})
}

/// What [`run`] sent an event's entity through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Route {
    /// Not an event, or an event without an entity.
    Nothing,
    Invoice,
    CreditMemo,
    Product,
    /// The contact transform ran for every reference candidate of the base currency and of a
    /// foreign one; `bool`: every request names its candidate.
    Contact(bool),
    /// The contact payment transform ran with and without an outstanding amount; `bool`: every
    /// receipt carries the payment's amount.
    Payment(bool),
}

/// Runs the whole pure pipeline on a line: parse, validate, plan, transform.
fn run(line: &str) -> Route {
    let Ok(event) = Event::parse(line) else { return Route::Nothing };
    let reference = uk_reference();
    let policy = policy(json!({"foreign_vat_ledger_account_id": "OSS"}));
    let items = Default::default();
    let links = DocumentLinks { contact_id: "C", items: &items, idempotency_key: Some(&event.idempotency_key) };
    match &event.entity {
        Some(Entity::Invoice(inv)) => {
            let _ = transform::sales_invoice(inv, &policy, &reference, &links);
            Route::Invoice
        }
        Some(Entity::CreditMemo(memo)) => {
            let _ = plan::plan_credit_memo(memo, &policy, &reference, None);
            let _ = transform::sales_credit_note(memo, &policy, &reference, &links, None);
            Route::CreditMemo
        }
        Some(Entity::Product(p)) => {
            if let Ok(kind) = transform::item_kind(p, &policy) {
                let _ = transform::item(p, kind, &policy, None);
            }
            Route::Product
        }
        Some(Entity::Contact(c)) => Route::Contact(contact_requests(c, &policy, &reference, &event.idempotency_key)),
        Some(Entity::Payment(p)) => {
            let base = reference.business.base_currency;
            let mut all_carry_amount = true;
            for outstanding in [None, Some(Decimal::ZERO), Some(p.amount)] {
                let links = PaymentLinks {
                    contact_id: "C",
                    invoice_id: "I",
                    bank_account_id: "B",
                    exchange_rate: transform::exchange_rate(p.currency, base, Some(Decimal::ONE)),
                    date: policy.local_date(p.captured_at, &reference.business.country),
                    outstanding,
                    idempotency_key: Some(&event.idempotency_key),
                };
                let body = transform::contact_payment(p, &policy, &links);
                all_carry_amount &= body.contact_payment.total_amount == p.amount;
            }
            Route::Payment(all_carry_amount)
        }
        None => Route::Nothing,
    }
}

/// The contact references of `c` in the base currency and in euros (identity), each turned into a
/// contact request; true when every request carries the reference it was made for.
fn contact_requests(c: &MagentoContact, policy: &SyncPolicy, reference: &ReferenceData, key: &str) -> bool {
    let base = reference.business.base_currency;
    let subject = ContactSubject::of(c);
    let _ = subject.xref_key();
    let mut all_named = true;
    for currency in [base, Currency::EUR] {
        for candidate in identity::reference_candidates(&subject, currency, base, identity::fallback_reference(policy))
        {
            let t = transform::contact(c, currency, &candidate, policy, reference, Some(key));
            all_named &= t.request.contact.reference.as_deref() == Some(candidate.as_str());
        }
        let _ = transform::fallback_contact(policy, currency, identity::fallback_reference(policy), reference);
    }
    all_named
}

/// False when a route ran but its transform broke one of the invariants it reports.
fn sound(route: Route) -> bool {
    !matches!(route, Route::Contact(false) | Route::Payment(false))
}

/// Replaces one field (or the whole of `event`) with `value` and runs the result.
fn mutated(mut event: Value, pick: &prop::sample::Index, value: Value) -> Route {
    let mut all = Vec::new();
    paths(&event, Vec::new(), &mut all);
    let path = pick.get(&all).clone();
    set(&mut event, &path, value);
    run(&event.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, .. ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        run(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn arbitrary_json_entities_never_panic(entity in arb_json(), kind in 0usize..5) {
        let names = ["invoice.created", "invoice.paid", "creditmemo.created", "customer.upserted", "product.upserted"];
        let event = json!({"event": names[kind], "idempotency_key": format!("{}:1", names[kind]),
            "magento_entity_id": 1, "occurred_at": "2026-11-22T10:00:00Z", "entity": entity});
        let route = run(&event.to_string());
        prop_assert!(sound(route), "{:?}", route);
    }

    #[test]
    fn any_field_of_a_real_event_replaced_never_panics(pick in any::<prop::sample::Index>(), value in arb_json()) {
        mutated(valid_invoice_event(), &pick, value);
    }
}

proptest! {
    // Contacts and payments have fewer fields and cheaper transforms than invoices.
    #![proptest_config(ProptestConfig { cases: 1024, .. ProptestConfig::default() })]

    #[test]
    fn any_field_of_a_real_contact_event_replaced_never_panics(
        pick in any::<prop::sample::Index>(),
        value in arb_json(),
    ) {
        let route = mutated(valid_contact_event(), &pick, value);
        prop_assert!(sound(route), "{:?}", route);
    }

    #[test]
    fn any_field_of_a_real_payment_event_replaced_never_panics(
        pick in any::<prop::sample::Index>(),
        value in arb_json(),
    ) {
        let route = mutated(valid_payment_event(), &pick, value);
        prop_assert!(sound(route), "{:?}", route);
    }
}

#[test]
fn the_unmutated_events_go_through() {
    // The mutation tests start from valid events: make sure they really are, so that mutations
    // reach the planner and transforms.
    let event = Event::parse(&valid_invoice_event().to_string()).expect("valid");
    let Some(Entity::Invoice(inv)) = &event.entity else { panic!("invoice expected") };
    let items = Default::default();
    let links = DocumentLinks { contact_id: "C", items: &items, idempotency_key: None };
    transform::sales_invoice(inv, &policy(json!({})), &uk_reference(), &links).expect("transforms");
    assert_eq!(run(&valid_invoice_event().to_string()), Route::Invoice);
    assert_eq!(run(&valid_contact_event().to_string()), Route::Contact(true));
    assert_eq!(run(&valid_payment_event().to_string()), Route::Payment(true));
}
