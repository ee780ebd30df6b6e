//! `tollgatectl` commands for billing (issue 4): the plan catalog (`catalog apply|show`),
//! billing enforcement (`tenant set-billing`), subscriptions, billing runs (`billing run`,
//! with `--as-of` as a test clock, or `--period` to recompute a period's drafts), invoices
//! (`invoice list|show|void|credit`), `reconcile` (and `reconcile psp`: payments against the
//! PSP's records) and dunning (`dunning run`, with `--as-of` as a test clock; `dunning cases`).
//! They call the billing service's library
//! directly against PostgreSQL; events they cause go through the outbox like the service's.
//! Invoice PDFs are written to the store `BILLING__DOCUMENTS__*` configures (the billing
//! service's own settings).

use anyhow::{bail, Context};
use chrono::{DateTime, Datelike, TimeZone, Utc};
use clap::Subcommand;
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tollgate_billing::catalog::CatalogDefinition;
use tollgate_billing::run::{self, RunOptions};
use tollgate_billing::subscriptions::{self as subs, StartRequest, When};
use tollgate_billing::{BillingConfig, BillingContext, BillingError};
use tollgate_domain::{InvoiceId, SubscriptionId};
use tollgate_storage::{invoices, AsyncPgConnection, PgPool};
use uuid::Uuid;

/// `tollgatectl catalog …`
#[derive(Subcommand)]
pub enum CatalogCommand {
    /// Apply a catalog TOML file (see examples/catalog/): plans whose definition changed get a
    /// new version; existing subscribers stay on theirs. All or nothing.
    Apply {
        #[arg(long)]
        tenant: String,
        file: std::path::PathBuf,
    },
    /// Show the current version of every plan.
    Show {
        #[arg(long)]
        tenant: String,
    },
}

/// `tollgatectl subscription …`
#[derive(Subcommand)]
pub enum SubscriptionCommand {
    /// Subscribe an account (external id) to a plan.
    Start {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        account: String,
        #[arg(long)]
        plan: String,
        /// RFC 3339 start instant (default now).
        #[arg(long)]
        start_at: Option<String>,
        #[arg(long)]
        skip_trial: bool,
        #[arg(long)]
        coupon: Option<String>,
    },
    /// Change plan now (prorated) or at period end.
    Change {
        #[arg(long)]
        tenant: String,
        /// `sub_…`
        id: String,
        #[arg(long)]
        plan: String,
        #[arg(long)]
        at_period_end: bool,
        /// RFC 3339 instant of the change (default now; a test clock).
        #[arg(long)]
        at: Option<String>,
    },
    /// Cancel now or at period end.
    Cancel {
        #[arg(long)]
        tenant: String,
        id: String,
        #[arg(long)]
        at_period_end: bool,
        #[arg(long)]
        at: Option<String>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Undo a scheduled cancellation or plan change.
    Resume {
        #[arg(long)]
        tenant: String,
        id: String,
    },
}

/// `tollgatectl billing …`
#[derive(Subcommand)]
pub enum BillingCommand {
    /// Close due periods into drafts, refresh open drafts, finalize drafts past their grace
    /// window. With `--period YYYY-MM`: recompute that month's drafts instead (fails with
    /// BILLING_PERIOD_LOCKED when an invoice of the period is final).
    Run {
        #[arg(long)]
        tenant: Option<String>,
        /// The run's clock (RFC 3339; default now).
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        period: Option<String>,
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
}

/// `tollgatectl reconcile psp …`
#[derive(Subcommand)]
pub enum ReconcileScope {
    /// Compare a tenant's paid invoices with Stripe's payments and payouts for a month (needs
    /// `BILLING__PSP__ENABLED=true` and `BILLING__PSP__STRIPE__SECRET_KEY`).
    Psp {
        #[arg(long)]
        tenant: String,
        /// `YYYY-MM` (UTC).
        #[arg(long)]
        period: String,
    },
}

/// `tollgatectl dunning …`
#[derive(Subcommand)]
pub enum DunningCommand {
    /// Run the payment retries due at `--as-of` (default now): each is sent to the PSP and its
    /// outcome moves the dunning case and the subscription.
    Run {
        #[arg(long)]
        tenant: Option<String>,
        /// The run's clock (RFC 3339; default now). Retries scheduled at or before it run.
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long, default_value_t = 500)]
        batch: i64,
    },
    /// A tenant's dunning cases with their retries.
    Cases {
        #[arg(long)]
        tenant: String,
        /// `open`, `exhausted`, `recovered` or `canceled`.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

impl DunningCommand {
    /// The tenant the command names, if any.
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Self::Run { tenant, .. } => tenant.as_deref(),
            Self::Cases { tenant, .. } => Some(tenant),
        }
    }
}

/// `tollgatectl invoice …`
#[derive(Subcommand)]
pub enum InvoiceCommand {
    /// A tenant's invoices, newest first.
    List {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Void a final invoice, with a reason.
    Void {
        #[arg(long)]
        tenant: String,
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Issue a credit note against a final invoice.
    Credit {
        #[arg(long)]
        tenant: String,
        id: String,
        /// Minor units (cents for USD).
        #[arg(long)]
        amount_minor: i64,
        #[arg(long)]
        reason: String,
    },
}

fn instant(raw: Option<&str>, flag: &str) -> anyhow::Result<DateTime<Utc>> {
    match raw {
        None => Ok(Utc::now()),
        Some(s) => Ok(DateTime::parse_from_rfc3339(s)
            .with_context(|| format!("{flag} must be an RFC 3339 instant"))?
            .with_timezone(&Utc)),
    }
}

/// `YYYY-MM` → `[first instant of the month, first of the next)`, UTC.
pub fn month(raw: &str) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let (y, m) = raw
        .split_once('-')
        .and_then(|(y, m)| Some((y.parse::<i32>().ok()?, m.parse::<u32>().ok()?)))
        .with_context(|| format!("--period {raw:?} must look like 2026-10"))?;
    let start = Utc
        .with_ymd_and_hms(y, m, 1, 0, 0, 0)
        .single()
        .with_context(|| format!("--period {raw:?} is not a month"))?;
    let next = if start.month() == 12 {
        Utc.with_ymd_and_hms(y + 1, 1, 1, 0, 0, 0)
    } else {
        Utc.with_ymd_and_hms(y, m + 1, 1, 0, 0, 0)
    }
    .single()
    .context("month overflow")?;
    Ok((start, next))
}

/// The billing context the CLI acts with: this database, the services' events exchange and
/// the billing service's document store settings (`BILLING__…` environment).
pub fn context(pool: PgPool, amqp_prefix: &str) -> anyhow::Result<BillingContext> {
    let mut config = BillingConfig::load().context("loading BILLING__ settings")?;
    config.amqp.prefix = amqp_prefix.to_owned();
    BillingContext::from_config(&config, pool)
}

fn explain(err: BillingError) -> anyhow::Error {
    anyhow::anyhow!("{}: {err}", err.code())
}

fn sub_id(raw: &str) -> anyhow::Result<Uuid> {
    Ok(raw
        .parse::<SubscriptionId>()
        .context("expected a subscription id (sub_…)")?
        .as_uuid())
}

fn invoice_id(raw: &str) -> anyhow::Result<Uuid> {
    Ok(raw
        .parse::<InvoiceId>()
        .context("expected an invoice id (inv_…)")?
        .as_uuid())
}

/// Applies a catalog file and prints what changed.
pub async fn apply_catalog(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    file: &std::path::Path,
) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let catalog = CatalogDefinition::from_toml(&text)?;
    for p in catalog.apply(conn, tenant).await? {
        let what = if p.created {
            "new version"
        } else {
            "unchanged"
        };
        println!("plan {:<16} v{:<3} {what}", p.code, p.version);
    }
    println!("{} coupon(s) applied", catalog.coupons.len());
    Ok(())
}

/// Prints the current plan versions.
pub async fn show_catalog(conn: &mut AsyncPgConnection, tenant: Uuid) -> anyhow::Result<()> {
    println!(
        "{:<12} {:>4} {:<8} {:>12} {:>6}  features",
        "plan", "ver", "interval", "base fee", "trial"
    );
    for p in tollgate_storage::plans::current_versions(conn, tenant).await? {
        let v = &p.version;
        let currency = tollgate_pricing::Currency::from_code(&v.currency)?;
        println!(
            "{:<12} {:>4} {:<8} {:>12} {:>5}d  {}",
            v.plan_code,
            v.version,
            v.billing_interval,
            tollgate_pricing::format_money(v.base_fee_minor, currency),
            v.trial_days,
            v.features.join(",")
        );
        for q in &p.quotas {
            println!(
                "{:>17} quota {} {} (soft {} %, hard {})",
                "",
                q.metric,
                q.quantity,
                q.soft_pct,
                q.hard_pct
                    .map(|h| format!("{h} %"))
                    .unwrap_or_else(|| "none".into())
            );
        }
    }
    Ok(())
}

/// Turns billing enforcement at intake on or off and sets the invoice number prefix.
pub async fn set_billing(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    enforce: Option<bool>,
    invoice_prefix: Option<String>,
) -> anyhow::Result<()> {
    use tollgate_storage::schema::tenants as t;
    if let Some(enforce) = enforce {
        diesel::update(t::table.find(tenant))
            .set((
                t::billing_enforced.eq(enforce),
                t::updated_at.eq(Utc::now()),
            ))
            .execute(conn)
            .await?;
        println!(
            "billing enforcement at intake: {}",
            if enforce { "on" } else { "off" }
        );
    }
    if let Some(prefix) = invoice_prefix {
        diesel::update(t::table.find(tenant))
            .set((t::invoice_prefix.eq(&prefix), t::updated_at.eq(Utc::now())))
            .execute(conn)
            .await
            .context("the prefix must match ^[A-Z0-9][A-Z0-9-]{0,11}$")?;
        println!("invoice numbers now read {prefix}-000001");
    }
    Ok(())
}

/// Runs a subscription command.
pub async fn subscription(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    command: SubscriptionCommand,
) -> anyhow::Result<()> {
    let sub = match command {
        SubscriptionCommand::Start {
            account,
            plan,
            start_at,
            skip_trial,
            coupon,
            ..
        } => {
            let account_row = tollgate_storage::accounts::find_account(conn, tenant, &account)
                .await?
                .with_context(|| format!("no account {account:?}"))?;
            subs::start(
                ctx,
                conn,
                StartRequest {
                    tenant_id: tenant,
                    account_id: account_row.id,
                    plan,
                    start_at: instant(start_at.as_deref(), "--start-at")?,
                    skip_trial,
                    coupon,
                },
            )
            .await
            .map_err(explain)?
        }
        SubscriptionCommand::Change {
            id,
            plan,
            at_period_end,
            at,
            ..
        } => {
            let when = if at_period_end {
                When::PeriodEnd
            } else {
                When::Now
            };
            let at = instant(at.as_deref(), "--at")?;
            subs::change_plan(ctx, conn, tenant, sub_id(&id)?, plan, when, at)
                .await
                .map_err(explain)?
        }
        SubscriptionCommand::Cancel {
            id,
            at_period_end,
            at,
            reason,
            ..
        } => {
            let when = if at_period_end {
                When::PeriodEnd
            } else {
                When::Now
            };
            let at = instant(at.as_deref(), "--at")?;
            subs::cancel(ctx, conn, tenant, sub_id(&id)?, when, at, reason)
                .await
                .map_err(explain)?
        }
        SubscriptionCommand::Resume { id, .. } => subs::resume(ctx, conn, tenant, sub_id(&id)?)
            .await
            .map_err(explain)?,
    };
    println!(
        "{} {} period {} → {}{}",
        SubscriptionId::from_uuid(sub.id),
        sub.status,
        sub.current_period_start.format("%Y-%m-%d %H:%M:%S"),
        sub.current_period_end.format("%Y-%m-%d %H:%M:%S"),
        if sub.cancel_at_period_end {
            " (cancels at period end)"
        } else {
            ""
        }
    );
    Ok(())
}

/// Runs a billing pass (or recomputes a period) and prints the report.
pub async fn billing_run(
    ctx: &BillingContext,
    tenant: Option<Uuid>,
    as_of: Option<String>,
    period: Option<String>,
    batch: i64,
) -> anyhow::Result<()> {
    if let Some(period) = period {
        let tenant = tenant.context("--period needs --tenant")?;
        let (from, to) = month(&period)?;
        let n = run::recompute_period(&ctx.pool, tenant, from, to)
            .await
            .map_err(explain)?;
        println!("recomputed {n} draft invoice(s) of {period}");
        return Ok(());
    }
    let report = run::run(
        ctx,
        &RunOptions {
            tenant,
            as_of: instant(as_of.as_deref(), "--as-of")?,
            batch,
            max_close_batches: None,
        },
    )
    .await
    .map_err(explain)?;
    println!(
        "periods closed {}, trials ended {}, drafts created {}, drafts refreshed {}, finalized {}, failed {}",
        report.periods_closed,
        report.trials_ended,
        report.drafts_created,
        report.drafts_refreshed,
        report.finalized,
        report.failed
    );
    Ok(())
}

/// Runs an invoice command.
pub async fn invoice(
    ctx: &BillingContext,
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    command: InvoiceCommand,
) -> anyhow::Result<()> {
    match command {
        InvoiceCommand::List { limit, .. } => {
            let rows = invoices::list(conn, tenant, &Default::default(), None, limit).await?;
            println!(
                "{:<42} {:<12} {:<10} {:<10} {:<10} {:>14}",
                "id", "number", "status", "from", "to", "total"
            );
            for r in rows {
                let currency = tollgate_pricing::Currency::from_code(&r.currency)?;
                println!(
                    "{:<42} {:<12} {:<10} {:<10} {:<10} {:>14}",
                    InvoiceId::from_uuid(r.id).to_string(),
                    r.number_text.as_deref().unwrap_or("-"),
                    r.status,
                    r.period_start.format("%Y-%m-%d"),
                    r.period_end.format("%Y-%m-%d"),
                    tollgate_pricing::format_money(r.total_minor, currency)
                );
            }
        }
        InvoiceCommand::Void { id, reason, .. } => {
            tollgate_billing::invoicing::void(ctx, conn, tenant, invoice_id(&id)?, &reason)
                .await
                .map_err(explain)?;
            println!("voided {id}");
        }
        InvoiceCommand::Credit {
            id,
            amount_minor,
            reason,
            ..
        } => {
            let note = tollgate_billing::invoicing::credit(
                conn,
                tenant,
                invoice_id(&id)?,
                amount_minor,
                &reason,
            )
            .await
            .map_err(explain)?;
            println!(
                "credit note {} for {} minor units",
                tollgate_domain::CreditNoteId::from_uuid(note.id),
                note.amount_minor
            );
        }
    }
    Ok(())
}

/// Reconciles a month and prints every discrepancy as a table. Exits non-zero when there are
/// discrepancies, so a scheduled job can alert on it.
pub async fn reconcile(
    conn: &mut AsyncPgConnection,
    tenant: Uuid,
    period: &str,
) -> anyhow::Result<()> {
    let (from, to) = month(period)?;
    let report = tollgate_billing::reconcile::reconcile(conn, tenant, from, to)
        .await
        .map_err(explain)?;
    println!(
        "reconciliation {} of {period}: {} invoice(s) checked, {} discrepancy(ies)",
        report.run_id,
        report.checked,
        report.discrepancies.len()
    );
    if report.discrepancies.is_empty() {
        return Ok(());
    }
    println!(
        "{:<24} {:<12} {:<24} {:>14} {:>14}",
        "kind", "invoice", "metric", "ledger/expected", "billed/actual"
    );
    for d in &report.discrepancies {
        println!(
            "{:<24} {:<12} {:<24} {:>14} {:>14}",
            d.kind,
            d.invoice_number.as_deref().unwrap_or("-"),
            d.metric.as_deref().unwrap_or("-"),
            d.expected,
            d.actual
        );
    }
    bail!(
        "{} discrepancy(ies) recorded in reconciliation_discrepancies",
        report.discrepancies.len()
    )
}

/// Reconciles a tenant's payments with the PSP's records for a month and prints every
/// discrepancy. Exits non-zero when there are discrepancies.
pub async fn reconcile_psp(ctx: &BillingContext, tenant: Uuid, period: &str) -> anyhow::Result<()> {
    let (from, to) = month(period)?;
    let report = tollgate_billing::reconcile::reconcile_psp(ctx, tenant, from, to)
        .await
        .map_err(explain)?;
    println!(
        "PSP reconciliation {} of {period}: {} record(s) checked, {} discrepancy(ies)",
        report.run_id,
        report.checked,
        report.discrepancies.len()
    );
    if report.discrepancies.is_empty() {
        return Ok(());
    }
    println!(
        "{:<20} {:<12} {:<16} {:>28} {:>28}",
        "kind", "invoice", "what", "expected", "actual"
    );
    for d in &report.discrepancies {
        println!(
            "{:<20} {:<12} {:<16} {:>28} {:>28}",
            d.kind,
            d.invoice_number.as_deref().unwrap_or("-"),
            d.metric.as_deref().unwrap_or("-"),
            d.expected,
            d.actual
        );
    }
    bail!(
        "{} discrepancy(ies) recorded in reconciliation_discrepancies",
        report.discrepancies.len()
    )
}

/// Runs a dunning command.
pub async fn dunning(
    ctx: &BillingContext,
    tenant: Option<Uuid>,
    command: DunningCommand,
) -> anyhow::Result<()> {
    match command {
        DunningCommand::Run { as_of, batch, .. } => {
            let report = tollgate_billing::dunning::run(
                ctx,
                &tollgate_billing::dunning::DunningRunOptions {
                    tenant,
                    as_of: instant(as_of.as_deref(), "--as-of")?,
                    batch,
                },
            )
            .await
            .map_err(explain)?;
            println!(
                "retries due {}, attempted {}, succeeded {}, failed {}, pending {}, deferred {}, canceled {}",
                report.due,
                report.attempted,
                report.succeeded,
                report.failed,
                report.pending,
                report.deferred,
                report.canceled
            );
        }
        DunningCommand::Cases { status, limit, .. } => {
            let tenant = tenant.context("--tenant is required")?;
            let mut conn = tollgate_storage::pool::get(&ctx.pool).await?;
            let cases =
                tollgate_storage::payments::list_cases(&mut conn, tenant, status.as_deref(), limit)
                    .await?;
            println!(
                "{:<42} {:<10} {:>8} {:<22} retries",
                "invoice", "status", "failures", "first failure"
            );
            for case in cases {
                let view = tollgate_billing::dunning::CaseView::build(&mut conn, case)
                    .await
                    .map_err(explain)?;
                let retries: Vec<String> = view
                    .attempts
                    .iter()
                    .map(|a| {
                        format!(
                            "{}@{}:{}",
                            a.seq,
                            a.scheduled_at.format("%m-%d %H:%M"),
                            a.status
                        )
                    })
                    .collect();
                println!(
                    "{:<42} {:<10} {:>8} {:<22} {}",
                    view.invoice,
                    view.status,
                    view.failures,
                    view.first_failed_at.format("%Y-%m-%d %H:%M:%S"),
                    retries.join(" ")
                );
            }
        }
    }
    Ok(())
}
