//! Accounting providers: the ledgers the crate posts to.
//!
//! - [`sage`]: Sage Business Cloud Accounting v3.1.

pub mod sage;
pub mod types;

pub use types::{ItemKind, ItemLink};
