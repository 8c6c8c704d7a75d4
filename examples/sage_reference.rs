//! Fetches the reference data of a **real** Sage Business Cloud Accounting business: tax rates,
//! ledger accounts, bank accounts, payment methods, currencies, and what the business can do.
//!
//! Needs real credentials (nothing here is simulated):
//!
//! ```sh
//! export SAGE_CLIENT_ID=...        # your Sage developer app
//! export SAGE_CLIENT_SECRET=...
//! export SAGE_BUSINESS_ID=...      # from GET /businesses after consent
//! export SAGE_REFRESH_TOKEN_FILE=./refresh-token   # a file holding the refresh token
//! cargo run --example sage_reference
//! ```
//!
//! Sage's refresh tokens rotate: the run writes the new one back into the file (the old one no
//! longer works). Nothing secret is printed. For real use, `byte8-ledger connect` keeps tokens
//! encrypted at rest in a state file.

use std::sync::Arc;

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet, TokenStore},
    providers::{AccountingProvider, sage::SageBuilder},
};
use secrecy::{ExposeSecret, SecretString};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::var("SAGE_REFRESH_TOKEN_FILE")
        .map_err(|_| "set SAGE_REFRESH_TOKEN_FILE (see the header of this example)")?;
    let refresh = std::fs::read_to_string(&path)?.trim().to_owned();
    let store = Arc::new(MemoryTokenStore::new(Some(TokenSet::from_refresh_token(SecretString::from(refresh)))));
    // SAGE_CLIENT_ID, SAGE_CLIENT_SECRET, SAGE_BUSINESS_ID (and optionally SAGE_BASE_URL,
    // SAGE_TOKEN_URL) come from the environment; `build()` names every one that is missing.
    let sage = SageBuilder::from_env().with_token_store(Arc::clone(&store) as Arc<dyn TokenStore>).build()?;
    let reference = sage.reference_data(false).await?;
    let caps = sage.capabilities().await?;
    println!("{:#?}", reference.business);
    println!("capabilities: {caps:#?}");
    println!("tax rates:");
    for t in &reference.tax_rates {
        println!("  {:<24} {:>8} {}", t.id, t.percentage.map(|p| format!("{p}%")).unwrap_or_default(), t.name);
    }
    println!("sales ledger accounts:");
    for a in reference.ledger_accounts.iter().filter(|a| a.visible_in_sales) {
        println!("  {:<34} {}", a.id, a.name);
    }
    println!("bank accounts:");
    for b in &reference.bank_accounts {
        println!("  {:<34} {}", b.id, b.name);
    }
    if let Some(t) = store.load().await? {
        std::fs::write(&path, t.refresh_token.expose_secret())?;
        println!("the rotated refresh token was written back to {path}");
    }
    Ok(())
}
