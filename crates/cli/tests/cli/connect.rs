//! `byte8-ledger connect` through the browser flow and `disconnect`, against the simulators: the
//! test plays the browser (it opens the printed authorize address, clicks approve, and follows
//! the redirect to the command's loopback listener).

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::{Arc, mpsc},
};

use byte8_ledger_core::{
    clock::{Clock, ManualClock},
    reference::ReferenceData,
};
use byte8_ledger_simulators::{
    SageSimulator, SimConfig, SimServer,
    xero::{XERO_DEMO_TENANT, XeroSimConfig, XeroSimulator},
};

use crate::support_browser::{client, consent};

const KEY: &str = "Ynl0ZTgtbGVkZ2VyLWNoYW9zLXNvYWstbWFzdGVyLWs=";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_byte8-ledger"));
    for v in [
        "SAGE_CLIENT_ID",
        "SAGE_CLIENT_SECRET",
        "XERO_CLIENT_ID",
        "XERO_CLIENT_SECRET",
        "BYTE8_REFRESH_TOKEN",
        "BYTE8_DATABASE_URL",
    ] {
        c.env_remove(v);
    }
    c.env("LEDGER_MASTER_KEY", KEY).env("RUST_LOG", "trace").env("XERO_REQUESTS_PER_MINUTE", "0");
    c
}

fn sage_env(mut c: Command) -> Command {
    c.env("SAGE_CLIENT_ID", "demo-client").env("SAGE_CLIENT_SECRET", "demo-secret");
    c
}

fn xero_env(mut c: Command) -> Command {
    c.env("XERO_CLIENT_ID", "demo-client").env("XERO_CLIENT_SECRET", "demo-secret");
    c
}

/// A running `connect`: its stdout lines as they come, and its stderr read all along (at trace
/// level the logs outgrow a pipe's buffer: a command left to fill it blocks on its next write).
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl Running {
    fn start(mut c: Command) -> Self {
        let mut child = c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut stderr = child.stderr.take().unwrap();
        let stderr = std::thread::spawn(move || {
            let mut err = String::new();
            let _ = std::io::Read::read_to_string(&mut stderr, &mut err);
            err
        });
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines, seen: Vec::new(), stderr }
    }

    /// The authorize address the command printed.
    fn authorize_url(&mut self) -> String {
        loop {
            let line = self.lines.recv().unwrap_or_else(|_| panic!("no address printed: {:?}", self.seen));
            self.seen.push(line.clone());
            if let Some(url) = line.strip_prefix("  http") {
                return format!("http{url}");
            }
        }
    }

    /// Exit code, stdout, stderr.
    fn finish(mut self) -> (Option<i32>, String, String) {
        let status = self.child.wait().unwrap();
        let err = self.stderr.join().unwrap();
        self.seen.extend(self.lines.iter());
        (status.code(), self.seen.join("\n"), err)
    }
}

fn redirect_of(authorize: &str) -> String {
    url::Url::parse(authorize).unwrap().query_pairs().find(|(k, _)| k == "redirect_uri").unwrap().1.into_owned()
}

fn sage_connect(state: &Path, server: &SimServer, extra: &[&str]) -> Command {
    let mut c = sage_env(bin());
    c.args(["connect", "--no-browser", "--port", "0", "--state"])
        .arg(state)
        .args(["--sage-authorize-url", &server.authorize_url()])
        .args(["--sage-base-url", &server.base_url(), "--sage-token-url", &server.token_url()])
        .args(extra);
    c
}

fn two_business_sim(clock: Arc<ManualClock>) -> SageSimulator {
    let sim = SageSimulator::with_clock(SimConfig::default(), clock as Arc<dyn Clock>);
    sim.add_business(ReferenceData::demo_uk(chrono::DateTime::UNIX_EPOCH));
    let mut second = ReferenceData::demo_uk(chrono::DateTime::UNIX_EPOCH);
    second.business.id = "second-business".into();
    second.business.name = "Second Shop Ltd".into();
    sim.add_business(second);
    sim
}

fn run(c: &mut Command) -> (Option<i32>, String, String) {
    let o = c.output().unwrap();
    (o.status.code(), String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sage_connect_through_the_browser_refuses_a_wrong_state_stores_the_business_and_disconnect_revokes() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let clock = Arc::new(ManualClock::new(byte8_ledger_core::clock::SystemClock.now()));
    let sim = two_business_sim(Arc::clone(&clock));
    let server = sim.serve().await.unwrap();
    let mut running = Running::start(sage_connect(&state, &server, &["--business-id", "demo-business"]));
    let authorize = running.authorize_url();
    assert!(authorize.contains("scope=full_access") && authorize.contains("state="), "{authorize}");

    // A callback with another state is refused, and the command keeps waiting.
    let redirect = redirect_of(&authorize);
    let forged = client().get(format!("{redirect}?code=GB%2Fforged&state=not-the-one")).send().await.unwrap();
    assert_eq!(forged.status().as_u16(), 400);
    assert!(forged.text().await.unwrap().contains("refused"));

    // The person approves; the browser follows the redirect to the command.
    let back = consent(&authorize, "approve").await;
    assert!(back.query().unwrap().contains("code=GB%2F"), "{back}");
    let page = client().get(back.as_str()).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("connected to Demo Shop Ltd"));
    let (code, out, err) = running.finish();
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains("connected to Demo Shop Ltd (demo-business)"), "{out}");
    assert!(out.contains("also reaches second-business"), "{out}");
    // Logged at trace level, the flow never shows the code, a token or the client secret.
    assert!(err.contains("TRACE") || err.contains("DEBUG"), "the logs are on: {err}");
    // (The simulator's codes are `GB/sim-code-…`: the part after the prefix, encoded or not.)
    assert!(back.query().unwrap().contains("sim-code-"));
    for secret in ["sim-code-", "sim-access-", "sim-refresh-", "demo-secret"] {
        assert!(!format!("{out}{err}").contains(secret), "{secret} shown:\n{out}\n{err}");
    }

    // The replayed callback finds nobody listening any more.
    assert!(client().get(back.as_str()).send().await.is_err(), "the listener is gone once connected");

    // status: Sage said 31 days; a moment later 30 whole days remain.
    let (code, out, err) = run(bin().args(["status", "--state"]).arg(&state));
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("refresh token  30 day(s) left"), "{out}");
    let (_, json, _) = run(bin().args(["status", "--json", "--state"]).arg(&state));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v[0]["refresh_token"]["days_left"], 30, "{json}");
    assert_eq!(v[0]["refresh_token"]["basis"], "reported", "{json}");

    // disconnect: Sage's revocation is tried and confirmed by the simulator; tokens gone.
    let (code, out, err) = run(sage_env(bin()).args(["disconnect", "--state"]).arg(&state));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("tokens deleted") && out.contains("revoked at the provider"), "{out}");
    assert!(!out.contains("not revoked"), "{out}");
    assert_eq!(sim.with_state(|s| s.revocations), 1);
    let (_, out, _) = run(bin().args(["status", "--state"]).arg(&state));
    assert!(out.contains("none stored"), "{out}");

    // Without the client credentials the tokens still go, and the output says they were not revoked.
    let mut again = Running::start(sage_connect(&state, &server, &["--business-id", "demo-business"]));
    let back = consent(&again.authorize_url(), "approve").await;
    client().get(back.as_str()).send().await.unwrap();
    assert_eq!(again.finish().0, Some(0));
    let (code, out, _) = run(bin().args(["disconnect", "--state"]).arg(&state));
    assert_eq!(code, Some(0));
    assert!(out.contains("deleted locally, not revoked at the provider") && out.contains("SAGE_CLIENT_ID"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_businesses_without_a_choice_and_no_terminal_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let sim = two_business_sim(Arc::new(ManualClock::new(byte8_ledger_core::clock::SystemClock.now())));
    let server = sim.serve().await.unwrap();
    let mut running = Running::start(sage_connect(&state, &server, &[]));
    let back = consent(&running.authorize_url(), "approve").await;
    let page = client().get(back.as_str()).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 400);
    let (code, out, err) = running.finish();
    assert_eq!(code, Some(2), "{out}{err}");
    assert!(err.contains("reaches 2 businesses and no terminal"), "{err}");
    assert!(err.contains("--business-id") && err.contains("second-business"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_code_says_run_connect_again() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let clock = Arc::new(ManualClock::new(byte8_ledger_core::clock::SystemClock.now()));
    let sim = two_business_sim(Arc::clone(&clock));
    let server = sim.serve().await.unwrap();
    let mut running = Running::start(sage_connect(&state, &server, &["--business-id", "demo-business"]));
    let back = consent(&running.authorize_url(), "approve").await;
    // The browser is slow: a minute passes on the simulator's clock.
    clock.advance(chrono::Duration::seconds(61));
    let page = client().get(back.as_str()).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 400);
    assert!(page.text().await.unwrap().contains("run connect again"));
    let (code, out, err) = running.finish();
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(err.contains("the code expired") && err.contains("run connect again"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xero_connect_through_the_browser_with_pkce_then_disconnect_revokes_the_grant() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state.db");
    let sim = XeroSimulator::demo(XeroSimConfig::unlimited());
    let server = sim.serve().await.unwrap();
    let mut c = xero_env(bin());
    c.args(["connect", "--provider", "xero", "--no-browser", "--port", "0", "--state"])
        .arg(&state)
        .args(["--xero-authorize-url", &server.authorize_url()])
        .args(["--xero-base-url", &server.base_url(), "--xero-token-url", &server.token_url()])
        .args(["--xero-connections-url", &server.connections_url()]);
    let mut running = Running::start(c);
    let authorize = running.authorize_url();
    assert!(authorize.contains("code_challenge_method=S256") && authorize.contains("offline_access"), "{authorize}");
    let back = consent(&authorize, "approve").await;
    assert_eq!(client().get(back.as_str()).send().await.unwrap().status().as_u16(), 200);
    let (code, out, err) = running.finish();
    assert_eq!(code, Some(0), "{out}\n{err}");
    assert!(out.contains(&format!("({XERO_DEMO_TENANT})")), "{out}");

    // Xero gives no refresh-token expiry: 60 documented days from the exchange.
    let (_, out, _) = run(bin().args(["status", "--state"]).arg(&state));
    assert!(out.contains("refresh token  59 day(s) left"), "{out}");

    let (code, out, err) = run(xero_env(bin()).args(["disconnect", "--state"]).arg(&state));
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("revoked at the provider") && out.contains("/connect/revocation"), "{out}");
    assert_eq!(sim.with_state(|s| s.revocations), 1);
    assert!(sim.with_state(|s| s.disconnected.contains(XERO_DEMO_TENANT)));
}
