//! The Stripe API client: the few calls Tollgate makes, over `reqwest`, with Stripe's
//! conventions built in.
//!
//! - Authentication: `Authorization: Bearer <secret key>`
//!   (<https://docs.stripe.com/api/authentication>).
//! - Versioning: every request pins `Stripe-Version` (<https://docs.stripe.com/api/versioning>)
//!   so an account upgrade cannot change the shapes parsed here.
//! - Bodies are form-encoded with bracketed nested keys ([`super::form`]).
//! - Idempotency: every POST carries the caller's `Idempotency-Key`, the same one on every retry
//!   of that call (<https://docs.stripe.com/api/idempotent_requests>), so a retried create never
//!   creates twice.
//! - Retries: on connection errors, timeouts, 429 and 5xx, with exponential backoff and jitter;
//!   `Stripe-Should-Retry: true|false` overrides the status-based decision and `Retry-After`
//!   (seconds) lengthens the wait (<https://docs.stripe.com/error-low-level#idempotency>,
//!   <https://docs.stripe.com/rate-limits>), as Stripe's own SDKs do. (Stripe replays a saved
//!   500 for a repeated idempotency key and then says `Stripe-Should-Retry: false`.)
//! - Lists auto-paginate with `limit=100`, `starting_after` and `has_more`
//!   (<https://docs.stripe.com/api/pagination>).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, USER_AGENT};
use reqwest::{Method, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use super::error::StripeError;
use super::form::Form;
use super::types::{
    ApiErrorBody, BalanceTransaction, CheckoutSession, CheckoutSessionParams, Customer,
    CustomerParams, ListPage, PaymentIntent, PaymentIntentParams, Payout, PortalSession, Refund,
    SetupIntent, Subscription,
};
use crate::SecretString;

/// The Stripe API version Tollgate is written against (<https://docs.stripe.com/upgrades>).
pub const DEFAULT_API_VERSION: &str = "2024-06-20";

/// Stripe's API host.
pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";

/// Page size for list calls: Stripe's maximum (<https://docs.stripe.com/api/pagination>).
const PAGE_LIMIT: &str = "100";

/// The longest `Retry-After` honoured; a longer one falls back to the computed backoff.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// Stripe idempotency keys are at most 255 characters
/// (<https://docs.stripe.com/api/idempotent_requests>).
const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// Connection settings for [`StripeClient`]. Deserializes from config with every field
/// optional (defaults below); the secret key comes from the environment.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct StripeConfig {
    /// Scheme, host and optional path prefix; default [`DEFAULT_API_BASE`]. Tests point it at a
    /// local fake.
    pub api_base: String,
    /// `sk_live_…` / `sk_test_…` / a restricted `rk_…` key. Required.
    pub secret_key: SecretString,
    /// Per-request timeout (connect + response), milliseconds; default 30 000.
    pub timeout_ms: u64,
    /// Retries after the first attempt on retryable failures; default 2 (so up to 3 attempts).
    pub max_retries: u32,
    /// The pinned `Stripe-Version`; default [`DEFAULT_API_VERSION`].
    pub api_version: String,
}

impl Default for StripeConfig {
    fn default() -> Self {
        Self {
            api_base: DEFAULT_API_BASE.to_owned(),
            secret_key: SecretString::default(),
            timeout_ms: 30_000,
            max_retries: 2,
            api_version: DEFAULT_API_VERSION.to_owned(),
        }
    }
}

impl StripeConfig {
    /// Checks the values; the error names the key under `section` (e.g. `psp.stripe`).
    pub fn validate(&self, section: &str) -> Result<(), String> {
        let base_ok = Url::parse(&self.api_base).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.query().is_none() && u.has_host()
        });
        if !base_ok {
            return Err(format!(
                "{section}.api_base: must be an http(s) URL without a query"
            ));
        }
        if self.secret_key.expose().trim().is_empty() {
            return Err(format!("{section}.secret_key: must be set"));
        }
        if self.timeout_ms == 0 {
            return Err(format!("{section}.timeout_ms: must be positive"));
        }
        if self.api_version.trim().is_empty() {
            return Err(format!("{section}.api_version: must be set"));
        }
        Ok(())
    }
}

/// Exponential backoff: the n-th retry waits a uniformly random time in
/// `[d/2, d]`, `d = min(initial × 2^(n-1), max)` (the jitter rule of Stripe's SDKs).
#[derive(Debug, Clone, Copy)]
struct Backoff {
    initial: Duration,
    max: Duration,
}

impl Backoff {
    const DEFAULT: Self = Self {
        initial: Duration::from_millis(500),
        max: Duration::from_secs(5),
    };

    fn delay(self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let exp = self
            .initial
            .saturating_mul(2u32.saturating_pow(retry.saturating_sub(1)))
            .min(self.max);
        let jittered = exp.mul_f64(0.5 + 0.5 * rand::random::<f64>());
        match retry_after {
            Some(after) if after <= MAX_RETRY_AFTER => jittered.max(after),
            _ => jittered,
        }
    }
}

/// A Stripe API client. Cheap to clone (shares one connection pool).
///
/// Every method returns the object Stripe answered with, or a [`StripeError`] (see its table
/// for which failures are retried). Methods that create take an `idempotency_key`
/// (1..=255 characters): use one key per logical operation, derived from Tollgate ids
/// (`tollgate-inv-{invoice}-attempt-{n}`), and reuse it when the whole call is repeated later
/// after [`StripeError::Unavailable`] — Stripe then replays the first result instead of
/// acting twice (keys are kept for at least 24 h).
#[derive(Clone)]
pub struct StripeClient {
    inner: Arc<Inner>,
    backoff: Backoff,
}

struct Inner {
    http: reqwest::Client,
    api_base: Url,
    max_retries: u32,
}

impl fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeClient")
            .field("api_base", &self.inner.api_base.as_str())
            .field("max_retries", &self.inner.max_retries)
            .finish_non_exhaustive()
    }
}

/// One logical API call, possibly sent several times.
struct Call<'a> {
    method: Method,
    path: &'a [&'a str],
    query: Option<&'a Form>,
    form: Option<&'a Form>,
    idempotency_key: Option<&'a str>,
}

impl StripeClient {
    /// Builds the client (connection pool, default headers).
    ///
    /// # Errors
    /// [`StripeError::Config`] when [`StripeConfig::validate`] fails or the key cannot be a
    /// header value.
    pub fn new(config: StripeConfig) -> Result<Self, StripeError> {
        config.validate("stripe").map_err(StripeError::Config)?;
        let api_base = Url::parse(&config.api_base)
            .map_err(|e| StripeError::Config(format!("stripe.api_base: {e}")))?;

        let mut headers = HeaderMap::new();
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", config.secret_key.expose()))
            .map_err(|_| {
                StripeError::Config("stripe.secret_key: not a valid header value".to_owned())
            })?;
        auth.set_sensitive(true);
        headers.insert(AUTHORIZATION, auth);
        headers.insert(
            "Stripe-Version",
            HeaderValue::from_str(config.api_version.trim()).map_err(|_| {
                StripeError::Config("stripe.api_version: not a valid header value".to_owned())
            })?,
        );
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("tollgate-psp/", env!("CARGO_PKG_VERSION"))),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| StripeError::Config(format!("HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                api_base,
                max_retries: config.max_retries,
            }),
            backoff: Backoff::DEFAULT,
        })
    }

    /// Replaces the retry backoff (default: 500 ms doubling to at most 5 s, with jitter).
    /// Tests shorten it; `Retry-After` still applies.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Backoff {
            initial,
            max: max.max(initial),
        };
        self
    }

    /// `POST /v1/customers` (<https://docs.stripe.com/api/customers/create>).
    pub async fn create_customer(
        &self,
        idempotency_key: &str,
        p: &CustomerParams,
    ) -> Result<Customer, StripeError> {
        self.post(&["v1", "customers"], idempotency_key, &p.to_form())
            .await
    }

    /// `POST /v1/checkout/sessions` (<https://docs.stripe.com/api/checkout/sessions/create>);
    /// the answer's `url` is where to send the customer.
    pub async fn create_checkout_session(
        &self,
        idempotency_key: &str,
        p: &CheckoutSessionParams,
    ) -> Result<CheckoutSession, StripeError> {
        self.post(
            &["v1", "checkout", "sessions"],
            idempotency_key,
            &p.to_form(),
        )
        .await
    }

    /// `POST /v1/billing_portal/sessions` with `customer` (`cus_…`) and `return_url`
    /// (<https://docs.stripe.com/api/customer_portal/sessions/create>): a short-lived "manage
    /// subscription" link.
    pub async fn create_portal_session(
        &self,
        idempotency_key: &str,
        customer: &str,
        return_url: &str,
    ) -> Result<PortalSession, StripeError> {
        let mut form = Form::new();
        form.push("customer", customer)
            .push("return_url", return_url);
        self.post(
            &["v1", "billing_portal", "sessions"],
            idempotency_key,
            &form,
        )
        .await
    }

    /// `POST /v1/payment_intents` (<https://docs.stripe.com/api/payment_intents/create>).
    ///
    /// # Errors
    /// A declined off-session confirmation is [`StripeError::Card`] (402) whose
    /// `payment_intent` is the PaymentIntent Stripe created (status
    /// `requires_payment_method`).
    pub async fn create_payment_intent(
        &self,
        idempotency_key: &str,
        p: &PaymentIntentParams,
    ) -> Result<PaymentIntent, StripeError> {
        self.post(&["v1", "payment_intents"], idempotency_key, &p.to_form())
            .await
    }

    /// `GET /v1/payment_intents/{id}` (<https://docs.stripe.com/api/payment_intents/retrieve>).
    pub async fn retrieve_payment_intent(&self, id: &str) -> Result<PaymentIntent, StripeError> {
        self.get(&["v1", "payment_intents", id], None).await
    }

    /// `GET /v1/setup_intents/{id}` (<https://docs.stripe.com/api/setup_intents/retrieve>):
    /// the card a setup-mode Checkout Session saved (webhook events carry only its id).
    pub async fn retrieve_setup_intent(&self, id: &str) -> Result<SetupIntent, StripeError> {
        self.get(&["v1", "setup_intents", id], None).await
    }

    /// `GET /v1/subscriptions/{id}` (<https://docs.stripe.com/api/subscriptions/retrieve>).
    pub async fn retrieve_subscription(&self, id: &str) -> Result<Subscription, StripeError> {
        self.get(&["v1", "subscriptions", id], None).await
    }

    /// `POST /v1/refunds` (<https://docs.stripe.com/api/refunds/create>) for `payment_intent`
    /// (`pi_…`); `amount` in minor units, `None` refunds what is left.
    pub async fn create_refund(
        &self,
        idempotency_key: &str,
        payment_intent: &str,
        amount: Option<i64>,
    ) -> Result<Refund, StripeError> {
        let mut form = Form::new();
        form.push("payment_intent", payment_intent)
            .opt("amount", amount.map(|a| a.to_string()).as_deref());
        self.post(&["v1", "refunds"], idempotency_key, &form).await
    }

    /// Every PaymentIntent created in `[from, to)`: `GET /v1/payment_intents` with
    /// `created[gte]`/`created[lt]` (unix seconds, rounded up so the bounds are exact for
    /// Stripe's whole-second `created`), all pages
    /// (<https://docs.stripe.com/api/payment_intents/list>).
    pub async fn list_payment_intents(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PaymentIntent>, StripeError> {
        self.list_all(&["v1", "payment_intents"], created_range(from, to))
            .await
    }

    /// Every PaymentIntent of `customer` (`cus_…`) created in `[from, to)`: `GET
    /// /v1/payment_intents` with `customer` and `created[gte]`/`created[lt]` (unix seconds,
    /// rounded up), all pages (<https://docs.stripe.com/api/payment_intents/list>). A list, not
    /// the Search API, whose results may lag by a minute or more
    /// (<https://docs.stripe.com/search#data-freshness>): billing uses it to learn whether a
    /// call whose answer it lost created a PaymentIntent.
    pub async fn list_customer_payment_intents(
        &self,
        customer: &str,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<PaymentIntent>, StripeError> {
        let mut filters = created_range(from, to);
        filters.push("customer", customer);
        self.list_all(&["v1", "payment_intents"], filters).await
    }

    /// Every payout created in `[from, to)` (`created[gte]`/`created[lt]`, unix seconds), all
    /// pages (<https://docs.stripe.com/api/payouts/list>).
    pub async fn list_payouts(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> Result<Vec<Payout>, StripeError> {
        self.list_all(&["v1", "payouts"], created_range(from, to))
            .await
    }

    /// Every balance transaction settled by `payout` (`po_…`), all pages
    /// (<https://docs.stripe.com/api/balance_transactions/list>, `payout` filter: automatic
    /// payouts only).
    pub async fn list_balance_transactions(
        &self,
        payout: &str,
    ) -> Result<Vec<BalanceTransaction>, StripeError> {
        let mut filters = Form::new();
        filters.push("payout", payout);
        self.list_all(&["v1", "balance_transactions"], filters)
            .await
    }

    async fn post<T: DeserializeOwned>(
        &self,
        path: &[&str],
        idempotency_key: &str,
        form: &Form,
    ) -> Result<T, StripeError> {
        if idempotency_key.is_empty() || idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(StripeError::InvalidRequest {
                status: 400,
                error: Box::new(ApiErrorBody {
                    r#type: "invalid_request_error".to_owned(),
                    message: Some(format!(
                        "Idempotency-Key must be 1..={MAX_IDEMPOTENCY_KEY_LEN} characters (not sent)"
                    )),
                    param: Some("Idempotency-Key".to_owned()),
                    ..ApiErrorBody::default()
                }),
            });
        }
        self.call(Call {
            method: Method::POST,
            path,
            query: None,
            form: Some(form),
            idempotency_key: Some(idempotency_key),
        })
        .await
    }

    async fn get<T: DeserializeOwned>(
        &self,
        path: &[&str],
        query: Option<&Form>,
    ) -> Result<T, StripeError> {
        self.call(Call {
            method: Method::GET,
            path,
            query,
            form: None,
            idempotency_key: None,
        })
        .await
    }

    /// Follows `has_more`/`starting_after` until the list is exhausted.
    async fn list_all<T: DeserializeOwned + Listed>(
        &self,
        path: &[&str],
        filters: Form,
    ) -> Result<Vec<T>, StripeError> {
        let mut all = Vec::new();
        let mut starting_after: Option<String> = None;
        loop {
            let mut query = filters.clone();
            query.push("limit", PAGE_LIMIT);
            if let Some(after) = &starting_after {
                query.push("starting_after", after.as_str());
            }
            let page: ListPage<T> = self.get(path, Some(&query)).await?;
            let more = page.has_more;
            let last = page.data.last().map(|item| item.id().to_owned());
            all.extend(page.data);
            if !more {
                return Ok(all);
            }
            match last {
                Some(last) if starting_after.as_deref() != Some(last.as_str()) => {
                    starting_after = Some(last);
                }
                _ => {
                    return Err(StripeError::Decode(format!(
                        "/{}: has_more without a new page",
                        path.join("/")
                    )))
                }
            }
        }
    }

    /// Sends `call`, retrying as the module docs describe, and decodes the answer.
    async fn call<T: DeserializeOwned>(&self, call: Call<'_>) -> Result<T, StripeError> {
        let url = self.url(call.path, call.query);
        let path = url.path().to_owned();
        let mut attempt: u32 = 0;
        loop {
            attempt += 1;
            let (error, retryable, retry_after) = match self.send_once(&call, url.clone()).await {
                Ok((status, headers, body)) if status.is_success() => {
                    return serde_json::from_slice(&body).map_err(|e| {
                        StripeError::Decode(format!(
                            "{} {path}: {e}{}",
                            call.method,
                            request_id_note(&headers)
                        ))
                    });
                }
                Ok((status, headers, body)) => {
                    let should_retry = headers
                        .get("Stripe-Should-Retry")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| match v.trim() {
                            "true" => Some(true),
                            "false" => Some(false),
                            _ => None,
                        });
                    let retryable = should_retry.unwrap_or(
                        status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error(),
                    );
                    let retry_after = headers
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let error = error_from_response(status, &headers, &body, attempt);
                    (error, retryable, retry_after)
                }
                Err(e) => (
                    StripeError::Unavailable(format!(
                        "{} {path}: {e} (after {attempt} attempt{})",
                        call.method,
                        if attempt == 1 { "" } else { "s" }
                    )),
                    true,
                    None,
                ),
            };
            if !retryable || attempt > self.inner.max_retries {
                return Err(error);
            }
            let delay = self.backoff.delay(attempt, retry_after);
            tracing::warn!(
                method = %call.method,
                path = %path,
                attempt,
                delay_ms = delay.as_millis() as u64,
                error = %error,
                "Stripe request failed; retrying"
            );
            tokio::time::sleep(delay).await;
        }
    }

    async fn send_once(
        &self,
        call: &Call<'_>,
        url: Url,
    ) -> Result<(StatusCode, HeaderMap, Vec<u8>), reqwest::Error> {
        let mut request = self.inner.http.request(call.method.clone(), url);
        if let Some(key) = call.idempotency_key {
            request = request.header("Idempotency-Key", key);
        }
        if let Some(form) = call.form {
            request = request
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .body(form.encode());
        }
        let response = request.send().await?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response.bytes().await?;
        Ok((status, headers, body.to_vec()))
    }

    fn url(&self, path: &[&str], query: Option<&Form>) -> Url {
        let mut url = self.inner.api_base.clone();
        if let Ok(mut segments) = url.path_segments_mut() {
            // Each segment is percent-encoded, so an id can never change the path.
            segments.pop_if_empty().extend(path);
        }
        url.set_query(query.map(Form::encode).as_deref());
        url
    }
}

/// Objects that list endpoints page through by id.
trait Listed {
    fn id(&self) -> &str;
}

impl Listed for PaymentIntent {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Listed for Payout {
    fn id(&self) -> &str {
        &self.id
    }
}

impl Listed for BalanceTransaction {
    fn id(&self) -> &str {
        &self.id
    }
}

/// `created[gte]`/`created[lt]` for `[from, to)`, in whole unix seconds rounded up.
fn created_range(from: DateTime<Utc>, to: DateTime<Utc>) -> Form {
    let mut form = Form::new();
    form.push("created[gte]", ceil_secs(from).to_string())
        .push("created[lt]", ceil_secs(to).to_string());
    form
}

fn ceil_secs(t: DateTime<Utc>) -> i64 {
    t.timestamp() + i64::from(t.timestamp_subsec_nanos() > 0)
}

fn request_id_note(headers: &HeaderMap) -> String {
    headers
        .get("Request-Id")
        .and_then(|v| v.to_str().ok())
        .map(|id| format!(" (Stripe request {id})"))
        .unwrap_or_default()
}

/// Maps a non-2xx answer to its [`StripeError`] (see the table there).
fn error_from_response(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    attempts: u32,
) -> StripeError {
    #[derive(Deserialize)]
    struct Envelope {
        error: ApiErrorBody,
    }
    let error = serde_json::from_slice::<Envelope>(body)
        .map(|e| e.error)
        .unwrap_or_else(|_| ApiErrorBody {
            r#type: "api_error".to_owned(),
            message: Some(format!(
                "HTTP {status} with a body that is not a Stripe error: {}",
                String::from_utf8_lossy(&body[..body.len().min(200)])
            )),
            ..ApiErrorBody::default()
        });
    let message = || {
        format!(
            "{} ({status}){}",
            error.message.as_deref().unwrap_or("no message"),
            request_id_note(headers)
        )
    };
    match status.as_u16() {
        402 => StripeError::Card(Box::new(error)),
        401 | 403 => StripeError::Authentication(message()),
        429 | 500..=599 => StripeError::Unavailable(format!(
            "{} after {attempts} attempt{}",
            message(),
            if attempts == 1 { "" } else { "s" }
        )),
        code @ 400..=499 => StripeError::InvalidRequest {
            status: code,
            error: Box::new(error),
        },
        _ => StripeError::Decode(format!("unexpected HTTP status {}", message())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_with_jitter_and_honours_retry_after() {
        let b = Backoff::DEFAULT;
        for _ in 0..100 {
            let d1 = b.delay(1, None);
            assert!(d1 >= Duration::from_millis(250) && d1 <= Duration::from_millis(500));
            let d3 = b.delay(3, None);
            assert!(d3 >= Duration::from_millis(1000) && d3 <= Duration::from_millis(2000));
            let d10 = b.delay(10, None);
            assert!(d10 >= Duration::from_millis(2500) && d10 <= Duration::from_secs(5));
            assert_eq!(
                b.delay(1, Some(Duration::from_secs(7))),
                Duration::from_secs(7)
            );
            // An unreasonable Retry-After is not obeyed.
            assert!(b.delay(1, Some(Duration::from_secs(3600))) <= Duration::from_millis(500));
        }
    }

    #[test]
    fn created_range_rounds_up() {
        let from = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let to = DateTime::from_timestamp(1_700_086_400, 1).unwrap();
        let form = created_range(from, to);
        assert_eq!(
            form.pairs(),
            &[
                ("created[gte]".to_owned(), "1700000000".to_owned()),
                ("created[lt]".to_owned(), "1700086401".to_owned())
            ]
        );
    }

    #[test]
    fn config_validation_names_the_key() {
        let ok = StripeConfig {
            secret_key: SecretString::new("sk_test_1"),
            ..StripeConfig::default()
        };
        assert_eq!(ok.validate("psp.stripe"), Ok(()));
        let no_key = StripeConfig::default();
        assert_eq!(
            no_key.validate("psp.stripe"),
            Err("psp.stripe.secret_key: must be set".to_owned())
        );
        let bad_base = StripeConfig {
            api_base: "ftp://example.com".into(),
            ..ok.clone()
        };
        assert!(bad_base
            .validate("s")
            .unwrap_err()
            .starts_with("s.api_base"));
        assert!(matches!(
            StripeClient::new(no_key),
            Err(StripeError::Config(_))
        ));
        let parsed: StripeConfig =
            serde_json::from_str(r#"{"secret_key":"sk_test_2","max_retries":5}"#).unwrap();
        assert_eq!(parsed.max_retries, 5);
        assert_eq!(parsed.api_base, DEFAULT_API_BASE);
        assert_eq!(parsed.api_version, DEFAULT_API_VERSION);
        assert!(!format!("{parsed:?}").contains("sk_test_2"));
    }

    #[test]
    fn urls_escape_ids() {
        let client = StripeClient::new(StripeConfig {
            api_base: "http://127.0.0.1:9/prefix/".into(),
            secret_key: SecretString::new("sk_test_1"),
            ..StripeConfig::default()
        })
        .unwrap();
        let url = client.url(&["v1", "payment_intents", "pi_1/../../x?y"], None);
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:9/prefix/v1/payment_intents/pi_1%2F..%2F..%2Fx%3Fy"
        );
    }
}
