//! Property tests: tier pricing orderings, monotonicity, proration additivity, round trips
//! between minor and major units, and discount clamping.

use chrono::{DateTime, TimeZone, Utc};
use proptest::prelude::*;
use tollgate_pricing::{
    apply_discounts, prorate, rate, to_major_units, to_minor_units, Charge, ChargeModel, Coupon,
    CouponDuration, Currency, Decimal, DiscountKind, RatedCharge, Tier,
};

/// Tier bounds in hundredths of a unit: 1 to 4 strictly ascending positive bounds.
fn bounds() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(1_i64..100_000, 1..=4).prop_map(|steps| {
        steps
            .iter()
            .scan(0_i64, |bound, step| {
                *bound += step;
                Some(*bound)
            })
            .collect()
    })
}

/// `count` unit prices in 0..10 major units with up to 4 decimals, unordered.
fn prices(count: usize) -> impl Strategy<Value = Vec<Decimal>> {
    prop::collection::vec(
        (0_i64..100_000).prop_map(|price| Decimal::new(price, 4)),
        count,
    )
}

/// Bounded tiers at `bounds` (hundredths), then an unbounded one; `prices` has one more entry
/// than `bounds`.
fn tiers(bounds: &[i64], prices: &[Decimal], flat_fees: &[Decimal]) -> Vec<Tier> {
    prices
        .iter()
        .enumerate()
        .map(|(index, &unit_price)| Tier {
            up_to: bounds.get(index).map(|&bound| Decimal::new(bound, 2)),
            unit_price,
            flat_fee: flat_fees.get(index).copied().unwrap_or(Decimal::ZERO),
        })
        .collect()
}

/// Bounds, prices sorted by `order`, and a quantity from 0 to twice the last bound.
fn priced_tiers(order: fn(&mut [Decimal])) -> impl Strategy<Value = (Vec<Tier>, Decimal)> {
    bounds().prop_flat_map(move |bounds| {
        let max_quantity = 2 * bounds.iter().max().copied().unwrap_or(1);
        (prices(bounds.len() + 1), 0_i64..=max_quantity).prop_map(move |(mut prices, quantity)| {
            order(&mut prices);
            (tiers(&bounds, &prices, &[]), Decimal::new(quantity, 2))
        })
    })
}

fn falling(prices: &mut [Decimal]) {
    prices.sort_by(|a, b| b.cmp(a));
}

fn rising(prices: &mut [Decimal]) {
    prices.sort();
}

/// Rates the same tiers and quantity as graduated and as volume.
fn rate_both(tiers: Vec<Tier>, quantity: Decimal) -> (RatedCharge, RatedCharge) {
    let graduated = Charge::new(ChargeModel::Graduated {
        tiers: tiers.clone(),
    });
    let volume = Charge::new(ChargeModel::Volume { tiers });
    (
        rate(&graduated, quantity, Currency::USD).expect("graduated rates"),
        rate(&volume, quantity, Currency::USD).expect("volume rates"),
    )
}

fn currency() -> impl Strategy<Value = Currency> {
    prop::sample::select(vec!["USD", "JPY", "KWD", "CLF", "EUR", "ISK", "BHD"])
        .prop_map(|code| Currency::from_code(code).expect("known currency"))
}

fn epoch_plus(seconds: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(seconds, 0).single().expect("in range")
}

proptest! {
    /// With prices falling tier by tier, volume pricing (all units at the price of the last,
    /// cheapest tier reached) never exceeds graduated pricing.
    #[test]
    fn volume_never_exceeds_graduated_when_prices_fall((tiers, quantity) in priced_tiers(falling)) {
        let (graduated, volume) = rate_both(tiers, quantity);
        prop_assert!(volume.exact_amount <= graduated.exact_amount);
        prop_assert!(volume.amount_minor <= graduated.amount_minor);
    }

    /// With prices rising tier by tier, graduated pricing never exceeds volume pricing.
    #[test]
    fn graduated_never_exceeds_volume_when_prices_rise((tiers, quantity) in priced_tiers(rising)) {
        let (graduated, volume) = rate_both(tiers, quantity);
        prop_assert!(graduated.exact_amount <= volume.exact_amount);
        prop_assert!(graduated.amount_minor <= volume.amount_minor);
    }

    /// Graduated pricing is monotone non-decreasing in quantity, whatever the prices, flat
    /// fees, included units and per-period bounds.
    #[test]
    fn graduated_is_monotone_in_quantity(
        bounds in bounds(),
        prices in prices(5),
        flat_fees in prices(5),
        included in 0_i64..50_000,
        minimum in prop::option::of(0_i64..5_000),
        span in prop::option::of(0_i64..1_000_000),
        quantities in (0_i64..2_000_000, 0_i64..2_000_000),
    ) {
        let count = bounds.len() + 1;
        let mut charge = Charge::new(ChargeModel::Graduated {
            tiers: tiers(&bounds, &prices[..count], &flat_fees[..count]),
        });
        charge.included_units = Decimal::new(included, 2);
        charge.minimum_minor = minimum;
        charge.maximum_minor = span.map(|span| minimum.unwrap_or(0) + span);
        let (low, high) = (quantities.0.min(quantities.1), quantities.0.max(quantities.1));
        let low = rate(&charge, Decimal::new(low, 2), Currency::USD).expect("rates");
        let high = rate(&charge, Decimal::new(high, 2), Currency::USD).expect("rates");
        prop_assert!(low.exact_amount <= high.exact_amount);
        prop_assert!(low.amount_minor <= high.amount_minor);
    }

    /// Prorating the parts of a period split at k instants adds up to the full fee within
    /// half a minor unit per part (each part is rounded once).
    #[test]
    fn prorated_parts_add_up_to_the_full_fee(
        amount in -1_000_000_000_000_i64..1_000_000_000_000,
        start in 946_684_800_i64..4_102_444_800,
        length in 1_i64..=34_214_400, // up to 396 days
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
    ) {
        let mut instants: Vec<i64> = cuts.iter().map(|cut| start + cut.index(length as usize) as i64).collect();
        instants.push(start);
        instants.push(start + length);
        instants.sort_unstable();
        instants.dedup();
        let (period_start, period_end) = (epoch_plus(start), epoch_plus(start + length));
        let full = prorate(amount, period_start, period_end, period_start, period_end).expect("prorates");
        prop_assert_eq!(full, amount);

        let parts = instants.len() as i128 - 1;
        let mut sum = 0_i128;
        for pair in instants.windows(2) {
            let part = prorate(amount, period_start, period_end, epoch_plus(pair[0]), epoch_plus(pair[1])).expect("prorates");
            sum += i128::from(part);
        }
        let error = (sum - i128::from(full)).abs();
        prop_assert!(2 * error <= parts, "sum {} full {} parts {}", sum, full, parts);
    }

    /// Minor → major → minor is the identity for every amount and currency.
    #[test]
    fn minor_units_round_trip_through_major_units(minor in any::<i64>(), currency in currency()) {
        prop_assert_eq!(to_minor_units(to_major_units(minor, currency), currency), Ok(minor));
    }

    /// Rounding an exact major amount moves it by at most half a minor unit.
    #[test]
    fn rounding_moves_by_at_most_half_a_minor_unit(
        mantissa in -100_000_000_000_000_i64..100_000_000_000_000, // fits i64 at exponent 4
        scale in 0_u32..=10,
        currency in currency(),
    ) {
        let exact = Decimal::new(mantissa, scale);
        let minor = to_minor_units(exact, currency).expect("fits");
        let error = (to_major_units(minor, currency) - exact).abs();
        prop_assert!(error * Decimal::TWO <= to_major_units(1, currency));
    }

    /// Discounts never take a subtotal below zero and every line is a reduction.
    #[test]
    fn discounts_stay_between_zero_and_the_subtotal(
        subtotal in -1_000_000_i64..100_000_000,
        kinds in prop::collection::vec(
            prop_oneof![
                (0_i64..=10_000).prop_map(|percent| DiscountKind::Percentage { percent: Decimal::new(percent, 2) }),
                (0_i64..10_000_000).prop_map(|amount_minor| DiscountKind::FixedAmount { amount_minor }),
            ],
            0..6,
        ),
    ) {
        let coupons: Vec<Coupon> = kinds
            .into_iter()
            .enumerate()
            .map(|(index, kind)| Coupon { code: format!("C{index}"), kind, duration: CouponDuration::Once })
            .collect();
        let refs: Vec<&Coupon> = coupons.iter().collect();
        let lines = apply_discounts(subtotal, &refs, Currency::USD).expect("applies");
        prop_assert_eq!(lines.len(), coupons.len());
        prop_assert!(lines.iter().all(|line| line.amount_minor <= 0));
        let discount: i64 = lines.iter().map(|line| line.amount_minor).sum();
        prop_assert!(subtotal.max(0) + discount >= 0);
    }
}
