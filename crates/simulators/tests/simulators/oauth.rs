//! The simulators' authorisation-code endpoints, driven by the crate's own connect API
//! ([`byte8_ledger_core::auth::connect`]) and a test playing the browser.

use std::sync::Arc;

use byte8_ledger_core::{
    auth::connect::{Callback, OAuthApp, random_state},
    clock::{Clock, ManualClock},
    reference::ReferenceData,
    store::ProviderKind,
};
use byte8_ledger_simulators::{
    SageSimulator, SimConfig,
    xero::{XERO_DEMO_TENANT, XeroOrg, XeroSimConfig, XeroSimulator},
};
use chrono::{DateTime, Utc};
use secrecy::{ExposeSecret, SecretString};

use crate::support_browser::{client, consent, link};

const REDIRECT: &str = "http://127.0.0.1:9/callback";

fn start() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000)
}

fn sage_app(server: &byte8_ledger_simulators::SimServer) -> OAuthApp {
    OAuthApp::new(ProviderKind::Sage, "demo-client", SecretString::from("demo-secret".to_owned()), REDIRECT)
        .unwrap()
        .with_authorize_url(&server.authorize_url())
        .unwrap()
        .with_token_url(&server.token_url())
        .unwrap()
        .with_api_url(&server.base_url())
        .unwrap()
}

fn xero_app(server: &byte8_ledger_simulators::xero::XeroServer) -> OAuthApp {
    OAuthApp::new(ProviderKind::Xero, "demo-client", SecretString::from("demo-secret".to_owned()), REDIRECT)
        .unwrap()
        .with_authorize_url(&server.authorize_url())
        .unwrap()
        .with_token_url(&server.token_url())
        .unwrap()
        .with_api_url(&server.connections_url())
        .unwrap()
}

fn callback(kind: ProviderKind, back: &url::Url) -> Callback {
    assert_eq!(back.as_str().split('?').next(), Some(REDIRECT), "back to the redirect_uri");
    Callback::parse(kind, back.query().unwrap_or("")).unwrap()
}

#[tokio::test]
async fn sage_approves_with_a_gb_code_that_works_once_within_60_seconds_and_reaches_every_business() {
    let clock = Arc::new(ManualClock::new(start()));
    let sim = SageSimulator::with_clock(SimConfig::default(), Arc::clone(&clock) as Arc<dyn Clock>);
    sim.add_business(ReferenceData::demo_uk(start()));
    let mut second = ReferenceData::demo_uk(start());
    second.business.id = "second-business".into();
    second.business.name = "Second Shop Ltd".into();
    sim.add_business(second);
    let server = sim.serve().await.unwrap();
    let app = sage_app(&server);

    let req = app.authorize(random_state());
    let back = consent(req.url.as_str(), "approve").await;
    let cb = callback(ProviderKind::Sage, &back);
    assert_eq!(cb.state, req.state, "the state is echoed");
    assert!(cb.code.expose_secret().starts_with("GB/"), "Sage's country prefix");
    assert_eq!(cb.country.as_deref(), Some("GB"));

    let tokens = app.exchange_code(&cb.code, None, clock.now()).await.unwrap();
    let mut ids: Vec<String> = app.businesses(&tokens.access_token).await.unwrap().into_iter().map(|b| b.id).collect();
    ids.sort();
    assert_eq!(ids, ["demo-business", "second-business"]);

    // Single use.
    let e = app.exchange_code(&cb.code, None, clock.now()).await.unwrap_err();
    assert!(e.to_string().contains("run connect again"), "{e}");

    // 60 seconds on the simulator's clock.
    let late = callback(ProviderKind::Sage, &consent(app.authorize("s2").url.as_str(), "approve").await);
    clock.advance(chrono::Duration::seconds(60));
    let e = app.exchange_code(&late.code, None, clock.now()).await.unwrap_err();
    assert!(e.to_string().contains("the code expired"), "{e}");

    // The redirect_uri must be the authorisation's.
    let cb = callback(ProviderKind::Sage, &consent(app.authorize("s3").url.as_str(), "approve").await);
    let other = OAuthApp::new(
        ProviderKind::Sage,
        "demo-client",
        SecretString::from("demo-secret".to_owned()),
        "http://127.0.0.1:9/other",
    )
    .unwrap()
    .with_token_url(&server.token_url())
    .unwrap();
    let e = other.exchange_code(&cb.code, None, clock.now()).await.unwrap_err();
    assert!(e.to_string().contains("redirect_uri must match the app's registration exactly"), "{e}");

    // Revocation: the refresh token stops working.
    let r = app.revoke(&tokens, "demo-business", clock.now()).await;
    assert!(r.confirmed(), "{r}");
    assert_eq!(sim.with_state(|s| s.revocations), 1);
    assert!(app.oauth_client().refresh(&tokens.refresh_token, clock.now()).await.is_err(), "revoked");
}

#[tokio::test]
async fn sage_authorize_refuses_a_bad_request_and_deny_redirects_with_access_denied() {
    let sim = SageSimulator::demo(SimConfig::default());
    let server = sim.serve().await.unwrap();
    let bad =
        format!("{}&response_type=code&client_id=someone-else&redirect_uri={REDIRECT}&state=x", server.authorize_url());
    assert_eq!(client().get(bad).send().await.unwrap().status().as_u16(), 400);
    let app = sage_app(&server);
    let back = consent(app.authorize("st").url.as_str(), "deny").await;
    let e = Callback::parse(ProviderKind::Sage, back.query().unwrap()).unwrap_err();
    assert!(e.to_string().contains("declined"), "{e}");
}

#[tokio::test]
async fn xero_checks_pkce_lists_several_organisations_and_revokes_one_or_all() {
    let clock = Arc::new(ManualClock::new(start()));
    let sim = XeroSimulator::demo_on(XeroSimConfig::unlimited(), Arc::clone(&clock) as Arc<dyn Clock>);
    let second_tenant = "7a2d3c4b-5e6f-4a70-9b8c-0d1e2f3a4b5c";
    let mut second = XeroOrg::demo();
    second.tenant_id = second_tenant.into();
    second.name = "Second Shop Ltd".into();
    sim.add_org(second);
    let server = sim.serve().await.unwrap();
    let app = xero_app(&server);

    // Without a challenge, the authorize endpoint refuses.
    let plain = app.authorize_url_with("st", None);
    assert_eq!(client().get(plain.as_str()).send().await.unwrap().status().as_u16(), 400);
    let page = client().get(app.authorize("st").url.as_str()).send().await.unwrap().text().await.unwrap();
    assert!(link(&page, "approve").contains("code_challenge="));

    // A wrong verifier is refused; the right one works.
    let req = app.authorize(random_state());
    let cb = callback(ProviderKind::Xero, &consent(req.url.as_str(), "approve").await);
    assert_eq!(cb.state, req.state);
    let wrong = byte8_ledger_core::auth::connect::Pkce::generate();
    let e = app.exchange_code(&cb.code, Some(&wrong), clock.now()).await.unwrap_err();
    assert!(e.to_string().contains("code_verifier"), "{e}");
    let req = app.authorize(random_state());
    let cb = callback(ProviderKind::Xero, &consent(req.url.as_str(), "approve").await);
    let tokens = app.exchange_code(&cb.code, req.pkce.as_ref(), clock.now()).await.unwrap();
    let orgs = app.businesses(&tokens.access_token).await.unwrap();
    assert_eq!(orgs.len(), 2, "{orgs:?}");

    // One of two: only its connection goes.
    let r = app.revoke(&tokens, second_tenant, clock.now()).await;
    assert!(r.confirmed() && r.to_string().contains("DELETE /connections"), "{r}");
    let left: Vec<String> = app.businesses(&tokens.access_token).await.unwrap().into_iter().map(|b| b.id).collect();
    assert_eq!(left, [XERO_DEMO_TENANT]);
    // The last one: the grant is revoked, the refresh token dies.
    let r = app.revoke(&tokens, XERO_DEMO_TENANT, clock.now()).await;
    assert!(r.confirmed() && r.to_string().contains("revocation"), "{r}");
    assert!(app.businesses(&tokens.access_token).await.unwrap().is_empty());
    assert!(app.oauth_client().refresh(&tokens.refresh_token, clock.now()).await.is_err());

    // An expired code.
    let req = app.authorize("late");
    let cb = callback(ProviderKind::Xero, &consent(req.url.as_str(), "approve").await);
    clock.advance(chrono::Duration::seconds(61));
    let e = app.exchange_code(&cb.code, req.pkce.as_ref(), clock.now()).await.unwrap_err();
    assert!(e.to_string().contains("the code expired"), "{e}");
}
