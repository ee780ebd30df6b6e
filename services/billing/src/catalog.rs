//! The plan catalog as tenants write it (issue 4, "Catalog"): a TOML file for
//! `tollgatectl catalog apply` or the same shape as JSON on `PUT /v1/catalog`. Parsing checks
//! everything once (currencies, money precision, charge models, quota limits); applying writes
//! a new immutable plan version only for plans whose definition changed.
//!
//! ```toml
//! [[plans]]
//! code = "pro"
//! name = "Pro"
//! interval = "month"          # week | month | year
//! currency = "USD"
//! base_fee = "49.00"          # major units, as a string; at most the currency's decimals
//! trial_days = 14
//! features = ["export"]
//! requests_per_minute = 600
//! concurrency = 10
//! downgrade_grace_days = 7
//! [[plans.quotas]]
//! metric = "job.*"            # a metric code, or a prefix pattern `x.*`
//! quantity = 5000
//! soft_limit_pct = 100        # past it: allowed, flagged, billed as overage
//! hard_limit_pct = 110        # past it: 402 QUOTA_EXCEEDED
//! [[plans.charges]]
//! metric = "job.*"
//! description = "Jobs"
//! model = "per_unit"          # the pricing engine's charge models
//! unit_price = "0.01"
//! included_units = "5000"
//! ```

use chrono::Utc;
use diesel_async::AsyncConnection;
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use tollgate_pricing::{Charge, Coupon, Currency};
use tollgate_storage::plans::{
    self, Applied, PlanChargeRow, PlanQuotaRow, PlanVersion, PlanVersionRow,
};
use tollgate_storage::{AsyncPgConnection, StorageError};
use uuid::Uuid;

use crate::periods::Interval;

/// A catalog document: plans and coupons.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CatalogDefinition {
    #[serde(default)]
    pub plans: Vec<PlanDefinition>,
    #[serde(default)]
    pub coupons: Vec<Coupon>,
}

/// One plan as written. Serialized back (normalized) as the version's `definition`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanDefinition {
    pub code: String,
    pub name: String,
    pub interval: Interval,
    pub currency: String,
    /// Major units (e.g. "49.00").
    pub base_fee: Decimal,
    #[serde(default)]
    pub trial_days: u32,
    #[serde(default)]
    pub features: Vec<String>,
    /// Jobs running at once per subscription. Stored; not enforced yet.
    #[serde(default)]
    pub concurrency: Option<u32>,
    /// Job submissions per minute per subscription, enforced by job-intake's entitlement gate
    /// (429 `PLAN_RATE_LIMITED`) for tenants that enforce billing.
    #[serde(default)]
    pub requests_per_minute: Option<u32>,
    #[serde(default)]
    pub downgrade_grace_days: u32,
    #[serde(default)]
    pub quotas: Vec<QuotaDefinition>,
    #[serde(default)]
    pub charges: Vec<ChargeDefinition>,
}

/// A quota: `quantity` weighted units of `metric` per billing period.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaDefinition {
    pub metric: String,
    pub quantity: u64,
    #[serde(default = "default_soft_pct")]
    pub soft_limit_pct: u32,
    #[serde(default)]
    pub hard_limit_pct: Option<u32>,
}

fn default_soft_pct() -> u32 {
    100
}

/// A usage charge on one metric (code or `prefix.*`), priced by the pricing engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChargeDefinition {
    pub metric: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(flatten)]
    pub charge: Charge,
}

/// Why a catalog was refused; the message names the plan and field.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("catalog is not valid: {0}")]
    Invalid(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What applying did to one plan.
#[derive(Debug, Clone, Serialize)]
pub struct PlanApplied {
    pub code: String,
    pub version: i32,
    /// False when the definition equalled the current version (nothing written).
    pub created: bool,
}

impl From<diesel::result::Error> for CatalogError {
    fn from(err: diesel::result::Error) -> Self {
        Self::Storage(err.into())
    }
}

fn invalid(msg: String) -> CatalogError {
    CatalogError::Invalid(msg)
}

fn check_code(kind: &str, code: &str, pattern_ok: bool) -> Result<(), CatalogError> {
    let body = if pattern_ok {
        code.strip_suffix(".*").unwrap_or(code)
    } else {
        code
    };
    let ok = !body.is_empty()
        && body.len() <= 64
        && body.starts_with(|c: char| c.is_ascii_lowercase())
        && body
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_.:-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "{kind} `{code}` must match ^[a-z][a-z0-9_.:-]{{0,63}}${}",
            if pattern_ok {
                " (optionally ending in .*)"
            } else {
                ""
            }
        )))
    }
}

impl PlanDefinition {
    /// Checks the plan and builds the version rows for `tenant_id` (id and version number are
    /// assigned when applied). Errors: [`CatalogError::Invalid`] naming the field.
    pub fn to_version(&self, tenant_id: Uuid) -> Result<PlanVersion, CatalogError> {
        let p = &self.code;
        if p.is_empty()
            || p.len() > 64
            || !p.starts_with(|c: char| c.is_ascii_lowercase())
            || !p
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
        {
            return Err(invalid(format!(
                "plan code `{p}` must match ^[a-z][a-z0-9_-]{{0,63}}$"
            )));
        }
        if self.name.trim().is_empty() || self.name.len() > 200 {
            return Err(invalid(format!(
                "plan `{p}`: name must be 1 to 200 characters"
            )));
        }
        let currency =
            Currency::from_code(&self.currency).map_err(|e| invalid(format!("plan `{p}`: {e}")))?;
        let base_fee_minor = exact_minor(self.base_fee, currency).ok_or_else(|| {
            invalid(format!(
                "plan `{p}`: base_fee {} must be >= 0 with at most {} decimals for {}",
                self.base_fee,
                currency.exponent(),
                currency.code()
            ))
        })?;
        if self.trial_days > 365 {
            return Err(invalid(format!(
                "plan `{p}`: trial_days must be at most 365"
            )));
        }
        if self.downgrade_grace_days > 90 {
            return Err(invalid(format!(
                "plan `{p}`: downgrade_grace_days must be at most 90"
            )));
        }
        for feature in &self.features {
            check_code("feature", feature, false)
                .map_err(|e| invalid(format!("plan `{p}`: {e}")))?;
        }
        let positive = |v: Option<u32>, field: &str| -> Result<Option<i32>, CatalogError> {
            match v {
                None => Ok(None),
                Some(0) => Err(invalid(format!("plan `{p}`: {field} must be positive"))),
                Some(n) => i32::try_from(n)
                    .map(Some)
                    .map_err(|_| invalid(format!("plan `{p}`: {field} is too large"))),
            }
        };
        let mut quotas = Vec::with_capacity(self.quotas.len());
        for q in &self.quotas {
            check_code("quota metric", &q.metric, true)
                .map_err(|e| invalid(format!("plan `{p}`: {e}")))?;
            let hard_ok = q
                .hard_limit_pct
                .is_none_or(|h| h >= q.soft_limit_pct && h <= 1000);
            if q.quantity == 0 || !(1..=1000).contains(&q.soft_limit_pct) || !hard_ok {
                return Err(invalid(format!(
                    "plan `{p}`: quota `{}` needs quantity > 0 and 1 <= soft_limit_pct <= hard_limit_pct <= 1000",
                    q.metric
                )));
            }
            if quotas.iter().any(|r: &PlanQuotaRow| r.metric == q.metric) {
                return Err(invalid(format!("plan `{p}`: two quotas on `{}`", q.metric)));
            }
            quotas.push(PlanQuotaRow {
                plan_version_id: Uuid::nil(),
                metric: q.metric.clone(),
                quantity: i64::try_from(q.quantity)
                    .map_err(|_| invalid(format!("plan `{p}`: quota too large")))?,
                soft_pct: q.soft_limit_pct as i32,
                hard_pct: q.hard_limit_pct.map(|h| h as i32),
            });
        }
        let mut charges = Vec::with_capacity(self.charges.len());
        for (position, c) in self.charges.iter().enumerate() {
            check_code("charge metric", &c.metric, true)
                .map_err(|e| invalid(format!("plan `{p}`: {e}")))?;
            c.charge
                .validate()
                .map_err(|e| invalid(format!("plan `{p}`: charge on `{}`: {e}", c.metric)))?;
            if charges.iter().any(|r: &PlanChargeRow| r.metric == c.metric) {
                return Err(invalid(format!(
                    "plan `{p}`: two charges on `{}`",
                    c.metric
                )));
            }
            charges.push(PlanChargeRow {
                plan_version_id: Uuid::nil(),
                metric: c.metric.clone(),
                position: position as i32,
                description: c.description.clone().unwrap_or_else(|| c.metric.clone()),
                charge: serde_json::to_value(&c.charge)
                    .map_err(|e| invalid(format!("plan `{p}`: {e}")))?,
            });
        }
        let definition =
            serde_json::to_value(self).map_err(|e| invalid(format!("plan `{p}`: {e}")))?;
        Ok(PlanVersion {
            version: PlanVersionRow {
                id: Uuid::nil(),
                tenant_id,
                plan_code: self.code.clone(),
                version: 0,
                name: self.name.clone(),
                billing_interval: self.interval.as_str().to_owned(),
                currency: currency.code().to_owned(),
                base_fee_minor,
                trial_days: self.trial_days as i32,
                features: self.features.clone(),
                concurrency: positive(self.concurrency, "concurrency")?,
                requests_per_minute: positive(self.requests_per_minute, "requests_per_minute")?,
                downgrade_grace_days: self.downgrade_grace_days as i32,
                definition,
                created_at: Utc::now(),
            },
            quotas,
            charges,
        })
    }
}

/// `major` in minor units when it is exact (no more decimals than the currency has) and >= 0.
pub fn exact_minor(major: Decimal, currency: Currency) -> Option<i64> {
    if major.is_sign_negative() || major.normalize().scale() > currency.exponent() {
        return None;
    }
    tollgate_pricing::to_minor_units(major, currency).ok()
}

impl CatalogDefinition {
    /// Parses a TOML catalog. Errors name the line and field.
    pub fn from_toml(text: &str) -> Result<Self, CatalogError> {
        toml::from_str(text).map_err(|e| invalid(e.to_string()))
    }

    /// Checks every plan and coupon, and that codes are unique.
    pub fn validate(&self, tenant_id: Uuid) -> Result<Vec<PlanVersion>, CatalogError> {
        let mut versions = Vec::with_capacity(self.plans.len());
        for plan in &self.plans {
            if self.plans.iter().filter(|p| p.code == plan.code).count() > 1 {
                return Err(invalid(format!("plan `{}` appears twice", plan.code)));
            }
            versions.push(plan.to_version(tenant_id)?);
        }
        for coupon in &self.coupons {
            coupon
                .validate()
                .map_err(|e| invalid(format!("coupon `{}`: {e}", coupon.code)))?;
            let ok = !coupon.code.is_empty()
                && coupon.code.len() <= 64
                && coupon
                    .code
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(invalid(format!(
                    "coupon code `{}` must match ^[A-Za-z0-9_-]{{1,64}}$",
                    coupon.code
                )));
            }
        }
        Ok(versions)
    }

    /// Validates, then applies everything in one transaction (all or nothing): a plan whose
    /// definition changed gets a new version; coupons are created or replaced.
    pub async fn apply(
        &self,
        conn: &mut AsyncPgConnection,
        tenant_id: Uuid,
    ) -> Result<Vec<PlanApplied>, CatalogError> {
        let versions = self.validate(tenant_id)?;
        let coupons = self.coupons.clone();
        conn.transaction(async move |conn| {
            let mut out = Vec::with_capacity(versions.len());
            for candidate in versions {
                let (created, v) = match plans::apply_plan(conn, candidate).await? {
                    Applied::Created(v) => (true, v),
                    Applied::Unchanged(v) => (false, v),
                };
                out.push(PlanApplied {
                    code: v.version.plan_code,
                    version: v.version.version,
                    created,
                });
            }
            for coupon in &coupons {
                let json = serde_json::to_value(coupon)
                    .map_err(|e| invalid(format!("coupon `{}`: {e}", coupon.code)))?;
                plans::upsert_coupon(conn, tenant_id, &coupon.code, &json).await?;
            }
            Ok(out)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = include_str!("../../../examples/catalog/plan-gating.toml");

    #[test]
    fn the_shipped_example_catalog_is_valid() {
        let catalog = CatalogDefinition::from_toml(EXAMPLE).expect("parses");
        let versions = catalog.validate(Uuid::nil()).expect("valid");
        let codes: Vec<_> = versions
            .iter()
            .map(|v| v.version.plan_code.as_str())
            .collect();
        assert_eq!(codes, ["free", "pro", "scale"]);
        let pro = &versions[1];
        assert_eq!(pro.version.base_fee_minor, 4900);
        assert!(pro.version.features.contains(&"export".to_owned()));
    }

    #[test]
    fn money_precision_and_quota_limits_are_checked() {
        let mut plan = CatalogDefinition::from_toml(EXAMPLE).expect("parses").plans[1].clone();
        plan.base_fee = Decimal::new(49_001, 3);
        assert!(
            plan.to_version(Uuid::nil()).is_err(),
            "49.001 USD has too many decimals"
        );
        plan.base_fee = Decimal::new(49, 0);
        plan.quotas[0].hard_limit_pct = Some(50);
        assert!(plan.to_version(Uuid::nil()).is_err(), "hard below soft");
        let jpy = exact_minor(
            Decimal::new(1200, 0),
            Currency::from_code("JPY").expect("jpy"),
        );
        assert_eq!(jpy, Some(1200));
        let kwd = exact_minor(
            Decimal::new(1250, 3),
            Currency::from_code("KWD").expect("kwd"),
        );
        assert_eq!(kwd, Some(1250));
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = CatalogDefinition::from_toml("[[plans]]\ncode = \"x\"\nprice = 1\n");
        assert!(err.is_err());
    }
}
