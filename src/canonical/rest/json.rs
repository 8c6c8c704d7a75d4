//! Lenient, path-aware reading of Magento REST JSON (magento.md section 1).
//!
//! Every reader treats a missing key and an explicit `null` the same (magento.md 1: optional
//! nulls are left out, non-nullable getters emit `null`). Money is read from the exact text of a
//! JSON number (serde_json's `arbitrary_precision`) or from a numeric string, never through
//! `f64`. Every error names the REST field path, e.g. `invoice.items[3].row_total`.

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use rust_decimal_macros::dec;
use serde_json::Value;

use crate::{
    canonical::serde_time,
    error::{Error, Result, join_path},
    money::parse_decimal,
};

/// The largest magnitude accepted for an amount or a quantity. Magento stores sales amounts as
/// `DECIMAL(20,4)` (below 10^16); the bound keeps every sum the crate forms far from
/// `Decimal`'s limit.
pub(super) const MAX_AMOUNT: Decimal = dec!(1_000_000_000_000_000);

/// A JSON value with the REST path it was found at.
#[derive(Debug, Clone)]
pub(super) struct Node<'a> {
    /// The value (never `null` for a node returned by [`Node::get`]).
    pub(super) value: &'a Value,
    /// Its path, e.g. `order.items[2]`.
    pub(super) path: String,
    /// What is being read, for [`Error::Parse`] (`Magento REST invoice`).
    pub(super) what: &'static str,
}

impl<'a> Node<'a> {
    /// The root document `name`; it must be a JSON object.
    pub(super) fn root(value: &'a Value, name: &str, what: &'static str) -> Result<Self> {
        if value.is_object() {
            Ok(Self { value, path: name.to_owned(), what })
        } else {
            Err(Error::parse(what, name, format!("must be a JSON object, got {}", kind(value))))
        }
    }

    /// The path of `key` under this node.
    pub(super) fn path_of(&self, key: &str) -> String {
        join_path(&self.path, key)
    }

    /// A parse error at `key` under this node.
    pub(super) fn parse_error(&self, key: &str, rule: impl Into<String>) -> Error {
        Error::parse(self.what, self.path_of(key), rule)
    }

    /// A validation error at `key` under this node.
    pub(super) fn invalid(&self, key: &str, rule: impl Into<String>) -> Error {
        Error::invalid(self.what, self.path_of(key), rule)
    }

    /// The value at `key`, or `None` when the key is missing or `null`.
    pub(super) fn get(&self, key: &str) -> Option<Node<'a>> {
        match self.value.get(key) {
            None | Some(Value::Null) => None,
            Some(v) => Some(Node { value: v, path: self.path_of(key), what: self.what }),
        }
    }

    /// True when `key` holds a non-null value.
    pub(super) fn has(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The object at `key`, if present.
    ///
    /// # Errors
    /// When the value is present but not an object.
    pub(super) fn object(&self, key: &str) -> Result<Option<Node<'a>>> {
        match self.get(key) {
            None => Ok(None),
            Some(n) if n.value.is_object() => Ok(Some(n)),
            Some(n) => Err(self.parse_error(key, format!("must be an object, got {}", kind(n.value)))),
        }
    }

    /// The elements of the array at `key` (missing or `null` is empty), each with its index path.
    ///
    /// # Errors
    /// When the value is present but not an array.
    pub(super) fn array(&self, key: &str) -> Result<Vec<Node<'a>>> {
        match self.get(key) {
            None => Ok(Vec::new()),
            Some(Node { value: Value::Array(items), path, what }) => Ok(items
                .iter()
                .enumerate()
                .map(|(i, v)| Node { value: v, path: format!("{path}[{i}]"), what })
                .collect()),
            Some(n) => Err(self.parse_error(key, format!("must be an array, got {}", kind(n.value)))),
        }
    }

    /// The decimal at `key`: a JSON number (its exact digits) or a numeric string; an empty
    /// string counts as null.
    ///
    /// # Errors
    /// When the value is neither, or its magnitude exceeds [`MAX_AMOUNT`].
    pub(super) fn decimal(&self, key: &str) -> Result<Option<Decimal>> {
        let Some(n) = self.get(key) else { return Ok(None) };
        let text = match n.value {
            Value::Number(num) => num.to_string(),
            Value::String(s) if s.trim().is_empty() => return Ok(None),
            Value::String(s) => s.clone(),
            other => {
                return Err(self.parse_error(key, format!("must be a number or a numeric string, got {}", kind(other))));
            }
        };
        let d = parse_decimal(&text).map_err(|e| self.parse_error(key, e))?;
        if d.abs() > MAX_AMOUNT {
            return Err(self.parse_error(key, format!("{d} is out of range (magnitude above {MAX_AMOUNT})")));
        }
        Ok(Some(d))
    }

    /// The decimal at `key`, which must be present.
    ///
    /// # Errors
    /// When it is missing, `null` or not a number.
    pub(super) fn req_decimal(&self, key: &str) -> Result<Decimal> {
        self.decimal(key)?.ok_or_else(|| self.parse_error(key, "is required"))
    }

    /// A header or line amount: missing or `null` is zero, as the Byte8 module's `(float)` cast
    /// makes it.
    ///
    /// # Errors
    /// When the value is present but not a number.
    pub(super) fn amount(&self, key: &str) -> Result<Decimal> {
        Ok(self.decimal(key)?.unwrap_or(Decimal::ZERO))
    }

    /// The text at `key` as Magento sent it (a number is taken as its digits).
    ///
    /// # Errors
    /// When the value is an object, an array or a boolean.
    pub(super) fn string(&self, key: &str) -> Result<Option<String>> {
        let Some(n) = self.get(key) else { return Ok(None) };
        match n.value {
            Value::String(s) => Ok(Some(s.clone())),
            Value::Number(num) => Ok(Some(num.to_string())),
            other => Err(self.parse_error(key, format!("must be a string, got {}", kind(other)))),
        }
    }

    /// The text at `key`, with the empty string read as null (the module's `nullIfEmpty`).
    ///
    /// # Errors
    /// As [`Node::string`].
    pub(super) fn text(&self, key: &str) -> Result<Option<String>> {
        Ok(self.string(key)?.filter(|s| !s.is_empty()))
    }

    /// Non-empty text at `key`, which must be present.
    ///
    /// # Errors
    /// When it is missing, `null`, empty or not a string.
    pub(super) fn req_text(&self, key: &str) -> Result<String> {
        self.text(key)?.ok_or_else(|| self.parse_error(key, "is required and must not be empty"))
    }

    /// A non-negative integer id at `key` (a JSON integer or an integer string, as Magento sends
    /// `default_billing`).
    ///
    /// # Errors
    /// When the value is present but not a non-negative integer.
    pub(super) fn id(&self, key: &str) -> Result<Option<u64>> {
        let Some(n) = self.get(key) else { return Ok(None) };
        match value_id(n.value) {
            Some(Some(id)) => Ok(Some(id)),
            Some(None) => Ok(None),
            None => Err(self.parse_error(key, format!("must be a non-negative integer, got {}", n.value))),
        }
    }

    /// The id at `key`, which must be present.
    ///
    /// # Errors
    /// When it is missing, `null` or not a non-negative integer.
    pub(super) fn req_id(&self, key: &str) -> Result<u64> {
        self.id(key)?.ok_or_else(|| self.parse_error(key, "is required"))
    }

    /// A small id (store, website, group) at `key`.
    ///
    /// # Errors
    /// When the value is not a non-negative integer that fits 32 bits.
    pub(super) fn small_id(&self, key: &str) -> Result<Option<u32>> {
        match self.id(key)? {
            None => Ok(None),
            Some(id) => u32::try_from(id).map(Some).map_err(|_| self.parse_error(key, format!("{id} is out of range"))),
        }
    }

    /// A flag at `key`: a boolean, `0`/`1`, or the strings `"0"`, `"1"`, `"true"`, `"false"`.
    ///
    /// # Errors
    /// When the value is present but none of these.
    pub(super) fn flag(&self, key: &str) -> Result<Option<bool>> {
        let Some(n) = self.get(key) else { return Ok(None) };
        let flag = match n.value {
            Value::Bool(b) => Some(*b),
            Value::Number(num) => match num.as_u64() {
                Some(0) => Some(false),
                Some(1) => Some(true),
                _ => None,
            },
            Value::String(s) => match s.trim() {
                "0" | "false" => Some(false),
                "1" | "true" => Some(true),
                _ => None,
            },
            _ => None,
        };
        flag.map(Some).ok_or_else(|| self.parse_error(key, format!("must be a boolean or 0/1, got {}", n.value)))
    }

    /// A Magento timestamp at `key` (`YYYY-MM-DD HH:MM:SS`, UTC; magento.md section 1). An empty
    /// string is null.
    ///
    /// # Errors
    /// When the value is present but not a timestamp.
    pub(super) fn timestamp(&self, key: &str) -> Result<Option<DateTime<Utc>>> {
        match self.text(key)? {
            None => Ok(None),
            Some(s) => serde_time::parse(&s).map(Some).map_err(|e| self.parse_error(key, e)),
        }
    }

    /// The timestamp at `key`, which must be present.
    ///
    /// # Errors
    /// When it is missing, `null` or not a timestamp.
    pub(super) fn req_timestamp(&self, key: &str) -> Result<DateTime<Utc>> {
        self.timestamp(key)?.ok_or_else(|| self.parse_error(key, "is required"))
    }
}

/// Reads an id from a JSON value: `Some(Some(id))` for an integer, `Some(None)` for an empty
/// string, `None` when the value is not an id.
pub(super) fn value_id(v: &Value) -> Option<Option<u64>> {
    match v {
        Value::Number(n) => n.as_u64().map(Some),
        Value::String(s) if s.trim().is_empty() => Some(None),
        Value::String(s) => s.trim().parse::<u64>().ok().map(Some),
        _ => None,
    }
}

/// A short description of a JSON value's type, for messages.
fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
