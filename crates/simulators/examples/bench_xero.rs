//! Xero call economy and throughput: how many Xero API calls the engine spends per Magento event
//! with batching (up to 50 documents a request) and without (one request per document), in one
//! run on the same streams, and how many events a minute get through under Xero's limit of 60
//! calls a minute per organisation.
//!
//! 1. **Back-fill**: the `invoice.created` events of a generated workload (new and returning
//!    customers, guests, GBP/EUR/USD, 1–20 lines), synced into a fresh Xero simulator. Requirement
//!    of issue 7: at most one request per 20 invoices with batching.
//! 2. **Mixed stream**: the whole workload (invoices, payments, credit memos, customers, products).
//! 3. **Throughput at 60 a minute**: the simulator enforces Xero's minute, concurrency and daily
//!    limits and the client paces itself to them (`XeroLimits::default`); the whole back-fill is
//!    synced batched, and its first invoices unbatched; the wall time gives invoices a minute.
//!
//! Calls are the Accounting API calls the simulator served (token refreshes and `/connections`
//! are not counted: Xero does not count them against the organisation's limits).
//!
//! Run: `cargo run -p byte8-ledger-simulators --example bench_xero -- [EVENTS] [SEED] [UNBATCHED_INVOICES]`
//! (default 3000 events, seed 7, 60 invoices for the unbatched throughput run).

use std::{sync::Arc, time::Instant};

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet},
    canonical::{Event, EventKind},
    clock::SystemClock,
    engine::SyncEngine,
    outcome::SyncStatus,
    policy::SyncPolicy,
    providers::{
        AccountingProvider,
        xero::{XeroBuilder, XeroLimits, XeroProvider},
    },
    store::memory::MemoryStore,
};
use byte8_ledger_simulators::{
    workload::{WORKLOAD_POLICY_XERO, Workload, WorkloadConfig},
    xero::{XERO_DEMO_REFRESH_TOKEN, XERO_DEMO_TENANT, XeroServer, XeroSimConfig, XeroSimulator},
};
use secrecy::SecretString;

fn provider(server: &XeroServer, max_batch: usize, limits: XeroLimits) -> XeroProvider {
    XeroBuilder::new()
        .with_client_id("demo-client")
        .with_client_secret(SecretString::from("demo-secret".to_owned()))
        .with_tenant_id(XERO_DEMO_TENANT)
        .with_base_url(server.base_url())
        .with_token_url(server.token_url())
        .with_connections_url(server.connections_url())
        .with_token_store(Arc::new(MemoryTokenStore::new(Some(TokenSet::from_refresh_token(SecretString::from(
            XERO_DEMO_REFRESH_TOKEN.to_owned(),
        ))))))
        .with_limits(limits)
        .with_max_batch(max_batch)
        .build()
        .expect("provider")
}

/// What one run cost.
struct Run {
    events: usize,
    synced: usize,
    calls: u64,
    by_endpoint: Vec<(String, u64)>,
    seconds: f64,
    throttled: u64,
}

async fn run(lines: &[&str], max_batch: usize, config: XeroSimConfig, limits: XeroLimits) -> Run {
    let sim = XeroSimulator::demo(config);
    let server = sim.serve().await.expect("simulator");
    let provider = Arc::new(provider(&server, max_batch, limits));
    let engine = SyncEngine::new(
        Arc::clone(&provider) as Arc<dyn AccountingProvider>,
        Arc::new(MemoryStore::new()),
        XERO_DEMO_TENANT,
        SyncPolicy::from_json(WORKLOAD_POLICY_XERO).expect("policy"),
        Arc::new(SystemClock),
    );
    let started = Instant::now();
    let mut synced = 0;
    for chunk in lines.chunks(max_batch.max(1)) {
        let outcomes = if max_batch > 1 {
            engine.sync_lines(chunk).await.expect("outcomes")
        } else {
            vec![engine.sync_line(chunk[0]).await.expect("outcome")]
        };
        synced += outcomes.iter().filter(|o| o.sync_status == SyncStatus::Synced).count();
    }
    let seconds = started.elapsed().as_secs_f64();
    let by_endpoint: Vec<(String, u64)> = sim
        .requests()
        .into_iter()
        .filter(|(k, _)| !k.ends_with("/connect/token") && !k.ends_with("/connections"))
        .collect();
    let throttled = sim.with_state(|s| s.throttled.values().sum());
    let calls = sim.api_calls();
    server.stop().await;
    Run { events: lines.len(), synced, calls, by_endpoint, seconds, throttled }
}

fn kind(line: &str) -> Option<EventKind> {
    Event::parse(line).ok().map(|e| e.event)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3_000);
    let seed = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(7);
    let unbatched_invoices: usize = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(60);
    let workload = Workload::generate(&WorkloadConfig { seed, events, ..WorkloadConfig::default() });
    let all: Vec<&str> = workload.lines.iter().map(String::as_str).collect();
    let backfill: Vec<&str> = all.iter().copied().filter(|l| kind(l) == Some(EventKind::InvoiceCreated)).collect();
    println!("bench_xero: {} events (seed {seed}), of which {} invoice.created", all.len(), backfill.len());

    // 1 and 2: calls per event, no limits (the count does not depend on pacing).
    let free = || XeroSimConfig::unlimited();
    println!();
    println!(
        "{:<34} {:>7} {:>7} {:>8} {:>10} {:>14}",
        "stream / strategy", "events", "synced", "calls", "calls/evt", "events/call"
    );
    let mut backfill_batched = None;
    let mut backfill_single = None;
    for (name, lines) in [("back-fill (invoice.created)", &backfill), ("mixed stream (all events)", &all)] {
        for (label, batch) in [("batched (50)", 50usize), ("one per request", 1)] {
            let r = run(lines, batch, free(), XeroLimits::unlimited()).await;
            println!(
                "{:<34} {:>7} {:>7} {:>8} {:>10.3} {:>14.1}",
                format!("{name}, {label}"),
                r.events,
                r.synced,
                r.calls,
                r.calls as f64 / r.events as f64,
                r.events as f64 / r.calls.max(1) as f64
            );
            if name.starts_with("back-fill") {
                if batch == 50 {
                    backfill_batched = Some(r);
                } else {
                    backfill_single = Some(r);
                }
            }
        }
    }
    if let Some(r) = &backfill_batched {
        println!();
        println!("back-fill, batched, by endpoint:");
        for (k, n) in &r.by_endpoint {
            println!("  {k:<28} {n:>6}");
        }
        let per = r.events as f64 / r.calls.max(1) as f64;
        println!(
            "  => {:.1} invoices per request (requirement: at least 20): {}",
            per,
            if per >= 20.0 { "met" } else { "NOT met" }
        );
    }

    // 3: throughput under Xero's limits (the simulator enforces 60/min, 5 at once, 5,000/day;
    // the client paces itself to the same).
    println!();
    println!("throughput under 60 calls a minute (real time; client and simulator both enforce Xero's limits):");
    let n = unbatched_invoices.min(backfill.len());
    for (label, batch, lines) in [("batched (50)", 50usize, &backfill[..]), ("one per request", 1, &backfill[..n])] {
        let r = run(lines, batch, XeroSimConfig::default(), XeroLimits::default()).await;
        println!(
            "  {label:<16} {:>5} invoices, {:>5} calls in {:>6.1} s = {:>5.1} calls/min, {:>7.1} invoices/min, 429s: {}",
            r.events,
            r.calls,
            r.seconds,
            r.calls as f64 * 60.0 / r.seconds,
            r.synced as f64 * 60.0 / r.seconds,
            r.throttled
        );
    }
    let per_day = |r: &Option<Run>| r.as_ref().map_or(0.0, |r| 5_000.0 * r.events as f64 / r.calls.max(1) as f64);
    println!(
        "  a day's budget (5,000 calls) at the back-fill's cost per invoice: batched ≈ {:.0} invoices, one per request ≈ {:.0}",
        per_day(&backfill_batched),
        per_day(&backfill_single)
    );
}
