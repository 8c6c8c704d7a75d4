//! Invoice and credit-memo items → canonical lines: dummy detection (magento.md 5.1, 5.2) and
//! the line arithmetic of byte8-spec.md 3.2.
//!
//! The rules are documented on the parent module (`canonical::rest`, section *Lines*).

use std::collections::HashMap;

use rust_decimal::Decimal;

use super::json::{Node, value_id};
use crate::{
    canonical::MagentoInvoiceLine,
    error::Result,
    money::{RoundingPolicy, round_money},
};

/// What an item is in the document.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// It carries money; the text says why (for the error when `row_total` is missing).
    Money(&'static str),
    /// A dummy row: no canonical line.
    Dummy,
    /// Unknown structure: money iff `row_total` is present.
    ByRowTotal,
}

/// The canonical lines of the invoice or credit memo `doc` of `order`, in item order.
pub(super) fn lines(doc: &Node<'_>, order: &Node<'_>) -> Result<Vec<MagentoInvoiceLine>> {
    let mut order_items: HashMap<u64, Node<'_>> = HashMap::new();
    for item in order.array("items")? {
        let id = item.req_id("item_id")?;
        if order_items.insert(id, item.clone()).is_some() {
            return Err(item.invalid("item_id", format!("{id} appears twice in order.items")));
        }
    }

    let rows = doc.array("items")?;
    let mut row_of: HashMap<u64, usize> = HashMap::new();
    let mut linked = Vec::with_capacity(rows.len());
    for (i, row) in rows.iter().enumerate() {
        let id = row.req_id("order_item_id")?;
        let Some(order_item) = order_items.get(&id) else {
            return Err(row.invalid("order_item_id", format!("{id} is not the item_id of any entry of order.items")));
        };
        if row_of.insert(id, i).is_some() {
            return Err(row.invalid("order_item_id", format!("{id} appears on two items of the document")));
        }
        linked.push(order_item.clone());
    }

    let mut out = Vec::new();
    for (row, order_item) in rows.iter().zip(&linked) {
        let role = match parent(order_item, &order_items)? {
            Some((parent_id, parent)) => {
                let parent_row = parent_id.and_then(|id| row_of.get(&id)).map(|&i| &rows[i]);
                child_role(&parent, parent_row, row)?
            }
            None => top_role(order_item, row)?,
        };
        let reason = match role {
            Role::Dummy => continue,
            Role::ByRowTotal if !row.has("row_total") => continue,
            Role::ByRowTotal => "the item has a row_total",
            Role::Money(reason) => reason,
        };
        out.push(money_line(row, order_item, reason)?);
    }
    // The rows left that carry no money (qty-0 rows of a partial document, a zero child whose
    // parent's role was unknown) go by the same rule as the module's JSON.
    Ok(crate::canonical::keep_money_rows(out))
}

/// The parent order item of `item` with its `item_id` when known: from `parent_item_id`, else
/// the embedded `parent_item` copy (magento.md 3.6).
fn parent<'a>(item: &Node<'a>, order_items: &HashMap<u64, Node<'a>>) -> Result<Option<(Option<u64>, Node<'a>)>> {
    let embedded = item.object("parent_item")?;
    match item.id("parent_item_id")?.filter(|id| *id > 0) {
        Some(id) => match order_items.get(&id).cloned().or(embedded) {
            Some(p) => Ok(Some((Some(id), p))),
            None => Err(item.invalid("parent_item_id", format!("{id} is not the item_id of any entry of order.items"))),
        },
        None => match embedded {
            Some(p) => {
                let id = p.id("item_id")?;
                Ok(Some((id, p)))
            }
            None => Ok(None),
        },
    }
}

/// The role of a top-level item (no parent).
fn top_role(item: &Node<'_>, row: &Node<'_>) -> Result<Role> {
    Ok(match item.text("product_type")?.as_deref() {
        Some("configurable") => Role::Money("a configurable parent carries the money (magento.md 5.1)"),
        Some("bundle") => match bundle_is_dynamic(item, Some(row), None) {
            Some(true) => Role::Dummy,
            Some(false) => Role::Money("a fixed-price bundle carries the money (magento.md 5.2)"),
            None => Role::ByRowTotal,
        },
        _ => Role::ByRowTotal,
    })
}

/// The role of a child item whose parent order item is `parent`.
fn child_role(parent: &Node<'_>, parent_row: Option<&Node<'_>>, row: &Node<'_>) -> Result<Role> {
    Ok(match parent.text("product_type")?.as_deref() {
        Some("configurable") => Role::Dummy,
        Some("bundle") => match bundle_is_dynamic(parent, parent_row, Some(row)) {
            Some(true) => Role::Money("the child of a dynamic-price bundle carries the money (magento.md 5.2)"),
            Some(false) => Role::Dummy,
            None => Role::ByRowTotal,
        },
        _ => Role::ByRowTotal,
    })
}

/// Whether the bundle order item `bundle` has a dynamic price (its children carry the money);
/// `None` when nothing tells.
fn bundle_is_dynamic(bundle: &Node<'_>, bundle_row: Option<&Node<'_>>, child_row: Option<&Node<'_>>) -> Option<bool> {
    if let Some(options) = bundle.get("product_options").filter(|o| o.value.is_object()) {
        // `Magento\Catalog\Model\Product\Type\AbstractType`: CALCULATE_CHILD = 0,
        // CALCULATE_PARENT = 1; bundle `price_type`: 0 dynamic, 1 fixed (magento.md 3.10).
        for key in ["product_calculations", "price_type"] {
            match options.value.get(key).and_then(value_id) {
                Some(Some(0)) => return Some(true),
                Some(Some(1)) => return Some(false),
                _ => {}
            }
        }
    }
    if let Some(r) = bundle_row {
        return Some(!r.has("row_total"));
    }
    child_row.map(|r| r.has("row_total"))
}

/// The canonical line of a row the structure gives money to (byte8-spec.md 3.2); a row that has
/// none after all is dropped by [`crate::canonical::keep_money_rows`].
fn money_line(row: &Node<'_>, order_item: &Node<'_>, reason: &str) -> Result<MagentoInvoiceLine> {
    let qty = row.req_decimal("qty")?;
    let Some(row_total) = row.decimal("row_total")? else {
        return Err(row.parse_error("row_total", format!("is missing, but {reason}")));
    };
    let tax = row.amount("tax_amount")?;
    let discount = row.amount("discount_amount")?;
    let price = if row_total.is_zero() && tax.is_zero() && discount.is_zero() {
        row.decimal("price")?.unwrap_or_default()
    } else {
        row.req_decimal("price")?
    };
    let tax_rate = if row_total > Decimal::ZERO && tax > Decimal::ZERO {
        let ratio = tax
            .checked_div(row_total)
            .ok_or_else(|| row.invalid("tax_amount", format!("{tax} / row_total {row_total} is out of range")))?;
        Some(RoundingPolicy::HalfUp.round(ratio, 4))
    } else {
        None
    };
    let text = |key: &str| -> Result<String> {
        Ok(match row.text(key)? {
            Some(s) => s,
            None => order_item.text(key)?.unwrap_or_default(),
        })
    };
    Ok(MagentoInvoiceLine {
        // For a configurable parent this is already the chosen child's SKU (magento.md 5.1).
        sku: text("sku")?,
        name: text("name")?,
        qty,
        unit_price: round_money(price),
        line_subtotal: row_total,
        line_tax: tax,
        // Exactly as the module computes it; the discount tax compensation is not in it
        // (`totals` infers it from the header).
        line_total: row_total + tax - discount,
        tax_rate,
        tax_class: None,
        product_type: order_item.text("product_type")?,
    })
}
