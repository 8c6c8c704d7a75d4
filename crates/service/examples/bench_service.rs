//! The service under load, on PostgreSQL: `byte8-ledger serve` child processes (the service's
//! real router and workers) serving N tenants that send signed webhooks as the Byte8 module
//! does, against a fake Magento and the Sage simulator, with figures printed per configuration.
//!
//! Per configuration (tenants × worker processes) the program:
//!
//! 1. empties the database it is given (**every table in its `public` schema is dropped**: give
//!    it a database of its own) and migrates it;
//! 2. serves the Sage simulator (each business its own limit, 429 + `Retry-After` beyond it,
//!    uniform latency, 100–150 ms by default) and a fake Magento (a small axum server answering
//!    the entity GETs from memory and accepting the sync-state callbacks; it does not check the
//!    ledger's JWTs, so that it costs next to nothing) in this process;
//! 3. pairs N tenants straight in the store (binding, Sage connection and tokens), each with its
//!    own workload stream (`simulator::workload`, seed per tenant) whose entities the fake
//!    Magento serves;
//! 4. starts P `byte8-ledger serve` processes on the database (the first with the HTTP routes),
//!    W worker tasks each;
//! 5. has every tenant send its stream as webhooks — JWT signed with the tenant's outbound
//!    subkey, `Idempotency-Key` header, as the module's `ByteClient` — at Poisson arrivals of
//!    `--rate` events a minute (a busy hour), except `--backfill` tenants, which send far faster
//!    than their limit allows so that their queue never empties (a back-fill);
//! 6. measures a window after a warm-up (each tenant's runtime and reference cache built), then
//!    stops sending and lets the queue drain.
//!
//! Printed per configuration: outcomes a second sustained in the window; webhook → outcome
//! latency p50/p99 (the run's `updated_at − created_at` in the database) of the tenants under
//! their limit, and of the back-filling ones; CPU milliseconds per event of the `serve`
//! processes (`/proc/PID/stat`, user + system) and of the database's client backends (the
//! connections of this database: what the statements cost), and of the whole PostgreSQL server
//! (every process the postmaster started, living or ended in the window: autovacuum and its
//! `ANALYZE`s, the WAL writer, the checkpointer, the backends; from the postmaster's own and
//! its reaped children's times and its live children's, so it counts any other database's work
//! too: run the bench alone on the server). Round 29 and later; before, the backends' figure
//! also held whichever autovacuum workers of the database were alive at the window's start or
//! end, a random share of their work;
//! the `serve` processes' context switches per event (`/proc/PID/task/*/status`; round 31: a
//! voluntary one is the runtime thread waiting for a socket or a timer, and the cost of going
//! idle and waking again is much of the CPU an event when events are sparse);
//! the peak RSS of each process (`VmHWM`); database transactions per event
//! (`pg_stat_database`), and statements per event when `--statements` is given (counted from
//! sqlx's per-statement log, which costs CPU itself: take CPU figures from a run without it);
//! Sage requests, 429s, and each back-filling business's requests a minute as a share of its
//! limit; callbacks sent; the first five of `serve`'s warning and error lines, if any.
//!
//! Run (after `cargo build --release --bin byte8-ledger`):
//!
//! ```sh
//! psql -h /work/pg -U postgres -c 'create database byte8_bench'
//! cargo run --release -p byte8-ledger-service --example bench_service -- \
//!     --database-url 'postgres://postgres@localhost/byte8_bench?host=/work/pg' \
//!     --tenants 10,100,1000 --processes 1 --warmup 30 --seconds 60
//! ```
//!
//! Options (defaults in brackets): `--tenants` a list [10]; `--processes` a list [1];
//! `--workers` per process, or `auto` for `serve`'s own default [auto]; `--rate` events a minute per tenant [2]; `--backfill` tenants
//! back-filling [1]; `--limit` Sage requests a minute per business [200]; `--latency-ms` [100-150];
//! `--warmup` s [30]; `--seconds` measured [60]; `--drain` s at most [30]; `--bin` the command
//! [target/release/byte8-ledger]; `--serve-args` more arguments for each `serve` [none];
//! `--statements` (with a count per statement kind); `--log` the children's `RUST_LOG` [warn];
//! `--history` finished runs kept for each back-filling business before the start [0];
//! `--mix` `busy` or `catalogue` [busy]: every workload stream starts with its store's
//! catalogue (one `product.upserted` per product, 15 here), which a tenant sending 2 events a
//! minute would still be sending when the window ends. With `busy` the catalogues are sent and
//! synced first (all tenants at once, printed as "catalogue: …"), and the window carries what
//! follows: invoices, payments, credit memos, customers and the occasional product change (64
//! tenants send their catalogues at a time). With
//! `catalogue` the streams are sent from their start, as every figure before round 25 was taken:
//! the window then carries mostly product creations.
//! With `BENCH_KEEP_LOGS` set, the children's logs are kept (their directory is printed).
//!
//! The server's settings change the database's figures: BENCHMARKS.md's were taken on a
//! PostgreSQL 15 started with `-c fsync=off -c synchronous_commit=off -c max_connections=400`
//! (a test machine's), which puts the client backends about 0.3 ms an event below a server with
//! durable commits (PostgreSQL's defaults; measured in round 31). Compare builds on one server.
#![allow(clippy::cast_possible_truncation, clippy::cast_sign_loss, clippy::cast_precision_loss)]

use std::{
    collections::{BTreeMap, HashMap},
    process::Stdio,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{
    body::Bytes,
    extract::{Path, State},
    http::StatusCode,
    response::{IntoResponse, Response},
    routing::{get, post},
};
use byte8_ledger_core::{
    auth::TokenSet,
    clock::{Clock, SystemClock},
    policy::SyncPolicy,
    reference::ReferenceData,
    store::{Connection, ConnectionStore, crypto::MasterKey, postgres::PostgresStore},
};
use byte8_ledger_service::magento::{ApiKey, Claims, SubKey, jwt};
use byte8_ledger_service::store::{Binding, BindingStore};
use byte8_ledger_simulators::{
    SageSimulator, SimConfig, SimRequest,
    workload::{WORKLOAD_POLICY, Workload, WorkloadConfig},
};
use rand::{Rng as _, SeedableRng as _};
use secrecy::SecretString;
use serde_json::Value;
use sqlx::Row as _;
use tokio::io::AsyncBufReadExt as _;

const MASTER_KEY: &str = "YmVuY2gtc2VydmljZS1tYXN0ZXIta2V5LTMyYnl0ZXM=";

#[derive(Debug, Clone)]
struct Args {
    database_url: String,
    tenants: Vec<usize>,
    processes: Vec<usize>,
    /// `None`: `serve`'s own default (sized to the tenants, growing).
    workers: Option<usize>,
    rate: f64,
    backfill: usize,
    limit: u32,
    latency: (Duration, Duration),
    warmup: Duration,
    seconds: Duration,
    drain: Duration,
    bin: String,
    /// More arguments for every `serve` child (`--serve-args "--poll-ms 200"`).
    serve_args: Vec<String>,
    statements: bool,
    log: String,
    /// Finished runs kept for each back-filling business before the run starts (a merchant with
    /// months of history): what the queue's statements cost must not grow with it.
    history: u64,
    /// What the measured window carries: `Busy`, each store's catalogue synced before the
    /// service is measured; `Catalogue`, each stream from its start (its first events are its
    /// catalogue's products: what every figure before round 25 measured).
    mix: Mix,
}

/// The events the measured window carries (`--mix`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mix {
    Busy,
    Catalogue,
}

fn list(v: &str) -> Vec<usize> {
    v.split(',').filter_map(|s| s.trim().parse().ok()).collect()
}

fn args() -> Args {
    let mut a = Args {
        database_url: std::env::var("BYTE8_BENCH_DATABASE_URL").unwrap_or_default(),
        tenants: vec![10],
        processes: vec![1],
        workers: None,
        rate: 2.0,
        backfill: 1,
        limit: 200,
        latency: (Duration::from_millis(100), Duration::from_millis(150)),
        warmup: Duration::from_secs(30),
        seconds: Duration::from_secs(60),
        drain: Duration::from_secs(30),
        bin: "target/release/byte8-ledger".into(),
        serve_args: Vec::new(),
        statements: false,
        log: "warn".into(),
        history: 0,
        mix: Mix::Busy,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        if flag == "--statements" {
            a.statements = true;
            continue;
        }
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let secs = |v: &str| Duration::from_secs_f64(v.parse::<f64>().unwrap_or_else(|_| panic!("{flag}: seconds")));
        match flag.as_str() {
            "--database-url" => a.database_url = value,
            "--tenants" => a.tenants = list(&value),
            "--processes" => a.processes = list(&value),
            "--workers" => a.workers = (value != "auto").then(|| value.parse().expect("--workers N or auto")),
            "--rate" => a.rate = value.parse().expect("--rate"),
            "--backfill" => a.backfill = value.parse().expect("--backfill"),
            "--limit" => a.limit = value.parse().expect("--limit"),
            "--latency-ms" => {
                let (lo, hi) = value.split_once('-').expect("--latency-ms LO-HI");
                a.latency = (
                    Duration::from_millis(lo.parse().expect("latency")),
                    Duration::from_millis(hi.parse().expect("latency")),
                );
            }
            "--warmup" => a.warmup = secs(&value),
            "--seconds" => a.seconds = secs(&value),
            "--drain" => a.drain = secs(&value),
            "--history" => a.history = value.parse().expect("--history"),
            "--mix" => {
                a.mix = match value.as_str() {
                    "busy" => Mix::Busy,
                    "catalogue" => Mix::Catalogue,
                    _ => panic!("--mix busy or catalogue"),
                }
            }
            "--bin" => a.bin = value,
            "--serve-args" => a.serve_args = value.split_whitespace().map(str::to_owned).collect(),
            "--log" => a.log = value,
            other => panic!("unknown option {other}"),
        }
    }
    assert!(!a.database_url.is_empty(), "--database-url (or BYTE8_BENCH_DATABASE_URL) is required");
    a
}

// ---- the Sage simulator, served with latency and counted per business ----------------------

#[derive(Debug, Default)]
struct SageCounts {
    /// Requests answered per business (`X-Business`), 429s included.
    requests: BTreeMap<String, u64>,
    /// 429s per business.
    throttled: BTreeMap<String, u64>,
}

#[derive(Clone)]
struct SageFront {
    sim: SageSimulator,
    latency: (Duration, Duration),
    counts: Arc<Mutex<SageCounts>>,
}

async fn sage_one(State(front): State<SageFront>, req: axum::extract::Request) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = axum::body::to_bytes(body, 16 * 1024 * 1024).await.unwrap_or_default();
    let (lo, hi) = front.latency;
    let extra = hi.saturating_sub(lo).mul_f64(rand::rng().random::<f64>());
    tokio::time::sleep(lo + extra).await;
    let query =
        parts.uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| v.to_str().ok().map(|v| (k.as_str().to_ascii_lowercase(), v.to_owned())))
        .collect();
    let business = headers.iter().find(|(k, _)| k == "x-business").map(|(_, v)| v.clone());
    let answer = front.sim.handle(&SimRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query,
        headers,
        body: bytes.to_vec(),
    });
    if let Some(b) = business {
        let mut c = front.counts.lock().unwrap();
        *c.requests.entry(b.clone()).or_default() += 1;
        if answer.status == 429 {
            *c.throttled.entry(b).or_default() += 1;
        }
    }
    let mut builder = axum::http::Response::builder().status(answer.status).header("content-type", "application/json");
    for (k, v) in &answer.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body =
        if answer.body.is_null() && answer.status == 204 { Vec::new() } else { answer.body.to_string().into_bytes() };
    builder.body(axum::body::Body::from(body)).unwrap()
}

async fn serve_app(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

// ---- the fake Magento --------------------------------------------------------------------

#[derive(Debug, Default)]
struct Magento {
    /// Entities as served, by (shop, segment, id).
    entities: HashMap<(String, String, u64), Bytes>,
}

#[derive(Clone)]
struct MagentoFront {
    state: Arc<std::sync::RwLock<Magento>>,
    fetches: Arc<AtomicU64>,
    callbacks: Arc<AtomicU64>,
    missing: Arc<AtomicU64>,
}

async fn magento_get(
    State(m): State<MagentoFront>,
    Path((shop, segment, id)): Path<(String, String, String)>,
) -> Response {
    if segment == "ping" {
        return (StatusCode::OK, axum::Json(serde_json::json!({"ok": true}))).into_response();
    }
    m.fetches.fetch_add(1, Ordering::Relaxed);
    let id: u64 = id.parse().unwrap_or(0);
    match m.state.read().unwrap().entities.get(&(shop, segment, id)) {
        Some(body) => ([("content-type", "application/json")], body.clone()).into_response(),
        None => {
            m.missing.fetch_add(1, Ordering::Relaxed);
            (StatusCode::NOT_FOUND, axum::Json(serde_json::json!({"message": "No such entity"}))).into_response()
        }
    }
}

async fn magento_ping(Path(_shop): Path<String>) -> Response {
    (StatusCode::OK, axum::Json(serde_json::json!({"ok": true}))).into_response()
}

async fn magento_sync_state(State(m): State<MagentoFront>, Path(_shop): Path<String>, _body: Bytes) -> Response {
    m.callbacks.fetch_add(1, Ordering::Relaxed);
    StatusCode::NO_CONTENT.into_response()
}

fn segment_of(event: &str) -> &'static str {
    match event {
        "invoice.created" => "invoice",
        "invoice.paid" => "payment",
        "creditmemo.created" => "creditmemo",
        "customer.upserted" => "customer",
        _ => "product",
    }
}

// ---- processes ----------------------------------------------------------------------------

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// Sends one webhook as the module's `ByteClient` does: a JWT signed with the tenant's outbound
/// subkey, the event's `Idempotency-Key`.
async fn post_webhook(
    http: &reqwest::Client,
    ledger: &str,
    tenant: &str,
    outbound: &SubKey,
    event: &str,
    id: u64,
    body: String,
) -> reqwest::Result<reqwest::Response> {
    let now = SystemClock.now().timestamp();
    let claims = Claims {
        iss: "magento".into(),
        sub: tenant.to_owned(),
        aud: "byte8-ledger".into(),
        iat: now,
        nbf: now,
        exp: now + 60,
        jti: uuid::Uuid::new_v4().to_string(),
    };
    let token = jwt::sign(outbound, &claims).unwrap();
    http.post(format!("{ledger}/webhooks/magento/{tenant}/{event}"))
        .header("content-type", "application/json")
        .header("idempotency-key", format!("{event}:{id}"))
        .bearer_auth(token)
        .body(body)
        .send()
        .await
}

/// User + system CPU of a live process, in ticks (proc(5): utime 14, stime 15).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let f = stat_fields(pid)?;
    Some(f.get(11)? + f.get(12)?)
}

/// The fields of `/proc/PID/stat` after the command name: state first, so that field `n` of
/// proc(5) is at `n - 3`.
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // The state is a letter: read as 0, as any field that is not a number.
    Some(rest.split_whitespace().map(|f| f.parse::<u64>().unwrap_or(0)).collect())
}

/// The PostgreSQL server's CPU so far, in ticks: the postmaster's user and system time and its
/// ended children's (`cutime`, `cstime`: they are reaped), plus every live child's. A child
/// that ends between two readings moves from the live sum to the postmaster's children times,
/// so the difference of two readings counts every process's work between them once.
fn server_ticks(postmaster: u32) -> Option<u64> {
    let pm = stat_fields(postmaster)?;
    // proc(5): ppid 4, utime 14, stime 15, cutime 16, cstime 17.
    let own = pm.get(11)? + pm.get(12)? + pm.get(13)? + pm.get(14)?;
    let mut live = 0;
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        if let Some(f) = stat_fields(pid)
            && f.get(1).copied() == Some(u64::from(postmaster))
        {
            live += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
        }
    }
    Some(own + live)
}

/// The postmaster: the parent of this connection's backend.
async fn postmaster_pid(pool: &sqlx::PgPool) -> Option<u32> {
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()").fetch_one(pool).await.ok()?;
    let f = stat_fields(u32::try_from(backend).ok()?)?;
    u32::try_from(*f.get(1)?).ok()
}

/// A live process's context switches so far, summed over its threads (`/proc/PID/task/*/status`):
/// voluntary (the thread waited: for a socket, a timer, a lock) and involuntary (preempted). A
/// thread that ended is not counted; `serve`'s runtime threads live as long as it does.
fn context_switches(pid: u32) -> Option<(u64, u64)> {
    let mut sum = (0, 0);
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.flatten() {
        let Ok(status) = std::fs::read_to_string(task.path().join("status")) else { continue };
        for line in status.lines() {
            let field = |name: &str| line.strip_prefix(name).and_then(|v| v.trim().parse::<u64>().ok());
            if let Some(n) = field("voluntary_ctxt_switches:") {
                sum.0 += n;
            } else if let Some(n) = field("nonvoluntary_ctxt_switches:") {
                sum.1 += n;
            }
        }
    }
    Some(sum)
}

fn peak_rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

struct Child {
    child: tokio::process::Child,
    pid: u32,
    log: std::path::PathBuf,
}

async fn spawn_serve(args: &Args, http: bool, dir: &std::path::Path, n: usize) -> (Child, Option<String>) {
    let log = dir.join(format!("serve-{n}.log"));
    let rust_log = if args.statements { format!("{},sqlx::query=debug", args.log) } else { args.log.clone() };
    let mut c = tokio::process::Command::new(&args.bin);
    c.args(["serve", "--database-url", &args.database_url, "--purge-every", "0"])
        .env("LEDGER_MASTER_KEY", MASTER_KEY)
        .env("SAGE_CLIENT_ID", "demo-client")
        .env("SAGE_CLIENT_SECRET", "demo-secret")
        .env("SAGE_REQUESTS_PER_MINUTE", args.limit.to_string())
        .env("RUST_LOG", rust_log)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true);
    c.args(&args.serve_args);
    if let Some(w) = args.workers {
        c.args(["--workers", &w.to_string()]);
    }
    if http {
        c.args(["--listen", "127.0.0.1:0"]);
    } else {
        c.arg("--no-http");
    }
    let mut child = c.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e} (build it with --release)", args.bin));
    let pid = child.id().unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut url = None;
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(u) = line.strip_prefix("listening on ") {
            url = Some(u.trim().to_owned());
        }
        if line.contains("worker(s) on") {
            break;
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    (Child { child, pid, log }, url)
}

/// A field only sqlx's per-statement log line has (`serve` logs without targets, so the line does
/// not name `sqlx::query`).
const STATEMENT_FIELD: &str = "elapsed_secs";

fn log_size(path: &std::path::Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

/// The statements logged by sqlx in `path` between two byte offsets, counted by their summary
/// (the statement's first words).
fn statement_kinds(path: &std::path::Path, from: u64, to: u64) -> BTreeMap<String, u64> {
    let mut kinds = BTreeMap::new();
    let Ok(bytes) = std::fs::read(path) else { return kinds };
    let end = (to as usize).min(bytes.len());
    let text = String::from_utf8_lossy(&bytes[(from as usize).min(end)..end]);
    for line in text.lines().filter(|l| l.contains(STATEMENT_FIELD)) {
        let kind = line
            .split_once("summary")
            .and_then(|(_, rest)| rest.split_once('"'))
            .and_then(|(_, rest)| rest.split_once('"'))
            .map_or_else(|| "?".to_owned(), |(summary, _)| summary.to_owned());
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
}

fn count_lines(path: &std::path::Path, needle: &str) -> u64 {
    lines_with(path, &[needle]).len() as u64
}

/// How many of serve's warning and error lines a report quotes.
const WARNINGS_SHOWN: usize = 5;

/// The lines of a log that hold any of `needles`, in order.
fn lines_with(path: &std::path::Path, needles: &[&str]) -> Vec<String> {
    std::fs::read_to_string(path)
        .map(|t| t.lines().filter(|l| needles.iter().any(|n| l.contains(n))).map(str::to_owned).collect())
        .unwrap_or_default()
}

// ---- figures ------------------------------------------------------------------------------

fn pct(v: &mut [f64], p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

#[derive(Debug, Clone, Copy)]
struct Snapshot {
    at: Instant,
    serve_ticks: u64,
    /// The serve processes' context switches ([`context_switches`]), voluntary and involuntary.
    serve_switches: (u64, u64),
    pg_ticks: u64,
    /// The whole server's ([`server_ticks`]), when its processes can be read.
    server_ticks: Option<u64>,
    xacts: i64,
    statements: u64,
    callbacks: u64,
    sage: u64,
    throttled: u64,
}

async fn pg_backends(pool: &sqlx::PgPool) -> Vec<u32> {
    sqlx::query(
        "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND backend_type = 'client backend'",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default()
    .iter()
    .filter_map(|r| r.try_get::<i32, _>("pid").ok().and_then(|p| u32::try_from(p).ok()))
    .collect()
}

async fn xacts(pool: &sqlx::PgPool) -> i64 {
    // The statistics are flushed by each backend at most every second or so: read after a pause.
    sqlx::query("SELECT pg_stat_clear_snapshot()").execute(pool).await.ok();
    sqlx::query(
        "SELECT (xact_commit + xact_rollback)::bigint AS n FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(pool)
    .await
    .map(|r| r.get::<i64, _>("n"))
    .unwrap_or(0)
}

// ---- one configuration --------------------------------------------------------------------

#[allow(clippy::too_many_lines)]
async fn run(args: &Args, tenants: usize, processes: usize) {
    println!(
        "\n## {tenants} tenants, {processes} worker process(es) × {} workers",
        args.workers.map_or_else(|| "serve's default".to_owned(), |w| w.to_string())
    );
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("BENCH_KEEP_LOGS").is_some() {
        // The serve processes' logs are kept for a look afterwards.
        println!("logs in {}", dir.path().display());
    }
    let master = MasterKey::from_base64(&SecretString::from(MASTER_KEY.to_owned())).unwrap();
    // A clean database for each configuration.
    {
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&args.database_url).await.unwrap();
        sqlx::query("DROP SCHEMA public CASCADE").execute(&pool).await.unwrap();
        sqlx::query("CREATE SCHEMA public").execute(&pool).await.unwrap();
    }
    let store = PostgresStore::from_pool(
        sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&args.database_url).await.unwrap(),
        Some(master),
    )
    .await
    .unwrap();

    let sim = SageSimulator::new(SimConfig { requests_per_minute: Some(args.limit), ..SimConfig::default() });
    let counts = Arc::new(Mutex::new(SageCounts::default()));
    let sage_url = serve_app(axum::Router::new().fallback(sage_one).with_state(SageFront {
        sim: sim.clone(),
        latency: args.latency,
        counts: Arc::clone(&counts),
    }))
    .await;
    let magento = MagentoFront {
        state: Arc::default(),
        fetches: Arc::default(),
        callbacks: Arc::default(),
        missing: Arc::default(),
    };
    let magento_url = serve_app(
        axum::Router::new()
            .route("/{shop}/rest/V1/byte8/ping", get(magento_ping))
            .route("/{shop}/rest/V1/byte8/sync-state", post(magento_sync_state))
            .route("/{shop}/rest/V1/byte8/{segment}/{id}", get(magento_get))
            .with_state(magento.clone()),
    )
    .await;

    // Tenants: business, Sage connection and tokens, binding, stream.
    let policy = SyncPolicy::from_json(WORKLOAD_POLICY).unwrap();
    let span = (args.warmup + args.seconds).as_secs_f64() / 60.0;
    let mut streams = Vec::new();
    let mut catalogues = Vec::new();
    let setup = Instant::now();
    for i in 0..tenants {
        let business = format!("bench-b{i:04}");
        let tenant = format!("bench-t{i:04}");
        let shop = format!("shop{i:04}");
        let mut reference = ReferenceData::demo_uk(SystemClock.now());
        reference.business.id = business.clone();
        sim.add_business(reference);
        let refresh = format!("refresh-{business}");
        sim.with_state(|s| s.add_refresh_token(&refresh));
        store
            .save_connection(&Connection {
                scope: business.clone(),
                provider: "sage_accounting".into(),
                base_url: format!("{sage_url}/v3.1"),
                token_url: format!("{sage_url}/token"),
                created_at: SystemClock.now(),
                tenant_id: None,
                connections_url: None,
            })
            .await
            .unwrap();
        store.save_tokens(&business, &TokenSet::from_refresh_token(SecretString::from(refresh))).await.unwrap();
        let key = ApiKey::generate().unwrap();
        let outbound = Arc::new(key.derive().outbound);
        let binding =
            Binding::new(&tenant, &business, &format!("{magento_url}/{shop}"), key, policy.clone(), SystemClock.now())
                .unwrap();
        store.put_binding(&binding).await.unwrap();
        let backfill = i < args.backfill;
        // Enough events for the whole run: a back-fill sends about 4 a second (far beyond what
        // its limit lets through), the others `rate` a minute.
        let events = if backfill { (span * 240.0) as usize + 50 } else { (span * args.rate * 2.0) as usize + 20 };
        let workload = Workload::generate(&WorkloadConfig {
            seed: 1000 + i as u64,
            events,
            customers: 40,
            products: 15,
            ..WorkloadConfig::default()
        });
        let mut lines = Vec::with_capacity(workload.lines.len());
        {
            let mut m = magento.state.write().unwrap();
            for line in workload.lines {
                let v: Value = serde_json::from_str(&line).unwrap();
                let event = v["event"].as_str().unwrap().to_owned();
                let id = v["magento_entity_id"].as_u64().unwrap();
                m.entities
                    .insert((shop.clone(), segment_of(&event).to_owned(), id), Bytes::from(v["entity"].to_string()));
                let mut envelope = serde_json::Map::new();
                for f in ["magento_entity_id", "website_id", "store_id", "occurred_at", "payload"] {
                    if let Some(x) = v.get(f) {
                        envelope.insert(f.to_owned(), x.clone());
                    }
                }
                lines.push((event, id, Value::Object(envelope).to_string()));
            }
        }
        // The store's catalogue: the stream's leading product events.
        let catalogue_len = match args.mix {
            Mix::Busy => lines.iter().take_while(|(event, _, _)| event == "product.upserted").count(),
            Mix::Catalogue => 0,
        };
        let catalogue: Vec<(String, u64, String)> = lines.drain(..catalogue_len).collect();
        catalogues.push((tenant.clone(), Arc::clone(&outbound), catalogue));
        streams.push((tenant, business, outbound, backfill, lines));
    }
    if args.history > 0 {
        // Synced runs of the back-filling tenants, as months of a busy store's events would
        // leave them (every key its own), then fresh statistics as autovacuum would take.
        for (tenant, business, _, backfill, _) in &streams {
            if !backfill {
                continue;
            }
            sqlx::query(
                "INSERT INTO runs (scope, idempotency_key, event, magento_entity_id, raw, fingerprint, policy, status, \
                 attempts, created_at, updated_at, tenant_id, claim) \
                 SELECT $1, 'history.created:' || g, 'invoice.created', g, '\\x7b7d'::bytea, 'fp' || g, '{}', 'synced', 1, \
                 now() - interval '30 days', now() - interval '30 days', $2, 1 FROM generate_series(1, $3::bigint) AS g",
            )
            .bind(business)
            .bind(tenant)
            .bind(i64::try_from(args.history).unwrap_or(i64::MAX))
            .execute(store.pool())
            .await
            .unwrap();
        }
        sqlx::query("ANALYZE runs").execute(store.pool()).await.unwrap();
        println!("history: {} synced runs kept for each back-filling business", args.history);
    }
    println!("setup: {tenants} tenants paired and connected in {:.1} s", setup.elapsed().as_secs_f64());

    // The service.
    let mut children = Vec::new();
    let mut ledger = None;
    for p in 0..processes {
        let (child, url) = spawn_serve(args, p == 0, dir.path(), p).await;
        if p == 0 {
            ledger = url;
        }
        children.push(child);
    }
    let ledger = ledger.expect("the first serve process listens");

    let http = reqwest::Client::builder().pool_max_idle_per_host(256).build().unwrap();
    // The catalogues first (`--mix busy`): 64 tenants' at a time (all 1,000 at once queue their
    // webhooks for connections of the first process's pool for seconds: an overload the window
    // is not about), then until the queue is empty.
    let products: usize = catalogues.iter().map(|c| c.2.len()).sum();
    if products > 0 {
        let started = Instant::now();
        let senders = Arc::new(tokio::sync::Semaphore::new(64));
        let mut loaders = Vec::new();
        for (tenant, outbound, catalogue) in catalogues {
            let (http, ledger) = (http.clone(), ledger.clone());
            let senders = Arc::clone(&senders);
            loaders.push(tokio::spawn(async move {
                let _turn = senders.acquire_owned().await.unwrap();
                for (event, id, body) in catalogue {
                    let answer = post_webhook(&http, &ledger, &tenant, &outbound, &event, id, body).await;
                    assert!(
                        answer.as_ref().is_ok_and(|r| r.status() == reqwest::StatusCode::ACCEPTED),
                        "a catalogue webhook was refused: {answer:?}"
                    );
                }
            }));
        }
        for l in loaders {
            l.await.unwrap();
        }
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let open: i64 = sqlx::query("SELECT COUNT(*) AS n FROM runs WHERE status IN ('queued', 'running')")
                .fetch_one(store.pool())
                .await
                .unwrap()
                .get("n");
            if open == 0 {
                break;
            }
            assert!(Instant::now() < deadline, "the catalogues are not synced after 10 minutes ({open} runs open)");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        println!("catalogue: {products} product events sent and synced in {:.1} s", started.elapsed().as_secs_f64());
    }

    // The senders.
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let webhook_ms = Arc::new(Mutex::new(Vec::<f64>::new()));
    let measuring = Arc::new(AtomicBool::new(false));
    let mut senders = Vec::new();
    let backfill_businesses: Vec<String> = streams.iter().filter(|s| s.3).map(|s| s.1.clone()).collect();
    for (i, (tenant, _business, outbound, backfill, lines)) in streams.into_iter().enumerate() {
        let (http, ledger, stop, sent, refused, webhook_ms, measuring) = (
            http.clone(),
            ledger.clone(),
            Arc::clone(&stop),
            Arc::clone(&sent),
            Arc::clone(&refused),
            Arc::clone(&webhook_ms),
            Arc::clone(&measuring),
        );
        let rate = args.rate;
        senders.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(i as u64);
            // Spread the tenants' first events over the first seconds.
            tokio::time::sleep(Duration::from_millis(rng.random_range(0..2000))).await;
            for (event, id, body) in lines {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let started = Instant::now();
                let answer = post_webhook(&http, &ledger, &tenant, &outbound, &event, id, body).await;
                sent.fetch_add(1, Ordering::Relaxed);
                match answer {
                    Ok(r) if r.status() == reqwest::StatusCode::ACCEPTED => {
                        if measuring.load(Ordering::Relaxed) {
                            webhook_ms.lock().unwrap().push(started.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                    Ok(r) => {
                        if refused.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("webhook answered {}: {}", r.status(), r.text().await.unwrap_or_default());
                        }
                    }
                    Err(e) => {
                        if refused.fetch_add(1, Ordering::Relaxed) < 5 {
                            eprintln!("webhook failed: {e}");
                        }
                    }
                }
                // Poisson arrivals: exponential gaps of mean 60 / rate seconds; a back-fill
                // sends 4 a second.
                let mean = if backfill { 0.25 } else { 60.0 / rate };
                let gap = -mean * (1.0 - rng.random::<f64>()).ln();
                tokio::time::sleep(Duration::from_secs_f64(gap.min(mean * 20.0))).await;
            }
        }));
    }

    // Warm-up, then the measured window.
    tokio::time::sleep(args.warmup).await;
    let ticks = clock_ticks();
    let pool = store.pool().clone();
    let backends = pg_backends(&pool).await;
    let postmaster = postmaster_pid(&pool).await;
    let snapshot = |pool: sqlx::PgPool, backends: Vec<u32>| {
        let (children_pids, logs): (Vec<u32>, Vec<std::path::PathBuf>) =
            children.iter().map(|c| (c.pid, c.log.clone())).unzip();
        let counts = Arc::clone(&counts);
        let callbacks = Arc::clone(&magento.callbacks);
        let statements = args.statements;
        async move {
            let xacts = xacts(&pool).await;
            let (sage, throttled) = {
                let c = counts.lock().unwrap();
                (c.requests.values().sum(), c.throttled.values().sum())
            };
            Snapshot {
                at: Instant::now(),
                serve_ticks: children_pids.iter().filter_map(|&p| cpu_ticks(p)).sum(),
                serve_switches: children_pids
                    .iter()
                    .filter_map(|&p| context_switches(p))
                    .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1)),
                pg_ticks: backends.iter().filter_map(|&p| cpu_ticks(p)).sum(),
                server_ticks: postmaster.and_then(server_ticks),
                xacts,
                statements: if statements { logs.iter().map(|l| count_lines(l, STATEMENT_FIELD)).sum() } else { 0 },
                callbacks: callbacks.load(Ordering::Relaxed),
                sage,
                throttled,
            }
        }
    };
    let window_start = SystemClock.now();
    let backfill_start: BTreeMap<String, u64> = {
        let c = counts.lock().unwrap();
        backfill_businesses.iter().map(|b| (b.clone(), c.requests.get(b).copied().unwrap_or(0))).collect()
    };
    let s0 = snapshot(pool.clone(), backends.clone()).await;
    let logs_at_s0: Vec<u64> = children.iter().map(|c| log_size(&c.log)).collect();
    measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.seconds).await;
    measuring.store(false, Ordering::Relaxed);
    // The backends alive at the end too (a pool may have opened more during the window).
    let backends_end = pg_backends(&pool).await;
    let s1 = snapshot(pool.clone(), backends.clone()).await;
    let logs_at_s1: Vec<u64> = children.iter().map(|c| log_size(&c.log)).collect();
    let window_end = SystemClock.now();
    let backfill_end: BTreeMap<String, u64> = {
        let c = counts.lock().unwrap();
        backfill_businesses.iter().map(|b| (b.clone(), c.requests.get(b).copied().unwrap_or(0))).collect()
    };
    let backfill_429: u64 = {
        let c = counts.lock().unwrap();
        backfill_businesses.iter().map(|b| c.throttled.get(b).copied().unwrap_or(0)).sum()
    };
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.abort();
    }
    let rss: Vec<u64> = children.iter().filter_map(|c| peak_rss_kb(c.pid)).collect();
    let window = s1.at - s0.at;

    // Let the window's runs of the tenants under their limit finish (a back-fill never drains).
    let drain_started = Instant::now();
    let open_query = "SELECT count(*) AS n FROM runs r \
         WHERE r.status IN ('queued', 'running') AND r.created_at >= $1 AND r.created_at < $2 AND NOT (r.scope = ANY($3))";
    loop {
        let open: i64 = sqlx::query(open_query)
            .bind(window_start)
            .bind(window_end)
            .bind(&backfill_businesses)
            .fetch_one(&pool)
            .await
            .map(|r| r.get("n"))
            .unwrap_or(-1);
        if open <= 0 || drain_started.elapsed() >= args.drain {
            if open > 0 {
                println!("{open} runs of the window still open after the drain (counted as unfinished)");
            }
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    for c in &mut children {
        // SIGTERM: the graceful stop (a child of this program, by its id).
        let _ = std::process::Command::new("kill").args(["-TERM", &c.pid.to_string()]).status();
    }
    for c in &mut children {
        let _ = tokio::time::timeout(Duration::from_secs(40), c.child.wait()).await;
    }

    // Figures from the database.
    let rows = sqlx::query(
        "SELECT r.scope, r.status, extract(epoch FROM (r.updated_at - r.created_at))::float8 AS secs, \
                r.created_at, r.updated_at \
         FROM runs r WHERE r.created_at >= $1 AND r.created_at < $2",
    )
    .bind(window_start)
    .bind(window_end)
    .fetch_all(&pool)
    .await
    .unwrap();
    let finished_in_window: i64 = sqlx::query(
        "SELECT count(*) AS n FROM runs WHERE status IN ('synced', 'skipped', 'dead_lettered') \
         AND updated_at >= $1 AND updated_at < $2",
    )
    .bind(window_start)
    .bind(window_end)
    .fetch_one(&pool)
    .await
    .unwrap()
    .get("n");
    let by_status: Vec<(String, i64)> =
        sqlx::query("SELECT status, count(*) AS n FROM runs GROUP BY status ORDER BY 1")
            .fetch_all(&pool)
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get("status"), r.get("n")))
            .collect();
    let mut under = Vec::new();
    let mut unfinished = 0;
    let mut back = Vec::new();
    for r in &rows {
        let scope: String = r.get("scope");
        let status: String = r.get("status");
        let secs: f64 = r.get("secs");
        let terminal = matches!(status.as_str(), "synced" | "skipped" | "dead_lettered");
        if backfill_businesses.contains(&scope) {
            if terminal {
                back.push(secs);
            }
        } else if terminal {
            under.push(secs);
        } else {
            unfinished += 1;
            under.push(f64::INFINITY);
        }
    }
    let pg_ticks_end: u64 = backends_end.iter().filter(|p| !backends.contains(p)).filter_map(|&p| cpu_ticks(p)).sum();
    let events = finished_in_window.max(1) as f64;
    let secs = window.as_secs_f64();
    let serve_cpu_ms = (s1.serve_ticks - s0.serve_ticks) as f64 / ticks * 1000.0;
    let pg_cpu_ms = (s1.pg_ticks.saturating_sub(s0.pg_ticks) + pg_ticks_end) as f64 / ticks * 1000.0;
    let mut hooks = webhook_ms.lock().unwrap().clone();
    let sage = s1.sage - s0.sage;
    println!("| figure | value |\n|---|---|");
    println!("| tenants (back-filling) | {tenants} ({}) |", backfill_businesses.len());
    println!(
        "| webhooks sent in all / refused | {} / {} |",
        sent.load(Ordering::Relaxed),
        refused.load(Ordering::Relaxed)
    );
    println!("| outcomes in the window | {finished_in_window} in {secs:.1} s = **{:.1} events/s** |", events / secs);
    println!(
        "| webhook → outcome, tenants under their limit | p50 **{:.3} s**, p99 **{:.3} s** ({} runs, {unfinished} unfinished) |",
        pct(&mut under.clone(), 50.0),
        pct(&mut under, 99.0),
        rows.len() - back.len() - unfinished.min(rows.len())
    );
    if !back.is_empty() {
        println!(
            "| webhook → outcome, back-filling tenants (queue never empties) | p50 {:.1} s, p99 {:.1} s |",
            pct(&mut back.clone(), 50.0),
            pct(&mut back, 99.0)
        );
    }
    println!(
        "| webhook answered (202) | p50 {:.1} ms, p99 {:.1} ms |",
        pct(&mut hooks.clone(), 50.0),
        pct(&mut hooks, 99.0)
    );
    println!(
        "| CPU per event: serve processes / PostgreSQL backends | **{:.2} ms** / {:.2} ms ({:.0} % / {:.0} % of one core) |",
        serve_cpu_ms / events,
        pg_cpu_ms / events,
        serve_cpu_ms / secs / 10.0,
        pg_cpu_ms / secs / 10.0
    );
    println!(
        "| serve's context switches per event: voluntary (waits) / involuntary | {:.1} / {:.2} |",
        s1.serve_switches.0.saturating_sub(s0.serve_switches.0) as f64 / events,
        s1.serve_switches.1.saturating_sub(s0.serve_switches.1) as f64 / events
    );
    if let (Some(a), Some(b)) = (s0.server_ticks, s1.server_ticks) {
        let server_ms = b.saturating_sub(a) as f64 / ticks * 1000.0;
        println!(
            "| CPU per event: the whole PostgreSQL server (autovacuum, WAL writer, checkpointer, backends) | {:.2} ms ({:.0} % of one core) |",
            server_ms / events,
            server_ms / secs / 10.0
        );
    }
    println!(
        "| peak RSS per serve process | {} |",
        rss.iter().map(|k| format!("{:.1} MB", *k as f64 / 1024.0)).collect::<Vec<_>>().join(", ")
    );
    println!("| database transactions per event | {:.1} |", (s1.xacts - s0.xacts) as f64 / events);
    if args.statements {
        println!(
            "| database statements per event (sqlx log) | {:.1} |",
            (s1.statements - s0.statements) as f64 / events
        );
        let mut kinds: BTreeMap<String, u64> = BTreeMap::new();
        for (c, (from, to)) in children.iter().zip(logs_at_s0.iter().zip(&logs_at_s1)) {
            for (kind, n) in statement_kinds(&c.log, *from, *to) {
                *kinds.entry(kind).or_default() += n;
            }
        }
        let mut kinds: Vec<_> = kinds.into_iter().collect();
        kinds.sort_by_key(|k| std::cmp::Reverse(k.1));
        for (kind, n) in kinds.iter().take(20) {
            println!("|   {:.2} / event | `{}` |", *n as f64 / events, kind.replace('|', "\\|"));
        }
    }
    println!(
        "| Sage requests in the window / per event / 429s | {sage} / {:.2} / {} |",
        sage as f64 / events,
        s1.throttled - s0.throttled
    );
    for b in &backfill_businesses {
        let n = backfill_end[b] - backfill_start[b];
        let per_minute = n as f64 / secs * 60.0;
        println!(
            "| back-fill {b}: Sage requests a minute | {per_minute:.1} = **{:.1} %** of {} |",
            per_minute / f64::from(args.limit) * 100.0,
            args.limit
        );
    }
    if !backfill_businesses.is_empty() {
        println!("| back-filling businesses' 429s in the window | {backfill_429} |");
    }
    println!(
        "| callbacks sent in the window (in all) | {} ({}) |",
        s1.callbacks - s0.callbacks,
        magento.callbacks.load(Ordering::Relaxed)
    );
    println!(
        "| Magento entity GETs (404) | {} ({}) |",
        magento.fetches.load(Ordering::Relaxed),
        magento.missing.load(Ordering::Relaxed)
    );
    println!(
        "| runs by status at the end | {} |",
        by_status.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", ")
    );
    let warnings: u64 = children.iter().map(|c| count_lines(&c.log, " WARN ")).sum();
    let errors: u64 = children.iter().map(|c| count_lines(&c.log, "ERROR")).sum();
    println!("| warnings / errors logged by serve | {warnings} / {errors} |");
    // What they said (the logs go with the run unless kept): the first few, under the table.
    let said: Vec<String> =
        children.iter().flat_map(|c| lines_with(&c.log, &[" WARN ", "ERROR"])).take(WARNINGS_SHOWN).collect();
    if !said.is_empty() {
        println!("\nserve's first warnings and errors ({} shown):", said.len());
        for line in said {
            println!("    {line}");
        }
    }
    if std::env::var_os("BENCH_KEEP_LOGS").is_some() {
        std::mem::forget(dir);
    }
}

#[tokio::main]
async fn main() {
    let args = args();
    println!(
        "bench_service: rate {} events/min per tenant, {} back-filling, limit {}/min, Sage latency {:?}–{:?}, warm-up {:?}, window {:?}",
        args.rate, args.backfill, args.limit, args.latency.0, args.latency.1, args.warmup, args.seconds
    );
    for &p in &args.processes.clone() {
        for &n in &args.tenants.clone() {
            run(&args, n, p).await;
        }
    }
}
