//! Choosing the ledger tax rate of a domestic line: the policy's tax-rate map (P13), then its
//! default (P8), checked against the tax Magento actually charged.
//!
//! Byte8 keys the map on `format("%.2f", tax_rate × 100)`, where the canonical `tax_rate` is
//! `line_tax / line_subtotal` — the subtotal *before* discount. On a discounted line that is not
//! the rate Magento applied (a 20 % line with a 10 % discount reads 18.00), so Byte8 silently falls
//! back to the default. This crate keeps Byte8's literal key first (a map written for Byte8 keeps
//! working) — but only when that entry reproduces the line's tax — and then picks the map entry
//! whose percentage reproduces the line's tax on its net **after** discount to the penny, the
//! tolerance of tax.md 3.4 invariant 3.
//!
//! # The basis of the rate: after discount, unless the policy says otherwise
//!
//! Magento's default is "Apply Customer Tax: After Discount" (tax.md 3.4 invariant 6), so the
//! applied rate is `tax / (subtotal − discount)`. The pre-discount quotient is never a rate: a 20 %
//! line of 100.00 with a 75 % discount carries 5.00 tax on a net of 25.00, and 5.00 / 100.00 = 5 %
//! would book it on the reduced rate. This crate therefore fits every rate on the net after
//! discount only; Byte8's literal key ("5.00" in that example) is skipped because 5 % of 25.00 is
//! not 5.00. Stores configured to "Apply Customer Tax: Before Discount" set the policy key
//! `tax_calculated_before_discount: true`, and then (only then) the rate is fitted on the subtotal
//! before discount instead.
//!
//! Zero-tax lines: Byte8 sends them to the default rate, so its `"0.00"` map entry never fires
//! (byte8-spec.md 14.6) and a zero-tax line can land on a 20 % rate with no tax. This crate uses
//! the `"0.00"` entry for them, else the default when its percentage is zero, else the business's
//! zero rate (a visible 0 % rate whose id or name says "zero").
//!
//! A taxed line that no entry explains is an error naming the line and the percentage to add to
//! the map: posting it at a rate that does not match its tax would misstate the VAT return.

use rust_decimal::Decimal;

use crate::{
    money::{PENNY, percent_key, round_money},
    policy::SyncPolicy,
    reference::TaxRate,
};

/// Where a chosen rate came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateSource {
    /// Byte8's literal `"%.2f"` key of the canonical `tax_rate`.
    MapLiteral,
    /// The map entry whose percentage reproduces the tax.
    MapFit,
    /// The policy's default rate.
    Default,
    /// The business's zero rate, for a zero-tax line.
    Zero,
}

/// A chosen tax rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateChoice {
    /// The ledger's tax-rate id.
    pub id: String,
    /// Its percentage, when known.
    pub percentage: Option<Decimal>,
    /// Where it came from.
    pub source: RateSource,
}

/// The tax a percentage gives on `base`, rounded half up.
pub fn tax_at(base: Decimal, pct: Decimal) -> Decimal {
    round_money(base * pct / Decimal::ONE_HUNDRED)
}

fn fits(pct: Decimal, line: &LineTax) -> bool {
    if line.tax.is_zero() {
        return pct.is_zero() || line.net.is_zero();
    }
    (tax_at(line.basis(), pct) - line.tax).abs() <= line.tolerance
}

/// The amounts of a line whose rate is being chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineTax {
    /// Net after discount.
    pub net: Decimal,
    /// Net before discount (for stores that tax before discount).
    pub subtotal: Decimal,
    /// The tax Magento charged.
    pub tax: Decimal,
    /// How far the tax may be from `round(net × rate)`: one penny (tax.md 3.4 invariant 3), two
    /// when the net itself was rebuilt from a rounded discount tax compensation.
    pub tolerance: Decimal,
    /// The store taxes before discount (policy `tax_calculated_before_discount`): the rate is
    /// fitted on `subtotal` instead of `net`.
    pub before_discount: bool,
}

impl LineTax {
    /// A line taxed after discount (Magento's default), with the one-penny tolerance.
    pub fn new(net: Decimal, subtotal: Decimal, tax: Decimal) -> Self {
        Self { net, subtotal, tax, tolerance: PENNY, before_discount: false }
    }

    /// The amount the rate applies to: the net after discount, or the subtotal for a store that
    /// taxes before discount.
    pub fn basis(&self) -> Decimal {
        if self.before_discount { self.subtotal } else { self.net }
    }
}

/// The business's zero rate: a 0 % rate whose id or name says "zero", else any 0 % rate that is
/// not "exempt" or "no tax".
pub fn zero_rate(rates: &[TaxRate]) -> Option<&TaxRate> {
    let zero = |r: &&TaxRate| r.percentage.is_some_and(|p| p.is_zero()) && r.visible;
    let says = |r: &TaxRate, w: &str| r.id.to_lowercase().contains(w) || r.name.to_lowercase().contains(w);
    rates
        .iter()
        .filter(zero)
        .find(|r| says(r, "zero"))
        .or_else(|| rates.iter().filter(zero).find(|r| !says(r, "exempt") && !says(r, "no ")))
}

/// The business's "no tax" / outside-the-scope rate (Sage `GB_NO_TAX`), for lines that are not a
/// supply at all (credit-memo adjustments, collected foreign VAT).
pub fn no_tax_rate(rates: &[TaxRate]) -> Option<&TaxRate> {
    let says = |r: &TaxRate, w: &str| r.id.to_lowercase().contains(w) || r.name.to_lowercase().contains(w);
    rates
        .iter()
        .filter(|r| r.percentage.is_some_and(|p| p.is_zero()))
        .find(|r| says(r, "no_tax") || says(r, "no tax") || says(r, "no vat") || says(r, "outside"))
}

/// Chooses the tax rate of a domestic line (see the module docs).
///
/// # Errors
/// A rule naming the percentage Magento charged when no map entry or default reproduces it.
pub fn domestic_rate(
    policy: &SyncPolicy,
    rates: &[TaxRate],
    line: LineTax,
    canonical_rate: Option<Decimal>,
) -> Result<RateChoice, String> {
    let LineTax { tax, .. } = line;
    let net = line.basis();
    let pct_of = |id: &str| rates.iter().find(|r| r.id == id).and_then(|r| r.percentage);
    let choice = |id: &String, percentage, source| RateChoice { id: id.clone(), percentage, source };
    if tax.is_zero() {
        if let Some(id) = policy.tax_rate_map.get("0.00") {
            return Ok(choice(id, Some(Decimal::ZERO), RateSource::MapFit));
        }
        if let Some(id) = &policy.default_tax_rate_id {
            let pct = pct_of(id);
            if pct.is_none_or(|p| p.is_zero()) {
                return Ok(choice(id, pct, RateSource::Default));
            }
        }
        return zero_rate(rates)
            .map(|r| choice(&r.id, r.percentage, RateSource::Zero))
            .ok_or_else(|| "the line has no tax, and neither tax_rate_map[\"0.00\"], a 0 % default_tax_rate_id nor a zero rate of the business is available".to_owned());
    }
    if let Some(rate) = canonical_rate {
        let key = percent_key(rate * Decimal::ONE_HUNDRED);
        if let Some(id) = policy.tax_rate_map.get(&key) {
            let pct = pct_of(id).unwrap_or(rate * Decimal::ONE_HUNDRED);
            if fits(pct, &line) {
                return Ok(choice(id, Some(pct), RateSource::MapLiteral));
            }
        }
    }
    let applied = if net > Decimal::ZERO { tax * Decimal::ONE_HUNDRED / net } else { Decimal::ZERO };
    let best = policy
        .tax_rate_map
        .iter()
        .filter_map(|(k, id)| crate::money::parse_decimal(k).ok().map(|p| (p, id)))
        .filter(|(p, _)| fits(*p, &line))
        .min_by_key(|(p, _)| (*p - applied).abs());
    if let Some((p, id)) = best {
        return Ok(choice(id, Some(p), RateSource::MapFit));
    }
    if let Some(id) = &policy.default_tax_rate_id {
        match pct_of(id) {
            Some(p) if fits(p, &line) => return Ok(choice(id, Some(p), RateSource::Default)),
            // A rate whose percentage the ledger did not report cannot be checked: trust the policy.
            None => return Ok(choice(id, None, RateSource::Default)),
            Some(_) => {}
        }
    }
    let key = percent_key(applied);
    Err(format!(
        "Magento charged {tax} tax on a net of {net} ({key} %), and no tax_rate_map entry nor default_tax_rate_id{} reproduces it; add \"{key}\" to tax_rate_map",
        policy
            .default_tax_rate_id
            .as_deref()
            .map(|d| format!(" ({d} at {} %)", pct_of(d).map(percent_key).unwrap_or_else(|| "?".into())))
            .unwrap_or_default()
    ))
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    fn uk_rates() -> Vec<TaxRate> {
        [
            ("GB_STANDARD", "Standard 20.00%", dec!(20)),
            ("GB_LOWER", "Lower 5.00%", dec!(5)),
            ("GB_ZERO", "Zero Rated 0.00%", dec!(0)),
            ("GB_EXEMPT", "Exempt 0.00%", dec!(0)),
            ("GB_NO_TAX", "No Tax", dec!(0)),
        ]
        .into_iter()
        .map(|(id, name, p)| TaxRate { id: id.into(), name: name.into(), percentage: Some(p), visible: true })
        .collect()
    }

    fn policy(json: &str) -> SyncPolicy {
        SyncPolicy::from_json(json).unwrap()
    }

    #[test]
    fn discounted_line_finds_its_real_rate() {
        // 20 % on 90 after a 10 discount: tax 18, canonical tax_rate 18/100 = 0.18 ("18.00", not in the map).
        let p =
            policy(r#"{"tax_rate_map":{"20.00":"GB_STANDARD","5.00":"GB_LOWER"},"default_tax_rate_id":"GB_LOWER"}"#);
        let c = domestic_rate(&p, &uk_rates(), LineTax::new(dec!(90), dec!(100), dec!(18)), Some(dec!(0.18))).unwrap();
        assert_eq!((c.id.as_str(), c.source), ("GB_STANDARD", RateSource::MapFit));
    }

    #[test]
    fn a_deeply_discounted_standard_line_is_never_reduced_rate() {
        // 20 % line of 100.00 with a 75 % discount: net 25.00, tax 5.00. Byte8's literal key is
        // 5.00 / 100.00 = "5.00", which is in the map; 5 % of 25.00 is 1.25, so it must not fire.
        let p = policy(r#"{"tax_rate_map":{"20.00":"GB_STANDARD","5.00":"GB_LOWER"}}"#);
        let c = domestic_rate(&p, &uk_rates(), LineTax::new(dec!(25), dec!(100), dec!(5)), Some(dec!(0.05))).unwrap();
        assert_eq!((c.id.as_str(), c.source), ("GB_STANDARD", RateSource::MapFit));
        assert_eq!(c.percentage, Some(dec!(20)));
        // The default alone cannot rescue it either: a 5 % default does not reproduce 5.00 on 25.00.
        let p = policy(r#"{"default_tax_rate_id":"GB_LOWER"}"#);
        let err = domestic_rate(&p, &uk_rates(), LineTax::new(dec!(25), dec!(100), dec!(5)), Some(dec!(0.05)));
        assert!(err.unwrap_err().contains("(20.00 %)"));
    }

    #[test]
    fn tax_before_discount_only_under_the_policy_setting() {
        // A store taxing before discount: 5 % of the 100.00 subtotal is 5.00 on a 25.00 net.
        let p = policy(
            r#"{"tax_rate_map":{"20.00":"GB_STANDARD","5.00":"GB_LOWER"},"tax_calculated_before_discount":true}"#,
        );
        let line =
            LineTax { before_discount: p.tax_calculated_before_discount, ..LineTax::new(dec!(25), dec!(100), dec!(5)) };
        let c = domestic_rate(&p, &uk_rates(), line, Some(dec!(0.05))).unwrap();
        assert_eq!((c.id.as_str(), c.source), ("GB_LOWER", RateSource::MapLiteral));
        // The same line under the default (after discount) is standard-rated.
        let c = domestic_rate(&p, &uk_rates(), LineTax::new(dec!(25), dec!(100), dec!(5)), Some(dec!(0.05))).unwrap();
        assert_eq!(c.id, "GB_STANDARD");
    }

    #[test]
    fn byte8_literal_key_wins_when_it_fits() {
        let p = policy(r#"{"tax_rate_map":{"20.00":"GB_STANDARD"}}"#);
        let c = domestic_rate(&p, &uk_rates(), LineTax::new(dec!(10), dec!(10), dec!(2)), Some(dec!(0.2))).unwrap();
        assert_eq!(c.source, RateSource::MapLiteral);
    }

    #[test]
    fn penny_delta_rounding_still_fits() {
        // Magento's TOTAL rounding gave 3.17 on 15.87 at 20 % (exact 3.174 → 3.17) and 3.18 next door.
        let p = policy(r#"{"default_tax_rate_id":"GB_STANDARD"}"#);
        let c = domestic_rate(&p, &uk_rates(), LineTax::new(dec!(15.87), dec!(15.87), dec!(3.18)), None).unwrap();
        assert_eq!((c.id.as_str(), c.source), ("GB_STANDARD", RateSource::Default));
    }

    #[test]
    fn zero_tax_line_never_lands_on_a_taxed_rate() {
        let p = policy(r#"{"default_tax_rate_id":"GB_STANDARD"}"#);
        let c = domestic_rate(&p, &uk_rates(), LineTax::new(dec!(10), dec!(10), dec!(0)), None).unwrap();
        assert_eq!((c.id.as_str(), c.source), ("GB_ZERO", RateSource::Zero));
        let p = policy(r#"{"default_tax_rate_id":"GB_STANDARD","tax_rate_map":{"0":"GB_EXEMPT"}}"#);
        let c = domestic_rate(&p, &uk_rates(), LineTax::new(dec!(10), dec!(10), dec!(0)), None).unwrap();
        assert_eq!(c.id, "GB_EXEMPT");
    }

    #[test]
    fn unexplained_tax_is_an_error_naming_the_percentage() {
        let p = policy(r#"{"default_tax_rate_id":"GB_LOWER"}"#);
        let err = domestic_rate(&p, &uk_rates(), LineTax::new(dec!(100), dec!(100), dec!(20)), None).unwrap_err();
        assert!(err.contains("20.00 %"), "{err}");
        assert!(err.contains("add \"20.00\" to tax_rate_map"), "{err}");
        assert!(err.contains("GB_LOWER at 5.00 %"), "{err}");
    }

    #[test]
    fn zero_and_no_tax_rates_are_found_by_name() {
        assert_eq!(zero_rate(&uk_rates()).unwrap().id, "GB_ZERO");
        assert_eq!(no_tax_rate(&uk_rates()).unwrap().id, "GB_NO_TAX");
    }
}
