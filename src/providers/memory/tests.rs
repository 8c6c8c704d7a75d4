//! Tests of the in-memory provider: each ledger rule, refused and accepted, and the test-double
//! features. Documents come from the conformance fixture: 2 × 10.00 at 20 % plus 5.00 shipping at
//! 20 % is 20 + 4 + 5 + 1 = 30.00.

use std::{collections::BTreeMap, sync::Arc};

use rust_decimal_macros::dec;

use super::*;
use crate::{
    canonical::{MagentoContact, MagentoInvoice, MagentoPayment},
    error::ErrorCode,
    identity::ContactSubject,
    providers::{AccountingProviderExt, conformance::Fixture, is_reference_taken},
};

fn fx() -> Fixture {
    Fixture::demo_uk("memory-unit-tests")
}

fn caps(edit: impl FnOnce(&mut Capabilities)) -> Capabilities {
    let mut c = Capabilities::full();
    edit(&mut c);
    c
}

/// The messages of a `Rejected` error (panics on any other error: a test helper).
fn rejection(e: &Error) -> String {
    match e {
        Error::Rejected { provider, status, errors } => {
            assert_eq!((*provider, *status), (PROVIDER, 422));
            errors.iter().map(|fe| format!("{}: {}", fe.field, fe.message)).collect::<Vec<_>>().join("; ")
        }
        other => panic!("expected a 422 rejection, got {other:?}"),
    }
}

async fn contact(p: &InMemoryProvider, f: &Fixture, slot: &str, currency: Currency) -> (MagentoContact, ContactRecord) {
    let customer = f.customer(slot, p.reference());
    let reference = f.contact_reference(slot);
    let req = ContactRequest {
        contact: ContactFor::Customer(&customer),
        currency,
        reference: &reference,
        policy: &f.policy,
        idempotency_key: None,
    };
    let record = p.create_contact(&req).await.unwrap();
    (customer, record)
}

fn invoice_for(
    f: &Fixture,
    p: &InMemoryProvider,
    slot: &str,
    customer: &MagentoContact,
    currency: Currency,
) -> MagentoInvoice {
    f.invoice(slot, currency, customer, dec!(2), dec!(10), p.reference())
}

async fn post(p: &InMemoryProvider, f: &Fixture, inv: &MagentoInvoice, contact_id: &str) -> Result<DocumentRecord> {
    let items = BTreeMap::new();
    let key = format!("invoice.created:{}", inv.magento_id);
    p.post_invoice(&InvoiceRequest {
        invoice: inv,
        policy: &f.policy,
        contact_id,
        items: &items,
        idempotency_key: &key,
    })
    .await
}

/// A GBP contact with one posted 30.00 invoice.
async fn invoiced(p: &InMemoryProvider, slot: &str) -> (Fixture, MagentoInvoice, ContactRecord, DocumentRecord) {
    let f = fx();
    let (customer, c) = contact(p, &f, slot, Currency::GBP).await;
    let inv = invoice_for(&f, p, &format!("{slot}I"), &customer, Currency::GBP);
    let doc = post(p, &f, &inv, &c.id).await.unwrap();
    (f, inv, c, doc)
}

async fn pay(
    p: &InMemoryProvider,
    f: &Fixture,
    payment: &MagentoPayment,
    contact_id: &str,
    invoice_id: &str,
    outstanding: Option<Decimal>,
) -> Result<TransactionRecord> {
    p.post_payment(&PaymentRequest {
        payment,
        policy: &f.policy,
        contact_id,
        invoice_id,
        bank_account_id: "BANK",
        invoice_base_to_order_rate: Some(Decimal::ONE),
        outstanding,
        idempotency_key: "invoice.paid:1",
    })
    .await
}

async fn credit(
    p: &InMemoryProvider,
    f: &Fixture,
    slot: &str,
    inv: &MagentoInvoice,
    qty: Decimal,
    contact_id: &str,
) -> DocumentRecord {
    let memo = f.credit_memo(slot, inv, qty);
    let items = BTreeMap::new();
    p.post_credit_note(&CreditNoteRequest {
        memo: &memo,
        policy: &f.policy,
        contact_id,
        items: &items,
        invoice_addresses: None,
        idempotency_key: slot,
    })
    .await
    .unwrap()
}

async fn allocate(
    p: &InMemoryProvider,
    contact_id: &str,
    invoice_id: &str,
    credit_note_id: &str,
    amount: Decimal,
) -> Result<TransactionRecord> {
    p.allocate(&AllocationRequest {
        contact_id,
        invoice_id,
        credit_note_id,
        amount,
        date: fx().date,
        idempotency_key: "creditmemo.created:1",
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// Contacts

#[tokio::test]
async fn contact_ids_and_records_look_like_a_ledger() {
    let p = InMemoryProvider::demo();
    let f = fx();
    let (_, c) = contact(&p, &f, "C1", Currency::GBP).await;
    assert_eq!(c.id, "mem-contact-1");
    assert_eq!(c.reference.as_deref(), Some(f.contact_reference("C1").as_str()));
    assert_eq!(c.currency, Some(Currency::GBP));
    assert_eq!(c.name.as_deref(), Some(format!("Conformance Run {}", f.contact_reference("C1")).as_str()));
    let (_, eur) = contact(&p, &f, "C2", Currency::EUR).await;
    assert_eq!(eur.id, "mem-contact-2");
    assert!(eur.name.unwrap().ends_with(" (EUR)"));
    assert_eq!(p.find_contact(&f.contact_reference("C1")).await.unwrap().unwrap().id, c.id);
}

#[tokio::test]
async fn contact_reference_must_be_unique_short_and_present() {
    let p = InMemoryProvider::demo();
    let f = fx();
    let customer = f.customer("X", p.reference());
    let req = |reference| ContactRequest {
        contact: ContactFor::Customer(&customer),
        currency: Currency::GBP,
        reference,
        policy: &f.policy,
        idempotency_key: None,
    };
    p.create_contact(&req("M5")).await.unwrap();
    let taken = p.create_contact(&req("M5")).await.unwrap_err();
    assert!(is_reference_taken(&taken), "{taken}");
    assert!(rejection(&taken).contains("has already been taken"));
    // Exact match: a reference differing only by case is another reference.
    p.create_contact(&req("m5")).await.unwrap();
    let long = p.create_contact(&req("M123456789X")).await.unwrap_err();
    assert!(rejection(&long).contains("maximum is 10"), "{long}");
    p.create_contact(&req("M123456789")).await.unwrap();
    assert!(rejection(&p.create_contact(&req("  ")).await.unwrap_err()).contains("blank"));
    // A tighter ledger limit applies.
    let tight = InMemoryProvider::demo().with_capabilities(caps(|c| c.max_contact_reference = 4));
    assert!(tight.create_contact(&req("M1234")).await.is_err());
    assert_eq!(p.contacts().len(), 3);
}

#[tokio::test]
async fn reserved_reference_is_taken_but_not_found_and_resolve_moves_on() {
    let p = InMemoryProvider::demo();
    let f = fx();
    p.reserve_contact_reference("M5");
    assert!(p.find_contact("M5").await.unwrap().is_none());
    let customer = f.customer("X", p.reference());
    let req = ContactRequest {
        contact: ContactFor::Customer(&customer),
        currency: Currency::GBP,
        reference: "M5",
        policy: &f.policy,
        idempotency_key: None,
    };
    assert!(is_reference_taken(&p.create_contact(&req).await.unwrap_err()));
    let resolved =
        p.resolve_contact(&ContactSubject::Registered(5), &["M5".to_owned(), "M5X".to_owned()], req).await.unwrap();
    assert!(resolved.created);
    assert_eq!(resolved.record.reference.as_deref(), Some("M5X"));
    assert_eq!(p.snapshot().reserved_references, vec!["M5".to_owned()]);
}

#[tokio::test]
async fn foreign_contacts_need_multi_currency_and_a_known_currency() {
    let f = fx();
    let single = InMemoryProvider::demo().with_capabilities(caps(|c| c.multi_currency = false));
    let customer = f.customer("X", single.reference());
    let req = |currency| ContactRequest {
        contact: ContactFor::Customer(&customer),
        currency,
        reference: "M9",
        policy: &f.policy,
        idempotency_key: None,
    };
    assert!(rejection(&single.create_contact(&req(Currency::EUR)).await.unwrap_err()).contains("multi-currency"));
    single.create_contact(&req(Currency::GBP)).await.unwrap();
    let multi = InMemoryProvider::demo();
    // The demo business trades in GBP, EUR, USD, CAD and CHF only.
    assert!(rejection(&multi.create_contact(&req(Currency::JPY)).await.unwrap_err()).contains("JPY"));
    multi.create_contact(&req(Currency::EUR)).await.unwrap();
    // Multi-currency follows the business profile by default.
    let mut reference = ReferenceData::demo_uk(DateTime::<Utc>::UNIX_EPOCH);
    reference.business.multi_currency = false;
    assert!(InMemoryProvider::new(reference).create_contact(&req(Currency::EUR)).await.is_err());
}

#[tokio::test]
async fn contact_update_changes_name_and_email_not_reference_or_currency() {
    let p = InMemoryProvider::demo();
    let f = fx();
    let (mut customer, c) = contact(&p, &f, "U1", Currency::GBP).await;
    customer.company = Some("Acme &amp; Sons".into());
    customer.email = "new@example.com".into();
    let req = |currency, reference| ContactRequest {
        contact: ContactFor::Customer(&customer),
        currency,
        reference,
        policy: &f.policy,
        idempotency_key: None,
    };
    let updated = p.update_contact(&c.id, &req(Currency::GBP, "OTHER")).await.unwrap();
    assert_eq!(updated.name.as_deref(), Some("Acme & Sons"));
    assert_eq!(updated.email.as_deref(), Some("new@example.com"));
    assert_eq!(updated.reference, c.reference);
    let e = p.update_contact(&c.id, &req(Currency::EUR, "OTHER")).await.unwrap_err();
    assert!(rejection(&e).contains("cannot change"));
    let e = p.update_contact("mem-contact-99", &req(Currency::GBP, "OTHER")).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn fallback_contact_takes_the_policy_name_and_email() {
    let p = InMemoryProvider::demo();
    let f = fx();
    let req = ContactRequest {
        contact: ContactFor::Fallback,
        currency: Currency::EUR,
        reference: "WEBSALESE",
        policy: &f.policy,
        idempotency_key: None,
    };
    let c = p.create_contact(&req).await.unwrap();
    assert_eq!(c.name.as_deref(), Some("Magento Web Sales (EUR)"));
    assert_eq!(c.email.as_deref(), Some("sales@your-shop.example.com"));
    let mut policy = f.policy.clone();
    policy.b2c_consolidation.fallback_contact_email = " ".into();
    let e = p.create_contact(&ContactRequest { policy: &policy, reference: "WEBSALES", ..req }).await.unwrap_err();
    assert!(rejection(&e).contains("email"));
}

// ---------------------------------------------------------------------------------------------
// Documents

#[tokio::test]
async fn invoice_totals_the_plan_and_is_outstanding() {
    let p = InMemoryProvider::demo();
    let (f, inv, c, doc) = invoiced(&p, "D1").await;
    assert_eq!(doc.id, "mem-invoice-1");
    assert_eq!(doc.number.as_deref(), Some("SI-1"));
    assert_eq!(doc.total, Some(dec!(30)));
    assert_eq!(doc.total, Some(inv.grand_total));
    assert_eq!(doc.outstanding, Some(dec!(30)));
    assert_eq!(doc.contact_id.as_deref(), Some(c.id.as_str()));
    assert_eq!(doc.reference, Some(format!("CF-{}", inv.increment_id)));
    let stored = p.document(&doc.id).unwrap();
    assert_eq!(stored.plan.total(), dec!(30));
    assert_eq!(stored.plan.lines.len(), 1);
    assert_eq!(stored.currency, Currency::GBP);
    assert_eq!(stored.date, f.date);
    assert_eq!(p.find_document(DocumentKind::Invoice, doc.reference.as_deref().unwrap()).await.unwrap(), Some(doc));
}

#[tokio::test]
async fn document_reference_is_fitted_to_the_ledger_limit() {
    let p = InMemoryProvider::demo().with_capabilities(caps(|c| c.max_document_reference = 10));
    let f = fx();
    let (customer, c) = contact(&p, &f, "R1", Currency::GBP).await;
    let inv = invoice_for(&f, &p, "R1", &customer, Currency::GBP);
    let doc = post(&p, &f, &inv, &c.id).await.unwrap();
    // "CF-" + 8 characters = 11 > 10: the prefix is shortened, the increment id kept whole.
    assert_eq!(doc.reference, Some(format!("CF{}", inv.increment_id)));
    let (found, posted) = p
        .find_or_post_invoice(&InvoiceRequest {
            invoice: &inv,
            policy: &f.policy,
            contact_id: &c.id,
            items: &BTreeMap::new(),
            idempotency_key: "k",
        })
        .await
        .unwrap();
    assert!(!posted);
    assert_eq!(found.id, doc.id);
}

#[tokio::test]
async fn an_invalid_invoice_is_refused_before_anything_is_stored() {
    let p = InMemoryProvider::demo();
    let f = fx();
    let (customer, c) = contact(&p, &f, "B1", Currency::GBP).await;
    let mut inv = invoice_for(&f, &p, "B1", &customer, Currency::GBP);
    inv.grand_total += dec!(0.50);
    let e = post(&p, &f, &inv, &c.id).await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::Validation, "{e}");
    assert!(p.documents().is_empty());
}

#[tokio::test]
async fn invoice_must_be_in_its_contacts_currency() {
    let p = InMemoryProvider::demo();
    let f = fx();
    let (gbp_customer, gbp) = contact(&p, &f, "G1", Currency::GBP).await;
    let (eur_customer, eur) = contact(&p, &f, "E1", Currency::EUR).await;
    let e = post(&p, &f, &invoice_for(&f, &p, "X1", &gbp_customer, Currency::EUR), &gbp.id).await.unwrap_err();
    assert!(rejection(&e).contains("the contact trades in GBP"), "{e}");
    let e = post(&p, &f, &invoice_for(&f, &p, "X2", &eur_customer, Currency::GBP), &eur.id).await.unwrap_err();
    assert!(rejection(&e).contains("the contact trades in EUR"), "{e}");
    let doc = post(&p, &f, &invoice_for(&f, &p, "X3", &eur_customer, Currency::EUR), &eur.id).await.unwrap();
    assert_eq!(doc.total, Some(dec!(30)));
    assert_eq!(p.documents().len(), 1);
    // Without the lock (a ledger whose contacts trade in several currencies), it is accepted.
    let loose = InMemoryProvider::demo().with_capabilities(caps(|c| c.contact_per_currency = false));
    let (customer, c) = contact(&loose, &f, "G1", Currency::GBP).await;
    post(&loose, &f, &invoice_for(&f, &loose, "X1", &customer, Currency::EUR), &c.id).await.unwrap();
}

#[tokio::test]
async fn foreign_invoice_needs_multi_currency() {
    let p = InMemoryProvider::demo().with_capabilities(caps(|c| {
        c.multi_currency = false;
        c.contact_per_currency = false;
    }));
    let f = fx();
    let (customer, c) = contact(&p, &f, "M1", Currency::GBP).await;
    let e = post(&p, &f, &invoice_for(&f, &p, "M1", &customer, Currency::EUR), &c.id).await.unwrap_err();
    assert!(rejection(&e).contains("multi-currency"), "{e}");
}

#[tokio::test]
async fn invoice_on_an_unknown_contact_is_not_found() {
    let p = InMemoryProvider::demo();
    let f = fx();
    let customer = f.customer("N1", p.reference());
    let e = post(&p, &f, &invoice_for(&f, &p, "N1", &customer, Currency::GBP), "mem-contact-7").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
}

#[tokio::test]
async fn invoice_needs_a_sales_account_the_ledger_knows() {
    let p = InMemoryProvider::demo();
    let mut f = fx();
    let (customer, c) = contact(&p, &f, "A1", Currency::GBP).await;
    let inv = invoice_for(&f, &p, "A1", &customer, Currency::GBP);
    f.policy.default_ledger_account_id = None;
    let e = post(&p, &f, &inv, &c.id).await.unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    f.policy.default_ledger_account_id = Some("NOPE".into());
    assert!(rejection(&post(&p, &f, &inv, &c.id).await.unwrap_err()).contains("Couldn't find ledger account NOPE"));
    f.policy.default_ledger_account_id = Some("COS".into());
    assert!(rejection(&post(&p, &f, &inv, &c.id).await.unwrap_err()).contains("not visible on sales"));
    assert!(p.documents().is_empty());
}

#[tokio::test]
async fn invoice_lines_may_link_only_existing_items() {
    let p = InMemoryProvider::demo();
    let f = fx();
    let (customer, c) = contact(&p, &f, "L1", Currency::GBP).await;
    let inv = invoice_for(&f, &p, "L1", &customer, Currency::GBP);
    let sku = inv.lines[0].sku.clone();
    let mut items = BTreeMap::new();
    items.insert(sku.clone(), ItemLink { id: "mem-product-1".into(), kind: ItemKind::Product });
    let req =
        InvoiceRequest { invoice: &inv, policy: &f.policy, contact_id: &c.id, items: &items, idempotency_key: "k" };
    assert!(rejection(&p.post_invoice(&req).await.unwrap_err()).contains("Couldn't find product mem-product-1"));
    let product = crate::canonical::MagentoProduct { sku, ..f.product("P", "simple", None) };
    let item = p
        .create_item(&ItemRequest {
            product: &product,
            kind: ItemKind::Product,
            policy: &f.policy,
            idempotency_key: None,
        })
        .await
        .unwrap();
    assert_eq!(item.id, "mem-product-1");
    p.post_invoice(&req).await.unwrap();
}

#[tokio::test]
async fn credit_note_totals_the_memo_and_needs_the_capability() {
    let p = InMemoryProvider::demo();
    let (f, inv, c, _) = invoiced(&p, "K1").await;
    let cn = credit(&p, &f, "K1C", &inv, Decimal::ONE, &c.id).await;
    assert_eq!((cn.id.as_str(), cn.number.as_deref()), ("mem-credit-note-1", Some("SCN-1")));
    assert_eq!((cn.kind, cn.total, cn.outstanding), (DocumentKind::CreditNote, Some(dec!(12)), Some(dec!(12))));
    // Kinds are separate: an invoice id is not a credit note id.
    assert_eq!(
        p.get_document(DocumentKind::CreditNote, "mem-invoice-1").await.unwrap_err().code(),
        ErrorCode::NotFound
    );

    let none = InMemoryProvider::demo().with_capabilities(caps(|c| c.credit_notes = false));
    let (customer, c) = contact(&none, &f, "K2", Currency::GBP).await;
    let memo = f.credit_memo("K2C", &invoice_for(&f, &none, "K2", &customer, Currency::GBP), Decimal::ONE);
    let e = none
        .post_credit_note(&CreditNoteRequest {
            memo: &memo,
            policy: &f.policy,
            contact_id: &c.id,
            items: &BTreeMap::new(),
            invoice_addresses: None,
            idempotency_key: "k",
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unsupported { .. }), "{e}");
}

#[tokio::test]
async fn find_document_matches_exactly_and_prefers_the_live_document() {
    let p = InMemoryProvider::demo();
    let (f, inv, c, first) = invoiced(&p, "F1").await;
    let reference = first.reference.clone().unwrap();
    assert!(p.find_document(DocumentKind::Invoice, &reference[..reference.len() - 1]).await.unwrap().is_none());
    assert!(p.find_document(DocumentKind::Invoice, &format!("{reference}0")).await.unwrap().is_none());
    assert!(p.find_document(DocumentKind::CreditNote, &reference).await.unwrap().is_none());
    p.void_document(DocumentKind::Invoice, &first.id, "re-created").await.unwrap();
    assert_eq!(p.find_document(DocumentKind::Invoice, &reference).await.unwrap().unwrap().id, first.id);
    let second = post(&p, &f, &inv, &c.id).await.unwrap();
    assert_eq!(p.find_document(DocumentKind::Invoice, &reference).await.unwrap().unwrap().id, second.id);
}

#[tokio::test]
async fn void_rules() {
    let p = InMemoryProvider::demo();
    let (f, inv, c, doc) = invoiced(&p, "V1").await;
    assert!(rejection(&p.void_document(DocumentKind::Invoice, &doc.id, " ").await.unwrap_err()).contains("blank"));
    p.void_document(DocumentKind::Invoice, &doc.id, "duplicate").await.unwrap();
    let got = p.get_document(DocumentKind::Invoice, &doc.id).await.unwrap();
    assert!(got.voided);
    assert_eq!(got.outstanding, Some(Decimal::ZERO));
    assert_eq!(p.document(&doc.id).unwrap().void_reason.as_deref(), Some("duplicate"));
    assert!(
        rejection(&p.void_document(DocumentKind::Invoice, &doc.id, "again").await.unwrap_err())
            .contains("already void")
    );
    let e = pay(&p, &f, &f.payment(&inv), &c.id, &doc.id, None).await.unwrap_err();
    assert!(rejection(&e).contains(UNPAID_ONLY));
    assert_eq!(p.void_document(DocumentKind::CreditNote, &doc.id, "x").await.unwrap_err().code(), ErrorCode::NotFound);

    // A paid invoice cannot be voided until its payment is removed.
    let (f, inv, c, doc) = invoiced(&p, "V2").await;
    pay(&p, &f, &f.payment(&inv), &c.id, &doc.id, doc.outstanding).await.unwrap();
    assert!(rejection(&p.void_document(DocumentKind::Invoice, &doc.id, "x").await.unwrap_err()).contains("payments"));
}

// ---------------------------------------------------------------------------------------------
// Payments

#[tokio::test]
async fn payment_settles_the_invoice_and_is_found_again() {
    let p = InMemoryProvider::demo();
    let (f, inv, c, doc) = invoiced(&p, "P1").await;
    let payment = f.payment(&inv);
    let tx = pay(&p, &f, &payment, &c.id, &doc.id, doc.outstanding).await.unwrap();
    assert_eq!(tx.id, "mem-payment-1");
    assert_eq!(tx.reference, doc.reference);
    assert_eq!(tx.total, Some(dec!(30)));
    assert_eq!(p.get_document(DocumentKind::Invoice, &doc.id).await.unwrap().outstanding, Some(dec!(0)));
    let stored = &p.payments()[0];
    assert_eq!(stored.allocations, vec![(doc.id.clone(), dec!(30))]);
    assert_eq!((stored.on_account, stored.bank_account_id.as_str()), (dec!(0), "BANK"));

    let ids = [doc.id.as_str()];
    let lookup =
        TransactionLookup { contact_id: &c.id, reference: tx.reference.as_deref(), date: f.date, artefact_ids: &ids };
    assert_eq!(p.find_transaction(TransactionKind::Payment, &lookup).await.unwrap(), Some(tx.clone()));
    let by_artefact = TransactionLookup { reference: None, ..lookup };
    assert_eq!(p.find_transaction(TransactionKind::Payment, &by_artefact).await.unwrap(), Some(tx.clone()));
    for miss in [
        TransactionLookup { contact_id: "mem-contact-9", ..lookup },
        TransactionLookup { reference: Some("CF-OTHER"), ..lookup },
        TransactionLookup { date: f.date.succ_opt().unwrap(), ..lookup },
        TransactionLookup { reference: None, artefact_ids: &[], ..lookup },
    ] {
        assert_eq!(p.find_transaction(TransactionKind::Payment, &miss).await.unwrap(), None, "{miss:?}");
    }
    assert_eq!(p.find_transaction(TransactionKind::Allocation, &lookup).await.unwrap(), None);
}

#[tokio::test]
async fn payment_allocates_up_to_outstanding_and_leaves_the_rest_on_account() {
    let p = InMemoryProvider::demo();
    let (f, inv, c, doc) = invoiced(&p, "P2").await;
    let payment = MagentoPayment { amount: dec!(40), ..f.payment(&inv) };
    pay(&p, &f, &payment, &c.id, &doc.id, Some(dec!(30))).await.unwrap();
    let stored = &p.payments()[0];
    assert_eq!(stored.allocations, vec![(doc.id.clone(), dec!(30))]);
    assert_eq!(stored.on_account, dec!(10));
    assert_eq!(p.get_document(DocumentKind::Invoice, &doc.id).await.unwrap().outstanding, Some(dec!(0)));
}

#[tokio::test]
async fn payment_beyond_outstanding_is_refused() {
    let p = InMemoryProvider::demo();
    let (f, inv, c, doc) = invoiced(&p, "P3").await;
    // No outstanding given: the whole 40 would be allocated to a 30 invoice.
    let big = MagentoPayment { amount: dec!(40), ..f.payment(&inv) };
    assert!(rejection(&pay(&p, &f, &big, &c.id, &doc.id, None).await.unwrap_err()).contains("exceeds"));
    // Part-paid, then paid, then a fully paid invoice refuses another allocation.
    let part = MagentoPayment { amount: dec!(10), ..f.payment(&inv) };
    pay(&p, &f, &part, &c.id, &doc.id, None).await.unwrap();
    assert_eq!(p.get_document(DocumentKind::Invoice, &doc.id).await.unwrap().outstanding, Some(dec!(20)));
    let rest = MagentoPayment { amount: dec!(20), ..f.payment(&inv) };
    pay(&p, &f, &rest, &c.id, &doc.id, Some(dec!(20))).await.unwrap();
    let e = pay(&p, &f, &part, &c.id, &doc.id, None).await.unwrap_err();
    assert_eq!(rejection(&e), format!("allocated_artefacts: {UNPAID_ONLY}"));
    // Told nothing is outstanding, the receipt goes wholly on account.
    pay(&p, &f, &part, &c.id, &doc.id, Some(dec!(0))).await.unwrap();
    assert_eq!(p.payments().last().unwrap().on_account, dec!(10));
    assert_eq!(p.payments().len(), 3);
}

#[tokio::test]
async fn payment_must_match_contact_currency_bank_and_amount() {
    let p = InMemoryProvider::demo();
    let (f, inv, c, doc) = invoiced(&p, "P4").await;
    let (_, other) = contact(&p, &f, "P5", Currency::GBP).await;
    let payment = f.payment(&inv);
    assert!(rejection(&pay(&p, &f, &payment, &other.id, &doc.id, None).await.unwrap_err()).contains("another contact"));
    let eur = MagentoPayment { currency: Currency::EUR, ..payment.clone() };
    assert!(rejection(&pay(&p, &f, &eur, &c.id, &doc.id, None).await.unwrap_err()).contains("the invoice is in GBP"));
    let zero = MagentoPayment { amount: dec!(0), ..payment.clone() };
    assert!(rejection(&pay(&p, &f, &zero, &c.id, &doc.id, None).await.unwrap_err()).contains("greater than 0"));
    let bad = PaymentRequest {
        payment: &payment,
        policy: &f.policy,
        contact_id: &c.id,
        invoice_id: &doc.id,
        bank_account_id: "NOPE",
        invoice_base_to_order_rate: None,
        outstanding: None,
        idempotency_key: "k",
    };
    assert!(rejection(&p.post_payment(&bad).await.unwrap_err()).contains("bank account NOPE"));
    assert_eq!(pay(&p, &f, &payment, &c.id, "mem-invoice-9", None).await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(pay(&p, &f, &payment, "mem-contact-9", &doc.id, None).await.unwrap_err().code(), ErrorCode::NotFound);
    let invalid = MagentoPayment { magento_id: 0, ..payment };
    assert!(matches!(pay(&p, &f, &invalid, &c.id, &doc.id, None).await.unwrap_err(), Error::Invalid { .. }));
    assert!(p.payments().is_empty());
    assert_eq!(p.get_document(DocumentKind::Invoice, &doc.id).await.unwrap().outstanding, Some(dec!(30)));
}

// ---------------------------------------------------------------------------------------------
// Allocations

#[tokio::test]
async fn allocation_nets_to_zero_and_reduces_both_outstanding_amounts() {
    let p = InMemoryProvider::demo();
    let (f, inv, c, doc) = invoiced(&p, "A1").await;
    let cn = credit(&p, &f, "A1C", &inv, Decimal::ONE, &c.id).await;
    let tx = allocate(&p, &c.id, &doc.id, &cn.id, dec!(12)).await.unwrap();
    assert_eq!((tx.id.as_str(), tx.total), ("mem-allocation-1", Some(dec!(12))));
    let stored = &p.allocations()[0];
    assert_eq!(stored.artefacts, vec![(doc.id.clone(), dec!(12)), (cn.id.clone(), dec!(-12))]);
    assert_eq!(stored.artefacts.iter().map(|(_, a)| *a).sum::<Decimal>(), dec!(0));
    assert_eq!(p.get_document(DocumentKind::Invoice, &doc.id).await.unwrap().outstanding, Some(dec!(18)));
    assert_eq!(p.get_document(DocumentKind::CreditNote, &cn.id).await.unwrap().outstanding, Some(dec!(0)));
    let ids = [doc.id.as_str(), cn.id.as_str()];
    let lookup = TransactionLookup { contact_id: &c.id, reference: None, date: f.date, artefact_ids: &ids };
    assert_eq!(p.find_transaction(TransactionKind::Allocation, &lookup).await.unwrap(), Some(tx));
    let other = TransactionLookup { contact_id: "mem-contact-9", ..lookup };
    assert_eq!(p.find_transaction(TransactionKind::Allocation, &other).await.unwrap(), None);
    let none = TransactionLookup { artefact_ids: &[], ..lookup };
    assert_eq!(p.find_transaction(TransactionKind::Allocation, &none).await.unwrap(), None);
}

#[tokio::test]
async fn allocation_rules() {
    let p = InMemoryProvider::demo();
    let (f, inv, c, doc) = invoiced(&p, "A2").await;
    let small = credit(&p, &f, "A2C", &inv, Decimal::ONE, &c.id).await; // 12.00
    let big = credit(&p, &f, "A2D", &inv, dec!(3), &c.id).await; // 36.00 > 30.00
    let msg = |r: Result<TransactionRecord>| rejection(&r.unwrap_err());
    assert!(
        msg(allocate(&p, &c.id, &doc.id, &small.id, dec!(12.01)).await)
            .contains("exceeds what is outstanding on credit note")
    );
    assert!(
        msg(allocate(&p, &c.id, &doc.id, &big.id, dec!(36)).await).contains("exceeds what is outstanding on invoice")
    );
    assert!(msg(allocate(&p, &c.id, &doc.id, &small.id, dec!(0)).await).contains("greater than 0"));
    assert!(msg(allocate(&p, &c.id, &doc.id, &small.id, dec!(-5)).await).contains("greater than 0"));
    // Another contact's credit note.
    let (_, other) = contact(&p, &f, "A3", Currency::GBP).await;
    let foreign_cn = credit(&p, &f, "A3C", &inv, Decimal::ONE, &other.id).await;
    assert!(msg(allocate(&p, &c.id, &doc.id, &foreign_cn.id, dec!(1)).await).contains("another contact"));
    assert!(msg(allocate(&p, &other.id, &doc.id, &foreign_cn.id, dec!(1)).await).contains("another contact"));
    // Wrong kinds and unknown ids are not found.
    assert_eq!(allocate(&p, &c.id, &small.id, &doc.id, dec!(1)).await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(
        allocate(&p, "mem-contact-9", &doc.id, &small.id, dec!(1)).await.unwrap_err().code(),
        ErrorCode::NotFound
    );
    assert!(p.allocations().is_empty());
    // Settle the invoice: 30 = 12 + 18; then nothing more can be allocated to it.
    allocate(&p, &c.id, &doc.id, &small.id, dec!(12)).await.unwrap();
    allocate(&p, &c.id, &doc.id, &big.id, dec!(18)).await.unwrap();
    assert_eq!(
        msg(allocate(&p, &c.id, &doc.id, &big.id, dec!(1)).await),
        format!("allocated_artefacts: {UNPAID_ONLY}")
    );
    assert_eq!(p.get_document(DocumentKind::CreditNote, &big.id).await.unwrap().outstanding, Some(dec!(18)));
    // A voided credit note cannot be allocated.
    let (f, inv, c, doc) = invoiced(&p, "A4").await;
    let cn = credit(&p, &f, "A4C", &inv, Decimal::ONE, &c.id).await;
    p.void_document(DocumentKind::CreditNote, &cn.id, "wrong").await.unwrap();
    assert!(msg(allocate(&p, &c.id, &doc.id, &cn.id, dec!(1)).await).contains(UNPAID_ONLY));
}

#[tokio::test]
async fn allocations_need_the_capability() {
    let p = InMemoryProvider::demo().with_capabilities(caps(|c| c.allocations = false));
    let (f, inv, c, doc) = invoiced(&p, "A5").await;
    let cn = credit(&p, &f, "A5C", &inv, Decimal::ONE, &c.id).await;
    assert!(matches!(allocate(&p, &c.id, &doc.id, &cn.id, dec!(1)).await.unwrap_err(), Error::Unsupported { .. }));
}

// ---------------------------------------------------------------------------------------------
// Items and stock

#[tokio::test]
async fn items_are_unique_per_kind_and_code() {
    let p = InMemoryProvider::demo();
    let f = fx();
    let product = f.product("I1", "simple", None);
    let req = |kind| ItemRequest { product: &product, kind, policy: &f.policy, idempotency_key: None };
    let a = p.create_item(&req(ItemKind::Product)).await.unwrap();
    assert_eq!((a.id.as_str(), a.code.as_str(), a.quantity_in_stock), ("mem-product-1", product.sku.as_str(), None));
    assert!(rejection(&p.create_item(&req(ItemKind::Product)).await.unwrap_err()).contains("already been taken"));
    let s = p.create_item(&req(ItemKind::Service)).await.unwrap();
    assert_eq!(s.id, "mem-service-1");
    let st = p.create_item(&req(ItemKind::StockItem)).await.unwrap();
    assert_eq!((st.id.as_str(), st.quantity_in_stock), ("mem-stock-item-1", Some(dec!(0))));
    assert_eq!(p.find_item(ItemKind::Service, &product.sku).await.unwrap().unwrap().id, s.id);
    assert!(p.find_item(ItemKind::Product, &product.sku.to_lowercase()).await.unwrap().is_none());
    // Renaming another product onto a taken code is refused; its own update is fine.
    let other = f.product("I2", "simple", None);
    let b = p
        .create_item(&ItemRequest {
            product: &other,
            kind: ItemKind::Product,
            policy: &f.policy,
            idempotency_key: None,
        })
        .await
        .unwrap();
    assert!(p.update_item(&b.id, &req(ItemKind::Product)).await.is_err());
    let renamed = crate::canonical::MagentoProduct { name: "Renamed &amp; better".into(), ..product.clone() };
    let updated = p
        .update_item(
            &a.id,
            &ItemRequest { product: &renamed, kind: ItemKind::Product, policy: &f.policy, idempotency_key: None },
        )
        .await
        .unwrap();
    assert_eq!(updated, a);
    assert_eq!(p.items()[0].description, "Renamed & better");
    // Ids are per kind.
    assert_eq!(p.get_item(ItemKind::Service, &a.id).await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(p.update_item(&a.id, &req(ItemKind::Service)).await.unwrap_err().code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn items_need_accounts_and_capabilities() {
    let f = fx();
    let product = f.product("I3", "simple", Some(dec!(2)));
    let mut policy = f.policy.clone();
    policy.default_purchase_ledger_account_id = None;
    let p = InMemoryProvider::demo();
    let e = p
        .create_item(&ItemRequest {
            product: &product,
            kind: ItemKind::Product,
            policy: &policy,
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    policy.default_purchase_ledger_account_id = Some("NOPE".into());
    let e = p
        .create_item(&ItemRequest {
            product: &product,
            kind: ItemKind::Product,
            policy: &policy,
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert!(rejection(&e).contains("NOPE"));
    let req = |kind| ItemRequest { product: &product, kind, policy: &f.policy, idempotency_key: None };
    let no_stock = InMemoryProvider::demo().with_capabilities(caps(|c| c.stock = false));
    assert!(matches!(no_stock.create_item(&req(ItemKind::StockItem)).await.unwrap_err(), Error::Unsupported { .. }));
    no_stock.create_item(&req(ItemKind::Product)).await.unwrap();
    let no_items = InMemoryProvider::demo().with_capabilities(caps(|c| c.products = false));
    assert!(matches!(no_items.create_item(&req(ItemKind::Product)).await.unwrap_err(), Error::Unsupported { .. }));
}

#[tokio::test]
async fn stock_movements_apply_the_delta() {
    let p = InMemoryProvider::demo();
    let f = fx();
    let product = f.product("S1", "simple", Some(dec!(5)));
    let item = p
        .create_item(&ItemRequest {
            product: &product,
            kind: ItemKind::StockItem,
            policy: &f.policy,
            idempotency_key: None,
        })
        .await
        .unwrap();
    let move_to = |target: Option<Decimal>, held: Decimal| {
        let product = crate::canonical::MagentoProduct { stock_qty: target, ..product.clone() };
        let p = &p;
        let id = item.id.clone();
        let date = f.date;
        async move {
            p.post_stock_movement(&StockMovementRequest {
                item_id: &id,
                product: &product,
                ledger_quantity: held,
                date,
                idempotency_key: Some("product.upserted:1"),
            })
            .await
        }
    };
    let tx = move_to(Some(dec!(5)), dec!(0)).await.unwrap().unwrap();
    assert_eq!((tx.id.as_str(), tx.total), ("mem-movement-1", Some(dec!(5))));
    assert_eq!(p.get_item(ItemKind::StockItem, &item.id).await.unwrap().quantity_in_stock, Some(dec!(5)));
    assert_eq!(move_to(Some(dec!(5)), dec!(5)).await.unwrap(), None);
    assert_eq!(move_to(None, dec!(5)).await.unwrap(), None);
    move_to(Some(dec!(2.5)), dec!(5)).await.unwrap().unwrap();
    assert_eq!(p.get_item(ItemKind::StockItem, &item.id).await.unwrap().quantity_in_stock, Some(dec!(2.5)));
    let moves = p.stock_movements();
    assert_eq!(moves.iter().map(|m| m.quantity).collect::<Vec<_>>(), vec![dec!(5), dec!(-2.5)]);
    assert_eq!(moves[1].cost_price, dec!(4.50));
    assert!(moves[1].details.chars().count() <= 50, "{}", moves[1].details);
    // Out-of-range input is refused, not a panic.
    assert!(move_to(Some(dec!(5)), Decimal::MIN).await.is_err());
    assert_eq!(p.get_item(ItemKind::StockItem, &item.id).await.unwrap().quantity_in_stock, Some(dec!(2.5)));
    // Only stock items move.
    let plain = p
        .create_item(&ItemRequest {
            product: &product,
            kind: ItemKind::Product,
            policy: &f.policy,
            idempotency_key: None,
        })
        .await
        .unwrap();
    let e = p
        .post_stock_movement(&StockMovementRequest {
            item_id: &plain.id,
            product: &product,
            ledger_quantity: dec!(0),
            date: f.date,
            idempotency_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
}

#[tokio::test]
async fn unknown_ids_are_not_found() {
    let p = InMemoryProvider::demo();
    for e in [
        p.get_document(DocumentKind::Invoice, "nope").await.unwrap_err(),
        p.get_document(DocumentKind::CreditNote, "nope").await.unwrap_err(),
        p.void_document(DocumentKind::Invoice, "nope", "x").await.unwrap_err(),
        p.get_item(ItemKind::Product, "nope").await.unwrap_err(),
    ] {
        assert_eq!(e.code(), ErrorCode::NotFound, "{e}");
        assert!(e.to_string().starts_with("memory "), "{e}");
    }
}

// ---------------------------------------------------------------------------------------------
// Test-double features

#[test]
fn methods_parse_from_their_names() {
    for m in Method::ALL {
        assert_eq!(m.as_str().parse::<Method>().unwrap(), m);
        assert_eq!(m.to_string(), m.as_str());
    }
    assert_eq!(" post_invoice ".parse::<Method>().unwrap(), Method::PostInvoice);
    assert!("postInvoice".parse::<Method>().is_err());
    assert!(Method::PostPayment.is_write() && !Method::FindDocument.is_write());
}

#[tokio::test]
async fn calls_are_recorded_in_order_with_their_arguments() {
    let p = InMemoryProvider::demo();
    let (f, inv, c, doc) = invoiced(&p, "C1").await;
    let _ = p.find_contact("ZZ").await;
    let calls = p.calls();
    assert_eq!(
        calls.iter().map(Call::method).collect::<Vec<_>>(),
        vec![Method::CreateContact, Method::PostInvoice, Method::FindContact]
    );
    assert_eq!(calls[0], Call::CreateContact { reference: f.contact_reference("C1"), currency: Currency::GBP });
    assert_eq!(
        calls[1],
        Call::PostInvoice {
            contact_id: c.id.clone(),
            increment_id: inv.increment_id.clone(),
            grand_total: dec!(30),
            idempotency_key: format!("invoice.created:{}", inv.magento_id),
        }
    );
    p.clear_calls();
    assert!(p.calls().is_empty());
    // Refused calls are recorded too.
    let _ = pay(&p, &f, &MagentoPayment { amount: dec!(99), ..f.payment(&inv) }, &c.id, &doc.id, None).await;
    assert_eq!(p.calls_to(Method::PostPayment).len(), 1);
    assert!(p.payments().is_empty());
}

#[tokio::test]
async fn fail_next_fails_before_acting_once_in_order() {
    let p = InMemoryProvider::demo();
    let f = fx();
    let (customer, c) = contact(&p, &f, "I1", Currency::GBP).await;
    let inv = invoice_for(&f, &p, "I1", &customer, Currency::GBP);
    p.fail_next(Method::PostInvoice, Error::RateLimited { provider: PROVIDER, retry_after: None });
    p.fail_next(Method::PostInvoice, Error::internal("second"));
    p.fail_next(Method::FindContact, Error::internal("other method"));
    assert_eq!(post(&p, &f, &inv, &c.id).await.unwrap_err().code(), ErrorCode::RateLimited);
    assert!(p.documents().is_empty(), "a failure before acting stores nothing");
    assert_eq!(post(&p, &f, &inv, &c.id).await.unwrap_err().to_string(), "internal error: second");
    assert!(p.documents().is_empty());
    post(&p, &f, &inv, &c.id).await.unwrap();
    assert_eq!(p.documents().len(), 1);
    assert_eq!(p.calls_to(Method::PostInvoice).len(), 3);
    p.clear_failures();
    assert!(p.find_contact("x").await.is_ok(), "cleared failures do not fire");
}

#[tokio::test]
async fn fail_after_commit_acts_then_reports_an_unknown_outcome() {
    let p = InMemoryProvider::demo();
    let f = fx();
    let (customer, c) = contact(&p, &f, "I2", Currency::GBP).await;
    let inv = invoice_for(&f, &p, "I2", &customer, Currency::GBP);
    p.fail_after_commit_next(Method::PostInvoice);
    let e = post(&p, &f, &inv, &c.id).await.unwrap_err();
    assert!(e.outcome_unknown() && e.is_retryable(), "{e:?}");
    let stored = p.documents();
    assert_eq!(stored.len(), 1, "the write committed");
    // Recovery looks the document up instead of posting again: exactly once.
    let (found, posted) = p
        .find_or_post_invoice(&InvoiceRequest {
            invoice: &inv,
            policy: &f.policy,
            contact_id: &c.id,
            items: &BTreeMap::new(),
            idempotency_key: "k",
        })
        .await
        .unwrap();
    assert!(!posted);
    assert_eq!(found, stored[0].record);
    assert_eq!(p.documents().len(), 1);

    // The payment's outcome is unknown too; find_transaction recovers it.
    let doc = &stored[0].record;
    p.fail_after_commit_next_with(
        Method::PostPayment,
        Error::Provider {
            provider: PROVIDER,
            status: Some(502),
            message: "bad gateway".into(),
            retryable: true,
            source: None,
        },
    );
    let e = pay(&p, &f, &f.payment(&inv), &c.id, &doc.id, doc.outstanding).await.unwrap_err();
    assert!(e.outcome_unknown());
    let ids = [doc.id.as_str()];
    let lookup =
        TransactionLookup { contact_id: &c.id, reference: doc.reference.as_deref(), date: f.date, artefact_ids: &ids };
    assert_eq!(
        p.find_transaction(TransactionKind::Payment, &lookup).await.unwrap().unwrap().id,
        p.payments()[0].record.id
    );

    // A call refused on its own merits returns its own error and commits nothing.
    p.fail_after_commit_next(Method::PostInvoice);
    let e = post(&p, &f, &inv, "mem-contact-42").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::NotFound);
    assert_eq!(p.documents().len(), 1);
}

#[tokio::test]
async fn native_idempotency_replays_keyed_writes() {
    let f = fx();
    for (window, expected) in [(None, 2), (Some(3600), 1)] {
        let p = InMemoryProvider::demo().with_capabilities(caps(|c| c.native_idempotency_window_secs = window));
        let (customer, c) = contact(&p, &f, "K1", Currency::GBP).await;
        let inv = invoice_for(&f, &p, "K1", &customer, Currency::GBP);
        let first = post(&p, &f, &inv, &c.id).await.unwrap();
        let second = post(&p, &f, &inv, &c.id).await.unwrap();
        assert_eq!(p.documents().len(), expected, "window {window:?}");
        assert_eq!(first == second, expected == 1);
        let payment = MagentoPayment { amount: dec!(5), ..f.payment(&inv) };
        let a = pay(&p, &f, &payment, &c.id, &first.id, None).await.unwrap();
        let b = pay(&p, &f, &payment, &c.id, &first.id, None).await.unwrap();
        assert_eq!(p.payments().len(), expected);
        assert_eq!(a == b, expected == 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_of_one_reference_yield_one_contact() {
    let p = Arc::new(InMemoryProvider::demo());
    let f = Arc::new(fx());
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (p, f) = (Arc::clone(&p), Arc::clone(&f));
            tokio::spawn(async move {
                let customer = f.customer("CC", p.reference());
                p.create_contact(&ContactRequest {
                    contact: ContactFor::Customer(&customer),
                    currency: Currency::GBP,
                    reference: "M77",
                    policy: &f.policy,
                    idempotency_key: None,
                })
                .await
                .is_ok()
            })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        created += usize::from(t.await.unwrap());
    }
    assert_eq!(created, 1);
    assert_eq!(p.contacts().len(), 1);
    assert_eq!(p.calls_to(Method::CreateContact).len(), 16);
}

#[tokio::test]
async fn the_conformance_suite_passes() {
    crate::providers::conformance::run_all(&InMemoryProvider::demo(), &Fixture::demo_uk("unit-run-all")).await;
    let mut f = Fixture::demo_uk("unit-run-all-lean");
    f.foreign_currency = None;
    crate::providers::conformance::run_all(&InMemoryProvider::default(), &f).await;
}
