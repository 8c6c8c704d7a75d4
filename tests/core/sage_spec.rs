//! Tests of the Sage spec checker (`tests/support/sage_spec.rs`) on hand-written bodies: a valid
//! body passes, and every rule fires on a body built to break it.

use crate::support_sage_spec as sage_spec;

use std::collections::BTreeSet;

use serde_json::{Value, json};

use sage_spec::{EXTENSIONS, READ_MODELS, assert_valid, check, check_schema, definition, schema_at, spec};

/// The smallest `postSalesInvoices` body the spec accepts: its three required header fields and
/// one line with its three required fields.
fn minimal_invoice() -> Value {
    json!({"sales_invoice": {
        "contact_id": "C1",
        "date": "2026-11-22",
        "invoice_lines": [{"description": "Widget", "ledger_account_id": "SALES", "unit_price": 10.00}]
    }})
}

/// A fuller invoice with both documented extensions.
fn full_invoice() -> Value {
    json!({"sales_invoice": {
        "contact_id": "C1",
        "date": "2026-11-22",
        "due_date": "2026-12-22",
        "reference": "MAG-000000123",
        "currency_id": "EUR",
        "exchange_rate": 0.8547008547,
        "main_address": {"address_line_1": "1 High Street", "city": "London", "postal_code": "SW1A 1AA", "country_id": "GB"},
        "delivery_address": {"address_line_1": "2 Low Road", "city": "Leeds", "postal_code": "LS1 1AA", "country_id": "GB"},
        "shipping_net_amount": 5.00,
        "shipping_tax_rate_id": "GB_STANDARD",
        "invoice_lines": [
            {"description": "Widget", "ledger_account_id": "SALES", "quantity": 2, "unit_price": 10.00,
             "discount_amount": 0, "tax_rate_id": "GB_STANDARD", "tax_amount": 4.00, "currency_tax_amount": 4.00,
             "unit_price_includes_tax": false},
            {"description": "Book", "ledger_account_id": "SALES", "quantity": 1, "unit_price": 12.00,
             "tax_rate_id": "GB_ZERO", "tax_amount": 0, "currency_tax_amount": 0}
        ],
        "idempotency_id": "0123456789abcdef0123456789abcdef"
    }})
}

/// Asserts that `problems` is exactly one problem at `path` mentioning `needle`.
#[track_caller]
fn one_problem(problems: &[String], path: &str, needle: &str) {
    assert_eq!(problems.len(), 1, "expected one problem, got {problems:#?}");
    assert!(problems[0].starts_with(&format!("{path}: ")), "wrong path in {problems:#?}, expected {path}");
    assert!(problems[0].contains(needle), "expected `{needle}` in {problems:#?}");
}

#[test]
fn minimal_and_full_invoices_are_valid() {
    assert_eq!(check("postSalesInvoices", &minimal_invoice()), Vec::<String>::new());
    assert_eq!(check("postSalesInvoices", &full_invoice()), Vec::<String>::new());
    assert_valid("postSalesInvoices", &full_invoice());
}

#[test]
fn missing_contact_id_is_reported() {
    let mut body = minimal_invoice();
    body["sales_invoice"].as_object_mut().unwrap().remove("contact_id");
    one_problem(&check("postSalesInvoices", &body), "sales_invoice.contact_id", "required property is missing");
}

#[test]
fn missing_resource_object_and_line_fields_are_reported() {
    one_problem(&check("postSalesInvoices", &json!({})), "sales_invoice", "required property is missing");
    let mut body = minimal_invoice();
    body["sales_invoice"]["invoice_lines"][0].as_object_mut().unwrap().remove("ledger_account_id");
    one_problem(
        &check("postSalesInvoices", &body),
        "sales_invoice.invoice_lines[0].ledger_account_id",
        "required property is missing",
    );
}

#[test]
fn null_is_reported_required_or_not() {
    let mut body = minimal_invoice();
    body["sales_invoice"]["contact_id"] = Value::Null;
    one_problem(&check("postSalesInvoices", &body), "sales_invoice.contact_id", "required property is null");
    let mut body = minimal_invoice();
    body["sales_invoice"]["reference"] = Value::Null;
    one_problem(&check("postSalesInvoices", &body), "sales_invoice.reference", "null where the spec declares string");
}

#[test]
fn numeric_string_where_a_number_is_required_is_a_type_error() {
    let mut body = minimal_invoice();
    body["sales_invoice"]["invoice_lines"][0]["unit_price"] = json!("10.00");
    one_problem(
        &check("postSalesInvoices", &body),
        "sales_invoice.invoice_lines[0].unit_price",
        "expected number (a JSON number), found string \"10.00\"",
    );
}

#[test]
fn every_type_is_checked_with_the_json_path_of_the_value() {
    let mut body = full_invoice();
    let inv = &mut body["sales_invoice"];
    inv["invoice_lines"][1]["tax_rate_id"] = json!(20);
    inv["invoice_lines"][1]["unit_price_includes_tax"] = json!("false");
    inv["main_address"] = json!(["1 High Street"]);
    inv["invoice_lines"][0]["currency_tax_amount"] = json!("4.00");
    let problems = check("postSalesInvoices", &body);
    assert_eq!(
        problems,
        vec![
            "sales_invoice.invoice_lines[0].currency_tax_amount: expected number (a JSON number), found string \"4.00\"",
            "sales_invoice.invoice_lines[1].tax_rate_id: expected string, found number 20",
            "sales_invoice.invoice_lines[1].unit_price_includes_tax: expected boolean, found string \"false\"",
            "sales_invoice.main_address: expected object, found array",
        ]
    );
    let mut body = minimal_invoice();
    body["sales_invoice"]["invoice_lines"] = json!({"description": "Widget"});
    one_problem(&check("postSalesInvoices", &body), "sales_invoice.invoice_lines", "expected array, found object");
}

#[test]
fn integers_and_their_bounds_are_checked() {
    let contact =
        |days: Value| json!({"contact": {"name": "Jane", "contact_type_ids": ["CUSTOMER"], "credit_days": days}});
    assert_eq!(check("postContacts", &contact(json!(30))), Vec::<String>::new());
    one_problem(&check("postContacts", &contact(json!(1.5))), "contact.credit_days", "expected integer");
    one_problem(&check("postContacts", &contact(json!(400))), "contact.credit_days", "above the maximum 365");
    one_problem(&check("postContacts", &contact(json!(-1))), "contact.credit_days", "below the minimum 0");
    one_problem(&check("postContacts", &contact(json!("30"))), "contact.credit_days", "found string");
}

#[test]
fn invoice_reference_of_26_characters_is_too_long() {
    let mut body = minimal_invoice();
    body["sales_invoice"]["reference"] = json!("A".repeat(25));
    assert_eq!(check("postSalesInvoices", &body), Vec::<String>::new());
    // Characters, not bytes: 25 × "é" is 50 bytes and still fits.
    body["sales_invoice"]["reference"] = json!("é".repeat(25));
    assert_eq!(check("postSalesInvoices", &body), Vec::<String>::new());
    body["sales_invoice"]["reference"] = json!("A".repeat(26));
    one_problem(
        &check("postSalesInvoices", &body),
        "sales_invoice.reference",
        "26 characters, more than the 25 allowed (maxLength of SalesInvoice.reference)",
    );
}

#[test]
fn contact_reference_of_11_characters_is_too_long() {
    let contact = |reference: &str| json!({"contact": {"name": "Jane Doe", "contact_type_ids": ["CUSTOMER"], "reference": reference}});
    assert_eq!(check("postContacts", &contact("M123456789")), Vec::<String>::new());
    one_problem(
        &check("postContacts", &contact("M1234567890")),
        "contact.reference",
        "11 characters, more than the 10 allowed (maxLength of Contact.reference)",
    );
}

#[test]
fn nested_objects_get_their_read_models_limits() {
    let body = json!({"contact": {
        "name": "Jane Doe", "contact_type_ids": ["CUSTOMER"],
        "main_address": {"address_line_1": "x".repeat(51), "postal_code": "SW1A 1AA", "name": "Acme"},
        "main_contact_person": {"name": "n".repeat(51), "email": format!("{}@example.com", "e".repeat(88))}
    }});
    // An e-mail of exactly 100 characters fits ContactPerson.email.
    assert_eq!(
        check("postContacts", &body),
        vec![
            "contact.main_address.address_line_1: 51 characters, more than the 50 allowed (maxLength of Address.address_line_1)",
            "contact.main_contact_person.name: 51 characters, more than the 50 allowed (maxLength of ContactPerson.name)",
        ]
    );
    let mut body = minimal_invoice();
    body["sales_invoice"]["delivery_address"] = json!({"postal_code": "SW1A 1AA XX"});
    one_problem(
        &check("postSalesInvoices", &body),
        "sales_invoice.delivery_address.postal_code",
        "11 characters, more than the 10 allowed (maxLength of Address.postal_code)",
    );
    let stock_item = json!({"stock_item": {"item_code": "S".repeat(31), "description": "Tee",
        "sales_ledger_account_id": "SALES", "purchase_ledger_account_id": "COS"}});
    one_problem(&check("postStockItems", &stock_item), "stock_item.item_code", "maxLength of StockItem.item_code");
    let movement = json!({"stock_movement": {"stock_item_id": "SI1", "date": "2026-11-22", "quantity": -3,
        "cost_price": 9.5, "details": "d".repeat(51)}});
    one_problem(
        &check("postStockMovements", &movement),
        "stock_movement.details",
        "maxLength of StockMovement.details",
    );
    // The same SKU is fine on a product (Product.item_code is 255).
    let product = json!({"product": {"item_code": "S".repeat(31), "description": "Tee",
        "sales_ledger_account_id": "SALES", "purchase_ledger_account_id": "COS"}});
    assert_eq!(check("postProducts", &product), Vec::<String>::new());
}

#[test]
fn unknown_property_line_items_is_reported() {
    let mut body = minimal_invoice();
    let lines = body["sales_invoice"]["invoice_lines"].clone();
    body["sales_invoice"]["line_items"] = lines;
    one_problem(
        &check("postSalesInvoices", &body),
        "sales_invoice.line_items",
        "unknown property: not declared in postSalesInvoices.sales_invoice",
    );
    // Read-model names are not request names either: `contact` instead of `contact_id`.
    let mut body = minimal_invoice();
    body["sales_invoice"]["contact"] = json!({"id": "C1"});
    one_problem(&check("postSalesInvoices", &body), "sales_invoice.contact", "unknown property");
}

#[test]
fn extensions_are_accepted_only_where_documented() {
    // `currency_tax_amount` belongs on lines, not on the header.
    let mut body = minimal_invoice();
    body["sales_invoice"]["currency_tax_amount"] = json!(4.00);
    one_problem(&check("postSalesInvoices", &body), "sales_invoice.currency_tax_amount", "unknown property");
    // `idempotency_id` belongs on the resource object, not on a line.
    let mut body = minimal_invoice();
    body["sales_invoice"]["invoice_lines"][0]["idempotency_id"] = json!("0123456789abcdef0123456789abcdef");
    one_problem(
        &check("postSalesInvoices", &body),
        "sales_invoice.invoice_lines[0].idempotency_id",
        "unknown property",
    );
    // The extensions are typed: a 36-character hyphenated GUID is not Sage's 32-character id.
    let mut body = minimal_invoice();
    body["sales_invoice"]["idempotency_id"] = json!("01234567-89ab-cdef-0123-456789abcdef");
    one_problem(&check("postSalesInvoices", &body), "sales_invoice.idempotency_id", "more than the 32 allowed");
    // Credit-note lines have the same extension; contacts have idempotency but no line extension.
    let note = json!({"sales_credit_note": {"contact_id": "C1", "date": "2026-11-25", "idempotency_id": "0123456789abcdef0123456789abcdef",
        "credit_note_lines": [{"description": "Widget", "ledger_account_id": "SALES", "unit_price": 10, "currency_tax_amount": 2}]}});
    assert_eq!(check("postSalesCreditNotes", &note), Vec::<String>::new());
    let contact = json!({"contact": {"name": "Jane", "contact_type_ids": ["CUSTOMER"], "currency_tax_amount": 0}});
    one_problem(&check("postContacts", &contact), "contact.currency_tax_amount", "unknown property");
}

#[test]
fn bad_dates_are_reported() {
    for bad in ["2026-13-01", "22/11/2026", "2026-1-5", "2026-02-30", "2026-11-22T10:00:00Z", ""] {
        let mut body = minimal_invoice();
        body["sales_invoice"]["date"] = json!(bad);
        one_problem(
            &check("postSalesInvoices", &body),
            "sales_invoice.date",
            "is not a date (format: date, YYYY-MM-DD)",
        );
    }
    let mut body = minimal_invoice();
    body["sales_invoice"]["due_date"] = json!(20261222);
    one_problem(&check("postSalesInvoices", &body), "sales_invoice.due_date", "expected string, found number");
}

#[test]
fn date_times_must_be_rfc_3339() {
    let schema = &definition("SalesInvoice")["properties"]["created_at"];
    assert_eq!(schema["format"], json!("date-time"), "the read model's timestamps are date-times");
    for good in ["2026-11-22T09:59:00Z", "2026-11-22T09:59:00.123+01:00"] {
        assert_eq!(check_schema(schema, &json!(good)), Vec::<String>::new(), "{good}");
    }
    for bad in ["2026-11-22", "2026-11-22 09:59:00", "2026-11-22T09:59:00"] {
        one_problem(&check_schema(schema, &json!(bad)), "(body)", "is not an RFC 3339 date-time");
    }
}

#[test]
fn enums_are_enforced() {
    // The spec's only enums are on query parameters; `visible_in` of GET /ledger_accounts is one.
    let parameters = spec()["paths"]["/ledger_accounts"]["get"]["parameters"].as_array().unwrap();
    let visible_in = parameters.iter().find(|p| p["name"] == "visible_in").unwrap();
    assert_eq!(check_schema(visible_in, &json!("sales")), Vec::<String>::new());
    one_problem(&check_schema(visible_in, &json!("purchases")), "(body)", "is not one of the spec's enum");
}

#[test]
fn assert_valid_panics_listing_every_problem() {
    let mut body = minimal_invoice();
    body["sales_invoice"].as_object_mut().unwrap().remove("contact_id");
    body["sales_invoice"]["line_items"] = json!([]);
    let err = std::panic::catch_unwind(|| assert_valid("postSalesInvoices", &body)).unwrap_err();
    let message = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(message.contains("2 problem(s)"), "{message}");
    assert!(message.contains("sales_invoice.contact_id: required property is missing"), "{message}");
    assert!(message.contains("sales_invoice.line_items: unknown property"), "{message}");
}

#[test]
#[should_panic(expected = "has no definition `postSalesInvoice`")]
fn unknown_definition_panics() {
    let _ = check("postSalesInvoice", &minimal_invoice());
}

/// The read model the spec itself links to an object of a request: the `201` response of the
/// `POST` whose body is the definition, then the `$ref` of the same-named property.
fn linked_read_model(definition_name: &str, at: &str) -> Option<String> {
    let name_of =
        |schema: &Value| schema["$ref"].as_str().and_then(|r| r.strip_prefix("#/definitions/")).map(str::to_owned);
    match at.rsplit_once('.') {
        None => spec()["paths"].as_object()?.values().find_map(|item| {
            let post = item.get("post")?;
            let body_ref = post["parameters"].as_array()?.iter().find(|p| p["in"] == "body")?;
            (name_of(&body_ref["schema"])? == definition_name).then(|| name_of(&post["responses"]["201"]["schema"]))?
        }),
        Some((parent, segment)) => {
            let parent_model = sage_spec::read_models_for(definition_name, parent).first()?;
            let (name, is_array) = match segment.strip_suffix("[]") {
                Some(name) => (name, true),
                None => (segment, false),
            };
            let property = &definition(parent_model)["properties"][name];
            name_of(if is_array { &property["items"] } else { property })
        }
    }
}

#[test]
fn read_model_table_agrees_with_the_spec() {
    for entry in READ_MODELS {
        let object = schema_at(entry.definition, entry.at)
            .unwrap_or_else(|| panic!("{}.{} is not in the spec", entry.definition, entry.at));
        let names: BTreeSet<&str> = object["properties"].as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            linked_read_model(entry.definition, entry.at).as_deref(),
            entry.read_models.first().copied(),
            "{}.{}: the first read model must be the one the spec links",
            entry.definition,
            entry.at
        );
        for model in entry.read_models {
            let shared = definition(model)["properties"]
                .as_object()
                .unwrap()
                .keys()
                .filter(|k| names.contains(k.as_str()))
                .count();
            assert!(shared > 0, "{model} shares no property name with {}.{}", entry.definition, entry.at);
        }
    }
}

/// The schema paths of every object below the root of a definition.
fn object_paths(schema: &Value, at: &str, out: &mut Vec<String>) {
    let schema = sage_spec::resolve(schema);
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        if !at.is_empty() {
            out.push(at.to_owned());
        }
        for (name, property) in properties {
            object_paths(property, &if at.is_empty() { name.clone() } else { format!("{at}.{name}") }, out);
        }
    } else if let Some(items) = schema.get("items") {
        object_paths(items, &format!("{at}[]"), out);
    }
}

#[test]
fn every_object_of_a_covered_request_has_read_models() {
    let definitions: BTreeSet<&str> = READ_MODELS.iter().map(|r| r.definition).collect();
    assert_eq!(definitions.len(), 9, "the nine requests the crate sends");
    for name in definitions {
        let mut paths = Vec::new();
        object_paths(definition(name), "", &mut paths);
        for at in paths {
            assert!(!sage_spec::read_models_for(name, &at).is_empty(), "{name}.{at} has no read model in READ_MODELS");
        }
    }
}

#[test]
fn extensions_are_really_missing_from_the_spec() {
    for e in EXTENSIONS {
        let object =
            schema_at(e.definition, e.at).unwrap_or_else(|| panic!("{}.{} is not in the spec", e.definition, e.at));
        assert!(
            object["properties"].get(e.property).is_none(),
            "{}.{}.{} is declared: drop the extension",
            e.definition,
            e.at,
            e.property
        );
        assert!(serde_json::from_str::<Value>(e.schema).is_ok(), "{} schema", e.property);
    }
}
