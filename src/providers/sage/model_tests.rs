//! The read models against every recorded real Sage answer (`tests/fixtures/sage-real`), and
//! the envelope's absurd counts. Unit tests since the read models are private to the crate
//! (they were in `tests/core/sage_http.rs`, with the same assertions).

use serde_json::{Value, json};

use super::{Link, Page, SageContact, SageDocument, SageItem, SageTransaction};
use crate::providers::sage::{
    client::{read_json, read_value},
    error::parse_errors,
};

/// One recorded Sage answer, byte for byte.
fn real_bytes(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/sage-real/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

/// One recorded Sage answer, as JSON.
fn real(name: &str) -> Value {
    serde_json::from_slice(&real_bytes(name)).unwrap_or_else(|e| panic!("{name} is not JSON: {e}"))
}

#[test]
fn every_real_sage_answer_is_read_by_the_model_types() {
    let dir = format!("{}/tests/fixtures/sage-real", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(names.len(), 13, "{names:?}");
    let errors = |name: &str| -> Vec<(String, String, String)> {
        parse_errors(&real_bytes(name)).into_iter().map(|e| (e.code, e.field, e.message)).collect()
    };
    let one = |code: &str, field: &str, message: &str| vec![(code.to_owned(), field.to_owned(), message.to_owned())];
    for name in &names {
        match name.as_str() {
            "sage_docs_error_401_no_subscription.json" => {
                assert_eq!(errors(name), one("AuthorizationFailure", "", "No active subscription. (MSE)"));
            }
            "sage_docs_error_403_MultiUserAccessDenied.json" => assert_eq!(
                errors(name),
                one(
                    "MultiUserAccessDenied",
                    "",
                    "The current user is not allowed to access that resource with that method."
                )
            ),
            "sage_docs_error_500_UnexpectedError.json" => {
                assert_eq!(errors(name), one("UnexpectedError", "", "An unexpected error occurred."));
            }
            "sage_github_php29_422_RecordInvalid_empty_source.json" => {
                assert_eq!(errors(name), one("RecordInvalid", "", "Couldn't find Supplier."));
            }
            "sage_github_php32_RecordNotFound.json" => {
                assert_eq!(errors(name), one("RecordNotFound", "", "Couldn't find record."));
            }
            "sage_olsgreen_422_line_items_tax_rate_id.json" => {
                assert_eq!(errors(name), one("RecordInvalid", "line_items.tax_rate_id", "This field is required."));
            }
            "sage_docs_token_400_invalid_grant.json" => assert_eq!(real(name)["error"], "invalid_grant"),
            "sage_docs_pagination_sales_quotes_page2.json" => {
                let p: Page<Link> = serde_json::from_value(real(name)).unwrap();
                assert_eq!((p.total, p.page, p.items_per_page), (Some(97), Some(2), Some(25)));
                assert_eq!(p.next.as_deref(), Some("/sales_quotes?page=3&items_per_page=25"));
                assert_eq!(p.back.as_deref(), Some("/sales_quotes?page=1&items_per_page=25"));
                assert_eq!(p.items[0].displayed_as.as_deref(), Some("SQ-2"));
            }
            "sage_ledgerscope_GetAll_Business.json" => {
                let p: Page<Link> = serde_json::from_value(real(name)).unwrap();
                // `$items_per_page` spelled in snake case here, at i32::MAX.
                assert_eq!((p.total, p.items_per_page, p.next.as_deref()), (Some(274), Some(2_147_483_647), None));
                assert_eq!(p.items.len(), 274);
                assert_eq!(p.items[13].displayed_as.as_deref(), Some("J Herron & Son"), "\\u0026 is read as &");
            }
            "sage_ledgerscope_GetAll_Product.json" => {
                let p: Page<SageItem> = serde_json::from_value(real(name)).unwrap();
                assert_eq!((p.total, p.items_per_page), (Some(56), Some(50)));
                assert_eq!(p.next.as_deref(), Some("/products?page=2&items_per_page=50&attributes=all"));
                let states: Vec<(&str, Option<Option<bool>>, bool)> =
                    p.items.iter().map(|i| (i.item_code.as_deref().unwrap(), i.active, i.is_usable())).collect();
                assert_eq!(
                    states,
                    vec![
                        ("OWF", Some(None), false),
                        ("GEMF", Some(Some(true)), true),
                        ("SRCF", Some(Some(false)), false)
                    ]
                );
            }
            "sage_ledgerscope_GetAll_SalesInvoice.json" => {
                let p: Page<SageDocument> = serde_json::from_value(real(name)).unwrap();
                assert_eq!((p.total, p.items_per_page), (Some(2), Some(1)));
                assert_eq!(
                    p.next.as_deref(),
                    Some("/sales_invoices?page=2&items_per_page=1&attributes=date&sort=date:asc")
                );
                assert_eq!(
                    (p.items[0].displayed_as.as_deref(), p.items[0].date.as_deref()),
                    (Some("SI-1"), Some("2015-02-19"))
                );
            }
            "sage_ledgerscope_GetAll_BankAccount.json" => {
                let p: Page<Value> = serde_json::from_value(real(name)).unwrap();
                assert_eq!((p.total, p.items.len()), (Some(5), 5));
                assert!(p.items.iter().all(|b| b.get("currency").is_none() && b["balance"].is_string()));
            }
            "sage_ledgerscope_FinancialSettings.json" => {
                // Read by the provider (`reference_data_reads_the_real_settings_and_bank_accounts`);
                // here: the odd values it carries are really there.
                let v = real(name);
                assert_eq!(
                    (v["mtd_authenticated_date"].as_str(), v["default_irpf_rate"].as_str()),
                    (Some(""), Some("0.0"))
                );
            }
            other => panic!("{other}: a recorded Sage answer without a check; add one"),
        }
    }
}

#[test]
fn absurd_counts_in_an_envelope_are_read_as_absent() {
    // Read as absent, never an error or a panic.
    let p: Page<Link> = serde_json::from_value(json!({"$total": -5, "$page": 1.5, "$itemsPerPage": "lots",
        "$items": [{"id": "a", "displayed_as": "A", "$path": "/x/a"}]}))
    .unwrap();
    assert_eq!((p.total, p.page, p.items_per_page), (None, None, None));
    let p: Page<Link> =
        serde_json::from_value(json!({"$total": "12", "$items_per_page": 1e300, "$items": []})).unwrap();
    assert_eq!((p.total, p.items_per_page), (Some(12), None));
}

/// `read_json` reads an answer straight from its text when it can, and through a `Value` (with
/// field paths for the error) otherwise: on every recorded real Sage answer that is a page, both
/// readings give the same page for each model type it is read as, and an answer with a key twice
/// is read through the `Value`, which keeps the last.
#[test]
fn both_readings_agree_on_every_real_sage_answer() {
    fn agree_on<T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(
        bytes: &[u8],
        value: Value,
        name: &str,
    ) -> usize {
        let straight: Option<T> = serde_json::from_slice(bytes).ok();
        let through_value: Option<T> = read_value(value, name).ok();
        assert_eq!(straight, through_value, "{name}");
        assert_eq!(read_json::<T>(bytes, name).ok(), through_value, "{name}: read_json");
        usize::from(straight.is_some())
    }
    fn agree<T: serde::de::DeserializeOwned + PartialEq + std::fmt::Debug>(name: &str) -> usize {
        agree_on::<T>(&real_bytes(name), real(name), name)
    }
    let pages = [
        "sage_docs_pagination_sales_quotes_page2.json",
        "sage_ledgerscope_GetAll_BankAccount.json",
        "sage_ledgerscope_GetAll_Business.json",
        "sage_ledgerscope_GetAll_Product.json",
        "sage_ledgerscope_GetAll_SalesInvoice.json",
    ];
    let mut read = 0;
    for name in pages {
        read += agree::<Page<Link>>(name);
        read += agree::<Page<SageItem>>(name);
        read += agree::<Page<SageDocument>>(name);
        read += agree::<Page<Value>>(name);
    }
    assert!(read >= 10, "most pages read as most types: {read}");
    // Each record of those pages, as the single record a POST answers with (the provider reads
    // a created contact, item, document or transaction straight from its text): both readings
    // agree for every record model, whether it reads or not.
    let (mut records, mut read) = (0, 0);
    for name in pages {
        let items = real(name).get("$items").and_then(Value::as_array).cloned().unwrap_or_default();
        for (i, item) in items.into_iter().enumerate() {
            let bytes = serde_json::to_vec(&item).unwrap();
            let what = format!("{name} item {i}");
            read += agree_on::<SageDocument>(&bytes, item.clone(), &what);
            read += agree_on::<SageItem>(&bytes, item.clone(), &what);
            read += agree_on::<SageContact>(&bytes, item.clone(), &what);
            read += agree_on::<SageTransaction>(&bytes, item, &what);
            records += 1;
        }
    }
    assert!(records >= 10 && read >= records, "{records} records, {read} readings");
    let twice = br#"{"$total": 1, "$page": 1, "$items": [], "$total": 2}"#;
    assert!(serde_json::from_slice::<Page<Link>>(twice).is_err(), "a key twice: not read straight");
    let page = read_json::<Page<Link>>(twice, "twice").unwrap();
    assert_eq!(page.total, Some(2), "through the Value, the last");
}
