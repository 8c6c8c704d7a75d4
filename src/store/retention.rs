//! Retention: how long the stores keep what they hold, and the purge that enforces it
//! ([`RetentionStore::purge`], the `byte8-ledger purge` command, and the service's periodic tick,
//! `ServiceConfig::retention` of the `service` feature).
//!
//! Byte8 promises merchants to keep sync runs and the cross-reference for 90 days after they
//! leave, then purge them, and to drop delivered sync-state callbacks after 30 days. A
//! [`RetentionPolicy`] says how many days of each; [`RetentionStore::purge`] applies it at a given
//! time (the caller's [`Clock`](crate::clock::Clock)):
//!
//! | what | when it goes | what stays |
//! |---|---|---|
//! | the **raw event** (`Run::raw`, the Magento payload with the customer's details) and the **attempt records** of a run that ended `synced` or `skipped` | when the run's last change is older than [`attempt_days`](RetentionPolicy::attempt_days) | the run itself: its status, key, fingerprint, attempt count and **outcome**; the cross-reference (needed to update or pay the ledger record later) |
//! | everything of a **disconnected tenant** (a binding `revoked` by `POST /v1/tenant/disconnect` or `byte8-ledger tenant disconnect`): its runs, their attempts, their callbacks, its binding (with its sealed `api_key`) | when it was disconnected more than [`disconnected_days`](RetentionPolicy::disconnected_days) ago | nothing of it |
//! | the **cross-reference** of that tenant's business | with the tenant, when the business has no other tenant (active, or disconnected more recently) and no run left (the `sync` command's runs of the business keep it) | everything, while a tenant is bound to the business: a business re-paired to a new store keeps its cross-reference, and the new tenant's runs are untouched |
//! | a **delivered callback** (outbox row Magento acknowledged, or could never take) | when it was delivered more than [`delivered_callback_days`](RetentionPolicy::delivered_callback_days) ago | undelivered callbacks, whatever their age (Magento is still owed them) |
//!
//! "Older than N days" is strict: a run finished exactly N days ago stays until the next purge.
//!
//! Choices, and why:
//!
//! - **Dead letters and queued runs keep their raw event and attempts** however old, while their
//!   tenant is active: a dead letter is work an operator still owes (`byte8-ledger requeue`
//!   processes the raw event again), and dropping it would make that impossible. They go with
//!   their tenant.
//! - A purged run's raw event becomes the empty string (the column is required); its
//!   [`fingerprint`](super::NewRun::fingerprint) stays, so a replayed upsert is still recognised.
//! - The cross-reference of a business whose last tenant is purged goes with it, but the
//!   business's **ledger connection** (`byte8-ledger connect`, its tokens) stays: it is the
//!   operator's, not the merchant's, and `byte8-ledger disconnect` removes it.
//! - A reconciliation (`byte8-ledger reconcile`) reads the runs' raw events: a period older than
//!   `attempt_days` can no longer be compared. Raise `attempt_days` to keep longer periods.
//! - The purge is one transaction in SQLite and PostgreSQL (disconnected tenants' bindings
//!   locked, so that a tenant paired again meanwhile is not purged); a dry run is the same
//!   transaction rolled back, so its counts are exactly what a purge at that moment removes.

use std::fmt;

use async_trait::async_trait;
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, FieldError, Result};

/// How long the stores keep what they hold, in days (see the [module docs](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionPolicy {
    /// Days a finished (`synced`, `skipped`) run keeps its raw event and its attempt records.
    pub attempt_days: u32,
    /// Days after a tenant's disconnection before everything of it is purged.
    pub disconnected_days: u32,
    /// Days a delivered sync-state callback is kept.
    pub delivered_callback_days: u32,
}

impl Default for RetentionPolicy {
    /// Byte8's promise: 90 days of attempts, 90 days after a disconnection, 30 days of
    /// delivered callbacks.
    fn default() -> Self {
        Self { attempt_days: 90, disconnected_days: 90, delivered_callback_days: 30 }
    }
}

/// The most days a retention setting takes (about 100 years, like
/// [`MAX_DELAY`](crate::clock::MAX_DELAY)).
pub const MAX_DAYS: u32 = 36_500;

impl RetentionPolicy {
    /// Checks every setting: 1 to [`MAX_DAYS`] days (0 would purge a run the moment it ends).
    ///
    /// # Errors
    /// [`Error::Invalid`] naming each field out of range.
    pub fn validate(&self) -> Result<()> {
        let errors: Vec<FieldError> = [
            ("attempt_days", self.attempt_days),
            ("disconnected_days", self.disconnected_days),
            ("delivered_callback_days", self.delivered_callback_days),
        ]
        .into_iter()
        .filter(|(_, days)| !(1..=MAX_DAYS).contains(days))
        .map(|(field, _)| FieldError::new(field, format!("must be 1 to {MAX_DAYS} days")))
        .collect();
        if errors.is_empty() { Ok(()) } else { Err(Error::Invalid { what: "retention policy", errors }) }
    }

    /// The times before which each kind of data goes, at `now`.
    pub fn cutoffs(&self, now: DateTime<Utc>) -> Cutoffs {
        let before = |days: u32| {
            now.checked_sub_signed(Duration::days(i64::from(days.min(MAX_DAYS)))).unwrap_or(DateTime::<Utc>::MIN_UTC)
        };
        Cutoffs {
            attempts: before(self.attempt_days),
            disconnected: before(self.disconnected_days),
            delivered_callbacks: before(self.delivered_callback_days),
        }
    }
}

/// The times before which [`RetentionStore::purge`] drops each kind of data (strictly before).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cutoffs {
    /// Finished runs last changed before it lose their raw event and attempt records.
    pub attempts: DateTime<Utc>,
    /// Tenants disconnected before it are purged.
    pub disconnected: DateTime<Utc>,
    /// Callbacks delivered before it are removed.
    pub delivered_callbacks: DateTime<Utc>,
}

/// What a purge removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PurgeReport {
    /// The disconnected tenants purged (their bindings and secrets removed), by tenant id.
    pub tenants: Vec<String>,
    /// Runs removed (the purged tenants').
    pub runs: u64,
    /// Raw events emptied (finished runs older than `attempt_days`).
    pub raw_events: u64,
    /// Attempt records removed (of those runs, and of the purged tenants' runs).
    pub attempts: u64,
    /// Callback outbox rows removed (delivered ones past `delivered_callback_days`, and the
    /// purged tenants').
    pub callbacks: u64,
    /// Cross-reference entries removed (of businesses no tenant remains bound to).
    pub xrefs: u64,
    /// True when nothing was removed: the counts say what a purge would remove.
    pub dry_run: bool,
}

impl PurgeReport {
    /// True when there was nothing to purge.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
            && self.runs == 0
            && self.raw_events == 0
            && self.attempts == 0
            && self.callbacks == 0
            && self.xrefs == 0
    }
}

impl fmt::Display for PurgeReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} tenant(s), {} run(s), {} raw event(s), {} attempt(s), {} callback(s), {} cross-reference entr{}",
            self.tenants.len(),
            self.runs,
            self.raw_events,
            self.attempts,
            self.callbacks,
            self.xrefs,
            if self.xrefs == 1 { "y" } else { "ies" }
        )
    }
}

/// A store that can forget what its [`RetentionPolicy`] no longer lets it keep. Every
/// implementation passes `retention_keeps_what_is_promised` of the service package's store
/// conformance suite (`byte8_ledger_service::store::conformance`: the promise is about tenants).
/// The SQL stores purge every table of their schema, the service's included; the memory store
/// purges the core's tables and lets its extension purge its own
/// ([`MemoryExtension::purge`](super::memory::MemoryExtension::purge)).
#[async_trait]
pub trait RetentionStore: fmt::Debug + Send + Sync {
    /// Purges what `policy` lets go at `now` (see the [module docs](self)); with `dry_run`,
    /// removes nothing and reports what a purge would remove.
    ///
    /// # Errors
    /// [`Error::Invalid`] for a policy out of range ([`RetentionPolicy::validate`]); store
    /// failures (nothing is removed then: the purge is one transaction).
    async fn purge(&self, policy: &RetentionPolicy, now: DateTime<Utc>, dry_run: bool) -> Result<PurgeReport>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_promise_and_zero_is_refused() {
        let p = RetentionPolicy::default();
        assert_eq!((p.attempt_days, p.disconnected_days, p.delivered_callback_days), (90, 90, 30));
        p.validate().unwrap();
        let bad = RetentionPolicy { attempt_days: 0, delivered_callback_days: MAX_DAYS + 1, ..p };
        let err = bad.validate().unwrap_err();
        let fields: Vec<_> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(fields, ["attempt_days", "delivered_callback_days"]);
    }

    #[test]
    fn cutoffs_count_whole_days_back_and_never_overflow() {
        let now = DateTime::parse_from_rfc3339("2026-12-05T12:00:00Z").unwrap().with_timezone(&Utc);
        let c = RetentionPolicy::default().cutoffs(now);
        assert_eq!(c.attempts, DateTime::parse_from_rfc3339("2026-09-06T12:00:00Z").unwrap());
        assert_eq!(c.delivered_callbacks, DateTime::parse_from_rfc3339("2026-11-05T12:00:00Z").unwrap());
        let far = RetentionPolicy { attempt_days: u32::MAX, ..RetentionPolicy::default() };
        assert_eq!(far.cutoffs(DateTime::<Utc>::MIN_UTC).attempts, DateTime::<Utc>::MIN_UTC);
    }
}
