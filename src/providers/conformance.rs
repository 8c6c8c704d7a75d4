//! The public conformance suite: every behaviour of a ledger that the sync engine relies on, one
//! async function each, for any [`AccountingProvider`] (feature `conformance`).
//!
//! Each behaviour takes the provider as `&dyn AccountingProvider` and a [`Fixture`], posts what it
//! needs with references derived from the fixture's run id, and **panics with a message naming the
//! behaviour and the broken rule** when the provider does not behave. Behaviours that need a
//! capability the business lacks ([`Capabilities`]) skip that part and say so on standard error.
//! [`run_all`] runs them in order.
//!
//! | behaviour | checks | needs |
//! |---|---|---|
//! | [`reference_data_and_policy`] | reference data is served (and refreshed), the fixture's policy validates against it | |
//! | [`contact_round_trip`] | create → find by exact reference → same id and currency; unknown or partial reference → `None`; update keeps id and reference | |
//! | [`duplicate_contact_reference_is_taken`] | a second contact with a taken reference is refused, as [`is_reference_taken`] recognises | |
//! | [`resolve_contact_adopts_and_moves_on`] | [`resolve_contact`](AccountingProviderExt::resolve_contact) adopts an existing contact, moves to the next candidate for another currency or another guest | multi-currency for the currency part |
//! | [`invoice_round_trip`] | total = `grand_total`, outstanding = total, found by exact reference, read by id | |
//! | [`payment_settles_invoice`] | a payment with its allocation leaves nothing outstanding and is found again by contact, reference and date | |
//! | [`credit_note_allocation`] | a credit note on the invoice's contact totals the memo; allocating it reduces what is outstanding; allocating more than outstanding, or against a settled invoice, is refused | credit notes, allocations |
//! | [`find_or_post_invoice_posts_once`] | a second [`find_or_post_invoice`](AccountingProviderExt::find_or_post_invoice) finds the first document | |
//! | [`currency_lock`] | an invoice in a currency other than its contact's is refused | contact per currency, a foreign currency |
//! | [`unknown_ids_are_not_found`] | unknown ids are [`ErrorCode::NotFound`] | |
//! | [`items_round_trip`] | products and services: create, find by code, update, read by id | products |
//! | [`stock_movements`] | a movement brings `quantity_in_stock` to Magento's; a zero delta posts nothing | stock |
//! | [`void_document`] | a voided invoice reads as voided, is still found by reference, and cannot be paid | |
//! | [`batches_answer_each_item_in_place`] | `find_contacts` and `post_invoices` answer one result per item, in order; an item the ledger refuses fails alone and hides none of the others | |
//!
//! # Running it against your provider
//!
//! Use a fresh test business (a sandbox), never a live one: the suite posts contacts, invoices,
//! credit notes, payments, items and stock movements, and cannot delete them. Build a [`Fixture`]
//! from a [`SyncPolicy`] whose ids exist in that business and a run id that is new for every run
//! (the suite derives short contact and document references from it, so runs never clash), then
//! call [`run_all`], or each behaviour from its own test so that a failure names it:
//!
//! ```no_run
//! use byte8_ledger_core::{
//!     money::Currency,
//!     policy::SyncPolicy,
//!     providers::{AccountingProvider, conformance::{self, Fixture}},
//! };
//!
//! fn fixture() -> Fixture {
//!     let policy = SyncPolicy::from_json(
//!         r#"{
//!             "default_ledger_account_id": "4000",
//!             "default_purchase_ledger_account_id": "5000",
//!             "default_tax_rate_id": "STANDARD",
//!             "tax_rate_map": {"20": "STANDARD", "0": "ZERO"},
//!             "default_bank_account_id": "1200",
//!             "invoice_number_prefix": "CF-"
//!         }"#,
//!     )
//!     .expect("a valid policy");
//!     // A new run id every time: the time is enough.
//!     let run = format!("{:?}", std::time::SystemTime::now());
//!     Fixture::new(policy, run).with_foreign_currency(Some(Currency::EUR)).with_buyer_postcode("SW1A 1AA")
//! }
//!
//! # fn my_provider() -> Box<dyn AccountingProvider> { unimplemented!() }
//! // In your crate's tests (`byte8-ledger-core` with `features = ["conformance"]`):
//! #[tokio::test]
//! async fn my_ledger_conforms() {
//!     let provider = my_provider();
//!     conformance::run_all(provider.as_ref(), &fixture()).await;
//! }
//!
//! #[tokio::test]
//! async fn my_ledger_invoice_round_trip() {
//!     conformance::invoice_round_trip(my_provider().as_ref(), &fixture()).await;
//! }
//! ```
//!
//! The in-memory provider runs it in `tests/conformance_memory.rs` with [`Fixture::demo_uk`].
//! Each behaviour uses its own references: running one behaviour twice with the same fixture
//! against the same business collides with itself (use a new run id).

use std::collections::BTreeMap;

use chrono::{DateTime, Days, NaiveDate, Utc};
use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use super::{
    AccountingProvider, AccountingProviderExt, AllocationRequest, Capabilities, ContactFor, ContactRecord,
    ContactRequest, CreditNoteRequest, DocumentRecord, InvoiceRequest, ItemKind, ItemRequest, PaymentRequest,
    StockMovementRequest, TransactionKind, TransactionLookup, TransactionRecord, is_reference_taken,
};
use crate::{
    canonical::{
        Address, AddressKind, InvoiceState, MagentoContact, MagentoCreditMemo, MagentoInvoice, MagentoInvoiceLine,
        MagentoPayment, MagentoProduct,
    },
    error::{ErrorCode, Result},
    identity::ContactSubject,
    money::{Currency, RoundingPolicy, parse_decimal},
    plan::{DocumentKind, fit_reference},
    policy::SyncPolicy,
    reference::ReferenceData,
    tax::rates::tax_at,
};

/// What the suite needs to know about the business under test. Build it with [`Fixture::new`]
/// (or [`Fixture::demo_uk`] for the demo business) and adjust it with the `with_*` methods.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Fixture {
    /// A policy valid for the business's reference data: a sales ledger account, a purchase
    /// account (when the business has products), a tax rate for [`tax_percent`](Self::tax_percent)
    /// in `tax_rate_map` (or as `default_tax_rate_id`).
    pub policy: SyncPolicy,
    /// Unique for every run against the same business; contact, document and item references are
    /// derived from it ([`tag`](Self::tag)).
    pub run: String,
    /// The bank account payments go to.
    pub bank_account_id: String,
    /// The domestic tax percentage the suite's documents charge (`20` for 20 %).
    pub tax_percent: Decimal,
    /// The buyer's country; `None` means the business's own (domestic sales).
    pub buyer_country: Option<String>,
    /// The buyer's postcode.
    pub buyer_postcode: Option<String>,
    /// A currency other than the base currency, for the currency-lock and multi-currency parts;
    /// `None` skips them.
    pub foreign_currency: Option<Currency>,
    /// The date of every document, payment and movement.
    pub date: NaiveDate,
}

impl Fixture {
    /// A fixture from `policy` and a run id new for every run: payments go to the policy's
    /// `default_bank_account_id`, documents charge the highest percentage of its `tax_rate_map`
    /// (0 when it is empty), buyers are domestic, there is no foreign currency, and the date is
    /// today (UTC).
    pub fn new(policy: SyncPolicy, run: impl Into<String>) -> Self {
        let tax_percent =
            policy.tax_rate_map.keys().filter_map(|k| parse_decimal(k).ok()).max().unwrap_or(Decimal::ZERO);
        Self {
            bank_account_id: policy.default_bank_account_id.clone().unwrap_or_default(),
            policy,
            run: run.into(),
            tax_percent,
            buyer_country: None,
            buyer_postcode: None,
            foreign_currency: None,
            date: crate::clock::Clock::now(&crate::clock::SystemClock).date_naive(),
        }
    }

    /// The fixture of the demo UK business ([`ReferenceData::demo_uk`]): accounts `SALES` and
    /// `COS`, UK rates at 20 %, 5 % and 0 %, bank `BANK`, prefix `CF-`, London buyers, EUR as the
    /// foreign currency, products and stock synced, dated 2026-11-22.
    pub fn demo_uk(run: impl Into<String>) -> Self {
        let policy = SyncPolicy::from_json(
            r#"{
                "default_ledger_account_id": "SALES",
                "default_purchase_ledger_account_id": "COS",
                "default_tax_rate_id": "GB_STANDARD",
                "tax_rate_map": {"20": "GB_STANDARD", "5": "GB_LOWER", "0": "GB_ZERO"},
                "default_bank_account_id": "BANK",
                "invoice_number_prefix": "CF-",
                "sync_products": true,
                "sync_stock": true
            }"#,
        )
        .unwrap_or_default();
        let mut f = Self::new(policy, run);
        f.tax_percent = Decimal::from(20);
        f.buyer_country = Some("GB".into());
        f.buyer_postcode = Some("SW1A 1AA".into());
        f.foreign_currency = Some(Currency::EUR);
        f.date = NaiveDate::from_ymd_opt(2026, 11, 22).unwrap_or_default();
        f
    }

    /// With payments going to `id`.
    #[must_use]
    pub fn with_bank_account(mut self, id: impl Into<String>) -> Self {
        self.bank_account_id = id.into();
        self
    }

    /// With documents charging `percent`.
    #[must_use]
    pub fn with_tax_percent(mut self, percent: Decimal) -> Self {
        self.tax_percent = percent;
        self
    }

    /// With buyers in `country`.
    #[must_use]
    pub fn with_buyer_country(mut self, country: impl Into<String>) -> Self {
        self.buyer_country = Some(country.into());
        self
    }

    /// With buyers at `postcode`.
    #[must_use]
    pub fn with_buyer_postcode(mut self, postcode: impl Into<String>) -> Self {
        self.buyer_postcode = Some(postcode.into());
        self
    }

    /// With (or without) a foreign currency.
    #[must_use]
    pub fn with_foreign_currency(mut self, currency: Option<Currency>) -> Self {
        self.foreign_currency = currency;
        self
    }

    /// With every record dated `date`.
    #[must_use]
    pub fn with_date(mut self, date: NaiveDate) -> Self {
        self.date = date;
        self
    }

    /// Six upper-case base-36 characters derived from the run id: the stem of every reference
    /// the suite creates (contacts `{tag}{slot}` hold 8 characters, documents `{prefix}{tag}{slot}`).
    pub fn tag(&self) -> String {
        let digest = Sha256::digest(self.run.as_bytes());
        let mut n = digest.iter().take(8).fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        let mut out = String::with_capacity(6);
        for _ in 0..6 {
            let d = u32::try_from(n % 36).unwrap_or(0);
            out.push(char::from_digit(d, 36).unwrap_or('0').to_ascii_uppercase());
            n /= 36;
        }
        out
    }

    /// The reference of the suite's contact in `slot` (two characters).
    pub fn contact_reference(&self, slot: &str) -> String {
        format!("{}{slot}", self.tag())
    }

    /// A Magento id derived from the run and `slot` (never 0).
    pub fn magento_id(&self, slot: &str) -> u64 {
        let digest = Sha256::digest(format!("{}:{slot}", self.run).as_bytes());
        digest.iter().take(4).fold(0u64, |acc, b| (acc << 8) | u64::from(*b)) + 1
    }

    fn timestamp(&self) -> DateTime<Utc> {
        self.date.and_hms_opt(10, 0, 0).map(|t| t.and_utc()).unwrap_or_default()
    }

    fn address(&self, kind: AddressKind, reference: &ReferenceData) -> Address {
        Address {
            kind,
            street: vec!["1 Conformance Street".into()],
            city: "Testbury".into(),
            region: None,
            postcode: self.buyer_postcode.clone(),
            country_id: self.buyer_country.clone().unwrap_or_else(|| reference.business.country.clone()),
            telephone: None,
            vat_id: None,
        }
    }

    /// A registered customer for `slot`, with a billing address in the buyer's country.
    pub fn customer(&self, slot: &str, reference: &ReferenceData) -> MagentoContact {
        MagentoContact {
            magento_id: self.magento_id(slot),
            email: format!("conformance-{}@example.com", self.contact_reference(slot).to_lowercase()),
            first_name: Some("Conformance".into()),
            last_name: Some(format!("Run {}", self.contact_reference(slot))),
            company: None,
            vat_number: None,
            phone: None,
            website_id: 1,
            group_id: None,
            addresses: vec![self.address(AddressKind::Billing, reference)],
            created_at: None,
            updated_at: None,
        }
    }

    /// A guest buyer for `slot`.
    pub fn guest(&self, slot: &str, reference: &ReferenceData) -> MagentoContact {
        MagentoContact { magento_id: 0, website_id: 0, ..self.customer(slot, reference) }
    }

    fn line(&self, qty: Decimal, unit_price: Decimal) -> MagentoInvoiceLine {
        let subtotal = qty * unit_price;
        let tax = tax_at(subtotal, self.tax_percent);
        MagentoInvoiceLine {
            sku: format!("{}-WIDGET", self.tag()),
            name: "Conformance widget".into(),
            qty,
            unit_price,
            line_subtotal: subtotal,
            line_tax: tax,
            line_total: subtotal + tax,
            tax_rate: (subtotal > Decimal::ZERO && tax > Decimal::ZERO)
                .then(|| RoundingPolicy::HalfUp.round(tax / subtotal, 4)),
            tax_class: None,
            product_type: Some("simple".into()),
        }
    }

    /// An invoice numbered `{tag}{slot}`: `qty` × `unit_price` plus 5.00 shipping, both taxed at
    /// [`tax_percent`](Self::tax_percent) (2 × 10.00 at 20 %: 20 + 4 + 5 + 1 = 30.00).
    pub fn invoice(
        &self,
        slot: &str,
        currency: Currency,
        customer: &MagentoContact,
        qty: Decimal,
        unit_price: Decimal,
        reference: &ReferenceData,
    ) -> MagentoInvoice {
        let line = self.line(qty, unit_price);
        let shipping = Decimal::from(5);
        let shipping_tax = tax_at(shipping, self.tax_percent);
        MagentoInvoice {
            magento_id: self.magento_id(slot),
            increment_id: format!("{}{slot}", self.tag()),
            order_id: self.magento_id(&format!("order-{slot}")),
            order_increment_id: format!("{}O{slot}", self.tag()),
            website_id: 1,
            store_id: 1,
            currency,
            state: InvoiceState::Open,
            customer: customer.clone(),
            subtotal: line.line_subtotal,
            tax_amount: line.line_tax + shipping_tax,
            shipping_amount: shipping,
            shipping_tax_amount: shipping_tax,
            discount_amount: Decimal::ZERO,
            grand_total: line.line_total + shipping + shipping_tax,
            lines: vec![line],
            created_at: self.timestamp(),
            payment_method: Some("checkmo".into()),
            billing_address: Some(self.address(AddressKind::Billing, reference)),
            shipping_address: Some(self.address(AddressKind::Shipping, reference)),
            po_number: None,
            base_to_order_rate: Some(if currency == reference.business.base_currency {
                Decimal::ONE
            } else {
                Decimal::new(117, 2)
            }),
            tenders: Default::default(),
            base_currency: Some(reference.business.base_currency),
        }
    }

    /// A credit memo numbered `{tag}{slot}` refunding `qty` of the invoice's first line (no
    /// shipping).
    pub fn credit_memo(&self, slot: &str, invoice: &MagentoInvoice, qty: Decimal) -> MagentoCreditMemo {
        let unit = invoice.lines.first().map_or(Decimal::ONE, |l| l.unit_price);
        let line = self.line(qty, unit);
        MagentoCreditMemo {
            magento_id: self.magento_id(slot),
            increment_id: format!("{}{slot}", self.tag()),
            invoice_id: Some(invoice.magento_id),
            invoice_increment_id: Some(invoice.increment_id.clone()),
            website_id: invoice.website_id,
            currency: invoice.currency,
            customer: invoice.customer.clone(),
            adjustment_positive: Decimal::ZERO,
            adjustment_negative: Decimal::ZERO,
            grand_total: line.line_total,
            lines: vec![line],
            shipping_amount: Decimal::ZERO,
            shipping_tax_amount: Decimal::ZERO,
            reason: Some("Conformance refund".into()),
            created_at: self.timestamp(),
            invoice_created_at: Some(invoice.created_at),
            base_to_order_rate: invoice.base_to_order_rate,
            tenders: Default::default(),
            base_currency: None,
        }
    }

    /// The payment of the whole invoice.
    pub fn payment(&self, invoice: &MagentoInvoice) -> MagentoPayment {
        MagentoPayment {
            magento_id: invoice.magento_id,
            invoice_id: invoice.magento_id,
            invoice_increment_id: invoice.increment_id.clone(),
            method: "checkmo".into(),
            currency: invoice.currency,
            amount: invoice.grand_total,
            captured_at: self.timestamp(),
            gateway_txn_id: None,
            gateway_metadata: serde_json::Value::Null,
        }
    }

    /// A product with SKU `{tag}-{slot}` of Magento type `product_type`; `stock_qty` makes it
    /// stock-managed.
    pub fn product(&self, slot: &str, product_type: &str, stock_qty: Option<Decimal>) -> MagentoProduct {
        MagentoProduct {
            magento_id: self.magento_id(slot),
            sku: format!("{}-{slot}", self.tag()),
            name: format!("Conformance {product_type} {slot}"),
            product_type: product_type.into(),
            price: Some(Decimal::new(999, 2)),
            special_price: None,
            cost: Some(Decimal::new(450, 2)),
            weight: None,
            stock_qty,
            manage_stock: stock_qty.is_some(),
            tax_class: None,
            website_ids: Vec::new(),
            created_at: None,
            updated_at: None,
        }
    }

    /// The reference a ledger should hold for a Magento number (prefix, then the ledger's limit).
    pub fn document_reference(&self, increment_id: &str, capabilities: &Capabilities) -> String {
        fit_reference(&self.policy.document_reference(increment_id), increment_id, capabilities.max_document_reference)
    }

    fn idempotency_key(&self, what: &str) -> String {
        format!("conformance:{}:{what}", self.run)
    }
}

fn ok<T>(behaviour: &str, what: &str, r: Result<T>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("[{behaviour}] {what} failed: {e} ({e:?})"),
    }
}

fn refused<T: std::fmt::Debug>(behaviour: &str, what: &str, r: Result<T>) -> crate::Error {
    match r {
        Ok(v) => panic!("[{behaviour}] {what} must be refused, but the provider accepted it: {v:?}"),
        Err(e) => e,
    }
}

fn skip(behaviour: &str, reason: &str) {
    eprintln!("conformance: [{behaviour}] skipped: {reason}");
}

struct Ctx {
    caps: Capabilities,
    reference: std::sync::Arc<ReferenceData>,
}

impl Ctx {
    fn base(&self) -> Currency {
        self.reference.business.base_currency
    }

    /// The foreign currency, when the business can post in it and contacts lock their currency.
    fn foreign(&self, f: &Fixture) -> Option<Currency> {
        f.foreign_currency.filter(|c| *c != self.base())
    }
}

async fn ctx(p: &dyn AccountingProvider, behaviour: &str) -> Ctx {
    let caps = ok(behaviour, "capabilities()", p.capabilities().await);
    let reference = ok(behaviour, "reference_data(false)", p.reference_data(false).await);
    Ctx { caps, reference }
}

fn contact_request<'a>(
    f: &'a Fixture,
    customer: &'a MagentoContact,
    reference: &'a str,
    currency: Currency,
) -> ContactRequest<'a> {
    ContactRequest {
        contact: ContactFor::Customer(customer),
        currency,
        reference,
        policy: &f.policy,
        idempotency_key: None,
    }
}

async fn new_contact(
    p: &dyn AccountingProvider,
    f: &Fixture,
    c: &Ctx,
    behaviour: &str,
    slot: &str,
    currency: Currency,
) -> (MagentoContact, ContactRecord) {
    let customer = f.customer(slot, &c.reference);
    let reference = f.contact_reference(slot);
    let record = ok(
        behaviour,
        &format!("create_contact({reference}, {})", currency.code()),
        p.create_contact(&contact_request(f, &customer, &reference, currency)).await,
    );
    (customer, record)
}

async fn post_invoice(
    p: &dyn AccountingProvider,
    f: &Fixture,
    behaviour: &str,
    invoice: &MagentoInvoice,
    contact_id: &str,
) -> DocumentRecord {
    let items = BTreeMap::new();
    let key = f.idempotency_key(&format!("invoice:{}", invoice.increment_id));
    let request = InvoiceRequest { invoice, policy: &f.policy, contact_id, items: &items, idempotency_key: &key };
    let doc = ok(behaviour, &format!("post_invoice({})", invoice.increment_id), p.post_invoice(&request).await);
    assert_eq!(doc.kind, DocumentKind::Invoice, "[{behaviour}] post_invoice answered a {:?}", doc.kind);
    assert_eq!(
        doc.total,
        Some(invoice.grand_total),
        "[{behaviour}] invoice {}: the ledger's total must equal Magento's grand_total",
        invoice.increment_id
    );
    doc
}

async fn post_credit_note(
    p: &dyn AccountingProvider,
    f: &Fixture,
    behaviour: &str,
    memo: &MagentoCreditMemo,
    contact_id: &str,
) -> DocumentRecord {
    let items = BTreeMap::new();
    let key = f.idempotency_key(&format!("credit_note:{}", memo.increment_id));
    let request = CreditNoteRequest {
        memo,
        policy: &f.policy,
        contact_id,
        items: &items,
        invoice_addresses: None,
        idempotency_key: &key,
    };
    let doc = ok(behaviour, &format!("post_credit_note({})", memo.increment_id), p.post_credit_note(&request).await);
    assert_eq!(doc.kind, DocumentKind::CreditNote, "[{behaviour}] post_credit_note answered a {:?}", doc.kind);
    assert_eq!(
        doc.total,
        Some(memo.grand_total),
        "[{behaviour}] credit note {}: the ledger's total must equal Magento's grand_total",
        memo.increment_id
    );
    doc
}

async fn allocate(
    p: &dyn AccountingProvider,
    f: &Fixture,
    contact_id: String,
    invoice_id: String,
    credit_note_id: String,
    amount: Decimal,
    key: &str,
) -> Result<TransactionRecord> {
    let key = f.idempotency_key(key);
    let request = AllocationRequest {
        contact_id: &contact_id,
        invoice_id: &invoice_id,
        credit_note_id: &credit_note_id,
        amount,
        date: f.date,
        idempotency_key: &key,
    };
    p.allocate(&request).await
}

async fn outstanding(p: &dyn AccountingProvider, behaviour: &str, kind: DocumentKind, id: &str) -> Option<Decimal> {
    ok(behaviour, &format!("get_document({kind:?}, {id})"), p.get_document(kind, id).await).outstanding
}

/// The business's reference data is served (and served again on refresh), and the fixture's
/// policy and bank account belong to it.
pub async fn reference_data_and_policy(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "reference_data_and_policy";
    let c = ctx(p, B).await;
    let r = &c.reference;
    assert!(!r.tax_rates.is_empty(), "[{B}] the reference data has no tax rates");
    assert!(!r.ledger_accounts.is_empty(), "[{B}] the reference data has no ledger accounts");
    assert!(!r.bank_accounts.is_empty(), "[{B}] the reference data has no bank accounts");
    if let Err(e) = f.policy.validate_against(r) {
        panic!("[{B}] the fixture's policy does not validate against the provider's reference data: {e}");
    }
    assert!(
        f.policy.default_ledger_account_id.is_some(),
        "[{B}] the fixture's policy needs default_ledger_account_id (documents need a sales account)"
    );
    if c.caps.products {
        assert!(
            f.policy.default_purchase_ledger_account_id.is_some(),
            "[{B}] the business has products: the fixture's policy needs default_purchase_ledger_account_id"
        );
    }
    assert!(
        r.bank_account(&f.bank_account_id).is_some(),
        "[{B}] the fixture's bank account `{}` is not a bank account of the business",
        f.bank_account_id
    );
    assert_ne!(
        f.foreign_currency,
        Some(c.base()),
        "[{B}] the fixture's foreign currency must differ from the base currency"
    );
    assert!(
        c.caps.max_contact_reference >= 8,
        "[{B}] the suite's contact references hold 8 characters; the provider allows {}",
        c.caps.max_contact_reference
    );
    assert!(c.caps.max_document_reference >= 8, "[{B}] the suite's document numbers hold 8 characters");
    let refreshed = ok(B, "reference_data(true)", p.reference_data(true).await);
    assert_eq!(refreshed.business.id, r.business.id, "[{B}] a refresh must serve the same business");
    assert_eq!(refreshed.business.base_currency, c.base(), "[{B}] a refresh changed the base currency");
}

/// Create → find by the exact reference → the same contact in the same currency; an unknown or
/// partial reference finds nothing; an update keeps the id and the reference.
pub async fn contact_round_trip(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "contact_round_trip";
    let c = ctx(p, B).await;
    let (mut customer, created) = new_contact(p, f, &c, B, "RT", c.base()).await;
    let reference = f.contact_reference("RT");
    if let Some(r) = &created.reference {
        assert_eq!(r, &reference, "[{B}] the created contact holds another reference");
    }
    let found = ok(B, "find_contact", p.find_contact(&reference).await)
        .unwrap_or_else(|| panic!("[{B}] find_contact({reference}) found nothing after create_contact"));
    assert_eq!(found.id, created.id, "[{B}] find_contact({reference}) found another contact");
    assert!(
        found.currency.is_none_or(|cur| cur == c.base()),
        "[{B}] the contact was created in {} but reads as {:?}",
        c.base().code(),
        found.currency.map(|cur| cur.code())
    );
    let unknown = f.contact_reference("ZZ");
    assert!(
        ok(B, "find_contact(unknown)", p.find_contact(&unknown).await).is_none(),
        "[{B}] find_contact({unknown}) must find nothing"
    );
    let partial: String = reference.chars().take(reference.chars().count() - 1).collect();
    assert!(
        ok(B, "find_contact(partial)", p.find_contact(&partial).await).is_none(),
        "[{B}] find_contact({partial}) must match references exactly, not by prefix"
    );
    customer.company = Some(format!("Conformance {} Ltd", f.tag()));
    let updated = ok(
        B,
        "update_contact",
        p.update_contact(&created.id, &contact_request(f, &customer, &reference, c.base())).await,
    );
    assert_eq!(updated.id, created.id, "[{B}] update_contact answered another contact");
    let again = ok(B, "find_contact after update", p.find_contact(&reference).await)
        .unwrap_or_else(|| panic!("[{B}] the contact is not found by its reference after an update"));
    assert_eq!(again.id, created.id, "[{B}] the update changed which contact holds the reference");
}

/// A second contact with a reference already taken is refused with an error that
/// [`is_reference_taken`] recognises, and the first contact keeps it.
pub async fn duplicate_contact_reference_is_taken(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "duplicate_contact_reference_is_taken";
    let c = ctx(p, B).await;
    let (_, first) = new_contact(p, f, &c, B, "DU", c.base()).await;
    let reference = f.contact_reference("DU");
    let other = f.customer("DV", &c.reference);
    let e = refused(
        B,
        &format!("a second contact with reference {reference}"),
        p.create_contact(&contact_request(f, &other, &reference, c.base())).await,
    );
    assert!(
        is_reference_taken(&e),
        "[{B}] the refusal must be recognised by providers::is_reference_taken (a Rejected error naming the reference as taken), got: {e}"
    );
    let found = ok(B, "find_contact", p.find_contact(&reference).await);
    assert_eq!(found.map(|f| f.id), Some(first.id), "[{B}] the first contact must keep its reference");
}

/// [`resolve_contact`](AccountingProviderExt::resolve_contact) adopts the contact holding the
/// first candidate, and moves to the next candidate when that contact trades in another currency
/// (multi-currency businesses) or belongs to another guest.
pub async fn resolve_contact_adopts_and_moves_on(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "resolve_contact_adopts_and_moves_on";
    let c = ctx(p, B).await;
    let (customer, existing) = new_contact(p, f, &c, B, "RA", c.base()).await;
    let candidates = vec![f.contact_reference("RA"), f.contact_reference("RB")];
    let subject = ContactSubject::Registered(customer.magento_id);
    // Another event than the one that made the contact (its own idempotency key): a ledger
    // that creates first (unique references) must refuse the reference as taken and adopt the
    // contact, not replay the first create.
    // Each resolve below is another event, with its own key.
    let request =
        |currency, key| ContactRequest { idempotency_key: Some(key), ..contact_request(f, &customer, "", currency) };
    let adopted = ok(
        B,
        "resolve_contact (base)",
        p.resolve_contact(&subject, &candidates, request(c.base(), "conformance:resolve:1")).await,
    );
    assert!(!adopted.created, "[{B}] resolve_contact created a contact although {} exists", candidates[0]);
    assert_eq!(adopted.record.id, existing.id, "[{B}] resolve_contact must adopt the existing contact");

    match c.foreign(f) {
        Some(foreign) if c.caps.multi_currency && c.caps.contact_per_currency => {
            let other = ok(
                B,
                "resolve_contact (foreign)",
                p.resolve_contact(&subject, &candidates, request(foreign, "conformance:resolve:2")).await,
            );
            assert!(
                other.created,
                "[{B}] a {} contact must be created: {} trades in another currency",
                foreign.code(),
                candidates[0]
            );
            assert_ne!(other.record.id, existing.id, "[{B}] the {} contact must be a new contact", foreign.code());
            assert_eq!(
                other.record.reference.as_deref().unwrap_or(&candidates[1]),
                candidates[1],
                "[{B}] the {} contact must hold the next candidate",
                foreign.code()
            );
            assert!(
                other.record.currency.is_none_or(|cur| cur == foreign),
                "[{B}] the new contact must trade in {}",
                foreign.code()
            );
            let again = ok(
                B,
                "resolve_contact (foreign, again)",
                p.resolve_contact(&subject, &candidates, request(foreign, "conformance:resolve:3")).await,
            );
            assert!(
                !again.created && again.record.id == other.record.id,
                "[{B}] a second resolve must adopt the {} contact",
                foreign.code()
            );
        }
        _ => skip(B, "currency part: needs multi_currency, contact_per_currency and a fixture foreign currency"),
    }

    // Another guest whose reference collides: the contact's e-mail tells them apart.
    let first_guest = f.guest("GA", &c.reference);
    let held = f.contact_reference("GA");
    let record =
        ok(B, "create_contact (guest)", p.create_contact(&contact_request(f, &first_guest, &held, c.base())).await);
    if record.email.is_none() {
        skip(B, "guest part: the provider does not report contact e-mails");
        return;
    }
    let second_guest = f.guest("GB", &c.reference);
    let guest_candidates = vec![held, f.contact_reference("GB")];
    let resolved = ok(
        B,
        "resolve_contact (another guest)",
        p.resolve_contact(
            &ContactSubject::of(&second_guest),
            &guest_candidates,
            contact_request(f, &second_guest, "", c.base()),
        )
        .await,
    );
    assert!(resolved.created, "[{B}] another guest's contact must not be adopted");
    assert_ne!(resolved.record.id, record.id, "[{B}] another guest's contact must not be adopted");
}

/// An invoice totals Magento's `grand_total`, is wholly outstanding, is found by its exact
/// reference (and only as an invoice) and read back by id.
pub async fn invoice_round_trip(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "invoice_round_trip";
    let c = ctx(p, B).await;
    let (customer, contact) = new_contact(p, f, &c, B, "IN", c.base()).await;
    let invoice = f.invoice("I1", c.base(), &customer, Decimal::from(2), Decimal::from(10), &c.reference);
    let doc = post_invoice(p, f, B, &invoice, &contact.id).await;
    assert_eq!(doc.outstanding, doc.total, "[{B}] a new invoice must be wholly outstanding");
    assert!(!doc.voided, "[{B}] a new invoice must not be voided");
    if let Some(cid) = &doc.contact_id {
        assert_eq!(cid, &contact.id, "[{B}] the invoice is on another contact");
    }
    let reference = f.document_reference(&invoice.increment_id, &c.caps);
    if let Some(r) = &doc.reference {
        assert_eq!(r, &reference, "[{B}] the invoice holds another reference");
    }
    let found = ok(B, "find_document", p.find_document(DocumentKind::Invoice, &reference).await)
        .unwrap_or_else(|| panic!("[{B}] find_document(Invoice, {reference}) found nothing"));
    assert_eq!(found.id, doc.id, "[{B}] find_document found another invoice");
    let partial: String = reference.chars().take(reference.chars().count() - 1).collect();
    assert!(
        ok(B, "find_document(partial)", p.find_document(DocumentKind::Invoice, &partial).await).is_none(),
        "[{B}] find_document({partial}) must match references exactly"
    );
    assert!(
        ok(B, "find_document(CreditNote)", p.find_document(DocumentKind::CreditNote, &reference).await).is_none(),
        "[{B}] an invoice's reference must not find a credit note"
    );
    let got = ok(B, "get_document", p.get_document(DocumentKind::Invoice, &doc.id).await);
    assert_eq!(got.id, doc.id, "[{B}] get_document answered another document");
    assert_eq!(got.total, Some(invoice.grand_total), "[{B}] get_document's total must equal grand_total");
    assert_eq!(got.outstanding, Some(invoice.grand_total), "[{B}] get_document's outstanding must equal the total");
}

/// A payment of the whole invoice with its allocation leaves nothing outstanding, and is found
/// again by contact, reference and date (and not on another date).
pub async fn payment_settles_invoice(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "payment_settles_invoice";
    let c = ctx(p, B).await;
    let (customer, contact) = new_contact(p, f, &c, B, "PA", c.base()).await;
    let invoice = f.invoice("P1", c.base(), &customer, Decimal::from(3), Decimal::new(1250, 2), &c.reference);
    let doc = post_invoice(p, f, B, &invoice, &contact.id).await;
    let payment = f.payment(&invoice);
    let key = f.idempotency_key("payment:P1");
    let request = PaymentRequest {
        payment: &payment,
        policy: &f.policy,
        contact_id: &contact.id,
        invoice_id: &doc.id,
        bank_account_id: &f.bank_account_id,
        invoice_base_to_order_rate: invoice.base_to_order_rate,
        outstanding: doc.outstanding,
        idempotency_key: &key,
    };
    let tx = ok(B, "post_payment", p.post_payment(&request).await);
    if let Some(total) = tx.total {
        assert_eq!(total, payment.amount, "[{B}] the payment's total must be the amount received");
    }
    assert_eq!(
        outstanding(p, B, DocumentKind::Invoice, &doc.id).await,
        Some(Decimal::ZERO),
        "[{B}] a payment of the whole invoice must leave nothing outstanding"
    );
    let reference = tx.reference.clone().unwrap_or_else(|| f.document_reference(&invoice.increment_id, &c.caps));
    let artefacts = [doc.id.as_str()];
    let date = payment.captured_at.date_naive();
    let lookup =
        TransactionLookup { contact_id: &contact.id, reference: Some(&reference), date, artefact_ids: &artefacts };
    let found = ok(B, "find_transaction(Payment)", p.find_transaction(TransactionKind::Payment, &lookup).await)
        .unwrap_or_else(|| panic!("[{B}] find_transaction(Payment) did not find the payment {}", tx.id));
    assert_eq!(found.id, tx.id, "[{B}] find_transaction found another payment");
    let other_day = TransactionLookup { date: date.checked_add_days(Days::new(1)).unwrap_or(date), ..lookup };
    assert!(
        ok(B, "find_transaction(other day)", p.find_transaction(TransactionKind::Payment, &other_day).await).is_none(),
        "[{B}] find_transaction must match the payment's date"
    );
}

/// A credit note on the invoice's contact totals the memo and is found by reference; allocating
/// it reduces what is outstanding on both; allocating more than the invoice's outstanding, or
/// against a settled invoice, is refused and changes nothing.
pub async fn credit_note_allocation(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "credit_note_allocation";
    let c = ctx(p, B).await;
    if !c.caps.credit_notes {
        return skip(B, "the business cannot create credit notes");
    }
    let (customer, contact) = new_contact(p, f, &c, B, "CN", c.base()).await;
    let invoice = f.invoice("C1", c.base(), &customer, Decimal::from(2), Decimal::from(10), &c.reference);
    let inv = post_invoice(p, f, B, &invoice, &contact.id).await;
    let total = invoice.grand_total;

    let memo = f.credit_memo("C2", &invoice, Decimal::ONE);
    let cn = post_credit_note(p, f, B, &memo, &contact.id).await;
    assert_eq!(cn.outstanding, cn.total, "[{B}] a new credit note must be wholly outstanding");
    let reference = f.document_reference(&memo.increment_id, &c.caps);
    let found = ok(B, "find_document(CreditNote)", p.find_document(DocumentKind::CreditNote, &reference).await)
        .unwrap_or_else(|| panic!("[{B}] find_document(CreditNote, {reference}) found nothing"));
    assert_eq!(found.id, cn.id, "[{B}] find_document found another credit note");
    ok(B, "get_document(CreditNote)", p.get_document(DocumentKind::CreditNote, &cn.id).await);
    if !c.caps.allocations {
        return skip(B, "allocation part: the business cannot allocate credit notes");
    }

    let run = |credit_note_id: String, amount: Decimal, key: &'static str| {
        allocate(p, f, contact.id.clone(), inv.id.clone(), credit_note_id, amount, key)
    };

    let first = memo.grand_total;
    let tx = ok(B, "allocate(credit note, invoice)", run(cn.id.clone(), first, "allocation:C2").await);
    assert_eq!(
        outstanding(p, B, DocumentKind::Invoice, &inv.id).await,
        Some(total - first),
        "[{B}] the allocation must reduce the invoice's outstanding amount"
    );
    assert_eq!(
        outstanding(p, B, DocumentKind::CreditNote, &cn.id).await,
        Some(Decimal::ZERO),
        "[{B}] the allocation must settle the credit note"
    );
    let artefacts = [inv.id.as_str(), cn.id.as_str()];
    let lookup = TransactionLookup { contact_id: &contact.id, reference: None, date: f.date, artefact_ids: &artefacts };
    let found = ok(B, "find_transaction(Allocation)", p.find_transaction(TransactionKind::Allocation, &lookup).await)
        .unwrap_or_else(|| panic!("[{B}] find_transaction(Allocation) did not find the allocation {}", tx.id));
    assert_eq!(found.id, tx.id, "[{B}] find_transaction found another allocation");

    // A second credit note larger than what the invoice still owes.
    let left = total - first;
    let big = f.credit_memo("C3", &invoice, Decimal::from(2));
    let cn2 = post_credit_note(p, f, B, &big, &contact.id).await;
    assert!(big.grand_total > left, "[{B}] fixture: the second credit note must exceed what is outstanding");
    refused(
        B,
        "allocating more than the invoice's outstanding amount",
        run(cn2.id.clone(), big.grand_total, "allocation:C3").await,
    );
    assert_eq!(
        outstanding(p, B, DocumentKind::Invoice, &inv.id).await,
        Some(left),
        "[{B}] a refused allocation must change nothing"
    );
    ok(B, "allocate(what is left)", run(cn2.id.clone(), left, "allocation:C3b").await);
    assert_eq!(
        outstanding(p, B, DocumentKind::Invoice, &inv.id).await,
        Some(Decimal::ZERO),
        "[{B}] allocating what is left must settle the invoice"
    );
    refused(
        B,
        "allocating against a settled invoice",
        run(cn2.id.clone(), big.grand_total - left, "allocation:C3c").await,
    );
}

/// [`find_or_post_invoice`](AccountingProviderExt::find_or_post_invoice) posts once: the second
/// call finds the first document.
pub async fn find_or_post_invoice_posts_once(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "find_or_post_invoice_posts_once";
    let c = ctx(p, B).await;
    let (customer, contact) = new_contact(p, f, &c, B, "FP", c.base()).await;
    let invoice = f.invoice("F1", c.base(), &customer, Decimal::ONE, Decimal::new(4200, 2), &c.reference);
    let items = BTreeMap::new();
    let key = f.idempotency_key("invoice:F1");
    let request = InvoiceRequest {
        invoice: &invoice,
        policy: &f.policy,
        contact_id: &contact.id,
        items: &items,
        idempotency_key: &key,
    };
    let (first, posted) = ok(B, "find_or_post_invoice (first)", p.find_or_post_invoice(&request).await);
    assert!(posted, "[{B}] the first call must post");
    assert_eq!(first.total, Some(invoice.grand_total), "[{B}] the total must equal grand_total");
    let (second, posted) = ok(B, "find_or_post_invoice (second)", p.find_or_post_invoice(&request).await);
    assert!(!posted, "[{B}] the second call must find the invoice, not post another");
    assert_eq!(second.id, first.id, "[{B}] the second call must answer the first invoice");
}

/// An invoice in a currency other than its contact's is refused (and nothing is posted); with
/// multi-currency, a foreign contact takes foreign invoices and refuses base-currency ones.
pub async fn currency_lock(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "currency_lock";
    let c = ctx(p, B).await;
    if !c.caps.contact_per_currency {
        return skip(B, "the ledger does not lock a contact's currency");
    }
    let Some(foreign) = c.foreign(f) else {
        return skip(B, "the fixture has no foreign currency");
    };
    let (customer, base_contact) = new_contact(p, f, &c, B, "LB", c.base()).await;
    let attempt = |invoice: MagentoInvoice, contact_id: String| async move {
        let items = BTreeMap::new();
        let key = f.idempotency_key(&format!("invoice:{}", invoice.increment_id));
        let request = InvoiceRequest {
            invoice: &invoice,
            policy: &f.policy,
            contact_id: &contact_id,
            items: &items,
            idempotency_key: &key,
        };
        p.post_invoice(&request).await
    };
    let wrong = f.invoice("L1", foreign, &customer, Decimal::ONE, Decimal::from(10), &c.reference);
    let e = refused(
        B,
        &format!("a {} invoice on a {} contact", foreign.code(), c.base().code()),
        attempt(wrong.clone(), base_contact.id.clone()).await,
    );
    assert_eq!(e.code(), ErrorCode::Validation, "[{B}] the refusal must be a validation error, got: {e}");
    let reference = f.document_reference(&wrong.increment_id, &c.caps);
    assert!(
        ok(B, "find_document", p.find_document(DocumentKind::Invoice, &reference).await).is_none(),
        "[{B}] a refused invoice must not be posted"
    );
    if !c.caps.multi_currency {
        return skip(B, "foreign-contact part: the business has no multi-currency");
    }
    let (foreign_customer, foreign_contact) = new_contact(p, f, &c, B, "LF", foreign).await;
    let base_invoice = f.invoice("L2", c.base(), &foreign_customer, Decimal::ONE, Decimal::from(10), &c.reference);
    let e = refused(
        B,
        &format!("a {} invoice on a {} contact", c.base().code(), foreign.code()),
        attempt(base_invoice, foreign_contact.id.clone()).await,
    );
    assert_eq!(e.code(), ErrorCode::Validation, "[{B}] the refusal must be a validation error, got: {e}");
    let right = f.invoice("L3", foreign, &foreign_customer, Decimal::ONE, Decimal::from(10), &c.reference);
    let doc =
        ok(B, "a foreign invoice on the foreign contact", attempt(right.clone(), foreign_contact.id.clone()).await);
    assert_eq!(doc.total, Some(right.grand_total), "[{B}] the foreign invoice's total must equal grand_total");
}

/// Ids the ledger never issued are [`ErrorCode::NotFound`] when read, updated or voided.
pub async fn unknown_ids_are_not_found(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "unknown_ids_are_not_found";
    let c = ctx(p, B).await;
    let unknown: String =
        Sha256::digest(format!("{}:unknown", f.run).as_bytes()).iter().take(16).map(|b| format!("{b:02x}")).collect();
    let expect = |what: &str, e: crate::Error| {
        assert_eq!(e.code(), ErrorCode::NotFound, "[{B}] {what} of an unknown id must be not_found, got: {e}");
    };
    expect(
        "get_document(Invoice)",
        refused(B, "get_document(Invoice, unknown)", p.get_document(DocumentKind::Invoice, &unknown).await),
    );
    if c.caps.credit_notes {
        expect(
            "get_document(CreditNote)",
            refused(B, "get_document(CreditNote, unknown)", p.get_document(DocumentKind::CreditNote, &unknown).await),
        );
    }
    expect(
        "void_document",
        refused(B, "void_document(unknown)", p.void_document(DocumentKind::Invoice, &unknown, "conformance").await),
    );
    let customer = f.customer("UK", &c.reference);
    let reference = f.contact_reference("UK");
    expect(
        "update_contact",
        refused(
            B,
            "update_contact(unknown)",
            p.update_contact(&unknown, &contact_request(f, &customer, &reference, c.base())).await,
        ),
    );
    if c.caps.products {
        expect("get_item", refused(B, "get_item(unknown)", p.get_item(ItemKind::Product, &unknown).await));
    }
}

/// Products and services: create, find by code (exactly, and only as their kind), update, read by
/// id.
pub async fn items_round_trip(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "items_round_trip";
    let c = ctx(p, B).await;
    if !c.caps.products {
        return skip(B, "the business cannot create items");
    }
    for (slot, product_type, kind) in [("K1", "simple", ItemKind::Product), ("K2", "virtual", ItemKind::Service)] {
        let mut product = f.product(slot, product_type, None);
        let request = ItemRequest { product: &product, kind, policy: &f.policy, idempotency_key: None };
        let created = ok(B, &format!("create_item({})", product.sku), p.create_item(&request).await);
        assert_eq!(created.kind, kind, "[{B}] create_item answered another kind");
        assert_eq!(created.code, product.sku, "[{B}] the item's code must be the SKU");
        let found = ok(B, "find_item", p.find_item(kind, &product.sku).await)
            .unwrap_or_else(|| panic!("[{B}] find_item({kind:?}, {}) found nothing", product.sku));
        assert_eq!(found.id, created.id, "[{B}] find_item found another item");
        let missing = format!("{}X", product.sku);
        assert!(
            ok(B, "find_item(unknown)", p.find_item(kind, &missing).await).is_none(),
            "[{B}] find_item({missing}) must find nothing"
        );
        product.name = format!("{} (renamed)", product.name);
        product.price = Some(Decimal::new(1099, 2));
        let request = ItemRequest { product: &product, kind, policy: &f.policy, idempotency_key: None };
        let updated = ok(B, "update_item", p.update_item(&created.id, &request).await);
        assert_eq!(updated.id, created.id, "[{B}] update_item answered another item");
        let got = ok(B, "get_item", p.get_item(kind, &created.id).await);
        assert_eq!((got.id, got.code), (created.id, product.sku), "[{B}] get_item answered another item");
    }
}

/// A stock movement brings `quantity_in_stock` to Magento's quantity; when they already match,
/// nothing is posted.
pub async fn stock_movements(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "stock_movements";
    let c = ctx(p, B).await;
    if !(c.caps.products && c.caps.stock) {
        return skip(B, "the business has no stock items");
    }
    let product = f.product("S1", "simple", Some(Decimal::from(5)));
    let request =
        ItemRequest { product: &product, kind: ItemKind::StockItem, policy: &f.policy, idempotency_key: None };
    let item = ok(B, "create_item(stock item)", p.create_item(&request).await);
    assert_eq!(item.kind, ItemKind::StockItem, "[{B}] create_item answered another kind");
    let mut held = item.quantity_in_stock.unwrap_or_default();
    for (target, key) in [(Decimal::from(5), "S1:5"), (Decimal::from(5), "S1:5b"), (Decimal::from(3), "S1:3")] {
        let product = MagentoProduct { stock_qty: Some(target), ..product.clone() };
        let key = f.idempotency_key(key);
        let request = StockMovementRequest {
            item_id: &item.id,
            product: &product,
            ledger_quantity: held,
            date: f.date,
            idempotency_key: Some(&key),
        };
        let moved = ok(B, &format!("post_stock_movement({held} → {target})"), p.post_stock_movement(&request).await);
        assert_eq!(
            moved.is_some(),
            held != target,
            "[{B}] a movement must be posted exactly when the quantities differ ({held} → {target})"
        );
        let got = ok(B, "get_item(stock item)", p.get_item(ItemKind::StockItem, &item.id).await);
        assert_eq!(got.quantity_in_stock, Some(target), "[{B}] quantity_in_stock must follow Magento's ({target})");
        held = target;
    }
}

/// A voided invoice reads as voided, is still found by its reference, and cannot be paid.
pub async fn void_document(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "void_document";
    let c = ctx(p, B).await;
    let (customer, contact) = new_contact(p, f, &c, B, "VD", c.base()).await;
    let invoice = f.invoice("V1", c.base(), &customer, Decimal::ONE, Decimal::from(25), &c.reference);
    let doc = post_invoice(p, f, B, &invoice, &contact.id).await;
    ok(B, "void_document", p.void_document(DocumentKind::Invoice, &doc.id, "Conformance run: voided").await);
    let got = ok(B, "get_document", p.get_document(DocumentKind::Invoice, &doc.id).await);
    assert!(got.voided, "[{B}] a voided invoice must read as voided");
    let reference = f.document_reference(&invoice.increment_id, &c.caps);
    let found = ok(B, "find_document", p.find_document(DocumentKind::Invoice, &reference).await)
        .unwrap_or_else(|| panic!("[{B}] find_document must find voided documents too"));
    assert_eq!(found.id, doc.id, "[{B}] find_document found another invoice");
    let payment = f.payment(&invoice);
    let key = f.idempotency_key("payment:V1");
    let request = PaymentRequest {
        payment: &payment,
        policy: &f.policy,
        contact_id: &contact.id,
        invoice_id: &doc.id,
        bank_account_id: &f.bank_account_id,
        invoice_base_to_order_rate: invoice.base_to_order_rate,
        outstanding: None,
        idempotency_key: &key,
    };
    refused(B, "paying a voided invoice", p.post_payment(&request).await);
}

/// The batch methods (the trait's defaults, or a ledger's batch endpoints) answer one result per
/// item, in order: `find_contacts` finds the known reference and not the unknown one;
/// `post_invoices` with an invoice on a contact that does not exist between two good ones posts
/// both good ones, refuses the bad one alone, and each answer is its own invoice.
pub async fn batches_answer_each_item_in_place(p: &dyn AccountingProvider, f: &Fixture) {
    const B: &str = "batches_answer_each_item_in_place";
    let c = ctx(p, B).await;
    let (customer, contact) = new_contact(p, f, &c, B, "BA", c.base()).await;
    let known = f.contact_reference("BA");
    let unknown = f.contact_reference("BZ");
    let found = ok(B, "find_contacts", p.find_contacts(&[unknown.as_str(), known.as_str()]).await);
    assert_eq!(found.len(), 2, "[{B}] find_contacts must answer once per reference");
    assert!(found[0].is_none(), "[{B}] find_contacts found the unknown reference {unknown}");
    assert_eq!(
        found[1].as_ref().map(|r| r.id.as_str()),
        Some(contact.id.as_str()),
        "[{B}] find_contacts must find {known} in its place"
    );

    let first = f.invoice("B1", c.base(), &customer, Decimal::from(1), Decimal::from(10), &c.reference);
    let bad = f.invoice("B2", c.base(), &customer, Decimal::from(1), Decimal::from(20), &c.reference);
    let last = f.invoice("B3", c.base(), &customer, Decimal::from(3), Decimal::from(10), &c.reference);
    let items = BTreeMap::new();
    let keys: Vec<String> =
        [&first, &bad, &last].iter().map(|i| f.idempotency_key(&format!("batch:{}", i.increment_id))).collect();
    let no_such_contact = "00000000000000000000000000000000";
    let requests = [
        InvoiceRequest {
            invoice: &first,
            policy: &f.policy,
            contact_id: &contact.id,
            items: &items,
            idempotency_key: &keys[0],
        },
        InvoiceRequest {
            invoice: &bad,
            policy: &f.policy,
            contact_id: no_such_contact,
            items: &items,
            idempotency_key: &keys[1],
        },
        InvoiceRequest {
            invoice: &last,
            policy: &f.policy,
            contact_id: &contact.id,
            items: &items,
            idempotency_key: &keys[2],
        },
    ];
    let results = p.post_invoices(&requests).await;
    assert_eq!(results.len(), 3, "[{B}] post_invoices must answer once per request");
    let mut results = results.into_iter();
    let (r1, r2, r3) = (results.next(), results.next(), results.next());
    let d1 = ok(B, "post_invoices[0]", r1.expect("three answers"));
    refused(B, "post_invoices[1] (a contact that does not exist)", r2.expect("three answers"));
    let d3 = ok(B, "post_invoices[2]", r3.expect("three answers"));
    assert_eq!(d1.total, Some(first.grand_total), "[{B}] answer 0 must be the first invoice");
    assert_eq!(d3.total, Some(last.grand_total), "[{B}] answer 2 must be the third invoice, not the second");
    assert_ne!(d1.id, d3.id, "[{B}] two invoices answered with one id");
    for (invoice, expect) in [(&first, Some(&d1.id)), (&bad, None), (&last, Some(&d3.id))] {
        let reference = f.document_reference(&invoice.increment_id, &c.caps);
        let found = ok(B, "find_document", p.find_document(DocumentKind::Invoice, &reference).await);
        assert_eq!(
            found.as_ref().map(|d| &d.id),
            expect,
            "[{B}] after the batch, the ledger holds the wrong thing under {reference}"
        );
    }
}

/// Every behaviour, in the order of the [module docs](self).
pub async fn run_all(p: &dyn AccountingProvider, f: &Fixture) {
    reference_data_and_policy(p, f).await;
    contact_round_trip(p, f).await;
    duplicate_contact_reference_is_taken(p, f).await;
    resolve_contact_adopts_and_moves_on(p, f).await;
    invoice_round_trip(p, f).await;
    payment_settles_invoice(p, f).await;
    credit_note_allocation(p, f).await;
    find_or_post_invoice_posts_once(p, f).await;
    currency_lock(p, f).await;
    unknown_ids_are_not_found(p, f).await;
    items_round_trip(p, f).await;
    stock_movements(p, f).await;
    void_document(p, f).await;
    batches_answer_each_item_in_place(p, f).await;
}
