//! The `byte8-ledger` command (contract.md section 3), as a library module so that tests drive it
//! in-process as well as through the binary.
//!
//! | command | what it does |
//! |---|---|
//! | `demo --console` | the operator console in one command: the Sage simulator, a stand-in Magento store, the service with the sample events and an operator whose generated password it prints |
//! | `demo [--provider sage\|xero]` | starts the built-in Sage (or Xero) simulator on loopback, syncs the bundled sample events through the real engine and HTTP client, prints what happened |
//! | `connect [--provider sage\|xero]` | connects a Sage business (default) or a Xero organisation through the browser (the OAuth authorisation-code flow: [`mod@connect`]), or with a refresh token given for automation; tokens encrypted at rest |
//! | `disconnect` | revokes a connection's tokens at the provider where it documents revocation and deletes them locally in any case, saying which |
//! | `sync` | syncs every event of a file (or stdin) into the provider of the stored connection, one outcome a line on stdout, in input order; on an SQLite file (`--state`) or, beside the service's processes, a PostgreSQL database (`--database-url`, `BYTE8_DATABASE_URL`) |
//! | `status` | counts by status and the dead letters with their reasons (`--state` or `--database-url`, as every command below but `demo` and `simulate`) |
//! | `requeue` | puts a failed or dead-lettered event back in line |
//! | `reference` | prints the Sage reference cache |
//! | `simulate [--provider sage\|xero]` | serves the built-in Sage (or Xero) simulator until interrupted (a ledger for trying `connect` and `sync`) |
//! | `serve` | the ledger service for the Byte8 Magento module: webhooks, status, health, disconnect, and the workers ([`byte8_ledger_service`]; Sage connections) |
//! | `tenant pair`, `tenant list`, `tenant disconnect` | the Magento stores bound to the service |
//! | `operator add NAME`, `operator list`, `operator remove NAME` | who may log in to the service's console (`/console`); the password from `BYTE8_OPERATOR_PASSWORD`, the terminal or stdin, never a flag |
//! | `reconcile --from DATE --to DATE [--json]` | the period's synced invoices, credit memos and payments against what the ledger holds ([`byte8_ledger_core::reconcile`]) |
//! | `purge [--dry-run]` | removes what the retention policy no longer keeps ([`byte8_ledger_core::store::retention`]), printing the counts; `serve` does it hourly |
//!
//! Exit codes: 0 when every event got an outcome, 2 for a usage or configuration error, 1 for
//! anything else; `reconcile` exits [`reconcile::EXIT_DIFFERENCES`] (3) when Magento and the ledger differ.

mod connect;
mod database;
mod demo;
mod demo_console;
mod operator;
mod purge;
mod reconcile;
mod serve;
mod tenant;

use std::{
    io::{BufRead, Write},
    path::PathBuf,
    process::ExitCode,
    sync::Arc,
};

use clap::{Parser, Subcommand};
use secrecy::SecretString;

pub(crate) use database::{SecretArg, StoreArgs};

/// The environment variable `connect --refresh-token` reads (the form to use: a command line is
/// visible to every user of the machine).
pub(crate) const REFRESH_TOKEN_ENV: &str = "BYTE8_REFRESH_TOKEN";
pub(crate) use purge::{PurgeArgs, RetentionArgs};
pub(crate) use reconcile::ReconcileArgs;
pub(crate) use serve::ServeArgs;
pub(crate) use tenant::TenantCommand;

use byte8_ledger_core::{
    auth::{MemoryTokenStore, TokenSet, TokenStore},
    clock::{Clock, SystemClock},
    engine::SyncEngine,
    error::Error,
    policy::SyncPolicy,
    providers::{
        AccountingProvider,
        sage::{DEFAULT_BASE_URL, DEFAULT_TOKEN_URL, PROVIDER},
        xero::{self, XeroBuilder, XeroConnection},
    },
    store::{Connection, ConnectionStore, ProviderKind, RunStatus, Store, crypto::MasterKey},
};

/// The ledger a command works with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub(crate) enum ProviderArg {
    /// Sage Business Cloud Accounting v3.1.
    #[default]
    Sage,
    /// Xero Accounting.
    Xero,
}

/// The command line.
#[derive(Debug, Parser)]
#[command(name = "byte8-ledger", version, about = "Magento 2 → Sage Business Cloud Accounting or Xero, exactly once")]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The sub-commands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Sync the bundled sample events into the built-in Sage (or Xero) simulator and show what was
    /// posted.
    Demo {
        /// The ledger to simulate.
        #[arg(long, value_enum, default_value_t = ProviderArg::Sage)]
        provider: ProviderArg,
        /// Sync these events instead of the bundled ones.
        #[arg(long)]
        events: Option<PathBuf>,
        /// Use this policy instead of the bundled one.
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Print the outcome lines too.
        #[arg(long)]
        outcomes: bool,
        /// Serve the operator console instead: the simulator, a stand-in Magento store, the
        /// service with the sample events, an operator (its password printed); until
        /// interrupted.
        #[arg(long, conflicts_with_all = ["events", "policy", "outcomes"])]
        console: bool,
    },
    /// Connect a Sage business (default) or a Xero organisation: without a refresh token, runs
    /// the OAuth authorisation-code flow (prints the authorize address, opens the browser,
    /// listens on the loopback redirect, exchanges the code, stores the business picked). Client
    /// id and secret from SAGE_CLIENT_ID / SAGE_CLIENT_SECRET or XERO_CLIENT_ID /
    /// XERO_CLIENT_SECRET; the encryption key from LEDGER_MASTER_KEY.
    Connect {
        /// The ledger.
        #[arg(long, value_enum, default_value_t = ProviderArg::Sage)]
        provider: ProviderArg,
        /// The state database (SQLite, created on first use), or `--database-url` for PostgreSQL.
        #[command(flatten)]
        store: StoreArgs,
        /// The Sage business to store (required with --refresh-token; else needed only when the
        /// authorisation reaches several and no terminal is attached to choose).
        #[arg(long)]
        business_id: Option<String>,
        /// The Xero organisation (`tenantId`); optional when the token reaches exactly one.
        #[arg(long)]
        tenant_id: Option<String>,
        /// For automation: a refresh token of the business's user instead of the browser flow;
        /// better given as BYTE8_REFRESH_TOKEN (a command line is visible in `ps`), or `-` to
        /// read it from stdin.
        #[arg(long, env = REFRESH_TOKEN_ENV, hide_env_values = true)]
        refresh_token: Option<SecretArg>,
        /// The redirect URI registered with the app, when not `http://127.0.0.1:PORT/callback`
        /// (a loopback http address: the command listens on it).
        #[arg(long)]
        redirect_uri: Option<String>,
        /// The loopback port of the default redirect URI (0: any free port).
        #[arg(long, default_value_t = 8765)]
        port: u16,
        /// Print the authorize address only; do not try to open a browser.
        #[arg(long)]
        no_browser: bool,
        /// How long to wait for the browser to come back, in seconds.
        #[arg(long, default_value_t = 600)]
        timeout_secs: u64,
        /// The Sage API root including the version.
        #[arg(long, default_value = DEFAULT_BASE_URL)]
        sage_base_url: String,
        /// The Sage token endpoint.
        #[arg(long, default_value = DEFAULT_TOKEN_URL)]
        sage_token_url: String,
        /// The Sage authorize endpoint.
        #[arg(long, default_value = byte8_ledger_core::auth::connect::SAGE_AUTHORIZE_URL)]
        sage_authorize_url: String,
        /// The Xero Accounting API root.
        #[arg(long, default_value = xero::DEFAULT_BASE_URL)]
        xero_base_url: String,
        /// The Xero token endpoint.
        #[arg(long, default_value = xero::DEFAULT_TOKEN_URL)]
        xero_token_url: String,
        /// The Xero connections endpoint.
        #[arg(long, default_value = xero::DEFAULT_CONNECTIONS_URL)]
        xero_connections_url: String,
        /// The Xero authorize endpoint.
        #[arg(long, default_value = byte8_ledger_core::auth::connect::XERO_AUTHORIZE_URL)]
        xero_authorize_url: String,
    },
    /// Disconnect a business: revoke its tokens at the provider where it documents revocation
    /// (Xero; Sage's endpoint is unconfirmed and only tried) and delete them locally in any case;
    /// the output says whether the provider confirmed. Needs LEDGER_MASTER_KEY and the client
    /// id and secret to revoke.
    Disconnect {
        /// The state database, or `--database-url`.
        #[command(flatten)]
        store: StoreArgs,
        /// The connection, when the database holds several.
        #[arg(long)]
        business_id: Option<String>,
    },
    /// Sync every event of FILE (`-` for stdin); one outcome a line on stdout, in input order.
    Sync {
        /// The state database, or `--database-url`: a PostgreSQL database the service's workers
        /// may share (nothing they hold is taken from them).
        #[command(flatten)]
        store: StoreArgs,
        /// The events, JSON Lines (`-` for stdin).
        #[arg(long)]
        events: String,
        /// The sync policy (JSON).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// The connection to use when the database holds several.
        #[arg(long)]
        business_id: Option<String>,
    },
    /// Counts by status and the dead letters with their reasons.
    Status {
        /// The state database, or `--database-url`.
        #[command(flatten)]
        store: StoreArgs,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Put a failed or dead-lettered event back in line.
    Requeue {
        /// The state database, or `--database-url`.
        #[command(flatten)]
        store: StoreArgs,
        /// The event's idempotency key (`invoice.created:1001`).
        key: String,
        /// The connection, when the database holds several.
        #[arg(long)]
        business_id: Option<String>,
    },
    /// Serve the built-in Sage (or Xero) simulator (the demo business) until interrupted: a ledger
    /// to point `connect` and `sync` at without an account.
    Simulate {
        /// The ledger to simulate.
        #[arg(long, value_enum, default_value_t = ProviderArg::Sage)]
        provider: ProviderArg,
        /// The port (0: any free port).
        #[arg(long, default_value_t = 0)]
        port: u16,
        /// Answer latency range in milliseconds, e.g. `100-150`.
        #[arg(long)]
        latency_ms: Option<String>,
        /// Per-business limit: requests in any 60 seconds (answered 429 beyond it).
        #[arg(long)]
        requests_per_minute: Option<u32>,
        /// Access-token lifetime in seconds.
        #[arg(long, default_value_t = 300)]
        token_ttl_secs: u64,
    },
    /// Serve the ledger service for the Byte8 Magento module (webhooks, status, health,
    /// disconnect) and its workers, until interrupted (LEDGER_MASTER_KEY, SAGE_CLIENT_ID and
    /// SAGE_CLIENT_SECRET from the environment).
    Serve(ServeArgs),
    /// Compare the period's synced invoices, credit memos and payments with what the ledger
    /// holds: missing, duplicated, differing totals or VAT, unallocated payments, records from no
    /// run, and per-currency sums (exit 3 when anything differs; LEDGER_MASTER_KEY from the
    /// environment).
    Reconcile(ReconcileArgs),
    /// Remove what the retention policy no longer keeps (raw events and attempts of old
    /// finished runs, disconnected tenants, delivered callbacks), or say what would go
    /// (`--dry-run`). `serve` does it every hour by itself.
    Purge(PurgeArgs),
    /// The Magento stores bound to the service.
    Tenant {
        /// What to do.
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// The operators of the service's console (`/console`): who may log in.
    Operator {
        /// What to do.
        #[command(subcommand)]
        command: operator::OperatorCommand,
    },
    /// Print the Sage reference cache (tax rates, ledger accounts, bank accounts, payment methods).
    Reference {
        /// The state database, or `--database-url`.
        #[command(flatten)]
        store: StoreArgs,
        /// Fetch it again from Sage.
        #[arg(long)]
        refresh: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// The connection, when the database holds several.
        #[arg(long)]
        business_id: Option<String>,
    },
}

/// A failure of the command, with its exit code.
#[derive(Debug)]
pub(crate) struct Failure {
    /// 2 for usage and configuration, 1 otherwise.
    pub code: u8,
    /// What to tell the operator.
    pub message: String,
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Config { .. }
            | Error::Invalid { what: "policy" | "Sage configuration" | "Xero configuration", .. } => 2,
            Error::Parse { what: "policy", .. } => 2,
            _ => 1,
        };
        Self { code, message: e.to_string() }
    }
}

fn usage(message: impl Into<String>) -> Failure {
    Failure { code: 2, message: message.into() }
}

/// The async runtime a command's process runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Runtime {
    /// Everything on the main thread: tokio's current-thread scheduler.
    OneThread,
    /// tokio's multi-thread scheduler with this many worker threads (`None`: tokio's default,
    /// one per core, or `TOKIO_WORKER_THREADS`).
    Workers(Option<usize>),
}

/// The runtime of `command`'s process, when the operator has not said (tokio's own
/// `TOKIO_WORKER_THREADS`, which `env_set` reports, always wins: the multi-thread scheduler with
/// that many threads).
///
/// - `sync` runs on the current-thread scheduler. It processes one event at a time, so a second
///   thread has nothing to do but to be woken: with the multi-thread scheduler the command's
///   future ran on the main thread and the HTTP connections' tasks on the workers, and each
///   request and answer crossed between them. Measured with `benches/backfill_cpu.sh` (BENCHMARKS.md
///   round 39): about 20 % less of `sync`'s CPU an event on PostgreSQL (0.47–0.50 ms against
///   0.62–0.63) and 10–17 % less on SQLite, system time most of it. Standard input is read on a
///   thread of its own ([`EventLines`]), so a pause of the producer never holds up that one thread.
/// - `serve` takes half the cores, at least one. It is I/O bound (6 % of one core for 1,000
///   merchants' busy hour), and with a thread per core each event woke a second thread to look
///   for work it did not find: measured with `bench_service --tenants 1000` (BENCHMARKS.md, "One
///   runtime thread on a 2-core node"), one thread used about 10 % less of `serve`'s CPU an event
///   on the 2-core node that also runs PostgreSQL, with the same latencies and a catalogue 2–3 %
///   slower. A node whose database runs elsewhere can give `serve` every core with
///   `TOKIO_WORKER_THREADS`; more merchants than one process serves are for more `serve` processes
///   on the same database.
/// - Every other command keeps tokio's default.
pub(crate) fn runtime_for(command: &Command, env_set: bool) -> Runtime {
    match command {
        _ if env_set => Runtime::Workers(None),
        Command::Sync { .. } => Runtime::OneThread,
        Command::Serve(_) => {
            Runtime::Workers(Some(half_the_cores(std::thread::available_parallelism().map_or(1, usize::from))))
        }
        _ => Runtime::Workers(None),
    }
}

fn half_the_cores(cores: usize) -> usize {
    (cores / 2).max(1)
}

/// Runs the command line and returns the process exit code.
pub(crate) async fn main(cli: Cli) -> ExitCode {
    match run(cli, &mut std::io::stdout().lock()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("byte8-ledger: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

/// Runs a command, writing its output to `out`.
///
/// # Errors
/// A [`Failure`] with the exit code to use.
pub(crate) async fn run(cli: Cli, out: &mut dyn Write) -> std::result::Result<(), Failure> {
    match cli.command {
        Command::Demo { console: true, .. } => demo_console::run(out).await,
        Command::Demo { provider, events, policy, outcomes, console: false } => match provider {
            ProviderArg::Sage => demo::run(events, policy, outcomes, out).await,
            ProviderArg::Xero => demo::run_xero(events, policy, outcomes, out).await,
        },
        Command::Connect {
            provider,
            store,
            business_id,
            tenant_id,
            refresh_token,
            redirect_uri,
            port,
            no_browser,
            timeout_secs,
            sage_base_url,
            sage_token_url,
            sage_authorize_url,
            xero_base_url,
            xero_token_url,
            xero_connections_url,
            xero_authorize_url,
        } => {
            let Some(refresh_token) = refresh_token else {
                let (kind, endpoints, wanted) = match provider {
                    ProviderArg::Sage => (
                        ProviderKind::Sage,
                        connect::Endpoints {
                            authorize_url: sage_authorize_url,
                            token_url: sage_token_url,
                            base_url: sage_base_url,
                            connections_url: None,
                        },
                        business_id,
                    ),
                    ProviderArg::Xero => (
                        ProviderKind::Xero,
                        connect::Endpoints {
                            authorize_url: xero_authorize_url,
                            token_url: xero_token_url,
                            base_url: xero_base_url,
                            connections_url: Some(xero_connections_url),
                        },
                        tenant_id.or(business_id),
                    ),
                };
                let flow = connect::FlowArgs {
                    redirect_uri,
                    port,
                    no_browser,
                    timeout: std::time::Duration::from_secs(timeout_secs.max(1)),
                    business_id: wanted,
                };
                return connect::run(kind, store, endpoints, flow, out).await;
            };
            let refresh_token = refresh_token.resolve("--refresh-token")?;
            match provider {
                ProviderArg::Sage => {
                    let business_id = business_id
                        .ok_or_else(|| usage("--business-id is required for a Sage connection with --refresh-token"))?;
                    connect(store, business_id, refresh_token, sage_base_url, sage_token_url, out).await
                }
                ProviderArg::Xero => {
                    connect_xero(
                        store,
                        tenant_id.or(business_id),
                        refresh_token,
                        [xero_base_url, xero_token_url, xero_connections_url],
                        out,
                    )
                    .await
                }
            }
        }
        Command::Disconnect { store, business_id } => connect::disconnect(store, business_id, out).await,
        Command::Serve(args) => serve::run(args, out).await,
        Command::Purge(args) => purge::run(args, out).await,
        Command::Tenant { command } => tenant::run(command, out).await,
        Command::Operator { command } => operator::run(command, out).await,
        Command::Reconcile(args) => reconcile::run(args, out).await,
        Command::Sync { store, events, policy, business_id } => sync(store, &events, policy, business_id, out).await,
        Command::Status { store, json } => status(store, json, out).await,
        Command::Requeue { store, key, business_id } => requeue(store, &key, business_id, out).await,
        Command::Reference { store, refresh, json, business_id } => {
            reference(store, refresh, json, business_id, out).await
        }
        Command::Simulate { provider, port, latency_ms, requests_per_minute, token_ttl_secs } => {
            simulate(provider, port, latency_ms, requests_per_minute, token_ttl_secs, out).await
        }
    }
}

fn env(name: &str) -> std::result::Result<String, Failure> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty()).ok_or_else(|| usage(format!("{name} is not set")))
}

async fn pick_connection(
    store: &dyn ConnectionStore,
    business_id: Option<String>,
) -> std::result::Result<Connection, Failure> {
    let all = store.connections().await?;
    match business_id {
        Some(id) => all
            .into_iter()
            .find(|c| c.scope == id)
            .ok_or_else(|| usage(format!("no connection for business {id}: run `byte8-ledger connect` first"))),
        None => match all.len() {
            0 => Err(usage("the state database holds no connection: run `byte8-ledger connect` first")),
            1 => Ok(all.into_iter().next().ok_or_else(|| usage("no connection"))?),
            n => Err(usage(format!("the state database holds {n} connections: choose one with --business-id"))),
        },
    }
}

fn read_policy(path: Option<PathBuf>) -> std::result::Result<SyncPolicy, Failure> {
    match path {
        None => Ok(SyncPolicy::default()),
        Some(p) => {
            let text = std::fs::read_to_string(&p)
                .map_err(|e| usage(format!("cannot read the policy {}: {e}", p.display())))?;
            SyncPolicy::from_json(&text).map_err(|e| usage(e.to_string()))
        }
    }
}

async fn connect(
    args: StoreArgs,
    business_id: String,
    refresh_token: SecretString,
    base_url: String,
    token_url: String,
    out: &mut dyn Write,
) -> std::result::Result<(), Failure> {
    env("SAGE_CLIENT_ID")?;
    env("SAGE_CLIENT_SECRET")?;
    let (db, _lock) = database::Database::open_locked(&args, Some(MasterKey::from_env()?), "connect").await?;
    let store = db.service();
    let now = SystemClock.now();
    let connection = Connection {
        scope: business_id.clone(),
        provider: PROVIDER.to_owned(),
        base_url,
        token_url,
        created_at: now,
        tenant_id: None,
        connections_url: None,
    };
    store.save_connection(&connection).await?;
    store.save_tokens(&business_id, &TokenSet::from_refresh_token(refresh_token)).await?;
    // Check it works: a refresh (the new pair is stored before use) and the reference data.
    let sage = db.provider_for(&connection)?;
    let reference = sage.reference_data(true).await?;
    store.save_reference(&business_id, &reference).await?;
    writeln!(
        out,
        "connected to {} ({}), base currency {}, {} tax rates; tokens stored encrypted in {db}",
        reference.business.name,
        business_id,
        reference.business.base_currency.code(),
        reference.tax_rates.len(),
    )
    .map_err(io)?;
    Ok(())
}

/// `connect --provider xero`: the refresh token is used once (it rotates) to list the token's
/// organisations; the one chosen (`--tenant-id`, or the only organisation) is pinned, and the
/// rotated pair is stored under it, encrypted, before anything else uses it.
async fn connect_xero(
    args: StoreArgs,
    tenant_id: Option<String>,
    refresh_token: SecretString,
    [base_url, token_url, connections_url]: [String; 3],
    out: &mut dyn Write,
) -> std::result::Result<(), Failure> {
    env("XERO_CLIENT_ID")?;
    env("XERO_CLIENT_SECRET")?;
    let (db, _lock) = database::Database::open_locked(&args, Some(MasterKey::from_env()?), "connect").await?;
    let store = db.service();
    let first = Arc::new(MemoryTokenStore::new(Some(TokenSet::from_refresh_token(refresh_token))));
    let probe = XeroBuilder::from_env()
        .with_tenant_id("(choosing)")
        .with_base_url(base_url.clone())
        .with_token_url(token_url.clone())
        .with_connections_url(connections_url.clone())
        .with_token_store(Arc::clone(&first) as Arc<dyn TokenStore>)
        .build()
        .map_err(|e| usage(e.to_string()))?;
    let all: Vec<XeroConnection> = probe.connections().await?;
    let orgs: Vec<&XeroConnection> =
        all.iter().filter(|c| c.tenant_type.as_deref().is_none_or(|t| t == "ORGANISATION")).collect();
    let listed = || {
        orgs.iter()
            .map(|c| format!("{} ({})", c.tenant_id, c.tenant_name.as_deref().unwrap_or("?")))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let chosen = match &tenant_id {
        Some(t) => orgs.iter().find(|c| c.tenant_id == *t).ok_or_else(|| {
            usage(format!("organisation {t} is not among this token's Xero connections: {}", listed()))
        })?,
        None => match orgs.as_slice() {
            [only] => only,
            [] => {
                return Err(usage(
                    "the token reaches no Xero organisation (the connection was removed?): reconnect in Xero",
                ));
            }
            _ => {
                return Err(usage(format!(
                    "the token reaches several Xero organisations: choose one with --tenant-id ({})",
                    listed()
                )));
            }
        },
    };
    let now = SystemClock.now();
    let connection = Connection {
        scope: chosen.tenant_id.clone(),
        provider: ProviderKind::Xero.as_str().to_owned(),
        base_url,
        token_url,
        created_at: now,
        tenant_id: Some(chosen.tenant_id.clone()),
        connections_url: Some(connections_url),
    };
    store.save_connection(&connection).await?;
    let rotated = first.load().await?.ok_or_else(|| Failure { code: 1, message: "the token pair vanished".into() })?;
    store.save_tokens(&connection.scope, &rotated).await?;
    let provider = db.provider_for(&connection)?;
    let reference = provider.reference_data(true).await?;
    store.save_reference(&connection.scope, &reference).await?;
    writeln!(
        out,
        "connected to Xero organisation {} ({}), base currency {}, {} tax rates; tokens stored encrypted in {db}",
        reference.business.name,
        connection.scope,
        reference.business.base_currency.code(),
        reference.tax_rates.len(),
    )
    .map_err(io)?;
    Ok(())
}

fn io(e: std::io::Error) -> Failure {
    Failure { code: 1, message: format!("cannot write the output: {e}") }
}

/// Where `sync` reads its events, a line at a time.
pub(crate) enum EventLines {
    /// A file, read in place (a read never waits long).
    File(std::io::BufReader<std::fs::File>),
    /// Standard input, read on a thread of its own and handed over a line at a time: `sync` runs
    /// on one runtime thread ([`runtime_for`]), and a producer that pauses
    /// (`tail -f events.jsonl | byte8-ledger sync --events -`) must not hold that thread up in
    /// a blocking read while the process has work of its own (its connections' tasks).
    Stdin(tokio::sync::mpsc::Receiver<std::io::Result<String>>),
}

impl EventLines {
    /// Standard input, read by a new thread that stops at its end or at a read error (handed
    /// over as the last line), or when the lines are no longer wanted.
    fn stdin() -> std::result::Result<Self, Failure> {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let failed = line.is_err();
                    if tx.blocking_send(line).is_err() || failed {
                        break;
                    }
                }
            })
            .map_err(|e| Failure { code: 1, message: format!("cannot start reading standard input: {e}") })?;
        Ok(Self::Stdin(rx))
    }

    /// The next line, without its line end; `None` at the end.
    async fn next(&mut self) -> std::io::Result<Option<String>> {
        match self {
            Self::File(file) => {
                let mut line = String::new();
                Ok((file.read_line(&mut line)? > 0).then_some(line))
            }
            Self::Stdin(lines) => lines.recv().await.transpose(),
        }
    }
}

/// Syncs the lines of `input` with `engine` as one run ([`SyncSession`](byte8_ledger_core::engine::SyncSession)),
/// writing one outcome a line to `out`, in input order; returns how many lines got an outcome.
/// Lines are read in chunks of the provider's batch size and synced together (one at a time for
/// Sage). A payment or credit memo whose invoice comes later in the input waits for it, and
/// transient failures are tried once more at the end of the run before they are reported.
///
/// # Errors
/// Store failures and output errors.
pub(crate) async fn sync_stream(
    engine: &SyncEngine,
    input: &mut EventLines,
    out: &mut dyn Write,
    progress: Option<&indicatif::ProgressBar>,
) -> std::result::Result<u64, Failure> {
    let mut session = engine.session().await;
    let chunk = session.batch_size();
    let mut n = 0;
    let mut pending: Vec<String> = Vec::new();
    let mut write =
        |outcomes: Vec<byte8_ledger_core::outcome::Outcome>, n: &mut u64| -> std::result::Result<(), Failure> {
            for outcome in outcomes {
                serde_json::to_writer(&mut *out, &outcome).map_err(|e| Failure { code: 1, message: e.to_string() })?;
                writeln!(out).map_err(io)?;
                *n += 1;
                if let Some(p) = progress {
                    p.inc(1);
                }
            }
            out.flush().map_err(io)
        };
    loop {
        let line =
            input.next().await.map_err(|e| Failure { code: 1, message: format!("cannot read the events: {e}") })?;
        let read = line.is_some();
        if let Some(text) = line.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
            pending.push(text.to_owned());
        }
        if pending.len() >= chunk || (!read && !pending.is_empty()) {
            let lines: Vec<&str> = pending.iter().map(String::as_str).collect();
            let outcomes = session.push(&lines).await?;
            write(outcomes, &mut n)?;
            pending.clear();
        }
        if !read {
            break;
        }
    }
    let outcomes = session.finish().await?;
    write(outcomes, &mut n)?;
    Ok(n)
}

/// `sync` on an SQLite file or a PostgreSQL database.
///
/// On SQLite the file's lock makes this process its one writer, so runs left `running` belong to
/// a process that died and are taken back at once. On PostgreSQL other processes (the service's
/// workers, another `sync`) may be working on the same business: nothing they hold is taken from
/// them. An event whose run another process holds gets the outcome "another worker holds this
/// event" and stays with that process; a run a dead process left is claimed again once its lease
/// ([`EngineConfig::lease`](byte8_ledger_core::engine::EngineConfig), 5 minutes) has ended. Every
/// write is fenced by the run's claim, so two processes never post one event twice, and a Sage
/// business's requests share its database's rate limiter with the service's.
async fn sync(
    args: StoreArgs,
    events: &str,
    policy: Option<PathBuf>,
    business_id: Option<String>,
    out: &mut dyn Write,
) -> std::result::Result<(), Failure> {
    let policy = read_policy(policy)?;
    let (db, _lock) = database::Database::open_locked(&args, Some(MasterKey::from_env()?), "sync").await?;
    let store = db.store();
    let connection = pick_connection(store.as_ref(), business_id).await?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    if let database::Database::Sqlite(..) = db {
        store.release_leases(&connection.scope, clock.now()).await?;
    }
    let sage = db.provider_for(&connection)?;
    let engine = SyncEngine::new(Arc::clone(&sage), Arc::clone(&store), connection.scope.clone(), policy, clock);
    // A policy that does not fit the ledger is a configuration error (2); a ledger that cannot be
    // reached or refuses the connection is not (1: contract.md 3 keeps 2 for usage and
    // configuration).
    engine.check_policy().await.map_err(|e| {
        let mut f = Failure::from(e);
        if f.code != 2 {
            f.message = format!("cannot read the ledger's reference data to check the policy: {}", f.message);
        }
        f
    })?;
    if let Ok(r) = sage.reference_data(false).await {
        let _ = store.save_reference(&connection.scope, &r).await;
    }
    let progress = progress_bar(events);
    let mut input = if events == "-" {
        EventLines::stdin()?
    } else {
        let file = std::fs::File::open(events).map_err(|e| usage(format!("cannot open the events {events}: {e}")))?;
        EventLines::File(std::io::BufReader::new(file))
    };
    let count = sync_stream(&engine, &mut input, out, progress.as_ref()).await?;
    if let Some(p) = progress {
        p.finish_and_clear();
    }
    tracing::info!(events = count, "sync finished");
    Ok(())
}

fn progress_bar(events: &str) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let total = if events == "-" {
        None
    } else {
        std::fs::File::open(events).ok().map(|f| {
            std::io::BufReader::new(f)
                .lines()
                .map_while(std::result::Result::ok)
                .filter(|l| !l.trim().is_empty())
                .count()
        })
    };
    let bar = match total {
        Some(n) => indicatif::ProgressBar::new(u64::try_from(n).unwrap_or(0)),
        None => indicatif::ProgressBar::new_spinner(),
    };
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) = indicatif::ProgressStyle::with_template("{spinner} {pos}/{len} events {wide_bar} {elapsed}") {
        bar.set_style(style);
    }
    Some(bar)
}

async fn status(args: StoreArgs, json: bool, out: &mut dyn Write) -> std::result::Result<(), Failure> {
    let db = database::Database::open(&args, MasterKey::from_env().ok()).await?;
    let store = db.store();
    let mut report = Vec::new();
    for c in store.connections().await? {
        let counts = store.counts(&c.scope).await?;
        let dead = store.dead_letters(&c.scope, 1000).await?;
        let waiting = store.waiting(&c.scope, 1000).await?;
        report.push((c, counts, dead, waiting));
    }
    let now = SystemClock.now();
    let mut health = Vec::new();
    for (c, ..) in &report {
        health.push(token_health(store.as_ref(), c, now).await);
    }
    if json {
        let value: Vec<serde_json::Value> = report
            .iter()
            .zip(&health)
            .map(|((c, counts, dead, waiting), health)| {
                serde_json::json!({
                    "business_id": c.scope,
                    "provider": c.provider,
                    "refresh_token": health.json(),
                    "counts": counts.iter().map(|(s, n)| (s.as_str().to_owned(), *n)).collect::<std::collections::BTreeMap<_, _>>(),
                    "dead_letters": dead.iter().map(|r| serde_json::json!({
                        "idempotency_key": r.idempotency_key,
                        "event": r.event,
                        "attempts": r.attempts,
                        "error_code": r.outcome.as_ref().and_then(|o| o.error_code),
                        "message": r.outcome.as_ref().and_then(|o| o.message.clone()),
                    })).collect::<Vec<_>>(),
                    "waiting": waiting.iter().map(|r| serde_json::json!({
                        "idempotency_key": r.idempotency_key,
                        "event": r.event,
                        "attempts": r.attempts,
                        "next_attempt_at": r.next_attempt_at,
                        "error_code": r.outcome.as_ref().and_then(|o| o.error_code),
                        "message": r.outcome.as_ref().and_then(|o| o.message.clone()),
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&value).unwrap_or_default()).map_err(io)?;
        return Ok(());
    }
    if report.is_empty() {
        writeln!(out, "no connection in {db}").map_err(io)?;
    }
    for ((c, counts, dead, waiting), health) in report.into_iter().zip(health) {
        writeln!(out, "business {} ({})", c.scope, c.provider).map_err(io)?;
        writeln!(out, "  refresh token  {}", health.text()).map_err(io)?;
        for s in [RunStatus::Synced, RunStatus::Skipped, RunStatus::Queued, RunStatus::Running, RunStatus::DeadLettered]
        {
            writeln!(out, "  {:<14} {}", s.as_str(), counts.get(&s).copied().unwrap_or(0)).map_err(io)?;
        }
        if !waiting.is_empty() {
            writeln!(out, "  waiting in line:").map_err(io)?;
            for r in waiting {
                let o = r.outcome.as_ref();
                writeln!(
                    out,
                    "    {} [{}] next attempt {}: {}",
                    r.idempotency_key,
                    o.and_then(|o| o.error_code).map_or("?", |c| c.as_str()),
                    r.next_attempt_at.map_or_else(|| "now".to_owned(), |t| t.to_rfc3339()),
                    o.and_then(|o| o.message.clone()).unwrap_or_default()
                )
                .map_err(io)?;
            }
        }
        if !dead.is_empty() {
            writeln!(out, "  dead letters:").map_err(io)?;
            for r in dead {
                let o = r.outcome.as_ref();
                writeln!(
                    out,
                    "    {} [{}] after {} attempt(s): {}",
                    r.idempotency_key,
                    o.and_then(|o| o.error_code).map_or("?", |c| c.as_str()),
                    r.attempts,
                    o.and_then(|o| o.message.clone()).unwrap_or_default()
                )
                .map_err(io)?;
            }
        }
    }
    Ok(())
}

/// What `status` knows of a connection's refresh token.
enum TokenHealth {
    /// Its remaining life.
    Known(byte8_ledger_core::auth::connect::RefreshTokenHealth),
    /// Tokens stored, but neither an expiry nor an issue date (a pasted token not used yet).
    Unknown,
    /// No tokens stored (disconnected).
    None,
    /// Not readable (no LEDGER_MASTER_KEY).
    Unreadable(String),
}

impl TokenHealth {
    fn json(&self) -> serde_json::Value {
        match self {
            Self::Known(h) => serde_json::json!({
                "days_left": h.days_left, "expires_at": h.expires_at, "expired": h.expired, "basis": h.basis,
            }),
            Self::Unknown => serde_json::json!({"days_left": null}),
            Self::None => serde_json::Value::Null,
            Self::Unreadable(why) => serde_json::json!({"days_left": null, "unreadable": why}),
        }
    }

    fn text(&self) -> String {
        match self {
            Self::Known(h) if h.expired => {
                format!("lapsed on {}: run `byte8-ledger connect` again", h.expires_at.format("%Y-%m-%d"))
            }
            Self::Known(h) => format!(
                "{} day(s) left (until {} unless used; `serve` refreshes idle connections)",
                h.days_left,
                h.expires_at.format("%Y-%m-%d %H:%M UTC")
            ),
            Self::Unknown => "life unknown until its first refresh".into(),
            Self::None => "none stored: run `byte8-ledger connect`".into(),
            Self::Unreadable(why) => format!("unknown ({why})"),
        }
    }
}

async fn token_health(store: &dyn Store, c: &Connection, now: chrono::DateTime<chrono::Utc>) -> TokenHealth {
    let Some(kind) = c.kind() else { return TokenHealth::Unknown };
    match store.tokens(&c.scope).await {
        Ok(Some(t)) => byte8_ledger_core::auth::connect::refresh_token_health(kind, &t, now)
            .map_or(TokenHealth::Unknown, TokenHealth::Known),
        Ok(None) => TokenHealth::None,
        Err(_) => TokenHealth::Unreadable("set LEDGER_MASTER_KEY to read it".into()),
    }
}

async fn requeue(
    args: StoreArgs,
    key: &str,
    business_id: Option<String>,
    out: &mut dyn Write,
) -> std::result::Result<(), Failure> {
    let db = database::Database::open(&args, MasterKey::from_env().ok()).await?;
    let store = db.store();
    let c = pick_connection(store.as_ref(), business_id).await?;
    if store.requeue(&c.scope, key, SystemClock.now()).await? {
        writeln!(out, "{key} is back in line; the next `byte8-ledger sync` with it processes it").map_err(io)?;
        Ok(())
    } else {
        Err(Failure { code: 1, message: format!("no failed or dead-lettered event {key} in {db}") })
    }
}

async fn reference(
    args: StoreArgs,
    refresh: bool,
    json: bool,
    business_id: Option<String>,
    out: &mut dyn Write,
) -> std::result::Result<(), Failure> {
    // The cached copy is read without the key; fetching it again uses the connection's tokens.
    let (key, unusable) = match MasterKey::from_env() {
        Ok(key) => (Some(key), None),
        Err(e) => (None, Some(e)),
    };
    let db = database::Database::open(&args, key).await?;
    let store = db.store();
    let c = pick_connection(store.as_ref(), business_id).await?;
    let cached = if refresh { None } else { store.reference(&c.scope).await? };
    let r = match cached {
        Some(r) => r,
        None => {
            if let Some(e) = unusable {
                return Err(e.into());
            }
            let sage = db.provider_for(&c)?;
            let r = sage.reference_data(true).await?;
            store.save_reference(&c.scope, &r).await?;
            (*r).clone()
        }
    };
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(&r).unwrap_or_default()).map_err(io)?;
        return Ok(());
    }
    let b = &r.business;
    writeln!(
        out,
        "{} ({}), {}{}, base {}, multi-currency {}",
        b.name,
        b.id,
        b.country,
        if b.northern_ireland { " (NI)" } else { "" },
        b.base_currency.code(),
        if b.multi_currency { "on" } else { "off" }
    )
    .map_err(io)?;
    writeln!(out, "fetched {}", r.fetched_at.to_rfc3339()).map_err(io)?;
    writeln!(out, "\ntax rates:").map_err(io)?;
    for t in &r.tax_rates {
        writeln!(out, "  {:<24} {:>8}  {}", t.id, t.percentage.map(|p| format!("{p}%")).unwrap_or_default(), t.name)
            .map_err(io)?;
    }
    writeln!(out, "\nledger accounts:").map_err(io)?;
    for a in &r.ledger_accounts {
        let vis = match (a.visible_in_sales, a.visible_in_expenses) {
            (true, true) => "sales, expenses",
            (true, false) => "sales",
            (false, true) => "expenses",
            _ => "",
        };
        writeln!(out, "  {:<34} {}  [{vis}]", a.id, a.name).map_err(io)?;
    }
    writeln!(out, "\nbank accounts:").map_err(io)?;
    for a in &r.bank_accounts {
        writeln!(out, "  {:<34} {} {}", a.id, a.name, a.currency.map(|c| c.code()).unwrap_or("")).map_err(io)?;
    }
    writeln!(out, "\npayment methods:").map_err(io)?;
    for m in &r.payment_methods {
        writeln!(out, "  {:<34} {}", m.id, m.name).map_err(io)?;
    }
    Ok(())
}

async fn simulate(
    provider: ProviderArg,
    port: u16,
    latency_ms: Option<String>,
    requests_per_minute: Option<u32>,
    token_ttl_secs: u64,
    out: &mut dyn Write,
) -> std::result::Result<(), Failure> {
    use byte8_ledger_simulators::{DEMO_REFRESH_TOKEN, SageSimulator, SimConfig};
    let latency = match latency_ms {
        None => None,
        Some(text) => {
            let (lo, hi) = text.split_once('-').unwrap_or((text.as_str(), text.as_str()));
            let ms = |v: &str| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| usage(format!("--latency-ms: `{text}` is not `LOW-HIGH` milliseconds")))
            };
            Some((std::time::Duration::from_millis(ms(lo)?), std::time::Duration::from_millis(ms(hi)?)))
        }
    };
    if provider == ProviderArg::Xero {
        return simulate_xero(port, latency, requests_per_minute, token_ttl_secs, out).await;
    }
    let sim = SageSimulator::demo(SimConfig {
        requests_per_minute,
        latency,
        access_token_ttl: std::time::Duration::from_secs(token_ttl_secs.max(1)),
        ..SimConfig::default()
    });
    let server = sim
        .serve_on(port)
        .await
        .map_err(|e| Failure { code: 1, message: format!("cannot serve on port {port}: {e}") })?;
    writeln!(out, "Sage simulator (demo business `demo-business`) on {}", server.addr()).map_err(io)?;
    writeln!(
        out,
        "  --sage-base-url {} --sage-token-url {} --sage-authorize-url '{}'",
        server.base_url(),
        server.token_url(),
        server.authorize_url()
    )
    .map_err(io)?;
    writeln!(out, "  SAGE_CLIENT_ID=demo-client SAGE_CLIENT_SECRET=demo-secret, refresh token `{DEMO_REFRESH_TOKEN}`")
        .map_err(io)?;
    writeln!(out, "Ctrl-C stops it.").map_err(io)?;
    out.flush().map_err(io)?;
    let _ = tokio::signal::ctrl_c().await;
    let requests: u64 = sim.requests().values().sum();
    writeln!(out, "served {requests} requests").map_err(io)?;
    server.stop().await;
    Ok(())
}

async fn simulate_xero(
    port: u16,
    latency: Option<(std::time::Duration, std::time::Duration)>,
    requests_per_minute: Option<u32>,
    token_ttl_secs: u64,
    out: &mut dyn Write,
) -> std::result::Result<(), Failure> {
    use byte8_ledger_simulators::xero::{XERO_DEMO_REFRESH_TOKEN, XERO_DEMO_TENANT, XeroSimConfig, XeroSimulator};
    let defaults = XeroSimConfig::default();
    let sim = XeroSimulator::demo(XeroSimConfig {
        latency,
        per_minute: requests_per_minute.or(defaults.per_minute),
        access_token_ttl: std::time::Duration::from_secs(if token_ttl_secs == 300 {
            1800
        } else {
            token_ttl_secs.max(1)
        }),
        ..defaults
    });
    let server = sim
        .serve_on(port)
        .await
        .map_err(|e| Failure { code: 1, message: format!("cannot serve on port {port}: {e}") })?;
    writeln!(out, "Xero simulator (demo organisation `{XERO_DEMO_TENANT}`) on {}", server.addr()).map_err(io)?;
    writeln!(
        out,
        "  --provider xero --xero-base-url {} --xero-token-url {} --xero-connections-url {} --xero-authorize-url {}",
        server.base_url(),
        server.token_url(),
        server.connections_url(),
        server.authorize_url()
    )
    .map_err(io)?;
    writeln!(
        out,
        "  XERO_CLIENT_ID=demo-client XERO_CLIENT_SECRET=demo-secret, refresh token `{XERO_DEMO_REFRESH_TOKEN}`"
    )
    .map_err(io)?;
    writeln!(out, "Ctrl-C stops it.").map_err(io)?;
    out.flush().map_err(io)?;
    let _ = tokio::signal::ctrl_c().await;
    writeln!(out, "served {} requests", sim.requests().values().sum::<u64>()).map_err(io)?;
    server.stop().await;
    Ok(())
}

/// Initialises logging to stderr (`RUST_LOG`, default `warn`).
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ =
        tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).try_init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serve_takes_half_the_cores_and_sync_one_thread_unless_the_operator_said() {
        for (cores, threads) in [(1, 1), (2, 1), (3, 1), (4, 2), (16, 8)] {
            assert_eq!(half_the_cores(cores), threads, "{cores} cores");
        }
        let serve = Cli::parse_from(["byte8-ledger", "serve", "--state", "state.db"]).command;
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        assert_eq!(runtime_for(&serve, false), Runtime::Workers(Some((cores / 2).max(1))));
        assert_eq!(runtime_for(&serve, true), Runtime::Workers(None), "TOKIO_WORKER_THREADS wins");
        let sync = Cli::parse_from(["byte8-ledger", "sync", "--state", "state.db", "--events", "-"]).command;
        assert_eq!(runtime_for(&sync, false), Runtime::OneThread, "sync runs on one thread");
        assert_eq!(runtime_for(&sync, true), Runtime::Workers(None), "TOKIO_WORKER_THREADS wins");
        let demo = Cli::parse_from(["byte8-ledger", "demo"]).command;
        assert_eq!(runtime_for(&demo, false), Runtime::Workers(None), "other commands keep tokio's default");
    }
}
