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

[events]
max_batch = 1000
max_future_secs = 300
max_properties_bytes = 8192
writers = 2
max_group = 64

[relay]
batch_size = 500
poll_interval_ms = 250
purge_after_secs = 86400

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

/// Where job artifacts are stored and how their download links are signed (SPEC "Jobs" →
/// Results: local disk by default, S3/GCS in production, short-lived signed URLs).
#[derive(Debug, Clone, Deserialize)]
pub struct ArtifactsConfig {
    /// The object store: `local` (a directory), `s3` or `gcs`.
    pub store: ArtifactStoreKind,
    /// `local`: the directory, created at start-up if missing.
    pub root: String,
    /// `s3` / `gcs`: the bucket. Credentials and region come from the provider's standard
    /// environment variables (`AWS_*`, `GOOGLE_*`).
    pub bucket: String,
    /// `local`: the HMAC-SHA256 key of download links. A secret: from the environment only
    /// (`INTAKE__ARTIFACTS__SIGNING_KEY`). Empty: a random key per process, so links do not
    /// survive a restart and are not valid on another replica.
    pub signing_key: SecretString,
    /// How long a download link stays valid, seconds (1..=604800, the GCS maximum).
    pub url_ttl_secs: u64,
    /// `local`: the public URL of the gateway, which signed links point at.
    pub public_base_url: String,
}

/// The object store behind artifacts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ArtifactStoreKind {
    /// A local directory (`object_store::local::LocalFileSystem`).
    Local,
    /// Amazon S3 or an S3-compatible store.
    S3,
    /// Google Cloud Storage.
    Gcs,
}

/// A secret string: deserializes like a string, never shows in `Debug` output or logs.
#[derive(Clone, Default, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// Wraps a secret (tests set keys this way).
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself; do not log it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_empty() {
            "\"\""
        } else {
            "[redacted]"
        })
    }
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
        let artifacts = &self.artifacts;
        config::require(
            (1..=604_800).contains(&artifacts.url_ttl_secs),
            "artifacts.url_ttl_secs",
            "must be between 1 and 604800",
        )?;
        match artifacts.store {
            ArtifactStoreKind::Local => {
                config::require(
                    !artifacts.root.trim().is_empty(),
                    "artifacts.root",
                    "must name a directory when artifacts.store is local",
                )?;
                config::require(
                    url::Url::parse(&artifacts.public_base_url)
                        .is_ok_and(|u| matches!(u.scheme(), "http" | "https")),
                    "artifacts.public_base_url",
                    "must be an http(s) URL",
                )?;
            }
            ArtifactStoreKind::S3 | ArtifactStoreKind::Gcs => {
                config::require(
                    !artifacts.bucket.trim().is_empty(),
                    "artifacts.bucket",
                    "must name a bucket when artifacts.store is s3 or gcs",
                )?;
            }
        }
        Ok(())
    }

    /// The defaults alone (tests override fields).
    pub fn defaults() -> Result<Self, ConfigError> {
        config::defaults(DEFAULTS)
    }
}
