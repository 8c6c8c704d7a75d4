//! `product_from_rest`.

use super::{d, fixture, json, paths, utc};
use crate::{canonical::rest::product_from_rest, error::ErrorCode};

#[test]
fn tutorial_simple_product() {
    let p = product_from_rest(&fixture!("product.simple.configurable-tutorial.json")).unwrap();
    assert_eq!(p.magento_id, 2079);
    assert_eq!(p.sku, "MS-Champ-S");
    assert_eq!(p.name, "Champ Tee Small");
    assert_eq!(p.product_type, "simple");
    assert_eq!(p.price, Some(d("25")));
    assert_eq!(p.weight, Some(d("0.5")));
    assert_eq!(p.special_price, None);
    assert_eq!(p.cost, None);
    // custom_attributes tax_class_id "2" (Taxable Goods).
    assert_eq!(p.tax_class.as_deref(), Some("2"));
    assert_eq!(p.website_ids, [1]);
    // extension_attributes.stock_item: qty 10, manage_stock true.
    assert_eq!(p.stock_qty, Some(d("10")));
    assert!(p.manage_stock);
    assert_eq!(p.created_at, Some(utc(2017, 11, 29, 20, 40, 7)));
}

#[test]
fn composite_without_stock_item_and_custom_attribute_prices() {
    // No stock item → stock_qty null, manage_stock false; no website_ids → [] (all websites);
    // special_price and cost are string custom attributes; tax_class_id may come as a number.
    let p = product_from_rest(&json(
        r#"{
            "id": 2100, "sku": "MH01", "name": "Chaz Kangeroo Hoodie", "type_id": "configurable", "price": 0,
            "extension_attributes": {"configurable_product_links": [1002, 1003]},
            "custom_attributes": [
                {"attribute_code": "special_price", "value": "44.5000"},
                {"attribute_code": "cost", "value": "21.25"},
                {"attribute_code": "tax_class_id", "value": 2}
            ]
        }"#,
    ))
    .unwrap();
    assert_eq!(p.product_type, "configurable");
    assert_eq!(p.price, Some(d("0")));
    assert_eq!(p.special_price, Some(d("44.5")));
    assert_eq!(p.cost, Some(d("21.25")));
    assert_eq!(p.tax_class.as_deref(), Some("2"));
    assert!(p.website_ids.is_empty());
    assert_eq!(p.stock_qty, None);
    assert!(!p.manage_stock);
}

#[test]
fn product_errors_name_the_rest_field() {
    let e = product_from_rest(&json(
        r#"{"id": 1, "sku": "A", "type_id": "simple", "extension_attributes": {"website_ids": [1, "x"]}}"#,
    ))
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::Serde);
    assert_eq!(paths(&e), ["product.extension_attributes.website_ids[1]"]);
    let e = product_from_rest(&json(
        r#"{"id": 1, "sku": "A", "type_id": "simple", "custom_attributes": [{"attribute_code": "cost", "value": "n/a"}]}"#,
    ))
    .unwrap_err();
    assert_eq!(paths(&e), ["product.custom_attributes[0].value"]);
    let e = product_from_rest(&json(r#"{"id": 1, "sku": "A"}"#)).unwrap_err();
    assert_eq!(paths(&e), ["product.type_id"]);
    // A negative price is the product's own rule.
    let e = product_from_rest(&json(r#"{"id": 1, "sku": "A", "type_id": "simple", "price": -1}"#)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Validation);
    assert_eq!(paths(&e), ["price"]);
}
