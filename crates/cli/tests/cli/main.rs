//! The tests of the `byte8-ledger` command, one binary: the command itself, the chaos soak, the
//! service run by `byte8-ledger serve` (SQLite and PostgreSQL).

// A test binary has no public API: the shared support modules are `pub` for their users.
#![allow(unreachable_pub)]

mod chaos;
mod cli;
mod connect;
mod reconcile;
mod retention;
mod service;
mod service_postgres;
#[path = "../../../../tests/support/mod.rs"]
mod support;
#[path = "../../../../tests/support/browser.rs"]
mod support_browser;
#[path = "../../../../tests/support/magento.rs"]
mod support_magento;
#[path = "../../../../tests/support/postgres.rs"]
mod support_postgres;
