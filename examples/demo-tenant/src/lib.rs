//! Demo tenant: the tenant-side HTTP service Tollgate's worker calls to execute jobs.
//!
//! It owns the executor end of the wire contract: the worker sends
//! `POST <endpoint>` with `{"job_id", "type", "attempt", "input"}` and an `Idempotency-Key`
//! header; a success is HTTP 200 with `{"output", "units"}`, where `units` is what billing
//! counts. Any non-2xx is a failure; the worker retries 5xx/429/408 and gives up on other 4xx.
//!
//! Endpoints: `/wordcount` (real work on real text, units = tokens), `/flaky` (503 for the
//! first `fail_times` attempts, then as `/wordcount`), `/unavailable` (always 503), `/reject`
//! (always 400) and `GET /healthz`.
//!
//! It also receives Tollgate's outbound webhooks ([`webhooks`]): `POST /webhooks` verifies
//! the Standard Webhooks signature and counts each event type, `GET /webhooks/received` shows
//! the counts.

use std::collections::HashMap;
use std::fmt;
use std::net::TcpListener;

use actix_web::http::StatusCode;
use actix_web::{dev::Server, web, App, HttpRequest, HttpResponse, HttpServer, ResponseError};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub mod webhooks;

pub use webhooks::WebhookReceiver;

/// Largest request body accepted, in bytes.
const MAX_BODY_BYTES: usize = 8 * 1024 * 1024;
/// How many entries `top_words` holds at most.
const TOP_WORDS: usize = 5;

/// Word statistics of one document, the `output` of `/wordcount`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextStats {
    /// Document name as given by the caller, if any.
    pub name: Option<String>,
    /// Length of the text in UTF-8 bytes.
    pub bytes: u64,
    /// Number of lines as `str::lines` counts them (a trailing newline opens no new line).
    pub lines: u64,
    /// Number of word tokens (maximal runs of alphanumeric characters).
    pub words: u64,
    /// Number of tokens: words plus one per punctuation/symbol character.
    pub tokens: u64,
    /// Number of distinct words, compared lowercased.
    pub unique_words: u64,
    /// Up to five `(lowercased word, count)` pairs, by count descending then alphabetically.
    pub top_words: Vec<(String, u64)>,
}

/// One token of the demo tokenizer.
#[derive(Debug, PartialEq, Eq)]
enum Token<'a> {
    Word(&'a str),
    Punct(char),
}

/// Splits `text` into tokens: Unicode whitespace separates and is dropped, a maximal run of
/// `char::is_alphanumeric` characters is a word, and every other character is a punctuation
/// token of its own. So `"don't!"` is `don`, `'`, `t`, `!`.
fn tokenize(text: &str) -> impl Iterator<Item = Token<'_>> {
    let mut rest = text;
    std::iter::from_fn(move || {
        rest = rest.trim_start();
        let first = rest.chars().next()?;
        if first.is_alphanumeric() {
            let end = rest
                .find(|c: char| !c.is_alphanumeric())
                .unwrap_or(rest.len());
            let (word, tail) = rest.split_at(end);
            rest = tail;
            Some(Token::Word(word))
        } else {
            rest = &rest[first.len_utf8()..];
            Some(Token::Punct(first))
        }
    })
}

/// Computes the word statistics of `text`; `name` is copied into the result unchanged.
pub fn analyze(name: Option<&str>, text: &str) -> TextStats {
    let (mut words, mut tokens) = (0u64, 0u64);
    let mut counts: HashMap<String, u64> = HashMap::new();
    for token in tokenize(text) {
        tokens += 1;
        if let Token::Word(word) = token {
            words += 1;
            *counts.entry(word.to_lowercase()).or_default() += 1;
        }
    }
    let unique_words = counts.len() as u64;
    let mut top_words: Vec<(String, u64)> = counts.into_iter().collect();
    top_words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    top_words.truncate(TOP_WORDS);
    TextStats {
        name: name.map(str::to_owned),
        bytes: text.len() as u64,
        lines: text.lines().count() as u64,
        words,
        tokens,
        unique_words,
        top_words,
    }
}

/// What the worker sends to every job endpoint.
#[derive(Debug, Deserialize)]
struct JobRequest {
    job_id: String,
    #[serde(rename = "type")]
    job_type: String,
    attempt: u32,
    input: Value,
}

/// `input` of `/wordcount`.
#[derive(Debug, Deserialize)]
struct WordcountInput {
    text: String,
    name: Option<String>,
}

/// `input` of `/flaky`: the `/wordcount` input plus how many attempts must fail first.
#[derive(Debug, Deserialize)]
struct FlakyInput {
    #[serde(flatten)]
    doc: WordcountInput,
    #[serde(default)]
    fail_times: u32,
}

/// Success body the worker expects.
#[derive(Debug, Serialize)]
struct JobResponse<T> {
    output: T,
    units: u64,
}

/// Failures, answered as `{"error":{"code","message"}}`.
#[derive(Debug)]
enum ApiError {
    /// 400: the job can never succeed with this input.
    InvalidInput(String),
    /// 503: try again later.
    Unavailable(String),
}

impl ApiError {
    fn code(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "INVALID_INPUT",
            Self::Unavailable(_) => "UNAVAILABLE",
        }
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::InvalidInput(msg) | Self::Unavailable(msg) => f.write_str(msg),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            Self::InvalidInput(_) => StatusCode::BAD_REQUEST,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status_code())
            .json(json!({"error": {"code": self.code(), "message": self.to_string()}}))
    }
}

/// Parses a job's `input` into the endpoint's input type; a mismatch is a permanent 400.
fn parse_input<T: for<'de> Deserialize<'de>>(input: Value) -> Result<T, ApiError> {
    serde_json::from_value(input).map_err(|e| ApiError::InvalidInput(format!("input: {e}")))
}

fn wordcount_response(doc: &WordcountInput) -> HttpResponse {
    let stats = analyze(doc.name.as_deref(), &doc.text);
    let units = stats.tokens;
    HttpResponse::Ok().json(JobResponse {
        output: stats,
        units,
    })
}

fn log_job(http: &HttpRequest, job: &JobRequest) {
    let key = http
        .headers()
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok());
    tracing::info!(job_id = %job.job_id, job_type = %job.job_type, attempt = job.attempt,
        idempotency_key = ?key, path = %http.path(), "job received");
}

async fn wordcount(
    http: HttpRequest,
    job: web::Json<JobRequest>,
) -> Result<HttpResponse, ApiError> {
    let job = job.into_inner();
    log_job(&http, &job);
    let doc: WordcountInput = parse_input(job.input)?;
    Ok(wordcount_response(&doc))
}

async fn flaky(http: HttpRequest, job: web::Json<JobRequest>) -> Result<HttpResponse, ApiError> {
    let job = job.into_inner();
    log_job(&http, &job);
    let input: FlakyInput = parse_input(job.input)?;
    if job.attempt <= input.fail_times {
        return Err(ApiError::Unavailable(format!(
            "attempt {} of the first {} fails on purpose",
            job.attempt, input.fail_times
        )));
    }
    Ok(wordcount_response(&input.doc))
}

async fn unavailable() -> HttpResponse {
    ApiError::Unavailable("this endpoint is always unavailable".into()).error_response()
}

async fn reject() -> HttpResponse {
    ApiError::InvalidInput("this endpoint rejects every job".into()).error_response()
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().finish()
}

/// Registers every job route; shared by [`serve`] and the tests.
fn configure(cfg: &mut web::ServiceConfig) {
    let json = web::JsonConfig::default()
        .limit(MAX_BODY_BYTES)
        .error_handler(|err, _| ApiError::InvalidInput(format!("request body: {err}")).into());
    cfg.app_data(json)
        .route("/wordcount", web::post().to(wordcount))
        .route("/flaky", web::post().to(flaky))
        .route("/unavailable", web::post().to(unavailable))
        .route("/reject", web::post().to(reject))
        .route("/healthz", web::get().to(healthz));
}

/// Starts the demo tenant on an already-bound listener, its webhook routes backed by
/// `webhooks`; returns the server future handle.
///
/// The server stops gracefully on SIGINT/SIGTERM or through its `ServerHandle`.
pub fn serve(listener: TcpListener, webhooks: WebhookReceiver) -> std::io::Result<Server> {
    let webhooks = web::Data::new(webhooks);
    Ok(HttpServer::new(move || {
        App::new()
            .configure(configure)
            .configure(|cfg| webhooks::configure(cfg, webhooks.clone()))
    })
    .listen(listener)?
    .run())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test as actix_test;

    fn pairs(items: &[(&str, u64)]) -> Vec<(String, u64)> {
        items.iter().map(|(w, c)| ((*w).to_owned(), *c)).collect()
    }

    #[test]
    fn analyze_counts_a_small_text() {
        let stats = analyze(Some("pets"), "The cat sat. The cat ran!\nA dog sat.");
        assert_eq!(
            stats,
            TextStats {
                name: Some("pets".into()),
                bytes: 36,
                lines: 2,
                words: 9,
                tokens: 12,
                unique_words: 6,
                top_words: pairs(&[("cat", 2), ("sat", 2), ("the", 2), ("a", 1), ("dog", 1)]),
            }
        );
    }

    #[test]
    fn tokenizer_splits_punctuation_and_unicode() {
        let stats = analyze(None, "Don't panic — naïve café.");
        assert_eq!(
            (stats.bytes, stats.lines, stats.words, stats.tokens),
            (29, 1, 5, 8)
        );
        assert_eq!(analyze(None, "").top_words, vec![]);
        assert_eq!(analyze(None, " \n\t ").tokens, 0);
    }

    async fn post(path: &str, body: Value) -> (StatusCode, Value) {
        let app = actix_test::init_service(App::new().configure(configure)).await;
        let req = actix_test::TestRequest::post()
            .uri(path)
            .insert_header(("Idempotency-Key", "job_test"))
            .set_json(body)
            .to_request();
        let resp = actix_test::call_service(&app, req).await;
        let status = resp.status();
        (
            status,
            serde_json::from_slice(&actix_test::read_body(resp).await).unwrap_or(Value::Null),
        )
    }

    fn job(attempt: u32, input: Value) -> Value {
        json!({"job_id": "job_test", "type": "wordcount", "attempt": attempt, "input": input})
    }

    #[actix_web::test]
    async fn flaky_fails_until_fail_times_then_counts() {
        let input = json!({"text": "hello, world", "fail_times": 1});
        let (status, body) = post("/flaky", job(1, input.clone())).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body["error"]["code"], "UNAVAILABLE");

        let (status, body) = post("/flaky", job(2, input)).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body["units"], 3);
        assert_eq!(body["output"]["words"], 2);
    }

    #[actix_web::test]
    async fn wordcount_rejects_missing_or_malformed_text() {
        for input in [json!({"name": "x"}), json!({"text": 7})] {
            let (status, body) = post("/wordcount", job(1, input)).await;
            assert_eq!(status, StatusCode::BAD_REQUEST);
            assert_eq!(body["error"]["code"], "INVALID_INPUT");
        }
        let (status, body) = post("/wordcount", json!({"nonsense": true})).await;
        assert_eq!(status, StatusCode::BAD_REQUEST);
        assert_eq!(body["error"]["code"], "INVALID_INPUT");
    }
}
