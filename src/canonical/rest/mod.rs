//! Magento's standard REST responses → the canonical entities, for a store without the Byte8
//! module (a back-fill). Pure functions, no I/O: the caller fetches the documents.
//!
//! | function | REST input | canonical output |
//! |---|---|---|
//! | [`invoice_from_rest`] | `GET /V1/invoices/{id}` + `GET /V1/orders/{order_id}` | [`MagentoInvoice`] |
//! | [`credit_memo_from_rest`] | `GET /V1/creditmemo/{id}` + its order (+ its invoice) | [`MagentoCreditMemo`] |
//! | [`payment_from_rest`] | the invoice + its order | [`MagentoPayment`] |
//! | [`contact_from_rest`] | `GET /V1/customers/{id}` | [`MagentoContact`] |
//! | [`contact_from_order`] | an order | the buyer [`MagentoContact`] (registered or guest) |
//! | [`fill_contact_from_order`] | a contact + an order | the contact with the order's addresses added |
//! | [`product_from_rest`] | `GET /V1/products/{sku}` | [`MagentoProduct`] |
//!
//! The output is what the Byte8 module would serve for the same Magento data
//! (byte8-spec.md section 3), and every entity has passed its own `validate()`: the adapter never
//! hands back a document whose lines do not add up.
//!
//! # Reading the JSON (magento.md section 1)
//!
//! - A missing key and an explicit `null` mean the same: null. Header and line amounts that are
//!   null count as 0 (the module casts them with `(float)`); `grand_total`, `qty`, `price` of a
//!   money line, ids, numbers and dates the document cannot do without are required.
//! - Money and quantities are JSON numbers (read from their exact digits, never `f64`) or
//!   numeric strings (Adobe Commerce declares some as strings); magnitudes above 10^15 are
//!   refused.
//! - Timestamps are `YYYY-MM-DD HH:MM:SS` in UTC.
//! - Text that is the empty string is null where the canonical field is optional (the module's
//!   `nullIfEmpty`).
//!
//! Errors: [`Error::Parse`](crate::Error::Parse) for a missing or mistyped field and
//! [`Error::Invalid`](crate::Error::Invalid) for a broken reference or rule, each with the REST
//! field path (`invoice.items[3].order_item_id`, `order.items[2].parent_item_id`,
//! `creditmemo.subtotal`). A canonical `validate()` failure is returned unchanged, with the
//! canonical field paths (`lines[0].line_subtotal`, `grand_total`).
//!
//! # Lines (magento.md 3.2, 5.1, 5.2)
//!
//! One canonical line per non-dummy invoice or credit-memo item.
//!
//! An invoice or credit memo has one item per order item, dummies included, and the parent/child
//! structure is only visible through the order items (`order_item_id` → `order.items[].item_id`,
//! then `parent_item_id`; magento.md 3.2, 3.6). The rules, decided from structure and never from
//! zero prices (magento.md 5.1: child prices are not reliably 0):
//!
//! | order item | role |
//! |---|---|
//! | child of a `configurable` | dummy: the parent carries the money (5.1) |
//! | `configurable` parent | money; its `sku` is already the chosen child's |
//! | `bundle` parent, dynamic price | dummy: the children carry the money (5.2) |
//! | child of a dynamic `bundle` | money |
//! | `bundle` parent, fixed price | money, with the bundle's tax class |
//! | child of a fixed `bundle` | dummy |
//! | anything else (simple, virtual, downloadable, grouped, custom types, children of custom composites) | money unless its `row_total` is absent or `null` (the fallback of 5.2: the Subtotal collector only sets `row_total` on non-dummy items) |
//!
//! A bundle is dynamic when its order item says so in `product_options` (`product_calculations`
//! 0 = `CALCULATE_CHILD`, or `price_type` 0); Magento's REST order item does not normally carry
//! either, so otherwise it is dynamic exactly when the bundle's own row in the document has no
//! `row_total` (5.2), and, if the bundle's row is missing from the document, when the child's row
//! has one.
//!
//! A line that carries money but has no `row_total` is rejected, naming the field. A money row
//! with `qty` 0 and no amounts (Magento may list every order item on a partial document) is not
//! a line of the document and is skipped.
//!
//! The line fields are those of byte8-spec.md 3.2: `unit_price` = `price` rounded half up to 2
//! decimals, `line_subtotal` = `row_total`, `line_tax` = `tax_amount`, `line_total` =
//! `row_total + tax_amount − discount_amount` (the discount tax compensation is not in it;
//! [`totals`](super::totals) infers it from the header, magento.md 5.3), `tax_rate` =
//! `round(line_tax / line_subtotal, 4)` half up when both are > 0, `tax_class` null,
//! `product_type` from the order item.
//!
//! # Decisions where the REST data cannot say what the module says
//!
//! - **`website_id` is 0** on invoices, credit memos and order contacts: orders carry only
//!   `store_id` (magento.md section 1) and the module looks the website up from the store. A
//!   caller that knows the store → website map (`GET /V1/store/storeViews`) sets the public
//!   field after the call.
//! - **A registered buyer without the customer record** ([`contact_from_order`]): the module
//!   loads the customer; here the contact is built from the order's `customer_*` fields
//!   (`customer_group_id` as the group, no `created_at`), with the order's addresses, company
//!   and telephone. Call [`contact_from_rest`] and [`fill_contact_from_order`] instead when the
//!   customer record is at hand.
//! - **Credit memos with `invoice_id`** need the invoice (its `increment_id` and `created_at`);
//!   giving none, the wrong one, or one for an offline refund is an error rather than a silently
//!   incomplete document.
//! - **Payments** take `invoice.transaction_id`, else `order.payment.last_trans_id`, as the
//!   gateway transaction id (the module reads only `last_trans_id`).
//! - **Guests**: `customer_is_guest` = 1 makes a guest even when a `customer_id` is present (the
//!   module looks only at `customer_id`); a missing `customer_email` / name falls back to the
//!   billing address (magento.md 5.12).
//! - **Dummy lines are dropped.** The module's repository (byte8io/magento-client `85f246e`)
//!   maps every item, dummies included, which would give lines like a dynamic bundle parent
//!   with `unit_price` 68 and `line_subtotal` 0 that fail [`MagentoInvoice::validate`]; the
//!   canonical entities expect them dropped, as here.
//! - **Amounts beyond what the identity checks can compute** (a magnitude above 10^15, or
//!   products and ratios that overflow `Decimal`) are refused with an error, never a panic.

mod contact;
mod document;
mod json;
mod lines;
mod product;
#[cfg(test)]
mod tests;

use serde_json::Value;

use super::{MagentoContact, MagentoCreditMemo, MagentoInvoice, MagentoPayment, MagentoProduct};
use crate::error::Result;

/// Builds the canonical invoice from `GET /V1/invoices/{id}` (`invoice`) and
/// `GET /V1/orders/{order_id}` (`order`).
///
/// From the invoice (magento.md 3.1): ids, `state` (1 open, 2 paid, 3 cancelled, anything else
/// open), `subtotal`, `tax_amount`, `shipping_amount`, `shipping_tax_amount`, `discount_amount`
/// (Magento's negative number, passed through), `grand_total`, `created_at` (UTC),
/// `base_to_order_rate`, the currency (`order_currency_code`, else `base_currency_code`, else the
/// order's `order_currency_code`; magento.md section 2) and the lines (see the module docs).
///
/// From the order (magento.md 3.5-3.8): `increment_id`, the buyer ([`contact_from_order`]),
/// `billing_address`, the shipping address at
/// `extension_attributes.shipping_assignments[0].shipping.address` (null for virtual orders,
/// magento.md 5.13), `payment.method` and `payment.po_number`. `website_id` is 0 (module docs).
///
/// # Errors
/// [`Error::Parse`](crate::Error::Parse) or [`Error::Invalid`](crate::Error::Invalid) naming the
/// REST field (e.g. an item whose `order_item_id` is not in the order, an `order_id` that is not
/// the order's `entity_id`), or the invoice's own `validate()` error.
pub fn invoice_from_rest(invoice: &Value, order: &Value) -> Result<MagentoInvoice> {
    document::invoice(invoice, order)
}

/// Builds the canonical credit memo from `GET /V1/creditmemo/{id}` (`creditmemo`), its order,
/// and its invoice when `creditmemo.invoice_id` is set (for `invoice_increment_id` and
/// `invoice_created_at`; pass `None` for an offline refund created from the order, magento.md
/// 5.7).
///
/// The lines follow the invoice rules; `adjustment_positive` (Adjustment Refund) and
/// `adjustment_negative` (Adjustment Fee) are passed through as Magento stores them, both
/// positive (magento.md 3.3); `reason` is the first non-empty comment text. Before the
/// canonical check, the REST header (`subtotal`, `tax_amount`, `discount_amount`) is checked
/// against the lines with identity I-2 (magento.md section 4), because the canonical credit memo
/// does not carry those fields.
///
/// # Errors
/// As [`invoice_from_rest`]; also [`Error::Invalid`](crate::Error::Invalid) at
/// `creditmemo.invoice_id` when the invoice is missing, does not match, or is given for an
/// offline refund.
pub fn credit_memo_from_rest(creditmemo: &Value, order: &Value, invoice: Option<&Value>) -> Result<MagentoCreditMemo> {
    document::credit_memo(creditmemo, order, invoice)
}

/// Builds the canonical payment of an invoice, as the module's payment endpoint does
/// (byte8-spec.md 3.6): keyed by the invoice id, `amount` = the invoice `grand_total`,
/// `captured_at` = the invoice `created_at`, `method` = `order.payment.method`,
/// `gateway_txn_id` = `invoice.transaction_id`, else `order.payment.last_trans_id` (magento.md
/// 3.8), `gateway_metadata` = `order.payment.additional_information` (`[]` when absent).
///
/// # Errors
/// [`Error::NotFound`](crate::Error::NotFound) when the order has no `payment`;
/// [`Error::Parse`](crate::Error::Parse) naming the REST field otherwise (e.g.
/// `order.payment.method` missing).
pub fn payment_from_rest(invoice: &Value, order: &Value) -> Result<MagentoPayment> {
    document::payment(invoice, order)
}

/// Builds the contact of `GET /V1/customers/{id}` (magento.md 3.9; byte8-spec.md 3.3).
///
/// One [`Address`](super::Address) per default flag (`default_billing` / `default_shipping` on
/// the customer, or the address's own boolean flags): an address that is both appears twice, once
/// per kind; other addresses are left out. The customer address `region` is an object
/// `{region_code, region, region_id}` whose `region` name is taken. The phone is the default
/// billing address's telephone, else the first non-empty one; the company stays null, as in the
/// module (it comes from an order, see [`fill_contact_from_order`]). A customer without
/// addresses (magento.md 5.13) gets none; the module then falls back to the most recent order,
/// which a caller does with [`fill_contact_from_order`].
///
/// # Errors
/// [`Error::Parse`](crate::Error::Parse) naming the REST field (`customer.email`,
/// `customer.addresses[0].country_id`), or the contact's own check.
pub fn contact_from_rest(customer: &Value) -> Result<MagentoContact> {
    contact::contact_from_customer(customer)
}

/// Builds the buyer of an order, as embedded in invoices and credit memos (byte8-spec.md 3.3).
///
/// A registered buyer has `customer_id` > 0 and `customer_is_guest` not set; anyone else is a
/// guest (magento.md 5.12): the synthetic contact with `magento_id` 0 and `website_id` 0, built
/// from `customer_email`, `customer_firstname` and `customer_lastname` (each falling back to the
/// billing address's field when missing), the billing `company` and `telephone`, and the order's
/// `created_at` / `updated_at`. Either way the contact then gets the order's billing address and,
/// when it is a different address row, its shipping address (absent for virtual orders), as
/// [`fill_contact_from_order`] does. `website_id` is 0 (see the module docs).
///
/// # Errors
/// [`Error::Parse`](crate::Error::Parse) naming the REST field (`order.customer_email`,
/// `order.billing_address.country_id`), or the contact's own check.
pub fn contact_from_order(order: &Value) -> Result<MagentoContact> {
    contact::contact_from_order(order)
}

/// Adds the order's addresses that `contact` lacks, as the module does for the contact embedded
/// in an invoice (byte8-spec.md 3.3): the billing address when the contact has no billing
/// address, the shipping address when it has no shipping address and the order's shipping
/// address is a different row from its billing one. It only adds, never overwrites; when it adds
/// an address it also fills a missing `company` and `phone` from the billing address.
///
/// # Errors
/// [`Error::Parse`](crate::Error::Parse) naming the REST field of a malformed order address;
/// `contact` is then left as it was.
pub fn fill_contact_from_order(contact: &mut MagentoContact, order: &Value) -> Result<()> {
    let o = json::Node::root(order, "order", "Magento REST order")?;
    let mut filled = contact.clone();
    contact::fill_from_order(&mut filled, &o)?;
    *contact = filled;
    Ok(())
}

/// Builds the canonical product of `GET /V1/products/{sku}` (magento.md 3.10; byte8-spec.md
/// 3.7): `type_id` → `product_type`, `price`, `weight`, `special_price` and `cost` from
/// `custom_attributes`, `tax_class` from `custom_attributes.tax_class_id`, `website_ids` from
/// `extension_attributes.website_ids`, and `stock_qty` / `manage_stock` from
/// `extension_attributes.stock_item` (`qty`, `manage_stock`); without a stock item `stock_qty`
/// is null and `manage_stock` false.
///
/// # Errors
/// [`Error::Parse`](crate::Error::Parse) naming the REST field, or the product's own
/// `validate()` error.
pub fn product_from_rest(product: &Value) -> Result<MagentoProduct> {
    product::product(product)
}
