//! Accounting providers: the ledgers the crate posts to, behind one provider-neutral trait.
//!
//! | provider | module | feature |
//! |---|---|---|
//! | Sage Business Cloud Accounting v3.1 | [`sage`] | always |
//! | Xero Accounting API 2.0 | `xero` | `xero` |
//! | In-memory reference ledger | [`memory`] | always |
//!
//! # Writing a provider
//!
//! Implement [`AccountingProvider`]: a handful of primitives over provider-neutral types
//! ([`types`]). Do the provider's own mapping inside (Sage: [`sage::transform`]); report what the
//! connected business can do through [`Capabilities`] instead of failing at run time; map every
//! failure to [`crate::Error`] with its class. Then run the public conformance suite
//! ([`conformance`], feature `conformance`) against a fresh test business: every behaviour the
//! sync engine relies on is one async function there. The in-memory provider
//! ([`memory::InMemoryProvider`]) is the reference implementation and passes it.
//!
//! The trait is object safe (`Arc<dyn AccountingProvider>`) and implemented for `Arc<T>` and
//! `Box<T>`. Conveniences built from the primitives live in [`AccountingProviderExt`], implemented
//! for every provider.

#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod listing;
pub mod memory;
pub mod sage;
pub mod stored;
pub mod types;
#[cfg(feature = "xero")]
#[cfg_attr(docsrs, doc(cfg(feature = "xero")))]
pub mod xero;

use std::{fmt, sync::Arc};

use async_trait::async_trait;
use chrono::NaiveDate;

use crate::{
    error::{Error, Result},
    identity::ContactSubject,
    plan::DocumentKind,
    reference::ReferenceData,
};
pub use listing::{EntryKind, LedgerEntry};
pub use types::{
    AllocationRequest, Capabilities, ContactFor, ContactRecord, ContactRequest, CreditNoteRequest, DocumentRecord,
    InvoiceRequest, ItemKind, ItemLink, ItemRecord, ItemRequest, PaymentRequest, RefundRequest, StockMovementRequest,
    TransactionRecord,
};

/// Payment or allocation, for [`AccountingProvider::find_transaction`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TransactionKind {
    /// A customer receipt.
    Payment,
    /// A credit-note allocation.
    Allocation,
    /// A cash refund of a credit note.
    Refund,
}

/// What identifies a payment or allocation posted earlier, for recovery after a crash or an
/// answer whose outcome is unknown.
#[derive(Debug, Clone, Copy)]
pub struct TransactionLookup<'a> {
    /// The contact it was posted on.
    pub contact_id: &'a str,
    /// Its reference, when it has one (payments).
    pub reference: Option<&'a str>,
    /// Its date.
    pub date: NaiveDate,
    /// The documents it settles (invoice; invoice and credit note).
    pub artefact_ids: &'a [&'a str],
}

/// A ledger the sync posts to. See the [module docs](self) for how to write one.
///
/// Every method takes provider-neutral types; every error is a [`crate::Error`] whose
/// [`code`](crate::Error::code) and [`is_retryable`](crate::Error::is_retryable) the engine acts
/// on. A write whose outcome is unknown must not be retried blindly by the provider: it looks the
/// record up first (or relies on the ledger's native idempotency).
#[async_trait]
pub trait AccountingProvider: fmt::Debug + Send + Sync + 'static {
    /// The provider's name in outcomes and callbacks (`sage_accounting`).
    fn name(&self) -> &'static str;

    /// What the connected business supports.
    async fn capabilities(&self) -> Result<Capabilities>;

    /// The business's reference data, cached; `refresh` forces a new fetch.
    async fn reference_data(&self, refresh: bool) -> Result<Arc<ReferenceData>>;

    /// The contact holding exactly `reference`, if any.
    async fn find_contact(&self, reference: &str) -> Result<Option<ContactRecord>>;

    /// Creates a contact.
    async fn create_contact(&self, request: &ContactRequest<'_>) -> Result<ContactRecord>;

    /// Updates a contact's name, e-mail and addresses.
    async fn update_contact(&self, id: &str, request: &ContactRequest<'_>) -> Result<ContactRecord>;

    /// The item of `kind` with code `code`, if any.
    async fn find_item(&self, kind: ItemKind, code: &str) -> Result<Option<ItemRecord>>;

    /// An item by id (with its current stock quantity).
    async fn get_item(&self, kind: ItemKind, id: &str) -> Result<ItemRecord>;

    /// Creates an item.
    async fn create_item(&self, request: &ItemRequest<'_>) -> Result<ItemRecord>;

    /// Updates an item's description, prices and accounts (never its stock level).
    async fn update_item(&self, id: &str, request: &ItemRequest<'_>) -> Result<ItemRecord>;

    /// Posts the stock movement that makes the ledger match Magento; `None` when they already
    /// match.
    async fn post_stock_movement(&self, request: &StockMovementRequest<'_>) -> Result<Option<TransactionRecord>>;

    /// Posts a sales invoice (outstanding).
    async fn post_invoice(&self, request: &InvoiceRequest<'_>) -> Result<DocumentRecord>;

    /// Posts a sales credit note on the credited invoice's contact.
    async fn post_credit_note(&self, request: &CreditNoteRequest<'_>) -> Result<DocumentRecord>;

    /// The document of `kind` holding exactly `reference`, if any (voided ones included).
    async fn find_document(&self, kind: DocumentKind, reference: &str) -> Result<Option<DocumentRecord>>;

    /// A document by id (with its outstanding amount).
    async fn get_document(&self, kind: DocumentKind, id: &str) -> Result<DocumentRecord>;

    /// Voids a document with a reason.
    async fn void_document(&self, kind: DocumentKind, id: &str, reason: &str) -> Result<()>;

    /// Posts a customer receipt allocated to its invoice.
    async fn post_payment(&self, request: &PaymentRequest<'_>) -> Result<TransactionRecord>;

    /// Allocates a credit note against an invoice.
    async fn allocate(&self, request: &AllocationRequest<'_>) -> Result<TransactionRecord>;

    /// A payment, allocation or refund posted earlier, if any.
    async fn find_transaction(
        &self,
        kind: TransactionKind,
        lookup: &TransactionLookup<'_>,
    ) -> Result<Option<TransactionRecord>>;

    // ---- batch forms ------------------------------------------------------------------------
    //
    // A ledger that takes several records in one request (`Capabilities::max_batch` > 1)
    // overrides these; the defaults make one call per item, so a single-document ledger (Sage,
    // the memory ledger) keeps one request per record. Every batch answers one result per item,
    // in the order of the input: a bad item never hides the good ones. A provider whose batch
    // answer is lost (a timeout, a 5xx) must recover each item by looking it up before sending it
    // again, exactly as for a single write.

    /// The contacts holding exactly each of `references` (one answer per reference, in order).
    ///
    /// # Errors
    /// The ledger's errors for the whole look-up.
    async fn find_contacts(&self, references: &[&str]) -> Result<Vec<Option<ContactRecord>>> {
        let mut out = Vec::with_capacity(references.len());
        for reference in references {
            out.push(self.find_contact(reference).await?);
        }
        Ok(out)
    }

    /// Creates several contacts: one result per request, in order.
    async fn create_contacts(&self, requests: &[ContactRequest<'_>]) -> Vec<Result<ContactRecord>> {
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            out.push(self.create_contact(request).await);
        }
        out
    }

    /// Posts several invoices: one result per request, in order.
    async fn post_invoices(&self, requests: &[InvoiceRequest<'_>]) -> Vec<Result<DocumentRecord>> {
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            out.push(self.post_invoice(request).await);
        }
        out
    }

    /// Posts several credit notes: one result per request, in order.
    async fn post_credit_notes(&self, requests: &[CreditNoteRequest<'_>]) -> Vec<Result<DocumentRecord>> {
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            out.push(self.post_credit_note(request).await);
        }
        out
    }

    /// Posts several payments: one result per request, in order.
    async fn post_payments(&self, requests: &[PaymentRequest<'_>]) -> Vec<Result<TransactionRecord>> {
        let mut out = Vec::with_capacity(requests.len());
        for request in requests {
            out.push(self.post_payment(request).await);
        }
        out
    }

    /// Refunds what is left of a credit note as cash (`Capabilities::credit_note_refunds`).
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default.
    async fn refund_credit_note(&self, request: &RefundRequest<'_>) -> Result<TransactionRecord> {
        let _ = request;
        Err(Error::Unsupported { operation: "credit note refunds".into(), provider: self.name() })
    }

    /// Every record of `kind` dated from `from` to `to` (both included), read back in pages
    /// within the provider's rate limit, for reconciliation ([`crate::reconcile`]). Voided
    /// documents may be listed with [`LedgerEntry::voided`] set.
    ///
    /// # Errors
    /// [`Error::Unsupported`] by default (a ledger that cannot list its records); the ledger's
    /// errors.
    async fn list_entries(&self, kind: EntryKind, from: NaiveDate, to: NaiveDate) -> Result<Vec<LedgerEntry>> {
        let _ = (kind, from, to);
        Err(Error::Unsupported { operation: "listing records for reconciliation".into(), provider: self.name() })
    }
}

macro_rules! forward_provider {
    ($ty:ty) => {
        #[async_trait]
        #[deny(clippy::missing_trait_methods)]
        impl<T: AccountingProvider + ?Sized> AccountingProvider for $ty {
            fn name(&self) -> &'static str {
                (**self).name()
            }
            async fn capabilities(&self) -> Result<Capabilities> {
                (**self).capabilities().await
            }
            async fn reference_data(&self, refresh: bool) -> Result<Arc<ReferenceData>> {
                (**self).reference_data(refresh).await
            }
            async fn find_contact(&self, reference: &str) -> Result<Option<ContactRecord>> {
                (**self).find_contact(reference).await
            }
            async fn create_contact(&self, request: &ContactRequest<'_>) -> Result<ContactRecord> {
                (**self).create_contact(request).await
            }
            async fn update_contact(&self, id: &str, request: &ContactRequest<'_>) -> Result<ContactRecord> {
                (**self).update_contact(id, request).await
            }
            async fn find_item(&self, kind: ItemKind, code: &str) -> Result<Option<ItemRecord>> {
                (**self).find_item(kind, code).await
            }
            async fn get_item(&self, kind: ItemKind, id: &str) -> Result<ItemRecord> {
                (**self).get_item(kind, id).await
            }
            async fn create_item(&self, request: &ItemRequest<'_>) -> Result<ItemRecord> {
                (**self).create_item(request).await
            }
            async fn update_item(&self, id: &str, request: &ItemRequest<'_>) -> Result<ItemRecord> {
                (**self).update_item(id, request).await
            }
            async fn post_stock_movement(
                &self,
                request: &StockMovementRequest<'_>,
            ) -> Result<Option<TransactionRecord>> {
                (**self).post_stock_movement(request).await
            }
            async fn post_invoice(&self, request: &InvoiceRequest<'_>) -> Result<DocumentRecord> {
                (**self).post_invoice(request).await
            }
            async fn post_credit_note(&self, request: &CreditNoteRequest<'_>) -> Result<DocumentRecord> {
                (**self).post_credit_note(request).await
            }
            async fn find_document(&self, kind: DocumentKind, reference: &str) -> Result<Option<DocumentRecord>> {
                (**self).find_document(kind, reference).await
            }
            async fn get_document(&self, kind: DocumentKind, id: &str) -> Result<DocumentRecord> {
                (**self).get_document(kind, id).await
            }
            async fn void_document(&self, kind: DocumentKind, id: &str, reason: &str) -> Result<()> {
                (**self).void_document(kind, id, reason).await
            }
            async fn post_payment(&self, request: &PaymentRequest<'_>) -> Result<TransactionRecord> {
                (**self).post_payment(request).await
            }
            async fn allocate(&self, request: &AllocationRequest<'_>) -> Result<TransactionRecord> {
                (**self).allocate(request).await
            }
            async fn find_transaction(
                &self,
                kind: TransactionKind,
                lookup: &TransactionLookup<'_>,
            ) -> Result<Option<TransactionRecord>> {
                (**self).find_transaction(kind, lookup).await
            }
            async fn find_contacts(&self, references: &[&str]) -> Result<Vec<Option<ContactRecord>>> {
                (**self).find_contacts(references).await
            }
            async fn create_contacts(&self, requests: &[ContactRequest<'_>]) -> Vec<Result<ContactRecord>> {
                (**self).create_contacts(requests).await
            }
            async fn post_invoices(&self, requests: &[InvoiceRequest<'_>]) -> Vec<Result<DocumentRecord>> {
                (**self).post_invoices(requests).await
            }
            async fn post_credit_notes(&self, requests: &[CreditNoteRequest<'_>]) -> Vec<Result<DocumentRecord>> {
                (**self).post_credit_notes(requests).await
            }
            async fn post_payments(&self, requests: &[PaymentRequest<'_>]) -> Vec<Result<TransactionRecord>> {
                (**self).post_payments(requests).await
            }
            async fn refund_credit_note(&self, request: &RefundRequest<'_>) -> Result<TransactionRecord> {
                (**self).refund_credit_note(request).await
            }
            async fn list_entries(&self, kind: EntryKind, from: NaiveDate, to: NaiveDate) -> Result<Vec<LedgerEntry>> {
                (**self).list_entries(kind, from, to).await
            }
        }
    };
}

forward_provider!(Arc<T>);
forward_provider!(Box<T>);

// Compile-time check that the trait stays object safe.
fn _object_safe(_: &dyn AccountingProvider) {}

/// The outcome of [`AccountingProviderExt::resolve_contact`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedContact {
    /// The contact.
    pub record: ContactRecord,
    /// True when it was created now; false when an existing one (possibly Byte8's) was adopted.
    pub created: bool,
}

/// Conveniences built from the primitives, implemented for every provider.
#[async_trait]
pub trait AccountingProviderExt: AccountingProvider {
    /// Finds or creates the contact of a (subject, currency), trying `candidates` in order
    /// ([`crate::identity::reference_candidates`]):
    ///
    /// - a contact holding the candidate in the same currency (or with no currency reported) is
    ///   adopted — for a guest, only when its e-mail is the guest's (9 hex characters of a hash
    ///   can collide);
    /// - a contact holding it in another currency, or another guest's, means the candidate is
    ///   taken: try the next;
    /// - no contact: create one with this candidate; if the ledger refuses the reference as
    ///   taken (Sage keeps the reference of a soft-deleted contact reserved), try the next.
    ///
    /// # Errors
    /// The ledger's errors; [`Error::Invalid`] when every candidate is taken, with a message that
    /// tells the operator what to do.
    async fn resolve_contact(
        &self,
        subject: &ContactSubject,
        candidates: &[String],
        request: ContactRequest<'_>,
    ) -> Result<ResolvedContact> {
        let mut refused = Vec::new();
        for candidate in candidates {
            if let Some(found) = self.find_contact(candidate).await? {
                if adoptable(&found, subject, request.currency) {
                    return Ok(ResolvedContact { record: found, created: false });
                }
                refused.push(format!("{candidate} (held by another contact)"));
                continue;
            }
            let req = ContactRequest { reference: candidate, ..request };
            match self.create_contact(&req).await {
                Ok(record) => return Ok(ResolvedContact { record, created: true }),
                Err(e) if is_reference_taken(&e) => {
                    tracing::warn!(reference = %candidate, "ledger refused the contact reference as taken (a deleted contact may reserve it); trying the next candidate");
                    refused
                        .push(format!("{candidate} (reserved by the ledger, e.g. by a deleted or inactive contact)"));
                }
                Err(e) => return Err(e),
            }
        }
        Err(Error::invalid(
            "contact",
            "reference",
            format!(
                "every candidate reference is taken: {}; hard-delete the deleted contact in the ledger (or reactivate an inactive one holding the reference) or map the customer by hand",
                refused.join(", ")
            ),
        ))
    }

    /// Finds a document by reference, or posts it when there is none: a safe way to post once.
    ///
    /// # Errors
    /// The ledger's errors.
    async fn find_or_post_invoice(&self, request: &InvoiceRequest<'_>) -> Result<(DocumentRecord, bool)> {
        let max = self.capabilities().await?.max_document_reference;
        let increment_id = &request.invoice.increment_id;
        let reference = crate::plan::fit_reference(&request.policy.document_reference(increment_id), increment_id, max);
        if let Some(found) = self.find_document(DocumentKind::Invoice, &reference).await? {
            return Ok((found, false));
        }
        Ok((self.post_invoice(request).await?, true))
    }
}

impl<T: AccountingProvider + ?Sized> AccountingProviderExt for T {}

/// True when a contact found holding a candidate reference may be adopted for `subject` in
/// `currency`: the same currency (or none reported), and for a guest the same e-mail (or none
/// reported) — 9 hex characters of a hash can collide.
pub fn adoptable(found: &ContactRecord, subject: &ContactSubject, currency: crate::money::Currency) -> bool {
    let same_currency = found.currency.is_none_or(|c| c == currency);
    let same_guest = match subject {
        ContactSubject::Guest(email) => found.email.as_deref().is_none_or(|e| e.trim().eq_ignore_ascii_case(email)),
        _ => true,
    };
    same_currency && same_guest
}

/// True when a ledger refused a contact because its reference is taken.
pub fn is_reference_taken(e: &Error) -> bool {
    match e {
        Error::Rejected { errors, .. } => errors.iter().any(|fe| {
            let field = fe.field.to_lowercase();
            let msg = fe.message.to_lowercase();
            (field.contains("reference") || msg.contains("reference"))
                && (msg.contains("taken")
                    || msg.contains("already")
                    || msg.contains("unique")
                    || msg.contains("reserved")
                    || msg.contains("exists"))
        }),
        _ => false,
    }
}
