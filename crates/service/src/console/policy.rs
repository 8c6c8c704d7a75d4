//! `GET /console/policy?tenant=…`: every setting of a tenant's sync policy (contract.md 4) as a
//! form, the ids chosen from dropdowns filled from the business's cached reference data (tax
//! rates, ledger accounts, bank accounts, payment methods; a text field where nothing is cached
//! yet), checked on the server by the policy loader the command line uses
//! ([`SyncPolicy::from_json`], then [`SyncPolicy::validate_against`] the reference data), its
//! field errors shown next to the fields (422). Each change is kept as a version with who and
//! when ([`ConsoleStore::add_policy_version`](super::ConsoleStore::add_policy_version)); any
//! previous version can be restored (as a new version, so nothing is lost).
//!
//! The policy applies to events that arrive from then on (each run keeps the policy it arrived
//! with, byte8-spec.md 1.4); this process's workers drop their cached engine of the tenant.
//!
//! [`FIELDS`] lists every key: a test checks it against the keys of [`SyncPolicy`], so a new
//! policy key cannot be left out of the form.

use std::{collections::BTreeMap, sync::Arc};

use axum::{
    Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value};

use super::{
    ConsoleShared,
    layout::{self, Notice, Section},
    session::{Operator, Posted, unavailable},
};
use crate::store::Binding;
use byte8_ledger_core::{
    error::{Error, FieldError},
    policy::SyncPolicy,
    reference::ReferenceData,
};

pub(crate) fn routes() -> Router<Arc<ConsoleShared>> {
    Router::new()
        .route("/console/policy", get(show))
        .route("/console/policy/{tenant}", post(save))
        .route("/console/policy/{tenant}/restore/{version}", post(restore))
}

/// Where a dropdown's options come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// The business's tax rates.
    TaxRates,
    /// Its ledger accounts.
    LedgerAccounts,
    /// Its bank accounts.
    BankAccounts,
    /// Its payment methods.
    PaymentMethods,
}

/// How a policy key is edited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `true`/`false` (a yes/no dropdown).
    Bool,
    /// Optional text (empty: `null`).
    OptText,
    /// Text (required).
    Text,
    /// A decimal amount, as text.
    Decimal,
    /// A list of whole numbers, comma-separated (empty: none).
    Numbers,
    /// One of fixed values.
    Choice(&'static [&'static str]),
    /// An optional id from the reference data.
    Ref(Source),
    /// A map from a Magento code to an id from the reference data (`null` allowed for payment
    /// methods: "do not record the payment").
    RefMap(Source),
    /// A map from a Magento product type to one of fixed values.
    ChoiceMap(&'static [&'static str]),
}

const EU_SUPPLY: &[&str] = &["GOODS", "SERVICES"];

/// Every policy key: its JSON path, its label, how it is edited.
pub(crate) const FIELDS: &[(&str, &str, Kind)] = &[
    ("sync_unpaid_invoices", "Sync unpaid invoices", Kind::Bool),
    ("sync_zero_value_invoices", "Sync zero-value invoices", Kind::Bool),
    ("sync_since", "Sync events since (RFC 3339, empty: all)", Kind::OptText),
    ("website_filter", "Only these website ids (comma-separated, empty: all)", Kind::Numbers),
    ("store_filter", "Only these store ids (comma-separated, empty: all)", Kind::Numbers),
    ("sync_products", "Sync products", Kind::Bool),
    ("sync_stock", "Sync stock levels", Kind::Bool),
    ("default_tax_rate_id", "Default tax rate", Kind::Ref(Source::TaxRates)),
    ("default_ledger_account_id", "Default sales ledger account", Kind::Ref(Source::LedgerAccounts)),
    ("default_bank_account_id", "Default bank account", Kind::Ref(Source::BankAccounts)),
    ("default_purchase_ledger_account_id", "Default purchase ledger account", Kind::Ref(Source::LedgerAccounts)),
    ("payment_method_map", "Magento payment method → ledger payment method", Kind::RefMap(Source::PaymentMethods)),
    ("tax_rate_map", "Magento tax code → ledger tax rate", Kind::RefMap(Source::TaxRates)),
    ("invoice_number_prefix", "Invoice number prefix", Kind::OptText),
    ("customer_name_priority", "Customer name priority", Kind::Choice(&["Company", "Person"])),
    ("default_eu_goods_services_type", "Default EU supply type", Kind::Choice(EU_SUPPLY)),
    ("product_type_eu_goods_map", "Product type → EU supply type", Kind::ChoiceMap(EU_SUPPLY)),
    ("b2c_consolidation.enabled", "Consolidate consumer sales on one contact", Kind::Bool),
    ("b2c_consolidation.fallback_contact_name", "Consolidated contact's name", Kind::Text),
    ("b2c_consolidation.fallback_contact_email", "Consolidated contact's e-mail", Kind::Text),
    ("b2c_consolidation.fallback_contact_reference", "Consolidated contact's reference", Kind::Text),
    ("b2c_consolidation.min_total_for_individual", "Own contact from this total", Kind::Decimal),
    ("b2c_consolidation.always_individual_for_b2b", "Business customers always get their own contact", Kind::Bool),
    ("foreign_vat_ledger_account_id", "Foreign VAT ledger account", Kind::Ref(Source::LedgerAccounts)),
    ("refund_paid_credit_memos", "Record refunds of paid credit memos", Kind::Bool),
    ("adjustment_tax_treatment", "Tax on adjustments", Kind::Choice(&["no_tax", "pro_rata"])),
    ("gift_card_ledger_account_id", "Gift card ledger account", Kind::Ref(Source::LedgerAccounts)),
    ("store_credit_ledger_account_id", "Store credit ledger account", Kind::Ref(Source::LedgerAccounts)),
    ("reward_points_ledger_account_id", "Reward points ledger account", Kind::Ref(Source::LedgerAccounts)),
    ("tax_calculated_before_discount", "Tax calculated before discount", Kind::Bool),
    ("oss_registration", "OSS / IOSS registration", Kind::Choice(&["none", "oss", "ioss", "oss_and_ioss"])),
    ("company_name_without_vat_number_is_b2b", "A company name without VAT number is a business", Kind::Bool),
    ("store_timezone", "Store time zone (IANA, empty: the business country's)", Kind::OptText),
];

/// How many empty rows a map gets for new entries.
const NEW_ROWS: usize = 2;

/// The HTML id of a field path.
fn id_of(path: &str) -> String {
    path.replace('.', "__")
}

fn options(reference: Option<&ReferenceData>, source: Source) -> Option<Vec<(String, String)>> {
    let r = reference?;
    Some(match source {
        Source::TaxRates => r
            .tax_rates
            .iter()
            .map(|t| {
                (t.id.clone(), format!("{}{}", t.name, t.percentage.map(|p| format!(" ({p} %)")).unwrap_or_default()))
            })
            .collect(),
        Source::LedgerAccounts => {
            r.ledger_accounts.iter().map(|a| (a.id.clone(), account_label(a.code.as_deref(), &a.name))).collect()
        }
        Source::BankAccounts => r.bank_accounts.iter().map(|b| (b.id.clone(), b.name.clone())).collect(),
        Source::PaymentMethods => r.payment_methods.iter().map(|m| (m.id.clone(), m.name.clone())).collect(),
    })
}

/// The value at dotted `path` of `json`.
fn at<'a>(json: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(json, |v, k| v.get(k))
}

fn text_of(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => items.iter().map(|i| text_of(Some(i))).collect::<Vec<_>>().join(", "),
        Some(other) => other.to_string().trim_matches('"').to_owned(),
    }
}

/// A `<select>` of `choices` (value, label) with `current` chosen; an unknown current value is
/// kept as an option marked so, so that saving does not silently change it.
fn select(
    id: &str,
    name: &str,
    current: &str,
    blank: Option<&str>,
    choices: &[(String, String)],
    described: bool,
) -> Markup {
    let known = current.is_empty() || choices.iter().any(|(v, _)| v == current);
    html! {
        select id=(id) name=(name) aria-describedby=[described.then(|| format!("{id}-error"))] {
            @if let Some(b) = blank { option value="" selected[current.is_empty()] { (b) } }
            @if !known { option value=(current) selected { (current) " (not in the reference data)" } }
            @for (v, label) in choices { option value=(v) selected[v == current] { (label) } }
        }
    }
}

/// The form's values: the stored policy's JSON, or what was posted (with its errors).
struct Shown<'a> {
    json: Value,
    posted: Option<&'a [(String, String)]>,
    errors: &'a [FieldError],
}

impl Shown<'_> {
    /// The error of `path` (and of anything below it: a map's entries).
    fn error(&self, path: &str) -> Option<String> {
        let msgs: Vec<String> = self
            .errors
            .iter()
            .filter(|e| {
                e.path == path || e.path.starts_with(&format!("{path}.")) || e.path.starts_with(&format!("{path}["))
            })
            .map(|e| if e.path == path { e.rule.clone() } else { format!("{}: {}", e.path, e.rule) })
            .collect();
        (!msgs.is_empty()).then(|| msgs.join("; "))
    }

    fn posted(&self, name: &str) -> Option<&str> {
        self.posted?.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    fn value(&self, path: &str) -> String {
        self.posted(path).map_or_else(|| text_of(at(&self.json, path)), str::to_owned)
    }

    /// A map's rows (key, value text).
    fn rows(&self, path: &str) -> Vec<(String, String)> {
        if let Some(posted) = self.posted {
            let mut rows = Vec::new();
            for i in 0.. {
                let (Some(k), v) = (
                    posted.iter().find(|(n, _)| n == &format!("{path}.key.{i}")).map(|(_, v)| v.clone()),
                    posted.iter().find(|(n, _)| n == &format!("{path}.value.{i}")).map(|(_, v)| v.clone()),
                ) else {
                    break;
                };
                if !k.trim().is_empty() {
                    rows.push((k, v.unwrap_or_default()));
                }
            }
            return rows;
        }
        at(&self.json, path)
            .and_then(Value::as_object)
            .map(|m| m.iter().map(|(k, v)| (k.clone(), text_of(Some(v)))).collect())
            .unwrap_or_default()
    }
}

/// A ledger account's option text: its code, then its name — once, as Sage's display name often
/// starts with the code already (`2206 VAT on destination sales`).
fn account_label(code: Option<&str>, name: &str) -> String {
    match code {
        Some(c) if !c.is_empty() && !name.starts_with(&format!("{c} ")) && name != c => format!("{c} {name}"),
        _ => name.to_owned(),
    }
}

fn field(shown: &Shown<'_>, reference: Option<&ReferenceData>, path: &str, label: &str, kind: Kind) -> Markup {
    let id = id_of(path);
    let error = shown.error(path);
    let described = error.is_some();
    let current = shown.value(path);
    let input = match kind {
        Kind::Bool => {
            let choices = [("true".to_owned(), "Yes".to_owned()), ("false".to_owned(), "No".to_owned())];
            select(&id, path, &current, None, &choices, described)
        }
        Kind::Choice(values) => {
            let choices: Vec<(String, String)> = values.iter().map(|v| ((*v).to_owned(), (*v).to_owned())).collect();
            select(&id, path, &current, None, &choices, described)
        }
        Kind::Ref(source) => match options(reference, source) {
            Some(choices) => select(&id, path, &current, Some("(none)"), &choices, described),
            None => html! { input type="text" id=(id) name=(path) value=(current); },
        },
        Kind::OptText | Kind::Text | Kind::Decimal | Kind::Numbers => {
            html! { input type="text" id=(id) name=(path) value=(current) aria-describedby=[described.then(|| format!("{id}-error"))]; }
        }
        Kind::RefMap(source) => {
            let choices = options(reference, source);
            map_rows(shown, path, &id, |name, row_id, current| match &choices {
                Some(c) => select(
                    row_id,
                    name,
                    current,
                    Some(if source == Source::PaymentMethods { "(do not record)" } else { "(none)" }),
                    c,
                    false,
                ),
                None => html! { input type="text" id=(row_id) name=(name) value=(current); },
            })
        }
        Kind::ChoiceMap(values) => {
            let choices: Vec<(String, String)> = values.iter().map(|v| ((*v).to_owned(), (*v).to_owned())).collect();
            map_rows(shown, path, &id, |name, row_id, current| select(row_id, name, current, None, &choices, false))
        }
    };
    layout::field(&id, label, None, error.as_deref(), input)
}

fn map_rows(shown: &Shown<'_>, path: &str, id: &str, value_input: impl Fn(&str, &str, &str) -> Markup) -> Markup {
    let rows = shown.rows(path);
    let total = rows.len() + NEW_ROWS;
    html! {
        div class="table-wrap" id=(id) {
            table {
                thead { tr { th scope="col" { "Magento code" } th scope="col" { "Maps to" } } }
                tbody {
                    @for i in 0..total {
                        @let (k, v) = rows.get(i).cloned().unwrap_or_default();
                        @let key_id = format!("{id}__key__{i}");
                        @let value_id = format!("{id}__value__{i}");
                        tr {
                            td { label class="muted" for=(key_id) { "Code " (i + 1) } input type="text" id=(key_id) name=(format!("{path}.key.{i}")) value=(k); }
                            td { label class="muted" for=(value_id) { "Maps to" } (value_input(&format!("{path}.value.{i}"), &value_id, &v)) }
                        }
                    }
                }
            }
        }
    }
}

/// The policy JSON of a posted form over `current` (a key the form does not carry keeps its
/// value): the keys of [`FIELDS`], typed by their [`Kind`] (a value that does not read as its
/// type is passed on as text, so that the loader's rule names the field).
pub(crate) fn json_of_form(current: &Value, pairs: &[(String, String)]) -> Value {
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.trim().to_owned());
    let mut root = current.as_object().cloned().unwrap_or_default();
    for (path, _, kind) in FIELDS {
        let value = match kind {
            Kind::Bool => match get(path).as_deref() {
                Some("true") => Value::Bool(true),
                Some("false") => Value::Bool(false),
                Some(other) => Value::String(other.to_owned()),
                None => continue,
            },
            Kind::OptText | Kind::Ref(_) => match get(path) {
                Some(s) if !s.is_empty() => Value::String(s),
                Some(_) => Value::Null,
                None => continue,
            },
            Kind::Text | Kind::Decimal | Kind::Choice(_) => match get(path) {
                Some(s) => Value::String(s),
                None => continue,
            },
            Kind::Numbers => match get(path) {
                Some(s) => Value::Array(
                    s.split(',')
                        .map(str::trim)
                        .filter(|t| !t.is_empty())
                        .map(|t| t.parse::<u64>().map_or_else(|_| Value::String(t.to_owned()), Value::from))
                        .collect(),
                ),
                None => continue,
            },
            Kind::RefMap(_) | Kind::ChoiceMap(_) => {
                if get(&format!("{path}.key.0")).is_none() {
                    continue;
                }
                let mut map = Map::new();
                for i in 0.. {
                    let Some(k) = get(&format!("{path}.key.{i}")) else { break };
                    if k.is_empty() {
                        continue;
                    }
                    let v = get(&format!("{path}.value.{i}")).unwrap_or_default();
                    map.insert(k, if v.is_empty() { Value::Null } else { Value::String(v) });
                }
                Value::Object(map)
            }
        };
        // Paths have at most one level of nesting (`b2c_consolidation.enabled`).
        match path.split_once('.') {
            Some((parent, child)) => {
                if let Value::Object(m) = root.entry(parent.to_owned()).or_insert_with(|| Value::Object(Map::new())) {
                    m.insert(child.to_owned(), value);
                }
            }
            None => {
                root.insert((*path).to_owned(), value);
            }
        }
    }
    Value::Object(root)
}

/// Checks a policy as the command line does, then against the reference data when cached.
///
/// # Errors
/// Every field error found.
pub(crate) fn check(json: &Value, reference: Option<&ReferenceData>) -> Result<SyncPolicy, Vec<FieldError>> {
    let errors_of = |e: Error| match e {
        Error::Invalid { errors, .. } | Error::Parse { errors, .. } => errors,
        other => vec![FieldError::new("policy", other.to_string())],
    };
    let policy = SyncPolicy::from_json(&json.to_string()).map_err(errors_of)?;
    if let Some(r) = reference {
        policy.validate_against(r).map_err(errors_of)?;
    }
    Ok(policy)
}

/// The page's query.
#[derive(Debug, Deserialize)]
pub(crate) struct PolicyQuery {
    tenant: Option<String>,
    saved: Option<i64>,
}

async fn tenant_and_reference(
    shared: &ConsoleShared,
    tenant: &str,
) -> byte8_ledger_core::error::Result<Option<(Binding, Option<Arc<ReferenceData>>)>> {
    let Some(binding) = shared.service.store.binding(tenant).await? else { return Ok(None) };
    let reference = shared.service.store.reference(&binding.scope).await?.map(Arc::new);
    Ok(Some((binding, reference)))
}

#[allow(clippy::too_many_arguments)]
async fn render(
    shared: &ConsoleShared,
    operator: &Operator,
    binding: &Binding,
    reference: Option<&ReferenceData>,
    posted: Option<&[(String, String)]>,
    errors: &[FieldError],
    notices: &[Notice],
    status: StatusCode,
) -> Response {
    let versions = match shared.store.policy_versions(&binding.tenant_id).await {
        Ok(v) => v,
        Err(e) => return unavailable(&e),
    };
    let json = serde_json::to_value(&binding.policy).unwrap_or(Value::Null);
    let shown = Shown { json, posted, errors };
    let known: Vec<&str> = FIELDS.iter().map(|f| f.0).collect();
    let other_errors: Vec<&FieldError> = errors
        .iter()
        .filter(|e| {
            !known
                .iter()
                .any(|k| e.path == *k || e.path.starts_with(&format!("{k}.")) || e.path.starts_with(&format!("{k}[")))
        })
        .collect();
    let content = html! {
        p { "Store " strong { (binding.magento_base_url) } " (tenant " (binding.tenant_id) "), business " strong { (binding.scope) } "." }
        @if reference.is_none() {
            div class="banner warn" role="status" { "No reference data is cached for this business yet: ids are typed, not chosen. Connect it, or refresh its reference data under Connections." }
        }
        @for e in &other_errors { div class="banner bad" role="alert" { (e.path) ": " (e.rule) } }
        form class="stack" method="post" action=(format!("/console/policy/{}", binding.tenant_id)) {
            (layout::csrf_field(operator))
            fieldset {
                legend { "What is synced" }
                @for (path, label, kind) in &FIELDS[..7] { (field(&shown, reference, path, label, *kind)) }
            }
            fieldset {
                legend { "Accounts and codes" }
                @for (path, label, kind) in &FIELDS[7..17] { (field(&shown, reference, path, label, *kind)) }
            }
            fieldset {
                legend { "Consumer sales" }
                @for (path, label, kind) in &FIELDS[17..23] { (field(&shown, reference, path, label, *kind)) }
            }
            fieldset {
                legend { "Special cases" }
                @for (path, label, kind) in &FIELDS[23..] { (field(&shown, reference, path, label, *kind)) }
            }
            div class="actions" { button type="submit" id="policy-save" { "Save the policy" } }
        }
        h2 { "History" }
        @if versions.is_empty() {
            p class="muted" { "No change has been made in the console yet." }
        } @else {
            div class="table-wrap" {
                table {
                    thead { tr { th scope="col" { "Version" } th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "" } } }
                    tbody {
                        @for (i, v) in versions.iter().enumerate() {
                            tr {
                                td { (v.version) }
                                td { (v.changed_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) }
                                td { (v.changed_by) }
                                td { (v.note.as_deref().unwrap_or("edited")) }
                                td {
                                    @if i == 0 { span class="muted" { "current" } } @else {
                                        form class="inline" method="post" action=(format!("/console/policy/{}/restore/{}", binding.tenant_id, v.version)) {
                                            (layout::csrf_field(operator))
                                            button type="submit" class="secondary" id=(format!("restore-{}", v.version)) { "Restore" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    (status, layout::page(operator, Section::Policy, "Policy", notices, content)).into_response()
}

async fn show(State(shared): State<Arc<ConsoleShared>>, Query(q): Query<PolicyQuery>, operator: Operator) -> Response {
    let Some(tenant) = q.tenant else {
        let tenants = match shared.service.store.bindings().await {
            Ok(t) => t,
            Err(e) => return unavailable(&e),
        };
        let content = html! {
            @if tenants.is_empty() { p { "No store is paired yet: " a href="/console/stores" { "pair one" } "." } }
            ul {
                @for t in tenants.iter().filter(|t| t.is_active()) {
                    li { a href=(format!("/console/policy?tenant={}", t.tenant_id)) { (t.magento_base_url) " → " (t.scope) } }
                }
            }
        };
        return layout::page(&operator, Section::Policy, "Policy", &[], content).into_response();
    };
    let (binding, reference) = match tenant_and_reference(&shared, &tenant).await {
        Ok(Some(x)) => x,
        Ok(None) => {
            return (
                StatusCode::NOT_FOUND,
                layout::page(
                    &operator,
                    Section::Policy,
                    "Policy",
                    &[Notice::bad(format!("There is no tenant {tenant}."))],
                    html! {},
                ),
            )
                .into_response();
        }
        Err(e) => return unavailable(&e),
    };
    let notices: Vec<Notice> = q
        .saved
        .map(|v| Notice::ok(format!("Policy saved as version {v}: events arriving from now on use it.")))
        .into_iter()
        .collect();
    render(&shared, &operator, &binding, reference.as_deref(), None, &[], &notices, StatusCode::OK).await
}

/// Stores `policy` as `binding`'s and records the version; the version number.
async fn apply(
    shared: &ConsoleShared,
    mut binding: Binding,
    policy: SyncPolicy,
    who: &str,
    note: Option<&str>,
) -> byte8_ledger_core::error::Result<i64> {
    let now = shared.now();
    if shared.store.policy_versions(&binding.tenant_id).await?.is_empty() {
        // The policy before the console's first change, so that it can be restored.
        let before = serde_json::to_string(&binding.policy).map_err(|e| Error::internal(e.to_string()))?;
        shared
            .store
            .add_policy_version(
                &binding.tenant_id,
                &before,
                "(before the console)",
                binding.updated_at,
                Some("as it was"),
            )
            .await?;
    }
    let text = serde_json::to_string(&policy).map_err(|e| Error::internal(e.to_string()))?;
    binding.policy = policy;
    binding.updated_at = crate::store::at_store_precision(now);
    shared.service.store.put_binding(&binding).await?;
    let version = shared.store.add_policy_version(&binding.tenant_id, &text, who, now, note).await?;
    shared.forget_runtimes(&binding.scope).await;
    Ok(version)
}

async fn save(
    State(shared): State<Arc<ConsoleShared>>,
    Path(tenant): Path<String>,
    posted: Posted<Vec<(String, String)>>,
) -> Response {
    let Posted { operator, form } = posted;
    let (binding, reference) = match tenant_and_reference(&shared, &tenant).await {
        Ok(Some(x)) => x,
        Ok(None) => return Redirect::to("/console/policy").into_response(),
        Err(e) => return unavailable(&e),
    };
    let current = serde_json::to_value(&binding.policy).unwrap_or(Value::Null);
    let json = json_of_form(&current, &form);
    match check(&json, reference.as_deref()) {
        Ok(policy) => match apply(&shared, binding, policy, operator.name(), None).await {
            Ok(v) => {
                tracing::info!(operator = %operator.name(), tenant = %tenant, version = v, "console: policy changed");
                Redirect::to(&format!("/console/policy?tenant={tenant}&saved={v}")).into_response()
            }
            Err(e) => unavailable(&e),
        },
        Err(errors) => {
            let notices = [Notice::bad(format!("The policy was not saved: {} field error(s) below.", errors.len()))];
            render(
                &shared,
                &operator,
                &binding,
                reference.as_deref(),
                Some(&form),
                &errors,
                &notices,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

async fn restore(
    State(shared): State<Arc<ConsoleShared>>,
    Path((tenant, version)): Path<(String, i64)>,
    posted: Posted<Vec<(String, String)>>,
) -> Response {
    let operator = posted.operator;
    let (binding, reference) = match tenant_and_reference(&shared, &tenant).await {
        Ok(Some(x)) => x,
        Ok(None) => return Redirect::to("/console/policy").into_response(),
        Err(e) => return unavailable(&e),
    };
    let versions = match shared.store.policy_versions(&tenant).await {
        Ok(v) => v,
        Err(e) => return unavailable(&e),
    };
    let Some(old) = versions.iter().find(|v| v.version == version) else {
        let notices = [Notice::bad(format!("There is no version {version} of this policy."))];
        return render(&shared, &operator, &binding, reference.as_deref(), None, &[], &notices, StatusCode::NOT_FOUND)
            .await;
    };
    let json: Value = serde_json::from_str(&old.policy).unwrap_or(Value::Null);
    // The reference data may have changed since: the old version is checked again.
    match check(&json, reference.as_deref()) {
        Ok(policy) => {
            match apply(&shared, binding, policy, operator.name(), Some(&format!("restored version {version}"))).await {
                Ok(v) => Redirect::to(&format!("/console/policy?tenant={tenant}&saved={v}")).into_response(),
                Err(e) => unavailable(&e),
            }
        }
        Err(errors) => {
            let notices = [Notice::bad(format!(
                "Version {version} no longer checks against the business's reference data: fix it below."
            ))];
            let pairs = flatten(&json);
            render(
                &shared,
                &operator,
                &binding,
                reference.as_deref(),
                Some(&pairs),
                &errors,
                &notices,
                StatusCode::UNPROCESSABLE_ENTITY,
            )
            .await
        }
    }
}

/// A policy JSON as the form's pairs (to show a version that does not check).
fn flatten(json: &Value) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    for (path, _, kind) in FIELDS {
        let v = at(json, path);
        match kind {
            Kind::RefMap(_) | Kind::ChoiceMap(_) => {
                let map: BTreeMap<String, String> = v
                    .and_then(Value::as_object)
                    .map(|m| m.iter().map(|(k, v)| (k.clone(), text_of(Some(v)))).collect())
                    .unwrap_or_default();
                for (i, (k, val)) in map.into_iter().enumerate() {
                    pairs.push((format!("{path}.key.{i}"), k));
                    pairs.push((format!("{path}.value.{i}"), val));
                }
            }
            _ => pairs.push(((*path).to_owned(), text_of(v))),
        }
    }
    pairs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_account_code_is_shown_once() {
        assert_eq!(account_label(Some("2206"), "2206 VAT on destination sales"), "2206 VAT on destination sales");
        assert_eq!(account_label(Some("4000"), "Sales Type A"), "4000 Sales Type A");
        assert_eq!(account_label(Some("22"), "2206 VAT"), "22 2206 VAT", "a prefix of another code is not the code");
        assert_eq!(account_label(None, "Sales"), "Sales");
        assert_eq!(account_label(Some("4000"), "4000"), "4000");
    }

    /// Every key of the policy (nested ones dotted), from its serialisation.
    fn keys(prefix: &str, v: &Value, out: &mut Vec<String>) {
        if let Value::Object(m) = v {
            for (k, child) in m {
                let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                // Maps are edited as a whole; the b2c block field by field.
                if k == "b2c_consolidation" {
                    keys(&path, child, out);
                } else {
                    out.push(path);
                }
            }
        }
    }

    #[test]
    fn the_form_has_every_policy_key_and_nothing_else() {
        let mut all = Vec::new();
        keys("", &serde_json::to_value(SyncPolicy::default()).unwrap(), &mut all);
        all.sort();
        let mut form: Vec<String> = FIELDS.iter().map(|f| f.0.to_owned()).collect();
        form.sort();
        assert_eq!(form, all);
    }

    #[test]
    fn the_default_policy_goes_through_the_form_unchanged() {
        let mut p = SyncPolicy::default();
        p.payment_method_map.insert("checkmo".into(), None);
        p.payment_method_map.insert("stripe".into(), Some("pm-card".into()));
        p.website_filter = vec![1, 3];
        let pairs = flatten(&serde_json::to_value(&p).unwrap());
        assert_eq!(check(&json_of_form(&Value::Null, &pairs), None).unwrap(), p);
        // A form carrying one key changes that key only.
        let one = [("refund_paid_credit_memos".to_owned(), (!p.refund_paid_credit_memos).to_string())];
        let changed = check(&json_of_form(&serde_json::to_value(&p).unwrap(), &one), None).unwrap();
        assert_ne!(changed.refund_paid_credit_memos, p.refund_paid_credit_memos);
        assert_eq!(SyncPolicy { refund_paid_credit_memos: p.refund_paid_credit_memos, ..changed }, p);
    }

    #[test]
    fn a_bad_value_is_reported_on_its_field_as_the_cli_reports_it() {
        let mut pairs = flatten(&serde_json::to_value(SyncPolicy::default()).unwrap());
        for (k, v) in &mut pairs {
            if k == "oss_registration" {
                *v = "sometimes".into();
            }
        }
        let errors = check(&json_of_form(&Value::Null, &pairs), None).unwrap_err();
        let cli = SyncPolicy::from_json(&json_of_form(&Value::Null, &pairs).to_string()).unwrap_err().to_string();
        assert!(errors.iter().any(|e| e.path == "oss_registration" && e.rule.contains("OUT_OF_RANGE")), "{errors:?}");
        for e in &errors {
            assert!(cli.contains(&e.rule), "the CLI says the same: {cli}");
        }
        let mut pairs = flatten(&serde_json::to_value(SyncPolicy::default()).unwrap());
        for (k, v) in &mut pairs {
            if k == "website_filter" {
                *v = "1, x".into();
            }
        }
        let errors = check(&json_of_form(&Value::Null, &pairs), None).unwrap_err();
        assert!(errors.iter().any(|e| e.path.starts_with("website_filter")), "{errors:?}");
    }
}
