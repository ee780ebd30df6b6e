//! Acceptance tables for proration by exact seconds and mid-period plan changes.

use chrono::{DateTime, Duration, TimeZone, Utc};
use tollgate_pricing::{plan_change_proration, prorate, PlanChangeProration, PricingError};

/// 30 days in seconds.
const THIRTY_DAYS: i64 = 2_592_000;

/// April 2024: a 30-day period, `[2024-04-01, 2024-05-01)`.
fn april() -> (DateTime<Utc>, DateTime<Utc>) {
    let start = Utc
        .with_ymd_and_hms(2024, 4, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    let end = Utc
        .with_ymd_and_hms(2024, 5, 1, 0, 0, 0)
        .single()
        .expect("valid date");
    assert_eq!((end - start).num_seconds(), THIRTY_DAYS);
    (start, end)
}

#[test]
fn the_whole_period_costs_the_full_fee() {
    let (start, end) = april();
    for amount in [0, 1, 2900, 999_999, -2900] {
        assert_eq!(prorate(amount, start, end, start, end), Ok(amount));
    }
    // Starting on the first second of the period is the full price too, however far `to` reaches.
    assert_eq!(
        prorate(2900, start, end, start, end + Duration::days(40)),
        Ok(2900)
    );
}

#[test]
fn the_last_second_costs_amount_over_seconds_rounded_half_even() {
    let (start, end) = april();
    let last_second = end - Duration::seconds(1);
    let cases = [
        (2900, 0),                    // 0.0011 → 0
        (THIRTY_DAYS, 1),             // exactly 1
        (THIRTY_DAYS / 2, 0),         // 0.5 → 0 (even)
        (3 * THIRTY_DAYS / 2, 2),     // 1.5 → 2 (even)
        (5 * THIRTY_DAYS / 2, 2),     // 2.5 → 2 (even)
        (5 * THIRTY_DAYS / 2 + 1, 3), // just above 2.5 → 3
        (-3 * THIRTY_DAYS / 2, -2),   // credits round symmetrically
    ];
    for (amount, expected) in cases {
        assert_eq!(
            prorate(amount, start, end, last_second, end),
            Ok(expected),
            "amount {amount}"
        );
    }
}

#[test]
fn intervals_are_clipped_to_the_period() {
    let (start, end) = april();
    let days = |n: i64| start + Duration::days(n);
    let cases = [
        (days(0), days(10), 1000),   // first third
        (days(10), days(30), 2000),  // last two thirds
        (days(-5), days(15), 1500),  // starts before the period
        (days(15), days(45), 1500),  // ends after the period
        (days(-10), days(40), 3000), // covers it
        (days(-10), days(0), 0),     // entirely before
        (days(30), days(31), 0),     // entirely after: `end` is exclusive
        (days(7), days(7), 0),       // empty
    ];
    for (from, to, expected) in cases {
        assert_eq!(
            prorate(3000, start, end, from, to),
            Ok(expected),
            "{from} .. {to}"
        );
    }
    // 10 days of 29.99 in a 30-day month: 999.666… → 1000.
    assert_eq!(prorate(2999, start, end, days(0), days(10)), Ok(1000));
}

#[test]
fn sub_second_parts_of_instants_are_dropped() {
    let (start, end) = april();
    let from = start + Duration::days(10) + Duration::milliseconds(999);
    assert_eq!(prorate(3000, start, end, from, end), Ok(2000));
}

#[test]
fn empty_or_reversed_periods_and_intervals_are_refused() {
    let (start, end) = april();
    assert_eq!(
        prorate(3000, start, start, start, end),
        Err(PricingError::InvalidPeriod)
    );
    assert_eq!(
        prorate(3000, end, start, start, end),
        Err(PricingError::InvalidPeriod)
    );
    assert_eq!(
        prorate(3000, start, end, end, start),
        Err(PricingError::InvalidPeriod)
    );
    // Less than one whole second is an empty period.
    assert_eq!(
        prorate(3000, start, start + Duration::milliseconds(500), start, end),
        Err(PricingError::InvalidPeriod)
    );
}

#[test]
fn upgrade_after_ten_days_credits_old_and_charges_new_for_twenty_days() {
    let (start, end) = april();
    let at = start + Duration::days(10);
    assert_eq!(
        plan_change_proration(3000, 6000, start, end, at),
        Ok(PlanChangeProration {
            credit_minor: -2000,
            charge_minor: 4000,
            net_minor: 2000,
            seconds_remaining: 1_728_000,
            seconds_in_period: THIRTY_DAYS,
        })
    );
}

#[test]
fn downgrade_after_ten_days_nets_negative() {
    let (start, end) = april();
    let at = start + Duration::days(10);
    assert_eq!(
        plan_change_proration(6000, 3000, start, end, at),
        Ok(PlanChangeProration {
            credit_minor: -4000,
            charge_minor: 2000,
            net_minor: -2000,
            seconds_remaining: 1_728_000,
            seconds_in_period: THIRTY_DAYS,
        })
    );
}

#[test]
fn plan_change_rounds_credit_and_charge_separately() {
    let (start, end) = april();
    let at = start + Duration::days(10);
    // 999 × 2/3 = 666 exactly; 1999 × 2/3 = 1332.67 → 1333.
    let change = plan_change_proration(999, 1999, start, end, at).expect("prorates");
    assert_eq!(
        (change.credit_minor, change.charge_minor, change.net_minor),
        (-666, 1333, 667)
    );

    // USD 29 → USD 99 twelve hours in: 29 × 2 548 800 / 2 592 000 = 28.5166… cents of credit.
    let change = plan_change_proration(2900, 9900, start, end, start + Duration::hours(12))
        .expect("prorates");
    assert_eq!(change.seconds_remaining, 2_548_800);
    assert_eq!(
        (change.credit_minor, change.charge_minor, change.net_minor),
        (-2852, 9735, 6883)
    );
}

#[test]
fn plan_change_at_the_edges_of_the_period() {
    let (start, end) = april();
    let at_start = plan_change_proration(3000, 6000, start, end, start).expect("prorates");
    assert_eq!(
        (
            at_start.credit_minor,
            at_start.charge_minor,
            at_start.net_minor
        ),
        (-3000, 6000, 3000)
    );
    assert_eq!(at_start.seconds_remaining, THIRTY_DAYS);

    let at_last_second = plan_change_proration(
        THIRTY_DAYS,
        3 * THIRTY_DAYS,
        start,
        end,
        end - Duration::seconds(1),
    )
    .expect("prorates");
    assert_eq!(
        (at_last_second.credit_minor, at_last_second.charge_minor),
        (-1, 3)
    );
    assert_eq!(at_last_second.seconds_remaining, 1);
}

#[test]
fn plan_change_outside_the_period_or_with_negative_fees_is_refused() {
    let (start, end) = april();
    let inside = start + Duration::days(3);
    assert_eq!(
        plan_change_proration(1, 2, start, end, end),
        Err(PricingError::InvalidPeriod)
    );
    assert_eq!(
        plan_change_proration(1, 2, start, end, start - Duration::seconds(1)),
        Err(PricingError::InvalidPeriod)
    );
    assert_eq!(
        plan_change_proration(1, 2, end, start, inside),
        Err(PricingError::InvalidPeriod)
    );
    assert_eq!(
        plan_change_proration(-1, 2, start, end, inside),
        Err(PricingError::NegativeAmount)
    );
    assert_eq!(
        plan_change_proration(1, -2, start, end, inside),
        Err(PricingError::NegativeAmount)
    );
}

#[test]
fn extreme_fees_do_not_overflow() {
    let (start, end) = april();
    let at = start + Duration::days(10);
    let change = plan_change_proration(i64::MAX, i64::MAX, start, end, at).expect("prorates");
    assert_eq!(change.net_minor, 0);
    assert_eq!(prorate(i64::MAX, start, end, start, end), Ok(i64::MAX));
    assert_eq!(prorate(i64::MIN, start, end, start, end), Ok(i64::MIN));
}
