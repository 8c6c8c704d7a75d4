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
