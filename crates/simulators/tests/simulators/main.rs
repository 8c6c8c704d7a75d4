//! The end-to-end tests over the simulators, one binary: the engine against the Sage simulator, the
//! Xero engine, the conformance suites run against the simulated ledgers, the simulators' own rules.

// A test binary has no public API: the shared support modules are `pub` for their users.
#![allow(unreachable_pub)]

mod conformance_sage;
mod conformance_xero;
mod engine;
mod oauth;
mod run_audit;
mod sage_simulator;
#[path = "../../../../tests/support/mod.rs"]
mod support;
#[path = "../../../../tests/support/browser.rs"]
mod support_browser;
#[path = "../../../../tests/support/engine.rs"]
mod support_engine;
#[path = "../../../../tests/support/xero.rs"]
mod support_xero;
#[path = "../../../../tests/support/xero_spec.rs"]
mod support_xero_spec;
mod xero_engine;
mod xero_reconcile;
mod xero_simulator;
mod xero_vs_sage;
