//! Acceptance tables for coupons (order, clamping, durations) and invoice totals.

use tollgate_pricing::{
    apply_discounts, rate, totals, Charge, ChargeModel, Coupon, CouponDuration, Currency, Decimal,
    DiscountKind, DiscountLine, PricingError, Totals,
};

fn percent(code: &str, percent: &str) -> Coupon {
    Coupon {
        code: code.to_owned(),
        kind: DiscountKind::Percentage {
            percent: percent.parse().expect("valid decimal"),
        },
        duration: CouponDuration::Forever,
    }
}

fn fixed(code: &str, amount_minor: i64) -> Coupon {
    Coupon {
        code: code.to_owned(),
        kind: DiscountKind::FixedAmount { amount_minor },
        duration: CouponDuration::Forever,
    }
}

/// `(code, amount_minor)` of each line, in order.
fn amounts(lines: &[DiscountLine]) -> Vec<(&str, i64)> {
    lines
        .iter()
        .map(|line| (line.code.as_str(), line.amount_minor))
        .collect()
}

#[test]
fn percentages_apply_before_fixed_amounts_whatever_the_given_order() {
    let ten_off = fixed("TENOFF", 1000);
    let twenty = percent("TWENTY", "20");
    // 20 % of 100.00 = 20.00, then 10.00 off what is left (80.00): 70.00 to pay.
    // Fixed first would have been 10.00 + 20 % of 90.00 = 28.00 off.
    for coupons in [[&ten_off, &twenty], [&twenty, &ten_off]] {
        let lines = apply_discounts(10_000, &coupons, Currency::USD).expect("applies");
        assert_eq!(amounts(&lines), [("TWENTY", -2000), ("TENOFF", -1000)]);
    }
}

#[test]
fn percentages_compound_on_the_running_amount_in_the_given_order() {
    let (ten, half) = (percent("TEN", "10"), percent("HALF", "50"));
    let lines = apply_discounts(10_000, &[&ten, &half], Currency::USD).expect("applies");
    assert_eq!(amounts(&lines), [("TEN", -1000), ("HALF", -4500)]);
    let lines = apply_discounts(10_000, &[&half, &ten], Currency::USD).expect("applies");
    assert_eq!(amounts(&lines), [("HALF", -5000), ("TEN", -500)]);
}

#[test]
fn each_percentage_line_rounds_half_even_once() {
    let ten = percent("TEN", "10");
    let cases = [
        (1005, -100),
        (1015, -102),
        (1025, -102),
        (1, 0),
        (5, 0),
        (15, -2),
    ];
    for (subtotal, discount) in cases {
        let lines = apply_discounts(subtotal, &[&ten], Currency::USD).expect("applies");
        assert_eq!(lines[0].amount_minor, discount, "10 % of {subtotal}");
    }
    // 12.5 % of JPY 1100 = 137.5 yen → 138.
    let eighth = percent("EIGHTH", "12.5");
    let lines = apply_discounts(1100, &[&eighth], Currency::JPY).expect("applies");
    assert_eq!(lines[0].amount_minor, -138);
}

#[test]
fn discounts_never_take_the_amount_below_zero() {
    let (big, small, all) = (
        fixed("BIG", 1000),
        fixed("SMALL", 200),
        percent("ALL", "100"),
    );
    let lines = apply_discounts(500, &[&big, &small], Currency::USD).expect("applies");
    assert_eq!(amounts(&lines), [("BIG", -500), ("SMALL", 0)]);

    let lines = apply_discounts(500, &[&small, &all], Currency::USD).expect("applies");
    assert_eq!(amounts(&lines), [("ALL", -500), ("SMALL", 0)]);

    // A credit-only invoice has nothing to discount.
    let lines = apply_discounts(-700, &[&big, &all], Currency::USD).expect("applies");
    assert_eq!(amounts(&lines), [("ALL", 0), ("BIG", 0)]);

    assert_eq!(apply_discounts(500, &[], Currency::USD), Ok(vec![]));
}

#[test]
fn lines_describe_the_coupon_in_the_invoice_currency() {
    let (eighth, ten_off) = (percent("EIGHTH", "12.50"), fixed("TENOFF", 1000));
    let lines = apply_discounts(10_000, &[&ten_off, &eighth], Currency::USD).expect("applies");
    let descriptions: Vec<&str> = lines.iter().map(|line| line.description.as_str()).collect();
    assert_eq!(descriptions, ["12.5% off", "USD 10.00 off"]);

    let lines = apply_discounts(10_000, &[&fixed("YEN", 500)], Currency::JPY).expect("applies");
    assert_eq!(lines[0].description, "JPY 500 off");
    let lines = apply_discounts(10_000, &[&fixed("FILS", 1250)], Currency::KWD).expect("applies");
    assert_eq!(lines[0].description, "KWD 1.250 off");
}

#[test]
fn invalid_coupons_are_refused() {
    let mut blank = fixed("", 100);
    blank.code = "  ".to_owned();
    let mut never = percent("NEVER", "10");
    never.duration = CouponDuration::Repeating { periods: 0 };
    for coupon in [
        percent("TOO_MUCH", "100.5"),
        percent("NEGATIVE", "-1"),
        fixed("NEGATIVE", -1),
        blank,
        never,
    ] {
        assert!(
            matches!(coupon.validate(), Err(PricingError::InvalidDiscount(_))),
            "{coupon:?}"
        );
        assert!(
            matches!(
                apply_discounts(1000, &[&coupon], Currency::USD),
                Err(PricingError::InvalidDiscount(_))
            ),
            "{coupon:?}"
        );
    }
}

#[test]
fn durations_decide_which_periods_a_coupon_applies_in() {
    let with = |duration| Coupon {
        duration,
        ..percent("C", "10")
    };
    let once = with(CouponDuration::Once);
    let three = with(CouponDuration::Repeating { periods: 3 });
    let forever = with(CouponDuration::Forever);
    let periods = [0, 1, 2, 3, 4, 12, u32::MAX];
    let applies = |coupon: &Coupon| periods.map(|period| coupon.applies_in_period(period));
    assert_eq!(
        applies(&once),
        [true, false, false, false, false, false, false]
    );
    assert_eq!(
        applies(&three),
        [true, true, true, false, false, false, false]
    );
    assert_eq!(applies(&forever), [true; 7]);
}

#[test]
fn coupons_serialize_with_type_tags() {
    let json = r#"{"code": "LAUNCH", "kind": {"type": "percentage", "percent": "20"}, "duration": {"type": "repeating", "periods": 3}}"#;
    let coupon: Coupon = serde_json::from_str(json).expect("parses");
    assert_eq!(
        coupon,
        Coupon {
            code: "LAUNCH".to_owned(),
            kind: DiscountKind::Percentage {
                percent: Decimal::from(20)
            },
            duration: CouponDuration::Repeating { periods: 3 },
        }
    );
    let value = serde_json::to_value(&coupon).expect("serializes");
    assert_eq!(value["kind"]["percent"], "20");
    let fixed_once: Coupon = serde_json::from_str(
        r#"{"code": "W", "kind": {"type": "fixed_amount", "amount_minor": 500}, "duration": {"type": "once"}}"#,
    )
    .expect("parses");
    assert_eq!(
        fixed_once,
        Coupon {
            duration: CouponDuration::Once,
            ..fixed("W", 500)
        }
    );
    assert!(serde_json::from_str::<Coupon>(r#"{"code": "X", "kind": {"type": "percentage", "percent": 20}, "duration": {"type": "once"}}"#).is_err());
}

#[test]
fn totals_add_rounded_lines_and_discounts() {
    assert_eq!(
        totals(&[2900, 2010, 1333, -666], &[-1000, -500]),
        Ok(Totals {
            subtotal_minor: 5577,
            discount_minor: -1500,
            total_minor: 4077,
        })
    );
    assert_eq!(
        totals(&[], &[]),
        Ok(Totals {
            subtotal_minor: 0,
            discount_minor: 0,
            total_minor: 0,
        })
    );
}

#[test]
fn totals_report_a_credit_balance_as_negative() {
    // A downgrade's credit larger than the new fee, and no discounts.
    assert_eq!(
        totals(&[-4000, 2000], &[]),
        Ok(Totals {
            subtotal_minor: -2000,
            discount_minor: 0,
            total_minor: -2000,
        })
    );
}

#[test]
fn totals_refuse_positive_discounts_and_overflow() {
    assert!(matches!(
        totals(&[100], &[5]),
        Err(PricingError::InvalidDiscount(_))
    ));
    assert_eq!(totals(&[i64::MAX, 1], &[]), Err(PricingError::Overflow));
    assert_eq!(totals(&[i64::MIN], &[-1]), Err(PricingError::Overflow));
}

#[test]
fn an_invoice_from_usage_to_total() {
    // Plan fee USD 29.00; 51 250 API calls with 1000 included at USD 0.0004; 20 % off, then USD 5 off.
    let mut calls = Charge::new(ChargeModel::PerUnit {
        unit_price: "0.0004".parse().expect("valid decimal"),
    });
    calls.included_units = Decimal::from(1000);
    let usage = rate(&calls, Decimal::from(51_250), Currency::USD).expect("rates");
    assert_eq!(usage.amount_minor, 2010);

    let lines = [2900, usage.amount_minor];
    let subtotal = totals(&lines, &[]).expect("adds").subtotal_minor;
    let (launch, five_off) = (percent("LAUNCH", "20"), fixed("FIVE", 500));
    let discounts =
        apply_discounts(subtotal, &[&five_off, &launch], Currency::USD).expect("applies");
    assert_eq!(amounts(&discounts), [("LAUNCH", -982), ("FIVE", -500)]);

    let discount_amounts: Vec<i64> = discounts.iter().map(|line| line.amount_minor).collect();
    assert_eq!(
        totals(&lines, &discount_amounts),
        Ok(Totals {
            subtotal_minor: 4910,
            discount_minor: -1482,
            total_minor: 3428,
        })
    );
}
