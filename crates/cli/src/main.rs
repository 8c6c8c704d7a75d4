//! The `byte8-ledger` command: sync Magento 2 events to Sage Business Cloud Accounting or Xero, run
//! the ledger service for the Byte8 Magento module, manage its tenants, and run the demo against
//! the simulators. Every subcommand and its options are described by `byte8-ledger --help`; the
//! command is built on `byte8-ledger-core` (the library), `byte8-ledger-service` and
//! `byte8-ledger-simulators`.

use std::process::ExitCode;

use clap::Parser;

mod cli;

use cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let args = Cli::parse();
    cli::init_logging();
    cli::main(args).await
}
