//! Fuzzes the pure pipeline: an arbitrary line is parsed as an event, validated, planned and
//! transformed into Sage requests. Nothing may panic.
//!
//! Run (needs a nightly toolchain or `RUSTC_BOOTSTRAP=1`, and `cargo install cargo-fuzz`):
//! `cd fuzz && cargo fuzz run parse_and_transform`
#![no_main]

use std::sync::OnceLock;

use byte8_ledger_core::{
    canonical::{Entity, Event},
    plan,
    policy::SyncPolicy,
    providers::sage::transform::{self, DocumentLinks},
    reference::ReferenceData,
};
use libfuzzer_sys::fuzz_target;

fn fixtures() -> &'static (SyncPolicy, ReferenceData) {
    static F: OnceLock<(SyncPolicy, ReferenceData)> = OnceLock::new();
    F.get_or_init(|| {
        let policy = SyncPolicy::from_json(
            r#"{"default_ledger_account_id":"SALES","default_tax_rate_id":"GB_STANDARD",
                "tax_rate_map":{"20":"GB_STANDARD","5":"GB_LOWER","0":"GB_ZERO"},
                "foreign_vat_ledger_account_id":"OSS","default_purchase_ledger_account_id":"COS"}"#,
        )
        .expect("policy");
        (policy, ReferenceData::demo_uk(chrono::DateTime::<chrono::Utc>::UNIX_EPOCH))
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(event) = Event::parse(text) else { return };
    let (policy, reference) = fixtures();
    let items = Default::default();
    let links = DocumentLinks { contact_id: "C", items: &items, idempotency_key: Some(&event.idempotency_key) };
    match &event.entity {
        Some(Entity::Invoice(inv)) => {
            let _ = transform::sales_invoice(inv, policy, reference, &links);
        }
        Some(Entity::CreditMemo(memo)) => {
            let _ = plan::plan_credit_memo(memo, policy, reference, None);
            let _ = transform::sales_credit_note(memo, policy, reference, &links, None);
        }
        Some(Entity::Product(p)) => {
            if let Ok(kind) = transform::item_kind(p, policy) {
                let _ = transform::item(p, kind, policy, None);
            }
        }
        _ => {}
    }
});
