//! The Xero simulator's own rules, request by request through `XeroSimulator::handle` (and
//! `begin`, which keeps a call in flight) on a clock moved by hand: the per-minute and concurrency
//! limits answered 429 with `X-Rate-Limit-Problem` and `Retry-After` (xero-api.md 3), and the
//! `Idempotency-Key` rules (xero-api.md 4.1): the same key and body replay the first answer
//! without a second write, another body under the same key is refused, the key lasts six minutes
//! and at most 128 characters. A regression that lets a request through that Xero would refuse,
//! or refuses one Xero would take, fails here.

use std::sync::Arc;

use byte8_ledger_core::clock::ManualClock;
use byte8_ledger_simulators::{
    SimRequest, SimResponse,
    xero::{XERO_DEMO_REFRESH_TOKEN, XERO_DEMO_TENANT, XeroOrg, XeroSimConfig, XeroSimulator},
};
use chrono::{DateTime, TimeZone, Utc};
use serde_json::{Value, json};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
}

/// The demo organisation on a manual clock, and a live access token.
fn simulator(config: XeroSimConfig) -> (XeroSimulator, ManualClock, String) {
    let clock = ManualClock::new(t0());
    let sim = XeroSimulator::demo_on(config, Arc::new(clock.clone()));
    let r = sim.handle(&token_request(XERO_DEMO_REFRESH_TOKEN));
    assert_eq!(r.status, 200, "{}", r.body);
    let access = r.body["access_token"].as_str().unwrap().to_owned();
    (sim, clock, access)
}

fn token_request(refresh: &str) -> SimRequest {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("demo-client:demo-secret");
    SimRequest {
        method: "POST".into(),
        path: "/connect/token".into(),
        query: Vec::new(),
        headers: vec![("authorization".into(), format!("Basic {basic}"))],
        body: format!("grant_type=refresh_token&refresh_token={refresh}").into_bytes(),
    }
}

fn request(token: &str, tenant: &str, method: &str, resource: &str, key: Option<&str>, body: &Value) -> SimRequest {
    let mut headers =
        vec![("authorization".into(), format!("Bearer {token}")), ("xero-tenant-id".into(), tenant.into())];
    if let Some(k) = key {
        headers.push(("idempotency-key".into(), k.into()));
    }
    SimRequest {
        method: method.into(),
        path: format!("/api.xro/2.0/{resource}"),
        query: Vec::new(),
        headers,
        body: if body.is_null() { Vec::new() } else { body.to_string().into_bytes() },
    }
}

fn organisation(token: &str) -> SimRequest {
    request(token, XERO_DEMO_TENANT, "GET", "Organisation", None, &Value::Null)
}

fn header<'a>(r: &'a SimResponse, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A 429 naming `problem`, asking to wait `retry_after` seconds.
#[track_caller]
fn assert_limited(r: &SimResponse, problem: &str, retry_after: &str) {
    assert_eq!(r.status, 429, "{}", r.body);
    assert_eq!(header(r, "x-rate-limit-problem"), Some(problem), "{:?}", r.headers);
    assert_eq!(header(r, "retry-after"), Some(retry_after), "{:?}", r.headers);
}

// ---------------------------------------------------------------------------------------------
// Limits

#[test]
fn the_per_minute_limit_is_a_rolling_minute_answered_429_minute_with_retry_after() {
    let config = XeroSimConfig { per_minute: Some(3), concurrent: None, per_day: None, ..XeroSimConfig::default() };
    let (sim, clock, token) = simulator(config);
    let at = |secs: i64| clock.set(t0() + chrono::Duration::seconds(secs));
    // Three calls fill the minute; each answer says how many are left (2, 1, 0).
    for (secs, left) in [(0, "2"), (10, "1"), (20, "0")] {
        at(secs);
        let r = sim.handle(&organisation(&token));
        assert_eq!(r.status, 200, "call at {secs} s");
        assert_eq!(header(&r, "x-minlimit-remaining"), Some(left));
    }
    // The fourth, at 30 s, waits until the first leaves the minute: 60 − 30 = 30 s. The 429
    // carries the remaining counts too.
    at(30);
    let r = sim.handle(&organisation(&token));
    assert_limited(&r, "minute", "30");
    assert_eq!(r.body["Title"], "Too Many Requests");
    assert_eq!(header(&r, "x-minlimit-remaining"), Some("0"));
    // The token endpoint does not count against the organisation's limits.
    assert_eq!(sim.handle(&token_request(XERO_DEMO_REFRESH_TOKEN)).status, 200, "within the grace period");
    // A refused call takes no place in the minute: at 59 s one second is left.
    at(59);
    assert_limited(&sim.handle(&organisation(&token)), "minute", "1");
    // At 60 s the first call has left; the minute then holds 10, 20 and 60, and at 61 s the
    // next waits for the call made at 10 s: 60 − (61 − 10) = 9 s.
    at(60);
    assert_eq!(sim.handle(&organisation(&token)).status, 200);
    at(61);
    assert_limited(&sim.handle(&organisation(&token)), "minute", "9");
    assert_eq!(sim.with_state(|s| s.throttled.clone()), [("minute".to_owned(), 3)].into());
}

#[test]
fn at_most_five_calls_are_in_flight_per_organisation_and_refused_ones_do_not_count() {
    let config = XeroSimConfig { per_minute: None, per_day: None, ..XeroSimConfig::default() };
    assert_eq!(config.concurrent, Some(5), "Xero's limit");
    let (sim, _clock, token) = simulator(config);
    let mut other = XeroOrg::demo();
    other.tenant_id = "0b5e2c1d-7a8f-4e3b-9c6d-1e2f3a4b5c6d".into();
    sim.add_org(other);
    // Five calls held in flight.
    let mut held: Vec<_> = (0..5)
        .map(|_| {
            let (r, in_flight) = sim.begin(&organisation(&token));
            assert_eq!(r.status, 200);
            in_flight.expect("admitted")
        })
        .collect();
    // The sixth is refused and is not held.
    let (r, in_flight) = sim.begin(&organisation(&token));
    assert_limited(&r, "concurrent", "1");
    assert!(in_flight.is_none(), "a refused call is not in flight");
    // Refused again: the refusal did not take a place.
    assert_limited(&sim.handle(&organisation(&token)), "concurrent", "1");
    // Another organisation has its own five; the identity endpoint is not limited.
    let elsewhere = request(&token, "0b5e2c1d-7a8f-4e3b-9c6d-1e2f3a4b5c6d", "GET", "Organisation", None, &Value::Null);
    assert_eq!(sim.handle(&elsewhere).status, 200);
    assert_eq!(sim.handle(&token_request(XERO_DEMO_REFRESH_TOKEN)).status, 200);
    // One call answered: exactly one place frees up.
    drop(held.pop());
    let (r, in_flight) = sim.begin(&organisation(&token));
    assert_eq!(r.status, 200);
    held.push(in_flight.expect("admitted"));
    assert_limited(&sim.handle(&organisation(&token)), "concurrent", "1");
    // All answered: calls go through again (`handle` releases its own at once).
    held.clear();
    for _ in 0..7 {
        assert_eq!(sim.handle(&organisation(&token)).status, 200);
    }
    assert_eq!(sim.with_state(|s| s.throttled.clone()), [("concurrent".to_owned(), 3)].into());
}

#[tokio::test]
async fn over_http_the_concurrency_429_carries_its_headers_and_an_answered_call_leaves_the_count() {
    let config = XeroSimConfig { per_minute: None, per_day: None, ..XeroSimConfig::default() };
    let sim = XeroSimulator::demo(config);
    let r = sim.handle(&token_request(XERO_DEMO_REFRESH_TOKEN));
    let token = r.body["access_token"].as_str().unwrap().to_owned();
    let server = sim.serve().await.unwrap();
    let http = reqwest::Client::new();
    let call = || {
        http.get(format!("{}/Organisation", server.base_url()))
            .bearer_auth(&token)
            .header("xero-tenant-id", XERO_DEMO_TENANT)
            .send()
    };
    let held: Vec<_> = (0..5).map(|_| sim.begin(&organisation(&token)).1.expect("admitted")).collect();
    let refused = call().await.unwrap();
    assert_eq!(refused.status().as_u16(), 429);
    assert_eq!(refused.headers()["x-rate-limit-problem"], "concurrent");
    assert_eq!(refused.headers()["retry-after"], "1");
    drop(held);
    assert_eq!(call().await.unwrap().status().as_u16(), 200);
    // The server released the answered call: five can be held again.
    let held: Vec<_> = (0..5).map(|_| sim.begin(&organisation(&token)).1).collect();
    assert!(held.iter().all(Option::is_some), "the call served over HTTP is still counted in flight");
    server.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Idempotency-Key

fn contacts(name: &str, number: &str) -> Value {
    json!({"Contacts": [{"Name": name, "ContactNumber": number}]})
}

fn put_contacts(token: &str, key: Option<&str>, body: &Value) -> SimRequest {
    request(token, XERO_DEMO_TENANT, "PUT", "Contacts", key, body)
}

#[test]
fn the_same_key_and_body_replay_the_first_answer_without_a_second_write() {
    let (sim, clock, token) = simulator(XeroSimConfig::unlimited());
    let jane = contacts("Jane Doe", "M5");
    let first = sim.handle(&put_contacts(&token, Some("key-1"), &jane));
    assert_eq!(first.status, 200, "{}", first.body);
    let id = first.body["Contacts"][0]["ContactID"].as_str().unwrap().to_owned();
    // Sent again, five minutes later: the first answer, and still one contact.
    clock.set(t0() + chrono::Duration::minutes(5));
    let again = sim.handle(&put_contacts(&token, Some("key-1"), &jane));
    assert_eq!((again.status, &again.body), (200, &first.body));
    assert_eq!(sim.org(XERO_DEMO_TENANT).unwrap().contacts.len(), 1);
    assert_eq!(sim.with_state(|s| s.replays), 1);
    // Without the key, the same body is a second write, which Xero refuses on the number.
    let unkeyed = sim.handle(&put_contacts(&token, None, &jane));
    assert_eq!(unkeyed.status, 400, "{}", unkeyed.body);
    assert_eq!(
        unkeyed.body["Elements"][0]["ValidationErrors"][0]["Message"],
        "Another contact has this contact number"
    );
    // The key lives six minutes (from the first answer): after that the same request is new.
    clock.set(t0() + chrono::Duration::seconds(361));
    let late = sim.handle(&put_contacts(&token, Some("key-1"), &jane));
    assert_eq!(late.status, 400, "no longer a replay: {}", late.body);
    assert_eq!(sim.with_state(|s| s.replays), 1);
    assert_eq!(sim.org(XERO_DEMO_TENANT).unwrap().contacts[0].id, id);
}

#[test]
fn errors_are_replayed_too_and_another_body_under_the_same_key_is_refused() {
    let (sim, _clock, token) = simulator(XeroSimConfig::unlimited());
    // An error answer is cached like any other: replayed even once the request would succeed.
    let nameless = contacts("", "M6");
    let refused = sim.handle(&put_contacts(&token, Some("key-2"), &nameless));
    assert_eq!(refused.status, 400);
    assert_eq!(refused.body["Elements"][0]["ValidationErrors"][0]["Message"], "The contact name must be provided");
    let replayed = sim.handle(&put_contacts(&token, Some("key-2"), &nameless));
    assert_eq!((replayed.status, &replayed.body), (400, &refused.body));
    assert_eq!(sim.with_state(|s| s.replays), 1);
    // The same key with another body: 400, and nothing written.
    let fixed = contacts("John Doe", "M6");
    let r = sim.handle(&put_contacts(&token, Some("key-2"), &fixed));
    assert_eq!(r.status, 400, "{}", r.body);
    assert_eq!(
        r.body["Elements"][0]["ValidationErrors"][0]["Message"],
        "The Idempotency-Key was used with a different request"
    );
    assert!(sim.org(XERO_DEMO_TENANT).unwrap().contacts.is_empty());
    // Under a key of its own it is written.
    assert_eq!(sim.handle(&put_contacts(&token, Some("key-3"), &fixed)).status, 200);
    // A key of 129 characters is refused and nothing is written; 128 is fine.
    let r = sim.handle(&put_contacts(&token, Some(&"k".repeat(129)), &contacts("Kim Doe", "M7")));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.body["Elements"][0]["ValidationErrors"][0]["Message"],
        "Idempotency-Key must be 128 characters or fewer"
    );
    assert_eq!(sim.org(XERO_DEMO_TENANT).unwrap().contacts.len(), 1);
    assert_eq!(sim.handle(&put_contacts(&token, Some(&"k".repeat(128)), &contacts("Kim Doe", "M7"))).status, 200);
    assert_eq!(sim.org(XERO_DEMO_TENANT).unwrap().contacts.len(), 2);
}

/// Issue 18: the simulator stores a contact's `TaxNumber` on creation and update and returns it
/// on reads; one longer than Xero's 50 characters is refused.
#[test]
fn contacts_keep_their_tax_number() {
    let (sim, _clock, token) = simulator(XeroSimConfig::unlimited());
    let body = json!({"Contacts": [{"Name": "Moreau SARL", "ContactNumber": "M40", "TaxNumber": "FR12345678901"}]});
    let created = sim.handle(&put_contacts(&token, None, &body));
    assert_eq!(created.status, 200, "{}", created.body);
    assert_eq!(created.body["Contacts"][0]["TaxNumber"], "FR12345678901");
    let id = created.body["Contacts"][0]["ContactID"].as_str().unwrap().to_owned();
    let read = |sim: &XeroSimulator| {
        sim.handle(&request(&token, XERO_DEMO_TENANT, "GET", &format!("Contacts/{id}"), None, &Value::Null))
    };
    assert_eq!(read(&sim).body["Contacts"][0]["TaxNumber"], "FR12345678901");
    let update = json!({"Contacts": [{"ContactID": id, "TaxNumber": "FR98765432109"}]});
    let r = sim.handle(&request(&token, XERO_DEMO_TENANT, "POST", &format!("Contacts/{id}"), None, &update));
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(read(&sim).body["Contacts"][0]["TaxNumber"], "FR98765432109");

    let long = json!({"Contacts": [{"Name": "Other SARL", "ContactNumber": "M41", "TaxNumber": "FR".repeat(26)}]});
    let refused = sim.handle(&put_contacts(&token, None, &long));
    assert_eq!(refused.status, 400, "{}", refused.body);
    assert_eq!(
        refused.body["Elements"][0]["ValidationErrors"][0]["Message"],
        "TaxNumber must not be more than 50 characters long"
    );
}
