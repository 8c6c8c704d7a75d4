//! # byte8-ledger-core
//!
//! Turns Magento 2 commerce events into correct postings in Sage Business Cloud Accounting (API
//! v3.1), Xero Accounting, and any other ledger that implements [`AccountingProvider`]: every
//! invoice, credit note, payment, contact and stock level right to the penny, once.
//!
//! # One invoice, from JSON to the ledger
//!
//! Data flows one way, and each step is its own module:
//!
//! 1. [`canonical`]: the event JSON ([`canonical::Event::parse`]) read into typed, validated
//!    entities with [`rust_decimal::Decimal`] money; [`canonical::rest`] reads Magento's standard
//!    REST responses into the same entities.
//! 2. [`policy`]: the sync policy decides skip or go (each skip with its reason code).
//! 3. [`tax`] and [`plan`]: the tax router and the provider-neutral posting plan, which places
//!    every penny so the lines add up to Magento's grand total.
//! 4. The provider's pure transform ([`providers::sage::transform`], [`providers::xero::transform`]
//!    with feature `xero`): canonical + policy + reference data → the exact request.
//! 5. The provider's thin I/O ([`providers::sage::SageProvider`]) behind [`AccountingProvider`],
//!    orchestrated by [`engine::SyncEngine`] over the stores of [`store`] (cross-reference, runs,
//!    tokens), which answers an [`outcome::Outcome`].
//!
//! `canonical`, `tax` and `plan` import nothing of providers, HTTP or storage.
//!
//! A business is connected as a person connects it: [`auth::connect`] builds the provider's
//! authorize URL (PKCE for Xero, a random or signed `state`), exchanges the code, lists the
//! businesses the token reaches, revokes on disconnect and tells a refresh token's days left;
//! [`auth::TokenManager`] then keeps the tokens fresh.
//!
//! What the stores keep is bounded: [`store::retention`] drops raw events and attempts of old
//! finished runs, everything of a tenant disconnected long enough, and delivered callbacks
//! (90/90/30 days by default), from the `byte8-ledger purge` command or the service's hourly
//! purge.
//!
//! # Quick start
//!
//! ```no_run
//! use std::sync::Arc;
//! use byte8_ledger_core::{
//!     clock::SystemClock, engine::SyncEngine, policy::SyncPolicy,
//!     providers::{AccountingProvider, sage::SageBuilder}, store::memory::MemoryStore,
//! };
//!
//! # async fn demo(line: &str) -> byte8_ledger_core::Result<()> {
//! let sage = SageBuilder::from_env().build()?; // SAGE_CLIENT_ID, SAGE_CLIENT_SECRET, SAGE_BUSINESS_ID
//! let policy = SyncPolicy::from_json(r#"{"default_ledger_account_id":"SALES","default_tax_rate_id":"GB_STANDARD"}"#)?;
//! let engine = SyncEngine::new(
//!     Arc::new(sage) as Arc<dyn AccountingProvider>,
//!     Arc::new(MemoryStore::new()), // store::sqlite::SqliteStore for durability
//!     "my-business-id",
//!     policy,
//!     Arc::new(SystemClock),
//! );
//! engine.check_policy().await?; // every id checked against the ledger's reference data
//! let outcome = engine.sync_line(line).await?; // event JSON in, outcome out
//! # let _ = outcome; Ok(()) }
//! ```
//!
//! # What a posted document means
//!
//! Each invoice and credit note is booked as Magento charged it, line by line:
//!
//! - every line's VAT is Magento's own figure, on the ledger rate whose percentage reproduces it on
//!   the line's net **after** discount (policy `tax_calculated_before_discount` for stores that tax
//!   before discount) — see [`tax::rates`];
//! - shipping's VAT is Magento's too: on Sage's shipping panel only when Sage's recomputation gives
//!   the same penny, else as an ordinary line; no penny is moved between lines;
//! - tax at the business's own rate charged to a consumer abroad is domestic VAT unless the
//!   policy's `oss_registration` covers it; another country's rate is a liability on
//!   `foreign_vat_ledger_account_id` — see [`tax::routing`];
//! - dates are the store's local date (policy `store_timezone`, default the business country's
//!   zone);
//! - an exchange rate is sent only when Magento's rate converts into the ledger's base currency
//!   ([`plan::ledger_rate`]).
//!
//! # Providers
//!
//! | provider | module | feature |
//! |---|---|---|
//! | Sage Business Cloud Accounting v3.1 | [`providers::sage`] | always |
//! | Xero Accounting | `providers::xero` | `xero` |
//! | in memory, recording calls, told to fail (the reference implementation) | [`providers::memory`] | always |
//!
//! Writing one: implement [`AccountingProvider`] (object-safe, provider-neutral types), report
//! what the ledger can do in [`providers::Capabilities`], and run the public conformance suite
//! (`providers::conformance`, feature `conformance`) in your tests; `examples/toy_ledger.rs`
//! does it for a toy ledger. Sage's catalogued quirks and how each is handled and tested are in
//! `docs/QUIRKS.md` of the repository.
//!
//! # Reconciliation
//!
//! [`reconcile`] compares what Magento sent (the synced runs, with their Magento totals) with
//! what the ledger holds for a period: missing, duplicated, differing totals or VAT, unallocated
//! receipts, records from no run, and per-currency sums; `byte8-ledger reconcile` prints it.
//!
//! # Features
//!
//! The default features are what an embedder needs to post to Sage: the engine, the Sage
//! provider, the memory store. No web server, database driver or command-line parser is built.
//!
//! | feature | what |
//! |---|---|
//! | `sqlite` | [`store`]'s embedded SQLite store (one process) |
//! | `postgres` | the PostgreSQL store (several processes sharing one queue and rate limit) |
//! | `xero` | the Xero provider |
//! | `conformance` | the public conformance suites of providers and stores |
//!
//! # Packages and the layering rule
//!
//! The repository is a Cargo workspace whose packages are the layers:
//!
//! | package | what | may depend on |
//! |---|---|---|
//! | `byte8-ledger-core` (this library) | canonical → policy → tax → plan → providers → engine → stores, OAuth custody, the HTTP machinery (one request loop, [`http::exchange`], for every client of every package) | no other package of the workspace |
//! | `byte8-ledger-simulators` | the Sage and Xero simulators, workloads, the chaos soak | the core |
//! | `byte8-ledger-service` | the Byte8 Magento module's protocol (`magento`) and the ledger service (routes, workers, callbacks) | the core (the simulators for its tests only) |
//! | `byte8-ledger` | the `byte8-ledger` command (a binary) | all of the above |
//!
//! Inside the core, data flows one way and modules import only what is below them: `canonical`,
//! `money`, `tax` and `plan` import nothing of providers, HTTP or storage; [`providers`] know
//! nothing of the engine or the stores' run queue; [`engine`] talks to ledgers through
//! [`AccountingProvider`] and to Magento through [`engine::EntitySource`] (implemented by the
//! service package's Magento client). What the service keeps in a store (tenant bindings, dispatch
//! leases, the callback outbox, the webhook replay cache, the tenant's api key) is defined and
//! implemented in the service package (`byte8_ledger_service::store`), on this crate's stores:
//! the SQL stores give it their pools, master keys and run readers
//! (`SqliteStore::pool`, `master_key`, `sqlite::run_from_row`, `sqlite::db_error`; likewise for
//! PostgreSQL), the memory store an extension kept under its lock
//! ([`store::memory::MemoryExtension`]); the schema stays in this crate's one migration
//! sequence. The rule is checked by `tests/core/layers.rs`, which reads the packages'
//! dependency graph (`cargo metadata`) and the core's default dependency tree (`cargo tree`).
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod auth;
pub mod canonical;
pub mod clock;
pub mod engine;
pub mod error;
pub mod http;
pub mod identity;
pub mod money;
pub mod outcome;
pub mod plan;
pub mod policy;
pub mod providers;
pub mod reconcile;
pub mod reference;
pub mod store;
pub mod tax;

pub use error::{Error, ErrorCode, Result};
pub use providers::AccountingProvider;

/// The README's code, compiled by `cargo test` so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
