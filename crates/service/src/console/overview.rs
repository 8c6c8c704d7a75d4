//! `GET /console`: one row per ledger business, with its provider, tenants (paired stores),
//! connection health, queue depth, oldest waiting event, dead letters and the rate limit's use
//! in the last hour; a banner when anything is dead-lettered, with "Retry all dead letters" of
//! every business (`console/runs.rs`).
//!
//! # The rate limit's use
//!
//! The ledger requests the business's runs made in the last hour, as the run store recorded
//! them ([`RunStore::ledger_requests`]: every request of every attempt, a batch's requests
//! counted once however many runs they carried), against the limit for that hour: 60 times
//! the requests a minute the service's providers keep the business under
//! ([`ConsoleConfig::requests_per_minute`](super::ConsoleConfig::requests_per_minute): Sage 200,
//! Xero 60), with the ledger's 429 answers among them when there were any. Requests made for the
//! business outside any run (a worker's reference-data load, the engine's capabilities and policy
//! check, an operator's refresh) are recorded and counted too
//! ([`recorded_outside_runs`](byte8_ledger_core::store::audit::recorded_outside_runs)); token
//! refreshes (the identity server, outside the API's limit) and the connect flow's one listing of
//! the businesses a new token reaches are not.

use std::{collections::BTreeMap, sync::Arc};

use axum::{Router, extract::State, response::Response, routing::get};
use chrono::{DateTime, Utc};
use maud::{Markup, html};

use super::{
    ConsoleShared,
    layout::{self, Notice, Section, Tone},
    session::{Operator, unavailable},
};
use crate::store::BindingInfo;
use byte8_ledger_core::{
    auth::connect::{RefreshTokenHealth, refresh_token_health},
    error::Result,
    store::{Connection, RunStatus, RunStore, audit::RequestCount},
};

pub(crate) fn routes() -> Router<Arc<ConsoleShared>> {
    Router::new().route("/console", get(show))
}

/// What the overview shows of one business.
#[derive(Debug, Default)]
pub(crate) struct BusinessRow {
    pub(crate) scope: String,
    pub(crate) connection: Option<Connection>,
    pub(crate) tenants: Vec<BindingInfo>,
    pub(crate) queued: u64,
    pub(crate) running: u64,
    pub(crate) dead: u64,
    pub(crate) oldest_queued_at: Option<DateTime<Utc>>,
    /// The ledger requests of the last hour (`None`: the store keeps no count).
    pub(crate) requests_last_hour: Option<RequestCount>,
    /// The requests the business may make in an hour (`None`: no limit known).
    pub(crate) limit_per_hour: Option<u64>,
    /// The refresh token's health: `None` without tokens, `Some(None)` when its life is unknown.
    pub(crate) token: Option<Option<RefreshTokenHealth>>,
}

/// Every business known to the store (connected or paired), by id.
pub(crate) async fn businesses(shared: &ConsoleShared) -> Result<Vec<BusinessRow>> {
    let store = &shared.service.store;
    let mut rows: BTreeMap<String, BusinessRow> = BTreeMap::new();
    for c in store.connections().await? {
        let scope = c.scope.clone();
        rows.entry(scope).or_default().connection = Some(c);
    }
    for b in store.bindings().await? {
        rows.entry(b.scope.clone()).or_default().tenants.push(b);
    }
    let now = shared.now();
    for (scope, row) in &mut rows {
        row.scope.clone_from(scope);
        if let Some(kind) = row.connection.as_ref().and_then(Connection::kind) {
            row.token = match store.tokens(scope).await {
                Ok(Some(t)) => Some(refresh_token_health(kind, &t, now)),
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(business = %scope, error = %e, "console: cannot read the stored tokens");
                    None
                }
            };
        }
        let counts = store.counts(scope).await?;
        row.queued = counts.get(&RunStatus::Queued).copied().unwrap_or(0);
        row.running = counts.get(&RunStatus::Running).copied().unwrap_or(0);
        row.dead = counts.get(&RunStatus::DeadLettered).copied().unwrap_or(0);
        let hour_ago = now - chrono::Duration::hours(1);
        row.requests_last_hour = match RunStore::ledger_requests(store.as_ref(), scope, hour_ago).await {
            Ok(n) => Some(n),
            Err(byte8_ledger_core::Error::Unsupported { .. }) => None,
            Err(e) => return Err(e),
        };
        row.limit_per_hour = row.connection.as_ref().and_then(|c| shared.config.requests_per_hour(c.provider.as_str()));
        match shared.store.activity(scope, hour_ago).await? {
            Some(a) => row.oldest_queued_at = a.oldest_queued_at,
            None if row.queued > 0 => {
                row.oldest_queued_at = store
                    .runs_with_status(scope, RunStatus::Queued)
                    .await
                    .ok()
                    .and_then(|runs| runs.iter().map(|r| r.created_at).min());
            }
            None => {}
        }
    }
    Ok(rows.into_values().collect())
}

/// `2 h 5 min ago` style ages.
pub(crate) fn age(from: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (now - from).num_seconds().max(0);
    match secs {
        0..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h {} min ago", secs / 3600, secs % 3600 / 60),
        _ => format!("{} days ago", secs / 86_400),
    }
}

fn provider_label(c: Option<&Connection>) -> &str {
    match c.map(|c| c.provider.as_str()) {
        Some("sage_accounting") => "Sage",
        Some("xero") => "Xero",
        Some(other) => other,
        None => "—",
    }
}

fn health(row: &BusinessRow) -> Markup {
    match (&row.connection, &row.token) {
        (None, _) => layout::pill(Tone::Warn, "not connected: events wait"),
        (Some(_), None) => layout::pill(Tone::Bad, "no tokens: connect again"),
        (Some(_), Some(None)) => layout::pill(Tone::Ok, "connected"),
        (Some(_), Some(Some(h))) if h.expired => layout::pill(Tone::Bad, "token lapsed: connect again"),
        (Some(_), Some(Some(h))) if h.days_left < 7 => {
            layout::pill(Tone::Warn, &format!("connected, token: {} days left", h.days_left))
        }
        (Some(_), Some(Some(h))) => layout::pill(Tone::Ok, &format!("connected, token: {} days left", h.days_left)),
    }
}

fn table(rows: &[BusinessRow], now: DateTime<Utc>) -> Markup {
    html! {
        div class="table-wrap" {
            table {
                caption class="muted" { "Businesses (" (rows.len()) ")" }
                thead { tr {
                    th scope="col" { "Business" }
                    th scope="col" { "Provider" }
                    th scope="col" { "Stores" }
                    th scope="col" { "Connection" }
                    th scope="col" class="num" { "Queued" }
                    th scope="col" { "Oldest waiting" }
                    th scope="col" class="num" { "Dead letters" }
                    th scope="col" class="num" { "Ledger requests, last hour" }
                } }
                tbody {
                    @for r in rows {
                        tr data-business=(r.scope) {
                            th scope="row" { (r.scope) }
                            td { (provider_label(r.connection.as_ref())) }
                            td {
                                @if r.tenants.is_empty() { span class="muted" { "none paired" } }
                                @for t in &r.tenants {
                                    div {
                                        (t.magento_base_url) " "
                                        @if t.is_active() { (layout::pill(Tone::Ok, "active")) } @else { (layout::pill(Tone::Bad, "disconnected")) }
                                    }
                                }
                            }
                            td { (health(r)) }
                            td class="num" { (r.queued) @if r.running > 0 { " (+" (r.running) " running)" } }
                            td { @match r.oldest_queued_at { Some(t) => (age(t, now)), None => span class="muted" { "—" } } }
                            td class="num" {
                                @if r.dead > 0 { (layout::pill(Tone::Bad, &r.dead.to_string())) } @else { "0" }
                            }
                            td class="num rate-use" { (rate_use(r)) }
                        }
                    }
                }
            }
        }
    }
}

/// `134 / 12,000 (1.1 %)`, and the 429s when there were any.
pub(crate) fn rate_use(row: &BusinessRow) -> Markup {
    let Some(n) = row.requests_last_hour else { return html! { span class="muted" { "—" } } };
    html! {
        @match row.limit_per_hour {
            Some(limit) => {
                span title="ledger requests in the last hour / the business's limit for an hour" {
                    (thousands(n.requests)) " / " (thousands(limit)) " (" (percent(n.requests, limit)) ")"
                }
            }
            None => { (thousands(n.requests)) " " span class="muted" { "(no limit)" } }
        }
        @if n.rate_limited > 0 {
            " " (layout::pill(Tone::Bad, &format!("{} refused (429)", thousands(n.rate_limited))))
        }
    }
}

/// `12,000`.
pub(crate) fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `part` of `whole` in percent with one decimal, rounded half up on integers (no float).
pub(crate) fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "—".into();
    }
    // Tenths of a percent, rounded half up: (part · 1000 + whole / 2) / whole.
    let tenths = (u128::from(part) * 1000 + u128::from(whole) / 2) / u128::from(whole);
    format!("{}.{} %", tenths / 10, tenths % 10)
}

async fn show(State(shared): State<Arc<ConsoleShared>>, operator: Operator) -> Response {
    let rows = match businesses(&shared).await {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let now = shared.now();
    let dead: u64 = rows.iter().map(|r| r.dead).sum();
    let mut notices = Vec::new();
    if dead > 0 {
        notices.push(Notice::bad(format!(
            "{dead} event(s) dead-lettered: they will not be tried again until retried (Sync runs)."
        )));
    }
    let content = html! {
        @if dead > 0 {
            p #dead-letters-everywhere {
                a href="/console/runs/retry-dead-letters?store=*" { "Retry all dead letters of every business…" }
                " (asks for a confirmation)"
            }
        }
        @if rows.is_empty() {
            div class="card" {
                p { "No business yet. " a href="/console/stores" { "Pair a Magento store" } " and "
                    a href="/console/connections" { "connect its ledger" } "." }
            }
        } @else {
            (table(&rows, now))
        }
    };
    axum::response::IntoResponse::into_response(layout::page(
        &operator,
        Section::Overview,
        "Overview",
        &notices,
        content,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_as_a_person_says_them() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T12:00:00Z").unwrap().with_timezone(&Utc);
        assert_eq!(age(now - chrono::Duration::seconds(5), now), "5 s ago");
        assert_eq!(age(now - chrono::Duration::minutes(3), now), "3 min ago");
        assert_eq!(age(now - chrono::Duration::minutes(125), now), "2 h 5 min ago");
        assert_eq!(age(now - chrono::Duration::days(3), now), "3 days ago");
        assert_eq!(age(now + chrono::Duration::seconds(5), now), "0 s ago");
    }

    #[test]
    fn the_rate_limits_use_reads_as_requests_of_the_limit() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(12_000), "12,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(percent(134, 12_000), "1.1 %");
        assert_eq!(percent(3, 12_000), "0.0 %");
        assert_eq!(percent(6, 12_000), "0.1 %", "0.05 % rounds half up");
        assert_eq!(percent(3600, 3600), "100.0 %");
        assert_eq!(percent(1, 0), "—");
        let row = BusinessRow {
            requests_last_hour: Some(RequestCount { requests: 134, rate_limited: 2 }),
            limit_per_hour: Some(12_000),
            ..BusinessRow::default()
        };
        let html = rate_use(&row).into_string();
        assert!(html.contains("134 / 12,000 (1.1 %)"), "{html}");
        assert!(html.contains("2 refused (429)"), "{html}");
        let quiet = BusinessRow { requests_last_hour: Some(RequestCount::default()), ..BusinessRow::default() };
        let html = rate_use(&quiet).into_string();
        assert!(html.contains("0 ") && html.contains("(no limit)") && !html.contains("429"), "{html}");
    }
}
