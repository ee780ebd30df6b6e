//! Executors run one attempt of a job. The `http` executor POSTs
//! `{"job_id","type","attempt","input"}` (with `Idempotency-Key: <job id>`) to the tenant's
//! endpoint and expects `200 {"output": …, "units": <integer ≥ 0>}` (`units` defaults to 1).
//!
//! Classification (SPEC "Jobs"): timeouts, connection errors, 5xx, 408 and 429 are retryable;
//! other 4xx and malformed success bodies are permanent.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tollgate_domain::JobId;

/// What one attempt produced.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success {
        output: serde_json::Value,
        units: i64,
    },
    Retryable {
        error: String,
        http_status: Option<u16>,
    },
    Permanent {
        error: String,
        http_status: Option<u16>,
    },
}

#[derive(Serialize)]
struct ExecuteRequest<'a> {
    job_id: String,
    #[serde(rename = "type")]
    job_type: &'a str,
    attempt: u32,
    input: &'a serde_json::Value,
}

#[derive(Deserialize)]
struct ExecuteResponse {
    #[serde(default)]
    output: serde_json::Value,
    units: Option<i64>,
}

/// Runs one attempt against an HTTP endpoint with `timeout`.
pub async fn execute_http(
    client: &reqwest::Client,
    endpoint: &str,
    timeout: Duration,
    job_id: JobId,
    job_type: &str,
    attempt: u32,
    input: &serde_json::Value,
) -> Outcome {
    let body = ExecuteRequest {
        job_id: job_id.to_string(),
        job_type,
        attempt,
        input,
    };
    let response = client
        .post(endpoint)
        .timeout(timeout)
        .header("Idempotency-Key", job_id.to_string())
        .json(&body)
        .send()
        .await;
    let response = match response {
        Ok(r) => r,
        Err(err) if err.is_timeout() => {
            return Outcome::Retryable {
                error: format!("executor timed out after {} ms", timeout.as_millis()),
                http_status: None,
            }
        }
        Err(err) if err.is_connect() => {
            return Outcome::Retryable {
                error: format!("executor connection failed: {}", root_cause(&err)),
                http_status: None,
            }
        }
        Err(err) => {
            return Outcome::Retryable {
                error: format!("executor request failed: {}", root_cause(&err)),
                http_status: None,
            }
        }
    };
    let status = response.status();
    let code = status.as_u16();
    if status.is_success() {
        let bytes = match tokio::time::timeout(timeout, response.bytes()).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(err)) => {
                return Outcome::Retryable {
                    error: format!("reading executor response failed: {err}"),
                    http_status: Some(code),
                }
            }
            Err(_) => {
                return Outcome::Retryable {
                    error: "executor response body timed out".into(),
                    http_status: Some(code),
                }
            }
        };
        return match serde_json::from_slice::<ExecuteResponse>(&bytes) {
            Ok(ExecuteResponse { output, units }) => match units.unwrap_or(1) {
                units if units >= 0 => Outcome::Success { output, units },
                units => Outcome::Permanent {
                    error: format!("executor reported negative units {units}"),
                    http_status: Some(code),
                },
            },
            Err(err) => Outcome::Permanent {
                error: format!("executor answered {code} with an invalid body: {err}"),
                http_status: Some(code),
            },
        };
    }
    let snippet = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect::<String>();
    let error = format!("executor answered {code}: {snippet}");
    if status.is_server_error() || code == 408 || code == 429 {
        Outcome::Retryable {
            error,
            http_status: Some(code),
        }
    } else {
        Outcome::Permanent {
            error,
            http_status: Some(code),
        }
    }
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
