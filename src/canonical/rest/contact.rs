//! Contacts and addresses from `GET /V1/customers/{id}` and from an order (magento.md 3.7, 3.9,
//! 5.12, 5.13; byte8-spec.md 3.3, 3.4).

use serde_json::Value;

use super::json::Node;
use crate::{
    canonical::{Address, AddressKind, Check, MagentoContact},
    error::Result,
};

/// `what` of the errors of [`super::contact_from_rest`].
const CUSTOMER: &str = "Magento REST customer";
/// `what` of the errors of [`super::contact_from_order`].
const ORDER: &str = "Magento REST order";

/// Builds the contact of `GET /V1/customers/{id}` (see [`super::contact_from_rest`]).
pub(super) fn contact_from_customer(customer: &Value) -> Result<MagentoContact> {
    let c = Node::root(customer, "customer", CUSTOMER)?;
    let default_billing = c.id("default_billing")?;
    let default_shipping = c.id("default_shipping")?;

    let mut addresses = Vec::new();
    let mut billing_phone: Option<Option<String>> = None;
    let mut any_phone = None;
    for a in c.array("addresses")? {
        let id = a.id("id")?;
        let is_billing = a.flag("default_billing")?.unwrap_or(false) || (id.is_some() && id == default_billing);
        let is_shipping = a.flag("default_shipping")?.unwrap_or(false) || (id.is_some() && id == default_shipping);
        let phone = a.text("telephone")?;
        if any_phone.is_none() {
            any_phone.clone_from(&phone);
        }
        if is_billing {
            addresses.push(customer_address(&a, AddressKind::Billing)?);
            if billing_phone.is_none() {
                billing_phone = Some(phone.clone());
            }
        }
        if is_shipping {
            addresses.push(customer_address(&a, AddressKind::Shipping)?);
        }
    }

    let contact = MagentoContact {
        magento_id: c.req_id("id")?,
        email: c.req_text("email")?,
        first_name: c.text("firstname")?,
        last_name: c.text("lastname")?,
        // The module takes the company only from an order (byte8-spec.md 3.3), never from the
        // profile; see `fill_contact_from_order`.
        company: None,
        // magento.md 5.11: the customer-level VAT number; an address's `vat_id` rides on the
        // address and comes first (`MagentoContact::vat_number`).
        vat_number: c.text("taxvat")?,
        // The default billing address's telephone, else the first non-empty one on any address.
        phone: billing_phone.unwrap_or(any_phone),
        website_id: c.small_id("website_id")?.unwrap_or(0),
        group_id: c.small_id("group_id")?,
        addresses,
        created_at: c.timestamp("created_at")?,
        updated_at: c.timestamp("updated_at")?,
    };
    checked(contact)
}

/// Builds the contact embedded in an invoice or credit memo of `order` (see
/// [`super::contact_from_order`]).
pub(super) fn contact_from_order(order: &Value) -> Result<MagentoContact> {
    let o = Node::root(order, "order", ORDER)?;
    checked(buyer(&o)?)
}

/// The buyer of the order at `o`, with the order's addresses (not validated).
pub(super) fn buyer(o: &Node<'_>) -> Result<MagentoContact> {
    let billing = o.object("billing_address")?;
    let customer_id = o.id("customer_id")?.filter(|id| *id > 0);
    let is_guest = o.flag("customer_is_guest")?.unwrap_or(false);
    // magento.md 5.12: the name and e-mail come from the order, else its billing address.
    let from_billing = |key: &str| -> Result<Option<String>> {
        match &billing {
            Some(b) => b.text(key),
            None => Ok(None),
        }
    };
    let email = match o.text("customer_email")? {
        Some(e) => e,
        None => from_billing("email")?.ok_or_else(|| {
            o.parse_error("customer_email", "is required (and order.billing_address.email is missing too)")
        })?,
    };
    let first_name = match o.text("customer_firstname")? {
        Some(n) => Some(n),
        None => from_billing("firstname")?,
    };
    let last_name = match o.text("customer_lastname")? {
        Some(n) => Some(n),
        None => from_billing("lastname")?,
    };

    let mut contact = match customer_id {
        Some(id) if !is_guest => MagentoContact {
            magento_id: id,
            email,
            first_name,
            last_name,
            company: None,
            // The order's copy of the customer's `taxvat` (magento.md 5.11).
            vat_number: o.text("customer_taxvat")?,
            phone: None,
            // Orders do not carry the customer's website (magento.md section 1).
            website_id: 0,
            group_id: o.small_id("customer_group_id")?,
            addresses: Vec::new(),
            created_at: None,
            updated_at: None,
        },
        // The synthetic guest contact of byte8-spec.md 3.3.
        _ => MagentoContact {
            magento_id: 0,
            email,
            first_name,
            last_name,
            company: None,
            vat_number: o.text("customer_taxvat")?,
            phone: None,
            website_id: 0,
            group_id: None,
            addresses: Vec::new(),
            created_at: o.timestamp("created_at")?,
            updated_at: o.timestamp("updated_at")?,
        },
    };
    fill_from_order(&mut contact, o)?;
    Ok(contact)
}

/// Adds the order's billing address when the contact has none, and its shipping address when the
/// contact has none and it is a different address row from the billing one; when it added an
/// address, fills a missing company and phone from the billing address. Never overwrites.
pub(super) fn fill_from_order(contact: &mut MagentoContact, o: &Node<'_>) -> Result<()> {
    let has = |kind| contact.addresses.iter().any(|a| a.kind == kind);
    let (has_billing, has_shipping) = (has(AddressKind::Billing), has(AddressKind::Shipping));
    if has_billing && has_shipping {
        return Ok(());
    }
    let billing = o.object("billing_address")?;
    let shipping = shipping_address_node(o)?;
    let mut added = false;
    if let (false, Some(b)) = (has_billing, &billing) {
        contact.addresses.push(order_address(b, AddressKind::Billing)?);
        added = true;
    }
    if let (false, Some(s)) = (has_shipping, &shipping) {
        let same_row = match &billing {
            Some(b) => matches!((b.id("entity_id")?, s.id("entity_id")?), (Some(x), Some(y)) if x == y),
            None => false,
        };
        if !same_row {
            contact.addresses.push(order_address(s, AddressKind::Shipping)?);
            added = true;
        }
    }
    if let (true, Some(b)) = (added, &billing) {
        if contact.company.is_none() {
            contact.company = b.text("company")?;
        }
        if contact.phone.is_none() {
            contact.phone = b.text("telephone")?;
        }
    }
    Ok(())
}

/// The order's shipping address: `extension_attributes.shipping_assignments[0].shipping.address`
/// (magento.md 3.5; absent for virtual orders, 5.13).
pub(super) fn shipping_address_node<'a>(o: &Node<'a>) -> Result<Option<Node<'a>>> {
    let Some(ext) = o.object("extension_attributes")? else { return Ok(None) };
    let Some(first) = ext.array("shipping_assignments")?.into_iter().next() else { return Ok(None) };
    let Some(shipping) = first.object("shipping")? else { return Ok(None) };
    shipping.object("address")
}

/// An order address (`OrderAddressInterface`, magento.md 3.7): `region` is a name string.
pub(super) fn order_address(a: &Node<'_>, kind: AddressKind) -> Result<Address> {
    let region = match a.get("region") {
        // Tolerate the customer-address object shape here too.
        Some(r) if r.value.is_object() => r.text("region")?,
        _ => a.text("region")?,
    };
    address(a, kind, region)
}

/// A customer address (`Customer\Api\Data\AddressInterface`, magento.md 3.9): `region` is an
/// object `{region_code, region, region_id}`; its `region` (the name) is taken.
fn customer_address(a: &Node<'_>, kind: AddressKind) -> Result<Address> {
    let region = match a.get("region") {
        Some(r) if r.value.is_object() => r.text("region")?,
        _ => a.text("region")?,
    };
    address(a, kind, region)
}

fn address(a: &Node<'_>, kind: AddressKind, region: Option<String>) -> Result<Address> {
    let street = match a.get("street") {
        None => Vec::new(),
        Some(Node { value: Value::String(s), .. }) => s.lines().map(str::to_owned).collect(),
        Some(_) => {
            let mut lines = Vec::new();
            for line in a.array("street")? {
                match line.value {
                    Value::String(s) => lines.push(s.clone()),
                    Value::Number(n) => lines.push(n.to_string()),
                    Value::Null => {}
                    _ => return Err(line.parse_error("", "must be a string")),
                }
            }
            lines
        }
    };
    Ok(Address {
        kind,
        // Empty lines removed (byte8-spec.md 3.4).
        street: street.into_iter().filter(|s| !s.is_empty()).collect(),
        city: a.string("city")?.unwrap_or_default(),
        region,
        postcode: a.text("postcode")?,
        country_id: a.req_text("country_id")?,
        telephone: a.text("telephone")?,
        // The VAT number entered on this address (magento.md 3.7, 3.9, 5.11).
        vat_id: a.text("vat_id")?,
    })
}

/// Runs the contact's own checks.
fn checked(contact: MagentoContact) -> Result<MagentoContact> {
    Check::run("contact", |c| contact.check(c))?;
    Ok(contact)
}
