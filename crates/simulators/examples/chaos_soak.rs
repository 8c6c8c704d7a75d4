//! The full-size chaos soak: thousands of events synced by `byte8-ledger sync` child processes
//! that are killed (SIGKILL) at random moments and restarted on the same state, while the Sage
//! simulator injects 5xx answers, commit-then-500 answers, 429 bursts and access tokens that expire
//! every few seconds. Prints what the ledger holds against what Magento sent.
//!
//! Build the command first, then run:
//! `cargo build --release --bin byte8-ledger && cargo run --release -p byte8-ledger-simulators --example chaos_soak -- [EVENTS] [KILLS] [SEED]`
//! (defaults: 3000 events, 12 kills, seed 1). The reduced version runs in CI as `tests/chaos.rs`.

use std::time::Duration;

use byte8_ledger_simulators::{
    FaultRates,
    soak::{self, SoakConfig},
    workload::WorkloadConfig,
};

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let events = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3_000);
    let kills = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(12);
    let seed: u64 = args.get(3).and_then(|a| a.parse().ok()).unwrap_or(1);
    // The command sits next to the examples directory: target/<profile>/byte8-ledger.
    let exe = std::env::current_exe().expect("current exe");
    let binary = exe.parent().and_then(|d| d.parent()).map(|d| d.join("byte8-ledger")).expect("target dir");
    if !binary.exists() {
        eprintln!(
            "build the command first: cargo build --release --bin byte8-ledger ({} is missing)",
            binary.display()
        );
        std::process::exit(2);
    }
    let dir = tempfile_dir();
    let config = SoakConfig {
        binary,
        dir: dir.clone(),
        workload: WorkloadConfig { seed, events, ..WorkloadConfig::default() },
        kills,
        kill_after: (Duration::from_millis(500), Duration::from_secs(6)),
        faults: FaultRates { error_before: 0.03, error_after_commit: 0.03, throttle: 0.02, throttle_burst: 3 },
        access_token_ttl: Duration::from_secs(3),
        seed,
        final_passes: 5,
    };
    let started = std::time::Instant::now();
    let report = soak::run(&config).await.expect("soak");
    println!(
        "chaos soak: {} events, {} kills, {} sync processes, {:.0} s",
        report.events,
        report.kills,
        report.starts,
        started.elapsed().as_secs_f64()
    );
    println!("runs by status: {:?}", report.runs);
    println!(
        "ledger documents expected {}, found exactly once {}, duplicates {}, dead-lettered {}, lost {}, wrong totals {}, unexpected {}, unallocated payments {}, unallocated credit notes {}, duplicate contacts {}",
        report.expected_documents,
        report.found_once,
        report.duplicates,
        report.dead_lettered,
        report.lost,
        report.wrong_totals,
        report.unexpected,
        report.unallocated_payments,
        report.unallocated_credit_notes,
        report.duplicate_contacts
    );
    let posts: u64 = report.requests.iter().filter(|(k, _)| k.starts_with("POST")).map(|(_, n)| *n).sum();
    let all: u64 = report.requests.values().sum();
    println!(
        "Sage requests {all} ({posts} POST), 429 answers {}, 5xx before acting {}, 5xx after committing {}, token refreshes {}",
        report.throttled, report.errors_before_acting, report.errors_after_commit, report.refreshes
    );
    if report.is_clean() {
        println!("clean: nothing lost, dead-lettered, doubled or unexpected, every total right");
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("PROBLEMS (state kept in {}):", dir.display());
        for p in &report.problems {
            println!("  {p}");
        }
        std::process::exit(1);
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("byte8-chaos-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&d);
    d
}
