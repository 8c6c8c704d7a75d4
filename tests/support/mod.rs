//! Shared helpers of the integration tests.
#![allow(dead_code)]

use byte8_ledger_core::{policy::SyncPolicy, reference::ReferenceData};
use chrono::{TimeZone, Utc};
use serde_json::Value;

/// The demo UK business (GBP, the five UK rates, SALES / COS / OSS accounts, BANK).
pub fn uk_reference() -> ReferenceData {
    ReferenceData::demo_uk(Utc.with_ymd_and_hms(2026, 11, 22, 9, 0, 0).unwrap())
}

/// A policy with the demo accounts and UK rates, plus `extra` keys.
pub fn policy(extra: Value) -> SyncPolicy {
    let mut base = serde_json::json!({
        "default_ledger_account_id": "SALES",
        "default_tax_rate_id": "GB_STANDARD",
        "tax_rate_map": {"20": "GB_STANDARD", "5": "GB_LOWER"},
    });
    for (k, v) in extra.as_object().expect("an object") {
        base[k] = v.clone();
    }
    SyncPolicy::from_json(&base.to_string()).expect("a valid policy")
}

/// The world of the engine's end-to-end tests (simulator, Sage provider, SQLite store).
#[cfg(all(feature = "simulator", feature = "sqlite"))]
pub mod engine;
