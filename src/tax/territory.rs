//! VAT territories: which country code (and, where it matters, which postcode) is inside the UK
//! VAT area, inside the EU VAT area, or outside both (tax.md 2.1 rule 1 and 2.5).
//!
//! - The Isle of Man (`IM`) is UK VAT territory (HMRC VATPOSG2300); Jersey, Guernsey and Gibraltar
//!   (`JE`, `GG`, `GI`) are outside both.
//! - Magento reports Northern Ireland as `GB`; a `BT` postcode marks it. For goods, Northern
//!   Ireland follows EU rules under the Windsor Framework.
//! - Monaco (`MC`) is treated as France, so inside the EU VAT area.
//! - EU special territories outside EU VAT: the Canary Islands (ES postcodes 35xxx and 38xxx),
//!   Ceuta (51xxx) and Melilla (52xxx), Åland (`AX`, or FI postcodes 22xxx), the French overseas
//!   departments (`GP`, `MQ`, `GF`, `RE`, `YT`, or FR postcodes 971–976), Saint-Martin and
//!   Saint-Barthélemy (`MF`, `BL`), Mount Athos (GR postcodes 630 86 and 630 87), Heligoland
//!   (DE 27498), Büsingen (DE 78266), Livigno (IT 23041) and Campione d'Italia (IT 22061).
//!   The postcode list is the one tax.md 2.5 flags as to be verified against the EU list.

/// The 27 EU member states (ISO 3166-1 alpha-2; Greece is `GR`, as Magento sends it).
pub const EU_MEMBERS: [&str; 27] = [
    "AT", "BE", "BG", "CY", "CZ", "DE", "DK", "EE", "ES", "FI", "FR", "GR", "HR", "HU", "IE", "IT", "LT", "LU", "LV",
    "MT", "NL", "PL", "PT", "RO", "SE", "SI", "SK",
];

/// The VAT area a destination belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VatArea {
    /// Great Britain and the Isle of Man.
    GreatBritain,
    /// Northern Ireland: UK VAT, EU rules for goods.
    NorthernIreland,
    /// Inside the EU VAT area, in this member state.
    Eu(&'static str),
    /// Outside both (third countries and special territories).
    Outside,
}

/// Normalises a postcode for prefix tests: upper case, no spaces.
fn compact(postcode: Option<&str>) -> String {
    postcode.unwrap_or("").chars().filter(|c| !c.is_whitespace()).collect::<String>().to_uppercase()
}

/// The VAT area of a country code and postcode.
pub fn vat_area(country: &str, postcode: Option<&str>) -> VatArea {
    let cc = country.trim().to_ascii_uppercase();
    let pc = compact(postcode);
    match cc.as_str() {
        "GB" | "UK" if pc.starts_with("BT") => VatArea::NorthernIreland,
        "GB" | "UK" | "IM" => VatArea::GreatBritain,
        "XI" => VatArea::NorthernIreland,
        "MC" => VatArea::Eu("FR"),
        "AX" | "GP" | "MQ" | "GF" | "RE" | "YT" | "MF" | "BL" => VatArea::Outside,
        "ES" if ["35", "38", "51", "52"].iter().any(|p| pc.starts_with(p)) => VatArea::Outside,
        "FI" if pc.starts_with("22") => VatArea::Outside,
        "FR" if ["971", "972", "973", "974", "976"].iter().any(|p| pc.starts_with(p)) => VatArea::Outside,
        "GR" | "EL" if pc == "63086" || pc == "63087" => VatArea::Outside,
        "DE" if pc == "27498" || pc == "78266" => VatArea::Outside,
        "IT" if pc == "23041" || pc == "22061" || pc == "22060" => VatArea::Outside,
        "EL" => VatArea::Eu("GR"),
        other => match EU_MEMBERS.iter().find(|m| **m == other) {
            Some(m) => VatArea::Eu(m),
            None => VatArea::Outside,
        },
    }
}

/// True when `country` is an EU member state code.
pub fn is_eu_member(country: &str) -> bool {
    EU_MEMBERS.contains(&country.trim().to_ascii_uppercase().as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uk_areas() {
        assert_eq!(vat_area("GB", Some("SW1A 1AA")), VatArea::GreatBritain);
        assert_eq!(vat_area("GB", Some("bt1 5gs")), VatArea::NorthernIreland);
        assert_eq!(vat_area("IM", Some("IM1 1AA")), VatArea::GreatBritain);
        assert_eq!(vat_area("JE", None), VatArea::Outside);
        assert_eq!(vat_area("GG", None), VatArea::Outside);
        assert_eq!(vat_area("GI", None), VatArea::Outside);
    }

    #[test]
    fn eu_and_special_territories() {
        assert_eq!(vat_area("DE", Some("10115")), VatArea::Eu("DE"));
        assert_eq!(vat_area("ES", Some("28001")), VatArea::Eu("ES"));
        assert_eq!(vat_area("ES", Some("35001")), VatArea::Outside, "Las Palmas, Canary Islands");
        assert_eq!(vat_area("ES", Some("38001")), VatArea::Outside, "Santa Cruz de Tenerife");
        assert_eq!(vat_area("FR", Some("97100")), VatArea::Outside, "Guadeloupe");
        assert_eq!(vat_area("FR", Some("75001")), VatArea::Eu("FR"));
        assert_eq!(vat_area("MC", Some("98000")), VatArea::Eu("FR"));
        assert_eq!(vat_area("AX", None), VatArea::Outside);
        assert_eq!(vat_area("DE", Some("27498")), VatArea::Outside, "Heligoland");
        assert_eq!(vat_area("US", Some("10001")), VatArea::Outside);
        assert_eq!(vat_area("CH", None), VatArea::Outside);
        assert!(is_eu_member("ie") && !is_eu_member("GB"));
    }
}
