//! The billing service's configuration (env prefix `BILLING__`); every key and default is in
//! [`DEFAULTS`].

use serde::Deserialize;
use tollgate_messaging::BrokerConfig;
use tollgate_objects::ObjectsConfig;
use tollgate_runtime::config::{self, ConfigError};
use tollgate_runtime::relay::RelayConfig;
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

[relay]
batch_size = 500
poll_interval_ms = 250
purge_after_secs = 86400

[psp]
enabled = false

[psp.stripe]
api_base = "https://api.stripe.com"
secret_key = ""
timeout_ms = 10000
max_retries = 2
api_version = "2024-06-20"

[psp.consumer]
prefetch = 16
retry_delay_ms = 1000

[collector]
interval_ms = 1000
batch = 50
lease_secs = 120

[dunning]
retry_schedule_secs = [3600, 86400, 259200]
interval_secs = 60
batch = 500

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
    /// The outbox relay billing runs for the rows it (and anyone else) writes.
    pub relay: RelayConfig,
    /// Payment collection through the PSP (issue 5).
    pub psp: PspConfig,
    /// The collector: sends pending payments to the PSP.
    pub collector: CollectorConfig,
    /// Dunning: retries of failed payments on a stored schedule.
    pub dunning: DunningConfig,
}

/// The PSP billing collects through (Stripe first).
#[derive(Debug, Clone, Deserialize)]
pub struct PspConfig {
    /// Collect payments and serve checkout, portal and refunds (needs `stripe.secret_key`).
    /// PSP events are applied either way.
    pub enabled: bool,
    /// Stripe API settings (https://docs.stripe.com/api): `api_base` (default
    /// `https://api.stripe.com`; tests point it at a local fake), `secret_key` (a secret: only
    /// from the environment, `BILLING__PSP__STRIPE__SECRET_KEY`), `timeout_ms`, `max_retries`
    /// (on 429, 5xx and connection errors, with the same idempotency key), `api_version` (the
    /// pinned `Stripe-Version`).
    pub stripe: tollgate_psp::stripe::StripeConfig,
    /// The consumer of verified PSP events (`{prefix}.billing.psp`, bound to `psp.#`).
    pub consumer: PspConsumerConfig,
}

/// The PSP event consumer.
#[derive(Debug, Clone, Deserialize)]
pub struct PspConsumerConfig {
    /// Unacknowledged messages held at once.
    pub prefetch: u16,
    /// Wait before a message that could not be applied (database or PSP down) is requeued,
    /// milliseconds.
    pub retry_delay_ms: u64,
}

/// The payment collector.
#[derive(Debug, Clone, Deserialize)]
pub struct CollectorConfig {
    /// Milliseconds between looks for pending payments (it also wakes when one is written).
    pub interval_ms: u64,
    /// Payments claimed per look.
    pub batch: i64,
    /// A claimed payment is claimed again after this many seconds if its PSP call never
    /// finished (the retry reuses the idempotency key).
    pub lease_secs: i64,
}

/// Dunning (SPEC "Billing": retry on a schedule, e.g. 1 h, 24 h, 72 h; suspend after the last
/// failure; resume on payment).
#[derive(Debug, Clone, Deserialize)]
pub struct DunningConfig {
    /// When each retry runs, seconds after the first failed payment of an invoice (default
    /// 1 h, 24 h, 72 h). From the environment as a comma-separated list
    /// (`BILLING__DUNNING__RETRY_SCHEDULE_SECS=3600,86400,259200`).
    #[serde(deserialize_with = "config::list")]
    pub retry_schedule_secs: Vec<u64>,
    /// Seconds between dunning runs of the scheduler (runs only with `scheduler.enabled`).
    pub interval_secs: u64,
    /// Due retries loaded per run.
    pub batch: i64,
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
        if self.psp.enabled {
            self.psp.stripe.validate("psp.stripe").map_err(|e| {
                ConfigError(format!(
                    "{e} (psp.enabled is true; the key comes from BILLING__PSP__STRIPE__SECRET_KEY)"
                ))
            })?;
        }
        config::require(
            self.psp.consumer.prefetch > 0,
            "psp.consumer.prefetch",
            "must be at least 1",
        )?;
        config::require(
            self.collector.batch > 0 && self.collector.interval_ms > 0,
            "collector",
            "batch and interval_ms must be at least 1",
        )?;
        config::require(
            self.collector.lease_secs >= 10,
            "collector.lease_secs",
            "must be at least 10",
        )?;
        let mut sorted = self.dunning.retry_schedule_secs.clone();
        sorted.sort_unstable();
        sorted.dedup();
        config::require(
            sorted == self.dunning.retry_schedule_secs
                && self.dunning.retry_schedule_secs.len() <= 20
                && self
                    .dunning
                    .retry_schedule_secs
                    .iter()
                    .all(|s| (1..=90 * 86_400).contains(s)),
            "dunning.retry_schedule_secs",
            "must be at most 20 strictly increasing offsets between 1 and 7776000 seconds",
        )?;
        config::require(
            self.dunning.interval_secs > 0 && self.dunning.batch > 0,
            "dunning",
            "interval_secs and batch must be at least 1",
        )?;
        Ok(())
    }
}
