//! job-intake's configuration (env prefix `INTAKE__`). Every key and its default is in
//! [`DEFAULTS`]; `docs/CONFIGURATION.md` lists them for operators.

use serde::Deserialize;
use tollgate_messaging::BrokerConfig;
use tollgate_runtime::config::{self, ConfigError};
use tollgate_storage::pool::DatabaseConfig;

/// `[artifacts]`: where job artifacts are stored and how their download links are signed
/// (SPEC "Jobs" → Results), in `tollgate_objects`' shape. The signing key comes from the
/// environment only (`INTAKE__ARTIFACTS__SIGNING_KEY`); `tollgate_objects` says why every
/// service that writes objects shares it.
pub use tollgate_objects::{
    ObjectsConfig as ArtifactsConfig, SecretString, StoreKind as ArtifactStoreKind,
};

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

# One writer: on the 2-core development machine, four rounds of scripts/bench.sh alternating
# 1 and 4 writers gave a submit p99 at 1,000 jobs/s of 28-41 ms against 50-161 ms, and 3 %
# more jobs/s flat out (docs/BENCHMARKS.md). INTAKE__GROUP_COMMIT__WRITERS raises it.
[group_commit]
writers = 1
max_batch = 256

[events]
max_batch = 1000
max_future_secs = 300
max_properties_bytes = 8192
writers = 2
max_group = 64

# A 10 ms linger after each wake-up: at moderate load the job commands of several submissions
# share a relay transaction and an AMQP message. With the worker's 10 ms group-commit linger,
# three alternating rounds of scripts/bench.sh at 1,000 jobs/s used 1.43 ms of CPU per job
# against 1.53 without it and 1.68 with neither (docs/BENCHMARKS.md); submissions do not wait.
[relay]
batch_size = 500
poll_interval_ms = 250
purge_after_secs = 86400
linger_ms = 10

[entitlements]
refresh_ms = 200
full_resync_secs = 60
overlap_ms = 5000
startup_wait_ms = 5000

[artifacts]
store = "local"
root = ".tollgate/artifacts"
bucket = ""
signing_key = ""
url_ttl_secs = 300
public_base_url = "http://127.0.0.1:8080"
"#;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct IntakeConfig {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    pub amqp: BrokerConfig,
    pub relay: RelayConfig,
    pub group_commit: GroupCommitConfig,
    pub events: EventsConfig,
    pub artifacts: ArtifactsConfig,
    pub entitlements: EntitlementsConfig,
    /// When non-empty, requests must carry it in `x-tollgate-internal-token` (set by the
    /// gateway). A secret: from the environment only.
    pub internal_token: String,
    /// How long a job type read from the catalog is reused, milliseconds.
    pub catalog_cache_ttl_ms: u64,
    /// Largest request body accepted, bytes.
    pub max_body_bytes: usize,
}

/// Usage-event ingestion (`/v1/events`, SPEC "Usage metering and the ledger").
#[derive(Debug, Clone, Deserialize)]
pub struct EventsConfig {
    /// Most events in one `POST /v1/events/batch`.
    pub max_batch: usize,
    /// How far ahead of this server's clock an event timestamp may be, seconds.
    pub max_future_secs: i64,
    /// Largest serialized `properties` of one event, bytes.
    pub max_properties_bytes: usize,
    /// Group-commit writer tasks (each holds one connection while writing).
    pub writers: usize,
    /// Most requests' batches written in one transaction.
    pub max_group: usize,
}

/// The in-memory entitlement projection that gates jobs and events without a database round
/// trip per request (issue 4, "Entitlements at intake"; see `crate::entitlements`).
#[derive(Debug, Clone, Deserialize)]
pub struct EntitlementsConfig {
    /// How often the projection reads what changed, milliseconds (10..=60000). A cancellation
    /// or a quota crossing is enforced at most about this long after it commits.
    pub refresh_ms: u64,
    /// How often the whole projection is read again, seconds (at least 1): it repairs what a
    /// change read can miss (a transaction open longer than `overlap_ms`) and drops what is
    /// no longer needed.
    pub full_resync_secs: u64,
    /// How far back each change read starts before the previous read's database time,
    /// milliseconds (0..=600000): rows are stamped before their transaction commits.
    pub overlap_ms: u64,
    /// How long start-up waits for the first load before serving anyway, milliseconds
    /// (0..=60000). Until a load succeeds, gated requests get 503 ENTITLEMENTS_UNAVAILABLE.
    pub startup_wait_ms: u64,
}

/// Where the HTTP server listens. Port 0 picks a free port (tests).
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    pub host: String,
    pub port: u16,
    /// actix worker threads.
    pub workers: usize,
}

/// Submissions are inserted in batches: concurrent requests share one statement.
pub use tollgate_runtime::config::GroupCommitConfig;
pub use tollgate_runtime::relay::RelayConfig;

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
        self.group_commit.validate()?;
        config::require(
            self.max_body_bytes >= 1024,
            "max_body_bytes",
            "must be at least 1024",
        )?;
        config::require(
            (1..=10_000).contains(&self.events.max_batch),
            "events.max_batch",
            "must be between 1 and 10000",
        )?;
        config::require(
            self.events.max_future_secs >= 0,
            "events.max_future_secs",
            "must be >= 0",
        )?;
        config::require(
            self.events.writers > 0 && self.events.max_group > 0,
            "events.writers / events.max_group",
            "must be at least 1",
        )?;
        let entitlements = &self.entitlements;
        config::require(
            (10..=60_000).contains(&entitlements.refresh_ms),
            "entitlements.refresh_ms",
            "must be between 10 and 60000",
        )?;
        config::require(
            entitlements.full_resync_secs >= 1,
            "entitlements.full_resync_secs",
            "must be at least 1",
        )?;
        config::require(
            entitlements.overlap_ms <= 600_000,
            "entitlements.overlap_ms",
            "must be at most 600000",
        )?;
        config::require(
            entitlements.startup_wait_ms <= 60_000,
            "entitlements.startup_wait_ms",
            "must be at most 60000",
        )?;
        self.artifacts.validate("artifacts").map_err(ConfigError)?;
        Ok(())
    }

    /// The defaults alone (tests override fields).
    pub fn defaults() -> Result<Self, ConfigError> {
        config::defaults(DEFAULTS)
    }
}
