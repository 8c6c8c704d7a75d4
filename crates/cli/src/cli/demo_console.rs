//! `byte8-ledger demo --console`: the operator console in one command, with nothing to set up.
//!
//! It starts the Sage simulator (the demo business, already connected), a stand-in Magento
//! store on loopback (it serves the bundled sample events' entities and accepts the sync-state
//! callbacks; it does not check the ledger's tokens: a demo only), the service on an in-memory
//! SQLite state with one worker and its console, pairs the stand-in store, sends the sample
//! events through the real webhook route (signed as the Byte8 module signs them), adds an
//! operator `demo` with a generated password, prints the console's address and the password,
//! and serves until interrupted. "Connect Sage" on the Connections page runs the real OAuth
//! flow against the simulator.

use std::{collections::HashMap, io::Write, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{get, post},
};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{
    Failure,
    demo::{SAMPLE_EVENTS, SAMPLE_POLICY},
    io,
};
use byte8_ledger_core::{
    auth::TokenSet,
    clock::{Clock, SystemClock},
    policy::SyncPolicy,
    providers::sage::PROVIDER,
    store::{Connection, ConnectionStore, crypto::MasterKey, sqlite::SqliteStore},
};
use byte8_ledger_service::store::{Binding, BindingStore, keys::hex_lower};
use byte8_ledger_service::{
    HttpLimits, SageProviders, Service, ServiceConfig, StoredProviders,
    console::{Console, ConsoleConfig, ConsoleStore, LedgerApp, password::hash_password},
    magento::{
        ApiKey,
        jwt::{self, Claims},
    },
};
use byte8_ledger_simulators::{DEMO_REFRESH_TOKEN, SageSimulator, SimConfig};

const BUSINESS: &str = "demo-business";
const TENANT: &str = "demo-shop";
/// The demo operator's name.
pub(crate) const OPERATOR: &str = "demo";

/// The stand-in store's entities, by (route segment, id).
type Entities = Arc<HashMap<(String, u64), Value>>;

async fn entity(
    State(entities): State<Entities>,
    Path((segment, id)): Path<(String, u64)>,
) -> (StatusCode, Json<Value>) {
    match entities.get(&(segment, id)) {
        Some(e) => (StatusCode::OK, Json(e.clone())),
        None => (
            StatusCode::NOT_FOUND,
            Json(
                json!({"message": "No such entity with %fieldName = %fieldValue", "parameters": {"fieldName": "id", "fieldValue": id}}),
            ),
        ),
    }
}

fn segment(event: &str) -> &'static str {
    match event {
        "invoice.paid" => "payment",
        "creditmemo.created" => "creditmemo",
        "customer.upserted" => "customer",
        "product.upserted" => "product",
        _ => "invoice",
    }
}

fn fail(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure { code: 1, message: format!("{what}: {e}") }
}

pub(crate) async fn run(out: &mut dyn Write) -> Result<(), Failure> {
    let clock = SystemClock;
    // The ledger: the simulator, its demo business connected.
    let sim = SageSimulator::demo(SimConfig::default());
    let server = sim.serve().await.map_err(fail("cannot start the simulator"))?;
    let store = Arc::new(SqliteStore::in_memory(Some(MasterKey::generate())).await?);
    store
        .save_connection(&Connection {
            scope: BUSINESS.into(),
            provider: PROVIDER.into(),
            base_url: server.base_url(),
            token_url: server.token_url(),
            created_at: clock.now(),
            tenant_id: None,
            connections_url: None,
        })
        .await?;
    store
        .save_tokens(BUSINESS, &TokenSet::from_refresh_token(SecretString::from(DEMO_REFRESH_TOKEN.to_owned())))
        .await?;

    // The stand-in Magento: the sample entities, pings and callbacks.
    let mut entities = HashMap::new();
    let mut events = Vec::new();
    for line in SAMPLE_EVENTS.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let (Some(event), Some(id)) = (v["event"].as_str(), v["magento_entity_id"].as_u64()) else { continue };
        entities.entry((segment(event).to_owned(), id)).or_insert_with(|| v["entity"].clone());
        events.push(v);
    }
    let magento_app = Router::new()
        .route("/rest/V1/byte8/ping", get(|| async { Json(json!({"ok": true})) }))
        .route("/rest/V1/byte8/payment-methods", get(|| async { Json(json!([])) }))
        .route("/rest/V1/byte8/sync-state", post(|| async { Json(json!(true)) }))
        .route("/rest/V1/byte8/{segment}/{id}", get(entity))
        .with_state(Arc::new(entities));
    let magento_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(fail("cannot listen"))?;
    let magento_url = format!("http://{}", magento_listener.local_addr().map_err(fail("cannot listen"))?);
    tokio::spawn(async move {
        let _ = axum::serve(magento_listener, magento_app).await;
    });

    // The paired store.
    let api_key = ApiKey::generate()?;
    let policy = SyncPolicy::from_json(SAMPLE_POLICY)?;
    store.put_binding(&Binding::new(TENANT, BUSINESS, &magento_url, api_key.clone(), policy, clock.now())?).await?;

    // The service and its console.
    let sage = SageProviders::new(Arc::clone(&store) as _).with_builder(|b| {
        b.with_client_id("demo-client").with_client_secret(SecretString::from("demo-secret".to_owned()))
    });
    let providers = Arc::new(StoredProviders::new(Arc::clone(&store) as _).with_sage(sage));
    let config = ServiceConfig { retention: None, ..ServiceConfig::default() };
    let service = Service::new(Arc::clone(&store) as _, providers, Arc::new(SystemClock), config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(fail("cannot listen"))?;
    let base = format!("http://{}", listener.local_addr().map_err(fail("cannot listen"))?);
    let public = url::Url::parse(&format!("{base}/")).map_err(|e| Failure { code: 1, message: e.to_string() })?;
    let mut app = LedgerApp::sage("demo-client", SecretString::from("demo-secret".to_owned()));
    app.authorize_url = server.authorize_url();
    app.token_url = server.token_url();
    app.base_url = server.base_url();
    app.revoke_url = Some(server.revoke_url());
    let console_key = MasterKey::generate();
    let console =
        Console::new(&service, Arc::clone(&store) as Arc<dyn ConsoleStore>, ConsoleConfig::new(public), &console_key)
            .with_ledger_app(app);
    let mut random = [0u8; 12];
    byte8_ledger_service::store::keys::fill_random(&mut random)?;
    let password = SecretString::from(hex_lower(&random));
    let hash = tokio::task::spawn_blocking({
        let p = password.clone();
        move || hash_password(&p)
    })
    .await
    .map_err(|e| Failure { code: 1, message: e.to_string() })??;
    console.store().put_operator(OPERATOR, &hash, clock.now()).await?;
    let router = service.router().merge(console.router());
    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let http = tokio::spawn(byte8_ledger_service::serve(listener, router, HttpLimits::default(), async {
        let _ = http_stopped.await;
    }));
    let workers = service.spawn_workers(1);

    // The sample events, through the webhook route as the module sends them.
    let client = reqwest::Client::new();
    let outbound = api_key.derive().outbound;
    let mut sent = 0;
    for v in &events {
        let now = clock.now().timestamp();
        let claims = Claims {
            iss: "magento".into(),
            sub: TENANT.into(),
            aud: "byte8-ledger".into(),
            iat: now,
            nbf: now,
            exp: now + 60,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        let token = jwt::sign(&outbound, &claims)?;
        let envelope = json!({
            "magento_entity_id": v["magento_entity_id"], "website_id": v["website_id"], "store_id": v["store_id"],
            "occurred_at": v["occurred_at"], "payload": v["payload"],
        });
        let event = v["event"].as_str().unwrap_or_default();
        let answer = client
            .post(format!("{base}/webhooks/magento/{TENANT}/{event}"))
            .bearer_auth(&token)
            .header("idempotency-key", v["idempotency_key"].as_str().unwrap_or_default())
            .json(&envelope)
            .send()
            .await;
        if answer.is_ok_and(|a| a.status().is_success()) {
            sent += 1;
        }
    }

    writeln!(out, "Sage simulator: {} (business {BUSINESS}, connected)", server.base_url()).map_err(io)?;
    writeln!(out, "stand-in Magento store: {magento_url} (tenant {TENANT}); {sent} sample events sent to the service")
        .map_err(io)?;
    writeln!(out, "console: {base}/console").map_err(io)?;
    writeln!(out, "  operator: {OPERATOR}").map_err(io)?;
    writeln!(out, "  password: {}", password.expose_secret()).map_err(io)?;
    writeln!(out, "(the state is in memory and goes when this stops; Ctrl-C stops)").map_err(io)?;
    out.flush().map_err(io)?;

    let _ = tokio::signal::ctrl_c().await;
    let _ = stop_http.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    workers.stop_within(Duration::from_secs(5)).await;
    writeln!(out, "stopped").map_err(io)?;
    Ok(())
}
