//! The operator console: server-rendered HTML pages for the people who run the service, at
//! `/console`, behind an operator login ([`Console::router`]; `byte8-ledger serve` mounts it).
//!
//! # Access
//!
//! Operators are added on the server (`byte8-ledger operator add NAME`, the password from stdin
//! or `BYTE8_OPERATOR_PASSWORD`, never a flag) and stored as argon2id hashes
//! ([`password`], [`ConsoleStore`]). Every operator sees every tenant; nobody else sees anything:
//! every route but the login page and the stylesheet requires a live session, and redirects to
//! the login page without one. Sessions, cookies and CSRF are described in [`session`]; login
//! attempts are rate-limited ([`ConsoleConfig::login_attempts_per_minute`]).
//!
//! | route | what |
//! |---|---|
//! | `GET /console/login`, `POST /console/login` | the login form (double-submit CSRF token, rate-limited) |
//! | `POST /console/logout` | ends the session |
//! | `GET /console` | overview: per business, the rate limit's use in the last hour (`console/overview.rs`), and "Retry all dead letters" of every business when any is dead-lettered |
//! | `GET /console/assets/console.css` | the embedded stylesheet (no session needed) |
//! | `GET /console/connections` | the ledger connections: connect (OAuth), disconnect (revoking), refresh the reference data |
//! | `GET /console/runs`, `GET /console/runs/{id}`, `POST /console/runs/{id}/retry`, `GET`/`POST /console/runs/retry-dead-letters` | the sync runs: the table (filters, search, server paging), a run's audit (event, attempts with every ledger request and answer, outcome, ledger record, an upsert's diff), "Retry" and "Retry all dead letters" (`console/runs.rs`) |
//! | `GET /connect/{provider}`, `GET /oauth/{provider}/callback` | the OAuth authorisation-code flow ([`oauth`]; each `state` used once across every process sharing the database: [`ConsoleStore::use_oauth_state`]) |
//!
//! Every answer carries `Cache-Control: no-store`, a content security policy without scripts
//! (`default-src 'self'; script-src 'none'; frame-ancestors 'none'`), `X-Frame-Options: DENY`,
//! `X-Content-Type-Options: nosniff` and `Referrer-Policy: same-origin`.
//!
//! # Adding a page
//!
//! A page module has `pub(crate) fn routes() -> Router<Arc<ConsoleShared>>` with paths under
//! `/console/…`, merged in `pages()` (this module). Its handlers take [`Operator`] (GET; no session: redirected
//! to the login page) or [`Posted<T>`] (POST: session, then the CSRF token, 403 when wrong, then
//! the form as `T`), and answer `layout::page(&operator, Section::…, title, notices, content)`;
//! forms put `layout::csrf_field(&operator)` inside.

pub mod password;
pub mod session;
pub mod store;

mod connections;
mod layout;
mod login;
pub mod oauth;
mod overview;
mod policy;
mod runs;
mod runs_form;
mod runs_view;
pub mod stores;

use std::{collections::BTreeMap, num::NonZeroU32, sync::Arc, time::Duration};

use axum::{
    Router,
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Redirect, Response},
    routing::{get, post},
};
use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter,
    clock::{Clock as _, DefaultClock},
};
use url::Url;

pub use oauth::LedgerApp;
pub use session::{Operator, Posted};
pub use store::{ConsoleStore, MemoryConsoleStore, OperatorInfo, PasswordHash, PolicyVersion, SessionRecord};

use crate::{Service, Shared};
use byte8_ledger_core::{auth::connect::StateSigner, http::RateConfig, store::crypto::MasterKey};

/// The provider name of Sage connections.
const SAGE_PROVIDER: &str = "sage_accounting";
/// The provider name of Xero connections.
const XERO_PROVIDER: &str = "xero";
/// Xero's calls a minute per organisation (xero-api.md 3), as the service's Xero providers keep.
const XERO_REQUESTS_PER_MINUTE: u32 = 60;

/// The console's settings.
#[derive(Debug, Clone)]
pub struct ConsoleConfig {
    /// Mark the session cookie `Secure` (sent over https only). [`ConsoleConfig::new`] sets it
    /// unless the console is reached over plain http on a loopback address.
    pub secure_cookies: bool,
    /// How long a session lasts without a request.
    pub session_idle: Duration,
    /// How long a session lasts at most, however used.
    pub session_lifetime: Duration,
    /// Login attempts allowed per operator name and minute (a burst of as many, then one every
    /// `60 / n` seconds); ten times as many in all.
    pub login_attempts_per_minute: NonZeroU32,
    /// The console's public base URL, as the browser reaches it (the OAuth redirect URIs are
    /// built on it).
    pub public_url: Url,
    /// How long an OAuth `state` made by `/connect/{provider}` is accepted.
    pub oauth_state_ttl: Duration,
    /// The ledger requests a minute the service's providers keep each business under, by
    /// provider (`sage_accounting`, `xero`; 0: no limit): the overview shows a business's
    /// requests in the last hour against 60 times its provider's figure.
    /// [`ConsoleConfig::new`] takes Sage's 200 ([`RateConfig::default`], sage-api.md 3.7) and
    /// Xero's 60 (`XeroLimits::default`, xero-api.md 3); `byte8-ledger serve` sets Sage's from
    /// `SAGE_REQUESTS_PER_MINUTE`, as its providers do.
    pub requests_per_minute: BTreeMap<String, u32>,
}

impl ConsoleConfig {
    /// The defaults for a console reached at `public_url`: `Secure` cookies unless it is
    /// `http` on a loopback host, sessions of an hour idle and twelve hours at most, 5 login
    /// attempts a minute per name, OAuth states valid 10 minutes.
    pub fn new(public_url: Url) -> Self {
        let loopback = match public_url.host() {
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            None => false,
        };
        Self {
            secure_cookies: public_url.scheme() == "https" || !loopback,
            session_idle: Duration::from_secs(3600),
            session_lifetime: Duration::from_secs(12 * 3600),
            login_attempts_per_minute: NonZeroU32::new(5).unwrap_or(NonZeroU32::MIN),
            public_url,
            oauth_state_ttl: Duration::from_secs(600),
            requests_per_minute: BTreeMap::from([
                (SAGE_PROVIDER.to_owned(), RateConfig::default().requests_per_minute),
                (XERO_PROVIDER.to_owned(), XERO_REQUESTS_PER_MINUTE),
            ]),
        }
    }

    /// Sets the requests a minute of `provider`'s businesses (see
    /// [`ConsoleConfig::requests_per_minute`]).
    #[must_use]
    pub fn with_requests_per_minute(mut self, provider: &str, per_minute: u32) -> Self {
        self.requests_per_minute.insert(provider.to_owned(), per_minute);
        self
    }

    /// The ledger requests a business of `provider` may make in an hour, when there is a limit.
    pub(crate) fn requests_per_hour(&self, provider: &str) -> Option<u64> {
        self.requests_per_minute.get(provider).copied().filter(|n| *n > 0).map(|n| u64::from(n) * 60)
    }

    pub(crate) fn session_idle_chrono(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.session_idle).unwrap_or(chrono::Duration::hours(1))
    }

    pub(crate) fn session_lifetime_chrono(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.session_lifetime).unwrap_or(chrono::Duration::hours(12))
    }
}

/// The login rate limits (in this process).
pub(crate) struct Limits {
    per_name: DefaultKeyedRateLimiter<String>,
    all: DefaultDirectRateLimiter,
}

impl std::fmt::Debug for Limits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Limits")
    }
}

impl Limits {
    fn new(per_minute: NonZeroU32) -> Self {
        let all = per_minute.saturating_mul(NonZeroU32::new(10).unwrap_or(NonZeroU32::MIN));
        Self {
            per_name: RateLimiter::keyed(Quota::per_minute(per_minute)),
            all: RateLimiter::direct(Quota::per_minute(all)),
        }
    }

    /// Takes one login attempt for `name`; `Err(seconds to wait)` beyond the limit.
    pub(crate) fn check_login(&self, name: &str) -> Result<(), u64> {
        let now = DefaultClock::default().now();
        let wait = |n: governor::NotUntil<_>| n.wait_time_from(now).as_secs().max(1);
        self.per_name.check_key(&name.to_lowercase()).map_err(wait)?;
        self.all.check().map_err(wait)?;
        self.per_name.retain_recent();
        Ok(())
    }
}

/// What the console's handlers share.
pub(crate) struct ConsoleShared {
    pub(crate) service: Arc<Shared>,
    pub(crate) store: Arc<dyn ConsoleStore>,
    pub(crate) config: ConsoleConfig,
    pub(crate) limits: Limits,
    /// Signs the OAuth `state` (its key derived from the master key: every process agrees).
    pub(crate) signer: StateSigner,
    /// The ledger apps the connect routes can use.
    pub(crate) apps: Vec<LedgerApp>,
}

impl std::fmt::Debug for ConsoleShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleShared")
            .field("store", &self.store)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ConsoleShared {
    /// The service clock's now.
    pub(crate) fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.service.clock.now()
    }
}

/// The operator console of a [`Service`].
#[derive(Debug, Clone)]
pub struct Console {
    shared: Arc<ConsoleShared>,
}

impl Console {
    /// The console of `service`, keeping operators and sessions in `store`; `key` (the master
    /// key) signs the OAuth `state` of its connect routes.
    pub fn new(service: &Service, store: Arc<dyn ConsoleStore>, config: ConsoleConfig, key: &MasterKey) -> Self {
        let limits = Limits::new(config.login_attempts_per_minute);
        // Derived from the master key: every process of the service verifies the others' states.
        let signer = StateSigner::from_master_key(key);
        Self {
            shared: Arc::new(ConsoleShared {
                service: Arc::clone(&service.shared),
                store,
                config,
                limits,
                signer,
                apps: Vec::new(),
            }),
        }
    }

    /// The console's routes (`/console…`), with their state: merge them beside
    /// [`Service::router`].
    pub fn router(&self) -> Router {
        Router::new()
            .route("/console/", get(|| async { Redirect::permanent("/console") }))
            .route("/console/assets/console.css", get(css))
            .route("/console/login", get(login::show).post(login::submit))
            .route("/console/logout", post(login::logout))
            .merge(pages())
            .route("/console/{*rest}", get(not_found))
            .layer(axum::middleware::map_response(security_headers))
            .with_state(Arc::clone(&self.shared))
    }

    /// Lets the connect routes use `app` (one per ledger kind: a second one of the same kind
    /// replaces the first).
    #[must_use]
    pub fn with_ledger_app(mut self, app: LedgerApp) -> Self {
        if let Some(shared) = Arc::get_mut(&mut self.shared) {
            shared.apps.retain(|a| a.kind != app.kind);
            shared.apps.push(app);
        } else {
            tracing::error!("Console::with_ledger_app after the console was shared: ignored");
        }
        self
    }

    /// The store of operators and sessions.
    pub fn store(&self) -> &Arc<dyn ConsoleStore> {
        &self.shared.store
    }
}

/// The pages behind the login (each module's `routes()`).
fn pages() -> Router<Arc<ConsoleShared>> {
    Router::new()
        .merge(overview::routes())
        .merge(oauth::routes())
        .merge(connections::routes())
        .merge(stores::routes())
        .merge(policy::routes())
        .merge(runs::routes())
}

async fn css() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "public, max-age=3600")], layout::CSS)
        .into_response()
}

/// An unknown `/console/…` path: the login page without a session (nobody else learns which
/// pages exist), a 404 page with one.
async fn not_found(operator: Operator) -> Response {
    let content = maud::html! { p { "There is no such page. " a href="/console" { "Back to the overview" } } };
    (StatusCode::NOT_FOUND, layout::page(&operator, layout::Section::Overview, "Not found", &[], content))
        .into_response()
}

async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'none'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    response
}
