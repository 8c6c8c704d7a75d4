//! Reconciliation over the Xero simulator: events synced by the engine, then
//! `reconcile::reconcile` reads Xero back (more than one page of 100) and finds it clean; a
//! deleted invoice, a changed total and an invoice no run posted are then reported.

use crate::support_xero as xero;

use std::sync::Arc;

use byte8_ledger_core::{
    clock::ManualClock,
    engine::SyncEngine,
    outcome::SyncStatus,
    policy::SyncPolicy,
    providers::{AccountingProvider, EntryKind},
    reconcile::{Amount, Finding, Period, reconcile},
    store::{Store, sqlite::SqliteStore},
};
use byte8_ledger_simulators::xero::{XERO_DEMO_TENANT, XeroSimConfig, XeroSimulator};
use chrono::{NaiveDate, TimeZone, Utc};
use rust_decimal_macros::dec;
use serde_json::json;

/// Invoice `id`: 2 × 10.00 at 20 % + shipping 5.00 at 20 % = 30.00, VAT 5.00.
fn invoice(id: u64) -> String {
    json!({"event": "invoice.created", "idempotency_key": format!("invoice.created:{id}"), "magento_entity_id": id,
        "website_id": 1, "store_id": 1, "occurred_at": "2026-11-22T10:00:00Z", "payload": {},
        "entity": {"magento_id": id, "increment_id": format!("{id:09}"), "order_id": id + 5000, "order_increment_id": format!("3{id:08}"),
            "website_id": 1, "store_id": 1, "currency": "GBP", "state": "open",
            "customer": {"magento_id": 1 + id % 7, "email": format!("c{}@example.com", 1 + id % 7), "first_name": "Customer", "last_name": "X", "website_id": 1,
                         "addresses": [{"kind": "billing", "street": ["1 High Street"], "city": "London", "postcode": "SW1A 1AA", "country_id": "GB"}]},
            "lines": [{"sku": "A-1", "name": "Widget", "qty": 2, "unit_price": "10.00", "line_subtotal": "20.00", "line_tax": "4.00", "line_total": "24.00", "tax_rate": 0.2, "product_type": "simple"}],
            "subtotal": "20.00", "tax_amount": "5.00", "shipping_amount": "5.00", "shipping_tax_amount": "1.00", "discount_amount": "0.00", "grand_total": "30.00",
            "created_at": "2026-11-22T09:00:00Z", "payment_method": "braintree", "base_to_order_rate": 1}})
    .to_string()
}

fn payment(id: u64) -> String {
    json!({"event": "invoice.paid", "idempotency_key": format!("invoice.paid:{id}"), "magento_entity_id": id, "website_id": 1, "store_id": 1,
        "occurred_at": "2026-11-22T10:00:00Z", "payload": {},
        "entity": {"magento_id": id, "invoice_id": id, "invoice_increment_id": format!("{id:09}"), "method": "braintree", "currency": "GBP", "amount": "30.00", "captured_at": "2026-11-22T10:00:00Z"}})
    .to_string()
}

#[tokio::test]
async fn xero_reconciles_clean_across_pages_then_reports_tampering() {
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    let clock = ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap());
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("state.db"), None).await.unwrap());
    let provider: Arc<dyn AccountingProvider> = Arc::new(
        xero::builder(&server)
            .with_limits(byte8_ledger_core::providers::xero::XeroLimits { per_minute: 0, ..Default::default() })
            .with_clock(Arc::new(clock.clone()))
            .build()
            .unwrap(),
    );
    let mut policy = SyncPolicy::from_json(xero::XERO_POLICY).unwrap();
    policy.sync_since = None;
    let engine = SyncEngine::new(
        Arc::clone(&provider),
        Arc::clone(&store) as Arc<dyn Store>,
        XERO_DEMO_TENANT,
        policy,
        Arc::new(clock.clone()),
    );
    // 130 invoices (two pages of Xero's 100), 20 of them paid.
    for i in 0..130u64 {
        engine.submit(&invoice(1000 + i)).await.unwrap();
    }
    for i in 0..20u64 {
        engine.submit(&payment(1000 + i)).await.unwrap();
    }
    let done = engine.process_due(500).await.unwrap();
    assert!(done.iter().all(|(_, o)| o.sync_status == SyncStatus::Synced), "{done:?}");

    let period =
        Period::new(NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(), NaiveDate::from_ymd_opt(2026, 11, 30).unwrap())
            .unwrap();
    let report = reconcile(&*store, &*provider, XERO_DEMO_TENANT, period).await.unwrap();
    assert!(report.is_clean(), "{}", report.to_table());
    let gbp = report.totals["GBP"];
    // By hand: 130 × 30.00 = 3,900.00, VAT 130 × 5.00 = 650.00; 20 receipts of 30.00.
    for side in [gbp.magento, gbp.ledger] {
        assert_eq!((side.invoices.count, side.invoices.gross, side.invoices.vat), (130, dec!(3900), dec!(650)));
        assert_eq!((side.payments.count, side.payments.gross), (20, dec!(600)));
    }
    // Another month holds nothing.
    let december =
        Period::new(NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(), NaiveDate::from_ymd_opt(2026, 12, 31).unwrap())
            .unwrap();
    let empty = reconcile(&*store, &*provider, XERO_DEMO_TENANT, december).await.unwrap();
    assert!(empty.is_clean() && empty.totals.is_empty(), "{}", empty.to_table());

    // Tamper: delete invoice 000001100, change 000001101's VAT, add an invoice from no run.
    let (gone, changed) = sim.with_state(|s| {
        let org = s.orgs.get_mut(XERO_DEMO_TENANT).unwrap();
        let gone = org.invoices.iter().position(|d| d.number.ends_with("000001100")).unwrap();
        let gone = org.invoices.remove(gone).number;
        let c = org.invoices.iter_mut().find(|d| d.number.ends_with("000001101")).unwrap();
        c.total_tax = dec!(5.01);
        let changed = c.number.clone();
        let mut manual = c.clone();
        manual.id = "0b1c2d3e-0000-4000-8000-000000000001".into();
        manual.number = "INV-MANUAL".into();
        org.invoices.push(manual);
        (gone, changed)
    });
    let report = reconcile(&*store, &*provider, XERO_DEMO_TENANT, period).await.unwrap();
    assert!(!report.is_clean());
    assert!(report.findings.contains(&Finding::MissingInLedger {
        kind: EntryKind::Invoice,
        reference: gone,
        magento_id: 1100,
        gross: dec!(30),
    }));
    assert!(report.findings.iter().any(|f| matches!(f,
        Finding::AmountDiffers { reference, amount: Amount::Vat, magento, ledger, .. }
            if *reference == changed && *magento == dec!(5) && *ledger == Some(dec!(5.01)))));
    assert!(report.findings.iter().any(|f| matches!(f,
        Finding::NotFromRun { reference: Some(r), .. } if r == "INV-MANUAL")));
    assert_eq!(report.findings.len(), 3, "{}", report.to_table());
}
