//! Acceptance tables for `rate`: every charge model, tier boundaries, included units,
//! per-period minimum and maximum, zero-, two- and three-decimal currencies, half-even ties.

use tollgate_pricing::{
    rate, Charge, ChargeModel, Currency, Decimal, MinMaxAdjustment, PricingError, Tier,
    TierBreakdown,
};

fn d(text: &str) -> Decimal {
    text.parse().expect("test decimals are valid")
}

fn tier(up_to: Option<&str>, unit_price: &str, flat_fee: &str) -> Tier {
    Tier {
        up_to: up_to.map(d),
        unit_price: d(unit_price),
        flat_fee: d(flat_fee),
    }
}

/// Rates each `(quantity, exact major amount, minor amount)` row and checks both amounts.
fn assert_table(charge: &Charge, currency: Currency, rows: &[(&str, &str, i64)]) {
    for &(quantity, exact, minor) in rows {
        let rated = rate(charge, d(quantity), currency).expect("rates");
        assert_eq!(
            rated.exact_amount,
            d(exact),
            "exact amount for quantity {quantity}"
        );
        assert_eq!(
            rated.amount_minor, minor,
            "minor amount for quantity {quantity}"
        );
    }
}

#[test]
fn per_unit_prices_fractional_units_and_rounds_once() {
    let charge = Charge::new(ChargeModel::PerUnit {
        unit_price: d("0.0004"),
    });
    assert_table(
        &charge,
        Currency::USD,
        &[
            ("0", "0", 0),
            ("1", "0.0004", 0),
            ("12", "0.0048", 0),
            ("13", "0.0052", 1),
            ("12500", "5.0000", 500),
            ("51250", "20.5000", 2050),
            // 1 000 001 calls: 400.0004 USD, not 1 000 001 roundings of 0.04 cents.
            ("1000001", "400.0004", 40000),
        ],
    );
    let rated = rate(&charge, d("12500"), Currency::USD).expect("rates");
    assert_eq!(rated.unit_price, Some(d("0.0004")));
    assert!(rated.tiers.is_empty());
    assert_eq!(rated.adjustment, None);
}

#[test]
fn ties_round_to_the_even_minor_unit() {
    let charge = Charge::new(ChargeModel::PerUnit {
        unit_price: d("0.0005"),
    });
    assert_table(
        &charge,
        Currency::USD,
        &[
            ("10", "0.0050", 0), // 0.5 cent → 0
            ("30", "0.0150", 2), // 1.5 cents → 2
            ("50", "0.0250", 2), // 2.5 cents → 2
            ("70", "0.0350", 4), // 3.5 cents → 4
            ("71", "0.0355", 4), // 3.55 cents → 4 (not a tie)
            ("90", "0.0450", 4), // 4.5 cents → 4
        ],
    );
}

#[test]
fn zero_decimal_currency_rounds_to_whole_yen() {
    let charge = Charge::new(ChargeModel::PerUnit {
        unit_price: d("0.5"),
    });
    assert_table(
        &charge,
        Currency::JPY,
        &[
            ("0", "0", 0),
            ("1", "0.5", 0),
            ("3", "1.5", 2),
            ("5", "2.5", 2),
            ("7", "3.5", 4),
            ("2400", "1200.0", 1200),
        ],
    );
    let krw = Currency::from_code("KRW").expect("known");
    let per_call = Charge::new(ChargeModel::PerUnit {
        unit_price: d("1.2"),
    });
    assert_table(&per_call, krw, &[("1000", "1200.0", 1200), ("1", "1.2", 1)]);
}

#[test]
fn three_decimal_currency_rounds_to_fils() {
    let charge = Charge::new(ChargeModel::PerUnit {
        unit_price: d("0.0125"),
    });
    assert_table(
        &charge,
        Currency::KWD,
        &[
            ("1", "0.0125", 12), // 12.5 fils → 12
            ("3", "0.0375", 38), // 37.5 fils → 38
            ("100", "1.2500", 1250),
        ],
    );
    let bhd = Currency::from_code("bhd").expect("known");
    assert_table(&charge, bhd, &[("1", "0.0125", 12)]);
}

/// 0..=1000 free, 1001..=10000 at 0.01, above at 0.005.
fn graduated() -> Charge {
    Charge::new(ChargeModel::Graduated {
        tiers: vec![
            tier(Some("1000"), "0", "0"),
            tier(Some("10000"), "0.01", "0"),
            tier(None, "0.005", "0"),
        ],
    })
}

#[test]
fn graduated_prices_each_unit_by_its_tier() {
    assert_table(
        &graduated(),
        Currency::USD,
        &[
            ("0", "0", 0),
            ("500", "0", 0),
            ("1000", "0", 0),          // equal to up_to: still the free tier
            ("1001", "0.01", 1),       // one above: 1 unit in tier 2
            ("10000", "90.00", 9000),  // 9000 × 0.01
            ("10001", "90.005", 9000), // 9000.5 cents → 9000 (half-even)
            ("10003", "90.015", 9002), // 9001.5 cents → 9002
            ("25000", "165.000", 16500),
        ],
    );
}

#[test]
fn graduated_breakdown_has_one_row_per_tier_touched() {
    let rated = rate(&graduated(), d("25000"), Currency::USD).expect("rates");
    assert_eq!(
        rated.tiers,
        vec![
            TierBreakdown {
                from: d("0"),
                up_to: Some(d("1000")),
                quantity: d("1000"),
                unit_price: d("0"),
                flat_fee: d("0"),
                amount: d("0"),
            },
            TierBreakdown {
                from: d("1000"),
                up_to: Some(d("10000")),
                quantity: d("9000"),
                unit_price: d("0.01"),
                flat_fee: d("0"),
                amount: d("90.00"),
            },
            TierBreakdown {
                from: d("10000"),
                up_to: None,
                quantity: d("15000"),
                unit_price: d("0.005"),
                flat_fee: d("0"),
                amount: d("75.000"),
            },
        ]
    );
    assert_eq!(rated.unit_price, None, "mixed prices");

    let at_boundary = rate(&graduated(), d("1000"), Currency::USD).expect("rates");
    assert_eq!(at_boundary.tiers.len(), 1);
    assert_eq!(at_boundary.unit_price, Some(d("0")));

    let zero = rate(&graduated(), d("0"), Currency::USD).expect("rates");
    assert!(zero.tiers.is_empty());
    assert_eq!(zero.unit_price, None);
}

#[test]
fn graduated_flat_fee_is_charged_once_per_tier_used_and_not_at_zero() {
    let charge = Charge::new(ChargeModel::Graduated {
        tiers: vec![tier(Some("100"), "0.10", "5"), tier(None, "0.05", "10")],
    });
    assert_table(
        &charge,
        Currency::USD,
        &[
            ("0", "0", 0),
            ("1", "5.10", 510),
            ("100", "15.00", 1500),
            ("101", "25.05", 2505),
            ("200", "30.00", 3000),
        ],
    );
}

/// Up to 1000 at 0.02, up to 10000 at 0.015, above at 0.01, every unit at one price.
fn volume() -> Charge {
    Charge::new(ChargeModel::Volume {
        tiers: vec![
            tier(Some("1000"), "0.02", "0"),
            tier(Some("10000"), "0.015", "0"),
            tier(None, "0.01", "0"),
        ],
    })
}

#[test]
fn volume_prices_all_units_at_the_tier_of_the_total() {
    assert_table(
        &volume(),
        Currency::USD,
        &[
            ("0", "0", 0),
            ("1", "0.02", 2),
            ("1000", "20.00", 2000),  // equal to up_to: first tier
            ("1001", "15.015", 1502), // one above: all at 0.015; 1501.5 → 1502
            ("10000", "150.000", 15000),
            ("10001", "100.01", 10001), // cheaper than 10000 units: that is volume pricing
        ],
    );
    let rated = rate(&volume(), d("1001"), Currency::USD).expect("rates");
    assert_eq!(rated.unit_price, Some(d("0.015")));
    assert_eq!(
        rated.tiers,
        vec![TierBreakdown {
            from: d("1000"),
            up_to: Some(d("10000")),
            quantity: d("1001"),
            unit_price: d("0.015"),
            flat_fee: d("0"),
            amount: d("15.015"),
        }]
    );
    let zero = rate(&volume(), d("0"), Currency::USD).expect("rates");
    assert!(zero.tiers.is_empty());
    assert_eq!(zero.unit_price, None);
}

#[test]
fn volume_flat_fee_is_the_applied_tier_s_and_not_charged_at_zero() {
    let charge = Charge::new(ChargeModel::Volume {
        tiers: vec![tier(Some("100"), "0.10", "5"), tier(None, "0.05", "10")],
    });
    assert_table(
        &charge,
        Currency::USD,
        &[
            ("0", "0", 0),
            ("100", "15.00", 1500),
            ("101", "15.05", 1505),
        ],
    );
}

#[test]
fn package_charges_every_started_package() {
    let charge = Charge::new(ChargeModel::Package {
        package_size: 100,
        package_price: d("5"),
    });
    assert_table(
        &charge,
        Currency::USD,
        &[
            ("0", "0", 0),
            ("1", "5", 500),
            ("100", "5", 500),   // exact multiple
            ("101", "10", 1000), // one over
            ("200", "10", 1000),
            ("100.5", "10", 1000),
        ],
    );
    assert_eq!(
        rate(&charge, d("101"), Currency::USD)
            .expect("rates")
            .unit_price,
        None
    );
}

#[test]
fn percentage_takes_a_share_of_the_volume_plus_a_fixed_fee_when_used() {
    let charge = Charge::new(ChargeModel::Percentage {
        rate: d("2.9"),
        fixed_fee: Some(d("0.30")),
    });
    assert_table(
        &charge,
        Currency::USD,
        &[
            ("0", "0", 0), // no fixed fee without volume
            ("100.00", "3.2000", 320),
            ("12.34", "0.657860", 66),
            ("0.01", "0.300290", 30),
        ],
    );
    let no_fee = Charge::new(ChargeModel::Percentage {
        rate: d("1.5"),
        fixed_fee: None,
    });
    assert_table(
        &no_fee,
        Currency::USD,
        &[("1000", "15", 1500), ("1", "0.015", 2)],
    );
    // 1.5 % of JPY 100 = 1.5 yen → 2 (half-even).
    assert_table(&no_fee, Currency::JPY, &[("100", "1.5", 2)]);
}

#[test]
fn included_units_are_free_and_only_the_overage_is_priced() {
    let mut charge = Charge::new(ChargeModel::PerUnit {
        unit_price: d("0.01"),
    });
    charge.included_units = d("1000");
    for (quantity, billable, minor) in [
        ("0", "0", 0),
        ("999", "0", 0),
        ("1000", "0", 0),
        ("1001", "1", 1),
        ("1500", "500", 500),
    ] {
        let rated = rate(&charge, d(quantity), Currency::USD).expect("rates");
        assert_eq!(rated.quantity, d(quantity));
        assert_eq!(
            rated.billable_quantity,
            d(billable),
            "billable for {quantity}"
        );
        assert_eq!(rated.amount_minor, minor, "amount for {quantity}");
    }

    // With tiers the allowance comes off before the first tier.
    let mut tiered = graduated();
    tiered.included_units = d("500");
    assert_table(
        &tiered,
        Currency::USD,
        &[
            ("1500", "0", 0),
            ("1501", "0.01", 1),
            ("10500", "90.00", 9000),
        ],
    );
}

#[test]
fn minimum_and_maximum_clamp_the_rounded_amount_per_period() {
    let mut charge = Charge::new(ChargeModel::PerUnit {
        unit_price: d("0.01"),
    });
    charge.minimum_minor = Some(500);
    charge.maximum_minor = Some(2000);
    let cases = [
        ("0", 0, 500, Some(MinMaxAdjustment::Minimum)), // the minimum applies at zero usage
        ("100", 100, 500, Some(MinMaxAdjustment::Minimum)),
        ("500", 500, 500, None),
        ("1000", 1000, 1000, None),
        ("2000", 2000, 2000, None),
        ("50000", 50000, 2000, Some(MinMaxAdjustment::Maximum)),
    ];
    for (quantity, rounded, amount, adjustment) in cases {
        let rated = rate(&charge, d(quantity), Currency::USD).expect("rates");
        assert_eq!(rated.rounded_minor, rounded, "rounded for {quantity}");
        assert_eq!(rated.amount_minor, amount, "amount for {quantity}");
        assert_eq!(rated.adjustment, adjustment, "adjustment for {quantity}");
    }
    // The exact amount is reported before the clamp.
    assert_eq!(
        rate(&charge, d("50000"), Currency::USD)
            .expect("rates")
            .exact_amount,
        d("500.00")
    );

    // Bounds are minor units of the invoice currency: JPY 1000 minimum is 1000 yen.
    let mut yen = Charge::new(ChargeModel::PerUnit { unit_price: d("1") });
    yen.minimum_minor = Some(1000);
    assert_eq!(
        rate(&yen, d("10"), Currency::JPY)
            .expect("rates")
            .amount_minor,
        1000
    );
}

#[test]
fn negative_quantity_is_refused() {
    assert_eq!(
        rate(&graduated(), d("-1"), Currency::USD),
        Err(PricingError::NegativeQuantity)
    );
}

#[test]
fn invalid_charges_are_refused_by_validate_and_rate() {
    let per_unit = |price: &str| {
        Charge::new(ChargeModel::PerUnit {
            unit_price: d(price),
        })
    };
    let graduated_with = |tiers: Vec<Tier>| Charge::new(ChargeModel::Graduated { tiers });
    let volume_with = |tiers: Vec<Tier>| Charge::new(ChargeModel::Volume { tiers });
    let mut min_above_max = per_unit("1");
    min_above_max.minimum_minor = Some(10);
    min_above_max.maximum_minor = Some(9);
    let mut negative_minimum = per_unit("1");
    negative_minimum.minimum_minor = Some(-1);
    let mut negative_included = per_unit("1");
    negative_included.included_units = d("-1");

    let invalid = [
        ("negative unit price", per_unit("-0.01")),
        ("no tiers", graduated_with(vec![])),
        (
            "last tier bounded",
            graduated_with(vec![tier(Some("10"), "1", "0")]),
        ),
        (
            "unbounded tier before the last",
            volume_with(vec![tier(None, "1", "0"), tier(None, "1", "0")]),
        ),
        (
            "descending tiers",
            graduated_with(vec![
                tier(Some("10"), "1", "0"),
                tier(Some("5"), "1", "0"),
                tier(None, "1", "0"),
            ]),
        ),
        (
            "repeated bound",
            volume_with(vec![
                tier(Some("10"), "1", "0"),
                tier(Some("10"), "1", "0"),
                tier(None, "1", "0"),
            ]),
        ),
        (
            "zero bound",
            graduated_with(vec![tier(Some("0"), "1", "0"), tier(None, "1", "0")]),
        ),
        (
            "negative tier price",
            graduated_with(vec![tier(None, "-1", "0")]),
        ),
        (
            "negative flat fee",
            volume_with(vec![tier(None, "1", "-1")]),
        ),
        (
            "zero package size",
            Charge::new(ChargeModel::Package {
                package_size: 0,
                package_price: d("1"),
            }),
        ),
        (
            "negative package price",
            Charge::new(ChargeModel::Package {
                package_size: 1,
                package_price: d("-1"),
            }),
        ),
        (
            "rate above 100",
            Charge::new(ChargeModel::Percentage {
                rate: d("100.01"),
                fixed_fee: None,
            }),
        ),
        (
            "negative fixed fee",
            Charge::new(ChargeModel::Percentage {
                rate: d("1"),
                fixed_fee: Some(d("-0.30")),
            }),
        ),
        ("minimum above maximum", min_above_max),
        ("negative minimum", negative_minimum),
        ("negative included units", negative_included),
    ];
    for (name, charge) in invalid {
        assert!(
            matches!(charge.validate(), Err(PricingError::InvalidCharge(_))),
            "{name} must be invalid"
        );
        assert!(
            matches!(
                rate(&charge, d("1"), Currency::USD),
                Err(PricingError::InvalidCharge(_))
            ),
            "{name} must not rate"
        );
    }
    assert_eq!(graduated().validate(), Ok(()));
    assert_eq!(volume().validate(), Ok(()));
}

#[test]
fn amounts_beyond_i64_minor_units_overflow() {
    let charge = Charge::new(ChargeModel::PerUnit {
        unit_price: d("1000000"),
    });
    assert_eq!(
        rate(&charge, d("1000000000000000"), Currency::USD),
        Err(PricingError::Overflow)
    );
}

#[test]
fn charges_serialize_flat_with_a_model_tag_and_string_decimals() {
    let json = r#"{
        "model": "graduated",
        "tiers": [
            {"up_to": "1000", "unit_price": "0"},
            {"up_to": null, "unit_price": "0.0004", "flat_fee": "2.50"}
        ],
        "included_units": "100",
        "minimum_minor": 500
    }"#;
    let charge: Charge = serde_json::from_str(json).expect("parses");
    assert_eq!(
        charge,
        Charge {
            model: ChargeModel::Graduated {
                tiers: vec![tier(Some("1000"), "0", "0"), tier(None, "0.0004", "2.50")],
            },
            included_units: d("100"),
            minimum_minor: Some(500),
            maximum_minor: None,
        }
    );
    let value = serde_json::to_value(&charge).expect("serializes");
    assert_eq!(value["model"], "graduated");
    assert_eq!(value["tiers"][1]["unit_price"], "0.0004");
    assert_eq!(value["included_units"], "100");
    let back: Charge = serde_json::from_value(value).expect("round-trips");
    assert_eq!(back, charge);

    let per_unit: Charge =
        serde_json::from_str(r#"{"model": "per_unit", "unit_price": "0.0004"}"#).expect("parses");
    assert_eq!(
        per_unit,
        Charge::new(ChargeModel::PerUnit {
            unit_price: d("0.0004")
        })
    );
    let package: Charge =
        serde_json::from_str(r#"{"model": "package", "package_size": 100, "package_price": "5"}"#)
            .expect("parses");
    assert_eq!(
        package.model,
        ChargeModel::Package {
            package_size: 100,
            package_price: d("5")
        }
    );
    let percentage: Charge =
        serde_json::from_str(r#"{"model": "percentage", "rate": "2.9"}"#).expect("parses");
    assert_eq!(
        percentage.model,
        ChargeModel::Percentage {
            rate: d("2.9"),
            fixed_fee: None
        }
    );
}

#[test]
fn charge_json_refuses_floats_unknown_fields_and_models() {
    for json in [
        r#"{"model": "per_unit", "unit_price": 0.0004}"#,
        r#"{"model": "per_unit", "unit_price": "0.0004", "colour": "blue"}"#,
        r#"{"model": "per_unit", "price": "0.0004"}"#,
        r#"{"model": "flat", "unit_price": "1"}"#,
        r#"{"model": "volume", "tiers": [{"up_to": null, "unit_price": "1", "extra": 1}]}"#,
    ] {
        assert!(
            serde_json::from_str::<Charge>(json).is_err(),
            "{json} must be refused"
        );
    }
}
