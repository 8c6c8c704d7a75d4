//! The Sage read endpoints reconciliation uses (`AccountingProvider::list_entries`), against
//! wiremock: `GET /sales_invoices`, `/sales_credit_notes` and `/contact_payments` with
//! `from_date` / `to_date`, full attributes, 200 a page and `$next` followed.

use std::sync::Arc;

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet, TokenStore},
    clock::ManualClock,
    http::{RateConfig, RetryConfig},
    providers::{AccountingProvider, EntryKind, sage::SageBuilder},
};
use chrono::{NaiveDate, TimeZone, Utc};
use rust_decimal_macros::dec;
use secrecy::SecretString;
use serde_json::{Value, json};
use wiremock::{
    Mock, MockBuilder, MockServer, ResponseTemplate,
    matchers::{header, method, path, query_param, query_param_is_missing},
};

const BIZ: &str = "biz-1";
const ACCESS: &str = "access-1";

async fn sage() -> (MockServer, byte8_ledger_core::providers::sage::SageProvider) {
    let server = MockServer::start().await;
    let now = Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap();
    let store: Arc<dyn TokenStore> = Arc::new(MemoryTokenStore::new(Some(TokenSet {
        access_token: SecretString::from(ACCESS.to_owned()),
        refresh_token: SecretString::from("refresh-1".to_owned()),
        access_expires_at: now + chrono::Duration::minutes(60),
        refresh_expires_at: None,
        issued_at: None,
    })));
    let provider = SageBuilder::new()
        .with_client_id("client")
        .with_client_secret(SecretString::from("secret".to_owned()))
        .with_business_id(BIZ)
        .with_base_url(format!("{}/v3.1", server.uri()))
        .with_token_url(format!("{}/token", server.uri()))
        .with_token_store(store)
        .with_retry(RetryConfig { max_retries: 0, ..RetryConfig::default() })
        .with_rate(RateConfig { requests_per_minute: 0, burst: 0 })
        .with_clock(Arc::new(ManualClock::new(now)))
        .build()
        .unwrap();
    (server, provider)
}

/// A list request for November 2026 with the headers every Sage call carries.
fn listed(resource: &str) -> MockBuilder {
    Mock::given(method("GET"))
        .and(path(format!("/v3.1{resource}")))
        .and(header("authorization", format!("Bearer {ACCESS}")))
        .and(header("x-business", BIZ))
        .and(query_param("from_date", "2026-11-01"))
        .and(query_param("to_date", "2026-11-30"))
        .and(query_param("attributes", "all"))
}

fn page(items: Vec<Value>, next: Option<&str>) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(
        json!({"$total": items.len(), "$page": 1, "$next": next, "$back": null, "$itemsPerPage": 200, "$items": items}),
    )
}

fn doc(id: &str, reference: &str, currency: &str, net: &str, tax: &str, total: &str, status: &str) -> Value {
    json!({"id": id, "displayed_as": format!("SI-{id}"), "reference": reference, "date": "2026-11-20",
        "currency": {"id": currency, "displayed_as": currency}, "net_amount": net, "tax_amount": tax,
        "total_amount": total, "outstanding_amount": total, "status": {"id": status, "displayed_as": status}})
}

fn nov() -> (NaiveDate, NaiveDate) {
    (NaiveDate::from_ymd_opt(2026, 11, 1).unwrap(), NaiveDate::from_ymd_opt(2026, 11, 30).unwrap())
}

#[tokio::test]
async fn invoices_are_read_by_date_across_pages_with_their_amounts() {
    let (server, sage) = sage().await;
    listed("/sales_invoices")
        .and(query_param_is_missing("page"))
        .respond_with(page(
            vec![doc("i1", "MAG-000000101", "GBP", "46.66", "8.33", "54.99", "UNPAID")],
            Some("/sales_invoices?page=2&from_date=2026-11-01&to_date=2026-11-30&attributes=all&items_per_page=200"),
        ))
        .expect(1)
        .mount(&server)
        .await;
    listed("/sales_invoices")
        .and(query_param("page", "2"))
        .respond_with(page(vec![doc("i2", "MAG-000000102", "EUR", "585.00", "0.00", "585.00", "VOID")], None))
        .expect(1)
        .mount(&server)
        .await;
    let (from, to) = nov();
    let got = sage.list_entries(EntryKind::Invoice, from, to).await.unwrap();
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].id, "i1");
    assert_eq!(got[0].kind, EntryKind::Invoice);
    assert_eq!(got[0].reference.as_deref(), Some("MAG-000000101"));
    assert_eq!(got[0].currency.as_deref(), Some("GBP"));
    assert_eq!(got[0].date, NaiveDate::from_ymd_opt(2026, 11, 20));
    assert_eq!((got[0].net, got[0].vat, got[0].gross), (Some(dec!(46.66)), Some(dec!(8.33)), dec!(54.99)));
    assert!(!got[0].voided);
    assert!(got[1].voided, "VOID status");
    assert_eq!(got[1].gross, dec!(585));
}

#[tokio::test]
async fn credit_notes_come_from_their_own_endpoint() {
    let (server, sage) = sage().await;
    listed("/sales_credit_notes")
        .respond_with(page(vec![doc("c1", "MAG-000000201", "GBP", "20.83", "4.17", "25.00", "PAID")], None))
        .expect(1)
        .mount(&server)
        .await;
    let (from, to) = nov();
    let got = sage.list_entries(EntryKind::CreditNote, from, to).await.unwrap();
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].kind, EntryKind::CreditNote);
    assert_eq!((got[0].net, got[0].vat, got[0].gross), (Some(dec!(20.83)), Some(dec!(4.17)), dec!(25)));
}

#[tokio::test]
async fn receipts_report_what_is_left_unallocated_and_refunds_are_not_receipts() {
    let (server, sage) = sage().await;
    let receipt = |id: &str, total: &str, allocated: &[&str], on_account: Option<&str>, kind: &str| {
        json!({"id": id, "reference": format!("MAG-{id}"), "date": "2026-11-21",
            "transaction_type": {"id": kind}, "currency": {"id": "GBP"}, "total_amount": total,
            "allocated_artefacts": allocated.iter().map(|a| json!({"artefact": {"id": "x"}, "amount": a})).collect::<Vec<_>>(),
            "payment_on_account": on_account.map(|o| json!({"id": "poa", "outstanding_amount": o}))})
    };
    listed("/contact_payments")
        .and(query_param("transaction_type_id", "CUSTOMER_RECEIPT"))
        .respond_with(page(
            vec![
                receipt("p1", "54.99", &["54.99"], None, "CUSTOMER_RECEIPT"),
                // Sage's own figure for money on account wins.
                receipt("p2", "100.00", &["60.00"], Some("40.00"), "CUSTOMER_RECEIPT"),
                // Without it: what the allocations do not cover.
                receipt("p3", "10.00", &["7.50"], None, "CUSTOMER_RECEIPT"),
                receipt("r1", "5.00", &["5.00"], None, "CUSTOMER_REFUND"),
            ],
            None,
        ))
        .expect(1)
        .mount(&server)
        .await;
    let (from, to) = nov();
    let got = sage.list_entries(EntryKind::Payment, from, to).await.unwrap();
    let ids: Vec<&str> = got.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["p1", "p2", "p3"]);
    assert_eq!(got.iter().map(|e| e.unallocated).collect::<Vec<_>>(), [dec!(0), dec!(40), dec!(2.5)]);
    assert_eq!(got[1].gross, dec!(100));
    assert_eq!((got[0].net, got[0].vat), (None, None));
    assert_eq!(got[2].reference.as_deref(), Some("MAG-p3"));
}

#[tokio::test]
async fn a_malformed_amount_or_date_is_an_error_not_a_panic() {
    let (server, sage) = sage().await;
    listed("/sales_invoices")
        .respond_with(page(vec![doc("i1", "R", "GBP", "1.00", "0.20", "twelve", "UNPAID")], None))
        .mount(&server)
        .await;
    let mut bad_date = doc("c1", "R", "GBP", "1.00", "0.20", "1.20", "UNPAID");
    bad_date["date"] = json!("20/11/2026");
    listed("/sales_credit_notes").respond_with(page(vec![bad_date], None)).mount(&server).await;
    let (from, to) = nov();
    assert!(sage.list_entries(EntryKind::Invoice, from, to).await.is_err());
    let e = sage.list_entries(EntryKind::CreditNote, from, to).await.unwrap_err();
    assert!(e.to_string().contains("20/11/2026"), "{e}");
}
