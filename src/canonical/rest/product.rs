//! Products from `GET /V1/products/{sku}` (magento.md 3.10; byte8-spec.md 3.7).

use serde_json::Value;

use super::json::{Node, value_id};
use crate::{canonical::MagentoProduct, error::Result};

const PRODUCT: &str = "Magento REST product";

/// See [`super::product_from_rest`].
pub(super) fn product(product: &Value) -> Result<MagentoProduct> {
    let p = Node::root(product, "product", PRODUCT)?;

    // `custom_attributes` is a list of `{attribute_code, value}`; the first entry of a code wins.
    let attributes = p.array("custom_attributes")?;
    let attribute = |code: &str| -> Result<Option<&Node<'_>>> {
        for a in &attributes {
            if a.text("attribute_code")?.as_deref() == Some(code) {
                return Ok(Some(a));
            }
        }
        Ok(None)
    };
    let special_price = match attribute("special_price")? {
        Some(a) => a.decimal("value")?,
        None => None,
    };
    let cost = match attribute("cost")? {
        Some(a) => a.decimal("value")?,
        None => None,
    };
    // magento.md 3.10: `tax_class_id` is not top-level; it is a string custom attribute.
    let tax_class = match attribute("tax_class_id")? {
        Some(a) => a.text("value")?,
        None => None,
    };

    let extension = p.object("extension_attributes")?;
    let mut website_ids = Vec::new();
    let mut stock_qty = None;
    let mut manage_stock = false;
    if let Some(ext) = &extension {
        for w in ext.array("website_ids")? {
            let id = value_id(w.value)
                .flatten()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| w.parse_error("", format!("must be a website id, got {}", w.value)))?;
            website_ids.push(id);
        }
        // No stock item (composites, brand-new products): stock_qty null, manage_stock false.
        if let Some(stock) = ext.object("stock_item")? {
            stock_qty = stock.decimal("qty")?;
            manage_stock = stock.flag("manage_stock")?.unwrap_or(false);
        }
    }

    let out = MagentoProduct {
        magento_id: p.req_id("id")?,
        sku: p.req_text("sku")?,
        name: p.string("name")?.unwrap_or_default(),
        product_type: p.req_text("type_id")?,
        price: p.decimal("price")?,
        special_price,
        cost,
        weight: p.decimal("weight")?,
        stock_qty,
        manage_stock,
        tax_class,
        website_ids,
        created_at: p.timestamp("created_at")?,
        updated_at: p.timestamp("updated_at")?,
    };
    out.validate()?;
    Ok(out)
}
