//! Embeds the library and posts one invoice end to end: the built-in Sage simulator on loopback,
//! the real `SageProvider` over HTTP (OAuth refresh included), the `SyncEngine` with an in-memory
//! store, one `invoice.created` event in, one outcome out — then prints what Sage holds.
//!
//! Run: `cargo run -p byte8-ledger-simulators --example post_invoice`. Point `SageBuilder` at
//! `https://api.accounting.sage.com/v3.1` with real credentials to post to a real business.

use std::sync::Arc;

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet},
    clock::SystemClock,
    engine::SyncEngine,
    policy::SyncPolicy,
    providers::{AccountingProvider, sage::SageBuilder},
    store::memory::MemoryStore,
};
use byte8_ledger_simulators::{DEMO_REFRESH_TOKEN, SageSimulator, SimConfig};
use secrecy::SecretString;

const EVENT: &str = r#"{"event":"invoice.created","idempotency_key":"invoice.created:1001","magento_entity_id":1001,
 "website_id":1,"store_id":1,"occurred_at":"2026-11-22T10:00:00Z","payload":{"increment_id":"000000123","paid":false},
 "entity":{"magento_id":1001,"increment_id":"000000123","order_id":77,"order_increment_id":"000000077",
  "website_id":1,"store_id":1,"currency":"GBP","state":"open",
  "customer":{"magento_id":5,"email":"jane@example.com","first_name":"Jane","last_name":"Doe","website_id":1,"addresses":[]},
  "lines":[{"sku":"24-WB03","name":"Driven Backpack","qty":2,"unit_price":36.00,"line_subtotal":72.00,"line_tax":14.40,
            "line_total":86.40,"tax_rate":0.2,"product_type":"simple"}],
  "subtotal":72.00,"tax_amount":15.40,"shipping_amount":5.00,"shipping_tax_amount":1.00,"discount_amount":0,
  "grand_total":92.40,"created_at":"2026-11-22T09:59:00Z","payment_method":"checkmo",
  "billing_address":{"kind":"billing","street":["1 High Street"],"city":"London","postcode":"SW1A 1AA","country_id":"GB"},
  "shipping_address":null,"po_number":null,"base_to_order_rate":1.0}}"#;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A Sage to post to: the simulator, serving the demo UK business on a loopback port.
    let sim = SageSimulator::demo(SimConfig::default());
    let server = sim.serve().await?;

    // The provider: OAuth custody (a refresh token to start from), X-Business, retries, rate limit.
    let tokens =
        MemoryTokenStore::new(Some(TokenSet::from_refresh_token(SecretString::from(DEMO_REFRESH_TOKEN.to_owned()))));
    let sage = SageBuilder::new()
        .with_client_id("demo-client")
        .with_client_secret(SecretString::from("demo-secret".to_owned()))
        .with_business_id("demo-business")
        .with_base_url(server.base_url())
        .with_token_url(server.token_url())
        .with_token_store(Arc::new(tokens))
        .build()?;

    // The policy: which Sage accounts and rates to use.
    let policy = SyncPolicy::from_json(
        r#"{"default_ledger_account_id":"SALES","default_tax_rate_id":"GB_STANDARD",
            "tax_rate_map":{"20":"GB_STANDARD","5":"GB_LOWER"},"invoice_number_prefix":"MAG-"}"#,
    )?;

    // The engine: event in, outcome out, exactly once.
    let engine = SyncEngine::new(
        Arc::new(sage) as Arc<dyn AccountingProvider>,
        Arc::new(MemoryStore::new()),
        "demo-business",
        policy,
        Arc::new(SystemClock),
    );
    engine.check_policy().await?;
    let outcome = engine.sync_line(EVENT).await?;
    println!("outcome: {}", serde_json::to_string_pretty(&outcome)?);

    // A second delivery of the same event is a duplicate: no second invoice.
    let again = engine.sync_line(EVENT).await?;
    assert_eq!(again.provider_entity_id, outcome.provider_entity_id);

    let business = sim.business("demo-business").ok_or("no business")?;
    for c in &business.contacts {
        println!("Sage contact {} {} ({})", c.reference.as_deref().unwrap_or(""), c.name, c.currency);
    }
    for d in &business.invoices {
        println!("Sage invoice {} {} total {} outstanding {}", d.number, d.reference, d.total, d.outstanding);
    }
    server.stop().await;
    Ok(())
}
