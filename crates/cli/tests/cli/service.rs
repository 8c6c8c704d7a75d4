//! The ledger service end to end, one process on SQLite: a fake Magento running the Byte8 module
//! (`support/magento.rs`: wiremock, checking every ledger token with the module's rules, serving
//! canonical entities and receiving sync-state callbacks), the Sage simulator as the ledger, and
//! the service's router served over real HTTP with its workers, driven by webhooks signed with the
//! outbound subkey, as a store's outbox sends them. Pairing and serving also go through the
//! `byte8-ledger` binary.

use crate::support_magento as magento;

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, OnceLock},
    time::Duration,
};

use byte8_ledger_core::{
    auth::TokenSet,
    clock::{Clock, ManualClock, SystemClock},
    engine::EngineConfig,
    http::{RateConfig, RetryConfig},
    policy::SyncPolicy,
    providers::xero::XeroLimits,
    store::{
        Connection, ConnectionStore, ConnectionStoreDyn, RunStatus, RunStore, XrefKind, XrefStore, crypto::MasterKey,
        sqlite::SqliteStore,
    },
};
use byte8_ledger_service::store::{Binding, BindingStatus, BindingStore, DispatchStore};
use byte8_ledger_service::{
    SageProviders, Service, ServiceConfig, StoredProviders, WorkerPool, XeroProviders,
    magento::{ApiKey, Claims, ConnectionStatus, jwt},
};
use byte8_ledger_simulators::{
    DEMO_REFRESH_TOKEN, SageSimulator, SimConfig, SimServer,
    xero::{XERO_DEMO_REFRESH_TOKEN, XERO_DEMO_TENANT, XeroSimConfig, XeroSimulator},
};
use chrono::{DateTime, Utc};
use magento::FakeMagento;
use secrecy::SecretString;
use serde_json::{Value, json};

const BUSINESS: &str = "demo-business";

// ---------------------------------------------------------------------------------------------
// Logs: every test's logs go to one buffer, which the secrecy test searches.

#[derive(Clone)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static LogBuffer {
    static LOGS: OnceLock<LogBuffer> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = LogBuffer(Arc::new(Mutex::new(Vec::new())));
        let writer = buf.clone();
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new("trace"))
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    })
}

fn logged() -> String {
    String::from_utf8_lossy(&logs().0.lock().unwrap()).into_owned()
}

// ---------------------------------------------------------------------------------------------
// The world

fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 1,
        initial_backoff: Duration::from_millis(10),
        max_backoff: Duration::from_millis(20),
        retry_timeout: Duration::from_secs(10),
    }
}

fn fast_config() -> ServiceConfig {
    ServiceConfig {
        poll_interval: Duration::from_millis(20),
        callback_lease: Duration::from_secs(5),
        callback_backoff: vec![Duration::from_millis(100), Duration::from_millis(200)],
        probe_interval: Duration::from_millis(100),
        magento_retry: fast_retry(),
        engine: EngineConfig {
            retry_ladder: vec![Duration::from_millis(200)],
            lease: Duration::from_secs(30),
            ..EngineConfig::default()
        },
        ..ServiceConfig::default()
    }
}

/// [`fast_config`] with the periodic look for work (and the revoked tokens' probe) an hour away:
/// only an announcement or a turn of the process itself can start a turn in a test's time.
fn without_looks() -> ServiceConfig {
    let hour = Duration::from_secs(3600);
    ServiceConfig { poll_interval: hour, probe_interval: hour, ..fast_config() }
}

fn master_key_text() -> String {
    use base64::Engine as _;
    let mut bytes = [0u8; 32];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = u8::try_from(i).unwrap().wrapping_mul(37).wrapping_add(11);
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn master_key() -> MasterKey {
    MasterKey::from_base64(&SecretString::from(master_key_text())).unwrap()
}

fn policy_path() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("samples/policy.json")
}

fn policy() -> SyncPolicy {
    SyncPolicy::from_json(&std::fs::read_to_string(policy_path()).unwrap()).unwrap()
}

fn segment(event: &str) -> &'static str {
    match event {
        "invoice.created" => "invoice",
        "invoice.paid" => "payment",
        "creditmemo.created" => "creditmemo",
        "customer.upserted" => "customer",
        _ => "product",
    }
}

/// The shop serves every sample entity.
fn serve_samples(magento: &FakeMagento, shop: &str) {
    for (event, envelope, entity) in crate::support_magento::sample_events().values() {
        magento.put_entity(shop, segment(event), envelope["magento_entity_id"].as_u64().unwrap(), entity.clone());
    }
}

fn envelope(key: &str) -> (String, Value) {
    let s = crate::support_magento::sample_events();
    let (event, envelope, _) = s.get(key).unwrap_or_else(|| panic!("no sample {key}"));
    (event.clone(), envelope.clone())
}

struct World {
    dir: tempfile::TempDir,
    sim: SageSimulator,
    _sim_server: SimServer,
    magento: FakeMagento,
    store: Arc<SqliteStore>,
    http: reqwest::Client,
    ledger: Option<Ledger>,
}

/// The service: its HTTP server and workers.
struct Ledger {
    service: Service,
    url: String,
    server: tokio::task::JoinHandle<()>,
    workers: Option<WorkerPool>,
}

impl Ledger {
    async fn stop(mut self) {
        if let Some(w) = self.workers.take() {
            w.stop().await;
        }
        self.server.abort();
    }
}

impl World {
    async fn new() -> Self {
        logs();
        let sim = SageSimulator::demo(SimConfig::default());
        let sim_server = sim.serve().await.unwrap();
        let magento = FakeMagento::start().await;
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("state.db"), Some(master_key())).await.unwrap());
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
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Self { dir, sim, _sim_server: sim_server, magento, store, http, ledger: None }
    }

    fn db_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// Connects the Xero simulator's demo organisation (its refresh token stored) and pairs shop
    /// `xero-shop` as tenant `tenant-on-xero` to it, with the Xero sample policy.
    async fn connect_xero_shop(&self, xero_server: &byte8_ledger_simulators::xero::XeroServer) {
        self.store
            .save_connection(&Connection {
                scope: XERO_DEMO_TENANT.into(),
                provider: "xero".into(),
                base_url: xero_server.base_url(),
                token_url: xero_server.token_url(),
                created_at: SystemClock.now(),
                tenant_id: Some(XERO_DEMO_TENANT.into()),
                connections_url: Some(xero_server.connections_url()),
            })
            .await
            .unwrap();
        self.store
            .save_tokens(
                XERO_DEMO_TENANT,
                &TokenSet::from_refresh_token(SecretString::from(XERO_DEMO_REFRESH_TOKEN.to_owned())),
            )
            .await
            .unwrap();
        let key = ApiKey::generate().unwrap();
        self.magento.add_paired_shop("xero-shop", "tenant-on-xero", key.expose_secret());
        let xero_policy = SyncPolicy::from_json(include_str!("../../../../samples/policy.xero.json")).unwrap();
        let b = Binding::new(
            "tenant-on-xero",
            XERO_DEMO_TENANT,
            &self.magento.base_url("xero-shop"),
            key,
            xero_policy,
            SystemClock.now(),
        )
        .unwrap();
        self.store.put_binding(&b).await.unwrap();
    }

    /// Pairs shop `shop` as `tenant` in the store and in the fake (what `tenant pair` does).
    async fn pair(&self, shop: &str, tenant: &str) -> String {
        self.pair_on(shop, tenant, BUSINESS).await
    }

    /// Pairs shop `shop` as `tenant` on ledger business `business`.
    async fn pair_on(&self, shop: &str, tenant: &str, business: &str) -> String {
        let key = ApiKey::generate().unwrap();
        self.magento.add_paired_shop(shop, tenant, key.expose_secret());
        let b = Binding::new(tenant, business, &self.magento.base_url(shop), key.clone(), policy(), SystemClock.now())
            .unwrap();
        self.store.put_binding(&b).await.unwrap();
        serve_samples(&self.magento, shop);
        key.expose_secret().to_owned()
    }

    async fn start(&mut self, workers: usize) -> String {
        self.start_on(Arc::new(SystemClock), workers).await
    }

    async fn start_on(&mut self, clock: Arc<dyn Clock>, workers: usize) -> String {
        self.start_with(clock, workers, fast_config()).await
    }

    async fn start_with(&mut self, clock: Arc<dyn Clock>, workers: usize, config: ServiceConfig) -> String {
        let connections = Arc::clone(&self.store) as Arc<dyn ConnectionStoreDyn>;
        // Each business's provider as its stored connection says (Sage here, Xero for one test).
        let providers = StoredProviders::new(Arc::clone(&connections))
            .with_sage(SageProviders::new(Arc::clone(&connections)).with_builder(|b| {
                b.with_client_id("demo-client")
                    .with_client_secret(SecretString::from("demo-secret".to_owned()))
                    .with_retry(fast_retry())
                    .with_rate(RateConfig { requests_per_minute: 0, burst: 0 })
            }))
            .with_xero(XeroProviders::new(connections).with_builder(|b| {
                b.with_client_id("demo-client")
                    .with_client_secret(SecretString::from("demo-secret".to_owned()))
                    .with_retry(fast_retry())
                    .with_limits(XeroLimits::unlimited())
            }));
        let service = Service::new(Arc::clone(&self.store) as _, Arc::new(providers), clock, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = service.router();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        let workers = (workers > 0).then(|| service.spawn_workers(workers));
        self.ledger = Some(Ledger { service, url: url.clone(), server, workers });
        url
    }

    async fn stop(&mut self) {
        if let Some(l) = self.ledger.take() {
            l.stop().await;
        }
    }

    fn url(&self) -> String {
        self.ledger.as_ref().expect("started").url.clone()
    }

    async fn webhook(&self, shop: &str, key: &str) -> (u16, Value) {
        let (event, envelope) = envelope(key);
        self.magento.webhook(&self.http, &self.url(), shop, &event, &envelope).await
    }

    async fn v1(&self, method: reqwest::Method, path: &str, shop: &str) -> (u16, Value) {
        self.magento.v1(&self.http, method, &format!("{}{path}", self.url()), shop).await
    }

    fn sage_invoices(&self) -> Vec<(String, String)> {
        self.sim.business(BUSINESS).unwrap().invoices.iter().map(|d| (d.reference.clone(), d.id.clone())).collect()
    }
}

async fn wait_until<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_for_status(store: &SqliteStore, tenant: &str, want: ConnectionStatus) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = store.binding(tenant).await.unwrap().unwrap().magento_status;
        if now == want {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "timed out waiting for {want}, still {now}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn bin() -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_byte8-ledger"));
    c.env_remove("SAGE_CLIENT_ID")
        .env_remove("SAGE_CLIENT_SECRET")
        .env_remove("BYTE8_PAIRING_CODE")
        .env_remove("BYTE8_LEDGER_BASE_URL")
        .env("LEDGER_MASTER_KEY", master_key_text())
        .env("RUST_LOG", "trace");
    c
}

fn is_protocol_time(t: &str) -> bool {
    t.len() == 20 && t.ends_with('Z') && DateTime::parse_from_rfc3339(t).is_ok()
}

// ---------------------------------------------------------------------------------------------
// The happy path

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paired_store_s_signed_invoice_reaches_sage_and_its_sync_state_returns_to_magento() {
    let mut w = World::new().await;
    let started = SystemClock.now();
    // Pairing through the command: a wrong code first, then the one the merchant generated.
    w.magento.add_shop("shop", "8f14e45fceea167a5a36dedd4bea2543");
    let pair = |code: &str| {
        bin()
            .args(["tenant", "pair", "--state"])
            .arg(w.db_path())
            .args(["--magento-base-url", &w.magento.base_url("shop"), "--pairing-code", code])
            .args(["--business-id", BUSINESS, "--policy"])
            .arg(policy_path())
            .args(["--ledger-base-url", "https://ledger.example.com/"])
            .output()
            .unwrap()
    };
    let wrong = pair("00000000000000000000000000000000");
    assert_eq!(wrong.status.code(), Some(1), "{}", String::from_utf8_lossy(&wrong.stderr));
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("invalid or expired pairing code"));
    assert!(w.store.bindings().await.unwrap().is_empty(), "a refused pairing stores nothing");
    let paired = pair("8f14e45fceea167a5a36dedd4bea2543");
    let (stdout, stderr) = (String::from_utf8_lossy(&paired.stdout), String::from_utf8_lossy(&paired.stderr));
    assert!(paired.status.success(), "{stdout}{stderr}");
    let tenant = w.magento.tenant("shop");
    assert!(stdout.contains(&format!("paired tenant {tenant} with business {BUSINESS}")), "{stdout}");
    assert!(stdout.contains(&format!("https://ledger.example.com/webhooks/magento/{tenant}/")), "{stdout}");
    let api_key = w.magento.with("shop", |s| s.api_key.clone()).unwrap();
    assert_eq!(api_key.len(), 64, "256 bits as hex");
    assert_eq!(w.magento.with("shop", |s| s.ledger_base_url.clone()).as_deref(), Some("https://ledger.example.com"));
    for secret in [api_key.as_str(), "8f14e45fceea167a5a36dedd4bea2543"] {
        assert!(!stdout.contains(secret) && !stderr.contains(secret), "the command printed a secret");
    }
    let listed = bin().args(["tenant", "list", "--state"]).arg(w.db_path()).output().unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout).into_owned();
    assert!(listed.contains(&tenant) && listed.contains("active"), "{listed}");
    assert!(!listed.contains(&api_key));
    let stored = w.store.binding(&tenant).await.unwrap().unwrap();
    assert_eq!(stored.api_key.expose_secret(), api_key, "Magento and the ledger hold the same key");
    // A second store on the same business is refused before Magento is called (their
    // cross-references would mix).
    w.magento.add_shop("shop2", "c9f0f895fb98ab9159f51fd0297e236d");
    let second = bin()
        .args(["tenant", "pair", "--state"])
        .arg(w.db_path())
        .args([
            "--magento-base-url",
            &w.magento.base_url("shop2"),
            "--pairing-code",
            "c9f0f895fb98ab9159f51fd0297e236d",
        ])
        .args(["--business-id", BUSINESS, "--policy"])
        .arg(policy_path())
        .args(["--ledger-base-url", "https://ledger.example.com"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{err}");
    assert!(err.contains(&format!("business {BUSINESS} is already bound to tenant {tenant}")), "{err}");
    assert!(w.magento.with("shop2", |s| s.pairing_code.is_some()), "the code was not spent");
    serve_samples(&w.magento, "shop");

    w.start(2).await;
    let (status, body) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 202, "{body}");
    let run_id = body["sync_run_id"].as_i64().expect("a sync_run_id");
    assert_eq!(body, json!({"sync_run_id": run_id}));
    wait_until("the invoice's sync state reaches Magento", || w.magento.callbacks("shop").len() == 1).await;

    let invoices = w.sage_invoices();
    assert_eq!(invoices.len(), 1, "{invoices:?}");
    let (reference, sage_id) = &invoices[0];
    assert_eq!(reference, "MAG-000000101");
    // The callback is exactly byte8-spec.md 12.6's body, fields in its order.
    let raw = w.magento.with("shop", |s| s.callbacks[0].clone());
    let t = serde_json::from_str::<Value>(&raw).unwrap()["last_sync_at"].as_str().unwrap().to_owned();
    assert!(is_protocol_time(&t), "{t}");
    let at = DateTime::parse_from_rfc3339(&t).unwrap().with_timezone(&Utc);
    assert!(at >= started - chrono::Duration::seconds(1) && at <= SystemClock.now(), "{t}");
    assert_eq!(
        raw,
        format!(
            r#"{{"entity_type":"invoice","magento_entity_id":1001,"provider":"sage_accounting","sync_status":"synced","provider_entity_id":"{sage_id}","provider_reference":null,"skip_reason":null,"error_code":null,"last_sync_at":"{t}"}}"#
        )
    );
    assert_eq!(w.magento.with("shop", |s| s.fetches.get("invoice").copied()), Some(1), "the worker fetched it");
    let refusals = w.magento.with("shop", |s| s.refusals.clone());
    assert!(refusals.is_empty(), "Magento refused a ledger token: {refusals:?}");

    // The payment, then the same invoice delivered again: one invoice, the same run.
    let (status, _) = w.webhook("shop", "invoice.paid:1001").await;
    assert_eq!(status, 202);
    wait_until("the payment's sync state", || w.magento.callbacks("shop").len() == 2).await;
    let (status, again) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!((status, again["sync_run_id"].as_i64()), (202, Some(run_id)), "a repeated delivery is the same run");
    let callbacks = w.magento.callbacks("shop");
    assert_eq!(callbacks[1]["sync_status"], "synced");
    assert_eq!(callbacks[1]["entity_type"], "invoice");
    assert_eq!(w.sim.business(BUSINESS).unwrap().payments.len(), 1);
    assert_eq!(w.sage_invoices().len(), 1, "nothing posted twice");

    // A skip is a terminal outcome too: the zero-value invoice.
    let (status, _) = w.webhook("shop", "invoice.created:1005").await;
    assert_eq!(status, 202);
    wait_until("the skip's sync state", || w.magento.callbacks("shop").len() == 3).await;
    let skip = &w.magento.callbacks("shop")[2];
    assert_eq!(
        (skip["sync_status"].as_str(), skip["skip_reason"].as_str()),
        (Some("skipped"), Some("zero_value_invoice"))
    );
    assert_eq!(skip["magento_entity_id"], 1005);

    // What the Magento admin asks.
    let (status, body) = w.v1(reqwest::Method::GET, "/v1/status?entity_type=invoice&entity_id=1001", "shop").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["sync_status"], "synced");
    let events: Vec<_> = body["runs"].as_array().unwrap().iter().map(|r| r["event"].as_str().unwrap()).collect();
    assert_eq!(events, ["invoice.created", "invoice.paid"]);
    assert_eq!(body["runs"][0]["provider_entity_id"].as_str(), Some(sage_id.as_str()));
    assert_eq!(body["runs"][0]["sync_run_id"].as_i64(), Some(run_id));
    let (status, body) = w.v1(reqwest::Method::GET, "/v1/status?entity_type=creditmemo&entity_id=3001", "shop").await;
    assert_eq!((status, &body["sync_status"], body["runs"].as_array().map(Vec::len)), (200, &Value::Null, Some(0)));
    for bad in ["/v1/status?entity_type=order&entity_id=1", "/v1/status?entity_type=invoice&entity_id=0", "/v1/status"]
    {
        let (status, body) = w.v1(reqwest::Method::GET, bad, "shop").await;
        assert_eq!(status, 400, "{bad}: {body}");
    }
    let (status, health) = w.v1(reqwest::Method::GET, "/v1/tile/health", "shop").await;
    assert_eq!(status, 200, "{health}");
    let last = health["sync"]["last_run_at"].as_str().unwrap().to_owned();
    assert!(is_protocol_time(&last), "{last}");
    // The module's fields (byte8-spec.md 11.7) as they were, and this service's additions: the
    // ledger connection's refresh token (Sage said 31 days moments ago: 30 whole days left).
    let expires = health["binding"]["refresh_token_expires_at"].as_str().unwrap().to_owned();
    assert!(is_protocol_time(&expires), "{expires}");
    assert_eq!(
        health,
        json!({"tenant": {"magento_connection_status": "active"},
               "binding": {"status": "active", "region": "GB", "ledger_connected": true,
                           "refresh_token_days_left": 30, "refresh_token_expires_at": expires},
               "sync": {"pending_count": 0, "failed_24h": 0, "last_run_at": last}})
    );
    assert_eq!(w.ledger.as_ref().unwrap().service.pending_callbacks(BUSINESS).await.unwrap(), 0);
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn independent_fixture_tokens_are_accepted_and_their_forgeries_refused() {
    let v: Value = serde_json::from_str(include_str!("../../../../tests/fixtures/jwt/vectors.json")).unwrap();
    let mut w = World::new().await;
    let tenant = v["tenant_id"].as_str().unwrap();
    let key = ApiKey::new(v["api_key"].as_str().unwrap()).unwrap();
    let b = Binding::new(tenant, BUSINESS, &w.magento.base_url("shop"), key, policy(), SystemClock.now()).unwrap();
    w.store.put_binding(&b).await.unwrap();
    // The service's clock at the vectors' `now`; no workers (nothing to sync here).
    let clock = Arc::new(ManualClock::new(DateTime::from_timestamp(v["now"].as_i64().unwrap(), 0).unwrap()));
    let url = w.start_on(clock, 0).await;
    let mut accepted = Vec::new();
    for (i, case) in v["webhooks"].as_array().unwrap().iter().enumerate() {
        let name = case["name"].as_str().unwrap();
        let id = 5000 + i;
        let envelope = json!({"magento_entity_id": id, "website_id": 1, "store_id": 1,
                              "occurred_at": "2026-11-18T11:06:00Z", "payload": {"increment_id": "X", "paid": false}});
        let key = format!("invoice.created:{id}");
        let (status, body) =
            magento::post(&w.http, &url, tenant, "invoice.created", &envelope, case["token"].as_str(), Some(&key))
                .await;
        match case["expect"].as_str().unwrap() {
            "ok" => {
                assert_eq!(status, 202, "{name}: {body}");
                accepted.push(key.clone());
            }
            expect => {
                assert_eq!(status, 401, "{name}: {body}");
                assert_eq!(body["error"], "unauthorized", "{name}");
                let message = body["message"].as_str().unwrap();
                assert!(message.contains(expect), "{name}: `{message}` lacks `{expect}`");
                assert!(!message.contains(case["token"].as_str().unwrap()), "{name}: the token is echoed");
            }
        }
        let queued = w.store.find_by_key(BUSINESS, &key).await.unwrap().is_some();
        assert_eq!(queued, case["expect"] == "ok", "{name}: queued only when accepted");
    }
    assert_eq!(accepted.len(), 2);
    // The valid token once more: a replay.
    let valid = v["webhooks"][0]["token"].as_str().unwrap();
    let envelope = json!({"magento_entity_id": 6000, "occurred_at": "2026-11-18T11:06:00Z", "payload": {}});
    let (status, body) =
        magento::post(&w.http, &url, tenant, "invoice.created", &envelope, Some(valid), Some("invoice.created:6000"))
            .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("replay"), "{body}");
    assert!(w.store.find_by_key(BUSINESS, "invoice.created:6000").await.unwrap().is_none());
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Refusals

fn token_with(key: &ApiKey, f: impl FnOnce(&mut Claims)) -> String {
    let now = SystemClock.now().timestamp();
    let mut c = Claims {
        iss: "magento".into(),
        sub: String::new(),
        aud: "byte8-ledger".into(),
        iat: now,
        nbf: now,
        exp: now + 60,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    f(&mut c);
    jwt::sign(&key.derive().outbound, &c).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_expired_replayed_and_revoked_webhooks_get_401_and_malformed_ones_4xx_and_nothing_is_queued() {
    let mut w = World::new().await;
    let key_a = ApiKey::new(w.pair("a", "tenant-a").await).unwrap();
    // On another business: one active tenant per business.
    let key_b = ApiKey::new(w.pair_on("b", "tenant-b", "other-business").await).unwrap();
    w.store.set_binding_status("tenant-b", BindingStatus::Revoked, SystemClock.now()).await.unwrap();
    let url = w.start(0).await;
    let http = w.http.clone();
    let (_, env) = envelope("invoice.created:1001");
    let key = Some("invoice.created:1001");
    let sub = |t: &str| {
        let t = t.to_owned();
        move |c: &mut Claims| c.sub = t
    };
    let now = SystemClock.now().timestamp();
    let refused: Vec<(&str, &str, Option<String>, &str)> = vec![
        ("no token", "tenant-a", None, "no Authorization header"),
        ("not a bearer", "tenant-a", Some("Basic YTpi".into()), "not `Bearer <token>`"),
        ("garbage", "tenant-a", Some("Bearer not.a.jwt".into()), "webhook JWT refused"),
        (
            "signed with the inbound subkey",
            "tenant-a",
            Some(format!("Bearer {}", jwt::sign(&key_a.derive().inbound, &claims_for("tenant-a")).unwrap())),
            "signature mismatch",
        ),
        (
            "signed with another tenant's key",
            "tenant-a",
            Some(format!("Bearer {}", token_with(&key_b, sub("tenant-a")))),
            "signature mismatch",
        ),
        (
            "expired",
            "tenant-a",
            Some(format!(
                "Bearer {}",
                token_with(&key_a, |c| {
                    c.sub = "tenant-a".into();
                    c.iat = now - 120;
                    c.nbf = now - 120;
                    c.exp = now - 60;
                })
            )),
            "expired",
        ),
        (
            "living too long",
            "tenant-a",
            Some(format!(
                "Bearer {}",
                token_with(&key_a, |c| {
                    c.sub = "tenant-a".into();
                    c.exp = now + 600;
                })
            )),
            "60 s ceiling",
        ),
        (
            "another tenant's token",
            "tenant-a",
            Some(format!("Bearer {}", token_with(&key_b, sub("tenant-b")))),
            "signature mismatch",
        ),
        (
            "its own token on another tenant's URL",
            "tenant-a",
            Some(format!("Bearer {}", token_with(&key_a, sub("tenant-x")))),
            "sub is not the tenant id",
        ),
        (
            "unknown tenant",
            "tenant-zz",
            Some(format!("Bearer {}", token_with(&key_a, sub("tenant-zz")))),
            "unknown or disconnected tenant",
        ),
        (
            "revoked binding",
            "tenant-b",
            Some(format!("Bearer {}", token_with(&key_b, sub("tenant-b")))),
            "unknown or disconnected tenant",
        ),
    ];
    for (name, tenant, auth, expect) in refused {
        let mut req = http.post(format!("{url}/webhooks/magento/{tenant}/invoice.created")).json(&env);
        if let Some(a) = &auth {
            req = req.header("Authorization", a);
        }
        let resp = req.header("Idempotency-Key", "invoice.created:1001").send().await.unwrap();
        let status = resp.status().as_u16();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 401, "{name}: {body}");
        let message = body["message"].as_str().unwrap();
        assert!(message.contains(expect), "{name}: `{message}`");
        if let Some(a) = &auth {
            assert!(!message.contains(a.trim_start_matches("Bearer ")), "{name}: the token is echoed");
        }
    }
    // Replayed: the first use is accepted, the second refused.
    let token = token_with(&key_a, sub("tenant-a"));
    let (_, upsert) = envelope("customer.upserted:5");
    let first =
        magento::post(&http, &url, "tenant-a", "customer.upserted", &upsert, Some(&token), Some("customer.upserted:5"))
            .await;
    assert_eq!(first.0, 202, "{:?}", first.1);
    let replay = magento::post(&http, &url, "tenant-a", "invoice.created", &env, Some(&token), key).await;
    assert_eq!(replay.0, 401, "{:?}", replay.1);
    assert!(replay.1["message"].as_str().unwrap().contains("jti already seen"), "{:?}", replay.1);
    // A token spent on a request refused after it verified (an unknown event) is spent too: the
    // jti is recorded without a run, and the same token with a good request is a replay.
    let token = token_with(&key_a, sub("tenant-a"));
    let unknown = magento::post(&http, &url, "tenant-a", "order.shipped", &env, Some(&token), key).await;
    assert_eq!(unknown.0, 422, "{:?}", unknown.1);
    let reused = magento::post(&http, &url, "tenant-a", "invoice.created", &env, Some(&token), key).await;
    assert_eq!(reused.0, 401, "a refused request's token is spent: {:?}", reused.1);
    assert!(reused.1["message"].as_str().unwrap().contains("jti already seen"), "{:?}", reused.1);

    // Malformed, with good tokens: 400 or 422 naming the problem, never 5xx.
    let good = || Some(token_with(&key_a, sub("tenant-a")));
    let with = |f: &dyn Fn(&mut Value)| {
        let mut e = env.clone();
        f(&mut e);
        e
    };
    // (what, event, body, Idempotency-Key, status, what the message names)
    type Case<'a> = (&'a str, &'a str, Vec<u8>, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case<'_>> = vec![
        ("not JSON", "invoice.created", b"{not json".to_vec(), key, 400, "not JSON"),
        ("not an object", "invoice.created", b"[1,2]".to_vec(), key, 400, "JSON object"),
        (
            "unknown event",
            "order.shipped",
            env.to_string().into_bytes(),
            Some("order.shipped:1001"),
            422,
            "unknown event `order.shipped`",
        ),
        (
            "no entity id",
            "invoice.created",
            with(&|e| _ = e.as_object_mut().unwrap().remove("magento_entity_id")).to_string().into_bytes(),
            None,
            422,
            "magento_entity_id",
        ),
        (
            "entity id 0",
            "invoice.created",
            with(&|e| e["magento_entity_id"] = json!(0)).to_string().into_bytes(),
            Some("invoice.created:0"),
            422,
            "magento_entity_id: must be > 0",
        ),
        (
            "negative entity id",
            "invoice.created",
            with(&|e| e["magento_entity_id"] = json!(-4)).to_string().into_bytes(),
            None,
            422,
            "magento_entity_id",
        ),
        (
            "bad occurred_at",
            "invoice.created",
            with(&|e| e["occurred_at"] = json!("yesterday")).to_string().into_bytes(),
            key,
            422,
            "occurred_at",
        ),
        (
            "no occurred_at",
            "invoice.created",
            with(&|e| _ = e.as_object_mut().unwrap().remove("occurred_at")).to_string().into_bytes(),
            key,
            422,
            "occurred_at",
        ),
        (
            "text website",
            "invoice.created",
            with(&|e| e["website_id"] = json!("one")).to_string().into_bytes(),
            key,
            422,
            "website_id",
        ),
        (
            "payload not an object",
            "invoice.created",
            with(&|e| e["payload"] = json!("x")).to_string().into_bytes(),
            key,
            422,
            "payload",
        ),
        (
            "payload a list with items",
            "invoice.created",
            with(&|e| e["payload"] = json!([1])).to_string().into_bytes(),
            key,
            422,
            "payload",
        ),
        (
            "key of another event",
            "invoice.created",
            env.to_string().into_bytes(),
            Some("invoice.paid:1001"),
            422,
            "Idempotency-Key (header)",
        ),
    ];
    for (name, event, body, k, want, expect) in cases {
        let (status, answer) = magento::post_raw(&http, &url, "tenant-a", event, body, good().as_deref(), k).await;
        assert_eq!(status, want, "{name}: {answer}");
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(expect), "{name}: `{message}` lacks `{expect}`");
    }
    // Only the one accepted webhook made a run.
    let counts = w.store.counts(BUSINESS).await.unwrap();
    assert_eq!(counts, BTreeMap::from([(RunStatus::Queued, 1)]), "nothing else was queued");
    assert!(w.store.find_by_key(BUSINESS, "customer.upserted:5").await.unwrap().is_some());
    // PHP encodes an empty payload array as `[]`: accepted as the empty object it means.
    let php = with(&|e| e["payload"] = json!([])).to_string().into_bytes();
    let (status, answer) =
        magento::post_raw(&http, &url, "tenant-a", "invoice.created", php, good().as_deref(), key).await;
    assert_eq!(status, 202, "{answer}");
    let run = w.store.find_by_key(BUSINESS, "invoice.created:1001").await.unwrap().unwrap();
    let raw: Value = serde_json::from_str(&run.raw).unwrap();
    assert_eq!(raw["payload"], json!({}), "{raw}");
    w.stop().await;
}

fn claims_for(tenant: &str) -> Claims {
    let now = SystemClock.now().timestamp();
    Claims {
        iss: "magento".into(),
        sub: tenant.into(),
        aud: "byte8-ledger".into(),
        iat: now,
        nbf: now,
        exp: now + 60,
        jti: uuid::Uuid::new_v4().to_string(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unavailable_store_answers_503_so_magento_retries_and_nothing_is_queued() {
    use sqlx::Connection as _;
    let mut w = World::new().await;
    w.pair("shop", "tenant-s").await;
    w.start(0).await;
    // Another connection holds the write lock: every write waits out the busy timeout, then fails.
    let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", w.db_path().display())).await.unwrap();
    sqlx::query("BEGIN EXCLUSIVE").execute(&mut blocker).await.unwrap();
    let (status, body) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "unavailable");
    sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    assert!(w.store.find_by_key(BUSINESS, "invoice.created:1001").await.unwrap().is_none(), "nothing queued");
    // Magento's retry (a new token) goes through.
    let (status, body) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 202, "{body}");
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Callbacks and the Magento connection

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_callback_is_retried_and_survives_the_process_dying_before_it_is_sent() {
    let mut w = World::new().await;
    w.pair("shop", "tenant-c").await;
    // Magento's sync-state answers 503 until further notice.
    w.magento.with("shop", |s| s.fail_sync_state = u32::MAX);
    w.start(1).await;
    let (status, _) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 202);
    wait_until("the run is synced", || w.sage_invoices().len() == 1).await;
    // Each outbox attempt is two requests (one quick retry): wait for a few outbox attempts.
    wait_until("the callback is retried", || w.magento.with("shop", |s| s.callbacks_refused) >= 6).await;
    assert!(w.magento.callbacks("shop").is_empty());
    assert_eq!(w.store.pending_callbacks(BUSINESS).await.unwrap(), 1, "the callback waits in the outbox");
    // The process dies (workers and server gone), and Magento recovers after two more 503s.
    w.stop().await;
    w.magento.with("shop", |s| s.fail_sync_state = 2);
    let refused_before = w.magento.with("shop", |s| s.callbacks_refused);
    w.store = Arc::new(SqliteStore::open(w.db_path(), Some(master_key())).await.unwrap());
    w.start(1).await;
    wait_until("the callback is delivered after the restart", || w.magento.callbacks("shop").len() == 1).await;
    assert_eq!(w.magento.with("shop", |s| s.callbacks_refused), refused_before + 2, "retried through the 503s");
    let cb = &w.magento.callbacks("shop")[0];
    assert_eq!((cb["sync_status"].as_str(), cb["magento_entity_id"].as_u64()), (Some("synced"), Some(1001)));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.magento.callbacks("shop").len(), 1, "delivered exactly once");
    assert_eq!(w.store.pending_callbacks(BUSINESS).await.unwrap(), 0);
    assert_eq!(w.sage_invoices().len(), 1, "the restart posted nothing again");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_magento_401_marks_the_tenant_token_revoked_and_its_events_wait_until_it_is_back() {
    let mut w = World::new().await;
    w.pair("shop", "tenant-r").await;
    // The merchant disconnected on Magento's side: every ledger token is refused.
    w.magento.with("shop", |s| s.revoked = true);
    w.start(1).await;
    let (status, _) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 202, "the webhook itself is the ledger's to verify");
    wait_for_status(&w.store, "tenant-r", ConnectionStatus::TokenRevoked).await;
    let (status, health) = w.v1(reqwest::Method::GET, "/v1/tile/health", "shop").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["tenant"]["magento_connection_status"], "token_revoked");
    assert_eq!(health["sync"]["pending_count"], 1, "the event waits");
    let run = w.store.find_by_key(BUSINESS, "invoice.created:1001").await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::Queued, "a 401 from Magento does not dead-letter the event");
    let (_, status_body) = w.v1(reqwest::Method::GET, "/v1/status?entity_type=invoice&entity_id=1001", "shop").await;
    assert_eq!(status_body["sync_status"], "pending");
    // Paused: no more calls than the probes.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(w.sage_invoices().is_empty());
    // The store accepts the ledger again: the probe notices, the event syncs, the state returns.
    w.magento.with("shop", |s| s.revoked = false);
    wait_until("the callback after the recovery", || w.magento.callbacks("shop").len() == 1).await;
    wait_for_status(&w.store, "tenant-r", ConnectionStatus::Active).await;
    assert_eq!(w.sage_invoices().len(), 1);
    let (_, health) = w.v1(reqwest::Method::GET, "/v1/tile/health", "shop").await;
    assert_eq!(health["tenant"]["magento_connection_status"], "active");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_revokes_the_binding_later_webhooks_get_401_and_the_books_are_kept() {
    let mut w = World::new().await;
    let first_key = w.pair("shop", "tenant-d").await;
    w.start(1).await;
    let (status, _) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 202);
    wait_until("the first invoice's sync state", || w.magento.callbacks("shop").len() == 1).await;
    let (status, body) = w.v1(reqwest::Method::POST, "/v1/tenant/disconnect", "shop").await;
    assert_eq!((status, body), (200, json!({"tenant_id": "tenant-d", "status": "revoked"})));
    assert_eq!(w.store.binding("tenant-d").await.unwrap().unwrap().status, BindingStatus::Revoked);
    let (status, body) = w.webhook("shop", "invoice.created:1003").await;
    assert_eq!(status, 401, "{body}");
    assert!(w.store.find_by_key(BUSINESS, "invoice.created:1003").await.unwrap().is_none());
    // The admin still reads what the ledger holds: the tile shows the binding revoked.
    let (status, health) = w.v1(reqwest::Method::GET, "/v1/tile/health", "shop").await;
    assert_eq!((status, &health["binding"]["status"]), (200, &json!("revoked")), "{health}");
    // But a disconnected tenant's old key reads no entity's status (the business may be paired
    // to another store since).
    let (status, body) = w.v1(reqwest::Method::GET, "/v1/status?entity_type=invoice&entity_id=1001", "shop").await;
    assert_eq!(status, 401, "{body}");
    // A second disconnect (Magento's best-effort call after one from the dashboard) is answered.
    let (status, body) = w.v1(reqwest::Method::POST, "/v1/tenant/disconnect", "shop").await;
    assert_eq!((status, body), (200, json!({"tenant_id": "tenant-d", "status": "revoked"})));
    // A forged token for the revoked tenant is still refused on every route.
    let forged = token_with(&ApiKey::generate().unwrap(), |c| c.sub = "tenant-d".into());
    let resp = w.http.get(format!("{}/v1/tile/health", w.url())).bearer_auth(forged).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    // Runs and cross-reference are kept.
    assert!(w.store.find_by_key(BUSINESS, "invoice.created:1001").await.unwrap().is_some());
    assert!(
        w.store
            .get_xref(BUSINESS, XrefKind::Invoice, "1001")
            .await
            .unwrap()
            .and_then(|x| x.done_id().map(str::to_owned))
            .is_some()
    );
    // Pairing again (a new key) resumes, and the kept cross-reference prevents a duplicate.
    let second = ApiKey::generate().unwrap();
    assert_ne!(second.expose_secret(), first_key);
    w.magento.add_paired_shop("shop", "tenant-d", second.expose_secret());
    let b =
        Binding::new("tenant-d", BUSINESS, &w.magento.base_url("shop"), second, policy(), SystemClock.now()).unwrap();
    w.store.put_binding(&b).await.unwrap();
    let (status, _) = w.webhook("shop", "invoice.created:1003").await;
    assert_eq!(status, 202);
    wait_until("the next invoice's sync state", || w.magento.callbacks("shop").len() == 2).await;
    assert_eq!(w.sage_invoices().len(), 2);
    w.stop().await;
}

/// The re-pair sequence: tenant A paired, an event queued, A disconnected, tenant B (another
/// store) paired to the same business. B's worker never claims A's run (it would fetch B's
/// entity under A's id and post it), A's outcome is never called back into B's store, and A's
/// old key cannot read the business's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_business_paired_to_another_store_never_processes_reports_or_shows_the_old_tenant_s_runs() {
    let mut w = World::new().await;
    w.pair("shop-a", "tenant-a").await;
    w.start(0).await;
    let (status, body) = w.webhook("shop-a", "invoice.created:1001").await;
    assert_eq!(status, 202, "{body}");
    let a_run = w.store.find_by_key(BUSINESS, "invoice.created:1001").await.unwrap().expect("A's run");
    assert_eq!(a_run.tenant_id.as_deref(), Some("tenant-a"), "the run carries its tenant");
    let (status, _) = w.v1(reqwest::Method::POST, "/v1/tenant/disconnect", "shop-a").await;
    assert_eq!(status, 200);
    w.pair("shop-b", "tenant-b").await;
    let (status, body) = w.webhook("shop-b", "invoice.created:1003").await;
    assert_eq!(status, 202, "{body}");
    // Workers start with both runs due; A's is older, so a worker claiming by business alone
    // would take it first.
    w.stop().await;
    w.start(1).await;
    wait_until("B's invoice's sync state", || {
        w.magento.callbacks("shop-b").iter().any(|c| c["magento_entity_id"] == 1003)
    })
    .await;
    let b_callbacks = w.magento.callbacks("shop-b");
    assert!(
        b_callbacks.iter().all(|c| c["magento_entity_id"] != 1001),
        "A's outcome must never be called back into B's store: {b_callbacks:?}"
    );
    assert_eq!(
        w.magento.with("shop-b", |s| s.fetches.get("invoice").copied()),
        Some(1),
        "B fetched its own invoice only"
    );
    assert!(w.magento.callbacks("shop-a").is_empty(), "A is disconnected: nothing is sent to it");
    let a_run = w.store.get(a_run.id).await.unwrap().unwrap();
    assert_eq!((a_run.status, a_run.attempts), (RunStatus::Queued, 0), "A's run waits, untouched, for A");
    assert_eq!(w.sage_invoices().len(), 1, "only B's invoice reached the ledger");
    // A's old key reads nothing; B reads its own runs only.
    let (status, body) = w.v1(reqwest::Method::GET, "/v1/status?entity_type=invoice&entity_id=1003", "shop-a").await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = w.v1(reqwest::Method::GET, "/v1/status?entity_type=invoice&entity_id=1001", "shop-b").await;
    assert_eq!((status, &body["sync_status"], &body["runs"]), (200, &Value::Null, &json!([])), "{body}");
    let (status, body) = w.v1(reqwest::Method::GET, "/v1/status?entity_type=invoice&entity_id=1003", "shop-b").await;
    assert_eq!((status, &body["sync_status"]), (200, &json!("synced")), "{body}");
    let (_, health) = w.v1(reqwest::Method::GET, "/v1/tile/health", "shop-b").await;
    assert_eq!(health["sync"]["pending_count"], 0, "A's queued run is not B's pending work: {health}");
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_paired_before_its_business_is_connected_to_sage_waits_then_syncs() {
    let mut w = World::new().await;
    // A second business, paired but not connected to Sage yet.
    let key = ApiKey::generate().unwrap();
    w.magento.add_paired_shop("late", "tenant-late", key.expose_secret());
    serve_samples(&w.magento, "late");
    let b = Binding::new("tenant-late", "late-business", &w.magento.base_url("late"), key, policy(), SystemClock.now())
        .unwrap();
    w.store.put_binding(&b).await.unwrap();
    w.start(1).await;
    let (status, _) = w.webhook("late", "invoice.created:1001").await;
    assert_eq!(status, 202, "accepted before Sage is connected");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let run = w.store.find_by_key("late-business", "invoice.created:1001").await.unwrap().unwrap();
    assert_eq!((run.status, run.attempts), (RunStatus::Queued, 0), "it waits, untried");
    // The operator connects the business: the event syncs.
    let mut reference = byte8_ledger_core::reference::ReferenceData::demo_uk(SystemClock.now());
    reference.business.id = "late-business".into();
    w.sim.add_business(reference);
    w.sim.with_state(|s| s.add_refresh_token("late-refresh"));
    let sim = w._sim_server.base_url();
    w.store
        .save_connection(&Connection {
            scope: "late-business".into(),
            provider: "sage_accounting".into(),
            base_url: sim,
            token_url: w._sim_server.token_url(),
            created_at: SystemClock.now(),
            tenant_id: None,
            connections_url: None,
        })
        .await
        .unwrap();
    w.store
        .save_tokens("late-business", &TokenSet::from_refresh_token(SecretString::from("late-refresh".to_owned())))
        .await
        .unwrap();
    wait_until("the waiting event's sync state", || w.magento.callbacks("late").len() == 1).await;
    assert_eq!(w.magento.callbacks("late")[0]["sync_status"], "synced");
    assert_eq!(w.sim.business("late-business").unwrap().invoices.len(), 1);
    w.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The command

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn byte8_ledger_serve_on_sqlite_syncs_a_webhook_and_stops_on_sigterm() {
    use tokio::io::AsyncBufReadExt as _;
    let w = World::new().await;
    w.pair("shop", "tenant-cli").await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_byte8-ledger"))
        .args(["serve", "--state"])
        .arg(w.db_path())
        .args(["--listen", "127.0.0.1:0", "--workers", "1", "--poll-ms", "20", "--retry-delays", "0.2"])
        .env("LEDGER_MASTER_KEY", master_key_text())
        .env("SAGE_CLIENT_ID", "demo-client")
        .env("SAGE_CLIENT_SECRET", "demo-secret")
        .env("SAGE_REQUESTS_PER_MINUTE", "0")
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line()).await.unwrap().unwrap().unwrap();
    let url = first.strip_prefix("listening on ").unwrap_or_else(|| panic!("{first}")).to_owned();
    let workers = lines.next_line().await.unwrap().unwrap();
    assert!(workers.starts_with("1 worker(s) on "), "{workers}");
    let console = lines.next_line().await.unwrap().unwrap();
    assert_eq!(console, format!("console at {url}/console"), "serve mounts the operator console");
    let (event, env) = envelope("invoice.created:1001");
    let (status, body) = w.magento.webhook(&w.http, &url, "shop", &event, &env).await;
    assert_eq!(status, 202, "{body}");
    wait_until("the sync state from the serving process", || w.magento.callbacks("shop").len() == 1).await;
    assert_eq!(w.magento.callbacks("shop")[0]["sync_status"], "synced");
    assert_eq!(w.sim.business(BUSINESS).unwrap().invoices.len(), 1);
    let pid = child.id().unwrap().to_string();
    assert!(std::process::Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("stopped"));

    // The operator disconnects the tenant.
    let out = bin().args(["tenant", "disconnect", "--state"]).arg(w.db_path()).arg("tenant-cli").output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("tenant tenant-cli disconnected"));
    let out = bin().args(["tenant", "list", "--json", "--state"]).arg(w.db_path()).output().unwrap();
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(listed[0]["tenant_id"], "tenant-cli");
    assert_eq!(listed[0]["status"], "revoked");
    assert_eq!(listed[0]["business_id"], BUSINESS);
    assert!(w.store.tokens(BUSINESS).await.unwrap().is_some(), "a plain disconnect keeps the ledger's tokens");
    // The dashboard's disconnect also forgets the ledger's tokens, revoking them at Sage first
    // (the simulator confirms); the connection stays.
    let out = bin()
        .env("SAGE_CLIENT_ID", "demo-client")
        .env("SAGE_CLIENT_SECRET", "demo-secret")
        .args(["tenant", "disconnect", "--forget-ledger-tokens", "--state"])
        .arg(w.db_path())
        .arg("tenant-cli")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("ledger tokens deleted of business {BUSINESS} (revoked at the provider")), "{said}");
    assert_eq!(w.sim.with_state(|s| s.revocations), 1);
    assert!(w.store.tokens(BUSINESS).await.unwrap().is_none(), "the tokens are gone");
    assert!(w.store.connection(BUSINESS).await.unwrap().is_some(), "the connection is kept");
    let out = bin().args(["tenant", "disconnect", "--state"]).arg(w.db_path()).arg("nobody").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tenant nobody"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pairing_waits_out_a_busy_store_once_magento_holds_the_new_key() {
    use sqlx::Connection as _;
    let w = World::new().await;
    w.magento.add_shop("busy", "45c48cce2e2d7fbdea1afc51c7c6ad26");
    // Another writer holds the state file for 8 s: longer than SQLite's busy timeout (5 s), so
    // storing the binding fails once after Magento accepted the key.
    let mut blocker = sqlx::SqliteConnection::connect(&format!("sqlite://{}", w.db_path().display())).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut blocker).await.unwrap();
    let release = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(8)).await;
        sqlx::query("ROLLBACK").execute(&mut blocker).await.unwrap();
    });
    let db = w.db_path();
    let magento_url = w.magento.base_url("busy");
    let out = tokio::task::spawn_blocking(move || {
        bin()
            .args(["tenant", "pair", "--state"])
            .arg(&db)
            .args(["--magento-base-url", &magento_url, "--pairing-code", "45c48cce2e2d7fbdea1afc51c7c6ad26"])
            .args(["--business-id", BUSINESS, "--policy"])
            .arg(policy_path())
            .args(["--ledger-base-url", "https://ledger.example.com"])
            .env("RUST_LOG", "byte8_ledger=warn")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    release.await.unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stdout}{stderr}");
    assert!(stderr.contains("storing the binding failed; trying again"), "the store was busy at first: {stderr}");
    let tenant = w.magento.tenant("busy");
    let stored = w.store.binding(&tenant).await.unwrap().expect("the binding is stored");
    assert_eq!(
        stored.api_key.expose_secret(),
        w.magento.with("busy", |s| s.api_key.clone()).unwrap(),
        "Magento and the ledger hold the same key"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_that_cannot_be_booked_is_dead_lettered_and_magento_hears_failed_with_its_class() {
    let mut w = World::new().await;
    w.pair("shop", "tenant-f").await;
    w.start(1).await;
    // Sample invoice 1010 has a line of quantity 0: a validation failure, never retried.
    let (status, body) = w.webhook("shop", "invoice.created:1010").await;
    assert_eq!(status, 202, "{body}");
    wait_until("the failure's sync state reaches Magento", || w.magento.callbacks("shop").len() == 1).await;
    let callback = &w.magento.callbacks("shop")[0];
    assert_eq!(
        (callback["entity_type"].as_str(), callback["magento_entity_id"].as_u64()),
        (Some("invoice"), Some(1010))
    );
    assert_eq!(callback["sync_status"], "failed");
    assert_eq!(callback["error_code"], "validation", "the chip's error class");
    assert_eq!((&callback["provider_entity_id"], &callback["skip_reason"]), (&Value::Null, &Value::Null));
    assert!(w.sage_invoices().is_empty(), "nothing reached Sage");
    let run = w.store.find_by_key(BUSINESS, "invoice.created:1010").await.unwrap().unwrap();
    assert_eq!(run.status, RunStatus::DeadLettered, "kept where an operator can see it");
    assert_eq!(run.attempts, 1, "a deterministic failure is not retried");
    let (status, body) = w.v1(reqwest::Method::GET, "/v1/status?entity_type=invoice&entity_id=1010", "shop").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["sync_status"].as_str(), body["error_code"].as_str()), (Some("failed"), Some("validation")));
    assert!(body["message"].as_str().unwrap().contains("lines[0].qty: must be > 0"), "{body}");
    let (status, health) = w.v1(reqwest::Method::GET, "/v1/tile/health", "shop").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!((health["sync"]["failed_24h"].as_u64(), health["sync"]["pending_count"].as_u64()), (Some(1), Some(0)));
    w.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_bound_to_a_xero_organisation_syncs_into_xero_beside_one_on_sage() {
    let mut w = World::new().await;
    let xero = XeroSimulator::demo(XeroSimConfig::unlimited());
    let xero_server = xero.serve().await.unwrap();
    w.connect_xero_shop(&xero_server).await;
    w.pair("sage-shop", "tenant-on-sage").await;
    serve_samples(&w.magento, "xero-shop");
    w.start(2).await;

    // The module's per-provider routing: naming the other ledger is the deterministic 400 of
    // byte8-xero-spec.md 1.4, an unknown one a 400 too; neither is queued.
    let (event, env) = envelope("invoice.created:1001");
    for (shop, provider, expect) in [
        ("sage-shop", "xero", "tenant has no active xero binding"),
        ("xero-shop", "sage_accounting", "tenant has no active sage_accounting binding"),
        ("xero-shop", "quickbooks", "`quickbooks` is not a ledger this service knows"),
    ] {
        let token = w.magento.webhook_token(shop);
        let (status, body) = magento::post(
            &w.http,
            &w.url(),
            &w.magento.tenant(shop),
            &format!("{event}?provider={provider}"),
            &env,
            Some(&token),
            Some("invoice.created:1001"),
        )
        .await;
        assert_eq!(status, 400, "{shop} {provider}: {body}");
        assert_eq!(body["error"], "bad_request");
        assert!(body["message"].as_str().unwrap().contains(expect), "{body}");
    }
    assert!(w.store.find_by_key(XERO_DEMO_TENANT, "invoice.created:1001").await.unwrap().is_none(), "nothing queued");
    assert!(w.store.find_by_key(BUSINESS, "invoice.created:1001").await.unwrap().is_none(), "nothing queued");

    // The Xero module's webhook, as it sends it (`?provider=xero`).
    let token = w.magento.webhook_token("xero-shop");
    let (status, body) = magento::post(
        &w.http,
        &w.url(),
        &w.magento.tenant("xero-shop"),
        &format!("{event}?provider=xero"),
        &env,
        Some(&token),
        Some("invoice.created:1001"),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    wait_until("the Xero invoice's sync state reaches Magento", || w.magento.callbacks("xero-shop").len() == 1).await;
    let org = xero.org(XERO_DEMO_TENANT).unwrap();
    assert_eq!(org.invoices.len(), 1, "{:?}", org.invoices);
    let invoice = &org.invoices[0];
    // 30.00 + 20.00 + shipping 4.99, tax included (samples/events.jsonl, invoice 000000101).
    assert_eq!((invoice.number.as_str(), invoice.total.to_string().as_str()), ("MAG-000000101", "54.99"));
    assert_eq!(invoice.status, "AUTHORISED", "outstanding, not a draft");
    let callback = &w.magento.callbacks("xero-shop")[0];
    assert_eq!(callback["provider"], "xero", "the Xero segment of the module's sync state");
    assert_eq!(callback["sync_status"], "synced");
    assert_eq!(callback["provider_entity_id"].as_str(), Some(invoice.id.as_str()));
    assert!(w.sage_invoices().is_empty(), "nothing went to Sage");

    // The Sage store's webhook (Sage's module names no provider) goes to Sage, not Xero.
    let (status, body) = w.webhook("sage-shop", "invoice.created:1001").await;
    assert_eq!(status, 202, "{body}");
    wait_until("the Sage invoice's sync state reaches Magento", || w.magento.callbacks("sage-shop").len() == 1).await;
    assert_eq!(w.magento.callbacks("sage-shop")[0]["provider"], "sage_accounting");
    assert_eq!(w.sage_invoices().len(), 1);
    assert_eq!(xero.org(XERO_DEMO_TENANT).unwrap().invoices.len(), 1, "still one in Xero");
    w.stop().await;
}

#[tokio::test]
async fn serve_refuses_a_configuration_it_cannot_run_with_the_setting_named() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("state.db");
    let run = |args: &[&str], with_key: bool| {
        let mut c = bin();
        if !with_key {
            c.env_remove("LEDGER_MASTER_KEY");
        }
        c.arg("serve").args(args).output().unwrap()
    };
    let cases: Vec<(Vec<&str>, bool, &str)> = vec![
        (vec!["--state", db.to_str().unwrap()], false, "LEDGER_MASTER_KEY"),
        (vec!["--state", db.to_str().unwrap()], true, "SAGE_CLIENT_ID"),
        (vec!["--state", db.to_str().unwrap(), "--no-http", "--workers", "0"], true, "nothing to do"),
        (vec!["--state", db.to_str().unwrap(), "--workers", "0", "--retry-delays", "1,x"], true, "--retry-delays"),
        (vec!["--state", "a.db", "--database-url", "postgres://x/y"], true, "cannot be used with"),
        (vec![], true, "--state"),
    ];
    for (args, with_key, expect) in cases {
        let out = run(&args, with_key);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
    }
}

// ---------------------------------------------------------------------------------------------
// Secrets

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_key_token_or_pairing_code_reaches_the_logs_or_the_answers() {
    let mut w = World::new().await;
    let api_key = w.pair("shop", "tenant-secret").await;
    w.magento.with("shop", |s| s.fail_sync_state = 1);
    w.start(1).await;
    let mut sent = Vec::new();
    for key in ["invoice.created:1001", "invoice.paid:1001", "customer.upserted:5"] {
        let (event, env) = envelope(key);
        let token = w.magento.webhook_token("shop");
        let (status, body) =
            magento::post(&w.http, &w.url(), "tenant-secret", &event, &env, Some(&token), Some(key)).await;
        assert_eq!(status, 202, "{body}");
        // Replayed, and tampered with: refused, and the answer holds neither token.
        let (status, body) =
            magento::post(&w.http, &w.url(), "tenant-secret", &event, &env, Some(&token), Some(key)).await;
        assert_eq!(status, 401);
        assert!(!body.to_string().contains(&token));
        let tampered = format!("{}x", &token[..token.len() - 1]);
        let (status, body) =
            magento::post(&w.http, &w.url(), "tenant-secret", &event, &env, Some(&tampered), Some(key)).await;
        assert_eq!(status, 401);
        assert!(!body.to_string().contains(&tampered));
        sent.push(token);
        sent.push(tampered);
    }
    wait_until("three callbacks", || w.magento.callbacks("shop").len() == 3).await;
    w.stop().await;
    let ledger_tokens = w.magento.with("shop", |s| s.tokens.clone());
    assert!(ledger_tokens.len() >= 5, "the ledger called Magento");
    let keys = ApiKey::new(api_key.clone()).unwrap().derive();
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let mut secrets =
        vec![api_key.clone(), master_key_text(), hex(keys.outbound.expose_secret()), hex(keys.inbound.expose_secret())];
    secrets.extend(sent);
    secrets.extend(ledger_tokens);
    let logs = logged();
    assert!(logs.contains("tenant-secret"), "the logs were captured");
    for s in &secrets {
        // The signature part of a token is enough to use it: look for that too.
        let probe = s.rsplit('.').next().unwrap();
        assert!(!logs.contains(probe), "a secret reached the logs: …{}", &probe[..8.min(probe.len())]);
    }
    // Nor the Debug of what holds them.
    let b = w.store.binding("tenant-secret").await.unwrap().unwrap();
    assert!(!format!("{b:?}").contains(&api_key));
    let svc = format!(
        "{:?}",
        Service::new(
            Arc::clone(&w.store) as _,
            Arc::new(SageProviders::new(Arc::clone(&w.store) as _)),
            Arc::new(SystemClock),
            fast_config()
        )
    );
    assert!(!svc.contains(&api_key));
    let _ = std::io::stderr().flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_connection_is_refreshed_before_its_refresh_token_lapses_and_health_shows_the_days_left() {
    use byte8_ledger_service::IdleRefresh;
    use secrecy::ExposeSecret as _;
    let mut w = World::new().await;
    w.pair("shop", "tenant-idle").await;
    let clock = Arc::new(ManualClock::new(SystemClock.now()));
    w.start_on(Arc::clone(&clock) as Arc<dyn Clock>, 0).await;
    let service = w.ledger.as_ref().unwrap().service.clone();
    let refreshes = || w.sim.with_state(|s| s.refreshes);

    // The token was pasted (`connect --refresh-token`): its life is unknown, so it is refreshed.
    assert_eq!(refreshes(), 0);
    let done = service.refresh_idle_tokens().await.unwrap();
    assert_eq!(done, [IdleRefresh::Refreshed { business: BUSINESS.into() }]);
    assert_eq!(refreshes(), 1);

    // The health feed keeps the module's shape and adds the days left: Sage said 31 days just
    // after the service's (stopped) clock read its time, so 31 whole days remain on that clock.
    let (status, body) = w.v1(reqwest::Method::GET, "/v1/tile/health", "shop").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["binding"]["status"], "active", "{body}");
    assert!(body["sync"]["pending_count"].is_number() && body["tenant"]["magento_connection_status"].is_string());
    assert_eq!(body["binding"]["ledger_connected"], true, "{body}");
    assert_eq!(body["binding"]["refresh_token_days_left"], 31, "{body}");

    // Plenty left: nothing is done.
    let done = service.refresh_idle_tokens().await.unwrap();
    assert_eq!(done, [IdleRefresh::Healthy { business: BUSINESS.into(), days_left: 31 }]);
    assert_eq!(refreshes(), 1);

    // 25 quiet days later, 6 days are left (under the 7-day margin): refreshed, and the refresh
    // token rotated in the store.
    let before = w.store.tokens(BUSINESS).await.unwrap().unwrap().refresh_token.expose_secret().to_owned();
    clock.advance(chrono::Duration::days(25));
    let done = service.refresh_idle_tokens().await.unwrap();
    assert_eq!(done, [IdleRefresh::Refreshed { business: BUSINESS.into() }]);
    assert_eq!(refreshes(), 2);
    let after = w.store.tokens(BUSINESS).await.unwrap().unwrap().refresh_token.expose_secret().to_owned();
    assert_ne!(before, after, "the new pair is stored");

    // Left idle past its life (no service running): lapsed, reported, nothing sent.
    clock.advance(chrono::Duration::days(40));
    let done = service.refresh_idle_tokens().await.unwrap();
    assert_eq!(done, [IdleRefresh::Lapsed { business: BUSINESS.into() }]);
    assert_eq!(refreshes(), 2);
}

/// Issue 17 item 4: a busy Xero tenant's queued invoices are posted in Xero's batches by the
/// service's workers (the engine's batched path), each run keeping its own outcome, callback and
/// dead letter; a batch with one bad invoice answers each in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_xero_tenant_s_invoices_are_posted_in_batches_each_run_answered_in_place() {
    let mut w = World::new().await;
    let xero = XeroSimulator::demo(XeroSimConfig::unlimited());
    let xero_server = xero.serve().await.unwrap();
    w.connect_xero_shop(&xero_server).await;
    // 13 invoices of one customer, the 8th in a currency the organisation does not trade in
    // (Xero refuses that element alone: "Organisation is not subscribed to currency JPY").
    let (event, env, entity) = crate::support_magento::sample_events().get("invoice.created:1001").cloned().unwrap();
    let ids: Vec<u64> = (0..13).map(|i| 7001 + i).collect();
    let bad = ids[7];
    for id in &ids {
        let mut e = entity.clone();
        e["magento_id"] = json!(id);
        e["increment_id"] = json!(format!("00000{id}"));
        if *id == bad {
            e["currency"] = json!("JPY");
        }
        w.magento.put_entity("xero-shop", "invoice", *id, e);
    }
    // Queued while no worker runs: a backlog, as a busy store makes one.
    w.start(0).await;
    for id in &ids {
        let mut envelope = env.clone();
        envelope["magento_entity_id"] = json!(id);
        envelope["payload"]["increment_id"] = json!(format!("00000{id}"));
        let token = w.magento.webhook_token("xero-shop");
        let (status, body) = magento::post(
            &w.http,
            &w.url(),
            &w.magento.tenant("xero-shop"),
            &format!("{event}?provider=xero"),
            &envelope,
            Some(&token),
            Some(&format!("invoice.created:{id}")),
        )
        .await;
        assert_eq!(status, 202, "{body}");
    }
    let before = xero.requests();
    let workers = w.ledger.as_ref().unwrap().service.spawn_workers(1);
    wait_until("every run's sync state reaches Magento", || w.magento.callbacks("xero-shop").len() == ids.len()).await;
    workers.stop().await;

    // Xero's calls: the invoices went in one batch (13 ≤ the service's claim of 20 and Xero's 50),
    // their one new contact in one; not one request an invoice.
    let after = xero.requests();
    let delta: BTreeMap<&String, u64> =
        after.iter().map(|(k, v)| (k, v - before.get(k).copied().unwrap_or(0))).filter(|(_, v)| *v > 0).collect();
    let invoice_writes: u64 =
        delta.iter().filter(|(k, _)| k.ends_with("/Invoices") && !k.starts_with("GET")).map(|(_, v)| *v).sum();
    assert_eq!(invoice_writes, 1, "one batch of invoices: {delta:?}");
    let contact_writes: u64 =
        delta.iter().filter(|(k, _)| k.ends_with("/Contacts") && !k.starts_with("GET")).map(|(_, v)| *v).sum();
    assert_eq!(contact_writes, 1, "one contact, created once: {delta:?}");
    let org = xero.org(XERO_DEMO_TENANT).unwrap();
    assert_eq!(org.invoices.len(), ids.len() - 1, "every good invoice once: {:?}", org.invoices);

    // Each run answered in place: its own outcome, run status and callback.
    let callbacks = w.magento.callbacks("xero-shop");
    for id in &ids {
        let key = format!("invoice.created:{id}");
        let run = w.store.find_by_key(XERO_DEMO_TENANT, &key).await.unwrap().expect("a run");
        let outcome = run.outcome.clone().expect("an outcome");
        let callback = callbacks.iter().find(|c| c["magento_entity_id"].as_u64() == Some(*id)).expect("its callback");
        assert_eq!(callback["sync_status"], outcome.sync_status.as_str(), "{callback}");
        if *id == bad {
            assert_eq!(run.status, RunStatus::DeadLettered, "{outcome:?}");
            assert!(outcome.message.as_deref().unwrap_or_default().contains("JPY"), "{outcome:?}");
            assert_eq!(callback["sync_status"], "failed");
        } else {
            assert_eq!(run.status, RunStatus::Synced, "{key}: {outcome:?}");
            let number = format!("MAG-00000{id}");
            let doc = org.invoices.iter().find(|d| d.number == number).expect("posted");
            assert_eq!(outcome.provider_entity_id.as_deref(), Some(doc.id.as_str()), "{key}");
            assert_eq!(callback["provider_entity_id"].as_str(), Some(doc.id.as_str()));
        }
    }
    w.stop().await;
}

/// The webhook route wakes an idle worker: with the periodic look for work an hour apart (the
/// first one at start, before anything is queued), the invoice still reaches Sage and its sync
/// state Magento within the usual wait — only the route's own wake-up can have started it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_wakes_an_idle_worker_without_waiting_for_the_periodic_look() {
    let mut w = World::new().await;
    w.pair("shop", "tenant-wake").await;
    w.start_with(Arc::new(SystemClock), 1, without_looks()).await;
    // Let the worker reach its wait and the dispatcher its first look (nothing queued yet).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 202, "{body}");
    wait_until("the invoice's sync state reaches Magento", || w.magento.callbacks("shop").len() == 1).await;
    assert_eq!(w.sage_invoices().len(), 1);
    // A second event of the same tenant, queued while the first turn may still be on: woken too.
    let (status, _) = w.webhook("shop", "invoice.paid:1001").await;
    assert_eq!(status, 202);
    wait_until("the payment's sync state reaches Magento", || w.magento.callbacks("shop").len() == 2).await;
    assert_eq!(w.sim.business(BUSINESS).unwrap().payments.len(), 1);
    w.stop().await;
}

/// Once a tenant's runtime is built and a worker waits, the webhook route begins the worker's
/// turn in the statement that queues the run (`DispatchStore::enqueue_and_begin`): the worker
/// continues that turn, with the run already claimed, and the run reaches Sage and Magento as
/// any other. The first event (no runtime yet) takes the plain path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_begins_the_turn_of_an_idle_worker_which_continues_it() {
    let mut w = World::new().await;
    w.pair("shop", "tenant-begun").await;
    w.start(1).await;
    let (status, body) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 202, "{body}");
    wait_until("the invoice's sync state reaches Magento", || w.magento.callbacks("shop").len() == 1).await;
    let begun = |logged: &str| {
        logged
            .lines()
            .filter(|l| l.contains("continuing the turn the webhook began") && l.contains("tenant-begun"))
            .count()
    };
    assert_eq!(begun(&logged()), 0, "the first event's runtime was built by the worker's own turn");
    // The worker back at its wait (its turn ends just after the callback).
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, _) = w.webhook("shop", "invoice.paid:1001").await;
    assert_eq!(status, 202);
    wait_until("the payment's sync state reaches Magento", || w.magento.callbacks("shop").len() == 2).await;
    assert_eq!(w.sim.business(BUSINESS).unwrap().payments.len(), 1, "the payment is posted once");
    let logged = logged();
    assert_eq!(begun(&logged), 1, "the payment's turn was begun by its webhook");
    assert!(
        logged.lines().any(|l| l.contains("continuing the turn the webhook began") && l.contains("runs=1")),
        "with its run claimed"
    );
    w.stop().await;
}

/// A turn's end waits to be recorded with others (`ServiceConfig::turn_end_delay`): until then
/// the business stays leased and its callback undelivered in the store. A second event of the
/// business within the delay is not held up by it: the worker records the waiting end first
/// (with the periodic look an hour away, nothing else could start the turn). Stopping the pool
/// records the ends still waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_s_end_waits_for_others_but_never_holds_up_the_business_s_next_turn() {
    let mut w = World::new().await;
    w.pair("shop", "tenant-ends").await;
    let config = ServiceConfig { turn_end_delay: Duration::from_secs(60), ..without_looks() };
    w.start_with(Arc::new(SystemClock), 1, config).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 202, "{body}");
    wait_until("the invoice's sync state reaches Magento", || w.magento.callbacks("shop").len() == 1).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let now = SystemClock.now();
    assert!(
        !w.store.acquire_dispatch(BUSINESS, "another/1", now, now + chrono::Duration::minutes(1)).await.unwrap(),
        "the business stays leased while its turn's end waits"
    );
    let (status, _) = w.webhook("shop", "invoice.paid:1001").await;
    assert_eq!(status, 202);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while w.magento.callbacks("shop").len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the second turn waited for the first one's end");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(w.sim.business(BUSINESS).unwrap().payments.len(), 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let now = SystemClock.now();
    assert!(
        !w.store.acquire_dispatch(BUSINESS, "another/1", now, now + chrono::Duration::minutes(1)).await.unwrap(),
        "the second turn's end waits in turn"
    );
    w.stop().await;
    let now = SystemClock.now();
    assert!(
        w.store.acquire_dispatch(BUSINESS, "another/1", now, now + chrono::Duration::minutes(1)).await.unwrap(),
        "the pool's stop records the waiting end: the lease is given up"
    );
    assert_eq!(w.store.pending_callbacks(BUSINESS).await.unwrap(), 0, "every delivery recorded");
}

/// With nothing else happening, a waiting turn's end is recorded once its delay has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_turn_s_end_is_recorded_after_its_delay() {
    let mut w = World::new().await;
    w.pair("shop", "tenant-ends-later").await;
    let config = ServiceConfig { turn_end_delay: Duration::from_millis(300), ..without_looks() };
    w.start_with(Arc::new(SystemClock), 1, config).await;
    let (status, body) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 202, "{body}");
    wait_until("the invoice's sync state reaches Magento", || w.magento.callbacks("shop").len() == 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let now = SystemClock.now();
        if w.store.acquire_dispatch(BUSINESS, "another/1", now, now + chrono::Duration::minutes(1)).await.unwrap() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the turn's end was never recorded: its lease is held");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(w.store.pending_callbacks(BUSINESS).await.unwrap(), 0, "its delivery recorded");
    w.stop().await;
}

/// Another process's webhook for a business whose turn's end waits in this process
/// (`ServiceConfig::turn_end_delay`): the business is still leased, so the other process queues
/// the run without beginning a turn, and its worker's own begin finds the lease taken. Its
/// periodic look drains the run once the end is recorded, as the delay's documentation says;
/// never before (the lease is the business's one turn at a time), and nothing twice. This
/// process's look is an hour away, so only the other process can have drained it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_s_webhook_for_a_business_whose_turn_s_end_waits_is_drained_after_that_end() {
    let mut w = World::new().await;
    w.pair("shop", "tenant-two-processes").await;
    let delay = Duration::from_secs(4);
    w.start_with(Arc::new(SystemClock), 1, ServiceConfig { turn_end_delay: delay, ..without_looks() }).await;
    let first = w.ledger.as_ref().unwrap().service.clone();
    // The other process: its own HTTP server and worker, a look every 20 ms, its ends at once.
    let other = Service::new(
        Arc::clone(&w.store) as _,
        Arc::clone(first.providers()),
        Arc::new(SystemClock),
        ServiceConfig { turn_end_delay: Duration::ZERO, ..fast_config() },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_url = format!("http://{}", listener.local_addr().unwrap());
    let app = other.router();
    let other_server = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    let other_workers = other.spawn_workers(1);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The first turn's end is recorded `delay` after its callback, so not before `sent + delay`.
    let sent = std::time::Instant::now();
    let (status, body) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 202, "{body}");
    wait_until("the invoice's sync state reaches Magento", || w.magento.callbacks("shop").len() == 1).await;
    let (event, envelope) = envelope("invoice.paid:1001");
    let (status, body) = w.magento.webhook(&w.http, &other_url, "shop", &event, &envelope).await;
    assert_eq!(status, 202, "{body}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Only meaningful while the first turn's end surely waits.
    if sent.elapsed() < delay {
        assert_eq!(w.sim.business(BUSINESS).unwrap().payments.len(), 0, "taken while the first turn held the business");
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while w.magento.callbacks("shop").len() < 2 {
        assert!(std::time::Instant::now() < deadline, "the other process never drained the run it queued");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(sent.elapsed() >= delay, "drained before the first turn's end was recorded");
    let b = w.sim.business(BUSINESS).unwrap();
    assert_eq!((b.invoices.len(), b.payments.len()), (1, 1), "each posted once");
    other_workers.stop().await;
    other_server.abort();
    w.stop().await;
    assert_eq!(w.store.pending_callbacks(BUSINESS).await.unwrap(), 0, "every delivery recorded");
    assert_eq!(w.magento.callbacks("shop").len(), 2, "each sync state sent once");
}

/// Without the route's wake-up (a webhook accepted by a process without workers), the same
/// invoice waits for the periodic look of the process that has them: the look is what finds
/// work another process queued, and it does find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_queued_by_another_process_is_found_by_the_periodic_look() {
    let mut w = World::new().await;
    w.pair("shop", "tenant-look").await;
    // The HTTP side alone (no workers: another process's role).
    w.start_with(Arc::new(SystemClock), 0, fast_config()).await;
    let (status, body) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 202, "{body}");
    // A second service on the same store, with workers and no HTTP: only its look finds the run.
    let other = Service::new(
        Arc::clone(&w.store) as _,
        Arc::clone(w.ledger.as_ref().unwrap().service.providers()),
        Arc::new(SystemClock),
        fast_config(),
    );
    let workers = other.spawn_workers(1);
    wait_until("the invoice's sync state reaches Magento", || w.magento.callbacks("shop").len() == 1).await;
    assert_eq!(w.sage_invoices().len(), 1);
    workers.stop().await;
    w.stop().await;
}

/// A wake bus in memory, shared by two services on one store (two processes).
#[derive(Debug, Default)]
struct MemoryBus {
    announced: std::sync::atomic::AtomicU32,
    heard: tokio::sync::Notify,
}

#[async_trait::async_trait]
impl byte8_ledger_service::wake::WakeBus for MemoryBus {
    async fn announce(&self, _scope: &str, _tenant_id: &str) -> byte8_ledger_core::error::Result<()> {
        self.announced.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.heard.notify_one();
        Ok(())
    }

    async fn next(&self) -> byte8_ledger_core::error::Result<()> {
        self.heard.notified().await;
        Ok(())
    }
}

/// A process without workers announces the run it queued on the wake bus, and a process with
/// workers whose periodic look is an hour away (its first look done before the webhook) drains
/// it within the usual wait: only the announcement can have woken it. The process with workers
/// announces nothing (its own workers hear of its webhooks in memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_taken_by_a_process_without_workers_wakes_another_process_s_workers() {
    let mut w = World::new().await;
    w.pair("shop", "tenant-bus").await;
    let bus = Arc::new(MemoryBus::default());
    let slow = without_looks();
    w.start_with(Arc::new(SystemClock), 0, slow.clone()).await;
    let front = w.ledger.as_ref().unwrap().service.clone();
    assert!(front.set_wake_bus(Arc::clone(&bus) as _));
    let back = Service::new(Arc::clone(&w.store) as _, Arc::clone(front.providers()), Arc::new(SystemClock), slow);
    assert!(back.set_wake_bus(Arc::clone(&bus) as _));
    let workers = back.spawn_workers(1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(bus.announced.load(std::sync::atomic::Ordering::Relaxed), 1, "the front process announced it");
    wait_until("the invoice's sync state reaches Magento", || w.magento.callbacks("shop").len() == 1).await;
    assert_eq!(w.sage_invoices().len(), 1);
    workers.stop().await;
    w.stop().await;
}
