//! The `byte8-ledger` command: see `byte8_ledger_core::cli`.

use std::process::ExitCode;

use byte8_ledger_core::cli::{self, Cli};
use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Cli::parse();
    cli::init_logging();
    cli::main(args).await
}
