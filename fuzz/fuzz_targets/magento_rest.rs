//! Fuzzes the Magento REST adapter: arbitrary JSON documents as invoice + order, credit memo +
//! order, customer and product responses. Nothing may panic.
//!
//! Run: `cd fuzz && cargo fuzz run magento_rest`
#![no_main]

use byte8_ledger_core::canonical::rest;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    // Two documents separated by a NUL byte: a document and its order.
    let mut parts = data.splitn(2, |b| *b == 0);
    let (Some(a), Some(b)) = (parts.next(), parts.next()) else { return };
    let (Ok(doc), Ok(order)) = (serde_json::from_slice::<Value>(a), serde_json::from_slice::<Value>(b)) else { return };
    let _ = rest::invoice_from_rest(&doc, &order);
    let _ = rest::credit_memo_from_rest(&doc, &order, None);
    let _ = rest::payment_from_rest(&doc, &order);
    let _ = rest::contact_from_rest(&doc);
    let _ = rest::contact_from_order(&order);
    let _ = rest::product_from_rest(&doc);
});
