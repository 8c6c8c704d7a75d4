//! The sync policy of contract.md section 4: byte8-spec.md section 4's settings with the same
//! names, types and defaults, read strictly and validated with the field named.
//!
//! - [`SyncPolicy::from_json`] rejects unknown keys and mistyped values, canonicalises the
//!   tax-rate map keys (`"20"` and `" 20.0 "` both become `"20.00"`) and checks the rules that
//!   need no ledger (`invalid_format`, `OUT_OF_RANGE`, the B2C `required` / `email` / `length`
//!   rules, `default_purchase_ledger_account_id` required with `sync_products`).
//! - [`SyncPolicy::validate_against`] checks every id against the ledger's reference data
//!   (`not_in_reference`), as Byte8 does when the settings form is saved.
//!
//! Some keys are this crate's own extensions (contract.md's policy file accepts them; Byte8's
//! settings form has no such field):
//!
//! | key | values (default) | meaning |
//! |---|---|---|
//! | `foreign_vat_ledger_account_id` | account id (null) | liability account for VAT Magento collected for another country (OSS/IOSS), see [`crate::tax`] |
//! | `adjustment_tax_treatment` | `no_tax` (default) or `pro_rata` | how credit memo adjustments are taxed, see [`AdjustmentTaxTreatment`] |
//! | `gift_card_ledger_account_id` | account id (null) | gift cards sold (multi-purpose vouchers, outside the scope of VAT) and redeemed |
//! | `store_credit_ledger_account_id` | account id (null) | store credit spent on invoices and refunds to store credit |
//! | `reward_points_ledger_account_id` | account id (null) | reward points spent as money |
//! | `tax_calculated_before_discount` | bool (`false`) | the store's Magento setting "Apply Customer Tax" is *Before Discount*: only then is a line's rate fitted on its subtotal before discount; by default (Magento's own default, *After Discount*) on its net after discount, see [`crate::tax::rates`] |
//! | `oss_registration` | `none` (default), `oss`, `ioss`, `oss_and_ioss` | the business's EU One-Stop-Shop (services, intra-EU distance sales) and/or Import One-Stop-Shop (goods ≤ €150) registration; without it VAT charged at the business's own domestic rate to a consumer abroad is domestic output VAT, see the table in [`crate::tax::routing`] |
//! | `company_name_without_vat_number_is_b2b` | bool (`false`) | issue 18: a buyer is a business for the EU B2B rules when it has a VAT number; the Byte8 module's payload carries none, so a merchant whose VAT numbers only reach Magento's admin may set this to treat a buyer **without** a VAT number but with a company name as a business, as before (reverse charge on an untaxed intra-EU supply instead of a validation failure). The accountant's call: a zero-rated intra-EU supply without the buyer's VAT number is not VAT-free in law, see [`crate::tax::routing`] |
//! | `store_timezone` | IANA name (the business country's zone, [`default_timezone`]) | document and payment dates are the store's local date of Magento's UTC timestamps; UTC when the country has several zones |
//!
//! Unknown values are refused naming the key (`OUT_OF_RANGE` for `adjustment_tax_treatment`,
//! `invalid_format` for an empty account id, `not_in_reference` from [`SyncPolicy::validate_against`]
//! for an account the ledger does not have or does not show on sales documents). A document that
//! needs an account that is not set fails as `validation` naming the field and the key, and
//! nothing of it is posted.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde::{Deserialize, Serialize};

use crate::{
    canonical::serde_time_opt,
    error::{Error, FieldError, Problems, Result},
    money::{parse_decimal, percent_key, serde_decimal},
    reference::ReferenceData,
};

/// The EU goods/services type of a supply (Sage `eu_goods_services_type_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EuSupplyType {
    /// A supply of goods (EU cross-border rules for goods).
    #[serde(rename = "GOODS")]
    Goods,
    /// A supply of services (EU cross-border rules for services).
    #[serde(rename = "SERVICES")]
    Services,
}

impl EuSupplyType {
    /// `GOODS` or `SERVICES`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Goods => "GOODS",
            Self::Services => "SERVICES",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "GOODS" => Some(Self::Goods),
            "SERVICES" => Some(Self::Services),
            _ => None,
        }
    }
}

/// The EU special schemes the business is registered for (policy `oss_registration`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OssRegistration {
    /// No OSS/IOSS registration: tax charged at a domestic rate is domestic VAT.
    #[default]
    None,
    /// The One-Stop-Shop (Union or non-Union): services to EU consumers and intra-EU distance
    /// sales of goods are taxed in the consumer's country.
    Oss,
    /// The Import One-Stop-Shop: imported consignments of goods ≤ €150 to EU consumers are taxed in
    /// the consumer's country.
    Ioss,
    /// Both schemes.
    OssAndIoss,
}

impl OssRegistration {
    /// True when the business declares EU VAT on goods sold to EU consumers through a scheme:
    /// IOSS for a seller outside the EU's VAT area for goods (GB), OSS for an EU or Northern
    /// Ireland seller of goods (Union OSS distance sales).
    pub fn covers_goods(self, seller_in_union_for_goods: bool) -> bool {
        match self {
            Self::None => false,
            Self::Oss => seller_in_union_for_goods,
            Self::Ioss => !seller_in_union_for_goods,
            Self::OssAndIoss => true,
        }
    }

    /// True when the business declares EU VAT on services to EU consumers through OSS.
    pub fn covers_services(self) -> bool {
        matches!(self, Self::Oss | Self::OssAndIoss)
    }
}

/// The time zone of a store whose policy names none: the zone of the ledger business's country
/// (`Europe/London` for GB, `Europe/Dublin` for IE, ...), UTC for a country with several zones
/// (US, CA) or one not listed — set `store_timezone` for those.
pub fn default_timezone(business_country: &str) -> chrono_tz::Tz {
    use chrono_tz::Tz;
    match business_country.trim().to_ascii_uppercase().as_str() {
        "GB" | "UK" | "IM" => Tz::Europe__London,
        "IE" => Tz::Europe__Dublin,
        "FR" | "MC" => Tz::Europe__Paris,
        "DE" => Tz::Europe__Berlin,
        "ES" => Tz::Europe__Madrid,
        "NL" => Tz::Europe__Amsterdam,
        "BE" => Tz::Europe__Brussels,
        "IT" => Tz::Europe__Rome,
        "AT" => Tz::Europe__Vienna,
        "JE" => Tz::Europe__Jersey,
        "GG" => Tz::Europe__Guernsey,
        _ => Tz::UTC,
    }
}

/// Which name becomes the contact's name when both a company and a person exist (P15).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum NamePriority {
    /// The company is the contact; the person is its main contact person.
    #[default]
    Company,
    /// The person is the contact; the company goes on the address.
    Person,
}

/// How a credit memo's `adjustment_positive` ("Adjustment Refund") and `adjustment_negative`
/// ("Adjustment Fee") are booked (policy `adjustment_tax_treatment`).
///
/// The default is `no_tax`, because that is what Magento records: adjustments "are not
/// calculated fields by design" (magento.md 5.7), the memo's `tax_amount` carries no VAT on them,
/// and with `no_tax` the ledger's VAT equals Magento's own tax figures and reports. A merchant
/// whose adjustments are price reductions of taxed supplies (a goodwill refund, a restocking fee
/// kept back) chooses `pro_rata` with their accountant: the VAT return then follows the VAT
/// Regulations 1995 reg. 38 instead of Magento.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdjustmentTaxTreatment {
    /// One line per adjustment on the no-tax rate (Magento's own view; today's behaviour).
    #[default]
    NoTax,
    /// The adjustment is a VAT-inclusive amount split over the memo's own rates in proportion to
    /// the gross each rate refunds (lines and shipping); each part's VAT is its VAT fraction
    /// `amount × rate / (100 + rate)`, half up (reg. 38: a 12.00 refund at 20 % is 10.00 +
    /// 2.00). Parts on zero-rated or foreign lines carry no VAT; a memo with no money lines keeps
    /// `no_tax`.
    ProRata,
}

/// B2C consolidation settings (P18–P23).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct B2cConsolidation {
    /// Master toggle (off by default).
    pub enabled: bool,
    /// Name of the fallback contact.
    pub fallback_contact_name: String,
    /// E-mail of the fallback contact.
    pub fallback_contact_email: String,
    /// Reference of the fallback contact (≤ 10 characters).
    pub fallback_contact_reference: String,
    /// First-time guest orders at or above this total get their own contact; `0` disables it.
    #[serde(with = "serde_decimal")]
    pub min_total_for_individual: Decimal,
    /// Orders with a company name or a buyer VAT number (issue 18) always get their own contact.
    pub always_individual_for_b2b: bool,
}

impl Default for B2cConsolidation {
    fn default() -> Self {
        Self {
            enabled: false,
            fallback_contact_name: "Magento Web Sales".into(),
            fallback_contact_email: "sales@your-shop.example.com".into(),
            fallback_contact_reference: "WEBSALES".into(),
            min_total_for_individual: Decimal::ZERO,
            always_individual_for_b2b: true,
        }
    }
}

/// The sync policy of one binding (contract.md section 4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SyncPolicy {
    /// P1: post invoices that are not yet paid (true), or only those already paid at creation.
    pub sync_unpaid_invoices: bool,
    /// P2: post zero-value invoices.
    pub sync_zero_value_invoices: bool,
    /// P3: skip invoices and credit memos created before this instant.
    #[serde(with = "serde_time_opt")]
    pub sync_since: Option<DateTime<Utc>>,
    /// P4: only these websites (empty: all).
    #[serde(deserialize_with = "null_as_empty")]
    pub website_filter: Vec<u32>,
    /// P5: only these stores (empty: all).
    #[serde(deserialize_with = "null_as_empty")]
    pub store_filter: Vec<u32>,
    /// P6: sync products.
    pub sync_products: bool,
    /// P7: sync stock for managed-stock simple products (needs P6).
    pub sync_stock: bool,
    /// P8: tax rate for lines whose percentage is not in the map.
    pub default_tax_rate_id: Option<String>,
    /// P9: sales ledger account of invoice lines.
    pub default_ledger_account_id: Option<String>,
    /// P10: bank account for payments whose method is not mapped.
    pub default_bank_account_id: Option<String>,
    /// P11: purchase ledger account sent on products (required with `sync_products`).
    pub default_purchase_ledger_account_id: Option<String>,
    /// P12: Magento payment method → bank account id, or `null` for "never auto-pay".
    pub payment_method_map: BTreeMap<String, Option<String>>,
    /// P13: applied tax percentage (`"20.00"`) → tax rate id.
    pub tax_rate_map: BTreeMap<String, String>,
    /// P14: prefix of invoice and credit note references (never doubled).
    pub invoice_number_prefix: Option<String>,
    /// P15: company or person first.
    pub customer_name_priority: NamePriority,
    /// P16: the EU type when a line's product type is not mapped, and for mixed invoices.
    pub default_eu_goods_services_type: EuSupplyType,
    /// P17: Magento product type → EU type.
    pub product_type_eu_goods_map: BTreeMap<String, EuSupplyType>,
    /// P18–P23.
    pub b2c_consolidation: B2cConsolidation,
    /// Extension of this crate: the liability ledger account that receives VAT Magento collected
    /// for another country (OSS/IOSS). When it is not set, such documents fail with an error that
    /// says so instead of dropping the tax.
    pub foreign_vat_ledger_account_id: Option<String>,
    /// Extension of this crate (issue 13): a credit memo whose invoice is already paid is
    /// refunded as cash from the bank account the invoice was paid into (else
    /// `default_bank_account_id`) — on Sage a `CUSTOMER_REFUND` contact payment allocated to the
    /// credit note, on Xero a payment against it — so the bank and the customer's balance are
    /// right (true, the default). False leaves the credit note open as the customer's credit, for
    /// the accountant to refund or use. What the credited invoice still has outstanding is
    /// allocated either way.
    pub refund_paid_credit_memos: bool,
    /// Extension of this crate: how credit memo adjustments are taxed (`no_tax`, the default, or
    /// `pro_rata`; see [`AdjustmentTaxTreatment`]).
    pub adjustment_tax_treatment: AdjustmentTaxTreatment,
    /// Extension of this crate: the liability account of gift cards. A gift card sold (a line of
    /// Magento product type `giftcard`) is a multi-purpose voucher, outside the scope of VAT, booked
    /// here on the no-tax rate; a gift card redeemed (`tenders.gift_cards_amount`) is booked back
    /// out of it. A document that needs it fails as `validation` while it is not set.
    pub gift_card_ledger_account_id: Option<String>,
    /// Extension of this crate: the liability account of store credit (Magento customer balance),
    /// for `tenders.customer_balance_amount` on invoices and refunds to store credit.
    pub store_credit_ledger_account_id: Option<String>,
    /// Extension of this crate: the account of reward points spent as money
    /// (`tenders.reward_currency_amount`).
    pub reward_points_ledger_account_id: Option<String>,
    /// Extension of this crate: the store taxes before discount (Magento "Apply Customer Tax:
    /// Before Discount"); rates are then fitted on the subtotal before discount. Default `false`.
    pub tax_calculated_before_discount: bool,
    /// Extension of this crate: the business's OSS/IOSS registration. Default `none`.
    pub oss_registration: OssRegistration,
    /// Extension of this crate (issue 18): when the buyer has no VAT number, a non-empty company
    /// name makes it a business buyer for the tax router, as before issue 18. Default `false`:
    /// only a VAT number does (see [`crate::tax::routing`]).
    pub company_name_without_vat_number_is_b2b: bool,
    /// Extension of this crate: the store's IANA time zone; `None` means the default of the
    /// ledger business's country ([`default_timezone`]).
    pub store_timezone: Option<String>,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<u32>, D::Error> {
    Ok(Option::<Vec<u32>>::deserialize(d)?.unwrap_or_default())
}

impl Default for SyncPolicy {
    fn default() -> Self {
        let product_type_eu_goods_map = [
            ("simple", EuSupplyType::Goods),
            ("configurable", EuSupplyType::Goods),
            ("bundle", EuSupplyType::Goods),
            ("grouped", EuSupplyType::Goods),
            ("virtual", EuSupplyType::Services),
            ("downloadable", EuSupplyType::Services),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Self {
            sync_unpaid_invoices: true,
            sync_zero_value_invoices: true,
            sync_since: None,
            website_filter: Vec::new(),
            store_filter: Vec::new(),
            sync_products: false,
            sync_stock: false,
            default_tax_rate_id: None,
            default_ledger_account_id: None,
            default_bank_account_id: None,
            default_purchase_ledger_account_id: None,
            payment_method_map: BTreeMap::new(),
            tax_rate_map: BTreeMap::new(),
            invoice_number_prefix: None,
            customer_name_priority: NamePriority::Company,
            default_eu_goods_services_type: EuSupplyType::Goods,
            product_type_eu_goods_map,
            b2c_consolidation: B2cConsolidation::default(),
            foreign_vat_ledger_account_id: None,
            refund_paid_credit_memos: true,
            adjustment_tax_treatment: AdjustmentTaxTreatment::NoTax,
            gift_card_ledger_account_id: None,
            store_credit_ledger_account_id: None,
            reward_points_ledger_account_id: None,
            tax_calculated_before_discount: false,
            oss_registration: OssRegistration::None,
            company_name_without_vat_number_is_b2b: false,
            store_timezone: None,
        }
    }
}

/// What the payment-method decision tree (byte8-spec.md 6.2) decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BankDecision {
    /// The method is mapped to this bank account.
    Mapped(String),
    /// The method is unmapped (or null) and the default bank account applies.
    Default(String),
    /// The method is mapped to None: never auto-pay.
    ExplicitNone,
    /// Unmapped and no default: leave the invoice unpaid.
    Unmapped,
}

/// The longest `fallback_contact_reference` (Sage contact references hold 10 characters and the
/// currency initial needs one).
pub const FALLBACK_REFERENCE_MAX: usize = 10;

impl SyncPolicy {
    /// Reads a policy from JSON: unknown keys and invalid values are errors with the field named,
    /// and the tax-rate map keys are canonicalised.
    ///
    /// # Errors
    /// [`Error::Parse`] for a mistyped or unknown key, [`Error::Invalid`] for a broken rule.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::parse("policy", "", format!("invalid JSON: {e}")))?;
        let mut policy: Self = crate::canonical::read("policy", value).map_err(|e| match e {
            Error::Parse { what, errors } => Error::Parse {
                what,
                errors: errors
                    .into_iter()
                    .map(|fe| {
                        // Every enum key alike: serde's rule already lists the values it takes.
                        if fe.rule.contains("unknown variant") {
                            FieldError::new(
                                fe.path,
                                format!("OUT_OF_RANGE: not one of the allowed values ({})", fe.rule),
                            )
                        } else {
                            fe
                        }
                    })
                    .collect(),
            },
            other => other,
        })?;
        policy.normalize()?;
        Ok(policy)
    }

    /// Canonicalises the tax-rate map keys and checks the rules that need no reference data.
    ///
    /// # Errors
    /// [`Error::Invalid`] listing every broken rule.
    pub fn normalize(&mut self) -> Result<()> {
        let mut p = Problems::new();
        let mut map = BTreeMap::new();
        for (key, id) in std::mem::take(&mut self.tax_rate_map) {
            match parse_decimal(&key) {
                Ok(pct) if pct >= Decimal::ZERO && pct <= dec!(100) => {
                    let canonical = percent_key(pct);
                    if map.insert(canonical.clone(), id).is_some() {
                        p.push(
                            format!("tax_rate_map.{key}"),
                            format!("invalid_format: duplicates the key `{canonical}`"),
                        );
                    }
                }
                _ => p.push(
                    format!("tax_rate_map.{key}"),
                    "invalid_format: must be a percentage between 0 and 100 (e.g. `20.00`)",
                ),
            }
        }
        self.tax_rate_map = map;
        for (path, id) in [
            ("default_tax_rate_id", &self.default_tax_rate_id),
            ("default_ledger_account_id", &self.default_ledger_account_id),
            ("default_bank_account_id", &self.default_bank_account_id),
            ("default_purchase_ledger_account_id", &self.default_purchase_ledger_account_id),
            ("foreign_vat_ledger_account_id", &self.foreign_vat_ledger_account_id),
            ("gift_card_ledger_account_id", &self.gift_card_ledger_account_id),
            ("store_credit_ledger_account_id", &self.store_credit_ledger_account_id),
            ("reward_points_ledger_account_id", &self.reward_points_ledger_account_id),
        ] {
            if id.as_deref().is_some_and(|s| s.trim().is_empty()) {
                p.push(path, "invalid_format: must not be an empty string (use null)");
            }
        }
        if let Some(tz) = &self.store_timezone
            && tz.trim().parse::<chrono_tz::Tz>().is_err()
        {
            p.push(
                "store_timezone",
                format!("OUT_OF_RANGE: `{tz}` is not an IANA time zone name (e.g. Europe/London)"),
            );
        }
        if self.sync_products && self.default_purchase_ledger_account_id.is_none() {
            p.push(
                "default_purchase_ledger_account_id",
                "required: sync_products needs it (Sage validates the purchase ledger account even for sales-only products)",
            );
        }
        if self.sync_stock && !self.sync_products {
            p.push("sync_stock", "requires sync_products = true");
        }
        if let Some(prefix) = &self.invoice_number_prefix
            && prefix.chars().count() > 20
        {
            p.push("invoice_number_prefix", "length: must be at most 20 characters (Sage references hold 25)");
        }
        let b = &self.b2c_consolidation;
        if b.enabled {
            if b.fallback_contact_name.trim().is_empty() {
                p.push("b2c_consolidation.fallback_contact_name", "required: must not be empty when enabled");
            }
            if b.fallback_contact_email.trim().is_empty() {
                p.push("b2c_consolidation.fallback_contact_email", "required: must not be empty when enabled");
            } else if !crate::canonical::looks_like_email(b.fallback_contact_email.trim()) {
                p.push("b2c_consolidation.fallback_contact_email", "email: must be a well-formed e-mail address");
            } else if b.fallback_contact_email.trim().chars().count() > 100 {
                p.push(
                    "b2c_consolidation.fallback_contact_email",
                    "length: must be at most 100 characters (Sage's limit)",
                );
            }
            if b.fallback_contact_reference.trim().is_empty() {
                p.push("b2c_consolidation.fallback_contact_reference", "required: must not be empty when enabled");
            }
        }
        if b.fallback_contact_reference.chars().count() > FALLBACK_REFERENCE_MAX {
            p.push("b2c_consolidation.fallback_contact_reference", "length: must be at most 10 characters");
        }
        if b.min_total_for_individual < Decimal::ZERO {
            p.push("b2c_consolidation.min_total_for_individual", "OUT_OF_RANGE: must be ≥ 0");
        }
        p.into_result("policy")
    }

    /// Checks every id of the policy against the ledger's reference data (`not_in_reference`):
    /// tax rates, sales-visible ledger accounts, expense-visible purchase accounts, active bank
    /// accounts (an inactive one is refused like a missing one).
    ///
    /// # Errors
    /// [`Error::Invalid`] listing every id that is not in the reference data.
    pub fn validate_against(&self, reference: &ReferenceData) -> Result<()> {
        let mut p = Problems::new();
        let missing =
            |what: &str, id: &str| format!("not_in_reference: (missing) {id} is not a {what} of this business");
        if let Some(id) = &self.default_tax_rate_id
            && reference.tax_rate(id).is_none()
        {
            p.push("default_tax_rate_id", missing("tax rate", id));
        }
        for (key, id) in &self.tax_rate_map {
            if reference.tax_rate(id).is_none() {
                p.push(format!("tax_rate_map.{key}"), missing("tax rate", id));
            }
        }
        for (path, id, sales) in [
            ("default_ledger_account_id", &self.default_ledger_account_id, true),
            ("default_purchase_ledger_account_id", &self.default_purchase_ledger_account_id, false),
            ("foreign_vat_ledger_account_id", &self.foreign_vat_ledger_account_id, true),
            ("gift_card_ledger_account_id", &self.gift_card_ledger_account_id, true),
            ("store_credit_ledger_account_id", &self.store_credit_ledger_account_id, true),
            ("reward_points_ledger_account_id", &self.reward_points_ledger_account_id, true),
        ] {
            if let Some(id) = id {
                match reference.ledger_account(id) {
                    None => p.push(path, missing("ledger account", id)),
                    Some(a) if sales && !a.visible_in_sales => {
                        p.push(path, format!("not_in_reference: {id} is not visible on sales documents"))
                    }
                    Some(a) if !sales && !a.visible_in_expenses => {
                        p.push(path, format!("not_in_reference: {id} is not visible as an expense account"))
                    }
                    Some(_) => {}
                }
            }
        }
        // An inactive bank account (closed in the ledger: Sage's `is_active: false`) is refused
        // like a missing one: payments into it would fail or land where no one looks.
        let bank = |id: &str| match reference.bank_account(id) {
            None => Some(missing("bank account", id)),
            Some(b) if !b.active => Some(format!(
                "not_in_reference: {id} ({}) is an inactive bank account; reactivate it in the ledger or choose another",
                b.name
            )),
            Some(_) => None,
        };
        if let Some(id) = &self.default_bank_account_id
            && let Some(problem) = bank(id)
        {
            p.push("default_bank_account_id", problem);
        }
        for (method, id) in &self.payment_method_map {
            if let Some(id) = id
                && let Some(problem) = bank(id)
            {
                p.push(format!("payment_method_map.{method}"), problem);
            }
        }
        p.into_result("policy")
    }

    /// The payment-method decision tree of byte8-spec.md 6.2.
    pub fn bank_account_for(&self, method: Option<&str>) -> BankDecision {
        if let Some(m) = method {
            match self.payment_method_map.get(m) {
                Some(Some(id)) => return BankDecision::Mapped(id.clone()),
                Some(None) => return BankDecision::ExplicitNone,
                None => {}
            }
        }
        match &self.default_bank_account_id {
            Some(id) => BankDecision::Default(id.clone()),
            None => BankDecision::Unmapped,
        }
    }

    /// The store's time zone: `store_timezone` (validated by [`Self::normalize`]), else the
    /// default of the ledger business's country ([`default_timezone`]).
    pub fn timezone(&self, business_country: &str) -> chrono_tz::Tz {
        self.store_timezone
            .as_deref()
            .and_then(|t| t.trim().parse::<chrono_tz::Tz>().ok())
            .unwrap_or_else(|| default_timezone(business_country))
    }

    /// The store's local calendar date of a UTC instant (document and payment dates).
    pub fn local_date(&self, at: DateTime<Utc>, business_country: &str) -> chrono::NaiveDate {
        at.with_timezone(&self.timezone(business_country)).date_naive()
    }

    /// The EU type of a line of `product_type` (P17, else P16).
    pub fn eu_type_for(&self, product_type: Option<&str>) -> EuSupplyType {
        product_type
            .and_then(|t| self.product_type_eu_goods_map.get(t).copied())
            .unwrap_or(self.default_eu_goods_services_type)
    }

    /// The document reference for a Magento increment id: the prefix added unless the id already
    /// carries it (P14, never doubled). Not truncated; the transforms apply the ledger's limit.
    pub fn document_reference(&self, increment_id: &str) -> String {
        match self.invoice_number_prefix.as_deref().filter(|p| !p.is_empty()) {
            Some(prefix) if !increment_id.starts_with(prefix) => format!("{prefix}{increment_id}"),
            _ => increment_id.to_owned(),
        }
    }

    /// The skip reason when the website/store filters (P4, P5) keep out an event of this website
    /// and store (`filtered_website`, `filtered_store`), `None` when it passes.
    pub fn filter_skip_reason(&self, website_id: u32, store_id: u32) -> Option<&'static str> {
        if !self.website_filter.is_empty() && !self.website_filter.contains(&website_id) {
            return Some("filtered_website");
        }
        if !self.store_filter.is_empty() && !self.store_filter.contains(&store_id) {
            return Some("filtered_store");
        }
        None
    }
}

impl EuSupplyType {
    /// Reads `GOODS` / `SERVICES`.
    ///
    /// # Errors
    /// `OUT_OF_RANGE` for anything else.
    pub fn from_wire(s: &str) -> Result<Self> {
        Self::parse(s)
            .ok_or_else(|| Error::invalid("policy", "", format!("OUT_OF_RANGE: `{s}` is not GOODS or SERVICES")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_byte8() {
        let p = SyncPolicy::from_json("{}").unwrap();
        assert!(p.sync_unpaid_invoices && p.sync_zero_value_invoices);
        assert!(!p.sync_products && !p.sync_stock);
        assert_eq!(p.customer_name_priority, NamePriority::Company);
        assert_eq!(p.default_eu_goods_services_type, EuSupplyType::Goods);
        assert_eq!(p.product_type_eu_goods_map.get("virtual"), Some(&EuSupplyType::Services));
        assert_eq!(p.product_type_eu_goods_map.len(), 6);
        assert_eq!(p.b2c_consolidation.fallback_contact_reference, "WEBSALES");
        assert!(p.b2c_consolidation.always_individual_for_b2b);
    }

    #[test]
    fn refund_paid_credit_memos_defaults_on_and_is_checked_like_every_key() {
        assert!(SyncPolicy::from_json("{}").unwrap().refund_paid_credit_memos);
        assert!(!SyncPolicy::from_json(r#"{"refund_paid_credit_memos":false}"#).unwrap().refund_paid_credit_memos);
        let err = SyncPolicy::from_json(r#"{"refund_paid_credit_memos":"no"}"#).unwrap_err();
        assert!(err.to_string().contains("refund_paid_credit_memos"), "{err}");
        let err = SyncPolicy::from_json(r#"{"refund_paid_credit_memo":false}"#).unwrap_err();
        assert!(err.to_string().contains("refund_paid_credit_memo"), "{err}");
    }

    #[test]
    fn unknown_key_is_rejected_with_its_name() {
        let err = SyncPolicy::from_json(r#"{"sync_unpaid":true}"#).unwrap_err();
        assert!(err.to_string().contains("sync_unpaid"), "{err}");
        let err = SyncPolicy::from_json(r#"{"b2c_consolidation":{"enabled":true,"nope":1}}"#).unwrap_err();
        assert!(err.to_string().contains("b2c_consolidation"), "{err}");
        assert!(err.to_string().contains("nope"), "{err}");
    }

    #[test]
    fn tax_keys_are_canonicalised_and_bad_ones_named() {
        let p = SyncPolicy::from_json(r#"{"tax_rate_map":{"20":"GB_STANDARD"," 5.0 ":"GB_LOWER"}}"#).unwrap();
        assert_eq!(p.tax_rate_map.get("20.00").map(String::as_str), Some("GB_STANDARD"));
        assert_eq!(p.tax_rate_map.get("5.00").map(String::as_str), Some("GB_LOWER"));
        let err = SyncPolicy::from_json(r#"{"tax_rate_map":{"-1":"X","abc":"Y"}}"#).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("tax_rate_map.-1: invalid_format"), "{msg}");
        assert!(msg.contains("tax_rate_map.abc: invalid_format"), "{msg}");
    }

    #[test]
    fn issue_12_keys_default_and_refuse_unknown_values_naming_the_key() {
        let p = SyncPolicy::default();
        assert_eq!(p.adjustment_tax_treatment, AdjustmentTaxTreatment::NoTax, "Magento's own view by default");
        assert_eq!(p.gift_card_ledger_account_id, None);
        let p = SyncPolicy::from_json(r#"{"adjustment_tax_treatment":"pro_rata","gift_card_ledger_account_id":"GC"}"#)
            .unwrap();
        assert_eq!(p.adjustment_tax_treatment, AdjustmentTaxTreatment::ProRata);
        assert_eq!(p.gift_card_ledger_account_id.as_deref(), Some("GC"));
        let err = SyncPolicy::from_json(r#"{"adjustment_tax_treatment":"half"}"#).unwrap_err().to_string();
        assert!(err.contains("adjustment_tax_treatment") && err.contains("OUT_OF_RANGE"), "{err}");
        for key in ["gift_card_ledger_account_id", "store_credit_ledger_account_id", "reward_points_ledger_account_id"]
        {
            let err = SyncPolicy::from_json(&format!(r#"{{"{key}":" "}}"#)).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains("invalid_format"), "{err}");
            let err = SyncPolicy::from_json(&format!(r#"{{"{key}":7}}"#)).unwrap_err().to_string();
            assert!(err.contains(key), "{err}");
        }
    }

    #[test]
    fn issue_12_accounts_are_checked_against_the_ledger() {
        let reference =
            ReferenceData::demo_uk(chrono::TimeZone::with_ymd_and_hms(&Utc, 2026, 11, 22, 9, 0, 0).unwrap());
        let p = SyncPolicy::from_json(
            r#"{"gift_card_ledger_account_id":"NOPE","store_credit_ledger_account_id":"OSS","reward_points_ledger_account_id":"COS"}"#,
        )
        .unwrap();
        let err = p.validate_against(&reference).unwrap_err().to_string();
        assert!(err.contains("gift_card_ledger_account_id") && err.contains("not_in_reference"), "{err}");
        assert!(err.contains("reward_points_ledger_account_id"), "COS is not visible on sales documents: {err}");
        assert!(!err.contains("store_credit_ledger_account_id"), "OSS is a sales-visible account: {err}");
    }

    #[test]
    fn eu_type_out_of_range() {
        let err = SyncPolicy::from_json(r#"{"default_eu_goods_services_type":"BOTH"}"#).unwrap_err();
        assert!(err.to_string().contains("OUT_OF_RANGE"), "{err}");
        assert!(err.to_string().contains("default_eu_goods_services_type"), "{err}");
        let err = SyncPolicy::from_json(r#"{"product_type_eu_goods_map":{"gift":"X"}}"#).unwrap_err();
        assert!(err.to_string().contains("OUT_OF_RANGE"), "{err}");
    }

    #[test]
    fn b2c_rules() {
        let err = SyncPolicy::from_json(
            r#"{"b2c_consolidation":{"enabled":true,"fallback_contact_name":"","fallback_contact_email":"nope","fallback_contact_reference":"WEBSALES123"}}"#,
        )
        .unwrap_err();
        let paths: Vec<&str> = err.field_errors().iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            vec![
                "b2c_consolidation.fallback_contact_name",
                "b2c_consolidation.fallback_contact_email",
                "b2c_consolidation.fallback_contact_reference"
            ]
        );
    }

    #[test]
    fn products_need_a_purchase_account() {
        let err = SyncPolicy::from_json(r#"{"sync_products":true}"#).unwrap_err();
        assert!(err.to_string().contains("default_purchase_ledger_account_id: required"), "{err}");
    }

    #[test]
    fn bank_decision_tree() {
        let p = SyncPolicy::from_json(
            r#"{"payment_method_map":{"braintree":"BANK1","checkmo":null},"default_bank_account_id":"BANK0"}"#,
        )
        .unwrap();
        assert_eq!(p.bank_account_for(Some("braintree")), BankDecision::Mapped("BANK1".into()));
        assert_eq!(p.bank_account_for(Some("checkmo")), BankDecision::ExplicitNone);
        assert_eq!(p.bank_account_for(Some("paypal")), BankDecision::Default("BANK0".into()));
        assert_eq!(p.bank_account_for(None), BankDecision::Default("BANK0".into()));
        let p = SyncPolicy::from_json(r#"{}"#).unwrap();
        assert_eq!(p.bank_account_for(Some("paypal")), BankDecision::Unmapped);
    }

    #[test]
    fn prefix_is_never_doubled() {
        let p = SyncPolicy::from_json(r#"{"invoice_number_prefix":"MAG-"}"#).unwrap();
        assert_eq!(p.document_reference("100012345"), "MAG-100012345");
        assert_eq!(p.document_reference("MAG-100012345"), "MAG-100012345");
        let p = SyncPolicy::from_json(r#"{}"#).unwrap();
        assert_eq!(p.document_reference("000000123"), "000000123");
    }

    #[test]
    fn new_keys_default_and_refuse_unknown_values_naming_the_key() {
        let p = SyncPolicy::from_json("{}").unwrap();
        assert!(!p.tax_calculated_before_discount);
        assert_eq!(p.oss_registration, OssRegistration::None);
        assert!(!p.company_name_without_vat_number_is_b2b, "only a VAT number makes a business buyer by default");
        assert!(
            SyncPolicy::from_json(r#"{"company_name_without_vat_number_is_b2b":true}"#)
                .unwrap()
                .company_name_without_vat_number_is_b2b
        );
        let err = SyncPolicy::from_json(r#"{"company_name_without_vat_number_is_b2b":"yes"}"#).unwrap_err().to_string();
        assert!(err.contains("company_name_without_vat_number_is_b2b"), "{err}");
        assert_eq!(p.timezone("GB"), chrono_tz::Tz::Europe__London);
        assert_eq!(p.timezone("IE"), chrono_tz::Tz::Europe__Dublin);
        let p = SyncPolicy::from_json(
            r#"{"oss_registration":"oss_and_ioss","store_timezone":"Europe/Berlin","tax_calculated_before_discount":true}"#,
        )
        .unwrap();
        assert_eq!(p.oss_registration, OssRegistration::OssAndIoss);
        assert_eq!(p.timezone("GB"), chrono_tz::Tz::Europe__Berlin);
        let err = SyncPolicy::from_json(r#"{"oss_registration":"moss"}"#).unwrap_err().to_string();
        assert!(err.contains("oss_registration") && err.contains("OUT_OF_RANGE"), "{err}");
        let err = SyncPolicy::from_json(r#"{"store_timezone":"Europe/Londres"}"#).unwrap_err().to_string();
        assert!(err.contains("store_timezone") && err.contains("Europe/Londres"), "{err}");
        let err = SyncPolicy::from_json(r#"{"tax_calculated_before_discount":"yes"}"#).unwrap_err().to_string();
        assert!(err.contains("tax_calculated_before_discount"), "{err}");
    }

    #[test]
    fn local_date_is_the_stores() {
        // 23:30 UTC on 30 June is 00:30 BST on 1 July.
        let at = "2025-06-30T23:30:00Z".parse::<DateTime<Utc>>().unwrap();
        let p = SyncPolicy::from_json("{}").unwrap();
        assert_eq!(p.local_date(at, "GB"), chrono::NaiveDate::from_ymd_opt(2025, 7, 1).unwrap());
        // In winter London is UTC: 23:30 UTC on 31 December stays in December.
        let at = "2025-12-31T23:30:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(p.local_date(at, "GB"), chrono::NaiveDate::from_ymd_opt(2025, 12, 31).unwrap());
        let p = SyncPolicy::from_json(r#"{"store_timezone":"America/Los_Angeles"}"#).unwrap();
        let at = "2025-07-01T05:00:00Z".parse::<DateTime<Utc>>().unwrap();
        assert_eq!(p.local_date(at, "GB"), chrono::NaiveDate::from_ymd_opt(2025, 6, 30).unwrap());
    }

    #[test]
    fn filters() {
        let p = SyncPolicy::from_json(r#"{"website_filter":[1],"store_filter":null}"#).unwrap();
        assert_eq!(p.filter_skip_reason(2, 1), Some("filtered_website"));
        assert_eq!(p.filter_skip_reason(1, 7), None);
        let p = SyncPolicy::from_json(r#"{"store_filter":[3]}"#).unwrap();
        assert_eq!(p.filter_skip_reason(1, 7), Some("filtered_store"));
    }

    #[test]
    fn inactive_bank_accounts_are_refused_like_missing_ones() {
        let mut r = ReferenceData::demo_uk(chrono::DateTime::UNIX_EPOCH);
        let p = SyncPolicy::from_json(
            r#"{"default_bank_account_id":"BANK","payment_method_map":{"checkmo":"BANK-EUR","free":null}}"#,
        )
        .unwrap();
        p.validate_against(&r).unwrap();
        r.bank_accounts.iter_mut().for_each(|b| b.active = false);
        let e = p.validate_against(&r).unwrap_err();
        let paths: Vec<&str> = e.field_errors().iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, vec!["default_bank_account_id", "payment_method_map.checkmo"]);
        assert!(e.to_string().contains("BANK (Current account) is an inactive bank account"), "{e}");
    }
}
