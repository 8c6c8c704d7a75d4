//! One handler per event: policy, dependencies, intent, post, result.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::{Handled, SyncEngine, held::HeldXrefs};
use crate::{
    canonical::{
        Entity, Event, EventKind, InvoiceState, MagentoContact, MagentoCreditMemo, MagentoInvoice, MagentoPayment,
        MagentoProduct,
    },
    error::{Error, Result},
    identity::{self, ContactRoute, ContactSubject},
    money::Currency,
    outcome::skip,
    plan::{DocumentAddresses, DocumentKind, fit_reference},
    policy::{BankDecision, SyncPolicy},
    providers::{
        AccountingProviderExt, AllocationRequest, Capabilities, ContactFor, ContactRecord, ContactRequest,
        CreditNoteRequest, DocumentRecord, InvoiceRequest, ItemKind, ItemLink, ItemRecord, ItemRequest, PaymentRequest,
        RefundRequest, StockMovementRequest, TransactionKind, TransactionLookup, is_item_code_taken, types::item_kind,
    },
    reference::ReferenceData,
    store::{RunStatus, Xref, XrefKind},
};

fn skipped(reason: &str, message: impl Into<String>) -> Handled {
    Handled::Skipped { reason: reason.to_owned(), message: Some(message.into()) }
}

fn dec_of(v: &Value, key: &str) -> Option<Decimal> {
    v.get(key).and_then(|x| match x {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.to_string().parse().ok(),
        _ => None,
    })
}

/// A payment ready to post: its key, its invoice, its bank account and reference.
#[derive(Debug, Clone)]
pub(crate) struct PaymentJob {
    key: String,
    facts: InvoiceFacts,
    bank: String,
    pay_ref: String,
    /// The intent with `pay_ref` was written by the read that found no entry
    /// (`payment_prepare`): [`payment_intent`](SyncEngine::payment_intent) has nothing to write.
    intent_written: bool,
}

impl PaymentJob {
    /// The provider request of the job.
    pub(crate) fn request<'a>(
        &'a self,
        event: &'a Event,
        pay: &'a MagentoPayment,
        policy: &'a SyncPolicy,
    ) -> PaymentRequest<'a> {
        PaymentRequest {
            payment: pay,
            policy,
            contact_id: &self.facts.contact_id,
            invoice_id: &self.facts.id,
            bank_account_id: &self.bank,
            invoice_base_to_order_rate: self.facts.base_to_order_rate,
            outstanding: Some(self.facts.outstanding),
            idempotency_key: &event.idempotency_key,
        }
    }
}

/// Where a payment stands after its own checks.
#[derive(Debug)]
pub(crate) enum PaymentPrep {
    /// Decided without posting.
    Decided(Handled),
    /// To post.
    Ready(Box<PaymentJob>),
}

/// What later events need to know of a posted invoice.
#[derive(Debug, Clone)]
struct InvoiceFacts {
    id: String,
    contact_id: String,
    outstanding: Decimal,
    base_to_order_rate: Option<Decimal>,
    addresses: DocumentAddresses,
    meta: Value,
}

impl InvoiceFacts {
    /// The facts of an invoice's entry: `None` unless it is done and names the invoice's contact.
    fn from_xref(x: Xref) -> Option<Self> {
        let (id, contact_id) = Self::usable(&x)?;
        let (id, contact_id) = (id.to_owned(), contact_id.to_owned());
        Some(Self {
            id,
            contact_id,
            outstanding: dec_of(&x.meta, "outstanding").unwrap_or_default(),
            base_to_order_rate: dec_of(&x.meta, "base_to_order_rate"),
            addresses: x
                .meta
                .get("addresses")
                .and_then(|a| <DocumentAddresses as serde::Deserialize>::deserialize(a).ok())
                .unwrap_or_default(),
            meta: x.meta,
        })
    }

    /// The ledger id and contact id of an invoice's entry that [`from_xref`](Self::from_xref)
    /// reads facts from.
    fn usable(x: &Xref) -> Option<(&str, &str)> {
        Some((x.done_id()?, x.meta.get("contact_id")?.as_str()?))
    }
}

/// What later events need to know of a posted invoice, as its cross-reference keeps it.
pub(crate) fn invoice_meta(inv: &MagentoInvoice, doc: &DocumentRecord, contact_id: &str, doc_ref: &str) -> Value {
    json!({
        "contact_id": doc.contact_id.clone().unwrap_or_else(|| contact_id.to_owned()),
        "total": doc.total.unwrap_or(inv.grand_total).to_string(),
        "outstanding": doc.outstanding.or(doc.total).unwrap_or(inv.grand_total).to_string(),
        "currency": inv.currency.code(),
        "base_to_order_rate": inv.base_to_order_rate.map(|r| r.to_string()),
        "addresses": DocumentAddresses { billing: inv.billing_address.clone(), shipping: inv.shipping_address.clone() },
        "reference": doc_ref,
        "number": doc.number,
        "increment_id": inv.increment_id,
    })
}

/// What resolving a document's contact takes.
#[derive(Debug)]
pub(crate) enum ContactNeed<'c> {
    /// The cross-reference knows it.
    Known(String),
    /// It must be found, adopted or created.
    Resolve(ContactJob<'c>),
}

/// A contact to resolve: who, where it is recorded, the references it may hold.
#[derive(Debug, Clone)]
pub(crate) struct ContactJob<'c> {
    pub(crate) subject: ContactSubject,
    pub(crate) who: ContactFor<'c>,
    pub(crate) xref_key: String,
    pub(crate) candidates: Vec<String>,
    pub(crate) currency: Currency,
}

fn contact_key(subject: &ContactSubject, currency: Currency) -> String {
    format!("{}:{}", subject.xref_key(), currency.code())
}

/// The currency of the contact a document in `currency` goes on: its own on a ledger that keeps
/// a contact per currency, else the business's base currency.
fn contact_currency(currency: Currency, reference: &ReferenceData, caps: &Capabilities) -> Currency {
    if caps.contact_per_currency { currency } else { reference.business.base_currency }
}

impl SyncEngine {
    pub(crate) async fn handle(&self, event: &Event, policy: &SyncPolicy) -> Result<Handled> {
        let entity = match &event.entity {
            Some(e) => e.clone(),
            None => match &self.source {
                Some(source) => {
                    let e = source.fetch(event.event, event.magento_entity_id).await?;
                    e.validate().map_err(|err| err.at("entity"))?;
                    e
                }
                None => {
                    return Err(Error::invalid(
                        "event",
                        "entity",
                        "missing, and no Magento connection is configured to fetch it",
                    ));
                }
            },
        };
        if let Some(recorder) = crate::http::audit::current() {
            // The snapshot the run's page compares with the previous run of the same entity.
            if let Ok(snapshot) = crate::http::audit::Snapshot::of(&entity) {
                recorder.set_snapshot(snapshot);
            }
        }
        match (event.event, entity) {
            (EventKind::InvoiceCreated, Entity::Invoice(inv)) => self.invoice_created(event, &inv, policy).await,
            (EventKind::InvoicePaid, Entity::Payment(pay)) => self.invoice_paid(event, &pay, policy).await,
            (EventKind::CreditMemoCreated, Entity::CreditMemo(memo)) => {
                self.creditmemo_created(event, &memo, policy).await
            }
            (EventKind::CustomerUpserted, Entity::Contact(c)) => self.customer_upserted(event, &c, policy).await,
            (EventKind::ProductUpserted, Entity::Product(p)) => self.product_upserted(event, &p, policy).await,
            (kind, _) => Err(Error::invalid("event", "entity", format!("is not the entity of a {kind} event"))),
        }
    }

    pub(crate) async fn context(&self) -> Result<(std::sync::Arc<ReferenceData>, Capabilities)> {
        let reference = self.provider.reference_data(false).await?;
        let caps = self.provider.capabilities().await?;
        Ok((reference, caps))
    }

    pub(crate) fn reference_of(&self, policy: &SyncPolicy, increment_id: &str, caps: &Capabilities) -> String {
        fit_reference(&policy.document_reference(increment_id), increment_id, caps.max_document_reference)
    }

    /// Records a cross-reference entry. Inside a single run ([`HeldXrefs`]'s scope) a done entry
    /// is held until the run's `finish` writes it; an intent, and any entry outside a run (the
    /// batched path), is written at once, before the request it guards.
    pub(crate) async fn put(&self, kind: XrefKind, key: &str, xref: Xref) -> Result<()> {
        let held = HeldXrefs::current();
        let xref = match &held {
            Some(h) => match h.hold(kind, key, xref) {
                Ok(()) => return Ok(()),
                Err(intent) => intent,
            },
            None => xref,
        };
        self.store.put_xref(&self.scope, kind, key, &xref).await?;
        // Stored after a held entry of the same key: the stored one is the latest.
        if let Some(h) = held {
            h.forget(kind, key);
            h.remember(kind, key, Some(xref));
        }
        Ok(())
    }

    /// A cross-reference entry: the run's own held one first, else the store's.
    pub(crate) async fn get(&self, kind: XrefKind, key: &str) -> Result<Option<Xref>> {
        if let Some(known) = HeldXrefs::current().and_then(|h| h.known(kind, key)) {
            return Ok(known);
        }
        self.store.get_xref(&self.scope, kind, key).await
    }

    /// The entries among `keys` (the run's own held ones first, then what it read ahead, the
    /// rest in one store call: `XrefStore::get_xrefs`); inside a run, what the store answered is
    /// kept (a missing entry as missing), so the run's later reads of those keys cost nothing.
    pub(crate) async fn read_ahead(&self, keys: &[(XrefKind, &str)]) -> Result<BTreeMap<(XrefKind, String), Xref>> {
        let held = HeldXrefs::current();
        let mut found = BTreeMap::new();
        let mut unread: Vec<(XrefKind, &str)> = Vec::new();
        for &(kind, key) in keys {
            if found.contains_key(&(kind, key.to_owned())) || unread.contains(&(kind, key)) {
                continue;
            }
            match held.as_ref().and_then(|h| h.known(kind, key)) {
                Some(Some(x)) => {
                    found.insert((kind, key.to_owned()), x);
                }
                Some(None) => {}
                None => unread.push((kind, key)),
            }
        }
        if unread.is_empty() {
            return Ok(found);
        }
        let stored = self.store.get_xrefs(&self.scope, &unread).await?;
        if let Some(h) = &held {
            h.remember_read(&unread, stored.clone());
        }
        found.extend(stored.into_iter().map(|(kind, key, x)| ((kind, key), x)));
        Ok(found)
    }

    /// The entry of `(kind, key)` (the run's own held one first, else the store's) when there is
    /// one; otherwise `intent` is written at once and `None` answered. One round trip where
    /// [`get`](Self::get) then [`put`](Self::put) would be two (`XrefStore::get_or_put_intent`).
    pub(crate) async fn get_or_intent(&self, kind: XrefKind, key: &str, intent: &Xref) -> Result<Option<Xref>> {
        debug_assert_eq!(intent.state, crate::store::XrefState::Intent, "only an intent is written before its request");
        let held = HeldXrefs::current();
        match held.as_ref().and_then(|h| h.known(kind, key)) {
            Some(Some(x)) => return Ok(Some(x)),
            Some(None) => {
                self.put(kind, key, intent.clone()).await?;
                return Ok(None);
            }
            None => {}
        }
        let found = self.store.get_or_put_intent(&self.scope, kind, key, intent).await?;
        if let Some(h) = &held {
            h.remember(kind, key, Some(found.clone().unwrap_or_else(|| intent.clone())));
        }
        Ok(found)
    }

    /// [`get_or_intent`](Self::get_or_intent) of `(kind, key)` and [`read_ahead`](Self::read_ahead)
    /// of `ahead`, in one store call when both need the store
    /// (`XrefStore::get_or_put_intent_reading`): an invoice's entry, the intent that guards its
    /// post and its contact's and items' entries cost one round trip, not two. Inside a run, what
    /// the store answered is kept as `get_or_intent` and `read_ahead` keep it.
    pub(crate) async fn get_or_intent_reading(
        &self,
        kind: XrefKind,
        key: &str,
        intent: &Xref,
        ahead: &[(XrefKind, &str)],
    ) -> Result<Option<Xref>> {
        let held = HeldXrefs::current();
        let known = |k: XrefKind, name: &str| held.as_ref().is_some_and(|h| h.knows(k, name));
        let mut unread: Vec<(XrefKind, &str)> = Vec::new();
        for &(k, name) in ahead {
            if (k, name) != (kind, key) && !known(k, name) && !unread.contains(&(k, name)) {
                unread.push((k, name));
            }
        }
        if known(kind, key) || unread.is_empty() {
            let found = self.get_or_intent(kind, key, intent).await?;
            self.read_ahead(ahead).await?;
            return Ok(found);
        }
        let (found, stored) = self.store.get_or_put_intent_reading(&self.scope, kind, key, intent, &unread).await?;
        if let Some(h) = &held {
            h.remember(kind, key, Some(found.clone().unwrap_or_else(|| intent.clone())));
            h.remember_read(&unread, stored);
        }
        Ok(found)
    }

    /// The cross-reference entries of `kind` whose key starts with `prefix`, the run's own held
    /// ones in place of the store's.
    pub(crate) async fn list_xrefs(&self, kind: XrefKind, prefix: &str) -> Result<Vec<(String, Xref)>> {
        let stored = self.store.list_xrefs(&self.scope, kind, prefix).await?;
        Ok(match HeldXrefs::current() {
            Some(h) => h.overlay(kind, prefix, stored),
            None => stored,
        })
    }

    // ---- contacts -------------------------------------------------------------------------

    /// What it takes to know the contact a document of `customer` in `currency` goes on (B2C
    /// consolidation applied): its id when the cross-reference holds it, else the resolution job.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn contact_need<'c>(
        &self,
        customer: &'c MagentoContact,
        currency: Currency,
        grand_total: Decimal,
        policy: &SyncPolicy,
        reference: &ReferenceData,
        caps: &Capabilities,
    ) -> Result<ContactNeed<'c>> {
        let base = reference.business.base_currency;
        if currency != base && !caps.multi_currency {
            return Err(Error::invalid(
                "document",
                "currency",
                format!(
                    "{} documents need multi-currency, which is not enabled for this ledger business (base {})",
                    currency.code(),
                    base.code()
                ),
            ));
        }
        let contact_currency = contact_currency(currency, reference, caps);
        let subject = ContactSubject::of(customer);
        let own_key = contact_key(&subject, contact_currency);
        let known = self.get(XrefKind::Contact, &own_key).await?;
        if let Some(id) = known.as_ref().and_then(Xref::done_id) {
            return Ok(ContactNeed::Known(id.to_owned()));
        }
        let route = identity::b2c_route(&policy.b2c_consolidation, customer, grand_total, known.is_some());
        let (subject, who, xref_key) = match route {
            ContactRoute::Individual => (subject, ContactFor::Customer(customer), own_key),
            ContactRoute::Fallback => {
                let k = contact_key(&ContactSubject::Fallback, contact_currency);
                if let Some(id) = self.get(XrefKind::Contact, &k).await?.as_ref().and_then(Xref::done_id) {
                    return Ok(ContactNeed::Known(id.to_owned()));
                }
                (ContactSubject::Fallback, ContactFor::Fallback, k)
            }
        };
        let candidates = identity::reference_candidates(
            &subject,
            contact_currency,
            base,
            &policy.b2c_consolidation.fallback_contact_reference,
        );
        Ok(ContactNeed::Resolve(ContactJob { subject, who, xref_key, candidates, currency: contact_currency }))
    }

    /// Resolves one contact job (find, adopt or create, trying its candidates) and records it.
    pub(crate) async fn resolve_job(&self, job: &ContactJob<'_>, policy: &SyncPolicy, key: &str) -> Result<String> {
        let request = ContactRequest {
            contact: job.who,
            currency: job.currency,
            reference: &job.candidates[0],
            policy,
            idempotency_key: Some(key),
        };
        let resolved = self.provider.resolve_contact(&job.subject, &job.candidates, request).await?;
        self.record_contact(job, &resolved.record, resolved.created).await?;
        Ok(resolved.record.id)
    }

    /// Records a resolved contact in the cross-reference.
    pub(crate) async fn record_contact(
        &self,
        job: &ContactJob<'_>,
        record: &ContactRecord,
        created: bool,
    ) -> Result<()> {
        let now = self.clock.now();
        self.put(
            XrefKind::Contact,
            &job.xref_key,
            Xref::done(
                record.id.clone(),
                record.reference.clone(),
                json!({"currency": job.currency.code(), "adopted": !created}),
                now,
            ),
        )
        .await
    }

    /// The contact a document of `customer` in `currency` goes on (B2C consolidation applied).
    #[allow(clippy::too_many_arguments)]
    async fn contact_for(
        &self,
        customer: &MagentoContact,
        currency: Currency,
        grand_total: Decimal,
        policy: &SyncPolicy,
        reference: &ReferenceData,
        caps: &Capabilities,
        key: &str,
    ) -> Result<String> {
        match self.contact_need(customer, currency, grand_total, policy, reference, caps).await? {
            ContactNeed::Known(id) => Ok(id),
            ContactNeed::Resolve(job) => self.resolve_job(&job, policy, key).await,
        }
    }

    /// The ledger items the lines' SKUs link to, from the cross-reference only.
    ///
    /// A choice: a line links an item only when this crate synced that SKU (`product.upserted`)
    /// into this business. A SKU never upserted posts as a plain line on the policy's ledger
    /// account, so the ledger's stock is not moved by it. Looking such SKUs up in the ledger on
    /// every invoice would cost up to one request per item kind per unknown SKU, on every
    /// invoice that carries it (unknown stays unknown), for items that may not exist; a merchant
    /// moving from another connector back-fills `product.upserted` first (the adoption then
    /// finds Byte8's items by code, once per SKU) and every later invoice links.
    pub(crate) async fn item_links(
        &self,
        skus: impl Iterator<Item = &str>,
        policy: &SyncPolicy,
    ) -> Result<BTreeMap<String, ItemLink>> {
        let mut out = BTreeMap::new();
        if !policy.sync_products {
            return Ok(out);
        }
        // One store call for every line's item, not one per line.
        let keys: Vec<(XrefKind, &str)> = skus.map(|sku| (XrefKind::Item, sku)).collect();
        for ((_, sku), x) in self.read_ahead(&keys).await? {
            if let (Some(id), Some(kind)) =
                (x.done_id(), x.meta.get("kind").and_then(|k| serde_json::from_value::<ItemKind>(k.clone()).ok()))
            {
                out.insert(sku, ItemLink { id: id.to_owned(), kind });
            }
        }
        Ok(out)
    }

    // ---- invoice.created ------------------------------------------------------------------

    /// The policy checks of an invoice (P1–P5, cancelled) and its cross-reference: `Some` when
    /// the event is decided without the ledger.
    pub(crate) async fn invoice_precheck(
        &self,
        event: &Event,
        inv: &MagentoInvoice,
        policy: &SyncPolicy,
    ) -> Result<Option<Handled>> {
        if let Some(skip) = invoice_skip(event, inv, policy) {
            return Ok(Some(skip));
        }
        let existing = self.get(XrefKind::Invoice, &inv.magento_id.to_string()).await?;
        Ok(already_posted(existing.as_ref()))
    }

    /// Posts an invoice (after [`invoice_skip`]'s checks).
    ///
    /// The invoice's cross-reference is read, and its intent written when it has none, with its
    /// contact's and items' entries read ahead, in one call
    /// ([`get_or_intent_reading`](Self::get_or_intent_reading)), before the contact is resolved:
    /// a new invoice costs one round trip to the store there, not three. An intent left by an attempt
    /// that failed before its post (a contact refused, the ledger unreachable) only makes the
    /// next attempt look the invoice up by reference first, as after a crash. An intent found
    /// (an earlier attempt's) is written again with this attempt's reference before the post,
    /// as before: the policy's document reference may have changed since.
    async fn invoice_created(&self, event: &Event, inv: &MagentoInvoice, policy: &SyncPolicy) -> Result<Handled> {
        if let Some(skip) = invoice_skip(event, inv, policy) {
            return Ok(skip);
        }
        let key = inv.magento_id.to_string();
        let (reference, caps) = self.context().await?;
        let doc_ref = self.reference_of(policy, &inv.increment_id, &caps);
        let intent = Xref::intent(Some(doc_ref.clone()), json!({}), self.clock.now());
        // The contact carries the buyer's VAT number, the invoice's own when the contact has none.
        let buyer = inv.buyer();
        // The buyer's contact entry and the lines' items, read ahead with the invoice's entry and
        // intent in one store call: the steps below find them there.
        let own_contact = contact_key(&ContactSubject::of(&buyer), contact_currency(inv.currency, &reference, &caps));
        let mut ahead = vec![(XrefKind::Contact, own_contact.as_str())];
        if policy.sync_products {
            ahead.extend(inv.lines.iter().map(|l| (XrefKind::Item, l.sku.as_str())));
        }
        let existing = self.get_or_intent_reading(XrefKind::Invoice, &key, &intent, &ahead).await?;
        if let Some(decided) = already_posted(existing.as_ref()) {
            return Ok(decided);
        }
        let contact_id = self
            .contact_for(&buyer, inv.currency, inv.grand_total, policy, &reference, &caps, &event.idempotency_key)
            .await?;
        let meta = |doc: &DocumentRecord| invoice_meta(inv, doc, &contact_id, &doc_ref);
        // After a crash or an unknown outcome: look it up before any second write.
        if (existing.is_some() || self.config.verify_before_create)
            && let Some(doc) = self.provider.find_document(DocumentKind::Invoice, &doc_ref).await?
        {
            let now = self.clock.now();
            self.put(XrefKind::Invoice, &key, Xref::done(doc.id.clone(), Some(doc_ref.clone()), meta(&doc), now))
                .await?;
            return Ok(Handled::Synced {
                id: doc.id,
                number: doc.number,
                message: Some("found in the ledger by reference (an earlier attempt had posted it)".into()),
            });
        }
        if existing.is_some() {
            let now = self.clock.now();
            self.put(XrefKind::Invoice, &key, Xref::intent(Some(doc_ref.clone()), json!({}), now)).await?;
        }
        let items = self.item_links(inv.lines.iter().map(|l| l.sku.as_str()), policy).await?;
        let doc = self
            .provider
            .post_invoice(&InvoiceRequest {
                invoice: inv,
                policy,
                contact_id: &contact_id,
                items: &items,
                idempotency_key: &event.idempotency_key,
            })
            .await?;
        let now = self.clock.now();
        let m = meta(&doc);
        self.put(XrefKind::Invoice, &key, Xref::done(doc.id.clone(), Some(doc_ref.clone()), m, now)).await?;
        Ok(Handled::Synced { id: doc.id, number: doc.number, message: None })
    }

    /// The facts of the invoice a payment or credit memo refers to: from the cross-reference; or
    /// adopted from the ledger by reference when its own run never existed (posted before this
    /// crate, e.g. by Byte8); `Err(Pending)` while its run is still on its way; `Ok(None)` when
    /// it was skipped or is nowhere (with the skip run when there is one).
    async fn invoice_facts(
        &self,
        invoice_id: u64,
        increment_id: Option<&str>,
        policy: &SyncPolicy,
        caps: &Capabilities,
    ) -> Result<std::result::Result<InvoiceFacts, Option<String>>> {
        let key = invoice_id.to_string();
        if let Some(f) = self.get(XrefKind::Invoice, &key).await?.and_then(InvoiceFacts::from_xref) {
            return Ok(Ok(f));
        }
        let run = self.store.find_by_key(&self.scope, &format!("invoice.created:{invoice_id}")).await?;
        match run.as_ref().map(|r| r.status) {
            Some(RunStatus::Skipped) => {
                let reason = run.and_then(|r| r.outcome).and_then(|o| o.skip_reason);
                return Ok(Err(Some(reason.unwrap_or_else(|| "invoice_not_synced".into()))));
            }
            Some(RunStatus::Queued | RunStatus::Running) => {
                return Err(Error::Pending {
                    what: format!("invoice {}", increment_id.unwrap_or(&key)),
                    message: "its invoice.created has not reached the ledger yet; this event waits and is retried"
                        .into(),
                });
            }
            _ => {}
        }
        if let Some(inc) = increment_id {
            let doc_ref = self.reference_of(policy, inc, caps);
            if let Some(doc) = self.provider.find_document(DocumentKind::Invoice, &doc_ref).await?
                && let Some(contact_id) = doc.contact_id.clone()
            {
                let now = self.clock.now();
                // An adopted invoice keeps the ledger's own exchange rate for its payments: kept in
                // Magento's direction (document units per base unit), as every posted invoice's is.
                let magento_direction = doc.exchange_rate.and_then(|r| Decimal::ONE.checked_div(r));
                let meta = json!({"contact_id": contact_id, "total": doc.total.map(|t| t.to_string()),
                        "outstanding": doc.outstanding.map(|t| t.to_string()), "reference": doc_ref,
                        "number": doc.number, "adopted": true, "increment_id": inc,
                        "base_to_order_rate": magento_direction.map(|r| r.to_string()),
                        "ledger_exchange_rate": doc.exchange_rate.map(|r| r.to_string())});
                let x = Xref::done(doc.id.clone(), Some(doc_ref), meta, now);
                let facts = InvoiceFacts::from_xref(x.clone()).ok_or(None);
                self.put(XrefKind::Invoice, &key, x).await?;
                return Ok(facts);
            }
        }
        Ok(Err(None))
    }

    async fn set_outstanding(&self, invoice_key: &str, facts: &InvoiceFacts, outstanding: Decimal) -> Result<()> {
        let mut meta = facts.meta.clone();
        meta["outstanding"] = Value::String(outstanding.max(Decimal::ZERO).to_string());
        let now = self.clock.now();
        self.put(
            XrefKind::Invoice,
            invoice_key,
            Xref::done(facts.id.clone(), meta.get("reference").and_then(Value::as_str).map(str::to_owned), meta, now),
        )
        .await
    }

    // ---- invoice.paid ---------------------------------------------------------------------

    async fn invoice_paid(&self, event: &Event, pay: &MagentoPayment, policy: &SyncPolicy) -> Result<Handled> {
        if let Some(reason) = policy.filter_skip_reason(event.website_id, event.store_id) {
            return Ok(skipped(reason, "outside the website/store filter"));
        }
        let job = match self.payment_prepare(pay, policy).await? {
            PaymentPrep::Decided(h) => return Ok(h),
            PaymentPrep::Ready(job) => job,
        };
        self.payment_intent(&job).await?;
        let t = self.provider.post_payment(&job.request(event, pay, policy)).await?;
        self.payment_done(&job, pay, t.id).await
    }

    /// A payment's policy, cross-reference, invoice and recovery look-up: decided, or ready to post.
    pub(crate) async fn payment_prepare(&self, pay: &MagentoPayment, policy: &SyncPolicy) -> Result<PaymentPrep> {
        let key = pay.invoice_id.to_string();
        let bank = match policy.bank_account_for(Some(&pay.method)) {
            BankDecision::Mapped(b) | BankDecision::Default(b) => Ok(b),
            BankDecision::ExplicitNone => Err(skipped(
                skip::PAYMENT_METHOD_NOT_MAPPED,
                format!("payment method `{}` is mapped to None: the invoice stays unpaid in the ledger", pay.method),
            )),
            BankDecision::Unmapped => Err(skipped(
                skip::PAYMENT_METHOD_NOT_MAPPED,
                format!("payment method `{}` is not mapped and there is no default_bank_account_id", pay.method),
            )),
        };
        // The payment's entry and its invoice's, in one store call (the invoice's is kept for
        // `invoice_facts` inside a run). Read once: an intent found here (an earlier attempt's)
        // is what makes the look-up below. A payment the policy posts gets its intent in the same
        // call when it has no entry (`get_or_intent_reading`, as an invoice's): one round trip,
        // not two. An intent left so by an attempt that then waited for its invoice only makes
        // the attempt that posts look the payment up first, as after a crash. One the policy
        // skips is only read, so that a payment already in the ledger still says so.
        let (bank, reference, caps, pay_ref, existing) = match bank {
            Err(skip) => {
                let existing = self
                    .read_ahead(&[(XrefKind::Payment, &key), (XrefKind::Invoice, &key)])
                    .await?
                    .remove(&(XrefKind::Payment, key.clone()));
                return Ok(PaymentPrep::Decided(paid_already(existing.as_ref()).unwrap_or(skip)));
            }
            Ok(bank) => {
                let (reference, caps) = self.context().await?;
                let pay_ref = self.reference_of(policy, &pay.invoice_increment_id, &caps);
                let intent = Xref::intent(Some(pay_ref.clone()), json!({}), self.clock.now());
                let ahead = [(XrefKind::Invoice, key.as_str())];
                let found = self.get_or_intent_reading(XrefKind::Payment, &key, &intent, &ahead).await?;
                (bank, reference, caps, pay_ref, found)
            }
        };
        if let Some(done) = paid_already(existing.as_ref()) {
            return Ok(PaymentPrep::Decided(done));
        }
        let intent_written = existing.is_none();
        let facts = match self.invoice_facts(pay.invoice_id, Some(&pay.invoice_increment_id), policy, &caps).await? {
            Ok(f) => f,
            Err(Some(reason)) => {
                return Ok(PaymentPrep::Decided(skipped(&reason, "its invoice was skipped, so its payment is too")));
            }
            Err(None) => {
                return Err(Error::Pending {
                    what: format!("invoice {}", pay.invoice_increment_id),
                    message: "it is not in the ledger; this payment waits for its invoice.created".into(),
                });
            }
        };
        let date = policy.local_date(pay.captured_at, &reference.business.country);
        let job = Box::new(PaymentJob { key, facts, bank, pay_ref, intent_written });
        if existing.is_some() {
            let ids = [job.facts.id.as_str()];
            let lookup = TransactionLookup {
                contact_id: &job.facts.contact_id,
                reference: Some(&job.pay_ref),
                date,
                artefact_ids: &ids,
            };
            if let Some(t) = self.provider.find_transaction(TransactionKind::Payment, &lookup).await? {
                self.record_payment(&job.key, &job.facts, &t.id, &job.pay_ref, pay.amount, Some(&job.bank)).await?;
                return Ok(PaymentPrep::Decided(Handled::Synced {
                    id: t.id,
                    number: None,
                    message: Some("found in the ledger (an earlier attempt had posted it)".into()),
                }));
            }
        }
        Ok(PaymentPrep::Ready(job))
    }

    /// Writes a payment's intent (before the write), unless the read that found no entry wrote
    /// it already. An intent found (an earlier attempt's) is written again with this attempt's
    /// reference: the policy's reference may have changed since.
    pub(crate) async fn payment_intent(&self, job: &PaymentJob) -> Result<()> {
        if job.intent_written {
            return Ok(());
        }
        self.put(XrefKind::Payment, &job.key, Xref::intent(Some(job.pay_ref.clone()), json!({}), self.clock.now()))
            .await
    }

    /// Records a posted payment and says what it did.
    pub(crate) async fn payment_done(&self, job: &PaymentJob, pay: &MagentoPayment, id: String) -> Result<Handled> {
        self.record_payment(&job.key, &job.facts, &id, &job.pay_ref, pay.amount, Some(&job.bank)).await?;
        let message = (pay.amount > job.facts.outstanding).then(|| {
            format!(
                "{} received, {} allocated to the invoice, the rest left on account",
                pay.amount,
                job.facts.outstanding.max(Decimal::ZERO)
            )
        });
        Ok(Handled::Synced { id, number: None, message })
    }

    async fn record_payment(
        &self,
        key: &str,
        facts: &InvoiceFacts,
        id: &str,
        reference: &str,
        amount: Decimal,
        bank_account_id: Option<&str>,
    ) -> Result<()> {
        let allocated = amount.min(facts.outstanding).max(Decimal::ZERO);
        let now = self.clock.now();
        self.put(
            XrefKind::Payment,
            key,
            Xref::done(
                id.to_owned(),
                Some(reference.to_owned()),
                json!({"allocated": allocated.to_string(), "bank_account_id": bank_account_id}),
                now,
            ),
        )
        .await?;
        self.set_outstanding(key, facts, facts.outstanding - allocated).await
    }

    // ---- creditmemo.created ---------------------------------------------------------------

    async fn creditmemo_created(
        &self,
        event: &Event,
        memo: &MagentoCreditMemo,
        policy: &SyncPolicy,
    ) -> Result<Handled> {
        if let Some(since) = policy.sync_since.filter(|s| memo.created_at < *s) {
            return Ok(skipped(
                skip::OUTSIDE_SYNC_SINCE,
                format!("created {} before sync_since {since}", memo.created_at),
            ));
        }
        if let Some(reason) = policy.filter_skip_reason(memo.website_id.max(event.website_id), event.store_id) {
            return Ok(skipped(reason, "outside the website/store filter"));
        }
        let (reference, caps) = self.context().await?;
        if !caps.credit_notes {
            return Err(Error::Unsupported { operation: "credit notes".into(), provider: self.provider.name() });
        }
        let key = memo.magento_id.to_string();
        let doc_ref = self.reference_of(policy, &memo.increment_id, &caps);
        // Every entry the steps below may read, in one store call inside a run (kept for the run,
        // so that each of those reads costs nothing more): the credit note's, its allocation's and
        // refund's, the credited invoice's and its payment's, the lines' items. Outside a run (the
        // batched path) nothing would keep them: each step reads its own.
        if HeldXrefs::current().is_some() {
            let invoice_key = memo.invoice_id.map(|id| id.to_string());
            let mut ahead = vec![
                (XrefKind::CreditNote, key.as_str()),
                (XrefKind::Allocation, key.as_str()),
                (XrefKind::Refund, key.as_str()),
            ];
            if let Some(k) = &invoice_key {
                ahead.extend([(XrefKind::Invoice, k.as_str()), (XrefKind::Payment, k.as_str())]);
            }
            if policy.sync_products {
                ahead.extend(memo.lines.iter().map(|l| (XrefKind::Item, l.sku.as_str())));
            }
            self.read_ahead(&ahead).await?;
        }
        // The credited invoice, when there is one and it is in the ledger. One that is nowhere yet
        // (its invoice.created has not come) is waited for, as a payment waits: posted before it,
        // the credit note could not be allocated and might land on another contact. One that was
        // skipped by policy (unpaid, zero value, website/store filter, cancelled) makes the
        // credit memo skipped too, with the same reason: the ledger never booked that sale, so
        // there is nothing to credit. The exception is an invoice older than `sync_since`: the
        // sale happened before the ledger was synced (and may be booked there by hand), so its
        // credit memo is posted as an offline refund, open and unallocated.
        let invoice = match memo.invoice_id {
            Some(id) => match self.invoice_facts(id, memo.invoice_increment_id.as_deref(), policy, &caps).await? {
                Ok(facts) => Some(facts),
                Err(Some(reason)) if reason != skip::OUTSIDE_SYNC_SINCE => {
                    return Ok(skipped(
                        &reason,
                        format!(
                            "its invoice {} was skipped ({reason}), so the credit memo is not posted either",
                            memo.invoice_increment_id.as_deref().unwrap_or(&id.to_string())
                        ),
                    ));
                }
                Err(Some(_outside_sync_since)) => None,
                Err(None) => {
                    return Err(Error::Pending {
                        what: format!("invoice {}", memo.invoice_increment_id.as_deref().unwrap_or(&id.to_string())),
                        message: "it is not in the ledger; this credit memo waits for its invoice.created".into(),
                    });
                }
            },
            None => None,
        };
        let mut notes = Vec::new();
        // 1. The credit note (resumable: it may be posted already).
        let existing = self.get(XrefKind::CreditNote, &key).await?;
        let (note_id, note_number, note_total, contact_id) =
            match existing.as_ref().and_then(|x| x.done_id().map(|id| (id.to_owned(), x.meta.clone()))) {
                Some((id, meta)) => (
                    id,
                    meta.get("number").and_then(Value::as_str).map(str::to_owned),
                    dec_of(&meta, "total").unwrap_or(memo.grand_total),
                    meta.get("contact_id").and_then(Value::as_str).unwrap_or_default().to_owned(),
                ),
                None => {
                    let contact_id = match &invoice {
                        Some(f) => f.contact_id.clone(),
                        None => {
                            if memo.invoice_id.is_some() {
                                notes.push(
                                    "its invoice is not in the ledger: the credit note stays open, unallocated"
                                        .to_owned(),
                                );
                            }
                            self.contact_for(
                                &memo.customer,
                                memo.currency,
                                memo.grand_total,
                                policy,
                                &reference,
                                &caps,
                                &event.idempotency_key,
                            )
                            .await?
                        }
                    };
                    let record = |doc: &DocumentRecord| {
                        json!({"contact_id": contact_id, "total": doc.total.unwrap_or(memo.grand_total).to_string(),
                           "number": doc.number, "reference": doc_ref})
                    };
                    let mut found = None;
                    if existing.is_some() || self.config.verify_before_create {
                        found = self.provider.find_document(DocumentKind::CreditNote, &doc_ref).await?;
                    }
                    let doc = match found {
                        Some(doc) => doc,
                        None => {
                            self.put(
                                XrefKind::CreditNote,
                                &key,
                                Xref::intent(Some(doc_ref.clone()), json!({}), self.clock.now()),
                            )
                            .await?;
                            let items = self.item_links(memo.lines.iter().map(|l| l.sku.as_str()), policy).await?;
                            self.provider
                                .post_credit_note(&CreditNoteRequest {
                                    memo,
                                    policy,
                                    contact_id: &contact_id,
                                    items: &items,
                                    invoice_addresses: invoice.as_ref().map(|f| &f.addresses),
                                    idempotency_key: &event.idempotency_key,
                                })
                                .await?
                        }
                    };
                    let now = self.clock.now();
                    self.put(
                        XrefKind::CreditNote,
                        &key,
                        Xref::done(doc.id.clone(), Some(doc_ref.clone()), record(&doc), now),
                    )
                    .await?;
                    (doc.id.clone(), doc.number.clone(), doc.total.unwrap_or(memo.grand_total), contact_id)
                }
            };
        // 2. The allocation against the invoice, when it has something outstanding.
        if let (Some(facts), Some(invoice_id)) = (&invoice, memo.invoice_id)
            && self.get(XrefKind::Allocation, &key).await?.as_ref().and_then(Xref::done_id).is_none()
        {
            let amount = note_total.min(facts.outstanding);
            if !caps.allocations {
                notes.push("the ledger business cannot allocate: the credit note stays open".into());
            } else if amount <= Decimal::ZERO {
                if !(caps.credit_note_refunds && policy.refund_paid_credit_memos) {
                    notes.push(
                        "the invoice is already settled: the credit note stays open as the customer's credit".into(),
                    );
                }
            } else if facts.contact_id != contact_id {
                notes.push("the credit note is not on the invoice's contact: not allocated".into());
            } else {
                let date = policy.local_date(memo.created_at, &reference.business.country);
                let ids = [facts.id.as_str(), note_id.as_str()];
                let mut allocation = None;
                if self.get(XrefKind::Allocation, &key).await?.is_some() {
                    let lookup =
                        TransactionLookup { contact_id: &contact_id, reference: None, date, artefact_ids: &ids };
                    allocation = self.provider.find_transaction(TransactionKind::Allocation, &lookup).await?;
                }
                let allocation = match allocation {
                    Some(a) => a,
                    None => {
                        self.put(XrefKind::Allocation, &key, Xref::intent(None, json!({}), self.clock.now())).await?;
                        self.provider
                            .allocate(&AllocationRequest {
                                contact_id: &contact_id,
                                invoice_id: &facts.id,
                                credit_note_id: &note_id,
                                amount,
                                date,
                                idempotency_key: &event.idempotency_key,
                            })
                            .await?
                    }
                };
                let now = self.clock.now();
                self.put(
                    XrefKind::Allocation,
                    &key,
                    Xref::done(allocation.id, None, json!({"amount": amount.to_string()}), now),
                )
                .await?;
                self.set_outstanding(&invoice_id.to_string(), facts, facts.outstanding - amount).await?;
                notes.push(format!(
                    "allocated {amount} against invoice {}",
                    memo.invoice_increment_id.as_deref().unwrap_or("?")
                ));
            }
        }
        // 3. What no allocation settled, on a ledger that refunds (Sage Standard and Plus, Xero)
        //    and with `refund_paid_credit_memos` on: the customer got it back in cash, so the
        //    credit note is refunded from the bank account the invoice was paid into (else the
        //    policy's default); without one, or with the setting off, it stays open as the
        //    customer's credit. Exactly once like every write: an intent first, and a look-up by
        //    reference before any second refund.
        if let (Some(facts), Some(invoice_id), true) =
            (&invoice, memo.invoice_id, caps.credit_note_refunds && policy.refund_paid_credit_memos)
            && self.get(XrefKind::Refund, &key).await?.as_ref().and_then(Xref::done_id).is_none()
        {
            let allocation = self.get(XrefKind::Allocation, &key).await?;
            let allocated =
                allocation.as_ref().filter(|x| x.done_id().is_some()).and_then(|x| dec_of(&x.meta, "amount"));
            let left = note_total - allocated.unwrap_or_default();
            if left > Decimal::ZERO && facts.contact_id == contact_id {
                let paid_into = self
                    .get(XrefKind::Payment, &invoice_id.to_string())
                    .await?
                    .and_then(|x| x.meta.get("bank_account_id").and_then(Value::as_str).map(str::to_owned));
                match paid_into.or_else(|| policy.default_bank_account_id.clone()) {
                    None => notes.push(format!(
                        "{left} not refunded: no bank account (the invoice's payment was not synced and there is no default_bank_account_id); the credit note stays open"
                    )),
                    Some(bank) => {
                        let date = policy.local_date(memo.created_at, &reference.business.country);
                        let ids = [note_id.as_str()];
                        let mut refund = None;
                        if self.get(XrefKind::Refund, &key).await?.is_some() {
                            let lookup = TransactionLookup {
                                contact_id: &contact_id,
                                reference: Some(&doc_ref),
                                date,
                                artefact_ids: &ids,
                            };
                            refund = self.provider.find_transaction(TransactionKind::Refund, &lookup).await?;
                        }
                        let refund = match refund {
                            Some(r) => r,
                            None => {
                                self.put(
                                    XrefKind::Refund,
                                    &key,
                                    Xref::intent(Some(doc_ref.clone()), json!({}), self.clock.now()),
                                )
                                .await?;
                                self.provider
                                    .refund_credit_note(&RefundRequest {
                                        contact_id: &contact_id,
                                        credit_note_id: &note_id,
                                        bank_account_id: &bank,
                                        amount: left,
                                        date,
                                        reference: &doc_ref,
                                        base_to_order_rate: memo.base_to_order_rate,
                                        currency: Some(memo.currency),
                                        idempotency_key: &event.idempotency_key,
                                    })
                                    .await?
                            }
                        };
                        let now = self.clock.now();
                        self.put(
                            XrefKind::Refund,
                            &key,
                            Xref::done(
                                refund.id,
                                Some(doc_ref.clone()),
                                json!({"amount": left.to_string(), "bank_account_id": bank}),
                                now,
                            ),
                        )
                        .await?;
                        notes.push(format!("refunded {left} from {bank}"));
                    }
                }
            }
        }
        Ok(Handled::Synced { id: note_id, number: note_number, message: (!notes.is_empty()).then(|| notes.join("; ")) })
    }

    // ---- customer.upserted ----------------------------------------------------------------

    async fn customer_upserted(&self, event: &Event, c: &MagentoContact, policy: &SyncPolicy) -> Result<Handled> {
        if let Some(reason) = policy.filter_skip_reason(c.website_id.max(event.website_id), event.store_id)
            && reason == skip::FILTERED_WEBSITE
        {
            return Ok(skipped(reason, "outside the website filter"));
        }
        let (reference, caps) = self.context().await?;
        let subject = ContactSubject::of(c);
        let fingerprint = crate::identity::sha256_hex(&serde_json::to_string(c).unwrap_or_default());
        let variants = self.list_xrefs(XrefKind::Contact, &format!("{}:", subject.xref_key())).await?;
        if variants.is_empty() {
            // None listed: the base currency's entry is none either (its key has the prefix), and
            // the run knows it (the contact's resolution below reads it, then its record).
            if let Some(h) = HeldXrefs::current() {
                h.remember(XrefKind::Contact, &contact_key(&subject, reference.business.base_currency), None);
            }
            // Variants in other currencies are created when a document in that currency comes.
            let base = reference.business.base_currency;
            let id = self
                .contact_for(
                    c,
                    base,
                    Decimal::MAX,
                    &SyncPolicy { b2c_consolidation: Default::default(), ..policy.clone() },
                    &reference,
                    &caps,
                    &event.idempotency_key,
                )
                .await?;
            let key = contact_key(&subject, base);
            if let Some(mut x) = self.get(XrefKind::Contact, &key).await? {
                x.meta["fingerprint"] = Value::String(fingerprint);
                self.put(XrefKind::Contact, &key, x).await?;
            }
            return Ok(Handled::Synced { id, number: None, message: None });
        }
        let mut first = None;
        let mut updated = 0;
        for (key, x) in &variants {
            let Some(id) = x.done_id() else { continue };
            first.get_or_insert_with(|| id.to_owned());
            if x.meta.get("fingerprint").and_then(Value::as_str) == Some(fingerprint.as_str()) {
                continue;
            }
            let currency = key
                .rsplit(':')
                .next()
                .and_then(|c| crate::money::parse_currency(c).ok())
                .unwrap_or(reference.business.base_currency);
            let reference_code = x.reference.clone().unwrap_or_default();
            self.provider
                .update_contact(
                    id,
                    &ContactRequest {
                        contact: ContactFor::Customer(c),
                        currency,
                        reference: &reference_code,
                        policy,
                        idempotency_key: None,
                    },
                )
                .await?;
            let mut meta = x.meta.clone();
            meta["fingerprint"] = Value::String(fingerprint.clone());
            self.put(XrefKind::Contact, key, Xref { meta, updated_at: self.clock.now(), ..x.clone() }).await?;
            updated += 1;
        }
        // The customer's contact is its base-currency variant (what the first upsert reported),
        // whatever order the variants' keys sort in.
        let base_key = contact_key(&subject, reference.business.base_currency);
        let base_id = variants.iter().find(|(k, _)| *k == base_key).and_then(|(_, x)| x.done_id()).map(str::to_owned);
        let id = base_id.or(first).ok_or_else(|| Error::internal("contact variants without ids"))?;
        Ok(Handled::Synced {
            id,
            number: None,
            message: Some(if updated == 0 {
                "unchanged since the last sync; no write".into()
            } else {
                format!("{updated} contact variant(s) updated")
            }),
        })
    }

    // ---- product.upserted -----------------------------------------------------------------

    /// The ledger item of a product this crate has not recorded yet: created, or an existing one
    /// adopted (and updated to Magento's details). True when it was created now.
    ///
    /// On a ledger that refuses a taken code (`Capabilities::unique_item_code`, unless
    /// `EngineConfig::verify_before_create` asks to look everything up first) the item is
    /// created first — one request for a new product — and looked up only when the ledger
    /// refuses its code as taken; elsewhere it is looked up first. The look-up applies the
    /// provider's adoption rules either way: an inactive or deleted item is never adopted (Sage
    /// R3: the look-up answers the operator's action instead). A re-sent create carries the same
    /// idempotency key, so the ledger dedupes it or refuses it as taken (then it is adopted).
    ///
    /// `intent_stored`: the item's intent was written by the caller's read of its entry
    /// ([`get_or_intent`](Self::get_or_intent)), so it is not written again before the create.
    async fn resolve_item(
        &self,
        request: &ItemRequest<'_>,
        unique_code: bool,
        intent_stored: bool,
    ) -> Result<(ItemRecord, bool)> {
        let p = request.product;
        let create_first = unique_code && !self.config.verify_before_create;
        if !create_first && let Some(found) = self.provider.find_item(request.kind, &p.sku).await? {
            self.provider.update_item(&found.id, request).await?;
            return Ok((found, false));
        }
        if !intent_stored {
            self.put(XrefKind::Item, &p.sku, Xref::intent(Some(p.sku.clone()), json!({}), self.clock.now())).await?;
        }
        match self.provider.create_item(request).await {
            Ok(record) => Ok((record, true)),
            Err(e) if create_first && is_item_code_taken(&e) => {
                match self.provider.find_item(request.kind, &p.sku).await? {
                    Some(found) => {
                        tracing::info!(sku = %p.sku, "the item code is taken by an existing item: adopted");
                        self.provider.update_item(&found.id, request).await?;
                        Ok((found, false))
                    }
                    None => Err(Error::invalid(
                        "item",
                        "item_code",
                        format!(
                            "the ledger refuses the code {} as taken, yet lists no usable {} holding it (a deleted item, or an item of another kind, may hold it); free the code in the ledger or give the Magento product another SKU",
                            p.sku,
                            request.kind.as_str().replace('_', " ")
                        ),
                    )),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn product_upserted(&self, event: &Event, p: &MagentoProduct, policy: &SyncPolicy) -> Result<Handled> {
        if !policy.sync_products {
            return Ok(skipped(skip::PRODUCTS_DISABLED, "sync_products is off"));
        }
        if !policy.website_filter.is_empty() && !policy.website_filter.iter().any(|w| p.on_website(*w)) {
            return Ok(skipped(skip::FILTERED_WEBSITE, "the product is on none of the filtered websites"));
        }
        let mut kind = match item_kind(p, policy) {
            Ok(k) => k,
            Err(reason) => {
                return Ok(skipped(
                    reason,
                    format!("product type `{}` is not synced; its child simples sync on their own", p.product_type),
                ));
            }
        };
        let (_, caps) = self.context().await?;
        if !caps.products {
            return Err(Error::Unsupported {
                operation: "products on this ledger subscription".into(),
                provider: self.provider.name(),
            });
        }
        let mut notes = Vec::new();
        if kind == ItemKind::StockItem && !caps.stock {
            kind = ItemKind::Product;
            notes.push("the ledger business has no stock: posted as a product".to_owned());
        }
        let fingerprint =
            crate::identity::sha256_hex(&format!("{}|{}|{:?}|{:?}|{}", p.sku, p.name, p.price, p.cost, kind.as_str()));
        let request = ItemRequest { product: p, kind, policy, idempotency_key: Some(&event.idempotency_key) };
        // The item's entry read, and its intent written when it has none, in one call: a new
        // product costs one round trip to the store before its create, not two. An item found
        // and adopted after that (a ledger looked up first) has its intent replaced by the done
        // record at the run's finish, as a created one does.
        let intent = Xref::intent(Some(p.sku.clone()), json!({}), self.clock.now());
        let existing = self.get_or_intent(XrefKind::Item, &p.sku, &intent).await?;
        let mut created_quantity = None;
        let item_id = match existing.as_ref().and_then(|x| x.done_id().map(|id| (id.to_owned(), x.meta.clone()))) {
            Some((id, meta)) => {
                if meta.get("fingerprint").and_then(Value::as_str) != Some(fingerprint.as_str()) {
                    self.provider.update_item(&id, &request).await?;
                    notes.push("item updated".into());
                }
                id
            }
            None => {
                let (record, created) = self.resolve_item(&request, caps.unique_item_code, existing.is_none()).await?;
                if !created {
                    notes.push("adopted the existing item".into());
                }
                // A created item's answer carries its quantity (0 for a new one): no read back.
                // Not after an earlier attempt (an intent is on record): the ledger may have
                // replayed that attempt's answer (native idempotency) while a movement posted
                // since changed the quantity, so it is read.
                created_quantity = if created && existing.is_none() { record.quantity_in_stock } else { None };
                record.id
            }
        };
        let now = self.clock.now();
        self.put(
            XrefKind::Item,
            &p.sku,
            Xref::done(item_id.clone(), Some(p.sku.clone()), json!({"kind": kind, "fingerprint": fingerprint}), now),
        )
        .await?;
        // Stock: Magento is the truth; one movement makes the ledger match.
        if kind == ItemKind::StockItem
            && policy.sync_stock
            && let Some(target) = p.stock_qty
        {
            let current = match created_quantity {
                Some(q) => q,
                None => self.provider.get_item(kind, &item_id).await?.quantity_in_stock.unwrap_or_default(),
            };
            if current != target {
                self.provider
                    .post_stock_movement(&StockMovementRequest {
                        item_id: &item_id,
                        product: p,
                        ledger_quantity: current,
                        date: now.date_naive(),
                        idempotency_key: Some(&event.idempotency_key),
                    })
                    .await?;
                notes.push(format!("stock {} → {}", current.normalize(), target.normalize()));
            }
        }
        Ok(Handled::Synced { id: item_id, number: None, message: (!notes.is_empty()).then(|| notes.join("; ")) })
    }
}

/// An invoice's policy checks (P1–P5, cancelled): `Some` when the event is skipped. No I/O.
fn invoice_skip(event: &Event, inv: &MagentoInvoice, policy: &SyncPolicy) -> Option<Handled> {
    if inv.state == InvoiceState::Cancelled {
        return Some(skipped(skip::CANCELLED_INVOICE, "cancelled invoices are never posted"));
    }
    let paid_at_creation = inv.state == InvoiceState::Paid || event.payload.get("paid") == Some(&Value::Bool(true));
    if !policy.sync_unpaid_invoices && !paid_at_creation {
        return Some(skipped(
            skip::UNPAID_INVOICE,
            "sync_unpaid_invoices is off and the invoice was not paid at creation",
        ));
    }
    if !policy.sync_zero_value_invoices && inv.is_zero_value() {
        return Some(skipped(skip::ZERO_VALUE_INVOICE, "a zero-value invoice with sync_zero_value_invoices off"));
    }
    if let Some(since) = policy.sync_since.filter(|s| inv.created_at < *s) {
        return Some(skipped(
            skip::OUTSIDE_SYNC_SINCE,
            format!("created {} before sync_since {since}", inv.created_at),
        ));
    }
    policy
        .filter_skip_reason(inv.website_id.max(event.website_id), inv.store_id.max(event.store_id))
        .map(|reason| skipped(reason, "outside the website/store filter"))
}

/// A payment whose entry says it is in the ledger: synced, with no new write.
fn paid_already(existing: Option<&Xref>) -> Option<Handled> {
    existing.and_then(Xref::done_id).map(|id| Handled::Synced {
        id: id.to_owned(),
        number: None,
        message: Some("already in the ledger; no new write".into()),
    })
}

/// Synced, with no new write, when the invoice's cross-reference says it is in the ledger.
fn already_posted(existing: Option<&Xref>) -> Option<Handled> {
    let x = existing?;
    let (id, _) = InvoiceFacts::usable(x)?;
    Some(Handled::Synced {
        id: id.to_owned(),
        number: x.meta.get("number").and_then(Value::as_str).map(str::to_owned),
        message: Some("already in the ledger (cross-reference); no new write".into()),
    })
}
