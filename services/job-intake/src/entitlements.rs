//! Entitlements at intake (issue 4; SPEC "Jobs": 402 when the subscription is inactive or a
//! quota is used up; SPEC "Billing": entitlements and quotas enforced server-side at intake,
//! soft and hard limits per plan). job-intake keeps an in-memory **projection** of what
//! gating needs and answers every check from memory, without a database round trip per
//! request; a background task keeps the projection fresh.
//!
//! # Rules, in the order they are checked
//! Only for tenants with `tenants.billing_enforced`; any other tenant is never refused.
//! 1. The request must name its billing entity: a job its `workspace`, an event its
//!    `workspace` or `account`. Otherwise 422 `BILLING_ENTITY_REQUIRED`.
//! 2. The entity (the workspace's current owner; for an account, the account itself or, for
//!    usage stamped from its conversion on, the organization it became) needs a live
//!    subscription: `trialing`, `active` or `past_due` (past_due is the dunning grace).
//!    None, or only canceled ones → 402 `SUBSCRIPTION_REQUIRED`; `suspended` → 402
//!    `SUBSCRIPTION_SUSPENDED`. An account or workspace name the projection does not know
//!    has, as far as gating can tell, no live subscription: it is refused with
//!    `SUBSCRIPTION_REQUIRED` (the write would refuse an unknown name anyway).
//! 3. The plan in force is the subscription's plan version, or during a downgrade's grace
//!    (before `grace_until`) the previous version (`grace_plan_version_id`). A job type with
//!    a `required_feature` the plan lacks → 403 `FEATURE_NOT_IN_PLAN`. A job submission past
//!    the plan's `requests_per_minute` (SPEC "Billing": plan limits include the rate per
//!    minute) → 429 `PLAN_RATE_LIMITED` with `Retry-After` and `{limit, plan}`: a GCRA
//!    bucket per subscription whose burst is the whole minute's allowance, kept by each intake
//!    process ([`tollgate_runtime::rate`], which the gateway's per-tenant limit uses too: with
//!    several replicas the subscription gets up to replicas × the limit). Events are not
//!    rate-limited by the plan.
//! 4. Quotas of that plan matching the usage's metric (`job.<type>` for jobs, the event's
//!    metric code for events; a quota names a code or a prefix pattern `x.*`) are compared
//!    with their counter. A limit is `quantity × pct / 100` units, rounded down. A job is
//!    refused when the quota is used up (`used >= hard limit`; its cost is only known when
//!    it completes); an event when it would pass the limit (`used + weighted units > hard
//!    limit`) → 402 `QUOTA_EXCEEDED` with `{metric, usage, requested, limit, period_end}`.
//!    Past the soft limit the request is accepted and flagged ([`QuotaWarning`]). Events
//!    that add no units (`weighted units <= 0`) and events stamped outside the current
//!    period are never refused or flagged by a quota: they do not add to this period's
//!    counter.
//!
//! # Counters and what this process adds
//! `quota_counters` are kept by a trigger on the ledger in the same transaction as the
//! entries, per subscription, quota metric and period. A counter whose `period_start` is not
//! the subscription's current period start is ignored (a new period starts at 0). Between
//! two refreshes, events this process accepted are held locally ("reservations", taken at
//! check time under the same lock as the check, so concurrent requests cannot all pass the
//! last unit) and added to the counter; a reservation is dropped when the event is not
//! written and forgotten once the projection holds a counter read by a snapshot that saw the
//! event's transaction (`tollgate_storage::snapshot`: exact, where a time rule double-counted
//! an event whose commit a refresh saw before its caller did).
//! Jobs add to counters only when the worker bills them, so jobs in flight are not counted.
//! With several intake replicas, each sees the others' usage one refresh later: a hard limit
//! can be passed by at most what the other replicas accept within `refresh_ms`.
//!
//! # Freshness, start-up and outages
//! Billing announces every subscription change as a `subscription.updated` event (outbox →
//! relay → the events exchange); each intake process listens on a queue of its own and runs
//! a change read as soon as one arrives ([`Entitlements::spawn_event_listener`]). Besides,
//! every `entitlements.refresh_ms` (200 ms) the task reads the rows changed since the
//! previous read minus `entitlements.overlap_ms` (see `tollgate_storage::entitlements` for
//! why the windows overlap and why re-applying rows is harmless); every
//! `entitlements.full_resync_secs` (60 s) it reads everything again. Until the first read
//! succeeds, gating cannot tell an enforced tenant from another, so every check answers 503
//! `ENTITLEMENTS_UNAVAILABLE` with `Retry-After: 1` (for a batch of events: the whole
//! request; nothing written) rather than wrongly refusing or wrongly allowing; `start` waits
//! up to `entitlements.startup_wait_ms` for that first read. When the database becomes
//! unreachable later, the last projection stays in force (the writes that follow a check
//! need the database anyway) and refreshes retry every tick.
//!
//! # Repeats
//! A refused request that repeats an accepted one (same job idempotency key, same event id)
//! gets the first answer instead of the refusal: the handlers look that up, in the database,
//! only on the refusal path.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use diesel_async::AsyncPgConnection;
use prometheus::{Gauge, IntCounterVec, Opts, Registry};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tollgate_domain::usage::Subject;
use tollgate_messaging::Broker;
use tollgate_runtime::rate::PerMinuteLimits;
use tollgate_storage::entitlements::{
    self as rows, AccountNameRow, PlanEntitlementsRow, QuotaCounterRow, SubscriptionGateRow,
    WorkspaceNameRow,
};
use tollgate_storage::snapshot::{Snapshot, TransactionId};
use tollgate_storage::{PgPool, StorageError};
use uuid::Uuid;

use crate::config::EntitlementsConfig;

/// Why a job or an event was refused at intake (issue 4, "Entitlements at intake"). The
/// HTTP status of each is in `crate::error`; the codes are stable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GateRefusal {
    /// `BILLING_ENTITY_REQUIRED` (422): the tenant enforces billing and the request names no
    /// workspace or account.
    #[error(
        "billing is enforced for this tenant: name the billing entity (`workspace` or `account`)"
    )]
    EntityRequired,
    /// `SUBSCRIPTION_REQUIRED` (402): the billing entity has no live subscription (none, or
    /// canceled).
    #[error("the billing entity has no live subscription")]
    SubscriptionRequired,
    /// `SUBSCRIPTION_SUSPENDED` (402): the subscription is suspended (dunning ran out).
    #[error("the billing entity's subscription is suspended")]
    SubscriptionSuspended,
    /// `FEATURE_NOT_IN_PLAN` (403): the job type needs a feature the plan in force lacks.
    #[error(
        "job type `{job_type}` needs feature `{feature}`, which plan `{plan}` does not include"
    )]
    FeatureNotInPlan {
        job_type: String,
        feature: String,
        /// `<plan code> v<version>`.
        plan: String,
    },
    /// `PLAN_RATE_LIMITED` (429, `Retry-After`): the subscription's job submissions passed
    /// its plan's `requests_per_minute`.
    #[error(
        "plan `{plan}` allows {limit} job submissions per minute; retry in {retry_after_secs} s"
    )]
    RateLimited {
        /// `<plan code> v<version>`.
        plan: String,
        /// Job submissions per minute.
        limit: u32,
        /// Seconds until the next submission is allowed (at least 1).
        retry_after_secs: u64,
    },
    /// `QUOTA_EXCEEDED` (402): the hard limit of a quota is reached.
    #[error("quota `{metric}` exhausted for this period: {usage} of {limit} units used")]
    QuotaExceeded {
        /// The quota's metric: a code or a prefix pattern (`job.*`).
        metric: String,
        /// Units counted in the current period before this request.
        usage: i64,
        /// Units this request would add (an event's weighted units; 0 for a job, whose cost
        /// is known only when it completes).
        requested: i64,
        /// The hard limit, units.
        limit: i64,
        /// When the period ends and the counter starts again from 0.
        period_end: DateTime<Utc>,
    },
    /// `ENTITLEMENTS_UNAVAILABLE` (503): the projection has not been loaded yet.
    #[error("entitlements are not loaded yet; retry shortly")]
    Unavailable,
}

impl GateRefusal {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::EntityRequired => "BILLING_ENTITY_REQUIRED",
            Self::SubscriptionRequired => "SUBSCRIPTION_REQUIRED",
            Self::SubscriptionSuspended => "SUBSCRIPTION_SUSPENDED",
            Self::FeatureNotInPlan { .. } => "FEATURE_NOT_IN_PLAN",
            Self::RateLimited { .. } => "PLAN_RATE_LIMITED",
            Self::QuotaExceeded { .. } => "QUOTA_EXCEEDED",
            Self::Unavailable => "ENTITLEMENTS_UNAVAILABLE",
        }
    }

    /// Machine-readable facts for the error body's `details`.
    pub fn details(&self) -> Option<serde_json::Value> {
        match self {
            Self::FeatureNotInPlan {
                job_type,
                feature,
                plan,
            } => {
                Some(serde_json::json!({ "job_type": job_type, "feature": feature, "plan": plan }))
            }
            Self::RateLimited {
                plan,
                limit,
                retry_after_secs,
            } => Some(serde_json::json!({
                "plan": plan,
                "limit": limit,
                "retry_after_secs": retry_after_secs,
            })),
            Self::QuotaExceeded {
                metric,
                usage,
                requested,
                limit,
                period_end,
            } => Some(serde_json::json!({
                "metric": metric,
                "usage": usage,
                "requested": requested,
                "limit": limit,
                "period_end": period_end,
            })),
            _ => None,
        }
    }

    /// The `outcome` label of `tollgate_entitlement_checks_total`.
    fn outcome(&self) -> &'static str {
        match self {
            Self::EntityRequired => "entity_required",
            Self::SubscriptionRequired => "subscription_required",
            Self::SubscriptionSuspended => "subscription_suspended",
            Self::FeatureNotInPlan { .. } => "feature_not_in_plan",
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::Unavailable => "unavailable",
        }
    }
}

/// A soft limit passed by an accepted request. Its `Display` is the value of the
/// `tollgate-quota-warning` response header: `<metric> soft limit exceeded (<used>/<limit>)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaWarning {
    /// The quota's metric (code or pattern).
    pub metric: String,
    /// Units used in the period, this request's included (for a job: before it).
    pub used: i64,
    /// The soft limit, units.
    pub limit: i64,
}

impl fmt::Display for QuotaWarning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} soft limit exceeded ({}/{})",
            self.metric, self.used, self.limit
        )
    }
}

/// The response header that carries each [`QuotaWarning`].
pub const QUOTA_WARNING_HEADER: &str = "tollgate-quota-warning";

/// A passed check. For an event it holds the units it reserved against its quotas until the
/// caller says whether the event was written: [`Gate::commit`] when it was, drop otherwise
/// (the reservation is released).
#[derive(Debug, Default)]
#[must_use = "commit the gate once the usage is written; dropping it releases its reservation"]
pub struct Gate {
    warnings: Vec<QuotaWarning>,
    hold: Option<Hold>,
}

impl Gate {
    /// Soft limits this request passes.
    pub fn warnings(&self) -> &[QuotaWarning] {
        &self.warnings
    }

    /// The usage was written, by `written_by` for an event (its reservation counts until the
    /// projection holds a counter read by a snapshot that saw that transaction); `None` for a
    /// job, which reserves nothing (an event's reservation is released then). Returns the
    /// warnings.
    pub fn commit(mut self, written_by: Option<TransactionId>) -> Vec<QuotaWarning> {
        if let (Some(hold), Some(transaction)) = (self.hold.as_mut(), written_by) {
            hold.commit(transaction);
        }
        std::mem::take(&mut self.warnings)
    }
}

/// The gate of one tenant's requests, shared by all handlers. Cheap to check (a read lock on
/// in-memory maps); see the module docs for the rules and the refresh.
pub struct Entitlements {
    projection: RwLock<Projection>,
    book: Arc<Mutex<Book>>,
    /// One refresh at a time: a change read decides what to read from the projection it
    /// will update.
    refreshing: tokio::sync::Mutex<()>,
    config: EntitlementsConfig,
    checks: IntCounterVec,
    refreshes: IntCounterVec,
    refreshed_at: Gauge,
    /// Woken by billing's `subscription.*` events ([`Entitlements::spawn_event_listener`]):
    /// the refresh task reads the changes at once instead of at its next tick.
    wake: tokio::sync::Notify,
    /// Job submission buckets per subscription.
    rates: PerMinuteLimits<Uuid>,
}

impl Entitlements {
    /// An empty, not yet loaded projection; registers its metrics:
    /// `tollgate_entitlement_checks_total{kind=job|event, outcome}` (outcome: `open` for
    /// tenants not enforced, `allowed`, `soft_limit`, or the refusal),
    /// `tollgate_entitlement_refreshes_total{kind=full|changes, result=ok|error}` and
    /// `tollgate_entitlements_refreshed_timestamp_seconds` (Unix time of the last successful
    /// refresh). Errors: a metric is already registered.
    pub fn new(
        config: &EntitlementsConfig,
        registry: &Registry,
    ) -> Result<Arc<Self>, prometheus::Error> {
        let checks = IntCounterVec::new(
            Opts::new(
                "tollgate_entitlement_checks_total",
                "Entitlement checks at intake by kind and outcome",
            ),
            &["kind", "outcome"],
        )?;
        let refreshes = IntCounterVec::new(
            Opts::new(
                "tollgate_entitlement_refreshes_total",
                "Entitlement projection refreshes by kind and result",
            ),
            &["kind", "result"],
        )?;
        let refreshed_at = Gauge::new(
            "tollgate_entitlements_refreshed_timestamp_seconds",
            "Unix time of the last successful entitlement refresh",
        )?;
        registry.register(Box::new(checks.clone()))?;
        registry.register(Box::new(refreshes.clone()))?;
        registry.register(Box::new(refreshed_at.clone()))?;
        Ok(Arc::new(Self {
            projection: RwLock::new(Projection::default()),
            book: Arc::new(Mutex::new(Book::default())),
            refreshing: tokio::sync::Mutex::new(()),
            config: config.clone(),
            checks,
            refreshes,
            refreshed_at,
            wake: tokio::sync::Notify::new(),
            rates: PerMinuteLimits::default(),
        }))
    }

    /// Whether a load has succeeded (before that every check answers
    /// [`GateRefusal::Unavailable`]).
    pub fn is_loaded(&self) -> bool {
        read(&self.projection).read_at.is_some()
    }

    /// May the tenant submit a job of `job_type` billed to `account` (the owner of the
    /// workspace the job names; `None` when it names none)? `required_feature` is the job
    /// type's. Errors: [`GateRefusal`], per the module's rules.
    pub fn check_job(
        &self,
        tenant: Uuid,
        account: Option<Uuid>,
        job_type: &str,
        required_feature: Option<&str>,
    ) -> Result<Gate, GateRefusal> {
        let result = self.evaluate(
            tenant,
            Entity::Resolved(account),
            Usage::Job {
                job_type,
                required_feature,
            },
            Utc::now(),
        );
        self.count("job", &result);
        result.map(|(gate, _)| gate)
    }

    /// May the tenant record an event of `metric` worth `weighted_units`, stamped
    /// `occurred_at`, for `subject` (a workspace or an account external id, or none)? A
    /// passed check reserves the units; commit the [`Gate`] once the event is written.
    /// Errors: [`GateRefusal`], per the module's rules.
    pub fn check_event(
        &self,
        tenant: Uuid,
        subject: &Subject,
        metric: &str,
        weighted_units: i64,
        occurred_at: DateTime<Utc>,
    ) -> Result<Gate, GateRefusal> {
        let result = self.evaluate(
            tenant,
            Entity::Named(subject),
            Usage::Event {
                metric,
                units: weighted_units,
                occurred_at,
            },
            Utc::now(),
        );
        self.count("event", &result);
        result.map(|(gate, _)| gate)
    }

    fn count(&self, kind: &str, result: &Result<(Gate, bool), GateRefusal>) {
        let outcome = match result {
            Ok((_, false)) => "open",
            Ok((gate, true)) if gate.warnings.is_empty() => "allowed",
            Ok(_) => "soft_limit",
            Err(refusal) => refusal.outcome(),
        };
        self.checks.with_label_values(&[kind, outcome]).inc();
    }

    /// The decision; the flag says whether the tenant is enforced.
    fn evaluate(
        &self,
        tenant: Uuid,
        entity: Entity<'_>,
        usage: Usage<'_>,
        now: DateTime<Utc>,
    ) -> Result<(Gate, bool), GateRefusal> {
        let projection = read(&self.projection);
        if projection.read_at.is_none() {
            return Err(GateRefusal::Unavailable);
        }
        if !projection.enforced.contains(&tenant) {
            return Ok((Gate::default(), false));
        }
        let account = match entity {
            Entity::Resolved(account) => account.ok_or(GateRefusal::EntityRequired)?,
            Entity::Named(Subject::None) => return Err(GateRefusal::EntityRequired),
            // As the ledger attributes it: a converted account's usage stamped at or after
            // its conversion belongs to the organization.
            Entity::Named(Subject::Account(name)) => projection
                .account_names
                .get(&tenant)
                .and_then(|names| names.get(name.as_str()))
                .map(|name| name.entity_at(usage.at(now)))
                .ok_or(GateRefusal::SubscriptionRequired)?,
            Entity::Named(Subject::Workspace(name)) => projection
                .workspace_names
                .get(&tenant)
                .and_then(|names| names.get(name.as_str()))
                .copied()
                .ok_or(GateRefusal::SubscriptionRequired)?,
        };
        let subscription = projection
            .subscriptions
            .get(&account)
            .filter(|s| s.tenant_id == tenant)
            .ok_or(GateRefusal::SubscriptionRequired)?;
        if subscription.status == Status::Suspended {
            return Err(GateRefusal::SubscriptionSuspended);
        }
        // Plan versions are read with the subscriptions that name them; a miss would be a
        // projection bug, and refusing with 503 is safer than guessing.
        let plan = projection
            .plans
            .get(&subscription.plan_in_force(now))
            .ok_or(GateRefusal::Unavailable)?;
        if let Usage::Job {
            job_type,
            required_feature: Some(feature),
        } = usage
        {
            if !plan.features.contains(feature) {
                return Err(GateRefusal::FeatureNotInPlan {
                    job_type: job_type.to_owned(),
                    feature: feature.to_owned(),
                    plan: format!("{} v{}", plan.code, plan.version),
                });
            }
        }
        if let (Usage::Job { .. }, Some(limit)) = (&usage, plan.requests_per_minute) {
            self.rates
                .take(subscription.id, limit)
                .map_err(|retry_after_secs| GateRefusal::RateLimited {
                    plan: format!("{} v{}", plan.code, plan.version),
                    limit,
                    retry_after_secs,
                })?;
        }
        if plan.quotas.is_empty() {
            return Ok((Gate::default(), true));
        }
        let metric = match usage {
            Usage::Job { job_type, .. } => format!("job.{job_type}"),
            Usage::Event { metric, .. } => metric.to_owned(),
        };
        let units = match usage {
            Usage::Job { .. } => 0,
            Usage::Event {
                units, occurred_at, ..
            } => {
                let in_period = occurred_at >= subscription.period_start
                    && occurred_at < subscription.period_end;
                if units <= 0 || !in_period {
                    return Ok((Gate::default(), true));
                }
                units
            }
        };
        let quotas: Vec<&Quota> = plan.quotas.iter().filter(|q| q.matches(&metric)).collect();
        if quotas.is_empty() {
            return Ok((Gate::default(), true));
        }

        // Check and reserve under one lock of the book, so two requests cannot both take the
        // last units.
        let mut book = lock(&self.book);
        let mut warnings = Vec::new();
        let mut keys = Vec::new();
        for quota in quotas {
            let key = (subscription.id, quota.metric.clone());
            let counted = projection
                .counters
                .get(&key)
                .filter(|c| c.period_start == subscription.period_start)
                .map_or(0, |c| c.used);
            let used = counted.saturating_add(book.held(&key, subscription.period_start));
            let after = used.saturating_add(units);
            // A job's cost is unknown until it completes: it is refused once the quota is
            // used up. An event is refused when its own units would pass the limit.
            let passes = |limit: i64| match usage {
                Usage::Job { .. } => used >= limit,
                Usage::Event { .. } => after > limit,
            };
            if let Some(limit) = quota.hard_limit() {
                if passes(limit) {
                    return Err(GateRefusal::QuotaExceeded {
                        metric: quota.metric.clone(),
                        usage: used,
                        requested: units,
                        limit,
                        period_end: subscription.period_end,
                    });
                }
            }
            let soft = quota.soft_limit();
            if passes(soft) {
                warnings.push(QuotaWarning {
                    metric: quota.metric.clone(),
                    used: after,
                    limit: soft,
                });
            }
            keys.push(key);
        }
        let hold = (units > 0).then(|| {
            book.reserve(
                Arc::clone(&self.book),
                keys,
                units,
                subscription.period_start,
            )
        });
        Ok((Gate { warnings, hold }, true))
    }

    /// Reads the whole projection (`full`) or what changed since the previous read, and
    /// applies it. Errors: the database is unavailable or a query failed; the projection is
    /// then unchanged.
    pub async fn refresh(&self, pool: &PgPool, full: bool) -> Result<(), StorageError> {
        let _one_at_a_time = self.refreshing.lock().await;
        let since = read(&self.projection).read_at;
        let full = full || since.is_none();
        let kind = if full { "full" } else { "changes" };
        let result = self.read_and_apply(pool, since.filter(|_| !full)).await;
        let outcome = if result.is_ok() { "ok" } else { "error" };
        self.refreshes.with_label_values(&[kind, outcome]).inc();
        if result.is_ok() {
            self.refreshed_at.set(Utc::now().timestamp() as f64);
        }
        result
    }

    async fn read_and_apply(
        &self,
        pool: &PgPool,
        previous: Option<DateTime<Utc>>,
    ) -> Result<(), StorageError> {
        let mut conn = tollgate_storage::pool::get(pool).await?;
        let overlap = chrono::Duration::milliseconds(
            i64::try_from(self.config.overlap_ms).unwrap_or(i64::MAX),
        );
        let (snapshot, reading) = conn
            .build_transaction()
            .read_only()
            .repeatable_read()
            .run(async |conn| {
                // Every statement of the transaction reads this snapshot.
                let snapshot = tollgate_storage::snapshot::current_snapshot(conn).await?;
                let reading = match previous {
                    None => read_everything(conn).await?,
                    Some(at) => self.read_changes(conn, at - overlap).await?,
                };
                Ok::<_, StorageError>((snapshot, reading))
            })
            .await?;
        // Both under the projection's write lock: no check sees the new counters with the
        // reservations they include.
        let mut projection = write(&self.projection);
        projection.apply(reading);
        lock(&self.book).forget_seen_by(snapshot);
        Ok(())
    }

    /// What changed after `since`, plus what newly live subscriptions need (their plan
    /// versions and the names of their accounts and workspaces).
    async fn read_changes(
        &self,
        conn: &mut AsyncPgConnection,
        since: DateTime<Utc>,
    ) -> Result<Reading, StorageError> {
        let read_at = rows::database_now(conn).await?;
        let tenants = rows::tenants_changed_since(conn, since).await?;
        let subscriptions = rows::subscriptions_changed_since(conn, since).await?;
        let counters = rows::quota_counters_changed_since(conn, since).await?;
        let mut account_names = rows::accounts_converted_since(conn, since).await?;
        let mut workspace_names = rows::workspace_owners_changed_since(conn, since).await?;
        let (new_entities, missing_plans) = {
            let projection = read(&self.projection);
            let new_entities: Vec<Uuid> = subscriptions
                .iter()
                .filter(|s| s.status != "canceled")
                .filter(|s| {
                    projection.subscriptions.get(&s.account_id).map(|k| k.id)
                        != Some(s.subscription_id)
                })
                .map(|s| s.account_id)
                .collect();
            let missing_plans: Vec<Uuid> = plan_ids(&subscriptions)
                .into_iter()
                .filter(|id| !projection.plans.contains_key(id))
                .collect();
            (new_entities, missing_plans)
        };
        let plans = rows::plan_entitlements(conn, &missing_plans).await?;
        account_names.extend(rows::account_names_billed_to(conn, &new_entities).await?);
        workspace_names.extend(rows::workspace_names_owned_by(conn, &new_entities).await?);
        Ok(Reading {
            read_at,
            enforced: Enforced::Changed(
                tenants
                    .into_iter()
                    .map(|t| (t.tenant_id, t.billing_enforced))
                    .collect(),
            ),
            subscriptions,
            plans,
            counters,
            account_names,
            workspace_names,
        })
    }

    /// Starts the refresh task: a change read every `refresh_ms`, a full read every
    /// `full_resync_secs` (and until the first load succeeds). Stops when `cancel` fires.
    pub fn spawn_refresh(
        self: &Arc<Self>,
        pool: PgPool,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.refresh_loop(pool, cancel).await })
    }

    /// Listens for billing's `subscription.*` events on the events exchange (one exclusive,
    /// auto-deleted queue per process, so every replica hears every event) and wakes the
    /// refresh task for each, so a subscription change made in billing reaches gating as soon
    /// as the outbox relay publishes it. The periodic change read stays as the safety net
    /// for events missed while the broker was away; after every (re)connection one refresh is
    /// triggered for the same reason. Stops when `cancel` fires.
    pub fn spawn_event_listener(
        self: &Arc<Self>,
        broker: Broker,
        cancel: CancellationToken,
    ) -> JoinHandle<()> {
        let this = Arc::clone(self);
        tokio::spawn(async move { this.listen(broker, cancel).await })
    }

    async fn listen(self: Arc<Self>, broker: Broker, cancel: CancellationToken) {
        use futures_util::StreamExt;
        use lapin::options::{BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
        use lapin::types::FieldTable;
        let pause = |ms| tokio::time::sleep(Duration::from_millis(ms));
        while !cancel.is_cancelled() {
            if !broker.is_ready() {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    _ = pause(200) => continue,
                }
            }
            let exchange = broker.topology().events_exchange();
            let subscribed = async {
                let channel = broker.open_channel().await?;
                let queue = channel
                    .queue_declare(
                        "".into(),
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                channel
                    .queue_bind(
                        queue.name().as_str().into(),
                        exchange.as_str().into(),
                        "subscription.#".into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                let consumer = channel
                    .basic_consume(
                        queue.name().as_str().into(),
                        "intake-entitlements".into(),
                        BasicConsumeOptions {
                            no_ack: true,
                            ..Default::default()
                        },
                        FieldTable::default(),
                    )
                    .await?;
                Ok::<_, tollgate_messaging::MessagingError>((channel, consumer))
            }
            .await;
            let (_channel, mut consumer) = match subscribed {
                Ok(pair) => pair,
                Err(error) => {
                    tracing::warn!(%error, "cannot listen for subscription events; retrying");
                    tokio::select! {
                        _ = cancel.cancelled() => return,
                        _ = pause(500) => continue,
                    }
                }
            };
            // Whatever changed while nobody listened.
            self.wake.notify_one();
            loop {
                tokio::select! {
                    _ = cancel.cancelled() => return,
                    next = consumer.next() => match next {
                        Some(Ok(_)) => self.wake.notify_one(),
                        _ => break,
                    },
                }
            }
        }
    }

    async fn refresh_loop(self: Arc<Self>, pool: PgPool, cancel: CancellationToken) {
        let every = Duration::from_millis(self.config.refresh_ms);
        let full_every = Duration::from_secs(self.config.full_resync_secs);
        let mut last_full = Instant::now();
        let mut failing_since: Option<Instant> = None;
        let mut last_report = Instant::now();
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
                _ = self.wake.notified() => {}
            }
            let full = !self.is_loaded() || last_full.elapsed() >= full_every;
            match self.refresh(&pool, full).await {
                Ok(()) => {
                    if full {
                        last_full = Instant::now();
                    }
                    if let Some(since) = failing_since.take() {
                        tracing::info!(
                            down_for_ms = since.elapsed().as_millis() as u64,
                            "entitlement refresh recovered"
                        );
                    }
                }
                Err(error) => {
                    // Once when it starts failing, then every 30 s: a database outage
                    // should not flood the log at five lines a second.
                    let first = failing_since.is_none();
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if first || last_report.elapsed() >= Duration::from_secs(30) {
                        last_report = Instant::now();
                        tracing::warn!(
                            error = %error,
                            failing_for_ms = since.elapsed().as_millis() as u64,
                            "entitlement refresh failed; the last projection stays in force"
                        );
                    }
                }
            }
        }
    }
}

/// Everything gating needs, all tenants.
async fn read_everything(conn: &mut AsyncPgConnection) -> Result<Reading, StorageError> {
    let read_at = rows::database_now(conn).await?;
    let enforced = rows::enforced_tenants(conn).await?;
    let subscriptions = rows::live_subscriptions(conn).await?;
    let plans = rows::plan_entitlements(conn, &plan_ids(&subscriptions)).await?;
    let counters = rows::current_quota_counters(conn).await?;
    let entities: Vec<Uuid> = subscriptions.iter().map(|s| s.account_id).collect();
    let account_names = rows::account_names_billed_to(conn, &entities).await?;
    let workspace_names = rows::workspace_names_owned_by(conn, &entities).await?;
    Ok(Reading {
        read_at,
        enforced: Enforced::All(enforced),
        subscriptions,
        plans,
        counters,
        account_names,
        workspace_names,
    })
}

fn plan_ids(subscriptions: &[SubscriptionGateRow]) -> Vec<Uuid> {
    subscriptions
        .iter()
        .filter(|s| s.status != "canceled")
        .flat_map(|s| std::iter::once(s.plan_version_id).chain(s.grace_plan_version_id))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect()
}

/// Who the usage is for: an account already resolved (jobs), or a name to resolve (events).
#[derive(Clone, Copy)]
enum Entity<'a> {
    Resolved(Option<Uuid>),
    Named(&'a Subject),
}

#[derive(Clone, Copy)]
enum Usage<'a> {
    Job {
        job_type: &'a str,
        required_feature: Option<&'a str>,
    },
    Event {
        metric: &'a str,
        units: i64,
        occurred_at: DateTime<Utc>,
    },
}

impl Usage<'_> {
    /// When the usage happens: an event's timestamp, a job's submission.
    fn at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match self {
            Self::Job { .. } => now,
            Self::Event { occurred_at, .. } => *occurred_at,
        }
    }
}

/// One read from the database.
struct Reading {
    /// The database clock when the read began; the next change read starts there (minus
    /// the overlap).
    read_at: DateTime<Utc>,
    enforced: Enforced,
    subscriptions: Vec<SubscriptionGateRow>,
    plans: Vec<PlanEntitlementsRow>,
    counters: Vec<QuotaCounterRow>,
    account_names: Vec<AccountNameRow>,
    workspace_names: Vec<WorkspaceNameRow>,
}

enum Enforced {
    /// Every enforced tenant (a full read).
    All(Vec<Uuid>),
    /// Tenants whose switch may have moved, with its value now.
    Changed(Vec<(Uuid, bool)>),
}

/// Subscription statuses the projection keeps (canceled ones are dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Status {
    Trialing,
    Active,
    PastDue,
    Suspended,
}

impl Status {
    /// `None` for `canceled` (and anything unknown: no entitlements).
    fn parse(status: &str) -> Option<Self> {
        match status {
            "trialing" => Some(Self::Trialing),
            "active" => Some(Self::Active),
            "past_due" => Some(Self::PastDue),
            "suspended" => Some(Self::Suspended),
            _ => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Subscription {
    id: Uuid,
    tenant_id: Uuid,
    status: Status,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    plan: Uuid,
    grace_plan: Option<Uuid>,
    grace_until: Option<DateTime<Utc>>,
}

impl Subscription {
    /// The plan version whose features and quotas apply at `now`: the previous one during
    /// a downgrade's grace, else the current one.
    fn plan_in_force(&self, now: DateTime<Utc>) -> Uuid {
        match (self.grace_plan, self.grace_until) {
            (Some(grace), Some(until)) if now < until => grace,
            _ => self.plan,
        }
    }
}

#[derive(Debug, Clone)]
struct Plan {
    code: String,
    version: i32,
    features: HashSet<String>,
    quotas: Vec<Quota>,
    /// Job submissions per minute per subscription; `None`: unlimited.
    requests_per_minute: Option<u32>,
}

#[derive(Debug, Clone)]
struct Quota {
    metric: String,
    quantity: i64,
    soft_pct: i32,
    hard_pct: Option<i32>,
}

impl Quota {
    /// Exact code, or a `x.*` pattern matching every code that starts with `x.` (as the
    /// ledger trigger counts them).
    fn matches(&self, metric: &str) -> bool {
        match self.metric.strip_suffix('*') {
            Some(prefix) if prefix.ends_with('.') => metric.starts_with(prefix),
            _ => self.metric == metric,
        }
    }

    fn limit(&self, pct: i32) -> i64 {
        let units = i128::from(self.quantity) * i128::from(pct) / 100;
        i64::try_from(units).unwrap_or(i64::MAX)
    }

    fn soft_limit(&self) -> i64 {
        self.limit(self.soft_pct)
    }

    fn hard_limit(&self) -> Option<i64> {
        self.hard_pct.map(|pct| self.limit(pct))
    }
}

#[derive(Debug, Clone, Copy)]
struct Counter {
    period_start: DateTime<Utc>,
    used: i64,
}

/// What an account name bills to.
#[derive(Debug, Clone, Copy)]
struct AccountName {
    account_id: Uuid,
    converted_to: Option<Uuid>,
    converted_at: Option<DateTime<Utc>>,
}

impl AccountName {
    /// The billing entity for usage at `at` (as `tollgate_storage::accounts::entity_at`).
    fn entity_at(&self, at: DateTime<Utc>) -> Uuid {
        match (self.converted_to, self.converted_at) {
            (Some(org), Some(when)) if at >= when => org,
            _ => self.account_id,
        }
    }
}

/// The in-memory projection.
#[derive(Default)]
struct Projection {
    /// The database clock of the last successful read; `None` until the first.
    read_at: Option<DateTime<Utc>>,
    enforced: HashSet<Uuid>,
    /// Billing entity (account id) → its subscription that is not canceled.
    subscriptions: HashMap<Uuid, Subscription>,
    /// Plan version id → entitlements.
    plans: HashMap<Uuid, Plan>,
    /// (subscription id, quota metric) → the newest period's counter.
    counters: HashMap<(Uuid, String), Counter>,
    /// Tenant → account external id → what it bills to. Holds the names of subscribed
    /// entities (a miss means: no live subscription, or no such account).
    account_names: HashMap<Uuid, HashMap<String, AccountName>>,
    /// Tenant → workspace external id → its current owner.
    workspace_names: HashMap<Uuid, HashMap<String, Uuid>>,
}

impl Projection {
    /// Applies a read. A full read replaces everything; a change read sets each row's values
    /// (absolute, so a row read twice changes nothing the second time).
    fn apply(&mut self, reading: Reading) {
        match reading.enforced {
            Enforced::All(tenants) => {
                *self = Self {
                    enforced: tenants.into_iter().collect(),
                    ..Self::default()
                };
            }
            Enforced::Changed(tenants) => {
                for (tenant, enforced) in tenants {
                    if enforced {
                        self.enforced.insert(tenant);
                    } else {
                        self.enforced.remove(&tenant);
                    }
                }
            }
        }
        for row in reading.subscriptions {
            self.apply_subscription(row);
        }
        for row in reading.plans {
            self.plans.insert(
                row.plan_version_id,
                Plan {
                    code: row.plan_code,
                    version: row.version,
                    features: row.features.into_iter().collect(),
                    requests_per_minute: row
                        .requests_per_minute
                        .and_then(|n| u32::try_from(n).ok())
                        .filter(|n| *n > 0),
                    quotas: row
                        .quotas
                        .into_iter()
                        .map(|q| Quota {
                            metric: q.metric,
                            quantity: q.quantity,
                            soft_pct: q.soft_pct,
                            hard_pct: q.hard_pct,
                        })
                        .collect(),
                },
            );
        }
        for row in reading.counters {
            let key = (row.subscription_id, row.metric);
            let newer = self
                .counters
                .get(&key)
                .is_none_or(|c| c.period_start <= row.period_start);
            if newer {
                self.counters.insert(
                    key,
                    Counter {
                        period_start: row.period_start,
                        used: row.used,
                    },
                );
            }
        }
        for row in reading.account_names {
            let relevant = self.subscriptions.contains_key(&row.account_id)
                || row
                    .converted_to
                    .is_some_and(|org| self.subscriptions.contains_key(&org))
                || self
                    .account_names
                    .get(&row.tenant_id)
                    .is_some_and(|names| names.contains_key(&row.external_id));
            if relevant {
                self.account_names.entry(row.tenant_id).or_default().insert(
                    row.external_id,
                    AccountName {
                        account_id: row.account_id,
                        converted_to: row.converted_to,
                        converted_at: row.converted_at,
                    },
                );
            }
        }
        for row in reading.workspace_names {
            let relevant = self.subscriptions.contains_key(&row.account_id)
                || self
                    .workspace_names
                    .get(&row.tenant_id)
                    .is_some_and(|names| names.contains_key(&row.external_id));
            if relevant {
                self.workspace_names
                    .entry(row.tenant_id)
                    .or_default()
                    .insert(row.external_id, row.account_id);
            }
        }
        self.read_at = Some(reading.read_at);
    }

    /// A live row replaces the account's subscription; a canceled one removes it only if it
    /// is the one held (a newer subscription of the account stays).
    fn apply_subscription(&mut self, row: SubscriptionGateRow) {
        match Status::parse(&row.status) {
            Some(status) => {
                self.subscriptions.insert(
                    row.account_id,
                    Subscription {
                        id: row.subscription_id,
                        tenant_id: row.tenant_id,
                        status,
                        period_start: row.current_period_start,
                        period_end: row.current_period_end,
                        plan: row.plan_version_id,
                        grace_plan: row.grace_plan_version_id,
                        grace_until: row.grace_until,
                    },
                );
            }
            None => {
                if self
                    .subscriptions
                    .get(&row.account_id)
                    .is_some_and(|s| s.id == row.subscription_id)
                {
                    self.subscriptions.remove(&row.account_id);
                }
            }
        }
    }
}

/// (subscription id, quota metric).
type CounterKey = (Uuid, String);

/// Units this process reserved against counters: taken at check time, released when the
/// event was not written, forgotten once the database counter includes them.
#[derive(Default)]
struct Book {
    next_id: u64,
    held: HashMap<CounterKey, Vec<Reservation>>,
    /// The snapshot of the counters in the projection: a reservation committed by a
    /// transaction it saw is counted there already.
    seen: Option<Snapshot>,
}

#[derive(Debug)]
struct Reservation {
    id: u64,
    units: i64,
    period_start: DateTime<Utc>,
    /// The transaction that wrote the event; `None` while it is in flight.
    committed: Option<TransactionId>,
}

impl Book {
    /// Units held for `key` in the period starting at `period_start`.
    fn held(&self, key: &CounterKey, period_start: DateTime<Utc>) -> i64 {
        self.held.get(key).map_or(0, |list| {
            list.iter()
                .filter(|r| r.period_start == period_start)
                .map(|r| r.units)
                .fold(0i64, i64::saturating_add)
        })
    }

    fn reserve(
        &mut self,
        book: Arc<Mutex<Book>>,
        keys: Vec<CounterKey>,
        units: i64,
        period_start: DateTime<Utc>,
    ) -> Hold {
        self.next_id += 1;
        let id = self.next_id;
        for key in &keys {
            self.held.entry(key.clone()).or_default().push(Reservation {
                id,
                units,
                period_start,
                committed: None,
            });
        }
        Hold {
            book,
            id,
            keys,
            committed: false,
        }
    }

    fn release(&mut self, id: u64, keys: &[CounterKey]) {
        for key in keys {
            if let Some(list) = self.held.get_mut(key) {
                list.retain(|r| r.id != id);
                if list.is_empty() {
                    self.held.remove(key);
                }
            }
        }
    }

    /// The event of reservation `id` was written by `transaction`: the reservation counts
    /// until a read that saw it is applied, or is dropped now if the projection's counters
    /// were read by a snapshot that saw it already.
    fn mark_committed(&mut self, id: u64, keys: &[CounterKey], transaction: TransactionId) {
        if self
            .seen
            .as_ref()
            .is_some_and(|seen| seen.sees(transaction))
        {
            self.release(id, keys);
            return;
        }
        for key in keys {
            if let Some(list) = self.held.get_mut(key) {
                for r in list.iter_mut().filter(|r| r.id == id) {
                    r.committed = Some(transaction);
                }
            }
        }
    }

    /// Counters read by `snapshot` are now in the projection: drops the reservations whose
    /// transaction it saw (they are counted there) and remembers it for those that commit
    /// later.
    fn forget_seen_by(&mut self, snapshot: Snapshot) {
        self.held.retain(|_, list| {
            list.retain(|r| r.committed.is_none_or(|t| !snapshot.sees(t)));
            !list.is_empty()
        });
        self.seen = Some(snapshot);
    }
}

/// An event's reservation; released on drop unless committed.
struct Hold {
    book: Arc<Mutex<Book>>,
    id: u64,
    keys: Vec<CounterKey>,
    committed: bool,
}

impl Hold {
    fn commit(&mut self, transaction: TransactionId) {
        lock(&self.book).mark_committed(self.id, &self.keys, transaction);
        self.committed = true;
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        if !self.committed {
            lock(&self.book).release(self.id, &self.keys);
        }
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold")
            .field("id", &self.id)
            .field("keys", &self.keys)
            .field("committed", &self.committed)
            .finish()
    }
}

// A panic while holding one of these locks leaves plain maps behind, still usable.
fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn lock<T>(lock: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    lock.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> EntitlementsConfig {
        EntitlementsConfig {
            refresh_ms: 200,
            full_resync_secs: 60,
            overlap_ms: 5000,
            startup_wait_ms: 0,
        }
    }

    struct World {
        gate: Arc<Entitlements>,
        tenant: Uuid,
        account: Uuid,
        subscription: Uuid,
        period_start: DateTime<Utc>,
    }

    /// An enforced tenant, one account `acme` with workspace `ws` on an active subscription
    /// whose plan has feature `hd` and a quota of 10 `calls` (soft 100 %, hard 110 %).
    fn world() -> World {
        let gate = Entitlements::new(&config(), &Registry::new()).expect("metrics");
        let (tenant, account, subscription, plan) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let period_start = Utc::now() - chrono::Duration::days(1);
        write(&gate.projection).apply(Reading {
            read_at: Utc::now(),
            enforced: Enforced::All(vec![tenant]),
            subscriptions: vec![SubscriptionGateRow {
                subscription_id: subscription,
                tenant_id: tenant,
                account_id: account,
                account_external_id: "acme".into(),
                status: "active".into(),
                current_period_start: period_start,
                current_period_end: period_start + chrono::Duration::days(30),
                plan_version_id: plan,
                grace_plan_version_id: None,
                grace_until: None,
                updated_at: Utc::now(),
            }],
            plans: vec![PlanEntitlementsRow {
                plan_version_id: plan,
                plan_code: "pro".into(),
                version: 1,
                features: vec!["hd".into()],
                requests_per_minute: None,
                quotas: vec![rows::QuotaRow {
                    plan_version_id: plan,
                    metric: "calls".into(),
                    quantity: 10,
                    soft_pct: 100,
                    hard_pct: Some(110),
                }],
            }],
            counters: vec![],
            account_names: vec![AccountNameRow {
                tenant_id: tenant,
                external_id: "acme".into(),
                account_id: account,
                converted_to: None,
                converted_at: None,
            }],
            workspace_names: vec![WorkspaceNameRow {
                tenant_id: tenant,
                external_id: "ws".into(),
                workspace_id: Uuid::now_v7(),
                account_id: account,
            }],
        });
        World {
            gate,
            tenant,
            account,
            subscription,
            period_start,
        }
    }

    fn event(w: &World, subject: Subject, units: i64) -> Result<Gate, GateRefusal> {
        w.gate
            .check_event(w.tenant, &subject, "calls", units, Utc::now())
    }

    #[test]
    fn nothing_is_decided_before_the_first_load() {
        let gate = Entitlements::new(&config(), &Registry::new()).expect("metrics");
        assert_eq!(
            gate.check_job(Uuid::now_v7(), None, "x", None).err(),
            Some(GateRefusal::Unavailable)
        );
    }

    #[test]
    fn tenants_not_enforced_are_never_refused() {
        let w = world();
        let other = Uuid::now_v7();
        assert!(w.gate.check_job(other, None, "x", Some("hd")).is_ok());
        assert!(w
            .gate
            .check_event(other, &Subject::None, "calls", 1_000, Utc::now())
            .is_ok());
    }

    #[test]
    fn entity_subscription_and_feature_rules() {
        let w = world();
        let refusal = |r: Result<Gate, GateRefusal>| r.err().map(|e| e.code());
        assert_eq!(
            refusal(w.gate.check_job(w.tenant, None, "x", None)),
            Some("BILLING_ENTITY_REQUIRED")
        );
        assert_eq!(
            refusal(event(&w, Subject::None, 1)),
            Some("BILLING_ENTITY_REQUIRED")
        );
        assert_eq!(
            refusal(w.gate.check_job(w.tenant, Some(Uuid::now_v7()), "x", None)),
            Some("SUBSCRIPTION_REQUIRED")
        );
        assert_eq!(
            refusal(event(&w, Subject::Workspace("elsewhere".into()), 1)),
            Some("SUBSCRIPTION_REQUIRED")
        );
        assert!(w
            .gate
            .check_job(w.tenant, Some(w.account), "x", Some("hd"))
            .is_ok());
        assert_eq!(
            refusal(w.gate.check_job(w.tenant, Some(w.account), "x", Some("4k"))),
            Some("FEATURE_NOT_IN_PLAN")
        );
        assert!(event(&w, Subject::Account("acme".into()), 1).is_ok());
        assert!(event(&w, Subject::Workspace("ws".into()), 1).is_ok());
    }

    #[test]
    fn a_reservation_whose_commit_the_applied_read_saw_is_not_counted_twice() {
        let w = world();
        let held =
            || lock(&w.gate.book).held(&(w.subscription, "calls".to_owned()), w.period_start);
        // The refresh's snapshot saw transaction 50 commit before the request heard of it:
        // the counter it read holds the event already, so its reservation goes at once.
        lock(&w.gate.book).forget_seen_by(Snapshot {
            xmin: 51,
            xmax: 60,
            in_progress: vec![55],
        });
        let gate = event(&w, Subject::Workspace("ws".into()), 1).expect("within quota");
        assert_eq!(held(), 1);
        let _ = gate.commit(Some(TransactionId(50)));
        assert_eq!(held(), 0);
        // Transaction 55 was still running for that snapshot: held until a later read.
        let gate = event(&w, Subject::Workspace("ws".into()), 1).expect("within quota");
        let _ = gate.commit(Some(TransactionId(55)));
        assert_eq!(held(), 1);
        lock(&w.gate.book).forget_seen_by(Snapshot {
            xmin: 56,
            xmax: 70,
            in_progress: vec![],
        });
        assert_eq!(held(), 0);
    }

    #[test]
    fn soft_then_hard_limit_with_local_reservations() {
        let w = world();
        for n in 1..=10 {
            let gate = event(&w, Subject::Workspace("ws".into()), 1).expect("within quota");
            assert!(gate.warnings().is_empty(), "event {n}");
            assert!(gate.commit(Some(TransactionId(100 + n))).is_empty());
        }
        let gate = event(&w, Subject::Workspace("ws".into()), 1).expect("within hard limit");
        assert_eq!(
            gate.commit(Some(TransactionId(111)))
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["calls soft limit exceeded (11/10)"]
        );
        let refused = event(&w, Subject::Workspace("ws".into()), 1).err();
        assert!(
            matches!(
                refused,
                Some(GateRefusal::QuotaExceeded {
                    usage: 11,
                    limit: 11,
                    requested: 1,
                    ..
                })
            ),
            "{refused:?}"
        );

        // A released reservation frees its units; a refresh that read the counter replaces
        // the committed ones its snapshot saw.
        write(&w.gate.projection).apply(Reading {
            read_at: Utc::now(),
            enforced: Enforced::Changed(vec![]),
            subscriptions: vec![],
            plans: vec![],
            counters: vec![QuotaCounterRow {
                subscription_id: w.subscription,
                metric: "calls".into(),
                period_start: w.period_start,
                used: 5,
                updated_at: Utc::now(),
            }],
            account_names: vec![],
            workspace_names: vec![],
        });
        lock(&w.gate.book).forget_seen_by(Snapshot {
            xmin: 112,
            xmax: 112,
            in_progress: vec![],
        });
        let gate = event(&w, Subject::Workspace("ws".into()), 6).expect("5 + 6 = 11");
        drop(gate);
        assert!(event(&w, Subject::Workspace("ws".into()), 6).is_ok());
    }

    #[test]
    fn a_counter_of_another_period_counts_zero_and_cancellation_removes() {
        let w = world();
        write(&w.gate.projection).apply(Reading {
            read_at: Utc::now(),
            enforced: Enforced::Changed(vec![]),
            subscriptions: vec![],
            plans: vec![],
            counters: vec![QuotaCounterRow {
                subscription_id: w.subscription,
                metric: "calls".into(),
                period_start: w.period_start - chrono::Duration::days(30),
                used: 1_000,
                updated_at: Utc::now(),
            }],
            account_names: vec![],
            workspace_names: vec![],
        });
        assert!(event(&w, Subject::Account("acme".into()), 1).is_ok());
        let mut projection = write(&w.gate.projection);
        let mut row = SubscriptionGateRow {
            subscription_id: w.subscription,
            tenant_id: w.tenant,
            account_id: w.account,
            account_external_id: "acme".into(),
            status: "canceled".into(),
            current_period_start: w.period_start,
            current_period_end: w.period_start + chrono::Duration::days(30),
            plan_version_id: Uuid::now_v7(),
            grace_plan_version_id: None,
            grace_until: None,
            updated_at: Utc::now(),
        };
        // A canceled older subscription does not remove the account's current one.
        row.subscription_id = Uuid::now_v7();
        projection.apply_subscription(row.clone());
        assert!(projection.subscriptions.contains_key(&w.account));
        row.subscription_id = w.subscription;
        projection.apply_subscription(row);
        assert!(!projection.subscriptions.contains_key(&w.account));
    }

    /// Adds `plan` to the projection as a new version and moves `account`'s subscription to
    /// it; returns the version's id.
    fn use_plan(projection: &mut Projection, account: Uuid, plan: Plan) -> Uuid {
        let id = Uuid::now_v7();
        projection.plans.insert(id, plan);
        if let Some(s) = projection.subscriptions.get_mut(&account) {
            s.plan = id;
        }
        id
    }

    #[test]
    fn job_submissions_past_the_plans_rate_are_refused_with_the_wait_and_events_are_not() {
        let w = world();
        let plan = use_plan(
            &mut write(&w.gate.projection),
            w.account,
            Plan {
                code: "starter".into(),
                version: 2,
                features: HashSet::new(),
                requests_per_minute: Some(2),
                quotas: vec![],
            },
        );
        let submit = || w.gate.check_job(w.tenant, Some(w.account), "render", None);
        assert!(submit().is_ok());
        assert!(submit().is_ok());
        match submit().err() {
            Some(GateRefusal::RateLimited {
                plan,
                limit: 2,
                retry_after_secs,
            }) => {
                assert_eq!(plan, "starter v2");
                // One submission comes back every 30 s.
                assert!((1..=30).contains(&retry_after_secs), "{retry_after_secs}");
            }
            other => panic!("expected PLAN_RATE_LIMITED, got {other:?}"),
        }
        // Events are metered by quotas, not by the plan's submission rate.
        let subject = Subject::Workspace("ws".parse().expect("name"));
        for _ in 0..5 {
            assert!(w
                .gate
                .check_event(w.tenant, &subject, "calls", 0, Utc::now())
                .is_ok());
        }
        // A raised limit starts a fresh bucket.
        write(&w.gate.projection)
            .plans
            .get_mut(&plan)
            .expect("plan")
            .requests_per_minute = Some(3);
        assert!(submit().is_ok());
    }

    #[test]
    fn a_job_is_refused_once_its_quota_is_used_up() {
        let w = world();
        let mut projection = write(&w.gate.projection);
        use_plan(
            &mut projection,
            w.account,
            Plan {
                code: "jobs".into(),
                version: 1,
                features: HashSet::new(),
                requests_per_minute: None,
                quotas: vec![Quota {
                    metric: "job.*".into(),
                    quantity: 2,
                    soft_pct: 50,
                    hard_pct: Some(100),
                }],
            },
        );
        let counter = |used| Counter {
            period_start: w.period_start,
            used,
        };
        projection
            .counters
            .insert((w.subscription, "job.*".into()), counter(1));
        drop(projection);
        let gate = w
            .gate
            .check_job(w.tenant, Some(w.account), "render", None)
            .expect("1 of 2 used");
        assert_eq!(
            gate.commit(None)
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["job.* soft limit exceeded (1/1)"]
        );
        write(&w.gate.projection)
            .counters
            .insert((w.subscription, "job.*".into()), counter(2));
        let refused = w
            .gate
            .check_job(w.tenant, Some(w.account), "render", None)
            .err();
        assert!(
            matches!(
                refused,
                Some(GateRefusal::QuotaExceeded {
                    usage: 2,
                    limit: 2,
                    requested: 0,
                    ..
                })
            ),
            "{refused:?}"
        );
    }

    #[test]
    fn a_converted_accounts_later_usage_belongs_to_the_organization() {
        let w = world();
        let converted_at = Utc::now() - chrono::Duration::hours(1);
        write(&w.gate.projection).apply(Reading {
            read_at: Utc::now(),
            enforced: Enforced::Changed(vec![]),
            subscriptions: vec![],
            plans: vec![],
            counters: vec![],
            account_names: vec![AccountNameRow {
                tenant_id: w.tenant,
                external_id: "acme".into(),
                account_id: w.account,
                converted_to: Some(Uuid::now_v7()),
                converted_at: Some(converted_at),
            }],
            workspace_names: vec![],
        });
        let subject = Subject::Account("acme".into());
        let before = converted_at - chrono::Duration::minutes(1);
        assert!(w
            .gate
            .check_event(w.tenant, &subject, "calls", 1, before)
            .is_ok());
        assert_eq!(
            w.gate
                .check_event(w.tenant, &subject, "calls", 1, Utc::now())
                .err(),
            Some(GateRefusal::SubscriptionRequired)
        );
    }

    #[test]
    fn patterns_match_like_the_ledger_trigger() {
        let quota = |metric: &str| Quota {
            metric: metric.into(),
            quantity: 1,
            soft_pct: 100,
            hard_pct: None,
        };
        assert!(quota("job.*").matches("job.render"));
        assert!(!quota("job.*").matches("jobs.render"));
        assert!(quota("calls").matches("calls"));
        assert!(!quota("calls").matches("calls.x"));
        assert_eq!(
            Quota {
                hard_pct: Some(110),
                ..quota("x")
            }
            .hard_limit(),
            Some(1)
        );
    }
}
