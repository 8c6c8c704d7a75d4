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
//! - **B2B**: the canonical entities carry no VAT number, so a non-empty company name marks a
//!   business buyer — but a line on which Magento charged tax is never treated as B2B, because a
//!   validated business buyer abroad is never charged VAT (magento.md 5.11: mirror what Magento
//!   charged, do not re-decide it).
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
//! | EU, from an NI business | goods, B2B | none | `ReverseCharge` (N1) |
//! | EU, from an NI business | goods, B2C | own rate, no scheme | `Domestic` (N2, under the threshold) |
//! | EU, from an NI business | goods, B2C | own rate with scheme, or another rate | `DestinationVat` (N2, Union OSS) |
//! | elsewhere | goods | none | `ZeroRatedExport` (rows 2, 7) |
//! | EU | goods | own rate, no IOSS | `Domestic` (UK VAT charged and shown: due at home) |
//! | EU | goods | own rate with IOSS, or another rate | `DestinationVat` (row 6, IOSS) |
//! | non-EU | goods | own rate | `Domestic` (no export evidence: UK VAT is due) |
//! | non-EU | goods | another rate | `DestinationVat` (local import schemes) |
//! | elsewhere | services, B2B | none | `OutsideScope` (rows 3, 4) |
//! | elsewhere | digital, B2C | none | `OutsideScope` (row 8) |
//! | EU | digital, B2C | own rate, no OSS | `Domestic` (UK VAT charged: due at home) |
//! | EU | digital, B2C | own rate with OSS, or another rate | `DestinationVat` (row 5, non-Union OSS) |
//! | non-EU | digital, B2C | own rate | `Domestic` |
//! | non-EU | digital, B2C | another rate | `DestinationVat` (e.g. Norway's VOEC) |
//! | elsewhere | other services, B2C | own rate | `Domestic` (row 9) |
//! | elsewhere | other services, B2C | another rate | `DestinationVat` |
//! | elsewhere | other services, B2C | none | `OutsideScope` (row 9, Sch. 4A) |
//!
//! # The EU-seller table (tax.md 2.3, 2.4: IE, DE, FR, ES, ...)
//!
//! | destination | supply | charged | treatment |
//! |---|---|---|---|
//! | home country | any | any | `Domestic` |
//! | other EU (NI for goods) | any, B2B | none | `ReverseCharge` (intra-Community supply / reverse charge) |
//! | other EU | any, B2C | own rate, no OSS | `Domestic` (under the €10k threshold) |
//! | other EU | any, B2C | own rate with OSS, or another rate | `DestinationVat` (Union OSS) |
//! | other EU | goods / services, B2C | none | `ZeroRatedExport` / `OutsideScope` (mirrors Magento) |
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
    /// A business buyer (non-empty company name).
    pub business: bool,
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
        return LineRoute { treatment: Domestic, area: vat_area(&home, None) };
    };
    let area = vat_area(place.country, place.postcode);
    let taxed = supply.tax > Decimal::ZERO;
    let b2b = buyer.business && !taxed;
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
                        ZeroRatedExport
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
                } else if goods {
                    ZeroRatedExport
                } else {
                    OutsideScope
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
    LineRoute { treatment, area }
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

    fn buyer<'a>(country: &'a str, postcode: Option<&'a str>, business: bool) -> Buyer<'a> {
        let p = Place { country, postcode };
        Buyer { billing: Some(p), shipping: Some(p), business }
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
        // A company buyer in Germany charged 19 %: Magento did not validate a VAT id, so mirror it.
        assert_eq!(t(&gb(), &buyer("DE", None, true), &services(dec!(100), dec!(19), false)), DestinationVat);
    }

    #[test]
    fn goods_follow_the_shipping_address_and_services_the_billing() {
        let b = Buyer {
            billing: Some(Place { country: "GB", postcode: Some("EC1A 1BB") }),
            shipping: Some(Place { country: "US", postcode: Some("10001") }),
            business: false,
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

    #[test]
    fn no_address_is_domestic() {
        let b = Buyer { billing: None, shipping: None, business: false };
        assert_eq!(t(&gb(), &b, &goods(dec!(10), dec!(2))), Domestic);
    }
}
