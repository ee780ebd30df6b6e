//! `StripeClient` against a fake Stripe (wiremock) that checks what Stripe checks: the
//! bearer key, the pinned version, form-encoded fields, the idempotency key on every POST and
//! its reuse across retries; and answers like Stripe: errors, `Stripe-Should-Retry`,
//! `Retry-After`, paginated lists.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use tollgate_psp::stripe::{
    CheckoutSessionParams, CustomerParams, PaymentIntentParams, StripeClient, StripeConfig,
    StripeError,
};
use tollgate_psp::SecretString;
use wiremock::matchers::{
    bearer_token, header, header_exists, method, path, query_param, query_param_is_missing,
};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const KEY: &str = "sk_test_tollgate_123";
const IDEM: &str = "tollgate-inv-0b5e1c1e-6f0a-4a53-9d1c-3f4f5a6b7c8d-attempt-1";

fn client(server: &MockServer) -> StripeClient {
    client_with_retries(server, 2)
}

fn client_with_retries(server: &MockServer, max_retries: u32) -> StripeClient {
    StripeClient::new(StripeConfig {
        api_base: server.uri(),
        secret_key: SecretString::new(KEY),
        timeout_ms: 5_000,
        max_retries,
        ..StripeConfig::default()
    })
    .expect("valid config")
    .with_backoff(Duration::from_millis(1), Duration::from_millis(5))
}

/// The decoded form body of a request, in order.
fn form(req: &Request) -> Vec<(String, String)> {
    url::form_urlencoded::parse(&req.body)
        .into_owned()
        .collect()
}

fn field(req: &Request, key: &str) -> Option<String> {
    form(req)
        .into_iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v)
}

fn header_str(req: &Request, name: &str) -> Option<String> {
    req.headers
        .get(name)
        .map(|v| v.to_str().expect("ASCII header").to_owned())
}

fn pi_json(id: &str, status: &str) -> serde_json::Value {
    json!({
        "id": id, "object": "payment_intent", "status": status, "amount": 1999,
        "amount_received": if status == "succeeded" { 1999 } else { 0 },
        "currency": "usd", "created": 1_700_000_000, "customer": "cus_1",
        "metadata": {"tollgate_invoice": "inv-1"}, "last_payment_error": null,
        "latest_charge": "ch_1", "livemode": false, "payment_method_types": ["card"]
    })
}

fn pi_params() -> PaymentIntentParams {
    PaymentIntentParams {
        amount: 1999,
        currency: "usd".into(),
        customer: Some("cus_1".into()),
        payment_method: Some("pm_card_visa".into()),
        confirm: true,
        off_session: true,
        description: Some("Tollgate invoice 2026-11".into()),
        metadata: BTreeMap::from([
            ("tollgate_tenant".into(), "t-1".into()),
            ("tollgate_account".into(), "a-1".into()),
            ("tollgate_invoice".into(), "inv-1".into()),
        ]),
    }
}

async fn requests(server: &MockServer) -> Vec<Request> {
    server
        .received_requests()
        .await
        .expect("request recording is on")
}

#[tokio::test]
async fn create_payment_intent_sends_what_stripe_expects() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .and(bearer_token(KEY))
        .and(header("Stripe-Version", "2024-06-20"))
        .and(header("Idempotency-Key", IDEM))
        .and(header("Content-Type", "application/x-www-form-urlencoded"))
        .respond_with(ResponseTemplate::new(200).set_body_json(pi_json("pi_1", "succeeded")))
        .expect(1)
        .mount(&server)
        .await;

    let pi = client(&server)
        .create_payment_intent(IDEM, &pi_params())
        .await
        .unwrap();
    assert_eq!(pi.id, "pi_1");
    assert_eq!(pi.status, "succeeded");
    assert_eq!(pi.amount_received, 1999);
    assert_eq!(pi.metadata["tollgate_invoice"], "inv-1");
    assert_eq!(pi.latest_charge.as_deref(), Some("ch_1"));

    let reqs = requests(&server).await;
    let req = &reqs[0];
    assert_eq!(
        header_str(req, "authorization").as_deref(),
        Some("Bearer sk_test_tollgate_123")
    );
    assert_eq!(field(req, "amount").as_deref(), Some("1999"));
    assert_eq!(field(req, "currency").as_deref(), Some("usd"));
    assert_eq!(field(req, "customer").as_deref(), Some("cus_1"));
    assert_eq!(
        field(req, "payment_method").as_deref(),
        Some("pm_card_visa")
    );
    assert_eq!(field(req, "confirm").as_deref(), Some("true"));
    assert_eq!(field(req, "off_session").as_deref(), Some("true"));
    assert_eq!(
        field(req, "description").as_deref(),
        Some("Tollgate invoice 2026-11")
    );
    assert_eq!(
        field(req, "metadata[tollgate_invoice]").as_deref(),
        Some("inv-1")
    );
    assert_eq!(
        field(req, "metadata[tollgate_tenant]").as_deref(),
        Some("t-1")
    );
    assert_eq!(
        field(req, "metadata[tollgate_account]").as_deref(),
        Some("a-1")
    );
    // Stripe's wire form: bracketed keys percent-encoded, nothing JSON.
    let raw = String::from_utf8(req.body.clone()).unwrap();
    assert!(
        raw.contains("metadata%5Btollgate_invoice%5D=inv-1"),
        "{raw}"
    );
}

#[tokio::test]
async fn retries_a_500_with_the_same_idempotency_key_and_body() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(ResponseTemplate::new(500).set_body_json(
            json!({"error": {"type": "api_error", "message": "Something went wrong"}}),
        ))
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .and(header("Idempotency-Key", IDEM))
        .respond_with(ResponseTemplate::new(200).set_body_json(pi_json("pi_1", "succeeded")))
        .expect(1)
        .mount(&server)
        .await;

    let pi = client(&server)
        .create_payment_intent(IDEM, &pi_params())
        .await
        .unwrap();
    assert_eq!(pi.id, "pi_1");

    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 2);
    for req in &reqs {
        assert_eq!(header_str(req, "idempotency-key").as_deref(), Some(IDEM));
    }
    assert_eq!(reqs[0].body, reqs[1].body);
}

#[tokio::test]
async fn retries_a_429_after_retry_after_seconds() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("Retry-After", "1")
                .set_body_json(json!({"error": {"type": "invalid_request_error",
                    "code": "rate_limit", "message": "Too many requests"}})),
        )
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "re_1", "object": "refund", "status": "succeeded", "amount": 500,
            "payment_intent": "pi_1"})))
        .mount(&server)
        .await;

    let started = Instant::now();
    let refund = client(&server)
        .create_refund("refund-key-1", "pi_1", Some(500))
        .await
        .unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was not honoured ({:?})",
        started.elapsed()
    );
    assert_eq!((refund.id.as_str(), refund.amount), ("re_1", 500));
    assert_eq!(refund.payment_intent.as_deref(), Some("pi_1"));
    let reqs = requests(&server).await;
    assert_eq!(reqs.len(), 2);
    for req in &reqs {
        assert_eq!(
            header_str(req, "idempotency-key").as_deref(),
            Some("refund-key-1")
        );
        assert_eq!(field(req, "payment_intent").as_deref(), Some("pi_1"));
        assert_eq!(field(req, "amount").as_deref(), Some("500"));
    }
}

#[tokio::test]
async fn does_not_retry_a_400() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({"error": {
            "type": "invalid_request_error", "code": "parameter_missing",
            "message": "Missing required param: currency.", "param": "currency"}})))
        .expect(1)
        .mount(&server)
        .await;

    let err = client(&server)
        .create_payment_intent(IDEM, &pi_params())
        .await
        .unwrap_err();
    match &err {
        StripeError::InvalidRequest { status, error } => {
            assert_eq!(*status, 400);
            assert_eq!(error.r#type, "invalid_request_error");
            assert_eq!(error.code.as_deref(), Some("parameter_missing"));
            assert_eq!(error.param.as_deref(), Some("currency"));
        }
        other => panic!("expected InvalidRequest, got {other:?}"),
    }
    assert_eq!(requests(&server).await.len(), 1);
}

#[tokio::test]
async fn decodes_a_402_card_error_with_its_payment_intent() {
    let server = MockServer::start().await;
    let mut failed_pi = pi_json("pi_declined", "requires_payment_method");
    failed_pi["last_payment_error"] = json!({"type": "card_error", "code": "card_declined",
        "decline_code": "insufficient_funds", "message": "Your card has insufficient funds."});
    Mock::given(method("POST"))
        .and(path("/v1/payment_intents"))
        .respond_with(ResponseTemplate::new(402).set_body_json(json!({"error": {
            "type": "card_error", "code": "card_declined", "decline_code": "insufficient_funds",
            "message": "Your card has insufficient funds.", "payment_intent": failed_pi,
            "doc_url": "https://stripe.com/docs/error-codes/card-declined"}})))
        .expect(1)
        .mount(&server)
        .await;

    let err = client(&server)
        .create_payment_intent(IDEM, &pi_params())
        .await
        .unwrap_err();
    let StripeError::Card(body) = &err else {
        panic!("expected Card, got {err:?}");
    };
    assert_eq!(body.r#type, "card_error");
    assert_eq!(body.code.as_deref(), Some("card_declined"));
    assert_eq!(body.decline_code.as_deref(), Some("insufficient_funds"));
    let pi = err.payment_intent().unwrap();
    assert_eq!(pi.id, "pi_declined");
    assert_eq!(pi.status, "requires_payment_method");
    assert_eq!(
        pi.last_payment_error
            .as_ref()
            .unwrap()
            .decline_code
            .as_deref(),
        Some("insufficient_funds")
    );
    assert!(err.to_string().contains("card_declined"));
}

#[tokio::test]
async fn stripe_should_retry_overrides_the_status() {
    let server = MockServer::start().await;
    // A 503 Stripe says not to retry: one attempt.
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("Stripe-Should-Retry", "false")
                .set_body_json(json!({"error": {"type": "api_error", "message": "down"}})),
        )
        .expect(1)
        .mount(&server)
        .await;
    // A 409 lock timeout Stripe says to retry: retried until it succeeds.
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(
            ResponseTemplate::new(409)
                .insert_header("Stripe-Should-Retry", "true")
                .set_body_json(json!({"error": {"type": "invalid_request_error",
                    "code": "lock_timeout", "message": "locked"}})),
        )
        .up_to_n_times(1)
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/refunds"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "re_2", "status": "pending", "amount": 100, "payment_intent": null})))
        .expect(1)
        .mount(&server)
        .await;

    let c = client(&server);
    let err = c
        .create_customer("cust-key", &CustomerParams::default())
        .await
        .unwrap_err();
    assert!(matches!(err, StripeError::Unavailable(_)), "{err:?}");
    let refund = c.create_refund("refund-key-2", "pi_2", None).await.unwrap();
    assert_eq!(refund.status, "pending");
}

#[tokio::test]
async fn gives_up_after_max_retries() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/payment_intents/pi_1"))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>bad gateway</html>"))
        .expect(4)
        .mount(&server)
        .await;

    let err = client_with_retries(&server, 3)
        .retrieve_payment_intent("pi_1")
        .await
        .unwrap_err();
    let StripeError::Unavailable(msg) = &err else {
        panic!("expected Unavailable, got {err:?}");
    };
    assert!(msg.contains("502") && msg.contains("4 attempts"), "{msg}");
}

#[tokio::test]
async fn retries_connection_errors() {
    // A server that accepts connections and closes them without answering.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            drop(socket);
        }
    });
    let client = StripeClient::new(StripeConfig {
        api_base: format!("http://{addr}"),
        secret_key: SecretString::new(KEY),
        timeout_ms: 2_000,
        max_retries: 2,
        ..StripeConfig::default()
    })
    .unwrap()
    .with_backoff(Duration::from_millis(1), Duration::from_millis(5));

    let err = client
        .create_payment_intent(IDEM, &pi_params())
        .await
        .unwrap_err();
    assert!(matches!(err, StripeError::Unavailable(_)), "{err:?}");
    assert_eq!(accepted.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn authentication_errors() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions/sub_1"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({"error": {
            "type": "invalid_request_error", "message": "Invalid API Key provided: sk_test_***123"}})))
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .retrieve_subscription("sub_1")
        .await
        .unwrap_err();
    match err {
        StripeError::Authentication(msg) => assert!(msg.contains("Invalid API Key"), "{msg}"),
        other => panic!("expected Authentication, got {other:?}"),
    }
}

#[tokio::test]
async fn gets_carry_no_idempotency_key() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/subscriptions/sub_1"))
        .and(bearer_token(KEY))
        .and(header("Stripe-Version", "2024-06-20"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "sub_1", "object": "subscription", "status": "past_due", "customer": "cus_1",
            "current_period_end": 1_702_592_000, "created": 1_700_000_000,
            "metadata": {"tollgate_subscription": "s-1"}, "items": {"data": []}})))
        .expect(1)
        .mount(&server)
        .await;
    let sub = client(&server)
        .retrieve_subscription("sub_1")
        .await
        .unwrap();
    assert_eq!(sub.status, "past_due");
    assert_eq!(sub.current_period_end, Some(1_702_592_000));
    assert_eq!(sub.metadata["tollgate_subscription"], "s-1");
    let reqs = requests(&server).await;
    assert!(header_str(&reqs[0], "idempotency-key").is_none());
    assert!(reqs[0].body.is_empty());
}

#[tokio::test]
async fn customer_checkout_and_portal_forms() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v1/customers"))
        .and(header_exists("Idempotency-Key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "cus_1", "object": "customer", "email": "ops@acme.test",
            "metadata": {"tollgate_account": "a-1"}})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/checkout/sessions"))
        .and(header_exists("Idempotency-Key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "cs_test_1", "object": "checkout.session", "mode": "setup",
            "url": "https://checkout.stripe.com/c/pay/cs_test_1", "customer": "cus_1",
            "setup_intent": "seti_1", "subscription": null, "client_reference_id": "a-1",
            "metadata": {"tollgate_account": "a-1"}})))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/billing_portal/sessions"))
        .and(header_exists("Idempotency-Key"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "bps_1", "object": "billing_portal.session",
            "url": "https://billing.stripe.com/p/session/test_1"})))
        .mount(&server)
        .await;

    let c = client(&server);
    let metadata = BTreeMap::from([
        ("tollgate_tenant".to_owned(), "t-1".to_owned()),
        ("tollgate_account".to_owned(), "a-1".to_owned()),
    ]);
    let customer = c
        .create_customer(
            "tollgate-customer-a-1",
            &CustomerParams {
                email: Some("ops@acme.test".into()),
                name: Some("Acme".into()),
                metadata: metadata.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(customer.id, "cus_1");
    assert_eq!(customer.metadata["tollgate_account"], "a-1");

    let session = c
        .create_checkout_session(
            "tollgate-checkout-a-1-1",
            &CheckoutSessionParams {
                customer: "cus_1".into(),
                mode: "setup".into(),
                currency: Some("usd".into()),
                success_url: "https://app.test/ok?session={CHECKOUT_SESSION_ID}".into(),
                cancel_url: "https://app.test/cancel".into(),
                client_reference_id: Some("a-1".into()),
                metadata: metadata.clone(),
            },
        )
        .await
        .unwrap();
    assert_eq!(
        session.url.as_deref(),
        Some("https://checkout.stripe.com/c/pay/cs_test_1")
    );
    assert_eq!(session.setup_intent.as_deref(), Some("seti_1"));

    let portal = c
        .create_portal_session("tollgate-portal-a-1-1", "cus_1", "https://app.test/billing")
        .await
        .unwrap();
    assert_eq!(portal.url, "https://billing.stripe.com/p/session/test_1");

    let reqs = requests(&server).await;
    let [cust, checkout, portal] = reqs.as_slice() else {
        panic!("expected 3 requests, got {}", reqs.len());
    };
    assert_eq!(
        form(cust),
        vec![
            ("email".to_owned(), "ops@acme.test".to_owned()),
            ("name".to_owned(), "Acme".to_owned()),
            ("metadata[tollgate_account]".to_owned(), "a-1".to_owned()),
            ("metadata[tollgate_tenant]".to_owned(), "t-1".to_owned()),
        ]
    );
    assert_eq!(
        header_str(cust, "idempotency-key").as_deref(),
        Some("tollgate-customer-a-1")
    );
    assert_eq!(field(checkout, "customer").as_deref(), Some("cus_1"));
    assert_eq!(field(checkout, "mode").as_deref(), Some("setup"));
    assert_eq!(field(checkout, "currency").as_deref(), Some("usd"));
    assert_eq!(
        field(checkout, "success_url").as_deref(),
        Some("https://app.test/ok?session={CHECKOUT_SESSION_ID}")
    );
    assert_eq!(
        field(checkout, "cancel_url").as_deref(),
        Some("https://app.test/cancel")
    );
    assert_eq!(
        field(checkout, "client_reference_id").as_deref(),
        Some("a-1")
    );
    assert_eq!(
        field(checkout, "metadata[tollgate_account]").as_deref(),
        Some("a-1")
    );
    assert_eq!(
        field(checkout, "setup_intent_data[metadata][tollgate_account]").as_deref(),
        Some("a-1")
    );
    assert_eq!(
        form(portal),
        vec![
            ("customer".to_owned(), "cus_1".to_owned()),
            (
                "return_url".to_owned(),
                "https://app.test/billing".to_owned()
            ),
        ]
    );
}

#[tokio::test]
async fn refuses_to_post_without_an_idempotency_key() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(pi_json("pi_1", "succeeded")))
        .expect(0)
        .mount(&server)
        .await;
    let c = client(&server);
    for key in [String::new(), "k".repeat(256)] {
        let err = c
            .create_payment_intent(&key, &pi_params())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, StripeError::InvalidRequest { status: 400, error } if error.param.as_deref() == Some("Idempotency-Key")),
            "{err:?}"
        );
    }
}

#[tokio::test]
async fn unparseable_success_is_a_decode_error() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/payment_intents/pi_1"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("Request-Id", "req_abc")
                .set_body_string("{\"id\": 5}"),
        )
        .expect(1)
        .mount(&server)
        .await;
    let err = client(&server)
        .retrieve_payment_intent("pi_1")
        .await
        .unwrap_err();
    let StripeError::Decode(msg) = err else {
        panic!("expected Decode, got {err:?}");
    };
    assert!(msg.contains("req_abc"), "{msg}");
}

fn ts(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("in range")
}

#[tokio::test]
async fn list_payment_intents_follows_pages_with_the_created_range() {
    let server = MockServer::start().await;
    let (from, to) = (1_698_796_800, 1_701_388_800);
    Mock::given(method("GET"))
        .and(path("/v1/payment_intents"))
        .and(query_param("created[gte]", from.to_string()))
        .and(query_param("created[lt]", to.to_string()))
        .and(query_param("limit", "100"))
        .and(query_param_is_missing("starting_after"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "url": "/v1/payment_intents", "has_more": true,
            "data": [pi_json("pi_3", "succeeded"), pi_json("pi_2", "succeeded")]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/payment_intents"))
        .and(query_param("created[gte]", from.to_string()))
        .and(query_param("created[lt]", to.to_string()))
        .and(query_param("starting_after", "pi_2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "url": "/v1/payment_intents", "has_more": true,
            "data": [pi_json("pi_1", "canceled")]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/payment_intents"))
        .and(query_param("starting_after", "pi_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "url": "/v1/payment_intents", "has_more": false, "data": []})))
        .expect(1)
        .mount(&server)
        .await;

    let all = client(&server)
        .list_payment_intents(ts(from), ts(to))
        .await
        .unwrap();
    let ids: Vec<&str> = all.iter().map(|pi| pi.id.as_str()).collect();
    assert_eq!(ids, ["pi_3", "pi_2", "pi_1"]);
    assert_eq!(all[2].status, "canceled");
}

#[tokio::test]
async fn list_payouts_and_their_balance_transactions() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/payouts"))
        .and(query_param("created[gte]", "1698796800"))
        .and(query_param("created[lt]", "1701388800"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "has_more": false,
            "data": [{"id": "po_1", "object": "payout", "amount": 9_500, "currency": "usd",
                      "status": "paid", "arrival_date": 1_700_100_000, "created": 1_700_000_000}]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/balance_transactions"))
        .and(query_param("payout", "po_1"))
        .and(query_param_is_missing("starting_after"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "has_more": true,
            "data": [{"id": "txn_1", "object": "balance_transaction", "amount": 10_000,
                      "fee": 320, "net": 9_680, "currency": "usd", "type": "charge",
                      "source": "ch_1"}]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1/balance_transactions"))
        .and(query_param("payout", "po_1"))
        .and(query_param("starting_after", "txn_1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "has_more": false,
            "data": [{"id": "txn_2", "object": "balance_transaction", "amount": -180,
                      "fee": 0, "net": -180, "currency": "usd", "type": "refund",
                      "source": "re_1"}]})))
        .expect(1)
        .mount(&server)
        .await;

    let c = client(&server);
    let payouts = c
        .list_payouts(ts(1_698_796_800), ts(1_701_388_800))
        .await
        .unwrap();
    assert_eq!(payouts.len(), 1);
    assert_eq!(
        (payouts[0].amount, payouts[0].arrival_date),
        (9_500, 1_700_100_000)
    );
    let txns = c.list_balance_transactions("po_1").await.unwrap();
    let summary: Vec<(&str, i64, i64, &str)> = txns
        .iter()
        .map(|t| (t.id.as_str(), t.amount, t.net, t.r#type.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            ("txn_1", 10_000, 9_680, "charge"),
            ("txn_2", -180, -180, "refund")
        ]
    );
    assert_eq!(txns[0].fee, 320);
    assert_eq!(txns[1].source.as_deref(), Some("re_1"));
}

#[tokio::test]
async fn a_list_that_never_ends_is_an_error_not_a_hang() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/payouts"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "object": "list", "has_more": true,
            "data": [{"id": "po_1", "amount": 1, "currency": "usd", "status": "paid",
                      "arrival_date": 1, "created": 1}]})))
        .mount(&server)
        .await;
    let err = client(&server)
        .list_payouts(ts(0), ts(10))
        .await
        .unwrap_err();
    assert!(matches!(err, StripeError::Decode(_)), "{err:?}");
    // First page, then the same page again for starting_after=po_1: stop there.
    assert_eq!(requests(&server).await.len(), 2);
}
