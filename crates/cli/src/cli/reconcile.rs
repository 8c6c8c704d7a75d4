//! `byte8-ledger reconcile`: the period's synced runs against what the ledger holds
//! (`byte8_ledger_core::reconcile`).

use std::io::Write;

use chrono::NaiveDate;

use super::{Failure, database::Database, io, usage};
use byte8_ledger_core::reconcile::{Period, reconcile};
use byte8_ledger_core::store::crypto::MasterKey;

/// Exit code when the report has differences (0: none; 1 and 2 keep their meaning: a failure,
/// a usage or configuration error).
pub(super) const EXIT_DIFFERENCES: u8 = 3;

/// `reconcile`'s arguments.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ReconcileArgs {
    /// The state database (SQLite) or `--database-url` (PostgreSQL).
    #[command(flatten)]
    pub store: super::StoreArgs,
    /// First day of the period (YYYY-MM-DD, document dates).
    #[arg(long)]
    pub from: NaiveDate,
    /// Last day of the period, included (YYYY-MM-DD).
    #[arg(long)]
    pub to: NaiveDate,
    /// The connection, when the database holds several.
    #[arg(long)]
    pub business_id: Option<String>,
    /// JSON output (the [`byte8_ledger_core::reconcile::Report`]).
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(args: ReconcileArgs, out: &mut dyn Write) -> Result<(), Failure> {
    let period = Period::new(args.from, args.to).map_err(|e| usage(e.to_string()))?;
    let db = Database::open(&args.store, Some(MasterKey::from_env()?)).await?;
    let store = db.service();
    let all = store.connections().await?;
    let connection = match (&args.business_id, all.as_slice()) {
        (Some(id), _) => all
            .iter()
            .find(|c| c.scope == *id)
            .ok_or_else(|| usage(format!("no connection for business {id}: run `byte8-ledger connect` first")))?,
        (None, [only]) => only,
        (None, []) => return Err(usage(format!("{db} holds no connection: run `byte8-ledger connect` first"))),
        (None, many) => {
            return Err(usage(format!("{db} holds {} connections: choose one with --business-id", many.len())));
        }
    };
    let provider =
        db.providers(super::database::rate_from_env()?).for_connection(connection).map_err(|e| usage(e.to_string()))?;
    let report = reconcile(&*store, &*provider, &connection.scope, period).await?;
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| Failure { code: 1, message: e.to_string() })?;
        writeln!(out, "{text}").map_err(io)?;
    } else {
        write!(out, "{}", report.to_table()).map_err(io)?;
    }
    if report.is_clean() {
        Ok(())
    } else {
        Err(Failure {
            code: EXIT_DIFFERENCES,
            message: format!("{} difference(s) between Magento and the ledger", report.findings.len()),
        })
    }
}
