//! The conformance suite of the service's stores ([`crate::store`]): bindings, the replay
//! cache, dispatch leases, the callback outbox, the health counters and the retention promise,
//! run against every [`ServiceStore`] (memory, SQLite, PostgreSQL). Each function panics with a
//! message naming the behaviour when the store gets it wrong. It builds on the core's store
//! suite (`byte8_ledger_core::store::conformance`, whose run and result helpers it uses).
//!
//! ```no_run
//! # async fn demo(store: &dyn byte8_ledger_service::store::ServiceStore) {
//! byte8_ledger_service::store::conformance::run_all(store, "my-test-scope").await;
//! # }
//! ```

use byte8_ledger_core::{
    policy::SyncPolicy,
    store::{
        Dedupe, Enqueued, EnqueuedOnce, RunStatus,
        conformance::{new_run, result, t0, tenant_run},
    },
};
use chrono::{DateTime, Duration, Utc};

use super::{ApiKey, Binding, BindingStatus, ConnectionStatus, ServiceStore, TurnEnd, TurnStart, WebhookToken};

/// A tenant id derived from a scope (scopes may hold characters tenant ids may not).
fn tenant_of(scope: &str) -> String {
    let t: String = scope.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '-' }).collect();
    format!("{t}-tenant")
}

fn binding(tenant: &str, scope: &str, key: &str, at: DateTime<Utc>) -> Binding {
    let policy = SyncPolicy::from_json(r#"{"invoice_number_prefix":"MAG-","default_tax_rate_id":"GB_STANDARD"}"#)
        .expect("a valid policy");
    let mut b = Binding::new(tenant, scope, "https://shop.example.com", ApiKey::new(key).expect("a key"), policy, at)
        .expect("a valid binding");
    b.ledger_base_url = Some("https://ledger.example.com".into());
    b
}

/// Bindings round-trip (the key and the policy included), re-pairing replaces the key and keeps
/// `created_at`, statuses change, and a Magento status seen with an old pairing changes nothing.
pub async fn bindings_round_trip(store: &dyn ServiceStore, scope: &str) {
    let tenant = tenant_of(scope);
    assert!(store.binding(&tenant).await.expect("binding").is_none(), "bindings_round_trip: unknown tenant");
    let first = binding(&tenant, scope, "key-one", t0());
    store.put_binding(&first).await.expect("put binding");
    let got = store.binding(&tenant).await.expect("binding").expect("bindings_round_trip: stored");
    assert_eq!(got.api_key.expose_secret(), "key-one", "bindings_round_trip: the key");
    assert_eq!(got.policy, first.policy, "bindings_round_trip: the policy");
    assert_eq!(got.policy.invoice_number_prefix.as_deref(), Some("MAG-"));
    assert_eq!(
        (got.scope.as_str(), got.magento_base_url.as_str(), got.ledger_base_url.as_deref()),
        (scope, "https://shop.example.com", Some("https://ledger.example.com")),
        "bindings_round_trip: the fields"
    );
    assert_eq!((got.status, got.magento_status), (BindingStatus::Active, ConnectionStatus::Active));
    assert_eq!((got.paired_at, got.created_at), (t0(), t0()), "bindings_round_trip: times");
    let listed = store.bindings().await.expect("bindings");
    assert_eq!(
        listed.iter().find(|b| b.tenant_id == tenant),
        Some(&got.info()),
        "bindings_round_trip: listed without the key"
    );

    // Disconnect, then pair again with a new key.
    assert!(store.set_binding_status(&tenant, BindingStatus::Revoked, t0()).await.expect("status"));
    assert_eq!(store.binding(&tenant).await.expect("binding").map(|b| b.status), Some(BindingStatus::Revoked));
    let later = t0() + Duration::minutes(10);
    let mut second = binding(&tenant, scope, "key-two", later);
    second.magento_status = ConnectionStatus::Pending;
    store.put_binding(&second).await.expect("put binding");
    let got = store.binding(&tenant).await.expect("binding").expect("stored");
    assert_eq!(got.api_key.expose_secret(), "key-two", "bindings_round_trip: pairing again replaces the key");
    assert_eq!(got.status, BindingStatus::Active, "bindings_round_trip: pairing again reactivates");
    assert_eq!((got.paired_at, got.created_at), (later, t0()), "bindings_round_trip: created_at is kept");

    // A 401 seen with the first pairing's key must not mark the second pairing.
    let stale =
        store.set_magento_status(&tenant, t0(), ConnectionStatus::TokenRevoked, later).await.expect("magento status");
    assert!(!stale, "bindings_round_trip: a status of an old pairing is ignored");
    assert_eq!(
        store.binding(&tenant).await.expect("binding").map(|b| b.magento_status),
        Some(ConnectionStatus::Pending)
    );
    assert!(store.set_magento_status(&tenant, later, ConnectionStatus::TokenRevoked, later).await.expect("status"));
    assert_eq!(
        store.binding(&tenant).await.expect("binding").map(|b| b.magento_status),
        Some(ConnectionStatus::TokenRevoked)
    );
    assert!(!store.set_binding_status("no-such-tenant-x", BindingStatus::Revoked, later).await.expect("status"));
    assert!(!format!("{got:?}").contains("key-two"), "bindings_round_trip: Debug of a binding shows its key");
    // Left revoked: a database shared with running services must not dispatch a test tenant.
    assert!(store.set_binding_status(&tenant, BindingStatus::Revoked, later).await.expect("status"));
}

/// One active tenant per business: a second store's active binding on a business is refused
/// (naming `scope`), once the first is revoked it is taken, and re-pairing the same tenant, or
/// storing a revoked binding beside an active one, is allowed.
pub async fn one_active_tenant_per_business(store: &dyn ServiceStore, scope: &str) {
    let first = format!("{}-a", tenant_of(scope));
    let second = format!("{}-b", tenant_of(scope));
    store.put_binding(&binding(&first, scope, "key-a", t0())).await.expect("put the first binding");
    let err = store
        .put_binding(&binding(&second, scope, "key-b", t0()))
        .await
        .expect_err("one_active_tenant_per_business: a second active tenant on one business was stored");
    assert!(
        matches!(&err, byte8_ledger_core::error::Error::Invalid { errors, .. } if errors.iter().any(|e| e.path == "scope")),
        "one_active_tenant_per_business: the refusal names `scope`: {err}"
    );
    assert!(store.binding(&second).await.expect("binding").is_none(), "one_active_tenant_per_business: nothing stored");
    // The same tenant pairing again is not a second tenant.
    store.put_binding(&binding(&first, scope, "key-a2", t0())).await.expect("re-pair the same tenant");
    // A revoked binding may sit beside the active one.
    let mut revoked = binding(&second, scope, "key-b", t0());
    revoked.status = BindingStatus::Revoked;
    store.put_binding(&revoked).await.expect("one_active_tenant_per_business: a revoked binding beside");
    // Once the first is revoked, the second may become active.
    assert!(store.set_binding_status(&first, BindingStatus::Revoked, t0()).await.expect("status"));
    store.put_binding(&binding(&second, scope, "key-b", t0())).await.expect("the business is free again");
    assert!(store.set_binding_status(&second, BindingStatus::Revoked, t0()).await.expect("status"));
}

/// A `jti` is accepted once until it expires, then may be recorded again.
pub async fn replay_cache_refuses_replays_until_expiry(store: &dyn ServiceStore, scope: &str) {
    let jti = format!("{scope}:{}", uuid::Uuid::new_v4());
    let now = 1_795_000_000;
    assert!(store.check_and_record(&jti, now + 60, now).await.expect("record"), "replay cache: first sight");
    assert!(!store.check_and_record(&jti, now + 60, now + 1).await.expect("record"), "replay cache: a replay");
    assert!(!store.check_and_record(&jti, now + 60, now + 59).await.expect("record"), "replay cache: still live");
    let other = format!("{jti}-other");
    assert!(store.check_and_record(&other, now + 60, now).await.expect("record"), "replay cache: jtis do not mix");
    assert!(
        store.check_and_record(&jti, now + 120, now + 60).await.expect("record"),
        "replay cache: an expired entry may be recorded again"
    );
    assert!(!store.check_and_record(&jti, now + 120, now + 61).await.expect("record"));
    // Concurrent recorders of one jti: exactly one wins.
    let race = format!("{jti}-race");
    let wins = futures::future::join_all((0..8).map(|_| store.check_and_record(&race, now + 60, now))).await;
    let wins = wins.into_iter().map(|r| r.expect("record")).filter(|w| *w).count();
    assert_eq!(wins, 1, "replay cache: concurrent recorders of one jti");
}

/// One holder at a time; the holder renews; an expired lease is taken over; release is the
/// holder's only.
pub async fn dispatch_leases_are_exclusive(store: &dyn ServiceStore, scope: &str) {
    let (a, b) = ("worker-a", "worker-b");
    let until = t0() + Duration::seconds(30);
    assert!(store.acquire_dispatch(scope, a, t0(), until).await.expect("acquire"), "leases: free");
    assert!(
        !store.acquire_dispatch(scope, b, t0() + Duration::seconds(1), until).await.expect("acquire"),
        "leases: held"
    );
    assert!(
        store
            .acquire_dispatch(scope, a, t0() + Duration::seconds(20), t0() + Duration::seconds(60))
            .await
            .expect("acquire"),
        "leases: the holder renews"
    );
    assert!(
        !store
            .acquire_dispatch(scope, b, t0() + Duration::seconds(45), t0() + Duration::seconds(90))
            .await
            .expect("acquire"),
        "leases: the renewal counts"
    );
    assert!(
        store
            .acquire_dispatch(scope, b, t0() + Duration::seconds(60), t0() + Duration::seconds(90))
            .await
            .expect("acquire"),
        "leases: an expired lease is taken over"
    );
    store.release_dispatch(scope, a).await.expect("release");
    assert!(
        !store
            .acquire_dispatch(scope, a, t0() + Duration::seconds(61), t0() + Duration::seconds(90))
            .await
            .expect("acquire"),
        "leases: a former holder cannot release the new holder's lease"
    );
    store.release_dispatch(scope, b).await.expect("release");
    assert!(store.acquire_dispatch(scope, a, t0() + Duration::seconds(62), until).await.expect("acquire"));
    assert!(
        store.acquire_dispatch(&format!("{scope}-other"), b, t0(), until).await.expect("acquire"),
        "leases: per business"
    );
    // Racing for a free lease: one winner.
    let race = format!("{scope}-race");
    let holders: Vec<String> = (0..6).map(|i| format!("racer-{i}")).collect();
    let wins = futures::future::join_all(holders.iter().map(|h| store.acquire_dispatch(&race, h, t0(), until))).await;
    assert_eq!(wins.into_iter().map(|r| r.expect("acquire")).filter(|w| *w).count(), 1, "leases: one racer wins");
}

/// A terminal outcome queues one callback (when the run's own tenant is active on its business
/// only), which is claimed once, retried after a failure, removed once sent; a run finished
/// again gets a new generation that an older send does not clear.
pub async fn callbacks_follow_terminal_runs(store: &dyn ServiceStore, scope: &str) {
    let key = "invoice.created:7001";
    let tenant = tenant_of(scope);
    let lease = |s: i64| t0() + Duration::seconds(s);
    // Without a binding: no callback.
    let id = store
        .enqueue(tenant_run(scope, &tenant, "invoice.created:7000", "x"), Dedupe::Permanent)
        .await
        .expect("enqueue")
        .run_id();
    let run = store.claim_run(id, t0(), lease(60)).await.expect("claim").expect("claimable");
    store.finish(id, run.claim, result("invoice.created:7000", RunStatus::Synced, 1, None)).await.expect("finish");
    assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 0, "callbacks: none without a binding");

    store.put_binding(&binding(&tenant, scope, "k", t0())).await.expect("put binding");
    // A run without a tenant (the `sync` command's) gets none either.
    let id =
        store.enqueue(new_run(scope, "invoice.created:6999", "x"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let run = store.claim_run(id, t0(), lease(60)).await.expect("claim").expect("claimable");
    store.finish(id, run.claim, result("invoice.created:6999", RunStatus::Synced, 1, None)).await.expect("finish");
    assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 0, "callbacks: none for a run without tenant");

    let id = store.enqueue(tenant_run(scope, &tenant, key, "x"), Dedupe::Permanent).await.expect("enqueue").run_id();
    let run = store.claim_run(id, t0(), lease(60)).await.expect("claim").expect("claimable");
    // A retryable failure is not terminal: no callback.
    store.finish(id, run.claim, result(key, RunStatus::Queued, 1, Some(t0()))).await.expect("finish");
    assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 0, "callbacks: none for a retry");
    let run = store.claim_run(id, t0(), lease(60)).await.expect("claim").expect("claimable");
    store.finish(id, run.claim, result(key, RunStatus::DeadLettered, 2, None)).await.expect("finish");
    assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 1, "callbacks: one for the terminal outcome");

    assert!(
        store.claim_callbacks(scope, "another-tenant", lease(5), lease(35), 10).await.expect("claim").is_empty(),
        "callbacks: another tenant never claims them"
    );
    let got = store.claim_callbacks(scope, &tenant, lease(5), lease(35), 10).await.expect("claim callbacks");
    assert_eq!(got.len(), 1, "callbacks: claimed");
    let (generation, run) = (got[0].generation, &got[0].run);
    assert_eq!((run.id, run.status), (id, RunStatus::DeadLettered), "callbacks: the run comes with it");
    assert!(run.outcome.is_some(), "callbacks: with its outcome");
    assert!(
        store.claim_callbacks(scope, &tenant, lease(10), lease(40), 10).await.expect("claim").is_empty(),
        "callbacks: a claimed callback is leased"
    );
    let again = store.claim_callbacks(scope, &tenant, lease(35), lease(65), 10).await.expect("claim");
    assert_eq!(again.len(), 1, "callbacks: due again when its lease expires");
    store.callback_failed(id, generation, lease(100), "HTTP 503").await.expect("failed");
    assert!(store.claim_callbacks(scope, &tenant, lease(99), lease(130), 10).await.expect("claim").is_empty());
    let retried = store.claim_callbacks(scope, &tenant, lease(100), lease(130), 10).await.expect("claim");
    assert_eq!(retried.first().map(|c| c.attempts), Some(1), "callbacks: the failure is counted");

    // Requeued and finished again: a new generation, which the old one's delivery leaves.
    assert!(store.requeue(scope, key, lease(101)).await.expect("requeue"), "callbacks: requeued");
    let run = store.claim_run(id, lease(101), lease(160)).await.expect("claim").expect("claimable");
    store.finish(id, run.claim, result(key, RunStatus::Synced, 1, None)).await.expect("finish");
    store.callback_sent(id, generation, lease(102)).await.expect("sent");
    let newer = store.claim_callbacks(scope, &tenant, lease(200), lease(230), 10).await.expect("claim");
    assert_eq!(newer.len(), 1, "callbacks: an older delivery does not clear a newer outcome");
    assert!(newer[0].generation > generation, "callbacks: a new generation");
    assert_eq!(newer[0].attempts, 0, "callbacks: a new generation starts afresh");
    store.callback_sent(id, newer[0].generation, lease(201)).await.expect("sent");
    assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 0, "callbacks: delivered");
    assert!(
        store.claim_callbacks(scope, &tenant, lease(100_000), lease(100_030), 10).await.expect("claim").is_empty(),
        "callbacks: a delivered callback (kept until its retention ends) is never sent again"
    );

    // A revoked binding stops new callbacks.
    store.set_binding_status(&tenant, BindingStatus::Revoked, lease(300)).await.expect("revoke");
    let id = store
        .enqueue(tenant_run(scope, &tenant, "invoice.created:7002", "x"), Dedupe::Permanent)
        .await
        .expect("enqueue")
        .run_id();
    let run = store.claim_run(id, t0(), lease(60)).await.expect("claim").expect("claimable");
    store.finish(id, run.claim, result("invoice.created:7002", RunStatus::Skipped, 1, None)).await.expect("finish");
    assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 0, "callbacks: none once revoked");
}

/// A webhook's `jti` and its run go together: the first use queues the run, a replay queues
/// nothing (whatever run it carries), concurrent uses of one `jti` queue one run, and an expired
/// `jti` is a new one.
pub async fn webhooks_queue_once_per_jti(store: &dyn ServiceStore, scope: &str) {
    let tenant = tenant_of(scope);
    let jti = format!("{tenant}\u{1f}jti-1");
    let first = store
        .enqueue_once(
            &jti,
            1_000,
            100,
            None,
            tenant_run(scope, &tenant, "invoice.created:9101", "a"),
            Dedupe::Permanent,
        )
        .await
        .expect("enqueue_once");
    let EnqueuedOnce::Queued(Enqueued::New(id)) = first else {
        panic!("webhooks: the first use queues its run: {first:?}")
    };
    let replay = store
        .enqueue_once(
            &jti,
            1_000,
            200,
            None,
            tenant_run(scope, &tenant, "invoice.created:9102", "b"),
            Dedupe::Permanent,
        )
        .await
        .expect("enqueue_once");
    assert_eq!(replay, EnqueuedOnce::Replay, "webhooks: a replay queues nothing");
    assert_eq!(
        store.find_by_key(scope, "invoice.created:9102").await.expect("find"),
        None,
        "webhooks: the replayed request's run is not queued"
    );
    assert!(!store.check_and_record(&jti, 1_000, 300).await.expect("check"), "webhooks: the jti is recorded");
    let again = store
        .enqueue_once(
            &format!("{tenant}\u{1f}jti-2"),
            1_000,
            300,
            None,
            tenant_run(scope, &tenant, "invoice.created:9101", "a"),
            Dedupe::Permanent,
        )
        .await
        .expect("enqueue_once");
    assert!(
        matches!(again, EnqueuedOnce::Queued(Enqueued::Duplicate { id: dup, .. }) if dup == id),
        "webhooks: a new jti with the same event is the run's duplicate: {again:?}"
    );
    let later = store
        .enqueue_once(
            &jti,
            5_000,
            1_000,
            None,
            tenant_run(scope, &tenant, "invoice.created:9103", "c"),
            Dedupe::Permanent,
        )
        .await
        .expect("enqueue_once");
    assert!(
        matches!(later, EnqueuedOnce::Queued(Enqueued::New(_))),
        "webhooks: an expired jti is a new one: {later:?}"
    );
    let race = format!("{tenant}\u{1f}jti-race");
    let runs: Vec<_> = (0..8).map(|i| tenant_run(scope, &tenant, &format!("invoice.created:92{i:02}"), "r")).collect();
    let results = futures::future::join_all(
        runs.into_iter().map(|run| store.enqueue_once(&race, 1_000, 100, None, run, Dedupe::Permanent)),
    )
    .await;
    let queued = results.iter().filter(|r| matches!(r, Ok(EnqueuedOnce::Queued(_)))).count();
    let replays = results.iter().filter(|r| matches!(r, Ok(EnqueuedOnce::Replay))).count();
    assert_eq!((queued, replays), (1, 7), "webhooks: one jti used at once eight times queues one run: {results:?}");
}

/// A webhook verified against a cached binding is queued only while the binding is still the
/// version it was read at, and active ([`BindingStore::versioned_binding`]): any change of the
/// binding since (a status written, a revocation, a re-pairing) queues nothing and records no
/// `jti`. A store that gives no versions refuses one.
///
/// [`BindingStore::versioned_binding`]: super::BindingStore::versioned_binding
pub async fn webhooks_queue_only_on_the_binding_verified(store: &dyn ServiceStore, scope: &str) {
    async fn enqueue(
        store: &dyn ServiceStore,
        scope: &str,
        tenant: &str,
        n: u32,
        version: Option<i64>,
    ) -> byte8_ledger_core::Result<EnqueuedOnce> {
        let run = tenant_run(scope, tenant, &format!("invoice.created:95{n:02}"), "v");
        store.enqueue_once(&format!("{tenant}\u{1f}bound-{n}"), 1_000, 100, version, run, Dedupe::Permanent).await
    }
    async fn version(store: &dyn ServiceStore, tenant: &str) -> Option<i64> {
        store.versioned_binding(tenant).await.expect("versioned binding").expect("bound: the binding exists").1
    }
    async fn stale_and_unwritten(store: &dyn ServiceStore, scope: &str, tenant: &str, n: u32, v: i64, why: &str) {
        let answer = enqueue(store, scope, tenant, n, Some(v)).await.expect("enqueue");
        assert_eq!(answer, EnqueuedOnce::StaleBinding, "bound: {why}");
        let key = format!("invoice.created:95{n:02}");
        assert!(store.find_by_key(scope, &key).await.expect("find").is_none(), "bound: {why}: no run queued");
        let jti = format!("{tenant}\u{1f}bound-{n}");
        assert!(store.check_and_record(&jti, 1_000, 100).await.expect("check"), "bound: {why}: no jti recorded");
    }
    let tenant = tenant_of(scope);
    let at = |s: i64| t0() + Duration::seconds(s);
    store.put_binding(&binding(&tenant, scope, "key-one", t0())).await.expect("put binding");
    let Some(v1) = version(store, &tenant).await else {
        assert!(
            enqueue(store, scope, &tenant, 1, Some(1)).await.is_err(),
            "bound: a store without versions refuses one"
        );
        assert!(store.find_by_key(scope, "invoice.created:9501").await.expect("find").is_none());
        return;
    };
    assert!(
        matches!(
            enqueue(store, scope, &tenant, 1, Some(v1)).await.expect("enqueue"),
            EnqueuedOnce::Queued(Enqueued::New(_))
        ),
        "bound: the version read queues the run"
    );
    stale_and_unwritten(store, scope, &tenant, 2, v1.wrapping_add(1), "another version is stale").await;
    // A write that changes nothing visible still makes a new version.
    assert!(store.set_binding_status(&tenant, BindingStatus::Active, at(10)).await.expect("status"));
    let v2 = version(store, &tenant).await.expect("a version");
    assert_ne!(v1, v2, "bound: every write makes a new version");
    stale_and_unwritten(store, scope, &tenant, 3, v1, "a version before a status write is stale").await;
    assert!(
        matches!(enqueue(store, scope, &tenant, 4, Some(v2)).await.expect("enqueue"), EnqueuedOnce::Queued(_)),
        "bound: the new version queues"
    );
    // Re-paired with a new key: the old version is stale.
    store.put_binding(&binding(&tenant, scope, "key-two", at(20))).await.expect("re-pair");
    stale_and_unwritten(store, scope, &tenant, 5, v2, "a version before a re-pairing is stale").await;
    // Revoked: even the version read after the revocation queues nothing.
    store.set_binding_status(&tenant, BindingStatus::Revoked, at(30)).await.expect("revoke");
    let v3 = version(store, &tenant).await.expect("a version");
    stale_and_unwritten(store, scope, &tenant, 6, v3, "a revoked binding queues nothing").await;
}

/// A turn of `tenant` on `scope` started by `holder` at `now` seconds past `t0`: the lease for
/// 120 s, the runs claimed for 300 s.
fn turn_start<'a>(scope: &'a str, tenant: &'a str, holder: &'a str, now: i64, limit: usize) -> TurnStart<'a> {
    let at = |s: i64| t0() + Duration::seconds(s);
    TurnStart { scope, tenant, holder, now: at(now), lease_until: at(now + 120), run_lease_until: at(now + 300), limit }
}

/// A turn's start takes the lease and claims the tenant's runs with it (saying whether more are
/// due), claims nothing while another holds the lease, and its end records the callbacks
/// delivered and releases the lease.
pub async fn turns_take_the_lease_and_claim_together(store: &dyn ServiceStore, scope: &str) {
    let tenant = tenant_of(scope);
    let at = |s: i64| t0() + Duration::seconds(s);
    store.put_binding(&binding(&tenant, scope, "k", t0())).await.expect("put binding");
    let mut ids = Vec::new();
    for key in ["invoice.created:8001", "invoice.created:8002"] {
        ids.push(
            store.enqueue(tenant_run(scope, &tenant, key, "x"), Dedupe::Permanent).await.expect("enqueue").run_id(),
        );
    }
    store
        .enqueue(tenant_run(scope, "someone-else", "invoice.created:8003", "y"), Dedupe::Permanent)
        .await
        .expect("enqueue");
    let start = |holder: &'static str, now: i64, limit: usize| turn_start(scope, &tenant, holder, now, limit);
    let a = store.begin_turn(&start("p/1", 0, 1)).await.expect("begin").expect("turns: a free lease is taken");
    assert_eq!(
        a.claimed.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        ids[..1],
        "turns: the oldest run claimed with it"
    );
    assert_eq!(a.claimed.runs[0].status, RunStatus::Running, "turns: claimed");
    assert!(a.claimed.more, "turns: a second run is due");
    assert_eq!(store.begin_turn(&start("p/2", 1, 5)).await.expect("begin"), None, "turns: another holder's lease");
    assert_eq!(
        store.get(ids[1]).await.expect("get").map(|r| r.status),
        Some(RunStatus::Queued),
        "turns: a turn refused the lease claims nothing"
    );
    let a = store.begin_turn(&start("p/1", 2, 5)).await.expect("begin").expect("turns: the holder renews");
    assert_eq!(a.claimed.runs.iter().map(|r| r.id).collect::<Vec<_>>(), ids[1..], "turns: the tenant's other run only");
    assert!(!a.claimed.more, "turns: drained (another tenant's run is not this tenant's)");
    for (id, key) in ids.iter().zip(["invoice.created:8001", "invoice.created:8002"]) {
        let run = store.get(*id).await.expect("get").expect("the run");
        store.finish(*id, run.claim, result(key, RunStatus::Synced, 1, None)).await.expect("finish");
    }
    let callbacks = store.claim_callbacks(scope, &tenant, at(3), at(33), 10).await.expect("claim callbacks");
    assert_eq!(callbacks.len(), 2, "turns: both runs' callbacks");
    let delivered: Vec<_> = callbacks.iter().map(|c| (c.run.id, c.generation)).collect();
    // Ended by someone not holding it: the lease stays, the deliveries are recorded all the same.
    store.end_turn(scope, "p/2", &delivered[..1], at(4)).await.expect("end");
    assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 1, "turns: a delivery recorded at the end");
    assert_eq!(store.begin_turn(&start("p/2", 5, 0)).await.expect("begin"), None, "turns: only the holder releases");
    store.end_turn(scope, "p/1", &[], at(6)).await.expect("end");
    let b = store.begin_turn(&start("p/2", 7, 0)).await.expect("begin").expect("turns: released, taken by another");
    assert_eq!(
        b.claimed,
        byte8_ledger_core::store::Claimed::default(),
        "turns: limit 0 claims nothing, and nothing is due"
    );
    let (run, generation) = delivered[1];
    store.callbacks_sent(&[(run, generation + 1)], at(8)).await.expect("another generation");
    assert_eq!(
        store.pending_callbacks(scope).await.expect("pending"),
        1,
        "turns: only the generation delivered is marked"
    );
    store.callbacks_sent(&delivered[1..], at(8)).await.expect("sent");
    store.callbacks_sent(&[], at(8)).await.expect("nothing sent");
    assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 0, "turns: every delivery recorded");
    // A lease that lapsed is taken over.
    assert!(store.begin_turn(&start("p/3", 128, 0)).await.expect("begin").is_some(), "turns: a lapsed lease");
}

/// A webhook's enqueue that begins the worker's turn ([`DispatchStore::enqueue_and_begin`]):
/// a run queued takes the free lease for the holder named and claims the tenant's due runs,
/// oldest first (an older run before the webhook's own); with the lease held by another holder
/// the run is queued and nothing claimed; a replay, a duplicate and (where the store gives
/// versions) a stale binding begin no turn and leave the lease free; a turn on another business
/// or tenant than the run's is refused before anything is written.
///
/// [`DispatchStore::enqueue_and_begin`]: super::DispatchStore::enqueue_and_begin
pub async fn webhooks_begin_the_turn_they_queue(store: &dyn ServiceStore, scope: &str) {
    let tenant = tenant_of(scope);
    store.put_binding(&binding(&tenant, scope, "k", t0())).await.expect("put binding");
    let version = store.versioned_binding(&tenant).await.expect("versioned").expect("the binding").1;
    let jtis: Vec<String> = (0..6).map(|n| format!("{tenant}\u{1f}begin-{n}")).collect();
    let token = |n: usize, now: i64| WebhookToken { jti: &jtis[n], expires_at: 1_000, now, binding_version: version };
    let run = |n: u32| tenant_run(scope, &tenant, &format!("invoice.created:84{n:02}"), "w");
    let start = |holder: &'static str, now: i64| turn_start(scope, &tenant, holder, now, 1);
    let older = store.enqueue(run(0), Dedupe::Permanent).await.expect("enqueue").run_id();

    // Refused before anything is written: the turn is on another tenant.
    let elsewhere = turn_start(scope, "someone-else", "p/webhook-0", 0, 1);
    assert!(
        store.enqueue_and_begin(&token(0, 100), run(9), Dedupe::Permanent, &elsewhere).await.is_err(),
        "begin: a turn on another tenant than the run's is refused"
    );
    assert!(store.find_by_key(scope, "invoice.created:8409").await.expect("find").is_none(), "begin: nothing queued");
    assert!(store.check_and_record(token(0, 100).jti, 1_000, 100).await.expect("check"), "begin: no jti recorded");

    let (queued, begun) = store
        .enqueue_and_begin(&token(1, 100), run(1), Dedupe::Permanent, &start("p/webhook-1", 0))
        .await
        .expect("enqueue and begin");
    let EnqueuedOnce::Queued(Enqueued::New(id)) = queued else { panic!("begin: the run is queued: {queued:?}") };
    let begun = begun.expect("begin: a free lease is taken");
    assert_eq!(
        begun.claimed.runs.iter().map(|r| (r.id, r.status)).collect::<Vec<_>>(),
        [(older, RunStatus::Running)],
        "begin: the tenant's oldest due run claimed first"
    );
    assert!(begun.claimed.more, "begin: the webhook's own run is due after it");
    assert_eq!(
        store.begin_turn(&start("p/2", 1)).await.expect("begin"),
        None,
        "begin: the lease is the webhook turn's"
    );
    let again = store.begin_turn(&start("p/webhook-1", 2)).await.expect("begin").expect("begin: its holder goes on");
    assert_eq!(again.claimed.runs.iter().map(|r| r.id).collect::<Vec<_>>(), [id], "begin: then the webhook's run");

    // The lease held: queued, nothing claimed.
    let (queued, begun) = store
        .enqueue_and_begin(&token(2, 100), run(2), Dedupe::Permanent, &start("p/webhook-2", 3))
        .await
        .expect("enqueue and begin");
    assert!(matches!(queued, EnqueuedOnce::Queued(Enqueued::New(_))), "begin: queued under a held lease: {queued:?}");
    assert_eq!(begun, None, "begin: another holder's lease begins no turn");
    let waiting = store.find_by_key(scope, "invoice.created:8402").await.expect("find").expect("the run");
    assert_eq!(waiting.status, RunStatus::Queued, "begin: nothing claimed under another holder's lease");
    store.end_turn(scope, "p/webhook-1", &[], t0() + Duration::seconds(4)).await.expect("end");

    // A replay, a duplicate: no turn, the lease left free.
    let (replay, begun) = store
        .enqueue_and_begin(&token(1, 100), run(3), Dedupe::Permanent, &start("p/webhook-3", 5))
        .await
        .expect("enqueue and begin");
    assert_eq!((replay, begun), (EnqueuedOnce::Replay, None), "begin: a replay begins no turn");
    let (duplicate, begun) = store
        .enqueue_and_begin(&token(4, 100), run(1), Dedupe::Permanent, &start("p/webhook-4", 6))
        .await
        .expect("enqueue and begin");
    assert!(matches!(duplicate, EnqueuedOnce::Queued(Enqueued::Duplicate { .. })), "begin: {duplicate:?}");
    assert_eq!(begun, None, "begin: a duplicate begins no turn");
    if let Some(v) = version {
        assert!(store.set_binding_status(&tenant, BindingStatus::Active, t0()).await.expect("status"));
        let stale = WebhookToken { binding_version: Some(v), ..token(5, 100) };
        let (answer, begun) = store
            .enqueue_and_begin(&stale, run(5), Dedupe::Permanent, &start("p/webhook-5", 7))
            .await
            .expect("enqueue and begin");
        assert_eq!((answer, begun), (EnqueuedOnce::StaleBinding, None), "begin: a stale binding begins no turn");
    }
    let free = store.begin_turn(&start("p/6", 8)).await.expect("begin").expect("begin: the lease was left free");
    assert_eq!(
        free.claimed.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        [waiting.id],
        "begin: the run queued under the held lease is claimed by the next turn"
    );
    store.end_turn(scope, "p/6", &[], t0() + Duration::seconds(9)).await.expect("end");
}

/// A webhook on an idle business (its lease free, no run of its tenant queued or running): its own
/// run comes back claimed (running, claim 1, nothing more due), stored so, leased until the turn's
/// `run_lease_until` (another turn claims it only after that, as claim 2) and finished under claim 1;
/// on an idle business a replay, a duplicate and (where the store gives versions) a stale binding
/// begin no turn and leave the lease free. (PostgreSQL inserts that run already claimed, migration
/// 0029; the other stores claim it after queueing it.)
pub async fn an_idle_business_s_webhook_claims_its_own_run(store: &dyn ServiceStore, scope: &str) {
    let tenant = tenant_of(scope);
    let at = |s: i64| t0() + Duration::seconds(s);
    store.put_binding(&binding(&tenant, scope, "k", t0())).await.expect("put binding");
    let version = store.versioned_binding(&tenant).await.expect("versioned").expect("the binding").1;
    let jtis: Vec<String> = (0..5).map(|n| format!("{tenant}\u{1f}idle-{n}")).collect();
    let token = |n: usize| WebhookToken { jti: &jtis[n], expires_at: 1_000, now: 100, binding_version: version };
    let key = |n: u32| format!("invoice.created:85{n:02}");
    let run = |n: u32| tenant_run(scope, &tenant, &key(n), "w");
    let start = |holder: &'static str, now: i64| turn_start(scope, &tenant, holder, now, 1);
    // Whether the lease is free at `now`: a turn of another holder takes it (and ends at once).
    let lease_free = |now: i64| async move {
        let begun = store.begin_turn(&start("p/probe", now)).await.expect("begin");
        if begun.is_some() {
            store.end_turn(scope, "p/probe", &[], at(now)).await.expect("end");
        }
        begun
    };

    let (queued, begun) = store
        .enqueue_and_begin(&token(0), run(1), Dedupe::Permanent, &start("p/webhook-1", 0))
        .await
        .expect("enqueue and begin");
    let EnqueuedOnce::Queued(Enqueued::New(id)) = queued else { panic!("idle: the run is queued: {queued:?}") };
    let begun = begun.expect("idle: the free lease is taken");
    assert_eq!(
        begun.claimed.runs.iter().map(|r| (r.id, r.status, r.claim)).collect::<Vec<_>>(),
        [(id, RunStatus::Running, 1)],
        "idle: the webhook's own run claimed"
    );
    assert!(!begun.claimed.more, "idle: nothing more due");
    let stored = store.get(id).await.expect("get").expect("the run");
    assert_eq!((stored.status, stored.claim), (RunStatus::Running, 1), "idle: the run is stored claimed");
    assert_eq!(store.begin_turn(&start("p/2", 1)).await.expect("begin"), None, "idle: the lease is the webhook's");
    store.end_turn(scope, "p/webhook-1", &[], at(2)).await.expect("end");
    // The run's own lease (300 s from the turn's start) keeps it from the next turns until it lapses.
    let early = lease_free(299).await.expect("idle: the lease was given up");
    assert!(early.claimed.runs.is_empty(), "idle: a running run's lease holds until it lapses: {early:?}");
    let late = store.begin_turn(&start("p/late", 301)).await.expect("begin").expect("idle: the lease is free");
    assert_eq!(
        late.claimed.runs.iter().map(|r| (r.id, r.claim)).collect::<Vec<_>>(),
        [(id, 2)],
        "idle: a lapsed run lease is claimed again, as claim 2"
    );
    assert!(store.finish(id, 1, result(&key(1), RunStatus::Synced, 1, None)).await.is_err(), "idle: claim 1 lapsed");
    store.finish(id, 2, result(&key(1), RunStatus::Synced, 1, None)).await.expect("finish under claim 2");
    store.end_turn(scope, "p/late", &[], at(302)).await.expect("end");

    // Nothing open again: a replay, a duplicate and a stale binding leave the lease free.
    let (replay, begun) = store
        .enqueue_and_begin(&token(0), run(2), Dedupe::Permanent, &start("p/webhook-2", 303))
        .await
        .expect("enqueue and begin");
    assert_eq!((replay, begun), (EnqueuedOnce::Replay, None), "idle: a replay begins no turn");
    assert!(lease_free(304).await.is_some(), "idle: a replay leaves the lease free");
    let (duplicate, begun) = store
        .enqueue_and_begin(&token(1), run(1), Dedupe::Permanent, &start("p/webhook-3", 305))
        .await
        .expect("enqueue and begin");
    assert!(matches!(duplicate, EnqueuedOnce::Queued(Enqueued::Duplicate { .. })), "idle: {duplicate:?}");
    assert_eq!(begun, None, "idle: a duplicate begins no turn");
    assert!(lease_free(306).await.is_some(), "idle: a duplicate leaves the lease free");
    if let Some(v) = version {
        assert!(store.set_binding_status(&tenant, BindingStatus::Active, t0()).await.expect("status"));
        let stale = WebhookToken { binding_version: Some(v), ..token(2) };
        let (answer, begun) = store
            .enqueue_and_begin(&stale, run(3), Dedupe::Permanent, &start("p/webhook-4", 307))
            .await
            .expect("enqueue and begin");
        assert_eq!((answer, begun), (EnqueuedOnce::StaleBinding, None), "idle: a stale binding begins no turn");
        assert!(lease_free(308).await.is_some(), "idle: a stale binding leaves the lease free");
    }
}

/// Several deliveries recorded at once, by a turn's end and by `callbacks_sent` (PostgreSQL
/// binds them as arrays, one as scalars): each named (run, generation) is marked, a generation
/// not delivered is not.
pub async fn several_deliveries_are_recorded_at_once(store: &dyn ServiceStore, scope: &str) {
    let tenant = tenant_of(scope);
    let at = |s: i64| t0() + Duration::seconds(s);
    store.put_binding(&binding(&tenant, scope, "k", t0())).await.expect("put binding");
    for n in 0..5 {
        let key = format!("invoice.created:{}", 8100 + n);
        store.enqueue(tenant_run(scope, &tenant, &key, "x"), Dedupe::Permanent).await.expect("enqueue");
    }
    let begun = store.begin_turn(&turn_start(scope, &tenant, "p/1", 0, 5)).await.expect("begin").expect("a free lease");
    assert_eq!(begun.claimed.runs.len(), 5, "deliveries: five runs claimed");
    for run in &begun.claimed.runs {
        store
            .finish(run.id, run.claim, result(&run.idempotency_key, RunStatus::Synced, 1, None))
            .await
            .expect("finish");
    }
    let callbacks = store.claim_callbacks(scope, &tenant, at(1), at(31), 10).await.expect("claim callbacks");
    assert_eq!(callbacks.len(), 5, "deliveries: five callbacks");
    let delivered: Vec<_> = callbacks.iter().map(|c| (c.run.id, c.generation)).collect();
    let (run, generation) = delivered[2];
    let mut at_end = delivered[..2].to_vec();
    at_end.push((run, generation + 1));
    store.end_turn(scope, "p/1", &at_end, at(2)).await.expect("end");
    assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 3, "deliveries: two marked at the turn's end");
    store.callbacks_sent(&delivered[2..4], at(3)).await.expect("sent");
    assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 1, "deliveries: two more marked");
    assert!(
        store.begin_turn(&turn_start(scope, &tenant, "p/2", 4, 0)).await.expect("begin").is_some(),
        "deliveries: the turn's end released the lease"
    );
}

/// Several turns ended at once ([`DispatchStore::end_turns`](super::DispatchStore::end_turns)),
/// as a process's workers record the turns that ended within a few milliseconds: each turn's
/// deliveries marked (a generation not delivered is not), each lease its holder still held given
/// up, and a lease another holder has taken since left alone. No turn is a no-op; one turn is a
/// turn's end.
pub async fn turns_end_together(store: &dyn ServiceStore, scope: &str) {
    let at = |s: i64| t0() + Duration::seconds(s);
    let scopes: Vec<String> = (0..3).map(|n| format!("{scope}-{n}")).collect();
    let mut ends = Vec::new();
    for (n, scope) in scopes.iter().enumerate() {
        let tenant = tenant_of(scope);
        store.put_binding(&binding(&tenant, scope, "k", t0())).await.expect("put binding");
        for k in 0..2 {
            let key = format!("invoice.created:{}", 8200 + 10 * n + k);
            store.enqueue(tenant_run(scope, &tenant, &key, "x"), Dedupe::Permanent).await.expect("enqueue");
        }
        let holder = format!("p/{n}");
        let begun =
            store.begin_turn(&turn_start(scope, &tenant, &holder, 0, 2)).await.expect("begin").expect("a free lease");
        assert_eq!(begun.claimed.runs.len(), 2, "ends: two runs claimed on {scope}");
        let mut delivered = Vec::new();
        for run in &begun.claimed.runs {
            store
                .finish(run.id, run.claim, result(&run.idempotency_key, RunStatus::Synced, 1, None))
                .await
                .expect("finish");
            delivered.push((run.id, run.claim));
        }
        ends.push(TurnEnd { scope: scope.clone(), holder, delivered });
    }
    // The first business's second callback: another generation than the one delivered.
    ends[0].delivered[1].1 += 1;
    // The third business's lease lapsed and was taken by another holder before the ends.
    let third = &scopes[2];
    assert!(
        store.begin_turn(&turn_start(third, &tenant_of(third), "q/9", 121, 0)).await.expect("begin").is_some(),
        "ends: a lapsed lease taken over"
    );
    store.end_turns(&[], at(122)).await.expect("no turn");
    for scope in &scopes {
        assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 2, "ends: nothing recorded yet on {scope}");
    }
    store.end_turns(&ends, at(122)).await.expect("end the turns");
    let pending = |n: usize| store.pending_callbacks(&scopes[n]);
    assert_eq!(pending(0).await.expect("pending"), 1, "ends: only the generation delivered is marked");
    assert_eq!(pending(1).await.expect("pending"), 0, "ends: both deliveries marked");
    assert_eq!(pending(2).await.expect("pending"), 0, "ends: marked though the lease was another's by then");
    for (n, scope) in scopes[..2].iter().enumerate() {
        assert!(
            store.begin_turn(&turn_start(scope, &tenant_of(scope), "q/1", 123, 0)).await.expect("begin").is_some(),
            "ends: the lease of business {n} given up"
        );
    }
    assert_eq!(
        store.begin_turn(&turn_start(third, &tenant_of(third), "q/1", 123, 0)).await.expect("begin"),
        None,
        "ends: the lease another holder took stays"
    );
    // One turn alone.
    let one = TurnEnd { scope: scopes[0].clone(), holder: "q/1".into(), delivered: ends[0].delivered[1..].to_vec() };
    store.end_turns(&[one], at(124)).await.expect("end one turn");
    assert!(
        store
            .begin_turn(&turn_start(&scopes[0], &tenant_of(&scopes[0]), "q/2", 125, 0))
            .await
            .expect("begin")
            .is_some(),
        "ends: one turn's lease given up"
    );
}

/// A callback's generation is the claim its run finished under (so the worker that finished it
/// names it without reading it back), a run finished again gets a larger one, and a turn's start
/// says a callback of the tenant is due whenever one is. Returns the `callbacks_due` a start saw
/// with none due (the PostgreSQL suite checks it is exact there).
pub async fn turns_know_their_callbacks(store: &dyn ServiceStore, scope: &str) -> bool {
    let tenant = tenant_of(scope);
    let at = |s: i64| t0() + Duration::seconds(s);
    store.put_binding(&binding(&tenant, scope, "k", t0())).await.expect("put binding");
    let start = |holder: &'static str, now: i64, limit: usize| turn_start(scope, &tenant, holder, now, limit);
    let key = "invoice.created:8101";
    let id = store.enqueue(tenant_run(scope, &tenant, key, "x"), Dedupe::Permanent).await.expect("enqueue").run_id();
    // A claim before the turn's: the claims are not numbered from 1 for this run's sake.
    let early = store.claim_run(id, at(0), at(1)).await.expect("claim").expect("claimable");
    let begun = store.begin_turn(&start("p/1", 2, 1)).await.expect("begin").expect("the lease");
    let claim = begun.claimed.runs.first().map(|r| r.claim).expect("turns: the run whose lease lapsed");
    assert!(claim > early.claim, "turns: claims grow");
    store.finish(id, claim, result(key, RunStatus::DeadLettered, 1, None)).await.expect("finish");
    store.end_turn(scope, "p/1", &[], at(3)).await.expect("end");
    let begun = store.begin_turn(&start("p/2", 400, 0)).await.expect("begin").expect("the lease");
    assert!(begun.callbacks_due, "turns: a callback is due and the start says so");
    let claimed = store.claim_callbacks(scope, &tenant, at(400), at(430), 10).await.expect("claim callbacks");
    assert_eq!(
        claimed.iter().map(|c| (c.run.id, c.generation)).collect::<Vec<_>>(),
        [(id, claim)],
        "turns: the callback's generation is the claim its run finished under"
    );
    // Sent by the worker that finished it: marked with the claim it knows, nothing read back.
    store.end_turn(scope, "p/2", &[(id, claim)], at(401)).await.expect("end");
    assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 0, "turns: delivered");
    // A dead letter retried and finished again (claimed again): a larger generation, pending
    // again.
    assert!(store.requeue(scope, key, at(500)).await.expect("requeue"));
    let again = store.claim_run(id, at(500), at(530)).await.expect("claim").expect("claimable");
    store.finish(id, again.claim, result(key, RunStatus::Skipped, 2, None)).await.expect("finish");
    let claimed = store.claim_callbacks(scope, &tenant, at(600), at(630), 10).await.expect("claim callbacks");
    assert_eq!(claimed.iter().map(|c| c.generation).collect::<Vec<_>>(), [again.claim], "turns: the new claim");
    assert!(again.claim > claim, "turns: a larger generation");
    store.callbacks_sent(&[(id, again.claim)], at(601)).await.expect("sent");
    assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 0, "turns: delivered again");
    let begun = store.begin_turn(&start("p/3", 700, 0)).await.expect("begin").expect("the lease");
    store.end_turn(scope, "p/3", &[], at(701)).await.expect("end");
    begun.callbacks_due
}

/// `due_tenants` names the tenants with a run or a callback due, and only those: a queued run
/// (from its retry time on), a run whose lease expired, an undelivered callback; not a run
/// without a tenant (the command's), a leased run, a terminal run, a delivered callback, or any
/// work of a business whose dispatch lease is held.
pub async fn due_tenants_name_the_work_waiting(store: &dyn ServiceStore, scope: &str) {
    let tenant = tenant_of(scope);
    let other_scope = format!("{scope}-b");
    let other = tenant_of(&other_scope);
    let at = |s: i64| t0() + Duration::seconds(s);
    // The database may hold other tests' scopes: only this test's two are looked at.
    let due = |now: DateTime<Utc>| {
        let (scope, other_scope) = (scope.to_owned(), other_scope.clone());
        async move {
            store
                .due_tenants(now)
                .await
                .expect("due tenants")
                .into_iter()
                .filter(|(s, _)| *s == scope || *s == other_scope)
                .collect::<Vec<_>>()
        }
    };
    let mine = vec![(scope.to_owned(), tenant.clone())];
    assert!(due(at(0)).await.is_empty(), "due: nothing queued, nothing due");
    store.enqueue(new_run(scope, "invoice.created:8000", "x"), Dedupe::Permanent).await.expect("enqueue");
    assert!(due(at(0)).await.is_empty(), "due: a run without a tenant is not the service's");

    let key = "invoice.created:8001";
    let id = store.enqueue(tenant_run(scope, &tenant, key, "x"), Dedupe::Permanent).await.expect("enqueue").run_id();
    store
        .enqueue(tenant_run(&other_scope, &other, "invoice.created:8002", "x"), Dedupe::Permanent)
        .await
        .expect("enqueue");
    assert_eq!(
        due(at(0)).await,
        vec![(scope.to_owned(), tenant.clone()), (other_scope.clone(), other.clone())],
        "due: each tenant with a queued run, once, by business"
    );
    let other_run =
        store.claim_for(&other_scope, Some(&other), at(0), at(1000), 10).await.expect("claim").pop().expect("a run");
    store
        .finish(other_run.id, other_run.claim, result("invoice.created:8002", RunStatus::Synced, 1, None))
        .await
        .expect("finish");
    assert_eq!(due(at(0)).await, mine, "due: a terminal run without a binding leaves nothing behind");

    let run = store.claim_run(id, at(0), at(60)).await.expect("claim").expect("claimable");
    assert!(due(at(10)).await.is_empty(), "due: a leased run is not due");
    assert_eq!(due(at(60)).await, mine, "due: a run whose lease expired is");
    store.finish(id, run.claim, result(key, RunStatus::Queued, 1, Some(at(100)))).await.expect("finish");
    assert!(due(at(99)).await.is_empty(), "due: a retry is not due before its time");
    assert_eq!(due(at(100)).await, mine, "due: a retry is due from its time on");
    // A business whose dispatch lease someone holds is left out until the lease is released or
    // expires (its holder drains it).
    assert!(store.acquire_dispatch(scope, "elsewhere/1", at(100), at(200)).await.expect("lease"));
    assert!(due(at(150)).await.is_empty(), "due: a business whose dispatch lease is held is not");
    assert_eq!(due(at(200)).await, mine, "due: a business whose dispatch lease expired is");
    assert!(store.acquire_dispatch(scope, "elsewhere/2", at(200), at(300)).await.expect("lease"));
    assert!(due(at(250)).await.is_empty(), "due: held again");
    store.release_dispatch(scope, "elsewhere/2").await.expect("release");
    assert_eq!(due(at(250)).await, mine, "due: a released lease leaves the business due");

    // Terminal with an active binding: the run is done, its callback is due until delivered.
    store.put_binding(&binding(&tenant, scope, "k", t0())).await.expect("put binding");
    let run = store.claim_run(id, at(100), at(160)).await.expect("claim").expect("claimable");
    store.finish(id, run.claim, result(key, RunStatus::Synced, 2, None)).await.expect("finish");
    assert_eq!(due(at(10_000)).await, mine, "due: an undelivered callback");
    let cb = store.claim_callbacks(scope, &tenant, at(10_000), at(10_030), 10).await.expect("claim callbacks");
    assert_eq!(cb.len(), 1, "due: the callback is claimable");
    assert!(due(at(10_010)).await.is_empty(), "due: a claimed callback is leased");
    store.callback_sent(id, cb[0].generation, at(10_011)).await.expect("sent");
    assert!(due(at(20_000)).await.is_empty(), "due: a delivered callback is not");
}

/// The health counters and the runs of one entity, per tenant.
pub async fn health_counters_and_entity_runs(store: &dyn ServiceStore, scope: &str) {
    let tenant = tenant_of(scope);
    let empty = store.dispatch_stats(scope, &tenant, t0()).await.expect("stats");
    assert_eq!((empty.pending, empty.failed_since, empty.last_run_at), (0, 0, None), "stats: empty scope");
    let mine = |key: &str, raw: &str| tenant_run(scope, &tenant, key, raw);
    let a = store.enqueue(mine("invoice.created:8001", "a"), Dedupe::Permanent).await.expect("enqueue");
    let b = store.enqueue(mine("invoice.paid:8001", "b"), Dedupe::Permanent).await.expect("enqueue");
    store.enqueue(mine("creditmemo.created:8001", "c"), Dedupe::Permanent).await.expect("enqueue");
    store.enqueue(mine("invoice.created:8002", "d"), Dedupe::Permanent).await.expect("enqueue");
    // Another tenant's runs of the same business and entity id (another store's invoice 8001).
    let theirs = store
        .enqueue(tenant_run(scope, "other-tenant", "invoice.created:8001", "e"), Dedupe::Permanent)
        .await
        .expect("enqueue");
    store.enqueue(new_run(scope, "invoice.paid:8001", "f"), Dedupe::Permanent).await.expect("enqueue");
    let run = store.claim_run(a.run_id(), t0(), t0() + Duration::seconds(60)).await.expect("claim").expect("claim");
    store.finish(a.run_id(), run.claim, result("invoice.created:8001", RunStatus::Synced, 1, None)).await.expect("fin");
    let run = store.claim_run(b.run_id(), t0(), t0() + Duration::seconds(60)).await.expect("claim").expect("claim");
    store
        .finish(b.run_id(), run.claim, result("invoice.paid:8001", RunStatus::DeadLettered, 1, None))
        .await
        .expect("f");
    // The attempts of `result` finish one second after t0.
    let stats = store.dispatch_stats(scope, &tenant, t0()).await.expect("stats");
    assert_eq!(stats.pending, 2, "stats: queued runs are pending (the tenant's own only)");
    assert_eq!(stats.failed_since, 1, "stats: dead letters since");
    assert_eq!(stats.last_run_at, Some(t0() + Duration::seconds(1)), "stats: last terminal run");
    let later = store.dispatch_stats(scope, &tenant, t0() + Duration::seconds(2)).await.expect("stats");
    assert_eq!(later.failed_since, 0, "stats: older dead letters are not counted");
    let other = store.dispatch_stats(scope, "other-tenant", t0()).await.expect("stats");
    assert_eq!((other.pending, other.failed_since), (1, 0), "stats: another tenant counts its own");
    let runs =
        store.entity_runs(scope, &tenant, &["invoice.created", "invoice.paid"], 8001).await.expect("entity runs");
    assert_eq!(
        runs.iter().map(|r| r.idempotency_key.as_str()).collect::<Vec<_>>(),
        ["invoice.created:8001", "invoice.paid:8001"],
        "entity runs: the events asked for, oldest first, the tenant's own"
    );
    let other = store.entity_runs(scope, "other-tenant", &["invoice.created"], 8001).await.expect("entity runs");
    assert_eq!(other.iter().map(|r| r.id).collect::<Vec<_>>(), vec![theirs.run_id()], "entity runs: per tenant");
    assert!(
        store.entity_runs(&format!("{scope}-x"), &tenant, &["invoice.created"], 8001).await.expect("runs").is_empty()
    );
}

/// The re-pair sequence: tenant A paired, runs queued, A disconnected, B paired to the same
/// business. B never claims A's runs nor A's callbacks, A's outcomes finished after the
/// disconnection are never queued for B, and B's status reads its own runs only.
pub async fn tenants_stay_apart_after_repairing(store: &dyn ServiceStore, scope: &str) {
    let (a, b) = (format!("{}-a", tenant_of(scope)), format!("{}-b", tenant_of(scope)));
    let at = |s: i64| t0() + Duration::seconds(s);
    store.put_binding(&binding(&a, scope, "key-a", t0())).await.expect("pair a");
    // A's runs: one delivered (its callback pending), one in flight, one still queued.
    let done = store.enqueue(tenant_run(scope, &a, "invoice.created:501", "a1"), Dedupe::Permanent).await.expect("q");
    let flying = store.enqueue(tenant_run(scope, &a, "invoice.created:502", "a2"), Dedupe::Permanent).await.expect("q");
    let queued = store.enqueue(tenant_run(scope, &a, "invoice.created:503", "a3"), Dedupe::Permanent).await.expect("q");
    let run = store.claim_run(done.run_id(), t0(), at(60)).await.expect("claim").expect("claimable");
    store.finish(run.id, run.claim, result("invoice.created:501", RunStatus::Synced, 1, None)).await.expect("finish");
    let in_flight = store.claim_run(flying.run_id(), t0(), at(60)).await.expect("claim").expect("claimable");
    assert_eq!(store.pending_callbacks(scope).await.expect("pending"), 1, "repair: A's delivered run's callback");

    store.set_binding_status(&a, BindingStatus::Revoked, at(1)).await.expect("disconnect a");
    store.put_binding(&binding(&b, scope, "key-b", at(2))).await.expect("repair: B pairs to A's business");
    // B's store has its own invoice 503: a new run, not A's.
    let mine = store.enqueue(tenant_run(scope, &b, "invoice.created:503", "b3"), Dedupe::Permanent).await.expect("q");
    assert!(
        matches!(mine, Enqueued::New(id) if id != queued.run_id()),
        "repair: B's event is B's run, not a duplicate of A's: {mine:?}"
    );
    // Every run is due (A's in-flight run's lease has lapsed too): B claims only its own.
    let claimed = store.claim_for(scope, Some(&b), at(120), at(180), 10).await.expect("claim");
    assert_eq!(
        claimed.iter().map(|r| (r.id, r.raw.as_str())).collect::<Vec<_>>(),
        vec![(mine.run_id(), "b3")],
        "repair: B never claims A's runs"
    );
    assert!(
        store.claim_callbacks(scope, &b, at(120), at(180), 10).await.expect("claim").is_empty(),
        "repair: B never claims A's callbacks"
    );
    // A's worker, still running somewhere, finishes its run after the disconnection: no callback.
    store
        .finish(in_flight.id, in_flight.claim, result("invoice.created:502", RunStatus::Synced, 1, None))
        .await
        .expect("finish");
    assert!(
        store.claim_callbacks(scope, &b, at(121), at(180), 10).await.expect("claim").is_empty(),
        "repair: A's outcomes are never called back into B's store"
    );
    store
        .finish(mine.run_id(), claimed[0].claim, result("invoice.created:503", RunStatus::Synced, 1, None))
        .await
        .expect("f");
    let cbs = store.claim_callbacks(scope, &b, at(122), at(180), 10).await.expect("claim");
    assert_eq!(cbs.iter().map(|c| c.run.id).collect::<Vec<_>>(), vec![mine.run_id()], "repair: B's own callback");
    let status = store.entity_runs(scope, &b, &["invoice.created"], 503).await.expect("entity runs");
    assert_eq!(status.iter().map(|r| r.id).collect::<Vec<_>>(), vec![mine.run_id()], "repair: B reads its own runs");
    let stats = store.dispatch_stats(scope, &b, t0()).await.expect("stats");
    assert_eq!(stats.pending, 0, "repair: A's queued run is not B's pending work");
    // A's queued run waits, untouched, for A.
    let kept = store.get(queued.run_id()).await.expect("get").expect("run");
    assert_eq!((kept.status, kept.tenant_id.as_deref()), (RunStatus::Queued, Some(a.as_str())), "repair: A's run kept");
}

/// The retention purge (`byte8_ledger_core::store::retention`) at its boundaries, with its own clock far
/// from every other behaviour's (2001), so that it never touches their data in a shared
/// database: a finished run keeps its raw event and attempts until `attempt_days` have passed
/// (day N-1 kept, day N+1 gone) and its outcome for good while its tenant is active; dead
/// letters keep everything; a disconnected tenant's runs, attempts, callbacks and binding go
/// `disconnected_days` after the disconnection, not before, and its business's cross-reference
/// with it only when no other tenant is bound to the business; the tenant of a re-paired
/// business keeps everything; a delivered callback goes after `delivered_callback_days`, an
/// undelivered one never; a dry run removes nothing and counts what the purge then removes.
pub async fn retention_keeps_what_is_promised(store: &dyn ServiceStore, scope: &str) {
    use byte8_ledger_core::store::{
        AttemptRecord, RunResult, Xref, XrefKind,
        retention::{PurgeReport, RetentionPolicy},
    };
    let base = DateTime::parse_from_rfc3339("2001-01-01T12:00:00Z").map(|t| t.with_timezone(&Utc)).expect("a date");
    let day = |d: i64| base + Duration::days(d);
    let policy = RetentionPolicy::default();
    let (a, b, c, d) = (format!("{scope}-a"), format!("{scope}-b"), format!("{scope}-c"), format!("{scope}-d"));
    let (ta, tb_old, tb_new, tc, td) =
        (tenant_of(&a), tenant_of(&format!("{b}-old")), tenant_of(&format!("{b}-new")), tenant_of(&c), tenant_of(&d));
    // A run of `tenant` received and finished at `at` with `status`, its one attempt recorded.
    let run = |tenant: String, scope: String, key: &'static str, status: RunStatus, at: DateTime<Utc>| async move {
        let mut new = tenant_run(&scope, &tenant, key, &format!("raw of {key}"));
        new.received_at = at;
        let id = store.enqueue(new, Dedupe::Permanent).await.expect("enqueue").run_id();
        let claimed = store.claim_run(id, at, at + Duration::minutes(1)).await.expect("claim").expect("claimable");
        let mut r: RunResult = result(key, status, 1, None);
        r.attempt = AttemptRecord { started_at: at, finished_at: at, ..r.attempt };
        store.finish(id, claimed.claim, r).await.expect("finish");
        id
    };
    let xref = |scope: String, key: &'static str| async move {
        let x = Xref::intent(Some(format!("REF-{key}")), serde_json::json!({}), base);
        store.put_xref(&scope, XrefKind::Invoice, key, &x).await.expect("put xref");
    };
    let purge = |at: DateTime<Utc>, dry: bool| async move { store.purge(&policy, at, dry).await.expect("purge") };
    // What an earlier run of this behaviour left in a shared database when it failed halfway
    // goes first (nothing else lives in 2001), so that the counts below are this run's.
    purge(day(1000), false).await;

    // Business A: one active tenant all along.
    store.put_binding(&binding(&ta, &a, "ka", day(-1))).await.expect("bind a");
    let a_old = run(ta.clone(), a.clone(), "invoice.created:1", RunStatus::Synced, day(0)).await;
    let a_recent = run(ta.clone(), a.clone(), "invoice.created:2", RunStatus::Skipped, day(2)).await;
    let a_dead = run(ta.clone(), a.clone(), "invoice.created:3", RunStatus::DeadLettered, day(0)).await;
    xref(a.clone(), "1").await;
    // Its first two callbacks delivered on day 0 and day 2; the dead letter's never.
    let sent = store.claim_callbacks(&a, &ta, day(3), day(3), 10).await.expect("claim callbacks");
    assert_eq!(sent.len(), 3, "retention: three callbacks queued");
    for cb in &sent {
        let at = if cb.run.id == a_old {
            Some(day(0))
        } else if cb.run.id == a_recent {
            Some(day(2))
        } else {
            None
        };
        if let Some(at) = at {
            store.callback_sent(cb.run.id, cb.generation, at).await.expect("sent");
        }
    }
    // Business B: its first tenant disconnected on day 0, paired to a new tenant on day 1.
    store.put_binding(&binding(&tb_old, &b, "kb", day(-1))).await.expect("bind b-old");
    let b_old = run(tb_old.clone(), b.clone(), "invoice.created:1", RunStatus::Synced, day(0)).await;
    assert!(store.set_binding_status(&tb_old, BindingStatus::Revoked, day(0)).await.expect("revoke"));
    // Disconnected again later: the first disconnection's time counts.
    assert!(store.set_binding_status(&tb_old, BindingStatus::Revoked, day(50)).await.expect("revoke"));
    store.put_binding(&binding(&tb_new, &b, "kb2", day(1))).await.expect("bind b-new");
    let b_new = run(tb_new.clone(), b.clone(), "invoice.created:1", RunStatus::Synced, day(2)).await;
    xref(b.clone(), "1").await;
    // Business C: its only tenant disconnected on day 0.
    store.put_binding(&binding(&tc, &c, "kc", day(-1))).await.expect("bind c");
    let c_run = run(tc.clone(), c.clone(), "invoice.created:1", RunStatus::Synced, day(0)).await;
    xref(c.clone(), "1").await;
    xref(c.clone(), "2").await;
    assert!(store.set_binding_status(&tc, BindingStatus::Revoked, day(0)).await.expect("revoke"));
    // Business D: disconnected on day 0, paired again on day 1, disconnected again on day 60.
    store.put_binding(&binding(&td, &d, "kd", day(-1))).await.expect("bind d");
    let d_run = run(td.clone(), d.clone(), "invoice.created:1", RunStatus::Synced, day(0)).await;
    assert!(store.set_binding_status(&td, BindingStatus::Revoked, day(0)).await.expect("revoke"));
    store.put_binding(&binding(&td, &d, "kd2", day(1))).await.expect("pair d again");
    assert!(store.set_binding_status(&td, BindingStatus::Revoked, day(60)).await.expect("revoke"));

    // Day 29: nothing is old enough.
    assert_eq!(purge(day(29), false).await, PurgeReport::default(), "retention: nothing goes before its time");
    // Day 31: the callback delivered on day 0 goes; the one delivered on day 2 stays.
    let dry = purge(day(31), true).await;
    assert_eq!(dry, PurgeReport { callbacks: 1, dry_run: true, ..PurgeReport::default() }, "retention: dry run");
    assert_eq!(purge(day(31), false).await, PurgeReport { callbacks: 1, ..PurgeReport::default() });
    assert_eq!(purge(day(31), false).await, PurgeReport::default(), "retention: a purge is done once");
    // Day 89: day N-1 for everything of day 0: only the callback delivered on day 2 goes.
    assert_eq!(purge(day(89), false).await, PurgeReport { callbacks: 1, ..PurgeReport::default() });
    for id in [a_old, a_dead, b_old, c_run, d_run] {
        let r = store.get(id).await.expect("get").expect("retention: day N-1 keeps the run");
        assert!(!r.raw.is_empty(), "retention: day N-1 keeps the raw event of run {id}");
        assert_eq!(store.attempts(id).await.expect("attempts").len(), 1, "retention: day N-1 keeps the attempts");
    }
    assert!(store.binding(&tb_old).await.expect("binding").is_some(), "retention: day N-1 keeps the tenant");
    // Ledger requests A made outside any run: two on day 89, one at noon on day 90. They are
    // kept a day (`LOOSE_EXCHANGES_KEPT`), whatever the policy.
    let loose = |id: &'static str, at: DateTime<Utc>, n: u64| {
        let a = a.clone();
        async move {
            use byte8_ledger_core::http::audit::{ExchangeRecord, RecordingRef};
            let e = ExchangeRecord {
                at,
                method: "GET".into(),
                url: "/tax_rates".into(),
                status: Some(200),
                request_body: None,
                response_body: None,
                error: None,
            };
            let recording = RecordingRef { id: format!("{scope}-{id}"), first: 0, count: n };
            let exchanges = vec![e; usize::try_from(n).expect("a small count")];
            store.record_exchanges(&a, &recording, &exchanges, at).await.expect("record loose exchanges");
        }
    };
    loose("loose-late", day(90) + Duration::hours(12), 1).await;
    loose("loose-early", day(89), 2).await;
    assert_eq!(store.ledger_requests(&a, day(89)).await.expect("count").requests, 3, "retention: loose requests kept");

    // Day 91: day N+1. A dry run counts and removes nothing.
    let expected = PurgeReport {
        tenants: {
            let mut t = vec![tb_old.clone(), tc.clone()];
            t.sort();
            t
        },
        runs: 2,
        // A's run of day 0 and D's (its tenant still bound): their raw events and attempts.
        raw_events: 2,
        attempts: 4,
        callbacks: 2,
        xrefs: 2,
        // The loose requests of day 89; the one of day 90 is less than a day old.
        loose_requests: 2,
        dry_run: true,
    };
    assert_eq!(purge(day(91), true).await, expected, "retention: day N+1, dry run");
    assert!(store.binding(&tc).await.expect("binding").is_some(), "retention: a dry run removes nothing");
    assert!(!store.get(a_old).await.expect("get").expect("run").raw.is_empty(), "retention: a dry run keeps raw");
    assert_eq!(purge(day(91), false).await, PurgeReport { dry_run: false, ..expected }, "retention: day N+1");

    // The active tenant: the old run keeps its outcome, loses its raw event and attempts.
    let old = store.get(a_old).await.expect("get").expect("retention: the active tenant's run stays");
    assert_eq!((old.status, old.raw.as_str()), (RunStatus::Synced, ""), "retention: raw event dropped");
    assert!(old.outcome.is_some(), "retention: the outcome is kept");
    assert!(store.attempts(a_old).await.expect("attempts").is_empty(), "retention: attempts dropped");
    for id in [a_recent, a_dead, b_new] {
        let r = store.get(id).await.expect("get").expect("run");
        assert!(!r.raw.is_empty(), "retention: run {id} (newer, or a dead letter) keeps its raw event");
        assert_eq!(store.attempts(id).await.expect("attempts").len(), 1, "retention: run {id} keeps its attempts");
    }
    assert_eq!(store.pending_callbacks(&a).await.expect("pending"), 1, "retention: undelivered callbacks stay");
    assert_eq!(
        store.ledger_requests(&a, day(0)).await.expect("count").requests,
        1,
        "retention: loose requests older than a day gone, the newer one kept"
    );
    assert!(store.get_xref(&a, XrefKind::Invoice, "1").await.expect("xref").is_some(), "retention: A's xref kept");
    // The re-paired business: its old tenant gone, the new one and the cross-reference kept.
    assert!(store.binding(&tb_old).await.expect("binding").is_none(), "retention: the old tenant's binding gone");
    assert!(store.get(b_old).await.expect("get").is_none(), "retention: the old tenant's run gone");
    assert!(store.attempts(b_old).await.expect("attempts").is_empty());
    assert!(store.binding(&tb_new).await.expect("binding").is_some(), "retention: the new tenant kept");
    assert!(store.get_xref(&b, XrefKind::Invoice, "1").await.expect("xref").is_some(), "retention: B's xref kept");
    // The business left with no tenant: everything gone.
    assert!(store.binding(&tc).await.expect("binding").is_none(), "retention: C's binding gone");
    assert!(store.get(c_run).await.expect("get").is_none(), "retention: C's run gone");
    assert!(store.list_xrefs(&c, XrefKind::Invoice, "").await.expect("xrefs").is_empty(), "retention: C's xref gone");
    // Paired again and disconnected on day 60: not yet (its finished run lost its raw event).
    let d_kept = store.get(d_run).await.expect("get").expect("retention: a re-pairing restarts the clock");
    assert_eq!(d_kept.raw, "", "retention: a disconnected tenant's old run loses its raw event like any other");
    assert!(store.binding(&td).await.expect("binding").is_some());

    // Everything of this test goes once every tenant is disconnected long enough.
    assert!(store.set_binding_status(&ta, BindingStatus::Revoked, day(100)).await.expect("revoke"));
    assert!(store.set_binding_status(&tb_new, BindingStatus::Revoked, day(100)).await.expect("revoke"));
    let last = purge(day(191), false).await;
    assert_eq!(last.tenants.len(), 3, "retention: the last tenants purged: {last:?}");
    assert_eq!(last.runs, 5, "retention: a, a-recent, a-dead, b-new, d");
    for (s, key) in [(&a, "1"), (&b, "1")] {
        assert!(store.get_xref(s, XrefKind::Invoice, key).await.expect("xref").is_none(), "retention: {s} xref gone");
    }
    assert_eq!(store.pending_callbacks(&a).await.expect("pending"), 0, "retention: the tenant's callbacks gone");
}

/// Every behaviour, each under its own sub-scope of `scope`.
pub async fn run_all(store: &dyn ServiceStore, scope: &str) {
    bindings_round_trip(store, &format!("{scope}-bindings")).await;
    one_active_tenant_per_business(store, &format!("{scope}-one-active")).await;
    replay_cache_refuses_replays_until_expiry(store, &format!("{scope}-replay")).await;
    dispatch_leases_are_exclusive(store, &format!("{scope}-leases")).await;
    turns_take_the_lease_and_claim_together(store, &format!("{scope}-turns")).await;
    turns_know_their_callbacks(store, &format!("{scope}-own-callbacks")).await;
    several_deliveries_are_recorded_at_once(store, &format!("{scope}-deliveries")).await;
    turns_end_together(store, &format!("{scope}-ends")).await;
    webhooks_queue_once_per_jti(store, &format!("{scope}-once")).await;
    webhooks_queue_only_on_the_binding_verified(store, &format!("{scope}-bound")).await;
    webhooks_begin_the_turn_they_queue(store, &format!("{scope}-begin")).await;
    an_idle_business_s_webhook_claims_its_own_run(store, &format!("{scope}-idle")).await;
    callbacks_follow_terminal_runs(store, &format!("{scope}-callbacks")).await;
    health_counters_and_entity_runs(store, &format!("{scope}-health")).await;
    due_tenants_name_the_work_waiting(store, &format!("{scope}-due")).await;
    tenants_stay_apart_after_repairing(store, &format!("{scope}-repair")).await;
    retention_keeps_what_is_promised(store, &format!("{scope}-retention")).await;
}
