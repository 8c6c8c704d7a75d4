//! Fuzzes the pure pipeline: an arbitrary line is parsed as an event, validated, planned and
//! transformed into Sage requests. Nothing may panic.
//!
//! Run (needs a nightly toolchain or `RUSTC_BOOTSTRAP=1`, and `cargo install cargo-fuzz`):
//! `cd fuzz && cargo fuzz run parse_and_transform`
#![no_main]

use std::sync::OnceLock;

use byte8_ledger_core::{
    canonical::{Entity, Event},
    identity::{self, ContactSubject},
    money::Currency,
    plan,
    policy::SyncPolicy,
    providers::sage::transform::{self, DocumentLinks, PaymentLinks},
    reference::ReferenceData,
};
use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;

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
        Some(Entity::Contact(c)) => {
            // Every reference the contact may hold, in the base currency and a foreign one.
            let base = reference.business.base_currency;
            let subject = ContactSubject::of(c);
            let _ = subject.xref_key();
            let fallback = identity::fallback_reference(policy);
            for currency in [base, Currency::EUR] {
                for candidate in identity::reference_candidates(&subject, currency, base, fallback) {
                    let _ =
                        transform::contact(c, currency, &candidate, policy, reference, Some(&event.idempotency_key));
                }
                let _ = transform::fallback_contact(policy, currency, fallback, reference);
            }
        }
        Some(Entity::Payment(p)) => {
            let base = reference.business.base_currency;
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
                let _ = transform::contact_payment(p, policy, &links);
            }
        }
        None => {}
    }
});
