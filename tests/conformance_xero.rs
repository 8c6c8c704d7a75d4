//! The public conformance suite, unchanged, against the Xero provider over HTTP into the Xero
//! simulator: the whole suite and each behaviour on its own (so that a failure names it).
#![cfg(all(feature = "conformance", feature = "simulator", feature = "xero"))]

#[path = "support/xero.rs"]
mod xero;

use byte8_ledger_core::{
    providers::conformance,
    simulator::xero::{XERO_DEMO_TENANT, XeroSimConfig, XeroSimulator},
};

macro_rules! behaviour_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
                let server = sim.serve().await.unwrap();
                conformance::$name(&xero::provider(&server), &xero::fixture(stringify!($name))).await;
            }
        )*
    };
}

behaviour_tests!(
    reference_data_and_policy,
    contact_round_trip,
    duplicate_contact_reference_is_taken,
    resolve_contact_adopts_and_moves_on,
    invoice_round_trip,
    payment_settles_invoice,
    credit_note_allocation,
    find_or_post_invoice_posts_once,
    currency_lock,
    unknown_ids_are_not_found,
    items_round_trip,
    stock_movements,
    void_document,
);

#[tokio::test]
async fn xero_over_http_into_the_simulator_conforms() {
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    let server = sim.serve().await.unwrap();
    conformance::run_all(&xero::provider(&server), &xero::fixture("xero-run-all")).await;
    let org = sim.org(XERO_DEMO_TENANT).unwrap();
    assert!(!org.invoices.is_empty() && !org.payments.is_empty() && !org.allocations.is_empty());
    // Every write carried an Idempotency-Key.
    let writes: u64 = sim
        .requests()
        .iter()
        .filter(|(k, _)| k.starts_with("PUT") || k.starts_with("POST /api"))
        .map(|(_, n)| *n)
        .sum();
    assert!(sim.with_state(|s| s.idempotency_keys.len()) as u64 >= writes.saturating_sub(1), "{:?}", sim.requests());
}
