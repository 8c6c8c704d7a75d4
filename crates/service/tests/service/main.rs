//! The tests of `byte8-ledger-service`, one binary: the Magento client and its JWTs (published
//! vectors), the store conformance of the service halves, a hostile Magento and ledger.

// A test binary has no public API: the shared support modules are `pub` for their users.
#![allow(unreachable_pub)]

mod browser;
mod console;
mod console_flow;
mod console_runs;
mod entity_json;
mod hostile_store;
mod magento_client;
mod magento_jwt_vectors;
mod migration_0010;
mod store_conformance;
#[path = "../../../../tests/support/mod.rs"]
mod support;
#[path = "../../../../tests/support/browser.rs"]
mod support_browser;
#[path = "../../../../tests/support/magento.rs"]
mod support_magento;
#[path = "../../../../tests/support/postgres.rs"]
mod support_postgres;
mod wake;
mod webhook_bindings;
