//! Payments end to end (issue 5 "Show"): real PostgreSQL and RabbitMQ, the real services on
//! port 0, Stripe faked locally (`tollgate_e2e::stripe_fake`, which checks the bearer key, the
//! form fields and the idempotency key of every call). PSP events are signed like Stripe signs
//! them and posted to the webhook service, which verifies, stores and publishes them; billing
//! applies them from its queue.
//!
//! * A finalized invoice gets a PaymentIntent with an idempotency key; `invoice.payment_failed`
//!   makes the subscription past due and schedules retries at +1 h, +24 h, +72 h; dunning runs
//!   at those instants (a test clock, no sleeps; the first from a fresh `BillingContext`, so
//!   the schedule is rows, not memory) are declined; the last suspends the subscription and
//!   intake answers 402; `invoice.payment_succeeded` makes it active again.
//! * A success while retries are pending (in the same second as the failure, so billing asks
//!   Stripe) cancels them.
//! * The same event delivered five times, and events delivered in reverse order, converge.
//! * Checkout, portal, refunds and PSP reconciliation.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use serde_json::{json, Value};
use tollgate_billing::dunning::{DunningReport, DunningRunOptions};
use tollgate_billing::{BillingConfig, BillingContext};
use tollgate_domain::{Envelope, PspEvent};
use tollgate_e2e::stripe_fake::{IntentScript, StripeFake};
use tollgate_e2e::{Options, TestApp};
use tollgate_storage::models::NewOutboxMessage;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, ResponseTemplate};

/// A weekly plan of 140.00 USD.
const CATALOG: &str = r#"
[[plans]]
code = "pro"
name = "Pro"
interval = "week"
currency = "USD"
base_fee = "140.00"
"#;

const HOUR: i64 = 3600;

/// Billing's PSP settings pointing at `stripe`.
fn use_fake(cfg: &mut BillingConfig, stripe_url: &str, key: &str) {
    cfg.psp.enabled = true;
    cfg.psp.stripe.api_base = stripe_url.to_owned();
    cfg.psp.stripe.secret_key = tollgate_psp::SecretString::new(key);
    cfg.psp.stripe.max_retries = 0;
    cfg.collector.interval_ms = 50;
    cfg.relay.poll_interval_ms = 50;
}

async fn spawn(stripe: &StripeFake) -> TestApp {
    let (url, key) = (stripe.url(), stripe.secret_key());
    TestApp::spawn_with(Options {
        configure_billing: Some(Arc::new(move |cfg: &mut BillingConfig| {
            use_fake(cfg, &url, &key)
        })),
        ..Default::default()
    })
    .await
}

/// What a test knows about its tenant's customer.
struct Customer {
    subscription: String,
    account: Uuid,
}

/// The catalog, a `render` job type, organization account `acme` with workspace `acme-ws`
/// subscribed to `pro` from `start`, and billing enforced at intake.
async fn setup(app: &TestApp, start: DateTime<Utc>) -> Customer {
    let file = std::env::temp_dir().join(format!("tg-catalog-{}.toml", Uuid::new_v4()));
    std::fs::write(&file, CATALOG).expect("write catalog");
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
    app.add_job_type("render", "/render", 1, 3, 4096).await;
    Mock::given(method("POST"))
        .and(path("/render"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "output": {}, "units": 1 })))
        .mount(&app.executor)
        .await;
    let (status, body) = app
        .post_json(
            "/v1/accounts",
            &json!({ "external_id": "acme", "name": "Acme", "kind": "organization" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .post_json(
            "/v1/workspaces",
            &json!({ "external_id": "acme-ws", "name": "Acme", "account": "acme" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, sub) = app
        .post_json(
            "/v1/subscriptions",
            &json!({ "account": "acme", "plan": "pro", "start_at": start, "skip_trial": true }),
        )
        .await;
    assert_eq!(status, 201, "{sub}");
    app.ctl(&[
        "tenant",
        "set-billing",
        "--tenant",
        &app.tenant_name,
        "--enforce",
        "true",
    ])
    .await
    .expect("enforce billing");
    Customer {
        subscription: sub["id"].as_str().expect("id").to_owned(),
        account: sub["account"]
            .as_str()
            .expect("account")
            .parse::<tollgate_domain::AccountId>()
            .expect("account id")
            .as_uuid(),
    }
}

/// Start of the current minute, two hours ago.
fn start_instant() -> DateTime<Utc> {
    (Utc::now() - TimeDelta::hours(2))
        .duration_trunc(TimeDelta::minutes(1))
        .expect("truncate")
}

/// Signs `event` as Stripe does and posts it to the webhook service; returns its answer.
async fn deliver(app: &TestApp, event: &Value) -> Value {
    let body = serde_json::to_vec(event).expect("event JSON");
    let signature = tollgate_psp::stripe::signature_header(
        &app.stripe_webhook_secret,
        Utc::now().timestamp(),
        &body,
    );
    let res = app
        .http
        .post(format!("{}/webhooks/stripe", app.webhook_url))
        .header("content-type", "application/json")
        .header("Stripe-Signature", signature)
        .body(body)
        .send()
        .await
        .expect("POST /webhooks/stripe");
    let status = res.status().as_u16();
    let answer: Value = res.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{answer}");
    answer
}

/// Publishes `event` as the webhook service would, straight through the outbox, under a new
/// message id (a re-sent event that no webhook-side dedupe caught).
async fn publish_direct(app: &TestApp, event: &Value) {
    let envelope = Envelope::psp(
        Uuid::now_v7(),
        PspEvent::ReceivedV1 {
            psp: "stripe".into(),
            event_id: event["id"].as_str().expect("id").to_owned(),
            event_type: event["type"].as_str().expect("type").to_owned(),
            created: DateTime::from_timestamp(event["created"].as_i64().expect("created"), 0)
                .expect("time"),
            livemode: false,
            payload: event.clone(),
        },
    );
    let mut conn = tollgate_storage::pool::get(&app.pool).await.expect("conn");
    tollgate_storage::outbox::enqueue(
        &mut conn,
        &NewOutboxMessage {
            message_id: envelope.id,
            exchange: format!("{}.events", app.amqp_prefix),
            routing_key: envelope.data.routing_key(),
            payload: serde_json::to_vec(&envelope).expect("envelope"),
        },
    )
    .await
    .expect("outbox");
}

#[derive(QueryableByName)]
struct TextRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    v: String,
}

async fn texts(app: &TestApp, sql: &str) -> Vec<String> {
    let mut conn = tollgate_storage::pool::get(&app.pool).await.expect("conn");
    diesel::sql_query(sql)
        .load::<TextRow>(&mut conn)
        .await
        .expect("query")
        .into_iter()
        .map(|r| r.v)
        .collect()
}

/// [`tollgate_e2e::eventually`] with this file's 20 s.
async fn eventually<T, F, Fut>(what: &str, check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    tollgate_e2e::eventually(Duration::from_secs(20), what, check).await
}

/// Waits until every PSP event written to the outbox so far has been applied by billing (it
/// applies up to its prefetch at once, so no single event's application proves the others').
async fn drain(app: &TestApp) {
    eventually("every PSP event is published and applied", || async {
        let left = app
            .count(
                "SELECT count(*) AS n FROM outbox o WHERE o.routing_key LIKE 'psp.%' \
                 AND NOT EXISTS (SELECT 1 FROM psp_event_applications a \
                     WHERE a.event_id = convert_from(o.payload, 'UTF8')::jsonb -> 'data' ->> 'event_id')",
            )
            .await;
        (left == 0).then_some(())
    })
    .await; // Unknown event types are recorded, not errors.
    let marker = format!("evt_marker_{}", Uuid::new_v4().simple());
    publish_direct(
        app,
        &StripeFake::event(
            &marker,
            "tollgate.test.marker",
            Utc::now().timestamp(),
            json!({}),
        ),
    )
    .await;
    assert_eq!(applied(app, &marker).await, "ignored");
}

/// Waits until billing has taken `event_id` from its queue; returns the recorded outcome.
async fn applied(app: &TestApp, event_id: &str) -> String {
    let sql = format!(
        "SELECT outcome AS v FROM psp_event_applications WHERE psp = 'stripe' AND event_id = '{event_id}'"
    );
    eventually(&format!("billing applies {event_id}"), || async {
        texts(app, &sql).await.into_iter().next()
    })
    .await
}

async fn subscription_status(app: &TestApp, id: &str) -> String {
    let (status, body) = app.get_json(&format!("/v1/subscriptions/{id}")).await;
    assert_eq!(status, 200, "{body}");
    body["status"].as_str().expect("status").to_owned()
}

/// The invoice's payments, refunds and dunning case (`GET /v1/invoices/{id}/payments`).
async fn payments_of(app: &TestApp, invoice: &str) -> Value {
    let (status, body) = app
        .get_json(&format!("/v1/invoices/{invoice}/payments"))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn outbox_count(app: &TestApp, routing_key: &str) -> i64 {
    app.count(&format!(
        "SELECT count(*) AS n FROM outbox WHERE routing_key = '{routing_key}'"
    ))
    .await
}

/// Opens checkout for `acme`, then lets Stripe report the completed session with a saved card:
/// the customer and `pm_card_visa` are linked to the account. Returns the customer id.
async fn link_card(app: &TestApp, stripe: &StripeFake, customer: &Customer) -> String {
    let (status, body) = app
        .post_json(
            "/v1/billing/checkout",
            &json!({
                "account": "acme",
                "success_url": "https://app.example.com/billing/done",
                "cancel_url": "https://app.example.com/billing",
            }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let url = body["url"].as_str().expect("url");
    assert!(
        url.starts_with("https://checkout.stripe.com/c/pay/cs_test"),
        "{url}"
    );
    let cus = body["customer"].as_str().expect("customer").to_owned();
    let session = body["session_id"].as_str().expect("session").to_owned();

    let created = stripe.requests_to("POST", "/v1/customers");
    assert_eq!(created.len(), 1);
    assert_eq!(
        created[0].idempotency_key.as_deref(),
        Some(format!("tollgate-customer-{}", customer.account).as_str())
    );
    assert_eq!(
        created[0].field("metadata[tollgate_account]"),
        Some(customer.account.to_string().as_str())
    );
    let sessions = stripe.requests_to("POST", "/v1/checkout/sessions");
    assert_eq!(sessions.len(), 1);
    let s = &sessions[0];
    assert_eq!(s.field("mode"), Some("setup"));
    assert_eq!(s.field("currency"), Some("usd"));
    assert_eq!(s.field("customer"), Some(cus.as_str()));
    assert_eq!(
        s.field("client_reference_id"),
        Some(customer.account.to_string().as_str())
    );
    assert!(s
        .idempotency_key
        .as_deref()
        .is_some_and(|k| k.starts_with("tollgate-checkout-")));

    // As Stripe sends it: the session names its SetupIntent by id only; billing fetches it
    // from Stripe for the saved card.
    stripe.put_setup_intent(json!({
        "id": "seti_1", "object": "setup_intent", "status": "succeeded",
        "customer": cus, "payment_method": "pm_card_visa",
    }));
    let event = StripeFake::event(
        &format!("evt_checkout_{}", Uuid::new_v4().simple()),
        "checkout.session.completed",
        Utc::now().timestamp(),
        json!({
            "id": session, "object": "checkout.session", "mode": "setup", "status": "complete",
            "customer": cus, "client_reference_id": customer.account.to_string(),
            "metadata": { "tollgate_account": customer.account.to_string() },
            "setup_intent": "seti_1",
        }),
    );
    deliver(app, &event).await;
    assert_eq!(
        applied(app, event["id"].as_str().expect("id")).await,
        "applied"
    );
    let methods = texts(
        app,
        &format!(
            "SELECT default_payment_method AS v FROM psp_customers WHERE account_id = '{}' AND customer_id = '{cus}'",
            customer.account
        ),
    )
    .await;
    assert_eq!(methods, vec!["pm_card_visa".to_owned()]);
    cus
}

/// Closes and finalizes the first period (`start` + 1 week, then the 3-day grace); returns
/// the invoice's `inv_…` id, its UUID and total.
async fn finalize(app: &TestApp, start: DateTime<Utc>) -> (String, Uuid, i64) {
    app.billing_run(start + TimeDelta::days(7)).await;
    let report = app.billing_run(start + TimeDelta::days(10)).await;
    assert_eq!(report.finalized, 1, "{report:?}");
    let (status, list) = app.get_json("/v1/invoices").await;
    assert_eq!(status, 200, "{list}");
    let invoice = &list["data"][0];
    // Finalized by the run; with a card that succeeds at once the collector may already have
    // been paid it by the time it is read (callers assert which).
    assert!(invoice["number"].as_str().is_some(), "{invoice}");
    assert!(
        matches!(invoice["status"].as_str(), Some("finalized" | "paid")),
        "{invoice}"
    );
    let id = invoice["id"].as_str().expect("id").to_owned();
    let uuid = id
        .parse::<tollgate_domain::InvoiceId>()
        .expect("invoice id")
        .as_uuid();
    (id, uuid, invoice["total_minor"].as_i64().expect("total"))
}

/// Waits until the invoice's attempt 1 went to Stripe and left `pending`; returns it.
async fn first_payment_sent(app: &TestApp, invoice: &str) -> Value {
    eventually("the collector sends attempt 1", || async {
        let body = payments_of(app, invoice).await;
        body["data"]
            .as_array()
            .and_then(|d| d.iter().next().cloned())
            .filter(|p| p["status"] != "pending")
    })
    .await
}

/// Submits a fresh `render` job until one is answered `want` (intake's entitlement
/// projection follows subscription changes within a refresh); returns the answer's body.
async fn submit_until(app: &TestApp, n: &mut u64, want: u16) -> Value {
    let started = Instant::now();
    loop {
        *n += 1;
        let job = json!({ "type": "render", "input": { "n": *n }, "workspace": "acme-ws" });
        let (status, body) = app.submit(&job, None).await;
        if status == want {
            return body;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "no {want} within 15 s; last: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn dunning_run(ctx: &BillingContext, as_of: DateTime<Utc>) -> DunningReport {
    tollgate_billing::dunning::run(
        ctx,
        &DunningRunOptions {
            tenant: None,
            as_of,
            batch: 100,
        },
    )
    .await
    .expect("dunning run")
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("time")
}

/// A Stripe invoice object whose payment is the PaymentIntent `pi`.
fn stripe_invoice(pi: &str, total: i64, paid: bool) -> Value {
    json!({
        "id": format!("in_{}", Uuid::new_v4().simple()),
        "object": "invoice",
        "status": if paid { "paid" } else { "open" },
        "payment_intent": pi,
        "amount_due": total,
        "amount_paid": if paid { total } else { 0 },
        "currency": "usd",
        "metadata": {},
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_payment_is_retried_on_schedule_suspends_and_a_later_payment_resumes() {
    let stripe = StripeFake::start().await;
    let app = spawn(&stripe).await;
    let s = start_instant();
    let customer = setup(&app, s).await;
    let cus = link_card(&app, &stripe, &customer).await;
    // The first charge is an asynchronous debit; every retry is declined.
    stripe.script_intents([
        IntentScript::Process,
        IntentScript::insufficient_funds(),
        IntentScript::insufficient_funds(),
        IntentScript::insufficient_funds(),
    ]);

    // Finalized → a PaymentIntent, created with the attempt's idempotency key.
    let (invoice, invoice_uuid, total) = finalize(&app, s).await;
    assert_eq!(total, 14_000);
    let first = first_payment_sent(&app, &invoice).await;
    assert_eq!(first["status"], "processing", "{first}");
    let (_, inv) = app.get_json(&format!("/v1/invoices/{invoice}")).await;
    assert_eq!(inv["status"], "finalized", "{inv}");
    let pi = first["psp_payment_id"].as_str().expect("pi").to_owned();
    let calls = stripe.requests_to("POST", "/v1/payment_intents");
    assert_eq!(calls.len(), 1);
    let call = &calls[0];
    assert_eq!(
        call.idempotency_key.as_deref(),
        Some(format!("tollgate-inv-{invoice_uuid}-attempt-1").as_str())
    );
    assert!(call.stripe_version.is_some(), "Stripe-Version is pinned");
    for (field, want) in [
        ("amount", "14000".to_owned()),
        ("currency", "usd".to_owned()),
        ("customer", cus.clone()),
        ("payment_method", "pm_card_visa".to_owned()),
        ("confirm", "true".to_owned()),
        ("off_session", "true".to_owned()),
        ("metadata[tollgate_invoice]", invoice_uuid.to_string()),
        (
            "metadata[tollgate_tenant]",
            app.tenant.as_uuid().to_string(),
        ),
        ("metadata[tollgate_account]", customer.account.to_string()),
    ] {
        assert_eq!(call.field(field), Some(want.as_str()), "{field}");
    }
    assert_eq!(
        subscription_status(&app, &customer.subscription).await,
        "active"
    );

    // Stripe reports the failure: past due, three retries scheduled from it.
    let t0 = Utc::now().timestamp();
    let failed = StripeFake::event(
        "evt_invoice_failed_1",
        "invoice.payment_failed",
        t0,
        stripe_invoice(&pi, total, false),
    );
    deliver(&app, &failed).await;
    assert_eq!(applied(&app, "evt_invoice_failed_1").await, "applied");
    assert_eq!(
        subscription_status(&app, &customer.subscription).await,
        "past_due"
    );
    let case = payments_of(&app, &invoice).await["dunning"].clone();
    assert_eq!(case["status"], "open", "{case}");
    let scheduled: Vec<DateTime<Utc>> = case["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| {
            assert_eq!(a["status"], "scheduled");
            a["scheduled_at"]
                .as_str()
                .expect("time")
                .parse()
                .expect("time")
        })
        .collect();
    assert_eq!(
        scheduled,
        vec![at(t0 + HOUR), at(t0 + 24 * HOUR), at(t0 + 72 * HOUR)]
    );
    // Past due is the dunning grace: jobs are still accepted.
    let mut n = 0;
    submit_until(&app, &mut n, 202).await;

    // A billing process started afresh (nothing in memory) finds the schedule in the database.
    let mut cfg = BillingConfig::defaults().expect("defaults");
    cfg.database.url = app.db_url.clone();
    cfg.database.pool_size = 2;
    cfg.amqp.prefix = app.amqp_prefix.clone();
    cfg.documents.root = app.artifacts_dir.to_string_lossy().into_owned();
    use_fake(&mut cfg, &stripe.url(), &stripe.secret_key());
    let fresh = BillingContext::from_config(&cfg, cfg.database.pool().expect("pool"))
        .expect("fresh context");
    let report = dunning_run(&fresh, at(t0 + HOUR - 1)).await;
    assert_eq!(report.due, 0, "nothing is due before +1 h: {report:?}");
    let report = dunning_run(&fresh, at(t0 + HOUR)).await;
    assert_eq!(
        (report.due, report.attempted, report.failed),
        (1, 1, 1),
        "{report:?}"
    );
    assert_eq!(
        subscription_status(&app, &customer.subscription).await,
        "past_due"
    );

    // +24 h through the operator CLI (its clock flag), +72 h through the library.
    let report = dunning_run(app.billing(), at(t0 + 24 * HOUR - 1)).await;
    assert_eq!(report.due, 0, "{report:?}");
    std::env::set_var("BILLING__PSP__ENABLED", "true");
    std::env::set_var("BILLING__PSP__STRIPE__API_BASE", stripe.url());
    std::env::set_var("BILLING__PSP__STRIPE__SECRET_KEY", stripe.secret_key());
    std::env::set_var("BILLING__PSP__STRIPE__MAX_RETRIES", "0");
    std::env::set_var(
        "BILLING__DOCUMENTS__ROOT",
        app.artifacts_dir.to_string_lossy().as_ref(),
    );
    let as_of = at(t0 + 24 * HOUR).to_rfc3339();
    tollgate_cli::run_from([
        "tollgatectl",
        "--database-url",
        app.db_url.as_str(),
        "--amqp-prefix",
        app.amqp_prefix.as_str(),
        "dunning",
        "run",
        "--tenant",
        app.tenant_name.as_str(),
        "--as-of",
        as_of.as_str(),
    ])
    .await
    .expect("tollgatectl dunning run");
    assert_eq!(
        subscription_status(&app, &customer.subscription).await,
        "past_due"
    );
    let report = dunning_run(app.billing(), at(t0 + 72 * HOUR)).await;
    assert_eq!((report.due, report.failed), (1, 1), "{report:?}");

    // The last retry failed: suspended, and intake refuses with 402.
    assert_eq!(
        subscription_status(&app, &customer.subscription).await,
        "suspended"
    );
    let refused = submit_until(&app, &mut n, 402).await;
    assert_eq!(
        refused["error"]["code"], "SUBSCRIPTION_SUSPENDED",
        "{refused}"
    );
    let body = payments_of(&app, &invoice).await;
    assert_eq!(body["dunning"]["status"], "exhausted");
    assert_eq!(body["dunning"]["failures"], 4);
    let payments = body["data"].as_array().expect("payments");
    assert_eq!(payments.len(), 4);
    for (i, p) in payments.iter().enumerate() {
        assert_eq!(p["attempt"], i as i64 + 1);
        assert_eq!(p["status"], "failed", "{p}");
    }
    assert_eq!(payments[3]["failure_code"], "insufficient_funds");
    // Each retry was its own PaymentIntent with its own idempotency key.
    let keys: Vec<String> = stripe
        .requests_to("POST", "/v1/payment_intents")
        .iter()
        .map(|r| r.idempotency_key.clone().expect("key"))
        .collect();
    assert_eq!(
        keys,
        (1..=4)
            .map(|n| format!("tollgate-inv-{invoice_uuid}-attempt-{n}"))
            .collect::<Vec<_>>()
    );

    // The customer pays on Stripe's hosted page: active again.
    let paid_at = t0 + 73 * HOUR;
    let succeeded = StripeFake::event(
        "evt_invoice_paid_1",
        "invoice.payment_succeeded",
        paid_at,
        stripe_invoice("pi_hosted_1", total, true),
    );
    // Stripe's invoice names Tollgate's invoice only by metadata here (a new PaymentIntent).
    let mut succeeded = succeeded;
    succeeded["data"]["object"]["metadata"] =
        json!({ "tollgate_invoice": invoice_uuid.to_string() });
    deliver(&app, &succeeded).await;
    assert_eq!(applied(&app, "evt_invoice_paid_1").await, "applied");
    assert_eq!(
        subscription_status(&app, &customer.subscription).await,
        "active"
    );
    submit_until(&app, &mut n, 202).await;
    let (_, inv) = app.get_json(&format!("/v1/invoices/{invoice}")).await;
    assert_eq!(inv["status"], "paid");
    assert_eq!(
        inv["paid_at"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().expect("time")),
        Some(at(paid_at))
    );
    let body = payments_of(&app, &invoice).await;
    assert_eq!(body["dunning"]["status"], "recovered");
    let hosted = &body["data"][4];
    assert_eq!(
        (
            hosted["status"].as_str(),
            hosted["origin"].as_str(),
            hosted["psp_payment_id"].as_str()
        ),
        (Some("succeeded"), Some("psp"), Some("pi_hosted_1"))
    );
    // Every attempt and notification is recorded.
    let kinds: Vec<(String, String)> = body["dunning"]["notifications"]
        .as_array()
        .expect("notifications")
        .iter()
        .map(|n| {
            (
                n["kind"].as_str().expect("kind").to_owned(),
                n["event_type"].as_str().expect("type").to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String)> = [
        ("payment_failed", "payment.failed"),
        ("payment_failed", "subscription.updated"),
        ("retry_failed", "payment.failed"),
        ("retry_failed", "payment.failed"),
        ("suspended", "payment.failed"),
        ("suspended", "subscription.updated"),
        ("recovered", "payment.succeeded"),
        ("recovered", "subscription.updated"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(kinds, want);
    assert_eq!(outbox_count(&app, "payment.failed").await, 4);
    assert_eq!(outbox_count(&app, "invoice.paid").await, 1);
    assert_eq!(outbox_count(&app, "payment.succeeded").await, 1);
    // Nothing is left to retry.
    let report = dunning_run(app.billing(), at(t0 + 200 * HOUR)).await;
    assert_eq!(report.due, 0, "{report:?}");
    assert_eq!(stripe.requests_to("POST", "/v1/payment_intents").len(), 4);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_while_retries_are_pending_cancels_them_after_asking_stripe() {
    let stripe = StripeFake::start().await;
    let app = spawn(&stripe).await;
    let s = start_instant();
    let customer = setup(&app, s).await;
    link_card(&app, &stripe, &customer).await;
    stripe.script_intents([IntentScript::Process]);
    let (invoice, invoice_uuid, total) = finalize(&app, s).await;
    let first = first_payment_sent(&app, &invoice).await;
    let pi = first["psp_payment_id"].as_str().expect("pi").to_owned();

    // The debit fails...
    let t0 = Utc::now().timestamp();
    let mut intent = stripe.intent(&pi).expect("intent at the fake");
    intent["status"] = json!("requires_payment_method");
    intent["last_payment_error"] = json!({ "type": "card_error", "code": "card_declined", "decline_code": "generic_decline", "message": "Your card was declined." });
    let failed = StripeFake::event(
        "evt_pi_failed",
        "payment_intent.payment_failed",
        t0,
        intent.clone(),
    );
    deliver(&app, &failed).await;
    assert_eq!(applied(&app, "evt_pi_failed").await, "applied");
    assert_eq!(
        subscription_status(&app, &customer.subscription).await,
        "past_due"
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM dunning_attempts WHERE status = 'scheduled'")
            .await,
        3
    );

    // ...and the customer fixes the card within the same second: the success is not newer
    // than the failure, so billing asks Stripe for the PaymentIntent and trusts its answer.
    stripe.set_intent_status(&pi, "succeeded");
    let mut paid = stripe.intent(&pi).expect("intent");
    paid["last_payment_error"] = Value::Null;
    paid["latest_charge"] = json!("ch_after_retry");
    let succeeded = StripeFake::event("evt_pi_succeeded", "payment_intent.succeeded", t0, paid);
    deliver(&app, &succeeded).await;
    assert_eq!(applied(&app, "evt_pi_succeeded").await, "applied");
    assert_eq!(
        stripe
            .requests_to("GET", &format!("/v1/payment_intents/{pi}"))
            .len(),
        1,
        "the ambiguous success was checked with Stripe"
    );
    assert_eq!(
        subscription_status(&app, &customer.subscription).await,
        "active"
    );
    let body = payments_of(&app, &invoice).await;
    assert_eq!(body["status"], "paid");
    assert_eq!(body["dunning"]["status"], "recovered");
    let statuses: Vec<&str> = body["dunning"]["attempts"]
        .as_array()
        .expect("attempts")
        .iter()
        .map(|a| a["status"].as_str().expect("status"))
        .collect();
    assert_eq!(
        statuses,
        vec!["canceled"; 3],
        "pending retries are canceled"
    );
    assert_eq!(body["data"][0]["status"], "succeeded");

    // The schedule's instants pass without a charge.
    let report = dunning_run(app.billing(), at(t0 + 72 * HOUR)).await;
    assert_eq!(report.due, 0, "{report:?}");
    assert_eq!(stripe.requests_to("POST", "/v1/payment_intents").len(), 1);
    assert_eq!(outbox_count(&app, "invoice.paid").await, 1);
    let _ = (invoice_uuid, total);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_five_times_and_events_in_reverse_order_converge() {
    let stripe = StripeFake::start().await;
    let app = spawn(&stripe).await;
    let s = start_instant();
    let customer = setup(&app, s).await;
    link_card(&app, &stripe, &customer).await;
    stripe.script_intents([IntentScript::Process]);
    let (invoice, _, total) = finalize(&app, s).await;
    let first = first_payment_sent(&app, &invoice).await;
    let pi = first["psp_payment_id"].as_str().expect("pi").to_owned();

    // Reverse order: Stripe's success (t0 + 5 s) arrives before the failure it followed
    // (t0). The failure is older than the paid state and changes nothing.
    let t0 = Utc::now().timestamp();
    let mut failed_pi = stripe.intent(&pi).expect("intent");
    failed_pi["status"] = json!("requires_payment_method");
    failed_pi["last_payment_error"] = json!({ "type": "card_error", "code": "card_declined" });
    let failed = StripeFake::event(
        "evt_r_failed",
        "payment_intent.payment_failed",
        t0,
        failed_pi,
    );
    let mut ok_pi = stripe.intent(&pi).expect("intent");
    ok_pi["status"] = json!("succeeded");
    ok_pi["amount_received"] = json!(total);
    let succeeded = StripeFake::event("evt_r_succeeded", "payment_intent.succeeded", t0 + 5, ok_pi);

    // The success, five times through the webhook service (stored once) and five more
    // times straight through the outbox as separate messages (billing's own dedupe).
    for i in 0..5 {
        let answer = deliver(&app, &succeeded).await;
        assert_eq!(answer["duplicate"] == json!(true), i > 0, "{answer}");
    }
    for _ in 0..5 {
        publish_direct(&app, &succeeded).await;
    }
    assert_eq!(applied(&app, "evt_r_succeeded").await, "applied");
    deliver(&app, &failed).await;
    assert_eq!(applied(&app, "evt_r_failed").await, "stale");
    // Let every copy reach billing before counting.
    drain(&app).await;
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM psp_event_applications WHERE event_id = 'evt_r_succeeded'"
        )
        .await,
        1
    );
    let body = payments_of(&app, &invoice).await;
    assert_eq!(body["status"], "paid");
    assert!(
        body["dunning"].is_null(),
        "no dunning for a paid invoice: {body}"
    );
    assert_eq!(body["data"].as_array().expect("payments").len(), 1);
    assert_eq!(body["data"][0]["status"], "succeeded");
    assert_eq!(
        subscription_status(&app, &customer.subscription).await,
        "active"
    );
    assert_eq!(outbox_count(&app, "invoice.paid").await, 1);
    assert_eq!(outbox_count(&app, "payment.succeeded").await, 1);
    assert_eq!(outbox_count(&app, "payment.failed").await, 0);

    // Stripe subscription events in reverse order: unpaid (t0 + 20) wins over past_due
    // (t0 + 10) and active (t0), whichever arrives first.
    let stripe_sub = |status: &str| {
        json!({
            "id": "sub_stripe_1", "object": "subscription", "status": status,
            "customer": "cus_x", "created": t0,
            "metadata": { "tollgate_subscription": customer.subscription },
        })
    };
    let sub_events = [
        StripeFake::event(
            "evt_s1",
            "customer.subscription.created",
            t0,
            stripe_sub("active"),
        ),
        StripeFake::event(
            "evt_s2",
            "customer.subscription.updated",
            t0 + 10,
            stripe_sub("past_due"),
        ),
        StripeFake::event(
            "evt_s3",
            "customer.subscription.updated",
            t0 + 20,
            stripe_sub("unpaid"),
        ),
    ];
    // Newest first, each applied before the next arrives (billing applies up to its prefetch
    // at once, so events sent together could be applied in any order).
    deliver(&app, &sub_events[2]).await;
    assert_eq!(applied(&app, "evt_s3").await, "applied");
    deliver(&app, &sub_events[1]).await;
    assert_eq!(applied(&app, "evt_s2").await, "stale");
    deliver(&app, &sub_events[0]).await;
    assert_eq!(applied(&app, "evt_s1").await, "stale");
    assert_eq!(
        subscription_status(&app, &customer.subscription).await,
        "suspended"
    );
    let mut n = 0;
    let refused = submit_until(&app, &mut n, 402).await;
    assert_eq!(refused["error"]["code"], "SUBSCRIPTION_SUSPENDED");

    // Two events in the same second disagree: Stripe's current state decides.
    stripe.put_subscription(stripe_sub("active"));
    deliver(
        &app,
        &StripeFake::event(
            "evt_s4",
            "customer.subscription.updated",
            t0 + 30,
            stripe_sub("active"),
        ),
    )
    .await;
    assert_eq!(applied(&app, "evt_s4").await, "applied");
    deliver(
        &app,
        &StripeFake::event(
            "evt_s5",
            "customer.subscription.updated",
            t0 + 30,
            stripe_sub("past_due"),
        ),
    )
    .await;
    assert_eq!(applied(&app, "evt_s5").await, "applied");
    assert_eq!(
        stripe
            .requests_to("GET", "/v1/subscriptions/sub_stripe_1")
            .len(),
        1
    );
    assert_eq!(
        subscription_status(&app, &customer.subscription).await,
        "active"
    );
    submit_until(&app, &mut n, 202).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_failure_five_times_opens_one_case() {
    let stripe = StripeFake::start().await;
    let app = spawn(&stripe).await;
    let s = start_instant();
    let customer = setup(&app, s).await;
    link_card(&app, &stripe, &customer).await;
    stripe.script_intents([IntentScript::Process]);
    let (invoice, _, total) = finalize(&app, s).await;
    let first = first_payment_sent(&app, &invoice).await;
    let pi = first["psp_payment_id"].as_str().expect("pi").to_owned();

    let failed = StripeFake::event(
        "evt_dup_failed",
        "invoice.payment_failed",
        Utc::now().timestamp(),
        stripe_invoice(&pi, total, false),
    );
    for _ in 0..5 {
        deliver(&app, &failed).await;
        publish_direct(&app, &failed).await;
    }
    assert_eq!(applied(&app, "evt_dup_failed").await, "applied");
    // The PaymentIntent's own failure event (another event id, the same failure) counts once.
    let mut failed_pi = stripe.intent(&pi).expect("intent");
    failed_pi["status"] = json!("requires_payment_method");
    let pi_failed = StripeFake::event(
        "evt_dup_pi_failed",
        "payment_intent.payment_failed",
        Utc::now().timestamp(),
        failed_pi,
    );
    deliver(&app, &pi_failed).await;
    assert_eq!(applied(&app, "evt_dup_pi_failed").await, "applied");
    drain(&app).await;
    assert_eq!(
        app.count("SELECT count(*) AS n FROM psp_events WHERE event_id = 'evt_dup_failed'")
            .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM dunning_cases").await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM dunning_attempts")
            .await,
        3
    );
    assert_eq!(outbox_count(&app, "payment.failed").await, 1);
    let body = payments_of(&app, &invoice).await;
    assert_eq!(body["dunning"]["failures"], 1);
    assert_eq!(
        subscription_status(&app, &customer.subscription).await,
        "past_due"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_refunds_and_psp_reconciliation() {
    let stripe = StripeFake::start().await;
    let app = spawn(&stripe).await;
    let s = start_instant();
    let customer = setup(&app, s).await;
    let cus = link_card(&app, &stripe, &customer).await;

    // The portal: a "manage subscription" link for the same customer.
    let (status, portal) = app
        .post_json(
            "/v1/billing/portal",
            &json!({ "account": "acme", "return_url": "https://app.example.com/account" }),
        )
        .await;
    assert_eq!(status, 201, "{portal}");
    assert!(portal["url"]
        .as_str()
        .expect("url")
        .starts_with("https://billing.stripe.com/p/session/"));
    let calls = stripe.requests_to("POST", "/v1/billing_portal/sessions");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].field("customer"), Some(cus.as_str()));
    assert_eq!(
        calls[0].field("return_url"),
        Some("https://app.example.com/account")
    );
    assert_eq!(
        stripe.requests_to("POST", "/v1/customers").len(),
        1,
        "one customer"
    );
    let (status, bad) = app
        .post_json(
            "/v1/billing/portal",
            &json!({ "account": "acme", "return_url": "javascript:x" }),
        )
        .await;
    assert_eq!(
        (status, bad["error"]["code"].as_str()),
        (422, Some("INVALID_REQUEST"))
    );

    // A card that works: paid at once by the collector.
    stripe.script_intents([IntentScript::Succeed]);
    let (invoice, invoice_uuid, total) = finalize(&app, s).await;
    let first = first_payment_sent(&app, &invoice).await;
    assert_eq!(first["status"], "succeeded", "{first}");
    let (_, inv) = app.get_json(&format!("/v1/invoices/{invoice}")).await;
    assert_eq!(inv["status"], "paid");
    assert_eq!(
        subscription_status(&app, &customer.subscription).await,
        "active"
    );

    // A refund without an Idempotency-Key is refused before anything is written or sent: a
    // retry of it could not be told from a second refund.
    let res = app
        .http
        .post(format!("{}/v1/invoices/{invoice}/refund", app.gateway_url))
        .bearer_auth(&app.api_key)
        .json(&json!({ "reason": "goodwill", "amount_minor": 500 }))
        .send()
        .await
        .expect("refund without a key");
    assert_eq!(res.status().as_u16(), 400);
    let body: Value = res.json().await.expect("error body");
    assert_eq!(body["error"]["code"], "IDEMPOTENCY_KEY_REQUIRED", "{body}");
    assert!(stripe.requests_to("POST", "/v1/refunds").is_empty());
    assert_eq!(
        app.count("SELECT count(*) AS n FROM payment_refunds").await,
        0
    );

    // A partial refund; the same request again (same Idempotency-Key) refunds nothing more.
    let refund = |key: &'static str, amount: Option<i64>| {
        let app = &app;
        let invoice = invoice.clone();
        async move {
            let mut body = json!({ "reason": "goodwill" });
            if let Some(a) = amount {
                body["amount_minor"] = json!(a);
            }
            let res = app
                .http
                .post(format!("{}/v1/invoices/{invoice}/refund", app.gateway_url))
                .bearer_auth(&app.api_key)
                .header("Idempotency-Key", key)
                .json(&body)
                .send()
                .await
                .expect("refund");
            let status = res.status().as_u16();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, first_refund) = refund("r-1", Some(500)).await;
    assert_eq!(status, 201, "{first_refund}");
    assert_eq!(first_refund["status"], "succeeded");
    let (status, again) = refund("r-1", Some(500)).await;
    assert_eq!(status, 201, "{again}");
    assert_eq!(again["id"], first_refund["id"]);
    let refunds = stripe.requests_to("POST", "/v1/refunds");
    assert_eq!(refunds.len(), 1);
    let pi = first["psp_payment_id"].as_str().expect("pi");
    assert_eq!(refunds[0].field("payment_intent"), Some(pi));
    assert_eq!(refunds[0].field("amount"), Some("500"));
    assert!(refunds[0]
        .idempotency_key
        .as_deref()
        .is_some_and(|k| k.ends_with("-r-1")));
    let (status, too_much) = refund("r-2", Some(total)).await;
    assert_eq!(
        (status, too_much["error"]["code"].as_str()),
        (422, Some("INVALID_REQUEST")),
        "{too_much}"
    );
    assert_eq!(
        payments_of(&app, &invoice).await["data"][0]["refunded_minor"],
        500
    );
    assert_eq!(outbox_count(&app, "payment.refunded").await, 1);

    // Stripe's charge.refunded carries the running total: the same total changes nothing, a
    // larger one (a refund made in Stripe's dashboard) is recorded, in any order.
    let charge = |refunded: i64| {
        json!({ "id": "ch_any", "object": "charge", "payment_intent": pi, "amount": total,
                "amount_refunded": refunded, "currency": "usd", "refunded": refunded == total })
    };
    let now = Utc::now().timestamp();
    deliver(
        &app,
        &StripeFake::event("evt_rf_800", "charge.refunded", now + 2, charge(800)),
    )
    .await;
    assert_eq!(applied(&app, "evt_rf_800").await, "applied");
    deliver(
        &app,
        &StripeFake::event("evt_rf_500", "charge.refunded", now, charge(500)),
    )
    .await;
    assert_eq!(applied(&app, "evt_rf_500").await, "applied");
    assert_eq!(
        payments_of(&app, &invoice).await["data"][0]["refunded_minor"],
        800
    );
    assert_eq!(outbox_count(&app, "payment.refunded").await, 2);

    // Reconciliation with Stripe for this month: everything matches...
    let from = Utc::now().duration_trunc(TimeDelta::days(1)).expect("day") - TimeDelta::days(1);
    let to = Utc::now() + TimeDelta::days(1);
    let report =
        tollgate_billing::reconcile::reconcile_psp(app.billing(), app.tenant.as_uuid(), from, to)
            .await
            .expect("reconcile");
    assert!(
        report.discrepancies.is_empty(),
        "{:?}",
        report.discrepancies
    );
    assert!(report.checked >= 2, "{report:?}");

    // ...until Stripe holds a payment Tollgate never saw and a payout settled the charge for
    // one cent less.
    let intent = stripe.intent(pi).expect("intent");
    stripe.put_intent(json!({
        "id": "pi_stranger", "object": "payment_intent", "status": "succeeded",
        "amount": 999, "amount_received": 999, "currency": "usd", "created": Utc::now().timestamp(),
        "metadata": { "tollgate_tenant": app.tenant.as_uuid().to_string(),
                      "tollgate_invoice": Uuid::now_v7().to_string() },
    }));
    stripe.add_payout(
        json!({ "id": "po_1", "object": "payout", "amount": total - 1, "currency": "usd",
                "status": "paid", "arrival_date": Utc::now().timestamp(), "created": Utc::now().timestamp() }),
        vec![json!({ "id": "txn_1", "object": "balance_transaction", "amount": total - 1,
                     "fee": 0, "net": total - 1, "currency": "usd", "type": "charge",
                     "source": intent["latest_charge"] })],
    );
    let report =
        tollgate_billing::reconcile::reconcile_psp(app.billing(), app.tenant.as_uuid(), from, to)
            .await
            .expect("reconcile");
    let mut kinds: Vec<(String, Option<String>)> = report
        .discrepancies
        .iter()
        .map(|d| (d.kind.clone(), d.metric.clone()))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        vec![
            ("amount_mismatch".to_owned(), Some("payout".to_owned())),
            ("missing_in_tollgate".to_owned(), Some("invoice".to_owned())),
        ],
        "{:?}",
        report.discrepancies
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM reconciliation_discrepancies WHERE run_id = '{}'",
            report.run_id
        ))
        .await,
        2
    );
    let _ = invoice_uuid;
    app.stop().await;
}

/// Ages the invoice's pending payment by 25 hours since its first send (past Stripe's
/// idempotency-key retention of at least 24 hours) and ends its lease, so the collector takes
/// it again at once.
async fn a_day_later(app: &TestApp, invoice_uuid: Uuid) {
    let aged = app
        .execute(&format!(
            "UPDATE payments SET first_sent_at = first_sent_at - interval '25 hours', \
             next_attempt_at = now() \
             WHERE invoice_id = '{invoice_uuid}' AND status = 'pending' AND first_sent_at IS NOT NULL"
        ))
        .await
        .expect("age the payment");
    assert_eq!(aged, 1, "one pending payment was sent once");
}

/// Waits until the invoice's first payment is `succeeded` (`what` names the wait); returns it.
async fn first_payment_succeeded(app: &TestApp, invoice: &str, what: &str) -> Value {
    eventually(what, || async {
        payments_of(app, invoice).await["data"]
            .as_array()
            .and_then(|d| d.iter().next().cloned())
            .filter(|p| p["status"] == "succeeded")
    })
    .await
}

/// Waits until the invoice's first payment was sent to Stripe once and is still pending.
async fn sent_and_pending(app: &TestApp, stripe: &StripeFake, invoice_uuid: Uuid) {
    eventually("attempt 1 reaches Stripe and stays pending", || async {
        let sent = !stripe.requests_to("POST", "/v1/payment_intents").is_empty();
        let pending = app
            .count(&format!(
                "SELECT count(*) AS n FROM payments WHERE invoice_id = '{invoice_uuid}' \
                 AND status = 'pending' AND first_sent_at IS NOT NULL"
            ))
            .await;
        (sent && pending == 1).then_some(())
    })
    .await;
}

/// A customer with a card whose first invoice's payment was sent to Stripe once and is
/// still pending: `fault` is set on the fake before the invoice is finalized (e.g. a lost
/// answer, a refused post).
struct FirstPaymentInFlight {
    stripe: StripeFake,
    app: TestApp,
    /// The PSP customer (`cus_…`).
    cus: String,
    /// The invoice's public id and its uuid.
    invoice: String,
    invoice_uuid: Uuid,
    /// The invoice total, minor units.
    total: i64,
}

async fn first_payment_in_flight(fault: impl FnOnce(&StripeFake)) -> FirstPaymentInFlight {
    let stripe = StripeFake::start().await;
    let app = spawn(&stripe).await;
    let s = start_instant();
    let customer = setup(&app, s).await;
    let cus = link_card(&app, &stripe, &customer).await;
    fault(&stripe);
    let (invoice, invoice_uuid, total) = finalize(&app, s).await;
    sent_and_pending(&app, &stripe, invoice_uuid).await;
    FirstPaymentInFlight {
        stripe,
        app,
        cus,
        invoice,
        invoice_uuid,
        total,
    }
}

/// Stripe keeps an idempotency key for 24 hours at least, not forever. Attempt 1 is carried
/// out by Stripe (the card is charged) but answered 500, and Stripe repeats that answer for
/// the key; a day later Stripe has forgotten the key. The collector must not send the payment
/// again with it (that would be a second charge): it finds the PaymentIntent the first call
/// created, and that decides the payment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_whose_answer_was_lost_is_not_charged_again_after_stripe_forgets_the_key() {
    let FirstPaymentInFlight {
        stripe,
        app,
        cus,
        invoice,
        invoice_uuid,
        total,
    } = first_payment_in_flight(|stripe| stripe.lose_next_answers(1)).await;
    let intents = stripe.intents();
    assert_eq!(intents.len(), 1, "{intents:?}");
    let charged = intents[0]["id"].as_str().expect("pi").to_owned();
    assert_eq!(intents[0]["status"], "succeeded", "the card was charged");
    let posts_before = stripe.requests_to("POST", "/v1/payment_intents").len();

    stripe.forget_idempotency_keys();
    a_day_later(&app, invoice_uuid).await;
    let payment = first_payment_succeeded(
        &app,
        &invoice,
        "the PaymentIntent found decides the payment",
    )
    .await;
    assert_eq!(payment["psp_payment_id"], charged.as_str(), "{payment}");
    assert_eq!(stripe.intents().len(), 1, "no second PaymentIntent");
    assert_eq!(
        stripe.requests_to("POST", "/v1/payment_intents").len(),
        posts_before,
        "nothing was sent again"
    );
    let lists = stripe.requests_to("GET", "/v1/payment_intents");
    let list = lists
        .last()
        .expect("the customer's PaymentIntents were listed");
    assert!(
        list.query.iter().any(|(k, v)| k == "customer" && *v == cus),
        "{:?}",
        list.query
    );
    let (_, inv) = app.get_json(&format!("/v1/invoices/{invoice}")).await;
    assert_eq!(inv["status"], "paid", "{inv}");
    assert_eq!(inv["total_minor"], total, "{inv}");
}

/// The other side of the window: attempt 1 never reached Stripe (503 before anything was
/// done), and a day later Stripe's list shows no PaymentIntent for it. The payment is sent
/// under a new idempotency key (so a forgotten key cannot matter) and charged once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payment_that_never_reached_stripe_is_sent_with_a_new_key_after_the_window() {
    let FirstPaymentInFlight {
        stripe,
        app,
        invoice,
        invoice_uuid,
        ..
    } = first_payment_in_flight(|stripe| stripe.refuse_next_posts(1)).await;
    assert!(stripe.intents().is_empty(), "nothing was created");
    let old_key = format!("tollgate-inv-{invoice_uuid}-attempt-1");

    a_day_later(&app, invoice_uuid).await;
    let payment =
        first_payment_succeeded(&app, &invoice, "the payment is sent again and succeeds").await;
    let intents = stripe.intents();
    assert_eq!(intents.len(), 1, "{intents:?}");
    assert_eq!(payment["psp_payment_id"], intents[0]["id"], "{payment}");
    let posts = stripe.requests_to("POST", "/v1/payment_intents");
    let last = posts.last().expect("sent");
    let new_key = last.idempotency_key.clone().expect("key");
    assert!(
        new_key.starts_with(&format!("{old_key}-k")),
        "a new key derived from the attempt's: {new_key}"
    );
    let stored = texts(
        &app,
        &format!("SELECT idempotency_key AS v FROM payments WHERE invoice_id = '{invoice_uuid}'"),
    )
    .await;
    assert_eq!(
        stored,
        vec![new_key],
        "the payment row holds the key it was sent with"
    );
}

/// Voiding races a payment: were an invoice voided while its payment is in flight at Stripe,
/// the payment could still succeed and charge the customer for a void invoice. The void is
/// refused (409 PAYMENT_IN_FLIGHT) until the payment is decided; here it succeeds, so the
/// invoice ends paid and the void is refused for that reason instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invoice_cannot_be_voided_while_its_payment_is_in_flight() {
    // Stripe charges the card but its answer is lost: the payment stays pending, in flight.
    let FirstPaymentInFlight {
        stripe,
        app,
        invoice,
        invoice_uuid,
        ..
    } = first_payment_in_flight(|stripe| stripe.lose_next_answers(1)).await;

    let void = |reason: &'static str| {
        let app = &app;
        let invoice = invoice.clone();
        async move {
            app.post_json(
                &format!("/v1/invoices/{invoice}/void"),
                &json!({ "reason": reason }),
            )
            .await
        }
    };
    let (status, body) = void("customer left").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "PAYMENT_IN_FLIGHT", "{body}");
    let (_, inv) = app.get_json(&format!("/v1/invoices/{invoice}")).await;
    assert_eq!(inv["status"], "finalized", "nothing changed: {inv}");

    // Stripe replays the lost answer for the key; once it has forgotten the key (a day later)
    // the collector finds the PaymentIntent the call created, which decides the payment.
    stripe.forget_idempotency_keys();
    a_day_later(&app, invoice_uuid).await;
    first_payment_succeeded(&app, &invoice, "the payment is decided").await;
    let (_, inv) = app.get_json(&format!("/v1/invoices/{invoice}")).await;
    assert_eq!(inv["status"], "paid", "{inv}");
    let (status, body) = void("customer left").await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "INVOICE_STATE", "{body}");
    assert_eq!(stripe.intents().len(), 1, "charged once");
}
