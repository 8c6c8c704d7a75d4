//! The ledger rules the crate's three fake ledgers share, written once: the in-memory reference
//! provider ([`InMemoryProvider`](super::InMemoryProvider)), and the Sage and Xero simulators of
//! `byte8-ledger-simulators` (`state.rs`, `xero.rs`).
//!
//! | rule | here |
//! |---|---|
//! | money settled against a document (a payment, a refund, one side of an allocation) is positive, the document is not voided, still owes something, and owes at least that much; settling lowers what it owes | [`check_settlement`] |
//! | the artefacts of a contact allocation net to zero (invoices positive, credits negative) | [`nets_to_zero`] |
//! | a reference (a contact's reference, an item code, a document number) is taken while any record holds exactly it, deleted and voided records included | [`is_taken`] |
//! | stock on hand after a movement, a sale or a return, never overflowing | [`stock_after`] |
//! | the stock movement that brings the ledger's quantity to a target | [`movement_to`] |
//!
//! # Where each fake differs, on purpose, to mimic its ledger
//!
//! - **The answer to a broken rule** is each ledger's own: the memory provider returns
//!   [`Error::Rejected`](crate::error::Error::Rejected) naming the field and the amounts; the Sage
//!   simulator answers 422 `RecordInvalid` with Sage's one message ("You can only pay unpaid or
//!   part-paid invoices.", "… refund unpaid or part-paid credit notes."), whichever part of the
//!   rule broke; the Xero simulator answers Xero's `ValidationErrors` ("Payment amount exceeds the
//!   amount outstanding on this document").
//! - **What a document owes**: the memory provider and the Sage simulator keep it and lower it
//!   (Sage's `outstanding_amount`); the Xero simulator keeps `AmountPaid` and `AmountCredited`
//!   and derives `AmountDue` / `RemainingCredit` = total − paid − credited, as Xero answers, and
//!   marks a document that owes nothing `PAID`.
//! - **Which documents may be settled**: in Sage any that is not voided and owes something; in
//!   Xero only an `AUTHORISED` one (a `PAID` or `VOIDED` document is refused with Xero's
//!   message), its contact the same on both sides of an allocation.
//! - **Uniqueness**: contact references exactly (Sage keeps a deleted contact's reference
//!   reserved, byte8-spec.md 9 B2; the memory provider also honours references reserved by a
//!   test); item codes per item kind in Sage and the memory provider, across all items in Xero;
//!   Xero's invoice and credit note numbers per document type; Xero's contact **names**
//!   case-insensitively among active contacts ([`is_taken_ignoring_case`]), a Xero rule Sage
//!   does not have.
//! - **Stock**: the Sage simulator moves stock on sales, credit notes and stock movements and
//!   lets it go below zero, as Sage does; the Xero simulator moves a tracked item's stock on
//!   `AUTHORISED` sales and credit notes and refuses a sale that would take it below zero; the
//!   memory provider moves stock only by explicit stock movements, which is all the provider
//!   trait asks of a ledger.

use rust_decimal::Decimal;

/// Why an amount cannot be settled against a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unsettleable {
    /// The document was voided.
    Voided,
    /// The amount is zero or negative.
    NotPositive,
    /// The document owes nothing any more.
    Settled,
    /// The amount is more than the document still owes.
    Exceeds {
        /// What the document still owes.
        outstanding: Decimal,
    },
}

/// Checks that `amount` can be settled against a document that still owes `outstanding` (and is
/// `voided` or not), in that order: not voided, the amount positive, something owed, no more than
/// that. Returns what the document owes afterwards.
///
/// # Errors
/// The first part of the rule that is broken.
pub fn check_settlement(amount: Decimal, outstanding: Decimal, voided: bool) -> Result<Decimal, Unsettleable> {
    if voided {
        Err(Unsettleable::Voided)
    } else if amount <= Decimal::ZERO {
        Err(Unsettleable::NotPositive)
    } else if outstanding <= Decimal::ZERO {
        Err(Unsettleable::Settled)
    } else if amount > outstanding {
        Err(Unsettleable::Exceeds { outstanding })
    } else {
        // 0 < amount ≤ outstanding: the difference is in range.
        Ok(outstanding - amount)
    }
}

/// True when the allocation's amounts (invoices positive, credit notes and payments on account
/// negative) add up to exactly zero; a sum out of `Decimal`'s range does not.
pub fn nets_to_zero(amounts: impl IntoIterator<Item = Decimal>) -> bool {
    amounts.into_iter().try_fold(Decimal::ZERO, Decimal::checked_add).is_some_and(|sum| sum.is_zero())
}

/// True when any of `held` is exactly `candidate` (case and spaces count).
pub fn is_taken<'a>(candidate: &str, held: impl IntoIterator<Item = &'a str>) -> bool {
    held.into_iter().any(|h| h == candidate)
}

/// True when any of `held` is `candidate` but for ASCII case: Xero's rule for contact names.
pub fn is_taken_ignoring_case<'a>(candidate: &str, held: impl IntoIterator<Item = &'a str>) -> bool {
    held.into_iter().any(|h| h.eq_ignore_ascii_case(candidate))
}

/// Stock on hand after a change (a movement's signed quantity, minus a sale, plus a return);
/// `None` when the result is out of `Decimal`'s range, which a fake answers as its ledger
/// refuses an impossible quantity.
pub fn stock_after(on_hand: Decimal, change: Decimal) -> Option<Decimal> {
    on_hand.checked_add(change)
}

/// The signed quantity of the stock movement that brings the ledger's `current` quantity to
/// `target` (zero: no movement); `None` when out of range.
pub fn movement_to(target: Decimal, current: Decimal) -> Option<Decimal> {
    target.checked_sub(current)
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn settlement_rows() {
        use Unsettleable::*;
        // (amount, outstanding, voided, expected)
        let rows = [
            (dec!(10), dec!(25), false, Ok(dec!(15))),
            (dec!(25), dec!(25), false, Ok(dec!(0))),
            (dec!(0.01), dec!(0.01), false, Ok(dec!(0))),
            (dec!(25.01), dec!(25), false, Err(Exceeds { outstanding: dec!(25) })),
            (dec!(0), dec!(25), false, Err(NotPositive)),
            (dec!(-5), dec!(25), false, Err(NotPositive)),
            (dec!(5), dec!(0), false, Err(Settled)),
            (dec!(5), dec!(-1), false, Err(Settled)),
            (dec!(5), dec!(25), true, Err(Voided)),
            (dec!(-5), dec!(0), true, Err(Voided)),
            (Decimal::MAX, Decimal::MAX, false, Ok(dec!(0))),
            (Decimal::MAX, dec!(1), false, Err(Exceeds { outstanding: dec!(1) })),
        ];
        for (i, (amount, outstanding, voided, expected)) in rows.into_iter().enumerate() {
            assert_eq!(check_settlement(amount, outstanding, voided), expected, "row {i}");
        }
    }

    #[test]
    fn netting_and_uniqueness_and_stock() {
        assert!(nets_to_zero([dec!(12.50), dec!(-12.50)]));
        assert!(nets_to_zero([dec!(10), dec!(-4), dec!(-6)]));
        assert!(!nets_to_zero([dec!(10), dec!(-9.99)]));
        assert!(nets_to_zero([]));
        assert!(!nets_to_zero([Decimal::MAX, Decimal::MAX, -Decimal::MAX]), "an overflowing sum is not zero");

        let held = ["M5", "m6", "C 1"];
        assert!(is_taken("M5", held));
        assert!(!is_taken("m5", held));
        assert!(!is_taken("C1", held));
        assert!(is_taken_ignoring_case("M6", held));
        assert!(!is_taken_ignoring_case("M7", held));

        assert_eq!(stock_after(dec!(3), dec!(-5)), Some(dec!(-2)));
        assert_eq!(stock_after(Decimal::MAX, dec!(1)), None);
        assert_eq!(movement_to(dec!(7), dec!(10)), Some(dec!(-3)));
        assert_eq!(movement_to(dec!(4), dec!(4)), Some(dec!(0)));
        assert_eq!(movement_to(Decimal::MIN, dec!(1)), None);
    }
}
