//! The chaos soak: `byte8-ledger sync` runs as a child process on a realistic stream while the
//! simulator injects 5xx answers, commit-then-500 answers, 429 bursts and access tokens that
//! expire every few seconds, and the process is killed (SIGKILL) at random moments and restarted
//! on the same state several times. Afterwards [`verify`] checks the simulator's books against
//! what Magento sent: exactly one ledger document per Magento document, every total equal to
//! Magento's to the penny, every payment and credit note allocated where it could be, every event
//! final or still queued.
//!
//! `examples/chaos_soak.rs` runs it at full size; `tests/chaos.rs` runs a reduced one in CI.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use rand::{Rng, SeedableRng, rngs::StdRng};
use rust_decimal::Decimal;

use super::{
    DEMO_REFRESH_TOKEN, FaultRates, SageSimulator, SimConfig,
    workload::{Expectation, WORKLOAD_POLICY, Workload, WorkloadConfig},
};
use crate::store::{RunStatus, RunStore, sqlite::SqliteStore};

/// Soak settings.
#[derive(Debug, Clone)]
pub struct SoakConfig {
    /// The `byte8-ledger` binary.
    pub binary: PathBuf,
    /// A directory for the state, events and outputs.
    pub dir: PathBuf,
    /// The stream.
    pub workload: WorkloadConfig,
    /// How many times the syncing process is killed.
    pub kills: usize,
    /// Kills happen between these delays after a start.
    pub kill_after: (Duration, Duration),
    /// Faults injected throughout.
    pub faults: FaultRates,
    /// Access-token lifetime in the simulator.
    pub access_token_ttl: Duration,
    /// Seed of the kill schedule.
    pub seed: u64,
    /// Passes after the kills while events stay queued.
    pub final_passes: usize,
}

/// What the soak found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoakReport {
    /// Events in the stream.
    pub events: usize,
    /// Processes killed.
    pub kills: usize,
    /// Sync processes started.
    pub starts: usize,
    /// Runs by status in the state database.
    pub runs: BTreeMap<String, u64>,
    /// Magento invoices, credit memos and payments expected in the ledger.
    pub expected_documents: usize,
    /// Documents found exactly once.
    pub found_once: usize,
    /// Ledger documents whose reference appears more than once (must be 0).
    pub duplicates: usize,
    /// Expected documents not in the ledger although their event synced (must be 0).
    pub lost: usize,
    /// Documents whose total differs from Magento's (must be 0).
    pub wrong_totals: usize,
    /// Payments that allocate nothing although their invoice had something outstanding (must be 0).
    pub unallocated_payments: usize,
    /// Credit notes left unallocated although their invoice had something outstanding (must be 0).
    pub unallocated_credit_notes: usize,
    /// Contacts holding the same reference (must be 0).
    pub duplicate_contacts: usize,
    /// Requests the simulator served, by kind.
    pub requests: BTreeMap<String, u64>,
    /// 429 answers given.
    pub throttled: u64,
    /// Token refreshes served.
    pub refreshes: u64,
    /// Problems found, in words.
    pub problems: Vec<String>,
}

impl SoakReport {
    /// True when nothing was lost or doubled and every total is right.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

fn command(binary: &Path, base: &str, token: &str) -> tokio::process::Command {
    let mut c = tokio::process::Command::new(binary);
    c.env("SAGE_CLIENT_ID", "demo-client")
        .env("SAGE_CLIENT_SECRET", "demo-secret")
        .env("LEDGER_MASTER_KEY", "Ynl0ZTgtbGVkZ2VyLWNoYW9zLXNvYWstbWFzdGVyLWs=")
        .env("SAGE_RETRY_BACKOFF_MS", "20")
        .env("SAGE_MAX_RETRIES", "6")
        // The soak is about faults, not pacing: no client-side limit (the simulator sets none).
        .env("SAGE_REQUESTS_PER_MINUTE", "0")
        .env("RUST_LOG", "error")
        .env("SAGE_BASE_URL", base)
        .env("SAGE_TOKEN_URL", token)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    c
}

/// Runs the soak.
///
/// # Errors
/// When the simulator, the files or the child processes cannot be set up.
pub async fn run(config: &SoakConfig) -> std::io::Result<SoakReport> {
    let workload = Workload::generate(&config.workload);
    std::fs::create_dir_all(&config.dir)?;
    let events = config.dir.join("events.jsonl");
    let policy = config.dir.join("policy.json");
    let state = config.dir.join("state.db");
    std::fs::write(&events, workload.lines.join("\n") + "\n")?;
    std::fs::write(&policy, WORKLOAD_POLICY)?;
    let sim = SageSimulator::demo(SimConfig {
        access_token_ttl: config.access_token_ttl,
        faults: FaultRates::default(),
        seed: config.seed,
        ..SimConfig::default()
    });
    let server = sim.serve().await?;
    let (base, token) = (server.base_url(), server.token_url());
    let connect = command(&config.binary, &base, &token)
        .args(["connect", "--state"])
        .arg(&state)
        .args([
            "--business-id",
            "demo-business",
            "--refresh-token",
            DEMO_REFRESH_TOKEN,
            "--sage-base-url",
            &base,
            "--sage-token-url",
            &token,
        ])
        .stdout(Stdio::null())
        .status()
        .await?;
    if !connect.success() {
        return Err(std::io::Error::other(format!("byte8-ledger connect failed: {connect}")));
    }
    sim.set_faults(config.faults);
    let mut rng = StdRng::seed_from_u64(config.seed);
    let mut report = SoakReport { events: workload.lines.len(), ..SoakReport::default() };
    let sync = |n: usize| {
        let out = std::fs::File::create(config.dir.join(format!("outcomes-{n}.jsonl")));
        let mut c = command(&config.binary, &base, &token);
        c.args(["sync", "--state"]).arg(&state).args(["--events"]).arg(&events).args(["--policy"]).arg(&policy);
        match out {
            Ok(f) => c.stdout(f),
            Err(_) => c.stdout(Stdio::null()),
        };
        c.stderr(Stdio::null());
        c
    };
    for n in 0..config.kills {
        let mut child = sync(n).spawn()?;
        report.starts += 1;
        let (lo, hi) = config.kill_after;
        let wait = lo + hi.saturating_sub(lo).mul_f64(rng.random::<f64>());
        tokio::select! {
            _ = child.wait() => {}
            () = tokio::time::sleep(wait) => {
                child.kill().await?;
                report.kills += 1;
            }
        }
    }
    // Let it finish, with the faults still on, then once more with them off if events are left.
    for pass in 0..=config.final_passes {
        if pass == config.final_passes {
            sim.set_faults(FaultRates::default());
        }
        let status = sync(config.kills + pass).status().await?;
        report.starts += 1;
        if !status.success() {
            report.problems.push(format!("sync pass {pass} exited with {status}"));
        }
        let store = SqliteStore::open(&state, None).await.map_err(std::io::Error::other)?;
        let counts = store.counts("demo-business").await.map_err(std::io::Error::other)?;
        if counts.get(&RunStatus::Queued).copied().unwrap_or(0) == 0
            && counts.get(&RunStatus::Running).copied().unwrap_or(0) == 0
        {
            break;
        }
    }
    verify(&sim, &workload, &state, &mut report).await?;
    report.requests = sim.requests();
    report.throttled = sim.with_state(|s| s.throttled);
    report.refreshes = sim.with_state(|s| s.refreshes);
    server.stop().await;
    Ok(report)
}

/// Checks the simulator's books against the stream's expectations and the state database.
///
/// # Errors
/// When the state database cannot be read.
pub async fn verify(
    sim: &SageSimulator,
    workload: &Workload,
    state: &Path,
    report: &mut SoakReport,
) -> std::io::Result<()> {
    let store = SqliteStore::open(state, None).await.map_err(std::io::Error::other)?;
    verify_business(sim, "demo-business", workload, &store, "demo-business", report).await
}

/// Checks simulated business `business`'s books against the stream's expectations and the runs
/// of `scope` in `store` (any store: several worker processes on PostgreSQL too).
///
/// # Errors
/// When the store cannot be read.
pub async fn verify_business(
    sim: &SageSimulator,
    business: &str,
    workload: &Workload,
    store: &dyn RunStore,
    scope: &str,
    report: &mut SoakReport,
) -> std::io::Result<()> {
    let counts = store.counts(scope).await.map_err(std::io::Error::other)?;
    report.runs = counts.iter().map(|(s, n)| (s.as_str().to_owned(), *n)).collect();
    let Some(b) = sim.business(business) else {
        report.problems.push("the simulator lost its business".into());
        return Ok(());
    };
    let mut by_ref: BTreeMap<&str, usize> = BTreeMap::new();
    for d in b.invoices.iter().chain(&b.credit_notes) {
        *by_ref.entry(d.reference.as_str()).or_default() += 1;
    }
    report.duplicates = by_ref.values().filter(|n| **n > 1).count();
    let mut contact_refs: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &b.contacts {
        if let Some(r) = &c.reference {
            *contact_refs.entry(r.as_str()).or_default() += 1;
        }
    }
    report.duplicate_contacts = contact_refs.values().filter(|n| **n > 1).count();
    let mut payments_by_ref: BTreeMap<&str, usize> = BTreeMap::new();
    for p in &b.payments {
        *payments_by_ref.entry(p.reference.as_deref().unwrap_or("")).or_default() += 1;
    }
    report.duplicates += payments_by_ref.values().filter(|n| **n > 1).count();
    let invoice_refs: BTreeMap<u64, String> = workload
        .expectations
        .iter()
        .filter_map(|e| match e {
            Expectation::Invoice { magento_id, reference, .. } => Some((*magento_id, reference.clone())),
            _ => None,
        })
        .collect();
    let synced = |key: String| async move { store.find_by_key(scope, &key).await.ok().flatten().map(|r| r.status) };
    for e in &workload.expectations {
        match e {
            Expectation::Invoice { magento_id, reference, total, .. } => {
                report.expected_documents += 1;
                let found: Vec<_> = b.invoices.iter().filter(|d| d.reference == *reference).collect();
                match (found.len(), synced(format!("invoice.created:{magento_id}")).await) {
                    (1, _) => {
                        report.found_once += 1;
                        if found[0].total != *total {
                            report.wrong_totals += 1;
                            report
                                .problems
                                .push(format!("{reference}: Sage total {} ≠ Magento {total}", found[0].total));
                        }
                    }
                    (0, Some(RunStatus::Synced)) => {
                        report.lost += 1;
                        report.problems.push(format!("{reference} synced but not in the ledger"));
                    }
                    (0, _) => {}
                    (n, _) => report.problems.push(format!("{reference} is in the ledger {n} times")),
                }
            }
            Expectation::Payment { invoice_id, reference, amount } => {
                report.expected_documents += 1;
                let found: Vec<_> =
                    b.payments.iter().filter(|p| p.reference.as_deref() == Some(reference.as_str())).collect();
                match (found.len(), synced(format!("invoice.paid:{invoice_id}")).await) {
                    (1, _) => {
                        report.found_once += 1;
                        if found[0].total != *amount {
                            report.wrong_totals += 1;
                            report.problems.push(format!("payment {reference}: {} ≠ {amount}", found[0].total));
                        }
                        let allocated: Decimal = found[0].artefacts.iter().map(|(_, a)| *a).sum();
                        if allocated.is_zero() && found[0].on_account == *amount {
                            // Allowed only when the invoice was already settled by a credit note.
                            let invoice = b.invoices.iter().find(|d| d.reference == *reference);
                            let credited = invoice.is_some_and(|inv| {
                                b.allocations.iter().any(|a| a.artefacts.iter().any(|(id, _)| *id == inv.id))
                            });
                            if !credited {
                                report.unallocated_payments += 1;
                                report.problems.push(format!("payment {reference} allocates nothing"));
                            }
                        }
                    }
                    (0, Some(RunStatus::Synced)) => {
                        report.lost += 1;
                        report.problems.push(format!("payment {reference} synced but not in the ledger"));
                    }
                    (0, _) => {}
                    (n, _) => report.problems.push(format!("payment {reference} is in the ledger {n} times")),
                }
            }
            Expectation::CreditNote { magento_id, invoice_id, reference, total } => {
                report.expected_documents += 1;
                let found: Vec<_> = b.credit_notes.iter().filter(|d| d.reference == *reference).collect();
                match (found.len(), synced(format!("creditmemo.created:{magento_id}")).await) {
                    (1, _) => {
                        report.found_once += 1;
                        if found[0].total != *total {
                            report.wrong_totals += 1;
                            report
                                .problems
                                .push(format!("{reference}: Sage total {} ≠ Magento {total}", found[0].total));
                        }
                        let note = found[0];
                        let allocated = b.allocations.iter().any(|a| a.artefacts.iter().any(|(id, _)| *id == note.id));
                        // Unallocated is right only when its invoice had nothing outstanding left:
                        // then that invoice is settled in full. And it must be on the invoice's contact.
                        let invoice =
                            invoice_refs.get(invoice_id).and_then(|r| b.invoices.iter().find(|d| d.reference == *r));
                        if let Some(inv) = invoice {
                            if inv.contact_id != note.contact_id {
                                report.problems.push(format!("{reference} is not on its invoice's contact"));
                            } else if !allocated && !inv.outstanding.is_zero() {
                                report.unallocated_credit_notes += 1;
                                report.problems.push(format!(
                                    "{reference} left unallocated while {} has {} outstanding",
                                    inv.reference, inv.outstanding
                                ));
                            }
                        }
                    }
                    (0, Some(RunStatus::Synced)) => {
                        report.lost += 1;
                        report.problems.push(format!("{reference} synced but not in the ledger"));
                    }
                    (0, _) => {}
                    (n, _) => report.problems.push(format!("{reference} is in the ledger {n} times")),
                }
            }
        }
    }
    if report.duplicates > 0 {
        report.problems.push(format!("{} references are in the ledger more than once", report.duplicates));
    }
    if report.duplicate_contacts > 0 {
        report.problems.push(format!("{} contact references are held twice", report.duplicate_contacts));
    }
    // Every event is final or still queued: nothing is lost between the lines.
    let runs: u64 = counts.values().sum();
    let mut keys = std::collections::BTreeSet::new();
    for line in &workload.lines {
        if let Ok(e) = crate::canonical::Event::parse(line) {
            keys.insert(e.idempotency_key);
        }
    }
    let mut missing = 0;
    for k in &keys {
        if store.find_by_key(scope, k).await.map_err(std::io::Error::other)?.is_none() {
            missing += 1;
        }
    }
    if missing > 0 {
        report.problems.push(format!("{missing} events have no run at all (lost)"));
    }
    if counts.get(&RunStatus::Running).copied().unwrap_or(0) > 0 {
        report.problems.push("runs are left running after the last pass".into());
    }
    let _ = runs;
    Ok(())
}
