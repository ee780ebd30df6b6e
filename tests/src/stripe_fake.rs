//! A local fake of the Stripe API for end-to-end tests (STYLE "Tests": PSPs are faked with a
//! local server), built on wiremock with one stateful responder. It checks what Stripe checks
//! and a little more, so a wrong request fails the test instead of passing silently:
//!
//! * `Authorization: Bearer <secret key>` (401 `invalid_request_error` otherwise);
//! * POST bodies are `application/x-www-form-urlencoded` with the fields each endpoint needs
//!   (400 `parameter_missing` / `parameter_invalid_*` otherwise);
//! * every POST carries an `Idempotency-Key` (Stripe makes it optional; Tollgate promises it),
//!   and a repeated key returns the first response again (`Idempotent-Replayed: true`), or 400
//!   `idempotency_error` when the parameters differ
//!   (https://docs.stripe.com/api/idempotent_requests).
//!
//! It keeps PaymentIntents, customers, subscriptions, payouts and balance transactions, so
//! retrieves and lists answer from what was created or seeded, and records every request for
//! the test to assert on. PaymentIntent creations follow a script ([`IntentScript`]): succeed,
//! stay processing, or decline with a 402 card error carrying the PaymentIntent, as Stripe does
//! for a failed `confirm=true` (https://docs.stripe.com/declines).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{json, Value};
use wiremock::http::Url;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// What the next created PaymentIntent does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IntentScript {
    /// `succeeded` (with a charge).
    Succeed,
    /// `processing` (an asynchronous method: the outcome comes by event).
    Process,
    /// 402 card error; the PaymentIntent stays `requires_payment_method`.
    Decline {
        code: String,
        decline_code: String,
        message: String,
    },
}

impl IntentScript {
    /// A decline for insufficient funds.
    pub fn insufficient_funds() -> Self {
        Self::Decline {
            code: "card_declined".into(),
            decline_code: "insufficient_funds".into(),
            message: "Your card has insufficient funds.".into(),
        }
    }
}

/// One request the fake received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Vec<(String, String)>,
    /// The decoded form body (POST).
    pub form: Vec<(String, String)>,
    pub idempotency_key: Option<String>,
    pub stripe_version: Option<String>,
    /// What the fake answered.
    pub status: u16,
    /// The request repeated an earlier idempotency key and got the first answer.
    pub replayed: bool,
}

impl Recorded {
    /// The first value of a form field.
    pub fn field(&self, name: &str) -> Option<&str> {
        self.form
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The first request made with an idempotency key and what it was answered.
#[derive(Clone)]
struct FirstUse {
    /// `METHOD /path`.
    target: String,
    form: Vec<(String, String)>,
    status: u16,
    body: Value,
}

#[derive(Default)]
struct State {
    requests: Vec<Recorded>,
    idempotent: HashMap<String, FirstUse>,
    intents: Vec<Value>,
    customers: HashMap<String, Value>,
    subscriptions: HashMap<String, Value>,
    setup_intents: HashMap<String, Value>,
    payouts: Vec<Value>,
    balance_transactions: HashMap<String, Vec<Value>>,
    script: VecDeque<IntentScript>,
    next: u64,
    /// POSTs still to be answered `500 api_error` after they were carried out.
    lose_answers: u32,
    /// POSTs still to be refused with `503` before anything is done.
    refuse_posts: u32,
}

impl State {
    fn id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{prefix}_fake{:08}", self.next)
    }
}

/// The running fake.
pub struct StripeFake {
    server: MockServer,
    state: Arc<Mutex<State>>,
    secret_key: String,
}

struct Responder {
    state: Arc<Mutex<State>>,
    secret_key: String,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn error(
    status: u16,
    kind: &str,
    code: Option<&str>,
    message: &str,
    param: Option<&str>,
) -> (u16, Value) {
    (
        status,
        json!({ "error": { "type": kind, "code": code, "message": message, "param": param } }),
    )
}

fn missing(param: &str) -> (u16, Value) {
    error(
        400,
        "invalid_request_error",
        Some("parameter_missing"),
        &format!("Missing required param: {param}."),
        Some(param),
    )
}

fn now_secs() -> i64 {
    chrono::Utc::now().timestamp()
}

fn get<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `metadata[k]=v` fields as an object.
fn metadata(form: &[(String, String)]) -> Value {
    let mut out = serde_json::Map::new();
    for (k, v) in form {
        if let Some(key) = k
            .strip_prefix("metadata[")
            .and_then(|r| r.strip_suffix(']'))
        {
            out.insert(key.to_owned(), Value::String(v.clone()));
        }
    }
    Value::Object(out)
}

fn pairs(raw: &str) -> Vec<(String, String)> {
    Url::parse(&format!("http://form.invalid/?{raw}"))
        .map(|u| u.query_pairs().into_owned().collect())
        .unwrap_or_default()
}

impl Respond for Responder {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let header = |name: &str| {
            req.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let method = req.method.to_string();
        let path = req.url.path().to_owned();
        let query: Vec<(String, String)> = req.url.query_pairs().into_owned().collect();
        let form = if method == "POST" {
            pairs(&String::from_utf8_lossy(&req.body))
        } else {
            Vec::new()
        };
        let key = header("idempotency-key");
        let mut state = lock(&self.state);
        let mut replayed = false;
        let (status, body) = if header("authorization").as_deref()
            != Some(format!("Bearer {}", self.secret_key).as_str())
        {
            error(
                401,
                "invalid_request_error",
                None,
                "Invalid API Key provided.",
                None,
            )
        } else if method == "POST"
            && !header("content-type")
                .is_some_and(|c| c.starts_with("application/x-www-form-urlencoded"))
        {
            error(
                400,
                "invalid_request_error",
                None,
                "Bodies must be form-encoded.",
                None,
            )
        } else if method == "POST" && key.as_deref().is_none_or(str::is_empty) {
            error(
                400,
                "invalid_request_error",
                Some("idempotency_key_missing"),
                "This fake requires an Idempotency-Key on every POST.",
                None,
            )
        } else if method == "POST" && state.refuse_posts > 0 {
            state.refuse_posts -= 1;
            error(
                503,
                "api_error",
                None,
                "Stripe is unavailable (the fake refuses this request).",
                None,
            )
        } else if let Some(first) = key.as_ref().and_then(|k| state.idempotent.get(k)).cloned() {
            if first.target == format!("{method} {path}") && first.form == form {
                replayed = true;
                (first.status, first.body)
            } else {
                error(
                    400,
                    "idempotency_error",
                    None,
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                    None,
                )
            }
        } else {
            let mut answer = route(&mut state, &method, &path, &query, &form);
            if method == "POST" && state.lose_answers > 0 {
                // Carried out, but the answer is a server error; Stripe keeps that answer
                // for the key, so a retry with the key gets it again.
                state.lose_answers -= 1;
                answer = error(500, "api_error", None, "An unknown error occurred.", None);
            }
            if let Some(k) = &key {
                state.idempotent.insert(
                    k.clone(),
                    FirstUse {
                        target: format!("{method} {path}"),
                        form: form.clone(),
                        status: answer.0,
                        body: answer.1.clone(),
                    },
                );
            }
            answer
        };
        state.requests.push(Recorded {
            method,
            path,
            query,
            form,
            idempotency_key: key,
            stripe_version: header("stripe-version"),
            status,
            replayed,
        });
        let mut template = ResponseTemplate::new(status).set_body_json(body);
        if replayed {
            template = template.insert_header("Idempotent-Replayed", "true");
        }
        template
    }
}

fn route(
    state: &mut State,
    method: &str,
    path: &str,
    query: &[(String, String)],
    form: &[(String, String)],
) -> (u16, Value) {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    match (method, parts.as_slice()) {
        ("POST", ["v1", "customers"]) => {
            let id = state.id("cus");
            let customer = json!({
                "id": id, "object": "customer", "name": get(form, "name"),
                "email": get(form, "email"), "metadata": metadata(form), "created": now_secs(),
            });
            state.customers.insert(id, customer.clone());
            (200, customer)
        }
        ("POST", ["v1", "checkout", "sessions"]) => {
            let Some(customer) = get(form, "customer") else {
                return missing("customer");
            };
            if !state.customers.contains_key(customer) {
                return no_such("customer", customer);
            }
            let Some(mode) = get(form, "mode") else {
                return missing("mode");
            };
            let Some(success) = get(form, "success_url") else {
                return missing("success_url");
            };
            let id = state.id("cs_test");
            let seti = state.id("seti");
            (
                200,
                json!({
                    "id": id, "object": "checkout.session", "status": "open", "mode": mode,
                    "url": format!("https://checkout.stripe.com/c/pay/{id}"),
                    "customer": customer, "setup_intent": seti, "subscription": null,
                    "success_url": success, "cancel_url": get(form, "cancel_url"),
                    "currency": get(form, "currency"),
                    "client_reference_id": get(form, "client_reference_id"),
                    "metadata": metadata(form),
                }),
            )
        }
        ("POST", ["v1", "billing_portal", "sessions"]) => {
            let Some(customer) = get(form, "customer") else {
                return missing("customer");
            };
            if !state.customers.contains_key(customer) {
                return no_such("customer", customer);
            }
            let Some(return_url) = get(form, "return_url") else {
                return missing("return_url");
            };
            let id = state.id("bps");
            (
                200,
                json!({
                    "id": id, "object": "billing_portal.session", "customer": customer,
                    "return_url": return_url,
                    "url": format!("https://billing.stripe.com/p/session/{id}"),
                }),
            )
        }
        ("POST", ["v1", "payment_intents"]) => create_intent(state, form),
        ("GET", ["v1", "payment_intents"]) => {
            let param = |k: &str| query.iter().find(|(q, _)| q == k).map(|(_, v)| v.as_str());
            let created = |k: &str| param(k).and_then(|v| v.parse::<i64>().ok());
            let (gte, lt) = (created("created[gte]"), created("created[lt]"));
            let customer = param("customer");
            let mut items: Vec<Value> = state
                .intents
                .iter()
                .filter(|pi| {
                    let c = pi["created"].as_i64().unwrap_or(0);
                    gte.is_none_or(|g| c >= g)
                        && lt.is_none_or(|l| c < l)
                        && customer.is_none_or(|cus| pi["customer"] == cus)
                })
                .cloned()
                .collect();
            items.reverse(); // newest first, as Stripe lists
            page(items, query)
        }
        ("GET", ["v1", "payment_intents", id]) => {
            match state.intents.iter().find(|pi| pi["id"] == *id) {
                Some(pi) => (200, pi.clone()),
                None => no_such("payment_intent", id),
            }
        }
        ("GET", ["v1", "subscriptions", id]) => match state.subscriptions.get(*id) {
            Some(s) => (200, s.clone()),
            None => no_such("subscription", id),
        },
        ("GET", ["v1", "setup_intents", id]) => match state.setup_intents.get(*id) {
            Some(s) => (200, s.clone()),
            None => no_such("setup_intent", id),
        },
        ("POST", ["v1", "refunds"]) => {
            let Some(pi_id) = get(form, "payment_intent") else {
                return missing("payment_intent");
            };
            let Some(pi) = state.intents.iter_mut().find(|pi| pi["id"] == pi_id) else {
                return no_such("payment_intent", pi_id);
            };
            if pi["status"] != "succeeded" {
                return error(
                    400,
                    "invalid_request_error",
                    Some("charge_not_refundable"),
                    "This PaymentIntent has no successful charge to refund.",
                    Some("payment_intent"),
                );
            }
            let received = pi["amount_received"].as_i64().unwrap_or(0);
            let refunded = pi["amount_refunded"].as_i64().unwrap_or(0);
            let amount = match get(form, "amount").map(str::parse::<i64>) {
                Some(Ok(a)) if a > 0 => a,
                Some(_) => {
                    return error(
                        400,
                        "invalid_request_error",
                        Some("parameter_invalid_integer"),
                        "Invalid integer: amount",
                        Some("amount"),
                    )
                }
                None => received - refunded,
            };
            if amount > received - refunded {
                return error(
                    400,
                    "invalid_request_error",
                    Some("amount_too_large"),
                    "Refund amount is greater than the unrefunded amount.",
                    Some("amount"),
                );
            }
            pi["amount_refunded"] = json!(refunded + amount);
            let id = state.id("re");
            (
                200,
                json!({
                    "id": id, "object": "refund", "status": "succeeded", "amount": amount,
                    "payment_intent": pi_id, "currency": "usd", "created": now_secs(),
                }),
            )
        }
        ("GET", ["v1", "payouts"]) => page(state.payouts.clone(), query),
        ("GET", ["v1", "balance_transactions"]) => {
            let payout = query
                .iter()
                .find(|(k, _)| k == "payout")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            page(
                state
                    .balance_transactions
                    .get(&payout)
                    .cloned()
                    .unwrap_or_default(),
                query,
            )
        }
        _ => error(
            404,
            "invalid_request_error",
            None,
            &format!("Unrecognized request URL ({method}: {path})."),
            None,
        ),
    }
}

fn no_such(kind: &str, id: &str) -> (u16, Value) {
    error(
        404,
        "invalid_request_error",
        Some("resource_missing"),
        &format!("No such {kind}: '{id}'"),
        Some("id"),
    )
}

/// A list page honouring `limit` and `starting_after` (items newest first).
fn page(items: Vec<Value>, query: &[(String, String)]) -> (u16, Value) {
    let q = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    let limit = q("limit")
        .and_then(|l| l.parse::<usize>().ok())
        .unwrap_or(10);
    let start = match q("starting_after") {
        Some(after) => items
            .iter()
            .position(|i| i["id"] == after)
            .map(|p| p + 1)
            .unwrap_or(items.len()),
        None => 0,
    };
    let rest = &items[start.min(items.len())..];
    let data: Vec<Value> = rest.iter().take(limit).cloned().collect();
    (
        200,
        json!({ "object": "list", "data": data, "has_more": rest.len() > limit, "url": "/v1" }),
    )
}

fn create_intent(state: &mut State, form: &[(String, String)]) -> (u16, Value) {
    let Some(amount) = get(form, "amount") else {
        return missing("amount");
    };
    let Ok(amount) = amount.parse::<i64>() else {
        return error(
            400,
            "invalid_request_error",
            Some("parameter_invalid_integer"),
            "Invalid integer: amount",
            Some("amount"),
        );
    };
    if amount < 1 {
        return error(
            400,
            "invalid_request_error",
            Some("amount_too_small"),
            "Amount must be at least 1.",
            Some("amount"),
        );
    }
    let Some(currency) = get(form, "currency") else {
        return missing("currency");
    };
    if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
        return error(
            400,
            "invalid_request_error",
            Some("parameter_invalid_string"),
            "Invalid currency.",
            Some("currency"),
        );
    }
    let confirm = get(form, "confirm") == Some("true");
    let off_session = get(form, "off_session") == Some("true");
    let method = get(form, "payment_method");
    if confirm && method.is_none() {
        return missing("payment_method");
    }
    if off_session && !confirm {
        return error(
            400,
            "invalid_request_error",
            Some("parameter_invalid_empty"),
            "off_session requires confirm=true.",
            Some("off_session"),
        );
    }
    if let Some(customer) = get(form, "customer") {
        if !state.customers.contains_key(customer) && !customer.starts_with("cus_seeded") {
            return no_such("customer", customer);
        }
    }
    let id = state.id("pi");
    let charge = state.id("ch");
    let script = if confirm {
        state.script.pop_front().unwrap_or(IntentScript::Succeed)
    } else {
        IntentScript::Process
    };
    let mut pi = json!({
        "id": id, "object": "payment_intent", "amount": amount, "amount_received": 0,
        "amount_refunded": 0, "currency": currency, "customer": get(form, "customer"),
        "payment_method": method, "description": get(form, "description"),
        "metadata": metadata(form), "created": now_secs(), "latest_charge": null,
        "last_payment_error": null, "livemode": false,
        "status": if confirm { "requires_confirmation" } else { "requires_payment_method" },
    });
    let answer = match script {
        IntentScript::Succeed => {
            pi["status"] = json!("succeeded");
            pi["amount_received"] = json!(amount);
            pi["latest_charge"] = json!(charge);
            (200, pi.clone())
        }
        IntentScript::Process => {
            if confirm {
                pi["status"] = json!("processing");
                pi["latest_charge"] = json!(charge);
            }
            (200, pi.clone())
        }
        IntentScript::Decline {
            code,
            decline_code,
            message,
        } => {
            let err = json!({
                "type": "card_error", "code": code, "decline_code": decline_code,
                "message": message, "charge": charge,
            });
            pi["status"] = json!("requires_payment_method");
            pi["latest_charge"] = json!(charge);
            pi["last_payment_error"] = err.clone();
            let mut body = err;
            body["payment_intent"] = pi.clone();
            (402, json!({ "error": body }))
        }
    };
    state.intents.push(pi);
    answer
}

impl StripeFake {
    /// Starts the fake with a random secret key.
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        let secret_key = format!("sk_test_fake{}", uuid::Uuid::new_v4().simple());
        Mock::given(wiremock::matchers::any())
            .respond_with(Responder {
                state: state.clone(),
                secret_key: secret_key.clone(),
            })
            .mount(&server)
            .await;
        Self {
            server,
            state,
            secret_key,
        }
    }

    /// The API base URL (billing's `psp.stripe.api_base`).
    pub fn url(&self) -> String {
        self.server.uri()
    }

    /// The secret key the fake accepts.
    pub fn secret_key(&self) -> String {
        self.secret_key.clone()
    }

    /// What the next confirmed PaymentIntents do, in order (then: succeed).
    pub fn script_intents(&self, outcomes: impl IntoIterator<Item = IntentScript>) {
        lock(&self.state).script.extend(outcomes);
    }

    /// The next `n` POSTs are carried out (a PaymentIntent is created …) but answered `500
    /// api_error`, and a retry with the same idempotency key gets that answer again, as Stripe
    /// keeps a key's first answer (<https://docs.stripe.com/api/idempotent_requests>).
    pub fn lose_next_answers(&self, n: u32) {
        lock(&self.state).lose_answers += n;
    }

    /// The next `n` POSTs are answered `503` and not carried out (Stripe unreachable).
    pub fn refuse_next_posts(&self, n: u32) {
        lock(&self.state).refuse_posts += n;
    }

    /// Forgets every idempotency key, as Stripe may once a key is 24 hours old
    /// (<https://docs.stripe.com/api/idempotent_requests>): a request with an old key is then
    /// carried out as new.
    pub fn forget_idempotency_keys(&self) {
        lock(&self.state).idempotent.clear();
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    /// The requests to `method path` (path exact).
    pub fn requests_to(&self, method: &str, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path == path)
            .collect()
    }

    /// A PaymentIntent as the fake holds it.
    pub fn intent(&self, id: &str) -> Option<Value> {
        lock(&self.state)
            .intents
            .iter()
            .find(|pi| pi["id"] == id)
            .cloned()
    }

    /// Every PaymentIntent, oldest first.
    pub fn intents(&self) -> Vec<Value> {
        lock(&self.state).intents.clone()
    }

    /// Adds (or replaces) a PaymentIntent, e.g. one a customer paid on a hosted page.
    pub fn put_intent(&self, intent: Value) {
        let mut state = lock(&self.state);
        state.intents.retain(|pi| pi["id"] != intent["id"]);
        state.intents.push(intent);
    }

    /// Sets a PaymentIntent's status (what a retrieve answers from now on).
    pub fn set_intent_status(&self, id: &str, status: &str) {
        let mut state = lock(&self.state);
        if let Some(pi) = state.intents.iter_mut().find(|pi| pi["id"] == id) {
            pi["status"] = json!(status);
            if status == "succeeded" {
                pi["amount_received"] = pi["amount"].clone();
            }
        }
    }

    /// Adds (or replaces) a SetupIntent (what a retrieve answers): the card a setup-mode
    /// Checkout Session saved.
    pub fn put_setup_intent(&self, setup_intent: Value) {
        let id = setup_intent["id"].as_str().unwrap_or_default().to_owned();
        lock(&self.state).setup_intents.insert(id, setup_intent);
    }

    /// Adds (or replaces) a subscription (what a retrieve answers).
    pub fn put_subscription(&self, subscription: Value) {
        let id = subscription["id"].as_str().unwrap_or_default().to_owned();
        lock(&self.state).subscriptions.insert(id, subscription);
    }

    /// Adds a payout and the balance transactions it settled.
    pub fn add_payout(&self, payout: Value, transactions: Vec<Value>) {
        let mut state = lock(&self.state);
        let id = payout["id"].as_str().unwrap_or_default().to_owned();
        state.payouts.push(payout);
        state.balance_transactions.insert(id, transactions);
    }

    /// A Stripe event (https://docs.stripe.com/api/events/object) of `event_type` about
    /// `object`, created at `created` (unix seconds).
    pub fn event(id: &str, event_type: &str, created: i64, object: Value) -> Value {
        json!({
            "id": id,
            "object": "event",
            "api_version": "2024-06-20",
            "created": created,
            "data": { "object": object },
            "livemode": false,
            "pending_webhooks": 1,
            "request": { "id": null, "idempotency_key": null },
            "type": event_type,
        })
    }
}
