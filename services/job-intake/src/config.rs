//! job-intake's configuration (env prefix `INTAKE__`). Every key and its default is in
//! [`DEFAULTS`]; `docs/CONFIGURATION.md` lists them for operators.

use serde::Deserialize;
use tollgate_messaging::BrokerConfig;
use tollgate_runtime::config::{self, ConfigError};
use tollgate_storage::pool::DatabaseConfig;

/// Compiled-in defaults.
pub const DEFAULTS: &str = r#"
internal_token = ""
catalog_cache_ttl_ms = 5000
max_body_bytes = 2097152

[http]
host = "127.0.0.1"
port = 8081
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

[group_commit]
writers = 4
max_batch = 256

[relay]
batch_size = 500
poll_interval_ms = 250
purge_after_secs = 86400
"#;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct IntakeConfig {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub amqp: BrokerConfig,
    pub relay: RelayConfig,
    pub group_commit: GroupCommitConfig,
    /// When non-empty, requests must carry it in `x-tollgate-internal-token` (set by the
    /// gateway). A secret: from the environment only.
    pub internal_token: String,
    /// How long a job type read from the catalog is reused, milliseconds.
    pub catalog_cache_ttl_ms: u64,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
}

/// Where the HTTP server listens. Port 0 picks a free port (tests).
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    pub host: String,
    pub port: u16,
    /// actix worker threads.
    pub workers: usize,
}

/// Submissions are inserted in batches: concurrent requests share one transaction.
#[derive(Debug, Clone, Deserialize)]
pub struct GroupCommitConfig {
    /// Writer tasks (transactions in flight at once).
    pub writers: usize,
    /// Most submissions per transaction.
    pub max_batch: usize,
}

/// Outbox relay settings.
#[derive(Debug, Clone, Deserialize)]
pub struct RelayConfig {
    /// Messages claimed and published per transaction.
    pub batch_size: i64,
    /// Fallback polling period when no local submission wakes the relay, milliseconds.
    pub poll_interval_ms: u64,
    /// Published rows older than this are deleted, seconds.
    pub purge_after_secs: i64,
}

impl IntakeConfig {
    /// Loads and validates the configuration.
    pub fn load() -> Result<Self, ConfigError> {
        let cfg: Self = config::load("INTAKE", DEFAULTS)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Checks values that deserialize but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::require(
            self.database.pool_size > 0,
            "database.pool_size",
            "must be at least 1",
        )?;
        config::require(
            self.relay.batch_size > 0,
            "relay.batch_size",
            "must be at least 1",
        )?;
        config::require(self.http.workers > 0, "http.workers", "must be at least 1")?;
        config::require(
            self.group_commit.writers > 0,
            "group_commit.writers",
            "must be at least 1",
        )?;
        config::require(
            self.group_commit.max_batch > 0,
            "group_commit.max_batch",
            "must be at least 1",
        )?;
        config::require(
            self.max_body_bytes >= 1024,
            "max_body_bytes",
            "must be at least 1024",
        )?;
        Ok(())
    }

    /// The defaults alone (tests override fields).
    pub fn defaults() -> Result<Self, ConfigError> {
        config::defaults(DEFAULTS)
    }
}
