//! `connect` without a refresh token: the OAuth authorisation-code flow on the command line,
//! and `disconnect`.
//!
//! `connect` builds the provider's authorize URL ([`OAuthApp::authorize`]: a random `state`,
//! PKCE for Xero), prints it and opens the browser (unless `--no-browser`), and listens on the
//! loopback redirect (`http://127.0.0.1:PORT/callback`, or the `--redirect-uri` the app
//! registered, which must be a loopback `http` address). A callback whose `state` is not the one
//! sent is refused (400) and the command keeps waiting; the first good one is exchanged at once
//! (Sage's code lives 60 seconds), the businesses (Sage) or organisations (Xero) the token
//! reaches are listed, and the one picked (`--business-id` / `--tenant-id`, the only one, or a
//! prompt when stdin is a terminal) is stored with the tokens, encrypted. The browser's page says
//! how it ended; the terminal says what to do next.
//!
//! `disconnect` revokes the stored tokens where the provider documents revocation
//! ([`OAuthApp::revoke`]) and forgets them locally in any case, saying whether the provider
//! confirmed.

use std::{io::Write, time::Duration};

use secrecy::SecretString;
use tokio::sync::{mpsc, oneshot};

use super::{Failure, StoreArgs, database, io, usage};
use byte8_ledger_core::{
    auth::{
        TokenSet,
        connect::{Callback, OAuthApp, ReachableBusiness, random_state, same_state},
    },
    clock::{Clock, SystemClock},
    store::{ProviderKind, crypto::MasterKey},
};

/// Where the provider's endpoints are (defaults: the real ones; the simulators' for a demo).
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    /// The authorize endpoint.
    pub authorize_url: String,
    /// The token endpoint.
    pub token_url: String,
    /// The API root (stored with the connection).
    pub base_url: String,
    /// Xero's connections endpoint.
    pub connections_url: Option<String>,
}

/// How the authorisation-code flow runs.
#[derive(Debug, Clone)]
pub(crate) struct FlowArgs {
    /// The registered redirect URI, when not `http://127.0.0.1:PORT/callback`.
    pub redirect_uri: Option<String>,
    /// The loopback port (0: any free port; the app's registration must then allow it).
    pub port: u16,
    /// Do not try to open a browser.
    pub no_browser: bool,
    /// How long to wait for the browser to come back.
    pub timeout: Duration,
    /// The business (Sage) or organisation (Xero) to store, when the token reaches several.
    pub business_id: Option<String>,
}

/// What the loopback listener hands the flow: the callback, and where to send the page the
/// browser shows once the flow is over.
type Arrival = (Callback, oneshot::Sender<(u16, String)>);

fn page(title: &str, text: &str) -> String {
    format!(
        "<!doctype html><meta charset=utf-8><title>byte8-ledger: {t}</title><h1>{t}</h1><p>{x}</p><p>You can close this tab and return to the terminal.</p>",
        t = html_escape::encode_text(title),
        x = html_escape::encode_text(text)
    )
}

/// The loopback listener's address and path for `redirect`.
fn loopback(redirect: &url::Url) -> Result<(std::net::SocketAddr, String), Failure> {
    let host = redirect.host_str().unwrap_or("");
    let ip: std::net::IpAddr = match host {
        "localhost" => std::net::Ipv4Addr::LOCALHOST.into(),
        h => h.trim_start_matches('[').trim_end_matches(']').parse().map_err(|_| {
            usage(format!(
                "--redirect-uri {redirect}: the command receives the redirect itself, so it must be a loopback http address (http://127.0.0.1:PORT/PATH or http://localhost:PORT/PATH) registered with the app"
            ))
        })?,
    };
    if redirect.scheme() != "http" || !ip.is_loopback() {
        return Err(usage(format!(
            "--redirect-uri {redirect}: must be a loopback http address (http://127.0.0.1:PORT/PATH) registered with the app"
        )));
    }
    let port = redirect.port().unwrap_or(80);
    Ok((std::net::SocketAddr::new(ip, port), redirect.path().to_owned()))
}

/// Serves the callback path until the flow ends: each request with the expected `state` (or a
/// provider error with it) goes to the flow, whose answer is the page; others get a 400 page.
async fn listen(
    listener: tokio::net::TcpListener,
    path: String,
    state: String,
    kind: ProviderKind,
    tx: mpsc::Sender<Result<Arrival, String>>,
    stop: oneshot::Receiver<()>,
) {
    use axum::{extract::RawQuery, response::Html};
    let handler = move |RawQuery(query): RawQuery| {
        let (tx, state) = (tx.clone(), state.clone());
        async move {
            let query = query.unwrap_or_default();
            let echoed: Option<String> =
                url::form_urlencoded::parse(query.as_bytes()).find(|(k, _)| k == "state").map(|(_, v)| v.into_owned());
            if !echoed.as_deref().is_some_and(|s| same_state(s, &state)) {
                tracing::warn!("a callback with a state this command did not send was refused");
                let text = "The state in this address is not the one this command sent (a stale, replayed or forged authorisation): it was refused. Use the address the command printed.";
                return (axum::http::StatusCode::BAD_REQUEST, Html(page("refused", text)));
            }
            match Callback::parse(kind, &query) {
                Ok(cb) => {
                    let (reply, answer) = oneshot::channel();
                    if tx.send(Ok((cb, reply))).await.is_err() {
                        return (
                            axum::http::StatusCode::GONE,
                            Html(page("too late", "This authorisation was used already.")),
                        );
                    }
                    let (status, text) =
                        answer.await.unwrap_or((500, "The command stopped before it finished.".to_owned()));
                    let title = if status == 200 { "connected" } else { "not connected" };
                    (
                        axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK),
                        Html(page(title, &text)),
                    )
                }
                Err(e) => {
                    let text = e.to_string();
                    let _ = tx.send(Err(text.clone())).await;
                    (axum::http::StatusCode::BAD_REQUEST, Html(page("not connected", &text)))
                }
            }
        }
    };
    let app = axum::Router::new().route(&path, axum::routing::get(handler));
    let _ = axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = stop.await;
        })
        .await;
}

fn credentials(kind: ProviderKind) -> Result<(String, SecretString), Failure> {
    let (id, secret) = match kind {
        ProviderKind::Sage => ("SAGE_CLIENT_ID", "SAGE_CLIENT_SECRET"),
        _ => ("XERO_CLIENT_ID", "XERO_CLIENT_SECRET"),
    };
    Ok((super::env(id)?, SecretString::from(super::env(secret)?)))
}

/// Picks the business to store among `reached`.
fn choose(
    kind: ProviderKind,
    reached: &[ReachableBusiness],
    wanted: Option<&str>,
    out: &mut dyn Write,
) -> Result<ReachableBusiness, Failure> {
    let (noun, nouns, flag) = match kind {
        ProviderKind::Sage => ("business", "businesses", "--business-id"),
        _ => ("organisation", "organisations", "--tenant-id"),
    };
    let listed = || reached.iter().map(|b| format!("{} ({})", b.id, b.name)).collect::<Vec<_>>().join(", ");
    if let Some(w) = wanted {
        return reached.iter().find(|b| b.id == w).cloned().ok_or_else(|| {
            usage(format!(
                "{noun} {w} is not among those this authorisation reaches: {}; run connect again with one of them",
                listed()
            ))
        });
    }
    match reached {
        [] => Err(Failure {
            code: 1,
            message: format!(
                "the authorisation reaches no {noun}: sign in as a user of the {noun} to connect (for Sage, the business's own login, in its country), then run connect again"
            ),
        }),
        [only] => Ok(only.clone()),
        several => {
            use std::io::IsTerminal;
            if !std::io::stdin().is_terminal() {
                return Err(usage(format!(
                    "the authorisation reaches {} {nouns} and no terminal is attached to choose: run connect again with {flag} ID ({})",
                    several.len(),
                    listed()
                )));
            }
            writeln!(out, "This authorisation reaches {} {nouns}:", several.len()).map_err(io)?;
            for (i, b) in several.iter().enumerate() {
                writeln!(out, "  {}. {} ({})", i + 1, b.name, b.id).map_err(io)?;
            }
            write!(out, "Which one to connect? [1-{}] ", several.len()).map_err(io)?;
            out.flush().map_err(io)?;
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).map_err(|e| usage(format!("cannot read the choice: {e}")))?;
            line.trim()
                .parse::<usize>()
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| several.get(i))
                .cloned()
                .ok_or_else(|| {
                    usage(format!("`{}` is not one of 1 to {}: run connect again", line.trim(), several.len()))
                })
        }
    }
}

/// `connect` without a refresh token: the authorisation-code flow.
pub(crate) async fn run(
    kind: ProviderKind,
    store_args: StoreArgs,
    endpoints: Endpoints,
    flow: FlowArgs,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let (client_id, secret) = credentials(kind)?;
    // The store (and the key) first: a flow that cannot store what it gets is not started.
    let (db, _lock) = database::Database::open_locked(&store_args, Some(MasterKey::from_env()?), "connect").await?;
    let (listener, redirect) = match &flow.redirect_uri {
        Some(r) => {
            let url = url::Url::parse(r).map_err(|e| usage(format!("--redirect-uri {r}: not a URL: {e}")))?;
            let (addr, _) = loopback(&url)?;
            let l = tokio::net::TcpListener::bind(addr).await.map_err(|e| {
                usage(format!("cannot listen on {addr} for --redirect-uri {r}: {e}; free the port or register another"))
            })?;
            (l, url)
        }
        None => {
            let l = tokio::net::TcpListener::bind(("127.0.0.1", flow.port)).await.map_err(|e| {
                usage(format!(
                    "cannot listen on 127.0.0.1:{}: {e}; free the port or choose another with --port (and register http://127.0.0.1:PORT/callback with the app)",
                    flow.port
                ))
            })?;
            let port = l.local_addr().map_err(|e| Failure { code: 1, message: e.to_string() })?.port();
            let url = url::Url::parse(&format!("http://127.0.0.1:{port}/callback"))
                .map_err(|e| Failure { code: 1, message: e.to_string() })?;
            (l, url)
        }
    };
    let (_, path) = loopback(&redirect)?;
    let mut app = OAuthApp::new(kind, client_id, secret, redirect.as_str())?
        .with_authorize_url(&endpoints.authorize_url)?
        .with_token_url(&endpoints.token_url)?;
    app = match kind {
        ProviderKind::Sage => app.with_api_url(&endpoints.base_url)?,
        _ => app.with_api_url(endpoints.connections_url.as_deref().unwrap_or_default())?,
    };
    let request = app.authorize(random_state());
    let (tx, mut rx) = mpsc::channel(4);
    let (stop_tx, stop_rx) = oneshot::channel();
    let server = tokio::spawn(listen(listener, path, request.state.clone(), kind, tx, stop_rx));

    let who = match kind {
        ProviderKind::Sage => "Sage",
        _ => "Xero",
    };
    writeln!(out, "Open this address in a browser and approve the connection at {who}:").map_err(io)?;
    writeln!(out, "  {}", request.url).map_err(io)?;
    writeln!(
        out,
        "Waiting for {who} to send the browser back to {redirect} (the app's registered redirect URI must be exactly this; Ctrl-C stops)."
    )
    .map_err(io)?;
    out.flush().map_err(io)?;
    if !flow.no_browser && webbrowser::open(request.url.as_str()).is_err() {
        writeln!(out, "(No browser could be opened here: open the address above yourself.)").map_err(io)?;
        out.flush().map_err(io)?;
    }

    let arrival = tokio::time::timeout(flow.timeout, rx.recv()).await;
    let result = match arrival {
        Err(_) => Err(Failure {
            code: 1,
            message: format!(
                "no authorisation came back within {} seconds: run connect again and approve it in the browser",
                flow.timeout.as_secs()
            ),
        }),
        Ok(None) => Err(Failure { code: 1, message: "the redirect listener stopped: run connect again".into() }),
        Ok(Some(Err(provider_error))) => Err(Failure { code: 1, message: provider_error }),
        Ok(Some(Ok((callback, reply)))) => {
            let finished = finish(&app, &db, &endpoints, &flow, &request, callback, out).await;
            let page = match &finished {
                Ok(text) => (200, text.clone()),
                Err(f) => (400, f.message.clone()),
            };
            let _ = reply.send(page);
            finished.map(drop)
        }
    };
    // The listener answers the page, then stops.
    let _ = stop_tx.send(());
    let _ = server.await;
    result
}

/// After the callback: exchange, list, choose, store, check.
async fn finish(
    app: &OAuthApp,
    db: &database::Database,
    endpoints: &Endpoints,
    flow: &FlowArgs,
    request: &byte8_ledger_core::auth::connect::AuthorizeRequest,
    callback: Callback,
    out: &mut dyn Write,
) -> Result<String, Failure> {
    let kind = app.kind();
    let now = SystemClock.now();
    let tokens: TokenSet = app.exchange_code(&callback.code, request.pkce.as_ref(), now).await?;
    drop(callback);
    let reached = app.businesses(&tokens.access_token).await?;
    let chosen = choose(kind, &reached, flow.business_id.as_deref(), out)?;
    let connection = app.connection(&chosen, &endpoints.base_url, now);
    let store = db.service();
    store.save_connection(&connection).await?;
    store.save_tokens(&connection.scope, &tokens).await?;
    let provider = db.provider_for(&connection)?;
    let reference = provider.reference_data(true).await?;
    store.save_reference(&connection.scope, &reference).await?;
    let text = format!(
        "connected to {} ({}), base currency {}, {} tax rates; tokens stored encrypted in {db}",
        reference.business.name,
        connection.scope,
        reference.business.base_currency.code(),
        reference.tax_rates.len(),
    );
    writeln!(out, "{text}").map_err(io)?;
    if reached.len() > 1 {
        writeln!(
            out,
            "(the authorisation also reaches {}: run connect again to store another)",
            reached.iter().filter(|b| b.id != chosen.id).map(|b| b.id.as_str()).collect::<Vec<_>>().join(", ")
        )
        .map_err(io)?;
    }
    Ok(text)
}

/// `disconnect`: revoke where the provider documents it, forget the tokens locally in any case.
pub(crate) async fn disconnect(
    store_args: StoreArgs,
    business_id: Option<String>,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let (db, _lock) = database::Database::open_locked(&store_args, Some(MasterKey::from_env()?), "disconnect").await?;
    let store = db.service();
    let all = store.connections().await?;
    let connection = match business_id {
        Some(id) => all
            .into_iter()
            .find(|c| c.scope == id)
            .ok_or_else(|| usage(format!("no connection for business {id} in {db}")))?,
        None => match all.len() {
            0 => return Err(usage(format!("{db} holds no connection"))),
            1 => all.into_iter().next().ok_or_else(|| usage("no connection"))?,
            n => return Err(usage(format!("{db} holds {n} connections: choose one with --business-id"))),
        },
    };
    let revocation = revoke_stored(&store, &connection).await;
    store.forget_tokens(&connection.scope).await?;
    match revocation {
        None => writeln!(out, "business {} had no stored tokens; nothing to revoke", connection.scope).map_err(io)?,
        Some(r) => {
            writeln!(out, "business {}: tokens deleted from {db}; {r}", connection.scope).map_err(io)?;
        }
    }
    writeln!(out, "run `byte8-ledger connect` to connect it again").map_err(io)?;
    Ok(())
}

/// Revokes the stored tokens of `connection` at its provider as far as it documents revocation
/// ([`OAuthApp::revoke`]): `None` when no tokens are stored, else what happened, in words
/// ("revoked at the provider: …" or "deleted locally, not revoked at the provider: …"). The
/// caller forgets the tokens in any case.
pub(crate) async fn revoke_stored(
    store: &std::sync::Arc<dyn byte8_ledger_service::store::ServiceStore>,
    connection: &byte8_ledger_core::store::Connection,
) -> Option<String> {
    let not = |why: String| Some(format!("deleted locally, not revoked at the provider: {why}"));
    let tokens = match store.tokens(&connection.scope).await {
        Ok(None) => return None,
        Ok(Some(t)) => t,
        Err(e) => return not(format!("the stored tokens cannot be read ({e})")),
    };
    let Some(kind) = connection.kind() else {
        return not(format!("unknown provider `{}`", connection.provider));
    };
    let (id, secret) = match credentials(kind) {
        Ok(c) => c,
        Err(f) => return not(f.message),
    };
    let app = OAuthApp::new(kind, id, secret, "http://127.0.0.1/callback")
        .and_then(|a| a.with_token_url(&connection.token_url))
        .and_then(|a| match kind {
            ProviderKind::Sage => a.with_api_url(&connection.base_url),
            _ => a.with_api_url(connection.connections_url.as_deref().unwrap_or_default()),
        });
    match app {
        Ok(app) => Some(app.revoke(&tokens, &connection.scope, SystemClock.now()).await.to_string()),
        Err(e) => not(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redirect_must_be_a_loopback_http_address_the_command_can_listen_on() {
        let ok = |u: &str| loopback(&url::Url::parse(u).unwrap()).map_err(|f| f.message);
        assert_eq!(
            ok("http://127.0.0.1:8765/callback").unwrap(),
            ("127.0.0.1:8765".parse().unwrap(), "/callback".into())
        );
        assert_eq!(
            ok("http://localhost:3000/oauth/cb").unwrap(),
            ("127.0.0.1:3000".parse().unwrap(), "/oauth/cb".into())
        );
        assert_eq!(ok("http://[::1]:9000/cb").unwrap().0, "[::1]:9000".parse().unwrap());
        for bad in ["https://shop.example.com/callback", "http://192.168.1.2:80/cb", "https://127.0.0.1:8765/cb"] {
            let e = ok(bad).unwrap_err();
            assert!(e.contains("loopback"), "{bad}: {e}");
        }
    }

    #[test]
    fn a_chosen_business_must_be_one_the_authorisation_reaches() {
        let reached = vec![
            ReachableBusiness { id: "b1".into(), name: "One".into(), connection_id: None },
            ReachableBusiness { id: "b2".into(), name: "Two".into(), connection_id: None },
        ];
        let mut out = Vec::new();
        assert_eq!(choose(ProviderKind::Sage, &reached, Some("b2"), &mut out).unwrap().id, "b2");
        let e = choose(ProviderKind::Sage, &reached, Some("b9"), &mut out).unwrap_err();
        assert!(e.message.contains("b9") && e.message.contains("b1 (One)"), "{}", e.message);
        assert_eq!(choose(ProviderKind::Sage, &reached[..1], None, &mut out).unwrap().id, "b1");
        let e = choose(ProviderKind::Xero, &[], None, &mut out).unwrap_err();
        assert!(e.message.contains("no organisation"), "{}", e.message);
    }
}
