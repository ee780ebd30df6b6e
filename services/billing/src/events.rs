//! Billing's announcements through the transactional outbox (SPEC "Messaging"): each event is
//! written in the transaction of the change it announces and published by the outbox relay
//! with publisher confirms to the events exchange, routed by its type. Also the publisher of
//! quota thresholds, which the ledger's trigger records once per threshold and period.
//!
//! Events: `subscription.updated`, `invoice.finalized`, `payment.requested`,
//! `usage.threshold_reached` (issue 4) and `invoice.paid`, `payment.succeeded`,
//! `payment.failed`, `payment.refunded` (issue 5, see `payments` and `dunning`).

use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use tollgate_domain::{BillingEvent, Envelope, TenantId};
use tollgate_storage::models::NewOutboxMessage;
use tollgate_storage::plans::PlanVersion;
use tollgate_storage::schema::{quota_thresholds, subscriptions};
use tollgate_storage::subscriptions::SubscriptionRow;
use uuid::Uuid;

use crate::run::PlanCache;
use crate::{BillingContext, BillingError};

/// A recorded threshold crossing with its subscription's tenant and account:
/// (subscription, metric, period start, percent, used, quantity, tenant, account).
type ThresholdRow = (
    Uuid,
    String,
    chrono::DateTime<Utc>,
    i32,
    i64,
    i64,
    Uuid,
    Uuid,
);

/// Writes `event` for `tenant` to the outbox (caller's transaction).
pub async fn enqueue(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    event: BillingEvent,
) -> Result<(), BillingError> {
    enqueue_with_id(ctx, conn, tenant, event).await.map(|_| ())
}

/// [`enqueue`], returning the message id (the envelope id; dunning records it with each
/// notification).
pub async fn enqueue_with_id(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    event: BillingEvent,
) -> Result<Uuid, BillingError> {
    let id = Uuid::now_v7();
    let routing_key = event.event_type().to_owned();
    let envelope = Envelope::billing("billing", TenantId::from_uuid(tenant), id, event);
    let payload =
        serde_json::to_vec(&envelope).map_err(|e| BillingError::Corrupt(e.to_string()))?;
    tollgate_storage::outbox::enqueue(
        conn,
        &NewOutboxMessage {
            message_id: id,
            exchange: ctx.events_exchange.clone(),
            routing_key,
            payload,
        },
    )
    .await?;
    Ok(id)
}

/// Announces `subscription.updated` for `sub` after `change`; returns the message id.
pub(crate) async fn subscription_updated(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    sub: &SubscriptionRow,
    plans: &mut PlanCache,
    change: &str,
) -> Result<Uuid, BillingError> {
    let plan = plans.get(conn, sub.plan_version_id).await?;
    let event = subscription_event(sub, plan, change);
    enqueue_with_id(ctx, conn, sub.tenant_id, event).await
}

/// Publishes up to `limit` recorded quota-threshold crossings (one `usage.threshold_reached`
/// each) and stamps them, in one transaction; returns how many. Rows are claimed with
/// `SKIP LOCKED`, so replicas never announce one twice.
pub async fn publish_thresholds(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    limit: i64,
) -> Result<usize, BillingError> {
    conn.transaction(async move |conn| {
        let rows: Vec<ThresholdRow> = quota_thresholds::table
            .inner_join(
                subscriptions::table.on(subscriptions::id.eq(quota_thresholds::subscription_id)),
            )
            .filter(quota_thresholds::published_at.is_null())
            .order(quota_thresholds::reached_at.asc())
            .limit(limit)
            .select((
                quota_thresholds::subscription_id,
                quota_thresholds::metric,
                quota_thresholds::period_start,
                quota_thresholds::threshold_pct,
                quota_thresholds::used,
                quota_thresholds::quantity,
                subscriptions::tenant_id,
                subscriptions::account_id,
            ))
            .for_update()
            .skip_locked()
            .load(conn)
            .await
            .map_err(tollgate_storage::StorageError::from)?;
        for (sub, metric, period_start, pct, used, quantity, tenant, account) in &rows {
            enqueue(
                ctx,
                conn,
                *tenant,
                BillingEvent::UsageThresholdReachedV1 {
                    subscription_id: *sub,
                    account_id: *account,
                    metric: metric.clone(),
                    period_start: *period_start,
                    threshold_pct: *pct,
                    used: *used,
                    quantity: *quantity,
                },
            )
            .await?;
            diesel::update(quota_thresholds::table)
                .filter(quota_thresholds::subscription_id.eq(sub))
                .filter(quota_thresholds::metric.eq(metric))
                .filter(quota_thresholds::period_start.eq(period_start))
                .filter(quota_thresholds::threshold_pct.eq(pct))
                .set(quota_thresholds::published_at.eq(Utc::now()))
                .execute(conn)
                .await
                .map_err(tollgate_storage::StorageError::from)?;
        }
        Ok(rows.len())
    })
    .await
}

/// The `subscription.updated` event for `sub` after `change`.
fn subscription_event(sub: &SubscriptionRow, plan: &PlanVersion, change: &str) -> BillingEvent {
    BillingEvent::SubscriptionUpdatedV1 {
        subscription_id: sub.id,
        account_id: sub.account_id,
        plan: plan.version.plan_code.clone(),
        plan_version: plan.version.version,
        status: sub.status.clone(),
        current_period_start: sub.current_period_start,
        current_period_end: sub.current_period_end,
        cancel_at_period_end: sub.cancel_at_period_end,
        change: change.to_owned(),
    }
}
