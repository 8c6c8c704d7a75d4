//! Sage Business Cloud Accounting, API v3.1.
//!
//! - [`SageBuilder`] → [`SageProvider`]: the [`AccountingProvider`](super::AccountingProvider)
//!   over HTTP (OAuth custody, `X-Business`, rate limits, retries, the reference cache).
//! - [`transform`]: pure functions from canonical entities to Sage requests.
//! - [`model`]: serde wire types built from Sage's Swagger spec.
//! - [`error`]: Sage's error answers mapped to the crate's error classes.
//!
//! Every Sage quirk the crate works around is listed, with its evidence and the test that proves
//! the workaround, in `docs/QUIRKS.md`.

mod builder;
mod client;
pub mod error;
pub mod model;
mod provider;
pub mod transform;

pub use builder::{DEFAULT_BASE_URL, DEFAULT_TOKEN_URL, SageBuilder, SageConfigKey};
pub use client::RequestStats;
pub use provider::{SageProvider, capabilities_of};

/// The provider name used in outcomes and the sync-state callback.
pub const PROVIDER: &str = "sage_accounting";
