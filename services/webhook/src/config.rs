//! The webhook service's configuration (env prefix `WEBHOOK__`); every key and default is in
//! [`DEFAULTS`]. Secrets (`stripe.endpoint_secrets`, `razorpay.secrets`, `internal_token`,
//! the database and AMQP URLs) come from the environment only. A list of secrets is given in
//! one variable, comma-separated: `WEBHOOK__STRIPE__ENDPOINT_SECRETS=whsec_new,whsec_old`.

use serde::{Deserialize, Deserializer};
use tollgate_messaging::BrokerConfig;
use tollgate_psp::SecretString;
use tollgate_runtime::config::{self, ConfigError};
use tollgate_runtime::relay::RelayConfig;
use tollgate_storage::pool::DatabaseConfig;

/// Compiled-in defaults.
pub const DEFAULTS: &str = r#"
internal_token = ""
max_body_bytes = 262144

[http]
host = "127.0.0.1"
port = 8084
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

[relay]
batch_size = 500
poll_interval_ms = 250
purge_after_secs = 86400

[stripe]
endpoint_secrets = ""
tolerance_secs = 300

[razorpay]
secrets = ""
livemode = true

[inbound]
writers = 2
max_batch = 256

[fanout]
prefetch = 64

[delivery]
retry_schedule_secs = [5, 300, 1800, 7200, 18000, 36000, 36000]
jitter_pct = 20
timeout_ms = 10000
concurrency = 32
poll_interval_ms = 250
disable_after_secs = 432000
secret_overlap_secs = 86400
max_secret_overlap_secs = 604800
max_retry_after_secs = 86400
allow_private_networks = false
"#;

/// The whole configuration.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookConfig {
    pub http: HttpConfig,
    pub database: DatabaseConfig,
    /// The broker: the fan-out consumer's queue and the outbox relay.
    pub amqp: BrokerConfig,
    /// The outbox relay this service runs (inbound PSP events, `webhook_endpoint.disabled`).
    pub relay: RelayConfig,
    /// When non-empty, tenant API requests must carry it in `x-tollgate-internal-token` (the
    /// gateway sets it). A secret: from the environment only.
    pub internal_token: String,
    /// Largest inbound PSP webhook body, bytes (413 `PAYLOAD_TOO_LARGE` beyond; default
    /// 256 KiB). Tenant API bodies are capped at 64 KiB.
    pub max_body_bytes: usize,
    pub stripe: StripeConfig,
    pub razorpay: RazorpayConfig,
    pub inbound: InboundConfig,
    pub fanout: FanoutConfig,
    pub delivery: DeliveryConfig,
}

/// The HTTP server. Port 0 picks a free port.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpConfig {
    pub host: String,
    pub port: u16,
    pub workers: usize,
}

/// Inbound Stripe webhooks (`POST /webhooks/stripe`).
#[derive(Debug, Clone, Deserialize)]
pub struct StripeConfig {
    /// The endpoint's signing secrets (`whsec_…`); several during a rotation (a signature
    /// under any of them is accepted). Empty: `/webhooks/stripe` answers 404
    /// `PSP_NOT_CONFIGURED`. Env: comma-separated.
    #[serde(deserialize_with = "secret_list")]
    pub endpoint_secrets: Vec<SecretString>,
    /// Largest distance between the signature's timestamp and now, seconds (Stripe's
    /// default tolerance: 300).
    pub tolerance_secs: i64,
}

/// Inbound Razorpay webhooks (`POST /webhooks/razorpay`).
#[derive(Debug, Clone, Deserialize)]
pub struct RazorpayConfig {
    /// Webhook secrets; empty: `/webhooks/razorpay` answers 404 `PSP_NOT_CONFIGURED`. Env:
    /// comma-separated.
    #[serde(deserialize_with = "secret_list")]
    pub secrets: Vec<SecretString>,
    /// Razorpay events do not say whether they are live; the account's mode is configured.
    pub livemode: bool,
}

/// How verified inbound events are written (group commit: concurrent requests share one
/// transaction).
#[derive(Debug, Clone, Deserialize)]
pub struct InboundConfig {
    /// Writer tasks (concurrent transactions).
    pub writers: usize,
    /// Most events per transaction.
    pub max_batch: usize,
}

/// The fan-out consumer (`{prefix}.webhook.fanout`).
#[derive(Debug, Clone, Deserialize)]
pub struct FanoutConfig {
    /// Unacknowledged messages held at once.
    pub prefetch: u16,
}

/// Outbound deliveries (Standard Webhooks).
#[derive(Debug, Clone, Deserialize)]
pub struct DeliveryConfig {
    /// Wait before each retry, seconds: after failed attempt n the next comes
    /// `retry_schedule_secs[n-1]` later (± jitter); after the last, the delivery fails.
    /// Default: the Standard Webhooks / Svix schedule 5 s, 5 min, 30 min, 2 h, 5 h, 10 h,
    /// 10 h (8 attempts over about 27 hours).
    pub retry_schedule_secs: Vec<u64>,
    /// Random spread of each wait, percent (default 20: ±20 %).
    pub jitter_pct: u32,
    /// Per-attempt HTTP timeout, milliseconds.
    pub timeout_ms: u64,
    /// Attempts in flight at once (per process).
    pub concurrency: usize,
    /// How often due deliveries are looked for when nothing wakes the dispatcher,
    /// milliseconds.
    pub poll_interval_ms: u64,
    /// An endpoint whose attempts have all failed for longer than this is disabled, seconds
    /// (default 5 days).
    pub disable_after_secs: i64,
    /// After a secret rotation, how long the previous secret keeps signing by default,
    /// seconds (default 24 h).
    pub secret_overlap_secs: i64,
    /// Largest overlap a rotation may ask for, seconds (default 7 days).
    pub max_secret_overlap_secs: i64,
    /// A receiver's `Retry-After` is honoured up to this many seconds (default 24 h).
    pub max_retry_after_secs: i64,
    /// Deliver also to loopback, private and link-local addresses (off by default: endpoint
    /// URLs are tenants' input; see `crate::egress`). On for tests and single-host setups.
    pub allow_private_networks: bool,
}

/// A list of secrets: a TOML array, or one comma-separated string (environment); see
/// [`config::list`].
fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    Ok(config::list::<D, String>(d)?
        .into_iter()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .map(SecretString::new)
        .collect())
}

impl WebhookConfig {
    /// Loads and validates the configuration.
    pub fn load() -> Result<Self, ConfigError> {
        let cfg: Self = config::load("WEBHOOK", DEFAULTS)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The defaults alone (tests override fields).
    pub fn defaults() -> Result<Self, ConfigError> {
        config::defaults(DEFAULTS)
    }

    /// Checks values that deserialize but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        config::require(self.http.workers > 0, "http.workers", "must be at least 1")?;
        config::require(
            self.max_body_bytes >= 1024,
            "max_body_bytes",
            "must be at least 1024",
        )?;
        config::require(
            (1..=3600).contains(&self.stripe.tolerance_secs),
            "stripe.tolerance_secs",
            "must be between 1 and 3600",
        )?;
        config::require(
            self.inbound.writers > 0 && self.inbound.max_batch > 0,
            "inbound.writers",
            "inbound.writers and inbound.max_batch must be at least 1",
        )?;
        config::require(
            self.fanout.prefetch > 0,
            "fanout.prefetch",
            "must be at least 1",
        )?;
        let d = &self.delivery;
        config::require(
            d.retry_schedule_secs.len() <= 50
                && d.retry_schedule_secs.iter().all(|s| *s <= 7 * 86_400),
            "delivery.retry_schedule_secs",
            "at most 50 waits of at most 604800 s each",
        )?;
        config::require(
            d.jitter_pct <= 100,
            "delivery.jitter_pct",
            "must be between 0 and 100",
        )?;
        config::require(
            (100..=120_000).contains(&d.timeout_ms),
            "delivery.timeout_ms",
            "must be between 100 and 120000",
        )?;
        config::require(
            (1..=1024).contains(&d.concurrency),
            "delivery.concurrency",
            "must be between 1 and 1024",
        )?;
        config::require(
            d.poll_interval_ms >= 10,
            "delivery.poll_interval_ms",
            "must be at least 10",
        )?;
        config::require(
            d.disable_after_secs > 0,
            "delivery.disable_after_secs",
            "must be at least 1",
        )?;
        config::require(
            (0..=d.max_secret_overlap_secs).contains(&d.secret_overlap_secs),
            "delivery.secret_overlap_secs",
            "must be between 0 and delivery.max_secret_overlap_secs",
        )?;
        config::require(
            d.max_retry_after_secs >= 0,
            "delivery.max_retry_after_secs",
            "must not be negative",
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_follow_the_standard_webhooks_schedule() {
        let cfg = WebhookConfig::defaults().expect("defaults load");
        cfg.validate().expect("defaults are valid");
        assert_eq!(
            cfg.delivery.retry_schedule_secs,
            [5, 300, 1800, 7200, 18000, 36000, 36000]
        );
        assert!(cfg.stripe.endpoint_secrets.is_empty());
        assert_eq!(cfg.stripe.tolerance_secs, 300);
        assert_eq!(cfg.max_body_bytes, 256 * 1024);
    }

    #[test]
    fn secret_lists_come_comma_separated_from_the_environment() {
        // A prefix no other test uses, so setting the variables cannot race another test.
        std::env::set_var("TGWHCFGTEST__STRIPE__ENDPOINT_SECRETS", "whsec_a, whsec_b,");
        std::env::set_var("TGWHCFGTEST__RAZORPAY__SECRETS", "rzp_one");
        let cfg: WebhookConfig = config::load("TGWHCFGTEST", DEFAULTS).expect("loads");
        std::env::remove_var("TGWHCFGTEST__STRIPE__ENDPOINT_SECRETS");
        std::env::remove_var("TGWHCFGTEST__RAZORPAY__SECRETS");
        let exposed: Vec<&str> = cfg
            .stripe
            .endpoint_secrets
            .iter()
            .map(SecretString::expose)
            .collect();
        assert_eq!(exposed, ["whsec_a", "whsec_b"]);
        assert_eq!(cfg.razorpay.secrets.len(), 1);
        assert!(
            !format!("{cfg:?}").contains("whsec_a"),
            "secrets never print"
        );
    }
}
