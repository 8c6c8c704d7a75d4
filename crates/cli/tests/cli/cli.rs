//! The `byte8-ledger` command as an operator runs it (contract.md section 3): the binary, against
//! the Sage simulator served by the test, on a state file in a temp directory.

use std::{
    io::Write,
    path::{Path, PathBuf},
    process::{Command, Output, Stdio},
};

use byte8_ledger_core::outcome::{Outcome, SyncStatus};
use byte8_ledger_simulators::{DEMO_REFRESH_TOKEN, SageSimulator, SimConfig, SimServer};
use serde_json::Value;

use crate::support_postgres as pg;

const KEY: &str = "Ynl0ZTgtbGVkZ2VyLWNoYW9zLXNvYWstbWFzdGVyLWs=";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_byte8-ledger"));
    c.env_remove("SAGE_CLIENT_ID")
        .env_remove("SAGE_CLIENT_SECRET")
        .env_remove("LEDGER_MASTER_KEY")
        .env_remove("BYTE8_REFRESH_TOKEN")
        .env_remove("BYTE8_DATABASE_URL")
        .env("RUST_LOG", "error");
    c
}

fn with_env(mut c: Command) -> Command {
    c.env("SAGE_CLIENT_ID", "demo-client").env("SAGE_CLIENT_SECRET", "demo-secret").env("LEDGER_MASTER_KEY", KEY);
    c
}

fn samples() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("samples")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

async fn connected(dir: &Path) -> (SageSimulator, SimServer, PathBuf) {
    let sim = SageSimulator::demo(SimConfig::default());
    let server = sim.serve().await.unwrap();
    let state = dir.join("state.db");
    connect(with_env(bin()), Some(&state), &server);
    (sim, server, state)
}

/// `connect` of the simulator's demo business by `c`, into the SQLite file `state` or, without
/// one, the database `c`'s environment names, with the refresh token in the environment (the
/// documented form: never on the command line); its output.
fn connect(mut c: Command, state: Option<&Path>, server: &SimServer) -> String {
    c.arg("connect");
    if let Some(state) = state {
        c.arg("--state").arg(state);
    }
    let o = c
        .env("BYTE8_REFRESH_TOKEN", DEMO_REFRESH_TOKEN)
        .args(["--business-id", "demo-business"])
        .args(["--sage-base-url", &server.base_url(), "--sage-token-url", &server.token_url()])
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "connect failed: {out}{err}");
    assert!(out.contains("connected to Demo Shop Ltd"), "{out}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_token_from_stdin_connects_and_a_refused_one_is_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let sim = SageSimulator::demo(SimConfig::default());
    let server = sim.serve().await.unwrap();
    let state = dir.path().join("state.db");
    let connect = |token_on_stdin: &str| {
        let mut child = with_env(bin())
            .args(["connect", "--state"])
            .arg(&state)
            .args(["--business-id", "demo-business", "--refresh-token", "-"])
            .args(["--sage-base-url", &server.base_url(), "--sage-token-url", &server.token_url()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(format!("{token_on_stdin}\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    };
    // A token the endpoint refuses: the error says so, without the token.
    let o = connect("refused-SECRET-refresh-token");
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(!err.is_empty(), "the refusal is reported");
    assert!(!format!("{out}{err}").contains("SECRET"), "the token must not be echoed: {out}{err}");
    // Read from stdin, the real one connects.
    let o = connect(DEMO_REFRESH_TOKEN);
    let (out, err) = text(&o);
    assert!(o.status.success(), "connect failed: {out}{err}");
    assert!(out.contains("connected to Demo Shop Ltd"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_writer_of_a_state_file_is_refused_with_the_holder_named() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, server, state) = connected(dir.path()).await;
    // `serve` holds the state file (HTTP only: no credentials needed).
    let mut serve = with_env(bin())
        .args(["serve", "--state"])
        .arg(&state)
        .args(["--workers", "0", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Its stdout stays open (serve stops when it cannot write it).
    let mut serve_out = std::io::BufReader::new(serve.stdout.take().unwrap());
    let mut first = String::new();
    std::io::BufRead::read_line(&mut serve_out, &mut first).unwrap();
    assert!(first.starts_with("listening on"), "{first}");
    let holder = format!("byte8-ledger serve (pid {})", serve.id());
    let o = sync(&state, &samples().join("events.jsonl"));
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "{out}{err}");
    assert!(err.contains(&holder) && err.contains("state.db"), "the holder is named: {err}");
    assert!(out.is_empty(), "nothing was synced: {out}");
    let o = with_env(bin())
        .args(["connect", "--state"])
        .arg(&state)
        .env("BYTE8_REFRESH_TOKEN", DEMO_REFRESH_TOKEN)
        .args(["--business-id", "demo-business"])
        .args(["--sage-base-url", &server.base_url(), "--sage-token-url", &server.token_url()])
        .output()
        .unwrap();
    assert!(text(&o).1.contains(&holder), "connect is refused too: {}", text(&o).1);
    serve.kill().unwrap();
    serve.wait().unwrap();
    drop(serve_out);
    // Once the holder is gone, the next writer takes the file.
    let o = sync(&state, &samples().join("events.jsonl"));
    assert!(o.status.success(), "{:?}", text(&o));
}

fn sync(state: &Path, events: &Path) -> Output {
    with_env(bin())
        .args(["sync", "--state"])
        .arg(state)
        .arg("--events")
        .arg(events)
        .arg("--policy")
        .arg(samples().join("policy.json"))
        .output()
        .unwrap()
}

fn writes(sim: &SageSimulator) -> u64 {
    sim.requests().iter().filter(|(k, _)| !k.starts_with("GET")).map(|(_, n)| *n).sum()
}

#[test]
fn demo_runs_with_no_set_up() {
    let o = bin().arg("demo").output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("What Sage now holds"), "{out}");
    assert!(out.contains("the simulator's approval page, a GB/-prefixed code exchanged at once"), "{out}");
    assert!(out.contains("SI-1"), "{out}");
    assert!(out.contains("Replaying them all: 0 new writes to Sage."), "{out}");
    assert!(out.contains("skipped  invoice.created:1005"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_prints_one_outcome_a_line_in_order_and_a_rerun_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, _server, state) = connected(dir.path()).await;
    let events = samples().join("events.jsonl");
    let o = tokio::task::spawn_blocking({
        let (state, events) = (state.clone(), events.clone());
        move || sync(&state, &events)
    })
    .await
    .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let lines = std::fs::read_to_string(&events).unwrap().lines().filter(|l| !l.trim().is_empty()).count();
    let outcomes: Vec<Outcome> = out.lines().map(|l| serde_json::from_str(l).expect("an outcome a line")).collect();
    assert_eq!(outcomes.len(), lines, "one outcome per event");
    // In input order: the first event is product.upserted:2079, the last an unreadable line.
    assert_eq!(outcomes[0].idempotency_key.as_deref(), Some("product.upserted:2079"));
    assert_eq!(outcomes.last().unwrap().idempotency_key, None);
    assert_eq!(outcomes.last().unwrap().sync_status, SyncStatus::Failed);
    // Every key of the contract's outcome shape is present on every line, nulls included.
    for line in out.lines() {
        let v: Value = serde_json::from_str(line).unwrap();
        for k in [
            "idempotency_key",
            "event",
            "entity_type",
            "magento_entity_id",
            "provider",
            "sync_status",
            "provider_entity_id",
            "provider_reference",
            "skip_reason",
            "error_code",
            "message",
            "last_sync_at",
        ] {
            assert!(v.get(k).is_some(), "{k} missing in {line}");
        }
        assert_eq!(v["provider"], "sage_accounting");
    }
    let before = writes(&sim);
    assert!(before > 0);
    let again = tokio::task::spawn_blocking(move || sync(&state, &events)).await.unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(writes(&sim), before, "running it again with the same events and state makes no new write");
    let (out2, _) = text(&again);
    let strip = |s: &str| -> Vec<Value> {
        s.lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("last_sync_at");
                v
            })
            .collect()
    };
    assert_eq!(strip(&out), strip(&out2), "the same outcomes");
}

/// `sync --events -` on `state` with the sample policy, its three streams piped.
fn sync_from_stdin(state: &Path) -> std::process::Child {
    with_env(bin())
        .args(["sync", "--state"])
        .arg(state)
        .args(["--events", "-", "--policy"])
        .arg(samples().join("policy.json"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_reads_stdin_and_status_requeue_reference_work() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, _server, state) = connected(dir.path()).await;
    let bad = r#"{"event":"invoice.created","idempotency_key":"invoice.created:77","magento_entity_id":77,"occurred_at":"2026-11-22T10:00:00Z","entity":{"nope":1}}"#;
    let state2 = state.clone();
    let o = tokio::task::spawn_blocking(move || {
        let mut child = sync_from_stdin(&state2);
        child.stdin.take().unwrap().write_all(format!("\n{bad}\n\n").as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    })
    .await
    .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let outcome: Outcome = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(outcome.sync_status, SyncStatus::Failed);
    assert!(outcome.message.as_deref().unwrap_or("").contains("entity"), "{outcome:?}");

    let o = bin().args(["status", "--json", "--state"]).arg(&state).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["business_id"], "demo-business");
    assert_eq!(v[0]["counts"]["dead_lettered"], 1);
    assert_eq!(v[0]["dead_letters"][0]["idempotency_key"], "invoice.created:77");
    let o = bin().args(["status", "--state"]).arg(&state).output().unwrap();
    assert!(text(&o).0.contains("dead letters:"));

    let o = bin().args(["requeue", "--state"]).arg(&state).arg("invoice.created:77").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let o = bin().args(["status", "--json", "--state"]).arg(&state).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["counts"]["queued"], 1, "back in line");
    let o = bin().args(["requeue", "--state"]).arg(&state).arg("invoice.created:404").output().unwrap();
    assert_eq!(o.status.code(), Some(1));

    let o = bin().args(["reference", "--state"]).arg(&state).output().unwrap();
    let (out, _) = text(&o);
    assert!(o.status.success());
    for needle in
        ["tax rates:", "GB_STANDARD", "ledger accounts:", "bank accounts:", "payment methods:", "CREDIT_DEBIT"]
    {
        assert!(out.contains(needle), "{needle} missing in {out}");
    }
}

/// `sync --events -` answers each line as it comes, while its standard input stays open (it is
/// read on a thread of its own, the command on one runtime thread): a producer that pauses gets
/// every outcome so far, and the end of its input ends the command.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_from_stdin_answers_each_line_while_the_input_stays_open() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, _server, state) = connected(dir.path()).await;
    let bad = |id: u64| {
        format!(
            r#"{{"event":"invoice.created","idempotency_key":"invoice.created:{id}","magento_entity_id":{id},"occurred_at":"2026-11-22T10:00:00Z","entity":{{"nope":1}}}}"#
        )
    };
    let (first, second) = (bad(81), bad(82));
    let o = tokio::task::spawn_blocking(move || {
        let mut child = sync_from_stdin(&state);
        let mut stdin = child.stdin.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
                if tx.send(line.unwrap()).is_err() {
                    break;
                }
            }
        });
        let wait = std::time::Duration::from_secs(60);
        let mut answers = Vec::new();
        for line in [&first, &second] {
            writeln!(stdin, "{line}").unwrap();
            stdin.flush().unwrap();
            // Its outcome comes while the input is still open.
            answers.push(rx.recv_timeout(wait).expect("an outcome for the line just written, before the input ends"));
        }
        drop(stdin);
        let status = child.wait().unwrap();
        assert!(rx.recv_timeout(wait).is_err(), "nothing more after the input ended");
        (status, answers)
    })
    .await
    .unwrap();
    let (status, answers) = o;
    assert_eq!(status.code(), Some(0));
    let keys: Vec<String> = answers
        .iter()
        .map(|a| serde_json::from_str::<Outcome>(a).unwrap().idempotency_key.unwrap_or_default())
        .collect();
    assert_eq!(keys, ["invoice.created:81", "invoice.created:82"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_what_waits_in_line_and_why() {
    let dir = tempfile::tempdir().unwrap();
    let (_sim, _server, state) = connected(dir.path()).await;
    // The payment of sample invoice 000000101 before its invoice.created.
    let line = std::fs::read_to_string(samples().join("events.jsonl"))
        .unwrap()
        .lines()
        .find(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["idempotency_key"] == "invoice.paid:1001"))
        .expect("the sample payment")
        .to_owned();
    let events = dir.path().join("payment.jsonl");
    std::fs::write(&events, format!("{line}\n")).unwrap();
    let o = sync(&state, &events);
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let o = bin().args(["status", "--json", "--state"]).arg(&state).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["counts"]["queued"], 1, "{v}");
    let waiting = &v[0]["waiting"][0];
    assert_eq!(waiting["idempotency_key"], "invoice.paid:1001", "{v}");
    assert_eq!(waiting["attempts"], 1);
    assert!(waiting["next_attempt_at"].is_string(), "{v}");
    assert!(waiting["message"].as_str().unwrap().contains("waits for its invoice.created"), "{v}");
    let o = bin().args(["status", "--state"]).arg(&state).output().unwrap();
    let (out, _) = text(&o);
    assert!(out.contains("waiting in line:") && out.contains("invoice.paid:1001"), "{out}");
    assert!(out.contains("waits for its invoice.created"), "{out}");
}

/// The sample lines with these keys, in this order.
fn sample_lines(keys: &[&str]) -> String {
    let all = std::fs::read_to_string(samples().join("events.jsonl")).unwrap();
    keys.iter()
        .map(|k| {
            let line = all
                .lines()
                .find(|l| serde_json::from_str::<Value>(l).is_ok_and(|v| v["idempotency_key"] == *k))
                .unwrap_or_else(|| panic!("the sample {k}"));
            format!("{line}\n")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_takes_a_file_in_any_order_payments_and_credit_memos_wait_for_their_invoice_in_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, _server, state) = connected(dir.path()).await;
    // Payments and a credit memo before their invoices, and a payment whose invoice is in no
    // line of the run.
    let keys = [
        "invoice.paid:1001",
        "creditmemo.created:3001",
        "invoice.paid:1004",
        "invoice.created:1001",
        "invoice.created:1003",
    ];
    let events = dir.path().join("reversed.jsonl");
    std::fs::write(&events, sample_lines(&keys)).unwrap();
    let o = tokio::task::spawn_blocking({
        let (state, events) = (state.clone(), events.clone());
        move || sync(&state, &events)
    })
    .await
    .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let outcomes: Vec<Outcome> = out.lines().map(|l| serde_json::from_str(l).expect("an outcome a line")).collect();
    let printed: Vec<&str> = outcomes.iter().map(|o| o.idempotency_key.as_deref().unwrap()).collect();
    assert_eq!(printed, keys, "printed in input order");
    let status: Vec<SyncStatus> = outcomes.iter().map(|o| o.sync_status).collect();
    use SyncStatus::{Failed, Synced};
    assert_eq!(status, [Synced, Synced, Failed, Synced, Synced], "{out}");
    let waiting = outcomes[2].message.as_deref().unwrap_or("");
    assert!(waiting.contains("in no line of this run") && waiting.contains("stays queued"), "{waiting}");
    // The payment and the credit memo were posted after their invoices: the receipt settles
    // invoice 000000101, the credit note is allocated against invoice 000000103.
    let b = sim.business("demo-business").unwrap();
    let inv = b.invoices.iter().find(|i| i.reference == "MAG-000000101").expect("invoice 101");
    assert_eq!(inv.outstanding, rust_decimal::Decimal::ZERO, "paid by the receipt");
    assert_eq!(b.payments.len(), 1);
    assert_eq!(b.payments[0].artefacts[0].0, inv.id);
    let credited = b.invoices.iter().find(|i| i.reference == "MAG-000000103").expect("invoice 103");
    assert_eq!(b.credit_notes.len(), 1);
    assert_eq!(b.allocations.len(), 1, "allocated against its invoice");
    assert!(b.allocations[0].artefacts.iter().any(|(id, _)| *id == credited.id));
    assert_eq!(b.credit_notes[0].contact_id, credited.contact_id, "on the invoice's contact");

    // The lonely payment stays queued; status says so.
    let o = bin().args(["status", "--json", "--state"]).arg(&state).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["counts"]["queued"], 1, "{v}");
    assert_eq!(v[0]["waiting"][0]["idempotency_key"], "invoice.paid:1004", "{v}");
}

/// `sync`, `status`, `requeue` and `reference` on PostgreSQL (`BYTE8_DATABASE_URL`), in a
/// database of the test's own, beside another process that holds one of the file's events: the
/// same outcomes as the same file synced on an SQLite file (the other store is the oracle), the
/// held event left to its holder (its run still running under its claim, its invoice not posted),
/// nothing posted twice by a second run, and `status` counting what the store holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgresql_sync_leaves_what_another_process_holds_and_status_requeue_reference_work() {
    use byte8_ledger_core::{
        clock::{Clock as _, SystemClock},
        store::{Dedupe, NewRun, RunStatus, RunStore as _},
    };
    let Some(url) = pg::url("on_postgresql_sync_leaves_what_another_process_holds") else { return };
    let own = pg::OwnDatabase::create(&url).await;
    let on_pg = |mut c: Command| {
        c.env("BYTE8_DATABASE_URL", &own.url);
        c
    };
    let sim = SageSimulator::demo(SimConfig::default());
    let server = sim.serve().await.unwrap();
    let out = connect(on_pg(with_env(bin())), None, &server);
    assert!(out.contains("the PostgreSQL database") && !out.contains(&own.url), "{out}");

    // Another process (a store of its own) holds invoice.created:1007 (an invoice nothing else
    // of the file depends on): its run claimed, leased for ten minutes.
    let held_key = "invoice.created:1007";
    let other = pg::store_in(&own, 2, None).await;
    let now = SystemClock.now();
    let held = other
        .enqueue(
            NewRun {
                scope: "demo-business".into(),
                tenant_id: None,
                idempotency_key: held_key.into(),
                event: Some("invoice.created".into()),
                magento_entity_id: Some(1007),
                raw: sample_lines(&[held_key]).trim().to_owned(),
                fingerprint: "held by another process".into(),
                policy: None,
                received_at: now,
            },
            Dedupe::Permanent,
        )
        .await
        .unwrap()
        .run_id();
    let lease_until = now + chrono::Duration::minutes(10);
    let claimed = other.claim_run(held, now, lease_until).await.unwrap().expect("claimed by the other process");

    let events = samples().join("events.jsonl");
    let run_sync = |c: Command| {
        let events = events.clone();
        tokio::task::spawn_blocking(move || {
            let mut c = c;
            c.arg("sync")
                .arg("--events")
                .arg(&events)
                .arg("--policy")
                .arg(samples().join("policy.json"))
                .output()
                .unwrap()
        })
    };
    let o = run_sync(on_pg(with_env(bin()))).await.unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let outcomes: Vec<Outcome> = out.lines().map(|l| serde_json::from_str(l).expect("an outcome a line")).collect();

    // The oracle: the same file on an SQLite file, into a simulator of its own.
    let dir = tempfile::tempdir().unwrap();
    let (sqlite_sim, _sqlite_server, state) = connected(dir.path()).await;
    let o = tokio::task::spawn_blocking({
        let (state, events) = (state.clone(), events.clone());
        move || sync(&state, &events)
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let expected: Vec<Outcome> = text(&o).0.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(outcomes.len(), expected.len(), "one outcome per event");
    let what = |o: &Outcome| (o.idempotency_key.clone(), o.sync_status, o.skip_reason.clone(), o.error_code);
    for (got, want) in outcomes.iter().zip(&expected) {
        if got.idempotency_key.as_deref() == Some(held_key) {
            assert_eq!(want.sync_status, SyncStatus::Synced, "{want:?}");
            assert_eq!(got.sync_status, SyncStatus::Failed, "{got:?}");
            assert!(got.message.as_deref().unwrap_or("").contains("another worker holds this event"), "{got:?}");
        } else {
            assert_eq!(what(got), what(want));
        }
    }
    // Left to its holder: still running under its claim, and its invoice not posted.
    let run = other.get(held).await.unwrap().unwrap();
    assert_eq!((run.status, run.claim), (RunStatus::Running, claimed.claim), "{run:?}");
    let posted = |sim: &SageSimulator| -> Vec<String> {
        sim.business("demo-business").unwrap().invoices.iter().map(|i| i.reference.clone()).collect()
    };
    assert!(posted(&sqlite_sim).iter().any(|r| r == "MAG-000000107"), "{:?}", posted(&sqlite_sim));
    assert!(!posted(&sim).iter().any(|r| r == "MAG-000000107"), "{:?}", posted(&sim));
    assert_eq!(posted(&sim).len() + 1, posted(&sqlite_sim).len());

    // Its Sage requests took their permits from the business's limiter in the database, the one
    // the service's workers share: at least one a write the simulator saw (a limiter of the
    // process's own records nothing there).
    let pool = sqlx::PgPool::connect_with(own.options.clone()).await.unwrap();
    let permits: i64 =
        sqlx::query_scalar("SELECT coalesce(sum(cardinality(recent)), 0) FROM rate_limits WHERE key = $1")
            .bind("demo-business")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(u64::try_from(permits).unwrap() >= writes(&sim), "{permits} permits for {} writes", writes(&sim));
    pool.close().await;

    // Again: nothing new is written.
    let before = writes(&sim);
    let o = run_sync(on_pg(with_env(bin()))).await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    assert_eq!(writes(&sim), before, "a second run posts nothing");

    // status counts what each store holds: the SQLite file's counts, but one run running (the
    // held one) instead of synced.
    let counts = |o: &Output| -> Value {
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or_else(|_| panic!("{:?}", text(o)));
        assert_eq!(v[0]["business_id"], "demo-business", "{v}");
        v[0]["counts"].clone()
    };
    let on_sqlite = counts(&bin().args(["status", "--json", "--state"]).arg(&state).output().unwrap());
    let status = on_pg(bin()).args(["status", "--json"]).output().unwrap();
    let on_postgres = counts(&status);
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or(0);
    assert_eq!(n(&on_postgres, "running"), 1, "{on_postgres}");
    assert_eq!(n(&on_postgres, "synced") + 1, n(&on_sqlite, "synced"), "{on_postgres} {on_sqlite}");
    for k in ["skipped", "queued", "dead_lettered"] {
        assert_eq!(n(&on_postgres, k), n(&on_sqlite, k), "{k}: {on_postgres} {on_sqlite}");
    }
    let v: Value = serde_json::from_slice(&status.stdout).unwrap();
    let dead = v[0]["dead_letters"][0]["idempotency_key"].as_str().expect("the unreadable line's dead letter");

    let o = on_pg(bin()).args(["requeue", dead]).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{:?}", text(&o));
    let after = counts(&on_pg(bin()).args(["status", "--json"]).output().unwrap());
    assert_eq!(n(&after, "queued"), n(&on_postgres, "queued") + 1, "back in line: {after}");
    let o = on_pg(bin()).args(["requeue", "invoice.created:404"]).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).1.contains("in the PostgreSQL database") && !text(&o).1.contains(&own.url), "{:?}", text(&o));

    let o = on_pg(bin()).arg("reference").output().unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("GB_STANDARD"), "{:?}", text(&o));
    drop(other);
    own.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_exits_2_for_a_policy_the_ledger_refutes_and_1_for_a_ledger_it_cannot_reach() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, server, state) = connected(dir.path()).await;
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    // A tax rate the business does not have: the policy is wrong for this ledger.
    let policy = dir.path().join("p.json");
    let mut p: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(samples().join("policy.json")).unwrap()).unwrap();
    p["default_tax_rate_id"] = "NO_SUCH_RATE".into();
    std::fs::write(&policy, p.to_string()).unwrap();
    let o = with_env(bin())
        .args(["sync", "--state"])
        .arg(&state)
        .arg("--events")
        .arg(&events)
        .arg("--policy")
        .arg(&policy)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("NO_SUCH_RATE"), "{:?}", text(&o));
    // The ledger gone: not a usage error.
    server.stop().await;
    let o = with_env(bin())
        .env("SAGE_MAX_RETRIES", "0")
        .args(["sync", "--state"])
        .arg(&state)
        .arg("--events")
        .arg(&events)
        .arg("--policy")
        .arg(samples().join("policy.json"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
    assert!(text(&o).1.contains("cannot read the ledger's reference data"), "{:?}", text(&o));
    drop(sim);
}

#[test]
fn usage_and_configuration_errors_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("s.db");
    // No client credentials.
    let o = bin()
        .args(["connect", "--state"])
        .arg(&state)
        .args(["--business-id", "b", "--refresh-token", "t"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("SAGE_CLIENT_ID"));
    // No master key.
    let o = bin()
        .env("SAGE_CLIENT_ID", "x")
        .env("SAGE_CLIENT_SECRET", "y")
        .args(["connect", "--state"])
        .arg(&state)
        .args(["--business-id", "b", "--refresh-token", "t"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("LEDGER_MASTER_KEY"));
    // A policy with an unknown key names it.
    let policy = dir.path().join("p.json");
    std::fs::write(&policy, r#"{"sync_unpaid": true}"#).unwrap();
    let o = with_env(bin())
        .args(["sync", "--state"])
        .arg(&state)
        .args(["--events", "-", "--policy"])
        .arg(&policy)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("sync_unpaid"));
    // No connection in the state file.
    let o = with_env(bin()).args(["sync", "--state"]).arg(&state).args(["--events", "-"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("byte8-ledger connect"));
    // A usage error from the parser.
    assert_eq!(bin().args(["sync"]).output().unwrap().status.code(), Some(2));
}

// ---------------------------------------------------------------------------------------------
// Xero

fn with_xero_env(mut c: Command) -> Command {
    c.env("XERO_CLIENT_ID", "demo-client")
        .env("XERO_CLIENT_SECRET", "demo-secret")
        .env("LEDGER_MASTER_KEY", KEY)
        // The test's simulator does not limit the minute: nor does the client.
        .env("XERO_REQUESTS_PER_MINUTE", "0");
    c
}

#[test]
fn demo_into_the_xero_simulator_runs_with_no_set_up() {
    let o = bin().args(["demo", "--provider", "xero"]).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}{err}");
    assert!(out.contains("What Xero now holds"), "{out}");
    assert!(out.contains("MAG-000000101"), "{out}");
    assert!(out.contains("one for every currency"), "{out}");
    // The same samples, the same summary as the Sage demo (README).
    assert!(out.contains("21 events: 14 synced, 4 skipped, 3 failed"), "{out}");
    assert!(out.contains("Replaying them all: 0 new writes to Xero."), "{out}");
    assert!(out.contains("skipped  invoice.created:1005"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_xero_pins_the_organisation_and_sync_uses_it() {
    use byte8_ledger_simulators::xero::{
        XERO_DEMO_REFRESH_TOKEN, XERO_DEMO_TENANT, XeroOrg, XeroSimConfig, XeroSimulator,
    };
    let dir = tempfile::tempdir().unwrap();
    let sim = XeroSimulator::demo(XeroSimConfig { per_minute: None, ..XeroSimConfig::default() });
    let server = sim.serve().await.unwrap();
    let state = dir.path().join("state.db");
    let connect = |extra: &[&str]| {
        let mut c = with_xero_env(bin());
        c.args(["connect", "--provider", "xero", "--state"])
            .arg(&state)
            .args(["--refresh-token", XERO_DEMO_REFRESH_TOKEN])
            .args(["--xero-base-url", &server.base_url(), "--xero-token-url", &server.token_url()])
            .args(["--xero-connections-url", &server.connections_url()])
            .args(extra);
        c
    };
    // One organisation reachable: it is chosen, and the rotated refresh token is what is stored.
    let o = connect(&[]).output().unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "connect failed: {out}{err}");
    assert!(out.contains(&format!("connected to Xero organisation Demo Shop Ltd ({XERO_DEMO_TENANT})")), "{out}");
    // The demo refresh token was used once and rotated: connecting with it again within Xero's
    // 30-minute grace still works, and the stored connection is Xero's.
    let events = samples().join("events.jsonl");
    let policy = samples().join("policy.xero.json");
    let run = |state: PathBuf, events: PathBuf, policy: PathBuf| {
        with_xero_env(bin())
            .args(["sync", "--state"])
            .arg(&state)
            .arg("--events")
            .arg(&events)
            .arg("--policy")
            .arg(&policy)
            .output()
            .unwrap()
    };
    let o = tokio::task::spawn_blocking({
        let (s, e, p) = (state.clone(), events.clone(), policy.clone());
        move || run(s, e, p)
    })
    .await
    .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let outcomes: Vec<Outcome> = out.lines().map(|l| serde_json::from_str(l).expect("an outcome a line")).collect();
    assert_eq!(outcomes.len(), 21, "one outcome per event, in input order");
    assert_eq!(outcomes[0].idempotency_key.as_deref(), Some("product.upserted:2079"));
    assert!(outcomes.iter().all(|o| o.provider == "xero"), "{out}");
    let writes = |sim: &XeroSimulator| -> u64 {
        sim.requests()
            .iter()
            .filter(|(k, _)| {
                k.starts_with("PUT")
                    || k.starts_with("POST /Invoices")
                    || k.starts_with("POST /Contacts")
                    || k.starts_with("POST /Items")
            })
            .map(|(_, n)| *n)
            .sum()
    };
    let before = writes(&sim);
    assert!(before > 0);
    let again = tokio::task::spawn_blocking({
        let (s, e, p) = (state.clone(), events.clone(), policy.clone());
        move || run(s, e, p)
    })
    .await
    .unwrap();
    assert_eq!(again.status.code(), Some(0));
    assert_eq!(writes(&sim), before, "running it again with the same events and state makes no new write");
    let o = bin().args(["status", "--json", "--state"]).arg(&state).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v[0]["business_id"], XERO_DEMO_TENANT);
    assert_eq!(v[0]["provider"], "xero");
    let o = bin().args(["reference", "--state"]).arg(&state).output().unwrap();
    assert!(text(&o).0.contains("OUTPUT2"), "{:?}", text(&o));

    // Two organisations reachable: connect refuses to guess and names them (exit 2) ...
    let mut second = XeroOrg::demo();
    second.tenant_id = "0a0b0c0d-1e2f-4a5b-8c6d-7e8f9a0b1c2d".into();
    second.name = "Second Shop Ltd".into();
    sim.add_org(second);
    sim.add_refresh_token("another-refresh-token");
    let state2 = dir.path().join("state2.db");
    let mut c = with_xero_env(bin());
    c.args(["connect", "--provider", "xero", "--state"])
        .arg(&state2)
        .args(["--refresh-token", "another-refresh-token"])
        .args(["--xero-base-url", &server.base_url(), "--xero-token-url", &server.token_url()])
        .args(["--xero-connections-url", &server.connections_url()]);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    assert!(text(&o).1.contains("--tenant-id") && text(&o).1.contains("Second Shop Ltd"), "{:?}", text(&o));
    // ... and takes the one named.
    sim.add_refresh_token("third-refresh-token");
    let mut c = with_xero_env(bin());
    c.args(["connect", "--provider", "xero", "--state"])
        .arg(&state2)
        .args(["--refresh-token", "third-refresh-token", "--tenant-id", "0a0b0c0d-1e2f-4a5b-8c6d-7e8f9a0b1c2d"])
        .args(["--xero-base-url", &server.base_url(), "--xero-token-url", &server.token_url()])
        .args(["--xero-connections-url", &server.connections_url()]);
    let o = c.output().unwrap();
    assert!(o.status.success(), "{:?}", text(&o));
    assert!(text(&o).0.contains("Second Shop Ltd"), "{:?}", text(&o));
}

#[test]
fn connect_xero_needs_xero_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .args(["connect", "--provider", "xero", "--state"])
        .arg(dir.path().join("s.db"))
        .args(["--refresh-token", "t"])
        .env_remove("XERO_CLIENT_ID")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("XERO_CLIENT_ID"), "{:?}", text(&o));
    // Sage still needs its business id.
    let o = with_env(bin())
        .args(["connect", "--state"])
        .arg(dir.path().join("s.db"))
        .args(["--refresh-token", "t"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).1.contains("--business-id"), "{:?}", text(&o));
}
