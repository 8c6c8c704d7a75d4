//! The memory store's extension point (`store::memory::MemoryExtension`), which the service
//! package's memory store is built on: the hook `finish` calls under the lock when a run ends,
//! and the extension's part of the retention purge.
#![cfg(feature = "conformance")]

use byte8_ledger_core::store::{
    Dedupe, RunId, RunStatus, RunStore,
    conformance::{new_run, result, t0},
    memory::{MemoryExtension, MemoryStore, MemoryTables},
    retention::{Cutoffs, PurgeReport, RetentionPolicy, RetentionStore},
};
use chrono::Duration;

/// Records what the store tells it; purges the runs it is asked to.
#[derive(Debug, Default)]
struct Recorder {
    /// (run, status, whether its outcome was written) per `run_ended`.
    ended: Vec<(RunId, RunStatus, bool)>,
    /// The runs its purge removes (and reports), and the `apply` flags it was called with.
    purge_runs: Vec<RunId>,
    purges: Vec<bool>,
}

impl MemoryExtension for Recorder {
    fn run_ended(&mut self, run: &byte8_ledger_core::store::Run, tables: &MemoryTables) {
        // The tables already hold what `finish` wrote.
        assert_eq!(tables.run(run.id).map(|r| r.status), Some(run.status));
        self.ended.push((run.id, run.status, run.outcome.is_some()));
    }

    fn purge(&mut self, tables: &mut MemoryTables, _: &Cutoffs, apply: bool, report: &mut PurgeReport) -> Vec<RunId> {
        self.purges.push(apply);
        report.runs += u64::try_from(self.purge_runs.len()).unwrap();
        if apply {
            for id in &self.purge_runs {
                tables.remove_run(*id);
            }
        }
        self.purge_runs.clone()
    }
}

fn ended(store: &MemoryStore<Recorder>) -> Vec<(RunId, RunStatus, bool)> {
    store.lock_tables().parts().1.ended.clone()
}

#[tokio::test]
async fn the_hook_hears_every_terminal_finish_and_nothing_else() {
    let store = MemoryStore::with_extension(Recorder::default());
    let lease = t0() + Duration::minutes(5);
    let id = store.enqueue(new_run("biz", "invoice.created:1", "{}"), Dedupe::Permanent).await.unwrap().run_id();
    // A retry is not an end.
    let c = store.claim_run(id, t0(), lease).await.unwrap().unwrap();
    store.finish(id, c.claim, result("invoice.created:1", RunStatus::Queued, 1, Some(t0()))).await.unwrap();
    assert_eq!(ended(&store), []);
    // A finish whose claim no longer holds writes nothing and tells nothing.
    let c = store.claim_run(id, t0(), lease).await.unwrap().unwrap();
    assert!(store.finish(id, c.claim - 1, result("invoice.created:1", RunStatus::Synced, 2, None)).await.is_err());
    assert_eq!(ended(&store), []);
    store.finish(id, c.claim, result("invoice.created:1", RunStatus::DeadLettered, 2, None)).await.unwrap();
    assert_eq!(ended(&store), [(id, RunStatus::DeadLettered, true)]);
    // Requeued and finished again: told again.
    assert!(store.requeue("biz", "invoice.created:1", t0()).await.unwrap());
    let c = store.claim_run(id, t0(), lease).await.unwrap().unwrap();
    store.finish(id, c.claim, result("invoice.created:1", RunStatus::Synced, 1, None)).await.unwrap();
    assert_eq!(ended(&store), [(id, RunStatus::DeadLettered, true), (id, RunStatus::Synced, true)]);
}

#[tokio::test]
async fn the_extension_purges_first_and_the_core_leaves_its_runs_alone() {
    let store = MemoryStore::with_extension(Recorder::default());
    let lease = t0() + Duration::minutes(5);
    let mut ids = Vec::new();
    for key in ["invoice.created:1", "invoice.created:2"] {
        let id = store.enqueue(new_run("biz", key, "{\"raw\":1}"), Dedupe::Permanent).await.unwrap().run_id();
        let c = store.claim_run(id, t0(), lease).await.unwrap().unwrap();
        store.finish(id, c.claim, result(key, RunStatus::Synced, 1, None)).await.unwrap();
        ids.push(id);
    }
    store.lock_tables().parts().1.purge_runs = vec![ids[0]];
    // Far past `attempt_days`: both runs are old enough for the core's part.
    let later = t0() + Duration::days(i64::from(RetentionPolicy::default().attempt_days) + 1);
    let dry = store.purge(&RetentionPolicy::default(), later, true).await.unwrap();
    // The extension's run is its own to report; the core counts only the other one.
    assert_eq!((dry.runs, dry.raw_events, dry.attempts, dry.dry_run), (1, 1, 1, true));
    assert!(store.get(ids[0]).await.unwrap().is_some_and(|r| !r.raw.is_empty()), "a dry run removes nothing");
    let done = store.purge(&RetentionPolicy::default(), later, false).await.unwrap();
    assert_eq!((done.runs, done.raw_events, done.attempts, done.dry_run), (1, 1, 1, false));
    assert!(store.get(ids[0]).await.unwrap().is_none(), "the extension removed its run");
    let kept = store.get(ids[1]).await.unwrap().expect("the run stays");
    assert_eq!((kept.raw.as_str(), kept.status), ("", RunStatus::Synced));
    assert!(store.attempts(ids[1]).await.unwrap().is_empty());
    assert_eq!(store.lock_tables().parts().1.purges, [false, true]);
}

#[tokio::test]
async fn the_plain_store_purges_its_finished_runs_alone() {
    let store = MemoryStore::new();
    let id = store.enqueue(new_run("biz", "invoice.created:3", "{}"), Dedupe::Permanent).await.unwrap().run_id();
    let c = store.claim_run(id, t0(), t0() + Duration::minutes(5)).await.unwrap().unwrap();
    store.finish(id, c.claim, result("invoice.created:3", RunStatus::Skipped, 1, None)).await.unwrap();
    let report = store.purge(&RetentionPolicy::default(), t0() + Duration::days(91), false).await.unwrap();
    assert_eq!((report.runs, report.raw_events, report.attempts, report.tenants.len()), (0, 1, 1, 0));
}
