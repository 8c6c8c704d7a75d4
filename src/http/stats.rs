//! Request counters of a provider's HTTP client: what the benchmarks report as calls per event.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use reqwest::Method;

/// Counts of the requests a provider made, by `METHOD /resource` (ids folded to `{id}`), plus
/// retries and 429 answers: what the benchmarks report as calls per event.
#[derive(Debug, Default)]
pub struct RequestStats {
    by_endpoint: Mutex<BTreeMap<String, u64>>,
    retries: AtomicU64,
    throttled: AtomicU64,
}

impl RequestStats {
    /// Counts one request of `method` to `path`.
    pub fn record(&self, method: &Method, path: &str) {
        let key = format!("{method} {}", fold_ids(path));
        *self.by_endpoint.lock().unwrap_or_else(std::sync::PoisonError::into_inner).entry(key).or_insert(0) += 1;
    }

    /// Requests by endpoint.
    pub fn by_endpoint(&self) -> BTreeMap<String, u64> {
        self.by_endpoint.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// All requests sent (retries included).
    pub fn total(&self) -> u64 {
        self.by_endpoint().values().sum()
    }

    /// Retries made.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// 429 answers received.
    pub fn throttled(&self) -> u64 {
        self.throttled.load(Ordering::Relaxed)
    }

    /// Forgets everything counted so far.
    pub fn reset(&self) {
        self.by_endpoint.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        self.retries.store(0, Ordering::Relaxed);
        self.throttled.store(0, Ordering::Relaxed);
    }
}

/// `/sales_invoices/0c8f.../release` → `/sales_invoices/{id}/release`.
pub fn fold_ids(path: &str) -> String {
    let path = path.split('?').next().unwrap_or(path);
    path.split('/')
        .map(|seg| {
            let looks_like_id = seg.len() >= 8 && seg.chars().any(|c| c.is_ascii_digit());
            if looks_like_id { "{id}" } else { seg }
        })
        .collect::<Vec<_>>()
        .join("/")
}

impl RequestStats {
    /// Counts one retry.
    pub fn count_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one 429 answer.
    pub fn count_throttled(&self) {
        self.throttled.fetch_add(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_folded() {
        assert_eq!(fold_ids("/sales_invoices/0c8f12345678abcd/release"), "/sales_invoices/{id}/release");
        assert_eq!(fold_ids("/contacts"), "/contacts");
        assert_eq!(fold_ids("/tax_rates?attributes=all"), "/tax_rates");
        assert_eq!(fold_ids("/financial_settings"), "/financial_settings");
        assert_eq!(fold_ids("/Invoices/3f1a9c2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b"), "/Invoices/{id}");
    }

    #[test]
    fn counts_by_endpoint() {
        let s = RequestStats::default();
        s.record(&Method::PUT, "/Invoices");
        s.record(&Method::PUT, "/Invoices");
        s.record(&Method::GET, "/Invoices/3f1a9c2e-5b7d-4e8f-9a0b-1c2d3e4f5a6b");
        s.count_retry();
        assert_eq!(s.total(), 3);
        assert_eq!(s.by_endpoint().get("PUT /Invoices"), Some(&2));
        assert_eq!(s.retries(), 1);
        s.reset();
        assert_eq!(s.total(), 0);
    }
}
