//! The sync-runs pages of the console (issue 16):
//!
//! | route | what |
//! |---|---|
//! | `GET /console/runs` | the runs of every business, newest first: filtered by store, event, status and received date, searched by increment id or reference, paged on the server ([`runs_form`](super::runs_form)'s fields) |
//! | `GET /console/runs/{id}` | a run: its event JSON, every attempt with each ledger request and answer (redacted: [`byte8_ledger_core::http::audit`]), the outcome, the ledger's record (id and number), and for an upsert the diff with the previous run of the same entity |
//! | `POST /console/runs/{id}/retry` | "Retry": a dead-lettered run, or a failed one waiting for its retry time, goes back in line, due now ([`RunStore::requeue_run`](byte8_ledger_core::store::RunStore::requeue_run)); back to the run's page |
//! | `GET /console/runs/retry-dead-letters?store=` | "Retry all dead letters": the confirmation (the store, how many); `store=*` is every store of every business (the overview's dead-letter banner links there) |
//! | `POST /console/runs/retry-dead-letters` | the confirmed retry (`store`, `confirm=yes`): every dead letter of the store back in line ([`RunStore::requeue_dead_letters`](byte8_ledger_core::store::RunStore::requeue_dead_letters)), or with `store=*` of every business the console knows (connected or paired); back to the table filtered on the store (all runs for `*`) |
//!
//! Every route takes an operator's session (none: the login page); the POSTs check the CSRF
//! token (403). A retry tells the workers of the run's store (every active store of the business,
//! for the dead letters) at once, as a webhook does.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::html;
use serde::Deserialize;

use super::{
    ConsoleShared,
    layout::{self, Notice, Section},
    runs_form::{
        RunsForm,
        actions::{self, EVERY_STORE},
    },
    runs_view::{self, RUNS_PATH},
    session::{Operator, Posted, unavailable},
};

pub(crate) fn routes() -> Router<Arc<ConsoleShared>> {
    Router::new()
        .route("/console/runs", get(index))
        .route("/console/runs/retry-dead-letters", get(confirm_retry_all).post(retry_all))
        .route("/console/runs/{id}", get(show))
        .route("/console/runs/{id}/retry", post(retry))
}

/// What a redirect after an action tells the page it lands on (codes, never free text).
#[derive(Debug, Default, Deserialize)]
struct Done {
    #[serde(default)]
    done: Option<String>,
    #[serde(default)]
    retried: Option<u64>,
}

async fn index(
    State(shared): State<Arc<ConsoleShared>>,
    operator: Operator,
    Query(form): Query<RunsForm>,
    Query(done): Query<Done>,
) -> Response {
    let (stores, page) = match actions::list(&shared.service, &form).await {
        Ok(x) => x,
        Err(e) => return unavailable(&e),
    };
    let mut notices = Vec::new();
    if let (Some("retried_all"), Some(n)) = (done.done.as_deref(), done.retried) {
        notices.push(Notice::ok(format!(
            "{n} dead-lettered run{} back in line: the workers try {} again now.",
            if n == 1 { " is" } else { "s are" },
            if n == 1 { "it" } else { "them" }
        )));
    }
    let (errors, result) = match &page {
        Ok(p) => (Vec::new(), Some(p)),
        Err(errors) => (errors.clone(), None),
    };
    let content = runs_view::runs_page(&form, &errors, &stores, result, &layout::csrf_field(&operator));
    let status = if errors.is_empty() { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    (status, layout::page(&operator, Section::Runs, "Sync runs", &notices, content)).into_response()
}

fn not_found(operator: &Operator, id: &str) -> Response {
    let content = html! { p { "There is no run " code { (id) } ". " a href=(RUNS_PATH) { "Back to the sync runs" } } };
    (StatusCode::NOT_FOUND, layout::page(operator, Section::Runs, "No such run", &[], content)).into_response()
}

async fn show(
    State(shared): State<Arc<ConsoleShared>>,
    operator: Operator,
    Path(id): Path<String>,
    Query(done): Query<Done>,
) -> Response {
    let Ok(run_id) = id.parse::<i64>() else { return not_found(&operator, &id) };
    let detail = match actions::show(&shared.service, run_id).await {
        Ok(Some(d)) => d,
        Ok(None) => return not_found(&operator, &id),
        Err(e) => return unavailable(&e),
    };
    let notices: Vec<Notice> = match done.done.as_deref() {
        Some("retried") => vec![Notice::ok("The run is back in line: the workers try it again now.")],
        Some("not_retried") => vec![Notice::warn(
            "The run was not retried: only a dead-lettered run, or a failed one waiting for its retry time, can be.",
        )],
        _ => Vec::new(),
    };
    let title = runs_view::run_title(&detail.run);
    let content = runs_view::run_page(&detail, &layout::csrf_field(&operator));
    layout::page(&operator, Section::Runs, &title, &notices, content).into_response()
}

async fn retry(
    State(shared): State<Arc<ConsoleShared>>,
    Path(id): Path<String>,
    Posted { operator, form: _ }: Posted<Vec<(String, String)>>,
) -> Response {
    let Ok(run_id) = id.parse::<i64>() else { return not_found(&operator, &id) };
    let run = match shared.service.store.get(run_id).await {
        Ok(Some(run)) => run,
        Ok(None) => return not_found(&operator, &id),
        Err(e) => return unavailable(&e),
    };
    match actions::retry(&shared.service, &run).await {
        Ok(true) => {
            tracing::info!(operator = %operator.name(), run = run_id, "console: run retried");
            Redirect::to(&format!("{RUNS_PATH}/{run_id}?done=retried")).into_response()
        }
        Ok(false) => Redirect::to(&format!("{RUNS_PATH}/{run_id}?done=not_retried")).into_response(),
        Err(e) => unavailable(&e),
    }
}

#[derive(Debug, Default, Deserialize)]
struct StoreChoice {
    #[serde(default)]
    store: Option<String>,
}

async fn confirm_retry_all(
    State(shared): State<Arc<ConsoleShared>>,
    operator: Operator,
    Query(choice): Query<StoreChoice>,
) -> Response {
    let stores = match shared.service.store.bindings().await {
        Ok(s) => s,
        Err(e) => return unavailable(&e),
    };
    let selected = choice.store.as_deref().map(str::trim).filter(|s| !s.is_empty());
    let (count, errors) = match selected {
        None => (None, Vec::new()),
        Some(EVERY_STORE) => match actions::dead_letters_everywhere(&shared.service).await {
            Ok(per_business) => (Some(per_business.iter().map(|(_, n)| n).sum()), Vec::new()),
            Err(e) => return unavailable(&e),
        },
        Some(store) => match actions::dead_letters_of(&shared.service, store).await {
            Ok(Ok((_, n))) => (Some(n), Vec::new()),
            Ok(Err(e)) => (None, vec![e]),
            Err(e) => return unavailable(&e),
        },
    };
    let content = runs_view::confirm_retry_all(&stores, selected, count, &errors, &layout::csrf_field(&operator));
    layout::page(&operator, Section::Runs, "Retry all dead letters", &[], content).into_response()
}

#[derive(Debug, Default, Deserialize)]
struct RetryAll {
    #[serde(default)]
    store: String,
    #[serde(default)]
    confirm: Option<String>,
}

async fn retry_all(State(shared): State<Arc<ConsoleShared>>, Posted { operator, form }: Posted<RetryAll>) -> Response {
    let confirmed = form.confirm.as_deref() == Some("yes");
    match actions::retry_all(&shared.service, &form.store, confirmed).await {
        Ok(Ok(n)) => {
            tracing::info!(operator = %operator.name(), store = %form.store.trim(), count = n, "console: dead letters retried");
            let mut query = url::form_urlencoded::Serializer::new(String::new());
            if form.store.trim() != EVERY_STORE {
                query.append_pair("store", form.store.trim());
            }
            let query = query.append_pair("done", "retried_all").append_pair("retried", &n.to_string()).finish();
            Redirect::to(&format!("{RUNS_PATH}?{query}")).into_response()
        }
        Ok(Err(errors)) => {
            let stores = match shared.service.store.bindings().await {
                Ok(s) => s,
                Err(e) => return unavailable(&e),
            };
            let selected =
                Some(form.store.trim()).filter(|s| *s == EVERY_STORE || stores.iter().any(|b| b.tenant_id == *s));
            let count = match selected {
                Some(EVERY_STORE) => match actions::dead_letters_everywhere(&shared.service).await {
                    Ok(per_business) => Some(per_business.iter().map(|(_, n)| n).sum()),
                    Err(e) => return unavailable(&e),
                },
                Some(s) => match actions::dead_letters_of(&shared.service, s).await {
                    Ok(Ok((_, n))) => Some(n),
                    Ok(Err(_)) => None,
                    Err(e) => return unavailable(&e),
                },
                None => None,
            };
            let content =
                runs_view::confirm_retry_all(&stores, selected, count, &errors, &layout::csrf_field(&operator));
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                layout::page(&operator, Section::Runs, "Retry all dead letters", &[], content),
            )
                .into_response()
        }
        Err(e) => unavailable(&e),
    }
}
