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
