//! End-to-end test support: each test gets a fresh PostgreSQL database (migrated), fresh
//! RabbitMQ names (a random prefix, classic queues that expire when unused), the real
//! gateway, job-intake, worker, billing and webhook service on port 0, a tenant with an API
//! key, and a wiremock server standing in for the tenant's executor (zero2prod `spawn_app`,
//! svix random prefixes).

pub mod api;
pub mod proxy;
pub mod stripe_fake;

use std::sync::Arc;
use std::time::Duration;

use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tollgate_domain::{api_key, ApiKeyId, TenantId};
use tollgate_messaging::{BrokerConfig, QueueType};
use tollgate_storage::models::{ApiKeyRow, JobTypeRow};
use tollgate_storage::{tenants, PgPool};
use wiremock::MockServer;

/// Polls `check` every 50 ms until it returns `Some`, panicking with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The `Retry-After` header of a response, whole seconds (panics when missing or not a
/// number of seconds).
pub fn retry_after_secs(res: &reqwest::Response) -> u64 {
    res.headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .expect("Retry-After in whole seconds")
}

/// PostgreSQL server URL without a database (`TEST_PG_URL`, default the local server as `postgres`).
pub fn pg_server_url() -> String {
    std::env::var("TEST_PG_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".to_owned())
}

/// RabbitMQ URL (`TEST_AMQP_URL`, default the local broker as guest).
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A change to a service's configuration, applied after the test defaults and before the
/// service starts (`Arc::new(|cfg| …)`).
pub type Configure<T> = Arc<dyn Fn(&mut T) + Send + Sync>;

/// Options for [`TestApp::spawn`].
#[derive(Clone)]
pub struct Options {
    /// AMQP URL job-intake uses (tests point it at a controllable proxy). Billing, the
    /// webhook service and the worker use it too: each runs an outbox relay that publishes
    /// every service's rows, so a broker outage must reach all of them.
    pub intake_amqp_url: Option<String>,
    /// Start a worker.
    pub worker: bool,
    /// Tenant rate limit, requests per minute.
    pub rate_limit_per_minute: i32,
    /// PostgreSQL server URL (no database) job-intake connects through (a proxy, in tests).
    pub intake_pg_server_url: Option<String>,
    /// The gateway's `metering.flush_interval_ms` (default: the compiled-in one).
    pub metering_flush_interval_ms: Option<u64>,
    /// job-intake's `entitlements.refresh_ms` (default: the compiled-in one).
    pub entitlements_refresh_ms: Option<u64>,
    /// Applied to billing's configuration after the test defaults, before it starts (e.g.
    /// to point its Stripe client at a local fake).
    pub configure_billing: Option<Configure<tollgate_billing::BillingConfig>>,
    /// Applied to the webhook service's configuration after the test defaults, before it
    /// starts (e.g. a short retry schedule).
    pub configure_webhook: Option<Configure<tollgate_webhook::WebhookConfig>>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            intake_amqp_url: None,
            worker: true,
            rate_limit_per_minute: 100_000,
            intake_pg_server_url: None,
            metering_flush_interval_ms: None,
            entitlements_refresh_ms: None,
            configure_billing: None,
            configure_webhook: None,
        }
    }
}

/// A running Tollgate for one test.
pub struct TestApp {
    pub db_url: String,
    pub pool: PgPool,
    pub amqp_prefix: String,
    pub gateway_url: String,
    pub intake_url: String,
    /// The billing service (its scheduler is off: tests drive billing runs with a clock).
    pub billing_url: String,
    /// The webhook service: inbound PSP webhooks (`/webhooks/{psp}`, not behind the gateway)
    /// and the tenant webhook API (also reachable through the gateway).
    pub webhook_url: String,
    /// The Stripe endpoint secret the webhook service verifies `Stripe-Signature` with.
    pub stripe_webhook_secret: String,
    pub worker_url: Option<String>,
    pub tenant: TenantId,
    pub tenant_name: String,
    pub api_key: String,
    pub executor: MockServer,
    pub http: reqwest::Client,
    /// job-intake's artifact directory (a fresh temporary one per test, removed by `stop`).
    pub artifacts_dir: std::path::PathBuf,
    /// job-intake's `artifacts.signing_key` (tests forge links with it).
    pub artifacts_signing_key: String,
    worker: Option<tollgate_worker::RunningWorker>,
    intake: Option<tollgate_job_intake::RunningIntake>,
    gateway: Option<tollgate_gateway::RunningGateway>,
    billing: Option<tollgate_billing::RunningBilling>,
    webhook: Option<tollgate_webhook::RunningWebhook>,
    /// The AMQP URL the services use (the proxy's when the test controls the broker).
    services_amqp_url: String,
}

/// A fresh database with the migrations applied; returns its URL.
pub async fn fresh_database() -> String {
    let server = pg_server_url();
    let name = format!("tollgate_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = AsyncPgConnection::establish(&format!("{server}/postgres"))
        .await
        .expect("connect to PostgreSQL (is it running? see README)");
    diesel::sql_query(format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .expect("create test database");
    let url = format!("{server}/{name}");
    tollgate_storage::migrate::run_pending(&url)
        .await
        .expect("migrate");
    url
}

fn broker_config(url: String, prefix: &str) -> BrokerConfig {
    BrokerConfig {
        url,
        prefix: prefix.to_owned(),
        queue_type: QueueType::Classic,
        queue_expires_ms: Some(120_000),
        retry_tiers: 4,
        max_reconnect_backoff_ms: 300,
    }
}

impl TestApp {
    /// Starts everything with default options.
    pub async fn spawn() -> Self {
        Self::spawn_with(Options::default()).await
    }

    /// Starts everything.
    pub async fn spawn_with(options: Options) -> Self {
        tollgate_runtime::telemetry::init("tests");
        let db_url = fresh_database().await;
        let pool =
            tollgate_storage::pool::build_pool(&db_url, 4, Duration::from_secs(5)).expect("pool");
        let amqp_prefix = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let internal_token = uuid::Uuid::new_v4().simple().to_string();

        let mut intake_cfg = tollgate_job_intake::IntakeConfig::defaults().expect("defaults");
        intake_cfg.http.port = 0;
        intake_cfg.http.workers = 1;
        intake_cfg.database.url = match &options.intake_pg_server_url {
            Some(server) => db_url.replacen(&pg_server_url(), server, 1),
            None => db_url.clone(),
        };
        intake_cfg.database.acquire_timeout_ms = 500;
        intake_cfg.database.pool_size = 4;
        intake_cfg.amqp = broker_config(
            options.intake_amqp_url.clone().unwrap_or_else(amqp_url),
            &amqp_prefix,
        );
        intake_cfg.internal_token = internal_token.clone();
        intake_cfg.relay.poll_interval_ms = 50;
        if let Some(ms) = options.entitlements_refresh_ms {
            intake_cfg.entitlements.refresh_ms = ms;
        }
        intake_cfg.catalog_cache_ttl_ms = 0;
        let artifacts_dir = std::env::temp_dir().join(format!(
            "tollgate-artifacts-{}",
            uuid::Uuid::new_v4().simple()
        ));
        let artifacts_signing_key = uuid::Uuid::new_v4().simple().to_string();
        intake_cfg.artifacts.root = artifacts_dir.to_string_lossy().into_owned();
        intake_cfg.artifacts.signing_key =
            tollgate_job_intake::config::SecretString::new(artifacts_signing_key.clone());
        let intake = tollgate_job_intake::start(intake_cfg, CancellationToken::new())
            .await
            .expect("start intake");
        let intake_url = format!("http://{}", intake.addr);

        let mut billing_cfg = tollgate_billing::BillingConfig::defaults().expect("defaults");
        billing_cfg.http.port = 0;
        billing_cfg.http.workers = 1;
        billing_cfg.database.url = db_url.clone();
        billing_cfg.database.pool_size = 4;
        billing_cfg.amqp = broker_config(
            options.intake_amqp_url.clone().unwrap_or_else(amqp_url),
            &amqp_prefix,
        );
        billing_cfg.internal_token = internal_token.clone();
        billing_cfg.scheduler.enabled = false;
        billing_cfg.scheduler.thresholds_interval_ms = 100;
        billing_cfg.documents.root = artifacts_dir.to_string_lossy().into_owned();
        billing_cfg.documents.signing_key =
            tollgate_objects::SecretString::new(artifacts_signing_key.clone());
        if let Some(configure) = &options.configure_billing {
            configure(&mut billing_cfg);
        }
        let billing = tollgate_billing::start(billing_cfg, CancellationToken::new())
            .await
            .expect("start billing");
        let billing_url = format!("http://{}", billing.addr);

        let stripe_webhook_secret = format!("whsec_test_{}", uuid::Uuid::new_v4().simple());
        let mut webhook_cfg = tollgate_webhook::WebhookConfig::defaults().expect("defaults");
        webhook_cfg.http.port = 0;
        webhook_cfg.http.workers = 1;
        webhook_cfg.database.url = db_url.clone();
        webhook_cfg.database.pool_size = 4;
        webhook_cfg.amqp = broker_config(
            options.intake_amqp_url.clone().unwrap_or_else(amqp_url),
            &amqp_prefix,
        );
        webhook_cfg.internal_token = internal_token.clone();
        webhook_cfg.relay.poll_interval_ms = 50;
        webhook_cfg.delivery.poll_interval_ms = 50;
        // Test receivers listen on 127.0.0.1.
        webhook_cfg.delivery.allow_private_networks = true;
        webhook_cfg.stripe.endpoint_secrets = vec![tollgate_psp::SecretString::new(
            stripe_webhook_secret.clone(),
        )];
        if let Some(configure) = &options.configure_webhook {
            configure(&mut webhook_cfg);
        }
        let webhook = tollgate_webhook::start(webhook_cfg, CancellationToken::new())
            .await
            .expect("start webhook service");
        // Tenants' events are routed to the webhook service only once its queue exists (not
        // waited for when the test controls the broker's reachability).
        if options.intake_amqp_url.is_none() {
            assert!(
                webhook.wait_consuming(Duration::from_secs(10)).await,
                "the webhook service's fan-out queue is consumed"
            );
        }
        let webhook_url = format!("http://{}", webhook.addr);

        let mut gateway_cfg = tollgate_gateway::GatewayConfig::defaults().expect("defaults");
        gateway_cfg.http.port = 0;
        gateway_cfg.http.workers = 1;
        gateway_cfg.database.url = db_url.clone();
        gateway_cfg.database.pool_size = 2;
        gateway_cfg.intake_url = intake_url.clone();
        gateway_cfg.billing_url = billing_url.clone();
        gateway_cfg.webhook_url = webhook_url.clone();
        gateway_cfg.internal_token = internal_token;
        gateway_cfg.key_cache_ttl_ms = 0;
        gateway_cfg.max_body_bytes = 64 * 1024;
        if let Some(ms) = options.metering_flush_interval_ms {
            gateway_cfg.metering.flush_interval_ms = ms;
        }
        let gateway = tollgate_gateway::start(gateway_cfg)
            .await
            .expect("start gateway");
        let gateway_url = format!("http://{}", gateway.addr);

        let tenant_name = format!("tenant-{}", uuid::Uuid::new_v4().simple());
        let mut conn = tollgate_storage::pool::get(&pool).await.expect("conn");
        let tenant = tenants::create_tenant(&mut conn, &tenant_name, options.rate_limit_per_minute)
            .await
            .expect("tenant");
        let key = api_key::generate();
        tenants::insert_api_key(
            &mut conn,
            &ApiKeyRow {
                id: ApiKeyId::new().as_uuid(),
                tenant_id: tenant.id,
                prefix: key.prefix.clone(),
                key_hash: key.hash.to_vec(),
                name: "test".into(),
                created_at: chrono::Utc::now(),
                revoked_at: None,
            },
        )
        .await
        .expect("key");

        let mut app = Self {
            db_url,
            pool,
            amqp_prefix,
            gateway_url,
            intake_url,
            billing_url,
            webhook_url,
            stripe_webhook_secret,
            worker_url: None,
            tenant: TenantId::from_uuid(tenant.id),
            tenant_name,
            api_key: key.secret_text,
            executor: MockServer::start().await,
            http: reqwest::Client::new(),
            artifacts_dir,
            artifacts_signing_key,
            worker: None,
            intake: Some(intake),
            gateway: Some(gateway),
            billing: Some(billing),
            webhook: Some(webhook),
            services_amqp_url: options.intake_amqp_url.clone().unwrap_or_else(amqp_url),
        };
        if options.worker {
            app.start_worker().await;
        }
        app
    }

    /// Starts a worker (another one if one runs already is not supported: stop or kill first).
    pub async fn start_worker(&mut self) {
        let mut cfg = tollgate_worker::WorkerConfig::defaults().expect("defaults");
        cfg.http.port = 0;
        cfg.database.url = self.db_url.clone();
        cfg.database.pool_size = 4;
        cfg.amqp = broker_config(self.services_amqp_url.clone(), &self.amqp_prefix);
        cfg.retry.base_delay_ms = 50;
        cfg.retry.max_delay_ms = 200;
        cfg.catalog_cache_ttl_ms = 0;
        cfg.prefetch = 16;
        // Endpoints created by a test start receiving job events within a tick.
        cfg.job_events_refresh_ms = 100;
        let worker = tollgate_worker::start(cfg).await.expect("start worker");
        self.worker_url = Some(format!("http://{}", worker.addr));
        self.worker = Some(worker);
    }

    /// Stops the worker as on SIGTERM: in-flight jobs are finished and acked first.
    pub async fn stop_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await;
        }
    }

    /// Crashes the worker: in-flight jobs are left unacked.
    pub async fn kill_worker(&mut self) {
        if let Some(worker) = self.worker.take() {
            worker.kill().await;
        }
    }

    /// Stops the gateway as on SIGTERM: in-flight requests finish, then the buffered traffic
    /// records are written to the ledger before this returns.
    pub async fn stop_gateway(&mut self) {
        if let Some(gateway) = self.gateway.take() {
            gateway.stop().await;
        }
    }

    /// Adds a job type whose executor is `path` on the mock executor.
    pub async fn add_job_type(
        &self,
        name: &str,
        path: &str,
        weight: i64,
        max_attempts: i32,
        max_input_bytes: i32,
    ) {
        self.add_job_type_with_timeout(name, path, weight, max_attempts, max_input_bytes, 5_000)
            .await;
    }

    /// Adds a job type with an explicit executor timeout, milliseconds.
    pub async fn add_job_type_with_timeout(
        &self,
        name: &str,
        path: &str,
        weight: i64,
        max_attempts: i32,
        max_input_bytes: i32,
        timeout_ms: i32,
    ) {
        let mut conn = tollgate_storage::pool::get(&self.pool).await.expect("conn");
        let now = chrono::Utc::now();
        tenants::upsert_job_type(
            &mut conn,
            &JobTypeRow {
                tenant_id: self.tenant.as_uuid(),
                name: name.into(),
                executor: "http".into(),
                endpoint: format!("{}{}", self.executor.uri(), path),
                timeout_ms,
                max_attempts,
                weight,
                max_input_bytes,
                created_at: now,
                updated_at: now,
                required_feature: None,
            },
        )
        .await
        .expect("job type");
    }

    /// `POST /v1/jobs` through the gateway; returns status and JSON body.
    pub async fn submit(&self, body: &Value, idempotency_key: Option<&str>) -> (u16, Value) {
        let mut req = self
            .http
            .post(format!("{}/v1/jobs", self.gateway_url))
            .bearer_auth(&self.api_key)
            .json(body);
        if let Some(key) = idempotency_key {
            req = req.header("Idempotency-Key", key);
        }
        let res = req.send().await.expect("submit");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// `GET /v1/jobs/{id}` through the gateway.
    pub async fn get_job(&self, id: &str) -> Value {
        self.http
            .get(format!("{}/v1/jobs/{id}", self.gateway_url))
            .bearer_auth(&self.api_key)
            .send()
            .await
            .expect("get job")
            .json()
            .await
            .expect("job json")
    }

    /// `GET url`, with `Authorization: Bearer <key>` when `key` is given; returns the status
    /// and the JSON body (`Null` when the body is not JSON).
    pub async fn get(&self, url: &str, key: Option<&str>) -> (u16, Value) {
        let mut req = self.http.get(url);
        if let Some(key) = key {
            req = req.bearer_auth(key);
        }
        let res = req.send().await.expect("GET");
        let status = res.status().as_u16();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Polls the job until its status is one of `states` (panics after `timeout`).
    pub async fn wait_for_status(&self, id: &str, states: &[&str], timeout: Duration) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.get_job(id).await;
            if states.iter().any(|s| job["status"] == *s) {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} never reached {states:?}; last: {job}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The billing service's context (pool, events exchange, document store) for driving
    /// billing runs and subscription changes with a test clock.
    pub fn billing(&self) -> &tollgate_billing::BillingContext {
        &self.billing.as_ref().expect("billing is running").context
    }

    /// A billing pass for this tenant at `as_of` (the test clock).
    pub async fn billing_run(
        &self,
        as_of: chrono::DateTime<chrono::Utc>,
    ) -> tollgate_billing::run::RunReport {
        tollgate_billing::run::run(
            self.billing(),
            &tollgate_billing::run::RunOptions {
                tenant: Some(self.tenant.as_uuid()),
                as_of,
                batch: 100,
                max_close_batches: None,
            },
        )
        .await
        .expect("billing run")
    }

    /// Listens on this app's events exchange (`<prefix>.events`) for `binding` (a topic
    /// pattern such as `psp.#`) through an exclusive, auto-deleted queue, without acks. Keep the
    /// connection alive as long as the consumer is read.
    pub async fn tap_events(&self, binding: &str) -> (lapin::Connection, lapin::Consumer) {
        use lapin::options::{
            BasicConsumeOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
        };
        use lapin::types::FieldTable;
        let conn = lapin::Connection::connect(&amqp_url(), lapin::ConnectionProperties::default())
            .await
            .expect("amqp");
        let channel = conn.create_channel().await.expect("channel");
        let exchange = format!("{}.events", self.amqp_prefix);
        channel
            .exchange_declare(
                exchange.as_str().into(),
                lapin::ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("exchange");
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("queue");
        channel
            .queue_bind(
                queue.name().as_str().into(),
                exchange.as_str().into(),
                binding.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("bind");
        let consumer = channel
            .basic_consume(
                queue.name().as_str().into(),
                "test".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("consume");
        (conn, consumer)
    }

    /// A scalar `SELECT count(*)`-style query on the test database.
    pub async fn count(&self, sql: &str) -> i64 {
        #[derive(diesel::QueryableByName)]
        struct Count {
            #[diesel(sql_type = diesel::sql_types::Int8)]
            n: i64,
        }
        let mut conn = tollgate_storage::pool::get(&self.pool).await.expect("conn");
        diesel::sql_query(sql)
            .get_result::<Count>(&mut conn)
            .await
            .expect("count query")
            .n
    }

    /// Runs a statement on the test database, returning its error text if it failed.
    pub async fn execute(&self, sql: &str) -> Result<usize, String> {
        let mut conn = tollgate_storage::pool::get(&self.pool).await.expect("conn");
        diesel::sql_query(sql)
            .execute(&mut conn)
            .await
            .map_err(|e| e.to_string())
    }

    /// Stops every service gracefully.
    pub async fn stop(mut self) {
        if let Some(worker) = self.worker.take() {
            worker.stop().await;
        }
        if let Some(gateway) = self.gateway.take() {
            gateway.stop().await;
        }
        if let Some(intake) = self.intake.take() {
            intake.stop().await;
        }
        if let Some(billing) = self.billing.take() {
            billing.stop().await;
        }
        if let Some(webhook) = self.webhook.take() {
            webhook.stop().await;
        }
        let _ = std::fs::remove_dir_all(&self.artifacts_dir);
    }
}
