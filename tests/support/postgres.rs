//! The PostgreSQL the tests use: `BYTE8_TEST_DATABASE_URL` (or `DATABASE_URL`). Without one the
//! PostgreSQL tests print that they are skipped and pass, so that `cargo test` works on a machine
//! without PostgreSQL; `.ci/run` starts a server, sets the URL and sets `BYTE8_REQUIRE_POSTGRES`
//! so that a missing URL fails there instead.
#![allow(dead_code)]

use std::io::Write as _;
use std::str::FromStr as _;

use byte8_ledger_core::store::{crypto::MasterKey, postgres::PostgresStore};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

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

/// As [`store`], in a database of the test's own ([`OwnDatabase`]): for a test that another
/// test's rows in the shared database could disturb.
pub async fn store_in(database: &OwnDatabase, connections: u32, key: Option<MasterKey>) -> PostgresStore {
    let pool = PgPoolOptions::new()
        .max_connections(connections)
        .connect_with(database.options.clone())
        .await
        .expect("connect to the test's database");
    PostgresStore::from_pool(pool, key).await.expect("migrate")
}

/// A scope no earlier run of the tests used (the database may be kept between runs).
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// A database of the test's own, so that the planner's statistics are those the test builds and
/// nothing another test leaves in the shared one (its open runs, its undelivered callbacks). The
/// test's role must be allowed to create databases (`.ci/postgres.sh`'s is the superuser). A test
/// that fails before [`OwnDatabase::drop`] leaves its database (`byte8_plans_…`) behind.
pub struct OwnDatabase {
    admin: sqlx::PgPool,
    name: String,
    /// How to connect to it.
    pub options: PgConnectOptions,
    /// Its URL (the shared one's, with this database's name): for a command given
    /// `BYTE8_DATABASE_URL`.
    pub url: String,
}

/// `url` naming database `name` instead of its own: the part after the host replaced, the
/// query (a socket directory, say) kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(b, q)| (b, Some(q)));
    let after_scheme = base.find("://").map_or(0, |i| i + 3);
    let authority = base[after_scheme..].find('/').map_or(base, |i| &base[..after_scheme + i]);
    match query {
        Some(q) => format!("{authority}/{name}?{q}"),
        None => format!("{authority}/{name}"),
    }
}

impl OwnDatabase {
    /// Creates an empty database beside the one `url` names.
    pub async fn create(url: &str) -> Self {
        let shared = PgConnectOptions::from_str(url).expect("a PostgreSQL URL");
        let admin =
            PgPoolOptions::new().max_connections(1).connect_with(shared.clone()).await.expect("connect to PostgreSQL");
        let name = format!("byte8_plans_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .expect("CREATE DATABASE (the test's PostgreSQL role must be allowed to create databases)");
        Self { options: shared.database(&name), url: with_database(url, &name), admin, name }
    }

    /// Drops the database (and the connections still open to it).
    pub async fn drop(self) {
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&self.admin)
            .await
            .expect("drop the test's database");
    }
}

/// A store over one connection to `database` whose statements keep the planner's generic plan
/// from the first execution (what a pooled connection runs after its first few), so that a test
/// sees the plan production runs.
pub async fn generic_plan_store(database: &OwnDatabase) -> PostgresStore {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .after_connect(|conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(conn, "SET plan_cache_mode = force_generic_plan").await.map(|_| ())
            })
        })
        .connect_with(database.options.clone())
        .await
        .expect("connect to PostgreSQL");
    PostgresStore::from_pool(pool, None).await.expect("migrate")
}

/// Fills a node's `runs` and `callbacks` as the bench's database had them when a claim read a
/// business's whole history (`bench_service --history 200000`), then vacuums and analyses them:
/// - business `scope` (store `tenant`) with 20,000 runs, open once and all finished now: every
///   finished run was once open, and that churn leaves `runs_open` many pages for its few entries
///   (128 pages for 81 open runs in the bench's database);
/// - 1,000 other businesses with 20 runs each, one store each, 70 of those runs open and waiting
///   a day (the planner's estimates for a business are drawn from them);
/// - one more business whose Magento is down, with 2,000 finished runs whose callbacks are all
///   undelivered and due; every other finished run's callback delivered.
pub async fn fill_node(pool: &sqlx::PgPool, scope: &str, tenant: &str) {
    let runs = "INSERT INTO runs (scope, idempotency_key, event, magento_entity_id, raw, fingerprint, policy, \
                status, attempts, created_at, updated_at, tenant_id, claim, next_attempt_at) ";
    let statements = [
        // The long history, open first.
        format!(
            "{runs}SELECT $1, 'invoice.created:' || g, 'invoice.created', g, '\\x7b7d'::bytea, 'fp' || g, '{{}}', \
             'queued', 1, now() - interval '30 days', now() - interval '30 days', $2, 1, now() + interval '1 day' \
             FROM generate_series(1, 20000) AS g"
        ),
        "UPDATE runs SET status = 'synced', next_attempt_at = NULL WHERE scope = $1 AND $2::text IS NOT NULL"
            .to_owned(),
        // The node's other businesses.
        format!(
            "{runs}SELECT 'others-' || (g % 1000), 'product.upserted:' || g, 'product.upserted', g, '\\x7b7d'::bytea, \
             'fp' || g, '{{}}', CASE WHEN g <= 70 THEN 'queued' ELSE 'synced' END, 1, now(), now(), \
             'others-t' || (g % 1000), 1, CASE WHEN g <= 70 THEN now() + interval '1 day' END \
             FROM generate_series(1, 20000) AS g WHERE $1::text IS NOT NULL AND $2::text IS NOT NULL"
        ),
        // The store that is down.
        format!(
            "{runs}SELECT 'down', 'order.created:' || g, 'order.created', g, '\\x7b7d'::bytea, 'fp' || g, '{{}}', \
             'synced', 1, now(), now(), 'down-t', 1, NULL \
             FROM generate_series(1, 2000) AS g WHERE $1::text IS NOT NULL AND $2::text IS NOT NULL"
        ),
        // Every finished run's callback: delivered, but for the store that is down.
        "INSERT INTO callbacks (run_id, scope, tenant_id, generation, due_at, attempts, last_error, created_at, \
         delivered_at) \
         SELECT id, scope, tenant_id, 1, now() - interval '1 hour', 0, NULL, now() - interval '1 hour', \
         CASE WHEN scope <> 'down' THEN now() END FROM runs \
         WHERE status = 'synced' AND $1::text IS NOT NULL AND $2::text IS NOT NULL"
            .to_owned(),
    ];
    for statement in &statements {
        sqlx::query(statement).bind(scope).bind(tenant).execute(pool).await.expect("fill the node");
    }
    sqlx::query("VACUUM ANALYZE runs, callbacks").execute(pool).await.expect("vacuum and analyse");
}

/// The plan (`EXPLAIN ANALYZE`, one line a row) of the statement prepared on the store's one
/// connection whose text starts with `starts`, run with `arguments` (SQL literals: `EXPLAIN
/// EXECUTE` takes no parameters of its own) inside a transaction that is rolled back. `types` are
/// its parameters' types.
pub async fn explain_prepared(pool: &sqlx::PgPool, starts: &str, types: &str, arguments: &str) -> Vec<String> {
    explain_prepared_as(pool, None, starts, types, arguments).await
}

/// As [`explain_prepared`], under `plan_cache_mode` = `mode` for the transaction when one is
/// given (`force_custom_plan`: the plan PostgreSQL makes for these arguments, as it does for a
/// statement's first five executions on a connection and whenever it judges custom plans
/// cheaper).
pub async fn explain_prepared_as(
    pool: &sqlx::PgPool,
    mode: Option<&str>,
    starts: &str,
    types: &str,
    arguments: &str,
) -> Vec<String> {
    let statement: String =
        sqlx::query_scalar("SELECT statement FROM pg_prepared_statements WHERE starts_with(statement, $1)")
            .bind(starts)
            .fetch_one(pool)
            .await
            .expect("the statement was prepared on this connection");
    explain_statement_as(pool, mode, &statement, types, arguments).await
}

/// The plan PostgreSQL keeps for the statement prepared on the store's one connection whose text
/// starts with `starts`: its generic plan (`plan_cache_mode = force_generic_plan` for the
/// transaction), made with the parameter types the server inferred for the statement and shown by
/// `EXPLAIN` without running it (so every argument is `NULL`: a generic plan does not look at
/// them). One line a row.
pub async fn generic_plan_of_prepared(pool: &sqlx::PgPool, starts: &str) -> Vec<String> {
    let (statement, types): (String, Vec<String>) = sqlx::query_as(
        "SELECT statement, parameter_types::text[] FROM pg_prepared_statements WHERE starts_with(statement, $1)",
    )
    .bind(starts)
    .fetch_one(pool)
    .await
    .expect("the statement was prepared on this connection");
    let nulls = vec!["NULL"; types.len()].join(", ");
    explain_in_transaction(pool, Some("force_generic_plan"), &statement, &types.join(", "), &nulls, "EXPLAIN").await
}

/// How a young database's first analysis follows `write`, a store's way of writing its `i`th run
/// (`i` from 1): whether `runs` was analysed after the first `from - 1` writes (half a second
/// given to an analysis started early, a task of its own), and whether it was within 20 seconds
/// of the `from`th. The database's tables must have autovacuum off, so that only the store's
/// analyses count.
pub async fn runs_analysed_at<F, Fut>(pool: &sqlx::PgPool, from: u64, mut write: F) -> (bool, bool)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let analyses = || async {
        sqlx::query_scalar::<_, i64>("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = 'runs'")
            .fetch_one(pool)
            .await
            .expect("the table's statistics")
    };
    let before = analyses().await;
    for i in 1..from {
        write(i).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let early = analyses().await > before;
    write(from).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        if analyses().await > before {
            return (early, true);
        }
        if std::time::Instant::now() >= deadline {
            return (early, false);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The query a PL/pgSQL function of the schema answers with: the text of its one
/// `RETURN QUERY`, up to the `;` that ends it. Such a query names the function's arguments `$1`,
/// `$2` …, so it can be prepared with them as parameters and explained
/// ([`explain_statement_as`]) as the function runs it.
pub async fn function_query(pool: &sqlx::PgPool, function: &str) -> String {
    let body: String = sqlx::query_scalar("SELECT prosrc FROM pg_proc WHERE proname = $1")
        .bind(function)
        .fetch_one(pool)
        .await
        .expect("the function exists");
    let (_, query) = body.split_once("RETURN QUERY").expect("the function answers a RETURN QUERY");
    let (query, _) = query.split_once(';').expect("the query ends with a ;");
    query.trim().to_owned()
}

/// As [`explain_prepared_as`], for `statement` given as text.
pub async fn explain_statement_as(
    pool: &sqlx::PgPool,
    mode: Option<&str>,
    statement: &str,
    types: &str,
    arguments: &str,
) -> Vec<String> {
    explain_in_transaction(pool, mode, statement, types, arguments, "EXPLAIN ANALYZE").await
}

/// `statement` prepared with parameters of `types` and explained by `explain` (`EXPLAIN`, or
/// `EXPLAIN ANALYZE`, which runs it) with `arguments`, in a transaction rolled back, under
/// `plan_cache_mode` = `mode` when one is given.
async fn explain_in_transaction(
    pool: &sqlx::PgPool,
    mode: Option<&str>,
    statement: &str,
    types: &str,
    arguments: &str,
    explain: &str,
) -> Vec<String> {
    let mut tx = pool.begin().await.expect("begin");
    if let Some(mode) = mode {
        sqlx::Executor::execute(&mut *tx, format!("SET LOCAL plan_cache_mode = {mode}").as_str())
            .await
            .expect("plan_cache_mode");
    }
    sqlx::Executor::execute(&mut *tx, format!("PREPARE explained({types}) AS {statement}").as_str())
        .await
        .expect("prepare");
    let plan: Vec<String> = sqlx::query_scalar(&format!("{explain} EXECUTE explained({arguments})"))
        .fetch_all(&mut *tx)
        .await
        .expect("explain");
    // A prepared statement is the session's, not the transaction's.
    sqlx::Executor::execute(&mut *tx, "DEALLOCATE explained").await.expect("deallocate");
    tx.rollback().await.expect("roll back");
    plan
}

/// One node of an `EXPLAIN ANALYZE` on a table: its rows and its rows removed by a filter (both
/// averages a loop, as `EXPLAIN` gives them) and its loops (0 when never executed).
struct NodeCounts {
    rows: i64,
    removed: i64,
    loops: i64,
}

/// The nodes on `table` of a plan, one line a row: each `Rows Removed by Filter: N` belongs to
/// the node line above it.
fn nodes_on(plan: &[String], table: &str) -> Vec<NodeCounts> {
    let on = format!(" on {table} ");
    let mut nodes: Vec<NodeCounts> = Vec::new();
    let mut node_on_table = false;
    for line in plan {
        let line = line.trim();
        if let Some(n) = line.strip_prefix("Rows Removed by Filter: ") {
            if node_on_table && let Some(node) = nodes.last_mut() {
                node.removed += n.trim().parse::<i64>().expect("a count");
            }
        } else if line.starts_with("->") || !line.contains(':') {
            node_on_table = line.contains(&on);
            if node_on_table {
                let actual = line.split("(actual ").nth(1).unwrap_or("");
                let field = |name: &str| -> i64 {
                    actual
                        .split_whitespace()
                        .find_map(|w| w.strip_prefix(name))
                        .map(|v| v.trim_end_matches(')').parse().expect("a count"))
                        .unwrap_or(0)
                };
                nodes.push(NodeCounts { rows: field("rows="), removed: 0, loops: field("loops=") });
            }
        }
    }
    nodes
}

/// The rows the plan's nodes on `table` read, summed over the lines of an `EXPLAIN ANALYZE`:
/// for each node on the table, the rows it returned and those it dropped by a filter, times its
/// loops (`EXPLAIN` gives both counts as averages a loop). A node never executed read nothing.
pub fn rows_read(plan: &[String], table: &str) -> i64 {
    nodes_on(plan, table).iter().map(|n| (n.rows + n.removed) * n.loops).sum()
}

/// The rows the plan's nodes on `table` read and then dropped by a filter, summed over the lines
/// of an `EXPLAIN ANALYZE` (as `EXPLAIN` gives them: an average a loop).
/// Other tables' nodes are left out: what other tests leave in them (another tenant's undelivered
/// callbacks, say) says nothing of the plan's reads of `table`.
pub fn rows_removed_by_filter(plan: &[String], table: &str) -> i64 {
    nodes_on(plan, table).iter().map(|n| n.removed).sum()
}
