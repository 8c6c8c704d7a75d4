//! A fake Magento running the Byte8 module (byte8/module-client), on wiremock, for the service's
//! tests. Several stores share one server, each under its own path prefix
//! (`http://127.0.0.1:PORT/{store}`), as separate shops with their own keys.
//!
//! Per store it does what the module does (byte8-spec.md 12):
//!
//! - `POST /rest/V1/byte8/setup/pair` (anonymous): checks the pairing code the test set and
//!   keeps the `tenant_id` and `byte8_api_key` it receives (400 for an empty field or a bad
//!   `ledger_base_url`, 401 for a wrong or used code);
//! - every other route checks the ledger's bearer JWT with the module's `Verifier` rules, written
//!   here from the spec (not with the crate): exact header, HMAC-SHA256 under the **inbound**
//!   HKDF subkey of the key it was given (HKDF computed here with the `hkdf` crate), `iss`
//!   `byte8-ledger`, `aud` `magento`, `sub` its tenant, `iat ≤ now + 30`, `nbf ≤ now` (no
//!   leeway), `exp > now`, `exp − iat ≤ 300`, a `jti` never seen: 401 otherwise;
//! - `GET /rest/V1/byte8/{invoice,customer,creditmemo,payment,product}/{id}` serves the canonical
//!   entities the test put there (404 otherwise); `GET ping`;
//! - `POST /rest/V1/byte8/sync-state` checks the body with the module's rules and records it
//!   (204), or answers 503 as many times as the test asked first.
//!
//! It also plays the module's outbound side: [`FakeMagento::webhook`] signs a webhook with the
//! **outbound** subkey and posts it to the ledger.
#![allow(dead_code)]

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{Arc, Mutex},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use byte8_ledger_core::clock::{Clock, SystemClock};
use byte8_ledger_service::magento::{ApiKey, Claims, jwt};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

/// One shop.
#[derive(Debug, Default)]
pub struct Shop {
    /// The pairing code the merchant generated (cleared once used).
    pub pairing_code: Option<String>,
    /// What pairing stored.
    pub tenant_id: Option<String>,
    /// What pairing stored (the master key).
    pub api_key: Option<String>,
    /// What pairing stored.
    pub ledger_base_url: Option<String>,
    /// Canonical entities by (path segment, id).
    pub entities: HashMap<(String, u64), Value>,
    /// Sync-state bodies accepted, in order, as received (raw text).
    pub callbacks: Vec<String>,
    /// Sync-state requests answered 503.
    pub callbacks_refused: u32,
    /// Answer the next this-many sync-state requests with 503.
    pub fail_sync_state: u32,
    /// Answer every signed request with 401 (the merchant disconnected on the Magento side).
    pub revoked: bool,
    /// Why signed requests were refused.
    pub refusals: Vec<String>,
    /// Every bearer token the ledger sent.
    pub tokens: Vec<String>,
    /// Entity GETs served, by path segment.
    pub fetches: BTreeMap<String, u64>,
    seen_jti: HashSet<String>,
}

/// The fake's state, shared with the test.
#[derive(Debug)]
pub struct FakeState {
    shops: Mutex<BTreeMap<String, Shop>>,
    clock: Arc<dyn Clock>,
}

/// The fake Magento.
#[derive(Debug)]
pub struct FakeMagento {
    /// The wiremock server.
    pub server: MockServer,
    /// Its state.
    pub state: Arc<FakeState>,
}

fn hkdf(key: &str, info: &str) -> [u8; 32] {
    let mut okm = [0u8; 32];
    hkdf::Hkdf::<Sha256>::new(Some(&[]), key.trim().as_bytes()).expand(info.as_bytes(), &mut okm).expect("32 bytes");
    okm
}

fn message(status: u16, text: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({"message": text}))
}

impl FakeMagento {
    /// A fake with no shop, on Magento's clock `clock`.
    pub async fn start_with_clock(clock: Arc<dyn Clock>) -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(FakeState { shops: Mutex::new(BTreeMap::new()), clock });
        Mock::given(any()).respond_with(Responder(Arc::clone(&state))).mount(&server).await;
        Self { server, state }
    }

    /// A fake on the system clock.
    pub async fn start() -> Self {
        Self::start_with_clock(Arc::new(SystemClock)).await
    }

    /// Adds a shop under `prefix` waiting to be paired with `code`.
    pub fn add_shop(&self, prefix: &str, code: &str) {
        self.with(prefix, |s| s.pairing_code = Some(code.to_owned()));
    }

    /// Adds a shop already paired with `tenant_id` and `api_key`.
    pub fn add_paired_shop(&self, prefix: &str, tenant_id: &str, api_key: &str) {
        self.with(prefix, |s| {
            s.tenant_id = Some(tenant_id.to_owned());
            s.api_key = Some(api_key.to_owned());
        });
    }

    /// The shop's base URL (what `--magento-base-url` gets).
    pub fn base_url(&self, prefix: &str) -> String {
        format!("{}/{prefix}", self.server.uri())
    }

    /// Runs `f` on a shop (created empty if missing).
    pub fn with<R>(&self, prefix: &str, f: impl FnOnce(&mut Shop) -> R) -> R {
        let mut shops = self.state.shops.lock().unwrap();
        f(shops.entry(prefix.to_owned()).or_default())
    }

    /// Serves `entity` at `GET /rest/V1/byte8/{segment}/{id}`.
    pub fn put_entity(&self, prefix: &str, segment: &str, id: u64, entity: Value) {
        self.with(prefix, |s| s.entities.insert((segment.to_owned(), id), entity));
    }

    /// The sync-state bodies accepted so far, parsed.
    pub fn callbacks(&self, prefix: &str) -> Vec<Value> {
        self.with(prefix, |s| s.callbacks.iter().map(|b| serde_json::from_str(b).unwrap()).collect())
    }

    /// A webhook token as the module's `Signer` makes it: the outbound subkey, now, 60 s.
    pub fn webhook_token(&self, prefix: &str) -> String {
        let (tenant, key) = self.with(prefix, |s| (s.tenant_id.clone(), s.api_key.clone()));
        let (tenant, key) = (tenant.expect("a paired shop"), key.expect("a paired shop"));
        let now = self.state.clock.now().timestamp();
        let claims = Claims {
            iss: "magento".into(),
            sub: tenant,
            aud: "byte8-ledger".into(),
            iat: now,
            nbf: now,
            exp: now + 60,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        jwt::sign(&ApiKey::new(key).unwrap().derive().outbound, &claims).unwrap()
    }

    /// The shop's tenant id.
    pub fn tenant(&self, prefix: &str) -> String {
        self.with(prefix, |s| s.tenant_id.clone()).expect("a paired shop")
    }

    /// Posts a webhook as the module's `ByteClient` does: bearer token, JSON, `Idempotency-Key`.
    pub async fn webhook(
        &self,
        http: &reqwest::Client,
        ledger: &str,
        prefix: &str,
        event: &str,
        envelope: &Value,
    ) -> (u16, Value) {
        let token = self.webhook_token(prefix);
        let id = envelope["magento_entity_id"].clone();
        post(http, ledger, &self.tenant(prefix), event, envelope, Some(&token), Some(&format!("{event}:{id}"))).await
    }

    /// Sends a signed request to a `/v1` route of the ledger as the module does.
    pub async fn v1(&self, http: &reqwest::Client, method: reqwest::Method, url: &str, prefix: &str) -> (u16, Value) {
        let token = self.webhook_token(prefix);
        let mut req = http.request(method.clone(), url).bearer_auth(token);
        if method == reqwest::Method::POST {
            req = req.json(&json!({}));
        }
        let resp = req.send().await.expect("the ledger answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }
}

/// Posts a webhook with the given token and key (either may be left out).
pub async fn post(
    http: &reqwest::Client,
    ledger: &str,
    tenant: &str,
    event: &str,
    envelope: &Value,
    token: Option<&str>,
    key: Option<&str>,
) -> (u16, Value) {
    post_raw(http, ledger, tenant, event, envelope.to_string().into_bytes(), token, key).await
}

/// Posts a webhook body as given.
pub async fn post_raw(
    http: &reqwest::Client,
    ledger: &str,
    tenant: &str,
    event: &str,
    body: Vec<u8>,
    token: Option<&str>,
    key: Option<&str>,
) -> (u16, Value) {
    let mut req = http
        .post(format!("{ledger}/webhooks/magento/{tenant}/{event}"))
        .header("Content-Type", "application/json")
        .body(body);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(k) = key {
        req = req.header("Idempotency-Key", k);
    }
    let resp = req.send().await.expect("the ledger answers");
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

struct Responder(Arc<FakeState>);

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let path = request.url.path().trim_start_matches('/').to_owned();
        let Some((prefix, rest)) = path.split_once('/') else { return message(404, "no such route") };
        let Some(route) = rest.strip_prefix("rest/V1/byte8/") else { return message(404, "no such route") };
        let mut shops = self.0.shops.lock().unwrap();
        let Some(shop) = shops.get_mut(prefix) else { return message(404, "no such store") };
        let method = request.method.as_str();
        if route == "setup/pair" && method == "POST" {
            return pair(shop, &request.body);
        }
        if let Err(why) = verify(shop, request, self.0.clock.now().timestamp()) {
            shop.refusals.push(why.clone());
            return message(401, "The consumer isn't authorized to access %resources.");
        }
        match (method, route) {
            ("GET", "ping") => {
                ResponseTemplate::new(200).set_body_json(json!({"ok": true, "tenant_id": shop.tenant_id}))
            }
            ("POST", "sync-state") => sync_state(shop, &request.body),
            ("GET", r) => {
                let Some((segment, id)) = r.split_once('/') else { return message(404, "no such route") };
                let Ok(id) = id.parse::<u64>() else { return message(400, "bad id") };
                *shop.fetches.entry(segment.to_owned()).or_default() += 1;
                match shop.entities.get(&(segment.to_owned(), id)) {
                    Some(e) => ResponseTemplate::new(200).set_body_json(e.clone()),
                    None => ResponseTemplate::new(404).set_body_json(json!({
                        "message": "No such entity with %fieldName = %fieldValue",
                        "parameters": {"fieldName": "id", "fieldValue": id}
                    })),
                }
            }
            _ => message(404, "no such route"),
        }
    }
}

fn pair(shop: &mut Shop, body: &[u8]) -> ResponseTemplate {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return message(400, "bad body") };
    let field = |k: &str| v[k].as_str().unwrap_or("").trim().to_owned();
    let (code, tenant, key) = (field("pairing_code"), field("tenant_id"), field("byte8_api_key"));
    let ledger = field("ledger_base_url").trim_end_matches('/').to_owned();
    if code.is_empty() || tenant.is_empty() || key.is_empty() || ledger.is_empty() {
        return message(400, "pairing_code, tenant_id, byte8_api_key and ledger_base_url are required.");
    }
    if !(ledger.starts_with("http://") || ledger.starts_with("https://")) {
        return message(400, "ledger_base_url must be an absolute http(s) URL.");
    }
    if shop.pairing_code.as_deref() != Some(code.as_str()) {
        return message(401, "Invalid or expired pairing code.");
    }
    shop.pairing_code = None;
    shop.tenant_id = Some(tenant);
    shop.api_key = Some(key);
    shop.ledger_base_url = Some(ledger);
    ResponseTemplate::new(200).set_body_json(json!(true))
}

/// The module's `Verifier` rules on the ledger's token.
fn verify(shop: &mut Shop, request: &Request, now: i64) -> Result<(), String> {
    if shop.revoked {
        return Err("the store no longer holds this tenant's key".into());
    }
    let (Some(tenant), Some(key)) = (shop.tenant_id.clone(), shop.api_key.clone()) else {
        return Err("not paired".into());
    };
    let auth = request.headers.get("authorization").ok_or("no Authorization header")?;
    let token = auth.to_str().map_err(|e| e.to_string())?.strip_prefix("Bearer ").ok_or("not a Bearer token")?;
    shop.tokens.push(token.to_owned());
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts[..] else { return Err("not three segments".into()) };
    if URL_SAFE_NO_PAD.decode(h).map_err(|e| e.to_string())? != br#"{"alg":"HS256","typ":"JWT"}"# {
        return Err("header".into());
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&hkdf(&key, "byte8-magento-inbound-v1")).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())?).map_err(|_| "signature mismatch")?;
    let c: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let int = |k: &str| c[k].as_i64().ok_or(format!("{k} not an integer"));
    let (iat, nbf, exp) = (int("iat")?, int("nbf")?, int("exp")?);
    let jti = c["jti"].as_str().unwrap_or("").to_owned();
    let checks = [
        (c["iss"] == "byte8-ledger", "iss"),
        (c["aud"] == "magento", "aud"),
        (c["sub"] == tenant.as_str(), "sub"),
        (iat <= now + 30, "iat in the future"),
        (nbf <= now, "nbf > now"),
        (exp > now, "expired"),
        (exp - iat <= 300, "exp - iat > 300"),
        (!jti.is_empty(), "no jti"),
    ];
    for (ok, what) in checks {
        if !ok {
            return Err(what.to_owned());
        }
    }
    if !shop.seen_jti.insert(jti) {
        return Err("jti replayed".into());
    }
    Ok(())
}

/// The module's `SyncStateUpsert` input rules.
fn sync_state(shop: &mut Shop, body: &[u8]) -> ResponseTemplate {
    let Ok(v) = serde_json::from_slice::<Value>(body) else { return message(400, "bad body") };
    let ok_type = ["invoice", "creditmemo", "customer", "product"].contains(&v["entity_type"].as_str().unwrap_or(""));
    let ok_id = v["magento_entity_id"].as_u64().is_some_and(|id| id > 0);
    let ok_provider = v["provider"].as_str().is_some_and(|p| !p.trim().is_empty());
    let ok_status = ["synced", "skipped", "failed"].contains(&v["sync_status"].as_str().unwrap_or(""));
    if !(ok_type && ok_id && ok_provider && ok_status) {
        return message(400, "Invalid sync state.");
    }
    if shop.fail_sync_state > 0 {
        shop.fail_sync_state -= 1;
        shop.callbacks_refused += 1;
        return message(503, "Service Unavailable");
    }
    shop.callbacks.push(String::from_utf8_lossy(body).into_owned());
    ResponseTemplate::new(204)
}

/// The sample events (`samples/events.jsonl`) by idempotency key, the first line of each key:
/// (event name, the webhook's envelope without the entity, the canonical entity the fake serves).
pub fn sample_events() -> BTreeMap<String, (String, Value, Value)> {
    let mut out = BTreeMap::new();
    for line in include_str!("../../samples/events.jsonl").lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let key = v["idempotency_key"].as_str().unwrap().to_owned();
        let envelope = json!({
            "magento_entity_id": v["magento_entity_id"], "website_id": v["website_id"],
            "store_id": v["store_id"], "occurred_at": v["occurred_at"], "payload": v["payload"],
        });
        out.entry(key).or_insert((v["event"].as_str().unwrap().to_owned(), envelope, v["entity"].clone()));
    }
    out
}
