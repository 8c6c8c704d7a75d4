//! The service's periodic purge ([`ServiceConfig::retention`](super::ServiceConfig::retention)):
//! one task beside the workers, stopped with them.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use super::Shared;

/// Purges every [`purge_interval`](super::ServiceConfig::purge_interval) (the first time at
/// once) until `stop` is set. A failed purge is logged and tried again at the next tick: it
/// never stops the service.
pub(super) async fn purge_loop(shared: Arc<Shared>, stop: Arc<AtomicBool>, wake: Arc<tokio::sync::Notify>) {
    let Some(policy) = shared.config.retention else { return };
    while !stop.load(Ordering::Relaxed) {
        match shared.store.purge(&policy, shared.clock.now(), false).await {
            Ok(report) if report.is_empty() => tracing::debug!("retention purge: nothing to purge"),
            Ok(report) => tracing::info!(
                tenants = ?report.tenants,
                runs = report.runs,
                raw_events = report.raw_events,
                attempts = report.attempts,
                callbacks = report.callbacks,
                xrefs = report.xrefs,
                "retention purge: {report}"
            ),
            Err(e) => tracing::warn!(error = %e, "retention purge failed; tried again at the next tick"),
        }
        // Registered before `stop` is read again, so that a stop in between still wakes it.
        let notified = wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if stop.load(Ordering::Relaxed) {
            break;
        }
        tokio::select! {
            () = notified => {}
            () = tokio::time::sleep(shared.config.purge_interval) => {}
        }
    }
}
