//! The outcome of one event (contract.md section 2): the shape the Magento module's
//! `POST /V1/byte8/sync-state` accepts (byte8-spec.md 12.6), plus the key and a human message.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::{canonical::serde_time, error::ErrorCode};

/// `synced`, `skipped` or `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncStatus {
    /// Reached the ledger (or was already there).
    Synced,
    /// Filtered out by policy; never reached the ledger.
    Skipped,
    /// Did not reach the ledger; `error_code` says why.
    Failed,
}

impl SyncStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Synced => "synced",
            Self::Skipped => "skipped",
            Self::Failed => "failed",
        }
    }
}

/// The documented skip reasons (byte8-spec.md 5) and the ones this crate adds where the docs
/// name none (contract.md section 2).
pub mod skip {
    /// `invoice.paid` with no bank account resolved (unmapped, or mapped to None).
    pub const PAYMENT_METHOD_NOT_MAPPED: &str = "payment_method_not_mapped";
    /// Created before `sync_since`.
    pub const OUTSIDE_SYNC_SINCE: &str = "outside_sync_since";
    /// A £0 invoice with `sync_zero_value_invoices = false`.
    pub const ZERO_VALUE_INVOICE: &str = "zero_value_invoice";
    /// A configurable, bundle, grouped or other unsupported product type (upper case, as Byte8
    /// documents it).
    pub const PRODUCT_TYPE_NOT_SUPPORTED: &str = "PRODUCT_TYPE_NOT_SUPPORTED";
    /// Outside `website_filter`.
    pub const FILTERED_WEBSITE: &str = "filtered_website";
    /// Outside `store_filter`.
    pub const FILTERED_STORE: &str = "filtered_store";
    /// Not paid at creation with `sync_unpaid_invoices = false`.
    pub const UNPAID_INVOICE: &str = "unpaid_invoice";
    /// `product.upserted` with `sync_products = false`.
    pub const PRODUCTS_DISABLED: &str = "products_disabled";
    /// A cancelled invoice (Magento never publishes one; this crate refuses it if it comes).
    pub const CANCELLED_INVOICE: &str = "cancelled_invoice";
}

/// One outcome line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    /// The event's key (null when the line could not be read that far).
    pub idempotency_key: Option<String>,
    /// The event name, as given.
    pub event: Option<String>,
    /// `invoice`, `creditmemo`, `customer`, `product` (the event name before its first dot).
    pub entity_type: Option<String>,
    /// The Magento entity id.
    pub magento_entity_id: Option<u64>,
    /// The provider (`sage_accounting`).
    pub provider: String,
    /// What happened.
    pub sync_status: SyncStatus,
    /// The ledger's id of what was posted (or found).
    pub provider_entity_id: Option<String>,
    /// The ledger's own number (`SI-1`), when it has one.
    pub provider_reference: Option<String>,
    /// Why it was skipped.
    pub skip_reason: Option<String>,
    /// Why it failed.
    pub error_code: Option<ErrorCode>,
    /// What went wrong, or what an operator should know, in words.
    pub message: Option<String>,
    /// When this outcome was reached.
    #[serde(with = "serde_time")]
    pub last_sync_at: DateTime<Utc>,
}

impl Outcome {
    /// The entity type of an event name (`invoice.paid` → `invoice`).
    pub fn entity_type_of(event: &str) -> Option<String> {
        event.split_once('.').map(|(t, _)| t.to_owned()).filter(|t| !t.is_empty())
    }
}
