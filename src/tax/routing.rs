//! The tax router: a pure function from (the ledger business's country, the customer's country,
//! B2B or B2C, the kind of supply, the tax Magento charged) to a [`TaxTreatment`], implemented as
//! the decision tables of tax.md sections 2.2–2.4.
//!
//! # Inputs and the choices behind them
//!
//! - **Business country** comes from the ledger (Sage `business_settings` / address), never a
//!   hard-coded `GB`. A UK business registered in Northern Ireland follows EU rules for goods.
//! - **Customer country**: the *shipping* address for goods (where the goods go) and the
//!   *billing* address for services (where the customer belongs), each falling back to the other
//!   (tax.md 2.2). Byte8 keys everything on the billing country; for goods shipped abroad to a
//!   domestic billing address that books UK VAT on an export, which tax.md 2.2 shows is wrong.
//!   With no address at all the line is domestic.
//! - **B2B** means the buyer has a **VAT number** ([`Buyer::has_vat_number`]: the billing
//!   address's `vat_id`, else the customer's `taxvat`, magento.md 5.11). A company name alone is
//!   not enough (issue 18): the EU B2B rules — intra-Community supply of goods (VAT Directive
//!   Art. 138), the reverse charge on services (Art. 196), the EC Sales List — all rest on the
//!   customer's VAT number, and the invoice must show it. A line on which Magento charged tax is
//!   never treated as B2B, whatever the number, because a validated business buyer abroad is
//!   never charged VAT (magento.md 5.11: mirror what Magento charged, do not re-decide it).
//!
//! # No VAT charged to a buyer without a VAT number
//!
//! Magento charging **no** VAT on a supply into the EU that only a VAT-registered business buyer
//! can receive free of VAT — an EU seller's supply to another member state, an NI seller's goods
//! to the EU, a UK seller's digital services to an EU buyer — while the buyer has **no VAT number**
//! is a contradiction the router does not resolve (magento.md 5.11: the customer group and the
//! tax charged can disagree with the VAT number; flag it, do not "fix" it). The line is routed as
//! Magento's zero implies (`ReverseCharge` for goods and services within the Union, `OutsideScope`
//! for a UK seller's digital services) and flagged [`LineRoute::missing_vat_number`]; the plan
//! then **fails the document as a validation error** naming `customer.vat_number`, and nothing is
//! posted. Chosen over the alternatives:
//!
//! - booking it as an intra-EU zero-rated supply would put a sale without a customer VAT number
//!   on the EC Sales List / VIES return, which the tax authority rejects (Art. 138 since 2020
//!   requires the buyer's valid VAT number);
//! - booking it as a domestic sale would re-decide the VAT: the ledger would show VAT that was
//!   never charged, and the document would no longer total Magento's `grand_total`.
//!
//! The policy key `company_name_without_vat_number_is_b2b` (default `false`) restores the old rule
//! for merchants whose payload cannot carry the number (the Byte8 module sends none): a buyer
//! without a VAT number but with a company name is then a business (`Buyer::has_vat_number` is set
//! by the plan), and the line is `ReverseCharge` without the flag.
//!
//! The operator either adds the buyer's VAT number in Magento (billing address *VAT number* or the
//! customer's *Tax/VAT number*) and resends, or corrects the order's tax. Goods **exported**
//! outside the VAT area (a GB seller's goods to the EU, anyone's goods to the US) are zero-rated
//! with or without a VAT number (tax.md 2.2 rows 2, 7), and services outside the EU are outside
//! scope either way: no VAT number is needed there, so nothing is flagged.
//! - **Supply**: `GOODS`/`SERVICES` from the policy's `product_type_eu_goods_map`; a
//!   `downloadable` product is a digital service (tax.md 2.1 rule 4).
//! - **Tax charged**: the line's own tax. "Matches a domestic rate" means some percentage of the
//!   business's own rates reproduces the line's tax on its net to the penny.
//!
//! # Tax at the business's own rate charged to a consumer abroad
//!
//! When Magento charged a consumer abroad the business's **own domestic rate** (a UK store
//! charging 20 % to a French consumer), the store applied home VAT and printed it on the invoice:
//! that VAT is due at home, so the line is `Domestic` — booked on the domestic rate, in the
//! domestic output VAT of the return. It becomes foreign VAT (`DestinationVat`, booked on the
//! policy's `foreign_vat_ledger_account_id`) only when
//!
//! - the rate charged is **not** one of the business's own rates (a destination-country rate:
//!   19 % to Germany, 25 % to Norway), or
//! - the policy declares an **OSS/IOSS registration** (`oss_registration`) covering the supply
//!   and the consumer is in the EU: then the store is taxing at the destination's rate through
//!   the scheme, even when that rate happens to equal a domestic one (France's 20 %).
//!
//! Which scheme covers which supply: IOSS covers goods from a seller outside the EU VAT area for
//! goods (a GB business); OSS covers goods from an EU or Northern Ireland seller (Union OSS
//! distance sales) and services, including digital services, from any seller. "Other" B2C
//! services stay taxable where the supplier belongs (Notice 741A) whatever the registration.
//!
//! # The GB table (tax.md 2.2)
//!
//! "own rate" = the tax matches a rate of the business; "scheme" = `oss_registration` covers the
//! supply (see above).
//!
//! | destination | supply | charged | treatment |
//! |---|---|---|---|
//! | GB, NI, IM | any | any | `Domestic` (row 1) |
//! | EU, from an NI business | goods, VAT number | none | `ReverseCharge` (N1) |
//! | EU, from an NI business | goods, no VAT number | none | **validation failure** (see above) |
//! | EU, from an NI business | goods, any | own rate, no scheme | `Domestic` (N2, under the threshold) |
//! | EU, from an NI business | goods, any | own rate with scheme, or another rate | `DestinationVat` (N2, Union OSS) |
//! | elsewhere | goods | none | `ZeroRatedExport` (rows 2, 7) |
//! | EU | goods | own rate, no IOSS | `Domestic` (UK VAT charged and shown: due at home) |
//! | EU | goods | own rate with IOSS, or another rate | `DestinationVat` (row 6, IOSS) |
//! | non-EU | goods | own rate | `Domestic` (no export evidence: UK VAT is due) |
//! | non-EU | goods | another rate | `DestinationVat` (local import schemes) |
//! | elsewhere | services, VAT number | none | `OutsideScope` (rows 3, 4) |
//! | EU | digital, no VAT number | none | **validation failure** (row 5: EU VAT was due) |
//! | non-EU | digital, no VAT number | none | `OutsideScope` (row 8) |
//! | EU | digital, B2C | own rate, no OSS | `Domestic` (UK VAT charged: due at home) |
//! | EU | digital, B2C | own rate with OSS, or another rate | `DestinationVat` (row 5, non-Union OSS) |
//! | non-EU | digital, B2C | own rate | `Domestic` |
//! | non-EU | digital, B2C | another rate | `DestinationVat` (e.g. Norway's VOEC) |
//! | elsewhere | other services, B2C | own rate | `Domestic` (row 9) |
//! | elsewhere | other services, B2C | another rate | `DestinationVat` |
//! | elsewhere | other services, no VAT number | none | `OutsideScope` (row 9, Sch. 4A) |
//!
//! "VAT number" rows apply only to untaxed lines; a taxed line follows the "any" / B2C rows.
//!
//! # The EU-seller table (tax.md 2.3, 2.4: IE, DE, FR, ES, ...)
//!
//! | destination | supply | charged | treatment |
//! |---|---|---|---|
//! | home country | any | any | `Domestic` |
//! | other EU (NI for goods) | any, VAT number | none | `ReverseCharge` (intra-Community supply / reverse charge) |
//! | other EU (NI for goods) | any, no VAT number | none | **validation failure** (see above) |
//! | other EU | any | own rate, no OSS | `Domestic` (under the €10k threshold) |
//! | other EU | any | own rate with OSS, or another rate | `DestinationVat` (Union OSS) |
//! | non-EU | goods | none | `ZeroRatedExport` |
//! | non-EU | goods or services | own rate | `Domestic` |
//! | non-EU | goods or services | another rate | `DestinationVat` (e.g. UK VAT on a ≤ £135 consignment) |
//! | non-EU | services | none | `OutsideScope` |
//!
//! Businesses in sales-tax countries (US, CA) pass Magento's tax through: every line is
//! `Domestic`. Any other country uses the EU-seller table with "EU" read as "home country".
//!
//! # What the treatment means for the books
//!
//! `Domestic` lines take the business's own rate for the percentage Magento charged (tax-rate
//! map, then default). Every other treatment books the line at the zero rate. When Magento
//! collected tax on such a line (`DestinationVat`), that tax is owed to another country: it is
//! never dropped — the provider books it on a no-tax line to the policy's
//! `foreign_vat_ledger_account_id`, and fails the document with a clear error when that is not
//! configured (tax.md 2.6 option 2).

use rust_decimal::Decimal;

use super::territory::{VatArea, is_eu_member, vat_area};
use crate::{
    money::round_money,
    policy::{EuSupplyType, OssRegistration},
};

/// How a line is taxed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TaxTreatment {
    /// The business's own VAT (or sales tax) at the rate Magento charged.
    Domestic,
    /// Goods leaving the VAT area: zero-rated.
    ZeroRatedExport,
    /// A supply outside the scope of the business's VAT (services abroad).
    OutsideScope,
    /// An intra-EU B2B supply: zero-rated, the customer accounts for the VAT.
    ReverseCharge,
    /// Magento collected another country's VAT (OSS/IOSS): zero-rated here, and the collected tax
    /// is a liability to that country.
    DestinationVat,
}

impl TaxTreatment {
    /// True for every treatment but `Domestic`: the line is booked at the zero rate.
    pub fn is_zero_rated(self) -> bool {
        !matches!(self, Self::Domestic)
    }

    /// A stable name for messages and audits.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Domestic => "domestic",
            Self::ZeroRatedExport => "zero_rated_export",
            Self::OutsideScope => "outside_scope",
            Self::ReverseCharge => "reverse_charge",
            Self::DestinationVat => "destination_vat",
        }
    }
}

/// The ledger business as the router sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seller {
    /// ISO 3166-1 alpha-2 country.
    pub country: String,
    /// Registered in Northern Ireland.
    pub northern_ireland: bool,
    /// Its OSS/IOSS registration (policy `oss_registration`).
    pub oss: OssRegistration,
}

/// A country and postcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place<'a> {
    /// ISO 3166-1 alpha-2 country.
    pub country: &'a str,
    /// Postcode, when known.
    pub postcode: Option<&'a str>,
}

/// The buyer as the router sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Buyer<'a> {
    /// Billing address place.
    pub billing: Option<Place<'a>>,
    /// Shipping address place.
    pub shipping: Option<Place<'a>>,
    /// The buyer has a VAT number (the billing address's `vat_id`, else the customer's `taxvat`):
    /// a business buyer for the EU B2B rules. A company name alone does not make one.
    pub has_vat_number: bool,
}

/// One line as the router sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Supply {
    /// Goods or services.
    pub kind: EuSupplyType,
    /// A digital (electronically supplied) service.
    pub digital: bool,
    /// Net after discount.
    pub net: Decimal,
    /// Tax Magento charged.
    pub tax: Decimal,
}

/// The router's answer for one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LineRoute {
    /// The treatment.
    pub treatment: TaxTreatment,
    /// The VAT area of the place of supply used.
    pub area: VatArea,
    /// Magento charged no VAT on a supply that is free of VAT only to a VAT-registered business
    /// buyer, and the buyer has no VAT number: the document must fail validation (see the module
    /// docs, *No VAT charged to a buyer without a VAT number*).
    pub missing_vat_number: bool,
}

/// True when some percentage in `rates` reproduces `tax` on `net` to the penny.
pub fn matches_rate(net: Decimal, tax: Decimal, rates: &[Decimal]) -> bool {
    rates
        .iter()
        .filter(|p| **p > Decimal::ZERO)
        .any(|p| (round_money(net * *p / Decimal::ONE_HUNDRED) - tax).abs() <= crate::money::PENNY)
}

/// Routes one line. `domestic_rates` are the percentages of the business's own tax rates.
pub fn route_line(seller: &Seller, buyer: &Buyer<'_>, supply: &Supply, domestic_rates: &[Decimal]) -> LineRoute {
    use TaxTreatment::*;
    let place = match supply.kind {
        EuSupplyType::Goods => buyer.shipping.or(buyer.billing),
        EuSupplyType::Services => buyer.billing.or(buyer.shipping),
    };
    let home = seller.country.trim().to_ascii_uppercase();
    let Some(place) = place else {
        return LineRoute { treatment: Domestic, area: vat_area(&home, None), missing_vat_number: false };
    };
    let area = vat_area(place.country, place.postcode);
    let taxed = supply.tax > Decimal::ZERO;
    let b2b = buyer.has_vat_number && !taxed;
    // Set where Magento's zero is lawful only for a buyer with a VAT number and there is none.
    let mut missing_vat_number = false;
    let domestic_rate = taxed && matches_rate(supply.net, supply.tax, domestic_rates);
    let goods = supply.kind == EuSupplyType::Goods;
    let treatment = match home.as_str() {
        "US" | "CA" => Domestic,
        "GB" | "UK" => {
            let eu = matches!(area, VatArea::Eu(_));
            match area {
                VatArea::GreatBritain | VatArea::NorthernIreland => Domestic,
                VatArea::Eu(_) if seller.northern_ireland && goods => {
                    if b2b {
                        ReverseCharge
                    } else if domestic_rate && !seller.oss.covers_goods(true) {
                        Domestic
                    } else if taxed {
                        DestinationVat
                    } else {
                        missing_vat_number = true;
                        ReverseCharge
                    }
                }
                _ if goods => {
                    if !taxed {
                        ZeroRatedExport
                    } else if domestic_rate && !(eu && seller.oss.covers_goods(false)) {
                        Domestic
                    } else {
                        DestinationVat
                    }
                }
                _ if b2b => OutsideScope,
                _ if supply.digital => {
                    if !taxed {
                        missing_vat_number = eu;
                        OutsideScope
                    } else if domestic_rate && !(eu && seller.oss.covers_services()) {
                        Domestic
                    } else {
                        DestinationVat
                    }
                }
                _ => {
                    if domestic_rate {
                        Domestic
                    } else if taxed {
                        DestinationVat
                    } else {
                        OutsideScope
                    }
                }
            }
        }
        _ => {
            let eu_seller = is_eu_member(&home);
            let same_country = match area {
                VatArea::Eu(c) => c == home,
                VatArea::GreatBritain => home == "GB",
                VatArea::NorthernIreland => false,
                VatArea::Outside => place.country.eq_ignore_ascii_case(&home),
            };
            // Northern Ireland counts as EU for goods (tax.md 2.3).
            let in_union =
                eu_seller && (matches!(area, VatArea::Eu(_)) || (goods && matches!(area, VatArea::NorthernIreland)));
            let scheme = if goods { seller.oss.covers_goods(true) } else { seller.oss.covers_services() };
            if same_country {
                Domestic
            } else if in_union {
                if b2b {
                    ReverseCharge
                } else if domestic_rate && !scheme {
                    Domestic
                } else if taxed {
                    DestinationVat
                } else {
                    missing_vat_number = true;
                    ReverseCharge
                }
            } else if domestic_rate {
                Domestic
            } else if taxed {
                DestinationVat
            } else if goods {
                ZeroRatedExport
            } else {
                OutsideScope
            }
        }
    };
    LineRoute { treatment, area, missing_vat_number }
}

/// The router's answer for a whole document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocumentRoute {
    /// One route per line, same order.
    pub lines: Vec<LineRoute>,
    /// True when the document is cross-border: some line is not domestic, or the billing
    /// country is outside the business's own VAT area.
    pub cross_border: bool,
    /// The one EU goods/services type of a cross-border document (`None` when domestic).
    pub eu_type: Option<EuSupplyType>,
    /// True when the lines' types differed and were coerced to the default
    /// (`mixed_eu_goods_services_coerced_to_default`).
    pub coerced: bool,
}

impl DocumentRoute {
    /// True when some line needs the buyer's VAT number it does not have
    /// ([`LineRoute::missing_vat_number`]).
    pub fn missing_vat_number(&self) -> bool {
        self.lines.iter().any(|l| l.missing_vat_number)
    }
}

/// Routes every line of a document and settles its single EU goods/services type: Sage wants one
/// type on every line of a cross-border document (byte8-spec.md 8.4), so when the lines' types
/// differ they are all coerced to `default_type` and `coerced` is set.
pub fn route_document(
    seller: &Seller,
    buyer: &Buyer<'_>,
    supplies: &[Supply],
    default_type: EuSupplyType,
    domestic_rates: &[Decimal],
) -> DocumentRoute {
    let lines: Vec<LineRoute> = supplies.iter().map(|s| route_line(seller, buyer, s, domestic_rates)).collect();
    let home_domestic = |area: VatArea| match (seller.country.to_ascii_uppercase().as_str(), area) {
        ("GB" | "UK", VatArea::GreatBritain | VatArea::NorthernIreland) => true,
        (home, VatArea::Eu(c)) => c == home,
        ("US" | "CA", _) => true,
        (home, VatArea::Outside) => buyer.billing.is_some_and(|b| b.country.eq_ignore_ascii_case(home)),
        _ => false,
    };
    let billing_abroad = buyer.billing.is_some_and(|b| !home_domestic(vat_area(b.country, b.postcode)));
    let cross_border = lines.iter().any(|l| l.treatment.is_zero_rated()) || billing_abroad;
    let (eu_type, coerced) = if cross_border {
        let mut kinds = supplies.iter().map(|s| s.kind);
        match kinds.next() {
            Some(first) if kinds.all(|k| k == first) => (Some(first), false),
            Some(_) => (Some(default_type), true),
            None => (Some(default_type), false),
        }
    } else {
        (None, false)
    };
    DocumentRoute { lines, cross_border, eu_type, coerced }
}

#[cfg(test)]
mod tests {
    use rust_decimal_macros::dec;

    use super::*;
    use TaxTreatment::*;

    fn gb() -> Seller {
        Seller { country: "GB".into(), northern_ireland: false, oss: OssRegistration::None }
    }

    /// A buyer at `country`; `vat` = it has a VAT number.
    fn buyer<'a>(country: &'a str, postcode: Option<&'a str>, vat: bool) -> Buyer<'a> {
        let p = Place { country, postcode };
        Buyer { billing: Some(p), shipping: Some(p), has_vat_number: vat }
    }

    fn goods(net: Decimal, tax: Decimal) -> Supply {
        Supply { kind: EuSupplyType::Goods, digital: false, net, tax }
    }

    fn services(net: Decimal, tax: Decimal, digital: bool) -> Supply {
        Supply { kind: EuSupplyType::Services, digital, net, tax }
    }

    const UK_RATES: [Decimal; 3] = [dec!(20), dec!(5), dec!(0)];

    fn t(seller: &Seller, b: &Buyer<'_>, s: &Supply) -> TaxTreatment {
        route_line(seller, b, s, &UK_RATES).treatment
    }

    #[test]
    fn gb_table_rows() {
        let s = gb();
        // Row 1: domestic, including NI and the Isle of Man.
        assert_eq!(t(&s, &buyer("GB", Some("SW1A 1AA"), false), &goods(dec!(100), dec!(20))), Domestic);
        assert_eq!(t(&s, &buyer("GB", Some("BT1 1AA"), false), &goods(dec!(100), dec!(20))), Domestic);
        assert_eq!(t(&s, &buyer("IM", Some("IM1 1AA"), false), &goods(dec!(100), dec!(20))), Domestic);
        // Row 2/7: goods exported, no tax.
        assert_eq!(t(&s, &buyer("US", None, false), &goods(dec!(100), dec!(0))), ZeroRatedExport);
        assert_eq!(t(&s, &buyer("DE", None, false), &goods(dec!(100), dec!(0))), ZeroRatedExport);
        assert_eq!(t(&s, &buyer("JE", None, false), &goods(dec!(100), dec!(0))), ZeroRatedExport);
        // Row 3/4: B2B services abroad.
        assert_eq!(t(&s, &buyer("FR", None, true), &services(dec!(100), dec!(0), false)), OutsideScope);
        assert_eq!(t(&s, &buyer("US", None, true), &services(dec!(100), dec!(0), true)), OutsideScope);
        // Row 5: digital B2C to the EU with EU VAT collected (non-Union OSS): 21 % NL.
        assert_eq!(t(&s, &buyer("NL", None, false), &services(dec!(100), dec!(21), true)), DestinationVat);
        // Row 6: IOSS goods with 19 % DE VAT collected.
        assert_eq!(t(&s, &buyer("DE", None, false), &goods(dec!(100), dec!(19))), DestinationVat);
        // UK VAT (20 %) charged to a French consumer by a business with no IOSS registration: the
        // store charged home VAT and showed it, so it is due at home.
        assert_eq!(t(&s, &buyer("FR", None, false), &goods(dec!(100), dec!(20))), Domestic);
        // Row 8: digital B2C outside the EU without tax.
        assert_eq!(t(&s, &buyer("US", None, false), &services(dec!(100), dec!(0), true)), OutsideScope);
        // Row 9: other services B2C abroad charged UK VAT.
        assert_eq!(t(&s, &buyer("US", None, false), &services(dec!(100), dec!(20), false)), Domestic);
        // Goods to a non-EU country charged UK VAT (no export evidence).
        assert_eq!(t(&s, &buyer("CH", None, false), &goods(dec!(100), dec!(20))), Domestic);
        // Goods to Norway charged 25 % (VOEC): destination VAT.
        assert_eq!(t(&s, &buyer("NO", None, false), &goods(dec!(100), dec!(25))), DestinationVat);
    }

    #[test]
    fn own_rate_abroad_is_domestic_unless_a_scheme_covers_it() {
        let with = |oss| Seller { country: "GB".into(), northern_ireland: false, oss };
        let fr = buyer("FR", Some("75001"), false);
        let de = buyer("DE", Some("10115"), false);
        let uk20 = goods(dec!(100), dec!(20));
        let digital20 = services(dec!(100), dec!(20), true);
        // No registration: UK 20 % on goods and on digital services to EU consumers is UK VAT.
        assert_eq!(t(&with(OssRegistration::None), &fr, &uk20), Domestic);
        assert_eq!(t(&with(OssRegistration::None), &fr, &digital20), Domestic);
        // A destination rate (DE 19 %) is foreign VAT whatever the registration.
        assert_eq!(t(&with(OssRegistration::None), &de, &goods(dec!(100), dec!(19))), DestinationVat);
        // IOSS covers goods from GB, not services; OSS covers services, not GB goods.
        assert_eq!(t(&with(OssRegistration::Ioss), &fr, &uk20), DestinationVat);
        assert_eq!(t(&with(OssRegistration::Ioss), &fr, &digital20), Domestic);
        assert_eq!(t(&with(OssRegistration::Oss), &fr, &uk20), Domestic);
        assert_eq!(t(&with(OssRegistration::Oss), &fr, &digital20), DestinationVat);
        assert_eq!(t(&with(OssRegistration::OssAndIoss), &fr, &uk20), DestinationVat);
        // Schemes are EU schemes: a US consumer charged 20 % is UK VAT even when registered.
        assert_eq!(t(&with(OssRegistration::OssAndIoss), &buyer("US", None, false), &uk20), Domestic);
        // Other B2C services stay taxable where the supplier belongs.
        assert_eq!(t(&with(OssRegistration::OssAndIoss), &fr, &services(dec!(100), dec!(20), false)), Domestic);
        // An NI business's goods: Union OSS, not IOSS.
        let ni = |oss| Seller { country: "GB".into(), northern_ireland: true, oss };
        assert_eq!(t(&ni(OssRegistration::Ioss), &fr, &uk20), Domestic);
        assert_eq!(t(&ni(OssRegistration::Oss), &fr, &uk20), DestinationVat);
        // An Irish business registered for OSS charging 23 % to a Polish consumer (PL is 23 % too).
        let ie = |oss| Seller { country: "IE".into(), northern_ireland: false, oss };
        let rates = [dec!(23), dec!(13.5), dec!(9), dec!(0)];
        let pl = buyer("PL", None, false);
        let r = |s: &Seller| route_line(s, &pl, &goods(dec!(100), dec!(23)), &rates).treatment;
        assert_eq!(r(&ie(OssRegistration::None)), Domestic);
        assert_eq!(r(&ie(OssRegistration::Oss)), DestinationVat);
    }

    #[test]
    fn a_taxed_line_is_never_b2b() {
        // A buyer in Germany with a VAT number charged 19 %: Magento did not treat it as a
        // validated business (magento.md 5.11), so mirror what it charged.
        assert_eq!(t(&gb(), &buyer("DE", None, true), &services(dec!(100), dec!(19), false)), DestinationVat);
    }

    #[test]
    fn goods_follow_the_shipping_address_and_services_the_billing() {
        let b = Buyer {
            billing: Some(Place { country: "GB", postcode: Some("EC1A 1BB") }),
            shipping: Some(Place { country: "US", postcode: Some("10001") }),
            has_vat_number: false,
        };
        assert_eq!(t(&gb(), &b, &goods(dec!(50), dec!(0))), ZeroRatedExport);
        assert_eq!(t(&gb(), &b, &services(dec!(50), dec!(10), false)), Domestic);
    }

    #[test]
    fn northern_ireland_seller_goods_to_eu() {
        let ni = Seller { country: "GB".into(), northern_ireland: true, oss: OssRegistration::None };
        assert_eq!(t(&ni, &buyer("IE", None, true), &goods(dec!(100), dec!(0))), ReverseCharge);
        assert_eq!(t(&ni, &buyer("IE", None, false), &goods(dec!(100), dec!(20))), Domestic);
        assert_eq!(t(&ni, &buyer("IE", None, false), &goods(dec!(100), dec!(23))), DestinationVat);
        // Services from NI follow GB rules.
        assert_eq!(t(&ni, &buyer("IE", None, true), &services(dec!(100), dec!(0), false)), OutsideScope);
    }

    #[test]
    fn irish_seller() {
        let ie = Seller { country: "IE".into(), northern_ireland: false, oss: OssRegistration::None };
        let rates = [dec!(23), dec!(13.5), dec!(9), dec!(0)];
        let r = |b: &Buyer<'_>, s: &Supply| route_line(&ie, b, s, &rates).treatment;
        assert_eq!(r(&buyer("IE", None, false), &goods(dec!(100), dec!(23))), Domestic);
        assert_eq!(r(&buyer("DE", None, true), &goods(dec!(100), dec!(0))), ReverseCharge);
        assert_eq!(r(&buyer("DE", None, true), &services(dec!(100), dec!(0), false)), ReverseCharge);
        // Distance sale under the threshold: Irish VAT.
        assert_eq!(r(&buyer("FR", None, false), &goods(dec!(100), dec!(23))), Domestic);
        // Above it, via OSS: French VAT.
        assert_eq!(r(&buyer("FR", None, false), &goods(dec!(100), dec!(20))), DestinationVat);
        // Northern Ireland counts as EU for goods.
        assert_eq!(r(&buyer("GB", Some("BT7 1NN"), true), &goods(dec!(100), dec!(0))), ReverseCharge);
        // Great Britain is an export.
        assert_eq!(r(&buyer("GB", Some("SW1A 1AA"), false), &goods(dec!(100), dec!(0))), ZeroRatedExport);
        // UK VAT collected on a ≤ £135 consignment.
        assert_eq!(r(&buyer("GB", Some("SW1A 1AA"), false), &goods(dec!(100), dec!(20))), DestinationVat);
        assert_eq!(r(&buyer("US", None, true), &services(dec!(100), dec!(0), false)), OutsideScope);
    }

    #[test]
    fn sales_tax_countries_pass_through() {
        let us = Seller { country: "US".into(), northern_ireland: false, oss: OssRegistration::None };
        assert_eq!(route_line(&us, &buyer("CA", None, false), &goods(dec!(10), dec!(0)), &[]).treatment, Domestic);
    }

    #[test]
    fn document_type_is_single_and_mixed_types_are_coerced() {
        let s = gb();
        let b = buyer("US", None, false);
        let r = route_document(
            &s,
            &b,
            &[goods(dec!(10), dec!(0)), goods(dec!(5), dec!(0))],
            EuSupplyType::Services,
            &UK_RATES,
        );
        assert_eq!((r.cross_border, r.eu_type, r.coerced), (true, Some(EuSupplyType::Goods), false));
        let r = route_document(
            &s,
            &b,
            &[goods(dec!(10), dec!(0)), services(dec!(5), dec!(0), true)],
            EuSupplyType::Goods,
            &UK_RATES,
        );
        assert_eq!((r.eu_type, r.coerced), (Some(EuSupplyType::Goods), true));
        let r =
            route_document(&s, &buyer("GB", None, false), &[goods(dec!(10), dec!(2))], EuSupplyType::Goods, &UK_RATES);
        assert_eq!((r.cross_border, r.eu_type), (false, None));
    }

    fn missing(seller: &Seller, b: &Buyer<'_>, s: &Supply, rates: &[Decimal]) -> (TaxTreatment, bool) {
        let r = route_line(seller, b, s, rates);
        (r.treatment, r.missing_vat_number)
    }

    /// The intra-EU rows with and without the buyer's VAT number, Magento having charged nothing:
    /// with one, the zero-rated B2B treatment; without, the same treatment flagged so that the
    /// document fails validation (module docs, *No VAT charged to a buyer without a VAT number*).
    #[test]
    fn untaxed_intra_eu_supplies_need_the_buyers_vat_number() {
        let ie = Seller { country: "IE".into(), northern_ireland: false, oss: OssRegistration::None };
        let ni = Seller { country: "GB".into(), northern_ireland: true, oss: OssRegistration::None };
        let ie_rates = [dec!(23), dec!(13.5), dec!(9), dec!(0)];
        let zero = goods(dec!(100), dec!(0));
        let advice = services(dec!(100), dec!(0), false);
        let ebook = services(dec!(100), dec!(0), true);
        // An Irish seller's goods and services to Germany.
        assert_eq!(missing(&ie, &buyer("DE", None, true), &zero, &ie_rates), (ReverseCharge, false));
        assert_eq!(missing(&ie, &buyer("DE", None, false), &zero, &ie_rates), (ReverseCharge, true));
        assert_eq!(missing(&ie, &buyer("DE", None, true), &advice, &ie_rates), (ReverseCharge, false));
        assert_eq!(missing(&ie, &buyer("DE", None, false), &advice, &ie_rates), (ReverseCharge, true));
        // Goods to Northern Ireland count as intra-EU for an EU seller.
        assert_eq!(missing(&ie, &buyer("GB", Some("BT1 1AA"), false), &zero, &ie_rates), (ReverseCharge, true));
        // An NI seller's goods to France.
        assert_eq!(missing(&ni, &buyer("FR", None, true), &zero, &UK_RATES), (ReverseCharge, false));
        assert_eq!(missing(&ni, &buyer("FR", None, false), &zero, &UK_RATES), (ReverseCharge, true));
        // A GB seller's digital service to an EU consumer charged nothing: EU VAT was due (row 5).
        assert_eq!(missing(&gb(), &buyer("NL", None, false), &ebook, &UK_RATES), (OutsideScope, true));
        assert_eq!(missing(&gb(), &buyer("NL", None, true), &ebook, &UK_RATES), (OutsideScope, false));
        // No VAT number is needed for exports or services outside the EU.
        assert_eq!(missing(&gb(), &buyer("FR", None, false), &zero, &UK_RATES), (ZeroRatedExport, false));
        assert_eq!(missing(&gb(), &buyer("US", None, false), &ebook, &UK_RATES), (OutsideScope, false));
        assert_eq!(missing(&gb(), &buyer("FR", None, false), &advice, &UK_RATES), (OutsideScope, false));
        assert_eq!(missing(&ie, &buyer("US", None, false), &zero, &ie_rates), (ZeroRatedExport, false));
        assert_eq!(missing(&ie, &buyer("US", None, false), &advice, &ie_rates), (OutsideScope, false));
        // A taxed line never needs one, and a VAT number does not make it B2B.
        assert_eq!(
            missing(&ie, &buyer("DE", None, true), &goods(dec!(100), dec!(19)), &ie_rates),
            (DestinationVat, false)
        );
        assert_eq!(missing(&ie, &buyer("DE", None, false), &goods(dec!(100), dec!(23)), &ie_rates), (Domestic, false));
        // Domestic sales never need one.
        assert_eq!(missing(&ie, &buyer("IE", None, false), &zero, &ie_rates), (Domestic, false));
        // The document says so when any line does.
        let doc = route_document(&ie, &buyer("DE", None, false), &[zero, advice], EuSupplyType::Goods, &ie_rates);
        assert!(doc.missing_vat_number());
        let doc = route_document(&ie, &buyer("DE", None, true), &[zero, advice], EuSupplyType::Goods, &ie_rates);
        assert!(!doc.missing_vat_number());
    }

    #[test]
    fn no_address_is_domestic() {
        let b = Buyer { billing: None, shipping: None, has_vat_number: false };
        assert_eq!(t(&gb(), &b, &goods(dec!(10), dec!(2))), Domestic);
    }
}
