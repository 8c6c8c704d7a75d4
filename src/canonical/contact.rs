//! `MagentoContact` and `Address` (byte8-spec.md sections 3.3 and 3.4).

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{Check, serde_time_opt};

/// Which address of a contact or an order this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AddressKind {
    /// The billing address.
    Billing,
    /// The shipping (delivery) address.
    Shipping,
}

/// A postal address (byte8-spec.md 3.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Billing or shipping.
    pub kind: AddressKind,
    /// Street lines, empty lines already removed by the module.
    #[serde(default)]
    pub street: Vec<String>,
    /// The town or city.
    #[serde(default)]
    pub city: String,
    /// Region or county name.
    #[serde(default)]
    pub region: Option<String>,
    /// Postcode (absent in countries without postcodes).
    #[serde(default)]
    pub postcode: Option<String>,
    /// ISO 3166-1 alpha-2 country code (`GB`, `DE`).
    pub country_id: String,
    /// Telephone number.
    #[serde(default)]
    pub telephone: Option<String>,
    /// The VAT number entered on this address (Magento's address `vat_id`, magento.md 3.7, 5.11),
    /// as Magento stores it; [`Address::vat_number`] gives it normalised. Optional: the Byte8
    /// module does not send it (byte8-spec.md 3.4); the REST adapter reads it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_id: Option<String>,
}

impl Address {
    /// The address's VAT number normalised ([`normalize_vat_number`]), when it has a well-formed
    /// one; a malformed one is reported by validation, never used.
    pub fn vat_number(&self) -> Option<String> {
        normalize_vat_number(self.vat_id.as_deref()?).ok().flatten()
    }

    pub(crate) fn check(&self, c: &mut Check<'_>) {
        let cc = &self.country_id;
        if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_uppercase()) {
            c.fail("country_id", format!("must be an ISO 3166-1 alpha-2 code (two upper-case letters), got `{cc}`"));
        }
        if let Some(raw) = &self.vat_id
            && let Err(rule) = normalize_vat_number(raw)
        {
            c.fail("vat_id", rule);
        }
    }
}

/// The two-letter prefixes a VAT number may start with: the EU member states (Greece is `EL`),
/// `XI` (Northern Ireland), `GB`, and the other European VAT numbers a shop meets (`CH`, `NO`).
const VAT_PREFIXES: [&str; 31] = [
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "EL", "ES", "FI", "FR", "HR", "HU", "IE", "IT", "LT", "LU", "LV",
    "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK", "XI", "GB", "CH", "NO",
];

/// Normalises a buyer's VAT number and checks its shape, lightly (issue 18): whitespace, `.` and
/// `-` are removed and letters upper-cased (`de 123 456 789` → `DE123456789`); the result must be
/// 8 to 20 characters of `A-Z`, `0-9` (and the `+` / `*` of old Irish numbers), hold at least one
/// digit, and, when it starts with two letters, they must be a VAT country prefix (`DE`, `EL`,
/// `XI`, `GB`, ...; a number without its prefix, as Magento often stores it, is accepted).
/// It is not a check-digit or VIES check: Magento's VIES result decided the tax it charged.
///
/// `Ok(None)` for an empty or blank value (no number).
///
/// # Errors
/// The broken rule, naming the value, for the caller to report under its field.
pub fn normalize_vat_number(raw: &str) -> Result<Option<String>, String> {
    let n: String = raw
        .chars()
        .filter(|ch| !ch.is_whitespace() && *ch != '.' && *ch != '-')
        .map(|ch| ch.to_ascii_uppercase())
        .collect();
    if n.is_empty() {
        return Ok(None);
    }
    let shape =
        "must be a VAT number: 8 to 20 letters and digits, optionally after the country prefix (e.g. `DE123456789`)";
    if !(8..=20).contains(&n.chars().count())
        || !n.chars().all(|ch| ch.is_ascii_uppercase() || ch.is_ascii_digit() || ch == '+' || ch == '*')
        || !n.chars().any(|ch| ch.is_ascii_digit())
    {
        return Err(format!("{shape}; got `{}`", raw.trim()));
    }
    let b = n.as_bytes();
    if b[0].is_ascii_uppercase() && b[1].is_ascii_uppercase() && !VAT_PREFIXES.contains(&&n[..2]) {
        return Err(format!(
            "must start with a VAT country prefix (`DE`, `FR`, `EL` for Greece, `XI` for Northern Ireland, `GB`, ...) or with no prefix; `{}` is not one (got `{}`)",
            &n[..2],
            raw.trim()
        ));
    }
    Ok(Some(n))
}

/// A Magento customer, or the synthetic contact of a guest buyer (byte8-spec.md 3.3).
///
/// A guest has `magento_id = 0` and `website_id = 0`; it is never fetched from Magento by id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MagentoContact {
    /// Magento customer id; `0` for a guest.
    pub magento_id: u64,
    /// E-mail address (Sage requires one on every contact).
    pub email: String,
    /// First name.
    #[serde(default)]
    pub first_name: Option<String>,
    /// Last name.
    #[serde(default)]
    pub last_name: Option<String>,
    /// Company name (for a Magento B2B company account, the company's name). It names the ledger
    /// contact; it no longer makes the buyer a business for tax (the VAT number does, see
    /// [`MagentoContact::vat_number`]), but a non-empty one still keeps the buyer out of B2C
    /// consolidation (`always_individual_for_b2b`).
    #[serde(default)]
    pub company: Option<String>,
    /// The buyer's VAT number as Magento has it on the customer (`taxvat`, magento.md 3.9, 5.11)
    /// or as the sender resolved it. Optional: the Byte8 module does not send it; the REST
    /// adapter fills it (the billing address's `vat_id`, else `taxvat`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vat_number: Option<String>,
    /// The customer's telephone number, when Magento has one.
    #[serde(default)]
    pub phone: Option<String>,
    /// The customer's website (`0` for guests).
    #[serde(default)]
    pub website_id: u32,
    /// Customer group id.
    #[serde(default)]
    pub group_id: Option<u32>,
    /// Addresses: one per default flag, so one address may appear twice.
    #[serde(default)]
    pub addresses: Vec<Address>,
    /// When the customer was created.
    #[serde(default, with = "serde_time_opt")]
    pub created_at: Option<DateTime<Utc>>,
    /// When the customer was last changed.
    #[serde(default, with = "serde_time_opt")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl MagentoContact {
    /// True for the synthetic contact of a guest buyer.
    pub fn is_guest(&self) -> bool {
        self.magento_id == 0
    }

    /// The company name, when it is non-empty after trimming.
    pub fn company_name(&self) -> Option<&str> {
        non_empty(self.company.as_deref())
    }

    /// The buyer's VAT number, normalised ([`normalize_vat_number`]): the billing address's
    /// `vat_id`, else the contact's own `vat_number` (magento.md 5.11: the address's VAT id is the
    /// one VIES validated). `None` when neither holds a well-formed number (a malformed one fails
    /// validation).
    pub fn vat_number(&self) -> Option<String> {
        self.address(AddressKind::Billing)
            .and_then(Address::vat_number)
            .or_else(|| normalize_vat_number(self.vat_number.as_deref()?).ok().flatten())
    }

    /// "First Last" from the non-empty name parts, if any.
    pub fn person_name(&self) -> Option<String> {
        let parts: Vec<&str> =
            [self.first_name.as_deref(), self.last_name.as_deref()].into_iter().filter_map(non_empty).collect();
        (!parts.is_empty()).then(|| parts.join(" "))
    }

    /// The e-mail address trimmed and lower-cased, as the guest reference hashes it.
    pub fn normalized_email(&self) -> String {
        self.email.trim().to_lowercase()
    }

    /// The first address of `kind`, if any.
    pub fn address(&self, kind: AddressKind) -> Option<&Address> {
        self.addresses.iter().find(|a| a.kind == kind)
    }

    pub(crate) fn check(&self, c: &mut Check<'_>) {
        let email = self.email.trim();
        if email.is_empty() {
            c.fail("email", "must not be empty (Sage requires an e-mail on every contact)");
        } else if !looks_like_email(email) {
            c.fail("email", format!("must be an e-mail address, got `{email}`"));
        }
        for (i, a) in self.addresses.iter().enumerate() {
            a.check(&mut c.at(&format!("addresses[{i}]")));
        }
        if let Some(raw) = &self.vat_number
            && let Err(rule) = normalize_vat_number(raw)
        {
            c.fail("vat_number", rule);
        }
    }
}

/// A conservative e-mail shape check: one `@`, something before it, a dot after it, no spaces.
pub(crate) fn looks_like_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else { return false };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

pub(crate) fn non_empty(s: Option<&str>) -> Option<&str> {
    s.map(str::trim).filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shapes() {
        assert!(looks_like_email("a@b.co"));
        assert!(!looks_like_email("a@b"));
        assert!(!looks_like_email("@b.co"));
        assert!(!looks_like_email("a b@c.co"));
        assert!(!looks_like_email("a@@b.co"));
    }

    #[test]
    fn names() {
        let c: MagentoContact = serde_json::from_str(
            r#"{"magento_id":5,"email":" Jane@Example.COM ","first_name":"Jane","last_name":" ","company":"  "}"#,
        )
        .unwrap();
        assert_eq!(c.person_name().as_deref(), Some("Jane"));
        assert_eq!(c.company_name(), None);
        assert_eq!(c.normalized_email(), "jane@example.com");
        assert!(!c.is_guest());
        assert_eq!(c.vat_number(), None);
    }

    #[test]
    fn vat_numbers_are_trimmed_upper_cased_and_stripped_of_separators() {
        assert_eq!(normalize_vat_number(" de 123 456 789 ").unwrap().as_deref(), Some("DE123456789"));
        assert_eq!(normalize_vat_number("fr-12.345678901").unwrap().as_deref(), Some("FR12345678901"));
        assert_eq!(normalize_vat_number("el094259216").unwrap().as_deref(), Some("EL094259216"));
        assert_eq!(normalize_vat_number("IE1234567WA").unwrap().as_deref(), Some("IE1234567WA"));
        // Without the prefix, as customers often type it; Spanish NIFs start with one letter.
        assert_eq!(normalize_vat_number("123456789").unwrap().as_deref(), Some("123456789"));
        assert_eq!(normalize_vat_number("B12345678").unwrap().as_deref(), Some("B12345678"));
        assert_eq!(normalize_vat_number("   ").unwrap(), None);
    }

    #[test]
    fn malformed_vat_numbers_are_refused_with_the_rule() {
        for bad in ["n/a", "DE12", "DE123456789012345678901", "VAT-EXEMPT", "DE 1234_5678"] {
            let err = normalize_vat_number(bad).expect_err(bad);
            assert!(err.contains("must be a VAT number") && err.contains(bad.trim()), "{bad}: {err}");
        }
        let err = normalize_vat_number("ZZ123456789").unwrap_err();
        assert!(err.contains("`ZZ` is not one"), "{err}");
    }

    #[test]
    fn the_billing_vat_id_comes_before_the_customer_taxvat_and_a_bad_one_fails_validation() {
        let mut c: MagentoContact = serde_json::from_value(serde_json::json!({
            "magento_id": 5, "email": "a@example.com", "vat_number": "fr 12345678901",
            "addresses": [{"kind": "billing", "country_id": "DE", "vat_id": "de123456789"}]
        }))
        .unwrap();
        assert_eq!(c.vat_number().as_deref(), Some("DE123456789"));
        c.addresses[0].vat_id = None;
        assert_eq!(c.vat_number().as_deref(), Some("FR12345678901"));
        c.addresses[0].vat_id = Some("not a number".into());
        let err = Check::run("contact", |k| c.check(k)).unwrap_err().to_string();
        assert!(err.contains("addresses[0].vat_id") && err.contains("must be a VAT number"), "{err}");
        // A malformed address number is never used; the customer's own number is.
        assert_eq!(c.vat_number().as_deref(), Some("FR12345678901"));
    }
}
