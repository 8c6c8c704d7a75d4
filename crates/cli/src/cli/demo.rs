//! `byte8-ledger demo`: the built-in Sage simulator on loopback, the bundled sample events synced
//! through the real engine, SQLite store and HTTP client, and a readable account of what Sage now
//! holds. `demo --provider xero` does the same into the Xero simulator, with the sample events
//! synced in batches (`SyncEngine::sync_lines`) and the Xero sample policy.

use std::{io::Write, path::PathBuf, sync::Arc};

use secrecy::{ExposeSecret as _, SecretString};

use super::{Failure, io, read_policy};
use byte8_ledger_core::{
    auth::TokenSet,
    clock::{Clock, SystemClock},
    engine::SyncEngine,
    money::format_money,
    outcome::{Outcome, SyncStatus},
    policy::SyncPolicy,
    providers::sage::{PROVIDER, SageBuilder},
    store::{Connection, ConnectionStore, ScopedTokenStore, Store, crypto::MasterKey, sqlite::SqliteStore},
};
use byte8_ledger_simulators::{DEMO_REFRESH_TOKEN, SageSimulator, SimConfig};

/// The bundled sample events.
pub(super) const SAMPLE_EVENTS: &str = include_str!("../../../../samples/events.jsonl");
/// The bundled sample policy.
pub(super) const SAMPLE_POLICY: &str = include_str!("../../../../samples/policy.json");
/// The bundled sample policy of the Xero demo organisation (account codes, Xero tax types).
pub(super) const SAMPLE_POLICY_XERO: &str = include_str!("../../../../samples/policy.xero.json");

const BUSINESS: &str = "demo-business";

fn writes(sim: &SageSimulator) -> u64 {
    sim.requests().iter().filter(|(k, _)| !k.starts_with("GET")).map(|(_, n)| *n).sum()
}

pub(super) async fn run(
    events: Option<PathBuf>,
    policy: Option<PathBuf>,
    show_outcomes: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let events = match events {
        Some(p) => {
            std::fs::read_to_string(&p).map_err(|e| super::usage(format!("cannot read {}: {e}", p.display())))?
        }
        None => SAMPLE_EVENTS.to_owned(),
    };
    let policy = match policy {
        Some(p) => read_policy(Some(p))?,
        None => SyncPolicy::from_json(SAMPLE_POLICY)?,
    };
    let sim = SageSimulator::demo(SimConfig::default());
    let server =
        sim.serve().await.map_err(|e| Failure { code: 1, message: format!("cannot start the simulator: {e}") })?;
    let store = Arc::new(SqliteStore::in_memory(Some(MasterKey::generate())).await?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    store
        .save_connection(&Connection {
            scope: BUSINESS.into(),
            provider: PROVIDER.into(),
            base_url: server.base_url(),
            token_url: server.token_url(),
            created_at: clock.now(),
            tenant_id: None,
            connections_url: None,
        })
        .await?;
    // Connected as a person connects a real business (`byte8-ledger connect`): the authorize
    // address, the simulator's approval page, the code exchanged at once.
    let (tokens, connected) = match consent(&server).await {
        Ok(t) => t,
        Err(why) => {
            tracing::warn!(error = %why, "the simulated approval failed; connecting with the demo refresh token");
            (TokenSet::from_refresh_token(SecretString::from(DEMO_REFRESH_TOKEN.to_owned())), why)
        }
    };
    store.save_tokens(BUSINESS, &tokens).await?;
    let sage = Arc::new(
        SageBuilder::new()
            .with_client_id("demo-client")
            .with_client_secret(SecretString::from("demo-secret".to_owned()))
            .with_business_id(BUSINESS)
            .with_base_url(server.base_url())
            .with_token_url(server.token_url())
            .with_token_store(Arc::new(ScopedTokenStore::new(
                Arc::clone(&store) as Arc<dyn byte8_ledger_core::store::ConnectionStoreDyn>,
                BUSINESS,
            )))
            .build()?,
    );
    let store_dyn: Arc<dyn Store> = Arc::clone(&store) as Arc<dyn Store>;
    let engine = SyncEngine::new(
        Arc::clone(&sage) as Arc<dyn byte8_ledger_core::providers::AccountingProvider>,
        store_dyn,
        BUSINESS,
        policy,
        clock,
    );
    engine.check_policy().await?;

    let w = |out: &mut dyn Write, text: String| writeln!(out, "{text}").map_err(io);
    w(
        out,
        format!(
            "byte8-ledger demo: Sage simulator on {} (business {BUSINESS}), state in an in-memory SQLite store",
            server.addr()
        ),
    )?;
    w(out, connected)?;
    w(out, String::new())?;
    w(out, "Events".into())?;
    let lines: Vec<&str> = events.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut outcomes = Vec::new();
    for line in &lines {
        let o = engine.sync_line(line).await?;
        w(out, describe(&o))?;
        if show_outcomes {
            w(out, format!("    {}", serde_json::to_string(&o).unwrap_or_default()))?;
        }
        outcomes.push(o);
    }
    let before = writes(&sim);
    for line in &lines {
        engine.sync_line(line).await?;
    }
    let replay_writes = writes(&sim) - before;

    let Some(b) = sim.business(BUSINESS) else {
        return Err(Failure { code: 1, message: "the simulator lost its business".into() });
    };
    let contact_ref =
        |id: &str| b.contacts.iter().find(|c| c.id == id).and_then(|c| c.reference.clone()).unwrap_or_default();
    w(out, String::new())?;
    w(out, "What Sage now holds".into())?;
    w(out, format!("  Contacts ({}):", b.contacts.len()))?;
    for c in &b.contacts {
        w(out, format!("    {:<11} {:<28} {}", c.reference.as_deref().unwrap_or(""), c.name, c.currency))?;
    }
    w(out, format!("  Sales invoices ({}):", b.invoices.len()))?;
    for d in &b.invoices {
        let status = if d.voided {
            "void"
        } else if d.outstanding.is_zero() {
            "paid"
        } else {
            "outstanding"
        };
        w(
            out,
            format!(
                "    {:<6} {:<15} {:<11} {} {:>9} net {:>8} tax {:>7}  {status} {}",
                d.number,
                d.reference,
                contact_ref(&d.contact_id),
                d.currency,
                format_money(d.total),
                format_money(d.net),
                format_money(d.tax),
                if d.outstanding.is_zero() || d.voided { String::new() } else { format_money(d.outstanding) }
            ),
        )?;
    }
    w(out, format!("  Sales credit notes ({}):", b.credit_notes.len()))?;
    for d in &b.credit_notes {
        w(
            out,
            format!(
                "    {:<6} {:<15} {:<11} {} {:>9}  {}",
                d.number,
                d.reference,
                contact_ref(&d.contact_id),
                d.currency,
                format_money(d.total),
                if d.outstanding.is_zero() {
                    "allocated".to_owned()
                } else {
                    format!("open credit {}", format_money(d.outstanding))
                }
            ),
        )?;
    }
    let number = |id: &str| {
        b.invoices.iter().chain(&b.credit_notes).find(|d| d.id == id).map(|d| d.number.clone()).unwrap_or_default()
    };
    w(out, format!("  Customer receipts ({}):", b.payments.len()))?;
    for p in &b.payments {
        let to: Vec<String> =
            p.artefacts.iter().map(|(id, a)| format!("{} {}", number(id), format_money(*a))).collect();
        w(
            out,
            format!(
                "    {:<15} {:<11} {:>9}  allocated to {}",
                p.reference.as_deref().unwrap_or(""),
                contact_ref(&p.contact_id),
                format_money(p.total),
                to.join(", ")
            ),
        )?;
    }
    w(out, format!("  Allocations ({}):", b.allocations.len()))?;
    for a in &b.allocations {
        let parts: Vec<String> =
            a.artefacts.iter().map(|(id, amt)| format!("{} {}", number(id), format_money(*amt))).collect();
        w(out, format!("    {:<11} {}", contact_ref(&a.contact_id), parts.join(" / ")))?;
    }
    w(out, format!("  Items ({}):", b.items.len()))?;
    for i in &b.items {
        let stock =
            if i.kind == "stock_items" { format!("in stock {}", i.quantity.normalize()) } else { String::new() };
        w(out, format!("    {:<12} {:<11} {:<28} {stock}", i.code, i.kind.trim_end_matches('s'), i.description))?;
    }
    let skipped: Vec<&Outcome> = outcomes.iter().filter(|o| o.sync_status == SyncStatus::Skipped).collect();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.sync_status == SyncStatus::Failed).collect();
    w(out, String::new())?;
    w(
        out,
        format!(
            "{} events: {} synced, {} skipped, {} failed (kept as dead letters). Replaying them all: {replay_writes} new writes to Sage.",
            outcomes.len(),
            outcomes.len() - skipped.len() - failed.len(),
            skipped.len(),
            failed.len()
        ),
    )?;
    let requests: u64 = sim.requests().values().sum();
    w(
        out,
        format!(
            "Sage requests served: {requests} (of which {} writes); token refreshes: {}.",
            writes(&sim),
            sim.with_state(|s| s.refreshes)
        ),
    )?;
    server.stop().await;
    Ok(())
}

fn describe(o: &Outcome) -> String {
    let key = o.idempotency_key.as_deref().unwrap_or("(unreadable line)");
    match o.sync_status {
        SyncStatus::Synced => format!(
            "  synced   {key:<24} {}{}",
            o.provider_reference.as_deref().map(|r| format!("{r} ")).unwrap_or_default(),
            o.message.as_deref().map(|m| format!("({m})")).unwrap_or_default()
        ),
        SyncStatus::Skipped => format!(
            "  skipped  {key:<24} {}: {}",
            o.skip_reason.as_deref().unwrap_or(""),
            o.message.as_deref().unwrap_or("")
        ),
        SyncStatus::Failed => format!(
            "  failed   {key:<24} [{}] {}",
            o.error_code.map_or("?", |c| c.as_str()),
            o.message.as_deref().unwrap_or("")
        ),
    }
}

/// `demo --provider xero`.
pub(super) async fn run_xero(
    events: Option<PathBuf>,
    policy: Option<PathBuf>,
    show_outcomes: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    use byte8_ledger_core::providers::xero::{PROVIDER as XERO, XeroBuilder, XeroLimits};
    use byte8_ledger_simulators::xero::{XERO_DEMO_REFRESH_TOKEN, XERO_DEMO_TENANT, XeroSimConfig, XeroSimulator};
    let events = match events {
        Some(p) => {
            std::fs::read_to_string(&p).map_err(|e| super::usage(format!("cannot read {}: {e}", p.display())))?
        }
        None => SAMPLE_EVENTS.to_owned(),
    };
    let policy = match policy {
        Some(p) => read_policy(Some(p))?,
        None => SyncPolicy::from_json(SAMPLE_POLICY_XERO)?,
    };
    // Xero's concurrency and daily limits as documented; the minute limit is lifted so that the
    // demo takes seconds (the benchmark `bench_xero` measures the 60-a-minute case).
    let sim = XeroSimulator::demo(XeroSimConfig { per_minute: None, ..XeroSimConfig::default() });
    let server =
        sim.serve().await.map_err(|e| Failure { code: 1, message: format!("cannot start the simulator: {e}") })?;
    let store = Arc::new(SqliteStore::in_memory(Some(MasterKey::generate())).await?);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    store
        .save_connection(&Connection {
            scope: XERO_DEMO_TENANT.into(),
            provider: XERO.into(),
            base_url: server.base_url(),
            token_url: server.token_url(),
            created_at: clock.now(),
            tenant_id: Some(XERO_DEMO_TENANT.into()),
            connections_url: Some(server.connections_url()),
        })
        .await?;
    store
        .save_tokens(
            XERO_DEMO_TENANT,
            &TokenSet::from_refresh_token(SecretString::from(XERO_DEMO_REFRESH_TOKEN.to_owned())),
        )
        .await?;
    let xero = Arc::new(
        XeroBuilder::new()
            .with_client_id("demo-client")
            .with_client_secret(SecretString::from("demo-secret".to_owned()))
            .with_tenant_id(XERO_DEMO_TENANT)
            .with_base_url(server.base_url())
            .with_token_url(server.token_url())
            .with_connections_url(server.connections_url())
            .with_limits(XeroLimits { per_minute: 0, ..XeroLimits::default() })
            .with_token_store(Arc::new(ScopedTokenStore::new(
                Arc::clone(&store) as Arc<dyn byte8_ledger_core::store::ConnectionStoreDyn>,
                XERO_DEMO_TENANT,
            )))
            .build()?,
    );
    let store_dyn: Arc<dyn Store> = Arc::clone(&store) as Arc<dyn Store>;
    let engine = SyncEngine::new(
        Arc::clone(&xero) as Arc<dyn byte8_ledger_core::providers::AccountingProvider>,
        store_dyn,
        XERO_DEMO_TENANT,
        policy,
        clock,
    );
    engine.check_policy().await?;
    let w = |out: &mut dyn Write, text: String| writeln!(out, "{text}").map_err(io);
    w(
        out,
        format!(
            "byte8-ledger demo: Xero simulator on {} (organisation {XERO_DEMO_TENANT}), state in an in-memory SQLite store",
            server.addr()
        ),
    )?;
    w(out, String::new())?;
    w(out, "Events".into())?;
    let lines: Vec<&str> = events.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let mut outcomes = Vec::new();
    for chunk in lines.chunks(50) {
        for o in engine.sync_lines(chunk).await? {
            w(out, describe(&o))?;
            if show_outcomes {
                w(out, format!("    {}", serde_json::to_string(&o).unwrap_or_default()))?;
            }
            outcomes.push(o);
        }
    }
    let xero_writes = |sim: &XeroSimulator| -> u64 {
        sim.requests()
            .iter()
            .filter(|(k, _)| (k.starts_with("PUT") || k.starts_with("POST /")) && !k.ends_with("/connect/token"))
            .map(|(_, n)| *n)
            .sum()
    };
    let before = xero_writes(&sim);
    for chunk in lines.chunks(50) {
        engine.sync_lines(chunk).await?;
    }
    let replay_writes = xero_writes(&sim) - before;
    let Some(org) = sim.org(XERO_DEMO_TENANT) else {
        return Err(Failure { code: 1, message: "the simulator lost its organisation".into() });
    };
    let contact_number =
        |id: &str| org.contacts.iter().find(|c| c.id == id).and_then(|c| c.number.clone()).unwrap_or_default();
    w(out, String::new())?;
    w(out, "What Xero now holds".into())?;
    w(out, format!("  Contacts ({}), one for every currency:", org.contacts.len()))?;
    for c in &org.contacts {
        w(out, format!("    {:<11} {}", c.number.as_deref().unwrap_or(""), c.name))?;
    }
    let sales: Vec<_> = org.invoices.iter().filter(|d| d.kind == "ACCREC").collect();
    w(out, format!("  Sales invoices ({}):", sales.len()))?;
    for d in &sales {
        w(
            out,
            format!(
                "    {:<15} {:<11} {} {:>9} tax {:>7} {:<9} {:<10} due {}",
                d.number,
                contact_number(&d.contact_id),
                d.currency,
                format_money(d.total),
                format_money(d.total_tax),
                d.line_amount_types,
                d.status,
                format_money(d.outstanding())
            ),
        )?;
    }
    let notes: Vec<_> = org.credit_notes.iter().filter(|d| d.kind == "ACCRECCREDIT").collect();
    w(out, format!("  Credit notes ({}):", notes.len()))?;
    for d in &notes {
        w(
            out,
            format!(
                "    {:<15} {:<11} {} {:>9}  {}",
                d.number,
                contact_number(&d.contact_id),
                d.currency,
                format_money(d.total),
                if d.outstanding().is_zero() {
                    "settled".to_owned()
                } else {
                    format!("open credit {}", format_money(d.outstanding()))
                }
            ),
        )?;
    }
    let number = |id: &str| {
        org.invoices.iter().chain(&org.credit_notes).find(|d| d.id == id).map(|d| d.number.clone()).unwrap_or_default()
    };
    w(out, format!("  Payments ({}):", org.payments.len()))?;
    for p in &org.payments {
        w(
            out,
            format!(
                "    {:<15} {:<15} {:>9}  {}",
                p.kind,
                number(&p.document_id),
                format_money(p.amount),
                p.reference.as_deref().unwrap_or("")
            ),
        )?;
    }
    w(out, format!("  Allocations ({}):", org.allocations.len()))?;
    for a in &org.allocations {
        w(out, format!("    {} → {} {}", number(&a.credit_note_id), number(&a.invoice_id), format_money(a.amount)))?;
    }
    w(out, format!("  Items ({}):", org.items.len()))?;
    for i in &org.items {
        let stock = if i.tracked { format!("tracked, on hand {}", i.quantity.normalize()) } else { String::new() };
        w(out, format!("    {:<12} {:<28} {stock}", i.code, i.name))?;
    }
    let skipped = outcomes.iter().filter(|o| o.sync_status == SyncStatus::Skipped).count();
    let failed = outcomes.iter().filter(|o| o.sync_status == SyncStatus::Failed).count();
    w(out, String::new())?;
    w(
        out,
        format!(
            "{} events: {} synced, {skipped} skipped, {failed} failed (kept as dead letters). Replaying them all: {replay_writes} new writes to Xero.",
            outcomes.len(),
            outcomes.len() - skipped - failed,
        ),
    )?;
    w(
        out,
        format!(
            "Xero calls: {} (of which {} writes, batched up to 50 a request); token refreshes: {}; Idempotency-Key replays: {}.",
            sim.api_calls(),
            xero_writes(&sim),
            sim.with_state(|s| s.refreshes),
            sim.with_state(|s| s.replays)
        ),
    )?;
    server.stop().await;
    Ok(())
}

/// The authorisation-code flow against the simulator, the demo playing the person's browser:
/// the authorize address, the approval page's link, the redirect back with a `GB/` code and the
/// `state`, the exchange. Answers the tokens and a line saying what happened (never the code).
async fn consent(server: &byte8_ledger_simulators::SimServer) -> Result<(TokenSet, String), String> {
    use byte8_ledger_core::{
        auth::connect::{Callback, OAuthApp, random_state, same_state},
        store::ProviderKind,
    };
    let app = OAuthApp::new(
        ProviderKind::Sage,
        "demo-client",
        SecretString::from("demo-secret".to_owned()),
        "http://127.0.0.1:8765/callback",
    )
    .and_then(|a| a.with_authorize_url(&server.authorize_url()))
    .and_then(|a| a.with_token_url(&server.token_url()))
    .and_then(|a| a.with_api_url(&server.base_url()))
    .map_err(|e| e.to_string())?;
    let request = app.authorize(random_state());
    let browser =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().map_err(|e| e.to_string())?;
    let page = browser.get(request.url.clone()).send().await.map_err(|e| e.to_string())?;
    let page = page.text().await.map_err(|e| e.to_string())?;
    let marker = "id=\"approve\" href=\"";
    let start = page.find(marker).ok_or("the approval page has no approve link")? + marker.len();
    let end = page[start..].find('"').ok_or("the approve link is cut")? + start;
    let href = html_escape::decode_html_entities(&page[start..end]).into_owned();
    let approve = request.url.join(&href).map_err(|e| e.to_string())?;
    let answer = browser.get(approve).send().await.map_err(|e| e.to_string())?;
    let back = answer
        .headers()
        .get(reqwest::header::LOCATION)
        .and_then(|l| l.to_str().ok())
        .and_then(|l| url::Url::parse(l).ok())
        .ok_or("the approval did not redirect back")?;
    let callback = Callback::parse(ProviderKind::Sage, back.query().unwrap_or("")).map_err(|e| e.to_string())?;
    if !same_state(&callback.state, &request.state) {
        return Err("the state came back changed".into());
    }
    let prefixed = callback.code.expose_secret().starts_with("GB/");
    let tokens = app.exchange_code(&callback.code, None, SystemClock.now()).await.map_err(|e| e.to_string())?;
    let reached = app.businesses(&tokens.access_token).await.map_err(|e| e.to_string())?;
    let line = format!(
        "Connected as `byte8-ledger connect` does: the authorize address, the simulator's approval page, a {}code exchanged at once; the token reaches {}",
        if prefixed { "GB/-prefixed " } else { "" },
        reached.iter().map(|b| format!("{} ({})", b.name, b.id)).collect::<Vec<_>>().join(", ")
    );
    Ok((tokens, line))
}
