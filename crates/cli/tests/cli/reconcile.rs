//! `byte8-ledger reconcile` as an operator runs it: the binary syncs the samples into the Sage
//! simulator served by the test, reconciles (clean, exit 0), then the simulator's books are
//! tampered with and each difference must be reported (exit 3).

use crate::support_postgres as pg;

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use byte8_ledger_simulators::{DEMO_REFRESH_TOKEN, SageSimulator, SimConfig, SimServer};
use rust_decimal_macros::dec;
use serde_json::Value;

const KEY: &str = "Ynl0ZTgtbGVkZ2VyLWNoYW9zLXNvYWstbWFzdGVyLWs=";
const BUSINESS: &str = "demo-business";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_byte8-ledger"));
    c.env("SAGE_CLIENT_ID", "demo-client")
        .env("SAGE_CLIENT_SECRET", "demo-secret")
        .env("LEDGER_MASTER_KEY", KEY)
        .env("RUST_LOG", "error");
    c
}

fn samples() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")).join("samples")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

async fn synced(dir: &Path) -> (SageSimulator, SimServer, PathBuf) {
    let sim = SageSimulator::demo(SimConfig::default());
    let server = sim.serve().await.unwrap();
    let state = dir.join("state.db");
    let (base, token) = (server.base_url(), server.token_url());
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        let o = bin()
            .args(["connect", "--state"])
            .arg(&st)
            .args(["--business-id", BUSINESS, "--refresh-token", DEMO_REFRESH_TOKEN])
            .args(["--sage-base-url", &base, "--sage-token-url", &token])
            .output()
            .unwrap();
        assert!(o.status.success(), "connect: {:?}", text(&o));
        let o = bin()
            .args(["sync", "--state"])
            .arg(&st)
            .arg("--events")
            .arg(samples().join("events.jsonl"))
            .arg("--policy")
            .arg(samples().join("policy.json"))
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "sync: {:?}", text(&o));
    })
    .await
    .unwrap();
    (sim, server, state)
}

async fn reconcile(state: &Path, from: &str, to: &str, json: bool) -> Output {
    let (state, from, to) = (state.to_owned(), from.to_owned(), to.to_owned());
    tokio::task::spawn_blocking(move || {
        let mut c = bin();
        c.args(["reconcile", "--state"]).arg(&state).args(["--from", &from, "--to", &to]);
        if json {
            c.arg("--json");
        }
        c.output().unwrap()
    })
    .await
    .unwrap()
}

fn findings(o: &Output) -> Vec<Value> {
    let v: Value = serde_json::from_slice(&o.stdout).expect("the JSON report");
    v["findings"].as_array().unwrap().clone()
}

fn has(list: &[Value], finding: &str, reference: &str) -> bool {
    list.iter().any(|f| f["finding"] == finding && f["reference"] == reference)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_samples_reconcile_then_each_tampering_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let (sim, _server, state) = synced(dir.path()).await;

    // Clean: every synced document and payment is in the ledger with Magento's amounts.
    let o = reconcile(&state, "2025-12-01", "2026-11-30", true).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["findings"], Value::Array(vec![]), "{out}");
    // The samples' synced GBP invoices, summed by hand from samples/events.jsonl:
    // 000000101 54.99 (VAT 8.33) and 000000103 82.20 (13.70); the sample policy skips 000000105
    // (zero) and 000000098 (before `sync_since`), and 000000110 fails validation. The policy's
    // `invoice_number_prefix` makes the ledger references `MAG-…`.
    let gbp = &v["totals"]["GBP"];
    for side in ["magento", "ledger"] {
        assert_eq!(gbp[side]["invoices"]["count"], 2, "{side}: {gbp}");
        assert_eq!(
            gbp[side]["invoices"]["gross"].as_str().map(|s| s.parse::<rust_decimal::Decimal>().unwrap()),
            Some(dec!(137.19)),
            "{side}"
        );
        assert_eq!(
            gbp[side]["invoices"]["vat"].as_str().map(|s| s.parse::<rust_decimal::Decimal>().unwrap()),
            Some(dec!(22.03)),
            "{side}"
        );
    }
    let table = reconcile(&state, "2025-12-01", "2026-11-30", false).await;
    let (out, _) = text(&table);
    assert_eq!(table.status.code(), Some(0));
    assert!(out.contains("No differences."), "{out}");

    // Tamper with the books: delete one invoice, duplicate another, change a third's VAT and
    // total, move one out of the period, leave money of a receipt on account, and add an
    // invoice no run posted.
    sim.with_state(|s| {
        let b = s.businesses.get_mut(BUSINESS).unwrap();
        b.invoices.retain(|d| d.reference != "MAG-000000103");
        let mut twin = b.invoices.iter().find(|d| d.reference == "MAG-000000107").unwrap().clone();
        twin.id = "twin-of-107".into();
        b.invoices.push(twin);
        let changed = b.invoices.iter_mut().find(|d| d.reference == "MAG-000000101").unwrap();
        changed.tax += dec!(0.01);
        changed.total += dec!(0.01);
        let mut manual = changed.clone();
        manual.id = "manual-1".into();
        manual.reference = "MANUAL-1".into();
        b.invoices.push(manual);
        // Dated after the period: listed no more, but found by reference.
        b.invoices.iter_mut().find(|d| d.reference == "MAG-000000102").unwrap().date =
            chrono::NaiveDate::from_ymd_opt(2026, 12, 5).unwrap();
        let receipt = b.payments.iter_mut().find(|p| p.reference.as_deref() == Some("MAG-000000101")).unwrap();
        receipt.on_account = dec!(1.50);
    });
    let o = reconcile(&state, "2025-12-01", "2026-11-30", true).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}{err}");
    assert!(err.contains("difference(s) between Magento and the ledger"), "{err}");
    let f = findings(&o);
    assert!(has(&f, "missing_in_ledger", "MAG-000000103"), "{out}");
    assert!(has(&f, "duplicate_in_ledger", "MAG-000000107"), "{out}");
    let differs: Vec<&Value> =
        f.iter().filter(|x| x["finding"] == "amount_differs" && x["reference"] == "MAG-000000101").collect();
    assert_eq!(differs.len(), 2, "VAT and gross: {out}");
    assert!(differs.iter().any(|x| x["amount"] == "vat" && x["magento"] == "8.33" && x["ledger"] == "8.34"), "{out}");
    assert!(has(&f, "unallocated_payment", "MAG-000000101"), "{out}");
    assert!(has(&f, "not_from_run", "MANUAL-1"), "{out}");
    assert!(
        f.iter().any(|x| x["finding"] == "outside_period" && x["reference"] == "MAG-000000102" && x["voided"] == false),
        "{out}"
    );
    assert_eq!(f.len(), 7, "nothing else (the manual invoice: not from a run, no other finding): {out}");

    let table = reconcile(&state, "2025-12-01", "2026-11-30", false).await;
    let (out, _) = text(&table);
    assert_eq!(table.status.code(), Some(3));
    assert!(out.contains("missing in ledger: invoice MAG-000000103"), "{out}");
    assert!(out.contains("present 2 times in ledger: invoice MAG-000000107"), "{out}");

    // A period holds only its own dates: 22 November has the two credit memos and nothing
    // tampered with.
    let o = reconcile(&state, "2026-11-22", "2026-11-22", true).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{err}");
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["totals"]["GBP"]["magento"]["credit_notes"]["count"], 2, "{out}");
    assert_eq!(v["totals"]["GBP"]["ledger"]["credit_notes"]["count"], 2, "{out}");
    assert_eq!(v["totals"]["GBP"]["ledger"]["invoices"]["count"], 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_period_that_ends_before_it_starts_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let o = reconcile(&dir.path().join("none.db"), "2026-02-01", "2026-01-01", false).await;
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(2), "{out}{err}");
    assert!(err.contains("from"), "{err}");
}

/// `--database-url`: a PostgreSQL state that holds the connection but none of the runs (they
/// were synced through another state): every ledger record is reported as from no run.
/// Skipped without `BYTE8_TEST_DATABASE_URL`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_records_synced_elsewhere_come_from_no_run() {
    let Some(url) = pg::url("on_postgres_records_synced_elsewhere_come_from_no_run") else { return };
    let shown = url.clone();
    let dir = tempfile::tempdir().unwrap();
    let (sim, server, _state) = synced(dir.path()).await;
    // The demo refresh token was used (and rotated) by the SQLite state's connection.
    sim.with_state(|s| s.add_refresh_token("second-refresh-token"));
    let (base, token) = (server.base_url(), server.token_url());
    let o = tokio::task::spawn_blocking(move || {
        let o = bin()
            .args(["connect", "--database-url", &url])
            .args(["--business-id", BUSINESS, "--refresh-token", "second-refresh-token"])
            .args(["--sage-base-url", &base, "--sage-token-url", &token])
            .output()
            .unwrap();
        assert!(o.status.success(), "connect: {:?}", text(&o));
        bin()
            .args(["reconcile", "--database-url", &url, "--business-id", BUSINESS])
            .args(["--from", "2026-11-01", "--to", "2026-11-30", "--json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(3), "{out}{err}");
    assert!(!out.contains(&shown) && !err.contains(&shown), "the URL is never printed");
    let f = findings(&o);
    assert!(has(&f, "not_from_run", "MAG-000000101"), "{out}");
    assert!(has(&f, "not_from_run", "MAG-000000201"), "a credit note too: {out}");
    assert!(!has(&f, "missing_in_ledger", "MAG-000000101"), "{out}");
}
