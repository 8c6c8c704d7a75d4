//! Migration `0010_exchanges_once` on a SQLite state file written before it: the attempts'
//! exchanges move to one recording per batch (the runs of a batch each kept a full copy), and
//! attempt numbers that restarted at 1 after a retry are numbered on.

use byte8_ledger_core::{
    http::audit::ExchangeRecord,
    store::{RunStore, audit::RequestCount, crypto::MasterKey, sqlite::SqliteStore},
};
use chrono::{DateTime, Utc};

/// Exchanges as the crate serialised them into `attempts.exchanges` (migration 0008).
fn exchanges_json(urls: &[(&str, u16, &str)]) -> String {
    let list: Vec<serde_json::Value> = urls
        .iter()
        .map(|(url, status, at)| {
            serde_json::json!({"at": at, "method": "PUT", "url": url, "status": status,
                "request_body": format!("{{\"url\":\"{url}\"}}"), "response_body": "{}", "error": null})
        })
        .collect();
    serde_json::to_string(&list).unwrap()
}

#[tokio::test]
async fn sqlite_migration_0010_keeps_a_batchs_exchanges_once_and_numbers_attempts_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let old = dir.path().join("migrations");
    std::fs::create_dir(&old).unwrap();
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("migrations/sqlite");
    for entry in std::fs::read_dir(&root).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.as_str() < "0010" {
            std::fs::copy(root.join(&name), old.join(&name)).unwrap();
        }
    }
    let batch = exchanges_json(&[
        ("/api.xro/2.0/Contacts", 200, "2026-03-02T09:00:00.123456Z"),
        ("/api.xro/2.0/Invoices", 429, "2026-03-02T09:00:01Z"),
        ("/api.xro/2.0/Invoices", 200, "2026-03-02T09:00:02.5Z"),
    ]);
    let single = exchanges_json(&[("/v3.1/sales_invoices", 403, "2026-03-02T09:00:03.000001Z")]);
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&pool).await.unwrap();
        // Runs 1–3 of one batch (biz), 4 with a request of its own, 5 in another business with
        // a copy of the batch's text; run 4 was retried once (its count restarted: 1).
        for (id, scope, attempts) in [(1, "biz", 1), (2, "biz", 1), (3, "biz", 1), (4, "biz", 1), (5, "other", 1)] {
            sqlx::query(
                "INSERT INTO runs (id, scope, idempotency_key, raw, status, attempts, created_at, updated_at) \
                 VALUES (?, ?, ?, '{}', 'synced', ?, 0, 0)",
            )
            .bind(id)
            .bind(scope)
            .bind(format!("invoice.created:{id}"))
            .bind(attempts)
            .execute(&pool)
            .await
            .unwrap();
        }
        for (run, number, exchanges) in [
            (1, 1, Some(&batch)),
            (2, 1, Some(&batch)),
            (3, 1, Some(&batch)),
            (4, 1, Some(&single)),
            (4, 1, None),
            (5, 1, Some(&batch)),
        ] {
            sqlx::query(
                "INSERT INTO attempts (run_id, number, started_at, finished_at, result, exchanges) \
                 VALUES (?, ?, 0, 0, 'synced', ?)",
            )
            .bind(run)
            .bind(number)
            .bind(exchanges)
            .execute(&pool)
            .await
            .unwrap();
        }
        pool.close().await;
    }
    let store = SqliteStore::open(&path, Some(MasterKey::generate())).await.unwrap();
    let expected: Vec<ExchangeRecord> = serde_json::from_str(&batch).unwrap();
    let mut recordings = Vec::new();
    for run in [1, 2, 3, 5] {
        let attempts = store.attempts(run).await.unwrap();
        assert_eq!(attempts[0].exchanges, expected, "run {run} shows its batch's exchanges as they were");
        recordings.push(attempts[0].recording.clone().unwrap().id);
    }
    assert!(recordings[..3].iter().all(|r| *r == recordings[0]), "one recording for the batch: {recordings:?}");
    assert_ne!(recordings[3], recordings[0], "another business's copy is its own");
    let four = store.attempts(4).await.unwrap();
    assert_eq!(four[0].exchanges, serde_json::from_str::<Vec<ExchangeRecord>>(&single).unwrap());
    assert!(four[1].exchanges.is_empty() && four[1].recording.is_none());
    assert_eq!(four.iter().map(|a| a.number).collect::<Vec<_>>(), [1, 2], "numbered on");
    let run = store.get(4).await.unwrap().unwrap();
    assert_eq!((run.attempts, run.attempts_before_retry), (2, 1), "the count takes the kept attempts");
    let run = store.get(1).await.unwrap().unwrap();
    assert_eq!((run.attempts, run.attempts_before_retry), (1, 0));

    let since = DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z").unwrap().with_timezone(&Utc);
    assert_eq!(
        store.ledger_requests("biz", since).await.unwrap(),
        RequestCount { requests: 4, rate_limited: 1 },
        "the batch's three requests once, and run 4's"
    );
    let after = DateTime::parse_from_rfc3339("2026-03-02T09:00:02.5Z").unwrap().with_timezone(&Utc);
    assert_eq!(store.ledger_requests("biz", after).await.unwrap().requests, 2, "times migrated to the microsecond");
    assert_eq!(store.ledger_requests("other", since).await.unwrap().requests, 3);
}

#[tokio::test]
async fn postgres_migration_0010_keeps_a_batchs_exchanges_once_and_numbers_attempts_on() {
    use sqlx::Executor as _;
    let Some(url) =
        crate::support_postgres::url("postgres_migration_0010_keeps_a_batchs_exchanges_once_and_numbers_attempts_on")
    else {
        return;
    };
    // A schema of the test's own: the schema as it was before 0010, then migrated.
    let schema = crate::support_postgres::unique("mig").replace('-', "_");
    let search = schema.clone();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .after_connect(move |conn, _| {
            let s = search.clone();
            Box::pin(async move {
                conn.execute(format!("CREATE SCHEMA IF NOT EXISTS {s}; SET search_path TO {s}").as_str()).await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("migrations/postgres");
    for entry in std::fs::read_dir(&root).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.as_str() < "0010" {
            std::fs::copy(root.join(&name), dir.path().join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(dir.path()).await.unwrap().run(&pool).await.unwrap();
    let batch = exchanges_json(&[
        ("/api.xro/2.0/Contacts", 200, "2026-03-02T09:00:00.123456Z"),
        ("/api.xro/2.0/Invoices", 429, "2026-03-02T09:00:01Z"),
    ]);
    for (id, attempts) in [(1i64, 1i64), (2, 1), (3, 1)] {
        sqlx::query(
            "INSERT INTO runs (id, scope, idempotency_key, raw, status, attempts, created_at, updated_at) \
             OVERRIDING SYSTEM VALUE VALUES ($1, 'biz', $2, '\\x7b7d', 'synced', $3, now(), now())",
        )
        .bind(id)
        .bind(format!("invoice.created:{id}"))
        .bind(attempts)
        .execute(&pool)
        .await
        .unwrap();
    }
    for (run, exchanges) in [(1i64, Some(&batch)), (2, Some(&batch)), (3, None), (3, None)] {
        sqlx::query(
            "INSERT INTO attempts (run_id, number, started_at, finished_at, result, exchanges) \
             VALUES ($1, 1, now(), now(), 'synced', $2)",
        )
        .bind(run)
        .bind(exchanges)
        .execute(&pool)
        .await
        .unwrap();
    }
    sqlx::migrate::Migrator::new(root.as_path()).await.unwrap().run(&pool).await.unwrap();
    let store = byte8_ledger_core::store::postgres::PostgresStore::from_pool(pool.clone(), None).await.unwrap();
    let expected: Vec<ExchangeRecord> = serde_json::from_str(&batch).unwrap();
    let one = store.attempts(1).await.unwrap();
    let two = store.attempts(2).await.unwrap();
    assert_eq!((&one[0].exchanges, &two[0].exchanges), (&expected, &expected), "as they were");
    assert_eq!(one[0].recording.as_ref().map(|r| &r.id), two[0].recording.as_ref().map(|r| &r.id), "one recording");
    let since = DateTime::parse_from_rfc3339("2026-03-02T08:00:00Z").unwrap().with_timezone(&Utc);
    assert_eq!(store.ledger_requests("biz", since).await.unwrap(), RequestCount { requests: 2, rate_limited: 1 });
    assert_eq!(store.attempts(3).await.unwrap().iter().map(|a| a.number).collect::<Vec<_>>(), [1, 2]);
    let run = store.get(3).await.unwrap().unwrap();
    assert_eq!((run.attempts, run.attempts_before_retry), (2, 1));
    pool.execute(format!("DROP SCHEMA {schema} CASCADE").as_str()).await.unwrap();
}
