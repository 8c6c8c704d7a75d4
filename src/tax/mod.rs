//! Tax routing: which treatment each line gets, and which of the ledger's rates books it.
//!
//! Pure functions only; nothing here knows a provider, HTTP or storage.
//!
//! - [`routing`]: the router of tax.md sections 2.2–2.4, keyed on the business's country, the
//!   customer's country, B2B or B2C, the kind of supply and the tax Magento charged.
//! - [`rates`]: the domestic rate of a line from the policy's tax-rate map and default, checked
//!   against the tax Magento charged.
//! - [`territory`]: VAT areas of country codes and postcodes (Isle of Man, Northern Ireland,
//!   Channel Islands, EU special territories).

pub mod rates;
pub mod routing;
pub mod territory;

pub use rates::{LineTax, RateChoice, RateSource, domestic_rate, no_tax_rate, zero_rate};
pub use routing::{Buyer, DocumentRoute, LineRoute, Place, Seller, Supply, TaxTreatment, route_document, route_line};
pub use territory::{VatArea, vat_area};
