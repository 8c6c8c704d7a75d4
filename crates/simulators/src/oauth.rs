//! The authorisation-code half of the simulated OAuth servers, shared by the Sage and Xero
//! simulators: the authorize endpoint's approval page, the approval that redirects back with a
//! code and the `state` echoed, and the rules the token endpoint applies to a code (single use,
//! 60 seconds on the simulator's clock, the same `redirect_uri`, PKCE S256 when a challenge was
//! sent).

use std::collections::HashMap;

use base64::Engine as _;
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::{SimRequest, SimResponse};

/// How long a code is exchangeable (Sage documents 60 seconds; the simulators use it for both).
pub const CODE_LIFETIME_SECS: i64 = 60;

/// An authorisation code handed out.
#[derive(Debug, Clone)]
pub(crate) struct CodeGrant {
    pub(crate) used: bool,
    /// When it was issued; `None` for a code registered by a test (no expiry).
    pub(crate) issued_at: Option<DateTime<Utc>>,
    /// The `redirect_uri` of the authorisation; `None`: not checked.
    pub(crate) redirect_uri: Option<String>,
    /// The PKCE S256 challenge, when one was sent.
    pub(crate) challenge: Option<String>,
}

impl CodeGrant {
    /// A code a test registered by hand: single use, no expiry, no redirect check.
    pub(crate) fn registered() -> Self {
        Self { used: false, issued_at: None, redirect_uri: None, challenge: None }
    }
}

fn param<'a>(req: &'a SimRequest, key: &str) -> &'a str {
    req.query.iter().find(|(k, _)| k == key).map_or("", |(_, v)| v.as_str())
}

fn html(status: u16, body: String) -> SimResponse {
    SimResponse {
        status,
        headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
        body: Value::String(body),
    }
}

fn oauth_error(status: u16, error: &str, description: &str) -> SimResponse {
    SimResponse { status, headers: Vec::new(), body: json!({"error": error, "error_description": description}) }
}

/// `GET <authorize>`: the approval page, or a 400 page naming what is wrong with the request.
/// `requires_pkce`: Xero's simulator refuses an authorisation without an S256 challenge.
pub(crate) fn approval_page(req: &SimRequest, client_id: &str, who: &str, requires_pkce: bool) -> SimResponse {
    let q = |k: &str| param(req, k);
    let problem = if q("response_type") != "code" {
        Some("response_type must be `code`")
    } else if q("client_id") != client_id {
        Some("unknown client_id")
    } else if url::Url::parse(q("redirect_uri")).is_err() {
        Some("redirect_uri is missing or not a URL")
    } else if q("state").is_empty() {
        Some("state is missing")
    } else if requires_pkce && (q("code_challenge").is_empty() || q("code_challenge_method") != "S256") {
        Some("a PKCE code_challenge with code_challenge_method=S256 is required")
    } else {
        None
    };
    if let Some(p) = problem {
        return html(
            400,
            format!("<!doctype html><title>{who}: bad request</title><p>{}</p>", html_escape::encode_text(p)),
        );
    }
    let mut approve = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in &req.query {
        approve.append_pair(k, v);
    }
    let href = format!("{}/approve?{}", req.path.trim_end_matches('/'), approve.finish());
    html(
        200,
        format!(
            "<!doctype html><title>{who}: authorise</title>\n<h1>{who}</h1>\n<p>The app <code>{}</code> asks to connect to your business ({}).</p>\n<p><a id=\"approve\" href=\"{}\">Approve</a> <a id=\"deny\" href=\"{}\">Deny</a></p>\n",
            html_escape::encode_text(client_id),
            html_escape::encode_text(q("scope")),
            html_escape::encode_double_quoted_attribute(&href),
            html_escape::encode_double_quoted_attribute(&href.replacen("/approve?", "/deny?", 1)),
        ),
    )
}

/// `GET <authorize>/approve` or `/deny`: the redirect back to `redirect_uri`, with `code`
/// (`code_prefix` in front: Sage's `GB/`) and the `state` echoed, or `error=access_denied`.
/// Records the code in `codes`. `extra` are more callback parameters (Sage's `country`).
pub(crate) fn approve(
    req: &SimRequest,
    codes: &mut HashMap<String, CodeGrant>,
    code: String,
    now: DateTime<Utc>,
    extra: &[(&str, &str)],
) -> SimResponse {
    let q = |k: &str| param(req, k).to_owned();
    let Ok(mut back) = url::Url::parse(&q("redirect_uri")) else {
        return html(400, "<p>redirect_uri is missing or not a URL</p>".into());
    };
    if req.path.trim_end_matches('/').ends_with("/deny") {
        back.query_pairs_mut().append_pair("error", "access_denied").append_pair("state", &q("state"));
    } else {
        let challenge = Some(q("code_challenge")).filter(|c| !c.is_empty());
        codes.insert(
            code.clone(),
            CodeGrant { used: false, issued_at: Some(now), redirect_uri: Some(q("redirect_uri")), challenge },
        );
        back.query_pairs_mut().append_pair("code", &code).append_pair("state", &q("state"));
        for (k, v) in extra {
            back.query_pairs_mut().append_pair(k, v);
        }
    }
    SimResponse { status: 302, headers: vec![("location".into(), back.to_string())], body: Value::Null }
}

/// The token endpoint's `authorization_code` grant: `Ok(())` when `form`'s code may be exchanged
/// (and marks it used), else the OAuth error answer.
pub(crate) fn redeem(
    codes: &mut HashMap<String, CodeGrant>,
    form: &HashMap<String, String>,
    now: DateTime<Utc>,
) -> Result<(), SimResponse> {
    let get = |k: &str| form.get(k).map(String::as_str).unwrap_or("");
    let Some(grant) = codes.get_mut(get("code")) else {
        return Err(oauth_error(400, "invalid_grant", "unknown authorization code"));
    };
    if grant.used {
        return Err(oauth_error(400, "invalid_grant", "authorization code already used"));
    }
    if grant.issued_at.is_some_and(|t| now - t >= chrono::Duration::seconds(CODE_LIFETIME_SECS)) {
        grant.used = true;
        return Err(oauth_error(400, "invalid_grant", "authorization code expired"));
    }
    if grant.redirect_uri.as_deref().is_some_and(|r| r != get("redirect_uri")) {
        return Err(oauth_error(400, "invalid_grant", "Invalid redirect_uri: it does not match the authorization"));
    }
    if let Some(challenge) = &grant.challenge {
        let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(get("code_verifier")));
        if get("code_verifier").is_empty() || computed != *challenge {
            return Err(oauth_error(400, "invalid_grant", "code_verifier does not match the code_challenge"));
        }
    }
    grant.used = true;
    Ok(())
}
