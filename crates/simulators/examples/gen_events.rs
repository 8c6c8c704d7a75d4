//! Prints a realistic event stream (JSON lines) for `byte8-ledger sync`, and the policy it is meant
//! for, so that long runs — a backfill's memory, a soak against `byte8-ledger simulate` — can be
//! reproduced from the command line.
//!
//! Run: `cargo run --release -p byte8-ledger-simulators --example gen_events -- EVENTS [SEED] > events.jsonl`
//! (the policy goes to `workload-policy.json` in the current directory).

use std::io::Write;

use byte8_ledger_simulators::workload::{WORKLOAD_POLICY, Workload, WorkloadConfig};

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let events = args.next().and_then(|a| a.parse().ok()).unwrap_or(10_000usize);
    let seed = args.next().and_then(|a| a.parse().ok()).unwrap_or(7u64);
    let customers = (events / 12).max(50);
    let workload = Workload::generate(&WorkloadConfig { seed, events, customers, ..WorkloadConfig::default() });
    std::fs::write("workload-policy.json", WORKLOAD_POLICY)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    for line in &workload.lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    eprintln!("{} events; policy in workload-policy.json", workload.lines.len());
    Ok(())
}
