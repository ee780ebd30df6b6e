//! Prometheus metrics. Each service owns a [`Registry`]; names follow
//! `tollgate_<noun>_<unit>_total|_seconds|_bytes` with few, bounded labels (never a tenant or
//! job id).

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry, TextEncoder,
};

/// HTTP server metrics, labelled by service, route pattern, method and status.
#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: IntCounterVec,
    pub duration: HistogramVec,
}

impl HttpMetrics {
    /// Registers `tollgate_http_requests_total` and `tollgate_http_request_duration_seconds`.
    pub fn register(registry: &Registry) -> Result<Self, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new("tollgate_http_requests_total", "HTTP requests served"),
            &["route", "method", "status"],
        )?;
        let duration = HistogramVec::new(
            HistogramOpts::new(
                "tollgate_http_request_duration_seconds",
                "HTTP request latency, seconds",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
            ]),
            &["route", "method"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        Ok(Self { requests, duration })
    }
}

/// A registry with the service name as a constant label.
pub fn registry(service: &str) -> Registry {
    let labels = [("service".to_owned(), service.to_owned())]
        .into_iter()
        .collect();
    Registry::new_custom(None, Some(labels)).unwrap_or_default()
}

/// The text exposition of everything in `registry`.
pub fn render(registry: &Registry) -> String {
    let mut buffer = Vec::new();
    let encoder = TextEncoder::new();
    if encoder.encode(&registry.gather(), &mut buffer).is_err() {
        return String::new();
    }
    String::from_utf8(buffer).unwrap_or_default()
}
