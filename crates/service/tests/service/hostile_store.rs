//! A hostile store: the service serving several merchants while one of them (its Magento) answers
//! as an attacker or a broken server would: redirects to an internal address, slow and dripping
//! answers, huge and non-JSON bodies, absurd `Retry-After` headers, the wrong entity, replayed
//! webhooks. The other tenants keep being served, nothing panics, nothing the hostile answers
//! carried reaches `/v1/status`, and every run ends with an outcome.
//!
//! The stores are the fake Magento of `support/magento.rs` (wiremock, checking the ledger's
//! tokens with the module's rules) with hostile answers mounted above it for the hostile shop, and
//! a raw TCP server for the byte-by-byte answer; the ledgers are in-memory ones, one per business
//! (the ledger is not what is under test here). Also here: the pairing call and the ledger clients
//! follow no redirect to another address, ledger URLs must be https, and a worker that panics goes
//! on with the next event.

use crate::support_magento as magento;

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use byte8_ledger_core::{
    clock::{Clock, SystemClock},
    engine::EngineConfig,
    http::RetryConfig,
    policy::SyncPolicy,
    providers::{
        AccountingProvider,
        memory::{InMemoryProvider, Method},
        sage::SageBuilder,
        xero::XeroBuilder,
    },
    store::{RunStatus, crypto::MasterKey, sqlite::SqliteStore},
};
use byte8_ledger_service::store::{Binding, BindingStore, DispatchStore};
use byte8_ledger_service::{
    HttpLimits, ProviderFactory, Service, ServiceConfig, WorkerPool,
    magento::{ApiKey, PairRequest, http_client},
};
use magento::FakeMagento;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use wiremock::{
    Mock, MockServer, ResponseTemplate,
    matchers::{any, path},
};

/// What every hostile answer carries: none of it may reach a status, an outcome or a log.
const SECRET: &str = "INTERNAL-SECRET-7f3a";

// ---------------------------------------------------------------------------------------------
// Panics: counted by a process-wide hook (those injected on purpose are told apart).

static UNEXPECTED_PANICS: AtomicUsize = AtomicUsize::new(0);

fn count_panics() {
    static HOOK: OnceLock<()> = OnceLock::new();
    HOOK.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !info.to_string().contains("injected by panic_next") {
                UNEXPECTED_PANICS.fetch_add(1, Ordering::SeqCst);
            }
            default(info);
        }));
    });
}

// ---------------------------------------------------------------------------------------------
// The world

/// One in-memory ledger per business.
#[derive(Debug, Default)]
struct MemoryLedgers(Mutex<HashMap<String, Arc<InMemoryProvider>>>);

impl MemoryLedgers {
    fn ledger(&self, scope: &str) -> Arc<InMemoryProvider> {
        Arc::clone(self.0.lock().unwrap().entry(scope.to_owned()).or_insert_with(|| Arc::new(InMemoryProvider::demo())))
    }
}

#[async_trait]
impl ProviderFactory for MemoryLedgers {
    async fn provider(&self, binding: &Binding) -> byte8_ledger_core::Result<Arc<dyn AccountingProvider>> {
        Ok(self.ledger(&binding.scope) as Arc<dyn AccountingProvider>)
    }
}

fn config() -> ServiceConfig {
    ServiceConfig {
        poll_interval: Duration::from_millis(20),
        callback_backoff: vec![Duration::from_millis(100)],
        magento_retry: RetryConfig {
            max_retries: 1,
            initial_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
            retry_timeout: Duration::from_secs(10),
        },
        magento_timeout: Duration::from_millis(700),
        engine: EngineConfig {
            retry_ladder: vec![Duration::from_millis(100)],
            max_attempts: 2,
            lease: Duration::from_secs(30),
            ..EngineConfig::default()
        },
        ..ServiceConfig::default()
    }
}

fn policy() -> SyncPolicy {
    let path = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("samples/policy.json");
    SyncPolicy::from_json(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn invoice(id: u64) -> Value {
    crate::support_magento::sample_events()[&format!("invoice.created:{id}")].2.clone()
}

struct World {
    _dir: tempfile::TempDir,
    magento: FakeMagento,
    store: Arc<SqliteStore>,
    ledgers: Arc<MemoryLedgers>,
    http: reqwest::Client,
    url: String,
    workers: Option<WorkerPool>,
    server: Option<tokio::task::JoinHandle<bool>>,
}

impl World {
    async fn new() -> Self {
        count_panics();
        let dir = tempfile::tempdir().unwrap();
        let key =
            MasterKey::from_base64(&SecretString::from("a2V5LWZvci10aGUtaG9zdGlsZS1zdG9yZS10ZXN0cyE=".to_owned()))
                .unwrap();
        let store = Arc::new(SqliteStore::open(dir.path().join("state.db"), Some(key)).await.unwrap());
        let http = reqwest::Client::builder().timeout(Duration::from_secs(30)).build().unwrap();
        Self {
            _dir: dir,
            magento: FakeMagento::start().await,
            store,
            ledgers: Arc::default(),
            http,
            url: String::new(),
            workers: None,
            server: None,
        }
    }

    /// Pairs shop `shop` (its keys in the fake) as tenant `tenant` on its own business, its
    /// Magento at `base_url` (the fake's shop unless given).
    async fn pair(&self, shop: &str, tenant: &str, base_url: Option<&str>) {
        let key = ApiKey::generate().unwrap();
        self.magento.add_paired_shop(shop, tenant, key.expose_secret());
        let base = base_url.map_or_else(|| self.magento.base_url(shop), str::to_owned);
        let b = Binding::new(tenant, &format!("biz-{shop}"), &base, key, policy(), SystemClock.now()).unwrap();
        self.store.put_binding(&b).await.unwrap();
    }

    async fn start(&mut self, workers: usize) {
        let service =
            Service::new(Arc::clone(&self.store) as _, Arc::clone(&self.ledgers) as _, Arc::new(SystemClock), config());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        self.url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::mem::forget(stop); // served until the test ends
        self.server = Some(tokio::spawn(byte8_ledger_service::serve(
            listener,
            service.router(),
            HttpLimits::default(),
            async move {
                let _ = stopped.await;
            },
        )));
        self.workers = Some(service.spawn_workers(workers));
    }

    async fn webhook(&self, shop: &str, key: &str) -> (u16, Value) {
        let s = crate::support_magento::sample_events();
        let (event, envelope, _) = &s[key];
        self.magento.webhook(&self.http, &self.url, shop, event, envelope).await
    }

    async fn status(&self, shop: &str, id: u64) -> (u16, Value) {
        let url = format!("{}/v1/status?entity_type=invoice&entity_id={id}", self.url);
        self.magento.v1(&self.http, reqwest::Method::GET, &url, shop).await
    }

    /// The run of an invoice of `shop`'s business once it is terminal (or queued with a failed
    /// attempt when `queued_ok`).
    async fn settled(&self, shop: &str, id: u64, queued_ok: bool) -> byte8_ledger_core::store::Run {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let runs = self
                .store
                .entity_runs(&format!("biz-{shop}"), &format!("tenant-{shop}"), &["invoice.created"], id)
                .await
                .unwrap();
            if let Some(run) = runs.into_iter().next()
                && (run.status.is_terminal() || (queued_ok && run.status == RunStatus::Queued && run.outcome.is_some()))
            {
                return run;
            }
            assert!(std::time::Instant::now() < deadline, "invoice {id} of {shop} never settled");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn wait_until<F: Fn() -> bool>(what: &str, f: F) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !f() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A Magento that answers every request with headers at once and then its body a byte at a time,
/// never idle long enough for a read timeout (it would hold a worker for ever without a total
/// timeout). Returns its base URL.
async fn dripping_magento() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else { return };
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n";
                if socket.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for _ in 0..100_000 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if socket.write_all(b" ").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

/// Mounts `answer` for `GET invoice/{id}` of `shop`, above the fake's own routes.
async fn hostile(magento: &FakeMagento, shop: &str, id: u64, answer: ResponseTemplate) {
    Mock::given(path(format!("/{shop}/rest/V1/byte8/invoice/{id}")))
        .respond_with(answer)
        .with_priority(1)
        .mount(&magento.server)
        .await;
}

// ---------------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_store_cannot_stop_leak_into_or_starve_the_service() {
    let mut w = World::new().await;
    // An internal service a redirect would point the worker at.
    let internal = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_string(format!("{{\"message\":\"{SECRET}\"}}")))
        .mount(&internal)
        .await;

    w.pair("good", "tenant-good", None).await;
    for id in [1001, 1002] {
        w.magento.put_entity("good", "invoice", id, invoice(id));
    }
    w.pair("evil", "tenant-evil", None).await;
    let drip = dripping_magento().await;
    w.pair("drip", "tenant-drip", Some(&drip)).await;

    let secret_page = format!("<html><body>{SECRET}</body></html>");
    // 1001: a redirect to the internal service.
    hostile(
        &w.magento,
        "evil",
        1001,
        ResponseTemplate::new(302).insert_header("Location", format!("{}/latest/meta-data/", internal.uri())),
    )
    .await;
    // 1005: a body far over the cap.
    hostile(&w.magento, "evil", 1005, ResponseTemplate::new(200).set_body_bytes(vec![b'['; 6 * 1024 * 1024])).await;
    // 1003: an HTML error page, again and again.
    hostile(&w.magento, "evil", 1003, ResponseTemplate::new(500).set_body_string(secret_page.clone())).await;
    // 1004: a 200 that is not JSON.
    hostile(&w.magento, "evil", 1004, ResponseTemplate::new(200).set_body_string(secret_page.clone())).await;
    // 1002: the right entity, with an absurd Retry-After on the 200 (a panic before the fix).
    hostile(
        &w.magento,
        "evil",
        1002,
        ResponseTemplate::new(200).set_body_json(invoice(1002)).insert_header("Retry-After", "1e300"),
    )
    .await;
    // 1006: throttled with a Retry-After beyond u64 (an overflow in the engine before the fix).
    hostile(
        &w.magento,
        "evil",
        1006,
        ResponseTemplate::new(429)
            .insert_header("Retry-After", "99999999999999999999999")
            .set_body_json(json!({"message": format!("slow down {SECRET}\n\u{202e}")})),
    )
    .await;
    // 1007: another invoice than the one asked for.
    hostile(&w.magento, "evil", 1007, ResponseTemplate::new(200).set_body_json(invoice(1001))).await;
    // 1010: an answer slower than the time limit.
    hostile(
        &w.magento,
        "evil",
        1010,
        ResponseTemplate::new(200).set_body_json(invoice(1010)).set_delay(Duration::from_secs(5)),
    )
    .await;

    w.start(2).await;
    let evil = [1001u64, 1002, 1003, 1004, 1005, 1006, 1007, 1010];
    for id in evil {
        let (status, body) = w.webhook("evil", &format!("invoice.created:{id}")).await;
        assert_eq!(status, 202, "{body}");
    }
    // A replayed delivery is the same run; a replayed token is refused.
    let (_, first) = w.webhook("evil", "invoice.created:1001").await;
    let (_, again) = w.webhook("evil", "invoice.created:1001").await;
    assert_eq!(first["sync_run_id"], again["sync_run_id"]);
    let token = w.magento.webhook_token("evil");
    let s = crate::support_magento::sample_events();
    let (event, envelope, _) = &s["invoice.created:1003"];
    let tenant = w.magento.tenant("evil");
    let once = magento::post(&w.http, &w.url, &tenant, event, envelope, Some(&token), None).await;
    let replay = magento::post(&w.http, &w.url, &tenant, event, envelope, Some(&token), None).await;
    assert_eq!((once.0, replay.0), (202, 401), "{replay:?}");
    let (status, body) = w.webhook("drip", "invoice.created:1001").await;
    assert_eq!(status, 202, "{body}");

    // The well-behaved store is served meanwhile.
    for id in [1001, 1002] {
        let (status, body) = w.webhook("good", &format!("invoice.created:{id}")).await;
        assert_eq!(status, 202, "{body}");
    }
    wait_until("the good store hears both invoices synced", || w.magento.callbacks("good").len() == 2).await;
    assert!(
        w.magento.callbacks("good").iter().all(|c| c["sync_status"] == "synced"),
        "{:?}",
        w.magento.callbacks("good")
    );
    assert_eq!(w.ledgers.ledger("biz-good").documents().len(), 2);

    // Every hostile run ends with an outcome.
    let now = SystemClock.now();
    for id in evil {
        let run = w.settled("evil", id, id == 1006).await;
        let outcome = run.outcome.as_ref().unwrap_or_else(|| panic!("invoice {id} has no outcome"));
        match id {
            1002 => assert_eq!(run.status, RunStatus::Synced, "{outcome:?}"),
            1006 => {
                // Waits a day at most, as the capped Retry-After says: not 3e15 years, not a panic.
                assert_eq!(run.status, RunStatus::Queued, "{outcome:?}");
                let next = run.next_attempt_at.expect("a next attempt");
                assert!(
                    next > now + chrono::Duration::hours(23) && next <= now + chrono::Duration::hours(25),
                    "{next}"
                );
            }
            _ => assert_eq!(run.status, RunStatus::DeadLettered, "invoice {id}: {outcome:?}"),
        }
    }
    let drip_run = w.settled("drip", 1001, false).await;
    assert_eq!(drip_run.status, RunStatus::DeadLettered, "{:?}", drip_run.outcome);
    assert_eq!(w.ledgers.ledger("biz-evil").documents().len(), 1, "only the right invoice 1002 was posted");

    // Nothing the hostile answers carried reaches the status the store reads back.
    for id in evil {
        let (status, body) = w.status("evil", id).await;
        assert_eq!(status, 200, "{body}");
        let text = body.to_string();
        assert!(!text.contains(SECRET) && !text.contains("<html") && !text.contains("meta-data"), "{id}: {text}");
        assert!(!text.contains('\u{202e}'), "{id}: {text}");
        if id != 1002 {
            assert!(body["runs"][0]["message"].as_str().is_some_and(|m| !m.is_empty()), "{id}: {text}");
        }
    }
    let (_, redirected) = w.status("evil", 1001).await;
    assert!(redirected["runs"][0]["message"].as_str().unwrap().contains("redirect"), "{redirected}");
    let (_, huge) = w.status("evil", 1005).await;
    assert!(huge["runs"][0]["message"].as_str().unwrap().contains("larger than 4 MiB"), "{huge}");
    let (_, wrong) = w.status("evil", 1007).await;
    assert!(wrong["runs"][0]["message"].as_str().unwrap().contains("does not match the requested id 1007"), "{wrong}");
    assert!(internal.received_requests().await.unwrap().is_empty(), "the redirect was followed");
    // The hostile store heard every terminal outcome back.
    wait_until("the hostile store hears every terminal run", || w.magento.callbacks("evil").len() == 7).await;

    assert_eq!(UNEXPECTED_PANICS.load(Ordering::SeqCst), 0, "something panicked");
    if let Some(workers) = w.workers.take() {
        assert!(workers.stop_within(Duration::from_secs(30)).await, "the workers stop by themselves");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_panics_dead_letters_that_event_and_syncs_the_next() {
    let mut w = World::new().await;
    w.pair("shop", "tenant-shop", None).await;
    for id in [1001, 1002] {
        w.magento.put_entity("shop", "invoice", id, invoice(id));
    }
    let ledger = w.ledgers.ledger("biz-shop");
    ledger.panic_next(Method::PostInvoice);
    // One worker: the one that panicked is the one that syncs the next event.
    w.start(1).await;
    let (status, _) = w.webhook("shop", "invoice.created:1001").await;
    assert_eq!(status, 202);
    let run = w.settled("shop", 1001, false).await;
    assert_eq!(run.status, RunStatus::DeadLettered);
    let outcome = run.outcome.unwrap();
    assert_eq!(outcome.error_code.map(|c| c.as_str()), Some("internal"));
    assert!(outcome.message.as_deref().unwrap().contains("panicked"), "{outcome:?}");

    let (status, _) = w.webhook("shop", "invoice.created:1002").await;
    assert_eq!(status, 202);
    let run = w.settled("shop", 1002, false).await;
    assert_eq!(run.status, RunStatus::Synced, "{:?}", run.outcome);
    wait_until("Magento hears both outcomes", || w.magento.callbacks("shop").len() == 2).await;
    let callbacks = w.magento.callbacks("shop");
    let by_id = |id: u64| callbacks.iter().find(|c| c["magento_entity_id"] == id).cloned().unwrap();
    assert_eq!(
        (by_id(1001)["sync_status"].clone(), by_id(1001)["error_code"].clone()),
        (json!("failed"), json!("internal"))
    );
    assert_eq!(by_id(1002)["sync_status"], "synced");
    assert_eq!(ledger.documents().len(), 1, "only the second invoice was posted");
    if let Some(workers) = w.workers.take() {
        assert!(workers.stop_within(Duration::from_secs(30)).await);
    }
}

// ---------------------------------------------------------------------------------------------
// The pairing call and the ledger clients

#[tokio::test]
async fn the_pairing_call_follows_no_redirect_so_the_new_key_goes_nowhere_else() {
    let elsewhere = MockServer::start().await;
    Mock::given(any()).respond_with(ResponseTemplate::new(200)).mount(&elsewhere).await;
    let store = MockServer::start().await;
    for status in [301u16, 302, 307, 308] {
        store.reset().await;
        Mock::given(any())
            .respond_with(
                ResponseTemplate::new(status)
                    .insert_header("Location", format!("{}/steal", elsewhere.uri()))
                    .set_body_string(format!("<a href=x>{SECRET}</a>")),
            )
            .mount(&store)
            .await;
        let request = PairRequest::new(
            &store.uri(),
            "0123456789abcdef0123456789abcdef",
            "tenant-1",
            ApiKey::generate().unwrap(),
            "https://ledger.example.com",
        )
        .unwrap();
        let e = request.send(&http_client().unwrap(), &SystemClock).await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains(&format!("redirect (HTTP {status})")) && !text.contains(SECRET), "{text}");
        assert!(!e.is_retryable(), "{e:?}");
        assert_eq!(store.received_requests().await.unwrap().len(), 1, "sent once, not retried");
    }
    assert!(elsewhere.received_requests().await.unwrap().is_empty(), "the key was relayed");
}

/// A ledger that answers every call with a redirect to another origin.
async fn redirecting_ledger(elsewhere: &MockServer) -> MockServer {
    let ledger = MockServer::start().await;
    Mock::given(path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "access_token": "a", "refresh_token": "r2", "expires_in": 300, "token_type": "bearer"
        })))
        .mount(&ledger)
        .await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(302).insert_header("Location", format!("{}/steal", elsewhere.uri())))
        .mount(&ledger)
        .await;
    ledger
}

#[tokio::test]
async fn the_ledger_clients_follow_no_redirect_to_another_origin() {
    count_panics();
    let elsewhere = MockServer::start().await;
    Mock::given(any())
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"$items": []})))
        .mount(&elsewhere)
        .await;
    let ledger = redirecting_ledger(&elsewhere).await;
    let store = Arc::new(byte8_ledger_core::auth::MemoryTokenStore::new(Some(
        byte8_ledger_core::auth::TokenSet::from_refresh_token(SecretString::from("r1".to_owned())),
    )));
    let sage = SageBuilder::new()
        .with_client_id("id")
        .with_client_secret(SecretString::from("secret".to_owned()))
        .with_business_id("biz")
        .with_base_url(format!("{}/v3.1", ledger.uri()))
        .with_token_url(format!("{}/token", ledger.uri()))
        .with_token_store(Arc::clone(&store) as _)
        .with_retry(RetryConfig::none())
        .build()
        .unwrap();
    assert!(sage.find_contact("C1").await.is_err());
    let xero = XeroBuilder::new()
        .with_client_id("id")
        .with_client_secret(SecretString::from("secret".to_owned()))
        .with_tenant_id("tenant")
        .with_base_url(format!("{}/api.xro/2.0", ledger.uri()))
        .with_token_url(format!("{}/token", ledger.uri()))
        .with_token_store(store as _)
        .with_retry(RetryConfig::none())
        .build()
        .unwrap();
    assert!(xero.find_contact("C1").await.is_err());
    assert!(ledger.received_requests().await.unwrap().len() >= 2, "the ledger was called");
    assert!(elsewhere.received_requests().await.unwrap().is_empty(), "a redirect to another origin was followed");
    assert_eq!(UNEXPECTED_PANICS.load(Ordering::SeqCst), 0);
}

#[test]
fn ledger_urls_must_be_https_except_on_loopback() {
    let sage = |url: &str| {
        SageBuilder::new()
            .with_client_id("id")
            .with_client_secret(SecretString::from("secret".to_owned()))
            .with_business_id("biz")
            .with_base_url(url)
            .build()
    };
    let e = sage("http://api.accounting.sage.com/v3.1").unwrap_err();
    assert!(e.field_errors().iter().any(|f| f.path == "base_url" && f.rule.contains("https")), "{e}");
    assert!(sage("http://127.0.0.1:9/v3.1").is_ok());
    assert!(sage("https://api.accounting.sage.com/v3.1").is_ok());
    let xero = XeroBuilder::new()
        .with_client_id("id")
        .with_client_secret(SecretString::from("secret".to_owned()))
        .with_tenant_id("t")
        .with_token_url("http://identity.xero.com/connect/token")
        .build()
        .unwrap_err();
    assert!(xero.field_errors().iter().any(|f| f.path == "token_url"), "{xero}");
}

// ---------------------------------------------------------------------------------------------
// Slow clients of the service

/// Reads what the server sends until it closes (or `deadline`, a test failure, passes).
async fn read_to_close(socket: &mut tokio::net::TcpStream) -> String {
    let mut out = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), socket.read_to_end(&mut out)).await;
    assert!(read.is_ok(), "the service kept a slow connection open");
    String::from_utf8_lossy(&out).into_owned()
}

async fn serve_with(
    limits: HttpLimits,
    request_timeout: Duration,
) -> (String, tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<bool>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(SqliteStore::open(dir.path().join("state.db"), None).await.unwrap());
    let config = ServiceConfig { request_timeout, ..config() };
    let service = Service::new(store as _, Arc::new(MemoryLedgers::default()) as _, Arc::new(SystemClock), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        let _dir = dir;
        byte8_ledger_service::serve(listener, service.router(), limits, async move {
            let _ = stopped.await;
        })
        .await
    });
    (addr, stop, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_are_cut_off_and_shutdown_does_not_wait_for_them() {
    let limits = HttpLimits {
        header_read_timeout: Duration::from_millis(300),
        max_connections: 4,
        shutdown_timeout: Duration::from_millis(300),
    };
    let (addr, stop, server) = serve_with(limits, Duration::from_millis(500)).await;
    // Headers that never end: the connection is closed.
    let mut slow_head = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow_head.write_all(b"GET /v1/tile/health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let answer = read_to_close(&mut slow_head).await;
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 408"), "{answer}");
    // A body that never ends: 503 (Magento retries; a 4xx would dead-letter the webhook).
    let mut slow_body = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow_body
        .write_all(b"POST /webhooks/magento/t1/invoice.created HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{\"a\":")
        .await
        .unwrap();
    let answer = read_to_close(&mut slow_body).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    // The service still answers.
    let health = reqwest::get(format!("http://{addr}/v1/tile/health")).await.unwrap();
    assert_eq!(health.status(), 401, "unauthenticated, but served");
    // More connections than the limit: the fifth is served once one of the four closes.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /v1/tile/health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        held.push(s);
    }
    let fifth = reqwest::Client::new().get(format!("http://{addr}/v1/tile/health")).send().await.unwrap();
    assert_eq!(fifth.status(), 401);
    drop(held);

    // Shutdown with a request in flight ends within the limit, not when the client pleases.
    let mut in_flight = tokio::net::TcpStream::connect(&addr).await.unwrap();
    in_flight
        .write_all(b"POST /webhooks/magento/t1/invoice.created HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.send(()).unwrap();
    let ended = tokio::time::timeout(Duration::from_secs(20), server).await;
    assert!(ended.is_ok(), "serve did not return after shutdown");
    let _ = in_flight.shutdown().await;

    // With nothing in flight, shutdown is clean.
    let (_, stop, server) = serve_with(HttpLimits::default(), Duration::from_secs(5)).await;
    stop.send(()).unwrap();
    assert!(server.await.unwrap(), "a shutdown with nothing in flight is clean");
}
