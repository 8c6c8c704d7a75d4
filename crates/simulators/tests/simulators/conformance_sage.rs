//! The conformance suite against the Sage provider: over HTTP into the simulator, and over a
//! wiremock server whose one catch-all responder is the simulator's state machine (so every
//! request the provider sends is also visible to wiremock).

use std::{sync::Arc, time::Duration};

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet},
    http::{RateConfig, RetryConfig},
    providers::{
        conformance::{self, Fixture},
        sage::{SageBuilder, SageProvider},
    },
};
use byte8_ledger_simulators::{DEMO_REFRESH_TOKEN, SageSimulator, SimConfig, SimRequest};
use secrecy::SecretString;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

fn provider(base: String, token: String) -> SageProvider {
    SageBuilder::new()
        .with_client_id("demo-client")
        .with_client_secret(SecretString::from("demo-secret".to_owned()))
        .with_business_id("demo-business")
        .with_base_url(base)
        .with_token_url(token)
        .with_token_store(Arc::new(MemoryTokenStore::new(Some(TokenSet::from_refresh_token(SecretString::from(
            DEMO_REFRESH_TOKEN.to_owned(),
        ))))))
        .with_retry(RetryConfig {
            max_retries: 2,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_secs(1),
            retry_timeout: Duration::from_secs(5),
        })
        .with_rate(RateConfig { requests_per_minute: 0, burst: 0 })
        .build()
        .expect("build")
}

#[tokio::test]
async fn sage_over_http_into_the_simulator_conforms() {
    let sim = SageSimulator::demo(SimConfig::default());
    let server = sim.serve().await.unwrap();
    let sage = provider(server.base_url(), server.token_url());
    conformance::run_all(&sage, &Fixture::demo_uk("sim-http")).await;
    // Every write went through the state machine: documents exist there.
    let b = sim.business("demo-business").unwrap();
    assert!(!b.invoices.is_empty() && !b.payments.is_empty() && !b.allocations.is_empty());
}

/// A wiremock responder that answers with the simulator's state machine.
struct Simulated(SageSimulator);

impl Respond for Simulated {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let sim_req = SimRequest {
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
        let mut t = ResponseTemplate::new(answer.status).set_body_raw(answer.body.to_string(), "application/json");
        for (k, v) in answer.headers {
            t = t.insert_header(k.as_str(), v.as_str());
        }
        t
    }
}

#[tokio::test]
async fn sage_over_wiremock_conforms() {
    let server = MockServer::start().await;
    let sim = SageSimulator::demo(SimConfig::default());
    Mock::given(any()).respond_with(Simulated(sim.clone())).mount(&server).await;
    let sage = provider(format!("{}/v3.1", server.uri()), format!("{}/token", server.uri()));
    conformance::run_all(&sage, &Fixture::demo_uk("wiremock")).await;
    // wiremock saw every request; each carried the business header and a bearer token.
    let requests = server.received_requests().await.unwrap();
    let api: Vec<_> = requests.iter().filter(|r| r.url.path().starts_with("/v3.1/")).collect();
    assert!(api.len() > 20);
    assert!(api.iter().all(|r| r.headers.get("x-business").is_some_and(|v| v == "demo-business")));
    assert!(
        api.iter()
            .all(|r| r.headers.get("authorization").is_some_and(|v| v.to_str().unwrap_or("").starts_with("Bearer ")))
    );
}
