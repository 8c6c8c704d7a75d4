//! The HTML of the console's sync-runs pages (`maud`; every value escaped by it): the runs table
//! with its filter form and paging, a run's page (event, attempts with every ledger request and
//! answer, outcome, ledger record, an upsert's diff), and the "Retry all dead letters"
//! confirmation. Each function renders the page's main content; the console's layout wraps it.
//! Forms that change something carry the console's CSRF field, given by the caller.
//!
//! Usable by keyboard: plain links, buttons and native `<details>` for the exchanges; every form
//! field has a `<label>`; errors are listed at the top of the form, each linked to its field,
//! and the field is marked `aria-invalid`.

use crate::store::BindingInfo;
use byte8_ledger_core::{
    canonical::EventKind,
    error::FieldError,
    http::audit::ExchangeRecord,
    store::{
        AttemptRecord, Run, RunStatus,
        audit::{RunDetail, RunPage},
    },
};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::runs_form::{Paging, RunsForm, actions::EVERY_STORE, retryable};

/// Where the runs table lives.
pub(crate) const RUNS_PATH: &str = "/console/runs";

fn when(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

fn pretty(text: &str) -> String {
    serde_json::from_str::<serde_json::Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

fn status_label(s: RunStatus) -> &'static str {
    match s {
        RunStatus::Queued => "queued",
        RunStatus::Running => "running",
        RunStatus::Synced => "synced",
        RunStatus::Skipped => "skipped",
        RunStatus::DeadLettered => "dead-lettered",
    }
}

fn error_for<'a>(errors: &'a [FieldError], field: &str) -> Option<&'a FieldError> {
    errors.iter().find(|e| e.path == field)
}

/// The list of a form's errors, each linked to its field (`#field-…`).
pub(crate) fn error_summary(errors: &[FieldError]) -> Markup {
    html! {
        @if !errors.is_empty() {
            div.errors role="alert" aria-labelledby="errors-title" {
                h2 #errors-title { "Check the form" }
                ul {
                    @for e in errors {
                        li { a href=(format!("#field-{}", e.path)) { (e.path) ": " (e.rule) } }
                    }
                }
            }
        }
    }
}

fn given(v: &Option<String>) -> &str {
    v.as_deref().map(str::trim).unwrap_or_default()
}

/// The runs table page: filters, the table and its paging, and the links to each run.
pub(crate) fn runs_page(
    form: &RunsForm,
    errors: &[FieldError],
    stores: &[BindingInfo],
    result: Option<&RunPage>,
    csrf: &Markup,
) -> Markup {
    let page = form.page();
    html! {
        (error_summary(errors))
        form.filters method="get" action=(RUNS_PATH) aria-label="Filter the runs" {
            div.field {
                label for="field-store" { "Store" }
                select #field-store name="store" {
                    option value="" { "All stores" }
                    @for b in stores {
                        option value=(b.tenant_id) selected[given(&form.store) == b.tenant_id] {
                            (b.tenant_id) " (" (b.scope) ")"
                        }
                    }
                }
            }
            div.field {
                label for="field-event" { "Event" }
                select #field-event name="event" aria-invalid=[error_for(errors, "event").map(|_| "true")] {
                    option value="" { "All events" }
                    @for k in EventKind::ALL {
                        option value=(k.as_str()) selected[given(&form.event) == k.as_str()] { (k.as_str()) }
                    }
                }
            }
            div.field {
                label for="field-status" { "Status" }
                select #field-status name="status" aria-invalid=[error_for(errors, "status").map(|_| "true")] {
                    option value="" { "Any status" }
                    @for s in RunStatus::ALL {
                        option value=(s.as_str()) selected[given(&form.status) == s.as_str()] { (status_label(s)) }
                    }
                }
            }
            div.field {
                label for="field-from" { "Received from" }
                input #field-from type="date" name="from" value=(given(&form.from))
                    aria-invalid=[error_for(errors, "from").map(|_| "true")];
            }
            div.field {
                label for="field-to" { "Received to" }
                input #field-to type="date" name="to" value=(given(&form.to))
                    aria-invalid=[error_for(errors, "to").map(|_| "true")];
            }
            div.field {
                label for="field-q" { "Increment id or reference" }
                input #field-q type="search" name="q" value=(given(&form.q)) maxlength="200"
                    placeholder="000000123, SI-42, invoice.created:7"
                    aria-invalid=[error_for(errors, "q").map(|_| "true")];
            }
            div.actions {
                button type="submit" { "Filter" }
                " "
                a href=(RUNS_PATH) { "Clear" }
            }
        }
        p {
            a href=(format!("{RUNS_PATH}/retry-dead-letters{}", store_query(form))) { "Retry all dead letters…" }
        }
        @if let Some(result) = result {
            @let paging = Paging::of(page, result);
            (runs_table(form, result, &paging, csrf))
        }
    }
}

fn store_query(form: &RunsForm) -> String {
    match given(&form.store) {
        "" => String::new(),
        s => format!("?{}", url::form_urlencoded::Serializer::new(String::new()).append_pair("store", s).finish()),
    }
}

fn runs_table(form: &RunsForm, result: &RunPage, paging: &Paging, csrf: &Markup) -> Markup {
    html! {
        @if result.runs.is_empty() {
            p #runs-count role="status" { "No run matches." }
        } @else {
            p #runs-count role="status" { "Runs " (paging.first) "–" (paging.last) " of " (paging.total) }
            div.table-wrap {
                table.runs {
                    caption.visually-hidden { "Sync runs, newest first" }
                    thead {
                        tr {
                            th scope="col" { "Run" }
                            th scope="col" { "Received" }
                            th scope="col" { "Store" }
                            th scope="col" { "Event" }
                            th scope="col" { "Key" }
                            th scope="col" { "Status" }
                            th scope="col" { "Attempts" }
                            th scope="col" { "Ledger" }
                            th scope="col" { "Message" }
                            th scope="col" { span.visually-hidden { "Actions" } }
                        }
                    }
                    tbody {
                        @for run in &result.runs { (run_row(run, csrf)) }
                    }
                }
            }
            nav.paging aria-label="Pages" {
                @if let Some(p) = paging.previous() {
                    a rel="prev" href=(format!("{RUNS_PATH}?{}", form.query_string(p))) { "← Previous" }
                    " "
                }
                span { "Page " (paging.page) " of " (paging.pages) }
                @if let Some(p) = paging.next() {
                    " "
                    a rel="next" href=(format!("{RUNS_PATH}?{}", form.query_string(p))) { "Next →" }
                }
            }
        }
    }
}

fn run_row(run: &Run, csrf: &Markup) -> Markup {
    let outcome = run.outcome.as_ref();
    let ledger = outcome.and_then(|o| o.provider_reference.clone().or_else(|| o.provider_entity_id.clone()));
    let message = outcome.and_then(|o| o.message.clone().or_else(|| o.skip_reason.clone())).unwrap_or_default();
    html! {
        tr data-run=(run.id) data-status=(run.status.as_str()) {
            td { a href=(format!("{RUNS_PATH}/{}", run.id)) { "#" (run.id) } }
            td { (when(run.created_at)) }
            td { (run.tenant_id.as_deref().unwrap_or("—")) }
            td { (run.event.as_deref().unwrap_or("—")) }
            td { code { (run.idempotency_key) } }
            td { span class=(format!("status status-{}", run.status.as_str())) { (status_label(run.status)) } }
            td { (run.attempts) }
            td { (ledger.as_deref().unwrap_or("—")) }
            td.message { (byte8_ledger_core::http::sanitise(&message, 160)) }
            td {
                @if retryable(run.status, run.outcome.is_some()) {
                    (retry_form(run.id, csrf))
                }
            }
        }
    }
}

/// The "Retry" button of one run (a POST with the CSRF field).
pub(crate) fn retry_form(id: i64, csrf: &Markup) -> Markup {
    html! {
        form.inline method="post" action=(format!("{RUNS_PATH}/{id}/retry")) {
            (csrf)
            button type="submit" aria-label=(format!("Retry run {id}")) { "Retry" }
        }
    }
}

/// The title of a run's page.
pub(crate) fn run_title(run: &Run) -> String {
    format!("Run #{}: {}", run.id, run.event.as_deref().unwrap_or("unreadable event"))
}

/// A run's page (its title is [`run_title`]).
pub(crate) fn run_page(d: &RunDetail, csrf: &Markup) -> Markup {
    let run = &d.run;
    html! {
        p { a href=(RUNS_PATH) { "← Sync runs" } }
        dl.summary {
            dt { "Status" } dd #run-status { span class=(format!("status status-{}", run.status.as_str())) { (status_label(run.status)) } }
            dt { "Business" } dd { (run.scope) }
            dt { "Store" } dd { (run.tenant_id.as_deref().unwrap_or("— (queued by the sync command)")) }
            dt { "Key" } dd { code { (run.idempotency_key) } }
            dt { "Magento entity" } dd { (run.magento_entity_id.map(|e| e.to_string()).unwrap_or_else(|| "—".into())) }
            dt { "Received" } dd { (when(run.created_at)) }
            dt { "Last change" } dd { (when(run.updated_at)) }
            dt { "Attempts" } dd { (run.attempts) }
            @if let Some(next) = run.next_attempt_at {
                dt { "Next attempt" } dd { (when(next)) }
            }
            dt { "Ledger record" }
            dd #run-ledger {
                @match &d.ledger {
                    Some(l) => {
                        "id " code { (l.id) }
                        @if let Some(n) = &l.number { ", number " strong { (n) } }
                    }
                    None => { "—" }
                }
            }
        }
        @if retryable(run.status, run.outcome.is_some()) {
            (retry_form(run.id, csrf))
        }
        @if let Some(o) = &run.outcome {
            section aria-labelledby="outcome-title" {
                h2 #outcome-title { "Outcome" }
                @if let Some(m) = &o.message { p.message { (m) } }
                pre tabindex="0" aria-label="Outcome JSON" { code { (serde_json::to_string_pretty(o).unwrap_or_default()) } }
            }
        }
        @if let Some(diff) = &d.diff {
            section aria-labelledby="diff-title" {
                h2 #diff-title { "Changes since run " a href=(format!("{RUNS_PATH}/{}", diff.previous_run)) { "#" (diff.previous_run) } }
                @if diff.changes.is_empty() {
                    p { "The same snapshot as the previous run." }
                } @else {
                    table.diff {
                        caption.visually-hidden { "Changed fields" }
                        thead { tr { th scope="col" { "Field" } th scope="col" { "Before" } th scope="col" { "After" } } }
                        tbody {
                            @for c in &diff.changes {
                                tr {
                                    td { code { (if c.path.is_empty() { "(whole entity)" } else { &c.path }) } }
                                    td { @match &c.before { Some(v) => code { (v.to_string()) }, None => em { "absent" } } }
                                    td { @match &c.after { Some(v) => code { (v.to_string()) }, None => em { "absent" } } }
                                }
                            }
                        }
                    }
                }
            }
        }
        section aria-labelledby="attempts-title" {
            h2 #attempts-title { "Attempts" }
            @if d.attempts.is_empty() { p { "No attempt yet." } }
            @for (i, a) in d.attempts.iter().enumerate() { (attempt(i, a)) }
        }
        section aria-labelledby="event-title" {
            h2 #event-title { "Event" }
            pre tabindex="0" aria-label="Event JSON" { code { (pretty(&run.raw)) } }
        }
    }
}

fn attempt(i: usize, a: &AttemptRecord) -> Markup {
    html! {
        article.attempt id=(format!("attempt-{}", i + 1)) aria-labelledby=(format!("attempt-{}-title", i + 1)) {
            h3 id=(format!("attempt-{}-title", i + 1)) {
                "Attempt " (a.number) ": " (a.result)
                @if let Some(code) = a.error_code { " (" (code.as_str()) ")" }
            }
            p { (when(a.started_at)) " → " (when(a.finished_at)) }
            @if let Some(m) = &a.message { p.message { (m) } }
            @if let Some(l) = &a.ledger_id { p { "Ledger id " code { (l) } } }
            @if a.exchanges.is_empty() {
                p { "No request to the ledger was recorded." }
            } @else {
                ol.exchanges {
                    @for e in &a.exchanges { li { (exchange(e)) } }
                }
            }
        }
    }
}

fn exchange(e: &ExchangeRecord) -> Markup {
    let answer = match (e.status, &e.error) {
        (Some(s), _) => s.to_string(),
        (None, Some(err)) => format!("no answer: {}", byte8_ledger_core::http::sanitise(err, 120)),
        (None, None) => "no answer".into(),
    };
    html! {
        details.exchange {
            summary { code { (e.method) " " (e.url) } " → " strong { (answer) } }
            p { "Sent " (when(e.at)) }
            h4 { "Request" }
            @match &e.request_body {
                Some(b) => pre tabindex="0" { code { (pretty(b)) } },
                None => p { "No body." },
            }
            h4 { "Answer" }
            @match &e.response_body {
                Some(b) => pre tabindex="0" { code { (pretty(b)) } },
                None => p { "No body." },
            }
        }
    }
}

/// The confirmation of "Retry all dead letters": the store to retry (or [`EVERY_STORE`]: every
/// store of every business), how many would go back in line, and the confirming POST.
pub(crate) fn confirm_retry_all(
    stores: &[BindingInfo],
    selected: Option<&str>,
    count: Option<u64>,
    errors: &[FieldError],
    csrf: &Markup,
) -> Markup {
    html! {
        p { a href=(RUNS_PATH) { "← Sync runs" } }
        (error_summary(errors))
        @if let (Some(EVERY_STORE), Some(n)) = (selected, count) {
            p #retry-all-count role="status" {
                @if n == 0 { "No business has a dead letter." }
                @else { (n) " dead-lettered run" @if n != 1 { "s" } " of " strong { "every business" } " will be put back in line and tried again now." }
            }
        } @else if let (Some(store), Some(n)) = (selected, count) {
            p #retry-all-count role="status" {
                @if n == 0 { "Store " strong { (store) } " has no dead letter." }
                @else { (n) " dead-lettered run" @if n != 1 { "s" } " of store " strong { (store) } " will be put back in line and tried again now." }
            }
        }
        form method="post" action=(format!("{RUNS_PATH}/retry-dead-letters")) {
            (csrf)
            div.field {
                label for="field-store" { "Store" }
                select #field-store name="store" required aria-invalid=[error_for(errors, "store").map(|_| "true")] {
                    option value="" { "Choose a store" }
                    option value=(EVERY_STORE) selected[selected == Some(EVERY_STORE)] { "Every store of every business" }
                    @for b in stores {
                        option value=(b.tenant_id) selected[selected == Some(b.tenant_id.as_str())] {
                            (b.tenant_id) " (" (b.scope) ")"
                        }
                    }
                }
            }
            div.field {
                input #field-confirm type="checkbox" name="confirm" value="yes" required
                    aria-invalid=[error_for(errors, "confirm").map(|_| "true")];
                label for="field-confirm" { "Yes, retry every dead letter of the store chosen" }
            }
            div.actions {
                button type="submit" { "Retry all dead letters" }
                " "
                a href=(RUNS_PATH) { "Cancel" }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{BindingStatus, ConnectionStatus};
    use byte8_ledger_core::{
        error::ErrorCode,
        outcome::{Outcome, SyncStatus},
        store::audit::{Change, LedgerLink, SnapshotDiff},
    };
    use serde_json::json;

    use super::*;

    fn t() -> DateTime<Utc> {
        DateTime::<Utc>::UNIX_EPOCH
    }

    fn run(id: i64, status: RunStatus, message: &str) -> Run {
        Run {
            id,
            scope: "biz".into(),
            tenant_id: Some("shop-1".into()),
            claim: 1,
            idempotency_key: format!("invoice.created:{id}"),
            event: Some("invoice.created".into()),
            magento_entity_id: Some(u64::try_from(id).unwrap()),
            raw: r#"{"event":"invoice.created","payload":{"increment_id":"000000007"}}"#.into(),
            policy: None,
            status,
            attempts: 1,
            attempts_before_retry: 0,
            next_attempt_at: None,
            outcome: Some(Outcome {
                idempotency_key: None,
                event: None,
                entity_type: None,
                magento_entity_id: None,
                provider: "sage_accounting".into(),
                sync_status: if status == RunStatus::Synced { SyncStatus::Synced } else { SyncStatus::Failed },
                provider_entity_id: (status == RunStatus::Synced).then(|| "L-1".into()),
                provider_reference: (status == RunStatus::Synced).then(|| "SI-7".into()),
                skip_reason: None,
                error_code: (status != RunStatus::Synced).then_some(ErrorCode::Provider),
                message: Some(message.into()),
                last_sync_at: t(),
            }),
            created_at: t(),
            updated_at: t(),
        }
    }

    fn store() -> BindingInfo {
        BindingInfo {
            tenant_id: "shop-1".into(),
            scope: "biz".into(),
            magento_base_url: "https://shop.example.com".into(),
            status: BindingStatus::Active,
            magento_status: ConnectionStatus::Active,
            paired_at: t(),
            created_at: t(),
            updated_at: t(),
        }
    }

    fn csrf() -> Markup {
        html! { input type="hidden" name="csrf" value="TOKEN"; }
    }

    /// Every `<input>` and `<select>` with an id has a `<label for=…>` (hidden inputs aside).
    fn assert_labelled(html: &str) {
        for tag in ["<input ", "<select "] {
            for (at, _) in html.match_indices(tag) {
                let end = html[at..].find('>').map_or(html.len(), |e| at + e);
                let element = &html[at..end];
                if element.contains(r#"type="hidden""#) {
                    continue;
                }
                let id = element.split(r#"id=""#).nth(1).and_then(|s| s.split('"').next()).expect("an id");
                assert!(html.contains(&format!(r#"<label for="{id}">"#)), "{id} has no label in {html}");
            }
        }
    }

    #[test]
    fn the_table_labels_its_filters_offers_retry_where_it_applies_and_escapes_messages() {
        let form =
            RunsForm { store: Some("shop-1".into()), status: Some("dead_lettered".into()), ..RunsForm::default() };
        let page = RunPage {
            runs: vec![run(2, RunStatus::DeadLettered, "<script>alert(1)</script>"), run(1, RunStatus::Synced, "ok")],
            total: 2,
        };
        let html = runs_page(&form, &[], &[store()], Some(&page), &csrf()).into_string();
        assert_labelled(&html);
        assert!(!html.contains("<script>"), "messages are escaped");
        assert!(html.contains("&lt;script&gt;"));
        assert_eq!(html.matches(r#"action="/console/runs/2/retry""#).count(), 1, "the dead letter has Retry");
        assert!(!html.contains(r#"action="/console/runs/1/retry""#), "a synced run has none");
        assert!(html.contains(r#"value="TOKEN""#), "the retry form carries the CSRF field");
        assert!(html.contains(r#"<option value="shop-1" selected>"#), "the filter keeps its store");
        assert!(html.contains(r#"<option value="dead_lettered" selected>"#));
        assert!(html.contains("Runs 1–2 of 2"));
        assert!(html.contains(r#"href="/console/runs/retry-dead-letters?store=shop-1""#));
        assert!(html.contains("SI-7"), "the ledger's number");
    }

    #[test]
    fn form_errors_are_listed_linked_and_marked_on_their_fields() {
        let errors = vec![FieldError::new("from", "`x` is not a date (YYYY-MM-DD)")];
        let html = runs_page(&RunsForm::default(), &errors, &[], None, &csrf()).into_string();
        assert!(html.contains(r##"<a href="#field-from">from: `x` is not a date (YYYY-MM-DD)</a>"##), "{html}");
        assert!(html.contains(r#"id="field-from" type="date" name="from" value="" aria-invalid="true""#), "{html}");
        assert!(!html.contains("<table"), "no table without a valid query");
    }

    #[test]
    fn paging_links_keep_the_filters() {
        let form = RunsForm { event: Some("invoice.paid".into()), page: Some("2".into()), ..RunsForm::default() };
        let page = RunPage { runs: vec![run(1, RunStatus::Synced, "ok")], total: 151 };
        let html = runs_page(&form, &[], &[], Some(&page), &csrf()).into_string();
        assert!(html.contains(r#"href="/console/runs?event=invoice.paid""#), "previous: page 1 {html}");
        assert!(html.contains(r#"href="/console/runs?event=invoice.paid&amp;page=3""#), "next: page 3");
        assert!(html.contains("Page 2 of 4"));
    }

    #[test]
    fn a_runs_page_shows_its_attempts_exchanges_ledger_record_and_diff() {
        let mut r = run(5, RunStatus::DeadLettered, "Sage refused");
        r.event = Some("customer.upserted".into());
        let detail = RunDetail {
            event: None,
            attempts: vec![AttemptRecord {
                number: 1,
                started_at: t(),
                finished_at: t(),
                result: "failed".into(),
                error_code: Some(ErrorCode::Provider),
                message: Some("403 MultiUserAccessDenied".into()),
                ledger_id: None,
                exchanges: vec![ExchangeRecord {
                    at: t(),
                    method: "POST".into(),
                    url: "/v3.1/contacts".into(),
                    status: Some(403),
                    request_body: Some(r#"{"contact":{"name":"Jane"}}"#.into()),
                    response_body: Some(r#"[{"$dataCode":"MultiUserAccessDenied"}]"#.into()),
                    error: None,
                }],
                recording: None,
                snapshot: None,
            }],
            ledger: Some(LedgerLink { id: "C-5".into(), number: Some("JANE".into()) }),
            diff: Some(SnapshotDiff {
                previous_run: 4,
                changes: vec![Change { path: "/email".into(), before: Some(json!("a@x")), after: Some(json!("b@x")) }],
            }),
            run: r,
        };
        let html = run_page(&detail, &csrf()).into_string();
        assert!(html.contains("<summary><code>POST /v3.1/contacts</code> → <strong>403</strong></summary>"), "{html}");
        assert!(html.contains("MultiUserAccessDenied"));
        assert!(html.contains("&quot;name&quot;: &quot;Jane&quot;"), "bodies pretty-printed (and escaped)");
        assert!(html.contains(r#"action="/console/runs/5/retry""#));
        assert!(html.contains("<code>/email</code>") && html.contains("&quot;a@x&quot;"), "the diff");
        assert!(html.contains(r#"href="/console/runs/4""#), "the previous run is linked");
        assert!(html.contains("<strong>JANE</strong>"), "the ledger's number");
        assert!(html.contains("000000007"), "the event JSON");
    }

    #[test]
    fn the_retry_all_confirmation_names_the_store_and_the_count() {
        let html = confirm_retry_all(&[store()], Some("shop-1"), Some(3), &[], &csrf()).into_string();
        assert_labelled(&html);
        assert!(html.contains("3 dead-lettered runs of store <strong>shop-1</strong>"), "{html}");
        assert!(html.contains(r#"name="confirm" value="yes" required"#));
        assert!(html.contains(r#"value="TOKEN""#));
        let none = confirm_retry_all(&[store()], Some("shop-1"), Some(0), &[], &csrf()).into_string();
        assert!(none.contains("has no dead letter"));
    }
}
