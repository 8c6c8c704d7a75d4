//! Prints the exact Sage v3.1 request for a sample Magento invoice, with no ledger and no
//! network: parse the event, validate it, plan it (tax routing, reconciliation) and transform it.
//!
//! Run: `cargo run --example print_sage_request` (or pass a file holding one event as JSON).

use byte8_ledger_core::{
    canonical::{Entity, Event},
    policy::SyncPolicy,
    providers::sage::transform::{self, DocumentLinks},
    reference::ReferenceData,
};

/// A tax-inclusive UK store: 3 tees at £10.00 incl. 20 % VAT (net 8.33 each, row 25.00, VAT
/// 5.00), a £4.99 untaxed delivery, and a "Quest Lumaflex&trade; Band" with its HTML entity.
const SAMPLE: &str = r#"{"event":"invoice.created","idempotency_key":"invoice.created:1001","magento_entity_id":1001,
 "website_id":1,"store_id":1,"occurred_at":"2026-11-22T10:00:00Z","payload":{"increment_id":"000000123","paid":false},
 "entity":{"magento_id":1001,"increment_id":"000000123","order_id":77,"order_increment_id":"000000077",
  "website_id":1,"store_id":1,"currency":"GBP","state":"open",
  "customer":{"magento_id":5,"email":"jane@example.com","first_name":"Jane","last_name":"Doe","company":"Doe Studio",
              "website_id":1,"addresses":[]},
  "lines":[
   {"sku":"MS-Champ-S","name":"Champ Tee Small","qty":3,"unit_price":8.33,"line_subtotal":25.00,"line_tax":5.00,
    "line_total":30.00,"tax_rate":0.2,"product_type":"simple"},
   {"sku":"24-UG01","name":"Quest Lumaflex&trade; Band","qty":1,"unit_price":16.67,"line_subtotal":16.67,
    "line_tax":3.33,"line_total":20.00,"tax_rate":0.1998,"product_type":"simple"}],
  "subtotal":41.67,"tax_amount":8.33,"shipping_amount":4.99,"shipping_tax_amount":0,"discount_amount":0,
  "grand_total":54.99,"created_at":"2026-11-22T09:59:00Z","payment_method":"checkmo",
  "billing_address":{"kind":"billing","street":["1 High Street"],"city":"London","postcode":"SW1A 1AA","country_id":"GB"},
  "shipping_address":{"kind":"shipping","street":["2 Market Place"],"city":"Leeds","postcode":"LS1 6AA","country_id":"GB"},
  "po_number":"PO-4471","base_to_order_rate":1.0}}"#;

const POLICY: &str = r#"{"default_ledger_account_id":"SALES","default_tax_rate_id":"GB_STANDARD",
  "tax_rate_map":{"20":"GB_STANDARD","5":"GB_LOWER"},"invoice_number_prefix":"MAG-"}"#;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let text = match std::env::args().nth(1) {
        Some(path) => std::fs::read_to_string(path)?,
        None => SAMPLE.to_owned(),
    };
    let event = Event::parse(&text)?;
    let Some(Entity::Invoice(invoice)) = &event.entity else {
        return Err("the event must be an invoice.created carrying its entity".into());
    };
    let policy = SyncPolicy::from_json(POLICY)?;
    // The reference data of a demo UK business; a real host fetches it from Sage.
    let reference =
        ReferenceData::demo_uk(byte8_ledger_core::clock::Clock::now(&byte8_ledger_core::clock::SystemClock));
    policy.validate_against(&reference)?;
    let items = Default::default();
    let links =
        DocumentLinks { contact_id: "<contact id>", items: &items, idempotency_key: Some(&event.idempotency_key) };
    let t = transform::sales_invoice(invoice, &policy, &reference, &links)?;
    println!("POST /sales_invoices");
    println!("{}", serde_json::to_string_pretty(&t.request)?);
    let total = transform::expected_total(&t.request.sales_invoice, &reference.tax_rates)?;
    println!("\nSage will total {total} (Magento grand_total {})", invoice.grand_total);
    for note in t.notes {
        println!("note: {note}");
    }
    Ok(())
}
