//! The world of the engine's end-to-end tests: the Sage simulator served on loopback, the real
//! `SageProvider` over HTTP, the SQLite store on a temporary file, a manual clock; and builders of
//! Magento events whose arithmetic is checked by hand in comments.
#![allow(dead_code)]

use std::{path::PathBuf, sync::Arc, time::Duration};

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet},
    clock::ManualClock,
    engine::{EngineConfig, SyncEngine},
    error::ErrorCode,
    http::{RateConfig, RetryConfig},
    outcome::{Outcome, SyncStatus},
    policy::SyncPolicy,
    providers::{AccountingProvider, sage::SageBuilder, sage::SageProvider},
    store::{Store, sqlite::SqliteStore},
};
use byte8_ledger_simulators::{
    DEMO_REFRESH_TOKEN, SageSimulator, SimBusiness, SimConfig, SimContact, SimDocument, SimServer,
};
use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use secrecy::SecretString;
use serde_json::{Value, json};

/// The simulator's demo business (GBP, multi-currency, Accounting Plus).
pub const BUSINESS: &str = "demo-business";

/// Everything a test drives.
#[derive(Debug)]
pub struct World {
    /// The simulated Sage.
    pub sim: SageSimulator,
    /// Its loopback server (stops when dropped).
    pub server: SimServer,
    /// The real provider over HTTP.
    pub sage: Arc<SageProvider>,
    /// The state database's folder.
    pub dir: tempfile::TempDir,
    /// The SQLite store on `dir/state.db`.
    pub store: Arc<SqliteStore>,
    /// The engine's clock.
    pub clock: ManualClock,
}

/// When every test starts.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 12, 0, 0).unwrap()
}

impl World {
    /// The demo business, empty.
    pub async fn new() -> Self {
        Self::with(SageSimulator::demo(SimConfig::default())).await
    }

    /// A world around `sim` (whose business may have been changed before any request).
    pub async fn with(sim: SageSimulator) -> Self {
        let server = sim.serve().await.expect("serve the simulator");
        let tokens = Arc::new(MemoryTokenStore::new(Some(TokenSet::from_refresh_token(SecretString::from(
            DEMO_REFRESH_TOKEN.to_owned(),
        )))));
        let sage = SageBuilder::new()
            .with_client_id("demo-client")
            .with_client_secret(SecretString::from("demo-secret".to_owned()))
            .with_business_id(BUSINESS)
            .with_base_url(server.base_url())
            .with_token_url(server.token_url())
            .with_token_store(tokens)
            .with_retry(RetryConfig {
                max_retries: 3,
                initial_backoff: Duration::from_millis(2),
                max_backoff: Duration::from_millis(20),
                retry_timeout: Duration::from_secs(10),
            })
            .with_rate(RateConfig { requests_per_minute: 0, burst: 0 })
            .build()
            .expect("build the Sage provider");
        let dir = tempfile::tempdir().expect("a temporary folder");
        let store = Arc::new(SqliteStore::open(dir.path().join("state.db"), None).await.expect("open the state"));
        Self { sim, server, sage: Arc::new(sage), dir, store, clock: ManualClock::new(t0()) }
    }

    /// The state database file.
    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    /// An engine over the plain provider with `policy`.
    pub fn engine(&self, policy: SyncPolicy) -> SyncEngine {
        self.engine_on(Arc::clone(&self.sage) as Arc<dyn AccountingProvider>, policy)
    }

    /// An engine over `provider` with `policy`.
    pub fn engine_on(&self, provider: Arc<dyn AccountingProvider>, policy: SyncPolicy) -> SyncEngine {
        SyncEngine::new(
            provider,
            Arc::clone(&self.store) as Arc<dyn Store>,
            BUSINESS,
            policy,
            Arc::new(self.clock.clone()),
        )
    }

    /// An engine with `config`.
    pub fn engine_with(&self, policy: SyncPolicy, config: EngineConfig) -> SyncEngine {
        self.engine(policy).with_config(config)
    }

    /// The store as the engine sees it.
    pub fn store(&self) -> Arc<dyn Store> {
        Arc::clone(&self.store) as Arc<dyn Store>
    }

    /// A fresh store over the same database file (a restarted process).
    pub async fn reopen_store(&mut self) {
        self.store = Arc::new(SqliteStore::open(self.db_path(), None).await.expect("reopen the state"));
    }

    /// What Sage holds now.
    pub fn biz(&self) -> SimBusiness {
        self.sim.business(BUSINESS).expect("the demo business")
    }

    /// Requests Sage served for `key` (`"POST /sales_invoices"`).
    pub fn served(&self, key: &str) -> u64 {
        self.sim.requests().get(key).copied().unwrap_or(0)
    }

    /// Requests other than GET Sage served.
    pub fn writes(&self) -> u64 {
        self.sim.requests().iter().filter(|(k, _)| !k.starts_with("GET")).map(|(_, n)| *n).sum()
    }
}

// ---- what Sage holds ------------------------------------------------------------------------

/// The live contact holding `reference`.
#[track_caller]
pub fn contact<'a>(b: &'a SimBusiness, reference: &str) -> &'a SimContact {
    let found: Vec<&SimContact> =
        b.contacts.iter().filter(|c| !c.deleted && c.reference.as_deref() == Some(reference)).collect();
    assert_eq!(found.len(), 1, "one contact {reference} in {:?}", refs(b));
    found[0]
}

/// The references of every contact.
pub fn refs(b: &SimBusiness) -> Vec<String> {
    b.contacts.iter().map(|c| c.reference.clone().unwrap_or_default()).collect()
}

/// The one invoice with `reference`.
#[track_caller]
pub fn invoice<'a>(b: &'a SimBusiness, reference: &str) -> &'a SimDocument {
    let found: Vec<&SimDocument> = b.invoices.iter().filter(|d| d.reference == reference).collect();
    assert_eq!(found.len(), 1, "one invoice {reference}");
    found[0]
}

/// The one credit note with `reference`.
#[track_caller]
pub fn credit_note<'a>(b: &'a SimBusiness, reference: &str) -> &'a SimDocument {
    let found: Vec<&SimDocument> = b.credit_notes.iter().filter(|d| d.reference == reference).collect();
    assert_eq!(found.len(), 1, "one credit note {reference}");
    found[0]
}

/// A JSON amount (string or number) as a decimal.
#[track_caller]
pub fn d(v: &Value) -> Decimal {
    match v {
        Value::String(s) => s.parse().expect("a decimal"),
        Value::Number(n) => n.to_string().parse().expect("a decimal"),
        other => panic!("not an amount: {other}"),
    }
}

/// A decimal from text.
#[track_caller]
pub fn dec(s: &str) -> Decimal {
    s.parse().expect("a decimal")
}

// ---- outcomes -------------------------------------------------------------------------------

/// Asserts `synced` and returns the ledger id.
#[track_caller]
pub fn synced(o: &Outcome) -> String {
    assert_eq!(o.sync_status, SyncStatus::Synced, "{o:#?}");
    assert_eq!((o.skip_reason.as_deref(), o.error_code), (None, None), "{o:#?}");
    o.provider_entity_id.clone().expect("a ledger id")
}

/// Asserts `skipped` with `reason`.
#[track_caller]
pub fn skipped(o: &Outcome, reason: &str) {
    assert_eq!(o.sync_status, SyncStatus::Skipped, "{o:#?}");
    assert_eq!(o.skip_reason.as_deref(), Some(reason), "{o:#?}");
    assert_eq!(o.provider_entity_id, None, "{o:#?}");
}

/// Asserts `failed` with `code` and returns the message.
#[track_caller]
pub fn failed(o: &Outcome, code: ErrorCode) -> String {
    assert_eq!(o.sync_status, SyncStatus::Failed, "{o:#?}");
    assert_eq!(o.error_code, Some(code), "{o:#?}");
    assert_eq!(o.provider_entity_id, None, "{o:#?}");
    o.message.clone().expect("a message")
}

// ---- events ---------------------------------------------------------------------------------

/// One event line: `{event}:{id}` as the key, the entity inline.
pub fn event(name: &str, id: u64, website_id: u32, store_id: u32, payload: Value, entity: &Value) -> String {
    json!({
        "event": name, "idempotency_key": format!("{name}:{id}"), "magento_entity_id": id,
        "website_id": website_id, "store_id": store_id, "occurred_at": "2026-11-22T10:00:00Z",
        "payload": payload, "entity": entity,
    })
    .to_string()
}

/// The `invoice.created` line of an invoice entity (website, store and `paid` from the entity).
pub fn invoice_created(inv: &Value) -> String {
    event(
        "invoice.created",
        inv["magento_id"].as_u64().expect("magento_id"),
        u32::try_from(inv["website_id"].as_u64().unwrap_or(0)).unwrap_or(0),
        u32::try_from(inv["store_id"].as_u64().unwrap_or(0)).unwrap_or(0),
        json!({"increment_id": inv["increment_id"], "paid": inv["state"] == "paid"}),
        inv,
    )
}

/// The `invoice.paid` line of an invoice paid by `method` (the whole grand total).
pub fn invoice_paid(inv: &Value, method: &str) -> String {
    let id = inv["magento_id"].as_u64().expect("magento_id");
    let payment = json!({
        "magento_id": id, "invoice_id": id, "invoice_increment_id": inv["increment_id"], "method": method,
        "currency": inv["currency"], "amount": inv["grand_total"], "captured_at": "2026-11-21T09:00:00Z",
        "gateway_txn_id": "txn-1",
    });
    event("invoice.paid", id, 1, 1, json!({"increment_id": inv["increment_id"]}), &payment)
}

/// The `creditmemo.created` line of a credit memo entity.
pub fn creditmemo_created(memo: &Value) -> String {
    let id = memo["magento_id"].as_u64().expect("magento_id");
    event("creditmemo.created", id, 1, 1, json!({"increment_id": memo["increment_id"]}), memo)
}

/// The `customer.upserted` line of a contact.
pub fn customer_upserted(c: &Value, occurred_at: &str) -> String {
    let id = c["magento_id"].as_u64().expect("magento_id");
    let mut v: Value = serde_json::from_str(&event("customer.upserted", id, 1, 0, json!({}), c)).unwrap();
    v["occurred_at"] = json!(occurred_at);
    v.to_string()
}

/// The `product.upserted` line of a product.
pub fn product_upserted(p: &Value) -> String {
    event("product.upserted", p["magento_id"].as_u64().expect("magento_id"), 0, 0, json!({}), p)
}

/// A UK address.
pub fn gb_address(kind: &str) -> Value {
    match kind {
        "shipping" => {
            json!({"kind": "shipping", "street": ["2 Market Place"], "city": "Leeds", "postcode": "LS1 6AA", "country_id": "GB"})
        }
        _ => {
            json!({"kind": "billing", "street": ["1 High Street"], "city": "London", "postcode": "SW1A 1AA", "country_id": "GB"})
        }
    }
}

/// A registered customer with a UK billing address.
pub fn registered(id: u64, first: &str, last: &str, company: Option<&str>) -> Value {
    json!({
        "magento_id": id, "email": format!("{}@example.com", first.to_lowercase()), "first_name": first,
        "last_name": last, "company": company, "phone": "020 7946 0018", "website_id": 1,
        "addresses": [gb_address("billing")],
    })
}

/// A guest buyer (Magento's synthetic contact: id 0, website 0).
pub fn guest(email: &str, first: &str, last: &str) -> Value {
    json!({"magento_id": 0, "email": email, "first_name": first, "last_name": last, "website_id": 0, "addresses": []})
}

/// Magento's `base_to_order_rate` of the demo currencies (order = base × rate).
pub fn rate_of(currency: &str) -> Value {
    match currency {
        "EUR" => json!(1.17),
        "USD" => json!(1.27),
        "CAD" => json!(1.75),
        "CHF" => json!(1.12),
        _ => json!(1.0),
    }
}

/// An open invoice: 2 × WIDGET at 10.00 with 20 % VAT (net 20.00, tax 4.00, line total 24.00),
/// shipping 5.00 with 1.00 VAT; tax_amount = 4.00 + 1.00 = 5.00; grand total = 20.00 + 4.00 +
/// 5.00 + 1.00 = 30.00. Increment id = the id on 9 digits.
pub fn invoice_entity(id: u64, currency: &str, customer: &Value) -> Value {
    json!({
        "magento_id": id, "increment_id": format!("{id:09}"), "order_id": id + 5000,
        "order_increment_id": format!("3{id:08}"), "website_id": 1, "store_id": 1, "currency": currency,
        "state": "open", "customer": customer,
        "lines": [{"sku": "WIDGET", "name": "Widget", "qty": 2, "unit_price": "10.00", "line_subtotal": "20.00",
                   "line_tax": "4.00", "line_total": "24.00", "tax_rate": 0.2, "product_type": "simple"}],
        "subtotal": "20.00", "tax_amount": "5.00", "shipping_amount": "5.00", "shipping_tax_amount": "1.00",
        "discount_amount": "0.00", "grand_total": "30.00", "created_at": "2026-11-20T10:00:00Z",
        "payment_method": "checkmo", "billing_address": gb_address("billing"),
        "shipping_address": gb_address("shipping"), "po_number": null, "base_to_order_rate": rate_of(currency),
    })
}

/// A smaller open invoice: 1 × WIDGET at 10.00 + 2.00 VAT (20 %), no shipping; subtotal 10.00,
/// tax 2.00, grand total 12.00.
pub fn small_invoice_entity(id: u64, currency: &str, customer: &Value) -> Value {
    let mut v = invoice_entity(id, currency, customer);
    v["lines"] = json!([{"sku": "WIDGET", "name": "Widget", "qty": 1, "unit_price": "10.00", "line_subtotal": "10.00",
                         "line_tax": "2.00", "line_total": "12.00", "tax_rate": 0.2, "product_type": "simple"}]);
    v["subtotal"] = json!("10.00");
    v["tax_amount"] = json!("2.00");
    v["shipping_amount"] = json!("0.00");
    v["shipping_tax_amount"] = json!("0.00");
    v["grand_total"] = json!("12.00");
    v
}

/// A credit memo refunding `qty` widgets of `invoice` (each 10.00 + 2.00 VAT), no shipping, no
/// adjustment: grand total = qty × 12.00. Increment id = the id on 9 digits.
pub fn credit_memo_entity(id: u64, invoice: &Value, qty: u32) -> Value {
    let net = Decimal::from(qty) * dec("10.00");
    let tax = Decimal::from(qty) * dec("2.00");
    json!({
        "magento_id": id, "increment_id": format!("{id:09}"), "invoice_id": invoice["magento_id"],
        "invoice_increment_id": invoice["increment_id"], "website_id": 1, "currency": invoice["currency"],
        "customer": invoice["customer"],
        "lines": [{"sku": "WIDGET", "name": "Widget", "qty": qty, "unit_price": "10.00",
                   "line_subtotal": format!("{net:.2}"), "line_tax": format!("{tax:.2}"),
                   "line_total": format!("{:.2}", net + tax), "tax_rate": 0.2, "product_type": "simple"}],
        "adjustment_positive": "0", "adjustment_negative": "0", "grand_total": format!("{:.2}", net + tax),
        "shipping_amount": "0", "shipping_tax_amount": "0", "reason": "Returned",
        "created_at": "2026-11-22T09:00:00Z", "invoice_created_at": invoice["created_at"],
        "base_to_order_rate": invoice["base_to_order_rate"],
    })
}

/// A product.
pub fn product_entity(id: u64, sku: &str, product_type: &str, stock_qty: Option<i64>, manage_stock: bool) -> Value {
    json!({
        "magento_id": id, "sku": sku, "name": format!("{sku} name"), "product_type": product_type, "price": 25,
        "cost": 9.5, "stock_qty": stock_qty, "manage_stock": manage_stock, "tax_class": "2", "website_ids": [1],
    })
}
