//! Reconciliation: what Magento sent against what the ledger holds, for a period.
//!
//! This is what an accountant runs before filing a VAT return. For the period `from..=to`
//! (document dates, both included) it compares
//!
//! - **the Magento side**: every run of the business that **synced** an `invoice.created`,
//!   `creditmemo.created` or `invoice.paid` event, with the Magento totals its stored event line
//!   carries, and the ledger reference it was posted under (from the cross-reference; the
//!   Magento increment id when the cross-reference holds none), with
//! - **the ledger side**: every sales invoice, sales credit note and customer receipt the ledger
//!   lists for the same dates ([`AccountingProvider::list_entries`]: Sage reads
//!   `GET /sales_invoices`, `/sales_credit_notes`, `/contact_payments` with `from_date` /
//!   `to_date`; Xero `GET /Invoices`, `/CreditNotes`, `/Payments` with a `where` clause on type
//!   and date; both paged within the rate limit).
//!
//! and reports ([`Finding`]):
//!
//! | finding | meaning |
//! |---|---|
//! | `missing_in_ledger` | a synced Magento record whose reference the ledger does not hold (or holds only voided) in the period |
//! | `outside_period` | a synced Magento document missing from the period that the ledger holds under another date, or voided ([`reconcile`] looks each missing document up by reference) |
//! | `duplicate_in_ledger` | the ledger holds the reference more than once (not voided) |
//! | `amount_differs` | net, VAT or gross differ between Magento and the ledger (exact, to the penny) |
//! | `currency_differs` | the ledger's currency is not Magento's |
//! | `unallocated_payment` | a receipt in the ledger with money allocated to no invoice |
//! | `not_from_run` | a ledger record in the period whose reference no synced run posted |
//! | `unreadable_run` | a synced run whose stored event gives no Magento totals |
//!
//! and, per currency, the count and sums of net, VAT and gross of invoices and credit notes (and
//! the sum of receipts) on both sides ([`CurrencyTotals`]). Voided ledger documents are neither
//! matched nor summed. A [`Report`] is clean when it has no finding; the
//! `byte8-ledger reconcile` command prints it as a table (or `--json`) and exits 1 when it is
//! not.
//!
//! # Choices
//!
//! - Magento's VAT is the invoice's `tax_amount`; a credit memo's is the sum of its lines'
//!   `line_tax` and its `shipping_tax_amount` (the canonical credit memo has no tax total).
//!   Net is gross less VAT on the Magento side; the ledger's net and VAT are its own
//!   (`net_amount`, `tax_amount`). A receipt has only a gross amount.
//! - Dates: Magento's `created_at` (a payment's `captured_at`) as a UTC date, the date the sync
//!   posts with; a ledger record dated outside the period is not listed, so a record posted on
//!   another date shows as missing on one side and unexplained on the other.
//! - Matching is by (kind, reference): what the sync posts and looks records up by.
//! - A run whose event carried no entity (a host that fetched it from Magento) keeps no Magento
//!   totals: [`reconcile_with_source`] fetches it again from Magento through the same
//!   [`EntitySource`] the engine used; without one (or when the fetch fails) it is reported as
//!   `unreadable_run` rather than guessed.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::{
    canonical::{Entity, Event, EventKind},
    engine::EntitySource,
    error::{Error, Result},
    money::format_money,
    plan::DocumentKind,
    providers::{AccountingProvider, EntryKind, LedgerEntry},
    store::{RunStatus, RunStore, XrefKind, XrefStore},
};

/// The dates to reconcile, both included.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Period {
    /// First day.
    pub from: NaiveDate,
    /// Last day.
    pub to: NaiveDate,
}

impl Period {
    /// A period; `from` must not be after `to`.
    ///
    /// # Errors
    /// [`Error::Config`] naming `from` when it is after `to`.
    pub fn new(from: NaiveDate, to: NaiveDate) -> Result<Self> {
        if from > to {
            return Err(Error::config("from", format!("{from} is after the period's end {to}")));
        }
        Ok(Self { from, to })
    }

    /// Whether `date` falls in the period.
    pub fn contains(&self, date: NaiveDate) -> bool {
        self.from <= date && date <= self.to
    }
}

/// One record Magento sent and the sync posted, with Magento's amounts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MagentoRecord {
    /// Invoice, credit memo (credit note) or payment.
    pub kind: EntryKind,
    /// The Magento entity id (a payment's: its invoice's id, as the event keys it).
    pub magento_id: u64,
    /// The Magento increment id (a payment's: its invoice's).
    pub increment_id: String,
    /// The reference the ledger record carries.
    pub reference: String,
    /// The document date (a payment's capture date).
    pub date: NaiveDate,
    /// ISO 4217 currency.
    pub currency: String,
    /// Net (documents).
    pub net: Option<Decimal>,
    /// VAT (documents).
    pub vat: Option<Decimal>,
    /// The total with tax, in the document's currency.
    pub gross: Decimal,
}

/// Which amount differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Amount {
    /// Compare totals before tax.
    Net,
    /// VAT.
    Vat,
    /// Compare totals with tax.
    Gross,
}

impl Amount {
    fn as_str(self) -> &'static str {
        match self {
            Self::Net => "net",
            Self::Vat => "VAT",
            Self::Gross => "gross",
        }
    }
}

/// One difference between Magento and the ledger (see the [module docs](self)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum Finding {
    /// A synced Magento record the ledger does not hold in the period (or holds only voided).
    MissingInLedger {
        /// Whether the entry is an invoice or a credit note.
        kind: EntryKind,
        /// The reference looked for.
        reference: String,
        /// The Magento entity id.
        magento_id: u64,
        /// Magento's gross amount.
        gross: Decimal,
    },
    /// A synced Magento document missing from the period's listing that the ledger holds
    /// under another date (or voided): found by reference.
    OutsidePeriod {
        /// Whether the entry is an invoice or a credit note.
        kind: EntryKind,
        /// The reference.
        reference: String,
        /// The Magento entity id.
        magento_id: u64,
        /// The ledger record.
        ledger_id: String,
        /// Whether it is voided in the ledger.
        voided: bool,
    },
    /// The ledger holds the reference more than once.
    DuplicateInLedger {
        /// Whether the entry is an invoice or a credit note.
        kind: EntryKind,
        /// The reference.
        reference: String,
        /// The ledger ids holding it.
        ledger_ids: Vec<String>,
    },
    /// An amount differs.
    AmountDiffers {
        /// Whether the entry is an invoice or a credit note.
        kind: EntryKind,
        /// The reference.
        reference: String,
        /// The ledger record.
        ledger_id: String,
        /// Which amount.
        amount: Amount,
        /// Magento's.
        magento: Decimal,
        /// The ledger's (`None`: the ledger does not say).
        ledger: Option<Decimal>,
    },
    /// The currencies differ.
    CurrencyDiffers {
        /// Whether the entry is an invoice or a credit note.
        kind: EntryKind,
        /// The reference.
        reference: String,
        /// The ledger record.
        ledger_id: String,
        /// Magento's.
        magento: String,
        /// The ledger's.
        ledger: String,
    },
    /// A receipt with money allocated to no invoice.
    UnallocatedPayment {
        /// Its reference.
        reference: Option<String>,
        /// The ledger record.
        ledger_id: String,
        /// What is unallocated.
        amount: Decimal,
    },
    /// A ledger record in the period that no synced run posted.
    NotFromRun {
        /// Whether the entry is an invoice or a credit note.
        kind: EntryKind,
        /// Its reference.
        reference: Option<String>,
        /// The ledger record.
        ledger_id: String,
        /// Its gross amount.
        gross: Decimal,
    },
    /// A synced run whose stored event gives no Magento totals.
    UnreadableRun {
        /// The run.
        run_id: i64,
        /// The event's idempotency key.
        idempotency_key: String,
        /// Why the entry could not be compared, for the operator.
        reason: String,
    },
}

/// Count and sums of a kind of document.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sums {
    /// How many.
    pub count: u64,
    /// The sum before tax.
    pub net: Decimal,
    /// VAT.
    pub vat: Decimal,
    /// The sum with tax.
    pub gross: Decimal,
}

impl Sums {
    fn add(&mut self, net: Option<Decimal>, vat: Option<Decimal>, gross: Decimal) {
        self.count += 1;
        self.net += net.unwrap_or_default();
        self.vat += vat.unwrap_or_default();
        self.gross += gross;
    }
}

/// One side's sums in a currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SideTotals {
    /// The sums of the invoices.
    pub invoices: Sums,
    /// Credit notes (positive amounts).
    pub credit_notes: Sums,
    /// Receipts (gross only).
    pub payments: Sums,
}

impl SideTotals {
    fn add(&mut self, kind: EntryKind, net: Option<Decimal>, vat: Option<Decimal>, gross: Decimal) {
        match kind {
            EntryKind::Invoice => self.invoices.add(net, vat, gross),
            EntryKind::CreditNote => self.credit_notes.add(net, vat, gross),
            EntryKind::Payment => self.payments.add(None, None, gross),
        }
    }
}

/// Both sides' sums in one currency.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CurrencyTotals {
    /// What Magento sent.
    pub magento: SideTotals,
    /// What the ledger holds.
    pub ledger: SideTotals,
}

/// The outcome of a reconciliation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// The period.
    pub period: Period,
    /// Every difference, Magento's records first in their order, then the ledger's leftovers.
    pub findings: Vec<Finding>,
    /// Per currency (ISO 4217; `unknown` for a ledger record that names none and matched no
    /// Magento record), both sides' sums.
    pub totals: BTreeMap<String, CurrencyTotals>,
}

impl Report {
    /// True when nothing differs.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The report as a human table.
    pub fn to_table(&self) -> String {
        let mut s = format!("Reconciliation {} to {}\n\n", self.period.from, self.period.to);
        s.push_str(&format!(
            "{:<8} {:<13} {:<8} {:>5} {:>14} {:>14} {:>14}\n",
            "currency", "kind", "side", "count", "net", "VAT", "gross"
        ));
        for (currency, t) in &self.totals {
            for (kind, m, l) in [
                ("invoices", t.magento.invoices, t.ledger.invoices),
                ("credit notes", t.magento.credit_notes, t.ledger.credit_notes),
                ("payments", t.magento.payments, t.ledger.payments),
            ] {
                for (side, sums) in [("magento", m), ("ledger", l)] {
                    let (net, vat) = if kind == "payments" {
                        ("-".to_owned(), "-".to_owned())
                    } else {
                        (format_money(sums.net), format_money(sums.vat))
                    };
                    s.push_str(&format!(
                        "{currency:<8} {kind:<13} {side:<8} {:>5} {net:>14} {vat:>14} {:>14}\n",
                        sums.count,
                        format_money(sums.gross)
                    ));
                }
            }
        }
        s.push('\n');
        if self.findings.is_empty() {
            s.push_str("No differences.\n");
            return s;
        }
        s.push_str(&format!("{} difference(s):\n", self.findings.len()));
        for f in &self.findings {
            s.push_str("  ");
            s.push_str(&describe(f));
            s.push('\n');
        }
        s
    }
}

fn describe(f: &Finding) -> String {
    match f {
        Finding::MissingInLedger { kind, reference, magento_id, gross } => format!(
            "missing in ledger: {} {reference} (Magento id {magento_id}, gross {})",
            kind.as_str(),
            format_money(*gross)
        ),
        Finding::OutsidePeriod { kind, reference, magento_id, ledger_id, voided } => format!(
            "{} in ledger outside the period: {} {reference} (Magento id {magento_id}, ledger {ledger_id})",
            if *voided { "voided" } else { "dated" },
            kind.as_str()
        ),
        Finding::DuplicateInLedger { kind, reference, ledger_ids } => {
            format!(
                "present {} times in ledger: {} {reference} ({})",
                ledger_ids.len(),
                kind.as_str(),
                ledger_ids.join(", ")
            )
        }
        Finding::AmountDiffers { kind, reference, ledger_id, amount, magento, ledger } => format!(
            "{} differs: {} {reference} (ledger {ledger_id}): Magento {}, ledger {}",
            amount.as_str(),
            kind.as_str(),
            format_money(*magento),
            ledger.map_or_else(|| "none".to_owned(), format_money)
        ),
        Finding::CurrencyDiffers { kind, reference, ledger_id, magento, ledger } => {
            format!(
                "currency differs: {} {reference} (ledger {ledger_id}): Magento {magento}, ledger {ledger}",
                kind.as_str()
            )
        }
        Finding::UnallocatedPayment { reference, ledger_id, amount } => format!(
            "payment unallocated: {} (ledger {ledger_id}): {} on account",
            reference.as_deref().unwrap_or("(no reference)"),
            format_money(*amount)
        ),
        Finding::NotFromRun { kind, reference, ledger_id, gross } => format!(
            "in ledger from no run: {} {} (ledger {ledger_id}, gross {})",
            kind.as_str(),
            reference.as_deref().unwrap_or("(no reference)"),
            format_money(*gross)
        ),
        Finding::UnreadableRun { run_id, idempotency_key, reason } => {
            format!("run {run_id} ({idempotency_key}) has no Magento totals: {reason}")
        }
    }
}

/// Compares Magento's records with the ledger's for `period` (pure: no I/O). `unreadable` are
/// findings met while reading the Magento side; they lead the report.
pub fn compare(period: Period, magento: &[MagentoRecord], ledger: &[LedgerEntry], unreadable: Vec<Finding>) -> Report {
    let mut findings = unreadable;
    let mut totals: BTreeMap<String, CurrencyTotals> = BTreeMap::new();
    // (kind, reference) -> indexes of live ledger entries.
    let mut by_ref: BTreeMap<(EntryKind, &str), Vec<usize>> = BTreeMap::new();
    for (i, e) in ledger.iter().enumerate() {
        if let (false, Some(r)) = (e.voided, e.reference.as_deref()) {
            by_ref.entry((e.kind, r)).or_default().push(i);
        }
    }
    // The currency a ledger entry is summed under: its own, else its Magento record's.
    let mut entry_currency: Vec<Option<String>> = ledger.iter().map(|e| e.currency.clone()).collect();
    let mut matched = vec![false; ledger.len()];
    for m in magento {
        totals.entry(m.currency.clone()).or_default().magento.add(m.kind, m.net, m.vat, m.gross);
        let hits = by_ref.get(&(m.kind, m.reference.as_str())).map(Vec::as_slice).unwrap_or_default();
        for &i in hits {
            matched[i] = true;
            entry_currency[i].get_or_insert_with(|| m.currency.clone());
        }
        match hits {
            [] => findings.push(Finding::MissingInLedger {
                kind: m.kind,
                reference: m.reference.clone(),
                magento_id: m.magento_id,
                gross: m.gross,
            }),
            [one] => {
                let e = &ledger[*one];
                if let Some(c) = e.currency.as_deref().filter(|c| !c.eq_ignore_ascii_case(&m.currency)) {
                    findings.push(Finding::CurrencyDiffers {
                        kind: m.kind,
                        reference: m.reference.clone(),
                        ledger_id: e.id.clone(),
                        magento: m.currency.clone(),
                        ledger: c.to_owned(),
                    });
                }
                let pairs = [
                    (Amount::Net, m.net, e.net),
                    (Amount::Vat, m.vat, e.vat),
                    (Amount::Gross, Some(m.gross), Some(e.gross)),
                ];
                for (amount, mine, theirs) in pairs {
                    if let Some(mine) = mine
                        && theirs != Some(mine)
                    {
                        findings.push(Finding::AmountDiffers {
                            kind: m.kind,
                            reference: m.reference.clone(),
                            ledger_id: e.id.clone(),
                            amount,
                            magento: mine,
                            ledger: theirs,
                        });
                    }
                }
            }
            many => findings.push(Finding::DuplicateInLedger {
                kind: m.kind,
                reference: m.reference.clone(),
                ledger_ids: many.iter().map(|&i| ledger[i].id.clone()).collect(),
            }),
        }
    }
    for (i, e) in ledger.iter().enumerate() {
        if e.voided {
            continue;
        }
        let currency = entry_currency[i].clone().unwrap_or_else(|| "unknown".to_owned());
        totals.entry(currency).or_default().ledger.add(e.kind, e.net, e.vat, e.gross);
        if !matched[i] {
            findings.push(Finding::NotFromRun {
                kind: e.kind,
                reference: e.reference.clone(),
                ledger_id: e.id.clone(),
                gross: e.gross,
            });
        }
        if e.kind == EntryKind::Payment && e.unallocated > Decimal::ZERO {
            findings.push(Finding::UnallocatedPayment {
                reference: e.reference.clone(),
                ledger_id: e.id.clone(),
                amount: e.unallocated,
            });
        }
    }
    Report { period, findings, totals }
}

/// The Magento side for `period`: every synced invoice, credit memo and payment run of `scope`
/// dated in the period, with the reference its ledger record carries; and a finding for each
/// synced run whose event gives no totals. An event stored without its entity is fetched from
/// `source` when one is given.
///
/// # Errors
/// The store's.
pub async fn magento_records<S: RunStore + XrefStore + ?Sized>(
    store: &S,
    scope: &str,
    period: Period,
    source: Option<&dyn EntitySource>,
) -> Result<(Vec<MagentoRecord>, Vec<Finding>)> {
    let mut records = Vec::new();
    let mut unreadable = Vec::new();
    for run in store.runs_with_status(scope, RunStatus::Synced).await? {
        let document = matches!(run.event.as_deref(), Some("invoice.created" | "invoice.paid" | "creditmemo.created"));
        if !document {
            continue;
        }
        let mut bad = |reason: String| {
            unreadable.push(Finding::UnreadableRun {
                run_id: run.id,
                idempotency_key: run.idempotency_key.clone(),
                reason,
            })
        };
        let event = match Event::parse(&run.raw) {
            Ok(e) => e,
            Err(e) => {
                bad(format!("its stored event cannot be read: {e}"));
                continue;
            }
        };
        let entity = match (event.entity, source) {
            (Some(e), _) => Some(e),
            (None, Some(source)) => match source.fetch(event.event, event.magento_entity_id).await {
                Ok(e) => Some(e),
                Err(e) => {
                    bad(format!("its entity could not be fetched from Magento: {e}"));
                    continue;
                }
            },
            (None, None) => None,
        };
        let (kind, xref_kind, mut record) = match (event.event, entity) {
            (EventKind::InvoiceCreated, Some(Entity::Invoice(inv))) => (
                EntryKind::Invoice,
                XrefKind::Invoice,
                MagentoRecord {
                    kind: EntryKind::Invoice,
                    magento_id: inv.magento_id,
                    reference: inv.increment_id.clone(),
                    increment_id: inv.increment_id,
                    date: inv.created_at.date_naive(),
                    currency: inv.currency.code().to_owned(),
                    net: Some(inv.grand_total - inv.tax_amount),
                    vat: Some(inv.tax_amount),
                    gross: inv.grand_total,
                },
            ),
            (EventKind::CreditMemoCreated, Some(Entity::CreditMemo(memo))) => {
                let vat: Decimal = memo.lines.iter().map(|l| l.line_tax).sum::<Decimal>() + memo.shipping_tax_amount;
                (
                    EntryKind::CreditNote,
                    XrefKind::CreditNote,
                    MagentoRecord {
                        kind: EntryKind::CreditNote,
                        magento_id: memo.magento_id,
                        reference: memo.increment_id.clone(),
                        increment_id: memo.increment_id,
                        date: memo.created_at.date_naive(),
                        currency: memo.currency.code().to_owned(),
                        net: Some(memo.grand_total - vat),
                        vat: Some(vat),
                        gross: memo.grand_total,
                    },
                )
            }
            (EventKind::InvoicePaid, Some(Entity::Payment(pay))) => (
                EntryKind::Payment,
                XrefKind::Payment,
                MagentoRecord {
                    kind: EntryKind::Payment,
                    magento_id: pay.invoice_id,
                    reference: pay.invoice_increment_id.clone(),
                    increment_id: pay.invoice_increment_id,
                    date: pay.captured_at.date_naive(),
                    currency: pay.currency.code().to_owned(),
                    net: None,
                    vat: None,
                    gross: pay.amount,
                },
            ),
            (_, None) => {
                bad("its event carried no entity (fetched from Magento when it synced)".to_owned());
                continue;
            }
            (kind, Some(_)) => {
                bad(format!("its {} event carries another entity", kind.as_str()));
                continue;
            }
        };
        if !period.contains(record.date) {
            continue;
        }
        if let Some(reference) =
            store.get_xref(scope, xref_kind, &record.magento_id.to_string()).await?.and_then(|x| x.reference)
        {
            record.reference = reference;
        }
        debug_assert_eq!(record.kind, kind);
        records.push(record);
    }
    Ok((records, unreadable))
}

/// Reconciles `scope`'s synced runs in `store` with what `provider` holds for `period`.
///
/// # Errors
/// The store's and the ledger's ([`crate::Error::Unsupported`] for a ledger that cannot list
/// its records).
pub async fn reconcile<S, P>(store: &S, provider: &P, scope: &str, period: Period) -> Result<Report>
where
    S: RunStore + XrefStore + ?Sized,
    P: AccountingProvider + ?Sized,
{
    reconcile_with_source(store, provider, scope, period, None).await
}

/// [`reconcile`], fetching from `source` (the store's Magento REST surface) the entity of every
/// synced event that was stored without one.
///
/// # Errors
/// As [`reconcile`].
pub async fn reconcile_with_source<S, P>(
    store: &S,
    provider: &P,
    scope: &str,
    period: Period,
    source: Option<&dyn EntitySource>,
) -> Result<Report>
where
    S: RunStore + XrefStore + ?Sized,
    P: AccountingProvider + ?Sized,
{
    let (magento, unreadable) = magento_records(store, scope, period, source).await?;
    let mut ledger = Vec::new();
    for kind in [EntryKind::Invoice, EntryKind::CreditNote, EntryKind::Payment] {
        ledger.extend(provider.list_entries(kind, period.from, period.to).await?);
    }
    tracing::info!(scope, from = %period.from, to = %period.to, magento = magento.len(), ledger = ledger.len(), "reconciling");
    let mut report = compare(period, &magento, &ledger, unreadable);
    // A document missing from the period may be in the ledger under another date: say so.
    for finding in &mut report.findings {
        let Finding::MissingInLedger { kind, reference, magento_id, .. } = finding else { continue };
        let document = match kind {
            EntryKind::Invoice => DocumentKind::Invoice,
            EntryKind::CreditNote => DocumentKind::CreditNote,
            EntryKind::Payment => continue,
        };
        if let Some(found) = provider.find_document(document, reference).await? {
            *finding = Finding::OutsidePeriod {
                kind: *kind,
                reference: reference.clone(),
                magento_id: *magento_id,
                ledger_id: found.id,
                voided: found.voided,
            };
        }
    }
    Ok(report)
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
