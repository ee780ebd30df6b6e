//! The billing service's configuration (env prefix `BILLING__`); every key and default is in
//! [`DEFAULTS`].

use serde::Deserialize;
use tollgate_messaging::BrokerConfig;
use tollgate_objects::ObjectsConfig;
use tollgate_runtime::config::{self, ConfigError};
use tollgate_storage::pool::DatabaseConfig;

/// Compiled-in defaults.
pub const DEFAULTS: &str = r#"
internal_token = ""

[http]
host = "127.0.0.1"
port = 8083
workers = 2

[database]
url = "postgres://postgres@127.0.0.1:5432/tollgate"
pool_size = 8
acquire_timeout_ms = 2000

[amqp]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"
prefix = "tollgate"
queue_type = "quorum"
retry_tiers = 8
max_reconnect_backoff_ms = 5000

[scheduler]
enabled = true
interval_secs = 60
batch = 500
grace_secs = 259200
thresholds_interval_ms = 1000
reconcile_interval_secs = 86400

[documents]
store = "local"
root = ".tollgate/artifacts"
bucket = ""
signing_key = ""
url_ttl_secs = 300
public_base_url = "http://127.0.0.1:8080"
"#;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct BillingConfig {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    /// Only `prefix` is used: the events exchange is `<prefix>.events` (the outbox relay
    /// publishes billing's events).
    pub amqp: BrokerConfig,
    pub scheduler: SchedulerConfig,
    /// Where invoice PDFs are stored: the same store and signing key as job-intake's
    /// `[artifacts]`, whose `/v1/downloads/{id}` serves the links.
    pub documents: ObjectsConfig,
    /// When non-empty, requests must carry it in `x-tollgate-internal-token` (the gateway
    /// sets it). A secret: from the environment only.
    pub internal_token: String,
}

/// The HTTP API.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    pub host: String,
    pub port: u16,
    pub workers: usize,
}

/// The billing scheduler.
#[derive(Debug, Clone, Deserialize)]
pub struct SchedulerConfig {
    /// Run billing passes in the background (off in tests, which drive runs with a clock).
    pub enabled: bool,
    /// Seconds between billing passes.
    pub interval_secs: u64,
    /// Subscriptions or drafts per transaction.
    pub batch: i64,
    /// How long a draft stays open for late usage after its period ends, seconds (default
    /// 3 days).
    pub grace_secs: i64,
    /// Milliseconds between publishing recorded quota thresholds.
    pub thresholds_interval_ms: u64,
    /// Seconds between scheduled reconciliations of the previous calendar month (UTC) for
    /// every tenant with invoices in it (default daily; discrepancies go to the audit table).
    pub reconcile_interval_secs: u64,
}

impl BillingConfig {
    /// Loads and validates the configuration.
    pub fn load() -> Result<Self, ConfigError> {
        let cfg: Self = config::load("BILLING", DEFAULTS)?;
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
            self.scheduler.batch > 0,
            "scheduler.batch",
            "must be at least 1",
        )?;
        config::require(
            self.scheduler.interval_secs > 0,
            "scheduler.interval_secs",
            "must be at least 1",
        )?;
        config::require(
            self.scheduler.reconcile_interval_secs > 0,
            "scheduler.reconcile_interval_secs",
            "must be at least 1",
        )?;
        config::require(
            (0..=90 * 86_400).contains(&self.scheduler.grace_secs),
            "scheduler.grace_secs",
            "must be between 0 and 7776000 (90 days)",
        )?;
        self.documents.validate("documents").map_err(ConfigError)?;
        Ok(())
    }
}
