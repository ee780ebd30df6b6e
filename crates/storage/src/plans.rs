//! The versioned plan catalog (issue 4, "Catalog"): plans, their immutable versions with
//! quotas and usage charges, and coupons. Applying a definition writes a new version only
//! when it differs from the current one, so existing subscribers keep what they signed up for.

use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use uuid::Uuid;

use crate::schema::{coupons, plan_charges, plan_quotas, plan_versions, plans};
use crate::StorageError;

/// One immutable plan version. Money is minor units of `currency`.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = plan_versions)]
pub struct PlanVersionRow {
    pub id: Uuid,
    pub tenant_id: Uuid,
    pub plan_code: String,
    pub version: i32,
    pub name: String,
    /// `week`, `month` or `year`.
    pub billing_interval: String,
    /// ISO 4217 code.
    pub currency: String,
    pub base_fee_minor: i64,
    pub trial_days: i32,
    pub features: Vec<String>,
    pub concurrency: Option<i32>,
    pub requests_per_minute: Option<i32>,
    pub downgrade_grace_days: i32,
    /// The normalized definition this version was applied from.
    pub definition: serde_json::Value,
    pub created_at: DateTime<Utc>,
}

/// A quota of a plan version: `quantity` units of `metric` (a code or `prefix.*`) per period.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = plan_quotas)]
pub struct PlanQuotaRow {
    pub plan_version_id: Uuid,
    pub metric: String,
    pub quantity: i64,
    /// Percent of `quantity` past which usage is flagged (and billed as overage).
    pub soft_pct: i32,
    /// Percent of `quantity` past which intake refuses (402); None = no hard limit.
    pub hard_pct: Option<i32>,
}

/// A usage charge of a plan version; `charge` is the pricing engine's `Charge` as JSON.
#[derive(Debug, Clone, PartialEq, Queryable, Selectable, Insertable)]
#[diesel(table_name = plan_charges)]
pub struct PlanChargeRow {
    pub plan_version_id: Uuid,
    pub metric: String,
    pub position: i32,
    pub description: String,
    pub charge: serde_json::Value,
}

/// A plan version with its quotas and charges (charges in `position` order).
#[derive(Debug, Clone, PartialEq)]
pub struct PlanVersion {
    pub version: PlanVersionRow,
    pub quotas: Vec<PlanQuotaRow>,
    pub charges: Vec<PlanChargeRow>,
}

/// What [`apply_plan`] did.
#[derive(Debug, Clone)]
pub enum Applied {
    /// A new version was written (the first, or the definition changed).
    Created(PlanVersion),
    /// The definition equals the current version's; nothing was written.
    Unchanged(PlanVersion),
}

/// Applies a plan definition: writes `candidate` as the next version of its plan when its
/// `definition` differs from the current version's. `candidate.version.version` and `id` are
/// assigned here. Call inside a transaction; the plan row is locked so two applies of one plan
/// cannot both write version N.
pub async fn apply_plan(
    conn: &mut AsyncPgConnection,
    mut candidate: PlanVersion,
) -> Result<Applied, StorageError> {
    let tenant_id = candidate.version.tenant_id;
    let code = candidate.version.plan_code.clone();
    let current: Option<i32> = plans::table
        .find((tenant_id, &code))
        .select(plans::current_version)
        .for_update()
        .first(conn)
        .await
        .optional()?;
    if let Some(current) = current {
        let existing = version_by_number(conn, tenant_id, &code, current)
            .await?
            .ok_or(StorageError::NotFound)?;
        if existing.version.definition == candidate.version.definition {
            return Ok(Applied::Unchanged(existing));
        }
    }
    let next = current.unwrap_or(0) + 1;
    let id = Uuid::now_v7();
    candidate.version.id = id;
    candidate.version.version = next;
    for quota in &mut candidate.quotas {
        quota.plan_version_id = id;
    }
    for charge in &mut candidate.charges {
        charge.plan_version_id = id;
    }
    diesel::insert_into(plans::table)
        .values((
            plans::tenant_id.eq(tenant_id),
            plans::code.eq(&code),
            plans::current_version.eq(next),
        ))
        .on_conflict((plans::tenant_id, plans::code))
        .do_update()
        .set((
            plans::current_version.eq(next),
            plans::updated_at.eq(Utc::now()),
        ))
        .execute(conn)
        .await?;
    diesel::insert_into(plan_versions::table)
        .values(&candidate.version)
        .execute(conn)
        .await?;
    if !candidate.quotas.is_empty() {
        diesel::insert_into(plan_quotas::table)
            .values(&candidate.quotas)
            .execute(conn)
            .await?;
    }
    if !candidate.charges.is_empty() {
        diesel::insert_into(plan_charges::table)
            .values(&candidate.charges)
            .execute(conn)
            .await?;
    }
    Ok(Applied::Created(candidate))
}

async fn version_by_number(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    code: &str,
    number: i32,
) -> Result<Option<PlanVersion>, StorageError> {
    let id: Option<Uuid> = plan_versions::table
        .filter(plan_versions::tenant_id.eq(tenant_id))
        .filter(plan_versions::plan_code.eq(code))
        .filter(plan_versions::version.eq(number))
        .select(plan_versions::id)
        .first(conn)
        .await
        .optional()?;
    match id {
        Some(id) => plan_version(conn, id).await,
        None => Ok(None),
    }
}

/// The current version of a tenant's plan, or None when the plan does not exist.
pub async fn current_version(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    code: &str,
) -> Result<Option<PlanVersion>, StorageError> {
    let current: Option<i32> = plans::table
        .find((tenant_id, code))
        .select(plans::current_version)
        .first(conn)
        .await
        .optional()?;
    match current {
        Some(n) => version_by_number(conn, tenant_id, code, n).await,
        None => Ok(None),
    }
}

/// One plan version by id, with its quotas and charges.
pub async fn plan_version(
    conn: &mut AsyncPgConnection,
    id: Uuid,
) -> Result<Option<PlanVersion>, StorageError> {
    let Some(version) = plan_versions::table
        .find(id)
        .select(PlanVersionRow::as_select())
        .first(conn)
        .await
        .optional()?
    else {
        return Ok(None);
    };
    let quotas = plan_quotas::table
        .filter(plan_quotas::plan_version_id.eq(id))
        .order(plan_quotas::metric.asc())
        .select(PlanQuotaRow::as_select())
        .load(conn)
        .await?;
    let charges = plan_charges::table
        .filter(plan_charges::plan_version_id.eq(id))
        .order(plan_charges::position.asc())
        .select(PlanChargeRow::as_select())
        .load(conn)
        .await?;
    Ok(Some(PlanVersion {
        version,
        quotas,
        charges,
    }))
}

/// The current version of every plan of a tenant, by plan code.
pub async fn current_versions(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<Vec<PlanVersion>, StorageError> {
    let codes: Vec<(String, i32)> = plans::table
        .filter(plans::tenant_id.eq(tenant_id))
        .order(plans::code.asc())
        .select((plans::code, plans::current_version))
        .load(conn)
        .await?;
    let mut out = Vec::with_capacity(codes.len());
    for (code, number) in codes {
        if let Some(v) = version_by_number(conn, tenant_id, &code, number).await? {
            out.push(v);
        }
    }
    Ok(out)
}

/// Creates or replaces a coupon (`definition` is the pricing engine's `Coupon` as JSON).
/// Subscriptions reference coupons by code; a replaced coupon applies from the next run.
pub async fn upsert_coupon(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    code: &str,
    definition: &serde_json::Value,
) -> Result<(), StorageError> {
    diesel::insert_into(coupons::table)
        .values((
            coupons::tenant_id.eq(tenant_id),
            coupons::code.eq(code),
            coupons::definition.eq(definition),
        ))
        .on_conflict((coupons::tenant_id, coupons::code))
        .do_update()
        .set(coupons::definition.eq(definition))
        .execute(conn)
        .await?;
    Ok(())
}

/// A coupon's definition.
pub async fn find_coupon(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    code: &str,
) -> Result<Option<serde_json::Value>, StorageError> {
    Ok(coupons::table
        .find((tenant_id, code))
        .select(coupons::definition)
        .first(conn)
        .await
        .optional()?)
}
