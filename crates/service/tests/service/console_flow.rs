//! The console end to end against the Sage simulator and a fake Magento (wiremock): pairing a
//! store from the Stores page, a webhook that waits for its business's connection, the OAuth
//! connect routes (state checks, code exchange, the business stored), the waiting event synced
//! once the connection is there, the policy form (a dropdown, a field error, restore); over plain
//! HTTP, then the whole walk of the issue in a real browser with screenshots (connect, pair,
//! webhooks, the runs, a failed run's attempts, its retry, the rate limit's use, the policy,
//! log out).

use std::{sync::Arc, time::Duration};

use byte8_ledger_core::{
    clock::{Clock, ManualClock, SystemClock},
    engine::EngineConfig,
    reference::ReferenceData,
    store::{ConnectionStore, ConnectionStoreDyn, RunStatus, RunStore, crypto::MasterKey, sqlite::SqliteStore},
};
use byte8_ledger_service::store::{BindingStore, ServiceStore};
use byte8_ledger_service::{
    HttpLimits, SageProviders, Service, ServiceConfig, StoredProviders, WorkerPool,
    console::{Console, ConsoleConfig, ConsoleStore, LedgerApp, password::hash_password},
};
use byte8_ledger_simulators::{Fault, SageSimulator, SimConfig, SimServer};
use reqwest::{StatusCode, header};
use secrecy::SecretString;
use serde_json::Value;

use crate::{
    browser::Browser,
    console::{OPERATOR, PASSWORD, csrf_of_html, set_cookie},
    support_magento::FakeMagento,
};

const BUSINESS: &str = "demo-business";

/// The sample policy (the simulator's demo business's ids).
const POLICY: &str = include_str!("../../../../samples/policy.json");

/// The simulator, a fake Magento, the service with one worker and its console.
pub struct FlowWorld {
    _dir: tempfile::TempDir,
    pub sim: SageSimulator,
    pub server: SimServer,
    pub magento: FakeMagento,
    pub store: Arc<SqliteStore>,
    pub base: String,
    pub http: reqwest::Client,
    workers: Option<WorkerPool>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl FlowWorld {
    pub async fn start() -> Self {
        Self::start_with(Duration::from_millis(20)).await
    }

    /// The same world, the workers' periodic look for work `poll_interval` apart.
    pub async fn start_with(poll_interval: Duration) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // Time stands still at the real now: tokens stay fresh, runs due now are due.
        let clock = Arc::new(ManualClock::new(SystemClock.now()));
        let sim = SageSimulator::new(SimConfig::default());
        sim.add_business(ReferenceData::demo_uk(chrono::DateTime::UNIX_EPOCH));
        let server = sim.serve().await.unwrap();
        let store =
            Arc::new(SqliteStore::open(dir.path().join("state.db"), Some(MasterKey::generate())).await.unwrap());
        let sage = SageProviders::new(Arc::clone(&store) as _).with_clock(Arc::clone(&clock) as _).with_builder(|b| {
            b.with_client_id("demo-client").with_client_secret(SecretString::from("demo-secret".to_owned()))
        });
        let providers = Arc::new(StoredProviders::new(Arc::clone(&store) as _).with_sage(sage));
        let config = ServiceConfig {
            poll_interval,
            engine: EngineConfig { retry_ladder: vec![Duration::from_millis(50)], ..EngineConfig::default() },
            retention: None,
            ..ServiceConfig::default()
        };
        let service = Service::new(Arc::clone(&store) as _, providers, Arc::clone(&clock) as _, config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let console_config = ConsoleConfig::new(url::Url::parse(&format!("{base}/")).unwrap());
        let mut app = LedgerApp::sage("demo-client", SecretString::from("demo-secret".to_owned()));
        app.authorize_url = server.authorize_url();
        app.token_url = server.token_url();
        app.base_url = server.base_url();
        app.revoke_url = Some(server.revoke_url());
        let console =
            Console::new(&service, Arc::clone(&store) as Arc<dyn ConsoleStore>, console_config, &MasterKey::generate())
                .with_ledger_app(app);
        let hash = hash_password(&SecretString::from(PASSWORD.to_owned())).unwrap();
        console.store().put_operator(OPERATOR, &hash, clock.now()).await.unwrap();
        let router = service.router().merge(console.router());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(byte8_ledger_service::serve(listener, router, HttpLimits::default(), async {
            let _ = stopped.await;
        }));
        let workers = service.spawn_workers(1);
        let magento = FakeMagento::start().await;
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { _dir: dir, sim, server, magento, store, base, http, workers: Some(workers), stop: Some(stop) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The Stores page's pairing form for `shop` with `code`, posting to the demo business.
    pub fn pair_form(&self, csrf: &str, code: &str) -> Vec<(&'static str, String)> {
        vec![
            ("csrf_token", csrf.to_owned()),
            ("magento_base_url", self.magento.base_url("shop")),
            ("pairing_code", code.to_owned()),
            ("business_id", BUSINESS.to_owned()),
            ("ledger_base_url", self.base.clone()),
            ("policy", POLICY.to_owned()),
        ]
    }

    /// Posts `form` to `path` with the session `cookie` (no redirect followed).
    pub async fn post(&self, path: &str, cookie: &str, form: &(impl serde::Serialize + ?Sized)) -> reqwest::Response {
        self.http.post(self.url(path)).header(header::COOKIE, cookie).form(form).send().await.unwrap()
    }

    /// `GET /connect/sage` for the demo business with the session `cookie`: the redirect to the
    /// simulator's authorize page.
    pub async fn start_connect(&self, cookie: &str) -> reqwest::Response {
        self.http
            .get(self.url(&format!("/connect/sage?business={BUSINESS}")))
            .header(header::COOKIE, cookie)
            .send()
            .await
            .unwrap()
    }

    /// The tenant paired for `shop` (there is one).
    pub async fn tenant(&self) -> String {
        self.store.bindings().await.unwrap().into_iter().next().expect("a paired store").tenant_id
    }

    /// Sends invoice 1001's webhook as the shop's module does (its entity served by the fake).
    pub async fn send_invoice(&self, shop: &str) -> (u16, Value) {
        self.send(shop, "invoice.created:1001").await
    }

    /// Sends the sample event of `key` as the shop's module does (its entity served by the fake).
    pub async fn send(&self, shop: &str, key: &str) -> (u16, Value) {
        let samples = crate::support_magento::sample_events();
        let (event, envelope, entity) = samples.get(key).cloned().expect("a sample event");
        let kind = event.split('.').next().unwrap_or_default().to_owned();
        self.magento.put_entity(shop, &kind, envelope["magento_entity_id"].as_u64().unwrap(), entity);
        self.magento.webhook(&reqwest::Client::new(), &self.base, shop, &event, &envelope).await
    }

    /// The status of the run of `key` and its id, waiting (up to 20 s) until it is `want`.
    pub async fn wait_status(&self, key: &str, want: RunStatus) -> (RunStatus, i64) {
        let mut last = None;
        for _ in 0..400 {
            last = self.store.find_by_key(BUSINESS, key).await.unwrap().map(|r| (r.status, r.id));
            if last.is_some_and(|l| l.0 == want) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if last.is_none_or(|l| l.0 != want) {
            let run = self.store.find_by_key(BUSINESS, key).await.unwrap();
            eprintln!("run {key}: {:?}", run.map(|r| r.outcome));
        }
        last.expect("the run exists")
    }
}

impl Drop for FlowWorld {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(w) = self.workers.take() {
            tokio::spawn(w.stop_within(Duration::from_secs(2)));
        }
    }
}

/// A logged-in plain HTTP client: the session cookie and its CSRF token.
async fn login(w: &FlowWorld) -> (String, String) {
    let page = w.http.get(w.url("/console/login")).send().await.unwrap();
    let login_cookie = set_cookie(&page, "byte8_console_login").unwrap();
    let token = csrf_of_html(&page.text().await.unwrap()).unwrap();
    let r = w
        .http
        .post(w.url("/console/login"))
        .header(header::COOKIE, format!("byte8_console_login={login_cookie}"))
        .form(&[("csrf_token", token.as_str()), ("name", OPERATOR), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    let session = set_cookie(&r, "byte8_console").unwrap();
    let html = w
        .http
        .get(w.url("/console"))
        .header(header::COOKIE, format!("byte8_console={session}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    (session, csrf_of_html(&html).unwrap())
}

fn location(r: &reqwest::Response) -> String {
    r.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

/// With the workers' periodic look for work an hour away (its first one done at start, before
/// anything is queued), the event waiting for its business's connection goes when the OAuth
/// callback stores the connection, and a dead letter goes when an operator retries it (alone, or
/// with every business's): only the console's own announcements to the workers can have started
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connecting_a_business_and_retrying_a_run_wake_the_workers_at_once() {
    let w = FlowWorld::start_with(Duration::from_secs(3600)).await;
    let (session, csrf) = login(&w).await;
    let cookie = format!("byte8_console={session}");
    w.magento.add_shop("shop", "code-1234");
    let form = w.pair_form(&csrf, "code-1234");
    let r = w.post("/console/stores", &cookie, &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "paired");
    assert_eq!(w.send_invoice("shop").await.0, 202);

    // Connect: the waiting invoice is synced without the periodic look.
    let r = w.start_connect(&cookie).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let oauth_cookie = set_cookie(&r, "byte8_oauth").unwrap();
    let back = crate::support_browser::consent(&location(&r), "approve").await;
    let callback = w.url(&format!("/oauth/sage/callback?{}", back.query().unwrap()));
    let r = w.http.get(&callback).header(header::COOKIE, format!("byte8_oauth={oauth_cookie}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(w.wait_status("invoice.created:1001", RunStatus::Synced).await.0, RunStatus::Synced);

    // A dead letter (Sage refuses the invoice), retried by the operator: synced at once.
    w.sim.script(Some("POST /sales_invoices"), Fault::AccessDenied);
    assert_eq!(w.send("shop", "invoice.created:1002").await.0, 202);
    let failed = w.wait_status("invoice.created:1002", RunStatus::DeadLettered).await.1;
    let r = w.post(&format!("/console/runs/{failed}/retry"), &cookie, &[("csrf_token", csrf.as_str())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(w.wait_status("invoice.created:1002", RunStatus::Synced).await.0, RunStatus::Synced);
    assert_eq!(w.sim.business(BUSINESS).unwrap().invoices.len(), 2, "each invoice posted once");

    // Another dead letter, retried with every business's: synced at once too.
    w.sim.script(Some("POST /sales_invoices"), Fault::AccessDenied);
    assert_eq!(w.send("shop", "invoice.created:1003").await.0, 202);
    w.wait_status("invoice.created:1003", RunStatus::DeadLettered).await;
    let form = [("csrf_token", csrf.as_str()), ("store", "*"), ("confirm", "yes")];
    let r = w.post("/console/runs/retry-dead-letters", &cookie, &form).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(w.wait_status("invoice.created:1003", RunStatus::Synced).await.0, RunStatus::Synced);
    assert_eq!(w.sim.business(BUSINESS).unwrap().invoices.len(), 3, "each invoice posted once");
}

#[tokio::test]
async fn over_http_a_store_paired_and_a_business_connected_through_oauth_syncs_the_waiting_event() {
    let w = FlowWorld::start().await;
    let (session, csrf) = login(&w).await;
    let cookie = format!("byte8_console={session}");

    // Pair from the Stores page; a wrong code is a field error and spends nothing.
    w.magento.add_shop("shop", "code-1234");
    let form = |code: &str| w.pair_form(&csrf, code);
    let r = w.post("/console/stores", &cookie, &form("wrong-code")).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(r.text().await.unwrap().contains("The store was not paired"));
    let r = w.post("/console/stores", &cookie, &form("code-1234")).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "paired");
    let tenant = w.tenant().await;
    assert_eq!(w.magento.tenant("shop"), tenant, "Magento holds the tenant the service stored");

    // A webhook before the business is connected: queued, waiting.
    let (status, _) = w.send_invoice("shop").await;
    assert_eq!(status, 202);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(w.store.find_by_key(BUSINESS, "invoice.created:1001").await.unwrap().unwrap().status, RunStatus::Queued);
    let overview =
        w.http.get(w.url("/console")).header(header::COOKIE, &cookie).send().await.unwrap().text().await.unwrap();
    assert!(overview.contains("not connected: events wait"), "{overview}");

    // /connect without a session: the login page.
    let r = w.http.get(w.url("/connect/sage")).send().await.unwrap();
    assert!(location(&r).starts_with("/console/login"));
    // With one: to the simulator's authorize page, with a signed state and the Lax cookie.
    let r = w.start_connect(&cookie).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let authorize = location(&r);
    assert!(authorize.starts_with(&w.server.authorize_url()), "{authorize}");
    assert!(
        authorize.contains(&format!(
            "redirect_uri={}",
            url::form_urlencoded::byte_serialize(w.url("/oauth/sage/callback").as_bytes()).collect::<String>()
        )),
        "{authorize}"
    );
    let oauth_line = crate::console::set_cookie_line(&r, "byte8_oauth").unwrap();
    assert!(
        oauth_line.contains("SameSite=Lax") && oauth_line.contains("HttpOnly") && oauth_line.contains("Path=/oauth/"),
        "{oauth_line}"
    );
    let oauth_cookie = set_cookie(&r, "byte8_oauth").unwrap();
    assert!(!oauth_cookie.contains(&session), "the session id itself is not in the OAuth cookie");

    // The person approves at the simulator; it redirects back with a code and the state.
    let back = crate::support_browser::consent(&authorize, "approve").await;
    assert_eq!(back.path(), "/oauth/sage/callback");
    let callback = w.url(&format!("/oauth/sage/callback?{}", back.query().unwrap()));
    // Without the browser's OAuth cookie (another browser): refused, nothing stored.
    let r = w.http.get(&callback).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("another session"));
    // An altered state: refused.
    let forged = callback.replace("state=", "state=x");
    let r = w.http.get(&forged).header(header::COOKIE, format!("byte8_oauth={oauth_cookie}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(w.store.connection(BUSINESS).await.unwrap().is_none());
    // The right one: exchanged, stored, reference data cached.
    let r = w.http.get(&callback).header(header::COOKIE, format!("byte8_oauth={oauth_cookie}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("Connected to"), "{page}");
    let connection = w.store.connection(BUSINESS).await.unwrap().expect("stored");
    assert_eq!(connection.base_url, w.server.base_url());
    assert!(w.store.tokens(BUSINESS).await.unwrap().is_some());
    assert!(w.store.reference(BUSINESS).await.unwrap().is_some());
    // The same callback again: a replayed state.
    let r = w.http.get(&callback).header(header::COOKIE, format!("byte8_oauth={oauth_cookie}")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert!(r.text().await.unwrap().contains("used already"));

    // The waiting event is synced now that the business has a connection.
    assert_eq!(w.wait_status("invoice.created:1001", RunStatus::Synced).await.0, RunStatus::Synced);
    assert_eq!(w.sim.business(BUSINESS).unwrap().invoices.len(), 1, "one invoice in the ledger");

    // The connections page shows the token's days left (Sage: 31 days).
    let page = w
        .http
        .get(w.url("/console/connections"))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("days left"), "{page}");

    // Policy: a tax rate from the dropdown saves; an unknown id is the loader's field error.
    let reference = w.store.reference(BUSINESS).await.unwrap().unwrap();
    let rate = reference.tax_rates.iter().find(|t| t.id != "GB_STANDARD").unwrap().id.clone();
    let page = w
        .http
        .get(w.url(&format!("/console/policy?tenant={tenant}")))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains(&format!("<option value=\"{rate}\"")), "the dropdown lists the business's tax rates");
    let mut fields: Vec<(String, String)> =
        vec![("csrf_token".into(), csrf.clone()), ("default_tax_rate_id".into(), rate.clone())];
    let r = w.post(&format!("/console/policy/{tenant}"), &cookie, &fields).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER, "saved");
    assert_eq!(
        w.store.binding(&tenant).await.unwrap().unwrap().policy.default_tax_rate_id.as_deref(),
        Some(rate.as_str())
    );
    fields[1].1 = "no-such-rate".into();
    let r = w.post(&format!("/console/policy/{tenant}"), &cookie, &fields).await;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let page = r.text().await.unwrap();
    assert!(page.contains("id=\"default_tax_rate_id-error\"") && page.contains("no-such-rate"), "{page}");
    assert_eq!(
        w.store.binding(&tenant).await.unwrap().unwrap().policy.default_tax_rate_id.as_deref(),
        Some(rate.as_str()),
        "unchanged"
    );
    // History: as paired (1), edited (2); restoring 1 makes version 3 with the old policy.
    let versions = {
        let c: &dyn ConsoleStore = w.store.as_ref();
        c.policy_versions(&tenant).await.unwrap()
    };
    assert_eq!(
        versions.iter().map(|v| (v.version, v.changed_by.as_str())).collect::<Vec<_>>(),
        [(2, OPERATOR), (1, OPERATOR)]
    );
    let r = w.post(&format!("/console/policy/{tenant}/restore/1"), &cookie, &[("csrf_token", csrf.as_str())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        w.store.binding(&tenant).await.unwrap().unwrap().policy.default_tax_rate_id.as_deref(),
        Some("GB_STANDARD"),
        "version 1's"
    );

    // Disconnect revokes at the simulator and forgets the tokens.
    let r =
        w.post(&format!("/console/connections/{BUSINESS}/disconnect"), &cookie, &[("csrf_token", csrf.as_str())]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).contains("done=disconnected"), "{}", location(&r));
    assert!(w.store.tokens(BUSINESS).await.unwrap().is_none());
}

/// The requests the simulator served for the business so far: every request it counted (token
/// requests are not among them) but the browser's visits to its authorize page (and its icon)
/// and the connect flow's one listing of the businesses the token reaches (made before a
/// business is chosen: no business's request).
fn business_requests(sim: &SageSimulator) -> u64 {
    let requests = sim.requests();
    let served: u64 = requests
        .iter()
        .filter(|(endpoint, _)| !endpoint.starts_with("GET /oauth2/") && endpoint.as_str() != "GET /favicon.ico")
        .map(|(_, n)| n)
        .sum();
    served - 1
}

/// The browser test of issue 16, the whole walk in its order: log in, connect the simulator
/// through the OAuth flow, pair a fake store (wiremock), send webhooks, see the runs, open a
/// failed run's attempts, retry it and see it synced, see the rate limit's use on the overview,
/// change the policy with a dropdown, see the field error for an invalid value, log out; a
/// screenshot of each page under `target/browser-screenshots/console_flow/`. The only browser
/// test (each costs CI time): the login's refusal of a wrong password and the logged-out
/// redirect are checked here too.
#[tokio::test]
async fn in_a_browser_an_operator_walks_the_whole_console() {
    let Some(b) = Browser::start("console_flow").await else { return };
    let w = FlowWorld::start().await;

    // Log in (no session: the login page; a wrong password is refused).
    b.goto(&w.url("/console")).await;
    b.wait_path("/console/login").await;
    b.shot("login").await;
    b.fill("#name", OPERATOR).await;
    b.fill("#password", "not the password").await;
    b.click("form.stack button[type=submit]").await;
    b.wait_path("/console/login").await;
    assert!(b.text("[role=alert]").await.contains("Wrong name or password"));
    b.fill("#name", OPERATOR).await;
    b.fill("#password", PASSWORD).await;
    b.click("form.stack button[type=submit]").await;
    b.wait_path("/console").await;
    assert_eq!(b.text("h1").await, "Overview");
    assert_eq!(b.text("nav.main a[aria-current=page]").await, "Overview");
    b.shot("overview-empty").await;

    // Connect Sage through the OAuth flow: the simulator's approval page, then back.
    b.click("nav.main a[href='/console/connections']").await;
    b.wait_path("/console/connections").await;
    b.shot("connections-empty").await;
    b.click("#connect-sage").await;
    b.find("#approve").await;
    b.shot("simulator-approval").await;
    b.click("#approve").await;
    b.wait_path("/oauth/sage/callback").await;
    assert!(b.text("[role=status]").await.contains("Connected to"));
    b.shot("connected").await;
    b.click("#continue").await;
    b.wait_path("/console/connections").await;
    assert!(b.source().await.contains("days left"));
    assert!(w.store.tokens(BUSINESS).await.unwrap().is_some(), "the business's tokens are stored");
    b.shot("connections").await;

    // Pair the fake store.
    w.magento.add_shop("shop", "code-5678");
    b.click("nav.main a[href='/console/stores']").await;
    b.wait_path("/console/stores").await;
    b.fill("#magento_base_url", &w.magento.base_url("shop")).await;
    b.fill("#pairing_code", "code-5678").await;
    b.fill("#business_id", BUSINESS).await;
    b.fill("#policy", POLICY).await;
    b.shot("stores-pair-form").await;
    b.click("#pair-submit").await;
    b.wait_path("/console/stores").await;
    assert!(b.text("[role=status]").await.contains("Store paired"));
    b.shot("stores-paired").await;
    let tenant = w.tenant().await;

    // Webhooks: Sage refuses the first invoice it is sent (403: dead-lettered); the next syncs.
    w.sim.script(Some("POST /sales_invoices"), Fault::AccessDenied);
    assert_eq!(w.send("shop", "invoice.created:1001").await.0, 202);
    let failed = w.wait_status("invoice.created:1001", RunStatus::DeadLettered).await.1;
    assert_eq!(w.send("shop", "invoice.created:1002").await.0, 202);
    w.wait_status("invoice.created:1002", RunStatus::Synced).await;

    // The runs table: both runs, the failed one with its Retry; filtered on the dead letters.
    b.click("nav.main a[href='/console/runs']").await;
    b.wait_path("/console/runs").await;
    assert_eq!(b.text("h1").await, "Sync runs");
    assert_eq!(b.text("#runs-count").await, "Runs 1–2 of 2");
    assert!(b.has(&format!("tr[data-run='{failed}'][data-status=dead_lettered] form button")).await);
    b.shot("runs").await;
    b.select("#field-status", "dead_lettered").await;
    b.fill("#field-q", "000000101").await;
    b.click("form.filters button[type=submit]").await;
    b.wait_path("/console/runs").await;
    assert_eq!(b.text("#runs-count").await, "Runs 1–1 of 1");
    assert!(b.url().await.query().unwrap_or_default().contains("status=dead_lettered"));
    b.shot("runs-dead-lettered").await;

    // The failed run: its attempt, with the request Sage was sent and Sage's refusal.
    b.click(&format!("tr[data-run='{failed}'] td a")).await;
    b.wait_path(&format!("/console/runs/{failed}")).await;
    assert_eq!(b.text("#run-status").await, "dead-lettered");
    let refused = "#attempt-1 ol.exchanges > li:last-child details";
    let summary = b.text(&format!("{refused} summary")).await;
    assert!(summary.contains("/sales_invoices → 403") && summary.starts_with("POST "), "{summary}");
    b.click(&format!("{refused} summary")).await;
    let opened = b.text(refused).await;
    assert!(opened.contains("MultiUserAccessDenied"), "Sage's refusal: {opened}");
    assert!(opened.contains("MAG-000000101"), "the invoice Sage was sent: {opened}");
    assert!(!b.source().await.contains("sim-access-"), "no token on the page");
    b.shot("failed-run-attempt").await;

    // Retry: back in line, then synced by the worker; the attempt numbers continue (attempt 2).
    b.click(&format!("form[action='/console/runs/{failed}/retry'] button")).await;
    b.wait_path(&format!("/console/runs/{failed}")).await;
    assert!(b.text("[role=status]").await.contains("back in line"));
    w.wait_status("invoice.created:1001", RunStatus::Synced).await;
    b.goto(&w.url(&format!("/console/runs/{failed}"))).await;
    assert_eq!(b.text("#run-status").await, "synced");
    assert!(b.text("#run-ledger").await.contains("SI-"), "the ledger's number");
    assert!(b.text("#attempt-1-title").await.starts_with("Attempt 1: failed"), "the refused attempt is kept");
    assert!(b.text("#attempt-2-title").await.starts_with("Attempt 2: synced"), "the retry's attempt numbered on");
    b.shot("retried-run-synced").await;
    assert_eq!(w.sim.business(BUSINESS).unwrap().invoices.len(), 2, "each invoice posted once");

    // The overview: the rate limit's use is the business's ledger requests of the last hour (as
    // the simulator counted them: the reference data loaded at the connection and by the worker,
    // the runs' requests) against Sage's 200 a minute for an hour; the 403 was no 429.
    let used = business_requests(&w.sim);
    assert!(used >= 3, "at least the three invoice posts: {used}");
    b.goto(&w.url("/console")).await;
    let row = b.text(&format!("tr[data-business='{BUSINESS}'] td.rate-use")).await;
    assert_eq!(row, format!("{used} / 12,000 ({})", percent_of(used, 12_000)), "{:?}", w.sim.requests());
    b.shot("overview-rate-use").await;

    // The policy: a dropdown filled from the reference data, then a field error.
    let reference = w.store.reference(BUSINESS).await.unwrap().unwrap();
    let rate = reference.tax_rates.iter().find(|t| t.id != "GB_STANDARD").unwrap().id.clone();
    b.goto(&w.url(&format!("/console/policy?tenant={tenant}"))).await;
    b.select("#default_tax_rate_id", &rate).await;
    b.scroll_to("#default_tax_rate_id").await;
    b.shot("policy-form").await;
    b.click("#policy-save").await;
    b.wait_path("/console/policy").await;
    assert!(b.text("[role=status]").await.contains("Policy saved"));
    assert_eq!(
        w.store.binding(&tenant).await.unwrap().unwrap().policy.default_tax_rate_id.as_deref(),
        Some(rate.as_str())
    );
    b.fill("#b2c_consolidation__min_total_for_individual", "ten pounds").await;
    b.click("#policy-save").await;
    b.wait_path(&format!("/console/policy/{tenant}")).await;
    let error = b.text("#b2c_consolidation__min_total_for_individual-error").await;
    assert!(!error.is_empty(), "the field error is shown next to the field");
    b.scroll_to("#b2c_consolidation__min_total_for_individual").await;
    b.shot("policy-field-error").await;

    // Log out: the console is behind the login page again.
    b.click("#logout").await;
    b.wait_path("/console/login").await;
    b.goto(&w.url("/console")).await;
    assert_eq!(b.url().await.path(), "/console/login", "logged out: the login page again");
    b.shot("logged-out").await;
    assert!(b.shots_dir().join("16-logged-out.png").exists(), "every page was captured");
    b.close().await;
}

/// `part` of `whole` in percent with one decimal, rounded half up (an independent reckoning of
/// the overview's figure: decimal arithmetic, not the console's integer one).
fn percent_of(part: u64, whole: u64) -> String {
    let p = rust_decimal::Decimal::from(part) * rust_decimal::Decimal::from(100) / rust_decimal::Decimal::from(whole);
    let mut p = p.round_dp_with_strategy(1, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
    p.rescale(1);
    format!("{p} %")
}

/// One `serve` process of a service run as several: its service (no worker), its console and
/// its listener, over a database it shares with the others.
struct Instance {
    base: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Instance {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The master key every process of the test service shares (base64 of 32 bytes).
fn shared_key() -> MasterKey {
    use base64::Engine as _;
    let text = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    MasterKey::from_base64(&SecretString::from(text)).unwrap()
}

/// `public`: the service's public URL, which every process shares (the one behind a load
/// balancer; the redirect URI the provider checks is built on it); `None`: this instance's own.
async fn instance(
    service_store: Arc<dyn ServiceStore>,
    console_store: Arc<dyn ConsoleStore>,
    connections: Arc<dyn ConnectionStoreDyn>,
    server: &SimServer,
    public: Option<&str>,
) -> Instance {
    let sage = SageProviders::new(Arc::clone(&connections)).with_builder(|b| {
        b.with_client_id("demo-client").with_client_secret(SecretString::from("demo-secret".to_owned()))
    });
    let providers = Arc::new(StoredProviders::new(connections).with_sage(sage));
    let config = ServiceConfig { retention: None, ..ServiceConfig::default() };
    let service = Service::new(service_store, providers, Arc::new(SystemClock), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut app = LedgerApp::sage("demo-client", SecretString::from("demo-secret".to_owned()));
    app.authorize_url = server.authorize_url();
    app.token_url = server.token_url();
    app.base_url = server.base_url();
    let public = format!("{}/", public.unwrap_or(&base));
    let console_config = ConsoleConfig::new(url::Url::parse(&public).unwrap());
    let console = Console::new(&service, console_store, console_config, &shared_key()).with_ledger_app(app);
    let router = service.router().merge(console.router());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(byte8_ledger_service::serve(listener, router, HttpLimits::default(), async {
        let _ = stopped.await;
    }));
    Instance { base, stop: Some(stop) }
}

/// Logs `name` in at the console of `base`: the session cookie's value.
async fn login_at(http: &reqwest::Client, base: &str, name: &str) -> String {
    let page = http.get(format!("{base}/console/login")).send().await.unwrap();
    let login_cookie = set_cookie(&page, "byte8_console_login").unwrap();
    let token = csrf_of_html(&page.text().await.unwrap()).unwrap();
    let r = http
        .post(format!("{base}/console/login"))
        .header(header::COOKIE, format!("byte8_console_login={login_cookie}"))
        .form(&[("csrf_token", token.as_str()), ("name", name), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    set_cookie(&r, "byte8_console").expect("logged in")
}

/// Two processes share one database: an operator starts connecting `business` at process A,
/// the provider sends the browser back to process B (which accepts the state), and the same
/// callback replayed to A is refused as a used state, not left to the provider's refusal of a
/// code used twice.
async fn a_state_used_at_one_process_is_refused_at_the_other(
    sim: &SageSimulator,
    server: &SimServer,
    a: &Instance,
    b: &Instance,
    console: &dyn ConsoleStore,
    operator: &str,
    business: &str,
) {
    let hash = hash_password(&SecretString::from(PASSWORD.to_owned())).unwrap();
    console.put_operator(operator, &hash, SystemClock.now()).await.unwrap();
    let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let session = login_at(&http, &a.base, operator).await;
    let r = http
        .get(format!("{}/connect/sage?business={business}", a.base))
        .header(header::COOKIE, format!("byte8_console={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let authorize = location(&r);
    assert!(authorize.starts_with(&server.authorize_url()), "{authorize}");
    let oauth_cookie = format!("byte8_oauth={}", set_cookie(&r, "byte8_oauth").unwrap());
    let back = crate::support_browser::consent(&authorize, "approve").await;
    let query = back.query().unwrap().to_owned();

    // Process B takes the callback: same signing key, the session in the shared database.
    let r = http
        .get(format!("{}/oauth/sage/callback?{query}", b.base))
        .header(header::COOKIE, &oauth_cookie)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let page = r.text().await.unwrap();
    assert_eq!(status, StatusCode::OK, "{page}");
    assert!(page.contains("Connected to"), "{page}");
    assert!(sim.business(business).is_some());
    // Replayed to A: refused as used, before any code exchange.
    let r = http
        .get(format!("{}/oauth/sage/callback?{query}", a.base))
        .header(header::COOKIE, &oauth_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let page = r.text().await.unwrap();
    assert!(page.contains("used already") && !page.contains("invalid_grant"), "refused before the exchange: {page}");
}

/// A simulator whose one business is `business`.
async fn simulator_of(business: &str) -> (SageSimulator, SimServer) {
    let sim = SageSimulator::new(SimConfig::default());
    let mut reference = ReferenceData::demo_uk(chrono::DateTime::UNIX_EPOCH);
    reference.business.id = business.to_owned();
    sim.add_business(reference);
    let server = sim.serve().await.unwrap();
    (sim, server)
}

#[tokio::test]
async fn an_oauth_state_replayed_to_another_process_on_one_sqlite_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (sim, server) = simulator_of(BUSINESS).await;
    let one = Arc::new(SqliteStore::open(&path, Some(shared_key())).await.unwrap());
    let two = Arc::new(SqliteStore::open(&path, Some(shared_key())).await.unwrap());
    let a = instance(Arc::clone(&one) as _, Arc::clone(&one) as _, Arc::clone(&one) as _, &server, None).await;
    let b = instance(Arc::clone(&two) as _, Arc::clone(&two) as _, Arc::clone(&two) as _, &server, Some(&a.base)).await;
    a_state_used_at_one_process_is_refused_at_the_other(&sim, &server, &a, &b, one.as_ref(), OPERATOR, BUSINESS).await;
    assert!(two.connection(BUSINESS).await.unwrap().is_some(), "B stored the connection");
}

#[tokio::test]
async fn an_oauth_state_replayed_to_another_process_on_postgres_is_refused() {
    let Some(url) = crate::support_postgres::url("an_oauth_state_replayed_to_another_process_on_postgres_is_refused")
    else {
        return;
    };
    let business = crate::support_postgres::unique("oauth-biz");
    let (sim, server) = simulator_of(&business).await;
    let one = Arc::new(crate::support_postgres::store(&url, 3, Some(shared_key())).await);
    let two = Arc::new(crate::support_postgres::store(&url, 3, Some(shared_key())).await);
    let a = instance(Arc::clone(&one) as _, Arc::clone(&one) as _, Arc::clone(&one) as _, &server, None).await;
    let b = instance(Arc::clone(&two) as _, Arc::clone(&two) as _, Arc::clone(&two) as _, &server, Some(&a.base)).await;
    let operator = crate::support_postgres::unique("op");
    a_state_used_at_one_process_is_refused_at_the_other(&sim, &server, &a, &b, one.as_ref(), &operator, &business)
        .await;
    assert!(two.connection(&business).await.unwrap().is_some(), "B stored the connection");
}
