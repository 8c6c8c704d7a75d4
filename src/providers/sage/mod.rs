//! Sage Business Cloud Accounting, API v3.1.
//!
//! - [`SageBuilder`] → [`SageProvider`]: the [`AccountingProvider`](super::AccountingProvider)
//!   over HTTP (OAuth custody, `X-Business`, rate limits, retries, the reference cache).
//! - [`transform`]: pure functions from canonical entities to Sage requests.
//! - [`model`]: serde wire types built from Sage's Swagger spec.
//! - [`error`]: Sage's error answers mapped to the crate's error classes.
//!
//! Settling a credit memo (contract.md 6): the credit note goes on the invoice's contact; one
//! `contact_allocations` request (`CUSTOMER_ALLOCATION`) settles it against what the invoice has
//! outstanding; when the invoice is already paid, Sage refuses an allocation, so what is left is
//! refunded with one `contact_payments` request (`CUSTOMER_REFUND`) from the bank account the
//! invoice was paid into, allocated to the credit note inline
//! ([`transform::credit_note_refund`]; Standard and Plus only — Start has no refunds, Q13). The
//! earlier choice left that credit note open; the policy's `refund_paid_credit_memos: false`
//! keeps it so.
//!
//! Every Sage quirk the crate works around is listed, with its evidence and the test that proves
//! the workaround, in `docs/QUIRKS.md`.

mod builder;
mod client;
pub mod error;
mod listing;
pub mod model;
mod provider;
pub mod transform;

pub use builder::{DEFAULT_BASE_URL, DEFAULT_TOKEN_URL, SageBuilder, SageConfigKey};
pub use client::RequestStats;
pub use provider::{SageProvider, capabilities_of};

/// The provider name used in outcomes and the sync-state callback.
pub const PROVIDER: &str = "sage_accounting";
