//! `tollgate-loadgen-billing`: the billing-run benchmark (issue 4). Builds, in a database of
//! its own, one tenant with a monthly plan (a per-unit charge with included units on
//! `job.render` and a graduated charge on `api_calls`), N accounts each with an active
//! subscription, and M ledger entries per account inside the period; then times
//!   1. the billing run that closes every period into a rated draft invoice, and
//!   2. the run that finalizes them (gapless numbers, PDFs written to a local directory).
//!
//! Then it checks that every subscription got exactly one invoice.
//!
//! `tollgate-loadgen-billing --database-url postgres://…/tollgate_billing_bench
//!   --subscriptions 10000 --entries-per-subscription 1000`

use std::time::Instant;

use anyhow::Context;
use chrono::{DateTime, Months, TimeDelta, Utc};
use clap::Parser;
use diesel::sql_types::{BigInt, Timestamptz, Uuid as SqlUuid};
use diesel_async::RunQueryDsl;
use tollgate_billing::catalog::CatalogDefinition;
use tollgate_billing::run::{run, RunOptions};
use tollgate_billing::BillingContext;
use uuid::Uuid;

#[derive(Parser)]
#[command(about = "Time billing runs over many subscriptions")]
struct Args {
    /// A database to (re)create the data in; it is migrated, and the bench tenant replaced.
    #[arg(long, env = "DATABASE_URL")]
    database_url: String,
    #[arg(long, default_value_t = 10_000)]
    subscriptions: i64,
    #[arg(long, default_value_t = 1_000)]
    entries_per_subscription: i64,
    /// Subscriptions per billing-run transaction.
    #[arg(long, default_value_t = 500)]
    batch: i64,
    /// Skip the finalization (PDF) run.
    #[arg(long)]
    no_finalize: bool,
}

const CATALOG: &str = r#"
[[plans]]
code = "bench"
name = "Bench"
interval = "month"
currency = "USD"
base_fee = "49.00"

[[plans.charges]]
metric = "job.render"
description = "Render units over 1,000"
model = "per_unit"
unit_price = "0.002"
included_units = "1000"

[[plans.charges]]
metric = "api_calls"
description = "API calls"
model = "graduated"
tiers = [{ up_to = "500", unit_price = "0" }, { up_to = "2000", unit_price = "0.01" }, { unit_price = "0.005" }]
"#;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tollgate_storage::migrate::run_pending(&args.database_url)
        .await
        .context("migrating")?;
    let pool = tollgate_storage::pool::build_pool(
        &args.database_url,
        4,
        std::time::Duration::from_secs(10),
    )?;
    let mut conn = tollgate_storage::pool::get(&pool).await?;
    let tenant_name = format!("billing-bench-{}", Uuid::new_v4().simple());
    let tenant = tollgate_storage::tenants::create_tenant(&mut conn, &tenant_name, 1_000_000)
        .await?
        .id;
    diesel::sql_query(
        "INSERT INTO billable_metrics (tenant_id, code, name, unit, aggregation) \
         VALUES ($1, 'api_calls', 'API calls', 'calls', 'count')",
    )
    .bind::<SqlUuid, _>(tenant)
    .execute(&mut conn)
    .await?;
    let applied = CatalogDefinition::from_toml(CATALOG)?
        .apply(&mut conn, tenant)
        .await?;
    let plan = tollgate_storage::plans::current_version(&mut conn, tenant, &applied[0].code)
        .await?
        .context("plan")?;
    let start: DateTime<Utc> = "2026-10-01T00:00:00Z".parse()?;
    let end = start.checked_add_months(Months::new(1)).context("month")?;

    let setup = Instant::now();
    diesel::sql_query(
        "INSERT INTO accounts (id, tenant_id, kind, external_id, name) \
         SELECT gen_random_uuid(), $1, 'organization', 'acct-' || n, 'Account ' || n \
         FROM generate_series(1, $2) AS n",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<BigInt, _>(args.subscriptions)
    .execute(&mut conn)
    .await?;
    diesel::sql_query(
        "INSERT INTO subscriptions (id, tenant_id, account_id, plan_version_id, status, anchor_at, \
             current_period_start, current_period_end) \
         SELECT gen_random_uuid(), $1, a.id, $2, 'active', $3, $3, $4 \
         FROM accounts a WHERE a.tenant_id = $1",
    )
    .bind::<SqlUuid, _>(tenant)
    .bind::<SqlUuid, _>(plan.version.id)
    .bind::<Timestamptz, _>(start)
    .bind::<Timestamptz, _>(end)
    .execute(&mut conn)
    .await?;
    // Entries in slices of accounts, so progress shows and no statement holds everything.
    let per = args.entries_per_subscription;
    let step = (1_000_000 / per.max(1)).max(1);
    let mut from = 0;
    while from < args.subscriptions {
        diesel::sql_query(
            "INSERT INTO ledger_entries (tenant_id, idempotency_key, metric, raw_units, weighted_units, \
                 cost, source_kind, source_id, account_id, occurred_at) \
             SELECT $1, 'bench:' || a.external_id || ':' || g, \
                    CASE WHEN g % 2 = 0 THEN 'job.render' ELSE 'api_calls' END, \
                    1, 1 + g % 5, 0, CASE WHEN g % 2 = 0 THEN 'job' ELSE 'event' END, \
                    a.external_id, a.id, $2 + (g * interval '37 seconds') \
             FROM (SELECT * FROM accounts WHERE tenant_id = $1 ORDER BY external_id OFFSET $4 LIMIT $5) a \
             CROSS JOIN generate_series(1, $3) AS g",
        )
        .bind::<SqlUuid, _>(tenant)
        .bind::<Timestamptz, _>(start)
        .bind::<BigInt, _>(per)
        .bind::<BigInt, _>(from)
        .bind::<BigInt, _>(step)
        .execute(&mut conn)
        .await?;
        from += step;
        eprint!(
            "\rledger: {} of {} accounts",
            from.min(args.subscriptions),
            args.subscriptions
        );
    }
    eprintln!();
    diesel::sql_query("ANALYZE").execute(&mut conn).await?;
    println!(
        "setup: {} subscriptions, {} ledger entries, {:.1} s",
        args.subscriptions,
        args.subscriptions * per,
        setup.elapsed().as_secs_f64()
    );

    let documents =
        std::env::temp_dir().join(format!("tollgate-bench-docs-{}", Uuid::new_v4().simple()));
    let ctx = BillingContext {
        pool: pool.clone(),
        events_exchange: "tollgate_bench.events".into(),
        objects: Some(std::sync::Arc::new(tollgate_objects::Objects::open(
            &tollgate_objects::ObjectsConfig {
                store: tollgate_objects::StoreKind::Local,
                root: documents.to_string_lossy().into_owned(),
                bucket: String::new(),
                signing_key: tollgate_objects::SecretString::new("bench"),
                url_ttl_secs: 300,
                public_base_url: "http://127.0.0.1:8080".into(),
            },
        )?)),
        grace: TimeDelta::days(3),
        payments: Default::default(),
    };
    let opts = |as_of| RunOptions {
        tenant: Some(tenant),
        as_of,
        batch: args.batch,
        max_close_batches: None,
    };
    let t = Instant::now();
    let closed = run(&ctx, &opts(end))
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let close_secs = t.elapsed().as_secs_f64();
    println!(
        "close run: {} periods closed into {} rated drafts in {:.2} s ({:.0} subscriptions/s)",
        closed.periods_closed,
        closed.drafts_created,
        close_secs,
        closed.periods_closed as f64 / close_secs
    );
    anyhow::ensure!(
        closed.drafts_created as i64 == args.subscriptions,
        "one draft per subscription"
    );
    if !args.no_finalize {
        let t = Instant::now();
        let finalized = run(&ctx, &opts(end + TimeDelta::days(3)))
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let secs = t.elapsed().as_secs_f64();
        println!(
            "finalize run: {} invoices finalized with PDFs in {:.2} s ({:.0} invoices/s)",
            finalized.finalized,
            secs,
            finalized.finalized as f64 / secs
        );
    }
    #[derive(diesel::QueryableByName)]
    struct Count {
        #[diesel(sql_type = BigInt)]
        n: i64,
    }
    let distinct: Count = diesel::sql_query(
        "SELECT count(DISTINCT subscription_id) AS n FROM invoices WHERE tenant_id = $1",
    )
    .bind::<SqlUuid, _>(tenant)
    .get_result(&mut conn)
    .await?;
    let all: Count = diesel::sql_query("SELECT count(*) AS n FROM invoices WHERE tenant_id = $1")
        .bind::<SqlUuid, _>(tenant)
        .get_result(&mut conn)
        .await?;
    println!(
        "check: {} invoices for {} subscriptions (one each: {})",
        all.n,
        distinct.n,
        all.n == distinct.n && all.n == args.subscriptions
    );
    let _ = std::fs::remove_dir_all(&documents);
    Ok(())
}
