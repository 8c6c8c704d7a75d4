//! The store conformance suite against every store: memory, SQLite (a file on disk, as the
//! command uses it) and PostgreSQL (feature `postgres`, when `BYTE8_TEST_DATABASE_URL` names a
//! database; skipped otherwise).
use crate::support_postgres as pg;

use byte8_ledger_core::store::{conformance, crypto::MasterKey, memory::MemoryStore, sqlite::SqliteStore};
#[cfg(feature = "conformance")]
use byte8_ledger_service::store::{MemoryServiceStore, conformance as service_conformance};

#[tokio::test]
async fn memory_store_conforms() {
    conformance::run_all(&MemoryStore::new(), "mem").await;
}

#[tokio::test]
async fn sqlite_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db"), Some(MasterKey::generate())).await.unwrap();
    conformance::run_all(&store, "sqlite").await;
}
/// SQLite's `finish` is one transaction with its held cross-reference records: when the
/// attempt's insert fails (a trigger refusing it), the record written before it in the
/// transaction is not kept either (the intent stands), and the run stays running under its claim.
#[tokio::test]
async fn sqlite_finish_keeps_its_xrefs_only_with_the_run() {
    use byte8_ledger_core::store::{
        Dedupe, RunStatus, RunStore, Xref, XrefKind, XrefStore,
        conformance::{new_run, result, t0},
    };
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db"), None).await.unwrap();
    let key = "invoice.created:5";
    let id = store.enqueue(new_run("biz", key, "x"), Dedupe::Permanent).await.unwrap().run_id();
    let run = store.claim_run(id, t0(), t0() + chrono::Duration::seconds(60)).await.unwrap().unwrap();
    let intent = Xref::intent(Some("SI-5".into()), serde_json::json!({}), t0());
    store.put_xref("biz", XrefKind::Invoice, "5", &intent).await.unwrap();
    sqlx::query(
        "CREATE TRIGGER refuse_attempts BEFORE INSERT ON attempts BEGIN SELECT RAISE(ABORT, 'refused by the test'); END",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let done = Xref::done("L5".into(), Some("SI-5".into()), serde_json::json!({}), t0());
    let mut ended = result(key, RunStatus::Synced, 1, None);
    ended.xrefs = vec![(XrefKind::Invoice, "5".into(), done.clone())];
    let err = store.finish(id, run.claim, ended.clone()).await.expect_err("the trigger refuses the attempt");
    assert!(err.to_string().contains("refused by the test"), "{err}");
    assert_eq!(store.get_xref("biz", XrefKind::Invoice, "5").await.unwrap(), Some(intent), "the intent stands");
    assert_eq!(store.get(id).await.unwrap().map(|r| r.status), Some(RunStatus::Running));
    sqlx::query("DROP TRIGGER refuse_attempts").execute(store.pool()).await.unwrap();
    store.finish(id, run.claim, ended).await.expect("the claim still holds");
    assert_eq!(store.get_xref("biz", XrefKind::Invoice, "5").await.unwrap(), Some(done));
    assert_eq!(store.get(id).await.unwrap().map(|r| r.status), Some(RunStatus::Synced));
}

#[tokio::test]
async fn postgres_store_conforms() {
    let Some(url) = pg::url("postgres_store_conforms") else { return };
    let store = pg::store(&url, 8, Some(MasterKey::generate())).await;
    // A fresh scope each time: the database outlives the test.
    conformance::run_all(&store, &pg::unique("pg")).await;
}

#[tokio::test]
async fn sqlite_state_survives_reopening_and_tokens_are_encrypted_at_rest() {
    use byte8_ledger_core::{
        auth::TokenSet,
        store::{Connection, ConnectionStore, Dedupe, NewRun, RunStore},
    };
    use secrecy::{ExposeSecret, SecretString};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let key_text = SecretString::from(base64_of([9u8; 32]));
    {
        let store = SqliteStore::open(&path, Some(MasterKey::from_base64(&key_text).unwrap())).await.unwrap();
        let now = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
        store
            .save_connection(&Connection {
                scope: "biz".into(),
                provider: "sage_accounting".into(),
                base_url: "http://x".into(),
                token_url: "http://y".into(),
                created_at: now,
                tenant_id: None,
                connections_url: None,
            })
            .await
            .unwrap();
        store
            .save_tokens(
                "biz",
                &TokenSet {
                    access_token: SecretString::from("ACCESS-PLAIN".to_owned()),
                    refresh_token: SecretString::from("REFRESH-PLAIN".to_owned()),
                    access_expires_at: now,
                    refresh_expires_at: None,
                    issued_at: None,
                },
            )
            .await
            .unwrap();
        store
            .enqueue(
                NewRun {
                    scope: "biz".into(),
                    tenant_id: None,
                    idempotency_key: "invoice.created:1".into(),
                    event: Some("invoice.created".into()),
                    magento_entity_id: Some(1),
                    raw: "{}".into(),
                    fingerprint: "f".into(),
                    policy: None,
                    received_at: now,
                },
                Dedupe::Permanent,
            )
            .await
            .unwrap();
    }
    // Nothing in the database file (or its WAL) holds a token in clear.
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(!text.contains("REFRESH-PLAIN") && !text.contains("ACCESS-PLAIN"));
    }
    let store = SqliteStore::open(&path, Some(MasterKey::from_base64(&key_text).unwrap())).await.unwrap();
    assert_eq!(store.tokens("biz").await.unwrap().unwrap().refresh_token.expose_secret(), "REFRESH-PLAIN");
    assert!(store.find_by_key("biz", "invoice.created:1").await.unwrap().is_some(), "the queue survived");
    let wrong = SqliteStore::open(&path, Some(MasterKey::generate())).await.unwrap();
    let err = wrong.tokens("biz").await.unwrap_err();
    assert!(err.to_string().contains("LEDGER_MASTER_KEY"), "{err}");
}

fn base64_of(bytes: [u8; 32]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(feature = "conformance")]
#[tokio::test]
async fn memory_service_store_conforms() {
    service_conformance::run_all(&MemoryServiceStore::default(), "mem").await;
}

#[cfg(feature = "conformance")]
#[tokio::test]
async fn sqlite_service_store_conforms() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("state.db"), Some(MasterKey::generate())).await.unwrap();
    service_conformance::run_all(&store, "sqlite").await;
}
#[cfg(feature = "conformance")]
#[tokio::test]
async fn postgres_service_store_conforms() {
    let Some(url) = pg::url("postgres_service_store_conforms") else { return };
    // A database of the suite's own: its webhook keys expire in 1970, so a purge by any other
    // test recording a key with the real clock (one record in sixteen purges the oldest expired
    // keys) could delete one between its first use and the suite's replay check.
    let database = pg::OwnDatabase::create(&url).await;
    let store = pg::store_in(&database, 8, Some(MasterKey::generate())).await;
    service_conformance::run_all(&store, &pg::unique("pg")).await;
    store.close().await;
    database.drop().await;
}

/// A turn's end and `callbacks_sent` with one delivery (what a turn usually has) keep one plan:
/// after PostgreSQL's five custom plans, each call runs the generic one. (Bound as arrays, they
/// were planned at every call: `unnest` of a parameter is estimated at 10 rows.) Read from the
/// connection's own `pg_prepared_statements`: the store's statements keep one connection here.
#[tokio::test]
async fn postgres_one_delivery_keeps_one_plan() {
    use byte8_ledger_service::store::DispatchStore;
    let Some(url) = pg::url("postgres_one_delivery_keeps_one_plan") else { return };
    let store = pg::store(&url, 2, None).await;
    let scope = pg::unique("pg-one-delivery");
    let now = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH;
    for run in 0..8 {
        store.end_turn(&scope, "p/1", &[(run, 1)], now).await.unwrap();
        store.callbacks_sent(&[(run, 1)], now).await.unwrap();
    }
    let plans: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT statement, generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE '%UPDATE callbacks c SET delivered_at%' AND statement NOT LIKE 'SELECT%' ORDER BY statement",
    )
    .fetch_all(store.statements())
    .await
    .unwrap();
    assert_eq!(plans.len(), 2, "the turn's end and callbacks_sent, prepared on the kept connection: {plans:#?}");
    for (statement, generic, custom) in &plans {
        assert!(
            *custom <= 5 && generic + custom == 8,
            "generic plans after five custom ones at most: {statement}: {generic} generic, {custom} custom"
        );
    }
}

/// PostgreSQL's turn start is exact about callbacks (the memory and SQLite stores say "due" when
/// unsure): a turn with none due claims none, which is the statement an event saves.
#[tokio::test]
async fn postgres_turns_say_when_no_callback_is_due() {
    let Some(url) = pg::url("postgres_turns_say_when_no_callback_is_due") else { return };
    let store = pg::store(&url, 4, Some(MasterKey::generate())).await;
    let due = service_conformance::turns_know_their_callbacks(&store, &pg::unique("pg-own")).await;
    assert!(!due, "a turn's start with no callback due says none is");
}

#[tokio::test]
async fn sqlite_keeps_the_api_key_encrypted_at_rest() {
    use byte8_ledger_core::policy::SyncPolicy;
    use byte8_ledger_service::{
        magento::ApiKey,
        store::{Binding, BindingStore},
    };
    use secrecy::SecretString;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let key_text = SecretString::from(base64_of([7u8; 32]));
    let api_key = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";
    {
        let store = SqliteStore::open(&path, Some(MasterKey::from_base64(&key_text).unwrap())).await.unwrap();
        let b = Binding::new(
            "tenant-at-rest",
            "biz",
            "https://shop.example.com",
            ApiKey::new(api_key).unwrap(),
            SyncPolicy::default(),
            chrono::DateTime::UNIX_EPOCH,
        )
        .unwrap();
        store.put_binding(&b).await.unwrap();
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert!(!String::from_utf8_lossy(&bytes).contains(api_key), "the api_key is in clear in the database");
    }
    let store = SqliteStore::open(&path, Some(MasterKey::from_base64(&key_text).unwrap())).await.unwrap();
    assert_eq!(store.binding("tenant-at-rest").await.unwrap().unwrap().api_key.expose_secret(), api_key);
    // Listing needs no master key.
    let listed = SqliteStore::open(&path, None).await.unwrap().bindings().await.unwrap();
    assert_eq!(listed.iter().map(|b| b.tenant_id.as_str()).collect::<Vec<_>>(), ["tenant-at-rest"]);
    // Without the master key, or with another one, the binding does not open, and the error says
    // why without the key.
    for store in [
        SqliteStore::open(&path, None).await.unwrap(),
        SqliteStore::open(&path, Some(MasterKey::generate())).await.unwrap(),
    ] {
        let err = store.binding("tenant-at-rest").await.unwrap_err();
        assert!(err.to_string().contains("LEDGER_MASTER_KEY"), "{err}");
        assert!(!err.to_string().contains(api_key) && !format!("{err:?}").contains(api_key));
    }
}

/// Migration 0004 on a state file written before it: each run gets the tenant bound to its
/// business when it was received, runs of a business never bound keep none, and an outbox row
/// with no tenant to tell is dropped.
#[tokio::test]
async fn sqlite_migration_0004_gives_existing_runs_their_tenant() {
    use byte8_ledger_core::store::RunStore;
    use byte8_ledger_service::store::DispatchStore;
    use chrono::{DateTime, Utc};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    // The schema as it was: migrations 0001 to 0003 only.
    let old = dir.path().join("migrations");
    std::fs::create_dir(&old).unwrap();
    let root = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("migrations/sqlite");
    for name in ["0001_init.sql", "0002_connection_provider_tenant.sql", "0003_service.sql"] {
        std::fs::copy(root.join(name), old.join(name)).unwrap();
    }
    {
        let options = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).create_if_missing(true);
        let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
        sqlx::migrate::Migrator::new(old.as_path()).await.unwrap().run(&pool).await.unwrap();
        // Tenant A paired at 100 and disconnected; tenant B paired to the same business at 1000.
        for (tenant, status, paired) in [("tenant-a", "revoked", 100), ("tenant-b", "active", 1000)] {
            sqlx::query(
                "INSERT INTO bindings (tenant_id, scope, magento_base_url, api_key, policy, status, \
                 magento_connection_status, paired_at, created_at, updated_at) \
                 VALUES (?, 'biz', 'https://shop.example.com', 'v1:x', '{}', ?, 'active', ?, ?, ?)",
            )
            .bind(tenant)
            .bind(status)
            .bind(paired)
            .bind(paired)
            .bind(paired)
            .execute(&pool)
            .await
            .unwrap();
        }
        for (id, scope, created) in [(1, "biz", 500), (2, "biz", 2000), (3, "biz", 50), (4, "cli-biz", 500)] {
            sqlx::query(
                "INSERT INTO runs (id, scope, idempotency_key, raw, status, created_at, updated_at) \
                 VALUES (?, ?, ?, '{}', 'synced', ?, ?)",
            )
            .bind(id)
            .bind(scope)
            .bind(format!("invoice.created:{id}"))
            .bind(created)
            .bind(created)
            .execute(&pool)
            .await
            .unwrap();
        }
        for (run, scope) in [(2, "biz"), (4, "cli-biz")] {
            sqlx::query("INSERT INTO callbacks (run_id, scope, generation, due_at, created_at) VALUES (?, ?, 1, 0, 0)")
                .bind(run)
                .bind(scope)
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;
    }
    let store = SqliteStore::open(&path, Some(MasterKey::generate())).await.unwrap();
    let mut tenants = Vec::new();
    for id in 1..=4 {
        tenants.push(store.get(id).await.unwrap().unwrap().tenant_id);
    }
    assert_eq!(
        tenants,
        [Some("tenant-a".to_owned()), Some("tenant-b".to_owned()), Some("tenant-a".to_owned()), None],
        "A's run received while A was the tenant, B's after B paired, one older than every pairing \
         to the first tenant, none for a business never bound (the sync command's)"
    );
    assert_eq!(store.get(1).await.unwrap().unwrap().claim, 0);
    assert_eq!(store.pending_callbacks("cli-biz").await.unwrap(), 0, "no tenant to tell: dropped");
    let far = DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(1);
    assert!(store.claim_callbacks("biz", "tenant-a", far, far, 10).await.unwrap().is_empty());
    let b = store.claim_callbacks("biz", "tenant-b", far, far, 10).await.unwrap();
    assert_eq!(b.iter().map(|c| c.run.id).collect::<Vec<_>>(), vec![2], "B's run's callback is B's");
}

/// Recording a `jti` on PostgreSQL purges expired ones on the way (in the same statement): an
/// expired key disappears after enough records (a hundred at a time; the shared test database
/// may hold many), and a live one stays.
#[tokio::test]
async fn postgres_replay_cache_purges_expired_keys_while_recording() {
    use byte8_ledger_service::store::ReplayCache;
    use sqlx::Row as _;
    let Some(url) = pg::url("postgres_replay_cache_purges_expired_keys_while_recording") else { return };
    let store = pg::store(&url, 2, None).await;
    let (expired, live) = (pg::unique("jti-expired"), pg::unique("jti-live"));
    // The table is shared with the tests running beside this one, and every recording purges
    // what expired before its `now`: this test's times lie before theirs (2023, while the
    // conformance suite's are in 2026 and webhooks use the real clock), so that its purges never
    // take their keys, and its live key outlives all of them (2055).
    let now = 1_700_000_000_i64;
    assert!(store.check_and_record(&expired, now + 1, now).await.unwrap());
    assert!(store.check_and_record(&live, now + 1_000_000_000, now).await.unwrap());
    let count = |jti: String| {
        let pool = store.pool().clone();
        async move {
            sqlx::query("SELECT count(*) AS n FROM replay_cache WHERE key = $1")
                .bind(byte8_ledger_core::identity::sha256_hex(&jti))
                .fetch_one(&pool)
                .await
                .unwrap()
                .get::<i64, _>("n")
        }
    };
    assert_eq!(count(expired.clone()).await, 1);
    let later = now + 10;
    let mut records = 0;
    while count(expired.clone()).await > 0 {
        assert!(records < 10_000, "the expired key was never purged");
        assert!(store.check_and_record(&pg::unique("jti-new"), later + 60, later).await.unwrap());
        records += 1;
    }
    assert_eq!(count(live).await, 1, "a live key is kept");
    assert!(store.check_and_record(&expired, later + 60, later).await.unwrap(), "a purged key is new again");
}

/// A key of the replay cache whose `hashtext` is (`purges`) or is not a multiple of sixteen: the
/// keys whose recording purges (migration 0023), found by asking the server's own hash.
async fn replay_key_that(pool: &sqlx::PgPool, prefix: &str, purges: bool) -> String {
    for n in 0.. {
        let key = format!("{prefix}-new-{n}");
        let multiple: bool =
            sqlx::query_scalar("SELECT hashtext($1) & 15 = 0").bind(&key).fetch_one(pool).await.unwrap();
        if multiple == purges {
            return key;
        }
    }
    unreachable!("the keys are endless")
}

/// Recording a `jti` on PostgreSQL reads only the expired keys it purges (migration 0019), and one
/// record in sixteen purges (0023): with twenty thousand expired keys in the cache, a key whose
/// hash is a multiple of sixteen purges the 1,600 oldest by the expiry index and scans no table;
/// any other key purges none. The statement before 0019 answered this with a hash semi-join over
/// two sequential scans, reading every key (a cost that grew with the node's webhook rate;
/// checked by putting it back in the function: this test then fails). Counted in the
/// transaction's own statistics (`pg_stat_xact_user_tables`), which other tests' statements do
/// not touch.
#[tokio::test]
async fn postgres_replay_record_reads_only_expired_keys() {
    use sqlx::Row as _;
    let Some(url) = pg::url("postgres_replay_record_reads_only_expired_keys") else { return };
    // A database of the test's own: in the shared one, another test's keys older than these (the
    // conformance suite's expire in 1970) were purged first, now and then (the test was flaky).
    let database = pg::OwnDatabase::create(&url).await;
    let store = pg::store_in(&database, 2, None).await;
    let pool = store.pool().clone();
    let prefix = pg::unique("jti-many");
    let now = 1_600_000_000_i64;
    sqlx::query(
        "INSERT INTO replay_cache (key, expires_at) \
         SELECT $1 || '-' || n, $2 - n FROM generate_series(1, 20000) AS n",
    )
    .bind(&prefix)
    .bind(now)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE replay_cache").execute(&pool).await.unwrap();
    // The transaction's own counters of the cache's table: sequential scans, index scans, deletes.
    async fn counters(tx: &mut sqlx::PgConnection) -> (i64, i64, i64) {
        let row = sqlx::query(
            "SELECT seq_scan, idx_scan, n_tup_del FROM pg_stat_xact_user_tables WHERE relid = 'replay_cache'::regclass",
        )
        .fetch_one(tx)
        .await
        .unwrap();
        (row.get("seq_scan"), row.get("idx_scan"), row.get("n_tup_del"))
    }
    let mine = "SELECT count(*) FROM replay_cache WHERE key LIKE $1 || '-%'";
    for purges in [true, false] {
        let key = replay_key_that(&pool, &prefix, purges).await;
        let mut tx = pool.begin().await.unwrap();
        let before: i64 = sqlx::query_scalar(mine).bind(&prefix).fetch_one(&mut *tx).await.unwrap();
        let (seq0, idx0, del0) = counters(&mut tx).await;
        let recorded: bool = sqlx::query_scalar("SELECT byte8_replay_record($1, $2, $3)")
            .bind(&key)
            .bind(now + 60)
            .bind(now)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert!(recorded, "a new key is recorded");
        let (seq1, idx1, del1) = counters(&mut tx).await;
        let after: i64 = sqlx::query_scalar(mine).bind(&prefix).fetch_one(&mut *tx).await.unwrap();
        tx.rollback().await.unwrap();
        assert_eq!(seq1 - seq0, 0, "no sequential scan of the replay cache ({} index scans)", idx1 - idx0);
        assert!(idx1 > idx0, "the upsert (and a purge) read the indexes");
        if purges {
            assert_eq!(del1 - del0, 1600, "a purging record deletes the 1,600 oldest expired keys");
            assert_eq!(before + 1 - after, 1600, "…all of them expired keys, and the new key is in");
        } else {
            assert_eq!(del1 - del0, 0, "a record whose key does not purge deletes nothing");
            assert_eq!(after, before + 1, "the new key is in, nothing went");
        }
    }
    store.close().await;
    database.drop().await;
}

/// A turn that claims a run of a business whose rate limiter lives in this process takes the
/// business's first permits in its own statement (`PostgresStore::turn_permits`): the run's first
/// ledger requests then cost no statement of the limiter's, and the database's record of the
/// business's permits holds them. A turn that claims nothing takes none.
#[tokio::test]
async fn postgres_a_turn_that_claims_a_run_takes_its_first_permits() {
    use byte8_ledger_core::{
        clock::{Clock, SystemClock},
        http::RateConfig,
        store::{Dedupe, RunStore, conformance::tenant_run},
    };
    use byte8_ledger_service::store::{DispatchStore, TurnStart};
    let Some(url) = pg::url("postgres_a_turn_that_claims_a_run_takes_its_first_permits") else { return };
    let store = pg::store(&url, 4, None).await;
    let (scope, tenant) = (pg::unique("turn-permits"), pg::unique("turn-permits-t"));
    let limiter = store.rate_limiter(scope.clone(), RateConfig { requests_per_minute: 200, burst: 10 });
    let recorded = |scope: String| {
        let pool = store.pool().clone();
        async move {
            sqlx::query_scalar::<_, Vec<i64>>("SELECT recent FROM rate_limits WHERE key = $1")
                .bind(scope)
                .fetch_optional(&pool)
                .await
                .unwrap()
                .map_or(0, |r| r.len())
        }
    };
    let start = |holder: &'static str| {
        let now = SystemClock.now();
        let later = now + chrono::Duration::seconds(60);
        (now, later, holder)
    };
    // Nothing to claim: no permit.
    let (now, later, holder) = start("permits/1");
    let turn =
        TurnStart { scope: &scope, tenant: &tenant, holder, now, lease_until: later, run_lease_until: later, limit: 4 };
    let begun = store.begin_turn(&turn).await.unwrap().expect("a free lease");
    assert!(begun.claimed.runs.is_empty());
    store.release_dispatch(&scope, holder).await.unwrap();
    assert_eq!(recorded(scope.clone()).await, 0, "a turn that claims nothing takes no permit");
    // A run to claim: the idle business's two permits, with the claim.
    store.enqueue(tenant_run(&scope, &tenant, "invoice.created:1", "{}"), Dedupe::Permanent).await.unwrap();
    let (now, later, holder) = start("permits/2");
    let turn =
        TurnStart { scope: &scope, tenant: &tenant, holder, now, lease_until: later, run_lease_until: later, limit: 4 };
    let begun = store.begin_turn(&turn).await.unwrap().expect("a free lease");
    assert_eq!(begun.claimed.runs.len(), 1, "the run is claimed");
    assert_eq!(recorded(scope.clone()).await, 2, "the turn took the idle business's block of two");
    for _ in 0..2 {
        limiter.reserve().await.unwrap();
    }
    assert_eq!(limiter.statements(), 0, "the run's two requests found their permits in the process");
    store.release_dispatch(&scope, holder).await.unwrap();
}

/// The webhook's enqueue that begins the worker's turn (`byte8_enqueue_turn`, migration 0028)
/// takes the idle business's first permits as the turn's own statement does: the queued run is
/// claimed, the database's record of the business's permits holds the block of two, and the
/// run's two ledger requests find them in the process. Its binding checked and its `jti`
/// recorded in the same statement: the token used again is a replay.
/// A PostgreSQL test's tenant of `scope` paired now (by the system clock, as its webhooks are
/// dated): the time and the binding's version, which a webhook's token carries.
async fn bound_now(
    store: &byte8_ledger_core::store::postgres::PostgresStore,
    scope: &str,
    tenant: &str,
) -> (chrono::DateTime<chrono::Utc>, Option<i64>) {
    use byte8_ledger_core::{
        clock::{Clock, SystemClock},
        policy::SyncPolicy,
    };
    use byte8_ledger_service::store::{ApiKey, Binding, BindingStore};
    let policy = SyncPolicy::from_json(r#"{"default_tax_rate_id":"GB_STANDARD"}"#).unwrap();
    let now = SystemClock.now();
    let binding =
        Binding::new(tenant, scope, "https://shop.example.com", ApiKey::new("k").unwrap(), policy, now).unwrap();
    store.put_binding(&binding).await.unwrap();
    (now, store.versioned_binding(tenant).await.unwrap().unwrap().1)
}

#[tokio::test]
async fn postgres_a_webhook_that_begins_the_turn_takes_its_first_permits() {
    use byte8_ledger_core::{
        http::RateConfig,
        store::{Dedupe, Enqueued, EnqueuedOnce, RunStatus, conformance::tenant_run},
    };
    use byte8_ledger_service::store::{DispatchStore, ReplayCache, TurnStart, WebhookToken};
    let Some(url) = pg::url("postgres_a_webhook_that_begins_the_turn_takes_its_first_permits") else { return };
    let store = pg::store(&url, 4, Some(MasterKey::generate())).await;
    let (scope, tenant) = (pg::unique("webhook-permits"), pg::unique("webhook-permits-t"));
    let (now, version) = bound_now(&store, &scope, &tenant).await;
    assert!(version.is_some(), "PostgreSQL gives binding versions");
    let limiter = store.rate_limiter(scope.clone(), RateConfig { requests_per_minute: 200, burst: 10 });
    let later = now + chrono::Duration::seconds(60);
    let holder = "webhook-permits/webhook-1";
    let turn =
        TurnStart { scope: &scope, tenant: &tenant, holder, now, lease_until: later, run_lease_until: later, limit: 4 };
    let jti = format!("{tenant}\u{1f}permits");
    let token =
        WebhookToken { jti: &jti, expires_at: now.timestamp() + 600, now: now.timestamp(), binding_version: version };
    let run = tenant_run(&scope, &tenant, "invoice.created:1", "{}");
    let (queued, begun) = store.enqueue_and_begin(&token, run, Dedupe::Permanent, &turn).await.unwrap();
    let EnqueuedOnce::Queued(Enqueued::New(id)) = queued else { panic!("the run is queued: {queued:?}") };
    let begun = begun.expect("the idle business's lease is taken");
    assert_eq!(
        begun.claimed.runs.iter().map(|r| (r.id, r.status, r.claim)).collect::<Vec<_>>(),
        [(id, RunStatus::Running, 1)],
        "the webhook's run is claimed in the statement that queued it"
    );
    assert!(!begun.claimed.more && !begun.callbacks_due, "nothing else waits: {begun:?}");
    let recent: Vec<i64> = sqlx::query_scalar("SELECT recent FROM rate_limits WHERE key = $1")
        .bind(&scope)
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(recent.len(), 2, "the statement took the idle business's block of two");
    for _ in 0..2 {
        limiter.reserve().await.unwrap();
    }
    assert_eq!(limiter.statements(), 0, "the run's two requests found their permits in the process");
    assert!(!store.check_and_record(&jti, now.timestamp() + 600, now.timestamp()).await.unwrap(), "the jti is spent");
    store.release_dispatch(&scope, holder).await.unwrap();
}

/// PostgreSQL writes an idle business's webhook run once (migration 0029): inserted claimed, no
/// update claims it. With an older run of the business queued, the webhook's run is queued and the
/// older one claimed by an update, as before (which shows the test's trigger sees claims). A row
/// trigger of the test's own, on this test's scope only, logs each update that leaves a run running.
#[tokio::test]
async fn postgres_an_idle_business_s_webhook_run_is_written_once() {
    use byte8_ledger_core::store::{Dedupe, Enqueued, EnqueuedOnce, RunStore, conformance::tenant_run};
    use byte8_ledger_service::store::{DispatchStore, TurnStart, WebhookToken};
    let Some(url) = pg::url("postgres_an_idle_business_s_webhook_run_is_written_once") else { return };
    let store = pg::store(&url, 4, Some(MasterKey::generate())).await;
    let (scope, tenant) = (pg::unique("written-once"), pg::unique("written-once-t"));
    let log = format!("claims_{}", uuid::Uuid::new_v4().simple());
    sqlx::raw_sql(&format!(
        "CREATE TABLE {log} (run_id BIGINT NOT NULL); \
         CREATE FUNCTION {log}() RETURNS trigger LANGUAGE plpgsql AS $$ \
           BEGIN INSERT INTO {log} VALUES (NEW.id); RETURN NULL; END $$; \
         CREATE TRIGGER {log} AFTER UPDATE ON runs FOR EACH ROW \
           WHEN (NEW.scope = '{scope}' AND NEW.status = 'running') EXECUTE FUNCTION {log}();"
    ))
    .execute(store.pool())
    .await
    .unwrap();
    let claims_logged = || async {
        sqlx::query_scalar::<_, i64>(&format!("SELECT run_id FROM {log} ORDER BY run_id"))
            .fetch_all(store.pool())
            .await
            .unwrap()
    };
    let (now, version) = bound_now(&store, &scope, &tenant).await;
    let later = now + chrono::Duration::seconds(60);
    let turn = |holder| TurnStart {
        scope: &scope,
        tenant: &tenant,
        holder,
        now,
        lease_until: later,
        run_lease_until: later,
        limit: 1,
    };
    let jtis = [format!("{tenant}\u{1f}once-1"), format!("{tenant}\u{1f}once-2")];
    let token = |n: usize| WebhookToken {
        jti: &jtis[n],
        expires_at: now.timestamp() + 600,
        now: now.timestamp(),
        binding_version: version,
    };

    let run = tenant_run(&scope, &tenant, "invoice.created:1", "{}");
    let (queued, begun) =
        store.enqueue_and_begin(&token(0), run, Dedupe::Permanent, &turn("once/webhook-1")).await.unwrap();
    let EnqueuedOnce::Queued(Enqueued::New(idle)) = queued else { panic!("the run is queued: {queued:?}") };
    assert_eq!(begun.unwrap().claimed.runs.iter().map(|r| r.id).collect::<Vec<_>>(), [idle], "claimed");
    assert_eq!(claims_logged().await, Vec::<i64>::new(), "the idle business's run is inserted claimed");
    store.end_turn(&scope, "once/webhook-1", &[], now).await.unwrap();

    let older = store.enqueue(tenant_run(&scope, &tenant, "invoice.created:2", "{}"), Dedupe::Permanent).await.unwrap();
    let run = tenant_run(&scope, &tenant, "invoice.created:3", "{}");
    let (queued, begun) =
        store.enqueue_and_begin(&token(1), run, Dedupe::Permanent, &turn("once/webhook-2")).await.unwrap();
    assert!(matches!(queued, EnqueuedOnce::Queued(Enqueued::New(_))), "{queued:?}");
    assert_eq!(
        begun.unwrap().claimed.runs.iter().map(|r| r.id).collect::<Vec<_>>(),
        [older.run_id()],
        "with runs open, the business's oldest is claimed first"
    );
    assert_eq!(claims_logged().await, [older.run_id()], "and claimed by an update");
    store.end_turn(&scope, "once/webhook-2", &[], now).await.unwrap();
    sqlx::raw_sql(&format!("DROP TRIGGER {log} ON runs; DROP FUNCTION {log}(); DROP TABLE {log};"))
        .execute(store.pool())
        .await
        .unwrap();
}

/// Webhooks of one business at once, some beginning turns (claiming none, one or two runs) and
/// some only queueing, each event sent six times: every statement answers (none deadlocks: each webhook that begins a turn takes the
/// business's lease before the key's lock, migration 0029), one run is kept per event, and at
/// most one turn holds the business at a time.
#[tokio::test]
async fn postgres_webhooks_of_one_business_at_once_all_answer() {
    use byte8_ledger_core::store::{Dedupe, EnqueuedOnce, RunStore, conformance::tenant_run};
    use byte8_ledger_service::store::{DispatchStore, TurnStart, WebhookToken};
    let Some(url) = pg::url("postgres_webhooks_of_one_business_at_once_all_answer") else { return };
    let store = pg::store(&url, 16, Some(MasterKey::generate())).await;
    let (scope, tenant) = (pg::unique("at-once"), pg::unique("at-once-t"));
    let (now, version) = bound_now(&store, &scope, &tenant).await;
    let later = now + chrono::Duration::seconds(60);
    let jtis: Vec<String> = (0..48).map(|n| format!("{tenant}\u{1f}at-once-{n}")).collect();
    let holders: Vec<String> = (0..48).map(|n| format!("at-once/webhook-{n}")).collect();
    let answers = futures::future::join_all((0..48).map(|n| {
        let (store, scope, tenant, jtis, holders) = (&store, &scope, &tenant, &jtis, &holders);
        async move {
            let token = WebhookToken {
                jti: &jtis[n],
                expires_at: now.timestamp() + 600,
                now: now.timestamp(),
                binding_version: version,
            };
            // Eight events, each sent six times.
            let run = tenant_run(scope, tenant, &format!("invoice.created:{}", n % 8), "{}");
            if n % 3 == 0 {
                let queued =
                    store.enqueue_once(token.jti, token.expires_at, token.now, version, run, Dedupe::Permanent).await?;
                Ok::<_, byte8_ledger_core::Error>((queued, None))
            } else {
                let turn = TurnStart {
                    scope,
                    tenant,
                    holder: &holders[n],
                    now,
                    lease_until: later,
                    run_lease_until: later,
                    limit: n / 3 % 3,
                };
                let (queued, begun) = store.enqueue_and_begin(&token, run, Dedupe::Permanent, &turn).await?;
                Ok((queued, begun.map(|_| holders[n].clone())))
            }
        }
    }))
    .await;
    let mut turns = Vec::new();
    for (n, answer) in answers.into_iter().enumerate() {
        let (queued, turn) = answer.unwrap_or_else(|e| panic!("webhook {n}: {e}"));
        assert!(matches!(queued, EnqueuedOnce::Queued(_)), "webhook {n}: {queued:?}");
        turns.extend(turn);
    }
    assert_eq!(turns.len(), 1, "one turn holds the business while none ends: {turns:?}");
    let page = store
        .query_runs(&byte8_ledger_core::store::audit::RunQuery {
            scope: Some(scope.clone()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.total, 8, "one run an event");
    store.release_dispatch(&scope, &turns[0]).await.unwrap();
}

/// The service's look for work (`due_tenants`, every process once a second) reads an entry or two
/// of each business with open runs or undelivered callbacks, not every run and callback waiting.
/// On the bench's node (`pg::fill_node`: 1,000 businesses, 70 of them with a run waiting a day,
/// one whose Magento is down with 2,000 callbacks due) with a back-fill of 5,000 runs queued and
/// due whose business's lease is held, it finds the store that is down and nothing else, reading
/// fewer than 200 runs and 10 callbacks, with generic plans and with the custom plans PostgreSQL
/// makes for a statement's first executions on a connection. The first
/// version (checked) read the 5,070 open runs and the 2,000 callbacks on every call.
#[tokio::test]
async fn the_look_for_work_reads_each_business_not_each_run_waiting() {
    use byte8_ledger_core::clock::{Clock, SystemClock};
    use byte8_ledger_service::store::DispatchStore;
    let Some(url) = pg::url("the_look_for_work_reads_each_business_not_each_run_waiting") else { return };
    let database = pg::OwnDatabase::create(&url).await;
    let store = pg::generic_plan_store(&database).await;
    pg::fill_node(store.pool(), "history", "history-t").await;
    sqlx::query(
        "INSERT INTO runs (scope, idempotency_key, event, magento_entity_id, raw, fingerprint, policy, status, \
         attempts, created_at, updated_at, tenant_id, claim) \
         SELECT 'backfill', 'invoice.created:' || g, 'invoice.created', g, '\\x7b7d'::bytea, 'fp' || g, '{}', \
         'queued', 0, now(), now(), 'backfill-t', 0 FROM generate_series(1, 5000) AS g",
    )
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO dispatch_leases (scope, holder, lease_until) VALUES ('backfill', 'w', now() + interval '1 hour')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    sqlx::query("VACUUM ANALYZE runs").execute(store.pool()).await.unwrap();
    let now = SystemClock.now();
    let due = store.due_tenants(now).await.unwrap();
    assert_eq!(due, vec![("down".to_owned(), "down-t".to_owned())], "the store whose callbacks are due, only");
    sqlx::query("DELETE FROM dispatch_leases WHERE scope = 'backfill'").execute(store.pool()).await.unwrap();
    let due = store.due_tenants(now).await.unwrap();
    assert_eq!(
        due,
        vec![("backfill".to_owned(), "backfill-t".to_owned()), ("down".to_owned(), "down-t".to_owned())],
        "the back-fill's lease released: its business is due again"
    );
    sqlx::query(
        "INSERT INTO dispatch_leases (scope, holder, lease_until) VALUES ('backfill', 'w', now() + interval '1 hour')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let mut plans = Vec::new();
    for mode in ["force_generic_plan", "force_custom_plan"] {
        let starts = "WITH RECURSIVE open_pairs";
        plans.push((mode, pg::explain_prepared_as(store.pool(), Some(mode), starts, "timestamptz", "now()").await));
    }
    store.close().await;
    database.drop().await;
    for (mode, plan) in &plans {
        let (runs, callbacks) = (pg::rows_read(plan, "runs"), pg::rows_read(plan, "callbacks"));
        assert!(runs > 0 && callbacks > 0, "{mode}: the plan reads both tables: {plan:#?}");
        assert!(runs < 200, "{mode}: {runs} runs read for 71 businesses with open runs: {plan:#?}");
        assert!(callbacks < 10, "{mode}: {callbacks} callbacks read for 1 business with callbacks waiting: {plan:#?}");
    }
}

/// A worker's turn (`begin_turn`) reads its business's open runs and undelivered callbacks only,
/// however many finished runs it keeps and whatever another business has waiting (migrations 0020
/// and 0022), as a claim does. On a node like the bench's (`pg::fill_node`, in a database of the
/// test's own: 1,000 businesses, one with 20,000 finished runs, one whose Magento is down with
/// 2,000 undelivered callbacks due), the generic plans of the turn, of the health tile's counters
/// (`dispatch_stats`, `pending_callbacks`) and of the callback claim drop no run and no callback by
/// a filter. Without migration 0022 (checked), the turn's plan drops the 20,000 runs, as it does
/// with migration 0018's indexes put back. The custom plans PostgreSQL makes for given values (a
/// statement's first five executions on a connection) of the turn and of the callback claim drop
/// none either; without migration 0026 (checked), the turn's custom plan read the 2,000
/// undelivered callbacks of the store that is down through `callbacks_undelivered`. (Since
/// migration 0028 the turn's function keeps its generic plan; the custom one is checked still.)
#[tokio::test]
async fn a_turn_and_the_health_tile_read_only_the_open_runs_of_a_business_with_a_long_history() {
    use byte8_ledger_service::store::{DispatchStore, TurnStart};
    let Some(url) = pg::url("a_turn_and_the_health_tile_read_only_the_open_runs_of_a_business_with_a_long_history")
    else {
        return;
    };
    let database = pg::OwnDatabase::create(&url).await;
    let store = pg::generic_plan_store(&database).await;
    let (scope, tenant) = ("history", "history-t");
    pg::fill_node(store.pool(), scope, tenant).await;
    let now = chrono::DateTime::<chrono::Utc>::UNIX_EPOCH + chrono::Duration::days(20_000);
    let turn =
        TurnStart { scope, tenant, holder: "history-worker", now, lease_until: now, run_lease_until: now, limit: 4 };
    let begun = store.begin_turn(&turn).await.unwrap().expect("the lease is free");
    assert!(begun.claimed.runs.is_empty(), "nothing of the history is due");
    assert!(!begun.callbacks_due, "no callback of the business is due");
    store.release_dispatch(scope, "history-worker").await.unwrap();
    let stats = store.dispatch_stats(scope, tenant, now).await.unwrap();
    assert_eq!(stats.pending, 0, "no open run");
    assert_eq!(store.pending_callbacks(scope).await.unwrap(), 0, "no undelivered callback of the business");
    assert!(store.claim_callbacks(scope, tenant, now, now, 4).await.unwrap().is_empty(), "no callback to claim");
    let due = store.due_tenants(now).await.unwrap();
    assert!(!due.iter().any(|(s, _)| s == scope), "the business with a history has nothing due");
    // `None`: the connection's generic plans; `Some(CUSTOM)`: the plans made for given values.
    const CUSTOM: Option<&str> = Some("force_custom_plan");
    let explain = |mode: Option<&'static str>, starts: &'static str, types: &'static str, arguments: String| {
        let pool = store.pool().clone();
        async move { pg::explain_prepared_as(&pool, mode, starts, types, &arguments).await }
    };
    // The turn and the callback claim are explained under generic plans (the connection's) and
    // under the custom plans PostgreSQL makes for given values. The turn's query is the one
    // `byte8_begin_turn` runs (migration 0028), taken from the function.
    let turn_query = pg::function_query(store.pool(), "byte8_begin_turn").await;
    assert!(turn_query.starts_with("WITH lease AS"), "the turn's query: {turn_query}");
    let explain_turn = |mode: Option<&'static str>| {
        let (pool, query) = (store.pool().clone(), turn_query.clone());
        let arguments = format!(
            "'{scope}', 'history-worker', now(), now(), '{tenant}', 4, now(), \
             NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL"
        );
        async move {
            pg::explain_statement_as(
                &pool,
                mode,
                &query,
                "text, text, timestamptz, timestamptz, text, bigint, timestamptz, \
                 text, bigint, integer, bigint, bigint, integer, bigint, bigint, integer",
                &arguments,
            )
            .await
        }
    };
    let claim = (
        "WITH next AS MATERIALIZED (SELECT run_id FROM callbacks",
        "text, timestamptz, timestamptz, bigint, text",
        format!("'{scope}', now(), now(), 4, '{tenant}'"),
    );
    let plans = [
        ("begin_turn (custom plan)", explain_turn(CUSTOM).await),
        ("begin_turn", explain_turn(None).await),
        (
            "dispatch_stats",
            explain(
                None,
                "SELECT (SELECT COUNT(*) FROM runs",
                "text, timestamptz, text",
                format!("'{scope}', now(), '{tenant}'"),
            )
            .await,
        ),
        ("pending_callbacks", explain(None, "SELECT COUNT(*) AS n FROM callbacks", "text", format!("'{scope}'")).await),
        ("claim_callbacks (custom plan)", explain(CUSTOM, claim.0, claim.1, claim.2.clone()).await),
        ("claim_callbacks", explain(None, claim.0, claim.1, claim.2).await),
    ];
    store.close().await;
    database.drop().await;
    for (what, plan) in &plans {
        assert!(plan.iter().any(|line| line.contains("Scan")), "{what}: a plan: {plan:#?}");
        for table in ["runs", "callbacks"] {
            assert_eq!(
                pg::rows_removed_by_filter(plan, table),
                0,
                "{what}: no row of {table} read and dropped: {plan:#?}"
            );
        }
    }
}

/// A webhook that begins its business's turn (`enqueue_and_begin`, `byte8_enqueue_turn`) counts
/// the run it queues toward the young database's analyses, as `enqueue_unless_replayed` does
/// (`PostgresStore::count_queued_run`): the tables are not analysed after 1,023 webhooks' runs,
/// and are once the 1,024th is queued, with no run finished. A database of the test's own,
/// autovacuum off for its tables, so that only the store's analysis counts.
#[tokio::test]
async fn postgres_runs_queued_by_webhook_turns_count_toward_a_young_database_s_analyses() {
    use byte8_ledger_core::store::{
        Dedupe, Enqueued, EnqueuedOnce, conformance::tenant_run, postgres::YOUNG_ANALYSE_FROM,
    };
    use byte8_ledger_service::store::{DispatchStore, TurnStart, WebhookToken};
    let Some(url) = pg::url("postgres_runs_queued_by_webhook_turns_count_toward_a_young_database_s_analyses") else {
        return;
    };
    let database = pg::OwnDatabase::create(&url).await;
    let store = pg::store_in(&database, 1, Some(MasterKey::generate())).await;
    for table in ["runs", "attempts", "xrefs", "replay_cache", "callbacks"] {
        sqlx::query(&format!("ALTER TABLE {table} SET (autovacuum_enabled = false)"))
            .execute(store.pool())
            .await
            .unwrap();
    }
    let (scope, tenant) = ("young-catalogue", "young-catalogue-t");
    let (now, version) = bound_now(&store, scope, tenant).await;
    let later = now + chrono::Duration::seconds(60);
    let holder = "young/webhook";
    let turn = TurnStart { scope, tenant, holder, now, lease_until: later, run_lease_until: later, limit: 0 };
    let webhook = |i: u64| {
        let (store, turn) = (&store, &turn);
        async move {
            let jti = format!("{tenant}\u{1f}{i}");
            let token = WebhookToken {
                jti: &jti,
                expires_at: now.timestamp() + 600,
                now: now.timestamp(),
                binding_version: version,
            };
            let run = tenant_run(scope, tenant, &format!("product.upserted:{i}"), "{}");
            let (queued, _) = store.enqueue_and_begin(&token, run, Dedupe::WhileQueued, turn).await.unwrap();
            assert!(matches!(queued, EnqueuedOnce::Queued(Enqueued::New(_))), "webhook {i} queued: {queued:?}");
        }
    };
    let (early, analysed) = pg::runs_analysed_at(store.pool(), YOUNG_ANALYSE_FROM, webhook).await;
    store.release_dispatch(scope, holder).await.unwrap();
    store.close().await;
    database.drop().await;
    assert!(!early, "not analysed before the {YOUNG_ANALYSE_FROM}th webhook's run");
    assert!(analysed, "analysed at {YOUNG_ANALYSE_FROM} runs queued by webhook turns");
}
