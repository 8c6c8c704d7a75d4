//! The reduced chaos soak that CI runs: `byte8-ledger sync` as a child process, killed at random
//! moments and restarted on the same state, against a simulator injecting 5xx answers,
//! commit-then-500 answers, 429 bursts and access tokens that expire every two seconds. Nothing may
//! be lost or doubled and every total must match Magento's.
#![cfg(all(feature = "cli", feature = "simulator"))]

use std::time::Duration;

use byte8_ledger_core::simulator::{
    FaultRates,
    soak::{self, SoakConfig},
    workload::WorkloadConfig,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduced_chaos_soak_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let config = SoakConfig {
        binary: env!("CARGO_BIN_EXE_byte8-ledger").into(),
        dir: dir.path().to_owned(),
        workload: WorkloadConfig { seed: 3, events: 300, customers: 60, products: 15, ..WorkloadConfig::default() },
        kills: 4,
        kill_after: (Duration::from_millis(300), Duration::from_millis(2500)),
        faults: FaultRates { error_before: 0.04, error_after_commit: 0.04, throttle: 0.03 },
        access_token_ttl: Duration::from_secs(2),
        seed: 11,
        final_passes: 4,
    };
    let report = soak::run(&config).await.expect("soak ran");
    println!("{report:#?}");
    assert!(report.is_clean(), "{:#?}", report.problems);
    assert_eq!(report.duplicates, 0);
    assert_eq!(report.lost, 0);
    assert_eq!(report.wrong_totals, 0);
    assert!(report.kills > 0, "the soak must actually kill the process");
    assert!(report.found_once > 0);
    // Faults were really injected.
    let posts: u64 = report.requests.iter().filter(|(k, _)| k.starts_with("POST")).map(|(_, n)| *n).sum();
    assert!(posts > 0);
}
