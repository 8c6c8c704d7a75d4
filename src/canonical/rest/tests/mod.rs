//! Tests of the REST adapter. Fixtures are under `tests/fixtures/magento-rest/` (see the
//! `SOURCES.md` there); every expected amount is computed by hand in a comment next to it.

use chrono::{DateTime, TimeZone, Utc};
use rust_decimal::Decimal;
use serde_json::Value;

use crate::{
    canonical::{Address, AddressKind, MagentoInvoiceLine},
    error::Error,
};

mod contacts;
mod credit_memos;
mod errors;
mod invoices;
mod payments;
mod products;

/// Reads a fixture of `tests/fixtures/magento-rest/`.
macro_rules! fixture {
    ($name:literal) => {
        crate::canonical::rest::tests::json(include_str!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/magento-rest/",
            $name
        )))
    };
}
pub(super) use fixture;

/// Parses JSON text (numbers keep their exact digits).
pub(super) fn json(text: &str) -> Value {
    serde_json::from_str(text).expect("test JSON parses")
}

/// Sets the value at a JSON pointer (`/items/1/row_total`), creating the last key if needed.
pub(super) fn set(doc: &mut Value, pointer: &str, value: Value) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a /");
    let parent = doc.pointer_mut(parent).unwrap_or_else(|| panic!("no {parent} in the document"));
    match parent {
        Value::Object(map) => {
            map.insert(key.to_owned(), value);
        }
        Value::Array(items) => items[key.parse::<usize>().expect("index")] = value,
        _ => panic!("{pointer}: parent is not a container"),
    }
}

/// Removes the key at a JSON pointer.
pub(super) fn remove(doc: &mut Value, pointer: &str) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer has a /");
    let removed = doc.pointer_mut(parent).and_then(Value::as_object_mut).and_then(|m| m.remove(key));
    assert!(removed.is_some(), "{pointer} was not in the document");
}

/// Removes every key whose value is `null`, recursively (what `DataObjectProcessor` does to
/// nullable getters, magento.md 1).
pub(super) fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.retain(|_, v| !v.is_null());
            map.values_mut().for_each(strip_nulls);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

/// The field paths of an error.
pub(super) fn paths(e: &Error) -> Vec<String> {
    e.field_errors().iter().map(|f| f.path.clone()).collect()
}

/// A decimal from its text.
pub(super) fn d(text: &str) -> Decimal {
    text.parse().expect("decimal")
}

/// A UTC timestamp.
pub(super) fn utc(y: i32, mo: u32, da: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, da, h, mi, s).single().expect("valid timestamp")
}

/// A canonical line, with `tax_class` null.
#[allow(clippy::too_many_arguments)]
pub(super) fn line(
    sku: &str,
    name: &str,
    qty: &str,
    unit_price: &str,
    line_subtotal: &str,
    line_tax: &str,
    line_total: &str,
    tax_rate: Option<&str>,
    product_type: &str,
) -> MagentoInvoiceLine {
    MagentoInvoiceLine {
        sku: sku.into(),
        name: name.into(),
        qty: d(qty),
        unit_price: d(unit_price),
        line_subtotal: d(line_subtotal),
        line_tax: d(line_tax),
        line_total: d(line_total),
        tax_rate: tax_rate.map(d),
        tax_class: None,
        product_type: Some(product_type.into()),
    }
}

/// A canonical address.
pub(super) fn address(
    kind: AddressKind,
    street: &[&str],
    city: &str,
    region: Option<&str>,
    postcode: Option<&str>,
    country_id: &str,
    telephone: Option<&str>,
) -> Address {
    Address {
        kind,
        street: street.iter().map(|s| (*s).to_owned()).collect(),
        city: city.into(),
        region: region.map(Into::into),
        postcode: postcode.map(Into::into),
        country_id: country_id.into(),
        telephone: telephone.map(Into::into),
        vat_id: None,
    }
}
