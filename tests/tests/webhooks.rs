//! The webhook service end to end (issue 5): real PostgreSQL and RabbitMQ, every service on
//! port 0.
//!
//! Inbound: Stripe-signed requests through HTTP, with headers from our signer and from the
//! official Stripe SDK's `generateTestHeaderString` (node); every forged, stale, malformed or
//! oversized request is refused and stores nothing; a duplicate stores nothing new; two
//! secrets are accepted during a rotation; a verified event reaches the bus as
//! `psp.stripe.<type>`.
//!
//! Outbound: tenants' events (written to the outbox as their owners do) are delivered to the
//! tenant's endpoints; every request is verified with the official `standardwebhooks` npm
//! library; a receiver that fails twice gets the event on attempt 3 and the delivery log
//! shows all attempts; redelivery by API and CLI; secret rotation signs with both secrets
//! during the overlap; an endpoint failing for days is disabled and the tenant notified.
//!
//! Needs node and `npm ci --prefix tests/js`.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tollgate_domain::{api_key, ApiKeyId, BillingEvent, Envelope, PspEvent, TenantId};
use tollgate_e2e::{eventually, Options, TestApp};
use tollgate_psp::SecretString;
use tollgate_storage::models::{ApiKeyRow, NewOutboxMessage};
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

// ---------------------------------------------------------------------------------------------
// Helpers

/// `tests/js`, where the official SDK helpers live.
fn js_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("js")
}

fn require_node_modules(package: &str) {
    assert!(
        js_dir()
            .join(format!("node_modules/{package}/package.json"))
            .is_file(),
        "npm `{package}` is not installed in {}: run `npm ci --prefix tests/js` from the \
         workspace root (needs node >= 20)",
        js_dir().display()
    );
}

/// Runs a `tests/js` script with `input` on stdin and parses its JSON answer.
fn node(script: &str, input: &Value) -> Value {
    let mut child = Command::new("node")
        .arg(js_dir().join(script))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run `node` ({e}): install node >= 20"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.to_string().as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("node output");
    assert!(
        out.status.success(),
        "{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("node JSON")
}

/// A `Stripe-Signature` header from the official Stripe SDK's test helper.
fn sdk_stripe_header(body: &str, secret: &str, timestamp: i64) -> String {
    require_node_modules("stripe");
    let out = node(
        "stripe-header.js",
        &json!({"payload": body, "secret": secret, "timestamp": timestamp}),
    );
    out["header"].as_str().expect("header").to_owned()
}

/// Verifies a received webhook with the official `standardwebhooks` npm library; returns
/// its verdict `{ok, payload | error}`.
fn verify_standard_webhook(secret: &str, request: &wiremock::Request) -> Value {
    require_node_modules("standardwebhooks");
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    node(
        "verify-standard-webhook.js",
        &json!({
            "secret": secret,
            "headers": {
                "webhook-id": header("webhook-id"),
                "webhook-timestamp": header("webhook-timestamp"),
                "webhook-signature": header("webhook-signature"),
            },
            "body": String::from_utf8(request.body.clone()).expect("UTF-8 body"),
        }),
    )
}

fn stripe_event(id: &str, event_type: &str) -> String {
    json!({
        "id": id,
        "object": "event",
        "api_version": "2024-06-20",
        "created": Utc::now().timestamp(),
        "livemode": false,
        "type": event_type,
        "data": {"object": {"id": "in_1Test", "object": "invoice",
                            "metadata": {"tollgate_invoice": Uuid::now_v7().to_string()}}}
    })
    .to_string()
}

async fn post_webhook(
    app: &TestApp,
    psp: &str,
    body: impl Into<reqwest::Body>,
    headers: &[(&str, String)],
) -> (u16, Value) {
    let mut req = app
        .http
        .post(format!("{}/webhooks/{psp}", app.webhook_url))
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in headers {
        req = req.header(*name, value);
    }
    let res = req.send().await.expect("POST webhook");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn stored_psp_events(app: &TestApp) -> (i64, i64) {
    (
        app.count("SELECT count(*)::int8 AS n FROM psp_events")
            .await,
        app.count("SELECT count(*)::int8 AS n FROM outbox WHERE routing_key LIKE 'psp.%'")
            .await,
    )
}

/// A request through the gateway with the tenant's key.
async fn api(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    api_as(app, &app.api_key, method, path, body).await
}

async fn api_as(
    app: &TestApp,
    key: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = app
        .http
        .request(method, format!("{}{path}", app.gateway_url))
        .bearer_auth(key);
    if let Some(body) = body {
        req = req.json(&body);
    }
    let res = req.send().await.expect("API request");
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// Registers an endpoint for `types` at `url`; returns `(id, secret)`.
async fn create_endpoint(app: &TestApp, url: &str, types: &[&str]) -> (String, String) {
    let (status, body) = api(
        app,
        reqwest::Method::POST,
        "/v1/webhook-endpoints",
        Some(json!({"url": url, "event_types": types, "description": "test receiver"})),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().expect("id").to_owned(),
        body["secret"].as_str().expect("secret").to_owned(),
    )
}

/// Writes a tenant event to the outbox the way its owner does (here billing's
/// `invoice.finalized`); the relays publish it on the events exchange. Returns the envelope id.
async fn emit_invoice_finalized(app: &TestApp, tenant: TenantId, total_minor: i64) -> Uuid {
    let id = Uuid::now_v7();
    let event = BillingEvent::InvoiceFinalizedV1 {
        invoice_id: Uuid::now_v7(),
        number: "INV-000001".into(),
        account_id: Uuid::now_v7(),
        subscription_id: None,
        currency: "USD".into(),
        total_minor,
        period_start: Utc::now() - chrono::Duration::days(30),
        period_end: Utc::now(),
    };
    emit(app, Envelope::billing("billing", tenant, id, event)).await;
    id
}

async fn emit<T: serde::Serialize>(app: &TestApp, envelope: Envelope<T>) {
    let mut conn = tollgate_storage::pool::get(&app.pool).await.expect("conn");
    tollgate_storage::outbox::enqueue(
        &mut conn,
        &NewOutboxMessage {
            message_id: envelope.id,
            exchange: format!("{}.events", app.amqp_prefix),
            routing_key: envelope.event_type.clone(),
            payload: serde_json::to_vec(&envelope).expect("envelope JSON"),
        },
    )
    .await
    .expect("outbox");
}

async fn received(server: &MockServer) -> Vec<wiremock::Request> {
    server.received_requests().await.unwrap_or_default()
}

async fn wait_for_requests(
    server: &MockServer,
    n: usize,
    timeout: Duration,
) -> Vec<wiremock::Request> {
    eventually(timeout, &format!("{n} webhook requests"), || async {
        let got = received(server).await;
        (got.len() >= n).then_some(got)
    })
    .await
}

/// The endpoint's deliveries through the gateway (newest first).
async fn deliveries(app: &TestApp, endpoint: &str) -> Vec<Value> {
    let (status, body) = api(
        app,
        reqwest::Method::GET,
        &format!("/v1/webhook-endpoints/{endpoint}/deliveries"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body["data"].as_array().cloned().unwrap_or_default()
}

async fn delivery_detail(app: &TestApp, delivery: &str) -> Value {
    let (status, body) = api(
        app,
        reqwest::Method::GET,
        &format!("/v1/webhook-deliveries/{delivery}"),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn header(request: &wiremock::Request, name: &str) -> String {
    request
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn configure_webhook(
    f: impl Fn(&mut tollgate_webhook::WebhookConfig) + Send + Sync + 'static,
) -> Options {
    Options {
        worker: false,
        configure_webhook: Some(Arc::new(f)),
        ..Options::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Inbound

const OLD_STRIPE_SECRET: &str = "whsec_previous_endpoint_secret_still_valid";
const RAZORPAY_SECRET: &str = "rzp_webhook_secret_for_tests";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stripe_webhooks_are_verified_and_only_verified_events_are_stored_once() {
    let app = TestApp::spawn_with(configure_webhook(|cfg| {
        // A rotation in progress: the new secret (the app's) and the previous one.
        cfg.stripe
            .endpoint_secrets
            .push(SecretString::new(OLD_STRIPE_SECRET));
        cfg.razorpay.secrets = vec![SecretString::new(RAZORPAY_SECRET)];
        cfg.max_body_bytes = 8 * 1024;
    }))
    .await;
    let secret = app.stripe_webhook_secret.clone();
    let now = Utc::now().timestamp();
    let sign = |secret: &str, t: i64, body: &str| {
        tollgate_psp::stripe::signature_header(secret, t, body.as_bytes())
    };
    let body = stripe_event("evt_1Forged", "invoice.payment_failed");

    // Every refusal, with its status and code; none stores anything.
    let valid = sign(&secret, now, &body);
    let v1 = valid
        .split(',')
        .find_map(|p| p.strip_prefix("v1="))
        .expect("v1")
        .to_owned();
    let refusals: Vec<(&str, String, Option<String>, u16, &str)> = vec![
        (
            "wrong secret",
            body.clone(),
            Some(sign("whsec_wrong", now, &body)),
            401,
            "INVALID_SIGNATURE",
        ),
        (
            "altered body",
            body.replace("payment_failed", "payment_succeeded"),
            Some(valid.clone()),
            401,
            "INVALID_SIGNATURE",
        ),
        (
            "stale timestamp",
            body.clone(),
            Some(sign(&secret, now - 301, &body)),
            401,
            "STALE_SIGNATURE",
        ),
        (
            "future timestamp",
            body.clone(),
            Some(sign(&secret, now + 301, &body)),
            401,
            "STALE_SIGNATURE",
        ),
        (
            "missing header",
            body.clone(),
            None,
            400,
            "MISSING_SIGNATURE",
        ),
        (
            "v0 only",
            body.clone(),
            Some(format!("t={now},v0={v1}")),
            401,
            "INVALID_SIGNATURE",
        ),
        (
            "garbage header",
            body.clone(),
            Some("garbage".into()),
            400,
            "MALFORMED_SIGNATURE",
        ),
        (
            "non-numeric timestamp",
            body.clone(),
            Some(format!("t=yesterday,v1={v1}")),
            400,
            "MALFORMED_SIGNATURE",
        ),
        (
            "signed non-event",
            "not json".into(),
            Some(sign(&secret, now, "not json")),
            400,
            "INVALID_PAYLOAD",
        ),
    ];
    for (what, body, header, status, code) in refusals {
        let headers: Vec<(&str, String)> = header
            .map(|h| ("Stripe-Signature", h))
            .into_iter()
            .collect();
        let (got, answer) = post_webhook(&app, "stripe", body, &headers).await;
        assert_eq!(
            (got, answer["error"]["code"].as_str()),
            (status, Some(code)),
            "{what}: {answer}"
        );
    }
    // Oversized: refused before it is verified.
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(10 * 1024));
    let (got, answer) = post_webhook(
        &app,
        "stripe",
        big.clone(),
        &[("Stripe-Signature", sign(&secret, now, &big))],
    )
    .await;
    assert_eq!(
        (got, answer["error"]["code"].as_str()),
        (413, Some("PAYLOAD_TOO_LARGE"))
    );
    assert_eq!(
        stored_psp_events(&app).await,
        (0, 0),
        "refusals store nothing"
    );

    // Valid (our signer): stored with its raw body and one outbox row.
    let event_id = format!("evt_{}", Uuid::new_v4().simple());
    let body = stripe_event(&event_id, "invoice.payment_failed");
    let header = sign(&secret, now, &body);
    let (status, answer) = post_webhook(
        &app,
        "stripe",
        body.clone(),
        &[("Stripe-Signature", header.clone())],
    )
    .await;
    assert_eq!((status, answer.clone()), (200, json!({"received": true})));
    assert_eq!(stored_psp_events(&app).await, (1, 1));
    let raw = {
        let mut conn = tollgate_storage::pool::get(&app.pool).await.expect("conn");
        tollgate_storage::webhooks::find_psp_event(&mut conn, "stripe", &event_id)
            .await
            .expect("query")
            .expect("stored")
    };
    assert_eq!(raw.raw_body, body.as_bytes());
    assert_eq!(raw.event_type, "invoice.payment_failed");
    assert_eq!(raw.object_id.as_deref(), Some("in_1Test"));

    // The same event again (Stripe retries): 2xx, nothing new.
    for _ in 0..3 {
        let (status, answer) = post_webhook(
            &app,
            "stripe",
            body.clone(),
            &[("Stripe-Signature", header.clone())],
        )
        .await;
        assert_eq!(
            (status, answer),
            (200, json!({"received": true, "duplicate": true}))
        );
    }
    assert_eq!(stored_psp_events(&app).await, (1, 1));

    // The official SDK's header; several v1 of which one is valid; the previous secret.
    let sdk_body = stripe_event(
        &format!("evt_{}", Uuid::new_v4().simple()),
        "charge.refunded",
    );
    let sdk_header = sdk_stripe_header(&sdk_body, &secret, now);
    let (status, _) = post_webhook(
        &app,
        "stripe",
        sdk_body,
        &[("Stripe-Signature", sdk_header)],
    )
    .await;
    assert_eq!(status, 200, "the Stripe SDK's header is accepted");
    let multi_body = stripe_event(
        &format!("evt_{}", Uuid::new_v4().simple()),
        "customer.subscription.updated",
    );
    let wrong = sign("whsec_wrong", now, &multi_body);
    let right = sign(&secret, now, &multi_body);
    let multi = format!(
        "{},{}",
        wrong,
        right.split(',').find(|p| p.starts_with("v1=")).expect("v1")
    );
    let (status, _) =
        post_webhook(&app, "stripe", multi_body, &[("Stripe-Signature", multi)]).await;
    assert_eq!(status, 200, "one valid v1 among several is enough");
    let old_body = stripe_event(
        &format!("evt_{}", Uuid::new_v4().simple()),
        "invoice.payment_succeeded",
    );
    let old_header = sdk_stripe_header(&old_body, OLD_STRIPE_SECRET, now);
    let (status, _) = post_webhook(
        &app,
        "stripe",
        old_body,
        &[("Stripe-Signature", old_header)],
    )
    .await;
    assert_eq!(
        status, 200,
        "the previous secret is accepted during the rotation"
    );
    assert_eq!(stored_psp_events(&app).await, (4, 4));

    // The second PSP: Razorpay's HMAC of the body; an unknown PSP is not served.
    let rzp_body = json!({"entity": "event", "event": "payment.captured", "created_at": now,
                          "payload": {"payment": {"entity": {"id": "pay_1"}}}})
    .to_string();
    let rzp_headers = [
        (
            "X-Razorpay-Signature",
            tollgate_psp::razorpay::signature(RAZORPAY_SECRET, rzp_body.as_bytes()),
        ),
        ("X-Razorpay-Event-Id", "rzp_evt_1".to_owned()),
    ];
    let (status, answer) = post_webhook(&app, "razorpay", rzp_body.clone(), &rzp_headers).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) =
        post_webhook(&app, "razorpay", rzp_body, &[rzp_headers[1].clone()]).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (400, Some("MISSING_SIGNATURE"))
    );
    let (status, answer) = post_webhook(&app, "paypal", "{}", &[]).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("PSP_NOT_CONFIGURED"))
    );
    assert_eq!(stored_psp_events(&app).await, (5, 5));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_verified_event_is_published_once_as_a_psp_envelope() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let (_amqp, mut consumer) = app.tap_events("psp.#").await;

    let event_id = format!("evt_{}", Uuid::new_v4().simple());
    let body = stripe_event(&event_id, "invoice.payment_failed");
    let header = tollgate_psp::stripe::signature_header(
        &app.stripe_webhook_secret,
        Utc::now().timestamp(),
        body.as_bytes(),
    );
    for _ in 0..2 {
        let (status, _) = post_webhook(
            &app,
            "stripe",
            body.clone(),
            &[("Stripe-Signature", header.clone())],
        )
        .await;
        assert_eq!(status, 200);
    }
    let delivery = tokio::time::timeout(Duration::from_secs(20), consumer.next())
        .await
        .expect("published within 10 s")
        .expect("a message")
        .expect("delivery");
    assert_eq!(
        delivery.routing_key.as_str(),
        "psp.stripe.invoice.payment_failed"
    );
    let envelope: Envelope<PspEvent> = serde_json::from_slice(&delivery.data).expect("envelope");
    let stored: Uuid = {
        let mut conn = tollgate_storage::pool::get(&app.pool).await.expect("conn");
        tollgate_storage::webhooks::find_psp_event(&mut conn, "stripe", &event_id)
            .await
            .expect("query")
            .expect("stored")
            .id
    };
    assert_eq!(envelope.id, stored, "envelope id = psp_events id");
    assert_eq!(
        delivery
            .properties
            .message_id()
            .as_ref()
            .map(|m| m.as_str().to_owned()),
        Some(stored.to_string())
    );
    assert_eq!(envelope.source, "webhook");
    assert!(
        envelope.tenant.as_uuid().is_nil(),
        "PSP events are platform-level"
    );
    let PspEvent::ReceivedV1 {
        psp,
        event_id: got_id,
        event_type,
        livemode,
        payload,
        ..
    } = envelope.data;
    assert_eq!(
        (psp.as_str(), got_id.as_str(), event_type.as_str(), livemode),
        ("stripe", event_id.as_str(), "invoice.payment_failed", false)
    );
    assert_eq!(payload, serde_json::from_str::<Value>(&body).expect("JSON"));
    // The duplicate was not published.
    let second = tokio::time::timeout(Duration::from_secs(1), consumer.next()).await;
    assert!(second.is_err(), "a duplicate is published once");
    app.stop().await;
}

// ---------------------------------------------------------------------------------------------
// Outbound

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_receiver_gets_the_event_on_attempt_3_and_the_log_shows_every_attempt() {
    let app = TestApp::spawn_with(configure_webhook(|cfg| {
        cfg.delivery.retry_schedule_secs = vec![1, 1, 1];
    }))
    .await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(500).set_body_string("database is down"))
        .up_to_n_times(1)
        .with_priority(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "2"))
        .up_to_n_times(1)
        .with_priority(2)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(204))
        .with_priority(3)
        .mount(&receiver)
        .await;
    let (endpoint, secret) = create_endpoint(
        &app,
        &format!("{}/hook", receiver.uri()),
        &["invoice.finalized", "job.dead"],
    )
    .await;

    // Not subscribed (another type) and another tenant's event: never delivered.
    let other = {
        let mut conn = tollgate_storage::pool::get(&app.pool).await.expect("conn");
        let name = format!("other-{}", Uuid::new_v4().simple());
        let tenant = tollgate_storage::tenants::create_tenant(&mut conn, &name, 100)
            .await
            .expect("tenant");
        TenantId::from_uuid(tenant.id)
    };
    emit_invoice_finalized(&app, other, 1).await;
    emit(
        &app,
        Envelope::billing(
            "billing",
            app.tenant,
            Uuid::now_v7(),
            BillingEvent::PaymentRequestedV1 {
                invoice_id: Uuid::now_v7(),
                number: "INV-000009".into(),
                account_id: Uuid::now_v7(),
                currency: "USD".into(),
                amount_minor: 9,
            },
        ),
    )
    .await;
    let message = emit_invoice_finalized(&app, app.tenant, 4_200).await;

    let requests = wait_for_requests(&receiver, 3, Duration::from_secs(20)).await;
    assert_eq!(requests.len(), 3);
    let webhook_id = format!("msg_{}", message.simple());
    for request in &requests {
        assert_eq!(
            header(request, "webhook-id"),
            webhook_id,
            "one id on every attempt"
        );
        let verdict = verify_standard_webhook(&secret, request);
        assert_eq!(verdict["ok"], true, "standardwebhooks verifies: {verdict}");
        assert_eq!(verdict["payload"]["type"], "invoice.finalized");
        assert_eq!(verdict["payload"]["data"]["total_minor"], 4_200);
        assert!(verdict["payload"]["timestamp"].is_string());
    }
    assert_eq!(
        verify_standard_webhook("whsec_dGhpcyBpcyBub3QgdGhlIHNlY3JldA==", &requests[0])["ok"],
        false,
        "another secret does not verify"
    );

    let list = eventually(
        Duration::from_secs(20),
        "the delivery succeeded",
        || async {
            let list = deliveries(&app, &endpoint).await;
            (list.len() == 1 && list[0]["status"] == "succeeded").then_some(list)
        },
    )
    .await;
    let delivery = list[0]["id"].as_str().expect("id").to_owned();
    assert_eq!(list[0]["attempts"], 3);
    assert_eq!(list[0]["message_id"], webhook_id.as_str());
    let detail = delivery_detail(&app, &delivery).await;
    let log = detail["attempt_log"].as_array().expect("log");
    let statuses: Vec<i64> = log
        .iter()
        .map(|a| a["status_code"].as_i64().unwrap_or(0))
        .collect();
    assert_eq!(statuses, [500, 503, 204]);
    assert_eq!(log[0]["response_snippet"], "database is down");
    assert_eq!(log[1]["retry_after_secs"], 2);
    assert!(log.iter().all(|a| a["trigger"] == "scheduled"));
    assert!(log[2]["next_attempt_at"].is_null());
    let at = |v: &Value| {
        chrono::DateTime::parse_from_rfc3339(v.as_str().expect("time")).expect("RFC 3339")
    };
    let gap1 = at(&log[1]["started_at"]) - at(&log[0]["started_at"]);
    let gap2 = at(&log[2]["started_at"]) - at(&log[1]["started_at"]);
    assert!(
        gap1 >= chrono::Duration::milliseconds(750),
        "the schedule's 1 s ± 20 %: {gap1}"
    );
    assert!(
        gap2 >= chrono::Duration::seconds(2),
        "Retry-After 2 is a lower bound: {gap2}"
    );
    assert_eq!(detail["message"]["type"], "invoice.finalized");

    // Redelivery by API, then by the operator CLI: new attempts, same webhook-id.
    let (status, answer) = api(
        &app,
        reqwest::Method::POST,
        &format!("/v1/webhook-deliveries/{delivery}/redeliver"),
        None,
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    let requests = wait_for_requests(&receiver, 4, Duration::from_secs(20)).await;
    assert_eq!(header(&requests[3], "webhook-id"), webhook_id);
    tollgate_cli::run_from([
        "tollgatectl",
        "--database-url",
        &app.db_url,
        "webhook",
        "redeliver",
        &delivery,
    ])
    .await
    .expect("tollgatectl webhook redeliver");
    wait_for_requests(&receiver, 5, Duration::from_secs(20)).await;
    let detail = eventually(Duration::from_secs(20), "5 attempts logged", || async {
        let detail = delivery_detail(&app, &delivery).await;
        (detail["attempt_log"].as_array().map_or(0, Vec::len) == 5).then_some(detail)
    })
    .await;
    let log = detail["attempt_log"].as_array().expect("log");
    assert_eq!(log[3]["trigger"], "manual");
    assert_eq!(log[4]["trigger"], "manual");
    assert_eq!(detail["status"], "succeeded", "{detail:#}");
    assert_eq!(
        received(&receiver).await.len(),
        5,
        "nothing else was delivered"
    );
    for args in [
        vec!["webhook", "endpoints", "--tenant", app.tenant_name.as_str()],
        vec!["webhook", "deliveries", "--endpoint", endpoint.as_str()],
        vec!["webhook", "show", delivery.as_str()],
    ] {
        let mut argv = vec!["tollgatectl", "--database-url", app.db_url.as_str()];
        argv.extend(args);
        tollgate_cli::run_from(argv)
            .await
            .expect("tollgatectl webhook");
    }
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn during_a_secret_rotation_both_secrets_sign() {
    let app = TestApp::spawn_with(configure_webhook(|_| {})).await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let (endpoint, first) = create_endpoint(&app, &receiver.uri(), &["*"]).await;

    let (status, rotated) = api(
        &app,
        reqwest::Method::POST,
        &format!("/v1/webhook-endpoints/{endpoint}/rotate-secret"),
        Some(json!({"overlap_secs": 3600})),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let second = rotated["secret"].as_str().expect("new secret").to_owned();
    assert_ne!(first, second);
    emit_invoice_finalized(&app, app.tenant, 1).await;
    let requests = wait_for_requests(&receiver, 1, Duration::from_secs(20)).await;
    assert_eq!(
        header(&requests[0], "webhook-signature").split(' ').count(),
        2
    );
    assert_eq!(
        verify_standard_webhook(&first, &requests[0])["ok"],
        true,
        "old secret"
    );
    assert_eq!(
        verify_standard_webhook(&second, &requests[0])["ok"],
        true,
        "new secret"
    );

    // No overlap: only the newest secret signs.
    let (status, rotated) = api(
        &app,
        reqwest::Method::POST,
        &format!("/v1/webhook-endpoints/{endpoint}/rotate-secret"),
        Some(json!({"overlap_secs": 0})),
    )
    .await;
    assert_eq!(status, 200);
    let third = rotated["secret"].as_str().expect("new secret").to_owned();
    emit_invoice_finalized(&app, app.tenant, 2).await;
    let requests = wait_for_requests(&receiver, 2, Duration::from_secs(20)).await;
    assert_eq!(
        header(&requests[1], "webhook-signature").split(' ').count(),
        1
    );
    assert_eq!(verify_standard_webhook(&third, &requests[1])["ok"], true);
    assert_eq!(verify_standard_webhook(&second, &requests[1])["ok"], false);

    // The secret is shown on creation and rotation only.
    let (_, shown) = api(
        &app,
        reqwest::Method::GET,
        &format!("/v1/webhook-endpoints/{endpoint}"),
        None,
    )
    .await;
    assert!(shown.get("secret").is_none(), "{shown}");
    let (status, answer) = api(
        &app,
        reqwest::Method::POST,
        &format!("/v1/webhook-endpoints/{endpoint}/rotate-secret"),
        Some(json!({"overlap_secs": 99_999_999})),
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("INVALID_REQUEST"))
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_days_is_disabled_and_the_tenant_is_notified() {
    let app = TestApp::spawn_with(configure_webhook(|cfg| {
        cfg.delivery.retry_schedule_secs = vec![3600];
    }))
    .await;
    let failing = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&failing)
        .await;
    let healthy = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&healthy)
        .await;
    let (broken, _) = create_endpoint(&app, &failing.uri(), &["invoice.finalized"]).await;
    // The tenant's other endpoint: it gets the same events and the notice.
    let (watcher, watcher_secret) = create_endpoint(
        &app,
        &healthy.uri(),
        &["webhook_endpoint.disabled", "invoice.finalized"],
    )
    .await;

    // A first failure: failing since now, still enabled, a retry scheduled an hour later.
    emit_invoice_finalized(&app, app.tenant, 1).await;
    wait_for_requests(&failing, 1, Duration::from_secs(20)).await;
    let endpoint = eventually(Duration::from_secs(20), "failing_since is set", || async {
        let (_, body) = api(
            &app,
            reqwest::Method::GET,
            &format!("/v1/webhook-endpoints/{broken}"),
            None,
        )
        .await;
        body["failing_since"].is_string().then_some(body)
    })
    .await;
    assert_eq!(endpoint["status"], "enabled");
    let first = deliveries(&app, &broken).await;
    assert_eq!(first[0]["status"], "pending");

    // Failing for six days (more than the default five): the next failure disables it.
    app.execute(&format!(
        "UPDATE webhook_endpoints SET failing_since = now() - interval '6 days' WHERE id = '{}'",
        broken
            .trim_start_matches("ep_")
            .parse::<Uuid>()
            .expect("uuid")
    ))
    .await
    .expect("backdate");
    emit_invoice_finalized(&app, app.tenant, 2).await;
    let endpoint = eventually(
        Duration::from_secs(20),
        "the endpoint is disabled",
        || async {
            let (_, body) = api(
                &app,
                reqwest::Method::GET,
                &format!("/v1/webhook-endpoints/{broken}"),
                None,
            )
            .await;
            (body["status"] == "disabled").then_some(body)
        },
    )
    .await;
    assert!(endpoint["disabled_reason"]
        .as_str()
        .is_some_and(|r| r.contains("failed")));
    let list = deliveries(&app, &broken).await;
    assert_eq!(list.len(), 2);
    assert!(
        list.iter().all(|d| d["status"] == "failed"),
        "pending deliveries fail: {list:?}"
    );

    // The tenant's other endpoint is told, signed like any event.
    let seen = wait_for_requests(&healthy, 3, Duration::from_secs(20)).await;
    let notices: Vec<Value> = seen
        .iter()
        .map(|request| verify_standard_webhook(&watcher_secret, request))
        .filter(|verdict| verdict["payload"]["type"] == "webhook_endpoint.disabled")
        .collect();
    assert_eq!(notices.len(), 1, "one notice");
    assert_eq!(notices[0]["ok"], true, "{}", notices[0]);
    assert_eq!(
        notices[0]["payload"]["data"]["endpoint_id"],
        broken.as_str()
    );
    assert!(notices[0]["payload"]["data"]["reason"].is_string());

    // A disabled endpoint gets nothing more, not even redeliveries, until enabled.
    let attempts_so_far = received(&failing).await.len();
    emit_invoice_finalized(&app, app.tenant, 3).await;
    // The other endpoint got the third event, so the fan-out is done with it.
    wait_for_requests(&healthy, 4, Duration::from_secs(20)).await;
    assert_eq!(
        deliveries(&app, &broken).await.len(),
        2,
        "nothing new for a disabled endpoint"
    );
    assert_eq!(deliveries(&app, &watcher).await.len(), 4);
    let (status, answer) = api(
        &app,
        reqwest::Method::POST,
        &format!(
            "/v1/webhook-deliveries/{}/redeliver",
            list[0]["id"].as_str().expect("id")
        ),
        None,
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (409, Some("ENDPOINT_DISABLED"))
    );
    let (status, enabled) = api(
        &app,
        reqwest::Method::POST,
        &format!("/v1/webhook-endpoints/{broken}/enable"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(enabled["status"], "enabled");
    assert!(enabled["failing_since"].is_null());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(received(&failing).await.len(), attempts_so_far);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_succeeds_is_announced_to_the_tenants_endpoint() {
    // The whole pipeline: gateway → intake → worker → outbox → fan-out → signed delivery.
    let app = TestApp::spawn().await;
    app.add_job_type("render", "/render", 2, 3, 1024).await;
    Mock::given(method("POST"))
        .and(path("/render"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"output": {"ok": true}, "units": 5})),
        )
        .mount(&app.executor)
        .await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let (_, secret) = create_endpoint(&app, &receiver.uri(), &["job.succeeded"]).await;
    // The worker reads which tenants want job events every 100 ms in tests.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, job) = app
        .submit(&json!({"type": "render", "input": {"scene": 1}}), None)
        .await;
    assert_eq!(status, 202, "{job}");
    let requests = wait_for_requests(&receiver, 1, Duration::from_secs(20)).await;
    let verdict = verify_standard_webhook(&secret, &requests[0]);
    assert_eq!(verdict["ok"], true, "{verdict}");
    assert_eq!(verdict["payload"]["type"], "job.succeeded");
    assert_eq!(verdict["payload"]["data"]["job_id"], job["id"]);
    assert_eq!(verdict["payload"]["data"]["cost"], 10);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_to_internal_addresses_are_refused_unless_allowed() {
    let app = TestApp::spawn_with(configure_webhook(|cfg| {
        cfg.delivery.allow_private_networks = false;
        cfg.delivery.retry_schedule_secs = vec![];
    }))
    .await;
    let receiver = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&receiver)
        .await;
    let port = receiver.address().port();
    let (literal, _) = create_endpoint(&app, &receiver.uri(), &["*"]).await;
    let (named, _) = create_endpoint(&app, &format!("http://localhost:{port}/"), &["*"]).await;
    emit_invoice_finalized(&app, app.tenant, 1).await;
    for endpoint in [&literal, &named] {
        let list = eventually(Duration::from_secs(20), "the delivery failed", || async {
            let list = deliveries(&app, endpoint).await;
            (list.len() == 1 && list[0]["status"] == "failed").then_some(list)
        })
        .await;
        let detail = delivery_detail(&app, list[0]["id"].as_str().expect("id")).await;
        let error = detail["attempt_log"][0]["error"]
            .as_str()
            .unwrap_or_default();
        assert!(error.contains("refused"), "{endpoint}: {error}");
    }
    assert!(
        received(&receiver).await.is_empty(),
        "nothing reached the internal address"
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoint_api_validates_input_and_is_tenant_scoped() {
    let app = TestApp::spawn_with(configure_webhook(|_| {})).await;
    let post = |body: Value| {
        api(
            &app,
            reqwest::Method::POST,
            "/v1/webhook-endpoints",
            Some(body),
        )
    };
    let (status, answer) = post(json!({"url": "ftp://example.com", "event_types": ["*"]})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("INVALID_REQUEST"))
    );
    let (status, answer) =
        post(json!({"url": "https://example.com/h", "event_types": ["invoice.piad"]})).await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (422, Some("UNKNOWN_EVENT_TYPE"))
    );
    let (status, answer) = post(json!({"url": "https://example.com/h", "event_types": []})).await;
    assert_eq!(status, 422, "{answer}");

    let (id, secret) = create_endpoint(&app, "https://example.com/h", &["job.succeeded"]).await;
    assert!(id.starts_with("ep_") && secret.starts_with("whsec_"));
    let (status, edited) = api(
        &app,
        reqwest::Method::PATCH,
        &format!("/v1/webhook-endpoints/{id}"),
        Some(json!({"event_types": ["job.succeeded", "job.dead"], "description": "jobs"})),
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["event_types"], json!(["job.succeeded", "job.dead"]));
    let (status, listed) = api(&app, reqwest::Method::GET, "/v1/webhook-endpoints", None).await;
    assert_eq!(status, 200);
    assert_eq!(listed["data"].as_array().map(Vec::len), Some(1));
    assert!(listed["data"][0].get("secret").is_none());

    // Another tenant sees nothing of it.
    let other_key = {
        let mut conn = tollgate_storage::pool::get(&app.pool).await.expect("conn");
        let tenant = tollgate_storage::tenants::create_tenant(
            &mut conn,
            &format!("other-{}", Uuid::new_v4().simple()),
            1000,
        )
        .await
        .expect("tenant");
        let key = api_key::generate();
        tollgate_storage::tenants::insert_api_key(
            &mut conn,
            &ApiKeyRow {
                id: ApiKeyId::new().as_uuid(),
                tenant_id: tenant.id,
                prefix: key.prefix.clone(),
                key_hash: key.hash.to_vec(),
                name: "other".into(),
                created_at: Utc::now(),
                revoked_at: None,
            },
        )
        .await
        .expect("key");
        key.secret_text
    };
    for (method, path) in [
        (reqwest::Method::GET, format!("/v1/webhook-endpoints/{id}")),
        (
            reqwest::Method::DELETE,
            format!("/v1/webhook-endpoints/{id}"),
        ),
        (
            reqwest::Method::GET,
            format!("/v1/webhook-endpoints/{id}/deliveries"),
        ),
    ] {
        let (status, answer) = api_as(&app, &other_key, method, &path, None).await;
        assert_eq!(
            (status, answer["error"]["code"].as_str()),
            (404, Some("ENDPOINT_NOT_FOUND")),
            "{path}"
        );
    }
    let (status, listed) = api_as(
        &app,
        &other_key,
        reqwest::Method::GET,
        "/v1/webhook-endpoints",
        None,
    )
    .await;
    assert_eq!(
        (status, listed["data"].as_array().map(Vec::len)),
        (200, Some(0))
    );
    // Without the gateway's identity the service refuses.
    let res = app
        .http
        .get(format!("{}/v1/webhook-endpoints", app.webhook_url))
        .header("x-tollgate-tenant", app.tenant.to_string())
        .send()
        .await
        .expect("direct call");
    assert_eq!(res.status().as_u16(), 401);

    let (status, _) = api(
        &app,
        reqwest::Method::DELETE,
        &format!("/v1/webhook-endpoints/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 204);
    let (status, _) = api(
        &app,
        reqwest::Method::GET,
        &format!("/v1/webhook-endpoints/{id}"),
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, answer) = api(
        &app,
        reqwest::Method::GET,
        "/v1/webhook-deliveries/dlv_nope",
        None,
    )
    .await;
    assert_eq!(
        (status, answer["error"]["code"].as_str()),
        (404, Some("DELIVERY_NOT_FOUND"))
    );
    app.stop().await;
}
