//! The Xero provider over HTTP, against a `wiremock` server shaped like Xero: every endpoint the
//! provider calls, with its method, path, query, headers (`Authorization`, `xero-tenant-id`,
//! `Idempotency-Key`) and body — and **every request checked against Xero's own OpenAPI spec**
//! (`tests/support/xero_spec.rs`) when each test ends — plus the behaviour around them: batches
//! with per-element results, recovery of a batch whose answer was lost, the three rate limits and
//! their 429s, OAuth custody (Basic client auth, rotation, single flight, `invalid_grant`, tenant
//! selection), and secrets that never show.
//!
//! Answers are shaped like Xero's (xero-api.md): PascalCase, plural envelopes, money as numbers,
//! MS-JSON dates. Call counts are asserted with `.expect(n)` (verified when each server drops).
#![cfg(feature = "xero")]

use crate::support_xero_spec as xero_spec;

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet, TokenStore},
    canonical::{MagentoContact, MagentoCreditMemo, MagentoInvoice, MagentoPayment, MagentoProduct},
    clock::ManualClock,
    error::{AuthFailure, Error, ErrorCode},
    http::RetryConfig,
    plan::DocumentKind,
    policy::SyncPolicy,
    providers::{
        AccountingProvider, AllocationRequest, ContactFor, ContactRequest, CreditNoteRequest, InvoiceRequest, ItemKind,
        ItemLink, ItemRequest, PaymentRequest, RefundRequest, StockMovementRequest, TransactionKind, TransactionLookup,
        is_reference_taken,
        xero::{XeroBuilder, XeroLimits, XeroProvider},
    },
};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rust_decimal_macros::dec;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use wiremock::{
    Mock, MockBuilder, MockServer, Request, ResponseTemplate,
    matchers::{body_partial_json, header, header_exists, method, path, query_param},
};

// ---------------------------------------------------------------------------------------------
// Identities and secrets

const TENANT: &str = "3f1a9c2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b";
const CLIENT_ID: &str = "C0FFEE00C0FFEE00C0FFEE00C0FFEE00";
const CLIENT_SECRET: &str = "xs_SECRET_client_5e1f9a";
const ACCESS: &str = "xat_SECRET_first_8c2d41";
const REFRESH: &str = "xrt_SECRET_first_1a7b09";
const NEW_ACCESS: &str = "xat_SECRET_second_93fe5c";
const NEW_REFRESH: &str = "xrt_SECRET_second_27cd6e";
const SECRETS: [&str; 5] = [CLIENT_SECRET, ACCESS, REFRESH, NEW_ACCESS, NEW_REFRESH];

const CONTACT: &str = "11111111-2222-4333-8444-555555555555";
const INVOICE: &str = "aaaaaaaa-1111-4111-8111-111111111111";
const INVOICE_B: &str = "aaaaaaaa-2222-4222-8222-222222222222";
const INVOICE_C: &str = "aaaaaaaa-3333-4333-8333-333333333333";
const NOTE: &str = "cccccccc-1111-4111-8111-111111111111";
const NOTE_C: &str = "cccccccc-3333-4333-8333-333333333333";
const PAYMENT: &str = "dddddddd-1111-4111-8111-111111111111";
const PAYMENT_C: &str = "dddddddd-3333-4333-8333-333333333333";
const BANK_ID: &str = "bbbbbbbb-0900-4090-8090-090909090909";
const ITEM: &str = "eeeeeeee-1111-4111-8111-111111111111";

#[track_caller]
fn assert_no_secret(text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "a credential leaked: {s} in\n{text}");
    }
}

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
}

fn tokens(access: &str, refresh: &str, minutes: i64) -> TokenSet {
    TokenSet {
        access_token: SecretString::from(access.to_owned()),
        refresh_token: SecretString::from(refresh.to_owned()),
        access_expires_at: t0() + chrono::Duration::minutes(minutes),
        refresh_expires_at: None,
        issued_at: None,
    }
}

fn fast_retry() -> RetryConfig {
    RetryConfig {
        max_retries: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_secs(2),
        retry_timeout: Duration::from_secs(20),
    }
}

struct Xero {
    server: MockServer,
    provider: XeroProvider,
    store: Arc<MemoryTokenStore>,
    clock: ManualClock,
}

impl Xero {
    /// Every request the server received satisfies Xero's spec.
    async fn check_spec(&self) {
        for r in self.server.received_requests().await.unwrap_or_default() {
            xero_spec::assert_request_valid(&r);
        }
    }
}

fn builder(server: &MockServer, store: &Arc<MemoryTokenStore>, clock: &ManualClock) -> XeroBuilder {
    XeroBuilder::new()
        .with_client_id(CLIENT_ID)
        .with_client_secret(SecretString::from(CLIENT_SECRET.to_owned()))
        .with_tenant_id(TENANT)
        .with_base_url(format!("{}/api.xro/2.0", server.uri()))
        .with_token_url(format!("{}/connect/token", server.uri()))
        .with_connections_url(format!("{}/connections", server.uri()))
        .with_token_store(Arc::clone(store) as Arc<dyn TokenStore>)
        .with_retry(fast_retry())
        .with_limits(XeroLimits::unlimited())
        .with_clock(Arc::new(clock.clone()))
}

async fn xero_with(stored: Option<TokenSet>, limits: XeroLimits) -> Xero {
    let server = MockServer::start().await;
    let clock = ManualClock::new(t0());
    let store = Arc::new(MemoryTokenStore::new(stored));
    let provider = builder(&server, &store, &clock).with_limits(limits).build().expect("a valid configuration");
    Xero { server, provider, store, clock }
}

async fn xero() -> Xero {
    xero_with(Some(tokens(ACCESS, REFRESH, 30)), XeroLimits::unlimited()).await
}

/// A call to the Accounting API with the headers every Xero call must carry.
fn api_as(token: &str, verb: &str, resource: &str) -> MockBuilder {
    Mock::given(method(verb))
        .and(path(format!("/api.xro/2.0{resource}")))
        .and(header("authorization", format!("Bearer {token}")))
        .and(header("xero-tenant-id", TENANT))
        .and(header("accept", "application/json"))
}

fn api(verb: &str, resource: &str) -> MockBuilder {
    api_as(ACCESS, verb, resource)
}

/// A write: JSON body, an `Idempotency-Key`.
fn write(verb: &str, resource: &str) -> MockBuilder {
    api(verb, resource).and(header("content-type", "application/json")).and(header_exists("idempotency-key"))
}

/// A batch write: `summarizeErrors=false` always (Q1).
fn batch(resource: &str) -> MockBuilder {
    write("PUT", resource).and(query_param("summarizeErrors", "false"))
}

fn ok(body: Value) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(body).insert_header("x-daylimit-remaining", "4000")
}

/// A JSON number with exactly these digits (money is sent with its exact text).
fn n(text: &str) -> Value {
    serde_json::from_str(text).unwrap()
}

fn ms(date: &str) -> String {
    let d = NaiveDate::parse_from_str(date, "%Y-%m-%d").unwrap();
    format!("/Date({}+0000)/", d.and_hms_opt(0, 0, 0).unwrap().and_utc().timestamp_millis())
}

// ---------------------------------------------------------------------------------------------
// Reference data of the organisation

fn reference_mocks(token: &str) -> Vec<Mock> {
    vec![
        api_as(token, "GET", "/Organisation")
            .respond_with(ok(json!({"Organisations": [{"OrganisationID": TENANT, "Name": "Test Shop Ltd",
                "BaseCurrency": "GBP", "CountryCode": "GB", "Class": "PREMIUM"}]})))
            .expect(1),
        api_as(token, "GET", "/TaxRates")
            .respond_with(ok(json!({"TaxRates": [
                {"Name": "20% (VAT on Income)", "TaxType": "OUTPUT2", "Status": "ACTIVE", "CanApplyToRevenue": true, "EffectiveRate": 20.0, "DisplayTaxRate": 20.0},
                {"Name": "5% (VAT on Income)", "TaxType": "RROUTPUT", "Status": "ACTIVE", "CanApplyToRevenue": true, "EffectiveRate": 5.0},
                {"Name": "Zero Rated Income", "TaxType": "ZERORATEDOUTPUT", "Status": "ACTIVE", "CanApplyToRevenue": true, "EffectiveRate": 0.0},
                {"Name": "Exempt Income", "TaxType": "EXEMPTOUTPUT", "Status": "ACTIVE", "CanApplyToRevenue": true, "EffectiveRate": 0.0},
                {"Name": "Zero Rated EC Goods Income", "TaxType": "ECZROUTPUT", "Status": "ACTIVE", "CanApplyToRevenue": true, "EffectiveRate": 0.0},
                {"Name": "No VAT", "TaxType": "NONE", "Status": "ACTIVE", "CanApplyToRevenue": true, "EffectiveRate": 0.0},
                {"Name": "Old 17.5%", "TaxType": "SROUTPUT", "Status": "ARCHIVED", "CanApplyToRevenue": true, "EffectiveRate": 17.5},
                {"Name": "20% (VAT on Expenses)", "TaxType": "INPUT2", "Status": "ACTIVE", "CanApplyToRevenue": false, "EffectiveRate": 20.0}
            ]})))
            .expect(1),
        api_as(token, "GET", "/Accounts")
            .respond_with(ok(json!({"Accounts": [
                {"AccountID": "a0000000-0200-4000-8000-000000000200", "Code": "200", "Name": "Sales", "Type": "REVENUE", "Status": "ACTIVE"},
                {"AccountID": "a0000000-0310-4000-8000-000000000310", "Code": "310", "Name": "Cost of Goods Sold", "Type": "DIRECTCOSTS", "Status": "ACTIVE"},
                {"AccountID": "a0000000-0630-4000-8000-000000000630", "Code": "630", "Name": "Inventory", "Type": "INVENTORY", "Status": "ACTIVE"},
                {"AccountID": "a0000000-0825-4000-8000-000000000825", "Code": "825", "Name": "VAT on destination sales", "Type": "CURRLIAB", "Status": "ACTIVE"},
                {"AccountID": BANK_ID, "Code": "090", "Name": "Business Bank Account", "Type": "BANK", "Status": "ACTIVE", "CurrencyCode": "GBP"},
                {"AccountID": "a0000000-0610-4000-8000-000000000610", "Code": "610", "Name": "Stripe clearing", "Type": "CURRENT", "Status": "ACTIVE", "EnablePaymentsToAccount": true},
                {"AccountID": "a0000000-0999-4000-8000-000000000999", "Code": "999", "Name": "Old sales", "Type": "REVENUE", "Status": "ARCHIVED"}
            ]})))
            .expect(1),
        api_as(token, "GET", "/Currencies")
            .respond_with(ok(json!({"Currencies": [{"Code": "GBP"}, {"Code": "EUR"}]})))
            .expect(1),
    ]
}

async fn mount_reference(x: &Xero) {
    for m in reference_mocks(ACCESS) {
        m.mount(&x.server).await;
    }
}

fn policy() -> SyncPolicy {
    SyncPolicy::from_json(
        r#"{"default_ledger_account_id": "200", "default_tax_rate_id": "OUTPUT2",
            "default_purchase_ledger_account_id": "310",
            "tax_rate_map": {"20": "OUTPUT2", "5": "RROUTPUT", "0": "ZERORATEDOUTPUT"},
            "default_bank_account_id": "090", "invoice_number_prefix": "MAG-",
            "foreign_vat_ledger_account_id": "825"}"#,
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Canonical fixtures (arithmetic in the comments)

fn customer() -> MagentoContact {
    serde_json::from_value(json!({"magento_id": 5, "email": "jane@example.com", "first_name": "Jane", "last_name": "Doe",
        "phone": "020 7946 0018", "website_id": 1,
        "addresses": [{"kind": "billing", "street": ["1 High Street", "Flat 2"], "city": "London", "postcode": "SW1A 1AA", "country_id": "GB"}]}))
    .unwrap()
}

/// 2 × 10.00 at 20 % (tax 4.00) + shipping 5.00 at 20 % (tax 1.00) = 30.00.
fn invoice(increment: &str, magento_id: u64) -> MagentoInvoice {
    serde_json::from_value(json!({
        "magento_id": magento_id, "increment_id": increment, "order_id": 77, "order_increment_id": "000000077",
        "website_id": 1, "store_id": 1, "currency": "GBP", "state": "open", "customer": customer(),
        "lines": [{"sku": "A-1", "name": "Widget", "qty": 2, "unit_price": 10.00, "line_subtotal": 20.00,
                   "line_tax": 4.00, "line_total": 24.00, "tax_rate": 0.2, "product_type": "simple"}],
        "subtotal": 20.00, "tax_amount": 5.00, "shipping_amount": 5.00, "shipping_tax_amount": 1.00,
        "discount_amount": 0, "grand_total": 30.00, "created_at": "2026-11-22T09:59:00Z", "payment_method": "braintree",
        "billing_address": {"kind": "billing", "street": ["1 High Street"], "city": "London", "postcode": "SW1A 1AA", "country_id": "GB"},
        "shipping_address": {"kind": "shipping", "street": ["1 High Street"], "city": "London", "postcode": "SW1A 1AA", "country_id": "GB"},
        "base_to_order_rate": 1
    }))
    .unwrap()
}

/// Refund 1 × 10.00 at 20 % = 12.00.
fn memo() -> MagentoCreditMemo {
    serde_json::from_value(json!({
        "magento_id": 55, "increment_id": "000000009", "invoice_id": 1001, "invoice_increment_id": "000000123",
        "website_id": 1, "currency": "GBP", "customer": customer(),
        "lines": [{"sku": "A-1", "name": "Widget", "qty": 1, "unit_price": 10.00, "line_subtotal": 10.00,
                   "line_tax": 2.00, "line_total": 12.00, "tax_rate": 0.2, "product_type": "simple"}],
        "adjustment_positive": 0, "adjustment_negative": 0, "grand_total": 12.00,
        "shipping_amount": 0, "shipping_tax_amount": 0, "created_at": "2026-11-25T12:00:00Z", "base_to_order_rate": 1
    }))
    .unwrap()
}

fn payment() -> MagentoPayment {
    serde_json::from_value(json!({"magento_id": 1001, "invoice_id": 1001, "invoice_increment_id": "000000123",
        "method": "braintree", "currency": "GBP", "amount": 30.00, "captured_at": "2026-11-22T10:00:00Z"}))
    .unwrap()
}

fn product(stock: Option<i64>) -> MagentoProduct {
    serde_json::from_value(
        json!({"magento_id": 2079, "sku": "MS-Champ-S", "name": "Champ Tee &amp; Small", "product_type": "simple",
        "price": 25, "cost": 9.5, "stock_qty": stock, "manage_stock": stock.is_some(), "website_ids": [1]}),
    )
    .unwrap()
}

fn invoice_answer(id: &str, number: &str, total: Value, due: Value) -> Value {
    json!({"InvoiceID": id, "InvoiceNumber": number, "Type": "ACCREC", "Status": "AUTHORISED",
           "Contact": {"ContactID": CONTACT}, "Total": total, "AmountDue": due, "CurrencyCode": "GBP",
           "Date": ms("2026-11-22"), "StatusAttributeString": "OK"})
}

// =============================================================================================
// 1. OAuth custody and tenants

fn token_endpoint(refresh: &str) -> MockBuilder {
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"));
    Mock::given(method("POST"))
        .and(path("/connect/token"))
        .and(header("authorization", format!("Basic {basic}")))
        .and(wiremock::matchers::body_string_contains(format!("refresh_token={refresh}")))
        .and(wiremock::matchers::body_string_contains("grant_type=refresh_token"))
}

fn token_answer(access: &str, refresh: &str) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({"access_token": access, "refresh_token": refresh,
        "expires_in": 1800, "token_type": "Bearer", "scope": "offline_access accounting.invoices"}))
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_for_many_callers_with_basic_auth_and_saved_before_use() {
    let x = xero_with(Some(tokens(ACCESS, REFRESH, -1)), XeroLimits::unlimited()).await;
    token_endpoint(REFRESH).respond_with(token_answer(NEW_ACCESS, NEW_REFRESH)).expect(1).mount(&x.server).await;
    for m in reference_mocks(NEW_ACCESS) {
        m.mount(&x.server).await;
    }
    // Ten callers at once: one refresh (single flight), the reference fetched once.
    let calls = (0..10).map(|_| x.provider.reference_data(false));
    for r in futures::future::join_all(calls).await {
        assert_eq!(r.unwrap().business.name, "Test Shop Ltd");
    }
    let saved = x.store.load().await.unwrap().unwrap();
    assert_eq!(saved.refresh_token.expose_secret(), NEW_REFRESH, "the rotated refresh token is persisted");
    assert_eq!(saved.access_expires_at, t0() + chrono::Duration::seconds(1800), "Xero's 30-minute lifetime");
    assert_eq!(x.store.saves(), 1);
    assert_eq!(x.provider.tokens().refreshes(), 1);
    x.check_spec().await;
}

#[tokio::test]
async fn invalid_grant_means_reconnect_and_is_never_retried() {
    let x = xero_with(Some(tokens(ACCESS, REFRESH, -1)), XeroLimits::unlimited()).await;
    token_endpoint(REFRESH)
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": "invalid_grant"})))
        .expect(1)
        .mount(&x.server)
        .await;
    let e = x.provider.reference_data(false).await.unwrap_err();
    assert!(matches!(e, Error::Auth { reason: AuthFailure::ReconnectRequired, .. }), "{e:?}");
    // A second caller gets the same answer without asking again.
    let again = x.provider.find_contact("M5").await.unwrap_err();
    assert_eq!(again.code(), ErrorCode::Auth);
    assert_no_secret(&format!("{e:?} {e} {again:?}"));
}

#[tokio::test]
async fn a_401_refreshes_once_then_retries() {
    let x = xero().await;
    api_as(ACCESS, "GET", "/Contacts")
        .respond_with(
            ResponseTemplate::new(401)
                .set_body_json(json!({"Title": "Unauthorized", "Status": 401, "Detail": "TokenExpired"})),
        )
        .expect(1)
        .mount(&x.server)
        .await;
    token_endpoint(REFRESH).respond_with(token_answer(NEW_ACCESS, NEW_REFRESH)).expect(1).mount(&x.server).await;
    api_as(NEW_ACCESS, "GET", "/Contacts").respond_with(ok(json!({"Contacts": []}))).expect(1).mount(&x.server).await;
    assert_eq!(x.provider.find_contact("M5").await.unwrap(), None);
    x.check_spec().await;
}

#[tokio::test]
async fn connections_list_the_organisations_and_a_missing_tenant_needs_a_reconnect() {
    let x = xero().await;
    Mock::given(method("GET"))
        .and(path("/connections"))
        .and(header("authorization", format!("Bearer {ACCESS}")))
        .respond_with(ok(json!([
            {"id": "e1eede29-f875-4a5d-8470-17f6a29a88b1", "authEventId": "d99ecdfe-391d-43d2-b834-17636ba90e8d",
             "tenantId": TENANT, "tenantType": "ORGANISATION", "tenantName": "Test Shop Ltd",
             "createdDateUtc": "2026-11-01T00:00:00.0000000", "updatedDateUtc": "2026-11-01T00:00:00.0000000"}
        ])))
        .expect(2)
        .mount(&x.server)
        .await;
    let all = x.provider.connections().await.unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].id, "e1eede29-f875-4a5d-8470-17f6a29a88b1", "the connection id, not the tenant id");
    assert_eq!(x.provider.connection().await.unwrap().tenant_name.as_deref(), Some("Test Shop Ltd"));
    // The connections call carries no tenant header (it is not tenant-scoped).
    let requests = x.server.received_requests().await.unwrap();
    assert!(requests.iter().all(|r| r.headers.get("xero-tenant-id").is_none()));
    x.check_spec().await;

    let other = xero().await;
    Mock::given(method("GET"))
        .and(path("/connections"))
        .respond_with(ok(json!([])))
        .expect(1)
        .mount(&other.server)
        .await;
    let e = other.provider.connection().await.unwrap_err();
    assert!(matches!(e, Error::Auth { reason: AuthFailure::ReconnectRequired, .. }), "{e}");
    assert!(e.to_string().contains(TENANT), "{e}");
}

// =============================================================================================
// 2. Reference data

#[tokio::test]
async fn reference_data_reads_organisation_tax_rates_accounts_and_currencies() {
    let x = xero().await;
    mount_reference(&x).await;
    let r = x.provider.reference_data(false).await.unwrap();
    assert_eq!((r.business.id.as_str(), r.business.country.as_str()), (TENANT, "GB"));
    assert!(r.business.multi_currency, "GBP plus EUR");
    let types: Vec<&str> = r.tax_rates.iter().map(|t| t.id.as_str()).collect();
    assert_eq!(
        types,
        ["OUTPUT2", "RROUTPUT", "ZERORATEDOUTPUT", "EXEMPTOUTPUT", "ECZROUTPUT", "NONE"],
        "active revenue rates only"
    );
    assert_eq!(r.tax_rate("OUTPUT2").unwrap().percentage, Some(dec!(20)));
    let banks: Vec<&str> = r.bank_accounts.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(banks, ["090", "610"], "BANK accounts and accounts with payments enabled (Q23)");
    assert!(r.ledger_account("200").unwrap().visible_in_sales);
    assert!(r.ledger_account("310").unwrap().visible_in_expenses);
    assert!(r.ledger_account("999").is_none(), "archived accounts are left out");
    policy().validate_against(&r).unwrap();
    let caps = x.provider.capabilities().await.unwrap();
    assert!(!caps.contact_per_currency && caps.stock && caps.credit_note_refunds);
    assert_eq!((caps.max_batch, caps.native_idempotency_window_secs), (50, Some(360)));
    // Cached: no second fetch (each mock expects exactly one call).
    x.provider.reference_data(false).await.unwrap();
    x.check_spec().await;
}

// =============================================================================================
// 3. Contacts

#[tokio::test]
async fn contacts_are_found_by_number_archived_ones_included_and_unarchived() {
    let x = xero().await;
    api("GET", "/Contacts")
        .and(query_param("where", "ContactNumber==\"M5\" OR ContactNumber==\"M6\""))
        .and(query_param("includeArchived", "true"))
        .respond_with(ok(json!({"Contacts": [
            {"ContactID": CONTACT, "ContactNumber": "M5", "ContactStatus": "ARCHIVED", "Name": "Jane Doe", "EmailAddress": "jane@example.com"}
        ]})))
        .expect(1)
        .mount(&x.server)
        .await;
    write("POST", &format!("/Contacts/{CONTACT}"))
        .and(body_partial_json(json!({"Contacts": [{"ContactID": CONTACT, "ContactStatus": "ACTIVE"}]})))
        .respond_with(ok(json!({"Contacts": [{"ContactID": CONTACT, "ContactStatus": "ACTIVE"}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    let found = x.provider.find_contacts(&["M5", "M6"]).await.unwrap();
    assert_eq!(found[0].as_ref().map(|c| c.id.as_str()), Some(CONTACT));
    assert_eq!(found[0].as_ref().and_then(|c| c.currency), None, "one contact for every currency");
    assert_eq!(found[1], None);
    x.check_spec().await;
}

#[tokio::test]
async fn contacts_are_created_in_one_batch_a_taken_number_is_a_taken_reference_and_a_name_clash_gets_the_number() {
    let x = xero().await;
    let jane = customer();
    let mut john = customer();
    john.magento_id = 6;
    john.first_name = Some("John".into());
    let mut kim = customer();
    kim.magento_id = 7;
    kim.first_name = Some("Kim".into());
    let p = policy();
    let request = |c: &'static MagentoContact, reference: &'static str| ContactRequest {
        contact: ContactFor::Customer(c),
        currency: byte8_ledger_core::money::Currency::GBP,
        reference,
        policy: Box::leak(Box::new(p.clone())),
        idempotency_key: Some("customer.upserted:5"),
    };
    let (jane, john, kim): (&'static _, &'static _, &'static _) =
        (Box::leak(Box::new(jane)), Box::leak(Box::new(john)), Box::leak(Box::new(kim)));
    batch("/Contacts")
        .and(body_partial_json(json!({"Contacts": [
            {"ContactNumber": "M5", "Name": "Jane Doe", "FirstName": "Jane", "LastName": "Doe", "EmailAddress": "jane@example.com",
             "Addresses": [{"AddressType": "POBOX", "AddressLine1": "1 High Street", "AddressLine2": "Flat 2", "City": "London", "PostalCode": "SW1A 1AA", "Country": "GB"}],
             "Phones": [{"PhoneType": "DEFAULT", "PhoneNumber": "020 7946 0018"}]},
            {"ContactNumber": "M6", "Name": "John Doe"},
            {"ContactNumber": "M7", "Name": "Kim Doe"}]})))
        .respond_with(ok(json!({"Contacts": [
            {"ContactID": CONTACT, "ContactNumber": "M5", "Name": "Jane Doe", "EmailAddress": "jane@example.com", "StatusAttributeString": "OK"},
            {"ContactNumber": "M6", "Name": "John Doe", "HasValidationErrors": true, "StatusAttributeString": "ERROR",
             "ValidationErrors": [{"Message": "Another contact has this contact number"}]},
            {"ContactNumber": "M7", "Name": "Kim Doe", "HasValidationErrors": true, "StatusAttributeString": "ERROR",
             "ValidationErrors": [{"Message": "The contact name Kim Doe is already assigned to another contact. The contact name must be unique across all active contacts."}]}
        ]})))
        .expect(1)
        .mount(&x.server)
        .await;
    // The clash is retried alone, with the number in the name.
    batch("/Contacts")
        .and(body_partial_json(json!({"Contacts": [{"ContactNumber": "M7", "Name": "Kim Doe (M7)"}]})))
        .respond_with(ok(json!({"Contacts": [{"ContactID": "77777777-2222-4333-8444-555555555555", "ContactNumber": "M7", "Name": "Kim Doe (M7)"}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    let results = x.provider.create_contacts(&[request(jane, "M5"), request(john, "M6"), request(kim, "M7")]).await;
    assert_eq!(results[0].as_ref().unwrap().id, CONTACT, "the good element keeps its id (Q1)");
    let taken = results[1].as_ref().unwrap_err();
    assert!(is_reference_taken(taken), "{taken}");
    assert_eq!(results[2].as_ref().unwrap().name.as_deref(), Some("Kim Doe (M7)"));
    x.check_spec().await;
}

#[tokio::test]
async fn update_contact_posts_to_the_contact() {
    let x = xero().await;
    write("POST", &format!("/Contacts/{CONTACT}"))
        .and(body_partial_json(
            json!({"Contacts": [{"ContactID": CONTACT, "ContactNumber": "M5", "Name": "Jane Doe"}]}),
        ))
        .respond_with(ok(json!({"Contacts": [{"ContactID": CONTACT, "ContactNumber": "M5", "Name": "Jane Doe"}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    let c = customer();
    let p = policy();
    let r = ContactRequest {
        contact: ContactFor::Customer(&c),
        currency: byte8_ledger_core::money::Currency::GBP,
        reference: "M5",
        policy: &p,
        idempotency_key: None,
    };
    assert_eq!(x.provider.update_contact(CONTACT, &r).await.unwrap().id, CONTACT);
    // An id Xero never issued: not found, without a request.
    assert_eq!(x.provider.update_contact("M5", &r).await.unwrap_err().code(), ErrorCode::NotFound);
    x.check_spec().await;
}

// =============================================================================================
// 4. Invoices: batches, recovery, idempotency, limits

fn invoice_requests<'a>(
    invoices: &'a [MagentoInvoice],
    p: &'a SyncPolicy,
    items: &'a BTreeMap<String, ItemLink>,
) -> Vec<InvoiceRequest<'a>> {
    invoices
        .iter()
        .map(|inv| InvoiceRequest {
            invoice: inv,
            policy: p,
            contact_id: CONTACT,
            items,
            idempotency_key: Box::leak(format!("invoice.created:{}", inv.magento_id).into_boxed_str()),
        })
        .collect()
}

#[tokio::test]
async fn invoices_go_in_one_batch_and_every_element_gets_its_own_result() {
    let x = xero().await;
    mount_reference(&x).await;
    let invoices = [invoice("000000123", 1001), invoice("000000124", 1002), invoice("000000125", 1003)];
    // 2 × 10.00 net at 20 % is exactly Xero's own tax (4.00): no TaxAmount; shipping is a line.
    batch("/Invoices")
        .and(query_param("unitdp", "4"))
        .and(body_partial_json(json!({"Invoices": [{
            "Type": "ACCREC", "Contact": {"ContactID": CONTACT}, "Date": "2026-11-22", "DueDate": "2026-12-06",
            "LineAmountTypes": "Exclusive", "InvoiceNumber": "MAG-000000123", "Reference": "Order 000000077",
            "CurrencyCode": "GBP", "Status": "AUTHORISED",
            "LineItems": [
                {"Description": "Widget", "Quantity": 2, "UnitAmount": 10.00, "AccountCode": "200", "TaxType": "OUTPUT2"},
                {"Description": "Shipping", "Quantity": 1, "UnitAmount": 5.00, "AccountCode": "200", "TaxType": "OUTPUT2"}]}]})))
        .respond_with(ok(json!({"Invoices": [
            invoice_answer(INVOICE, "MAG-000000123", json!(30.00), json!(30.00)),
            {"InvoiceNumber": "MAG-000000124", "HasErrors": true, "StatusAttributeString": "ERROR",
             "ValidationErrors": [{"Message": "Invoice # must be unique."}]},
            invoice_answer(INVOICE_C, "MAG-000000125", json!(30.00), json!(30.00))
        ]})))
        .expect(1)
        .mount(&x.server)
        .await;
    let p = policy();
    let items = BTreeMap::new();
    let results = x.provider.post_invoices(&invoice_requests(&invoices, &p, &items)).await;
    assert_eq!(results[0].as_ref().unwrap().id, INVOICE);
    assert_eq!(results[0].as_ref().unwrap().total, Some(dec!(30.00)));
    let e = results[1].as_ref().unwrap_err();
    assert!(e.to_string().contains("Invoice # must be unique."), "{e}");
    assert_eq!(results[2].as_ref().unwrap().id, INVOICE_C, "a bad element never hides the good ones");
    // The body carried no TaxAmount, no Total (Xero owns totals, Q22).
    let put = x.server.received_requests().await.unwrap().into_iter().find(|r| r.method.as_str() == "PUT").unwrap();
    let body: Value = serde_json::from_slice(&put.body).unwrap();
    assert!(
        body["Invoices"][0].get("Total").is_none() && body["Invoices"][0]["LineItems"][0].get("TaxAmount").is_none()
    );
    x.check_spec().await;
}

#[tokio::test]
async fn a_policy_mapping_zero_rate_lines_to_exemptoutput_sends_exemptoutput() {
    let x = xero().await;
    mount_reference(&x).await;
    // A shop whose untaxed goods are exempt supplies (not zero-rated): the policy maps 0 % to
    // Xero's EXEMPTOUTPUT ("Exempt Income"), and 20 % as before.
    let p = SyncPolicy::from_json(
        r#"{"default_ledger_account_id": "200", "default_tax_rate_id": "OUTPUT2",
            "tax_rate_map": {"20": "OUTPUT2", "0": "EXEMPTOUTPUT"}, "invoice_number_prefix": "MAG-"}"#,
    )
    .unwrap();
    // A UK customer: 2 × 10.00 exempt (tax 0) + 1 × 5.00 at 20 % (tax 1.00), no shipping:
    // 25.00 net + 1.00 tax = 26.00.
    let mut inv = invoice("000000126", 1004);
    inv.lines = serde_json::from_value(json!([
        {"sku": "INS-1", "name": "Insurance", "qty": 2, "unit_price": 10.00, "line_subtotal": 20.00,
         "line_tax": 0, "line_total": 20.00, "tax_rate": 0, "product_type": "virtual"},
        {"sku": "A-1", "name": "Widget", "qty": 1, "unit_price": 5.00, "line_subtotal": 5.00,
         "line_tax": 1.00, "line_total": 6.00, "tax_rate": 0.2, "product_type": "simple"}]))
    .unwrap();
    inv.subtotal = dec!(25.00);
    inv.tax_amount = dec!(1.00);
    inv.shipping_amount = dec!(0);
    inv.shipping_tax_amount = dec!(0);
    inv.grand_total = dec!(26.00);
    batch("/Invoices")
        .and(body_partial_json(json!({"Invoices": [{"InvoiceNumber": "MAG-000000126", "LineAmountTypes": "Exclusive",
            "LineItems": [
                {"Description": "Insurance", "Quantity": 2, "UnitAmount": 10.00, "AccountCode": "200", "TaxType": "EXEMPTOUTPUT"},
                {"Description": "Widget", "Quantity": 1, "UnitAmount": 5.00, "AccountCode": "200", "TaxType": "OUTPUT2"}]}]})))
        .respond_with(ok(json!({"Invoices": [invoice_answer(INVOICE, "MAG-000000126", json!(26.00), json!(26.00))]})))
        .expect(1)
        .mount(&x.server)
        .await;
    let items = BTreeMap::new();
    let r = InvoiceRequest {
        invoice: &inv,
        policy: &p,
        contact_id: CONTACT,
        items: &items,
        idempotency_key: "invoice.created:1004",
    };
    let doc = x.provider.post_invoice(&r).await.unwrap();
    assert_eq!((doc.id.as_str(), doc.total), (INVOICE, Some(dec!(26.00))));
    // Exactly those two lines, no tax amount of ours on either (Xero's own arithmetic matches).
    let put = x.server.received_requests().await.unwrap().into_iter().find(|r| r.method.as_str() == "PUT").unwrap();
    let body: Value = serde_json::from_slice(&put.body).unwrap();
    let lines = body["Invoices"][0]["LineItems"].as_array().unwrap();
    let types: Vec<&str> = lines.iter().map(|l| l["TaxType"].as_str().unwrap()).collect();
    assert_eq!(types, ["EXEMPTOUTPUT", "OUTPUT2"]);
    assert!(lines.iter().all(|l| l.get("TaxAmount").is_none()), "{lines:?}");
    x.check_spec().await;
}

#[tokio::test]
async fn a_batch_whose_answer_is_lost_is_looked_up_and_only_the_missing_invoices_are_sent_again() {
    let x = xero().await;
    mount_reference(&x).await;
    let invoices = [invoice("000000123", 1001), invoice("000000124", 1002), invoice("000000125", 1003)];
    let keys = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&keys);
    // The first answer is lost (500 after Xero committed two of the three).
    batch("/Invoices")
        .and(body_partial_json(json!({"Invoices": [{"InvoiceNumber": "MAG-000000123"}, {"InvoiceNumber": "MAG-000000124"}, {"InvoiceNumber": "MAG-000000125"}]})))
        .respond_with(move |r: &Request| {
            seen.lock().unwrap().push(r.headers.get("idempotency-key").unwrap().to_str().unwrap().to_owned());
            ResponseTemplate::new(500).set_body_json(json!({"Title": "Internal Server Error"}))
        })
        .expect(1)
        .mount(&x.server)
        .await;
    // One look-up for all three numbers finds the two committed.
    api("GET", "/Invoices")
        .and(query_param("InvoiceNumbers", "MAG-000000123,MAG-000000124,MAG-000000125"))
        .respond_with(ok(json!({"Invoices": [
            invoice_answer(INVOICE, "MAG-000000123", json!(30.00), json!(30.00)),
            invoice_answer(INVOICE_B, "MAG-000000124", json!(30.00), json!(30.00))
        ]})))
        .expect(1)
        .mount(&x.server)
        .await;
    // Only the missing one is sent again, as a batch of one with its own key.
    let seen = Arc::clone(&keys);
    batch("/Invoices")
        .and(|r: &Request| {
            serde_json::from_slice::<Value>(&r.body)
                .map(|v| v["Invoices"].as_array().map(Vec::len) == Some(1))
                .unwrap_or(false)
        })
        .and(body_partial_json(json!({"Invoices": [{"InvoiceNumber": "MAG-000000125"}]})))
        .respond_with(move |r: &Request| {
            seen.lock().unwrap().push(r.headers.get("idempotency-key").unwrap().to_str().unwrap().to_owned());
            ok(json!({"Invoices": [invoice_answer(INVOICE_C, "MAG-000000125", json!(30.00), json!(30.00))]}))
        })
        .expect(1)
        .mount(&x.server)
        .await;
    let p = policy();
    let items = BTreeMap::new();
    let results = x.provider.post_invoices(&invoice_requests(&invoices, &p, &items)).await;
    let ids: Vec<String> = results.into_iter().map(|r| r.unwrap().id).collect();
    assert_eq!(ids, [INVOICE, INVOICE_B, INVOICE_C]);
    let keys = keys.lock().unwrap().clone();
    assert_eq!(keys.len(), 2);
    assert_ne!(keys[0], keys[1], "a different body never reuses a key (Xero answers 400 to that)");
    assert!(keys.iter().all(|k| k.len() <= 128 && k.starts_with("byte8-ledger:invoices:")), "{keys:?}");
    x.check_spec().await;
}

#[tokio::test]
async fn an_immediate_retry_resends_the_same_idempotency_key() {
    let x = xero().await;
    mount_reference(&x).await;
    let keys = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&keys);
    let calls = Arc::new(Mutex::new(0));
    let counter = Arc::clone(&calls);
    // 429 (minute) with Retry-After 1: nothing was done; the same request goes again.
    batch("/Invoices")
        .respond_with(move |r: &Request| {
            seen.lock().unwrap().push(r.headers.get("idempotency-key").unwrap().to_str().unwrap().to_owned());
            let mut n = counter.lock().unwrap();
            *n += 1;
            if *n == 1 {
                ResponseTemplate::new(429)
                    .insert_header("retry-after", "1")
                    .insert_header("x-rate-limit-problem", "minute")
            } else {
                ok(json!({"Invoices": [invoice_answer(INVOICE, "MAG-000000123", json!(30.00), json!(30.00))]}))
            }
        })
        .expect(2)
        .mount(&x.server)
        .await;
    let p = policy();
    let inv = invoice("000000123", 1001);
    let items = BTreeMap::new();
    let r = InvoiceRequest {
        invoice: &inv,
        policy: &p,
        contact_id: CONTACT,
        items: &items,
        idempotency_key: "invoice.created:1001",
    };
    assert_eq!(x.provider.post_invoice(&r).await.unwrap().id, INVOICE);
    let keys = keys.lock().unwrap().clone();
    assert_eq!(keys[0], keys[1], "the same request, the same key: Xero replays instead of posting twice");
    assert_eq!(x.provider.stats().throttled(), 1);
    x.check_spec().await;
}

#[tokio::test]
async fn a_spent_daily_limit_defers_without_retrying_and_the_budget_follows_xeros_count() {
    let x = xero().await;
    api("GET", "/Contacts")
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "66975")
                .insert_header("x-rate-limit-problem", "day"),
        )
        .expect(1)
        .mount(&x.server)
        .await;
    let e = x.provider.find_contact("M5").await.unwrap_err();
    assert!(e.is_deferred(), "{e:?}");
    assert_eq!(e.retry_after(), Some(Duration::from_secs(66_975)));
    assert_eq!(e.code(), ErrorCode::RateLimited);
    assert!(e.to_string().contains("daily"), "{e}");

    // X-DayLimit-Remaining: 0 on an answer: the next call is not even sent.
    let y = xero().await;
    api("GET", "/Items")
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"Items": []})).insert_header("x-daylimit-remaining", "0"),
        )
        .expect(1)
        .mount(&y.server)
        .await;
    assert_eq!(y.provider.find_item(ItemKind::Product, "SKU").await.unwrap(), None);
    let e = y.provider.find_item(ItemKind::Product, "SKU").await.unwrap_err();
    assert!(e.is_deferred(), "{e:?}");
}

#[tokio::test]
async fn the_client_side_daily_budget_defers_before_sending() {
    // A token valid for two days: this test moves the clock by one.
    let x = xero_with(Some(tokens(ACCESS, REFRESH, 48 * 60)), XeroLimits { per_minute: 0, concurrent: 5, per_day: 2 })
        .await;
    api("GET", "/Items").respond_with(ok(json!({"Items": []}))).up_to_n_times(2).expect(2).mount(&x.server).await;
    x.provider.find_item(ItemKind::Product, "A").await.unwrap();
    x.provider.find_item(ItemKind::Product, "B").await.unwrap();
    let e = x.provider.find_item(ItemKind::Product, "C").await.unwrap_err();
    assert!(e.is_deferred(), "{e:?}");
    // A day later the first calls have left the window.
    x.clock.advance(chrono::Duration::hours(24));
    api("GET", "/Items").respond_with(ok(json!({"Items": []}))).expect(1).mount(&x.server).await;
    x.provider.find_item(ItemKind::Product, "D").await.unwrap();
}

#[tokio::test]
async fn at_most_five_requests_are_in_flight() {
    let x = xero_with(Some(tokens(ACCESS, REFRESH, 30)), XeroLimits { per_minute: 0, concurrent: 5, per_day: 0 }).await;
    let live = Arc::new(Mutex::new((0usize, 0usize)));
    let l = Arc::clone(&live);
    api("GET", "/Items")
        .respond_with(move |_: &Request| {
            let mut g = l.lock().unwrap();
            g.0 += 1;
            g.1 = g.1.max(g.0);
            drop(g);
            ok(json!({"Items": []})).set_delay(Duration::from_millis(50))
        })
        .expect(12)
        .mount(&x.server)
        .await;
    // The responder counts arrivals; departures are inferred from the delay, so count arrivals
    // within each 50 ms window instead: 12 calls take at least 3 rounds of 5.
    let started = std::time::Instant::now();
    let calls = (0..12).map(|i| {
        let p = &x.provider;
        async move { p.find_item(ItemKind::Product, &format!("S{i}")).await.unwrap() }
    });
    futures::future::join_all(calls).await;
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "12 calls of 50 ms, 5 at once: ≥ 3 rounds ({:?})",
        started.elapsed()
    );
}

// =============================================================================================
// 5. Documents, payments, allocations, refunds, voids, items, stock

#[tokio::test]
async fn find_and_get_documents_read_numbers_amount_due_and_404s() {
    let x = xero().await;
    api("GET", "/Invoices")
        .and(query_param("InvoiceNumbers", "MAG-000000123"))
        .respond_with(ok(json!({"Invoices": [invoice_answer(INVOICE, "MAG-000000123", json!(30.00), json!(18.00))]})))
        .expect(1)
        .mount(&x.server)
        .await;
    api("GET", &format!("/Invoices/{INVOICE}"))
        .respond_with(ok(json!({"Invoices": [invoice_answer(INVOICE, "MAG-000000123", json!(30.00), json!(18.00))]})))
        .expect(1)
        .mount(&x.server)
        .await;
    api("GET", &format!("/Invoices/{INVOICE_B}"))
        .respond_with(ResponseTemplate::new(404).set_body_string("The resource you're looking for cannot be found"))
        .expect(1)
        .mount(&x.server)
        .await;
    api("GET", "/CreditNotes")
        .and(query_param("where", "CreditNoteNumber==\"MAG-000000009\""))
        .respond_with(ok(
            json!({"CreditNotes": [{"CreditNoteID": NOTE, "CreditNoteNumber": "MAG-000000009", "Type": "ACCRECCREDIT",
            "Status": "AUTHORISED", "Total": 12.00, "RemainingCredit": 12.00, "Contact": {"ContactID": CONTACT}}]}),
        ))
        .expect(1)
        .mount(&x.server)
        .await;
    let d = x.provider.find_document(DocumentKind::Invoice, "MAG-000000123").await.unwrap().unwrap();
    assert_eq!((d.id.as_str(), d.outstanding, d.contact_id.as_deref()), (INVOICE, Some(dec!(18.00)), Some(CONTACT)));
    assert_eq!(x.provider.get_document(DocumentKind::Invoice, INVOICE).await.unwrap().total, Some(dec!(30.00)));
    assert_eq!(
        x.provider.get_document(DocumentKind::Invoice, INVOICE_B).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert_eq!(
        x.provider.get_document(DocumentKind::Invoice, "not-a-guid").await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    let n = x.provider.find_document(DocumentKind::CreditNote, "MAG-000000009").await.unwrap().unwrap();
    assert_eq!((n.id.as_str(), n.outstanding), (NOTE, Some(dec!(12.00))));
    x.check_spec().await;
}

#[tokio::test]
async fn payments_go_to_the_bank_accounts_id_for_at_most_what_is_outstanding() {
    let x = xero().await;
    mount_reference(&x).await;
    batch("/Payments")
        .and(body_partial_json(
            json!({"Payments": [{"Invoice": {"InvoiceID": INVOICE}, "Account": {"AccountID": BANK_ID},
            "Date": "2026-11-22", "Amount": n("18.00"), "Reference": "MAG-000000123"}]}),
        ))
        .respond_with(ok(json!({"Payments": [{"PaymentID": PAYMENT, "Amount": 18.00, "Reference": "MAG-000000123",
            "Date": ms("2026-11-22"), "Status": "AUTHORISED", "StatusAttributeString": "OK"}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    let p = policy();
    let pay = payment();
    // 30.00 captured, 18.00 outstanding: Xero refuses an overpayment, so 18.00 is paid (Q7).
    let r = PaymentRequest {
        payment: &pay,
        policy: &p,
        contact_id: CONTACT,
        invoice_id: INVOICE,
        bank_account_id: "090",
        invoice_base_to_order_rate: Some(dec!(1)),
        outstanding: Some(dec!(18.00)),
        idempotency_key: "invoice.paid:1001",
    };
    let t = match x.provider.post_payment(&r).await {
        Ok(t) => t,
        Err(e) => {
            for r in x.server.received_requests().await.unwrap() {
                eprintln!("{} {} {:?} {}", r.method, r.url, r.headers, String::from_utf8_lossy(&r.body));
            }
            panic!("{e:?}");
        }
    };
    assert_eq!((t.id.as_str(), t.total), (PAYMENT, Some(dec!(18.00))));
    x.check_spec().await;
}

#[tokio::test]
async fn payments_and_allocations_are_found_again_on_their_documents() {
    let x = xero().await;
    let mut inv = invoice_answer(INVOICE, "MAG-000000123", json!(30.00), json!(0.00));
    inv["Payments"] =
        json!([{"PaymentID": PAYMENT, "Date": ms("2026-11-22"), "Amount": 30.00, "Reference": "MAG-000000123"}]);
    api("GET", &format!("/Invoices/{INVOICE}"))
        .respond_with(ok(json!({"Invoices": [inv]})))
        .expect(2)
        .mount(&x.server)
        .await;
    api("GET", &format!("/CreditNotes/{NOTE}"))
        .respond_with(ok(json!({"CreditNotes": [{"CreditNoteID": NOTE, "CreditNoteNumber": "MAG-000000009", "Total": 12.00, "RemainingCredit": 0.00,
            "Allocations": [{"AllocationID": "abababab-1111-4111-8111-111111111111", "Amount": 12.00, "Date": ms("2026-11-25"), "Invoice": {"InvoiceID": INVOICE}}]}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    let date = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap();
    let ids = [INVOICE];
    let lookup = TransactionLookup { contact_id: CONTACT, reference: Some("MAG-000000123"), date, artefact_ids: &ids };
    assert_eq!(x.provider.find_transaction(TransactionKind::Payment, &lookup).await.unwrap().unwrap().id, PAYMENT);
    let other_day = TransactionLookup { date: date.succ_opt().unwrap(), ..lookup };
    assert!(x.provider.find_transaction(TransactionKind::Payment, &other_day).await.unwrap().is_none());
    let both = [INVOICE, NOTE];
    let lookup = TransactionLookup { contact_id: CONTACT, reference: None, date, artefact_ids: &both };
    let a = x.provider.find_transaction(TransactionKind::Allocation, &lookup).await.unwrap().unwrap();
    assert_eq!(a.total, Some(dec!(12.00)));
    x.check_spec().await;
}

#[tokio::test]
async fn credit_notes_are_posted_allocated_and_refunded() {
    let x = xero().await;
    mount_reference(&x).await;
    batch("/CreditNotes")
        .and(body_partial_json(json!({"CreditNotes": [{"Type": "ACCRECCREDIT", "Contact": {"ContactID": CONTACT}, "Date": "2026-11-25",
            "LineAmountTypes": "Exclusive", "CreditNoteNumber": "MAG-000000009", "Reference": "Credit for invoice MAG-000000123",
            "Status": "AUTHORISED", "LineItems": [{"Description": "Widget", "Quantity": 1, "UnitAmount": 10.00, "TaxType": "OUTPUT2"}]}]})))
        .respond_with(ok(json!({"CreditNotes": [{"CreditNoteID": NOTE, "CreditNoteNumber": "MAG-000000009", "Type": "ACCRECCREDIT",
            "Status": "AUTHORISED", "Total": 12.00, "RemainingCredit": 12.00, "Contact": {"ContactID": CONTACT}}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    write("PUT", &format!("/CreditNotes/{NOTE}/Allocations"))
        .and(body_partial_json(
            json!({"Allocations": [{"Invoice": {"InvoiceID": INVOICE}, "Amount": n("5.00"), "Date": "2026-11-25"}]}),
        ))
        .respond_with(ok(
            json!({"Allocations": [{"AllocationID": "abababab-1111-4111-8111-111111111111", "Amount": 5.00,
            "Date": ms("2026-11-25"), "Invoice": {"InvoiceID": INVOICE}}]}),
        ))
        .expect(1)
        .mount(&x.server)
        .await;
    api("GET", &format!("/CreditNotes/{NOTE}"))
        .respond_with(ok(json!({"CreditNotes": [{"CreditNoteID": NOTE, "CurrencyCode": "GBP", "Total": 12.00, "RemainingCredit": 7.00}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    batch("/Payments")
        .and(body_partial_json(
            json!({"Payments": [{"CreditNote": {"CreditNoteID": NOTE}, "Account": {"AccountID": BANK_ID},
            "Amount": n("7.00"), "Date": "2026-11-25", "Reference": "MAG-000000009"}]}),
        ))
        .respond_with(ok(json!({"Payments": [{"PaymentID": PAYMENT, "Amount": 7.00, "Reference": "MAG-000000009"}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    let p = policy();
    let m = memo();
    let items = BTreeMap::new();
    let r = CreditNoteRequest {
        memo: &m,
        policy: &p,
        contact_id: CONTACT,
        items: &items,
        invoice_addresses: None,
        idempotency_key: "creditmemo.created:55",
    };
    let note = x.provider.post_credit_note(&r).await.unwrap();
    assert_eq!((note.id.as_str(), note.total, note.outstanding), (NOTE, Some(dec!(12.00)), Some(dec!(12.00))));
    let date = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    let a = AllocationRequest {
        contact_id: CONTACT,
        invoice_id: INVOICE,
        credit_note_id: NOTE,
        amount: dec!(5.00),
        date,
        idempotency_key: "creditmemo.created:55",
    };
    assert_eq!(x.provider.allocate(&a).await.unwrap().total, Some(dec!(5.00)));
    let refund = RefundRequest {
        contact_id: CONTACT,
        credit_note_id: NOTE,
        bank_account_id: "090",
        amount: dec!(7.00),
        date,
        reference: "MAG-000000009",
        base_to_order_rate: Some(dec!(1)),
        currency: None,
        idempotency_key: "creditmemo.created:55",
    };
    assert_eq!(x.provider.refund_credit_note(&refund).await.unwrap().total, Some(dec!(7.00)));
    x.check_spec().await;
}

#[tokio::test]
async fn credit_notes_go_in_one_batch_and_a_bad_note_never_hides_the_good_ones() {
    let x = xero().await;
    mount_reference(&x).await;
    // Four memos: the first cannot be read (no increment id) and is never sent; of the three
    // sent, Xero refuses the middle one.
    let memo_n = |magento_id: u64, increment: &str| {
        let mut m = memo();
        m.magento_id = magento_id;
        m.increment_id = increment.into();
        m
    };
    let memos = [memo_n(54, " "), memo_n(55, "000000009"), memo_n(56, "000000010"), memo_n(57, "000000011")];
    batch("/CreditNotes")
        .and(query_param("unitdp", "4"))
        .and(body_partial_json(json!({"CreditNotes": [
            {"CreditNoteNumber": "MAG-000000009"}, {"CreditNoteNumber": "MAG-000000010"}, {"CreditNoteNumber": "MAG-000000011"}]})))
        .respond_with(ok(json!({"CreditNotes": [
            {"CreditNoteID": NOTE, "CreditNoteNumber": "MAG-000000009", "Type": "ACCRECCREDIT", "Status": "AUTHORISED",
             "Total": 12.00, "RemainingCredit": 12.00, "Contact": {"ContactID": CONTACT}, "StatusAttributeString": "OK"},
            {"CreditNoteNumber": "MAG-000000010", "HasErrors": true, "StatusAttributeString": "ERROR",
             "ValidationErrors": [{"Message": "Credit Note # must be unique."}]},
            {"CreditNoteID": NOTE_C, "CreditNoteNumber": "MAG-000000011", "Type": "ACCRECCREDIT", "Status": "AUTHORISED",
             "Total": 12.00, "RemainingCredit": 12.00, "Contact": {"ContactID": CONTACT}, "StatusAttributeString": "OK"}
        ]})))
        .expect(1)
        .mount(&x.server)
        .await;
    let p = policy();
    let items = BTreeMap::new();
    let requests: Vec<CreditNoteRequest<'_>> = memos
        .iter()
        .map(|m| CreditNoteRequest {
            memo: m,
            policy: &p,
            contact_id: CONTACT,
            items: &items,
            invoice_addresses: None,
            idempotency_key: Box::leak(format!("creditmemo.created:{}", m.magento_id).into_boxed_str()),
        })
        .collect();
    let results = x.provider.post_credit_notes(&requests).await;
    assert_eq!(results.len(), 4);
    let unreadable = results[0].as_ref().unwrap_err();
    assert!(
        unreadable.to_string().contains("increment_id") && unreadable.to_string().contains("must not be empty"),
        "{unreadable}"
    );
    let good = results[1].as_ref().unwrap();
    assert_eq!((good.id.as_str(), good.total, good.outstanding), (NOTE, Some(dec!(12.00)), Some(dec!(12.00))));
    let refused = results[2].as_ref().unwrap_err();
    assert!(refused.to_string().contains("Credit Note # must be unique."), "{refused}");
    assert!(!refused.is_retryable(), "a refusal is not retried: {refused:?}");
    assert_eq!(results[3].as_ref().unwrap().id, NOTE_C, "a bad element never hides the good ones");
    // One request carrying exactly the three readable notes.
    let puts: Vec<_> =
        x.server.received_requests().await.unwrap().into_iter().filter(|r| r.method.as_str() == "PUT").collect();
    assert_eq!(puts.len(), 1);
    let body: Value = serde_json::from_slice(&puts[0].body).unwrap();
    assert_eq!(body["CreditNotes"].as_array().map(Vec::len), Some(3));
    x.check_spec().await;
}

#[tokio::test]
async fn payments_go_in_one_batch_and_a_bad_payment_never_hides_the_good_ones() {
    let x = xero().await;
    mount_reference(&x).await;
    // Four payments of 30.00: the first into an account that is not a bank account (never
    // sent); of the three sent, Xero refuses the middle one.
    let pay_n = |invoice_id: u64, increment: &str| {
        let mut p = payment();
        p.magento_id = invoice_id;
        p.invoice_id = invoice_id;
        p.invoice_increment_id = increment.into();
        p
    };
    let payments =
        [pay_n(1000, "000000122"), pay_n(1001, "000000123"), pay_n(1002, "000000124"), pay_n(1003, "000000125")];
    batch("/Payments")
        .and(body_partial_json(json!({"Payments": [
            {"Invoice": {"InvoiceID": INVOICE}, "Account": {"AccountID": BANK_ID}, "Amount": n("30.00"), "Reference": "MAG-000000123"},
            {"Invoice": {"InvoiceID": INVOICE_B}, "Account": {"AccountID": BANK_ID}, "Amount": n("30.00"), "Reference": "MAG-000000124"},
            {"Invoice": {"InvoiceID": INVOICE_C}, "Account": {"AccountID": BANK_ID}, "Amount": n("30.00"), "Reference": "MAG-000000125"}]})))
        .respond_with(ok(json!({"Payments": [
            {"PaymentID": PAYMENT, "Amount": 30.00, "Reference": "MAG-000000123", "Date": ms("2026-11-22"),
             "Status": "AUTHORISED", "StatusAttributeString": "OK"},
            {"Invoice": {"InvoiceID": INVOICE_B}, "Amount": 30.00, "HasValidationErrors": true, "StatusAttributeString": "ERROR",
             "ValidationErrors": [{"Message": "Payment amount exceeds the amount outstanding on this document"}]},
            {"PaymentID": PAYMENT_C, "Amount": 30.00, "Reference": "MAG-000000125", "Date": ms("2026-11-22"),
             "Status": "AUTHORISED", "StatusAttributeString": "OK"}
        ]})))
        .expect(1)
        .mount(&x.server)
        .await;
    let p = policy();
    let targets = [(INVOICE, "999"), (INVOICE, "090"), (INVOICE_B, "090"), (INVOICE_C, "090")];
    let requests: Vec<PaymentRequest<'_>> = payments
        .iter()
        .zip(targets)
        .map(|(pay, (invoice_id, bank))| PaymentRequest {
            payment: pay,
            policy: &p,
            contact_id: CONTACT,
            invoice_id,
            bank_account_id: bank,
            invoice_base_to_order_rate: Some(dec!(1)),
            outstanding: Some(dec!(30.00)),
            idempotency_key: Box::leak(format!("invoice.paid:{}", pay.invoice_id).into_boxed_str()),
        })
        .collect();
    let results = x.provider.post_payments(&requests).await;
    assert_eq!(results.len(), 4);
    let not_a_bank = results[0].as_ref().unwrap_err();
    assert!(not_a_bank.to_string().contains("999 is not a bank account"), "{not_a_bank}");
    let good = results[1].as_ref().unwrap();
    assert_eq!((good.id.as_str(), good.total), (PAYMENT, Some(dec!(30.00))));
    let refused = results[2].as_ref().unwrap_err();
    assert!(refused.to_string().contains("Payment amount exceeds the amount outstanding"), "{refused}");
    assert!(!refused.is_retryable(), "a refusal is not retried: {refused:?}");
    assert_eq!(results[3].as_ref().unwrap().id, PAYMENT_C, "a bad element never hides the good ones");
    let puts: Vec<_> =
        x.server.received_requests().await.unwrap().into_iter().filter(|r| r.method.as_str() == "PUT").collect();
    assert_eq!(puts.len(), 1);
    let body: Value = serde_json::from_slice(&puts[0].body).unwrap();
    assert_eq!(body["Payments"].as_array().map(Vec::len), Some(3));
    x.check_spec().await;
}

#[tokio::test]
async fn an_allocation_over_what_is_outstanding_is_refused_with_xeros_message() {
    let x = xero().await;
    write("PUT", &format!("/CreditNotes/{NOTE}/Allocations"))
        .respond_with(ok(json!({"Allocations": [{"Amount": 50.00, "Invoice": {"InvoiceID": INVOICE}, "StatusAttributeString": "ERROR",
            "ValidationErrors": [{"Message": "Credit Note cannot be allocated as amount is greater than amount outstanding"}]}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    let date = NaiveDate::from_ymd_opt(2026, 11, 25).unwrap();
    let a = AllocationRequest {
        contact_id: CONTACT,
        invoice_id: INVOICE,
        credit_note_id: NOTE,
        amount: dec!(50.00),
        date,
        idempotency_key: "k",
    };
    let e = x.provider.allocate(&a).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Validation);
    assert!(e.to_string().contains("greater than amount outstanding"), "{e}");
    x.check_spec().await;
}

#[tokio::test]
async fn voiding_posts_the_status_and_a_settled_invoice_is_refused() {
    let x = xero().await;
    write("POST", &format!("/Invoices/{INVOICE}"))
        .and(body_partial_json(json!({"Invoices": [{"InvoiceID": INVOICE, "Status": "VOIDED"}]})))
        .respond_with(ok(json!({"Invoices": [{"InvoiceID": INVOICE, "Status": "VOIDED"}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    write("POST", &format!("/Invoices/{INVOICE_B}"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"ErrorNumber": 10, "Type": "ValidationException",
            "Elements": [{"ValidationErrors": [{"Message": "This document cannot be edited as it has a payment or credit note allocated to it"}]}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    x.provider.void_document(DocumentKind::Invoice, INVOICE, "cancelled").await.unwrap();
    let e = x.provider.void_document(DocumentKind::Invoice, INVOICE_B, "cancelled").await.unwrap_err();
    assert!(e.to_string().contains("payment or credit note allocated"), "{e}");
    x.check_spec().await;
}

#[tokio::test]
async fn items_are_found_by_code_created_tracked_updated_and_read() {
    let x = xero().await;
    mount_reference(&x).await;
    api("GET", "/Items")
        .and(query_param("where", "Code==\"MS-Champ-S\""))
        .respond_with(ok(json!({"Items": [{"ItemID": ITEM, "Code": "MS-Champ-S", "IsTrackedAsInventory": true, "QuantityOnHand": 7}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    batch("/Items")
        .and(body_partial_json(json!({"Items": [{"Code": "MS-Champ-S", "Name": "Champ Tee & Small", "IsSold": true, "IsPurchased": true,
            "SalesDetails": {"UnitPrice": 25, "AccountCode": "200"}, "PurchaseDetails": {"UnitPrice": 9.5, "COGSAccountCode": "310"},
            "InventoryAssetAccountCode": "630"}]})))
        .respond_with(ok(json!({"Items": [{"ItemID": ITEM, "Code": "MS-Champ-S", "IsTrackedAsInventory": true, "QuantityOnHand": 0}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    write("POST", &format!("/Items/{ITEM}"))
        .and(body_partial_json(json!({"Items": [{"ItemID": ITEM, "Code": "MS-Champ-S"}]})))
        .respond_with(ok(json!({"Items": [{"ItemID": ITEM, "Code": "MS-Champ-S", "IsTrackedAsInventory": true, "QuantityOnHand": 7}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    api("GET", &format!("/Items/{ITEM}"))
        .respond_with(ok(json!({"Items": [{"ItemID": ITEM, "Code": "MS-Champ-S", "IsTrackedAsInventory": true, "QuantityOnHand": 7}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    let p = SyncPolicy { sync_products: true, sync_stock: true, ..policy() };
    let prod = product(Some(10));
    let r = ItemRequest {
        product: &prod,
        kind: ItemKind::StockItem,
        policy: &p,
        idempotency_key: Some("product.upserted:2079"),
    };
    let found = x.provider.find_item(ItemKind::StockItem, "MS-Champ-S").await.unwrap().unwrap();
    assert_eq!((found.id.as_str(), found.quantity_in_stock), (ITEM, Some(dec!(7))));
    assert_eq!(x.provider.create_item(&r).await.unwrap().id, ITEM);
    assert_eq!(x.provider.update_item(ITEM, &r).await.unwrap().id, ITEM);
    assert_eq!(x.provider.get_item(ItemKind::StockItem, ITEM).await.unwrap().quantity_in_stock, Some(dec!(7)));
    x.check_spec().await;
}

#[tokio::test]
async fn stock_is_added_by_a_zero_value_bill_to_the_adjustment_contact() {
    let x = xero().await;
    mount_reference(&x).await;
    api("GET", "/Contacts")
        .and(query_param("where", "ContactNumber==\"B8-STOCKADJ\""))
        .respond_with(ok(
            json!({"Contacts": [{"ContactID": CONTACT, "ContactNumber": "B8-STOCKADJ", "ContactStatus": "ACTIVE"}]}),
        ))
        .expect(1)
        .mount(&x.server)
        .await;
    // 7 on hand, Magento says 10: +3 at cost 9.50 = 28.50 to inventory, −28.50 to COGS.
    batch("/Invoices")
        .and(body_partial_json(json!({"Invoices": [{"Type": "ACCPAY", "Contact": {"ContactID": CONTACT}, "LineAmountTypes": "NoTax", "Status": "AUTHORISED",
            "LineItems": [{"Quantity": 3, "UnitAmount": 9.50, "ItemCode": "MS-Champ-S", "AccountCode": "630"},
                          {"Description": "Inventory adjustment", "Quantity": 1, "UnitAmount": -28.50, "AccountCode": "310"}]}]})))
        .respond_with(ok(json!({"Invoices": [{"InvoiceID": INVOICE, "InvoiceNumber": "STOCK-MS-Champ-S-x", "Type": "ACCPAY", "Total": 0.00}]})))
        .expect(1)
        .mount(&x.server)
        .await;
    let prod = product(Some(10));
    let r = StockMovementRequest {
        item_id: ITEM,
        product: &prod,
        ledger_quantity: dec!(7),
        date: NaiveDate::from_ymd_opt(2026, 11, 22).unwrap(),
        idempotency_key: Some("product.upserted:2079"),
    };
    assert!(x.provider.post_stock_movement(&r).await.unwrap().is_some());
    // Equal quantities: nothing is posted.
    let same = StockMovementRequest { ledger_quantity: dec!(10), ..r };
    assert!(x.provider.post_stock_movement(&same).await.unwrap().is_none());
    x.check_spec().await;
}

// =============================================================================================
// 6. Secrets never show

/// The captured traces of the test binary.
struct Captured(Arc<Mutex<Vec<u8>>>);

#[tokio::test]
async fn secrets_never_show_in_debug_or_errors() {
    // Every trace of this test binary (this test's and those running alongside) is captured too.
    let captured = Captured(crate::support::global_traces());
    let server = MockServer::start().await;
    let clock = ManualClock::new(t0());
    let store = Arc::new(MemoryTokenStore::new(Some(tokens(ACCESS, REFRESH, -1))));
    let b = builder(&server, &store, &clock);
    let mut texts = vec![format!("{b:?}")];
    let provider = b.build().unwrap();
    texts.push(format!("{provider:?}"));
    texts.push(format!("{:?}", provider.tokens()));
    texts.push(format!("{:?}", tokens(ACCESS, REFRESH, 1)));
    token_endpoint(REFRESH).respond_with(token_answer(NEW_ACCESS, NEW_REFRESH)).expect(1).mount(&server).await;
    api_as(NEW_ACCESS, "GET", "/Organisation")
        .respond_with(
            ResponseTemplate::new(403)
                .set_body_json(json!({"Title": "Forbidden", "Detail": "AuthenticationUnsuccessful"})),
        )
        .mount(&server)
        .await;
    let e = provider.reference_data(false).await.unwrap_err();
    texts.push(format!("{e:?} {e}"));
    assert!(matches!(e, Error::Auth { reason: AuthFailure::AccessDenied, .. }), "{e:?}");
    // A batch answered 500 then found by look-up: warnings and retries are traced.
    let x = xero().await;
    mount_reference(&x).await;
    batch("/Invoices").respond_with(ResponseTemplate::new(503)).mount(&x.server).await;
    api("GET", "/Invoices")
        .respond_with(ok(json!({"Invoices": [invoice_answer(INVOICE, "MAG-000000123", json!(30.00), json!(30.00))]})))
        .mount(&x.server)
        .await;
    let p = policy();
    let inv = invoice("000000123", 1001);
    let items = BTreeMap::new();
    let r = InvoiceRequest {
        invoice: &inv,
        policy: &p,
        contact_id: CONTACT,
        items: &items,
        idempotency_key: "invoice.created:1001",
    };
    x.provider.post_invoice(&r).await.unwrap();
    for t in &texts {
        assert_no_secret(t);
    }
    {
        let traces = String::from_utf8_lossy(&captured.0.lock().unwrap()).into_owned();
        assert!(traces.contains("batch outcome unknown"), "the traces were captured: {traces}");
        assert_no_secret(&traces);
    }
    // The refreshed pair is in the store, as secrets.
    assert_eq!(store.load().await.unwrap().unwrap().access_token.expose_secret(), NEW_ACCESS);
}

// =============================================================================================
// 7. The checker itself

#[test]
fn the_spec_checker_catches_what_xero_would_refuse() {
    use xero_spec::{Sent, check};
    let sent = |method: &str, path: &str, query: &[(&str, &str)], body: Option<Value>| Sent {
        method: method.into(),
        path: path.into(),
        query: query.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
        headers: vec![("xero-tenant-id".into(), TENANT.into()), ("idempotency-key".into(), "k".into())],
        body,
    };
    let good = json!({"Invoices": [{"Type": "ACCREC", "Contact": {"ContactID": CONTACT}, "Date": "2026-11-22",
        "LineItems": [{"Description": "x", "Quantity": 1, "UnitAmount": 1.5, "AccountCode": "200", "TaxType": "OUTPUT2"}]}]});
    assert!(check(&sent("PUT", "/Invoices", &[("summarizeErrors", "false")], Some(good.clone()))).is_empty());
    let mut bad = good.clone();
    bad["Invoices"][0]["Total"] = json!(1.8); // readOnly
    bad["Invoices"][0]["Type"] = json!("SALE"); // not in the enum
    bad["Invoices"][0]["LineItems"][0]["UnitAmount"] = json!("1.50"); // money as a string
    bad["Invoices"][0]["Date"] = json!("/Date(1552262400000+0000)/"); // MS-JSON sent
    bad["Invoices"][0]["Nope"] = json!(1); // undeclared
    let problems = check(&sent("PUT", "/Invoices", &[("summarise", "false")], Some(bad)));
    assert_eq!(problems.len(), 6, "{problems:#?}");
    let mut no_tenant = sent("GET", "/Invoices", &[], None);
    no_tenant.headers.clear();
    assert_eq!(check(&no_tenant).len(), 1);
    assert_eq!(check(&sent("GET", "/Nowhere", &[], None)).len(), 1);
    let long_key = Sent {
        headers: vec![("xero-tenant-id".into(), TENANT.into()), ("idempotency-key".into(), "k".repeat(129))],
        ..sent("PUT", "/Invoices", &[], Some(good))
    };
    assert_eq!(check(&long_key).len(), 1);
}

// ---------------------------------------------------------------------------------------------
// The run audit: what a run's attempt keeps of its exchanges with Xero

#[tokio::test]
async fn a_runs_recorder_keeps_every_xero_exchange_without_headers_and_with_secrets_redacted() {
    use byte8_ledger_core::http::audit::{REDACTED, Recorder};
    let x = xero().await;
    mount_reference(&x).await;
    // An answer that (wrongly) echoes credentials: the audit keeps the answer, not the secrets.
    api("GET", "/Contacts")
        .respond_with(
            ResponseTemplate::new(400)
                .set_body_json(json!({"Message": "A validation exception occurred", "access_token": ACCESS,
                    "Detail": format!("Authorization: Bearer {ACCESS}")})),
        )
        .mount(&x.server)
        .await;
    let recorder = Recorder::new();
    let found = recorder
        .scope(async {
            x.provider.reference_data(true).await.expect("reference data");
            x.provider.find_contact("M5").await
        })
        .await;
    assert!(found.is_err(), "the 400 is an error: {found:?}");
    let got = recorder.exchanges();
    let mut paths: Vec<&str> = got.iter().map(|e| e.url.split('?').next().unwrap_or_default()).collect();
    paths.sort_unstable();
    assert_eq!(
        paths,
        [
            "/api.xro/2.0/Accounts",
            "/api.xro/2.0/Contacts",
            "/api.xro/2.0/Currencies",
            "/api.xro/2.0/Organisation",
            "/api.xro/2.0/TaxRates"
        ],
        "one exchange per request the server received: {got:?}"
    );
    assert_eq!(got.len(), x.server.received_requests().await.unwrap_or_default().len());
    let refused = got.iter().find(|e| e.status == Some(400)).expect("the refused request");
    assert_eq!(refused.method, "GET");
    assert!(refused.url.starts_with("/api.xro/2.0/Contacts?"), "path and query: {}", refused.url);
    let body: Value = serde_json::from_str(refused.response_body.as_deref().unwrap()).unwrap();
    assert_eq!(body["Message"], "A validation exception occurred");
    assert_eq!(body["access_token"], REDACTED);
    assert_eq!(body["Detail"], format!("Authorization: Bearer {REDACTED}"));
    let all = serde_json::to_string(&got).unwrap();
    assert_no_secret(&all);
    assert!(!all.contains("xero-tenant-id") && !all.contains("Idempotency"), "no header is kept: {all}");
}
