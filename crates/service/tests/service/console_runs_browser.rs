//! The sync-runs pages in a real browser (Chromium over WebDriver, `browser.rs`'s harness): a
//! paired store (the wiremock Magento of `support/magento.rs`) sends webhooks to the service,
//! whose workers post to the Sage simulator; Sage refuses the first invoice (403), which is
//! dead-lettered. An operator logs in, filters the runs table, opens the failed run, reads its
//! attempt (the request Sage was sent and its refusal), retries it and sees it synced.
//! Screenshots of each page go to `target/browser-screenshots/console_runs/`.

use std::{sync::Arc, time::Duration};

use byte8_ledger_core::{
    auth::TokenSet,
    clock::{Clock, SystemClock},
    engine::EngineConfig,
    http::{RateConfig, RetryConfig},
    policy::SyncPolicy,
    store::{
        Connection, ConnectionStore, ConnectionStoreDyn, RunStatus, RunStore, crypto::MasterKey, sqlite::SqliteStore,
    },
};
use byte8_ledger_service::store::{ApiKey, Binding, BindingStore};
use byte8_ledger_service::{
    HttpLimits, SageProviders, Service, ServiceConfig, StoredProviders,
    console::{Console, ConsoleConfig, ConsoleStore, password::hash_password},
};
use byte8_ledger_simulators::{DEMO_REFRESH_TOKEN, Fault, SageSimulator, SimConfig};
use secrecy::SecretString;
use serde_json::{Value, json};

use crate::{
    browser::Browser,
    console::{OPERATOR, PASSWORD},
    support_magento::FakeMagento,
};

const BUSINESS: &str = "demo-business";
const SHOP: &str = "shop";
const TENANT: &str = "shop-tenant-1";

fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 1,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        retry_timeout: Duration::from_secs(10),
    }
}

/// The sample event of `key`: (event name, webhook envelope, canonical entity).
fn sample(key: &str) -> (String, Value, Value) {
    for line in include_str!("../../../../samples/events.jsonl").lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        if v["idempotency_key"] == key {
            let envelope = json!({
                "magento_entity_id": v["magento_entity_id"], "website_id": v["website_id"],
                "store_id": v["store_id"], "occurred_at": v["occurred_at"], "payload": v["payload"],
            });
            return (v["event"].as_str().unwrap().to_owned(), envelope, v["entity"].clone());
        }
    }
    panic!("no sample {key}")
}

/// Waits (up to 30 s) until the run of `key` has `status`; its id.
async fn wait_for_run(store: &SqliteStore, key: &str, status: RunStatus) -> i64 {
    for _ in 0..1500 {
        if let Some(run) = store.find_by_key(BUSINESS, key).await.unwrap()
            && run.status == status
        {
            return run.id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the run of {key} never became {status:?}");
}

#[tokio::test]
async fn an_operator_finds_a_failed_run_reads_its_attempt_retries_it_and_sees_it_synced() {
    let Some(browser) = Browser::start("console_runs").await else { return };
    // The ledger: the Sage simulator, connected.
    let sim = SageSimulator::demo(SimConfig::default());
    let sim_server = sim.serve().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("state.db"), Some(MasterKey::generate())).await.unwrap());
    store
        .save_connection(&Connection {
            scope: BUSINESS.into(),
            provider: "sage_accounting".into(),
            base_url: sim_server.base_url(),
            token_url: sim_server.token_url(),
            created_at: SystemClock.now(),
            tenant_id: None,
            connections_url: None,
        })
        .await
        .unwrap();
    store
        .save_tokens(BUSINESS, &TokenSet::from_refresh_token(SecretString::from(DEMO_REFRESH_TOKEN.to_owned())))
        .await
        .unwrap();
    // The store: paired, serving the sample invoices.
    let magento = FakeMagento::start().await;
    let key = ApiKey::generate().unwrap();
    magento.add_paired_shop(SHOP, TENANT, key.expose_secret());
    let policy = SyncPolicy::from_json(include_str!("../../../../samples/policy.json")).unwrap();
    store
        .put_binding(&Binding::new(TENANT, BUSINESS, &magento.base_url(SHOP), key, policy, SystemClock.now()).unwrap())
        .await
        .unwrap();
    for k in ["invoice.created:1001", "invoice.created:1002"] {
        let (_, envelope, entity) = sample(k);
        magento.put_entity(SHOP, "invoice", envelope["magento_entity_id"].as_u64().unwrap(), entity);
    }
    // The service with its console and a worker.
    let connections = Arc::clone(&store) as Arc<dyn ConnectionStoreDyn>;
    let providers =
        StoredProviders::new(Arc::clone(&connections)).with_sage(SageProviders::new(connections).with_builder(|b| {
            b.with_client_id("demo-client")
                .with_client_secret(SecretString::from("demo-secret".to_owned()))
                .with_retry(fast_retry())
                .with_rate(RateConfig { requests_per_minute: 0, burst: 0 })
        }));
    let config = ServiceConfig {
        poll_interval: Duration::from_millis(20),
        magento_retry: fast_retry(),
        engine: EngineConfig { retry_ladder: vec![Duration::from_millis(200)], ..EngineConfig::default() },
        ..ServiceConfig::default()
    };
    let service = Service::new(Arc::clone(&store) as _, Arc::new(providers), Arc::new(SystemClock), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let console = Console::new(
        &service,
        Arc::clone(&store) as Arc<dyn ConsoleStore>,
        ConsoleConfig::new(url::Url::parse(&format!("{base}/")).unwrap()),
        &MasterKey::generate(),
    );
    let hash = hash_password(&SecretString::from(PASSWORD.to_owned())).unwrap();
    console.store().put_operator(OPERATOR, &hash, SystemClock.now()).await.unwrap();
    let app = service.router().merge(console.router());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(byte8_ledger_service::serve(listener, app, HttpLimits::default(), async {
        let _ = stopped.await;
    }));
    let workers = service.spawn_workers(1);

    // Sage refuses the first invoice it is sent: that run is dead-lettered; the next one syncs.
    sim.script(Some("POST /sales_invoices"), Fault::AccessDenied);
    let http = reqwest::Client::new();
    let (event, envelope, _) = sample("invoice.created:1001");
    assert_eq!(magento.webhook(&http, &base, SHOP, &event, &envelope).await.0, 202);
    let failed = wait_for_run(&store, "invoice.created:1001", RunStatus::DeadLettered).await;
    let (event, envelope, _) = sample("invoice.created:1002");
    assert_eq!(magento.webhook(&http, &base, SHOP, &event, &envelope).await.0, 202);
    wait_for_run(&store, "invoice.created:1002", RunStatus::Synced).await;

    // Log in.
    browser.goto(&format!("{base}/console/login")).await;
    browser.fill("#name", OPERATOR).await;
    browser.fill("#password", PASSWORD).await;
    browser.click("form.stack button[type=submit]").await;
    browser.wait_path("/console").await;
    // The runs table: both runs, the failed one with its Retry.
    browser.click("nav.main a[href='/console/runs']").await;
    browser.wait_path("/console/runs").await;
    assert_eq!(browser.text("h1").await, "Sync runs");
    assert_eq!(browser.text("#runs-count").await, "Runs 1–2 of 2");
    assert!(browser.has(&format!("tr[data-run='{failed}'][data-status=dead_lettered] form button")).await);
    browser.shot("runs").await;
    // Filtered on the dead letters, by keyboard-reachable labelled fields.
    browser.select("#field-status", "dead_lettered").await;
    browser.fill("#field-q", "000000101").await;
    browser.click("form.filters button[type=submit]").await;
    browser.wait_path("/console/runs").await;
    assert_eq!(browser.text("#runs-count").await, "Runs 1–1 of 1");
    assert!(browser.url().await.query().unwrap_or_default().contains("status=dead_lettered"));
    browser.shot("runs-dead-lettered").await;
    // The failed run: its attempt, with the request Sage was sent and Sage's refusal.
    browser.click(&format!("tr[data-run='{failed}'] td a")).await;
    browser.wait_path(&format!("/console/runs/{failed}")).await;
    assert_eq!(browser.text("#run-status").await, "dead-lettered");
    let refused = "#attempt-1 ol.exchanges > li:last-child details";
    let summary = browser.text(&format!("{refused} summary")).await;
    assert!(summary.contains("/sales_invoices → 403") && summary.starts_with("POST "), "{summary}");
    browser.click(&format!("{refused} summary")).await;
    let opened = browser.text(refused).await;
    assert!(opened.contains("MultiUserAccessDenied"), "Sage's refusal: {opened}");
    assert!(opened.contains("MAG-000000101"), "the invoice Sage was sent: {opened}");
    assert!(!browser.source().await.contains("sim-access-"), "no token on the page");
    browser.shot("failed-run-attempt").await;
    // Retry: back in line, then synced by the worker.
    browser.click(&format!("form[action='/console/runs/{failed}/retry'] button")).await;
    browser.wait_path(&format!("/console/runs/{failed}")).await;
    assert!(browser.text("[role=status]").await.contains("back in line"));
    wait_for_run(&store, "invoice.created:1001", RunStatus::Synced).await;
    browser.goto(&format!("{base}/console/runs/{failed}")).await;
    assert_eq!(browser.text("#run-status").await, "synced");
    assert!(browser.text("#run-ledger").await.contains("SI-"), "the ledger's number");
    assert!(browser.has("#attempt-2").await, "both attempts kept");
    browser.shot("retried-run-synced").await;
    assert!(browser.shots_dir().join("04-retried-run-synced.png").exists());
    assert_eq!(sim.business(BUSINESS).unwrap().invoices.len(), 2, "each invoice posted once");
    browser.close().await;
    workers.stop().await;
    let _ = stop.send(());
}
