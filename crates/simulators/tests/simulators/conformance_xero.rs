//! The public conformance suite, unchanged, against the Xero provider over HTTP into the Xero
//! simulator: the whole suite and each behaviour on its own (so that a failure names it).

use crate::support_xero as xero;

use byte8_ledger_core::providers::conformance;
use byte8_ledger_simulators::xero::{XERO_DEMO_TENANT, XeroSimConfig, XeroSimulator};

macro_rules! behaviour_tests {
    ($($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
                let server = sim.serve().await.unwrap();
                conformance::$name(&xero::provider(&server), &xero::fixture(stringify!($name))).await;
            }
        )*
    };
}

behaviour_tests!(
    reference_data_and_policy,
    contact_round_trip,
    duplicate_contact_reference_is_taken,
    resolve_contact_adopts_and_moves_on,
    invoice_round_trip,
    payment_settles_invoice,
    credit_note_allocation,
    find_or_post_invoice_posts_once,
    currency_lock,
    unknown_ids_are_not_found,
    items_round_trip,
    stock_movements,
    void_document,
    batches_answer_each_item_in_place,
);

#[tokio::test]
async fn xero_over_http_into_the_simulator_conforms() {
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    let server = sim.serve().await.unwrap();
    conformance::run_all(&xero::provider(&server), &xero::fixture("xero-run-all")).await;
    let org = sim.org(XERO_DEMO_TENANT).unwrap();
    assert!(!org.invoices.is_empty() && !org.payments.is_empty() && !org.allocations.is_empty());
    // Every Accounting API write (PUT or POST; the simulator counts them as `PUT /Resource` and
    // `POST /Resource`, and the token endpoint as `POST /connect/token`, which is not one)
    // carried an Idempotency-Key: with no faults and no limits every write reaches the point
    // where the simulator records its key, so there are exactly as many keys as writes. And no
    // key was sent twice: nothing was retried, and two different writes never share a key.
    let writes: u64 = sim
        .requests()
        .iter()
        .filter(|(k, _)| (k.starts_with("PUT /") || k.starts_with("POST /")) && k.as_str() != "POST /connect/token")
        .map(|(_, n)| *n)
        .sum();
    let keys = sim.with_state(|s| s.idempotency_keys.clone());
    assert!(writes > 10, "a real run: {:?}", sim.requests());
    assert_eq!(keys.len() as u64, writes, "a write without an Idempotency-Key: {:?}", sim.requests());
    let distinct: std::collections::BTreeSet<&String> = keys.iter().collect();
    assert_eq!(distinct.len(), keys.len(), "a key sent twice");
}

use crate::support_xero_spec as xero_spec;

/// A wiremock responder that answers with the Xero simulator's state machine, so that wiremock
/// sees (and the spec checker checks) every request of a whole conformance run.
struct Simulated(XeroSimulator);

impl wiremock::Respond for Simulated {
    fn respond(&self, req: &wiremock::Request) -> wiremock::ResponseTemplate {
        let sim_req = byte8_ledger_simulators::SimRequest {
            method: req.method.to_string(),
            path: req.url.path().to_owned(),
            query: req.url.query_pairs().into_owned().collect(),
            headers: req
                .headers
                .iter()
                .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_ascii_lowercase(), v.to_owned())))
                .collect(),
            body: req.body.clone(),
        };
        let answer = self.0.handle(&sim_req);
        let body = match &answer.body {
            serde_json::Value::String(t) if answer.status == 404 => t.clone(),
            other => other.to_string(),
        };
        let mut t = wiremock::ResponseTemplate::new(answer.status).set_body_raw(body, "application/json");
        for (k, v) in answer.headers {
            t = t.insert_header(k.as_str(), v.as_str());
        }
        t
    }
}

#[tokio::test]
async fn every_request_of_a_conformance_run_matches_xeros_spec() {
    use byte8_ledger_core::{
        auth::{MemoryTokenStore, TokenSet},
        providers::xero::{XeroBuilder, XeroLimits},
    };
    use byte8_ledger_simulators::xero::XERO_DEMO_REFRESH_TOKEN;
    use secrecy::SecretString;
    let server = wiremock::MockServer::start().await;
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    wiremock::Mock::given(wiremock::matchers::any()).respond_with(Simulated(sim.clone())).mount(&server).await;
    let provider = XeroBuilder::new()
        .with_client_id("demo-client")
        .with_client_secret(SecretString::from("demo-secret".to_owned()))
        .with_tenant_id(XERO_DEMO_TENANT)
        .with_base_url(format!("{}/api.xro/2.0", server.uri()))
        .with_token_url(format!("{}/connect/token", server.uri()))
        .with_connections_url(format!("{}/connections", server.uri()))
        .with_token_store(std::sync::Arc::new(MemoryTokenStore::new(Some(TokenSet::from_refresh_token(
            SecretString::from(XERO_DEMO_REFRESH_TOKEN.to_owned()),
        )))))
        .with_limits(XeroLimits::unlimited())
        .build()
        .unwrap();
    conformance::run_all(&provider, &xero::fixture("wiremock")).await;
    provider.connection().await.unwrap();
    let requests = server.received_requests().await.unwrap();
    let api: Vec<_> = requests.iter().filter(|r| r.url.path().starts_with("/api.xro/2.0/")).collect();
    assert!(api.len() > 30, "{} requests", api.len());
    for r in &requests {
        xero_spec::assert_request_valid(r);
    }
    assert!(api.iter().all(|r| r.headers.get("xero-tenant-id").is_some_and(|v| v == XERO_DEMO_TENANT)));
    let writes: Vec<_> = api.iter().filter(|r| matches!(r.method.as_str(), "PUT" | "POST")).collect();
    assert!(
        !writes.is_empty() && writes.iter().all(|r| r.headers.get("idempotency-key").is_some()),
        "a write without Idempotency-Key"
    );
}
