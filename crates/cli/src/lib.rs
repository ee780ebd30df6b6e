//! `tollgatectl`, the operator CLI: migrations, tenants, API keys, the job-type and
//! billable-metric catalogs, dead jobs and their replay, ledger reversals, usage locks and a
//! usage summary. It talks to PostgreSQL; messages it needs published (replays) go through the
//! transactional outbox, which the services' relays publish. `events import` alone goes through the
//! gateway's public API, so imported events get exactly the validation and dedupe of any client.

pub mod billing;
pub mod metering;
pub mod webhook;

use std::time::Duration;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use diesel::prelude::*;
use diesel_async::RunQueryDsl;
use tollgate_domain::{api_key, Envelope, JobCommand, JobId, TenantId};
use tollgate_messaging::Topology;
use tollgate_storage::models::{ApiKeyRow, JobTypeRow, NewOutboxMessage};
use tollgate_storage::{jobs, tenants, AsyncPgConnection};

/// The command line.
#[derive(Parser)]
#[command(
    name = "tollgatectl",
    version,
    about = "Operate a Tollgate installation"
)]
pub struct Cli {
    /// PostgreSQL URL (a secret: prefer the environment variable).
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/tollgate",
        hide_env_values = true
    )]
    database_url: String,
    /// Prefix of the RabbitMQ exchanges and queues (must match the services' `amqp.prefix`).
    #[arg(long, env = "TOLLGATE_AMQP_PREFIX", default_value = "tollgate")]
    amqp_prefix: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Apply pending database migrations.
    Migrate,
    /// Tenants.
    Tenant {
        #[command(subcommand)]
        command: TenantCommand,
    },
    /// API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// The job-type catalog.
    JobType {
        #[command(subcommand)]
        command: JobTypeCommand,
    },
    /// Jobs: dead-job listing and replay.
    Jobs {
        #[command(subcommand)]
        command: JobsCommand,
    },
    /// The billable-metrics catalog.
    Metrics {
        #[command(subcommand)]
        command: MetricsCommand,
    },
    /// Usage events.
    Events {
        #[command(subcommand)]
        command: EventsCommand,
    },
    /// The usage ledger.
    Ledger {
        #[command(subcommand)]
        command: LedgerCommand,
    },
    /// The plan catalog (billing).
    Catalog {
        #[command(subcommand)]
        command: billing::CatalogCommand,
    },
    /// Subscriptions of billing entities to plans.
    Subscription {
        #[command(subcommand)]
        command: billing::SubscriptionCommand,
    },
    /// Billing runs.
    Billing {
        #[command(subcommand)]
        command: billing::BillingCommand,
    },
    /// Invoices: list, void, credit notes.
    Invoice {
        #[command(subcommand)]
        command: billing::InvoiceCommand,
    },
    /// Compare the ledger with final invoices for a month (`reconcile psp`: payments with the
    /// PSP's records); discrepancies go to the audit table.
    Reconcile {
        #[command(subcommand)]
        scope: Option<billing::ReconcileScope>,
        #[arg(long)]
        tenant: Option<String>,
        /// `YYYY-MM` (UTC).
        #[arg(long)]
        period: Option<String>,
    },
    /// Dunning: run due payment retries (with `--as-of` as a test clock), list cases.
    Dunning {
        #[command(subcommand)]
        command: billing::DunningCommand,
    },
    /// Usage periods.
    Usage {
        #[command(subcommand)]
        command: UsageCommand,
    },
    /// Tenants' webhook endpoints, deliveries and redelivery.
    Webhook {
        #[command(subcommand)]
        command: webhook::WebhookCommand,
    },
    /// Jobs by state, ledger entries, units and cost per job type for a tenant.
    Summary {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum TenantCommand {
    /// Create a tenant; prints its id.
    Create {
        #[arg(long)]
        name: String,
        /// Requests per minute through the gateway.
        #[arg(long, default_value_t = 6000)]
        rate_limit_per_minute: i32,
    },
    /// Set the time zone the usage API buckets days and months in by default (IANA name).
    SetTimeZone {
        #[arg(long)]
        tenant: String,
        zone: String,
    },
    /// Billing settings: enforcement of subscriptions and quotas at intake, invoice prefix.
    SetBilling {
        #[arg(long)]
        tenant: String,
        /// Refuse jobs and events of billing entities without a live subscription.
        #[arg(long)]
        enforce: Option<bool>,
        #[arg(long)]
        invoice_prefix: Option<String>,
    },
}

#[derive(Subcommand)]
enum MetricsCommand {
    /// Create or replace the metrics of a TOML file (all or nothing; see examples/metrics/).
    Apply {
        #[arg(long)]
        tenant: String,
        file: std::path::PathBuf,
    },
    /// List a tenant's metrics.
    List {
        #[arg(long)]
        tenant: String,
    },
}

#[derive(Subcommand)]
enum EventsCommand {
    /// Import usage events from a CSV file through the gateway's batch API. Columns: id,
    /// metric, and optionally workspace, account, timestamp (RFC 3339), properties (a JSON
    /// object); any other column becomes a property.
    Import {
        file: std::path::PathBuf,
        #[arg(
            long,
            env = "TOLLGATE_GATEWAY_URL",
            default_value = "http://127.0.0.1:8080"
        )]
        gateway_url: String,
        /// The tenant's API key (a secret: prefer the environment variable).
        #[arg(long, env = "TOLLGATE_API_KEY", hide_env_values = true)]
        api_key: String,
        #[arg(long, default_value_t = 1000)]
        batch_size: usize,
    },
}

#[derive(Subcommand)]
enum LedgerCommand {
    /// Append the reversing entry of a ledger entry (by its id, as the usage API shows it).
    Reverse {
        entry_id: i64,
        #[arg(long)]
        reason: String,
    },
}

#[derive(Subcommand)]
enum UsageCommand {
    /// Refuse new usage stamped before an instant (a finalized period): PERIOD_FINALIZED.
    Lock {
        #[arg(long)]
        tenant: String,
        /// RFC 3339 instant.
        #[arg(long)]
        before: String,
    },
}

#[derive(Subcommand)]
enum KeyCommand {
    /// Create an API key; prints the key once (only its hash is stored).
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long, default_value = "default")]
        name: String,
    },
    /// Revoke a key, given the key or its 8-character prefix.
    Revoke { key_or_prefix: String },
}

#[derive(Subcommand)]
enum JobTypeCommand {
    /// Create or replace a job type.
    Set {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
        /// The tenant service's URL the worker POSTs jobs to.
        #[arg(long)]
        endpoint: String,
        /// Per-attempt timeout, milliseconds.
        #[arg(long, default_value_t = 30_000)]
        timeout_ms: i32,
        #[arg(long, default_value_t = 3)]
        max_attempts: i32,
        /// Cost units per executor-reported unit.
        #[arg(long, default_value_t = 1)]
        weight: i64,
        /// Input size cap, bytes.
        #[arg(long, default_value_t = 262_144)]
        max_input_bytes: i32,
        /// A plan feature subscribers need for this job type (checked at intake when the
        /// tenant enforces billing).
        #[arg(long)]
        required_feature: Option<String>,
    },
}

#[derive(Subcommand)]
enum JobsCommand {
    /// List dead jobs with their last error.
    Dead {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// Put a dead job back on the queue with a fresh attempt budget (history is kept).
    Replay { job_id: String },
}

/// Parses `args` (the first is the program name) and runs the command.
pub async fn run_from<I, T>(args: I) -> anyhow::Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    run(Cli::try_parse_from(args)?).await
}

/// Runs one parsed command, printing its result on stdout.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Migrate = cli.command {
        let applied = tollgate_storage::migrate::run_pending(&cli.database_url).await?;
        if applied.is_empty() {
            println!("database is up to date");
        } else {
            for version in applied {
                println!("applied {version}");
            }
        }
        return Ok(());
    }
    if let Command::Events {
        command:
            EventsCommand::Import {
                file,
                gateway_url,
                api_key,
                batch_size,
            },
    } = &cli.command
    {
        metering::import_events(file, gateway_url, api_key, *batch_size).await?;
        return Ok(());
    }
    let pool = tollgate_storage::pool::build_pool(&cli.database_url, 2, Duration::from_secs(5))?;
    let mut conn = tollgate_storage::pool::get(&pool)
        .await
        .context("connecting to PostgreSQL")?;
    match cli.command {
        Command::Migrate
        | Command::Events {
            command: EventsCommand::Import { .. },
        } => unreachable!("handled above"),
        Command::Tenant {
            command: TenantCommand::SetTimeZone { tenant, zone },
        } => {
            let tenant = find_tenant(&mut conn, &tenant).await?;
            metering::set_time_zone(&mut conn, tenant, &zone).await?;
        }
        Command::Tenant {
            command:
                TenantCommand::SetBilling {
                    tenant,
                    enforce,
                    invoice_prefix,
                },
        } => {
            let tenant = find_tenant(&mut conn, &tenant).await?;
            billing::set_billing(&mut conn, tenant, enforce, invoice_prefix).await?;
        }
        Command::Catalog {
            command: billing::CatalogCommand::Apply { tenant, file },
        } => {
            let tenant = find_tenant(&mut conn, &tenant).await?;
            billing::apply_catalog(&mut conn, tenant, &file).await?;
        }
        Command::Catalog {
            command: billing::CatalogCommand::Show { tenant },
        } => {
            let tenant = find_tenant(&mut conn, &tenant).await?;
            billing::show_catalog(&mut conn, tenant).await?;
        }
        Command::Subscription { command } => {
            let tenant = match &command {
                billing::SubscriptionCommand::Start { tenant, .. }
                | billing::SubscriptionCommand::Change { tenant, .. }
                | billing::SubscriptionCommand::Cancel { tenant, .. }
                | billing::SubscriptionCommand::Resume { tenant, .. } => tenant.clone(),
            };
            let tenant = find_tenant(&mut conn, &tenant).await?;
            let ctx = billing::context(pool.clone(), &cli.amqp_prefix)?;
            billing::subscription(&ctx, &mut conn, tenant, command).await?;
        }
        Command::Billing {
            command:
                billing::BillingCommand::Run {
                    tenant,
                    as_of,
                    period,
                    batch,
                },
        } => {
            let tenant = match tenant {
                Some(name) => Some(find_tenant(&mut conn, &name).await?),
                None => None,
            };
            let ctx = billing::context(pool.clone(), &cli.amqp_prefix)?;
            billing::billing_run(&ctx, tenant, as_of, period, batch).await?;
        }
        Command::Invoice { command } => {
            let tenant = match &command {
                billing::InvoiceCommand::List { tenant, .. }
                | billing::InvoiceCommand::Void { tenant, .. }
                | billing::InvoiceCommand::Credit { tenant, .. } => tenant.clone(),
            };
            let tenant = find_tenant(&mut conn, &tenant).await?;
            let ctx = billing::context(pool.clone(), &cli.amqp_prefix)?;
            billing::invoice(&ctx, &mut conn, tenant, command).await?;
        }
        Command::Reconcile {
            scope: Some(billing::ReconcileScope::Psp { tenant, period }),
            ..
        } => {
            let tenant = find_tenant(&mut conn, &tenant).await?;
            let ctx = billing::context(pool.clone(), &cli.amqp_prefix)?;
            billing::reconcile_psp(&ctx, tenant, &period).await?;
        }
        Command::Reconcile {
            scope: None,
            tenant,
            period,
        } => {
            let (Some(tenant), Some(period)) = (tenant, period) else {
                bail!(
                    "reconcile needs --tenant and --period (or: reconcile psp --tenant --period)"
                );
            };
            let tenant = find_tenant(&mut conn, &tenant).await?;
            billing::reconcile(&mut conn, tenant, &period).await?;
        }
        Command::Dunning { command } => {
            let tenant = match command.tenant() {
                Some(name) => Some(find_tenant(&mut conn, name).await?),
                None => None,
            };
            let ctx = billing::context(pool.clone(), &cli.amqp_prefix)?;
            billing::dunning(&ctx, tenant, command).await?;
        }
        Command::Metrics {
            command: MetricsCommand::Apply { tenant, file },
        } => {
            let tenant = find_tenant(&mut conn, &tenant).await?;
            metering::apply_metrics(&mut conn, tenant, &file).await?;
        }
        Command::Metrics {
            command: MetricsCommand::List { tenant },
        } => {
            let tenant = find_tenant(&mut conn, &tenant).await?;
            metering::list_metrics(&mut conn, tenant).await?;
        }
        Command::Ledger {
            command: LedgerCommand::Reverse { entry_id, reason },
        } => metering::reverse_entry(&mut conn, entry_id, &reason).await?,
        Command::Usage {
            command: UsageCommand::Lock { tenant, before },
        } => {
            let tenant = find_tenant(&mut conn, &tenant).await?;
            let before = chrono::DateTime::parse_from_rfc3339(&before)
                .context("--before must be an RFC 3339 instant")?
                .with_timezone(&chrono::Utc);
            metering::lock_usage(&mut conn, tenant, before).await?;
        }
        Command::Tenant {
            command:
                TenantCommand::Create {
                    name,
                    rate_limit_per_minute,
                },
        } => {
            if rate_limit_per_minute <= 0 {
                bail!("--rate-limit-per-minute must be positive");
            }
            let tenant = tenants::create_tenant(&mut conn, &name, rate_limit_per_minute).await?;
            println!("{}", TenantId::from_uuid(tenant.id));
        }
        Command::Key {
            command: KeyCommand::Create { tenant, name },
        } => {
            let tenant = find_tenant(&mut conn, &tenant).await?;
            let key = api_key::generate();
            tenants::insert_api_key(
                &mut conn,
                &ApiKeyRow {
                    id: tollgate_domain::ApiKeyId::new().as_uuid(),
                    tenant_id: tenant,
                    prefix: key.prefix.clone(),
                    key_hash: key.hash.to_vec(),
                    name,
                    created_at: chrono::Utc::now(),
                    revoked_at: None,
                },
            )
            .await?;
            eprintln!(
                "API key created (prefix {}); it is shown only now:",
                key.prefix
            );
            println!("{}", key.secret_text);
        }
        Command::Key {
            command: KeyCommand::Revoke { key_or_prefix },
        } => {
            let prefix = api_key::prefix_of(&key_or_prefix)
                .unwrap_or(&key_or_prefix)
                .to_owned();
            if !tenants::revoke_api_key(&mut conn, &prefix).await? {
                bail!("no live API key with prefix {prefix}");
            }
            println!("revoked {prefix}");
        }
        Command::JobType {
            command:
                JobTypeCommand::Set {
                    tenant,
                    name,
                    endpoint,
                    timeout_ms,
                    max_attempts,
                    weight,
                    max_input_bytes,
                    required_feature,
                },
        } => {
            let tenant = find_tenant(&mut conn, &tenant).await?;
            tollgate_domain::JobTypeName::parse(&name)?;
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                bail!("--endpoint must be an http(s) URL");
            }
            let now = chrono::Utc::now();
            let row = tenants::upsert_job_type(
                &mut conn,
                &JobTypeRow {
                    tenant_id: tenant,
                    name,
                    executor: "http".into(),
                    endpoint,
                    timeout_ms,
                    max_attempts,
                    weight,
                    max_input_bytes,
                    created_at: now,
                    updated_at: now,
                    required_feature,
                },
            )
            .await
            .context("saving job type (check the value ranges)")?;
            println!(
                "job type {} -> {} (timeout {} ms, max attempts {}, weight {}, input cap {} bytes)",
                row.name,
                row.endpoint,
                row.timeout_ms,
                row.max_attempts,
                row.weight,
                row.max_input_bytes
            );
        }
        Command::Jobs {
            command: JobsCommand::Dead { tenant, limit },
        } => {
            let tenant = match tenant {
                Some(name) => Some(find_tenant(&mut conn, &name).await?),
                None => None,
            };
            let dead = jobs::list_dead(&mut conn, tenant, limit.clamp(1, 1000)).await?;
            println!("{:<38} {:<20} {:>8}  last error", "job", "type", "attempts");
            for job in dead {
                println!(
                    "{:<38} {:<20} {:>8}  {}",
                    JobId::from_uuid(job.id),
                    job.job_type,
                    job.attempts,
                    job.last_error
                        .unwrap_or_default()
                        .chars()
                        .take(100)
                        .collect::<String>()
                );
            }
        }
        Command::Jobs {
            command: JobsCommand::Replay { job_id },
        } => {
            let job_id: JobId = job_id.parse()?;
            let job = jobs::find_job_any_tenant(&mut conn, job_id.as_uuid())
                .await?
                .with_context(|| format!("no job {job_id}"))?;
            let envelope = Envelope::job_command(
                "tollgatectl",
                TenantId::from_uuid(job.tenant_id),
                JobCommand::ExecuteV1 { job_id, attempt: 1 },
            );
            let topology = Topology::new(&cli.amqp_prefix, 1);
            let message = NewOutboxMessage {
                message_id: envelope.id,
                exchange: topology.jobs_exchange(),
                routing_key: Topology::EXECUTE_KEY.to_owned(),
                payload: serde_json::to_vec(&envelope)?,
            };
            if !jobs::replay_dead(&mut conn, job_id.as_uuid(), message).await? {
                bail!(
                    "job {job_id} is {}, not dead; only dead jobs can be replayed",
                    job.status
                );
            }
            println!("replayed {job_id}: queued again (an outbox relay publishes it)");
        }
        Command::Webhook { command } => {
            let tenant = match &command {
                webhook::WebhookCommand::Endpoints { tenant } => {
                    Some(find_tenant(&mut conn, tenant).await?)
                }
                _ => None,
            };
            webhook::run(&mut conn, tenant, command).await?;
        }
        Command::Summary { tenant } => {
            let tenant_uuid = find_tenant(&mut conn, &tenant).await?;
            summary(&mut conn, &tenant, tenant_uuid).await?;
        }
    }
    Ok(())
}

async fn find_tenant(conn: &mut AsyncPgConnection, name: &str) -> anyhow::Result<uuid::Uuid> {
    Ok(tenants::find_tenant_by_name(conn, name)
        .await?
        .with_context(|| format!("no tenant named {name:?}"))?
        .id)
}

async fn summary(
    conn: &mut AsyncPgConnection,
    name: &str,
    tenant: uuid::Uuid,
) -> anyhow::Result<()> {
    use tollgate_storage::schema::jobs as j;
    let by_state: Vec<(String, String, i64)> = j::table
        .filter(j::tenant_id.eq(tenant))
        .group_by((j::job_type, j::status))
        .select((j::job_type, j::status, diesel::dsl::count_star()))
        .order_by((j::job_type, j::status))
        .load(conn)
        .await?;
    println!("Tenant {name}: jobs by type and state");
    println!("  {:<20} {:<12} {:>6}", "type", "state", "jobs");
    for (job_type, status, n) in &by_state {
        println!("  {job_type:<20} {status:<12} {n:>6}");
    }
    let rows: Vec<(String, i64, i64, i64)> = diesel::sql_query(
        "SELECT metric, count(*)::int8 AS entries, coalesce(sum(raw_units),0)::int8 AS units, coalesce(sum(cost),0)::int8 AS cost \
         FROM ledger_entries WHERE tenant_id = $1 AND source_kind = 'job' GROUP BY metric ORDER BY metric",
    )
    .bind::<diesel::sql_types::Uuid, _>(tenant)
    .load::<LedgerSummaryRow>(conn)
    .await?
    .into_iter()
    .map(|r| (r.metric, r.entries, r.units, r.cost))
    .collect();
    println!("Usage ledger (one entry per succeeded job)");
    println!(
        "  {:<28} {:>8} {:>12} {:>12}",
        "metric", "entries", "units", "cost"
    );
    let (mut total_entries, mut total_units, mut total_cost) = (0, 0, 0);
    for (metric, entries, units, cost) in rows {
        println!("  {metric:<28} {entries:>8} {units:>12} {cost:>12}");
        total_entries += entries;
        total_units += units;
        total_cost += cost;
    }
    println!(
        "  {:<28} {:>8} {:>12} {:>12}",
        "total", total_entries, total_units, total_cost
    );
    let other: Vec<LedgerSummaryRow> = diesel::sql_query(
        "SELECT source_kind || ' ' || metric AS metric, count(*)::int8 AS entries, \
                coalesce(sum(raw_units),0)::int8 AS units, coalesce(sum(weighted_units),0)::int8 AS cost \
         FROM ledger_entries WHERE tenant_id = $1 AND source_kind <> 'job' \
         GROUP BY source_kind, metric ORDER BY source_kind, metric",
    )
    .bind::<diesel::sql_types::Uuid, _>(tenant)
    .load(conn)
    .await?;
    if !other.is_empty() {
        println!("Other metered usage (gateway traffic, events, storage, reversals)");
        println!(
            "  {:<36} {:>8} {:>14} {:>14}",
            "source metric", "entries", "raw units", "weighted"
        );
        for row in other {
            println!(
                "  {:<36} {:>8} {:>14} {:>14}",
                row.metric, row.entries, row.units, row.cost
            );
        }
    }
    Ok(())
}

#[derive(QueryableByName)]
struct LedgerSummaryRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    metric: String,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    entries: i64,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    units: i64,
    #[diesel(sql_type = diesel::sql_types::Int8)]
    cost: i64,
}
