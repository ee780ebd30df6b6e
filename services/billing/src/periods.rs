//! Billing periods: intervals and the period arithmetic of subscriptions (issue 4,
//! "Subscriptions"). Period k of a subscription is `[anchor + k·interval, anchor + (k+1)·interval)`,
//! computed from the anchor each time (never chained), so month-end anchors do not drift:
//! an anchor on Jan 31 gives Feb 28 (29), Mar 31, Apr 30, … (chrono's `checked_add_months`
//! clamps to the month's last day). Arithmetic is in UTC.

use chrono::{DateTime, Days, Months, Utc};
use serde::{Deserialize, Serialize};

/// How often a plan bills.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Interval {
    Week,
    Month,
    Year,
}

impl Interval {
    /// The database spelling (`week`, `month`, `year`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Week => "week",
            Self::Month => "month",
            Self::Year => "year",
        }
    }

    /// Parses the database spelling.
    pub fn parse(raw: &str) -> Option<Self> {
        match raw {
            "week" => Some(Self::Week),
            "month" => Some(Self::Month),
            "year" => Some(Self::Year),
            _ => None,
        }
    }

    /// `anchor` plus `n` intervals; None on overflow.
    pub fn add(self, anchor: DateTime<Utc>, n: u32) -> Option<DateTime<Utc>> {
        match self {
            Self::Week => anchor.checked_add_days(Days::new(7 * u64::from(n))),
            Self::Month => anchor.checked_add_months(Months::new(n)),
            Self::Year => anchor.checked_add_months(Months::new(n.checked_mul(12)?)),
        }
    }

    /// Period `index` of a subscription anchored at `anchor`: `(start, end)`.
    pub fn period(
        self,
        anchor: DateTime<Utc>,
        index: u32,
    ) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        Some((
            self.add(anchor, index)?,
            self.add(anchor, index.checked_add(1)?)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    #[test]
    fn month_end_anchor_clamps_without_drifting() {
        let anchor = at("2026-01-31T10:00:00Z");
        let m = Interval::Month;
        assert_eq!(
            m.period(anchor, 0),
            Some((anchor, at("2026-02-28T10:00:00Z")))
        );
        assert_eq!(
            m.period(anchor, 1),
            Some((at("2026-02-28T10:00:00Z"), at("2026-03-31T10:00:00Z")))
        );
        assert_eq!(m.add(anchor, 3), Some(at("2026-04-30T10:00:00Z")));
    }

    #[test]
    fn weeks_and_years() {
        let anchor = at("2024-02-29T00:00:00Z");
        assert_eq!(
            Interval::Week.add(anchor, 2),
            Some(at("2024-03-14T00:00:00Z"))
        );
        assert_eq!(
            Interval::Year.add(anchor, 1),
            Some(at("2025-02-28T00:00:00Z"))
        );
        assert_eq!(
            Interval::Year.add(anchor, 4),
            Some(at("2028-02-29T00:00:00Z"))
        );
    }
}
