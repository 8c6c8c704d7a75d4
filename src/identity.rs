//! Who a ledger contact is: the per-currency reference scheme of contract.md section 5 (Byte8's
//! scheme, byte for byte, so that books Byte8 filled are found again instead of duplicated) and the
//! B2C consolidation rule of byte8-spec.md 7.4.
//!
//! # References (at most 10 characters, Sage's limit)
//!
//! | who | base currency | other currency |
//! |---|---|---|
//! | registered customer 5 | `M5` | `M5E` (EUR), `M5U` (USD) |
//! | guest `Jane@Example.com` | `G` + 9 hex of SHA-256(`jane@example.com`) | `G` + 8 hex + initial |
//! | B2C fallback | `WEBSALES` | `WEBSALESE` |
//!
//! [`reference_candidates`] lists the references a (customer, currency) may hold, in order. The
//! first is Byte8's. The others are this crate's deterministic alternatives, used only when an
//! earlier candidate is already held by a contact of *another* currency (CAD and CHF share the
//! initial `C`) or by another guest whose e-mail hashes alike: the two-letter initial (`M5CH`),
//! then the full code (`M5CHF`). A guest's hex part shrinks to keep 10 characters
//! (`G1234567CH`); a registered id too long for `M{id}` plus a suffix switches to `N` + the id in
//! base 36. Hex is lower case and currency letters upper case, so a guest reference with a suffix
//! can never equal another guest's base reference.

use rust_decimal::Decimal;
use sha2::{Digest, Sha256};

use crate::{
    canonical::MagentoContact,
    money::Currency,
    policy::{B2cConsolidation, SyncPolicy},
};

/// The longest contact reference Sage accepts.
pub const CONTACT_REFERENCE_MAX: usize = 10;

/// Whose contact a reference names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ContactSubject {
    /// A registered Magento customer.
    Registered(u64),
    /// A guest, by e-mail (trimmed and lower-cased).
    Guest(String),
    /// The B2C fallback contact.
    Fallback,
}

impl ContactSubject {
    /// The subject of a canonical contact.
    pub fn of(contact: &MagentoContact) -> Self {
        if contact.is_guest() { Self::Guest(contact.normalized_email()) } else { Self::Registered(contact.magento_id) }
    }

    /// A stable key for the cross-reference (`customer:5`, `guest:<sha256>`, `fallback`).
    pub fn xref_key(&self) -> String {
        match self {
            Self::Registered(id) => format!("customer:{id}"),
            Self::Guest(email) => format!("guest:{}", sha256_hex(email)),
            Self::Fallback => "fallback".to_owned(),
        }
    }
}

/// Lower-case hex SHA-256 of `text`.
pub fn sha256_hex(text: &str) -> String {
    let digest = Sha256::digest(text.as_bytes());
    hex::encode(digest)
}

fn base36(mut n: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[usize::try_from(n % 36).unwrap_or(0)]);
        n /= 36;
        if n == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}

fn fit(stem: &str, suffix: &str) -> String {
    let room = CONTACT_REFERENCE_MAX.saturating_sub(suffix.len());
    let stem: String = stem.chars().take(room).collect();
    format!("{stem}{suffix}")
}

/// The references a (subject, currency) may hold, in the order to try them (see the module docs).
/// `fallback_reference` is the policy's `fallback_contact_reference`.
pub fn reference_candidates(
    subject: &ContactSubject,
    currency: Currency,
    base_currency: Currency,
    fallback_reference: &str,
) -> Vec<String> {
    let code = currency.code();
    let suffixes: Vec<&str> = if currency == base_currency { vec![""] } else { vec![&code[..1], &code[..2], code] };
    let mut out = Vec::new();
    for suffix in &suffixes {
        match subject {
            ContactSubject::Registered(id) => {
                let plain = format!("M{id}{suffix}");
                if plain.len() <= CONTACT_REFERENCE_MAX {
                    out.push(plain);
                } else {
                    out.push(fit(&format!("N{}", base36(*id)), suffix));
                }
            }
            ContactSubject::Guest(email) => {
                let hex = sha256_hex(email);
                let hex_len = CONTACT_REFERENCE_MAX - 1 - suffix.len();
                out.push(format!("G{}{suffix}", &hex[..hex_len]));
            }
            ContactSubject::Fallback => out.push(fit(fallback_reference, suffix)),
        }
    }
    if let ContactSubject::Guest(email) = subject {
        // Further windows of the hash for guests whose first window collides with another guest.
        let hex = sha256_hex(email);
        let suffix = suffixes[0];
        let hex_len = CONTACT_REFERENCE_MAX - 1 - suffix.len();
        for start in 1..=3 {
            out.push(format!("G{}{suffix}", &hex[start..start + hex_len]));
        }
    }
    out.dedup();
    out
}

/// The contact's display name with the currency suffix of non-base variants (` (EUR)`), within
/// `max` characters.
pub fn display_name(name: &str, currency: Currency, base_currency: Currency, max: usize) -> String {
    let suffix = if currency == base_currency { String::new() } else { format!(" ({})", currency.code()) };
    let room = max.saturating_sub(suffix.chars().count());
    let stem: String = name.trim().chars().take(room).collect();
    format!("{}{suffix}", stem.trim_end())
}

/// Where the B2C consolidation rule sends a document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactRoute {
    /// The buyer's own contact.
    Individual,
    /// The fallback contact of the currency.
    Fallback,
}

/// The B2C consolidation rule of byte8-spec.md 7.4, first match wins:
/// disabled → individual; a company (a non-empty company name, as P23 says, **or** a VAT number,
/// issue 18: a business buyer whose number must reach its own ledger contact, never the shared
/// fallback) with `always_individual_for_b2b` → individual; a repeat
/// customer (a contact already exists for this buyer in this currency) → individual;
/// `min_total_for_individual > 0` and `grand_total ≥` it → individual; otherwise the fallback.
pub fn b2c_route(
    settings: &B2cConsolidation,
    contact: &MagentoContact,
    grand_total: Decimal,
    known_in_currency: bool,
) -> ContactRoute {
    if !settings.enabled {
        return ContactRoute::Individual;
    }
    if (contact.company_name().is_some() || contact.vat_number().is_some()) && settings.always_individual_for_b2b {
        return ContactRoute::Individual;
    }
    if known_in_currency {
        return ContactRoute::Individual;
    }
    if settings.min_total_for_individual > Decimal::ZERO && grand_total >= settings.min_total_for_individual {
        return ContactRoute::Individual;
    }
    ContactRoute::Fallback
}

/// The policy's fallback reference (a convenience for callers holding a policy).
pub fn fallback_reference(policy: &SyncPolicy) -> &str {
    &policy.b2c_consolidation.fallback_contact_reference
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;

    #[test]
    fn registered_references_follow_byte8() {
        let s = ContactSubject::Registered(5);
        assert_eq!(reference_candidates(&s, Currency::GBP, Currency::GBP, "WEBSALES"), vec!["M5"]);
        assert_eq!(reference_candidates(&s, Currency::EUR, Currency::GBP, "WEBSALES")[0], "M5E");
        assert_eq!(reference_candidates(&s, Currency::USD, Currency::GBP, "WEBSALES")[0], "M5U");
        // CAD and CHF share `C`: the alternatives are deterministic and distinct.
        assert_eq!(reference_candidates(&s, Currency::CHF, Currency::GBP, "WEBSALES"), vec!["M5C", "M5CH", "M5CHF"]);
        assert_eq!(reference_candidates(&s, Currency::CAD, Currency::GBP, "WEBSALES"), vec!["M5C", "M5CA", "M5CAD"]);
    }

    #[test]
    fn long_ids_stay_within_ten_characters() {
        let s = ContactSubject::Registered(123_456_789);
        let c = reference_candidates(&s, Currency::EUR, Currency::GBP, "WEBSALES");
        assert!(c.iter().all(|r| r.len() <= 10), "{c:?}");
        // 123456789 in base 36 is 21I3V9.
        assert_eq!(c[0], "N21I3V9E");
        assert_eq!(reference_candidates(&s, Currency::GBP, Currency::GBP, "WEBSALES"), vec!["M123456789"]);
    }

    #[test]
    fn guest_reference_is_g_plus_sha256_prefix() {
        // printf '%s' jane@example.com | sha256sum → 8c87b489ce35cf2e2f39f80e282cb2e804932a56a213983eeeb428407d43b52d
        let s = ContactSubject::Guest("jane@example.com".into());
        assert_eq!(sha256_hex("jane@example.com"), "8c87b489ce35cf2e2f39f80e282cb2e804932a56a213983eeeb428407d43b52d");
        let base = reference_candidates(&s, Currency::GBP, Currency::GBP, "WEBSALES");
        assert_eq!(base[0], "G8c87b489c");
        let eur = reference_candidates(&s, Currency::EUR, Currency::GBP, "WEBSALES");
        assert_eq!(&eur[..3], &["G8c87b489E", "G8c87b48EU", "G8c87b4EUR"]);
        assert!(eur.iter().chain(&base).all(|r| r.len() == 10));
    }

    #[test]
    fn guest_email_is_normalised() {
        let c: MagentoContact = serde_json::from_str(r#"{"magento_id":0,"email":"  Jane@Example.COM "}"#).unwrap();
        assert_eq!(ContactSubject::of(&c), ContactSubject::Guest("jane@example.com".into()));
    }

    #[test]
    fn fallback_references() {
        let s = ContactSubject::Fallback;
        assert_eq!(reference_candidates(&s, Currency::GBP, Currency::GBP, "WEBSALES"), vec!["WEBSALES"]);
        assert_eq!(reference_candidates(&s, Currency::EUR, Currency::GBP, "WEBSALES")[0], "WEBSALESE");
        assert_eq!(reference_candidates(&s, Currency::EUR, Currency::GBP, "WEBSALES12")[0], "WEBSALES1E");
    }

    #[test]
    fn names_carry_the_currency() {
        assert_eq!(display_name("Acme Ltd", Currency::EUR, Currency::GBP, 100), "Acme Ltd (EUR)");
        assert_eq!(display_name("Acme Ltd", Currency::GBP, Currency::GBP, 100), "Acme Ltd");
        assert_eq!(display_name(&"x".repeat(120), Currency::USD, Currency::GBP, 100).len(), 100);
    }

    fn contact(company: Option<&str>) -> MagentoContact {
        MagentoContact {
            magento_id: 0,
            email: "a@b.co".into(),
            first_name: None,
            last_name: None,
            company: company.map(Into::into),
            vat_number: None,
            phone: None,
            website_id: 0,
            group_id: None,
            addresses: vec![],
            created_at: None,
            updated_at: None,
        }
    }

    #[test]
    fn b2c_rule_order() {
        let mut s = B2cConsolidation { enabled: true, ..B2cConsolidation::default() };
        let c = contact(None);
        assert_eq!(b2c_route(&s, &c, dec!(10), false), ContactRoute::Fallback);
        assert_eq!(b2c_route(&s, &c, dec!(10), true), ContactRoute::Individual, "repeat customer");
        assert_eq!(b2c_route(&s, &contact(Some("Acme")), dec!(10), false), ContactRoute::Individual, "B2B");
        // A VAT number without a company name is a business too (issue 18): its own contact,
        // so the number reaches the ledger.
        let vat_only = MagentoContact { vat_number: Some("DE123456789".into()), ..contact(None) };
        assert_eq!(b2c_route(&s, &vat_only, dec!(10), false), ContactRoute::Individual, "VAT number");
        let bad_vat = MagentoContact { vat_number: Some("n/a".into()), ..contact(None) };
        assert_eq!(b2c_route(&s, &bad_vat, dec!(10), false), ContactRoute::Fallback, "not a VAT number");
        s.min_total_for_individual = dec!(100);
        assert_eq!(b2c_route(&s, &c, dec!(100), false), ContactRoute::Individual, "at the threshold");
        assert_eq!(b2c_route(&s, &c, dec!(99.99), false), ContactRoute::Fallback);
        s.always_individual_for_b2b = false;
        assert_eq!(b2c_route(&s, &contact(Some("Acme")), dec!(10), false), ContactRoute::Fallback);
        assert_eq!(b2c_route(&s, &vat_only, dec!(10), false), ContactRoute::Fallback);
        s.enabled = false;
        assert_eq!(b2c_route(&s, &c, dec!(10), false), ContactRoute::Individual);
    }
}
