//! Retention as operators meet it: the service's periodic purge moving with its clock, and the
//! `byte8-ledger purge` command (dry run, counts, JSON, refused settings) on a state file.

use std::{process::Command, sync::Arc, time::Duration};

use byte8_ledger_core::{
    clock::{Clock, ManualClock, SystemClock},
    error::ErrorCode,
    outcome::{Outcome, SyncStatus},
    policy::SyncPolicy,
    store::{
        AttemptRecord, NewRun, RunResult, RunStatus, RunStore, Xref, XrefKind, XrefStore,
        crypto::MasterKey,
        retention::{RetentionPolicy, RetentionStore},
        sqlite::SqliteStore,
    },
};
use byte8_ledger_service::store::{Binding, BindingStatus, BindingStore, DispatchStore, MemoryServiceStore};
use byte8_ledger_service::{SageProviders, Service, ServiceConfig, magento::ApiKey};
use chrono::{DateTime, Utc};

fn binding(tenant: &str, scope: &str, at: DateTime<Utc>) -> Binding {
    let key = ApiKey::new(format!("key-of-{tenant}")).unwrap();
    Binding::new(tenant, scope, "https://shop.example.com", key, SyncPolicy::default(), at).unwrap()
}

/// A run of `tenant` received and synced at `at`, with one attempt.
async fn synced_run(store: &dyn RunStore, tenant: &str, scope: &str, key: &str, at: DateTime<Utc>) -> i64 {
    let run = NewRun {
        scope: scope.into(),
        tenant_id: Some(tenant.into()),
        idempotency_key: key.into(),
        event: Some("invoice.created".into()),
        magento_entity_id: Some(1),
        raw: format!("{{\"raw\":\"{key}\"}}"),
        fingerprint: key.into(),
        policy: None,
        received_at: at,
    };
    let id = store.enqueue(run, byte8_ledger_core::store::Dedupe::Permanent).await.unwrap().run_id();
    let claimed = store.claim_run(id, at, at + chrono::Duration::minutes(1)).await.unwrap().unwrap();
    let outcome = Outcome {
        idempotency_key: Some(key.into()),
        event: Some("invoice.created".into()),
        entity_type: Some("invoice".into()),
        magento_entity_id: Some(1),
        provider: "sage_accounting".into(),
        sync_status: SyncStatus::Synced,
        provider_entity_id: Some("L1".into()),
        provider_reference: None,
        skip_reason: None,
        error_code: None::<ErrorCode>,
        message: None,
        last_sync_at: at,
    };
    let attempt = AttemptRecord {
        number: 1,
        started_at: at,
        finished_at: at,
        result: "synced".into(),
        error_code: None,
        message: None,
        ledger_id: Some("L1".into()),
        exchanges: Vec::new(),
        recording: None,
        snapshot: None,
    };
    store
        .finish(
            id,
            claimed.claim,
            RunResult { status: RunStatus::Synced, outcome, attempt, next_attempt_at: None, xrefs: Vec::new() },
        )
        .await
        .unwrap();
    id
}

/// Waits (up to a minute, polling) until `f` holds; panics naming `what` otherwise.
async fn wait_until<F, Fut>(what: &str, f: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..6000 {
        if f().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("never happened: {what}");
}

#[tokio::test]
async fn the_service_purges_on_its_tick_at_its_clock_s_time() {
    let day0 = DateTime::parse_from_rfc3339("2026-01-10T09:00:00Z").unwrap().with_timezone(&Utc);
    let day = |d: i64| day0 + chrono::Duration::days(d);
    let store = Arc::new(MemoryServiceStore::default());
    // A tenant that left on day 0, and an active one whose day-0 callback was delivered on day 0.
    store.put_binding(&binding("t-gone", "biz-gone", day(-1))).await.unwrap();
    let gone_run = synced_run(store.as_ref(), "t-gone", "biz-gone", "invoice.created:1", day(0)).await;
    store
        .put_xref("biz-gone", XrefKind::Invoice, "1", &Xref::intent(None, serde_json::json!({}), day(0)))
        .await
        .unwrap();
    assert!(store.set_binding_status("t-gone", BindingStatus::Revoked, day(0)).await.unwrap());
    store.put_binding(&binding("t-live", "biz-live", day(-1))).await.unwrap();
    let live_run = synced_run(store.as_ref(), "t-live", "biz-live", "invoice.created:1", day(0)).await;
    let cb = store.claim_callbacks("biz-live", "t-live", day(0), day(0), 10).await.unwrap();
    assert_eq!(cb.len(), 1);
    store.callback_sent(cb[0].run.id, cb[0].generation, day(0)).await.unwrap();
    let policy = RetentionPolicy::default();
    let delivered_left = {
        let store = Arc::clone(&store);
        move |at: DateTime<Utc>| {
            let store = Arc::clone(&store);
            async move { store.purge(&policy, at, true).await.unwrap().callbacks }
        }
    };
    assert_eq!(delivered_left(day(50)).await, 1, "the delivered callback is due at day 50");

    let clock = ManualClock::new(day(50));
    let config = ServiceConfig {
        purge_interval: Duration::from_millis(20),
        retention: Some(policy),
        ..ServiceConfig::default()
    };
    let providers = Arc::new(SageProviders::new(Arc::clone(&store) as _));
    let service = Service::new(Arc::clone(&store) as _, providers, Arc::new(clock.clone()), config);
    let pool = service.spawn_workers(0);
    // Day 50: the tick removes the callback delivered 50 days ago, and nothing of the tenant
    // that left 50 days ago.
    wait_until("the tick purges the delivered callback", || {
        let f = delivered_left.clone();
        async move { f(day(50)).await == 0 }
    })
    .await;
    assert!(store.binding("t-gone").await.unwrap().is_some(), "day 50: the disconnected tenant is kept");
    assert!(!store.get(gone_run).await.unwrap().unwrap().raw.is_empty(), "day 50: its run is whole");
    assert!(!store.get(live_run).await.unwrap().unwrap().raw.is_empty(), "day 50: the raw event is kept");

    // Day 91: the disconnected tenant goes with its business's cross-reference; the active
    // tenant's run keeps its outcome and loses its raw event and attempts.
    clock.set(day(91));
    wait_until("the tick purges the tenant that left 91 days ago", || {
        let store = Arc::clone(&store);
        async move { store.binding("t-gone").await.unwrap().is_none() }
    })
    .await;
    pool.stop().await;
    assert!(store.get(gone_run).await.unwrap().is_none(), "day 91: the tenant's run is gone");
    assert!(store.get_xref("biz-gone", XrefKind::Invoice, "1").await.unwrap().is_none(), "its xref too");
    let live = store.get(live_run).await.unwrap().unwrap();
    assert_eq!((live.raw.as_str(), live.status), ("", RunStatus::Synced), "day 91: raw dropped, status kept");
    assert!(live.outcome.is_some(), "day 91: the outcome is kept");
    assert!(store.attempts(live_run).await.unwrap().is_empty(), "day 91: attempts dropped");
    assert!(store.binding("t-live").await.unwrap().is_some(), "the active tenant stays");
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_byte8-ledger"));
    c.env_remove("LEDGER_MASTER_KEY").env_remove("BYTE8_DATABASE_URL").env("RUST_LOG", "error");
    c
}

#[tokio::test]
async fn purge_prints_what_would_go_then_removes_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let now = SystemClock.now();
    let ago = |d: i64| now - chrono::Duration::days(d);
    let (gone_run, kept_run) = {
        let store = SqliteStore::open(&state, Some(MasterKey::generate())).await.unwrap();
        store.put_binding(&binding("t-gone", "biz-gone", ago(101))).await.unwrap();
        let gone = synced_run(&store, "t-gone", "biz-gone", "invoice.created:1", ago(100)).await;
        assert!(store.set_binding_status("t-gone", BindingStatus::Revoked, ago(100)).await.unwrap());
        store.put_binding(&binding("t-recent", "biz-recent", ago(101))).await.unwrap();
        let kept = synced_run(&store, "t-recent", "biz-recent", "invoice.created:1", ago(10)).await;
        assert!(store.set_binding_status("t-recent", BindingStatus::Revoked, ago(10)).await.unwrap());
        (gone, kept)
    };

    let o = bin().args(["purge", "--dry-run", "--state"]).arg(&state).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("would remove:"), "{out}");
    assert!(out.contains("disconnected tenants      1 (t-gone)"), "{out}");
    assert!(out.contains("runs                      1\n"), "{out}");
    assert!(out.contains("attempts                  1\n"), "{out}");
    {
        let store = SqliteStore::open(&state, None).await.unwrap();
        assert!(store.get(gone_run).await.unwrap().is_some(), "a dry run removes nothing");
    }

    let o = bin().args(["purge", "--json", "--state"]).arg(&state).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let report: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["tenants"], serde_json::json!(["t-gone"]), "{report}");
    assert_eq!((report["runs"].as_u64(), report["dry_run"].as_bool()), (Some(1), Some(false)), "{report}");
    {
        let store = SqliteStore::open(&state, None).await.unwrap();
        assert!(store.get(gone_run).await.unwrap().is_none(), "the tenant that left 100 days ago is purged");
        assert!(store.binding_info_exists("t-recent").await, "the tenant that left 10 days ago is kept");
        assert!(!store.get(kept_run).await.unwrap().unwrap().raw.is_empty());
    }
    // A shorter setting reaches it.
    let o = bin().args(["purge", "--disconnected-days", "5", "--state"]).arg(&state).output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("removed:") && out.contains("(t-recent)"), "{out}");
    let o = bin().args(["purge", "--state"]).arg(&state).output().unwrap();
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to purge"));

    let o = bin().args(["purge", "--attempt-days", "0", "--state"]).arg(&state).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "a zero retention is refused");
    assert!(String::from_utf8_lossy(&o.stderr).contains("attempt_days"), "{}", String::from_utf8_lossy(&o.stderr));
}

trait BindingInfoExists {
    async fn binding_info_exists(&self, tenant: &str) -> bool;
}

impl BindingInfoExists for SqliteStore {
    async fn binding_info_exists(&self, tenant: &str) -> bool {
        self.bindings().await.unwrap().iter().any(|b| b.tenant_id == tenant)
    }
}
