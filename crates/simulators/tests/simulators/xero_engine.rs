//! The sync engine end to end into the Xero simulator: batches from the queue, a batch whose
//! answer is lost, credit notes refunded from the bank the invoice was paid into, and a spent
//! daily budget that makes events wait in line instead of failing.

use crate::support_xero as xero;

use std::{sync::Arc, time::Duration};

use byte8_ledger_core::{
    clock::{Clock, ManualClock},
    engine::{EngineConfig, SyncEngine},
    error::ErrorCode,
    outcome::SyncStatus,
    policy::SyncPolicy,
    providers::AccountingProvider,
    store::{RunStatus, RunStore, Store, sqlite::SqliteStore},
};
use byte8_ledger_simulators::{
    Fault,
    xero::{XERO_DEMO_TENANT, XeroSimConfig, XeroSimulator},
};
use chrono::{TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::json;

fn policy() -> SyncPolicy {
    let mut p = SyncPolicy::from_json(xero::XERO_POLICY).unwrap();
    p.sync_since = None;
    p
}

/// Invoice `id` of customer `customer`: 2 × 10.00 at 20 % + shipping 5.00 at 20 % = 30.00.
fn invoice(id: u64, customer: u64, paid: bool) -> String {
    json!({"event": "invoice.created", "idempotency_key": format!("invoice.created:{id}"), "magento_entity_id": id,
        "website_id": 1, "store_id": 1, "occurred_at": "2026-11-22T10:00:00Z", "payload": {"paid": paid},
        "entity": {"magento_id": id, "increment_id": format!("{id:09}"), "order_id": id + 5000, "order_increment_id": format!("3{id:08}"),
            "website_id": 1, "store_id": 1, "currency": "GBP", "state": if paid { "paid" } else { "open" },
            "customer": {"magento_id": customer, "email": format!("c{customer}@example.com"), "first_name": "Customer", "last_name": format!("{customer}"), "website_id": 1,
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

/// A credit memo refunding 1 × 10.00 at 20 % = 12.00 of invoice `invoice`.
fn memo(id: u64, invoice: u64, customer: u64) -> String {
    json!({"event": "creditmemo.created", "idempotency_key": format!("creditmemo.created:{id}"), "magento_entity_id": id, "website_id": 1, "store_id": 1,
        "occurred_at": "2026-11-23T10:00:00Z", "payload": {},
        "entity": {"magento_id": id, "increment_id": format!("{id:09}"), "invoice_id": invoice, "invoice_increment_id": format!("{invoice:09}"), "website_id": 1, "currency": "GBP",
            "customer": {"magento_id": customer, "email": format!("c{customer}@example.com"), "first_name": "Customer", "last_name": format!("{customer}"), "addresses": []},
            "lines": [{"sku": "A-1", "name": "Widget", "qty": 1, "unit_price": "10.00", "line_subtotal": "10.00", "line_tax": "2.00", "line_total": "12.00", "tax_rate": 0.2, "product_type": "simple"}],
            "adjustment_positive": 0, "adjustment_negative": 0, "grand_total": "12.00", "shipping_amount": 0, "shipping_tax_amount": 0,
            "created_at": "2026-11-23T10:00:00Z", "base_to_order_rate": 1}})
    .to_string()
}

async fn engine(
    sim: &XeroSimulator,
    clock: &ManualClock,
) -> (SyncEngine, Arc<SqliteStore>, byte8_ledger_simulators::xero::XeroServer, tempfile::TempDir) {
    engine_with(sim, clock, policy()).await
}

async fn engine_with(
    sim: &XeroSimulator,
    clock: &ManualClock,
    policy: SyncPolicy,
) -> (SyncEngine, Arc<SqliteStore>, byte8_ledger_simulators::xero::XeroServer, tempfile::TempDir) {
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("state.db"), None).await.unwrap());
    let provider = xero::builder(&server)
        .with_limits(byte8_ledger_core::providers::xero::XeroLimits { per_minute: 0, ..Default::default() })
        .with_clock(Arc::new(clock.clone()))
        .build()
        .unwrap();
    let e = SyncEngine::new(
        Arc::new(provider) as Arc<dyn AccountingProvider>,
        Arc::clone(&store) as Arc<dyn Store>,
        XERO_DEMO_TENANT,
        policy,
        Arc::new(clock.clone()),
    );
    (e, store, server, dir)
}

fn clock() -> ManualClock {
    ManualClock::new(Utc.with_ymd_and_hms(2026, 11, 23, 12, 0, 0).unwrap())
}

#[tokio::test]
async fn process_due_batches_the_queue_fifty_invoices_a_request_with_their_contacts_created_together() {
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    let c = clock();
    let (engine, _store, _server, _dir) = engine(&sim, &c).await;
    // 120 invoices of 30 customers, queued, then processed from the queue.
    for i in 0..120u64 {
        engine.submit(&invoice(1000 + i, 1 + i % 30, false)).await.unwrap();
    }
    let done = engine.process_due(500).await.unwrap();
    assert_eq!(done.len(), 120);
    assert!(done.iter().all(|(_, o)| o.sync_status == SyncStatus::Synced), "{done:?}");
    let requests = sim.requests();
    // 120 = 50 + 50 + 20: three invoice requests; the 30 new contacts in the first batch's one.
    assert_eq!(requests.get("PUT /Invoices"), Some(&3), "{requests:?}");
    assert_eq!(requests.get("PUT /Contacts"), Some(&1), "{requests:?}");
    assert_eq!(requests.get("GET /Contacts"), None, "created first: Xero refuses a taken number");
    let org = sim.org(XERO_DEMO_TENANT).unwrap();
    assert_eq!(org.invoices.len(), 120);
    assert_eq!(org.contacts.len(), 30);
    // Every invoice totals 30.00 and sits on its customer's contact.
    assert!(org.invoices.iter().all(|d| d.total == Decimal::new(3000, 2)));
    // Their payments, queued together, go in batches too: 3 requests, each invoice then paid.
    for i in 0..120u64 {
        engine.submit(&payment(1000 + i)).await.unwrap();
    }
    let paid = engine.process_due(500).await.unwrap();
    assert!(paid.iter().all(|(_, o)| o.sync_status == SyncStatus::Synced), "{paid:?}");
    assert_eq!(sim.requests().get("PUT /Payments"), Some(&3));
    let org = sim.org(XERO_DEMO_TENANT).unwrap();
    assert_eq!(org.payments.len(), 120);
    assert!(org.invoices.iter().all(|d| d.status == "PAID" && d.outstanding() == Decimal::ZERO));
    // Processing again writes nothing.
    for i in 0..120u64 {
        engine.submit(&invoice(1000 + i, 1 + i % 30, false)).await.unwrap();
    }
    assert!(engine.process_due(500).await.unwrap().is_empty());
    assert_eq!(sim.requests().get("PUT /Invoices"), Some(&3));
}

#[tokio::test]
async fn a_batch_whose_answer_is_lost_leaves_exactly_one_invoice_each() {
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    let c = clock();
    let (engine, _store, _server, _dir) = engine(&sim, &c).await;
    // Xero commits the batch, then the answer is a 500.
    sim.script(Some("PUT /Invoices"), Fault::ErrorAfterCommit);
    let lines: Vec<String> = (0..10u64).map(|i| invoice(2000 + i, 7, false)).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let outcomes = engine.sync_lines(&refs).await.unwrap();
    assert!(outcomes.iter().all(|o| o.sync_status == SyncStatus::Synced), "{outcomes:?}");
    let org = sim.org(XERO_DEMO_TENANT).unwrap();
    assert_eq!(org.invoices.len(), 10, "found by look-up, never posted twice");
    let requests = sim.requests();
    assert_eq!(requests.get("PUT /Invoices"), Some(&1), "nothing was missing: no second write");
    assert_eq!(requests.get("GET /Invoices"), Some(&1), "one look-up for the whole batch");
}

#[tokio::test]
async fn a_batch_refused_with_5xx_is_resent_as_long_as_the_retry_budget_allows() {
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    let c = clock();
    let (engine, _store, _server, _dir) = engine(&sim, &c).await;
    // Three 503s in a row: the client's budget (3 retries) rides them out in one attempt, each
    // re-send after a look-up that finds nothing (a fixed three sends used to give up).
    for _ in 0..3 {
        sim.script(Some("PUT /Invoices"), Fault::ErrorBefore(503));
    }
    let lines: Vec<String> = (0..5u64).map(|i| invoice(2100 + i, 7, false)).collect();
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let outcomes = engine.sync_lines(&refs).await.unwrap();
    assert!(outcomes.iter().all(|o| o.sync_status == SyncStatus::Synced), "{outcomes:?}");
    assert_eq!(sim.org(XERO_DEMO_TENANT).unwrap().invoices.len(), 5, "each once");
    assert_eq!(sim.requests().get("PUT /Invoices"), Some(&4));
}

#[tokio::test]
async fn a_credit_memo_of_a_paid_invoice_is_refunded_from_the_payments_bank() {
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    let c = clock();
    let (engine, _store, _server, _dir) = engine(&sim, &c).await;
    let lines =
        [invoice(3001, 9, true), payment(3001), memo(4001, 3001, 9), invoice(3002, 9, false), memo(4002, 3002, 9)];
    let mut outcomes = Vec::new();
    for l in &lines {
        outcomes.push(engine.sync_line(l).await.unwrap());
    }
    assert!(outcomes.iter().all(|o| o.sync_status == SyncStatus::Synced), "{outcomes:?}");
    // 3001 was paid in full into 090: its 12.00 credit is refunded in cash from 090.
    assert_eq!(outcomes[2].message.as_deref(), Some("refunded 12.00 from 090"));
    // 3002 is unpaid: its 12.00 credit is allocated against it (30.00 → 18.00 due).
    assert!(outcomes[4].message.as_deref().unwrap_or("").starts_with("allocated 12.00"), "{:?}", outcomes[4]);
    let org = sim.org(XERO_DEMO_TENANT).unwrap();
    let refunds: Vec<_> = org.payments.iter().filter(|p| p.kind == "ARCREDITPAYMENT").collect();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].amount, Decimal::new(1200, 2));
    let bank = org.accounts.iter().find(|a| a.code.as_deref() == Some("090")).unwrap();
    assert_eq!(refunds[0].account_id, bank.id);
    let paid_note = org.credit_notes.iter().find(|d| d.number == "MAG-000004001").unwrap();
    assert_eq!(paid_note.outstanding(), Decimal::ZERO);
    let inv = org.invoices.iter().find(|d| d.number == "MAG-000003002").unwrap();
    assert_eq!(inv.outstanding(), Decimal::new(1800, 2));
    // Replayed, nothing more.
    for l in &lines {
        engine.sync_line(l).await.unwrap();
    }
    assert_eq!(sim.org(XERO_DEMO_TENANT).unwrap().payments.len(), org.payments.len());
}

#[tokio::test]
async fn refund_paid_credit_memos_off_leaves_the_credit_note_open_on_xero_too() {
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    let c = clock();
    let (engine, _store, _server, _dir) =
        engine_with(&sim, &c, SyncPolicy { refund_paid_credit_memos: false, ..policy() }).await;
    for l in [invoice(3101, 9, true), payment(3101), memo(4101, 3101, 9)] {
        assert_eq!(engine.sync_line(&l).await.unwrap().sync_status, SyncStatus::Synced);
    }
    let org = sim.org(XERO_DEMO_TENANT).unwrap();
    assert!(org.payments.iter().all(|p| p.kind != "ARCREDITPAYMENT"), "no cash refund");
    let note = org.credit_notes.iter().find(|d| d.number == "MAG-000004101").unwrap();
    assert_eq!(note.outstanding(), Decimal::new(1200, 2), "open as the customer's credit");
}

#[tokio::test]
async fn in_a_batched_run_payments_and_credit_memos_before_their_invoices_wait_and_sync() {
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    let c = clock();
    let (engine, _store, _server, _dir) = engine(&sim, &c).await;
    let lines = [memo(4201, 3201, 9), payment(3201), payment(3202), invoice(3202, 9, false), invoice(3201, 9, true)];
    let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
    let outcomes = engine.sync_run(&refs).await.unwrap();
    let keys: Vec<&str> = outcomes.iter().map(|o| o.idempotency_key.as_deref().unwrap()).collect();
    assert_eq!(
        keys,
        [
            "creditmemo.created:4201",
            "invoice.paid:3201",
            "invoice.paid:3202",
            "invoice.created:3202",
            "invoice.created:3201"
        ]
    );
    assert!(outcomes.iter().all(|o| o.sync_status == SyncStatus::Synced), "{outcomes:?}");
    let org = sim.org(XERO_DEMO_TENANT).unwrap();
    for number in ["MAG-000003201", "MAG-000003202"] {
        let inv = org.invoices.iter().find(|d| d.number == number).unwrap();
        assert_eq!(inv.outstanding(), Decimal::ZERO, "{number} paid after it was posted");
    }
    // The memo came before both the invoice and its payment; released after the invoice, the
    // payment goes first (Magento refunds only what was paid), so the memo finds the invoice
    // settled and its 12.00 is refunded in cash from the payment's bank.
    let note = org.credit_notes.iter().find(|d| d.number == "MAG-000004201").unwrap();
    assert_eq!(note.outstanding(), Decimal::ZERO);
    let refunds: Vec<_> = org.payments.iter().filter(|p| p.kind == "ARCREDITPAYMENT").collect();
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].amount, Decimal::new(1200, 2));
    assert_eq!(outcomes[0].message.as_deref(), Some("refunded 12.00 from 090"));
}

#[tokio::test]
async fn a_spent_daily_budget_makes_events_wait_in_line_never_dead_letter() {
    // An organisation with 7 calls left today, on the test's clock: the reference data takes 4,
    // the first invoice 3 (look its contact up, create it, post the invoice).
    let c = clock();
    let sim = XeroSimulator::demo_on(
        XeroSimConfig { per_day: Some(7), per_minute: None, ..XeroSimConfig::default() },
        Arc::new(c.clone()),
    );
    let (engine, store, _server, _dir) = engine(&sim, &c).await;
    let engine = engine.with_config(EngineConfig { max_attempts: 1, ..EngineConfig::default() });
    let mut outcomes = Vec::new();
    for i in 0..4u64 {
        outcomes.push(engine.sync_line(&invoice(5000 + i, 40 + i, false)).await.unwrap());
    }
    // The first invoice fits; Xero's answer says nothing is left, so the next ones are not sent.
    assert_eq!(outcomes[0].sync_status, SyncStatus::Synced, "{:?}", outcomes[0]);
    let waiting = &outcomes[1];
    assert_eq!(
        (waiting.sync_status, waiting.error_code),
        (SyncStatus::Failed, Some(ErrorCode::RateLimited)),
        "{waiting:?}"
    );
    let message = waiting.message.clone().unwrap_or_default();
    assert!(message.contains("daily") && message.contains("waits in line"), "{message}");
    // With max_attempts 1, a retryable failure would dead-letter; a deferral stays queued.
    let run = store.find_by_key(XERO_DEMO_TENANT, "invoice.created:5001").await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Queued);
    let next = run.next_attempt_at.unwrap();
    assert!(next > c.now() + chrono::Duration::hours(20), "waits for the day window: {next}");
    assert_eq!(store.counts(XERO_DEMO_TENANT).await.unwrap().get(&RunStatus::DeadLettered), None);
    // The operator sees why.
    let waiting_runs = store.waiting(XERO_DEMO_TENANT, 10).await.unwrap();
    assert!(waiting_runs.iter().any(|r| r.idempotency_key == "invoice.created:5001"));
    // A day later they go through.
    c.advance(chrono::Duration::hours(25));
    let later = engine.process_due(10).await.unwrap();
    assert_eq!(later.len(), 3, "the three waiting invoices are due again");
    assert!(later.iter().all(|(_, o)| o.sync_status == SyncStatus::Synced), "{later:?}");
    assert_eq!(sim.org(XERO_DEMO_TENANT).unwrap().invoices.len(), 4);
    let _ = Duration::ZERO;
}

/// Issue 12 on Xero: an invoice selling a 50.00 gift card, 20.00 of it paid by gift card, and a
/// credit memo with a pro-rata adjustment refund, through the engine into the Xero simulator.
#[tokio::test]
async fn gift_cards_tenders_and_pro_rata_adjustments_reach_xero_as_charged() {
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    sim.with_state(|s| {
        s.orgs.get_mut(XERO_DEMO_TENANT).unwrap().accounts.push(byte8_ledger_simulators::xero::XAccount {
            id: "acc-gift".into(),
            code: Some("835".into()),
            name: "Gift card liability".into(),
            kind: "CURRLIAB".into(),
            currency: None,
            enable_payments: false,
        })
    });
    let c = clock();
    let server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("state.db"), None).await.unwrap());
    let provider = xero::builder(&server)
        .with_limits(byte8_ledger_core::providers::xero::XeroLimits { per_minute: 0, ..Default::default() })
        .with_clock(Arc::new(c.clone()))
        .build()
        .unwrap();
    let mut p = policy();
    p.gift_card_ledger_account_id = Some("835".into());
    p.adjustment_tax_treatment = byte8_ledger_core::policy::AdjustmentTaxTreatment::ProRata;
    let engine = SyncEngine::new(
        Arc::new(provider) as Arc<dyn AccountingProvider>,
        Arc::clone(&store) as Arc<dyn Store>,
        XERO_DEMO_TENANT,
        p,
        Arc::new(c.clone()),
    );
    // 30.00 (widgets and shipping, 5.00 VAT) + a 50.00 gift card = 80.00; 20.00 paid by gift card.
    let mut line: serde_json::Value = serde_json::from_str(&invoice(9001, 3, false)).unwrap();
    let e = &mut line["entity"];
    e["lines"].as_array_mut().unwrap().push(json!({"sku": "GC-50", "name": "Gift card", "qty": 1, "unit_price": "50.00",
        "line_subtotal": "50.00", "line_tax": "0.00", "line_total": "50.00", "tax_rate": null, "product_type": "giftcard"}));
    e["subtotal"] = json!("70.00");
    e["grand_total"] = json!("60.00");
    e["tenders"] = json!({"gift_cards_amount": "20.00"});
    let o = engine.sync_line(&line.to_string()).await.unwrap();
    assert_eq!(o.sync_status, SyncStatus::Synced, "{o:?}");
    // A memo of one widget (12.00) plus an adjustment refund of 12.00 at 20 %: 10.00 + 2.00.
    let mut m: serde_json::Value = serde_json::from_str(&memo(9101, 9001, 3)).unwrap();
    m["entity"]["adjustment_positive"] = json!("12.00");
    m["entity"]["grand_total"] = json!("24.00");
    let o = engine.sync_line(&m.to_string()).await.unwrap();
    assert_eq!(o.sync_status, SyncStatus::Synced, "{o:?}");

    let org = sim.org(XERO_DEMO_TENANT).unwrap();
    let inv = org.invoices.iter().find(|d| d.kind == "ACCREC").unwrap();
    // Net 20.00 + 5.00 + 50.00 − 20.00 = 55.00; VAT as charged 5.00; total 60.00.
    assert_eq!(
        (inv.sub_total, inv.total_tax, inv.total),
        (Decimal::new(5500, 2), Decimal::new(500, 2), Decimal::new(6000, 2))
    );
    let on_gift: Vec<(String, String)> = inv
        .lines
        .iter()
        .filter(|l| l["AccountCode"] == "835")
        .map(|l| (l["Description"].as_str().unwrap().to_owned(), l["TaxType"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        on_gift,
        [("Gift card".to_owned(), "NONE".to_owned()), ("Gift card redeemed".to_owned(), "NONE".to_owned())]
    );
    let cn = org.credit_notes.iter().find(|d| d.kind == "ACCRECCREDIT").unwrap();
    assert_eq!(
        (cn.sub_total, cn.total_tax, cn.total),
        (Decimal::new(2000, 2), Decimal::new(400, 2), Decimal::new(2400, 2))
    );
}

/// Issue 18 over the Xero simulator: the buyer's VAT number on the order's billing address
/// (`vat_id`, typed with spaces) reaches the Xero contact as `TaxNumber`, normalised.
#[tokio::test]
async fn the_buyers_vat_number_reaches_the_xero_contact_as_tax_number() {
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    let c = clock();
    let (engine, _store, _server, _dir) = engine(&sim, &c).await;
    let mut event: serde_json::Value = serde_json::from_str(&invoice(7001, 71, false)).unwrap();
    event["entity"]["billing_address"] = json!({"kind": "billing", "street": ["1 High Street"], "city": "London",
        "postcode": "SW1A 1AA", "country_id": "GB", "vat_id": "gb 123 4567 89"});
    let o = engine.sync_line(&event.to_string()).await.unwrap();
    assert_eq!(o.sync_status, SyncStatus::Synced, "{o:#?}");
    let org = sim.org(XERO_DEMO_TENANT).unwrap();
    let contact = org.contacts.iter().find(|k| k.number.as_deref() == Some("M71")).expect("the buyer's contact");
    assert_eq!(contact.json["TaxNumber"], json!("GB123456789"), "{}", contact.json);
    // A buyer without one: no TaxNumber at all.
    let o = engine.sync_line(&invoice(7002, 72, false)).await.unwrap();
    assert_eq!(o.sync_status, SyncStatus::Synced, "{o:#?}");
    let org = sim.org(XERO_DEMO_TENANT).unwrap();
    let contact = org.contacts.iter().find(|k| k.number.as_deref() == Some("M72")).expect("the buyer's contact");
    assert!(contact.json.get("TaxNumber").is_none(), "{}", contact.json);
}

#[tokio::test]
async fn each_run_of_a_batch_keeps_its_batchs_exchanges_and_its_own_snapshot() {
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    let c = clock();
    let (engine, store, _server, _dir) = engine(&sim, &c).await;
    for i in 0..3u64 {
        engine.submit(&invoice(2000 + i, 7, false)).await.unwrap();
    }
    let done = engine.process_due(10).await.unwrap();
    assert!(done.iter().all(|(_, o)| o.sync_status == SyncStatus::Synced), "{done:?}");
    assert_eq!(sim.requests().get("PUT /Invoices"), Some(&1), "one batch");
    for (i, (run, _)) in done.iter().enumerate() {
        let attempts = store.attempts(run.id).await.unwrap();
        let puts: Vec<_> = attempts[0]
            .exchanges
            .iter()
            .filter(|e| e.method == "PUT" && e.url.starts_with("/api.xro/2.0/Invoices"))
            .collect();
        assert_eq!(puts.len(), 1, "the batch's request, on every run of it");
        assert_eq!(puts[0].status, Some(200));
        let sent = puts[0].request_body.as_deref().unwrap();
        for n in 0..3u64 {
            assert!(sent.contains(&format!("{:09}", 2000 + n)), "the batch carried every invoice: {sent}");
        }
        let snapshot = attempts[0].snapshot.as_ref().expect("the run's own entity").to_value();
        assert_eq!(snapshot["increment_id"], format!("{:09}", 2000 + i as u64));
        let text = serde_json::to_string(&attempts).unwrap();
        assert!(!text.contains("xero-access-") && !text.contains("xero-refresh-"), "no credential kept: {text}");
    }
    // The store keeps the batch's requests once: the business's count is what Xero served (its
    // API calls, which its limits count), not once per run of the batch.
    let counted = store.ledger_requests(XERO_DEMO_TENANT, c.now() - chrono::Duration::hours(1)).await.unwrap();
    assert_eq!(counted.requests, sim.api_calls(), "{:?}", sim.requests());
    assert_eq!(counted.rate_limited, 0);
}
