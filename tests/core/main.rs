//! The integration tests of `byte8-ledger-core`, one binary (a module per area) so that CI links
//! it once: the Sage and Xero HTTP providers against wiremock and the vendored specs, money
//! properties, validation rules, the stores (SQLite, PostgreSQL), the quirks catalogue.

// A test binary has no public API: the shared support modules are `pub` for their users.
#![allow(unreachable_pub)]

mod conformance_memory;
mod http_exchange;
mod layers;
mod live_sage;
mod memory_extension;
mod money_properties;
mod no_panic;
mod postgres;
mod quirks_catalogue;
mod runs_with_status;
mod sage_http;
mod sage_reconcile_http;
mod sage_requests_match_spec;
mod sage_spec;
#[path = "../support/mod.rs"]
mod support;
#[path = "../support/postgres.rs"]
mod support_postgres;
#[path = "../support/sage_spec.rs"]
mod support_sage_spec;
#[path = "../support/xero_spec.rs"]
mod support_xero_spec;
mod validation_rules;
mod xero_http;
mod xero_reconcile_http;
