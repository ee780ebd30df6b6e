//! The demo tenant's receiver of Tollgate's outbound webhooks (Standard Webhooks,
//! https://www.standardwebhooks.com/).
//!
//! * `POST /webhooks`: a delivery. Its `webhook-id`, `webhook-timestamp` and
//!   `webhook-signature` headers are verified over the raw body with the reference
//!   `standardwebhooks` library (HMAC-SHA256 under the endpoint's `whsec_…` secret, any of the
//!   space-separated `v1,` signatures, timestamp within 5 minutes). A missing, forged or stale
//!   signature is answered 401 and not counted; a verified delivery is counted under its
//!   payload's `type`, once per `webhook-id` (a redelivery of the same message is answered 200
//!   and counted as a duplicate only). 503 while no secret is set, so Tollgate retries.
//! * `GET /webhooks/received`: `{"events": {type: count}, "duplicates", "rejected",
//!   "secret_set"}`.
//! * `PUT /webhooks/secret`: `{"secret": "whsec_…"}`, the secret Tollgate returned when the
//!   endpoint was registered. Tollgate generates the secret, so the receiver can only learn it
//!   after it is running: this route sets it **once** (204; 409 once a secret is set, whether
//!   by this route or by `--webhook-secret`). It is unauthenticated: the demo tenant listens on
//!   loopback for the quickstart; a real receiver takes its secret from its own configuration.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Mutex, PoisonError};

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use standardwebhooks::{
    Webhook, HEADER_WEBHOOK_ID, HEADER_WEBHOOK_SIGNATURE, HEADER_WEBHOOK_TIMESTAMP,
};

/// Largest delivery body accepted, in bytes.
const MAX_DELIVERY_BYTES: usize = 1024 * 1024;

/// The receiver's state, shared by every worker thread of the server.
#[derive(Default)]
pub struct WebhookReceiver {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    verifier: Option<Webhook>,
    /// Verified deliveries per event type, each `webhook-id` once.
    counts: BTreeMap<String, u64>,
    seen: HashSet<String>,
    duplicates: u64,
    rejected: u64,
}

/// A secret that is not `whsec_<base64>`.
#[derive(Debug, thiserror::Error)]
#[error("the secret must be whsec_ followed by base64 (as Tollgate returns it): {0}")]
pub struct InvalidSecret(String);

fn verifier(secret: &str) -> Result<Webhook, InvalidSecret> {
    match secret.strip_prefix("whsec_") {
        Some(key) if !key.is_empty() => {
            Webhook::new(secret).map_err(|e| InvalidSecret(e.to_string()))
        }
        _ => Err(InvalidSecret("no whsec_ prefix or an empty key".into())),
    }
}

impl WebhookReceiver {
    /// A receiver that verifies with `secret`, or that waits for `PUT /webhooks/secret`.
    pub fn new(secret: Option<&str>) -> Result<Self, InvalidSecret> {
        let receiver = Self::default();
        if let Some(secret) = secret {
            receiver.lock().verifier = Some(verifier(secret)?);
        }
        Ok(receiver)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> HttpResponse {
    HttpResponse::build(status).json(json!({"error": {"code": code, "message": message.into()}}))
}

/// The three Standard Webhooks headers, as the library's (`http` 1.x) header map.
fn signature_headers(req: &HttpRequest) -> http::HeaderMap {
    let mut headers = http::HeaderMap::new();
    for name in [
        HEADER_WEBHOOK_ID,
        HEADER_WEBHOOK_TIMESTAMP,
        HEADER_WEBHOOK_SIGNATURE,
    ] {
        if let Some(value) = req.headers().get(name) {
            if let Ok(value) = http::HeaderValue::from_bytes(value.as_bytes()) {
                headers.insert(name, value);
            }
        }
    }
    headers
}

/// The part of a delivery's payload the receiver reads.
#[derive(Deserialize)]
struct Delivery {
    #[serde(rename = "type")]
    event_type: String,
}

async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    receiver: web::Data<WebhookReceiver>,
) -> HttpResponse {
    let headers = signature_headers(&req);
    let mut state = receiver.lock();
    let Some(verifier) = &state.verifier else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "SECRET_NOT_SET",
            "no webhook secret yet (PUT /webhooks/secret)",
        );
    };
    if let Err(err) = verifier.verify(&body, &headers) {
        state.rejected += 1;
        tracing::warn!(error = %err, "webhook rejected");
        return error(
            StatusCode::UNAUTHORIZED,
            "INVALID_SIGNATURE",
            err.to_string(),
        );
    }
    let delivery: Delivery = match serde_json::from_slice(&body) {
        Ok(d) => d,
        Err(err) => {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_PAYLOAD",
                format!("a signed payload without a `type`: {err}"),
            )
        }
    };
    // Verified, so the header is there.
    let id = headers
        .get(HEADER_WEBHOOK_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let duplicate = !state.seen.insert(id.clone());
    if duplicate {
        state.duplicates += 1;
    } else {
        *state.counts.entry(delivery.event_type.clone()).or_default() += 1;
    }
    tracing::info!(webhook_id = %id, event_type = %delivery.event_type, duplicate, "webhook received");
    HttpResponse::Ok().json(json!({"received": true, "duplicate": duplicate}))
}

async fn received(receiver: web::Data<WebhookReceiver>) -> HttpResponse {
    let state = receiver.lock();
    HttpResponse::Ok().json(json!({
        "events": state.counts,
        "duplicates": state.duplicates,
        "rejected": state.rejected,
        "secret_set": state.verifier.is_some(),
    }))
}

#[derive(Deserialize)]
struct SetSecret {
    secret: String,
}

async fn set_secret(
    body: web::Json<SetSecret>,
    receiver: web::Data<WebhookReceiver>,
) -> HttpResponse {
    let mut state = receiver.lock();
    if state.verifier.is_some() {
        return error(
            StatusCode::CONFLICT,
            "SECRET_ALREADY_SET",
            "the webhook secret is set once; restart the demo tenant to change it",
        );
    }
    match verifier(&body.secret) {
        Ok(v) => {
            state.verifier = Some(v);
            HttpResponse::NoContent().finish()
        }
        Err(err) => error(StatusCode::BAD_REQUEST, "INVALID_SECRET", err.to_string()),
    }
}

/// Registers the receiver's routes with its shared state.
pub(crate) fn configure(cfg: &mut web::ServiceConfig, receiver: web::Data<WebhookReceiver>) {
    cfg.app_data(receiver)
        .service(
            web::resource("/webhooks")
                .app_data(web::PayloadConfig::new(MAX_DELIVERY_BYTES))
                .route(web::post().to(receive)),
        )
        .route("/webhooks/received", web::get().to(received))
        .route("/webhooks/secret", web::put().to(set_secret));
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test as actix_test;
    use actix_web::App;
    use serde_json::Value;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
    }

    /// `(status, body)` of each request, in order, against one receiver.
    async fn run(
        receiver: WebhookReceiver,
        requests: Vec<actix_test::TestRequest>,
    ) -> Vec<(StatusCode, Value)> {
        let data = web::Data::new(receiver);
        let app =
            actix_test::init_service(App::new().configure(|cfg| configure(cfg, data.clone())))
                .await;
        let mut out = Vec::new();
        for req in requests {
            let resp = actix_test::call_service(&app, req.to_request()).await;
            let status = resp.status();
            let body = actix_test::read_body(resp).await;
            out.push((status, serde_json::from_slice(&body).unwrap_or(Value::Null)));
        }
        out
    }

    /// A delivery of `event_type` with id `id`, signed with `secret` at `ts`.
    fn delivery(secret: &str, id: &str, ts: i64, event_type: &str) -> actix_test::TestRequest {
        let body = json!({"type": event_type, "timestamp": "2026-01-01T00:00:00Z", "data": {}})
            .to_string();
        let signature = Webhook::new(secret)
            .expect("secret")
            .sign(id, ts, body.as_bytes())
            .expect("signs");
        actix_test::TestRequest::post()
            .uri("/webhooks")
            .insert_header((HEADER_WEBHOOK_ID, id))
            .insert_header((HEADER_WEBHOOK_TIMESTAMP, ts.to_string()))
            .insert_header((HEADER_WEBHOOK_SIGNATURE, signature))
            .set_payload(body)
    }

    fn get_received() -> actix_test::TestRequest {
        actix_test::TestRequest::get().uri("/webhooks/received")
    }

    #[actix_web::test]
    async fn counts_verified_deliveries_once_per_message_id() {
        let receiver = WebhookReceiver::new(Some(SECRET)).expect("secret");
        let t = now();
        let out = run(
            receiver,
            vec![
                delivery(SECRET, "msg_1", t, "job.succeeded"),
                delivery(SECRET, "msg_2", t, "job.succeeded"),
                delivery(SECRET, "msg_1", t + 1, "job.succeeded"),
                delivery(SECRET, "msg_3", t, "invoice.paid"),
                get_received(),
            ],
        )
        .await;
        assert!(
            out[..4].iter().all(|(s, _)| *s == StatusCode::OK),
            "{out:?}"
        );
        assert_eq!(out[2].1["duplicate"], true);
        assert_eq!(
            out[4].1,
            json!({"events": {"invoice.paid": 1, "job.succeeded": 2}, "duplicates": 1,
                   "rejected": 0, "secret_set": true})
        );
    }

    #[actix_web::test]
    async fn unsigned_forged_and_stale_deliveries_are_401_and_not_counted() {
        let receiver = WebhookReceiver::new(Some(SECRET)).expect("secret");
        let t = now();
        let other = "whsec_QmFkIHNlY3JldCwgbm90IFRvbGxnYXRlJ3M=";
        let unsigned = actix_test::TestRequest::post()
            .uri("/webhooks")
            .set_payload(r#"{"type":"job.succeeded"}"#);
        let mut tampered = delivery(SECRET, "msg_t", t, "job.dead");
        tampered = tampered.set_payload(r#"{"type":"invoice.paid"}"#);
        let out = run(
            receiver,
            vec![
                unsigned,
                delivery(other, "msg_f", t, "job.succeeded"),
                delivery(SECRET, "msg_s", t - 3600, "job.succeeded"),
                tampered,
                get_received(),
            ],
        )
        .await;
        for (status, body) in &out[..4] {
            assert_eq!(*status, StatusCode::UNAUTHORIZED, "{body}");
            assert_eq!(body["error"]["code"], "INVALID_SIGNATURE");
        }
        assert_eq!(out[4].1["events"], json!({}));
        assert_eq!(out[4].1["rejected"], 4);
    }

    #[actix_web::test]
    async fn the_secret_is_set_once_and_deliveries_wait_for_it() {
        let t = now();
        let put = |secret: &str| {
            actix_test::TestRequest::put()
                .uri("/webhooks/secret")
                .set_json(json!({ "secret": secret }))
        };
        let out = run(
            WebhookReceiver::default(),
            vec![
                delivery(SECRET, "msg_1", t, "job.dead"),
                put("not-a-secret"),
                put("whsec_"),
                put(SECRET),
                put("whsec_QmFkIHNlY3JldCwgbm90IFRvbGxnYXRlJ3M="),
                delivery(SECRET, "msg_1", t, "job.dead"),
                get_received(),
            ],
        )
        .await;
        let statuses: Vec<StatusCode> = out.iter().map(|(s, _)| *s).collect();
        assert_eq!(
            statuses,
            [
                StatusCode::SERVICE_UNAVAILABLE,
                StatusCode::BAD_REQUEST,
                StatusCode::BAD_REQUEST,
                StatusCode::NO_CONTENT,
                StatusCode::CONFLICT,
                StatusCode::OK,
                StatusCode::OK,
            ]
        );
        assert_eq!(out[6].1["events"], json!({"job.dead": 1}));
        assert!(WebhookReceiver::new(Some("whsec_***")).is_err());
    }
}
