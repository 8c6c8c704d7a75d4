//! `RunStore::runs_with_status` (what reconciliation reads) on every store: the memory store,
//! SQLite, and PostgreSQL when `BYTE8_TEST_DATABASE_URL` is set.
#![cfg(all(feature = "sqlite", feature = "postgres"))]

use crate::support_postgres as pg;

use byte8_ledger_core::{
    outcome::{Outcome, SyncStatus},
    store::{AttemptRecord, Dedupe, NewRun, RunResult, RunStatus, RunStore, memory::MemoryStore, sqlite::SqliteStore},
};
use chrono::{DateTime, TimeZone, Utc};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
}

fn run(scope: &str, key: &str) -> NewRun {
    NewRun {
        scope: scope.to_owned(),
        tenant_id: None,
        idempotency_key: key.to_owned(),
        event: key.split(':').next().map(str::to_owned),
        magento_entity_id: key.rsplit(':').next().and_then(|n| n.parse().ok()),
        raw: format!("{{\"key\":\"{key}\"}}"),
        fingerprint: key.to_owned(),
        policy: None,
        received_at: t0(),
    }
}

fn finished(key: &str, status: RunStatus) -> RunResult {
    RunResult {
        status,
        outcome: Outcome {
            idempotency_key: Some(key.to_owned()),
            event: None,
            entity_type: None,
            magento_entity_id: None,
            provider: "sage_accounting".into(),
            sync_status: if status == RunStatus::Synced { SyncStatus::Synced } else { SyncStatus::Skipped },
            provider_entity_id: None,
            provider_reference: None,
            skip_reason: None,
            error_code: None,
            message: None,
            last_sync_at: t0(),
        },
        attempt: AttemptRecord {
            number: 1,
            started_at: t0(),
            finished_at: t0(),
            result: "synced".into(),
            error_code: None,
            message: None,
            ledger_id: None,
            exchanges: Vec::new(),
            recording: None,
            snapshot: None,
        },
        next_attempt_at: None,
        xrefs: Vec::new(),
    }
}

/// Three runs of `scope` synced, one skipped, one left queued, and one synced run of another
/// scope: only the three come back, oldest first, with their raw events.
async fn check(store: &dyn RunStore, scope: &str, other: &str) {
    let keys =
        ["invoice.created:1", "invoice.paid:1", "creditmemo.created:2", "invoice.created:3", "invoice.created:4"];
    let mut ids = Vec::new();
    for k in keys {
        ids.push(store.enqueue(run(scope, k), Dedupe::Permanent).await.unwrap().run_id());
    }
    let foreign = store.enqueue(run(other, "invoice.created:1"), Dedupe::Permanent).await.unwrap().run_id();
    let lease = t0() + chrono::Duration::minutes(5);
    for (i, id) in ids.iter().enumerate().take(4) {
        let claim = store.claim_run(*id, t0(), lease).await.unwrap().expect("due").claim;
        let status = if i == 3 { RunStatus::Skipped } else { RunStatus::Synced };
        store.finish(*id, claim, finished(keys[i], status)).await.unwrap();
    }
    let claim = store.claim_run(foreign, t0(), lease).await.unwrap().expect("due").claim;
    store.finish(foreign, claim, finished("invoice.created:1", RunStatus::Synced)).await.unwrap();

    let synced = store.runs_with_status(scope, RunStatus::Synced).await.unwrap();
    assert_eq!(synced.iter().map(|r| r.idempotency_key.as_str()).collect::<Vec<_>>(), &keys[..3]);
    assert_eq!(synced.iter().map(|r| r.id).collect::<Vec<_>>(), &ids[..3]);
    assert_eq!(synced[2].raw, "{\"key\":\"creditmemo.created:2\"}");
    assert!(synced.iter().all(|r| r.status == RunStatus::Synced && r.scope == scope));
    let skipped = store.runs_with_status(scope, RunStatus::Skipped).await.unwrap();
    assert_eq!(skipped.len(), 1);
    assert_eq!(skipped[0].idempotency_key, "invoice.created:3");
    let queued = store.runs_with_status(scope, RunStatus::Queued).await.unwrap();
    assert_eq!(queued.iter().map(|r| r.id).collect::<Vec<_>>(), [ids[4]]);
    assert!(store.runs_with_status("nobody", RunStatus::Synced).await.unwrap().is_empty());
}

#[tokio::test]
async fn memory_store() {
    check(&MemoryStore::new(), "biz", "other").await;
}

#[tokio::test]
async fn sqlite_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db"), None).await.unwrap();
    check(&store, "biz", "other").await;
}

#[tokio::test]
async fn postgres_store() {
    let Some(url) = pg::url("postgres_store") else { return };
    let store = pg::store(&url, 2, None).await;
    check(&store, &pg::unique("biz"), &pg::unique("other")).await;
}
