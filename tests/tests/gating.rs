//! Entitlements at intake end to end (issue 4): job-intake refuses jobs and events of a
//! tenant that enforces billing when the billing entity has no live subscription, lacks the
//! plan's feature or has used up a hard quota, from its in-memory projection; a change in the
//! database (a cancellation) is enforced within a second. Plans and subscriptions are written
//! with SQL (the billing service's API is not there yet). Real PostgreSQL and RabbitMQ,
//! services on port 0.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tollgate_e2e::{amqp_url, Options, TestApp};
use tollgate_messaging::{BrokerConfig, QueueType};
use uuid::Uuid;

const METRICS: &str = r#"
[[metric]]
code = "api_calls"
name = "API calls"
unit = "calls"
aggregation = "count"
"#;

/// How long a test waits for the projection to show a setup change (it refreshes every
/// 200 ms; this is generous for a loaded CI machine).
const SETTLE: Duration = Duration::from_secs(10);

/// A tenant with the `api_calls` metric, job types `render` and `hd_render` (needs feature
/// `hd`), no worker (accepted jobs stay queued).
async fn app() -> TestApp {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.apply_metrics(METRICS).await;
    app.add_job_type("render", "/render", 1, 3, 4096).await;
    app.add_job_type("hd_render", "/render", 1, 3, 4096).await;
    app.execute("UPDATE job_types SET required_feature = 'hd' WHERE name = 'hd_render'")
        .await
        .expect("required feature");
    app
}

/// An organization account `name` owning workspace `<name>-ws`.
async fn account(app: &TestApp, name: &str) {
    let (status, body) = app
        .post_json(
            "/v1/accounts",
            &json!({ "external_id": name, "name": name, "kind": "organization" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .post_json(
            "/v1/workspaces",
            &json!({ "external_id": format!("{name}-ws"), "name": name, "account": name }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
}

/// Quota of a plan version: (metric, quantity, soft %, hard %).
type QuotaSpec<'a> = (&'a str, i64, i32, Option<i32>);

/// Writes plan `code` version `version` with `features` and `quotas`; returns its id.
async fn plan(
    app: &TestApp,
    code: &str,
    version: i32,
    features: &[&str],
    quotas: &[QuotaSpec<'_>],
) -> Uuid {
    plan_with_rate(app, code, version, features, quotas, None).await
}

/// [`plan`] with a `requests_per_minute` limit (`None`: unlimited).
async fn plan_with_rate(
    app: &TestApp,
    code: &str,
    version: i32,
    features: &[&str],
    quotas: &[QuotaSpec<'_>],
    requests_per_minute: Option<i32>,
) -> Uuid {
    let tenant = app.tenant.as_uuid();
    let rpm = requests_per_minute.map_or("NULL".to_owned(), |n| n.to_string());
    app.execute(&format!(
        "INSERT INTO plans (tenant_id, code, current_version) VALUES ('{tenant}', '{code}', {version}) \
         ON CONFLICT (tenant_id, code) DO UPDATE SET current_version = excluded.current_version"
    ))
    .await
    .expect("plan");
    let id = Uuid::new_v4();
    let features = features
        .iter()
        .map(|f| format!("'{f}'"))
        .collect::<Vec<_>>()
        .join(",");
    app.execute(&format!(
        "INSERT INTO plan_versions (id, tenant_id, plan_code, version, name, billing_interval, \
             currency, base_fee_minor, features, definition, requests_per_minute) \
         VALUES ('{id}', '{tenant}', '{code}', {version}, '{code}', 'month', 'USD', 1000, \
             ARRAY[{features}]::text[], '{{}}'::jsonb, {rpm})"
    ))
    .await
    .expect("plan version");
    for (metric, quantity, soft, hard) in quotas {
        let hard = hard.map_or("NULL".to_owned(), |h| h.to_string());
        app.execute(&format!(
            "INSERT INTO plan_quotas (plan_version_id, metric, quantity, soft_pct, hard_pct) \
             VALUES ('{id}', '{metric}', {quantity}, {soft}, {hard})"
        ))
        .await
        .expect("plan quota");
    }
    id
}

/// Subscribes account `name` to `plan_version` with `status`, in a period that started a
/// day ago; returns the subscription id.
async fn subscribe(app: &TestApp, name: &str, plan_version: Uuid, status: &str) -> Uuid {
    let id = Uuid::new_v4();
    let tenant = app.tenant.as_uuid();
    let inserted = app
        .execute(&format!(
            "INSERT INTO subscriptions (id, tenant_id, account_id, plan_version_id, status, \
                 anchor_at, current_period_start, current_period_end) \
             SELECT '{id}', tenant_id, id, '{plan_version}', '{status}', now() - interval '1 day', \
                 now() - interval '1 day', now() + interval '29 days' \
             FROM accounts WHERE tenant_id = '{tenant}' AND external_id = '{name}'"
        ))
        .await
        .expect("subscription");
    assert_eq!(inserted, 1);
    id
}

/// Turns billing enforcement on for the test tenant and waits until intake enforces it. The
/// probe (an event for a workspace that does not exist) writes nothing either way: 422
/// UNKNOWN_WORKSPACE while not enforced, 402 once enforced.
async fn enforce(app: &TestApp) {
    app.execute(&format!(
        "UPDATE tenants SET billing_enforced = true, updated_at = now() WHERE id = '{}'",
        app.tenant.as_uuid()
    ))
    .await
    .expect("enforce");
    let probe = json!({ "id": "probe", "metric": "api_calls", "workspace": "no-such-workspace" });
    poll("enforcement", SETTLE, async || {
        let (status, body) = app.post_json("/v1/events", &probe).await;
        (status == 402).then_some(body)
    })
    .await;
}

/// Calls `attempt` every 50 ms until it gives `Some`, at most `timeout`.
async fn poll<T>(what: &str, timeout: Duration, mut attempt: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = attempt().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not seen within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or_default()
}

fn statuses(answer: &Value) -> Vec<String> {
    answer["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| {
            let status = r["status"].as_str().unwrap_or_default().to_owned();
            match r["error"]["code"].as_str() {
                Some(code) => format!("{status}:{code}"),
                None => status,
            }
        })
        .collect()
}

/// A second job-intake on the test database that needs no internal token, for what the
/// gateway does not pass on (the `tollgate-quota-warning` header).
struct DirectIntake {
    intake: tollgate_job_intake::RunningIntake,
    url: String,
    artifacts: PathBuf,
    http: reqwest::Client,
    tenant: String,
}

impl DirectIntake {
    async fn start(app: &TestApp) -> Self {
        let mut cfg = tollgate_job_intake::IntakeConfig::defaults().expect("defaults");
        cfg.http.port = 0;
        cfg.http.workers = 1;
        cfg.database.url = app.db_url.clone();
        cfg.database.pool_size = 2;
        cfg.database.acquire_timeout_ms = 500;
        cfg.amqp = BrokerConfig {
            url: amqp_url(),
            prefix: app.amqp_prefix.clone(),
            queue_type: QueueType::Classic,
            queue_expires_ms: Some(120_000),
            retry_tiers: 4,
            max_reconnect_backoff_ms: 300,
        };
        cfg.internal_token = String::new();
        cfg.catalog_cache_ttl_ms = 0;
        let artifacts =
            std::env::temp_dir().join(format!("tollgate-gating-{}", Uuid::new_v4().simple()));
        cfg.artifacts.root = artifacts.to_string_lossy().into_owned();
        cfg.artifacts.signing_key =
            tollgate_job_intake::config::SecretString::new(Uuid::new_v4().simple().to_string());
        let intake = tollgate_job_intake::start(cfg, CancellationToken::new())
            .await
            .expect("start the direct intake");
        Self {
            url: format!("http://{}", intake.addr),
            intake,
            artifacts,
            http: reqwest::Client::new(),
            tenant: app.tenant.to_string(),
        }
    }

    /// `POST /v1/events` with one event; returns the status, the quota warning headers and
    /// the body.
    async fn event(&self, event: &Value) -> (u16, Vec<String>, Value) {
        let res = self
            .http
            .post(format!("{}/v1/events", self.url))
            .header(tollgate_runtime::http::TENANT_HEADER, &self.tenant)
            .json(event)
            .send()
            .await
            .expect("POST /v1/events");
        let status = res.status().as_u16();
        let warnings = res
            .headers()
            .get_all("tollgate-quota-warning")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        (status, warnings, res.json().await.unwrap_or(Value::Null))
    }

    async fn stop(self) {
        self.intake.stop().await;
        let _ = std::fs::remove_dir_all(&self.artifacts);
    }
}

#[tokio::test]
async fn jobs_need_a_live_subscription_and_the_plans_features() {
    let app = app().await;
    account(&app, "acme").await;
    account(&app, "freeloader").await;
    let pro = plan(&app, "pro", 1, &["reports"], &[]).await;
    subscribe(&app, "acme", pro, "active").await;
    enforce(&app).await;

    // No subscription: 402, and nothing is written.
    let (status, body) = app
        .submit(
            &json!({ "type": "render", "input": { "n": 1 }, "workspace": "freeloader-ws" }),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (402, "SUBSCRIPTION_REQUIRED"),
        "{body}"
    );
    // No billing entity named at all.
    let (status, body) = app
        .submit(&json!({ "type": "render", "input": { "n": 2 } }), None)
        .await;
    assert_eq!(
        (status, code(&body)),
        (422, "BILLING_ENTITY_REQUIRED"),
        "{body}"
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM jobs").await, 0);
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox").await, 0);

    // A live subscription: accepted (polled with one idempotency key: at most one job).
    let job = json!({ "type": "render", "input": { "n": 3 }, "workspace": "acme-ws" });
    let accepted = poll("acme's subscription", SETTLE, async || {
        let (status, body) = app.submit(&job, Some("acme-render-1")).await;
        match status {
            202 => Some(body),
            402 => None,
            other => panic!("unexpected {other}: {body}"),
        }
    })
    .await;
    assert_eq!(accepted["status"], "queued");

    // The plan lacks the job type's feature: 403.
    let (status, body) = app
        .submit(
            &json!({ "type": "hd_render", "input": { "n": 4 }, "workspace": "acme-ws" }),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (403, "FEATURE_NOT_IN_PLAN"),
        "{body}"
    );
    assert_eq!(body["error"]["details"]["feature"], "hd");
    assert_eq!(app.count("SELECT count(*) AS n FROM jobs").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn job_submissions_past_the_plans_rate_get_429_with_retry_after() {
    let app = app().await;
    account(&app, "acme").await;
    let starter = plan_with_rate(&app, "starter", 1, &[], &[], Some(2)).await;
    subscribe(&app, "acme", starter, "active").await;
    enforce(&app).await;

    let job = |n: i32| json!({ "type": "render", "input": { "n": n }, "workspace": "acme-ws" });
    // The first submission once intake has read the subscription (402 until then, which
    // takes nothing from the bucket), then the second: the plan allows two a minute.
    poll("acme's subscription", SETTLE, async || {
        let (status, body) = app.submit(&job(1), Some("rate-1")).await;
        match status {
            202 => Some(body),
            402 => None,
            other => panic!("unexpected {other}: {body}"),
        }
    })
    .await;
    let (status, body) = app.submit(&job(2), None).await;
    assert_eq!(status, 202, "{body}");

    // The third within the minute: 429 through the gateway, with the wait, nothing written.
    let res = app
        .http
        .post(format!("{}/v1/jobs", app.gateway_url))
        .bearer_auth(&app.api_key)
        .json(&job(3))
        .send()
        .await
        .expect("submit");
    assert_eq!(res.status().as_u16(), 429);
    let retry_after = tollgate_e2e::retry_after_secs(&res);
    assert!((1..=30).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = res.json().await.expect("error body");
    assert_eq!(code(&body), "PLAN_RATE_LIMITED", "{body}");
    assert_eq!(body["error"]["details"]["limit"], 2, "{body}");
    assert_eq!(body["error"]["details"]["plan"], "starter v1", "{body}");
    assert_eq!(app.count("SELECT count(*) AS n FROM jobs").await, 2);
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox").await, 2);
    app.stop().await;
}

#[tokio::test]
async fn a_hard_quota_refuses_past_its_limit_and_flags_past_the_soft_one() {
    let app = app().await;
    account(&app, "acme").await;
    let pro = plan(&app, "pro", 1, &[], &[("api_calls", 10, 100, Some(110))]).await;
    let subscription = subscribe(&app, "acme", pro, "active").await;
    enforce(&app).await;
    let direct = DirectIntake::start(&app).await;

    let event =
        |n: usize| json!({ "id": format!("q{n}"), "metric": "api_calls", "workspace": "acme-ws" });
    let (status, warnings, body) = poll("acme's subscription", SETTLE, async || {
        let answer = direct.event(&event(1)).await;
        (answer.0 != 402).then_some(answer)
    })
    .await;
    assert_eq!((status, warnings.len()), (202, 0), "{body}");
    for n in 2..=10 {
        let (status, warnings, body) = direct.event(&event(n)).await;
        assert_eq!(status, 202, "event {n}: {body}");
        assert!(warnings.is_empty(), "event {n}: {warnings:?}");
    }
    // The 11th unit is past the soft limit (10) but within the hard one (11).
    let (status, warnings, body) = direct.event(&event(11)).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(warnings, ["api_calls soft limit exceeded (11/10)"]);
    // The 12th would pass the hard limit.
    let (status, warnings, body) = direct.event(&event(12)).await;
    assert_eq!((status, code(&body)), (402, "QUOTA_EXCEEDED"), "{body}");
    assert!(warnings.is_empty());
    let details = &body["error"]["details"];
    assert_eq!(
        (&details["metric"], &details["usage"], &details["limit"]),
        (&json!("api_calls"), &json!(11), &json!(11)),
        "{body}"
    );
    assert!(details["period_end"].is_string(), "{body}");
    // A retry of an accepted event is still its duplicate, not a refusal.
    let (status, _, body) = direct.event(&event(11)).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")));
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE metric = 'api_calls'")
            .await,
        11
    );
    assert_eq!(
        app.count(&format!(
            "SELECT used AS n FROM quota_counters WHERE subscription_id = '{subscription}'"
        ))
        .await,
        11
    );
    // Each threshold was recorded exactly once, though usage went on past it.
    for pct in [80, 90, 100] {
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) AS n FROM quota_thresholds \
                 WHERE subscription_id = '{subscription}' AND metric = 'api_calls' AND threshold_pct = {pct}"
            ))
            .await,
            1,
            "threshold {pct} %"
        );
    }
    assert_eq!(
        app.count("SELECT count(*) AS n FROM quota_thresholds")
            .await,
        3
    );
    direct.stop().await;
    app.stop().await;
}

#[tokio::test]
async fn a_canceled_subscription_is_refused_within_a_second() {
    let app = app().await;
    account(&app, "acme").await;
    let pro = plan(&app, "pro", 1, &[], &[]).await;
    let subscription = subscribe(&app, "acme", pro, "active").await;
    enforce(&app).await;
    let job = json!({ "type": "render", "input": { "n": 1 }, "workspace": "acme-ws" });
    let first = poll("acme's subscription", SETTLE, async || {
        let (status, body) = app.submit(&job, Some("before-cancel")).await;
        (status == 202).then_some(body)
    })
    .await;

    app.execute(&format!(
        "UPDATE subscriptions SET status = 'canceled', canceled_at = now(), updated_at = now() \
         WHERE id = '{subscription}'"
    ))
    .await
    .expect("cancel");
    let canceled_at = Instant::now();
    let mut n = 0;
    let body = poll("the cancellation", Duration::from_secs(5), async || {
        n += 1;
        let event = json!({ "id": format!("c{n}"), "metric": "api_calls", "account": "acme" });
        let (status, body) = app.post_json("/v1/events", &event).await;
        (status == 402).then_some(body)
    })
    .await;
    let elapsed = canceled_at.elapsed();
    assert_eq!(code(&body), "SUBSCRIPTION_REQUIRED", "{body}");
    assert!(
        elapsed < Duration::from_secs(1),
        "refused only after {elapsed:?}"
    );

    // New jobs are refused; a repeat of the job accepted before gets that job back.
    let (status, body) = app
        .submit(
            &json!({ "type": "render", "input": { "n": 2 }, "workspace": "acme-ws" }),
            None,
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (402, "SUBSCRIPTION_REQUIRED"),
        "{body}"
    );
    let (status, again) = app.submit(&job, Some("before-cancel")).await;
    assert_eq!((status, &again["id"]), (200, &first["id"]), "{again}");
    assert_eq!(app.count("SELECT count(*) AS n FROM jobs").await, 1);
    app.stop().await;
}

#[tokio::test]
async fn a_tenant_that_does_not_enforce_billing_is_never_refused() {
    let app = app().await;
    account(&app, "acme").await;
    account(&app, "freeloader").await;
    let tiny = plan(&app, "tiny", 1, &[], &[("api_calls", 1, 100, Some(100))]).await;
    subscribe(&app, "acme", tiny, "active").await;
    // Time for the projection to hold the subscription and its quota.
    tokio::time::sleep(Duration::from_millis(600)).await;

    for (n, body) in [
        json!({ "type": "render", "input": { "n": 1 }, "workspace": "freeloader-ws" }),
        json!({ "type": "render", "input": { "n": 2 } }),
        json!({ "type": "hd_render", "input": { "n": 3 }, "workspace": "acme-ws" }),
    ]
    .iter()
    .enumerate()
    {
        let (status, answer) = app.submit(body, None).await;
        assert_eq!(status, 202, "job {n}: {answer}");
    }
    for n in 0..3 {
        let (status, answer) = app
            .post_json(
                "/v1/events",
                &json!({ "id": format!("a{n}"), "metric": "api_calls", "account": "acme" }),
            )
            .await;
        assert_eq!(status, 202, "event {n} over a hard quota: {answer}");
    }
    let (status, answer) = app
        .post_json(
            "/v1/events/batch",
            &json!({ "events": [
                { "id": "b1", "metric": "api_calls" },
                { "id": "b2", "metric": "api_calls", "workspace": "freeloader-ws" }
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(statuses(&answer), ["accepted", "accepted"]);
    app.stop().await;
}

#[tokio::test]
async fn a_batch_refuses_only_the_events_of_unsubscribed_entities() {
    let app = app().await;
    account(&app, "acme").await;
    account(&app, "freeloader").await;
    account(&app, "lapsed").await;
    let pro = plan(&app, "pro", 1, &[], &[]).await;
    subscribe(&app, "acme", pro, "active").await;
    subscribe(&app, "lapsed", pro, "suspended").await;
    enforce(&app).await;
    poll("acme's subscription", SETTLE, async || {
        let (status, _) = app
            .post_json(
                "/v1/events",
                &json!({ "id": "m0", "metric": "api_calls", "workspace": "acme-ws" }),
            )
            .await;
        (status == 202).then_some(())
    })
    .await;

    let batch = json!({ "events": [
        { "id": "m1", "metric": "api_calls", "workspace": "acme-ws" },
        { "id": "m2", "metric": "api_calls", "workspace": "freeloader-ws" },
        { "id": "m3", "metric": "api_calls", "account": "acme" },
        { "id": "m4", "metric": "api_calls", "account": "freeloader" },
        { "id": "m5", "metric": "api_calls" },
        { "id": "m6", "metric": "api_calls", "account": "lapsed" },
        { "id": "m7", "metric": "api_calls", "workspace": "acme-ws" }
    ]});
    let (status, answer) = app.post_json("/v1/events/batch", &batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        statuses(&answer),
        [
            "accepted",
            "rejected:SUBSCRIPTION_REQUIRED",
            "accepted",
            "rejected:SUBSCRIPTION_REQUIRED",
            "rejected:BILLING_ENTITY_REQUIRED",
            "rejected:SUBSCRIPTION_SUSPENDED",
            "accepted",
        ]
    );
    assert_eq!(
        (&answer["accepted"], &answer["rejected"]),
        (&json!(3), &json!(4))
    );
    // Sent again: what was written is a duplicate, what was refused is refused again.
    let (status, again) = app.post_json("/v1/events/batch", &batch).await;
    assert_eq!(status, 200, "{again}");
    assert_eq!(
        statuses(&again),
        [
            "duplicate",
            "rejected:SUBSCRIPTION_REQUIRED",
            "duplicate",
            "rejected:SUBSCRIPTION_REQUIRED",
            "rejected:BILLING_ENTITY_REQUIRED",
            "rejected:SUBSCRIPTION_SUSPENDED",
            "duplicate",
        ]
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'event'")
            .await,
        4
    );
    // The single endpoint answers with the refusal's status.
    let (status, body) = app
        .post_json(
            "/v1/events",
            &json!({ "id": "m8", "metric": "api_calls", "account": "lapsed" }),
        )
        .await;
    assert_eq!(
        (status, code(&body)),
        (402, "SUBSCRIPTION_SUSPENDED"),
        "{body}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_downgrade_keeps_the_old_plans_features_until_its_grace_ends() {
    let app = app().await;
    account(&app, "acme").await;
    let basic = plan(&app, "plans", 1, &[], &[]).await;
    let pro = plan(&app, "plans", 2, &["hd"], &[]).await;
    let subscription = subscribe(&app, "acme", basic, "active").await;
    // Downgraded from pro to basic: pro's features stay for a few seconds more.
    app.execute(&format!(
        "UPDATE subscriptions SET grace_plan_version_id = '{pro}', \
             grace_until = now() + interval '5 seconds', updated_at = now() \
         WHERE id = '{subscription}'"
    ))
    .await
    .expect("downgrade grace");
    enforce(&app).await;
    let job = json!({ "type": "hd_render", "input": { "n": 1 }, "workspace": "acme-ws" });
    let (status, body) = app.submit(&job, Some("in-grace")).await;
    assert_eq!(status, 202, "{body}");

    // The end of the grace is a time the projection already holds: no refresh needed.
    let remaining_ms = app
        .count(&format!(
            "SELECT GREATEST(0, (EXTRACT(EPOCH FROM grace_until - now()) * 1000)::int8) AS n \
             FROM subscriptions WHERE id = '{subscription}'"
        ))
        .await;
    tokio::time::sleep(Duration::from_millis(remaining_ms.unsigned_abs() + 50)).await;
    let (status, body) = app.submit(&job, Some("after-grace")).await;
    assert_eq!(
        (status, code(&body)),
        (403, "FEATURE_NOT_IN_PLAN"),
        "{body}"
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM jobs").await, 1);
    app.stop().await;
}
