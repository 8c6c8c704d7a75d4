//! A stateful fake of the Sage Business Cloud Accounting v3.1 subset this crate uses, served on a
//! loopback port. Its Xero twin is [`xero::XeroSimulator`]. The demo, the examples, the engine's tests and the
//! benchmarks run against it.
//!
//! It enforces Sage's documented rules (sage-api.md sections 3, 4 and 6; byte8-spec.md 9):
//!
//! - OAuth: access tokens that expire (TTL configurable, 5 minutes by default) and refresh tokens
//!   that work once and rotate; `invalid_grant` for a used one; a bearer token and `X-Business`
//!   on every request; a lapsed subscription answers 401 "No active subscription. (MSE)";
//! - the authorisation-code flow: the authorize endpoint (`/oauth2/auth/central`,
//!   [`SimServer::authorize_url`]) serves an approval page whose approve link redirects back to
//!   `redirect_uri` with a `GB/`-prefixed `code`, the `state` echoed and `country=GB`; the token
//!   endpoint exchanges a code once, within [`CODE_LIFETIME_SECS`] on the simulator's clock and
//!   for the same `redirect_uri` only; `GET /v3.1/businesses` lists every business of the
//!   simulator (one token reaches them all: add some with [`SageSimulator::add_business`]);
//!   `POST /revoke` kills a refresh token;
//! - a per-business rate limit answered with 429 and `Retry-After` (a sliding 60-second window);
//! - contacts: references ≤ 10 characters and unique, deleted contacts keeping theirs reserved,
//!   one currency per contact, foreign currencies only with multi-currency on;
//! - documents: the contact's currency, line `tax_amount` required for non-zero rates and
//!   forbidden on zero rates, one EU goods/services type per document, sales-visible ledger
//!   accounts, references ≤ 25, address limits, HTML entities refused with Sage's umbrella
//!   `line_items.description` message, shipping tax **recomputed** from the rate, totals rounded
//!   per line, delivery address copied from billing when left out, reads marking documents as
//!   sent unless `mark_as_sent=false`;
//! - payments and allocations on one contact, within each artefact's outstanding amount,
//!   allocations netting to zero, "You can only pay unpaid or part-paid invoices.";
//! - customer refunds (`contact_payments` with `CUSTOMER_REFUND`): from a known bank account, in
//!   the credit note's currency, allocated to credit notes of the same contact with positive
//!   amounts that add up to the total and stay within each note's outstanding amount; listed with
//!   the receipts and told apart by `transaction_type_id`;
//! - products needing a purchase ledger account, stock item codes ≤ 30, stock movements changing
//!   `quantity_in_stock`, invoices of stock items reducing it;
//! - Sage's native `idempotency_id`: the same id returns the same answer;
//! - lists paged as real Sage pages them (`tests/fixtures/sage-real/`): `items_per_page` ≤ 200,
//!   `$next` and `$back` as paths relative to the API root without the version prefix
//!   (`/contacts?page=2&…`), a page past the end answered with the last page again, and — with
//!   [`SimConfig::full_list_limit`] — a 504 for a page of too many full objects;
//! - inactive records as Sage reports them: bank accounts `is_active`, products `active`,
//!   contacts `is_active` ([`SimBusiness::set_contact_active`], [`SimBusiness::set_item_active`]);
//!   a payment into an inactive bank account is refused.
//!
//! Faults can be injected: a 5xx before acting (525 included), a 500 after committing (the
//! request took effect but the client cannot know), 429s alone or in bursts of consecutive ones
//! ([`FaultRates::throttle_burst`]), slow answers — at random with seeded rates, or
//! scripted one by one — and, scripted, Sage's 403 `MultiUserAccessDenied` ([`Fault::AccessDenied`])
//! and 401 "No active subscription" on one endpoint ([`Fault::NoSubscription`]).
//!
//! One rule Byte8 reports is deliberately not encoded: a 422 for a non-zero rate on a customer
//! outside the UK. Sage's own knowledge base says the rate is selectable for non-VAT-registered
//! overseas customers (tax.md 2.6), so the crate's router may book UK VAT there (row 9) and the
//! simulator accepts it.

mod oauth;
pub mod soak;
mod state;
pub mod workload;
pub mod xero;

use std::{net::SocketAddr, sync::Arc, time::Duration};

pub use oauth::CODE_LIFETIME_SECS;
pub use state::{
    SimBusiness, SimContact, SimDocument, SimItem, SimMovement, SimRequest, SimResponse, SimState, SimTransaction,
};

use byte8_ledger_core::{
    clock::{Clock, SystemClock},
    reference::ReferenceData,
};

/// Random fault rates, each a probability per request in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct FaultRates {
    /// A 500 or 503 before acting.
    pub error_before: f64,
    /// A 500 after the request took effect (writes only).
    pub error_after_commit: f64,
    /// A 429 with `Retry-After: 1`.
    pub throttle: f64,
    /// How many consecutive requests of the business (Sage) or organisation (Xero) a random
    /// throttle answers with 429, the first included: a burst that a client retrying after each
    /// `Retry-After` meets several times in a row. 0 and 1 both mean a single 429.
    pub throttle_burst: u32,
}

/// One injected fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Answer this status before acting.
    ErrorBefore(u16),
    /// Act, then answer 500.
    ErrorAfterCommit,
    /// Answer 429 with this `Retry-After` (seconds).
    Throttle(u64),
    /// Sage only: answer 403 `MultiUserAccessDenied` (the connected user's role lacks the right),
    /// Sage's real body (`tests/fixtures/sage-real/`).
    AccessDenied,
    /// Sage only: answer 401 "No active subscription. (MSE)" for this request alone, as Sage
    /// does for an endpoint outside the business's edition.
    NoSubscription,
}

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The OAuth client id it accepts.
    pub client_id: String,
    /// The OAuth client secret it accepts.
    pub client_secret: String,
    /// Access-token lifetime.
    pub access_token_ttl: Duration,
    /// Per-business limit (requests in any 60 seconds); `None`: unlimited.
    pub requests_per_minute: Option<u32>,
    /// Answer latency range (uniform), when set.
    pub latency: Option<(Duration, Duration)>,
    /// Random fault rates.
    pub faults: FaultRates,
    /// Seed of the fault and token randomness.
    pub seed: u64,
    /// The most full objects (`attributes=all`) one list page may hold; a bigger page answers
    /// 504, as real Sage does for big pages of full objects. `None`: no limit.
    pub full_list_limit: Option<usize>,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            client_id: "demo-client".into(),
            client_secret: "demo-secret".into(),
            access_token_ttl: Duration::from_secs(300),
            requests_per_minute: None,
            latency: None,
            faults: FaultRates::default(),
            seed: 42,
            full_list_limit: None,
        }
    }
}

/// The simulator: shared state behind a lock, usable in process or served over HTTP.
#[derive(Debug, Clone)]
pub struct SageSimulator {
    state: Arc<std::sync::Mutex<SimState>>,
    clock: Arc<dyn Clock>,
    latency: Option<(Duration, Duration)>,
}

/// The refresh token the demo business is connected with.
pub const DEMO_REFRESH_TOKEN: &str = "demo-refresh-token";

impl SageSimulator {
    /// An empty simulator.
    pub fn new(config: SimConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// An empty simulator on `clock`.
    pub fn with_clock(config: SimConfig, clock: Arc<dyn Clock>) -> Self {
        let latency = config.latency;
        Self { state: Arc::new(std::sync::Mutex::new(SimState::new(config))), clock, latency }
    }

    /// A simulator with the demo UK business ([`ReferenceData::demo_uk`]) and
    /// [`DEMO_REFRESH_TOKEN`] registered.
    pub fn demo(config: SimConfig) -> Self {
        let sim = Self::new(config);
        let reference = ReferenceData::demo_uk(sim.clock.now());
        sim.add_business(reference);
        sim.with_state(|s| s.add_refresh_token(DEMO_REFRESH_TOKEN));
        sim
    }

    /// Adds a business serving `reference` (its id is `reference.business.id`).
    pub fn add_business(&self, reference: ReferenceData) {
        self.with_state(|s| {
            s.businesses.insert(reference.business.id.clone(), SimBusiness::new(reference));
        });
    }

    /// Runs `f` with the state locked (inspection and set-up in tests).
    pub fn with_state<R>(&self, f: impl FnOnce(&mut SimState) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// A copy of one business's state.
    pub fn business(&self, id: &str) -> Option<SimBusiness> {
        self.with_state(|s| s.businesses.get(id).cloned())
    }

    /// Queues a fault for the next request matching `target` (`"POST /sales_invoices"`), or any
    /// request when `None`.
    pub fn script(&self, target: Option<&str>, fault: Fault) {
        self.with_state(|s| s.scripted.push_back((target.map(str::to_owned), fault)));
    }

    /// Sets the random fault rates.
    pub fn set_faults(&self, rates: FaultRates) {
        self.with_state(|s| s.config.faults = rates);
    }

    /// Requests served by endpoint (`METHOD /resource`).
    pub fn requests(&self) -> std::collections::BTreeMap<String, u64> {
        self.with_state(|s| s.requests.clone())
    }

    /// Handles one request (no latency: the server adds it).
    pub fn handle(&self, req: &SimRequest) -> SimResponse {
        let now = self.clock.now();
        self.with_state(|s| {
            let path = req.path.trim_end_matches('/');
            if path.starts_with("/oauth2/auth/central") {
                s.authorize(req, now)
            } else if path == "/revoke" && req.method == "POST" {
                s.revoke(req)
            } else if path == "/v3.1/businesses" && req.method == "GET" {
                s.businesses(req, now)
            } else if path.ends_with("/token") && !req.path.contains("/v3.1/") {
                s.token(req, now)
            } else {
                s.api(req, now)
            }
        })
    }

    /// Serves the simulator on `127.0.0.1` at a free port.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn serve(&self) -> std::io::Result<SimServer> {
        self.serve_on(0).await
    }

    /// Serves the simulator on `127.0.0.1:port` (0: a free port).
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn serve_on(&self, port: u16) -> std::io::Result<SimServer> {
        let sim = self.clone();
        serve_router(
            port,
            axum::Router::new().fallback(move |req: axum::extract::Request| {
                let sim = sim.clone();
                async move { sim.serve_one(req).await }
            }),
        )
        .await
    }

    async fn serve_one(&self, req: axum::extract::Request) -> axum::response::Response {
        use axum::body::Body;
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
        if let Some((lo, hi)) = self.latency {
            let span = hi.saturating_sub(lo);
            let extra = span.mul_f64(self.with_state(|s| rand::Rng::random::<f64>(&mut s.rng)));
            tokio::time::sleep(lo + extra).await;
        }
        let query = parts
            .uri
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let headers = parts
            .headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_ascii_lowercase(), v.to_owned())))
            .collect();
        let sim_req = SimRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query,
            headers,
            body: bytes.to_vec(),
        };
        let answer = self.handle(&sim_req);
        let own_type = answer.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        let mut builder = axum::http::Response::builder().status(answer.status);
        if !own_type {
            builder = builder.header(axum::http::header::CONTENT_TYPE, "application/json");
        }
        for (k, v) in &answer.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let body = match &answer.body {
            serde_json::Value::Null if answer.status == 204 || answer.status == 302 => Vec::new(),
            // A page (the authorize endpoint's), written as it is.
            serde_json::Value::String(text) if own_type => text.clone().into_bytes(),
            other => other.to_string().into_bytes(),
        };
        builder.body(Body::from(body)).unwrap_or_else(|_| axum::http::Response::new(Body::empty()))
    }
}

/// A running simulator server; stops when dropped.
#[derive(Debug)]
pub struct SimServer {
    addr: SocketAddr,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl SimServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The API root to give a [`SageBuilder`](byte8_ledger_core::providers::sage::SageBuilder).
    pub fn base_url(&self) -> String {
        format!("http://{}/v3.1", self.addr)
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("http://{}/token", self.addr)
    }

    /// The authorize endpoint (its approval page approves at once: no login).
    pub fn authorize_url(&self) -> String {
        format!("http://{}/oauth2/auth/central?filter=apiv3.1", self.addr)
    }

    /// The revocation endpoint (`POST /revoke`).
    pub fn revoke_url(&self) -> String {
        format!("http://{}/revoke", self.addr)
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for SimServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Serves `app` on `127.0.0.1:port` (0: a free port) until the returned server is shut down or
/// dropped: the listener and graceful shutdown both simulators use.
pub(crate) async fn serve_router(port: u16, app: axum::Router) -> std::io::Result<SimServer> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let addr = listener.local_addr()?;
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    Ok(SimServer { addr, shutdown: Some(tx), task: Some(task) })
}
