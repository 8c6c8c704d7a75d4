//! Connecting a business as a person does: the OAuth 2.0 authorisation-code flow against Sage
//! Business Cloud Accounting or Xero, and what follows it (listing what the token reaches,
//! revoking, watching the refresh token's remaining life).
//!
//! The pieces, in the order a connect uses them:
//!
//! 1. [`OAuthApp`]: one registered app (client id and secret, the `redirect_uri` registered with
//!    the provider) and the provider's endpoints, each overridable (the simulators, a proxy).
//! 2. [`OAuthApp::authorize`] builds the authorize URL with a `state` and, for Xero, PKCE
//!    ([`Pkce`], S256). The state is either a random one ([`random_state`]; the command line keeps
//!    it in memory and compares it once) or a [`StateSigner`]'s signed, expiring one bound to a
//!    session (a service, which keeps nothing between the redirect and the callback; a
//!    [`StateReplayGuard`] refuses a state used twice).
//! 3. [`Callback::parse`] reads the provider's redirect back (`code`, `state`, Sage's `country`,
//!    or the `error` the provider sent instead).
//! 4. [`OAuthApp::exchange_code`] exchanges the code at once (Sage's lives 60 seconds) — passed
//!    through verbatim, country prefix (`GB/…`) included — with the PKCE verifier for Xero.
//! 5. [`OAuthApp::businesses`] lists what the token reaches: Sage's `GET /businesses`, Xero's
//!    `GET /connections` (organisations only). The caller stores the one the person picks:
//!    [`OAuthApp::connection`] gives the [`Connection`](crate::store::Connection) to save, then
//!    the [`TokenSet`] is saved under its scope
//!    ([`ConnectionStore`](crate::store::ConnectionStore)); a Magento store waiting on that
//!    business starts syncing once both are there.
//! 6. [`OAuthApp::revoke`] on disconnect, and [`refresh_token_health`] for `status` and health.
//!
//! # Choices where the sources disagree or say nothing
//!
//! - **Sage `GET /businesses`**: the OpenAPI file (`sage/openapi-v3.1-core-user-business.json`)
//!   declares a bare array; sage-api.md 2.2 describes the usual `$items` envelope. Both shapes
//!   are read.
//! - **Sage revocation** (`POST https://oauth.accounting.sage.com/revoke`, form `token`,
//!   `client_id`, `client_secret`) is UNCONFIRMED (sage-api.md 2.1: one third-party client uses
//!   it). It is tried; any failure is reported as [`Revocation::NotRevoked`] ("deleted locally,
//!   not revoked"), never as an error.
//! - **Xero revocation** revokes the refresh token and with it *every* organisation the user
//!   connected to the app (xero-api.md 2.1, 2.6). So [`OAuthApp::revoke`] uses
//!   `DELETE /connections/{id}` when the token reaches other organisations too, and the
//!   revocation endpoint when the one being disconnected is the only one.
//! - **Refresh-token life**: the `refresh_token_expires_in` the endpoint returns when it does
//!   (Sage does: 31 days), else the documented life counted from the pair's
//!   [`issued_at`](TokenSet::issued_at): Sage 31 days unused (sage-api.md 2.1), Xero 60 days
//!   (xero-api.md 2.2, which also reports an older "30 days"; Xero staff and 2026 sources say 60).
//! - **Xero scopes**: the granular ones xero-api.md 2.3 lists as needed (`offline_access` for a
//!   refresh token, `accounting.contacts accounting.invoices accounting.payments
//!   accounting.settings`); an app created before 2026-03-02 may use the broad ones instead
//!   ([`OAuthApp::with_scopes`]).
//!
//! # Secrets
//!
//! Client secrets, codes, PKCE verifiers, tokens and the state key are [`SecretString`]s (or a
//! [`SecretSlice`]): no `Debug`, log line, error or printed URL shows one (tested below). The
//! authorize URL carries no secret (the PKCE *challenge* is a hash).

use std::{collections::HashMap, fmt, time::Duration};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD as B64};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use rand::RngCore as _;
use secrecy::{ExposeSecret, SecretSlice, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;
use url::Url;

use super::{ClientAuth, OAuthClient, TokenSet};
use crate::{
    error::{AuthFailure, Error, Result},
    store::ProviderKind,
};

/// Sage's authorize endpoint, with the filter that selects API v3.1 (sage-api.md 2.1).
pub const SAGE_AUTHORIZE_URL: &str = "https://www.sageone.com/oauth2/auth/central?filter=apiv3.1";
/// Sage's token endpoint.
pub const SAGE_TOKEN_URL: &str = crate::providers::sage::DEFAULT_TOKEN_URL;
/// Sage's revocation endpoint (UNCONFIRMED, sage-api.md 2.1).
pub const SAGE_REVOKE_URL: &str = "https://oauth.accounting.sage.com/revoke";
/// Sage's API root, where `GET /businesses` lists the businesses a token reaches.
pub const SAGE_API_URL: &str = crate::providers::sage::DEFAULT_BASE_URL;
/// The scope Sage grants (`full_access`).
pub const SAGE_SCOPE: &str = "full_access";

/// Xero's authorize endpoint (xero-api.md 2.1).
pub const XERO_AUTHORIZE_URL: &str = "https://login.xero.com/identity/connect/authorize";
/// Xero's token endpoint.
pub const XERO_TOKEN_URL: &str = "https://identity.xero.com/connect/token";
/// Xero's revocation endpoint: revokes the refresh token and every organisation of its grant.
pub const XERO_REVOKE_URL: &str = "https://identity.xero.com/connect/revocation";
/// Xero's connections endpoint (the organisations a token reaches).
pub const XERO_CONNECTIONS_URL: &str = "https://api.xero.com/connections";
/// The Xero scopes asked for by default (xero-api.md 2.3: granular scopes, `offline_access`
/// for a refresh token).
pub const XERO_SCOPES: &str =
    "offline_access accounting.contacts accounting.invoices accounting.payments accounting.settings";

/// A Sage refresh token's life when unused (sage-api.md 2.1: 31 days).
pub const SAGE_REFRESH_TOKEN_LIFE: Duration = Duration::from_secs(31 * 24 * 3600);
/// A Xero refresh token's life when unused (xero-api.md 2.2: 60 days).
pub const XERO_REFRESH_TOKEN_LIFE: Duration = Duration::from_secs(60 * 24 * 3600);

/// The documented life of `kind`'s refresh tokens when unused.
pub fn documented_refresh_life(kind: ProviderKind) -> Duration {
    match kind {
        ProviderKind::Sage => SAGE_REFRESH_TOKEN_LIFE,
        ProviderKind::Xero => XERO_REFRESH_TOKEN_LIFE,
    }
}

/// A random `state` for one authorisation: 32 bytes from the operating system's generator,
/// base64url (43 characters). The command line keeps it in memory and compares it once.
pub fn random_state() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    B64.encode(bytes)
}

/// Compares two strings in constant time (a `state` against the one sent).
pub fn same_state(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A PKCE pair (RFC 7636, method S256): the verifier stays secret until the code exchange, the
/// challenge goes in the authorize URL.
#[derive(Clone)]
pub struct Pkce {
    verifier: SecretString,
    challenge: String,
}

impl Pkce {
    /// A fresh pair: a 64-character verifier from 48 random bytes, and its S256 challenge.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 48];
        rand::rng().fill_bytes(&mut bytes);
        Self::from_verifier(SecretString::from(B64.encode(bytes)))
    }

    /// The pair of a known verifier (a service that kept the verifier between the redirect and
    /// the callback).
    pub fn from_verifier(verifier: SecretString) -> Self {
        let challenge = B64.encode(Sha256::digest(verifier.expose_secret().as_bytes()));
        Self { verifier, challenge }
    }

    /// The verifier (sent with the code exchange only).
    pub fn verifier(&self) -> &SecretString {
        &self.verifier
    }

    /// The S256 challenge: base64url of the verifier's SHA-256, unpadded.
    pub fn challenge(&self) -> &str {
        &self.challenge
    }
}

impl fmt::Debug for Pkce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pkce").field("challenge", &self.challenge).finish_non_exhaustive()
    }
}

/// An authorize URL to send the person to, and what the callback is checked against.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest {
    /// The URL (no secret in it: print it, open it in a browser).
    pub url: Url,
    /// The `state` in the URL; the callback must bring it back.
    pub state: String,
    /// Xero's PKCE pair, whose verifier the code exchange needs.
    pub pkce: Option<Pkce>,
}

/// What the provider's redirect back to `redirect_uri` brought.
pub struct Callback {
    /// The authorisation code, verbatim (Sage's carries a country prefix such as `GB/`).
    pub code: SecretString,
    /// The `state` echoed back.
    pub state: String,
    /// Sage's `country` parameter, when present.
    pub country: Option<String>,
}

impl fmt::Debug for Callback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Callback").field("state", &self.state).field("country", &self.country).finish_non_exhaustive()
    }
}

impl Callback {
    /// Reads the query string of the redirect (without the `?`).
    ///
    /// # Errors
    /// [`AuthFailure::AccessDenied`] with the provider's words when it sent an `error` (the
    /// person declined; Sage's `error=Invalid request&reason=…` for a country mismatch);
    /// [`Error::Invalid`] naming the missing parameter otherwise.
    pub fn parse(provider: ProviderKind, query: &str) -> Result<Self> {
        let params: HashMap<String, String> = url::form_urlencoded::parse(query.as_bytes()).into_owned().collect();
        if let Some(error) = params.get("error") {
            let detail = params.get("error_description").or_else(|| params.get("reason"));
            let hint = if error == "access_denied" {
                "the authorisation was declined at the provider: run connect again and approve it"
            } else {
                "run connect again; for Sage, sign in with the business's own login (not the developer portal's) and pick the business's country"
            };
            return Err(Error::Auth {
                provider: provider.as_str(),
                reason: AuthFailure::AccessDenied,
                message: format!(
                    "the provider answered the authorisation with an error ({error}{}): {hint}",
                    detail.map(|d| format!(": {d}")).unwrap_or_default()
                ),
            });
        }
        let code = params.get("code").filter(|c| !c.is_empty()).ok_or_else(|| {
            Error::invalid("OAuth callback", "code", "the redirect carries no `code`: run connect again")
        })?;
        let state = params.get("state").filter(|s| !s.is_empty()).ok_or_else(|| {
            Error::invalid("OAuth callback", "state", "the redirect carries no `state`: run connect again")
        })?;
        Ok(Self {
            code: SecretString::from(code.clone()),
            state: state.clone(),
            country: params.get("country").cloned(),
        })
    }
}

/// A business or organisation an access token reaches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ReachableBusiness {
    /// What the connection is stored under: Sage's business id, Xero's `tenantId`.
    pub id: String,
    /// Its name, as the provider gives it.
    pub name: String,
    /// Xero's connection id (what `DELETE /connections/{id}` takes); `None` for Sage.
    pub connection_id: Option<String>,
}

/// Whether the provider confirmed a revocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revocation {
    /// The provider confirmed it; says what was revoked.
    Revoked(String),
    /// It could not be confirmed: the tokens are forgotten locally, but the grant may live on at
    /// the provider until it expires or the person removes the app there. Says why.
    NotRevoked(String),
}

impl Revocation {
    /// True when the provider confirmed it.
    pub fn confirmed(&self) -> bool {
        matches!(self, Self::Revoked(_))
    }
}

impl fmt::Display for Revocation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Revoked(what) => write!(f, "revoked at the provider: {what}"),
            Self::NotRevoked(why) => write!(f, "deleted locally, not revoked at the provider: {why}"),
        }
    }
}

/// One app registered with Sage or Xero, and the provider's endpoints.
#[derive(Clone)]
pub struct OAuthApp {
    kind: ProviderKind,
    client_id: String,
    client_secret: SecretString,
    redirect_uri: String,
    authorize_url: Url,
    token_url: Url,
    revoke_url: Option<Url>,
    api_url: Url,
    scopes: String,
    http: reqwest::Client,
}

impl fmt::Debug for OAuthApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthApp")
            .field("provider", &self.kind)
            .field("client_id", &self.client_id)
            .field("redirect_uri", &self.redirect_uri)
            .field("authorize_url", &self.authorize_url.as_str())
            .field("token_url", &self.token_url.as_str())
            .field("api_url", &self.api_url.as_str())
            .finish_non_exhaustive()
    }
}

fn parse_url(field: &str, value: &str) -> Result<Url> {
    let url = Url::parse(value).map_err(|e| Error::config(field, format!("`{value}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Error::config(field, format!("`{value}` is not an http(s) URL")));
    }
    Ok(url)
}

impl OAuthApp {
    /// An app of `kind` with the provider's real endpoints.
    ///
    /// # Errors
    /// [`Error::Config`] when `redirect_uri` is not an http(s) URL, or the client id is empty.
    pub fn new(
        kind: ProviderKind,
        client_id: impl Into<String>,
        client_secret: SecretString,
        redirect_uri: impl Into<String>,
    ) -> Result<Self> {
        let client_id = client_id.into();
        let redirect_uri = redirect_uri.into();
        if client_id.trim().is_empty() {
            return Err(Error::config("client_id", "is empty: give the app's client id"));
        }
        parse_url("redirect_uri", &redirect_uri)?;
        let (authorize, token, api, scopes) = match kind {
            ProviderKind::Sage => (SAGE_AUTHORIZE_URL, SAGE_TOKEN_URL, SAGE_API_URL, SAGE_SCOPE),
            ProviderKind::Xero => (XERO_AUTHORIZE_URL, XERO_TOKEN_URL, XERO_CONNECTIONS_URL, XERO_SCOPES),
        };
        Ok(Self {
            kind,
            client_id,
            client_secret,
            redirect_uri,
            authorize_url: parse_url("authorize_url", authorize)?,
            token_url: parse_url("token_url", token)?,
            revoke_url: None,
            api_url: parse_url("api_url", api)?,
            scopes: scopes.to_owned(),
            http: reqwest::Client::new(),
        })
    }

    /// The authorize endpoint (a simulator's). Query parameters already in it (Sage's
    /// `filter=apiv3.1`) are kept.
    ///
    /// # Errors
    /// [`Error::Config`] when it is not an http(s) URL.
    pub fn with_authorize_url(mut self, url: &str) -> Result<Self> {
        self.authorize_url = parse_url("authorize_url", url)?;
        Ok(self)
    }

    /// The token endpoint.
    ///
    /// # Errors
    /// [`Error::Config`] when it is not an http(s) URL.
    pub fn with_token_url(mut self, url: &str) -> Result<Self> {
        self.token_url = parse_url("token_url", url)?;
        Ok(self)
    }

    /// The revocation endpoint. By default it sits beside the token endpoint (`…/revoke` for
    /// Sage, `…/revocation` for Xero), which gives the documented URLs for the real endpoints
    /// and the simulators' for theirs.
    ///
    /// # Errors
    /// [`Error::Config`] when it is not an http(s) URL.
    pub fn with_revoke_url(mut self, url: &str) -> Result<Self> {
        self.revoke_url = Some(parse_url("revoke_url", url)?);
        Ok(self)
    }

    /// Where the reachable businesses are listed: Sage's API root (`…/v3.1`, whose
    /// `/businesses` is read) or Xero's connections endpoint.
    ///
    /// # Errors
    /// [`Error::Config`] when it is not an http(s) URL.
    pub fn with_api_url(mut self, url: &str) -> Result<Self> {
        self.api_url = parse_url("api_url", url)?;
        Ok(self)
    }

    /// The scopes asked for, space-separated (Xero; Sage's is always `full_access`).
    #[must_use]
    pub fn with_scopes(mut self, scopes: impl Into<String>) -> Self {
        self.scopes = scopes.into();
        self
    }

    /// The HTTP client to use.
    #[must_use]
    pub fn with_http_client(mut self, http: reqwest::Client) -> Self {
        self.http = http;
        self
    }

    /// The provider.
    pub fn kind(&self) -> ProviderKind {
        self.kind
    }

    /// The registered `redirect_uri` this app sends and exchanges with.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// The token endpoint.
    pub fn token_url(&self) -> &Url {
        &self.token_url
    }

    /// Where the reachable businesses are listed (see [`with_api_url`](Self::with_api_url)).
    pub fn api_url(&self) -> &Url {
        &self.api_url
    }

    /// The revocation endpoint in use.
    pub fn revoke_url(&self) -> Url {
        self.revoke_url.clone().unwrap_or_else(|| {
            let name = match self.kind {
                ProviderKind::Sage => "revoke",
                ProviderKind::Xero => "revocation",
            };
            self.token_url.join(name).unwrap_or_else(|_| self.token_url.clone())
        })
    }

    /// A client of the token endpoint (code exchange, refresh), authenticating as the provider
    /// wants: Sage in the form body, Xero with HTTP Basic.
    pub fn oauth_client(&self) -> OAuthClient {
        let auth = match self.kind {
            ProviderKind::Sage => ClientAuth::Body,
            ProviderKind::Xero => ClientAuth::Basic,
        };
        OAuthClient::new(
            self.http.clone(),
            self.token_url.clone(),
            self.client_id.clone(),
            self.client_secret.clone(),
            auth,
            self.kind.as_str(),
        )
    }

    /// The authorize URL for `state`: Sage's with `response_type=code`, `client_id`,
    /// `redirect_uri`, `scope=full_access` and `state`; Xero's with the same plus its scopes and
    /// a fresh PKCE S256 challenge (the returned [`Pkce`]'s verifier goes to
    /// [`exchange_code`](Self::exchange_code)).
    pub fn authorize(&self, state: impl Into<String>) -> AuthorizeRequest {
        let state = state.into();
        let pkce = (self.kind == ProviderKind::Xero).then(Pkce::generate);
        let url = self.authorize_url_with(&state, pkce.as_ref());
        AuthorizeRequest { url, state, pkce }
    }

    /// The authorize URL for `state` and an existing PKCE pair (`None`: no PKCE).
    pub fn authorize_url_with(&self, state: &str, pkce: Option<&Pkce>) -> Url {
        let mut url = self.authorize_url.clone();
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("response_type", "code")
                .append_pair("client_id", &self.client_id)
                .append_pair("redirect_uri", &self.redirect_uri)
                .append_pair(
                    "scope",
                    match self.kind {
                        ProviderKind::Sage => SAGE_SCOPE,
                        ProviderKind::Xero => &self.scopes,
                    },
                )
                .append_pair("state", state);
            if let Some(p) = pkce {
                q.append_pair("code_challenge", p.challenge()).append_pair("code_challenge_method", "S256");
            }
        }
        url
    }

    /// Exchanges the callback's code for a token pair, at once (Sage's code lives 60 seconds):
    /// the code verbatim (`GB/…`), the registered `redirect_uri`, and the PKCE verifier when the
    /// authorize URL had a challenge.
    ///
    /// # Errors
    /// As [`OAuthClient::exchange_code_pkce`]: "the code expired or was used already: run
    /// connect again", "redirect_uri must match the app's registration exactly", bad client
    /// credentials, network failures.
    pub async fn exchange_code(
        &self,
        code: &SecretString,
        pkce: Option<&Pkce>,
        now: DateTime<Utc>,
    ) -> Result<TokenSet> {
        self.oauth_client().exchange_code_pkce(code, &self.redirect_uri, pkce.map(Pkce::verifier), now).await
    }

    /// The [`Connection`](crate::store::Connection) to store for `business` (one of
    /// [`businesses`](Self::businesses)), posting to the API root `base_url` (Sage's `…/v3.1`,
    /// Xero's `…/api.xro/2.0`): its scope is the business id (Xero: the `tenantId`, also pinned
    /// as the tenant header), with this app's token endpoint and, for Xero, its connections
    /// endpoint. Store it, then the [`TokenSet`] under its scope.
    pub fn connection(
        &self,
        business: &ReachableBusiness,
        base_url: &str,
        now: DateTime<Utc>,
    ) -> crate::store::Connection {
        let xero = self.kind == ProviderKind::Xero;
        crate::store::Connection {
            scope: business.id.clone(),
            provider: self.kind.as_str().to_owned(),
            base_url: base_url.to_owned(),
            token_url: self.token_url.to_string(),
            created_at: now,
            tenant_id: xero.then(|| business.id.clone()),
            connections_url: xero.then(|| self.api_url.to_string()),
        }
    }

    /// The businesses (Sage) or organisations (Xero) `access_token` reaches.
    ///
    /// # Errors
    /// [`AuthFailure::TokenRejected`] on 401; [`Error::Provider`] for another failure or an
    /// answer that cannot be read (never quoting it); network errors.
    pub async fn businesses(&self, access_token: &SecretString) -> Result<Vec<ReachableBusiness>> {
        let url = match self.kind {
            ProviderKind::Sage => {
                let mut u = self.api_url.clone();
                u.path_segments_mut()
                    .map_err(|()| Error::config("api_url", "cannot hold a path"))?
                    .pop_if_empty()
                    .push("businesses");
                u.query_pairs_mut().append_pair("items_per_page", "200");
                u
            }
            ProviderKind::Xero => self.api_url.clone(),
        };
        let what = match self.kind {
            ProviderKind::Sage => "GET /businesses",
            ProviderKind::Xero => "GET /connections",
        };
        let (status, body) = self.send(self.http.get(url).bearer_auth(access_token.expose_secret()), what).await?;
        if status == 401 || status == 403 {
            return Err(Error::Auth {
                provider: self.kind.as_str(),
                reason: AuthFailure::TokenRejected,
                message: format!("{what} answered HTTP {status}: the new access token was refused; run connect again"),
            });
        }
        if !(200..300).contains(&status) {
            return Err(self.unexpected(what, status));
        }
        let unreadable = |e: serde_json::Error| Error::Provider {
            provider: self.kind.as_str(),
            status: Some(status),
            message: format!("{what} answered something unreadable (line {} column {})", e.line(), e.column()),
            retryable: false,
            source: None,
        };
        match self.kind {
            ProviderKind::Sage => {
                #[derive(Deserialize)]
                struct SageBusiness {
                    id: String,
                    #[serde(default)]
                    name: Option<String>,
                    #[serde(default)]
                    displayed_as: Option<String>,
                }
                #[derive(Deserialize)]
                #[serde(untagged)]
                enum Listing {
                    Bare(Vec<SageBusiness>),
                    Envelope {
                        #[serde(rename = "$items")]
                        items: Vec<SageBusiness>,
                    },
                }
                let listing: Listing = serde_json::from_slice(&body).map_err(unreadable)?;
                let items = match listing {
                    Listing::Bare(v) | Listing::Envelope { items: v } => v,
                };
                Ok(items
                    .into_iter()
                    .map(|b| ReachableBusiness {
                        name: b.name.or(b.displayed_as).unwrap_or_else(|| b.id.clone()),
                        id: b.id,
                        connection_id: None,
                    })
                    .collect())
            }
            ProviderKind::Xero => {
                #[derive(Deserialize)]
                #[serde(rename_all = "camelCase")]
                struct XeroConnection {
                    id: String,
                    tenant_id: String,
                    #[serde(default)]
                    tenant_type: Option<String>,
                    #[serde(default)]
                    tenant_name: Option<String>,
                }
                let list: Vec<XeroConnection> = serde_json::from_slice(&body).map_err(unreadable)?;
                Ok(list
                    .into_iter()
                    // A practice is not a ledger to post to.
                    .filter(|c| c.tenant_type.as_deref().is_none_or(|t| t.eq_ignore_ascii_case("ORGANISATION")))
                    .map(|c| ReachableBusiness {
                        name: c.tenant_name.unwrap_or_else(|| c.tenant_id.clone()),
                        id: c.tenant_id,
                        connection_id: Some(c.id),
                    })
                    .collect())
            }
        }
    }

    /// Revokes what connects `business_id` at the provider, as far as it documents revocation.
    ///
    /// - Sage: `POST /revoke` with the refresh token (UNCONFIRMED endpoint);
    /// - Xero: with a live access token, the organisations the token reaches are listed: when
    ///   others than `business_id` remain, only its connection is removed
    ///   (`DELETE /connections/{id}`); otherwise the refresh token is revoked
    ///   (`POST /connect/revocation`), which ends the grant. An expired access token is not
    ///   refreshed here (that would rotate a pair nobody keeps): the revocation endpoint is used.
    ///
    /// Never fails: whatever goes wrong is a [`Revocation::NotRevoked`] saying what, and the
    /// caller forgets the tokens locally in any case.
    pub async fn revoke(&self, tokens: &TokenSet, business_id: &str, now: DateTime<Utc>) -> Revocation {
        if tokens.refresh_token.expose_secret().is_empty() && tokens.access_token.expose_secret().is_empty() {
            return Revocation::NotRevoked("no token was stored".into());
        }
        if self.kind == ProviderKind::Xero && tokens.fresh_at(now, Duration::from_secs(30)) {
            match self.businesses(&tokens.access_token).await {
                Ok(list) => {
                    let mine = list.iter().find(|b| b.id == business_id);
                    let others = list.iter().any(|b| b.id != business_id);
                    if let (Some(b), true) = (mine, others)
                        && let Some(id) = &b.connection_id
                    {
                        return self.delete_connection(&tokens.access_token, id, business_id).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(provider = self.kind.as_str(), error = %e, "cannot list the Xero connections before revoking; revoking the refresh token")
                }
            }
        }
        self.revoke_refresh_token(&tokens.refresh_token).await
    }

    /// `DELETE /connections/{id}` (Xero): removes one organisation from the grant.
    pub async fn delete_connection(
        &self,
        access_token: &SecretString,
        connection_id: &str,
        business_id: &str,
    ) -> Revocation {
        let mut url = self.api_url.clone();
        match url.path_segments_mut() {
            Ok(mut p) => {
                p.pop_if_empty().push(connection_id);
            }
            Err(()) => return Revocation::NotRevoked("the connections URL cannot hold a path".into()),
        }
        match self.send(self.http.delete(url).bearer_auth(access_token.expose_secret()), "DELETE /connections").await {
            Ok((s, _)) if (200..300).contains(&s) => Revocation::Revoked(format!(
                "Xero connection of organisation {business_id} removed (DELETE /connections/{connection_id}); the app's other organisations stay connected"
            )),
            Ok((s, _)) => Revocation::NotRevoked(format!(
                "Xero answered DELETE /connections/{connection_id} with HTTP {s}; remove the app in Xero (Settings, Connected apps)"
            )),
            Err(e) => Revocation::NotRevoked(format!("{e}; remove the app in Xero (Settings, Connected apps)")),
        }
    }

    /// Revokes a refresh token: Sage's `POST /revoke` (form `token`, `client_id`,
    /// `client_secret`), Xero's `POST /connect/revocation` (form `token`, HTTP Basic).
    pub async fn revoke_refresh_token(&self, refresh_token: &SecretString) -> Revocation {
        let where_ = match self.kind {
            ProviderKind::Sage => "remove the app under Sage's Settings, or let the token lapse (31 days unused)",
            ProviderKind::Xero => "remove the app in Xero (Settings, Connected apps)",
        };
        if refresh_token.expose_secret().is_empty() {
            return Revocation::NotRevoked(format!("no refresh token was stored; {where_}"));
        }
        let mut form =
            vec![("token", refresh_token.expose_secret().to_owned()), ("token_type_hint", "refresh_token".to_owned())];
        let mut req = self.http.post(self.revoke_url());
        match self.kind {
            ProviderKind::Sage => {
                form.push(("client_id", self.client_id.clone()));
                form.push(("client_secret", self.client_secret.expose_secret().to_owned()));
            }
            ProviderKind::Xero => {
                req = req.basic_auth(&self.client_id, Some(self.client_secret.expose_secret()));
            }
        }
        let what = match self.kind {
            ProviderKind::Sage => "POST /revoke",
            ProviderKind::Xero => "POST /connect/revocation",
        };
        match self.send(req.form(&form), what).await {
            Ok((s, _)) if (200..300).contains(&s) => Revocation::Revoked(format!("refresh token revoked ({what})")),
            Ok((s, _)) => {
                let unconfirmed =
                    if self.kind == ProviderKind::Sage { " (Sage does not document this endpoint)" } else { "" };
                Revocation::NotRevoked(format!("{what} answered HTTP {s}{unconfirmed}; {where_}"))
            }
            Err(e) => Revocation::NotRevoked(format!("{e}; {where_}")),
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<(u16, bytes::Bytes)> {
        let resp = req.header(reqwest::header::ACCEPT, "application/json").send().await.map_err(|e| {
            let outcome_unknown = !e.is_connect();
            let e = e.without_url();
            Error::Http {
                provider: self.kind.as_str(),
                message: format!("{what} unreachable: {e}"),
                outcome_unknown,
                source: Some(Box::new(e)),
            }
        })?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| Error::Http {
            provider: self.kind.as_str(),
            message: format!("{what} answered HTTP {status} but the answer was cut off: {}", e.without_url()),
            outcome_unknown: true,
            source: None,
        })?;
        Ok((status, body))
    }

    fn unexpected(&self, what: &str, status: u16) -> Error {
        Error::Provider {
            provider: self.kind.as_str(),
            status: Some(status),
            message: format!("{what} failed"),
            retryable: status >= 500 || status == 429,
            source: None,
        }
    }
}

/// Where a refresh token's expiry comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ExpiryBasis {
    /// The token endpoint said (`refresh_token_expires_in`).
    Reported,
    /// The provider's documented life, counted from when the pair was issued.
    Documented,
}

/// How long a connection's refresh token has left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RefreshTokenHealth {
    /// When it lapses unless used.
    pub expires_at: DateTime<Utc>,
    /// Whole days left (rounded down; 0 once lapsed).
    pub days_left: i64,
    /// True once it has lapsed: the business must be connected again.
    pub expired: bool,
    /// Where `expires_at` comes from.
    pub basis: ExpiryBasis,
}

/// The refresh token's remaining life: from the expiry the endpoint reported, else from the
/// provider's documented life ([`documented_refresh_life`]) counted from
/// [`TokenSet::issued_at`]; `None` when neither is known (a pasted refresh token not used yet).
pub fn refresh_token_health(kind: ProviderKind, tokens: &TokenSet, now: DateTime<Utc>) -> Option<RefreshTokenHealth> {
    let (expires_at, basis) = match (tokens.refresh_expires_at, tokens.issued_at) {
        (Some(at), _) => (at, ExpiryBasis::Reported),
        (None, Some(issued)) => (crate::clock::later(issued, documented_refresh_life(kind)), ExpiryBasis::Documented),
        (None, None) => return None,
    };
    let left = expires_at - now;
    Some(RefreshTokenHealth {
        expires_at,
        days_left: left.num_days().max(0),
        expired: left <= chrono::Duration::zero(),
        basis,
    })
}

/// Why a signed state was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// It is not a state this service signed (cut, altered, or another key's).
    #[error("the state is not one this service issued (altered or forged): start the connection again")]
    Forged,
    /// It expired before the callback came back.
    #[error("the state expired (the authorisation took too long): start the connection again")]
    Expired,
    /// It was issued to another session.
    #[error("the state was issued to another session: start the connection again from this browser")]
    WrongSession,
    /// It was issued for another provider's callback.
    #[error("the state was issued for another provider: start the connection again")]
    WrongProvider,
    /// It was used already.
    #[error("the state was used already (a replayed callback): start the connection again")]
    Replayed,
}

impl From<StateError> for Error {
    fn from(e: StateError) -> Self {
        Error::Auth { provider: "oauth", reason: AuthFailure::InvalidCredential, message: e.to_string() }
    }
}

/// What a signed state carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateClaims {
    /// The provider whose callback may bring it back.
    #[serde(rename = "p")]
    pub provider: ProviderKind,
    /// The business the connection is for, as the operator named it (a hint: the business is
    /// chosen among those the token reaches).
    #[serde(rename = "b", default, skip_serializing_if = "Option::is_none")]
    pub business: Option<String>,
    /// When it stops being accepted (unix seconds).
    #[serde(rename = "e")]
    pub expires_at: i64,
    /// Random; what a [`StateReplayGuard`] remembers.
    #[serde(rename = "n")]
    pub nonce: String,
    /// SHA-256 (hex) of the session binding string: the session itself is never in the URL.
    #[serde(rename = "s")]
    session: String,
}

/// Signs and verifies `state` values with HMAC-SHA256: `base64url(claims JSON) "." base64url(mac)`.
/// A service needs nothing stored between the redirect and the callback: the state says which
/// provider and business it is for, when it expires, and which session it belongs to (a hash of
/// the binding string, compared in constant time); the MAC is verified in constant time.
pub struct StateSigner {
    key: SecretSlice<u8>,
}

impl fmt::Debug for StateSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StateSigner")
    }
}

type HmacSha256 = Hmac<Sha256>;

fn session_hash(session: &str) -> String {
    crate::identity::sha256_hex(session)
}

impl StateSigner {
    /// A signer with `key` (at least 32 bytes of secret: derive it from the service's master key
    /// or keep it in the configuration).
    ///
    /// # Errors
    /// [`Error::Config`] when the key is shorter than 32 bytes.
    pub fn new(key: SecretSlice<u8>) -> Result<Self> {
        if key.expose_secret().len() < 32 {
            return Err(Error::config("state key", "must be at least 32 bytes"));
        }
        Ok(Self { key })
    }

    /// A signer whose key is derived from the service's master key (purpose
    /// `byte8-ledger oauth state v1`): every process sharing `LEDGER_MASTER_KEY` verifies the
    /// states the others signed, so the callback may reach any of them.
    pub fn from_master_key(key: &crate::store::crypto::MasterKey) -> Self {
        Self { key: key.derive("byte8-ledger oauth state v1") }
    }

    /// A signer with a random key (states it signs die with the process).
    pub fn random() -> Self {
        let mut key = vec![0u8; 32];
        rand::rng().fill_bytes(&mut key);
        Self { key: SecretSlice::from(key) }
    }

    fn mac(&self) -> HmacSha256 {
        // HMAC takes keys of any length: this cannot fail.
        <HmacSha256 as Mac>::new_from_slice(self.key.expose_secret()).unwrap_or_else(|_| unreachable!())
    }

    /// A state for `provider`, optionally naming `business`, bound to `session` (the operator's
    /// session id, or anything the callback's request will present again), valid for `ttl`.
    pub fn sign(
        &self,
        provider: ProviderKind,
        business: Option<&str>,
        session: &str,
        ttl: Duration,
        now: DateTime<Utc>,
    ) -> (String, StateClaims) {
        let claims = StateClaims {
            provider,
            business: business.map(str::to_owned),
            expires_at: crate::clock::later(now, ttl).timestamp(),
            nonce: random_state(),
            session: session_hash(session),
        };
        let payload = B64.encode(serde_json::to_vec(&claims).unwrap_or_default());
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let sig = B64.encode(mac.finalize().into_bytes());
        (format!("{payload}.{sig}"), claims)
    }

    /// Verifies `state` for the callback of `provider` in `session` at `now`.
    ///
    /// # Errors
    /// [`StateError`]: forged or altered, expired, another session's or another provider's.
    /// (A replay within the expiry is the [`StateReplayGuard`]'s to refuse.)
    pub fn verify(
        &self,
        state: &str,
        provider: ProviderKind,
        session: &str,
        now: DateTime<Utc>,
    ) -> std::result::Result<StateClaims, StateError> {
        let (payload, sig) = state.split_once('.').ok_or(StateError::Forged)?;
        let sig = B64.decode(sig).map_err(|_| StateError::Forged)?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        mac.verify_slice(&sig).map_err(|_| StateError::Forged)?;
        let json = B64.decode(payload).map_err(|_| StateError::Forged)?;
        let claims: StateClaims = serde_json::from_slice(&json).map_err(|_| StateError::Forged)?;
        if now.timestamp() >= claims.expires_at {
            return Err(StateError::Expired);
        }
        if !bool::from(claims.session.as_bytes().ct_eq(session_hash(session).as_bytes())) {
            return Err(StateError::WrongSession);
        }
        if claims.provider != provider {
            return Err(StateError::WrongProvider);
        }
        Ok(claims)
    }
}

/// Remembers the nonces of states already used until they expire, refusing a second use (in
/// memory: one process). A service of several processes keeps the record in its database
/// instead, so that a state replayed to another process is refused too (the service console's
/// `ConsoleStore::use_oauth_state`, migration `0010`); the provider refuses a code used twice in
/// any case.
#[derive(Debug, Default)]
pub struct StateReplayGuard {
    used: std::sync::Mutex<HashMap<String, i64>>,
}

impl StateReplayGuard {
    /// An empty guard.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `claims` as used.
    ///
    /// # Errors
    /// [`StateError::Replayed`] when they were used already.
    pub fn use_once(&self, claims: &StateClaims, now: DateTime<Utc>) -> std::result::Result<(), StateError> {
        let mut used = self.used.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let t = now.timestamp();
        used.retain(|_, exp| *exp > t);
        if used.contains_key(&claims.nonce) {
            return Err(StateError::Replayed);
        }
        used.insert(claims.nonce.clone(), claims.expires_at);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
