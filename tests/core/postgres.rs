//! The PostgreSQL store under several workers: stores with pools of their own (as separate
//! processes would have) sharing one database. Skipped (with a message) when
//! `BYTE8_TEST_DATABASE_URL` is not set; `.ci/run` starts a server and sets it.
#![cfg(feature = "postgres")]

use crate::support_postgres as pg;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use byte8_ledger_core::{
    auth::{TokenSet, TokenStore},
    clock::{Clock, ManualClock},
    error::ErrorCode,
    http::{
        RateConfig, RateLimiter,
        audit::{ExchangeRecord, RecordingRef},
    },
    outcome::{Outcome, SyncStatus},
    store::{
        AttemptRecord, Connection, ConnectionStore, Dedupe, Enqueued, EnqueuedOnce, NewRun, RunResult, RunStatus,
        RunStore, ScopedTokenStore, Xref, XrefKind, XrefStore,
        crypto::MasterKey,
        postgres::{PostgresStore, SharedRateLimiter, TURN_BACKOFF, TurnPermits},
    },
};
use chrono::{DateTime, TimeZone, Utc};
use futures::future::join_all;
use secrecy::{ExposeSecret, SecretString};
use sqlx::Row;

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).single().unwrap()
}

fn new_run(scope: &str, key: &str, raw: &str) -> NewRun {
    NewRun {
        scope: scope.to_owned(),
        tenant_id: None,
        idempotency_key: key.to_owned(),
        event: key.split(':').next().map(str::to_owned),
        magento_entity_id: key.rsplit(':').next().and_then(|n| n.parse().ok()),
        raw: raw.to_owned(),
        fingerprint: byte8_ledger_core::identity::sha256_hex(raw),
        policy: Some("{}".into()),
        received_at: t0(),
    }
}

fn synced(key: &str, number: u32) -> RunResult {
    RunResult {
        status: RunStatus::Synced,
        outcome: Outcome {
            idempotency_key: Some(key.to_owned()),
            event: key.split(':').next().map(str::to_owned),
            entity_type: Some("invoice".into()),
            magento_entity_id: Some(1),
            provider: "sage_accounting".into(),
            sync_status: SyncStatus::Synced,
            provider_entity_id: Some("L1".into()),
            provider_reference: None,
            skip_reason: None,
            error_code: None::<ErrorCode>,
            message: None,
            last_sync_at: t0(),
        },
        attempt: AttemptRecord {
            number,
            started_at: t0(),
            finished_at: t0(),
            result: "synced".into(),
            error_code: None,
            message: None,
            ledger_id: Some("L1".into()),
            exchanges: Vec::new(),
            recording: None,
            snapshot: None,
        },
        next_attempt_at: None,
        xrefs: Vec::new(),
    }
}

/// `n` stores, each with a pool of its own, connected (and migrating) at once.
async fn stores(url: &str, n: usize) -> Vec<Arc<PostgresStore>> {
    join_all((0..n).map(|_| pg::store(url, 3, Some(MasterKey::generate())))).await.into_iter().map(Arc::new).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn several_workers_process_every_run_exactly_once() {
    let Some(url) = pg::url("several_workers_process_every_run_exactly_once") else { return };
    let scope = pg::unique("drain");
    let workers = stores(&url, 4).await;
    let producers = stores(&url, 2).await;
    const PER_PRODUCER: usize = 75;

    let produced = Arc::new(AtomicBool::new(false));
    let enqueued = Arc::new(Mutex::new(BTreeSet::new()));
    let produce = producers.iter().enumerate().map(|(p, store)| {
        let (store, scope, enqueued) = (Arc::clone(store), scope.clone(), Arc::clone(&enqueued));
        tokio::spawn(async move {
            for i in 0..PER_PRODUCER {
                let key = format!("invoice.created:{}", p * 10_000 + i);
                let e = store.enqueue(new_run(&scope, &key, "x"), Dedupe::Permanent).await.unwrap();
                assert!(matches!(e, Enqueued::New(_)), "{e:?}");
                enqueued.lock().unwrap().insert(e.run_id());
            }
        })
    });
    let processed = Arc::new(Mutex::new(Vec::new()));
    let consume = workers.iter().enumerate().map(|(w, store)| {
        let (store, scope, produced, processed) =
            (Arc::clone(store), scope.clone(), Arc::clone(&produced), Arc::clone(&processed));
        tokio::spawn(async move {
            loop {
                let done = produced.load(Ordering::SeqCst);
                let runs = store.claim(&scope, t0(), t0() + chrono::Duration::minutes(5), 4).await.unwrap();
                if runs.is_empty() {
                    if done {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                for run in runs {
                    assert_eq!(run.status, RunStatus::Running);
                    processed.lock().unwrap().push((run.id, w));
                    store.finish(run.id, run.claim, synced(&run.idempotency_key, run.attempts + 1)).await.unwrap();
                }
            }
        })
    });
    let consumers: Vec<_> = consume.collect();
    for p in join_all(produce).await {
        p.unwrap();
    }
    produced.store(true, Ordering::SeqCst);
    for c in join_all(consumers).await {
        c.unwrap();
    }

    let processed = processed.lock().unwrap().clone();
    let enqueued = enqueued.lock().unwrap().clone();
    let ids: BTreeSet<_> = processed.iter().map(|(id, _)| *id).collect();
    assert_eq!(processed.len(), ids.len(), "a run was processed twice");
    assert_eq!(ids, enqueued, "every run was processed");
    assert_eq!(ids.len(), 2 * PER_PRODUCER);
    let by_worker = processed.iter().fold(BTreeMap::<usize, usize>::new(), |mut m, (_, w)| {
        *m.entry(*w).or_default() += 1;
        m
    });
    eprintln!("runs processed by each worker: {by_worker:?}");
    let counts = workers[0].counts(&scope).await.unwrap();
    assert_eq!(counts, BTreeMap::from([(RunStatus::Synced, 2 * PER_PRODUCER as u64)]));
    for id in ids.iter().take(10) {
        assert_eq!(workers[1].attempts(*id).await.unwrap().len(), 1, "one attempt recorded for run {id}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_enqueues_of_one_key_make_one_run() {
    let Some(url) = pg::url("concurrent_enqueues_of_one_key_make_one_run") else { return };
    let scope = pg::unique("enqueue");
    let stores = stores(&url, 4).await;
    for round in 0..5 {
        for (dedupe, key) in [
            (Dedupe::Permanent, format!("invoice.created:{round}")),
            (Dedupe::WhileQueued, format!("product.upserted:{round}")),
        ] {
            let tasks = (0..24).map(|i| {
                let (store, scope, key) = (Arc::clone(&stores[i % stores.len()]), scope.clone(), key.clone());
                tokio::spawn(async move { store.enqueue(new_run(&scope, &key, &format!("v{i}")), dedupe).await })
            });
            let results: Vec<Enqueued> = join_all(tasks).await.into_iter().map(|r| r.unwrap().unwrap()).collect();
            let new: Vec<_> = results.iter().filter(|e| matches!(e, Enqueued::New(_))).collect();
            assert_eq!(new.len(), 1, "{key}: one run, got {results:?}");
            let id = new[0].run_id();
            for e in &results {
                match (dedupe, e) {
                    (_, Enqueued::New(_)) => {}
                    (Dedupe::Permanent, Enqueued::Duplicate { id: d, status: RunStatus::Queued }) => assert_eq!(*d, id),
                    (Dedupe::WhileQueued, Enqueued::Collapsed(c)) => assert_eq!(*c, id),
                    _ => panic!("{key}: unexpected {e:?}"),
                }
            }
            let run = stores[0].find_by_key(&scope, &key).await.unwrap().unwrap();
            assert_eq!(run.id, id);
        }
    }
    let counts = stores[0].counts(&scope).await.unwrap();
    assert_eq!(counts, BTreeMap::from([(RunStatus::Queued, 10)]), "five documents and five upserts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claimed_upsert_is_never_rewritten_by_a_late_collapse() {
    let Some(url) = pg::url("a_claimed_upsert_is_never_rewritten_by_a_late_collapse") else { return };
    let scope = pg::unique("collapse");
    let stores = stores(&url, 2).await;
    for i in 0..30 {
        let key = format!("customer.upserted:{i}");
        let id = stores[0].enqueue(new_run(&scope, &key, "v1"), Dedupe::WhileQueued).await.unwrap().run_id();
        let (claimer, enqueuer) = (Arc::clone(&stores[0]), Arc::clone(&stores[1]));
        let claim = tokio::spawn(async move { claimer.claim_run(id, t0(), t0() + chrono::Duration::minutes(5)).await });
        let (s, k) = (scope.clone(), key.clone());
        let enqueue = tokio::spawn(async move { enqueuer.enqueue(new_run(&s, &k, "v2"), Dedupe::WhileQueued).await });
        let claimed = claim.await.unwrap().unwrap().expect("the run was due");
        let second = enqueue.await.unwrap().unwrap();
        let stored = stores[0].get(id).await.unwrap().unwrap();
        assert_eq!(stored.raw, claimed.raw, "{key}: the claimed run changed under its worker");
        match second {
            Enqueued::Collapsed(c) => assert_eq!((c, claimed.raw.as_str()), (id, "v2"), "{key}: collapsed first"),
            Enqueued::New(n) => {
                assert_ne!(n, id);
                assert_eq!(claimed.raw, "v1", "{key}: claimed first");
            }
            other => panic!("{key}: unexpected {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_token_lock_excludes_a_second_holder_until_the_first_guard_drops() {
    let Some(url) = pg::url("the_token_lock_excludes_a_second_holder_until_the_first_guard_drops") else { return };
    let scope = pg::unique("tokens");
    let stores = stores(&url, 2).await;
    let first = stores[0].lock_tokens(&scope).await.unwrap();

    // A second process (its own pool), through the token store the providers use.
    let tokens = ScopedTokenStore::new(Arc::clone(&stores[1]) as _, scope.clone());
    let acquired = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&acquired);
    let mut second = tokio::spawn(async move {
        let guard = tokens.lock_refresh().await.unwrap();
        flag.store(true, Ordering::SeqCst);
        guard
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(750), &mut second).await.is_err(),
        "the second holder got the lock while the first held it"
    );
    assert!(!acquired.load(Ordering::SeqCst));

    // Another connection's lock is independent.
    let other = tokio::time::timeout(Duration::from_secs(30), stores[1].lock_tokens(&format!("{scope}-other")))
        .await
        .expect("another scope is not blocked")
        .unwrap();
    drop(other);

    drop(first);
    let second = tokio::time::timeout(Duration::from_secs(30), second)
        .await
        .expect("the second holder gets the lock once the first guard dropped")
        .unwrap();
    assert!(acquired.load(Ordering::SeqCst));
    // And the first process waits in turn.
    let third = tokio::spawn({
        let store = Arc::clone(&stores[0]);
        let scope = scope.clone();
        async move { store.lock_tokens(&scope).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!third.is_finished(), "the lock is held by the second guard");
    drop(second);
    let third = tokio::time::timeout(Duration::from_secs(30), third).await.expect("released").unwrap().unwrap();

    // A holder that never lets go makes the others fail after the lock timeout, retryably.
    let impatient = pg::store(&url, 1, None).await.with_token_lock_timeout(Duration::from_millis(200));
    let err = impatient.lock_tokens(&scope).await.unwrap_err();
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("lock timeout"), "{err}");
    drop(third);
    drop(stores[1].lock_tokens(&scope).await.unwrap());
}

#[tokio::test]
async fn tokens_are_encrypted_at_rest_and_odd_text_round_trips() {
    let Some(url) = pg::url("tokens_are_encrypted_at_rest_and_odd_text_round_trips") else { return };
    let scope = pg::unique("at-rest");
    let key = MasterKey::generate();
    let store = pg::store(&url, 2, Some(key)).await;
    store
        .save_connection(&Connection {
            scope: scope.clone(),
            provider: "sage_accounting".into(),
            base_url: "http://x".into(),
            token_url: "http://y".into(),
            created_at: t0(),
            tenant_id: None,
            connections_url: None,
        })
        .await
        .unwrap();
    store
        .save_tokens(
            &scope,
            &TokenSet {
                access_token: SecretString::from("ACCESS-PLAIN".to_owned()),
                refresh_token: SecretString::from("REFRESH-PLAIN".to_owned()),
                access_expires_at: t0(),
                refresh_expires_at: None,
                issued_at: None,
            },
        )
        .await
        .unwrap();
    let row = sqlx::query("SELECT tokens FROM connections WHERE scope = $1")
        .bind(&scope)
        .fetch_one(store.pool())
        .await
        .unwrap();
    let sealed: String = row.try_get("tokens").unwrap();
    assert!(!sealed.contains("REFRESH-PLAIN") && !sealed.contains("ACCESS-PLAIN"), "tokens are sealed");
    assert_eq!(store.tokens(&scope).await.unwrap().unwrap().refresh_token.expose_secret(), "REFRESH-PLAIN");
    let wrong = pg::store(&url, 1, Some(MasterKey::generate())).await;
    let err = wrong.tokens(&scope).await.unwrap_err();
    assert!(err.to_string().contains("LEDGER_MASTER_KEY"), "{err}");

    // A line that could not be read is kept byte for byte, NUL included.
    let raw = "{\"event\":\"invoice.created\0\",\"x\":\"é\"}";
    let mut run = new_run(&scope, "unreadable:\0line", raw);
    run.event = Some("bad\0event".into());
    let id = store.enqueue(run, Dedupe::Permanent).await.unwrap().run_id();
    let back = store.get(id).await.unwrap().unwrap();
    assert_eq!(back.raw, raw);
    assert_eq!(back.event.as_deref(), Some("bad\u{FFFD}event"));
    assert_eq!(store.find_by_key(&scope, "unreadable:\0line").await.unwrap().map(|r| r.id), Some(id));
}

/// The largest number of times in any closed window of `window`.
fn busiest_window(times: &mut [DateTime<Utc>], window: chrono::Duration) -> usize {
    times.sort_unstable();
    let mut best = 0;
    let mut start = 0;
    for end in 0..times.len() {
        while times[end] - times[start] > window {
            start += 1;
        }
        best = best.max(end - start + 1);
    }
    best
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workers_sharing_a_limiter_never_exceed_the_limit_in_any_minute() {
    let Some(url) = pg::url("workers_sharing_a_limiter_never_exceed_the_limit_in_any_minute") else { return };
    let business = pg::unique("limit");
    let config = RateConfig { requests_per_minute: 30, burst: 3 };
    let clock = ManualClock::new(t0());
    let limiters: Vec<SharedRateLimiter> = stores(&url, 4)
        .await
        .iter()
        .map(|s| s.rate_limiter(business.clone(), config).with_clock(Arc::new(clock.clone())))
        .collect();

    // Five simulated minutes in steps of 250 ms: every worker whose last permit has come asks
    // for the next one, all at once; it then "sends" at its permit time.
    let mut ready = vec![t0(); limiters.len()];
    let mut permits = Vec::new();
    let end = t0() + chrono::Duration::minutes(5);
    while clock.now() < end {
        let now = clock.now();
        let asking: Vec<usize> = (0..limiters.len()).filter(|&w| ready[w] <= now).collect();
        let got = join_all(asking.iter().map(|&w| limiters[w].reserve())).await;
        for (&w, permit) in asking.iter().zip(got) {
            let permit = permit.unwrap();
            assert_eq!(permit.now, now, "the limiter uses the given clock");
            assert!(permit.at >= now);
            ready[w] = permit.at;
            permits.push(permit.at);
        }
        clock.advance(chrono::Duration::milliseconds(250));
    }
    let most = busiest_window(&mut permits, chrono::Duration::minutes(1));
    let in_five_minutes = permits.iter().filter(|&&a| a <= end).count();
    eprintln!("{} permits, {in_five_minutes} in the first five minutes, at most {most} in one minute", permits.len());
    assert!(most <= 30, "{most} permits in one minute, limit 30");
    // Saturated (the window rule, `http::limit`): each window of 60.5 s starts with the burst of
    // 3, then one every 60 s / 30 = 2 s: 30 permits by 54 s into it. Windows start at 0, 60.5,
    // 121, 181.5 and 242 s, so all of five windows' 150 permits fall within five minutes, and
    // the sixth window starts after them (302.5 s).
    assert_eq!(in_five_minutes, 150, "the whole limit in every window, and no more");
}

/// A small deterministic generator (xorshift) for the simulated workers' delays.
fn next_delay(state: &mut u64, below_ms: u64) -> chrono::Duration {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    chrono::Duration::milliseconds(i64::try_from(*state % below_ms.max(1)).unwrap_or(0))
}

/// Permits in blocks (`SharedRateLimiter`, migration 0011), against an independent model: three
/// processes share a business; each asks for a permit once its previous request is done, sends
/// up to 500 ms after the permit's time (scheduling jitter, the window's margin), and then works
/// for a while — one of them for up to 5 s, so that permits of its blocks go stale and are
/// dropped, and others use theirs up to the validity late. The model is only the sent times, counted in every closed
/// minute: never more than the limit. And the blocks do cut the statements.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permits_in_blocks_never_let_more_than_the_limit_into_any_minute() {
    let Some(url) = pg::url("permits_in_blocks_never_let_more_than_the_limit_into_any_minute") else { return };
    let business = pg::unique("blocks");
    let config = RateConfig { requests_per_minute: 30, burst: 3 };
    let clock = ManualClock::new(t0());
    let limiters: Vec<SharedRateLimiter> = stores(&url, 3)
        .await
        .iter()
        .map(|s| s.rate_limiter(business.clone(), config).with_clock(Arc::new(clock.clone())))
        .collect();
    let work_ms = [50, 400, 5_000];
    let mut ask_at = vec![t0(); limiters.len()];
    let mut sent = Vec::new();
    let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
    let end = t0() + chrono::Duration::minutes(8);
    while clock.now() < end {
        let now = clock.now();
        for (w, limiter) in limiters.iter().enumerate() {
            if ask_at[w] > now {
                continue;
            }
            let permit = limiter.reserve().await.unwrap();
            assert_eq!(permit.now, now, "the limiter uses the given clock");
            assert!(permit.at >= now);
            let at = permit.at + next_delay(&mut rng, 500);
            sent.push(at);
            ask_at[w] = at + next_delay(&mut rng, work_ms[w]);
        }
        clock.advance(chrono::Duration::milliseconds(50));
    }
    let most = busiest_window(&mut sent, chrono::Duration::minutes(1));
    let statements: u64 = limiters.iter().map(SharedRateLimiter::statements).sum();
    eprintln!("{} requests, at most {most} in one minute, {statements} statements", sent.len());
    assert!(most <= 30, "{most} requests in one minute, limit 30");
    assert!(sent.len() >= 200, "the processes were kept waiting far below the limit: {}", sent.len());
    assert!(
        statements * 2 <= u64::try_from(sent.len()).unwrap(),
        "{statements} statements for {} permits: blocks should at least halve them",
        sent.len()
    );
}

/// Permits taken late: the worker asks for the next permit 250 ms after the previous one's time
/// (so the burst's permits, which share one time, are used as late as they are still valid, and
/// one of them is dropped), and sends with a jitter of either nothing or just under the window's
/// margin. Counted in every closed minute (the independent model), never more than `L`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn permits_used_as_late_as_they_are_valid_still_keep_every_minute_under_the_limit() {
    let Some(url) = pg::url("permits_used_as_late_as_they_are_valid_still_keep_every_minute_under_the_limit") else {
        return;
    };
    let business = pg::unique("blocks-late");
    let config = RateConfig { requests_per_minute: 30, burst: 3 };
    let clock = ManualClock::new(t0());
    let limiter = pg::store(&url, 1, None).await.rate_limiter(business, config).with_clock(Arc::new(clock.clone()));
    let mut sent = Vec::new();
    let mut rng = 0x2545_F491_4F6C_DD1D_u64;
    let mut ask_at = t0();
    let end = t0() + chrono::Duration::minutes(12);
    while clock.now() < end {
        if ask_at <= clock.now() {
            let permit = limiter.reserve().await.unwrap();
            let jitter = if next_delay(&mut rng, 2) == chrono::Duration::zero() { 0 } else { 499 };
            sent.push(permit.at + chrono::Duration::milliseconds(jitter));
            ask_at = permit.at + chrono::Duration::milliseconds(250);
        }
        clock.advance(chrono::Duration::milliseconds(50));
    }
    let most = busiest_window(&mut sent, chrono::Duration::minutes(1));
    assert!(sent.len() >= 300, "{} requests in 12 minutes", sent.len());
    assert!(most <= 30, "{most} requests in one minute, limit 30");
}

/// A business under its pace never waits: every permit is for its request's own time. Idle
/// between events (nobody used it for a second), it takes two permits a statement (an event of
/// two requests, 150 ms apart, costs one statement); busy under its pace (a request every
/// 400 ms), one at a time (a block's unused permits would go stale and eat its burst).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_business_under_its_pace_never_waits_and_an_idle_one_takes_two_permits_a_statement() {
    let Some(url) = pg::url("a_business_under_its_pace_never_waits_and_an_idle_one_takes_two_permits_a_statement")
    else {
        return;
    };
    let config = RateConfig { requests_per_minute: 30, burst: 3 };
    let clock = ManualClock::new(t0());
    let limiter = pg::store(&url, 1, None)
        .await
        .rate_limiter(pg::unique("blocks-idle"), config)
        .with_clock(Arc::new(clock.clone()));
    // An event of two requests every 10 s: 12 a minute, under the limit's 30.
    for _ in 0..30 {
        for _ in 0..2 {
            let permit = limiter.reserve().await.unwrap();
            assert_eq!(permit.at, clock.now(), "a business under its pace never waits");
            clock.advance(chrono::Duration::milliseconds(150));
        }
        clock.advance(chrono::Duration::seconds(10));
    }
    assert_eq!(limiter.statements(), 30, "one statement an event of two requests");
    // Events of one request: one statement each (the block's second permit goes unused).
    for _ in 0..10 {
        let permit = limiter.reserve().await.unwrap();
        assert_eq!(permit.at, clock.now(), "a business under its pace never waits");
        clock.advance(chrono::Duration::seconds(10));
    }
    assert_eq!(limiter.statements(), 40, "one statement an event of one request");
    // Busy under its pace: a request every 400 ms (at 600 a minute), one permit a statement
    // once its first (idle) block is used.
    let busy = pg::store(&url, 1, None)
        .await
        .rate_limiter(pg::unique("blocks-busy"), RateConfig { requests_per_minute: 600, burst: 10 })
        .with_clock(Arc::new(clock.clone()));
    for _ in 0..20 {
        let permit = busy.reserve().await.unwrap();
        assert_eq!(permit.at, clock.now(), "a business under its pace never waits");
        clock.advance(chrono::Duration::milliseconds(400));
    }
    assert_eq!(busy.statements(), 20, "a busy business under its pace: one permit a statement");
}

/// The trigger that queues a finished run's callback (`runs_terminal_callback`) runs its
/// function for a finished run of a store only (migration 0025's `WHEN`): a claim (queued to
/// running) calls nothing, a run's end calls it once. Counted in the transaction's own function
/// statistics (`track_functions`, set for the transaction).
#[tokio::test]
async fn the_callback_trigger_runs_only_when_a_run_of_a_store_ends() {
    let Some(url) = pg::url("the_callback_trigger_runs_only_when_a_run_of_a_store_ends") else { return };
    let store = pg::store(&url, 2, None).await;
    let scope = pg::unique("trigger-when");
    let run = byte8_ledger_core::store::conformance::tenant_run(&scope, "store-1", "invoice.created:1", "{}");
    let id = store.enqueue(run, Dedupe::Permanent).await.unwrap().run_id();
    let mut tx = store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL track_functions = 'pl'").execute(&mut *tx).await.unwrap();
    async fn calls(tx: &mut sqlx::PgConnection) -> i64 {
        sqlx::query_scalar(
            "SELECT COALESCE(sum(calls), 0)::bigint FROM pg_stat_xact_user_functions \
             WHERE funcname = 'byte8_runs_terminal_callback'",
        )
        .fetch_one(tx)
        .await
        .unwrap()
    }
    for (status, expected) in [("running", 0), ("synced", 1)] {
        sqlx::query("UPDATE runs SET status = $1 WHERE id = $2").bind(status).bind(id).execute(&mut *tx).await.unwrap();
        assert_eq!(calls(&mut tx).await, expected, "after the change to {status}");
    }
    tx.rollback().await.unwrap();
}

/// Runs a turn's permit request the way the service's turn statement does (`TurnPermits::bind`'s
/// nine arguments to `byte8_rate_permits`) and hands the answer to the limiter.
async fn take_turn_permits(store: &PostgresStore, permits: &TurnPermits) -> Vec<i64> {
    let q = sqlx::query("SELECT byte8_rate_permits($1, $2, $3, $4, $5, $6, $7, $8, $9) AS p");
    let answer: Vec<i64> = TurnPermits::bind(Some(permits), q).fetch_one(store.pool()).await.unwrap().get("p");
    permits.deposit(&answer).await;
    answer
}

/// A worker's turn takes an idle business's first permits with its own statement
/// (`PostgresStore::turn_permits`): the event's requests then cost the limiter no statement,
/// the permits are the database's (the window rule's record holds them), and the limiters the
/// store made for the business share them. While the business holds a usable permit, or used
/// one in the last second, a turn takes none.
#[tokio::test]
async fn a_turns_permits_serve_the_first_requests_without_a_statement() {
    let Some(url) = pg::url("a_turns_permits_serve_the_first_requests_without_a_statement") else { return };
    let store = pg::store(&url, 1, None).await;
    let business = pg::unique("turn-permits");
    let config = RateConfig { requests_per_minute: 30, burst: 3 };
    let clock = ManualClock::new(t0());
    assert!(store.turn_permits(&business).is_none(), "no limiter for the business yet");
    let first = store.rate_limiter(business.clone(), config).with_clock(Arc::new(clock.clone()));
    let second = store.rate_limiter(business.clone(), config).with_clock(Arc::new(clock.clone()));
    for event in 0..3 {
        let permits = store.turn_permits(&business).expect("an idle business: the turn takes its permits");
        assert_eq!(permits.business(), business);
        let answer = take_turn_permits(&store, &permits).await;
        let now = clock.now().timestamp_micros();
        assert_eq!(answer, vec![now, now, now], "the database's now, then the idle block of two, both for now");
        assert!(store.turn_permits(&business).is_none(), "permits held: the next turn takes none");
        // The event's two requests: one through each limiter of the business.
        for limiter in [&first, &second] {
            let permit = limiter.reserve().await.unwrap();
            assert_eq!(permit.at, clock.now(), "event {event}: the turn's permit, for now");
            clock.advance(chrono::Duration::milliseconds(150));
        }
        assert!(store.turn_permits(&business).is_none(), "a permit used in the last second: not idle");
        clock.advance(chrono::Duration::seconds(10));
    }
    assert_eq!(first.statements() + second.statements(), 0, "no request took a statement of its own");
    // A third request of an event: past the turn's block, the limiter takes its own.
    let permits = store.turn_permits(&business).expect("idle again");
    take_turn_permits(&store, &permits).await;
    for _ in 0..3 {
        first.reserve().await.unwrap();
        clock.advance(chrono::Duration::milliseconds(100));
    }
    assert_eq!(first.statements(), 1, "the third request's block");
    // The database counted every permit: 3 × 2 + 2 + the third request's block (one or two).
    let recent: Vec<i64> = sqlx::query_scalar("SELECT recent FROM rate_limits WHERE key = $1")
        .bind(&business)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert!((9..=10).contains(&recent.len()), "{} permits recorded", recent.len());
}

/// A turn's permits its first request comes too late for (a slow Magento read: dropped unused
/// within two seconds of their time) back the turns' blocks off for `TURN_BACKOFF` turns; a
/// turn's permits left unused because the turn made no request (an event skipped by the policy,
/// dropped at the next event, seconds later) back nothing off.
#[tokio::test]
async fn turns_whose_permits_go_stale_take_none_for_a_while() {
    let Some(url) = pg::url("turns_whose_permits_go_stale_take_none_for_a_while") else { return };
    let store = pg::store(&url, 1, None).await;
    let business = pg::unique("turn-stale");
    let clock = ManualClock::new(t0());
    let limiter = store
        .rate_limiter(business.clone(), RateConfig { requests_per_minute: 30, burst: 3 })
        .with_clock(Arc::new(clock.clone()));
    // Skipped: nothing used, the next request 30 s later.
    take_turn_permits(&store, &store.turn_permits(&business).unwrap()).await;
    clock.advance(chrono::Duration::seconds(30));
    limiter.reserve().await.unwrap();
    assert_eq!(limiter.statements(), 1, "the skipped turn's permits dropped, a block taken");
    clock.advance(chrono::Duration::seconds(5));
    assert!(store.turn_permits(&business).is_some(), "a skipped turn backs nothing off");
    // Late: the turn's first request 400 ms after its permits (valid 250 ms).
    clock.advance(chrono::Duration::seconds(5));
    take_turn_permits(&store, &store.turn_permits(&business).unwrap()).await;
    clock.advance(chrono::Duration::milliseconds(400));
    limiter.reserve().await.unwrap();
    assert_eq!(limiter.statements(), 2, "the late turn's permits dropped, a block taken");
    clock.advance(chrono::Duration::seconds(5));
    for turn in 0..TURN_BACKOFF {
        assert!(store.turn_permits(&business).is_none(), "turn {turn} of the back-off takes no permit");
    }
    assert!(store.turn_permits(&business).is_some(), "after the back-off, a turn takes permits again");
}

/// A business at its pace whose blocks have grown, then busy for longer than an interval with
/// work that makes no request (a skipped event, a Magento read), takes its next block one permit
/// at a time: a full block then would be mostly permits for now, which its requests (one per
/// ledger answer) could not all use within their validity. Before, the block kept its size and
/// most of it was dropped.
#[tokio::test]
async fn a_business_that_falls_behind_its_pace_takes_one_permit_a_statement_again() {
    let Some(url) = pg::url("a_business_that_falls_behind_its_pace_takes_one_permit_a_statement_again") else {
        return;
    };
    // 600 a minute: one permit every 100 ms.
    let clock = ManualClock::new(t0());
    let limiter = pg::store(&url, 1, None)
        .await
        .rate_limiter(pg::unique("blocks-behind"), RateConfig { requests_per_minute: 600, burst: 10 })
        .with_clock(Arc::new(clock.clone()));
    // Saturated: every request as soon as its permit allows, until the blocks have grown.
    for _ in 0..700 {
        let permit = limiter.reserve().await.unwrap();
        if permit.at > clock.now() {
            clock.advance(permit.at - clock.now());
        }
    }
    let saturated = limiter.statements();
    assert!(saturated < 700 / 2, "at its pace the business takes its permits in blocks ({saturated} statements)");
    // Up to the next block (of the most permits a statement, 8, at this pace), then every permit
    // of it; then fall behind: 1.5 intervals without a request.
    let at_pace = |n: usize| {
        let (limiter, clock) = (limiter.clone(), clock.clone());
        async move {
            for _ in 0..n {
                let permit = limiter.reserve().await.unwrap();
                if permit.at > clock.now() {
                    clock.advance(permit.at - clock.now());
                }
            }
        }
    };
    while limiter.statements() == saturated {
        at_pace(1).await;
    }
    let fresh = limiter.statements();
    at_pace(7).await;
    assert_eq!(limiter.statements(), fresh, "a block of 8 at its pace");
    let before = limiter.statements();
    clock.advance(chrono::Duration::milliseconds(150));
    let first = limiter.reserve().await.unwrap();
    assert_eq!(limiter.statements(), before + 1, "a new block");
    assert!(first.at <= clock.now(), "behind its pace, the permit is for now");
    clock.advance(chrono::Duration::milliseconds(130));
    limiter.reserve().await.unwrap();
    assert_eq!(limiter.statements(), before + 2, "that block held one permit: the next request takes another");
}

/// A saturated business drained by one worker (the service's case): with blocks it still gets
/// the whole limit in every window of `W + m + PERMIT_VALIDITY` (60.75 s: 98.8 % of the limit a
/// minute), in an eighth of the statements once its blocks have grown.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_saturated_business_keeps_its_share_with_permits_in_blocks() {
    let Some(url) = pg::url("a_saturated_business_keeps_its_share_with_permits_in_blocks") else { return };
    let business = pg::unique("blocks-saturated");
    let config = RateConfig { requests_per_minute: 30, burst: 3 };
    let clock = ManualClock::new(t0());
    let limiter =
        pg::store(&url, 1, None).await.rate_limiter(business.clone(), config).with_clock(Arc::new(clock.clone()));
    let mut permits = Vec::new();
    // Ten windows of 60.75 s.
    let end = t0() + chrono::Duration::milliseconds(607_500);
    let mut ask_at = t0();
    while clock.now() < end {
        if ask_at <= clock.now() {
            let permit = limiter.reserve().await.unwrap();
            permits.push(permit.at);
            // The request and its event take 100 ms after the permit.
            ask_at = permit.at + chrono::Duration::milliseconds(100);
        }
        clock.advance(chrono::Duration::milliseconds(50));
    }
    let in_time = permits.iter().filter(|&&a| a < end).count();
    // Each window: the burst of 3, then one every 2 s: 30 by 54 s into it; ten windows end by
    // 9 × 60.75 + 54 = 600.75 s.
    assert_eq!(in_time, 300, "the whole limit in each of ten windows");
    let most = busiest_window(&mut permits, chrono::Duration::minutes(1));
    assert!(most <= 30, "{most} in one minute");
    let statements = limiter.statements();
    assert!(
        statements * 6 <= u64::try_from(permits.len()).unwrap(),
        "{statements} statements for {} permits",
        permits.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shared_rate_limiters_pace_real_requests_on_the_database_clock() {
    let Some(url) = pg::url("shared_rate_limiters_pace_real_requests_on_the_database_clock") else { return };
    let business = pg::unique("pace");
    // 1200 a minute, burst 2: one permit every 60 s / 1200 = 50 ms after the burst.
    let config = RateConfig { requests_per_minute: 1200, burst: 2 };
    let limiters: Vec<RateLimiter> =
        stores(&url, 3).await.iter().map(|s| RateLimiter::from(s.rate_limiter(business.clone(), config))).collect();
    assert!(limiters.iter().all(RateLimiter::is_shared));
    assert_eq!(limiters[0].config(), config);
    let started = Instant::now();
    join_all(limiters.iter().map(|l| async move {
        for _ in 0..5 {
            l.until_ready().await;
        }
    }))
    .await;
    // 15 permits: the last no earlier than 13 intervals after the first (a lower bound only:
    // a busy machine makes it later, never earlier).
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(600), "15 permits in {elapsed:?}");

    // Unlimited settings never touch the database nor wait.
    let store = pg::store(&url, 1, None).await;
    let free = store.rate_limiter(business, RateConfig { requests_per_minute: 0, burst: 0 });
    let permit = free.reserve().await.unwrap();
    assert_eq!(permit.wait(), Duration::ZERO);
    assert!(!RateLimiter::from(free).is_shared());
}

/// Counts the statements sqlx runs under it: sqlx reports each as one event of target
/// `sqlx::query` (all but a transaction's `BEGIN`, which it queues unreported; its `COMMIT` or
/// `ROLLBACK` is reported, so a transaction counts at least two).
#[derive(Clone, Default)]
struct Statements(Arc<AtomicUsize>);

impl Statements {
    fn count(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Statements {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        if event.metadata().target() == "sqlx::query" {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn exchange(i: i64, body: &str) -> ExchangeRecord {
    ExchangeRecord {
        at: t0() + chrono::Duration::milliseconds(i),
        method: "POST".into(),
        url: format!("/v3.1/sales_invoices?n={i}"),
        status: Some(if i % 5 == 0 { 429 } else { 201 }),
        request_body: Some(body.to_owned()),
        response_body: Some(format!("{{\"id\":\"L{i}\"}}")),
        error: None,
    }
}

/// A run `key` of `scope` claimed twice (the first lease lapsed): (id, the lapsed claim, the
/// current claim).
async fn claimed_twice(store: &PostgresStore, scope: &str, key: &str) -> (i64, i64, i64) {
    let id = store.enqueue(new_run(scope, key, "{}"), Dedupe::Permanent).await.unwrap().run_id();
    let slow = store.claim_run(id, t0(), t0() + chrono::Duration::seconds(30)).await.unwrap().unwrap();
    let fast = store
        .claim_run(id, t0() + chrono::Duration::seconds(31), t0() + chrono::Duration::seconds(90))
        .await
        .unwrap()
        .unwrap();
    (id, slow.claim, fast.claim)
}

/// `finish` is one statement (issue 17: round trips per event), whether it lands or its claim is
/// refused, whatever the attempt carries. Current-thread runtime: the counting subscriber is this
/// thread's, so other tests' statements are not counted.
#[tokio::test]
async fn a_finish_is_one_statement_whether_it_lands_or_not() {
    use tracing_subscriber::layer::SubscriberExt as _;
    let Some(url) = pg::url("a_finish_is_one_statement_whether_it_lands_or_not") else { return };
    let statements = Statements::default();
    let _counting = tracing::subscriber::set_default(tracing_subscriber::registry().with(statements.clone()));
    // While one subscriber only is registered, tracing-core settles a callsite's interest with
    // the subscriber of the thread that reaches it first: another test's thread (no subscriber)
    // reaching sqlx's callsites first would switch them off for this one. A second registered
    // subscriber (never used) makes it ask every registered subscriber.
    let _second = tracing::Dispatch::new(tracing_subscriber::registry());
    let store = pg::store(&url, 1, None).await;
    let scope = pg::unique("one-statement");
    let before = statements.count();
    store.get(-1).await.unwrap();
    assert_eq!(statements.count() - before, 1, "the counter sees a statement");

    let key = "invoice.created:71";
    let (id, lapsed, current) = claimed_twice(&store, &scope, key).await;
    let mut with_exchanges = synced(key, 1);
    with_exchanges.attempt.exchanges = (0..3).map(|i| exchange(i, "{}")).collect();
    with_exchanges.attempt.snapshot = Some(serde_json::json!({"increment_id": "000000071"}).into());
    // The run's held cross-reference records (an invoice and its new customer's contact).
    let invoice = Xref::done("L71".into(), Some("SI-71".into()), serde_json::json!({"contact_id": "C5"}), t0());
    let contact = Xref::done("C5".into(), Some("CUST5".into()), serde_json::json!({"currency": "GBP"}), t0());
    with_exchanges.xrefs = vec![
        (XrefKind::Invoice, "71".into(), invoice.clone()),
        (XrefKind::Contact, "customer:5:GBP".into(), contact.clone()),
    ];

    let before = statements.count();
    store.finish(id, lapsed, with_exchanges.clone()).await.expect_err("the lapsed claim is refused");
    assert_eq!(statements.count() - before, 1, "a refused finish: one statement");

    let before = statements.count();
    store.finish(id, current, with_exchanges).await.unwrap();
    assert_eq!(
        statements.count() - before,
        1,
        "a finish with exchanges, a snapshot and cross-reference records: one statement"
    );
    assert_eq!(store.attempts(id).await.unwrap()[0].exchanges.len(), 3);
    assert_eq!(store.get_xref(&scope, XrefKind::Invoice, "71").await.unwrap(), Some(invoice));
    assert_eq!(store.get_xref(&scope, XrefKind::Contact, "customer:5:GBP").await.unwrap(), Some(contact));

    let key = "invoice.created:72";
    let (id, _, current) = claimed_twice(&store, &scope, key).await;
    let before = statements.count();
    store.finish(id, current, synced(key, 1)).await.unwrap();
    assert_eq!(statements.count() - before, 1, "a finish without exchanges: one statement");
}

/// The statement is atomic: when one of its inserts fails (here a trigger refusing one
/// recording's exchanges), nothing of the finish is kept, the run stays running under its claim
/// and finishes later. Its exchanges carry the run's scope; text with NUL (which PostgreSQL text
/// cannot hold) is kept with U+FFFD in its place, in bodies, URLs, errors and the attempt's
/// message alike; more exchanges than a statement of placeholders could bind (500) are all kept,
/// in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_finish_is_atomic_keeps_nul_text_as_replacement_characters_and_every_exchange() {
    let Some(url) = pg::url("a_finish_is_atomic_keeps_nul_text_as_replacement_characters_and_every_exchange") else {
        return;
    };
    let store = pg::store(&url, 2, None).await;
    let scope = pg::unique("atomic");
    let key = "invoice.created:73";
    let (id, _, current) = claimed_twice(&store, &scope, key).await;
    let before = store.get(id).await.unwrap().unwrap();

    let poison = pg::unique("poison");
    let function = format!("byte8_test_{}", poison.replace('-', "_"));
    sqlx::query(&format!(
        "CREATE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS \
         $$ BEGIN RAISE EXCEPTION 'refused by the test'; END $$"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(&format!(
        "CREATE TRIGGER {function} BEFORE INSERT ON exchanges FOR EACH ROW \
         WHEN (NEW.recording = '{poison}' AND NEW.seq = 2) EXECUTE FUNCTION {function}()"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let mut refused = synced(key, 1);
    refused.attempt.exchanges = (0..3).map(|i| exchange(i, "{}")).collect();
    refused.attempt.recording = Some(RecordingRef { id: poison.clone(), first: 0, count: 3 });
    refused.attempt.snapshot = Some(serde_json::json!({"increment_id": "000000073"}).into());
    // Its held cross-reference record replaces the intent only if the whole finish lands.
    let intent = Xref::intent(Some("SI-73".into()), serde_json::json!({}), t0());
    store.put_xref(&scope, XrefKind::Invoice, "73", &intent).await.unwrap();
    refused.xrefs = vec![(XrefKind::Invoice, "73".into(), Xref::done("L73".into(), None, serde_json::json!({}), t0()))];
    let failed = store.finish(id, current, refused).await;
    for ddl in [format!("DROP TRIGGER {function} ON exchanges"), format!("DROP FUNCTION {function}()")] {
        sqlx::query(&ddl).execute(store.pool()).await.unwrap();
    }
    let err = failed.expect_err("the trigger refuses the third exchange");
    assert!(err.to_string().contains("refused by the test"), "{err}");
    assert_eq!(store.get(id).await.unwrap(), Some(before), "the run is untouched");
    let exchanges_kept: i64 = sqlx::query("SELECT COUNT(*) FROM exchanges WHERE recording = $1")
        .bind(&poison)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(exchanges_kept, 0, "no exchange kept");
    let attempts_kept: i64 = sqlx::query("SELECT COUNT(*) FROM attempts WHERE run_id = $1")
        .bind(id)
        .fetch_one(store.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(attempts_kept, 0, "no attempt kept");
    assert_eq!(
        store.get_xref(&scope, XrefKind::Invoice, "73").await.unwrap(),
        Some(intent),
        "no cross-reference record kept: the intent stands"
    );

    // The same claim finishes now, with 600 exchanges, some text with NUL.
    const N: i64 = 600;
    let with_nul = |i: i64, s: String| if i % 97 == 3 { format!("{s}\0after\0") } else { s };
    let exchanges: Vec<ExchangeRecord> = (0..N)
        .map(|i| {
            let mut e = exchange(i, &with_nul(i, format!("{{\"n\":{i}}}")));
            e.url = with_nul(i, e.url);
            e.response_body = e.response_body.map(|b| with_nul(i, b));
            if i % 97 == 3 {
                e.status = None;
                e.error = Some("reset\0by peer".into());
            }
            e
        })
        .collect();
    let mut r = synced(key, 1);
    r.attempt.exchanges = exchanges.clone();
    r.attempt.message = Some("done\0".into());
    store.finish(id, current, r).await.expect("the claim still holds");

    let nul = |s: &str| s.replace('\0', "\u{FFFD}");
    let expected: Vec<ExchangeRecord> = exchanges
        .iter()
        .map(|e| ExchangeRecord {
            url: nul(&e.url),
            request_body: e.request_body.as_deref().map(nul),
            response_body: e.response_body.as_deref().map(nul),
            error: e.error.as_deref().map(nul),
            ..e.clone()
        })
        .collect();
    assert!(expected.iter().filter(|e| e.url.contains('\u{FFFD}')).count() >= 6, "the test has NULs to keep");
    let attempts = store.attempts(id).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].message.as_deref(), Some("done\u{FFFD}"));
    assert!(
        attempts[0].exchanges == expected,
        "{} exchanges read back, not the {N} expected",
        attempts[0].exchanges.len()
    );
    let recording = attempts[0].recording.clone().expect("a recording of its own");
    assert_eq!((recording.first, recording.count), (0, 600));
    let scopes = sqlx::query("SELECT DISTINCT scope FROM exchanges WHERE recording = $1")
        .bind(&recording.id)
        .fetch_all(store.pool())
        .await
        .unwrap();
    let scopes: Vec<String> = scopes.iter().map(|r| r.get(0)).collect();
    assert_eq!(scopes, vec![scope.clone()], "the exchanges carry the run's scope");
    assert_eq!(store.get(id).await.unwrap().map(|r| r.status), Some(RunStatus::Synced));
}

/// `PostgresStore::connect` does not ping before each statement (sqlx's default, a round trip a
/// statement): a connection whose server process ended fails only the statement sent on it,
/// with a retryable error, and is not used again — every statement after succeeds.
#[tokio::test]
async fn a_connection_the_server_ended_fails_one_statement_and_is_not_reused() {
    let Some(url) = pg::url("a_connection_the_server_ended_fails_one_statement_and_is_not_reused") else { return };
    let store = PostgresStore::connect(&url, None).await.expect("connect");
    let scope = pg::unique("ended");
    store.enqueue(new_run(&scope, "invoice.created:1", "x"), Dedupe::Permanent).await.expect("enqueue");
    // Every connection open now, and its server process: the one the store's statements keep
    // (`PostgresStore::statements`), and those idle in the pool.
    let kept: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(store.statements()).await.expect("pid");
    let mut held = Vec::new();
    let mut pids = vec![kept];
    for _ in 0..store.pool().num_idle() {
        let mut conn = store.pool().acquire().await.expect("acquire");
        let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(&mut *conn).await.expect("pid");
        pids.push(pid);
        held.push(conn);
    }
    drop(held);
    assert!(!pids.is_empty(), "the pool holds a connection");
    let admin = pg::store(&url, 1, None).await;
    for pid in &pids {
        let ended: bool =
            sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(admin.pool()).await.expect("end");
        assert!(ended, "the server ended connection {pid}");
    }
    let mut failures = 0;
    for i in 0..pids.len() * 2 + 3 {
        match store.find_by_key(&scope, "invoice.created:1").await {
            Ok(run) => assert!(run.is_some(), "statement {i}: the run is found"),
            Err(e) => {
                assert!(e.is_retryable(), "statement {i}: an ended connection's error is retryable: {e}");
                failures += 1;
            }
        }
    }
    // No ping: the first statement on an ended connection is what finds it ended.
    assert!(
        (1..=pids.len()).contains(&failures),
        "one failed statement per ended connection at most, and no ping to hide it: {failures} for {}",
        pids.len()
    );
    for i in 0..3 {
        let run = store.find_by_key(&scope, "invoice.created:1").await;
        assert!(matches!(run, Ok(Some(_))), "statement {i} after: the store goes on: {run:?}");
    }
}

/// `get_xrefs` on PostgreSQL is planned once a connection, not at every call: its statements
/// take the keys as scalar parameters, so after the planner's first few custom plans it keeps a
/// generic one (an index probe a key). The statement before them bound two arrays, whose length
/// a generic plan cannot know, and was planned afresh at every call. Read from the connection's
/// own `pg_prepared_statements` (a pool of one connection).
#[tokio::test]
async fn reading_many_cross_references_is_planned_once_a_connection() {
    let Some(url) = pg::url("reading_many_cross_references_is_planned_once_a_connection") else { return };
    let store = pg::store(&url, 1, None).await;
    let scope = pg::unique("xref-plans");
    let done = Xref::done("I-1".into(), Some("I-1".into()), serde_json::json!({}), t0());
    store.put_xref(&scope, XrefKind::Item, "SKU-1", &done).await.unwrap();
    for call in 0..12 {
        let key = format!("SKU-{}", call % 3);
        let got = store.get_xrefs(&scope, &[(XrefKind::Item, &key), (XrefKind::Contact, "customer:1:GBP")]).await;
        assert_eq!(got.unwrap().len(), usize::from(call % 3 == 1), "call {call}: only SKU-1 has an entry");
    }
    let plans = sqlx::query(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE 'SELECT x.* FROM %JOIN xrefs x%'",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    let (generic, custom): (i64, i64) = plans
        .iter()
        .map(|r| (r.get::<i64, _>("generic_plans"), r.get::<i64, _>("custom_plans")))
        .fold((0, 0), |(g, c), (rg, rc)| (g + rg, c + rc));
    assert_eq!(plans.len(), 1, "two keys: one statement prepared");
    assert!(custom <= 5, "at most the planner's first five custom plans ({custom} custom, {generic} generic)");
    assert!(generic >= 7, "the other calls use the generic plan ({custom} custom, {generic} generic)");
}

/// A claim reads the business's open runs only, however many finished ones it keeps (migrations
/// 0020 and 0022), on a node like the bench's (`pg::fill_node`: 20,000 runs of the business, all
/// open once and finished now, 1,000 other businesses with 20 runs each and 70 open among them),
/// in a database of the test's own so that the planner's statistics are the node's. The claim's
/// generic plan (what a pooled connection runs after its first executions; forced here) drops no
/// run by a filter. Without 0022's statistics on (scope, tenant_id) it drops all 20,000 (checked
/// with 0022 left out): the planner took the two columns for independent, estimated a business's
/// runs at under one row, and took `runs_due` (scope, status, tenant_id, …) with the statuses as
/// a filter rather than `runs_open`, whose churned pages made it look dearer, as it did in the
/// bench's database (42-54 ms a claim). Between migrations 0018 and 0020 it read every run of the
/// tenant through `runs_by_tenant`. The claim's own statement, read back from the connection's
/// prepared statements, is explained inside a transaction that is rolled back.
#[tokio::test]
async fn a_claim_reads_only_the_open_runs_of_a_business_with_a_long_history() {
    let Some(url) = pg::url("a_claim_reads_only_the_open_runs_of_a_business_with_a_long_history") else { return };
    let database = pg::OwnDatabase::create(&url).await;
    let store = pg::generic_plan_store(&database).await;
    let (scope, tenant) = ("history", "history-t");
    pg::fill_node(store.pool(), scope, tenant).await;
    let now = t0();
    let claimed = store.claim_next(scope, Some(tenant), now, now, 4).await.unwrap();
    assert!(claimed.runs.is_empty(), "nothing of the history is due");
    let plan = pg::explain_prepared(
        store.pool(),
        "WITH cand AS MATERIALIZED",
        "text, timestamptz, timestamptz, bigint, text",
        &format!("'{scope}', now(), now(), 4, '{tenant}'"),
    )
    .await;
    // The release of a business's leases when a worker starts reads its running runs only, by
    // `runs_by_status` (migration 0022 dropped `runs_leased`, which served it before).
    assert_eq!(store.release_leases(scope, now).await.unwrap(), 0, "nothing of the history is running");
    let release = pg::explain_prepared(
        store.pool(),
        "UPDATE runs SET status = 'queued', lease_until = NULL",
        "timestamptz, text",
        &format!("now(), '{scope}'"),
    )
    .await;
    store.close().await;
    database.drop().await;
    for (what, plan) in [("claim_next", &plan), ("release_leases", &release)] {
        assert!(plan.iter().any(|line| line.contains("Index Scan")), "{what}: an index's range: {plan:#?}");
        assert_eq!(pg::rows_removed_by_filter(plan, "runs"), 0, "{what}: no finished run read and dropped: {plan:#?}");
    }
}

/// A statement that finds one run by its id and checks its status reads that run only, through
/// the primary key, in the plan a connection keeps (its generic plan), on a node whose `runs_open`
/// holds no open run in many pages (`fill_node`'s history, every run of it finished: what a
/// back-fill leaves between two of its runs). Before, the status checked (`status = 'running'` in
/// the run's end, the due statuses in `claim_run`) proved the predicate of the partial index
/// `runs_open` or led `runs_by_status`, and the planner, costing those indexes cheap, took
/// `runs_by_status` for `finish` and `runs_open` for `claim_run`, with the id, a later column, as
/// a condition on every entry of the range: every entry dead since the last vacuum read with it
/// (a 10,000-event back-fill: 12–37 pages and up to 0.5 ms of each run's end; BENCHMARKS.md,
/// round 40). Checked to fail with either statement as it was. `requeue_run` (`status IN
/// ('dead_lettered', 'queued')`) is planned by the primary key as it is, and checked with them.
#[tokio::test]
async fn one_run_found_by_its_id_is_read_by_the_primary_key_whatever_is_open() {
    let Some(url) = pg::url("one_run_found_by_its_id_is_read_by_the_primary_key_whatever_is_open") else { return };
    let database = pg::OwnDatabase::create(&url).await;
    let store = pg::generic_plan_store(&database).await;
    pg::fill_node(store.pool(), "history", "history-t").await;
    // No run open now, as a back-fill leaves the node between two of its runs: the planner's
    // statistics give `runs_open` no entry, and its pages are still there.
    sqlx::query("UPDATE runs SET status = 'synced', next_attempt_at = NULL WHERE status = 'queued'")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query("VACUUM ANALYZE runs").execute(store.pool()).await.unwrap();
    let scope = "by-id";
    let lease = t0() + chrono::Duration::minutes(5);
    // Each statement run once, so that the store's connection has it prepared.
    let queued = store.enqueue(new_run(scope, "invoice.created:1", "{\"n\":1}"), Dedupe::Permanent).await.unwrap();
    let run = store.claim_run(queued.run_id(), t0(), lease).await.unwrap().expect("claimed");
    store.finish(run.id, run.claim, synced("invoice.created:1", 1)).await.unwrap();
    assert!(!store.requeue_run(run.id, t0()).await.unwrap(), "a synced run is not requeued");
    let mut plans = Vec::new();
    for (what, starts) in [
        ("finish", "WITH done AS (UPDATE runs"),
        ("claim_run", "UPDATE runs SET status = 'running', claim = claim + 1"),
        (
            "requeue_run",
            "UPDATE runs SET status = 'queued', next_attempt_at = NULL, attempts_before_retry = attempts, lease_until = NULL, updated_at = $1 WHERE id",
        ),
    ] {
        plans.push((what, pg::generic_plan_of_prepared(store.pool(), starts).await));
    }
    store.close().await;
    database.drop().await;
    for (what, plan) in plans {
        let text = plan.join("\n");
        assert!(text.contains("Index Scan using runs_pkey on runs "), "{what}: the run by its id: {text}");
        for other in ["runs_open", "runs_by_status", "Seq Scan on runs"] {
            assert!(!text.contains(other), "{what}: not through {other}: {text}");
        }
    }
}

/// The replay cache's purge (`byte8_replay_purge`, one webhook in sixteen) reads the expired keys
/// by the expiry index and deletes them by key, with the plan its session made while the cache was
/// small and kept as it grew (PL/pgSQL keeps a function's generic plan until the table is
/// analysed; autovacuum is off for the table here, so nothing else replans it). Before migration
/// 0031 that plan was two sequential scans of the whole cache (checked: 40,016 rows read to delete
/// 3 of 20,008). The counts are the session's own (`pg_stat_xact_user_tables`), taken before and
/// after the purge.
#[tokio::test]
async fn the_replay_purge_reads_by_index_with_a_plan_made_when_the_cache_was_small() {
    use sqlx::Connection as _;
    let Some(url) = pg::url("the_replay_purge_reads_by_index_with_a_plan_made_when_the_cache_was_small") else {
        return;
    };
    let database = pg::OwnDatabase::create(&url).await;
    pg::store_in(&database, 1, None).await.close().await;
    // One session throughout: the plan kept is the session's.
    let mut conn = sqlx::PgConnection::connect_with(&database.options).await.unwrap();
    for statement in [
        "ALTER TABLE replay_cache SET (autovacuum_enabled = false)",
        "INSERT INTO replay_cache SELECT 'small-' || g, 1000 + g FROM generate_series(1, 10) AS g",
        "ANALYZE replay_cache",
        // Planned on the small cache: keys 1001 and 1002 have expired.
        "SELECT byte8_replay_purge(1002, 'kept')",
        "INSERT INTO replay_cache SELECT 'grown-' || g, 100000 + g FROM generate_series(1, 20000) AS g",
    ] {
        sqlx::query(statement).execute(&mut conn).await.unwrap();
    }
    // The session's counts not yet reported to the statistics (those of its earlier statements
    // too), before and after the purge.
    let counts = "SELECT seq_tup_read, n_tup_del FROM pg_stat_xact_user_tables WHERE relname = 'replay_cache'";
    let mut tx = conn.begin().await.unwrap();
    let before: (i64, i64) = sqlx::query_as(counts).fetch_one(&mut *tx).await.unwrap();
    sqlx::query("SELECT byte8_replay_purge(1005, 'kept')").execute(&mut *tx).await.unwrap();
    let after: (i64, i64) = sqlx::query_as(counts).fetch_one(&mut *tx).await.unwrap();
    tx.rollback().await.unwrap();
    let (read, deleted) = (after.0 - before.0, after.1 - before.1);
    conn.close().await.unwrap();
    database.drop().await;
    assert_eq!(deleted, 3, "the keys expired since (1003 to 1005) are deleted");
    assert_eq!(read, 0, "no row read by a sequential scan of the 20,008 in the cache");
}

/// The wide values a run writes (its event line, policy snapshot and outcome; its attempt's
/// snapshot and message; its requests' bodies and error) are compressed with lz4 where the server
/// has it (migration 0032; pglz, PostgreSQL's default, cost 4.4 % of a back-fill's backend CPU),
/// and read back as they were written. A server without lz4 keeps pglz, and the migration does
/// not fail there. Each value is about 3 kB of repeated JSON: over the TOAST threshold (about 2 kB
/// a row) and compressible, so that PostgreSQL compresses every one of them.
#[tokio::test]
async fn wide_values_are_compressed_with_lz4_where_the_server_has_it() {
    let Some(url) = pg::url("wide_values_are_compressed_with_lz4_where_the_server_has_it") else { return };
    let store = pg::store(&url, 2, None).await;
    let has_lz4: bool =
        sqlx::query_scalar("SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    let expected = if has_lz4 { "lz4" } else { "pglz" };
    let wide = |what: &str| {
        let items: Vec<String> = (0..60).map(|i| format!("{{\"{what}\":{i},\"sku\":\"SKU-{i}\"}}")).collect();
        format!("[{}]", items.join(","))
    };
    let scope = pg::unique("wide");
    let key = "invoice.created:88";
    let mut run = new_run(&scope, key, &wide("line"));
    run.policy = Some(wide("policy"));
    let id = store.enqueue(run, Dedupe::Permanent).await.unwrap().run_id();
    let claimed = store.claim_run(id, t0(), t0() + chrono::Duration::seconds(60)).await.unwrap().unwrap();
    let mut result = synced(key, 1);
    result.outcome.message = Some(wide("outcome"));
    result.attempt.message = Some(wide("message"));
    result.attempt.snapshot = Some(serde_json::json!({"lines": wide("snapshot")}).into());
    let mut sent = exchange(1, &wide("request"));
    sent.response_body = Some(wide("response"));
    sent.error = Some(wide("error"));
    let recording = pg::unique("rec");
    result.attempt.exchanges = vec![sent.clone()];
    result.attempt.recording = Some(RecordingRef { id: recording.clone(), first: 0, count: 1 });
    store.finish(id, claimed.claim, result).await.unwrap();

    let methods: Vec<Option<String>> = sqlx::query(
        "SELECT pg_column_compression(r.raw), pg_column_compression(r.policy), pg_column_compression(r.outcome), \
         pg_column_compression(a.snapshot), pg_column_compression(a.message), \
         pg_column_compression(e.request_body), pg_column_compression(e.response_body), pg_column_compression(e.error) \
         FROM runs r JOIN attempts a ON a.run_id = r.id JOIN exchanges e ON e.recording = a.recording WHERE r.id = $1",
    )
    .bind(id)
    .fetch_one(store.pool())
    .await
    .map(|row| (0..8).map(|i| row.get(i)).collect())
    .unwrap();
    let stored = store.get(id).await.unwrap().unwrap();
    let attempts = store.attempts(id).await.unwrap();
    store.close().await;
    let names = ["raw", "policy", "outcome", "snapshot", "message", "request_body", "response_body", "error"];
    for (name, method) in names.iter().zip(&methods) {
        assert_eq!(method.as_deref(), Some(expected), "{name} compressed with {expected}: {methods:?}");
    }
    assert_eq!(stored.raw, wide("line"), "the event line read back");
    assert_eq!(stored.policy, Some(wide("policy")), "the policy snapshot read back");
    assert_eq!(stored.outcome.and_then(|o| o.message), Some(wide("outcome")), "the outcome read back");
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].message, Some(wide("message")), "the attempt's message read back");
    assert_eq!(attempts[0].exchanges, vec![sent], "the request, its answer and error read back");
    let snapshot: Option<serde_json::Value> =
        attempts[0].snapshot.as_ref().map(|s| serde_json::from_str(s.as_str()).unwrap());
    assert_eq!(snapshot, Some(serde_json::json!({"lines": wide("snapshot")})), "the snapshot read back");
}

/// Listing a customer's contact variants (`list_xrefs(Contact, "customer:N:")`, which the engine
/// does at every `customer.upserted`) reads those keys only: a range of the primary key, planned
/// once. Before, `left(key, length($3)) = $3` was a filter over every
/// contact key of the business: with 20,000 customers, 19,998 rows read and dropped for the two
/// listed (checked with the old statement), and a custom plan at every call.
#[tokio::test]
async fn listing_a_customers_contacts_reads_only_their_keys() {
    let Some(url) = pg::url("listing_a_customers_contacts_reads_only_their_keys") else { return };
    let database = pg::OwnDatabase::create(&url).await;
    let store = pg::generic_plan_store(&database).await;
    sqlx::query(
        "INSERT INTO xrefs (scope, kind, key, state, ledger_id, reference, meta, updated_at) \
         SELECT 'shop', 'contact', 'customer:' || g || ':' || c, 'done', 'C' || g, NULL, '{}', now() \
         FROM generate_series(1, 10000) AS g, unnest(ARRAY['EUR', 'GBP']) AS c",
    )
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("ANALYZE xrefs").execute(store.pool()).await.unwrap();
    // A key with a NUL is kept with U+FFFD in its place (PostgreSQL's text cannot hold NUL); the
    // listing finds it by the prefix as given, the NUL at the prefix's end or inside it.
    let odd = Xref::done("C-odd".into(), None, serde_json::json!({}), t0());
    store.put_xref("shop", XrefKind::Contact, "customer:\0x:GBP", &odd).await.unwrap();
    for (prefix, expected) in [
        ("customer:5:", &["customer:5:EUR", "customer:5:GBP"][..]),
        ("customer:\0", &["customer:\u{fffd}x:GBP"][..]),
        ("customer:\0x:", &["customer:\u{fffd}x:GBP"][..]),
    ] {
        let listed = store.list_xrefs("shop", XrefKind::Contact, prefix).await.unwrap();
        let keys: Vec<&str> = listed.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, expected, "prefix {prefix:?} (customer 5's, not 50's or 5000's)");
    }
    let plan = pg::explain_prepared(
        store.pool(),
        "SELECT * FROM xrefs WHERE scope = $1 AND kind = $2 AND key >= $3",
        "text, text, text, text",
        "'shop', 'contact', 'customer:5:', 'customer:5;'",
    )
    .await;
    store.close().await;
    database.drop().await;
    assert!(plan.iter().any(|line| line.contains("Index Scan using xrefs_pkey")), "the primary key's range: {plan:#?}");
    assert_eq!(pg::rows_removed_by_filter(&plan, "xrefs"), 0, "no other customer's key read: {plan:#?}");
}

/// A block of permits holds at most two for the same moment (migration 0021): a business that
/// may burst (nothing in its window) asking six gets two for now and the rest one interval apart,
/// since its requests go one after the other and a permit unused for `PERMIT_VALIDITY` is dropped
/// while still counting against its limit. Before, all six were for now (four of them dropped in
/// practice). A business at its pace gets its permits an interval apart as before.
#[tokio::test]
async fn a_block_holds_two_permits_for_now_and_then_the_pace() {
    let Some(url) = pg::url("a_block_holds_two_permits_for_now_and_then_the_pace") else { return };
    let store = pg::store(&url, 1, None).await;
    let (interval, now) = (300_000_i64, 1_800_000_000_000_000_i64);
    let permits = |key: String, burst: i64, count: i32| {
        let pool = store.pool().clone();
        async move {
            let row = sqlx::query("SELECT byte8_rate_permits($1, $2, $3, $4, $5, $6, $7) AS permits")
                .bind(key)
                .bind(now)
                .bind(count)
                .bind(interval)
                .bind((burst - 1) * interval)
                .bind(200)
                .bind(60_750_000_i64)
                .fetch_one(&pool)
                .await
                .unwrap();
            let permits = row.get::<Vec<i64>, _>("permits");
            assert_eq!(permits[0], now, "the database's now first");
            permits[1..].iter().map(|at| at - now).collect::<Vec<i64>>()
        }
    };
    let (bursting, paced) = (pg::unique("spaced"), pg::unique("paced"));
    assert_eq!(
        permits(bursting.clone(), 10, 6).await,
        [0, 0, interval, 2 * interval, 3 * interval, 4 * interval],
        "a burst of ten allowed: two for now, then the pace"
    );
    assert_eq!(permits(paced.clone(), 1, 3).await, [0, interval, 2 * interval], "no burst: the pace, as before");
    sqlx::query("DELETE FROM rate_limits WHERE key IN ($1, $2)")
        .bind(&bursting)
        .bind(&paced)
        .execute(store.pool())
        .await
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// The store's statements keep their connections (no pool test between two statements)

/// A store whose pool counts the connections given back to it (each of which the pool tests with
/// a round trip before it reuses it).
async fn counting_store(url: &str, connections: u32) -> (PostgresStore, Arc<AtomicUsize>) {
    let released = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&released);
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(connections)
        .after_release(move |_, _| {
            let counter = Arc::clone(&counter);
            Box::pin(async move {
                counter.fetch_add(1, Ordering::SeqCst);
                Ok(true)
            })
        })
        .connect(url)
        .await
        .expect("connect to PostgreSQL");
    let store = PostgresStore::from_pool(pool, None).await.expect("migrate");
    // The migrations' connection goes back to the pool in a task of its own: counted first.
    let deadline = Instant::now() + Duration::from_secs(10);
    while store.pool().num_idle() < store.pool().size() as usize {
        assert!(Instant::now() < deadline, "the migrations' connection never came back");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (store, released)
}

/// Waits for `count` to reach `want` (the pool takes a connection back in a task of its own).
async fn released_reaches(count: &AtomicUsize, want: usize) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while count.load(Ordering::SeqCst) != want {
        assert!(Instant::now() < deadline, "released {} connections, not {want}", count.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn backend_pid(store: &PostgresStore) -> i32 {
    sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(store.statements()).await.unwrap()
}

#[tokio::test]
async fn the_stores_statements_reuse_one_connection_without_giving_it_back_to_the_pool() {
    let Some(url) = pg::url("the_stores_statements_reuse_one_connection_without_giving_it_back_to_the_pool") else {
        return;
    };
    let (store, released) = counting_store(&url, 4).await;
    let released_by_migrations = released.load(Ordering::SeqCst);
    let scope = pg::unique("kept");
    let pid = backend_pid(&store).await;
    for i in 0..20 {
        let key = i.to_string();
        store
            .put_xref(
                &scope,
                XrefKind::Invoice,
                &key,
                &Xref::done("SI-1".to_owned(), None, serde_json::Value::Null, t0()),
            )
            .await
            .unwrap();
        assert!(store.get_xref(&scope, XrefKind::Invoice, &key).await.unwrap().is_some());
        assert_eq!(store.list_xrefs(&scope, XrefKind::Invoice, "").await.unwrap().len(), i + 1, "fetch_all");
    }
    assert_eq!(backend_pid(&store).await, pid, "one connection served every statement");
    assert_eq!(released.load(Ordering::SeqCst), released_by_migrations, "no statement gave its connection back");
    assert_eq!(store.statements().kept_now(), 1);

    // Three statements at once (the pool never saturated): two connections are kept (half of
    // the pool's four), one goes back.
    let sleeps = (0..3).map(|_| sqlx::query("SELECT pg_sleep(0.2)").execute(store.statements()));
    for r in join_all(sleeps).await {
        r.unwrap();
    }
    assert_eq!(store.statements().kept_now(), 2);
    released_reaches(&released, released_by_migrations + 1).await;
}

/// A statement that ends while the pool is saturated gives its connection back to the pool, where
/// a transaction waiting for one gets it at once: kept, it would idle while the transaction waited
/// for the other statement's connection (two seconds here).
#[tokio::test]
async fn a_statement_ending_on_a_saturated_pool_gives_its_connection_to_the_waiting() {
    let Some(url) = pg::url("a_statement_ending_on_a_saturated_pool_gives_its_connection_to_the_waiting") else {
        return;
    };
    let (store, released) = counting_store(&url, 2).await;
    let before = released.load(Ordering::SeqCst);
    let statements = store.statements().clone();
    let long = tokio::spawn(async move { sqlx::query("SELECT pg_sleep(2)").execute(&statements).await });
    while store.pool().size() < 1 || store.pool().num_idle() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The pool's second connection: out for this statement, so the pool is saturated as it ends.
    assert!(backend_pid(&store).await > 0);
    assert_eq!(store.statements().kept_now(), 0, "not kept: the pool was saturated");
    released_reaches(&released, before + 1).await;
    let waiting = tokio::time::timeout(Duration::from_secs(1), store.pool().acquire()).await;
    assert!(waiting.is_ok_and(|c| c.is_ok()), "the waiting acquire got the connection before the long statement ended");
    assert!(!long.is_finished(), "the long statement still holds the other connection");
    long.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_failed_or_abandoned_statement_gives_its_connection_back_and_the_next_one_is_sound() {
    let Some(url) = pg::url("a_failed_or_abandoned_statement_gives_its_connection_back_and_the_next_one_is_sound")
    else {
        return;
    };
    let (store, released) = counting_store(&url, 4).await;
    let before = released.load(Ordering::SeqCst);
    backend_pid(&store).await;
    assert_eq!(store.statements().kept_now(), 1);

    // A statement that fails: its connection goes back to the pool (which tests it).
    let e = sqlx::query("SELECT 1 / 0").execute(store.statements()).await.unwrap_err();
    assert!(e.to_string().contains("division by zero"), "{e}");
    assert_eq!(store.statements().kept_now(), 0);
    released_reaches(&released, before + 1).await;

    // A statement abandoned before its answer came: its connection goes back too, and no later
    // statement reads the abandoned one's answer.
    backend_pid(&store).await;
    let abandoned = tokio::time::timeout(
        Duration::from_millis(50),
        sqlx::query_scalar::<_, i32>("SELECT 7 FROM pg_sleep(0.3)").fetch_one(store.statements()),
    )
    .await;
    assert!(abandoned.is_err(), "timed out");
    assert_eq!(store.statements().kept_now(), 0, "the abandoned statement's connection is not kept");
    for n in [1, 2, 3] {
        let got: i32 = sqlx::query_scalar("SELECT $1::int").bind(n).fetch_one(store.statements()).await.unwrap();
        assert_eq!(got, n);
    }

    // A kept connection the server closed: its next statement fails with a retryable error, and
    // the one after runs on a new connection.
    let pid = backend_pid(&store).await;
    let admin = pg::store(&url, 1, None).await;
    let ended: bool =
        sqlx::query_scalar("SELECT pg_terminate_backend($1)").bind(pid).fetch_one(admin.pool()).await.unwrap();
    assert!(ended);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let scope = pg::unique("closed");
    let mut errors = 0;
    let got = loop {
        match store.get_xref(&scope, XrefKind::Invoice, "1").await {
            Ok(got) => break got,
            Err(e) => {
                assert!(e.is_retryable(), "{e}");
                errors += 1;
                assert!(errors < 2, "one statement fails at most: {e}");
            }
        }
    };
    assert_eq!(got, None);
    assert_ne!(backend_pid(&store).await, pid, "a new connection");
}

/// `PostgresStore::close` closes the pool once the connections its statements keep between them
/// are back: the pool's own `close` waits for every connection out of it, and so for a kept one
/// for good (the conformance suite, which closed its store's pool that way, hung now and then).
/// The bounds turn a hang into a failure; they are not timings.
#[tokio::test]
async fn closing_the_store_gives_back_the_connections_its_statements_keep() {
    let Some(url) = pg::url("closing_the_store_gives_back_the_connections_its_statements_keep") else { return };
    let store = pg::store(&url, 8, None).await;
    // Statements at once, as the conformance suite's races run them: each takes a connection,
    // and half the pool's are kept afterwards.
    let statements = (0..8).map(|_| sqlx::query_scalar::<_, i64>("SELECT 1::bigint").fetch_one(store.statements()));
    for answer in join_all(statements).await {
        answer.unwrap();
    }
    assert!(store.statements().kept_now() > 0, "connections are kept between statements");
    let pool_alone = tokio::time::timeout(std::time::Duration::from_secs(2), store.pool().close()).await;
    assert!(pool_alone.is_err(), "the pool's close alone waits for the kept connection");
    tokio::time::timeout(std::time::Duration::from_secs(60), store.close()).await.expect("the store closes");
    assert!(store.pool().is_closed());
    assert_eq!(store.statements().kept_now(), 0, "nothing kept");
    assert!(
        sqlx::query_scalar::<_, i64>("SELECT 1::bigint").fetch_one(store.statements()).await.is_err(),
        "a statement after closing fails as on a closed pool"
    );
}

/// The growing tables of a new database are analysed once the store has finished 1,024 runs
/// (`YOUNG_ANALYSE_FROM`), not before: a connection that began on the empty database otherwise
/// keeps plans made for tables of one page (`UPDATE runs … WHERE id = $1` as a sequential scan)
/// until autovacuum's first visit (BENCHMARKS.md round 38: a back-fill of 10,000 events into a new
/// database spent 5.6 ms of the database's CPU an event when that visit came late). The store has
/// one connection, and autovacuum is off for the test's tables, so that only the store's analysis
/// can change the plan its connection keeps for `claim_run`: a sequential scan after 1,023 runs,
/// an index scan once the 1,024th is finished. `analyze_count` counts the `ANALYZE`s sessions ran
/// (migration 0022's among them; autovacuum's are `autoanalyze_count`).
#[tokio::test]
async fn a_young_database_s_growing_tables_are_analysed_at_1024_finished_runs() {
    use byte8_ledger_core::store::postgres::YOUNG_ANALYSE_FROM;
    let Some(url) = pg::url("a_young_database_s_growing_tables_are_analysed_at_1024_finished_runs") else { return };
    let database = pg::OwnDatabase::create(&url).await;
    let store = pg::store_in(&database, 1, None).await;
    let pool = store.pool().clone();
    for table in ["runs", "attempts", "xrefs"] {
        sqlx::query(&format!("ALTER TABLE {table} SET (autovacuum_enabled = false)")).execute(&pool).await.unwrap();
    }
    // The plan the store's connection keeps for `claim_run` (its prepared statement, explained
    // without being run).
    let claim_plan = || {
        let pool = pool.clone();
        async move {
            let name: String = sqlx::query_scalar(
                "SELECT name FROM pg_prepared_statements \
                 WHERE starts_with(statement, 'UPDATE runs SET status = ''running'', claim = claim + 1')",
            )
            .fetch_one(&pool)
            .await
            .expect("claim_run prepared on the store's one connection");
            let plan: Vec<String> =
                sqlx::query_scalar(&format!("EXPLAIN EXECUTE {name}(1, now(), now())")).fetch_all(&pool).await.unwrap();
            plan.join("\n")
        }
    };
    let analyses = |table: &'static str| {
        let pool = pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT analyze_count FROM pg_stat_user_tables WHERE relname = $1")
                .bind(table)
                .fetch_one(&pool)
                .await
                .unwrap()
        }
    };
    let tables = ["runs", "attempts", "xrefs"];
    let mut before = Vec::new();
    for table in tables {
        before.push(analyses(table).await);
    }
    let finish_one = |i: u64| {
        let store = &store;
        async move {
            let key = format!("invoice.created:{i}");
            let id = store.enqueue(new_run("young", &key, &format!("{{\"n\":{i}}}")), Dedupe::Permanent).await.unwrap();
            let run = store.claim_run(id.run_id(), t0(), t0() + chrono::Duration::minutes(5)).await.unwrap().unwrap();
            store.finish(run.id, run.claim, synced(&key, 1)).await.unwrap();
        }
    };
    for i in 1..YOUNG_ANALYSE_FROM {
        finish_one(i).await;
    }
    assert_eq!(analyses("runs").await, before[0], "not analysed before the {YOUNG_ANALYSE_FROM}th finished run");
    let young = claim_plan().await;
    assert!(young.contains("Seq Scan on runs"), "planned on the empty table, kept: {young}");
    finish_one(YOUNG_ANALYSE_FROM).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while analyses("runs").await == before[0] {
        assert!(Instant::now() < deadline, "the store had the tables analysed at {YOUNG_ANALYSE_FROM} finished runs");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let reltuples: f32 = sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'runs'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    for (table, before) in tables.into_iter().zip(before).skip(1) {
        assert_eq!(analyses(table).await, before + 1, "{table} analysed with runs");
    }
    let grown = claim_plan().await;
    store.close().await;
    database.drop().await;
    assert!(reltuples >= 1000.0, "the planner now knows the table's size: {reltuples} rows");
    assert!(
        grown.contains("Index Scan using") && !grown.contains("Seq Scan"),
        "planned again for the grown table: {grown}"
    );
}

/// The runs webhooks queue count toward a young database's analyses as finished runs do: a new
/// node's first catalogue queues runs far faster than they finish, and until the first analysis
/// each enqueue read every run queued before it (BENCHMARKS.md, round 40). With no run finished,
/// the tables are not analysed after 1,023 runs queued (`enqueue_unless_replayed`, as the
/// service's webhooks without a binding version queue them), and are once the 1,024th is.
/// Autovacuum is off for the tables, so only the store's analysis counts.
#[tokio::test]
async fn a_young_database_is_analysed_as_webhooks_queue_runs_not_only_as_runs_finish() {
    use byte8_ledger_core::store::postgres::YOUNG_ANALYSE_FROM;
    let Some(url) = pg::url("a_young_database_is_analysed_as_webhooks_queue_runs_not_only_as_runs_finish") else {
        return;
    };
    let database = pg::OwnDatabase::create(&url).await;
    let store = pg::store_in(&database, 1, None).await;
    for table in ["runs", "attempts", "xrefs", "replay_cache"] {
        sqlx::query(&format!("ALTER TABLE {table} SET (autovacuum_enabled = false)"))
            .execute(store.pool())
            .await
            .unwrap();
    }
    let queue = |i: u64| {
        let store = &store;
        async move {
            let key = format!("product.upserted:{i}");
            let queued = store
                .enqueue_unless_replayed(
                    &format!("jti-{i}"),
                    2_000_000_000,
                    1_800_000_000,
                    None,
                    new_run("catalogue", &key, &format!("{{\"n\":{i}}}")),
                    Dedupe::WhileQueued,
                )
                .await
                .unwrap();
            assert!(matches!(queued, EnqueuedOnce::Queued(Enqueued::New(_))), "{key} queued: {queued:?}");
        }
    };
    let (early, analysed) = pg::runs_analysed_at(store.pool(), YOUNG_ANALYSE_FROM, queue).await;
    store.close().await;
    database.drop().await;
    assert!(!early, "not analysed before the {YOUNG_ANALYSE_FROM}th run queued");
    assert!(analysed, "the store had the tables analysed at {YOUNG_ANALYSE_FROM} runs queued by webhook");
}

/// The shared limiter's record of a business's permits (`rate_limits.recent`, migration 0030)
/// keeps only those less than a span before the newest, as the rule in process does
/// (`Window::reserve`, itself checked against the whole history by a property test), and gives
/// the same permits as that rule, one permit a call, over a limit far above the traffic with
/// pauses longer than the span between bursts. Before 0030 the record kept every permit (up to
/// the limit) and each call rewrote them all.
#[tokio::test]
async fn the_shared_window_keeps_its_last_span_and_gives_the_permits_of_the_rule_in_process() {
    use byte8_ledger_core::http::limit::{Window, WindowState};
    let Some(url) = pg::url("the_shared_window_keeps_its_last_span_and_gives_the_permits_of_the_rule_in_process")
    else {
        return;
    };
    let store = pg::store(&url, 2, None).await;
    let key = pg::unique("window-span");
    let w = Window::of(RateConfig { requests_per_minute: 100_000, burst: 10 }).unwrap();
    let as_i64 = |v: u64| i64::try_from(v).unwrap();
    let mut state = WindowState::default();
    let mut now: i64 = 1_800_000_000_000_000;
    for i in 0..400_i64 {
        let permits: Vec<i64> = sqlx::query_scalar("SELECT byte8_rate_permits($1, $2, 1, $3, $4, $5, $6)")
            .bind(&key)
            .bind(now)
            .bind(as_i64(w.interval_micros))
            .bind(as_i64(w.tolerance_micros()))
            .bind(i32::try_from(w.limit).unwrap())
            .bind(as_i64(w.span_micros))
            .fetch_one(store.pool())
            .await
            .unwrap();
        let want = w.reserve(&mut state, now);
        assert_eq!(permits, [now, want], "request {i}");
        // Requests a few hundred milliseconds apart, and every 100th after a pause of 70 s.
        now = want + if i % 100 == 99 { 70_000_000 } else { (i * 7_919) % 400_000 };
    }
    let recent: Vec<i64> = sqlx::query_scalar("SELECT recent FROM rate_limits WHERE key = $1")
        .bind(&key)
        .fetch_one(store.pool())
        .await
        .unwrap();
    store.close().await;
    assert_eq!(recent, Vec::from(state.recent), "the same record as the rule in process");
    // The last 100 requests came about 20 s after a pause of 70 s: only theirs, not the 400.
    assert_eq!(recent.len(), 100, "only the last burst's permits");
}
