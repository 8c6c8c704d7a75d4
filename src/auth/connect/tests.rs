use super::*;
use wiremock::{Mock, MockServer, ResponseTemplate, matchers};

fn now() -> DateTime<Utc> {
    DateTime::<Utc>::UNIX_EPOCH + chrono::Duration::days(20_000)
}

fn query(url: &Url) -> HashMap<String, String> {
    url.query_pairs().into_owned().collect()
}

fn sage(server: &MockServer) -> OAuthApp {
    OAuthApp::new(
        ProviderKind::Sage,
        "sage-client",
        SecretString::from("sage-SECRET-1".to_owned()),
        "http://127.0.0.1:8765/callback",
    )
    .unwrap()
    .with_token_url(&format!("{}/token", server.uri()))
    .unwrap()
    .with_api_url(&format!("{}/v3.1", server.uri()))
    .unwrap()
}

fn xero(server: &MockServer) -> OAuthApp {
    OAuthApp::new(
        ProviderKind::Xero,
        "xero-client",
        SecretString::from("xero-SECRET-1".to_owned()),
        "http://127.0.0.1:8765/callback",
    )
    .unwrap()
    .with_token_url(&format!("{}/connect/token", server.uri()))
    .unwrap()
    .with_api_url(&format!("{}/connections", server.uri()))
    .unwrap()
}

fn form(req: &wiremock::Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(&req.body).into_owned().collect()
}

#[test]
fn the_sage_authorize_url_keeps_the_filter_and_carries_what_sage_wants() {
    let app = OAuthApp::new(ProviderKind::Sage, "cid", SecretString::from("s".to_owned()), "https://shop.example/cb")
        .unwrap();
    let req = app.authorize("st-1");
    assert_eq!(req.url.as_str().split('?').next(), Some("https://www.sageone.com/oauth2/auth/central"));
    let q = query(&req.url);
    assert_eq!(q["filter"], "apiv3.1");
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "cid");
    assert_eq!(q["redirect_uri"], "https://shop.example/cb");
    assert_eq!(q["scope"], "full_access");
    assert_eq!(q["state"], "st-1");
    assert!(req.pkce.is_none() && !q.contains_key("code_challenge"), "Sage has no PKCE");
}

#[test]
fn the_xero_authorize_url_has_its_scopes_and_a_s256_challenge() {
    let app = OAuthApp::new(ProviderKind::Xero, "cid", SecretString::from("s".to_owned()), "https://shop.example/cb")
        .unwrap();
    let req = app.authorize("st-2");
    assert!(req.url.as_str().starts_with("https://login.xero.com/identity/connect/authorize?"));
    let q = query(&req.url);
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["state"], "st-2");
    assert!(q["scope"].split(' ').any(|s| s == "offline_access"), "a refresh token needs offline_access");
    assert_eq!(q["code_challenge_method"], "S256");
    let pkce = req.pkce.expect("Xero uses PKCE");
    assert_eq!(q["code_challenge"], pkce.challenge());
    assert!(!req.url.as_str().contains(pkce.verifier().expose_secret()), "the verifier never goes in the URL");
    let v = pkce.verifier().expose_secret();
    assert!((43..=128).contains(&v.len()), "RFC 7636 4.1 length");
    assert!(v.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b)));
}

#[test]
fn pkce_matches_the_rfc_7636_example() {
    // RFC 7636 appendix B.
    let p = Pkce::from_verifier(SecretString::from("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk".to_owned()));
    assert_eq!(p.challenge(), "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
}

#[test]
fn random_states_differ_and_compare() {
    let (a, b) = (random_state(), random_state());
    assert_ne!(a, b);
    assert_eq!(a.len(), 43);
    assert!(same_state(&a, &a.clone()));
    assert!(!same_state(&a, &b));
    assert!(!same_state(&a, &a[..10]));
}

#[test]
fn the_callback_keeps_sages_country_prefix_and_reports_errors_with_a_next_step() {
    let cb = Callback::parse(ProviderKind::Sage, "code=GB%2F8a7f6e5d&state=abc&country=GB").unwrap();
    assert_eq!(cb.code.expose_secret(), "GB/8a7f6e5d");
    assert_eq!(cb.state, "abc");
    assert_eq!(cb.country.as_deref(), Some("GB"));
    assert!(!format!("{cb:?}").contains("8a7f6e5d"), "the code is not in Debug");

    let e = Callback::parse(ProviderKind::Sage, "error=Invalid+request&reason=Email+already+in+use").unwrap_err();
    let text = e.to_string();
    assert!(text.contains("Email already in use") && text.contains("run connect again"), "{text}");
    let e = Callback::parse(ProviderKind::Xero, "error=access_denied&state=x").unwrap_err();
    assert!(e.to_string().contains("declined"), "{e}");
    let e = Callback::parse(ProviderKind::Xero, "state=x").unwrap_err();
    assert!(e.to_string().contains("code"), "{e}");
    let e = Callback::parse(ProviderKind::Xero, "code=c").unwrap_err();
    assert!(e.to_string().contains("state"), "{e}");
}

#[tokio::test]
async fn sage_code_exchange_sends_the_code_verbatim_with_the_client_in_the_body() {
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/token"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "acc-1", "refresh_token": "ref-1", "expires_in": 300, "refresh_token_expires_in": 2_678_400,
        })))
        .expect(1)
        .mount(&server)
        .await;
    let app = sage(&server);
    let t = app.exchange_code(&SecretString::from("GB/abc123".to_owned()), None, now()).await.unwrap();
    assert_eq!(t.refresh_token.expose_secret(), "ref-1");
    assert_eq!(t.issued_at, Some(now()));
    assert_eq!(t.refresh_expires_at, Some(now() + chrono::Duration::days(31)));
    let reqs = server.received_requests().await.unwrap();
    let f = form(&reqs[0]);
    assert_eq!(f["grant_type"], "authorization_code");
    assert_eq!(f["code"], "GB/abc123", "verbatim, prefix included");
    assert_eq!(f["redirect_uri"], "http://127.0.0.1:8765/callback");
    assert_eq!(f["client_id"], "sage-client");
    assert_eq!(f["client_secret"], "sage-SECRET-1");
    assert!(!f.contains_key("code_verifier"));
}

#[tokio::test]
async fn xero_code_exchange_sends_the_pkce_verifier_and_basic_auth() {
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/connect/token"))
        .and(matchers::header_exists("authorization"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
            "access_token": "acc-x", "refresh_token": "ref-x", "expires_in": 1800,
        })))
        .mount(&server)
        .await;
    let app = xero(&server);
    let req = app.authorize("s");
    let pkce = req.pkce.unwrap();
    let t = app.exchange_code(&SecretString::from("xcode".to_owned()), Some(&pkce), now()).await.unwrap();
    assert_eq!(t.access_token.expose_secret(), "acc-x");
    assert_eq!(t.refresh_expires_at, None, "Xero does not say");
    let reqs = server.received_requests().await.unwrap();
    let f = form(&reqs[0]);
    assert_eq!(f["code_verifier"], pkce.verifier().expose_secret());
    assert!(!f.contains_key("client_secret"), "Xero's client authenticates with HTTP Basic");
    let basic = reqs[0].headers.get("authorization").unwrap().to_str().unwrap().to_owned();
    assert_eq!(
        basic,
        format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("xero-client:xero-SECRET-1"))
    );
}

#[tokio::test]
async fn a_refused_code_says_what_to_do_next_and_never_quotes_the_code() {
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::body_string_contains("code=expired-CODE"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({"error": "invalid_grant"})))
        .mount(&server)
        .await;
    Mock::given(matchers::method("POST"))
        .and(matchers::body_string_contains("code=mismatch-CODE"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(
                serde_json::json!({"error": "invalid_grant", "error_description": "Invalid redirect_uri"}),
            ),
        )
        .mount(&server)
        .await;
    Mock::given(matchers::method("POST"))
        .and(matchers::body_string_contains("code=other-CODE"))
        .respond_with(ResponseTemplate::new(400).set_body_json(serde_json::json!({"error": "redirect_uri_mismatch"})))
        .mount(&server)
        .await;
    let app = sage(&server);
    let e = app.exchange_code(&SecretString::from("expired-CODE".to_owned()), None, now()).await.unwrap_err();
    let text = e.to_string();
    assert!(text.contains("the code expired") && text.contains("run connect again"), "{text}");
    assert!(matches!(e, Error::Auth { reason: AuthFailure::ReconnectRequired, .. }));
    for code in ["mismatch-CODE", "other-CODE"] {
        let e = app.exchange_code(&SecretString::from(code.to_owned()), None, now()).await.unwrap_err();
        let text = e.to_string();
        assert!(text.contains("redirect_uri must match the app's registration exactly"), "{text}");
        assert!(!text.contains("CODE") && !text.contains("SECRET"), "{text}");
    }
}

#[tokio::test]
async fn sage_businesses_are_read_as_a_bare_array_or_an_envelope() {
    for body in [
        serde_json::json!([{"id": "b1", "name": "One Ltd"}, {"id": "b2", "name": "Two Ltd"}]),
        serde_json::json!({"$items": [{"id": "b1", "name": "One Ltd"}, {"id": "b2", "displayed_as": "Two Ltd"}], "$total": 2}),
    ] {
        let server = MockServer::start().await;
        Mock::given(matchers::method("GET"))
            .and(matchers::path("/v3.1/businesses"))
            .and(matchers::header("authorization", "Bearer acc-1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(body))
            .expect(1)
            .mount(&server)
            .await;
        let list = sage(&server).businesses(&SecretString::from("acc-1".to_owned())).await.unwrap();
        assert_eq!(
            list,
            vec![
                ReachableBusiness { id: "b1".into(), name: "One Ltd".into(), connection_id: None },
                ReachableBusiness { id: "b2".into(), name: "Two Ltd".into(), connection_id: None },
            ]
        );
        let reqs = server.received_requests().await.unwrap();
        assert!(reqs[0].headers.get("x-business").is_none(), "listing businesses names none");
    }
}

#[tokio::test]
async fn xero_connections_list_organisations_not_practices_and_a_401_says_reconnect() {
    let server = MockServer::start().await;
    Mock::given(matchers::method("GET"))
        .and(matchers::path("/connections"))
        .and(matchers::header("authorization", "Bearer good"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([
            {"id": "c-1", "tenantId": "t-1", "tenantType": "ORGANISATION", "tenantName": "Shop One"},
            {"id": "c-2", "tenantId": "t-2", "tenantType": "PRACTICE", "tenantName": "Accountants"},
            {"id": "c-3", "tenantId": "t-3", "tenantType": "ORGANISATION", "tenantName": "Shop Three"},
        ])))
        .mount(&server)
        .await;
    Mock::given(matchers::method("GET"))
        .and(matchers::path("/connections"))
        .respond_with(ResponseTemplate::new(401).set_body_json(serde_json::json!({"Detail": "TokenExpired"})))
        .mount(&server)
        .await;
    let app = xero(&server);
    let list = app.businesses(&SecretString::from("good".to_owned())).await.unwrap();
    let ids: Vec<(&str, Option<&str>)> = list.iter().map(|b| (b.id.as_str(), b.connection_id.as_deref())).collect();
    assert_eq!(ids, [("t-1", Some("c-1")), ("t-3", Some("c-3"))]);
    let e = app.businesses(&SecretString::from("bad-TOKEN".to_owned())).await.unwrap_err();
    assert!(e.to_string().contains("run connect again") && !e.to_string().contains("bad-TOKEN"), "{e}");
}

#[tokio::test]
async fn an_unreadable_listing_is_an_error_naming_the_endpoint() {
    let server = MockServer::start().await;
    Mock::given(matchers::method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw(r#"{"unexpected":"shape"}"#, "application/json"))
        .mount(&server)
        .await;
    let e = sage(&server).businesses(&SecretString::from("a".to_owned())).await.unwrap_err();
    assert!(e.to_string().contains("GET /businesses") && e.to_string().contains("unreadable"), "{e}");
}

fn live(access: &str, refresh: &str) -> TokenSet {
    TokenSet {
        access_token: SecretString::from(access.to_owned()),
        refresh_token: SecretString::from(refresh.to_owned()),
        access_expires_at: now() + chrono::Duration::minutes(20),
        refresh_expires_at: None,
        issued_at: Some(now()),
    }
}

#[tokio::test]
async fn sage_revocation_is_tried_and_a_refusal_is_reported_not_raised() {
    let server = MockServer::start().await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/revoke"))
        .and(matchers::body_string_contains("token=ref-ok"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/revoke"))
        .respond_with(ResponseTemplate::new(404))
        .mount(&server)
        .await;
    let app = sage(&server);
    assert_eq!(app.revoke_url().as_str(), format!("{}/revoke", server.uri()));
    let r = app.revoke(&live("a", "ref-ok"), "b1", now()).await;
    assert!(r.confirmed(), "{r}");
    let reqs = server.received_requests().await.unwrap();
    let f = form(&reqs[0]);
    assert_eq!((f["client_id"].as_str(), f["client_secret"].as_str()), ("sage-client", "sage-SECRET-1"));
    let r = app.revoke(&live("a", "ref-REFUSED"), "b1", now()).await;
    assert!(!r.confirmed());
    let text = r.to_string();
    assert!(text.starts_with("deleted locally, not revoked") && text.contains("404"), "{text}");
    assert!(!text.contains("REFUSED"), "{text}");
    // Unreachable: also reported, not raised.
    let gone = sage(&server).with_revoke_url("http://127.0.0.1:1/revoke").unwrap();
    assert!(!gone.revoke(&live("a", "r"), "b1", now()).await.confirmed());
    // The real endpoints by default.
    let real =
        OAuthApp::new(ProviderKind::Sage, "c", SecretString::from("s".to_owned()), "https://x.example/cb").unwrap();
    assert_eq!(real.revoke_url().as_str(), SAGE_REVOKE_URL);
    let real =
        OAuthApp::new(ProviderKind::Xero, "c", SecretString::from("s".to_owned()), "https://x.example/cb").unwrap();
    assert_eq!(real.revoke_url().as_str(), XERO_REVOKE_URL);
}

#[tokio::test]
async fn xero_removes_one_organisation_when_others_remain_and_revokes_the_grant_otherwise() {
    let server = MockServer::start().await;
    Mock::given(matchers::method("GET"))
        .and(matchers::path("/connections"))
        .and(matchers::header("authorization", "Bearer two-orgs"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([
            {"id": "c-1", "tenantId": "t-1", "tenantType": "ORGANISATION", "tenantName": "One"},
            {"id": "c-2", "tenantId": "t-2", "tenantType": "ORGANISATION", "tenantName": "Two"},
        ])))
        .mount(&server)
        .await;
    Mock::given(matchers::method("GET"))
        .and(matchers::path("/connections"))
        .and(matchers::header("authorization", "Bearer one-org"))
        .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!([
            {"id": "c-1", "tenantId": "t-1", "tenantType": "ORGANISATION", "tenantName": "One"},
        ])))
        .mount(&server)
        .await;
    Mock::given(matchers::method("DELETE"))
        .and(matchers::path("/connections/c-2"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(matchers::method("POST"))
        .and(matchers::path("/connect/revocation"))
        .and(matchers::body_string_contains("token=ref-one"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&server)
        .await;
    let app = xero(&server);
    let r = app.revoke(&live("two-orgs", "ref-two"), "t-2", now()).await;
    assert!(r.confirmed() && r.to_string().contains("DELETE /connections/c-2"), "{r}");
    let r = app.revoke(&live("one-org", "ref-one"), "t-1", now()).await;
    assert!(r.confirmed() && r.to_string().contains("/connect/revocation"), "{r}");
}

#[test]
fn refresh_token_health_prefers_the_reported_expiry_then_the_documented_life() {
    let mut t = TokenSet::from_refresh_token(SecretString::from("r".to_owned()));
    assert_eq!(refresh_token_health(ProviderKind::Sage, &t, now()), None, "nothing known");
    // Xero: 60 days from issue; 10 days and an hour later, 49 whole days remain.
    t.issued_at = Some(now());
    let later = now() + chrono::Duration::days(10) + chrono::Duration::hours(1);
    let h = refresh_token_health(ProviderKind::Xero, &t, later).unwrap();
    assert_eq!((h.days_left, h.expired, h.basis), (49, false, ExpiryBasis::Documented));
    assert_eq!(h.expires_at, now() + chrono::Duration::days(60));
    // Sage: 31 days.
    let h = refresh_token_health(ProviderKind::Sage, &t, later).unwrap();
    assert_eq!(h.days_left, 20);
    // The endpoint's word wins.
    t.refresh_expires_at = Some(now() + chrono::Duration::days(5));
    let h = refresh_token_health(ProviderKind::Xero, &t, now()).unwrap();
    assert_eq!((h.days_left, h.basis), (5, ExpiryBasis::Reported));
    let h = refresh_token_health(ProviderKind::Xero, &t, now() + chrono::Duration::days(6)).unwrap();
    assert_eq!((h.days_left, h.expired), (0, true));
}

#[test]
fn a_signed_state_round_trips_and_refuses_forgery_expiry_other_sessions_and_replays() {
    let signer = StateSigner::random();
    let (state, claims) = signer.sign(ProviderKind::Sage, Some("biz-1"), "session-A", Duration::from_secs(600), now());
    assert!(!state.contains("session-A"), "the session is hashed");
    let back = signer.verify(&state, ProviderKind::Sage, "session-A", now()).unwrap();
    assert_eq!(back, claims);
    assert_eq!(back.business.as_deref(), Some("biz-1"));

    // Altered: a payload from another signing with this signature.
    let (other, _) = signer.sign(ProviderKind::Sage, Some("biz-2"), "session-A", Duration::from_secs(600), now());
    let forged = format!("{}.{}", other.split('.').next().unwrap(), state.split('.').nth(1).unwrap());
    assert_eq!(signer.verify(&forged, ProviderKind::Sage, "session-A", now()), Err(StateError::Forged));
    assert_eq!(
        StateSigner::random().verify(&state, ProviderKind::Sage, "session-A", now()),
        Err(StateError::Forged),
        "another key"
    );
    assert_eq!(signer.verify("garbage", ProviderKind::Sage, "session-A", now()), Err(StateError::Forged));
    assert_eq!(
        signer.verify(&state, ProviderKind::Sage, "session-A", now() + chrono::Duration::seconds(600)),
        Err(StateError::Expired)
    );
    assert_eq!(signer.verify(&state, ProviderKind::Sage, "session-B", now()), Err(StateError::WrongSession));
    assert_eq!(signer.verify(&state, ProviderKind::Xero, "session-A", now()), Err(StateError::WrongProvider));

    let guard = StateReplayGuard::new();
    guard.use_once(&back, now()).unwrap();
    assert_eq!(guard.use_once(&back, now()), Err(StateError::Replayed));
    assert!(StateSigner::new(SecretSlice::from(vec![1u8; 16])).is_err(), "short keys refused");
    assert!(StateSigner::new(SecretSlice::from(vec![1u8; 32])).is_ok());
}

#[test]
fn no_secret_shows_in_debug_of_the_connect_types() {
    let app = OAuthApp::new(
        ProviderKind::Xero,
        "client-id",
        SecretString::from("client-SECRET-1".to_owned()),
        "http://127.0.0.1:1/callback",
    )
    .unwrap();
    let req = app.authorize("state-1");
    let pkce = req.pkce.clone().unwrap();
    let verifier = pkce.verifier().expose_secret().to_owned();
    let cb = Callback::parse(ProviderKind::Xero, "code=the-CODE-2&state=state-1").unwrap();
    let signer = StateSigner::new(SecretSlice::from(b"key-SECRET-3-key-SECRET-3-key-SECRET-3".to_vec())).unwrap();
    for text in [
        format!("{app:?}"),
        format!("{req:?}"),
        format!("{pkce:?}"),
        format!("{cb:?}"),
        format!("{signer:?}"),
        format!("{:?}", app.oauth_client()),
        req.url.to_string(),
    ] {
        assert!(!text.contains("SECRET") && !text.contains("CODE") && !text.contains(&verifier), "{text}");
    }
}
