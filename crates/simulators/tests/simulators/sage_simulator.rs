//! The Sage provider against the simulator, end to end over HTTP.

use crate::support;

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet},
    canonical::{MagentoInvoice, MagentoPayment},
    http::{RateConfig, RetryConfig},
    identity::{ContactSubject, reference_candidates},
    plan::DocumentKind,
    providers::{
        AccountingProvider, AccountingProviderExt, ContactFor, ContactRequest, InvoiceRequest, PaymentRequest,
        sage::{SageBuilder, SageProvider},
    },
};
use byte8_ledger_simulators::{DEMO_REFRESH_TOKEN, Fault, SageSimulator, SimConfig, SimServer};
use rust_decimal_macros::dec;
use secrecy::SecretString;
use serde_json::json;
use support::policy;

async fn connect(sim: &SageSimulator) -> (SimServer, SageProvider) {
    let server = sim.serve().await.expect("serve");
    let store = Arc::new(MemoryTokenStore::new(Some(TokenSet::from_refresh_token(SecretString::from(
        DEMO_REFRESH_TOKEN.to_owned(),
    )))));
    let provider = SageBuilder::new()
        .with_client_id("demo-client")
        .with_client_secret(SecretString::from("demo-secret".to_owned()))
        .with_business_id("demo-business")
        .with_base_url(server.base_url())
        .with_token_url(server.token_url())
        .with_token_store(store)
        .with_retry(RetryConfig {
            max_retries: 3,
            initial_backoff: Duration::from_millis(5),
            max_backoff: Duration::from_secs(2),
            retry_timeout: Duration::from_secs(10),
        })
        .with_rate(RateConfig { requests_per_minute: 0, burst: 0 })
        .build()
        .expect("build");
    (server, provider)
}

fn invoice() -> MagentoInvoice {
    serde_json::from_value(json!({
        "magento_id": 1001, "increment_id": "000000123", "order_id": 77, "order_increment_id": "000000077",
        "currency": "GBP", "state": "open",
        "customer": {"magento_id": 5, "email": "jane@example.com", "first_name": "Jane", "last_name": "Doe"},
        "lines": [{"sku": "A-1", "name": "Widget", "qty": 2, "unit_price": 10.00, "line_subtotal": 20.00,
                   "line_tax": 4.00, "line_total": 24.00, "tax_rate": 0.2, "product_type": "simple"}],
        "subtotal": 20.00, "tax_amount": 5.00, "shipping_amount": 5.00, "shipping_tax_amount": 1.00,
        "discount_amount": 0, "grand_total": 30.00, "created_at": "2026-11-22T09:59:00Z",
        "billing_address": {"kind": "billing", "street": ["1 High St"], "city": "London", "postcode": "SW1A 1AA", "country_id": "GB"}
    }))
    .unwrap()
}

#[tokio::test]
async fn invoice_and_payment_round_trip_through_http() {
    let sim = SageSimulator::demo(SimConfig::default());
    let (_server, sage) = connect(&sim).await;
    let reference = sage.reference_data(false).await.unwrap();
    assert_eq!(reference.business.country, "GB");
    assert_eq!(reference.tax_rates.len(), 5);
    let p = policy(json!({"invoice_number_prefix": "MAG-", "default_bank_account_id": "BANK"}));
    let inv = invoice();
    let subject = ContactSubject::of(&inv.customer);
    let candidates = reference_candidates(&subject, inv.currency, reference.business.base_currency, "WEBSALES");
    let request = ContactRequest {
        contact: ContactFor::Customer(&inv.customer),
        currency: inv.currency,
        reference: &candidates[0],
        policy: &p,
        idempotency_key: Some("invoice.created:1001"),
    };
    let contact = sage.resolve_contact(&subject, &candidates, request).await.unwrap();
    assert!(contact.created);
    assert_eq!(contact.record.reference.as_deref(), Some("M5"));
    let items = BTreeMap::new();
    let doc = sage
        .post_invoice(&InvoiceRequest {
            invoice: &inv,
            policy: &p,
            contact_id: &contact.record.id,
            items: &items,
            idempotency_key: "invoice.created:1001",
        })
        .await
        .unwrap();
    assert_eq!(doc.total, Some(dec!(30.00)));
    assert_eq!(doc.outstanding, Some(dec!(30.00)));
    let found = sage.find_document(DocumentKind::Invoice, "MAG-000000123").await.unwrap().unwrap();
    assert_eq!(found.id, doc.id);

    let pay: MagentoPayment = serde_json::from_value(json!({"magento_id": 1001, "invoice_id": 1001,
        "invoice_increment_id": "000000123", "method": "checkmo", "currency": "GBP", "amount": 30.00,
        "captured_at": "2026-11-22T10:00:00Z"}))
    .unwrap();
    sage.post_payment(&PaymentRequest {
        payment: &pay,
        policy: &p,
        contact_id: &contact.record.id,
        invoice_id: &doc.id,
        bank_account_id: "BANK",
        invoice_base_to_order_rate: None,
        outstanding: doc.outstanding,
        idempotency_key: "invoice.paid:1001",
    })
    .await
    .unwrap();
    let after = sage.get_document(DocumentKind::Invoice, &doc.id).await.unwrap();
    assert_eq!(after.outstanding, Some(dec!(0.00)));
    // mark_as_sent=false kept the invoice unsent (Q17).
    let b = sim.business("demo-business").unwrap();
    assert!(!b.invoices[0].sent);
}

#[tokio::test]
async fn a_500_after_commit_leaves_exactly_one_invoice() {
    let sim = SageSimulator::demo(SimConfig::default());
    let (_server, sage) = connect(&sim).await;
    let p = policy(json!({}));
    let inv = invoice();
    let contact = sage
        .create_contact(&ContactRequest {
            contact: ContactFor::Customer(&inv.customer),
            currency: inv.currency,
            reference: "M5",
            policy: &p,
            idempotency_key: None,
        })
        .await
        .unwrap();
    sim.script(Some("POST /sales_invoices"), Fault::ErrorAfterCommit);
    let items = BTreeMap::new();
    let doc = sage
        .post_invoice(&InvoiceRequest {
            invoice: &inv,
            policy: &p,
            contact_id: &contact.id,
            items: &items,
            idempotency_key: "invoice.created:1001",
        })
        .await
        .unwrap();
    let b = sim.business("demo-business").unwrap();
    assert_eq!(b.invoices.len(), 1, "the lookup found the committed invoice; no second write");
    assert_eq!(b.invoices[0].id, doc.id);
    assert_eq!(sim.requests().get("POST /sales_invoices"), Some(&1));
}

// =================================================================================================
// The simulator's own rules, request by request through `SageSimulator::handle`, on a clock moved
// by hand. Each test sends what Sage refuses next to what it accepts, so a rule that stops being
// enforced (or starts refusing good requests) fails here.

mod rules {
    use std::sync::Arc;

    use byte8_ledger_core::{clock::ManualClock, providers::AccountingProvider, reference::ReferenceData};
    use byte8_ledger_simulators::{DEMO_REFRESH_TOKEN, SageSimulator, SimConfig, SimRequest, SimResponse};
    use chrono::{DateTime, TimeZone, Utc};
    use rust_decimal_macros::dec;
    use serde_json::{Value, json};

    const BUSINESS: &str = "demo-business";

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
    }

    /// The demo business on a manual clock, and a live access token.
    fn simulator(config: SimConfig) -> (SageSimulator, ManualClock, String) {
        let clock = ManualClock::new(t0());
        let sim = SageSimulator::with_clock(config, Arc::new(clock.clone()));
        sim.add_business(ReferenceData::demo_uk(t0()));
        sim.with_state(|s| s.add_refresh_token(DEMO_REFRESH_TOKEN));
        let (access, _) = refresh(&sim, DEMO_REFRESH_TOKEN).expect("the demo refresh token works");
        (sim, clock, access)
    }

    /// `POST /token` with a refresh token: (access, refresh), or the error's status.
    fn refresh(sim: &SageSimulator, token: &str) -> Result<(String, String), (u16, Value)> {
        let body =
            format!("grant_type=refresh_token&client_id=demo-client&client_secret=demo-secret&refresh_token={token}");
        let r = sim.handle(&SimRequest {
            method: "POST".into(),
            path: "/token".into(),
            query: Vec::new(),
            headers: vec![("content-type".into(), "application/x-www-form-urlencoded".into())],
            body: body.into_bytes(),
        });
        if r.status != 200 {
            return Err((r.status, r.body));
        }
        let text = |k: &str| r.body[k].as_str().unwrap().to_owned();
        Ok((text("access_token"), text("refresh_token")))
    }

    fn call(sim: &SageSimulator, token: &str, business: &str, method: &str, target: &str, body: Value) -> SimResponse {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let query = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        sim.handle(&SimRequest {
            method: method.into(),
            path: path.into(),
            query,
            headers: vec![("authorization".into(), format!("Bearer {token}")), ("x-business".into(), business.into())],
            body: if body.is_null() { Vec::new() } else { body.to_string().into_bytes() },
        })
    }

    fn post(sim: &SageSimulator, token: &str, resource: &str, body: Value) -> SimResponse {
        call(sim, token, BUSINESS, "POST", &format!("/v3.1/{resource}"), body)
    }

    fn get(sim: &SageSimulator, token: &str, target: &str) -> SimResponse {
        call(sim, token, BUSINESS, "GET", target, Value::Null)
    }

    /// A 422 whose `$source` and `$message` are these.
    #[track_caller]
    fn assert_refused(r: &SimResponse, source: &str, message: &str) {
        assert_eq!(r.status, 422, "{}", r.body);
        assert_eq!(r.body[0]["$source"], source, "{}", r.body);
        assert_eq!(r.body[0]["$message"], message, "{}", r.body);
    }

    #[track_caller]
    fn assert_created(r: &SimResponse) -> String {
        assert_eq!(r.status, 201, "{}", r.body);
        r.body["id"].as_str().unwrap().to_owned()
    }

    fn contact_body(name: &str, reference: &str) -> Value {
        json!({"contact": {"name": name, "contact_type_ids": ["CUSTOMER"], "reference": reference,
            "main_address": {"address_line_1": "1 High Street", "city": "London", "postal_code": "SW1A 1AA", "country_id": "GB"}}})
    }

    fn contact(sim: &SageSimulator, token: &str) -> String {
        assert_created(&post(sim, token, "contacts", contact_body("Jane Doe", "M5")))
    }

    /// One line of 10.00 at `rate`, with `tax` when given.
    fn line(rate: &str, tax: Option<&str>) -> Value {
        let mut l = json!({"description": "Widget", "ledger_account_id": "SALES", "quantity": 1, "unit_price": "10.00",
            "tax_rate_id": rate});
        if let Some(t) = tax {
            l["tax_amount"] = json!(t);
        }
        l
    }

    fn invoice_body(contact: &str, reference: &str, lines: Vec<Value>) -> Value {
        json!({"sales_invoice": {"contact_id": contact, "date": "2026-11-22", "reference": reference, "invoice_lines": lines}})
    }

    fn credit_note_body(contact: &str, reference: &str, lines: Vec<Value>) -> Value {
        json!({"sales_credit_note": {"contact_id": contact, "date": "2026-11-23", "reference": reference,
            "credit_note_lines": lines}})
    }

    #[test]
    fn line_tax_amount_is_required_on_non_zero_rates_and_refused_on_zero_rates() {
        let (sim, _clock, token) = simulator(SimConfig::default());
        let c = contact(&sim, &token);
        // sage-api.md 3.6 / Q5: v3.1 requires `tax_amount` for a non-zero rate…
        for rate in ["GB_STANDARD", "GB_LOWER"] {
            let r = post(&sim, &token, "sales_invoices", invoice_body(&c, "INV-1", vec![line(rate, None)]));
            assert_refused(&r, "invoice_lines[0].tax_amount", "is required for this tax rate");
        }
        // …on every line, not only the first.
        let r = post(
            &sim,
            &token,
            "sales_invoices",
            invoice_body(&c, "INV-1", vec![line("GB_STANDARD", Some("2.00")), line("GB_STANDARD", None)]),
        );
        assert_refused(&r, "invoice_lines[1].tax_amount", "is required for this tax rate");
        // A non-zero amount on a 0 % rate is refused…
        for rate in ["GB_ZERO", "GB_EXEMPT", "GB_NO_TAX"] {
            let r = post(&sim, &token, "sales_invoices", invoice_body(&c, "INV-1", vec![line(rate, Some("2.00"))]));
            assert_refused(
                &r,
                "invoice_lines[0].tax_amount",
                "You cannot record VAT Amount if using a VAT Rate with a Zero %",
            );
        }
        // The same rules on credit notes.
        let r = post(&sim, &token, "sales_credit_notes", credit_note_body(&c, "CN-1", vec![line("GB_STANDARD", None)]));
        assert_refused(&r, "credit_note_lines[0].tax_amount", "is required for this tax rate");
        let r =
            post(&sim, &token, "sales_credit_notes", credit_note_body(&c, "CN-1", vec![line("GB_ZERO", Some("0.50"))]));
        assert_refused(
            &r,
            "credit_note_lines[0].tax_amount",
            "You cannot record VAT Amount if using a VAT Rate with a Zero %",
        );
        assert!(sim.business(BUSINESS).unwrap().invoices.is_empty(), "nothing refused was written");
        assert!(sim.business(BUSINESS).unwrap().credit_notes.is_empty());

        // Accepted: 10.00 + 2.00 at 20 %; 10.00 + 0.50 at 5 %; the three 0 % rates with the tax
        // left out (0 is inferred) or sent as 0. Each total is the net plus the tax sent.
        let accepted = [
            (line("GB_STANDARD", Some("2.00")), "12.00"),
            (line("GB_LOWER", Some("0.50")), "10.50"),
            (line("GB_ZERO", None), "10.00"),
            (line("GB_ZERO", Some("0.00")), "10.00"),
            (line("GB_EXEMPT", None), "10.00"),
            (line("GB_NO_TAX", None), "10.00"),
        ];
        for (n, (l, total)) in accepted.into_iter().enumerate() {
            let r = post(&sim, &token, "sales_invoices", invoice_body(&c, &format!("INV-{n}"), vec![l]));
            assert_created(&r);
            assert_eq!(r.body["total_amount"], total, "{}", r.body);
        }
        let r = post(
            &sim,
            &token,
            "sales_credit_notes",
            credit_note_body(&c, "CN-1", vec![line("GB_STANDARD", Some("2.00"))]),
        );
        assert_created(&r);
        assert_eq!(sim.business(BUSINESS).unwrap().invoices.len(), 6);
        assert_eq!(sim.business(BUSINESS).unwrap().credit_notes.len(), 1);
    }

    #[test]
    fn references_longer_than_sages_limits_are_refused() {
        let (sim, _clock, token) = simulator(SimConfig::default());
        // Contacts: `reference` ≤ 10 characters (sage-api.md 3.5), counted in characters.
        let r = post(&sim, &token, "contacts", contact_body("Eleven", "ABCDEFGHIJK"));
        assert_refused(&r, "contact.reference", "is too long (maximum is 10 characters)");
        assert_created(&post(&sim, &token, "contacts", contact_body("Ten", "ABCDEFGHIJ")));
        assert_created(&post(&sim, &token, "contacts", contact_body("Accents", "ÉÉÉÉÉÉÉÉÉÉ")));
        // Unique, too.
        let r = post(&sim, &token, "contacts", contact_body("Again", "ABCDEFGHIJ"));
        assert_refused(&r, "reference", "Reference has already been taken");
        assert_eq!(sim.business(BUSINESS).unwrap().contacts.len(), 2);

        let c = contact(&sim, &token);
        let (r25, r26) = ("R".repeat(25), "R".repeat(26));
        // Sales invoices and credit notes: `reference` ≤ 25.
        let l = || vec![line("GB_STANDARD", Some("2.00"))];
        let r = post(&sim, &token, "sales_invoices", invoice_body(&c, &r26, l()));
        assert_refused(&r, "sales_invoice.reference", "is too long (maximum is 25 characters)");
        let invoice = assert_created(&post(&sim, &token, "sales_invoices", invoice_body(&c, &r25, l())));
        let r = post(&sim, &token, "sales_credit_notes", credit_note_body(&c, &r26, l()));
        assert_refused(&r, "sales_credit_note.reference", "is too long (maximum is 25 characters)");
        assert_created(&post(&sim, &token, "sales_credit_notes", credit_note_body(&c, &r25, l())));
        // Customer receipts: `reference` ≤ 25.
        let payment = |reference: &str| {
            json!({"contact_payment": {"transaction_type_id": "CUSTOMER_RECEIPT", "contact_id": c, "bank_account_id": "BANK",
                "date": "2026-11-22", "total_amount": "5.00", "reference": reference,
                "allocated_artefacts": [{"artefact_id": invoice, "amount": "5.00"}]}})
        };
        let r = post(&sim, &token, "contact_payments", payment(&r26));
        assert_refused(&r, "contact_payment.reference", "is too long (maximum is 25 characters)");
        assert_created(&post(&sim, &token, "contact_payments", payment(&r25)));
        let b = sim.business(BUSINESS).unwrap();
        assert_eq!((b.invoices.len(), b.credit_notes.len(), b.payments.len()), (1, 1, 1));
        assert_eq!(b.invoices[0].outstanding, dec!(7.00), "only the accepted receipt was applied");
    }

    #[test]
    fn lists_page_with_next_until_the_last_page() {
        let (sim, _clock, token) = simulator(SimConfig::default());
        for n in 0..45 {
            assert_created(&post(&sim, &token, "contacts", contact_body(&format!("Customer {n}"), &format!("C{n}"))));
        }
        // 45 contacts at 20 a page: 20, 20, 5, each page's `$next` naming the following page.
        let first = get(&sim, &token, "/v3.1/contacts?items_per_page=20");
        assert_eq!(first.status, 200);
        assert_eq!((first.body["$total"].as_u64(), first.body["$page"].as_u64()), (Some(45), Some(1)));
        // Relative to the API root, without the version prefix, as real Sage answers.
        assert_eq!(first.body["$next"], "/contacts?items_per_page=20&page=2");
        assert!(first.body["$back"].is_null());
        let mut sizes = Vec::new();
        let mut names = std::collections::BTreeSet::new();
        let mut page = first;
        loop {
            let items = page.body["$items"].as_array().unwrap().clone();
            sizes.push(items.len());
            names.extend(items.iter().map(|c| c["name"].as_str().unwrap().to_owned()));
            match page.body["$next"].as_str() {
                Some(next) => page = get(&sim, &token, next),
                None => break,
            }
            assert!(sizes.len() < 10, "pagination does not end");
        }
        assert_eq!(sizes, [20, 20, 5]);
        assert_eq!(names.len(), 45, "every contact once");
        // The filter travels with `$next`: 11 names contain "customer 1" (1, 10–19).
        let search = get(&sim, &token, "/v3.1/contacts?search=Customer%201&items_per_page=10");
        assert_eq!(search.body["$total"], 11);
        assert_eq!(search.body["$next"], "/contacts?search=Customer+1&items_per_page=10&page=2");
        let second = get(&sim, &token, search.body["$next"].as_str().unwrap());
        assert_eq!(second.body["$items"].as_array().unwrap().len(), 1);
        assert!(second.body["$next"].is_null());
        assert_eq!(second.body["$back"], "/contacts?search=Customer+1&items_per_page=10&page=1");
        // A page past the end answers the last page again, not an empty one (Sage's guide).
        let past = get(&sim, &token, "/v3.1/contacts?search=Customer%201&items_per_page=10&page=7");
        assert_eq!(past.body["$page"], 2);
        assert_eq!(past.body["$items"], second.body["$items"]);
        // `items_per_page` is at most 200 (and 20 by default).
        // Over HTTP (a `Host` header) too, `$next` is relative: the host never comes from a header.
        let mut over_http = SimRequest {
            method: "GET".into(),
            path: "/v3.1/contacts".into(),
            query: vec![("items_per_page".into(), "20".into())],
            headers: vec![
                ("authorization".into(), format!("Bearer {token}")),
                ("x-business".into(), BUSINESS.into()),
                ("host".into(), "127.0.0.1:8080".into()),
            ],
            body: Vec::new(),
        };
        assert_eq!(sim.handle(&over_http).body["$next"], "/contacts?items_per_page=20&page=2");
        over_http.query.push(("page".into(), "3".into()));
        assert!(sim.handle(&over_http).body["$next"].is_null(), "the last page");
        let wide = get(&sim, &token, "/v3.1/contacts?items_per_page=500");
        assert_eq!(wide.body["$itemsPerPage"], 200);
        let default = get(&sim, &token, "/v3.1/contacts");
        assert_eq!(
            (default.body["$itemsPerPage"].as_u64(), default.body["$items"].as_array().map(Vec::len)),
            (Some(20), Some(20))
        );
    }

    #[tokio::test]
    async fn the_provider_follows_next_over_http_to_a_contact_on_the_second_page() {
        let sim = SageSimulator::demo(SimConfig::default());
        sim.with_state(|s| s.add_refresh_token("setup"));
        let (setup, _) = refresh(&sim, "setup").unwrap();
        // 205 contacts "Alpha n" (A0…A204), then "Alpha" (A): a search for "A" matches all 206,
        // and at 200 a page the last one is on page 2.
        for n in 0..205 {
            assert_created(&post(&sim, &setup, "contacts", contact_body(&format!("Alpha {n}"), &format!("A{n}"))));
        }
        let last = assert_created(&post(&sim, &setup, "contacts", contact_body("Alpha", "A")));
        let (_server, sage) = super::connect(&sim).await;
        let found = sage.find_contact("A").await.unwrap().expect("found on page 2");
        assert_eq!(found.id, last);
        assert_eq!(sim.requests().get("GET /contacts"), Some(&2), "two pages read");
    }

    #[test]
    fn the_rate_limit_is_a_sliding_minute_per_business_answered_429_with_retry_after() {
        let (sim, clock, token) = simulator(SimConfig { requests_per_minute: Some(3), ..SimConfig::default() });
        let mut other = ReferenceData::demo_uk(t0());
        other.business.id = "other-business".into();
        sim.add_business(other);
        let at = |secs: i64| clock.set(t0() + chrono::Duration::seconds(secs));
        let tax_rates = |business: &str| call(&sim, &token, business, "GET", "/v3.1/tax_rates", Value::Null);
        // Three requests in the first 20 seconds fill the minute.
        for secs in [0, 10, 20] {
            at(secs);
            assert_eq!(tax_rates(BUSINESS).status, 200, "request at {secs} s");
        }
        // The fourth, at 30 s, waits until the first leaves the window: 60 − 30 = 30 s.
        at(30);
        let r = tax_rates(BUSINESS);
        assert_eq!(r.status, 429);
        assert_eq!(r.body[0]["$dataCode"], "TooManyRequests");
        assert_eq!(r.headers, [("retry-after".to_owned(), "30".to_owned())]);
        // Another business has its own window.
        assert_eq!(tax_rates("other-business").status, 200);
        // A refused request takes no place in the window: at 59 s, one second is left.
        at(59);
        let r = tax_rates(BUSINESS);
        assert_eq!((r.status, r.headers[0].1.as_str()), (429, "1"));
        // At 60 s the first request has left: one more fits; then the window holds 10, 20, 60
        // and at 61 s the next waits for the request made at 10 s: 60 − (61 − 10) = 9 s.
        at(60);
        assert_eq!(tax_rates(BUSINESS).status, 200);
        at(61);
        let r = tax_rates(BUSINESS);
        assert_eq!((r.status, r.headers[0].1.as_str()), (429, "9"));
        assert_eq!(sim.with_state(|s| s.throttled), 3);
    }

    #[test]
    fn an_expired_access_token_is_refused_with_401_until_refreshed() {
        let (sim, clock, token) = simulator(SimConfig::default());
        // Five-minute tokens: alive until the last second, refused at the expiry itself.
        clock.set(t0() + chrono::Duration::seconds(299));
        assert_eq!(get(&sim, &token, "/v3.1/tax_rates").status, 200);
        clock.set(t0() + chrono::Duration::seconds(300));
        let r = get(&sim, &token, "/v3.1/tax_rates");
        assert_eq!(r.status, 401);
        assert_eq!(r.body[0]["$dataCode"], "AuthorizationFailure");
        assert_eq!(r.body[0]["$message"], "Access denied. Token invalid or expired.");
        // A token the simulator never issued is refused the same way.
        assert_eq!(get(&sim, "not-a-token", "/v3.1/tax_rates").status, 401);
        // Refresh tokens rotate: the demo one was spent by `simulator`.
        assert_eq!(refresh(&sim, DEMO_REFRESH_TOKEN).unwrap_err(), (400, json!({"error": "invalid_grant"})));
        sim.with_state(|s| s.add_refresh_token("second"));
        let (access, next) = refresh(&sim, "second").unwrap();
        assert_eq!(get(&sim, &access, "/v3.1/tax_rates").status, 200, "a refreshed token works");
        assert_eq!(refresh(&sim, "second").unwrap_err().0, 400, "a refresh token works once");
        assert!(refresh(&sim, &next).is_ok(), "its successor works");
        assert_eq!(sim.with_state(|s| s.refreshes), 3, "the demo token, `second` and its successor");
    }

    // ---------------------------------------------------------------------------------------------
    // Sage as it really answers (tests/fixtures/sage-real/): the simulator answers the same way and
    // the provider copes, over HTTP.

    /// The demo simulator with `config`, a setup token for raw requests, and the provider.
    async fn connected(
        config: SimConfig,
    ) -> (SageSimulator, String, byte8_ledger_simulators::SimServer, byte8_ledger_core::providers::sage::SageProvider)
    {
        let sim = SageSimulator::demo(config);
        sim.with_state(|s| s.add_refresh_token("setup"));
        let (setup, _) = refresh(&sim, "setup").unwrap();
        let (server, sage) = super::connect(&sim).await;
        (sim, setup, server, sage)
    }

    #[tokio::test]
    async fn a_too_big_full_list_is_read_in_small_pages_then_item_by_item() {
        // At most 25 full objects a page: 30 contacts fail the page of 200, not pages of 20.
        let (sim, setup, _server, sage) =
            connected(SimConfig { full_list_limit: Some(25), ..SimConfig::default() }).await;
        for n in 0..29 {
            assert_created(&post(&sim, &setup, "contacts", contact_body(&format!("Beta {n}"), &format!("B{n}"))));
        }
        let last = assert_created(&post(&sim, &setup, "contacts", contact_body("Beta", "B")));
        let found = sage.find_contact("B").await.unwrap().expect("found on the second small page");
        assert_eq!(found.id, last);
        // 200: 1 try + 3 retries, all 504; then 2 pages of 20.
        assert_eq!(sim.requests().get("GET /contacts"), Some(&6));
        assert_eq!(sim.with_state(|s| s.errors_before_acting), 4);

        // At most 5: pages of 20 fail too; the ids alone, then each contact by id.
        let (sim, setup, _server, sage) =
            connected(SimConfig { full_list_limit: Some(5), ..SimConfig::default() }).await;
        for n in 0..8 {
            assert_created(&post(&sim, &setup, "contacts", contact_body(&format!("Beta {n}"), &format!("B{n}"))));
        }
        let last = assert_created(&post(&sim, &setup, "contacts", contact_body("Beta", "B")));
        assert_eq!(sage.find_contact("B").await.unwrap().map(|c| c.id), Some(last));
        // 4 × 200, 4 × 20, 1 list of ids, 9 contacts by id.
        assert_eq!(sim.requests().get("GET /contacts"), Some(&18));

        // At most 1: even the reference lists are read item by item, and read whole.
        let (sim, _setup, _server, sage) =
            connected(SimConfig { full_list_limit: Some(1), ..SimConfig::default() }).await;
        let r = sage.reference_data(false).await.unwrap();
        let demo = ReferenceData::demo_uk(r.fetched_at);
        let ids = |v: Vec<&str>| v.into_iter().map(str::to_owned).collect::<Vec<_>>();
        assert_eq!(
            ids(r.tax_rates.iter().map(|t| t.id.as_str()).collect()),
            ids(demo.tax_rates.iter().map(|t| t.id.as_str()).collect())
        );
        assert_eq!(r.bank_accounts, demo.bank_accounts);
        assert_eq!(r.currencies, demo.currencies);
        // 4 × 200, 4 × 20, 1 list of ids, then each rate by id.
        let rates = u64::try_from(demo.tax_rates.len()).unwrap();
        assert_eq!(sim.requests().get("GET /tax_rates"), Some(&(9 + rates)));
    }

    #[tokio::test]
    async fn scripted_sage_errors_are_reported_as_what_they_are() {
        use byte8_ledger_core::{
            error::{AuthFailure, Error},
            plan::DocumentKind,
            providers::ItemKind,
        };
        use byte8_ledger_simulators::Fault;
        let (sim, _setup, _server, sage) = connected(SimConfig::default()).await;
        sage.reference_data(false).await.unwrap();
        // 401 "No active subscription" on one endpoint while the rest answers: the edition.
        sim.script(Some("GET /stock_items"), Fault::NoSubscription);
        let e = sage.get_item(ItemKind::StockItem, "anything").await.unwrap_err();
        let Error::Auth { reason, message, .. } = &e else { panic!("{e:?}") };
        assert_eq!(*reason, AuthFailure::SubscriptionInactive);
        assert!(message.contains("outside the business's Sage edition"), "{message}");
        // 403 MultiUserAccessDenied: the user's role.
        sim.script(Some("GET /contacts"), Fault::AccessDenied);
        let e = sage.find_contact("M5").await.unwrap_err();
        assert!(matches!(e, Error::Auth { reason: AuthFailure::AccessDenied, .. }), "{e:?}");
        assert!(e.to_string().contains("role does not allow it"), "{e}");
        // 525: retried like a 503.
        sim.script(Some("GET /sales_invoices"), Fault::ErrorBefore(525));
        assert_eq!(sage.find_document(DocumentKind::Invoice, "INV-1").await.unwrap(), None);
        assert_eq!(sim.requests().get("GET /sales_invoices"), Some(&2));
        assert_eq!(sage.stats().retries(), 1);
    }

    #[tokio::test]
    async fn inactive_records_are_served_as_sage_does_and_never_adopted() {
        use byte8_ledger_core::providers::ItemKind;
        let (sim, setup, _server, sage) = connected(SimConfig::default()).await;
        // A contact made inactive keeps its reference but is not adopted.
        let c = assert_created(&post(&sim, &setup, "contacts", contact_body("Gamma", "G1")));
        assert_eq!(sage.find_contact("G1").await.unwrap().map(|r| r.id), Some(c.clone()));
        assert!(sim.with_state(|s| s.businesses.get_mut(BUSINESS).unwrap().set_contact_active(&c, false)));
        assert_eq!(get(&sim, &setup, &format!("/v3.1/contacts/{c}")).body["is_active"], false);
        assert_eq!(sage.find_contact("G1").await.unwrap(), None);
        // Products: `active` true is adopted; false or null is not.
        let product = json!({"product": {"item_code": "P1", "description": "Widget", "sales_ledger_account_id": "SALES",
            "purchase_ledger_account_id": "COS"}});
        let p = assert_created(&post(&sim, &setup, "products", product));
        assert_eq!(get(&sim, &setup, &format!("/v3.1/products/{p}")).body["active"], true);
        assert_eq!(sage.find_item(ItemKind::Product, "P1").await.unwrap().map(|r| r.id), Some(p.clone()));
        for state in [Some(false), None] {
            assert!(sim.with_state(|s| s.businesses.get_mut(BUSINESS).unwrap().set_item_active(&p, state)));
            let e = sage.find_item(ItemKind::Product, "P1").await.unwrap_err();
            assert!(e.to_string().contains("is inactive"), "{state:?}: {e}");
        }
        // Bank accounts: `is_active: false` is served, refused by the policy and by the simulator.
        sim.with_state(|s| s.businesses.get_mut(BUSINESS).unwrap().reference.bank_accounts[0].active = false);
        let r = sage.reference_data(true).await.unwrap();
        let bank = r.bank_accounts[0].clone();
        assert!(!bank.active);
        let mut policy = crate::support::policy(json!({"default_bank_account_id": bank.id}));
        assert!(policy.validate_against(&r).unwrap_err().to_string().contains("inactive bank account"));
        policy.default_bank_account_id = None;
        let raw = json!({"contact_payment": {"transaction_type_id": "CUSTOMER_RECEIPT", "contact_id": c,
            "bank_account_id": bank.id, "date": "2026-11-22", "total_amount": "5.00", "allocated_artefacts": []}});
        assert_refused(
            &post(&sim, &setup, "contact_payments", raw),
            "contact_payment.bank_account_id",
            "The bank account is inactive",
        );
    }

    #[tokio::test]
    async fn injected_errors_carry_sages_real_bodies() {
        use byte8_ledger_simulators::Fault;
        let (sim, setup, _server, _sage) = connected(SimConfig::default()).await;
        let real = |name: &str| -> Value {
            let path = format!("{}/tests/fixtures/sage-real/{name}", concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
            serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
        };
        for (fault, status, fixture) in [
            (Fault::ErrorBefore(500), 500, "sage_docs_error_500_UnexpectedError.json"),
            (Fault::AccessDenied, 403, "sage_docs_error_403_MultiUserAccessDenied.json"),
            (Fault::NoSubscription, 401, "sage_docs_error_401_no_subscription.json"),
        ] {
            sim.script(Some("GET /tax_rates"), fault);
            let r = get(&sim, &setup, "/v3.1/tax_rates");
            assert_eq!((r.status, &r.body), (status, &real(fixture)), "{fault:?}");
            assert_eq!(get(&sim, &setup, "/v3.1/tax_rates").status, 200, "{fault:?} answers one request only");
        }
    }

    /// Issue 18: the simulator stores a contact's `tax_number` on creation and update and returns
    /// it on reads; a number Sage's format check would refuse (separators, symbols) is a 422 on
    /// `contact.tax_number`, on creation and on update.
    #[test]
    fn contacts_keep_their_tax_number_and_refuse_a_malformed_one() {
        let (sim, _clock, token) = simulator(SimConfig::default());
        let mut body = contact_body("Moreau SARL", "M40");
        body["contact"]["tax_number"] = json!("FR12345678901");
        let id = assert_created(&post(&sim, &token, "contacts", body));
        assert_eq!(get(&sim, &token, &format!("/v3.1/contacts/{id}")).body["tax_number"], json!("FR12345678901"));

        let put = |tax: &str| {
            call(
                &sim,
                &token,
                BUSINESS,
                "PUT",
                &format!("/v3.1/contacts/{id}"),
                json!({"contact": {"tax_number": tax}}),
            )
        };
        assert_eq!(put("FR98765432109").status, 200);
        assert_eq!(get(&sim, &token, &format!("/v3.1/contacts/{id}")).body["tax_number"], json!("FR98765432109"));
        assert_refused(&put("FR 987-654"), "contact.tax_number", "is not a valid VAT number");
        assert_eq!(get(&sim, &token, &format!("/v3.1/contacts/{id}")).body["tax_number"], json!("FR98765432109"));

        let mut bad = contact_body("Other SARL", "M41");
        bad["contact"]["tax_number"] = json!("n/a");
        assert_refused(&post(&sim, &token, "contacts", bad), "contact.tax_number", "is not a valid VAT number");
    }
}
