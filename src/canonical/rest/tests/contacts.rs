//! `contact_from_rest`, `contact_from_order` and `fill_contact_from_order`.

use super::{address, fixture, json, paths, remove, set, utc};
use crate::{
    canonical::{
        AddressKind, MagentoContact,
        rest::{contact_from_order, contact_from_rest, fill_contact_from_order},
    },
    error::ErrorCode,
};

#[test]
fn tutorial_customer_has_its_default_address_twice() {
    // Address 2 is both default_billing and default_shipping → once per kind; the customer
    // address region is an object whose `region` name is taken.
    let c = contact_from_rest(&fixture!("customer.orders-tutorial.json")).unwrap();
    let addr =
        |kind| address(kind, &["123 Oak Ave"], "Purchase", Some("New York"), Some("10755"), "US", Some("512-555-1111"));
    assert_eq!(
        c,
        MagentoContact {
            magento_id: 2,
            email: "jdoe@example.com".into(),
            first_name: Some("Jane".into()),
            last_name: Some("Doe".into()),
            company: None,
            vat_number: None,
            phone: Some("512-555-1111".into()),
            website_id: 1,
            group_id: Some(1),
            addresses: vec![addr(AddressKind::Billing), addr(AddressKind::Shipping)],
            created_at: Some(utc(2017, 1, 31, 1, 18, 13)),
            updated_at: Some(utc(2017, 1, 31, 1, 18, 13)),
        }
    );
}

#[test]
fn one_address_per_default_flag_and_the_phone_rule() {
    // Address 5: default billing without a telephone; 6: default shipping; 7: neither.
    // The phone is the default billing address's, even when that is empty (module rule), so null.
    let customer = json(
        r#"{
            "id": 40, "email": "ops@example.com", "firstname": "Ops", "lastname": "Team",
            "website_id": 2, "group_id": 3, "default_billing": "5", "default_shipping": "6",
            "addresses": [
                {"id": 7, "country_id": "FR", "street": ["3 rue X"], "city": "Lyon", "telephone": "+33 4 00 00 00 00",
                 "region": {"region_code": null, "region": null, "region_id": 0}},
                {"id": 5, "country_id": "DE", "street": ["Hauptstr. 1", ""], "city": "Köln", "postcode": "50667",
                 "region": {"region_code": "NRW", "region": "Nordrhein-Westfalen", "region_id": 88}},
                {"id": 6, "country_id": "DE", "street": ["Lager 2"], "city": "Bonn", "telephone": "+49 228 0000"}
            ]
        }"#,
    );
    let c = contact_from_rest(&customer).unwrap();
    assert_eq!(
        c.addresses,
        vec![
            address(
                AddressKind::Billing,
                &["Hauptstr. 1"],
                "Köln",
                Some("Nordrhein-Westfalen"),
                Some("50667"),
                "DE",
                None
            ),
            address(AddressKind::Shipping, &["Lager 2"], "Bonn", None, None, "DE", Some("+49 228 0000")),
        ]
    );
    assert_eq!(c.phone, None);
    assert_eq!((c.website_id, c.group_id), (2, Some(3)));

    // Without a default billing address, the first non-empty telephone of any address.
    let mut customer = customer;
    remove(&mut customer, "/default_billing");
    let c = contact_from_rest(&customer).unwrap();
    assert_eq!(c.phone.as_deref(), Some("+33 4 00 00 00 00"));
    assert_eq!(c.addresses.len(), 1);

    // The addresses' own boolean flags count too (the REST customer carries both).
    set(&mut customer, "/addresses/0/default_billing", json("true"));
    let c = contact_from_rest(&customer).unwrap();
    assert_eq!(c.addresses[0].kind, AddressKind::Billing);
    assert_eq!(c.addresses[0].city, "Lyon");
}

#[test]
fn a_customer_without_addresses_is_filled_from_an_order() {
    // magento.md 5.13: `addresses: []` is normal. The contact has none; filling from an order
    // adds its billing and (different row) shipping addresses, company and phone.
    let mut c = contact_from_rest(&json(
        r#"{"id": 7, "email": "sam@example.co.uk", "firstname": "Sam", "lastname": "Taylor",
            "website_id": 1, "group_id": 1, "addresses": []}"#,
    ))
    .unwrap();
    assert!(c.addresses.is_empty());
    fill_contact_from_order(&mut c, &fixture!("order.configurable.json")).unwrap();
    let kinds: Vec<_> = c.addresses.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [AddressKind::Billing, AddressKind::Shipping]);
    assert_eq!(c.addresses[1].city, "Liverpool");
    assert_eq!(c.company.as_deref(), Some("Taylor Design Ltd"));
    assert_eq!(c.phone.as_deref(), Some("020 7946 0000"));
    assert_eq!(c.website_id, 1, "the profile's fields stay");
}

#[test]
fn filling_only_adds_and_never_overwrites() {
    // A contact with a billing address and a phone: only the missing shipping address is added,
    // and the phone is kept.
    let mut c = contact_from_rest(&fixture!("customer.orders-tutorial.json")).unwrap();
    c.addresses.retain(|a| a.kind == AddressKind::Billing);
    fill_contact_from_order(&mut c, &fixture!("order.configurable.json")).unwrap();
    assert_eq!(c.addresses.len(), 2);
    assert_eq!(c.addresses[0].city, "Purchase");
    assert_eq!((c.addresses[1].kind, c.addresses[1].city.as_str()), (AddressKind::Shipping, "Liverpool"));
    assert_eq!(c.phone.as_deref(), Some("512-555-1111"));
    assert_eq!(c.company.as_deref(), Some("Taylor Design Ltd"), "a missing company is filled");

    // Both kinds present: nothing changes at all.
    let before = contact_from_rest(&fixture!("customer.orders-tutorial.json")).unwrap();
    let mut after = before.clone();
    fill_contact_from_order(&mut after, &fixture!("order.configurable.json")).unwrap();
    assert_eq!(after, before);

    // A malformed order address leaves the contact as it was.
    let mut order = fixture!("order.configurable.json");
    remove(&mut order, "/billing_address/country_id");
    let mut c = contact_from_rest(&json(r#"{"id": 7, "email": "sam@example.co.uk"}"#)).unwrap();
    let e = fill_contact_from_order(&mut c, &order).unwrap_err();
    assert_eq!(paths(&e), ["order.billing_address.country_id"]);
    assert!(c.addresses.is_empty());
}

#[test]
fn registered_buyer_from_the_order() {
    let c = contact_from_order(&fixture!("order.configurable.json")).unwrap();
    assert_eq!(c.magento_id, 7);
    assert_eq!(c.email, "sam@example.co.uk");
    assert_eq!(c.group_id, Some(1));
    assert_eq!(c.website_id, 0);
    assert_eq!(c.company.as_deref(), Some("Taylor Design Ltd"));
    assert_eq!(c.phone.as_deref(), Some("020 7946 0000"));
    assert_eq!(c.created_at, None, "the customer's own dates are not in the order");
    assert_eq!(c.addresses.len(), 2);
}

#[test]
fn guest_flag_wins_over_a_customer_id_and_names_fall_back_to_billing() {
    // customer_is_guest 1 with a customer_id (an extension relinked it, magento.md 5.12): guest.
    // Missing customer_email / customer_firstname / customer_lastname come from the billing
    // address.
    let mut order = fixture!("order.guest.json");
    set(&mut order, "/customer_id", json("33"));
    remove(&mut order, "/customer_email");
    remove(&mut order, "/customer_firstname");
    set(&mut order, "/customer_lastname", json(r#""""#));
    let c = contact_from_order(&order).unwrap();
    assert_eq!(c.magento_id, 0);
    assert_eq!(c.email, "ann.guest@example.ie");
    assert_eq!(c.first_name.as_deref(), Some("Ann"));
    assert_eq!(c.last_name.as_deref(), Some("Byrne"));

    // No e-mail anywhere: the error names the order field.
    remove(&mut order, "/billing_address/email");
    let e = contact_from_order(&order).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Serde);
    assert_eq!(paths(&e), ["order.customer_email"]);
}

#[test]
fn a_shipping_address_on_the_billing_row_is_not_repeated() {
    // byte8-spec.md 3.4: the shipping address is emitted separately only when it is a different
    // address row from billing.
    let mut order = fixture!("order.guest.json");
    set(&mut order, "/extension_attributes/shipping_assignments/0/shipping/address/entity_id", json("251"));
    let c = contact_from_order(&order).unwrap();
    let kinds: Vec<_> = c.addresses.iter().map(|a| a.kind).collect();
    assert_eq!(kinds, [AddressKind::Billing]);
}

#[test]
fn contact_errors_name_the_rest_field() {
    let e = contact_from_rest(&json(
        r#"{"id": 1, "email": "x@example.com", "addresses": [{"id": 1, "city": "A"}], "default_billing": "1"}"#,
    ))
    .unwrap_err();
    assert_eq!(paths(&e), ["customer.addresses[0].country_id"]);
    let e = contact_from_rest(&json(r#"{"id": 1}"#)).unwrap_err();
    assert_eq!(paths(&e), ["customer.email"]);
    // A malformed e-mail is the contact's own check.
    let e = contact_from_rest(&json(r#"{"id": 1, "email": "not-an-email"}"#)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::Validation);
    assert_eq!(paths(&e), ["email"]);
    let e = contact_from_rest(&json(r#"[1, 2]"#)).unwrap_err();
    assert_eq!(paths(&e), ["customer"]);
}

/// magento.md 5.11: the VAT number is the billing address's `vat_id`, else the customer's
/// `taxvat` (`customer_taxvat` on an order); both read through the adapter and normalised.
#[test]
fn vat_numbers_come_from_the_billing_vat_id_else_taxvat() {
    // The customer record: `taxvat` on the customer, `vat_id` on its default address.
    let mut customer = fixture!("customer.orders-tutorial.json");
    set(&mut customer, "/taxvat", json(r#""de 123 456 789""#));
    let c = contact_from_rest(&customer).unwrap();
    assert_eq!(c.vat_number.as_deref(), Some("de 123 456 789"), "kept as Magento has it");
    assert_eq!(c.vat_number().as_deref(), Some("DE123456789"), "normalised where used");
    set(&mut customer, "/addresses/0/vat_id", json(r#""FR12345678901""#));
    let c = contact_from_rest(&customer).unwrap();
    assert!(c.addresses.iter().all(|a| a.vat_id.as_deref() == Some("FR12345678901")), "{:?}", c.addresses);
    assert_eq!(c.vat_number().as_deref(), Some("FR12345678901"), "the address's vat_id comes first");

    // The order buyer: billing `vat_id`, else `customer_taxvat`; empty strings are no number.
    let mut order = fixture!("order.guest.json");
    set(&mut order, "/billing_address/vat_id", json(r#""""#));
    assert_eq!(contact_from_order(&order).unwrap().vat_number(), None);
    set(&mut order, "/customer_taxvat", json(r#""IE1234567WA""#));
    assert_eq!(contact_from_order(&order).unwrap().vat_number().as_deref(), Some("IE1234567WA"));
    set(&mut order, "/billing_address/vat_id", json(r#""ie 9876543 xa""#));
    assert_eq!(contact_from_order(&order).unwrap().vat_number().as_deref(), Some("IE9876543XA"));
}

#[test]
fn a_malformed_vat_number_is_a_field_error_not_sent_on() {
    let mut customer = fixture!("customer.orders-tutorial.json");
    set(&mut customer, "/taxvat", json(r#""not-a-number""#));
    let err = contact_from_rest(&customer).unwrap_err();
    assert_eq!(err.code(), ErrorCode::Validation, "{err}");
    assert!(paths(&err).contains(&"vat_number".to_owned()), "{err}");
    assert!(err.to_string().contains("must be a VAT number"), "{err}");

    let mut order = fixture!("order.guest.json");
    set(&mut order, "/billing_address/vat_id", json(r#""XX12345678""#));
    let err = contact_from_order(&order).unwrap_err();
    assert!(paths(&err).contains(&"addresses[0].vat_id".to_owned()), "{err}");
}
