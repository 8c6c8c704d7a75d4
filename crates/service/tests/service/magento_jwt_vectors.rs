//! The crate's HKDF and HS256 against vectors made by other implementations
//! (`tests/fixtures/jwt/`: Python's standard library, checked again with PHP's `hash_hkdf` and
//! `hash_hmac`).

use std::sync::Arc;

use byte8_ledger_core::{
    clock::{Clock, ManualClock},
    error::{AuthFailure, Error},
};
use byte8_ledger_service::magento::{
    ApiKey, Claims, JwtSigner, MemoryReplayCache, WebhookVerifier,
    jwt::{self},
};
use chrono::DateTime;
use secrecy::ExposeSecret;
use serde_json::Value;

fn vectors() -> Value {
    serde_json::from_str(include_str!("../../../../tests/fixtures/jwt/vectors.json")).expect("vectors.json")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn clock(v: &Value) -> Arc<dyn Clock> {
    Arc::new(ManualClock::new(DateTime::from_timestamp(v["now"].as_i64().unwrap(), 0).unwrap()))
}

fn key(v: &Value) -> ApiKey {
    ApiKey::new(v["api_key"].as_str().unwrap()).unwrap()
}

fn verifier(v: &Value) -> WebhookVerifier {
    WebhookVerifier::new(key(v).derive().outbound, clock(v), Arc::new(MemoryReplayCache::default())).unwrap()
}

#[test]
fn subkeys_match_the_independent_hkdf() {
    let v = vectors();
    let keys = key(&v).derive();
    assert_eq!(hex(keys.outbound.expose_secret()), v["subkeys"]["outbound"].as_str().unwrap());
    assert_eq!(hex(keys.inbound.expose_secret()), v["subkeys"]["inbound"].as_str().unwrap());
    // The key text, not a hex decoding of it, is the input key material: a key that decodes to
    // the same bytes but is written in upper case derives other subkeys.
    let upper = ApiKey::new(v["api_key"].as_str().unwrap().to_uppercase()).unwrap().derive();
    assert_ne!(hex(upper.outbound.expose_secret()), v["subkeys"]["outbound"].as_str().unwrap());
}

#[tokio::test]
async fn webhook_vectors_are_accepted_or_refused_as_expected() {
    let v = vectors();
    let tenant = v["tenant_id"].as_str().unwrap();
    let cases = v["webhooks"].as_array().unwrap();
    assert!(cases.len() >= 14);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let token = case["token"].as_str().unwrap();
        let expect = case["expect"].as_str().unwrap();
        let result = verifier(&v).verify(token, tenant).await;
        match (expect, result) {
            ("ok", Ok(claims)) => {
                let sent: Claims = serde_json::from_str(case["claims_json"].as_str().unwrap()).unwrap();
                assert_eq!(claims, sent, "{name}");
            }
            ("ok", Err(e)) => panic!("{name}: refused: {e}"),
            (_, Ok(_)) => panic!("{name}: accepted, expected a refusal containing `{expect}`"),
            (_, Err(e)) => {
                let Error::Auth { provider: "magento", reason: AuthFailure::InvalidCredential, message } = &e else {
                    panic!("{name}: not an invalid-credential error: {e:?}");
                };
                assert!(message.contains(expect), "{name}: `{message}` lacks `{expect}`");
                assert!(!message.contains(token), "{name}: the message echoes the token");
                assert!(!message.contains(v["api_key"].as_str().unwrap()), "{name}: the message shows the key");
            }
        }
    }
}

#[tokio::test]
async fn a_valid_webhook_vector_is_single_use() {
    let v = vectors();
    let tenant = v["tenant_id"].as_str().unwrap();
    let token = v["webhooks"][0]["token"].as_str().unwrap();
    let verifier = verifier(&v);
    verifier.verify_authorization(Some(&format!("Bearer {token}")), tenant).await.unwrap();
    let err = verifier.verify(token, tenant).await.unwrap_err();
    assert!(err.to_string().contains("jti already seen (replay)"), "{err}");
    // The same token for another tenant's URL is refused on `sub`.
    let err = self::verifier(&v).verify(token, "another-tenant").await.unwrap_err();
    assert!(err.to_string().contains("sub is not the tenant id"), "{err}");
}

#[test]
fn the_crate_signs_the_same_bytes_as_the_independent_implementation() {
    let v = vectors();
    let inbound = key(&v).derive().inbound;
    for case in v["ledger_tokens"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let claims_json = case["claims_json"].as_str().unwrap();
        let claims: Claims = serde_json::from_str(claims_json).unwrap();
        assert_eq!(serde_json::to_string(&claims).unwrap(), claims_json, "{name}: claims bytes");
        assert_eq!(jwt::sign(&inbound, &claims).unwrap(), case["token"].as_str().unwrap(), "{name}: token");
    }
}

#[test]
fn the_signer_makes_the_vector_claims_at_the_vector_clock() {
    let v = vectors();
    let tenant = v["tenant_id"].as_str().unwrap();
    for (case, ttl) in [(&v["ledger_tokens"][0], 60), (&v["ledger_tokens"][1], 300)] {
        let expected: Claims = serde_json::from_str(case["claims_json"].as_str().unwrap()).unwrap();
        // The signer backdates iat/nbf by CLOCK_SKEW_BACKDATE (5 s): at the vector's `now` + 5 s it
        // makes the vector's claims (iat = nbf = now, exp = iat + ttl).
        let later: Arc<dyn Clock> =
            Arc::new(ManualClock::new(DateTime::from_timestamp(v["now"].as_i64().unwrap() + 5, 0).unwrap()));
        assert_eq!(jwt::CLOCK_SKEW_BACKDATE, std::time::Duration::from_secs(5));
        let signer = JwtSigner::new(key(&v).derive().inbound, tenant, later)
            .unwrap()
            .with_ttl(std::time::Duration::from_secs(ttl))
            .unwrap();
        let mut claims = signer.claims();
        assert_ne!(claims.jti, expected.jti);
        claims.jti = expected.jti.clone();
        assert_eq!(claims, expected);
        assert_eq!(jwt::sign(&key(&v).derive().inbound, &claims).unwrap(), case["token"].as_str().unwrap());
        // A real token from the signer starts with the exact header.
        let token = signer.token().unwrap();
        assert!(token.expose_secret().starts_with("eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9."));
    }
}
