//! Several `byte8-ledger serve` processes on one PostgreSQL: one accepts the webhooks of three
//! paired stores (a fake Magento per store, `support/magento.rs`), three `--workers-only`
//! processes sync them into three Sage businesses (the simulator), a few thousand events in all.
//! Afterwards the simulator's books are checked against what Magento sent (the chaos soak's
//! verification: every document exactly once, nothing lost, every total right), and Magento
//! must have received exactly one sync-state callback per run.
//!
//! Skipped (with a message) without `BYTE8_TEST_DATABASE_URL`; `.ci/run` starts a PostgreSQL and
//! requires it.

use crate::support_postgres as pg;

use crate::support_magento as magento;

use std::{
    collections::BTreeMap,
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use byte8_ledger_core::{
    auth::TokenSet,
    clock::{Clock, SystemClock},
    policy::SyncPolicy,
    reference::ReferenceData,
    store::{Connection, ConnectionStore, crypto::MasterKey},
};
use byte8_ledger_service::magento::ApiKey;
use byte8_ledger_service::store::{Binding, BindingStatus, BindingStore};
use byte8_ledger_simulators::{
    SageSimulator, SimConfig,
    soak::{SoakReport, verify_business},
    workload::{WORKLOAD_POLICY, Workload, WorkloadConfig},
};
use magento::FakeMagento;
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::Row;
use tokio::io::AsyncBufReadExt as _;

const TENANTS: usize = 3;
const EVENTS_PER_TENANT: usize = 700;
const WORKER_PROCESSES: usize = 3;
const MASTER_KEY: &str = "c2VydmljZS1wb3N0Z3Jlcy10ZXN0LW1hc3Rlci1rZXk=";

fn serve(url: &str, dir: &std::path::Path, name: &str, args: &[&str]) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(env!("CARGO_BIN_EXE_byte8-ledger"));
    c.args(["serve", "--database-url", url])
        .args(args)
        .env("LEDGER_MASTER_KEY", MASTER_KEY)
        .env("SAGE_CLIENT_ID", "demo-client")
        .env("SAGE_CLIENT_SECRET", "demo-secret")
        // The shared test database may hold Xero connections other tests left behind; `serve`
        // checks the credentials of every ledger it has a connection to.
        .env("XERO_CLIENT_ID", "unused")
        .env("XERO_CLIENT_SECRET", "unused")
        // A high limit: the shared limiter is used, the test is not paced by it.
        .env("SAGE_REQUESTS_PER_MINUTE", "60000")
        .env("SAGE_RETRY_BACKOFF_MS", "20")
        .env("RUST_LOG", "byte8_ledger=info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(dir.join(format!("{name}.log"))).unwrap())
        .kill_on_drop(true);
    c
}

/// The canonical entity of a workload line, where the fake Magento serves it.
fn entity_of(line: &Value) -> (&'static str, u64, Value) {
    let segment = match line["event"].as_str().unwrap() {
        "invoice.created" => "invoice",
        "invoice.paid" => "payment",
        "creditmemo.created" => "creditmemo",
        "customer.upserted" => "customer",
        _ => "product",
    };
    (segment, line["magento_entity_id"].as_u64().unwrap(), line["entity"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_worker_processes_on_one_postgres_sync_every_webhook_once_and_call_back_once() {
    let Some(url) = pg::url("several_worker_processes_on_one_postgres_sync_every_webhook_once_and_call_back_once")
    else {
        return;
    };
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let run = pg::unique("svc");
    let master = MasterKey::from_base64(&SecretString::from(MASTER_KEY.to_owned())).unwrap();
    let store = pg::store(&url, 4, Some(master)).await;
    // The database outlives the test: tenants an interrupted earlier run left active would be
    // dispatched too (against servers long gone), so they are disconnected first.
    sqlx::query("UPDATE bindings SET status = 'revoked' WHERE tenant_id LIKE 'svc-%' AND status = 'active'")
        .execute(store.pool())
        .await
        .unwrap();
    let sim = SageSimulator::new(SimConfig::default());
    let sim_server = sim.serve().await.unwrap();
    let magento = FakeMagento::start().await;
    let policy = SyncPolicy::from_json(WORKLOAD_POLICY).unwrap();

    // Three tenants: each its own store, key, Sage business, refresh token and stream.
    let mut tenants = Vec::new();
    for i in 0..TENANTS {
        let business = format!("{run}-biz{i}");
        let tenant = format!("{run}-tenant{i}");
        let shop = format!("shop{i}");
        let mut reference = ReferenceData::demo_uk(SystemClock.now());
        reference.business.id = business.clone();
        sim.add_business(reference);
        let refresh = format!("refresh-{run}-{i}");
        sim.with_state(|s| s.add_refresh_token(&refresh));
        if i == 0 {
            // The first store is paired and connected as an operator does, with the command.
            let cli = |args: &[&str]| {
                let out = std::process::Command::new(env!("CARGO_BIN_EXE_byte8-ledger"))
                    .args(args)
                    .args(["--database-url", &url])
                    .env("LEDGER_MASTER_KEY", MASTER_KEY)
                    .env("SAGE_CLIENT_ID", "demo-client")
                    .env("SAGE_CLIENT_SECRET", "demo-secret")
                    .output()
                    .unwrap();
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                assert!(out.status.success(), "{args:?}: {text}");
                text
            };
            let policy_file = dir.path().join("policy.json");
            std::fs::write(&policy_file, WORKLOAD_POLICY).unwrap();
            magento.add_shop(&shop, "45c48cce2e2d7fbdea1afc51c7c6ad26");
            let out = cli(&[
                "tenant",
                "pair",
                "--magento-base-url",
                &magento.base_url(&shop),
                "--pairing-code",
                "45c48cce2e2d7fbdea1afc51c7c6ad26",
                "--business-id",
                &business,
                "--policy",
                policy_file.to_str().unwrap(),
                "--ledger-base-url",
                "https://ledger.example.com",
                "--tenant-id",
                &tenant,
            ]);
            assert!(out.contains(&format!("paired tenant {tenant}")), "{out}");
            assert!(out.contains("not connected yet"), "{out}");
            let out = cli(&[
                "connect",
                "--business-id",
                &business,
                "--refresh-token",
                &refresh,
                "--sage-base-url",
                &sim_server.base_url(),
                "--sage-token-url",
                &sim_server.token_url(),
            ]);
            assert!(out.contains("tokens stored encrypted in the PostgreSQL database"), "{out}");
            assert!(!out.contains(&url), "the database URL is not printed: {out}");
        } else {
            store
                .save_connection(&Connection {
                    scope: business.clone(),
                    provider: "sage_accounting".into(),
                    base_url: sim_server.base_url(),
                    token_url: sim_server.token_url(),
                    created_at: SystemClock.now(),
                    tenant_id: None,
                    connections_url: None,
                })
                .await
                .unwrap();
            store.save_tokens(&business, &TokenSet::from_refresh_token(SecretString::from(refresh))).await.unwrap();
            let key = ApiKey::generate().unwrap();
            magento.add_paired_shop(&shop, &tenant, key.expose_secret());
            let binding =
                Binding::new(&tenant, &business, &magento.base_url(&shop), key, policy.clone(), SystemClock.now())
                    .unwrap();
            store.put_binding(&binding).await.unwrap();
        }
        let workload = Workload::generate(&WorkloadConfig {
            seed: 100 + u64::try_from(i).unwrap(),
            events: EVENTS_PER_TENANT,
            customers: 60,
            products: 25,
            ..WorkloadConfig::default()
        });
        // Magento serves each entity as it stands once every event is in (the last snapshot).
        for line in &workload.lines {
            let (segment, id, entity) = entity_of(&serde_json::from_str(line).unwrap());
            magento.put_entity(&shop, segment, id, entity);
        }
        tenants.push((tenant, business, shop, workload));
    }

    // One process accepts the webhooks; three others sync.
    let mut http = serve(&url, dir.path(), "http", &["--listen", "127.0.0.1:0", "--workers", "0"]).spawn().unwrap();
    let mut lines = tokio::io::BufReader::new(http.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(60), lines.next_line()).await.unwrap().unwrap().unwrap();
    let ledger = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("{first}")).to_owned();
    let mut workers = Vec::new();
    for n in 0..WORKER_PROCESSES {
        let args = [
            "--workers-only",
            "--workers",
            "2",
            "--poll-ms",
            "20",
            "--retry-delays",
            "0.2,0.5,1",
            "--max-attempts",
            "50",
        ];
        workers.push(serve(&url, dir.path(), &format!("worker{n}"), &args).spawn().unwrap());
    }

    // Every webhook, signed by its store, in the store's order; the stores post side by side.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let magento = Arc::new(magento);
    let posters = tenants.iter().map(|(_, _, shop, workload)| {
        let (magento, client, ledger, shop) = (Arc::clone(&magento), client.clone(), ledger.clone(), shop.clone());
        let lines = workload.lines.clone();
        tokio::spawn(async move {
            let mut refused = Vec::new();
            for line in lines {
                let v: Value = serde_json::from_str(&line).unwrap();
                let envelope = json!({"magento_entity_id": v["magento_entity_id"], "website_id": v["website_id"],
                                      "store_id": v["store_id"], "occurred_at": v["occurred_at"], "payload": v["payload"]});
                let (status, body) = magento.webhook(&client, &ledger, &shop, v["event"].as_str().unwrap(), &envelope).await;
                if status != 202 {
                    refused.push(format!("{}: {status} {body}", v["idempotency_key"]));
                }
            }
            refused
        })
    });
    let mut posted = 0;
    for p in futures::future::join_all(posters).await {
        let refused = p.unwrap();
        assert!(refused.is_empty(), "webhooks refused: {refused:?}");
    }
    for (_, _, _, w) in &tenants {
        posted += w.lines.len();
    }
    let posted_in = started.elapsed();

    // Wait until every run is terminal and every callback is sent.
    let scopes: Vec<String> = tenants.iter().map(|(_, b, _, _)| b.clone()).collect();
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let row = sqlx::query(
            "SELECT (SELECT count(*) FROM runs WHERE scope = ANY($1) AND status IN ('queued', 'running')) AS open, \
                    (SELECT count(*) FROM callbacks WHERE scope = ANY($1) AND delivered_at IS NULL) AS callbacks",
        )
        .bind(&scopes)
        .fetch_one(store.pool())
        .await
        .unwrap();
        let (open, callbacks): (i64, i64) = (row.get("open"), row.get("callbacks"));
        if open == 0 && callbacks == 0 {
            break;
        }
        if Instant::now() > deadline {
            for n in 0..WORKER_PROCESSES {
                let log = std::fs::read_to_string(dir.path().join(format!("worker{n}.log"))).unwrap_or_default();
                eprintln!("--- worker{n} (last lines)\n{}", log.lines().rev().take(20).collect::<Vec<_>>().join("\n"));
            }
            panic!("timed out: {open} runs still open, {callbacks} callbacks unsent");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let synced_in = started.elapsed();

    // The books: every document exactly once, nothing lost, totals right.
    for (tenant, business, shop, workload) in &tenants {
        let mut report = SoakReport { events: workload.lines.len(), ..SoakReport::default() };
        verify_business(&sim, business, workload, &store, business, &mut report).await.unwrap();
        assert!(report.is_clean(), "{tenant}: {:?}", report.problems);
        assert!(report.expected_documents > 100, "{tenant}: a real stream");
        assert_eq!(report.found_once, report.expected_documents, "{tenant}: every document exactly once");
        assert_eq!((report.duplicates, report.lost, report.wrong_totals), (0, 0, 0), "{tenant}");
        let dead = report.runs.get("dead_lettered").copied().unwrap_or(0);
        assert_eq!(dead, 0, "{tenant}: dead letters {:?}", report.runs);

        // Exactly one terminal callback per run: Magento's callbacks are the runs' outcomes.
        let rows = sqlx::query("SELECT event, magento_entity_id, status, outcome FROM runs WHERE scope = $1")
            .bind(business)
            .fetch_all(store.pool())
            .await
            .unwrap();
        let mut expected: BTreeMap<(String, u64, String), usize> = BTreeMap::new();
        for r in &rows {
            let event: String = r.get("event");
            let id: i64 = r.get("magento_entity_id");
            let outcome: Value = serde_json::from_str(&r.get::<String, _>("outcome")).unwrap();
            let entity_type = event.split('.').next().unwrap().to_owned();
            let status = outcome["sync_status"].as_str().unwrap().to_owned();
            *expected.entry((entity_type, u64::try_from(id).unwrap(), status)).or_default() += 1;
        }
        let mut got: BTreeMap<(String, u64, String), usize> = BTreeMap::new();
        for cb in magento.callbacks(shop) {
            let key = (
                cb["entity_type"].as_str().unwrap().to_owned(),
                cb["magento_entity_id"].as_u64().unwrap(),
                cb["sync_status"].as_str().unwrap().to_owned(),
            );
            *got.entry(key).or_default() += 1;
        }
        assert_eq!(got.values().sum::<usize>(), rows.len(), "{tenant}: one callback per run");
        assert_eq!(got, expected, "{tenant}: the callbacks are the runs' outcomes");
        let refusals = magento.with(shop, |s| s.refusals.clone());
        assert!(refusals.is_empty(), "{tenant}: Magento refused ledger tokens: {refusals:?}");
    }

    // The work was shared: more than one worker process synced runs.
    let mut by_process = Vec::new();
    for n in 0..WORKER_PROCESSES {
        let log = std::fs::read_to_string(dir.path().join(format!("worker{n}.log"))).unwrap_or_default();
        by_process.push(log.matches("run processed").count());
    }
    eprintln!(
        "{posted} webhooks posted in {posted_in:?}, all synced and called back in {synced_in:?}; runs per worker process: \
         {by_process:?}"
    );
    assert!(by_process.iter().filter(|n| **n > 0).count() >= 2, "runs per worker process: {by_process:?}");

    // The replay cache is the database's: a token the webhook process accepted is refused by
    // another process sharing it (here a router in this process).
    let other = byte8_ledger_service::Service::new(
        Arc::new(
            pg::store(&url, 2, Some(MasterKey::from_base64(&SecretString::from(MASTER_KEY.to_owned())).unwrap())).await,
        ),
        Arc::new(byte8_ledger_service::SageProviders::new(Arc::new(store.clone()))),
        Arc::new(SystemClock),
        byte8_ledger_service::ServiceConfig::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_url = format!("http://{}", listener.local_addr().unwrap());
    let app = other.router();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let (tenant, _, shop, _) = &tenants[1];
    let token = magento.webhook_token(shop);
    let envelope = json!({"magento_entity_id": 999_001, "occurred_at": "2026-11-22T10:00:00Z", "payload": {}});
    let key = Some("customer.upserted:999001");
    let first = magento::post(&client, &ledger, tenant, "customer.upserted", &envelope, Some(&token), key).await;
    assert_eq!(first.0, 202, "{:?}", first.1);
    let replay = magento::post(&client, &other_url, tenant, "customer.upserted", &envelope, Some(&token), key).await;
    assert_eq!(replay.0, 401, "{:?}", replay.1);
    assert!(replay.1["message"].as_str().unwrap().contains("jti already seen"), "{:?}", replay.1);
    let fresh = magento.webhook_token(shop);
    let accepted = magento::post(&client, &other_url, tenant, "customer.upserted", &envelope, Some(&fresh), key).await;
    assert_eq!(accepted.0, 202, "the other process accepts a fresh token: {:?}", accepted.1);

    for mut c in workers {
        let _ = c.kill().await;
    }
    let _ = http.kill().await;
    for (tenant, _, _, _) in &tenants {
        store.set_binding_status(tenant, BindingStatus::Revoked, SystemClock.now()).await.unwrap();
    }
}
