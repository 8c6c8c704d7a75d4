//! A stateful fake of the Xero Accounting API 2.0 subset the crate uses, with Xero's identity
//! endpoints, served on a loopback port like the Sage simulator.
//!
//! It enforces Xero's documented rules (xero-api.md; Q numbers are its quirks table):
//!
//! - **OAuth**: client id and secret as HTTP Basic; access tokens that expire (30 minutes by
//!   default); refresh tokens that rotate on every use, the previous one still honoured for a
//!   30-minute grace period (built for lost answers), `invalid_grant` after it; `GET /connections`
//!   listing the organisations; every Accounting call needs a bearer token **and**
//!   `xero-tenant-id` of a connected organisation (403 `AuthenticationUnsuccessful` otherwise).
//! - **Authorisation code**: the authorize endpoint (`/identity/connect/authorize`,
//!   [`XeroServer::authorize_url`]) requires a PKCE S256 challenge and serves an approval page
//!   whose approve link redirects back with a `code` and the `state` echoed (approving connects
//!   every organisation of the simulator: one token reaches several); the token endpoint's
//!   `authorization_code` grant takes a code once, within 60 seconds on the simulator's clock,
//!   for the same `redirect_uri` and with the matching `code_verifier`; `DELETE
//!   /connections/{id}` removes one organisation, `POST /connect/revocation` kills the refresh
//!   token and removes them all ([`XeroState::disconnected`]).
//! - **Limits** per organisation: 60 calls in any minute, 5 in flight at once (an admitted call
//!   stays in flight across the answer's latency, or while a test holds its
//!   [`InFlight`]; refused calls and the identity endpoints never count), 5,000 in a rolling
//!   day (all configurable), each breach answered 429 with `Retry-After` and
//!   `X-Rate-Limit-Problem` (`minute`, `concurrent`, `day`); every answer carries
//!   `X-MinLimit-Remaining`, `X-DayLimit-Remaining` and `X-AppMinLimit-Remaining`.
//! - **`Idempotency-Key`**: over 128 characters → 400; the same key with the same body within the
//!   window (6 minutes) replays the first answer, errors included; the same key with another
//!   body → 400.
//! - **Batches**: writes take plural envelopes (`{"Invoices": […]}`, else 400
//!   `NoDataProcessedException`); with `summarizeErrors=false` the answer is 200 with every element
//!   echoed, failed ones flagged with `HasErrors` and their `ValidationErrors`; without it one bad
//!   element makes the answer a 400 `ValidationException` listing only the failures **while the
//!   good elements are still created** (Q1).
//! - **Contacts**: `ContactNumber` unique and ≤ 50 ("Another contact has this contact number"),
//!   `Name` required and unique among active contacts (Q3); archived contacts hidden from lists
//!   unless `includeArchived=true` and refused on new documents (Q4); no `DefaultCurrency`: one
//!   contact takes every currency.
//! - **Invoices and credit notes**: ACCREC numbers unique ("Invoice # must be unique."); an
//!   AUTHORISED document needs an active account code and a tax type on every line; the currency
//!   must be the base or one of the organisation's currencies ("Organisation is not subscribed to
//!   currency"); quantities never negative; unit amounts with 2 decimals, 4 with `unitdp=4`;
//!   discounts only on ACCREC invoices (Q12); tax computed **per line**, rounded half up, from the
//!   tax type and the document's `LineAmountTypes` unless `TaxAmount` overrides it (never more
//!   than the line amount); totals owned by Xero (Q22); dates answered as MS-JSON (Q20);
//!   AUTHORISED → VOIDED only without payments or allocations (Q9).
//! - **Payments** only against AUTHORISED documents, at most what is outstanding (Q6, Q7), into a
//!   `BANK` account or one with payments enabled (Q23); a payment against a credit note is its
//!   cash refund (`ARCREDITPAYMENT`).
//! - **Allocations** (`PUT /CreditNotes/{id}/Allocations`, field `Amount`): an AUTHORISED credit
//!   note against an AUTHORISED invoice of the same contact, within both outstanding amounts (Q8).
//! - **Items**: codes unique and ≤ 30, names ≤ 50 (Q19); a tracked item needs an inventory asset
//!   account and a COGS account; its quantity changes only through approved documents (sales
//!   invoices take stock, credit notes return it, bills add it, supplier credits remove it) and
//!   never goes below zero ("No item(s) available to sell", Q17).
//!
//! The rules shared with the Sage simulator and the memory provider (settling against what a
//! document owes, uniqueness, stock arithmetic) come from
//! [`byte8_ledger_core::providers::memory::rules`]; what is Xero's own (AUTHORISED only,
//! `AmountDue` derived from paid and credited, contact names unique regardless of case among
//! active contacts, no stock below zero) is named there and kept here.
//!
//! Faults are injected as in the Sage simulator ([`super::Fault`]): scripted per `METHOD /Resource`
//! or at random rates.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, VecDeque},
    net::SocketAddr,
    sync::Arc,
    time::Duration,
};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::{Fault, FaultRates, SimRequest, SimResponse, SimServer};
use byte8_ledger_core::{
    clock::{Clock, SystemClock},
    money::{RoundingPolicy, round_money},
    providers::memory::rules,
};

/// The refresh token the demo organisation is connected with.
pub const XERO_DEMO_REFRESH_TOKEN: &str = "demo-xero-refresh-token";
/// The demo organisation's tenant id.
pub const XERO_DEMO_TENANT: &str = "6f1c2b3a-4d5e-4f60-8a7b-9c0d1e2f3a4b";

/// Simulator settings.
#[derive(Debug, Clone)]
pub struct XeroSimConfig {
    /// The OAuth client id it accepts.
    pub client_id: String,
    /// The OAuth client secret it accepts.
    pub client_secret: String,
    /// Access-token lifetime (Xero: 30 minutes).
    pub access_token_ttl: Duration,
    /// How long a rotated refresh token is still honoured (Xero: 30 minutes).
    pub refresh_grace: Duration,
    /// Calls in any 60 seconds per organisation (`None`: unlimited).
    pub per_minute: Option<u32>,
    /// Calls in flight at once per organisation.
    pub concurrent: Option<usize>,
    /// Calls in any 24 hours per organisation.
    pub per_day: Option<u32>,
    /// How long an `Idempotency-Key` is replayed.
    pub idempotency_window: Duration,
    /// Answer latency range (uniform), when set.
    pub latency: Option<(Duration, Duration)>,
    /// Random fault rates.
    pub faults: FaultRates,
    /// Seed of the fault and token randomness.
    pub seed: u64,
}

impl Default for XeroSimConfig {
    /// Xero's documented limits: 60 a minute, 5 at once, 5,000 a day; 30-minute tokens.
    fn default() -> Self {
        Self {
            client_id: "demo-client".into(),
            client_secret: "demo-secret".into(),
            access_token_ttl: Duration::from_secs(1800),
            refresh_grace: Duration::from_secs(1800),
            per_minute: Some(60),
            concurrent: Some(5),
            per_day: Some(5_000),
            idempotency_window: Duration::from_secs(360),
            latency: None,
            faults: FaultRates::default(),
            seed: 42,
        }
    }
}

impl XeroSimConfig {
    /// No limits at all (tests of other things).
    pub fn unlimited() -> Self {
        Self { per_minute: None, concurrent: None, per_day: None, ..Self::default() }
    }
}

/// An account.
#[derive(Debug, Clone)]
pub struct XAccount {
    /// `AccountID`.
    pub id: String,
    /// `Code`.
    pub code: Option<String>,
    /// `Name`.
    pub name: String,
    /// `Type` (`REVENUE`, `BANK`, `INVENTORY`, …).
    pub kind: String,
    /// Currency of a bank account.
    pub currency: Option<String>,
    /// "Enable payments to this account".
    pub enable_payments: bool,
}

/// A tax rate.
#[derive(Debug, Clone)]
pub struct XTaxRate {
    /// `TaxType`.
    pub tax_type: String,
    /// `Name`.
    pub name: String,
    /// The rate in percent (`20` for 20 %).
    pub rate: Decimal,
    /// Applies to revenue.
    pub revenue: bool,
}

/// A contact.
#[derive(Debug, Clone)]
pub struct XContact {
    /// `ContactID`.
    pub id: String,
    /// `ContactNumber`.
    pub number: Option<String>,
    /// `Name`.
    pub name: String,
    /// `EmailAddress`.
    pub email: Option<String>,
    /// `ACTIVE` or `ARCHIVED`.
    pub status: String,
    /// The stored JSON.
    pub json: Value,
}

/// An invoice, bill or credit note.
#[derive(Debug, Clone)]
pub struct XDoc {
    /// The simulator's id of the document (a GUID like Xero's).
    pub id: String,
    /// `ACCREC`, `ACCPAY`, `ACCRECCREDIT`, `ACCPAYCREDIT`.
    pub kind: String,
    /// The document number (`InvoiceNumber` / `CreditNoteNumber`).
    pub number: String,
    /// The document's `Reference`, when set.
    pub reference: Option<String>,
    /// The id of the contact the document is for.
    pub contact_id: String,
    /// The document's currency code.
    pub currency: String,
    /// Currency rate sent.
    pub currency_rate: Option<Decimal>,
    /// The document date.
    pub date: NaiveDate,
    /// `AUTHORISED`, `PAID`, `VOIDED`, …
    pub status: String,
    /// `Exclusive`, `Inclusive`, `NoTax`.
    pub line_amount_types: String,
    /// The lines as received.
    pub lines: Vec<Value>,
    /// The total before tax (`SubTotal`).
    pub sub_total: Decimal,
    /// The total tax (`TotalTax`).
    pub total_tax: Decimal,
    /// The gross total (`Total`).
    pub total: Decimal,
    /// Paid (invoices) or refunded (credit notes).
    pub paid: Decimal,
    /// Credited (invoices) or allocated (credit notes).
    pub credited: Decimal,
}

impl XDoc {
    /// What is left: `AmountDue` of an invoice, `RemainingCredit` of a credit note.
    pub fn outstanding(&self) -> Decimal {
        self.total - self.paid - self.credited
    }

    /// A credit note.
    pub fn is_credit(&self) -> bool {
        self.kind.ends_with("CREDIT")
    }
}

/// A payment (or a credit note's cash refund).
#[derive(Debug, Clone)]
pub struct XPayment {
    /// The simulator's id of the payment.
    pub id: String,
    /// The invoice or credit note.
    pub document_id: String,
    /// `AccountID`.
    pub account_id: String,
    /// The date the money was received.
    pub date: NaiveDate,
    /// The amount paid.
    pub amount: Decimal,
    /// The payment's `Reference`, when set.
    pub reference: Option<String>,
    /// Currency rate sent.
    pub currency_rate: Option<Decimal>,
    /// `ACCRECPAYMENT` or `ARCREDITPAYMENT`.
    pub kind: String,
}

/// A credit-note allocation.
#[derive(Debug, Clone)]
pub struct XAllocation {
    /// The simulator's id of the allocation.
    pub id: String,
    /// The credit note.
    pub credit_note_id: String,
    /// The invoice.
    pub invoice_id: String,
    /// The amount allocated.
    pub amount: Decimal,
    /// The date the allocation takes effect.
    pub date: NaiveDate,
}

/// An item.
#[derive(Debug, Clone)]
pub struct XItem {
    /// The simulator's id of the item.
    pub id: String,
    /// The item code (`Code`: the SKU).
    pub code: String,
    /// The item's name.
    pub name: String,
    /// Tracked inventory.
    pub tracked: bool,
    /// On hand (tracked items).
    pub quantity: Decimal,
    /// The stored JSON.
    pub json: Value,
}

/// One organisation.
#[derive(Debug, Clone)]
pub struct XeroOrg {
    /// Tenant id.
    pub tenant_id: String,
    /// The organisation's name.
    pub name: String,
    /// The organisation's country code (`CountryCode`).
    pub country: String,
    /// Base currency.
    pub base_currency: String,
    /// Other currencies added (none can be removed).
    pub currencies: Vec<String>,
    /// Plan (`PREMIUM`).
    pub class: String,
    /// Tax rates.
    pub tax_rates: Vec<XTaxRate>,
    /// The chart of accounts.
    pub accounts: Vec<XAccount>,
    /// Every contact, in creation order.
    pub contacts: Vec<XContact>,
    /// Invoices and bills.
    pub invoices: Vec<XDoc>,
    /// Credit notes.
    pub credit_notes: Vec<XDoc>,
    /// Payments and refunds.
    pub payments: Vec<XPayment>,
    /// Every allocation, in creation order.
    pub allocations: Vec<XAllocation>,
    /// Every item, in creation order.
    pub items: Vec<XItem>,
    idempotency: HashMap<String, (u64, SimResponse, DateTime<Utc>)>,
    minute: VecDeque<DateTime<Utc>>,
    day: VecDeque<DateTime<Utc>>,
    /// 429s still to answer in a throttle burst.
    burst_left: u32,
    /// Accounting calls admitted and not answered yet (see [`XeroSimulator::begin`]).
    in_flight: usize,
    next_id: u64,
}

impl XeroOrg {
    /// The demo UK organisation: GBP base, EUR/USD/CAD/CHF added (Premium plan), the UK system
    /// tax rates, accounts `200` Sales, `310` Cost of Goods Sold, `630` Inventory, `825` VAT on
    /// destination sales, `090` Business Bank Account (GBP), `091` Euro account.
    pub fn demo() -> Self {
        let rate = |t: &str, n: &str, r: i64, revenue: bool| XTaxRate {
            tax_type: t.into(),
            name: n.into(),
            rate: Decimal::from(r),
            revenue,
        };
        let mut org = Self {
            tenant_id: XERO_DEMO_TENANT.into(),
            name: "Demo Shop Ltd".into(),
            country: "GB".into(),
            base_currency: "GBP".into(),
            currencies: vec!["EUR".into(), "USD".into(), "CAD".into(), "CHF".into()],
            class: "PREMIUM".into(),
            tax_rates: vec![
                rate("OUTPUT2", "20% (VAT on Income)", 20, true),
                rate("RROUTPUT", "5% (VAT on Income)", 5, true),
                rate("ZERORATEDOUTPUT", "Zero Rated Income", 0, true),
                rate("EXEMPTOUTPUT", "Exempt Income", 0, true),
                rate("ECZROUTPUT", "Zero Rated EC Goods Income", 0, true),
                rate("ECZROUTPUTSERVICES", "Zero Rated EC Services", 0, true),
                rate("NONE", "No VAT", 0, true),
                rate("INPUT2", "20% (VAT on Expenses)", 20, false),
            ],
            accounts: Vec::new(),
            contacts: Vec::new(),
            invoices: Vec::new(),
            credit_notes: Vec::new(),
            payments: Vec::new(),
            allocations: Vec::new(),
            items: Vec::new(),
            idempotency: HashMap::new(),
            minute: VecDeque::new(),
            day: VecDeque::new(),
            burst_left: 0,
            in_flight: 0,
            next_id: 1,
        };
        for (code, name, kind, currency) in [
            ("200", "Sales", "REVENUE", None),
            ("260", "Other Revenue", "OTHERINCOME", None),
            ("310", "Cost of Goods Sold", "DIRECTCOSTS", None),
            ("630", "Inventory", "INVENTORY", None),
            ("820", "VAT", "CURRLIAB", None),
            ("825", "VAT on destination sales", "CURRLIAB", None),
            ("860", "Rounding", "CURRLIAB", None),
            ("090", "Business Bank Account", "BANK", Some("GBP")),
            ("091", "Euro Account", "BANK", Some("EUR")),
        ] {
            let id = org.id();
            org.accounts.push(XAccount {
                id,
                code: Some(code.into()),
                name: name.into(),
                kind: kind.into(),
                currency: currency.map(Into::into),
                enable_payments: false,
            });
        }
        org
    }

    fn id(&mut self) -> String {
        let n = self.next_id;
        self.next_id += 1;
        format!("{:08x}-0000-4000-8000-{:012x}", 0x5ee0_0000u32 + u32::try_from(n % 0xffff).unwrap_or(0), n)
    }

    fn account_by_code(&self, code: &str) -> Option<&XAccount> {
        self.accounts.iter().find(|a| a.code.as_deref() == Some(code))
    }

    fn rate(&self, tax_type: &str) -> Option<Decimal> {
        self.tax_rates.iter().find(|r| r.tax_type == tax_type).map(|r| r.rate)
    }

    fn doc(&self, id: &str) -> Option<&XDoc> {
        self.invoices.iter().chain(&self.credit_notes).find(|d| d.id == id)
    }

    fn doc_mut(&mut self, id: &str) -> Option<&mut XDoc> {
        self.invoices.iter_mut().chain(self.credit_notes.iter_mut()).find(|d| d.id == id)
    }
}

#[derive(Debug, Default)]
struct Tokens {
    access: HashMap<String, DateTime<Utc>>,
    refresh: HashMap<String, Option<DateTime<Utc>>>,
    codes: HashMap<String, crate::oauth::CodeGrant>,
    counter: u64,
}

/// The simulated world: organisations, tokens, counters.
#[derive(Debug)]
pub struct XeroState {
    config: XeroSimConfig,
    /// Organisations by tenant id.
    pub orgs: BTreeMap<String, XeroOrg>,
    tokens: Tokens,
    /// Requests by `METHOD /Resource`.
    pub requests: BTreeMap<String, u64>,
    /// 429 answers by problem (`minute`, `concurrent`, `day`).
    pub throttled: BTreeMap<String, u64>,
    /// Refreshes served.
    pub refreshes: u64,
    /// Organisations whose connection was removed (`DELETE /connections/{id}`, or all of them by
    /// `POST /connect/revocation`); an approval at the authorize endpoint connects them again.
    pub disconnected: BTreeSet<String>,
    /// Refresh tokens revoked (`POST /connect/revocation`).
    pub revocations: u64,
    /// `Idempotency-Key` replays served.
    pub replays: u64,
    /// The `Idempotency-Key` of every write, in order.
    pub idempotency_keys: Vec<String>,
    scripted: VecDeque<(Option<String>, Fault)>,
    rng: rand::rngs::StdRng,
}

/// The Xero simulator: shared state behind a lock, usable in process or served over HTTP.
#[derive(Debug, Clone)]
pub struct XeroSimulator {
    state: Arc<std::sync::Mutex<XeroState>>,
    clock: Arc<dyn Clock>,
}

/// An Accounting API call the simulator admitted and still counts as in flight for its
/// organisation's concurrency limit, until this is dropped (see [`XeroSimulator::begin`]).
#[derive(Debug)]
#[must_use = "the call stops being in flight when this is dropped"]
pub struct InFlight {
    state: Arc<std::sync::Mutex<XeroState>>,
    tenant: String,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let mut s = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(org) = s.orgs.get_mut(&self.tenant) {
            org.in_flight = org.in_flight.saturating_sub(1);
        }
    }
}

fn resp(status: u16, body: Value) -> SimResponse {
    SimResponse { status, headers: Vec::new(), body }
}

fn validation(messages: &[String]) -> SimResponse {
    resp(
        400,
        json!({"ErrorNumber": 10, "Type": "ValidationException", "Message": "A validation exception occurred",
               "Elements": [{"ValidationErrors": messages.iter().map(|m| json!({"Message": m})).collect::<Vec<_>>()}]}),
    )
}

fn not_found() -> SimResponse {
    resp(404, Value::String("The resource you're looking for cannot be found".into()))
}

fn hdr<'a>(req: &'a SimRequest, name: &str) -> Option<&'a str> {
    req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn q<'a>(req: &'a SimRequest, name: &str) -> Option<&'a str> {
    req.query.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

fn dec(v: Option<&Value>) -> Option<Decimal> {
    match v? {
        Value::Number(n) => byte8_ledger_core::money::parse_decimal(&n.to_string()).ok(),
        Value::String(s) => byte8_ledger_core::money::parse_decimal(s).ok(),
        _ => None,
    }
}

fn num(d: Decimal) -> Value {
    serde_json::from_str(&byte8_ledger_core::money::format_money(d)).unwrap_or(Value::Null)
}

fn s(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned).filter(|x| !x.is_empty())
}

fn date(v: &Value, key: &str) -> Option<NaiveDate> {
    s(v, key).and_then(|t| NaiveDate::parse_from_str(t.get(..10)?, "%Y-%m-%d").ok())
}

/// A date as Xero answers it: MS-JSON at UTC midnight (Q20).
fn ms(d: NaiveDate) -> String {
    let ms = d.and_hms_opt(0, 0, 0).map(|t| t.and_utc().timestamp_millis()).unwrap_or_default();
    format!("/Date({ms}+0000)/")
}

/// The clauses of a `where` filter: `Field=="value"` joined by `OR` (what the crate sends).
fn where_clauses(filter: &str) -> Vec<(String, String)> {
    filter
        .split(" OR ")
        .filter_map(|c| {
            let (field, value) = c.split_once("==")?;
            Some((field.trim().to_owned(), value.trim().trim_matches('"').to_owned()))
        })
        .collect()
}

/// A `where` filter of `&&`-joined conditions, as reconciliation sends it:
/// `Type=="ACCREC" && Date>=DateTime(2026, 11, 01) && Date<=DateTime(2026, 11, 30)`
/// (`Type`, `PaymentType`, `Date>=`, `Date<=`). `None` for any other filter.
#[derive(Debug, Default)]
struct AndFilter {
    kind: Option<String>,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
}

impl AndFilter {
    fn parse(filter: &str) -> Option<Self> {
        if !filter.contains("&&") {
            return None;
        }
        let date = |t: &str| {
            let inner = t.trim().strip_prefix("DateTime(")?.strip_suffix(')')?;
            let mut parts = inner.split(',').map(|p| p.trim().parse::<u32>().ok());
            let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
            NaiveDate::from_ymd_opt(i32::try_from(y).ok()?, m, d)
        };
        let mut f = Self::default();
        for c in filter.split("&&").map(str::trim) {
            if let Some(d) = c.strip_prefix("Date>=") {
                f.from = Some(date(d)?);
            } else if let Some(d) = c.strip_prefix("Date<=") {
                f.to = Some(date(d)?);
            } else if let Some((_, v)) = c.split_once("==") {
                f.kind = Some(v.trim().trim_matches('"').to_owned());
            } else {
                return None;
            }
        }
        Some(f)
    }

    fn keeps(&self, kind: &str, date: NaiveDate) -> bool {
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self.from.is_none_or(|f| date >= f)
            && self.to.is_none_or(|t| date <= t)
    }
}

/// Page `page` (1-based, 100 a page) of `items` when the request names one.
fn paged(req: &SimRequest, items: Vec<Value>) -> Vec<Value> {
    match q(req, "page").and_then(|p| p.parse::<usize>().ok()) {
        Some(p) if p >= 1 => items.into_iter().skip((p - 1) * 100).take(100).collect(),
        _ => items,
    }
}

impl XeroSimulator {
    /// An empty simulator.
    pub fn new(config: XeroSimConfig) -> Self {
        Self::with_clock(config, Arc::new(SystemClock))
    }

    /// An empty simulator on `clock`.
    pub fn with_clock(config: XeroSimConfig, clock: Arc<dyn Clock>) -> Self {
        use rand::SeedableRng;
        let seed = config.seed;
        let state = XeroState {
            config,
            orgs: BTreeMap::new(),
            tokens: Tokens::default(),
            requests: BTreeMap::new(),
            throttled: BTreeMap::new(),
            refreshes: 0,
            disconnected: BTreeSet::new(),
            revocations: 0,
            replays: 0,
            idempotency_keys: Vec::new(),
            scripted: VecDeque::new(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        };
        Self { state: Arc::new(std::sync::Mutex::new(state)), clock }
    }

    /// A simulator with the demo organisation ([`XeroOrg::demo`]) connected through
    /// [`XERO_DEMO_REFRESH_TOKEN`].
    pub fn demo(config: XeroSimConfig) -> Self {
        Self::demo_on(config, Arc::new(SystemClock))
    }

    /// [`demo`](Self::demo) on `clock`.
    pub fn demo_on(config: XeroSimConfig, clock: Arc<dyn Clock>) -> Self {
        let sim = Self::with_clock(config, clock);
        sim.add_org(XeroOrg::demo());
        sim.with_state(|s| s.tokens.refresh.insert(XERO_DEMO_REFRESH_TOKEN.into(), None));
        sim
    }

    /// Adds an organisation.
    pub fn add_org(&self, org: XeroOrg) {
        self.with_state(|s| {
            s.orgs.insert(org.tenant_id.clone(), org);
        });
    }

    /// Runs `f` with the state locked.
    pub fn with_state<R>(&self, f: impl FnOnce(&mut XeroState) -> R) -> R {
        let mut guard = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut guard)
    }

    /// A copy of one organisation.
    pub fn org(&self, tenant_id: &str) -> Option<XeroOrg> {
        self.with_state(|s| s.orgs.get(tenant_id).cloned())
    }

    /// Registers a refresh token.
    pub fn add_refresh_token(&self, token: &str) {
        self.with_state(|s| s.tokens.refresh.insert(token.to_owned(), None));
    }

    /// Queues a fault for the next request matching `target` (`"PUT /Invoices"`), or any.
    pub fn script(&self, target: Option<&str>, fault: Fault) {
        self.with_state(|s| s.scripted.push_back((target.map(str::to_owned), fault)));
    }

    /// Sets the random fault rates.
    pub fn set_faults(&self, rates: FaultRates) {
        self.with_state(|s| s.config.faults = rates);
    }

    /// Requests served by endpoint (`METHOD /Resource`).
    pub fn requests(&self) -> BTreeMap<String, u64> {
        self.with_state(|s| s.requests.clone())
    }

    /// Accounting API calls served (what counts against the limits).
    pub fn api_calls(&self) -> u64 {
        self.with_state(|s| {
            s.requests
                .iter()
                .filter(|(k, _)| {
                    !k.ends_with("/connect/token")
                        && !k.ends_with("/connections")
                        && !k.ends_with("/connect/revocation")
                        && !k.ends_with("/identity/connect/authorize")
                })
                .map(|(_, n)| *n)
                .sum()
        })
    }

    /// Handles one request (no latency: the server adds it); it is in flight only while it is
    /// handled.
    pub fn handle(&self, req: &SimRequest) -> SimResponse {
        self.begin(req).0
    }

    /// Handles one request and, when its organisation admitted it (it passed the limits), keeps
    /// it in flight until the returned [`InFlight`] is dropped: the server holds it across the
    /// answer's latency, a test as long as it likes. Only admitted Accounting API calls count
    /// against the concurrency limit: not the identity endpoints, and not the calls it refused.
    pub fn begin(&self, req: &SimRequest) -> (SimResponse, Option<InFlight>) {
        let now = self.clock.now();
        let (answer, tenant) = self.with_state(|s| s.handle(req, now));
        (answer, tenant.map(|tenant| InFlight { state: Arc::clone(&self.state), tenant }))
    }

    /// Serves the simulator on `127.0.0.1` at a free port.
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn serve(&self) -> std::io::Result<XeroServer> {
        self.serve_on(0).await
    }

    /// Serves the simulator on `127.0.0.1:port` (0: a free port).
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn serve_on(&self, port: u16) -> std::io::Result<XeroServer> {
        let sim = self.clone();
        let inner = crate::serve_router(
            port,
            axum::Router::new().fallback(move |req: axum::extract::Request| {
                let sim = sim.clone();
                async move { sim.serve_one(req).await }
            }),
        )
        .await?;
        Ok(XeroServer { inner })
    }

    async fn serve_one(&self, req: axum::extract::Request) -> axum::response::Response {
        use axum::body::Body;
        let (parts, body) = req.into_parts();
        let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
        let query = parts
            .uri
            .query()
            .map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect())
            .unwrap_or_default();
        let headers = parts
            .headers
            .iter()
            .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_ascii_lowercase(), v.to_owned())))
            .collect();
        let sim_req = SimRequest {
            method: parts.method.to_string(),
            path: parts.uri.path().to_owned(),
            query,
            headers,
            body: bytes.to_vec(),
        };
        // An admitted call stays in flight across the latency, so that concurrency is observable.
        let (answer, in_flight) = self.begin(&sim_req);
        let latency = self.with_state(|s| s.config.latency);
        if let Some((lo, hi)) = latency {
            let extra = hi.saturating_sub(lo).mul_f64(self.with_state(|s| rand::Rng::random::<f64>(&mut s.rng)));
            tokio::time::sleep(lo + extra).await;
        }
        drop(in_flight);
        let mut builder = axum::http::Response::builder().status(answer.status);
        let plain = answer.status == 404 && answer.body.is_string();
        if !answer.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type")) {
            builder =
                builder.header(axum::http::header::CONTENT_TYPE, if plain { "text/plain" } else { "application/json" });
        }
        for (k, v) in &answer.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        let own_type = answer.headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("content-type"));
        let body = match &answer.body {
            Value::String(t) if plain || own_type => t.clone().into_bytes(),
            Value::Null if matches!(answer.status, 204 | 302) => Vec::new(),
            other => other.to_string().into_bytes(),
        };
        builder.body(Body::from(body)).unwrap_or_else(|_| axum::http::Response::new(Body::empty()))
    }
}

/// A running Xero simulator server; stops when dropped.
#[derive(Debug)]
pub struct XeroServer {
    inner: SimServer,
}

impl XeroServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr()
    }

    /// The Accounting API root to give a `XeroBuilder`.
    pub fn base_url(&self) -> String {
        format!("http://{}/api.xro/2.0", self.addr())
    }

    /// The token endpoint.
    pub fn token_url(&self) -> String {
        format!("http://{}/connect/token", self.addr())
    }

    /// The connections endpoint.
    pub fn connections_url(&self) -> String {
        format!("http://{}/connections", self.addr())
    }

    /// The authorize endpoint (its approval page approves at once: no login).
    pub fn authorize_url(&self) -> String {
        format!("http://{}/identity/connect/authorize", self.addr())
    }

    /// The revocation endpoint.
    pub fn revoke_url(&self) -> String {
        format!("http://{}/connect/revocation", self.addr())
    }

    /// Stops serving and waits for the server to finish.
    pub async fn stop(self) {
        self.inner.stop().await;
    }
}

fn body_hash(body: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body.hash(&mut h);
    h.finish()
}

impl XeroState {
    fn count(&mut self, method: &str, resource: &str) {
        *self.requests.entry(format!("{method} /{resource}")).or_insert(0) += 1;
    }

    /// One request: the answer, and the tenant whose concurrency count it was admitted into
    /// (the caller releases it, [`InFlight`]).
    fn handle(&mut self, req: &SimRequest, now: DateTime<Utc>) -> (SimResponse, Option<String>) {
        let mut admitted = None;
        let answer = self.answer(req, now, &mut admitted);
        (answer, admitted)
    }

    fn answer(&mut self, req: &SimRequest, now: DateTime<Utc>, admitted: &mut Option<String>) -> SimResponse {
        let path = req.path.trim_end_matches('/');
        if path.ends_with("/connect/token") {
            self.count(&req.method, "connect/token");
            return self.token(req, now);
        }
        if path.starts_with("/identity/connect/authorize") {
            self.count(&req.method, "identity/connect/authorize");
            if path.ends_with("/approve") || path.ends_with("/deny") {
                use rand::Rng;
                self.tokens.counter += 1;
                let code = format!("xero-code-{}-{:016x}", self.tokens.counter, self.rng.random::<u64>());
                if path.ends_with("/approve") {
                    // Approving connects every organisation of the simulator to the app again.
                    self.disconnected.clear();
                }
                return crate::oauth::approve(req, &mut self.tokens.codes, code, now, &[]);
            }
            return crate::oauth::approval_page(req, &self.config.client_id, "Xero (simulated)", true);
        }
        if path.ends_with("/connect/revocation") {
            self.count(&req.method, "connect/revocation");
            return self.revocation(req);
        }
        let token = hdr(req, "authorization").and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        let authorised = self.tokens.access.get(token).is_some_and(|exp| *exp > now);
        if let Some(id) = path.strip_prefix("/connections/").filter(|_| req.method == "DELETE") {
            self.count(&req.method, "connections");
            if !authorised {
                return resp(
                    401,
                    json!({"Type": null, "Title": "Unauthorized", "Status": 401, "Detail": "TokenExpired"}),
                );
            }
            let Some(tenant) =
                self.orgs.values().find(|o| connection_id(&o.tenant_id) == id).map(|o| o.tenant_id.clone())
            else {
                return not_found();
            };
            self.disconnected.insert(tenant);
            return SimResponse { status: 204, headers: Vec::new(), body: Value::Null };
        }
        if path.eq_ignore_ascii_case("/connections") {
            self.count(&req.method, "connections");
            if !authorised {
                return resp(
                    401,
                    json!({"Type": null, "Title": "Unauthorized", "Status": 401, "Detail": "TokenExpired"}),
                );
            }
            let list: Vec<Value> = self
                .orgs
                .values()
                .filter(|o| !self.disconnected.contains(&o.tenant_id))
                .map(|o| {
                    json!({"id": connection_id(&o.tenant_id), "authEventId": "a1b2c3d4-0000-4000-8000-000000000001",
                    "tenantId": o.tenant_id, "tenantType": "ORGANISATION", "tenantName": o.name,
                    "createdDateUtc": "2026-11-01T00:00:00.0000000", "updatedDateUtc": "2026-11-01T00:00:00.0000000"})
                })
                .collect();
            return resp(200, Value::Array(list));
        }
        let Some(rest) = path.split_once("/api.xro/2.0/").map(|(_, r)| r) else { return not_found() };
        let segments: Vec<String> = rest.split('/').filter(|x| !x.is_empty()).map(str::to_owned).collect();
        let resource = segments.first().cloned().unwrap_or_default();
        self.count(&req.method, &resource);
        if !authorised {
            return resp(
                401,
                json!({"Type": null, "Title": "Unauthorized", "Status": 401, "Detail": "AuthorizationUnsuccessful"}),
            );
        }
        let Some(tenant) = hdr(req, "xero-tenant-id").map(str::to_owned) else {
            return resp(
                403,
                json!({"Type": null, "Title": "Forbidden", "Status": 403, "Detail": "AuthenticationUnsuccessful"}),
            );
        };
        let config = self.config.clone();
        let scripted = self.take_scripted(&req.method, &resource);
        let random = self.random_fault(&req.method);
        let connected = !self.disconnected.contains(&tenant);
        let Some(org) = self.orgs.get_mut(&tenant).filter(|_| connected) else {
            return resp(
                403,
                json!({"Type": null, "Title": "Forbidden", "Status": 403, "Detail": "AuthenticationUnsuccessful"}),
            );
        };
        // The three limits.
        while org.minute.front().is_some_and(|t| now - *t >= chrono::Duration::seconds(60)) {
            org.minute.pop_front();
        }
        while org.day.front().is_some_and(|t| now - *t >= chrono::Duration::hours(24)) {
            org.day.pop_front();
        }
        // Every answer from here on carries what is left of the limits, 429s included.
        let remaining = |org: &XeroOrg, mut r: SimResponse| {
            let min_left = config
                .per_minute
                .map_or(9999, |l| l.saturating_sub(u32::try_from(org.minute.len()).unwrap_or(u32::MAX)));
            let day_left =
                config.per_day.map_or(99_999, |l| l.saturating_sub(u32::try_from(org.day.len()).unwrap_or(u32::MAX)));
            r.headers.push(("x-minlimit-remaining".into(), min_left.to_string()));
            r.headers.push(("x-daylimit-remaining".into(), day_left.to_string()));
            r.headers.push(("x-appminlimit-remaining".into(), "9999".into()));
            r
        };
        let limited = |problem: &str, wait: i64| {
            let mut r = resp(
                429,
                json!({"Title": "Too Many Requests", "Status": 429, "Detail": format!("{problem} limit exceeded")}),
            );
            r.headers.push(("retry-after".into(), wait.max(1).to_string()));
            r.headers.push(("x-rate-limit-problem".into(), problem.into()));
            r
        };
        let mut breach = None;
        if let Some(limit) = config.per_day
            && org.day.len() >= limit as usize
        {
            let wait = org.day.front().map_or(1, |t| (*t + chrono::Duration::hours(24) - now).num_seconds());
            breach = Some(limited("day", wait));
        } else if let Some(limit) = config.concurrent
            && org.in_flight >= limit
        {
            breach = Some(limited("concurrent", 1));
        } else if let Some(limit) = config.per_minute
            && org.minute.len() >= limit as usize
        {
            let wait = org.minute.front().map_or(1, |t| 60 - (now - *t).num_seconds());
            breach = Some(limited("minute", wait));
        }
        if let Some(r) = breach {
            let problem =
                r.headers.iter().find(|(k, _)| k == "x-rate-limit-problem").map(|(_, v)| v.clone()).unwrap_or_default();
            *self.throttled.entry(problem).or_insert(0) += 1;
            return remaining(org, r);
        }
        org.minute.push_back(now);
        org.day.push_back(now);
        org.in_flight += 1;
        *admitted = Some(tenant.clone());
        // A burst under way answers before anything else is drawn.
        let fault = if org.burst_left > 0 {
            org.burst_left -= 1;
            Some(Fault::Throttle(1))
        } else {
            if random == Some(Fault::Throttle(1)) && scripted.is_none() {
                org.burst_left = config.faults.throttle_burst.saturating_sub(1);
            }
            scripted.or(random)
        };
        match fault {
            Some(Fault::ErrorBefore(status)) => {
                return remaining(
                    org,
                    resp(status, json!({"Title": "Service Unavailable", "Detail": "Simulated failure before acting"})),
                );
            }
            Some(Fault::Throttle(secs)) => {
                *self.throttled.entry("minute".into()).or_insert(0) += 1;
                let mut r = limited("minute", i64::try_from(secs).unwrap_or(1));
                r.body["Detail"] = json!("simulated burst");
                return remaining(org, r);
            }
            _ => {}
        }
        let write = matches!(req.method.as_str(), "PUT" | "POST");
        // Idempotency-Key (Q2).
        let key = hdr(req, "idempotency-key").map(str::to_owned);
        if write && let Some(k) = &key {
            self.idempotency_keys.push(k.clone());
            if k.chars().count() > 128 {
                return remaining(org, validation(&["Idempotency-Key must be 128 characters or fewer".into()]));
            }
            let window = chrono::Duration::from_std(config.idempotency_window).unwrap_or(chrono::Duration::minutes(6));
            org.idempotency.retain(|_, (_, _, at)| now - *at < window);
            if let Some((hash, answer, _)) = org.idempotency.get(k) {
                if *hash != body_hash(&req.body) {
                    return remaining(
                        org,
                        validation(&["The Idempotency-Key was used with a different request".into()]),
                    );
                }
                let answer = answer.clone();
                self.replays += 1;
                return remaining(org, answer);
            }
        }
        let answer = route(org, req, &segments);
        if write && let Some(k) = key {
            org.idempotency.insert(k, (body_hash(&req.body), answer.clone(), now));
        }
        if let Some(Fault::ErrorAfterCommit) = fault
            && (200..300).contains(&answer.status)
            && write
        {
            return remaining(
                org,
                resp(500, json!({"Title": "Internal Server Error", "Detail": "Simulated failure after commit"})),
            );
        }
        remaining(org, answer)
    }

    fn take_scripted(&mut self, method: &str, resource: &str) -> Option<Fault> {
        let key = format!("{method} /{resource}");
        let pos = self.scripted.iter().position(|(target, _)| target.as_deref().is_none_or(|t| t == key))?;
        self.scripted.remove(pos).map(|(_, f)| f)
    }

    fn random_fault(&mut self, method: &str) -> Option<Fault> {
        use rand::Rng;
        let f = self.config.faults;
        let roll: f64 = self.rng.random();
        if roll < f.error_before {
            return Some(Fault::ErrorBefore(503));
        }
        if matches!(method, "PUT" | "POST") && roll < f.error_before + f.error_after_commit {
            return Some(Fault::ErrorAfterCommit);
        }
        if roll < f.error_before + f.error_after_commit + f.throttle {
            return Some(Fault::Throttle(1));
        }
        None
    }

    fn mint(&mut self, now: DateTime<Utc>) -> (String, String) {
        use rand::Rng;
        self.tokens.counter += 1;
        let n = self.tokens.counter;
        let access = format!("xero-access-{n}-{:016x}", self.rng.random::<u64>());
        let refresh = format!("xero-refresh-{n}-{:016x}", self.rng.random::<u64>());
        let ttl = chrono::Duration::from_std(self.config.access_token_ttl).unwrap_or(chrono::Duration::minutes(30));
        self.tokens.access.insert(access.clone(), now + ttl);
        self.tokens.refresh.insert(refresh.clone(), None);
        (access, refresh)
    }

    /// `POST /connect/token`: client credentials as HTTP Basic; rotation with a grace period.
    fn token(&mut self, req: &SimRequest, now: DateTime<Utc>) -> SimResponse {
        use base64::Engine;
        let basic = hdr(req, "authorization")
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let expected = format!("{}:{}", self.config.client_id, self.config.client_secret);
        if basic.as_deref() != Some(expected.as_str()) {
            return resp(400, json!({"error": "invalid_client"}));
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body).into_owned().collect();
        match form.get("grant_type").map(String::as_str) {
            Some("refresh_token") => {}
            Some("authorization_code") => {
                if let Err(refused) = crate::oauth::redeem(&mut self.tokens.codes, &form, now) {
                    return refused;
                }
                self.refreshes += 1;
                let (access, refresh) = self.mint(now);
                return resp(
                    200,
                    json!({"id_token": "simulated", "access_token": access, "expires_in": self.config.access_token_ttl.as_secs(),
                           "token_type": "Bearer", "refresh_token": refresh,
                           "scope": "offline_access accounting.contacts accounting.invoices accounting.payments accounting.settings"}),
                );
            }
            _ => return resp(400, json!({"error": "unsupported_grant_type"})),
        }
        let presented = form.get("refresh_token").cloned().unwrap_or_default();
        let grace = chrono::Duration::from_std(self.config.refresh_grace).unwrap_or(chrono::Duration::minutes(30));
        match self.tokens.refresh.get(&presented).copied() {
            Some(None) => {
                self.tokens.refresh.insert(presented, Some(now));
            }
            Some(Some(used)) if now - used < grace => {}
            _ => return resp(400, json!({"error": "invalid_grant"})),
        }
        self.refreshes += 1;
        let (access, refresh) = self.mint(now);
        resp(
            200,
            json!({"id_token": "simulated", "access_token": access, "expires_in": self.config.access_token_ttl.as_secs(),
                   "token_type": "Bearer", "refresh_token": refresh,
                   "scope": "offline_access accounting.contacts accounting.invoices accounting.payments accounting.settings"}),
        )
    }
}

impl XeroState {
    /// `POST /connect/revocation` (HTTP Basic, form `token`): the refresh token stops working and
    /// every organisation's connection is removed (Xero: the whole grant goes). 200 for an
    /// unknown token too (RFC 7009 2.2).
    fn revocation(&mut self, req: &SimRequest) -> SimResponse {
        use base64::Engine;
        let basic = hdr(req, "authorization")
            .and_then(|h| h.strip_prefix("Basic "))
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
            .and_then(|b| String::from_utf8(b).ok());
        if basic.as_deref() != Some(format!("{}:{}", self.config.client_id, self.config.client_secret).as_str()) {
            return resp(400, json!({"error": "invalid_client"}));
        }
        let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body).into_owned().collect();
        if self.tokens.refresh.remove(form.get("token").map_or("", String::as_str)).is_some() {
            self.revocations += 1;
            self.disconnected.extend(self.orgs.keys().cloned());
        }
        resp(200, Value::Null)
    }
}

/// The connection id the simulator gives an organisation's connection.
fn connection_id(tenant_id: &str) -> String {
    format!("c0{}", tenant_id.get(2..).unwrap_or(tenant_id))
}

fn envelope<'a>(body: &'a Value, name: &str) -> Option<&'a Vec<Value>> {
    body.get(name).and_then(Value::as_array)
}

fn no_data() -> SimResponse {
    resp(
        400,
        json!({"ErrorNumber": 17, "Type": "NoDataProcessedException", "Message": "No data has been processed for this endpoint. This endpoint is expecting Invoice data to be specifed in the request body."}),
    )
}

fn route(org: &mut XeroOrg, req: &SimRequest, seg: &[String]) -> SimResponse {
    let body: Value = if req.body.is_empty() {
        Value::Null
    } else {
        match serde_json::from_slice(&req.body) {
            Ok(v) => v,
            Err(_) => {
                return resp(
                    400,
                    json!({"ErrorNumber": 14, "Type": "PostDataInvalidException", "Message": "JSON for Invoice could not be read"}),
                );
            }
        }
    };
    let segs: Vec<&str> = seg.iter().map(String::as_str).collect();
    let summarize = q(req, "summarizeErrors").is_none_or(|v| !v.eq_ignore_ascii_case("false"));
    let unitdp4 = q(req, "unitdp") == Some("4");
    match (req.method.as_str(), segs.as_slice()) {
        ("GET", ["Organisation"]) => resp(
            200,
            json!({"Organisations": [{"OrganisationID": org.tenant_id, "Name": org.name, "LegalName": org.name,
                   "BaseCurrency": org.base_currency, "CountryCode": org.country, "Version": "UK", "Class": org.class,
                   "IsDemoCompany": true, "Timezone": "GMTSTANDARDTIME", "SalesTaxBasis": "ACCRUALS"}]}),
        ),
        ("GET", ["TaxRates"]) => resp(
            200,
            json!({"TaxRates": org.tax_rates.iter().map(|r| json!({"Name": r.name, "TaxType": r.tax_type, "Status": "ACTIVE",
                "ReportTaxType": "OUTPUT", "CanApplyToRevenue": r.revenue, "CanApplyToExpenses": !r.revenue,
                "DisplayTaxRate": num(r.rate), "EffectiveRate": num(r.rate),
                "TaxComponents": [{"Name": "VAT", "Rate": num(r.rate), "IsCompound": false, "IsNonRecoverable": false}]})).collect::<Vec<_>>()}),
        ),
        ("GET", ["Accounts"]) => resp(
            200,
            json!({"Accounts": org.accounts.iter().map(|a| {
                let mut v = json!({"AccountID": a.id, "Code": a.code, "Name": a.name, "Type": a.kind, "Status": "ACTIVE",
                    "EnablePaymentsToAccount": a.enable_payments, "TaxType": "NONE"});
                if let Some(c) = &a.currency { v["CurrencyCode"] = json!(c); v["BankAccountType"] = json!("BANK"); }
                v
            }).collect::<Vec<_>>()}),
        ),
        ("GET", ["Currencies"]) => {
            let mut all = vec![org.base_currency.clone()];
            all.extend(org.currencies.iter().cloned());
            resp(
                200,
                json!({"Currencies": all.iter().map(|c| json!({"Code": c, "Description": c})).collect::<Vec<_>>()}),
            )
        }
        ("GET", ["Contacts"]) => {
            let archived = q(req, "includeArchived") == Some("true");
            let clauses = q(req, "where").map(where_clauses).unwrap_or_default();
            let list: Vec<Value> = org
                .contacts
                .iter()
                .filter(|c| archived || c.status == "ACTIVE")
                .filter(|c| {
                    clauses.is_empty()
                        || clauses.iter().any(|(f, v)| f == "ContactNumber" && c.number.as_deref() == Some(v.as_str()))
                })
                .map(|c| c.json.clone())
                .collect();
            resp(200, json!({"Contacts": list}))
        }
        ("GET", ["Contacts", id]) => {
            match org.contacts.iter().find(|c| c.id == *id || c.number.as_deref() == Some(*id)) {
                Some(c) => resp(200, json!({"Contacts": [c.json]})),
                None => not_found(),
            }
        }
        ("PUT", ["Contacts"]) => match envelope(&body, "Contacts") {
            Some(items) => batch(org, items.clone(), "Contacts", summarize, create_contact),
            None => no_data(),
        },
        ("POST", ["Contacts", id]) => match envelope(&body, "Contacts").and_then(|a| a.first()) {
            Some(e) => update_contact(org, id, e),
            None => no_data(),
        },
        ("GET", ["Items"]) => {
            let clauses = q(req, "where").map(where_clauses).unwrap_or_default();
            let list: Vec<Value> = org
                .items
                .iter()
                .filter(|i| clauses.is_empty() || clauses.iter().any(|(f, v)| f == "Code" && i.code == *v))
                .map(item_json)
                .collect();
            resp(200, json!({"Items": list}))
        }
        ("GET", ["Items", id]) => match org.items.iter().find(|i| i.id == *id || i.code == *id) {
            Some(i) => resp(200, json!({"Items": [item_json(i)]})),
            None => not_found(),
        },
        ("PUT", ["Items"]) => match envelope(&body, "Items") {
            Some(items) => batch(org, items.clone(), "Items", summarize, create_item),
            None => no_data(),
        },
        ("POST", ["Items", id]) => match envelope(&body, "Items").and_then(|a| a.first()) {
            Some(e) => update_item(org, id, e),
            None => no_data(),
        },
        ("GET", [kind @ ("Invoices" | "CreditNotes" | "Payments")])
            if q(req, "where").and_then(AndFilter::parse).is_some() =>
        {
            let f = q(req, "where").and_then(AndFilter::parse).unwrap_or_default();
            let list: Vec<Value> = match *kind {
                "Invoices" => {
                    org.invoices.iter().filter(|d| f.keeps(&d.kind, d.date)).map(|d| doc_json(org, d)).collect()
                }
                "CreditNotes" => {
                    org.credit_notes.iter().filter(|d| f.keeps(&d.kind, d.date)).map(|d| doc_json(org, d)).collect()
                }
                _ => org.payments.iter().filter(|p| f.keeps(&p.kind, p.date)).map(|p| payment_json(org, p)).collect(),
            };
            resp(200, json!({ *kind: paged(req, list) }))
        }
        ("GET", ["Invoices"]) => {
            let numbers: Vec<&str> = q(req, "InvoiceNumbers").map(|n| n.split(',').collect()).unwrap_or_default();
            let list: Vec<Value> = org
                .invoices
                .iter()
                .filter(|d| numbers.is_empty() || numbers.contains(&d.number.as_str()))
                .map(|d| doc_json(org, d))
                .collect();
            resp(200, json!({"Invoices": list}))
        }
        ("GET", ["CreditNotes"]) => {
            let clauses = q(req, "where").map(where_clauses).unwrap_or_default();
            let list: Vec<Value> = org
                .credit_notes
                .iter()
                .filter(|d| {
                    clauses.is_empty() || clauses.iter().any(|(f, v)| f == "CreditNoteNumber" && d.number == *v)
                })
                .map(|d| doc_json(org, d))
                .collect();
            resp(200, json!({"CreditNotes": list}))
        }
        ("GET", [kind @ ("Invoices" | "CreditNotes"), id]) => {
            let found = if *kind == "Invoices" {
                org.invoices.iter().find(|d| d.id == *id)
            } else {
                org.credit_notes.iter().find(|d| d.id == *id)
            };
            match found {
                Some(d) => resp(200, json!({ *kind: [doc_json(org, d)] })),
                None => not_found(),
            }
        }
        ("PUT", [kind @ ("Invoices" | "CreditNotes")]) => match envelope(&body, kind) {
            Some(items) => {
                let is_invoice = *kind == "Invoices";
                batch(org, items.clone(), kind, summarize, |o, e| create_doc(o, e, is_invoice, unitdp4))
            }
            None => no_data(),
        },
        ("POST", [kind @ ("Invoices" | "CreditNotes"), id]) => match envelope(&body, kind).and_then(|a| a.first()) {
            Some(e) => update_status(org, id, e, kind),
            None => no_data(),
        },
        ("PUT", ["CreditNotes", id, "Allocations"]) => match envelope(&body, "Allocations") {
            Some(items) => {
                let id = (*id).to_owned();
                batch(org, items.clone(), "Allocations", summarize, move |o, e| allocate(o, &id, e))
            }
            None => no_data(),
        },
        ("GET", ["Payments"]) => {
            let clauses = q(req, "where").map(where_clauses).unwrap_or_default();
            let list: Vec<Value> = org
                .payments
                .iter()
                .filter(|p| {
                    clauses.is_empty()
                        || clauses.iter().any(|(f, v)| f == "Reference" && p.reference.as_deref() == Some(v.as_str()))
                })
                .map(|p| payment_json(org, p))
                .collect();
            resp(200, json!({"Payments": list}))
        }
        ("PUT", ["Payments"]) => match envelope(&body, "Payments") {
            Some(items) => batch(org, items.clone(), "Payments", summarize, create_payment),
            None => no_data(),
        },
        _ => not_found(),
    }
}

/// Runs `create` on every element; answers as `summarizeErrors` says (see the module docs).
fn batch(
    org: &mut XeroOrg,
    items: Vec<Value>,
    envelope: &str,
    summarize: bool,
    mut create: impl FnMut(&mut XeroOrg, &Value) -> Result<Value, Vec<String>>,
) -> SimResponse {
    let mut answers = Vec::with_capacity(items.len());
    let mut failures = Vec::new();
    for item in &items {
        match create(org, item) {
            Ok(v) => answers.push(v),
            Err(messages) => {
                let mut echoed = item.clone();
                if let Some(o) = echoed.as_object_mut() {
                    o.insert("HasErrors".into(), json!(true));
                    o.insert("StatusAttributeString".into(), json!("ERROR"));
                    o.insert(
                        "ValidationErrors".into(),
                        Value::Array(messages.iter().map(|m| json!({"Message": m})).collect()),
                    );
                }
                failures.push(echoed.clone());
                answers.push(echoed);
            }
        }
    }
    if summarize && !failures.is_empty() {
        // Xero's default: only the failures, as a 400 — while the good elements were created (Q1).
        return resp(
            400,
            json!({"ErrorNumber": 10, "Type": "ValidationException", "Message": "A validation exception occurred", "Elements": failures}),
        );
    }
    resp(200, json!({ envelope: answers }))
}

fn contact_json(c: &XContact) -> Value {
    c.json.clone()
}

fn create_contact(org: &mut XeroOrg, e: &Value) -> Result<Value, Vec<String>> {
    let mut problems = Vec::new();
    let name = s(e, "Name").unwrap_or_default();
    if name.trim().is_empty() {
        problems.push("The contact name must be provided".to_owned());
    }
    let number = s(e, "ContactNumber");
    if let Some(n) = &number {
        if n.chars().count() > 50 {
            problems.push("ContactNumber must not be more than 50 characters long".into());
        }
        if rules::is_taken(n, org.contacts.iter().filter_map(|c| c.number.as_deref())) {
            problems.push("Another contact has this contact number".into());
        }
    }
    let active_names = org.contacts.iter().filter(|c| c.status == "ACTIVE").map(|c| c.name.as_str());
    if !name.is_empty() && rules::is_taken_ignoring_case(&name, active_names) {
        problems.push(format!(
            "The contact name {name} is already assigned to another contact. The contact name must be unique across all active contacts."
        ));
    }
    if s(e, "TaxNumber").is_some_and(|t| t.chars().count() > 50) {
        problems.push("TaxNumber must not be more than 50 characters long".into());
    }
    if e.get("DefaultCurrency").is_some() {
        problems.push("DefaultCurrency is not used by this simulator: one contact takes every currency".into());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let id = org.id();
    let mut json = e.clone();
    json["ContactID"] = json!(id);
    json["ContactStatus"] = json!("ACTIVE");
    json["IsCustomer"] = json!(false);
    json["StatusAttributeString"] = json!("OK");
    json["UpdatedDateUTC"] = json!("/Date(1795000000000+0000)/");
    let c = XContact { id, number, name, email: s(e, "EmailAddress"), status: "ACTIVE".into(), json };
    let out = contact_json(&c);
    org.contacts.push(c);
    Ok(out)
}

fn update_contact(org: &mut XeroOrg, id: &str, e: &Value) -> SimResponse {
    let Some(pos) = org.contacts.iter().position(|c| c.id == id) else { return not_found() };
    if let Some(n) = s(e, "ContactNumber")
        && rules::is_taken(&n, org.contacts.iter().filter(|c| c.id != id).filter_map(|c| c.number.as_deref()))
    {
        return validation(&["Another contact has this contact number".into()]);
    }
    if let Some(name) = s(e, "Name")
        && rules::is_taken_ignoring_case(
            &name,
            org.contacts.iter().filter(|c| c.id != id && c.status == "ACTIVE").map(|c| c.name.as_str()),
        )
    {
        return validation(&[format!(
            "The contact name {name} is already assigned to another contact. The contact name must be unique across all active contacts."
        )]);
    }
    let c = &mut org.contacts[pos];
    // Writes omit unspecified elements: a partial update.
    if let Some(o) = e.as_object() {
        for (k, v) in o {
            c.json[k] = v.clone();
        }
    }
    if let Some(status) = s(e, "ContactStatus") {
        c.status = status;
    }
    c.json["ContactStatus"] = json!(c.status);
    if let Some(n) = s(e, "Name") {
        c.name = n;
    }
    if let Some(n) = s(e, "ContactNumber") {
        c.number = Some(n);
    }
    c.email = s(&c.json, "EmailAddress");
    resp(200, json!({"Contacts": [c.json]}))
}

fn item_json(i: &XItem) -> Value {
    let mut v = i.json.clone();
    v["ItemID"] = json!(i.id);
    v["Code"] = json!(i.code);
    v["IsTrackedAsInventory"] = json!(i.tracked);
    if i.tracked {
        v["QuantityOnHand"] = num(i.quantity);
    }
    v
}

fn create_item(org: &mut XeroOrg, e: &Value) -> Result<Value, Vec<String>> {
    let mut problems = Vec::new();
    let code = s(e, "Code").unwrap_or_default();
    if code.is_empty() {
        problems.push("Item code must be specified".to_owned());
    }
    if code.chars().count() > 30 {
        problems.push("The Code must be 30 characters or less".into());
    }
    let name = s(e, "Name").unwrap_or_default();
    if name.chars().count() > 50 {
        problems.push("The Name must be 50 characters or less".into());
    }
    if rules::is_taken(&code, org.items.iter().map(|i| i.code.as_str())) {
        problems.push(format!("Item code '{code}' already exists"));
    }
    let tracked = s(e, "InventoryAssetAccountCode").is_some();
    if tracked {
        let asset_ok = s(e, "InventoryAssetAccountCode")
            .and_then(|c| org.account_by_code(&c).map(|a| a.kind == "INVENTORY"))
            == Some(true);
        let cogs = e.get("PurchaseDetails").and_then(|p| s(p, "COGSAccountCode"));
        if !asset_ok {
            problems.push("Inventory asset account must be an account of type INVENTORY".into());
        }
        if cogs.and_then(|c| org.account_by_code(&c).map(|_| ())).is_none() {
            problems.push("A COGS account must be specified for a tracked item".into());
        }
    }
    if let Some(a) = e.get("SalesDetails").and_then(|d| s(d, "AccountCode"))
        && org.account_by_code(&a).is_none()
    {
        problems.push("Account code must be valid".into());
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let id = org.id();
    let item = XItem { id, code, name, tracked, quantity: Decimal::ZERO, json: e.clone() };
    let out = item_json(&item);
    org.items.push(item);
    Ok(out)
}

fn update_item(org: &mut XeroOrg, id: &str, e: &Value) -> SimResponse {
    let Some(item) = org.items.iter_mut().find(|i| i.id == id) else { return not_found() };
    if let Some(o) = e.as_object() {
        for (k, v) in o {
            if k != "QuantityOnHand" && k != "Code" {
                item.json[k] = v.clone();
            }
        }
    }
    if let Some(n) = s(e, "Name") {
        item.name = n;
    }
    resp(200, json!({"Items": [item_json(item)]}))
}

/// What a line books: `(line amount, tax)`.
fn line_amounts(
    org: &XeroOrg,
    l: &Value,
    mode: &str,
    unitdp4: bool,
    discounts_allowed: bool,
    i: usize,
) -> Result<(Decimal, Decimal), String> {
    let qty = dec(l.get("Quantity")).unwrap_or(Decimal::ONE);
    if qty < Decimal::ZERO {
        return Err(format!("The quantity value '{qty}' is invalid. Quantity must not be less than zero."));
    }
    let unit = dec(l.get("UnitAmount")).unwrap_or_default();
    let dp = if unitdp4 { 4 } else { 2 };
    if unit.normalize().scale() > dp {
        return Err(format!("Line {i}: UnitAmount {unit} has more than {dp} decimal places"));
    }
    let discount = dec(l.get("DiscountAmount")).unwrap_or_default();
    if !discount.is_zero() && !discounts_allowed {
        return Err("DiscountAmount is only supported on ACCREC invoices".into());
    }
    let amount = round_money(qty * unit) - discount;
    if mode == "NoTax" {
        return Ok((amount, Decimal::ZERO));
    }
    let tax_type = s(l, "TaxType").unwrap_or_default();
    let Some(pct) = org.rate(&tax_type) else {
        return Err(format!("Line {i}: Tax rate must be valid. ({tax_type})"));
    };
    let computed = match mode {
        "Inclusive" if pct.is_zero() => Decimal::ZERO,
        "Inclusive" => RoundingPolicy::HalfUp.round(amount * pct / (Decimal::ONE_HUNDRED + pct), 2),
        _ => RoundingPolicy::HalfUp.round(amount * pct / Decimal::ONE_HUNDRED, 2),
    };
    let tax = match dec(l.get("TaxAmount")) {
        Some(t) if t.abs() > amount.abs() => return Err("The tax amount cannot be greater than the line amount".into()),
        Some(t) if pct.is_zero() && !t.is_zero() => {
            return Err(format!("Line {i}: a {tax_type} line cannot carry tax"));
        }
        Some(t) => t,
        None => computed,
    };
    Ok((amount, tax))
}

fn create_doc(org: &mut XeroOrg, e: &Value, is_invoice: bool, unitdp4: bool) -> Result<Value, Vec<String>> {
    let mut problems = Vec::new();
    let kind = s(e, "Type").unwrap_or_default();
    let allowed: &[&str] = if is_invoice { &["ACCREC", "ACCPAY"] } else { &["ACCRECCREDIT", "ACCPAYCREDIT"] };
    if !allowed.contains(&kind.as_str()) {
        return Err(vec![format!("Type must be one of {}", allowed.join(", "))]);
    }
    let contact_id = e.get("Contact").and_then(|c| s(c, "ContactID")).unwrap_or_default();
    match org.contacts.iter().find(|c| c.id == contact_id) {
        None => problems.push("The Contact must contain at least 1 of the following elements to identify the contact: Name, ContactID, ContactNumber".into()),
        Some(c) if c.status == "ARCHIVED" => problems.push("The contact with the specified contact details has been archived. The contact must be un-archived before creating new invoices or credit notes.".into()),
        Some(_) => {}
    }
    let number_field = if is_invoice { "InvoiceNumber" } else { "CreditNoteNumber" };
    let number = s(e, number_field).unwrap_or_default();
    if number.chars().count() > 255 {
        problems.push(format!("{number_field} must not be more than 255 characters"));
    }
    let sales = kind.starts_with("ACCREC");
    let docs = if is_invoice { &org.invoices } else { &org.credit_notes };
    if sales
        && !number.is_empty()
        && rules::is_taken(&number, docs.iter().filter(|d| d.kind == kind).map(|d| d.number.as_str()))
    {
        problems.push(if is_invoice {
            "Invoice # must be unique.".into()
        } else {
            "Credit Note # must be unique.".into()
        });
    }
    let currency = s(e, "CurrencyCode").unwrap_or_else(|| org.base_currency.clone());
    if currency != org.base_currency && !org.currencies.contains(&currency) {
        problems.push(format!("Organisation is not subscribed to currency {currency}"));
    }
    let status = s(e, "Status").unwrap_or_else(|| "DRAFT".into());
    let mode = s(e, "LineAmountTypes").unwrap_or_else(|| "Exclusive".into());
    if !["Exclusive", "Inclusive", "NoTax"].contains(&mode.as_str()) {
        problems.push(format!("LineAmountTypes {mode} is not valid"));
    }
    let Some(date) = date(e, "Date") else {
        return Err(vec!["Date must be specified (YYYY-MM-DD)".into()]);
    };
    let lines = e.get("LineItems").and_then(Value::as_array).cloned().unwrap_or_default();
    if lines.is_empty() {
        problems.push("At least one line item must be specified".into());
    }
    let (mut sub, mut tax, mut total) = (Decimal::ZERO, Decimal::ZERO, Decimal::ZERO);
    let mut stock: Vec<(String, Decimal)> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        if s(l, "Description").is_none() {
            problems.push(format!("Line {i}: Description must be specified"));
        }
        if status == "AUTHORISED" {
            match s(l, "AccountCode") {
                None => problems.push("Account code must be specified".into()),
                Some(code) if org.account_by_code(&code).is_none() => {
                    problems.push(format!("Account code '{code}' is not a valid code for this document."))
                }
                Some(_) => {}
            }
            if mode != "NoTax" && s(l, "TaxType").is_none() {
                problems.push("The TaxType field is mandatory".into());
            }
        }
        match line_amounts(org, l, &mode, unitdp4, kind == "ACCREC", i) {
            Ok((amount, t)) => {
                tax += t;
                if mode == "Inclusive" {
                    total += amount;
                    sub += amount - t;
                } else {
                    sub += amount;
                    total += amount + t;
                }
            }
            Err(m) => problems.push(m),
        }
        if let Some(code) = s(l, "ItemCode") {
            match org.items.iter().find(|it| it.code == code) {
                None => problems.push(format!("Item code '{code}' is not valid")),
                Some(it) if it.tracked => stock.push((code, dec(l.get("Quantity")).unwrap_or(Decimal::ONE))),
                Some(_) => {}
            }
        }
    }
    // Tracked items: approval moves stock; selling below zero is refused (Q17).
    let sign = match kind.as_str() {
        "ACCREC" | "ACCPAYCREDIT" => -Decimal::ONE,
        _ => Decimal::ONE,
    };
    if status == "AUTHORISED" {
        for (code, qty) in &stock {
            if let Some(it) = org.items.iter().find(|it| it.code == *code)
                && rules::stock_after(it.quantity, sign * *qty).is_none_or(|after| after < Decimal::ZERO)
            {
                problems.push(format!("No item(s) available to sell: {code} has {} on hand", it.quantity.normalize()));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    if status == "AUTHORISED" {
        for (code, qty) in &stock {
            if let Some(it) = org.items.iter_mut().find(|it| it.code == *code) {
                it.quantity = rules::stock_after(it.quantity, sign * *qty).unwrap_or(it.quantity);
            }
        }
    }
    let id = org.id();
    let doc = XDoc {
        id,
        kind,
        number: if number.is_empty() {
            format!("INV-{:04}", org.invoices.len() + org.credit_notes.len() + 1)
        } else {
            number
        },
        reference: s(e, "Reference"),
        contact_id,
        currency,
        currency_rate: dec(e.get("CurrencyRate")),
        date,
        status,
        line_amount_types: mode,
        lines,
        sub_total: sub,
        total_tax: tax,
        total,
        paid: Decimal::ZERO,
        credited: Decimal::ZERO,
    };
    let out = doc_json(org, &doc);
    if is_invoice {
        org.invoices.push(doc);
    } else {
        org.credit_notes.push(doc);
    }
    Ok(out)
}

fn doc_json(org: &XeroOrg, d: &XDoc) -> Value {
    let contact = org.contacts.iter().find(|c| c.id == d.contact_id);
    let mut v = Map::new();
    let credit = d.is_credit();
    v.insert((if credit { "CreditNoteID" } else { "InvoiceID" }).into(), json!(d.id));
    v.insert((if credit { "CreditNoteNumber" } else { "InvoiceNumber" }).into(), json!(d.number));
    v.insert("Type".into(), json!(d.kind));
    v.insert("Reference".into(), json!(d.reference.clone().unwrap_or_default()));
    v.insert("Contact".into(), json!({"ContactID": d.contact_id, "Name": contact.map(|c| c.name.clone()).unwrap_or_default(), "ContactNumber": contact.and_then(|c| c.number.clone())}));
    v.insert("Date".into(), json!(ms(d.date)));
    v.insert("DateString".into(), json!(format!("{}T00:00:00", d.date)));
    v.insert("Status".into(), json!(d.status));
    v.insert("LineAmountTypes".into(), json!(d.line_amount_types));
    v.insert("LineItems".into(), Value::Array(d.lines.clone()));
    v.insert("SubTotal".into(), num(d.sub_total));
    v.insert("TotalTax".into(), num(d.total_tax));
    v.insert("Total".into(), num(d.total));
    v.insert("CurrencyCode".into(), json!(d.currency));
    if let Some(r) = d.currency_rate {
        v.insert("CurrencyRate".into(), serde_json::from_str(&r.to_string()).unwrap_or(Value::Null));
    }
    if credit {
        v.insert("RemainingCredit".into(), num(d.outstanding()));
        let allocations: Vec<Value> = org
            .allocations
            .iter()
            .filter(|a| a.credit_note_id == d.id)
            .map(|a| json!({"AllocationID": a.id, "Amount": num(a.amount), "Date": ms(a.date), "Invoice": {"InvoiceID": a.invoice_id}}))
            .collect();
        v.insert("Allocations".into(), Value::Array(allocations));
    } else {
        v.insert("AmountDue".into(), num(d.outstanding()));
        v.insert("AmountPaid".into(), num(d.paid));
        v.insert("AmountCredited".into(), num(d.credited));
    }
    let payments: Vec<Value> = org
        .payments
        .iter()
        .filter(|p| p.document_id == d.id)
        .map(|p| json!({"PaymentID": p.id, "Date": ms(p.date), "Amount": num(p.amount), "Reference": p.reference, "Status": "AUTHORISED"}))
        .collect();
    v.insert("Payments".into(), Value::Array(payments));
    v.insert("StatusAttributeString".into(), json!("OK"));
    Value::Object(v)
}

fn update_status(org: &mut XeroOrg, id: &str, e: &Value, kind: &str) -> SimResponse {
    let has_settlements = org.payments.iter().any(|p| p.document_id == id)
        || org.allocations.iter().any(|a| a.invoice_id == id || a.credit_note_id == id);
    let exists = if kind == "Invoices" {
        org.invoices.iter().any(|d| d.id == id)
    } else {
        org.credit_notes.iter().any(|d| d.id == id)
    };
    if !exists {
        return not_found();
    }
    let Some(doc) = org.doc_mut(id) else { return not_found() };
    let wanted = s(e, "Status").unwrap_or_default();
    let allowed = match (doc.status.as_str(), wanted.as_str()) {
        ("DRAFT" | "SUBMITTED", "DELETED" | "AUTHORISED" | "SUBMITTED") => true,
        ("AUTHORISED", "VOIDED") => !has_settlements,
        _ => false,
    };
    if !allowed {
        let message = if doc.status == "AUTHORISED" && has_settlements {
            "This document cannot be edited as it has a payment or credit note allocated to it"
        } else {
            "Invoice not of valid status for modification"
        };
        return validation(&[message.into()]);
    }
    doc.status = wanted;
    let doc = doc.clone();
    resp(200, json!({ kind: [doc_json(org, &doc)] }))
}

fn payment_json(org: &XeroOrg, p: &XPayment) -> Value {
    let doc = org.doc(&p.document_id);
    let mut v = json!({"PaymentID": p.id, "Date": ms(p.date), "Amount": num(p.amount), "Reference": p.reference,
        "Status": "AUTHORISED", "PaymentType": p.kind, "Account": {"AccountID": p.account_id}, "StatusAttributeString": "OK"});
    if let Some(r) = p.currency_rate {
        v["CurrencyRate"] = serde_json::from_str(&r.to_string()).unwrap_or(Value::Null);
    }
    match doc {
        Some(d) if d.is_credit() => v["CreditNote"] = json!({"CreditNoteID": d.id, "CreditNoteNumber": d.number}),
        Some(d) => v["Invoice"] = json!({"InvoiceID": d.id, "InvoiceNumber": d.number}),
        None => {}
    }
    v
}

fn create_payment(org: &mut XeroOrg, e: &Value) -> Result<Value, Vec<String>> {
    let invoice_id = e.get("Invoice").and_then(|i| s(i, "InvoiceID"));
    let note_id = e.get("CreditNote").and_then(|c| s(c, "CreditNoteID"));
    let Some(doc_id) = invoice_id.clone().or(note_id) else {
        return Err(vec!["You must specify either an Invoice, CreditNote, Prepayment or Overpayment".into()]);
    };
    let account_id = e.get("Account").and_then(|a| {
        s(a, "AccountID").or_else(|| s(a, "Code").and_then(|c| org.account_by_code(&c).map(|x| x.id.clone())))
    });
    let Some(account) = account_id.and_then(|id| org.accounts.iter().find(|a| a.id == id).cloned()) else {
        return Err(vec!["Account must be valid.".into()]);
    };
    if account.kind != "BANK" && !account.enable_payments {
        return Err(vec![
            "Payments cannot be made to this account: it is not a bank account and payments are not enabled on it"
                .into(),
        ]);
    }
    let Some(amount) = dec(e.get("Amount")).filter(|a| *a > Decimal::ZERO) else {
        return Err(vec!["Payment amount must be greater than zero".into()]);
    };
    let Some(date) = date(e, "Date") else { return Err(vec!["Date must be specified (YYYY-MM-DD)".into()]) };
    let Some(doc) = org.doc(&doc_id).cloned() else { return Err(vec!["Invoice could not be found".into()]) };
    if doc.status != "AUTHORISED" {
        return Err(vec!["Payments can only be made against Authorised documents".into()]);
    }
    if let Some(c) = &account.currency
        && *c != doc.currency
        && *c != org.base_currency
    {
        return Err(vec![format!("The payment's bank account ({c}) cannot pay a {} document", doc.currency)]);
    }
    // Positive and AUTHORISED were checked above with Xero's own messages.
    if rules::check_settlement(amount, doc.outstanding(), false).is_err() {
        return Err(vec!["Payment amount exceeds the amount outstanding on this document".into()]);
    }
    let id = org.id();
    let p = XPayment {
        id,
        document_id: doc_id.clone(),
        account_id: account.id,
        date,
        amount,
        reference: s(e, "Reference"),
        currency_rate: dec(e.get("CurrencyRate")),
        kind: if invoice_id.is_some() { "ACCRECPAYMENT".into() } else { "ARCREDITPAYMENT".into() },
    };
    if let Some(d) = org.doc_mut(&doc_id) {
        d.paid += amount;
        if d.outstanding().is_zero() {
            d.status = "PAID".into();
        }
    }
    let out = payment_json(org, &p);
    org.payments.push(p);
    Ok(out)
}

fn allocate(org: &mut XeroOrg, credit_note_id: &str, e: &Value) -> Result<Value, Vec<String>> {
    let Some(note) = org.credit_notes.iter().find(|d| d.id == credit_note_id).cloned() else {
        return Err(vec!["Credit note could not be found".into()]);
    };
    let invoice_id = e.get("Invoice").and_then(|i| s(i, "InvoiceID")).unwrap_or_default();
    let Some(inv) = org.invoices.iter().find(|d| d.id == invoice_id).cloned() else {
        return Err(vec!["Invoice could not be found".into()]);
    };
    let Some(amount) = dec(e.get("Amount")).filter(|a| *a > Decimal::ZERO) else {
        return Err(vec!["Amount must be greater than zero".into()]);
    };
    let Some(date) = date(e, "Date") else { return Err(vec!["Date must be specified (YYYY-MM-DD)".into()]) };
    if note.status != "AUTHORISED" || inv.status != "AUTHORISED" {
        return Err(vec!["Allocations can only be made between Authorised documents".into()]);
    }
    if note.contact_id != inv.contact_id || !(note.kind == "ACCRECCREDIT" && inv.kind == "ACCREC") {
        return Err(vec![
            "incorrect invoice type: the credit note and the invoice must belong to the same contact".into(),
        ]);
    }
    if [inv.outstanding(), note.outstanding()].into_iter().any(|o| rules::check_settlement(amount, o, false).is_err()) {
        return Err(vec!["Credit Note cannot be allocated as amount is greater than amount outstanding".into()]);
    }
    let id = org.id();
    for doc in [invoice_id.as_str(), credit_note_id] {
        if let Some(d) = org.doc_mut(doc) {
            d.credited += amount;
            if d.outstanding().is_zero() {
                d.status = "PAID".into();
            }
        }
    }
    let a = XAllocation {
        id: id.clone(),
        credit_note_id: credit_note_id.to_owned(),
        invoice_id: invoice_id.clone(),
        amount,
        date,
    };
    org.allocations.push(a);
    Ok(json!({"AllocationID": id, "Amount": num(amount), "Date": ms(date), "Invoice": {"InvoiceID": invoice_id},
              "CreditNote": {"CreditNoteID": credit_note_id}, "StatusAttributeString": "OK"}))
}
