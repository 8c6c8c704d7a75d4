//! Throughput at Sage's rate limit: events a minute per business as a share of the limit, 429
//! answers, and event-to-outcome latency (p50/p99), for one business and then for many at once on
//! one machine; and the time to build a business's reference cache.
//!
//! The simulator answers after a realistic latency (uniform 100–150 ms by default) and enforces a
//! per-business limit (200 requests in any 60 s by default) with 429 + `Retry-After`. Each business
//! has its own engine, provider and client-side limiter, and syncs its own realistic stream.
//!
//! Run: `cargo run --release -p byte8-ledger-simulators --example bench_throughput -- [SECONDS] [BUSINESSES] [LIMIT]`
//! (defaults: 120 s, 50 businesses, 200 a minute).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet},
    clock::{Clock, SystemClock},
    engine::SyncEngine,
    http::{RateConfig, RetryConfig},
    outcome::SyncStatus,
    policy::SyncPolicy,
    providers::{
        AccountingProvider,
        sage::{SageBuilder, SageProvider},
    },
    reference::ReferenceData,
    store::memory::MemoryStore,
};
use byte8_ledger_simulators::{
    DEMO_REFRESH_TOKEN, SageSimulator, SimConfig,
    workload::{WORKLOAD_POLICY, Workload, WorkloadConfig},
};
use secrecy::SecretString;

fn provider(server: &SimServerRef, business: &str, limit: u32) -> Arc<SageProvider> {
    Arc::new(
        SageBuilder::new()
            .with_client_id("demo-client")
            .with_client_secret(SecretString::from("demo-secret".to_owned()))
            .with_business_id(business)
            .with_base_url(server.base.clone())
            .with_token_url(server.token.clone())
            .with_token_store(Arc::new(MemoryTokenStore::new(Some(TokenSet::from_refresh_token(SecretString::from(
                format!("{DEMO_REFRESH_TOKEN}-{business}"),
            ))))))
            .with_rate(RateConfig { requests_per_minute: limit, burst: 10 })
            .with_retry(RetryConfig { max_retries: 8, ..RetryConfig::default() })
            .build()
            .expect("provider"),
    )
}

/// What one business did in the measured window: the second half of the run, once its catalogue
/// and first customers are in the ledger (steady state).
#[derive(Debug, Default)]
struct Run {
    events: u64,
    requests: u64,
    latencies: Vec<Duration>,
    window: Duration,
    /// Outcomes over the whole run: failed (dead-lettered or waiting to retry) and all.
    failed: u64,
    outcomes: u64,
}

async fn run_business(server: &SimServerRef, business: String, limit: u32, seconds: u64, seed: u64) -> Run {
    let sage = provider(server, &business, limit);
    let policy = SyncPolicy::from_json(WORKLOAD_POLICY).expect("policy");
    let engine = SyncEngine::new(
        Arc::clone(&sage) as Arc<dyn AccountingProvider>,
        Arc::new(MemoryStore::new()),
        business.clone(),
        policy,
        Arc::new(SystemClock),
    );
    let workload = Workload::generate(&WorkloadConfig { seed, events: 5_000, ..WorkloadConfig::default() });
    // Warm the reference cache and the token outside the measured window.
    sage.reference_data(false).await.expect("reference");
    sage.stats().reset();
    let start = Instant::now();
    let half = start + Duration::from_secs(seconds / 2);
    let deadline = start + Duration::from_secs(seconds);
    let mut run = Run::default();
    let mut window_start: Option<(Instant, u64)> = None;
    for line in &workload.lines {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        if window_start.is_none() && now >= half {
            window_start = Some((now, sage.stats().total()));
        }
        let outcome = engine.sync_line(line).await.expect("outcome");
        run.outcomes += 1;
        if outcome.sync_status == SyncStatus::Failed {
            run.failed += 1;
        }
        if window_start.is_some() {
            run.latencies.push(now.elapsed());
            run.events += 1;
        }
    }
    if let Some((t, requests)) = window_start {
        run.requests = sage.stats().total() - requests;
        run.window = t.elapsed();
    }
    run
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn pct(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    // Nearest-rank percentile on integer arithmetic (p in per mille).
    let per_mille = (p * 1000.0) as usize;
    let idx = ((v.len() - 1) * per_mille + 500) / 1000;
    v[idx.min(v.len() - 1)]
}

fn business_reference(id: &str) -> ReferenceData {
    let mut r = ReferenceData::demo_uk(SystemClock.now());
    r.business.id = id.to_owned();
    r.business.name = format!("Shop {id}");
    r
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let seconds: u64 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(120);
    let businesses: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(50);
    let limit: u32 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(200);
    let config = SimConfig {
        requests_per_minute: Some(limit),
        latency: Some((Duration::from_millis(100), Duration::from_millis(150))),
        ..SimConfig::default()
    };
    let sim = SageSimulator::new(config);
    let ids: Vec<String> = (0..businesses.max(1)).map(|i| format!("business-{i:03}")).collect();
    for id in &ids {
        sim.add_business(business_reference(id));
        sim.with_state(|s| s.add_refresh_token(&format!("{DEMO_REFRESH_TOKEN}-{id}")));
    }
    sim.with_state(|s| s.add_refresh_token(&format!("{DEMO_REFRESH_TOKEN}-reference")));
    let running = sim.serve().await.expect("simulator");
    let server = SimServerRef { base: running.base_url(), token: running.token_url() };
    println!(
        "bench_throughput: simulator latency 100–150 ms, limit {limit} requests / 60 s per business, {seconds} s per measurement"
    );

    // Reference cache: a fresh business, token refresh included, then a refresh of a warm one.
    sim.add_business(business_reference("reference"));
    let sage = provider(&server, "reference", limit);
    let t0 = Instant::now();
    sage.reference_data(false).await.expect("reference");
    let cold = t0.elapsed();
    let t0 = Instant::now();
    sage.reference_data(true).await.expect("reference");
    let warm = t0.elapsed();
    println!(
        "reference cache: {} ms cold (token refresh + 9 endpoints fetched concurrently), {} ms refresh; Byte8 documents 3–5 s",
        cold.as_millis(),
        warm.as_millis()
    );

    // One business.
    let throttled_before = sim.with_state(|s| s.throttled);
    let mut one = run_business(&server, ids[0].clone(), limit, seconds, 11).await;
    let throttled = sim.with_state(|s| s.throttled) - throttled_before;
    let minutes = one.window.as_secs_f64() / 60.0;
    println!(
        "1 business (steady state, second half of the run): {:.0} events/min, {:.0} requests/min = {:.1} % of the limit, {} × 429, latency p50 {} ms p99 {} ms; {} of {} outcomes failed",
        one.events as f64 / minutes,
        one.requests as f64 / minutes,
        100.0 * one.requests as f64 / minutes / f64::from(limit),
        throttled,
        pct(&mut one.latencies, 0.5).as_millis(),
        pct(&mut one.latencies, 0.99).as_millis(),
        one.failed,
        one.outcomes,
    );

    // Many businesses at once.
    if businesses > 1 {
        let throttled_before = sim.with_state(|s| s.throttled);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for (i, id) in ids.iter().enumerate().skip(1) {
            let (s, id) = (server.clone(), id.clone());
            tasks.push(tokio::spawn(async move { run_business(&s, id, limit, seconds, 100 + i as u64).await }));
        }
        let mut runs = Vec::new();
        for t in tasks {
            runs.push(t.await.expect("task"));
        }
        let wall = started.elapsed().as_secs_f64() / 60.0;
        let throttled = sim.with_state(|s| s.throttled) - throttled_before;
        let rates: Vec<f64> = runs.iter().map(|r| r.requests as f64 / (r.window.as_secs_f64() / 60.0)).collect();
        let events: Vec<f64> = runs.iter().map(|r| r.events as f64 / (r.window.as_secs_f64() / 60.0)).collect();
        let mut all: Vec<Duration> = runs.iter_mut().flat_map(|r| r.latencies.drain(..)).collect();
        let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let max = rates.iter().copied().fold(0.0, f64::max);
        println!(
            "{} businesses at once: per business {:.0} events/min (min {:.0}), {:.0}–{:.0} requests/min = {:.1}–{:.1} % of each limit; {} × 429 in all; latency p50 {} ms p99 {} ms; {:.0} requests/min served in all ({:.1} min wall); {} of {} outcomes failed",
            runs.len(),
            events.iter().sum::<f64>() / events.len() as f64,
            events.iter().copied().fold(f64::INFINITY, f64::min),
            min,
            max,
            100.0 * min / f64::from(limit),
            100.0 * max / f64::from(limit),
            throttled,
            pct(&mut all, 0.5).as_millis(),
            pct(&mut all, 0.99).as_millis(),
            rates.iter().sum::<f64>(),
            wall,
            runs.iter().map(|r| r.failed).sum::<u64>(),
            runs.iter().map(|r| r.outcomes).sum::<u64>(),
        );
    }
    running.stop().await;
}

/// The URLs of a running simulator (shareable across tasks).
#[derive(Debug, Clone)]
struct SimServerRef {
    base: String,
    token: String,
}
