//! The event envelope of contract.md section 1 and its parser.
//!
//! [`Event::parse`] reads one JSON line into a typed, validated [`Event`]. Anything wrong is an
//! [`EventParseError`] that keeps whatever could be read of the envelope (key, event name, entity
//! id), so that the failure can still be reported against the right event and kept as a dead
//! letter with its raw text.

use std::{fmt, str::FromStr};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use serde_json::{Map, Value, value::RawValue};

use super::{MagentoContact, MagentoCreditMemo, MagentoInvoice, MagentoPayment, MagentoProduct};
use crate::error::{Error, FieldError, Result};

/// The five events the Magento module publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum EventKind {
    /// `invoice.created` → a sales invoice, outstanding.
    #[serde(rename = "invoice.created")]
    InvoiceCreated,
    /// `invoice.paid` → a customer receipt allocated to the invoice.
    #[serde(rename = "invoice.paid")]
    InvoicePaid,
    /// `creditmemo.created` → a credit note on the invoice's contact, allocated.
    #[serde(rename = "creditmemo.created")]
    CreditMemoCreated,
    /// `customer.upserted` → one contact per customer per currency.
    #[serde(rename = "customer.upserted")]
    CustomerUpserted,
    /// `product.upserted` → a product, service or stock item, with stock movements.
    #[serde(rename = "product.upserted")]
    ProductUpserted,
}

impl EventKind {
    /// Every event kind.
    pub const ALL: [Self; 5] = [
        Self::InvoiceCreated,
        Self::InvoicePaid,
        Self::CreditMemoCreated,
        Self::CustomerUpserted,
        Self::ProductUpserted,
    ];

    /// The wire name (`invoice.created`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvoiceCreated => "invoice.created",
            Self::InvoicePaid => "invoice.paid",
            Self::CreditMemoCreated => "creditmemo.created",
            Self::CustomerUpserted => "customer.upserted",
            Self::ProductUpserted => "product.upserted",
        }
    }

    /// The sync-state `entity_type`: the event name before its first dot (byte8-spec.md 12.6).
    pub fn entity_type(self) -> &'static str {
        match self {
            Self::InvoiceCreated | Self::InvoicePaid => "invoice",
            Self::CreditMemoCreated => "creditmemo",
            Self::CustomerUpserted => "customer",
            Self::ProductUpserted => "product",
        }
    }

    /// True for events whose idempotency key dedupes for good (documents); false for upserts,
    /// whose key only collapses runs while they are queued (byte8-spec.md 2.6).
    pub fn is_document(self) -> bool {
        matches!(self, Self::InvoiceCreated | Self::InvoicePaid | Self::CreditMemoCreated)
    }
}

impl fmt::Display for EventKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for EventKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL.into_iter().find(|k| k.as_str() == s).ok_or_else(|| {
            format!(
                "unknown event `{s}` (expected one of {})",
                Self::ALL.iter().map(|k| k.as_str()).collect::<Vec<_>>().join(", ")
            )
        })
    }
}

/// The canonical entity an event carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
#[allow(clippy::large_enum_variant)]
pub enum Entity {
    /// For `invoice.created`.
    Invoice(MagentoInvoice),
    /// For `invoice.paid`.
    Payment(MagentoPayment),
    /// For `creditmemo.created`.
    CreditMemo(MagentoCreditMemo),
    /// For `customer.upserted`.
    Contact(MagentoContact),
    /// For `product.upserted`.
    Product(MagentoProduct),
}

impl Entity {
    /// The entity's own Magento id.
    pub fn magento_id(&self) -> u64 {
        match self {
            Self::Invoice(e) => e.magento_id,
            Self::Payment(e) => e.magento_id,
            Self::CreditMemo(e) => e.magento_id,
            Self::Contact(e) => e.magento_id,
            Self::Product(e) => e.magento_id,
        }
    }

    /// Checks the entity's rules (values and arithmetic).
    ///
    /// # Errors
    /// [`Error::Invalid`] with every broken rule.
    pub fn validate(&self) -> Result<()> {
        match self {
            Self::Invoice(e) => e.validate(),
            Self::Payment(e) => e.validate(),
            Self::CreditMemo(e) => e.validate(),
            Self::Contact(e) => super::Check::run("contact", |c| e.check(c)),
            Self::Product(e) => e.validate(),
        }
    }

    /// Reads the entity an event of `kind` carries straight from JSON text, when the text reads
    /// as one: the usual answer, read without building a [`Value`] tree first and without
    /// [`Entity::from_value`]'s bookkeeping of field paths (a `String` for every key read, kept
    /// in case an error must name it). `None` whenever it does not read, for whatever reason:
    /// the caller then reads the text with [`Entity::from_value`], whose error names the field,
    /// so a bad answer gets the error it always got. An entity read here is the one
    /// [`Entity::from_value`] reads from the same text (property-tested on the workload
    /// generator's entities, whole and damaged: `crates/service/tests/service/entity_json.rs`);
    /// one text reads differently, a JSON object with a key twice, which serde refuses here
    /// (`None`) and a [`Value`] keeps the last of.
    ///
    /// The service's Magento client reads every entity it fetches this way first: in `serve`'s
    /// profile the `Value` tree and the paths were about 0.1 ms of its 1.7 ms an event
    /// (BENCHMARKS.md, round 32; `cargo bench --bench transforms -- entity_json` compares the two).
    pub fn from_json_text(kind: EventKind, json: &[u8]) -> Option<Self> {
        fn typed<T: DeserializeOwned>(json: &[u8]) -> Option<T> {
            serde_json::from_slice(json).ok()
        }
        Some(match kind {
            EventKind::InvoiceCreated => Self::Invoice(typed(json)?),
            EventKind::InvoicePaid => Self::Payment(typed(json)?),
            EventKind::CreditMemoCreated => Self::CreditMemo(typed(json)?),
            EventKind::CustomerUpserted => Self::Contact(typed(json)?),
            EventKind::ProductUpserted => Self::Product(typed(json)?),
        })
    }

    /// Reads the entity an event of `kind` carries from JSON, with field paths in errors.
    ///
    /// # Errors
    /// [`Error::Parse`] naming the field that is missing or mistyped.
    pub fn from_value(kind: EventKind, value: Value) -> Result<Self> {
        Ok(match kind {
            EventKind::InvoiceCreated => Self::Invoice(read("invoice", value)?),
            EventKind::InvoicePaid => Self::Payment(read("payment", value)?),
            EventKind::CreditMemoCreated => Self::CreditMemo(read("credit memo", value)?),
            EventKind::CustomerUpserted => Self::Contact(read("contact", value)?),
            EventKind::ProductUpserted => Self::Product(read("product", value)?),
        })
    }
}

/// Deserialises `T` from a JSON value, reporting the path of the first bad field: the error
/// ([`Error::Parse`](crate::Error::Parse)) names `what` and the field, so that an operator sees
/// which part of which answer was wrong.
///
/// # Errors
/// [`Error::Parse`](crate::Error::Parse) when `value` is not a `T`.
pub fn read<T: DeserializeOwned>(what: &'static str, value: Value) -> Result<T> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { String::new() } else { path };
        Error::Parse { what, errors: vec![FieldError::new(path, e.into_inner().to_string())] }
    })
}

/// One event: the envelope of contract.md section 1 with its entity, typed and validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Event {
    /// Which event.
    pub event: EventKind,
    /// `{event}:{magento_entity_id}` as the module sends it.
    pub idempotency_key: String,
    /// The Magento entity id (for `invoice.paid`, the invoice id).
    pub magento_entity_id: u64,
    /// Website of the entity (0 for products and when unknown).
    pub website_id: u32,
    /// Store of the entity (0 for customers and products).
    pub store_id: u32,
    /// When the Magento observer fired.
    #[serde(with = "super::serde_time")]
    pub occurred_at: DateTime<Utc>,
    /// The module's small hint object; may be empty.
    pub payload: Map<String, Value>,
    /// The canonical entity, when the event carries it (a host connected to Magento fetches it
    /// otherwise).
    pub entity: Option<Entity>,
}

/// Why an event line could not be read, with what could be read of its envelope.
#[derive(Debug, thiserror::Error)]
#[error("{error}")]
pub struct EventParseError {
    /// The error, naming the field.
    pub error: Box<Error>,
    /// The idempotency key, if it could be read.
    pub idempotency_key: Option<String>,
    /// The event name, if it could be read (may be an unknown name).
    pub event: Option<String>,
    /// The Magento entity id, if it could be read.
    pub magento_entity_id: Option<u64>,
}

#[derive(Deserialize)]
struct Envelope {
    event: String,
    idempotency_key: String,
    magento_entity_id: u64,
    #[serde(default)]
    website_id: Option<u32>,
    #[serde(default)]
    store_id: Option<u32>,
    #[serde(with = "super::serde_time")]
    occurred_at: DateTime<Utc>,
    #[serde(default)]
    payload: Option<Map<String, Value>>,
    /// The entity's text, for [`Event::from_json_text`]; [`Event::from_value`] takes `entity` out
    /// of the map before it reads the envelope, so it is `None` there.
    #[serde(default)]
    entity: Option<Box<RawValue>>,
}

impl Event {
    /// Reads and validates one event from a JSON line.
    ///
    /// # Errors
    /// [`EventParseError`] naming the field and the rule, with the envelope fields that could be
    /// read.
    pub fn parse(line: &str) -> Result<Self, EventParseError> {
        if let Some(event) = Self::from_json_text(line) {
            return Ok(event);
        }
        let value: Value = serde_json::from_str(line).map_err(|e| EventParseError {
            error: Box::new(Error::parse("event", "", format!("invalid JSON: {e}"))),
            idempotency_key: None,
            event: None,
            magento_entity_id: None,
        })?;
        Self::from_value(value)
    }

    /// Reads and validates one event from a JSON value.
    ///
    /// # Errors
    /// As [`Event::parse`].
    pub fn from_value(value: Value) -> Result<Self, EventParseError> {
        let Value::Object(mut map) = value else {
            return Err(EventParseError {
                error: Box::new(Error::parse("event", "", "must be a JSON object")),
                idempotency_key: None,
                event: None,
                magento_entity_id: None,
            });
        };
        let hint_key = map.get("idempotency_key").and_then(Value::as_str).map(str::to_owned);
        let hint_event = map.get("event").and_then(Value::as_str).map(str::to_owned);
        let hint_id = map.get("magento_entity_id").and_then(Value::as_u64);
        let fail = |error: Error| EventParseError {
            error: Box::new(error),
            idempotency_key: hint_key.clone(),
            event: hint_event.clone(),
            magento_entity_id: hint_id,
        };
        let entity = map.remove("entity");
        let env: Envelope = read("event", Value::Object(map)).map_err(&fail)?;
        let kind = EventKind::from_str(&env.event).map_err(|e| fail(Error::parse("event", "event", e)))?;
        Self::check_envelope(kind, &env).map_err(&fail)?;
        let entity = match entity {
            None | Some(Value::Null) => None,
            Some(v) => {
                let e = Entity::from_value(kind, v).map_err(|e| fail(e.at("entity")))?;
                Some(Self::check_entity(&env, e).map_err(&fail)?)
            }
        };
        Ok(Self::assemble(kind, env, entity))
    }

    /// Reads one event straight from its JSON line, when the line reads as a valid event: the
    /// envelope and the entity deserialised from the text without a [`Value`] tree between (every
    /// object a map, every key and string a `String`) and without [`Event::from_value`]'s
    /// bookkeeping of field paths. `None` whenever it does not, for whatever reason: not JSON, a
    /// field missing or mistyped, a rule broken. [`Event::parse`] then reads the line through
    /// [`Event::from_value`], whose error names the field and the rule, so a bad line gets the
    /// error it always got. An event read here is the one [`Event::from_value`] reads from the
    /// same line, checked by the same rules (property-tested on the workload generator's events,
    /// whole and damaged: `crates/service/tests/service/entity_json.rs`). One line reads
    /// differently: a JSON object with a key twice, which serde refuses here (`None`) and a
    /// [`Value`] keeps the last of; [`Event::parse`] gives the latter.
    ///
    /// Every event a back-fill syncs is read once (`byte8-ledger sync`); through the `Value`
    /// tree, that reading was 11 % of the `sync` process's CPU on PostgreSQL (`perf`,
    /// BENCHMARKS.md, round 41).
    pub fn from_json_text(line: &str) -> Option<Self> {
        let mut env: Envelope = serde_json::from_str(line).ok()?;
        let kind = EventKind::from_str(&env.event).ok()?;
        Self::check_envelope(kind, &env).ok()?;
        let entity = match env.entity.take() {
            None => None,
            Some(text) => {
                let e = Entity::from_json_text(kind, text.get().as_bytes())?;
                Some(Self::check_entity(&env, e).ok()?)
            }
        };
        Some(Self::assemble(kind, env, entity))
    }

    /// The envelope's rules: an entity id above 0 and the key `{event}:{id…}`.
    fn check_envelope(kind: EventKind, env: &Envelope) -> Result<()> {
        let mut problems = Vec::new();
        if env.magento_entity_id == 0 {
            problems.push(FieldError::new("magento_entity_id", "must be > 0"));
        }
        let id = env.idempotency_key.strip_prefix(kind.as_str()).and_then(|rest| rest.strip_prefix(':'));
        if id.is_none_or(str::is_empty) {
            problems.push(FieldError::new(
                "idempotency_key",
                format!("must be `{}:` followed by the entity id (got `{}`)", kind.as_str(), env.idempotency_key),
            ));
        }
        if problems.is_empty() { Ok(()) } else { Err(Error::Invalid { what: "event", errors: problems }) }
    }

    /// The entity's own rules, and its id the envelope's (a contact's id is not compared).
    fn check_entity(env: &Envelope, e: Entity) -> Result<Entity> {
        e.validate().map_err(|e| e.at("entity"))?;
        if e.magento_id() != env.magento_entity_id && !matches!(e, Entity::Contact(_)) {
            return Err(Error::invalid(
                "event",
                "entity.magento_id",
                format!("{} does not match magento_entity_id {}", e.magento_id(), env.magento_entity_id),
            ));
        }
        Ok(e)
    }

    /// The event of a checked envelope and entity.
    fn assemble(kind: EventKind, env: Envelope, entity: Option<Entity>) -> Self {
        Self {
            event: kind,
            idempotency_key: env.idempotency_key,
            magento_entity_id: env.magento_entity_id,
            website_id: env.website_id.unwrap_or(0),
            store_id: env.store_id.unwrap_or(0),
            occurred_at: env.occurred_at,
            payload: env.payload.unwrap_or_default(),
            entity,
        }
    }

    /// The event's entity type for the sync-state callback.
    pub fn entity_type(&self) -> &'static str {
        self.event.entity_type()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorCode;

    const INVOICE: &str = r#"{"event":"invoice.created","idempotency_key":"invoice.created:1001","magento_entity_id":1001,
      "website_id":1,"store_id":1,"occurred_at":"2026-11-22T10:00:00Z","payload":{"increment_id":"000000123","paid":false},
      "entity":{"magento_id":1001,"increment_id":"000000123","order_id":77,"order_increment_id":"000000077",
        "website_id":1,"store_id":1,"currency":"GBP","state":"open",
        "customer":{"magento_id":5,"email":"jane@example.com","first_name":"Jane","last_name":"Doe","website_id":1,"addresses":[]},
        "lines":[{"sku":"A","name":"Widget","qty":2,"unit_price":10.00,"line_subtotal":20.00,"line_tax":4.00,"line_total":24.00,"tax_rate":0.2,"product_type":"simple"}],
        "subtotal":20.00,"tax_amount":5.00,"shipping_amount":5.00,"shipping_tax_amount":1.00,"discount_amount":0,"grand_total":30.00,
        "created_at":"2026-11-22T09:59:00Z","payment_method":"checkmo","billing_address":null,"shipping_address":null,
        "po_number":null,"base_to_order_rate":1.0}}"#;

    #[test]
    fn reads_a_full_invoice_event() {
        let e = Event::parse(INVOICE).unwrap();
        assert_eq!(e.event, EventKind::InvoiceCreated);
        let Some(Entity::Invoice(inv)) = &e.entity else { panic!("not an invoice") };
        assert_eq!(inv.grand_total.to_string(), "30.00");
        assert_eq!(inv.lines[0].tax_rate.unwrap().to_string(), "0.2");
        assert_eq!(e.entity_type(), "invoice");
    }

    fn with(f: impl FnOnce(&mut Value)) -> String {
        let mut v: Value = serde_json::from_str(INVOICE).unwrap();
        f(&mut v);
        v.to_string()
    }

    #[test]
    fn negative_quantity_names_the_field() {
        let line = with(|v| {
            v["entity"]["lines"][0]["qty"] = serde_json::json!(-2);
            v["entity"]["lines"][0]["unit_price"] = serde_json::json!(-10);
        });
        let err = Event::parse(&line).unwrap_err();
        assert_eq!(err.idempotency_key.as_deref(), Some("invoice.created:1001"));
        assert_eq!(err.error.code(), ErrorCode::Validation);
        let msg = err.to_string();
        assert!(msg.contains("entity.lines[0].qty: must be > 0"), "{msg}");
    }

    #[test]
    fn unknown_currency_names_the_field() {
        let line = with(|v| v["entity"]["currency"] = serde_json::json!("XYZ"));
        let err = Event::parse(&line).unwrap_err();
        assert_eq!(err.error.code(), ErrorCode::Serde);
        assert!(err.to_string().contains("entity.currency"), "{err}");
        assert!(err.to_string().contains("XYZ"), "{err}");
    }

    #[test]
    fn unknown_event_and_bad_json() {
        let line = with(|v| v["event"] = serde_json::json!("order.shipped"));
        let err = Event::parse(&line).unwrap_err();
        assert_eq!(err.event.as_deref(), Some("order.shipped"));
        assert!(err.to_string().contains("event: unknown event `order.shipped`"), "{err}");
        let err = Event::parse("{not json").unwrap_err();
        assert_eq!(err.error.code(), ErrorCode::Serde);
        assert!(err.to_string().contains("invalid JSON"));
    }

    #[test]
    fn totals_that_do_not_add_up_are_rejected() {
        let line = with(|v| v["entity"]["grand_total"] = serde_json::json!(31.50));
        let err = Event::parse(&line).unwrap_err();
        assert!(err.to_string().contains("entity.grand_total"), "{err}");
    }

    #[test]
    fn missing_field_is_named() {
        let line = with(|v| {
            v["entity"]["lines"][0].as_object_mut().unwrap().remove("line_total");
        });
        let err = Event::parse(&line).unwrap_err();
        assert!(err.to_string().contains("entity.lines[0]"), "{err}");
        assert!(err.to_string().contains("line_total"), "{err}");
    }

    #[test]
    fn key_must_match_event() {
        let line = with(|v| v["idempotency_key"] = serde_json::json!("invoice.paid:1001"));
        let err = Event::parse(&line).unwrap_err();
        assert!(err.to_string().contains("idempotency_key"), "{err}");
    }

    #[test]
    fn entity_is_optional() {
        let line = with(|v| {
            v.as_object_mut().unwrap().remove("entity");
        });
        let e = Event::parse(&line).unwrap();
        assert!(e.entity.is_none());
    }
}
