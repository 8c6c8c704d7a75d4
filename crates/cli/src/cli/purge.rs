//! `byte8-ledger purge`: removes what the retention policy no longer lets the state keep
//! ([`byte8_ledger_core::store::retention`]), or with `--dry-run` says what would go. `serve` does the same
//! every hour by itself (`--purge-every`).

use std::io::Write;

use super::{
    Failure,
    database::{Database, StoreArgs},
    io, usage,
};
use byte8_ledger_core::{
    clock::{Clock, SystemClock},
    store::{
        crypto::MasterKey,
        retention::{PurgeReport, RetentionPolicy},
    },
};

/// The retention settings of `purge` and `serve` (days; Byte8's promise by default).
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct RetentionArgs {
    /// Days a finished (synced or skipped) run keeps its raw event and attempt records; its
    /// outcome and the cross-reference stay while its tenant is active.
    #[arg(long, default_value_t = RetentionPolicy::default().attempt_days)]
    pub attempt_days: u32,
    /// Days after a tenant's disconnection before all of it is purged: runs, attempts,
    /// callbacks, its binding and key, and its business's cross-reference when no other tenant
    /// is bound to the business.
    #[arg(long, default_value_t = RetentionPolicy::default().disconnected_days)]
    pub disconnected_days: u32,
    /// Days a delivered sync-state callback is kept.
    #[arg(long, default_value_t = RetentionPolicy::default().delivered_callback_days)]
    pub delivered_callback_days: u32,
}

impl RetentionArgs {
    /// The policy, checked (exit code 2 naming the option out of range).
    pub(crate) fn policy(&self) -> Result<RetentionPolicy, Failure> {
        let policy = RetentionPolicy {
            attempt_days: self.attempt_days,
            disconnected_days: self.disconnected_days,
            delivered_callback_days: self.delivered_callback_days,
        };
        policy
            .validate()
            .map_err(|e| usage(format!("{e} (--attempt-days, --disconnected-days, --delivered-callback-days)")))?;
        Ok(policy)
    }
}

/// The options of `purge`.
#[derive(Debug, clap::Args)]
pub(crate) struct PurgeArgs {
    /// Where the state lives.
    #[command(flatten)]
    pub store: StoreArgs,
    /// How long each kind of data is kept.
    #[command(flatten)]
    pub retention: RetentionArgs,
    /// Remove nothing: print what a purge would remove now.
    #[arg(long)]
    pub dry_run: bool,
    /// JSON output (`{"dry_run", "tenants", "runs", "raw_events", "attempts", "callbacks", "xrefs"}`).
    #[arg(long)]
    pub json: bool,
}

pub(crate) async fn run(args: PurgeArgs, out: &mut dyn Write) -> Result<(), Failure> {
    run_at(args, &SystemClock, out).await
}

/// `purge` at the clock's time.
pub(crate) async fn run_at(args: PurgeArgs, clock: &dyn Clock, out: &mut dyn Write) -> Result<(), Failure> {
    let policy = args.retention.policy()?;
    // Nothing is decrypted: no master key needed. A purge writes, so an SQLite file is locked
    // (while `serve` runs on it, its own hourly purge does the work).
    let (db, _lock) = Database::open_locked(&args.store, MasterKey::from_env().ok(), "purge").await?;
    let report = db.service().purge(&policy, clock.now(), args.dry_run).await?;
    if args.json {
        serde_json::to_writer(&mut *out, &report).map_err(|e| io(std::io::Error::other(e)))?;
        writeln!(out).map_err(io)?;
    } else {
        write_report(&report, &policy, out).map_err(io)?;
    }
    Ok(())
}

fn write_report(report: &PurgeReport, policy: &RetentionPolicy, out: &mut dyn Write) -> std::io::Result<()> {
    let verb = if report.dry_run { "would remove" } else { "removed" };
    writeln!(
        out,
        "retention: raw events and attempts of finished runs after {} days, disconnected tenants after {} days, \
         delivered callbacks after {} days",
        policy.attempt_days, policy.disconnected_days, policy.delivered_callback_days
    )?;
    if report.is_empty() {
        return writeln!(out, "nothing to purge");
    }
    writeln!(out, "{verb}:")?;
    let tenants = if report.tenants.is_empty() { String::new() } else { format!(" ({})", report.tenants.join(", ")) };
    writeln!(out, "  disconnected tenants      {}{tenants}", report.tenants.len())?;
    writeln!(out, "  runs                      {}", report.runs)?;
    writeln!(out, "  raw events                {}", report.raw_events)?;
    writeln!(out, "  attempts                  {}", report.attempts)?;
    writeln!(out, "  callbacks                 {}", report.callbacks)?;
    writeln!(out, "  cross-reference entries   {}", report.xrefs)?;
    writeln!(out, "  requests outside runs     {}", report.loose_requests)
}
