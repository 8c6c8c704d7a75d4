//! `byte8-ledger tenant pair | list | disconnect`: the Magento stores bound to this service.

use std::{io::Write, path::PathBuf};

use clap::Subcommand;

use super::{
    Failure,
    database::{Database, SecretArg, StoreArgs},
    io, read_policy, usage,
};
use byte8_ledger_core::{
    clock::{Clock, SystemClock},
    error::Error,
    store::crypto::MasterKey,
};
use byte8_ledger_service::console::stores::{PairStore, pair_store};
use byte8_ledger_service::store::BindingStatus;

/// The `tenant` sub-commands.
#[derive(Debug, Subcommand)]
pub(crate) enum TenantCommand {
    /// Pair a Magento store running the Byte8 module with this service: generates the tenant's
    /// key, hands it to Magento with the pairing code the merchant generated in the Magento admin
    /// (`POST /rest/V1/byte8/setup/pair`), and stores the binding (the key encrypted with
    /// LEDGER_MASTER_KEY). Then connect the business to Sage with `byte8-ledger connect`.
    Pair {
        /// Where the state lives.
        #[command(flatten)]
        store: StoreArgs,
        /// The store's base URL, as in its admin (`https://shop.example.com`).
        #[arg(long)]
        magento_base_url: String,
        /// The code the merchant generated in the Magento admin (the Byte8 module's Generate), valid 30
        /// minutes and once.
        #[arg(long, env = "BYTE8_PAIRING_CODE", hide_env_values = true)]
        pairing_code: SecretArg,
        /// The ledger business the store's events post to.
        #[arg(long)]
        business_id: String,
        /// The sync policy (JSON), snapshotted into each event when it arrives.
        #[arg(long)]
        policy: PathBuf,
        /// This service's public base URL, where Magento will send its webhooks.
        #[arg(long, env = "BYTE8_LEDGER_BASE_URL")]
        ledger_base_url: String,
        /// Pair again an existing tenant (a new key; reconnects a disconnected one). A new tenant
        /// id is generated otherwise.
        #[arg(long)]
        tenant_id: Option<String>,
    },
    /// List the tenants (no key is shown, and none is needed).
    List {
        /// Where the state lives.
        #[command(flatten)]
        store: StoreArgs,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Disconnect a tenant: its webhooks are refused (401) and nothing more is dispatched; its
    /// runs and cross-reference are kept, so pairing again creates no duplicates, until the
    /// retention purge removes them (`--disconnected-days` after the disconnection, 90 by
    /// default: see `purge`).
    Disconnect {
        /// Where the state lives.
        #[command(flatten)]
        store: StoreArgs,
        /// The tenant id.
        tenant_id: String,
        /// Also delete the stored ledger tokens of the tenant's business (the dashboard's
        /// disconnect, byte8-spec.md 12.7): nothing can call the ledger for it until
        /// `byte8-ledger connect` stores new ones. They are revoked at the provider first where it
        /// documents revocation (Xero; Sage's endpoint is unconfirmed and only tried), which
        /// needs the client id and secret; the output says whether the provider confirmed.
        #[arg(long)]
        forget_ledger_tokens: bool,
    },
}

pub(crate) async fn run(command: TenantCommand, out: &mut dyn Write) -> Result<(), Failure> {
    match command {
        TenantCommand::Pair {
            store,
            magento_base_url,
            pairing_code,
            business_id,
            policy,
            ledger_base_url,
            tenant_id,
        } => {
            let code = pairing_code.expose_secret();
            pair(&store, &magento_base_url, code, &business_id, policy, &ledger_base_url, tenant_id, out).await
        }
        TenantCommand::List { store, json } => list(&store, json, out).await,
        TenantCommand::Disconnect { store, tenant_id, forget_ledger_tokens } => {
            disconnect(&store, &tenant_id, forget_ledger_tokens, out).await
        }
    }
}

/// An input error (exit code 2) from a validation error.
fn invalid(e: &Error) -> Failure {
    usage(e.to_string())
}

#[allow(clippy::too_many_arguments)]
async fn pair(
    args: &StoreArgs,
    magento_base_url: &str,
    pairing_code: &str,
    business_id: &str,
    policy: PathBuf,
    ledger_base_url: &str,
    tenant_id: Option<String>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let policy = read_policy(Some(policy))?;
    let key = MasterKey::from_env()?;
    let clock = SystemClock;
    let db = Database::open(args, Some(key)).await?;
    let store = db.service();
    let code = secrecy::SecretString::from(pairing_code.to_owned());
    // The steps the console's Stores page takes too (`pair_store`): key, checks before the code
    // is spent, one active store per business, Magento's pairing call, the binding stored.
    let request = PairStore { magento_base_url, pairing_code: &code, business_id, policy, ledger_base_url, tenant_id };
    let binding = pair_store(store.as_ref(), request, &clock).await.map_err(|e| match &e {
        Error::Invalid { errors, .. } if errors.iter().any(|f| f.path == "business_id") => usage(format!(
            "{e} (`byte8-ledger tenant list` shows it; `byte8-ledger tenant disconnect TENANT` frees the business)"
        )),
        Error::Invalid { .. } => invalid(&e),
        Error::Database { .. } => Failure { code: 1, message: e.to_string() },
        _ => Failure { code: 1, message: format!("Magento refused the pairing: {e}") },
    })?;
    let ledger_url = binding.ledger_base_url.clone().unwrap_or_default();
    let sage = store.connection(&binding.scope).await?.is_some();
    writeln!(out, "paired tenant {} with business {}", binding.tenant_id, binding.scope).map_err(io)?;
    writeln!(
        out,
        "  Magento {} sends its webhooks to {}/webhooks/magento/{}/…",
        binding.magento_base_url, ledger_url, binding.tenant_id
    )
    .map_err(io)?;
    if sage {
        writeln!(out, "  Sage: business {} is connected; `byte8-ledger serve` syncs its events", binding.scope)
            .map_err(io)?;
    } else {
        writeln!(
            out,
            "  Sage: not connected yet; events wait in line until `byte8-ledger connect --business-id {} …` stores a connection",
            binding.scope
        )
        .map_err(io)?;
    }
    Ok(())
}

async fn list(args: &StoreArgs, json: bool, out: &mut dyn Write) -> Result<(), Failure> {
    let db = Database::open(args, MasterKey::from_env().ok()).await?;
    let tenants = db.service().bindings().await?;
    if json {
        let value: Vec<serde_json::Value> = tenants
            .iter()
            .map(|b| {
                serde_json::json!({
                    "tenant_id": b.tenant_id,
                    "business_id": b.scope,
                    "magento_base_url": b.magento_base_url,
                    "status": b.status,
                    "magento_connection_status": b.magento_status,
                    "paired_at": b.paired_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&value).unwrap_or_default()).map_err(io)?;
        return Ok(());
    }
    if tenants.is_empty() {
        writeln!(out, "no tenant in {db}: pair one with `byte8-ledger tenant pair`").map_err(io)?;
    }
    for b in tenants {
        writeln!(
            out,
            "{}  business {}  {}  magento {}  {}  paired {}",
            b.tenant_id,
            b.scope,
            b.status,
            b.magento_status,
            b.magento_base_url,
            b.paired_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
        .map_err(io)?;
    }
    Ok(())
}

async fn disconnect(
    args: &StoreArgs,
    tenant_id: &str,
    forget_tokens: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let db = Database::open(args, MasterKey::from_env().ok()).await?;
    let store = db.service();
    let Some(binding) = store.binding(tenant_id).await? else {
        return Err(Failure { code: 1, message: format!("no tenant {tenant_id} in {db}") });
    };
    store.set_binding_status(tenant_id, BindingStatus::Revoked, SystemClock.now()).await?;
    writeln!(
        out,
        "tenant {tenant_id} disconnected: its webhooks are refused (401) and nothing more is dispatched; its runs and \
         cross-reference are kept until the retention purge (90 days by default; see `byte8-ledger purge --dry-run`)"
    )
    .map_err(io)?;
    if forget_tokens {
        // Revoked at the provider where it documents revocation, forgotten here in any case.
        let revoked = match store.connection(&binding.scope).await? {
            Some(c) => super::connect::revoke_stored(&store, &c).await,
            None => None,
        };
        let had = store.forget_tokens(&binding.scope).await?;
        writeln!(
            out,
            "{} of business {}{}: `byte8-ledger connect` stores new ones",
            if had { "ledger tokens deleted" } else { "no ledger tokens were stored" },
            binding.scope,
            revoked.map(|r| format!(" ({r})")).unwrap_or_default()
        )
        .map_err(io)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::Cli;

    #[test]
    fn secret_arguments_are_not_in_debug() {
        let cli = Cli::try_parse_from([
            "byte8-ledger",
            "tenant",
            "pair",
            "--database-url",
            "postgres://byte8:pa55w0rd@db/byte8",
            "--magento-base-url",
            "https://shop.example.com",
            "--pairing-code",
            "8f14e45fceea167a5a36dedd4bea2543",
            "--business-id",
            "b",
            "--policy",
            "p.json",
            "--ledger-base-url",
            "https://ledger.example.com",
        ])
        .unwrap();
        let shown = format!("{cli:?}");
        assert!(shown.contains("shop.example.com"), "{shown}");
        assert!(!shown.contains("pa55w0rd") && !shown.contains("8f14e45fceea"), "{shown}");
    }
}
