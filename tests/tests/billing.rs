//! The billing service end to end (issue 4): a tenant on "pro" submits jobs and usage events,
//! the period closes into a draft, a late event inside the grace window updates it, it is
//! finalized with a gapless number and a PDF whose text equals the JSON totals, a late event
//! after finalization becomes an adjustment on the next invoice; mid-period upgrade and
//! downgrade produce the documented prorated amounts; a canceled subscription's next job gets
//! 402; thresholds are published once each; the database refuses changes to a finalized
//! invoice; a billing run stopped half-way and rerun produces each invoice once. Real
//! PostgreSQL and RabbitMQ, services on port 0; billing runs are driven with a test clock.

use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use futures_util::StreamExt;
use serde_json::{json, Value};
use tollgate_billing::run::{RunOptions, RunReport};
use tollgate_billing::subscriptions::{self as subs, When};
use tollgate_e2e::TestApp;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

const METRICS: &str = r#"
[[metric]]
code = "api_calls"
name = "API calls"
unit = "calls"
aggregation = "count"
"#;

/// Weekly plans (a week is 604 800 s, so the proration figures below are exact).
const CATALOG: &str = r#"
[[plans]]
code = "basic"
name = "Basic"
interval = "week"
currency = "USD"
base_fee = "70.00"

[[plans.charges]]
metric = "api_calls"
description = "API calls"
model = "per_unit"
unit_price = "0.50"

[[plans]]
code = "pro"
name = "Pro"
interval = "week"
currency = "USD"
base_fee = "140.00"
trial_days = 14
features = ["hd"]

[[plans.quotas]]
metric = "api_calls"
quantity = 10
soft_limit_pct = 100
hard_limit_pct = 120

[[plans.charges]]
metric = "job.*"
description = "Render units over 4"
model = "per_unit"
unit_price = "0.25"
included_units = "4"

[[plans.charges]]
metric = "api_calls"
description = "API calls (graduated)"
model = "graduated"
tiers = [{ up_to = "5", unit_price = "1.00" }, { unit_price = "0.10" }]
"#;

fn ok_units(units: i64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "output": { "ok": true }, "units": units }))
}

/// A tenant with the catalog and metric above, a `render` job type (weight 2) whose executor
/// reports 3 units, and organization account `name` owning workspace `<name>-ws`.
async fn app_with_account(name: &str) -> TestApp {
    let app = TestApp::spawn().await;
    app.apply_metrics(METRICS).await;
    apply_catalog(&app, CATALOG).await;
    app.add_job_type("render", "/render", 2, 3, 4096).await;
    Mock::given(method("POST"))
        .and(path("/render"))
        .respond_with(ok_units(3))
        .mount(&app.executor)
        .await;
    account(&app, name).await;
    app
}

async fn apply_catalog(app: &TestApp, text: &str) {
    let file = std::env::temp_dir().join(format!("tg-catalog-{}.toml", Uuid::new_v4()));
    std::fs::write(&file, text).expect("write catalog");
    app.ctl(&[
        "catalog",
        "apply",
        "--tenant",
        &app.tenant_name,
        &file.to_string_lossy(),
    ])
    .await
    .expect("catalog apply");
    let _ = std::fs::remove_file(&file);
}

async fn account(app: &TestApp, name: &str) {
    let (status, body) = app
        .post_json(
            "/v1/accounts",
            &json!({ "external_id": name, "name": name, "kind": "organization" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .post_json(
            "/v1/workspaces",
            &json!({ "external_id": format!("{name}-ws"), "name": name, "account": name }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Subscribes `account` through the API, starting at `start`; returns the subscription JSON.
async fn subscribe(app: &TestApp, account: &str, plan: &str, start: DateTime<Utc>) -> Value {
    let (status, body) = app
        .post_json(
            "/v1/subscriptions",
            &json!({ "account": account, "plan": plan, "start_at": start, "skip_trial": true }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    body
}

async fn event(app: &TestApp, id: &str, account: &str, at: DateTime<Utc>) {
    let (status, body) = app
        .post_json(
            "/v1/events",
            &json!({ "id": id, "metric": "api_calls", "account": account, "timestamp": at }),
        )
        .await;
    assert!(
        status == 202 || status == 200,
        "event {id}: {status} {body}"
    );
}

async fn run(app: &TestApp, as_of: DateTime<Utc>) -> RunReport {
    app.billing_run(as_of).await
}

async fn invoices(app: &TestApp) -> Vec<Value> {
    let (status, body) = app.get_json("/v1/invoices").await;
    assert_eq!(status, 200, "{body}");
    let mut list = body["data"].as_array().cloned().unwrap_or_default();
    list.reverse(); // oldest first
    list
}

fn line<'a>(invoice: &'a Value, kind: &str, metric: Option<&str>) -> &'a Value {
    invoice["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .find(|l| l["kind"] == kind && metric.is_none_or(|m| l["metric"] == m))
        .unwrap_or_else(|| panic!("no {kind} line for {metric:?} in {invoice}"))
}

/// Start of the current minute, two hours ago: jobs completing now fall inside period 0.
fn start_instant() -> DateTime<Utc> {
    (Utc::now() - TimeDelta::hours(2))
        .duration_trunc(TimeDelta::minutes(1))
        .expect("truncate")
}

const WEEK: i64 = 7;

/// Turns billing enforcement at intake on for the test tenant (`tollgatectl tenant set-billing`).
async fn enforce_billing(app: &TestApp) {
    app.ctl(&[
        "tenant",
        "set-billing",
        "--tenant",
        &app.tenant_name,
        "--enforce",
        "true",
    ])
    .await
    .expect("enforce");
}

/// Submits a fresh `render` job for `workspace` (input `{n}`, `n` counted up so no submission
/// repeats an earlier one) every 50 ms until one is answered `want`; panics when that takes
/// `within` or longer. Returns the answer's body.
async fn submit_until(
    app: &TestApp,
    workspace: &str,
    n: &mut u64,
    want: u16,
    within: Duration,
) -> Value {
    let started = Instant::now();
    loop {
        *n += 1;
        let job = json!({ "type": "render", "input": { "n": *n }, "workspace": workspace });
        let (status, body) = app.submit(&job, None).await;
        if status == want {
            return body;
        }
        assert!(
            started.elapsed() < within,
            "no {want} within {within:?}; last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until intake's entitlement projection enforces billing for the tenant (it refreshes
/// every 200 ms): an event of an account without a subscription is refused.
async fn wait_until_enforced(app: &TestApp) {
    account(app, "nobody").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = app
            .post_json(
                "/v1/events",
                &json!({ "id": format!("probe-{}", Uuid::new_v4()), "metric": "api_calls", "account": "nobody" }),
            )
            .await;
        if status == 402 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "billing never enforced: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pro_period_is_drafted_updated_in_grace_finalized_and_adjusted_next_period() {
    let app = app_with_account("acme").await;
    let s = start_instant();
    let sub = subscribe(&app, "acme", "pro", s).await;
    assert_eq!(sub["status"], "active");

    // Usage in period 0: 3 jobs × 3 units × weight 2 = 18 job units; 7 API calls.
    for i in 0..3 {
        let (status, body) = app
            .submit(
                &json!({ "type": "render", "input": { "n": i }, "workspace": "acme-ws" }),
                None,
            )
            .await;
        assert_eq!(status, 202, "{body}");
        app.wait_for_status(
            body["id"].as_str().expect("id"),
            &["succeeded"],
            Duration::from_secs(20),
        )
        .await;
    }
    for i in 0..7 {
        event(
            &app,
            &format!("e{i}"),
            "acme",
            s + TimeDelta::minutes(10 + i),
        )
        .await;
    }

    // The period closes: a draft with base fee, job usage and API-call usage.
    let end = s + TimeDelta::days(WEEK);
    let report = run(&app, end).await;
    assert_eq!(
        (report.periods_closed, report.drafts_created),
        (1, 1),
        "{report:?}"
    );
    let first = &invoices(&app).await[0];
    assert_eq!(first["status"], "draft");
    assert_eq!(line(first, "base_fee", None)["amount_minor"], 14000);
    let jobs = line(first, "usage", Some("job.*"));
    assert_eq!(jobs["quantity"], "18");
    assert_eq!(jobs["amount_minor"], 350, "(18 - 4 included) × 0.25 = 3.50");
    let calls = line(first, "usage", Some("api_calls"));
    assert_eq!(calls["quantity"], "7");
    assert_eq!(calls["amount_minor"], 520, "5 × 1.00 + 2 × 0.10 = 5.20");
    assert_eq!(first["total_minor"], 14000 + 350 + 520);

    // A late event inside the grace window (3 days) updates the draft.
    event(&app, "late-1", "acme", s + TimeDelta::hours(1)).await;
    let report = run(&app, end + TimeDelta::hours(1)).await;
    assert_eq!(report.finalized, 0);
    let first = &invoices(&app).await[0];
    assert_eq!(first["status"], "draft");
    assert_eq!(line(first, "usage", Some("api_calls"))["quantity"], "8");
    assert_eq!(first["total_minor"], 14000 + 350 + 530);

    // The grace window ends: finalized with number INV-000001 and a PDF.
    let report = run(&app, end + TimeDelta::days(3)).await;
    assert_eq!(report.finalized, 1, "{report:?}");
    let id = invoices(&app).await[0]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let (status, first) = app.get_json(&format!("/v1/invoices/{id}")).await;
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["status"], "finalized");
    assert_eq!(first["number"], "INV-000001");
    assert_eq!(first["total"], "148.80");

    // The PDF, fetched through the signed link, says what the JSON says.
    // Links point at the configured public base URL; here the gateway listens elsewhere.
    let pdf_url = first["pdf_url"].as_str().expect("pdf link").replacen(
        "http://127.0.0.1:8080",
        &app.gateway_url,
        1,
    );
    let pdf = app.http.get(&pdf_url).send().await.expect("pdf");
    assert_eq!(pdf.status(), 200);
    let bytes = pdf.bytes().await.expect("pdf bytes");
    let text = tollgate_invoice_pdf::extract_text(&bytes).expect("extract");
    for expected in [
        "Invoice INV-000001".to_owned(),
        format!(
            "Subtotal USD {}",
            first["subtotal"].as_str().expect("subtotal")
        ),
        format!("Total USD {}", first["total"].as_str().expect("total")),
    ] {
        assert!(text.contains(&expected), "PDF lacks {expected:?}:\n{text}");
    }
    // `?format=pdf` answers 303 to a signed link.
    let res = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
        .get(format!("{}/v1/invoices/{id}?format=pdf", app.gateway_url))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("pdf redirect");
    assert_eq!(res.status(), 303);
    let location = res.headers()["location"].to_str().expect("location");
    assert!(location.contains("/v1/downloads/art_"), "{location}");

    // The database refuses any change to the finalized invoice and its lines.
    let err = app
        .execute("UPDATE invoices SET total_minor = 1 WHERE number = 1")
        .await
        .expect_err("update refused");
    assert!(err.contains("BILLING_PERIOD_LOCKED"), "{err}");
    let err = app
        .execute("UPDATE invoice_lines SET amount_minor = 0")
        .await
        .expect_err("line update refused");
    assert!(err.contains("BILLING_PERIOD_LOCKED"), "{err}");
    assert!(app.execute("DELETE FROM invoices").await.is_err());
    // Recomputing the finalized period fails with BILLING_PERIOD_LOCKED.
    let month = s.format("%Y-%m").to_string();
    let err = app
        .ctl(&[
            "billing",
            "run",
            "--tenant",
            &app.tenant_name,
            "--period",
            &month,
        ])
        .await
        .expect_err("locked");
    assert!(err.to_string().contains("BILLING_PERIOD_LOCKED"), "{err}");

    // A late event after finalization goes to the next invoice as an adjustment.
    event(&app, "late-2", "acme", s + TimeDelta::hours(2)).await;
    let report = run(&app, end + TimeDelta::days(WEEK)).await;
    assert_eq!(report.drafts_created, 1, "{report:?}");
    let second = &invoices(&app).await[1];
    let adjustment = line(second, "adjustment", Some("api_calls"));
    assert_eq!(adjustment["quantity"], "1");
    assert_eq!(
        adjustment["amount_minor"], 10,
        "the 9th call is in the 0.10 tier"
    );
    assert_eq!(
        adjustment["period_start"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().expect("time")),
        Some(s)
    );
    // The finalized first invoice did not change.
    let (_, again) = app.get_json(&format!("/v1/invoices/{id}")).await;
    assert_eq!(again["total_minor"], first["total_minor"]);

    // Events were published: invoice.finalized and payment.requested went through the outbox.
    assert_eq!(
        app.count("SELECT count(*) AS n FROM outbox WHERE routing_key IN ('invoice.finalized', 'payment.requested')")
            .await,
        2
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mid_period_upgrade_and_downgrade_are_prorated_by_the_second() {
    let app = app_with_account("beta").await;
    let s = start_instant();
    let sub = subscribe(&app, "beta", "basic", s).await;
    let id = sub["id"]
        .as_str()
        .expect("id")
        .parse::<tollgate_domain::SubscriptionId>()
        .expect("sub id")
        .as_uuid();
    let tenant = app.tenant.as_uuid();
    let mut conn = tollgate_storage::pool::get(&app.pool).await.expect("conn");

    // Upgrade basic (70.00/week) → pro (140.00/week) after 2 of 7 days: 5/7 of the week left.
    let up_at = s + TimeDelta::days(2);
    subs::change_plan(
        app.billing(),
        &mut conn,
        tenant,
        id,
        "pro".into(),
        When::Now,
        up_at,
    )
    .await
    .expect("upgrade");
    run(&app, s + TimeDelta::days(WEEK)).await;
    let first = &invoices(&app).await[0];
    let kinds: Vec<_> = first["lines"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| l["kind"].clone())
        .collect();
    assert_eq!(
        kinds[..3],
        [json!("base_fee"), json!("proration"), json!("proration")]
    );
    assert_eq!(
        first["lines"][0]["amount_minor"], 7000,
        "the period started on basic"
    );
    assert_eq!(
        first["lines"][1]["amount_minor"], -5000,
        "credit: -7000 × 5/7"
    );
    assert_eq!(
        first["lines"][2]["amount_minor"], 10000,
        "charge: 14000 × 5/7"
    );

    // Downgrade pro → basic one day into the next week: 6/7 left.
    let down_at = s + TimeDelta::days(WEEK + 1);
    subs::change_plan(
        app.billing(),
        &mut conn,
        tenant,
        id,
        "basic".into(),
        When::Now,
        down_at,
    )
    .await
    .expect("downgrade");
    run(&app, s + TimeDelta::days(2 * WEEK)).await;
    let second = &invoices(&app).await[1];
    assert_eq!(
        second["lines"][0]["amount_minor"], 14000,
        "the period started on pro"
    );
    assert_eq!(
        second["lines"][1]["amount_minor"], -12000,
        "credit: -14000 × 6/7"
    );
    assert_eq!(
        second["lines"][2]["amount_minor"], 6000,
        "charge: 7000 × 6/7"
    );
    // The history keeps both changes with their proration.
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM subscription_changes WHERE subscription_id = '{id}' \
             AND kind IN ('upgrade', 'downgrade') AND proration_credit_minor IS NOT NULL"
        ))
        .await,
        2
    );
    drop(conn);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canceled_subscription_gets_402_on_the_next_job_and_a_final_invoice() {
    let app = app_with_account("gamma").await;
    enforce_billing(&app).await;
    let s = start_instant();
    wait_until_enforced(&app).await;
    let sub = subscribe(&app, "gamma", "pro", s).await;
    // The projection picks the new subscription up within its refresh.
    let mut n = 0;
    submit_until(&app, "gamma-ws", &mut n, 202, Duration::from_secs(10)).await;

    let (status, body) = app
        .post_json(
            &format!(
                "/v1/subscriptions/{}/cancel",
                sub["id"].as_str().expect("id")
            ),
            &json!({ "when": "now", "reason": "customer asked" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "canceled");
    let canceled = Instant::now();
    let body = submit_until(&app, "gamma-ws", &mut n, 402, Duration::from_secs(1)).await;
    assert_eq!(body["error"]["code"], "SUBSCRIPTION_REQUIRED", "{body}");
    assert!(canceled.elapsed() < Duration::from_secs(1));

    // The cut-short period has a draft with the unused base fee credited.
    let invoice = &invoices(&app).await[0];
    assert_eq!(invoice["status"], "draft");
    let credit = line(invoice, "proration", None)["amount_minor"]
        .as_i64()
        .expect("credit");
    assert!(
        (-14000..0).contains(&credit),
        "credit for the unused part: {credit}"
    );
    assert_eq!(invoice["lines"][0]["amount_minor"], 14000);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscription_changes_reach_intake_through_billings_events() {
    // Intake's periodic change read is slowed to a minute: only billing's
    // `subscription.updated` events (outbox → relay → events exchange → intake) can make the
    // new subscription and then its cancellation visible within the test.
    let app = TestApp::spawn_with(tollgate_e2e::Options {
        entitlements_refresh_ms: Some(60_000),
        ..Default::default()
    })
    .await;
    app.apply_metrics(METRICS).await;
    apply_catalog(&app, CATALOG).await;
    app.add_job_type("render", "/render", 2, 3, 4096).await;
    Mock::given(method("POST"))
        .and(path("/render"))
        .respond_with(ok_units(3))
        .mount(&app.executor)
        .await;
    account(&app, "eta").await;
    enforce_billing(&app).await;
    let sub = subscribe(&app, "eta", "pro", start_instant()).await;
    // Without the event the subscription would not reach intake within 3 s.
    let mut n = 0;
    submit_until(&app, "eta-ws", &mut n, 202, Duration::from_secs(3)).await;
    let (status, body) = app
        .post_json(
            &format!(
                "/v1/subscriptions/{}/cancel",
                sub["id"].as_str().expect("id")
            ),
            &json!({ "when": "now" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let canceled = Instant::now();
    submit_until(&app, "eta-ws", &mut n, 402, Duration::from_secs(1)).await;
    assert!(
        canceled.elapsed() < Duration::from_secs(1),
        "still accepted after 1 s"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quota_thresholds_are_published_once_each_and_the_hard_limit_refuses_with_402() {
    let app = app_with_account("delta").await;
    enforce_billing(&app).await;
    // Listen on the events exchange for threshold events.
    let (_amqp, mut consumer) = app.tap_events("usage.threshold_reached").await;

    wait_until_enforced(&app).await;
    subscribe(&app, "delta", "pro", start_instant()).await;
    // Quota 10 api_calls, hard at 120 %: 12 accepted, the 13th refused.
    let mut accepted = 0;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut refused = None;
    let mut n = 0;
    while refused.is_none() {
        assert!(
            Instant::now() < deadline,
            "never refused after {accepted} events"
        );
        let (status, body) = app
            .post_json(
                "/v1/events",
                &json!({ "id": format!("q{n}"), "metric": "api_calls", "account": "delta" }),
            )
            .await;
        match status {
            200 | 202 => {
                accepted += 1;
                n += 1;
            }
            // Until the projection has loaded the new subscription.
            503 => tokio::time::sleep(Duration::from_millis(50)).await,
            402 if body["error"]["code"] == "SUBSCRIPTION_REQUIRED" => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            402 => refused = Some(body),
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let refused = refused.expect("refused");
    assert_eq!(refused["error"]["code"], "QUOTA_EXCEEDED", "{refused}");
    assert_eq!(refused["error"]["details"]["limit"], 12, "{refused}");
    assert_eq!(refused["error"]["details"]["usage"], 12, "{refused}");
    assert_eq!(accepted, 12);

    // 80, 90 and 100 % each published once.
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let delivery = tokio::time::timeout(Duration::from_secs(10), consumer.next())
            .await
            .expect("threshold event in time")
            .expect("delivery")
            .expect("ok");
        let envelope: Value = serde_json::from_slice(&delivery.data).expect("json");
        assert_eq!(envelope["type"], "usage.threshold_reached");
        seen.push(envelope["data"]["threshold_pct"].as_i64().expect("pct"));
    }
    seen.sort();
    assert_eq!(seen, [80, 90, 100]);
    assert!(
        tokio::time::timeout(Duration::from_millis(500), consumer.next())
            .await
            .is_err(),
        "no threshold is published twice"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_billing_run_stopped_half_way_and_rerun_invoices_each_period_once() {
    let app = TestApp::spawn().await;
    app.apply_metrics(METRICS).await;
    apply_catalog(&app, CATALOG).await;
    let s = start_instant();
    for i in 0..30 {
        account(&app, &format!("c{i}")).await;
        subscribe(&app, &format!("c{i}"), "basic", s).await;
    }
    let end = s + TimeDelta::days(WEEK);
    let opts = |max| RunOptions {
        tenant: Some(app.tenant.as_uuid()),
        as_of: end,
        batch: 7,
        max_close_batches: max,
    };
    // "Killed" after two batches: 14 periods closed, the rest untouched.
    let partial = tollgate_billing::run::run(app.billing(), &opts(Some(2)))
        .await
        .expect("run");
    assert_eq!(partial.drafts_created, 14);
    // Rerun twice concurrently: every period is invoiced exactly once.
    let (first, second) = (opts(None), opts(None));
    let (a, b) = tokio::join!(
        tollgate_billing::run::run(app.billing(), &first),
        tollgate_billing::run::run(app.billing(), &second),
    );
    let created = a.expect("a").drafts_created + b.expect("b").drafts_created;
    assert_eq!(created, 16);
    assert_eq!(app.count("SELECT count(*) AS n FROM invoices").await, 30);
    assert_eq!(
        app.count("SELECT count(DISTINCT (subscription_id, period_start)) AS n FROM invoices")
            .await,
        30
    );
    // Finalization numbers them gaplessly 1..=30.
    run(&app, end + TimeDelta::days(3)).await;
    assert_eq!(
        app.count("SELECT count(*) AS n FROM invoices WHERE status = 'finalized' AND number BETWEEN 1 AND 30").await,
        30
    );
    assert_eq!(app.count("SELECT max(number) AS n FROM invoices").await, 30);
    // Reconciliation of the month finds nothing wrong.
    let mut conn = tollgate_storage::pool::get(&app.pool).await.expect("conn");
    let report = tollgate_billing::reconcile::reconcile(
        &mut conn,
        app.tenant.as_uuid(),
        s - TimeDelta::days(1),
        end,
    )
    .await
    .expect("reconcile");
    assert_eq!(report.checked, 30);
    assert!(
        report.discrepancies.is_empty(),
        "{:?}",
        report.discrepancies
    );
    // The scheduled job reconciles the previous calendar month of every tenant with invoices.
    let next_month = {
        use chrono::{Datelike, TimeZone};
        let first = Utc
            .with_ymd_and_hms(s.year(), s.month(), 1, 0, 0, 0)
            .single()
            .expect("month");
        first
            .checked_add_months(chrono::Months::new(1))
            .expect("next")
            + TimeDelta::days(1)
    };
    let scheduled = tollgate_billing::reconcile::reconcile_last_month(&app.pool, next_month)
        .await
        .expect("scheduled reconcile");
    let ours = scheduled
        .iter()
        .find(|(tenant, _)| *tenant == app.tenant.as_uuid())
        .expect("our tenant reconciled");
    assert_eq!(ours.1.checked, 30);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM reconciliation_runs")
            .await,
        2,
        "both runs are recorded"
    );
    drop(conn);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editing_a_plan_writes_a_version_and_existing_subscribers_keep_theirs() {
    let app = app_with_account("eps").await;
    account(&app, "zeta").await;
    let s = start_instant();
    subscribe(&app, "eps", "basic", s).await;
    apply_catalog(
        &app,
        &CATALOG.replace("base_fee = \"70.00\"", "base_fee = \"77.00\""),
    )
    .await;
    let (_, plans) = app.get_json("/v1/plans").await;
    let basic = plans["data"]
        .as_array()
        .expect("plans")
        .iter()
        .find(|p| p["code"] == "basic")
        .cloned()
        .expect("basic");
    assert_eq!(basic["version"], 2);
    subscribe(&app, "zeta", "basic", s).await;
    run(&app, s + TimeDelta::days(WEEK)).await;
    let mut fees: Vec<i64> = invoices(&app)
        .await
        .iter()
        .map(|i| {
            line(i, "base_fee", None)["amount_minor"]
                .as_i64()
                .expect("fee")
        })
        .collect();
    fees.sort();
    assert_eq!(
        fees,
        [7000, 7700],
        "the existing subscriber is billed on version 1"
    );

    // Credit note and voiding, with reasons.
    run(&app, s + TimeDelta::days(WEEK + 3)).await;
    let all = invoices(&app).await;
    let (status, body) = app
        .post_json(
            &format!(
                "/v1/invoices/{}/credit_notes",
                all[0]["id"].as_str().expect("id")
            ),
            &json!({ "amount_minor": 500, "reason": "goodwill" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    assert_eq!(body["credit_notes"][0]["amount_minor"], 500);
    let (status, body) = app
        .post_json(
            &format!("/v1/invoices/{}/void", all[1]["id"].as_str().expect("id")),
            &json!({ "reason": "duplicate customer" }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "void");
    // CSV export lists both.
    let (status, content_type, csv) = app.get_text("/v1/invoices?format=csv").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"));
    assert_eq!(csv.lines().count(), 3, "{csv}");
    app.stop().await;
}
