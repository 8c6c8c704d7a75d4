//! `GET/POST /console/login` and `POST /console/logout`.
//!
//! Login attempts are rate-limited per name (and in all, against a spray over many names) with
//! `governor`, before the password is checked, so that guessing costs the attacker time and
//! the server no argon2 work: beyond the limit the answer is 429 with the login form and a
//! message to wait. A failed login says only "wrong name or password" (never which).

use std::sync::Arc;

use axum::{
    extract::{Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
};
use maud::{Markup, html};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    ConsoleShared,
    layout::{self, Notice},
    password::verify_password,
    session::{self, CSRF_FIELD, LOGIN_COOKIE, Posted, cookie, csrf_in, random_token, safe_next, set_cookie},
};

/// The login page's query.
#[derive(Debug, Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

/// The login form.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    name: String,
    password: SecretString,
    next: Option<String>,
}

fn login_form(token: &str, name: &str, next: Option<&str>) -> Markup {
    html! {
        div class="card login" {
            form class="stack" method="post" action="/console/login" {
                input type="hidden" name=(CSRF_FIELD) value=(token);
                @if let Some(n) = next { input type="hidden" name="next" value=(n); }
                (layout::field("name", "Operator name", None, None, html! {
                    input type="text" id="name" name="name" value=(name) autocomplete="username" required autofocus;
                }))
                (layout::field("password", "Password", None, None, html! {
                    input type="password" id="password" name="password" autocomplete="current-password" required;
                }))
                div class="actions" { button type="submit" { "Log in" } }
            }
            p class="muted" { "Operators are added on the server: " code { "byte8-ledger operator add NAME" } "." }
        }
    }
}

/// Renders the login page with a fresh double-submit token (in its cookie and its form).
fn login_page(
    shared: &ConsoleShared,
    status: StatusCode,
    name: &str,
    next: Option<&str>,
    notices: &[Notice],
) -> Response {
    let token = match random_token() {
        Ok(t) => t,
        Err(e) => return session::unavailable(&e),
    };
    let body = layout::bare("Log in", notices, login_form(token.expose_secret(), name, next));
    let cookie = set_cookie(
        LOGIN_COOKIE,
        token.expose_secret(),
        "/console/login",
        "Strict",
        Some(3600),
        shared.config.secure_cookies,
    );
    (status, [(header::SET_COOKIE, cookie)], body).into_response()
}

/// `GET /console/login`.
pub(crate) async fn show(
    State(shared): State<Arc<ConsoleShared>>,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let next = q.next.as_deref().and_then(safe_next);
    // Already logged in: straight on.
    if let Ok(Some(_)) = shared.operator(&headers).await {
        return Redirect::to(next.unwrap_or("/console")).into_response();
    }
    login_page(&shared, StatusCode::OK, "", next, &[])
}

/// `POST /console/login`.
pub(crate) async fn submit(
    State(shared): State<Arc<ConsoleShared>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    // The double-submit check first: a cross-site form cannot read or set the cookie.
    let presented = csrf_in(&body);
    let expected = cookie(&headers, LOGIN_COOKIE);
    let csrf_ok = match (presented, expected) {
        (Some(p), Some(e)) => !p.is_empty() && crate::magento::pairing::constant_time_eq(&p, e.expose_secret()),
        _ => false,
    };
    if !csrf_ok {
        tracing::warn!("console: login form without its CSRF token");
        return session::csrf_refused();
    }
    let Ok(form) = serde_urlencoded_form::<LoginForm>(&body) else {
        return login_page(&shared, StatusCode::BAD_REQUEST, "", None, &[Notice::bad("Give a name and a password.")]);
    };
    let name = form.name.trim().to_owned();
    let next = form.next.as_deref().and_then(safe_next).map(str::to_owned);
    if let Err(wait) = shared.limits.check_login(&name) {
        tracing::warn!(operator = %name, "console: login attempts over the limit");
        return login_page(
            &shared,
            StatusCode::TOO_MANY_REQUESTS,
            &name,
            next.as_deref(),
            &[Notice::bad(format!("Too many login attempts: wait {wait} seconds and try again."))],
        );
    }
    let hash = match shared.store.operator_hash(&name).await {
        Ok(h) => h,
        Err(e) => return session::unavailable(&e),
    };
    // argon2 is CPU work: off the async threads.
    let password = form.password;
    let ok = tokio::task::spawn_blocking(move || verify_password(&password, hash.as_ref())).await.unwrap_or(false);
    if !ok {
        tracing::info!(operator = %name, "console: failed login");
        return login_page(
            &shared,
            StatusCode::UNAUTHORIZED,
            &name,
            next.as_deref(),
            &[Notice::bad("Wrong name or password.")],
        );
    }
    let id = match shared.open_session(&name).await {
        Ok(id) => id,
        Err(e) => return session::unavailable(&e),
    };
    tracing::info!(operator = %name, "console: logged in");
    let clear_login = set_cookie(LOGIN_COOKIE, "", "/console/login", "Strict", Some(0), shared.config.secure_cookies);
    let mut response = Redirect::to(next.as_deref().unwrap_or("/console")).into_response();
    response.headers_mut().append(header::SET_COOKIE, shared.session_cookie(&id));
    response.headers_mut().append(header::SET_COOKIE, clear_login);
    response
}

fn serde_urlencoded_form<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ()> {
    let pairs: Vec<(String, String)> = url::form_urlencoded::parse(body).into_owned().collect();
    let value = serde_json::Value::Object(pairs.into_iter().map(|(k, v)| (k, serde_json::Value::String(v))).collect());
    serde_json::from_value(value).map_err(|_| ())
}

/// `POST /console/logout`: ends the session (CSRF-checked, so no page can log an operator out).
pub(crate) async fn logout(
    State(shared): State<Arc<ConsoleShared>>,
    posted: Posted<Vec<(String, String)>>,
) -> Response {
    if let Err(e) = shared.store.delete_session(posted.operator.session_hash()).await {
        return session::unavailable(&e);
    }
    tracing::info!(operator = %posted.operator.name(), "console: logged out");
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().append(header::SET_COOKIE, shared.clear_session_cookie());
    response
}
