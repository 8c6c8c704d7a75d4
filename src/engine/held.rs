//! The cross-reference *done* records of one run, held until the run ends.
//!
//! # Why
//!
//! Every step that creates a ledger record writes an intent before its request and a done record
//! after the ledger answered (see [`crate::engine`]'s "Nothing lost, nothing twice"). The intent
//! must be durable before the request: it is what makes a crash between the ledger's commit and
//! the local record recoverable (the next attempt sees it and looks the record up by reference).
//! The done record need not be durable before the run ends: losing it costs the next attempt a
//! look-up, never a second write. So a single run's done records are held here and handed to
//! [`RunStore::finish`](crate::store::RunStore::finish) in
//! [`RunResult::xrefs`](crate::store::RunResult::xrefs), which writes
//! them in the same transaction as the run's end (on PostgreSQL in its one statement): one round
//! trip fewer per record (an invoice for a new customer: two).
//!
//! # How
//!
//! A task-local, like the audit's [`Recorder`](crate::http::audit::Recorder): the engine opens a
//! [`HeldXrefs`] per single run ([`SyncEngine::process`](super::SyncEngine::process)) and runs
//! the attempt inside [`HeldXrefs::scope`]; the engine's `put` holds a done entry in the task's
//! [`HeldXrefs`] and writes any other entry (an intent) at once, and its reads (`get`,
//! `list_xrefs`) see a held entry before the store's, so the handlers read their own writes and
//! their logic does not change. Outside a scope (the batched path, which records its batch's
//! entries itself, and callers outside a run) every entry is written at once, as before. A
//! task-local rather than a parameter: the handlers reach the store through one `put` and one
//! `get` from many call sites, shared with the batched path, which must keep writing at once.
//!
//! # What is held, and what never is
//!
//! - Held: every entry whose state is done — a ledger id known after the ledger answered (an
//!   invoice, credit note, payment, allocation, refund, a contact or item created or adopted),
//!   and the updates of done entries (an invoice's outstanding after a payment or allocation, an
//!   upserted customer's or product's fingerprint).
//! - Written at once: every intent. An intent after a held entry of the same key replaces it
//!   (the held one is dropped once the intent is stored), so the last write wins as before.
//! - No done entry guards a later request of the same run through the store: the run reads its
//!   own held entries, and the next run of the business starts after this one's `finish`. A run
//!   whose `finish` fails (the database is down) loses its held entries; its intents are stored,
//!   so the next attempt looks every record up by reference and adopts it; a contact (created
//!   first, without an intent) is created again with the same idempotency key and, refused as
//!   taken, looked up and adopted.
//!
//! Every call site, and why its done record may wait for the finish:
//!
//! | step | entry | if the held record is lost |
//! |---|---|---|
//! | a contact created or adopted (`record_contact`) | contact, done | created again with the event's idempotency key, or refused as taken, looked up and adopted |
//! | an invoice posted, or found after an intent (`invoice_created`) | invoice, done | its intent makes the next attempt look it up by reference |
//! | an invoice adopted for its payment or credit memo (`invoice_facts`) | invoice, done | looked up again |
//! | a payment posted or found (`record_payment`), the invoice's outstanding (`set_outstanding`) | payment and invoice, done | the payment's intent: looked up; the outstanding is recorded again with it (before, two writes: a crash between them left it stale; now both or neither) |
//! | a credit note, allocation or refund posted or found | each, done | each has its intent: looked up; the credit memo resumes at the step it reached |
//! | a customer upsert's contact update (the fingerprint) | contact, done | the next upsert updates the contact again (an update is idempotent) |
//! | a product's item created, adopted or updated (`product_upserted`) | item, done | the item's intent: created again with the same idempotency key or adopted; the stock movement that follows reads the ledger's quantity, so a repeat moves nothing |
//!
//! The intents (invoice, credit note, payment, allocation, refund, item) are always written at
//! once: each guards the request after it.
//!
//! # Read ahead
//!
//! A step that knows every entry it will need reads them in one round trip
//! ([`SyncEngine::read_ahead`](super::SyncEngine::read_ahead): an invoice its contact's and its
//! items', a payment its own and its invoice's), and the run keeps what it read (a missing entry
//! as missing) beside its held entries; its later reads of those keys cost nothing. What the
//! run writes at once updates what it keeps. Safe for the same reason as holding: the run is the
//! only writer of its business's entries while it runs (the service's dispatch lease, the
//! command's one process). Outside a scope nothing is kept, and every read goes to the store.

use std::{
    collections::BTreeMap,
    future::Future,
    sync::{Arc, Mutex},
};

use crate::store::{Xref, XrefKind, XrefState};

tokio::task_local! {
    static CURRENT: HeldXrefs;
}

/// Entries by kind and key, shared by the clones of one run's [`HeldXrefs`].
type Entries<T> = Arc<Mutex<BTreeMap<(XrefKind, String), T>>>;

/// The entries, locked; a panic elsewhere while they were locked leaves them as they were.
fn locked<T>(entries: &Entries<T>) -> std::sync::MutexGuard<'_, BTreeMap<(XrefKind, String), T>> {
    entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The done entries a run holds until its end, by kind and key (in the engine's scope), and the
/// entries it read from the store ahead of its steps (`read`, a miss recorded as `None`).
#[derive(Debug, Clone, Default)]
pub(crate) struct HeldXrefs(Entries<Xref>, Entries<Option<Xref>>);

impl HeldXrefs {
    /// Runs `f` with this as the task's held entries.
    pub(crate) async fn scope<F: Future>(&self, f: F) -> F::Output {
        CURRENT.scope(self.clone(), f).await
    }

    /// The task's held entries, inside a [`scope`](Self::scope).
    pub(crate) fn current() -> Option<Self> {
        CURRENT.try_with(Clone::clone).ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<(XrefKind, String), Xref>> {
        locked(&self.0)
    }

    /// Holds `xref` when it is done; an intent is not held, and is given back (`Err`: the caller
    /// writes it at once).
    pub(crate) fn hold(&self, kind: XrefKind, key: &str, xref: Xref) -> Result<(), Xref> {
        if xref.state != XrefState::Done {
            return Err(xref);
        }
        self.lock().insert((kind, key.to_owned()), xref);
        Ok(())
    }

    /// Drops the held entry of `(kind, key)`: a later write of it was stored.
    pub(crate) fn forget(&self, kind: XrefKind, key: &str) {
        self.lock().remove(&(kind, key.to_owned()));
    }

    /// The held entry of `(kind, key)`.
    pub(crate) fn get(&self, kind: XrefKind, key: &str) -> Option<Xref> {
        self.lock().get(&(kind, key.to_owned())).cloned()
    }

    /// `stored` (the store's entries of `kind` whose key starts with `prefix`, sorted by key)
    /// with the held entries of that kind and prefix in place of, or beside, the stored ones.
    pub(crate) fn overlay(&self, kind: XrefKind, prefix: &str, stored: Vec<(String, Xref)>) -> Vec<(String, Xref)> {
        let held = self.lock();
        let mine = held.iter().filter(|((k, key), _)| *k == kind && key.starts_with(prefix));
        let mut all: BTreeMap<String, Xref> = stored.into_iter().collect();
        for ((_, key), x) in mine {
            all.insert(key.clone(), x.clone());
        }
        all.into_iter().collect()
    }

    /// What the run read of `(kind, key)` from the store ahead of its steps: `Some(None)` when
    /// the store had no entry, `None` when it was not read.
    pub(crate) fn read(&self, kind: XrefKind, key: &str) -> Option<Option<Xref>> {
        locked(&self.1).get(&(kind, key.to_owned())).cloned()
    }

    /// What the run knows of `(kind, key)` without asking the store: its held entry, else what a
    /// read of the store answered (`Some(None)`: no entry); `None` when it knows nothing.
    pub(crate) fn known(&self, kind: XrefKind, key: &str) -> Option<Option<Xref>> {
        self.get(kind, key).map(Some).or_else(|| self.read(kind, key))
    }

    /// Whether the run knows `(kind, key)` without asking the store ([`known`](Self::known)
    /// answers `Some`), without copying the entry.
    pub(crate) fn knows(&self, kind: XrefKind, key: &str) -> bool {
        let key = (kind, key.to_owned());
        self.lock().contains_key(&key) || locked(&self.1).contains_key(&key)
    }

    /// Records what the store has of `(kind, key)` (read ahead, or just written at once).
    pub(crate) fn remember(&self, kind: XrefKind, key: &str, xref: Option<Xref>) {
        locked(&self.1).insert((kind, key.to_owned()), xref);
    }

    /// Records what one store read of the keys `asked` answered (`stored`): each key's entry, or
    /// that it has none.
    pub(crate) fn remember_read(&self, asked: &[(XrefKind, &str)], stored: Vec<(XrefKind, String, Xref)>) {
        let mut read = locked(&self.1);
        for &(kind, key) in asked {
            read.insert((kind, key.to_owned()), None);
        }
        for (kind, key, x) in stored {
            // Only what was asked is kept (a store answers nothing else).
            if let Some(entry) = read.get_mut(&(kind, key)) {
                *entry = Some(x);
            }
        }
    }

    /// Takes every held entry (sorted by kind and key), for the run's `finish`.
    pub(crate) fn take(&self) -> Vec<(XrefKind, String, Xref)> {
        std::mem::take(&mut *self.lock()).into_iter().map(|((kind, key), x)| (kind, key, x)).collect()
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;

    fn at() -> chrono::DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap()
    }

    #[test]
    fn done_entries_are_held_intents_are_not_and_a_stored_write_drops_the_held_one() {
        let held = HeldXrefs::default();
        let done = Xref::done("L1".into(), Some("SI-1".into()), json!({}), at());
        let intent = Xref::intent(Some("SI-1".into()), json!({}), at());
        assert_eq!(held.hold(XrefKind::Invoice, "1", intent.clone()), Err(intent), "an intent is written at once");
        assert_eq!(held.get(XrefKind::Invoice, "1"), None);
        assert_eq!(held.hold(XrefKind::Invoice, "1", done.clone()), Ok(()));
        assert_eq!(held.get(XrefKind::Invoice, "1"), Some(done.clone()));
        assert_eq!(held.get(XrefKind::CreditNote, "1"), None, "kinds are apart");
        held.forget(XrefKind::Invoice, "1");
        assert_eq!(held.get(XrefKind::Invoice, "1"), None);
        assert_eq!(held.hold(XrefKind::Payment, "2", done.clone()), Ok(()));
        assert_eq!(held.take(), vec![(XrefKind::Payment, "2".to_owned(), done)]);
        assert!(held.take().is_empty(), "taken once");
    }

    #[test]
    fn what_was_read_ahead_is_kept_a_miss_as_a_miss_and_apart_from_the_held_entries() {
        let held = HeldXrefs::default();
        let contact = Xref::done("C-1".into(), None, json!({}), at());
        assert_eq!(held.read(XrefKind::Contact, "customer:1:GBP"), None, "not read");
        held.remember(XrefKind::Contact, "customer:1:GBP", Some(contact.clone()));
        held.remember(XrefKind::Item, "SKU-1", None);
        assert_eq!(held.read(XrefKind::Contact, "customer:1:GBP"), Some(Some(contact)));
        assert_eq!(held.read(XrefKind::Item, "SKU-1"), Some(None), "read, and missing");
        assert_eq!(held.read(XrefKind::Contact, "SKU-1"), None, "kinds are apart");
        let intent = Xref::intent(Some("SKU-1".into()), json!({}), at());
        held.remember(XrefKind::Item, "SKU-1", Some(intent.clone()));
        assert_eq!(held.read(XrefKind::Item, "SKU-1"), Some(Some(intent)), "a write at once replaces the miss");
        assert!(held.take().is_empty(), "what was read is not written by the finish");
    }

    #[test]
    fn a_listing_sees_held_entries_of_its_kind_and_prefix_over_the_stored_ones() {
        let held = HeldXrefs::default();
        let stored_gbp = Xref::intent(None, json!({}), at());
        let stored_eur = Xref::done("C-EUR".into(), None, json!({}), at());
        let held_gbp = Xref::done("C-GBP".into(), None, json!({"fingerprint": "x"}), at());
        let held_usd = Xref::done("C-USD".into(), None, json!({}), at());
        held.hold(XrefKind::Contact, "customer:5:GBP", held_gbp.clone()).unwrap();
        held.hold(XrefKind::Contact, "customer:5:USD", held_usd.clone()).unwrap();
        held.hold(XrefKind::Contact, "customer:6:GBP", held_usd.clone()).unwrap();
        held.hold(XrefKind::Item, "customer:5:X", held_usd.clone()).unwrap();
        let stored = vec![("customer:5:EUR".to_owned(), stored_eur.clone()), ("customer:5:GBP".to_owned(), stored_gbp)];
        assert_eq!(
            held.overlay(XrefKind::Contact, "customer:5:", stored),
            vec![
                ("customer:5:EUR".to_owned(), stored_eur),
                ("customer:5:GBP".to_owned(), held_gbp),
                ("customer:5:USD".to_owned(), held_usd),
            ]
        );
    }

    #[tokio::test]
    async fn the_held_entries_are_the_tasks_inside_a_scope_only() {
        assert!(HeldXrefs::current().is_none());
        let held = HeldXrefs::default();
        let inside = held.scope(async { HeldXrefs::current().is_some() }).await;
        assert!(inside);
        assert!(HeldXrefs::current().is_none());
    }
}
