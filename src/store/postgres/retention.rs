//! The retention purge on PostgreSQL ([`crate::store::retention`]): every table of the schema,
//! the service's (`bindings`, `callbacks`) included, in one transaction.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use super::{PostgresStore, db, text};
use crate::{
    error::Result,
    store::retention::{PurgeReport, RetentionPolicy, RetentionStore},
};
use sqlx::Row;

/// Every run of tenant `$1`, asked as its open runs or its finished ones: each arm matches one of
/// the partial indexes that lead with the tenant (migration 0020: `runs_open`, `runs_by_tenant`),
/// which `tenant_id = $1` alone matches neither of (a sequential scan of `runs`). A run's status
/// is one of the five (the table's check), so the two arms are all of them.
macro_rules! tenant_runs {
    () => {
        "((tenant_id = $1 AND status IN ('synced', 'skipped', 'dead_lettered')) \
         OR (tenant_id = $1 AND status IN ('queued', 'running')))"
    };
}

/// Runs `sql`, a delete of tenant `$1`'s rows, and answers how many went.
async fn delete_for_tenant(tx: &mut sqlx::PgConnection, sql: &'static str, tenant: &str) -> Result<u64> {
    Ok(sqlx::query(sql).bind(text(tenant)).execute(tx).await.map_err(db)?.rows_affected())
}

#[async_trait]
impl RetentionStore for PostgresStore {
    /// One transaction, the disconnected tenants' bindings locked (`FOR UPDATE`: a pairing of one
    /// of them waits, and the purge then finds it active), rolled back for a dry run.
    async fn purge(&self, policy: &RetentionPolicy, now: DateTime<Utc>, dry_run: bool) -> Result<PurgeReport> {
        policy.validate()?;
        let cut = policy.cutoffs(now);
        let mut report = PurgeReport { dry_run, ..PurgeReport::default() };
        let mut tx = self.pool.begin().await.map_err(db)?;
        let gone = sqlx::query(
            "SELECT tenant_id, scope FROM bindings WHERE status = 'revoked' AND revoked_at < $1 ORDER BY tenant_id FOR UPDATE",
        )
        .bind(cut.disconnected)
        .fetch_all(&mut *tx)
        .await
        .map_err(db)?;
        let mut scopes = Vec::new();
        for row in &gone {
            let tenant: String = row.try_get("tenant_id").map_err(db)?;
            let scope: String = row.try_get("scope").map_err(db)?;
            report.callbacks += delete_for_tenant(
                &mut tx,
                concat!(
                    "DELETE FROM callbacks WHERE tenant_id = $1 OR run_id IN (SELECT id FROM runs WHERE ",
                    tenant_runs!(),
                    ")"
                ),
                &tenant,
            )
            .await?;
            report.attempts += delete_for_tenant(
                &mut tx,
                concat!("DELETE FROM attempts WHERE run_id IN (SELECT id FROM runs WHERE ", tenant_runs!(), ")"),
                &tenant,
            )
            .await?;
            report.runs +=
                delete_for_tenant(&mut tx, concat!("DELETE FROM runs WHERE ", tenant_runs!()), &tenant).await?;
            delete_for_tenant(&mut tx, "DELETE FROM bindings WHERE tenant_id = $1", &tenant).await?;
            report.tenants.push(tenant);
            scopes.push(scope);
        }
        scopes.sort();
        scopes.dedup();
        for scope in &scopes {
            // Only once no tenant is bound to the business any more and no run of it is left.
            report.xrefs += sqlx::query(
                "DELETE FROM xrefs WHERE scope = $1 AND NOT EXISTS (SELECT 1 FROM bindings WHERE scope = $1) \
                 AND NOT EXISTS (SELECT 1 FROM runs WHERE scope = $1)",
            )
            .bind(text(scope))
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        }
        report.callbacks += sqlx::query("DELETE FROM callbacks WHERE delivered_at < $1")
            .bind(cut.delivered_callbacks)
            .execute(&mut *tx)
            .await
            .map_err(db)?
            .rows_affected();
        report.attempts += sqlx::query(
            "DELETE FROM attempts WHERE run_id IN \
             (SELECT id FROM runs WHERE status IN ('synced', 'skipped') AND updated_at < $1)",
        )
        .bind(cut.attempts)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        report.raw_events += sqlx::query(
            "UPDATE runs SET raw = '' WHERE status IN ('synced', 'skipped') AND updated_at < $1 AND raw <> ''",
        )
        .bind(cut.attempts)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        // Ledger requests made outside any run (no attempt points at their recording) feed only
        // the console's count of the last hour: gone after `LOOSE_EXCHANGES_KEPT`.
        report.loose_requests += sqlx::query(
            "DELETE FROM exchanges WHERE at < $1 \
             AND NOT EXISTS (SELECT 1 FROM attempts WHERE attempts.recording = exchanges.recording)",
        )
        .bind(cut.loose_exchanges)
        .execute(&mut *tx)
        .await
        .map_err(db)?
        .rows_affected();
        if dry_run {
            tx.rollback().await.map_err(db)?;
        } else {
            tx.commit().await.map_err(db)?;
        }
        Ok(report)
    }
}
