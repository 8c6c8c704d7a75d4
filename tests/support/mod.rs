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

/// The `tracing` output of the whole test binary, captured from the first call on: the global
/// subscriber is installed once per process, so that the secrets tests of several modules can
/// each read the traces of every test running alongside.
pub fn global_traces() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};

    #[derive(Clone)]
    struct Writer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Writer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    static BUFFER: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    Arc::clone(BUFFER.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = Writer(Arc::clone(&buffer));
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        // The global default: a thread-local one misses events whose callsites other tests
        // registered first, and this way the traces of the tests running alongside are checked too.
        tracing::subscriber::set_global_default(subscriber).expect("only global_traces installs a subscriber");
        buffer
    }))
}
