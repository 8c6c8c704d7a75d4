//! Opt-in: the public conformance suite against a **real** Sage business, through the same
//! connection and encrypted token store the command uses. Never run by CI (it needs a Sage
//! sandbox and its credentials); run it before trusting a release against Sage itself:
//!
//! ```sh
//! export SAGE_CLIENT_ID=… SAGE_CLIENT_SECRET=… LEDGER_MASTER_KEY=…
//! byte8-ledger connect --state live.db --business-id $SANDBOX --refresh-token $TOKEN
//! LEDGER_TEST_SAGE_STATE=live.db LEDGER_TEST_SAGE_POLICY=sandbox-policy.json \
//!     cargo test --all-features --test live_sage -- --ignored --nocapture
//! ```
//!
//! The policy must name ids that exist in the sandbox (`byte8-ledger reference --state live.db`
//! lists them) and should set `default_bank_account_id`; `LEDGER_TEST_SAGE_FOREIGN_CURRENCY=EUR`
//! (a currency the sandbox has enabled) adds the per-currency behaviours; `SAGE_BUSINESS_ID`
//! picks the connection when the state file holds several. The suite posts contacts, invoices,
//! credit notes, payments, items and stock movements under references derived from a run id new
//! for every run, and cannot delete them: **use a sandbox business, never a live one.** Rotated
//! refresh tokens are saved in the state file before use, so the next run works without
//! connecting again.
#![cfg(all(feature = "sqlite", feature = "conformance"))]

use std::sync::Arc;

use byte8_ledger_core::{
    clock::{Clock, SystemClock},
    money::parse_currency,
    policy::SyncPolicy,
    providers::{conformance, sage::SageBuilder},
    store::{ConnectionStore, ScopedTokenStore, crypto::MasterKey, sqlite::SqliteStore},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs a Sage sandbox: run with --ignored and LEDGER_TEST_SAGE_STATE, LEDGER_TEST_SAGE_POLICY"]
async fn a_real_sage_business_conforms() {
    let state =
        std::env::var("LEDGER_TEST_SAGE_STATE").expect("LEDGER_TEST_SAGE_STATE: a state file made by `connect`");
    let policy = std::env::var("LEDGER_TEST_SAGE_POLICY").expect("LEDGER_TEST_SAGE_POLICY: the sandbox's policy");
    let key = MasterKey::from_env().expect("LEDGER_MASTER_KEY decrypts the state file's tokens");
    let store = Arc::new(SqliteStore::open(&state, Some(key)).await.expect("the state file"));
    let connections = store.connections().await.expect("connections");
    let connection = match std::env::var("SAGE_BUSINESS_ID") {
        Ok(id) => connections.into_iter().find(|c| c.scope == id).expect("a connection for SAGE_BUSINESS_ID"),
        Err(_) => {
            assert_eq!(connections.len(), 1, "several connections in the state file: set SAGE_BUSINESS_ID");
            connections.into_iter().next().expect("one connection")
        }
    };
    let policy =
        SyncPolicy::from_json(&std::fs::read_to_string(&policy).expect("the policy file")).expect("a valid policy");
    let sage = SageBuilder::from_env()
        .with_business_id(connection.scope.clone())
        .with_base_url(connection.base_url.clone())
        .with_token_url(connection.token_url.clone())
        .with_token_store(Arc::new(ScopedTokenStore::new(Arc::clone(&store) as _, connection.scope.clone())))
        .build()
        .expect("SAGE_CLIENT_ID and SAGE_CLIENT_SECRET");
    let run = format!("L{}", SystemClock.now().format("%m%d%H%M%S"));
    eprintln!("live_sage: business {} run {run}", connection.scope);
    let mut fixture = conformance::Fixture::new(policy, run);
    // A currency the sandbox has enabled besides its base, for the per-currency behaviours.
    if let Ok(code) = std::env::var("LEDGER_TEST_SAGE_FOREIGN_CURRENCY") {
        fixture = fixture.with_foreign_currency(Some(parse_currency(&code).expect("an ISO 4217 code")));
    }
    conformance::run_all(&sage, &fixture).await;
}
