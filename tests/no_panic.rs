//! No input panics the process: arbitrary bytes, arbitrary JSON in every field of an event, and
//! mutated real events go through parsing, validation, planning and the Sage transforms, and come
//! out as `Ok` or as an error that names a field.

mod support;

use byte8_ledger_core::{
    canonical::{Entity, Event},
    plan,
    providers::sage::transform::{self, DocumentLinks},
};
use proptest::prelude::*;
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

/// Runs the whole pure pipeline on a line: parse, validate, plan, transform.
fn run(line: &str) {
    let Ok(event) = Event::parse(line) else { return };
    let reference = uk_reference();
    let policy = policy(json!({"foreign_vat_ledger_account_id": "OSS"}));
    let items = Default::default();
    let links = DocumentLinks { contact_id: "C", items: &items, idempotency_key: Some(&event.idempotency_key) };
    match &event.entity {
        Some(Entity::Invoice(inv)) => {
            let _ = transform::sales_invoice(inv, &policy, &reference, &links);
        }
        Some(Entity::CreditMemo(memo)) => {
            let _ = plan::plan_credit_memo(memo, &policy, &reference, None);
            let _ = transform::sales_credit_note(memo, &policy, &reference, &links, None);
        }
        Some(Entity::Product(p)) => {
            if let Ok(kind) = transform::item_kind(p, &policy) {
                let _ = transform::item(p, kind, &policy, None);
            }
        }
        _ => {}
    }
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
        run(&event.to_string());
    }

    #[test]
    fn any_field_of_a_real_event_replaced_never_panics(pick in any::<prop::sample::Index>(), value in arb_json()) {
        let mut event = valid_invoice_event();
        let mut all = Vec::new();
        paths(&event, Vec::new(), &mut all);
        let path = pick.get(&all).clone();
        set(&mut event, &path, value);
        run(&event.to_string());
    }
}

#[test]
fn the_unmutated_event_goes_through() {
    // The mutation test starts from a valid event: make sure it really is one, so that mutations
    // reach the planner and transforms.
    let event = Event::parse(&valid_invoice_event().to_string()).expect("valid");
    let Some(Entity::Invoice(inv)) = &event.entity else { panic!("invoice expected") };
    let items = Default::default();
    let links = DocumentLinks { contact_id: "C", items: &items, idempotency_key: None };
    transform::sales_invoice(inv, &policy(json!({})), &uk_reference(), &links).expect("transforms");
}
