//! Xero Accounting API 2.0 (feature `xero`).
//!
//! - [`XeroBuilder`] → [`XeroProvider`]: the [`AccountingProvider`](super::AccountingProvider)
//!   over HTTP: OAuth custody with the crate's [`TokenManager`](crate::auth::TokenManager)
//!   (30-minute access tokens, rotating refresh tokens, single-flight refresh), the pinned
//!   organisation in `xero-tenant-id`, the three per-organisation limits (60 a minute, 5 at once,
//!   5,000 a day), batches of up to 50 with per-element results, `Idempotency-Key` on every
//!   write, and recovery of writes whose outcome is unknown by looking the records up.
//! - [`transform`]: pure functions from canonical entities to Xero requests (tax types from the
//!   crate's router, totals to the penny, shipping as a line, currency rate, contacts by number).
//! - [`model`]: serde wire types shaped as Xero's own OpenAPI spec.
//! - [`error`]: Xero's error answers mapped to the crate's error classes.
//!
//! What differs from Sage stays here and in [`Capabilities`](super::Capabilities): one contact for
//! every currency (`contact_per_currency = false`), `max_batch = 50`, a native idempotency window
//! of minutes, credit notes refunded as cash when their invoice is settled
//! (`credit_note_refunds`). Every Xero quirk the crate works around is listed, with its evidence
//! and the test that proves it, in `docs/QUIRKS.md` (section "Xero").

mod builder;
mod client;
pub mod error;
mod listing;
pub mod model;
mod provider;
pub mod transform;

pub use builder::{DEFAULT_BASE_URL, DEFAULT_CONNECTIONS_URL, DEFAULT_TOKEN_URL, XeroBuilder, XeroLimits};
pub use provider::{
    ACCOUNT_ID_KEY, IDEMPOTENCY_WINDOW_SECS, XeroConnection, XeroProvider, build_reference, capabilities_of,
};

/// The provider name used in outcomes and the sync-state callback (Byte8's `provider='xero'`).
pub const PROVIDER: &str = "xero";
