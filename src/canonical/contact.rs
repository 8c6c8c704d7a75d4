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
    /// City.
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
}

impl Address {
    pub(crate) fn check(&self, c: &mut Check<'_>) {
        let cc = &self.country_id;
        if cc.len() != 2 || !cc.bytes().all(|b| b.is_ascii_uppercase()) {
            c.fail("country_id", format!("must be an ISO 3166-1 alpha-2 code (two upper-case letters), got `{cc}`"));
        }
    }
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
    /// Company name; a non-empty company marks a business (B2B) buyer.
    #[serde(default)]
    pub company: Option<String>,
    /// Telephone.
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
    }
}
