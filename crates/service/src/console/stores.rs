//! `GET /console/stores`: the paired Magento stores (tenants), with their status; pair one (the
//! same steps as `byte8-ledger tenant pair`: [`pair_store`]) and disconnect one.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::{Markup, html};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    ConsoleShared,
    layout::{self, Notice, Section, Tone},
    session::{Operator, Posted, unavailable},
};
use crate::magento::{ApiKey, PairRequest, http_client};
use crate::store::{Binding, BindingInfo, BindingStatus, ServiceStore};
use byte8_ledger_core::{
    clock::Clock,
    error::{Error, FieldError, Result},
    http::{Backoff, RetryConfig},
    policy::SyncPolicy,
};

pub(crate) fn routes() -> Router<Arc<ConsoleShared>> {
    Router::new()
        .route("/console/stores", get(show).post(pair))
        .route("/console/stores/{tenant}/disconnect", post(disconnect))
}

/// What [`pair_store`] needs.
pub struct PairStore<'a> {
    /// The store's base URL, as in its admin.
    pub magento_base_url: &'a str,
    /// The code the merchant generated in the Magento admin.
    pub pairing_code: &'a SecretString,
    /// The ledger business the store's events post to.
    pub business_id: &'a str,
    /// The policy snapshotted into each event.
    pub policy: SyncPolicy,
    /// This service's public base URL, where Magento sends its webhooks.
    pub ledger_base_url: &'a str,
    /// Pair an existing tenant again (a new key); a new tenant id otherwise.
    pub tenant_id: Option<String>,
}

impl std::fmt::Debug for PairStore<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairStore")
            .field("magento_base_url", &self.magento_base_url)
            .field("business_id", &self.business_id)
            .field("tenant_id", &self.tenant_id)
            .finish_non_exhaustive()
    }
}

/// Pairs a Magento store (byte8-spec.md 12.1), as `byte8-ledger tenant pair` and the console's
/// Stores page do: a fresh 256-bit key, the request checked before the code is spent, no second
/// active store on one business, `POST /rest/V1/byte8/setup/pair`, then the binding stored
/// (retried for about half a minute: Magento already signs with the new key). Returns the
/// stored binding.
///
/// # Errors
/// [`Error::Invalid`] naming the field (`magento_base_url`, `pairing_code`, `ledger_base_url`,
/// `scope` when the business has another active store); Magento's refusal; store failures.
pub async fn pair_store(store: &dyn ServiceStore, request: PairStore<'_>, clock: &dyn Clock) -> Result<Binding> {
    let tenant_id = request.tenant_id.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let api_key = ApiKey::generate()?;
    let mut binding = Binding::new(
        &tenant_id,
        request.business_id,
        request.magento_base_url,
        api_key.clone(),
        request.policy,
        clock.now(),
    )?;
    let pair = PairRequest::new(
        request.magento_base_url,
        request.pairing_code.expose_secret(),
        &tenant_id,
        api_key,
        request.ledger_base_url,
    )?;
    binding.ledger_base_url = Some(pair.ledger_base_url().to_owned());
    if let Some(other) = store
        .bindings()
        .await?
        .into_iter()
        .find(|b| b.scope == binding.scope && b.is_active() && b.tenant_id != binding.tenant_id)
    {
        return Err(Error::Invalid {
            what: "tenant binding",
            errors: vec![FieldError::new(
                "business_id",
                format!(
                    "business {} is already bound to tenant {} ({}): disconnect it first",
                    binding.scope, other.tenant_id, other.magento_base_url
                ),
            )],
        });
    }
    pair.send(&http_client()?, clock).await?;
    let retry = RetryConfig {
        max_retries: 7,
        initial_backoff: std::time::Duration::from_millis(250),
        max_backoff: std::time::Duration::from_secs(8),
        retry_timeout: std::time::Duration::from_secs(30),
    };
    let mut retries = 0;
    loop {
        match store.put_binding(&binding).await {
            Ok(()) => return Ok(binding),
            Err(e) if e.is_retryable() && retries < retry.max_retries => {
                tracing::warn!(attempt = retries + 1, error = %e, "storing the binding failed; trying again");
                tokio::time::sleep(Backoff::delay(&retry, retries, 1.0)).await;
                retries += 1;
            }
            Err(e) => {
                return Err(Error::database(
                    format!(
                        "Magento accepted the key but the binding could not be stored ({e}): generate a new code in the \
                         Magento admin and pair again"
                    ),
                    false,
                    None,
                ));
            }
        }
    }
}

/// The pairing form.
#[derive(Deserialize)]
pub(crate) struct PairForm {
    #[serde(default)]
    magento_base_url: String,
    #[serde(default)]
    pairing_code: String,
    #[serde(default)]
    business_id: String,
    #[serde(default)]
    ledger_base_url: String,
    #[serde(default)]
    policy: String,
}

/// A result carried to the page after a POST.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Done {
    paired: Option<String>,
    disconnected: Option<String>,
}

/// The form's values and errors, to show again.
#[derive(Default)]
struct FormState {
    magento_base_url: String,
    business_id: String,
    ledger_base_url: String,
    policy: String,
    errors: Vec<FieldError>,
}

impl FormState {
    fn error(&self, field: &str) -> Option<String> {
        let msgs: Vec<&str> = self.errors.iter().filter(|e| e.path == field).map(|e| e.rule.as_str()).collect();
        (!msgs.is_empty()).then(|| msgs.join("; "))
    }
}

fn status_pill(b: &BindingInfo) -> Markup {
    let magento = b.magento_status.to_string();
    html! {
        @if b.is_active() { (layout::pill(Tone::Ok, "active")) } @else { (layout::pill(Tone::Bad, "disconnected")) }
        " "
        @if magento == "active" { (layout::pill(Tone::Ok, "Magento reachable")) } @else { (layout::pill(Tone::Warn, &format!("Magento: {magento}"))) }
    }
}

async fn render(
    shared: &ConsoleShared,
    operator: &Operator,
    form: &FormState,
    notices: &[Notice],
    status: StatusCode,
) -> Response {
    let store = &shared.service.store;
    let (tenants, connections) = match (store.bindings().await, store.connections().await) {
        (Ok(t), Ok(c)) => (t, c),
        (Err(e), _) | (_, Err(e)) => return unavailable(&e),
    };
    let ledger_default = if form.ledger_base_url.is_empty() {
        shared.config.public_url.as_str().trim_end_matches('/').to_owned()
    } else {
        form.ledger_base_url.clone()
    };
    let content = html! {
        @if tenants.is_empty() {
            p { "No Magento store is paired yet." }
        } @else {
            div class="table-wrap" {
                table {
                    caption class="muted" { "Stores (" (tenants.len()) ")" }
                    thead { tr {
                        th scope="col" { "Store" } th scope="col" { "Business" } th scope="col" { "Status" }
                        th scope="col" { "Paired" } th scope="col" { "Actions" }
                    } }
                    tbody {
                        @for t in &tenants {
                            tr id=(format!("tenant-{}", t.tenant_id)) {
                                th scope="row" { (t.magento_base_url) div class="muted" { "tenant " (t.tenant_id) } }
                                td { (t.scope) }
                                td { (status_pill(t)) }
                                td { (t.paired_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)) }
                                td {
                                    @if t.is_active() {
                                        form class="inline" method="post" action=(format!("/console/stores/{}/disconnect", t.tenant_id)) {
                                            (layout::csrf_field(operator))
                                            button type="submit" class="danger" { "Disconnect" }
                                        }
                                        " "
                                        a href=(format!("/console/policy?tenant={}", t.tenant_id)) { "Policy" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 id="pair" { "Pair a store" }
        p class="muted" { "In the Magento admin (Byte8 module), generate a pairing code; it is valid 30 minutes and once." }
        form class="stack card" method="post" action="/console/stores" {
            (layout::csrf_field(operator))
            (layout::field("magento_base_url", "Store base URL", Some("As in its admin, e.g. https://shop.example.com"), form.error("magento_base_url").as_deref(), html! {
                input type="url" id="magento_base_url" name="magento_base_url" value=(form.magento_base_url) required;
            }))
            (layout::field("pairing_code", "Pairing code", None, form.error("pairing_code").as_deref(), html! {
                input type="password" id="pairing_code" name="pairing_code" autocomplete="off" required;
            }))
            (layout::field("business_id", "Ledger business", Some("The business its events post to (connected ones are listed; another id waits for its connection)."), form.error("business_id").or_else(|| form.error("scope")).as_deref(), html! {
                input type="text" id="business_id" name="business_id" value=(form.business_id) list="businesses" required;
                datalist id="businesses" { @for c in &connections { option value=(c.scope) {} } }
            }))
            (layout::field("policy", "Sync policy (JSON, optional)", Some("The policy file of `tenant pair --policy` (contract.md 4); empty: the defaults. Every setting can be changed later on the Policy page."), form.error("policy").as_deref(), html! {
                textarea id="policy" name="policy" rows="6" spellcheck="false" { (form.policy) }
            }))
            (layout::field("ledger_base_url", "This service's public URL", Some("Where Magento sends its webhooks."), form.error("ledger_base_url").as_deref(), html! {
                input type="url" id="ledger_base_url" name="ledger_base_url" value=(ledger_default) required;
            }))
            @let other: Vec<&FieldError> = form.errors.iter().filter(|e| !["magento_base_url", "pairing_code", "business_id", "scope", "ledger_base_url", "policy"].contains(&e.path.as_str())).collect();
            @for e in other { div class="banner bad" role="alert" { (e.path) ": " (e.rule) } }
            div class="actions" { button type="submit" id="pair-submit" { "Pair the store" } }
        }
    };
    (status, layout::page(operator, Section::Stores, "Stores", notices, content)).into_response()
}

async fn show(State(shared): State<Arc<ConsoleShared>>, Query(done): Query<Done>, operator: Operator) -> Response {
    let mut notices = Vec::new();
    if let Some(t) = done.paired {
        notices.push(Notice::ok(format!("Store paired as tenant {t}: Magento sends its webhooks here now; its events wait until the business is connected.")));
    }
    if let Some(t) = done.disconnected {
        notices.push(Notice::ok(format!("Tenant {t} disconnected: its webhooks are refused and nothing more is dispatched; runs are kept until the retention purge.")));
    }
    render(&shared, &operator, &FormState::default(), &notices, StatusCode::OK).await
}

fn field_errors(e: &Error) -> Vec<FieldError> {
    match e {
        Error::Invalid { errors, .. } | Error::Parse { errors, .. } => errors.clone(),
        other => vec![FieldError::new("pairing", other.to_string())],
    }
}

async fn pair(State(shared): State<Arc<ConsoleShared>>, posted: Posted<PairForm>) -> Response {
    let Posted { operator, form } = posted;
    let code = SecretString::from(form.pairing_code);
    // The policy as `tenant pair --policy` reads it: its field errors named under `policy`.
    let policy = if form.policy.trim().is_empty() {
        Ok(SyncPolicy::default())
    } else {
        SyncPolicy::from_json(&form.policy).map_err(|e| {
            field_errors(&e)
                .into_iter()
                .map(|fe| FieldError::new("policy", format!("{}: {}", fe.path, fe.rule)))
                .collect::<Vec<_>>()
        })
    };
    let policy = match policy {
        Ok(p) => p,
        Err(errors) => {
            let state = FormState {
                magento_base_url: form.magento_base_url,
                business_id: form.business_id,
                ledger_base_url: form.ledger_base_url,
                policy: form.policy,
                errors,
            };
            let notices = [Notice::bad("The store was not paired: see the fields below.")];
            return render(&shared, &operator, &state, &notices, StatusCode::UNPROCESSABLE_ENTITY).await;
        }
    };
    let request = PairStore {
        magento_base_url: &form.magento_base_url,
        pairing_code: &code,
        business_id: &form.business_id,
        policy,
        ledger_base_url: &form.ledger_base_url,
        tenant_id: None,
    };
    match pair_store(shared.service.store.as_ref(), request, shared.service.clock.as_ref()).await {
        Ok(binding) => {
            tracing::info!(operator = %operator.name(), tenant = %binding.tenant_id, business = %binding.scope, "console: store paired");
            if let Err(e) = shared
                .store
                .add_policy_version(
                    &binding.tenant_id,
                    &serde_json::to_string(&binding.policy).unwrap_or_default(),
                    operator.name(),
                    shared.now(),
                    Some("as paired"),
                )
                .await
            {
                tracing::warn!(error = %e, "console: cannot record the paired policy");
            }
            Redirect::to(&format!("/console/stores?paired={}", binding.tenant_id)).into_response()
        }
        Err(e) => {
            tracing::info!(operator = %operator.name(), error = %e, "console: pairing refused");
            let state = FormState {
                magento_base_url: form.magento_base_url,
                business_id: form.business_id,
                ledger_base_url: form.ledger_base_url,
                policy: form.policy,
                errors: field_errors(&e),
            };
            let notices = [Notice::bad("The store was not paired: see the fields below.")];
            render(&shared, &operator, &state, &notices, StatusCode::UNPROCESSABLE_ENTITY).await
        }
    }
}

async fn disconnect(
    State(shared): State<Arc<ConsoleShared>>,
    Path(tenant): Path<String>,
    posted: Posted<Vec<(String, String)>>,
) -> Response {
    match shared.service.store.set_binding_status(&tenant, BindingStatus::Revoked, shared.now()).await {
        Ok(true) => {
            tracing::info!(operator = %posted.operator.name(), tenant = %tenant, "console: store disconnected");
            Redirect::to(&format!("/console/stores?disconnected={tenant}")).into_response()
        }
        Ok(false) => {
            let notices = [Notice::bad(format!("There is no tenant {tenant}."))];
            render(&shared, &posted.operator, &FormState::default(), &notices, StatusCode::NOT_FOUND).await
        }
        Err(e) => unavailable(&e),
    }
}
