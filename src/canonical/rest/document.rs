//! Invoices, credit memos and payments from `GET /V1/invoices/{id}`, `GET /V1/creditmemo/{id}`
//! and `GET /V1/orders/{id}` (magento.md 3.1-3.8; byte8-spec.md 3.1, 3.5, 3.6).

use rust_decimal::Decimal;
use serde_json::Value;

use super::{contact, json::Node, lines};
use crate::{
    canonical::{
        InvoiceState, MagentoCreditMemo, MagentoInvoice, MagentoInvoiceLine, MagentoPayment, Tenders,
        totals::{self, HeaderTotals},
    },
    error::{Error, FieldError, Result},
    money::{Currency, parse_currency},
};

const INVOICE: &str = "Magento REST invoice";
const CREDIT_MEMO: &str = "Magento REST credit memo";
const PAYMENT: &str = "Magento REST payment";

/// See [`super::invoice_from_rest`].
pub(super) fn invoice(invoice: &Value, order: &Value) -> Result<MagentoInvoice> {
    let inv = Node::root(invoice, "invoice", INVOICE)?;
    let ord = Node::root(order, "order", INVOICE)?;
    let order_id = order_link(&inv, &ord)?;
    let payment = ord.object("payment")?;
    let lines = lines::lines(&inv, &ord)?;
    let header = [
        inv.amount("subtotal")?,
        inv.amount("tax_amount")?,
        inv.amount("shipping_amount")?,
        inv.amount("shipping_tax_amount")?,
        inv.amount("discount_amount")?,
        inv.req_decimal("grand_total")?,
    ];
    let [subtotal, tax_amount, shipping_amount, shipping_tax_amount, discount_amount, grand_total] = header;
    let tenders = tenders(&inv)?;
    ensure_checkable(INVOICE, &lines, &header, shipping_amount, shipping_tax_amount)?;
    let out = MagentoInvoice {
        magento_id: inv.req_id("entity_id")?,
        increment_id: inv.req_text("increment_id")?,
        order_id,
        order_increment_id: ord.req_text("increment_id")?,
        // Orders carry no website (magento.md section 1); the caller maps the store.
        website_id: 0,
        store_id: match inv.small_id("store_id")? {
            Some(id) => id,
            None => ord.small_id("store_id")?.unwrap_or(0),
        },
        currency: currency(&inv, &ord)?,
        // magento.md 3.1: 1 open, 2 paid, 3 canceled; anything else is open (byte8-spec.md 3.1).
        state: match inv.id("state")? {
            Some(2) => InvoiceState::Paid,
            Some(3) => InvoiceState::Cancelled,
            _ => InvoiceState::Open,
        },
        customer: contact::buyer(&ord)?,
        lines,
        subtotal,
        tax_amount,
        shipping_amount,
        shipping_tax_amount,
        discount_amount,
        grand_total,
        created_at: inv.req_timestamp("created_at")?,
        payment_method: match &payment {
            Some(p) => p.text("method")?,
            None => None,
        },
        billing_address: match ord.object("billing_address")? {
            Some(b) => Some(contact::order_address(&b, crate::canonical::AddressKind::Billing)?),
            None => None,
        },
        shipping_address: match contact::shipping_address_node(&ord)? {
            Some(s) => Some(contact::order_address(&s, crate::canonical::AddressKind::Shipping)?),
            None => None,
        },
        po_number: match &payment {
            Some(p) => p.text("po_number")?,
            None => None,
        },
        base_to_order_rate: inv.decimal("base_to_order_rate")?,
        tenders,
        base_currency: base_currency(&inv, &ord)?,
    };
    out.validate()?;
    Ok(out)
}

/// See [`super::credit_memo_from_rest`].
pub(super) fn credit_memo(creditmemo: &Value, order: &Value, invoice: Option<&Value>) -> Result<MagentoCreditMemo> {
    let cm = Node::root(creditmemo, "creditmemo", CREDIT_MEMO)?;
    let ord = Node::root(order, "order", CREDIT_MEMO)?;
    order_link(&cm, &ord)?;

    let invoice_id = cm.id("invoice_id")?.filter(|id| *id > 0);
    let (invoice_increment_id, invoice_created_at) = match (invoice_id, invoice) {
        (None, None) => (None, None),
        (Some(id), Some(inv)) => {
            let inv = Node::root(inv, "invoice", CREDIT_MEMO)?;
            let entity_id = inv.req_id("entity_id")?;
            if entity_id != id {
                return Err(cm.invalid("invoice_id", format!("{id} does not match invoice.entity_id ({entity_id})")));
            }
            (Some(inv.req_text("increment_id")?), inv.timestamp("created_at")?)
        }
        (Some(id), None) => {
            return Err(cm.invalid(
                "invoice_id",
                format!("is {id}, so the invoice (GET /V1/invoices/{id}) must be given for invoice_increment_id and invoice_created_at"),
            ));
        }
        (None, Some(_)) => {
            return Err(cm.invalid(
                "invoice_id",
                "is absent (an offline refund from the order), but an invoice was given; pass None",
            ));
        }
    };

    let lines = lines::lines(&cm, &ord)?;
    let subtotal = cm.amount("subtotal")?;
    let tax_amount = cm.amount("tax_amount")?;
    let discount_amount = cm.amount("discount_amount")?;
    let shipping_amount = cm.amount("shipping_amount")?;
    let shipping_tax_amount = cm.amount("shipping_tax_amount")?;
    let adjustment_positive = cm.amount("adjustment_positive")?;
    let adjustment_negative = cm.amount("adjustment_negative")?;
    let grand_total = cm.req_decimal("grand_total")?;
    let tenders = tenders(&cm)?;
    ensure_checkable(
        CREDIT_MEMO,
        &lines,
        &[
            subtotal,
            tax_amount,
            discount_amount,
            shipping_amount,
            shipping_tax_amount,
            adjustment_positive,
            adjustment_negative,
            grand_total,
        ],
        shipping_amount,
        shipping_tax_amount,
    )?;
    // The canonical credit memo has no subtotal, tax or discount header, so check the REST
    // header against the lines first (magento.md I-2): a misread dummy line shows here, where
    // the canonical check could mistake it for a shipping discount.
    let rest_header = HeaderTotals {
        subtotal: Some(subtotal),
        tax_amount: Some(tax_amount),
        discount_amount: Some(discount_amount),
        shipping_amount,
        shipping_tax_amount,
        adjustment_positive,
        adjustment_negative,
        grand_total: grand_total + tenders.total(),
    };
    if let Err(e) = totals::breakdown(&lines, &rest_header) {
        let errors =
            e.field_errors().iter().map(|f| FieldError::new(cm.path_of(&f.path), f.rule.clone())).collect::<Vec<_>>();
        return Err(if errors.is_empty() { e } else { Error::Invalid { what: CREDIT_MEMO, errors } });
    }

    let mut reason = None;
    for comment in cm.array("comments")? {
        if let Some(text) = comment.text("comment")? {
            reason = Some(text);
            break;
        }
    }

    let out = MagentoCreditMemo {
        magento_id: cm.req_id("entity_id")?,
        increment_id: cm.req_text("increment_id")?,
        invoice_id,
        invoice_increment_id,
        // Orders carry no website (magento.md section 1); the caller maps the store.
        website_id: 0,
        currency: currency(&cm, &ord)?,
        customer: contact::buyer(&ord)?,
        lines,
        adjustment_positive,
        adjustment_negative,
        grand_total,
        shipping_amount,
        shipping_tax_amount,
        reason,
        created_at: cm.req_timestamp("created_at")?,
        invoice_created_at,
        base_to_order_rate: cm.decimal("base_to_order_rate")?,
        tenders,
        base_currency: base_currency(&cm, &ord)?,
    };
    out.validate()?;
    Ok(out)
}

/// See [`super::payment_from_rest`].
pub(super) fn payment(invoice: &Value, order: &Value) -> Result<MagentoPayment> {
    let inv = Node::root(invoice, "invoice", PAYMENT)?;
    let ord = Node::root(order, "order", PAYMENT)?;
    let order_id = order_link(&inv, &ord)?;
    let invoice_id = inv.req_id("entity_id")?;
    let Some(payment) = ord.object("payment")? else {
        return Err(Error::NotFound {
            what: "Magento order payment".to_owned(),
            id: format!("order {order_id} of invoice {invoice_id} has no payment (order.payment)"),
        });
    };
    let gateway_metadata = match payment.get("additional_information") {
        Some(info) if info.value.is_array() || info.value.is_object() => info.value.clone(),
        _ => Value::Array(Vec::new()),
    };
    let out = MagentoPayment {
        magento_id: invoice_id,
        invoice_id,
        invoice_increment_id: inv.req_text("increment_id")?,
        method: payment.req_text("method")?,
        currency: currency(&inv, &ord)?,
        amount: inv.req_decimal("grand_total")?,
        captured_at: inv.req_timestamp("created_at")?,
        gateway_txn_id: match inv.text("transaction_id")? {
            Some(t) => Some(t),
            None => payment.text("last_trans_id")?,
        },
        gateway_metadata,
    };
    out.validate()?;
    Ok(out)
}

/// The order's `entity_id`, checked against the document's `order_id` when it has one.
fn order_link(doc: &Node<'_>, order: &Node<'_>) -> Result<u64> {
    let order_id = order.req_id("entity_id")?;
    match doc.id("order_id")? {
        Some(id) if id != order_id => {
            Err(doc.invalid("order_id", format!("{id} does not match order.entity_id ({order_id})")))
        }
        _ => Ok(order_id),
    }
}

/// The document currency: its `order_currency_code`, else its `base_currency_code`, else the
/// order's `order_currency_code` (byte8-spec.md 3.1; magento.md section 2).
fn currency(doc: &Node<'_>, order: &Node<'_>) -> Result<Currency> {
    for (node, key) in [(doc, "order_currency_code"), (doc, "base_currency_code"), (order, "order_currency_code")] {
        if let Some(code) = node.text(key)? {
            return parse_currency(&code).map_err(|e| node.parse_error(key, e));
        }
    }
    Err(doc.parse_error(
        "order_currency_code",
        "is required (base_currency_code and order.order_currency_code are missing too)",
    ))
}

/// Magento's base currency: the document's `base_currency_code`, else the order's; `None` when
/// neither is sent.
fn base_currency(doc: &Node<'_>, order: &Node<'_>) -> Result<Option<Currency>> {
    for (node, key) in [(doc, "base_currency_code"), (order, "base_currency_code")] {
        if let Some(code) = node.text(key)? {
            return parse_currency(&code).map(Some).map_err(|e| node.parse_error(key, e));
        }
    }
    Ok(None)
}

/// Refuses amounts whose products or quotients would leave `Decimal`'s range in the identity
/// checks of [`totals`] (`qty × unit_price`, `discount × tax / subtotal` and the residual
/// apportioned by those weights), so that no input can make the checks panic.
/// The Adobe Commerce tenders of a document, from its `extension_attributes` (magento.md 3.1,
/// 3.3, 5.8): `gift_cards_amount`, `customer_balance_amount`, `reward_currency_amount`, each read
/// as a magnitude (zero when absent, as on Magento Open Source).
fn tenders(doc: &Node<'_>) -> Result<Tenders> {
    let Some(ext) = doc.object("extension_attributes")? else {
        return Ok(Tenders::default());
    };
    Ok(Tenders {
        gift_cards_amount: ext.amount("gift_cards_amount")?.abs(),
        customer_balance_amount: ext.amount("customer_balance_amount")?.abs(),
        reward_currency_amount: ext.amount("reward_currency_amount")?.abs(),
    })
}

fn ensure_checkable(
    what: &'static str,
    lines: &[MagentoInvoiceLine],
    header: &[Decimal],
    shipping: Decimal,
    shipping_tax: Decimal,
) -> Result<()> {
    let too_large = |path: &str| Error::invalid(what, path, "the amounts are too large or too small to check exactly");
    let mut bound = Decimal::ZERO;
    for v in header {
        bound = bound.checked_add(v.abs()).ok_or_else(|| too_large("grand_total"))?;
    }
    let mut max_weight = Decimal::ZERO;
    let mut discounts = Decimal::ZERO;
    for (i, l) in lines.iter().enumerate() {
        let path = format!("lines[{i}]");
        l.qty.checked_mul(l.unit_price).ok_or_else(|| too_large(&path))?;
        let discount = l.line_subtotal + l.line_tax - l.line_total;
        discounts = discounts.checked_add(discount.abs()).ok_or_else(|| too_large(&path))?;
        for v in [l.line_subtotal, l.line_tax, l.line_total, discount] {
            bound = bound.checked_add(v.abs()).ok_or_else(|| too_large(&path))?;
        }
        if l.line_subtotal > Decimal::ZERO && l.line_tax > Decimal::ZERO {
            let weight = discount
                .abs()
                .checked_mul(l.line_tax)
                .and_then(|p| p.checked_div(l.line_subtotal))
                .ok_or_else(|| too_large(&path))?;
            max_weight = max_weight.max(weight);
        }
    }
    // The shipping's weight: its discount (at most `shipping`) × its tax / `shipping`.
    if shipping > Decimal::ZERO && shipping_tax > Decimal::ZERO {
        shipping.checked_mul(shipping_tax).ok_or_else(|| too_large("shipping_tax_amount"))?;
        max_weight = max_weight.max(shipping_tax);
    }
    let bound = bound.checked_add(discounts).ok_or_else(|| too_large("grand_total"))?;
    bound.checked_mul(max_weight).ok_or_else(|| too_large("grand_total"))?;
    Ok(())
}
