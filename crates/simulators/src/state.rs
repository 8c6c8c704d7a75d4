//! The simulator's state machine: one request in, one answer out, with Sage's documented rules.
//! No I/O here; [`super::SimServer`] serves it over HTTP.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::{Fault, SimConfig};
use byte8_ledger_core::{money::round_money, reference::ReferenceData};

/// One request as the simulator sees it.
#[derive(Debug, Clone)]
pub struct SimRequest {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path (`/v3.1/contacts/…` or `/token`).
    pub path: String,
    /// Query pairs, decoded.
    pub query: Vec<(String, String)>,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl SimRequest {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn q(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// One answer.
#[derive(Debug, Clone)]
pub struct SimResponse {
    /// Status.
    pub status: u16,
    /// Extra headers (`Retry-After`).
    pub headers: Vec<(String, String)>,
    /// JSON body.
    pub body: Value,
}

impl SimResponse {
    fn json(status: u16, body: Value) -> Self {
        Self { status, headers: Vec::new(), body }
    }

    fn errors(status: u16, code: &str, source: &str, message: &str) -> Self {
        Self::json(status, json!([{"$severity": "error", "$dataCode": code, "$message": message, "$source": source}]))
    }

    fn invalid(source: &str, message: &str) -> Self {
        Self::errors(422, "RecordInvalid", source, message)
    }

    fn not_found(what: &str) -> Self {
        Self::errors(404, "RecordNotFound", "", &format!("Couldn't find {what}"))
    }
}

fn dec(v: &Value) -> Option<Decimal> {
    match v {
        Value::Number(n) => byte8_ledger_core::money::parse_decimal(&n.to_string()).ok(),
        Value::String(s) => byte8_ledger_core::money::parse_decimal(s).ok(),
        _ => None,
    }
}

fn money(d: Decimal) -> Value {
    Value::String(byte8_ledger_core::money::format_money(d))
}

fn s(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_owned)
}

fn link(id: &str, display: &str, path: &str) -> Value {
    json!({"id": id, "displayed_as": display, "$path": format!("/{path}/{id}")})
}

/// A contact.
#[derive(Debug, Clone)]
pub struct SimContact {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Reference.
    pub reference: Option<String>,
    /// Currency.
    pub currency: String,
    /// E-mail.
    pub email: Option<String>,
    /// Main address country.
    pub country: Option<String>,
    /// Soft-deleted (its reference stays reserved).
    pub deleted: bool,
    /// The stored JSON.
    pub json: Value,
}

/// A sales invoice or credit note.
#[derive(Debug, Clone)]
pub struct SimDocument {
    /// Id.
    pub id: String,
    /// `SI-1`, `SCN-1`.
    pub number: String,
    /// Reference.
    pub reference: String,
    /// Contact.
    pub contact_id: String,
    /// Currency.
    pub currency: String,
    /// Date.
    pub date: NaiveDate,
    /// Net (lines and shipping).
    pub net: Decimal,
    /// Tax (lines and recomputed shipping tax).
    pub tax: Decimal,
    /// Total.
    pub total: Decimal,
    /// Outstanding.
    pub outstanding: Decimal,
    /// Voided.
    pub voided: bool,
    /// Marked as sent (reading it without `mark_as_sent=false` sets it, Q17).
    pub sent: bool,
    /// The request body it was created from.
    pub request: Value,
}

/// A payment or allocation.
#[derive(Debug, Clone)]
pub struct SimTransaction {
    /// Id.
    pub id: String,
    /// Contact.
    pub contact_id: String,
    /// Reference.
    pub reference: Option<String>,
    /// Date.
    pub date: NaiveDate,
    /// Total.
    pub total: Decimal,
    /// (artefact id, amount).
    pub artefacts: Vec<(String, Decimal)>,
    /// What a receipt left unallocated: a payment on account (its artefact id is the payment's
    /// id), which allocations can later settle against invoices.
    pub on_account: Decimal,
    /// The request body it was created from (bank account, currency, exchange rate).
    pub request: Value,
}

/// A product, service or stock item.
#[derive(Debug, Clone)]
pub struct SimItem {
    /// Id.
    pub id: String,
    /// `products`, `services`, `stock_items`.
    pub kind: &'static str,
    /// Item code.
    pub code: String,
    /// Description.
    pub description: String,
    /// Quantity in stock (stock items).
    pub quantity: Decimal,
    /// The stored JSON.
    pub json: Value,
}

/// A stock movement.
#[derive(Debug, Clone)]
pub struct SimMovement {
    /// Id.
    pub id: String,
    /// Stock item.
    pub stock_item_id: String,
    /// Signed quantity.
    pub quantity: Decimal,
    /// Details.
    pub details: String,
}

/// One simulated business.
#[derive(Debug, Clone)]
pub struct SimBusiness {
    /// Its reference data (what the reference endpoints serve).
    pub reference: ReferenceData,
    /// Whether its subscription is active (false: every request is answered 401 "No active
    /// subscription").
    pub subscription_active: bool,
    /// Contacts.
    pub contacts: Vec<SimContact>,
    /// Sales invoices.
    pub invoices: Vec<SimDocument>,
    /// Sales credit notes.
    pub credit_notes: Vec<SimDocument>,
    /// Customer receipts.
    pub payments: Vec<SimTransaction>,
    /// Customer refunds (`CUSTOMER_REFUND` contact payments): money paid back to a customer,
    /// allocated to credit notes.
    pub refunds: Vec<SimTransaction>,
    /// Allocations.
    pub allocations: Vec<SimTransaction>,
    /// Items.
    pub items: Vec<SimItem>,
    /// Stock movements.
    pub movements: Vec<SimMovement>,
    idempotency: HashMap<String, (String, SimResponse)>,
    window: VecDeque<DateTime<Utc>>,
    /// 429s still to answer in a throttle burst.
    burst_left: u32,
    next_id: u64,
}

impl SimBusiness {
    /// A business serving `reference`.
    pub fn new(reference: ReferenceData) -> Self {
        Self {
            reference,
            subscription_active: true,
            contacts: Vec::new(),
            invoices: Vec::new(),
            credit_notes: Vec::new(),
            payments: Vec::new(),
            refunds: Vec::new(),
            allocations: Vec::new(),
            items: Vec::new(),
            movements: Vec::new(),
            idempotency: HashMap::new(),
            window: VecDeque::new(),
            burst_left: 0,
            next_id: 1,
        }
    }

    /// Marks a contact active or inactive (`is_active`, as Sage answers it); false when there is
    /// no such contact.
    pub fn set_contact_active(&mut self, id: &str, active: bool) -> bool {
        match self.contacts.iter_mut().find(|c| c.id == id) {
            Some(c) => {
                c.json["is_active"] = json!(active);
                true
            }
            None => false,
        }
    }

    /// Sets an item's `active` as Sage answers it: `Some(b)`, or `None` for the `"active": null`
    /// a real `/products` page carries; false when there is no such item.
    pub fn set_item_active(&mut self, id: &str, active: Option<bool>) -> bool {
        match self.items.iter_mut().find(|i| i.id == id) {
            Some(i) => {
                i.json["active"] = active.map_or(Value::Null, Value::Bool);
                true
            }
            None => false,
        }
    }

    fn id(&mut self, prefix: &str) -> String {
        let n = self.next_id;
        self.next_id += 1;
        // 32 hex characters, like Sage's GUIDs, with a readable prefix folded in.
        let tag: String = prefix.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        format!("{:0>32}", format!("{tag}{n:x}")).chars().rev().take(32).collect::<String>().chars().rev().collect()
    }

    fn base(&self) -> String {
        self.reference.business.base_currency.code().to_owned()
    }

    fn tax_pct(&self, id: &str) -> Option<Decimal> {
        self.reference.tax_rate(id).and_then(|r| r.percentage)
    }
}

/// Tokens of the simulated OAuth server.
#[derive(Debug, Default)]
pub(super) struct Tokens {
    /// access token → expiry.
    access: HashMap<String, DateTime<Utc>>,
    /// live refresh tokens.
    refresh: HashSet<String>,
    /// authorisation codes.
    pub(super) codes: HashMap<String, crate::oauth::CodeGrant>,
    counter: u64,
}

/// The whole simulated world.
#[derive(Debug)]
pub struct SimState {
    pub(super) config: SimConfig,
    /// Businesses by id.
    pub businesses: BTreeMap<String, SimBusiness>,
    pub(super) tokens: Tokens,
    /// Requests by `METHOD /resource`.
    pub requests: BTreeMap<String, u64>,
    /// 429 answers given.
    pub throttled: u64,
    /// 5xx answers injected before acting (scripted or random).
    pub errors_before_acting: u64,
    /// 500 answers injected after the request took effect (scripted or random).
    pub errors_after_commit: u64,
    /// Refreshes served.
    pub refreshes: u64,
    /// Refresh tokens revoked (`POST /revoke`).
    pub revocations: u64,
    pub(super) scripted: VecDeque<(Option<String>, Fault)>,
    pub(super) rng: rand::rngs::StdRng,
}

impl SimState {
    pub(super) fn new(config: SimConfig) -> Self {
        use rand::SeedableRng;
        let seed = config.seed;
        Self {
            config,
            businesses: BTreeMap::new(),
            tokens: Tokens::default(),
            requests: BTreeMap::new(),
            throttled: 0,
            errors_before_acting: 0,
            errors_after_commit: 0,
            refreshes: 0,
            revocations: 0,
            scripted: VecDeque::new(),
            rng: rand::rngs::StdRng::seed_from_u64(seed),
        }
    }

    /// Registers a refresh token (what `byte8-ledger connect` is given).
    pub fn add_refresh_token(&mut self, token: &str) {
        self.tokens.refresh.insert(token.to_owned());
    }

    /// Registers an authorisation code.
    pub fn add_authorization_code(&mut self, code: &str) {
        self.tokens.codes.insert(code.to_owned(), crate::oauth::CodeGrant::registered());
    }

    fn mint(&mut self, now: DateTime<Utc>) -> (String, String) {
        self.tokens.counter += 1;
        let n = self.tokens.counter;
        let access = format!("sim-access-{n}-{:016x}", rand::Rng::random::<u64>(&mut self.rng));
        let refresh = format!("sim-refresh-{n}-{:016x}", rand::Rng::random::<u64>(&mut self.rng));
        let ttl = chrono::Duration::from_std(self.config.access_token_ttl).unwrap_or(chrono::Duration::seconds(300));
        self.tokens.access.insert(access.clone(), now + ttl);
        self.tokens.refresh.insert(refresh.clone());
        (access, refresh)
    }

    /// The token endpoint (`POST /token`, form body).
    pub(super) fn token(&mut self, req: &SimRequest, now: DateTime<Utc>) -> SimResponse {
        let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body).into_owned().collect();
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        if get("client_id") != self.config.client_id || get("client_secret") != self.config.client_secret {
            return SimResponse::json(401, json!({"error": "invalid_client"}));
        }
        match get("grant_type") {
            "refresh_token" => {
                // Rotation: a refresh token works once.
                if !self.tokens.refresh.remove(get("refresh_token")) {
                    return SimResponse::json(400, json!({"error": "invalid_grant"}));
                }
            }
            "authorization_code" => {
                if let Err(refused) = crate::oauth::redeem(&mut self.tokens.codes, &form, now) {
                    return refused;
                }
            }
            _ => return SimResponse::json(400, json!({"error": "unsupported_grant_type"})),
        }
        self.refreshes += 1;
        let (access, refresh) = self.mint(now);
        SimResponse::json(
            200,
            json!({"access_token": access, "refresh_token": refresh, "token_type": "bearer",
                   "expires_in": self.config.access_token_ttl.as_secs(), "refresh_token_expires_in": 2_678_400,
                   "scope": "full_access"}),
        )
    }

    /// The authorize endpoint (`/oauth2/auth/central`): the approval page, and its approve and
    /// deny links, which redirect back with a `GB/`-prefixed code, the `state` and `country=GB`.
    pub(super) fn authorize(&mut self, req: &SimRequest, now: DateTime<Utc>) -> SimResponse {
        self.count(&req.method, "oauth2/auth/central");
        let path = req.path.trim_end_matches('/');
        if path.ends_with("/approve") || path.ends_with("/deny") {
            self.tokens.counter += 1;
            let code = format!("GB/sim-code-{}-{:016x}", self.tokens.counter, rand::Rng::random::<u64>(&mut self.rng));
            return crate::oauth::approve(req, &mut self.tokens.codes, code, now, &[("country", "GB")]);
        }
        crate::oauth::approval_page(req, &self.config.client_id, "Sage Accounting (simulated)", false)
    }

    /// `POST /revoke` (form `token`, `client_id`, `client_secret`): the refresh token stops
    /// working. An unknown token is answered 200 as well (RFC 7009 2.2).
    pub(super) fn revoke(&mut self, req: &SimRequest) -> SimResponse {
        self.count(&req.method, "revoke");
        let form: HashMap<String, String> = url::form_urlencoded::parse(&req.body).into_owned().collect();
        let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
        if get("client_id") != self.config.client_id || get("client_secret") != self.config.client_secret {
            return SimResponse::json(401, json!({"error": "invalid_client"}));
        }
        if self.tokens.refresh.remove(get("token")) {
            self.revocations += 1;
        }
        SimResponse::json(200, Value::Null)
    }

    /// `GET /v3.1/businesses` (no `X-Business`): every business of the simulator, which one token
    /// reaches (add businesses with [`SageSimulator::add_business`](crate::SageSimulator::add_business)).
    pub(super) fn businesses(&mut self, req: &SimRequest, now: DateTime<Utc>) -> SimResponse {
        self.count(&req.method, "businesses");
        let token = req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        if self.tokens.access.get(token).is_none_or(|exp| *exp <= now) {
            return SimResponse::errors(401, "AuthorizationFailure", "", "Access denied. Token invalid or expired.");
        }
        let items: Vec<Value> = self
            .businesses
            .values()
            .map(|b| {
                let p = &b.reference.business;
                json!({"id": p.id, "displayed_as": p.name, "name": p.name, "$path": format!("/businesses/{}", p.id)})
            })
            .collect();
        page(req, items)
    }

    fn count(&mut self, method: &str, resource: &str) {
        *self.requests.entry(format!("{method} /{resource}")).or_insert(0) += 1;
    }

    /// An API request (`/v3.1/...`).
    pub(super) fn api(&mut self, req: &SimRequest, now: DateTime<Utc>) -> SimResponse {
        let path = req.path.trim_start_matches('/');
        let path = path.strip_prefix("v3.1/").unwrap_or(path);
        let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
        let resource = segments.first().copied().unwrap_or("");
        self.count(&req.method, resource);

        // Authorisation: a live bearer token.
        let token = req.header("authorization").and_then(|h| h.strip_prefix("Bearer ")).unwrap_or("");
        match self.tokens.access.get(token) {
            Some(exp) if *exp > now => {}
            _ => {
                return SimResponse::errors(
                    401,
                    "AuthorizationFailure",
                    "",
                    "Access denied. Token invalid or expired.",
                );
            }
        }
        let Some(business_id) = req.header("x-business").map(str::to_owned) else {
            return SimResponse::errors(
                401,
                "AuthorizationFailure",
                "",
                "X-Business header is required for multi-business users",
            );
        };
        let limit = self.config.requests_per_minute;
        let burst = self.config.faults.throttle_burst;
        let scripted = self.take_scripted(&req.method, resource);
        let random_fault = self.random_fault(&req.method);
        let Some(b) = self.businesses.get_mut(&business_id) else {
            return SimResponse::errors(403, "AuthorizationFailure", "", "Access denied to this business");
        };
        if !b.subscription_active {
            return SimResponse::errors(401, "AuthorizationFailure", "", "No active subscription. (MSE)");
        }
        // Per-business rate limit over a sliding 60-second window.
        if let Some(limit) = limit {
            while b.window.front().is_some_and(|t| now - *t >= chrono::Duration::seconds(60)) {
                b.window.pop_front();
            }
            if b.window.len() >= limit as usize {
                let wait = b.window.front().map(|t| 60 - (now - *t).num_seconds()).unwrap_or(1).max(1);
                self.throttled += 1;
                let mut r = SimResponse::errors(429, "TooManyRequests", "", "Rate limit exceeded");
                r.headers.push(("retry-after".into(), wait.to_string()));
                return r;
            }
            b.window.push_back(now);
        }
        // A burst under way answers before anything else is drawn.
        let fault = if b.burst_left > 0 {
            b.burst_left -= 1;
            Some(Fault::Throttle(1))
        } else {
            if random_fault == Some(Fault::Throttle(1)) && scripted.is_none() {
                b.burst_left = burst.saturating_sub(1);
            }
            scripted.or(random_fault)
        };
        match fault {
            Some(Fault::ErrorBefore(status)) => {
                self.errors_before_acting += 1;
                // A 500 carries Sage's real body (tests/fixtures/sage-real/).
                return if status == 500 {
                    SimResponse::errors(500, "UnexpectedError", "", "An unexpected error occurred.")
                } else {
                    SimResponse::errors(status, "InternalServerError", "", "Simulated failure before acting")
                };
            }
            Some(Fault::Throttle(secs)) => {
                self.throttled += 1;
                let mut r = SimResponse::errors(429, "TooManyRequests", "", "Rate limit exceeded (simulated burst)");
                r.headers.push(("retry-after".into(), secs.to_string()));
                return r;
            }
            Some(Fault::AccessDenied) => {
                return SimResponse::errors(
                    403,
                    "MultiUserAccessDenied",
                    "",
                    "The current user is not allowed to access that resource with that method.",
                );
            }
            Some(Fault::NoSubscription) => {
                return SimResponse::errors(401, "AuthorizationFailure", "", "No active subscription. (MSE)");
            }
            _ => {}
        }
        let answer = route(b, req, &segments, now);
        // Real Sage fails a page of too many full objects (500/502/504).
        if let Some(limit) = self.config.full_list_limit
            && req.method == "GET"
            && req.q("attributes") == Some("all")
            && answer.body.get("$items").and_then(Value::as_array).is_some_and(|items| items.len() > limit)
        {
            self.errors_before_acting += 1;
            return SimResponse::json(504, json!({"error": "Gateway Timeout"}));
        }
        if let Some(Fault::ErrorAfterCommit) = fault
            && (200..300).contains(&answer.status)
            && req.method == "POST"
        {
            self.errors_after_commit += 1;
            return SimResponse::errors(500, "UnexpectedError", "", "An unexpected error occurred.");
        }
        answer
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
        let mut acc = f.error_before;
        if roll < acc {
            return Some(Fault::ErrorBefore(if self.rng.random::<bool>() { 500 } else { 503 }));
        }
        acc += f.error_after_commit;
        if roll < acc {
            // Only writes commit; a read in this band is served (it used to fall through into
            // the throttle band and answer a 429 nobody asked for).
            return (method == "POST").then_some(Fault::ErrorAfterCommit);
        }
        acc += f.throttle;
        if roll < acc {
            return Some(Fault::Throttle(1));
        }
        None
    }
}

fn route(b: &mut SimBusiness, req: &SimRequest, seg: &[&str], now: DateTime<Utc>) -> SimResponse {
    let m = req.method.as_str();
    let body: Value =
        if req.body.is_empty() { Value::Null } else { serde_json::from_slice(&req.body).unwrap_or(Value::Null) };
    match (m, seg) {
        ("GET", ["businesses", id]) => business(b, id),
        ("GET", ["financial_settings"]) => json_ok(json!({
            "base_currency": link(&b.base(), &b.base(), "currencies"),
            "multi_currency_enabled": b.reference.business.multi_currency,
            "use_live_exchange_rates": false, "accounting_type": "accrual"
        })),
        ("GET", ["business_settings"]) => json_ok(json!({
            "country_of_registration": if b.reference.business.northern_ireland { link("NORTHERN_IRELAND", "Northern Ireland", "countries_of_registration") } else { link("ENGLAND_AND_WALES", "England and Wales", "countries_of_registration") }
        })),
        (
            "GET",
            [resource @ ("tax_rates" | "ledger_accounts" | "bank_accounts" | "payment_methods" | "currencies")],
        ) => page(req, reference_list(b, resource, req.q("visible_in"))),
        // One reference record by id: what a client reading a list item by item asks for.
        (
            "GET",
            [resource @ ("tax_rates" | "ledger_accounts" | "bank_accounts" | "payment_methods" | "currencies"), id],
        ) => match reference_list(b, resource, None).into_iter().find(|v| v["id"] == *id) {
            Some(v) => json_ok(v),
            None => SimResponse::not_found(resource),
        },
        ("GET", ["contacts"]) => {
            let search = req.q("search").map(str::to_lowercase);
            let items = b
                .contacts
                .iter()
                .filter(|c| !c.deleted)
                .filter(|c| {
                    search.as_deref().is_none_or(|q| {
                        c.name.to_lowercase().contains(q)
                            || c.reference.as_deref().is_some_and(|r| r.to_lowercase().contains(q))
                    })
                })
                .map(|c| c.json.clone())
                .collect();
            page(req, items)
        }
        ("GET", ["contacts", id]) => match b.contacts.iter().find(|c| c.id == *id && !c.deleted) {
            Some(c) => json_ok(c.json.clone()),
            None => SimResponse::not_found("contact"),
        },
        ("POST", ["contacts"]) => idempotent(b, &body, "contact", |b| create_contact(b, &body)),
        ("PUT", ["contacts", id]) => update_contact(b, id, &body),
        ("DELETE", ["contacts", id]) => match b.contacts.iter_mut().find(|c| c.id == *id) {
            Some(c) => {
                c.deleted = true;
                SimResponse::json(204, Value::Null)
            }
            None => SimResponse::not_found("contact"),
        },
        ("GET", [kind @ ("sales_invoices" | "sales_credit_notes")]) => {
            let search = req.q("search").map(str::to_lowercase);
            let contact = req.q("contact_id");
            let docs = if *kind == "sales_invoices" { &b.invoices } else { &b.credit_notes };
            let items = docs
                .iter()
                .filter(|d| search.as_deref().is_none_or(|q| d.reference.to_lowercase().contains(q)))
                .filter(|d| contact.is_none_or(|c| c == d.contact_id))
                .filter(|d| in_dates(req, d.date))
                .map(|d| document_json(b, d, kind))
                .collect();
            page(req, items)
        }
        ("GET", [kind @ ("sales_invoices" | "sales_credit_notes"), id]) => {
            let mark = req.q("mark_as_sent") != Some("false");
            let docs = if *kind == "sales_invoices" { &mut b.invoices } else { &mut b.credit_notes };
            match docs.iter_mut().find(|d| d.id == *id) {
                Some(d) => {
                    if mark {
                        d.sent = true;
                    }
                    let d = d.clone();
                    json_ok(document_json(b, &d, kind))
                }
                None => SimResponse::not_found("sales document"),
            }
        }
        ("POST", ["sales_invoices"]) => {
            idempotent(b, &body, "sales_invoice", |b| create_document(b, &body, "sales_invoice", now))
        }
        ("POST", ["sales_credit_notes"]) => {
            idempotent(b, &body, "sales_credit_note", |b| create_document(b, &body, "sales_credit_note", now))
        }
        ("DELETE", [kind @ ("sales_invoices" | "sales_credit_notes"), id]) => {
            let reason = req.q("void_reason").unwrap_or("").to_owned();
            if reason.trim().is_empty() {
                return SimResponse::invalid("void_reason", "can't be blank");
            }
            if reason.chars().count() > 200 {
                return SimResponse::invalid("void_reason", "is too long (maximum is 200 characters)");
            }
            let docs = if *kind == "sales_invoices" { &mut b.invoices } else { &mut b.credit_notes };
            match docs.iter_mut().find(|d| d.id == *id) {
                Some(d) => {
                    d.voided = true;
                    d.outstanding = Decimal::ZERO;
                    let d = d.clone();
                    json_ok(document_json(b, &d, kind))
                }
                None => SimResponse::not_found("sales document"),
            }
        }
        ("GET", ["contact_payments"]) => {
            // Receipts and refunds, filtered by `transaction_type_id` when it is given.
            let kind = req.q("transaction_type_id");
            let receipts = transactions(&b.payments, req).into_iter().map(|t| transaction_json(t, "CUSTOMER_RECEIPT"));
            let refunds = transactions(&b.refunds, req).into_iter().map(|t| transaction_json(t, "CUSTOMER_REFUND"));
            let items = receipts
                .filter(|_| kind.is_none_or(|k| k == "CUSTOMER_RECEIPT"))
                .chain(refunds.filter(|_| kind.is_none_or(|k| k == "CUSTOMER_REFUND")))
                .collect();
            page(req, items)
        }
        ("POST", ["contact_payments"]) => idempotent(b, &body, "contact_payment", |b| create_payment(b, &body)),
        ("GET", ["contact_allocations"]) => {
            let items = transactions(&b.allocations, req)
                .into_iter()
                .map(|t| transaction_json(t, "CUSTOMER_ALLOCATION"))
                .collect();
            page(req, items)
        }
        ("POST", ["contact_allocations"]) => {
            idempotent(b, &body, "contact_allocation", |b| create_allocation(b, &body))
        }
        ("GET", [kind @ ("products" | "services" | "stock_items")]) => {
            let search = req.q("search").map(str::to_lowercase);
            let items = b
                .items
                .iter()
                .filter(|i| i.kind == *kind || (*kind == "products" && i.kind == "stock_items"))
                .filter(|i| {
                    search
                        .as_deref()
                        .is_none_or(|q| i.code.to_lowercase().contains(q) || i.description.to_lowercase().contains(q))
                })
                .map(item_json)
                .collect();
            page(req, items)
        }
        ("GET", [kind @ ("products" | "services" | "stock_items"), id]) => {
            match b.items.iter().find(|i| i.id == *id && (i.kind == *kind || *kind == "products")) {
                Some(i) => json_ok(item_json(i)),
                None => SimResponse::not_found("item"),
            }
        }
        ("POST", [kind @ ("products" | "services" | "stock_items")]) => {
            let ns = match *kind {
                "products" => "product",
                "services" => "service",
                _ => "stock_item",
            };
            let kind = match *kind {
                "products" => "products",
                "services" => "services",
                _ => "stock_items",
            };
            idempotent(b, &body, ns, |b| create_item(b, &body, kind, ns))
        }
        ("PUT", [kind @ ("products" | "services" | "stock_items"), id]) => update_item(b, kind, id, &body),
        ("GET", ["stock_movements"]) => {
            let item = req.q("stock_item_id");
            let items = b
                .movements
                .iter()
                .filter(|mv| item.is_none_or(|i| i == mv.stock_item_id))
                .map(|mv| {
                    json!({"id": mv.id, "displayed_as": mv.details, "details": mv.details,
                    "quantity": mv.quantity.to_string(), "stock_item": {"id": mv.stock_item_id}})
                })
                .collect();
            page(req, items)
        }
        ("POST", ["stock_movements"]) => idempotent(b, &body, "stock_movement", |b| create_movement(b, &body)),
        _ => SimResponse::errors(404, "RecordNotFound", "", &format!("No route matches {m} /{}", seg.join("/"))),
    }
}

/// The full objects of one reference list (`/tax_rates`, `/ledger_accounts` filtered by
/// `visible_in`, `/bank_accounts`, `/payment_methods`, `/currencies`), as Sage answers them.
fn reference_list(b: &SimBusiness, resource: &str, visible_in: Option<&str>) -> Vec<Value> {
    let r = &b.reference;
    match resource {
        "tax_rates" => r
            .tax_rates
            .iter()
            .map(|t| {
                json!({"id": t.id, "displayed_as": t.name, "name": t.name,
                "percentage": t.percentage.map(|p| p.to_string()), "is_visible": t.visible})
            })
            .collect(),
        "ledger_accounts" => r
            .ledger_accounts
            .iter()
            .filter(|a| match visible_in {
                Some("sales") => a.visible_in_sales,
                Some("expenses") => a.visible_in_expenses,
                _ => true,
            })
            .map(|a| {
                json!({"id": a.id, "displayed_as": a.name, "name": a.name, "nominal_code": a.code,
                "visible_in_sales": a.visible_in_sales, "visible_in_expenses": a.visible_in_expenses})
            })
            .collect(),
        "bank_accounts" => r
            .bank_accounts
            .iter()
            .map(|a| {
                let mut v = json!({"id": a.id, "displayed_as": a.name, "$path": format!("/bank_accounts/{}", a.id),
                    "balance": "0.0", "is_active": a.active});
                // Real Sage sends no `currency` key on a business without multi-currency.
                if r.business.multi_currency {
                    v["currency"] = a.currency.map(|c| link(c.code(), c.code(), "currencies")).unwrap_or(Value::Null);
                }
                v
            })
            .collect(),
        "payment_methods" => r.payment_methods.iter().map(|p| json!({"id": p.id, "displayed_as": p.name})).collect(),
        "currencies" => r.currencies.iter().map(|c| json!({"id": c, "displayed_as": c})).collect(),
        _ => Vec::new(),
    }
}

fn json_ok(v: Value) -> SimResponse {
    SimResponse::json(200, v)
}

fn business(b: &SimBusiness, id: &str) -> SimResponse {
    if id != b.reference.business.id && id != "lead" {
        return SimResponse::not_found("business");
    }
    let p = &b.reference.business;
    json_ok(json!({
        "id": p.id, "displayed_as": p.name, "name": p.name,
        "country": {"id": p.country, "displayed_as": p.country},
        "ni_based": p.northern_ireland,
        "subscriptions": [{"id": "sub-1", "displayed_as": p.subscription.clone().unwrap_or_default(), "active": true}]
    }))
}

/// A list envelope honouring `page` and `items_per_page` (≤ 200, 20 by default), as real Sage
/// answers (`tests/fixtures/sage-real/`): `$next` and `$back` are paths relative to the API root
/// without the version prefix (`/contacts?page=2&items_per_page=20`), null at either end; a page
/// past the end answers the last page again (Sage's pagination guide), not an empty one.
fn page(req: &SimRequest, items: Vec<Value>) -> SimResponse {
    let per = req.q("items_per_page").and_then(|v| v.parse::<usize>().ok()).unwrap_or(20).clamp(1, 200);
    let asked = req.q("page").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1).max(1);
    let total = items.len();
    let last = total.div_ceil(per).max(1);
    let page = asked.min(last);
    let start = (page - 1) * per;
    let slice: Vec<Value> = items.into_iter().skip(start).take(per).collect();
    let path = req.path.trim_start_matches('/');
    let path = path.strip_prefix("v3.1/").unwrap_or(path);
    let link = |n: usize| {
        let mut q: Vec<(String, String)> = req.query.iter().filter(|(k, _)| k != "page").cloned().collect();
        q.push(("page".into(), n.to_string()));
        let qs: String = url::form_urlencoded::Serializer::new(String::new()).extend_pairs(q).finish();
        format!("/{path}?{qs}")
    };
    let next = (page < last).then(|| link(page + 1));
    let back = (page > 1).then(|| link(page - 1));
    json_ok(json!({"$total": total, "$page": page, "$next": next, "$back": back,
                   "$itemsPerPage": per, "$items": slice}))
}

/// Applies Sage's native idempotency (sage-api.md 0): the same `idempotency_id` returns the
/// same answer; reusing one on another resource kind is `IdempotencyResourceMismatch`.
fn idempotent(
    b: &mut SimBusiness,
    body: &Value,
    namespace: &str,
    create: impl FnOnce(&mut SimBusiness) -> SimResponse,
) -> SimResponse {
    let key = body.get(namespace).and_then(|r| r.get("idempotency_id")).and_then(Value::as_str).map(str::to_owned);
    if let Some(k) = &key
        && let Some((kind, answer)) = b.idempotency.get(k)
    {
        if kind != namespace {
            return SimResponse::errors(
                422,
                "IdempotencyResourceMismatch",
                "idempotency_id",
                "was used for another resource",
            );
        }
        return answer.clone();
    }
    let answer = create(b);
    if let Some(k) = key
        && (200..300).contains(&answer.status)
    {
        b.idempotency.insert(k, (namespace.to_owned(), answer.clone()));
    }
    answer
}

fn too_long(v: &Value, key: &str, max: usize) -> bool {
    v.get(key).and_then(Value::as_str).is_some_and(|s| s.chars().count() > max)
}

fn check_address(v: Option<&Value>, prefix: &str) -> Option<SimResponse> {
    let a = v?;
    for (k, max) in [
        ("address_line_1", 50),
        ("address_line_2", 50),
        ("city", 50),
        ("region", 50),
        ("postal_code", 10),
        ("name", 50),
    ] {
        if too_long(a, k, max) {
            return Some(SimResponse::invalid(
                &format!("{prefix}.{k}"),
                &format!("is too long (maximum is {max} characters)"),
            ));
        }
    }
    None
}

fn create_contact(b: &mut SimBusiness, body: &Value) -> SimResponse {
    let Some(c) = body.get("contact") else { return SimResponse::invalid("contact", "is missing") };
    let name = s(c, "name").unwrap_or_default();
    if name.trim().is_empty() {
        return SimResponse::invalid("contact.name", "can't be blank");
    }
    if name.chars().count() > 100 {
        return SimResponse::invalid("contact.name", "is too long (maximum is 100 characters)");
    }
    if c.get("contact_type_ids").and_then(Value::as_array).is_none_or(Vec::is_empty) {
        return SimResponse::invalid("contact.contact_type_ids", "can't be blank");
    }
    let reference = s(c, "reference");
    if let Some(r) = &reference {
        if r.chars().count() > 10 {
            return SimResponse::invalid("contact.reference", "is too long (maximum is 10 characters)");
        }
        // Deleted contacts keep their reference reserved (byte8-spec.md 9 B2).
        if b.contacts.iter().any(|x| x.reference.as_deref() == Some(r)) {
            return SimResponse::invalid("contact.reference", "has already been taken");
        }
    }
    for prefix in ["main_address", "delivery_address"] {
        if let Some(e) = check_address(c.get(prefix), &format!("contact.{prefix}")) {
            return e;
        }
    }
    let person = c.get("main_contact_person");
    if person.is_some_and(|p| too_long(p, "email", 100) || too_long(p, "name", 50) || too_long(p, "telephone", 50)) {
        return SimResponse::invalid("contact.main_contact_person", "is too long");
    }
    if let Some(e) = check_tax_number(c) {
        return e;
    }
    let currency = s(c, "currency_id").unwrap_or_else(|| b.base());
    if currency != b.base() && !b.reference.business.multi_currency {
        return SimResponse::invalid("contact.currency_id", "Foreign currency is not enabled for this business");
    }
    let id = b.id("co");
    let email = person.and_then(|p| s(p, "email"));
    let country = c.get("main_address").and_then(|a| s(a, "country_id"));
    let json = json!({"id": id, "displayed_as": format!("{name} ({})", reference.clone().unwrap_or_default()),
        "$path": format!("/contacts/{id}"), "name": name, "reference": reference,
        "contact_types": [{"id": "CUSTOMER", "displayed_as": "Customer"}],
        "currency": link(&currency, &currency, "currencies"), "email": email,
        "main_address": c.get("main_address").cloned().unwrap_or(Value::Null),
        "delivery_address": c.get("delivery_address").cloned().unwrap_or(Value::Null),
        "main_contact_person": person.cloned().unwrap_or(Value::Null),
        "tax_number": c.get("tax_number").cloned().unwrap_or(Value::Null),
        "balance": "0.00", "notes": c.get("notes").cloned().unwrap_or(Value::Null), "is_active": true});
    b.contacts.push(SimContact { id, name, reference, currency, email, country, deleted: false, json: json.clone() });
    SimResponse::json(201, json)
}

/// Sage validates a contact's `tax_number` format (openapi-v3.1 `postContacts`): the simulator
/// refuses one longer than 255 characters or holding anything but letters, digits, `+` and `*`
/// (its VAT number shape; spaces and separators are not accepted, so a client must normalise).
fn check_tax_number(c: &Value) -> Option<SimResponse> {
    let t = s(c, "tax_number")?;
    let ok = t.chars().count() <= 255 && t.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '+' || ch == '*');
    (!ok).then(|| SimResponse::invalid("contact.tax_number", "is not a valid VAT number"))
}

fn update_contact(b: &mut SimBusiness, id: &str, body: &Value) -> SimResponse {
    let Some(c) = body.get("contact") else { return SimResponse::invalid("contact", "is missing") };
    let has_documents = b.invoices.iter().chain(&b.credit_notes).any(|d| d.contact_id == id);
    let Some(contact) = b.contacts.iter_mut().find(|x| x.id == id) else {
        return SimResponse::not_found("contact");
    };
    if contact.deleted {
        return SimResponse::invalid("contact", "A deleted contact cannot be updated");
    }
    if let Some(cur) = s(c, "currency_id")
        && cur != contact.currency
        && has_documents
    {
        return SimResponse::invalid("contact.currency_id", "cannot be changed once the contact has transactions");
    }
    if let Some(name) = s(c, "name") {
        if name.chars().count() > 100 {
            return SimResponse::invalid("contact.name", "is too long (maximum is 100 characters)");
        }
        contact.name = name.clone();
        contact.json["name"] = Value::String(name);
    }
    if let Some(e) = check_tax_number(c) {
        return e;
    }
    for key in ["main_address", "delivery_address", "main_contact_person", "notes", "tax_number"] {
        if let Some(v) = c.get(key) {
            contact.json[key] = v.clone();
        }
    }
    if let Some(email) = c.get("main_contact_person").and_then(|p| s(p, "email")) {
        contact.email = Some(email.clone());
        contact.json["email"] = Value::String(email);
    }
    json_ok(contact.json.clone())
}

fn has_entities(text: &str) -> bool {
    let Some(start) = text.find('&') else { return false };
    let rest = &text[start + 1..];
    rest.find(';')
        .is_some_and(|end| end > 0 && end <= 10 && rest[..end].chars().all(|c| c.is_ascii_alphanumeric() || c == '#'))
}

fn create_document(b: &mut SimBusiness, body: &Value, namespace: &str, _now: DateTime<Utc>) -> SimResponse {
    let Some(d) = body.get(namespace) else { return SimResponse::invalid(namespace, "is missing") };
    let lines_key = if namespace == "sales_invoice" { "invoice_lines" } else { "credit_note_lines" };
    let contact_id = s(d, "contact_id").unwrap_or_default();
    let Some(contact) = b.contacts.iter().find(|c| c.id == contact_id && !c.deleted).cloned() else {
        return SimResponse::invalid(&format!("{namespace}.contact_id"), "Couldn't find Customer");
    };
    let Some(date) = s(d, "date").and_then(|t| NaiveDate::parse_from_str(&t, "%Y-%m-%d").ok()) else {
        return SimResponse::invalid(&format!("{namespace}.date"), "is not a date");
    };
    let reference = s(d, "reference").unwrap_or_default();
    if reference.chars().count() > 25 {
        return SimResponse::invalid(&format!("{namespace}.reference"), "is too long (maximum is 25 characters)");
    }
    if too_long(d, "notes", 2000) {
        return SimResponse::invalid(&format!("{namespace}.notes"), "is too long (maximum is 2000 characters)");
    }
    let currency = s(d, "currency_id").unwrap_or_else(|| contact.currency.clone());
    // A contact trades in one currency (Q9 / byte8 §31).
    if currency != contact.currency {
        return SimResponse::invalid(
            &format!("{namespace}.currency_id"),
            &format!("must match the contact's currency ({})", contact.currency),
        );
    }
    if currency == b.base()
        && let Some(rate) = d.get("exchange_rate").and_then(dec)
        && rate != Decimal::ONE
    {
        return SimResponse::invalid(&format!("{namespace}.exchange_rate"), "must be 1 for the base currency");
    }
    // Invoice Address is required (byte8-spec.md 9 B3): on the document or on the contact.
    let main = d.get("main_address").filter(|a| a.get("address_line_1").is_some() || a.get("country_id").is_some());
    if main.is_none() && contact.json.get("main_address").is_none_or(Value::is_null) {
        return SimResponse::invalid(&format!("{namespace}.main_address"), "Invoice Address is required");
    }
    for prefix in ["main_address", "delivery_address"] {
        if let Some(e) = check_address(d.get(prefix), &format!("{namespace}.{prefix}")) {
            return e;
        }
    }
    let Some(lines) = d.get(lines_key).and_then(Value::as_array).filter(|l| !l.is_empty()) else {
        return SimResponse::invalid(&format!("{namespace}.{lines_key}"), "can't be blank");
    };
    let mut net = Decimal::ZERO;
    let mut tax = Decimal::ZERO;
    let mut eu_type: Option<String> = None;
    let mut stock_changes: Vec<(String, Decimal)> = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let field = |k: &str| format!("{lines_key}[{i}].{k}");
        let description = s(l, "description").unwrap_or_default();
        // Sage's umbrella message for many line failures (Q3/Q4).
        let umbrella = || SimResponse::invalid("line_items.description", "This field is required");
        if description.trim().is_empty() || has_entities(&description) {
            return umbrella();
        }
        let ledger = s(l, "ledger_account_id").unwrap_or_default();
        if !b.reference.ledger_account(&ledger).is_some_and(|a| a.visible_in_sales) {
            return SimResponse::invalid(&field("ledger_account_id"), "Couldn't find ledger account visible in sales");
        }
        let Some(unit) = l.get("unit_price").and_then(dec) else {
            return SimResponse::invalid(&field("unit_price"), "can't be blank");
        };
        let qty = l.get("quantity").and_then(dec).unwrap_or(Decimal::ONE);
        let discount = l.get("discount_amount").and_then(dec).unwrap_or(Decimal::ZERO);
        let rate_id = s(l, "tax_rate_id").unwrap_or_default();
        let Some(pct) = b.tax_pct(&rate_id) else {
            return SimResponse::invalid(&field("tax_rate_id"), "Couldn't find tax rate");
        };
        let line_tax = l.get("tax_amount").and_then(dec);
        if pct.is_zero() {
            if line_tax.is_some_and(|t| !t.is_zero()) {
                return SimResponse::invalid(
                    &field("tax_amount"),
                    "You cannot record VAT Amount if using a VAT Rate with a Zero %",
                );
            }
        } else if line_tax.is_none() {
            // v3.1 requires the tax for non-zero rates (Q5); leaving it out posts 0.
            return SimResponse::invalid(&field("tax_amount"), "is required for this tax rate");
        }
        if let Some(t) = s(l, "eu_goods_services_type_id") {
            if eu_type.as_ref().is_some_and(|e| *e != t) {
                return SimResponse::invalid(&field("eu_goods_services_type_id"), "must be the same");
            }
            eu_type = Some(t);
        }
        // Rounded to 2 decimals per line before summing (sage-api.md 3.6).
        net += round_money(qty * round_money(unit)) - round_money(discount);
        tax += round_money(line_tax.unwrap_or_default());
        if let Some(pid) = s(l, "product_id")
            && b.items.iter().any(|it| it.id == pid && it.kind == "stock_items")
        {
            stock_changes.push((pid, qty));
        }
    }
    // The shipping panel: Sage recomputes its tax from the rate (Q6 / byte8 §32).
    let ship_net = d.get("shipping_net_amount").and_then(dec).unwrap_or(Decimal::ZERO);
    if !ship_net.is_zero() {
        let rate_id = s(d, "shipping_tax_rate_id").unwrap_or_default();
        let Some(pct) = b.tax_pct(&rate_id) else {
            return SimResponse::invalid(&format!("{namespace}.shipping_tax_rate_id"), "Couldn't find tax rate");
        };
        net += round_money(ship_net);
        tax += round_money(ship_net * pct / Decimal::ONE_HUNDRED);
    }
    let total = net + tax;
    let is_invoice = namespace == "sales_invoice";
    let n = if is_invoice { b.invoices.len() } else { b.credit_notes.len() } + 1;
    let id = b.id(if is_invoice { "si" } else { "cn" });
    let mut request = d.clone();
    // Without a delivery address Sage copies the billing one (Q2 / byte8 §17).
    if request.get("delivery_address").is_none_or(Value::is_null) {
        request["delivery_address"] = request.get("main_address").cloned().unwrap_or(Value::Null);
    }
    let doc = SimDocument {
        id: id.clone(),
        number: format!("{}-{n}", if is_invoice { "SI" } else { "SCN" }),
        reference,
        contact_id,
        currency,
        date,
        net,
        tax,
        total,
        outstanding: total,
        voided: false,
        sent: false,
        request,
    };
    if is_invoice {
        for (pid, qty) in stock_changes {
            if let Some(item) = b.items.iter_mut().find(|it| it.id == pid) {
                item.quantity -= qty;
            }
        }
        b.invoices.push(doc.clone());
    } else {
        for (pid, qty) in stock_changes {
            if let Some(item) = b.items.iter_mut().find(|it| it.id == pid) {
                item.quantity += qty;
            }
        }
        b.credit_notes.push(doc.clone());
    }
    let kind = if is_invoice { "sales_invoices" } else { "sales_credit_notes" };
    SimResponse::json(201, document_json(b, &doc, kind))
}

fn document_json(b: &SimBusiness, d: &SimDocument, kind: &str) -> Value {
    let contact = b.contacts.iter().find(|c| c.id == d.contact_id);
    let mut v = Map::new();
    v.insert("id".into(), json!(d.id));
    v.insert("displayed_as".into(), json!(d.number));
    v.insert("$path".into(), json!(format!("/{kind}/{}", d.id)));
    v.insert("contact".into(), link(&d.contact_id, contact.map(|c| c.name.as_str()).unwrap_or(""), "contacts"));
    v.insert("reference".into(), json!(d.reference));
    v.insert("date".into(), json!(d.date.format("%Y-%m-%d").to_string()));
    v.insert("currency".into(), link(&d.currency, &d.currency, "currencies"));
    v.insert("net_amount".into(), money(d.net));
    v.insert("tax_amount".into(), money(d.tax));
    v.insert("total_amount".into(), money(d.total));
    v.insert("outstanding_amount".into(), money(d.outstanding));
    v.insert("total_paid".into(), money(d.total - d.outstanding));
    let status = if d.voided {
        "VOID"
    } else if d.outstanding.is_zero() {
        "PAID"
    } else if d.outstanding < d.total {
        "PART_PAID"
    } else {
        "UNPAID"
    };
    v.insert("status".into(), link(status, status, "artefact_statuses"));
    v.insert("sent".into(), json!(d.sent));
    if d.voided {
        v.insert("void_reason".into(), json!("voided"));
    }
    for key in [
        "main_address",
        "delivery_address",
        "notes",
        "exchange_rate",
        "shipping_net_amount",
        "shipping_tax_rate_id",
        "original_invoice_date",
    ] {
        if let Some(x) = d.request.get(key) {
            v.insert(key.into(), x.clone());
        }
    }
    Value::Object(v)
}

fn amounts(body: &Value, key: &str) -> Option<Vec<(String, Decimal)>> {
    body.get(key)?.as_array()?.iter().map(|a| Some((s(a, "artefact_id")?, a.get("amount").and_then(dec)?))).collect()
}

fn find_doc_mut<'a>(b: &'a mut SimBusiness, id: &str) -> Option<&'a mut SimDocument> {
    b.invoices.iter_mut().chain(b.credit_notes.iter_mut()).find(|d| d.id == id)
}

fn create_payment(b: &mut SimBusiness, body: &Value) -> SimResponse {
    let Some(p) = body.get("contact_payment") else { return SimResponse::invalid("contact_payment", "is missing") };
    match s(p, "transaction_type_id").as_deref() {
        Some("CUSTOMER_RECEIPT") => {}
        Some("CUSTOMER_REFUND") => return create_refund(b, p),
        _ => return SimResponse::invalid("contact_payment.transaction_type_id", "is not supported by the simulator"),
    }
    let contact_id = s(p, "contact_id").unwrap_or_default();
    if !b.contacts.iter().any(|c| c.id == contact_id) {
        return SimResponse::invalid("contact_payment.contact_id", "Couldn't find Customer");
    }
    match b.reference.bank_account(&s(p, "bank_account_id").unwrap_or_default()) {
        None => return SimResponse::invalid("contact_payment.bank_account_id", "Couldn't find bank account"),
        Some(a) if !a.active => {
            return SimResponse::invalid("contact_payment.bank_account_id", "The bank account is inactive");
        }
        Some(_) => {}
    }
    let Some(total) = p.get("total_amount").and_then(dec) else {
        return SimResponse::invalid("contact_payment.total_amount", "can't be blank");
    };
    let Some(date) = s(p, "date").and_then(|t| NaiveDate::parse_from_str(&t, "%Y-%m-%d").ok()) else {
        return SimResponse::invalid("contact_payment.date", "is not a date");
    };
    if too_long(p, "reference", 25) {
        return SimResponse::invalid("contact_payment.reference", "is too long (maximum is 25 characters)");
    }
    let artefacts = amounts(p, "allocated_artefacts").unwrap_or_default();
    let allocated: Decimal = artefacts.iter().map(|(_, a)| *a).sum();
    if allocated > total {
        return SimResponse::invalid("contact_payment.allocated_artefacts", "exceed the total amount");
    }
    for (id, amount) in &artefacts {
        let Some(d) = b.invoices.iter().find(|d| d.id == *id) else {
            return SimResponse::invalid("contact_payment.allocated_artefacts", "Couldn't find artefact");
        };
        if d.contact_id != contact_id {
            return SimResponse::invalid("contact_payment.allocated_artefacts", "must belong to the payment's contact");
        }
        let currency = s(p, "currency_id").unwrap_or_else(|| d.currency.clone());
        if currency != d.currency {
            return SimResponse::invalid("contact_payment.currency_id", "must match the invoice currency");
        }
        if d.voided || d.outstanding <= Decimal::ZERO || *amount > d.outstanding || *amount <= Decimal::ZERO {
            return SimResponse::errors(422, "RecordInvalid", "", "You can only pay unpaid or part-paid invoices.");
        }
    }
    for (id, amount) in &artefacts {
        if let Some(d) = find_doc_mut(b, id) {
            d.outstanding -= *amount;
        }
    }
    let on_account = total - allocated;
    let t = SimTransaction {
        id: b.id("pa"),
        contact_id,
        reference: s(p, "reference"),
        date,
        total,
        artefacts,
        on_account,
        request: p.clone(),
    };
    b.payments.push(t.clone());
    SimResponse::json(201, transaction_json(&t, "CUSTOMER_RECEIPT"))
}

/// A `CUSTOMER_REFUND`: money leaves a bank account back to the customer, allocated to credit
/// notes of that contact (positive amounts, within each credit note's outstanding amount and
/// the refund's total), in the credit note's currency.
fn create_refund(b: &mut SimBusiness, p: &Value) -> SimResponse {
    let contact_id = s(p, "contact_id").unwrap_or_default();
    if !b.contacts.iter().any(|c| c.id == contact_id) {
        return SimResponse::invalid("contact_payment.contact_id", "Couldn't find Customer");
    }
    if b.reference.bank_account(&s(p, "bank_account_id").unwrap_or_default()).is_none() {
        return SimResponse::invalid("contact_payment.bank_account_id", "Couldn't find bank account");
    }
    let Some(total) = p.get("total_amount").and_then(dec).filter(|t| *t > Decimal::ZERO) else {
        return SimResponse::invalid("contact_payment.total_amount", "must be greater than 0");
    };
    let Some(date) = s(p, "date").and_then(|t| NaiveDate::parse_from_str(&t, "%Y-%m-%d").ok()) else {
        return SimResponse::invalid("contact_payment.date", "is not a date");
    };
    if too_long(p, "reference", 25) {
        return SimResponse::invalid("contact_payment.reference", "is too long (maximum is 25 characters)");
    }
    let Some(artefacts) = amounts(p, "allocated_artefacts").filter(|a| !a.is_empty()) else {
        // Refunding money held on account needs its payment-on-account id (sage-api.md 4.4);
        // the crate only refunds credit notes.
        return SimResponse::invalid("contact_payment.allocated_artefacts", "can't be blank");
    };
    if artefacts.iter().map(|(_, a)| *a).sum::<Decimal>() != total {
        return SimResponse::invalid("contact_payment.allocated_artefacts", "must add up to the total amount");
    }
    for (id, amount) in &artefacts {
        let Some(d) = b.credit_notes.iter().find(|d| d.id == *id) else {
            return SimResponse::invalid("contact_payment.allocated_artefacts", "Couldn't find credit note");
        };
        if d.contact_id != contact_id {
            return SimResponse::invalid("contact_payment.allocated_artefacts", "must belong to the payment's contact");
        }
        let currency = s(p, "currency_id").unwrap_or_else(|| d.currency.clone());
        if currency != d.currency {
            return SimResponse::invalid("contact_payment.currency_id", "must match the credit note currency");
        }
        if d.voided || *amount <= Decimal::ZERO || *amount > d.outstanding {
            return SimResponse::errors(
                422,
                "RecordInvalid",
                "",
                "You can only refund unpaid or part-paid credit notes.",
            );
        }
    }
    for (id, amount) in &artefacts {
        if let Some(d) = find_doc_mut(b, id) {
            d.outstanding -= *amount;
        }
    }
    let t = SimTransaction {
        id: b.id("rf"),
        contact_id,
        reference: s(p, "reference"),
        date,
        total,
        artefacts,
        on_account: Decimal::ZERO,
        request: p.clone(),
    };
    b.refunds.push(t.clone());
    SimResponse::json(201, transaction_json(&t, "CUSTOMER_REFUND"))
}

fn create_allocation(b: &mut SimBusiness, body: &Value) -> SimResponse {
    let Some(a) = body.get("contact_allocation") else {
        return SimResponse::invalid("contact_allocation", "is missing");
    };
    let contact_id = s(a, "contact_id").unwrap_or_default();
    if s(a, "transaction_type_id").as_deref() != Some("CUSTOMER_ALLOCATION") {
        return SimResponse::invalid("contact_allocation.transaction_type_id", "must be CUSTOMER_ALLOCATION");
    }
    let Some(artefacts) = amounts(a, "allocated_artefacts").filter(|v| v.len() >= 2) else {
        return SimResponse::invalid("contact_allocation.allocated_artefacts", "can't be blank");
    };
    if artefacts.iter().map(|(_, x)| *x).sum::<Decimal>() != Decimal::ZERO {
        return SimResponse::invalid("contact_allocation.allocated_artefacts", "must net to zero");
    }
    for (id, amount) in &artefacts {
        let is_invoice = b.invoices.iter().any(|d| d.id == *id);
        let (contact, voided, outstanding) = match b.invoices.iter().chain(&b.credit_notes).find(|d| d.id == *id) {
            Some(d) => (d.contact_id.clone(), d.voided, d.outstanding),
            None => match b.payments.iter().find(|t| t.id == *id) {
                // A payment on account, settled like a credit.
                Some(t) => (t.contact_id.clone(), false, t.on_account),
                None => {
                    return SimResponse::invalid("contact_allocation.allocated_artefacts", "Couldn't find artefact");
                }
            },
        };
        if contact != contact_id {
            return SimResponse::invalid(
                "contact_allocation.allocated_artefacts",
                "must all belong to the same contact",
            );
        }
        let magnitude = if is_invoice { *amount } else { -*amount };
        if voided || magnitude <= Decimal::ZERO || magnitude > outstanding {
            return SimResponse::errors(422, "RecordInvalid", "", "You can only pay unpaid or part-paid invoices.");
        }
    }
    for (id, amount) in &artefacts {
        if let Some(d) = find_doc_mut(b, id) {
            d.outstanding -= amount.abs();
        } else if let Some(t) = b.payments.iter_mut().find(|t| t.id == *id) {
            t.on_account -= amount.abs();
        }
    }
    let date = s(a, "date").and_then(|t| NaiveDate::parse_from_str(&t, "%Y-%m-%d").ok()).unwrap_or_default();
    let t = SimTransaction {
        id: b.id("al"),
        contact_id,
        reference: None,
        date,
        total: Decimal::ZERO,
        artefacts,
        on_account: Decimal::ZERO,
        request: a.clone(),
    };
    b.allocations.push(t.clone());
    SimResponse::json(201, transaction_json(&t, "CUSTOMER_ALLOCATION"))
}

/// `from_date` / `to_date` (inclusive) as Sage's lists take them; an unreadable one filters
/// nothing.
fn in_dates(req: &SimRequest, date: NaiveDate) -> bool {
    let bound = |k| req.q(k).and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    bound("from_date").is_none_or(|f| date >= f) && bound("to_date").is_none_or(|t| date <= t)
}

fn transactions<'a>(list: &'a [SimTransaction], req: &SimRequest) -> Vec<&'a SimTransaction> {
    let contact = req.q("contact_id");
    let from = req.q("from_date").and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    let to = req.q("to_date").and_then(|d| NaiveDate::parse_from_str(d, "%Y-%m-%d").ok());
    list.iter()
        .filter(|t| contact.is_none_or(|c| c == t.contact_id))
        .filter(|t| from.is_none_or(|f| t.date >= f) && to.is_none_or(|x| t.date <= x))
        .collect()
}

fn transaction_json(t: &SimTransaction, kind: &str) -> Value {
    json!({"payment_on_account": (kind == "CUSTOMER_RECEIPT" && !t.on_account.is_zero())
            .then(|| json!({"id": t.id, "outstanding_amount": money(t.on_account)})),
        "id": t.id, "displayed_as": t.reference.clone().unwrap_or_else(|| t.id.clone()),
        "transaction_type": {"id": kind}, "contact": {"id": t.contact_id}, "reference": t.reference,
        "date": t.date.format("%Y-%m-%d").to_string(), "total_amount": money(t.total),
        "allocated_artefacts": t.artefacts.iter().map(|(id, a)| json!({"artefact": {"id": id}, "amount": money(*a)})).collect::<Vec<_>>()})
}

fn create_item(b: &mut SimBusiness, body: &Value, kind: &'static str, namespace: &str) -> SimResponse {
    let Some(i) = body.get(namespace) else { return SimResponse::invalid(namespace, "is missing") };
    let description = s(i, "description").unwrap_or_default();
    if description.trim().is_empty() {
        return SimResponse::invalid(&format!("{namespace}.description"), "can't be blank");
    }
    let sales = s(i, "sales_ledger_account_id").unwrap_or_default();
    if !b.reference.ledger_account(&sales).is_some_and(|a| a.visible_in_sales) {
        return SimResponse::invalid(&format!("{namespace}.sales_ledger_account_id"), "Couldn't find ledger account");
    }
    // Sage validates the purchase ledger account even for sales-only products (Q18 / B1).
    if kind != "services" && s(i, "purchase_ledger_account_id").is_none() {
        return SimResponse::invalid(&format!("{namespace}.purchase_ledger_account_id"), "can't be blank");
    }
    let code = s(i, "item_code").unwrap_or_default();
    let max = if kind == "stock_items" { 30 } else { 255 };
    if code.chars().count() > max {
        return SimResponse::invalid(
            &format!("{namespace}.item_code"),
            &format!("is too long (maximum is {max} characters)"),
        );
    }
    if b.items.iter().any(|x| x.kind == kind && x.code == code) {
        return SimResponse::invalid(&format!("{namespace}.item_code"), "has already been taken");
    }
    let id = b.id("it");
    let mut json = i.clone();
    json["id"] = json!(id);
    let item = SimItem { id, kind, code, description, quantity: Decimal::ZERO, json };
    b.items.push(item.clone());
    SimResponse::json(201, item_json(&item))
}

fn update_item(b: &mut SimBusiness, kind: &str, id: &str, body: &Value) -> SimResponse {
    let ns = match kind {
        "products" => "product",
        "services" => "service",
        _ => "stock_item",
    };
    let Some(i) = body.get(ns) else { return SimResponse::invalid(ns, "is missing") };
    let Some(item) = b.items.iter_mut().find(|x| x.id == id) else { return SimResponse::not_found("item") };
    if let Some(d) = s(i, "description") {
        item.description = d;
    }
    if let Some(obj) = i.as_object() {
        for (k, v) in obj {
            if k != "quantity_in_stock" {
                item.json[k] = v.clone();
            }
        }
    }
    json_ok(item_json(item))
}

fn item_json(i: &SimItem) -> Value {
    let mut v = i.json.clone();
    v["id"] = json!(i.id);
    v["item_code"] = json!(i.code);
    v["description"] = json!(i.description);
    v["displayed_as"] = json!(i.description);
    if i.kind == "stock_items" {
        v["quantity_in_stock"] = Value::String(i.quantity.normalize().to_string());
    }
    if v.get("active").is_none() {
        v["active"] = json!(true);
    }
    v
}

fn create_movement(b: &mut SimBusiness, body: &Value) -> SimResponse {
    let Some(m) = body.get("stock_movement") else { return SimResponse::invalid("stock_movement", "is missing") };
    let item_id = s(m, "stock_item_id").unwrap_or_default();
    let details = s(m, "details").unwrap_or_default();
    if details.trim().is_empty() {
        return SimResponse::invalid("stock_movement.details", "can't be blank");
    }
    if details.chars().count() > 50 {
        return SimResponse::invalid("stock_movement.details", "is too long (maximum is 50 characters)");
    }
    if m.get("cost_price").and_then(dec).is_none() {
        return SimResponse::invalid("stock_movement.cost_price", "can't be blank");
    }
    let Some(quantity) = m.get("quantity").and_then(dec) else {
        return SimResponse::invalid("stock_movement.quantity", "can't be blank");
    };
    let Some(item) = b.items.iter_mut().find(|x| x.id == item_id && x.kind == "stock_items") else {
        return SimResponse::invalid("stock_movement.stock_item_id", "Couldn't find stock item");
    };
    item.quantity += quantity;
    let id = b.id("mv");
    b.movements.push(SimMovement {
        id: id.clone(),
        stock_item_id: item_id.clone(),
        quantity,
        details: details.clone(),
    });
    SimResponse::json(
        201,
        json!({"id": id, "displayed_as": details, "details": details, "quantity": quantity.to_string(), "stock_item": {"id": item_id}}),
    )
}
