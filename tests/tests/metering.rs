//! Usage metering end to end (issue 3): event ingestion with dedupe, billing entities and
//! personal→organization conversion, the usage API's aggregations, reversals, period locks,
//! CSV export and CSV import. Real PostgreSQL and RabbitMQ, services on port 0, through the
//! gateway.

use std::collections::HashMap;

use serde_json::{json, Value};
use tollgate_e2e::{Options, TestApp};

const METRICS: &str = r#"
[[metric]]
code = "api_calls"
name = "API calls"
unit = "calls"
aggregation = "count"

[[metric]]
code = "operations"
name = "Weighted operations"
unit = "operations"
aggregation = "count"
weight_property = "operation"
refuse_unknown_operations = true
[metric.weights]
task_create = 1
ai_completion = 10

[[metric]]
code = "tokens"
name = "Tokens"
unit = "tokens"
aggregation = "sum"
field = "tokens"

[[metric]]
code = "peak_seats"
name = "Peak seats"
unit = "seats"
aggregation = "max"
field = "seats"

[[metric]]
code = "active_users"
name = "Active users"
unit = "users"
aggregation = "unique_count"
field = "user"

[[metric]]
code = "plan_seats"
name = "Seats (latest)"
unit = "seats"
aggregation = "latest"
field = "seats"

[[metric]]
code = "stored_gb"
name = "Stored GB (time-weighted)"
unit = "GB"
aggregation = "weighted_sum"
field = "gb"
"#;

async fn app() -> TestApp {
    let app = TestApp::spawn_with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    app.apply_metrics(METRICS).await;
    app
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

#[tokio::test]
async fn a_batch_gets_an_exact_answer_per_event_and_counts_once() {
    let app = app().await;
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let batch = json!({ "events": [
        { "id": "e1", "metric": "api_calls" },
        { "id": "e2", "metric": "tokens", "properties": { "tokens": 42 } },
        { "id": "e1", "metric": "api_calls" },
        { "id": "e3", "metric": "no_such_metric" },
        { "id": "e4", "metric": "tokens", "properties": { "tokens": 1.5 } },
        { "id": "e5", "metric": "api_calls", "timestamp": future },
        { "metric": "api_calls" },
        { "id": "e6", "metric": "operations", "properties": { "operation": "delete_everything" } },
        { "id": "e7", "metric": "api_calls", "workspace": "nowhere" },
        { "id": "e8", "metric": "operations", "properties": { "operation": "ai_completion" } }
    ]});
    let (status, answer) = app.post_json("/v1/events/batch", &batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        statuses(&answer),
        [
            "accepted",
            "accepted",
            "duplicate",
            "rejected:UNKNOWN_METRIC",
            "rejected:INVALID_VALUE",
            "rejected:TIMESTAMP_IN_FUTURE",
            "rejected:INVALID_EVENT",
            "rejected:UNKNOWN_OPERATION",
            "rejected:UNKNOWN_WORKSPACE",
            "accepted",
        ]
    );
    assert_eq!(
        (
            &answer["accepted"],
            &answer["duplicates"],
            &answer["rejected"]
        ),
        (&json!(3), &json!(1), &json!(6))
    );

    // The same batch again: everything good is now a duplicate; nothing is counted twice.
    let (status, again) = app.post_json("/v1/events/batch", &batch).await;
    assert_eq!(status, 200);
    let again = statuses(&again);
    assert_eq!(again[0], "duplicate");
    assert_eq!(again[1], "duplicate");
    assert_eq!(again[9], "duplicate");
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'event'")
            .await,
        3
    );
    // The weighted operation: 1 raw unit, 10 weighted.
    assert_eq!(
        app.count("SELECT weighted_units AS n FROM ledger_entries WHERE source_id = 'e8'")
            .await,
        10
    );

    // A single event: 202 new, 200 duplicate, 422 with the event's own code.
    let one = json!({ "id": "single", "metric": "api_calls" });
    let (status, body) = app.post_json("/v1/events", &one).await;
    assert_eq!((status, body["status"].as_str()), (202, Some("accepted")));
    let (status, body) = app.post_json("/v1/events", &one).await;
    assert_eq!((status, body["status"].as_str()), (200, Some("duplicate")));
    let (status, body) = app
        .post_json("/v1/events", &json!({ "id": "x", "metric": "tokens" }))
        .await;
    assert_eq!(status, 422, "{body}");
    assert_eq!(body["error"]["code"], "MISSING_PROPERTY");
    let (status, body) = app
        .post_json("/v1/events/batch", &json!({ "nope": 1 }))
        .await;
    assert_eq!(status, 422, "{body}");
    app.stop().await;
}

#[tokio::test]
async fn the_same_batch_sent_concurrently_by_two_clients_counts_once() {
    let app = app().await;
    let events: Vec<Value> = (0..200)
        .map(
            |i| json!({ "id": format!("c{i}"), "metric": "tokens", "properties": { "tokens": i } }),
        )
        .collect();
    let batch = json!({ "events": events });
    let sends = (0..6).map(|_| app.post_json("/v1/events/batch", &batch));
    let answers = futures_util::future::join_all(sends).await;
    let mut accepted = 0;
    for (status, answer) in &answers {
        assert_eq!(*status, 200, "{answer}");
        accepted += answer["accepted"].as_i64().expect("accepted");
        assert_eq!(
            answer["accepted"].as_i64().unwrap_or(0) + answer["duplicates"].as_i64().unwrap_or(0),
            200
        );
    }
    assert_eq!(
        accepted, 200,
        "each event accepted exactly once across all senders"
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE metric = 'tokens'")
            .await,
        200
    );
    assert_eq!(
        app.count("SELECT sum(raw_units)::int8 AS n FROM ledger_entries WHERE metric = 'tokens'")
            .await,
        (0..200).sum::<i64>()
    );
    app.stop().await;
}

#[tokio::test]
async fn an_event_whose_write_failed_is_accepted_when_retried() {
    let app = app().await;
    // Make the write of one event fail inside the transaction (after its row was inserted).
    app.execute(
        "CREATE FUNCTION fail_poison() RETURNS trigger LANGUAGE plpgsql AS $$ \
         BEGIN IF NEW.source_id = 'poison' THEN RAISE EXCEPTION 'disk on fire'; END IF; \
         RETURN NEW; END $$",
    )
    .await
    .expect("function");
    app.execute(
        "CREATE TRIGGER poison AFTER INSERT ON ledger_entries FOR EACH ROW EXECUTE FUNCTION fail_poison()",
    )
    .await
    .expect("trigger");
    let batch = json!({ "events": [
        { "id": "before", "metric": "api_calls" },
        { "id": "poison", "metric": "api_calls" }
    ]});
    let (status, body) = app.post_json("/v1/events/batch", &batch).await;
    assert!(
        status >= 500,
        "the failed write is reported: {status} {body}"
    );
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'event'")
            .await,
        0,
        "nothing of the failed batch was kept"
    );

    app.execute("DROP TRIGGER poison ON ledger_entries")
        .await
        .expect("drop trigger");
    let (status, answer) = app.post_json("/v1/events/batch", &batch).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(statuses(&answer), ["accepted", "accepted"]);
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'event'")
            .await,
        2
    );
    app.stop().await;
}

/// `account external id → value` summed over workspaces, from a `period=total` answer.
fn by_account(usage: &Value) -> HashMap<String, i64> {
    let mut totals = HashMap::new();
    for row in usage["data"].as_array().expect("data") {
        *totals
            .entry(row["account"].as_str().unwrap_or("-").to_owned())
            .or_insert(0) += row["value"].as_i64().expect("integer value");
    }
    totals
}

#[tokio::test]
async fn usage_follows_the_billing_entity_across_a_personal_to_org_conversion() {
    let app = app().await;
    let (status, body) = app
        .post_json(
            "/v1/accounts",
            &json!({ "external_id": "user-1", "name": "Ada", "kind": "personal" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = app
        .post_json(
            "/v1/workspaces",
            &json!({ "external_id": "ws-1", "name": "Ada's", "account": "user-1" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    // A personal account owns one workspace, whatever the client.
    let (status, body) = app
        .post_json(
            "/v1/workspaces",
            &json!({ "external_id": "ws-2", "name": "second", "account": "user-1" }),
        )
        .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["error"]["code"], "PERSONAL_ACCOUNT_WORKSPACE_LIMIT");

    let before = chrono::Utc::now() - chrono::Duration::minutes(10);
    let (status, answer) = app
        .post_json(
            "/v1/events/batch",
            &json!({ "events": [
                { "id": "p1", "metric": "api_calls", "workspace": "ws-1", "timestamp": before.to_rfc3339() },
                { "id": "p2", "metric": "api_calls", "workspace": "ws-1" }
            ]}),
        )
        .await;
    assert_eq!(
        (status, statuses(&answer)),
        (200, vec!["accepted".into(), "accepted".into()])
    );

    let (status, conversion) = app
        .post_json(
            "/v1/accounts/user-1/convert",
            &json!({ "external_id": "org-1", "name": "Ada Inc" }),
        )
        .await;
    assert_eq!(status, 200, "{conversion}");
    assert_eq!(conversion["organization"]["kind"], "organization");
    assert_eq!(conversion["workspaces"][0]["external_id"], "ws-1");
    assert!(conversion["personal"]["converted_at"].is_string());
    let (status, body) = app
        .post_json(
            "/v1/accounts/user-1/convert",
            &json!({ "external_id": "org-2", "name": "again" }),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (409, Some("ACCOUNT_CONVERTED"))
    );

    // After: new usage goes to the organization; a late event stamped before the conversion
    // still goes to the person.
    let (status, answer) = app
        .post_json(
            "/v1/events/batch",
            &json!({ "events": [
                { "id": "o1", "metric": "api_calls", "workspace": "ws-1" },
                { "id": "o2", "metric": "api_calls", "workspace": "ws-1" },
                { "id": "o3", "metric": "api_calls", "workspace": "ws-1" },
                { "id": "late", "metric": "api_calls", "workspace": "ws-1",
                  "timestamp": (before - chrono::Duration::minutes(1)).to_rfc3339() },
                { "id": "acct-level", "metric": "api_calls", "account": "user-1" }
            ]}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let from = (before - chrono::Duration::hours(1)).to_rfc3339();
    let to = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let (status, usage) = app
        .get_json(&format!(
            "/v1/usage?metric=api_calls&period=total&from={}&to={}",
            urlencode(&from),
            urlencode(&to)
        ))
        .await;
    assert_eq!(status, 200, "{usage}");
    let totals = by_account(&usage);
    // p1, p2 and the late event → the person; o1-o3 and the account-level event after the
    // conversion → the organization.
    assert_eq!(totals.get("user-1"), Some(&3), "{usage}");
    assert_eq!(totals.get("org-1"), Some(&4), "{usage}");

    // The organization may own more workspaces.
    let (status, body) = app
        .post_json(
            "/v1/workspaces",
            &json!({ "external_id": "ws-2", "name": "second", "account": "org-1" }),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, ws) = app.get_json("/v1/workspaces/ws-1").await;
    assert_eq!(status, 200);
    assert_eq!(ws["owners"].as_array().map(Vec::len), Some(2), "{ws}");
    app.stop().await;
}

#[tokio::test]
async fn a_personal_account_gets_one_workspace_even_under_concurrent_requests() {
    let app = app().await;
    let (status, _) = app
        .post_json(
            "/v1/accounts",
            &json!({ "external_id": "racer", "name": "R", "kind": "personal" }),
        )
        .await;
    assert_eq!(status, 201);
    let bodies: Vec<Value> = (0..8)
        .map(|i| json!({ "external_id": format!("w{i}"), "name": "w", "account": "racer" }))
        .collect();
    let answers =
        futures_util::future::join_all(bodies.iter().map(|b| app.post_json("/v1/workspaces", b)))
            .await;
    let created = answers.iter().filter(|(s, _)| *s == 201).count();
    let refused = answers
        .iter()
        .filter(|(s, b)| *s == 403 && b["error"]["code"] == "PERSONAL_ACCOUNT_WORKSPACE_LIMIT")
        .count();
    assert_eq!((created, refused), (1, 7), "{answers:?}");
    app.stop().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

/// The usage rows of one metric: `(period_start, value)`.
async fn usage_of(app: &TestApp, metric: &str, query: &str) -> Vec<(String, Value)> {
    let (status, usage) = app
        .get_json(&format!("/v1/usage?metric={metric}&{query}"))
        .await;
    assert_eq!(status, 200, "{usage}");
    usage["data"]
        .as_array()
        .expect("data")
        .iter()
        .map(|r| {
            (
                r["period_start"].as_str().unwrap_or_default().to_owned(),
                r["value"].clone(),
            )
        })
        .collect()
}

#[tokio::test]
async fn each_aggregation_matches_a_hand_computed_expectation() {
    let app = app().await;
    let at = |h: u32, m: u32| format!("2026-01-10T{h:02}:{m:02}:00Z");
    let events = json!({ "events": [
        { "id": "a1", "metric": "api_calls", "timestamp": at(1, 0) },
        { "id": "a2", "metric": "api_calls", "timestamp": at(2, 0) },
        { "id": "o1", "metric": "operations", "timestamp": at(1, 0), "properties": { "operation": "task_create" } },
        { "id": "o2", "metric": "operations", "timestamp": at(1, 5), "properties": { "operation": "task_create" } },
        { "id": "o3", "metric": "operations", "timestamp": at(1, 9), "properties": { "operation": "ai_completion" } },
        { "id": "t1", "metric": "tokens", "timestamp": at(1, 0), "properties": { "tokens": 10 } },
        { "id": "t2", "metric": "tokens", "timestamp": at(3, 0), "properties": { "tokens": 20 } },
        { "id": "t3", "metric": "tokens", "timestamp": at(3, 30), "properties": { "tokens": "30" } },
        { "id": "m1", "metric": "peak_seats", "timestamp": at(1, 0), "properties": { "seats": 5 } },
        { "id": "m2", "metric": "peak_seats", "timestamp": at(2, 0), "properties": { "seats": 9 } },
        { "id": "m3", "metric": "peak_seats", "timestamp": at(3, 0), "properties": { "seats": 7 } },
        { "id": "u1", "metric": "active_users", "timestamp": at(1, 0), "properties": { "user": "ann" } },
        { "id": "u2", "metric": "active_users", "timestamp": at(2, 0), "properties": { "user": "bob" } },
        { "id": "u3", "metric": "active_users", "timestamp": at(3, 0), "properties": { "user": "ann" } },
        { "id": "l1", "metric": "plan_seats", "timestamp": at(1, 0), "properties": { "seats": 3 } },
        { "id": "l2", "metric": "plan_seats", "timestamp": at(5, 0), "properties": { "seats": 8 } },
        { "id": "l3", "metric": "plan_seats", "timestamp": at(3, 0), "properties": { "seats": 1 } },
        { "id": "g1", "metric": "stored_gb", "timestamp": at(0, 0), "properties": { "gb": 100 } },
        { "id": "g2", "metric": "stored_gb", "timestamp": at(12, 0), "properties": { "gb": 100 } }
    ]});
    let (status, answer) = app.post_json("/v1/events/batch", &events).await;
    assert_eq!(status, 200);
    assert_eq!(answer["accepted"], 19, "{answer}");

    let day = "period=total&from=2026-01-10T00%3A00%3A00Z&to=2026-01-11T00%3A00%3A00Z";
    let total = |rows: Vec<(String, Value)>| rows.into_iter().map(|r| r.1).collect::<Vec<_>>();
    assert_eq!(total(usage_of(&app, "api_calls", day).await), [json!(2)]);
    // 2 × task_create (1) + 1 × ai_completion (10).
    assert_eq!(total(usage_of(&app, "operations", day).await), [json!(12)]);
    assert_eq!(total(usage_of(&app, "tokens", day).await), [json!(60)]);
    assert_eq!(total(usage_of(&app, "peak_seats", day).await), [json!(9)]);
    assert_eq!(total(usage_of(&app, "active_users", day).await), [json!(2)]);
    // Latest by event time (05:00), not by arrival order.
    assert_eq!(total(usage_of(&app, "plan_seats", day).await), [json!(8)]);
    // 100 GB for 12 h, then 200 GB for 12 h: 150 GB on average over the day.
    assert_eq!(total(usage_of(&app, "stored_gb", day).await), [json!(150)]);

    // Hourly buckets.
    let hours = "period=hour&from=2026-01-10T00%3A00%3A00Z&to=2026-01-10T06%3A00%3A00Z";
    assert_eq!(
        usage_of(&app, "tokens", hours).await,
        [
            ("2026-01-10T01:00:00Z".to_owned(), json!(10)),
            ("2026-01-10T03:00:00Z".to_owned(), json!(50)),
        ]
    );
    // The time-weighted level is held in every hour, carried in from before `from`.
    let later = "period=hour&from=2026-01-10T11%3A00%3A00Z&to=2026-01-10T13%3A00%3A00Z";
    assert_eq!(
        usage_of(&app, "stored_gb", later).await,
        [
            ("2026-01-10T11:00:00Z".to_owned(), json!(100)),
            ("2026-01-10T12:00:00Z".to_owned(), json!(200)),
        ]
    );

    // Days in a tenant time zone: 01:00Z..03:30Z is 10:00..12:30 in Tokyo, same day; add an
    // event at 16:00Z, which is already the 11th in Tokyo.
    let (status, _) = app
        .post_json(
            "/v1/events",
            &json!({ "id": "t4", "metric": "tokens", "timestamp": at(16, 0), "properties": { "tokens": 5 } }),
        )
        .await;
    assert_eq!(status, 202);
    let utc_days = "period=day&from=2026-01-09T00%3A00%3A00Z&to=2026-01-12T00%3A00%3A00Z";
    assert_eq!(
        usage_of(&app, "tokens", utc_days).await,
        [("2026-01-10T00:00:00Z".to_owned(), json!(65))]
    );
    app.ctl(&[
        "tenant",
        "set-time-zone",
        "--tenant",
        &app.tenant_name,
        "Asia/Tokyo",
    ])
    .await
    .expect("set time zone");
    assert_eq!(
        usage_of(&app, "tokens", utc_days).await,
        [
            ("2026-01-09T15:00:00Z".to_owned(), json!(60)),
            ("2026-01-10T15:00:00Z".to_owned(), json!(5)),
        ],
        "Tokyo days start at 15:00Z"
    );
    let (status, body) = app
        .get_json(&format!(
            "/v1/usage?metric=tokens&{utc_days}&tz=Mars/Olympus"
        ))
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("INVALID_TIME_ZONE"))
    );
    app.stop().await;
}

#[tokio::test]
async fn a_reversing_entry_cancels_its_original_in_the_usage_totals() {
    let app = app().await;
    let (status, _) = app
        .post_json(
            "/v1/events/batch",
            &json!({ "events": [
                { "id": "big", "metric": "tokens", "timestamp": "2026-02-01T10:00:00Z", "properties": { "tokens": 40 } },
                { "id": "small", "metric": "tokens", "timestamp": "2026-02-01T11:00:00Z", "properties": { "tokens": 2 } },
                { "id": "peak", "metric": "peak_seats", "timestamp": "2026-02-01T10:00:00Z", "properties": { "seats": 9 } },
                { "id": "base", "metric": "peak_seats", "timestamp": "2026-02-01T11:00:00Z", "properties": { "seats": 4 } }
            ]}),
        )
        .await;
    assert_eq!(status, 200);
    let query = "period=total&from=2026-02-01T00%3A00%3A00Z&to=2026-02-02T00%3A00%3A00Z";
    assert_eq!(usage_of(&app, "tokens", query).await[0].1, json!(42));

    let (_, page) = app.get_json("/v1/usage/events?event_id=big").await;
    let big = page["data"][0]["id"].as_i64().expect("entry id");
    let (_, page) = app.get_json("/v1/usage/events?event_id=peak").await;
    let peak = page["data"][0]["id"].as_i64().expect("entry id");
    app.ctl(&[
        "ledger",
        "reverse",
        &big.to_string(),
        "--reason",
        "test data",
    ])
    .await
    .expect("reverse");
    app.ctl(&[
        "ledger",
        "reverse",
        &peak.to_string(),
        "--reason",
        "test data",
    ])
    .await
    .expect("reverse");
    assert!(
        app.ctl(&["ledger", "reverse", &big.to_string(), "--reason", "twice"])
            .await
            .is_err(),
        "an entry is reversed at most once"
    );
    assert_eq!(usage_of(&app, "tokens", query).await[0].1, json!(2));
    assert_eq!(usage_of(&app, "peak_seats", query).await[0].1, json!(4));
    let (_, reversals) = app.get_json("/v1/usage/events?source=reversal").await;
    assert_eq!(reversals["data"].as_array().map(Vec::len), Some(2));
    assert_eq!(reversals["data"][1]["reverses_id"], json!(big));
    assert_eq!(reversals["data"][1]["raw_units"], json!(-40));
    app.stop().await;
}

#[tokio::test]
async fn usage_in_a_finalized_period_is_refused() {
    let app = app().await;
    app.ctl(&[
        "usage",
        "lock",
        "--tenant",
        &app.tenant_name,
        "--before",
        "2026-03-01T00:00:00Z",
    ])
    .await
    .expect("lock");
    let (status, answer) = app
        .post_json(
            "/v1/events/batch",
            &json!({ "events": [
                { "id": "old", "metric": "api_calls", "timestamp": "2026-02-28T23:59:59Z" },
                { "id": "new", "metric": "api_calls", "timestamp": "2026-03-01T00:00:00Z" }
            ]}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(statuses(&answer), ["rejected:PERIOD_FINALIZED", "accepted"]);
    app.stop().await;
}

#[tokio::test]
async fn usage_and_raw_entries_export_as_csv_and_paginate() {
    let app = app().await;
    let events: Vec<Value> = (0..5)
        .map(|i| json!({ "id": format!("x{i}"), "metric": "tokens", "timestamp": "2026-04-01T10:00:00Z", "properties": { "tokens": 1 } }))
        .collect();
    let (status, _) = app
        .post_json("/v1/events/batch", &json!({ "events": events }))
        .await;
    assert_eq!(status, 200);
    let range = "from=2026-04-01T00%3A00%3A00Z&to=2026-04-02T00%3A00%3A00Z";
    let (status, content_type, csv) = app
        .get_text(&format!(
            "/v1/usage?metric=tokens&period=day&{range}&format=csv"
        ))
        .await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 2, "{csv}");
    assert!(lines[0].starts_with("metric,aggregation,period_start"));
    assert!(
        lines[1].starts_with("tokens,sum,2026-04-01T00:00:00+00:00"),
        "{csv}"
    );

    // Pages of 2, newest first, until the cursor runs out.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let (status, page) = app
            .get_json(&format!("/v1/usage/events?metric=tokens&limit=2{cursor}"))
            .await;
        assert_eq!(status, 200, "{page}");
        for entry in page["data"].as_array().expect("data") {
            seen.push(entry["source_id"].as_str().unwrap_or_default().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = format!("&cursor={next}"),
            None => break,
        }
    }
    assert_eq!(seen, ["x4", "x3", "x2", "x1", "x0"]);
    let (status, _, csv) = app
        .get_text("/v1/usage/events?metric=tokens&format=csv")
        .await;
    assert_eq!(status, 200);
    assert_eq!(csv.lines().count(), 6, "{csv}");
    app.stop().await;
}

#[tokio::test]
async fn events_import_from_csv_counts_each_row_once() {
    let app = app().await;
    let path = std::env::temp_dir().join(format!("tg-events-{}.csv", uuid::Uuid::new_v4()));
    std::fs::write(
        &path,
        "id,metric,timestamp,tokens,properties\n\
         i1,tokens,2026-05-01T10:00:00Z,5,\n\
         i2,tokens,2026-05-01T11:00:00Z,7,\n\
         i3,api_calls,2026-05-01T12:00:00Z,,\n\
         i4,tokens,2026-05-01T12:00:00Z,,\"{\"\"tokens\"\": 3}\"\n\
         i5,tokens,2026-05-01T13:00:00Z,not-a-number,\n",
    )
    .expect("csv");
    let file = path.to_string_lossy().into_owned();
    let gateway = app.gateway_url.clone();
    let key = app.api_key.clone();
    let args = [
        "events",
        "import",
        file.as_str(),
        "--gateway-url",
        gateway.as_str(),
        "--api-key",
        key.as_str(),
        "--batch-size",
        "2",
    ];
    app.ctl(&args).await.expect("import");
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'event'")
            .await,
        4,
        "i5 is rejected (INVALID_VALUE)"
    );
    assert_eq!(
        app.count("SELECT sum(raw_units)::int8 AS n FROM ledger_entries WHERE metric = 'tokens'")
            .await,
        15
    );
    // Importing the same file again adds nothing.
    app.ctl(&args).await.expect("import again");
    assert_eq!(
        app.count("SELECT count(*) AS n FROM ledger_entries WHERE source_kind = 'event'")
            .await,
        4
    );
    let _ = std::fs::remove_file(&path);
    app.stop().await;
}

#[tokio::test]
async fn a_job_for_a_workspace_is_billed_to_its_owner_at_completion() {
    use wiremock::matchers::{method, path};
    use wiremock::{Mock, ResponseTemplate};
    let app = TestApp::spawn().await;
    app.add_job_type("render", "/render", 5, 3, 4096).await;
    Mock::given(method("POST"))
        .and(path("/render"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "output": {}, "units": 2 })))
        .mount(&app.executor)
        .await;
    let solo = json!({ "external_id": "solo", "name": "Solo", "kind": "personal" });
    assert_eq!(app.post_json("/v1/accounts", &solo).await.0, 201);
    let (status, _) = app
        .post_json(
            "/v1/workspaces",
            &json!({ "external_id": "studio", "name": "Studio", "account": "solo" }),
        )
        .await;
    assert_eq!(status, 201);

    let (status, body) = app
        .submit(
            &json!({ "type": "render", "input": { "n": 1 }, "workspace": "nope" }),
            None,
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("UNKNOWN_WORKSPACE"))
    );
    assert_eq!(app.count("SELECT count(*) AS n FROM jobs").await, 0);

    let (status, first) = app
        .submit(
            &json!({ "type": "render", "input": { "n": 1 }, "workspace": "studio" }),
            None,
        )
        .await;
    assert_eq!(status, 202, "{first}");
    let first = first["id"].as_str().expect("id").to_owned();
    app.wait_for_status(&first, &["succeeded"], std::time::Duration::from_secs(30))
        .await;

    let (status, _) = app
        .post_json(
            "/v1/accounts/solo/convert",
            &json!({ "external_id": "solo-inc", "name": "Solo Inc" }),
        )
        .await;
    assert_eq!(status, 200);
    let (status, second) = app
        .submit(
            &json!({ "type": "render", "input": { "n": 2 }, "workspace": "studio" }),
            None,
        )
        .await;
    assert_eq!(status, 202, "{second}");
    let second = second["id"].as_str().expect("id").to_owned();
    let done = app
        .wait_for_status(&second, &["succeeded"], std::time::Duration::from_secs(30))
        .await;
    assert!(done["workspace_id"]
        .as_str()
        .is_some_and(|w| w.starts_with("ws_")));

    let (status, usage) = app
        .get_json("/v1/usage?metric=job.render&period=total")
        .await;
    assert_eq!(status, 200, "{usage}");
    let totals = by_account(&usage);
    // 2 units × weight 5 per job: the first job to the person, the second to the organization.
    assert_eq!(totals.get("solo"), Some(&10), "{usage}");
    assert_eq!(totals.get("solo-inc"), Some(&10), "{usage}");
    app.stop().await;
}
