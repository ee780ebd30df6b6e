//! Gateway traffic metering end to end (SPEC "Usage metering and the ledger": every request
//! through the gateway is metered, bytes in and out, no exemptions): each request, whether
//! authenticated or not, a health check, a 401 or a 404, becomes three `traffic` ledger
//! entries, written asynchronously and flushed on shutdown. Also the gateway's routing of the
//! other `/v1/` resources and of signed downloads, against a wiremock job-intake.

use std::time::Duration;

use serde_json::json;
use tollgate_e2e::{Options, TestApp};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

/// How long the asynchronous flush may take before a test fails.
const WAIT: Duration = Duration::from_secs(20);

/// Waits until the ledger holds exactly `expected` traffic entries (panics after [`WAIT`], or
/// at once if there are more).
async fn wait_for_traffic_entries(app: &TestApp, expected: i64) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let n = app
            .count("SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'traffic'")
            .await;
        assert!(n <= expected, "{n} traffic entries, expected {expected}");
        if n == expected {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {n} of {expected} traffic entries were written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One metered request, as a test expects it in the ledger.
struct Expected<'a> {
    method: &'a str,
    path: &'a str,
    route: &'a str,
    status: u16,
    /// `None`: unauthenticated (NULL tenant).
    tenant: Option<uuid::Uuid>,
}

impl Expected<'_> {
    /// The SQL condition matching this request's entries.
    fn filter(&self) -> String {
        let tenant = match self.tenant {
            Some(id) => format!("tenant_id = '{id}'"),
            None => "tenant_id IS NULL".to_owned(),
        };
        format!(
            "source_kind = 'traffic' AND {tenant} AND context->>'method' = '{}' \
             AND context->>'path' = '{}' AND context->>'route' = '{}' \
             AND (context->>'status')::int = {}",
            self.method, self.path, self.route, self.status
        )
    }

    /// Asserts the request was metered once, as three well-formed entries, and returns its
    /// (bytes in, bytes out).
    async fn assert_metered(&self, app: &TestApp) -> (i64, i64) {
        let filter = self.filter();
        let what = format!("{} {} -> {}", self.method, self.path, self.status);
        assert_eq!(
            app.count(&format!(
                "SELECT count(*) AS n FROM ledger_entries WHERE {filter}"
            ))
            .await,
            3,
            "entries for {what}"
        );
        assert_eq!(
            app.count(&format!(
                "SELECT count(DISTINCT source_id) AS n FROM ledger_entries WHERE {filter}"
            ))
            .await,
            1,
            "one request id for {what}"
        );
        for (metric, suffix) in [
            ("gateway.requests", "requests"),
            ("gateway.bytes_in", "bytes_in"),
            ("gateway.bytes_out", "bytes_out"),
        ] {
            assert_eq!(
                app.count(&format!(
                    "SELECT count(*) AS n FROM ledger_entries WHERE {filter} \
                     AND metric = '{metric}' AND weighted_units = raw_units AND cost = 0 \
                     AND raw_units >= 0 AND source_id::uuid IS NOT NULL \
                     AND idempotency_key = 'traffic:' || source_id || ':{suffix}' \
                     AND account_id IS NULL AND reverses_id IS NULL"
                ))
                .await,
                1,
                "{metric} for {what}"
            );
        }
        assert_eq!(
            app.count(&format!(
                "SELECT raw_units AS n FROM ledger_entries WHERE {filter} \
                 AND metric = 'gateway.requests'"
            ))
            .await,
            1,
            "requests units for {what}"
        );
        let bytes = |metric: &str| {
            format!(
                "SELECT raw_units AS n FROM ledger_entries WHERE {filter} AND metric = '{metric}'"
            )
        };
        (
            app.count(&bytes("gateway.bytes_in")).await,
            app.count(&bytes("gateway.bytes_out")).await,
        )
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_gateway_request_produces_a_traffic_entry() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.add_job_type("echo", "/echo", 1, 3, 4096).await;
    let gw = &app.gateway_url;
    let tenant = Some(app.tenant.as_uuid());

    let res = app
        .http
        .get(format!("{gw}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(res.status(), 200);

    // Unauthenticated, with a body the gateway never reads: bytes in is what was declared.
    let unread = br#"{"type":"echo","input":{"who":"nobody"}}"#;
    let res = app
        .http
        .post(format!("{gw}/v1/jobs"))
        .header("content-type", "application/json")
        .body(unread.to_vec())
        .send()
        .await
        .expect("401");
    assert_eq!(res.status(), 401);

    let missing = format!("/no-such-route-{}", uuid::Uuid::new_v4().simple());
    let res = app
        .http
        .get(format!("{gw}{missing}"))
        .send()
        .await
        .expect("404");
    assert_eq!(res.status(), 404);

    let res = app
        .http
        .get(format!("{gw}/v1/jobs"))
        .bearer_auth(&app.api_key)
        .send()
        .await
        .expect("list");
    assert_eq!(res.status(), 200);

    let body = serde_json::to_vec(&json!({ "type": "echo", "input": { "text": "hello, ledger" } }))
        .expect("json");
    let res = app
        .http
        .post(format!("{gw}/v1/jobs"))
        .bearer_auth(&app.api_key)
        .header("content-type", "application/json")
        .body(body.clone())
        .send()
        .await
        .expect("submit");
    assert_eq!(res.status(), 202);

    wait_for_traffic_entries(&app, 5 * 3).await;

    let (_, out) = Expected {
        method: "GET",
        path: "/healthz",
        route: "/healthz",
        status: 200,
        tenant: None,
    }
    .assert_metered(&app)
    .await;
    assert!(out > 0, "healthz bytes out {out}");

    let (bytes_in, out) = Expected {
        method: "POST",
        path: "/v1/jobs",
        route: "/v1/jobs",
        status: 401,
        tenant: None,
    }
    .assert_metered(&app)
    .await;
    assert_eq!(bytes_in, unread.len() as i64);
    assert!(out > 0, "401 bytes out {out}");

    let (bytes_in, out) = Expected {
        method: "GET",
        path: &missing,
        route: "unmatched",
        status: 404,
        tenant: None,
    }
    .assert_metered(&app)
    .await;
    assert_eq!(bytes_in, 0);
    assert!(out > 0, "404 bytes out {out}");

    let (bytes_in, out) = Expected {
        method: "GET",
        path: "/v1/jobs",
        route: "/v1/jobs",
        status: 200,
        tenant,
    }
    .assert_metered(&app)
    .await;
    assert_eq!(bytes_in, 0);
    assert!(out > 0, "list bytes out {out}");

    let (bytes_in, out) = Expected {
        method: "POST",
        path: "/v1/jobs",
        route: "/v1/jobs",
        status: 202,
        tenant,
    }
    .assert_metered(&app)
    .await;
    assert_eq!(bytes_in, body.len() as i64);
    assert!(out > 0, "submit bytes out {out}");

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn buffered_traffic_is_written_when_the_gateway_stops() {
    // An hour-long flush interval: only the shutdown flush can write these records.
    let mut app = TestApp::spawn_with(Options {
        worker: false,
        metering_flush_interval_ms: Some(3_600_000),
        ..Default::default()
    })
    .await;
    let gw = app.gateway_url.clone();
    for _ in 0..3 {
        let res = app
            .http
            .get(format!("{gw}/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(res.status(), 200);
    }
    let res = app
        .http
        .get(format!("{gw}/v1/jobs"))
        .send()
        .await
        .expect("401");
    assert_eq!(res.status(), 401);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'traffic'")
            .await,
        0,
        "nothing is written before the batch is due"
    );

    app.stop_gateway().await;

    // stop returned after the flush: no polling needed.
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'traffic'")
            .await,
        4 * 3
    );
    assert_eq!(
        app.count(
            "SELECT count(DISTINCT source_id) AS n FROM ledger_entries \
             WHERE source_kind = 'traffic' AND tenant_id IS NULL \
             AND context->>'path' = '/healthz' AND (context->>'status')::int = 200"
        )
        .await,
        3
    );
    assert_eq!(
        app.count(
            "SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'traffic' \
             AND tenant_id IS NULL AND (context->>'status')::int = 401 \
             AND metric = 'gateway.requests'"
        )
        .await,
        1
    );
    app.stop().await;
}

/// A second gateway, on the test's database, whose job-intake is `intake` (a wiremock).
async fn gateway_in_front_of(
    app: &TestApp,
    intake: &MockServer,
) -> tollgate_gateway::RunningGateway {
    let mut cfg = tollgate_gateway::GatewayConfig::defaults().expect("defaults");
    cfg.http.port = 0;
    cfg.http.workers = 1;
    cfg.database.url = app.db_url.clone();
    cfg.database.pool_size = 2;
    cfg.intake_url = intake.uri();
    cfg.internal_token = "internal".into();
    cfg.key_cache_ttl_ms = 0;
    tollgate_gateway::start(cfg).await.expect("start gateway")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_v1_resource_is_forwarded_and_signed_downloads_skip_authentication() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let intake = MockServer::start().await;
    let tenant_header = app.tenant.to_string();
    Mock::given(method("GET"))
        .and(path("/v1/usage/export"))
        .and(header("accept", "text/csv"))
        .and(header("x-tollgate-tenant", tenant_header.as_str()))
        .and(header("x-tollgate-internal-token", "internal"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-disposition", "attachment; filename=\"usage.csv\"")
                .set_body_raw("metric,units\njobs,3\n", "text/csv"),
        )
        .expect(1)
        .mount(&intake)
        .await;
    for resource in [
        "events",
        "accounts",
        "workspaces",
        "artifacts",
        "anything-else",
    ] {
        Mock::given(method("GET"))
            .and(path(format!("/v1/{resource}")))
            .and(header("x-tollgate-tenant", tenant_header.as_str()))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "data": [] })))
            .expect(1)
            .mount(&intake)
            .await;
    }
    let file = vec![7u8; 100_000];
    Mock::given(method("GET"))
        .and(path("/v1/downloads/art_1/report.pdf"))
        .and(query_param("sig", "abc"))
        .and(query_param("exp", "123"))
        .and(|req: &Request| !req.headers.contains_key("x-tollgate-tenant"))
        .respond_with(
            ResponseTemplate::new(200)
                .insert_header("content-disposition", "attachment; filename=\"report.pdf\"")
                .set_body_raw(file.clone(), "application/pdf"),
        )
        .expect(1)
        .mount(&intake)
        .await;
    let gateway = gateway_in_front_of(&app, &intake).await;
    let gw = format!("http://{}", gateway.addr);

    let res = app
        .http
        .get(format!("{gw}/v1/usage/export"))
        .bearer_auth(&app.api_key)
        .header("accept", "text/csv")
        .send()
        .await
        .expect("usage export");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/csv");
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"usage.csv\""
    );
    assert_eq!(res.text().await.expect("csv"), "metric,units\njobs,3\n");

    for resource in [
        "events",
        "accounts",
        "workspaces",
        "artifacts",
        "anything-else",
    ] {
        let res = app
            .http
            .get(format!("{gw}/v1/{resource}"))
            .bearer_auth(&app.api_key)
            .send()
            .await
            .expect("resource");
        assert_eq!(res.status(), 200, "{resource}");
        // Still authenticated.
        let res = app
            .http
            .get(format!("{gw}/v1/{resource}"))
            .send()
            .await
            .expect("resource without key");
        assert_eq!(res.status(), 401, "{resource} without a key");
    }

    // No key: the signature in the query string is job-intake's to check.
    let res = app
        .http
        .get(format!(
            "{gw}/v1/downloads/art_1/report.pdf?exp=123&sig=abc"
        ))
        .send()
        .await
        .expect("download");
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/pdf");
    assert_eq!(
        res.headers()["content-length"],
        file.len().to_string().as_str()
    );
    assert_eq!(
        res.headers()["content-disposition"],
        "attachment; filename=\"report.pdf\""
    );
    assert_eq!(res.bytes().await.expect("file").as_ref(), file.as_slice());

    gateway.stop().await;
    intake.verify().await;

    // The download is metered without a tenant, with the streamed length as bytes out.
    let (bytes_in, bytes_out) = Expected {
        method: "GET",
        path: "/v1/downloads/art_1/report.pdf",
        route: "/v1/downloads/{tail:.*}",
        status: 200,
        tenant: None,
    }
    .assert_metered(&app)
    .await;
    assert_eq!(bytes_in, 0);
    assert_eq!(bytes_out, file.len() as i64);
    let (_, bytes_out) = Expected {
        method: "GET",
        path: "/v1/usage/export",
        route: "/v1/usage/{tail:.*}",
        status: 200,
        tenant: Some(app.tenant.as_uuid()),
    }
    .assert_metered(&app)
    .await;
    assert_eq!(bytes_out, "metric,units\njobs,3\n".len() as i64);
    app.stop().await;
}

/// The value of an unlabelled-by-us counter in a Prometheus text exposition (0 if absent).
fn counter(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traffic_metered_while_the_database_is_down_is_written_once_it_is_back() {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let server = tollgate_e2e::pg_server_url();
    let target = server
        .rsplit('@')
        .next()
        .unwrap_or("127.0.0.1:5432")
        .to_owned();
    // Starts down: the gateway's database is unreachable.
    let proxy = tollgate_e2e::proxy::Proxy::start(&target).await;
    let proxied = app
        .db_url
        .replacen(&target, &format!("127.0.0.1:{}", proxy.port), 1);
    let mut cfg = tollgate_gateway::GatewayConfig::defaults().expect("defaults");
    cfg.http.port = 0;
    cfg.http.workers = 1;
    cfg.database.url = proxied;
    cfg.database.pool_size = 2;
    cfg.database.acquire_timeout_ms = 500;
    cfg.intake_url = app.intake_url.clone();
    let gateway = tollgate_gateway::start(cfg).await.expect("start gateway");
    let gw = format!("http://{}", gateway.addr);

    for _ in 0..2 {
        let res = app
            .http
            .get(format!("{gw}/healthz"))
            .send()
            .await
            .expect("healthz");
        assert_eq!(res.status(), 200);
    }
    // Wait until the flusher has failed at least once (each look is metered too).
    let mut metrics_calls = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let exposition = app
            .http
            .get(format!("{gw}/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text");
        metrics_calls += 1;
        if counter(&exposition, "tollgate_traffic_write_failures_total") >= 1.0 {
            assert_eq!(counter(&exposition, "tollgate_traffic_recorded_total"), 0.0);
            assert_eq!(counter(&exposition, "tollgate_traffic_dropped_total"), 0.0);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the flusher never tried to write: {exposition}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'traffic'")
            .await,
        0
    );

    proxy.up();
    let healthz = "SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'traffic' \
                   AND context->>'path' = '/healthz'";
    let deadline = tokio::time::Instant::now() + WAIT;
    while app.count(healthz).await < 2 * 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the kept batch was never written"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway.stop().await;
    assert_eq!(app.count(healthz).await, 2 * 3);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'traffic'")
            .await,
        (2 + metrics_calls) * 3
    );
    app.stop().await;
}
