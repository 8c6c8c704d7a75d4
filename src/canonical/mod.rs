//! The canonical Magento entities: what the Byte8 Magento module sends, read into typed,
//! validated Rust values with decimal money.
//!
//! The field names are exactly those of byte8-spec.md section 3 (the module's
//! `Api/Canonical/Data/*Interface.php`), so the JSON the module serves deserialises as it is.
//! Nothing here knows about Sage, HTTP or storage.
//!
//! - [`Event`] is the envelope of contract.md section 1; [`Event::parse`] reads and validates it.
//! - [`MagentoInvoice`], [`MagentoCreditMemo`], [`MagentoPayment`], [`MagentoContact`] and
//!   [`MagentoProduct`] are the entities; each has a `validate()` that names every broken rule
//!   with its field path.
//! - [`totals`] holds the arithmetic identities of a document and the [`Breakdown`] that places
//!   every penny of it.
//! - [`rest`] builds the same entities from Magento's standard REST responses.
//!
//! Two meanings of the event JSON beyond byte8-spec.md section 3 (issue 12):
//!
//! - `lines` holds every item row the module maps, Magento's dummy rows included; rows that carry
//!   no money (configurable children, dynamic bundle parents, fixed bundle children, qty-0 rows
//!   of partial documents) are dropped as they are read, by [`keep_money_rows`], the same rule the
//!   REST adapter ends with (table on [`MagentoInvoiceLine`]). Field paths in errors
//!   (`lines[i]`) count the money lines that remain.
//! - An optional `tenders` object ([`Tenders`]: `gift_cards_amount`, `customer_balance_amount`,
//!   `reward_currency_amount`) names what paid (or was refunded to) gift card, store credit or
//!   reward points; `grand_total` is then the sale less them. The module does not send it.
//!
//! And one of issue 18: optional **VAT numbers** — `vat_id` on an address (Magento's address VAT
//! number) and `vat_number` on a contact (Magento's customer `taxvat`). The module sends neither;
//! the REST adapter reads both. The buyer's number ([`MagentoContact::vat_number`]) is the billing
//! address's `vat_id`, else `vat_number`, normalised by [`normalize_vat_number`]; a malformed one
//! fails validation under its field. It makes the buyer a business for the tax router
//! ([`crate::tax::routing`]; a company name alone no longer does) and rides on the ledger contact.

mod contact;
mod credit_memo;
mod event;
mod invoice;
mod payment;
mod product;
pub mod rest;
pub mod totals;

pub(crate) use contact::looks_like_email;
pub use contact::{Address, AddressKind, MagentoContact, normalize_vat_number};
pub use credit_memo::MagentoCreditMemo;
pub use event::read;
pub use event::{Entity, Event, EventKind, EventParseError};
pub use invoice::{InvoiceState, MagentoInvoice, MagentoInvoiceLine, Tenders, keep_money_rows};
pub use payment::MagentoPayment;
pub use product::MagentoProduct;
pub use totals::{Breakdown, LineAmounts, ShippingAmounts};

use crate::error::{Error, Problems, Result, join_path};

/// Collects the broken rules of a document under a field-path prefix.
pub(crate) struct Check<'a> {
    problems: &'a mut Problems,
    prefix: String,
}

impl Check<'_> {
    /// Runs `f` over a fresh collector and turns what it found into a result.
    pub(crate) fn run(what: &'static str, f: impl FnOnce(&mut Check<'_>)) -> Result<()> {
        let mut problems = Problems::new();
        f(&mut Check { problems: &mut problems, prefix: String::new() });
        problems.into_result(what)
    }

    /// Records that `field` breaks `rule`.
    pub(crate) fn fail(&mut self, field: &str, rule: impl Into<String>) {
        self.problems.push(join_path(&self.prefix, field), rule);
    }

    /// A collector for the sub-path `sub`.
    pub(crate) fn at(&mut self, sub: &str) -> Check<'_> {
        Check { problems: &mut *self.problems, prefix: join_path(&self.prefix, sub) }
    }

    /// Records the field errors of `err` under `field`.
    pub(crate) fn absorb(&mut self, field: &str, err: Error) {
        self.problems.extend(&join_path(&self.prefix, field), err);
    }

    /// True when nothing has been recorded yet.
    pub(crate) fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Serde for timestamps: RFC 3339 (`2026-11-22T10:00:00Z`, any offset), or Magento's
/// `YYYY-MM-DD HH:MM:SS` without a zone, which is UTC (magento.md section 1). Written as RFC 3339
/// in UTC.
pub mod serde_time {
    use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    /// Parses a timestamp in one of the accepted forms.
    ///
    /// # Errors
    /// Describes the accepted forms when `s` is none of them.
    pub fn parse(s: &str) -> Result<DateTime<Utc>, String> {
        let t = s.trim();
        if let Ok(d) = DateTime::parse_from_rfc3339(t) {
            return Ok(d.with_timezone(&Utc));
        }
        for fmt in ["%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
            if let Ok(n) = NaiveDateTime::parse_from_str(t, fmt) {
                return Ok(n.and_utc());
            }
        }
        if let Ok(d) = chrono::NaiveDate::parse_from_str(t, "%Y-%m-%d") {
            return Ok(d.and_hms_opt(0, 0, 0).map(|n| n.and_utc()).unwrap_or_default());
        }
        Err(format!("`{s}` is not a timestamp (expected RFC 3339 or `YYYY-MM-DD HH:MM:SS` in UTC)"))
    }

    /// Reads a timestamp.
    ///
    /// # Errors
    /// When the text is not a timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(D::Error::custom)
    }

    /// Writes RFC 3339 in UTC with a `Z`.
    ///
    /// # Errors
    /// Never fails.
    pub fn serialize<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Secs, true))
    }
}

/// Serde for optional timestamps (`null` or missing is `None`); see [`serde_time`].
pub mod serde_time_opt {
    use chrono::{DateTime, Utc};
    use serde::{Deserialize, Deserializer, Serializer, de::Error as _};

    /// Reads an optional timestamp; an empty string is `None`.
    ///
    /// # Errors
    /// When a present value is not a timestamp.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DateTime<Utc>>, D::Error> {
        match Option::<String>::deserialize(d)? {
            None => Ok(None),
            Some(s) if s.trim().is_empty() => Ok(None),
            Some(s) => super::serde_time::parse(&s).map(Some).map_err(D::Error::custom),
        }
    }

    /// Writes RFC 3339 or `null`.
    ///
    /// # Errors
    /// Never fails.
    pub fn serialize<S: Serializer>(t: &Option<DateTime<Utc>>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::serde_time::serialize(t, s),
            None => s.serialize_none(),
        }
    }
}
