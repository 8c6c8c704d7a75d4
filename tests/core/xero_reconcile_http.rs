//! Xero's read endpoints for reconciliation (`AccountingProvider::list_entries`) against
//! wiremock: the `where` clause by type and date, `page=` followed until a page holds fewer than
//! 100, amounts and statuses read, malformed answers refused without a panic.
#![cfg(feature = "xero")]

use std::sync::Arc;

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet, TokenStore},
    clock::ManualClock,
    http::RetryConfig,
    providers::{
        AccountingProvider, EntryKind,
        xero::{XeroBuilder, XeroLimits, XeroProvider},
    },
};
use chrono::{NaiveDate, TimeZone, Utc};
use rust_decimal_macros::dec;
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockBuilder, MockServer, ResponseTemplate,
    matchers::{header, method, path, query_param},
};

const TENANT: &str = "7a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d";
const ACCESS: &str = "xero-access-1";

async fn xero() -> (MockServer, XeroProvider) {
    let server = MockServer::start().await;
    let now = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::new(Some(TokenSet {
        access_token: SecretString::from(ACCESS.to_owned()),
        refresh_token: SecretString::from("refresh-1".to_owned()),
        access_expires_at: now + chrono::Duration::minutes(30),
        refresh_expires_at: None,
        issued_at: None,
    })));
    let provider = XeroBuilder::new()
        .with_client_id("client")
        .with_client_secret(SecretString::from("secret".to_owned()))
        .with_tenant_id(TENANT)
        .with_base_url(format!("{}/api.xro/2.0", server.uri()))
        .with_token_url(format!("{}/connect/token", server.uri()))
        .with_connections_url(format!("{}/connections", server.uri()))
        .with_token_store(store)
        .with_retry(RetryConfig { max_retries: 0, ..RetryConfig::default() })
        .with_limits(XeroLimits::unlimited())
        .with_clock(Arc::new(ManualClock::new(now)))
        .build()
        .unwrap();
    (server, provider)
}

fn listed(resource: &str, filter: &str, page: &str) -> MockBuilder {
    Mock::given(method("GET"))
        .and(path(format!("/api.xro/2.0{resource}")))
        .and(header("authorization", format!("Bearer {ACCESS}")))
        .and(header("xero-tenant-id", TENANT))
        .and(query_param("where", format!("{filter} && Date>=DateTime(2026, 11, 01) && Date<=DateTime(2026, 11, 30)")))
        .and(query_param("page", page))
}

fn invoice(n: usize, status: &str) -> Value {
    json!({"InvoiceID": format!("inv-{n}"), "InvoiceNumber": format!("MAG-{n:09}"), "Type": "ACCREC",
        "Date": "/Date(1795132800000+0000)/", "Status": status, "CurrencyCode": "GBP",
        "SubTotal": 25.0, "TotalTax": 5.0, "Total": 30.0})
}

fn nov() -> (NaiveDate, NaiveDate) {
    (NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(), NaiveDate::from_ymd_opt(2026, 11, 30).unwrap())
}

#[tokio::test]
async fn invoices_are_read_by_type_and_date_page_after_page() {
    let (server, xero) = xero().await;
    let full: Vec<Value> = (0..100).map(|n| invoice(n, "AUTHORISED")).collect();
    listed("/Invoices", "Type==\"ACCREC\"", "1")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Invoices": full})))
        .expect(1)
        .mount(&server)
        .await;
    listed("/Invoices", "Type==\"ACCREC\"", "2")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Invoices": [invoice(100, "VOIDED")]})))
        .expect(1)
        .mount(&server)
        .await;
    let (from, to) = nov();
    let got = xero.list_entries(EntryKind::Invoice, from, to).await.unwrap();
    assert_eq!(got.len(), 101);
    let first = &got[0];
    assert_eq!((first.id.as_str(), first.reference.as_deref()), ("inv-0", Some("MAG-000000000")));
    assert_eq!((first.net, first.vat, first.gross), (Some(dec!(25)), Some(dec!(5)), dec!(30)));
    assert_eq!(first.currency.as_deref(), Some("GBP"));
    // 1795132800000 ms = 2026-11-20T00:00:00Z.
    assert_eq!(first.date, NaiveDate::from_ymd_opt(2026, 11, 20));
    assert!(!first.voided);
    assert!(got[100].voided);
}

#[tokio::test]
async fn credit_notes_and_receipts_use_their_own_types() {
    let (server, xero) = xero().await;
    listed("/CreditNotes", "Type==\"ACCRECCREDIT\"", "1")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"CreditNotes": [
            {"CreditNoteID": "cn-1", "CreditNoteNumber": "MAG-000000201", "Date": "/Date(1795132800000+0000)/",
             "Status": "PAID", "CurrencyCode": "EUR", "SubTotal": 10.0, "TotalTax": 2.0, "Total": 12.0}]})))
        .expect(1)
        .mount(&server)
        .await;
    listed("/Payments", "PaymentType==\"ACCRECPAYMENT\"", "1")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Payments": [
            {"PaymentID": "p-1", "Reference": "MAG-000000101", "Date": "/Date(1795132800000+0000)/", "Amount": 54.99,
             "Status": "AUTHORISED", "Invoice": {"InvoiceID": "inv-1", "CurrencyCode": "GBP"}},
            {"PaymentID": "p-2", "Reference": "MAG-000000102", "Date": "/Date(1795132800000+0000)/", "Amount": 1.0,
             "Status": "DELETED"}]})))
        .expect(1)
        .mount(&server)
        .await;
    let (from, to) = nov();
    let notes = xero.list_entries(EntryKind::CreditNote, from, to).await.unwrap();
    assert_eq!(notes.len(), 1);
    assert_eq!(
        (notes[0].kind, notes[0].currency.as_deref(), notes[0].gross),
        (EntryKind::CreditNote, Some("EUR"), dec!(12))
    );
    let pays = xero.list_entries(EntryKind::Payment, from, to).await.unwrap();
    assert_eq!(pays.len(), 2);
    assert_eq!((pays[0].gross, pays[0].currency.as_deref(), pays[0].unallocated), (dec!(54.99), Some("GBP"), dec!(0)));
    assert!(pays[1].voided, "a deleted payment is not counted");
}

#[tokio::test]
async fn a_malformed_amount_or_date_is_an_error_not_a_panic() {
    let (server, xero) = xero().await;
    let mut bad = invoice(1, "AUTHORISED");
    bad["Total"] = json!("thirty");
    listed("/Invoices", "Type==\"ACCREC\"", "1")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"Invoices": [bad]})))
        .mount(&server)
        .await;
    let mut bad_date = invoice(2, "AUTHORISED");
    bad_date["CreditNoteID"] = json!("cn-2");
    bad_date["Date"] = json!("yesterday");
    listed("/CreditNotes", "Type==\"ACCRECCREDIT\"", "1")
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"CreditNotes": [bad_date]})))
        .mount(&server)
        .await;
    let (from, to) = nov();
    let e = xero.list_entries(EntryKind::Invoice, from, to).await.unwrap_err();
    assert!(e.to_string().contains("Total"), "{e}");
    let e = xero.list_entries(EntryKind::CreditNote, from, to).await.unwrap_err();
    assert!(e.to_string().contains("yesterday"), "{e}");
}
