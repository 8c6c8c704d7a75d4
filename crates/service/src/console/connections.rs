//! `GET /console/connections`: the ledger connections, one row per business: provider, the
//! business's name (from the reference cache), the refresh token's days left, the reference
//! data's age and size; connect another (the OAuth routes of [`super::oauth`]), refresh the
//! reference data on demand, disconnect.
//!
//! Disconnect revokes the tokens where the provider documents revocation (the core's
//! `OAuthApp::revoke`: Xero's revocation or `DELETE /connections/{id}`; Sage's unconfirmed
//! `/revoke` is tried) and deletes them locally in any case; the page says which. The connection
//! row stays (its runs and cross-reference keep their business), so its events wait in line
//! until it is connected again.

use std::sync::Arc;

use axum::{
    Router,
    extract::{Path, Query, State},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use maud::{Markup, html};
use serde::Deserialize;

use super::{
    ConsoleShared,
    layout::{self, Notice, Section, Tone},
    oauth::{label, refresh_reference, segment},
    overview::age,
    session::{Operator, Posted, unavailable},
};
use byte8_ledger_core::{auth::connect::refresh_token_health, error::Result, store::Connection};

pub(crate) fn routes() -> Router<Arc<ConsoleShared>> {
    Router::new()
        .route("/console/connections", get(show))
        .route("/console/connections/{scope}/refresh", post(refresh))
        .route("/console/connections/{scope}/disconnect", post(disconnect))
}

/// A result carried to the page after a POST (`?done=…&business=…`).
#[derive(Debug, Default, Deserialize)]
pub(crate) struct Done {
    done: Option<String>,
    business: Option<String>,
    detail: Option<String>,
}

impl Done {
    fn notice(&self) -> Option<Notice> {
        let business = self.business.as_deref().unwrap_or("?");
        let detail = self.detail.as_deref().unwrap_or("");
        match self.done.as_deref()? {
            "refreshed" => Some(Notice::ok(format!("Reference data of {business} refreshed: {detail}."))),
            "refresh_failed" => {
                Some(Notice::bad(format!("The reference data of {business} could not be read: {detail}")))
            }
            "disconnected" => Some(Notice::ok(format!("Business {business} disconnected: {detail}"))),
            "not_revoked" => Some(Notice::warn(format!("Business {business} disconnected: {detail}"))),
            "no_connection" => Some(Notice::bad(format!("There is no connection for business {business}."))),
            _ => None,
        }
    }
}

fn done(what: &str, business: &str, detail: &str) -> Response {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("done", what)
        .append_pair("business", business)
        .append_pair("detail", detail)
        .finish();
    Redirect::to(&format!("/console/connections?{q}")).into_response()
}

/// What the page shows of one connection.
struct Row {
    connection: Connection,
    name: Option<String>,
    reference: Option<(chrono::DateTime<chrono::Utc>, usize, usize, usize, usize)>,
    token: TokenState,
}

enum TokenState {
    None,
    Unreadable,
    Health(Option<byte8_ledger_core::auth::connect::RefreshTokenHealth>),
}

async fn rows(shared: &ConsoleShared) -> Result<Vec<Row>> {
    let store = &shared.service.store;
    let now = shared.now();
    let mut rows = Vec::new();
    for connection in store.connections().await? {
        let reference = store.reference(&connection.scope).await.ok().flatten();
        let token = match store.tokens(&connection.scope).await {
            Ok(None) => TokenState::None,
            Ok(Some(t)) => TokenState::Health(connection.kind().and_then(|k| refresh_token_health(k, &t, now))),
            Err(e) => {
                tracing::warn!(business = %connection.scope, error = %e, "console: cannot read the stored tokens");
                TokenState::Unreadable
            }
        };
        rows.push(Row {
            name: reference.as_ref().map(|r| r.business.name.clone()),
            reference: reference.as_ref().map(|r| {
                (
                    r.fetched_at,
                    r.tax_rates.len(),
                    r.ledger_accounts.len(),
                    r.bank_accounts.len(),
                    r.payment_methods.len(),
                )
            }),
            connection,
            token,
        });
    }
    Ok(rows)
}

fn token_cell(t: &TokenState) -> Markup {
    match t {
        TokenState::None => layout::pill(Tone::Bad, "no tokens: connect again"),
        TokenState::Unreadable => layout::pill(Tone::Bad, "tokens unreadable (master key?)"),
        TokenState::Health(None) => layout::pill(Tone::Ok, "connected (token life unknown)"),
        TokenState::Health(Some(h)) if h.expired => layout::pill(Tone::Bad, "refresh token lapsed: connect again"),
        TokenState::Health(Some(h)) if h.days_left < 7 => {
            layout::pill(Tone::Warn, &format!("{} days left", h.days_left))
        }
        TokenState::Health(Some(h)) => layout::pill(Tone::Ok, &format!("{} days left", h.days_left)),
    }
}

fn connect_forms(shared: &ConsoleShared) -> Markup {
    html! {
        h2 id="connect" { "Connect a business" }
        @if shared.apps.is_empty() {
            p class="muted" { "No ledger app is configured on this service: set SAGE_CLIENT_ID and SAGE_CLIENT_SECRET (or XERO_…) and restart it." }
        }
        @for app in &shared.apps {
            form class="stack card" method="get" action=(format!("/connect/{}", segment(app.kind))) {
                @let id = format!("business-{}", segment(app.kind));
                (layout::field(&id, &format!("{} business id (optional)", label(app.kind)),
                    Some("Leave empty to connect the only business your login reaches; you will choose when it reaches several."),
                    None,
                    html! { input type="text" id=(id) name="business" autocomplete="off"; }))
                div class="actions" {
                    button type="submit" id=(format!("connect-{}", segment(app.kind))) { "Connect " (label(app.kind)) }
                    span class="muted" { "Redirect URI to register: " code { (shared.redirect_uri(app.kind)) } }
                }
            }
        }
    }
}

async fn show(State(shared): State<Arc<ConsoleShared>>, Query(q): Query<Done>, operator: Operator) -> Response {
    let rows = match rows(&shared).await {
        Ok(r) => r,
        Err(e) => return unavailable(&e),
    };
    let now = shared.now();
    let notices: Vec<Notice> = q.notice().into_iter().collect();
    let content = html! {
        @if rows.is_empty() {
            p { "No ledger business is connected yet." }
        } @else {
            div class="table-wrap" {
                table {
                    caption class="muted" { "Connections (" (rows.len()) ")" }
                    thead { tr {
                        th scope="col" { "Business" } th scope="col" { "Ledger" } th scope="col" { "Token" }
                        th scope="col" { "Reference data" } th scope="col" { "Actions" }
                    } }
                    tbody {
                        @for r in &rows {
                            @let scope = &r.connection.scope;
                            tr id=(format!("connection-{scope}")) {
                                th scope="row" { (r.name.as_deref().unwrap_or("")) div class="muted" { (scope) } }
                                td { (r.connection.kind().map_or_else(|| r.connection.provider.clone(), |k| label(k).to_owned())) }
                                td { (token_cell(&r.token)) }
                                td {
                                    @match r.reference {
                                        Some((at, tax, accounts, banks, methods)) => {
                                            (tax) " tax rates, " (accounts) " ledger accounts, " (banks) " bank accounts, " (methods) " payment methods"
                                            div class="muted" { "fetched " (age(at, now)) }
                                        }
                                        None => span class="muted" { "not fetched yet" },
                                    }
                                }
                                td {
                                    div class="actions" {
                                        form class="inline" method="post" action=(format!("/console/connections/{scope}/refresh")) {
                                            (layout::csrf_field(&operator))
                                            button type="submit" class="secondary" { "Refresh reference data" }
                                        }
                                        form class="inline" method="post" action=(format!("/console/connections/{scope}/disconnect")) {
                                            (layout::csrf_field(&operator))
                                            button type="submit" class="danger" { "Disconnect" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        (connect_forms(&shared))
    };
    let page = layout::page(&operator, Section::Connections, "Connections", &notices, content);
    page.into_response()
}

async fn refresh(
    State(shared): State<Arc<ConsoleShared>>,
    Path(scope): Path<String>,
    posted: Posted<Vec<(String, String)>>,
) -> Response {
    match shared.service.store.connection(&scope).await {
        Ok(Some(_)) => {}
        Ok(None) => return done("no_connection", &scope, ""),
        Err(e) => return unavailable(&e),
    }
    match refresh_reference(&shared, &scope).await {
        Ok(r) => {
            tracing::info!(operator = %posted.operator.name(), business = %scope, "console: reference data refreshed");
            done(
                "refreshed",
                &scope,
                &format!(
                    "{} tax rates, {} ledger accounts, {} bank accounts, {} payment methods",
                    r.tax_rates.len(),
                    r.ledger_accounts.len(),
                    r.bank_accounts.len(),
                    r.payment_methods.len()
                ),
            )
        }
        Err(e) => done("refresh_failed", &scope, &e.to_string()),
    }
}

async fn disconnect(
    State(shared): State<Arc<ConsoleShared>>,
    Path(scope): Path<String>,
    posted: Posted<Vec<(String, String)>>,
) -> Response {
    let store = &shared.service.store;
    let connection = match store.connection(&scope).await {
        Ok(Some(c)) => c,
        Ok(None) => return done("no_connection", &scope, ""),
        Err(e) => return unavailable(&e),
    };
    let tokens = match store.tokens(&scope).await {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(business = %scope, error = %e, "console: cannot read the tokens to revoke them");
            None
        }
    };
    let kind = connection.kind();
    let revocation = match (tokens, kind.and_then(|k| shared.app(k))) {
        (None, _) => None,
        (Some(_), None) => {
            let which = kind.map_or_else(|| connection.provider.clone(), |k| label(k).to_owned());
            Some(Err(format!(
                "deleted locally, not revoked at the provider: {which} is not configured on this service"
            )))
        }
        (Some(t), Some(app)) => {
            let kind = app.kind;
            Some(match app.oauth(&shared.redirect_uri(kind)) {
                Ok(oauth) => {
                    let r = oauth.revoke(&t, &scope, shared.now()).await;
                    if r.confirmed() { Ok(r.to_string()) } else { Err(r.to_string()) }
                }
                Err(e) => Err(format!("deleted locally, not revoked at the provider: {e}")),
            })
        }
    };
    if let Err(e) = store.forget_tokens(&scope).await {
        return unavailable(&e);
    }
    shared.forget_runtimes(&scope).await;
    tracing::info!(operator = %posted.operator.name(), business = %scope, "console: business disconnected");
    match revocation {
        None => done("disconnected", &scope, "no tokens were stored"),
        Some(Ok(text)) => done("disconnected", &scope, &format!("tokens deleted; {text}")),
        Some(Err(text)) => done("not_revoked", &scope, &format!("tokens deleted; {text}")),
    }
}
