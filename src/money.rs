//! Money: decimals that never pass through binary floating point, currencies that are real ISO 4217
//! codes, and rounding that always says which strategy it uses.
//!
//! # Reading money
//!
//! Magento sends money as JSON numbers with two decimals (`19.99`), sometimes as strings
//! (`"0.0000"` in Adobe Commerce extension attributes), and Sage answers with strings (`"367.09"`).
//! Every money field of the crate is read with [`serde_decimal`] (or [`serde_decimal_opt`]), which
//! takes the *text* of a JSON number (serde_json's `arbitrary_precision` feature keeps it) or a
//! string, and parses it as a decimal. A JSON `0.1` becomes exactly `0.1`; it is never an `f64`.
//!
//! # Rounding
//!
//! [`RoundingPolicy`] names every strategy the crate uses. Money is rounded to
//! [`MONEY_DP`] decimals with [`RoundingPolicy::HalfUp`] (half away from zero), which is what
//! HMRC's default (VATREC12030: below 0.5p down, 0.5p or more up) and Sage's per-line rounding
//! do. `Decimal::round_dp` (banker's rounding) is banned by `clippy.toml`.

use std::{fmt, str::FromStr};

pub use iso_currency::Currency;
use rust_decimal::{Decimal, RoundingStrategy};

/// Decimals of money on the wire (Sage and Magento both use 2).
pub const MONEY_DP: u32 = 2;

/// One penny (0.01): the smallest amount money can differ by.
pub const PENNY: Decimal = Decimal::from_parts(1, 0, 0, false, 2);

/// A named rounding strategy. Every rounding in the crate goes through one of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundingPolicy {
    /// Half away from zero (2.345 → 2.35, −2.345 → −2.35): money amounts, tax per line.
    HalfUp,
    /// Half to even (2.345 → 2.34): never used for money; here so that a caller must choose it
    /// by name if it ever needs it.
    HalfEven,
    /// Away from zero (2.341 → 2.35): unit prices that must cover a row total (see
    /// [`crate::providers::sage::transform`]).
    Up,
    /// Toward zero (2.349 → 2.34).
    Down,
}

impl RoundingPolicy {
    /// Rounds `value` to `dp` decimals with this strategy.
    pub fn round(self, value: Decimal, dp: u32) -> Decimal {
        let strategy = match self {
            Self::HalfUp => RoundingStrategy::MidpointAwayFromZero,
            Self::HalfEven => RoundingStrategy::MidpointNearestEven,
            Self::Up => RoundingStrategy::AwayFromZero,
            Self::Down => RoundingStrategy::ToZero,
        };
        value.round_dp_with_strategy(dp, strategy)
    }
}

/// Rounds money to 2 decimals, half away from zero.
pub fn round_money(value: Decimal) -> Decimal {
    RoundingPolicy::HalfUp.round(value, MONEY_DP)
}

/// True when `value` has no more than 2 significant decimals (`1.50` and `1.5` yes, `1.505` no).
pub fn is_whole_pennies(value: Decimal) -> bool {
    value.normalize().scale() <= MONEY_DP
}

/// Formats money with exactly 2 decimals (`5` → `5.00`), rounding half up first.
pub fn format_money(value: Decimal) -> String {
    let mut v = round_money(value);
    v.rescale(MONEY_DP);
    v.to_string()
}

/// Formats a percentage key the way Byte8's tax-rate map does (`"%.2f"`): `20` → `"20.00"`.
pub fn percent_key(pct: Decimal) -> String {
    format_money(pct)
}

/// Parses a decimal from text: plain (`"12.50"`) or scientific (`"1.25e1"`).
///
/// # Errors
/// Returns a description of the problem when the text is not a number.
pub fn parse_decimal(text: &str) -> Result<Decimal, String> {
    let t = text.trim();
    Decimal::from_str(t)
        .or_else(|_| Decimal::from_scientific(t))
        .map_err(|_| format!("`{text}` is not a decimal number"))
}

/// Parses and validates an ISO 4217 currency code (upper case, as Magento and Sage send it).
///
/// # Errors
/// Returns a description of the problem when the code is not a current ISO 4217 code.
pub fn parse_currency(code: &str) -> Result<Currency, String> {
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(format!("`{code}` is not an ISO 4217 currency code (three upper-case letters)"));
    }
    Currency::from_code(code).ok_or_else(|| format!("`{code}` is not a known ISO 4217 currency code"))
}

/// Serde for a required `Decimal` read from a JSON number (its exact text) or a numeric string,
/// and written as a JSON number with its exact digits.
pub mod serde_decimal {
    use rust_decimal::Decimal;
    use serde::{Deserializer, Serializer};

    /// Reads a decimal from a JSON number or string.
    ///
    /// # Errors
    /// Fails on anything that is not a number or a numeric string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Decimal, D::Error> {
        rust_decimal::serde::arbitrary_precision::deserialize(d)
    }

    /// Writes a decimal as a JSON number with its exact digits.
    ///
    /// # Errors
    /// Never fails for a valid decimal.
    pub fn serialize<S: Serializer>(v: &Decimal, s: S) -> Result<S::Ok, S::Error> {
        rust_decimal::serde::arbitrary_precision::serialize(v, s)
    }
}

/// Serde for an optional `Decimal`: `null` and a missing key both read as `None` (use it with
/// `#[serde(default)]`).
pub mod serde_decimal_opt {
    use rust_decimal::Decimal;
    use serde::{Deserializer, Serializer};

    /// Reads an optional decimal.
    ///
    /// # Errors
    /// Fails on anything that is not null, a number or a numeric string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Decimal>, D::Error> {
        rust_decimal::serde::arbitrary_precision_option::deserialize(d)
    }

    /// Writes an optional decimal (None as `null`).
    ///
    /// # Errors
    /// Never fails for a valid decimal.
    pub fn serialize<S: Serializer>(v: &Option<Decimal>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => super::serde_decimal::serialize(v, s),
            None => s.serialize_none(),
        }
    }
}

/// Serde for an ISO 4217 currency code, validated when read.
pub mod serde_currency {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use super::Currency;

    /// Reads and validates a currency code.
    ///
    /// # Errors
    /// Fails when the code is not a current ISO 4217 code.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Currency, D::Error> {
        let code = String::deserialize(d)?;
        super::parse_currency(&code).map_err(D::Error::custom)
    }

    /// Writes the three-letter code.
    ///
    /// # Errors
    /// Never fails.
    pub fn serialize<S: Serializer>(c: &Currency, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(c.code())
    }
}

/// Serde for an optional ISO 4217 currency code (`null` or absent is `None`).
pub mod serde_currency_opt {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use super::Currency;

    /// Reads and validates an optional currency code.
    ///
    /// # Errors
    /// Fails when a code is present and is not a current ISO 4217 code.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Currency>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(code) => super::parse_currency(&code).map(Some).map_err(D::Error::custom),
        }
    }

    /// Writes the three-letter code or `null`.
    ///
    /// # Errors
    /// Never fails.
    pub fn serialize<S: Serializer>(c: &Option<Currency>, s: S) -> Result<S::Ok, S::Error> {
        match c {
            Some(c) => s.serialize_str(c.code()),
            None => s.serialize_none(),
        }
    }
}

/// A money amount in a currency, for messages and summaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Money {
    /// The amount.
    pub amount: Decimal,
    /// Its currency.
    pub currency: Currency,
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", format_money(self.amount), self.currency.code())
    }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;
    use serde::Deserialize;

    use super::*;

    #[derive(Deserialize)]
    struct Amount {
        #[serde(with = "serde_decimal")]
        v: Decimal,
    }

    #[test]
    fn json_number_is_read_exactly() {
        let a: Amount = serde_json::from_str(r#"{"v": 0.1}"#).unwrap();
        assert_eq!(a.v.to_string(), "0.1");
        let a: Amount = serde_json::from_str(r#"{"v": 1917.60}"#).unwrap();
        assert_eq!(a.v.to_string(), "1917.60");
        // 0.1 + 0.2 is 0.3 exactly, unlike f64.
        let x: Amount = serde_json::from_str(r#"{"v": 0.2}"#).unwrap();
        let y: Amount = serde_json::from_str(r#"{"v": 0.1}"#).unwrap();
        assert_eq!(x.v + y.v, dec!(0.3));
    }

    #[test]
    fn strings_and_scientific_are_read() {
        let a: Amount = serde_json::from_str(r#"{"v": "367.09"}"#).unwrap();
        assert_eq!(a.v, dec!(367.09));
        let a: Amount = serde_json::from_str(r#"{"v": 1.5e2}"#).unwrap();
        assert_eq!(a.v, dec!(150));
        assert!(serde_json::from_str::<Amount>(r#"{"v": "abc"}"#).is_err());
        assert!(serde_json::from_str::<Amount>(r#"{"v": true}"#).is_err());
    }

    #[test]
    fn from_value_keeps_exact_digits() {
        let v: serde_json::Value = serde_json::from_str(r#"{"v": 0.1}"#).unwrap();
        let a: Amount = serde_json::from_value(v).unwrap();
        assert_eq!(a.v.to_string(), "0.1");
    }

    #[test]
    fn rounding_policies_differ_where_they_should() {
        assert_eq!(round_money(dec!(2.345)), dec!(2.35));
        assert_eq!(round_money(dec!(-2.345)), dec!(-2.35));
        assert_eq!(RoundingPolicy::HalfEven.round(dec!(2.345), 2), dec!(2.34));
        assert_eq!(RoundingPolicy::Up.round(dec!(2.341), 2), dec!(2.35));
        assert_eq!(RoundingPolicy::Down.round(dec!(2.349), 2), dec!(2.34));
    }

    #[test]
    fn formatting() {
        assert_eq!(format_money(dec!(5)), "5.00");
        assert_eq!(format_money(dec!(5.005)), "5.01");
        assert_eq!(percent_key(dec!(20)), "20.00");
        assert_eq!(percent_key(dec!(17.5)), "17.50");
        assert!(is_whole_pennies(dec!(1.50)));
        assert!(is_whole_pennies(dec!(1.5000)));
        assert!(!is_whole_pennies(dec!(1.505)));
    }

    #[test]
    fn currencies_are_validated() {
        assert_eq!(parse_currency("GBP").unwrap(), Currency::GBP);
        assert!(parse_currency("gbp").unwrap_err().contains("three upper-case"));
        assert!(parse_currency("XYZ").unwrap_err().contains("not a known"));
        assert!(parse_currency("EURO").is_err());
    }
}
