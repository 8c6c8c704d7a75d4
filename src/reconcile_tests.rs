//! The comparison against hand-built cases; every expected value is worked out by hand.

use rust_decimal_macros::dec;

use super::*;

fn period() -> Period {
    Period::new(NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(), NaiveDate::from_ymd_opt(2026, 3, 31).unwrap()).unwrap()
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 3, d).unwrap()
}

fn mag(kind: EntryKind, id: u64, reference: &str, currency: &str, net: Decimal, vat: Decimal) -> MagentoRecord {
    let docs = kind != EntryKind::Payment;
    MagentoRecord {
        kind,
        magento_id: id,
        increment_id: reference.to_owned(),
        reference: reference.to_owned(),
        date: day(5),
        currency: currency.to_owned(),
        net: docs.then_some(net),
        vat: docs.then_some(vat),
        gross: net + vat,
    }
}

fn led(kind: EntryKind, id: &str, reference: &str, currency: Option<&str>, net: Decimal, vat: Decimal) -> LedgerEntry {
    let docs = kind != EntryKind::Payment;
    LedgerEntry {
        kind,
        id: id.to_owned(),
        reference: Some(reference.to_owned()),
        number: None,
        date: Some(day(5)),
        currency: currency.map(str::to_owned),
        net: docs.then_some(net),
        vat: docs.then_some(vat),
        gross: net + vat,
        unallocated: Decimal::ZERO,
        voided: false,
    }
}

#[test]
fn matching_sides_are_clean_and_summed_per_currency() {
    let magento = vec![
        mag(EntryKind::Invoice, 1, "000000001", "GBP", dec!(100.00), dec!(20.00)),
        mag(EntryKind::Invoice, 2, "000000002", "EUR", dec!(50.00), dec!(9.50)),
        mag(EntryKind::CreditNote, 3, "100000001", "GBP", dec!(10.00), dec!(2.00)),
        mag(EntryKind::Payment, 1, "000000001", "GBP", dec!(120.00), Decimal::ZERO),
    ];
    let ledger = vec![
        led(EntryKind::Invoice, "a", "000000001", Some("GBP"), dec!(100.00), dec!(20.00)),
        led(EntryKind::Invoice, "b", "000000002", Some("EUR"), dec!(50.0), dec!(9.5)),
        led(EntryKind::CreditNote, "c", "100000001", Some("GBP"), dec!(10), dec!(2)),
        // A payment naming no currency is summed under its Magento record's.
        led(EntryKind::Payment, "d", "000000001", None, dec!(120.00), Decimal::ZERO),
    ];
    let r = compare(period(), &magento, &ledger, Vec::new());
    assert!(r.is_clean(), "{:?}", r.findings);
    assert_eq!(r.totals.keys().cloned().collect::<Vec<_>>(), ["EUR", "GBP"]);
    let gbp = r.totals["GBP"];
    let inv = Sums { count: 1, net: dec!(100), vat: dec!(20), gross: dec!(120) };
    let cn = Sums { count: 1, net: dec!(10), vat: dec!(2), gross: dec!(12) };
    let pay = Sums { count: 1, net: dec!(0), vat: dec!(0), gross: dec!(120) };
    assert_eq!(gbp.magento, SideTotals { invoices: inv, credit_notes: cn, payments: pay });
    assert_eq!(gbp.ledger, gbp.magento);
    let eur = r.totals["EUR"];
    assert_eq!(eur.ledger.invoices, Sums { count: 1, net: dec!(50), vat: dec!(9.5), gross: dec!(59.5) });
    assert_eq!(eur.magento.credit_notes, Sums::default());
    assert!(r.to_table().contains("No differences."));
}

#[test]
fn missing_duplicate_differing_unallocated_and_orphans_are_each_reported() {
    let magento = vec![
        mag(EntryKind::Invoice, 1, "INV1", "GBP", dec!(100.00), dec!(20.00)),
        mag(EntryKind::Invoice, 2, "INV2", "GBP", dec!(40.00), dec!(8.00)),
        mag(EntryKind::Invoice, 3, "INV3", "GBP", dec!(10.00), dec!(2.00)),
        mag(EntryKind::CreditNote, 4, "CM1", "GBP", dec!(5.00), dec!(1.00)),
        mag(EntryKind::Payment, 1, "INV1", "GBP", dec!(120.00), Decimal::ZERO),
    ];
    let mut voided = led(EntryKind::CreditNote, "v", "CM1", Some("GBP"), dec!(5), dec!(1));
    voided.voided = true;
    let mut payment = led(EntryKind::Payment, "p", "INV1", Some("GBP"), dec!(120), Decimal::ZERO);
    payment.unallocated = dec!(0.01);
    let ledger = vec![
        led(EntryKind::Invoice, "a", "INV1", Some("GBP"), dec!(100.00), dec!(20.00)),
        led(EntryKind::Invoice, "b1", "INV2", Some("GBP"), dec!(40.00), dec!(8.00)),
        led(EntryKind::Invoice, "b2", "INV2", Some("GBP"), dec!(40.00), dec!(8.00)),
        // VAT one penny short, gross too (net matches).
        led(EntryKind::Invoice, "c", "INV3", Some("GBP"), dec!(10.00), dec!(1.99)),
        voided,
        payment,
        led(EntryKind::Invoice, "z", "MANUAL-1", Some("GBP"), dec!(1.00), dec!(0.20)),
    ];
    let r = compare(period(), &magento, &ledger, Vec::new());
    let expected = vec![
        Finding::DuplicateInLedger {
            kind: EntryKind::Invoice,
            reference: "INV2".into(),
            ledger_ids: vec!["b1".into(), "b2".into()],
        },
        Finding::AmountDiffers {
            kind: EntryKind::Invoice,
            reference: "INV3".into(),
            ledger_id: "c".into(),
            amount: Amount::Vat,
            magento: dec!(2.00),
            ledger: Some(dec!(1.99)),
        },
        Finding::AmountDiffers {
            kind: EntryKind::Invoice,
            reference: "INV3".into(),
            ledger_id: "c".into(),
            amount: Amount::Gross,
            magento: dec!(12.00),
            ledger: Some(dec!(11.99)),
        },
        Finding::MissingInLedger {
            kind: EntryKind::CreditNote,
            reference: "CM1".into(),
            magento_id: 4,
            gross: dec!(6),
        },
        Finding::UnallocatedPayment { reference: Some("INV1".into()), ledger_id: "p".into(), amount: dec!(0.01) },
        Finding::NotFromRun {
            kind: EntryKind::Invoice,
            reference: Some("MANUAL-1".into()),
            ledger_id: "z".into(),
            gross: dec!(1.2),
        },
    ];
    assert_eq!(r.findings, expected);
    assert!(!r.is_clean());
    let gbp = r.totals["GBP"];
    // Magento: 120 + 48 + 12 gross of invoices; the ledger: 120 + 48 + 48 + 11.99 + 1.20.
    assert_eq!(gbp.magento.invoices, Sums { count: 3, net: dec!(150), vat: dec!(30), gross: dec!(180) });
    assert_eq!(gbp.ledger.invoices, Sums { count: 5, net: dec!(191), vat: dec!(38.19), gross: dec!(229.19) });
    // The voided credit note is not summed.
    assert_eq!(gbp.ledger.credit_notes, Sums::default());
    assert_eq!(gbp.magento.credit_notes, Sums { count: 1, net: dec!(5), vat: dec!(1), gross: dec!(6) });
    let table = r.to_table();
    assert!(table.contains("6 difference(s)"), "{table}");
    assert!(table.contains("present 2 times in ledger: invoice INV2 (b1, b2)"), "{table}");
    assert!(table.contains("VAT differs: invoice INV3 (ledger c): Magento 2.00, ledger 1.99"), "{table}");
}

#[test]
fn currency_mismatch_and_an_unnamed_orphan_currency() {
    let magento = vec![mag(EntryKind::Invoice, 1, "INV1", "GBP", dec!(10), dec!(2))];
    let ledger = vec![
        led(EntryKind::Invoice, "a", "INV1", Some("EUR"), dec!(10), dec!(2)),
        led(EntryKind::Payment, "p", "ELSE", None, dec!(3), Decimal::ZERO),
    ];
    let r = compare(period(), &magento, &ledger, Vec::new());
    assert_eq!(
        r.findings[0],
        Finding::CurrencyDiffers {
            kind: EntryKind::Invoice,
            reference: "INV1".into(),
            ledger_id: "a".into(),
            magento: "GBP".into(),
            ledger: "EUR".into()
        }
    );
    assert_eq!(r.findings.len(), 2);
    assert_eq!(r.totals["unknown"].ledger.payments.gross, dec!(3));
    assert_eq!(r.totals["EUR"].ledger.invoices.gross, dec!(12));
    assert_eq!(r.totals["GBP"].ledger.invoices.count, 0);
}

#[test]
fn a_kind_never_matches_another_kind_with_the_same_reference() {
    // The payment's reference is its invoice's: an invoice in the ledger does not satisfy it.
    let magento = vec![mag(EntryKind::Payment, 1, "INV1", "GBP", dec!(12), Decimal::ZERO)];
    let ledger = vec![led(EntryKind::Invoice, "a", "INV1", Some("GBP"), dec!(10), dec!(2))];
    let r = compare(period(), &magento, &ledger, Vec::new());
    assert!(matches!(r.findings[0], Finding::MissingInLedger { kind: EntryKind::Payment, .. }));
    assert!(matches!(r.findings[1], Finding::NotFromRun { kind: EntryKind::Invoice, .. }));
}

#[test]
fn a_period_must_not_end_before_it_starts() {
    let e = Period::new(day(2), day(1)).unwrap_err();
    assert!(e.to_string().contains("from"), "{e}");
    assert!(period().contains(day(31)) && period().contains(day(1)));
    assert!(!period().contains(NaiveDate::from_ymd_opt(2026, 4, 1).unwrap()));
}

#[test]
fn the_json_names_each_finding() {
    let r = compare(period(), &[mag(EntryKind::Invoice, 7, "INV7", "GBP", dec!(1), dec!(0.2))], &[], Vec::new());
    let v = serde_json::to_value(&r).unwrap();
    assert_eq!(v["findings"][0]["finding"], "missing_in_ledger");
    assert_eq!(v["findings"][0]["reference"], "INV7");
    assert_eq!(v["findings"][0]["kind"], "invoice");
    assert_eq!(v["totals"]["GBP"]["magento"]["invoices"]["count"], 1);
}

mod from_the_store {
    use async_trait::async_trait;
    use chrono::{TimeZone, Utc};
    use rust_decimal_macros::dec;
    use serde_json::{Value, json};

    use super::super::*;
    use crate::{
        outcome::{Outcome, SyncStatus},
        store::{AttemptRecord, Dedupe, NewRun, RunResult, Xref, memory::MemoryStore},
    };

    /// Invoice `id` dated `day` of March 2026: gross 30.00, VAT 5.00.
    fn invoice_entity(id: u64, day: u32) -> Value {
        json!({"magento_id": id, "increment_id": format!("{id:09}"), "order_id": id + 5000, "order_increment_id": format!("3{id:08}"),
            "website_id": 1, "store_id": 1, "currency": "GBP", "state": "open",
            "customer": {"magento_id": 1, "email": "c1@example.com", "first_name": "C", "last_name": "X", "website_id": 1, "addresses": []},
            "lines": [{"sku": "A-1", "name": "Widget", "qty": 2, "unit_price": "10.00", "line_subtotal": "20.00", "line_tax": "4.00", "line_total": "24.00", "tax_rate": 0.2, "product_type": "simple"}],
            "subtotal": "20.00", "tax_amount": "5.00", "shipping_amount": "5.00", "shipping_tax_amount": "1.00", "discount_amount": "0.00", "grand_total": "30.00",
            "created_at": format!("2026-03-{day:02}T09:00:00Z"), "payment_method": "braintree", "base_to_order_rate": 1})
    }

    fn line(event: &str, id: u64, entity: Option<Value>) -> String {
        let mut v = json!({"event": event, "idempotency_key": format!("{event}:{id}"), "magento_entity_id": id,
            "website_id": 1, "store_id": 1, "occurred_at": "2026-03-05T10:00:00Z", "payload": {}});
        if let Some(e) = entity {
            v["entity"] = e;
        }
        v.to_string()
    }

    async fn finished(store: &MemoryStore, event: &str, id: u64, raw: String, status: RunStatus) {
        let t = Utc.with_ymd_and_hms(2026, 3, 5, 10, 0, 0).unwrap();
        let key = format!("{event}:{id}");
        let run = NewRun {
            scope: "biz".into(),
            tenant_id: None,
            idempotency_key: key.clone(),
            event: Some(event.into()),
            magento_entity_id: Some(id),
            fingerprint: raw.clone(),
            raw,
            policy: None,
            received_at: t,
        };
        let run_id = store.enqueue(run, Dedupe::Permanent).await.unwrap().run_id();
        let claim = store.claim_run(run_id, t, t + chrono::Duration::minutes(1)).await.unwrap().unwrap().claim;
        let outcome = Outcome {
            idempotency_key: Some(key),
            event: Some(event.into()),
            entity_type: None,
            magento_entity_id: Some(id),
            provider: "memory".into(),
            sync_status: SyncStatus::Synced,
            provider_entity_id: None,
            provider_reference: None,
            skip_reason: None,
            error_code: None,
            message: None,
            last_sync_at: t,
        };
        let attempt = AttemptRecord {
            number: 1,
            started_at: t,
            finished_at: t,
            result: "synced".into(),
            error_code: None,
            message: None,
            ledger_id: None,
            exchanges: Vec::new(),
            recording: None,
            snapshot: None,
        };
        store
            .finish(run_id, claim, RunResult { status, outcome, attempt, next_attempt_at: None, xrefs: Vec::new() })
            .await
            .unwrap();
    }

    /// Serves invoice entities; fails for anything else.
    #[derive(Debug)]
    struct Source;

    #[async_trait]
    impl EntitySource for Source {
        async fn fetch(&self, event: EventKind, magento_entity_id: u64) -> Result<Entity> {
            match event {
                EventKind::InvoiceCreated => Entity::from_value(event, invoice_entity(magento_entity_id, 7)),
                _ => Err(Error::internal("Magento is down")),
            }
        }
    }

    #[tokio::test]
    async fn synced_runs_in_the_period_with_their_references_and_fetched_entities() {
        let store = MemoryStore::new();
        finished(
            &store,
            "invoice.created",
            1,
            line("invoice.created", 1, Some(invoice_entity(1, 5))),
            RunStatus::Synced,
        )
        .await;
        // Out of the period.
        finished(
            &store,
            "invoice.created",
            2,
            line("invoice.created", 2, Some(invoice_entity(2, 28))),
            RunStatus::Synced,
        )
        .await;
        // Skipped: not in the ledger, not expected there.
        finished(
            &store,
            "invoice.created",
            3,
            line("invoice.created", 3, Some(invoice_entity(3, 5))),
            RunStatus::Skipped,
        )
        .await;
        // Stored without its entity.
        finished(&store, "invoice.created", 4, line("invoice.created", 4, None), RunStatus::Synced).await;
        finished(&store, "invoice.paid", 4, line("invoice.paid", 4, None), RunStatus::Synced).await;
        // Not a document.
        finished(&store, "customer.upserted", 9, line("customer.upserted", 9, None), RunStatus::Synced).await;
        let t = Utc.with_ymd_and_hms(2026, 3, 5, 10, 0, 0).unwrap();
        store
            .put_xref(
                "biz",
                XrefKind::Invoice,
                "1",
                &Xref::done("L1".into(), Some("MAG-000000001".into()), json!({}), t),
            )
            .await
            .unwrap();
        let march =
            Period::new(NaiveDate::from_ymd_opt(2026, 3, 1).unwrap(), NaiveDate::from_ymd_opt(2026, 3, 20).unwrap())
                .unwrap();

        let (records, unreadable) = magento_records(&store, "biz", march, None).await.unwrap();
        assert_eq!(records.len(), 1);
        let r = &records[0];
        assert_eq!((r.magento_id, r.reference.as_str(), r.increment_id.as_str()), (1, "MAG-000000001", "000000001"));
        assert_eq!((r.net, r.vat, r.gross), (Some(dec!(25)), Some(dec!(5)), dec!(30)));
        assert_eq!(r.date, NaiveDate::from_ymd_opt(2026, 3, 5).unwrap());
        let keys: Vec<&str> = unreadable
            .iter()
            .map(|f| match f {
                Finding::UnreadableRun { idempotency_key, .. } => idempotency_key.as_str(),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(keys, ["invoice.created:4", "invoice.paid:4"]);

        let (records, unreadable) = magento_records(&store, "biz", march, Some(&Source)).await.unwrap();
        assert_eq!(records.iter().map(|r| r.reference.as_str()).collect::<Vec<_>>(), ["MAG-000000001", "000000004"]);
        assert_eq!(records[1].date, NaiveDate::from_ymd_opt(2026, 3, 7).unwrap());
        assert_eq!(unreadable.len(), 1);
        assert!(
            matches!(&unreadable[0], Finding::UnreadableRun { idempotency_key, reason, .. }
                if idempotency_key == "invoice.paid:4" && reason.contains("Magento is down")),
            "{unreadable:?}"
        );
    }
}
