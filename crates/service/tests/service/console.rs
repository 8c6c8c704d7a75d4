//! The operator console over plain HTTP: every route's access rules (no session → the login
//! page; a missing or wrong CSRF token → 403; an expired session → the login page again),
//! argon2 logins, the login rate limit, the cookie's attributes, the console store on memory,
//! SQLite and PostgreSQL. The browser walk (a real Chromium, `browser.rs`) is in
//! `console_flow.rs`.

use std::sync::Arc;

use byte8_ledger_core::{
    clock::{Clock, ManualClock},
    store::{crypto::MasterKey, sqlite::SqliteStore},
};
use byte8_ledger_service::{
    HttpLimits, Service, ServiceConfig, StoredProviders,
    console::{Console, ConsoleConfig, ConsoleStore, MemoryConsoleStore, SessionRecord, password::hash_password},
};
use chrono::{DateTime, Utc};
use reqwest::{StatusCode, header};
use secrecy::SecretString;

/// An operator every world has.
pub const OPERATOR: &str = "ada";
/// Its password.
pub const PASSWORD: &str = "correct horse battery staple";

/// The GET routes behind the login (each must redirect without a session).
pub const GET_ROUTES: &[&str] = &[
    "/console",
    "/console/stores",
    "/console/connections",
    "/console/policy",
    "/console/policy?tenant=t1",
    "/connect/sage?business=b1",
    "/connect/xero",
    "/console/nothing-here",
    "/console/runs",
    "/console/runs/1",
    "/console/runs/retry-dead-letters",
];
/// The POST routes behind the login and CSRF (each must redirect without a session and answer
/// 403 with a wrong token).
pub const POST_ROUTES: &[&str] = &[
    "/console/stores",
    "/console/stores/t1/disconnect",
    "/console/connections/b1/refresh",
    "/console/connections/b1/disconnect",
    "/console/policy/t1",
    "/console/policy/t1/restore/1",
    "/console/logout",
    "/console/runs/1/retry",
    "/console/runs/retry-dead-letters",
];

/// A service with its console on a loopback port, over SQLite, with a manual clock.
pub struct ConsoleWorld {
    _dir: tempfile::TempDir,
    pub store: Arc<SqliteStore>,
    pub clock: Arc<ManualClock>,
    #[allow(dead_code)]
    pub service: Service,
    pub console: Console,
    pub base: String,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

pub fn t0() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-03-02T09:00:00Z").unwrap().with_timezone(&Utc)
}

impl ConsoleWorld {
    pub async fn start() -> Self {
        Self::start_with(|c| c).await
    }

    pub async fn start_with(configure: impl FnOnce(ConsoleConfig) -> ConsoleConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let key = MasterKey::generate();
        let store =
            Arc::new(SqliteStore::open(dir.path().join("state.db"), Some(MasterKey::generate())).await.unwrap());
        let clock = Arc::new(ManualClock::new(t0()));
        let providers = Arc::new(StoredProviders::new(Arc::clone(&store) as _));
        let service =
            Service::new(Arc::clone(&store) as _, providers, Arc::clone(&clock) as _, ServiceConfig::default());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let base = format!("http://{addr}");
        let config = configure(ConsoleConfig::new(url::Url::parse(&format!("{base}/")).unwrap()));
        let console = Console::new(&service, Arc::clone(&store) as Arc<dyn ConsoleStore>, config, &key);
        let hash = hash_password(&SecretString::from(PASSWORD.to_owned())).unwrap();
        console.store().put_operator(OPERATOR, &hash, clock.now()).await.unwrap();
        let app = service.router().merge(console.router());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(byte8_ledger_service::serve(listener, app, HttpLimits::default(), async {
            let _ = stopped.await;
        }));
        let http = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Self { _dir: dir, store, clock, service, console, base, http, stop: Some(stop) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// The login page: its double-submit cookie and form token.
    pub async fn login_form(&self) -> (String, String) {
        let r = self.http.get(self.url("/console/login")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        let cookie = set_cookie(&r, "byte8_console_login").expect("the login cookie");
        let html = r.text().await.unwrap();
        (cookie, csrf_of_html(&html).expect("the login form's token"))
    }

    /// Posts the login form; the answer.
    pub async fn post_login(&self, name: &str, password: &str) -> reqwest::Response {
        let (cookie, token) = self.login_form().await;
        self.http
            .post(self.url("/console/login"))
            .header(header::COOKIE, format!("byte8_console_login={cookie}"))
            .form(&[("csrf_token", token.as_str()), ("name", name), ("password", password)])
            .send()
            .await
            .unwrap()
    }

    /// Logs in as [`OPERATOR`]: the session cookie's value.
    pub async fn login(&self) -> String {
        let r = self.post_login(OPERATOR, PASSWORD).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "a good login redirects");
        set_cookie(&r, "byte8_console").expect("the session cookie")
    }

    /// GET with the session cookie.
    pub async fn get(&self, path: &str, session: Option<&str>) -> reqwest::Response {
        let mut req = self.http.get(self.url(path));
        if let Some(s) = session {
            req = req.header(header::COOKIE, format!("byte8_console={s}"));
        }
        req.send().await.unwrap()
    }

    /// The CSRF token of the session's pages (read from the overview's logout form).
    pub async fn csrf(&self, session: &str) -> String {
        let html = self.get("/console", Some(session)).await.text().await.unwrap();
        csrf_of_html(&html).expect("a csrf field on the overview")
    }

    /// POST a form with the session cookie.
    pub async fn post(&self, path: &str, session: Option<&str>, form: &[(&str, &str)]) -> reqwest::Response {
        let mut req = self.http.post(self.url(path)).form(form);
        if let Some(s) = session {
            req = req.header(header::COOKIE, format!("byte8_console={s}"));
        }
        req.send().await.unwrap()
    }
}

impl Drop for ConsoleWorld {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// The value of cookie `name` set by `r`.
pub fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    set_cookie_line(r, name).and_then(|line| {
        line.split(';').next().and_then(|kv| kv.split_once('=')).map(|(_, v)| v.to_owned()).filter(|v| !v.is_empty())
    })
}

/// The whole `Set-Cookie` line of cookie `name`.
pub fn set_cookie_line(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

/// The value of the first `csrf_token` hidden field of `html`.
pub fn csrf_of_html(html: &str) -> Option<String> {
    let at = html.find("name=\"csrf_token\" value=\"")? + "name=\"csrf_token\" value=\"".len();
    html[at..].split('"').next().map(str::to_owned)
}

fn location(r: &reqwest::Response) -> String {
    r.headers().get(header::LOCATION).map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn every_console_route_sends_a_visitor_without_a_session_to_the_login_page() {
    let w = ConsoleWorld::start().await;
    for path in GET_ROUTES {
        for session in [None, Some("forged-session-id")] {
            let r = w.get(path, session).await;
            assert_eq!(r.status(), StatusCode::SEE_OTHER, "GET {path} ({session:?})");
            let to = location(&r);
            assert!(to.starts_with("/console/login?next="), "GET {path}: {to}");
            assert!(!r.text().await.unwrap().contains("Log out"), "GET {path} shows nothing");
        }
    }
    for path in POST_ROUTES {
        let r = w.post(path, None, &[("csrf_token", "x")]).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "POST {path}");
        assert!(location(&r).starts_with("/console/login"), "POST {path}");
    }
    // The login page and the stylesheet are the only pages open to anyone.
    assert_eq!(w.get("/console/login", None).await.status(), StatusCode::OK);
    let css = w.get("/console/assets/console.css", None).await;
    assert_eq!(css.status(), StatusCode::OK);
    assert!(css.text().await.unwrap().contains("--accent"));
    // The way back is kept, only when it is a local path.
    let r = w.get("/console/policy?tenant=t1", None).await;
    assert_eq!(location(&r), "/console/login?next=%2Fconsole%2Fpolicy%3Ftenant%3Dt1");
}

#[tokio::test]
async fn a_post_with_a_missing_or_wrong_csrf_token_is_refused_with_403() {
    let w = ConsoleWorld::start().await;
    let session = w.login().await;
    let token = w.csrf(&session).await;
    let other = w.login().await;
    let other_token = w.csrf(&other).await;
    assert_ne!(other_token, token);
    for path in POST_ROUTES {
        let r = w.post(path, Some(&session), &[]).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "POST {path} without a token");
        let r = w.post(path, Some(&session), &[("csrf_token", "wrong")]).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "POST {path} with a wrong token");
        // Another session's token is wrong too.
        let r = w.post(path, Some(&session), &[("csrf_token", &other_token)]).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "POST {path} with another session's token");
    }
    // The session is still alive after the refusals; logging out with the right token works.
    assert_eq!(w.get("/console", Some(&session)).await.status(), StatusCode::OK);
    let r = w.post("/console/logout", Some(&session), &[("csrf_token", &token)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(location(&r), "/console/login");
    assert!(set_cookie_line(&r, "byte8_console").unwrap().contains("Max-Age=0"), "the cookie is deleted");
    assert_eq!(w.get("/console", Some(&session)).await.status(), StatusCode::SEE_OTHER, "the session has ended");
}

#[tokio::test]
async fn the_login_form_needs_its_double_submit_token() {
    let w = ConsoleWorld::start().await;
    let (cookie, token) = w.login_form().await;
    let form = [("name", OPERATOR), ("password", PASSWORD)];
    // No cookie (a cross-site form), no field, or a different value: 403, no session.
    for (cookie_header, field) in
        [(None, Some(token.as_str())), (Some(cookie.as_str()), None), (Some(cookie.as_str()), Some("other"))]
    {
        let mut fields = form.to_vec();
        if let Some(f) = field {
            fields.push(("csrf_token", f));
        }
        let mut req = w.http.post(w.url("/console/login")).form(&fields);
        if let Some(c) = cookie_header {
            req = req.header(header::COOKIE, format!("byte8_console_login={c}"));
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
        assert!(set_cookie(&r, "byte8_console").is_none());
    }
}

#[tokio::test]
async fn a_login_checks_the_argon2_hash_and_sets_a_strict_http_only_cookie() {
    let w = ConsoleWorld::start().await;
    let r = w.post_login(OPERATOR, "correct horse battery stapler").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    assert!(set_cookie(&r, "byte8_console").is_none());
    assert!(r.text().await.unwrap().contains("Wrong name or password."));
    let r = w.post_login("nobody", PASSWORD).await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "an unknown name gets the same answer");
    assert!(r.text().await.unwrap().contains("Wrong name or password."));

    let r = w.post_login(OPERATOR, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let line = set_cookie_line(&r, "byte8_console").unwrap();
    assert!(line.contains("HttpOnly") && line.contains("SameSite=Strict") && line.contains("Path=/"), "{line}");
    assert!(!line.contains("Secure"), "plain http on loopback: no Secure ({line})");
    let session = set_cookie(&r, "byte8_console").unwrap();
    let page = w.get("/console", Some(&session)).await;
    assert_eq!(page.status(), StatusCode::OK);
    let headers = page.headers().clone();
    assert_eq!(headers.get(header::CACHE_CONTROL).unwrap(), "no-store");
    assert!(headers.get(header::CONTENT_SECURITY_POLICY).unwrap().to_str().unwrap().contains("script-src 'none'"));
    let html = page.text().await.unwrap();
    assert!(html.contains("Log out") && html.contains("Overview"), "{html}");
    // The store keeps the session id's hash, never the id.
    let sessions: Vec<String> =
        sqlx::query_scalar("SELECT id_hash FROM console_sessions").fetch_all(w.store.pool()).await.unwrap();
    assert_eq!(sessions.len(), 1);
    assert_ne!(sessions[0], session);
    let stored: String =
        sqlx::query_scalar("SELECT password_hash FROM operators").fetch_one(w.store.pool()).await.unwrap();
    assert!(stored.starts_with("$argon2id$") && !stored.contains(PASSWORD));
}

#[tokio::test]
async fn a_console_outside_loopback_sets_a_secure_cookie() {
    let w = ConsoleWorld::start_with(|mut c| {
        c.public_url = url::Url::parse("https://ledger.example.com/").unwrap();
        c.secure_cookies = ConsoleConfig::new(c.public_url.clone()).secure_cookies;
        c
    })
    .await;
    let r = w.post_login(OPERATOR, PASSWORD).await;
    assert!(set_cookie_line(&r, "byte8_console").unwrap().ends_with("; Secure"));
    assert!(ConsoleConfig::new(url::Url::parse("http://10.0.0.5:8080/").unwrap()).secure_cookies);
    assert!(!ConsoleConfig::new(url::Url::parse("http://localhost:8080/").unwrap()).secure_cookies);
}

#[tokio::test]
async fn login_attempts_beyond_the_limit_are_refused_even_with_the_right_password() {
    let w = ConsoleWorld::start().await;
    // Five attempts a minute per name (the default): five wrong ones, then the right one waits.
    for _ in 0..5 {
        assert_eq!(w.post_login(OPERATOR, "wrong password guess").await.status(), StatusCode::UNAUTHORIZED);
    }
    let r = w.post_login(OPERATOR, PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(set_cookie(&r, "byte8_console").is_none());
    assert!(r.text().await.unwrap().contains("Too many login attempts"));
    // The name is what is limited (case-insensitively): another name still logs in.
    assert_eq!(w.post_login("ADA", PASSWORD).await.status(), StatusCode::TOO_MANY_REQUESTS);
    let hash = hash_password(&SecretString::from("another long password".to_owned())).unwrap();
    w.console.store().put_operator("grace", &hash, w.clock.now()).await.unwrap();
    assert_eq!(w.post_login("grace", "another long password").await.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn sessions_expire_when_idle_and_at_their_lifetime() {
    let w = ConsoleWorld::start().await;
    let session = w.login().await;
    // Used every 50 minutes, it lives on (idle limit one hour)…
    for _ in 0..3 {
        w.clock.advance(chrono::Duration::minutes(50));
        assert_eq!(w.get("/console", Some(&session)).await.status(), StatusCode::OK);
    }
    // …but not 61 minutes after its last use.
    w.clock.advance(chrono::Duration::minutes(61));
    let r = w.get("/console", Some(&session)).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/console/login"));

    // However often used, twelve hours is the most.
    let session = w.login().await;
    // 15 × 50 min = 12.5 h.
    for _ in 0..15 {
        w.clock.advance(chrono::Duration::minutes(50));
        let _ = w.get("/console", Some(&session)).await;
    }
    assert_eq!(w.get("/console", Some(&session)).await.status(), StatusCode::SEE_OTHER);
    assert!(w.console.store().purge_sessions(w.clock.now()).await.unwrap() >= 2);
}

#[tokio::test]
async fn a_new_password_ends_the_operators_sessions() {
    let w = ConsoleWorld::start().await;
    let session = w.login().await;
    let hash = hash_password(&SecretString::from("a brand new password".to_owned())).unwrap();
    assert!(!w.console.store().put_operator(OPERATOR, &hash, w.clock.now()).await.unwrap(), "not a new operator");
    assert_eq!(w.get("/console", Some(&session)).await.status(), StatusCode::SEE_OTHER);
    assert_eq!(w.post_login(OPERATOR, PASSWORD).await.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(w.post_login(OPERATOR, "a brand new password").await.status(), StatusCode::SEE_OTHER);
}

/// The console store's contract, on any implementation.
async fn console_store_contract(store: &dyn ConsoleStore, prefix: &str) {
    let now = t0();
    let name = format!("{prefix}-op");
    let h1 = hash_password(&SecretString::from("first password here".to_owned())).unwrap();
    assert!(store.put_operator(&name, &h1, now).await.unwrap(), "new");
    assert_eq!(store.operator_hash(&name).await.unwrap().unwrap().expose_secret(), h1.expose_secret());
    assert!(store.operator_hash(&format!("{prefix}-nobody")).await.unwrap().is_none());
    assert!(store.operators().await.unwrap().iter().any(|o| o.name == name && o.created_at == now));

    let record = SessionRecord {
        operator: name.clone(),
        created_at: now,
        expires_at: now + chrono::Duration::hours(1),
        absolute_expires_at: now + chrono::Duration::hours(2),
    };
    let sid = format!("{prefix}-session");
    store.create_session(&sid, &record).await.unwrap();
    // Used at +30 min, renewed to +90 min; renewal never passes the absolute expiry.
    let used = store
        .use_session(&sid, now + chrono::Duration::minutes(30), now + chrono::Duration::minutes(90))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.expires_at, now + chrono::Duration::minutes(90));
    let used = store
        .use_session(&sid, now + chrono::Duration::minutes(80), now + chrono::Duration::hours(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(used.expires_at, now + chrono::Duration::hours(2));
    assert!(
        store
            .use_session(&sid, now + chrono::Duration::hours(2), now + chrono::Duration::hours(3))
            .await
            .unwrap()
            .is_none(),
        "expired at its absolute time"
    );
    let sid2 = format!("{prefix}-session-2");
    store.create_session(&sid2, &record).await.unwrap();
    assert!(store.delete_session(&sid2).await.unwrap());
    assert!(!store.delete_session(&sid2).await.unwrap());
    assert!(store.use_session(&sid2, now, now).await.unwrap().is_none());

    // A new hash ends the sessions.
    let sid3 = format!("{prefix}-session-3");
    store.create_session(&sid3, &record).await.unwrap();
    let h2 = hash_password(&SecretString::from("second password here".to_owned())).unwrap();
    assert!(!store.put_operator(&name, &h2, now).await.unwrap());
    assert!(store.use_session(&sid3, now, now + chrono::Duration::minutes(1)).await.unwrap().is_none());

    // Policy versions number from 1 per tenant, newest first.
    let tenant = format!("{prefix}-tenant");
    assert_eq!(store.add_policy_version(&tenant, "{\"a\":1}", &name, now, Some("as paired")).await.unwrap(), 1);
    assert_eq!(
        store
            .add_policy_version(&tenant, "{\"a\":2}", "grace", now + chrono::Duration::minutes(1), None)
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.add_policy_version(&format!("{tenant}-other"), "{}", &name, now, None).await.unwrap(), 1);
    let versions = store.policy_versions(&tenant).await.unwrap();
    assert_eq!(versions.iter().map(|v| v.version).collect::<Vec<_>>(), [2, 1]);
    assert_eq!(versions[0].changed_by, "grace");
    assert_eq!(versions[0].policy, "{\"a\":2}");
    assert_eq!(versions[1].note.as_deref(), Some("as paired"));
    assert_eq!(versions[1].changed_at, now);

    assert!(store.remove_operator(&name).await.unwrap());
    assert!(store.operator_hash(&name).await.unwrap().is_none());
    assert!(!store.remove_operator(&name).await.unwrap());
}

/// OAuth states are used once until they expire. On the real clock: a PostgreSQL database is
/// shared by tests running at once, and a store removes the records expired at the `now` it is
/// given (so a test moving its clock on would remove the others'); only a store of the test's
/// own (`private`) is taken past the expiry.
async fn oauth_state_contract(store: &dyn ConsoleStore, prefix: &str, private: bool) {
    let now = byte8_ledger_core::clock::SystemClock.now();
    let state = format!("{prefix}-state");
    let expires = now + chrono::Duration::minutes(10);
    assert!(store.use_oauth_state(&state, expires, now).await.unwrap(), "a state's first use");
    assert!(!store.use_oauth_state(&state, expires, now + chrono::Duration::seconds(1)).await.unwrap(), "replayed");
    assert!(store.use_oauth_state(&format!("{prefix}-other"), expires, now).await.unwrap(), "another state");
    if private {
        let later = now + chrono::Duration::minutes(11);
        assert!(
            store.use_oauth_state(&state, later + chrono::Duration::minutes(10), later).await.unwrap(),
            "an expired record is removed (the signer refuses an expired state anyway)"
        );
    }
}

/// Of many concurrent uses of one state through two handles of one database, exactly one is
/// accepted (the insert-if-absent is atomic).
async fn one_concurrent_use_of_a_state_wins(one: Arc<dyn ConsoleStore>, two: Arc<dyn ConsoleStore>, state: &str) {
    let now = byte8_ledger_core::clock::SystemClock.now();
    let mut tasks = Vec::new();
    for i in 0..8 {
        let store = if i % 2 == 0 { Arc::clone(&one) } else { Arc::clone(&two) };
        let state = state.to_owned();
        tasks.push(tokio::spawn(async move {
            store.use_oauth_state(&state, now + chrono::Duration::minutes(10), now).await.unwrap()
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        accepted += usize::from(t.await.unwrap());
    }
    assert_eq!(accepted, 1, "one use of {state} accepted");
}

#[tokio::test]
async fn an_oauth_state_is_used_once_across_two_handles_of_sqlite_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s.db");
    let one = Arc::new(SqliteStore::open(&path, None).await.unwrap());
    let two = Arc::new(SqliteStore::open(&path, None).await.unwrap());
    one_concurrent_use_of_a_state_wins(one, two, "lite-state").await;
    if let Some(url) =
        crate::support_postgres::url("an_oauth_state_is_used_once_across_two_handles_of_sqlite_and_postgres")
    {
        let one = Arc::new(crate::support_postgres::store(&url, 4, None).await);
        let two = Arc::new(crate::support_postgres::store(&url, 4, None).await);
        one_concurrent_use_of_a_state_wins(one, two, &crate::support_postgres::unique("pg-state")).await;
    }
}

#[tokio::test]
async fn the_console_store_keeps_its_contract_in_memory_sqlite_and_postgres() {
    console_store_contract(&MemoryConsoleStore::new(), "mem").await;
    oauth_state_contract(&MemoryConsoleStore::new(), "mem", true).await;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = SqliteStore::open(dir.path().join("s.db"), None).await.unwrap();
    console_store_contract(&sqlite, "lite").await;
    oauth_state_contract(&sqlite, "lite", true).await;
    if let Some(url) =
        crate::support_postgres::url("the_console_store_keeps_its_contract_in_memory_sqlite_and_postgres")
    {
        let pg = crate::support_postgres::store(&url, 2, None).await;
        console_store_contract(&pg, &crate::support_postgres::unique("pg")).await;
        oauth_state_contract(&pg, &crate::support_postgres::unique("pg"), false).await;
    }
}
