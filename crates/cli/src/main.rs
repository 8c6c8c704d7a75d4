//! The `byte8-ledger` command: sync Magento 2 events to Sage Business Cloud Accounting or Xero, run
//! the ledger service for the Byte8 Magento module, manage its tenants, and run the demo against
//! the simulators. Every subcommand and its options are described by `byte8-ledger --help`; the
//! command is built on `byte8-ledger-core` (the library), `byte8-ledger-service` and
//! `byte8-ledger-simulators`.

use std::process::ExitCode;

use clap::Parser;

mod cli;

use cli::Cli;

/// mimalloc, not glibc's `malloc`: `serve` allocates and frees many short-lived buffers an event
/// (HTTP bodies, JSON, statements), and glibc's `_int_malloc` alone was 12.7 % of its CPU. Measured
/// interleaved with `bench_service` at 1,000 tenants: 1.65–1.85 ms of `serve` CPU an event
/// against 2.08–2.21 ms, for 25 MB more peak RSS (106 MB against 81 MB); BENCHMARKS.md. Its 2.x
/// line (the `v2` feature), not the 3.x line `mimalloc` 0.1.52 builds by default: with two builds of
/// `serve` measured at once (`benches/serve_pairs.sh`, round 34), 2.x spent 0.92–0.97 times the CPU
/// an event of 3.x in eight rounds out of eight, at the same peak RSS. The library crates leave the
/// allocator to the program that embeds them.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args = Cli::parse();
    let mut runtime = match cli::runtime_for(&args.command, std::env::var_os("TOKIO_WORKER_THREADS").is_some()) {
        cli::Runtime::OneThread => tokio::runtime::Builder::new_current_thread(),
        cli::Runtime::Workers(threads) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = threads {
                runtime.worker_threads(n);
            }
            runtime
        }
    };
    runtime.enable_all();
    match runtime.build() {
        Ok(runtime) => runtime.block_on(async {
            cli::init_logging();
            cli::main(args).await
        }),
        Err(e) => {
            eprintln!("byte8-ledger: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}
