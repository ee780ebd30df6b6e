//! The billing run (issue 4, "Billing runs"): closes due periods into draft invoices, keeps
//! drafts current while their grace window is open (late usage), and finalizes them when it
//! closes. The scheduler calls [`run`] every tick; `tollgatectl billing run` calls it on
//! demand, with `--as-of` as a test clock.
//!
//! Crash safety and idempotency: work is claimed in batches with `FOR UPDATE SKIP LOCKED` and
//! each batch commits as one transaction: the drafts of the batch together with the advance of
//! their subscriptions' periods. A run killed half-way leaves whole batches done and the rest
//! untouched; the rerun claims what is still due. `UNIQUE (subscription_id, period_start)` on
//! invoices makes a second invoice for a period impossible even for concurrent runs.
//!
//! Usage is aggregated in SQL per batch (`tollgate_storage::period_usage`): one statement for
//! all sum-like metrics of all periods of the batch, one more per metric that aggregates
//! otherwise (max, latest, unique count, time-weighted sum).

use std::collections::{HashMap, HashSet};
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};
use diesel_async::AsyncConnection;
use rust_decimal::Decimal;
use serde::Serialize;
use tollgate_domain::usage::{builtin_aggregation, Aggregation};
use tollgate_pricing::{Charge, Coupon, Currency, PricingError};
use tollgate_storage::invoices::{self, InvoiceRow};
use tollgate_storage::period_usage::{self, UsageWindow};
use tollgate_storage::plans::{self, PlanVersion};
use tollgate_storage::subscriptions::{self, NewSubscriptionChange, SubscriptionRow};
use tollgate_storage::{AsyncPgConnection, PgPool};
use uuid::Uuid;

use crate::rating::{rate_period, AdjustmentInput, PeriodInput, ProrationInput, RatedInvoice};
use crate::{BillingContext, BillingError};

/// How far back late usage of finalized periods is looked for (adjustment lines).
const ADJUSTMENT_LOOKBACK_DAYS: i64 = 400;

/// What one run does.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// One tenant, or all.
    pub tenant: Option<Uuid>,
    /// The run's clock: periods ending at or before it close; drafts whose grace window ended
    /// at or before it are finalized.
    pub as_of: DateTime<Utc>,
    /// Subscriptions or drafts per transaction.
    pub batch: i64,
    /// Stop after this many batches of closing periods (a test hook to simulate a crash
    /// half-way; None = until done).
    pub max_close_batches: Option<usize>,
}

/// What a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    pub periods_closed: usize,
    pub trials_ended: usize,
    pub drafts_created: usize,
    pub drafts_refreshed: usize,
    pub finalized: usize,
    /// Invoices that could not be rated (logged with the cause); retried by the next run.
    pub failed: usize,
}

/// Runs one billing pass: close due periods, refresh open drafts, finalize closed drafts.
pub async fn run(ctx: &BillingContext, opts: &RunOptions) -> Result<RunReport, BillingError> {
    let mut report = RunReport::default();
    let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
    let mut batches = 0;
    // Drafts this run wrote were rated from the ledger moments ago; the refresh skips them.
    let mut fresh = HashSet::new();
    // All due periods' sums in one statement (see `period_usage::due_sums`); batches use them
    // and aggregate only what is missing (later periods of a subscription far behind, other
    // aggregations, adjustments). Usage recorded after this read reaches the draft at its next
    // refresh and, at the latest, when it is finalized (finalization re-rates).
    let mut prefetched: Prefetched = HashMap::new();
    if opts.max_close_batches.is_none_or(|n| n > 0) {
        for row in period_usage::due_sums(&mut conn, opts.tenant, opts.as_of).await? {
            prefetched
                .entry((row.subscription_id, row.period_start))
                .or_default()
                .insert(row.metric, parse_decimal(row.quantity.as_deref())?);
        }
    }
    loop {
        if opts.max_close_batches.is_some_and(|max| batches >= max) {
            return Ok(report);
        }
        let (step, created) = close_batch(ctx, &mut conn, opts, &prefetched).await?;
        fresh.extend(created);
        batches += 1;
        report.periods_closed += step.periods_closed;
        report.trials_ended += step.trials_ended;
        report.drafts_created += step.drafts_created;
        report.failed += step.failed;
        if step.periods_closed + step.trials_ended == 0 {
            break;
        }
    }
    let mut after = None;
    loop {
        let (count, last) = refresh_batch(&mut conn, opts, after, &fresh).await?;
        report.drafts_refreshed += count;
        match last {
            Some(id) => after = Some(id),
            None => break,
        }
    }
    loop {
        let step = finalize_batch(ctx, &mut conn, opts).await?;
        report.finalized += step.0;
        report.failed += step.1;
        if step.0 == 0 {
            break;
        }
    }
    Ok(report)
}

/// Summed usage per (subscription, period start): metric → weighted units.
type Prefetched = HashMap<(Uuid, DateTime<Utc>), HashMap<String, Decimal>>;

async fn close_batch(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    opts: &RunOptions,
    prefetched: &Prefetched,
) -> Result<(RunReport, Vec<Uuid>), BillingError> {
    let opts = opts.clone();
    conn.transaction(async move |conn| {
            let mut report = RunReport::default();
            let due = subscriptions::claim_due(conn, opts.tenant, opts.as_of, opts.batch).await?;
            let mut plans = PlanCache::default();
            let mut drafts = Vec::new();
            for sub in &due {
                if sub.status == "trialing" {
                    continue;
                }
                let end_plan = plans.get(conn, sub.plan_version_id).await?.clone();
                drafts.push((
                    draft_header(sub, &end_plan, ctx.grace, sub.current_period_end, sub.current_period_end),
                    sub.clone(),
                ));
            }
            let rated = rate_invoices(conn, &drafts, &mut plans, prefetched).await?;
            let mut rows = Vec::with_capacity(drafts.len());
            for ((mut header, _), result) in drafts.into_iter().zip(rated) {
                match result {
                    Ok(rated) => {
                        header.subtotal_minor = rated.totals.subtotal_minor;
                        header.discount_minor = rated.totals.discount_minor;
                        header.total_minor = rated.totals.total_minor;
                        rows.push((header, rated.lines));
                    }
                    Err(err) => {
                        // The period still closes: the draft is written with no lines and is
                        // rated again by every refresh until it rates.
                        tracing::error!(error = %err, subscription = %header.subscription_id.unwrap_or_default(), "could not rate period");
                        report.failed += 1;
                        rows.push((header, Vec::new()));
                    }
                }
            }
            let created = invoices::insert_drafts(conn, &rows).await?;
            report.drafts_created = created.len();
            let mut advanced = Vec::with_capacity(due.len());
            let mut changes = Vec::new();
            for sub in due {
                if sub.status == "trialing" {
                    report.trials_ended += 1;
                } else {
                    report.periods_closed += 1;
                }
                let (row, mut history, announce) = advance(sub, &mut plans, conn).await?;
                if let Some(change) = announce {
                    crate::events::subscription_updated(ctx, conn, &row, &mut plans, change).await?;
                }
                changes.append(&mut history);
                advanced.push(row);
            }
            subscriptions::save_advances(conn, &advanced).await?;
            subscriptions::record_changes(conn, &changes).await?;
            Ok((report, created))
        })
    .await
}

/// A draft invoice header for the subscription's current period, ending at `period_end`
/// (the natural end, or a cancellation instant).
pub(crate) fn draft_header(
    sub: &SubscriptionRow,
    end_plan: &PlanVersion,
    grace: Duration,
    period_end: DateTime<Utc>,
    full_period_end: DateTime<Utc>,
) -> InvoiceRow {
    let now = Utc::now();
    InvoiceRow {
        id: Uuid::now_v7(),
        tenant_id: sub.tenant_id,
        account_id: sub.account_id,
        subscription_id: Some(sub.id),
        plan_version_id: Some(end_plan.version.id),
        status: "draft".into(),
        currency: end_plan.version.currency.clone(),
        period_start: sub.current_period_start,
        period_end,
        full_period_end,
        period_index: sub.period_index,
        grace_until: period_end + grace,
        number: None,
        number_text: None,
        subtotal_minor: 0,
        discount_minor: 0,
        total_minor: 0,
        pdf_artifact_id: None,
        finalized_at: None,
        paid_at: None,
        voided_at: None,
        void_reason: None,
        created_at: now,
        updated_at: now,
    }
}

/// Moves a subscription past its current period: a trial becomes active (or canceled), a paid
/// period advances (applying a scheduled plan change or a cancellation at period end). Returns
/// the row to save, its history entries and the change to announce, if any.
async fn advance(
    mut sub: SubscriptionRow,
    plans: &mut PlanCache,
    conn: &mut AsyncPgConnection,
) -> Result<
    (
        SubscriptionRow,
        Vec<NewSubscriptionChange>,
        Option<&'static str>,
    ),
    BillingError,
> {
    let ended = sub.current_period_end;
    let before_status = sub.status.clone();
    let mut changes = Vec::new();
    let mut announce = None;
    if sub.status == "trialing" {
        changes.push(NewSubscriptionChange {
            from_status: Some("trialing".into()),
            ..NewSubscriptionChange::new(sub.id, "trial_end", ended)
        });
        announce = Some("trial_end");
    } else {
        sub.period_index += 1;
        changes.push(NewSubscriptionChange {
            period_start: Some(sub.current_period_start),
            ..NewSubscriptionChange::new(sub.id, "renew", ended)
        });
    }
    if let Some(next) = sub.pending_plan_version_id.take() {
        changes.push(NewSubscriptionChange {
            from_plan_version_id: Some(sub.plan_version_id),
            to_plan_version_id: Some(next),
            ..NewSubscriptionChange::new(sub.id, "scheduled_change_applied", ended)
        });
        sub.plan_version_id = next;
        announce = Some("scheduled_change_applied");
    }
    if sub.cancel_at_period_end {
        sub.status = "canceled".into();
        sub.canceled_at = Some(ended);
        changes.push(NewSubscriptionChange {
            from_status: Some(before_status),
            to_status: Some("canceled".into()),
            ..NewSubscriptionChange::new(sub.id, "cancel", ended)
        });
        announce = Some("cancel");
    } else {
        if sub.status == "trialing" {
            sub.status = "active".into();
        }
        let plan = plans.get(conn, sub.plan_version_id).await?;
        let interval =
            crate::periods::Interval::parse(&plan.version.billing_interval).ok_or_else(|| {
                BillingError::Corrupt(format!("plan interval `{}`", plan.version.billing_interval))
            })?;
        let index = u32::try_from(sub.period_index)
            .map_err(|_| BillingError::Corrupt("period index".into()))?;
        let (start, end) = interval
            .period(sub.anchor_at, index)
            .ok_or_else(|| BillingError::Corrupt("period overflows".into()))?;
        sub.current_period_start = start;
        sub.current_period_end = end;
    }
    if sub
        .grace_until
        .is_some_and(|g| g <= sub.current_period_start)
    {
        sub.grace_until = None;
        sub.grace_plan_version_id = None;
    }
    Ok((sub, changes, announce))
}

async fn refresh_batch(
    conn: &mut AsyncPgConnection,
    opts: &RunOptions,
    after: Option<Uuid>,
    fresh: &HashSet<Uuid>,
) -> Result<(usize, Option<Uuid>), BillingError> {
    let opts = opts.clone();
    conn.transaction(async move |conn| {
        let drafts =
            invoices::claim_drafts(conn, opts.tenant, opts.as_of, false, opts.batch, after).await?;
        let last = drafts.last().map(|d| d.id);
        let stale = drafts
            .into_iter()
            .filter(|d| !fresh.contains(&d.id))
            .collect();
        let count = rerate(conn, stale).await?.len();
        Ok((count, last))
    })
    .await
}

/// Rates drafts again from the ledger and rewrites their lines; returns the ones that rated.
pub(crate) async fn rerate(
    conn: &mut AsyncPgConnection,
    drafts: Vec<InvoiceRow>,
) -> Result<Vec<InvoiceRow>, BillingError> {
    let sub_ids: Vec<Uuid> = drafts.iter().filter_map(|d| d.subscription_id).collect();
    let subs: HashMap<Uuid, SubscriptionRow> = subscriptions::by_ids(conn, &sub_ids)
        .await?
        .into_iter()
        .map(|s| (s.id, s))
        .collect();
    let mut items = Vec::with_capacity(drafts.len());
    for draft in drafts {
        // A subscription can have several open drafts (periods that closed within one grace
        // window), hence the clone.
        let Some(sub) = draft.subscription_id.and_then(|id| subs.get(&id).cloned()) else {
            continue;
        };
        items.push((draft, sub));
    }
    let mut plans = PlanCache::default();
    let rated = rate_invoices(conn, &items, &mut plans, &HashMap::new()).await?;
    let mut out = Vec::with_capacity(items.len());
    for ((mut draft, _), result) in items.into_iter().zip(rated) {
        match result {
            Ok(rated) => {
                let t = rated.totals;
                invoices::rewrite_draft(
                    conn,
                    draft.id,
                    &rated.lines,
                    (t.subtotal_minor, t.discount_minor, t.total_minor),
                )
                .await?;
                draft.subtotal_minor = t.subtotal_minor;
                draft.discount_minor = t.discount_minor;
                draft.total_minor = t.total_minor;
                out.push(draft);
            }
            Err(err) => {
                tracing::error!(error = %err, invoice = %draft.id, "could not rate draft");
            }
        }
    }
    Ok(out)
}

async fn finalize_batch(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    opts: &RunOptions,
) -> Result<(usize, usize), BillingError> {
    let opts = opts.clone();
    conn.transaction(async move |conn| {
        let drafts =
            invoices::claim_drafts(conn, opts.tenant, opts.as_of, true, opts.batch, None).await?;
        let claimed = drafts.len();
        let rated = rerate(conn, drafts).await?;
        let failed = claimed - rated.len();
        let finalized = rated.len();
        for draft in rated {
            crate::invoicing::finalize(ctx, conn, draft, opts.as_of).await?;
        }
        // Drafts that failed to rate stay drafts (and claimed again next run); a batch in
        // which nothing could be finalized ends the loop.
        Ok((finalized, failed))
    })
    .await
}

/// Plan versions by id, loaded once per batch.
#[derive(Default)]
pub(crate) struct PlanCache(HashMap<Uuid, PlanVersion>);

impl PlanCache {
    pub(crate) async fn get(
        &mut self,
        conn: &mut AsyncPgConnection,
        id: Uuid,
    ) -> Result<&PlanVersion, BillingError> {
        match self.0.entry(id) {
            std::collections::hash_map::Entry::Occupied(e) => Ok(e.into_mut()),
            std::collections::hash_map::Entry::Vacant(e) => {
                let v = plans::plan_version(conn, id)
                    .await?
                    .ok_or_else(|| BillingError::Corrupt(format!("plan version {id} missing")))?;
                Ok(e.insert(v))
            }
        }
    }
}

/// Aggregated usage of a batch: quantity per (window key, ledger metric), and per (window key,
/// charge metric) for metrics that do not aggregate by sum.
#[derive(Default)]
pub(crate) struct UsageBook {
    pub(crate) sums: HashMap<(i32, String), Decimal>,
    pub(crate) special: HashMap<(i32, String), Decimal>,
}

impl UsageBook {
    pub(crate) fn quantity(&self, key: i32, metric: &str, aggregation: Aggregation) -> Decimal {
        if let Some(prefix) = metric.strip_suffix('*') {
            return self
                .sums
                .iter()
                .filter(|((k, m), _)| *k == key && m.starts_with(prefix))
                .map(|(_, q)| *q)
                .sum();
        }
        let map = match aggregation {
            Aggregation::Count | Aggregation::Sum => &self.sums,
            _ => &self.special,
        };
        map.get(&(key, metric.to_owned()))
            .copied()
            .unwrap_or_default()
    }
}

pub(crate) fn parse_decimal(raw: Option<&str>) -> Result<Decimal, BillingError> {
    match raw {
        None => Ok(Decimal::ZERO),
        Some(s) => {
            Decimal::from_str(s).map_err(|e| BillingError::Corrupt(format!("quantity `{s}`: {e}")))
        }
    }
}

/// How each metric of a tenant aggregates (built-in metrics and `x.*` patterns sum).
pub(crate) async fn aggregations(
    conn: &mut AsyncPgConnection,
    tenant_id: Uuid,
) -> Result<HashMap<String, Aggregation>, BillingError> {
    let mut out = HashMap::new();
    for row in tollgate_storage::billable_metrics::list(conn, tenant_id).await? {
        out.insert(row.code.clone(), row.definition()?.aggregation);
    }
    Ok(out)
}

pub(crate) fn aggregation_of(metrics: &HashMap<String, Aggregation>, code: &str) -> Aggregation {
    if code.ends_with(".*") {
        return Aggregation::Sum;
    }
    builtin_aggregation(code)
        .or_else(|| metrics.get(code).copied())
        .unwrap_or(Aggregation::Sum)
}

/// Rates the periods of `items` (invoice header + its subscription), in order.
async fn rate_invoices(
    conn: &mut AsyncPgConnection,
    items: &[(InvoiceRow, SubscriptionRow)],
    plans: &mut PlanCache,
    prefetched: &Prefetched,
) -> Result<Vec<Result<RatedInvoice, PricingError>>, BillingError> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    // History: plan changes and cancellations inside each period.
    let sub_ids: Vec<Uuid> = items.iter().map(|(_, s)| s.id).collect();
    let history = subscriptions::prorated_changes(conn, &sub_ids).await?;
    // What final invoices billed for earlier periods (late usage → adjustments).
    let befores: Vec<DateTime<Utc>> = items.iter().map(|(i, _)| i.period_start).collect();
    let oldest = befores.iter().min().copied().unwrap_or_else(Utc::now);
    let billed = invoices::billed_usage(
        conn,
        &sub_ids,
        &befores,
        oldest - Duration::days(ADJUSTMENT_LOOKBACK_DAYS),
    )
    .await?;

    // Windows: key 2i = the invoice's period; earlier billed periods get keys after them.
    let mut windows = Vec::new();
    let mut tenants: HashSet<Uuid> = HashSet::new();
    for (i, (inv, _)) in items.iter().enumerate() {
        tenants.insert(inv.tenant_id);
        windows.push((
            inv.tenant_id,
            UsageWindow {
                key: i as i32,
                account_id: inv.account_id,
                period_start: inv.period_start,
                period_end: inv.period_end,
            },
        ));
    }
    let mut billed_by_item: Vec<Vec<(i32, &invoices::BilledUsage)>> = vec![Vec::new(); items.len()];
    let mut earlier_keys: HashMap<(usize, DateTime<Utc>), i32> = HashMap::new();
    for b in &billed {
        for (i, (inv, sub)) in items.iter().enumerate() {
            if sub.id != b.subscription_id || b.period_start >= inv.period_start {
                continue;
            }
            let next_key = (items.len() + earlier_keys.len()) as i32;
            let key = *earlier_keys.entry((i, b.period_start)).or_insert_with(|| {
                windows.push((
                    inv.tenant_id,
                    UsageWindow {
                        key: next_key,
                        account_id: inv.account_id,
                        period_start: b.period_start,
                        period_end: b.period_end,
                    },
                ));
                next_key
            });
            billed_by_item[i].push((key, b));
        }
    }

    // Aggregate: sums for everything (from the run's prefetch where it has the period), then
    // the other aggregations metric by metric.
    let mut book = UsageBook::default();
    let mut known: HashSet<i32> = HashSet::new();
    for (i, (inv, sub)) in items.iter().enumerate() {
        // A cut-short period (cancellation) is not what the prefetch summed.
        if inv.period_end != inv.full_period_end {
            continue;
        }
        if let Some(sums) = prefetched.get(&(sub.id, inv.period_start)) {
            known.insert(i as i32);
            for (metric, q) in sums {
                book.sums.insert((i as i32, metric.clone()), *q);
            }
        }
    }
    // Periods absent from the prefetch (no usage at all, or not due when it ran) are summed
    // below with the batch's windows; an empty one costs one index probe.
    let mut tenant_aggs: HashMap<Uuid, HashMap<String, Aggregation>> = HashMap::new();
    for tenant in &tenants {
        let metrics = aggregations(conn, *tenant).await?;
        let tenant_windows: Vec<UsageWindow> = windows
            .iter()
            .filter(|(t, _)| t == tenant)
            .map(|(_, w)| w.clone())
            .collect();
        let unknown: Vec<UsageWindow> = tenant_windows
            .iter()
            .filter(|w| !known.contains(&w.key))
            .cloned()
            .collect();
        for row in period_usage::sums(conn, *tenant, &unknown).await? {
            book.sums.insert(
                (row.key, row.metric),
                parse_decimal(row.quantity.as_deref())?,
            );
        }
        let mut needed: HashMap<(String, &'static str), (Aggregation, HashSet<i32>)> =
            HashMap::new();
        for (i, (inv, _)) in items.iter().enumerate() {
            if inv.tenant_id != *tenant {
                continue;
            }
            let plan_id = inv.plan_version_id.unwrap_or_default();
            let mut wanted: Vec<(i32, Uuid)> = vec![(i as i32, plan_id)];
            wanted.extend(
                billed_by_item[i]
                    .iter()
                    .map(|(k, b)| (*k, b.plan_version_id)),
            );
            for (key, plan_id) in wanted {
                let plan = plans.get(conn, plan_id).await?;
                for charge in &plan.charges {
                    let agg = aggregation_of(&metrics, &charge.metric);
                    if !matches!(agg, Aggregation::Count | Aggregation::Sum) {
                        needed
                            .entry((charge.metric.clone(), agg.as_str()))
                            .or_insert_with(|| (agg, HashSet::new()))
                            .1
                            .insert(key);
                    }
                }
            }
        }
        for ((metric, _), (agg, keys)) in needed {
            let subset: Vec<UsageWindow> = tenant_windows
                .iter()
                .filter(|w| keys.contains(&w.key))
                .cloned()
                .collect();
            for row in period_usage::aggregate(conn, *tenant, &metric, agg, &subset).await? {
                book.special.insert(
                    (row.key, metric.clone()),
                    parse_decimal(row.quantity.as_deref())?,
                );
            }
        }
        tenant_aggs.insert(*tenant, metrics);
    }

    let mut coupons: HashMap<(Uuid, String), Option<Coupon>> = HashMap::new();
    let mut out = Vec::with_capacity(items.len());
    for (i, (inv, sub)) in items.iter().enumerate() {
        let no_metrics = HashMap::new();
        let metrics = tenant_aggs.get(&inv.tenant_id).unwrap_or(&no_metrics);
        let end_plan = plans
            .get(conn, inv.plan_version_id.unwrap_or_default())
            .await?
            .clone();
        let mut prorations = Vec::new();
        let mut cancellation = None;
        let mut base_plan_id = end_plan.version.id;
        let mut first = true;
        for change in history
            .iter()
            .filter(|c| c.subscription_id == sub.id && c.period_start == Some(inv.period_start))
        {
            if change.kind == "cancel" {
                cancellation = Some((
                    change.effective_at,
                    change.proration_credit_minor.unwrap_or(0),
                ));
                continue;
            }
            let from = plans
                .get(conn, change.from_plan_version_id.unwrap_or_default())
                .await?
                .version
                .name
                .clone();
            if first {
                base_plan_id = change.from_plan_version_id.unwrap_or(base_plan_id);
                first = false;
            }
            let to = plans
                .get(conn, change.to_plan_version_id.unwrap_or_default())
                .await?
                .version
                .name
                .clone();
            prorations.push(ProrationInput {
                at: change.effective_at,
                from_plan: from,
                to_plan: to,
                credit_minor: change.proration_credit_minor.unwrap_or(0),
                charge_minor: change.proration_charge_minor.unwrap_or(0),
            });
        }
        let base_plan = plans.get(conn, base_plan_id).await?.clone();
        let quantities = end_plan
            .charges
            .iter()
            .map(|c| book.quantity(i as i32, &c.metric, aggregation_of(metrics, &c.metric)))
            .collect();
        let mut adjustments = Vec::new();
        for (key, b) in &billed_by_item[i] {
            let plan = plans.get(conn, b.plan_version_id).await?;
            let Some(charge_row) = plan.charges.iter().find(|c| c.metric == b.metric) else {
                continue;
            };
            let charge: Charge = match serde_json::from_value(charge_row.charge.clone()) {
                Ok(c) => c,
                Err(e) => {
                    return Err(BillingError::Corrupt(format!(
                        "charge on {}: {e}",
                        b.metric
                    )));
                }
            };
            adjustments.push(AdjustmentInput {
                period_start: b.period_start,
                period_end: b.period_end,
                metric: b.metric.clone(),
                description: b.description.clone(),
                charge,
                billed_quantity: parse_decimal(Some(&b.quantity))?,
                billed_amount_minor: b.amount_minor,
                current_quantity: book.quantity(
                    *key,
                    &b.metric,
                    aggregation_of(metrics, &b.metric),
                ),
            });
        }
        let coupon = match &sub.coupon_code {
            Some(code) => {
                let entry = match coupons.get(&(sub.tenant_id, code.clone())) {
                    Some(c) => c.clone(),
                    None => {
                        let c = plans::find_coupon(conn, sub.tenant_id, code)
                            .await?
                            .and_then(|json| serde_json::from_value::<Coupon>(json).ok());
                        coupons.insert((sub.tenant_id, code.clone()), c.clone());
                        c
                    }
                };
                let first_period = sub.coupon_first_period.unwrap_or(0);
                entry.filter(|c| {
                    u32::try_from(inv.period_index - first_period)
                        .is_ok_and(|n| c.applies_in_period(n))
                })
            }
            None => None,
        };
        let currency = match Currency::from_code(&inv.currency) {
            Ok(c) => c,
            Err(e) => {
                out.push(Err(e));
                continue;
            }
        };
        out.push(rate_period(&PeriodInput {
            currency,
            period_start: inv.period_start,
            period_end: inv.period_end,
            base_plan: &base_plan,
            end_plan: &end_plan,
            prorations,
            cancellation,
            quantities,
            adjustments,
            coupon,
        }));
    }
    Ok(out)
}

/// Recomputes every open draft of a tenant whose period starts in `[from, to)`; errors with
/// [`BillingError::PeriodLocked`] (BILLING_PERIOD_LOCKED) and changes nothing when any invoice
/// of that range is already final. Returns the drafts recomputed.
pub async fn recompute_period(
    pool: &PgPool,
    tenant_id: Uuid,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<usize, BillingError> {
    let mut conn = tollgate_storage::pool::get(pool).await?;
    conn.transaction(async move |conn| {
        let filter = invoices::InvoiceFilter {
            period_from: Some(from),
            period_to: Some(to),
            ..Default::default()
        };
        let all = invoices::list(conn, tenant_id, &filter, None, i64::MAX).await?;
        if let Some(final_one) = all.iter().find(|i| i.status != "draft") {
            return Err(BillingError::PeriodLocked {
                invoice: final_one.number_text.clone().unwrap_or_default(),
            });
        }
        let mut drafts = Vec::new();
        for draft in all {
            if let Some(locked) = invoices::find(conn, tenant_id, draft.id, true).await? {
                drafts.push(locked);
            }
        }
        Ok(rerate(conn, drafts).await?.len())
    })
    .await
}
