//! The store conformance suite: one async function per behaviour the engine relies on, run
//! against every [`Store`] (memory, SQLite, PostgreSQL) and usable by a host's own store. Each
//! panics with a message naming the behaviour when the store gets it wrong.
//!
//! ```no_run
//! # async fn demo(store: &dyn byte8_ledger_core::store::Store) {
//! byte8_ledger_core::store::conformance::run_all(store, "my-test-scope").await;
//! # }
//! ```

pub mod audit;

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, TimeZone, Utc};
use secrecy::{ExposeSecret, SecretString};
use serde_json::json;

use super::{
    AttemptRecord, Claimed, Connection, Dedupe, Enqueued, NewRun, RunResult, RunStatus, Store, Xref, XrefKind,
    XrefState,
};
use crate::{
    auth::TokenSet,
    error::ErrorCode,
    outcome::{Outcome, SyncStatus},
    reference::ReferenceData,
};

// The helpers below are public for suites built on this one (the service package's conformance
// suite of its own stores).

/// The suite's fixed "now": 2026-11-22 10:00 UTC.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).single().unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
}

/// A run without a tenant of `scope` keyed `key` (`event:entity id`), with `raw` as its event and
/// fingerprint source, received at [`t0`].
pub fn new_run(scope: &str, key: &str, raw: &str) -> NewRun {
    NewRun {
        scope: scope.to_owned(),
        tenant_id: None,
        idempotency_key: key.to_owned(),
        event: key.split(':').next().map(str::to_owned),
        magento_entity_id: key.rsplit(':').next().and_then(|n| n.parse().ok()),
        raw: raw.to_owned(),
        fingerprint: crate::identity::sha256_hex(raw),
        policy: Some("{}".into()),
        received_at: t0(),
    }
}

/// A run queued by `tenant` (the service's runs), otherwise as [`new_run`].
pub fn tenant_run(scope: &str, tenant: &str, key: &str, raw: &str) -> NewRun {
    NewRun { tenant_id: Some(tenant.to_owned()), ..new_run(scope, key, raw) }
}

fn outcome(key: &str, status: SyncStatus) -> Outcome {
    Outcome {
        idempotency_key: Some(key.to_owned()),
        event: key.split(':').next().map(str::to_owned),
        entity_type: Some("invoice".into()),
        magento_entity_id: Some(1),
        provider: "sage_accounting".into(),
        sync_status: status,
        provider_entity_id: (status == SyncStatus::Synced).then(|| "L1".into()),
        provider_reference: None,
        skip_reason: None,
        error_code: (status == SyncStatus::Failed).then_some(ErrorCode::Provider),
        message: None,
        last_sync_at: t0(),
    }
}

/// The result of attempt `number` of the run keyed `key` ending in `status` (the outcome's
/// sync status follows it: synced, skipped, failed otherwise), due again at `next`.
pub fn result(key: &str, status: RunStatus, number: u32, next: Option<DateTime<Utc>>) -> RunResult {
    let sync = match status {
        RunStatus::Synced => SyncStatus::Synced,
        RunStatus::Skipped => SyncStatus::Skipped,
        _ => SyncStatus::Failed,
    };
    RunResult {
        status,
        outcome: outcome(key, sync),
        attempt: AttemptRecord {
            number,
            started_at: t0(),
            finished_at: t0() + Duration::seconds(1),
            result: status.as_str().into(),
            error_code: (sync == SyncStatus::Failed).then_some(ErrorCode::Provider),
            message: (sync == SyncStatus::Failed).then(|| format!("attempt {number} failed")),
            ledger_id: (sync == SyncStatus::Synced).then(|| "L1".into()),
            exchanges: Vec::new(),
            recording: None,
            snapshot: None,
        },
        next_attempt_at: next,
        xrefs: Vec::new(),
    }
}

/// Documents dedupe for good on their key.
pub async fn documents_dedupe_for_good(store: &dyn Store, scope: &str) {
    let key = "invoice.created:1001";
    let first = store.enqueue(new_run(scope, key, "a"), Dedupe::Permanent).await.expect("enqueue");
    let Enqueued::New(id) = first else {
        panic!("documents_dedupe_for_good: first enqueue must be new, got {first:?}")
    };
    let second = store.enqueue(new_run(scope, key, "b"), Dedupe::Permanent).await.expect("enqueue");
    assert_eq!(
        second,
        Enqueued::Duplicate { id, status: RunStatus::Queued },
        "documents_dedupe_for_good: queued duplicate"
    );
    let run = store.claim_run(id, t0(), t0() + Duration::seconds(60)).await.expect("claim").expect("claimable");
    assert_eq!(run.raw, "a", "documents_dedupe_for_good: the first raw event is kept");
    store.finish(id, run.claim, result(key, RunStatus::Synced, 1, None)).await.expect("finish");
    let third = store.enqueue(new_run(scope, key, "c"), Dedupe::Permanent).await.expect("enqueue");
    assert_eq!(
        third,
        Enqueued::Duplicate { id, status: RunStatus::Synced },
        "documents_dedupe_for_good: synced duplicate"
    );
    let stored = store.get(id).await.expect("get").expect("run");
    assert_eq!(stored.outcome.map(|o| o.sync_status), Some(SyncStatus::Synced));
}

/// Upserts collapse while queued, and make a new run once the old one started.
pub async fn upserts_collapse_while_queued(store: &dyn Store, scope: &str) {
    let key = "product.upserted:7";
    let Enqueued::New(id) = store.enqueue(new_run(scope, key, "v1"), Dedupe::WhileQueued).await.expect("enqueue")
    else {
        panic!("upserts_collapse_while_queued: first must be new")
    };
    let again = store.enqueue(new_run(scope, key, "v2"), Dedupe::WhileQueued).await.expect("enqueue");
    assert_eq!(again, Enqueued::Collapsed(id), "upserts_collapse_while_queued: collapsed into the queued run");
    let run = store.claim_run(id, t0(), t0() + Duration::seconds(60)).await.expect("claim").expect("claimable");
    assert_eq!(run.raw, "v2", "upserts_collapse_while_queued: the newer event wins");
    let later = store.enqueue(new_run(scope, key, "v3"), Dedupe::WhileQueued).await.expect("enqueue");
    assert!(
        matches!(later, Enqueued::New(n) if n != id),
        "upserts_collapse_while_queued: a started run is not reused: {later:?}"
    );
}

/// A run queued and claimed in one step ([`RunStore::enqueue_claimed`](super::RunStore::enqueue_claimed))
/// is what the store keeps, held by that claim until its lease ends; a duplicate or a collapse
/// claims nothing.
pub async fn new_runs_are_queued_claimed(store: &dyn Store, scope: &str) {
    let lease = t0() + Duration::seconds(60);
    // A received time between microseconds, a NUL in the key and an entity id beyond SQL's
    // BIGINT: the run answered is the run stored, as the store keeps each.
    let mut run = NewRun {
        magento_entity_id: Some(u64::MAX),
        received_at: t0() + Duration::nanoseconds(1_500),
        ..tenant_run(scope, "tenant-a", "invoice.created:3001\0x", "a")
    };
    run.policy = Some("{\"p\":1}".into());
    let (first, claimed) = store.enqueue_claimed(run, Dedupe::Permanent, lease).await.expect("enqueue_claimed");
    let Enqueued::New(id) = first else { panic!("new_runs_are_queued_claimed: a new key must be new, got {first:?}") };
    let claimed = claimed.expect("new_runs_are_queued_claimed: a new run is claimed");
    let stored = store.get(id).await.expect("get").expect("run");
    assert_eq!(claimed, stored, "new_runs_are_queued_claimed: the run answered is the run stored");
    assert_eq!(
        (stored.status, stored.claim, stored.attempts),
        (RunStatus::Running, 1, 0),
        "new_runs_are_queued_claimed: running under its first claim, no attempt yet"
    );
    assert!(
        store.claim_run(id, lease - Duration::seconds(1), lease).await.expect("claim").is_none(),
        "new_runs_are_queued_claimed: nobody claims it while its lease lasts"
    );
    assert!(
        store
            .claim_for(scope, Some("tenant-a"), lease - Duration::seconds(1), lease, 10)
            .await
            .expect("claim")
            .is_empty(),
        "new_runs_are_queued_claimed: it is not due for a worker either"
    );
    store.finish(id, 1, result("invoice.created:3001", RunStatus::Synced, 1, None)).await.expect("finish");
    assert_eq!(
        store.get(id).await.expect("get").map(|r| r.status),
        Some(RunStatus::Synced),
        "new_runs_are_queued_claimed: its first claim finishes it"
    );

    // A document again: the duplicate, nothing claimed.
    let again = tenant_run(scope, "tenant-a", "invoice.created:3001\0x", "b");
    let (dup, none) = store.enqueue_claimed(again, Dedupe::Permanent, lease).await.expect("enqueue_claimed");
    assert_eq!(
        (dup, none),
        (Enqueued::Duplicate { id, status: RunStatus::Synced }, None),
        "new_runs_are_queued_claimed: a duplicate is not claimed"
    );

    // An upsert collapsed into a queued run: still queued, nothing claimed, due at once.
    let key = "product.upserted:3002";
    let queued = store.enqueue(new_run(scope, key, "v1"), Dedupe::WhileQueued).await.expect("enqueue").run_id();
    let (collapsed, none) =
        store.enqueue_claimed(new_run(scope, key, "v2"), Dedupe::WhileQueued, lease).await.expect("enqueue_claimed");
    assert_eq!(
        (collapsed, none),
        (Enqueued::Collapsed(queued), None),
        "new_runs_are_queued_claimed: a collapse is not claimed"
    );
    let run =
        store.claim_run(queued, t0(), lease).await.expect("claim").expect("new_runs_are_queued_claimed: still due");
    assert_eq!(
        (run.raw.as_str(), run.claim),
        ("v2", 1),
        "new_runs_are_queued_claimed: the collapse's claim is the first"
    );

    // Its lease ended, a claimed run is due again like any other, under the next claim.
    let (next, claimed) = store
        .enqueue_claimed(new_run(scope, "invoice.created:3003", "c"), Dedupe::Permanent, lease)
        .await
        .expect("enqueue_claimed");
    assert!(claimed.is_some(), "new_runs_are_queued_claimed: claimed");
    let later = store.claim_run(next.run_id(), lease, lease + Duration::seconds(60)).await.expect("claim");
    assert_eq!(
        later.map(|r| r.claim),
        Some(2),
        "new_runs_are_queued_claimed: after its lease, claimed again under claim 2"
    );
}

/// Concurrent claimers never get the same run, and every due run is claimed.
pub async fn claims_are_exclusive(store: &dyn Store, scope: &str) {
    let mut ids = BTreeSet::new();
    for i in 0..40 {
        let e = store
            .enqueue(new_run(scope, &format!("invoice.created:{}", 5000 + i), "x"), Dedupe::Permanent)
            .await
            .expect("enqueue");
        ids.insert(e.run_id());
    }
    let claimed = std::sync::Mutex::new(Vec::new());
    let lease = t0() + Duration::seconds(300);
    let worker = || async {
        loop {
            let got = store.claim(scope, t0(), lease, 3).await.expect("claim");
            if got.is_empty() {
                break;
            }
            claimed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(got.into_iter().map(|r| r.id));
        }
    };
    futures::join!(worker(), worker(), worker(), worker(), worker(), worker());
    let mut claimed = claimed.into_inner().unwrap_or_else(std::sync::PoisonError::into_inner);
    claimed.sort_unstable();
    let unique: BTreeSet<_> = claimed.iter().copied().collect();
    assert_eq!(claimed.len(), unique.len(), "claims_are_exclusive: a run was claimed twice");
    assert!(ids.is_subset(&unique), "claims_are_exclusive: some due runs were never claimed");
}

/// A crashed worker's run (lease expired) is claimed again.
pub async fn expired_leases_are_reclaimed(store: &dyn Store, scope: &str) {
    let id =
        store.enqueue(new_run(scope, "invoice.created:2", "x"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let lease = t0() + Duration::seconds(30);
    assert!(store.claim_run(id, t0(), lease).await.expect("claim").is_some());
    assert!(
        store.claim_run(id, t0() + Duration::seconds(10), lease).await.expect("claim").is_none(),
        "expired_leases_are_reclaimed: a live lease must not be claimed"
    );
    let again =
        store.claim(scope, t0() + Duration::seconds(31), t0() + Duration::seconds(90), 10).await.expect("claim");
    assert!(again.iter().any(|r| r.id == id), "expired_leases_are_reclaimed: the expired lease is claimable");
}

/// A run put back with a later `next_attempt_at` waits until then.
pub async fn retries_wait_for_their_time(store: &dyn Store, scope: &str) {
    let key = "invoice.paid:3";
    let id = store.enqueue(new_run(scope, key, "x"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let run = store.claim_run(id, t0(), t0() + Duration::seconds(60)).await.expect("claim").expect("claimable");
    let next = t0() + Duration::seconds(120);
    store.finish(id, run.claim, result(key, RunStatus::Queued, 1, Some(next))).await.expect("finish");
    assert!(
        store
            .claim_run(id, t0() + Duration::seconds(119), t0() + Duration::seconds(300))
            .await
            .expect("claim")
            .is_none(),
        "retries_wait_for_their_time: claimed before next_attempt_at"
    );
    let run = store.claim_run(id, next, next + Duration::seconds(60)).await.expect("claim").expect("due");
    assert_eq!(run.attempts, 1, "retries_wait_for_their_time: attempts counted");
}

/// Runs waiting in line after a failed attempt are listed, soonest first, with the outcome that
/// says why; fresh and finished runs are not.
pub async fn waiting_runs_say_why(store: &dyn Store, scope: &str) {
    let later = t0() + Duration::seconds(600);
    let sooner = t0() + Duration::seconds(60);
    let mut ids = Vec::new();
    for (key, next) in [("invoice.paid:71", Some(later)), ("invoice.paid:72", Some(sooner)), ("invoice.paid:73", None)]
    {
        let id = store.enqueue(new_run(scope, key, "x"), Dedupe::Permanent).await.expect("enqueue").run_id();
        let run = store.claim_run(id, t0(), t0() + Duration::seconds(30)).await.expect("claim").expect("claimable");
        let status = if next.is_some() { RunStatus::Queued } else { RunStatus::Synced };
        store.finish(id, run.claim, result(key, status, 1, next)).await.expect("finish");
        ids.push(id);
    }
    store.enqueue(new_run(scope, "invoice.paid:74", "x"), Dedupe::Permanent).await.expect("enqueue a fresh run");
    let waiting = store.waiting(scope, 10).await.expect("waiting");
    assert_eq!(
        waiting.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![ids[1], ids[0]],
        "waiting_runs_say_why: the two retried runs, soonest first (not the synced nor the fresh one)"
    );
    assert_eq!(
        waiting[0].outcome.as_ref().and_then(|o| o.error_code),
        Some(ErrorCode::Provider),
        "waiting_runs_say_why: the outcome says why"
    );
    assert_eq!(store.waiting(scope, 1).await.expect("waiting").len(), 1, "waiting_runs_say_why: the limit holds");
}

/// Dead letters keep the raw event and every attempt, and can be requeued.
pub async fn dead_letters_keep_everything_and_requeue(store: &dyn Store, scope: &str) {
    let key = "creditmemo.created:4";
    let id = store.enqueue(new_run(scope, key, "{\"raw\":true}"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let run = store.claim_run(id, t0(), t0() + Duration::seconds(60)).await.expect("claim").expect("claimable");
    store.finish(id, run.claim, result(key, RunStatus::Queued, 1, Some(t0()))).await.expect("finish");
    let run = store.claim_run(id, t0(), t0() + Duration::seconds(60)).await.expect("claim").expect("claimable");
    store.finish(id, run.claim, result(key, RunStatus::DeadLettered, 2, None)).await.expect("finish");
    let dead = store.dead_letters(scope, 10).await.expect("dead letters");
    let run = dead.iter().find(|r| r.id == id).expect("dead_letters_keep_everything_and_requeue: listed");
    assert_eq!(run.raw, "{\"raw\":true}", "dead_letters_keep_everything_and_requeue: raw kept");
    let attempts = store.attempts(id).await.expect("attempts");
    assert_eq!(
        attempts.iter().map(|a| a.number).collect::<Vec<_>>(),
        vec![1, 2],
        "dead_letters_keep_everything_and_requeue: attempts in order"
    );
    assert_eq!(attempts[1].message.as_deref(), Some("attempt 2 failed"));
    assert!(
        store.requeue(scope, key, t0()).await.expect("requeue"),
        "dead_letters_keep_everything_and_requeue: requeued"
    );
    let run = store.claim_run(id, t0(), t0() + Duration::seconds(60)).await.expect("claim").expect("claimable again");
    assert_eq!(run.status, RunStatus::Running);
    assert!(!store.requeue(scope, "nope:1", t0()).await.expect("requeue"), "nothing to requeue for an unknown key");
}

/// `finish` is fenced by the claim: a worker whose lease lapsed, and whose run another worker
/// claimed since, cannot overwrite that worker's result; nor can one whose run was released or
/// already finished.
pub async fn finish_is_fenced_by_the_claim(store: &dyn Store, scope: &str) {
    let key = "invoice.created:61";
    let id = store.enqueue(new_run(scope, key, "x"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let slow = store.claim_run(id, t0(), t0() + Duration::seconds(30)).await.expect("claim").expect("claimable");
    // The slow worker's lease lapses; another worker takes the run over.
    let fast = store
        .claim_run(id, t0() + Duration::seconds(31), t0() + Duration::seconds(90))
        .await
        .expect("claim")
        .expect("finish_is_fenced_by_the_claim: an expired lease is claimable");
    assert_ne!(slow.claim, fast.claim, "finish_is_fenced_by_the_claim: each claim has its own generation");
    store
        .finish(id, fast.claim, result(key, RunStatus::Synced, 1, None))
        .await
        .expect("finish_is_fenced_by_the_claim: the current claim finishes");
    let late = store.finish(id, slow.claim, result(key, RunStatus::DeadLettered, 1, None)).await;
    let err = late.expect_err("finish_is_fenced_by_the_claim: a lapsed claim must not overwrite the result");
    assert!(err.to_string().contains("claim"), "finish_is_fenced_by_the_claim: the error says why: {err}");
    let run = store.get(id).await.expect("get").expect("run");
    assert_eq!(
        (run.status, run.outcome.map(|o| o.sync_status)),
        (RunStatus::Synced, Some(SyncStatus::Synced)),
        "finish_is_fenced_by_the_claim: the later claimer's result stands"
    );
    assert_eq!(store.attempts(id).await.expect("attempts").len(), 1, "finish_is_fenced_by_the_claim: one attempt");
    // Finishing twice with the same claim: the run is no longer running.
    assert!(
        store.finish(id, fast.claim, result(key, RunStatus::DeadLettered, 2, None)).await.is_err(),
        "finish_is_fenced_by_the_claim: a finished run is not finished again"
    );
    // The slow worker finishing before the other does: refused too, and the other still finishes.
    let key = "invoice.created:62";
    let id = store.enqueue(new_run(scope, key, "y"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let slow = store.claim_run(id, t0(), t0() + Duration::seconds(30)).await.expect("claim").expect("claimable");
    let fast = store
        .claim_run(id, t0() + Duration::seconds(40), t0() + Duration::seconds(90))
        .await
        .expect("claim")
        .expect("claimable");
    assert!(store.finish(id, slow.claim, result(key, RunStatus::Synced, 1, None)).await.is_err());
    assert_eq!(store.get(id).await.expect("get").map(|r| r.status), Some(RunStatus::Running));
    store.finish(id, fast.claim, result(key, RunStatus::Skipped, 1, None)).await.expect("finish");
    assert_eq!(store.get(id).await.expect("get").map(|r| r.status), Some(RunStatus::Skipped));
    // A run released (its worker known gone) and claimed again by `claim`.
    let key = "invoice.created:63";
    let id = store.enqueue(new_run(scope, key, "z"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let gone = store.claim_run(id, t0(), t0() + Duration::seconds(300)).await.expect("claim").expect("claimable");
    assert!(store.release_leases(scope, t0()).await.expect("release") >= 1);
    assert!(
        store.finish(id, gone.claim, result(key, RunStatus::Synced, 1, None)).await.is_err(),
        "finish_is_fenced_by_the_claim: a released run's old claim is refused"
    );
    let again = store.claim(scope, t0(), t0() + Duration::seconds(60), 10).await.expect("claim");
    let again = again.iter().find(|r| r.id == id).expect("finish_is_fenced_by_the_claim: released runs are due");
    store.finish(id, again.claim, result(key, RunStatus::Synced, 1, None)).await.expect("finish");
}

/// `finish` writes the cross-reference entries the attempt held back ([`RunResult::xrefs`]) with
/// the run's end, whatever the status (an attempt that posted an invoice and failed a later step
/// still records the invoice), in the run's scope, replacing what is stored (an intent, or an
/// older done entry); two entries of one key: the last one counts.
pub async fn finish_writes_the_held_xrefs_with_the_run(store: &dyn Store, scope: &str) {
    let name = "finish_writes_the_held_xrefs_with_the_run";
    let other = format!("{scope}-other");
    for (n, status) in
        [RunStatus::Synced, RunStatus::Skipped, RunStatus::Queued, RunStatus::DeadLettered].into_iter().enumerate()
    {
        let key = format!("invoice.created:{}", 70 + n);
        let doc = format!("{}", 7000 + n);
        let id = store.enqueue(new_run(scope, &key, &key), Dedupe::Permanent).await.expect("enqueue").run_id();
        let run = store.claim_run(id, t0(), t0() + Duration::seconds(60)).await.expect("claim").expect("claimable");
        // The intent written before the request; a stale entry of the contact in another scope.
        let intent = Xref::intent(Some(format!("SI-{doc}")), json!({}), t0());
        store.put_xref(scope, XrefKind::Invoice, &doc, &intent).await.expect("put");
        let foreign = Xref::done("C-OTHER".into(), None, json!({}), t0());
        store.put_xref(&other, XrefKind::Contact, &format!("customer:{doc}:GBP"), &foreign).await.expect("put");
        let invoice = Xref::done(
            format!("L-{doc}"),
            Some(format!("SI-{doc}")),
            json!({"contact_id": format!("C-{doc}"), "outstanding": "30.00"}),
            t0() + Duration::seconds(1),
        );
        let first = Xref::done("C-FIRST".into(), None, json!({"adopted": true}), t0());
        let contact = Xref::done(format!("C-{doc}"), Some("CUST-5".into()), json!({"currency": "GBP"}), t0());
        let mut ended = result(&key, status, 1, (status == RunStatus::Queued).then(|| t0() + Duration::minutes(5)));
        ended.xrefs = vec![
            (XrefKind::Contact, format!("customer:{doc}:GBP"), first),
            (XrefKind::Invoice, doc.clone(), invoice.clone()),
            (XrefKind::Contact, format!("customer:{doc}:GBP"), contact.clone()),
        ];
        store.finish(id, run.claim, ended).await.unwrap_or_else(|e| panic!("{name}: {status:?} finishes: {e}"));
        assert_eq!(store.get(id).await.expect("get").map(|r| r.status), Some(status), "{name}: the run ended");
        assert_eq!(
            store.get_xref(scope, XrefKind::Invoice, &doc).await.expect("get"),
            Some(invoice),
            "{name}: a {status:?} run's done record replaces its intent"
        );
        assert_eq!(
            store.get_xref(scope, XrefKind::Contact, &format!("customer:{doc}:GBP")).await.expect("get"),
            Some(contact),
            "{name}: a {status:?} run's new entry is written, the last of one key counting"
        );
        assert_eq!(
            store.get_xref(&other, XrefKind::Contact, &format!("customer:{doc}:GBP")).await.expect("get"),
            Some(foreign),
            "{name}: written in the run's scope only"
        );
    }
}

/// A finish whose claim was lost writes nothing of the run, yet still records the documents the
/// stalled attempt posted: its held cross-reference entries fill in entries missing or still an
/// intent, never replace a done entry (the worker that took the run over recorded it), and the
/// finish still answers that the claim was lost.
pub async fn a_lost_claim_still_fills_in_the_held_xrefs(store: &dyn Store, scope: &str) {
    let name = "a_lost_claim_still_fills_in_the_held_xrefs";
    let key = "creditmemo.created:64";
    let id = store.enqueue(new_run(scope, key, "m"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let slow = store.claim_run(id, t0(), t0() + Duration::seconds(30)).await.expect("claim").expect("claimable");
    let fast = store
        .claim_run(id, t0() + Duration::seconds(31), t0() + Duration::seconds(90))
        .await
        .expect("claim")
        .expect("claimable");
    // What the stalled attempt wrote at once: the credit note's and the allocation's intents.
    let intent = Xref::intent(Some("SCN-64".into()), json!({}), t0());
    store.put_xref(scope, XrefKind::CreditNote, "64", &intent).await.expect("put");
    store.put_xref(scope, XrefKind::Allocation, "64", &intent).await.expect("put");
    // The worker that took over found the credit note by reference and finished first; its
    // record of the invoice is newer than anything the stalled attempt knows.
    let fast_note =
        Xref::done("CN-1".into(), Some("SCN-64".into()), json!({"by": "fast"}), t0() + Duration::seconds(40));
    let fast_invoice = Xref::done("INV-1".into(), None, json!({"outstanding": "0.00"}), t0() + Duration::seconds(40));
    let mut fast_result = result(key, RunStatus::Synced, 2, None);
    fast_result.xrefs = vec![
        (XrefKind::CreditNote, "64".into(), fast_note.clone()),
        (XrefKind::Invoice, "9".into(), fast_invoice.clone()),
    ];
    store.finish(id, fast.claim, fast_result).await.expect("the current claim finishes");
    // The stalled attempt ends late with what it learnt.
    let slow_note =
        Xref::done("CN-1".into(), Some("SCN-64".into()), json!({"by": "slow"}), t0() + Duration::seconds(50));
    let slow_invoice = Xref::done("INV-1".into(), None, json!({"outstanding": "12.00"}), t0() + Duration::seconds(50));
    let slow_allocation = Xref::done("AL-1".into(), None, json!({"amount": "12.00"}), t0() + Duration::seconds(50));
    let slow_contact = Xref::done("C-1".into(), Some("CUST-1".into()), json!({}), t0() + Duration::seconds(50));
    let mut late = result(key, RunStatus::DeadLettered, 1, None);
    late.xrefs = vec![
        (XrefKind::CreditNote, "64".into(), slow_note),
        (XrefKind::Invoice, "9".into(), slow_invoice),
        (XrefKind::Allocation, "64".into(), slow_allocation.clone()),
        (XrefKind::Contact, "customer:1:GBP".into(), slow_contact.clone()),
    ];
    let err = store.finish(id, slow.claim, late).await.expect_err("the lapsed claim is refused");
    assert!(err.to_string().contains("claim"), "{name}: the error says why: {err}");
    let run = store.get(id).await.expect("get").expect("run");
    assert_eq!(run.status, RunStatus::Synced, "{name}: the later claimer's result stands");
    assert_eq!(store.attempts(id).await.expect("attempts").len(), 1, "{name}: no attempt of the lapsed claim");
    let get = |kind, key: &'static str| async move { store.get_xref(scope, kind, key).await.expect("get") };
    assert_eq!(get(XrefKind::CreditNote, "64").await, Some(fast_note), "{name}: a done entry is kept");
    assert_eq!(get(XrefKind::Invoice, "9").await, Some(fast_invoice), "{name}: a newer done entry is never made stale");
    assert_eq!(get(XrefKind::Allocation, "64").await, Some(slow_allocation), "{name}: an intent is filled in");
    assert_eq!(get(XrefKind::Contact, "customer:1:GBP").await, Some(slow_contact), "{name}: a missing one is written");

    // The stalled attempt ending before the run's new holder: the run stays running under the new
    // claim, the entries are filled in, and the holder finishes as usual.
    let key = "creditmemo.created:65";
    let id = store.enqueue(new_run(scope, key, "n"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let slow = store.claim_run(id, t0(), t0() + Duration::seconds(30)).await.expect("claim").expect("claimable");
    let fast = store
        .claim_run(id, t0() + Duration::seconds(40), t0() + Duration::seconds(90))
        .await
        .expect("claim")
        .expect("claimable");
    let note = Xref::done("CN-2".into(), Some("SCN-65".into()), json!({}), t0() + Duration::seconds(45));
    let mut early = result(key, RunStatus::Synced, 1, None);
    early.xrefs = vec![(XrefKind::CreditNote, "65".into(), note.clone())];
    assert!(store.finish(id, slow.claim, early).await.is_err(), "{name}: the lapsed claim is refused");
    assert_eq!(store.get(id).await.expect("get").map(|r| r.status), Some(RunStatus::Running));
    assert_eq!(get(XrefKind::CreditNote, "65").await, Some(note), "{name}: filled in before the holder ends");
    store.finish(id, fast.claim, result(key, RunStatus::Synced, 2, None)).await.expect("the holder finishes");
    assert_eq!(store.get(id).await.expect("get").map(|r| r.status), Some(RunStatus::Synced));
}

/// Runs carry the tenant that queued them: they dedupe, and are claimed, per tenant; `claim`
/// without a tenant never takes a tenant's run.
pub async fn runs_are_claimed_per_tenant(store: &dyn Store, scope: &str) {
    let key = "invoice.created:81";
    let a = store.enqueue(tenant_run(scope, "tenant-a", key, "a"), Dedupe::Permanent).await.expect("enqueue");
    let b = store.enqueue(tenant_run(scope, "tenant-b", key, "b"), Dedupe::Permanent).await.expect("enqueue");
    let none = store.enqueue(new_run(scope, key, "n"), Dedupe::Permanent).await.expect("enqueue");
    assert!(
        matches!((a, b, none), (Enqueued::New(x), Enqueued::New(y), Enqueued::New(z)) if x != y && y != z && x != z),
        "runs_are_claimed_per_tenant: two tenants' keys are two runs: {a:?} {b:?} {none:?}"
    );
    let again = store.enqueue(tenant_run(scope, "tenant-b", key, "b2"), Dedupe::Permanent).await.expect("enqueue");
    assert_eq!(again.run_id(), b.run_id(), "runs_are_claimed_per_tenant: a tenant's own key still dedupes");
    let lease = t0() + Duration::seconds(60);
    let got = store.claim_for(scope, Some("tenant-b"), t0(), lease, 10).await.expect("claim");
    assert_eq!(
        got.iter().map(|r| (r.id, r.tenant_id.as_deref())).collect::<Vec<_>>(),
        vec![(b.run_id(), Some("tenant-b"))],
        "runs_are_claimed_per_tenant: tenant b claims its run only"
    );
    let got = store.claim(scope, t0(), lease, 10).await.expect("claim");
    assert_eq!(
        got.iter().map(|r| r.id).collect::<Vec<_>>(),
        vec![none.run_id()],
        "runs_are_claimed_per_tenant: `claim` takes the runs without a tenant only"
    );
    let got = store.claim_for(scope, Some("tenant-a"), t0(), lease, 10).await.expect("claim");
    assert_eq!(got.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a.run_id()]);
    assert_eq!(got[0].raw, "a", "runs_are_claimed_per_tenant: each tenant's own event");
    assert!(store.claim_for(scope, Some("tenant-c"), t0(), lease, 10).await.expect("claim").is_empty());
}

/// `claim_next` claims like `claim_for` and says whether more of the tenant's runs are due
/// after it: another tenant's, or a run not due yet, does not count; `limit` 0 only looks.
pub async fn claims_say_whether_more_are_due(store: &dyn Store, scope: &str) {
    let lease = t0() + Duration::seconds(60);
    let peek = store.claim_next(scope, Some("tenant-a"), t0(), lease, 0).await.expect("claim_next");
    assert_eq!(peek, Claimed::default(), "claims_say_whether_more_are_due: nothing queued, nothing due");
    let mut ids = Vec::new();
    for i in 0..3 {
        let key = format!("invoice.created:9{i}");
        let e = store.enqueue(tenant_run(scope, "tenant-a", &key, "a"), Dedupe::Permanent).await.expect("enqueue");
        ids.push(e.run_id());
    }
    store.enqueue(tenant_run(scope, "tenant-b", "invoice.created:99", "b"), Dedupe::Permanent).await.expect("enqueue");
    let peek = store.claim_next(scope, Some("tenant-a"), t0(), lease, 0).await.expect("claim_next");
    assert!(
        peek.runs.is_empty() && peek.more,
        "claims_say_whether_more_are_due: limit 0 claims nothing and sees the runs due: {peek:?}"
    );
    let first = store.claim_next(scope, Some("tenant-a"), t0(), lease, 2).await.expect("claim_next");
    assert_eq!(
        first.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[..2],
        "claims_say_whether_more_are_due: the oldest two"
    );
    assert!(first.more, "claims_say_whether_more_are_due: a third run is due after two are claimed");
    let second = store.claim_next(scope, Some("tenant-a"), t0(), lease, 2).await.expect("claim_next");
    assert_eq!(
        second.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[2..],
        "claims_say_whether_more_are_due: the last one"
    );
    assert!(!second.more, "claims_say_whether_more_are_due: drained (tenant b's run is not tenant a's)");
    // Claimed runs are not due until their lease ends; then all three are.
    let later = lease + Duration::seconds(1);
    let again =
        store.claim_next(scope, Some("tenant-a"), later, later + Duration::seconds(60), 1).await.expect("claim_next");
    assert_eq!(
        again.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[..1],
        "claims_say_whether_more_are_due: a lapsed lease"
    );
    assert!(again.more, "claims_say_whether_more_are_due: two more lapsed leases are due");
    let b = store.claim_next(scope, Some("tenant-b"), t0(), lease, 5).await.expect("claim_next");
    assert_eq!((b.runs.len(), b.more), (1, false), "claims_say_whether_more_are_due: tenant b's own run, and no more");
}

/// Counts by status, per scope.
pub async fn counts_are_per_scope(store: &dyn Store, scope: &str) {
    let other = format!("{scope}-other");
    store.enqueue(new_run(scope, "customer.upserted:9", "x"), Dedupe::WhileQueued).await.expect("enqueue");
    store.enqueue(new_run(&other, "customer.upserted:9", "x"), Dedupe::WhileQueued).await.expect("enqueue");
    let mine = store.counts(scope).await.expect("counts");
    let theirs = store.counts(&other).await.expect("counts");
    assert_eq!(theirs.get(&RunStatus::Queued), Some(&1), "counts_are_per_scope: other scope");
    assert!(mine.get(&RunStatus::Queued).copied().unwrap_or(0) >= 1, "counts_are_per_scope: own scope");
    assert!(store.find_by_key(&other, "customer.upserted:9").await.expect("find").is_some());
    assert!(store.find_by_key(&other, "invoice.created:1001").await.expect("find").is_none(), "scopes do not mix");
}

/// Cross-reference entries round-trip, intent then done, listed by prefix, per scope.
pub async fn xrefs_round_trip(store: &dyn Store, scope: &str) {
    let intent = Xref::intent(Some("MAG-1".into()), json!({"total": "30.00"}), t0());
    store.put_xref(scope, XrefKind::Invoice, "1001", &intent).await.expect("put");
    let got = store.get_xref(scope, XrefKind::Invoice, "1001").await.expect("get").expect("entry");
    assert_eq!(got.state, XrefState::Intent);
    assert_eq!(got.done_id(), None);
    let done = Xref::done("SAGE-1".into(), Some("MAG-1".into()), json!({"total": "30.00", "contact_id": "C1"}), t0());
    store.put_xref(scope, XrefKind::Invoice, "1001", &done).await.expect("put");
    let got = store.get_xref(scope, XrefKind::Invoice, "1001").await.expect("get").expect("entry");
    assert_eq!(got, done, "xrefs_round_trip: done replaces intent");
    // Beside the prefix's keys: a longer number, the prefix's bound itself (`;` follows `:`), the
    // prefix without its separator, and keys with the last scalar value, which has no successor.
    for key in [
        "customer:5:GBP",
        "customer:5:EUR",
        "customer:50:GBP",
        "customer:5;",
        "customer:5",
        "customer:5:\u{10ffff}",
        "customer:5:\u{10ffff}\u{10ffff}é",
    ] {
        store
            .put_xref(scope, XrefKind::Contact, key, &Xref::done(format!("C-{key}"), None, json!({}), t0()))
            .await
            .expect("put");
    }
    let listed = |prefix: &'static str| async move {
        let keys: Vec<String> = store
            .list_xrefs(scope, XrefKind::Contact, prefix)
            .await
            .expect("list")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        keys
    };
    assert_eq!(
        listed("customer:5:").await,
        ["customer:5:EUR", "customer:5:GBP", "customer:5:\u{10ffff}", "customer:5:\u{10ffff}\u{10ffff}é"],
        "xrefs_round_trip: prefix listing, in the keys' order"
    );
    assert_eq!(
        listed("customer:5:\u{10ffff}\u{10ffff}").await,
        ["customer:5:\u{10ffff}\u{10ffff}é"],
        "xrefs_round_trip: a prefix ending with the last scalar value"
    );
    assert_eq!(listed("").await.len(), 7, "xrefs_round_trip: the empty prefix lists every contact, no invoice");
    assert!(store.get_xref(&format!("{scope}-x"), XrefKind::Invoice, "1001").await.expect("get").is_none(), "scoped");
    assert!(store.get_xref(scope, XrefKind::CreditNote, "1001").await.expect("get").is_none(), "kinds do not mix");
}

/// `get_or_put_intent` stores its intent only where the key has no entry, and answers the entry
/// it found untouched otherwise (an earlier intent with another reference, a done entry).
pub async fn intents_are_stored_only_where_nothing_is(store: &dyn Store, scope: &str) {
    let mine = Xref::intent(Some("MAG-2".into()), json!({}), t0() + chrono::Duration::seconds(9));
    let got = store.get_or_put_intent(scope, XrefKind::Invoice, "2001", &mine).await.expect("get_or_put");
    assert_eq!(got, None, "intents_are_stored_only_where_nothing_is: nothing there, stored");
    assert_eq!(
        store.get_xref(scope, XrefKind::Invoice, "2001").await.expect("get"),
        Some(mine.clone()),
        "intents_are_stored_only_where_nothing_is: the intent as given"
    );
    let earlier = Xref::intent(Some("OLD-3".into()), json!({}), t0());
    store.put_xref(scope, XrefKind::Invoice, "2002", &earlier).await.expect("put");
    let done = Xref::done("SAGE-4".into(), Some("MAG-4".into()), json!({"total": "1.00"}), t0());
    store.put_xref(scope, XrefKind::Invoice, "2003", &done).await.expect("put");
    for (key, there) in [("2002", &earlier), ("2003", &done)] {
        let got = store.get_or_put_intent(scope, XrefKind::Invoice, key, &mine).await.expect("get_or_put");
        assert_eq!(got.as_ref(), Some(there), "intents_are_stored_only_where_nothing_is: {key} answered");
        assert_eq!(
            store.get_xref(scope, XrefKind::Invoice, key).await.expect("get").as_ref(),
            Some(there),
            "intents_are_stored_only_where_nothing_is: {key} left as it was"
        );
    }
    // Kinds and scopes do not mix: the same key of another kind or business is free.
    let other = format!("{scope}-other");
    assert_eq!(store.get_or_put_intent(scope, XrefKind::Payment, "2003", &mine).await.expect("kind"), None);
    assert_eq!(store.get_or_put_intent(&other, XrefKind::Invoice, "2003", &mine).await.expect("scope"), None);
}

/// `get_or_put_intent_reading` is `get_or_put_intent` and `get_xrefs` answered together: the
/// intent stored only where its key has no entry (the entry found answered untouched), and the
/// entries among the keys read ahead, each once, nothing of a key without an entry, of another
/// kind or business; with more keys than one statement reads (PostgreSQL reads eight with the
/// intent, the rest after) and with none.
pub async fn intents_are_stored_with_the_entries_read_ahead(store: &dyn Store, scope: &str) {
    let at = |s: i64| t0() + chrono::Duration::seconds(s);
    let item = |id: &str| Xref::done(id.to_owned(), Some(id.to_owned()), json!({"kind": "product"}), at(1));
    let contact = Xref::done("C-1".into(), Some("C-1".into()), json!({}), at(2));
    store.put_xref(scope, XrefKind::Contact, "c@example.com", &contact).await.expect("put");
    for sku in ["SKU-1", "SKU-3", "SKU-9", "SKU-10"] {
        store.put_xref(scope, XrefKind::Item, sku, &item(sku)).await.expect("put");
    }
    store.put_xref(&format!("{scope}-other"), XrefKind::Item, "SKU-2", &item("X")).await.expect("put");
    store.put_xref(scope, XrefKind::Contact, "SKU-2", &contact).await.expect("put");
    let mine = Xref::intent(Some("MAG-5".into()), json!({}), at(3));
    let sorted = |mut v: Vec<(XrefKind, String, Xref)>| {
        v.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
        v
    };
    let ahead = [
        (XrefKind::Contact, "c@example.com"),
        (XrefKind::Item, "SKU-1"),
        (XrefKind::Item, "SKU-2"),
        (XrefKind::Item, "SKU-1"),
    ];
    let (found, read) =
        store.get_or_put_intent_reading(scope, XrefKind::Invoice, "5001", &mine, &ahead).await.expect("intent reading");
    assert_eq!(found, None, "intents_with_reads: nothing there, stored");
    assert_eq!(
        store.get_xref(scope, XrefKind::Invoice, "5001").await.expect("get"),
        Some(mine.clone()),
        "intents_with_reads: the intent as given"
    );
    assert_eq!(
        sorted(read),
        vec![
            (XrefKind::Contact, "c@example.com".to_owned(), contact.clone()),
            (XrefKind::Item, "SKU-1".to_owned(), item("SKU-1")),
        ],
        "intents_with_reads: the entries read ahead, each once (none of another kind or business)"
    );
    // An entry found is answered as it is; more keys than one block; none.
    let done = Xref::done("SAGE-6".into(), Some("MAG-6".into()), json!({"total": "2.00"}), at(4));
    store.put_xref(scope, XrefKind::Invoice, "5002", &done).await.expect("put");
    let many: Vec<String> = (1..=12).map(|i| format!("SKU-{i}")).collect();
    let many: Vec<(XrefKind, &str)> = many.iter().map(|k| (XrefKind::Item, k.as_str())).collect();
    let (found, read) =
        store.get_or_put_intent_reading(scope, XrefKind::Invoice, "5002", &mine, &many).await.expect("intent reading");
    assert_eq!(found, Some(done.clone()), "intents_with_reads: the entry found, answered");
    assert_eq!(
        store.get_xref(scope, XrefKind::Invoice, "5002").await.expect("get"),
        Some(done),
        "intents_with_reads: left as it was"
    );
    let keys: Vec<String> = sorted(read).into_iter().map(|(_, k, _)| k).collect();
    assert_eq!(keys, ["SKU-1", "SKU-10", "SKU-3", "SKU-9"], "intents_with_reads: every entry of twelve keys");
    let (found, read) =
        store.get_or_put_intent_reading(scope, XrefKind::Invoice, "5003", &mine, &[]).await.expect("intent reading");
    assert_eq!((found, read), (None, Vec::new()), "intents_with_reads: nothing read ahead");
    assert_eq!(store.get_xref(scope, XrefKind::Invoice, "5003").await.expect("get"), Some(mine));
}

/// `get_xrefs` answers the entries among the `(kind, key)`s asked, each once, and nothing of a
/// key without an entry, of a kind not asked with it, or of another business.
pub async fn xrefs_are_read_many_at_once(store: &dyn Store, scope: &str) {
    let item = |id: &str| Xref::done(id.to_owned(), Some(id.to_owned()), json!({"kind": "stock_item"}), t0());
    store.put_xref(scope, XrefKind::Item, "SKU-A", &item("I-A")).await.expect("put");
    store.put_xref(scope, XrefKind::Item, "SKU-B", &item("I-B")).await.expect("put");
    let intent = Xref::intent(Some("SKU-C".into()), json!({}), t0());
    store.put_xref(scope, XrefKind::Item, "SKU-C", &intent).await.expect("put");
    store.put_xref(scope, XrefKind::Contact, "SKU-D", &item("C-D")).await.expect("put");
    store.put_xref(scope, XrefKind::Contact, "customer:1:GBP", &item("C-1")).await.expect("put");
    store.put_xref(&format!("{scope}-other"), XrefKind::Item, "SKU-E", &item("I-E")).await.expect("put");
    let asked = [
        (XrefKind::Item, "SKU-B"),
        (XrefKind::Contact, "customer:1:GBP"),
        (XrefKind::Item, "SKU-A"),
        (XrefKind::Item, "SKU-Z"),
        (XrefKind::Item, "SKU-A"),
        (XrefKind::Item, "SKU-C"),
        (XrefKind::Item, "SKU-D"),
        (XrefKind::Item, "SKU-E"),
        (XrefKind::Invoice, "customer:1:GBP"),
    ];
    let mut got = store.get_xrefs(scope, &asked).await.expect("get_xrefs");
    got.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    let mut want = vec![
        (XrefKind::Contact, "customer:1:GBP".to_owned(), item("C-1")),
        (XrefKind::Item, "SKU-A".to_owned(), item("I-A")),
        (XrefKind::Item, "SKU-B".to_owned(), item("I-B")),
        (XrefKind::Item, "SKU-C".to_owned(), intent),
    ];
    want.sort_by(|a, b| (a.0.as_str(), &a.1).cmp(&(b.0.as_str(), &b.1)));
    assert_eq!(got, want, "xrefs_are_read_many_at_once: each (kind, key) with an entry, once");
    assert!(store.get_xrefs(scope, &[]).await.expect("none asked").is_empty());
    // More keys than a store may read in one statement (PostgreSQL reads eight at a time).
    let many: Vec<String> = (0..19).map(|i| format!("MANY-{i:02}")).collect();
    for key in many.iter().step_by(2) {
        store.put_xref(scope, XrefKind::Item, key, &item(key)).await.expect("put");
    }
    let asked: Vec<(XrefKind, &str)> = many.iter().map(|k| (XrefKind::Item, k.as_str())).collect();
    let mut got: Vec<String> =
        store.get_xrefs(scope, &asked).await.expect("get_xrefs").into_iter().map(|(_, key, _)| key).collect();
    got.sort();
    let want: Vec<String> = many.iter().step_by(2).cloned().collect();
    assert_eq!(got, want, "xrefs_are_read_many_at_once: nineteen asked, the ten stored answered");
}

/// Connections, their tokens and their reference cache round-trip.
pub async fn connections_and_tokens_round_trip(store: &dyn Store, scope: &str) {
    let c = Connection {
        scope: scope.to_owned(),
        provider: "sage_accounting".into(),
        base_url: "https://api.accounting.sage.com/v3.1".into(),
        token_url: "https://oauth.accounting.sage.com/token".into(),
        created_at: t0(),
        tenant_id: None,
        connections_url: None,
    };
    store.save_connection(&c).await.expect("save connection");
    assert_eq!(store.connection(scope).await.expect("connection"), Some(c.clone()));
    // A Xero connection keeps its provider kind, pinned tenant and connections endpoint.
    let x = Connection {
        scope: format!("{scope}-xero"),
        provider: crate::store::ProviderKind::Xero.as_str().into(),
        base_url: "https://api.xero.com/api.xro/2.0".into(),
        token_url: "https://identity.xero.com/connect/token".into(),
        created_at: t0(),
        tenant_id: Some("6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b".into()),
        connections_url: Some("https://api.xero.com/connections".into()),
    };
    store.save_connection(&x).await.expect("save a Xero connection");
    let back = store.connection(&x.scope).await.expect("connection").expect("stored");
    assert_eq!(back, x, "connections_and_tokens_round_trip: the Xero connection");
    assert_eq!(back.kind(), Some(crate::store::ProviderKind::Xero));
    assert!(store.connections().await.expect("list").iter().any(|x| x.scope == scope));
    assert!(store.tokens(scope).await.expect("tokens").is_none(), "no tokens yet");
    let tokens = TokenSet {
        access_token: SecretString::from("access-1".to_owned()),
        refresh_token: SecretString::from("refresh-1".to_owned()),
        access_expires_at: t0() + Duration::seconds(300),
        refresh_expires_at: Some(t0() + Duration::days(31)),
        issued_at: None,
    };
    store.save_tokens(scope, &tokens).await.expect("save tokens");
    let back = store.tokens(scope).await.expect("tokens").expect("stored");
    assert_eq!(back.refresh_token.expose_secret(), "refresh-1");
    assert_eq!(back.access_expires_at, tokens.access_expires_at);
    let reference = ReferenceData::demo_uk(t0());
    store.save_reference(scope, &reference).await.expect("save reference");
    assert_eq!(store.reference(scope).await.expect("reference"), Some(reference.clone()));
    // Forgetting the tokens keeps the connection and its reference data.
    assert!(store.forget_tokens(scope).await.expect("forget tokens"), "connections_and_tokens_round_trip: had tokens");
    assert!(store.tokens(scope).await.expect("tokens").is_none(), "connections_and_tokens_round_trip: forgotten");
    assert!(!store.forget_tokens(scope).await.expect("forget tokens"), "connections_and_tokens_round_trip: twice");
    assert_eq!(store.connection(scope).await.expect("connection"), Some(c));
    assert_eq!(store.reference(scope).await.expect("reference"), Some(reference));
}

/// Every behaviour, in order, each under its own sub-scope of `scope`.
pub async fn run_all(store: &dyn Store, scope: &str) {
    documents_dedupe_for_good(store, &format!("{scope}-docs")).await;
    upserts_collapse_while_queued(store, &format!("{scope}-upserts")).await;
    new_runs_are_queued_claimed(store, &format!("{scope}-queued-claimed")).await;
    claims_are_exclusive(store, &format!("{scope}-claims")).await;
    expired_leases_are_reclaimed(store, &format!("{scope}-leases")).await;
    retries_wait_for_their_time(store, &format!("{scope}-retries")).await;
    waiting_runs_say_why(store, &format!("{scope}-waiting")).await;
    dead_letters_keep_everything_and_requeue(store, &format!("{scope}-dead")).await;
    finish_is_fenced_by_the_claim(store, &format!("{scope}-fenced")).await;
    finish_writes_the_held_xrefs_with_the_run(store, &format!("{scope}-held")).await;
    a_lost_claim_still_fills_in_the_held_xrefs(store, &format!("{scope}-held-lost")).await;
    runs_are_claimed_per_tenant(store, &format!("{scope}-tenants")).await;
    claims_say_whether_more_are_due(store, &format!("{scope}-more")).await;
    counts_are_per_scope(store, &format!("{scope}-counts")).await;
    xrefs_round_trip(store, &format!("{scope}-xrefs")).await;
    intents_are_stored_only_where_nothing_is(store, &format!("{scope}-intents")).await;
    intents_are_stored_with_the_entries_read_ahead(store, &format!("{scope}-intents-ahead")).await;
    xrefs_are_read_many_at_once(store, &format!("{scope}-many")).await;
    connections_and_tokens_round_trip(store, &format!("{scope}-connections")).await;
    audit::run_all(store, &format!("{scope}-audit")).await;
}
