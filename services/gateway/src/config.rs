//! The gateway's configuration (env prefix `GATEWAY__`); every key and default is in [`DEFAULTS`].

use serde::Deserialize;
use tollgate_runtime::config::{self, ConfigError};
use tollgate_storage::pool::DatabaseConfig;

/// Compiled-in defaults.
pub const DEFAULTS: &str = r#"
intake_url = "http://127.0.0.1:8081"
billing_url = "http://127.0.0.1:8083"
webhook_url = "http://127.0.0.1:8084"
internal_token = ""
max_body_bytes = 1048576
upstream_timeout_ms = 10000
key_cache_ttl_ms = 2000

[http]
host = "127.0.0.1"
port = 8080
workers = 2

[database]
url = "postgres://postgres@127.0.0.1:5432/tollgate"
pool_size = 8
acquire_timeout_ms = 2000

[metering]
enabled = true
buffer = 100000
batch_size = 1000
flush_interval_ms = 20
shutdown_timeout_ms = 10000
"#;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct GatewayConfig {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    /// Base URL of job-intake.
    pub intake_url: String,
    /// Base URL of billing (`/v1/catalog`, `/v1/plans`, `/v1/subscriptions`, `/v1/invoices`,
    /// `/v1/billing`).
    pub billing_url: String,
    /// Base URL of the webhook service (`/v1/webhook-endpoints`, `/v1/webhook-deliveries`).
    pub webhook_url: String,
    /// Sent to internal services in `x-tollgate-internal-token`; a secret.
    pub internal_token: String,
    /// Largest request body accepted, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Upstream request timeout, milliseconds.
    pub upstream_timeout_ms: u64,
    /// How long a verified API key is trusted before it is looked up again, milliseconds.
    /// A revoked key stops working within this time.
    pub key_cache_ttl_ms: u64,
    /// Traffic metering (see [`MeteringConfig`]).
    pub metering: MeteringConfig,
}

/// Traffic metering: how request records are buffered and written to the usage ledger
/// (SPEC "Usage metering and the ledger"; see `crate::metering`).
#[derive(Debug, Clone, Deserialize)]
pub struct MeteringConfig {
    /// Meter requests. The SPEC meters every request with no exemptions: keep this on. Off
    /// exists only so that the benchmark can measure the metering's own cost on gateway
    /// latency against an unmetered gateway in the same run (`scripts/bench-events.sh`).
    pub enabled: bool,
    /// Request records held in memory waiting to be written; when full, new records are
    /// dropped and counted in `tollgate_traffic_dropped_total`.
    pub buffer: usize,
    /// Most records written in one statement.
    pub batch_size: usize,
    /// Longest a record waits for its batch to fill before the batch is written, milliseconds.
    /// Default 20: at 1,000 requests/s a 200 ms interval made each write 750 ledger rows, one
    /// statement holding a core for tens of milliseconds, and the submissions queued behind it
    /// (submit p99 41–69 ms against 73–131 ms, the same CPU per job; docs/BENCHMARKS.md).
    pub flush_interval_ms: u64,
    /// On shutdown, how long buffered records may take to be written before the rest are
    /// given up (counted and logged), milliseconds.
    pub shutdown_timeout_ms: u64,
}

/// Where the HTTP server listens. Port 0 picks a free port.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    pub host: String,
    pub port: u16,
    pub workers: usize,
}

impl GatewayConfig {
    /// Loads and validates the configuration.
    pub fn load() -> Result<Self, ConfigError> {
        let cfg: Self = config::load("GATEWAY", DEFAULTS)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The defaults alone (tests override fields).
    pub fn defaults() -> Result<Self, ConfigError> {
        config::defaults(DEFAULTS)
    }

    /// Checks values that deserialize but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::require(
            url::Url::parse(&self.intake_url).is_ok(),
            "intake_url",
            "must be an absolute URL",
        )?;
        config::require(
            url::Url::parse(&self.billing_url).is_ok(),
            "billing_url",
            "must be an absolute URL",
        )?;
        config::require(
            url::Url::parse(&self.webhook_url).is_ok(),
            "webhook_url",
            "must be an absolute URL",
        )?;
        config::require(
            self.max_body_bytes >= 1024,
            "max_body_bytes",
            "must be at least 1024",
        )?;
        config::require(self.http.workers > 0, "http.workers", "must be at least 1")?;
        config::require(
            self.metering.buffer > 0,
            "metering.buffer",
            "must be at least 1",
        )?;
        config::require(
            (1..=10_000).contains(&self.metering.batch_size),
            "metering.batch_size",
            "must be between 1 and 10000",
        )?;
        config::require(
            self.metering.flush_interval_ms > 0,
            "metering.flush_interval_ms",
            "must be at least 1",
        )?;
        Ok(())
    }
}
