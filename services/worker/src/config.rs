//! The worker's configuration (env prefix `WORKER__`); every key and default is in [`DEFAULTS`].

use serde::Deserialize;
use tollgate_messaging::BrokerConfig;
use tollgate_runtime::config::{self, ConfigError};
use tollgate_storage::pool::DatabaseConfig;

/// Compiled-in defaults.
pub const DEFAULTS: &str = r#"
prefetch = 64
catalog_cache_ttl_ms = 5000
job_events_refresh_ms = 5000

[http]
host = "127.0.0.1"
port = 8082

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

[relay]
batch_size = 500
poll_interval_ms = 250
purge_after_secs = 86400

# Attempt starts and finished attempts, each its own group commit. One writer (it was a fixed
# 2): three alternating rounds of scripts/bench.sh on the 2-core development machine gave
# 1,936-2,164 jobs/s flat out against 1,546-1,821 and 6-25 % less CPU per job
# (docs/BENCHMARKS.md). WORKER__GROUP_COMMIT__WRITERS raises it.
# A 10 ms linger: at moderate load a batch waits for the starts and completions of that time
# instead of paying a statement's fixed cost for two or three jobs; under load a batch has
# already waited out the statement before and goes at once. Three alternating rounds of
# scripts/bench.sh at 1,000 jobs/s: 1.53 ms of CPU per job against 1.68 without it, flat out
# no slower (docs/BENCHMARKS.md). Each job's start and completion wait up to 10 ms more.
[group_commit]
writers = 1
max_batch = 256
linger_ms = 10

[retry]
base_delay_ms = 1000
max_delay_ms = 300000
jitter = 0.2
"#;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct WorkerConfig {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub amqp: BrokerConfig,
    pub retry: RetryConfig,
    /// Unacknowledged messages held at once (AMQP prefetch); also the number of executor
    /// calls made concurrently. A message from the outbox relay may carry several job
    /// commands (its `commands_per_message`); those beyond the concurrency wait, held.
    pub prefetch: u16,
    /// How long a job type read from the catalog is reused, milliseconds.
    pub catalog_cache_ttl_ms: u64,
    /// How often the worker re-reads which tenants have webhook endpoints for job events,
    /// milliseconds; an endpoint registered for `job.*` gets events for jobs finishing at
    /// most this long after it was created.
    pub job_events_refresh_ms: u64,
    /// The outbox relay publishing the worker's job events.
    pub relay: tollgate_runtime::relay::RelayConfig,
    /// Batching of attempt starts and of finished attempts (each its own group commit).
    pub group_commit: tollgate_runtime::config::GroupCommitConfig,
}

/// The ops HTTP server (`/healthz`, `/readyz`, `/metrics`). Port 0 picks a free port.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    pub host: String,
    pub port: u16,
}

/// Retry backoff: attempt `n` failed → wait `min(base × 2^(n-1), max) × (1 + U[0, jitter])`.
#[derive(Debug, Clone, Deserialize)]
pub struct RetryConfig {
    pub base_delay_ms: u64,
    pub max_delay_ms: u64,
    /// Fraction of the delay added at random, 0.0..=1.0.
    pub jitter: f64,
}

impl WorkerConfig {
    /// Loads and validates the configuration.
    pub fn load() -> Result<Self, ConfigError> {
        let cfg: Self = config::load("WORKER", DEFAULTS)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The defaults alone (tests override fields).
    pub fn defaults() -> Result<Self, ConfigError> {
        config::defaults(DEFAULTS)
    }

    /// Checks values that deserialize but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::require(self.prefetch > 0, "prefetch", "must be at least 1")?;
        config::require(
            self.job_events_refresh_ms > 0,
            "job_events_refresh_ms",
            "must be positive",
        )?;
        config::require(
            self.relay.batch_size > 0,
            "relay.batch_size",
            "must be positive",
        )?;
        self.group_commit.validate()?;
        config::require(
            self.database.pool_size > 0,
            "database.pool_size",
            "must be at least 1",
        )?;
        config::require(
            (0.0..=1.0).contains(&self.retry.jitter),
            "retry.jitter",
            "must be between 0 and 1",
        )?;
        config::require(
            self.retry.base_delay_ms > 0,
            "retry.base_delay_ms",
            "must be positive",
        )?;
        Ok(())
    }
}
