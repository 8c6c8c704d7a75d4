//! The Xero world of the integration tests: the Xero simulator served on loopback and the real
//! `XeroProvider` over HTTP, with the demo organisation's policy.
#![allow(dead_code)]

use std::{sync::Arc, time::Duration};

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet},
    http::RetryConfig,
    money::Currency,
    policy::SyncPolicy,
    providers::{
        conformance::Fixture,
        xero::{XeroBuilder, XeroLimits, XeroProvider},
    },
};
use byte8_ledger_simulators::xero::{XERO_DEMO_REFRESH_TOKEN, XERO_DEMO_TENANT, XeroServer};
use chrono::NaiveDate;
use rust_decimal::Decimal;
use secrecy::SecretString;

/// The policy of the demo organisation (`samples/policy.xero.json`).
pub const XERO_POLICY: &str = include_str!("../../samples/policy.xero.json");

/// A provider for the simulator served at `server`, without client-side limits.
pub fn provider(server: &XeroServer) -> XeroProvider {
    builder(server).with_limits(XeroLimits::unlimited()).build().expect("build the Xero provider")
}

/// A builder for the simulator served at `server`.
pub fn builder(server: &XeroServer) -> XeroBuilder {
    XeroBuilder::new()
        .with_client_id("demo-client")
        .with_client_secret(SecretString::from("demo-secret".to_owned()))
        .with_tenant_id(XERO_DEMO_TENANT)
        .with_base_url(server.base_url())
        .with_token_url(server.token_url())
        .with_connections_url(server.connections_url())
        .with_token_store(Arc::new(MemoryTokenStore::new(Some(TokenSet::from_refresh_token(SecretString::from(
            XERO_DEMO_REFRESH_TOKEN.to_owned(),
        ))))))
        .with_retry(RetryConfig {
            max_retries: 3,
            initial_backoff: Duration::from_millis(2),
            max_backoff: Duration::from_secs(2),
            retry_timeout: Duration::from_secs(10),
        })
}

/// The conformance fixture of the demo organisation: account codes `200` / `310`, UK tax types,
/// bank `090`, prefix `CF-`, London buyers, EUR as the foreign currency, dated 2026-11-22.
pub fn fixture(run: &str) -> Fixture {
    let mut policy = SyncPolicy::from_json(XERO_POLICY).expect("the Xero sample policy");
    policy.invoice_number_prefix = Some("CF-".into());
    policy.default_bank_account_id = Some("090".into());
    policy.sync_since = None;
    Fixture::new(policy, run)
        .with_bank_account("090")
        .with_tax_percent(Decimal::from(20))
        .with_buyer_country("GB")
        .with_buyer_postcode("SW1A 1AA")
        .with_foreign_currency(Some(Currency::EUR))
        .with_date(NaiveDate::from_ymd_opt(2026, 11, 22).expect("a date"))
}
