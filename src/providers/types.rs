//! Provider-neutral types shared by the providers and their callers.

use serde::{Deserialize, Serialize};

/// The kind of ledger item a Magento product becomes (byte8-spec.md 6.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    /// A non-stock product (Magento `simple` without stock sync).
    Product,
    /// A service (Magento `virtual`, `downloadable`).
    Service,
    /// A stock item (Magento `simple` with managed stock and stock sync on).
    StockItem,
}

impl ItemKind {
    /// `product` / `service` / `stock_item`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Product => "product",
            Self::Service => "service",
            Self::StockItem => "stock_item",
        }
    }
}

/// A ledger item a document line links to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ItemLink {
    /// The ledger's id of the item.
    pub id: String,
    /// Its kind.
    pub kind: ItemKind,
}
