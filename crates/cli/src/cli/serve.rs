//! `byte8-ledger serve`: the ledger service for the Byte8 Magento module ([`byte8_ledger_service`]):
//! the HTTP routes and the workers, on SQLite (one process) or PostgreSQL (several).

use std::{io::Write, sync::Arc, time::Duration};

use super::{
    Failure,
    database::{Database, StoreArgs, rate_from_env},
    env, io, usage,
};
use byte8_ledger_core::{
    clock::SystemClock,
    engine::EngineConfig,
    store::{ProviderKind, crypto::MasterKey},
};
use byte8_ledger_service::{
    HttpLimits, Service, ServiceConfig,
    console::{Console, ConsoleConfig, LedgerApp},
};

/// The console's base URL: `--public-url` (an absolute http(s) URL) or `http://LISTEN/`.
pub(crate) fn console_url(given: Option<&str>, listen: std::net::SocketAddr) -> Result<url::Url, Failure> {
    let text = given.map_or_else(|| format!("http://{listen}/"), str::to_owned);
    let url = url::Url::parse(&text).map_err(|e| usage(format!("--public-url: `{text}` is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err(usage(format!("--public-url: `{text}` must be an http(s) URL with a host")));
    }
    Ok(url)
}

/// The options of `serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Where the state lives.
    #[command(flatten)]
    pub store: StoreArgs,
    /// The address to listen on (put a TLS-terminating proxy in front: Magento sends its
    /// webhooks over https).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: String,
    /// Worker tasks this process starts with (0: accept requests only; other processes sync).
    /// Default: one per 16 active tenants at start, at least 4 and at most 256; the pool
    /// then grows while tenants with work wait and no worker is idle, up to `--max-workers`.
    #[arg(long)]
    pub workers: Option<usize>,
    /// The most worker tasks the pool grows to (default: 256, or `--workers` when that is
    /// given; never fewer than `--workers`).
    #[arg(long)]
    pub max_workers: Option<usize>,
    /// The console's public base URL as browsers reach it (the OAuth redirect URIs are built on
    /// it; its session cookie is `Secure` unless it is plain http on loopback); default
    /// `http://` + the listen address.
    #[arg(long, env = "BYTE8_CONSOLE_URL")]
    pub public_url: Option<String>,
    /// Serve without the operator console (`/console`).
    #[arg(long)]
    pub no_console: bool,
    /// Run the workers only, without the HTTP routes (more worker processes on one PostgreSQL).
    #[arg(long, alias = "workers-only")]
    pub no_http: bool,
    /// How often this process looks for work nothing announced (a run due again after its
    /// back-off, a callback to retry, a webhook another process took), in milliseconds. A
    /// webhook this process accepts wakes its workers at once, without waiting for this.
    #[arg(long, default_value_t = 1000)]
    pub poll_ms: u64,
    /// How long a worker's turn's end may wait to be recorded with other turns' ends, in
    /// milliseconds: one statement for all the turns that end within it (their callbacks marked
    /// delivered, their businesses' leases given up). 0 records each as its turn ends.
    #[arg(long, default_value_t = 50)]
    pub turn_end_ms: u64,
    /// Seconds to wait before each retry of a failed event, comma-separated, the last repeating
    /// (default: the Magento outbox's ladder, 60,300,1800,7200,21600,43200,86400).
    #[arg(long)]
    pub retry_delays: Option<String>,
    /// Seconds a shutdown (SIGTERM, Ctrl-C) waits for requests in flight and for the workers'
    /// current runs before it closes and aborts what is left (their claims come back when their
    /// leases expire).
    #[arg(long, default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Connections served at once.
    #[arg(long, default_value_t = 1024)]
    pub max_connections: usize,
    /// Attempts before a retryable failure is dead-lettered.
    #[arg(long, default_value_t = 10)]
    pub max_attempts: u32,
    /// Seconds between two retention purges in this process, the first at start (0: none here;
    /// run `byte8-ledger purge` from a scheduler instead).
    #[arg(long, default_value_t = 3600)]
    pub purge_every: u64,
    /// What the purge keeps.
    #[command(flatten)]
    pub retention: super::RetentionArgs,
}

fn retry_ladder(text: &str) -> Result<Vec<Duration>, Failure> {
    let ladder = text
        .split(',')
        .map(|s| {
            let s = s.trim();
            s.parse::<f64>()
                .ok()
                .and_then(|secs| Duration::try_from_secs_f64(secs).ok())
                .ok_or_else(|| usage(format!("--retry-delays: `{s}` is not a number of seconds ≥ 0")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if ladder.is_empty() {
        return Err(usage("--retry-delays: give at least one delay"));
    }
    Ok(ladder)
}

/// Waits for Ctrl-C or (on Unix) SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// The workers need the OAuth client of every ledger a stored connection names (Sage's when none
/// is stored yet, the usual first deployment): checked at start, not at the first event.
async fn require_credentials(db: &Database) -> Result<(), Failure> {
    let kinds: Vec<Option<ProviderKind>> =
        db.connections().connections().await?.iter().map(byte8_ledger_core::store::Connection::kind).collect();
    if kinds.is_empty() || kinds.contains(&Some(ProviderKind::Sage)) {
        env("SAGE_CLIENT_ID")?;
        env("SAGE_CLIENT_SECRET")?;
    }
    if kinds.contains(&Some(ProviderKind::Xero)) {
        env("XERO_CLIENT_ID")?;
        env("XERO_CLIENT_SECRET")?;
    }
    Ok(())
}

/// The most workers the pool grows to by default.
pub(crate) const MAX_WORKERS: usize = 256;

/// The workers `serve` starts with when `--workers` is not given: one per 16 active tenants, at
/// least 4, at most [`MAX_WORKERS`]. A worker spends most of an event waiting for Sage (100–150 ms
/// a request, one to three requests an event), so what a node needs is round trips in flight, not
/// cores: measured (BENCHMARKS.md), 1,000 tenants at a busy hour's 2 events a minute each need
/// about 64 at once. The pool grows beyond the start while work waits, so this only saves the
/// first minute's growing.
pub(crate) fn default_workers(active_tenants: usize) -> usize {
    active_tenants.div_ceil(16).clamp(4, MAX_WORKERS)
}

pub(crate) async fn run(args: ServeArgs, out: &mut dyn Write) -> Result<(), Failure> {
    if args.no_http && args.workers == Some(0) {
        return Err(usage("--no-http with --workers 0 leaves nothing to do"));
    }
    if args.max_attempts == 0 {
        return Err(usage("--max-attempts: must be at least 1"));
    }
    let key = MasterKey::from_env()?;
    let mut engine = EngineConfig { max_attempts: args.max_attempts, ..EngineConfig::default() };
    if let Some(text) = &args.retry_delays {
        engine.retry_ladder = retry_ladder(text)?;
    }
    let retention = args.retention.policy()?;
    let config = ServiceConfig {
        poll_interval: Duration::from_millis(args.poll_ms.max(1)),
        turn_end_delay: Duration::from_millis(args.turn_end_ms),
        engine,
        retention: (args.purge_every > 0).then_some(retention),
        purge_interval: Duration::from_secs(args.purge_every),
        ..ServiceConfig::default()
    };
    let shutdown_timeout = Duration::from_secs(args.shutdown_timeout);
    if args.max_connections == 0 {
        return Err(usage("--max-connections: must be at least 1"));
    }
    // One writer per SQLite state file: held until the process ends.
    let (db, _lock) = Database::open_locked(&args.store, Some(key), "serve").await?;
    let (workers, max_workers) = match (args.workers, args.max_workers) {
        (Some(n), cap) => (n, cap.unwrap_or(n).max(n)),
        (None, cap) => {
            let active = db.service().bindings().await?.iter().filter(|b| b.is_active()).count();
            let cap = cap.unwrap_or(MAX_WORKERS);
            (default_workers(active).min(cap), cap)
        }
    };
    if workers > 0 {
        require_credentials(&db).await?;
    }
    let rate = rate_from_env()?;
    let providers = Arc::new(db.providers(rate));
    let service = Service::new(db.service(), providers, Arc::new(SystemClock), config);
    if let Database::Postgres(store) = &db {
        // Processes sharing the database wake one another's workers (LISTEN/NOTIFY).
        service.set_wake_bus(Arc::new(byte8_ledger_service::wake::PgWakeBus::new(store)));
    }

    let (stop_http, http_stopped) = tokio::sync::oneshot::channel::<()>();
    let mut console_at = None;
    let server = if args.no_http {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&args.listen)
            .await
            .map_err(|e| Failure { code: 1, message: format!("cannot listen on {}: {e}", args.listen) })?;
        let addr = listener.local_addr().map_err(|e| Failure { code: 1, message: e.to_string() })?;
        let mut app = service.router();
        writeln!(out, "listening on http://{addr}").map_err(io)?;
        if !args.no_console {
            let public_url = console_url(args.public_url.as_deref(), addr)?;
            // The overview's "rate limit's use" compares with the limit the providers keep.
            let config = ConsoleConfig::new(public_url.clone())
                .with_requests_per_minute("sage_accounting", rate.requests_per_minute);
            let mut console = Console::new(&service, db.console(), config, &MasterKey::from_env()?);
            for app in LedgerApp::from_env() {
                console = console.with_ledger_app(app);
            }
            app = app.merge(console.router());
            console_at = Some(public_url.join("console").map_err(|e| usage(e.to_string()))?);
        }
        let limits = HttpLimits { max_connections: args.max_connections, shutdown_timeout, ..HttpLimits::default() };
        Some(tokio::spawn(byte8_ledger_service::serve(listener, app, limits, async {
            let _ = http_stopped.await;
        })))
    };
    let workers = service.spawn_workers_up_to(workers, max_workers);
    writeln!(out, "{} worker(s) on {db}", workers.len()).map_err(io)?;
    if let Some(at) = &console_at {
        writeln!(out, "console at {at}").map_err(io)?;
    }
    out.flush().map_err(io)?;
    tracing::info!(
        workers = workers.len(),
        max_workers = workers.cap(),
        http = !args.no_http,
        "byte8-ledger serve started"
    );

    let failed = match server {
        Some(mut task) => {
            let failed = tokio::select! {
                () = shutdown_signal() => None,
                ended = &mut task => Some(match ended {
                    Ok(_) => "the HTTP server stopped".to_owned(),
                    Err(e) => format!("the HTTP server failed: {e}"),
                }),
            };
            // The HTTP side and the workers stop together, each within the limit.
            let _ = stop_http.send(());
            if failed.is_none() {
                let (_, _) = tokio::join!(task, workers.stop_within(shutdown_timeout));
                return stopped(out, None);
            }
            failed
        }
        None => {
            shutdown_signal().await;
            None
        }
    };
    workers.stop_within(shutdown_timeout).await;
    stopped(out, failed)
}

fn stopped(out: &mut dyn Write, failed: Option<String>) -> Result<(), Failure> {
    match failed {
        Some(message) => Err(Failure { code: 1, message }),
        None => {
            writeln!(out, "stopped").map_err(io)?;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_ladders_are_read_with_the_field_named() {
        assert_eq!(
            retry_ladder("0.5, 2,60").unwrap(),
            [Duration::from_millis(500), Duration::from_secs(2), Duration::from_secs(60)]
        );
        for bad in ["", "1,,2", "-1", "x", "nan"] {
            let e = retry_ladder(bad).unwrap_err();
            assert!(e.message.contains("--retry-delays"), "{bad}: {}", e.message);
            assert_eq!(e.code, 2);
        }
    }

    /// The documented rule: one worker per 16 active tenants (rounded up), at least 4, at most 256.
    #[test]
    fn the_default_pool_is_one_worker_per_16_tenants_between_4_and_256() {
        assert_eq!(default_workers(0), 4);
        assert_eq!(default_workers(10), 4);
        assert_eq!(default_workers(64), 4);
        assert_eq!(default_workers(65), 5);
        assert_eq!(default_workers(100), 7);
        assert_eq!(default_workers(1_000), 63);
        assert_eq!(default_workers(1_000_000), 256);
        assert_eq!(MAX_WORKERS, 256);
    }
}
