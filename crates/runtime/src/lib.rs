//! What every Tollgate service process shares: layered configuration, JSON logging, Prometheus
//! metrics, the standard error body, request ids, health and readiness endpoints, per-key
//! request rate limits, and the shutdown signal.

pub mod config;
pub mod http;
pub mod metrics;
pub mod rate;
pub mod relay;
pub mod shutdown;
pub mod telemetry;
