//! `GET /console`: one row per ledger business, with its provider, tenants (paired stores),
//! connection health, queue depth, oldest waiting event, dead letters and sync attempts in the
//! last hour; a banner when anything is dead-lettered.
//!
//! The rate limit's use is shown as the sync attempts finished in the last hour (each attempt
//! makes one or more ledger requests; the stores keep no per-request count, and the
//! PostgreSQL rate limiter keeps only its GCRA state), next to the provider's limit.

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
    store::{Connection, RunStatus},
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
    pub(crate) attempts_last_hour: Option<u64>,
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
        match shared.store.activity(scope, now - chrono::Duration::hours(1)).await? {
            Some(a) => {
                row.oldest_queued_at = a.oldest_queued_at;
                row.attempts_last_hour = Some(a.attempts_since);
            }
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
                    th scope="col" class="num" { "Attempts, last hour" }
                } }
                tbody {
                    @for r in rows {
                        tr {
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
                            td class="num" { @match r.attempts_last_hour { Some(n) => (n), None => span class="muted" { "—" } } }
                        }
                    }
                }
            }
        }
    }
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
}
