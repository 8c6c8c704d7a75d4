//! `MagentoClient` and the pairing call against a fake Magento (wiremock) serving the canonical
//! entities of `samples/events.jsonl`. Every request the client sends is checked with the Byte8
//! module's own verifier rules, using the inbound subkey computed by the independent
//! implementation of `tests/fixtures/jwt/` (not by the crate).

use std::{sync::Arc, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use byte8_ledger_core::{
    canonical::{Entity, EventKind},
    clock::{Clock, ManualClock},
    engine::EntitySource,
    error::{AuthFailure, Error, ErrorCode},
    http::RetryConfig,
    outcome::{Outcome, SyncStatus},
};
use byte8_ledger_service::magento::{ApiKey, ConnectionStatus, MagentoClient, PairRequest, http_client};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wiremock::{
    Match, Mock, MockServer, Request, ResponseTemplate,
    matchers::{body_json, header, method, path},
};

fn vectors() -> Value {
    serde_json::from_str(include_str!("../../../../tests/fixtures/jwt/vectors.json")).unwrap()
}

fn api_key_text() -> String {
    vectors()["api_key"].as_str().unwrap().to_owned()
}

fn tenant() -> String {
    vectors()["tenant_id"].as_str().unwrap().to_owned()
}

fn now() -> i64 {
    vectors()["now"].as_i64().unwrap()
}

/// The inbound subkey as the independent implementation computed it.
fn inbound_key() -> Vec<u8> {
    let hex = vectors()["subkeys"]["inbound"].as_str().unwrap().to_owned();
    (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect()
}

/// Magento's verifier (`Model/Jwt/Verifier.php`) as a wiremock matcher: the request is answered
/// only if its bearer token passes every check the module makes. Returns the `jti`.
fn module_verify(request: &Request) -> Result<String, String> {
    let auth = request.headers.get("authorization").ok_or("no Authorization header")?;
    let auth = auth.to_str().map_err(|e| e.to_string())?;
    let token = auth.strip_prefix("Bearer ").ok_or("not a Bearer token")?;
    let parts: Vec<&str> = token.split('.').collect();
    let [h, p, s] = parts[..] else { return Err("not three segments".into()) };
    let header = URL_SAFE_NO_PAD.decode(h).map_err(|e| e.to_string())?;
    if header != br#"{"alg":"HS256","typ":"JWT"}"# {
        return Err(format!("header is {}", String::from_utf8_lossy(&header)));
    }
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&inbound_key()).unwrap();
    mac.update(format!("{h}.{p}").as_bytes());
    mac.verify_slice(&URL_SAFE_NO_PAD.decode(s).map_err(|e| e.to_string())?).map_err(|_| "signature mismatch")?;
    let c: Value =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
    let int = |k: &str| c[k].as_i64().ok_or(format!("{k} not an integer"));
    let (iat, nbf, exp) = (int("iat")?, int("nbf")?, int("exp")?);
    let now = now();
    let checks = [
        (c["iss"] == "byte8-ledger", "iss"),
        (c["aud"] == "magento", "aud"),
        (c["sub"] == tenant().as_str(), "sub"),
        (iat <= now + 30, "iat in the future"),
        (nbf <= now, "nbf > now"),
        (exp > now, "expired"),
        (exp - iat <= 300, "exp - iat > 300"),
        (c["jti"].as_str().is_some_and(|j| !j.is_empty()), "jti"),
    ];
    for (ok, what) in checks {
        if !ok {
            return Err(what.to_owned());
        }
    }
    Ok(c["jti"].as_str().unwrap().to_owned())
}

struct SignedByLedger;

impl Match for SignedByLedger {
    fn matches(&self, request: &Request) -> bool {
        module_verify(request).is_ok()
    }
}

fn clock() -> Arc<dyn Clock> {
    Arc::new(ManualClock::new(DateTime::from_timestamp(now(), 0).unwrap()))
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(20),
        retry_timeout: Duration::from_secs(10),
    }
}

fn client(server: &MockServer) -> MagentoClient {
    MagentoClient::builder()
        .with_base_url(format!("{}/", server.uri()))
        .with_tenant_id(tenant())
        .with_api_key(ApiKey::new(api_key_text()).unwrap())
        .with_clock(clock())
        .with_retry(fast_retry())
        .build()
        .unwrap()
}

/// The first readable sample event of each kind: (kind, id, entity JSON).
fn samples() -> Vec<(EventKind, u64, Value)> {
    let mut out: Vec<(EventKind, u64, Value)> = Vec::new();
    for line in include_str!("../../../../samples/events.jsonl").lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let kind: EventKind = v["event"].as_str().unwrap().parse().unwrap();
        if out.iter().any(|(k, _, _)| *k == kind) {
            continue;
        }
        out.push((kind, v["magento_entity_id"].as_u64().unwrap(), v["entity"].clone()));
    }
    assert_eq!(out.len(), 5, "a sample of every event kind");
    out
}

fn segment(kind: EventKind) -> &'static str {
    match kind {
        EventKind::InvoiceCreated => "invoice",
        EventKind::InvoicePaid => "payment",
        EventKind::CreditMemoCreated => "creditmemo",
        EventKind::CustomerUpserted => "customer",
        EventKind::ProductUpserted => "product",
    }
}

async fn jtis(server: &MockServer) -> Vec<String> {
    server.received_requests().await.unwrap().iter().map(|r| module_verify(r).expect("a module-valid JWT")).collect()
}

// ---------------------------------------------------------------------------------------------
// Canonical entities

#[tokio::test]
async fn fetches_every_canonical_entity_with_a_signed_get() {
    let server = MockServer::start().await;
    for (kind, id, entity) in samples() {
        Mock::given(method("GET"))
            .and(path(format!("/rest/V1/byte8/{}/{id}", segment(kind))))
            .and(header("accept", "application/json"))
            .and(SignedByLedger)
            .respond_with(ResponseTemplate::new(200).set_body_json(&entity))
            .expect(2)
            .mount(&server)
            .await;
    }
    let c = client(&server);
    assert_eq!(c.status(), ConnectionStatus::Pending);
    let source: Arc<dyn EntitySource> = Arc::new(c.clone());
    for (kind, id, entity) in samples() {
        let expected = Entity::from_value(kind, entity).unwrap();
        assert_eq!(c.entity(kind, id).await.unwrap(), expected, "{kind}");
        // Through the engine's trait as well.
        assert_eq!(source.fetch(kind, id).await.unwrap(), expected, "{kind} via EntitySource");
    }
    assert_eq!(c.status(), ConnectionStatus::Active);
    // The typed accessors read the same documents.
    let requests_before = server.received_requests().await.unwrap().len();
    assert_eq!(requests_before, 10);
    let all = jtis(&server).await;
    let mut unique = all.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "every request carries a fresh jti");
}

#[tokio::test]
async fn typed_accessors_hit_their_paths() {
    let server = MockServer::start().await;
    for (kind, id, entity) in samples() {
        Mock::given(method("GET"))
            .and(path(format!("/rest/V1/byte8/{}/{id}", segment(kind))))
            .and(SignedByLedger)
            .respond_with(ResponseTemplate::new(200).set_body_json(&entity))
            .expect(1)
            .mount(&server)
            .await;
    }
    let c = client(&server);
    let s = samples();
    let id = |k: EventKind| s.iter().find(|(kind, _, _)| *kind == k).unwrap().1;
    assert_eq!(c.invoice(id(EventKind::InvoiceCreated)).await.unwrap().magento_id, id(EventKind::InvoiceCreated));
    assert_eq!(c.payment(id(EventKind::InvoicePaid)).await.unwrap().invoice_id, id(EventKind::InvoicePaid));
    assert_eq!(
        c.credit_memo(id(EventKind::CreditMemoCreated)).await.unwrap().magento_id,
        id(EventKind::CreditMemoCreated)
    );
    assert_eq!(c.customer(id(EventKind::CustomerUpserted)).await.unwrap().email, "jane@example.com");
    assert_eq!(c.product(id(EventKind::ProductUpserted)).await.unwrap().magento_id, id(EventKind::ProductUpserted));
}

#[tokio::test]
async fn unreadable_or_invalid_entities_name_the_field() {
    let server = MockServer::start().await;
    let (_, _, invoice) = samples().into_iter().find(|(k, _, _)| *k == EventKind::InvoiceCreated).unwrap();
    let mut missing = invoice.clone();
    missing["lines"][0].as_object_mut().unwrap().remove("line_total");
    let mut off = invoice.clone();
    off["grand_total"] = json!("99.99");
    let mut other = invoice.clone();
    other["magento_id"] = json!(4);
    for (id, body) in [(1, missing), (2, off), (3, other)] {
        let mut body = body;
        if id != 3 {
            body["magento_id"] = json!(id);
        }
        Mock::given(method("GET"))
            .and(path(format!("/rest/V1/byte8/invoice/{id}")))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .mount(&server)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/rest/V1/byte8/invoice/5"))
        .respond_with(ResponseTemplate::new(200).set_body_string("<html>maintenance</html>"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/rest/V1/byte8/invoice/404"))
        .respond_with(
            ResponseTemplate::new(404)
                .set_body_json(json!({"message": "No such entity with %1 = %2", "parameters": ["id", 404]})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);

    let e = c.invoice(1).await.unwrap_err();
    assert!(matches!(e, Error::Parse { .. }), "{e:?}");
    assert!(e.to_string().contains("lines[0]") && e.to_string().contains("line_total"), "{e}");
    let e = c.invoice(2).await.unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains("grand_total"), "{e}");
    let e = c.invoice(3).await.unwrap_err();
    assert!(e.to_string().contains("magento_id: 4 does not match the requested id 3"), "{e}");
    let e = c.invoice(5).await.unwrap_err();
    assert!(e.to_string().contains("not JSON") && !e.is_retryable(), "{e}");
    let e = c.invoice(404).await.unwrap_err();
    assert!(matches!(&e, Error::NotFound { what, id } if what == "Magento invoice" && id == "404"), "{e:?}");
    assert_eq!(e.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn a_guest_customer_is_never_fetched() {
    let server = MockServer::start().await;
    Mock::given(method("GET")).respond_with(ResponseTemplate::new(200)).expect(0).mount(&server).await;
    let e = client(&server).customer(0).await.unwrap_err();
    assert!(e.to_string().contains("0 is a guest"), "{e}");
}

#[tokio::test]
async fn ping_and_payment_methods() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/rest/V1/byte8/ping"))
        .and(SignedByLedger)
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"ok": true, "tenant_id": tenant(), "server_time": "2026-11-18T11:06:41+00:00"})),
        )
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/rest/V1/byte8/payment-methods"))
        .and(SignedByLedger)
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([
            {"code": "checkmo", "label": "Check / Money order", "is_active": true},
            {"code": "braintree", "label": null, "is_active": false}
        ])))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let ping = c.ping().await.unwrap();
    assert!(ping.ok);
    assert_eq!(ping.tenant_id.as_deref(), Some(tenant().as_str()));
    let methods = c.payment_methods().await.unwrap();
    assert_eq!(methods.len(), 2);
    assert_eq!(
        (methods[1].code.as_str(), methods[1].label.as_deref(), methods[1].is_active),
        ("braintree", None, false)
    );
    assert_eq!(c.status(), ConnectionStatus::Active);
}

// ---------------------------------------------------------------------------------------------
// Sync-state callback

fn outcome() -> Outcome {
    Outcome {
        idempotency_key: Some("invoice.paid:1001".into()),
        event: Some("invoice.paid".into()),
        entity_type: Some("invoice".into()),
        magento_entity_id: Some(1001),
        provider: "sage_accounting".into(),
        sync_status: SyncStatus::Synced,
        provider_entity_id: Some("9f3a6c1e2b4d4f7a8c0e1d2f3a4b5c6d".into()),
        provider_reference: Some("SI-27".into()),
        skip_reason: None,
        error_code: None,
        message: Some("posted".into()),
        last_sync_at: DateTime::parse_from_rfc3339("2026-04-29T10:11:12Z").unwrap().with_timezone(&Utc),
    }
}

const SYNCED_BODY: &str = r#"{"entity_type":"invoice","magento_entity_id":1001,"provider":"sage_accounting","sync_status":"synced","provider_entity_id":"9f3a6c1e2b4d4f7a8c0e1d2f3a4b5c6d","provider_reference":null,"skip_reason":null,"error_code":null,"last_sync_at":"2026-04-29T10:11:12Z"}"#;

#[tokio::test]
async fn sync_state_sends_exactly_the_documented_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/V1/byte8/sync-state"))
        .and(header("content-type", "application/json"))
        .and(body_json(serde_json::from_str::<Value>(SYNCED_BODY).unwrap()))
        .and(SignedByLedger)
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    c.post_sync_state(&outcome()).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(String::from_utf8(requests[0].body.clone()).unwrap(), SYNCED_BODY, "byte for byte, in order");

    // Skipped and failed outcomes carry their reason and class.
    let skipped = Outcome {
        sync_status: SyncStatus::Skipped,
        provider_entity_id: None,
        skip_reason: Some("payment_method_not_mapped".into()),
        ..outcome()
    };
    let failed = Outcome {
        event: Some("creditmemo.created".into()),
        magento_entity_id: Some(3001),
        sync_status: SyncStatus::Failed,
        provider_entity_id: None,
        error_code: Some(ErrorCode::Validation),
        ..outcome()
    };
    // These two do not match the first mock's body: give them their own.
    for (o, body) in [
        (
            skipped,
            json!({"entity_type":"invoice","magento_entity_id":1001,"provider":"sage_accounting","sync_status":"skipped",
                   "provider_entity_id":null,"provider_reference":null,"skip_reason":"payment_method_not_mapped",
                   "error_code":null,"last_sync_at":"2026-04-29T10:11:12Z"}),
        ),
        (
            failed,
            json!({"entity_type":"creditmemo","magento_entity_id":3001,"provider":"sage_accounting","sync_status":"failed",
                   "provider_entity_id":null,"provider_reference":null,"skip_reason":null,
                   "error_code":"validation","last_sync_at":"2026-04-29T10:11:12Z"}),
        ),
    ] {
        Mock::given(method("POST"))
            .and(path("/rest/V1/byte8/sync-state"))
            .and(body_json(body))
            .and(SignedByLedger)
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
        c.post_sync_state(&o).await.unwrap();
    }
    // Each body landed on its own mock exactly once.
    server.verify().await;
}

#[tokio::test]
async fn sync_state_5xx_is_retried_with_fresh_tokens_then_succeeds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/V1/byte8/sync-state"))
        .and(SignedByLedger)
        .respond_with(ResponseTemplate::new(503).set_body_json(json!({"message": "Service Unavailable"})))
        .up_to_n_times(2)
        .expect(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rest/V1/byte8/sync-state"))
        .and(body_json(serde_json::from_str::<Value>(SYNCED_BODY).unwrap()))
        .and(SignedByLedger)
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    c.post_sync_state(&outcome()).await.unwrap();
    let jtis = jtis(&server).await;
    assert_eq!(jtis.len(), 3);
    assert!(jtis[0] != jtis[1] && jtis[1] != jtis[2] && jtis[0] != jtis[2], "Magento would refuse a re-sent jti");
    assert_eq!(c.status(), ConnectionStatus::Active);
}

#[tokio::test]
async fn sync_state_gives_up_after_the_retries_with_a_retryable_error() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/V1/byte8/sync-state"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"message": "Internal Error"})))
        .expect(4)
        .mount(&server)
        .await;
    let e = client(&server).post_sync_state(&outcome()).await.unwrap_err();
    assert!(matches!(e, Error::Provider { status: Some(500), retryable: true, .. }), "{e:?}");
    assert!(e.to_string().contains("Internal Error"), "{e}");
}

#[tokio::test]
async fn sync_state_400_is_rejected_with_magentos_message_and_not_retried() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/V1/byte8/sync-state"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "message": "Unknown entity_type %1; expected one of: %2",
            "parameters": ["order", "invoice, creditmemo, customer, product"]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let e = client(&server).post_sync_state(&outcome()).await.unwrap_err();
    assert!(matches!(e, Error::Rejected { status: 400, .. }), "{e:?}");
    assert!(e.to_string().contains("Unknown entity_type order; expected one of: invoice"), "{e}");
}

#[tokio::test]
async fn an_outcome_magento_would_refuse_is_never_sent() {
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(204)).expect(0).mount(&server).await;
    let bad = Outcome { event: Some("order.shipped".into()), entity_type: None, ..outcome() };
    let e = client(&server).post_sync_state(&bad).await.unwrap_err();
    assert!(e.to_string().contains("entity_type"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// 401 → token_revoked

#[tokio::test]
async fn a_401_marks_the_connection_token_revoked() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/rest/V1/byte8/ping"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/rest/V1/byte8/ping"))
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"message": "The consumer isn't authorized to access %resources."})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/rest/V1/byte8/sync-state"))
        .respond_with(ResponseTemplate::new(401))
        .expect(1)
        .mount(&server)
        .await;
    let c = client(&server);
    let mut watch = c.watch_status();
    c.ping().await.unwrap();
    assert_eq!(c.status(), ConnectionStatus::Active);
    watch.changed().await.unwrap();
    assert_eq!(*watch.borrow_and_update(), ConnectionStatus::Active);

    let e = c.ping().await.unwrap_err();
    assert!(matches!(&e, Error::Auth { provider: "magento", reason: AuthFailure::ReconnectRequired, .. }), "{e:?}");
    assert!(!e.is_retryable());
    assert_eq!(c.status(), ConnectionStatus::TokenRevoked);
    watch.changed().await.unwrap();
    assert_eq!(*watch.borrow_and_update(), ConnectionStatus::TokenRevoked);
    // A clone shares the status; a 401 on the callback is not retried either.
    let e = c.clone().post_sync_state(&outcome()).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Auth);
    assert_eq!(c.status(), ConnectionStatus::TokenRevoked);
    assert_eq!(server.received_requests().await.unwrap().len(), 3);
}

#[tokio::test]
async fn network_errors_are_retried_then_reported() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let c = MagentoClient::builder()
        .with_base_url(format!("http://{addr}"))
        .with_tenant_id(tenant())
        .with_api_key(ApiKey::new(api_key_text()).unwrap())
        .with_clock(clock())
        .with_retry(fast_retry())
        .build()
        .unwrap();
    let e = c.ping().await.unwrap_err();
    assert!(matches!(e, Error::Http { provider: "magento", .. }), "{e:?}");
    assert!(e.is_retryable());
    assert_eq!(c.status(), ConnectionStatus::Pending);
}

// ---------------------------------------------------------------------------------------------
// Pairing

fn pair_request(server: &MockServer, key: &ApiKey) -> PairRequest {
    PairRequest::new(
        &format!(" {}/ ", server.uri()),
        " 0123456789abcdef0123456789abcdef\n",
        &tenant(),
        key.clone(),
        "https://ledger.example.com/",
    )
    .unwrap()
}

#[tokio::test]
async fn pair_posts_the_documented_body_without_authorization() {
    let server = MockServer::start().await;
    let key = ApiKey::generate().unwrap();
    Mock::given(method("POST"))
        .and(path("/rest/V1/byte8/setup/pair"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "pairing_code": "0123456789abcdef0123456789abcdef",
            "tenant_id": tenant(),
            "byte8_api_key": key.expose_secret(),
            "ledger_base_url": "https://ledger.example.com",
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(Value::Null))
        .expect(1)
        .mount(&server)
        .await;
    pair_request(&server, &key).send(&http_client().unwrap(), clock().as_ref()).await.unwrap();
    let requests = server.received_requests().await.unwrap();
    assert!(requests[0].headers.get("authorization").is_none(), "the pairing route is anonymous");
    let body: Value = serde_json::from_slice(&requests[0].body).unwrap();
    assert_eq!(body.as_object().unwrap().len(), 4);
    assert_eq!(key.expose_secret().len(), 64);
}

#[tokio::test]
async fn pair_400_names_what_magento_refused() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/V1/byte8/setup/pair"))
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"message": "ledger_base_url must be an absolute http(s) URL."})),
        )
        .expect(1)
        .mount(&server)
        .await;
    let key = ApiKey::generate().unwrap();
    let e = pair_request(&server, &key).send(&http_client().unwrap(), clock().as_ref()).await.unwrap_err();
    let Error::Rejected { provider: "magento", status: 400, errors } = &e else { panic!("{e:?}") };
    assert_eq!(errors[0].field, "ledger_base_url");
    assert!(e.to_string().contains("ledger_base_url must be an absolute http(s) URL."), "{e}");
    assert_eq!(e.code(), ErrorCode::Validation);
    assert!(!e.to_string().contains(key.expose_secret()));
}

#[tokio::test]
async fn pair_401_is_an_invalid_or_expired_code() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/V1/byte8/setup/pair"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"message": "Invalid or expired pairing code."})))
        .expect(1)
        .mount(&server)
        .await;
    let key = ApiKey::generate().unwrap();
    let e = pair_request(&server, &key).send(&http_client().unwrap(), clock().as_ref()).await.unwrap_err();
    assert!(matches!(&e, Error::Auth { provider: "magento", reason: AuthFailure::InvalidCredential, .. }), "{e:?}");
    assert!(e.to_string().contains("invalid or expired pairing code"), "{e}");
    assert!(!e.is_retryable());
}

#[tokio::test]
async fn pair_5xx_is_not_resent_and_says_the_outcome_is_unknown() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/rest/V1/byte8/setup/pair"))
        .respond_with(ResponseTemplate::new(502))
        .expect(1)
        .mount(&server)
        .await;
    let key = ApiKey::generate().unwrap();
    let e = pair_request(&server, &key).send(&http_client().unwrap(), clock().as_ref()).await.unwrap_err();
    assert!(e.outcome_unknown() && e.is_retryable(), "{e:?}");
}
