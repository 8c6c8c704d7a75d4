//! The Sage provider against the simulator, end to end over HTTP.
#![cfg(feature = "simulator")]

mod support;

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
    simulator::{DEMO_REFRESH_TOKEN, Fault, SageSimulator, SimConfig, SimServer},
};
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
