//! Xero.
