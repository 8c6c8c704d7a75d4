//! Sage Business Cloud Accounting, API v3.1.
//!
//! - [`model`]: serde wire types built from Sage's Swagger spec.
//! - [`transform`]: pure functions from canonical entities to Sage requests.

pub mod model;
pub mod transform;

/// The provider name used in outcomes and the sync-state callback.
pub const PROVIDER: &str = "sage_accounting";
