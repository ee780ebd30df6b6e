//! The gateway's configuration (env prefix `GATEWAY__`); every key and default is in [`DEFAULTS`].

use serde::Deserialize;
use tollgate_runtime::config::{self, ConfigError};
use tollgate_storage::pool::DatabaseConfig;

/// Compiled-in defaults.
pub const DEFAULTS: &str = r#"
intake_url = "http://127.0.0.1:8081"
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
"#;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct GatewayConfig {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    /// Base URL of job-intake.
    pub intake_url: String,
    /// Sent to internal services in `x-tollgate-internal-token`; a secret.
    pub internal_token: String,
    /// Largest request body accepted, bytes (413 beyond).
    pub max_body_bytes: usize,
    /// Upstream request timeout, milliseconds.
    pub upstream_timeout_ms: u64,
    /// How long a verified API key is trusted before it is looked up again, milliseconds.
    /// A revoked key stops working within this time.
    pub key_cache_ttl_ms: u64,
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
            self.max_body_bytes >= 1024,
            "max_body_bytes",
            "must be at least 1024",
        )?;
        config::require(self.http.workers > 0, "http.workers", "must be at least 1")?;
        Ok(())
    }
}
