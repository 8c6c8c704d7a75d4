//! Call economy: how many Sage requests the engine spends per Magento event, next to the physical
//! minimum and to a naive strategy run in the same process on the same stream.
//!
//! The stream is a realistic mix (`simulator::workload`): new and returning customers in GBP, EUR
//! and USD, guests, invoices of 1–20 lines, payments (most mapped), credit memos, product upserts
//! with stock changes. Both strategies post into their own Sage simulator over HTTP.
//!
//! - **engine**: this crate's `SyncEngine` (cross-reference cache, payment with its allocation
//!   inline, contact and items resolved once).
//! - **naive**: looks up the contact and every item before every document, posts the payment and
//!   its allocation as two requests, looks the invoice up before paying or crediting it.
//!
//! Physical minimum: 1 request per synced invoice, payment and product, and per credit memo its
//! necessary writes — the note, the allocation when its invoice has something outstanding, the
//! cash refund of what is left when the invoice was paid; 1 per customer upsert that had anything
//! to write, 0 for a skipped event. (Creating a new customer's contact is not counted in it: the
//! ratio shows what contacts, look-ups and reads cost above it.)
//!
//! Run: `cargo run --release -p byte8-ledger-simulators --example bench_sync -- [EVENTS] [SEED]` (default 5000 events, seed 7).

use std::{collections::BTreeMap, sync::Arc, time::Instant};

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet},
    canonical::{Entity, Event, EventKind},
    clock::{Clock, SystemClock},
    engine::SyncEngine,
    http::RateConfig,
    identity::{ContactSubject, reference_candidates},
    outcome::SyncStatus,
    plan::DocumentKind,
    policy::{BankDecision, SyncPolicy},
    providers::{
        AccountingProvider, AllocationRequest, ContactFor, ContactRequest, CreditNoteRequest, InvoiceRequest, ItemKind,
        ItemLink, ItemRequest, PaymentRequest, StockMovementRequest,
        sage::{SageBuilder, SageProvider, transform},
    },
    store::memory::MemoryStore,
};
use byte8_ledger_simulators::{
    DEMO_REFRESH_TOKEN, SageSimulator, SimConfig, SimServer,
    workload::{WORKLOAD_POLICY, Workload, WorkloadConfig},
};
use rust_decimal::Decimal;
use secrecy::SecretString;

async fn sage(server: &SimServer) -> Arc<SageProvider> {
    Arc::new(
        SageBuilder::new()
            .with_client_id("demo-client")
            .with_client_secret(SecretString::from("demo-secret".to_owned()))
            .with_business_id("demo-business")
            .with_base_url(server.base_url())
            .with_token_url(server.token_url())
            .with_token_store(Arc::new(MemoryTokenStore::new(Some(TokenSet::from_refresh_token(SecretString::from(
                DEMO_REFRESH_TOKEN.to_owned(),
            ))))))
            .with_rate(RateConfig { requests_per_minute: 0, burst: 0 })
            .build()
            .expect("provider"),
    )
}

/// Per event type: (events, requests, minimum, steady-state events, steady-state requests).
#[derive(Debug, Default, Clone, Copy)]
struct Tally {
    events: u64,
    requests: u64,
    minimum: u64,
    steady_events: u64,
    steady_requests: u64,
    steady_minimum: u64,
}

fn kind_of(line: &str) -> String {
    Event::parse(line).map(|e| e.event.as_str().to_owned()).unwrap_or_else(|_| "unreadable".into())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(5_000);
    let seed = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(7);
    let workload = Workload::generate(&WorkloadConfig { seed, events, ..WorkloadConfig::default() });
    let policy = SyncPolicy::from_json(WORKLOAD_POLICY).expect("policy");
    println!("bench_sync: {} events (seed {seed})", workload.lines.len());

    // ---- engine ----
    let sim = SageSimulator::demo(SimConfig::default());
    let server = sim.serve().await.expect("simulator");
    let provider = sage(&server).await;
    let engine = SyncEngine::new(
        Arc::clone(&provider) as Arc<dyn AccountingProvider>,
        Arc::new(MemoryStore::new()),
        "demo-business",
        policy.clone(),
        Arc::new(SystemClock),
    );
    provider.reference_data(false).await.expect("reference");
    provider.stats().reset();
    let mut engine_tally: BTreeMap<String, Tally> = BTreeMap::new();
    // Per event type: requests per endpoint (what the figures are made of).
    let mut endpoints: BTreeMap<String, BTreeMap<String, u64>> = BTreeMap::new();
    let started = Instant::now();
    let mut synced = 0u64;
    for line in &workload.lines {
        let before = provider.stats().by_endpoint();
        let total_before: u64 = before.values().sum();
        let outcome = engine.sync_line(line).await.expect("outcome");
        let after = provider.stats().by_endpoint();
        let used = after.values().sum::<u64>() - total_before;
        let delta = |k: &str| after.get(k).copied().unwrap_or(0) - before.get(k).copied().unwrap_or(0);
        let kind = kind_of(line);
        let per_endpoint = endpoints.entry(kind.clone()).or_default();
        for (k, v) in &after {
            let d = v - before.get(k).copied().unwrap_or(0);
            if d > 0 {
                *per_endpoint.entry(k.clone()).or_default() += d;
            }
        }
        let t = engine_tally.entry(kind.clone()).or_default();
        t.events += 1;
        t.requests += used;
        if outcome.sync_status != SyncStatus::Synced {
            continue;
        }
        synced += 1;
        let allocated = delta("POST /contact_allocations");
        let minimum = match kind.as_str() {
            // The note, its allocation, and the cash refund of what no allocation settled
            // (`CUSTOMER_REFUND`, a write of its own): each a necessary write.
            "creditmemo.created" => 1 + allocated + delta("POST /contact_payments"),
            "customer.upserted" => u64::from(used > 0),
            _ => 1,
        };
        t.minimum += minimum;
        // Steady state: nothing had to be created or looked up first (contact and items known).
        let contact_work = delta("GET /contacts") + delta("POST /contacts");
        if contact_work == 0 && kind != "product.upserted" && kind != "customer.upserted" {
            t.steady_events += 1;
            t.steady_requests += used;
            t.steady_minimum += minimum;
        }
    }
    let engine_secs = started.elapsed().as_secs_f64();
    let engine_total: u64 = engine_tally.values().map(|t| t.requests).sum();
    server.stop().await;

    // ---- naive ----
    let sim_n = SageSimulator::demo(SimConfig::default());
    let server_n = sim_n.serve().await.expect("simulator");
    let naive = sage(&server_n).await;
    let reference = naive.reference_data(false).await.expect("reference");
    naive.stats().reset();
    let mut naive_tally: BTreeMap<String, u64> = BTreeMap::new();
    let mut invoices: BTreeMap<u64, (String, String, Decimal)> = BTreeMap::new(); // magento id → (doc, contact, outstanding)
    let started = Instant::now();
    for line in &workload.lines {
        let before = naive.stats().total();
        let Ok(event) = Event::parse(line) else { continue };
        naive_one(&naive, &policy, &reference, &event, &mut invoices).await;
        *naive_tally.entry(event.event.as_str().to_owned()).or_default() += naive.stats().total() - before;
    }
    let naive_secs = started.elapsed().as_secs_f64();
    let naive_total: u64 = naive_tally.values().sum();
    server_n.stop().await;

    println!();
    println!(
        "{:<20} {:>7} {:>10} {:>9} {:>9} {:>8} | {:>10} {:>9} {:>8}",
        "event", "events", "engine", "req/evt", "minimum", "ratio", "naive", "req/evt", "naive/eng"
    );
    for (kind, t) in &engine_tally {
        let n = naive_tally.get(kind).copied().unwrap_or(0);
        let per = |r: u64, e: u64| if e == 0 { 0.0 } else { r as f64 / e as f64 };
        println!(
            "{kind:<20} {:>7} {:>10} {:>9.3} {:>9} {:>8.3} | {:>10} {:>9.3} {:>8.2}",
            t.events,
            t.requests,
            per(t.requests, t.events),
            t.minimum,
            per(t.requests, t.minimum),
            n,
            per(n, t.events),
            per(n, t.requests)
        );
    }
    let all_events: u64 = engine_tally.values().map(|t| t.events).sum();
    let all_minimum: u64 = engine_tally.values().map(|t| t.minimum).sum();
    let all_naive: u64 = naive_tally.values().sum();
    println!(
        "{:<20} {:>7} {:>10} {:>9.3} {:>9} {:>8.3} | {:>10} {:>9.3} {:>8.2}",
        "all",
        all_events,
        engine_total,
        engine_total as f64 / all_events.max(1) as f64,
        all_minimum,
        engine_total as f64 / all_minimum.max(1) as f64,
        all_naive,
        all_naive as f64 / all_events.max(1) as f64,
        all_naive as f64 / engine_total.max(1) as f64
    );
    println!();
    println!("steady state (contact and items already known):");
    for (kind, t) in engine_tally.iter().filter(|(_, t)| t.steady_events > 0) {
        println!(
            "  {kind:<20} {:>6} events  {:>6} requests  {:.3} per event  minimum {:.3}  ratio {:.3}",
            t.steady_events,
            t.steady_requests,
            t.steady_requests as f64 / t.steady_events as f64,
            t.steady_minimum as f64 / t.steady_events as f64,
            t.steady_requests as f64 / t.steady_minimum.max(1) as f64
        );
    }
    println!();
    println!("engine requests by endpoint:");
    for (kind, per) in &endpoints {
        let list: Vec<String> = per.iter().map(|(k, v)| format!("{k} {v}")).collect();
        println!("  {kind:<20} {}", list.join(", "));
    }
    println!();
    println!(
        "total: engine {engine_total} requests ({synced} events synced, {engine_secs:.1} s), naive {naive_total} requests ({naive_secs:.1} s): naive/engine = {:.2}",
        naive_total as f64 / engine_total.max(1) as f64
    );
}

/// The naive strategy: look everything up every time, payment and allocation as two requests.
async fn naive_one(
    sage: &SageProvider,
    policy: &SyncPolicy,
    reference: &byte8_ledger_core::reference::ReferenceData,
    event: &Event,
    invoices: &mut BTreeMap<u64, (String, String, Decimal)>,
) {
    let base = reference.business.base_currency;
    let key = event.idempotency_key.as_str();
    let Some(entity) = &event.entity else { return };
    let contact = |c: &byte8_ledger_core::canonical::MagentoContact, currency| {
        let subject = ContactSubject::of(c);
        let refs = reference_candidates(&subject, currency, base, "WEBSALES");
        (refs[0].clone(), subject)
    };
    async fn contact_id(
        sage: &SageProvider,
        c: &byte8_ledger_core::canonical::MagentoContact,
        currency: byte8_ledger_core::money::Currency,
        reference: &str,
        policy: &SyncPolicy,
    ) -> Option<String> {
        if let Ok(Some(found)) = sage.find_contact(reference).await {
            return Some(found.id);
        }
        let request =
            ContactRequest { contact: ContactFor::Customer(c), currency, reference, policy, idempotency_key: None };
        sage.create_contact(&request).await.ok().map(|r| r.id)
    }
    async fn items(sage: &SageProvider, skus: Vec<String>) -> BTreeMap<String, ItemLink> {
        let mut out = BTreeMap::new();
        for sku in skus {
            if let Ok(Some(found)) = sage.find_item(ItemKind::Product, &sku).await {
                out.insert(sku, ItemLink { id: found.id, kind: ItemKind::Product });
            }
        }
        out
    }
    match (event.event, entity) {
        (EventKind::InvoiceCreated, Entity::Invoice(inv)) => {
            let (r, _) = contact(&inv.customer, inv.currency);
            let Some(cid) = contact_id(sage, &inv.customer, inv.currency, &r, policy).await else { return };
            let links = items(sage, inv.lines.iter().map(|l| l.sku.clone()).collect()).await;
            let req = InvoiceRequest { invoice: inv, policy, contact_id: &cid, items: &links, idempotency_key: key };
            if let Ok(doc) = sage.post_invoice(&req).await {
                invoices.insert(inv.magento_id, (doc.id, cid, inv.grand_total));
            }
        }
        (EventKind::InvoicePaid, Entity::Payment(pay)) => {
            let bank = match policy.bank_account_for(Some(&pay.method)) {
                BankDecision::Mapped(b) | BankDecision::Default(b) => b,
                _ => return,
            };
            let reference = transform::document_reference(policy, &pay.invoice_increment_id);
            let Ok(Some(doc)) = sage.find_document(DocumentKind::Invoice, &reference).await else { return };
            let Some(cid) = doc.contact_id.clone() else { return };
            // The contact check a naive connector makes before paying: one `GET /contacts`. Only
            // its cost is modelled (the payment has no customer of its own to look up by).
            let _ = sage.find_contact("lookup").await;
            let outstanding = doc.outstanding.unwrap_or_default();
            let req = PaymentRequest {
                payment: pay,
                policy,
                contact_id: &cid,
                invoice_id: &doc.id,
                bank_account_id: &bank,
                invoice_base_to_order_rate: None,
                outstanding: Some(Decimal::ZERO),
                idempotency_key: key,
            };
            let Ok(t) = sage.post_payment(&req).await else { return };
            let amount = outstanding.min(pay.amount);
            if amount > Decimal::ZERO {
                let _ = sage
                    .allocate(&AllocationRequest {
                        contact_id: &cid,
                        invoice_id: &doc.id,
                        credit_note_id: &t.id,
                        amount,
                        date: pay.captured_at.date_naive(),
                        idempotency_key: key,
                    })
                    .await;
            }
        }
        (EventKind::CreditMemoCreated, Entity::CreditMemo(memo)) => {
            let Some(inv_id) = memo.invoice_id else { return };
            let Some((_, cid, _)) = invoices.get(&inv_id).cloned() else { return };
            let (r, _) = contact(&memo.customer, memo.currency);
            let _ = sage.find_contact(&r).await;
            let inc = memo.invoice_increment_id.clone().unwrap_or_default();
            let Ok(Some(doc)) =
                sage.find_document(DocumentKind::Invoice, &transform::document_reference(policy, &inc)).await
            else {
                return;
            };
            let links = items(sage, memo.lines.iter().map(|l| l.sku.clone()).collect()).await;
            let req = CreditNoteRequest {
                memo,
                policy,
                contact_id: &cid,
                items: &links,
                invoice_addresses: None,
                idempotency_key: key,
            };
            let Ok(note) = sage.post_credit_note(&req).await else { return };
            let amount = doc.outstanding.unwrap_or_default().min(note.total.unwrap_or_default());
            if amount > Decimal::ZERO {
                let _ = sage
                    .allocate(&AllocationRequest {
                        contact_id: &cid,
                        invoice_id: &doc.id,
                        credit_note_id: &note.id,
                        amount,
                        date: memo.created_at.date_naive(),
                        idempotency_key: key,
                    })
                    .await;
            }
        }
        (EventKind::CustomerUpserted, Entity::Contact(c)) => {
            let (r, _) = contact(c, base);
            let request = ContactRequest {
                contact: ContactFor::Customer(c),
                currency: base,
                reference: &r,
                policy,
                idempotency_key: None,
            };
            match sage.find_contact(&r).await {
                Ok(Some(found)) => {
                    let _ = sage.update_contact(&found.id, &request).await;
                }
                _ => {
                    let _ = sage.create_contact(&request).await;
                }
            }
        }
        (EventKind::ProductUpserted, Entity::Product(p)) => {
            let Ok(kind) = transform::item_kind(p, policy) else { return };
            let request = ItemRequest { product: p, kind, policy, idempotency_key: None };
            let id = match sage.find_item(kind, &p.sku).await {
                Ok(Some(found)) => {
                    let _ = sage.update_item(&found.id, &request).await;
                    found.id
                }
                _ => match sage.create_item(&request).await {
                    Ok(r) => r.id,
                    Err(_) => return,
                },
            };
            if kind == ItemKind::StockItem
                && let Ok(item) = sage.get_item(kind, &id).await
            {
                let _ = sage
                    .post_stock_movement(&StockMovementRequest {
                        item_id: &id,
                        product: p,
                        ledger_quantity: item.quantity_in_stock.unwrap_or_default(),
                        date: SystemClock.now().date_naive(),
                        idempotency_key: None,
                    })
                    .await;
            }
        }
        _ => {}
    }
}
