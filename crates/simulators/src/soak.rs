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
    collections::{BTreeMap, BTreeSet},
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
use byte8_ledger_core::store::{RunStatus, RunStore, sqlite::SqliteStore};

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
///
/// Every document Magento sent that must reach the ledger (an [`Expectation`]) lands in exactly
/// one of four classes: `found_once + duplicates + dead_lettered + lost == expected_documents`.
/// Of those found once, `wrong_totals` disagree with Magento. A clean soak has every expected
/// document found once with the right total, and nothing else in the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SoakReport {
    /// Events in the stream.
    pub events: usize,
    /// Processes killed.
    pub kills: usize,
    /// Sync processes started.
    pub starts: usize,
    /// Runs by status in the state database ([`RunStatus::as_str`] spellings; see
    /// [`runs_in`](Self::runs_in)).
    pub runs: BTreeMap<String, u64>,
    /// Magento invoices, credit memos and payments expected in the ledger.
    pub expected_documents: usize,
    /// Expected documents found exactly once.
    pub found_once: usize,
    /// Expected documents found more than once (must be 0).
    pub duplicates: usize,
    /// Expected documents not in the ledger because their run was dead-lettered: the failure is
    /// on record (must be 0 in the soak, whose faults are all transient).
    pub dead_lettered: usize,
    /// Expected documents not in the ledger with nothing on record to explain it: their run
    /// synced or was skipped (the ledger lost it), is still queued or running after the last
    /// pass, or does not exist (must be 0).
    pub lost: usize,
    /// Expected documents found once whose total differs from Magento's (must be 0).
    pub wrong_totals: usize,
    /// Ledger invoices, credit notes and receipts whose reference no expectation names (must
    /// be 0).
    pub unexpected: usize,
    /// Payments that allocate nothing although their invoice had something outstanding (must be 0).
    pub unallocated_payments: usize,
    /// Credit notes left unallocated although their invoice had something outstanding (must be 0).
    pub unallocated_credit_notes: usize,
    /// Contacts holding the same reference (must be 0).
    pub duplicate_contacts: usize,
    /// Events of the stream with no run at all (must be 0).
    pub events_without_run: usize,
    /// Requests the simulator served, by kind.
    pub requests: BTreeMap<String, u64>,
    /// 429 answers given.
    pub throttled: u64,
    /// 5xx answers injected before acting.
    pub errors_before_acting: u64,
    /// 500 answers injected after the request took effect (the outcome-unknown case).
    pub errors_after_commit: u64,
    /// Token refreshes served.
    pub refreshes: u64,
    /// Problems found, in words.
    pub problems: Vec<String>,
}

impl SoakReport {
    /// True when no problem was found: nothing lost, doubled, dead-lettered or unexpected, every
    /// total right, every payment and credit note allocated where it could be.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }

    /// Runs in `status` in the state database after the soak.
    pub fn runs_in(&self, status: RunStatus) -> u64 {
        self.runs.get(status.as_str()).copied().unwrap_or(0)
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
        // The refresh token from the environment: a secret never goes on a command line.
        .env("BYTE8_REFRESH_TOKEN", DEMO_REFRESH_TOKEN)
        .args(["--business-id", "demo-business", "--sage-base-url", &base, "--sage-token-url", &token])
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
    sim.with_state(|s| {
        report.throttled = s.throttled;
        report.errors_before_acting = s.errors_before_acting;
        report.errors_after_commit = s.errors_after_commit;
        report.refreshes = s.refreshes;
    });
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
/// of `scope` in `store` (any store: several worker processes on PostgreSQL too), adding what it
/// finds to `report` (see [`SoakReport`] for the classes): every expected document is found
/// once, found more than once, absent because its run was dead-lettered, or lost; ledger
/// documents nobody expected, dead-lettered runs of any event and events without a run are
/// problems too.
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
    let mut contact_refs: BTreeMap<&str, usize> = BTreeMap::new();
    for c in &b.contacts {
        if let Some(r) = &c.reference {
            *contact_refs.entry(r.as_str()).or_default() += 1;
        }
    }
    report.duplicate_contacts = contact_refs.values().filter(|n| **n > 1).count();
    let invoice_refs: BTreeMap<u64, String> = workload
        .expectations
        .iter()
        .filter_map(|e| match e {
            Expectation::Invoice { magento_id, reference, .. } => Some((*magento_id, reference.clone())),
            _ => None,
        })
        .collect();
    // Ledger documents nobody expected: each collection against its own expectations.
    let (mut invoices, mut notes, mut payments) = (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    for e in &workload.expectations {
        match e {
            Expectation::Invoice { reference, .. } => invoices.insert(reference.as_str()),
            Expectation::CreditNote { reference, .. } => notes.insert(reference.as_str()),
            Expectation::Payment { reference, .. } => payments.insert(reference.as_str()),
        };
    }
    let unexpected: Vec<String> = b
        .invoices
        .iter()
        .filter(|d| !invoices.contains(d.reference.as_str()))
        .map(|d| format!("invoice {}", d.reference))
        .chain(
            b.credit_notes
                .iter()
                .filter(|d| !notes.contains(d.reference.as_str()))
                .map(|d| format!("credit note {}", d.reference)),
        )
        .chain(
            b.payments
                .iter()
                .filter(|p| !p.reference.as_deref().is_some_and(|r| payments.contains(r)))
                .map(|p| format!("payment {}", p.reference.as_deref().unwrap_or("(no reference)"))),
        )
        .collect();
    report.unexpected += unexpected.len();
    for u in unexpected {
        report.problems.push(format!("{u} is in the ledger but Magento never sent it"));
    }
    for e in &workload.expectations {
        report.expected_documents += 1;
        let (what, key, found) = match e {
            Expectation::Invoice { magento_id, reference, .. } => (
                reference.clone(),
                format!("invoice.created:{magento_id}"),
                b.invoices.iter().filter(|d| d.reference == *reference).count(),
            ),
            Expectation::Payment { invoice_id, reference, .. } => (
                format!("payment {reference}"),
                format!("invoice.paid:{invoice_id}"),
                b.payments.iter().filter(|p| p.reference.as_deref() == Some(reference.as_str())).count(),
            ),
            Expectation::CreditNote { magento_id, reference, .. } => (
                reference.clone(),
                format!("creditmemo.created:{magento_id}"),
                b.credit_notes.iter().filter(|d| d.reference == *reference).count(),
            ),
        };
        match found {
            1 => report.found_once += 1,
            0 => {
                let run = store.find_by_key(scope, &key).await.map_err(std::io::Error::other)?.map(|r| r.status);
                if run == Some(RunStatus::DeadLettered) {
                    report.dead_lettered += 1;
                    report.problems.push(format!("{what} is not in the ledger: its run ({key}) was dead-lettered"));
                } else {
                    report.lost += 1;
                    let why = match run {
                        Some(RunStatus::Synced) => "its run synced",
                        Some(RunStatus::Skipped) => "its run was skipped",
                        Some(RunStatus::Queued) => "its run is still queued",
                        Some(RunStatus::Running) => "its run is still running",
                        Some(RunStatus::DeadLettered) | None => "it has no run",
                    };
                    report.problems.push(format!("{what} is lost: not in the ledger, and {why} ({key})"));
                }
                continue;
            }
            n => {
                report.duplicates += 1;
                report.problems.push(format!("{what} is in the ledger {n} times"));
                continue;
            }
        }
        // Found exactly once: its total, and its allocation.
        match e {
            Expectation::Invoice { reference, total, .. } => {
                let Some(doc) = b.invoices.iter().find(|d| d.reference == *reference) else { continue };
                if doc.total != *total {
                    report.wrong_totals += 1;
                    report.problems.push(format!("{reference}: Sage total {} ≠ Magento {total}", doc.total));
                }
            }
            Expectation::Payment { reference, amount, .. } => {
                let Some(pay) = b.payments.iter().find(|p| p.reference.as_deref() == Some(reference.as_str())) else {
                    continue;
                };
                if pay.total != *amount {
                    report.wrong_totals += 1;
                    report.problems.push(format!("payment {reference}: {} ≠ {amount}", pay.total));
                }
                let allocated: Decimal = pay.artefacts.iter().map(|(_, a)| *a).sum();
                if allocated.is_zero() && pay.on_account == *amount {
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
            Expectation::CreditNote { invoice_id, reference, total, .. } => {
                let Some(note) = b.credit_notes.iter().find(|d| d.reference == *reference) else { continue };
                if note.total != *total {
                    report.wrong_totals += 1;
                    report.problems.push(format!("{reference}: Sage total {} ≠ Magento {total}", note.total));
                }
                let allocated = b.allocations.iter().any(|a| a.artefacts.iter().any(|(id, _)| *id == note.id));
                // Unallocated is right only when its invoice had nothing outstanding left: then
                // that invoice is settled in full. And it must be on the invoice's contact.
                let invoice = invoice_refs.get(invoice_id).and_then(|r| b.invoices.iter().find(|d| d.reference == *r));
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
        }
    }
    if report.duplicate_contacts > 0 {
        report.problems.push(format!("{} contact references are held twice", report.duplicate_contacts));
    }
    // Every event is final or still queued: nothing is lost between the lines.
    let mut keys = BTreeSet::new();
    for line in &workload.lines {
        if let Ok(e) = byte8_ledger_core::canonical::Event::parse(line) {
            keys.insert(e.idempotency_key);
        }
    }
    for k in &keys {
        if store.find_by_key(scope, k).await.map_err(std::io::Error::other)?.is_none() {
            report.events_without_run += 1;
        }
    }
    if report.events_without_run > 0 {
        report.problems.push(format!("{} events have no run at all (lost)", report.events_without_run));
    }
    let dead = counts.get(&RunStatus::DeadLettered).copied().unwrap_or(0);
    if dead > 0 {
        // Every event of a workload is valid: a dead letter is a failure the faults caused.
        report.problems.push(format!("{dead} runs were dead-lettered"));
    }
    if counts.get(&RunStatus::Running).copied().unwrap_or(0) > 0 {
        report.problems.push("runs are left running after the last pass".into());
    }
    Ok(())
}
