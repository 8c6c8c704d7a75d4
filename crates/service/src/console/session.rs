//! Sessions, the operator extractor and CSRF.
//!
//! - **Session.** Logging in makes a 256-bit random session id, sent once in the
//!   `byte8_console` cookie (`HttpOnly`, `SameSite=Strict`, `Path=/`, `Secure` unless the
//!   console is served on loopback, [`ConsoleConfig::secure_cookies`](super::ConsoleConfig::secure_cookies)).
//!   The store keeps only its SHA-256 ([`ConsoleStore`](super::store::ConsoleStore)), so a copy
//!   of the database opens no session. A session ends after
//!   [`ConsoleConfig::session_idle`](super::ConsoleConfig::session_idle) without a request, after
//!   [`ConsoleConfig::session_lifetime`](super::ConsoleConfig::session_lifetime) in any case, at
//!   logout, and when the operator's password is set again.
//! - **[`Operator`]**, an axum extractor, is what every console handler takes: without a live
//!   session a request is redirected (303) to `/console/login?next=…`.
//! - **CSRF.** Every `POST` form carries `csrf_token`: HMAC-SHA256 of a fixed label keyed by the
//!   session id, so it is tied to the session, needs no storage and reveals nothing of the id.
//!   [`Posted`] checks it (constant time) before the handler runs and answers 403 when it is
//!   missing or wrong. The login form, which has no session yet, uses a double-submit token: a
//!   random value in a `SameSite=Strict` cookie that the form must repeat.

use std::{fmt, sync::Arc};

use axum::{
    body::{Body, Bytes},
    extract::{FromRequest, FromRequestParts, Request},
    http::{HeaderMap, HeaderValue, StatusCode, header, request::Parts},
    response::{IntoResponse, Redirect, Response},
};
use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use hmac::{Hmac, Mac};
use maud::html;
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use super::{ConsoleShared, layout};
use crate::store::keys::{fill_random, hex_lower};
use byte8_ledger_core::error::Result;

/// The session cookie's name.
pub(crate) const SESSION_COOKIE: &str = "byte8_console";
/// The login form's double-submit cookie.
pub(crate) const LOGIN_COOKIE: &str = "byte8_console_login";
/// The name of the CSRF field of every form.
pub(crate) const CSRF_FIELD: &str = "csrf_token";
/// The largest form body the console reads.
const MAX_FORM: usize = 256 * 1024;

/// A fresh 256-bit random token, base64url.
pub(crate) fn random_token() -> Result<SecretString> {
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    fill_random(bytes.as_mut())?;
    Ok(SecretString::from(B64.encode(bytes.as_ref())))
}

/// The store key of a session id: its SHA-256, hex.
pub(crate) fn session_hash(id: &str) -> String {
    hex_lower(&Sha256::digest(id.as_bytes()))
}

/// The CSRF token of session `id`.
fn csrf_of(id: &SecretString) -> SecretString {
    // HMAC accepts keys of any length: new_from_slice cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(id.expose_secret().as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(b"byte8-ledger:console:csrf:v1");
    SecretString::from(B64.encode(mac.finalize().into_bytes()))
}

/// The value of cookie `name` in `headers` (the first one).
pub(crate) fn cookie(headers: &HeaderMap, name: &str) -> Option<SecretString> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| SecretString::from(v.trim_matches('"').to_owned()))
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite` as given, `Secure` when `secure`; `max_age`
/// `Some(0)` deletes the cookie, `None` makes it last as long as the browser.
pub(crate) fn set_cookie(
    name: &str,
    value: &str,
    path: &str,
    same_site: &str,
    max_age: Option<u64>,
    secure: bool,
) -> HeaderValue {
    let mut text = format!("{name}={value}; Path={path}; HttpOnly; SameSite={same_site}");
    if let Some(age) = max_age {
        text.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        text.push_str("; Secure");
    }
    // Cookie values here are base64url or empty, names and paths constants: always valid.
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// A logged-in operator: what every console handler takes. Extracting it renews the session;
/// without a live session the request is redirected to the login page.
pub struct Operator {
    name: String,
    session_hash: String,
    csrf: SecretString,
}

impl fmt::Debug for Operator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operator").field("name", &self.name).finish_non_exhaustive()
    }
}

impl Operator {
    /// The operator's login name (what the policy history records as "who").
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The session's CSRF token (for [`layout::csrf_field`]).
    pub(crate) fn csrf_token(&self) -> &str {
        self.csrf.expose_secret()
    }

    /// The store key of the session (binds the OAuth `state` to it).
    pub(crate) fn session_hash(&self) -> &str {
        &self.session_hash
    }

    fn csrf_matches(&self, presented: &str) -> bool {
        super::super::magento::pairing::constant_time_eq(self.csrf.expose_secret(), presented)
    }
}

/// Where a request without a session goes: the login page, coming back to a console page
/// afterwards (only a local path is ever kept: no open redirect).
pub(crate) fn login_redirect(parts: &Parts) -> Response {
    let target = parts.uri.path_and_query().map_or("/console", |p| p.as_str());
    let next = safe_next(target).unwrap_or("/console");
    let query = url::form_urlencoded::Serializer::new(String::new()).append_pair("next", next).finish();
    Redirect::to(&format!("/console/login?{query}")).into_response()
}

/// `next` when it is a local console path (starts with `/console`, `/connect/` or `/oauth/`, no
/// `//`, no backslash, no control character).
pub(crate) fn safe_next(next: &str) -> Option<&str> {
    let local = next.starts_with("/console") || next.starts_with("/connect/");
    (local && !next.contains("//") && !next.contains('\\') && !next.chars().any(char::is_control)).then_some(next)
}

/// The answer to a store failure while checking a session: 503, try again.
pub(crate) fn unavailable(e: &byte8_ledger_core::error::Error) -> Response {
    tracing::warn!(error = %e, "console: the store failed");
    let body = layout::bare(
        "Service unavailable",
        &[layout::Notice::bad("The state database cannot be reached just now: try again in a moment.")],
        html! {},
    );
    (StatusCode::SERVICE_UNAVAILABLE, body).into_response()
}

impl ConsoleShared {
    /// The operator of the request's session cookie, renewing the session; `None` when there is
    /// no cookie or its session has ended.
    pub(crate) async fn operator(&self, headers: &HeaderMap) -> Result<Option<Operator>> {
        let Some(id) = cookie(headers, SESSION_COOKIE) else { return Ok(None) };
        if id.expose_secret().is_empty() {
            return Ok(None);
        }
        let hash = session_hash(id.expose_secret());
        let now = self.now();
        let renew = now + self.config.session_idle_chrono();
        let Some(record) = self.store.use_session(&hash, now, renew).await? else { return Ok(None) };
        Ok(Some(Operator { name: record.operator, session_hash: hash, csrf: csrf_of(&id) }))
    }

    /// Opens a session for `operator`: the session id (for the cookie) and its record stored.
    pub(crate) async fn open_session(&self, operator: &str) -> Result<SecretString> {
        let id = random_token()?;
        let now = self.now();
        let record = super::store::SessionRecord {
            operator: operator.to_owned(),
            created_at: now,
            expires_at: now + self.config.session_idle_chrono(),
            absolute_expires_at: now + self.config.session_lifetime_chrono(),
        };
        self.store.create_session(&session_hash(id.expose_secret()), &record).await?;
        Ok(id)
    }

    /// The session cookie carrying `id` (a browser-session cookie: the server ends it).
    pub(crate) fn session_cookie(&self, id: &SecretString) -> HeaderValue {
        set_cookie(SESSION_COOKIE, id.expose_secret(), "/", "Strict", None, self.config.secure_cookies)
    }

    /// The header that deletes the session cookie.
    pub(crate) fn clear_session_cookie(&self) -> HeaderValue {
        set_cookie(SESSION_COOKIE, "", "/", "Strict", Some(0), self.config.secure_cookies)
    }
}

impl FromRequestParts<Arc<ConsoleShared>> for Operator {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, shared: &Arc<ConsoleShared>) -> Result<Self, Response> {
        match shared.operator(&parts.headers).await {
            Ok(Some(operator)) => Ok(operator),
            Ok(None) => Err(login_redirect(parts)),
            Err(e) => Err(unavailable(&e)),
        }
    }
}

/// The 403 of a form whose CSRF token is missing or wrong.
pub(crate) fn csrf_refused() -> Response {
    let body = layout::bare(
        "Form refused",
        &[layout::Notice::bad(
            "This form was not sent from this console session (its security token is missing, stale or wrong). \
             Go back, reload the page and try again.",
        )],
        html! { p { a href="/console" { "Back to the console" } } },
    );
    (StatusCode::FORBIDDEN, body).into_response()
}

/// A `POST`ed form of a logged-in operator whose CSRF token checked: the session is required
/// first (login redirect), then the token (403), then the body is read as `T`
/// (`application/x-www-form-urlencoded`; 400 when it does not read). `T` may be
/// `Vec<(String, String)>` to keep every pair (repeated fields).
#[derive(Debug)]
pub struct Posted<T> {
    /// Who sent it.
    pub operator: Operator,
    /// The form.
    pub form: T,
}

impl<T: DeserializeOwned + Send> FromRequest<Arc<ConsoleShared>> for Posted<T> {
    type Rejection = Response;

    async fn from_request(req: Request, shared: &Arc<ConsoleShared>) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let operator = Operator::from_request_parts(&mut parts, shared).await?;
        let bytes = axum::body::to_bytes(body, MAX_FORM)
            .await
            .map_err(|_| (StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response())?;
        if !csrf_in(&bytes).is_some_and(|t| operator.csrf_matches(&t)) {
            tracing::warn!(operator = %operator.name, path = %parts.uri.path(), "console: CSRF check failed");
            return Err(csrf_refused());
        }
        let form = axum::Form::<T>::from_request(Request::from_parts(parts, Body::from(bytes)), &())
            .await
            .map_err(IntoResponse::into_response)?
            .0;
        Ok(Self { operator, form })
    }
}

/// The `csrf_token` field of a form body.
pub(crate) fn csrf_in(body: &Bytes) -> Option<String> {
    url::form_urlencoded::parse(body).find(|(k, _)| k == CSRF_FIELD).map(|(_, v)| v.into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_csrf_token_depends_on_the_session_and_reveals_it_not() {
        let a = SecretString::from("session-a".to_owned());
        let b = SecretString::from("session-b".to_owned());
        assert_eq!(csrf_of(&a).expose_secret(), csrf_of(&a).expose_secret());
        assert_ne!(csrf_of(&a).expose_secret(), csrf_of(&b).expose_secret());
        assert!(!csrf_of(&a).expose_secret().contains("session-a"));
        assert_eq!(session_hash("x"), "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881");
    }

    #[test]
    fn only_local_console_paths_are_kept_as_next() {
        assert_eq!(safe_next("/console/policy?tenant=t"), Some("/console/policy?tenant=t"));
        assert_eq!(safe_next("/connect/sage?business=b"), Some("/connect/sage?business=b"));
        for bad in
            ["//evil.example/console", "https://evil.example/console", "/console/..\\x", "/elsewhere", "/console\n"]
        {
            assert_eq!(safe_next(bad), None, "{bad}");
        }
    }

    #[test]
    fn cookies_are_read_by_name_and_set_with_their_attributes() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; byte8_console=abc; b=2"));
        assert_eq!(cookie(&h, SESSION_COOKIE).unwrap().expose_secret(), "abc");
        assert!(cookie(&h, "missing").is_none());
        let set = set_cookie(SESSION_COOKIE, "v", "/", "Strict", None, true);
        assert_eq!(set.to_str().unwrap(), "byte8_console=v; Path=/; HttpOnly; SameSite=Strict; Secure");
        let gone = set_cookie(SESSION_COOKIE, "", "/", "Strict", Some(0), false);
        assert_eq!(gone.to_str().unwrap(), "byte8_console=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    }
}
