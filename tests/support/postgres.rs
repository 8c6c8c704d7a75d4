//! The PostgreSQL the tests use: `BYTE8_TEST_DATABASE_URL` (or `DATABASE_URL`). Without one the
//! PostgreSQL tests print that they are skipped and pass, so that `cargo test` works on a machine
//! without PostgreSQL; `.ci/run` starts a server, sets the URL and sets `BYTE8_REQUIRE_POSTGRES`
//! so that a missing URL fails there instead.
#![allow(dead_code)]

use std::io::Write as _;

use byte8_ledger_core::store::{crypto::MasterKey, postgres::PostgresStore};
use sqlx::postgres::PgPoolOptions;

/// The database URL, or `None` (after saying the test is skipped).
pub fn url(test: &str) -> Option<String> {
    let url = ["BYTE8_TEST_DATABASE_URL", "DATABASE_URL"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.trim().is_empty()));
    if url.is_none() {
        assert!(
            std::env::var_os("BYTE8_REQUIRE_POSTGRES").is_none(),
            "{test}: BYTE8_REQUIRE_POSTGRES is set but BYTE8_TEST_DATABASE_URL is not"
        );
        // Straight to stderr, past the test harness's capture, so that the skip is seen.
        let _ = writeln!(
            std::io::stderr(),
            "{test}: skipped (set BYTE8_TEST_DATABASE_URL to a PostgreSQL database to run it)"
        );
    }
    url
}

/// A store with a pool of its own (as a separate worker process would have).
pub async fn store(url: &str, connections: u32, key: Option<MasterKey>) -> PostgresStore {
    let pool = PgPoolOptions::new().max_connections(connections).connect(url).await.expect("connect to PostgreSQL");
    PostgresStore::from_pool(pool, key).await.expect("migrate")
}

/// A scope no earlier run of the tests used (the database may be kept between runs).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A store over one connection whose statements keep the planner's generic plan from the first
/// execution (what a pooled connection runs after its first few), so that a test sees the plan
/// production runs.
pub async fn generic_plan_store(url: &str) -> PostgresStore {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(conn, "SET plan_cache_mode = force_generic_plan").await.map(|_| ())
            })
        })
        .connect(url)
        .await
        .expect("connect to PostgreSQL");
    PostgresStore::from_pool(pool, None).await.expect("migrate")
}

/// A node's `runs` as the planner's statistics see them (then `ANALYZE`d): business `scope`
/// (tenant `tenant`) with 20,000 finished runs, 1,000 other businesses with 15 each, and one more
/// with a backlog of 5,000 open runs waiting a day. [`NodeHistory::remove`] deletes them again.
pub struct NodeHistory {
    others: String,
    backlog: String,
    scope: String,
}

impl NodeHistory {
    /// Inserts the runs and analyses the table.
    pub async fn insert(pool: &sqlx::PgPool, scope: &str, tenant: &str) -> Self {
        let (others, backlog) = (unique("others"), unique("backlog"));
        let runs = "INSERT INTO runs (scope, idempotency_key, event, magento_entity_id, raw, fingerprint, policy, \
                    status, attempts, created_at, updated_at, tenant_id, claim, next_attempt_at) ";
        let statements = [
            // The long history.
            "SELECT $1, 'invoice.created:' || g, 'invoice.created', g, '\\x7b7d'::bytea, 'fp' || g, '{}', 'synced', 1, \
             now() - interval '30 days', now() - interval '30 days', $2, 1, NULL FROM generate_series(1, 20000) AS g",
            // The node's other businesses (the planner's estimates for a tenant are drawn from them).
            "SELECT $3 || '-' || (g % 1000), 'product.upserted:' || g, 'product.upserted', g, '\\x7b7d'::bytea, \
             'fp' || g, '{}', 'synced', 1, now(), now(), $3 || '-t' || (g % 1000), 1, NULL \
             FROM generate_series(1, 15000) AS g WHERE $1::text IS NOT NULL AND $2::text IS NOT NULL",
            // A backlog, due to no one meanwhile.
            "SELECT $3 || '-backlog', 'invoice.created:' || g, 'invoice.created', g, '\\x7b7d'::bytea, 'fp' || g, \
             '{}', 'queued', 1, now(), now(), $3 || '-backlog-t', 0, now() + interval '1 day' \
             FROM generate_series(1, 5000) AS g WHERE $1::text IS NOT NULL AND $2::text IS NOT NULL",
        ];
        for (select, prefix) in statements.iter().zip([&others, &others, &backlog]) {
            sqlx::query(&format!("{runs}{select}"))
                .bind(scope)
                .bind(tenant)
                .bind(prefix)
                .execute(pool)
                .await
                .expect("insert the node's runs");
        }
        sqlx::query("ANALYZE runs").execute(pool).await.expect("analyze");
        Self { others, backlog, scope: scope.to_owned() }
    }

    /// Deletes the runs [`NodeHistory::insert`] made.
    pub async fn remove(self, pool: &sqlx::PgPool) {
        sqlx::query("DELETE FROM runs WHERE scope = $1 OR scope LIKE $2 || '-%' OR scope LIKE $3 || '-%'")
            .bind(&self.scope)
            .bind(&self.others)
            .bind(&self.backlog)
            .execute(pool)
            .await
            .expect("delete the node's runs");
    }
}

/// The plan (`EXPLAIN ANALYZE`, one line a row) of the statement prepared on the store's one
/// connection whose text starts with `starts`, run with `arguments` (SQL literals: `EXPLAIN
/// EXECUTE` takes no parameters of its own) inside a transaction that is rolled back. `types` are
/// its parameters' types.
pub async fn explain_prepared(pool: &sqlx::PgPool, starts: &str, types: &str, arguments: &str) -> Vec<String> {
    let statement: String =
        sqlx::query_scalar("SELECT statement FROM pg_prepared_statements WHERE starts_with(statement, $1)")
            .bind(starts)
            .fetch_one(pool)
            .await
            .expect("the statement was prepared on this connection");
    let mut tx = pool.begin().await.expect("begin");
    sqlx::Executor::execute(&mut *tx, format!("PREPARE explained({types}) AS {statement}").as_str())
        .await
        .expect("prepare");
    let plan: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN ANALYZE EXECUTE explained({arguments})"))
        .fetch_all(&mut *tx)
        .await
        .expect("explain");
    // A prepared statement is the session's, not the transaction's.
    sqlx::Executor::execute(&mut *tx, "DEALLOCATE explained").await.expect("deallocate");
    tx.rollback().await.expect("roll back");
    plan
}

/// The rows the plan's nodes on `table` read and then dropped by a filter, summed over the lines
/// of an `EXPLAIN ANALYZE` (each `Rows Removed by Filter: N` belongs to the node line above it).
/// Other tables' nodes are left out: what other tests leave in them (another tenant's undelivered
/// callbacks, say) says nothing of the plan's reads of `table`.
pub fn rows_removed_by_filter(plan: &[String], table: &str) -> i64 {
    let on = format!(" on {table} ");
    let mut node_on_table = false;
    let mut removed = 0;
    for line in plan {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("Rows Removed by Filter: ") {
            if node_on_table {
                removed += n.trim().parse::<i64>().expect("a count");
            }
        } else if line.starts_with("->") || !line.contains(':') {
            node_on_table = line.contains(&on);
        }
    }
    removed
}
