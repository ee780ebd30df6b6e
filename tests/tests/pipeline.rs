//! The metered job pipeline end to end: gateway → job-intake → outbox → RabbitMQ → worker →
//! tenant executor (wiremock) → job state + ledger, on the real PostgreSQL and RabbitMQ.

use std::time::Duration;

use serde_json::json;
use tollgate_e2e::{proxy::Proxy, Options, TestApp};
use wiremock::matchers::{header_exists, method, path};
use wiremock::{Mock, ResponseTemplate};

const WAIT: Duration = Duration::from_secs(30);

/// Ledger entries of jobs (`source_kind = 'job'`) in the test database.
async fn job_ledger_entries(app: &TestApp) -> i64 {
    app.count("SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'job'")
        .await
}

/// Attempt records with outcome `succeeded` in the test database.
async fn succeeded_attempts(app: &TestApp) -> i64 {
    app.count("SELECT count(*) AS n FROM job_attempts WHERE outcome = 'succeeded'")
        .await
}

fn ok_units(units: i64) -> ResponseTemplate {
    ResponseTemplate::new(200).set_body_json(json!({ "output": { "ok": true }, "units": units }))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn happy_path_bills_weight_times_units_once() {
    let app = TestApp::spawn().await;
    app.add_job_type("resize", "/resize", 3, 3, 1024).await;
    Mock::given(method("POST"))
        .and(path("/resize"))
        .and(header_exists("idempotency-key"))
        .respond_with(ok_units(7))
        .expect(1)
        .mount(&app.executor)
        .await;

    let (status, job) = app
        .submit(&json!({ "type": "resize", "input": { "w": 100 } }), None)
        .await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["status"], "queued");
    let id = job["id"].as_str().expect("id").to_owned();
    assert!(id.starts_with("job_"));

    let done = app.wait_for_status(&id, &["succeeded"], WAIT).await;
    assert_eq!(done["units"], 7);
    assert_eq!(done["cost"], 21);
    assert_eq!(done["attempts"], 1);
    assert_eq!(done["output"], json!({ "ok": true }));
    assert_eq!(done["input"], json!({ "w": 100 }));

    let uuid = id.trim_start_matches("job_");
    assert_eq!(job_ledger_entries(&app).await, 1);
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM ledger_entries WHERE source_id = '{id}' AND raw_units = 7 AND weighted_units = 21 AND cost = 21 AND metric = 'job.resize' AND idempotency_key = 'job:{id}'"
        ))
        .await,
        1
    );
    assert_eq!(
        app.count(&format!(
            "SELECT count(*) AS n FROM job_attempts WHERE job_id = '{uuid}'"
        ))
        .await,
        1
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
            .await,
        0
    );
    // The executor was called with the job id as its idempotency key.
    let requests = app.executor.received_requests().await.expect("recorded");
    assert_eq!(
        requests[0]
            .headers
            .get("idempotency-key")
            .map(|v| v.to_str().unwrap_or_default()),
        Some(id.as_str())
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resubmitting_returns_the_first_job_and_a_reused_key_conflicts() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.add_job_type("echo", "/echo", 1, 3, 1024).await;
    let body = json!({ "type": "echo", "input": { "text": "hello" } });

    let (s1, first) = app.submit(&body, Some("order-42")).await;
    let (s2, second) = app.submit(&body, Some("order-42")).await;
    assert_eq!((s1, s2), (202, 200));
    assert_eq!(first["id"], second["id"]);

    // Without a header the key is the hash of (type, input): key order does not matter.
    let (s3, by_hash) = app
        .submit(
            &json!({ "input": { "text": "hello" }, "type": "echo" }),
            None,
        )
        .await;
    let (s4, by_hash_again) = app.submit(&body, None).await;
    assert_eq!((s3, s4), (202, 200));
    assert_eq!(by_hash["id"], by_hash_again["id"]);
    assert_ne!(by_hash["id"], first["id"]);

    let (s5, conflict) = app
        .submit(
            &json!({ "type": "echo", "input": { "text": "other" } }),
            Some("order-42"),
        )
        .await;
    assert_eq!(s5, 409, "{conflict}");
    assert_eq!(conflict["error"]["code"], "IDEMPOTENCY_KEY_REUSED");
    assert_eq!(conflict["error"]["details"]["job_id"], first["id"]);

    assert_eq!(app.count("SELECT count(*) AS n FROM jobs").await, 2);
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox").await, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_submissions_are_refused_and_persist_nothing() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.add_job_type("small", "/small", 1, 3, 64).await;

    let (status, body) = app
        .submit(&json!({ "type": "nope", "input": {} }), None)
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "UNKNOWN_JOB_TYPE");

    let (status, body) = app
        .submit(
            &json!({ "type": "small", "input": { "text": "x".repeat(200) } }),
            None,
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "INPUT_TOO_LARGE");
    assert_eq!(body["error"]["details"]["limit"], 64);

    let (status, body) = app
        .submit(&json!({ "type": "BAD TYPE", "input": {} }), None)
        .await;
    assert_eq!(status, 422);
    assert_eq!(body["error"]["code"], "INVALID_REQUEST");

    // Over the gateway's body limit (64 KiB in tests).
    let (status, body) = app
        .submit(
            &json!({ "type": "small", "input": "y".repeat(70_000) }),
            None,
        )
        .await;
    assert_eq!(status, 413);
    assert_eq!(body["error"]["code"], "BODY_TOO_LARGE");

    let res = app
        .http
        .post(format!("{}/v1/jobs", app.gateway_url))
        .bearer_auth(&app.api_key)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("send");
    assert_eq!(res.status().as_u16(), 400);
    assert!(res.headers().contains_key("x-request-id"));
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "MALFORMED_JSON");

    assert_eq!(app.count("SELECT count(*) AS n FROM jobs").await, 0);
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox").await, 0);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn executor_500_twice_then_200_succeeds_on_attempt_3_with_one_ledger_entry() {
    let app = TestApp::spawn().await;
    app.add_job_type("flaky", "/flaky", 2, 3, 1024).await;
    Mock::given(path("/flaky"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(2)
        .expect(2)
        .mount(&app.executor)
        .await;
    Mock::given(path("/flaky"))
        .respond_with(ok_units(5))
        .expect(1)
        .mount(&app.executor)
        .await;

    let (_, job) = app
        .submit(&json!({ "type": "flaky", "input": {} }), None)
        .await;
    let id = job["id"].as_str().expect("id");
    let done = app
        .wait_for_status(id, &["succeeded", "dead", "failed"], WAIT)
        .await;
    assert_eq!(done["status"], "succeeded", "{done}");
    assert_eq!(done["attempts"], 3);
    assert_eq!(done["cost"], 10);
    assert_eq!(job_ledger_entries(&app).await, 1);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM job_attempts WHERE outcome = 'retryable' AND http_status = 500").await,
        2
    );
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_400_fails_at_once_without_retry_or_bill() {
    let app = TestApp::spawn().await;
    app.add_job_type("strict", "/strict", 1, 3, 1024).await;
    Mock::given(path("/strict"))
        .respond_with(ResponseTemplate::new(400).set_body_string("bad input"))
        .expect(1)
        .mount(&app.executor)
        .await;
    let (_, job) = app
        .submit(&json!({ "type": "strict", "input": {} }), None)
        .await;
    let id = job["id"].as_str().expect("id");
    let done = app
        .wait_for_status(id, &["failed", "succeeded", "dead"], WAIT)
        .await;
    assert_eq!(done["status"], "failed");
    assert_eq!(done["attempts"], 1);
    assert!(done["last_error"]
        .as_str()
        .unwrap_or_default()
        .contains("400"));
    // Give a wrongly scheduled retry time to show up; none may.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(job_ledger_entries(&app).await, 0);
    assert_eq!(app.count("SELECT count(*) AS n FROM job_attempts").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_503_goes_dead_after_max_attempts_then_cli_replay_completes_it() {
    let app = TestApp::spawn().await;
    app.add_job_type("down", "/down", 4, 3, 1024).await;
    let unavailable = Mock::given(path("/down"))
        .respond_with(ResponseTemplate::new(503))
        .expect(3)
        .mount_as_scoped(&app.executor)
        .await;

    let (_, job) = app
        .submit(&json!({ "type": "down", "input": { "n": 1 } }), None)
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    let dead = app
        .wait_for_status(&id, &["dead", "succeeded", "failed"], WAIT)
        .await;
    assert_eq!(dead["status"], "dead");
    assert_eq!(dead["attempts"], 3);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM job_attempts WHERE http_status = 503")
            .await,
        3
    );
    assert_eq!(job_ledger_entries(&app).await, 0);
    // On the dead-letter list the operator CLI lists (`tollgatectl jobs dead`).
    let listed = {
        let mut conn = tollgate_storage::pool::get(&app.pool).await.expect("conn");
        tollgate_storage::jobs::list_dead(&mut conn, None, 10)
            .await
            .expect("list dead")
    };
    assert_eq!(listed.len(), 1);
    assert_eq!(
        tollgate_domain::JobId::from_uuid(listed[0].id).to_string(),
        id
    );
    drop(unavailable);

    Mock::given(path("/down"))
        .respond_with(ok_units(2))
        .expect(1)
        .mount(&app.executor)
        .await;
    tollgate_cli::run_from([
        "tollgatectl",
        "--database-url",
        &app.db_url,
        "--amqp-prefix",
        &app.amqp_prefix,
        "jobs",
        "replay",
        &id,
    ])
    .await
    .expect("replay");
    let done = app.wait_for_status(&id, &["succeeded"], WAIT).await;
    assert_eq!(done["cost"], 8);
    assert_eq!(job_ledger_entries(&app).await, 1);
    // The error history of the dead run is kept; the job is off the dead-letter list.
    assert_eq!(app.count("SELECT count(*) AS n FROM job_attempts").await, 4);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM job_dead_letters")
            .await,
        0
    );
    // Replaying a job that is not dead is refused.
    let again = tollgate_cli::run_from([
        "tollgatectl",
        "--database-url",
        &app.db_url,
        "jobs",
        "replay",
        &id,
    ])
    .await;
    assert!(again.is_err());
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_killed_mid_job_is_redelivered_and_billed_once() {
    let mut app = TestApp::spawn().await;
    app.add_job_type("slow", "/slow", 1, 3, 1024).await;
    // The first call hangs past the kill; later calls answer at once.
    Mock::given(path("/slow"))
        .respond_with(ok_units(9).set_delay(Duration::from_secs(4)))
        .up_to_n_times(1)
        .mount(&app.executor)
        .await;
    Mock::given(path("/slow"))
        .respond_with(ok_units(9))
        .mount(&app.executor)
        .await;

    let (_, job) = app
        .submit(&json!({ "type": "slow", "input": {} }), None)
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    app.wait_for_status(&id, &["processing"], WAIT).await;
    app.kill_worker().await;
    assert_ne!(app.get_job(&id).await["status"], "succeeded");

    app.start_worker().await;
    let done = app.wait_for_status(&id, &["succeeded"], WAIT).await;
    assert_eq!(done["cost"], 9);
    // Let the abandoned first call finish too: it must not bill again.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(job_ledger_entries(&app).await, 1);
    assert_eq!(succeeded_attempts(&app).await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_submitted_while_the_broker_is_unreachable_are_published_later() {
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let app = TestApp::spawn_with(Options {
        intake_amqp_url: Some(format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port)),
        ..Default::default()
    })
    .await;
    app.add_job_type("later", "/later", 1, 3, 1024).await;
    Mock::given(path("/later"))
        .respond_with(ok_units(1))
        .expect(2)
        .mount(&app.executor)
        .await;

    let (status, job) = app
        .submit(&json!({ "type": "later", "input": {} }), None)
        .await;
    assert_eq!(status, 202, "{job}");
    let id = job["id"].as_str().expect("id").to_owned();

    let (status, report) = app.get(&format!("{}/readyz", app.intake_url), None).await;
    assert_eq!(status, 503);
    assert_eq!(report["checks"]["broker"], "down");
    assert_eq!(report["checks"]["database"], "ok");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.get_job(&id).await["status"], "queued");
    assert_eq!(
        app.count("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
            .await,
        1
    );

    proxy.up();
    app.wait_for_status(&id, &["succeeded"], WAIT).await;
    assert_eq!(
        app.count("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
            .await,
        0
    );
    assert_eq!(job_ledger_entries(&app).await, 1);
    // Ready again once intake's own broker connection is back: its reconnect backs off, and
    // the job may have been published by another service's relay (the outbox is shared), so
    // the job's completion does not imply it.
    tollgate_e2e::eventually(WAIT, "intake reports ready again", || async {
        let (status, _) = app.get(&format!("{}/readyz", app.intake_url), None).await;
        (status == 200).then_some(())
    })
    .await;

    // The broker goes away again mid-life: intake stays up and recovers.
    proxy.down();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, job) = app
        .submit(
            &json!({ "type": "later", "input": { "second": true } }),
            None,
        )
        .await;
    assert_eq!(status, 202);
    proxy.up();
    app.wait_for_status(job["id"].as_str().expect("id"), &["succeeded"], WAIT)
        .await;
    assert_eq!(job_ledger_entries(&app).await, 2);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_published_together_share_one_message_and_each_job_is_billed_once() {
    use lapin::options::{BasicGetOptions, BasicPublishOptions};
    // Every service's relay goes through the proxy: while it is down the outbox fills, and
    // the first relay to connect claims every row at once.
    let proxy = Proxy::start("127.0.0.1:5672").await;
    let mut app = TestApp::spawn_with(Options {
        intake_amqp_url: Some(format!("amqp://guest:guest@127.0.0.1:{}/%2f", proxy.port)),
        worker: false,
        ..Default::default()
    })
    .await;
    app.add_job_type("packed", "/packed", 2, 3, 1024).await;
    Mock::given(path("/packed"))
        .respond_with(ok_units(5))
        .mount(&app.executor)
        .await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let (status, job) = app
            .submit(&json!({ "type": "packed", "input": { "n": n } }), None)
            .await;
        assert_eq!(status, 202, "{job}");
        ids.push(job["id"].as_str().expect("id").to_owned());
    }
    proxy.up();
    tollgate_e2e::eventually(WAIT, "the outbox is published", || async {
        let left = app
            .count("SELECT count(*) AS n FROM outbox WHERE published_at IS NULL")
            .await;
        (left == 0).then_some(())
    })
    .await;

    // The execute queue holds the five commands packed: normally one batch message, in
    // order. (Two relays claiming at the very same moment can split the rows between them,
    // `SKIP LOCKED`, so the test reads every message.)
    let conn = lapin::Connection::connect(
        &tollgate_e2e::amqp_url(),
        lapin::ConnectionProperties::default(),
    )
    .await
    .expect("amqp");
    let channel = conn.create_channel().await.expect("channel");
    let queue = format!("{}.jobs.execute", app.amqp_prefix);
    let mut messages = Vec::new();
    while let Some(message) = channel
        .basic_get(queue.as_str().into(), BasicGetOptions::default())
        .await
        .expect("basic.get")
    {
        messages.push(message);
    }
    let mut packed = Vec::new();
    let mut batches = 0;
    for message in &messages {
        let content_type = message
            .properties
            .content_type()
            .as_ref()
            .map(|t| t.as_str());
        if content_type == Some(tollgate_messaging::batch::BATCH_CONTENT_TYPE) {
            batches += 1;
            let commands: Vec<serde_json::Value> =
                serde_json::from_slice(&message.data).expect("a JSON array of envelopes");
            packed.extend(commands);
        } else {
            packed.push(serde_json::from_slice(&message.data).expect("one envelope"));
        }
    }
    let packed: Vec<&str> = packed
        .iter()
        .map(|c| c["data"]["job_id"].as_str().expect("job id"))
        .collect();
    assert_eq!(packed, ids);
    assert!(
        batches >= 1 && messages.len() < ids.len(),
        "{} messages, {batches} of them batches",
        messages.len()
    );
    // A relay that crashed after the broker's confirm but before its commit would publish
    // the same messages again: put copies beside them. The originals go back unacked.
    for message in &messages {
        channel
            .basic_publish(
                format!("{}.jobs", app.amqp_prefix).as_str().into(),
                tollgate_messaging::Topology::EXECUTE_KEY.into(),
                BasicPublishOptions::default(),
                &message.data,
                message.properties.clone(),
            )
            .await
            .expect("publish the copy");
    }
    channel.close(200, "done".into()).await.expect("close");
    let _ = conn.close(200, "done".into()).await;

    app.start_worker().await;
    for id in &ids {
        let job = app.wait_for_status(id, &["succeeded"], WAIT).await;
        assert_eq!(job["cost"], 10);
    }
    tollgate_e2e::eventually(WAIT, "both deliveries are settled", || async {
        let url = format!("{}/metrics", app.worker_url.as_deref().expect("worker"));
        let text = app.http.get(url).send().await.ok()?.text().await.ok()?;
        text.lines()
            .any(|line| {
                line.starts_with("tollgate_job_attempts_total{")
                    && line.contains(r#"outcome="duplicate""#)
                    && line.ends_with(" 5")
            })
            .then_some(())
    })
    .await;
    assert_eq!(job_ledger_entries(&app).await, 5);
    assert_eq!(succeeded_attempts(&app).await, 5);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_unknown_and_revoked_api_keys_get_401() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let url = format!("{}/v1/jobs", app.gateway_url);

    let (status, body) = app.get(&url, None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "MISSING_API_KEY");

    let forged = format!("{}X", &app.api_key[..app.api_key.len() - 1]);
    let (status, _) = app.get(&url, Some(&forged)).await;
    assert_eq!(status, 401);

    let (status, _) = app.get(&url, Some(&app.api_key)).await;
    assert_eq!(status, 200);

    tollgate_cli::run_from([
        "tollgatectl",
        "--database-url",
        &app.db_url,
        "key",
        "revoke",
        &app.api_key,
    ])
    .await
    .expect("revoke");
    let (status, body) = app.get(&url, Some(&app.api_key)).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"]["code"], "INVALID_API_KEY");

    // job-intake refuses callers that bypass the gateway.
    let (status, _) = app.get(&format!("{}/v1/jobs", app.intake_url), None).await;
    assert_eq!(status, 401);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limit_answers_429_with_retry_after() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        rate_limit_per_minute: 3,
        ..Default::default()
    })
    .await;
    let url = format!("{}/v1/jobs", app.gateway_url);
    for _ in 0..3 {
        let (status, _) = app.get(&url, Some(&app.api_key)).await;
        assert_eq!(status, 200);
    }
    let res = app
        .http
        .get(&url)
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("send");
    assert_eq!(res.status().as_u16(), 429);
    let retry_after = tollgate_e2e::retry_after_secs(&res);
    assert!((1..=60).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = res.json().await.expect("json");
    assert_eq!(body["error"]["code"], "RATE_LIMITED");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ledger_refuses_update_delete_and_truncate() {
    let app = TestApp::spawn().await;
    app.add_job_type("one", "/one", 1, 3, 1024).await;
    Mock::given(path("/one"))
        .respond_with(ok_units(3))
        .mount(&app.executor)
        .await;
    let (_, job) = app
        .submit(&json!({ "type": "one", "input": {} }), None)
        .await;
    app.wait_for_status(job["id"].as_str().expect("id"), &["succeeded"], WAIT)
        .await;

    let err = app
        .execute("UPDATE ledger_entries SET cost = 0")
        .await
        .expect_err("update must fail");
    assert!(err.contains("append-only"), "{err}");
    let err = app
        .execute("DELETE FROM ledger_entries")
        .await
        .expect_err("delete must fail");
    assert!(err.contains("append-only"), "{err}");
    let err = app
        .execute("TRUNCATE ledger_entries")
        .await
        .expect_err("truncate must fail");
    assert!(err.contains("append-only"), "{err}");
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE cost = 3")
            .await,
        1
    );
    app.stop().await;
}

/// The tenant references of jobs and ledger entries are checked once per statement instead of
/// by per-row foreign keys (migration `2026-11-24-000008_pipeline_row_costs`): the same
/// refusals, with the same SQLSTATE and constraint names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_ledger_entries_refuse_unknown_tenants_and_tenants_are_never_deleted() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    assert_eq!(app.count("SELECT count(*) AS n FROM tenants").await, 1);
    let entry = |tenant: &str, key: &str, reverses: &str| {
        format!(
            "INSERT INTO ledger_entries (tenant_id, idempotency_key, metric, raw_units, \
             weighted_units, cost, source_kind, source_id, occurred_at, reverses_id) \
             SELECT {tenant}, '{key}', 'm', 1, 1, 0, \
             CASE WHEN {reverses} IS NULL THEN 'event' ELSE 'reversal' END, 'x', now(), {reverses}"
        )
    };
    let known = "(SELECT id FROM tenants LIMIT 1)";
    let unknown = "gen_random_uuid()";

    let err = app
        .execute(&entry(unknown, "k1", "NULL::int8"))
        .await
        .expect_err("unknown tenant");
    assert!(err.contains("ledger_entries_tenant_id_fkey"), "{err}");
    let err = app
        .execute(&entry(known, "k2", "-1::int8"))
        .await
        .expect_err("reversal of a missing entry");
    assert!(err.contains("ledger_entries_reverses_id_fkey"), "{err}");
    app.execute(&entry(known, "k3", "NULL::int8"))
        .await
        .expect("entry of a known tenant");
    let original = "(SELECT id FROM ledger_entries WHERE idempotency_key = 'k3')";
    app.execute(&entry(known, "k4", original))
        .await
        .expect("first reversal");
    let err = app
        .execute(&entry(known, "k5", original))
        .await
        .expect_err("second reversal");
    assert!(err.contains("ledger_entries_reverses_id_key"), "{err}");
    // Many entries of one statement: one bad tenant refuses the statement, writing nothing.
    let err = app
        .execute(
            "INSERT INTO ledger_entries (tenant_id, idempotency_key, metric, raw_units, \
             weighted_units, cost, source_kind, source_id, occurred_at) \
             SELECT CASE WHEN g = 50 THEN gen_random_uuid() ELSE (SELECT id FROM tenants LIMIT 1) END, \
                    'bulk:' || g, 'm', 1, 1, 0, 'event', 'x', now() FROM generate_series(1, 100) g",
        )
        .await
        .expect_err("one unknown tenant among 100");
    assert!(err.contains("ledger_entries_tenant_id_fkey"), "{err}");
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE idempotency_key LIKE 'bulk:%'")
            .await,
        0
    );

    let err = app
        .execute(
            "INSERT INTO jobs (id, tenant_id, job_type, idempotency_key, request_hash, input, \
             status, max_attempts) VALUES (gen_random_uuid(), gen_random_uuid(), 't', 'k', \
             '\\x00', '{}', 'queued', 3)",
        )
        .await
        .expect_err("job of an unknown tenant");
    assert!(err.contains("jobs_tenant_id_fkey"), "{err}");
    app.add_job_type("t", "/t", 1, 3, 1024).await;
    let (status, job) = app.submit(&json!({ "type": "t", "input": {} }), None).await;
    assert_eq!(status, 202);
    let id = job["id"]
        .as_str()
        .expect("id")
        .parse::<tollgate_domain::JobId>()
        .expect("job id")
        .as_uuid();
    let err = app
        .execute(&format!(
            "UPDATE jobs SET tenant_id = gen_random_uuid() WHERE id = '{id}'"
        ))
        .await
        .expect_err("moving a job to another tenant");
    assert!(err.contains("never changes"), "{err}");
    let err = app
        .execute("DELETE FROM tenants")
        .await
        .expect_err("deleting a tenant");
    assert!(err.contains("never deleted"), "{err}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_lists_paginate_by_cursor_and_filter() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.add_job_type("a", "/a", 1, 3, 1024).await;
    app.add_job_type("b", "/b", 1, 3, 1024).await;
    for i in 0..5 {
        let t = if i < 3 { "a" } else { "b" };
        let (status, _) = app
            .submit(&json!({ "type": t, "input": { "i": i } }), None)
            .await;
        assert_eq!(status, 202);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/v1/jobs?limit=2", app.gateway_url);
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let (_, page) = app.get(&url, Some(&app.api_key)).await;
        for job in page["data"].as_array().expect("data") {
            seen.push(job["id"].as_str().expect("id").to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 5);
    let mut dedup = seen.clone();
    dedup.sort();
    dedup.dedup();
    assert_eq!(dedup.len(), 5);

    let (_, page) = app
        .get(
            &format!("{}/v1/jobs?type=b&status=queued", app.gateway_url),
            Some(&app.api_key),
        )
        .await;
    assert_eq!(page["data"].as_array().expect("data").len(), 2);
    let (status, _) = app
        .get(
            &format!("{}/v1/jobs?status=bogus", app.gateway_url),
            Some(&app.api_key),
        )
        .await;
    assert_eq!(status, 422);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_with_one_key_make_one_job() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.add_job_type("echo", "/echo", 1, 3, 1024).await;
    let body = json!({ "type": "echo", "input": { "text": "same" } });
    let submissions = (0..20).map(|_| app.submit(&body, Some("burst-1")));
    let results = futures_util::future::join_all(submissions).await;
    let ids: std::collections::HashSet<String> = results
        .iter()
        .map(|(status, job)| {
            assert!(*status == 200 || *status == 202, "{status} {job}");
            job["id"].as_str().expect("id").to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1);
    assert_eq!(
        results.iter().filter(|(status, _)| *status == 202).count(),
        1
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM jobs").await, 1);
    assert_eq!(app.count("SELECT count(*) AS n FROM outbox").await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_worker_stop_finishes_and_acks_in_flight_jobs() {
    let mut app = TestApp::spawn().await;
    app.add_job_type("slow", "/slow", 1, 3, 1024).await;
    Mock::given(path("/slow"))
        .respond_with(ok_units(4).set_delay(Duration::from_millis(1500)))
        .expect(1)
        .mount(&app.executor)
        .await;
    let (_, job) = app
        .submit(&json!({ "type": "slow", "input": {} }), None)
        .await;
    let id = job["id"].as_str().expect("id").to_owned();
    app.wait_for_status(&id, &["processing"], WAIT).await;
    app.stop_worker().await;
    // stop() returned only after the in-flight job was committed and acked.
    assert_eq!(app.get_job(&id).await["status"], "succeeded");
    assert_eq!(job_ledger_entries(&app).await, 1);
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intake_survives_a_database_outage_and_recovers() {
    let server = tollgate_e2e::pg_server_url();
    let target = server
        .rsplit('@')
        .next()
        .unwrap_or("127.0.0.1:5432")
        .to_owned();
    let proxy = Proxy::start(&target).await;
    proxy.up();
    let proxied = server.replacen(&target, &format!("127.0.0.1:{}", proxy.port), 1);
    let app = TestApp::spawn_with(Options {
        intake_pg_server_url: Some(proxied),
        worker: false,
        ..Default::default()
    })
    .await;
    app.add_job_type("echo", "/echo", 1, 3, 1024).await;
    let (status, _) = app
        .submit(&json!({ "type": "echo", "input": { "n": 1 } }), None)
        .await;
    assert_eq!(status, 202);

    proxy.down();
    let (status, body) = app
        .submit(&json!({ "type": "echo", "input": { "n": 2 } }), None)
        .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"]["code"], "SERVICE_UNAVAILABLE");
    let (status, report) = app.get(&format!("{}/readyz", app.intake_url), None).await;
    assert_eq!(status, 503);
    assert_eq!(report["checks"]["database"], "down");
    let (status, _) = app.get(&format!("{}/healthz", app.intake_url), None).await;
    assert_eq!(status, 200);

    proxy.up();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = app
            .submit(&json!({ "type": "echo", "input": { "n": 3 } }), None)
            .await;
        if status == 202 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "intake never recovered: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The refused submission wrote nothing; the two accepted ones are there.
    assert_eq!(app.count("SELECT count(*) AS n FROM jobs").await, 2);
    app.stop().await;
}
