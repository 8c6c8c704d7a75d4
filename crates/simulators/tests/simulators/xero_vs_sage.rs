//! The "done when": one event file syncs into the Sage simulator and into the Xero
//! simulator with matching outcomes wherever both ledgers support the feature — the same status,
//! skip reason and error class for every event — for `samples/events.jsonl` and for a generated
//! workload. Sage runs one event at a time; Xero runs the same lines in batches of 50
//! (`SyncEngine::sync_lines`), so the comparison also proves that batching changes no outcome.

use crate::support_xero as xero;

use std::sync::Arc;

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet},
    clock::SystemClock,
    engine::SyncEngine,
    http::RateConfig,
    outcome::{Outcome, SyncStatus},
    policy::SyncPolicy,
    providers::{AccountingProvider, sage::SageBuilder},
    store::memory::MemoryStore,
};
use byte8_ledger_simulators::{
    DEMO_REFRESH_TOKEN, SageSimulator, SimConfig,
    workload::{WORKLOAD_POLICY, WORKLOAD_POLICY_XERO, Workload, WorkloadConfig},
    xero::{XERO_DEMO_TENANT, XeroSimConfig, XeroSimulator},
};
use rust_decimal::Decimal;
use secrecy::SecretString;

const SAMPLE_EVENTS: &str = include_str!("../../../../samples/events.jsonl");
const SAGE_POLICY: &str = include_str!("../../../../samples/policy.json");

/// What must match: the event, its status, its skip reason, its error class.
fn key(o: &Outcome) -> (Option<String>, Option<String>, SyncStatus, Option<String>, Option<String>) {
    (
        o.idempotency_key.clone(),
        o.event.clone(),
        o.sync_status,
        o.skip_reason.clone(),
        o.error_code.map(|c| c.as_str().to_owned()),
    )
}

async fn through_sage(lines: &[&str], policy: &str) -> (Vec<Outcome>, SageSimulator) {
    let sim = SageSimulator::demo(SimConfig::default());
    let server = sim.serve().await.unwrap();
    let sage = SageBuilder::new()
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
        .unwrap();
    let engine = SyncEngine::new(
        Arc::new(sage) as Arc<dyn AccountingProvider>,
        Arc::new(MemoryStore::new()),
        "demo-business",
        SyncPolicy::from_json(policy).unwrap(),
        Arc::new(SystemClock),
    );
    let mut out = Vec::new();
    for line in lines {
        out.push(engine.sync_line(line).await.unwrap());
    }
    server.stop().await;
    (out, sim)
}

async fn through_xero(lines: &[&str], policy: &str) -> (Vec<Outcome>, XeroSimulator) {
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    let server = sim.serve().await.unwrap();
    let engine = SyncEngine::new(
        Arc::new(xero::provider(&server)) as Arc<dyn AccountingProvider>,
        Arc::new(MemoryStore::new()),
        XERO_DEMO_TENANT,
        SyncPolicy::from_json(policy).unwrap(),
        Arc::new(SystemClock),
    );
    let mut out = Vec::new();
    for chunk in lines.chunks(50) {
        out.extend(engine.sync_lines(chunk).await.unwrap());
    }
    server.stop().await;
    (out, sim)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_samples_have_the_same_outcomes_in_sage_and_xero() {
    let lines: Vec<&str> = SAMPLE_EVENTS.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let (sage, _) = through_sage(&lines, SAGE_POLICY).await;
    let (xero, sim) = through_xero(&lines, xero::XERO_POLICY).await;
    assert_eq!(sage.len(), lines.len());
    assert_eq!(xero.len(), lines.len());
    for (i, (s, x)) in sage.iter().zip(&xero).enumerate() {
        assert_eq!(key(s), key(x), "line {i}: Sage {s:?}\nXero {x:?}");
        assert_eq!((s.provider.as_str(), x.provider.as_str()), ("sage_accounting", "xero"));
    }
    // The counts the samples are built for (by hand: README's demo summary).
    let synced = xero.iter().filter(|o| o.sync_status == SyncStatus::Synced).count();
    let skipped = xero.iter().filter(|o| o.sync_status == SyncStatus::Skipped).count();
    assert_eq!((synced, skipped, lines.len() - synced - skipped), (14, 4, 3));
    // Xero holds one contact for every currency: Jane Doe (GBP and EUR invoices) is one contact.
    let org = sim.org(XERO_DEMO_TENANT).unwrap();
    assert_eq!(org.contacts.iter().filter(|c| c.number.as_deref() == Some("M5")).count(), 1);
    assert!(org.contacts.iter().all(|c| c.number.as_deref() != Some("M5E")), "no per-currency contact in Xero");
    // Every sales invoice totals Magento's grand_total: 000000101 = 54.99 (Magento's file).
    let inv = org.invoices.iter().find(|d| d.number == "MAG-000000101").unwrap();
    assert_eq!(inv.total, Decimal::new(5499, 2));
    assert_eq!(inv.status, "PAID");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generated_workload_has_the_same_outcomes_in_sage_and_xero() {
    let workload =
        Workload::generate(&WorkloadConfig { seed: 11, events: 400, customers: 60, ..WorkloadConfig::default() });
    let lines: Vec<&str> = workload.lines.iter().map(String::as_str).collect();
    let (sage, sage_sim) = through_sage(&lines, WORKLOAD_POLICY).await;
    let (xero, xero_sim) = through_xero(&lines, WORKLOAD_POLICY_XERO).await;
    let mut differences = Vec::new();
    for (i, (s, x)) in sage.iter().zip(&xero).enumerate() {
        if key(s) != key(x) {
            differences.push(format!(
                "line {i}: Sage {:?} / {:?}\n         Xero {:?} / {:?}",
                key(s),
                s.message,
                key(x),
                x.message
            ));
        }
    }
    assert!(
        differences.is_empty(),
        "{} of {} outcomes differ:\n{}",
        differences.len(),
        lines.len(),
        differences.join("\n")
    );
    // The same documents landed: as many sales invoices, with the same totals.
    let sage_biz = sage_sim.business("demo-business").unwrap();
    let org = xero_sim.org(XERO_DEMO_TENANT).unwrap();
    let mut sage_totals: Vec<(String, Decimal)> =
        sage_biz.invoices.iter().map(|d| (d.reference.clone(), d.total)).collect();
    let mut xero_totals: Vec<(String, Decimal)> =
        org.invoices.iter().filter(|d| d.kind == "ACCREC").map(|d| (d.number.clone(), d.total)).collect();
    sage_totals.sort();
    xero_totals.sort();
    assert_eq!(sage_totals, xero_totals);
    assert!(xero_totals.len() > 50, "the workload must post a real number of invoices ({})", xero_totals.len());
}
