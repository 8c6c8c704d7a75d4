//! Checks JSON request bodies against Sage's own Swagger 2.0 spec of the Accounting API v3.1
//! (`tests/fixtures/specs/sage/openapi-v3.1.json`, vendored; provenance in the `SOURCE.md` beside it).
//!
//! Include it from an integration test with
//! `#[path = "support/sage_spec.rs"] mod sage_spec;` and call [`assert_valid`] (or [`check`])
//! with the name of a request definition (`postSalesInvoices`) and the serialized body.
//!
//! # Rules
//!
//! - `$ref`s are resolved; objects and arrays are walked recursively.
//! - Every `required` property is present and not `null`.
//! - Types: `string` (`format: date` is `YYYY-MM-DD`, `format: date-time` is RFC 3339),
//!   `number` (a JSON number: the crate enables serde_json's `arbitrary_precision`, so numbers
//!   keep their exact text; a numeric *string* is a type error), `integer` (an integral JSON
//!   number, within `i32` for `format: int32`), `boolean`, `array`, `object`. Swagger 2.0 has no
//!   `nullable` and the spec declares no `x-nullable`, so `null` is a type error everywhere: omit
//!   the property instead.
//! - `enum`, `minimum` / `maximum`, and `minLength` / `maxLength` when the schema declares them.
//! - Unknown properties: the request definitions do not set `additionalProperties`, but Sage
//!   rejects or silently drops fields it does not know, so any property the definition does not
//!   declare is reported, except the documented extensions of [`EXTENSIONS`].
//! - Length limits: the `postX` definitions carry no `maxLength`; Sage's limits live on the read
//!   models (`Contact.reference` 10, `SalesInvoice.reference` 25, ...). [`READ_MODELS`] pairs every
//!   object of a request with the read model(s) whose properties bear the same names, and a string
//!   property is held to the smallest `maxLength` those read models declare for it (counted in
//!   Unicode characters, sage-api.md 3.5).
//!
//! Problems come back one per violation, each prefixed with its JSON path:
//! `sales_invoice.invoice_lines[0].tax_rate_id: expected string, found number 20`.

// Each test crate that includes this module uses a different part of it.
#![allow(dead_code)]

use std::sync::OnceLock;

use serde_json::{Map, Value};

/// Where the spec is read from: the copy vendored in the repository, so that a clean checkout
/// tests without any sibling folder (`tests/fixtures/specs/README.md`).
pub const SPEC_PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/specs/sage/openapi-v3.1.json");

/// A property the crate sends on purpose although the 2022 spec does not declare it.
#[derive(Debug, Clone, Copy)]
pub struct Extension {
    /// The request definition (`postSalesInvoices`).
    pub definition: &'static str,
    /// The schema path of the object that may carry it (`sales_invoice.invoice_lines[]`).
    pub at: &'static str,
    /// The property name.
    pub property: &'static str,
    /// The JSON schema its value must satisfy (checked by the same rules as the spec).
    pub schema: &'static str,
    /// Where it is documented.
    pub source: &'static str,
}

/// Sage's native idempotency: `idempotency_id` inside the resource namespace, a 32-character
/// hyphenless GUID (sage-api.md section 0, developer.sage.com/accounting/guides/concepts/idempotency).
/// Documented by Sage for these resources but absent from the 2022 spec.
const IDEMPOTENCY_ID_SCHEMA: &str = r#"{"type": "string", "minLength": 32, "maxLength": 32}"#;
const IDEMPOTENCY_SOURCE: &str = "Sage native idempotency, sage-api.md section 0 (not in the 2022 spec)";
const CURRENCY_TAX_SOURCE: &str = "Byte8 quirk: Sage wants it on every line, byte8-spec.md section 9 Q1";

/// The documented extensions: every other undeclared property is a problem.
///
/// - `idempotency_id` on the resource object (not on lines or nested objects) of every request
///   the crate sends, as Sage documents it (sage-api.md section 0).
/// - `currency_tax_amount` on invoice and credit-note lines: Byte8's catalogued quirk
///   (byte8-spec.md section 9 Q1; the crate's `DocumentLine` sends it on every line).
pub const EXTENSIONS: &[Extension] = &[
    Extension {
        definition: "postSalesInvoices",
        at: "sales_invoice",
        property: "idempotency_id",
        schema: IDEMPOTENCY_ID_SCHEMA,
        source: IDEMPOTENCY_SOURCE,
    },
    Extension {
        definition: "postSalesCreditNotes",
        at: "sales_credit_note",
        property: "idempotency_id",
        schema: IDEMPOTENCY_ID_SCHEMA,
        source: IDEMPOTENCY_SOURCE,
    },
    Extension {
        definition: "postContacts",
        at: "contact",
        property: "idempotency_id",
        schema: IDEMPOTENCY_ID_SCHEMA,
        source: IDEMPOTENCY_SOURCE,
    },
    Extension {
        definition: "postContactPayments",
        at: "contact_payment",
        property: "idempotency_id",
        schema: IDEMPOTENCY_ID_SCHEMA,
        source: IDEMPOTENCY_SOURCE,
    },
    Extension {
        definition: "postContactAllocations",
        at: "contact_allocation",
        property: "idempotency_id",
        schema: IDEMPOTENCY_ID_SCHEMA,
        source: IDEMPOTENCY_SOURCE,
    },
    Extension {
        definition: "postProducts",
        at: "product",
        property: "idempotency_id",
        schema: IDEMPOTENCY_ID_SCHEMA,
        source: IDEMPOTENCY_SOURCE,
    },
    Extension {
        definition: "postServices",
        at: "service",
        property: "idempotency_id",
        schema: IDEMPOTENCY_ID_SCHEMA,
        source: IDEMPOTENCY_SOURCE,
    },
    Extension {
        definition: "postStockItems",
        at: "stock_item",
        property: "idempotency_id",
        schema: IDEMPOTENCY_ID_SCHEMA,
        source: IDEMPOTENCY_SOURCE,
    },
    Extension {
        definition: "postStockMovements",
        at: "stock_movement",
        property: "idempotency_id",
        schema: IDEMPOTENCY_ID_SCHEMA,
        source: IDEMPOTENCY_SOURCE,
    },
    Extension {
        definition: "postSalesInvoices",
        at: "sales_invoice.invoice_lines[]",
        property: "currency_tax_amount",
        schema: r#"{"type": "number", "format": "double"}"#,
        source: CURRENCY_TAX_SOURCE,
    },
    Extension {
        definition: "postSalesCreditNotes",
        at: "sales_credit_note.credit_note_lines[]",
        property: "currency_tax_amount",
        schema: r#"{"type": "number", "format": "double"}"#,
        source: CURRENCY_TAX_SOURCE,
    },
];

/// The read model(s) whose `maxLength`s apply to one object of a request.
#[derive(Debug, Clone, Copy)]
pub struct ReadModel {
    /// The request definition (`postSalesInvoices`).
    pub definition: &'static str,
    /// The schema path of the object inside it (`sales_invoice.main_address`; `[]` steps into
    /// array items).
    pub at: &'static str,
    /// The read-model definitions; a string property is held to the smallest `maxLength` any of
    /// them declares for a property of the same name. The first is the one the spec itself links
    /// (see [`READ_MODELS`]).
    pub read_models: &'static [&'static str],
}

/// Which read models bound the strings of each request object.
///
/// How the pairs were found, in the spec itself (the test `read_model_table_agrees_with_the_spec`
/// re-derives every first entry):
///
/// - **Resource objects**: `paths./X.post` takes a body whose schema is `$ref: postX` and answers
///   `201` with `$ref: ReadModel` (`POST /sales_invoices`: `postSalesInvoices` → `SalesInvoice`).
///   The request's resource object (`sales_invoice`) and that read model share their scalar
///   property names (`reference`, `notes`, `date`, ...); references differ only by the `_id`
///   suffix (`contact_id` ↔ `contact`).
/// - **Nested objects and array items**: the read model's property of the same name `$ref`s the
///   nested read model (`SalesInvoice.invoice_lines.items` → `SalesInvoiceLineItem`,
///   `Contact.main_contact_person` → `ContactPerson`, `ContactPayment.allocated_artefacts.items`
///   → `AllocatedPaymentArtefact`, `Product.sales_prices.items` → `SalesPrice`,
///   `Service.sales_rates.items` → `Rate`).
/// - **One deliberate addition**: a sales document's `main_address` / `delivery_address` is
///   linked to `SalesArtefactAddress`, which declares no `maxLength` at all; `Address`, the
///   read model of Sage's addresses (contact addresses: the same property names, and the limits
///   sage-api.md 3.5 lists: lines, city, region 50, postal code 10), is added so that a document
///   address is held to what Sage stores for an address. The crate's transforms already apply
///   those limits to document addresses (`transform::limits::ADDRESS_LINE`, `POSTAL_CODE`).
///
/// Objects with no string limits in their read model (lines, prices, allocations) are listed
/// anyway so that every object of the covered requests is accounted for.
pub const READ_MODELS: &[ReadModel] = &[
    // POST /sales_invoices → 201 SalesInvoice.
    ReadModel { definition: "postSalesInvoices", at: "sales_invoice", read_models: &["SalesInvoice"] },
    ReadModel {
        definition: "postSalesInvoices",
        at: "sales_invoice.main_address",
        read_models: &["SalesArtefactAddress", "Address"],
    },
    ReadModel {
        definition: "postSalesInvoices",
        at: "sales_invoice.delivery_address",
        read_models: &["SalesArtefactAddress", "Address"],
    },
    ReadModel {
        definition: "postSalesInvoices",
        at: "sales_invoice.invoice_lines[]",
        read_models: &["SalesInvoiceLineItem"],
    },
    ReadModel {
        definition: "postSalesInvoices",
        at: "sales_invoice.tax_analysis[]",
        read_models: &["ArtefactTaxAnalysis"],
    },
    ReadModel {
        definition: "postSalesInvoices",
        at: "sales_invoice.recurring_invoice",
        read_models: &["RecurringSalesInvoice"],
    },
    // POST /sales_credit_notes → 201 SalesCreditNote.
    ReadModel { definition: "postSalesCreditNotes", at: "sales_credit_note", read_models: &["SalesCreditNote"] },
    ReadModel {
        definition: "postSalesCreditNotes",
        at: "sales_credit_note.main_address",
        read_models: &["SalesArtefactAddress", "Address"],
    },
    ReadModel {
        definition: "postSalesCreditNotes",
        at: "sales_credit_note.delivery_address",
        read_models: &["SalesArtefactAddress", "Address"],
    },
    ReadModel {
        definition: "postSalesCreditNotes",
        at: "sales_credit_note.credit_note_lines[]",
        read_models: &["SalesCreditNoteLineItem"],
    },
    ReadModel {
        definition: "postSalesCreditNotes",
        at: "sales_credit_note.tax_analysis[]",
        read_models: &["ArtefactTaxAnalysis"],
    },
    // POST /contacts → 201 Contact.
    ReadModel { definition: "postContacts", at: "contact", read_models: &["Contact"] },
    ReadModel { definition: "postContacts", at: "contact.main_address", read_models: &["Address"] },
    ReadModel { definition: "postContacts", at: "contact.delivery_address", read_models: &["Address"] },
    ReadModel { definition: "postContacts", at: "contact.main_contact_person", read_models: &["ContactPerson"] },
    ReadModel { definition: "postContacts", at: "contact.bank_account_details", read_models: &["BankAccountDetails"] },
    ReadModel { definition: "postContacts", at: "contact.tax_treatment", read_models: &["ContactTaxTreatment"] },
    // POST /contact_payments → 201 ContactPayment.
    ReadModel { definition: "postContactPayments", at: "contact_payment", read_models: &["ContactPayment"] },
    ReadModel {
        definition: "postContactPayments",
        at: "contact_payment.allocated_artefacts[]",
        read_models: &["AllocatedPaymentArtefact"],
    },
    ReadModel {
        definition: "postContactPayments",
        at: "contact_payment.payment_on_account",
        read_models: &["PaymentOnAccount"],
    },
    // POST /contact_allocations → 201 ContactAllocation.
    ReadModel { definition: "postContactAllocations", at: "contact_allocation", read_models: &["ContactAllocation"] },
    ReadModel {
        definition: "postContactAllocations",
        at: "contact_allocation.allocated_artefacts[]",
        read_models: &["AllocatedArtefact"],
    },
    // POST /products → 201 Product.
    ReadModel { definition: "postProducts", at: "product", read_models: &["Product"] },
    ReadModel { definition: "postProducts", at: "product.sales_prices[]", read_models: &["SalesPrice"] },
    // POST /services → 201 Service.
    ReadModel { definition: "postServices", at: "service", read_models: &["Service"] },
    ReadModel { definition: "postServices", at: "service.sales_rates[]", read_models: &["Rate"] },
    // POST /stock_items → 201 StockItem.
    ReadModel { definition: "postStockItems", at: "stock_item", read_models: &["StockItem"] },
    ReadModel { definition: "postStockItems", at: "stock_item.sales_prices[]", read_models: &["SalesPrice"] },
    // POST /stock_movements → 201 StockMovement.
    ReadModel { definition: "postStockMovements", at: "stock_movement", read_models: &["StockMovement"] },
];

/// The spec, read and parsed once.
///
/// # Panics
/// When [`SPEC_PATH`] cannot be read or is not JSON.
pub fn spec() -> &'static Value {
    static SPEC: OnceLock<Value> = OnceLock::new();
    SPEC.get_or_init(|| {
        let text = std::fs::read_to_string(SPEC_PATH).unwrap_or_else(|e| {
            panic!("cannot read Sage's Swagger spec at {SPEC_PATH} ({e}); it is vendored in tests/fixtures/specs/sage/")
        });
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("Sage's Swagger spec at {SPEC_PATH} is not JSON: {e}"))
    })
}

/// A definition of the spec by name (`postSalesInvoices`, `SalesInvoice`).
///
/// # Panics
/// When the spec has no such definition.
pub fn definition(name: &str) -> &'static Value {
    spec()
        .get("definitions")
        .and_then(|d| d.get(name))
        .unwrap_or_else(|| panic!("Sage's spec ({SPEC_PATH}) has no definition `{name}`"))
}

/// Follows `$ref`s (`#/definitions/X`) until a schema that is not a reference.
///
/// # Panics
/// On a reference that is not to `#/definitions/`, or a cycle of references.
pub fn resolve(schema: &Value) -> &Value {
    let mut schema = schema;
    for _ in 0..32 {
        let Some(reference) = schema.get("$ref").and_then(Value::as_str) else {
            return schema;
        };
        let name = reference
            .strip_prefix("#/definitions/")
            .unwrap_or_else(|| panic!("unsupported $ref `{reference}` (only #/definitions/ is used by the spec)"));
        schema = definition(name);
    }
    panic!("$ref cycle in Sage's spec")
}

/// The (resolved) schema at a schema path of a definition: property names separated by `.`,
/// `[]` stepping into array items (`sales_invoice.invoice_lines[]`). The empty path is the
/// definition itself.
pub fn schema_at(definition_name: &str, at: &str) -> Option<&'static Value> {
    let mut schema = resolve(definition(definition_name));
    if at.is_empty() {
        return Some(schema);
    }
    for segment in at.split('.') {
        let mut name = segment;
        let mut arrays = 0;
        while let Some(stripped) = name.strip_suffix("[]") {
            name = stripped;
            arrays += 1;
        }
        schema = resolve(schema.get("properties")?.get(name)?);
        for _ in 0..arrays {
            schema = resolve(schema.get("items")?);
        }
    }
    Some(schema)
}

/// The read models paired with an object of a request in [`READ_MODELS`] (empty when none).
pub fn read_models_for(definition_name: &str, at: &str) -> &'static [&'static str] {
    READ_MODELS.iter().find(|r| r.definition == definition_name && r.at == at).map_or(&[], |r| r.read_models)
}

/// The documented extension for a property of an object of a request, if any.
pub fn extension_for(definition_name: &str, at: &str, property: &str) -> Option<&'static Extension> {
    EXTENSIONS.iter().find(|e| e.definition == definition_name && e.at == at && e.property == property)
}

/// The smallest `maxLength` the read models of `at` declare for `property`, with the
/// `Model.property` that declares it.
pub fn read_model_max_length(definition_name: &str, at: &str, property: &str) -> Option<(u64, String)> {
    read_models_for(definition_name, at)
        .iter()
        .filter_map(|model| {
            let max = definition(model).get("properties")?.get(property)?.get("maxLength")?.as_u64()?;
            Some((max, format!("{model}.{property}")))
        })
        .min_by_key(|(max, _)| *max)
}

/// Every violation of `body` against the request definition `definition` (`postSalesInvoices`),
/// one human-readable line each, prefixed with its JSON path. Empty means valid.
///
/// # Panics
/// When the spec cannot be read or has no such definition.
pub fn check(definition_name: &str, body: &Value) -> Vec<String> {
    let schema = definition(definition_name);
    let mut walk = Walk { definition: definition_name, problems: Vec::new() };
    walk.value(schema, body, "", "");
    walk.problems
}

/// Every violation of `value` against a free-standing `schema` (the same rules; `$ref`s resolve
/// against the spec; no extensions and no read-model lengths, which belong to named requests).
pub fn check_schema(schema: &Value, value: &Value) -> Vec<String> {
    let mut walk = Walk { definition: "", problems: Vec::new() };
    walk.value(schema, value, "", "");
    walk.problems
}

/// Panics, listing every problem and the body, unless `body` satisfies `definition`.
///
/// # Panics
/// When [`check`] finds anything.
#[track_caller]
pub fn assert_valid(definition_name: &str, body: &Value) {
    let problems = check(definition_name, body);
    assert!(
        problems.is_empty(),
        "{} problem(s) with this {definition_name} body against Sage's spec:\n  - {}\nbody:\n{}",
        problems.len(),
        problems.join("\n  - "),
        serde_json::to_string_pretty(body).unwrap_or_default()
    );
}

struct Walk<'a> {
    definition: &'a str,
    problems: Vec<String>,
}

fn child(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

fn shown(path: &str) -> &str {
    if path.is_empty() { "(body)" } else { path }
}

/// `string "abc"`, `number 10.00`, `object`, ...: what a value is, for messages.
fn describe(v: &Value) -> String {
    let mut text = match v {
        Value::Null => return "null".to_owned(),
        Value::Bool(b) => format!("boolean {b}"),
        Value::Number(n) => format!("number {n}"),
        Value::String(s) => format!("string {}", Value::String(s.clone())),
        Value::Array(_) => return "array".to_owned(),
        Value::Object(_) => return "object".to_owned(),
    };
    if text.chars().count() > 80 {
        text = text.chars().take(77).collect::<String>() + "...";
    }
    text
}

/// The declared type of a schema (inferred `object` / `array` from `properties` / `items`).
fn schema_type(schema: &Value) -> Option<&str> {
    schema.get("type").and_then(Value::as_str).or_else(|| {
        if schema.get("properties").is_some() {
            Some("object")
        } else if schema.get("items").is_some() {
            Some("array")
        } else {
            None
        }
    })
}

/// `YYYY-MM-DD`, digits and dashes in place, and a real calendar date.
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() })
        && chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_ok()
}

impl Walk<'_> {
    fn push(&mut self, path: &str, problem: String) {
        self.problems.push(format!("{}: {problem}", shown(path)));
    }

    /// Checks `v` (at JSON path `path`, schema path `at`) against `schema`.
    fn value(&mut self, schema: &Value, v: &Value, path: &str, at: &str) {
        let schema = resolve(schema);
        let ty = schema_type(schema);
        if v.is_null() {
            self.push(
                path,
                format!(
                    "null where the spec declares {} (Swagger 2.0 has no nullable: omit the property)",
                    ty.unwrap_or("a value")
                ),
            );
            return;
        }
        if let Some(allowed) = schema.get("enum").and_then(Value::as_array)
            && !allowed.contains(v)
        {
            let list: Vec<String> = allowed.iter().map(Value::to_string).collect();
            self.push(path, format!("{} is not one of the spec's enum [{}]", describe(v), list.join(", ")));
        }
        match ty {
            Some("string") => self.string(schema, v, path),
            Some("number") => self.number(schema, v, path, "number"),
            Some("integer") => self.number(schema, v, path, "integer"),
            Some("boolean") if !v.is_boolean() => {
                self.push(path, format!("expected boolean, found {}", describe(v)));
            }
            Some("array") => match v.as_array() {
                Some(items) => {
                    let item_schema = schema.get("items").unwrap_or(&Value::Null);
                    let item_at = format!("{at}[]");
                    for (i, item) in items.iter().enumerate() {
                        if item_schema.is_object() {
                            self.value(item_schema, item, &format!("{path}[{i}]"), &item_at);
                        }
                    }
                }
                None => self.push(path, format!("expected array, found {}", describe(v))),
            },
            Some("object") => match v.as_object() {
                Some(object) => self.object(schema, object, path, at),
                None => self.push(path, format!("expected object, found {}", describe(v))),
            },
            Some("boolean") | None => {}
            Some(other) => self.push(path, format!("the spec declares an unsupported type `{other}`")),
        }
    }

    fn string(&mut self, schema: &Value, v: &Value, path: &str) {
        let Some(s) = v.as_str() else {
            self.push(path, format!("expected string, found {}", describe(v)));
            return;
        };
        match schema.get("format").and_then(Value::as_str) {
            Some("date") if !is_date(s) => {
                self.push(path, format!("{} is not a date (format: date, YYYY-MM-DD)", describe(v)));
            }
            Some("date-time") if chrono::DateTime::parse_from_rfc3339(s).is_err() => {
                self.push(path, format!("{} is not an RFC 3339 date-time (format: date-time)", describe(v)));
            }
            _ => {}
        }
        let chars = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64)
            && chars > max
        {
            self.push(path, format!("{chars} characters, more than the {max} allowed (maxLength)"));
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64)
            && chars < min
        {
            self.push(path, format!("{chars} characters, fewer than the {min} required (minLength)"));
        }
    }

    fn number(&mut self, schema: &Value, v: &Value, path: &str, ty: &str) {
        let Some(n) = v.as_number() else {
            self.push(path, format!("expected {ty} (a JSON number), found {}", describe(v)));
            return;
        };
        if ty == "integer" {
            if !(n.is_i64() || n.is_u64()) {
                self.push(path, format!("expected integer, found number {n}"));
                return;
            }
            if schema.get("format").and_then(Value::as_str) == Some("int32")
                && n.as_i64().is_none_or(|i| i32::try_from(i).is_err())
            {
                self.push(path, format!("{n} is outside int32 (format: int32)"));
            }
        }
        // Bounds are compared as f64: good enough for the spec's small integer bounds.
        let Some(x) = n.as_f64() else {
            self.push(path, format!("{n} is not a finite number"));
            return;
        };
        let exclusive = |key: &str| schema.get(key).and_then(Value::as_bool).unwrap_or(false);
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && (x < min || (exclusive("exclusiveMinimum") && x == min))
        {
            self.push(path, format!("{n} is below the minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && (x > max || (exclusive("exclusiveMaximum") && x == max))
        {
            self.push(path, format!("{n} is above the maximum {max}"));
        }
    }

    fn object(&mut self, schema: &Value, object: &Map<String, Value>, path: &str, at: &str) {
        let empty = Map::new();
        let properties = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
        let required: Vec<&str> =
            schema.get("required").and_then(Value::as_array).into_iter().flatten().filter_map(Value::as_str).collect();
        for name in &required {
            match object.get(*name) {
                None => self.push(&child(path, name), "required property is missing".to_owned()),
                Some(Value::Null) => self.push(&child(path, name), "required property is null".to_owned()),
                Some(_) => {}
            }
        }
        for (name, v) in object {
            let v_path = child(path, name);
            let v_at = child(at, name);
            if let Some(property) = properties.get(name) {
                if v.is_null() && required.contains(&name.as_str()) {
                    continue; // already reported as a null required property
                }
                self.value(property, v, &v_path, &v_at);
                if let (Some(s), Some((max, source))) = (v.as_str(), read_model_max_length(self.definition, at, name)) {
                    let chars = s.chars().count() as u64;
                    if chars > max {
                        self.push(
                            &v_path,
                            format!("{chars} characters, more than the {max} allowed (maxLength of {source})"),
                        );
                    }
                }
            } else if let Some(extension) = extension_for(self.definition, at, name) {
                let extension_schema: Value = serde_json::from_str(extension.schema)
                    .unwrap_or_else(|e| panic!("extension schema of {} is not JSON: {e}", extension.property));
                self.value(&extension_schema, v, &v_path, &v_at);
            } else {
                match schema.get("additionalProperties") {
                    Some(Value::Bool(true)) => {}
                    Some(extra) if extra.is_object() => self.value(extra, v, &v_path, &v_at),
                    _ => {
                        let owner = if self.definition.is_empty() {
                            "the schema".to_owned()
                        } else if at.is_empty() {
                            self.definition.to_owned()
                        } else {
                            format!("{}.{at}", self.definition)
                        };
                        self.push(&v_path, format!("unknown property: not declared in {owner}"));
                    }
                }
            }
        }
    }
}
