//! `MagentoProduct` (byte8-spec.md section 3.7).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::Check;
use crate::{error::Result, money::serde_decimal_opt};

/// A Magento catalog product as the Byte8 module serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MagentoProduct {
    /// Magento product entity id.
    pub magento_id: u64,
    /// SKU (the ledger's item code).
    pub sku: String,
    /// Name, possibly with HTML entities.
    pub name: String,
    /// Magento type id, verbatim (`simple`, `virtual`, `configurable`, custom types).
    pub product_type: String,
    /// Catalog price in the base currency.
    #[serde(default, with = "serde_decimal_opt")]
    pub price: Option<Decimal>,
    /// Special price (not synced: only `price` is).
    #[serde(default, with = "serde_decimal_opt")]
    pub special_price: Option<Decimal>,
    /// Cost (the stock movement's cost price).
    #[serde(default, with = "serde_decimal_opt")]
    pub cost: Option<Decimal>,
    /// The product's weight in the store's unit, when set.
    #[serde(default, with = "serde_decimal_opt")]
    pub weight: Option<Decimal>,
    /// Quantity in stock; null when there is no stock item.
    #[serde(default, with = "serde_decimal_opt")]
    pub stock_qty: Option<Decimal>,
    /// Whether Magento manages stock for it.
    #[serde(default)]
    pub manage_stock: bool,
    /// Tax class id, as a string.
    #[serde(default)]
    pub tax_class: Option<String>,
    /// Websites; empty means all.
    #[serde(default)]
    pub website_ids: Vec<u32>,
    /// When it was created.
    #[serde(default, with = "super::serde_time_opt")]
    pub created_at: Option<DateTime<Utc>>,
    /// When it was last changed.
    #[serde(default, with = "super::serde_time_opt")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl MagentoProduct {
    /// Checks the product's values.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) listing every broken rule.
    pub fn validate(&self) -> Result<()> {
        Check::run("product", |c| {
            if self.sku.trim().is_empty() {
                c.fail("sku", "must not be empty");
            }
            if self.product_type.trim().is_empty() {
                c.fail("product_type", "must not be empty");
            }
            for (name, v) in [("price", self.price), ("cost", self.cost), ("special_price", self.special_price)] {
                if let Some(v) = v {
                    if v.is_sign_negative() && !v.is_zero() {
                        c.fail(name, "must be ≥ 0");
                    }
                    super::totals::check_amount(c, name, v);
                }
            }
            for (name, v) in [("stock_qty", self.stock_qty), ("weight", self.weight)] {
                if let Some(v) = v {
                    super::totals::check_amount(c, name, v);
                }
            }
        })
    }

    /// True when the product is on `website_id` (an empty list means every website).
    pub fn on_website(&self, website_id: u32) -> bool {
        self.website_ids.is_empty() || self.website_ids.contains(&website_id)
    }
}
