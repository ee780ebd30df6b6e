//! Subscription rules (issue 4, "Subscriptions"; SPEC "Billing"): start (with the plan's trial),
//! change plan now (prorated) or at period end, cancel now or at period end, resume. Each
//! change commits with its history entry and a `subscription.updated` event in one
//! transaction; the row is the source of truth that intake's entitlement projection follows.
//!
//! * Upgrade or downgrade **now** at instant t of period [s, e): the pricing engine's
//!   `plan_change_proration` — credit = −round(old_fee × (e − t) / (e − s)), charge =
//!   round(new_fee × (e − t) / (e − s)), half-even, exact seconds — billed on this period's
//!   invoice. A downgrade keeps the old version's entitlements for its `downgrade_grace_days`.
//! * At **period end**: the change is applied when the period closes; nothing is prorated.
//! * **Cancel now** closes the period at once: a draft invoice for [s, t) with a credit for the
//!   unused seconds of the base fee; the subscription is canceled and intake refuses at once.
//! * Plans of a subscription keep one currency and one interval (a change across either is
//!   refused: it would need a new subscription).

use chrono::{DateTime, Duration, Utc};
use diesel_async::AsyncConnection;
use serde::Deserialize;
use tollgate_storage::plans::{self, PlanVersion};
use tollgate_storage::subscriptions::{self, NewSubscriptionChange, SubscriptionRow};
use tollgate_storage::{AsyncPgConnection, StorageError};
use uuid::Uuid;

use crate::periods::Interval;
use crate::run::PlanCache;
use crate::{BillingContext, BillingError};

/// When a plan change or cancellation takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum When {
    Now,
    PeriodEnd,
}

/// A new subscription.
#[derive(Debug, Clone)]
pub struct StartRequest {
    pub tenant_id: Uuid,
    pub account_id: Uuid,
    pub plan: String,
    /// Start instant (default now). Periods are anchored here (or at the trial's end).
    pub start_at: DateTime<Utc>,
    /// Skip the plan's trial.
    pub skip_trial: bool,
    pub coupon: Option<String>,
}

async fn current_plan(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    code: &str,
) -> Result<PlanVersion, BillingError> {
    plans::current_version(conn, tenant_id, code)
        .await?
        .ok_or_else(|| BillingError::UnknownPlan(code.to_owned()))
}

fn interval(plan: &PlanVersion) -> Result<Interval, BillingError> {
    Interval::parse(&plan.version.billing_interval).ok_or_else(|| {
        BillingError::Corrupt(format!("interval `{}`", plan.version.billing_interval))
    })
}

/// Starts a subscription: `trialing` for the plan's trial days (unless skipped), else
/// `active`. Errors: unknown plan or coupon (404/422), the account already has a live
/// subscription (409 SUBSCRIPTION_EXISTS).
pub async fn start(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    req: StartRequest,
) -> Result<SubscriptionRow, BillingError> {
    conn.transaction(async move |conn| {
        let plan = current_plan(conn, req.tenant_id, &req.plan).await?;
        if let Some(code) = &req.coupon {
            if plans::find_coupon(conn, req.tenant_id, code)
                .await?
                .is_none()
            {
                return Err(BillingError::UnknownCoupon(code.clone()));
            }
        }
        let trial_days = if req.skip_trial {
            0
        } else {
            plan.version.trial_days
        };
        let now = Utc::now();
        let (status, trial_end, anchor, start, end) = if trial_days > 0 {
            let trial_end = req.start_at + Duration::days(i64::from(trial_days));
            (
                "trialing",
                Some(trial_end),
                trial_end,
                req.start_at,
                trial_end,
            )
        } else {
            let (s, e) = interval(&plan)?
                .period(req.start_at, 0)
                .ok_or_else(|| BillingError::Invalid("start_at is out of range".into()))?;
            ("active", None, req.start_at, s, e)
        };
        let mut row = SubscriptionRow {
            id: Uuid::now_v7(),
            tenant_id: req.tenant_id,
            account_id: req.account_id,
            plan_version_id: plan.version.id,
            status: status.into(),
            anchor_at: anchor,
            current_period_start: start,
            current_period_end: end,
            period_index: 0,
            trial_end,
            cancel_at_period_end: false,
            canceled_at: None,
            pending_plan_version_id: None,
            grace_plan_version_id: None,
            grace_until: None,
            coupon_code: req.coupon.clone(),
            coupon_first_period: req.coupon.as_ref().map(|_| 0),
            created_at: now,
            updated_at: now,
        };
        subscriptions::insert(conn, &row)
            .await
            .map_err(|e| match e {
                StorageError::UniqueViolation(_) => BillingError::SubscriptionExists,
                other => other.into(),
            })?;
        subscriptions::record_changes(
            conn,
            &[NewSubscriptionChange {
                to_plan_version_id: Some(plan.version.id),
                to_status: Some(status.into()),
                ..NewSubscriptionChange::new(row.id, "start", req.start_at)
            }],
        )
        .await?;
        let mut cache = PlanCache::default();
        crate::events::subscription_updated(ctx, conn, &row, &mut cache, "start").await?;
        row.updated_at = now;
        Ok(row)
    })
    .await
}

fn live(sub: &SubscriptionRow) -> Result<(), BillingError> {
    if sub.status == "canceled" {
        return Err(BillingError::SubscriptionCanceled);
    }
    Ok(())
}

/// Changes the plan now (prorated) or at period end. Errors: unknown plan, a canceled
/// subscription (409), another currency or interval (422 PLAN_CHANGE_NOT_ALLOWED).
pub async fn change_plan(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    id: Uuid,
    plan_code: String,
    when: When,
    at: DateTime<Utc>,
) -> Result<SubscriptionRow, BillingError> {
    conn.transaction(async move |conn| {
        let mut sub = subscriptions::find(conn, tenant_id, id, true)
            .await?
            .ok_or(BillingError::SubscriptionNotFound)?;
        live(&sub)?;
        let mut cache = PlanCache::default();
        let old = cache.get(conn, sub.plan_version_id).await?.clone();
        let new = current_plan(conn, tenant_id, &plan_code).await?;
        if new.version.currency != old.version.currency
            || new.version.billing_interval != old.version.billing_interval
        {
            return Err(BillingError::PlanChangeNotAllowed(format!(
                "plan `{}` bills in {} per {}; this subscription bills in {} per {}",
                plan_code,
                new.version.currency,
                new.version.billing_interval,
                old.version.currency,
                old.version.billing_interval
            )));
        }
        if new.version.id == old.version.id {
            return Err(BillingError::PlanChangeNotAllowed(
                "already on this plan version".into(),
            ));
        }
        let change = match when {
            When::PeriodEnd => {
                sub.pending_plan_version_id = Some(new.version.id);
                NewSubscriptionChange {
                    from_plan_version_id: Some(old.version.id),
                    to_plan_version_id: Some(new.version.id),
                    period_start: Some(sub.current_period_start),
                    ..NewSubscriptionChange::new(sub.id, "schedule_change", at)
                }
            }
            When::Now => {
                if at < sub.current_period_start || at >= sub.current_period_end {
                    return Err(BillingError::Invalid(
                        "the change instant must fall inside the current period".into(),
                    ));
                }
                let downgrade = new.version.base_fee_minor < old.version.base_fee_minor;
                // A trial bills nothing, so switching during it prorates nothing.
                let proration = if sub.status == "trialing" {
                    None
                } else {
                    Some(
                        tollgate_pricing::plan_change_proration(
                            old.version.base_fee_minor,
                            new.version.base_fee_minor,
                            sub.current_period_start,
                            sub.current_period_end,
                            at,
                        )
                        .map_err(|e| BillingError::Invalid(e.to_string()))?,
                    )
                };
                if downgrade && old.version.downgrade_grace_days > 0 {
                    sub.grace_plan_version_id = Some(old.version.id);
                    sub.grace_until =
                        Some(at + Duration::days(i64::from(old.version.downgrade_grace_days)));
                }
                sub.plan_version_id = new.version.id;
                sub.pending_plan_version_id = None;
                NewSubscriptionChange {
                    from_plan_version_id: Some(old.version.id),
                    to_plan_version_id: Some(new.version.id),
                    period_start: Some(sub.current_period_start),
                    proration_credit_minor: proration.map(|p| p.credit_minor),
                    proration_charge_minor: proration.map(|p| p.charge_minor),
                    ..NewSubscriptionChange::new(
                        sub.id,
                        if downgrade { "downgrade" } else { "upgrade" },
                        at,
                    )
                }
            }
        };
        let kind = change.kind.clone();
        subscriptions::save(conn, &mut sub).await?;
        subscriptions::record_changes(conn, &[change]).await?;
        crate::events::subscription_updated(ctx, conn, &sub, &mut cache, &kind).await?;
        Ok(sub)
    })
    .await
}

/// Cancels at period end (reversible with [`resume`]) or now (closes the period at `at` into a
/// draft invoice with the unused base fee credited, and cancels at once).
pub async fn cancel(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    id: Uuid,
    when: When,
    at: DateTime<Utc>,
    reason: Option<String>,
) -> Result<SubscriptionRow, BillingError> {
    conn.transaction(async move |conn| {
        let mut sub = subscriptions::find(conn, tenant_id, id, true)
            .await?
            .ok_or(BillingError::SubscriptionNotFound)?;
        live(&sub)?;
        let mut cache = PlanCache::default();
        let kind = match when {
            When::PeriodEnd => {
                sub.cancel_at_period_end = true;
                subscriptions::record_changes(
                    conn,
                    &[NewSubscriptionChange {
                        reason: reason.clone(),
                        ..NewSubscriptionChange::new(sub.id, "cancel_at_period_end", at)
                    }],
                )
                .await?;
                "cancel_at_period_end"
            }
            When::Now => {
                let at = at.clamp(sub.current_period_start, sub.current_period_end);
                let plan = cache.get(conn, sub.plan_version_id).await?.clone();
                if sub.status != "trialing" {
                    let credit = -tollgate_pricing::prorate(
                        plan.version.base_fee_minor,
                        sub.current_period_start,
                        sub.current_period_end,
                        at,
                        sub.current_period_end,
                    )
                    .map_err(|e| BillingError::Invalid(e.to_string()))?;
                    subscriptions::record_changes(
                        conn,
                        &[NewSubscriptionChange {
                            from_status: Some(sub.status.clone()),
                            to_status: Some("canceled".into()),
                            period_start: Some(sub.current_period_start),
                            proration_credit_minor: Some(credit),
                            reason: reason.clone(),
                            ..NewSubscriptionChange::new(sub.id, "cancel", at)
                        }],
                    )
                    .await?;
                    let header = crate::run::draft_header(
                        &sub,
                        &plan,
                        ctx.grace,
                        at,
                        sub.current_period_end,
                    );
                    if tollgate_storage::invoices::insert_draft(conn, &header, &[]).await? {
                        crate::run::rerate(conn, vec![header]).await?;
                    }
                } else {
                    subscriptions::record_changes(
                        conn,
                        &[NewSubscriptionChange {
                            from_status: Some("trialing".into()),
                            to_status: Some("canceled".into()),
                            reason: reason.clone(),
                            ..NewSubscriptionChange::new(sub.id, "cancel", at)
                        }],
                    )
                    .await?;
                }
                sub.status = "canceled".into();
                sub.canceled_at = Some(at);
                "cancel"
            }
        };
        subscriptions::save(conn, &mut sub).await?;
        crate::events::subscription_updated(ctx, conn, &sub, &mut cache, kind).await?;
        Ok(sub)
    })
    .await
}

/// Undoes a cancellation scheduled for period end, or a pending plan change. Errors: a
/// canceled subscription (409), nothing to resume (422).
pub async fn resume(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
    id: Uuid,
) -> Result<SubscriptionRow, BillingError> {
    conn.transaction(async move |conn| {
        let mut sub = subscriptions::find(conn, tenant_id, id, true)
            .await?
            .ok_or(BillingError::SubscriptionNotFound)?;
        live(&sub)?;
        if !sub.cancel_at_period_end && sub.pending_plan_version_id.is_none() {
            return Err(BillingError::Invalid(
                "nothing to resume: no cancellation or plan change is scheduled".into(),
            ));
        }
        sub.cancel_at_period_end = false;
        sub.pending_plan_version_id = None;
        subscriptions::save(conn, &mut sub).await?;
        subscriptions::record_changes(
            conn,
            &[NewSubscriptionChange::new(sub.id, "resume", Utc::now())],
        )
        .await?;
        let mut cache = PlanCache::default();
        crate::events::subscription_updated(ctx, conn, &sub, &mut cache, "resume").await?;
        Ok(sub)
    })
    .await
}
