//! ISO 4217 currencies and their minor-unit exponents.
//!
//! The table holds the active ISO 4217 codes that have minor units (list one, as published by
//! the ISO 4217 maintenance agency); funds and metals without an exponent (`XAU`, `XDR`, …)
//! are not currencies an invoice can be issued in and are refused.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::PricingError;

/// An ISO 4217 currency with its minor-unit exponent: USD has 2 (cents), JPY 0, KWD 3 (fils).
///
/// Only [`Currency::from_code`] (or the constants) make one, so a `Currency` is always a known
/// code stored upper-case. Serializes as the 3-letter code (`"USD"`); deserializing an unknown
/// code fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Currency {
    code: &'static str,
    exponent: u32,
}

impl Currency {
    /// US dollar, 2 decimals.
    pub const USD: Currency = Currency {
        code: "USD",
        exponent: 2,
    };
    /// Euro, 2 decimals.
    pub const EUR: Currency = Currency {
        code: "EUR",
        exponent: 2,
    };
    /// Japanese yen, no minor unit.
    pub const JPY: Currency = Currency {
        code: "JPY",
        exponent: 0,
    };
    /// Kuwaiti dinar, 3 decimals (fils).
    pub const KWD: Currency = Currency {
        code: "KWD",
        exponent: 3,
    };

    /// Looks a 3-letter code up, case-insensitively (`"usd"` and `"USD"` are the same).
    ///
    /// Errors: [`PricingError::UnknownCurrency`] with the code as given when it is not in the
    /// table.
    pub fn from_code(code: &str) -> Result<Currency, PricingError> {
        ISO_4217
            .iter()
            .find(|(known, _)| known.eq_ignore_ascii_case(code))
            .map(|&(code, exponent)| Currency { code, exponent })
            .ok_or_else(|| PricingError::UnknownCurrency(code.to_owned()))
    }

    /// The upper-case ISO code, e.g. `"USD"`.
    pub fn code(&self) -> &str {
        self.code
    }

    /// Number of decimals between the major and the minor unit: 2 for USD/EUR, 0 for
    /// JPY/KRW/VND/CLP/ISK…, 3 for BHD/KWD/JOD/OMR/TND/LYD/IQD, 4 for CLF/UYW.
    pub fn exponent(&self) -> u32 {
        self.exponent
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

// Written out rather than derived: the derive would tie `'de` to the `&'static str` field.
impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let code = String::deserialize(deserializer)?;
        Currency::from_code(&code).map_err(serde::de::Error::custom)
    }
}

/// Active ISO 4217 codes with their exponents, sorted by code.
#[rustfmt::skip]
const ISO_4217: &[(&str, u32)] = &[
    ("AED", 2), ("AFN", 2), ("ALL", 2), ("AMD", 2), ("ANG", 2), ("AOA", 2), ("ARS", 2),
    ("AUD", 2), ("AWG", 2), ("AZN", 2), ("BAM", 2), ("BBD", 2), ("BDT", 2), ("BGN", 2),
    ("BHD", 3), ("BIF", 0), ("BMD", 2), ("BND", 2), ("BOB", 2), ("BOV", 2), ("BRL", 2),
    ("BSD", 2), ("BTN", 2), ("BWP", 2), ("BYN", 2), ("BZD", 2), ("CAD", 2), ("CDF", 2),
    ("CHE", 2), ("CHF", 2), ("CHW", 2), ("CLF", 4), ("CLP", 0), ("CNY", 2), ("COP", 2),
    ("COU", 2), ("CRC", 2), ("CUP", 2), ("CVE", 2), ("CZK", 2), ("DJF", 0), ("DKK", 2),
    ("DOP", 2), ("DZD", 2), ("EGP", 2), ("ERN", 2), ("ETB", 2), ("EUR", 2), ("FJD", 2),
    ("FKP", 2), ("GBP", 2), ("GEL", 2), ("GHS", 2), ("GIP", 2), ("GMD", 2), ("GNF", 0),
    ("GTQ", 2), ("GYD", 2), ("HKD", 2), ("HNL", 2), ("HTG", 2), ("HUF", 2), ("IDR", 2),
    ("ILS", 2), ("INR", 2), ("IQD", 3), ("IRR", 2), ("ISK", 0), ("JMD", 2), ("JOD", 3),
    ("JPY", 0), ("KES", 2), ("KGS", 2), ("KHR", 2), ("KMF", 0), ("KPW", 2), ("KRW", 0),
    ("KWD", 3), ("KYD", 2), ("KZT", 2), ("LAK", 2), ("LBP", 2), ("LKR", 2), ("LRD", 2),
    ("LSL", 2), ("LYD", 3), ("MAD", 2), ("MDL", 2), ("MGA", 2), ("MKD", 2), ("MMK", 2),
    ("MNT", 2), ("MOP", 2), ("MRU", 2), ("MUR", 2), ("MVR", 2), ("MWK", 2), ("MXN", 2),
    ("MXV", 2), ("MYR", 2), ("MZN", 2), ("NAD", 2), ("NGN", 2), ("NIO", 2), ("NOK", 2),
    ("NPR", 2), ("NZD", 2), ("OMR", 3), ("PAB", 2), ("PEN", 2), ("PGK", 2), ("PHP", 2),
    ("PKR", 2), ("PLN", 2), ("PYG", 0), ("QAR", 2), ("RON", 2), ("RSD", 2), ("RUB", 2),
    ("RWF", 0), ("SAR", 2), ("SBD", 2), ("SCR", 2), ("SDG", 2), ("SEK", 2), ("SGD", 2),
    ("SHP", 2), ("SLE", 2), ("SOS", 2), ("SRD", 2), ("SSP", 2), ("STN", 2), ("SVC", 2),
    ("SYP", 2), ("SZL", 2), ("THB", 2), ("TJS", 2), ("TMT", 2), ("TND", 3), ("TOP", 2),
    ("TRY", 2), ("TTD", 2), ("TWD", 2), ("TZS", 2), ("UAH", 2), ("UGX", 0), ("USD", 2),
    ("USN", 2), ("UYI", 0), ("UYU", 2), ("UYW", 4), ("UZS", 2), ("VED", 2), ("VES", 2),
    ("VND", 0), ("VUV", 0), ("WST", 2), ("XAF", 0), ("XCD", 2), ("XCG", 2), ("XOF", 0),
    ("XPF", 0), ("YER", 2), ("ZAR", 2), ("ZMW", 2), ("ZWG", 2),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_case_insensitive_and_stored_upper_case() {
        let usd = Currency::from_code("usd").unwrap();
        assert_eq!(usd, Currency::USD);
        assert_eq!(usd.code(), "USD");
        assert_eq!(Currency::from_code("kWd").unwrap(), Currency::KWD);
    }

    #[test]
    fn exponents_follow_iso_4217() {
        #[rustfmt::skip]
        let expected = [
            ("USD", 2), ("EUR", 2), ("JPY", 0), ("KRW", 0), ("VND", 0), ("CLP", 0), ("ISK", 0),
            ("BHD", 3), ("KWD", 3), ("JOD", 3), ("OMR", 3), ("TND", 3), ("LYD", 3), ("IQD", 3),
        ];
        for (code, exponent) in expected {
            assert_eq!(
                Currency::from_code(code).unwrap().exponent(),
                exponent,
                "{code}"
            );
        }
    }

    #[test]
    fn unknown_codes_are_refused() {
        for code in ["", "US", "USDX", "XAU", "ABC", "us d"] {
            assert_eq!(
                Currency::from_code(code),
                Err(PricingError::UnknownCurrency(code.to_owned()))
            );
        }
    }

    #[test]
    fn the_table_is_sorted_upper_case_and_has_no_duplicates() {
        for pair in ISO_4217.windows(2) {
            assert!(pair[0].0 < pair[1].0, "{} before {}", pair[0].0, pair[1].0);
        }
        for (code, _) in ISO_4217 {
            assert!(
                code.len() == 3 && code.bytes().all(|b| b.is_ascii_uppercase()),
                "{code}"
            );
        }
    }

    #[test]
    fn serializes_as_the_code() {
        assert_eq!(serde_json::to_string(&Currency::JPY).unwrap(), r#""JPY""#);
        let eur: Currency = serde_json::from_str(r#""eur""#).unwrap();
        assert_eq!(eur, Currency::EUR);
        assert!(serde_json::from_str::<Currency>(r#""ZZZ""#).is_err());
    }
}
