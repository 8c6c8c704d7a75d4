//! `XeroProvider`: the [`AccountingProvider`] of one Xero organisation. Thin I/O: each method
//! looks up what it needs, calls the pure transform, and sends the request through
//! [`XeroClient`].
//!
//! - **Batches**: contacts, invoices, credit notes and payments go in arrays of up to
//!   `max_batch` (50) with `summarizeErrors=false`, and every element's own answer is mapped to
//!   its own result (Q1): a bad element never hides the ids of the good ones.
//! - **Writes whose outcome is unknown** (a timeout, a 5xx after sending) are never re-sent
//!   blindly: every record of the batch is looked up by its number first (one request for up to
//!   50 invoice numbers), and only those not found are sent again — as a new, smaller batch with
//!   its own `Idempotency-Key`. Xero's native key (≈ 6 minutes) covers an immediate retry; the
//!   look-up covers everything after.
//! - **Ids**: every Xero id is a GUID; an id that is not one was never issued by Xero and is
//!   answered `not_found` without a request.

use std::{collections::BTreeMap, sync::Arc};

use async_trait::async_trait;
use reqwest::Method;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{
    PROVIDER,
    client::XeroClient,
    error::{annotate, element_messages},
    model::{self, ContactOut, DocumentOut, ItemOut, PaymentOut},
    transform::{self, DocumentLinks, StockAdjustment},
};
use crate::http::resend::ResendBudget;
use crate::{
    auth::{OAuthClient, TokenManager, TokenSet},
    error::{Error, Result},
    http::RequestStats,
    money::{parse_currency, serde_decimal_opt},
    plan::DocumentKind,
    policy::SyncPolicy,
    providers::{
        AccountingProvider, AllocationRequest, Capabilities, ContactFor, ContactRecord, ContactRequest,
        CreditNoteRequest, DocumentRecord, InvoiceRequest, ItemKind, ItemRecord, ItemRequest, PaymentRequest,
        RefundRequest, StockMovementRequest, TransactionKind, TransactionLookup, TransactionRecord,
    },
    reference::{BankAccount, BusinessProfile, LedgerAccount, ReferenceData, TaxRate},
};

/// How long Xero replays an `Idempotency-Key` (≈ 6 minutes, xero-api.md 4.1, UNCONFIRMED).
pub const IDEMPOTENCY_WINDOW_SECS: u64 = 360;

/// Contact numbers looked up in one `where` filter (keeps the query short, \[J331\]).
const LOOKUP_CHUNK: usize = 50;

/// One organisation (tenant) the token can reach (`GET /connections`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct XeroConnection {
    /// The connection's id (what disconnecting one organisation needs, not the tenant id).
    pub id: String,
    /// The organisation's id: the `xero-tenant-id` header.
    #[serde(rename = "tenantId")]
    pub tenant_id: String,
    /// `ORGANISATION` or `PRACTICE`.
    #[serde(rename = "tenantType", default)]
    pub tenant_type: Option<String>,
    /// The organisation's name.
    #[serde(rename = "tenantName", default)]
    pub tenant_name: Option<String>,
}

/// The Xero provider of one organisation. Build it with [`XeroBuilder`](super::XeroBuilder).
pub struct XeroProvider {
    client: XeroClient,
    oauth: OAuthClient,
    max_batch: usize,
    reference: tokio::sync::RwLock<Option<Arc<ReferenceData>>>,
    reference_fetch: tokio::sync::Mutex<()>,
    adjustment_contact: tokio::sync::Mutex<Option<String>>,
}

impl std::fmt::Debug for XeroProvider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XeroProvider")
            .field("client", &self.client)
            .field("max_batch", &self.max_batch)
            .finish_non_exhaustive()
    }
}

/// Is `id` a GUID (what Xero issues for every record)?
fn is_guid(id: &str) -> bool {
    let parts: Vec<&str> = id.split('-').collect();
    parts.len() == 5
        && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

fn not_issued(what: &str, id: &str) -> Error {
    Error::NotFound { what: format!("Xero {what}"), id: format!("{id} (not an id Xero issues: ids are GUIDs)") }
}

fn json<T: Serialize>(v: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(v).map_err(|e| Error::internal(format!("cannot serialise a Xero request: {e}")))
}

fn element_error(status: u16, messages: Vec<String>) -> Error {
    Error::Rejected { provider: PROVIDER, status, errors: messages.iter().map(|m| annotate(m)).collect() }
}

/// Quotes a value for Xero's `where` filter, refusing what cannot be quoted.
fn quoted(v: &str) -> Option<String> {
    (!v.contains('"') && !v.contains('\\')).then(|| format!("\"{v}\""))
}

fn contact_record(c: ContactOut) -> Option<ContactRecord> {
    Some(ContactRecord {
        id: c.contact_id?,
        reference: c.contact_number,
        currency: c.default_currency.as_deref().and_then(|x| parse_currency(x).ok()),
        name: c.name,
        email: c.email_address,
    })
}

fn document_record(kind: DocumentKind, d: &DocumentOut) -> Option<DocumentRecord> {
    let (id, number, outstanding) = match kind {
        DocumentKind::Invoice => (d.invoice_id.clone()?, d.invoice_number.clone(), d.amount_due),
        DocumentKind::CreditNote => (d.credit_note_id.clone()?, d.credit_note_number.clone(), d.remaining_credit),
    };
    Some(DocumentRecord {
        id,
        kind,
        reference: number.clone(),
        number,
        contact_id: d.contact.as_ref().and_then(|c| c.contact_id.clone()),
        total: d.total,
        outstanding,
        voided: matches!(d.status.as_deref(), Some("VOIDED" | "DELETED")),
        exchange_rate: d
            .currency_rate
            .filter(|r| *r > Decimal::ZERO)
            .and_then(|r| Decimal::ONE.checked_div(r))
            .map(|r| crate::money::RoundingPolicy::HalfUp.round(r, 10).normalize()),
    })
}

fn payment_record(p: &PaymentOut) -> Option<TransactionRecord> {
    Some(TransactionRecord { id: p.payment_id.clone()?, reference: p.reference.clone(), total: p.amount })
}

fn has_errors(v: &Value) -> bool {
    v.get("HasErrors").and_then(Value::as_bool) == Some(true)
        || v.get("HasValidationErrors").and_then(Value::as_bool) == Some(true)
        || v.get("StatusAttributeString").and_then(Value::as_str) == Some("ERROR")
        || !element_messages(v).is_empty()
}

/// What one element of a batch is: its body and the key it is recovered by.
struct Element<B> {
    body: B,
    number: String,
    event_key: String,
}

impl XeroProvider {
    pub(super) fn from_parts(client: XeroClient, oauth: OAuthClient, max_batch: usize) -> Self {
        Self {
            client,
            oauth,
            max_batch,
            reference: tokio::sync::RwLock::new(None),
            reference_fetch: tokio::sync::Mutex::new(()),
            adjustment_contact: tokio::sync::Mutex::new(None),
        }
    }

    /// The organisation (`xero-tenant-id`).
    pub fn tenant_id(&self) -> &str {
        &self.client.tenant_id
    }

    /// Request counters (calls per endpoint, retries, 429s).
    pub fn stats(&self) -> &RequestStats {
        &self.client.stats
    }

    /// The token manager (refresh count, invalidation).
    pub fn tokens(&self) -> &TokenManager {
        &self.client.tokens
    }

    /// The largest batch this provider sends.
    pub fn max_batch(&self) -> usize {
        self.max_batch
    }

    /// Exchanges an authorisation code from Xero's consent screen for a token pair.
    ///
    /// # Errors
    /// [`Error::Auth`] when Xero refuses the code.
    pub async fn exchange_code(&self, code: &str, redirect_uri: &str) -> Result<TokenSet> {
        self.oauth.exchange_code(code, redirect_uri, self.client.clock.now()).await
    }

    /// Every organisation the stored token can reach (`GET /connections`).
    ///
    /// # Errors
    /// The connections endpoint's errors.
    pub async fn connections(&self) -> Result<Vec<XeroConnection>> {
        self.client.connections().await
    }

    /// Checks that this provider's tenant is among the token's connections (an empty list for a
    /// valid token means the connection was removed, Q21), and answers it.
    ///
    /// # Errors
    /// [`Error::Auth`] when the tenant is not connected; the endpoint's errors.
    pub async fn connection(&self) -> Result<XeroConnection> {
        let all = self.connections().await?;
        let listed: Vec<String> =
            all.iter().map(|c| format!("{} ({})", c.tenant_id, c.tenant_name.as_deref().unwrap_or("?"))).collect();
        all.into_iter().find(|c| c.tenant_id == self.client.tenant_id).ok_or_else(|| Error::Auth {
            provider: PROVIDER,
            reason: crate::error::AuthFailure::ReconnectRequired,
            message: format!(
                "organisation {} is not among this token's Xero connections [{}]: reconnect it (byte8-ledger connect --provider xero)",
                self.client.tenant_id,
                listed.join(", ")
            ),
        })
    }

    /// The Xero `AccountID` of a bank account id of the reference data (a code or an id).
    async fn account_id(&self, bank_account_id: &str) -> Result<String> {
        if is_guid(bank_account_id) {
            return Ok(bank_account_id.to_owned());
        }
        let r = self.reference_data(false).await?;
        r.extensions.get(&format!("{ACCOUNT_ID_KEY}{bank_account_id}")).cloned().ok_or_else(|| {
            Error::invalid(
                "payment",
                "bank_account_id",
                format!("not_in_reference: {bank_account_id} is not a bank account (or payments-enabled account) of this Xero organisation"),
            )
        })
    }

    async fn fetch_reference(&self) -> Result<ReferenceData> {
        let c = &self.client;
        let (org, rates, accounts, currencies) = futures::try_join!(
            c.get::<Value>("/Organisation", &[]),
            c.get::<Value>("/TaxRates", &[]),
            c.get::<Value>("/Accounts", &[]),
            c.get::<Value>("/Currencies", &[]),
        )?;
        build_reference(&c.tenant_id, &org, &rates, &accounts, &currencies, c.clock.now())
    }

    // ---- batches ------------------------------------------------------------------------------

    /// Sends `elements` in batches of `max_batch` to `path` (`PUT`, `summarizeErrors=false`),
    /// maps each answer element with `map`, and recovers batches whose answer was lost with
    /// `lookup` (numbers → records found).
    async fn send_batches<B, R, M, L, Fut>(
        &self,
        path: &str,
        envelope: &str,
        purpose: &str,
        elements: Vec<Result<Element<B>>>,
        map: M,
        lookup: L,
    ) -> Vec<Result<R>>
    where
        B: Serialize + Sync,
        R: Send,
        M: Fn(&Value) -> Option<R> + Sync,
        L: Fn(Vec<String>) -> Fut + Sync,
        Fut: std::future::Future<Output = Result<BTreeMap<String, R>>> + Send,
    {
        let mut out: Vec<Option<Result<R>>> = Vec::with_capacity(elements.len());
        let mut pending: Vec<(usize, Element<B>)> = Vec::new();
        for (i, e) in elements.into_iter().enumerate() {
            match e {
                Ok(el) => {
                    out.push(None);
                    pending.push((i, el));
                }
                Err(err) => out.push(Some(Err(err))),
            }
        }
        let chunks: Vec<Vec<(usize, Element<B>)>> = {
            let mut v = Vec::new();
            let mut it = pending.into_iter().peekable();
            while it.peek().is_some() {
                v.push(it.by_ref().take(self.max_batch.max(1)).collect());
            }
            v
        };
        for chunk in chunks {
            let mut todo: Vec<&(usize, Element<B>)> = chunk.iter().collect();
            let mut last_err: Option<Error> = None;
            // Re-sent as often as the request's retry budget allows (`ResendBudget`).
            let mut budget = ResendBudget::new(self.client.retry);
            let mut round = 0u32;
            while !todo.is_empty() {
                let bodies: Vec<&B> = todo.iter().map(|(_, e)| &e.body).collect();
                let mut wrapper = serde_json::Map::new();
                wrapper.insert(envelope.to_owned(), serde_json::to_value(&bodies).unwrap_or(Value::Null));
                let body = match json(&Value::Object(wrapper)) {
                    Ok(b) => b,
                    Err(e) => {
                        last_err = Some(e);
                        break;
                    }
                };
                let key =
                    transform::batch_idempotency_key(purpose, todo.iter().map(|(_, e)| e.event_key.as_str()), &body);
                let query = [("summarizeErrors", "false".to_owned()), ("unitdp", "4".to_owned())];
                let query: &[(&str, String)] =
                    if purpose == "contacts" || purpose == "payments" { &query[..1] } else { &query };
                match self.client.write::<Value>(Method::PUT, path, query, body, &key).await {
                    Ok(answer) => {
                        let items = answer.get(envelope).and_then(Value::as_array).cloned().unwrap_or_default();
                        for (pos, (i, el)) in todo.iter().enumerate() {
                            let item = items.get(pos);
                            let result = match item {
                                Some(v) if has_errors(v) => Err(element_error(400, element_messages(v))),
                                Some(v) => map(v).ok_or_else(|| Error::Provider {
                                    provider: PROVIDER,
                                    status: None,
                                    message: format!(
                                        "PUT {path}: element {pos} ({}) came back without an id",
                                        el.number
                                    ),
                                    retryable: false,
                                    source: None,
                                }),
                                None => Err(Error::Provider {
                                    provider: PROVIDER,
                                    status: None,
                                    message: format!(
                                        "PUT {path}: Xero answered {} elements for {}",
                                        items.len(),
                                        todo.len()
                                    ),
                                    retryable: true,
                                    source: None,
                                }),
                            };
                            out[*i] = Some(result);
                        }
                        todo.clear();
                    }
                    Err(e) if e.outcome_unknown() => {
                        tracing::warn!(path, round, elements = todo.len(), error = %e, "batch outcome unknown; looking every element up before any second write");
                        let numbers: Vec<String> = todo.iter().map(|(_, el)| el.number.clone()).collect();
                        match lookup(numbers).await {
                            Ok(mut found) => {
                                todo.retain(|(i, el)| match found.remove(&el.number) {
                                    Some(r) => {
                                        out[*i] = Some(Ok(r));
                                        false
                                    }
                                    None => true,
                                });
                                last_err = Some(e);
                                if !todo.is_empty() {
                                    let Some(wait) = budget.next_resend() else { break };
                                    tracing::info!(
                                        path,
                                        missing = todo.len(),
                                        "re-sending only the elements Xero does not hold"
                                    );
                                    round += 1;
                                    tokio::time::sleep(wait).await;
                                }
                            }
                            Err(lookup_err) => {
                                tracing::warn!(path, error = %lookup_err, "the recovery look-up failed");
                                last_err = Some(e);
                                break;
                            }
                        }
                    }
                    Err(e) => {
                        last_err = Some(e);
                        break;
                    }
                }
            }
            if !todo.is_empty() {
                let e = last_err.unwrap_or_else(|| Error::internal("batch ended without an answer"));
                for (i, _) in &todo {
                    out[*i] = Some(Err(e.copy()));
                }
            }
        }
        out.into_iter().map(|r| r.unwrap_or_else(|| Err(Error::internal("batch element without a result")))).collect()
    }

    async fn find_invoices_by_number(
        &self,
        kind: DocumentKind,
        numbers: &[String],
    ) -> Result<BTreeMap<String, DocumentRecord>> {
        let mut out = BTreeMap::new();
        for chunk in numbers.chunks(LOOKUP_CHUNK) {
            let docs: Vec<DocumentOut> = match kind {
                DocumentKind::Invoice => {
                    let v: Value = self.client.get("/Invoices", &[("InvoiceNumbers", chunk.join(","))]).await?;
                    serde_json::from_value(v.get("Invoices").cloned().unwrap_or(Value::Array(Vec::new())))
                        .unwrap_or_default()
                }
                DocumentKind::CreditNote => {
                    let clauses: Vec<String> =
                        chunk.iter().filter_map(|n| quoted(n)).map(|q| format!("CreditNoteNumber=={q}")).collect();
                    let v: Value = self.client.get("/CreditNotes", &[("where", clauses.join(" OR "))]).await?;
                    serde_json::from_value(v.get("CreditNotes").cloned().unwrap_or(Value::Array(Vec::new())))
                        .unwrap_or_default()
                }
            };
            for d in &docs {
                if d.kind.as_deref().is_some_and(|k| k.starts_with("ACCPAY")) {
                    continue;
                }
                if let Some(r) = document_record(kind, d)
                    && let Some(n) = r.number.clone()
                    && chunk.contains(&n)
                {
                    out.insert(n, r);
                }
            }
        }
        Ok(out)
    }

    async fn get_document_out(&self, kind: DocumentKind, id: &str) -> Result<DocumentOut> {
        let (path, envelope) = match kind {
            DocumentKind::Invoice => (format!("/Invoices/{id}"), "Invoices"),
            DocumentKind::CreditNote => (format!("/CreditNotes/{id}"), "CreditNotes"),
        };
        if !is_guid(id) {
            return Err(not_issued(kind.what(), id));
        }
        let v: Value = self.client.get(&path, &[]).await?;
        let first = v.get(envelope).and_then(Value::as_array).and_then(|a| a.first()).cloned();
        first
            .and_then(|d| serde_json::from_value(d).ok())
            .ok_or_else(|| Error::NotFound { what: format!("Xero {}", kind.what()), id: id.to_owned() })
    }

    fn contact_body(&self, request: &ContactRequest<'_>) -> model::Contact {
        match request.contact {
            ContactFor::Customer(c) => transform::contact(c, request.reference, request.policy),
            ContactFor::Fallback => transform::fallback_contact(request.policy, request.reference),
        }
    }

    /// The stock-adjustment supplier contact (found by its number, else created once).
    async fn adjustment_contact(&self) -> Result<String> {
        let mut held = self.adjustment_contact.lock().await;
        if let Some(id) = held.as_ref() {
            return Ok(id.clone());
        }
        let number = transform::ADJUSTMENT_CONTACT_NUMBER;
        let id = match self.find_contact(number).await? {
            Some(c) => c.id,
            None => {
                let body = model::Contact {
                    contact_id: None,
                    contact_number: number.into(),
                    name: "Inventory Adjustments (byte8-ledger)".into(),
                    first_name: None,
                    last_name: None,
                    email_address: None,
                    tax_number: None,
                    addresses: Vec::new(),
                    phones: Vec::new(),
                };
                let element = Element { body, number: number.into(), event_key: number.into() };
                self.send_batches(
                    "/Contacts",
                    "Contacts",
                    "contacts",
                    vec![Ok(element)],
                    |v| serde_json::from_value::<ContactOut>(v.clone()).ok().and_then(contact_record),
                    |numbers| self.contacts_by_number(numbers),
                )
                .await
                .pop()
                .unwrap_or_else(|| Err(Error::internal("no answer")))?
                .id
            }
        };
        *held = Some(id.clone());
        Ok(id)
    }

    async fn contacts_by_number(&self, numbers: Vec<String>) -> Result<BTreeMap<String, ContactRecord>> {
        let refs: Vec<&str> = numbers.iter().map(String::as_str).collect();
        let found = self.find_contacts(&refs).await?;
        Ok(numbers.into_iter().zip(found).filter_map(|(n, c)| c.map(|c| (n, c))).collect())
    }

    async fn payments_batch(
        &self,
        elements: Vec<Result<Element<model::Payment>>>,
        lookups: Vec<(String, String, chrono::NaiveDate)>,
    ) -> Vec<Result<TransactionRecord>> {
        // The look-up of a lost payment: the invoice's (or credit note's) payments, by reference and date.
        let lookups = &lookups;
        self.send_batches(
            "/Payments",
            "Payments",
            "payments",
            elements,
            |v| serde_json::from_value::<PaymentOut>(v.clone()).ok().as_ref().and_then(payment_record),
            |numbers| async move {
                let mut out = BTreeMap::new();
                for n in numbers {
                    let Some((_, reference, date)) = lookups.iter().find(|(a, ..)| *a == n) else { continue };
                    let (kind, artefact) = match n.split_once(':') {
                        Some(("cn", id)) => (TransactionKind::Refund, id),
                        Some((_, id)) => (TransactionKind::Payment, id),
                        None => (TransactionKind::Payment, n.as_str()),
                    };
                    let ids = [artefact];
                    let lookup = TransactionLookup {
                        contact_id: "",
                        reference: Some(reference),
                        date: *date,
                        artefact_ids: &ids,
                    };
                    if let Some(t) = self.find_transaction(kind, &lookup).await? {
                        out.insert(n.clone(), t);
                    }
                }
                Ok(out)
            },
        )
        .await
    }
}

/// Prefix of the reference-data extensions mapping a bank account's code to its `AccountID`.
pub const ACCOUNT_ID_KEY: &str = "xero.account_id.";

fn arr<'a>(v: &'a Value, key: &str) -> Vec<&'a Value> {
    v.get(key).and_then(Value::as_array).map(|a| a.iter().collect()).unwrap_or_default()
}

fn text(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned).filter(|s| !s.is_empty())
}

#[derive(Deserialize)]
struct Rate {
    #[serde(default, rename = "EffectiveRate", with = "serde_decimal_opt")]
    effective: Option<Decimal>,
    #[serde(default, rename = "DisplayTaxRate", with = "serde_decimal_opt")]
    display: Option<Decimal>,
}

/// Builds the provider-neutral reference data from Xero's `/Organisation`, `/TaxRates`,
/// `/Accounts` and `/Currencies` answers:
///
/// - tax rates: the active ones that apply to revenue, by `TaxType` (the id a policy maps to);
/// - ledger accounts: active accounts with a code, by code (what `AccountCode` takes); revenue
///   and liability accounts are sales-visible, expense and direct-cost accounts expense-visible;
/// - bank accounts: `BANK` accounts and accounts with "Enable payments to this account" (Q23, D5),
///   by code (or `AccountID` when they have none);
/// - multi-currency when the organisation holds a currency besides its base (only multi-currency
///   plans can, Q5); the inventory asset account (tracked inventory) in the extensions.
///
/// # Errors
/// [`Error::Provider`] when the organisation has no readable base currency.
pub fn build_reference(
    tenant_id: &str,
    org: &Value,
    rates: &Value,
    accounts: &Value,
    currencies: &Value,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<ReferenceData> {
    let o = arr(org, "Organisations").first().copied().cloned().unwrap_or(Value::Null);
    let base = text(&o, "BaseCurrency").unwrap_or_default();
    let base_currency = parse_currency(&base).map_err(|e| Error::Provider {
        provider: PROVIDER,
        status: None,
        message: format!("Xero reference data: Organisation.BaseCurrency: {e}"),
        retryable: false,
        source: None,
    })?;
    let codes: Vec<String> = arr(currencies, "Currencies")
        .iter()
        .filter_map(|c| text(c, "Code"))
        .filter(|c| parse_currency(c).is_ok())
        .collect();
    let mut all = vec![base.clone()];
    all.extend(codes.into_iter().filter(|c| *c != base));
    let tax_rates = arr(rates, "TaxRates")
        .into_iter()
        .filter(|r| text(r, "Status").is_none_or(|s| s == "ACTIVE"))
        .filter(|r| r.get("CanApplyToRevenue").and_then(Value::as_bool).unwrap_or(true))
        .filter_map(|r| {
            let id = text(r, "TaxType")?;
            let pct: Option<Rate> = serde_json::from_value(r.clone()).ok();
            Some(TaxRate {
                name: text(r, "Name").unwrap_or_else(|| id.clone()),
                percentage: pct.and_then(|p| p.effective.or(p.display)),
                visible: true,
                id,
            })
        })
        .collect();
    let mut extensions = BTreeMap::new();
    extensions.insert("xero.tenant_id".to_owned(), tenant_id.to_owned());
    let mut ledger_accounts = Vec::new();
    let mut bank_accounts = Vec::new();
    for a in arr(accounts, "Accounts") {
        if text(a, "Status").is_some_and(|s| s != "ACTIVE") {
            continue;
        }
        let kind = text(a, "Type").unwrap_or_default();
        let code = text(a, "Code");
        let account_id = text(a, "AccountID");
        let name = text(a, "Name").unwrap_or_default();
        if kind == "INVENTORY"
            && let Some(c) = &code
        {
            extensions.entry(transform::INVENTORY_ACCOUNT_KEY.to_owned()).or_insert_with(|| c.clone());
        }
        let payable = kind == "BANK" || a.get("EnablePaymentsToAccount").and_then(Value::as_bool) == Some(true);
        if payable && let Some(aid) = &account_id {
            let id = code.clone().unwrap_or_else(|| aid.clone());
            extensions.insert(format!("{ACCOUNT_ID_KEY}{id}"), aid.clone());
            bank_accounts.push(BankAccount {
                id,
                name: name.clone(),
                currency: text(a, "CurrencyCode").and_then(|c| parse_currency(&c).ok()).or(Some(base_currency)),
                active: true,
            });
        }
        if kind == "BANK" {
            continue;
        }
        let Some(code) = code else { continue };
        let sales =
            matches!(kind.as_str(), "REVENUE" | "SALES" | "OTHERINCOME" | "CURRLIAB" | "LIABILITY" | "TERMLIAB");
        let expenses = matches!(kind.as_str(), "DIRECTCOSTS" | "EXPENSE" | "OVERHEADS");
        ledger_accounts.push(LedgerAccount {
            name: format!("{code} {name}"),
            code: Some(code.clone()),
            visible_in_sales: sales,
            visible_in_expenses: expenses,
            id: code,
        });
    }
    Ok(ReferenceData {
        business: BusinessProfile {
            id: tenant_id.to_owned(),
            name: text(&o, "Name").unwrap_or_default(),
            country: text(&o, "CountryCode").unwrap_or_default().to_uppercase(),
            northern_ireland: false,
            base_currency,
            multi_currency: all.len() > 1,
            subscription: text(&o, "Class"),
        },
        tax_rates,
        ledger_accounts,
        bank_accounts,
        payment_methods: Vec::new(),
        currencies: all,
        fetched_at: now,
        extensions,
    })
}

/// What a Xero organisation can do: one contact for every currency, batches of `max_batch`,
/// Xero's short idempotency window, payments that settle their invoice in one call, credit notes
/// refunded as cash, stock only when the organisation has an inventory asset account (tracked
/// inventory).
pub fn capabilities_of(reference: &ReferenceData, max_batch: usize) -> Capabilities {
    let mut c = Capabilities::full();
    c.multi_currency = reference.business.multi_currency;
    c.contact_per_currency = false;
    c.stock = transform::inventory_account(reference).is_some();
    c.native_idempotency_window_secs = Some(IDEMPOTENCY_WINDOW_SECS);
    c.max_batch = max_batch.max(1);
    c.max_contact_reference = transform::limits::CONTACT_NUMBER;
    c.max_document_reference = transform::limits::DOCUMENT_NUMBER;
    c.credit_note_refunds = true;
    c.unique_contact_reference = true;
    c
}

#[async_trait]
impl AccountingProvider for XeroProvider {
    fn name(&self) -> &'static str {
        PROVIDER
    }

    async fn capabilities(&self) -> Result<Capabilities> {
        Ok(capabilities_of(&*self.reference_data(false).await?, self.max_batch))
    }

    async fn reference_data(&self, refresh: bool) -> Result<Arc<ReferenceData>> {
        if !refresh && let Some(r) = self.reference.read().await.as_ref() {
            return Ok(Arc::clone(r));
        }
        let _one = self.reference_fetch.lock().await;
        if !refresh && let Some(r) = self.reference.read().await.as_ref() {
            return Ok(Arc::clone(r));
        }
        let fresh = Arc::new(self.fetch_reference().await?);
        *self.reference.write().await = Some(Arc::clone(&fresh));
        Ok(fresh)
    }

    async fn find_contact(&self, reference: &str) -> Result<Option<ContactRecord>> {
        Ok(self.find_contacts(&[reference]).await?.pop().flatten())
    }

    async fn find_contacts(&self, references: &[&str]) -> Result<Vec<Option<ContactRecord>>> {
        let mut by_number: BTreeMap<String, ContactOut> = BTreeMap::new();
        for chunk in references.chunks(LOOKUP_CHUNK) {
            let clauses: Vec<String> =
                chunk.iter().filter_map(|n| quoted(n)).map(|q| format!("ContactNumber=={q}")).collect();
            if clauses.is_empty() {
                continue;
            }
            // Archived contacts are hidden unless asked for (Q4).
            let v: Value = self
                .client
                .get("/Contacts", &[("where", clauses.join(" OR ")), ("includeArchived", "true".into())])
                .await?;
            for c in arr(&v, "Contacts") {
                if let Ok(c) = serde_json::from_value::<ContactOut>(c.clone())
                    && let Some(n) = c.contact_number.clone()
                {
                    // An active contact wins over an archived one holding the same number.
                    let keep = by_number.get(&n).is_none_or(|old| old.contact_status.as_deref() == Some("ARCHIVED"));
                    if keep {
                        by_number.insert(n, c);
                    }
                }
            }
        }
        let mut out = Vec::with_capacity(references.len());
        for r in references {
            let Some(c) = by_number.remove(*r) else {
                out.push(None);
                continue;
            };
            if c.contact_status.as_deref() == Some("ARCHIVED") {
                // An archived contact cannot take new documents (Q4): follow a merge, else
                // un-archive it.
                if let Some(target) = c.merged_to_contact_id.clone().filter(|t| is_guid(t)) {
                    let v: Value = self.client.get(&format!("/Contacts/{target}"), &[]).await?;
                    out.push(
                        arr(&v, "Contacts")
                            .first()
                            .and_then(|x| serde_json::from_value::<ContactOut>((*x).clone()).ok())
                            .and_then(contact_record),
                    );
                    continue;
                }
                if let Some(id) = c.contact_id.clone() {
                    tracing::warn!(contact = %id, number = %r, "un-archiving the Xero contact holding this number so it can take documents");
                    let body = json(&serde_json::json!({"Contacts": [{"ContactID": id, "ContactStatus": "ACTIVE"}]}))?;
                    let key = transform::idempotency_key(r, "unarchive_contact", &body);
                    let _: Value = self.client.write(Method::POST, &format!("/Contacts/{id}"), &[], body, &key).await?;
                }
            }
            out.push(contact_record(c));
        }
        Ok(out)
    }

    async fn create_contact(&self, request: &ContactRequest<'_>) -> Result<ContactRecord> {
        self.create_contacts(std::slice::from_ref(request))
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("no answer")))
    }

    async fn create_contacts(&self, requests: &[ContactRequest<'_>]) -> Vec<Result<ContactRecord>> {
        let elements =
            |names: &dyn Fn(usize, model::Contact) -> model::Contact| -> Vec<Result<Element<model::Contact>>> {
                requests
                    .iter()
                    .enumerate()
                    .map(|(i, r)| {
                        let body = names(i, self.contact_body(r));
                        Ok(Element {
                            number: body.contact_number.clone(),
                            event_key: format!("{}:{}", r.idempotency_key.unwrap_or(""), r.reference),
                            body,
                        })
                    })
                    .collect()
            };
        let map = |v: &Value| serde_json::from_value::<ContactOut>(v.clone()).ok().and_then(contact_record);
        let mut results = self
            .send_batches("/Contacts", "Contacts", "contacts", elements(&|_, c| c), map, |n| self.contacts_by_number(n))
            .await;
        // Names are unique among active contacts (Q3): a clash is retried once with the number in
        // the name ("Jane Doe (M5)").
        let clashed: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(
                |(_, r)| matches!(r, Err(Error::Rejected { errors, .. }) if errors.iter().any(|e| e.field == "Name")),
            )
            .map(|(i, _)| i)
            .collect();
        if !clashed.is_empty() {
            let retry: Vec<Result<Element<model::Contact>>> = elements(&|_, mut c| {
                c.name = transform::unique_name(&c.name, &c.contact_number);
                c
            })
            .into_iter()
            .enumerate()
            .filter(|(i, _)| clashed.contains(i))
            .map(|(_, e)| e)
            .collect();
            let again = self
                .send_batches("/Contacts", "Contacts", "contacts", retry, map, |n| self.contacts_by_number(n))
                .await;
            for (i, r) in clashed.into_iter().zip(again) {
                results[i] = r;
            }
        }
        results
    }

    async fn update_contact(&self, id: &str, request: &ContactRequest<'_>) -> Result<ContactRecord> {
        if !is_guid(id) {
            return Err(not_issued("contact", id));
        }
        let mut body = self.contact_body(request);
        body.contact_id = Some(id.to_owned());
        let wire = json(&serde_json::json!({ "Contacts": [body] }))?;
        let key =
            transform::idempotency_key(request.idempotency_key.unwrap_or(request.reference), "update_contact", &wire);
        let v: Value = match self.client.write(Method::POST, &format!("/Contacts/{id}"), &[], wire, &key).await {
            Err(Error::Rejected { errors, .. }) if errors.iter().any(|e| e.field == "Name") => {
                body.name = transform::unique_name(&body.name, &body.contact_number);
                let wire = json(&serde_json::json!({ "Contacts": [body] }))?;
                let key = transform::idempotency_key(request.reference, "update_contact", &wire);
                self.client.write(Method::POST, &format!("/Contacts/{id}"), &[], wire, &key).await?
            }
            other => other?,
        };
        arr(&v, "Contacts")
            .first()
            .and_then(|c| serde_json::from_value::<ContactOut>((*c).clone()).ok())
            .and_then(contact_record)
            .ok_or_else(|| Error::internal("POST /Contacts answered no contact"))
    }

    async fn find_item(&self, kind: ItemKind, code: &str) -> Result<Option<ItemRecord>> {
        let wanted = transform::item_code(code);
        let Some(q) = quoted(&wanted) else { return Ok(None) };
        let v: Value = self.client.get("/Items", &[("where", format!("Code=={q}"))]).await?;
        Ok(arr(&v, "Items")
            .into_iter()
            .filter_map(|i| serde_json::from_value::<ItemOut>(i.clone()).ok())
            .find(|i| i.code.as_deref() == Some(wanted.as_str()))
            .filter(|i| (kind == ItemKind::StockItem) == i.is_tracked_as_inventory.unwrap_or(false))
            .and_then(|i| item_record(kind, i, code)))
    }

    async fn get_item(&self, kind: ItemKind, id: &str) -> Result<ItemRecord> {
        if !is_guid(id) {
            return Err(not_issued("item", id));
        }
        let v: Value = self.client.get(&format!("/Items/{id}"), &[]).await?;
        arr(&v, "Items")
            .first()
            .and_then(|i| serde_json::from_value::<ItemOut>((*i).clone()).ok())
            .and_then(|i| {
                let code = i.code.clone().unwrap_or_default();
                item_record(kind, i, &code)
            })
            .ok_or_else(|| Error::NotFound { what: "Xero item".into(), id: id.to_owned() })
    }

    async fn create_item(&self, request: &ItemRequest<'_>) -> Result<ItemRecord> {
        let reference = self.reference_data(false).await?;
        if request.kind == ItemKind::StockItem && transform::inventory_account(&reference).is_none() {
            return Err(Error::Unsupported {
                operation: "tracked inventory (no inventory asset account)".into(),
                provider: PROVIDER,
            });
        }
        let body = transform::item(request.product, request.kind, request.policy, &reference)?;
        let kind = request.kind;
        let sku = request.product.sku.clone();
        let element =
            Element { number: body.code.clone(), event_key: request.idempotency_key.unwrap_or(&sku).to_owned(), body };
        self.send_batches(
            "/Items",
            "Items",
            "items",
            vec![Ok(element)],
            |v| serde_json::from_value::<ItemOut>(v.clone()).ok().and_then(|i| item_record(kind, i, &sku)),
            |_| async {
                let mut out = BTreeMap::new();
                if let Some(found) = self.find_item(kind, &sku).await? {
                    out.insert(transform::item_code(&sku), found);
                }
                Ok(out)
            },
        )
        .await
        .pop()
        .unwrap_or_else(|| Err(Error::internal("no answer")))
    }

    async fn update_item(&self, id: &str, request: &ItemRequest<'_>) -> Result<ItemRecord> {
        if !is_guid(id) {
            return Err(not_issued("item", id));
        }
        let reference = self.reference_data(false).await?;
        let mut body = transform::item(request.product, request.kind, request.policy, &reference)?;
        body.item_id = Some(id.to_owned());
        let wire = json(&serde_json::json!({ "Items": [body] }))?;
        let key =
            transform::idempotency_key(request.idempotency_key.unwrap_or(&request.product.sku), "update_item", &wire);
        let v: Value = self.client.write(Method::POST, &format!("/Items/{id}"), &[], wire, &key).await?;
        arr(&v, "Items")
            .first()
            .and_then(|i| serde_json::from_value::<ItemOut>((*i).clone()).ok())
            .and_then(|i| item_record(request.kind, i, &request.product.sku))
            .ok_or_else(|| Error::internal("POST /Items answered no item"))
    }

    async fn post_stock_movement(&self, request: &StockMovementRequest<'_>) -> Result<Option<TransactionRecord>> {
        let reference = self.reference_data(false).await?;
        let policy =
            SyncPolicy { default_purchase_ledger_account_id: Some(cogs_code(&reference)), ..SyncPolicy::default() };
        let contact = self.adjustment_contact().await?;
        let Some(adjustment) = transform::stock_adjustment(
            request.product,
            request.ledger_quantity,
            request.date,
            &contact,
            &policy,
            &reference,
            request.idempotency_key,
        )?
        else {
            return Ok(None);
        };
        let number = adjustment.number().to_owned();
        let event_key = request.idempotency_key.unwrap_or(&number).to_owned();
        let (path, envelope, kind) = match &adjustment {
            StockAdjustment::Increase(_) => ("/Invoices", "Invoices", DocumentKind::Invoice),
            StockAdjustment::Decrease(_) => ("/CreditNotes", "CreditNotes", DocumentKind::CreditNote),
        };
        let body = match &adjustment {
            StockAdjustment::Increase(i) => serde_json::to_value(i),
            StockAdjustment::Decrease(c) => serde_json::to_value(c),
        }
        .map_err(|e| Error::internal(e.to_string()))?;
        let element = Element { body, number: number.clone(), event_key };
        let map = |v: &Value| {
            let d: DocumentOut = serde_json::from_value(v.clone()).ok()?;
            let id = d.invoice_id.or(d.credit_note_id)?;
            Some(TransactionRecord { id, reference: Some(number.clone()), total: Some(Decimal::ZERO) })
        };
        let lookup = |numbers: Vec<String>| async move {
            let mut out = BTreeMap::new();
            for n in numbers {
                let v: Value = match kind {
                    DocumentKind::Invoice => self.client.get("/Invoices", &[("InvoiceNumbers", n.clone())]).await?,
                    DocumentKind::CreditNote => {
                        self.client.get("/CreditNotes", &[("where", format!("CreditNoteNumber==\"{n}\""))]).await?
                    }
                };
                if let Some(d) =
                    arr(&v, envelope).first().and_then(|d| serde_json::from_value::<DocumentOut>((*d).clone()).ok())
                    && let Some(id) = d.invoice_id.or(d.credit_note_id)
                {
                    out.insert(n.clone(), TransactionRecord { id, reference: Some(n), total: Some(Decimal::ZERO) });
                }
            }
            Ok(out)
        };
        self.send_batches(path, envelope, "stock_adjustment", vec![Ok(element)], map, lookup)
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("no answer")))
            .map(Some)
    }

    async fn post_invoice(&self, request: &InvoiceRequest<'_>) -> Result<DocumentRecord> {
        self.post_invoices(std::slice::from_ref(request))
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("no answer")))
    }

    async fn post_invoices(&self, requests: &[InvoiceRequest<'_>]) -> Vec<Result<DocumentRecord>> {
        let reference = match self.reference_data(false).await {
            Ok(r) => r,
            Err(e) => return requests.iter().map(|_| Err(e.copy())).collect(),
        };
        let no_items = BTreeMap::new();
        let elements = |with_items: &dyn Fn(usize) -> bool| -> Vec<Result<Element<model::Invoice>>> {
            requests
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    let items = if with_items(i) { r.items } else { &no_items };
                    let links = DocumentLinks { contact_id: r.contact_id, items };
                    let t = transform::invoice(r.invoice, r.policy, &reference, &links)?;
                    for note in &t.notes {
                        tracing::info!(invoice = %r.invoice.increment_id, "{note}");
                    }
                    Ok(Element {
                        number: t.request.invoice_number.clone(),
                        event_key: r.idempotency_key.to_owned(),
                        body: t.request,
                    })
                })
                .collect()
        };
        let map = |v: &Value| {
            serde_json::from_value::<DocumentOut>(v.clone())
                .ok()
                .and_then(|d| document_record(DocumentKind::Invoice, &d))
        };
        let lookup =
            |numbers: Vec<String>| async move { self.find_invoices_by_number(DocumentKind::Invoice, &numbers).await };
        let mut results =
            self.send_batches("/Invoices", "Invoices", "invoices", elements(&|_| true), map, lookup).await;
        // Q17: Xero refuses to sell a tracked item below zero. Magento sold it (backorders): the
        // sale is booked without the item links, and the item's level is left to the next
        // product.upserted, which sets it to Magento's.
        let short: Vec<usize> = results
            .iter()
            .enumerate()
            .filter(|(i, r)| {
                !requests[*i].items.is_empty()
                    && matches!(r, Err(Error::Rejected { errors, .. })
                        if errors.iter().any(|e| e.message.to_lowercase().contains("available to sell")))
            })
            .map(|(i, _)| i)
            .collect();
        if !short.is_empty() {
            tracing::warn!(
                invoices = short.len(),
                "Xero has not the stock these invoices sell: posting them without item links"
            );
            let retry: Vec<Result<Element<model::Invoice>>> = elements(&|i| !short.contains(&i))
                .into_iter()
                .enumerate()
                .filter(|(i, _)| short.contains(i))
                .map(|(_, e)| e)
                .collect();
            let again = self.send_batches("/Invoices", "Invoices", "invoices", retry, map, lookup).await;
            for (i, r) in short.into_iter().zip(again) {
                results[i] = r;
            }
        }
        results
    }

    async fn post_credit_note(&self, request: &CreditNoteRequest<'_>) -> Result<DocumentRecord> {
        self.post_credit_notes(std::slice::from_ref(request))
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("no answer")))
    }

    async fn post_credit_notes(&self, requests: &[CreditNoteRequest<'_>]) -> Vec<Result<DocumentRecord>> {
        let reference = match self.reference_data(false).await {
            Ok(r) => r,
            Err(e) => return requests.iter().map(|_| Err(e.copy())).collect(),
        };
        let elements = requests
            .iter()
            .map(|r| {
                let links = DocumentLinks { contact_id: r.contact_id, items: r.items };
                let t = transform::credit_note(r.memo, r.policy, &reference, &links, r.invoice_addresses)?;
                Ok(Element {
                    number: t.request.credit_note_number.clone(),
                    event_key: r.idempotency_key.to_owned(),
                    body: t.request,
                })
            })
            .collect();
        self.send_batches(
            "/CreditNotes",
            "CreditNotes",
            "credit_notes",
            elements,
            |v| {
                serde_json::from_value::<DocumentOut>(v.clone())
                    .ok()
                    .and_then(|d| document_record(DocumentKind::CreditNote, &d))
            },
            |numbers| async move { self.find_invoices_by_number(DocumentKind::CreditNote, &numbers).await },
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
        if reference.contains(',') {
            return Ok(None);
        }
        Ok(self.find_invoices_by_number(kind, &[reference.to_owned()]).await?.remove(reference))
    }

    async fn get_document(&self, kind: DocumentKind, id: &str) -> Result<DocumentRecord> {
        let d = self.get_document_out(kind, id).await?;
        document_record(kind, &d)
            .ok_or_else(|| Error::NotFound { what: format!("Xero {}", kind.what()), id: id.to_owned() })
    }

    async fn void_document(&self, kind: DocumentKind, id: &str, reason: &str) -> Result<()> {
        if !is_guid(id) {
            return Err(not_issued(kind.what(), id));
        }
        let (path, envelope, id_field) = match kind {
            DocumentKind::Invoice => (format!("/Invoices/{id}"), "Invoices", "InvoiceID"),
            DocumentKind::CreditNote => (format!("/CreditNotes/{id}"), "CreditNotes", "CreditNoteID"),
        };
        tracing::info!(document = %id, reason, "voiding a Xero document");
        let body = json(&serde_json::json!({ envelope: [{ id_field: id, "Status": "VOIDED" }] }))?;
        let key = transform::idempotency_key(id, "void", &body);
        match self.client.write::<Value>(Method::POST, &path, &[], body, &key).await {
            Ok(_) => Ok(()),
            Err(e) if e.outcome_unknown() => {
                // Look it up: voided already is success.
                if self.get_document(kind, id).await?.voided { Ok(()) } else { Err(e) }
            }
            Err(e) => Err(e),
        }
    }

    async fn post_payment(&self, request: &PaymentRequest<'_>) -> Result<TransactionRecord> {
        self.post_payments(std::slice::from_ref(request))
            .await
            .pop()
            .unwrap_or_else(|| Err(Error::internal("no answer")))
    }

    async fn post_payments(&self, requests: &[PaymentRequest<'_>]) -> Vec<Result<TransactionRecord>> {
        let reference = match self.reference_data(false).await {
            Ok(r) => r,
            Err(e) => return requests.iter().map(|_| Err(e.copy())).collect(),
        };
        let base = reference.business.base_currency;
        let country = reference.business.country.clone();
        let mut elements = Vec::with_capacity(requests.len());
        let mut lookups = Vec::new();
        for r in requests {
            let element = async {
                let account = self.account_id(r.bank_account_id).await?;
                let rate = transform::currency_rate(r.payment.currency, base, r.invoice_base_to_order_rate);
                let body = transform::payment(
                    r.payment,
                    r.policy,
                    r.invoice_id,
                    &account,
                    r.outstanding,
                    rate,
                    r.date(&country),
                );
                let number = format!("inv:{}", r.invoice_id);
                Ok::<_, Error>((Element { body, number, event_key: r.idempotency_key.to_owned() }, r))
            }
            .await;
            elements.push(element.map(|(e, r)| {
                lookups.push((e.number.clone(), e.body.reference.clone().unwrap_or_default(), r.date(&country)));
                e
            }));
        }
        self.payments_batch(elements, lookups).await
    }

    async fn allocate(&self, request: &AllocationRequest<'_>) -> Result<TransactionRecord> {
        if !is_guid(request.credit_note_id) {
            return Err(not_issued("credit note", request.credit_note_id));
        }
        let body = transform::allocation(request.invoice_id, request.amount, request.date);
        let wire = json(&serde_json::json!({ "Allocations": [body] }))?;
        let key = transform::idempotency_key(request.idempotency_key, "allocation", &wire);
        let path = format!("/CreditNotes/{}/Allocations", request.credit_note_id);
        let ids = [request.invoice_id, request.credit_note_id];
        let lookup = TransactionLookup {
            contact_id: request.contact_id,
            reference: None,
            date: request.date,
            artefact_ids: &ids,
        };
        let mut budget = ResendBudget::new(self.client.retry);
        loop {
            match self
                .client
                .write::<Value>(Method::PUT, &path, &[("summarizeErrors", "false".into())], wire.clone(), &key)
                .await
            {
                Ok(v) => {
                    let first = arr(&v, "Allocations").first().copied().cloned().unwrap_or(Value::Null);
                    if has_errors(&first) {
                        return Err(element_error(400, element_messages(&first)));
                    }
                    let id = text(&first, "AllocationID")
                        .unwrap_or_else(|| format!("{}:{}", request.credit_note_id, request.invoice_id));
                    return Ok(TransactionRecord { id, reference: None, total: Some(request.amount) });
                }
                Err(e) if e.outcome_unknown() => {
                    if let Some(found) = self.find_transaction(TransactionKind::Allocation, &lookup).await? {
                        return Ok(found);
                    }
                    match budget.next_resend() {
                        Some(wait) => tokio::time::sleep(wait).await,
                        None => return Err(e),
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn refund_credit_note(&self, request: &RefundRequest<'_>) -> Result<TransactionRecord> {
        let reference = self.reference_data(false).await?;
        let account = self.account_id(request.bank_account_id).await?;
        let note = self.get_document_out(DocumentKind::CreditNote, request.credit_note_id).await?;
        let base = reference.business.base_currency;
        let currency = note.currency_code.as_deref().and_then(|c| parse_currency(c).ok()).unwrap_or(base);
        let rate = transform::currency_rate(currency, base, request.base_to_order_rate);
        let body =
            transform::refund(request.credit_note_id, &account, request.amount, request.date, request.reference, rate);
        let element = Element {
            body,
            number: format!("cn:{}", request.credit_note_id),
            event_key: request.idempotency_key.to_owned(),
        };
        let lookups = vec![(element.number.clone(), request.reference.to_owned(), request.date)];
        self.payments_batch(vec![Ok(element)], lookups).await.pop().unwrap_or_else(|| Err(Error::internal("no answer")))
    }

    async fn find_transaction(
        &self,
        kind: TransactionKind,
        lookup: &TransactionLookup<'_>,
    ) -> Result<Option<TransactionRecord>> {
        match kind {
            TransactionKind::Payment | TransactionKind::Refund => {
                let Some(artefact) = lookup.artefact_ids.first() else { return Ok(None) };
                let doc_kind =
                    if kind == TransactionKind::Payment { DocumentKind::Invoice } else { DocumentKind::CreditNote };
                let d = match self.get_document_out(doc_kind, artefact).await {
                    Ok(d) => d,
                    Err(Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                };
                Ok(d.payments
                    .iter()
                    .filter(|p| p.status.as_deref() != Some("DELETED"))
                    .filter(|p| lookup.reference.is_none_or(|r| p.reference.as_deref() == Some(r)))
                    .find(|p| p.date.as_deref().and_then(model::ms_date) == Some(lookup.date))
                    .and_then(payment_record))
            }
            TransactionKind::Allocation => {
                let (Some(invoice), Some(note)) = (lookup.artefact_ids.first(), lookup.artefact_ids.get(1)) else {
                    return Ok(None);
                };
                let d = match self.get_document_out(DocumentKind::CreditNote, note).await {
                    Ok(d) => d,
                    Err(Error::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                };
                Ok(d.allocations
                    .iter()
                    .find(|a| a.invoice.as_ref().and_then(|i| i.invoice_id.as_deref()) == Some(*invoice))
                    .map(|a| TransactionRecord {
                        id: a.allocation_id.clone().unwrap_or_else(|| format!("{note}:{invoice}")),
                        reference: None,
                        total: a.amount,
                    }))
            }
        }
    }
}

/// The cost-of-goods-sold account stock adjustments book against: the first expense-visible
/// direct-cost account of the organisation (Xero's demo: `310`).
fn cogs_code(reference: &ReferenceData) -> String {
    reference
        .ledger_accounts
        .iter()
        .find(|a| a.visible_in_expenses)
        .map(|a| a.id.clone())
        .unwrap_or_else(|| "310".into())
}

fn item_record(kind: ItemKind, i: ItemOut, sku: &str) -> Option<ItemRecord> {
    let code = i.code.clone().unwrap_or_default();
    Some(ItemRecord {
        id: i.item_id?,
        kind,
        code: if transform::item_code(sku) == code { sku.to_owned() } else { code },
        quantity_in_stock: if kind == ItemKind::StockItem {
            Some(i.quantity_on_hand.unwrap_or_default())
        } else {
            None
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_are_recognised() {
        assert!(is_guid("3f1a9c2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"));
        assert!(!is_guid("3f1a9c2e5b7d4e8f9a0b1c2d3e4f5a6b"));
        assert!(!is_guid("M5"));
    }

    #[test]
    fn where_values_are_quoted_or_refused() {
        assert_eq!(quoted("M5").as_deref(), Some("\"M5\""));
        assert_eq!(quoted("a\"b"), None);
    }
}
