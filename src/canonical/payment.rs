//! `MagentoPayment` (byte8-spec.md section 3.6).

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::Check;
use crate::{
    error::Result,
    money::{Currency, serde_currency, serde_decimal},
};

/// The payment of an invoice, as `GET /V1/byte8/payment/{invoice_id}` serves it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MagentoPayment {
    /// The invoice id (the payment endpoint is keyed by invoice).
    pub magento_id: u64,
    /// The invoice id.
    pub invoice_id: u64,
    /// The invoice number.
    pub invoice_increment_id: String,
    /// Magento payment method code.
    pub method: String,
    /// Currency (the invoice currency).
    #[serde(with = "serde_currency")]
    pub currency: Currency,
    /// The amount: the invoice grand total.
    #[serde(with = "serde_decimal")]
    pub amount: Decimal,
    /// When it was captured (the invoice's creation time).
    #[serde(with = "super::serde_time")]
    pub captured_at: DateTime<Utc>,
    /// The gateway's last transaction id.
    #[serde(default)]
    pub gateway_txn_id: Option<String>,
    /// The payment's `additional_information`, free-form.
    #[serde(default)]
    pub gateway_metadata: serde_json::Value,
}

impl MagentoPayment {
    /// Checks the payment's values.
    ///
    /// # Errors
    /// [`Error::Invalid`](crate::Error::Invalid) listing every broken rule.
    pub fn validate(&self) -> Result<()> {
        Check::run("payment", |c| {
            if self.amount.is_sign_negative() && !self.amount.is_zero() {
                c.fail("amount", "must be ≥ 0");
            }
            super::totals::check_amount(c, "amount", self.amount);
            if self.invoice_id == 0 {
                c.fail("invoice_id", "must be > 0");
            }
            if self.magento_id != self.invoice_id {
                c.fail("magento_id", format!("must equal invoice_id ({})", self.invoice_id));
            }
            if self.invoice_increment_id.trim().is_empty() {
                c.fail("invoice_increment_id", "must not be empty");
            }
        })
    }
}
