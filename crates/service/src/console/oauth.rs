//! The service's OAuth connect routes (issue 15, item 2): an operator connects a Sage business or
//! a Xero organisation from the browser.
//!
//! | route | what |
//! |---|---|
//! | `GET /connect/{provider}?business=ID` | (operator session required) redirects to the provider's authorize page with a signed, expiring `state` bound to the operator's session (and, for Xero, a PKCE challenge) |
//! | `GET /oauth/{provider}/callback?code&state` | checks the `state`, exchanges the code at once, lists what the token reaches, stores the connection and its tokens (encrypted), caches the reference data |
//!
//! `provider` is `sage` or `xero`; each needs a [`LedgerApp`] given to
//! [`Console::with_ledger_app`](super::Console::with_ledger_app) (`serve` adds the ones whose
//! client id and secret are set: `SAGE_CLIENT_ID`/`SAGE_CLIENT_SECRET`,
//! `XERO_CLIENT_ID`/`XERO_CLIENT_SECRET`). The redirect URI is
//! [`ConsoleConfig::public_url`](super::ConsoleConfig::public_url) + `oauth/{provider}/callback`:
//! register exactly that with the app.
//!
//! # The state, and why a second cookie
//!
//! The provider sends the browser back from its own site, so the `SameSite=Strict` session
//! cookie is not sent with the callback. `/connect` therefore sets a short-lived
//! `byte8_oauth` cookie (`HttpOnly`, `SameSite=Lax`, so it is sent on that top-level navigation,
//! `Path=/oauth/`, as long as the state lives) holding the session's store key, a random value
//! and, for Xero, the PKCE verifier (which never goes to the provider). The state is signed with a
//! key derived from the master key ([`StateSigner`](byte8_ledger_core::auth::connect::StateSigner); every process of the service agrees) and
//! bound to the SHA-256 of that cookie's value, and it names the provider, the business and its
//! expiry ([`ConsoleConfig::oauth_state_ttl`](super::ConsoleConfig::oauth_state_ttl)). The
//! callback refuses (400, with what to do) a state that is forged, expired, another browser's,
//! another provider's or used already (recorded in the console's store,
//! [`ConsoleStore::use_oauth_state`](super::ConsoleStore::use_oauth_state): a state replayed to
//! another `serve` process sharing the database is refused too; the provider refuses a code used
//! twice in any case), and one whose operator session has ended since.
//!
//! # Which business
//!
//! `business` names the business (Sage) or organisation (Xero) to store; the token must reach
//! it. Without it, the only one the token reaches is stored; when it reaches several, the page
//! lists them, each with its own connect link.
//!
//! A Magento store paired with a business that had no connection starts syncing once the
//! connection is stored: its queued events waited in line, and the callback tells the workers of
//! the business's active stores at once (the cached runtimes of its tenants are dropped here so that they are
//! rebuilt with the new connection).

use std::{fmt, sync::Arc};

use axum::{
    Router,
    extract::{Path, Query, RawQuery, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::get,
};
use maud::{Markup, html};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::{
    ConsoleShared,
    layout::{self, Notice},
    session::{Operator, cookie, random_token, set_cookie, unavailable},
};
use crate::store::Binding;
use byte8_ledger_core::{
    auth::connect::{Callback, OAuthApp, Pkce, ReachableBusiness, StateError},
    error::{Error, Result},
    policy::SyncPolicy,
    store::{Connection, ProviderKind},
};

/// The OAuth binding cookie.
pub(crate) const OAUTH_COOKIE: &str = "byte8_oauth";

/// A ledger app registered with Sage or Xero, and the provider's endpoints (the real ones by
/// default; a simulator's in the demo and the tests).
#[derive(Clone)]
pub struct LedgerApp {
    /// Sage or Xero.
    pub kind: ProviderKind,
    /// The app's client id.
    pub client_id: String,
    /// The app's client secret.
    pub client_secret: SecretString,
    /// The authorize endpoint.
    pub authorize_url: String,
    /// The token endpoint (stored with the connection).
    pub token_url: String,
    /// The revocation endpoint (`None`: the provider's, next to the token endpoint).
    pub revoke_url: Option<String>,
    /// The API root stored with the connection (Sage's `…/v3.1`, Xero's `…/api.xro/2.0`).
    pub base_url: String,
    /// Xero's connections endpoint (`None` for Sage).
    pub connections_url: Option<String>,
}

impl fmt::Debug for LedgerApp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LedgerApp")
            .field("kind", &self.kind)
            .field("client_id", &self.client_id)
            .field("authorize_url", &self.authorize_url)
            .field("token_url", &self.token_url)
            .field("base_url", &self.base_url)
            .finish_non_exhaustive()
    }
}

impl LedgerApp {
    /// A Sage app with Sage's real endpoints.
    pub fn sage(client_id: impl Into<String>, client_secret: SecretString) -> Self {
        use byte8_ledger_core::auth::connect::{SAGE_API_URL, SAGE_AUTHORIZE_URL, SAGE_TOKEN_URL};
        Self {
            kind: ProviderKind::Sage,
            client_id: client_id.into(),
            client_secret,
            authorize_url: SAGE_AUTHORIZE_URL.into(),
            token_url: SAGE_TOKEN_URL.into(),
            revoke_url: None,
            base_url: SAGE_API_URL.into(),
            connections_url: None,
        }
    }

    /// A Xero app with Xero's real endpoints.
    pub fn xero(client_id: impl Into<String>, client_secret: SecretString) -> Self {
        use byte8_ledger_core::auth::connect::{XERO_AUTHORIZE_URL, XERO_CONNECTIONS_URL, XERO_TOKEN_URL};
        Self {
            kind: ProviderKind::Xero,
            client_id: client_id.into(),
            client_secret,
            authorize_url: XERO_AUTHORIZE_URL.into(),
            token_url: XERO_TOKEN_URL.into(),
            revoke_url: None,
            base_url: "https://api.xero.com/api.xro/2.0".into(),
            connections_url: Some(XERO_CONNECTIONS_URL.into()),
        }
    }

    /// The apps whose credentials are in the environment (`SAGE_CLIENT_ID` and
    /// `SAGE_CLIENT_SECRET`; `XERO_CLIENT_ID` and `XERO_CLIENT_SECRET`), with the real endpoints.
    pub fn from_env() -> Vec<Self> {
        let var = |n: &str| std::env::var(n).ok().filter(|v| !v.trim().is_empty());
        let mut apps = Vec::new();
        if let (Some(id), Some(secret)) = (var("SAGE_CLIENT_ID"), var("SAGE_CLIENT_SECRET")) {
            apps.push(Self::sage(id, SecretString::from(secret)));
        }
        if let (Some(id), Some(secret)) = (var("XERO_CLIENT_ID"), var("XERO_CLIENT_SECRET")) {
            apps.push(Self::xero(id, SecretString::from(secret)));
        }
        apps
    }

    /// The core's OAuth app for the redirect URI `redirect_uri`.
    pub(crate) fn oauth(&self, redirect_uri: &str) -> Result<OAuthApp> {
        let mut app = OAuthApp::new(self.kind, self.client_id.clone(), self.client_secret.clone(), redirect_uri)?
            .with_authorize_url(&self.authorize_url)?
            .with_token_url(&self.token_url)?;
        app = match self.kind {
            ProviderKind::Sage => app.with_api_url(&self.base_url)?,
            _ => app.with_api_url(self.connections_url.as_deref().unwrap_or_default())?,
        };
        if let Some(r) = &self.revoke_url {
            app = app.with_revoke_url(r)?;
        }
        Ok(app)
    }
}

/// `sage` or `xero` in a route.
pub(crate) fn provider_of(segment: &str) -> Option<ProviderKind> {
    match segment {
        "sage" => Some(ProviderKind::Sage),
        "xero" => Some(ProviderKind::Xero),
        _ => None,
    }
}

/// The route segment of `kind`.
pub(crate) fn segment(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Sage => "sage",
        ProviderKind::Xero => "xero",
        _ => "ledger",
    }
}

/// The display name of `kind`.
pub(crate) fn label(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Sage => "Sage",
        ProviderKind::Xero => "Xero",
        _ => "the ledger",
    }
}

pub(crate) fn routes() -> Router<Arc<ConsoleShared>> {
    Router::new().route("/connect/{provider}", get(connect)).route("/oauth/{provider}/callback", get(callback))
}

impl ConsoleShared {
    /// The app of `kind`, if configured.
    pub(crate) fn app(&self, kind: ProviderKind) -> Option<&LedgerApp> {
        self.apps.iter().find(|a| a.kind == kind)
    }

    /// The redirect URI of `kind`'s callback.
    pub(crate) fn redirect_uri(&self, kind: ProviderKind) -> String {
        let base = self.config.public_url.as_str().trim_end_matches('/');
        format!("{base}/oauth/{}/callback", segment(kind))
    }

    /// Drops the cached worker runtimes of `scope`'s tenants (a new connection or policy is
    /// used from their next turn).
    pub(crate) async fn forget_runtimes(&self, scope: &str) {
        self.service.runtimes.lock().await.retain(|_, rt| rt.scope != scope);
    }
}

/// A page of the OAuth flow outside the session layout (the callback may come without the
/// strict session cookie).
fn flow_page(status: StatusCode, title: &str, notices: &[Notice], content: Markup) -> Response {
    (status, layout::bare(title, notices, content)).into_response()
}

fn back_link() -> Markup {
    html! { p { a href="/console/connections" { "Back to Connections" } } }
}

/// The `/connect` query.
#[derive(Debug, Deserialize)]
pub(crate) struct ConnectQuery {
    business: Option<String>,
}

/// `GET /connect/{provider}?business=…`.
async fn connect(
    State(shared): State<Arc<ConsoleShared>>,
    Path(provider): Path<String>,
    Query(q): Query<ConnectQuery>,
    operator: Operator,
) -> Response {
    let Some(kind) = provider_of(&provider) else {
        return flow_page(
            StatusCode::NOT_FOUND,
            "Unknown ledger",
            &[Notice::bad(format!("There is no ledger `{provider}`: use sage or xero."))],
            back_link(),
        );
    };
    let Some(app) = shared.app(kind) else {
        return flow_page(
            StatusCode::BAD_REQUEST,
            "Not configured",
            &[Notice::bad(format!(
                "{} is not configured on this service: set its client id and secret ({}_CLIENT_ID, {}_CLIENT_SECRET) and restart it.",
                label(kind),
                segment(kind).to_uppercase(),
                segment(kind).to_uppercase()
            ))],
            back_link(),
        );
    };
    let business = q.business.map(|b| b.trim().to_owned()).filter(|b| !b.is_empty());
    let oauth = match app.oauth(&shared.redirect_uri(kind)) {
        Ok(o) => o,
        Err(e) => {
            return flow_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Not configured",
                &[Notice::bad(e.to_string())],
                back_link(),
            );
        }
    };
    let nonce = match random_token() {
        Ok(n) => n,
        Err(e) => return unavailable(&e),
    };
    let pkce = (kind == ProviderKind::Xero).then(Pkce::generate);
    // session store key . random . PKCE verifier (Xero): what the callback's browser presents.
    let binding = format!(
        "{}.{}.{}",
        operator.session_hash(),
        nonce.expose_secret(),
        pkce.as_ref().map_or("", |p| p.verifier().expose_secret())
    );
    let (state, _) =
        shared.signer.sign(kind, business.as_deref(), &binding, shared.config.oauth_state_ttl, shared.now());
    let url = oauth.authorize_url_with(&state, pkce.as_ref());
    tracing::info!(operator = %operator.name(), provider = kind.as_str(), business = ?business, "console: connect started");
    let cookie = set_cookie(
        OAUTH_COOKIE,
        &binding,
        "/oauth/",
        "Lax",
        Some(shared.config.oauth_state_ttl.as_secs()),
        shared.config.secure_cookies,
    );
    let mut response = Redirect::to(url.as_str()).into_response();
    response.headers_mut().append(header::SET_COOKIE, cookie);
    response
}

/// Why a callback is refused, for the person.
fn refused(text: impl Into<String>) -> Response {
    flow_page(StatusCode::BAD_REQUEST, "Connection not made", &[Notice::bad(text)], back_link())
}

/// `GET /oauth/{provider}/callback`.
async fn callback(
    State(shared): State<Arc<ConsoleShared>>,
    Path(provider): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let Some(kind) = provider_of(&provider) else { return refused(format!("There is no ledger `{provider}`.")) };
    let Some(app) = shared.app(kind) else {
        return refused(format!("{} is not configured on this service.", label(kind)));
    };
    let clear = set_cookie(OAUTH_COOKIE, "", "/oauth/", "Lax", Some(0), shared.config.secure_cookies);
    let mut response = match finish(&shared, app, kind, query.as_deref().unwrap_or(""), &headers).await {
        Ok(page) => page,
        Err(e) => {
            tracing::warn!(provider = kind.as_str(), error = %e, "console: OAuth callback refused");
            refused(e.to_string())
        }
    };
    response.headers_mut().append(header::SET_COOKIE, clear);
    response
}

async fn finish(
    shared: &ConsoleShared,
    app: &LedgerApp,
    kind: ProviderKind,
    query: &str,
    headers: &HeaderMap,
) -> Result<Response> {
    let callback = Callback::parse(kind, query)?;
    let Some(binding) = cookie(headers, OAUTH_COOKIE).filter(|b| !b.expose_secret().is_empty()) else {
        return Err(StateError::WrongSession.into());
    };
    let now = shared.now();
    let claims = shared.signer.verify(&callback.state, kind, binding.expose_secret(), now)?;
    let mut parts = binding.expose_secret().splitn(3, '.');
    let session_hash = parts.next().unwrap_or_default().to_owned();
    let _nonce = parts.next();
    let verifier =
        parts.next().filter(|v| !v.is_empty()).map(|v| Pkce::from_verifier(SecretString::from(v.to_owned())));
    // The operator's session must still be live (logged out or expired: start again).
    let renew = now + shared.config.session_idle_chrono();
    let Some(session) = shared.store.use_session(&session_hash, now, renew).await? else {
        return Err(Error::Auth {
            provider: "console",
            reason: byte8_ledger_core::error::AuthFailure::InvalidCredential,
            message: "the console session that started this connection has ended: log in and connect again".into(),
        });
    };
    // Used once, in every process sharing the store (the console store's record).
    let expires_at = chrono::DateTime::from_timestamp(claims.expires_at, 0).unwrap_or(now);
    let nonce_hash = byte8_ledger_core::identity::sha256_hex(&claims.nonce);
    if !shared.store.use_oauth_state(&nonce_hash, expires_at, now).await? {
        return Err(StateError::Replayed.into());
    }
    let oauth = app.oauth(&shared.redirect_uri(kind))?;
    let tokens = oauth.exchange_code(&callback.code, verifier.as_ref(), now).await?;
    drop(callback);
    let reached = oauth.businesses(&tokens.access_token).await?;
    let chosen: ReachableBusiness = match (&claims.business, reached.as_slice()) {
        (Some(wanted), list) => match list.iter().find(|b| &b.id == wanted) {
            Some(b) => b.clone(),
            None => {
                return Ok(choice_page(
                    kind,
                    &reached,
                    Some(Notice::bad(format!(
                        "The authorisation does not reach business {wanted}. It reaches the ones below: connect one of them, or sign in at {} as a user of {wanted}.",
                        label(kind)
                    ))),
                ));
            }
        },
        (None, [only]) => only.clone(),
        (None, []) => {
            return Err(Error::invalid(
                "OAuth callback",
                "business",
                format!("the authorisation reaches no {} business: sign in with a user of the business", label(kind)),
            ));
        }
        (None, _) => return Ok(choice_page(kind, &reached, None)),
    };
    let connection = Connection {
        scope: chosen.id.clone(),
        provider: kind.as_str().to_owned(),
        base_url: app.base_url.clone(),
        token_url: app.token_url.clone(),
        created_at: now,
        tenant_id: (kind == ProviderKind::Xero).then(|| chosen.id.clone()),
        connections_url: app.connections_url.clone().filter(|_| kind == ProviderKind::Xero),
    };
    let store = &shared.service.store;
    store.save_connection(&connection).await?;
    store.save_tokens(&connection.scope, &tokens).await?;
    shared.forget_runtimes(&connection.scope).await;
    tracing::info!(operator = %session.operator, provider = kind.as_str(), business = %connection.scope, "console: business connected");
    // The reference data now, so that the policy page's lists are there at once (a failure is
    // said, not fatal: "Refresh reference data" tries again).
    let reference = match refresh_reference(shared, &connection.scope).await {
        Ok(r) => Notice::ok(format!(
            "Connected to {} ({}): {} tax rates, {} ledger accounts, {} bank accounts.",
            r.business.name,
            connection.scope,
            r.tax_rates.len(),
            r.ledger_accounts.len(),
            r.bank_accounts.len()
        )),
        Err(e) => Notice::warn(format!(
            "Connected {} business {}, but its reference data could not be read yet ({e}): refresh it from Connections.",
            label(kind),
            connection.scope
        )),
    };
    // The events that waited for the connection go now, not at the workers' next look.
    shared.service.announce_businesses(std::slice::from_ref(&connection.scope)).await?;
    let content = html! {
        p { "The service now posts the business's events to " (label(kind)) "; events that were waiting for the connection are synced now." }
        p { a id="continue" href="/console/connections" { "Continue to Connections" } }
    };
    Ok(flow_page(StatusCode::OK, "Connected", &[reference], content))
}

/// The businesses the token reaches, each with its own connect link.
fn choice_page(kind: ProviderKind, reached: &[ReachableBusiness], notice: Option<Notice>) -> Response {
    let notices: Vec<Notice> = notice
        .into_iter()
        .chain(std::iter::once(Notice::warn(format!(
            "The {} authorisation reaches {} businesses: choose the one to connect (you may be asked to approve again).",
            label(kind),
            reached.len()
        ))))
        .collect();
    let content = html! {
        ul {
            @for b in reached {
                li {
                    a href=(format!("/connect/{}?business={}", segment(kind), url::form_urlencoded::byte_serialize(b.id.as_bytes()).collect::<String>())) {
                        (b.name) " (" (b.id) ")"
                    }
                }
            }
        }
        (back_link())
    };
    flow_page(StatusCode::OK, "Choose a business", &notices, content)
}

/// Fetches `scope`'s reference data from its ledger and caches it.
pub(crate) async fn refresh_reference(
    shared: &ConsoleShared,
    scope: &str,
) -> Result<Arc<byte8_ledger_core::reference::ReferenceData>> {
    let store = &shared.service.store;
    // The provider factory builds from a binding; only its business is read. A business without
    // a paired store gets a stand-in binding (no key is sent anywhere).
    let active = store.bindings().await?.into_iter().find(|b| b.scope == scope && b.is_active());
    let binding = match active {
        Some(info) => store.binding(&info.tenant_id).await?,
        None => None,
    };
    let binding = match binding {
        Some(b) => b,
        None => Binding::new(
            "console-reference",
            scope,
            "https://reference.invalid",
            crate::store::keys::ApiKey::generate()?,
            SyncPolicy::default(),
            shared.now(),
        )?,
    };
    let provider = shared.service.providers.provider(&binding).await?;
    // Counted among the business's ledger requests of the hour (the overview).
    let reference = byte8_ledger_core::store::audit::recorded_outside_runs(
        store.as_ref(),
        scope,
        shared.now(),
        provider.reference_data(true),
    )
    .await?;
    store.save_reference(scope, &reference).await?;
    Ok(reference)
}
