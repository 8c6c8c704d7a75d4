//! The reduced chaos soak that CI runs: `byte8-ledger sync` as a child process, killed at random
//! moments and restarted on the same state, against a simulator injecting 5xx answers,
//! commit-then-500 answers, bursts of 429s and access tokens that expire every two seconds.
//! Nothing may be lost, dead-lettered or doubled and every total must match Magento's; and the
//! soak's own verification is checked on a ledger with one gap of every kind.

use std::time::Duration;

use byte8_ledger_core::{
    outcome::{Outcome, SyncStatus},
    store::{AttemptRecord, Dedupe, NewRun, RunResult, RunStatus, RunStore, memory::MemoryStore},
};
use byte8_ledger_simulators::{
    FaultRates, SageSimulator, SimConfig, SimDocument, SimRequest, SimTransaction,
    soak::{self, SoakConfig, SoakReport, verify_business},
    workload::{Expectation, Workload, WorkloadConfig},
    xero::{XERO_DEMO_REFRESH_TOKEN, XERO_DEMO_TENANT, XeroSimConfig, XeroSimulator},
};
use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reduced_chaos_soak_loses_nothing_and_doubles_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let burst = 3;
    let config = SoakConfig {
        binary: env!("CARGO_BIN_EXE_byte8-ledger").into(),
        dir: dir.path().to_owned(),
        workload: WorkloadConfig { seed: 3, events: 300, customers: 60, products: 15, ..WorkloadConfig::default() },
        kills: 4,
        kill_after: (Duration::from_millis(300), Duration::from_millis(2500)),
        faults: FaultRates { error_before: 0.04, error_after_commit: 0.04, throttle: 0.02, throttle_burst: burst },
        access_token_ttl: Duration::from_secs(2),
        seed: 11,
        final_passes: 4,
    };
    let report = soak::run(&config).await.expect("soak ran");
    println!("{report:#?}");
    assert!(report.is_clean(), "{:#?}", report.problems);
    // Every expected document exactly once, with Magento's total; nothing else in the ledger.
    assert!(report.expected_documents > 100, "a real stream: {}", report.expected_documents);
    assert_eq!(report.found_once, report.expected_documents);
    assert_eq!(
        (report.duplicates, report.dead_lettered, report.lost, report.wrong_totals, report.unexpected),
        (0, 0, 0, 0, 0)
    );
    assert_eq!((report.unallocated_payments, report.unallocated_credit_notes, report.duplicate_contacts), (0, 0, 0));
    // No dead letters at all: every event of the workload is valid, and every fault the soak
    // injects (5xx, an unknown outcome, 429, an expired token, a kill) is transient, retried
    // within the request or by the next pass, and the last pass runs without faults. Every run
    // is final: nothing queued or running, every event has a run.
    assert_eq!(report.runs_in(RunStatus::DeadLettered), 0, "{:?}", report.runs);
    assert_eq!(report.runs_in(RunStatus::Queued) + report.runs_in(RunStatus::Running), 0, "{:?}", report.runs);
    assert_eq!(report.events_without_run, 0);
    // The faults really happened.
    assert!(report.kills > 0, "the soak must actually kill the process");
    assert!(report.errors_before_acting > 0, "no 5xx was injected before acting");
    assert!(report.errors_after_commit > 0, "no commit-then-500 (unknown outcome) was injected");
    // One random throttle is a burst of `burst` consecutive 429s, all answered to the one
    // syncing process (or the next, after a kill).
    assert!(report.throttled >= u64::from(burst), "429 answers: {}", report.throttled);
    // `connect` takes the first token; two-second tokens force more during the sync passes.
    assert!(report.refreshes > 1, "token refreshes: {}", report.refreshes);
}

// -------------------------------------------------------------------------------------------------
// Bursts of 429s.

fn get(path: &str, headers: Vec<(String, String)>) -> SimRequest {
    SimRequest { method: "GET".into(), path: path.into(), query: Vec::new(), headers, body: Vec::new() }
}

#[test]
fn a_random_throttle_answers_a_whole_burst_of_consecutive_requests() {
    let burst = FaultRates { throttle: 1.0, throttle_burst: 3, ..FaultRates::default() };
    // Sage: the first request draws the throttle; with the faults switched off, the burst still
    // answers the next two, and the fourth goes through.
    let sage = SageSimulator::demo(SimConfig::default());
    let token = sage.handle(&SimRequest {
        method: "POST".into(),
        path: "/token".into(),
        query: Vec::new(),
        headers: Vec::new(),
        body:
            b"grant_type=refresh_token&client_id=demo-client&client_secret=demo-secret&refresh_token=demo-refresh-token"
                .to_vec(),
    });
    let access = token.body["access_token"].as_str().unwrap().to_owned();
    let headers =
        vec![("authorization".to_owned(), format!("Bearer {access}")), ("x-business".to_owned(), BUSINESS.to_owned())];
    sage.set_faults(burst);
    assert_eq!(sage.handle(&get("/v3.1/tax_rates", headers.clone())).status, 429);
    sage.set_faults(FaultRates::default());
    let statuses: Vec<u16> = (0..3).map(|_| sage.handle(&get("/v3.1/tax_rates", headers.clone())).status).collect();
    assert_eq!(statuses, [429, 429, 200]);
    assert_eq!(sage.with_state(|s| s.throttled), 3);
    // A single 429 when no burst is asked for (0 and 1 alike).
    for single in [0, 1] {
        sage.set_faults(FaultRates { throttle: 1.0, throttle_burst: single, ..FaultRates::default() });
        assert_eq!(sage.handle(&get("/v3.1/tax_rates", headers.clone())).status, 429);
        sage.set_faults(FaultRates::default());
        assert_eq!(sage.handle(&get("/v3.1/tax_rates", headers.clone())).status, 200, "burst {single}");
    }

    // Xero: the same, per organisation, each 429 naming the minute limit.
    let xero = XeroSimulator::demo(XeroSimConfig::unlimited());
    let basic = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, "demo-client:demo-secret");
    let token = xero.handle(&SimRequest {
        method: "POST".into(),
        path: "/connect/token".into(),
        query: Vec::new(),
        headers: vec![("authorization".into(), format!("Basic {basic}"))],
        body: format!("grant_type=refresh_token&refresh_token={XERO_DEMO_REFRESH_TOKEN}").into_bytes(),
    });
    let access = token.body["access_token"].as_str().unwrap().to_owned();
    let headers = vec![
        ("authorization".to_owned(), format!("Bearer {access}")),
        ("xero-tenant-id".to_owned(), XERO_DEMO_TENANT.to_owned()),
    ];
    xero.set_faults(burst);
    let first = xero.handle(&get("/api.xro/2.0/TaxRates", headers.clone()));
    xero.set_faults(FaultRates::default());
    let rest: Vec<_> = (0..3).map(|_| xero.handle(&get("/api.xro/2.0/TaxRates", headers.clone()))).collect();
    let statuses: Vec<u16> = std::iter::once(&first).chain(&rest).map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 429, 200]);
    for r in std::iter::once(&first).chain(&rest[..2]) {
        assert!(r.headers.contains(&("x-rate-limit-problem".to_owned(), "minute".to_owned())), "{:?}", r.headers);
        assert!(r.headers.contains(&("retry-after".to_owned(), "1".to_owned())), "{:?}", r.headers);
    }
}

// -------------------------------------------------------------------------------------------------
// The verification itself, on a ledger and a run store forged with one gap of every kind.

const BUSINESS: &str = "demo-business";

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 22, 10, 0, 0).unwrap()
}

fn document(id: &str, reference: &str, total: Decimal) -> SimDocument {
    SimDocument {
        id: id.into(),
        number: id.into(),
        reference: reference.into(),
        contact_id: "contact-1".into(),
        currency: "GBP".into(),
        date: NaiveDate::from_ymd_opt(2026, 11, 22).unwrap(),
        net: total,
        tax: Decimal::ZERO,
        total,
        outstanding: total,
        voided: false,
        sent: false,
        request: serde_json::Value::Null,
    }
}

/// A run for `key`: queued, or claimed and finished in `status`.
async fn run(store: &MemoryStore, key: &str, status: RunStatus) {
    let id = store
        .enqueue(
            NewRun {
                scope: BUSINESS.into(),
                tenant_id: None,
                idempotency_key: key.into(),
                event: key.split(':').next().map(str::to_owned),
                magento_entity_id: key.split(':').nth(1).and_then(|n| n.parse().ok()),
                raw: "{}".into(),
                fingerprint: key.into(),
                policy: None,
                received_at: t0(),
            },
            Dedupe::Permanent,
        )
        .await
        .unwrap()
        .run_id();
    if status == RunStatus::Queued {
        return;
    }
    let claimed = store.claim_run(id, t0(), t0() + chrono::Duration::minutes(5)).await.unwrap().unwrap();
    let (sync_status, result) = match status {
        RunStatus::Synced => (SyncStatus::Synced, "synced"),
        RunStatus::Skipped => (SyncStatus::Skipped, "skipped"),
        _ => (SyncStatus::Failed, "failed"),
    };
    let outcome = Outcome {
        idempotency_key: Some(key.into()),
        event: None,
        entity_type: None,
        magento_entity_id: None,
        provider: "sage_accounting".into(),
        sync_status,
        provider_entity_id: None,
        provider_reference: None,
        skip_reason: None,
        error_code: None,
        message: None,
        last_sync_at: t0(),
    };
    let attempt = AttemptRecord {
        number: 1,
        started_at: t0(),
        finished_at: t0(),
        result: result.into(),
        error_code: None,
        message: None,
        ledger_id: None,
        exchanges: Vec::new(),
        recording: None,
        snapshot: None,
    };
    store
        .finish(id, claimed.claim, RunResult { status, outcome, attempt, next_attempt_at: None, xrefs: Vec::new() })
        .await
        .unwrap();
}

fn invoice(magento_id: u64, total: Decimal) -> Expectation {
    Expectation::Invoice { magento_id, reference: format!("MAG-{magento_id}"), total, currency: "GBP".into() }
}

#[tokio::test]
async fn the_verification_counts_every_kind_of_gap_apart() {
    // Nine documents expected:
    //   MAG-1 (12.00)  in the ledger once, right total, synced          → found once
    //   MAG-2          absent, its run dead-lettered                      → dead-lettered
    //   MAG-3          absent although its run synced                     → lost
    //   MAG-4          absent, no run at all                              → lost
    //   MAG-5          absent, its run still queued                       → lost
    //   MAG-6 (8.00)   in the ledger twice                                → duplicate
    //   MAG-7 (10.00)  in the ledger once for 10.01                       → found once, wrong total
    //   payment MAG-1  12.00, allocated to MAG-1                          → found once
    //   MAG-CM9        credit note absent, its run dead-lettered          → dead-lettered
    // and an invoice MAG-99 that Magento never sent                       → unexpected.
    let workload = Workload {
        lines: Vec::new(),
        expectations: vec![
            invoice(1, dec!(12.00)),
            invoice(2, dec!(30.00)),
            invoice(3, dec!(5.00)),
            invoice(4, dec!(6.00)),
            invoice(5, dec!(7.00)),
            invoice(6, dec!(8.00)),
            invoice(7, dec!(10.00)),
            Expectation::Payment { invoice_id: 1, reference: "MAG-1".into(), amount: dec!(12.00) },
            Expectation::CreditNote { magento_id: 9, invoice_id: 7, reference: "MAG-CM9".into(), total: dec!(2.00) },
        ],
    };
    let sim = SageSimulator::demo(SimConfig::default());
    sim.with_state(|s| {
        let b = s.businesses.get_mut(BUSINESS).unwrap();
        let mut paid = document("inv-1", "MAG-1", dec!(12.00));
        paid.outstanding = Decimal::ZERO;
        b.invoices.push(paid);
        b.invoices.push(document("inv-6a", "MAG-6", dec!(8.00)));
        b.invoices.push(document("inv-6b", "MAG-6", dec!(8.00)));
        b.invoices.push(document("inv-7", "MAG-7", dec!(10.01)));
        b.invoices.push(document("inv-99", "MAG-99", dec!(1.00)));
        b.payments.push(SimTransaction {
            id: "pay-1".into(),
            contact_id: "contact-1".into(),
            reference: Some("MAG-1".into()),
            date: NaiveDate::from_ymd_opt(2026, 11, 22).unwrap(),
            total: dec!(12.00),
            artefacts: vec![("inv-1".into(), dec!(12.00))],
            on_account: Decimal::ZERO,
            request: serde_json::Value::Null,
        });
    });
    let store = MemoryStore::new();
    for (key, status) in [
        ("invoice.created:1", RunStatus::Synced),
        ("invoice.created:2", RunStatus::DeadLettered),
        ("invoice.created:3", RunStatus::Synced),
        ("invoice.created:5", RunStatus::Queued),
        ("invoice.created:6", RunStatus::Synced),
        ("invoice.created:7", RunStatus::Synced),
        ("invoice.paid:1", RunStatus::Synced),
        ("creditmemo.created:9", RunStatus::DeadLettered),
    ] {
        run(&store, key, status).await;
    }

    let mut report = SoakReport::default();
    verify_business(&sim, BUSINESS, &workload, &store, BUSINESS, &mut report).await.unwrap();
    assert_eq!(report.expected_documents, 9);
    assert_eq!(report.found_once, 3, "MAG-1, MAG-7 and the payment");
    assert_eq!(report.dead_lettered, 2, "MAG-2 and MAG-CM9");
    assert_eq!(report.lost, 3, "MAG-3, MAG-4 and MAG-5");
    assert_eq!(report.duplicates, 1, "MAG-6");
    assert_eq!(report.wrong_totals, 1, "MAG-7");
    assert_eq!(report.unexpected, 1, "MAG-99");
    assert_eq!(report.runs_in(RunStatus::DeadLettered), 2);
    assert_eq!(report.runs_in(RunStatus::Synced), 5);
    assert_eq!(report.runs_in(RunStatus::Queued), 1);
    assert_eq!((report.unallocated_payments, report.unallocated_credit_notes, report.duplicate_contacts), (0, 0, 0));
    assert!(!report.is_clean());
    // One problem for each of the six gaps, the wrong total, the stranger, and the dead letters.
    let has = |text: &str| report.problems.iter().any(|p| p.contains(text));
    assert_eq!(report.problems.len(), 9, "{:#?}", report.problems);
    assert!(has("MAG-2 is not in the ledger: its run (invoice.created:2) was dead-lettered"), "{:#?}", report.problems);
    assert!(has("MAG-CM9 is not in the ledger: its run (creditmemo.created:9) was dead-lettered"));
    assert!(has("MAG-3 is lost: not in the ledger, and its run synced"));
    assert!(has("MAG-4 is lost: not in the ledger, and it has no run"));
    assert!(has("MAG-5 is lost: not in the ledger, and its run is still queued"));
    assert!(has("MAG-6 is in the ledger 2 times"));
    assert!(has("MAG-7: Sage total 10.01 ≠ Magento 10.00"));
    assert!(has("invoice MAG-99 is in the ledger but Magento never sent it"));
    assert!(has("2 runs were dead-lettered"));
}
