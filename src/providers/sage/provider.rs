//! `SageProvider`: the [`AccountingProvider`] of Sage Business Cloud Accounting v3.1. Thin I/O:
//! each method looks up what it needs, calls the pure transform, and sends the request through
//! [`SageClient`].
//!
//! Writes whose outcome is unknown (a timeout or a 5xx after the request was sent) are never
//! re-sent blindly: the provider looks the record up by its business reference first, and only
//! posts again — with the same `idempotency_id`, so Sage itself dedupes within its 7-day window —
//! when it is not there.

use std::{future::Future, sync::Arc};

use async_trait::async_trait;
use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::Value;

use super::{
    PROVIDER,
    client::{RequestStats, SageClient},
    model::{Link, SageContact, SageDocument, SageItem, SageTransaction},
    transform::{self, DocumentLinks, ItemRequest as SageItemRequest, PaymentLinks},
};
use crate::http::resend::ResendBudget;
use crate::{
    auth::{OAuthClient, TokenManager, TokenSet},
    error::{Error, Result},
    money::{parse_currency, serde_decimal_opt},
    plan::DocumentKind,
    providers::{
        AccountingProvider, AllocationRequest, Capabilities, ContactFor, ContactRecord, ContactRequest,
        CreditNoteRequest, DocumentRecord, InvoiceRequest, ItemKind, ItemRecord, ItemRequest, PaymentRequest,
        RefundRequest, StockMovementRequest, TransactionKind, TransactionLookup, TransactionRecord,
    },
    reference::{BankAccount, BusinessProfile, LedgerAccount, PaymentMethod, ReferenceData, TaxRate},
};

/// The Sage Business Cloud Accounting provider of one business. Build it with
/// [`SageBuilder`](super::SageBuilder).
pub struct SageProvider {
    client: SageClient,
    oauth: OAuthClient,
    reference: tokio::sync::RwLock<Option<Arc<ReferenceData>>>,
    reference_fetch: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for SageProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SageProvider").field("client", &self.client).finish_non_exhaustive()
    }
}

impl SageProvider {
    pub(super) fn from_parts(client: SageClient, oauth: OAuthClient) -> Self {
        Self { client, oauth, reference: tokio::sync::RwLock::new(None), reference_fetch: tokio::sync::Mutex::new(()) }
    }

    /// The business id (`X-Business`).
    pub fn business_id(&self) -> &str {
        &self.client.business_id
    }

    /// Request counters (calls per endpoint, retries, 429s).
    pub fn stats(&self) -> &RequestStats {
        &self.client.stats
    }

    /// The token manager (refresh count, invalidation).
    pub fn tokens(&self) -> &TokenManager {
        &self.client.tokens
    }

    /// Exchanges an authorisation code from Sage's consent screen for a token pair (to store
    /// with the connection).
    ///
    /// # Errors
    /// [`Error::Auth`] when Sage refuses the code.
    pub async fn exchange_code(&self, code: &str, redirect_uri: &str) -> Result<TokenSet> {
        self.oauth.exchange_code(code, redirect_uri, self.client.clock.now()).await
    }

    /// Posts, and when the outcome is unknown looks the record up before posting again, as often
    /// as the request's retry budget allows ([`ResendBudget`]).
    async fn post_recovering<B, T, R, L, Fut>(
        &self,
        path: &str,
        body: &B,
        map: impl Fn(T) -> R + Send + Sync,
        lookup: L,
    ) -> Result<R>
    where
        B: serde::Serialize + Sync + ?Sized,
        T: serde::de::DeserializeOwned,
        R: Send,
        L: Fn() -> Fut + Send + Sync,
        Fut: Future<Output = Result<Option<R>>> + Send,
    {
        let mut budget = ResendBudget::new(self.client.retry);
        let mut round = 0u32;
        loop {
            // The answer read as `T` straight from its text (`client::read_json`), its error
            // naming the field that does not fit, as "POST {path}".
            match self.client.post::<B, T>(path, body).await {
                Ok(answer) => return Ok(map(answer)),
                Err(e) if e.outcome_unknown() => {
                    tracing::warn!(path, round, error = %e, "write outcome unknown; looking the record up before any second write");
                    if let Some(found) = lookup().await? {
                        tracing::info!(path, "the write had been applied; using the existing record");
                        return Ok(found);
                    }
                    match budget.next_resend() {
                        Some(wait) => {
                            round += 1;
                            tokio::time::sleep(wait).await;
                        }
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn fetch_reference(&self) -> Result<ReferenceData> {
        let c = &self.client;
        let business_path = format!("/businesses/{}", c.business_id);
        let sales_q = [("visible_in", "sales".to_owned())];
        let expenses_q = [("visible_in", "expenses".to_owned())];
        let (business, financial, settings, tax_rates, sales, expenses, banks, methods, currencies) = futures::try_join!(
            c.get::<SageBusiness>(&business_path, &[]),
            c.get::<SageFinancialSettings>("/financial_settings", &[]),
            c.get::<SageBusinessSettings>("/business_settings", &[]),
            c.get_all::<SageTaxRate>("/tax_rates", &[]),
            c.get_all::<SageLedgerAccount>("/ledger_accounts", &sales_q),
            c.get_all::<SageLedgerAccount>("/ledger_accounts", &expenses_q),
            c.get_all::<SageBankAccount>("/bank_accounts", &[]),
            c.get_all::<Link>("/payment_methods", &[]),
            c.get_all::<Link>("/currencies", &[]),
        )?;
        build_reference(
            &c.business_id,
            business,
            financial,
            settings,
            tax_rates,
            sales,
            expenses,
            banks,
            methods,
            currencies,
            c.clock.now(),
        )
    }

    fn item_path(kind: ItemKind) -> &'static str {
        match kind {
            ItemKind::Product => "/products",
            ItemKind::Service => "/services",
            ItemKind::StockItem => "/stock_items",
        }
    }

    fn document_path(kind: DocumentKind) -> &'static str {
        match kind {
            DocumentKind::Invoice => "/sales_invoices",
            DocumentKind::CreditNote => "/sales_credit_notes",
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reference data

#[derive(Debug, Deserialize)]
struct SageBusiness {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    country: Option<Link>,
    #[serde(default)]
    ni_based: Option<bool>,
    #[serde(default)]
    subscriptions: Vec<SageSubscription>,
}

#[derive(Debug, Deserialize)]
struct SageSubscription {
    #[serde(default)]
    displayed_as: Option<String>,
    #[serde(default)]
    active: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct SageFinancialSettings {
    #[serde(default)]
    base_currency: Option<Link>,
    #[serde(default)]
    multi_currency_enabled: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct SageBusinessSettings {
    #[serde(default)]
    country_of_registration: Option<Link>,
}

#[derive(Debug, Deserialize)]
struct SageTaxRate {
    id: String,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    displayed_as: Option<String>,
    #[serde(default, with = "serde_decimal_opt")]
    percentage: Option<Decimal>,
    #[serde(default)]
    is_visible: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct SageLedgerAccount {
    id: String,
    #[serde(default)]
    displayed_as: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    nominal_code: Option<Value>,
    #[serde(default)]
    visible_in_sales: Option<bool>,
    #[serde(default)]
    visible_in_expenses: Option<bool>,
}

#[derive(Debug, Deserialize)]
struct SageBankAccount {
    id: String,
    #[serde(default)]
    displayed_as: Option<String>,
    #[serde(default)]
    currency: Option<Link>,
    #[serde(default)]
    deleted_at: Option<String>,
    /// `false` for an account closed in Sage (real `/bank_accounts` answers carry it).
    #[serde(default)]
    is_active: Option<bool>,
}

#[allow(clippy::too_many_arguments)]
fn build_reference(
    business_id: &str,
    business: SageBusiness,
    financial: SageFinancialSettings,
    settings: SageBusinessSettings,
    tax_rates: Vec<SageTaxRate>,
    sales: Vec<SageLedgerAccount>,
    expenses: Vec<SageLedgerAccount>,
    banks: Vec<SageBankAccount>,
    methods: Vec<Link>,
    currencies: Vec<Link>,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<ReferenceData> {
    let bad = |what: &str, detail: String| Error::Provider {
        provider: PROVIDER,
        status: None,
        message: format!("Sage reference data: {what}: {detail}"),
        retryable: false,
        source: None,
    };
    let base = financial.base_currency.as_ref().map(|l| l.id.as_str()).unwrap_or("");
    let base_currency = parse_currency(base).map_err(|e| bad("financial_settings.base_currency", e))?;
    let country =
        business.country.as_ref().map(|c| c.id.to_uppercase()).filter(|c| c.len() == 2).unwrap_or_else(|| {
            // The UK's own country ids in business settings.
            match settings.country_of_registration.as_ref().map(|c| c.id.as_str()) {
                Some("ENGLAND_AND_WALES" | "SCOTLAND" | "NORTHERN_IRELAND") => "GB".to_owned(),
                _ => String::new(),
            }
        });
    let northern_ireland = business.ni_based.unwrap_or(false)
        || settings.country_of_registration.as_ref().is_some_and(|c| c.id == "NORTHERN_IRELAND");
    let subscription = business
        .subscriptions
        .iter()
        .find(|s| s.active.unwrap_or(true))
        .or(business.subscriptions.first())
        .and_then(|s| s.displayed_as.clone());
    let mut accounts: Vec<LedgerAccount> = Vec::new();
    for (a, from_sales) in sales.into_iter().map(|a| (a, true)).chain(expenses.into_iter().map(|a| (a, false))) {
        if let Some(existing) = accounts.iter_mut().find(|x| x.id == a.id) {
            existing.visible_in_sales |= from_sales || a.visible_in_sales.unwrap_or(false);
            existing.visible_in_expenses |= !from_sales || a.visible_in_expenses.unwrap_or(false);
            continue;
        }
        accounts.push(LedgerAccount {
            name: a.displayed_as.or(a.name).unwrap_or_else(|| a.id.clone()),
            code: a.nominal_code.map(|v| v.as_str().map(str::to_owned).unwrap_or_else(|| v.to_string())),
            visible_in_sales: from_sales || a.visible_in_sales.unwrap_or(false),
            visible_in_expenses: !from_sales || a.visible_in_expenses.unwrap_or(false),
            id: a.id,
        });
    }
    Ok(ReferenceData {
        business: BusinessProfile {
            id: business_id.to_owned(),
            name: business.name.unwrap_or_default(),
            country,
            northern_ireland,
            base_currency,
            multi_currency: financial.multi_currency_enabled.unwrap_or(false),
            subscription,
        },
        tax_rates: tax_rates
            .into_iter()
            .map(|r| TaxRate {
                name: r.name.or(r.displayed_as).unwrap_or_else(|| r.id.clone()),
                percentage: r.percentage,
                visible: r.is_visible.unwrap_or(true),
                id: r.id,
            })
            .collect(),
        ledger_accounts: accounts,
        // A real `/bank_accounts` answer of a business without multi-currency carries no
        // `currency` key: every account is then in the base currency. With multi-currency on, a
        // missing currency stays unknown rather than guessed.
        bank_accounts: banks
            .into_iter()
            .map(|b| BankAccount {
                name: b.displayed_as.unwrap_or_else(|| b.id.clone()),
                currency: match b.currency {
                    Some(c) => parse_currency(&c.id).ok(),
                    None if !financial.multi_currency_enabled.unwrap_or(false) => Some(base_currency),
                    None => None,
                },
                active: b.deleted_at.is_none() && b.is_active != Some(false),
                id: b.id,
            })
            .collect(),
        payment_methods: methods
            .into_iter()
            .map(|m| PaymentMethod { name: m.displayed_as.unwrap_or_else(|| m.id.clone()), id: m.id })
            .collect(),
        currencies: currencies.into_iter().map(|c| c.id).collect(),
        fetched_at: now,
        extensions: Default::default(),
    })
}

/// What a Sage business can do, from its subscription tier and financial settings (sage-api.md
/// 4.9 and Q13): Start has no foreign currency, no allocations, no products and no customer
/// refunds; only Plus has stock. Standard and Plus refund a paid invoice's credit note as cash
/// (`credit_note_refunds`: a `CUSTOMER_REFUND` contact payment). An unknown tier is treated as
/// Plus (the ledger then refuses what it cannot do, with a clear error).
pub fn capabilities_of(business: &BusinessProfile) -> Capabilities {
    let tier = business.subscription.as_deref().unwrap_or("").to_lowercase();
    let start = tier.contains("start");
    let standard = tier.contains("standard");
    let mut c = Capabilities::full();
    c.multi_currency = business.multi_currency && !start;
    c.products = !start;
    c.allocations = !start;
    c.stock = !start && !standard;
    c.credit_note_refunds = !start;
    c.native_idempotency_window_secs = Some(7 * 24 * 3600);
    // A contact reference and an item code are unique (openapi-v3.1 "Unique reference for the
    // contact"; sage-api.md Q7; an item is addressed by its code): a new customer or product is
    // created first and looked up only when Sage refuses the reference or code as taken.
    c.unique_contact_reference = true;
    c.unique_item_code = true;
    c
}

// ---------------------------------------------------------------------------------------------
// Record mapping

fn contact_record(c: SageContact) -> ContactRecord {
    ContactRecord {
        id: c.id,
        reference: c.reference,
        currency: c.currency.and_then(|l| parse_currency(&l.id).ok()),
        name: c.name.or(c.displayed_as),
        email: c.email.or_else(|| c.main_contact_person.and_then(|p| p.email)),
    }
}

fn document_record(kind: DocumentKind, d: SageDocument) -> DocumentRecord {
    DocumentRecord {
        id: d.id,
        kind,
        reference: d.reference,
        number: d.displayed_as,
        contact_id: d.contact.map(|c| c.id),
        total: d.total_amount,
        outstanding: d.outstanding_amount,
        voided: d.status.is_some_and(|s| s.id.eq_ignore_ascii_case("VOID")) || d.void_reason.is_some(),
        exchange_rate: d.exchange_rate.filter(|r| *r > Decimal::ZERO),
    }
}

fn transaction_record(t: SageTransaction) -> TransactionRecord {
    TransactionRecord { id: t.id, reference: t.reference, total: t.total_amount }
}

fn item_record(kind: ItemKind, i: SageItem) -> ItemRecord {
    ItemRecord { id: i.id, kind, code: i.item_code.unwrap_or_default(), quantity_in_stock: i.quantity_in_stock }
}

/// The item holding exactly `code` that may be adopted. An item holding it that Sage reports as
/// inactive (`active: false` or `null`) or deleted is never adopted; when it is the only one, the
/// answer is an error telling the operator what to do, rather than a second item with the same
/// code.
fn usable_item(kind: ItemKind, code: &str, found: Vec<SageItem>) -> Result<Option<ItemRecord>> {
    let (usable, unusable): (Vec<SageItem>, Vec<SageItem>) =
        found.into_iter().filter(|i| i.item_code.as_deref() == Some(code)).partition(SageItem::is_usable);
    if let Some(i) = usable.into_iter().next() {
        return Ok(Some(item_record(kind, i)));
    }
    match unusable.first() {
        None => Ok(None),
        Some(i) => Err(Error::invalid(
            "item",
            "item_code",
            format!(
                "the Sage {} {code} ({}) is inactive{}: it is not adopted; reactivate it in Sage, or give the Magento product another SKU",
                kind.as_str().replace('_', " "),
                i.id,
                if i.deleted_at.is_some() { " (deleted)" } else { "" }
            ),
        )),
    }
}

/// Refuses a payment into a bank account the reference data knows as inactive (closed in Sage
/// after the policy was checked).
fn usable_bank_account(reference: &ReferenceData, id: &str) -> Result<()> {
    match reference.bank_account(id) {
        Some(b) if !b.active => Err(Error::invalid(
            "payment",
            "bank_account_id",
            format!(
                "not_in_reference: the Sage bank account {id} ({}) is inactive; reactivate it in Sage or map the payment method to another account in the policy",
                b.name
            ),
        )),
        _ => Ok(()),
    }
}

/// Reads Sage's answer, already parsed, as a `T` (the field named when it does not fit). The
/// value is read as it is: turning it back into text to parse it again cost 2.6 % of `serve`'s
/// CPU (round 30's profile).
fn parse<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T> {
    super::client::read_value(v, what)
}

/// The ids of the documents a payment or allocation settles, from Sage's answer.
fn artefact_ids(v: &Value) -> Vec<String> {
    v.get("allocated_artefacts")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|x| {
                    x.get("artefact")
                        .and_then(|a| a.get("id"))
                        .or_else(|| x.get("artefact_id"))
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------

#[async_trait]
impl AccountingProvider for SageProvider {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn refresh_tokens(&self) -> Result<bool> {
        self.tokens().refresh_now().await.map(|()| true)
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(capabilities_of(&self.reference_data(false).await?.business))
    }

    async fn reference_data(&self, refresh: bool) -> Result<Arc<ReferenceData>> {
        if !refresh && let Some(r) = self.reference.read().await.as_ref() {
            return Ok(Arc::clone(r));
        }
        // Single-flight: concurrent callers wait for one fetch.
        let _fetching = self.reference_fetch.lock().await;
        if !refresh && let Some(r) = self.reference.read().await.as_ref() {
            return Ok(Arc::clone(r));
        }
        let fresh = Arc::new(self.fetch_reference().await?);
        *self.reference.write().await = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    async fn find_contact(&self, reference: &str) -> Result<Option<ContactRecord>> {
        let found: Vec<SageContact> = self.client.get_all("/contacts", &[("search", reference.to_owned())]).await?;
        // A deleted or inactive contact is never adopted: it keeps its reference reserved, Sage
        // refuses it as taken, and `resolve_contact` moves to the next candidate (Q7, R3).
        Ok(found
            .into_iter()
            .filter(|c| c.reference.as_deref() == Some(reference) && c.is_usable())
            .map(contact_record)
            .next())
    }

    async fn create_contact(&self, request: &ContactRequest<'_>) -> Result<ContactRecord> {
        let reference = self.reference_data(false).await?;
        let body = match request.contact {
            ContactFor::Customer(c) => {
                transform::contact(
                    c,
                    request.currency,
                    request.reference,
                    request.policy,
                    &reference,
                    request.idempotency_key,
                )
                .request
            }
            ContactFor::Fallback => {
                transform::fallback_contact(request.policy, request.currency, request.reference, &reference)
            }
        };
        self.post_recovering("/contacts", &body, contact_record, || self.find_contact(request.reference)).await
    }

    async fn update_contact(&self, id: &str, request: &ContactRequest<'_>) -> Result<ContactRecord> {
        let reference = self.reference_data(false).await?;
        let mut body = match request.contact {
            ContactFor::Customer(c) => {
                transform::contact(c, request.currency, request.reference, request.policy, &reference, None).request
            }
            ContactFor::Fallback => {
                transform::fallback_contact(request.policy, request.currency, request.reference, &reference)
            }
        };
        body.contact.idempotency_id = None;
        // A contact's currency is locked once it has documents: never send it on an update.
        body.contact.currency_id = None;
        let v: Value = self.client.put(&format!("/contacts/{id}"), &body).await?;
        parse::<SageContact>(v, "PUT /contacts").map(contact_record)
    }

    async fn find_item(&self, kind: ItemKind, code: &str) -> Result<Option<ItemRecord>> {
        let wanted: String = if kind == ItemKind::StockItem {
            code.chars().take(transform::limits::STOCK_ITEM_CODE).collect()
        } else {
            code.chars().take(transform::limits::ITEM_FIELD).collect()
        };
        let found: Vec<SageItem> = self.client.get_all(Self::item_path(kind), &[("search", wanted.clone())]).await?;
        usable_item(kind, &wanted, found)
    }

    async fn get_item(&self, kind: ItemKind, id: &str) -> Result<ItemRecord> {
        let i: SageItem = self.client.get(&format!("{}/{id}", Self::item_path(kind)), &[]).await?;
        Ok(item_record(kind, i))
    }

    async fn create_item(&self, request: &ItemRequest<'_>) -> Result<ItemRecord> {
        let caps = self.capabilities().await?;
        if !caps.products || (request.kind == ItemKind::StockItem && !caps.stock) {
            return Err(Error::Unsupported {
                operation: format!("{} items on this subscription", request.kind.as_str()),
                provider: PROVIDER,
            });
        }
        let t = transform::item(request.product, request.kind, request.policy, request.idempotency_key)?;
        let path = Self::item_path(request.kind);
        let kind = request.kind;
        let map = move |i: SageItem| item_record(kind, i);
        let code = request.product.sku.clone();
        match &t.request {
            SageItemRequest::Product(b) => self.post_recovering(path, b, map, || self.find_item(kind, &code)).await,
            SageItemRequest::Service(b) => self.post_recovering(path, b, map, || self.find_item(kind, &code)).await,
            SageItemRequest::StockItem(b) => self.post_recovering(path, b, map, || self.find_item(kind, &code)).await,
        }
    }

    async fn update_item(&self, id: &str, request: &ItemRequest<'_>) -> Result<ItemRecord> {
        let mut t = transform::item(request.product, request.kind, request.policy, None)?;
        let path = format!("{}/{id}", Self::item_path(request.kind));
        let v: Value = match &mut t.request {
            SageItemRequest::Product(b) => self.client.put(&path, b).await?,
            SageItemRequest::Service(b) => self.client.put(&path, b).await?,
            SageItemRequest::StockItem(b) => self.client.put(&path, b).await?,
        };
        parse::<SageItem>(v, &path).map(|i| item_record(request.kind, i))
    }

    async fn post_stock_movement(&self, request: &StockMovementRequest<'_>) -> Result<Option<TransactionRecord>> {
        let Some(body) = transform::stock_movement(
            request.item_id,
            request.product,
            request.ledger_quantity,
            request.date,
            request.idempotency_key,
        ) else {
            return Ok(None);
        };
        let details = body.stock_movement.details.clone();
        let item_id = request.item_id.to_owned();
        let lookup = || async {
            let found: Vec<Value> =
                self.client.get_all("/stock_movements", &[("stock_item_id", item_id.clone())]).await?;
            Ok(found
                .into_iter()
                .find(|m| m.get("details").and_then(Value::as_str) == Some(details.as_str()))
                .and_then(|m| parse::<SageTransaction>(m, "/stock_movements").ok())
                .map(transaction_record))
        };
        self.post_recovering("/stock_movements", &body, transaction_record, lookup).await.map(Some)
    }

    async fn post_invoice(&self, request: &InvoiceRequest<'_>) -> Result<DocumentRecord> {
        let reference = self.reference_data(false).await?;
        let links = DocumentLinks {
            contact_id: request.contact_id,
            items: request.items,
            idempotency_key: Some(request.idempotency_key),
        };
        let t = transform::sales_invoice(request.invoice, request.policy, &reference, &links)?;
        for note in &t.notes {
            tracing::info!(invoice = %request.invoice.increment_id, "{note}");
        }
        let doc_ref = t.request.sales_invoice.reference.clone();
        self.post_recovering(
            "/sales_invoices",
            &t.request,
            |d: SageDocument| document_record(DocumentKind::Invoice, d),
            || self.find_document(DocumentKind::Invoice, &doc_ref),
        )
        .await
    }

    async fn post_credit_note(&self, request: &CreditNoteRequest<'_>) -> Result<DocumentRecord> {
        let reference = self.reference_data(false).await?;
        if !self.capabilities().await?.credit_notes {
            return Err(Error::Unsupported { operation: "credit notes".into(), provider: PROVIDER });
        }
        let links = DocumentLinks {
            contact_id: request.contact_id,
            items: request.items,
            idempotency_key: Some(request.idempotency_key),
        };
        let t =
            transform::sales_credit_note(request.memo, request.policy, &reference, &links, request.invoice_addresses)?;
        let doc_ref = t.request.sales_credit_note.reference.clone();
        self.post_recovering(
            "/sales_credit_notes",
            &t.request,
            |d: SageDocument| document_record(DocumentKind::CreditNote, d),
            || self.find_document(DocumentKind::CreditNote, &doc_ref),
        )
        .await
    }

    async fn list_entries(
        &self,
        kind: crate::providers::EntryKind,
        from: chrono::NaiveDate,
        to: chrono::NaiveDate,
    ) -> Result<Vec<crate::providers::LedgerEntry>> {
        super::listing::list_entries(&self.client, kind, from, to).await
    }

    async fn find_document(&self, kind: DocumentKind, reference: &str) -> Result<Option<DocumentRecord>> {
        let found: Vec<SageDocument> =
            self.client.get_all(Self::document_path(kind), &[("search", reference.to_owned())]).await?;
        Ok(found.into_iter().find(|d| d.reference.as_deref() == Some(reference)).map(|d| document_record(kind, d)))
    }

    async fn get_document(&self, kind: DocumentKind, id: &str) -> Result<DocumentRecord> {
        // Reading a sales document marks it as sent unless told otherwise (Q17).
        let d: SageDocument = self
            .client
            .get(&format!("{}/{id}", Self::document_path(kind)), &[("mark_as_sent", "false".into())])
            .await?;
        Ok(document_record(kind, d))
    }

    async fn void_document(&self, kind: DocumentKind, id: &str, reason: &str) -> Result<()> {
        let reason: String = reason.trim().chars().take(transform::limits::VOID_REASON).collect();
        let reason = if reason.is_empty() { "Voided by byte8-ledger".to_owned() } else { reason };
        self.client.delete(&format!("{}/{id}", Self::document_path(kind)), &[("void_reason", reason)]).await
    }

    async fn post_payment(&self, request: &PaymentRequest<'_>) -> Result<TransactionRecord> {
        let reference = self.reference_data(false).await?;
        usable_bank_account(&reference, request.bank_account_id)?;
        let exchange = transform::exchange_rate(
            request.payment.currency,
            reference.business.base_currency,
            request.invoice_base_to_order_rate,
        );
        let links = PaymentLinks {
            contact_id: request.contact_id,
            invoice_id: request.invoice_id,
            bank_account_id: request.bank_account_id,
            exchange_rate: exchange,
            date: request.date(&reference.business.country),
            outstanding: request.outstanding,
            idempotency_key: Some(request.idempotency_key),
        };
        let body = transform::contact_payment(request.payment, request.policy, &links);
        let payment_ref = body.contact_payment.reference.clone();
        let date = body.contact_payment.date;
        // Look up by what was posted: a receipt with nothing to allocate settles no invoice.
        let ids: Vec<&str> =
            if body.contact_payment.allocated_artefacts.is_empty() { Vec::new() } else { vec![request.invoice_id] };
        self.post_recovering("/contact_payments", &body, transaction_record, || {
            let lookup = TransactionLookup {
                contact_id: request.contact_id,
                reference: payment_ref.as_deref(),
                date,
                artefact_ids: &ids,
            };
            async move { self.find_transaction(TransactionKind::Payment, &lookup).await }
        })
        .await
    }

    async fn allocate(&self, request: &AllocationRequest<'_>) -> Result<TransactionRecord> {
        if !self.capabilities().await?.allocations {
            return Err(Error::Unsupported {
                operation: "allocations on this subscription".into(),
                provider: PROVIDER,
            });
        }
        let body = transform::credit_note_allocation(
            request.contact_id,
            request.invoice_id,
            request.credit_note_id,
            request.amount,
            request.date,
            Some(request.idempotency_key),
        );
        let ids = [request.invoice_id, request.credit_note_id];
        self.post_recovering("/contact_allocations", &body, transaction_record, || {
            let lookup = TransactionLookup {
                contact_id: request.contact_id,
                reference: None,
                date: request.date,
                artefact_ids: &ids,
            };
            async move { self.find_transaction(TransactionKind::Allocation, &lookup).await }
        })
        .await
    }

    async fn refund_credit_note(&self, request: &RefundRequest<'_>) -> Result<TransactionRecord> {
        if !self.capabilities().await?.credit_note_refunds {
            return Err(Error::Unsupported {
                operation: "customer refunds on this subscription".into(),
                provider: PROVIDER,
            });
        }
        let reference = self.reference_data(false).await?;
        // The refund is in the credit note's currency (a contact trades in one currency): the
        // caller's when it knows it, else read from the note.
        let base = reference.business.base_currency;
        let currency = match request.currency {
            Some(c) => c,
            None => {
                let note: SageDocument = self
                    .client
                    .get(
                        &format!("/sales_credit_notes/{}", request.credit_note_id),
                        &[("mark_as_sent", "false".into())],
                    )
                    .await?;
                note.currency.as_ref().and_then(|c| parse_currency(&c.id).ok()).unwrap_or(base)
            }
        };
        let body = transform::credit_note_refund(
            request.contact_id,
            request.credit_note_id,
            request.bank_account_id,
            request.amount,
            request.date,
            currency,
            transform::exchange_rate(currency, base, request.base_to_order_rate),
            request.reference,
            Some(request.idempotency_key),
        );
        let refund_ref = body.contact_payment.reference.clone();
        let ids = [request.credit_note_id];
        self.post_recovering("/contact_payments", &body, transaction_record, || {
            let lookup = TransactionLookup {
                contact_id: request.contact_id,
                reference: refund_ref.as_deref(),
                date: request.date,
                artefact_ids: &ids,
            };
            async move { self.find_transaction(TransactionKind::Refund, &lookup).await }
        })
        .await
    }

    async fn find_transaction(
        &self,
        kind: TransactionKind,
        lookup: &TransactionLookup<'_>,
    ) -> Result<Option<TransactionRecord>> {
        let day = lookup.date.format("%Y-%m-%d").to_string();
        let found: Vec<Value> = match kind {
            TransactionKind::Payment | TransactionKind::Refund => {
                let kind_id = if kind == TransactionKind::Payment { "CUSTOMER_RECEIPT" } else { "CUSTOMER_REFUND" };
                let listed: Vec<Value> = self
                    .client
                    .get_all(
                        "/contact_payments",
                        &[
                            ("contact_id", lookup.contact_id.to_owned()),
                            ("transaction_type_id", kind_id.into()),
                            ("from_date", day.clone()),
                            ("to_date", day.clone()),
                        ],
                    )
                    .await?;
                // The filter is Sage's; a receipt and a refund of the same reference on the same
                // day must never be taken for each other, so the type is checked again here.
                listed
                    .into_iter()
                    .filter(|v| {
                        v.get("transaction_type")
                            .and_then(|t| t.get("id"))
                            .and_then(Value::as_str)
                            .is_none_or(|t| t == kind_id)
                    })
                    .collect()
            }
            TransactionKind::Allocation => {
                self.client
                    .get_all(
                        "/contact_allocations",
                        &[
                            ("contact_id", lookup.contact_id.to_owned()),
                            ("transaction_type_id", "CUSTOMER_ALLOCATION".into()),
                        ],
                    )
                    .await?
            }
        };
        let matches = |v: &Value| {
            let ids = artefact_ids(v);
            let reference_ok = lookup.reference.is_none_or(|r| v.get("reference").and_then(Value::as_str) == Some(r));
            let date_ok = v.get("date").and_then(Value::as_str).is_none_or(|d| d == day);
            let ids_ok = lookup.artefact_ids.iter().all(|id| ids.iter().any(|x| x == id));
            reference_ok && date_ok && ids_ok
        };
        // A match that cannot be read is an error, not "not found": answering `None` would let the
        // engine post the transaction a second time.
        let path = if kind == TransactionKind::Allocation { "/contact_allocations" } else { "/contact_payments" };
        found
            .into_iter()
            .find(|v| matches(v))
            .map(|v| parse::<SageTransaction>(v, path).map(transaction_record))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Currency;

    fn business(sub: Option<&str>, multi: bool) -> BusinessProfile {
        BusinessProfile {
            id: "b".into(),
            name: "B".into(),
            country: "GB".into(),
            northern_ireland: false,
            base_currency: Currency::GBP,
            multi_currency: multi,
            subscription: sub.map(Into::into),
        }
    }

    #[test]
    fn capabilities_follow_the_tier() {
        let plus = capabilities_of(&business(Some("Accounting Plus"), true));
        assert!(plus.multi_currency && plus.stock && plus.allocations && plus.products);
        let standard = capabilities_of(&business(Some("Accounting Standard"), true));
        assert!(!standard.stock && standard.allocations && standard.products);
        let start = capabilities_of(&business(Some("Accounting Start"), true));
        assert!(!start.multi_currency && !start.allocations && !start.products && !start.stock);
        assert!(plus.credit_note_refunds && standard.credit_note_refunds, "Standard and Plus refund customers");
        assert!(!start.credit_note_refunds, "Start has no customer refunds (Q13)");
        let off = capabilities_of(&business(Some("Accounting Plus"), false));
        assert!(!off.multi_currency, "multi-currency also needs the financial setting");
        assert_eq!(plus.native_idempotency_window_secs, Some(604_800));
    }

    #[test]
    fn artefact_ids_read_both_shapes() {
        let v = serde_json::json!({"allocated_artefacts": [{"artefact": {"id": "I1"}, "amount": "10.00"}, {"artefact_id": "C1"}]});
        assert_eq!(artefact_ids(&v), vec!["I1", "C1"]);
    }
}
