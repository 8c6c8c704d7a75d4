//! Reference data of a ledger business, in provider-neutral terms: the business's own profile,
//! tax rates, ledger accounts, bank accounts, payment methods and currencies.
//!
//! A provider fetches it (Sage: `/financial_settings`, `/business_settings`, `/tax_rates`,
//! `/ledger_accounts`, `/bank_accounts`, `/payment_methods`, `/currencies`) and caches it; the
//! policy is validated against it and the transforms read tax-rate percentages from it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::money::{Currency, serde_currency, serde_decimal_opt};

/// The ledger business's own profile: what tax routing and currency handling depend on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusinessProfile {
    /// The ledger's id of the business.
    pub id: String,
    /// Display name.
    pub name: String,
    /// ISO 3166-1 alpha-2 country of the business (`GB`, `IE`, `CA`).
    pub country: String,
    /// True for a UK business registered in Northern Ireland (goods follow EU rules).
    #[serde(default)]
    pub northern_ireland: bool,
    /// The base (home) currency.
    #[serde(with = "serde_currency")]
    pub base_currency: Currency,
    /// Whether foreign-currency documents are enabled.
    pub multi_currency: bool,
    /// The subscription tier as the provider names it (`Accounting Plus`), when known.
    #[serde(default)]
    pub subscription: Option<String>,
}

/// A tax rate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaxRate {
    /// The provider's id (`GB_STANDARD`, or a GUID).
    pub id: String,
    /// Name (`Standard 20.00%`).
    pub name: String,
    /// Current percentage (20 for 20 %), when the provider says.
    #[serde(default, with = "serde_decimal_opt")]
    pub percentage: Option<Decimal>,
    /// Whether the provider's UI shows it.
    #[serde(default = "yes")]
    pub visible: bool,
}

fn yes() -> bool {
    true
}

/// A ledger (nominal) account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerAccount {
    /// The provider's id.
    pub id: String,
    /// Display name (`4000 Sales Type A`).
    pub name: String,
    /// Nominal code, when the provider has one.
    #[serde(default)]
    pub code: Option<String>,
    /// Selectable on sales documents.
    pub visible_in_sales: bool,
    /// Selectable as a purchase / expense account.
    pub visible_in_expenses: bool,
}

/// A bank account payments can be received into.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BankAccount {
    /// The provider's id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Its currency (a bank account's currency cannot change).
    #[serde(default, with = "crate::reference::serde_currency_opt")]
    pub currency: Option<Currency>,
    /// Whether it is active.
    #[serde(default = "yes")]
    pub active: bool,
}

/// A payment method of the ledger (`CREDIT_DEBIT`, `BANK_TRANSFER`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentMethod {
    /// The provider's id.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// Everything the cache holds for one business.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReferenceData {
    /// The business.
    pub business: BusinessProfile,
    /// Tax rates.
    pub tax_rates: Vec<TaxRate>,
    /// Ledger accounts.
    pub ledger_accounts: Vec<LedgerAccount>,
    /// Bank accounts.
    pub bank_accounts: Vec<BankAccount>,
    /// Payment methods.
    pub payment_methods: Vec<PaymentMethod>,
    /// Currencies the business can trade in.
    #[serde(default)]
    pub currencies: Vec<String>,
    /// When it was fetched.
    pub fetched_at: DateTime<Utc>,
    /// Provider-specific extras (kept opaque to the rest of the crate).
    #[serde(default)]
    pub extensions: BTreeMap<String, String>,
}

impl ReferenceData {
    /// The tax rate with `id`.
    pub fn tax_rate(&self, id: &str) -> Option<&TaxRate> {
        self.tax_rates.iter().find(|r| r.id == id)
    }

    /// The ledger account with `id`.
    pub fn ledger_account(&self, id: &str) -> Option<&LedgerAccount> {
        self.ledger_accounts.iter().find(|r| r.id == id)
    }

    /// The bank account with `id`.
    pub fn bank_account(&self, id: &str) -> Option<&BankAccount> {
        self.bank_accounts.iter().find(|r| r.id == id)
    }

    /// The percentages of the business's visible tax rates, for routing.
    pub fn domestic_percentages(&self) -> Vec<Decimal> {
        let mut v: Vec<Decimal> = self.tax_rates.iter().filter_map(|r| r.percentage).collect();
        v.sort();
        v.dedup();
        v
    }
}

/// Serde for an optional currency code.
pub mod serde_currency_opt {
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    use crate::money::Currency;

    /// Reads an optional currency code.
    ///
    /// # Errors
    /// When a present code is not ISO 4217.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Currency>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) => crate::money::parse_currency(&s).map(Some).map_err(D::Error::custom),
        }
    }

    /// Writes the code or `null`.
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

impl ReferenceData {
    /// A demo UK business: GBP base currency, multi-currency on, the five UK system tax rates,
    /// a sales account `SALES` (4000), a cost-of-sales account `COS` (5000), a liability account
    /// `OSS` (2206, VAT on destination sales), bank accounts `BANK` (GBP) and `BANK-EUR`, and the
    /// `CREDIT_DEBIT` payment method. The built-in simulator serves the same data; examples and
    /// tests use it where no ledger is at hand.
    pub fn demo_uk(fetched_at: DateTime<Utc>) -> Self {
        let rates = [
            ("GB_STANDARD", "Standard 20.00%", Decimal::from(20)),
            ("GB_LOWER", "Lower 5.00%", Decimal::from(5)),
            ("GB_ZERO", "Zero Rated 0.00%", Decimal::ZERO),
            ("GB_EXEMPT", "Exempt 0.00%", Decimal::ZERO),
            ("GB_NO_TAX", "No Tax", Decimal::ZERO),
        ];
        let account = |id: &str, name: &str, code: &str, sales: bool, expenses: bool| LedgerAccount {
            id: id.into(),
            name: name.into(),
            code: Some(code.into()),
            visible_in_sales: sales,
            visible_in_expenses: expenses,
        };
        Self {
            business: BusinessProfile {
                id: "demo-business".into(),
                name: "Demo Shop Ltd".into(),
                country: "GB".into(),
                northern_ireland: false,
                base_currency: Currency::GBP,
                multi_currency: true,
                subscription: Some("Accounting Plus".into()),
            },
            tax_rates: rates
                .into_iter()
                .map(|(id, name, p)| TaxRate { id: id.into(), name: name.into(), percentage: Some(p), visible: true })
                .collect(),
            ledger_accounts: vec![
                account("SALES", "4000 Sales", "4000", true, false),
                account("COS", "5000 Cost of sales", "5000", false, true),
                account("OSS", "2206 VAT on destination sales", "2206", true, false),
            ],
            bank_accounts: vec![
                BankAccount {
                    id: "BANK".into(),
                    name: "Current account".into(),
                    currency: Some(Currency::GBP),
                    active: true,
                },
                BankAccount {
                    id: "BANK-EUR".into(),
                    name: "Euro account".into(),
                    currency: Some(Currency::EUR),
                    active: true,
                },
            ],
            payment_methods: vec![PaymentMethod { id: "CREDIT_DEBIT".into(), name: "Credit/Debit card".into() }],
            currencies: vec!["GBP".into(), "EUR".into(), "USD".into(), "CAD".into(), "CHF".into()],
            fetched_at,
            extensions: BTreeMap::new(),
        }
    }
}
