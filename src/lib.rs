//! # byte8-ledger-core
//!
//! Turns Magento 2 commerce events into correct postings in Sage Business Cloud Accounting (API
//! v3.1), and into any other ledger that implements an accounting provider.
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
pub mod canonical;
#[cfg(feature = "cli")]
#[cfg_attr(docsrs, doc(cfg(feature = "cli")))]
pub mod cli;
pub mod clock;
pub mod engine;
pub mod error;
pub mod http;
pub mod identity;
pub mod magento;
pub mod money;
pub mod outcome;
pub mod plan;
pub mod policy;
pub mod providers;
pub mod reference;
#[cfg(feature = "service")]
#[cfg_attr(docsrs, doc(cfg(feature = "service")))]
pub mod service;
#[cfg(feature = "simulator")]
#[cfg_attr(docsrs, doc(cfg(feature = "simulator")))]
pub mod simulator;
pub mod store;
pub mod tax;

pub use error::{Error, ErrorCode, Result};

/// The README's code, compiled by `cargo test` so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
